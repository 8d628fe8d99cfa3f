//! axum glue (feature `axum`): a [`Subscription`] as an HTTP response whose status is chosen
//! on its first event, so a flight that fails before its first item is an error status, never a 200 with a cut body.
//!
//! ```
//! use axum::response::Response;
//! use axum::response::sse::Event as SseEvent;
//! use streamflight_tokio::Flights;
//! use streamflight_tokio::axum::Answer;
//!
//! async fn handler(flights: Flights<String, String, std::io::Error>, prompt: String) -> Response {
//!     let upstream = async { Ok(futures::stream::iter([Ok("Hello".to_string())])) };
//!     let subscription = flights.request(prompt, upstream);
//!     // 200 and the events once the first token is there; 502 if the upstream failed first.
//!     Answer::new(subscription).sse(|token| SseEvent::default().data(token)).await
//! }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::header::{self, IntoHeaderName};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_core::Stream;
use streamflight_core::driver::Results;

use crate::{Event, Failure, RequestId, Role, Subscription};

/// How a failure before the first item becomes a response.
type OnFailure<E> = Box<dyn FnOnce(&Failure<E>) -> Response + Send>;

/// A subscription on its way to becoming an HTTP response: it waits for the
/// first event to choose the status (rule G1 of the gateway, for any axum
/// handler). An item first: `200` and the stream. An end first: the flight's
/// whole answer, [`failure_response`] for a failure or a cancel (or your own
/// [`on_failure`](Answer::on_failure)), an empty `200` for `Done`.
///
/// A failure after the first byte cannot change the status any more: an SSE
/// stream then ends with an `error` event (or a `cancelled` one), and a plain
/// body is cut with an error, so that no client takes it for a whole answer.
/// Dropping the response (the client went away), even while it waits for the
/// first event, drops the subscription: a cancellation ([R12](streamflight_core::design#r12)).
///
/// The response head waits for the first event, by design (the status
/// depends on it): an upstream slow to its first byte keeps the client
/// waiting for headers, so size the client's and proxies' header timeouts
/// for it.
///
/// ```
/// use axum::http::HeaderValue;
/// use axum::response::Response;
/// use streamflight_tokio::Flights;
/// use streamflight_tokio::axum::Answer;
///
/// async fn handler(flights: Flights<String, bytes::Bytes, std::io::Error>) -> Response {
///     let upstream = async { Ok(futures::stream::iter([Ok(bytes::Bytes::from("hi"))])) };
///     let answer = Answer::new(flights.request("key".to_string(), upstream));
///     // The request's id and role, as headers of every answer, failure or not.
///     let (id, role) = (answer.id(), answer.role());
///     answer
///         .header("x-request-id", HeaderValue::from_str(&id.to_string()).unwrap())
///         .header("x-streamflight-role", HeaderValue::from_str(&role.to_string()).unwrap())
///         .header("content-type", HeaderValue::from_static("text/plain"))
///         .body()
///         .await
/// }
/// ```
pub struct Answer<T, E> {
    subscription: Subscription<T, E>,
    on_failure: Option<OnFailure<E>>,
    headers: HeaderMap,
}

impl<T, E> Answer<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// The answer of `subscription`, failures answered by [`failure_response`].
    pub fn new(subscription: Subscription<T, E>) -> Self {
        Answer { subscription, on_failure: None, headers: HeaderMap::new() }
    }

    /// The request's id (for a cancel endpoint, a header).
    pub fn id(&self) -> RequestId {
        self.subscription.id()
    }

    /// The request's role in its flight.
    pub fn role(&self) -> Role {
        self.subscription.role()
    }

    /// Adds a header to the response, whatever it turns out to be (the
    /// stream, or a failure's). A `content-type` given here replaces the
    /// default one of [`body`](Answer::body).
    /// `name` is a [`HeaderName`](axum::http::HeaderName) or a `&'static str` (which must be a valid,
    /// lowercase header name: it panics otherwise, as `HeaderMap` does).
    pub fn header(mut self, name: impl IntoHeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Answers a failure (or a cancel, as [`Failure::Cancelled`]) that comes
    /// before the first item with `respond` instead of [`failure_response`]:
    /// your own status and error body.
    pub fn on_failure(mut self, respond: impl FnOnce(&Failure<E>) -> Response + Send + 'static) -> Self {
        self.on_failure = Some(Box::new(respond));
        self
    }

    /// A Server-Sent Events response: each item becomes the event `item`
    /// makes of it; the stream ends with one last event, named for the end:
    /// `done` (data `[DONE]`), `error` (a short reason) or `cancelled`,
    /// so that a client (a browser's `EventSource`, which reconnects when a
    /// stream just closes) knows the answer is over and how. Keep-alive
    /// comments are sent while the upstream is quiet.
    pub async fn sse<F>(mut self, item: F) -> Response
    where
        F: FnMut(T) -> SseEvent + Send + 'static,
    {
        if let Some(response) = self.first().await {
            return with_headers(response, self.headers);
        }
        let events = SseEvents { subscription: Some(self.subscription), item };
        with_headers(Sse::new(events).keep_alive(KeepAlive::default()).into_response(), self.headers)
    }

    /// A streamed body response: the items' bytes, one after the other,
    /// `application/octet-stream` unless a [`header`](Answer::header) says
    /// otherwise. A later failure or cancel cuts the body with an error (the
    /// connection is closed before its end), never a clean end.
    pub async fn body(mut self) -> Response
    where
        T: Into<Bytes>,
    {
        if let Some(response) = self.first().await {
            return with_headers(response, self.headers);
        }
        let chunks = Chunks { results: self.subscription.into_results() };
        let mut response = Body::from_stream(chunks).into_response();
        let octets = HeaderValue::from_static("application/octet-stream");
        response.headers_mut().insert(header::CONTENT_TYPE, octets);
        with_headers(response, self.headers)
    }

    /// Waits for the first event: the response if it is an end other than
    /// `Done` (the answer is complete without a stream), else `None`.
    async fn first(&mut self) -> Option<Response> {
        let failure = match self.subscription.ready().await? {
            Event::Failed(failure) => failure.clone(),
            Event::Cancelled => Failure::Cancelled,
            Event::Item(_) | Event::Done => return None,
        };
        Some(match self.on_failure.take() {
            Some(respond) => respond(&failure),
            None => failure_response(&failure),
        })
    }
}

