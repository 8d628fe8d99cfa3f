//! Resumable SSE in front of an SSE upstream: identical requests share one upstream stream, and a
//! client that loses its connection gets the rest of the answer, not a new one.
//!
//! `GET /ask?prompt=...` streams the upstream's `GET $UPSTREAM/ask?prompt=...` (the `sse`
//! example, or any server whose events end with `data: [DONE]`) as numbered events (`id: 0`,
//! `id: 1`, ...). A client that goes away mid-stream is detached for 30 s, its upstream going
//! on; `GET /requests/{id}/events` with its `Last-Event-ID` (or `?after=N`) sends it the events
//! after that one, then the end: the uninterrupted stream, cut and glued. (A real service
//! checks that a resume comes from whoever made the request, as for a cancel.)
//!
//! ```sh
//! SSE_ADDR=127.0.0.1:8000 cargo run -p streamflight-tokio --example sse   # the upstream
//! cargo run -p streamflight-tokio --example resumable    # UPSTREAM and RESUMABLE_ADDR change the defaults
//! curl -iN 'localhost:3000/ask?prompt=why%20is%20the%20sky%20blue'   # x-request-id: r0.0.0; Ctrl-C after id: 3
//! curl -N -H 'Last-Event-ID: 3' localhost:3000/requests/r0.0.0/events  # from id: 4 to the end
//! ```

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, request::Parts};
use axum::response::{Response, sse::Event};
use axum::{Router, routing::get};
use futures::{StreamExt, future::ready};
use streamflight_tokio::axum::{Answer, ResumeRefused, resume};
use streamflight_tokio::sse::{self, EventsError};
use streamflight_tokio::{Config, Flights};

#[derive(Clone)]
struct App {
    flights: Flights<Option<String>, String, EventsError<reqwest::Error>>,
    upstream: String,
}

/// `GET /ask?prompt=` and `GET /requests/{id}/events`.
pub fn app(upstream: String) -> Router {
    let flights = Flights::new(Config::default().resume_window(std::time::Duration::from_secs(30)));
    let routes = Router::new().route("/ask", get(ask)).route("/requests/{id}/events", get(events));
    routes.with_state(App { flights, upstream })
}

async fn ask(State(app): State<App>, RawQuery(query): RawQuery) -> Response {
    let url = format!("{}/ask?{}", app.upstream, query.as_deref().unwrap_or_default());
    // Run by the flight's leader only: the upstream's events' data, up to its `[DONE]`.
    let upstream = async move {
        let response = reqwest::get(url).await?.error_for_status()?;
        let events = sse::events(response, 64 * 1024);
        let text = events.map(|event| event.map(|event| String::from_utf8_lossy(&event.data).into_owned()));
        Ok(text.take_while(|text| ready(!matches!(text, Ok(text) if text == "[DONE]"))))
    };
    let answer = Answer::new(app.flights.request(query, upstream));
    let id = HeaderValue::from_str(&answer.id().to_string()).expect("ids are ASCII");
    answer.header("x-request-id", id).sse_resumable(|text| Event::default().data(text)).await
}

async fn events(app: State<App>, Path(id): Path<String>, req: Parts) -> Result<Response, ResumeRefused> {
    let answer = resume(&app.flights, id.parse()?, &req)?;
    Ok(answer.sse_resumable(|text| Event::default().data(text)).await)
}

#[tokio::main]
async fn main() {
    // Only needed when reqwest is built with TLS but no crypto provider (a whole-workspace build).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let upstream = std::env::var("UPSTREAM").unwrap_or_else(|_| "http://127.0.0.1:8000".into());
    let address = std::env::var("RESUMABLE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&address).await.expect("bind the listen address");
    println!("resumable answers from {upstream} on http://{address}/ask?prompt=...");
    axum::serve(listener, app(upstream)).await.expect("serve");
}
