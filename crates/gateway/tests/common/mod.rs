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

pub mod pki;
pub mod process;

/// Starts a gateway on 127.0.0.1 with a free port; `flags` come after the program name.
/// It serves until the test's runtime ends.
pub async fn gateway(flags: &[&str]) -> String {
    gateway_until(flags, std::future::pending()).await
}

/// Starts a gateway that serves until `stop` resolves (then drains gracefully).
pub async fn gateway_until(flags: &[&str], stop: impl Future<Output = ()> + Send + 'static) -> String {
    let mut args = vec!["streamflight-gateway", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(flags);
    let settings = Settings::parse_from(args);
    let listener = streamflight_gateway::bind(&settings).expect("bind a free port");
    let address = listener.local_addr().unwrap();
    let app = streamflight_gateway::App::new(settings).expect("settings that work");
    tokio::spawn(app.run(listener, stop));
    format!("http://{address}")
}

/// A client that never goes through a proxy.
pub fn http() -> reqwest::Client {
    // reqwest is built without a default TLS provider (the gateway brings its own config).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap()
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
    pub headers: HeaderMap,
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
        Client::send(request).await
    }

    /// Sends `request` and keeps its response head.
    pub async fn send(request: reqwest::RequestBuilder) -> Client {
        let response = request.send().await.expect("a response from the gateway");
        let header =
            |name| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let (id, role) = (header("x-request-id"), header("x-streamflight-role"));
        Client {
            status: response.status().as_u16(),
            id,
            role,
            headers: response.headers().clone(),
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
        self.next_with_id().await.map(|(_, data)| data)
    }

    /// The `id:` and the data of the next SSE event (comments skipped).
    pub async fn next_with_id(&mut self) -> Option<(Option<String>, String)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> = block.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                let id = block.lines().find_map(|l| l.strip_prefix("id: ")).map(str::to_owned);
                if !data.is_empty() {
                    return Some((id, data.join("\n")));
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("an SSE event within 10 s")?;
            self.buffer.push_str(std::str::from_utf8(&chunk.expect("a body chunk")).unwrap());
        }
    }

    /// The whole body as text (for a response that is not a stream).
    pub async fn text(mut self) -> String {
        let mut text = std::mem::take(&mut self.buffer);
        while let Some(chunk) = self.body.next().await {
            text.push_str(std::str::from_utf8(&chunk.expect("a body chunk")).unwrap());
        }
        text
    }

    /// The body parsed as JSON.
    pub async fn json(self) -> Value {
        let text = self.text().await;
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
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

/// Every event of an SSE body: its `event:` name, if any, and its data.
pub fn named_events(text: &str) -> Vec<(Option<String>, String)> {
    text.split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: ")).map(str::to_owned);
            let data: Vec<&str> = block.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            (!data.is_empty()).then(|| (name, data.join("\n")))
        })
        .collect()
}

/// The text a chat stream's chunks add up to.
pub fn content(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| v.pointer("/choices/0/delta/content").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// How the mock upstream answers a completion request.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// `tokens` chunks, `interval` apart; if `gated`, everything after the first chunk
    /// waits for [`Mock::open_gate`]. Then a usage chunk if the request asked for one, then `[DONE]`.
    Tokens { tokens: usize, interval: Duration, gated: bool },
    /// An error status with an OpenAI error body and rate-limit headers, once the gate opens.
    Status(u16),
    /// `after` chunks, then, once the gate opens, the connection breaks mid-body.
    Break { after: usize },
    /// `after` chunks, then an OpenAI error object inside the stream, then the stream ends.
    InStreamError { after: usize },
    /// A redirect to another origin (which must never be followed).
    Redirect,
    /// `after` chunks, then one event of more than `bytes` bytes (see [`mock_huge_chunk`]),
    /// then `[DONE]`.
    HugeEvent { after: usize, bytes: usize },
    /// `status` with an error body of `bytes` bytes (see [`mock_big_error`]).
    BigError { status: u16, bytes: usize },
}

/// What the mock received: one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// Path and query, as received.
    pub target: String,
    pub headers: HeaderMap,
    /// The body, as received.
    pub body: Bytes,
}

impl Seen {
    /// The body, parsed (losslessly: the gateway's serde_json keeps number text).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_owned())
    }
}

/// A mock OpenAI-compatible upstream that counts and records what it receives.
pub struct Mock {
    pub base: String,
    /// Completion requests received.
    pub received: AtomicUsize,
    /// Streams whose client went away before the end.
    pub dropped: AtomicUsize,
    /// Every request received, completions and passthrough alike.
    pub seen: Mutex<Vec<Seen>>,
    mode: Mutex<Mode>,
    gate: watch::Sender<bool>,
}

/// The rate-limit headers the mock sends with an error status.
pub const RATE_LIMIT_HEADERS: [(&str, &str); 2] =
    [("retry-after", "7"), ("x-ratelimit-remaining-requests", "0")];

