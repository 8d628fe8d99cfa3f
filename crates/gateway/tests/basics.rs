//! The gateway on its own, with the embedded simulated model: health, ids, streaming and
//! collected answers, the key, and every kind of bad input. Real HTTP on 127.0.0.1.

mod common;

use common::*;

#[tokio::test]
async fn healthz_answers() {
    let base = gateway(&[]).await;
    let response = http().get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok\n");
}
