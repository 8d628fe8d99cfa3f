//! Nothing in clear in the store (R24), against a real `redis-server`: after a flight and a
//! note, a dump of every key holds none of the request, the answer, the upstream's error or a
//! secret it quoted; yet a follower on another replica reads the whole answer, and an entry
//! altered in the store ends its readers with an explicit error, never a wrong item.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{RedisServer, dump, eventually, holding};
use futures::StreamExt;
use redis::Value;
use streamflight_redis::Subscription;
use streamflight_redis::{Fleet, FleetConfig, Flights, Lost, Place, Text};
use streamflight_tokio::{Config, Event, Failure};
use tokio::sync::Semaphore;

const LEASE: Duration = Duration::from_millis(300);

/// The fleet's secret in these tests.
const SECRET: &str = "the fleet's secret, 7d1e0c";

type Replica = Flights<String, String, String>;

fn replica(server: &RedisServer, name: &str, secret: &str) -> Replica {
    let config =
        FleetConfig::default().replica(name).lease(LEASE).pause(Duration::from_millis(200)).secret(secret);
    Flights::new(Fleet::new(&server.url, Text, config).unwrap(), Config::default())
}

/// An upstream that waits for `gate` (once per item after the first `free`), then yields
/// `items`, then `fail` if given.
async fn answer(
    gate: Arc<Semaphore>,
    free: usize,
    items: Vec<String>,
    fail: Option<String>,
) -> Result<futures::stream::BoxStream<'static, Result<String, String>>, String> {
    let ends = fail.map(Err).into_iter();
    let events = items.into_iter().map(Ok).chain(ends).enumerate();
    let paced = futures::stream::iter(events).then(move |(i, event)| {
        let gate = Arc::clone(&gate);
        async move {
            if i >= free {
                gate.acquire().await.unwrap().forget();
            }
            event
        }
    });
    Ok(paced.boxed())
}

/// Everything a subscription yields, within 20 s.
async fn all(subscription: Subscription<String, String>) -> Vec<Event<String, String>> {
    tokio::time::timeout(Duration::from_secs(20), subscription.collect()).await.expect("the stream ends")
}

