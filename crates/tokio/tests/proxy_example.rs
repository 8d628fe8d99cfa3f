//! The proxy example, served on localhost in front of an upstream of the test's own, and
//! exercised over real HTTP: identical requests share one upstream request, an upstream
//! failure is a 502 for everyone, and a client that goes away cancels only itself.

#[path = "../examples/proxy.rs"]
#[allow(dead_code)]
mod proxy;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

/// Chunks of a `/slow` body: the first flows at once, chunk `i` once the gate reaches `i`.
const CHUNKS: usize = 5;

/// The whole `/slow` body.
fn slow_body() -> String {
    (0..CHUNKS).map(chunk).collect()
}

fn chunk(i: usize) -> String {
    format!("chunk {i} {}\n", "x".repeat(200))
}

/// The upstream's body when it fails: no client may ever see it.
const FAILURE_PAGE: &str = "upstream's own error page";

/// The test's upstream: `/slow` streams `CHUNKS` chunks as the gate allows, `/fail` answers
/// 500 once the gate is open. It counts its requests and how its `/slow` bodies ended.
#[derive(Clone)]
struct Upstream {
    requests: Arc<AtomicUsize>,
    gate: watch::Sender<usize>,
    /// A `/slow` body was sent to its end.
    finished: Arc<AtomicBool>,
    /// A `/slow` body was dropped before its end: the proxy aborted its request.
    dropped: Arc<AtomicBool>,
}

impl Upstream {
    /// Lets the chunks up to `i` flow (and `/fail` answer, from 1).
    fn release(&self, i: usize) {
        self.gate.send_replace(i);
    }
}

/// Held by a `/slow` body: says, when dropped, whether the body got to its end.
struct Guard {
    upstream: Upstream,
    ended: bool,
}

impl Guard {
    fn end(&mut self) {
        self.ended = true;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let flag = if self.ended { &self.upstream.finished } else { &self.upstream.dropped };
        flag.store(true, Ordering::SeqCst);
    }
}

async fn slow(State(upstream): State<Upstream>) -> Response {
    upstream.requests.fetch_add(1, Ordering::SeqCst);
    let gate = upstream.gate.subscribe();
    let guard = Guard { upstream, ended: false };
    let chunks = futures::stream::unfold((0, gate, guard), |(i, mut gate, mut guard)| async move {
        if i == CHUNKS {
            guard.end();
            return None;
        }
        gate.wait_for(|&open| open >= i).await.expect("the gate outlives the server");
        Some((Ok::<_, std::io::Error>(Bytes::from(chunk(i))), (i + 1, gate, guard)))
    });
    Body::from_stream(chunks).into_response()
}

async fn fail(State(upstream): State<Upstream>) -> Response {
    upstream.requests.fetch_add(1, Ordering::SeqCst);
    let mut gate = upstream.gate.subscribe();
    gate.wait_for(|&open| open >= 1).await.expect("the gate outlives the server");
    (StatusCode::INTERNAL_SERVER_ERROR, FAILURE_PAGE).into_response()
}

/// reqwest, in a workspace build, has the gateway's rustls without a default crypto provider.
fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An upstream and the proxy in front of it, both on localhost.
struct Setup {
    upstream: Upstream,
    proxy: String,
    http: reqwest::Client,
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

impl Setup {
    async fn new() -> Setup {
        tls_provider();
        let upstream = Upstream {
            requests: Arc::default(),
            gate: watch::Sender::new(0),
            finished: Arc::default(),
            dropped: Arc::default(),
        };
        let routes = Router::new().route("/slow", get(slow)).route("/fail", get(fail));
        let base = serve(routes.with_state(upstream.clone())).await;
        let proxy = serve(proxy::app(base)).await;
        Setup { upstream, proxy, http: reqwest::Client::new() }
    }

    /// `GET /answer?q=...` on the proxy, up to its headers.
    async fn ask(&self, q: &str) -> reqwest::Response {
        let request = self.http.get(format!("{}/answer?q={q}", self.proxy)).send();
        timeout(Duration::from_secs(10), request).await.expect("headers within 10 s").expect("GET /answer")
    }

    async fn stats(&self) -> String {
        self.http.get(format!("{}/stats", self.proxy)).send().await.unwrap().text().await.unwrap()
    }

    /// Waits until the proxy's stats contain `expected`.
    async fn stats_reach(&self, expected: &str) {
        eventually(expected, || async { self.stats().await.contains(expected) }).await;
    }

    fn upstream_requests(&self) -> usize {
        self.upstream.requests.load(Ordering::SeqCst)
    }
}

/// Polls `condition` until it holds; fails after 10 s.
async fn eventually<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "still waiting, after 10 s, for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers()[name].to_str().unwrap().to_owned()
}

