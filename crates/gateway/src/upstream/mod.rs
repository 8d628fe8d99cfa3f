//! Where a flight's request goes (`backend`: the simulated model or an upstream), and an upstream:
//! a request per flight (`h1`, or reqwest's [`client`]), its SSE decoded, each event classified once.

pub(crate) mod backend;
pub(crate) mod bounds;
pub mod client;
mod h1;
mod idle;
mod lanes;
mod response;
pub(crate) mod scrub;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use bytes::Bytes;
use futures::stream;
use futures::{Stream, StreamExt};
use streamflight_tokio::sse::{DecodeError, Decoder, SseEvent};

use crate::config::Settings;
use crate::dialect::{Api, Class};
use crate::flight::{Broken, Head, Headers, Part, Parts, UpstreamError};
use crate::http::headers;
use crate::metrics::Metrics;
use crate::upstream::bounds::Bounds;
use crate::upstream::client::{ClientOptions, UpstreamUrl};
use crate::upstream::h1::Http1;
use crate::upstream::idle::Idle;
use crate::upstream::lanes::Lanes;
use crate::upstream::response::{Body, Response};
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
    /// For a plain `http://` upstream over HTTP/1.1 with no proxy, the client that sends the
    /// flights' requests in reqwest's place (passthrough keeps reqwest).
    http1: Option<Http1>,
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
        // An `http://` URL goes through a proxy that `HTTP_PROXY` or `ALL_PROXY` names (reqwest
        // knows `NO_PROXY`'s exceptions too, so any such proxy keeps it).
        let proxied = client::proxy_variables().iter().any(|name| !name.eq_ignore_ascii_case("https_proxy"));
        let http1 = (!settings.upstream_http2 && !proxied)
            .then(|| Http1::new(&url, settings.connect_timeout, settings.connection_threads() > 0))
            .flatten();
        let api_key = settings.upstream_api_key.clone();
        if api_key.as_deref().is_some_and(|key| HeaderValue::from_str(&format!("Bearer {key}")).is_err()) {
            return Err("--upstream-api-key holds characters a header cannot carry".to_owned());
        }
        Ok(Upstream {
            scrubber: Scrubber::new(api_key.as_deref()),
            api_key,
            lanes,
            http1,
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
        let mut headers = outgoing.headers;
        // The body sent is JSON whatever the client said it was (curl's `-d` says a form).
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let sending = tokio::time::Instant::now();
        let request = self.request(api, outgoing.query.as_deref(), headers, outgoing.body);
        let response = match tokio::time::timeout(self.response_timeout, request).await {
            Err(_) => {
                let message =
                    format!("no response head from the upstream within {:?}", self.response_timeout);
                return Err(UpstreamError::broken(Broken::Timeout, message));
            }
            Ok(Err(reason)) => {
                let message = format!("cannot reach the upstream {}: {reason}", self.url);
                return Err(UpstreamError::broken(Broken::Unreachable, message));
            }
            Ok(Ok(response)) => response,
        };
        let Response { status, headers, body } = response;
        self.metrics.upstream_head(api.name(), status.as_u16(), sending.elapsed());
        if let Some(coding) = headers::encoded(&headers) {
            // Asked for identity (`accept-encoding: identity`), the upstream encoded anyway: the
            // gateway reads, merges and shares every coalesced answer, so it cannot use it.
            let message = format!(
                "the upstream answered {status} with `content-encoding: {coding}` though the gateway asked \
                 for `accept-encoding: identity`: it reads every coalesced answer, so it must be sent uncompressed",
            );
            return Err(UpstreamError::broken(Broken::Malformed, message));
        }
        let mut kept = headers::downstream_shared(&headers, true);
        self.scrubber.headers(&mut kept);
        let head = Arc::new(Head { status, headers: Headers::from(&kept) });
        if !head.status.is_success() {
            let body = self.error_body(body).await;
            return Err(UpstreamError::Status { head, body });
        }
        if !api.streams() {
            let first = stream::iter([Ok(Part::Head(head))]);
            return Ok(first.chain(body_parts(body, self.idle_timeout, self.scrubber.clone())).boxed());
        }
        let content_type =
            head.headers.get(CONTENT_TYPE.as_str()).and_then(|v| std::str::from_utf8(v).ok()).unwrap_or("");
        if !content_type.starts_with("text/event-stream") {
            let message = format!("the upstream answered a streaming request with `{content_type}`, not SSE");
            return Err(UpstreamError::broken(Broken::Malformed, message));
        }
        Ok(events(api, head, body, self.idle_timeout, self.max_event_bytes, self.scrubber.clone()))
    }

    /// Sends the request through [`Http1`] if the upstream has it, else reqwest; the error is
    /// its text.
    async fn request(
        &self,
        api: Api,
        query: Option<&str>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response, String> {
        if let Some(http1) = &self.http1 {
            let target = self.url.path_and_query(api.path(), query);
            return http1.post(&target, headers, body).await.map(Response::http1);
        }
        let url = self.url.join(api.path(), query);
        let (client, ticket) = self.lanes.take();
        match client.post(url).headers(headers).body(body).send().await {
            Ok(response) => Ok(Response::reqwest(response, ticket)),
            Err(error) => Err(client::describe(&error)),
        }
    }

    /// At most `max_error_body` bytes of an error response's body, as sent but for the key
    /// (an upstream 401 may quote the key it refused).
    async fn error_body(&self, mut body: Body) -> Bytes {
        let mut read = Vec::new();
        let mut whole = false;
        while read.len() < self.max_error_body {
            match tokio::time::timeout(self.idle_timeout, body.next()).await {
                Ok(Some(Ok(chunk))) => read.extend_from_slice(&chunk),
                Ok(None) => {
                    whole = true;
                    break;
                }
                _ => break,
            }
        }
        whole &= read.len() <= self.max_error_body;
        read.truncate(self.max_error_body);
        let read = Bytes::from(read);
        if whole { self.scrubber.bytes(read) } else { self.scrubber.cut(read) }
    }
}

/// A body that is not SSE, piece by piece as it arrives, scrubbed (a piece's tail that may
/// start the key waits for the next piece).
fn body_parts(body: Body, idle: Duration, scrubber: Scrubber) -> Parts {
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

/// `head`, then the SSE events of a streamed answer, each classified once by `api`, up to its
/// end (Chat's `[DONE]`, `response.completed`, `message_stop`); a stream that stops before it
/// is an error. Each event's name and data are scrubbed whole before anything else sees them.
fn events(
    api: Api,
    head: Arc<Head>,
    body: Body,
    idle: Duration,
    max_event_bytes: usize,
    scrubber: Scrubber,
) -> Parts {
    let decoder = Decoder::with_names(max_event_bytes, api.event_names()).without_ids();
    Events { api, head: Some(head), reading: Some((Idle::new(body, idle), decoder)), scrubber }.boxed()
}

/// [`events`]' stream. Written out rather than an `unfold`, which holds its state twice while a
/// piece is awaited (in itself and in its future): this is kept by every flight for its life.
struct Events {
    api: Api,
    /// The response's head, until it has been given (the first part; no stream chained for it).
    head: Option<Arc<Head>>,
    /// The body and its decoder, until the stream has ended.
    reading: Option<(Idle, Decoder)>,
    scrubber: Scrubber,
}

impl Stream for Events {
    type Item = Result<Part, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Events { api, head, reading, scrubber } = &mut *self;
        if let Some(head) = head.take() {
            return Poll::Ready(Some(Ok(Part::Head(head))));
        }
        let Some((body, decoder)) = reading else { return Poll::Ready(None) };
        let api = *api;
        loop {
            match decoder.next_event() {
                Err(error) => {
                    let message = match error {
                        DecodeError::TooLarge { limit } => {
                            format!("an upstream event exceeded {limit} bytes (--max-event-bytes)")
                        }
                        other => format!("the upstream's event stream was refused: {other}"),
                    };
                    *reading = None;
                    return Poll::Ready(Some(Err(UpstreamError::broken(Broken::TooLarge, message))));
                }
                Ok(Some(SseEvent { name, data, .. })) => {
                    match api.classify(name.map(|n| scrubber.bytes(n)), scrubber.bytes(data)) {
                        Class::Keep(event) => return Poll::Ready(Some(Ok(Part::Event(event)))),
                        Class::KeepAlive => continue,
                        // The last event is stored; the stream ends after it, whatever follows.
                        Class::Last(last) => {
                            if let Some((body, _)) = reading.take() {
                                body.finish();
                            }
                            return Poll::Ready(last.map(|event| Ok(Part::Event(event))));
                        }
                        Class::Failure(event) => {
                            *reading = None;
                            return Poll::Ready(Some(Err(UpstreamError::InStream(event))));
                        }
                    }
                }
                Ok(None) => {}
            }
            let piece = match body.poll_piece(cx) {
                Poll::Ready(piece) => piece,
                Poll::Pending => {
                    // Waiting, maybe for long: the room of the last read is not kept meanwhile
                    // (half a KB a held stream).
                    decoder.release();
                    return Poll::Pending;
                }
            };
            match piece {
                Ok(Some(chunk)) => decoder.push(&chunk),
                Ok(None) => {
                    *reading = None;
                    let message = "the upstream stream ended before its end event";
                    return Poll::Ready(Some(Err(UpstreamError::broken(Broken::Truncated, message))));
                }
                Err(error) => {
                    *reading = None;
                    return Poll::Ready(Some(Err(error)));
                }
            }
        }
    }
}
