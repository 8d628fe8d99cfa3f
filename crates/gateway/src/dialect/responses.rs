//! OpenAI's Responses API (`POST /v1/responses`): named events numbered by `sequence_number`,
//! ended by `response.completed` (or `.incomplete`), failed by `response.failed` or `error`.
//!
//! A non-streaming client gets the `response` object of the event that ended the stream.
//! `background: true` requests live upstream: they pass through. The answer's id
//! (`response.id`) names it for the API's own resume call
//! (`GET /v1/responses/{id}?stream=true&starting_after=N`).

use axum::http::StatusCode;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::{Class, Dialect, Merge, Which, by_name, event_type};
use crate::dialect::body::Owned;
use crate::dialect::chunks::CollectError;
use crate::dialect::error;
use crate::flight::Event;

/// The Responses API.
pub(super) struct Responses;

/// Event names, borrowed rather than copied for each event (by the SSE decoder).
const NAMES: &[&str] = &[
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.output_item.done",
    "response.content_part.added",
    "response.content_part.done",
    "response.output_text.delta",
    "response.output_text.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.reasoning_summary_text.delta",
    "response.reasoning_summary_part.added",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
];

impl Dialect for Responses {
    fn name(&self) -> &'static str {
        "responses"
    }

    fn path(&self) -> &'static str {
        "/responses"
    }

    /// `stream` only: usage always comes in the final `response`, and `stream_options`
    /// (`include_obfuscation`) changes the events, so it stays in the key and goes as sent.
    fn owned(&self) -> Owned {
        Owned::Stream
    }

    fn passes(&self, body: &[u8]) -> bool {
        #[derive(Deserialize)]
        struct Background {
            background: Option<bool>,
        }
        serde_json::from_slice::<Background>(body).is_ok_and(|b| b.background == Some(true))
    }

    fn event_names(&self) -> &'static [&'static str] {
        NAMES
    }

    fn classify(&self, name: Option<Bytes>, data: Bytes) -> Class {
        by_name(name, data, |kind| match kind {
            b"response.completed" | b"response.incomplete" => Which::Last,
            b"response.failed" | b"error" => Which::Failure,
            b"keepalive" => Which::KeepAlive,
            _ => Which::Keep,
        })
    }

    fn merge(&self) -> Box<dyn Merge> {
        Box::new(Last::default())
    }

    /// A rate limit keeps its 429 (the SDKs back off); any other failure in the stream is the
    /// server's: 500, as the API answers a request without `stream` that fails so.
    fn failure_status(&self, event: &Event) -> StatusCode {
        match failure(&event.data)
            .and_then(|error| error.get("code").and_then(Value::as_str).map(str::to_owned))
        {
            Some(code) if code.contains("rate_limit") => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's error shape, with the upstream's own error object (`response.error`, or the
    /// `error` event's fields).
    fn failure_body(&self, event: &Event) -> Bytes {
        match failure(&event.data) {
            Some(error) => Bytes::from(serde_json::json!({ "error": error }).to_string()),
            None => event.data.clone(),
        }
    }

    /// An `error` event as the API sends one (`type`, `code`, `message`, `param`), with OpenAI's
    /// `error` object too, so that the SDKs raise in the usual loop rather than pass it by.
    fn error_body(&self, error: &error::Error<'_>) -> Bytes {
        let object = serde_json::json!({
            "message": error.message, "type": error.kind, "param": null, "code": error.code,
        });
        let event = serde_json::json!({
            "type": "error", "code": error.code, "message": error.message, "param": null, "error": object,
        });
        Bytes::from(event.to_string())
    }

    fn error_event(&self) -> Option<&'static str> {
        Some("error")
    }

    fn names_answers(&self) -> bool {
        true
    }

    fn answer_id(&self, event: &Event) -> Option<Box<str>> {
        #[derive(Deserialize)]
        struct Created<'a> {
            #[serde(borrow)]
            response: Option<Id<'a>>,
        }
        #[derive(Deserialize)]
        struct Id<'a> {
            #[serde(borrow)]
            id: Option<std::borrow::Cow<'a, str>>,
        }
        if event.name.as_deref() != Some(b"response.created") {
            return None;
        }
        let created: Created<'_> = serde_json::from_slice(&event.data).ok()?;
        created.response?.id.map(|id| id.into())
    }

    fn sequence(&self, event: &Event) -> Option<u64> {
        #[derive(Deserialize)]
        struct Numbered<'a> {
            #[serde(borrow)]
            sequence_number: Option<&'a RawValue>,
        }
        let numbered: Numbered<'_> = serde_json::from_slice(&event.data).ok()?;
        numbered.sequence_number?.get().parse().ok()
    }
}

/// The error object of a failure event: `response.error` of `response.failed`, or the fields
/// of an `error` event (`code`, `message`, `param`, and `type` as OpenAI's errors have it).
fn failure(data: &[u8]) -> Option<Value> {
    let Value::Object(mut event) = serde_json::from_slice::<Value>(data).ok()? else { return None };
    if let Some(error) = event.get_mut("response").and_then(|r| r.get_mut("error")).filter(|e| e.is_object())
    {
        return Some(error.take());
    }
    if let Some(error) = event.get("error").filter(|e| e.is_object()) {
        return Some(error.clone());
    }
    let mut error = serde_json::Map::new();
    for field in ["message", "type", "param", "code"] {
        let value = event.remove(field).unwrap_or(Value::Null);
        let value = if field == "type" { Value::from("server_error") } else { value };
        error.insert(field.to_owned(), value);
    }
    Some(Value::Object(error))
}

