//! Where a flight's request goes (`backend`: the simulated model or a real upstream), and a real
//! upstream: one request per flight through [`client`], its SSE decoded, each event classified once.

pub(crate) mod backend;
pub(crate) mod bounds;
pub mod client;
mod idle;
mod lanes;
pub(crate) mod scrub;

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use bytes::Bytes;
use futures::stream;
use futures::{Stream, StreamExt};
use streamflight_tokio::sse::{DecodeError, Decoder, SseEvent};

use crate::config::Settings;
use crate::dialect::{Api, Class};
use crate::flight::{Broken, Head, Part, Parts, UpstreamError};
use crate::http::headers;
use crate::metrics::Metrics;
use crate::upstream::bounds::Bounds;
use crate::upstream::client::{ClientOptions, UpstreamUrl};
use crate::upstream::idle::Idle;
use crate::upstream::lanes::{Lanes, Ticket};
use crate::upstream::scrub::Scrubber;

/// A coalesced request as its flight sends it: built from the leading client's request.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    /// The API.
    pub(crate) api: Api,
    /// The client's raw query string, if any.
    pub(crate) query: Option<String>,
    /// The end-to-end headers to send (credentials already replaced if the gateway has its own).
    pub(crate) headers: HeaderMap,
    /// The body to send (for a streamed API with `stream` set, and `stream_options` for chat).
    pub(crate) body: Bytes,
    /// The canonical body: the simulated model's seed.
    pub(crate) canonical: Arc<str>,
}

/// Where and how to reach the upstream.
pub(crate) struct Upstream {
    /// The HTTP clients (TLS, connect timeout, no redirects), at most
    /// `--upstream-streams-per-connection` requests on each.
    pub(crate) lanes: Lanes,
    /// Base URL, `/v1` included.
    pub(crate) url: UpstreamUrl,
    /// `--upstream-api-key`, sent in place of the clients' credentials, in the header each
    /// API takes it by ([`Upstream::credential`]).
    api_key: Option<String>,
    /// Time from sending a request to its response head.
    pub(crate) response_timeout: Duration,
    /// Longest silence while reading a response.
    pub(crate) idle_timeout: Duration,
    /// The key scrubbed from everything the upstream sends (G6).
    pub(crate) scrubber: Scrubber,
    max_event_bytes: usize,
    max_error_body: usize,
    bounds: Bounds,
    /// Where failures and the time to each response head are counted.
    pub(crate) metrics: Arc<Metrics>,
}

impl Upstream {
    /// The upstream of `settings` (which has `--upstream`).
    pub(crate) fn new(settings: &Settings, metrics: Arc<Metrics>) -> Result<Upstream, String> {
        let url = settings.upstream.clone().ok_or("no --upstream given")?;
        let clients = client::clients(&ClientOptions {
            connect_timeout: settings.connect_timeout,
            ca_file: settings.upstream_ca.clone(),
            http2: settings.upstream_http2,
        })?;
        let lanes = Lanes::new(settings.upstream_streams_per_connection as usize, clients)?;
        let api_key = settings.upstream_api_key.clone();
        if api_key.as_deref().is_some_and(|key| HeaderValue::from_str(&format!("Bearer {key}")).is_err()) {
            return Err("--upstream-api-key holds characters a header cannot carry".to_owned());
        }
        Ok(Upstream {
            scrubber: Scrubber::new(api_key.as_deref()),
            api_key,
            lanes,
            url,
            response_timeout: settings.response_timeout,
            idle_timeout: settings.idle_timeout,
            max_event_bytes: settings.max_event_bytes,
            max_error_body: settings.max_error_body,
            bounds: Bounds::of(settings),
            metrics,
        })
    }

    /// The gateway's own key as `api` takes it (`Authorization: Bearer`, Anthropic's
    /// `x-api-key`), if it has one.
    pub(crate) fn credential(&self, api: Api) -> Option<(HeaderName, HeaderValue)> {
        api.credential(self.api_key.as_deref()?)
    }

