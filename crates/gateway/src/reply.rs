//! One client's answer from its subscription (G1, G2): the response head waits for the
//! upstream's, an error before the first byte is the upstream's own response, after it an
//! in-stream error event; streaming clients get SSE, the others the collected object.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream;
use streamflight_tokio::{Event as Flight, Failure};
use tokio::time::{Instant, Sleep};

use crate::collect::{self, Collector, Kind};
use crate::endpoint::Endpoint;
use crate::flight::{Broken, Head, Part, UpstreamError};
use crate::openai::{self, json_response};
use crate::registry::{ClientId, Live};
use crate::serve::Shutdown;
use crate::sse;
use crate::state::Gateway;

/// A client's subscription to its flight.
pub type Subscription = streamflight_tokio::Subscription<Part, UpstreamError>;
type Event = Flight<Part, UpstreamError>;

/// Time without an event after which a streaming client gets an SSE comment (as axum's and
/// most servers' keep-alive do), so that nothing on its way closes a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What a client asked for, beyond its flight's key.
#[derive(Clone, Debug)]
pub struct Wants {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// `"stream": true`.
    pub stream: bool,
    /// `stream_options.include_usage`: otherwise the usage chunk is held back.
    pub include_usage: bool,
    /// `x-streamflight-role`, unless tenants share (then a tenant could learn of another's request).
    pub role: Option<HeaderValue>,
    /// A streaming client that loses its connection is detached this long (R18), if at all.
    pub resume: Option<Duration>,
}

/// The client's response. Waits for the flight's head (or its failure), then answers.
pub async fn reply(
    mut subscription: Subscription,
    wants: Wants,
    mut live: Live,
    shutdown: Shutdown,
) -> Response {
    let first = tokio::select! {
        event = subscription.next() => event,
        () = shutdown.over() => {
            live.ended(&"shutting down");
            return SHUTTING_DOWN.response();
        }
    };
    let mut response = match first {
        Some(Flight::Item(Part::Head(head))) => {
            if !wants.endpoint.streams() {
                body_response(&head, subscription, live, shutdown)
            } else if wants.stream {
                let stream = Stream { include_usage: wants.include_usage, next: 1, resume: wants.resume };
                sse_response(&head, subscription, stream, live, shutdown)
            } else {
                collected_response(&head, wants.endpoint, subscription, live, shutdown).await
            }
        }
        Some(end) => {
            live.ended(&describe(&end));
            before_first_byte(end)
        }
        None => {
            live.ended(&"no end");
            FLIGHT_FAILED.response()
        }
    };
    if let Some(role) = wants.role {
        response.headers_mut().insert(HeaderName::from_static("x-streamflight-role"), role);
    }
    response
}

/// The gateway is stopping and the grace period is over.
const SHUTTING_DOWN: openai::Error<'static> = openai::Error {
    status: StatusCode::SERVICE_UNAVAILABLE,
    kind: "server_error",
    code: "shutting_down",
    message: "the gateway is shutting down",
};

/// The flight ended in a way that is the gateway's fault, not the upstream's.
const FLIGHT_FAILED: openai::Error<'static> = openai::Error {
    status: StatusCode::INTERNAL_SERVER_ERROR,
    kind: "server_error",
    code: "flight_failed",
    message: "the shared upstream request failed inside the gateway",
};

/// The request was cancelled (`DELETE /v1/requests/{id}`).
const CANCELLED: openai::Error<'static> = openai::Error {
    status: StatusCode::CONFLICT,
    kind: "cancelled",
    code: "request_cancelled",
    message: "the request was cancelled",
};

/// A short word for an end, for the log.
fn describe(event: &Event) -> String {
    match event {
        Flight::Item(_) => "an item".to_owned(),
        Flight::Done => "done".to_owned(),
        Flight::Cancelled => "cancelled".to_owned(),
        Flight::Failed(failure) => format!("failed: {failure}"),
    }
}

/// The response to a flight that ended before its head: the upstream's own error response
/// when there is one (G1), else the gateway's in OpenAI's shape.
fn before_first_byte(end: Event) -> Response {
    match end {
        Flight::Failed(Failure::Upstream(error)) => upstream_error_response(&error),
        Flight::Cancelled => CANCELLED.final_response(),
        Flight::Failed(Failure::Lagged { .. }) => LAGGED.response(),
        _ => FLIGHT_FAILED.response(),
    }
}

const LAGGED: openai::Error<'static> = openai::Error {
    status: StatusCode::INTERNAL_SERVER_ERROR,
    kind: "server_error",
    code: "lagged",
    message: "this client fell behind the retained history (--history-limit) and missed events",
};