/// `response` with `headers` added, each replacing a header of the same name.
fn with_headers(mut response: Response, headers: HeaderMap) -> Response {
    let mut last = None;
    for (name, value) in headers {
        // `HeaderMap`'s iterator names only the first of several values of one name.
        let name = name.or_else(|| last.clone()).expect("a header map's first entry has a name");
        if last.as_ref() != Some(&name) {
            response.headers_mut().remove(&name);
        }
        response.headers_mut().append(name.clone(), value);
        last = Some(name);
    }
    response
}

impl<T, E> fmt::Debug for Answer<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answer").field("subscription", &self.subscription).finish_non_exhaustive()
    }
}

/// The default response for a flight that ended before its first item: a
/// status that says whose fault it is, and a short plain-text reason. The
/// upstream's error or panic: `502 Bad Gateway`; no runtime: `503 Service
/// Unavailable`; a cancel: `409 Conflict` (someone cancelled this request on
/// purpose); anything else (a reader that lagged): `500`.
///
/// The upstream's own error text is never sent: it may hold an internal
/// address or a secret (a `reqwest::Error` names its URL). Answer with it,
/// or with your own shape, through [`Answer::on_failure`].
pub fn failure_response<E>(failure: &Failure<E>) -> Response {
    let status = match failure {
        Failure::Upstream(_) | Failure::Panicked => StatusCode::BAD_GATEWAY,
        Failure::NoRuntime => StatusCode::SERVICE_UNAVAILABLE,
        Failure::Cancelled => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, failure_reason(failure)).into_response()
}

/// The text of a failure for a client, in a response body or the last SSE event: a short
/// reason, never the upstream's own text.
fn failure_reason<E>(failure: &Failure<E>) -> &'static str {
    match failure {
        Failure::Upstream(_) => "the upstream failed",
        Failure::Panicked => "the upstream panicked",
        Failure::NoRuntime => "no runtime to run the upstream on",
        Failure::Lagged { .. } => "this client fell behind the retained history",
        Failure::Cancelled => "the request was cancelled",
        _ => "the answer was lost",
    }
}

/// The events of [`Answer::sse`].
struct SseEvents<T, E, F> {
    /// `None` once the last event is out.
    subscription: Option<Subscription<T, E>>,
    item: F,
}

// Nothing in it is ever pinned: `item` is only called by `&mut`.
impl<T, E, F> Unpin for SseEvents<T, E, F> {}

impl<T, E, F> Stream for SseEvents<T, E, F>
where
    T: Clone,
    F: FnMut(T) -> SseEvent,
{
    type Item = Result<SseEvent, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(subscription) = this.subscription.as_mut() else { return Poll::Ready(None) };
        let event = match Pin::new(subscription).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Event::Item(item))) => return Poll::Ready(Some(Ok((this.item)(item)))),
            Poll::Ready(Some(Event::Failed(failure))) => {
                Some(SseEvent::default().event("error").data(failure_reason(&failure)))
            }
            Poll::Ready(Some(Event::Cancelled)) => {
                Some(SseEvent::default().event("cancelled").data("cancelled"))
            }
            Poll::Ready(Some(Event::Done)) => Some(SseEvent::default().event("done").data("[DONE]")),
            Poll::Ready(None) => None,
        };
        // The end: the subscription is done (and told its manager so).
        this.subscription = None;
        Poll::Ready(event.map(Ok))
    }
}

/// The chunks of [`Answer::body`].
struct Chunks<T, E> {
    results: Results<T, E>,
}

impl<T, E> Stream for Chunks<T, E>
where
    T: Clone + Into<Bytes>,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let results = Pin::new(&mut self.get_mut().results);
        results.poll_next(cx).map(|result| {
            result.map(|result| {
                result.map(Into::into).map_err(|failure| std::io::Error::other(failure_reason(&failure)))
            })
        })
    }
}
