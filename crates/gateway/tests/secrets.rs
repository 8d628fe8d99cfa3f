//! The operator's key (`--upstream-api-key`) never reaches a client through the upstream (G6):
//! against an upstream that quotes the credential it received in its error bodies, headers,
//! events and passthrough bodies (the key split between two pieces too), no response carries it.

mod common;

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::watch;

const KEY: &str = "sk-secret-4f9a2c7e1b0d";

/// Where the passthrough body is cut: inside the key.
const SPLIT: usize = 8;

/// The passthrough body's text before the key.
const MODELS_HEAD: &str = r#"{"object":"list","data":[],"echo":""#;

/// An upstream that quotes back the credential it was sent: `Authorization` for OpenAI's
/// paths, `x-api-key` for Anthropic's.
struct Echo {
    base: String,
    /// Every credential received.
    credentials: Arc<Mutex<Vec<String>>>,
    /// Holds the passthrough body's second piece back until it opens.
    gate: watch::Sender<bool>,
}

/// A response of `status` whose `x-echo` and `www-authenticate` headers quote `credential`.
fn echoing(status: u16, credential: &str, content_type: &str) -> axum::http::response::Builder {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .header("x-echo", credential)
        .header("www-authenticate", format!("Bearer error=\"invalid_token\", token=\"{credential}\""))
}

fn sse(events: &[Value]) -> String {
    let mut text: String = events.iter().map(|event| format!("data: {event}\n\n")).collect();
    text.push_str("data: [DONE]\n\n");
    text
}

fn chunk(content: &str) -> Value {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
}

impl Echo {
    async fn start() -> Echo {
        let credentials: Arc<Mutex<Vec<String>>> = Arc::default();
        let gate = watch::channel(false).0;
        let noted = Arc::clone(&credentials);
        let credential = move |headers: &HeaderMap, name: &str| {
            let value = headers.get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            noted.lock().unwrap().push(value.clone());
            value
        };
        let chat = {
            let credential = credential.clone();
            move |headers: HeaderMap, body: Bytes| {
                let auth = credential(&headers, "authorization");
                let asked: Value = serde_json::from_slice(&body).unwrap();
                let question = asked["messages"][0]["content"].as_str().unwrap().to_owned();
                async move {
                    let said = |message: String| {
                        json!({"error": {"message": message, "type": "invalid_request_error",
                            "param": null, "code": "invalid_api_key"}})
                    };
                    let (status, content_type, body) = match question.as_str() {
                        "deny" => {
                            (401, "application/json", said(format!("Incorrect API key: {auth}")).to_string())
                        }
                        "echo" => (200, "text/event-stream", sse(&[chunk(&format!("your key is {KEY}, "))])),
                        _ => {
                            let events = [chunk("fine, "), said(format!("no quota left for {KEY}"))];
                            (200, "text/event-stream", sse(&events))
                        }
                    };
                    echoing(status, &auth, content_type).body(Body::from(body)).unwrap()
                }
            }
        };
        let messages = {
            let credential = credential.clone();
            move |headers: HeaderMap| {
                let key = credential(&headers, "x-api-key");
                let body = json!({"type": "error",
                    "error": {"type": "authentication_error", "message": format!("invalid x-api-key {key}")}});
                async move { echoing(401, &key, "application/json").body(Body::from(body.to_string())).unwrap() }
            }
        };
        let models = {
            let gate = gate.clone();
            move |headers: HeaderMap| {
                let auth = credential(&headers, "authorization");
                let mut gate = gate.subscribe();
                // The key in two pieces; the second once the test has seen the first.
                let first = Bytes::from(format!("{MODELS_HEAD}{}", &KEY[..SPLIT]));
                let second = Bytes::from(format!("{}\"}}", &KEY[SPLIT..]));
                let body = futures::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
                    futures::stream::once(async move {
                        let _ = gate.wait_for(|open| *open).await;
                        Ok(second)
                    }),
                );
                async move { echoing(200, &auth, "application/json").body(Body::from_stream(body)).unwrap() }
            }
        };
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(chat))
            .route("/v1/messages", axum::routing::post(messages))
            .route("/v1/models", axum::routing::get(models));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Echo { base, credentials, gate }
    }

    /// Checks that the upstream was sent the gateway's key (so that it had it to quote).
    fn was_sent_the_key(&self) {
        let credentials = self.credentials.lock().unwrap();
        assert!(!credentials.is_empty(), "no request reached the upstream");
        assert!(credentials.iter().all(|c| c.contains(KEY)), "{credentials:?}");
    }
}

