//! The flight's stream (R20) against a real `redis-server`: the leader's batches go in, one
//! round trip each, in order; a replica that lost its lease writes nothing, ever.

mod common;

use std::time::Duration;

use common::{RedisServer, take_when_free};
use redis::AsyncCommands;
use streamflight_redis::{Appended, Bounds, Entry, Lease, append, finish, read};

const BOUNDS: Bounds = Bounds { max_len: 1_000, live: Duration::from_secs(60) };

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
    let first = append(&mut old, &lease, "sf:items:k", BOUNDS, 1, ["a", "b", "c"]).await.unwrap();
    assert_eq!(first, Appended::Written(3));
    // A batch retried after a store error is not written twice.
    let again = append(&mut old, &lease, "sf:items:k", BOUNDS, 2, ["b", "c"]).await.unwrap();
    assert_eq!(again, Appended::Written(3));
    assert_eq!(items(&mut old, "sf:items:k").await, ["a", "b", "c"]);

    // The old leader pauses past its lease; another replica takes the flight over.
    let successor = take_when_free(&mut new, "sf:lease:k", Duration::from_secs(30)).await;
    assert!(matches!(
        append(&mut new, &successor, "sf:items:k", BOUNDS, 4, ["d"]).await.unwrap(),
        Appended::Written(4)
    ));
    // The old one wakes and writes: refused, nothing of it in the stream.
    assert_eq!(append(&mut old, &lease, "sf:items:k", BOUNDS, 5, ["stale"]).await.unwrap(), Appended::Fenced);
    assert_eq!(
        items(&mut new, "sf:items:k").await,
        ["a", "b", "c", "d"],
        "no stream holds two leaders' items"
    );
}

/// A replica's reader: from the start, then from the last id it read, waiting for more; the
/// end is the last entry; the stream expires after it (R24).
#[tokio::test]
async fn a_reader_gets_every_item_in_order_then_the_end() {
    let Some(server) = RedisServer::start().await else { return };
    let (mut leader, mut reader) = (server.manager().await, server.manager().await);
    let lease = Lease::acquire(&mut leader, "sf:lease:r", Duration::from_secs(30)).await.unwrap().unwrap();
    append(&mut leader, &lease, "sf:items:r", BOUNDS, 1, ["a", "b"]).await.unwrap();
    let wait = Duration::from_millis(50);
    let first = read(&mut reader, "sf:items:r", 0, wait, 100).await.unwrap();
    assert_eq!(first, [(1, Entry::Item(b"a".to_vec())), (2, Entry::Item(b"b".to_vec()))]);
    assert!(read(&mut reader, "sf:items:r", 2, wait, 100).await.unwrap().is_empty(), "nothing new yet");

    // The reader waits; the leader appends and finishes meanwhile.
    let waiting = tokio::spawn({
        let mut reader = server.manager().await;
        async move { read(&mut reader, "sf:items:r", 2, Duration::from_secs(10), 100).await.unwrap() }
    });
    append(&mut leader, &lease, "sf:items:r", BOUNDS, 3, ["c"]).await.unwrap();
    let woken = waiting.await.unwrap();
    assert_eq!(woken, [(3, Entry::Item(b"c".to_vec()))], "a blocked reader wakes on the append");
    let keep = Duration::from_secs(60);
    let finished = finish(&mut leader, &lease, "sf:items:r", 4, b"done", keep, Duration::ZERO).await.unwrap();
    assert_eq!(finished, Appended::Written(4));
    let rest = read(&mut reader, "sf:items:r", 3, wait, 100).await.unwrap();
    assert_eq!(rest, [(4, Entry::End(b"done".to_vec()))]);
    let held: Option<String> = reader.get("sf:lease:r").await.unwrap();
    assert_eq!(held, None, "without a linger, the lease goes with the end");
    let ttl: i64 = redis::cmd("PTTL").arg("sf:items:r").query_async(&mut reader).await.unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "the stream expires after its end: {ttl} ms left");
}

