//! The gateway as a transparent proxy in front of a mock upstream that records every request:
//! usage, headers and query both ways, the body as sent, lossless keys, passthrough,
//! embeddings, redirects, tenant-scoped cancel, and how a cancelled stream ends.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

fn gated() -> Mode {
    Mode::Tokens { tokens: 3, interval: Duration::ZERO, gated: true }
}

fn quick() -> Mode {
    Mode::Tokens { tokens: 3, interval: Duration::ZERO, gated: false }
}

fn post(base: &str, path: &str, body: &str) -> reqwest::RequestBuilder {
    http().post(format!("{base}{path}")).header("content-type", "application/json").body(body.to_owned())
}

#[tokio::test]
async fn usage_goes_only_to_the_clients_that_asked_for_it() {
    let mock = Mock::start(gated()).await;
    let base = gateway(&["--upstream", &mock.base]).await;
    let plain = chat_body("q", true);
    let mut asking = chat_body("q", true);
    asking["stream_options"] = json!({"include_usage": true});
    let mut without = Client::send(post(&base, "/v1/chat/completions", &plain.to_string())).await;
    let mut with = Client::send(post(&base, "/v1/chat/completions", &asking.to_string())).await;
    assert_ne!(with.role, "leader", "stream_options does not split a flight");
    let collected =
        tokio::spawn(Client::send(post(&base, "/v1/chat/completions", &chat_body("q", false).to_string())));
    eventually("all three are in", || async { metric(&base, "streamflight_active_requests").await == 3 })
        .await;
    mock.open_gate();
    let chunks: Vec<String> = (0..3).map(mock_chunk).collect();
    assert_eq!(without.rest().await, [&chunks[..], &["[DONE]".to_owned()]].concat());
    assert_eq!(with.rest().await, [&chunks[..], &[mock_usage(), "[DONE]".to_owned()]].concat());
    let collected = collected.await.unwrap().json().await;
    assert_eq!(collected["usage"]["total_tokens"], 8);
    assert_eq!(collected["choices"][0]["message"]["content"], "t0 t1 t2 ");
    assert_eq!(mock.received(), 1);
}

