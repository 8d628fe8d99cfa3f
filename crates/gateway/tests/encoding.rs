//! Content encodings over real sockets (issue 22): a coalesced answer is asked for, and sent,
//! uncompressed; a passed-through one keeps the upstream's bytes and its `content-encoding` together.

mod common;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use common::*;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde_json::Value;

/// An upstream that compresses: gzip whenever the request's `accept-encoding` allows it (no
/// header at all, as a server may read it, or one naming gzip), or always if `stubborn`.
struct Gzipping {
    base: String,
    stubborn: bool,
    /// The `accept-encoding` of every request received (`None`: no header).
    asked: Mutex<Vec<Option<String>>>,
}

/// The SSE answer of a chat completion, usage included.
fn chat_answer() -> String {
    let mut events: String = (0..3).map(|i| format!("data: {}\n\n", mock_chunk(i))).collect();
    events.push_str(&format!("data: {}\n\ndata: [DONE]\n\n", mock_usage()));
    events
}

const FILES: &str = r#"{"object":"list","data":[{"id":"file-1","object":"file","bytes":12345}]}"#;

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    GzDecoder::new(bytes).read_to_string(&mut text).expect("gzip bytes");
    text
}

impl Gzipping {
    async fn start(stubborn: bool) -> Arc<Gzipping> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let mock = Arc::new(Gzipping { base, stubborn, asked: Mutex::default() });
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(respond))
            .route("/v1/files", axum::routing::get(respond))
            .with_state(Arc::clone(&mock));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        mock
    }

    fn asked(&self) -> Vec<Option<String>> {
        self.asked.lock().unwrap().clone()
    }
}

async fn respond(State(mock): State<Arc<Gzipping>>, request: Request) -> Response {
    let accept = request.headers().get("accept-encoding").map(|v| v.to_str().unwrap().to_owned());
    mock.asked.lock().unwrap().push(accept.clone());
    let compress = mock.stubborn || accept.as_deref().is_none_or(|accept| accept.contains("gzip"));
    let (content_type, text) = if request.uri().path() == "/v1/files" {
        ("application/json", FILES.to_owned())
    } else {
        ("text/event-stream", chat_answer())
    };
    let response = Response::builder().header("content-type", content_type);
    if compress {
        let bytes = gzip(&text);
        let length = bytes.len();
        response
            .header("content-encoding", "gzip")
            .header("content-length", length)
            .body(Body::from(bytes))
            .unwrap()
    } else {
        response.body(Body::from(text)).unwrap()
    }
}

/// A chat request for `question`, its client asking for gzip as `curl --compressed` does.
fn chat(base: &str, question: &str, stream: bool) -> reqwest::RequestBuilder {
    http()
        .post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("accept-encoding", "gzip, deflate, br")
        .body(chat_body(question, stream).to_string())
}

#[tokio::test]
async fn a_coalesced_answer_is_asked_for_uncompressed_and_sent_without_an_encoding() {
    let mock = Gzipping::start(false).await;
    let base = gateway(&["--upstream", &mock.base]).await;

    let mut streamed = Client::send(chat(&base, "streamed", true)).await;
    assert_eq!(streamed.status, 200);
    assert!(streamed.headers.get("content-encoding").is_none(), "{:?}", streamed.headers);
    let events = streamed.rest().await;
    assert_eq!(content(&events), "t0 t1 t2 ");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));

    let whole = Client::send(chat(&base, "whole", false)).await;
    assert_eq!(whole.status, 200);
    assert!(whole.headers.get("content-encoding").is_none(), "{:?}", whole.headers);
    assert!(whole.headers.get("content-length").is_none_or(|length| length != "0"));
    let answer = whole.json().await;
    assert_eq!(answer["choices"][0]["message"]["content"], "t0 t1 t2 ", "{answer}");

    // The clients' own `accept-encoding` never reaches the upstream: the gateway reads the answer.
    assert_eq!(mock.asked(), [Some("identity".to_owned()), Some("identity".to_owned())]);
}

#[tokio::test]
async fn an_upstream_that_compresses_anyway_is_a_clear_502() {
    let mock = Gzipping::start(true).await;
    let base = gateway(&["--upstream", &mock.base]).await;
    for stream in [true, false] {
        let client = Client::send(chat(&base, &format!("stream {stream}"), stream)).await;
        assert_eq!(client.status, 502, "stream: {stream}");
        assert!(client.headers.get("content-encoding").is_none(), "{:?}", client.headers);
        let body: Value = client.json().await;
        let error = &body["error"];
        assert_eq!(error["type"], "upstream_error", "{body}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains("content-encoding: gzip") && message.contains("identity"), "{message}");
    }
    assert_eq!(mock.asked().len(), 2);
}

#[tokio::test]
async fn passthrough_keeps_the_upstreams_bytes_and_their_encoding_together() {
    let mock = Gzipping::start(false).await;
    let base = gateway(&["--upstream", &mock.base]).await;
    // Asked for gzip, and with no `accept-encoding` at all (the upstream may pick gzip then too).
    for accept in [Some("gzip"), None] {
        let mut request = http().get(format!("{base}/v1/files"));
        if let Some(accept) = accept {
            request = request.header("accept-encoding", accept);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers().get("content-encoding").unwrap(), "gzip", "{accept:?}");
        let bytes = response.bytes().await.unwrap();
        assert_eq!(gunzip(&bytes), FILES, "{accept:?}: the client can decode what it got");
    }
    // Asked for identity, the upstream's plain bytes with no encoding.
    let response = http().get(format!("{base}/v1/files")).header("accept-encoding", "identity").send().await;
    let response = response.unwrap();
    assert!(response.headers().get("content-encoding").is_none());
    assert_eq!(response.text().await.unwrap(), FILES);
    assert_eq!(mock.asked(), [Some("gzip".to_owned()), None, Some("identity".to_owned())]);
}
