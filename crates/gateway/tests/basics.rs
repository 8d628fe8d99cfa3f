//! The gateway on its own, with the embedded simulated model: health, ids, streaming and
//! collected answers, the key, and every kind of bad input. Real HTTP on 127.0.0.1.

mod common;

use common::*;
use serde_json::{Value, json};

const FAST: &[&str] =
    &["--sim-first-token-delay", "10ms", "--sim-token-interval", "2ms", "--sim-tokens", "20"];

fn is_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn every_response_carries_a_fresh_request_id() {
    let base = gateway(FAST).await;
    let mut ids = Vec::new();
    for path in ["/healthz", "/metrics", "/nowhere"] {
        let response = http().get(format!("{base}{path}")).send().await.unwrap();
        ids.push(response.headers()["x-request-id"].to_str().unwrap().to_owned());
        if path == "/healthz" {
            assert_eq!(response.text().await.unwrap(), "ok\n");
        }
    }
    let client = Client::chat(&base, "hello", None).await;
    ids.push(client.id.clone());
    assert!(ids.iter().all(|id| is_id(id)), "{ids:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "ids are never reused");
}

#[tokio::test]
async fn a_streamed_chat_answer_is_openai_chunks_then_done() {
    let base = gateway(FAST).await;
    let mut client = Client::chat(&base, "why is the sky blue", None).await;
    assert_eq!((client.status, client.role.as_str()), (200, "leader"));
    let events = client.rest().await;
    assert_eq!(events.len(), 1 + 20 + 1 + 1, "role, 20 tokens, finish, [DONE]: {events:?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["model"], "test-model");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let finish: Value = serde_json::from_str(&events[21]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(content(&events).split(' ').count(), 20);

    // Deterministic: the same question later (a new flight) gets the same words.
    let again = Client::chat(&base, "why is the sky blue", None).await.rest().await;
    assert_eq!(content(&again), content(&events));
    assert_ne!(
        content(&Client::chat(&base, "why is grass green", None).await.rest().await),
        content(&events)
    );
    assert_eq!(metric(&base, "streamflight_flights_total").await, 3);
}

#[tokio::test]
async fn a_non_streaming_request_gets_the_collected_completion() {
    let base = gateway(FAST).await;
    let streamed = content(&Client::chat(&base, "tell me", None).await.rest().await);
    let response =
        http().post(format!("{base}/v1/chat/completions")).body(chat_body("tell me", false).to_string());
    let response = response.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(is_id(response.headers()["x-request-id"].to_str().unwrap()));
    assert!(response.content_length().is_some(), "a whole answer keeps its length, it is not chunked");
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"],
        json!({"role": "assistant", "content": streamed, "refusal": null})
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    // Legacy completions, with max_tokens cutting the answer short.
    let request = json!({"model": "m", "prompt": "once upon a time", "max_tokens": 5});
    let response =
        http().post(format!("{base}/v1/completions")).body(request.to_string()).send().await.unwrap();
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"].as_str().unwrap().split(' ').count(), 5);
    assert_eq!(body["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn field_order_whitespace_and_stream_do_not_split_a_flight() {
    let slow = ["--sim-first-token-delay", "300ms", "--sim-token-interval", "5ms", "--sim-tokens", "10"];
    let base = gateway(&slow).await;
    let mut leader = Client::chat(&base, "same question", None).await;
    let variant = "{ \"stream\" :true ,\n  \"messages\":[{\"content\":\"same question\",\"role\":\"user\"}], \"model\": \"test-model\"}";
    let mut follower = Client::post_raw(&base, "/v1/chat/completions", variant.to_owned(), None).await;
    let collected = async {
        let request = http()
            .post(format!("{base}/v1/chat/completions"))
            .body(chat_body("same question", false).to_string());
        let response = request.send().await.unwrap();
        assert_ne!(response.headers()["x-streamflight-role"], "leader");
        serde_json::from_str::<Value>(&response.text().await.unwrap()).unwrap()
    };
    let (a, b, collected) = tokio::join!(leader.rest(), follower.rest(), collected);
    assert_eq!(leader.role, "leader");
    assert!(["follower", "joiner"].contains(&follower.role.as_str()), "{}", follower.role);
    assert_eq!(a, b);
    assert_eq!(collected["choices"][0]["message"]["content"], content(&a));
    assert_eq!(metric(&base, "streamflight_flights_total").await, 1);
    assert_eq!(metric(&base, "streamflight_joined_total").await, 2);
    assert_eq!(metric(&base, "streamflight_requests_total").await, 3);
}

/// POSTs `body` to `path`; the status and the parsed error body.
async fn error_of(base: &str, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = http().post(format!("{base}{path}")).body(body).send().await.unwrap();
    assert!(is_id(response.headers()["x-request-id"].to_str().unwrap()));
    let status = response.status().as_u16();
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).expect("a JSON error body");
    assert!(body["error"]["message"].is_string() && body["error"]["type"].is_string(), "{body}");
    (status, body)
}

#[tokio::test]
async fn bad_input_gets_a_4xx_with_an_openai_error_body() {
    let base = gateway(&[FAST, &["--body-limit", "1000"]].concat()).await;
    let chat = "/v1/chat/completions";
    let (status, body) = error_of(&base, chat, "{\"messages\": [").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_json")));
    let (status, body) = error_of(&base, chat, "[1, 2]").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_json")));
    let (status, body) = error_of(&base, chat, r#"{"model": "m"}"#).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("missing_required_parameter")));
    let (status, _) = error_of(&base, chat, r#"{"messages": "hi"}"#).await;
    assert_eq!(status, 400);
    let (status, _) =
        error_of(&base, chat, r#"{"messages": [{"role":"user","content":"x"}], "stream": "yes"}"#).await;
    assert_eq!(status, 400);
    let (status, body) = error_of(&base, "/v1/completions", r#"{"model": "m", "messages": []}"#).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("missing_required_parameter")));
    let big = chat_body(&"x".repeat(2000), true).to_string();
    let (status, body) = error_of(&base, chat, big).await;
    assert_eq!((status, body["error"]["code"].as_str()), (413, Some("request_too_large")));

    for id in ["00000000000000000000000000000000", "not-an-id"] {
        let response = http().delete(format!("{base}/v1/requests/{id}")).send().await.unwrap();
        assert_eq!(response.status(), 404);
        let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "request_not_found");
    }
    // Other methods pass through (G3); the simulated model has nothing there.
    let response = http().get(format!("{base}{chat}")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let response = http().get(format!("{base}/v2/anything")).send().await.unwrap();
    assert_eq!(response.status(), 404);

    // Still serving. What is not JSON, or too large, never became a request; well-formed JSON
    // that the model refuses (three of them) did, as it would have reached a real upstream.
    assert_eq!(Client::chat(&base, "still there?", None).await.rest().await.last().unwrap(), "[DONE]");
    assert_eq!(metric(&base, "streamflight_requests_total").await, 4);
}

#[tokio::test]
async fn browsers_of_an_allowed_origin_get_cors_headers() {
    let base = gateway(&[FAST, &["--cors-origin", "https://app.example"]].concat()).await;
    let preflight = http()
        .request(reqwest::Method::OPTIONS, format!("{base}/v1/chat/completions"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://app.example");
    let answer =
        http().get(format!("{base}/healthz")).header("origin", "https://app.example").send().await.unwrap();
    let exposed = answer.headers()["access-control-expose-headers"].to_str().unwrap().to_owned();
    assert!(exposed.contains("x-request-id"), "{exposed}");
    let other =
        http().get(format!("{base}/healthz")).header("origin", "https://evil.example").send().await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // Without the flag, no CORS headers at all.
    let plain = gateway(FAST).await;
    let answer =
        http().get(format!("{plain}/healthz")).header("origin", "https://app.example").send().await.unwrap();
    assert!(answer.headers().get("access-control-allow-origin").is_none());
}
