//! The OpenAI wire format the gateway speaks to clients: error bodies, and the one completion
//! object a non-streaming client gets, assembled from the chunks of the shared stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::key::Endpoint;

/// An OpenAI-style error body: `{"error":{"message","type","param","code"}}`.
pub fn error_body(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// A JSON response with `status` and an OpenAI-style error body.
pub fn error(status: StatusCode, message: &str, kind: &str, code: &str) -> Response {
    json_response(status, &error_body(message, kind, code))
}

/// `value` as an `application/json` response.
pub fn json_response(status: StatusCode, value: &Value) -> Response {
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

/// What one choice of a streamed answer adds up to.
#[derive(Default)]
struct Choice {
    role: Option<String>,
    content: String,
    reasoning: String,
    refusal: String,
    tool_calls: BTreeMap<u64, Value>,
    finish_reason: Value,
}

/// The completion object (`chat.completion` or `text_completion`) that the streamed
/// `chunks` add up to: texts concatenated per choice, tool-call arguments joined by index,
/// the last `finish_reason` and any `usage`. Chunks that are not JSON objects are skipped.
pub fn collect(endpoint: Endpoint, chunks: &[Arc<str>]) -> Value {
    let mut head = Map::new();
    let mut usage = Value::Null;
    let mut choices: BTreeMap<u64, Choice> = BTreeMap::new();
    for chunk in chunks {
        let Ok(Value::Object(chunk)) = serde_json::from_str::<Value>(chunk) else { continue };
        for field in ["id", "created", "model", "system_fingerprint"] {
            if let (false, Some(value)) = (head.contains_key(field), chunk.get(field)) {
                head.insert(field.to_owned(), value.clone());
            }
        }
        if chunk.get("usage").is_some_and(Value::is_object) {
            usage = chunk["usage"].clone();
        }
        for part in chunk.get("choices").and_then(Value::as_array).into_iter().flatten() {
            let choice = choices.entry(part.get("index").and_then(Value::as_u64).unwrap_or(0)).or_default();
            if let Some(reason) = part.get("finish_reason").filter(|r| !r.is_null()) {
                choice.finish_reason = reason.clone();
            }
            let text = |value: Option<&Value>| value.and_then(Value::as_str).unwrap_or_default().to_owned();
            match endpoint {
                Endpoint::Completions => choice.content += &text(part.get("text")),
                Endpoint::Chat => {
                    let Some(delta) = part.get("delta") else { continue };
                    if let Some(role) = delta.get("role").and_then(Value::as_str) {
                        choice.role = Some(role.to_owned());
                    }
                    choice.content += &text(delta.get("content"));
                    choice.reasoning += &text(delta.get("reasoning_content"));
                    choice.refusal += &text(delta.get("refusal"));
                    for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                        merge_tool_call(&mut choice.tool_calls, call);
                    }
                }
            }
        }
    }
    let choices: Vec<Value> = choices
        .into_iter()
        .map(|(index, choice)| match endpoint {
            Endpoint::Completions => json!({
                "index": index, "text": choice.content, "logprobs": null, "finish_reason": choice.finish_reason,
            }),
            Endpoint::Chat => {
                let mut message = json!({"role": choice.role.as_deref().unwrap_or("assistant")});
                let has_calls = !choice.tool_calls.is_empty();
                message["content"] =
                    if choice.content.is_empty() && has_calls { Value::Null } else { choice.content.into() };
                if !choice.reasoning.is_empty() {
                    message["reasoning_content"] = choice.reasoning.into();
                }
                if !choice.refusal.is_empty() {
                    message["refusal"] = choice.refusal.into();
                }
                if has_calls {
                    message["tool_calls"] = choice.tool_calls.into_values().collect();
                }
                json!({"index": index, "message": message, "logprobs": null, "finish_reason": choice.finish_reason})
            }
        })
        .collect();
    let mut completion = Value::Object(head);
    completion["object"] = match endpoint {
        Endpoint::Chat => "chat.completion",
        Endpoint::Completions => "text_completion",
    }
    .into();
    completion["choices"] = choices.into();
    if !usage.is_null() {
        completion["usage"] = usage;
    }
    completion
}

/// Adds one streamed tool-call fragment to the calls of a choice, by its `index`.
fn merge_tool_call(calls: &mut BTreeMap<u64, Value>, fragment: &Value) {
    let index = fragment.get("index").and_then(Value::as_u64).unwrap_or(0);
    let call = calls.entry(index).or_insert_with(
        || json!({"id": null, "type": "function", "function": {"name": "", "arguments": ""}}),
    );
    for field in ["id", "type"] {
        if let Some(value) = fragment.get(field).filter(|v| v.is_string()) {
            call[field] = value.clone();
        }
    }
    for field in ["name", "arguments"] {
        if let Some(part) = fragment.pointer(&format!("/function/{field}")).and_then(Value::as_str) {
            let joined = format!("{}{part}", call["function"][field].as_str().unwrap_or_default());
            call["function"][field] = joined.into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(texts: &[&str]) -> Vec<Arc<str>> {
        texts.iter().map(|t| Arc::from(*t)).collect()
    }

    #[test]
    fn chat_chunks_add_up_to_a_message() {
        let got = collect(
            Endpoint::Chat,
            &chunks(&[
                r#"{"id":"c1","created":7,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
                r#"{"id":"c1","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
                "not json",
                r#"{"id":"c1","created":7,"model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}"#,
                r#"{"id":"c1","created":7,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
                r#"{"id":"c1","created":7,"model":"m","choices":[],"usage":{"total_tokens":3}}"#,
            ]),
        );
        assert_eq!(
            got,
            json!({"id":"c1","created":7,"model":"m","object":"chat.completion","usage":{"total_tokens":3},
                "choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"logprobs":null,"finish_reason":"stop"}]})
        );
    }

    #[test]
    fn tool_calls_are_joined_by_index() {
        let got = collect(
            Endpoint::Chat,
            &chunks(&[
                r#"{"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"t1","type":"function","function":{"name":"get","arguments":""}}]}}]}"#,
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]}}]}"#,
                r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]},"finish_reason":"tool_calls"}]}"#,
            ]),
        );
        let message = &got["choices"][0]["message"];
        assert_eq!(message["content"], Value::Null);
        assert_eq!(
            message["tool_calls"],
            json!([{"id":"t1","type":"function","function":{"name":"get","arguments":"{\"a\":1}"}}])
        );
        assert_eq!(got["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn completion_chunks_add_up_to_a_text() {
        let got = collect(
            Endpoint::Completions,
            &chunks(&[
                r#"{"id":"x","choices":[{"index":0,"text":"a"}]}"#,
                r#"{"id":"x","choices":[{"index":0,"text":" b","finish_reason":"length"}]}"#,
            ]),
        );
        assert_eq!(got["object"], "text_completion");
        assert_eq!(got["choices"][0]["text"], "a b");
        assert_eq!(got["choices"][0]["finish_reason"], "length");
    }
}
