//! Who holds a request, across replicas on a real `redis-server`: a request read on one
//! replica is cancelled through another for its owner only, and once detached it is taken by
//! one resume elsewhere, with the context its replica left, and replayed from the store.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::RedisServer;
use common::answer::{Upstream, all, done, items, next, take};
use streamflight_redis::{FleetConfig, Flights, Holder, Taken, Text, Ticket};
use streamflight_tokio::{Config, Event, RequestId};

type Replica = Flights<String, String, String>;

/// What a replica knows of its requests: ticket to (request, owner), as an application keeps it.
type Known = Arc<Mutex<HashMap<Ticket, (RequestId, Vec<u8>)>>>;

fn replica(server: &RedisServer, name: &str) -> Replica {
    let fleet = FleetConfig::default().replica(name).lease(Duration::from_millis(300));
    let local = Config::default().resume_window(Duration::from_secs(10));
    Flights::connect(&server.url, Text, fleet, local).unwrap()
}

/// Waits, up to 5 s, until `replica` says `ticket` of `owner` is held as `expected`.
async fn held_as(replica: &Replica, ticket: &Ticket, owner: &[u8], expected: Holder) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let holder = replica.holder(ticket, owner).await;
        if holder == expected {
            return;
        }
        assert!(Instant::now() < deadline, "held as {holder:?}, not {expected:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_read_on_one_replica_is_cancelled_through_another_by_its_owner_only() {
    let Some(server) = RedisServer::start().await else { return };
    let (a, b) = (replica(&server, "a"), replica(&server, "b"));
    let known = Known::default();
    let (cancelling, by_ticket) = (a.clone(), Arc::clone(&known));
    a.serve_cancels(move |ticket, owner| {
        let known = by_ticket.lock().unwrap();
        let found = known.get(ticket).filter(|(_, made_by)| made_by == owner);
        found.is_some_and(|(request, _)| cancelling.cancel(*request).is_ok())
    });
    let upstream = Upstream::default();
    let mut reading = a.request("cancel me".to_owned(), upstream.answer(5, None));
    let ticket = Ticket::random();
    let _holding = a.hold(&reading, &ticket, b"alice");
    known.lock().unwrap().insert(ticket.clone(), (reading.id(), b"alice".to_vec()));
    upstream.release(1);
    assert_eq!(take(&mut reading, 1).await, items(1));
    held_as(&b, &ticket, b"alice", Holder::Elsewhere("a".to_owned())).await;
    assert_eq!(b.holder(&ticket, b"mallory").await, Holder::Nobody, "another owner learns nothing");
    assert_eq!(a.holder(&ticket, b"alice").await, Holder::Here);
    let wait = Duration::from_secs(2);
    assert!(!b.cancel_at("a", &ticket, b"mallory", wait).await, "another owner cancels nothing");
    assert!(!b.cancel_at("a", &Ticket::random(), b"alice", wait).await, "an unknown ticket is not cancelled");
    assert!(b.cancel_at("a", &ticket, b"alice", wait).await);
    assert_eq!(next(&mut reading).await, Some(Event::Cancelled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_request_is_taken_once_and_resumed_elsewhere_with_its_context() {
    let Some(server) = RedisServer::start().await else { return };
    let (a, b) = (replica(&server, "a"), replica(&server, "b"));
    let upstream = Upstream::default();
    let mut reading = a.request("resume me".to_owned(), upstream.answer(5, None));
    let ticket = Ticket::random();
    let holding = a.hold(&reading, &ticket, b"alice");
    upstream.release(2);
    assert_eq!(take(&mut reading, 2).await, items(2));
    // Read on a: nobody else takes it.
    held_as(&b, &ticket, b"alice", Holder::Elsewhere("a".to_owned())).await;
    assert!(matches!(b.take(&ticket, b"alice", false).await, Taken::Busy));
    // Its client goes away; a keeps it detached, with how it wrote the stream.
    let _detached = reading.detach();
    holding.detached(Duration::from_secs(10), b"sse chat");
    assert!(matches!(b.take(&ticket, b"mallory", false).await, Taken::Unknown), "not for another owner");
    let taken = loop {
        match b.take(&ticket, b"alice", false).await {
            Taken::Yours(taken) => break taken,
            // The detach's write may still be on its way.
            Taken::Busy => tokio::time::sleep(Duration::from_millis(10)).await,
            other => panic!("taken, not {other:?}"),
        }
    };
    assert_eq!(taken.context(), b"sse chat");
    assert!(matches!(a.take(&ticket, b"alice", false).await, Taken::Busy), "taken once");
    assert_eq!(a.holder(&ticket, b"alice").await, Holder::Elsewhere("b".to_owned()));
    let place = taken.place().cloned().expect("its flight is in the store");
    let resumed = b.replay(&place, 2).await.unwrap();
    assert_eq!(resumed.position(), 2, "counted in the flight, as on a");
    let holding = taken.into_holding();
    upstream.release(3);
    assert_eq!(done(&all(resumed).await), (items(5)[2..].to_vec(), true), "the rest, then the end");
    holding.ended();
    held_as(&a, &ticket, b"alice", Holder::Ended).await;
    assert!(matches!(a.take(&ticket, b"alice", false).await, Taken::Ended));
    assert_eq!((upstream.started(), upstream.aborted()), (1, 0));
}

/// A resume that cannot be made gives the hand back as it was: another try takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_given_back_is_taken_again() {
    let Some(server) = RedisServer::start().await else { return };
    let (a, b) = (replica(&server, "a"), replica(&server, "b"));
    let upstream = Upstream::default();
    let reading = a.request("give it back".to_owned(), upstream.answer(3, None));
    let ticket = Ticket::random();
    let holding = a.hold(&reading, &ticket, b"alice");
    let _detached = reading.detach();
    holding.detached(Duration::from_secs(10), b"context");
    held_as(&b, &ticket, b"alice", Holder::Elsewhere("a".to_owned())).await;
    let taken = loop {
        match b.take(&ticket, b"alice", false).await {
            Taken::Yours(taken) => break taken,
            Taken::Busy => tokio::time::sleep(Duration::from_millis(10)).await,
            other => panic!("taken, not {other:?}"),
        }
    };
    taken.give_back().await;
    let Taken::Yours(again) = b.take(&ticket, b"alice", false).await else { panic!("given back") };
    assert_eq!(again.context(), b"context");
}