#[tokio::test]
async fn headers_and_query_pass_both_ways_and_the_selectors_are_in_the_key() {
    let mock = Mock::start(gated()).await;
    let base = gateway(&["--upstream", &mock.base]).await;
    let body = chat_body("q", true).to_string();
    let request = |org: &str| {
        http()
            .post(format!("{base}/v1/chat/completions?api-version=2024-06-01"))
            .header("authorization", "Bearer alice")
            .header("openai-organization", org)
            .header("openai-project", "proj-1")
            .header("user-agent", "OpenAI/Python 2.0")
            .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .header("idempotency-key", "idem-1")
            .header("accept-encoding", "gzip")
            .body(body.clone())
    };
    let mut first = Client::send(request("org-a")).await;
    let mut other_org = Client::send(request("org-b")).await;
    assert_eq!(
        (first.role.as_str(), other_org.role.as_str()),
        ("leader", "leader"),
        "the organisation is in the key"
    );
    eventually("both went upstream", || async { mock.received() == 2 }).await;
    mock.open_gate();
    first.rest().await;
    other_org.rest().await;

    let seen = mock.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.target, "/v1/chat/completions?api-version=2024-06-01");
    for (name, value) in [
        ("authorization", "Bearer alice"),
        ("openai-project", "proj-1"),
        ("user-agent", "OpenAI/Python 2.0"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("idempotency-key", "idem-1"),
    ] {
        assert_eq!(seen.header(name).as_deref(), Some(value), "{name}");
    }
    assert_eq!(
        seen.header("accept-encoding").as_deref(),
        Some("identity"),
        "the gateway reads the stream: it must come uncompressed, and says so"
    );
    // The upstream's headers come back, its id under its own name; a cookie is never shared.
    assert_eq!(first.headers["x-ratelimit-remaining-tokens"], "999");
    assert_eq!(first.headers["x-upstream-request-id"], "mock-req-1");
    assert_ne!(first.headers["x-request-id"], "mock-req-1");
    assert!(first.headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn the_body_reaches_the_upstream_as_sent_and_big_integers_keep_flights_apart() {
    let mock = Mock::start(gated()).await;
    let base = gateway(&["--upstream", &mock.base]).await;
    let body = |seed: &str| {
        format!(
            r#"{{"z_first":1,"model":"m","seed":{seed},"temperature":0.70,"messages":[{{"role":"user","content":"caf\u00e9"}}],"stream":true}}"#
        )
    };
    let a = body("123456789012345678901234567890");
    let b = body("123456789012345678901234567891");
    let mut first = Client::send(post(&base, "/v1/chat/completions", &a)).await;
    let mut second = Client::send(post(&base, "/v1/chat/completions", &b)).await;
    assert_eq!(
        (first.role.as_str(), second.role.as_str()),
        ("leader", "leader"),
        "seeds differ: two flights"
    );
    // The same seed written another way is the same request.
    let same = a.replace("0.70", "7e-1");
    let mut third = Client::send(post(&base, "/v1/chat/completions", &same)).await;
    assert_ne!(third.role, "leader");
    eventually("two went upstream", || async { mock.received() == 2 }).await;
    mock.open_gate();
    for client in [&mut first, &mut second, &mut third] {
        assert_eq!(client.rest().await.last().unwrap(), "[DONE]");
    }
    let mut sent: Vec<String> =
        mock.seen.lock().unwrap().iter().map(|s| String::from_utf8(s.body.to_vec()).unwrap()).collect();
    sent.sort();
    for (sent, seed) in sent.iter().zip(["123456789012345678901234567890", "123456789012345678901234567891"])
    {
        assert!(sent.contains(&format!(r#""seed":{seed}"#)), "the seed went as sent: {sent}");
        assert!(sent.contains(r#""temperature":0.70"#), "numbers untouched: {sent}");
        assert!(sent.find("z_first").unwrap() < sent.find("model").unwrap(), "key order untouched: {sent}");
        assert!(sent.contains(r#""stream":true"#) && sent.contains(r#""include_usage":true"#), "{sent}");
    }
}

#[tokio::test]
async fn every_other_path_and_method_passes_through_unchanged() {
    let mock = Mock::start(quick()).await;
    let base = gateway(&["--upstream", &mock.base, "--upstream-api-key", "sk-gw"]).await;
    let response = http()
        .get(format!("{base}/v1/models?limit=2"))
        .header("authorization", "Bearer client")
        .header("openai-beta", "assistants=v2")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-mock"], "echo");
    let echoed: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(echoed, json!({"method": "GET", "target": "/v1/models?limit=2", "body": ""}));
    let seen = mock.last();
    assert_eq!(
        seen.header("authorization").as_deref(),
        Some("Bearer sk-gw"),
        "the gateway's key, never the client's"
    );
    assert_eq!(seen.header("openai-beta").as_deref(), Some("assistants=v2"));

    for (method, path) in
        [("PUT", "/v1/files/f-1?purpose=x"), ("POST", "/openai/deployments/d/chat/completions?api-version=2")]
    {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = http()
            .request(method.clone(), format!("{base}{path}"))
            .body("raw \u{1F600} bytes")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let echoed: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(echoed, json!({"method": method.as_str(), "target": path, "body": "raw \u{1F600} bytes"}));
    }
    assert_eq!(metric(&base, "streamflight_passthrough_total").await, 3);
    assert_eq!(mock.received(), 0, "nothing was coalesced");
}

#[tokio::test]
async fn identical_embeddings_share_one_upstream_call_and_numbers_stay_exact() {
    let mock = Mock::start(Mode::Tokens { tokens: 1, interval: Duration::ZERO, gated: true }).await;
    let base = gateway(&["--upstream", &mock.base]).await;
    let body = r#"{"model":"embed","input":"the same text"}"#;
    let clients: Vec<_> =
        (0..5).map(|_| tokio::spawn(Client::send(post(&base, "/v1/embeddings", body)))).collect();
    eventually("all five are in", || async { metric(&base, "streamflight_active_requests").await == 5 })
        .await;
    mock.open_gate();
    for client in clients {
        let client = client.await.unwrap();
        assert_eq!(client.status, 200);
        let text = client.text().await;
        assert!(text.contains("3.0000000000000000001"), "the upstream's numbers as sent: {text}");
    }
    assert_eq!(mock.received(), 1);
    assert_eq!(mock.last().body, body.as_bytes(), "an embeddings body goes exactly as sent");
}

#[tokio::test]
async fn a_redirect_is_not_followed_but_passed_to_the_client() {
    let mock = Mock::start(Mode::Redirect).await;
    let base = gateway(&["--upstream", &mock.base]).await;
    let client = Client::chat(&base, "q", Some("Bearer secret-key")).await;
    assert_eq!(client.status, 302);
    assert_eq!(client.headers["location"], "http://127.0.0.1:9/elsewhere");
    assert_eq!(mock.received(), 1);
}

#[tokio::test]
async fn only_the_tenant_that_made_a_request_can_cancel_it() {
    let mock =
        Mock::start(Mode::Tokens { tokens: 1_000_000, interval: Duration::from_millis(5), gated: false })
            .await;
    let base = gateway(&["--upstream", &mock.base]).await;
    let mut alice = Client::chat(&base, "q", Some("Bearer alice")).await;
    let id = alice.id.clone();
    let delete = |authorization: Option<&str>| {
        let mut request = http().delete(format!("{base}/v1/requests/{id}"));
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(delete(Some("Bearer bob")).await, 404, "another tenant learns nothing");
    assert_eq!(delete(None).await, 404);
    assert_eq!(alice.next().await.unwrap(), mock_chunk(0), "alice's stream goes on");
    assert_eq!(delete(Some("Bearer alice")).await, 200);
    // The stream ends the way SDK loops expect: an error event, never a chunk without choices.
    let events = alice.rest().await;
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "request_cancelled", "{last}");
    assert_eq!(last["error"]["type"], "cancelled");
    eventually("the lone request's upstream is aborted", || async { mock.dropped() == 1 }).await;
    let response = http().delete(format!("{base}/v1/requests/%FF")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/json");
}

#[tokio::test]
async fn sharing_tenants_needs_the_gateways_own_key_and_hides_roles() {
    use clap::Parser;
    let settings = streamflight_gateway::Settings::parse_from([
        "streamflight-gateway",
        "--upstream",
        "http://127.0.0.1:9/v1",
        "--share-across-tenants",
    ]);
    let refused = streamflight_gateway::App::new(settings).err().expect("refused");
    assert!(refused.contains("--upstream-api-key"), "{refused}");

    let mock = Mock::start(gated()).await;
    let base =
        gateway(&["--upstream", &mock.base, "--share-across-tenants", "--upstream-api-key", "sk-gw"]).await;
    let mut alice = Client::chat(&base, "q", Some("Bearer alice")).await;
    let mut bob = Client::chat(&base, "q", Some("Bearer bob")).await;
    assert!(
        alice.headers.get("x-streamflight-role").is_none()
            && bob.headers.get("x-streamflight-role").is_none()
    );
    mock.open_gate();
    assert_eq!(alice.rest().await, bob.rest().await);
    assert_eq!(mock.received(), 1);
    assert_eq!(mock.last().header("authorization").as_deref(), Some("Bearer sk-gw"));
}
