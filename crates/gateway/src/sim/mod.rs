//! The embedded simulated model: the gateway's default backend, so that it runs offline. It
//! answers the way an OpenAI server does and produces what the upstream path produces
//! ([`Parts`]): its response head at once, then for chat and completions one OpenAI chunk per
//! event (a role chunk per choice for chat, the tokens, a finish chunk per choice, the usage
//! chunk when asked), for embeddings one JSON body; a request a real server refuses gets its
//! 400 in OpenAI's error shape.
//!
//! Deterministic: the words and vectors come from `seed` (the request's canonical text) through
//! splitmix64, so the same request gets the same answer; only the id and `created` differ.
//!
//! Lazy: a flight holds a few integers and one pre-rendered chunk prefix; each chunk's JSON is
//! written when it is polled, never built up front (issue 15: that is where a stream's memory
//! went).
//!
//! `prompt_tokens` is a simple, deterministic count: the whitespace-separated words of every
//! message's `content` (a string, or the `text` of its parts) for chat, of the prompt(s) for
//! completions and of the input(s) for embeddings, a token array counting its length.

mod messages;
mod responses;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::dialect::Api;
use crate::flight::{Event, Head, Headers, Part, Parts, UpstreamError};

/// How the simulated model paces its answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pace {
    /// Time from the response head to the first token (the first event).
    pub first_token_delay: Duration,
    /// Time between two tokens.
    pub token_interval: Duration,
    /// Tokens in a full answer, per choice (`max_tokens` may cut it shorter).
    pub tokens: usize,
}

/// The model name reported when the request names none.
pub(crate) const MODEL: &str = "streamflight-sim";

/// The `system_fingerprint` of every chunk: the simulated model's "configuration" never changes.
pub(crate) const SYSTEM_FINGERPRINT: &str = "fp_streamflight_sim";

/// The largest `n` accepted; beyond it, a 400.
pub(crate) const MAX_N: u64 = 16;

/// The most prompts (completions) or inputs (embeddings) in one request; beyond it, a 400.
pub(crate) const MAX_INPUTS: usize = 2048;

/// The length of an embedding when the request gives no `dimensions`.
pub(crate) const DEFAULT_DIMENSIONS: u64 = 8;

/// The largest `dimensions` accepted; beyond it, a 400.
pub(crate) const MAX_DIMENSIONS: u64 = 4096;

/// The `created` of the model in `/v1/models`: fixed, so the listing is the same every time.
const MODEL_CREATED: u64 = 1_735_689_600; // 2025-01-01T00:00:00Z

/// The words the answers are made of. Plain lowercase ASCII: written into JSON unescaped.
const WORDS: &[&str] = &[
    "the", "stream", "flight", "answer", "token", "model", "shared", "request", "many", "clients", "one",
    "upstream", "quietly", "arrives", "while", "every", "listener", "hears", "same", "words", "in", "order",
    "and", "nobody", "waits", "for", "slowest", "reader", "gateway", "keeps", "history", "joins",
];

/// The body of `GET /v1/models`: the simulated model alone.
pub(crate) fn models() -> Bytes {
    let mut out = String::with_capacity(128);
    out.push_str(r#"{"object":"list","data":[{"id":"#);
    push_json_str(&mut out, MODEL);
    let _ = write!(out, r#","object":"model","created":{MODEL_CREATED},"owned_by":"streamflight"}}]}}"#);
    Bytes::from(out)
}

/// Prepares the answer to `body` (the request body as the gateway forwards it: for
/// chat/completions it has `"stream": true` and `"stream_options": {"include_usage": true}`).
/// `seed` (the canonical request text) makes the words deterministic: same seed, same words.
///
/// A request a real server refuses gets [`UpstreamError::Status`] with a 400 and OpenAI's
/// error body. Otherwise the stream's first item is the head, at once; the first event follows
/// after `first_token_delay`, then one token step per `token_interval`. A zero delay never
/// touches the timer.
pub(crate) async fn answer(
    api: Api,
    body: Bytes,
    seed: Arc<str>,
    pace: Pace,
) -> Result<Parts, UpstreamError> {
    let request = parse(&body)?;
    let base = seed_state(&seed);
    match api.name() {
        "chat" => Ok(Chunks::new(true, &request, base, pace)?.parts()),
        "completions" => Ok(Chunks::new(false, &request, base, pace)?.parts()),
        "embeddings" => {
            let body = embeddings(&request, base)?;
            Ok(embedding_parts(body, pace.first_token_delay))
        }
        "responses" => responses::answer(&request, base, pace),
        "messages" => messages::answer(&request, base, pace),
        other => Err(UpstreamError::Status {
            head: Arc::clone(&NOT_FOUND_HEAD),
            body: Bytes::from(format!(
                r#"{{"error":{{"message":"the simulated model does not speak {other}","type":"invalid_request_error","param":null,"code":"unknown_url"}}}}"#
            )),
        }),
    }
}

/// The 200 head of a streamed answer, shared by every flight.
pub(crate) static SSE_HEAD: LazyLock<Arc<Head>> = LazyLock::new(|| head(StatusCode::OK, "text/event-stream"));
/// The 200 head of an embeddings answer, shared by every flight.
static JSON_HEAD: LazyLock<Arc<Head>> = LazyLock::new(|| head(StatusCode::OK, "application/json"));
/// The head of a path the simulated model does not serve.
static NOT_FOUND_HEAD: LazyLock<Arc<Head>> =
    LazyLock::new(|| head(StatusCode::NOT_FOUND, "application/json"));
/// The head of a refused request, shared by every refusal.
pub(crate) static BAD_REQUEST_HEAD: LazyLock<Arc<Head>> =
    LazyLock::new(|| head(StatusCode::BAD_REQUEST, "application/json"));

fn head(status: StatusCode, content_type: &'static str) -> Arc<Head> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Arc::new(Head { status, headers: Headers::from(&headers) })
}

// ---------------------------------------------------------------------------------------------
// Refusals, in the shape and wording of OpenAI's own.

/// A 400 with OpenAI's error object.
fn invalid(param: Option<&str>, code: Option<&str>, message: String) -> UpstreamError {
    let body =
        json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}});
    UpstreamError::Status { head: BAD_REQUEST_HEAD.clone(), body: Bytes::from(body.to_string()) }
}

