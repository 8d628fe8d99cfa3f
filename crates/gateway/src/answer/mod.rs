//! One client's answer from its subscription (G1, G2, G10), through one pipeline: [`Flow`]
//! takes the subscription, the shutdown and the keep-alive timer and yields what the client is
//! sent; a failure is mapped once ([`Failure`]) and rendered two ways, as a response before the
//! first byte and as an event after it, in the dialect's shape. Streaming clients get SSE,
//! the others the merged object, embeddings the body as sent.

pub(crate) mod registry;

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use streamflight_tokio::{Event as Flight, Failure as Ended};
use tokio::time::{Instant, Sleep};

use crate::answer::registry::Live;
use crate::dialect::Api;
use crate::dialect::error::{self, Refusal, json_response};
use crate::flight::{Broken, Event, Head, Headers, Part, UpstreamError};
use crate::http::access::Outcome;
use crate::http::serve::Shutdown;
use crate::key::Key;
use crate::sse;

/// A client's subscription to its flight.
pub(crate) type Subscription = streamflight_tokio::Subscription<Part, UpstreamError>;

/// How the gateway keeps every stream it writes, set once at start.
#[derive(Clone, Debug)]
pub(crate) struct Keeping {
    /// Fires when a shutdown's grace is over: open streams end with an error event.
    pub(crate) shutdown: Shutdown,
    /// Time without an event after which a streaming client gets its dialect's keep-alive (a
    /// comment, Anthropic's `ping`), so that nothing on its way closes a quiet stream.
    pub(crate) keep_alive: Duration,
    /// A streaming client that loses its connection is detached this long (R18), if at all.
    pub(crate) resume: Option<Duration>,
}

/// What a client asked for, beyond its flight's key.
#[derive(Clone, Debug)]
pub(crate) struct Wants {
    /// The API.
    pub api: Api,
    /// `"stream": true`.
    pub stream: bool,
    /// `stream_options.include_usage`: otherwise a usage-only event is held back.
    pub include_usage: bool,
    /// `x-streamflight-role`, unless tenants share (then a tenant could learn of another's request).
    pub role: Option<HeaderValue>,
    /// The flight's key, when the API names its answers (for its own resume call).
    pub key: Option<Box<Key>>,
}

/// How a client's answer ended, mapped once.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The upstream's own failure.
    Upstream(Arc<UpstreamError>),
    /// The gateway's: cancelled, shutting down, lagged, failed inside.
    Own(Refusal<'static>),
}

impl Failure {
    fn of(end: Flight<Part, UpstreamError>) -> Failure {
        match end {
            Flight::Failed(Ended::Upstream(error)) => Failure::Upstream(error),
            Flight::Cancelled => Failure::Own(Refusal::Cancelled),
            Flight::Failed(Ended::Lagged { .. }) => Failure::Own(Refusal::Lagged),
            _ => Failure::Own(Refusal::FlightFailed),
        }
    }

    /// The response to a client that has had no byte yet: the upstream's own when there is
    /// one (G1), else the gateway's in the dialect's shape.
    pub(crate) fn response(&self, api: Api) -> Response {
        let refusal = match self {
            Failure::Upstream(error) => match &**error {
                UpstreamError::Status { head, body } => {
                    let mut response = (head.status, body.clone()).into_response();
                    *response.headers_mut() = head.headers.to_map();
                    return response;
                }
                UpstreamError::InStream(event) => {
                    return json_response(api.failure_status(event), api.failure_body(event));
                }
                UpstreamError::Broken { kind, message } => Refusal::Upstream { kind: *kind, message },
            },
            Failure::Own(refusal) => *refusal,
        };
        let mut response = api.error_response(&refusal.error());
        // A retry would only be cancelled again, or grow to the same bound again: the SDKs are
        // told not to.
        let futile = match refusal {
            Refusal::Cancelled => true,
            Refusal::Upstream { kind, .. } => matches!(kind, Broken::AnswerTooLarge | Broken::AnswerTooLong),
            _ => false,
        };
        if futile {
            response
                .headers_mut()
                .insert(HeaderName::from_static("x-should-retry"), HeaderValue::from_static("false"));
        }
        response
    }

