//! Anthropic's Messages API (`POST /v1/messages`): named events from `message_start` to
//! `message_stop`, `ping`s that are no part of the answer, failures as `event: error`.
//!
//! The key holds `anthropic-version` and `anthropic-beta`; a non-streaming client gets the
//! `Message` merged from the events ([`merge`]); the gateway's own errors use Anthropic's shape.

mod merge;

use axum::http::StatusCode;
use axum::http::header::{HeaderName, HeaderValue};
use bytes::Bytes;
use serde_json::Value;

use super::{Class, Dialect, Merge, Which, by_name};
use crate::dialect::body::Owned;
use crate::dialect::chunks::CollectError;
use crate::dialect::error;
use crate::flight::Event;

/// Anthropic's Messages.
pub(in crate::dialect) struct Messages;

/// Event names, borrowed rather than copied for each event (by the SSE decoder).
const NAMES: &[&str] = &[
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
];

impl Dialect for Messages {
    fn name(&self) -> &'static str {
        "messages"
    }

    fn path(&self) -> &'static str {
        "/messages"
    }

    fn owned(&self) -> Owned {
        Owned::Stream
    }

    fn selectors(&self) -> &'static [&'static str] {
        &["anthropic-version", "anthropic-beta"]
    }

    fn event_names(&self) -> &'static [&'static str] {
        NAMES
    }

    fn classify(&self, name: Option<Bytes>, data: Bytes) -> Class {
        by_name(name, data, |kind| match kind {
            b"ping" => Which::KeepAlive,
            b"message_stop" => Which::Last,
            b"error" => Which::Failure,
            _ => Which::Keep,
        })
    }

    fn merge(&self) -> Box<dyn Merge> {
        Box::new(Merged(merge::Merge::new()))
    }

    /// The status Anthropic gives the error's type (`overloaded_error` is 529), so that the
    /// SDK raises the class it would have raised had the request been sent without `stream`.
    fn failure_status(&self, event: &Event) -> StatusCode {
        let kind = serde_json::from_slice::<Value>(&event.data)
            .ok()
            .and_then(|data| data.get("error")?.get("type")?.as_str().map(str::to_owned));
        let code = match kind.as_deref() {
            Some("invalid_request_error") => 400,
            Some("authentication_error") => 401,
            Some("billing_error") => 402,
            Some("permission_error") => 403,
            Some("not_found_error") => 404,
            Some("request_too_large") => 413,
            Some("rate_limit_error") => 429,
            Some("timeout_error") => 504,
            Some("overloaded_error") => 529,
            _ => 500,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// `{"type":"error","error":{"type":…,"message":…}}`, the type Anthropic gives the status.
    fn error_body(&self, error: &error::Error<'_>) -> Bytes {
        let kind = match error.status.as_u16() {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            408 | 504 => "timeout_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            _ => "api_error",
        };
        let body = serde_json::json!({"type": "error", "error": {"type": kind, "message": error.message}});
        Bytes::from(body.to_string())
    }

    fn keep_alive(&self) -> &'static [u8] {
        b"event: ping\ndata: {\"type\": \"ping\"}\n\n"
    }

    fn error_event(&self) -> Option<&'static str> {
        Some("error")
    }

    fn credential(&self, key: &str) -> Option<(HeaderName, HeaderValue)> {
        HeaderValue::from_str(key).ok().map(|value| (HeaderName::from_static("x-api-key"), value))
    }
}

/// [`merge::Merge`] behind the dialects' interface.
struct Merged(merge::Merge);

impl Merge for Merged {
    fn push(&mut self, event: &Event) -> Result<(), CollectError> {
        self.0.push(&event.data)
    }

    fn finish(self: Box<Self>) -> Result<Bytes, CollectError> {
        self.0.finish().map(|object| crate::dialect::body_of(&object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(name: &'static str, data: &'static str) -> Class {
        Messages.classify(Some(Bytes::from_static(name.as_bytes())), Bytes::from_static(data.as_bytes()))
    }

    #[test]
    fn pings_are_not_kept_and_errors_keep_anthropics_status() {
        assert!(matches!(classify("ping", r#"{"type": "ping"}"#), Class::KeepAlive));
        assert!(matches!(classify("message_stop", r#"{"type":"message_stop"}"#), Class::Last(Some(_))));
        assert!(matches!(classify("content_block_delta", "{}"), Class::Keep(_)));
        let Class::Failure(overloaded) = classify(
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ) else {
            panic!("an error event fails the flight")
        };
        assert_eq!(Messages.failure_status(&overloaded).as_u16(), 529);
        assert_eq!(Messages.failure_body(&overloaded), overloaded.data);
    }

    #[test]
    fn the_gateways_errors_are_in_anthropics_shape() {
        let error = error::Refusal::BodyTooLarge.error();
        let body: Value = serde_json::from_slice(&Messages.error_body(&error)).unwrap();
        let message = "the request body is larger than this gateway accepts (--body-limit)";
        assert_eq!(
            body,
            serde_json::json!({"type":"error","error":{"type":"request_too_large","message":message}})
        );
    }
}
