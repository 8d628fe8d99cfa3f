//! The load runs: many keys, thousands of requests from many client tasks, random cancels and
//! drops; every request ends exactly once, what each one read is checked, stats agree at the end.

use streamflight_tests::doubles::{Probe, Rng, Sequence, yield_once};
use streamflight_tests::wait::{assert_closed, eventually, next_event};
use streamflight_tests::{
    Config, Event, Failure, Flights, LateJoin, Orphan, Role, Subscription, TestRuntime, scenarios,
};

use std::time::Duration;

use super::Error;

scenarios! {
    stress_many_keys_random_cancels_and_drops,
    stress_bounded_history_tail_joins_orphans_finish,
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

/// The configuration under load, and so what each request may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The defaults (Replay, Abort, unbounded): a request that ends `Done` read the whole sequence.
    Defaults,
    /// `history_limit(5)`, Tail late joins, orphans finish: requests read contiguous runs,
    /// may lag, and no flight is ever aborted.
    Bounded,
}

impl Mode {
    fn config(self) -> Config {
        match self {
            Mode::Defaults => Config::default(),
            Mode::Bounded => {
                Config::default().history_limit(5).late_join(LateJoin::Tail).orphan(Orphan::Finish)
            }
        }
    }
}

/// How the requests of one client ended.
#[derive(Debug, Default)]
struct Ends {
    requests: u64,
    done: u64,
    failed: u64,
    lagged: u64,
    cancelled: u64,
    dropped: u64,
}

impl Ends {
    fn add(&mut self, end: End) {
        match end {
            End::Done => self.done += 1,
            End::Failed => self.failed += 1,
            End::Lagged => self.lagged += 1,
            End::Cancelled => self.cancelled += 1,
            End::Dropped => self.dropped += 1,
        }
    }
}

/// How one request ended, in its client's eyes.
enum End {
    Done,
    Failed,
    Lagged,
    Cancelled,
    Dropped,
}

/// Many keys, many clients, random cancels and drops, under the defaults: every request
/// ends once, every completed one saw its whole sequence in order (Replay).
async fn stress_many_keys_random_cancels_and_drops<R: TestRuntime>() {
    let (total, stats) = stress::<R>(Mode::Defaults).await;
    assert_eq!(total.lagged, 0);
    assert!(stats.joined > 0 && stats.aborted > 0, "{stats:?}");
}

/// The same load with a bounded history, Tail joins and orphans left to finish, items
/// arriving over time and some readers slow: slow ones end `Lagged`, never with a gap,
/// and nothing is aborted.
async fn stress_bounded_history_tail_joins_orphans_finish<R: TestRuntime>() {
    let (total, stats) = stress::<R>(Mode::Bounded).await;
    assert_eq!(stats.aborted, 0, "orphans finish");
    assert!(total.lagged > 0, "slow readers lag: {total:?}");
    assert!(stats.joined > 0, "{stats:?}");
}

/// Runs the clients under `mode`, checks that the counts and the stats agree and that
/// everything is idle at the end; returns both for mode-specific checks.
async fn stress<R: TestRuntime>(mode: Mode) -> (Ends, streamflight_tests::Stats) {
    let flights: Flights<u64, u64, Error, R> = Flights::with_runtime(mode.config(), R::scenario());
    let (starts, upstreams) = (Probe::new(), Probe::new());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (flights, starts, upstreams) = (flights.clone(), starts.clone(), upstreams.clone());
            R::spawn_client(async move { run_client::<R>(mode, client, flights, starts, upstreams).await })
        })
        .collect();
    let mut total = Ends::default();
    for client in clients {
        let ends = client.join().await;
        total.requests += ends.requests;
        total.done += ends.done;
        total.failed += ends.failed;
        total.lagged += ends.lagged;
        total.cancelled += ends.cancelled;
        total.dropped += ends.dropped;
    }
    assert_eq!(total.requests, CLIENTS * REQUESTS_PER_CLIENT);
    let ended = total.done + total.failed + total.lagged + total.cancelled + total.dropped;
    assert_eq!(ended, total.requests, "every request ended exactly once: {total:?}");
    assert!(total.done > 0 && total.failed > 0 && total.cancelled > 0 && total.dropped > 0, "{total:?}");

    eventually::<R>("the manager to be idle", || flights.is_idle()).await;
    let stats = flights.stats();
    assert_eq!(stats.requests, total.requests);
    assert_eq!(stats.cancelled, total.cancelled + total.dropped);
    assert_eq!(stats.flights + stats.joined, stats.requests);
    assert_eq!((stats.active_flights, stats.active_requests), (0, 0));
    eventually::<R>("every start future and upstream to be dropped", || {
        starts.alive() == 0 && upstreams.alive() == 0
    })
    .await;
    assert_eq!(starts.made() as u64, stats.requests);
    assert!(upstreams.made() <= starts.polled() && starts.polled() as u64 <= stats.flights);
    (total, stats)
}

