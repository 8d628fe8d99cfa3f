//! Fan-out through `Flights` against `tokio::sync::broadcast`, as an outside check runs it
//! (issue 26): N 16-byte `Bytes` items to K subscribers, each read by its own task on a
//! tokio runtime of 2 workers, the two systems alternated in the same run, several times.
//!
//! ```sh
//! cargo run --release -p streamflight-tokio --example fanout_check                 # K = 16, 256, 4096
//! cargo run --release -p streamflight-tokio --example fanout_check -- 256 --reps 5 --paced
//! cargo run --release -p streamflight-tokio --example fanout_check -- 4096 --items 6250 --main --promoted
//! ```
//!
//! Flags: `--items N` (20,000), `--reps R` (3), `--paced` (the upstream returns `Pending`
//! after each item, waking itself; the broadcast writer yields), `--workers W` (2), `--main`
//! (each run on the thread that calls `block_on`, as under `#[tokio::main]` and in the
//! criterion bench, not on a worker), `--promoted` (items shared before the run, as the
//! bench's), `--alone` (streamflight only, to profile it).
//!
//! Prints, per K, each repetition's wall and CPU times (every thread's, from
//! `/proc/self/task/*/schedstat`: less disturbed by other work on the machine) and the ratio
//! broadcast / streamflight (above 1: streamflight is faster), then the median ratio.

use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use streamflight_tokio::Flights;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

// The bench's workload, both sides: the same code the criterion groups run.
#[path = "../../core/benches/support/broadcasts.rs"]
#[allow(dead_code)]
mod broadcasts;
#[path = "../benches/support/fanout.rs"]
mod fanout;

/// What a run is made of.
struct Options {
    ks: Vec<usize>,
    items: usize,
    reps: usize,
    paced: bool,
    /// Run each body on the thread that called `block_on` (as in `#[tokio::main]`), not on a worker.
    main: bool,
    /// Items promoted to shared buffers before the run (as the criterion bench's).
    promoted: bool,
    /// Runs streamflight alone, with no comparison (to profile it).
    alone: bool,
    /// Worker threads (2, as the check).
    workers: usize,
}

fn options() -> Options {
    let mut options = Options {
        ks: Vec::new(),
        items: 20_000,
        reps: 3,
        paced: false,
        main: false,
        promoted: false,
        alone: false,
        workers: 2,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().and_then(|v| v.parse().ok()).expect("a number after the flag");
        match arg.as_str() {
            "--items" => options.items = value(),
            "--reps" => options.reps = value(),
            "--workers" => options.workers = value(),
            "--paced" => options.paced = true,
            "--main" => options.main = true,
            "--alone" => options.alone = true,
            "--promoted" => options.promoted = true,
            k => options.ks.push(k.parse().expect("K, or a flag: see the module's doc")),
        }
    }
    if options.ks.is_empty() {
        options.ks = vec![16, 256, 4096];
    }
    options
}

/// `n` distinct 16-byte items; `promoted`: each already shared (cloned once), as the
/// criterion bench's, so that a reader's first clone allocates nothing.
fn items(n: usize, promoted: bool) -> Vec<Bytes> {
    (0..n)
        .map(|i| {
            let item = Bytes::from(format!("token {i:>10}").into_bytes());
            if promoted {
                drop(item.clone());
            }
            item
        })
        .collect()
}

/// K subscriptions made, then timed from the upstream's go to the last reader's last item.
async fn streamflight(items: Vec<Bytes>, k: usize, paced: bool) -> Duration {
    let n = items.len();
    let flights = Flights::<u64, Bytes, ()>::default();
    let (start, readers) = fanout::streamflight(&flights, items, k, paced);
    joined(start, readers, n).await
}

/// The same on a `tokio::sync::broadcast` of capacity N (nobody lags), whose writer yields
/// after each item when paced.
async fn broadcast(items: Vec<Bytes>, k: usize, paced: bool) -> Duration {
    let n = items.len();
    let (start, readers) = broadcasts::tokio_broadcast(items, k, paced);
    joined(start, readers, n).await
}

/// The time from `start` until every reader has read its `n` items.
async fn joined(start: Instant, readers: Vec<JoinHandle<usize>>, n: usize) -> Duration {
    for reader in readers {
        assert_eq!(reader.await.expect("a reader"), n);
    }
    start.elapsed()
}

/// CPU time of every thread of the process so far (Linux: `/proc/self/task/*/schedstat`;
/// zero elsewhere): less disturbed than wall time by other work on the machine.
fn cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Duration::ZERO };
    let nanos = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// One timed run, of either system.
type Run = Pin<Box<dyn Future<Output = Duration> + Send>>;

fn main() {
    let options = options();
    let rt: Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.workers)
        .enable_all()
        .build()
        .expect("a runtime");
    let mode = if options.paced { "paced" } else { "full" };
    for &k in &options.ks {
        let mut ratios = Vec::new();
        for rep in 0..options.reps {
            let run = |body| match options.main {
                true => rt.block_on(body),
                false => rt.block_on(rt.spawn(body)).expect("the run"),
            };
            let cpu_before = cpu();
            let ours =
                run(Box::pin(streamflight(items(options.items, options.promoted), k, options.paced)) as Run);
            let cpu_between = cpu();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            if options.alone {
                println!(
                    "{mode} K={k:<5} rep {rep}: streamflight {:>9.2} ms (cpu {:>9.2})",
                    ms(ours),
                    ms(cpu() - cpu_before)
                );
                continue;
            }
            let theirs = run(Box::pin(broadcast(items(options.items, options.promoted), k, options.paced)));
            let (our_cpu, their_cpu) = (cpu_between - cpu_before, cpu() - cpu_between);
            let ratio = theirs.as_secs_f64() / ours.as_secs_f64();
            println!(
                "{mode} K={k:<5} rep {rep}: streamflight {:>9.2} ms (cpu {:>9.2}), broadcast {:>9.2} ms (cpu {:>9.2}), ratio {ratio:.2} (cpu {:.2})",
                ms(ours),
                ms(our_cpu),
                ms(theirs),
                ms(their_cpu),
                their_cpu.as_secs_f64() / our_cpu.as_secs_f64(),
            );
            ratios.push(ratio);
        }
        if ratios.is_empty() {
            continue;
        }
        ratios.sort_by(f64::total_cmp);
        println!("{mode} K={k:<5} median ratio {:.2}", ratios[ratios.len() / 2]);
    }
}
