//! End-to-end benchmarks of `streamflight_tokio::Flights`, each against what a user would pick
//! instead, in the same run (criterion; figures and the command in BENCHMARKS.md).
//!
//! Groups (filter with e.g. `cargo bench -p streamflight-tokio --bench flights -- fanout-full`):
//!
//! - `request`: a request for a unique key up to its first item, against a bare
//!   `tokio::spawn` + `mpsc` per request.
//! - `join`: joins into a live flight, against a `Mutex<HashMap<K, broadcast::Sender>>`
//!   lookup + `subscribe` (the hand-rolled alternative).
//! - `fanout-full`, `fanout-paced`: one flight, K subscribers each read by its own task,
//!   N small `Bytes` items, K in {1, 16, 256, 4096}, through `Flights::request`, against
//!   `tokio::sync::broadcast` (capacity N) and `async-broadcast`. Paced: the upstream returns
//!   `Pending` once after every item, waking itself (the broadcast writers yield instead).
//!   N is 100,000, capped at 25.6 M / K deliveries (`FANOUT_N` forces N), as in
//!   `crates/core/benches/fanout.rs`.
//! - `request`, `join`, `fanout-*` also run `streamflight+observer`: the same manager with
//!   an [`Observer`] that counts every hook call, to compare with the unobserved one (issue 25).
//! - `scale`: 100,000 subscribers on one flight, 1,000 items to all, against tokio broadcast.
//!
//! Runs on a tokio multi-thread runtime with 2 workers. Bytes per subscriber and per flight
//! are measured by `crates/tokio/tests/memory.rs` (a counting allocator), not here.

use std::collections::HashMap;
use std::hint::black_box;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use futures::{StreamExt, stream};
use streamflight_tokio::{
    Config, FlightId, FlightSummary, Flights, Observer, RequestEvent, RequestId, Role, Subscription,
};
use tokio::runtime::Runtime;

// The baselines, shared with the history-level fan-out bench.
#[path = "../../core/benches/support/broadcasts.rs"]
mod broadcasts;

use broadcasts::{System, items, n_for};

// streamflight's side, shared with the `fanout_check` example.
#[path = "support/fanout.rs"]
mod fanout;

const KS: [usize; 4] = [1, 16, 256, 4096];
/// Joins timed in one go before they are dropped (untimed).
const JOIN_CHUNK: u64 = 10_000;

type Manager = Flights<u64, Bytes, ()>;

/// An observer as cheap as a useful one gets: it counts every hook call.
#[derive(Default)]
struct Counting(AtomicU64);

impl Observer for Counting {
    fn flight_started(&self, _: FlightId) {
        self.0.fetch_add(1, Relaxed);
    }
    fn first_item(&self, _: FlightId) {
        self.0.fetch_add(1, Relaxed);
    }
    fn flight_ended(&self, _: FlightId, _: FlightSummary) {
        self.0.fetch_add(1, Relaxed);
    }
    fn request(&self, _: RequestId, _: RequestEvent) {
        self.0.fetch_add(1, Relaxed);
    }
}

/// The manager of the `streamflight+observer` runs: a [`Counting`] observer.
fn observed() -> Manager {
    Manager::new(Config::default().observer(Arc::new(Counting::default())))
}

/// The name of the observed runs, beside `streamflight`.
const OBSERVED: &str = "streamflight+observer";

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

/// Runs `f` as a task on a worker (as a server's handler would), returning its result.
fn on_worker<F: Future<Output = Duration> + Send + 'static>(rt: &Runtime, f: F) -> Duration {
    rt.block_on(rt.spawn(f)).expect("the bench task")
}

