//! The store's faults, for real (issue 23): a `redis-server` stopped (SIGSTOP: a hung store),
//! flushed, killed and started again empty, or short of connections (`--maxclients`), under
//! replicas in one process with an upstream the test paces (R20-R23).
//!
//! Nothing here sleeps to synchronise: each wait is on a condition with a deadline, and time
//! bounds are loose (a lease or two, plus slack), never tight.

mod common;

use std::time::{Duration, Instant};

use common::answer::{Upstream, all, done, items, next, take};
use common::{RedisServer, eventually, within};
use redis::AsyncCommands;
use streamflight_redis::{Fleet, FleetConfig, Flights, Lost, Text};
use streamflight_tokio::{Config, Event, Failure};

type Replica = Flights<String, String, String>;

/// Long next to the store's deadline (200 ms by default), so that "one deadline" and "two
/// leases" are far apart.
const LEASE: Duration = Duration::from_secs(2);

/// What a bound on time is given on top, for a loaded machine.
const SLACK: Duration = Duration::from_millis(1_500);

fn replica(server: &RedisServer, name: &str, lease: Duration) -> Replica {
    let config = FleetConfig::default().replica(name).lease(lease).pause(Duration::from_millis(200));
    Flights::new(Fleet::new(&server.url, Text, config).unwrap(), Config::default())
}

/// The subscription ended with the fleet's own failure `lost`.
fn ended_lost(events: &[Event<String, String>], lost: Lost) -> bool {
    matches!(events.last(), Some(Event::Failed(Failure::Upstream(error))) if **error == lost.to_string())
}

/// Bursts of identical requests over `replicas` on fresh keys until one burst is served by one
/// upstream request (the fleet coalesces again), each client served whole meanwhile.
async fn coalesces_again(replicas: &[&Replica], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for round in 0.. {
        let upstream = Upstream::default();
        let key = format!("{what}, round {round}");
        let clients: Vec<_> = (0..replicas.len() * 2)
            .map(|i| {
                tokio::spawn(all(replicas[i % replicas.len()].request(key.clone(), upstream.answer(2, None))))
            })
            .collect();
        upstream.release(clients.len() * 2);
        for client in clients {
            assert_eq!(done(&client.await.unwrap()), (items(2), true), "{what}: nothing fails meanwhile");
        }
        if upstream.started() == 1 {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: the fleet never coalesced again");
    }
}

/// R23 under a hung store: the leader's own clients keep getting items (no renewal or append
/// on its way holds them back), a new request waits one store deadline at most before it is
/// served alone, and the followers end `Lost` within two leases of the fault, not later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_store_stalls_no_request_and_followers_end_within_two_leases() {
    let Some(server) = RedisServer::start().await else { return };
    let (a, b, c) =
        (replica(&server, "a", LEASE), replica(&server, "b", LEASE), replica(&server, "c", LEASE));
    let upstream = Upstream::default();
    let mut leader = a.request("k".to_owned(), upstream.answer(10, None));
    upstream.release(2);
    assert_eq!(take(&mut leader, 2).await, items(2));
    let mut follower = b.request("k".to_owned(), upstream.answer(10, None));
    assert_eq!(take(&mut follower, 2).await, items(2));
    assert_eq!((a.fleet_stats().led, b.fleet_stats().remote_joins), (1, 1));

    server.stop();
    let fault = Instant::now();

    // The leader's clients: the next items come while every store call hangs.
    upstream.release(3);
    let more = tokio::time::timeout(LEASE / 2, take(&mut leader, 3)).await;
    assert_eq!(more.expect("the leader's clients get items while the store hangs"), items(5)[2..]);

    // A new request on a replica that has not seen the store fail yet: one deadline, then alone.
    let fresh = Upstream::default();
    fresh.release(1);
    let asked = Instant::now();
    let mut alone = c.request("a new question".to_owned(), fresh.answer(1, None));
    let first = tokio::time::timeout(LEASE, next(&mut alone)).await.expect("served within a lease");
    let waited = asked.elapsed();
    assert_eq!(first, Some(Event::Item("t0".to_owned())));
    assert!(
        waited < Duration::from_millis(200) + Duration::from_millis(500),
        "a new request waited {waited:?}"
    );
    eprintln!(
        "a new request during the hang had its first item after {waited:?} (deadline 200 ms, lease {LEASE:?})"
    );
    assert_eq!(c.fleet_stats().alone, 1);

    // The follower: its leader is out of its reach; it ends, and says why, within two leases.
    let rest = tokio::time::timeout((LEASE * 2 + SLACK).saturating_sub(fault.elapsed()), all(follower))
        .await
        .expect("the follower ends within two leases of the fault");
    let ended = fault.elapsed();
    assert!(ended_lost(&rest, Lost::Leader), "{rest:?}");
    eprintln!("the follower ended Lost {ended:?} after the store hung (lease {LEASE:?})");
    assert_eq!(done(&rest).0, items(rest.len() - 1 + 2)[2..], "a prefix of the answer, then the end");

    server.resume();
    // What was given up during the hang still runs once the store goes on (an `Acquire` of
    // c's, renewals of a's that take back the lease that lapsed meanwhile): none of it leaves
    // a lease that nobody leads under, which newcomers would follow for a lease and more. (a
    // may still lead "k" if its two leases of failure had not passed: that lease is its own.)
    let mut store = server.manager().await;
    let resumed = Instant::now();
    loop {
        let leases = store.keys::<_, Vec<String>>("sf:*:lease").await.unwrap().len();
        let leading: usize = [&a, &b, &c].iter().map(|replica| replica.fleet().unwrap().leading()).sum();
        if leases <= leading {
            break;
        }
        assert!(resumed.elapsed() < LEASE / 2, "a lease nobody leads under outlives the hang");
    }
    // The leader's own clients get the whole answer, store or not.
    upstream.release(5);
    assert_eq!(done(&all(leader).await), (items(10)[5..].to_vec(), true));
    coalesces_again(&[&a, &b, &c], "after the hang").await;
}