/// Checks that no header value nor the body holds the key (nor its start), and that the
/// marker stands where the upstream quoted it.
fn assert_scrubbed(headers: &HeaderMap, body: &str) {
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(!value.contains(&KEY[..SPLIT]), "{name}: {value}");
    }
    // A failure's own response (502) has none of the upstream's headers.
    if let Some(echo) = headers.get("x-echo") {
        assert_eq!(echo.to_str().unwrap().trim_start_matches("Bearer "), "[redacted]");
    }
    assert!(!body.contains(&KEY[..SPLIT]), "the key in the body: {body}");
    assert!(body.contains("[redacted]"), "the upstream's quote is gone altogether: {body}");
}

/// The body of a response that is not a stream, checked for its status and scrubbed.
async fn scrubbed(client: Client, status: u16) -> String {
    assert_eq!(client.status, status);
    let headers = client.headers.clone();
    let body = client.text().await;
    assert_scrubbed(&headers, &body);
    body
}

async fn gateway_with_key(upstream: &Echo) -> String {
    gateway(&["--upstream", &upstream.base, "--upstream-api-key", KEY]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_401_that_quotes_the_key_reaches_no_client_with_it() {
    let upstream = Echo::start().await;
    let base = gateway_with_key(&upstream).await;
    for stream in [true, false] {
        let client =
            Client::post_raw(&base, "/v1/chat/completions", chat_body("deny", stream).to_string(), None)
                .await;
        let body = scrubbed(client, 401).await;
        let error = openai_error(&serde_json::from_str(&body).unwrap(), "invalid_api_key");
        assert_eq!(error["message"], "Incorrect API key: Bearer [redacted]");
    }
    // Anthropic's header is another, the key the same.
    let body = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let request = http()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", "client-key")
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_string());
    scrubbed(Client::send(request).await, 401).await;
    upstream.was_sent_the_key();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_quoted_inside_the_stream_reaches_no_client() {
    let upstream = Echo::start().await;
    let base = gateway_with_key(&upstream).await;

    let mut streamed = Client::chat(&base, "echo", None).await;
    assert_eq!(streamed.status, 200);
    let events = streamed.rest().await;
    assert_scrubbed(&streamed.headers, &events.join("\n"));
    assert_eq!(content(&events), "your key is [redacted], ");

    let merged =
        Client::post_raw(&base, "/v1/chat/completions", chat_body("echo", false).to_string(), None).await;
    let object: Value = serde_json::from_str(&scrubbed(merged, 200).await).unwrap();
    assert_eq!(object["choices"][0]["message"]["content"], "your key is [redacted], ");

    // An in-stream error that quotes the key: after the first byte, and before it.
    let mut streamed = Client::chat(&base, "fail", None).await;
    let events = streamed.rest().await;
    assert_scrubbed(&streamed.headers, &events.join("\n"));
    assert!(events.last().unwrap().contains("no quota left for [redacted]"), "{events:?}");
    let merged =
        Client::post_raw(&base, "/v1/chat/completions", chat_body("fail", false).to_string(), None).await;
    scrubbed(merged, 502).await;
    upstream.was_sent_the_key();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_body_loses_a_key_split_between_two_pieces_and_holds_back_only_its_start() {
    let upstream = Echo::start().await;
    let base = gateway_with_key(&upstream).await;
    let response = http().get(format!("{base}/v1/models")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let mut body = response.bytes_stream();
    let mut received = String::new();
    // Everything before the key comes at once; only the key's start waits for the next piece.
    while received.len() < MODELS_HEAD.len() {
        let piece = tokio::time::timeout(DEADLINE, body.next())
            .await
            .expect("the text before the key, without waiting for the next piece")
            .expect("a piece")
            .unwrap();
        received.push_str(std::str::from_utf8(&piece).unwrap());
    }
    assert_eq!(received, MODELS_HEAD, "nothing of the key before the next piece");
    upstream.gate.send_replace(true);
    while let Some(piece) = tokio::time::timeout(DEADLINE, body.next()).await.expect("the rest") {
        received.push_str(std::str::from_utf8(&piece.unwrap()).unwrap());
    }
    assert_eq!(received, format!("{MODELS_HEAD}[redacted]\"}}"));
    assert_scrubbed(&headers, &received);
    upstream.was_sent_the_key();
}