pub(crate) fn missing(param: &str) -> UpstreamError {
    invalid(
        Some(param),
        Some("missing_required_parameter"),
        format!("Missing required parameter: '{param}'."),
    )
}

pub(crate) fn invalid_type(param: &str, expected: &str, got: &Value) -> UpstreamError {
    let message = format!("Invalid type for '{param}': expected {expected}, but got {} instead.", kind(got));
    invalid(Some(param), Some("invalid_type"), message)
}

fn empty_array(param: &str) -> UpstreamError {
    let message = format!(
        "Invalid '{param}': empty array. Expected an array with minimum length 1, but got an empty array \
         instead."
    );
    invalid(Some(param), Some("empty_array"), message)
}

fn too_long(param: &str, len: usize) -> UpstreamError {
    let message = format!(
        "Invalid '{param}': array too long. Expected an array with maximum length {MAX_INPUTS}, but got an \
         array with length {len} instead."
    );
    invalid(Some(param), Some("array_above_max_length"), message)
}

pub(crate) fn below_min(param: &str, min: u64, got: &Value) -> UpstreamError {
    let message = format!(
        "Invalid '{param}': integer below minimum value. Expected a value >= {min}, but got {got} instead."
    );
    invalid(Some(param), Some("integer_below_min_value"), message)
}

fn above_max(param: &str, max: u64, got: &Value) -> UpstreamError {
    let message = format!(
        "Invalid '{param}': integer above maximum value. Expected a value <= {max}, but got {got} instead."
    );
    invalid(Some(param), Some("integer_above_max_value"), message)
}

/// How a refusal names what it got.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if integer_text(n).is_some() => "an integer",
        Value::Number(_) => "a decimal",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The request as a JSON object, or the 400 a real server gives a body it cannot read.
fn parse(body: &[u8]) -> Result<Map<String, Value>, UpstreamError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(request)) => Ok(request),
        Ok(other) => Err(invalid(
            None,
            None,
            format!(
                "Invalid type for the request body: expected an object, but got {} instead.",
                kind(&other)
            ),
        )),
        Err(_) => Err(invalid(
            None,
            None,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using \
             your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was \
             not valid JSON.)"
                .to_owned(),
        )),
    }
}

/// The digits of an integer (with its sign), whatever its size; `None` for a decimal.
/// (`arbitrary_precision` keeps a number's text, so integers beyond 64 bits stay integers.)
pub(crate) fn integer_text(n: &serde_json::Number) -> Option<(bool, String)> {
    let text = n.to_string();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, text.as_str()),
    };
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| (negative, digits.to_owned()))
}

/// `request[name]` as a non-negative integer: `None` when absent or null; an integer too large
/// for 64 bits saturates (it is above every cap and below no limit).
pub(crate) fn non_negative(request: &Map<String, Value>, name: &str) -> Result<Option<u64>, UpstreamError> {
    let value = match request.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => value,
    };
    let Value::Number(n) = value else { return Err(invalid_type(name, "an integer", value)) };
    if let Some(n) = n.as_u64() {
        return Ok(Some(n));
    }
    match integer_text(n) {
        Some((true, digits)) if digits.bytes().all(|b| b == b'0') => Ok(Some(0)),
        Some((true, _)) => Err(below_min(name, 0, value)),
        Some((false, _)) => Ok(Some(u64::MAX)),
        None => Err(invalid_type(name, "an integer", value)),
    }
}

/// The request's `model` as a JSON string, ready to be written into every chunk.
fn model_json(request: &Map<String, Value>) -> Result<String, UpstreamError> {
    match request.get("model") {
        None | Some(Value::Null) => {
            let mut out = String::new();
            push_json_str(&mut out, MODEL);
            Ok(out)
        }
        // A `Value::String` displays as its JSON, escapes included.
        Some(model @ Value::String(_)) => Ok(model.to_string()),
        Some(other) => Err(invalid_type("model", "a string", other)),
    }
}

/// The whitespace-separated words of `text`: the simulated tokenizer.
pub(crate) fn word_count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Whether `value` is a token id (a non-negative integer).
fn is_token(value: &Value) -> bool {
    matches!(value, Value::Number(n) if n.as_u64().is_some())
}

/// A token array: the tokens it counts, or `None` if it is not one.
fn token_array(value: &Value) -> Option<u64> {
    match value {
        Value::Array(tokens) if tokens.iter().all(is_token) => Some(tokens.len() as u64),
        _ => None,
    }
}

/// The prompts of a completion or the inputs of an embedding (`param`): a string, an array of
/// token ids, an array of strings, or an array of token arrays. Returns how many there are and
/// the tokens of each (at most [`MAX_INPUTS`]).
fn texts(request: &Map<String, Value>, param: &str) -> Result<Vec<u64>, UpstreamError> {
    let value = match request.get(param) {
        None | Some(Value::Null) => return Err(missing(param)),
        Some(value) => value,
    };
    let expected = "a string, an array of strings, an array of integers or an array of integer arrays";
    match value {
        Value::String(text) => Ok(vec![word_count(text)]),
        Value::Array(items) if items.is_empty() => Err(empty_array(param)),
        Value::Array(items) => {
            if let Some(tokens) = token_array(value) {
                return Ok(vec![tokens]);
            }
            if items.len() > MAX_INPUTS {
                return Err(too_long(param, items.len()));
            }
            let mut counts = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let count = match item {
                    Value::String(text) => Some(word_count(text)),
                    other => token_array(other),
                };
                let Some(count) = count else {
                    return Err(invalid_type(
                        &format!("{param}[{i}]"),
                        "a string or an array of integers",
                        item,
                    ));
                };
                counts.push(count);
            }
            Ok(counts)
        }
        other => Err(invalid_type(param, expected, other)),
    }
}

