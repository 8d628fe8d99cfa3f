//! The tower layer over real sockets: an unchanged axum handler behind it, served on localhost.
//! Identical requests in flight make one handler call; different ones make their own; a body
//! over the bound passes through, whole.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::post;
use bytes::Bytes;
use streamflight_tokio::Config;
use streamflight_tokio::tower::CoalesceLayer;
use tokio::sync::watch;
use tokio::time::Instant;

/// Chunks of an answer after its first: they flow once the gate opens.
const CHUNKS: usize = 4;

/// The handler's state: how often it was called, the gate its bodies wait on, and how many of
/// its bodies were dropped before their end (the layer let go of them).
#[derive(Clone)]
struct Handler {
    calls: Arc<AtomicUsize>,
    gate: watch::Sender<bool>,
    cut: Arc<AtomicUsize>,
}

/// Held by a body while it streams: counts it as cut if dropped before its last chunk.
struct Streaming {
    cut: Arc<AtomicUsize>,
    /// Chunks sent so far, of `CHUNKS + 1`.
    sent: usize,
}

impl Drop for Streaming {
    fn drop(&mut self) {
        if self.sent <= CHUNKS {
            self.cut.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The answer to `body`: a first chunk that echoes it, then `CHUNKS` more.
fn expected(body: &str) -> String {
    let mut answer = format!("you sent {} bytes: {body}\n", body.len());
    for i in 0..CHUNKS {
        answer.push_str(&format!("chunk {i}\n"));
    }
    answer
}

/// An ordinary streaming handler that knows nothing of the layer: it counts its calls and
/// streams its answer, its first chunk at once and the rest once the gate is open.
async fn answer(State(handler): State<Handler>, body: String) -> Body {
    handler.calls.fetch_add(1, Ordering::SeqCst);
    let first = format!("you sent {} bytes: {body}\n", body.len());
    let gate = handler.gate.subscribe();
    let streaming = Streaming { cut: handler.cut.clone(), sent: 0 };
    let chunks = futures::stream::unfold((0, streaming), move |(i, mut streaming)| {
        let mut gate = gate.clone();
        let first = first.clone();
        async move {
            let chunk = match i {
                0 => first,
                _ if i <= CHUNKS => {
                    gate.wait_for(|open| *open).await.ok()?;
                    format!("chunk {}\n", i - 1)
                }
                _ => return None,
            };
            streaming.sent = i + 1;
            Some((Ok::<_, Infallible>(Bytes::from(chunk)), (i + 1, streaming)))
        }
    });
    Body::from_stream(chunks)
}

/// A handler that panics once its gate is open: a failure before the response head.
async fn panics(State(handler): State<Handler>) -> Body {
    handler.calls.fetch_add(1, Ordering::SeqCst);
    let _ = handler.gate.subscribe().wait_for(|open| *open).await;
    panic!("the handler failed (a panic the test makes on purpose)");
}

/// The handler behind `layer`, served on a port of its own.
async fn serve(layer: CoalesceLayer) -> (SocketAddr, Handler) {
    // reqwest, in a workspace build, has the gateway's rustls without a default crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let handler = Handler { calls: Arc::default(), gate: watch::Sender::new(false), cut: Arc::default() };
    let app = Router::new()
        .route("/answer", post(answer))
        .route("/panic", post(panics))
        .with_state(handler.clone())
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, handler)
}

/// Waits until `condition` holds, for ten seconds at most.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What a client got: the role header (if any), the status, the body.
#[derive(Debug)]
struct Got {
    role: Option<String>,
    status: u16,
    body: String,
}

/// Sends `body` to the server at `address`, in a task of its own.
fn ask(client: &reqwest::Client, address: SocketAddr, body: &str) -> tokio::task::JoinHandle<Got> {
    ask_at(client, address, "/answer", body)
}

/// Sends `body` to `path` on the server at `address`, in a task of its own.
fn ask_at(
    client: &reqwest::Client,
    address: SocketAddr,
    path: &str,
    body: &str,
) -> tokio::task::JoinHandle<Got> {
    let request = client.post(format!("http://{address}{path}")).body(body.to_owned());
    tokio::spawn(async move {
        let response = request.send().await.unwrap();
        let role =
            response.headers().get("x-streamflight-role").map(|role| role.to_str().unwrap().to_owned());
        let status = response.status().as_u16();
        Got { role, status, body: response.text().await.unwrap() }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_identical_requests_make_one_call() {
    let layer = CoalesceLayer::new(Config::default());
    let (address, handler) = serve(layer.clone()).await;
    let client = reqwest::Client::new();
    let body = r#"{"prompt": "why is the sky blue?", "seed": 123456789012345678901234567890}"#;
    let asked: Vec<_> = (0..100).map(|_| ask(&client, address, body)).collect();
    until("every request to be in the flight", || layer.stats().requests == 100).await;
    handler.gate.send_replace(true);

    let mut roles = Vec::new();
    for got in asked {
        let got = got.await.unwrap();
        assert_eq!(got.status, 200);
        assert_eq!(got.body, expected(body), "every body is the handler's");
        roles.push(got.role.expect("a coalesced response says its role"));
    }
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1, "one handler call for all");
    assert_eq!(roles.iter().filter(|role| *role == "leader").count(), 1, "{roles:?}");
    assert!(roles.iter().all(|role| ["leader", "follower", "joiner"].contains(&role.as_str())), "{roles:?}");
    assert_eq!(layer.stats().flights, 1);
    assert_eq!(layer.stats().joined, 99);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_bodies_make_their_own_calls_and_equal_json_shares_one() {
    let layer = CoalesceLayer::new(Config::default());
    let (address, handler) = serve(layer.clone()).await;
    let client = reqwest::Client::new();
    let (a, same_as_a, b) =
        (r#"{"n": 1.0, "prompt": "hi"}"#, r#"{"prompt":"hi","n":10e-1}"#, r#"{"prompt":"ho","n":1}"#);
    let asked = [ask(&client, address, a), ask(&client, address, b)];
    until("both flights to start", || layer.stats().flights == 2).await;
    let joined = ask(&client, address, same_as_a);
    until("the equal body to join", || layer.stats().requests == 3).await;
    handler.gate.send_replace(true);

    let [got_a, got_b] = asked;
    let (got_a, got_b, joined) = (got_a.await.unwrap(), got_b.await.unwrap(), joined.await.unwrap());
    assert_eq!((got_a.body, got_b.body), (expected(a), expected(b)));
    assert_eq!(joined.body, expected(a), "the same value, so the first one's answer");
    assert_eq!((got_a.role.as_deref(), got_b.role.as_deref()), (Some("leader"), Some("leader")));
    assert!(matches!(joined.role.as_deref(), Some("follower" | "joiner")), "{joined:?}");
    assert_eq!(handler.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_bound_passes_through_whole() {
    let layer = CoalesceLayer::new(Config::default()).body_limit(16);
    let (address, handler) = serve(layer.clone()).await;
    let client = reqwest::Client::new();
    let body = format!(r#"{{"prompt": "{}"}}"#, "long ".repeat(20));
    let asked = [ask(&client, address, &body), ask(&client, address, &body)];
    until("both requests to reach the handler", || handler.calls.load(Ordering::SeqCst) == 2).await;
    handler.gate.send_replace(true);

    for got in asked {
        let got = got.await.unwrap();
        assert_eq!((got.status, got.role), (200, None), "not coalesced: no role");
        assert_eq!(got.body, expected(&body), "the handler got the whole body");
    }
    assert_eq!(layer.stats().requests, 0);

    // Within the bound the same layer coalesces.
    let small = ask(&client, address, "{}").await.unwrap();
    assert_eq!(small.role.as_deref(), Some("leader"));
    assert_eq!(small.body, expected("{}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_before_the_head_is_a_502_for_every_client() {
    let layer = CoalesceLayer::new(Config::default());
    let (address, handler) = serve(layer.clone()).await;
    let client = reqwest::Client::new();
    let asked: Vec<_> = (0..3).map(|_| ask_at(&client, address, "/panic", "{}")).collect();
    until("every request to be in the flight", || layer.stats().requests == 3).await;
    handler.gate.send_replace(true);

    for got in asked {
        let got = got.await.unwrap();
        assert_eq!((got.status, got.body.as_str()), (502, "the inner service panicked"));
        assert!(got.role.is_some(), "a failure says its role too");
    }
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_affects_no_other_and_the_last_one_out_cancels() {
    let layer = CoalesceLayer::new(Config::default());
    let (address, handler) = serve(layer.clone()).await;
    let client = reqwest::Client::new();
    let send = || client.post(format!("http://{address}/answer")).body("{}").send();
    let mut leaver = send().await.unwrap();
    let stayer = send().await.unwrap();
    assert_eq!(stayer.headers()["x-streamflight-role"], "joiner");
    assert_eq!(leaver.chunk().await.unwrap().unwrap(), "you sent 2 bytes: {}\n");
    drop(leaver);
    until("the leaver's request to be cancelled", || layer.stats().cancelled == 1).await;
    handler.gate.send_replace(true);
    assert_eq!(stayer.text().await.unwrap(), expected("{}"), "the leader left: the joiner got it all");
    assert_eq!((handler.calls.load(Ordering::SeqCst), handler.cut.load(Ordering::SeqCst)), (1, 0));

    // Every client of a flight leaves: its inner body is dropped, before its end.
    handler.gate.send_replace(false);
    let (first, second) = (send().await.unwrap(), send().await.unwrap());
    assert_eq!(handler.calls.load(Ordering::SeqCst), 2);
    drop((first, second));
    until("the flight to be aborted", || layer.stats().aborted == 1).await;
    until("the handler's body to be dropped", || handler.cut.load(Ordering::SeqCst) == 1).await;
}
