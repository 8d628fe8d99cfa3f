//! An answer is bounded by default (G7): past `--max-answer-bytes` or `--max-answer-duration`
//! every client of the flight gets its dialect's explicit error, streaming or not, and the
//! upstream request is aborted, against upstreams that never end.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use common::*;
use serde_json::{Value, json};
use tokio::sync::watch;

/// An upstream whose answers never end: Chat chunks (`/v1/chat/completions`) or Anthropic
/// deltas (`/v1/messages`), as fast as they are taken or one every `interval`, once the gate
/// opens.
struct Endless {
    base: String,
    /// Requests received.
    opened: Arc<AtomicUsize>,
    /// Answers whose connection was closed (the body dropped by the server).
    closed: Arc<AtomicUsize>,
    gate: watch::Sender<bool>,
}

/// Counts its answer closed when dropped.
struct Closed(Arc<AtomicUsize>);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

const CHAT_CHUNK: &str = r#"data: {"id":"e","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"and on "},"finish_reason":null}]}"#;

const MESSAGES_HEAD: &str = concat!(
    "event: message_start\n",
    r#"data: {"type":"message_start","message":{"id":"msg_e","type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,"usage":{"input_tokens":1,"output_tokens":0}}}"#,
    "\n\nevent: content_block_start\n",
    r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
    "\n\n",
);

const MESSAGES_DELTA: &str = concat!(
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"and on "}}"#,
);

impl Endless {
    async fn start(interval: Option<Duration>) -> Endless {
        let opened = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let gate = watch::channel(false).0;
        let answer = |head: &'static str, event: &'static str| {
            let (opened, closed, gate) = (Arc::clone(&opened), Arc::clone(&closed), gate.clone());
            move || {
                opened.fetch_add(1, Ordering::SeqCst);
                let state = (Closed(Arc::clone(&closed)), gate.subscribe(), true);
                let events = futures::stream::unfold(state, move |(closed, mut gate, first)| async move {
                    let _ = gate.wait_for(|open| *open).await;
                    let piece = match interval {
                        // Twenty events a piece: an answer that grows fast.
                        None => format!("{event}\n\n").repeat(20),
                        Some(interval) => {
                            if !first {
                                tokio::time::sleep(interval).await;
                            }
                            format!("{event}\n\n")
                        }
                    };
                    let piece = if first { format!("{head}{piece}") } else { piece };
                    Some((Ok::<_, std::io::Error>(Bytes::from(piece)), (closed, gate, false)))
                });
                async move {
                    Response::builder()
                        .header(CONTENT_TYPE, "text/event-stream")
                        .body(Body::from_stream(events))
                        .unwrap()
                }
            }
        };
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(answer("", CHAT_CHUNK)))
            .route("/v1/messages", axum::routing::post(answer(MESSAGES_HEAD, MESSAGES_DELTA)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Endless { base, opened, closed, gate }
    }

    fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    /// Waits until every answer the upstream began has had its connection closed.
    async fn all_closed(&self) {
        eventually("the upstream sees every answer's connection closed", || async {
            let opened = self.opened.load(Ordering::SeqCst);
            opened > 0 && self.closed.load(Ordering::SeqCst) == opened
        })
        .await;
    }
}

/// A streamed answer's last event, parsed; checks that events came before it and that their
/// data stayed within `bound` bytes.
fn last_after_chunks(text: &str, bound: usize) -> Value {
    let events = named_events(text);
    let (last, before) = events.split_last().expect("an event");
    assert!(!before.is_empty(), "chunks before the error");
    let carried: usize = before.iter().map(|(_, data)| data.len()).sum();
    assert!(carried <= bound, "{carried} bytes went out, over the bound of {bound}");
    serde_json::from_str(&last.1).unwrap_or_else(|_| panic!("not JSON: {}", last.1))
}

/// `future`'s output, or a failure after [`DEADLINE`]: an answer that never ends fails the
/// test instead of hanging it.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future).await.unwrap_or_else(|_| panic!("{what} did not end"))
}

