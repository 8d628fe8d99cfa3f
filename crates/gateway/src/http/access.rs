//! One access line and one update of the request metrics per request, written in one place when
//! its response is done (as pingora's logging phase): what the handlers noted on its [`Record`].
//!
//! The line (`INFO`, target `streamflight_gateway::http::access`, message `request`) has
//! `request_id` (once), `method`, `path` (no query: it may carry a key), `dialect` (the
//! `endpoint` label's value), `status`, `role`, `first_event_ms`, `duration_ms`, `bytes` (body
//! bytes sent to the client), `upstream_request_id` (the upstream's `x-request-id` or
//! `request-id`), `model`, `outcome` and, when it did not end well, `error`. Never a header's
//! value but the upstream's id: no credential can reach it (G6).

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, Method};
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use streamflight_tokio::Role;

use crate::answer::registry::ClientId;
use crate::http::limits::Admission;
use crate::metrics::{Finished, Metrics};
use crate::telemetry::ClientSpan;

/// How a request's answer ended: the `outcome` label and the line's field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Answered whole, with a status below 400.
    Done,
    /// An error answer or event, a status of 400 or more, or a body that broke.
    Failed,
    /// Cancelled by `DELETE`, or its client left with no resume window.
    Cancelled,
    /// Its client left within the resume window: the request may be resumed.
    Detached,
}

impl Outcome {
    /// Its name, as the label and the line have it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Detached => "detached",
        }
    }
}

