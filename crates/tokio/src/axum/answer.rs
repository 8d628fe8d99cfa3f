//! [`Answer`]: a subscription on its way to becoming a response, its status chosen on its
//! first event.

use std::fmt;

use axum::body::{Body, Bytes};
use axum::http::header::{self, IntoHeaderName};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::failure::failure_response;
use super::streams::{Chunks, SseEvents};
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
/// first event, drops the subscription: a cancellation ([R12](streamflight_core::design#r12)),
/// save for a [resumable](Answer::sse_resumable) stream already under way, which is detached.
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
///         .header("x-streamflight-role", HeaderValue::from_static(role.as_str()))
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
    pub async fn sse<F>(self, item: F) -> Response
    where
        F: FnMut(T) -> SseEvent + Send + 'static,
    {
        self.events(item, false).await
    }

    /// A resumable Server-Sent Events response: as [`sse`](Answer::sse), and each item's event
    /// carries an `id:`, its index in the flight (from `0`), so that a client that lost the
    /// stream can ask for the rest with the last id it had (`Last-Event-ID`, as a browser's
    /// `EventSource` sends it when it reconnects) through [`resume`](super::resume). The end
    /// event has no id.
    ///
    /// When the client goes away once the stream is under way, the request is
    /// [detached](Subscription::detach), not cancelled: with a resume window
    /// ([`Config::resume_window`](crate::Config::resume_window)) it stays live, and keeps its
    /// flight going, for that long; without one (the default) it is dropped, as with
    /// [`sse`](Answer::sse). A client that goes before the status is chosen never had the
    /// request's id: that request is cancelled.
    ///
    /// `item` must not set the event's id itself (axum's `Event::id` panics when called twice).
    ///
    /// ```
    /// use std::time::Duration;
    /// use axum::http::HeaderValue;
    /// use axum::response::Response;
    /// use axum::response::sse::Event as SseEvent;
    /// use streamflight_tokio::axum::Answer;
    /// use streamflight_tokio::{Config, Flights};
    ///
    /// async fn ask(flights: Flights<String, String, std::io::Error>, prompt: String) -> Response {
    ///     let upstream = async { Ok(futures::stream::iter([Ok("Hel".to_string()), Ok("lo".into())])) };
    ///     let answer = Answer::new(flights.request(prompt, upstream));
    ///     // The id to resume with: `GET /requests/{id}/events` and `Last-Event-ID`.
    ///     let id = HeaderValue::from_str(&answer.id().to_string()).unwrap();
    ///     // `data: Hel` with `id: 0`, `data: lo` with `id: 1`, then `event: done`.
    ///     answer.header("x-request-id", id).sse_resumable(|token| SseEvent::default().data(token)).await
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let flights = Flights::new(Config::default().resume_window(Duration::from_secs(30)));
    /// let response = ask(flights, "hello".to_string()).await;
    /// assert_eq!(response.status(), 200);
    /// let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
    /// assert_eq!(body, "data: Hel\nid: 0\n\ndata: lo\nid: 1\n\nevent: done\ndata: [DONE]\n\n");
    /// # }
    /// ```
    pub async fn sse_resumable<F>(self, item: F) -> Response
    where
        F: FnMut(T) -> SseEvent + Send + 'static,
    {
        self.events(item, true).await
    }

    /// The SSE response of [`sse`](Answer::sse) and [`sse_resumable`](Answer::sse_resumable),
    /// once the first event chose the status.
    async fn events<F>(mut self, item: F, resumable: bool) -> Response
    where
        F: FnMut(T) -> SseEvent + Send + 'static,
    {
        if let Some(response) = self.first().await {
            return with_headers(response, self.headers);
        }
        let events = SseEvents::new(self.subscription, item, resumable);
        with_headers(Sse::new(events).keep_alive(KeepAlive::default()).into_response(), self.headers)
    }

    /// Detaches the request instead of answering it ([`Subscription::detach`]): it stays live
    /// for the resume window, for a [`resume`](super::resume) to answer later.
    pub fn detach(self) -> RequestId {
        self.subscription.detach()
    }

    /// The subscription back, to answer it in a way of your own (what this answer was told by
    /// [`header`](Answer::header) and [`on_failure`](Answer::on_failure) is dropped).
    pub fn into_subscription(self) -> Subscription<T, E> {
        self.subscription
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
