//! The observer over real sockets: an axum server whose manager has an observer serves identical
//! requests, and the observer's counts are the server's story (one flight, every other request joined, done).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use streamflight_tokio::axum::Answer;
use streamflight_tokio::{
    Config, FlightId, FlightSummary, Flights, Observer, Outcome, RequestEvent, RequestId, Role,
};
use tokio::sync::watch;
use tokio::time::Instant;

/// Identical requests in the air at once.
const CLIENTS: u64 = 20;
/// Chunks of the one answer.
const CHUNKS: u64 = 5;

/// Counts what the observer heard.
#[derive(Default)]
struct Counts {
    started: AtomicU64,
    first_items: AtomicU64,
    leaders: AtomicU64,
    joined: AtomicU64,
    finished: AtomicU64,
    /// Every flight's end: its outcome, items and requests served.
    ended: Mutex<Vec<(Outcome, u64, u64)>>,
}

impl Observer for Counts {
    fn flight_started(&self, _: FlightId) {
        self.started.fetch_add(1, SeqCst);
    }

    fn first_item(&self, _: FlightId) {
        self.first_items.fetch_add(1, SeqCst);
    }

    fn flight_ended(&self, _: FlightId, summary: FlightSummary) {
        self.ended.lock().unwrap().push((summary.outcome, summary.items, summary.served));
    }

    fn request(&self, _: RequestId, event: RequestEvent) {
        match event {
            RequestEvent::Joined { role: Role::Leader, .. } => self.leaders.fetch_add(1, SeqCst),
            RequestEvent::Joined { .. } => self.joined.fetch_add(1, SeqCst),
            RequestEvent::Finished => self.finished.fetch_add(1, SeqCst),
            _ => 0,
        };
    }
}

/// The server's state: its manager, and the gate the upstream's chunks after the first wait on.
#[derive(Clone)]
struct Server {
    flights: Flights<String, Bytes, Infallible>,
    gate: watch::Sender<bool>,
}

/// Answers the request's body from the flight for it: a first chunk at once, the rest once the gate opens.
async fn answer(State(server): State<Server>, body: String) -> Response {
    let gate = server.gate.subscribe();
    let upstream = async move {
        let chunks = futures::stream::unfold(0, move |i| {
            let mut gate = gate.clone();
            async move {
                if i > 0 {
                    gate.wait_for(|open| *open).await.ok()?;
                }
                (i < CHUNKS).then(|| (Ok(Bytes::from(format!("chunk {i}\n"))), i + 1))
            }
        });
        Ok(chunks)
    };
    Answer::new(server.flights.request(body, upstream)).body().await
}

/// Waits until `condition` holds, for ten seconds at most.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `flights` served on a port of its own.
async fn serve(flights: Flights<String, Bytes, Infallible>) -> (SocketAddr, watch::Sender<bool>) {
    // reqwest, in a workspace build, has the gateway's rustls without a default crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let gate = watch::Sender::new(false);
    let app = Router::new().route("/answer", post(answer)).with_state(Server { flights, gate: gate.clone() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_counts_one_flight_and_every_request_it_served() {
    let counts = Arc::new(Counts::default());
    let flights = Flights::new(Config::default().observer(counts.clone()));
    let (address, gate) = serve(flights.clone()).await;
    let client = reqwest::Client::new();
    let asked: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let request = client.post(format!("http://{address}/answer")).body("the same prompt");
            tokio::spawn(async move { request.send().await.unwrap().text().await.unwrap() })
        })
        .collect();
    until("every request to be in the flight", || flights.stats().requests == CLIENTS).await;
    gate.send_replace(true);
    let expected: String = (0..CHUNKS).map(|i| format!("chunk {i}\n")).collect();
    for got in asked {
        assert_eq!(got.await.unwrap(), expected);
    }

    // The flight's end is told before any reader sees it; each request's after its end was read.
    until("every request to be told finished", || counts.finished.load(SeqCst) == CLIENTS).await;
    assert_eq!(counts.started.load(SeqCst), 1, "one flight");
    assert_eq!(counts.first_items.load(SeqCst), 1);
    assert_eq!((counts.leaders.load(SeqCst), counts.joined.load(SeqCst)), (1, CLIENTS - 1));
    assert_eq!(*counts.ended.lock().unwrap(), [(Outcome::Done, CHUNKS, CLIENTS)], "ended done, serving all");
    let stats = flights.stats();
    assert_eq!((stats.flights, stats.joined), (1, CLIENTS - 1), "the observer agrees with the stats");
}
