//! What one flight carries from its upstream to every client: the upstream's response head,
//! then its SSE events or body bytes; and how a flight fails. Shared by every backend.

use std::fmt;
use std::sync::Arc;

use axum::http::StatusCode;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::dialect::error::Refusal;
pub use crate::kept_headers::Headers;

/// The upstream's response head, as each client of the flight gets it: the status and the
/// end-to-end headers (hop-by-hop ones and `content-length` already removed).
#[derive(Clone, Debug)]
pub struct Head {
    /// The upstream's status.
    pub status: StatusCode,
    /// The upstream's end-to-end headers.
    pub headers: Headers,
}

/// One item of a flight's history. Cheap to clone: every subscriber gets its own copy.
#[derive(Clone, Debug)]
pub enum Part {
    /// The upstream's 2xx response head: always the first item of a flight.
    Head(Arc<Head>),
    /// One SSE event's data, as the upstream sent it (never `[DONE]`, which is the end).
    Event(Event),
    /// A piece of a body that is not SSE (embeddings), as the upstream sent it.
    Body(Bytes),
}

/// What a part of an answer weighs against `--linger-budget`: the bytes it holds (an event's
/// data and name, a body piece; a head's headers), plus a small fixed share for the item.
pub(crate) fn weight(part: &Part) -> usize {
    const ITEM: usize = 64;
    ITEM + match part {
        Part::Head(head) => head.headers.size(),
        Part::Event(event) => event.data.len() + event.name.as_ref().map_or(0, Bytes::len),
        Part::Body(piece) => piece.len(),
    }
}

/// One SSE event of a streamed answer, classified once when it arrives.
#[derive(Clone, Debug)]
pub struct Event {
    /// The event's `event:` field as sent, if it had one (the Responses API and Anthropic's
    /// Messages name every event; Chat Completions none).
    pub name: Option<Bytes>,
    /// The event's data, as sent.
    pub data: Bytes,
    /// A chunk that only carries `usage` (empty `choices`): the gateway asked for it, so a
    /// streaming client that did not ask never sees it.
    pub usage_only: bool,
}

/// The stream a flight reads once prepared: the head, then events or body pieces.
pub type Parts = BoxStream<'static, Result<Part, UpstreamError>>;

/// Why a flight failed; every client of the flight gets it.
#[derive(Clone, Debug)]
pub enum UpstreamError {
    /// The upstream answered with a non-2xx status: its head and (bounded) body go to each
    /// client that has not received a byte yet, exactly as the upstream sent them.
    Status {
        /// Status and end-to-end headers (`retry-after`, `x-ratelimit-*`, ...).
        head: Arc<Head>,
        /// The body, cut at the error-body bound.
        body: Bytes,
    },
    /// The upstream sent an error inside its stream (`data: {"error": ...}`, `event: error`,
    /// `response.failed`): the event, as sent.
    InStream(Event),
    /// The upstream could not be used: unreachable, too slow, broken, cut short, too large or
    /// malformed. The message never holds a credential.
    Broken {
        /// What kind of failure, for the status a client gets.
        kind: Broken,
        /// What happened, for the client's error message and the log.
        message: String,
    },
}

/// The kinds of [`UpstreamError::Broken`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// No connection, or TLS failed: 502.
    Unreachable,
    /// No response head, or no event, within its timeout: 504.
    Timeout,
    /// The connection broke, or the stream ended before `[DONE]`: 502.
    Truncated,
    /// One event, or the body, exceeded its bound: 502.
    TooLarge,
    /// The upstream sent something that is not what it should be (not SSE, not UTF-8): 502.
    Malformed,
    /// The replica leading this flight across the fleet was lost mid-stream (or this replica
    /// fell too far behind it); retry: 502.
    Lost,
    /// The whole answer grew past `--max-answer-bytes`; the upstream request was aborted: 502.
    AnswerTooLarge,
    /// The whole answer lasted longer than `--max-answer-duration`; the upstream request was
    /// aborted: 504.
    AnswerTooLong,
}

impl UpstreamError {
    /// A [`UpstreamError::Broken`] of `kind`.
    pub fn broken(kind: Broken, message: impl Into<String>) -> UpstreamError {
        UpstreamError::Broken { kind, message: message.into() }
    }

    /// The status a client that has not received a byte yet gets for this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Status { head, .. } => head.status,
            UpstreamError::InStream(_) => StatusCode::BAD_GATEWAY,
            UpstreamError::Broken { kind, .. } => kind.status(),
        }
    }
}

impl Broken {
    /// The status a client that has not received a byte yet gets, as the gateway's table of its
    /// own errors says ([`Refusal::error`]).
    pub fn status(self) -> StatusCode {
        Refusal::Upstream { kind: self, message: "" }.error().status
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Status { head, .. } => write!(f, "the upstream answered {}", head.status),
            UpstreamError::InStream(_) => f.write_str("the upstream sent an error inside its stream"),
            UpstreamError::Broken { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for UpstreamError {}
