//! The SSE example, served on localhost and exercised over real HTTP: two identical
//! requests share one generation, and cancelling one by id leaves the other streaming.

#[path = "../examples/sse.rs"]
#[allow(dead_code)]
mod sse;

use std::time::Duration;

use futures::StreamExt;
use streamflight_tokio::sse::{EventsError, SseEvent};

/// The events of a response body, as the library's bounded decoder reads them.
type Events =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<SseEvent, EventsError<reqwest::Error>>> + Send>>;

/// One client's view of an SSE response: its id, role, and events as `(event, data)`.
struct Client {
    id: String,
    role: String,
    events: Events,
}

/// reqwest, in a workspace build, has the gateway's rustls without a default crypto provider.
fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Client {
    async fn ask(base: &str, prompt: &str) -> Client {
        tls_provider();
        let response = reqwest::get(format!("{base}/ask?prompt={prompt}")).await.expect("GET /ask");
        assert_eq!(response.status(), 200);
        let header = |name| response.headers()[name].to_str().unwrap().to_owned();
        let (id, role) = (header("x-request-id"), header("x-streamflight-role"));
        Client { id, role, events: Box::pin(streamflight_tokio::sse::events(response, 64 * 1024)) }
    }

    /// The next SSE event (keep-alive comments are no events); `None` when the stream closes.
    async fn next(&mut self) -> Option<(String, String)> {
        let event = tokio::time::timeout(Duration::from_secs(10), self.events.next())
            .await
            .expect("an SSE event within 10 s")?
            .expect("a whole event");
        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
        Some((event.name.as_deref().map_or_else(|| "message".to_owned(), text), text(&event.data)))
    }

    async fn rest(&mut self) -> Vec<(String, String)> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

async fn serve(model: sse::Model) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, sse::app(model)).await.unwrap() });
    format!("http://{address}")
}

async fn stats(base: &str) -> String {
    tls_provider();
    reqwest::get(format!("{base}/stats")).await.unwrap().text().await.unwrap()
}

fn model() -> sse::Model {
    sse::Model { prepare: Duration::from_millis(100), per_token: Duration::from_millis(5), tokens: 30 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_identical_requests_share_one_generation() {
    let base = serve(model()).await;
    let mut first = Client::ask(&base, "why%20is%20the%20sky%20blue").await;
    // The first response head waits for the first token (the status depends on it), so the
    // second request arrives while the flight streams: it joins, and replays from the start.
    let mut second = Client::ask(&base, "why%20is%20the%20sky%20blue").await;
    assert_eq!((first.role.as_str(), second.role.as_str()), ("leader", "joiner"));
    let (a, b) = (first.rest().await, second.rest().await);
    assert_eq!(a.len(), 31, "30 tokens then done: {a:?}");
    assert_eq!(a, b, "both clients saw the same stream");
    assert_eq!(a[0], ("message".into(), "why#0 ".into()));
    assert_eq!(a.last().unwrap(), &("done".into(), "[DONE]".into()));
    let stats = stats(&base).await;
    assert!(stats.contains("requests: 2, flights: 1, joined: 1"), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_one_client_by_id_leaves_the_other_streaming() {
    let base = serve(sse::Model { per_token: Duration::from_millis(20), ..model() }).await;
    let mut leader = Client::ask(&base, "hello").await;
    let mut follower = Client::ask(&base, "hello").await;
    assert_eq!(leader.next().await.unwrap().0, "message");

    tls_provider();
    let http = reqwest::Client::new();
    let cancel = |id: String| http.delete(format!("{base}/requests/{id}")).send();
    assert_eq!(cancel(leader.id.clone()).await.unwrap().status(), 204);
    // Tokens already on their way when the cancel came arrive first; then the end.
    let mut end = leader.next().await;
    while end.as_ref().is_some_and(|(event, _)| event == "message") {
        end = leader.next().await;
    }
    assert_eq!(end, Some(("cancelled".into(), "cancelled".into())));
    assert_eq!(leader.next().await, None, "the cancelled client's stream closes");
    assert_eq!(cancel(leader.id.clone()).await.unwrap().status(), 404, "a second cancel finds nothing");

    let rest = follower.rest().await;
    assert_eq!(rest.len(), 31, "the follower got every token and done: {rest:?}");
    assert_eq!(rest.last().unwrap().0, "done");
    let stats = stats(&base).await;
    assert!(stats.contains("cancelled: 1, aborted: 0"), "{stats}");
}
