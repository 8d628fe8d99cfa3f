//! Three replicas in one process, each its own manager and store connections, against a real
//! `redis-server` and an upstream the test paces and counts (R19-R23).

mod common;

use std::time::Duration;

use common::answer::{Upstream, all, done, items, next, take};
use common::{RedisServer, eventually};
use futures::StreamExt;
use redis::AsyncCommands;
use streamflight_redis::{Fleet, FleetConfig, FleetRole, Flights, Lost, Place, Text};
use streamflight_tokio::{Config, Event, Failure, Role};

const LEASE: Duration = Duration::from_millis(300);

type Replica = Flights<String, String, String>;

fn replica(server: &RedisServer, name: &str) -> Replica {
    let config = FleetConfig::default().replica(name).lease(LEASE).pause(Duration::from_millis(200));
    Flights::new(Fleet::new(&server.url, Text, config).unwrap(), Config::default())
}

async fn three(server: &RedisServer) -> [Replica; 3] {
    [replica(server, "a"), replica(server, "b"), replica(server, "c")]
}

/// Waits until every replica is on the fleet's flight (one leads it, the others follow): a
/// request's flight reaches the store in a task of its own, so an answer released before then
/// could end before a slow replica asks, which would then start a flight of its own.
async fn on_the_flight(replicas: &[Replica]) {
    eventually("every replica is on the flight", || {
        replicas.iter().map(|r| r.fleet_stats()).map(|s| s.led + s.remote_joins).sum::<u64>() == 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_spread_over_three_replicas_get_identical_streams_from_one_upstream_request() {
    let Some(server) = RedisServer::start().await else { return };
    let replicas = three(&server).await;
    let upstream = Upstream::default();
    let key = "the same prompt".to_owned();
    let clients: Vec<_> = (0..12)
        .map(|i| replicas[i % 3].request(key.clone(), upstream.answer(20, None)))
        .map(|subscription| tokio::spawn(all(subscription)))
        .collect();
    on_the_flight(&replicas).await;
    upstream.release(20);
    for client in clients {
        assert_eq!(done(&client.await.unwrap()), (items(20), true));
    }
    assert_eq!(upstream.started(), 1, "one upstream request for the whole fleet");
    let stats: Vec<_> = replicas.iter().map(Replica::fleet_stats).collect();
    assert_eq!(stats.iter().map(|s| s.led).sum::<u64>(), 1, "{stats:?}");
    assert_eq!(stats.iter().map(|s| s.remote_joins).sum::<u64>(), 2, "{stats:?}");
    assert_eq!(stats.iter().map(|s| s.store_errors + s.alone + s.leader_lost).sum::<u64>(), 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_on_another_replica_replays_the_whole_history() {
    let Some(server) = RedisServer::start().await else { return };
    let [a, b, _] = three(&server).await;
    let upstream = Upstream::default();
    let key = "k".to_owned();
    let mut first = a.request(key.clone(), upstream.answer(6, None));
    upstream.release(3);
    assert_eq!(take(&mut first, 3).await, items(3));
    let late = b.request(key.clone(), upstream.answer(6, None));
    let late = tokio::spawn(all(late));
    eventually("b follows a's flight", || b.fleet_stats().remote_joins == 1).await;
    upstream.release(3);
    assert_eq!(done(&late.await.unwrap()), (items(6), true), "the history, then the live items");
    assert_eq!(done(&first.collect::<Vec<_>>().await), (items(6)[3..].to_vec(), true));
    assert_eq!(upstream.started(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_goes_on_while_another_replica_wants_it_and_is_aborted_once_nobody_does() {
    let Some(server) = RedisServer::start().await else { return };
    let [a, b, _] = three(&server).await;
    let upstream = Upstream::default();
    let key = "k".to_owned();
    let mut leader = a.request(key.clone(), upstream.answer(100, None));
    upstream.release(1);
    assert!(matches!(next(&mut leader).await, Some(Event::Item(_))), "a leads");
    let mut follower = b.request(key.clone(), upstream.answer(100, None));
    assert!(matches!(next(&mut follower).await, Some(Event::Item(_))), "b follows");

    // Every client of the leading replica leaves; b's stays.
    drop(leader);
    eventually("a's local flight is gone", || a.is_idle()).await;
    // Past the interest's and the lease's timeouts: the upstream still runs for b.
    tokio::time::sleep(LEASE * 2).await;
    upstream.release(5);
    assert_eq!(take(&mut follower, 5).await, items(6)[1..]);
    assert_eq!(upstream.aborted(), 0, "b still wants the flight");

    // b's client leaves too: nobody wants it, the leader aborts the upstream.
    drop(follower);
    eventually("the upstream is aborted", || upstream.aborted() == 1).await;
    assert_eq!(upstream.started(), 1);
    // The next request is a fresh flight.
    let again = b.request(key, upstream.answer(1, None));
    upstream.release(1);
    assert_eq!(done(&all(again).await), (items(1), true));
    assert_eq!(upstream.started(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstreams_failure_reaches_every_replica_as_it_was() {
    let Some(server) = RedisServer::start().await else { return };
    let replicas = three(&server).await;
    let upstream = Upstream::default();
    let clients: Vec<_> = replicas
        .iter()
        .map(|replica| {
            tokio::spawn(all(replica.request("k".to_owned(), upstream.answer(2, Some("429: slow down")))))
        })
        .collect();
    on_the_flight(&replicas).await;
    upstream.release(2);
    for client in clients {
        let events = client.await.unwrap();
        assert_eq!(done(&events).0, items(2));
        match events.last() {
            Some(Event::Failed(Failure::Upstream(error))) => assert_eq!(**error, "429: slow down"),
            other => panic!("the upstream's own error, not {other:?}"),
        }
    }
    assert_eq!(upstream.started(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lease_is_fenced_and_its_followers_end_with_leader_lost() {
    let Some(server) = RedisServer::start().await else { return };
    let [a, b, _] = three(&server).await;
    let upstream = Upstream::default();
    let mut leader = a.request("k".to_owned(), upstream.answer(10, None));
    upstream.release(2);
    take(&mut leader, 2).await;
    let mut follower = b.request("k".to_owned(), upstream.answer(10, None));
    take(&mut follower, 2).await;
    // Another replica takes the lease, as it does when the leader stalls past it: a lease
    // that merely vanished (the store lost it) the leader would take back and lead on.
    let mut store = server.manager().await;
    let leases: Vec<String> = store.keys("sf:*:lease").await.unwrap();
    for lease in leases {
        let _: () = store.set(lease, "another replica's token").await.unwrap();
    }
    let ended = tokio::time::timeout(LEASE * 2, follower.collect::<Vec<_>>())
        .await
        .expect("within two lease timeouts");
    match ended.last() {
        Some(Event::Failed(Failure::Upstream(error))) => assert_eq!(**error, Lost::Leader.to_string()),
        other => panic!("the leader-lost failure, not {other:?}"),
    }
    // The fenced leader serves its own client on, whole.
    upstream.release(8);
    assert_eq!(done(&leader.collect::<Vec<_>>().await), (items(10)[2..].to_vec(), true));
    eventually("both saw the leader lost", || {
        a.fleet_stats().leader_lost == 1 && b.fleet_stats().leader_lost == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_down_each_replica_coalesces_alone_and_the_fleet_again_once_it_is_back() {
    let Some(mut server) = RedisServer::start().await else { return };
    let replicas = three(&server).await;
    let burst = |key: &str, upstream: &Upstream| {
        (0..9)
            .map(|i| tokio::spawn(all(replicas[i % 3].request(key.to_owned(), upstream.answer(3, None)))))
            .collect::<Vec<_>>()
    };
    server.kill();
    let down = Upstream::default();
    let clients = burst("down", &down);
    down.release(9);
    for client in clients {
        assert_eq!(done(&client.await.unwrap()), (items(3), true), "served without the store");
    }
    assert_eq!(down.started(), 3, "one upstream request per replica meanwhile");
    assert!(replicas.iter().all(|r| r.fleet_stats().store_errors > 0 && r.fleet_stats().alone == 1));

    server.restart().await;
    // Each replica tries the store again once its pause is over: bursts until one is coalesced
    // across the fleet again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for round in 0.. {
        let back = Upstream::default();
        let clients = burst(&format!("back {round}"), &back);
        back.release(9);
        for client in clients {
            assert_eq!(done(&client.await.unwrap()), (items(3), true), "nothing fails meanwhile");
        }
        if back.started() == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the fleet never coalesced again");
    }
}

/// A client of `replica` on `key`'s flight, which it leads, once the client has its first `had`
/// of the answer's 5 items.
async fn led_with(
    replica: &Replica,
    upstream: &Upstream,
    key: &str,
    had: usize,
) -> streamflight_redis::Subscription<String, String> {
    let mut client = replica.request(key.to_owned(), upstream.answer(5, None));
    upstream.release(had);
    take(&mut client, had).await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_replays_a_flight_from_its_place_after_the_items_a_client_has() {
    let Some(server) = RedisServer::start().await else { return };
    let [a, b, _] = three(&server).await;
    let upstream = Upstream::default();
    let key = "resume me".to_owned();
    let first = led_with(&a, &upstream, &key, 3).await;
    // a hands the place over as text (in a note any replica can load, named by the client).
    let place = a.fleet().unwrap().place(&key).expect("a is on the flight");
    a.fleet()
        .unwrap()
        .save(b"client 7", place.to_string().as_bytes(), Duration::from_secs(10))
        .await
        .unwrap();
    let note = b.fleet().unwrap().load(b"client 7").await.unwrap().expect("the note");
    let place: Place = String::from_utf8(note).unwrap().parse().unwrap();
    // The client had two items: b replays from the third, then the live ones, then the end.
    let replayed = b.fleet().unwrap().replay(&place, 2).await.unwrap();
    drop(first);
    upstream.release(2);
    let replayed: Vec<_> =
        tokio::time::timeout(Duration::from_secs(10), replayed.collect::<Vec<_>>()).await.unwrap();
    assert_eq!(replayed, ["t2", "t3", "t4"].map(|item| Ok(item.to_owned())));
    assert_eq!(upstream.aborted(), 0, "b's interest kept the upstream going");
    assert_eq!(b.fleet_stats().replays, 1);
    assert_eq!(b.fleet().unwrap().load(b"client 8").await.unwrap(), None);
}

/// The members of every flight's interest in the store, sorted.
async fn interest(store: &mut redis::aio::ConnectionManager) -> Vec<String> {
    let mut members = Vec::new();
    for key in store.keys::<_, Vec<String>>("sf:*:interest").await.unwrap() {
        members.extend(store.zrange::<_, Vec<String>>(key, 0, -1).await.unwrap());
    }
    members.sort();
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_flights_on_a_replica_going_leaves_the_others_interest_standing() {
    // A replica can be on one answer twice: here two resumes; in a gateway, a flight whose
    // only request went while its join was on its way, and the newer flight of that key.
    let Some(server) = RedisServer::start().await else { return };
    let [a, b, _] = three(&server).await;
    let upstream = Upstream::default();
    let key = "twice on b".to_owned();
    let first = led_with(&a, &upstream, &key, 2).await;
    let place = a.fleet().unwrap().place(&key).expect("a is on the flight");
    let fleet = b.fleet().unwrap();
    let gone = fleet.replay(&place, 0).await.unwrap();
    let kept = fleet.replay(&place, 0).await.unwrap();
    let mut store = server.manager().await;
    let members = interest(&mut store).await;
    assert_eq!(members.len(), 2, "each of b's flights has a member of its own: {members:?}");
    drop(gone);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while interest(&mut store).await.len() == members.len() {
        assert!(std::time::Instant::now() < deadline, "the withdrawal never came");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // a's own client goes right after the withdrawal: the kept flight's interest alone holds
    // the upstream, past several of the leader's checks (one every third of the lease).
    drop(first);
    let ended = tokio::spawn(tokio::time::timeout(Duration::from_secs(10), kept.collect::<Vec<_>>()));
    let checks = std::time::Instant::now() + LEASE * 2;
    while std::time::Instant::now() < checks {
        assert_eq!(upstream.aborted(), 0, "the leader gave up a flight b still wants");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    upstream.release(3);
    let ended = ended.await.unwrap().expect("the kept flight ends");
    assert_eq!(ended, items(5).into_iter().map(Ok).collect::<Vec<_>>());
    assert_eq!(upstream.aborted(), 0);
}

/// Two replicas whose finished answers linger for `linger`, in the fleet and in each manager:
/// set once, on the manager's config, and derived for the fleet.
fn lingering(server: &RedisServer, name: &str, linger: Duration) -> Replica {
    let config = FleetConfig::default().replica(name).lease(LEASE).pause(Duration::from_millis(200));
    let replica = Flights::connect(&server.url, Text, config, Config::default().linger(linger)).unwrap();
    assert_eq!(replica.fleet().unwrap().config().linger_duration(), linger);
    replica
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_answer_lingers_across_the_fleet_and_a_failed_one_never_does() {
    let Some(server) = RedisServer::start().await else { return };
    let linger = Duration::from_secs(30);
    let (a, b) = (lingering(&server, "a", linger), lingering(&server, "b", linger));

    // R17 across replicas: a whole answer serves an identical request on another replica.
    let whole = Upstream::default();
    let first = tokio::spawn(all(a.request("whole".to_owned(), whole.answer(2, None))));
    whole.release(2);
    assert_eq!(done(&first.await.unwrap()), (items(2), true));
    let again = all(b.request("whole".to_owned(), whole.answer(2, None))).await;
    assert_eq!(done(&again), (items(2), true));
    assert_eq!(whole.started(), 1, "a finished answer lingers: no second upstream request");
    let stats = b.fleet_stats();
    assert_eq!((stats.lingered, stats.remote_joins), (1, 0), "counted as a linger, not a join: {stats:?}");

    // A failed one never does: the next identical request, on another replica or its own, asks again.
    let mut store = server.manager().await;
    for (key, replica) in [("failed on a, asked on b", &b), ("failed on a, asked on a", &a)] {
        let leases = async |store: &mut redis::aio::ConnectionManager| {
            store.keys::<_, Vec<String>>("sf:*:lease").await.unwrap().len()
        };
        let lingering = leases(&mut store).await;
        let failing = Upstream::default();
        let first = tokio::spawn(all(a.request(key.to_owned(), failing.answer(1, Some("429: slow down")))));
        failing.release(1);
        let events = first.await.unwrap();
        assert!(matches!(events.last(), Some(Event::Failed(_))), "{key}: {events:?}");
        // Its client has the failure; the flight is over for the fleet once its end is written
        // and its lease gone (a request before that joins it, as on one replica): only the
        // whole answers' lingering leases are left.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while leases(&mut store).await > lingering {
            assert!(tokio::time::Instant::now() < deadline, "{key}: the failed flight's lease stays");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let again = tokio::spawn(all(replica.request(key.to_owned(), failing.answer(1, None))));
        failing.release(1);
        let again = again.await.unwrap();
        assert_eq!(done(&again), (items(1), true), "{key}: a new answer, not the failure: {again:?}");
        assert_eq!(failing.started(), 2, "{key}: a failed answer is never replayed");
    }
}

/// R26's measure: a replica counts the flights it leads for the fleet until their end is in
/// the store, whatever became of its own clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_counts_the_flights_it_leads_until_their_end_is_written() {
    let Some(server) = RedisServer::start().await else { return };
    let [a, b, _] = three(&server).await;
    let upstream = Upstream::default();
    let mut leader = a.request("k".to_owned(), upstream.answer(3, None));
    upstream.release(1);
    take(&mut leader, 1).await;
    let follower = tokio::spawn(all(b.request("k".to_owned(), upstream.answer(3, None))));
    eventually("b follows", || b.fleet_stats().remote_joins == 1).await;
    assert_eq!((a.fleet().unwrap().leading(), b.fleet().unwrap().leading()), (1, 0));
    // a's own client leaves: a still leads the flight for b.
    drop(leader);
    eventually("a's local flight is gone", || a.is_idle()).await;
    assert_eq!(a.fleet().unwrap().leading(), 1);
    upstream.release(2);
    assert_eq!(done(&follower.await.unwrap()), (items(3), true));
    eventually("a's end is written", || a.fleet().unwrap().leading() == 0).await;
}

/// A request says whether its flight is led on its replica or followed from another (the
/// local role says only how it came to its replica's flight), and, with the store gone, that
/// its replica serves it alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_says_whether_its_flight_is_led_here_or_followed_from_another_replica() {
    let Some(mut server) = RedisServer::start().await else { return };
    let [a, b, _] = three(&server).await;
    let upstream = Upstream::default();
    let mut led = a.request("k".to_owned(), upstream.answer(2, None));
    eventually("a decided", || led.fleet_role().is_some()).await;
    assert_eq!(led.fleet_role(), Some(FleetRole::Led));
    let mut followed = b.request("k".to_owned(), upstream.answer(2, None));
    eventually("b decided", || followed.fleet_role().is_some()).await;
    assert_eq!((followed.role(), followed.fleet_role()), (Role::Leader, Some(FleetRole::Followed)));
    // b's next request joins b's flight: followed too, known at once.
    let joined = b.request("k".to_owned(), upstream.answer(2, None));
    assert_ne!(joined.role(), Role::Leader);
    assert_eq!(joined.fleet_role(), Some(FleetRole::Followed));
    upstream.release(2);
    assert_eq!(take(&mut led, 2).await, items(2));
    assert_eq!(take(&mut followed, 2).await, items(2));
    assert_eq!(done(&all(joined).await), (items(2), true));
    assert_eq!(upstream.started(), 1);

    server.kill();
    let alone = Upstream::default();
    let mut served = a.request("k2".to_owned(), alone.answer(1, None));
    alone.release(1);
    assert_eq!(take(&mut served, 1).await, items(1));
    assert_eq!(served.fleet_role(), Some(FleetRole::Alone));
}