/// What the store lost (a `FLUSHALL`, a restart) is seen, never written over (issue 23): the
/// leader's write after a gap writes nothing and says where the stream stops, the lease nobody
/// holds is taken back for the leader's token, and the whole answer goes in again from 1.
#[tokio::test]
async fn a_stream_the_store_lost_is_a_gap_and_the_leader_writes_it_again_under_its_lease() {
    let Some(server) = RedisServer::start().await else { return };
    let mut store = server.manager().await;
    let lease = Lease::acquire(&mut store, "sf:lease:g", Duration::from_secs(30)).await.unwrap().unwrap();
    append(&mut store, &lease, "sf:items:g", BOUNDS, 1, ["a", "b"]).await.unwrap();
    let () = redis::cmd("FLUSHALL").query_async(&mut store).await.unwrap();

    assert_eq!(append(&mut store, &lease, "sf:items:g", BOUNDS, 3, ["c"]).await.unwrap(), Appended::Gap(0));
    assert_eq!(items(&mut store, "sf:items:g").await, Vec::<String>::new(), "nothing written after a gap");
    let holder: Option<String> = store.get("sf:lease:g").await.unwrap();
    assert_eq!(holder.as_deref(), Some(lease.token()), "the lease nobody held is the leader's again");
    let keep = BOUNDS.live;
    let end = finish(&mut store, &lease, "sf:items:g", 4, b"d", keep, Duration::ZERO).await.unwrap();
    assert_eq!(end, Appended::Gap(0), "an end after a gap is not written either");

    let again = append(&mut store, &lease, "sf:items:g", BOUNDS, 1, ["a", "b", "c"]).await.unwrap();
    assert_eq!(again, Appended::Written(3));
    let end = finish(&mut store, &lease, "sf:items:g", 4, b"d", keep, Duration::ZERO).await.unwrap();
    assert_eq!(end, Appended::Written(4));
    // A finish retried (its reply lost) writes no second end, and takes no lease back.
    let end = finish(&mut store, &lease, "sf:items:g", 4, b"d", keep, Duration::ZERO).await.unwrap();
    assert_eq!(end, Appended::Written(4));
    let entries = read(&mut store, "sf:items:g", 0, Duration::ZERO, 100).await.unwrap();
    assert_eq!(entries.len(), 4, "{entries:?}");
    let holder: Option<String> = store.get("sf:lease:g").await.unwrap();
    assert_eq!(holder, None, "a flight that ended without a linger keeps no lease");
    // A late renewal (sent before the end, run after it) takes no lease back for a flight that
    // is over: newcomers would replay its end, a failure too (R17). Nothing goes after an end.
    assert!(lease.renew_with(&mut store, &["sf:items:g"], BOUNDS.live).await.unwrap());
    let holder: Option<String> = store.get("sf:lease:g").await.unwrap();
    assert_eq!(holder, None, "a late renewal gives an ended flight no lease");
    assert_eq!(append(&mut store, &lease, "sf:items:g", BOUNDS, 5, ["e"]).await.unwrap(), Appended::Fenced);
    let holder: Option<String> = store.get("sf:lease:g").await.unwrap();
    assert_eq!(holder, None, "nor does a late append");

    // Another token's lease fences every leader call, renewal included.
    let () = store.set("sf:lease:g", "another leader").await.unwrap();
    assert!(!lease.renew(&mut store).await.unwrap());
    assert_eq!(append(&mut store, &lease, "sf:items:g", BOUNDS, 5, ["e"]).await.unwrap(), Appended::Fenced);
    // With nobody's lease, a renewal takes it back.
    let () = store.del("sf:lease:g").await.unwrap();
    assert!(lease.renew(&mut store).await.unwrap());
    let holder: Option<String> = store.get("sf:lease:g").await.unwrap();
    assert_eq!(holder.as_deref(), Some(lease.token()));
}
