//! Two gateway processes on one real `redis-server`, in front of one mock upstream: what one
//! replica hands another. A replica told to stop leads the flights the other follows to their
//! end (R26); a cancel follows its request to the replica that reads it now, and one id has one
//! reader across the fleet (R18, G5); a `DELETE` of an id nobody holds costs the store little.

mod common;
#[path = "../../redis/tests/common/mod.rs"]
mod store;

use std::time::{Duration, Instant};

use common::process::Binary;
use common::*;
use store::RedisServer;

/// The lease the replicas run with: short, so that a lost leader shows soon.
const LEASE: Duration = Duration::from_millis(1000);

/// A gateway process of the fleet on `redis`, in front of `upstream`, with `extra` flags.
async fn replica(redis: &RedisServer, upstream: &Mock, name: &str, extra: &[&str]) -> (Binary, String) {
    let lease = format!("{}ms", LEASE.as_millis());
    let mut flags = vec!["--redis", &redis.url, "--replica-id", name, "--lease", &lease];
    flags.extend_from_slice(&[
        "--fleet-secret",
        "the fleet's secret, long enough",
        "--upstream",
        &upstream.base,
    ]);
    flags.extend_from_slice(extra);
    let mut binary = Binary::start(&flags);
    let (_, address) = binary.ready().await;
    (binary, format!("http://{address}"))
}

fn tokens(n: usize) -> String {
    (0..n).map(|i| format!("t{i} ")).collect()
}

/// The text of the rest of a stream, and whether it ended `[DONE]`.
async fn whole(client: &mut Client) -> (String, bool) {
    let events = client.rest().await;
    (content(&events), events.last().map(String::as_str) == Some("[DONE]"))
}