/// A failed upstream as a response to a client that has had no byte yet.
fn upstream_error_response(error: &UpstreamError) -> Response {
    match error {
        UpstreamError::Status { head, body } => {
            let mut response = (head.status, body.clone()).into_response();
            *response.headers_mut() = head.headers.clone();
            response
        }
        UpstreamError::InStream(data) => json_response(error.status(), data.clone()),
        UpstreamError::Broken { kind, message } => kind.error(message).response(),
    }
}

/// The data of the error event that ends a stream after its first byte.
fn error_event(end: &Event) -> Bytes {
    match end {
        Flight::Failed(Failure::Upstream(error)) => match &**error {
            // The upstream's own error object, as it sent it.
            UpstreamError::InStream(data) => data.clone(),
            UpstreamError::Status { body, .. } if is_openai_error(body) => body.clone(),
            UpstreamError::Status { head, .. } => openai::Error {
                status: head.status,
                kind: "upstream_error",
                code: "upstream_status",
                message: &error.to_string(),
            }
            .body(),
            UpstreamError::Broken { kind, message } => kind.error(message).body(),
        },
        Flight::Cancelled => CANCELLED.body(),
        Flight::Failed(Failure::Lagged { .. }) => LAGGED.body(),
        _ => FLIGHT_FAILED.body(),
    }
}

fn is_openai_error(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v.get("error").is_some_and(|e| e.is_object()))
}

/// The head every answer built from a 2xx flight gets: the upstream's status and headers.
fn head_response(head: &Head, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers.clone();
    response
}

/// How a streamed body ends early: the connection is cut, so a client never takes a partial
/// body for a whole one.
fn cut(why: &str) -> io::Error {
    io::Error::other(why.to_owned())
}

/// A non-SSE answer (embeddings): the upstream's body piece by piece.
fn body_response(head: &Head, subscription: Subscription, live: Live, shutdown: Shutdown) -> Response {
    let over: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move { shutdown.over().await });
    let body = stream::unfold(Some((subscription, live, over)), |state| async move {
        let (mut subscription, mut live, mut over) = state?;
        loop {
            let event = tokio::select! {
                event = subscription.next() => event?,
                () = &mut over => return Some((Err(cut("the gateway is shutting down")), None)),
            };
            match event {
                Flight::Item(Part::Body(bytes)) => {
                    return Some((Ok(bytes), Some((subscription, live, over))));
                }
                Flight::Item(_) => continue,
                Flight::Done => {
                    live.ended(&"done");
                    return None;
                }
                end => {
                    live.ended(&describe(&end));
                    return Some((Err(cut("the upstream answer failed midway")), None));
                }
            }
        }
    });
    head_response(head, Body::from_stream(body))
}

/// A streaming client's SSE answer: the events it asked for, each with its `id:` (its index in
/// the answer), then `[DONE]` or an error event; a comment every 15 s of silence; an error event
/// if the grace period of a shutdown ends first. `next` is the index of the subscription's next
/// item (the head is item 0). If the client goes away before the end and `resume` is a window,
/// its request is detached for that long instead of cancelled (R18).
fn sse_response(
    head: &Head,
    subscription: Subscription,
    stream: Stream,
    live: Live,
    shutdown: Shutdown,
) -> Response {
    let body = Sse {
        subscription: Some(subscription),
        live: Some(live),
        over: Box::pin(async move { shutdown.over().await }),
        quiet: Box::pin(tokio::time::sleep(KEEP_ALIVE)),
        next: stream.next,
        include_usage: stream.include_usage,
        resume: stream.resume,
        done: false,
    };
    let mut response = head_response(head, Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// How an SSE answer is numbered and kept.
pub struct Stream {
    /// `stream_options.include_usage`: otherwise the usage chunk is held back.
    pub include_usage: bool,
    /// The index of the subscription's first item.
    pub next: u64,
    /// The resume window, if a lost connection detaches the request (R18).
    pub resume: Option<Duration>,
}

/// A streaming answer on its way: what it reads, how it logs, how it ends. It is the body's
/// stream itself, written by hand rather than as an `unfold` of an async block, which held a
/// second copy of all this for every held stream (BENCHMARKS.md, issue 15).
struct Sse {
    /// Taken out when the client goes away, to detach it.
    subscription: Option<Subscription>,
    live: Option<Live>,
    over: Pin<Box<dyn Future<Output = ()> + Send>>,
    quiet: Pin<Box<Sleep>>,
    next: u64,
    include_usage: bool,
    resume: Option<Duration>,
    /// The end (or the shutdown's error event) is out.
    done: bool,
}

impl futures::Stream for Sse {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let Some(subscription) = this.subscription.as_mut() else { return Poll::Ready(None) };
            // The subscription first: a ready event is never put behind a keep-alive comment.
            let event = match subscription.poll_next_unpin(cx) {
                Poll::Ready(Some(event)) => event,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    if this.over.as_mut().poll(cx).is_ready() {
                        this.end(&"shutting down");
                        return Poll::Ready(Some(Ok(sse::frame(&SHUTTING_DOWN.body()))));
                    }
                    if this.quiet.as_mut().poll(cx).is_ready() {
                        this.quiet.as_mut().reset(Instant::now() + KEEP_ALIVE);
                        return Poll::Ready(Some(Ok(Bytes::from_static(sse::KEEP_ALIVE))));
                    }
                    return Poll::Pending;
                }
            };
            let index = this.next;
            if matches!(event, Flight::Item(_)) {
                this.next += 1;
            }
            let frame = match event {
                Flight::Item(Part::Event(event)) if this.include_usage || !event.usage_only => {
                    sse::frame_with_id(index, &event.data)
                }
                Flight::Item(_) => continue,
                Flight::Done => {
                    this.end(&"done");
                    sse::frame_with_id(index, b"[DONE]")
                }
                end => {
                    this.end(&describe(&end));
                    sse::frame_with_id(index, &error_event(&end))
                }
            };
            this.quiet.as_mut().reset(Instant::now() + KEEP_ALIVE);
            return Poll::Ready(Some(Ok(frame)));
        }
    }
}

