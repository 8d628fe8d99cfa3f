//! The memory floor of a held stream under the gateway: what hyper alone, hyper with axum,
//! hyper-util's auto (HTTP/1.1 and h2c) connection with axum, and the gateway's own connection
//! layer with axum cost per held HTTP/1.1 streaming response, before any of the gateway's own
//! state (issues 15 and 26; BENCHMARKS.md).
//!
//! ```sh
//! cargo run --release -p streamflight-gateway --example floor -- [--streams 2000]
//! ```
//!
//! For each server below, a child process serves on a free port with the gateway's connection
//! settings (8 KiB read buffer, header timer) and jemalloc as the gateway has it; this process
//! opens the streams (each sends a request and reads the first event, then holds), and prints
//! the child's VmRSS growth per stream. Each response is an SSE head like the gateway's and one
//! event; its body then stays open.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// The gateway binary's settings. SAFETY: as in its main.rs, a pointer to a NUL-terminated string.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &u8 = &streamflight_gateway::JEMALLOC_CONF[0];

/// The servers measured, from the least.
const SERVERS: [(&str, &str); 4] = [
    ("hyper", "hyper's HTTP/1.1 connection, a service_fn that reads the request's body"),
    (
        "hyper-axum",
        "hyper's HTTP/1.1 connection, an axum Router (how the gateway served HTTP/1.1 until issue 26)",
    ),
    (
        "auto-axum",
        "hyper-util's auto connection (HTTP/1.1 and h2c), an axum Router (the gateway before issue 15)",
    ),
    (
        "gateway-axum",
        "the gateway's own connection layer (`serve::serve`), an axum Router (how the gateway serves)",
    ),
];

/// The event every stream gets first.
const EVENT: &[u8] = b"id: 0\ndata: {\"id\":\"chatcmpl-0\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, serve, kind] = args.as_slice()
        && serve == "serve"
    {
        return serve_as(kind);
    }
    let streams = match args.as_slice() {
        [_] => 2000,
        [_, flag, n] if flag == "--streams" => n.parse().expect("--streams N"),
        _ => panic!("usage: floor [--streams N]"),
    };
    println!("| server | RSS per held stream |");
    println!("|---|---:|");
    for (kind, what) in SERVERS {
        let per_stream = measure(kind, streams);
        println!("| {what} | {:.1} KB |", per_stream / 1024.0);
    }
}

/// Starts `kind` in a child, holds `streams` streams on it; the child's RSS growth per stream, bytes.
fn measure(kind: &str, streams: usize) -> f64 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["serve", kind])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the server child");
    let mut line = String::new();
    let mut out = child.stdout.take().unwrap();
    let mut byte = [0_u8; 1];
    while out.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0] as char);
    }
    let address: SocketAddr = line.trim().parse().expect("the child prints its address");
    // Warm up: the runtime's threads and first allocations are not a stream's.
    drop((0..10).map(|_| open(address)).collect::<Vec<_>>());
    let before = settled_rss(&child);
    let held: Vec<TcpStream> = (0..streams).map(|_| open(address)).collect();
    let during = settled_rss(&child);
    drop(held);
    stop(&mut child);
    (during - before) as f64 * 1024.0 / streams as f64
}

/// VmRSS in kB once it has not changed for 0.5 s (at most 5 s).
fn settled_rss(child: &Child) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = rss(child);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = rss(child);
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

fn rss(child: &Child) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A connection that has sent a streaming request and read its first event.
fn open(address: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hello"}],"stream":true}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
         authorization: Bearer sk-floor\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0_u8; 4096];
    while !seen.windows(EVENT.len()).any(|w| w == EVENT) {
        let n = stream.read(&mut buffer).expect("the first event");
        assert!(n > 0, "the server closed the stream");
        seen.extend_from_slice(&buffer[..n]);
    }
    stream
}

/// The child: serves `kind` on a free port, prints the address, serves until killed.
fn serve_as(kind: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        println!("{}", listener.local_addr().unwrap());
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let router = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(|| async { axum::response::Response::from(answer()) }),
        );
        if kind == "gateway-axum" {
            return gateway_serve(listener, router).await;
        }
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            let io = TokioIo::new(stream);
            match kind {
                "hyper" => {
                    let service = service_fn(|request: Request<Incoming>| async {
                        // A body left unread costs a page more per connection (hyper keeps it).
                        let _ = http_body_util::BodyExt::collect(request.into_body()).await;
                        Ok::<_, Infallible>(answer())
                    });
                    tokio::spawn(http1_builder().serve_connection(io, service));
                }
                "hyper-axum" => {
                    let service = hyper_util::service::TowerToHyperService::new(router.clone());
                    tokio::spawn(http1_builder().serve_connection(io, service));
                }
                _ => {
                    let service = hyper_util::service::TowerToHyperService::new(router.clone());
                    tokio::spawn(async move {
                        let _ = auto_builder().serve_connection_with_upgrades(io, service).await;
                    });
                }
            }
        }
    });
}

/// The gateway's connection layer, with its defaults (connection threads: one per CPU).
async fn gateway_serve(listener: tokio::net::TcpListener, router: axum::Router) {
    use streamflight_gateway::http::serve::{Connections, Shutdown, serve};
    use streamflight_gateway::http::write_timeout::WriteTimeouts;
    let connections = Connections {
        header_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(1),
        write_timeout: Duration::from_secs(30),
        write_timeouts: WriteTimeouts::default(),
        workers: std::thread::available_parallelism().map_or(1, usize::from),
    };
    serve(listener, router, connections, Shutdown::new(), std::future::pending()).await.unwrap();
}

fn http1_builder() -> hyper::server::conn::http1::Builder {
    streamflight_gateway::http::serve::http1_builder(Duration::from_secs(30))
}

/// hyper-util's auto connection with the gateway's settings of before issue 15.
fn auto_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30)).max_buf_size(8192);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// An SSE head like the gateway's, one event, then a body that stays open.
fn answer() -> Response<axum::body::Body> {
    let first = futures::stream::once(async { Ok::<_, Infallible>(Frame::data(Bytes::from_static(EVENT))) });
    let body = http_body_util::StreamBody::new(futures::StreamExt::chain(first, futures::stream::pending()));
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .header("x-request-id", "0123456789abcdef0123456789abcdef")
        .body(axum::body::Body::new(body))
        .unwrap()
}
