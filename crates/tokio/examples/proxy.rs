//! The first ten minutes: a streaming HTTP proxy in which every identical request in flight
//! shares one upstream request.
//!
//! `GET /answer?q=PATH` streams the upstream's `GET $UPSTREAM/PATH` back, byte for byte. The
//! first request for a `q` leads a flight and makes the one upstream request; identical
//! requests that arrive while it streams join it and get the whole body from its first byte.
//! A client that goes away cancels only itself; the upstream request is aborted when nobody
//! is left. The error type is `reqwest::Error`, which is not `Clone`: every client of a
//! failed flight shares the one error. [`Answer`] picks the status on the first event: a
//! `200` and the stream once a first chunk is there, a `502` if the upstream failed first (a
//! 500, a refused connection), never a `200` cut short.
//!
//! ```sh
//! SSE_ADDR=127.0.0.1:8000 cargo run -p streamflight-tokio --example sse  # a slow upstream
//! cargo run -p streamflight-tokio --example proxy     # UPSTREAM and PROXY_ADDR change the defaults
//! curl -iN 'localhost:3000/answer?q=ask?prompt=hi'    # twice at once: one upstream request
//! curl -i 'localhost:3000/answer?q=missing'           # 502: the upstream said 404
//! curl localhost:3000/stats                           # requests: 3, flights: 2, joined: 1, ...
//! curl localhost:8000/stats                           # the upstream's: requests: 1
//! ```

use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use serde::Deserialize;
use streamflight_tokio::Flights;
use streamflight_tokio::axum::Answer;

/// The proxy's state: the manager and the upstream's base URL.
#[derive(Clone)]
struct Proxy {
    flights: Flights<String, Bytes, reqwest::Error>,
    upstream: String,
}

/// The routes: `GET /answer?q=PATH` (the upstream's `PATH`, shared) and `GET /stats`.
pub fn app(upstream: String) -> Router {
    let proxy = Proxy { flights: Flights::default(), upstream };
    Router::new().route("/answer", get(answer)).route("/stats", get(stats)).with_state(proxy)
}

#[derive(Deserialize)]
struct Ask {
    q: String,
}

async fn answer(State(proxy): State<Proxy>, Query(Ask { q }): Query<Ask>) -> Response {
    let url = format!("{}/{q}", proxy.upstream);
    // Run by the flight's leader only; the others' copies are dropped unpolled.
    let upstream = async move { Ok(reqwest::get(url).await?.error_for_status()?.bytes_stream()) };
    let answer = Answer::new(proxy.flights.request(q, upstream));
    let id = HeaderValue::from_str(&answer.id().to_string()).expect("ids are ASCII");
    let role = HeaderValue::from_static(answer.role().as_str());
    // Waits for the first event: 200 and the bytes, or 502 if the upstream failed first.
    answer.header("x-request-id", id).header("x-streamflight-role", role).body().await
}

async fn stats(State(proxy): State<Proxy>) -> String {
    format!("{:?}\n", proxy.flights.stats())
}

#[tokio::main]
async fn main() {
    // Only needed when reqwest is built with TLS but no crypto provider (a whole-workspace build).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let upstream = std::env::var("UPSTREAM").unwrap_or_else(|_| "http://127.0.0.1:8000".into());
    let address = std::env::var("PROXY_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&address).await.expect("bind the listen address");
    println!("proxying {upstream} on http://{address}/answer?q=...");
    axum::serve(listener, app(upstream)).await.expect("serve");
}
