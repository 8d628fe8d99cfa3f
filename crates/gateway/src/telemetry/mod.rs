//! OpenTelemetry traces over OTLP/HTTP: a span per client request, one per flight, linked so
//! that a trace shows who led a flight and who joined it. Off (no span, no cost) without an endpoint.
//!
//! # What a coalesced burst looks like in a trace
//!
//! Eight identical streaming requests, the first of which leads, give nine spans:
//!
//! ```text
//! trace A (the leader's; continues its traceparent, if it sent one)
//! └─ POST /v1/chat/completions     SERVER  streamflight.role=leader  ─┐ link
//!    └─ chat gpt-x                 CLIENT  streamflight.joined=7    ◄─┘  (the flight: the one upstream request)
//! trace B (a joiner's own trace, or its client's)
//! └─ POST /v1/chat/completions     SERVER  streamflight.role=joiner  ── link ──► the flight span in trace A
//! ... six more like B
//! ```
//!
//! - Every client request's span (kind `SERVER`) continues the client's W3C `traceparent`
//!   (none: a new trace) and ends when its response body ends, the whole stream.
//! - The flight's span (kind `CLIENT`) is a child of its leader's span, starts when the
//!   upstream request is made and ends when the upstream answer ends (or fails, or is given
//!   up). Its `streamflight.joined` counts the requests that joined it.
//! - Every client span, the leader's included, carries a link to its flight's span, and
//!   `streamflight.flight_id`: the leader's `x-request-id`, on the flight span too. A joiner's
//!   trace thus points at the trace of the request it rode on.
//! - The flight span is named as the GenAI conventions name one (`chat gpt-x`): the model its
//!   leader's body named (the others asked the same body).
//! - Attributes (OpenTelemetry's GenAI and HTTP semantic conventions where they fit):
//!   `gen_ai.operation.name` (`chat`, `text_completion`, `embeddings`), `gen_ai.request.model`,
//!   `gen_ai.usage.input_tokens` / `output_tokens` (from the answer's usage when it has one, on
//!   both kinds), `http.request.method`, `url.path`, `http.response.status_code`,
//!   `streamflight.role` (`leader`, `follower`, `joiner`). Time to first chunk is the client
//!   span's attribute `gen_ai.server.time_to_first_token` (seconds, as the GenAI metric of that
//!   name): when its client was sent the first of its answer (the access line's
//!   `first_event_ms`), whichever role it had.
//! - The request's span is started and ended by its access record (`http/access.rs`): no
//!   layer or body wrapper of its own, so tracing adds nothing to a request's path but its spans.
//!
//! Cost: without an endpoint, one branch a request. With one, 25,000 to 50,000 instructions a
//! unique request for its two spans (`scripts/instructions.sh`; the traced count moves from run
//! to run): some 12,000 to record them on the request's path, about 6,000 a span to encode and
//! post them on the SDK's thread, and the wakes of that thread's posts. The
//! SDK's own OTLP exporter took 19,000 a span, which is why the gateway has its own
//! (`encode.rs` says where they went). The latency example's section 5 measures the CPU time
//! against the same gateway without (BENCHMARKS.md, issue 24). Spans can be sampled with the
//! SDK's standard `OTEL_TRACES_SAMPLER` (`parentbased_traceidratio`, ...), which cuts both.
//!
//! The collector is `--otlp-endpoint`'s, else OpenTelemetry's standard variables':
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as it is) or `OTEL_EXPORTER_OTLP_ENDPOINT` (a base,
//! `/v1/traces` added); `OTEL_EXPORTER_OTLP[_TRACES]_HEADERS` and `_TIMEOUT` are honoured, and a
//! `_PROTOCOL` other than `http/protobuf` is refused at the start.
//!
//! Spans are exported in batches on a thread of the SDK's own (`BatchSpanProcessor`): a
//! request only queues its span, and a full queue drops spans, so a slow or unreachable
//! collector never slows or fails a request. The last batch is flushed when the server stops.

mod client;
mod encode;
mod export;
mod flight;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracer, SdkTracerProvider};

use crate::config::Settings;
use crate::key::Key;

pub(crate) use client::ClientSpan;
pub(crate) use flight::{Flight, Leaders};

/// The service name when `OTEL_SERVICE_NAME` sets none.
const SERVICE_NAME: &str = "streamflight-gateway";

/// How long one export may take, and the flush at the stop.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the request path needs to trace: the tracer and the flights' spans by key.
#[derive(Clone, Debug)]
pub(crate) struct Traces {
    tracer: SdkTracer,
    leaders: Arc<Leaders>,
}

/// The exporting half, kept by the server to flush the last spans when it stops.
#[derive(Debug)]
pub(crate) struct Exporting {
    provider: SdkTracerProvider,
}

/// Sets up traces as `settings` and the environment say: `None` with no endpoint. Must be
/// called on a tokio runtime (the exports run on it). The error is one line for the operator.
pub(crate) fn install(settings: &Settings) -> Result<Option<(Traces, Exporting)>, String> {
    let env = |name: &str| std::env::var(name).ok().filter(|value| !value.trim().is_empty());
    let flag = settings.otlp_endpoint.as_deref().filter(|e| !e.trim().is_empty());
    let Some(destination) = export::Destination::resolve(flag, env, EXPORT_TIMEOUT)? else {
        return Ok(None);
    };
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| "traces need the tokio runtime the gateway runs on".to_owned())?;
    let exporter = export::Otlp::new(runtime, destination)?;
    // The SDK's defaults (a queue of 2,048 spans, a batch every 5 s), or the `OTEL_BSP_*`.
    let processor = BatchSpanProcessor::builder(exporter).build();
    let service = env("OTEL_SERVICE_NAME").unwrap_or_else(|| SERVICE_NAME.to_owned());
    let resource = Resource::builder().with_service_name(service).build();
    let provider =
        SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).build();
    let tracer = provider.tracer(SERVICE_NAME);
    Ok(Some((Traces { tracer, leaders: Arc::default() }, Exporting { provider })))
}

/// Names a coalesced request of `dialect` on its span (`route`, the operation) and makes the
/// flight it would lead for `key`.
pub(crate) fn coalesced(
    traces: &Traces,
    client: &ClientSpan,
    route: &str,
    dialect: &str,
    key: &Key,
) -> Flight {
    // The GenAI conventions' operations; the Responses API and Anthropic's Messages are chats.
    let operation = match dialect {
        "completions" => "text_completion",
        "embeddings" => "embeddings",
        _ => "chat",
    };
    client.coalesced(route, operation);
    traces.flight(client, key, operation)
}

impl Exporting {
    /// Exports the spans still queued and stops the exporter, within [`EXPORT_TIMEOUT`] (and a
    /// bit): the SDK's shutdown blocks, so it runs off the async workers.
    pub(crate) async fn shutdown(self) {
        let provider = self.provider;
        let stopping = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(EXPORT_TIMEOUT * 2, stopping).await {
            Ok(Ok(Ok(()))) => tracing::debug!("traces flushed"),
            Ok(Ok(Err(e))) => tracing::warn!("the last traces were not exported: {e}"),
            Ok(Err(_)) | Err(_) => tracing::warn!("the last traces were not exported in time"),
        }
    }
}
