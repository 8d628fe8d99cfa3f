//! Request bodies that could mislead or stall the gateway, over real sockets (issue 22): a member
//! named twice (what would the upstream read?), and bodies big enough to hold an async worker.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A mock whose streams wait for the gate after their first chunk.
fn gated() -> Mode {
    Mode::Tokens { tokens: 3, interval: Duration::ZERO, gated: true }
}

fn quick() -> Mode {
    Mode::Tokens { tokens: 3, interval: Duration::ZERO, gated: false }
}

/// A streaming chat body asking `question`, as raw JSON text.
fn asking(question: &str) -> String {
    format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{question}"}}],"stream":true}}"#)
}

/// The body, as text, of every request the mock received.
fn received(mock: &Mock) -> Vec<String> {
    mock.seen.lock().unwrap().iter().map(|seen| String::from_utf8_lossy(&seen.body).into_owned()).collect()
}

#[tokio::test]
async fn a_body_that_names_a_member_twice_is_refused_and_never_shares_an_answer() {
    let mock = Mock::start(gated()).await;
    let base =
        gateway(&["--upstream", &mock.base, "--share-across-tenants", "--upstream-api-key", "k"]).await;
    // Bob's flight asks B, and stays in the air until the gate opens.
    let mut bob = Client::chat(&base, "B", Some("Bearer bob")).await;
    assert_eq!(bob.status, 200);
    eventually("bob's flight reaches the upstream", || async { mock.received() == 1 }).await;

    // Alice's bodies read as B by a parser that keeps the last duplicate, as A by one that keeps
    // the first (or the other way round): none may join Bob's flight or start one of its own.
    let a = r#"[{"role":"user","content":"A"}]"#;
    let b = r#"[{"role":"user","content":"B"}]"#;
    let hidden = [
        (format!(r#"{{"model":"m","messages":{a},"messages":{b},"stream":true}}"#), "`messages`"),
        (format!(r#"{{"model":"m","messages":{b},"messages":{a},"stream":true}}"#), "`messages`"),
        (format!(r#"{{"model":"m","\u006dessages":{a},"messages":{b},"stream":true}}"#), "`messages`"),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"A","content":"B"}],"stream":true}"#
                .to_owned(),
            "`messages[0].content`",
        ),
        (format!(r#"{{"model":"m","messages":{b},"stream":true,"stream":false}}"#), "`stream`"),
        (format!(r#"{{"model":"m","model":"m","messages":{b},"stream":true}}"#), "`model`"),
    ];
    for (body, path) in &hidden {
        let alice = Client::post_raw(&base, "/v1/chat/completions", body.clone(), Some("Bearer alice")).await;
        assert_eq!(alice.status, 400, "{body}");
        assert!(alice.headers.get("x-streamflight-role").is_none());
        let error = openai_error(&alice.json().await, "duplicate_member");
        assert_eq!(error["type"], "invalid_request_error");
        assert!(error["message"].as_str().unwrap().contains(path), "{body}: {error}");
    }
    // Embeddings (sent upstream as they are) too, and every coalesced path.
    let embedding = r#"{"model":"e","input":"A","input":"B"}"#.to_owned();
    let alice = Client::post_raw(&base, "/v1/embeddings", embedding, Some("Bearer alice")).await;
    assert_eq!(alice.status, 400);
    openai_error(&alice.json().await, "duplicate_member");

    assert_eq!(mock.received(), 1, "no refused body reached the upstream");
    mock.open_gate();
    assert_eq!(bob.rest().await.last().map(String::as_str), Some("[DONE]"));
    // The body without duplicates is served, and is what the upstream got.
    let mut carol = Client::post_raw(&base, "/v1/chat/completions", asking("B"), Some("Bearer carol")).await;
    assert_eq!(carol.status, 200);
    assert_eq!(carol.rest().await.last().map(String::as_str), Some("[DONE]"));
    let bodies = received(&mock);
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    for body in &bodies {
        assert!(body.contains(r#""content":"B""#) && !body.contains(r#""A""#), "{body}");
        assert_eq!(body.matches("\"messages\"").count(), 1, "{body}");
    }
}

/// A chat body of exactly `size` bytes (at least 100), its one message padded with `x`.
fn body_of(size: usize) -> String {
    let empty = asking("");
    let padded = asking(&"x".repeat(size - empty.len()));
    assert_eq!(padded.len(), size);
    padded
}

const OFF_WORKER: &str = "streamflight_bodies_parsed_off_worker_total";

#[tokio::test]
async fn a_body_over_256_kib_is_parsed_off_the_async_workers_and_a_smaller_one_is_not() {
    let mock = Mock::start(quick()).await;
    let base = gateway(&["--upstream", &mock.base]).await;
    let threshold = 256 * 1024;
    for (size, counted) in [(200, 0), (threshold, 0), (threshold + 1, 1), (300 * 1024, 2)] {
        let mut client = Client::post_raw(&base, "/v1/chat/completions", body_of(size), None).await;
        assert_eq!(client.status, 200, "{size} bytes");
        assert_eq!(client.rest().await.last().map(String::as_str), Some("[DONE]"));
        assert_eq!(metric(&base, OFF_WORKER).await, counted, "after a body of {size} bytes");
    }
    // Refused off the workers as on them, in the same words.
    let mut twice = body_of(300 * 1024);
    twice.insert_str(1, r#""model":"m","#);
    let refused = Client::post_raw(&base, "/v1/chat/completions", twice, None).await;
    assert_eq!(refused.status, 400);
    openai_error(&refused.json().await, "duplicate_member");
    assert_eq!(metric(&base, OFF_WORKER).await, 3);
    assert_eq!(mock.received(), 4);
}

/// A chat body asking `question` with `keys` members in its `metadata`, written in reverse order
/// (so that they must be sorted), as the probe of issue 22 sent them (18 MB for a million).
fn many_keys(question: &str, keys: usize) -> String {
    let mut body = String::with_capacity(keys * 22 + 100);
    body.push_str(&format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{question}"}}],"metadata":{{"#
    ));
    for i in (0..keys).rev() {
        body.push_str(&format!(r#""key_{i:07}":{i},"#));
    }
    body.pop();
    body.push_str(r#"},"stream":true}"#);
    body
}

/// The simulated model, answering at once.
const QUICK_SIM: &[&str] =
    &["--sim-first-token-delay", "0ms", "--sim-token-interval", "0ms", "--sim-tokens", "3"];

/// Million-key bodies beside small requests and `/healthz`: once the big ones are being parsed
/// (each is counted as its parse is handed to the blocking pool), every small request is answered
/// in full, on a runtime of one thread that a parse on it would hold for seconds. Structural
/// only: how long anything took is printed, never asserted.
#[tokio::test]
async fn million_key_bodies_beside_small_requests_leave_them_answered() {
    // The simulated model: no upstream of the test's own spends its time re-reading 18 MB.
    let base = gateway(QUICK_SIM).await;
    let mut huge = Vec::new();
    for n in 0..2 {
        let big = many_keys(&format!("many {n}"), 1_000_000);
        println!("a million-key body: {} bytes", big.len());
        let base = base.clone();
        huge.push(tokio::spawn(async move {
            let mut client = Client::post_raw(&base, "/v1/chat/completions", big, None).await;
            (client.status, client.rest().await, Instant::now())
        }));
    }
    eventually("a big body is being parsed off the workers", || async {
        metric(&base, OFF_WORKER).await >= 1
    })
    .await;
    let started = Instant::now();
    let mut health = Vec::new();
    for i in 0..20 {
        let sent = Instant::now();
        let response = http().get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "ok\n");
        health.push(sent.elapsed());
        let mut small = Client::chat(&base, &format!("small {i}"), None).await;
        assert_eq!(small.status, 200, "small request {i}");
        assert_eq!(small.rest().await.last().map(String::as_str), Some("[DONE]"));
    }
    let small_done = Instant::now();
    for task in huge {
        let (status, events, done) = task.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        println!("a big body answered {:?} after the small ones", done.saturating_duration_since(small_done));
    }
    health.sort();
    println!(
        "/healthz while the big bodies were parsed: median {:?}, slowest {:?}; 20 small requests took {:?}",
        health[health.len() / 2],
        health[health.len() - 1],
        small_done - started
    );
    assert_eq!(metric(&base, OFF_WORKER).await, 2);
    assert_eq!(metric(&base, "streamflight_flights_total").await, 22);
}