    /// The event that ends a stream after its first byte: the upstream's own as it sent it,
    /// else the gateway's error in the dialect's shape.
    fn event(&self, api: Api) -> (Option<Bytes>, Bytes) {
        let own = |error: &error::Error<'_>| {
            (api.error_event().map(|name| Bytes::from_static(name.as_bytes())), api.error_body(error))
        };
        match self {
            Failure::Upstream(error) => match &**error {
                UpstreamError::InStream(event) => (event.name.clone(), event.data.clone()),
                UpstreamError::Status { body, .. } if is_error_object(body) => {
                    (api.error_event().map(|name| Bytes::from_static(name.as_bytes())), body.clone())
                }
                UpstreamError::Status { head, .. } => own(&Refusal::UpstreamStatus(head.status).error()),
                UpstreamError::Broken { kind, message } => {
                    own(&Refusal::Upstream { kind: *kind, message }.error())
                }
            },
            Failure::Own(refusal) => own(&refusal.error()),
        }
    }

    /// How it ends a client's answer: cancelled (by `DELETE`), or failed.
    fn outcome(&self) -> Outcome {
        match self {
            Failure::Own(Refusal::Cancelled) => Outcome::Cancelled,
            _ => Outcome::Failed,
        }
    }

    /// A short word for the log.
    fn describe(&self) -> String {
        match self {
            Failure::Upstream(error) => format!("failed: {error}"),
            Failure::Own(refusal) => refusal.error().code.to_owned(),
        }
    }
}

/// Whether an upstream error body is an error object of its own (OpenAI's or Anthropic's).
fn is_error_object(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v.get("error").is_some_and(|e| e.is_object()))
}

/// One step of a client's answer.
pub(crate) enum Step {
    /// The next item of its flight.
    Item(Part),
    /// Quiet for the keep-alive interval.
    Quiet,
    /// The end: `Ok` when the answer ended normally.
    End(Result<(), Failure>),
}

/// The one loop over a client's flight: its subscription first (a ready item is never put
/// behind a keep-alive), then the shutdown's end of grace, then the keep-alive timer (only for
/// a streaming client). Yields [`Step`]s, and nothing after the end. Written by hand rather
/// than as an `unfold` of an async block, which held a second copy of its state for every
/// held stream (BENCHMARKS.md, issue 15).
pub(crate) struct Flow {
    subscription: Option<Subscription>,
    over: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The keep-alive timer and its interval, for a streaming client.
    quiet: Option<(Pin<Box<Sleep>>, Duration)>,
    ended: bool,
}

impl Flow {
    /// The flow of `subscription`, with a keep-alive step after each `keeping.keep_alive` of
    /// silence if `keep_alive`.
    pub(crate) fn new(subscription: Subscription, keeping: &Keeping, keep_alive: bool) -> Flow {
        let shutdown = keeping.shutdown.clone();
        let every = keeping.keep_alive;
        Flow {
            subscription: Some(subscription),
            over: Box::pin(async move { shutdown.over().await }),
            quiet: keep_alive.then(|| (Box::pin(tokio::time::sleep(every)), every)),
            ended: false,
        }
    }

    /// Takes the subscription out, to detach it.
    fn take_subscription(&mut self) -> Option<Subscription> {
        self.subscription.take()
    }
}

impl Stream for Flow {
    type Item = Step;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Step>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        let Some(subscription) = this.subscription.as_mut() else { return Poll::Ready(None) };
        let step = match subscription.poll_next_unpin(cx) {
            Poll::Ready(Some(Flight::Item(part))) => Step::Item(part),
            Poll::Ready(Some(Flight::Done)) => Step::End(Ok(())),
            Poll::Ready(Some(end)) => Step::End(Err(Failure::of(end))),
            // Every subscription yields its end before `None` (R14): never reached.
            Poll::Ready(None) => Step::End(Err(Failure::Own(Refusal::FlightFailed))),
            Poll::Pending => {
                if this.over.as_mut().poll(cx).is_ready() {
                    Step::End(Err(Failure::Own(Refusal::ShuttingDown)))
                } else {
                    let Some((quiet, every)) = this.quiet.as_mut() else { return Poll::Pending };
                    if quiet.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    quiet.as_mut().reset(Instant::now() + *every);
                    Step::Quiet
                }
            }
        };
        match &step {
            Step::End(_) => this.ended = true,
            Step::Item(_) => {
                if let Some((quiet, every)) = this.quiet.as_mut() {
                    quiet.as_mut().reset(Instant::now() + *every);
                }
            }
            Step::Quiet => {}
        }
        Poll::Ready(Some(step))
    }
}