impl Mock {
    /// Starts a mock upstream on a free port.
    pub async fn start(mode: Mode) -> Arc<Mock> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let (mock, app) = Mock::app(mode, base);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        mock
    }

    /// A mock and its routes, for the caller to serve at `base` (over TLS, say).
    pub fn app(mode: Mode, base: String) -> (Arc<Mock>, axum::Router) {
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
            .route("/v1/embeddings", axum::routing::post(embeddings))
            .fallback(echo)
            .with_state(Arc::clone(&mock));
        (mock, app)
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

    /// The last request received.
    pub fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("a request reached the mock")
    }

    /// Reads and records a request.
    async fn record(&self, request: axum::extract::Request) -> Seen {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
        let uri = &parts.uri;
        let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str()).to_owned();
        let seen = Seen { method: parts.method.to_string(), target, headers: parts.headers, body };
        self.seen.lock().unwrap().push(seen.clone());
        seen
    }
}

/// The mock's chunk `i`: a chat chunk whose content is `t{i} `.
pub fn mock_chunk(i: usize) -> String {
    json!({"id": "mock", "object": "chat.completion.chunk", "created": 1, "model": "test-model",
        "choices": [{"index": 0, "delta": {"content": format!("t{i} ")}, "finish_reason": null}]})
    .to_string()
}

