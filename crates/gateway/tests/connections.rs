//! The connection layer over real sockets: `TCP_NODELAY`, HTTP/1.1 and h2c on one port, stalled and
//! idle connections closed by the server, graceful shutdown.
//!
//! No timing is asserted: every wait is for a condition, under a generous deadline.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use futures::stream;
use streamflight_gateway::http::serve::{self, Accepted, Connections, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// The longest any condition is waited for; reaching it fails the test, it is not a timing.
const DEADLINE: Duration = Duration::from_secs(10);
/// Short, so that the tests that wait for it do not take long.
const HEADER_TIMEOUT: Duration = Duration::from_millis(300);
/// Long enough never to elapse during a test that does not wait for it.
const NEVER: Duration = Duration::from_secs(600);

/// The HTTP/2 connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty HTTP/2 SETTINGS frame: length 0, type 4, no flags, stream 0.
const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

fn logs() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_max_level(tracing::Level::DEBUG).try_init();
}

/// Lets the test end `/stream/{name}` normally; created on first use by either side.
#[derive(Clone, Default)]
struct Releases(Arc<Mutex<HashMap<String, Arc<Notify>>>>);

impl Releases {
    fn get(&self, name: &str) -> Arc<Notify> {
        let mut releases = self.0.lock().expect("releases lock");
        Arc::clone(releases.entry(name.to_owned()).or_default())
    }

    fn release(&self, name: &str) {
        // `notify_one` keeps a permit if the stream is not waiting yet.
        self.get(name).notify_one();
    }
}

#[derive(Clone)]
struct AppState {
    shutdown: Shutdown,
    releases: Releases,
}

fn app(shutdown: Shutdown, releases: Releases) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/echo", post(|body: Bytes| async move { body }))
        .route(
            "/nodelay",
            get(|Extension(accepted): Extension<Accepted>| async move { accepted.nodelay.to_string() }),
        )
        .route("/stream/{name}", get(sse))
        .with_state(AppState { shutdown, releases })
}

/// An SSE stream: `started`, then `[DONE]` when the test releases it, or an error event when the
/// server's grace period is over.
async fn sse(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    enum Step {
        Start,
        Wait,
        Done,
    }
    let release = state.releases.get(&name);
    let shutdown = state.shutdown;
    let events = stream::unfold(Step::Start, move |step| {
        let release = Arc::clone(&release);
        let shutdown = shutdown.clone();
        async move {
            let event: &'static str = match step {
                Step::Start => {
                    return Some((Ok::<_, io::Error>(Bytes::from("data: started\n\n")), Step::Wait));
                }
                Step::Done => return None,
                Step::Wait => tokio::select! {
                    () = release.notified() => "data: [DONE]\n\n",
                    () = shutdown.over() => "data: {\"error\":{\"message\":\"the gateway is shutting down\"}}\n\n",
                },
            };
            Some((Ok(Bytes::from(event)), Step::Done))
        }
    });
    ([(CONTENT_TYPE, "text/event-stream")], Body::from_stream(events)).into_response()
}

struct Server {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    served: JoinHandle<io::Result<()>>,
    shutdown: Shutdown,
    releases: Releases,
}

