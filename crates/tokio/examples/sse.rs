//! An axum server that streams a simulated LLM answer over Server-Sent Events, one upstream
//! generation shared by every identical request in flight, with a cancel endpoint by request id.
//!
//! ```sh
//! cargo run --release -p streamflight-tokio --example sse
//! curl -N 'localhost:3000/ask?prompt=hello'          # twice, in two terminals: one generation
//! curl -X DELETE localhost:3000/requests/<x-request-id>
//! curl localhost:3000/stats
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
// axum's SSE `Event` renamed: `streamflight_tokio::Event` is the other one.
use axum::response::Response;
use axum::response::sse::Event as SseEvent;
use axum::routing::{delete, get};
use futures::Stream;
use serde::Deserialize;
use streamflight_tokio::axum::Answer;
use streamflight_tokio::{Flights, RequestId};

/// How the simulated model behaves.
#[derive(Clone, Copy, Debug)]
pub struct Model {
    /// Time before the first token (the "preparation": queueing, prompt processing).
    pub prepare: Duration,
    /// Time between tokens.
    pub per_token: Duration,
    /// Tokens per answer.
    pub tokens: usize,
}

impl Default for Model {
    fn default() -> Self {
        Model { prepare: Duration::from_millis(300), per_token: Duration::from_millis(50), tokens: 40 }
    }
}

/// The server's state: the manager, the simulated model, and the ids clients may cancel.
#[derive(Clone)]
pub struct App {
    flights: Flights<String, String, String>,
    model: Model,
    /// Live requests by the id shown to clients in `x-request-id`.
    requests: Arc<Mutex<HashMap<String, RequestId>>>,
}

/// The routes: `GET /ask?prompt=`, `DELETE /requests/{id}`, `GET /stats`.
pub fn app(model: Model) -> Router {
    let state = App { flights: Flights::default(), model, requests: Arc::new(Mutex::new(HashMap::new())) };
    Router::new()
        .route("/ask", get(ask))
        .route("/requests/{id}", delete(cancel))
        .route("/stats", get(stats))
        .with_state(state)
}

#[derive(Deserialize)]
struct Ask {
    prompt: String,
}

/// The simulated model: a deterministic answer, one token every `per_token`.
async fn generate(
    prompt: String,
    model: Model,
) -> Result<impl Stream<Item = Result<String, String>> + Send, String> {
    tokio::time::sleep(model.prepare).await;
    let words: Vec<String> = prompt.split_whitespace().map(str::to_owned).collect();
    let ticks = tokio::time::interval(model.per_token);
    Ok(futures::stream::unfold((0, ticks), move |(i, mut ticks)| {
        let word = words.get(i % words.len().max(1)).cloned().unwrap_or_default();
        async move {
            if i == model.tokens {
                return None;
            }
            ticks.tick().await;
            Some((Ok(format!("{word}#{i} ")), (i + 1, ticks)))
        }
    }))
}

async fn ask(State(app): State<App>, Query(Ask { prompt }): Query<Ask>) -> Response {
    let answer = Answer::new(app.flights.request(prompt.clone(), generate(prompt, app.model)));
    let shown = answer.id().to_string();
    app.requests.lock().unwrap().insert(shown.clone(), answer.id());
    let id = HeaderValue::from_str(&shown).expect("ids are ASCII");
    let role = HeaderValue::from_static(answer.role().as_str());
    // The id stops being cancellable when the response stream goes, however it goes.
    let forget = Forget { requests: app.requests.clone(), id: shown };
    // 200 once the first token is there (a failed preparation is a 502 instead), then one
    // event per token and a last `done`, `error` or `cancelled` event.
    answer
        .header("x-request-id", id)
        .header("x-streamflight-role", role)
        .sse(move |token| {
            let _ = &forget;
            SseEvent::default().data(token)
        })
        .await
}

struct Forget {
    requests: Arc<Mutex<HashMap<String, RequestId>>>,
    id: String,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.requests.lock().unwrap().remove(&self.id);
    }
}

async fn cancel(State(app): State<App>, Path(id): Path<String>) -> StatusCode {
    let known = app.requests.lock().unwrap().get(&id).copied();
    match known.map(|id| app.flights.cancel(id)) {
        Some(Ok(())) => StatusCode::NO_CONTENT,
        _ => StatusCode::NOT_FOUND,
    }
}

async fn stats(State(app): State<App>) -> String {
    format!("{:?}\n", app.flights.stats())
}

#[tokio::main]
async fn main() {
    let address = std::env::var("SSE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&address).await.expect("bind the listen address");
    println!("streaming answers on http://{address}/ask?prompt=...");
    axum::serve(listener, app(Model::default())).await.expect("serve");
}
