//! The gateway's own errors, for what it refuses or reports itself: [`Refusal`], one variant
//! each, and its status, type, code and message in one table ([`Refusal::error`]); each dialect
//! renders them, by default in OpenAI's shape `{"error":{"message","type","param","code"}}`
//! (body, event, response).

use std::borrow::Cow;

use axum::http::header::{CONTENT_TYPE, HeaderValue};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use crate::dialect::body::BodyError;
use crate::dialect::chunks::CollectError;
use crate::flight::Broken;

/// Everything the gateway itself says to a client instead of (or at the end of) an answer.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Refusal<'a> {
    /// Over `--max-concurrent-requests`: 503 (the caller adds `retry-after`).
    TooManyRequests,
    /// A body that is not a JSON object (400 `invalid_json`), that names a member twice (400
    /// `duplicate_member`), or whose `stream` fields have the wrong type (400 `invalid_type`),
    /// with its message.
    InvalidBody(&'a BodyError),
    /// A body over `--body-limit`, declared or sent: 413.
    BodyTooLarge,
    /// A body silent for longer than `--body-timeout`: 408.
    BodyTimeout,
    /// A body not whole within `--body-deadline` (this long), however steadily it came: 408.
    BodyDeadline(std::time::Duration),
    /// A body whose connection broke midway: 400.
    BodyBroken,
    /// A body the gateway failed to check (its parse on the blocking pool was lost): 500.
    BodyUnchecked,
    /// No live request with the id, for this tenant (G5: anyone else learns nothing more): 404.
    RequestNotFound,
    /// A `Last-Event-ID` (or `after`) that is not a number: 400.
    InvalidLastEventId,
    /// A `Last-Event-ID` after which the stream holds no events (released, or not sent yet): 400.
    NoEventsAfter,
    /// A resume of a request whose stream another connection reads: 409.
    RequestStreaming,
    /// A response of another tenant, by its id: 404, as for an unknown one (G5).
    ResponseNotFound(&'a str),
    /// A `starting_after` that is not a number: 400.
    InvalidStartingAfter,
    /// No such endpoint here (the simulated model serves only what it simulates): 404.
    UnknownUrl,
    /// The gateway is stopping and the grace period is over: 503.
    ShuttingDown,
    /// The flight ended in a way that is the gateway's fault, not the upstream's: 500.
    FlightFailed,
    /// The request was cancelled (`DELETE /v1/requests/{id}`): 409.
    Cancelled,
    /// The client fell out of the retained history (`--history-limit`): 500.
    Lagged,
    /// The upstream could not be used ([`Broken`]), with what happened (never a credential):
    /// type `upstream_error`, a code per kind, 502 (504 for a timeout).
    Upstream {
        /// What kind of failure.
        kind: Broken,
        /// What happened.
        message: &'a str,
    },
    /// The upstream's non-2xx status, for a client that has had its first byte already (before
    /// it, the upstream's own response goes out as it came).
    UpstreamStatus(StatusCode),
    /// A streamed answer that does not add up to the API's object: 502, never a 200 with a
    /// piece missing.
    Unmergeable(&'a CollectError),
}

const INVALID_REQUEST: &str = "invalid_request_error";
const SERVER: &str = "server_error";
const UPSTREAM: &str = "upstream_error";

impl Refusal<'_> {
    /// What it says: status, `error.type`, `error.code` and `error.message`.
    pub fn error(&self) -> Error<'_> {
        use Cow::{Borrowed as Text, Owned as Formatted};
        use StatusCode as S;
        let (status, kind, code, message) = match *self {
            Refusal::TooManyRequests => (
                S::SERVICE_UNAVAILABLE,
                SERVER,
                "too_many_requests",
                Text("the gateway is serving as many requests as it may (--max-concurrent-requests)"),
            ),
            Refusal::InvalidBody(error @ (BodyError::NotJson(_) | BodyError::NotAnObject)) => {
                (S::BAD_REQUEST, INVALID_REQUEST, "invalid_json", Formatted(error.to_string()))
            }
            Refusal::InvalidBody(error @ BodyError::DuplicateMember(_)) => {
                (S::BAD_REQUEST, INVALID_REQUEST, "duplicate_member", Formatted(error.to_string()))
            }
            Refusal::InvalidBody(error) => {
                (S::BAD_REQUEST, INVALID_REQUEST, "invalid_type", Formatted(error.to_string()))
            }
            Refusal::BodyTooLarge => (
                S::PAYLOAD_TOO_LARGE,
                INVALID_REQUEST,
                "request_too_large",
                Text("the request body is larger than this gateway accepts (--body-limit)"),
            ),
            Refusal::BodyTimeout => (
                S::REQUEST_TIMEOUT,
                INVALID_REQUEST,
                "request_timeout",
                Text("the request body did not arrive in time (--body-timeout)"),
            ),
            Refusal::BodyDeadline(deadline) => (
                S::REQUEST_TIMEOUT,
                INVALID_REQUEST,
                "request_timeout",
                Formatted(format!("the request body did not arrive within {deadline:?} (--body-deadline)")),
            ),
            Refusal::BodyBroken => {
                (S::BAD_REQUEST, INVALID_REQUEST, "invalid_body", Text("the request body could not be read"))
            }
            Refusal::BodyUnchecked => (
                S::INTERNAL_SERVER_ERROR,
                SERVER,
                "body_unchecked",
                Text("the gateway failed to check the request body"),
            ),
            Refusal::RequestNotFound => {
                (S::NOT_FOUND, INVALID_REQUEST, "request_not_found", Text("no live request with this id"))
            }
            Refusal::InvalidLastEventId => (
                S::BAD_REQUEST,
                INVALID_REQUEST,
                "invalid_last_event_id",
                Text("Last-Event-ID (or after) must be the id of an event of this stream"),
            ),
            Refusal::NoEventsAfter => (
                S::BAD_REQUEST,
                INVALID_REQUEST,
                "invalid_last_event_id",
                Text(
                    "the stream holds no events after this id (released by --history-limit, or not sent yet)",
                ),
            ),
            Refusal::RequestStreaming => (
                S::CONFLICT,
                INVALID_REQUEST,
                "request_streaming",
                Text("this request's stream is being read by another connection"),
            ),
            Refusal::ResponseNotFound(id) => (
                S::NOT_FOUND,
                INVALID_REQUEST,
                "response_not_found",
                Formatted(format!("No response found with id '{id}'.")),
            ),
            Refusal::InvalidStartingAfter => (
                S::BAD_REQUEST,
                INVALID_REQUEST,
                "invalid_starting_after",
                Text("starting_after must be the sequence_number of an event of this response"),
            ),
            Refusal::UnknownUrl => (S::NOT_FOUND, INVALID_REQUEST, "unknown_url", Text("no such endpoint")),
            Refusal::ShuttingDown => {
                (S::SERVICE_UNAVAILABLE, SERVER, "shutting_down", Text("the gateway is shutting down"))
            }
            Refusal::FlightFailed => (
                S::INTERNAL_SERVER_ERROR,
                SERVER,
                "flight_failed",
                Text("the shared upstream request failed inside the gateway"),
            ),
            Refusal::Cancelled => {
                (S::CONFLICT, "cancelled", "request_cancelled", Text("the request was cancelled"))
            }
            Refusal::Lagged => (
                S::INTERNAL_SERVER_ERROR,
                SERVER,
                "lagged",
                Text("this client fell behind the retained history (--history-limit) and missed events"),
            ),
            Refusal::Upstream { kind, message } => {
                let (status, code) = match kind {
                    Broken::Unreachable => (S::BAD_GATEWAY, "upstream_unreachable"),
                    Broken::Timeout => (S::GATEWAY_TIMEOUT, "upstream_timeout"),
                    Broken::Truncated => (S::BAD_GATEWAY, "upstream_truncated"),
                    Broken::TooLarge => (S::BAD_GATEWAY, "upstream_too_large"),
                    Broken::Malformed => (S::BAD_GATEWAY, "upstream_malformed"),
                    Broken::Lost => (S::BAD_GATEWAY, "upstream_lost"),
                    Broken::AnswerTooLarge => (S::BAD_GATEWAY, "answer_too_large"),
                    Broken::AnswerTooLong => (S::GATEWAY_TIMEOUT, "answer_too_long"),
                };
                (status, UPSTREAM, code, Text(message))
            }
            Refusal::UpstreamStatus(status) => {
                (status, UPSTREAM, "upstream_status", Formatted(format!("the upstream answered {status}")))
            }
            Refusal::Unmergeable(error) => (
                S::BAD_GATEWAY,
                UPSTREAM,
                "upstream_malformed",
                Formatted(format!("the upstream's streamed answer cannot be merged: {error}")),
            ),
        };
        Error { status, kind, code, message }
    }
}

/// A [`Refusal`] as said: what each dialect renders in its own shape.
#[derive(Clone, Debug)]
pub struct Error<'a> {
    /// The status, for a response.
    pub status: StatusCode,
    /// `error.type`.
    pub kind: &'a str,
    /// `error.code`.
    pub code: &'a str,
    /// `error.message`: never holds a credential.
    pub message: Cow<'a, str>,
}

impl Error<'_> {
    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let body =
            json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": self.code}});
        Bytes::from(body.to_string())
    }

    /// The response: `status`, the body, `content-type: application/json`.
    pub fn response(&self) -> Response {
        json_response(self.status, self.body())
    }

    /// The response, marked for the official SDKs as not worth retrying (`x-should-retry: false`):
    /// for what a retry would only repeat.
    pub fn final_response(&self) -> Response {
        let mut response = self.response();
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-should-retry"), HeaderValue::from_static("false"));
        response
    }
}

/// A JSON response of `status` with `body`.
pub fn json_response(status: StatusCode, body: Bytes) -> Response {
    (status, [(CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}
