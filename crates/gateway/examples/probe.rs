//! A hostile probe of the gateway (issue 22; DESIGN.md G7, G11): each attack against a fresh
//! gateway process, with what the gateway holds, its peak memory and `/healthz`'s latency meanwhile.
//!
//! ```text
//! cargo build --release -p streamflight-gateway --bin streamflight-gateway --examples
//! cargo run --release -p streamflight-gateway --example probe -- --label after
//! cargo run --release -p streamflight-gateway --example probe -- --gateway OLD/streamflight-gateway --label before
//! ```
//!
//! The upstream is a mock served by this process on 127.0.0.1 (Chat Completions SSE; the model
//! named in the request picks its answer). Each attack starts its own gateway child with only
//! flags every version has, runs for a fixed window, and reports, at the window's end:
//!
//! - **sockets**: TCP sockets the gateway process holds (`/proc/PID/fd`), the upstream's
//!   included; and **in flight**: its `in_flight_requests` gauge (requests holding a permit);
//! - **peak RSS** (`VmHWM`) and the RSS at the end, MB;
//! - `/healthz` p50 and p99, ms, sampled every 20 ms through the window;
//! - what the attack's clients (or a legitimate one beside them) got.
//!
//! Every load is bounded in count and time; timings are the machine's and noisy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use clap::Parser;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// What to run.
#[derive(Debug, Parser)]
#[command(about = "Attacks on a gateway process: what it holds, its memory, /healthz meanwhile")]
struct Options {
    /// The gateway binary to probe.
    #[arg(long, default_value = "target/release/streamflight-gateway")]
    gateway: PathBuf,
    /// A name for the binary in the report (`before`, `after`).
    #[arg(long, default_value = "this")]
    label: String,
    /// The attacks to run, comma-separated (default: all, in this order).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "idle,slow-bodies,no-read,declared,endless,million-keys,sighup"
    )]
    attacks: Vec<String>,
    /// Seconds the slow bodies trickle (the issue's probe: 75).
    #[arg(long, default_value_t = 75)]
    slow_seconds: u64,
    /// Seconds the non-reading clients are watched (the issue's probe: 105 after the answers ended).
    #[arg(long, default_value_t = 60)]
    no_read_seconds: u64,
    /// Seconds the endless upstream runs.
    #[arg(long, default_value_t = 40)]
    endless_seconds: u64,
    /// Seconds the million-key bodies are sent.
    #[arg(long, default_value_t = 30)]
    million_seconds: u64,
}

/// One attack's findings.
struct Row {
    attack: &'static str,
    sockets: usize,
    in_flight: u64,
    peak_mb: f64,
    end_mb: f64,
    healthz: (f64, f64),
    outcome: String,
}

#[tokio::main]
async fn main() {
    let options = Options::parse();
    let upstream = mock_upstream().await;
    eprintln!("probe: {} ({}), mock upstream at {upstream}", options.gateway.display(), options.label);
    let mut rows = Vec::new();
    for attack in &options.attacks {
        eprintln!("probe: {attack} ...");
        let row = match attack.as_str() {
            "idle" => idle(&options, upstream).await,
            "slow-bodies" => slow_bodies(&options, upstream).await,
            "no-read" => no_read(&options, upstream).await,
            "declared" => declared(&options, upstream).await,
            "endless" => endless(&options, upstream).await,
            "million-keys" => million_keys(&options, upstream).await,
            "sighup" => sighup(&options, upstream).await,
            other => panic!("unknown attack `{other}`"),
        };
        eprintln!("probe: {attack}: {}", row.outcome);
        rows.push(row);
    }
    println!("\n### {} ({})\n", options.label, options.gateway.display());
    println!(
        "| attack | sockets held | in flight | peak RSS MB | RSS at end MB | /healthz p50 / p99 ms | outcome |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.2} / {:.2} | {} |",
            row.attack,
            row.sockets,
            row.in_flight,
            row.peak_mb,
            row.end_mb,
            row.healthz.0,
            row.healthz.1,
            row.outcome
        );
    }
}

// ---- the attacks ----

/// Nothing but the sampler: the baseline.
async fn idle(options: &Options, upstream: SocketAddr) -> Row {
    let gateway = Gateway::start(options, upstream, &[], None);
    let sampler = Sampler::start(gateway.address);
    tokio::time::sleep(Duration::from_secs(10)).await;
    gateway.row("idle", sampler.stop().await, "-".to_owned()).await
}

