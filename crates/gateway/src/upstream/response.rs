//! An upstream response as a flight reads it, whichever client sent its request (reqwest, or
//! the gateway's own over plain HTTP/1.1, `h1`): its status, its headers and its body's pieces.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use futures::Stream;

use crate::upstream::client::describe;
use crate::upstream::h1;
use crate::upstream::lanes::Ticket;

/// A response's head and body.
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Body,
}

/// A response's body alone: its head (headers, URL, extensions) is not kept while a stream
/// lasts (BENCHMARKS.md, issue 15). Its pieces' errors are their text ([`describe`]).
pub(crate) enum Body {
    /// From reqwest, with the request's place on its lane, kept while the body is read.
    Reqwest { body: reqwest::Body, _lane: Ticket },
    /// From a pooled HTTP/1.1 connection.
    Http1(h1::Body),
}

impl Response {
    /// `response`, split.
    pub(crate) fn reqwest(response: reqwest::Response, ticket: Ticket) -> Response {
        let (head, body) = axum::http::Response::<reqwest::Body>::from(response).into_parts();
        Response { status: head.status, headers: head.headers, body: Body::Reqwest { body, _lane: ticket } }
    }

    /// `response`, split.
    pub(crate) fn http1(response: axum::http::Response<h1::Body>) -> Response {
        let (head, body) = response.into_parts();
        Response { status: head.status, headers: head.headers, body: Body::Http1(body) }
    }
}

impl Body {
    /// The answer has ended normally: its connection may be used again once the body's own
    /// end has come.
    pub(crate) fn finish(self) {
        match self {
            Body::Reqwest { .. } => {}
            Body::Http1(body) => body.finish(),
        }
    }
}

impl Stream for Body {
    type Item = Result<Bytes, String>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Body::Reqwest { body, .. } => data(body, cx),
            Body::Http1(body) => data(body, cx),
        }
    }
}

/// `body`'s next piece of data; trailers are skipped.
fn data<B>(body: &mut B, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error + 'static,
{
    loop {
        return match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(describe(&error)))),
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Poll::Ready(Some(Ok(data))),
                Err(_trailers) => continue,
            },
        };
    }
}