/// The items of `events`, and the error they ended with, if any.
fn items_and_error(events: &[Event<String, String>]) -> (Vec<String>, Option<String>) {
    let items = events.iter().filter_map(|e| if let Event::Item(i) = e { Some(i.clone()) } else { None });
    let error = match events.last() {
        Some(Event::Failed(Failure::Upstream(error))) => Some((**error).clone()),
        Some(Event::Done) => None,
        other => panic!("an end, not {other:?}"),
    };
    (items.collect(), error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_of_the_store_shows_no_prompt_answer_error_or_secret_and_a_follower_reads_it_all() {
    let Some(server) = RedisServer::start().await else { return };
    let mut store = server.manager().await;
    let (a, b) = (replica(&server, "a", SECRET), replica(&server, "b", SECRET));
    let prompt = "PROMPT-5e1f: what does the operator's key unlock?".to_owned();
    let items: Vec<String> = (0..3).map(|i| format!("ITEM-TEXT-{i} ")).collect();
    let error = "401: Incorrect API key provided: sk-PLANTED-9c2b4d".to_owned();
    let note = "REQUEST-ID-0a9f3c";

    // The dump can fail: a needle stored in clear is found, in the key that holds it.
    let () = redis::AsyncCommands::set(&mut store, "control", format!("x {error} y")).await.unwrap();
    assert_eq!(holding(&dump(&mut store).await, "sk-PLANTED-9c2b4d"), ["control"]);
    let () = redis::AsyncCommands::del(&mut store, "control").await.unwrap();

    let gate = Arc::new(Semaphore::new(0));
    let upstream = || answer(Arc::clone(&gate), 0, items.clone(), Some(error.clone()));
    let (on_a, on_b) = (a.request(prompt.clone(), upstream()), b.request(prompt.clone(), upstream()));
    eventually("both replicas are on the flight", || {
        let (a, b) = (a.fleet_stats(), b.fleet_stats());
        a.led + a.remote_joins + b.led + b.remote_joins == 2
    })
    .await;
    assert_eq!(a.fleet_stats().led + b.fleet_stats().led, 1, "one leads, the other follows");
    // The resume note a replica leaves for a client: the flight's place, under its request id.
    let place = a.fleet().unwrap().place(&prompt).expect("a is on the flight");
    a.fleet()
        .unwrap()
        .save(note.as_bytes(), place.to_string().as_bytes(), Duration::from_secs(30))
        .await
        .unwrap();
    gate.add_permits(items.len() + 1);
    let (on_a, on_b) = tokio::join!(all(on_a), all(on_b));
    for events in [on_a, on_b] {
        assert_eq!(items_and_error(&events), (items.clone(), Some(error.clone())), "the whole answer");
    }

    let dumped = dump(&mut store).await;
    assert!(
        dumped.iter().any(|(key, _)| key.ends_with(":items")),
        "the flight's stream is there: {dumped:?}"
    );
    assert!(dumped.iter().any(|(key, _)| key.ends_with(":note")), "the note is there: {dumped:?}");
    let shown = place.to_string();
    let seal = &shown[shown.len() - 64..];
    for needle in [
        "PROMPT-5e1f",
        "operator's key",
        "ITEM-TEXT",
        "sk-PLANTED-9c2b4d",
        "Incorrect API key",
        note,
        seal,
        SECRET,
    ] {
        assert_eq!(holding(&dumped, needle), Vec::<&str>::new(), "{needle} is in clear in the store");
    }
    // Yet the note reads back whole on another replica, and leads to the same flight.
    let loaded = b.fleet().unwrap().load(note.as_bytes()).await.unwrap().expect("the note");
    assert_eq!(String::from_utf8(loaded).unwrap().parse::<Place>(), Ok(place));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_altered_in_the_store_ends_its_readers_with_an_explicit_error_never_a_wrong_item() {
    let Some(server) = RedisServer::start().await else { return };
    let mut store = server.manager().await;
    let (a, b) = (replica(&server, "a", SECRET), replica(&server, "b", SECRET));
    let key = "tamper with me".to_owned();
    let items: Vec<String> = (0..4).map(|i| format!("t{i}")).collect();
    let gate = Arc::new(Semaphore::new(0));
    // The leader's upstream yields two items at once, the others when released.
    let mut on_a = a.request(key.clone(), answer(Arc::clone(&gate), 2, items.clone(), None));
    eventually("a leads", || a.fleet_stats().led == 1).await;
    let on_b = b.request(key.clone(), answer(Arc::clone(&gate), 2, items.clone(), None));
    eventually("b follows", || b.fleet_stats().remote_joins == 1).await;
    for expected in &items[..2] {
        assert!(matches!(on_a.next().await, Some(Event::Item(item)) if item == *expected));
    }
    // The stream holds items 1 and 2; item 1, copied in as item 3, is a sealed entry of this
    // very flight, in the wrong place.
    let streams: Vec<String> = redis::AsyncCommands::keys(&mut store, "*:items").await.unwrap();
    let [stream] = &streams[..] else { panic!("one flight's stream: {streams:?}") };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while redis::AsyncCommands::xlen::<_, u64>(&mut store, stream).await.unwrap() < 2 {
        assert!(std::time::Instant::now() < deadline, "the leader's first two items never reached the store");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first: Value =
        redis::cmd("XRANGE").arg(stream).arg("1-0").arg("1-0").query_async(&mut store).await.unwrap();
    let Value::Array(entries) = first else { panic!("XRANGE's entries: {first:?}") };
    let [Value::Array(entry)] = &entries[..] else { panic!("one entry: {entries:?}") };
    let [_, Value::Array(fields)] = &entry[..] else { panic!("an id and its fields: {entry:?}") };
    let [_, Value::BulkString(sealed)] = &fields[..] else { panic!("one field: {fields:?}") };
    let () =
        redis::cmd("XADD").arg(stream).arg("3-0").arg("i").arg(sealed).query_async(&mut store).await.unwrap();
    gate.add_permits(2);
    // The leader's own clients never read the store: their answer is whole.
    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(10), on_a.collect()).await.unwrap();
    assert_eq!(items_and_error(&rest), (items[2..].to_vec(), None));
    // The follower gets the two items, then an explicit error where the altered entry was.
    let (got, error) = items_and_error(&all(on_b).await);
    assert_eq!(got, items[..2]);
    assert_eq!(error, Some(Lost::Sealed.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_another_fleet_secret_cannot_read_the_fleets_flights() {
    let Some(server) = RedisServer::start().await else { return };
    let (a, stranger) = (replica(&server, "a", SECRET), replica(&server, "x", "another secret"));
    let key = "ours".to_owned();
    let gate = Arc::new(Semaphore::new(0));
    let on_a = a.request(key.clone(), answer(Arc::clone(&gate), 0, vec!["t0".to_owned()], None));
    eventually("a leads", || a.fleet_stats().led == 1).await;
    let theirs = stranger.request(key.clone(), answer(Arc::clone(&gate), 0, vec!["t0".to_owned()], None));
    eventually("the stranger follows", || stranger.fleet_stats().remote_joins == 1).await;
    gate.add_permits(1);
    assert_eq!(items_and_error(&all(on_a).await), (vec!["t0".to_owned()], None));
    assert_eq!(items_and_error(&all(theirs).await), (vec![], Some(Lost::Sealed.to_string())));
    // Nor its notes.
    a.fleet().unwrap().save(b"client", b"a place", Duration::from_secs(10)).await.unwrap();
    assert!(matches!(
        stranger.fleet().unwrap().load(b"client").await,
        Err(streamflight_redis::StoreError::Sealed)
    ));
    assert_eq!(a.fleet().unwrap().load(b"client").await.unwrap().as_deref(), Some(&b"a place"[..]));
}
