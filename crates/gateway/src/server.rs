//! The HTTP side: the completion endpoints on top of `Flights`, cancel by id, health and
//! metrics, and the middleware that gives every response its `x-request-id`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use streamflight_tokio::{Event, Failure, Flights, RequestId, Role};
use tracing::Instrument;

use crate::config::Settings;
use crate::key::{Endpoint, Key};
use crate::openai;
use crate::sim;
use crate::upstream::{Chunks, Upstream, UpstreamError};

/// The id a client sees in `x-request-id`: 128 random bits, shown as 32 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientId(u128);

impl ClientId {
    fn random() -> ClientId {
        let mut bytes = [0; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        ClientId(u128::from_le_bytes(bytes))
    }

    fn parse(text: &str) -> Option<ClientId> {
        let hex = text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit());
        hex.then(|| u128::from_str_radix(text, 16).ok().map(ClientId)).flatten()
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// What the handlers share.
pub struct Gateway {
    settings: Settings,
    flights: Flights<Key, Arc<str>, UpstreamError>,
    /// Live completion requests by the id their client was shown.
    requests: Mutex<HashMap<ClientId, RequestId>>,
    /// Where flights go when `--upstream` is given.
    upstream: Option<Upstream>,
    /// Flights whose upstream failed.
    upstream_errors: Arc<AtomicU64>,
}

impl Gateway {
    /// The shared state for `settings`.
    pub fn new(settings: Settings) -> Gateway {
        let mut config = streamflight_tokio::Config::default();
        if let Some(limit) = settings.history_limit {
            config = config.history_limit(limit);
        }
        let upstream_errors = Arc::new(AtomicU64::new(0));
        let upstream = settings.upstream.as_ref().map(|base| Upstream {
            client: reqwest::Client::builder()
                .connect_timeout(settings.connect_timeout)
                .build()
                .expect("an HTTP client without TLS always builds"),
            base: base.trim_end_matches('/').to_owned(),
            response_timeout: settings.response_timeout,
            idle_timeout: settings.idle_timeout,
            errors: Arc::clone(&upstream_errors),
        });
        Gateway {
            settings,
            flights: Flights::new(config),
            requests: Mutex::new(HashMap::new()),
            upstream,
            upstream_errors,
        }
    }

    fn requests(&self) -> MutexGuard<'_, HashMap<ClientId, RequestId>> {
        self.requests.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How a flight for `key` starts, should this request lead it.
    fn start(
        &self,
        key: Key,
        body: Map<String, Value>,
        authorization: Option<HeaderValue>,
    ) -> BoxFuture<'static, Result<Chunks, UpstreamError>> {
        match &self.upstream {
            Some(upstream) => {
                let api_key = self.settings.upstream_api_key.as_ref();
                let api_key = api_key.and_then(|k| HeaderValue::from_str(&format!("Bearer {k}")).ok());
                Box::pin(upstream.clone().open(key.endpoint, body, api_key.or(authorization)))
            }
            None => {
                let pace = sim::Pace {
                    first_token_delay: self.settings.sim_first_token_delay,
                    token_interval: self.settings.sim_token_interval,
                    tokens: self.settings.sim_tokens,
                };
                Box::pin(sim::answer(key, Value::Object(body), pace))
            }
        }
    }
}

type Shared = Arc<Gateway>;

/// Gives every request an id, logs it, and puts it in the response's `x-request-id`.
pub async fn assign_id(mut request: Request, next: Next) -> Response {
    let id = ClientId::random();
    request.extensions_mut().insert(id);
    let span = tracing::info_span!("http", request_id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = next.run(request).instrument(span).await;
    let shown = HeaderValue::from_str(&id.to_string()).expect("hex is a valid header value");
    response.headers_mut().insert("x-request-id", shown);
    response
}

/// `POST /v1/chat/completions`.
pub async fn chat(
    State(gateway): State<Shared>,
    Extension(id): Extension<ClientId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    complete(gateway, Endpoint::Chat, id, headers, body).await
}

/// `POST /v1/completions`.
pub async fn completions(
    State(gateway): State<Shared>,
    Extension(id): Extension<ClientId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    complete(gateway, Endpoint::Completions, id, headers, body).await
}

/// Why a request body was refused: answered as a 4xx with an OpenAI error body.
struct Invalid {
    status: StatusCode,
    message: String,
    code: &'static str,
}

impl Invalid {
    fn bad(message: impl Into<String>, code: &'static str) -> Invalid {
        Invalid { status: StatusCode::BAD_REQUEST, message: message.into(), code }
    }
}

impl IntoResponse for Invalid {
    fn into_response(self) -> Response {
        openai::error(self.status, &self.message, "invalid_request_error", self.code)
    }
}

/// Checks a completion request body; the parsed object, or why it is refused.
fn parse(endpoint: Endpoint, body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, Invalid> {
    let bytes = body.map_err(|rejection| {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "request_too_large" } else { "invalid_body" };
        Invalid { status, message: rejection.body_text(), code }
    })?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Invalid::bad(format!("the body is not valid JSON: {e}"), "invalid_json"))?;
    let Value::Object(body) = value else {
        return Err(Invalid::bad("the body must be a JSON object", "invalid_json"));
    };
    let (field, valid) = match endpoint {
        Endpoint::Chat => {
            ("messages", body.get("messages").is_some_and(|m| m.as_array().is_some_and(|a| !a.is_empty())))
        }
        Endpoint::Completions => {
            ("prompt", body.get("prompt").is_some_and(|p| p.is_string() || p.is_array()))
        }
    };
    if !valid {
        let what = if endpoint == Endpoint::Chat { "a non-empty array" } else { "a string or an array" };
        return Err(Invalid::bad(
            format!("`{field}` is required and must be {what}"),
            "missing_required_parameter",
        ));
    }
    if body.get("stream").is_some_and(|s| !s.is_boolean() && !s.is_null()) {
        return Err(Invalid::bad("`stream` must be a boolean", "invalid_type"));
    }
    Ok(body)
}

async fn complete(
    gateway: Shared,
    endpoint: Endpoint,
    id: ClientId,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match parse(endpoint, body) {
        Ok(body) => body,
        Err(invalid) => return invalid.into_response(),
    };
    let streaming = body.get("stream") == Some(&Value::Bool(true));
    let authorization = headers.get(AUTHORIZATION).cloned();
    let tenant = authorization.as_ref().map(HeaderValue::as_bytes);
    let key = Key::new(endpoint, &body, tenant, gateway.settings.share_across_tenants);
    let digest = key.digest();
    let start = gateway.start(key.clone(), body, authorization);
    let subscription = gateway.flights.request(key, start);
    let role = subscription.role();
    gateway.requests().insert(id, subscription.id());
    tracing::info!(request_id = %id, ?role, key = %digest, streaming, "admitted");
    let mut live = Live { gateway: Arc::clone(&gateway), id, role, ended: false };

    if streaming {
        let events = subscription.map(move |event| {
            if event.is_end() {
                live.ended(&event);
            }
            Ok::<_, Infallible>(sse(event))
        });
        let mut response = axum::response::Sse::new(events).keep_alive(KeepAlive::default()).into_response();
        response.headers_mut().insert("x-streamflight-role", role_header(role));
        return response;
    }

    let mut subscription = subscription;
    let mut chunks = Vec::new();
    let end = loop {
        match subscription.next().await {
            Some(Event::Item(chunk)) => chunks.push(chunk),
            Some(end) => break end,
            None => break Event::Failed(Failure::Panicked),
        }
    };
    live.ended(&end);
    let mut response = match end {
        Event::Done => openai::json_response(StatusCode::OK, &openai::collect(endpoint, &chunks)),
        Event::Cancelled => {
            openai::error(StatusCode::CONFLICT, "the request was cancelled", "cancelled", "cancelled")
        }
        Event::Failed(Failure::Upstream(e)) => {
            let status =
                e.status.and_then(|s| StatusCode::from_u16(s).ok()).filter(StatusCode::is_client_error);
            let body = upstream_error_body(&e);
            openai::json_response(status.unwrap_or(StatusCode::BAD_GATEWAY), &body)
        }
        Event::Failed(failure) => openai::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &failure.to_string(),
            "server_error",
            "flight_failed",
        ),
        Event::Item(_) => unreachable!("items are consumed by the loop"),
    };
    response.headers_mut().insert("x-streamflight-role", role_header(role));
    response
}

