//! OpenAI's Chat Completions (`POST /v1/chat/completions`): chunks without event names, usage
//! only when asked for, `[DONE]` at the end, errors as `data: {"error": ...}`.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Class, Dialect, Merge};
use crate::dialect::body::Owned;
use crate::dialect::chunks::{CollectError, Collector, Kind};
use crate::flight::Event;

/// Chat Completions.
pub(super) struct Chat;

impl Dialect for Chat {
    fn name(&self) -> &'static str {
        "chat"
    }

    fn path(&self) -> &'static str {
        "/chat/completions"
    }

    fn owned(&self) -> Owned {
        Owned::StreamAndUsage
    }

    fn classify(&self, name: Option<Bytes>, data: Bytes) -> Class {
        classify(name, data)
    }

    fn merge(&self) -> Box<dyn Merge> {
        Box::new(Chunks(Collector::new(Kind::Chat)))
    }

    fn done(&self) -> Option<&'static [u8]> {
        Some(b"[DONE]")
    }
}

/// The merge of OpenAI chunks ([`crate::dialect::chunks`]), for chat and text completions.
pub(super) struct Chunks(pub(super) Collector);

impl Merge for Chunks {
    fn push(&mut self, event: &Event) -> Result<(), CollectError> {
        self.0.push(&event.data)
    }

    fn finish(self: Box<Self>) -> Result<Bytes, CollectError> {
        self.0.finish().map(|object| super::body_of(&object))
    }
}

/// What the gateway needs to know of a chunk, read without building it.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow)]
    error: Option<&'a RawValue>,
    #[serde(borrow)]
    choices: Option<&'a RawValue>,
    #[serde(borrow)]
    usage: Option<&'a RawValue>,
}

/// An OpenAI chunk: `[DONE]` ends the answer, an `error` object fails it, a chunk with no
/// choices but usage is usage-only (the gateway asked for it: a client that did not never sees
/// it); anything else, JSON or not, is passed on as sent (a collecting client refuses what is
/// not a chunk).
pub(super) fn classify(name: Option<Bytes>, data: Bytes) -> Class {
    if data.trim_ascii() == b"[DONE]" {
        return Class::Last(None);
    }
    let Ok(probe) = serde_json::from_slice::<Probe>(&data) else {
        return Class::Keep(Event { name, data, usage_only: false });
    };
    if probe.error.is_some() {
        return Class::Failure(Event { name, data, usage_only: false });
    }
    let empty = |raw: &RawValue| raw.get().bytes().filter(|b| !b.is_ascii_whitespace()).eq(*b"[]");
    let no_choices = probe.choices.is_some_and(empty);
    Class::Keep(Event { usage_only: no_choices && probe.usage.is_some(), name, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(text: &str) -> String {
        match classify(None, Bytes::from(text.to_owned())) {
            Class::Keep(event) => {
                format!("keep usage_only={} {}", event.usage_only, String::from_utf8_lossy(&event.data))
            }
            Class::Failure(event) => format!("failure {}", String::from_utf8_lossy(&event.data)),
            Class::Last(None) => "last".to_owned(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn events_are_classified_once() {
        let chunk = r#"{"choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}"#;
        assert_eq!(class(chunk), format!("keep usage_only=false {chunk}"));
        let usage = r#"{"choices": [ ],"usage":{"total_tokens":3}}"#;
        assert_eq!(class(usage), format!("keep usage_only=true {usage}"));
        let error = r#"{"error":{"message":"overloaded","type":"server_error"}}"#;
        assert_eq!(class(error), format!("failure {error}"));
        assert_eq!(class("not json"), "keep usage_only=false not json");
        assert_eq!(
            class(r#"{"error":null,"choices":[]}"#),
            r#"keep usage_only=false {"error":null,"choices":[]}"#
        );
        assert_eq!(class(" [DONE] "), "last");
    }
}
