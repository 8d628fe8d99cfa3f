//! The embedded simulated model: a deterministic answer streamed at a set pace, so the gateway
//! runs offline. It speaks the upstream's language: OpenAI chunk JSON, one event each.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::stream::{self, StreamExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::key::{Endpoint, Key};
use crate::upstream::{Chunks, UpstreamError};

/// How the simulated model behaves.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Time before the first token.
    pub first_token_delay: Duration,
    /// Time between two tokens.
    pub token_interval: Duration,
    /// Tokens in a full answer.
    pub tokens: usize,
}

/// The model name reported when the request names none.
pub const MODEL: &str = "streamflight-sim";

const WORDS: &[&str] = &[
    "the", "stream", "flight", "answer", "token", "model", "shared", "request", "many", "clients", "one",
    "upstream", "quietly", "arrives", "while", "every", "listener", "hears", "same", "words", "in", "order",
    "and", "nobody", "waits", "for", "slowest", "reader", "gateway", "keeps", "history", "joins",
];

/// The answer's words for a key: the same key, the same words, every time.
pub fn words(key: &Key, count: usize) -> Vec<&'static str> {
    let digest = Sha256::digest(key.body.as_bytes());
    let mut state = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"));
    (0..count)
        .map(|_| {
            // splitmix64
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            WORDS[((z ^ (z >> 31)) % WORDS.len() as u64) as usize]
        })
        .collect()
}

/// Prepares the simulated answer for `key` (`body` is the request as parsed): waits the
/// first-token delay, then returns the stream of OpenAI chunks, one per token, then the
/// chunk carrying `finish_reason`, then a usage chunk if `stream_options.include_usage`.
pub async fn answer(key: Key, body: Value, pace: Pace) -> Result<Chunks, UpstreamError> {
    tokio::time::sleep(pace.first_token_delay).await;
    let limit = body.get("max_tokens").or_else(|| body.get("max_completion_tokens")).and_then(Value::as_u64);
    let count = limit.map_or(pace.tokens, |limit| pace.tokens.min(limit as usize));
    let finish = if count < pace.tokens { "length" } else { "stop" };
    let words = words(&key, count);
    let model = body.get("model").and_then(Value::as_str).unwrap_or(MODEL).to_owned();
    let prompt_tokens = body
        .get("messages")
        .or_else(|| body.get("prompt"))
        .map_or(0, |p| p.to_string().split_whitespace().count() as u64);
    let include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let chunk = Chunker {
        endpoint: key.endpoint,
        id: format!("{}{}", key.endpoint.id_prefix(), &key.digest()),
        model,
        created,
    };

    let mut chunks: Vec<(bool, Value)> = Vec::new();
    if key.endpoint == Endpoint::Chat {
        chunks.push((false, chunk.choice(json!({"role": "assistant", "content": ""}), None)));
    }
    for (i, word) in words.iter().enumerate() {
        let text = if i == 0 { (*word).to_owned() } else { format!(" {word}") };
        let delta = match key.endpoint {
            Endpoint::Chat => json!({"content": text}),
            Endpoint::Completions => json!(text),
        };
        chunks.push((true, chunk.choice(delta, None)));
    }
    let empty = match key.endpoint {
        Endpoint::Chat => json!({}),
        Endpoint::Completions => json!(""),
    };
    chunks.push((false, chunk.choice(empty, Some(finish))));
    if include_usage {
        let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": count, "total_tokens": prompt_tokens + count as u64});
        chunks.push((false, chunk.with(json!([]), Some(usage))));
    }

    let interval = pace.token_interval;
    Ok(stream::iter(chunks)
        .then(move |(paced, chunk)| async move {
            if paced {
                tokio::time::sleep(interval).await;
            }
            Ok(Arc::from(chunk.to_string()))
        })
        .boxed())
}

impl Endpoint {
    fn id_prefix(self) -> &'static str {
        match self {
            Endpoint::Chat => "chatcmpl-sim",
            Endpoint::Completions => "cmpl-sim",
        }
    }
}

/// What every chunk of one answer has in common.
struct Chunker {
    endpoint: Endpoint,
    id: String,
    model: String,
    created: u64,
}

impl Chunker {
    /// A chunk with one choice: `delta` is a chat delta object or a completion's text.
    fn choice(&self, delta: Value, finish: Option<&str>) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}),
            Endpoint::Completions => {
                json!({"index": 0, "text": delta, "logprobs": null, "finish_reason": finish})
            }
        };
        self.with(json!([choice]), None)
    }

    fn with(&self, choices: Value, usage: Option<Value>) -> Value {
        let object = match self.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completions => "text_completion",
        };
        let mut chunk = json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices});
        if let Some(usage) = usage {
            chunk["usage"] = usage;
        }
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_gives_the_same_words() {
        let body = serde_json::from_str(r#"{"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        let other = serde_json::from_str(r#"{"messages":[{"role":"user","content":"ho"}]}"#).unwrap();
        let key = |b| Key::new(Endpoint::Chat, b, None, true);
        assert_eq!(words(&key(&body), 20), words(&key(&body), 20));
        assert_ne!(words(&key(&body), 20), words(&key(&other), 20));
        assert_eq!(words(&key(&body), 5), words(&key(&body), 20)[..5]);
    }
}