fn role_header(role: Role) -> HeaderValue {
    HeaderValue::from_str(&format!("{role:?}").to_lowercase()).expect("roles are ASCII")
}

fn upstream_error_body(error: &UpstreamError) -> Value {
    let mut body = openai::error_body(&error.to_string(), "upstream_error", "upstream_error");
    if let Some(status) = error.status {
        body["error"]["upstream_status"] = status.into();
    }
    body
}

/// One event of a streaming response, in the OpenAI SSE format.
fn sse(event: Event<Arc<str>, UpstreamError>) -> Sse {
    match event {
        Event::Item(chunk) => Sse::default().data(&*chunk),
        Event::Done => Sse::default().data("[DONE]"),
        Event::Cancelled => Sse::default().data(json!({"status": "cancelled"}).to_string()),
        Event::Failed(Failure::Upstream(e)) => Sse::default().data(upstream_error_body(&e).to_string()),
        Event::Failed(failure) => {
            let body = openai::error_body(&failure.to_string(), "server_error", "flight_failed");
            Sse::default().data(body.to_string())
        }
    }
}

/// A live completion request: cancellable by its id until it ends or its client goes.
struct Live {
    gateway: Shared,
    id: ClientId,
    role: Role,
    ended: bool,
}

impl Live {
    fn ended(&mut self, end: &Event<Arc<str>, UpstreamError>) {
        self.ended = true;
        let outcome = match end {
            Event::Done => "done".to_owned(),
            Event::Cancelled => "cancelled".to_owned(),
            Event::Failed(failure) => format!("failed: {failure}"),
            Event::Item(_) => "item".to_owned(),
        };
        tracing::info!(request_id = %self.id, role = ?self.role, %outcome, "ended");
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.gateway.requests().remove(&self.id);
        if !self.ended {
            tracing::info!(request_id = %self.id, role = ?self.role, "client went away");
        }
    }
}