    /// Sends the flight's request and waits for the head: a 2xx gives the parts (head first),
    /// anything else the upstream's own status, headers and (bounded) body as the error.
    /// Every failure, now or later in the stream, is counted once. The answer is bounded
    /// ([`Bounds`]) from the moment the request is sent.
    pub(crate) async fn open(self: Arc<Self>, outgoing: Outgoing) -> Result<Parts, UpstreamError> {
        let started = tokio::time::Instant::now();
        let opened = self.send(outgoing).await.map(|parts| self.bounds.apply(parts, started));
        let metrics = Arc::clone(&self.metrics);
        // Logged at WARN, once a flight, by Display: a status or the gateway's own message,
        // never an upstream body (an upstream 401 may quote the key it refused).
        let failed = move |error: &UpstreamError| {
            Metrics::bump(&metrics.upstream_errors);
            tracing::warn!(%error, "upstream failed");
        };
        match opened {
            Err(error) => {
                failed(&error);
                Err(error)
            }
            Ok(parts) => Ok(parts
                .inspect(move |part| {
                    if let Err(error) = part {
                        failed(error);
                    }
                })
                .boxed()),
        }
    }

    async fn send(&self, outgoing: Outgoing) -> Result<Parts, UpstreamError> {
        let api = outgoing.api;
        let url = self.url.join(api.path(), outgoing.query.as_deref());
        let (client, ticket) = self.lanes.take();
        let mut headers = outgoing.headers;
        // The body sent is JSON whatever the client said it was (curl's `-d` says a form).
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let request = client.post(url).headers(headers).body(outgoing.body);
        let sending = tokio::time::Instant::now();
        let response = match tokio::time::timeout(self.response_timeout, request.send()).await {
            Err(_) => {
                let message =
                    format!("no response head from the upstream within {:?}", self.response_timeout);
                return Err(UpstreamError::broken(Broken::Timeout, message));
            }
            Ok(Err(e)) => {
                let message = format!("cannot reach the upstream {}: {}", self.url, client::describe(&e));
                return Err(UpstreamError::broken(Broken::Unreachable, message));
            }
            Ok(Ok(response)) => response,
        };
        self.metrics.upstream_head(api.name(), response.status().as_u16(), sending.elapsed());
        if let Some(coding) = headers::encoded(response.headers()) {
            // Asked for identity (`accept-encoding: identity`), the upstream encoded anyway: the
            // gateway reads, merges and shares every coalesced answer, so it cannot use it.
            let message = format!(
                "the upstream answered {} with `content-encoding: {coding}` though the gateway asked \
                 for `accept-encoding: identity`: it reads every coalesced answer, so it must be sent uncompressed",
                response.status()
            );
            return Err(UpstreamError::broken(Broken::Malformed, message));
        }
        let mut headers = headers::downstream_response(response.headers(), true);
        self.scrubber.headers(&mut headers);
        let head = Arc::new(Head { status: response.status(), headers });
        if !head.status.is_success() {
            let body = self.error_body(response).await;
            return Err(UpstreamError::Status { head, body });
        }
        let first = stream::iter([Ok(Part::Head(Arc::clone(&head)))]);
        if !api.streams() {
            let body = body_parts(response.bytes_stream(), self.idle_timeout, self.scrubber.clone());
            return Ok(holding(first.chain(body), ticket));
        }
        let content_type = head.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !content_type.starts_with("text/event-stream") {
            let message = format!("the upstream answered a streaming request with `{content_type}`, not SSE");
            return Err(UpstreamError::broken(Broken::Malformed, message));
        }
        Ok(holding(
            first.chain(events(
                api,
                response.bytes_stream(),
                self.idle_timeout,
                self.max_event_bytes,
                self.scrubber.clone(),
            )),
            ticket,
        ))
    }

