//! Traces over OTLP/HTTP as a collector receives them: the binary exports to a receiver in the
//! test that decodes the protobuf; a coalesced burst is one flight span and linked client spans.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::process::Binary;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;

/// A first token late enough for every client of a burst to join before it, even on a machine
/// busy with builds (as in the dialects' tests).
const SLOW_START: &[&str] =
    &["--sim-first-token-delay", "3s", "--sim-token-interval", "2ms", "--sim-tokens", "12"];

/// What the receiver got: each span with its resource's `service.name`.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// An OTLP/HTTP receiver on a free port: `POST /v1/traces`, protobuf in, protobuf out.
async fn receiver() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new().route("/v1/traces", post(export)).with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, received)
}

async fn export(
    State(received): State<Received>,
    body: Bytes,
) -> ([(&'static str, &'static str); 1], Vec<u8>) {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
    let mut spans = received.lock().unwrap();
    for resource in request.resource_spans {
        let attributes = resource.resource.map(|r| r.attributes).unwrap_or_default();
        let service = text(&attributes, "service.name").unwrap_or_default();
        for scope in resource.scope_spans {
            spans.extend(scope.spans.into_iter().map(|span| (service.clone(), span)));
        }
    }
    ([("content-type", "application/x-protobuf")], ExportTraceServiceResponse::default().encode_to_vec())
}

