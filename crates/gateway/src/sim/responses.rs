//! The simulated model's answer to the OpenAI Responses API (`POST /v1/responses`), streamed:
//! OpenAI's events in OpenAI's order, each written when it is polled from a few integers.
//!
//! The words are the chat answer's for the same seed (`sim::word`); the input tokens are the
//! whitespace words of `instructions` and of `input` (a string, or its items' `content`: a
//! string or the `text` of its parts).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::flight::{Event, Part, Parts, UpstreamError};
use crate::sim::{self, Pace};

/// The smallest `max_output_tokens` OpenAI accepts; below it, a 400.
pub(super) const MIN_MAX_OUTPUT_TOKENS: u64 = 16;

/// Prepares the streamed answer to `request` (the body the gateway forwards, `"stream": true`).
/// `base` (`sim::seed_state` of the canonical request text) makes the words deterministic.
///
/// A request OpenAI refuses gets [`UpstreamError::Status`] with a 400 and OpenAI's error body.
/// Otherwise the head comes at once, then `response.created` and `response.in_progress`; the
/// output item waits `first_token_delay`, each later token `token_interval`; the stream ends
/// after `response.completed` (or `response.incomplete` when `max_output_tokens` cut it). A zero
/// delay never touches the timer.
pub(super) fn answer(request: &Map<String, Value>, base: u64, pace: Pace) -> Result<Parts, UpstreamError> {
    Ok(sim::stream(Events::new(request, base, pace)?, Step::Created))
}

/// An event of the answer. One message item with one `output_text` part: what a text answer
/// is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Created,
    InProgress,
    ItemAdded,
    PartAdded,
    /// Token `k`.
    Delta(u64),
    TextDone,
    PartDone,
    ItemDone,
    /// `response.completed`, or `response.incomplete` when cut.
    End,
}

/// Everything one streamed answer needs to write its next event.
struct Events {
    /// The hex digits of the response id (`resp_…`).
    id: [u8; 48],
    /// The hex digits of the message item's id (`msg_…`).
    item: [u8; 48],
    created_at: u64,
    /// The request fields every `response` object echoes (`"instructions":…,"metadata":…`),
    /// rendered once: they may be long (instructions, tools) and never change.
    echo: Box<str>,
    base: u64,
    /// Tokens in the answer.
    tokens: u64,
    /// The length of the whole text, for the room of the events that carry it.
    text_len: usize,
    /// Whether `max_output_tokens` cut the answer short.
    cut: bool,
    input_tokens: u64,
    first_token_delay: Duration,
    token_interval: Duration,
}

impl Events {
    /// Checks the request as OpenAI does and prepares its answer.
    fn new(request: &Map<String, Value>, base: u64, pace: Pace) -> Result<Events, UpstreamError> {
        match request.get("model") {
            None | Some(Value::Null) => return Err(sim::missing("model")),
            Some(Value::String(_)) => {}
            Some(other) => return Err(sim::invalid_type("model", "a string", other)),
        }
        let input_tokens = input_tokens(request)?;
        let limit = match sim::non_negative(request, "max_output_tokens")? {
            Some(limit) if limit < MIN_MAX_OUTPUT_TOKENS => {
                let got = &request["max_output_tokens"];
                return Err(sim::below_min("max_output_tokens", MIN_MAX_OUTPUT_TOKENS, got));
            }
            limit => limit,
        };
        let full = pace.tokens as u64;
        let tokens = limit.map_or(full, |limit| full.min(limit));
        let start = sim::start(base, 0);
        let text_len = (0..tokens).map(|k| sim::word(start, k).len() + 1).sum::<usize>().saturating_sub(1);
        Ok(Events {
            id: fresh_hex(),
            item: fresh_hex(),
            created_at: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            echo: echo(request),
            base,
            tokens,
            text_len,
            cut: tokens < full,
            input_tokens,
            first_token_delay: pace.first_token_delay,
            token_interval: pace.token_interval,
        })
    }
}

impl sim::Answer for Events {
    type Step = Step;

