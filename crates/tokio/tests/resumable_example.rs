//! The resumable example, served on localhost in front of an SSE upstream of the test's own,
//! and exercised over real HTTP: a stream cut mid-way and resumed (`Last-Event-ID`, `?after=N`)
//! is the uninterrupted stream, from the one upstream request, and a resume that cannot be
//! answered is a clear status.

#[path = "../examples/resumable.rs"]
#[allow(dead_code)]
mod resumable;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use streamflight_tokio::sse::{EventsError, SseEvent};
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

/// The upstream's tokens per answer (then `[DONE]`).
const TOKENS: usize = 8;

/// Tokens the upstream sends at once; the others wait for [`Upstream::release`].
const FIRST: usize = 5;

/// The test's upstream: `GET /ask` streams `TOKENS` SSE events as the gate allows, then
/// `data: [DONE]`. It counts its requests.
#[derive(Clone)]
struct Upstream {
    requests: Arc<AtomicUsize>,
    gate: watch::Sender<usize>,
}

impl Upstream {
    /// Lets every token flow.
    fn release(&self) {
        self.gate.send_replace(TOKENS);
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn ask(State(upstream): State<Upstream>) -> Response {
    upstream.requests.fetch_add(1, Ordering::SeqCst);
    let gate = upstream.gate.subscribe();
    let events = futures::stream::unfold((0, gate), |(i, mut gate)| async move {
        if i > TOKENS {
            return None;
        }
        gate.wait_for(|&open| open > i || i == TOKENS).await.expect("the gate outlives the server");
        let frame = if i == TOKENS { "data: [DONE]\n\n".to_owned() } else { format!("data: token {i}\n\n") };
        Some((Ok::<_, std::io::Error>(Bytes::from(frame)), (i + 1, gate)))
    });
    ([("content-type", "text/event-stream")], Body::from_stream(events)).into_response()
}

/// reqwest, in a workspace build, has the gateway's rustls without a default crypto provider.
fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

/// The upstream and the example in front of it, both on localhost.
struct Setup {
    upstream: Upstream,
    base: String,
    http: reqwest::Client,
}

/// One event as a client sees it: its `id` (none for the end), its name and its data.
type Seen = (Option<String>, Option<String>, String);

/// A response's events.
type Events = Pin<Box<dyn Stream<Item = Result<SseEvent, EventsError<reqwest::Error>>> + Send>>;

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A streaming response: its request's id, and its events.
struct Client {
    id: String,
    events: Events,
}

impl Client {
    fn new(response: reqwest::Response) -> Client {
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let id = response.headers().get("x-request-id").map(|id| id.to_str().unwrap().to_owned());
        let events = Box::pin(streamflight_tokio::sse::events(response, 64 * 1024));
        Client { id: id.unwrap_or_default(), events }
    }

    /// The next event; `None` when the stream ends.
    async fn next(&mut self) -> Option<Seen> {
        let event =
            timeout(Duration::from_secs(10), self.events.next()).await.expect("an event within 10 s")?;
        let event = event.expect("a whole event");
        let seen = |field: &Option<Bytes>| field.as_deref().map(text);
        Some((seen(&event.id), seen(&event.name), text(&event.data)))
    }

    /// The next `n` events.
    async fn take(&mut self, n: usize) -> Vec<Seen> {
        let mut events = Vec::new();
        for _ in 0..n {
            events.push(self.next().await.expect("an event, not the end"));
        }
        events
    }

    /// The events up to the end of the stream.
    async fn rest(&mut self) -> Vec<Seen> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

impl Setup {
    async fn new() -> Setup {
        tls_provider();
        let upstream = Upstream { requests: Arc::default(), gate: watch::Sender::new(FIRST) };
        let routes = Router::new().route("/ask", get(ask)).with_state(upstream.clone());
        let base = serve(resumable::app(serve(routes).await)).await;
        Setup { upstream, base, http: reqwest::Client::new() }
    }

    async fn ask(&self) -> Client {
        let request = self.http.get(format!("{}/ask?prompt=hello", self.base)).send();
        Client::new(timeout(Duration::from_secs(10), request).await.expect("headers within 10 s").unwrap())
    }

    /// `GET /requests/{id}/events`, with `last` as `Last-Event-ID`, or `query` appended.
    async fn resume(&self, id: &str, last: Option<&str>, query: &str) -> reqwest::Response {
        let mut request = self.http.get(format!("{}/requests/{id}/events{query}", self.base));
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        timeout(Duration::from_secs(10), request.send()).await.expect("headers within 10 s").unwrap()
    }

    /// Resumes a request whose client was cut: the server sees the cut when the connection
    /// closes, and the resume is `409` until then. Fails after 10 s.
    async fn resume_once_cut(&self, id: &str, last: Option<&str>, query: &str) -> Client {
        let response = eventually("the cut seen, the request detached", || async {
            let response = self.resume(id, last, query).await;
            (response.status() != StatusCode::CONFLICT).then_some(response)
        })
        .await;
        Client::new(response)
    }

    /// The uninterrupted stream of the same question, from a fresh flight.
    async fn uninterrupted(&self) -> Vec<Seen> {
        self.upstream.release();
        self.ask().await.rest().await
    }
}

/// Polls `condition` until it gives a value; fails after 10 s.
async fn eventually<T, F: Future<Output = Option<T>>>(what: &str, mut condition: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(Instant::now() < deadline, "still waiting, after 10 s, for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn id(seen: &Seen) -> &str {
    seen.0.as_deref().expect("an item's event has an id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_and_resumed_with_last_event_id_is_the_uninterrupted_stream() {
    let setup = Setup::new().await;
    let mut cut = setup.ask().await;
    let head = cut.take(3).await;
    assert_eq!(head.iter().map(id).collect::<Vec<_>>(), ["0", "1", "2"]);
    // Still read by its client: not to be resumed by another connection.
    assert_eq!(setup.resume(&cut.id, Some("2"), "").await.status(), StatusCode::CONFLICT);
    let request = cut.id.clone();
    drop(cut); // mid-stream: the connection closes, the request is detached, its flight goes on

    let mut resumed = setup.resume_once_cut(&request, Some("2"), "").await;
    // The tokens after id 2 that the flight has already, then the rest as the upstream sends it.
    let mut tail = resumed.take(2).await;
    assert_eq!(tail.iter().map(id).collect::<Vec<_>>(), ["3", "4"]);
    setup.upstream.release();
    tail.extend(resumed.rest().await);
    assert_eq!(tail.last().unwrap(), &(None, Some("done".into()), "[DONE]".into()));
    assert_eq!(setup.upstream.requests(), 1, "the resumed request read its own flight");
    let again = setup.resume(&request, Some("2"), "").await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND, "an ended request is not resumed");

    let uninterrupted = setup.uninterrupted().await;
    assert_eq!(uninterrupted.len(), TOKENS + 1, "{uninterrupted:?}");
    assert_eq!([head, tail].concat(), uninterrupted, "cut and glued, the same stream");
    assert_eq!(setup.upstream.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_n_resumes_as_last_event_id_does_and_a_resumed_stream_can_be_cut_again() {
    let setup = Setup::new().await;
    let mut cut = setup.ask().await;
    let head = cut.take(2).await;
    let request = cut.id.clone();
    drop(cut);

    let mut second = setup.resume_once_cut(&request, None, "?after=1").await;
    let middle = second.take(2).await;
    assert_eq!(middle.iter().map(id).collect::<Vec<_>>(), ["2", "3"]);
    drop(second);

    let mut third = setup.resume_once_cut(&request, None, "?prompt=ignored&after=3").await;
    let mut tail = third.take(1).await;
    setup.upstream.release();
    tail.extend(third.rest().await);
    assert_eq!(setup.upstream.requests(), 1, "one upstream request for the three connections");
    assert_eq!([head, middle, tail].concat(), setup.uninterrupted().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_that_cannot_be_answered_is_a_clear_status() {
    let setup = Setup::new().await;
    let unknown = setup.resume("r9.9.9", None, "").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert_eq!(setup.resume("not-an-id", None, "").await.status(), StatusCode::NOT_FOUND);

    let mut cut = setup.ask().await;
    let head = cut.take(1).await;
    let request = cut.id.clone();
    drop(cut);
    let bad = setup.resume(&request, Some("one"), "").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.unwrap().contains("Last-Event-ID"));
    let ahead = eventually("the cut seen, the request detached", || async {
        let response = setup.resume(&request, Some("100"), "").await;
        (response.status() != StatusCode::CONFLICT).then_some(response)
    })
    .await;
    assert_eq!(ahead.status(), StatusCode::BAD_REQUEST, "an id the stream has not sent");

    // Refusals change nothing: still detached, and with no id at all, resumed from the start.
    let mut again = Client::new(setup.resume(&request, None, "").await);
    setup.upstream.release();
    let whole = again.rest().await;
    assert_eq!(whole[..1], head[..]);
    assert_eq!(whole, setup.uninterrupted().await);
}

#[test]
fn the_readme_shows_the_example_as_it_is_in_at_most_40_lines() {
    let readme = include_str!("../../../README.md");
    let section = &readme[readme.find("### Resumable SSE with axum").expect("the README's section")..];
    let start = section.find("```rust\n").expect("its code block") + "```rust\n".len();
    let shown = &section[start..start + section[start..].find("```").expect("the block's end")];
    let example = include_str!("../examples/resumable.rs");
    let code = &example[example.find("\nuse ").unwrap() + 1..example.find("#[tokio::main]").unwrap()];
    assert_eq!(shown.trim_end(), code.trim_end(), "the README's block is the example without its main");
    assert!(shown.lines().count() <= 40, "{} lines", shown.lines().count());
}
