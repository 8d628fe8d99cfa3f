//! Slow, silent and oversized peers over real sockets (G7, G11): a body that trickles in for ever,
//! a client that stops reading its stream, bodies that declare 32 MiB under an address-space
//! limit, and SIGHUP with a stream open. Each bound frees the admission permit it would hold.
//!
//! No timing is asserted: every wait is for a condition, under a generous deadline. The only
//! sleeps are the slow peers' own pace.

mod common;

use std::io;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use futures::{StreamExt, stream};

use common::process::Binary;
use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{sleep, timeout};

/// The simulated model, answering at once and briefly.
const QUICK_SIM: &[&str] =
    &["--sim-first-token-delay", "0ms", "--sim-token-interval", "0ms", "--sim-tokens", "3"];

/// An upstream whose every answer is 128 chat chunks of 64 KiB at once, then silence: 8 MiB,
/// more than the kernel's buffers hold for a client that does not read, and no end. Returns its
/// base URL.
async fn flooding_upstream() -> String {
    async fn answer() -> Response {
        let chunk = Bytes::from(format!("data: {}\n\n", mock_huge_chunk(64 << 10)));
        let flood = stream::iter((0..128).map(move |_| Ok::<_, io::Error>(chunk.clone())));
        let events = flood.chain(stream::pending());
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(events))
            .unwrap()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(answer));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// Whether a request is admitted now: not refused for want of a permit (the flooding upstream
/// answers it 404 at once).
async fn admitted(base: &str) -> bool {
    http().get(format!("{base}/v1/models")).send().await.unwrap().status() != 503
}

/// A request head declaring a body of `length` bytes.
fn head(path: &str, length: u64) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    )
}

/// A whole streaming chat request asking `question`.
fn streaming_request(question: &str) -> Vec<u8> {
    let body = chat_body(question, true).to_string();
    format!("{}{body}", head("/v1/chat/completions", body.len() as u64)).into_bytes()
}

/// Sends `head`, then a byte of its body every 100 ms (well within any `--body-timeout` here),
/// never the whole body, until the server answers; returns its answer.
async fn trickle(base: &str, head: &str) -> RawResponse {
    let mut stream = raw(base, head.as_bytes()).await;
    let answered = timeout(DEADLINE, async {
        loop {
            tokio::select! {
                ready = stream.readable() => return ready.unwrap(),
                // JSON's whitespace, for ever: steady, never silent, never done.
                () = sleep(Duration::from_millis(100)) => stream.write_all(b" ").await.unwrap(),
            }
        }
    });
    answered.await.expect("an answer while the body still trickles in");
    read_response(&mut stream).await
}

/// The status of a small chat request that is not a stream (under admission, as every request).
async fn chat_status(base: &str) -> u16 {
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "another"}], "max_tokens": 2});
    let request =
        http().post(format!("{base}/v1/chat/completions")).header("content-type", "application/json");
    let response = request.body(body.to_string()).send().await.unwrap();
    response.status().as_u16()
}