impl Server {
    async fn start(header_timeout: Duration, shutdown_grace: Duration) -> Server {
        logs();
        let listener = serve::bind("127.0.0.1:0".parse().expect("address"), 1024).expect("bind");
        let address = listener.local_addr().expect("local address");
        let shutdown = Shutdown::new();
        let releases = Releases::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(serve::serve(
            listener,
            app(shutdown.clone(), releases.clone()),
            Connections {
                header_timeout,
                shutdown_grace,
                write_timeout: NEVER,
                write_timeouts: Default::default(),
                workers: 0,
            },
            shutdown.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Server { address, stop: Some(stop), served, shutdown, releases }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the server if the test has not, and waits for `serve` to return.
    async fn finish(mut self) -> io::Result<()> {
        self.stop();
        timeout(DEADLINE, &mut self.served).await.expect("serve returns").expect("serve does not panic")
    }
}

/// reqwest is built without a default TLS provider (the gateway brings its own config).
fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn http1() -> reqwest::Client {
    tls_provider();
    reqwest::Client::builder().no_proxy().http1_only().build().expect("HTTP/1 client")
}

fn h2c() -> reqwest::Client {
    tls_provider();
    reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().expect("h2c client")
}

async fn connect(address: SocketAddr) -> TcpStream {
    timeout(DEADLINE, TcpStream::connect(address)).await.expect("connect in time").expect("connect")
}

/// Reads until the server closes the connection (FIN or reset); returns what it sent first.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = timeout(DEADLINE, async {
        let mut buffer = [0_u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
                Err(error) if error.kind() == io::ErrorKind::ConnectionReset => return,
                Err(error) => panic!("reading: {error}"),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server did not close the connection; it sent {:?}",
        String::from_utf8_lossy(&received)
    );
    received
}

/// Reads into `received` until it contains `needle`.
async fn read_until(stream: &mut TcpStream, received: &mut Vec<u8>, needle: &[u8]) {
    let found = timeout(DEADLINE, async {
        let mut buffer = [0_u8; 4096];
        while !received.windows(needle.len()).any(|window| window == needle) {
            let n = stream.read(&mut buffer).await.expect("read");
            assert!(
                n > 0,
                "closed before {:?}: {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(received)
            );
            received.extend_from_slice(&buffer[..n]);
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "no {:?} in {:?}",
        String::from_utf8_lossy(needle),
        String::from_utf8_lossy(received)
    );
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";

/// Sends `GET /healthz` on a raw HTTP/1.1 connection and reads its response (its body is `ok`).
async fn healthz_on(stream: &mut TcpStream) {
    stream.write_all(HEALTHZ).await.expect("write");
    let mut received = Vec::new();
    read_until(stream, &mut received, b"\r\n\r\nok").await;
    assert!(received.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&received));
}

/// Reads a streamed response body to its end; returns it as text.
async fn body_of(mut response: reqwest::Response, before: &str) -> String {
    let mut body = before.to_owned();
    timeout(DEADLINE, async {
        while let Some(chunk) = response.chunk().await.expect("body chunk") {
            body.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the body ends");
    body
}

/// Opens `/stream/{name}` and waits for its first event, so that the request is in flight.
async fn stream_started(
    client: &reqwest::Client,
    server: &Server,
    name: &str,
) -> (reqwest::Response, String) {
    let mut response = timeout(DEADLINE, client.get(server.url(&format!("/stream/{name}"))).send())
        .await
        .expect("response head in time")
        .expect("response head");
    assert_eq!(response.status(), 200);
    let mut body = String::new();
    while !body.contains("data: started") {
        let chunk = timeout(DEADLINE, response.chunk()).await.expect("first event in time").expect("chunk");
        body.push_str(&String::from_utf8_lossy(&chunk.expect("the stream goes on")));
    }
    (response, body)
}

#[test]
fn bind_without_a_runtime_is_an_error() {
    assert!(serve::bind("127.0.0.1:0".parse().expect("address"), 1024).is_err());
}

#[tokio::test]
async fn bind_listens_and_holds_its_port() {
    // The backlog itself cannot be read back portably; that it is accepted is what is checked.
    let listener = serve::bind("127.0.0.1:0".parse().expect("address"), 4096).expect("bind");
    let address = listener.local_addr().expect("local address");
    assert_ne!(address.port(), 0);
    let client = TcpStream::connect(address).await.expect("connect");
    let (accepted, peer) = listener.accept().await.expect("accept");
    assert_eq!(peer, client.local_addr().expect("client address"));
    drop(accepted);
    // SO_REUSEADDR lets a restart bind over TIME_WAIT, not two servers share a listening port.
    let second = serve::bind(address, 1024).expect_err("the port is taken");
    assert_eq!(second.kind(), io::ErrorKind::AddrInUse);
}

#[tokio::test]
async fn shutdown_fires_once_for_every_clone() {
    let shutdown = Shutdown::new();
    let clone = shutdown.clone();
    assert!(!clone.is_over());
    let waiting = tokio::spawn(async move { clone.over().await });
    shutdown.end();
    timeout(DEADLINE, waiting).await.expect("over() resolves").expect("no panic");
    assert!(shutdown.is_over());
    // Already fired: resolves at once.
    timeout(DEADLINE, shutdown.over()).await.expect("over() resolves again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_sockets_have_nodelay() {
    let server = Server::start(NEVER, NEVER).await;
    for client in [http1(), h2c()] {
        let response = client.get(server.url("/nodelay")).send().await.expect("response");
        assert_eq!(response.text().await.expect("body"), "true");
    }
    server.finish().await.expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_h2c_share_the_port() {
    let server = Server::start(NEVER, NEVER).await;
    for (client, version) in [(http1(), reqwest::Version::HTTP_11), (h2c(), reqwest::Version::HTTP_2)] {
        let response = client.get(server.url("/healthz")).send().await.expect("healthz");
        assert_eq!(response.version(), version);
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.expect("body"), "ok");
        let body = "x".repeat(100_000);
        let response = client.post(server.url("/echo")).body(body.clone()).send().await.expect("echo");
        assert_eq!(response.version(), version);
        assert_eq!(response.text().await.expect("body"), body);
    }
    server.finish().await.expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_are_closed_while_others_are_served() {
    let server = Server::start(HEADER_TIMEOUT, NEVER).await;
    let mut stalled = Vec::new();
    // Nothing at all: the phase before the protocol is known.
    for _ in 0..20 {
        stalled.push(connect(server.address).await);
    }
    // Half a request head: HTTP/1's own header timeout.
    for _ in 0..20 {
        let mut stream = connect(server.address).await;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n").await.expect("write");
        stalled.push(stream);
    }
    // Part of HTTP/2's preface: still the phase before the protocol is known.
    for _ in 0..5 {
        let mut stream = connect(server.address).await;
        stream.write_all(&PREFACE[..16]).await.expect("write");
        stalled.push(stream);
    }
    // Others are served meanwhile.
    for client in [http1(), h2c()] {
        let response = client.get(server.url("/healthz")).send().await.expect("healthz");
        assert_eq!(response.text().await.expect("body"), "ok");
    }
    for stream in &mut stalled {
        until_closed(stream).await;
    }
    server.finish().await.expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let server = Server::start(HEADER_TIMEOUT, NEVER).await;
    // HTTP/1.1: a full exchange, then nothing.
    let mut h1 = connect(server.address).await;
    healthz_on(&mut h1).await;
    let after = until_closed(&mut h1).await;
    assert!(!after.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&after));
    // HTTP/2: the preface and settings, then nothing (hyper's HTTP/2 has no idle timeout).
    let mut h2 = connect(server.address).await;
    h2.write_all(PREFACE).await.expect("write");
    h2.write_all(EMPTY_SETTINGS).await.expect("write");
    until_closed(&mut h2).await;
    server.finish().await.expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_outlive_the_header_timeout() {
    let server = Server::start(HEADER_TIMEOUT, NEVER).await;
    // HTTP/1.1 on a raw socket, to see that the same connection serves the next request.
    let mut h1 = connect(server.address).await;
    h1.write_all(b"GET /stream/h1 HTTP/1.1\r\nHost: test\r\n\r\n").await.expect("write");
    let mut received = Vec::new();
    read_until(&mut h1, &mut received, b"data: started").await;
    // Pipelined now, so that no idle time of the client's passes between the two requests.
    h1.write_all(HEALTHZ).await.expect("write");
    let h2 = h2c();
    let (h2_stream, h2_body) = stream_started(&h2, &server, "h2").await;
    // Once a connection opened after both streams has been closed for idleness, the streams have
    // been in flight for longer than the header timeout.
    let mut idle = connect(server.address).await;
    until_closed(&mut idle).await;
    server.releases.release("h1");
    server.releases.release("h2");
    read_until(&mut h1, &mut received, b"data: [DONE]\n\n\r\n0\r\n\r\nHTTP/1.1 200").await;
    read_until(&mut h1, &mut received, b"\r\n\r\nok").await;
    let body = body_of(h2_stream, &h2_body).await;
    assert!(body.ends_with("data: [DONE]\n\n"), "{body:?}");
    server.finish().await.expect("serve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_finish_within_the_grace() {
    let mut server = Server::start(NEVER, NEVER).await;
    let client = http1();
    let (response, started) = stream_started(&client, &server, "a").await;
    let h2 = h2c();
    let (h2_response, h2_started) = stream_started(&h2, &server, "b").await;
    // An idle keep-alive connection does not hold the shutdown up.
    let mut idle = connect(server.address).await;
    healthz_on(&mut idle).await;
    server.stop();
    // New connections are refused once the server has seen `stop`.
    timeout(DEADLINE, async {
        loop {
            match TcpStream::connect(server.address).await {
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => return,
                // Not refused yet: polled, since nothing announces the listener's closing.
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await
    .expect("new connections refused");
    until_closed(&mut idle).await;
    assert!(!server.shutdown.is_over(), "the grace period is not over");
    server.releases.release("a");
    server.releases.release("b");
    let body = body_of(response, &started).await;
    assert!(body.ends_with("data: [DONE]\n\n"), "{body:?}");
    let body = body_of(h2_response, &h2_started).await;
    assert!(body.ends_with("data: [DONE]\n\n"), "{body:?}");
    // With every connection closed, `serve` returns long before the grace period is over.
    let shutdown = server.shutdown.clone();
    server.finish().await.expect("serve");
    assert!(shutdown.is_over());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_outliving_the_grace_end_with_an_error_event() {
    let mut server = Server::start(NEVER, Duration::from_millis(300)).await;
    let h1 = http1();
    let h2 = h2c();
    let (h1_response, h1_started) = stream_started(&h1, &server, "h1").await;
    let (h2_response, h2_started) = stream_started(&h2, &server, "h2").await;
    server.stop();
    for (response, started) in [(h1_response, h1_started), (h2_response, h2_started)] {
        let body = body_of(response, &started).await;
        assert!(
            body.ends_with("data: {\"error\":{\"message\":\"the gateway is shutting down\"}}\n\n"),
            "{body:?}"
        );
    }
    let shutdown = server.shutdown.clone();
    server.finish().await.expect("serve");
    assert!(shutdown.is_over());
}
