//! The gateway in front of a mock OpenAI-compatible upstream (axum, in this process) that
//! counts its requests: sharing, tenants, cancel by id, disconnects, upstream failures.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A mock whose answer (20 chunks) waits after its first chunk until the test opens the gate.
fn gated() -> Mode {
    Mode::Tokens { tokens: 20, interval: Duration::from_millis(1), gated: true }
}

/// A mock that streams until its client goes away.
fn endless() -> Mode {
    Mode::Tokens { tokens: 1_000_000, interval: Duration::from_millis(5), gated: false }
}

fn expected_stream(tokens: usize) -> Vec<String> {
    let mut events: Vec<String> = (0..tokens).map(mock_chunk).collect();
    events.push("[DONE]".to_owned());
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_identical_streams_make_one_upstream_request() {
    identical_streams_make_one_upstream_request(&[], 50).await;
}

/// With connection threads, each connection is served on one of them: the flight is still one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_streams_on_every_connection_thread_make_one_upstream_request() {
    identical_streams_make_one_upstream_request(&["--connection-threads", "2"], 16).await;
}

/// Without connection threads (every connection on the main, work-stealing runtime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_streams_on_the_main_runtime_make_one_upstream_request() {
    identical_streams_make_one_upstream_request(&["--connection-threads", "0"], 16).await;
}

/// `n` identical streaming requests, held at once (each a connection of its own), through a
/// gateway with `flags`: one upstream request, and every client the whole stream.
async fn identical_streams_make_one_upstream_request(flags: &[&str], n: u64) {
    let mock = Mock::start(gated()).await;
    let mut args = vec!["--upstream", &mock.base];
    args.extend_from_slice(flags);
    let base = gateway(&args).await;
    let clients =
        futures::future::join_all((0..n).map(|_| Client::chat(&base, "popular question", None))).await;
    eventually("all are in", || async { metric(&base, "streamflight_active_requests").await == n }).await;
    mock.open_gate();
    let streams =
        futures::future::join_all(clients.into_iter().map(|mut c| async move { c.rest().await })).await;
    for stream in &streams {
        assert_eq!(stream, &expected_stream(20));
    }
    assert_eq!(mock.received(), 1);
    let body = mock.last().json();
    assert_eq!(body["stream"], true, "the upstream is always asked to stream");
    assert_eq!(body["stream_options"]["include_usage"], true, "and for usage");
    assert_eq!(body["messages"][0]["content"], "popular question");
    assert_eq!(metric(&base, "streamflight_requests_total").await, n);
    assert_eq!(metric(&base, "streamflight_flights_total").await, 1);
    assert_eq!(metric(&base, "streamflight_joined_total").await, n - 1);
    eventually("no request is left", || async { metric(&base, "streamflight_active_requests").await == 0 })
        .await;
    assert_eq!(metric(&base, "streamflight_active_flights").await, 0);
}

#[tokio::test]
async fn two_tenants_never_share_unless_told_to() {
    let mock = Mock::start(gated()).await;
    let base = gateway(&["--upstream", &mock.base]).await;
    let mut alice = Client::chat(&base, "same body", Some("Bearer alice")).await;
    let mut bob = Client::chat(&base, "same body", Some("Bearer bob")).await;
    assert_eq!((alice.role.as_str(), bob.role.as_str()), ("leader", "leader"));
    eventually("both went upstream", || async { mock.received() == 2 }).await;
    mock.open_gate();
    assert_eq!(alice.rest().await, expected_stream(20));
    assert_eq!(bob.rest().await, expected_stream(20));
    let mut seen: Vec<_> =
        mock.seen.lock().unwrap().iter().map(|s| s.header("authorization").unwrap()).collect();
    seen.sort();
    assert_eq!(seen, ["Bearer alice", "Bearer bob"], "each tenant's own credentials went upstream");

    let mock = Mock::start(gated()).await;
    let base =
        gateway(&["--upstream", &mock.base, "--share-across-tenants", "--upstream-api-key", "k"]).await;
    let mut alice = Client::chat(&base, "same body", Some("Bearer alice")).await;
    let mut bob = Client::chat(&base, "same body", Some("Bearer bob")).await;
    mock.open_gate();
    assert_eq!(alice.rest().await, bob.rest().await);
    assert_eq!(mock.received(), 1);
}