/// The mock's usage chunk, sent when the request asks for it.
pub fn mock_usage() -> String {
    json!({"id": "mock", "object": "chat.completion.chunk", "created": 1, "model": "test-model",
        "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}})
    .to_string()
}

/// The in-stream error the mock sends in [`Mode::InStreamError`].
pub fn mock_error() -> String {
    json!({"error": {"message": "the model is overloaded", "type": "server_error", "param": null, "code": "overloaded"}})
        .to_string()
}

/// The mock's chunk whose content is `bytes` letters: one SSE event of more than `bytes` bytes.
pub fn mock_huge_chunk(bytes: usize) -> String {
    json!({"id": "mock", "object": "chat.completion.chunk", "created": 1, "model": "test-model",
        "choices": [{"index": 0, "delta": {"content": "x".repeat(bytes)}, "finish_reason": null}]})
    .to_string()
}

/// The error body of [`Mode::BigError`]: an OpenAI error object of exactly `bytes` bytes (at
/// least 100), whose message runs on and on.
pub fn mock_big_error(bytes: usize) -> String {
    let (open, close) = (r#"{"error":{"message":""#, r#"","type":"mock_error","code":"mock_big"}}"#);
    let filler = "the mock explains at length ".chars().cycle();
    let message: String = filler.take(bytes - open.len() - close.len()).collect();
    format!("{open}{message}{close}")
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

async fn answer(State(mock): State<Arc<Mock>>, request: axum::extract::Request) -> Response {
    mock.received.fetch_add(1, Ordering::SeqCst);
    let seen = mock.record(request).await;
    let request = seen.json();
    let usage = request.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
    let mode = *mock.mode.lock().unwrap();
    match mode {
        Mode::Status(status) => {
            let _ = mock.gate.subscribe().wait_for(|open| *open).await;
            let body =
                json!({"error": {"message": "the mock is down", "type": "mock_error", "code": "mock_down"}});
            let mut response = Response::builder().status(status).header("content-type", "application/json");
            for (name, value) in RATE_LIMIT_HEADERS {
                response = response.header(name, value);
            }
            return response.header("x-request-id", "mock-req-1").body(Body::from(body.to_string())).unwrap();
        }
        Mode::BigError { status, bytes } => {
            return Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(mock_big_error(bytes)))
                .unwrap();
        }
        Mode::Redirect => {
            return Response::builder()
                .status(302)
                .header("location", "http://127.0.0.1:9/elsewhere")
                .body(Body::from("moved"))
                .unwrap();
        }
        _ => {}
    }
    let gate = mock.gate.subscribe();
    let tracker = Tracker { mock, finished: false };
    let events =
        futures::stream::unfold((0usize, tracker, gate), move |(i, mut tracker, mut gate)| async move {
            let event = match mode {
                Mode::Tokens { tokens, .. } if i == tokens && usage => {
                    Ok(format!("data: {}\n\n", mock_usage()))
                }
                Mode::Tokens { tokens, .. } if i == tokens + usize::from(usage) => {
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
                Mode::InStreamError { after } if i == after => {
                    tracker.finished = true;
                    Ok(format!("data: {}\n\n", mock_error()))
                }
                Mode::InStreamError { after } if i > after => return None,
                Mode::InStreamError { .. } => Ok(format!("data: {}\n\n", mock_chunk(i))),
                Mode::HugeEvent { after, bytes } if i == after => {
                    Ok(format!("data: {}\n\n", mock_huge_chunk(bytes)))
                }
                Mode::HugeEvent { after, .. } if i == after + 1 => {
                    tracker.finished = true;
                    Ok("data: [DONE]\n\n".to_owned())
                }
                Mode::HugeEvent { after, .. } if i > after + 1 => return None,
                Mode::HugeEvent { .. } => Ok(format!("data: {}\n\n", mock_chunk(i))),
                Mode::Status(_) | Mode::Redirect | Mode::BigError { .. } => unreachable!(),
            };
            Some((event, (i + 1, tracker, gate)))
        });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("x-request-id", "mock-req-1")
        .header("x-ratelimit-remaining-tokens", "999")
        .header("set-cookie", "leader=secret")
        .body(Body::from_stream(events))
        .unwrap()
}

/// `POST /v1/embeddings`: a fixed vector per call, after the gate opens if the mode is gated.
async fn embeddings(State(mock): State<Arc<Mock>>, request: axum::extract::Request) -> Response {
    mock.received.fetch_add(1, Ordering::SeqCst);
    mock.record(request).await;
    let mode = *mock.mode.lock().unwrap();
    if let Mode::Tokens { gated: true, .. } = mode {
        let _ = mock.gate.subscribe().wait_for(|open| *open).await;
    }
    // Written out: a number no f64 holds, to show it passes untouched.
    let answer = r#"{"object":"list","model":"embed","usage":{"prompt_tokens":1,"total_tokens":1},"data":[{"object":"embedding","index":0,"embedding":[0.125,-1.5,3.0000000000000000001]}]}"#;
    Response::builder().header("content-type", "application/json").body(Body::from(answer)).unwrap()
}

/// Any other request: echoed as JSON (method, target, headers, body), with a header of its own.
async fn echo(State(mock): State<Arc<Mock>>, request: axum::extract::Request) -> Response {
    let seen = mock.record(request).await;
    let answer =
        json!({"method": seen.method, "target": seen.target, "body": String::from_utf8_lossy(&seen.body)});
    Response::builder()
        .status(201)
        .header("content-type", "application/json")
        .header("x-mock", "echo")
        .body(Body::from(answer.to_string()))
        .unwrap()
}

/// The longest a raw-socket helper waits for the server; reaching it fails the test.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The socket address behind a base URL such as `http://127.0.0.1:8080`.
pub fn address(base: &str) -> std::net::SocketAddr {
    let authority = base.trim_start_matches("http://");
    authority.split('/').next().unwrap().parse().unwrap_or_else(|_| panic!("no address in {base}"))
}

/// Opens a raw connection to `base` and writes `bytes` (a request, or part of one).
pub async fn raw(base: &str, bytes: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let connect = tokio::net::TcpStream::connect(address(base));
    let mut stream = tokio::time::timeout(DEADLINE, connect).await.expect("connect in time").unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// A response read from a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The head, status line included, header names in lower case.
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The body parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Reads one HTTP/1.1 response (a `content-length` or chunked body) within [`DEADLINE`].
pub async fn read_response(stream: &mut tokio::net::TcpStream) -> RawResponse {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let read = async {
        let mut buffer = [0_u8; 4096];
        loop {
            if let Some(response) = parse_response(&received) {
                return response;
            }
            let n = stream.read(&mut buffer).await.expect("read a response");
            assert!(n > 0, "closed mid-response: {:?}", String::from_utf8_lossy(&received));
            received.extend_from_slice(&buffer[..n]);
        }
    };
    tokio::time::timeout(DEADLINE, read).await.expect("a response in time")
}

/// The response at the start of `received`, once it is complete.
fn parse_response(received: &[u8]) -> Option<RawResponse> {
    let end = received.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&received[..end]).to_lowercase();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let header = |name: &str| head.lines().find_map(|line| line.strip_prefix(name)).map(str::trim);
    let mut rest = &received[end + 4..];
    let body = if header("transfer-encoding:") == Some("chunked") {
        let mut body = Vec::new();
        loop {
            let line = rest.windows(2).position(|w| w == b"\r\n")?;
            let size = std::str::from_utf8(&rest[..line]).unwrap().split(';').next().unwrap();
            let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
            // The chunk and its CRLF; the last, empty one, ends with the trailers' empty line.
            let chunk = rest.get(line + 2..line + 2 + size + 2)?;
            if size == 0 {
                break body;
            }
            body.extend_from_slice(&chunk[..size]);
            rest = &rest[line + 2 + size + 2..];
        }
    } else {
        let length = header("content-length:").map_or(0, |value| value.parse().unwrap());
        rest.get(..length)?.to_vec()
    };
    Some(RawResponse { status, head, body })
}

/// Reads until the server closes the connection (FIN or reset) within [`DEADLINE`]; returns
/// what it sent meanwhile.
pub async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(error) => panic!("reading: {error}"),
            }
        }
    };
    let closed = tokio::time::timeout(DEADLINE, read).await.is_ok();
    assert!(closed, "the server kept the connection; it sent {:?}", String::from_utf8_lossy(&received));
    received
}

/// Checks that `body` is an error in OpenAI's shape with `code`; returns it.
pub fn openai_error(body: &Value, code: &str) -> Value {
    let error = &body["error"];
    assert!(error["message"].is_string() && error["type"].is_string(), "not OpenAI's shape: {body}");
    assert!(error.get("param").is_some(), "no param: {body}");
    assert_eq!(error["code"], code, "{body}");
    error.clone()
}
