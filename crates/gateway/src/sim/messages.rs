//! The simulated model's answer to Anthropic's Messages API (`POST /v1/messages`), streamed:
//! Anthropic's events in Anthropic's order, each written when it is polled from a few integers.
//!
//! The words are the chat answer's for the same seed (`sim::word`); the input tokens are the
//! whitespace words of `system` and of every message's `content` (a string, or the `text` of
//! its blocks).

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::flight::{Event, Part, Parts, UpstreamError};
use crate::sim::{self, Pace};

/// Prepares the streamed answer to `request` (the body the gateway forwards, `"stream": true`).
/// `base` (`sim::seed_state` of the canonical request text) makes the words deterministic.
///
/// A request Anthropic refuses gets [`UpstreamError::Status`] with a 400 and Anthropic's error
/// body. Otherwise the head comes at once, then `message_start`, `content_block_start` and a
/// `ping`; the first token waits `first_token_delay`, each later one `token_interval`; the
/// stream ends after `message_stop`. `max_tokens` cuts the answer (stop reason `max_tokens`).
/// A zero delay never touches the timer.
pub(super) fn answer(request: &Map<String, Value>, base: u64, pace: Pace) -> Result<Parts, UpstreamError> {
    Ok(sim::stream(Events::new(request, base, pace)?, Step::MessageStart))
}

/// An event of the answer: one text block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    MessageStart,
    BlockStart,
    Ping,
    /// Token `k`.
    Delta(u64),
    BlockStop,
    MessageDelta,
    MessageStop,
}

/// Everything one streamed answer needs to write its next event.
struct Events {
    /// The message id after `msg_`: 24 alphanumerics, as Anthropic's are.
    id: [u8; 24],
    /// The request's `model`, as JSON.
    model: Box<str>,
    base: u64,
    /// Tokens in the answer.
    tokens: u64,
    /// Whether `max_tokens` cut the answer short.
    cut: bool,
    input_tokens: u64,
    first_token_delay: Duration,
    token_interval: Duration,
}

impl Events {
    /// Checks the request as Anthropic does and prepares its answer.
    fn new(request: &Map<String, Value>, base: u64, pace: Pace) -> Result<Events, UpstreamError> {
        let model = match request.get("model") {
            None => return Err(invalid("model: Field required")),
            // A `Value::String` displays as its JSON, escapes included.
            Some(model @ Value::String(_)) => model.to_string(),
            Some(_) => return Err(invalid("model: Input should be a valid string")),
        };
        let limit = max_tokens(request)?;
        let input_tokens = system_tokens(request) + messages_tokens(request)?;
        let full = pace.tokens as u64;
        let tokens = full.min(limit);
        let mut id = String::with_capacity(24);
        sim::push_fresh_id(&mut id);
        let mut digits = [0; 24];
        digits.copy_from_slice(&id.as_bytes()[..24]);
        Ok(Events {
            id: digits,
            model: model.into_boxed_str(),
            base,
            tokens,
            cut: tokens < full,
            input_tokens,
            first_token_delay: pace.first_token_delay,
            token_interval: pace.token_interval,
        })
    }
}

impl sim::Answer for Events {
    type Step = Step;

    /// The step after `step`, in the order Anthropic sends them.
    fn after(&self, step: Step) -> Option<Step> {
        let next = match step {
            Step::MessageStart => Step::BlockStart,
            Step::BlockStart => Step::Ping,
            Step::Ping if self.tokens > 0 => Step::Delta(0),
            Step::Delta(k) if k + 1 < self.tokens => Step::Delta(k + 1),
            Step::Ping | Step::Delta(_) => Step::BlockStop,
            Step::BlockStop => Step::MessageDelta,
            Step::MessageDelta => Step::MessageStop,
            Step::MessageStop => return None,
        };
        Some(next)
    }

    /// The wait before `step`. Anthropic opens the message and its block at once and pings;
    /// the text follows with the model's first token, so that is where the first-token delay
    /// goes (on the block's end when there is no token at all).
    fn delay(&self, step: Step) -> Duration {
        match step {
            Step::Delta(0) => self.first_token_delay,
            Step::BlockStop if self.tokens == 0 => self.first_token_delay,
            Step::Delta(_) => self.token_interval,
            _ => Duration::ZERO,
        }
    }