/// How a cancelled stream ends: an error event the SDKs raise, never a chunk without choices.
const CANCELLED: &str = r#"{"error":{"message":"the request was cancelled","type":"cancelled","param":null,"code":"request_cancelled"}}"#;

async fn cancel(base: &str, id: &str) -> u16 {
    http().delete(format!("{base}/v1/requests/{id}")).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn cancelling_the_leader_in_company_leaves_the_others_streaming() {
    let mock = Mock::start(gated()).await;
    let base = gateway(&["--upstream", &mock.base]).await;
    let mut leader = Client::chat(&base, "q", None).await;
    let mut follower = Client::chat(&base, "q", None).await;
    assert_eq!(leader.next().await.unwrap(), mock_chunk(0));
    assert_eq!(cancel(&base, &leader.id).await, 200);
    assert_eq!(leader.next().await.unwrap(), CANCELLED);
    assert_eq!(leader.next().await, None, "the cancelled stream closes");
    assert_eq!(cancel(&base, &leader.id).await, 404, "an ended request is unknown");

    mock.open_gate();
    assert_eq!(follower.rest().await, expected_stream(20));
    assert_eq!((mock.received(), mock.dropped()), (1, 0));
    assert_eq!(metric(&base, "streamflight_cancelled_total").await, 1);
    assert_eq!(metric(&base, "streamflight_aborted_total").await, 0);
}

#[tokio::test]
async fn cancelling_a_lone_request_aborts_the_upstream_request() {
    let mock = Mock::start(endless()).await;
    let base = gateway(&["--upstream", &mock.base]).await;
    let mut alone = Client::chat(&base, "q", None).await;
    assert_eq!(alone.next().await.unwrap(), mock_chunk(0));
    assert_eq!(cancel(&base, &alone.id).await, 200);
    let rest = alone.rest().await;
    assert_eq!(rest.last().unwrap(), CANCELLED);
    eventually("the mock sees its connection dropped", || async { mock.dropped() == 1 }).await;
    assert_eq!(metric(&base, "streamflight_aborted_total").await, 1);
    assert_eq!(metric(&base, "streamflight_active_flights").await, 0);
}

#[tokio::test]
async fn a_client_that_disconnects_is_dropped_and_the_last_one_out_aborts() {
    let mock = Mock::start(endless()).await;
    // Without a resume window, a lost connection is a cancel (R12).
    let base = gateway(&["--upstream", &mock.base, "--resume-window", "0"]).await;
    let mut first = Client::chat(&base, "q", None).await;
    let mut second = Client::chat(&base, "q", None).await;
    first.next().await.unwrap();
    drop(first);
    eventually("the first is dropped", || async { metric(&base, "streamflight_cancelled_total").await == 1 })
        .await;
    assert_eq!(metric(&base, "streamflight_aborted_total").await, 0);
    second.next().await.unwrap();
    assert_eq!(mock.dropped(), 0, "the upstream goes on for the second");
    drop(second);
    eventually("the mock sees its connection dropped", || async { mock.dropped() == 1 }).await;
    assert_eq!(metric(&base, "streamflight_aborted_total").await, 1);
    assert_eq!(mock.received(), 1);
}

fn assert_upstream_error(event: &str, needle: &str) {
    let error: Value = serde_json::from_str(event).unwrap_or_else(|_| panic!("not JSON: {event}"));
    assert_eq!(error["error"]["type"], "upstream_error", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains(needle), "{message:?} should mention {needle:?}");
}

/// G1: a failure before the first byte gives every client the upstream's own response.
#[tokio::test]
async fn an_upstream_error_status_reaches_every_client_as_the_upstream_sent_it() {
    for status in [429, 500, 503] {
        let mock = Mock::start(Mode::Status(status)).await;
        let base = gateway(&["--upstream", &mock.base]).await;
        let clients: Vec<_> = [true, true, false]
            .into_iter()
            .map(|stream| {
                let request = http()
                    .post(format!("{base}/v1/chat/completions"))
                    .body(chat_body("q", stream).to_string());
                tokio::spawn(Client::send(request))
            })
            .collect();
        eventually("all three are in", || async { metric(&base, "streamflight_active_requests").await == 3 })
            .await;
        mock.open_gate();
        for client in clients {
            let client = client.await.unwrap();
            assert_eq!(client.status, status);
            for (name, value) in RATE_LIMIT_HEADERS {
                assert_eq!(client.headers[name], value, "{name}");
            }
            assert_eq!(client.headers["x-upstream-request-id"], "mock-req-1");
            assert_eq!(client.headers["content-type"], "application/json");
            let body = client.json().await;
            assert_eq!(body["error"]["code"], "mock_down", "the upstream's own error: {body}");
            assert_eq!(body["error"]["type"], "mock_error");
        }
        assert_eq!(mock.received(), 1);
        assert_eq!(metric(&base, "streamflight_upstream_errors_total").await, 1);
    }
}

#[tokio::test]
async fn a_stream_broken_midway_ends_every_subscriber_with_an_error_event() {
    let mock = Mock::start(Mode::Break { after: 3 }).await;
    let base = gateway(&["--upstream", &mock.base]).await;
    let mut clients = vec![Client::chat(&base, "q", None).await, Client::chat(&base, "q", None).await];
    for client in &mut clients {
        for i in 0..3 {
            assert_eq!(client.next().await.unwrap(), mock_chunk(i));
        }
    }
    let collected = tokio::spawn(Client::send(
        http().post(format!("{base}/v1/chat/completions")).body(chat_body("q", false).to_string()),
    ));
    eventually("all three are in", || async { metric(&base, "streamflight_active_requests").await == 3 })
        .await;
    mock.open_gate();
    for client in &mut clients {
        let events = client.rest().await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_upstream_error(&events[0], "broke");
    }
    let collected = collected.await.unwrap();
    assert_eq!(collected.status, 502, "never 200 for a broken answer");
    assert_upstream_error(&collected.text().await, "broke");
    assert_eq!(mock.received(), 1);
    assert_eq!(metric(&base, "streamflight_upstream_errors_total").await, 1);
}

#[tokio::test]
async fn an_error_inside_the_upstream_stream_reaches_clients_as_the_upstream_sent_it() {
    let mock = Mock::start(Mode::InStreamError { after: 2 }).await;
    let base = gateway(&["--upstream", &mock.base]).await;
    let events = Client::chat(&base, "q", None).await.rest().await;
    assert_eq!(events, [mock_chunk(0), mock_chunk(1), mock_error()]);
    let collected = Client::send(
        http().post(format!("{base}/v1/chat/completions")).body(chat_body("q2", false).to_string()),
    )
    .await;
    assert_eq!(collected.status, 502, "never 200 with the answer cut short");
    assert_eq!(collected.text().await, mock_error());
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_in_openais_shape() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    let base = gateway(&["--upstream", &closed]).await;
    let client = Client::chat(&base, "q", None).await;
    assert_eq!(client.status, 502);
    assert_upstream_error(&client.text().await, "cannot reach the upstream");
    assert_eq!(metric(&base, "streamflight_upstream_errors_total").await, 1);
    assert_eq!(http().get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_non_streaming_request_gets_the_upstream_stream_collected() {
    let mock = Mock::start(Mode::Tokens { tokens: 3, interval: Duration::ZERO, gated: false }).await;
    let base = gateway(&["--upstream", &mock.base]).await;
    let request = http().post(format!("{base}/v1/chat/completions")).body(chat_body("q", false).to_string());
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["id"], "mock");
    assert_eq!(body["choices"][0]["message"]["content"], "t0 t1 t2 ");
    assert_eq!(body["usage"]["total_tokens"], 8, "usage, asked for by the gateway");
    assert_eq!(mock.last().json()["stream"], true);
}

#[tokio::test]
async fn a_late_joiner_gets_the_whole_stream_replayed() {
    let mock = Mock::start(gated()).await;
    let base = gateway(&["--upstream", &mock.base]).await;
    let mut first = Client::chat(&base, "q", None).await;
    assert_eq!(first.next().await.unwrap(), mock_chunk(0));
    let mut late = Client::chat(&base, "q", None).await;
    assert_eq!(late.role, "joiner");
    mock.open_gate();
    assert_eq!(late.rest().await, expected_stream(20));
    assert_eq!(first.rest().await, expected_stream(20)[1..]);
    assert_eq!(mock.received(), 1);
}

#[tokio::test]
async fn an_upstream_api_key_replaces_the_clients_credentials() {
    let mock = Mock::start(Mode::Tokens { tokens: 2, interval: Duration::ZERO, gated: false }).await;
    let base = gateway(&["--upstream", &mock.base, "--upstream-api-key", "sk-gateway"]).await;
    assert_eq!(Client::chat(&base, "q", Some("Bearer client")).await.rest().await, expected_stream(2));
    assert_eq!(mock.last().header("authorization").as_deref(), Some("Bearer sk-gateway"));
}

/// With `--linger`, an identical request just after `[DONE]` gets the same answer with no
/// upstream request; once the linger is over, the next one goes upstream again (R17).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linger_serves_a_finished_answer_then_lets_it_go() {
    let tokens = || Mode::Tokens { tokens: 5, interval: Duration::from_millis(1), gated: false };
    let mock = Mock::start(tokens()).await;
    let base = gateway(&["--upstream", &mock.base, "--linger", "60s"]).await;
    let first = Client::chat(&base, "asked twice", None).await.rest().await;
    assert_eq!(first, expected_stream(5));
    let mut again = Client::chat(&base, "asked twice", None).await;
    assert_eq!(again.role, "joiner");
    assert_eq!(again.rest().await, first, "the same answer");
    assert_eq!(mock.received(), 1, "no second upstream request");
    assert_eq!(metric(&base, "streamflight_lingered_total").await, 1);

    let mock = Mock::start(tokens()).await;
    let base = gateway(&["--upstream", &mock.base, "--linger", "50ms"]).await;
    assert_eq!(Client::chat(&base, "asked twice", None).await.rest().await, expected_stream(5));
    // Identical requests until one leads: the linger ended on the gateway's timer.
    eventually("a request after the linger to go upstream", || async {
        let mut client = Client::chat(&base, "asked twice", None).await;
        assert_eq!(client.rest().await, expected_stream(5));
        client.role == "leader"
    })
    .await;
    assert_eq!(mock.received(), 2);
}

#[tokio::test]
async fn past_the_linger_budget_the_answer_that_finished_first_stops_lingering() {
    // An answer of 10 chunks weighs about 2.5 KB against the budget: one fits in 4,000 bytes,
    // two do not.
    let mock =
        Mock::start(Mode::Tokens { tokens: 10, interval: Duration::from_millis(1), gated: false }).await;
    let base = gateway(&["--upstream", &mock.base, "--linger", "60s", "--linger-budget", "4000"]).await;
    assert_eq!(Client::chat(&base, "first", None).await.rest().await, expected_stream(10));
    assert_eq!(Client::chat(&base, "second", None).await.rest().await, expected_stream(10));
    eventually("the first answer is evicted", || async {
        metric(&base, "streamflight_evicted_total").await == 1
    })
    .await;
    let mut second = Client::chat(&base, "second", None).await;
    assert_eq!(second.role, "joiner", "the newer answer still lingers");
    assert_eq!(second.rest().await, expected_stream(10));
    assert_eq!(mock.received(), 2);
    let mut first = Client::chat(&base, "first", None).await;
    assert_eq!(first.role, "leader", "the older one was let go: a new upstream request");
    assert_eq!(first.rest().await, expected_stream(10));
    assert_eq!(mock.received(), 3);
}

/// GETs the resumed stream of `id`, after the event `last` if given.
async fn resume(base: &str, id: &str, last: Option<&str>, authorization: Option<&str>) -> Client {
    let mut request = http().get(format!("{base}/v1/requests/{id}/events"));
    if let Some(last) = last {
        request = request.header("last-event-id", last);
    }
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    Client::send(request).await
}

/// A client that loses its connection after 5 events resumes with `Last-Event-ID`: what it
/// holds then is, event for event, what an uninterrupted client got (R18).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_resumes_after_its_last_event_id() {
    // Slow enough that the stream is still live when the second resume asks (a finished one
    // ends its resumed request at once, and then the id is unknown: 404, not 409).
    let mock =
        Mock::start(Mode::Tokens { tokens: 40, interval: Duration::from_millis(25), gated: false }).await;
    let base = gateway(&["--upstream", &mock.base]).await;
    let mut whole = Client::chat(&base, "resumable", Some("Bearer alice")).await;
    let mut cut = Client::chat(&base, "resumable", Some("Bearer alice")).await;
    let mut held = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        let (id, data) = cut.next_with_id().await.expect("an event before the cut");
        last = Some(id.expect("every event has an id"));
        held.push(data);
    }
    let id = cut.id.clone();
    drop(cut);
    let last = last.unwrap();
    // Another tenant learns nothing; the right one gets the rest.
    assert_eq!(resume(&base, &id, Some(&last), Some("Bearer bob")).await.status, 404);
    // 409 until the gateway has seen the connection go (the request still has its reader).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut resumed = loop {
        let resumed = resume(&base, &id, Some(&last), Some("Bearer alice")).await;
        if resumed.status != 409 {
            break resumed;
        }
        assert!(tokio::time::Instant::now() < deadline, "the gateway never saw the connection go");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(resumed.status, 200);
    assert_eq!(resumed.id, id, "the stream keeps its id, for a next resume");
    assert_eq!(resumed.headers["content-type"], "text/event-stream");
    let busy = resume(&base, &id, Some(&last), Some("Bearer alice")).await;
    assert_eq!(busy.status, 409, "one connection reads a request at a time");
    held.extend(resumed.rest().await);

    let mut ids = Vec::new();
    let mut uninterrupted = Vec::new();
    while let Some((id, data)) = whole.next_with_id().await {
        ids.push(id.expect("every event has an id").parse::<u64>().unwrap());
        uninterrupted.push(data);
    }
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "ids grow: {ids:?}");
    assert_eq!(held, uninterrupted, "the resumed client holds the whole stream");
    assert_eq!(uninterrupted.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(mock.received(), 1);
    assert_eq!(metric(&base, "streamflight_resumed_total").await, 1);
    assert_eq!(metric(&base, "streamflight_cancelled_total").await, 0, "detached, never cancelled");
    assert_eq!(resume(&base, &id, Some(&last), Some("Bearer alice")).await.status, 404, "it has ended");
}