/// A non-streaming request for the same answer as a streaming one, sent now, answered later.
fn collect(base: &str, path: &'static str, body: Value) -> tokio::task::JoinHandle<Client> {
    let base = base.to_owned();
    tokio::spawn(async move { Client::post_raw(&base, path, body.to_string(), None).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_answer_fails_past_max_answer_bytes_for_every_client_and_is_aborted() {
    let upstream = Endless::start(None).await;
    let bound = 1_000_000;
    let base = gateway(&["--upstream", &upstream.base, "--max-answer-bytes", &bound.to_string()]).await;
    let streamed = Client::chat(&base, "never stops", None).await;
    assert_eq!(streamed.status, 200);
    let merged = collect(&base, "/v1/chat/completions", chat_body("never stops", false));
    eventually("the non-streaming client joins the flight", || async {
        metric(&base, "streamflight_joined_total").await == 1
    })
    .await;
    upstream.open_gate();

    let last = last_after_chunks(&within("the streamed answer", streamed.text()).await, bound);
    let error = openai_error(&last, "answer_too_large");
    assert!(error["message"].as_str().unwrap().contains("--max-answer-bytes"), "{last}");

    let merged = within("the merged answer", merged).await.unwrap();
    assert_eq!(merged.status, 502);
    assert_eq!(merged.headers["x-should-retry"], "false", "a retry would fail the same way");
    let error = openai_error(&merged.json().await, "answer_too_large");
    assert!(error["message"].as_str().unwrap().contains("--max-answer-bytes"), "{error}");

    upstream.all_closed().await;
    assert_eq!(upstream.opened.load(Ordering::SeqCst), 1, "one upstream request for both");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endless_answer_fails_past_max_answer_duration_and_is_aborted() {
    let upstream = Endless::start(Some(Duration::from_millis(50))).await;
    upstream.open_gate();
    let base = gateway(&["--upstream", &upstream.base, "--max-answer-duration", "1s"]).await;
    let streamed = Client::chat(&base, "slowly for ever", None).await;
    assert_eq!(streamed.status, 200);
    // Joins the flight, or (on a slow machine) comes too late and fails its own: either way
    // it gets the error before any byte.
    let merged = collect(&base, "/v1/chat/completions", chat_body("slowly for ever", false));

    let last = last_after_chunks(&within("the streamed answer", streamed.text()).await, usize::MAX);
    let error = openai_error(&last, "answer_too_long");
    assert!(error["message"].as_str().unwrap().contains("--max-answer-duration"), "{last}");

    let merged = within("the merged answer", merged).await.unwrap();
    assert_eq!(merged.status, 504);
    let error = openai_error(&merged.json().await, "answer_too_long");
    assert!(error["message"].as_str().unwrap().contains("--max-answer-duration"), "{error}");

    upstream.all_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_anthropic_answer_ends_with_an_anthropic_error_event() {
    let upstream = Endless::start(None).await;
    let bound = 200_000;
    let base = gateway(&["--upstream", &upstream.base, "--max-answer-bytes", &bound.to_string()]).await;
    let body = |stream: bool| json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "on"}], "stream": stream});
    let streamed = Client::post_raw(&base, "/v1/messages", body(true).to_string(), None).await;
    assert_eq!(streamed.status, 200);
    let merged = collect(&base, "/v1/messages", body(false));
    eventually("the non-streaming client joins the flight", || async {
        metric(&base, "streamflight_joined_total").await == 1
    })
    .await;
    upstream.open_gate();

    let text = within("the streamed answer", streamed.text()).await;
    let last = last_after_chunks(&text, bound);
    assert_eq!(named_events(&text).last().unwrap().0.as_deref(), Some("error"), "an `event: error`");
    assert_eq!(last["type"], "error", "{last}");
    assert_eq!(last["error"]["type"], "api_error", "{last}");
    assert!(last["error"]["message"].as_str().unwrap().contains("--max-answer-bytes"), "{last}");

    let merged = within("the merged answer", merged).await.unwrap();
    assert_eq!(merged.status, 502);
    let body = merged.json().await;
    assert_eq!(body["type"], "error", "Anthropic's shape: {body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("--max-answer-bytes"), "{body}");

    upstream.all_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_model_is_bounded_the_same_way() {
    let base = gateway(&["--sim-token-interval", "1ms", "--max-answer-bytes", "400"]).await;
    let streamed = Client::chat(&base, "simulated", None).await;
    assert_eq!(streamed.status, 200);
    let last = last_after_chunks(&within("the streamed answer", streamed.text()).await, 400);
    openai_error(&last, "answer_too_large");
}