/// A store that loses the stream loses no answer: after a `FLUSHALL` the leader, which holds
/// every item, writes the stream again under its lease (taken back), and each follower carries
/// on from the item it had: everyone gets the whole answer, nobody `Lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_store_loses_no_answer() {
    let Some(server) = RedisServer::start().await else { return };
    let replicas = [replica(&server, "a", LEASE), replica(&server, "b", LEASE), replica(&server, "c", LEASE)];
    let upstream = Upstream::default();
    let mut clients: Vec<_> =
        replicas.iter().map(|replica| replica.request("k".to_owned(), upstream.answer(10, None))).collect();
    upstream.release(3);
    for client in &mut clients {
        assert_eq!(take(client, 3).await, items(3));
    }
    let mut store = server.manager().await;
    let () = redis::cmd("FLUSHALL").query_async(&mut store).await.unwrap();
    let gone: Vec<String> = store.keys("sf:*").await.unwrap();
    assert!(gone.is_empty(), "{gone:?}");

    upstream.release(7);
    for client in clients {
        let rest = all(client).await;
        assert_eq!(done(&rest), (items(10)[3..].to_vec(), true), "{rest:?}");
    }
    assert_eq!(upstream.started(), 1);
    for replica in &replicas {
        assert_eq!(replica.fleet_stats().leader_lost, 0, "{:?}", replica.fleet_stats());
    }
}

/// The same when the store dies and comes back empty on its port (SIGKILL, then a new
/// `redis-server`): the leader writes the stream again once it is back, and the followers,
/// which saw the store fail for less than two leases, carry on whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_restarted_empty_loses_no_answer() {
    let Some(mut server) = RedisServer::start().await else { return };
    let replicas = [replica(&server, "a", LEASE), replica(&server, "b", LEASE), replica(&server, "c", LEASE)];
    let upstream = Upstream::default();
    // a leads: the others ask once it does.
    let mut clients = vec![replicas[0].request("k".to_owned(), upstream.answer(10, None))];
    eventually("a leads", || replicas[0].fleet_stats().led == 1).await;
    clients.extend(
        replicas[1..].iter().map(|replica| replica.request("k".to_owned(), upstream.answer(10, None))),
    );
    upstream.release(3);
    for client in &mut clients {
        assert_eq!(take(client, 3).await, items(3));
    }
    server.kill();
    // Items come while the store is gone: the leader's clients have them, the store will.
    upstream.release(2);
    assert_eq!(take(&mut clients[0], 2).await, items(5)[3..]);
    server.restart().await;

    upstream.release(5);
    let leader = clients.remove(0);
    assert_eq!(done(&all(leader).await), (items(10)[5..].to_vec(), true));
    for client in clients {
        let rest = all(client).await;
        assert_eq!(done(&rest), (items(10)[3..].to_vec(), true), "{rest:?}");
    }
    assert_eq!(upstream.started(), 1);
    for replica in &replicas {
        assert_eq!(replica.fleet_stats().leader_lost, 0, "{:?}", replica.fleet_stats());
    }
}

