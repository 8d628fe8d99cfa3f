//! The span of one client request (kind `SERVER`): started as the request comes in, continuing
//! its `traceparent`; ended when its response body ends, so it lasts as long as the stream.

use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::Span;

use super::Traces;
use super::flight::{FlightSlot, Link};

/// One request's span, shared by the middleware that ends it and the handler that names what
/// the request was (its dialect, model, role and flight).
#[derive(Debug)]
pub(crate) struct ClientSpan {
    span: Mutex<Span>,
    started: Instant,
    first_chunk: OnceLock<f64>,
    flight: OnceLock<Link>,
}

/// Traces every request but the health check and the metrics: its span is in the request's
/// extensions for the handler, and ends when the response body is done.
pub(crate) async fn serve(State(traces): State<Traces>, mut request: Request, next: Next) -> Response {
    if matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics") {
        return next.run(request).await;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
    let method = request.method().as_str().to_owned();
    let attributes = vec![
        KeyValue::new("http.request.method", method.clone()),
        KeyValue::new("url.path", request.uri().path().to_owned()),
    ];
    let span = traces
        .tracer
        .span_builder(method)
        .with_kind(SpanKind::Server)
        .with_attributes(attributes)
        .start_with_context(&traces.tracer, &parent);
    let client = Arc::new(ClientSpan {
        span: Mutex::new(span),
        started: Instant::now(),
        first_chunk: OnceLock::new(),
        flight: OnceLock::new(),
    });
    request.extensions_mut().insert(Arc::clone(&client));
    let response = next.run(request).await;
    let status = response.status();
    client.with(|span| {
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
        if status.is_server_error() {
            span.set_status(Status::error(status.as_str().to_owned()));
        }
    });
    response.map(|body| Body::new(Timed { body, client }))
}

impl ClientSpan {
    /// Runs `change` on the span (never contended: one request's tasks take turns).
    pub(super) fn with<R>(&self, change: impl FnOnce(&mut Span) -> R) -> R {
        change(&mut self.span.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The span's context: the flight span's parent when this request leads.
    pub(super) fn context(&self) -> SpanContext {
        self.with(|span| span.span_context().clone())
    }

    /// A coalesced request of `route`: the span is named as HTTP's conventions name a server
    /// span (`POST /v1/chat/completions`), and says the operation asked for.
    pub(super) fn coalesced(&self, route: &str, operation: &'static str) {
        self.with(|span| {
            span.update_name(format!("POST {route}"));
            span.set_attribute(KeyValue::new("gen_ai.operation.name", operation));
        });
    }

    /// The request's place in `slot`'s flight (its role, found when it joined or led).
    pub(super) fn placed(&self, role: &'static str, link: Link) {
        self.with(|span| span.set_attribute(KeyValue::new("streamflight.role", role)));
        let _ = self.flight.set(link);
    }

    /// The first byte of the response body went out.
    fn first_chunk(&self) {
        if self.first_chunk.get().is_none() {
            let _ = self.first_chunk.set(self.started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for ClientSpan {
    /// The response body is done: what is known of the flight by now goes on the span, then
    /// the span ends (and is queued for export).
    fn drop(&mut self) {
        let span = self.span.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(&seconds) = self.first_chunk.get() {
            span.set_attribute(KeyValue::new("gen_ai.server.time_to_first_token", seconds));
        }
        let flight: Option<Arc<FlightSlot>> = self.flight.get().and_then(Link::slot);
        if let Some(flight) = flight {
            flight.describe(span);
        }
        span.end();
    }
}

/// A response body that marks its first chunk on its span, which it holds to its end.
struct Timed {
    body: Body,
    client: Arc<ClientSpan>,
}

impl http_body::Body for Timed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && frame.data_ref().is_some_and(|data| !data.is_empty())
        {
            self.client.first_chunk();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The parent context a span under `parent` starts with.
pub(super) fn under(parent: SpanContext) -> Context {
    Context::new().with_remote_span_context(parent)
}
