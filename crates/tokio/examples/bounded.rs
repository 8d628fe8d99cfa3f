//! Bounds in bytes in front of a model: each answer is capped in bytes, and finished answers
//! linger for late requests within one byte budget, the oldest evicted first.
//!
//! `GET /ask?prompt=...` streams the (simulated) model's answer; its `x-streamflight-role`
//! says whether the request led its flight or joined one, a lingering answer included.
//! `GET /stats` shows the manager's counters: flights started, requests served by a lingering
//! answer, answers evicted to stay within the budget.
//!
//! ```sh
//! cargo run -p streamflight-tokio --example bounded          # BOUNDED_ADDR changes the address
//! curl -i 'localhost:3000/ask?prompt=hello'                  # x-streamflight-role: leader
//! curl -i 'localhost:3000/ask?prompt=hello'                  # joiner: the answer, lingering
//! curl localhost:3000/stats                                  # flights 1 lingered 1 evicted 0
//! ```

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::HeaderValue;
use axum::response::Response;
use axum::{Router, routing::get};
use bytes::Bytes;
use streamflight_tokio::axum::Answer;
use streamflight_tokio::{Config, Flights, Overflow};

#[derive(Clone)]
struct App {
    flights: Flights<String, Bytes, std::io::Error>,
}

/// `GET /ask?prompt=` and `GET /stats`; finished answers hold `linger_budget` bytes in all.
pub fn app(linger_budget: usize) -> Router {
    let config = Config::default()
        .weigher(|chunk: &Bytes| chunk.len())
        .flight_bytes(64 << 10) // each answer: its newest 64 KiB...
        .overflow(Overflow::Lagged) // ...and a late joiner of a longer one is told what it missed
        .linger(Duration::from_secs(60)) // finished answers serve late requests for a minute...
        .linger_budget(linger_budget); // ...within this many bytes in all, the oldest out first
    let routes = Router::new().route("/ask", get(ask)).route("/stats", get(stats));
    routes.with_state(App { flights: Flights::new(config) })
}

async fn ask(State(app): State<App>, RawQuery(query): RawQuery) -> Response {
    let prompt = query.unwrap_or_default();
    // The model, run by the flight's leader only: the prompt, four times, a line at a time.
    let tokens: Vec<_> = (0..4).map(|_| Ok(Bytes::from(format!("{prompt}\n")))).collect();
    let upstream = async move { Ok(futures::stream::iter(tokens)) };
    let answer = Answer::new(app.flights.request(prompt, upstream));
    let role = HeaderValue::from_static(answer.role().as_str());
    answer.header("x-streamflight-role", role).body().await
}

async fn stats(State(app): State<App>) -> String {
    let stats = app.flights.stats();
    format!("flights {} lingered {} evicted {}\n", stats.flights, stats.lingered, stats.evicted)
}

#[tokio::main]
async fn main() {
    let address = std::env::var("BOUNDED_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&address).await.expect("bind the listen address");
    println!("bounded answers on http://{address}/ask?prompt=...");
    axum::serve(listener, app(1 << 20)).await.expect("serve");
}
