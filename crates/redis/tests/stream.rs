//! The flight's stream (R20) against a real `redis-server`: the leader's batches go in, one
//! round trip each, in order; a replica that lost its lease writes nothing, ever.

mod common;

use std::time::Duration;

use common::{RedisServer, take_when_free};
use redis::AsyncCommands;
use streamflight_redis::{Appended, Lease, append};

/// The items of `stream`, in order.
async fn items(store: &mut redis::aio::ConnectionManager, stream: &str) -> Vec<String> {
    let reply: redis::streams::StreamRangeReply = store.xrange_all(stream).await.unwrap();
    reply.ids.iter().map(|entry| entry.get::<String>("i").unwrap()).collect()
}

#[tokio::test]
async fn the_leaders_batches_go_in_and_a_lapsed_leaders_never_do() {
    let Some(server) = RedisServer::start().await else { return };
    let (mut old, mut new) = (server.manager().await, server.manager().await);
    let lease = Lease::acquire(&mut old, "sf:lease:k", Duration::from_millis(100)).await.unwrap().unwrap();
    let first = append(&mut old, &lease, "sf:items:k", 1_000, ["a", "b", "c"]).await.unwrap();
    assert!(matches!(first, Appended::Written(_)), "{first:?}");
    assert_eq!(items(&mut old, "sf:items:k").await, ["a", "b", "c"]);

    // The old leader pauses past its lease; another replica takes the flight over.
    let successor = take_when_free(&mut new, "sf:lease:k", Duration::from_secs(30)).await;
    assert!(matches!(
        append(&mut new, &successor, "sf:items:k", 1_000, ["d"]).await.unwrap(),
        Appended::Written(_)
    ));
    // The old one wakes and writes: refused, nothing of it in the stream.
    assert_eq!(append(&mut old, &lease, "sf:items:k", 1_000, ["stale"]).await.unwrap(), Appended::Fenced);
    assert_eq!(
        items(&mut new, "sf:items:k").await,
        ["a", "b", "c", "d"],
        "no stream holds two leaders' items"
    );
}