/// Checks that `response` is the 408 of `--body-deadline`.
fn past_the_deadline(response: &RawResponse) {
    assert_eq!(response.status, 408, "{}", response.head);
    let error = openai_error(&response.json(), "request_timeout");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("--body-deadline"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_for_ever_gets_408_at_its_deadline_and_frees_its_permit() {
    let flags =
        [QUICK_SIM, &["--body-timeout", "1s", "--body-deadline", "2s", "--max-concurrent-requests", "1"]];
    let base = gateway(&flags.concat()).await;
    let base_for_check = base.clone();
    let slow =
        tokio::spawn(async move { trickle(&base_for_check, &head("/v1/chat/completions", 1000)).await });
    eventually("the slow body is admitted", || async {
        metric(&base, "streamflight_in_flight_requests").await == 1
    })
    .await;
    assert_eq!(chat_status(&base).await, 503, "the slow body holds the only permit");

    past_the_deadline(&slow.await.unwrap());
    eventually("the permit is free again", || async { chat_status(&base).await == 200 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_through_body_that_trickles_in_for_ever_gets_408_at_its_deadline() {
    let mock = Mock::start(Mode::Tokens { tokens: 1, interval: Duration::ZERO, gated: false }).await;
    let flags = [
        "--upstream",
        &mock.base,
        "--body-timeout",
        "1s",
        "--body-deadline",
        "2s",
        "--max-concurrent-requests",
        "1",
    ];
    let base = gateway(&flags).await;
    past_the_deadline(&trickle(&base, &head("/v1/files", 1000)).await);
    let passed = || async { http().get(format!("{base}/v1/files")).send().await.unwrap().status() == 201 };
    eventually("the permit is free again", passed).await;
}

/// A connection whose receive buffer is as small as the kernel allows, so that a client that
/// does not read fills it (and the gateway's send buffer) in a moment.
async fn small_window(base: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    timeout(DEADLINE, socket.connect(address(base))).await.expect("connect in time").unwrap()
}

/// Reads until the end of the response's head; returns its status.
async fn status_of(stream: &mut TcpStream) -> u16 {
    let mut received = Vec::new();
    let read = async {
        let mut byte = [0_u8; 1];
        while !received.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed before the head's end");
            received.push(byte[0]);
        }
    };
    timeout(DEADLINE, read).await.expect("a response head in time");
    let head = String::from_utf8_lossy(&received);
    head.split(' ').nth(1).and_then(|status| status.parse().ok()).unwrap_or_else(|| panic!("{head}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_at_the_write_timeout_and_frees_its_permit() {
    let upstream = flooding_upstream().await;
    let flags = ["--upstream", &upstream, "--write-timeout", "1s", "--max-concurrent-requests", "1"];
    let base = gateway(&flags).await;
    let mut stuck = small_window(&base).await;
    stuck.write_all(&streaming_request("never read")).await.unwrap();
    assert_eq!(status_of(&mut stuck).await, 200);
    assert!(!admitted(&base).await, "the stream holds the only permit");

    // From here on the client reads nothing: the stream fills its buffers and the gateway's.
    eventually("the client that stopped reading is cut", || async {
        metric(&base, "streamflight_write_timeouts_total").await == 1
    })
    .await;
    eventually("the permit is free again", || admitted(&base)).await;
    // What was in the buffers, then the end: the gateway closed the connection.
    closed_by_server(&mut stuck).await;
    assert_eq!(metric(&base, "streamflight_in_flight_requests").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_slowly_but_steadily_is_not_cut() {
    let upstream = flooding_upstream().await;
    let base = gateway(&["--upstream", &upstream, "--write-timeout", "1s"]).await;
    let mut slow = small_window(&base).await;
    slow.write_all(&streaming_request("read slowly")).await.unwrap();
    assert_eq!(status_of(&mut slow).await, 200);
    // A few KB every 50 ms, for three times the timeout, from an answer of 8 MiB: the gateway's
    // writes stay stuck for longer than the timeout (its full send buffer is reported writable
    // only once a third of it has drained), yet the client takes bytes all along.
    let mut buffer = [0_u8; 4096];
    for _ in 0..60 {
        sleep(Duration::from_millis(50)).await;
        let read = timeout(DEADLINE, slow.read(&mut buffer)).await.expect("bytes in time");
        assert!(read.is_ok_and(|n| n > 0), "the gateway closed a steady reader's connection");
    }
    assert_eq!(metric(&base, "streamflight_write_timeouts_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_declaring_32_mib_reserve_nothing_under_an_address_space_limit() {
    // 1 GiB of address space: the gateway starts in about a quarter of it, and reserving the
    // declared 32 MiB for each of these bodies would need ten times that.
    const BODIES: usize = 300;
    let mut binary = Binary::start_limited(1 << 20, &["--body-deadline", "2s"]);
    let (_, address) = binary.ready().await;
    let base = format!("http://{address}");
    let mut slow = Vec::with_capacity(BODIES);
    for _ in 0..BODIES {
        let mut stream = raw(&base, head("/v1/chat/completions", 32 << 20).as_bytes()).await;
        stream.write_all(b"{").await.unwrap();
        slow.push(stream);
    }
    eventually("every body is being read", || async {
        metric(&base, "streamflight_in_flight_requests").await == BODIES as u64
    })
    .await;
    let health = http().get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(binary.child.try_wait().unwrap().is_none(), "{}", binary.stderr());

    for stream in &mut slow {
        past_the_deadline(&read_response(stream).await);
    }
    binary.signal(libc::SIGTERM);
    assert!(binary.exit().await.success(), "{}", binary.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_is_logged_and_ignored_and_a_stream_in_flight_completes_whole() {
    let sim = ["--sim-first-token-delay", "0ms", "--sim-token-interval", "20ms", "--sim-tokens", "20"];
    let mut binary = Binary::start(&sim);
    let (_, address) = binary.ready().await;
    // At once: the gateway watches SIGHUP before it says it is ready.
    binary.signal(libc::SIGHUP);
    let base = format!("http://{address}");
    let mut stream = Client::chat(&base, "q", None).await;
    assert_eq!(stream.status, 200);
    let mut events = vec![stream.next().await.expect("a first event")];

    binary.signal(libc::SIGHUP);
    events.extend(stream.rest().await);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    // The role's chunk, a chunk per token, the finish's, then `[DONE]`.
    assert_eq!(events.len(), 23, "{events:?}");
    let health = http().get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    eventually("both SIGHUPs are logged", || {
        let logged = binary.stderr().matches("SIGHUP received: ignored").count();
        async move { logged == 2 }
    })
    .await;

    binary.signal(libc::SIGTERM);
    assert!(binary.exit().await.success(), "{}", binary.stderr());
}
