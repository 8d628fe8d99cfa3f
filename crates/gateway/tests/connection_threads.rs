//! The gateway with connection threads (`--connection-threads`): each client connection is
//! served from start to end on one of them (their coalescing is in `upstream.rs`).

mod common;

use std::time::Duration;

use common::*;

const CANCELLED: &str = r#"{"error":{"message":"the request was cancelled","type":"cancelled","param":null,"code":"request_cancelled"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_requests_and_a_cancel_are_served_from_connection_threads() {
    let mock = Mock::start(Mode::Tokens { tokens: 3, interval: Duration::ZERO, gated: false }).await;
    let base = gateway(&["--upstream", &mock.base, "--connection-threads", "2"]).await;
    for i in 0..6 {
        let body = chat_body(&format!("q{i}"), false).to_string();
        let answer = Client::post_raw(&base, "/v1/chat/completions", body, None).await.json().await;
        assert_eq!(answer["object"], "chat.completion", "{answer}");
    }
    assert_eq!(mock.received(), 6);
    let endless =
        Mock::start(Mode::Tokens { tokens: 1_000_000, interval: Duration::from_millis(5), gated: false })
            .await;
    let base = gateway(&["--upstream", &endless.base, "--connection-threads", "2"]).await;
    let mut alone = Client::chat(&base, "q", None).await;
    assert_eq!(alone.next().await.unwrap(), mock_chunk(0));
    let cancelled = http().delete(format!("{base}/v1/requests/{}", alone.id)).send().await.unwrap();
    assert_eq!(cancelled.status(), 200);
    assert_eq!(alone.rest().await.last().unwrap(), CANCELLED);
    eventually("the upstream request is aborted", || async { endless.dropped() == 1 }).await;
}