/// Waits until `binary` has written `line` to its stderr; fails at once if it exits first.
async fn logs(binary: &mut Binary, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !binary.stderr().contains(line) {
        let exited = binary.child.try_wait().unwrap();
        assert!(exited.is_none(), "exited ({exited:?}) before it said {line:?}: {}", binary.stderr());
        assert!(Instant::now() < deadline, "never said {line:?}: {}", binary.stderr());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_gateway_leads_the_flights_another_gateway_follows_to_their_end() {
    let Some(redis) = RedisServer::start().await else { return };
    let upstream = Mock::start(Mode::Tokens { tokens: 5, interval: Duration::ZERO, gated: true }).await;
    // A client that goes away leaves at once (no resume window): a keeps no client of its own.
    let (mut a, a_base) = replica(&redis, &upstream, "a", &["--resume-window", "0"]).await;
    let (_b, b_base) = replica(&redis, &upstream, "b", &["--resume-window", "0"]).await;
    let mut leader = Client::chat(&a_base, "rolling restart", Some("Bearer k")).await;
    assert!(leader.next().await.unwrap().contains("t0 "), "a leads");
    let mut follower = Client::chat(&b_base, "rolling restart", Some("Bearer k")).await;
    assert!(follower.next().await.unwrap().contains("t0 "), "b follows");
    drop(leader);
    eventually("a's own flight is gone", || async {
        metric(&a_base, "streamflight_active_flights").await == 0
    })
    .await;
    assert_eq!(metric(&a_base, "streamflight_fleet_leading").await, 1, "a still leads it, for b");

    // A rolling restart stops a: it has no client, but b's reads the flight a leads.
    a.signal(libc::SIGTERM);
    logs(&mut a, "waiting for the flights this replica leads for other replicas to end").await;
    upstream.open_gate();
    assert_eq!(whole(&mut follower).await, (tokens(5)[3..].to_owned(), true), "b's client, whole");
    assert!(a.exit().await.success(), "a exits 0 once the flight has ended: {}", a.stderr());
    assert!(a.stderr().contains("no flight led for other replicas any more"), "{}", a.stderr());
    assert_eq!(upstream.received(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_gateway_leads_for_others_no_longer_than_its_grace() {
    let Some(redis) = RedisServer::start().await else { return };
    let upstream = Mock::start(Mode::Tokens { tokens: 5, interval: Duration::ZERO, gated: true }).await;
    let flags = ["--resume-window", "0", "--shutdown-grace", "1s"];
    let (mut a, a_base) = replica(&redis, &upstream, "a", &flags).await;
    let (_b, b_base) = replica(&redis, &upstream, "b", &flags).await;
    let mut leader = Client::chat(&a_base, "a long answer", Some("Bearer k")).await;
    assert!(leader.next().await.is_some());
    let mut follower = Client::chat(&b_base, "a long answer", Some("Bearer k")).await;
    assert!(follower.next().await.is_some());
    drop(leader);
    eventually("a's own flight is gone", || async {
        metric(&a_base, "streamflight_active_flights").await == 0
    })
    .await;
    let stopped = Instant::now();
    a.signal(libc::SIGTERM);
    // The upstream never ends: a gives up after its grace, and b's client learns it.
    assert!(a.exit().await.success(), "{}", a.stderr());
    assert!(stopped.elapsed() >= Duration::from_secs(1), "a waited its grace: {:?}", stopped.elapsed());
    assert!(a.stderr().contains("grace period over before the flights"), "{}", a.stderr());
    let rest = follower.rest().await;
    assert!(rest.last().is_some_and(|last| last.contains("upstream_lost")), "{rest:?}");
}

/// `GET /v1/requests/{id}/events` on `base` after event `last`, for `authorization`.
fn resumed(base: &str, id: &str, last: u64, authorization: &str) -> reqwest::RequestBuilder {
    http()
        .get(format!("{base}/v1/requests/{id}/events"))
        .header("last-event-id", last.to_string())
        .header("authorization", authorization)
}

/// `DELETE /v1/requests/{id}` on `base`, as tenant `Bearer k`.
async fn delete(base: &str, id: &str) -> reqwest::Response {
    http()
        .delete(format!("{base}/v1/requests/{id}"))
        .header("authorization", "Bearer k")
        .send()
        .await
        .unwrap()
}

/// Resumes `id` after event 1 on `base` as soon as the fleet knows it is detached (until then
/// 404, or 409 while the hand still says a reader has it).
async fn resume_when_detached(base: &str, id: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = Client::send(resumed(base, id, 1, "Bearer k")).await;
        if again.status == 200 {
            return again;
        }
        assert!([404, 409].contains(&again.status), "{}", again.status);
        assert!(Instant::now() < deadline, "{base} never resumed {id}");
    }
}

/// A client on `base` that read the first event of "`question`" and then lost its connection:
/// its request's id.
async fn detached(base: &str, question: &str) -> String {
    let mut client = Client::chat(base, question, Some("Bearer k")).await;
    let (id, first) = client.next_with_id().await.unwrap();
    assert_eq!((id.as_deref(), first.contains("t0 ")), (Some("1"), true), "{first}");
    client.id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_on_the_first_gateway_cancels_the_stream_resumed_on_another() {
    let Some(redis) = RedisServer::start().await else { return };
    let upstream = Mock::start(Mode::Tokens { tokens: 5, interval: Duration::ZERO, gated: true }).await;
    let (_a, a) = replica(&redis, &upstream, "a", &[]).await;
    let (_b, b) = replica(&redis, &upstream, "b", &[]).await;
    let id = detached(&a, "cancel me where I am").await;
    let mut again = resume_when_detached(&b, &id).await;

    // The DELETE lands on a, which still keeps the detached request: it goes to b, which reads it.
    let cancelled = delete(&a, &id).await;
    assert_eq!(cancelled.status(), 200);
    upstream.open_gate();
    let rest = again.rest().await;
    assert!(rest.last().is_some_and(|last| last.contains("cancel")), "b's stream is cancelled: {rest:?}");
    assert!(!rest.iter().any(|event| event == "[DONE]"), "{rest:?}");
    // Gone everywhere: neither gateway knows it any more.
    eventually("the cancel's end is in the store", || async {
        delete(&a, &id).await.status() == 404 && delete(&b, &id).await.status() == 404
    })
    .await;
    assert_eq!(Client::send(resumed(&a, &id, 1, "Bearer k")).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_has_one_reader_across_the_fleet_and_a_second_resume_gets_409() {
    let Some(redis) = RedisServer::start().await else { return };
    let upstream = Mock::start(Mode::Tokens { tokens: 5, interval: Duration::ZERO, gated: true }).await;
    let (_a, a) = replica(&redis, &upstream, "a", &[]).await;
    let (_b, b) = replica(&redis, &upstream, "b", &[]).await;
    let id = detached(&a, "one reader").await;

    // Resumed on b: a second resume, on b or on a (which keeps the detached request), is refused
    // as on one gateway.
    let first = resume_when_detached(&b, &id).await;
    for base in [&b, &a] {
        let second = Client::send(resumed(base, &id, 1, "Bearer k")).await;
        assert_eq!(second.status, 409, "{base}");
        openai_error(&second.json().await, "request_streaming");
    }
    assert_eq!(Client::send(resumed(&a, &id, 1, "Bearer other")).await.status, 404, "another tenant's");

    // The reader goes away again; two resumes at once, on a and on b: one reader, never two.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let reader = loop {
        let (on_a, on_b) = tokio::join!(
            Client::send(resumed(&a, &id, 1, "Bearer k")),
            Client::send(resumed(&b, &id, 1, "Bearer k"))
        );
        let statuses = [on_a.status, on_b.status];
        assert!(statuses.iter().all(|status| [200, 409].contains(status)), "{statuses:?}");
        assert!(statuses != [200, 200], "two readers of one request");
        if on_a.status == 200 {
            break on_a;
        }
        if on_b.status == 200 {
            break on_b;
        }
        assert!(Instant::now() < deadline, "nobody resumed it");
    };
    // And once more on b, whose own resumed stream starts at the answer's item 2: it reads on
    // from where its client was, whichever gateway had it last.
    drop(reader);
    let mut reader = resume_when_detached(&b, &id).await;
    upstream.open_gate();
    let rest = reader.rest().await;
    assert_eq!(content(&rest), "t1 t2 t3 t4 ");
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"));
    // Ended: no resume anywhere, not even on a, which kept the request it had detached.
    eventually("the end is in the store", || async {
        Client::send(resumed(&a, &id, 1, "Bearer k")).await.status == 404
            && Client::send(resumed(&b, &id, 1, "Bearer k")).await.status == 404
    })
    .await;
    assert_eq!(upstream.received(), 1);
}

/// Commands the store has carried out so far (`INFO commandstats`), by name, `INFO` left out.
async fn commands(store: &mut redis::aio::ConnectionManager) -> std::collections::BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(store).await.unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|stat| stat.strip_prefix("calls="))?.parse().ok()?;
            (name != "info").then(|| (name.to_owned(), calls))
        })
        .collect()
}

/// How many commands the store carried out between two counts, in all, and by name.
fn added(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> (u64, String) {
    let mut all = 0;
    let mut named = String::new();
    for (name, calls) in after {
        let more = calls - before.get(name).copied().unwrap_or(0);
        if more > 0 {
            all += more;
            named.push_str(&format!("{name}={more} "));
        }
    }
    (all, named)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_or_resume_of_an_id_nobody_holds_costs_the_store_at_most_one_command() {
    let Some(redis) = RedisServer::start().await else { return };
    let upstream = Mock::start(Mode::Tokens { tokens: 3, interval: Duration::ZERO, gated: true }).await;
    let (_a, a) = replica(&redis, &upstream, "a", &[]).await;
    let (_b, b) = replica(&redis, &upstream, "b", &[]).await;
    let mut store = redis.manager().await;
    // Each gateway subscribes to its cancels as it starts: done before anything is counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let channels = ["sf:signal:cancel:a", "sf:signal:cancel:b"];
        let counts: Vec<(String, u64)> =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(&channels).query_async(&mut store).await.unwrap();
        if counts.iter().all(|(_, subscribers)| *subscribers == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "the gateways never subscribed: {counts:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    const N: u64 = 50;
    // Ids of another shape than the gateway's (32 hex digits): the store is never asked.
    let before = commands(&mut store).await;
    let started = Instant::now();
    for i in 0..N {
        for id in [format!("{i:031x}"), format!("{i:032x}0"), format!("{i:031x}g"), format!("req-{i}")] {
            assert_eq!(delete(&a, &id).await.status(), 404, "{id}");
        }
        assert_eq!(Client::send(resumed(&a, &format!("{i:031x}z"), 1, "Bearer k")).await.status, 404);
    }
    let (wrong_shape, named) = added(&before, &commands(&mut store).await);
    eprintln!(
        "{} DELETEs and {N} resumes of ids of the wrong shape: {wrong_shape} store commands ({named}) in {:?}",
        4 * N,
        started.elapsed()
    );
    assert_eq!(wrong_shape, 0, "{named}");

    // Ids of the right shape that nobody holds: one read each, and a 404 at once.
    let before = commands(&mut store).await;
    let started = Instant::now();
    for i in 0..N {
        let id = format!("{:032x}", u128::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
        assert_eq!(delete(&a, &id).await.status(), 404, "{id}");
    }
    let deletes = started.elapsed();
    let (unknown, named) = added(&before, &commands(&mut store).await);
    eprintln!("{N} DELETEs of unknown ids: {unknown} store commands ({named}) in {deletes:?}");
    assert!(unknown <= N, "at most one command per DELETE: {unknown} ({named})");
    assert!(!named.contains("publish"), "nobody is asked: {named}");
    // Generous: the poll this replaces took 0.66 s for each.
    assert!(deletes < Duration::from_secs(10), "{N} DELETEs took {deletes:?}");
    let before = commands(&mut store).await;
    for i in 0..N {
        let id = format!("{:032x}", u128::from(i).wrapping_mul(0xc2b2_ae3d_27d4_eb4f_1656_67b1_9e37_79f9));
        assert_eq!(Client::send(resumed(&b, &id, 1, "Bearer k")).await.status, 404, "{id}");
    }
    let (unknown, named) = added(&before, &commands(&mut store).await);
    eprintln!("{N} resumes of unknown ids: {unknown} store commands ({named})");
    assert!(unknown <= N, "at most one command per resume: {unknown} ({named})");

    // A known id, held by another replica: a read, a PUBLISH and a blocking pop of the
    // holder's answer here, never a poll. (A second client keeps the flight going: its end
    // would add the flight's own commands.)
    let mut client = Client::chat(&a, "a known one", Some("Bearer k")).await;
    let mut company = Client::chat(&a, "a known one", Some("Bearer k")).await;
    assert!(client.next().await.is_some() && company.next().await.is_some());
    let deadline = Instant::now() + Duration::from_secs(10);
    let (status, spent) = loop {
        let before = commands(&mut store).await;
        let status = delete(&b, &client.id).await.status();
        let after = commands(&mut store).await;
        // The hand is written in the background: until it is, the id is unknown to b.
        if status == 200 || Instant::now() >= deadline {
            let count =
                |name: &str| after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
            break (status, (count("publish"), count("blpop"), added(&before, &after)));
        }
    };
    assert_eq!(status, 200);
    let (publishes, pops, (all, named)) = spent;
    eprintln!("a DELETE of a request held by another replica: {all} store commands ({named})");
    assert_eq!((publishes, pops), (1, 1), "{named}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_count_remote_joins_resumes_and_lingers_apart() {
    let Some(redis) = RedisServer::start().await else { return };
    let upstream = Mock::start(Mode::Tokens { tokens: 3, interval: Duration::ZERO, gated: true }).await;
    let (_a, a) = replica(&redis, &upstream, "a", &["--linger", "10s"]).await;
    let (_b, b) = replica(&redis, &upstream, "b", &["--linger", "10s"]).await;
    // A live flight of a's, followed on b: a remote join.
    let mut led = Client::chat(&a, "joined", Some("Bearer k")).await;
    assert!(led.next().await.is_some());
    let mut joined = Client::chat(&b, "joined", Some("Bearer k")).await;
    assert!(joined.next().await.is_some());
    // A stream of a's, resumed on b: a remote resume.
    let id = detached(&a, "resumed").await;
    let mut again = resume_when_detached(&b, &id).await;
    upstream.open_gate();
    for client in [&mut led, &mut joined, &mut again] {
        assert!(whole(client).await.1, "whole");
    }
    // A finished answer of a's, asked for on b within its linger: a fleet linger.
    assert!(whole(&mut Client::chat(&a, "lingered", Some("Bearer k")).await).await.1);
    assert!(whole(&mut Client::chat(&b, "lingered", Some("Bearer k")).await).await.1);
    assert_eq!(upstream.received(), 3, "no upstream request for the join, the resume or the linger");
    let counted = [
        metric(&b, "streamflight_remote_joins_total").await,
        metric(&b, "streamflight_remote_resumed_total").await,
        metric(&b, "streamflight_fleet_lingered_total").await,
    ];
    assert_eq!(counted, [1, 1, 1], "joins, resumes, lingers: each counted once, apart");
}