/// One client: requests in batches of 1-8 for random keys, then, concurrently, reads each
/// to its end, or cancels or drops it after a random number of items.
async fn run_client<R: TestRuntime>(
    mode: Mode,
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
                let sequence = Sequence::new(key * 1000, LEN, 4, error);
                Ok(upstreams.wrap(match mode {
                    Mode::Defaults => sequence,
                    // Items arrive over time, a few at once, as from a network.
                    Mode::Bounded => {
                        sequence.with_pauses(|| Box::pin(<R as TestRuntime>::sleep(Duration::from_millis(1))))
                    }
                }))
            });
            let sub = flights.request(key, start);
            ends.requests += 1;
            let slow = mode == Mode::Bounded && rng.chance(20);
            readers.push(read::<R>(mode, &flights, key, sub, rng.below(10), rng.below(LEN), slow));
        }
        for end in futures::future::join_all(readers).await {
            ends.add(end);
        }
    }
    ends
}

/// Reads `sub` to its end (`choice` 0-5), or reads up to `limit` items then cancels it
/// through the manager (6, 7) or the subscription (8), or drops it (9); a `slow` reader
/// dawdles after each item. Checks every event:
/// items are a contiguous run of the key's sequence — from its start unless a Tail joiner —
/// and the end fits what was read.
async fn read<R: TestRuntime>(
    mode: Mode,
    flights: &Flights<u64, u64, Error, R>,
    key: u64,
    mut sub: Subscription<u64, Error>,
    choice: u64,
    limit: u64,
    slow: bool,
) -> End {
    let first = key * 1000;
    let last = first + LEN;
    let limit = if choice <= 5 { u64::MAX } else { limit };
    let tail = mode == Mode::Bounded && sub.role() == Role::Joiner;
    let mut next: Option<u64> = (!tail).then_some(first);
    let mut read = 0;
    let end = loop {
        if read == limit {
            break None;
        }
        match next_event::<R, _, _>(&mut sub).await {
            Event::Item(item) => {
                let expected = next.unwrap_or(item);
                assert!(
                    item == expected && item < last,
                    "request {} for key {key}: got {item}, expected {expected}",
                    sub.id()
                );
                next = Some(item + 1);
                read += 1;
                if slow {
                    <R as TestRuntime>::sleep(Duration::from_millis(2)).await;
                }
            }
            end => break Some(end),
        }
    };
    // A Tail joiner may have joined after the last item: it then reads only the end.
    let whole = next == Some(last) || (tail && next.is_none());
    if end.is_some() {
        assert_closed(&mut sub);
    }
    match end {
        Some(Event::Done) if whole && !fails(key) => End::Done,
        Some(Event::Failed(Failure::Upstream(e))) if *e == "tail" && whole && fails(key) => End::Failed,
        Some(Event::Failed(Failure::Lagged { missed })) if mode == Mode::Bounded => {
            let at = next.unwrap_or(first);
            assert!(missed >= 1 && at + missed <= last, "request {}: lagged by {missed} at {at}", sub.id());
            End::Lagged
        }
        Some(other) => {
            panic!("request {} for key {key} ended {other:?} after reading up to {next:?}", sub.id())
        }
        None if choice == 9 => {
            drop(sub);
            End::Dropped
        }
        None => {
            if choice == 8 {
                sub.cancel();
            } else {
                assert_eq!(flights.cancel(sub.id()), Ok(()), "request {} is live", sub.id());
            }
            assert_eq!(next_event::<R, _, _>(&mut sub).await, Event::Cancelled);
            assert_closed(&mut sub);
            End::Cancelled
        }
    }
}
