//! The load run: many keys, thousands of requests from many client tasks, random cancels and
//! drops; every request ends exactly once, every completed one saw its whole sequence, stats agree.

use streamflight_tests::doubles::{Probe, Rng, Sequence, yield_once};
use streamflight_tests::wait::{assert_closed, eventually, next_event, read_to_end};
use streamflight_tests::{Event, Failure, Flights, Subscription, TestRuntime, scenarios};

use super::Error;

scenarios! {
    stress_many_keys_random_cancels_and_drops,
}

const KEYS: u64 = 50;
const CLIENTS: u64 = 24;
const REQUESTS_PER_CLIENT: u64 = 200;
/// Items per upstream: key `k` produces `k * 1000 .. k * 1000 + LEN`.
const LEN: u64 = 24;

/// Keys whose upstream fails after its whole sequence.
fn fails(key: u64) -> bool {
    key % 10 == 9
}

/// How the requests of one client ended.
#[derive(Debug, Default)]
struct Ends {
    requests: u64,
    done: u64,
    failed: u64,
    cancelled: u64,
    dropped: u64,
}

/// Many keys, many clients, random cancels and drops, Replay late joins.
async fn stress_many_keys_random_cancels_and_drops<R: TestRuntime>() {
    let flights: Flights<u64, u64, Error, R> = Flights::default();
    let (starts, upstreams) = (Probe::new(), Probe::new());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (flights, starts, upstreams) = (flights.clone(), starts.clone(), upstreams.clone());
            R::spawn_client(async move { run_client::<R>(client, flights, starts, upstreams).await })
        })
        .collect();
    let mut total = Ends::default();
    for client in clients {
        let ends = client.join().await;
        total.requests += ends.requests;
        total.done += ends.done;
        total.failed += ends.failed;
        total.cancelled += ends.cancelled;
        total.dropped += ends.dropped;
    }
    assert_eq!(total.requests, CLIENTS * REQUESTS_PER_CLIENT);
    assert_eq!(total.done + total.failed + total.cancelled + total.dropped, total.requests, "{total:?}");
    assert!(total.done > 0 && total.failed > 0 && total.cancelled > 0 && total.dropped > 0, "{total:?}");

    eventually::<R>("the manager to be idle", || flights.is_idle()).await;
    let stats = flights.stats();
    assert_eq!(stats.requests, total.requests);
    assert_eq!(stats.cancelled, total.cancelled + total.dropped);
    assert_eq!(stats.flights + stats.joined, stats.requests);
    assert_eq!((stats.active_flights, stats.active_requests), (0, 0));
    assert!(stats.joined > 0 && stats.aborted > 0, "{stats:?}");
    eventually::<R>("every start future and upstream to be dropped", || {
        starts.alive() == 0 && upstreams.alive() == 0
    })
    .await;
    assert_eq!(starts.made() as u64, stats.requests);
    assert!(upstreams.made() <= starts.polled() && starts.polled() as u64 <= stats.flights);
}

/// How one request ended, in the client's eyes.
enum End {
    Done,
    Failed,
    Cancelled,
    Dropped,
}

/// One client: requests in batches of 1-8 for random keys, then, concurrently, reads each
/// to its end, or cancels or drops it after a random number of items.
async fn run_client<R: TestRuntime>(
    client: u64,
    flights: Flights<u64, u64, Error, R>,
    starts: Probe,
    upstreams: Probe,
) -> Ends {
    let mut rng = Rng::new(0x5eed_0000 + client);
    let mut ends = Ends::default();
    while ends.requests < REQUESTS_PER_CLIENT {
        let batch = (1 + rng.below(8)).min(REQUESTS_PER_CLIENT - ends.requests);
        let mut readers = Vec::new();
        for _ in 0..batch {
            let key = rng.below(KEYS);
            let upstreams = upstreams.clone();
            let start = starts.wrap(async move {
                yield_once().await;
                let error = fails(key).then_some("tail");
                Ok(upstreams.wrap(Sequence::new(key * 1000, LEN, 4, error)))
            });
            let sub = flights.request(key, start);
            ends.requests += 1;
            readers.push(read::<R>(&flights, key, sub, rng.below(10), rng.below(LEN)));
        }
        for end in futures::future::join_all(readers).await {
            match end {
                End::Done => ends.done += 1,
                End::Failed => ends.failed += 1,
                End::Cancelled => ends.cancelled += 1,
                End::Dropped => ends.dropped += 1,
            }
        }
    }
    ends
}

/// Reads `sub` to its end (`choice` 0-5), or reads `read` items then cancels it through the
/// manager (6, 7) or the subscription (8), or drops it (9); checks every event it sees.
async fn read<R: TestRuntime>(
    flights: &Flights<u64, u64, Error, R>,
    key: u64,
    mut sub: Subscription<u64, Error>,
    choice: u64,
    read: u64,
) -> End {
    let expected: Vec<u64> = (key * 1000..key * 1000 + LEN).collect();
    if choice <= 5 {
        let (items, end) = read_to_end::<R, _, _>(&mut sub).await;
        assert_eq!(items, expected, "request {} read its whole sequence", sub.id());
        return match end {
            Event::Done if !fails(key) => End::Done,
            Event::Failed(Failure::Upstream("tail")) if fails(key) => End::Failed,
            other => panic!("request {} for key {key} ended {other:?}", sub.id()),
        };
    }
    for &item in &expected[..read as usize] {
        assert_eq!(next_event::<R, _, _>(&mut sub).await, Event::Item(item));
    }
    match choice {
        9 => {
            drop(sub);
            return End::Dropped;
        }
        8 => sub.cancel(),
        _ => assert_eq!(flights.cancel(sub.id()), Ok(()), "request {} is live", sub.id()),
    }
    assert_eq!(next_event::<R, _, _>(&mut sub).await, Event::Cancelled);
    assert_closed(&mut sub);
    End::Cancelled
}
