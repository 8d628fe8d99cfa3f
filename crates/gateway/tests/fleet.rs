//! Three gateway processes on one real `redis-server` (`--redis`), in front of one counting
//! mock upstream: one upstream request for the fleet, and what happens when a replica is
//! killed (SIGKILL), paused past its lease (SIGSTOP) or the store restarts (R19-R23).

mod common;
#[path = "../../redis/tests/common/mod.rs"]
mod store;

use std::time::{Duration, Instant};

use common::process::Binary;
use common::*;
use store::RedisServer;

/// The lease the replicas run with: short, so that a lost leader shows soon.
const LEASE: Duration = Duration::from_millis(1000);

/// The secret the replicas share (`--fleet-secret`).
const SECRET: &str = "a fleet secret for the tests, 3e9b";

/// A gateway process of the fleet on `redis`, in front of `upstream`, with `extra` flags.
async fn replica(redis: &RedisServer, upstream: &Mock, name: &str, extra: &[&str]) -> (Binary, String) {
    let lease = format!("{}ms", LEASE.as_millis());
    let mut flags = vec!["--redis", &redis.url, "--replica-id", name, "--lease", &lease];
    flags.extend_from_slice(&["--fleet-secret", SECRET, "--upstream", &upstream.base]);
    flags.extend_from_slice(extra);
    let mut binary = Binary::start(&flags);
    let (_, address) = binary.ready().await;
    (binary, format!("http://{address}"))
}

/// Three replicas, `a`, `b` and `c`.
async fn three(redis: &RedisServer, upstream: &Mock) -> Vec<(Binary, String)> {
    three_with(redis, upstream, &[]).await
}

/// Three replicas, `a`, `b` and `c`, with `extra` flags.
async fn three_with(redis: &RedisServer, upstream: &Mock, extra: &[&str]) -> Vec<(Binary, String)> {
    let mut replicas = Vec::new();
    for name in ["a", "b", "c"] {
        replicas.push(replica(redis, upstream, name, extra).await);
    }
    replicas
}

/// The sum of a metric over replicas.
async fn total(bases: &[&str], name: &str) -> u64 {
    let mut sum = 0;
    for base in bases {
        sum += metric(base, name).await;
    }
    sum
}

/// The text of a whole stream, and whether it ended `[DONE]`.
async fn whole(mut client: Client) -> (String, bool) {
    let events = client.rest().await;
    (content(&events), events.last().map(String::as_str) == Some("[DONE]"))
}

