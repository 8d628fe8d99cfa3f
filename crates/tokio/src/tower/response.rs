//! The response side of the layer: the inner service's answer as a flight's items (its head, then
//! its body frames), each subscriber's response rebuilt from them, and failures as responses.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_core::Stream;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::BoxError;
use super::request::{into_bytes, poll_bytes};
use crate::{Failure, Results, Role};

/// One item of a flight: the inner service's response head first, then its body's frames.
#[derive(Clone, Debug)]
pub(super) enum Piece {
    Head(Arc<Head>),
    Data(Bytes),
    Trailers(Arc<HeaderMap>),
}

/// What every subscriber's response copies from the inner service's (its extensions are not
/// `Clone`, and the version is each connection's own).
#[derive(Debug)]
pub(super) struct Head {
    status: StatusCode,
    headers: HeaderMap,
}

/// The inner service's response as the flight's items: [`Piece::Head`], then its frames.
pub(super) struct Pieces<B> {
    head: Option<Arc<Head>>,
    body: Pin<Box<B>>,
}

impl<B> Pieces<B> {
    /// The items of `response`.
    pub(super) fn new(response: Response<B>) -> Self {
        let (parts, body) = response.into_parts();
        let head = Head { status: parts.status, headers: parts.headers };
        Pieces { head: Some(Arc::new(head)), body: Box::pin(body) }
    }
}

impl<B> Stream for Pieces<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Item = Result<Piece, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(head) = self.head.take() {
            return Poll::Ready(Some(Ok(Piece::Head(head))));
        }
        loop {
            let Some(frame) = ready!(self.body.as_mut().poll_frame(cx)) else { return Poll::Ready(None) };
            let frame = match frame {
                Ok(frame) => frame,
                Err(error) => return Poll::Ready(Some(Err(error.into()))),
            };
            let piece = match frame.into_data() {
                // An empty frame says nothing: not worth an item in the history.
                Ok(data) if !data.has_remaining() => continue,
                Ok(data) => Piece::Data(into_bytes(data)),
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => Piece::Trailers(Arc::new(trailers)),
                    // A kind of frame http-body may add some day: nothing a client can be sent.
                    Err(_) => continue,
                },
            };
            return Poll::Ready(Some(Ok(piece)));
        }
    }
}

/// The body of a response from the layer: the inner service's own for a request that passed
/// through; the flight's frames for a coalesced one; a short text for a failure.
pub struct CoalescedBody<B> {
    kind: Kind<B>,
}

enum Kind<B> {
    Inner(Pin<Box<B>>),
    Shared(Results<Piece, BoxError>),
    Full(Option<Bytes>),
}

impl<B> CoalescedBody<B> {
    /// The inner service's body, untouched.
    pub(super) fn inner(body: B) -> Self {
        CoalescedBody { kind: Kind::Inner(Box::pin(body)) }
    }

    /// A whole body.
    fn full(bytes: Bytes) -> Self {
        CoalescedBody { kind: Kind::Full(Some(bytes).filter(|bytes| !bytes.is_empty())) }
    }
}

impl<B> fmt::Debug for CoalescedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Inner(_) => "inner",
            Kind::Shared(_) => "shared",
            Kind::Full(_) => "full",
        };
        f.debug_struct("CoalescedBody").field("kind", &kind).finish()
    }
}

impl<B: Body<Error: Into<BoxError>>> Body for CoalescedBody<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Inner(body) => poll_bytes(body.as_mut(), cx),
            Kind::Shared(results) => Pin::new(results).poll_next(cx).map(|result| {
                result.map(|result| match result {
                    Ok(Piece::Data(data)) => Ok(Frame::data(data)),
                    Ok(Piece::Trailers(trailers)) => Ok(Frame::trailers(HeaderMap::clone(&trailers))),
                    // The head is the first item, taken before the body is made.
                    Ok(Piece::Head(_)) => Err(BoxError::from("a second response head")),
                    Err(failure) => Err(Box::new(CutShort::Failed(failure)) as BoxError),
                })
            }),
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner(body) => body.is_end_stream(),
            Kind::Shared(_) => false,
            Kind::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner(body) => body.size_hint(),
            Kind::Shared(_) => SizeHint::default(),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |bytes| bytes.len() as u64)),
        }
    }
}

/// Why a coalesced response's body stopped before its end (its connection is then cut, so that
/// no client takes it for a whole answer).
#[derive(Debug)]
#[non_exhaustive]
pub enum CutShort {
    /// The flight failed after its head: the inner service's body failed (the error, shared by
    /// every subscriber), or panicked; or this request was cancelled or fell behind
    /// ([`Failure`]).
    Failed(Failure<BoxError>),
}

impl fmt::Display for CutShort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CutShort::Failed(failure) => write!(f, "the shared response was cut short: {failure}"),
        }
    }
}

impl std::error::Error for CutShort {}

/// The response of a flight's subscriber that got the head: the inner service's status and
/// headers, and the flight's frames as its body.
pub(super) fn shared<B>(head: &Head, body: Results<Piece, BoxError>) -> Response<CoalescedBody<B>> {
    let mut response = Response::new(CoalescedBody { kind: Kind::Shared(body) });
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers.clone();
    response
}

/// A failure's response, made by `respond`.
pub(super) fn failed<B>(
    respond: &(dyn Fn(&Failure<BoxError>) -> Response<Bytes> + Send + Sync),
    failure: &Failure<BoxError>,
) -> Response<CoalescedBody<B>> {
    respond(failure).map(CoalescedBody::full)
}

/// The default response for a flight that failed before its head (the layer's rule, unless
/// [`CoalesceLayer::on_failure`](super::CoalesceLayer::on_failure) says otherwise): a status that
/// says whose fault it is and a short plain-text reason. The inner service's error or panic:
/// `502 Bad Gateway`; no runtime to call it on: `503 Service Unavailable`; this request
/// cancelled: `409 Conflict`; anything else (a subscriber that fell behind the retained
/// history): `500 Internal Server Error`.
///
/// The inner service's own error text is never sent: it may hold an address or a secret.
///
/// ```
/// use streamflight_tokio::Failure;
/// use streamflight_tokio::tower::failure_response;
///
/// let response = failure_response(&Failure::Panicked);
/// assert_eq!(response.status(), 502);
/// assert_eq!(response.body().as_ref(), b"the inner service panicked");
/// ```
pub fn failure_response(failure: &Failure<BoxError>) -> Response<Bytes> {
    let (status, reason) = match failure {
        Failure::Upstream(_) => (StatusCode::BAD_GATEWAY, "the inner service failed"),
        Failure::Panicked => (StatusCode::BAD_GATEWAY, "the inner service panicked"),
        Failure::NoRuntime => (StatusCode::SERVICE_UNAVAILABLE, "no runtime to call the inner service on"),
        Failure::Cancelled => (StatusCode::CONFLICT, "the request was cancelled"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "the answer was lost"),
    };
    let mut response = Response::new(Bytes::from_static(reason.as_bytes()));
    *response.status_mut() = status;
    let text = HeaderValue::from_static("text/plain; charset=utf-8");
    response.headers_mut().insert(header::CONTENT_TYPE, text);
    response
}

/// `role` as the role header says it.
pub(super) fn role_value(role: Role) -> HeaderValue {
    HeaderValue::from_static(role.as_str())
}

/// The default name of the role header.
pub(super) const ROLE_HEADER: HeaderName = HeaderName::from_static("x-streamflight-role");