    /// The step after `step`, in the order OpenAI sends them.
    fn after(&self, step: Step) -> Option<Step> {
        let next = match step {
            Step::Created => Step::InProgress,
            Step::InProgress => Step::ItemAdded,
            Step::ItemAdded => Step::PartAdded,
            Step::PartAdded if self.tokens > 0 => Step::Delta(0),
            Step::Delta(k) if k + 1 < self.tokens => Step::Delta(k + 1),
            Step::PartAdded | Step::Delta(_) => Step::TextDone,
            Step::TextDone => Step::PartDone,
            Step::PartDone => Step::ItemDone,
            Step::ItemDone => Step::End,
            Step::End => return None,
        };
        Some(next)
    }

    /// The wait before `step`. OpenAI creates the response at once; the output item appears
    /// with the model's first token, so that is where the first-token delay goes.
    fn delay(&self, step: Step) -> Duration {
        match step {
            Step::ItemAdded => self.first_token_delay,
            Step::Delta(k) if k > 0 => self.token_interval,
            _ => Duration::ZERO,
        }
    }

    /// The event of `step`, its JSON written now.
    fn render(&self, step: Step) -> Part {
        let name = self.name(step);
        let mut out = String::with_capacity(self.capacity(step));
        let _ = write!(out, r#"{{"type":"{name}","sequence_number":{}"#, self.sequence(step));
        match step {
            Step::Created | Step::InProgress => {
                out.push_str(r#","response":"#);
                self.push_response(&mut out, false);
            }
            Step::ItemAdded => {
                out.push_str(r#","output_index":0,"item":"#);
                self.push_item(&mut out, false);
            }
            Step::PartAdded => {
                self.push_place(&mut out);
                out.push_str(r#","part":"#);
                self.push_part(&mut out, false);
            }
            Step::Delta(k) => {
                self.push_place(&mut out);
                let space = if k == 0 { "" } else { " " };
                let word = sim::word(sim::start(self.base, 0), k);
                let _ = write!(out, r#","delta":"{space}{word}","logprobs":[]"#);
            }
            Step::TextDone => {
                self.push_place(&mut out);
                out.push_str(r#","text":""#);
                self.push_text(&mut out);
                out.push_str(r#"","logprobs":[]"#);
            }
            Step::PartDone => {
                self.push_place(&mut out);
                out.push_str(r#","part":"#);
                self.push_part(&mut out, true);
            }
            Step::ItemDone => {
                out.push_str(r#","output_index":0,"item":"#);
                self.push_item(&mut out, true);
            }
            Step::End => {
                out.push_str(r#","response":"#);
                self.push_response(&mut out, true);
            }
        }
        out.push('}');
        let name = Bytes::from_static(name.as_bytes());
        Part::Event(Event { name: Some(name), data: Bytes::from(out), usage_only: false })
    }
}

impl Events {
    /// The event's `sequence_number`: its place in the stream, from 0, without a counter.
    fn sequence(&self, step: Step) -> u64 {
        match step {
            Step::Created => 0,
            Step::InProgress => 1,
            Step::ItemAdded => 2,
            Step::PartAdded => 3,
            Step::Delta(k) => 4 + k,
            Step::TextDone => 4 + self.tokens,
            Step::PartDone => 5 + self.tokens,
            Step::ItemDone => 6 + self.tokens,
            Step::End => 7 + self.tokens,
        }
    }

    /// The event's `event:` name, which is also its `type`.
    fn name(&self, step: Step) -> &'static str {
        match step {
            Step::Created => "response.created",
            Step::InProgress => "response.in_progress",
            Step::ItemAdded => "response.output_item.added",
            Step::PartAdded => "response.content_part.added",
            Step::Delta(_) => "response.output_text.delta",
            Step::TextDone => "response.output_text.done",
            Step::PartDone => "response.content_part.done",
            Step::ItemDone => "response.output_item.done",
            Step::End if self.cut => "response.incomplete",
            Step::End => "response.completed",
        }
    }

    /// Room enough for the event of `step`, and little more: the history keeps each event's
    /// whole allocation. Its fixed text plus 20 digits for each number.
    fn capacity(&self, step: Step) -> usize {
        let text = self.text_len;
        match step {
            Step::Created | Step::InProgress => self.echo.len() + 288,
            Step::ItemAdded => 240,
            Step::PartAdded => 256,
            Step::Delta(_) => 224,
            Step::TextDone => text + 224,
            Step::PartDone => text + 272,
            Step::ItemDone => text + 320,
            Step::End => self.echo.len() + text + 704,
        }
    }

    /// The `response` object: in progress (no output, no usage) or finished.
    fn push_response(&self, out: &mut String, finished: bool) {
        let (status, details) = match (finished, self.cut) {
            (false, _) => ("in_progress", "null"),
            (true, false) => ("completed", "null"),
            (true, true) => ("incomplete", r#"{"reason":"max_output_tokens"}"#),
        };
        let _ = write!(
            out,
            r#"{{"id":"resp_{}","object":"response","created_at":{},"status":"{status}","error":null,"incomplete_details":{details},"#,
            hex(&self.id),
            self.created_at,
        );
        out.push_str(&self.echo);
        out.push_str(r#","output":["#);
        if finished {
            self.push_item(out, true);
        }
        out.push_str(r#"],"usage":"#);
        if finished {
            let (input, output) = (self.input_tokens, self.tokens);
            let total = input + output;
            let _ = write!(
                out,
                r#"{{"input_tokens":{input},"input_tokens_details":{{"cached_tokens":0,"cache_write_tokens":0}},"output_tokens":{output},"output_tokens_details":{{"reasoning_tokens":0}},"total_tokens":{total}}}}}"#
            );
        } else {
            out.push_str("null}");
        }
    }

    /// The message item: in progress and empty, or finished with its one part.
    fn push_item(&self, out: &mut String, finished: bool) {
        let status = match (finished, self.cut) {
            (false, _) => "in_progress",
            (true, false) => "completed",
            // OpenAI marks the message of a cut answer incomplete too.
            (true, true) => "incomplete",
        };
        let _ = write!(
            out,
            r#"{{"id":"msg_{}","type":"message","status":"{status}","content":["#,
            hex(&self.item)
        );
        if finished {
            self.push_part(out, true);
        }
        out.push_str(r#"],"role":"assistant"}"#);
    }

    /// The `output_text` part: empty when added, with the whole text when done.
    fn push_part(&self, out: &mut String, with_text: bool) {
        out.push_str(r#"{"type":"output_text","annotations":[],"logprobs":[],"text":""#);
        if with_text {
            self.push_text(out);
        }
        out.push_str(r#""}"#);
    }

    /// `,"item_id":…,"output_index":0,"content_index":0`: where a part or text event belongs.
    fn push_place(&self, out: &mut String) {
        let _ = write!(out, r#","item_id":"msg_{}","output_index":0,"content_index":0"#, hex(&self.item));
    }

    /// The whole answer, computed again from the seed (the words need no escaping).
    fn push_text(&self, out: &mut String) {
        let start = sim::start(self.base, 0);
        for k in 0..self.tokens {
            if k > 0 {
                out.push(' ');
            }
            out.push_str(sim::word(start, k));
        }
    }
}

/// The input tokens of a request: its `instructions` and `input`, checked as OpenAI does.
fn input_tokens(request: &Map<String, Value>) -> Result<u64, UpstreamError> {
    let instructions = match request.get("instructions") {
        None | Some(Value::Null) => 0,
        Some(Value::String(text)) => sim::word_count(text),
        Some(other) => return Err(sim::invalid_type("instructions", "a string", other)),
    };
    let input = match request.get("input") {
        None | Some(Value::Null) => return Err(sim::missing("input")),
        Some(Value::String(text)) => sim::word_count(text),
        Some(Value::Array(items)) => {
            let mut tokens = 0;
            for (i, item) in items.iter().enumerate() {
                let Value::Object(item) = item else {
                    return Err(sim::invalid_type(&format!("input[{i}]"), "an object", item));
                };
                tokens += match item.get("content") {
                    Some(Value::String(text)) => sim::word_count(text),
                    Some(Value::Array(parts)) => {
                        parts.iter().filter_map(|part| part.get("text")?.as_str()).map(sim::word_count).sum()
                    }
                    // Items without text (function call outputs, references) count nothing.
                    _ => 0,
                };
            }
            tokens
        }
        Some(other) => return Err(sim::invalid_type("input", "a string or an array of input items", other)),
    };
    Ok(instructions + input)
}

/// The request fields a `response` object echoes, with OpenAI's defaults for those not given.
fn echo(request: &Map<String, Value>) -> Box<str> {
    const FIELDS: &[(&str, &str)] = &[
        ("instructions", "null"),
        ("max_output_tokens", "null"),
        // Always given: checked before.
        ("model", "null"),
        ("parallel_tool_calls", "true"),
        ("previous_response_id", "null"),
        ("store", "true"),
        ("temperature", "1.0"),
        ("text", r#"{"format":{"type":"text"}}"#),
        ("tool_choice", r#""auto""#),
        ("tools", "[]"),
        ("top_p", "1.0"),
        ("truncation", r#""disabled""#),
        ("metadata", "{}"),
    ];
    let mut out = String::with_capacity(384);
    for (i, &(name, default)) in FIELDS.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, r#""{name}":"#);
        match request.get(name) {
            // With `arbitrary_precision` and `preserve_order`, a value displays as it was sent.
            Some(value) if !value.is_null() => {
                let _ = write!(out, "{value}");
            }
            _ => out.push_str(default),
        }
    }
    out.into_boxed_str()
}

/// 48 hex digits fresh for every flight: the digest of a fresh chat id, so the randomness (and
/// its fallback on a system without any) is `sim`'s own.
fn fresh_hex() -> [u8; 48] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(24);
    sim::push_fresh_id(&mut id);
    let digest = Sha256::digest(id.as_bytes());
    let mut hex = [0; 48];
    for (pair, byte) in hex.chunks_exact_mut(2).zip(digest.iter()) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 15)];
    }
    hex
}

/// The id digits as text: always ASCII hex.
fn hex(digits: &[u8; 48]) -> &str {
    std::str::from_utf8(digits).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::http::StatusCode;
    use futures::FutureExt;
    use serde_json::json;

    use futures::StreamExt;

    use crate::sim::Answer as _;

    use super::*;
    use crate::sim::testing::chat_words;

    const PACE: Pace = Pace { first_token_delay: Duration::ZERO, token_interval: Duration::ZERO, tokens: 20 };

    /// A request with 2 words of instructions and 3 + 2 words of input, plus `extra`.
    fn request(extra: Value) -> Map<String, Value> {
        let mut request = json!({
            "model": "gpt-test",
            "instructions": "be brief",
            "input": [
                {"role": "user", "content": "hello there world"},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "one two"},
                    {"type": "input_image", "image_url": "https://example.com/a.png"},
                ]},
            ],
            "stream": true,
        });
        for (key, value) in extra.as_object().unwrap() {
            request[key] = value.clone();
        }
        let Value::Object(request) = request else { unreachable!() };
        request
    }

    /// The events of an accepted request, each as its name and its parsed data.
    async fn events(request: &Map<String, Value>, seed: &str) -> Vec<(String, Value)> {
        sim::testing::named_events(answer(request, sim::seed_state(seed), PACE).unwrap()).await
    }

    fn deltas(events: &[(String, Value)]) -> String {
        events.iter().filter_map(|(_, data)| data.get("delta")?.as_str()).collect()
    }

    #[tokio::test]
    async fn events_come_in_openai_order_with_contiguous_sequence_numbers() {
        let events = events(&request(json!({})), "seed").await;
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        let mut expected = vec![
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
        ];
        expected.extend(["response.output_text.delta"; 20]);
        expected.extend([
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]);
        assert_eq!(names, expected);
        for (n, (name, data)) in events.iter().enumerate() {
            assert_eq!(data["type"], *name, "the event: name is the type");
            assert_eq!(data["sequence_number"], n, "{name}");
        }
        let item_id = events[2].1["item"]["id"].as_str().unwrap();
        for (_, data) in &events[3..events.len() - 2] {
            assert_eq!(data["item_id"], item_id);
            assert_eq!(data["output_index"], 0);
            assert_eq!(data["content_index"], 0);
        }
        assert_eq!(
            events[4].1,
            json!({"type": "response.output_text.delta", "sequence_number": 4, "item_id": item_id,
                "output_index": 0, "content_index": 0, "delta": chat_words("seed", 1), "logprobs": []})
        );
    }

    #[tokio::test]
    async fn the_response_echoes_the_request_and_starts_in_progress() {
        let events = events(&request(json!({})), "seed").await;
        let created = &events[0].1["response"];
        let id = created["id"].as_str().unwrap();
        let digits = id.strip_prefix("resp_").unwrap();
        assert!(digits.len() == 48 && digits.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert!(created["created_at"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(
            *created,
            json!({"id": id, "object": "response", "created_at": created["created_at"],
                "status": "in_progress", "error": null, "incomplete_details": null,
                "instructions": "be brief", "max_output_tokens": null, "model": "gpt-test",
                "parallel_tool_calls": true, "previous_response_id": null, "store": true,
                "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
                "tools": [], "top_p": 1.0, "truncation": "disabled", "metadata": {}, "output": [],
                "usage": null})
        );
        assert_eq!(events[1].1["response"], *created);
        assert_eq!(
            events[2].1,
            json!({"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
                "item": {"id": events[2].1["item"]["id"], "type": "message", "status": "in_progress",
                    "content": [], "role": "assistant"}})
        );
        assert_eq!(
            events[3].1["part"],
            json!({"type": "output_text", "annotations": [], "logprobs": [], "text": ""})
        );

        // What the request sets comes back as sent.
        let given = json!({"temperature": 0.25, "top_p": 0.5, "store": false, "parallel_tool_calls": false,
            "tools": [{"type": "function", "name": "f", "parameters": {}}], "tool_choice": "none",
            "metadata": {"k": "v"}, "previous_response_id": "resp_1", "truncation": "auto",
            "text": {"format": {"type": "json_object"}}, "max_output_tokens": 100,
            "model": "gpt \"quoted\" \u{e9}", "instructions": "line\nbreak"});
        let events = self::events(&request(given.clone()), "seed").await;
        let response = &events[0].1["response"];
        for (key, value) in given.as_object().unwrap() {
            assert_eq!(response[key], *value, "{key}");
        }
    }

    #[tokio::test]
    async fn the_deltas_make_the_final_text_everywhere() {
        let events = events(&request(json!({})), "seed").await;
        let text = deltas(&events);
        assert_eq!(text, chat_words("seed", 20), "the chat answer's words");
        let n = events.len();
        assert_eq!(events[n - 4].1["text"], text);
        assert_eq!(events[n - 4].1["logprobs"], json!([]));
        let part = json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text});
        assert_eq!(events[n - 3].1["part"], part);
        let item = &events[n - 2].1["item"];
        assert_eq!(
            *item,
            json!({"id": events[2].1["item"]["id"], "type": "message", "status": "completed",
                "content": [part], "role": "assistant"})
        );
        let digits = item["id"].as_str().unwrap().strip_prefix("msg_").unwrap();
        assert!(digits.len() == 48 && digits.bytes().all(|b| b.is_ascii_hexdigit()));
        let completed = &events[n - 1].1["response"];
        assert_eq!(completed["id"], events[0].1["response"]["id"]);
        assert_eq!(completed["status"], "completed");
        assert_eq!(completed["incomplete_details"], Value::Null);
        assert_eq!(completed["output"], json!([item]));
    }

    #[tokio::test]
    async fn usage_counts_instructions_and_input() {
        let events = events(&request(json!({})), "seed").await;
        // 2 words of instructions, 3 + 2 of input (the image counts nothing).
        assert_eq!(
            events.last().unwrap().1["response"]["usage"],
            json!({"input_tokens": 7, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 27})
        );
        let plain = request(json!({"input": "just four words here", "instructions": null}));
        let events = self::events(&plain, "seed").await;
        let usage = &events.last().unwrap().1["response"]["usage"];
        assert_eq!((&usage["input_tokens"], &usage["total_tokens"]), (&json!(4), &json!(24)));
    }

    #[tokio::test]
    async fn max_output_tokens_cuts_and_ends_incomplete() {
        let events = events(&request(json!({"max_output_tokens": 16})), "seed").await;
        assert_eq!(events.len(), 4 + 16 + 4);
        let text = deltas(&events);
        assert_eq!(text, chat_words("seed", 16));
        let (name, last) = events.last().unwrap();
        assert_eq!(name, "response.incomplete");
        assert_eq!(last["sequence_number"], 23);
        let response = &last["response"];
        assert_eq!(response["status"], "incomplete");
        assert_eq!(response["incomplete_details"], json!({"reason": "max_output_tokens"}));
        assert_eq!(response["max_output_tokens"], 16);
        assert_eq!(response["output"][0]["status"], "incomplete");
        assert_eq!(response["output"][0]["content"][0]["text"], text);
        assert_eq!(response["usage"]["output_tokens"], 16);
        assert_eq!(response["usage"]["total_tokens"], 7 + 16);
        assert_eq!(events[events.len() - 2].1["item"]["status"], "incomplete");

        for enough in [json!(20), json!(100000000000000000000000_u128)] {
            let events = self::events(&request(json!({"max_output_tokens": enough})), "seed").await;
            let (name, last) = events.last().unwrap();
            assert_eq!(name, "response.completed");
            assert_eq!(last["response"]["usage"]["output_tokens"], 20);
        }
    }

    #[tokio::test]
    async fn the_same_seed_gives_the_same_words_and_a_fresh_id() {
        let request = request(json!({}));
        let a = events(&request, "one").await;
        let b = events(&request, "one").await;
        let c = events(&request, "two").await;
        assert_eq!(deltas(&a), deltas(&b));
        assert_ne!(deltas(&a), deltas(&c));
        assert_ne!(a[0].1["response"]["id"], b[0].1["response"]["id"]);
        assert_ne!(a[2].1["item"]["id"], b[2].1["item"]["id"]);
    }

    #[test]
    fn every_event_fits_its_room() {
        let long = json!({"instructions": "word ".repeat(500), "tools": [{"type": "function", "name": "f"}]});
        for extra in [json!({}), json!({"max_output_tokens": 16}), long] {
            for tokens in [0, 20, 200] {
                let events = Events::new(&request(extra.clone()), 7, Pace { tokens, ..PACE }).unwrap();
                let mut at = Some(Step::Created);
                while let Some(step) = at {
                    let Part::Event(event) = events.render(step) else { panic!("an event") };
                    let room = events.capacity(step);
                    // Never regrown, and not much to spare.
                    assert!(event.data.len() <= room && room - event.data.len() < 128, "{step:?}");
                    at = events.after(step);
                }
            }
        }
    }

    #[test]
    fn invalid_requests_get_openai_400s() {
        let cases: &[(Value, &str, &str)] = &[
            (json!({"input": "hi"}), "model", "missing_required_parameter"),
            (json!({"model": null, "input": "hi"}), "model", "missing_required_parameter"),
            (json!({"model": 5, "input": "hi"}), "model", "invalid_type"),
            (json!({"model": "m"}), "input", "missing_required_parameter"),
            (json!({"model": "m", "input": 5}), "input", "invalid_type"),
            (json!({"model": "m", "input": {"role": "user"}}), "input", "invalid_type"),
            (json!({"model": "m", "input": ["hi"]}), "input[0]", "invalid_type"),
            (json!({"model": "m", "input": "hi", "instructions": 1}), "instructions", "invalid_type"),
            (
                json!({"model": "m", "input": "hi", "max_output_tokens": 15}),
                "max_output_tokens",
                "integer_below_min_value",
            ),
            (
                json!({"model": "m", "input": "hi", "max_output_tokens": -1}),
                "max_output_tokens",
                "integer_below_min_value",
            ),
            (
                json!({"model": "m", "input": "hi", "max_output_tokens": 16.5}),
                "max_output_tokens",
                "invalid_type",
            ),
            (
                json!({"model": "m", "input": "hi", "max_output_tokens": "16"}),
                "max_output_tokens",
                "invalid_type",
            ),
        ];
        for (body, param, code) in cases {
            let Value::Object(request) = body else { unreachable!() };
            let Err(UpstreamError::Status { head, body: error }) = answer(request, 0, PACE) else {
                panic!("accepted: {request:?}")
            };
            assert_eq!(head.status, StatusCode::BAD_REQUEST);
            assert_eq!(head.headers.get("content-type"), Some(&b"application/json"[..]));
            let error: Value = serde_json::from_slice(&error).unwrap();
            let keys: Vec<&str> = error["error"].as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys, ["message", "type", "param", "code"], "{request:?}");
            assert_eq!(error["error"]["type"], "invalid_request_error");
            assert_eq!(
                (error["error"]["param"].as_str(), error["error"]["code"].as_str()),
                (Some(*param), Some(*code))
            );
        }
        let Err(UpstreamError::Status { body, .. }) = answer(&Map::new(), 0, PACE) else {
            panic!("accepted")
        };
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"error": {"message": "Missing required parameter: 'model'.", "type": "invalid_request_error",
                "param": "model", "code": "missing_required_parameter"}})
        );
    }

    #[test]
    fn zero_delays_need_no_timer() {
        // No `enable_time()`: any sleep would panic.
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let mut parts = answer(&request(json!({})), 0, PACE).unwrap();
            let mut count = 0;
            // Every item is ready at its first poll: no timer, no yield.
            while let Some(part) = parts.next().now_or_never().expect("ready at once") {
                part.unwrap();
                count += 1;
            }
            assert_eq!(count, 1 + 4 + 20 + 4);
        });
    }

    #[tokio::test]
    async fn the_response_comes_at_once_and_tokens_at_the_pace() {
        let pace = Pace {
            first_token_delay: Duration::from_millis(60),
            token_interval: Duration::from_millis(20),
            tokens: 3,
        };
        let began = Instant::now();
        let mut parts = answer(&request(json!({})), 0, pace).unwrap();
        let name = |part: Option<Result<Part, UpstreamError>>| match part {
            Some(Ok(Part::Event(event))) => event.name.unwrap(),
            other => panic!("not an event: {other:?}"),
        };
        assert!(matches!(parts.next().now_or_never(), Some(Some(Ok(Part::Head(_))))));
        assert_eq!(name(parts.next().now_or_never().expect("created at once")), "response.created");
        assert_eq!(name(parts.next().now_or_never().expect("at once")), "response.in_progress");
        assert!(parts.next().now_or_never().is_none(), "the output waits for the first token");
        assert_eq!(name(parts.next().await), "response.output_item.added");
        assert!(began.elapsed() >= pace.first_token_delay);
        assert_eq!(name(parts.next().now_or_never().expect("with it")), "response.content_part.added");
        assert_eq!(name(parts.next().now_or_never().expect("with it")), "response.output_text.delta");
        assert!(parts.next().now_or_never().is_none(), "the second token waits an interval");
        let rest: Vec<_> = parts.collect().await;
        assert!(began.elapsed() >= pace.first_token_delay + 2 * pace.token_interval);
        // Tokens 2 and 3, then the four closing events.
        assert_eq!(rest.len(), 6);
    }
}
