//! The gateway's bounds (G7) over real sockets: declared and half-sent bodies, stalled
//! connections, admission, one upstream event, an upstream error body, the default body limit.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// The simulated model, answering at once.
const QUICK_SIM: &[&str] =
    &["--sim-first-token-delay", "0ms", "--sim-token-interval", "0ms", "--sim-tokens", "3"];

/// A request head declaring a body of `length` bytes.
fn head(method: &str, path: &str, length: u64) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    )
}

#[tokio::test]
async fn a_declared_ten_gigabyte_body_is_refused_before_it_is_sent() {
    let mock = Mock::start(Mode::Tokens { tokens: 1, interval: Duration::ZERO, gated: false }).await;
    let simulated = gateway(QUICK_SIM).await;
    let proxied = gateway(&["--upstream", &mock.base]).await;
    // Coalesced on either backend, and a passthrough path (whose body would stream upstream).
    for (base, path) in
        [(&simulated, "/v1/chat/completions"), (&proxied, "/v1/chat/completions"), (&proxied, "/v1/files")]
    {
        // Only the head is sent: a 413 that waited for the body would never come.
        let mut stream = raw(base, head("POST", path, 10_000_000_000).as_bytes()).await;
        let response = read_response(&mut stream).await;
        assert_eq!(response.status, 413, "{path}: {}", response.head);
        assert!(response.head.contains("content-type: application/json"), "{}", response.head);
        // The body is never read: the client must not send another request on this connection.
        assert!(response.head.contains("connection: close"), "{}", response.head);
        openai_error(&response.json(), "request_too_large");
    }
    assert!(mock.seen.lock().unwrap().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn a_half_sent_body_gets_408_and_its_connection_is_closed() {
    let base = gateway(&[QUICK_SIM, &["--body-timeout", "300ms"]].concat()).await;
    let mut stream = raw(&base, head("POST", "/v1/chat/completions", 100).as_bytes()).await;
    tokio::io::AsyncWriteExt::write_all(&mut stream, br#"{"model":""#).await.unwrap();
    let response = read_response(&mut stream).await;
    assert_eq!(response.status, 408, "{}", response.head);
    openai_error(&response.json(), "request_timeout");
    // The header timeout (30 s by default) is not what closes it: the deadline is 10 s.
    let after = closed_by_server(&mut stream).await;
    assert!(after.is_empty(), "{:?}", String::from_utf8_lossy(&after));
    assert_eq!(metric(&base, "streamflight_requests_total").await, 0);
}

#[tokio::test]
async fn a_half_sent_passthrough_body_gets_408_not_a_502() {
    let mock = Mock::start(Mode::Tokens { tokens: 1, interval: Duration::ZERO, gated: false }).await;
    let base = gateway(&["--upstream", &mock.base, "--body-timeout", "300ms"]).await;
    let mut stream = raw(&base, head("POST", "/v1/files", 100).as_bytes()).await;
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"0123456789").await.unwrap();
    let response = read_response(&mut stream).await;
    assert_eq!(response.status, 408, "the client's slowness, not the upstream's failure: {}", response.head);
    openai_error(&response.json(), "request_timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_are_closed_while_healthz_answers() {
    let base = gateway(&[QUICK_SIM, &["--header-timeout", "300ms"]].concat()).await;
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(raw(&base, b"").await);
    }
    for _ in 0..20 {
        stalled.push(raw(&base, b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\n").await);
    }
    // Part of HTTP/2's preface: its server waits for the rest.
    let mut preface = Vec::new();
    for _ in 0..10 {
        preface.push(raw(&base, b"PRI * HTTP/2.0\r\n").await);
    }
    let mut fresh = raw(&base, b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let health = read_response(&mut fresh).await;
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok\n"[..]));
    for stream in &mut stalled {
        let sent = closed_by_server(stream).await;
        // HTTP/1's header timeout may answer 408 first; nothing else.
        assert!(sent.is_empty() || sent.starts_with(b"HTTP/1.1 408"), "{:?}", String::from_utf8_lossy(&sent));
    }
    for stream in &mut preface {
        let sent = closed_by_server(stream).await;
        // At most the server's own preface, a SETTINGS frame (type 4), as HTTP/2 lets it send
        // first, then frames such as GOAWAY; never an HTTP/1.1 answer.
        assert!(sent.is_empty() || sent.get(3) == Some(&4), "{:?}", String::from_utf8_lossy(&sent));
    }
    let answer = Client::chat(&base, "still serving?", None).await.rest().await;
    assert_eq!(answer.last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn over_the_concurrency_limit_a_request_gets_503_until_a_stream_ends() {
    let mock = Mock::start(Mode::Tokens { tokens: 3, interval: Duration::ZERO, gated: true }).await;
    let base = gateway(&["--upstream", &mock.base, "--max-concurrent-requests", "2"]).await;
    // Each holds its admission until its stream ends, which waits for the gate.
    let mut first = Client::chat(&base, "one", None).await;
    let mut second = Client::chat(&base, "two", None).await;
    assert_eq!((first.status, second.status), (200, 200));

    for request in [
        http().post(format!("{base}/v1/chat/completions")).body(chat_body("three", false).to_string()),
        http().get(format!("{base}/v1/models")),
    ] {
        // Bounded: a request admitted by mistake would wait for the gate.
        let refused = Client::send(request.timeout(DEADLINE)).await;
        assert_eq!(refused.status, 503);
        assert!(refused.headers.contains_key("retry-after"), "{:?}", refused.headers);
        openai_error(&refused.json().await, "too_many_requests");
    }
    assert_eq!(http().get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(metric(&base, "streamflight_rejected_total").await, 2);
    assert_eq!(metric(&base, "streamflight_in_flight_requests").await, 2);
    // Each refusal is counted under the endpoint it was for, once its body is gone.
    for endpoint in ["chat", "passthrough"] {
        let refused = format!(
            r#"streamflight_responses_total{{endpoint="{endpoint}",role="none",outcome="failed",status_class="5xx",model=""}} 1"#
        );
        eventually(&refused, || async {
            let text = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
            text.lines().any(|line| line == refused)
        })
        .await;
    }
    assert_eq!(mock.received(), 2, "a refused request never reaches the upstream");

    mock.open_gate();
    assert_eq!(first.rest().await.last().map(String::as_str), Some("[DONE]"));
    // The permit goes back when the server drops the finished body, just after the client
    // has read its end: retried until then.
    let admitted = std::sync::Mutex::new(None);
    eventually("a new request is admitted", || async {
        let request =
            http().post(format!("{base}/v1/chat/completions")).body(chat_body("four", false).to_string());
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        *admitted.lock().unwrap() = Some((status, response.text().await.unwrap()));
        status != 503
    })
    .await;
    let (status, body) = admitted.into_inner().unwrap().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(second.rest().await.last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn an_upstream_event_over_the_bound_fails_the_flight() {
    let mock = Mock::start(Mode::HugeEvent { after: 1, bytes: 5_000 }).await;
    let base = gateway(&["--upstream", &mock.base, "--max-event-bytes", "1000"]).await;
    // The head went out with the upstream's: the failure comes as an error event.
    let mut streaming = Client::chat(&base, "streamed", None).await;
    assert_eq!(streaming.status, 200);
    assert_eq!(streaming.next().await.unwrap(), mock_chunk(0), "an event within the bound passes");
    let events = streaming.rest().await;
    assert_eq!(events.len(), 1, "{events:?}");
    let error = openai_error(&serde_json::from_str(&events[0]).unwrap(), "upstream_too_large");
    assert!(error["message"].as_str().unwrap().contains("--max-event-bytes"), "{error}");

    let collected =
        http().post(format!("{base}/v1/chat/completions")).body(chat_body("collected", false).to_string());
    let collected = Client::send(collected).await;
    assert_eq!(collected.status, 502);
    openai_error(&collected.json().await, "upstream_too_large");
    assert_eq!(mock.received(), 2);
    assert_eq!(metric(&base, "streamflight_upstream_errors_total").await, 2);
}

#[tokio::test]
async fn an_upstream_error_body_reaches_clients_cut_at_the_bound() {
    let mock = Mock::start(Mode::BigError { status: 500, bytes: 100_000 }).await;
    let base = gateway(&["--upstream", &mock.base, "--max-error-body", "1000"]).await;
    let sent = mock_big_error(100_000);
    for stream in [true, false] {
        let response = http()
            .post(format!("{base}/v1/chat/completions"))
            .body(chat_body(&format!("streaming: {stream}"), stream).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 500, "stream: {stream}");
        let body = response.text().await.unwrap();
        assert_eq!(body.len(), 1000, "stream: {stream}");
        assert!(sent.starts_with(&body), "the upstream's own bytes, as sent");
    }
}

#[tokio::test]
async fn the_default_body_limit_takes_a_vision_request_and_refuses_past_32_mib() {
    let base = gateway(QUICK_SIM).await;
    // About what a 1.8 MB photo weighs in base64.
    let image = format!("data:image/jpeg;base64,{}", "QUJD".repeat(600_000));
    let body = json!({"model": "test-model", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is in this picture?"},
        {"type": "image_url", "image_url": {"url": image}},
    ]}]})
    .to_string();
    assert!(body.len() > 2_400_000);
    let response = Client::send(http().post(format!("{base}/v1/chat/completions")).body(body)).await;
    assert_eq!(response.status, 200);
    let answer = response.json().await;
    assert!(answer["choices"][0]["message"]["content"].as_str().is_some_and(|c| !c.is_empty()), "{answer}");

    let mut stream = raw(&base, head("POST", "/v1/chat/completions", (32 << 20) + 1).as_bytes()).await;
    let response = read_response(&mut stream).await;
    assert_eq!(response.status, 413);
}

/// The read buffer is 8 KiB (what a held stream's connection keeps): a request head up to
/// about that is served, a larger one gets 431 and its connection is closed.
#[tokio::test]
async fn a_request_head_over_eight_kib_gets_431() {
    let base = gateway(QUICK_SIM).await;
    let body = chat_body("head size", false).to_string();
    let request = |cookie: usize| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             cookie: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            "c".repeat(cookie),
            body.len()
        )
    };
    let mut stream = raw(&base, request(7_000).as_bytes()).await;
    assert_eq!(read_response(&mut stream).await.status, 200, "a 7 KB cookie fits");
    let mut stream = raw(&base, request(9_000).as_bytes()).await;
    let response = read_response(&mut stream).await;
    assert_eq!(response.status, 431, "{}", response.head);
}
