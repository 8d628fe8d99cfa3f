//! OpenAI's Chat Completions (`POST /v1/chat/completions`): chunks without event names, usage
//! only when asked for, `[DONE]` at the end, errors as `data: {"error": ...}`.

use std::sync::LazyLock;

use bytes::Bytes;
use memchr::memmem::Finder;
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
        self.0.finish_body().map(Bytes::from)
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
    if plain(&data) {
        return Class::Keep(Event { name, data, usage_only: false });
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

/// Whether a chunk is surely kept as it is, not usage-only, without parsing it (the parse was
/// an eighth of a unique stream's cost): it names no `error`, and no `usage` or a null one as
/// its last member, as every chunk but the last says it when the gateway asks for usage. Any
/// other chunk is parsed. Keys are matched as written: a key spelt with an escape
/// (`"\u0065rror"`), which no upstream writes, would pass as a plain chunk.
fn plain(data: &[u8]) -> bool {
    static ERROR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""error""#));
    static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""usage""#));
    // In valid JSON a last member before the final brace is the outer object's: null usage.
    ERROR.find(data).is_none()
        && (data.trim_ascii_end().ends_with(br#""usage":null}"#) || USAGE.find(data).is_none())
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

    #[test]
    fn a_chunk_is_parsed_unless_it_surely_is_plain() {
        assert!(plain(br#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#));
        assert!(plain(br#"{"choices":[{"delta":{"content":"hi"}}]}"#));
        assert!(plain(b"not json"));
        // An error, a usage, a null usage that is not the last member: parsed.
        assert!(!plain(br#"{"error":{"message":"overloaded"}}"#));
        assert!(!plain(br#"{"choices":[],"usage":{"total_tokens":3}}"#));
        assert!(!plain(br#"{"usage":null,"choices":[]}"#));
        // The word in a text is escaped there, so no key: plain.
        assert!(plain(br#"{"choices":[{"delta":{"content":"an \"error\" word"}}],"usage":null}"#));
        // Whatever the path, the class is the parse's.
        for chunk in [
            r#"{"choices":[],"usage":{"total_tokens":3},"x":{"usage":null}}"#,
            r#"{"choices":[],"x":{"usage":{"total_tokens":3}},"usage":null}"#,
            r#"{"choices": [],"usage":{"total_tokens":3} }"#,
            r#"{"choices":[{"delta":{"content":"an \"error\" word"}}],"usage":null}"#,
        ] {
            let parsed = serde_json::from_str::<Probe>(chunk).unwrap();
            let usage_only = parsed.usage.is_some() && parsed.choices.is_some_and(|c| c.get().trim() == "[]");
            assert_eq!(class(chunk), format!("keep usage_only={usage_only} {chunk}"), "{chunk}");
        }
    }
}
