//! Issue 24, what an operator reads: one JSON access line per request (passthrough included,
//! never a credential), the labelled metrics and histograms after a burst on the admin port,
//! and `/readyz` saying 503 through a drain (and with an unreachable store) while `/healthz` says 200.

mod common;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use clap::Parser;
use common::process::Binary;
use common::*;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::watch;

const SECRET: &str = "sk-secret-0123456789";

/// An upstream whose chat answers (its first chunk at once, the rest once the gate opens) say
/// `x-request-id: up-chat`, and whose `GET /v1/models` says Anthropic's `request-id: up-models`.
struct Upstream {
    base: String,
    gate: watch::Sender<bool>,
}

impl Upstream {
    async fn start(open: bool) -> Arc<Upstream> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let upstream = Arc::new(Upstream { base, gate: watch::channel(open).0 });
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(chat))
            .route("/v1/models", axum::routing::get(models))
            .with_state(Arc::clone(&upstream));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        upstream
    }

    fn open_gate(&self) {
        self.gate.send_replace(true);
    }
}

async fn chat(State(upstream): State<Arc<Upstream>>) -> Response {
    let mut gate = upstream.gate.subscribe();
    let first = futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from(sse(0))) });
    let rest = futures::stream::once(async move {
        let _ = gate.wait_for(|open| *open).await;
        Ok(Bytes::from(format!("{}{}data: [DONE]\n\n", sse(1), sse(2))))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("x-request-id", "up-chat")
        .body(Body::from_stream(first.chain(rest)))
        .unwrap()
}

fn sse(i: usize) -> String {
    format!("data: {}\n\n", mock_chunk(i))
}

async fn models() -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .header("request-id", "up-models")
        .body(Body::from(r#"{"object":"list","data":[]}"#))
        .unwrap()
}

/// The body of `GET base+path`, with its status.
async fn get(base: &str, path: &str) -> (u16, String) {
    let response = http().get(format!("{base}{path}")).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The value of the sample `series` (name and labels exactly as written) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The sum of every sample of `name` whose labels include each of `labels`.
fn total(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{'))
        .filter(|rest| labels.iter().all(|label| rest.contains(label)))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The address an `admin=` field of the ready line names.
fn admin_of(line: &str) -> String {
    let admin = line.split_whitespace().find_map(|word| word.strip_prefix("admin="));
    format!("http://{}", admin.unwrap_or_else(|| panic!("no admin address: {line}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_one_json_access_line_and_no_credential_is_logged() {
    let upstream = Upstream::start(true).await;
    let mut binary = Binary::start(&["--upstream", &upstream.base, "--log-format", "json"]);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let address = loop {
        let ready = binary.stderr().lines().find(|line| line.contains("ready")).map(str::to_owned);
        if let Some(line) = ready {
            let line: Value = serde_json::from_str(&line).unwrap();
            break line["listen"].as_str().unwrap().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "no ready line: {}", binary.stderr());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let base = format!("http://{address}");
    let authorization = format!("Bearer {SECRET}");

    // A coalesced request answered whole, a streaming one, and one passed through.
    let mut sent = Vec::new();
    for (stream, path) in
        [(Some(false), "/v1/chat/completions"), (Some(true), "/v1/chat/completions"), (None, "/v1/models")]
    {
        let request = match stream {
            Some(stream) => http().post(format!("{base}{path}")).body(chat_body("q", stream).to_string()),
            None => http().get(format!("{base}{path}")),
        };
        let response = request.header("authorization", &authorization).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        let body = response.bytes().await.unwrap();
        sent.push((id, path, stream, body.len() as u64));
    }
    binary.signal(libc::SIGTERM);
    assert!(binary.exit().await.success(), "{}", binary.stderr());

    let stderr = binary.stderr();
    assert!(!stderr.contains("sk-secret"), "a credential in the log: {stderr}");
    let lines: Vec<(&str, Value)> = stderr
        .lines()
        .map(|line| (line, serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))))
        .collect();
    let access: Vec<&(&str, Value)> = lines.iter().filter(|(_, line)| line["message"] == "request").collect();
    assert_eq!(access.len(), sent.len(), "one access line a request: {stderr}");
    for (id, path, stream, bytes) in &sent {
        let mine: Vec<_> = access.iter().filter(|(_, line)| line["request_id"] == id.as_str()).collect();
        assert_eq!(mine.len(), 1, "{id}: {stderr}");
        let (raw, line) = mine[0];
        assert_eq!(raw.matches("\"request_id\"").count(), 1, "the id once: {raw}");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["path"], *path);
        assert_eq!(line["status"], 200);
        assert_eq!(line["outcome"], "done", "{raw}");
        assert_eq!(line["bytes"], *bytes, "the body bytes the client got: {raw}");
        assert!(line["duration_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{raw}");
        match stream {
            Some(_) => {
                assert_eq!(line["method"], "POST");
                assert_eq!((&line["dialect"], &line["role"]), (&"chat".into(), &"leader".into()), "{raw}");
                assert_eq!(line["model"], "test-model");
                assert_eq!(line["upstream_request_id"], "up-chat");
                let first = line["first_event_ms"].as_f64().expect("a time to the first event");
                assert!(first <= line["duration_ms"].as_f64().unwrap(), "{raw}");
            }
            None => {
                assert_eq!(line["method"], "GET");
                assert_eq!(
                    (&line["dialect"], &line["role"]),
                    (&"passthrough".into(), &"none".into()),
                    "{raw}"
                );
                assert_eq!(line["upstream_request_id"], "up-models");
                assert!(line.get("model").is_none() && line.get("first_event_ms").is_none(), "{raw}");
            }
        }
    }
}

/// Starts a gateway in this process with `flags` and an admin port; returns the public and the
/// admin base URLs.
async fn with_admin(flags: &[&str]) -> (String, String) {
    let mut args = vec!["streamflight-gateway", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    args.extend_from_slice(flags);
    let settings = streamflight_gateway::Settings::parse_from(args);
    let listener = streamflight_gateway::bind(&settings).unwrap();
    let public = format!("http://{}", listener.local_addr().unwrap());
    let app = streamflight_gateway::App::new(settings).expect("settings that work");
    let admin = format!("http://{}", app.admin_address().expect("an admin port"));
    tokio::spawn(app.run(listener, std::future::pending()));
    (public, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_burst_the_admin_port_has_labelled_counts_and_histograms() {
    const BURST: usize = 5;
    let upstream = Upstream::start(false).await;
    let (public, admin) =
        with_admin(&["--upstream", &upstream.base, "--metrics-models", "test-model,other-model"]).await;
    let mut clients = Vec::new();
    for _ in 0..BURST {
        clients.push(Client::chat(&public, "the same question", None).await);
    }
    eventually("the burst is in", || async { metric(&admin, "streamflight_active_requests").await == 5 })
        .await;
    upstream.open_gate();
    for client in &mut clients {
        assert_eq!(client.rest().await.last().map(String::as_str), Some("[DONE]"));
    }
    // Each request is recorded when its body is gone, just after its client read the end.
    eventually("every response is counted", || async {
        let (_, text) = get(&admin, "/metrics").await;
        total(&text, "streamflight_responses_total", &[r#"endpoint="chat""#]) == BURST as f64
    })
    .await;

    let response = http().get(format!("{admin}/metrics")).send().await.unwrap();
    let kind = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    // The series that were, under their names; one upstream request for the burst.
    assert_eq!(sample(&text, "streamflight_requests_total"), Some(5.0), "{text}");
    assert_eq!(sample(&text, "streamflight_flights_total"), Some(1.0));
    assert_eq!(sample(&text, "streamflight_joined_total"), Some(4.0));
    let leader = r#"endpoint="chat",role="leader",outcome="done",status_class="2xx",model="test-model""#;
    assert_eq!(sample(&text, &format!("streamflight_responses_total{{{leader}}}")), Some(1.0), "{text}");
    let done = [r#"outcome="done""#, r#"status_class="2xx""#, r#"model="test-model""#];
    assert_eq!(total(&text, "streamflight_responses_total", &done), 5.0);
    // Histograms: every request's time to its first event and duration, one upstream head.
    let chat = [r#"endpoint="chat""#];
    assert_eq!(total(&text, "streamflight_first_event_seconds_count", &chat), 5.0, "{text}");
    assert_eq!(total(&text, "streamflight_response_duration_seconds_count", &chat), 5.0);
    assert_eq!(total(&text, "streamflight_answer_events_count", &chat), 5.0);
    // Three chunks (the usage one held back: not asked for) a client.
    assert_eq!(total(&text, "streamflight_answer_events_sum", &chat), 5.0 * 3.0);
    let head = r#"streamflight_upstream_head_seconds_count{endpoint="chat",status_class="2xx"}"#;
    assert_eq!(sample(&text, head), Some(1.0), "{text}");
    // From the flight manager's hooks: one flight, ended done, that served the five.
    assert_eq!(sample(&text, r#"streamflight_flights_ended_total{outcome="done"}"#), Some(1.0), "{text}");
    assert_eq!(sample(&text, "streamflight_flight_requests_count"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "streamflight_flight_requests_sum"), Some(5.0), "{text}");
    let top = r#"streamflight_first_event_seconds_bucket{le="+Inf",endpoint="chat",role="leader",model="test-model"}"#;
    assert_eq!(sample(&text, top), Some(1.0), "{text}");
    let build = format!(r#"streamflight_build_info{{version="{}",commit=""#, env!("CARGO_PKG_VERSION"));
    assert!(text.lines().any(|line| line.starts_with(&build) && line.ends_with("} 1")), "{text}");
    for process in ["process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"] {
        assert!(sample(&text, process).is_some_and(|value| value > 0.0), "{process}: {text}");
    }
    assert!(sample(&text, "process_cpu_seconds_total").is_some(), "{text}");

    // The public port serves no metrics then (here it passes the path on, to a 404).
    let (status, body) = get(&public, "/metrics").await;
    assert!(status == 404 && !body.contains("streamflight_"), "{status}: {body}");
    assert_eq!(get(&public, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(&admin, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(&admin, "/readyz").await, (200, "ready\n".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_drain_the_admin_port_says_not_ready_and_still_alive() {
    let upstream = Upstream::start(false).await;
    let mut binary = Binary::start(&["--upstream", &upstream.base, "--admin-listen", "127.0.0.1:0"]);
    let (line, address) = binary.ready().await;
    let admin = admin_of(&line);
    assert_eq!(get(&admin, "/readyz").await, (200, "ready\n".to_owned()));
    let mut stream = Client::chat(&format!("http://{address}"), "a held stream", None).await;
    assert_eq!(stream.next().await.unwrap(), mock_chunk(0));

    binary.signal(libc::SIGTERM);
    eventually("the admin port says draining", || async { get(&admin, "/readyz").await.0 == 503 }).await;
    let (_, reason) = get(&admin, "/readyz").await;
    assert!(reason.contains("draining"), "{reason}");
    assert_eq!(get(&admin, "/healthz").await, (200, "ok\n".to_owned()));
    let (status, text) = get(&admin, "/metrics").await;
    assert!(status == 200 && sample(&text, "streamflight_active_requests") == Some(1.0), "{text}");
    assert!(binary.child.try_wait().unwrap().is_none(), "the process waits for the stream");

    upstream.open_gate();
    assert_eq!(stream.rest().await, [mock_chunk(1), mock_chunk(2), "[DONE]".to_owned()]);
    assert!(binary.exit().await.success(), "{}", binary.stderr());
}

#[tokio::test]
async fn an_unreachable_store_is_not_ready_unless_serving_alone_was_accepted() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let redis = format!("redis://127.0.0.1:{port}/");
    let fleet = ["--redis", &redis, "--fleet-secret", "0123456789abcdef0123"];
    let (_, admin) = with_admin(&fleet).await;
    let (status, reason) = get(&admin, "/readyz").await;
    assert!(status == 503 && reason.contains("unreachable"), "{status}: {reason}");
    let (public, admin) = with_admin(&[&fleet[..], &["--ready-without-redis"]].concat()).await;
    let (status, reason) = get(&admin, "/readyz").await;
    assert!(status == 200 && reason.contains("serving alone"), "{status}: {reason}");
    // Without an admin port's say, the public one answers the same.
    assert_eq!(get(&public, "/readyz").await.0, 200);
}