/// The chat request's `messages`, checked as a real server does; returns their prompt tokens.
fn messages(request: &Map<String, Value>) -> Result<u64, UpstreamError> {
    let messages = match request.get("messages") {
        None | Some(Value::Null) => return Err(missing("messages")),
        Some(Value::Array(messages)) if messages.is_empty() => return Err(empty_array("messages")),
        Some(Value::Array(messages)) => messages,
        Some(other) => return Err(invalid_type("messages", "an array of objects", other)),
    };
    let mut tokens = 0;
    for (i, message) in messages.iter().enumerate() {
        let Value::Object(message) = message else {
            return Err(invalid_type(&format!("messages[{i}]"), "an object", message));
        };
        match message.get("role") {
            Some(Value::String(_)) => {}
            None | Some(Value::Null) => return Err(missing(&format!("messages[{i}].role"))),
            Some(other) => return Err(invalid_type(&format!("messages[{i}].role"), "a string", other)),
        }
        tokens += match message.get("content") {
            Some(Value::String(text)) => word_count(text),
            Some(Value::Array(parts)) => {
                parts.iter().filter_map(|part| part.get("text")?.as_str()).map(word_count).sum()
            }
            _ => 0,
        };
    }
    Ok(tokens)
}

// ---------------------------------------------------------------------------------------------
// Determinism: splitmix64 in counter mode, so any word of any choice is computed on the fly.

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed's state: the first 8 bytes of its SHA-256.
pub(crate) fn seed_state(seed: &str) -> u64 {
    let digest = Sha256::digest(seed.as_bytes());
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// The start of the sequence of choice (or embedding input) `index`: each gets its own.
pub(crate) fn start(base: u64, index: u64) -> u64 {
    mix(base.wrapping_add(index))
}

/// Item `k` of the splitmix64 sequence begun at `start` (what the `k + 1`-th step yields).
fn draw(start: u64, k: u64) -> u64 {
    mix(start.wrapping_add(k.wrapping_add(1).wrapping_mul(GAMMA)))
}

pub(crate) fn word(start: u64, step: u64) -> &'static str {
    WORDS[(draw(start, step) % WORDS.len() as u64) as usize]
}

// ---------------------------------------------------------------------------------------------
// Chat and completions: a small state machine, one chunk written per poll.

/// A simulated answer written step by step (the Responses API's and Anthropic's): the flight
/// reads its head at once, then each step's event after the step's wait, its JSON written
/// when it is polled. The pace, the lazy writing and the timer are here, once.
pub(super) trait Answer: Send + Sized + 'static {
    /// Where an answer is.
    type Step: Copy + Send + 'static;
    /// The step after `step`; `None` once the answer is complete.
    fn after(&self, step: Self::Step) -> Option<Self::Step>;
    /// The wait before `step`.
    fn delay(&self, step: Self::Step) -> Duration;
    /// The event of `step`, written now.
    fn render(&self, step: Self::Step) -> Part;
}

/// `answer` as the flight reads it, from `first` on. Nothing is awaited unless a delay is due,
/// so with a zero pace every item is ready at its first poll, without a timer.
pub(super) fn stream<A: Answer>(answer: A, first: A::Step) -> Parts {
    stream::unfold((answer, None, Some(first)), |(answer, head, at)| async move {
        // The head first (a `None` marks it as not sent yet), then the steps.
        if head.is_none() {
            return Some((Ok(Part::Head(SSE_HEAD.clone())), (answer, Some(()), at)));
        }
        let step = at?;
        let delay = answer.delay(step);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let next = answer.after(step);
        Some((Ok(answer.render(step)), (answer, head, next)))
    })
    .boxed()
}

/// Where a streamed answer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Head,
    /// The chat role chunk of a choice.
    Role(u32),
    /// Token `step` of `choice`.
    Token {
        step: u64,
        choice: u32,
    },
    /// The chunk with a choice's `finish_reason`.
    Finish(u32),
    /// The usage chunk.
    Usage,
}

/// Everything one streamed answer needs to write its next chunk.
struct Chunks {
    /// `{"id":…,"object":…,"created":…,"model":…,"system_fingerprint":…,"choices":[`: what
    /// every chunk of the answer begins with, rendered once.
    prefix: Box<str>,
    chat: bool,
    include_usage: bool,
    base: u64,
    choices: u32,
    /// Tokens per choice.
    tokens: u64,
    finish: &'static str,
    prompt_tokens: u64,
    first_token_delay: Duration,
    token_interval: Duration,
    /// The next step; `None` once the answer is complete.
    at: Option<Step>,
    /// Whether an event (not the head) has gone out: the first waits `first_token_delay`.
    started: bool,
}