/// `DELETE /v1/requests/{id}`: cancels a live request by the id from its `x-request-id`.
pub async fn cancel(State(gateway): State<Shared>, Path(shown): Path<String>) -> Response {
    let known = ClientId::parse(&shown).and_then(|id| gateway.requests().get(&id).copied());
    match known.map(|request| gateway.flights.cancel(request)) {
        Some(Ok(())) => {
            tracing::info!(request_id = %shown, "cancelled by DELETE");
            openai::json_response(
                StatusCode::OK,
                &json!({"id": shown, "object": "request", "status": "cancelled"}),
            )
        }
        _ => openai::error(
            StatusCode::NOT_FOUND,
            &format!("no live request with id `{shown}`"),
            "invalid_request_error",
            "request_not_found",
        ),
    }
}

/// `GET /metrics`, in the Prometheus text format.
pub async fn metrics(State(gateway): State<Shared>) -> Response {
    let stats = gateway.flights.stats();
    let upstream_errors = gateway.upstream_errors.load(Ordering::Relaxed);
    let rows: [(&str, &str, &str, u64); 8] = [
        ("requests_total", "counter", "Completion requests admitted.", stats.requests),
        ("flights_total", "counter", "Flights started: upstream requests made.", stats.flights),
        ("joined_total", "counter", "Requests served by a flight already in the air.", stats.joined),
        (
            "cancelled_total",
            "counter",
            "Requests cancelled by DELETE or by their client leaving.",
            stats.cancelled,
        ),
        ("aborted_total", "counter", "Flights aborted because nobody was left to listen.", stats.aborted),
        ("upstream_errors_total", "counter", "Flights whose upstream failed.", upstream_errors),
        ("active_flights", "gauge", "Flights in the air.", stats.active_flights as u64),
        ("active_requests", "gauge", "Requests not yet ended.", stats.active_requests as u64),
    ];
    let mut text = String::new();
    for (name, kind, help, value) in rows {
        text += &format!("# HELP streamflight_{name} {help}\n# TYPE streamflight_{name} {kind}\n");
        text += &format!("streamflight_{name} {value}\n");
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// `GET /healthz`.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Any other path.
pub async fn not_found() -> Response {
    openai::error(StatusCode::NOT_FOUND, "no such endpoint", "invalid_request_error", "unknown_url")
}

/// A known path with the wrong method.
pub async fn method_not_allowed() -> Response {
    openai::error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
        "invalid_request_error",
        "method_not_allowed",
    )
}