fn tokens(n: usize) -> String {
    (0..n).map(|i| format!("t{i} ")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_spread_over_three_gateways_get_one_upstream_request_and_identical_streams() {
    let Some(redis) = RedisServer::start().await else { return };
    let upstream = Mock::start(Mode::Tokens { tokens: 8, interval: Duration::ZERO, gated: true }).await;
    let replicas = three(&redis, &upstream).await;
    let bases: Vec<&str> = replicas.iter().map(|(_, base)| base.as_str()).collect();
    let mut clients = Vec::new();
    for i in 0..12 {
        clients.push(Client::chat(bases[i % 3], "one question for the fleet", Some("Bearer k")).await);
    }
    upstream.open_gate();
    for client in clients {
        assert_eq!(client.status, 200);
        assert_eq!(whole(client).await, (tokens(8), true), "every client the whole answer");
    }
    assert_eq!(upstream.received(), 1, "one upstream request for the whole fleet");
    assert_eq!(total(&bases, "streamflight_fleet_led_total").await, 1);
    assert_eq!(total(&bases, "streamflight_remote_joins_total").await, 2);
    assert_eq!(total(&bases, "streamflight_store_errors_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_on_another_gateway_replays_the_answer_so_far() {
    let Some(redis) = RedisServer::start().await else { return };
    let upstream = Mock::start(Mode::Tokens { tokens: 5, interval: Duration::ZERO, gated: true }).await;
    let replicas = three(&redis, &upstream).await;
    let mut first = Client::chat(&replicas[0].1, "late", Some("Bearer k")).await;
    assert!(first.next().await.unwrap().contains("t0 "), "the first chunk is out before the gate");
    let late = Client::chat(&replicas[1].1, "late", Some("Bearer k")).await;
    eventually("b follows a's flight", || async {
        metric(&replicas[1].1, "streamflight_remote_joins_total").await == 1
    })
    .await;
    upstream.open_gate();
    assert_eq!(whole(late).await, (tokens(5), true), "the history, then the rest");
    assert_eq!(whole(first).await, (tokens(5)[3..].to_owned(), true));
    assert_eq!(upstream.received(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_goes_on_while_another_gateway_streams_it_and_is_aborted_when_nobody_does() {
    let Some(redis) = RedisServer::start().await else { return };
    let upstream = Mock::start(Mode::Tokens { tokens: 3, interval: Duration::ZERO, gated: true }).await;
    // A client that goes away leaves at once (no resume window).
    let replicas = three_with(&redis, &upstream, &["--resume-window", "0"]).await;
    let (a, b) = (&replicas[0].1, &replicas[1].1);
    let mut leader = Client::chat(a, "stay", Some("Bearer k")).await;
    assert!(leader.next().await.is_some());
    let mut follower = Client::chat(b, "stay", Some("Bearer k")).await;
    assert!(follower.next().await.unwrap().contains("t0 "));

    // The leading gateway's client cancels: the flight goes on for b.
    let cancel = http().delete(format!("{a}/v1/requests/{}", leader.id)).header("authorization", "Bearer k");
    let cancelled = cancel.send().await.unwrap();
    assert_eq!(cancelled.status(), 200);
    drop(leader);
    eventually("a's local flight is gone", || async { metric(a, "streamflight_active_flights").await == 0 })
        .await;
    // Past the lease and the interest's expiry, the upstream is still streaming for b.
    let quiet = Instant::now();
    eventually("two leases pass", || async { quiet.elapsed() >= LEASE * 2 }).await;
    assert_eq!(upstream.dropped(), 0, "b still wants it");

    // b's client leaves too: the upstream is aborted, and the mock sees it.
    drop(follower);
    eventually("the upstream request is aborted", || async { upstream.dropped() == 1 }).await;
    assert_eq!(upstream.received(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_ends_the_other_gateways_streams_with_upstream_lost_and_a_new_request_starts_afresh()
{
    let Some(redis) = RedisServer::start().await else { return };
    let upstream = Mock::start(Mode::Tokens { tokens: 4, interval: Duration::ZERO, gated: true }).await;
    let replicas = three(&redis, &upstream).await;
    let mut leader = Client::chat(&replicas[0].1, "kill", Some("Bearer k")).await;
    assert!(leader.next().await.is_some(), "a leads");
    let mut followers = Vec::new();
    for (_, base) in &replicas[1..] {
        let mut follower = Client::chat(base, "kill", Some("Bearer k")).await;
        assert!(follower.next().await.unwrap().contains("t0 "));
        followers.push(follower);
    }
    replicas[0].0.signal(libc::SIGKILL);
    let killed = Instant::now();
    for mut follower in followers {
        let rest = follower.rest().await;
        let ended = killed.elapsed();
        let last = rest.last().expect("an error event");
        assert!(last.contains("upstream_lost"), "the leader-lost failure: {rest:?}");
        eprintln!("a stream of a killed leader ended after {ended:?} (lease {LEASE:?})");
        assert!(ended < LEASE * 2, "within two lease timeouts: {ended:?}");
    }
    assert!(total(&[&replicas[1].1, &replicas[2].1], "streamflight_leader_lost_total").await >= 2);

    // A new request is a new flight, whole.
    let again = Client::chat(&replicas[1].1, "kill", Some("Bearer k")).await;
    upstream.open_gate();
    assert_eq!(whole(again).await, (tokens(4), true));
    assert_eq!(upstream.received(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_is_fenced_off_when_it_wakes() {
    let Some(redis) = RedisServer::start().await else { return };
    let upstream = Mock::start(Mode::Tokens { tokens: 4, interval: Duration::ZERO, gated: true }).await;
    let replicas = three(&redis, &upstream).await;
    let (a, b) = (&replicas[0].1, &replicas[1].1);
    let mut leader = Client::chat(a, "pause", Some("Bearer k")).await;
    assert!(leader.next().await.is_some(), "a leads");
    let mut follower = Client::chat(b, "pause", Some("Bearer k")).await;
    assert!(follower.next().await.is_some());

    replicas[0].0.signal(libc::SIGSTOP);
    let rest = follower.rest().await;
    assert!(rest.last().unwrap().contains("upstream_lost"), "{rest:?}");
    // b leads a new flight meanwhile.
    let mut successor = Client::chat(b, "pause", Some("Bearer k")).await;
    assert!(successor.next().await.unwrap().contains("t0 "));
    assert_eq!(upstream.received(), 2);

    // a wakes: its next append is refused; its own client is served on, alone.
    replicas[0].0.signal(libc::SIGCONT);
    upstream.open_gate();
    eventually("a learns it lost the lease", || async {
        metric(a, "streamflight_leader_lost_total").await == 1
    })
    .await;
    let (text, done) = whole(leader).await;
    assert_eq!((text, done), (tokens(4)[3..].to_owned(), true), "a's client, whole");
    let (text, done) = whole(successor).await;
    assert_eq!((text, done), (tokens(4)[3..].to_owned(), true), "no item of a's in b's flight");
    // A newcomer on c replays b's flight from the store: exactly b's items, once each.
    assert_eq!(upstream.received(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_killed_and_restarted_every_request_is_served_and_the_fleet_coalesces_again() {
    let Some(mut redis) = RedisServer::start().await else { return };
    // Long enough a stream that a burst's requests on one gateway all find its flight.
    let upstream =
        Mock::start(Mode::Tokens { tokens: 3, interval: Duration::from_millis(100), gated: false }).await;
    let replicas = three(&redis, &upstream).await;
    let bases: Vec<&str> = replicas.iter().map(|(_, base)| base.as_str()).collect();
    // Nine clients at once, three per gateway, on one question: every stream whole.
    let burst = |question: String| {
        let bases: Vec<String> = bases.iter().map(|b| (*b).to_owned()).collect();
        async move {
            let clients: Vec<_> = (0..9)
                .map(|i| {
                    let (base, question) = (bases[i % 3].clone(), question.clone());
                    tokio::spawn(async move {
                        whole(Client::chat(&base, &question, Some("Bearer k")).await).await
                    })
                })
                .collect();
            for client in clients {
                assert_eq!(client.await.unwrap(), (tokens(3), true), "nothing fails");
            }
        }
    };
    burst("before".to_owned()).await;
    assert_eq!(upstream.received(), 1);
    // With the store down, requests coalesce within their gateway: one upstream request each.
    redis.kill();
    burst("while down".to_owned()).await;
    assert_eq!(upstream.received(), 1 + 3, "one upstream request per gateway meanwhile");
    assert!(total(&bases, "streamflight_store_errors_total").await > 0, "the outage is counted");

    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    for round in 0.. {
        let before = upstream.received();
        burst(format!("back {round}")).await;
        if upstream.received() - before == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the fleet never coalesced again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_lost_its_connection_resumes_through_another_gateway() {
    let Some(redis) = RedisServer::start().await else { return };
    let upstream = Mock::start(Mode::Tokens { tokens: 5, interval: Duration::ZERO, gated: true }).await;
    let replicas = three(&redis, &upstream).await;
    let (a, c) = (&replicas[0].1, &replicas[2].1);
    let mut client = Client::chat(a, "resume elsewhere", Some("Bearer k")).await;
    let (id, first) = client.next_with_id().await.unwrap();
    assert_eq!(id.as_deref(), Some("1"));
    assert!(first.contains("t0 "));
    let request = client.id.clone();
    // The connection breaks; the load balancer sends the reconnect to c.
    drop(client);
    let resumed = |base: &str, authorization: &str| {
        http()
            .get(format!("{base}/v1/requests/{request}/events"))
            .header("last-event-id", "1")
            .header("authorization", authorization)
    };
    // a leaves its note as the connection goes: until then, c knows no such request.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut again = loop {
        let again = Client::send(resumed(c, "Bearer k")).await;
        if again.status == 200 {
            break again;
        }
        assert_eq!(again.status, 404);
        assert!(Instant::now() < deadline, "c never resumed the stream");
    };
    assert_eq!(again.id, request, "the stream keeps its id");
    assert_eq!(resumed(c, "Bearer someone-else").send().await.unwrap().status(), 404, "another tenant's");
    upstream.open_gate();
    let (id, second) = again.next_with_id().await.unwrap();
    assert_eq!((id.as_deref(), second.contains("t1 ")), (Some("2"), true), "{second}");
    let rest = again.rest().await;
    assert_eq!(content(&rest), "t2 t3 t4 ");
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(upstream.received(), 1, "the same upstream request, never a second one");
    assert!(metric(c, "streamflight_remote_resumed_total").await >= 1);
    assert_eq!(metric(c, "streamflight_remote_joins_total").await, 0, "a resume is no join");
}

/// A CA, and a certificate it signed for `localhost`, written as PEM files under a fresh
/// directory: (ca, certificate, key).
fn pki(dir: &std::path::Path) -> (String, String, String) {
    let (ca, leaf, key) = pki::chain(&["localhost"]);
    std::fs::create_dir_all(dir).unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.to_str().unwrap().to_owned()
    };
    (
        write("ca.pem", ca.pem()),
        write("redis.pem", leaf.pem() + &ca.pem()),
        write("redis.key", key.serialize_pem()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_share_flights_over_rediss_with_a_private_ca() {
    let dir = std::env::temp_dir().join(format!("streamflight-rediss-{}", std::process::id()));
    let (ca, certificate, key) = pki(&dir);
    let Some(redis) = RedisServer::start_tls(&certificate, &key).await else { return };
    let upstream = Mock::start(Mode::Tokens { tokens: 3, interval: Duration::ZERO, gated: true }).await;
    let replicas = three_with(&redis, &upstream, &["--redis-ca", &ca]).await;
    let bases: Vec<&str> = replicas.iter().map(|(_, base)| base.as_str()).collect();
    let mut clients = Vec::new();
    for base in &bases {
        clients.push(Client::chat(base, "over TLS", Some("Bearer k")).await);
    }
    upstream.open_gate();
    for client in clients {
        assert_eq!(whole(client).await, (tokens(3), true));
    }
    assert_eq!(upstream.received(), 1, "one upstream request, through rediss://");
    assert_eq!(total(&bases, "streamflight_store_errors_total").await, 0);

    // Without the CA, the store's certificate is refused: each gateway serves alone, and says so.
    let (_alone, base) = replica(&redis, &upstream, "d", &[]).await;
    let lone = Client::chat(&base, "over TLS, untrusted", Some("Bearer k")).await;
    assert_eq!(whole(lone).await, (tokens(3), true), "served anyway (R23)");
    assert!(metric(&base, "streamflight_store_errors_total").await > 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_reached_is_logged_without_its_password_and_requests_are_served() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let upstream = Mock::start(Mode::Tokens { tokens: 2, interval: Duration::ZERO, gated: false }).await;
    let url = format!("redis://:sekret-password@127.0.0.1:{closed}/");
    let mut binary =
        Binary::start(&["--redis", &url, "--fleet-secret", SECRET, "--upstream", &upstream.base]);
    let (ready, address) = binary.ready().await;
    assert!(ready.contains("replica"), "the startup line names the replica: {ready}");
    let base = format!("http://{address}");
    assert_eq!(whole(Client::chat(&base, "alone", Some("Bearer k")).await).await, (tokens(2), true));
    assert!(metric(&base, "streamflight_store_errors_total").await > 0);
    assert_eq!(metric(&base, "streamflight_fleet_alone_total").await, 1);
    eventually("the outage is logged", || async { binary.stderr().contains("store failed") }).await;
    assert!(!binary.stderr().contains("sekret"), "{}", binary.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_through_another_gateway_cancels_the_request_for_its_tenant_only() {
    let Some(redis) = RedisServer::start().await else { return };
    let upstream = Mock::start(Mode::Tokens { tokens: 3, interval: Duration::ZERO, gated: true }).await;
    let replicas = three(&redis, &upstream).await;
    let (a, b) = (&replicas[0].1, &replicas[1].1);
    let delete = |id: &str, authorization: &str| {
        http().delete(format!("{b}/v1/requests/{id}")).header("authorization", authorization).send()
    };
    // a's listener may still be subscribing as the test starts: a first request tells when
    // the cancels get through.
    let mut first = Client::chat(a, "cancel elsewhere, first", Some("Bearer k")).await;
    assert!(first.next().await.is_some());
    let deadline = Instant::now() + Duration::from_secs(10);
    while delete(&first.id, "Bearer k").await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "the cancel never reached a");
    }
    let mut client = Client::chat(a, "cancel elsewhere", Some("Bearer k")).await;
    assert!(client.next().await.is_some());
    assert_eq!(delete(&client.id, "Bearer someone-else").await.unwrap().status(), 404, "another tenant's");
    assert_eq!(delete(&client.id, "Bearer k").await.unwrap().status(), 200);
    // The client was alone on its flight: it ends, and its upstream request is aborted.
    let rest = client.rest().await;
    assert!(rest.last().is_some_and(|last| last.contains("cancel")), "{rest:?}");
    eventually("both upstream requests are aborted", || async { upstream.dropped() == 2 }).await;
}

/// An upstream that answers once `gate` opens: a 401 quoting the key it was sent (as OpenAI's
/// does) to a prompt that says "fail", two chunks and `[DONE]` to any other, with a header of
/// its own; to a prompt that says "hold", the second chunk waits for `hold`. Its base URL.
async fn quoting_upstream(
    gate: tokio::sync::watch::Receiver<bool>,
    hold: tokio::sync::watch::Receiver<bool>,
) -> String {
    use axum::body::{Body, Bytes};
    use axum::http::HeaderMap;
    use axum::response::Response;
    use futures::StreamExt;

    let answer = move |headers: HeaderMap, body: Bytes| {
        let (mut gate, mut hold) = (gate.clone(), hold.clone());
        async move {
            let _ = gate.wait_for(|open| *open).await;
            let key =
                headers.get("authorization").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            if String::from_utf8_lossy(&body).contains("fail") {
                let error = serde_json::json!({"error": {"message": format!("Incorrect API key provided: {key}"),
                    "type": "invalid_request_error", "code": "invalid_api_key"}});
                let response = Response::builder().status(401).header("content-type", "application/json");
                return response.body(Body::from(error.to_string())).unwrap();
            }
            let chunk = |i: usize| {
                let chunk = serde_json::json!({"id": "c1", "object": "chat.completion.chunk", "model": "m",
                    "choices": [{"index": 0, "delta": {"content": format!("ANSWER-TEXT-{i} ")}}]});
                format!("data: {chunk}\n\n")
            };
            let held = String::from_utf8_lossy(&body).contains("hold");
            let first = futures::stream::once(async move { Ok::<_, std::io::Error>(chunk(0)) });
            let rest = futures::stream::once(async move {
                if held {
                    let _ = hold.wait_for(|open| *open).await;
                }
                Ok(format!("{}data: [DONE]\n\n", chunk(1)))
            });
            let response = Response::builder().header("content-type", "text/event-stream");
            let body = Body::from_stream(first.chain(rest));
            response.header("x-upstream-note", "HEADER-VALUE-9f3a").body(body).unwrap()
        }
    };
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// Issue 23 (R24, G6): after an answer and an upstream 401 that quotes the operator's key have
/// gone through two gateways, and a client's resume note has been left, a dump of every key in
/// Redis holds no prompt, no answer text, no upstream header, no credential and no error text:
/// all sealed. Yet the follower got both answers whole, the 401 as the upstream sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_client_sent_or_the_upstream_answered_is_in_clear_in_redis() {
    let Some(redis) = RedisServer::start().await else { return };
    let (open, gate) = tokio::sync::watch::channel(false);
    let (_release, hold) = tokio::sync::watch::channel(false);
    let upstream = quoting_upstream(gate, hold).await;
    let key = "sk-OPERATOR-KEY-5d3e70";
    let lease = format!("{}ms", LEASE.as_millis());
    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        let flags =
            ["--redis", &redis.url, "--replica-id", name, "--lease", &lease, "--fleet-secret", SECRET];
        let mut binary =
            Binary::start(&[&flags[..], &["--upstream", &upstream, "--upstream-api-key", key]].concat());
        let (_, address) = binary.ready().await;
        replicas.push((binary, format!("http://{address}")));
    }
    let (a, b) = (replicas[0].1.clone(), replicas[1].1.clone());
    let ask = |base: &str, prompt: &str| {
        let (base, prompt) = (base.to_owned(), prompt.to_owned());
        tokio::spawn(async move { Client::chat(&base, &prompt, Some("Bearer CLIENT-CRED-41c7")).await })
    };
    let answered = [ask(&a, "PROMPT-77aa: answer me"), ask(&a, "PROMPT-88bb: fail me")];
    eventually("a leads both", || async { metric(&a, "streamflight_fleet_led_total").await == 2 }).await;
    let followed = [ask(&b, "PROMPT-77aa: answer me"), ask(&b, "PROMPT-88bb: fail me")];
    eventually("b follows both", || async { metric(&b, "streamflight_remote_joins_total").await == 2 }).await;
    open.send_replace(true);
    for [answer, failure] in [answered, followed] {
        let (mut answer, failure) = (answer.await.unwrap(), failure.await.unwrap());
        assert_eq!(answer.status, 200);
        assert_eq!(answer.headers.get("x-upstream-note").unwrap(), "HEADER-VALUE-9f3a");
        let events = answer.rest().await;
        assert_eq!(content(&events), "ANSWER-TEXT-0 ANSWER-TEXT-1 ");
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        assert_eq!(failure.status, 401, "the upstream's own status, on either gateway (G1)");
        let body = failure.text().await;
        assert!(body.contains("Incorrect API key provided"), "{body}");
    }
    // A client of a's leaves mid-answer: a's note for its resume is saved in the store.
    let mut leaving =
        Client::chat(&a, "PROMPT-99cc: hold, then resume", Some("Bearer CLIENT-CRED-41c7")).await;
    let _ = leaving.next().await;
    let id = leaving.id.clone();
    drop(leaving);

    let mut store = redis.manager().await;
    eventually("the resume note is saved", || {
        let mut store = store.clone();
        async move { store::dump(&mut store).await.iter().any(|(name, _)| name.ends_with(":note")) }
    })
    .await;
    let dumped = store::dump(&mut store).await;
    assert!(dumped.iter().filter(|(name, _)| name.ends_with(":items")).count() >= 2, "{dumped:?}");
    for needle in [
        "PROMPT-77aa",
        "PROMPT-88bb",
        "PROMPT-99cc",
        "ANSWER-TEXT",
        "chat.completion.chunk",
        "x-upstream-note",
        "HEADER-VALUE-9f3a",
        "Incorrect API key",
        key,
        "CLIENT-CRED-41c7",
        &id,
        SECRET,
    ] {
        assert_eq!(store::holding(&dumped, needle), Vec::<&str>::new(), "{needle} is in clear in Redis");
    }
    // The dump would have seen one: the same text planted in clear is found.
    let () = streamflight_redis::redis::AsyncCommands::set(&mut store, "planted", key).await.unwrap();
    assert_eq!(store::holding(&store::dump(&mut store).await, key), ["planted"]);
}