/// The merge of a Responses stream: the `response` of its last event.
#[derive(Default)]
struct Last {
    last: Option<Event>,
    pushed: usize,
}

impl Merge for Last {
    fn push(&mut self, event: &Event) -> Result<(), CollectError> {
        self.pushed += 1;
        // The name says which event it is; only an unnamed one is read for its `type`.
        let ends = match event.name.as_deref() {
            Some(name) => matches!(name, b"response.completed" | b"response.incomplete"),
            None => event_type(&event.data).is_some_and(|t| t == "response.completed" || t == "response.incomplete"),
        };
        if ends {
            self.last = Some(event.clone());
        }
        Ok(())
    }

    /// The `response` object of the last event, as the upstream sent it (every byte: it is
    /// never rebuilt).
    fn finish(self: Box<Self>) -> Result<Bytes, CollectError> {
        #[derive(Deserialize)]
        struct Ended<'a> {
            #[serde(borrow)]
            response: Option<&'a RawValue>,
        }
        let Some(last) = self.last else { return Err(CollectError::Empty) };
        let malformed =
            |reason: &str| CollectError::Malformed { index: self.pushed - 1, reason: reason.to_owned() };
        match serde_json::from_slice::<Ended<'_>>(&last.data) {
            Ok(Ended { response: Some(response) }) if response.get().starts_with('{') => {
                Ok(last.data.slice_ref(response.get().as_bytes()))
            }
            Ok(_) => Err(malformed("the last event has no `response` object")),
            Err(_) => Err(malformed("the last event is not a JSON object")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, data: &str) -> (Option<Bytes>, Bytes) {
        (Some(Bytes::from(name.to_owned())), Bytes::from(data.to_owned()))
    }

    #[test]
    fn the_terminal_events_end_and_the_failures_fail() {
        let (name, data) =
            event("response.output_text.delta", r#"{"type":"response.output_text.delta","delta":"hi"}"#);
        assert!(
            matches!(Responses.classify(name, data), Class::Keep(e) if e.name.as_deref() == Some(&b"response.output_text.delta"[..]))
        );
        let (name, data) =
            event("response.completed", r#"{"type":"response.completed","response":{"id":"r"}}"#);
        assert!(matches!(Responses.classify(name, data), Class::Last(Some(_))));
        let (name, data) = event(
            "response.failed",
            r#"{"type":"response.failed","response":{"error":{"code":"server_error","message":"no"}}}"#,
        );
        let Class::Failure(failed) = Responses.classify(name, data) else { panic!() };
        assert_eq!(Responses.failure_status(&failed), StatusCode::INTERNAL_SERVER_ERROR);
        let body: Value = serde_json::from_slice(&Responses.failure_body(&failed)).unwrap();
        assert_eq!(body, serde_json::json!({"error": {"code": "server_error", "message": "no"}}));
        let (name, data) = event(
            "error",
            r#"{"type":"error","code":"rate_limit_exceeded","message":"slow down","param":null}"#,
        );
        let Class::Failure(error) = Responses.classify(name, data) else { panic!() };
        assert_eq!(Responses.failure_status(&error), StatusCode::TOO_MANY_REQUESTS);
        // Without event names, the data's type says.
        let unnamed =
            Responses.classify(None, Bytes::from_static(br#"{"type":"response.incomplete","response":{}}"#));
        assert!(matches!(unnamed, Class::Last(Some(_))));
    }

    #[test]
    fn the_answer_is_the_last_response_and_its_id_and_numbers_are_read() {
        let created = Event {
            name: Some(Bytes::from_static(b"response.created")),
            data: Bytes::from_static(br#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","status":"in_progress"}}"#),
            usage_only: false,
        };
        assert_eq!(Responses.answer_id(&created).as_deref(), Some("resp_1"));
        assert_eq!(Responses.sequence(&created), Some(0));
        let done = Event {
            name: Some(Bytes::from_static(b"response.completed")),
            data: Bytes::from_static(br#"{"type":"response.completed","sequence_number":12345678901234567890,"response":{"id":"resp_1","usage":{"total_tokens":123456789012345678901234567890}}}"#),
            usage_only: false,
        };
        assert_eq!(Responses.answer_id(&done), None);
        assert_eq!(Responses.sequence(&done), Some(12345678901234567890));
        let mut merge = Responses.merge();
        merge.push(&created).unwrap();
        merge.push(&done).unwrap();
        let response: Value = serde_json::from_slice(&merge.finish().unwrap()).unwrap();
        assert_eq!(
            response.to_string(),
            r#"{"id":"resp_1","usage":{"total_tokens":123456789012345678901234567890}}"#
        );
        let mut unfinished = Responses.merge();
        unfinished.push(&created).unwrap();
        assert_eq!(unfinished.finish(), Err(CollectError::Empty));
    }

    #[test]
    fn only_background_requests_pass() {
        assert!(Responses.passes(br#"{"model":"m","input":"hi","background":true}"#));
        assert!(!Responses.passes(br#"{"model":"m","input":"hi","background":false}"#));
        assert!(!Responses.passes(br#"{"model":"m","input":"hi"}"#));
    }
}