/// The first bytes of a 200 body: proof that its client is mid-stream.
async fn first_bytes(response: &mut reqwest::Response) -> Bytes {
    let chunk = timeout(Duration::from_secs(10), response.chunk()).await.expect("bytes within 10 s");
    let chunk = chunk.expect("a body chunk").expect("not the end of the body");
    assert!(chunk0().starts_with(&chunk[..]), "{chunk:?} starts the first chunk");
    chunk
}

fn chunk0() -> Bytes {
    Bytes::from(chunk(0))
}

async fn rest(response: reqwest::Response) -> Bytes {
    timeout(Duration::from_secs(10), response.bytes()).await.expect("the body within 10 s").expect("body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_identical_requests_make_one_upstream_request_and_get_the_same_body() {
    let setup = Setup::new().await;
    let asks = (0..10).map(|_| setup.ask("slow"));
    // Every client has its headers (so is on the flight) while the upstream holds its body back.
    let responses = futures::future::join_all(asks).await;
    let roles: Vec<String> = responses.iter().map(|r| header(r, "x-streamflight-role")).collect();
    let mut ids: Vec<String> = responses.iter().map(|r| header(r, "x-request-id")).collect();
    assert!(responses.iter().all(|r| r.status() == 200));
    assert_eq!(roles.iter().filter(|role| *role == "leader").count(), 1, "one leader: {roles:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10, "ten requests, ten ids: {ids:?}");

    setup.upstream.release(CHUNKS);
    let bodies = futures::future::join_all(responses.into_iter().map(rest)).await;
    for body in &bodies {
        assert_eq!(std::str::from_utf8(body).unwrap(), slow_body(), "every client got the whole body");
    }
    assert_eq!(setup.upstream_requests(), 1, "one upstream request for ten clients");
    eventually("the upstream body sent to its end", || async {
        setup.upstream.finished.load(Ordering::SeqCst)
    })
    .await;
    setup.stats_reach("requests: 10, flights: 1, joined: 9, cancelled: 0, aborted: 0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_500_is_a_502_for_every_client_with_nothing_of_the_upstream() {
    let setup = Setup::new().await;
    let answers = async {
        let mut answers = Vec::new();
        for response in futures::future::join_all((0..3).map(|_| setup.ask("fail"))).await {
            let (status, kind) = (response.status(), header(&response, "content-type"));
            answers.push((status, kind, response.text().await.expect("the error body")));
        }
        answers
    };
    // All three wait on one flight whose upstream has not answered yet: then it fails.
    let release = async {
        setup.stats_reach("requests: 3, flights: 1, joined: 2").await;
        setup.upstream.release(1);
    };
    let (answers, ()) = timeout(Duration::from_secs(20), async { tokio::join!(answers, release) })
        .await
        .expect("answers within 20 s");
    for (status, kind, body) in answers {
        // The status says the upstream failed from the first byte on: no 200 cut short.
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert!(kind.starts_with("text/plain"), "{kind}");
        assert_eq!(body, "the upstream failed", "a reason, not the error's text (it names the URL)");
        assert!(!body.contains(FAILURE_PAGE), "none of the upstream's bytes: {body}");
    }
    assert_eq!(setup.upstream_requests(), 1, "one upstream request for the three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_leaves_the_other_its_whole_body() {
    let setup = Setup::new().await;
    let mut gone = setup.ask("slow").await;
    let mut stays = setup.ask("slow").await;
    first_bytes(&mut gone).await;
    let head = first_bytes(&mut stays).await;
    drop(gone); // mid-stream: its connection closes, and the proxy sees it before the upstream goes on
    setup.stats_reach("requests: 2, flights: 1, joined: 1, cancelled: 1, aborted: 0").await;

    setup.upstream.release(CHUNKS);
    let body = [head, rest(stays).await].concat();
    assert_eq!(String::from_utf8(body).unwrap(), slow_body(), "the client that stayed got the whole body");
    assert_eq!(setup.upstream_requests(), 1);
    eventually("the upstream body sent to its end", || async {
        setup.upstream.finished.load(Ordering::SeqCst)
    })
    .await;
    assert!(!setup.upstream.dropped.load(Ordering::SeqCst), "the upstream request was not aborted");
    setup.stats_reach("cancelled: 1, aborted: 0,").await;
    setup.stats_reach("active_flights: 0, active_requests: 0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_client_that_goes_away_aborts_the_upstream_request() {
    let setup = Setup::new().await;
    let mut lone = setup.ask("slow").await;
    assert_eq!(header(&lone, "x-streamflight-role"), "leader");
    first_bytes(&mut lone).await;
    drop(lone); // mid-stream, and nobody else listens
    eventually("the upstream body dropped", || async { setup.upstream.dropped.load(Ordering::SeqCst) }).await;
    assert!(!setup.upstream.finished.load(Ordering::SeqCst), "aborted before its end");
    assert_eq!(setup.upstream_requests(), 1);
    setup.stats_reach("cancelled: 1, aborted: 1,").await;
    setup.stats_reach("active_flights: 0, active_requests: 0").await;
}