impl Chunks {
    /// Checks the request as a real server does and prepares its answer.
    fn new(chat: bool, request: &Map<String, Value>, base: u64, pace: Pace) -> Result<Chunks, UpstreamError> {
        // A completion's prompt array is a batch: `n` choices per prompt, as OpenAI does.
        let (prompt_tokens, prompts) = if chat {
            (messages(request)?, 1)
        } else {
            let prompts = texts(request, "prompt")?;
            (prompts.iter().sum(), prompts.len() as u64)
        };
        let n = match non_negative(request, "n")? {
            None => 1,
            Some(0) => return Err(below_min("n", 1, &request["n"])),
            Some(n) if n > MAX_N => return Err(above_max("n", MAX_N, &request["n"])),
            Some(n) => n,
        };
        // Both limits may be given; the tighter one applies.
        let limit =
            match (non_negative(request, "max_tokens")?, non_negative(request, "max_completion_tokens")?) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        let full = pace.tokens as u64;
        let tokens = limit.map_or(full, |limit| full.min(limit));
        let include_usage = request
            .get("stream_options")
            .and_then(|options| options.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true);

        let model = model_json(request)?;
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let (id_prefix, object) =
            if chat { ("chatcmpl-", "chat.completion.chunk") } else { ("cmpl-", "text_completion") };
        let mut prefix = String::with_capacity(160);
        prefix.push_str(r#"{"id":""#);
        prefix.push_str(id_prefix);
        push_fresh_id(&mut prefix);
        let _ = write!(prefix, r#"","object":"{object}","created":{created},"model":"#);
        prefix.push_str(&model);
        let _ = write!(prefix, r#","system_fingerprint":"{SYSTEM_FINGERPRINT}","choices":["#);

        Ok(Chunks {
            prefix: prefix.into_boxed_str(),
            chat,
            include_usage,
            base,
            // At most MAX_INPUTS * MAX_N: fits easily.
            choices: u32::try_from(prompts * n).unwrap_or(u32::MAX),
            tokens,
            finish: if tokens < full { "length" } else { "stop" },
            prompt_tokens,
            first_token_delay: pace.first_token_delay,
            token_interval: pace.token_interval,
            at: Some(Step::Head),
            started: false,
        })
    }

    /// The answer as the flight reads it. Nothing is awaited unless a delay is due, so with a
    /// zero pace every item is ready at its first poll, without a timer.
    fn parts(self) -> Parts {
        stream::unfold(self, |mut chunks| async move {
            let (delay, step) = chunks.advance()?;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Some((Ok(chunks.render(step)), chunks))
        })
        .boxed()
    }

    /// The step to take now and the time to wait before it; moves past it.
    fn advance(&mut self) -> Option<(Duration, Step)> {
        let step = self.at?;
        let delay = match step {
            Step::Head => Duration::ZERO,
            _ if !self.started => {
                self.started = true;
                self.first_token_delay
            }
            Step::Token { step, choice: 0 } if step > 0 => self.token_interval,
            _ => Duration::ZERO,
        };
        self.at = self.after(step);
        Some((delay, step))
    }

    /// The step after `step`: every choice's role chunk, then token by token every choice's
    /// token, then every choice's finish chunk, then the usage chunk if asked for.
    fn after(&self, step: Step) -> Option<Step> {
        let last = self.choices - 1;
        let tokens = || if self.tokens > 0 { Step::Token { step: 0, choice: 0 } } else { Step::Finish(0) };
        let next = match step {
            Step::Head if self.chat => Step::Role(0),
            Step::Head => tokens(),
            Step::Role(c) if c < last => Step::Role(c + 1),
            Step::Role(_) => tokens(),
            Step::Token { step, choice } if choice < last => Step::Token { step, choice: choice + 1 },
            Step::Token { step, .. } if step + 1 < self.tokens => Step::Token { step: step + 1, choice: 0 },
            Step::Token { .. } => Step::Finish(0),
            Step::Finish(c) if c < last => Step::Finish(c + 1),
            Step::Finish(_) if self.include_usage => Step::Usage,
            Step::Finish(_) | Step::Usage => return None,
        };
        Some(next)
    }

    /// The item of `step`, its JSON written now.
    fn render(&self, step: Step) -> Part {
        if step == Step::Head {
            return Part::Head(SSE_HEAD.clone());
        }
        // The longest choice (a role chunk) and the usage closing fit without growing.
        let mut out = String::with_capacity(self.prefix.len() + 144);
        out.push_str(&self.prefix);
        match step {
            Step::Head => {}
            Step::Role(choice) => {
                let _ = write!(
                    out,
                    r#"{{"index":{choice},"delta":{{"role":"assistant","content":"","refusal":null}},"logprobs":null,"finish_reason":null}}"#
                );
            }
            Step::Token { step, choice } => {
                let space = if step == 0 { "" } else { " " };
                let word = word(start(self.base, choice.into()), step);
                if self.chat {
                    let _ = write!(
                        out,
                        r#"{{"index":{choice},"delta":{{"content":"{space}{word}"}},"logprobs":null,"finish_reason":null}}"#
                    );
                } else {
                    let _ = write!(
                        out,
                        r#"{{"text":"{space}{word}","index":{choice},"logprobs":null,"finish_reason":null}}"#
                    );
                }
            }
            Step::Finish(choice) => {
                let finish = self.finish;
                if self.chat {
                    let _ = write!(
                        out,
                        r#"{{"index":{choice},"delta":{{}},"logprobs":null,"finish_reason":"{finish}"}}"#
                    );
                } else {
                    let _ = write!(
                        out,
                        r#"{{"text":"","index":{choice},"logprobs":null,"finish_reason":"{finish}"}}"#
                    );
                }
            }
            Step::Usage => {
                let prompt = self.prompt_tokens;
                let completion = self.tokens * u64::from(self.choices);
                let total = prompt + completion;
                let _ = write!(
                    out,
                    r#"],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{total}}}}}"#
                );
                return Part::Event(Event { name: None, data: Bytes::from(out), usage_only: true });
            }
        }
        // OpenAI sends `"usage": null` on every other chunk when usage was asked for.
        out.push_str(if self.include_usage { r#"],"usage":null}"# } else { "]}" });
        Part::Event(Event { name: None, data: Bytes::from(out), usage_only: false })
    }
}

/// Appends 24 random alphanumerics: a chunk id fresh for every flight.
pub(crate) fn push_fresh_id(out: &mut String) {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0; 24];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness (not on any supported system); the ids must still differ per flight.
        static FLIGHTS: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let start = mix(now ^ FLIGHTS.fetch_add(1, Ordering::Relaxed).rotate_left(32));
        for (k, chunk) in (0..).zip(bytes.chunks_exact_mut(8)) {
            chunk.copy_from_slice(&draw(start, k).to_le_bytes());
        }
    }
    // 8 base-62 digits from each 64 random bits: 62^8 < 2^64, the bias is negligible.
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let mut r = u64::from_le_bytes(word);
        for _ in 0..8 {
            out.push(char::from(ALPHABET[(r % 62) as usize]));
            r /= 62;
        }
    }
}

/// Appends `text` as a JSON string, escaped by serde_json.
fn push_json_str(out: &mut String, text: &str) {
    let _ = write!(out, "{}", Value::from(text));
}

// ---------------------------------------------------------------------------------------------
// Embeddings: one JSON body.

/// Checks an embeddings request as a real server does and writes its whole answer: one unit
/// vector per input, deterministic from the seed and the input's index.
fn embeddings(request: &Map<String, Value>, base: u64) -> Result<Bytes, UpstreamError> {
    let inputs = texts(request, "input")?;
    let dimensions = match non_negative(request, "dimensions")? {
        None => DEFAULT_DIMENSIONS,
        Some(0) => return Err(below_min("dimensions", 1, &request["dimensions"])),
        Some(d) if d > MAX_DIMENSIONS => {
            return Err(above_max("dimensions", MAX_DIMENSIONS, &request["dimensions"]));
        }
        Some(d) => d,
    };
    let base64 = match request.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(format)) if format == "float" => false,
        Some(Value::String(format)) if format == "base64" => true,
        Some(other) => {
            let message = format!(
                "Invalid value for 'encoding_format': expected one of 'float' or 'base64', but got {other} \
                 instead."
            );
            return Err(invalid(Some("encoding_format"), Some("invalid_value"), message));
        }
    };
    let model = model_json(request)?;

