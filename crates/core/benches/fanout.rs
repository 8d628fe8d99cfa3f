//! Fan-out: one writer task appends N small `Bytes`, K reader tasks each read
//! every item (cloned per delivery) through a `Stream`-like loop, on a tokio
//! multi-thread runtime with 2 workers. The history against
//! `tokio::sync::broadcast` and `async-broadcast` (capacity N: nobody lags),
//! and a floor: one thread cloning and dropping each item K times.
//!
//! Modes: `full` (the writer never yields) and `paced` (it yields once after
//! every item, as a trickling token stream). Throughput is deliveries (N * K)
//! per second. Filter with e.g. `cargo bench -p streamflight-core --bench
//! fanout -- 'full/4096'`.
//!
//! N is 100,000, capped at 25.6 M / K deliveries per run (so 6,250 at
//! K = 4096) to keep the whole run near 6 minutes; set `FANOUT_N` to force N
//! for every K. For diagnosis only, `FANOUT_WORKERS` changes the number of
//! runtime workers (default 2).

use std::future::poll_fn;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use streamflight_core::history::{End, History};
use streamflight_core::{Event, Position};
use tokio::runtime::Runtime;

#[path = "support/broadcasts.rs"]
mod broadcasts;

use broadcasts::{System, items, n_for};

const KS: [usize; 4] = [1, 16, 256, 4096];

fn runtime() -> Runtime {
    let workers = std::env::var("FANOUT_WORKERS").ok().and_then(|n| n.parse().ok()).unwrap_or(2);
    tokio::runtime::Builder::new_multi_thread().worker_threads(workers).build().expect("runtime")
}

const OURS: System = System::Ours("history");

/// One run: K readers subscribed, then the clock starts, the readers and the
/// writer are spawned, and it stops when every reader has read all N items.
fn run(rt: &Runtime, system: System, n: usize, k: usize, paced: bool) -> Duration {
    let items = items(n);
    rt.block_on(async move {
        let (start, readers) = match system {
            System::Ours(_) => {
                let history = History::<Bytes, ()>::new(None);
                let mut readers: Vec<_> = (0..k).map(|_| history.subscribe(Position::Start)).collect();
                let start = Instant::now();
                let tasks: Vec<_> = readers
                    .drain(..)
                    .map(|mut reader| {
                        tokio::spawn(async move {
                            let mut read = 0;
                            while let Some(event) = poll_fn(|cx| reader.poll_next(cx)).await {
                                if let Event::Item(item) = event {
                                    black_box(item);
                                    read += 1;
                                }
                            }
                            read
                        })
                    })
                    .collect();
                tokio::spawn(async move {
                    for item in items {
                        history.append(item);
                        if paced {
                            tokio::task::yield_now().await;
                        }
                    }
                    history.close(End::Done);
                });
                (start, tasks)
            }
            System::TokioBroadcast => broadcasts::tokio_broadcast(items, k, paced),
            System::AsyncBroadcast => broadcasts::async_broadcast(items, k, paced),
        };
        for reader in readers {
            assert_eq!(reader.await.expect("reader"), n, "{}: every item delivered", system.name());
        }
        start.elapsed()
    })
}

/// The floor: one thread, no synchronisation, each item cloned and dropped K times.
fn floor(n: usize, k: usize) -> Duration {
    let items = items(n);
    let start = Instant::now();
    for item in &items {
        for _ in 0..k {
            black_box(item.clone());
        }
    }
    start.elapsed()
}

fn fanout(c: &mut Criterion) {
    let rt = runtime();
    for (mode, paced) in [("full", false), ("paced", true)] {
        let mut group = c.benchmark_group(mode);
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(1))
            .measurement_time(Duration::from_secs(1));
        for k in KS {
            let n = n_for(k);
            group.throughput(Throughput::Elements((n * k) as u64));
            for system in [OURS, System::TokioBroadcast, System::AsyncBroadcast] {
                group.bench_function(BenchmarkId::new(k.to_string(), system.name()), |b| {
                    b.iter_custom(|iters| (0..iters).map(|_| run(&rt, system, n, k, paced)).sum())
                });
            }
            if !paced {
                group.bench_function(BenchmarkId::new(k.to_string(), "floor"), |b| {
                    b.iter_custom(|iters| (0..iters).map(|_| floor(n, k)).sum())
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, fanout);
criterion_main!(benches);