/// A lone client that loses its connection and never comes back: its request lives out the
/// window, then is dropped, and its upstream request aborted (R18, R12, R11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_client_that_never_comes_back_is_dropped_after_the_window() {
    let mock = Mock::start(endless()).await;
    let base = gateway(&["--upstream", &mock.base, "--resume-window", "300ms"]).await;
    let mut alone = Client::chat(&base, "abandoned", None).await;
    assert_eq!(alone.next().await.unwrap(), mock_chunk(0));
    let id = alone.id.clone();
    drop(alone);
    eventually("the window to pass and the upstream to be aborted", || async { mock.dropped() == 1 }).await;
    assert_eq!(metric(&base, "streamflight_aborted_total").await, 1);
    assert_eq!(metric(&base, "streamflight_cancelled_total").await, 1, "a drop, at the window's end");
    eventually("the id to be forgotten", || async { resume(&base, &id, None, None).await.status == 404 })
        .await;
}

/// The mock served over HTTP/2 only (h2c), allowing `streams` streams on a connection, and
/// the count of connections it accepted.
async fn h2c_mock(mode: Mode, streams: u32) -> (std::sync::Arc<Mock>, std::sync::Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (mock, app) = Mock::app(mode, format!("http://{}/v1", listener.local_addr().unwrap()));
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .max_concurrent_streams(streams)
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    (mock, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_no_request_waits_behind_an_upstream_s_stream_limit() {
    // The upstream allows 2 streams on a connection; 5 different streams are held open at once.
    // On one connection, 3 of them would wait for the others' end (the gate) before their head.
    let (mock, connections) = h2c_mock(gated(), 2).await;
    let base =
        gateway(&["--upstream", &mock.base, "--upstream-http2", "--upstream-streams-per-connection", "2"])
            .await;
    let opened = futures::future::join_all((0..5).map(|i| {
        let base = base.clone();
        async move {
            let mut client = Client::chat(&base, &format!("question {i}"), None).await;
            let first = client.next().await;
            (client, first)
        }
    }));
    let opened = tokio::time::timeout(DEADLINE, opened).await.expect("every stream's first event");
    for (_, first) in &opened {
        assert_eq!(first.as_deref(), Some(mock_chunk(0).as_str()));
    }
    assert_eq!(mock.received(), 5);
    assert_eq!(connections.load(Ordering::SeqCst), 3, "2 + 2 + 1 streams");

    mock.open_gate();
    for (mut client, _) in opened {
        let mut rest = client.rest().await;
        rest.insert(0, mock_chunk(0));
        assert_eq!(rest, expected_stream(20));
    }
    // The lanes' places came back: five more fit on the three connections.
    let again = futures::future::join_all((0..5).map(|i| {
        let base = base.clone();
        async move { Client::chat(&base, &format!("again {i}"), None).await.rest().await }
    }));
    for stream in tokio::time::timeout(DEADLINE, again).await.expect("five more streams") {
        assert_eq!(stream, expected_stream(20));
    }
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_upstream_silent_past_the_idle_timeout_is_cut_and_a_slow_steady_one_is_not() {
    // 30 chunks 50 ms apart: a stream of 1.5 s, longer than the 1 s allowed between two pieces.
    let steady = Mode::Tokens { tokens: 30, interval: Duration::from_millis(50), gated: false };
    let mock = Mock::start(steady).await;
    let base = gateway(&["--upstream", &mock.base, "--idle-timeout", "1s"]).await;
    let mut client = Client::chat(&base, "steady", None).await;
    assert_eq!(client.rest().await, expected_stream(30));

    // One chunk, then nothing: the gate is never opened.
    let mock = Mock::start(gated()).await;
    let base = gateway(&["--upstream", &mock.base, "--idle-timeout", "300ms"]).await;
    let mut clients =
        vec![Client::chat(&base, "silent", None).await, Client::chat(&base, "silent", None).await];
    for client in &mut clients {
        assert_eq!(client.next().await.unwrap(), mock_chunk(0));
        let events = client.rest().await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_upstream_error(&events[0], "sent nothing for 300ms");
    }
    assert_eq!(mock.received(), 1);
    assert_eq!(metric(&base, "streamflight_upstream_errors_total").await, 1);
}
