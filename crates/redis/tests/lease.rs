//! The leader's lease (R20) against a real `redis-server`: exclusive, renewed only by its
//! holder, lost when it is not renewed in time, and never released by anyone else.

mod common;

use std::time::Duration;

use common::{RedisServer, take_when_free};
use streamflight_redis::Lease;

#[tokio::test]
async fn one_replica_at_a_time_holds_a_flights_lease() {
    let Some(server) = RedisServer::start().await else { return };
    let (mut one, mut two) = (server.manager().await, server.manager().await);
    let ttl = Duration::from_secs(30);
    let lease = Lease::acquire(&mut one, "sf:lease:k", ttl).await.unwrap().expect("a free lease is taken");
    assert!(
        Lease::acquire(&mut two, "sf:lease:k", ttl).await.unwrap().is_none(),
        "held: nobody else takes it"
    );
    assert!(lease.renew(&mut one).await.unwrap(), "its holder renews it");
    assert_eq!(lease.renew_every(), Duration::from_secs(10));
    assert!(lease.clone().release(&mut two).await.unwrap(), "released by its token, on any connection");
    let next = Lease::acquire(&mut two, "sf:lease:k", ttl).await.unwrap().expect("free again");
    assert_ne!(next.token(), lease.token(), "each lease its own fencing token");
    assert!(!lease.renew(&mut one).await.unwrap(), "the old holder's renewal is refused");
    assert!(!lease.release(&mut one).await.unwrap(), "and it cannot release the new holder's lease");
    assert!(next.renew(&mut two).await.unwrap(), "the new holder is untouched");
}

#[tokio::test]
async fn a_lease_not_renewed_in_time_is_lost_to_another_replica() {
    let Some(server) = RedisServer::start().await else { return };
    let (mut one, mut two) = (server.manager().await, server.manager().await);
    let lease = Lease::acquire(&mut one, "sf:lease:k", Duration::from_millis(100)).await.unwrap().unwrap();
    // Another replica waits for it, as a new request would after the leader went quiet.
    let taken = take_when_free(&mut two, "sf:lease:k", Duration::from_secs(30)).await;
    assert!(!lease.renew(&mut one).await.unwrap(), "a lapsed holder learns it lost the lease");
    assert!(taken.renew(&mut two).await.unwrap());
}