/// One reader connection per replica, whatever the number of flights it follows: 1,000
/// flights led by one replica and followed by another, on a store that takes 50 clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_followed_flights_take_a_handful_of_connections() {
    const FLIGHTS: usize = 1_000;
    let Some(server) = RedisServer::start_with(&["--maxclients", "50"]).await else { return };
    // A long lease: 2,000 flights' renewals and interest stay a light load on a small machine;
    // a long deadline: 1,000 requests at once, each opened in two store calls on a loaded
    // machine, would otherwise see some of them served alone (R23), with an upstream each.
    let replica = |name: &str| {
        let config = FleetConfig::default()
            .replica(name)
            .lease(Duration::from_secs(5))
            .deadline(Duration::from_secs(2));
        Flights::new(Fleet::new(&server.url, Text, config).unwrap(), Config::default())
    };
    let (a, b) = (replica("a"), replica("b"));
    let upstream = Upstream::default();
    let key = |i: usize| format!("question {i}");
    let start = Instant::now();
    let leaders: Vec<_> = (0..FLIGHTS).map(|i| a.request(key(i), upstream.answer(3, None))).collect();
    within("a leads every flight", Duration::from_secs(30), || a.fleet_stats().led == FLIGHTS as u64).await;
    let led = start.elapsed();
    let followers: Vec<_> = (0..FLIGHTS).map(|i| b.request(key(i), upstream.answer(3, None))).collect();
    within("b follows every flight", Duration::from_secs(30), || {
        b.fleet_stats().remote_joins == FLIGHTS as u64
    })
    .await;
    let followed = start.elapsed();
    let following = server.info("clients", "connected_clients").await;

    upstream.release(FLIGHTS * 3);
    let clients: Vec<_> =
        leaders.into_iter().chain(followers).map(|client| tokio::spawn(all(client))).collect();
    for client in clients {
        assert_eq!(done(&client.await.unwrap()), (items(3), true));
    }
    eprintln!("led after {led:?}, followed after {followed:?}, all done after {:?}", start.elapsed());
    assert_eq!(upstream.started(), FLIGHTS, "one upstream request per flight, for both replicas");
    let (stats_a, stats_b) = (a.fleet_stats(), b.fleet_stats());
    assert_eq!(stats_a.leader_lost + stats_b.leader_lost + stats_b.alone, 0, "{stats_a:?} {stats_b:?}");
    let rejected = server.info("stats", "rejected_connections").await;
    let after = server.info("clients", "connected_clients").await;
    eprintln!(
        "{FLIGHTS} followed flights: {following} connections while following, {after} after, {rejected} refused"
    );
    // a: its command connection; b: its command connection and its reader; the test's own INFO.
    assert!(following <= 5 && after <= 5, "{following} connections while following, {after} after");
    assert_eq!(rejected, 0);
}

/// The reader wakes for a new flight at once: a follower that starts while the reader blocks
/// on another flight's stream gets its first item without waiting out that block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_followed_flight_does_not_wait_for_the_readers_block() {
    let Some(server) = RedisServer::start().await else { return };
    // b's reader blocks up to a quarter lease: 2 s.
    let lease = Duration::from_secs(8);
    let (a, b) = (replica(&server, "a", lease), replica(&server, "b", lease));
    let quiet = Upstream::default();
    let _quiet_leader = a.request("quiet".to_owned(), quiet.answer(1, None));
    eventually("a leads the quiet flight", || a.fleet_stats().led == 1).await;
    let _quiet_follower = b.request("quiet".to_owned(), quiet.answer(1, None));
    eventually("b follows the quiet flight", || b.fleet_stats().remote_joins == 1).await;

    // A second flight, followed before it has an item: its reads wait in the reader.
    let busy = Upstream::default();
    let mut leader = a.request("busy".to_owned(), busy.answer(1, None));
    eventually("a leads the busy flight", || a.fleet_stats().led == 2).await;
    let mut follower = b.request("busy".to_owned(), busy.answer(1, None));
    eventually("b follows the busy flight", || b.fleet_stats().remote_joins == 2).await;
    busy.release(1);
    let asked = Instant::now();
    assert_eq!(take(&mut leader, 1).await, items(1));
    let first = tokio::time::timeout(lease, next(&mut follower)).await.expect("within a lease");
    let waited = asked.elapsed();
    assert_eq!(first, Some(Event::Item("t0".to_owned())));
    eprintln!("a follower that joined while the reader blocked had its item after {waited:?}");
    assert!(waited < lease / 8, "the new follower waited out the reader's block: {waited:?}");
}
