//! How the Responses API's and Anthropic's streams fail through the gateway (G1, G10), against
//! an upstream that sends exactly the scripted events: failures reach every client as the
//! upstream sent them, keep the API's status before the first byte, and never linger.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::header::CONTENT_TYPE;
use common::*;
use serde_json::{Value, json};

/// An upstream that answers every `POST` with `stream`, as SSE, and counts the requests.
struct Scripted {
    base: String,
    requests: Arc<AtomicUsize>,
}

async fn scripted(stream: &'static str) -> Scripted {
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    let answer = move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { ([(CONTENT_TYPE, "text/event-stream")], stream) }
    };
    let app = axum::Router::new()
        .route("/v1/responses", axum::routing::post(answer.clone()))
        .route("/v1/messages", axum::routing::post(answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Scripted { base, requests }
}

const FAILED: &str = concat!(
    "event: response.created\n",
    "data: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_f\",\"status\":\"in_progress\"}}\n\n",
    "event: response.failed\n",
    "data: {\"type\":\"response.failed\",\"sequence_number\":1,\"response\":{\"id\":\"resp_f\",\"status\":\"failed\",",
    "\"error\":{\"code\":\"server_error\",\"message\":\"the model failed\"}}}\n\n",
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_response_reaches_every_client_as_sent_and_never_lingers() {
    let upstream = scripted(FAILED).await;
    let base = gateway(&["--upstream", &upstream.base, "--linger", "30s"]).await;
    let body = |stream: bool| json!({"model": "m", "input": "fail", "stream": stream}).to_string();
    let streamed = Client::post_raw(&base, "/v1/responses", body(true), None).await;
    assert_eq!(streamed.status, 200, "the head went out before the failure");
    let got = named_events(&streamed.text().await);
    assert_eq!(got.last().unwrap().0.as_deref(), Some("response.failed"), "as the upstream sent it");
    let failed: Value = serde_json::from_str(&got.last().unwrap().1).unwrap();
    assert_eq!(failed["response"]["error"]["message"], "the model failed");

    // Not lingered: the same request again is a new flight, and a non-streaming client gets
    // the failure's error object with a server error's status, never a 200.
    let merged = Client::post_raw(&base, "/v1/responses", body(false), None).await;
    assert_eq!(merged.role, "leader");
    assert_eq!(merged.status, 500);
    assert_eq!(
        merged.json().await,
        json!({"error": {"code": "server_error", "message": "the model failed"}})
    );
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 2);
}

const OVERLOADED: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_o\",\"type\":\"message\",\"role\":\"assistant\",",
    "\"content\":[],\"model\":\"m\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
    "event: ping\n",
    "data: {\"type\": \"ping\"}\n\n",
    "event: error\n",
    "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_error_event_keeps_its_status_before_the_first_byte_and_its_bytes_after() {
    let upstream = scripted(OVERLOADED).await;
    let base = gateway(&["--upstream", &upstream.base, "--linger", "30s"]).await;
    let body = |stream: bool| {
        json!({"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
            .to_string()
    };
    let streamed = Client::post_raw(&base, "/v1/messages", body(true), None).await;
    let got = named_events(&streamed.text().await);
    let names: Vec<Option<&str>> = got.iter().map(|(name, _)| name.as_deref()).collect();
    assert_eq!(names, [Some("message_start"), Some("error")], "the upstream's ping is no part of the answer");
    assert_eq!(got[1].1, r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#);

    let merged = Client::post_raw(&base, "/v1/messages", body(false), None).await;
    assert_eq!(merged.role, "leader", "a failure never lingers");
    assert_eq!(merged.status, 529, "overloaded, as Anthropic answers it: the SDK raises OverloadedError");
    assert_eq!(merged.json().await["error"]["type"], "overloaded_error");
}

const CUT: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_c\",\"type\":\"message\",\"role\":\"assistant\",",
    "\"content\":[],\"model\":\"m\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_before_message_stop_ends_with_an_anthropic_error_event_never_a_message() {
    let upstream = scripted(CUT).await;
    let base = gateway(&["--upstream", &upstream.base]).await;
    let body = |stream: bool| {
        json!({"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
            .to_string()
    };
    let got = named_events(&Client::post_raw(&base, "/v1/messages", body(true), None).await.text().await);
    let (name, data) = got.last().unwrap();
    assert_eq!(name.as_deref(), Some("error"));
    let error: Value = serde_json::from_str(data).unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "api_error");
    let merged = Client::post_raw(&base, "/v1/messages", body(false), None).await;
    assert_eq!(merged.status, 502);
    assert_eq!(merged.json().await["type"], "error");
}