    /// At most `max_error_body` bytes of an error response's body, as sent but for the key
    /// (an upstream 401 may quote the key it refused).
    async fn error_body(&self, mut response: reqwest::Response) -> Bytes {
        let mut body = Vec::new();
        let mut whole = false;
        while body.len() < self.max_error_body {
            match tokio::time::timeout(self.idle_timeout, response.chunk()).await {
                Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
                Ok(Ok(None)) => {
                    whole = true;
                    break;
                }
                _ => break,
            }
        }
        whole &= body.len() <= self.max_error_body;
        body.truncate(self.max_error_body);
        let body = Bytes::from(body);
        if whole { self.scrubber.bytes(body) } else { self.scrubber.cut(body) }
    }
}

/// A response's body alone: its head (headers, URL, extensions) is not kept while a stream
/// lasts (BENCHMARKS.md, issue 15).
trait Body: Stream<Item = reqwest::Result<Bytes>> + Send + 'static {}

impl<S: Stream<Item = reqwest::Result<Bytes>> + Send + 'static> Body for S {}

/// `parts`, which keep the request's place on its lane until they are read or dropped.
fn holding(parts: impl Stream<Item = Result<Part, UpstreamError>> + Send + 'static, ticket: Ticket) -> Parts {
    parts
        .map(move |part| {
            let _held = &ticket;
            part
        })
        .boxed()
}

/// A body that is not SSE, piece by piece as it arrives, scrubbed (a piece's tail that may
/// start the key waits for the next piece).
fn body_parts(body: impl Body + Unpin, idle: Duration, scrubber: Scrubber) -> Parts {
    stream::unfold(Some((Idle::new(body, idle), scrubber.pieces())), move |state| async move {
        let (mut body, mut pieces) = state?;
        loop {
            match body.next().await {
                Ok(Some(chunk)) => {
                    let chunk = pieces.push(chunk);
                    if chunk.is_empty() {
                        continue;
                    }
                    return Some((Ok(Part::Body(chunk)), Some((body, pieces))));
                }
                Ok(None) => {
                    let rest = pieces.finish();
                    return (!rest.is_empty()).then_some((Ok(Part::Body(rest)), None));
                }
                Err(error) => return Some((Err(error), None)),
            }
        }
    })
    .boxed()
}

/// The SSE events of a streamed answer, each classified once by `api`, up to its end (Chat's
/// `[DONE]`, `response.completed`, `message_stop`); a stream that stops before it is an error.
/// Each event's name and data are scrubbed whole before anything else sees them.
fn events(
    api: Api,
    body: impl Body + Unpin,
    idle: Duration,
    max_event_bytes: usize,
    scrubber: Scrubber,
) -> Parts {
    let decoder = Decoder::with_names(max_event_bytes, api.event_names());
    stream::unfold(Some((Idle::new(body, idle), decoder, scrubber)), move |state| async move {
        let (mut body, mut decoder, scrubber) = state?;
        loop {
            match decoder.next_event() {
                Err(error) => {
                    let message = match error {
                        DecodeError::TooLarge { limit } => {
                            format!("an upstream event exceeded {limit} bytes (--max-event-bytes)")
                        }
                        other => format!("the upstream's event stream was refused: {other}"),
                    };
                    return Some((Err(UpstreamError::broken(Broken::TooLarge, message)), None));
                }
                Ok(Some(SseEvent { name, data, .. })) => {
                    match api.classify(name.map(|n| scrubber.bytes(n)), scrubber.bytes(data)) {
                        Class::Keep(event) => {
                            return Some((Ok(Part::Event(event)), Some((body, decoder, scrubber))));
                        }
                        Class::KeepAlive => continue,
                        // The last event is stored; the stream ends after it, whatever follows.
                        Class::Last(Some(event)) => return Some((Ok(Part::Event(event)), None)),
                        Class::Last(None) => return None,
                        Class::Failure(event) => return Some((Err(UpstreamError::InStream(event)), None)),
                    }
                }
                Ok(None) => {}
            }
            match body.next().await {
                Ok(Some(chunk)) => decoder.push(&chunk),
                Ok(None) => {
                    let message = "the upstream stream ended before its end event";
                    return Some((Err(UpstreamError::broken(Broken::Truncated, message)), None));
                }
                Err(error) => return Some((Err(error), None)),
            }
        }
    })
    .boxed()
}