/// The client's response. Waits for the flight's head (or its failure), then answers.
pub(crate) async fn reply(
    subscription: Subscription,
    wants: Wants,
    mut live: Live,
    keeping: &Keeping,
) -> Response {
    let api = wants.api;
    live.record().dialect(api.name());
    let sse = api.streams() && wants.stream;
    let mut flow = Flow::new(subscription, keeping, sse);
    let mut response = match flow.next().await {
        Some(Step::Item(Part::Head(head))) => {
            if !api.streams() {
                body_response(&head, flow, live)
            } else if sse {
                let stream = Numbering {
                    include_usage: wants.include_usage,
                    next: 1,
                    resume: keeping.resume,
                    skip_through: None,
                };
                sse_response(&head, flow, api, stream, live, wants.key)
            } else {
                merged_response(&head, api, flow, live, wants.key).await
            }
        }
        Some(Step::End(Err(failure))) => {
            live.ended(failure.outcome(), Some(failure.describe().into()));
            failure.response(api)
        }
        _ => {
            live.ended(Outcome::Failed, Some("no head".into()));
            api.error_response(&Refusal::FlightFailed.error())
        }
    };
    if let Some(role) = wants.role {
        response.headers_mut().insert(HeaderName::from_static("x-streamflight-role"), role);
    }
    response
}

/// The head every answer built from a 2xx flight gets: the upstream's status and headers.
fn head_response(head: &Head, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers.to_map();
    response
}

/// How a streamed body ends early: the connection is cut, so a client never takes a partial
/// body for a whole one.
fn cut(why: &str) -> io::Error {
    io::Error::other(why.to_owned())
}

/// A non-SSE answer (embeddings): the upstream's body piece by piece.
fn body_response(head: &Head, flow: Flow, mut live: Live) -> Response {
    // The guard lives as long as the body, and records how it ended.
    let body = flow
        .map(move |step| match step {
            Step::Item(Part::Body(bytes)) => {
                live.record().sent();
                Some(Ok(bytes))
            }
            Step::End(Ok(())) => {
                live.ended(Outcome::Done, None);
                None
            }
            Step::End(Err(failure)) => {
                live.ended(failure.outcome(), Some(failure.describe().into()));
                Some(Err(cut("the upstream answer failed midway")))
            }
            _ => None,
        })
        .filter_map(std::future::ready);
    head_response(head, Body::from_stream(body))
}

/// How an SSE answer is numbered and kept.
struct Numbering {
    /// `stream_options.include_usage`: otherwise a usage-only event is held back.
    include_usage: bool,
    /// The index of the subscription's first item.
    next: u64,
    /// The resume window, if a lost connection detaches the request (R18).
    resume: Option<Duration>,
    /// Events the API numbers up to this one are not sent (they were, before a resume).
    skip_through: Option<u64>,
}

/// Where a resumed stream starts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Numbered {
    /// At the flight's item of this index (`Last-Event-ID` + 1).
    From(u64),
    /// At the flight's start, without the events the API numbers up to this one
    /// (`starting_after`), if given.
    After(Option<u64>),
}

/// A streaming client's SSE answer: the events it asked for, each with its `id:` (its index in
/// the answer) and its `event:` name, then the dialect's end (`[DONE]`) or an error event; the
/// dialect's keep-alive every 15 s of silence. If the client goes away before the end and
/// `resume` is a window, its request is detached for that long instead of cancelled (R18).
fn sse_response(
    head: &Head,
    flow: Flow,
    api: Api,
    stream: Numbering,
    live: Live,
    key: Option<Box<Key>>,
) -> Response {
    let body = Sse {
        flow,
        live: Some(live),
        api,
        key,
        next: stream.next,
        include_usage: stream.include_usage,
        resume: stream.resume,
        skip_through: stream.skip_through,
        done: false,
    };
    let mut response = head_response(head, Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A streaming answer on its way: the flow, and how its frames are written and its end kept.
struct Sse {
    flow: Flow,
    /// Taken out when the client goes away, to detach it.
    live: Option<Live>,
    api: Api,
    /// The flight's key, until the answer's id is known (for the API's own resume call).
    key: Option<Box<Key>>,
    next: u64,
    include_usage: bool,
    resume: Option<Duration>,
    skip_through: Option<u64>,
    /// The end is out.
    done: bool,
}

impl futures::Stream for Sse {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let Some(step) = std::task::ready!(this.flow.poll_next_unpin(cx)) else {
                return Poll::Ready(None);
            };
            let index = this.next;
            let frame = match step {
                Step::Quiet => Bytes::from_static(this.api.keep_alive()),
                Step::Item(part) => {
                    this.next += 1;
                    let Part::Event(event) = part else { continue };
                    if let Some(live) = this.live.as_mut() {
                        name_answer(this.api, &mut this.key, live, &event);
                        live.record().event();
                    }
                    if event.usage_only && !this.include_usage {
                        continue;
                    }
                    if let Some(through) = this.skip_through {
                        if this.api.sequence(&event).is_some_and(|n| n <= through) {
                            continue;
                        }
                        this.skip_through = None;
                    }
                    sse::frame_with_id(index, event.name.as_deref(), &event.data)
                }
                Step::End(Ok(())) => {
                    this.end(Outcome::Done, None);
                    match this.api.done() {
                        Some(done) => sse::frame_with_id(index, None, done),
                        None => return Poll::Ready(None),
                    }
                }
                Step::End(Err(failure)) => {
                    this.end(failure.outcome(), Some(failure.describe().into()));
                    let (name, data) = failure.event(this.api);
                    sse::frame_with_id(index, name.as_deref(), &data)
                }
            };
            return Poll::Ready(Some(Ok(frame)));
        }
    }
}

