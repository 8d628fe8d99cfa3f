//! Helpers the gateway's end-to-end tests share: starting a gateway on a free port
//! and reading its SSE responses over real HTTP.

#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;

use clap::Parser;
use streamflight_gateway::Settings;

/// Starts a gateway on 127.0.0.1 with a free port; `flags` come after the program name.
pub async fn gateway(flags: &[&str]) -> String {
    let mut args = vec!["streamflight-gateway", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(flags);
    let settings = Settings::parse_from(args);
    let listener = tokio::net::TcpListener::bind(settings.listen).await.expect("bind a free port");
    let address = listener.local_addr().unwrap();
    tokio::spawn(streamflight_gateway::serve(listener, settings));
    format!("http://{address}")
}

/// A client that never goes through a proxy.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Waits until `condition` holds, checking every few milliseconds; panics after 10 s.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One value of the gateway's `/metrics`.
pub async fn metric(base: &str, name: &str) -> u64 {
    let text = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let line =
        text.lines().find(|l| l.split(' ').next() == Some(name)).unwrap_or_else(|| panic!("{name}: {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// A chat request body asking `question`.
pub fn chat_body(question: &str, stream: bool) -> Value {
    json!({"model": "test-model", "messages": [{"role": "user", "content": question}], "stream": stream})
}

/// One client's streaming response: its headers, then its SSE events' data one by one.
pub struct Client {
    pub status: u16,
    pub id: String,
    pub role: String,
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buffer: String,
}

impl Client {
    /// POSTs `body` (as raw text) to `path` with an optional `Authorization`.
    pub async fn post_raw(base: &str, path: &str, body: String, authorization: Option<&str>) -> Client {
        let mut request =
            http().post(format!("{base}{path}")).header("content-type", "application/json").body(body);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response = request.send().await.expect("POST to the gateway");
        let header =
            |name| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let (id, role) = (header("x-request-id"), header("x-streamflight-role"));
        Client {
            status: response.status().as_u16(),
            id,
            role,
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// A streaming chat request for `question`.
    pub async fn chat(base: &str, question: &str, authorization: Option<&str>) -> Client {
        Client::post_raw(base, "/v1/chat/completions", chat_body(question, true).to_string(), authorization)
            .await
    }

    /// The data of the next SSE event (comments skipped); `None` once the stream closes.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> = block.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                if !data.is_empty() {
                    return Some(data.join("\n"));
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("an SSE event within 10 s")?;
            self.buffer.push_str(std::str::from_utf8(&chunk.expect("a body chunk")).unwrap());
        }
    }

    /// Every remaining event's data, until the stream closes.
    pub async fn rest(&mut self) -> Vec<String> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

/// The text a chat stream's chunks add up to.
pub fn content(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| v.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// How the mock upstream answers.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// `tokens` chunks, `interval` apart; if `gated`, everything after the first chunk
    /// waits for [`Mock::open_gate`]. Then `[DONE]`.
    Tokens { tokens: usize, interval: Duration, gated: bool },
    /// An error status with an OpenAI error body, once the gate opens.
    Status(u16),
    /// `after` chunks, then, once the gate opens, the connection breaks mid-body.
    Break { after: usize },
}

/// A mock OpenAI-compatible upstream that counts what it receives.
pub struct Mock {
    pub base: String,
    /// Completion requests received.
    pub received: AtomicUsize,
    /// Streams whose client went away before the end.
    pub dropped: AtomicUsize,
    /// Each request's `Authorization` and body.
    pub seen: Mutex<Vec<(Option<String>, Value)>>,
    mode: Mutex<Mode>,
    gate: watch::Sender<bool>,
}

impl Mock {
    /// Starts a mock upstream on a free port.
    pub async fn start(mode: Mode) -> Arc<Mock> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let mock = Arc::new(Mock {
            base,
            received: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            mode: Mutex::new(mode),
            gate: watch::channel(false).0,
        });
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(answer))
            .route("/v1/completions", axum::routing::post(answer))
            .with_state(Arc::clone(&mock));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        mock
    }

    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }

    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

/// The mock's chunk `i`: a chat chunk whose content is `t{i} `.
pub fn mock_chunk(i: usize) -> String {
    json!({"id": "mock", "object": "chat.completion.chunk", "created": 1, "model": "test-model",
        "choices": [{"index": 0, "delta": {"content": format!("t{i} ")}, "finish_reason": null}]})
    .to_string()
}

/// Counts a stream as dropped if it goes before its end.
struct Tracker {
    mock: Arc<Mock>,
    finished: bool,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if !self.finished {
            self.mock.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn answer(State(mock): State<Arc<Mock>>, headers: HeaderMap, body: String) -> Response {
    mock.received.fetch_add(1, Ordering::SeqCst);
    let authorization = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned());
    mock.seen.lock().unwrap().push((authorization, serde_json::from_str(&body).unwrap_or(Value::Null)));
    let mode = *mock.mode.lock().unwrap();
    if let Mode::Status(status) = mode {
        let _ = mock.gate.subscribe().wait_for(|open| *open).await;
        let body = json!({"error": {"message": "the mock is down", "type": "server_error", "code": null}});
        return Response::builder().status(status).body(Body::from(body.to_string())).unwrap();
    }
    let gate = mock.gate.subscribe();
    let tracker = Tracker { mock, finished: false };
    let events =
        futures::stream::unfold((0usize, tracker, gate), move |(i, mut tracker, mut gate)| async move {
            let event = match mode {
                Mode::Tokens { tokens, .. } if i == tokens => {
                    tracker.finished = true;
                    Ok("data: [DONE]\n\n".to_owned())
                }
                Mode::Tokens { tokens, .. } if i > tokens => return None,
                Mode::Tokens { interval, gated, .. } => {
                    if i > 0 {
                        if gated {
                            let _ = gate.wait_for(|open| *open).await;
                        }
                        tokio::time::sleep(interval).await;
                    }
                    Ok(format!("data: {}\n\n", mock_chunk(i)))
                }
                Mode::Break { after } if i == after => {
                    let _ = gate.wait_for(|open| *open).await;
                    tracker.finished = true;
                    Err(std::io::Error::other("the mock breaks the stream"))
                }
                Mode::Break { after } if i > after => return None,
                Mode::Break { .. } => Ok(format!("data: {}\n\n", mock_chunk(i))),
                Mode::Status(_) => unreachable!(),
            };
            Some((event, (i + 1, tracker, gate)))
        });
    Response::builder().header("content-type", "text/event-stream").body(Body::from_stream(events)).unwrap()
}