fn value<'a>(attributes: &'a [KeyValue], name: &str) -> Option<&'a Any> {
    attributes
        .iter()
        .find(|kv| kv.key == name)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn text(attributes: &[KeyValue], name: &str) -> Option<String> {
    match value(attributes, name)? {
        Any::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

fn int(attributes: &[KeyValue], name: &str) -> Option<i64> {
    match value(attributes, name)? {
        Any::IntValue(number) => Some(*number),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_coalesced_burst_is_one_flight_span_linked_from_every_client_span() {
    const BURST: usize = 8;
    let (collector, received) = receiver().await;
    let mut flags = vec!["--otlp-endpoint", &collector];
    flags.extend_from_slice(SLOW_START);
    let mut binary = Binary::start(&flags);
    let (_, address) = binary.ready().await;
    let base = format!("http://{address}");

    // Every other request continues a trace of its client's: trace id 0…0i, parent span 0…0i.
    let parent = |i: usize| (format!("{:032x}", 0xa0 + i), format!("{:016x}", 0xb0 + i));
    let mut clients = Vec::new();
    for i in 0..BURST {
        let mut request = http()
            .post(format!("{base}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(chat_body("one question for all", true).to_string());
        if i % 2 == 0 {
            let (trace, span) = parent(i);
            request = request.header("traceparent", format!("00-{trace}-{span}-01"));
        }
        clients.push(Client::send(request).await);
    }
    let answers = futures::future::join_all(clients.iter_mut().map(Client::rest)).await;
    assert!(answers.iter().all(|answer| answer == &answers[0] && !answer.is_empty()));
    assert_eq!(clients[0].role, "leader");

    // The stop flushes what is still queued.
    binary.signal(libc::SIGTERM);
    assert!(binary.exit().await.success(), "{}", binary.stderr());
    let spans = received.lock().unwrap().clone();
    assert!(spans.iter().all(|(service, _)| service == "streamflight-gateway"), "{spans:?}");
    let of =
        |kind: SpanKind| spans.iter().map(|(_, s)| s).filter(|s| s.kind == kind as i32).collect::<Vec<_>>();
    let (served, flights) = (of(SpanKind::Server), of(SpanKind::Client));
    assert_eq!(flights.len(), 1, "one flight span: {flights:?}");
    assert_eq!(served.len(), BURST, "a span per client request: {served:?}");
    let flight = flights[0];
    // The tree as a collector shows it (`--nocapture`): who led, who joined, what links where.
    for span in flights.iter().chain(&served) {
        let short = |bytes: &[u8]| {
            let all = hex(bytes);
            all[all.len().saturating_sub(8)..].to_owned()
        };
        let links: Vec<String> = span.links.iter().map(|link| short(&link.span_id)).collect();
        println!(
            "trace {} span {} parent {:8} {:?} {:28} role={:6} links={links:?}",
            short(&span.trace_id),
            short(&span.span_id),
            short(&span.parent_span_id),
            SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
            span.name,
            text(&span.attributes, "streamflight.role").unwrap_or_default(),
        );
    }

    // The flight: the one upstream request, under its leader's span, counting who joined.
    assert_eq!(flight.name, "chat test-model");
    assert_eq!(text(&flight.attributes, "gen_ai.operation.name").as_deref(), Some("chat"));
    assert_eq!(text(&flight.attributes, "gen_ai.request.model").as_deref(), Some("test-model"));
    assert_eq!(int(&flight.attributes, "streamflight.joined"), Some(BURST as i64 - 1));
    assert!(int(&flight.attributes, "gen_ai.usage.input_tokens").is_some(), "{flight:?}");
    assert!(int(&flight.attributes, "gen_ai.usage.output_tokens").is_some_and(|n| n > 0), "{flight:?}");
    let flight_id = text(&flight.attributes, "streamflight.flight_id").expect("the flight's id");
    assert_eq!(flight_id, clients[0].id, "named by its leader's x-request-id");

    let mut roles = HashMap::<String, usize>::new();
    for span in &served {
        let role = text(&span.attributes, "streamflight.role").expect("a role");
        *roles.entry(role.clone()).or_default() += 1;
        assert_eq!(span.name, "POST /v1/chat/completions");
        assert_eq!(text(&span.attributes, "gen_ai.operation.name").as_deref(), Some("chat"));
        assert_eq!(text(&span.attributes, "gen_ai.request.model").as_deref(), Some("test-model"));
        assert_eq!(text(&span.attributes, "http.request.method").as_deref(), Some("POST"));
        assert_eq!(text(&span.attributes, "url.path").as_deref(), Some("/v1/chat/completions"));
        assert_eq!(int(&span.attributes, "http.response.status_code"), Some(200));
        assert_eq!(text(&span.attributes, "streamflight.flight_id").as_deref(), Some(flight_id.as_str()));
        assert!(int(&span.attributes, "gen_ai.usage.output_tokens").is_some(), "{span:?}");
        assert!(
            matches!(value(&span.attributes, "gen_ai.server.time_to_first_token"), Some(Any::DoubleValue(s)) if *s > 0.0),
            "{span:?}"
        );
        // Linked to the flight's span, whichever role it had.
        let linked = span.links.iter().any(|l| l.trace_id == flight.trace_id && l.span_id == flight.span_id);
        assert!(linked, "{span:?}");
        if role == "leader" {
            assert_eq!((&flight.trace_id, &flight.parent_span_id), (&span.trace_id, &span.span_id));
        }
        // The span ends with its stream: after the flight's first chunk, so after the flight began.
        assert!(span.end_time_unix_nano > flight.start_time_unix_nano);
    }
    assert_eq!(roles.get("leader"), Some(&1), "{roles:?}");
    let joined = roles.get("follower").unwrap_or(&0) + roles.get("joiner").unwrap_or(&0);
    assert_eq!(joined, BURST - 1, "{roles:?}");

    // The clients' traceparents are continued: their trace, under their span.
    for i in (0..BURST).step_by(2) {
        let (trace, span) = parent(i);
        let continued = served.iter().filter(|s| hex(&s.trace_id) == trace).collect::<Vec<_>>();
        assert_eq!(continued.len(), 1, "trace {trace}: {served:?}");
        assert_eq!(hex(&continued[0].parent_span_id), span);
    }
    // The leader's trace holds the flight.
    assert_eq!(hex(&flight.trace_id), parent(0).0);
}

/// A quick simulated answer, for the tests that look at one request.
const QUICK: &[&str] =
    &["--sim-first-token-delay", "0ms", "--sim-token-interval", "0ms", "--sim-tokens", "3"];

/// Asks one non-streaming chat question of the gateway at `address`: its status.
async fn ask(address: std::net::SocketAddr) -> u16 {
    let request = http()
        .post(format!("http://{address}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(chat_body("a lone question", false).to_string());
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert!(body["choices"][0]["message"]["content"].is_string(), "{body}");
    status
}

#[tokio::test]
async fn the_standard_variables_name_the_collector_and_the_service() {
    let (collector, received) = receiver().await;
    let variables = [("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()), ("OTEL_SERVICE_NAME", "edge")];
    let mut binary = Binary::start_with_env(QUICK, &variables);
    let (_, address) = binary.ready().await;
    assert_eq!(ask(address).await, 200);
    binary.signal(libc::SIGTERM);
    assert!(binary.exit().await.success(), "{}", binary.stderr());
    let spans = received.lock().unwrap().clone();
    assert!(spans.iter().all(|(service, _)| service == "edge"), "{spans:?}");
    let served: Vec<&Span> =
        spans.iter().map(|(_, s)| s).filter(|s| s.kind == SpanKind::Server as i32).collect();
    let flights: Vec<&Span> =
        spans.iter().map(|(_, s)| s).filter(|s| s.kind == SpanKind::Client as i32).collect();
    assert_eq!((served.len(), flights.len()), (1, 1), "{spans:?}");
    assert_eq!(text(&served[0].attributes, "streamflight.role").as_deref(), Some("leader"));
    assert_eq!(flights[0].parent_span_id, served[0].span_id);
    assert!(served[0].links.iter().any(|link| link.span_id == flights[0].span_id));
}

#[tokio::test]
async fn an_unreachable_collector_fails_no_request() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let endpoint = format!("http://{closed}");
    let mut flags = vec!["--otlp-endpoint", &endpoint];
    flags.extend_from_slice(QUICK);
    let mut binary = Binary::start(&flags);
    let (_, address) = binary.ready().await;
    for _ in 0..3 {
        assert_eq!(ask(address).await, 200);
    }
    // The stop's flush cannot reach it; the process still stops cleanly.
    binary.signal(libc::SIGTERM);
    assert!(binary.exit().await.success(), "{}", binary.stderr());
}

/// The flight span of one streamed request to `path` with `body`, its model's usage read from the
/// events that carry it in that API (named events: only those are searched).
async fn usage_of(path: &str, body: serde_json::Value) -> (Option<i64>, Option<i64>) {
    let (collector, received) = receiver().await;
    let mut binary = Binary::start(&["--otlp-endpoint", &collector]);
    let (_, address) = binary.ready().await;
    let answer = http()
        .post(format!("http://{address}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert!(!answer.text().await.unwrap().is_empty());
    binary.signal(libc::SIGTERM);
    assert!(binary.exit().await.success(), "{}", binary.stderr());
    let spans = received.lock().unwrap().clone();
    let flight = spans
        .iter()
        .map(|(_, span)| span)
        .find(|span| span.kind == SpanKind::Client as i32)
        .unwrap_or_else(|| panic!("a flight span: {spans:?}"));
    (
        int(&flight.attributes, "gen_ai.usage.input_tokens"),
        int(&flight.attributes, "gen_ai.usage.output_tokens"),
    )
}

#[tokio::test]
async fn the_responses_api_and_anthropic_messages_give_their_usage_to_the_flight_span() {
    let responses = serde_json::json!({"model": "m", "input": "how many tokens?", "stream": true});
    let (input, output) = usage_of("/v1/responses", responses).await;
    assert!(input.is_some_and(|n| n > 0) && output.is_some_and(|n| n > 0), "{input:?} {output:?}");
    let messages = serde_json::json!({
        "model": "m",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "how many tokens?"}],
        "stream": true,
    });
    let (input, output) = usage_of("/v1/messages", messages).await;
    assert!(input.is_some_and(|n| n > 0) && output.is_some_and(|n| n > 0), "{input:?} {output:?}");
}