/// What the handlers note once or twice a request, behind one lock (never contended: one
/// request's tasks take it in turn); the per-event counts are atomics beside it.
#[derive(Debug, Default)]
struct Facts {
    /// The id its client was shown, when not the one it arrived with (a resumed stream's).
    shown: Option<ClientId>,
    status: u16,
    endpoint: Option<&'static str>,
    role: Option<Role>,
    /// The first word counts: a later one is a consequence.
    outcome: Option<(Outcome, Option<Cow<'static, str>>)>,
    /// The model as the client named it (for the line) and its label.
    model: Option<(Box<str>, Arc<str>)>,
    upstream_id: Option<Box<str>>,
    /// Its admission, until its response body takes it.
    admission: Option<Admission>,
}

/// What is known of one request's answer so far; written once, when it is dropped.
#[derive(Debug)]
pub(crate) struct Record {
    started: Instant,
    method: Method,
    /// Its target's path (the query is never logged), copied: a clone of the request's `Uri`
    /// would keep hyper's whole read buffer, which it was parsed from, for the answer's life.
    path: Box<str>,
    id: ClientId,
    metrics: Arc<Metrics>,
    facts: Mutex<Facts>,
    first_event: OnceLock<Instant>,
    events: AtomicU32,
    bytes: AtomicU64,
    /// With traces: the request's span, ended with the record. Boxed: it is larger than the
    /// rest of the record, which every held stream keeps, traced or not.
    span: Option<Box<ClientSpan>>,
}

impl Record {
    /// The record of a request for `path`, shown to its client as `id`, started now.
    pub(crate) fn new(
        id: ClientId,
        method: Method,
        path: &str,
        metrics: Arc<Metrics>,
        span: Option<ClientSpan>,
    ) -> Record {
        Record {
            span: span.map(Box::new),
            started: Instant::now(),
            method,
            path: path.into(),
            id,
            metrics,
            facts: Mutex::new(Facts::default()),
            first_event: OnceLock::new(),
            events: AtomicU32::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// The id its client was shown first.
    pub(crate) fn id(&self) -> ClientId {
        self.id
    }

    /// The request's span, when it is traced.
    pub(crate) fn span(&self) -> Option<&ClientSpan> {
        self.span.as_deref()
    }

    fn facts(&self) -> std::sync::MutexGuard<'_, Facts> {
        self.facts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The response's head: its status, the id its client was shown, and the upstream's own
    /// request id if it sent one (`x-request-id`, renamed `x-upstream-request-id` on the way,
    /// or Anthropic's `request-id`).
    pub(crate) fn head(&self, status: u16, shown: ClientId, headers: &HeaderMap) {
        let upstream = headers.get("x-upstream-request-id").or_else(|| headers.get("request-id"));
        let upstream = upstream.and_then(|value| value.to_str().ok()).map(Box::from);
        let mut facts = self.facts();
        facts.status = status;
        facts.shown = (shown != self.id).then_some(shown);
        facts.upstream_id = upstream;
    }

    /// It was admitted: `admission` is held until its response body is done.
    pub(crate) fn admitted(&self, admission: Admission) {
        self.facts().admission = Some(admission);
    }

    /// The dialect that coalesced it (a later call wins: a coalesced path may pass it through).
    pub(crate) fn dialect(&self, name: &'static str) {
        self.facts().endpoint = Some(name);
    }

    /// It was proxied unchanged.
    pub(crate) fn passthrough(&self) {
        self.dialect("passthrough");
    }

    /// Its role in its flight.
    pub(crate) fn role(&self, role: Role) {
        self.facts().role = Some(role);
    }

    /// The model it named, and that name's label.
    pub(crate) fn model(&self, name: Box<str>, label: Arc<str>) {
        self.facts().model = Some((name, label));
    }

    /// An event of its answer went to the client: the first one sets the time to the first event.
    pub(crate) fn event(&self) {
        self.counted();
        self.sent();
    }

    /// An event of its answer was taken in (merged), not sent yet.
    pub(crate) fn counted(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    /// The client got the first of its answer (a merged answer, a body): the time to the first
    /// event, unless an event set it already.
    pub(crate) fn sent(&self) {
        if self.first_event.get().is_none() {
            let _ = self.first_event.set(Instant::now());
        }
    }

    /// How the answer ended, and why when not well (the first word counts).
    pub(crate) fn end(&self, outcome: Outcome, why: Option<Cow<'static, str>>) {
        let mut facts = self.facts();
        if facts.outcome.is_none() {
            facts.outcome = Some((outcome, why));
        }
    }

    /// Its whole response body went out: done, or failed for a status of 400 or more.
    fn body_sent(&self) {
        let failed = self.facts().status >= 400;
        self.end(if failed { Outcome::Failed } else { Outcome::Done }, None);
    }
}

/// A role as `x-streamflight-role` and the line and the label name it.
pub(crate) fn role_name(role: Role) -> &'static str {
    role.as_str()
}

impl Drop for Record {
    fn drop(&mut self) {
        let now = Instant::now();
        let facts = self.facts.get_mut().unwrap_or_else(PoisonError::into_inner);
        let (outcome, why) =
            facts.outcome.take().unwrap_or((Outcome::Cancelled, Some(Cow::Borrowed("client went away"))));
        let endpoint = facts.endpoint.unwrap_or("gateway");
        let role = facts.role.map_or("none", role_name);
        let first_event = self.first_event.get().map(|&at| at.duration_since(self.started));
        let duration = now.duration_since(self.started);
        let none = self.metrics.models.label(None);
        let (model, label) =
            facts.model.as_ref().map_or((None, &none), |(name, label)| (Some(&**name), label));
        self.metrics.finished(&Finished {
            endpoint,
            role,
            outcome: outcome.name(),
            status: facts.status,
            model: label,
            first_event,
            duration,
            events: self.events.load(Ordering::Relaxed),
        });
        let ms = |took: std::time::Duration| took.as_secs_f64() * 1e3;
        // The macro looks at the level first: nothing below is formatted when it is off. No
        // parent: wherever the last holder drops it, no span adds its fields (its id again).
        tracing::info!(
            parent: None,
            request_id = facts.shown.unwrap_or(self.id).digits().as_str(),
            method = self.method.as_str(),
            path = &*self.path,
            dialect = endpoint,
            status = facts.status,
            role,
            first_event_ms = first_event.map(ms),
            duration_ms = ms(duration),
            bytes = self.bytes.load(Ordering::Relaxed),
            upstream_request_id = facts.upstream_id.as_deref(),
            model,
            outcome = outcome.name(),
            error = why.as_deref(),
            "request"
        );
        if let Some(span) = &self.span {
            span.finish(facts.status, first_event);
        }
    }
}

/// A response body whose bytes are counted into its [`Record`], and whose end is noted there:
/// sent whole, broken, or (dropped before its end) left by its client. It holds the request's
/// admission to its end.
pub(crate) struct Sent {
    body: Body,
    record: Arc<Record>,
    ended: bool,
    _admission: Option<Admission>,
}

impl Sent {
    /// `body`, unchanged (its size too, so a known length keeps its `content-length`).
    pub(crate) fn new(body: Body, record: Arc<Record>) -> Sent {
        let admission = record.facts().admission.take();
        Sent { body, record, ended: false, _admission: admission }
    }
}

impl http_body::Body for Sent {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.record.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                // hyper may not poll again once the body says it is over.
                if !this.ended && this.body.is_end_stream() {
                    this.ended = true;
                    this.record.body_sent();
                }
            }
            Some(Err(_)) => {
                this.ended = true;
                this.record.end(Outcome::Failed, Some(Cow::Borrowed("the response body broke")));
            }
            None if !this.ended => {
                this.ended = true;
                this.record.body_sent();
            }
            None => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        // An empty body (or one whose last frame hyper took) is never polled to its end.
        if !self.ended && self.body.is_end_stream() {
            self.record.body_sent();
        }
    }
}