    // Per component: about 11 bytes as a float, under 6 as base64.
    let per_vector = 48 + dimensions as usize * if base64 { 6 } else { 11 };
    let mut out = String::with_capacity(64 + model.len() + inputs.len() * per_vector);
    let mut vector = Vec::with_capacity(dimensions as usize);
    let mut raw = Vec::with_capacity(if base64 { dimensions as usize * 4 } else { 0 });
    out.push_str(r#"{"object":"list","data":["#);
    for index in 0..inputs.len() {
        if index > 0 {
            out.push(',');
        }
        unit_vector(start(base, index as u64), dimensions, &mut vector);
        let _ = write!(out, r#"{{"object":"embedding","index":{index},"embedding":"#);
        if base64 {
            // What the official SDKs ask for by default: little-endian f32s, standard alphabet.
            raw.clear();
            raw.extend(vector.iter().flat_map(|x| x.to_le_bytes()));
            out.push('"');
            BASE64.encode_string(&raw, &mut out);
            out.push('"');
        } else {
            out.push('[');
            for (k, x) in vector.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                // f32's Display is the shortest text that reads back as the same f32.
                let _ = write!(out, "{x}");
            }
            out.push(']');
        }
        out.push('}');
    }
    let tokens: u64 = inputs.iter().sum();
    let _ =
        write!(out, r#"],"model":{model},"usage":{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}}}"#);
    Ok(Bytes::from(out))
}

/// A vector of `dimensions` components drawn from `start` in [-1, 1), scaled to unit length as
/// OpenAI's embeddings are (so cosine similarity is a dot product).
fn unit_vector(start: u64, dimensions: u64, vector: &mut Vec<f32>) {
    vector.clear();
    // 24 random bits: exactly representable in an f32.
    vector.extend((0..dimensions).map(|k| (draw(start, k) >> 40) as f32 / (1u32 << 23) as f32 - 1.0));
    let norm = vector.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x = (f64::from(*x) / norm) as f32);
    } else {
        vector[0] = 1.0;
    }
}

/// An embeddings answer as the flight reads it: the head at once, the body after the delay.
fn embedding_parts(body: Bytes, delay: Duration) -> Parts {
    let head = stream::iter([Ok(Part::Head(JSON_HEAD.clone()))]);
    let body = stream::once(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(Part::Body(body))
    });
    head.chain(body).boxed()
}

/// What the tests of the simulated answers share.
#[cfg(test)]
pub(super) mod testing {
    use axum::http::StatusCode;
    use futures::StreamExt;
    use serde_json::Value;

    use crate::flight::{Part, Parts};
    use crate::sim;

    /// The events of an answer of named events, each as its name and its parsed data, after
    /// checking that its head comes first and says SSE.
    pub(crate) async fn named_events(parts: Parts) -> Vec<(String, Value)> {
        let parts: Vec<_> = parts.collect().await;
        let mut parts = parts.into_iter().map(Result::unwrap);
        let Some(Part::Head(head)) = parts.next() else { panic!("the head comes first") };
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.headers.get("content-type"), Some(&b"text/event-stream"[..]));
        parts
            .map(|part| match part {
                Part::Event(event) => {
                    assert!(!event.usage_only);
                    let name = String::from_utf8(event.name.expect("every event is named").to_vec()).unwrap();
                    (name, serde_json::from_slice(&event.data).unwrap())
                }
                other => panic!("not an event: {other:?}"),
            })
            .collect()
    }

    /// The chat answer's words for `seed`: token `k` of choice 0.
    pub(crate) fn chat_words(seed: &str, tokens: u64) -> String {
        let start = sim::start(sim::seed_state(seed), 0);
        (0..tokens).map(|k| sim::word(start, k)).collect::<Vec<_>>().join(" ")
    }
}

#[cfg(test)]
mod tests {
    fn chat_api() -> Api {
        Api::chat()
    }

    fn completions_api() -> Api {
        Api::named("completions").unwrap()
    }

    fn embeddings_api() -> Api {
        Api::named("embeddings").unwrap()
    }

    use std::time::Instant;

    use futures::FutureExt;

    use super::*;

    const PACE: Pace = Pace { first_token_delay: Duration::ZERO, token_interval: Duration::ZERO, tokens: 5 };

