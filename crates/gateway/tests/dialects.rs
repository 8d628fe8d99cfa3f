//! Every dialect as its users meet it (G10), against the embedded simulated model over real
//! HTTP: the Responses API and Anthropic's Messages coalesced, merged, lingered and resumed.

mod common;

use common::*;
use serde_json::{Value, json};

/// A first token late enough for every client of a burst to join before it, even on a machine
/// busy with builds (with 300 ms, a burst was seen to straddle two flights).
const SLOW_START: &[&str] =
    &["--sim-first-token-delay", "3s", "--sim-token-interval", "2ms", "--sim-tokens", "12"];

/// One SSE event as a client reads it.
#[derive(Clone, Debug, PartialEq)]
struct Sse {
    id: Option<u64>,
    name: Option<String>,
    data: String,
}

/// The events of a whole SSE body.
fn events(text: &str) -> Vec<Sse> {
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::to_owned);
            let data: Vec<&str> = block.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            (!data.is_empty()).then(|| Sse {
                id: field("id: ").map(|id| id.parse().unwrap()),
                name: field("event: "),
                data: data.join("\n"),
            })
        })
        .collect()
}

fn responses_body(input: &str, stream: bool) -> Value {
    json!({"model": "m", "input": input, "stream": stream})
}

fn messages_body(content: &str, stream: bool) -> Value {
    json!({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": content}], "stream": stream})
}

async fn post(base: &str, path: &str, body: &Value) -> Client {
    Client::post_raw(base, path, body.to_string(), Some("Bearer alice")).await
}

/// The text of an answer's deltas, whichever API's events they are.
fn text(events: &[Sse]) -> String {
    events
        .iter()
        .filter_map(|event| {
            let data: Value = serde_json::from_str(&event.data).ok()?;
            match event.name.as_deref()? {
                "response.output_text.delta" => data["delta"].as_str().map(str::to_owned),
                "content_block_delta" => data["delta"]["text"].as_str().map(str::to_owned),
                _ => None,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_streams_of_each_dialect_share_one_flight_with_every_event_named_and_numbered() {
    let base = gateway(SLOW_START).await;
    for (path, body, last) in [
        ("/v1/responses", responses_body("one for all", true), "response.completed"),
        ("/v1/messages", messages_body("one for all", true), "message_stop"),
    ] {
        let flights = metric(&base, "streamflight_flights_total").await;
        let clients = futures::future::join_all((0..10).map(|_| post(&base, path, &body))).await;
        let mut roles: Vec<String> = clients.iter().map(|client| client.role.clone()).collect();
        roles.sort();
        assert_eq!(roles.iter().filter(|role| *role == "leader").count(), 1, "{path}: {roles:?}");
        let bodies = futures::future::join_all(clients.into_iter().map(Client::text)).await;
        let first = events(&bodies[0]);
        assert!(bodies.iter().all(|body| events(body) == first), "{path}: every client, the same events");
        assert_eq!(metric(&base, "streamflight_flights_total").await, flights + 1, "{path}: one flight");
        let ids: Vec<u64> = first.iter().map(|event| event.id.expect("an id on every event")).collect();
        assert_eq!(ids, (1..=first.len() as u64).collect::<Vec<_>>(), "{path}");
        assert!(first.iter().all(|event| event.name.is_some()), "{path}: every event named");
        assert!(
            first.iter().all(|event| event.name.as_deref() != Some("ping")),
            "{path}: pings are not stored"
        );
        assert_eq!(first.last().unwrap().name.as_deref(), Some(last), "{path}: no [DONE] of chat's");
        assert_eq!(text(&first).split_whitespace().count(), 12, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_streaming_client_gets_the_apis_object_merged_from_the_shared_stream() {
    let base = gateway(SLOW_START).await;
    let (stream, whole) = (messages_body("merge me", true), messages_body("merge me", false));
    let (streamed, merged) =
        tokio::join!(post(&base, "/v1/messages", &stream), post(&base, "/v1/messages", &whole));
    let streamed = events(&streamed.text().await);
    assert_eq!(merged.headers["content-type"], "application/json");
    let message = merged.json().await;
    let start: Value = serde_json::from_str(&streamed[0].data).unwrap();
    assert_eq!(message["id"], start["message"]["id"], "one flight: one message");
    assert_eq!(message["type"], "message");
    assert_eq!(message["content"][0]["text"], text(&streamed));
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["usage"]["output_tokens"], 12);
    assert_eq!(metric(&base, "streamflight_flights_total").await, 1);

    let (stream, whole) = (responses_body("merge me", true), responses_body("merge me", false));
    let (streamed, merged) =
        tokio::join!(post(&base, "/v1/responses", &stream), post(&base, "/v1/responses", &whole));
    let streamed = events(&streamed.text().await);
    let response = merged.json().await;
    let completed: Value = serde_json::from_str(&streamed.last().unwrap().data).unwrap();
    assert_eq!(response, completed["response"], "the response that ended the stream");
    assert_eq!(response["status"], "completed");
    assert_eq!(response["output"][0]["content"][0]["text"], text(&streamed));
    assert_eq!(metric(&base, "streamflight_flights_total").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_ended_normally_lingers_for_every_dialect() {
    let base =
        gateway(&["--sim-first-token-delay", "0ms", "--sim-token-interval", "0ms", "--linger", "30s"]).await;
    for (path, body) in
        [("/v1/responses", responses_body("again", true)), ("/v1/messages", messages_body("again", true))]
    {
        let first = post(&base, path, &body).await.text().await;
        let again = post(&base, path, &body).await;
        assert_eq!(again.role, "joiner", "{path}");
        assert_eq!(events(&again.text().await), events(&first), "{path}: the same answer, replayed");
    }
    assert_eq!(metric(&base, "streamflight_flights_total").await, 2);
    assert_eq!(metric(&base, "streamflight_lingered_total").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responses_stream_is_picked_up_again_by_the_apis_own_call() {
    let base =
        gateway(&["--sim-first-token-delay", "10ms", "--sim-token-interval", "40ms", "--sim-tokens", "20"])
            .await;
    let mut cut = post(&base, "/v1/responses", &responses_body("pick me up", true)).await;
    let created: Value = serde_json::from_str(&cut.next().await.unwrap()).unwrap();
    let id = created["response"]["id"].as_str().unwrap().to_owned();
    for _ in 0..4 {
        cut.next().await.unwrap();
    }
    drop(cut);
    let flights = metric(&base, "streamflight_flights_total").await;
    // Another tenant learns nothing of it.
    let other = http()
        .get(format!("{base}/v1/responses/{id}?stream=true&starting_after=4"))
        .header("authorization", "Bearer bob")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    let resumed = Client::send(
        http()
            .get(format!("{base}/v1/responses/{id}?stream=true&starting_after=4"))
            .header("authorization", "Bearer alice"),
    )
    .await;
    assert_eq!(resumed.status, 200);
    let rest = events(&resumed.text().await);
    let numbers: Vec<u64> = rest
        .iter()
        .map(|event| serde_json::from_str::<Value>(&event.data).unwrap()["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers.first(), Some(&5), "the events after sequence_number 4: {numbers:?}");
    assert!(numbers.windows(2).all(|pair| pair[1] == pair[0] + 1), "no gap: {numbers:?}");
    assert_eq!(rest.last().unwrap().name.as_deref(), Some("response.completed"));
    assert_eq!(metric(&base, "streamflight_flights_total").await, flights, "no new upstream request");
}

#[tokio::test]
async fn the_gateways_own_errors_on_messages_are_in_anthropics_shape() {
    let base = gateway(&["--body-limit", "200"]).await;
    let not_json = Client::post_raw(&base, "/v1/messages", "{".to_owned(), None).await;
    assert_eq!(not_json.status, 400);
    let body = not_json.json().await;
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let large =
        Client::post_raw(&base, "/v1/messages", format!(r#"{{"x":"{}"}}"#, "a".repeat(300)), None).await;
    assert_eq!(large.status, 413);
    assert_eq!(large.json().await["error"]["type"], "request_too_large");
    // The simulated model's own refusal passes as it sent it, in Anthropic's shape too.
    let refused = post(&base, "/v1/messages", &json!({"model": "m", "messages": []})).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json().await["type"], "error");
    // Chat's stay OpenAI's.
    let chat = Client::post_raw(&base, "/v1/chat/completions", "{".to_owned(), None).await;
    assert_eq!(chat.json().await["error"]["code"], "invalid_json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_responses_stream_whose_client_went_away_is_still_picked_up_by_its_id() {
    let base =
        gateway(&["--sim-first-token-delay", "10ms", "--sim-token-interval", "5ms", "--sim-tokens", "20"])
            .await;
    let mut cut = post(&base, "/v1/responses", &responses_body("finish without me", true)).await;
    let created: Value = serde_json::from_str(&cut.next().await.unwrap()).unwrap();
    let id = created["response"]["id"].as_str().unwrap().to_owned();
    cut.next().await.unwrap();
    drop(cut);
    // The flight ends (no linger): it can no longer be joined, but the detached client holds it.
    eventually("the flight ended", || async { metric(&base, "streamflight_active_flights").await == 0 })
        .await;
    let resumed = Client::send(
        http()
            .get(format!("{base}/v1/responses/{id}?stream=true&starting_after=1"))
            .header("authorization", "Bearer alice"),
    )
    .await;
    assert_eq!(resumed.status, 200);
    let rest = events(&resumed.text().await);
    let first: Value = serde_json::from_str(&rest[0].data).unwrap();
    assert_eq!(first["sequence_number"], 2);
    assert_eq!(rest.last().unwrap().name.as_deref(), Some("response.completed"));
    assert_eq!(metric(&base, "streamflight_flights_total").await, 1, "no new upstream request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_gets_its_dialects_own_keep_alive_which_is_no_event_of_the_answer() {
    let base =
        gateway(&["--keep-alive", "40ms", "--sim-first-token-delay", "400ms", "--sim-tokens", "3"]).await;
    for (path, body, keep_alive) in [
        ("/v1/messages", messages_body("quiet", true), "event: ping\ndata: {\"type\": \"ping\"}\n\n"),
        ("/v1/responses", responses_body("quiet", true), ": keep-alive\n\n"),
    ] {
        let body = post(&base, path, &body).await.text().await;
        assert!(body.contains(keep_alive), "{path}: a keep-alive while the first token is pending: {body}");
        // Each client's own: no id, so a resume never counts it, and the answer is whole.
        let answer = events(&body.replace(keep_alive, ""));
        let ids: Vec<u64> = answer.iter().map(|event| event.id.unwrap()).collect();
        assert_eq!(ids, (1..=answer.len() as u64).collect::<Vec<_>>(), "{path}");
        assert_eq!(text(&answer).split_whitespace().count(), 3, "{path}");
    }
}
