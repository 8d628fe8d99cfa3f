//! The span of one client request (kind `SERVER`): started as the request comes in, continuing
//! its `traceparent`; ended with its access record, when its response body ends, so it lasts as
//! long as the stream.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::http::{HeaderMap, Method};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::Span;

use super::Traces;
use super::flight::{FlightSlot, Link};

/// One request's span, held by its access record (which ends it when the response is done,
/// saying how it went) and named by the handler (its dialect, model, role and flight).
#[derive(Debug)]
pub(crate) struct ClientSpan {
    span: Mutex<Span>,
    flight: OnceLock<Link>,
}

impl ClientSpan {
    /// The span of a request for `path`, continuing the `traceparent` in `headers`; `None`
    /// for the probes and the metrics, which are never traced.
    pub(crate) fn start(
        traces: &Traces,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Option<ClientSpan> {
        if matches!(path, "/healthz" | "/readyz" | "/metrics") {
            return None;
        }
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let method = method_name(method);
        // Room for the ten attributes a coalesced request's span ends with: no regrowth.
        let mut attributes = Vec::with_capacity(10);
        attributes.push(KeyValue::new("http.request.method", method.clone()));
        attributes.push(KeyValue::new("url.path", path.to_owned()));
        let span = traces
            .tracer
            .span_builder(method)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&traces.tracer, &parent);
        Some(ClientSpan { span: Mutex::new(span), flight: OnceLock::new() })
    }

    /// The response is done: its `status`, and when its client got the first of its answer
    /// (`first`, counted from the request's arrival), go on the span, which ends when dropped.
    pub(crate) fn finish(&self, status: u16, first: Option<Duration>) {
        self.with(|span| {
            if status != 0 {
                span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
            }
            if status >= 500 {
                span.set_status(Status::error("server error"));
            }
            if let Some(first) = first {
                span.set_attribute(KeyValue::new("gen_ai.server.time_to_first_token", first.as_secs_f64()));
            }
        });
    }

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
}

impl Drop for ClientSpan {
    /// The response body is done: what is known of the flight by now goes on the span, then
    /// the span ends (and is queued for export).
    fn drop(&mut self) {
        let span = self.span.get_mut().unwrap_or_else(PoisonError::into_inner);
        let flight: Option<Arc<FlightSlot>> = self.flight.get().and_then(Link::slot);
        if let Some(flight) = flight {
            flight.describe(span);
        }
        span.end();
    }
}

/// A method's name, without an allocation for the usual ones.
fn method_name(method: &Method) -> std::borrow::Cow<'static, str> {
    let name = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => return method.as_str().to_owned().into(),
    };
    name.into()
}

/// The parent context a span under `parent` starts with.
pub(super) fn under(parent: SpanContext) -> Context {
    Context::new().with_remote_span_context(parent)
}