fn request(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("request");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    let item = Bytes::from_static(b"data: token\n\n");

    for (name, flights) in [("streamflight", Manager::default()), (OBSERVED, observed())] {
        let mut key = 0;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (flights, item, first) = (flights.clone(), item.clone(), key);
                key += iters;
                on_worker(&rt, async move {
                    let start = Instant::now();
                    for key in first..first + iters {
                        let item = item.clone();
                        let mut answer = flights.request(key, async move { Ok(stream::iter([Ok(item)])) });
                        black_box(answer.next().await);
                    }
                    start.elapsed()
                })
            })
        });
        assert!(flights.is_idle(), "every flight ended");
    }

    group.bench_function("spawn+mpsc", |b| {
        b.iter_custom(|iters| {
            let item = item.clone();
            on_worker(&rt, async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let item = item.clone();
                    let upstream = async move { Ok::<_, ()>(stream::iter([Ok::<_, ()>(item)])) };
                    let (sender, mut receiver) = tokio::sync::mpsc::channel(16);
                    tokio::spawn(async move {
                        let Ok(upstream) = upstream.await else { return };
                        let mut upstream = pin!(upstream);
                        while let Some(item) = upstream.next().await {
                            if sender.send(item).await.is_err() {
                                return;
                            }
                        }
                    });
                    black_box(receiver.recv().await);
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

/// A flight that is streaming and stays so (its upstream never yields), with its leader.
fn live_flight(rt: &Runtime, flights: &Manager, key: u64) -> Subscription<Bytes, ()> {
    rt.block_on(async {
        let leader = flights.request(key, async { Ok(stream::pending()) });
        // Until the preparation has been seen: a join is then a Joiner's.
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let probe = flights.request(key, async { Ok(stream::pending()) });
            if probe.role() == Role::Joiner {
                break leader;
            }
        }
    })
}

fn join(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("join");
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    let flights = Manager::default();
    let _leader = live_flight(&rt, &flights, 7);
    let watched = observed();
    let _watched_leader = live_flight(&rt, &watched, 7);

    // Joins held (the subscriptions dropped, untimed, every JOIN_CHUNK).
    for (name, flights) in [("streamflight", &flights), (OBSERVED, &watched)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let _runtime = rt.enter();
                joins_held(iters, || flights.request(7, async { Ok(stream::pending()) }))
            })
        });
    }
    // A join, then its drop (a cancellation in company, R10/R12), both timed.
    group.bench_function("streamflight-join+drop", |b| {
        let _runtime = rt.enter();
        b.iter(|| drop(black_box(flights.request(7, async { Ok(stream::pending()) }))))
    });

    let senders: Mutex<HashMap<u64, tokio::sync::broadcast::Sender<Bytes>>> = Mutex::new(HashMap::new());
    senders.lock().unwrap().insert(7, tokio::sync::broadcast::channel(1024).0);
    group.bench_function("mutex-map+broadcast", |b| {
        b.iter_custom(|iters| {
            joins_held(iters, || senders.lock().unwrap().get(&7).map(|sender| sender.subscribe()))
        })
    });
    group.finish();
}

/// Times `iters` joins made by `join`, holding up to `JOIN_CHUNK` of them at once and
/// dropping them untimed between chunks.
fn joins_held<S>(iters: u64, mut join: impl FnMut() -> S) -> Duration {
    let mut held = Vec::with_capacity(JOIN_CHUNK as usize);
    let mut timed = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let chunk = left.min(JOIN_CHUNK);
        left -= chunk;
        let start = Instant::now();
        for _ in 0..chunk {
            held.push(join());
        }
        timed += start.elapsed();
        held.clear();
    }
    timed
}

const OURS: System = System::Ours("streamflight");

/// One fan-out run: K subscribers made (untimed), then the clock starts, the readers and
/// the writer (for streamflight: the go of the leader's preparation) start, and it stops
/// when every reader has read all `n` items.
fn fanout_run(rt: &Runtime, system: System, n: usize, k: usize, paced: bool) -> Duration {
    let items = items(n);
    rt.block_on(async move {
        let (start, readers) = match system {
            System::Ours(name) => {
                let flights = if name == OBSERVED { observed() } else { Manager::default() };
                fanout::streamflight(&flights, items, k, paced)
            }
            System::TokioBroadcast => broadcasts::tokio_broadcast(items, k, paced),
            System::AsyncBroadcast => broadcasts::async_broadcast(items, k, paced),
        };
        for reader in readers {
            assert_eq!(reader.await.expect("a reader"), n, "{}: every item delivered", system.name());
        }
        start.elapsed()
    })
}

fn fanout(c: &mut Criterion) {
    let rt = runtime();
    for (mode, paced) in [("fanout-full", false), ("fanout-paced", true)] {
        let mut group = c.benchmark_group(mode);
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(1))
            .measurement_time(Duration::from_secs(1));
        for k in KS {
            let n = n_for(k);
            group.throughput(Throughput::Elements((n * k) as u64));
            for system in [OURS, System::Ours(OBSERVED), System::TokioBroadcast, System::AsyncBroadcast] {
                group.bench_function(BenchmarkId::new(system.name(), k), |b| {
                    b.iter_custom(|iters| (0..iters).map(|_| fanout_run(&rt, system, n, k, paced)).sum())
                });
            }
        }
        group.finish();
    }
}

fn scale(c: &mut Criterion) {
    const SUBSCRIBERS: usize = 100_000;
    const ITEMS: usize = 1_000;
    let rt = runtime();
    let mut group = c.benchmark_group("scale");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements((SUBSCRIBERS * ITEMS) as u64));
    for system in [OURS, System::TokioBroadcast] {
        group.bench_function(BenchmarkId::new(system.name(), "100000x1000"), |b| {
            b.iter_custom(|iters| {
                (0..iters).map(|_| fanout_run(&rt, system, ITEMS, SUBSCRIBERS, false)).sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, request, join, fanout, scale);
criterion_main!(benches);
