//! Resume across replicas on a real `redis-server`: a request detached on one replica is
//! handed off as a ticket and resumed through another, once, from the items its client has.

mod common;

use std::time::Duration;

use common::RedisServer;
use common::answer::{Upstream, all, done, items, take};
use streamflight_redis::{FleetConfig, FleetRole, Flights, HandOffError, Text, Ticket, TicketError};
use streamflight_tokio::Config;

type Replica = Flights<String, String, String>;

fn replica(server: &RedisServer, name: &str) -> Replica {
    let fleet = FleetConfig::default().replica(name).lease(Duration::from_millis(300));
    let local = Config::default().resume_window(Duration::from_secs(10));
    Flights::connect(&server.url, Text, fleet, local).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_handed_off_on_one_replica_resumes_once_through_another() {
    let Some(server) = RedisServer::start().await else { return };
    let (a, b) = (replica(&server, "a"), replica(&server, "b"));
    let upstream = Upstream::default();
    let mut first = a.request("resume me".to_owned(), upstream.answer(5, None));
    upstream.release(2);
    assert_eq!(take(&mut first, 2).await, items(2));
    assert_eq!(first.fleet_role(), Some(FleetRole::Led));
    // The client goes away from a with its ticket, as text, and comes back through b.
    let ticket = a.hand_off(first).await.unwrap().to_string();
    let ticket: Ticket = ticket.parse().unwrap();
    let resumed = b.resume_ticket(&ticket, 2).await.unwrap();
    assert_eq!(resumed.fleet_role(), Some(FleetRole::Followed));
    assert!(matches!(a.resume_ticket(&ticket, 2).await, Err(TicketError::Taken)), "resumed once");
    upstream.release(3);
    assert_eq!(done(&all(resumed).await), (items(5)[2..].to_vec(), true), "the rest, then the end");
    assert_eq!((upstream.started(), upstream.aborted()), (1, 0));
    assert_eq!(b.fleet_stats().replays, 1);
    let unknown: Ticket = "00".repeat(16).parse().unwrap();
    assert!(matches!(b.resume_ticket(&unknown, 0).await, Err(TicketError::Unknown)));
    assert!("not a ticket".parse::<Ticket>().is_err());
}

/// A request served without the store cannot be handed off: it is detached all the same and
/// resumes by its id on its own replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_served_alone_is_not_handed_off_but_resumes_on_its_replica() {
    let Some(mut server) = RedisServer::start().await else { return };
    let a = replica(&server, "a");
    server.kill();
    let upstream = Upstream::default();
    let mut first = a.request("alone".to_owned(), upstream.answer(3, None));
    upstream.release(1);
    assert_eq!(take(&mut first, 1).await, items(1));
    assert_eq!(first.fleet_role(), Some(FleetRole::Alone));
    let id = match a.hand_off(first).await {
        Err(HandOffError::NotShared { id }) => id,
        other => panic!("not shared, not {other:?}"),
    };
    let resumed = a.resume(id, 1).unwrap();
    upstream.release(2);
    assert_eq!(done(&all(resumed).await), (items(3)[1..].to_vec(), true));
}