impl Sse {
    fn end(&mut self, outcome: &dyn std::fmt::Display) {
        self.done = true;
        if let Some(live) = self.live.as_mut() {
            live.ended(outcome);
        }
    }
}

impl Drop for Sse {
    /// The body went away before its end: the client lost its connection. With a resume
    /// window its request is detached, not cancelled (R18); else the drop cancels it (R12).
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let (Some(window), Some(subscription), Some(live)) =
            (self.resume, self.subscription.take(), self.live.take())
        {
            subscription.detach();
            live.detach(window);
        }
    }
}

/// The answer to `GET /v1/requests/{id}/events`: the resumed stream of client `id`, from item
/// `from`, detached again (within the gateway's window) if this connection goes too.
pub fn resumed(
    gateway: &Gateway,
    subscription: Subscription,
    live: Live,
    id: ClientId,
    include_usage: bool,
    from: u64,
) -> Response {
    let head = Head { status: StatusCode::OK, headers: HeaderMap::new() };
    let window = gateway.settings.resume_window;
    let stream = Stream { include_usage, next: from, resume: (!window.is_zero()).then_some(window) };
    let mut response = sse_response(&head, subscription, stream, live, gateway.shutdown.clone());
    // The stream's id stays the one its client knows, for a next resume.
    response.extensions_mut().insert(id);
    response
}

/// A non-streaming client of a streamed flight: every event, collected into the completion
/// object once the flight is done (G2). Never 200 for a failed or malformed answer.
async fn collected_response(
    head: &Head,
    endpoint: Endpoint,
    mut subscription: Subscription,
    mut live: Live,
    shutdown: Shutdown,
) -> Response {
    let kind = if endpoint == Endpoint::Completions { Kind::Text } else { Kind::Chat };
    // Merged as the events arrive: the client holds its answer once, not every event too.
    let mut collector = Collector::new(kind);
    let end = loop {
        let event = tokio::select! {
            event = subscription.next() => event,
            () = shutdown.over() => {
                live.ended(&"shutting down");
                return SHUTTING_DOWN.response();
            }
        };
        match event {
            Some(Flight::Item(Part::Event(event))) => {
                if let Err(error) = collector.push(&event.data) {
                    live.ended(&"an answer that cannot be collected");
                    return uncollectable(&error);
                }
            }
            Some(Flight::Item(_)) => {}
            Some(end) => break end,
            // Every subscription yields its end before `None` (R14): never reached.
            None => {
                live.ended(&"no end");
                return FLIGHT_FAILED.response();
            }
        }
    };
    live.ended(&describe(&end));
    match end {
        Flight::Done => {}
        Flight::Failed(Failure::Upstream(error)) => return upstream_error_response(&error),
        other => return before_first_byte(other),
    }
    match collector.finish() {
        Ok(completion) => {
            let body = Bytes::from(serde_json::to_vec(&completion).unwrap_or_default());
            let mut response = head_response(head, Body::from(body));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(error) => uncollectable(&error),
    }
}

/// A streamed answer that does not add up to a completion object: 502, never a 200 with a
/// piece missing.
fn uncollectable(error: &collect::CollectError) -> Response {
    Broken::Malformed
        .error(&format!("the upstream's streamed answer cannot be collected: {error}"))
        .response()
}