    fn chat(extra: Value) -> Value {
        let mut request = json!({
            "model": "gpt-test",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hello there world"}]},
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        for (key, value) in extra.as_object().unwrap() {
            request[key] = value.clone();
        }
        request
    }

    async fn refused(api: Api, body: &[u8]) -> (Arc<Head>, Value) {
        match answer(api, Bytes::copy_from_slice(body), Arc::from("seed"), PACE).await {
            Err(UpstreamError::Status { head, body }) => (head, serde_json::from_slice(&body).unwrap()),
            Err(other) => panic!("not a status error: {other:?}"),
            Ok(_) => panic!("accepted: {}", String::from_utf8_lossy(body)),
        }
    }

    /// The head and the events of an accepted streamed request.
    async fn events(api: Api, request: &Value, seed: &str, pace: Pace) -> (Arc<Head>, Vec<Event>) {
        let body = Bytes::from(request.to_string());
        let parts: Vec<_> = answer(api, body, Arc::from(seed), pace).await.unwrap().collect().await;
        let mut parts = parts.into_iter().map(Result::unwrap);
        let Some(Part::Head(head)) = parts.next() else { panic!("the head comes first") };
        let events = parts
            .map(|part| match part {
                Part::Event(event) => event,
                other => panic!("not an event: {other:?}"),
            })
            .collect();
        (head, events)
    }

    async fn chunks(api: Api, request: &Value, seed: &str) -> Vec<Value> {
        let (_, events) = events(api, request, seed, PACE).await;
        events.iter().map(|event| serde_json::from_slice(&event.data).unwrap()).collect()
    }

    /// The text of choice `index`, concatenated over the chunks.
    fn text(chunks: &[Value], index: u64) -> String {
        chunks
            .iter()
            .flat_map(|chunk| chunk["choices"].as_array().unwrap())
            .filter(|choice| choice["index"].as_u64() == Some(index))
            .filter_map(|choice| choice["delta"]["content"].as_str().or(choice["text"].as_str()))
            .collect()
    }

    fn finishes(chunks: &[Value]) -> Vec<(u64, String)> {
        chunks
            .iter()
            .flat_map(|chunk| chunk["choices"].as_array().unwrap())
            .filter_map(|choice| {
                Some((choice["index"].as_u64()?, choice["finish_reason"].as_str()?.to_owned()))
            })
            .collect()
    }

    #[tokio::test]
    async fn chat_chunks_are_openai_chunks() {
        let (head, events) = events(chat_api(), &chat(json!({})), "seed", PACE).await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.headers.get("content-type"), Some(&b"text/event-stream"[..]));
        let chunks: Vec<Value> = events.iter().map(|e| serde_json::from_slice(&e.data).unwrap()).collect();
        // Role, 5 tokens, finish, usage.
        assert_eq!(chunks.len(), 8);
        let id = chunks[0]["id"].as_str().unwrap();
        let random = id.strip_prefix("chatcmpl-").unwrap();
        assert_eq!(random.len(), 24);
        assert!(random.bytes().all(|b| b.is_ascii_alphanumeric()));
        for chunk in &chunks {
            let keys: Vec<&str> = chunk.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys, ["id", "object", "created", "model", "system_fingerprint", "choices", "usage"]);
            assert_eq!(chunk["id"], id);
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert!(chunk["created"].as_u64().unwrap() > 1_700_000_000);
            assert_eq!(chunk["model"], "gpt-test");
            assert_eq!(chunk["system_fingerprint"], SYSTEM_FINGERPRINT);
        }
        assert_eq!(
            chunks[0]["choices"],
            json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null},
                "logprobs": null, "finish_reason": null}])
        );
        let text = text(&chunks, 0);
        assert_eq!(text.split(' ').count(), 5);
        assert!(!text.starts_with(' '));
        for chunk in &chunks[1..6] {
            assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
            assert_eq!(chunk["usage"], Value::Null);
        }
        assert_eq!(
            chunks[6]["choices"],
            json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}])
        );
        assert!(events[..7].iter().all(|event| !event.usage_only));
        assert!(events[7].usage_only);
        assert_eq!(chunks[7]["choices"], json!([]));
        // Prompt: 2 + 3 words of message content.
        assert_eq!(
            chunks[7]["usage"],
            json!({"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10})
        );
    }

    #[tokio::test]
    async fn without_include_usage_there_is_no_usage_at_all() {
        let request = chat(json!({"stream_options": null, "model": null}));
        let chunks = chunks(chat_api(), &request, "seed").await;
        assert_eq!(chunks.len(), 7);
        assert!(chunks.iter().all(|chunk| chunk.get("usage").is_none()));
        assert!(chunks.iter().all(|chunk| chunk["model"] == MODEL));
    }

    #[tokio::test]
    async fn the_same_seed_gives_the_same_words() {
        let request = chat(json!({}));
        let a = text(&chunks(chat_api(), &request, "one").await, 0);
        let b = text(&chunks(chat_api(), &request, "one").await, 0);
        let c = text(&chunks(chat_api(), &request, "two").await, 0);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let prompt = json!({"prompt": "hi", "stream": true});
        let d = text(&chunks(completions_api(), &prompt, "one").await, 0);
        assert_eq!(a, d, "the words depend on the seed alone");
    }

    #[tokio::test]
    async fn n_gives_each_choice_its_own_words_and_finish() {
        let chunks = chunks(chat_api(), &chat(json!({"n": 2})), "seed").await;
        // Two role chunks, 2 x 5 tokens, two finish chunks, usage.
        assert_eq!(chunks.len(), 15);
        assert_eq!(chunks[0]["choices"][0]["index"], 0);
        assert_eq!(chunks[1]["choices"][0]["index"], 1);
        // Interleaved token by token.
        let order: Vec<u64> =
            chunks[2..12].iter().map(|c| c["choices"][0]["index"].as_u64().unwrap()).collect();
        assert_eq!(order, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
        assert_eq!(finishes(&chunks), [(0, "stop".to_owned()), (1, "stop".to_owned())]);
        let (first, second) = (text(&chunks, 0), text(&chunks, 1));
        assert_eq!(second.split(' ').count(), 5);
        assert_ne!(first, second);
        assert_eq!(chunks[14]["usage"]["completion_tokens"], 10);
        assert_eq!(chunks[14]["usage"]["total_tokens"], 15);
    }

    #[tokio::test]
    async fn max_tokens_cuts_with_length() {
        let full = text(&chunks(chat_api(), &chat(json!({})), "seed").await, 0);
        for limit in [
            json!({"max_tokens": 2}),
            json!({"max_completion_tokens": 2}),
            json!({"max_tokens": 9, "max_completion_tokens": 2}),
        ] {
            let chunks = chunks(chat_api(), &chat(limit), "seed").await;
            let cut = text(&chunks, 0);
            assert_eq!(cut.split(' ').count(), 2);
            assert!(full.starts_with(&cut), "{full:?} begins with {cut:?}");
            assert_eq!(finishes(&chunks), [(0, "length".to_owned())]);
            assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 2);
        }
        let none = chunks(chat_api(), &chat(json!({"max_tokens": 0, "n": 2})), "seed").await;
        assert_eq!(none.len(), 5, "roles, finishes, usage");
        assert_eq!(finishes(&none), [(0, "length".to_owned()), (1, "length".to_owned())]);
        let enough = chunks(chat_api(), &chat(json!({"max_tokens": 5})), "seed").await;
        assert_eq!(finishes(&enough), [(0, "stop".to_owned())]);
        let huge =
            chunks(chat_api(), &chat(json!({"max_tokens": 100000000000000000000000_u128})), "seed").await;
        assert_eq!(finishes(&huge), [(0, "stop".to_owned())]);
    }

    #[tokio::test]
    async fn every_flight_has_a_fresh_id() {
        let request = chat(json!({}));
        let a = chunks(chat_api(), &request, "seed").await;
        let b = chunks(chat_api(), &request, "seed").await;
        assert_ne!(a[0]["id"], b[0]["id"]);
        assert_eq!(text(&a, 0), text(&b, 0));
    }

    #[tokio::test]
    async fn completions_are_text_completion_chunks_with_batched_prompts() {
        let request = json!({"model": "gpt-3.5-turbo-instruct", "prompt": ["one two", "three"], "n": 2,
            "stream": true, "stream_options": {"include_usage": true}});
        let chunks = chunks(completions_api(), &request, "seed").await;
        let id = chunks[0]["id"].as_str().unwrap();
        assert!(id.starts_with("cmpl-") && id.len() == 5 + 24);
        for chunk in &chunks {
            assert_eq!(chunk["object"], "text_completion");
            assert_eq!(chunk["model"], "gpt-3.5-turbo-instruct");
            assert_eq!(chunk["system_fingerprint"], SYSTEM_FINGERPRINT);
        }
        // No role chunk: straight to the tokens.
        assert_eq!(
            chunks[0]["choices"][0],
            json!({"text": text(&chunks, 0).split(' ').next().unwrap(), "index": 0, "logprobs": null,
                "finish_reason": null})
        );
        // Two prompts times n = 2: four choices.
        assert_eq!(finishes(&chunks).iter().map(|f| f.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
        let usage = &chunks.last().unwrap()["usage"];
        assert_eq!(*usage, json!({"prompt_tokens": 3, "completion_tokens": 20, "total_tokens": 23}));
        let tokens = json!({"prompt": [1, 2, 3], "stream_options": {"include_usage": true}});
        let chunks = self::chunks(completions_api(), &tokens, "seed").await;
        assert_eq!(finishes(&chunks).len(), 1, "a token array is one prompt");
        assert_eq!(chunks.last().unwrap()["usage"]["prompt_tokens"], 3);
    }

    #[tokio::test]
    async fn invalid_requests_get_openai_400s() {
        let cases: &[(Api, &str, Option<&str>)] = &[
            (chat_api(), "{", None),
            (chat_api(), "[]", None),
            (chat_api(), r#"{"model":"m"}"#, Some("messages")),
            (chat_api(), r#"{"messages":[]}"#, Some("messages")),
            (chat_api(), r#"{"messages":"hi"}"#, Some("messages")),
            (chat_api(), r#"{"messages":[1]}"#, Some("messages[0]")),
            (chat_api(), r#"{"messages":[{"content":"hi"}]}"#, Some("messages[0].role")),
            (chat_api(), r#"{"messages":[{"role":"user"}],"model":5}"#, Some("model")),
            (chat_api(), r#"{"messages":[{"role":"user"}],"n":0}"#, Some("n")),
            (chat_api(), r#"{"messages":[{"role":"user"}],"n":17}"#, Some("n")),
            (chat_api(), r#"{"messages":[{"role":"user"}],"n":-1}"#, Some("n")),
            (chat_api(), r#"{"messages":[{"role":"user"}],"n":1.5}"#, Some("n")),
            (chat_api(), r#"{"messages":[{"role":"user"}],"n":"2"}"#, Some("n")),
            (chat_api(), r#"{"messages":[{"role":"user"}],"max_tokens":-1}"#, Some("max_tokens")),
            (chat_api(), r#"{"messages":[{"role":"user"}],"max_tokens":2.5}"#, Some("max_tokens")),
            (chat_api(), r#"{"messages":[{"role":"user"}],"max_tokens":"5"}"#, Some("max_tokens")),
            (
                chat_api(),
                r#"{"messages":[{"role":"user"}],"max_completion_tokens":-3}"#,
                Some("max_completion_tokens"),
            ),
            (completions_api(), r#"{"model":"m"}"#, Some("prompt")),
            (completions_api(), r#"{"prompt":5}"#, Some("prompt")),
            (completions_api(), r#"{"prompt":[]}"#, Some("prompt")),
            (completions_api(), r#"{"prompt":[{}]}"#, Some("prompt[0]")),
            (completions_api(), r#"{"prompt":"hi","n":99}"#, Some("n")),
            (embeddings_api(), r#"{"model":"m"}"#, Some("input")),
            (embeddings_api(), r#"{"input":5}"#, Some("input")),
            (embeddings_api(), r#"{"input":[]}"#, Some("input")),
            (embeddings_api(), r#"{"input":[[1,"a"]]}"#, Some("input[0]")),
            (embeddings_api(), r#"{"input":"a","dimensions":0}"#, Some("dimensions")),
            (embeddings_api(), r#"{"input":"a","dimensions":5000}"#, Some("dimensions")),
            (embeddings_api(), r#"{"input":"a","encoding_format":"hex"}"#, Some("encoding_format")),
        ];
        for &(api, body, param) in cases {
            let (head, error) = refused(api, body.as_bytes()).await;
            assert_eq!(head.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(head.headers.get("content-type"), Some(&b"application/json"[..]));
            let keys: Vec<&str> = error["error"].as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys, ["message", "type", "param", "code"], "{body}");
            assert_eq!(error["error"]["type"], "invalid_request_error", "{body}");
            assert_eq!(error["error"]["param"].as_str(), param, "{body}");
            assert!(!error["error"]["message"].as_str().unwrap().is_empty());
        }
        let too_many = json!({"input": vec!["a"; MAX_INPUTS + 1]}).to_string();
        let (_, error) = refused(embeddings_api(), too_many.as_bytes()).await;
        assert_eq!(error["error"]["code"], "array_above_max_length");
        let (_, error) = refused(chat_api(), br#"{"model":"m"}"#).await;
        assert_eq!(
            error,
            json!({"error": {"message": "Missing required parameter: 'messages'.", "type": "invalid_request_error",
                "param": "messages", "code": "missing_required_parameter"}})
        );
    }

    async fn embedding(request: Value, seed: &str) -> (Arc<Head>, Value) {
        let parts: Vec<_> = answer(embeddings_api(), Bytes::from(request.to_string()), Arc::from(seed), PACE)
            .await
            .unwrap()
            .collect()
            .await;
        let [Ok(Part::Head(head)), Ok(Part::Body(body))] = &parts[..] else {
            panic!("head and body: {parts:?}")
        };
        (head.clone(), serde_json::from_slice(body).unwrap())
    }

    fn floats(embedding: &Value) -> Vec<f32> {
        embedding.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
    }

    #[tokio::test]
    async fn embeddings_float_and_base64_agree() {
        let request = json!({"model": "text-embedding-3-small", "input": ["one two", "three", [1, 2, 3, 4]]});
        let (head, float) = embedding(request.clone(), "seed").await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.headers.get("content-type"), Some(&b"application/json"[..]));
        assert_eq!(float["object"], "list");
        assert_eq!(float["model"], "text-embedding-3-small");
        assert_eq!(float["usage"], json!({"prompt_tokens": 7, "total_tokens": 7}));
        let mut with_base64 = request.clone();
        with_base64["encoding_format"] = json!("base64");
        let (_, encoded) = embedding(with_base64, "seed").await;
        let data = float["data"].as_array().unwrap();
        assert_eq!(data.len(), 3);
        for (index, item) in data.iter().enumerate() {
            assert_eq!(item["object"], "embedding");
            assert_eq!(item["index"], index);
            let vector = floats(&item["embedding"]);
            assert_eq!(vector.len(), DEFAULT_DIMENSIONS as usize);
            let norm: f64 = vector.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
            assert!((norm - 1.0).abs() < 1e-5, "unit length: {norm}");
            let text = encoded["data"][index]["embedding"].as_str().unwrap();
            let bytes = BASE64.decode(text).unwrap();
            let decoded: Vec<f32> =
                bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            assert_eq!(
                decoded.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                vector.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "the float text reads back as the very f32s base64 carries"
            );
        }
        assert_ne!(data[0]["embedding"], data[1]["embedding"]);
        let (_, again) = embedding(request.clone(), "seed").await;
        assert_eq!(again, float);
        let (_, other) = embedding(request, "other").await;
        assert_ne!(other["data"][0]["embedding"], float["data"][0]["embedding"]);
    }

    #[tokio::test]
    async fn embeddings_take_dimensions_and_single_inputs() {
        let (_, answer) = embedding(json!({"input": "hello world", "dimensions": 64}), "seed").await;
        assert_eq!(answer["model"], MODEL);
        assert_eq!(answer["data"].as_array().unwrap().len(), 1);
        assert_eq!(floats(&answer["data"][0]["embedding"]).len(), 64);
        assert_eq!(answer["usage"]["prompt_tokens"], 2);
        let (_, tokens) = embedding(json!({"input": [5, 6, 7]}), "seed").await;
        assert_eq!(tokens["data"].as_array().unwrap().len(), 1, "a token array is one input");
        assert_eq!(tokens["usage"]["prompt_tokens"], 3);
    }

    #[test]
    fn zero_delays_need_no_timer() {
        // No `enable_time()`: any sleep would panic.
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let requests = [
                (chat_api(), chat(json!({"n": 3}))),
                (completions_api(), json!({"prompt": "hi", "stream_options": {"include_usage": true}})),
                (embeddings_api(), json!({"input": "hi"})),
            ];
            for (api, request) in requests {
                let body = Bytes::from(request.to_string());
                let prepared = answer(api, body, Arc::from("seed"), PACE).now_or_never();
                let mut parts = prepared.expect("prepared at once").unwrap();
                let mut count = 0;
                // Every item is ready at its first poll: no timer, no yield.
                while let Some(part) = parts.next().now_or_never().expect("ready at once") {
                    part.unwrap();
                    count += 1;
                }
                assert!(count >= 2);
            }
        });
    }

    #[tokio::test]
    async fn the_head_comes_at_once_and_tokens_at_the_pace() {
        let pace = Pace {
            first_token_delay: Duration::from_millis(60),
            token_interval: Duration::from_millis(20),
            tokens: 3,
        };
        let began = Instant::now();
        let body = Bytes::from(chat(json!({})).to_string());
        let mut parts = answer(chat_api(), body, Arc::from("seed"), pace).await.unwrap();
        assert!(matches!(parts.next().now_or_never(), Some(Some(Ok(Part::Head(_))))));
        assert!(parts.next().now_or_never().is_none(), "the role chunk waits for the first token");
        let _role = parts.next().await.unwrap().unwrap();
        assert!(began.elapsed() >= pace.first_token_delay);
        let first = parts.next().now_or_never().expect("the first token comes with the role chunk");
        assert!(matches!(first, Some(Ok(Part::Event(_)))));
        assert!(parts.next().now_or_never().is_none(), "the second token waits an interval");
        let rest: Vec<_> = parts.collect().await;
        assert!(began.elapsed() >= pace.first_token_delay + 2 * pace.token_interval);
        // Tokens 2 and 3, finish, usage.
        assert_eq!(rest.len(), 4);
    }

    #[test]
    fn the_words_need_no_json_escaping() {
        assert!(WORDS.iter().all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase())));
    }

    #[test]
    fn models_lists_the_simulated_model() {
        let models: Value = serde_json::from_slice(&models()).unwrap();
        assert_eq!(
            models,
            json!({"object": "list", "data": [{"id": MODEL, "object": "model", "created": MODEL_CREATED,
                "owned_by": "streamflight"}]})
        );
    }
}