    /// The event of `step`, its JSON written now (the fixed ones are static: no allocation).
    fn render(&self, step: Step) -> Part {
        let (name, data): (&'static str, Bytes) = match step {
            Step::MessageStart => {
                let mut out = String::with_capacity(self.model.len() + 240);
                let _ = write!(
                    out,
                    r#"{{"type":"message_start","message":{{"id":"msg_{}","type":"message","role":"assistant","model":{},"content":[],"stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":{},"output_tokens":1}}}}}}"#,
                    std::str::from_utf8(&self.id).unwrap_or_default(),
                    self.model,
                    self.input_tokens,
                );
                ("message_start", Bytes::from(out))
            }
            Step::BlockStart => (
                "content_block_start",
                Bytes::from_static(
                    br#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
                ),
            ),
            Step::Ping => ("ping", Bytes::from_static(br#"{"type":"ping"}"#)),
            Step::Delta(k) => {
                let space = if k == 0 { "" } else { " " };
                let word = sim::word(sim::start(self.base, 0), k);
                let mut out = String::with_capacity(96);
                let _ = write!(
                    out,
                    r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{space}{word}"}}}}"#
                );
                ("content_block_delta", Bytes::from(out))
            }
            Step::BlockStop => {
                ("content_block_stop", Bytes::from_static(br#"{"type":"content_block_stop","index":0}"#))
            }
            Step::MessageDelta => {
                let reason = if self.cut { "max_tokens" } else { "end_turn" };
                let mut out = String::with_capacity(136);
                let _ = write!(
                    out,
                    r#"{{"type":"message_delta","delta":{{"stop_reason":"{reason}","stop_sequence":null}},"usage":{{"output_tokens":{}}}}}"#,
                    self.tokens
                );
                ("message_delta", Bytes::from(out))
            }
            Step::MessageStop => ("message_stop", Bytes::from_static(br#"{"type":"message_stop"}"#)),
        };
        let name = Bytes::from_static(name.as_bytes());
        Part::Event(Event { name: Some(name), data, usage_only: false })
    }
}

/// A 400 with Anthropic's error object.
fn invalid(message: &str) -> UpstreamError {
    let body = json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}});
    UpstreamError::Status { head: sim::BAD_REQUEST_HEAD.clone(), body: Bytes::from(body.to_string()) }
}

/// The request's `max_tokens`: required, an integer of at least 1; one too large for 64 bits
/// saturates (it is above every answer).
fn max_tokens(request: &Map<String, Value>) -> Result<u64, UpstreamError> {
    let below = || invalid("max_tokens: Input should be greater than or equal to 1");
    match request.get("max_tokens") {
        None => Err(invalid("max_tokens: Field required")),
        Some(Value::Number(n)) => match (n.as_u64(), sim::integer_text(n)) {
            (Some(0), _) => Err(below()),
            (Some(n), _) => Ok(n),
            (None, Some((true, _))) => Err(below()),
            (None, Some((false, _))) => Ok(u64::MAX),
            (None, None) => Err(invalid("max_tokens: Input should be a valid integer")),
        },
        Some(_) => Err(invalid("max_tokens: Input should be a valid integer")),
    }
}

/// The words of a `content` or `system`: a string, or the `text` of its blocks.
fn text_tokens(content: Option<&Value>) -> u64 {
    match content {
        Some(Value::String(text)) => sim::word_count(text),
        Some(Value::Array(blocks)) => {
            blocks.iter().filter_map(|block| block.get("text")?.as_str()).map(sim::word_count).sum()
        }
        _ => 0,
    }
}

/// The input tokens of the request's `system`.
fn system_tokens(request: &Map<String, Value>) -> u64 {
    text_tokens(request.get("system"))
}

/// The request's `messages`, checked as Anthropic does; returns their input tokens.
fn messages_tokens(request: &Map<String, Value>) -> Result<u64, UpstreamError> {
    let messages = match request.get("messages") {
        None => return Err(invalid("messages: Field required")),
        Some(Value::Array(messages)) if messages.is_empty() => {
            return Err(invalid("messages: at least one message is required"));
        }
        Some(Value::Array(messages)) => messages,
        Some(_) => return Err(invalid("messages: Input should be a valid list")),
    };
    let mut tokens = 0;
    for (i, message) in messages.iter().enumerate() {
        let Value::Object(message) = message else {
            return Err(invalid(&format!("messages.{i}: Input should be a valid dictionary")));
        };
        match message.get("role").and_then(Value::as_str) {
            Some("user" | "assistant") => {}
            None if !message.contains_key("role") => {
                return Err(invalid(&format!("messages.{i}.role: Field required")));
            }
            _ => return Err(invalid(&format!("messages.{i}.role: Input should be 'user' or 'assistant'"))),
        }
        if !message.contains_key("content") {
            return Err(invalid(&format!("messages.{i}.content: Field required")));
        }
        tokens += text_tokens(message.get("content"));
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::http::StatusCode;
    use futures::FutureExt;

    use futures::StreamExt;

    use super::*;
    use crate::sim::testing::chat_words;

    const PACE: Pace = Pace { first_token_delay: Duration::ZERO, token_interval: Duration::ZERO, tokens: 5 };

    /// A request with 2 words of system and 3 + 2 words of messages, plus `extra`.
    fn request(extra: Value) -> Map<String, Value> {
        let mut request = json!({
            "model": "claude-test",
            "max_tokens": 1024,
            "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": "hello there world"},
                {"role": "assistant", "content": [{"type": "text", "text": "one two"}]},
                {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]},
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

    fn text(events: &[(String, Value)]) -> String {
        events.iter().filter_map(|(_, data)| data.get("delta")?.get("text")?.as_str()).collect()
    }

    #[tokio::test]
    async fn events_come_in_anthropic_order() {
        let events = events(&request(json!({})), "seed").await;
        let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
        let mut expected = vec!["message_start", "content_block_start", "ping"];
        expected.extend(["content_block_delta"; 5]);
        expected.extend(["content_block_stop", "message_delta", "message_stop"]);
        assert_eq!(names, expected);
        for (name, data) in &events {
            assert_eq!(data["type"], *name, "the event: name is the type");
        }
        let start = &events[0].1;
        let id = start["message"]["id"].as_str().unwrap();
        let digits = id.strip_prefix("msg_").unwrap();
        assert!(digits.len() == 24 && digits.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
        assert_eq!(
            *start,
            json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
                "model": "claude-test", "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 7, "output_tokens": 1}}})
        );
        assert_eq!(
            events[1].1,
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        );
        assert_eq!(events[2].1, json!({"type": "ping"}));
        assert_eq!(
            events[3].1,
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": chat_words("seed", 1)}})
        );
        assert_eq!(events[8].1, json!({"type": "content_block_stop", "index": 0}));
        assert_eq!(events[10].1, json!({"type": "message_stop"}));
        let odd = "claude \"quoted\" \u{e9}";
        let events = self::events(&request(json!({"model": odd})), "seed").await;
        assert_eq!(events[0].1["message"]["model"], odd, "written as JSON, escapes included");
    }

    #[tokio::test]
    async fn the_deltas_are_the_chat_words_and_usage_counts_them() {
        let events = events(&request(json!({})), "seed").await;
        assert_eq!(text(&events), chat_words("seed", 5));
        assert_eq!(
            events[9].1,
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": 5}})
        );
        // 2 words of system, 3 + 2 of messages (the image counts nothing).
        assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 7);
        let plain = request(
            json!({"system": "four words of system", "messages": [{"role": "user", "content": "hi"}]}),
        );
        let events = self::events(&plain, "seed").await;
        assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 5);
        let bare = request(json!({"system": null}));
        assert_eq!(self::events(&bare, "seed").await[0].1["message"]["usage"]["input_tokens"], 5);
    }

    #[tokio::test]
    async fn max_tokens_cuts_with_stop_reason_max_tokens() {
        let events = events(&request(json!({"max_tokens": 2})), "seed").await;
        assert_eq!(events.len(), 3 + 2 + 3);
        assert_eq!(text(&events), chat_words("seed", 2));
        assert_eq!(events[6].1["delta"]["stop_reason"], "max_tokens");
        assert_eq!(events[6].1["usage"]["output_tokens"], 2);
        for enough in [json!(5), json!(100000000000000000000000_u128)] {
            let events = self::events(&request(json!({"max_tokens": enough})), "seed").await;
            assert_eq!(events[9].1["delta"]["stop_reason"], "end_turn");
            assert_eq!(events[9].1["usage"]["output_tokens"], 5);
        }
    }

    #[tokio::test]
    async fn the_same_seed_gives_the_same_words_and_a_fresh_id() {
        let request = request(json!({}));
        let a = events(&request, "one").await;
        let b = events(&request, "one").await;
        let c = events(&request, "two").await;
        assert_eq!(text(&a), text(&b));
        assert_ne!(text(&a), text(&c));
        assert_ne!(a[0].1["message"]["id"], b[0].1["message"]["id"]);
    }

    #[test]
    fn invalid_requests_get_anthropic_400s() {
        let user = json!([{"role": "user", "content": "hi"}]);
        let cases: &[(Value, &str)] = &[
            (json!({"max_tokens": 1, "messages": user}), "model: Field required"),
            (json!({"model": 5, "max_tokens": 1, "messages": user}), "model: Input should be a valid string"),
            (json!({"model": "m", "messages": user}), "max_tokens: Field required"),
            (
                json!({"model": "m", "max_tokens": 0, "messages": user}),
                "max_tokens: Input should be greater than or equal to 1",
            ),
            (
                json!({"model": "m", "max_tokens": -5, "messages": user}),
                "max_tokens: Input should be greater than or equal to 1",
            ),
            (
                json!({"model": "m", "max_tokens": 1.5, "messages": user}),
                "max_tokens: Input should be a valid integer",
            ),
            (
                json!({"model": "m", "max_tokens": "9", "messages": user}),
                "max_tokens: Input should be a valid integer",
            ),
            (json!({"model": "m", "max_tokens": 1}), "messages: Field required"),
            (
                json!({"model": "m", "max_tokens": 1, "messages": []}),
                "messages: at least one message is required",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": "hi"}),
                "messages: Input should be a valid list",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": ["hi"]}),
                "messages.0: Input should be a valid dictionary",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"content": "hi"}]}),
                "messages.0.role: Field required",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "system", "content": "hi"}]}),
                "messages.0.role: Input should be 'user' or 'assistant'",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "a"}, {"role": "user"}]}),
                "messages.1.content: Field required",
            ),
        ];
        for (body, message) in cases {
            let Value::Object(request) = body else { unreachable!() };
            let Err(UpstreamError::Status { head, body: error }) = answer(request, 0, PACE) else {
                panic!("accepted: {request:?}")
            };
            assert_eq!(head.status, StatusCode::BAD_REQUEST);
            assert_eq!(head.headers.get("content-type"), Some(&b"application/json"[..]));
            let error: Value = serde_json::from_slice(&error).unwrap();
            assert_eq!(
                error,
                json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
            );
        }
    }

    #[test]
    fn zero_delays_need_no_timer() {
        // No `enable_time()`: any sleep would panic.
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            for tokens in [0, 5] {
                let mut parts = answer(&request(json!({})), 0, Pace { tokens, ..PACE }).unwrap();
                let mut count = 0;
                // Every item is ready at its first poll: no timer, no yield.
                while let Some(part) = parts.next().now_or_never().expect("ready at once") {
                    part.unwrap();
                    count += 1;
                }
                assert_eq!(count, 1 + 3 + tokens + 3);
            }
        });
    }

    #[tokio::test]
    async fn the_message_opens_at_once_and_tokens_come_at_the_pace() {
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
        for opening in ["message_start", "content_block_start", "ping"] {
            assert_eq!(name(parts.next().now_or_never().expect("at once")), opening);
        }
        assert!(parts.next().now_or_never().is_none(), "the first token waits");
        assert_eq!(name(parts.next().await), "content_block_delta");
        assert!(began.elapsed() >= pace.first_token_delay);
        assert!(parts.next().now_or_never().is_none(), "the second token waits an interval");
        let rest: Vec<_> = parts.collect().await;
        assert!(began.elapsed() >= pace.first_token_delay + 2 * pace.token_interval);
        // Tokens 2 and 3, then the three closing events.
        assert_eq!(rest.len(), 5);
    }
}