/// Names the answer by its API's id, from the first event that carries it (then forgets the
/// key: one look per client).
fn name_answer(api: Api, key: &mut Option<Box<Key>>, live: &mut Live, event: &Event) {
    let Some(flight) = key.as_ref() else { return };
    if let Some(id) = api.answer_id(event) {
        live.names(id, flight);
        *key = None;
    }
}

impl Sse {
    fn end(&mut self, outcome: Outcome, why: Option<Cow<'static, str>>) {
        self.done = true;
        if let Some(live) = self.live.as_mut() {
            live.ended(outcome, why);
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
            (self.resume, self.flow.take_subscription(), self.live.take())
        {
            subscription.detach();
            live.detach(window);
        }
    }
}

/// The answer to a resume (`GET /v1/requests/{id}/events`, or the API's own call): the stream
/// of the client `live` is, from where `from` says, detached again (within the resume `window`)
/// if this connection goes too, and ended with an error event when `shutdown` fires.
pub(crate) fn resumed(
    api: Api,
    subscription: Subscription,
    live: Live,
    include_usage: bool,
    from: Numbered,
    keeping: &Keeping,
) -> Response {
    live.record().dialect(api.name());
    let id = live.id();
    let head = Head { status: StatusCode::OK, headers: Headers::default() };
    let (next, skip_through) = match from {
        Numbered::From(next) => (next, None),
        Numbered::After(after) => (0, after),
    };
    let stream = Numbering { include_usage, next, resume: keeping.resume, skip_through };
    let flow = Flow::new(subscription, keeping, true);
    let mut response = sse_response(&head, flow, api, stream, live, None);
    // The stream's id stays the one its client knows, for a next resume.
    response.extensions_mut().insert(id);
    response
}

/// A non-streaming client of a streamed flight: every event merged by the dialect as it
/// arrives (the client holds its answer once, not every event too), answered once the flight
/// is done (G2). Never 200 for a failed or malformed answer.
async fn merged_response(
    head: &Head,
    api: Api,
    mut flow: Flow,
    mut live: Live,
    mut key: Option<Box<Key>>,
) -> Response {
    let mut merge = api.merge();
    let end = loop {
        match flow.next().await {
            Some(Step::Item(Part::Event(event))) => {
                name_answer(api, &mut key, &mut live, &event);
                live.record().counted();
                if let Err(error) = merge.push(&event) {
                    live.ended(Outcome::Failed, Some("an answer that cannot be merged".into()));
                    return unmergeable(api, &error);
                }
            }
            Some(Step::Item(_) | Step::Quiet) => {}
            Some(Step::End(end)) => break end,
            None => break Err(Failure::Own(Refusal::FlightFailed)),
        }
    };
    if let Err(failure) = end {
        live.ended(failure.outcome(), Some(failure.describe().into()));
        return failure.response(api);
    }
    live.ended(Outcome::Done, None);
    match merge.finish() {
        Ok(body) => {
            live.record().sent();
            let mut response = head_response(head, Body::from(body));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(error) => unmergeable(api, &error),
    }
}

/// A streamed answer that does not add up to the API's object: 502, never a 200 with a piece
/// missing.
fn unmergeable(api: Api, error: &crate::dialect::chunks::CollectError) -> Response {
    api.error_response(&Refusal::Unmergeable(error).error())
}
