//! Forwarding to a real OpenAI-compatible server: one streaming request per flight, its SSE
//! parsed as it arrives and passed on event by event; every failure becomes an [`UpstreamError`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::HeaderValue;
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use eventsource_stream::Eventsource;
use futures::stream::{self, BoxStream, StreamExt};
use serde_json::{Map, Value};

/// Why a flight's upstream failed; every subscriber of the flight receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamError {
    /// The upstream's HTTP status, when it answered with a non-2xx one.
    pub status: Option<u16>,
    /// What went wrong, for the client's error event.
    pub message: String,
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(f, "upstream answered {status}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The flight's upstream stream: each SSE event's data, up to (not including) `[DONE]`.
pub type Chunks = BoxStream<'static, Result<Arc<str>, UpstreamError>>;

/// Where and how to reach the upstream.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// The HTTP client (its connect timeout is set).
    pub client: reqwest::Client,
    /// Base URL, `/v1` included, without a trailing slash.
    pub base: String,
    /// Time from sending the request to its response headers.
    pub response_timeout: Duration,
    /// Longest silence between two events.
    pub idle_timeout: Duration,
    /// Counts the flights whose upstream failed.
    pub errors: Arc<AtomicU64>,
}

/// Most bytes of a non-2xx upstream body quoted in the error.
const QUOTED: usize = 1000;

impl Upstream {
    /// Sends `body` (with `"stream": true`) to the endpoint, then returns its events as
    /// they arrive. A connect failure, a timeout, a non-2xx answer, a broken or truncated
    /// stream (one that ends without `[DONE]`) are an [`UpstreamError`], counted once.
    pub async fn open(
        self,
        endpoint: crate::key::Endpoint,
        mut body: Map<String, Value>,
        authorization: Option<HeaderValue>,
    ) -> Result<Chunks, UpstreamError> {
        let errors = Arc::clone(&self.errors);
        let opened = self.connect(endpoint, &mut body, authorization).await;
        if opened.is_err() {
            errors.fetch_add(1, Ordering::Relaxed);
        }
        let chunks = opened?.inspect(move |item| {
            if item.is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(chunks.boxed())
    }

    async fn connect(
        &self,
        endpoint: crate::key::Endpoint,
        body: &mut Map<String, Value>,
        authorization: Option<HeaderValue>,
    ) -> Result<Chunks, UpstreamError> {
        let failed = |message: String| UpstreamError { status: None, message };
        body.insert("stream".to_owned(), Value::Bool(true));
        let url = format!("{}{}", self.base, endpoint.path());
        let mut request = self
            .client
            .post(&url)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "text/event-stream")
            .body(Value::Object(std::mem::take(body)).to_string());
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        let response = match tokio::time::timeout(self.response_timeout, request.send()).await {
            Err(_) => {
                return Err(failed(format!(
                    "no answer from the upstream {url} within {:?}",
                    self.response_timeout
                )));
            }
            Ok(Err(e)) => return Err(failed(format!("cannot reach the upstream {url}: {}", chain(&e)))),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            let text = tokio::time::timeout(self.idle_timeout, response.text()).await;
            let text = text.ok().and_then(Result::ok).unwrap_or_default();
            return Err(UpstreamError { status: Some(status.as_u16()), message: quote(&text) });
        }
        let idle = self.idle_timeout;
        let events = response.bytes_stream().eventsource();
        Ok(stream::unfold(Some(events), move |events| async move {
            let mut events = events?;
            loop {
                let broke = |message: String| Some((Err(failed(message)), None));
                return match tokio::time::timeout(idle, events.next()).await {
                    Err(_) => broke(format!("the upstream sent nothing for {idle:?}")),
                    Ok(None) => broke("the upstream stream ended before [DONE]".to_owned()),
                    Ok(Some(Err(e))) => broke(format!("the upstream stream broke: {e}")),
                    Ok(Some(Ok(event))) if event.data.trim() == "[DONE]" => None,
                    Ok(Some(Ok(event))) if event.data.is_empty() => continue,
                    Ok(Some(Ok(event))) => Some((Ok(Arc::from(event.data)), Some(events))),
                };
            }
        })
        .boxed())
    }
}

/// An error and its sources, joined (reqwest's own message is only the outermost).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

/// The message of a non-2xx upstream body: its OpenAI `error.message` if it has one, else
/// the start of the text.
fn quote(text: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    if let Some(message) = parsed.as_ref().and_then(|v| v.pointer("/error/message")).and_then(Value::as_str) {
        return message.to_owned();
    }
    match text.char_indices().nth(QUOTED) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}
