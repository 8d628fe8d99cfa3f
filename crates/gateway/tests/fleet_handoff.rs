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
    let mut flags =
        vec!["--redis", &redis.url, "--replica-id", name, "--lease", &lease, "--upstream", &upstream.base];
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