/// 600 POSTs declaring 100 kB and trickling one byte every 20 s, under 500 permits; a
/// legitimate client asks every 0.5 s meanwhile.
async fn slow_bodies(options: &Options, upstream: SocketAddr) -> Row {
    let gateway = Gateway::start(options, upstream, &["--max-concurrent-requests", "500"], None);
    let address = gateway.address;
    let sampler = Sampler::start(address);
    let end = Instant::now() + Duration::from_secs(options.slow_seconds);
    let mut attackers = Vec::new();
    for _ in 0..600 {
        attackers.push(tokio::spawn(async move {
            let Ok(mut stream) = TcpStream::connect(address).await else { return };
            let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: probe\r\ncontent-type: application/json\r\n\
                        content-length: 100000\r\n\r\n{";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            while Instant::now() + Duration::from_secs(20) < end {
                tokio::time::sleep(Duration::from_secs(20)).await;
                if stream.write_all(b" ").await.is_err() {
                    return;
                }
            }
            // Held open until the findings are in.
            std::future::pending::<()>().await;
        }));
    }
    let client = client();
    let (mut served, mut asked) = (0, 0);
    while Instant::now() < end {
        asked += 1;
        let body = chat("short", &format!("legit {asked}"), false);
        let response = ask(&client, address, &body).send().await;
        if response.is_ok_and(|r| r.status().is_success()) {
            served += 1;
        }
        if asked % 20 == 0 {
            let held = gauge(address, "in_flight_requests").await;
            eprintln!(
                "probe: {:>3} s: {held} requests in flight; legitimate client served {served} of {asked}",
                asked / 2
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let row = gateway.row("600 slow bodies, 500 permits", sampler.stop().await, String::new()).await;
    for attacker in attackers {
        attacker.abort();
    }
    Row { outcome: format!("legitimate client served {served} of {asked}"), ..row }
}

/// 100 streaming clients that never read, each with its own 6 MB answer: more than the socket
/// buffers on both sides take (Linux lets a sending buffer grow to 4 MB), so the gateway is left
/// holding the rest.
async fn no_read(options: &Options, upstream: SocketAddr) -> Row {
    let gateway = Gateway::start(options, upstream, &[], None);
    let address = gateway.address;
    let sampler = Sampler::start(address);
    let mut held = Vec::new();
    for i in 0..NO_READERS {
        let socket = TcpSocket::new_v4().unwrap();
        let _ = socket.set_recv_buffer_size(4096);
        let Ok(mut stream) = socket.connect(address).await else { continue };
        let body = serde_json::to_vec(&chat("big", &format!("never read {i}"), true)).unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: probe\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(&body).await;
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_secs(options.no_read_seconds)).await;
    let row = gateway.row("100 clients that never read", sampler.stop().await, String::new()).await;
    let outcome = format!("{} MB of answers", NO_READERS * BIG_ANSWER / 1_000_000);
    drop(held);
    Row { outcome, ..row }
}

/// 300 POSTs each declaring 32 MiB and sending one byte, the gateway under a 2 GiB address limit.
async fn declared(options: &Options, upstream: SocketAddr) -> Row {
    let mut gateway = Gateway::start(options, upstream, &[], Some(2 * 1024 * 1024));
    let address = gateway.address;
    let sampler = Sampler::start(address);
    let mut held = Vec::new();
    for _ in 0..300 {
        let Ok(mut stream) = TcpStream::connect(address).await else { continue };
        let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: probe\r\ncontent-type: application/json\r\n\
                    content-length: 33554432\r\n\r\n{";
        let _ = stream.write_all(head.as_bytes()).await;
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let alive = gateway.child.try_wait().ok().flatten().is_none();
    let peak_virtual = gateway.status("VmPeak") as f64 / 1024.0;
    let row = gateway.row("300 declared 32 MiB (ulimit -v 2 GiB)", sampler.stop().await, String::new()).await;
    drop(held);
    let outcome = if alive {
        format!("alive; address space peak {peak_virtual:.0} MB")
    } else {
        "the process died".to_owned()
    };
    Row { outcome, ..row }
}

/// An upstream that never ends its answer: one streaming client and one non-streaming client.
async fn endless(options: &Options, upstream: SocketAddr) -> Row {
    let gateway = Gateway::start(options, upstream, &[], None);
    let address = gateway.address;
    let sampler = Sampler::start(address);
    let window = Duration::from_secs(options.endless_seconds);
    let streaming = tokio::spawn(async move {
        let body = chat("endless", "forever", true);
        let response = ask(&client(), address, &body).send().await;
        let Ok(response) = response else { return "no answer".to_owned() };
        let mut bytes = response.bytes_stream();
        let (mut seen, mut tail) = (0usize, Vec::new());
        let deadline = tokio::time::sleep(window);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return format!("stream still going after {} MB", seen / 1_000_000),
                piece = bytes.next() => match piece {
                    Some(Ok(piece)) => {
                        seen += piece.len();
                        tail = piece[piece.len().saturating_sub(300)..].to_vec();
                    }
                    _ => break,
                },
            }
        }
        let error = String::from_utf8_lossy(&tail).contains("\"error\"");
        format!(
            "stream ended after {} MB{}",
            seen / 1_000_000,
            if error { " with an error event" } else { "" }
        )
    });
    let collected = tokio::spawn(async move {
        let body = chat("endless", "forever", false);
        let asked = ask(&client(), address, &body).send();
        match tokio::time::timeout(window, asked).await {
            Err(_) => "no answer yet".to_owned(),
            Ok(Err(error)) => format!("failed: {error}"),
            Ok(Ok(response)) => format!("{}", response.status().as_u16()),
        }
    });
    let (streaming, collected) = (streaming.await.unwrap(), collected.await.unwrap());
    let row = gateway.row("endless upstream", sampler.stop().await, String::new()).await;
    Row { outcome: format!("{streaming}; non-streaming: {collected}"), ..row }
}

/// Four clients sending 18 MB bodies with a million keys each, beside a small client.
async fn million_keys(options: &Options, upstream: SocketAddr) -> Row {
    let gateway = Gateway::start(options, upstream, &[], None);
    let address = gateway.address;
    let sampler = Sampler::start(address);
    let end = Instant::now() + Duration::from_secs(options.million_seconds);
    let mut metadata = String::with_capacity(19_000_000);
    for i in 0..1_000_000 {
        metadata.push_str(&format!("\"key-{i:07}\":1,"));
    }
    metadata.pop();
    let sent = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for sender in 0..4 {
        let (metadata, sent) = (metadata.clone(), Arc::clone(&sent));
        senders.push(tokio::spawn(async move {
            let client = client();
            let mut i = 0;
            while Instant::now() < end {
                i += 1;
                let body = format!(
                    r#"{{"model":"short","stream":false,"messages":[{{"role":"user","content":"huge {sender} {i}"}}],"metadata":{{{metadata}}}}}"#
                );
                let url = format!("http://{address}/v1/chat/completions");
                if client.post(url).header("content-type", "application/json").body(body).send().await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let client = client();
    let mut small = Vec::new();
    while Instant::now() < end {
        let body = chat("short", &format!("small {}", small.len()), false);
        let started = Instant::now();
        let response = ask(&client, address, &body).send().await;
        if let Ok(response) = response {
            let _ = response.bytes().await;
            small.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for sender in senders {
        let _ = sender.await;
    }
    let row = gateway.row("4 x 18 MB bodies of a million keys", sampler.stop().await, String::new()).await;
    let (p50, p99) = percentiles(&mut small);
    let outcome = format!(
        "{} huge bodies answered; a small request's p50 / p99: {p50:.1} / {p99:.1} ms",
        sent.load(Ordering::Relaxed)
    );
    Row { outcome, ..row }
}

/// A SIGHUP while a stream is open.
async fn sighup(options: &Options, upstream: SocketAddr) -> Row {
    let mut gateway = Gateway::start(options, upstream, &[], None);
    let address = gateway.address;
    let sampler = Sampler::start(address);
    let body = chat("slow", "hang up", true);
    let response = ask(&client(), address, &body).send().await;
    let mut stream = response.expect("a stream").bytes_stream();
    let mut text: Vec<u8> = Vec::new();
    if let Some(Ok(first)) = stream.next().await {
        text.extend_from_slice(&first);
    }
    // SAFETY: kill(2) with a child's pid and a signal number; no memory is involved.
    unsafe { libc::kill(gateway.child.id() as i32, libc::SIGHUP) };
    while let Ok(Some(Ok(piece))) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        text.extend_from_slice(&piece);
    }
    let whole = String::from_utf8_lossy(&text).contains("[DONE]");
    let alive = gateway.child.try_wait().ok().flatten().is_none();
    let row = gateway.row("SIGHUP with a stream open", sampler.stop().await, String::new()).await;
    let outcome = format!(
        "stream {}; process {}",
        if whole { "whole" } else { "cut" },
        if alive { "alive" } else { "gone" }
    );
    Row { outcome, ..row }
}

// ---- the gateway under probe ----

struct Gateway {
    child: Child,
    address: SocketAddr,
}

impl Gateway {
    /// Starts the binary on a free port against `upstream`, with `flags`; under `ulimit -v KiB`
    /// if given. Waits until it answers `/healthz`.
    fn start(options: &Options, upstream: SocketAddr, flags: &[&str], limit_kib: Option<u64>) -> Gateway {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut command = match limit_kib {
            Some(kib) => {
                let mut command = Command::new("sh");
                command.args(["-c", &format!("ulimit -v {kib} && exec \"$0\" \"$@\"")]).arg(&options.gateway);
                command
            }
            None => Command::new(&options.gateway),
        };
        command
            .args(["--listen", &address.to_string(), "--log", "error"])
            .args(["--upstream", &format!("http://{upstream}/v1")])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("STREAMFLIGHT_") {
                command.env_remove(name);
            }
        }
        let child = command.spawn().expect("the gateway starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(address).is_err() {
            assert!(Instant::now() < deadline, "the gateway did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Gateway { child, address }
    }

    /// A number (kB) from `/proc/PID/status`.
    fn status(&self, field: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        text.lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// TCP sockets the process holds, its listener left out.
    fn sockets(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(format!("/proc/{}/fd", self.child.id())) else { return 0 };
        let sockets = entries
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count();
        sockets.saturating_sub(1)
    }

    /// The findings at the end of the window; the gateway is stopped after.
    async fn row(mut self, attack: &'static str, healthz: (f64, f64), outcome: String) -> Row {
        let in_flight = gauge(self.address, "in_flight_requests").await;
        let row = Row {
            attack,
            sockets: self.sockets(),
            in_flight,
            peak_mb: self.status("VmHWM") as f64 / 1024.0,
            end_mb: self.status("VmRSS") as f64 / 1024.0,
            healthz,
            outcome,
        };
        let _ = self.child.kill();
        let _ = self.child.wait();
        row
    }
}

/// A gauge from `/metrics`.
async fn gauge(address: SocketAddr, name: &str) -> u64 {
    let Ok(response) = client().get(format!("http://{address}/metrics")).send().await else { return 0 };
    let text = response.text().await.unwrap_or_default();
    let name = format!("streamflight_{name} ");
    text.lines().find_map(|line| line.strip_prefix(&name)?.trim().parse().ok()).unwrap_or(0)
}

/// `/healthz` asked every 20 ms on one keep-alive connection, each latency kept.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<f64>>,
}

impl Sampler {
    fn start(address: SocketAddr) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let client = client();
            let mut latencies = Vec::new();
            while !stopping.load(Ordering::Relaxed) {
                let started = Instant::now();
                let asked = client.get(format!("http://{address}/healthz")).send();
                let answered = tokio::time::timeout(Duration::from_secs(5), asked).await;
                // An unanswered probe counts as its whole wait.
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                if let Ok(Ok(response)) = answered {
                    let _ = response.bytes().await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            latencies
        });
        Sampler { stop, task }
    }

    /// p50 and p99 of what was sampled, ms.
    async fn stop(self) -> (f64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut latencies = self.task.await.unwrap_or_default();
        percentiles(&mut latencies)
    }
}

fn percentiles(values: &mut [f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A chat request of `body` to the gateway at `address`.
fn ask(client: &reqwest::Client, address: SocketAddr, body: &serde_json::Value) -> reqwest::RequestBuilder {
    client
        .post(format!("http://{address}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.to_string())
}

fn chat(model: &str, prompt: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": prompt}]})
}

// ---- the mock upstream ----

/// Bytes of content in a `big` answer.
const BIG_ANSWER: usize = 6_000_000;

/// Clients that never read their (big) answers.
const NO_READERS: usize = 100;

/// Serves Chat Completions SSE on 127.0.0.1; the model picks the answer: `big` (6 MB, as fast
/// as it is read), `endless` (8 KB every millisecond, for ever), `slow` (40 tokens 50 ms apart),
/// anything else a short answer.
async fn mock_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Router::new().route("/v1/chat/completions", post(answer));
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

async fn answer(_headers: HeaderMap, body: Bytes) -> Response {
    // Only the head of the body is looked at: a million-key body is not parsed here.
    let head = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    let model = ["big", "endless", "slow"].into_iter().find(|m| head.contains(&format!("\"model\":\"{m}\"")));
    let chunk = |content: &str| -> Bytes {
        let event = serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]});
        Bytes::from(format!("data: {event}\n\n"))
    };
    let last = || {
        let event = serde_json::json!({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}});
        Bytes::from(format!("data: {event}\n\ndata: [DONE]\n\n"))
    };
    let events: futures::stream::BoxStream<'static, Bytes> = match model {
        Some("big") => {
            let piece = chunk(&"x".repeat(4_000));
            futures::stream::iter((0..BIG_ANSWER / 4_000).map(move |_| piece.clone()).chain([last()])).boxed()
        }
        Some("endless") => {
            let piece = "y".repeat(8_000);
            futures::stream::unfold((), move |()| {
                let event = chunk(&piece);
                async move {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    Some((event, ()))
                }
            })
            .boxed()
        }
        Some("slow") => futures::stream::iter(0..40)
            .then(move |i| {
                let event = chunk(&format!("t{i} "));
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    event
                }
            })
            .chain(futures::stream::iter([last()]))
            .boxed(),
        _ => futures::stream::iter([chunk("short answer"), last()]).boxed(),
    };
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(events.map(Ok::<_, std::convert::Infallible>)))
        .unwrap()
}
