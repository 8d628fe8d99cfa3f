//! The fan-out workload both fan-out benches share (items, N per K) and its baselines,
//! run in the same run as streamflight: `tokio::sync::broadcast` and `async-broadcast`.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use tokio::task::JoinHandle;

/// What a fan-out run measures: the bench's own system (named by the bench), or a baseline.
#[derive(Clone, Copy)]
pub enum System {
    /// streamflight's side, under the bench's name for it.
    Ours(&'static str),
    /// `tokio::sync::broadcast`.
    TokioBroadcast,
    /// `async-broadcast`.
    AsyncBroadcast,
}

impl System {
    /// The criterion id (and plot label) of the system.
    pub fn name(self) -> &'static str {
        match self {
            System::Ours(name) => name,
            System::TokioBroadcast => "tokio-broadcast",
            System::AsyncBroadcast => "async-broadcast",
        }
    }
}

/// Items per run at full N.
pub const N: usize = 100_000;
/// Deliveries per run at most, so K = 4096 fits a bench's time (N = 6,250 there).
pub const MAX_DELIVERIES: usize = 25_600_000;

/// N for `k` readers: `FANOUT_N` if set, else `N` capped at `MAX_DELIVERIES / k`.
pub fn n_for(k: usize) -> usize {
    match std::env::var("FANOUT_N").ok().and_then(|n| n.parse().ok()) {
        Some(n) => n,
        None => N.min(MAX_DELIVERIES / k),
    }
}

/// `n` distinct small items, each already promoted to a shared buffer so that
/// every later clone is one reference-count increment.
pub fn items(n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| {
            let item = Bytes::from(format!("data: token {i:>8}\n\n").into_bytes());
            drop(item.clone());
            item
        })
        .collect()
}

/// K readers of a `tokio::sync::broadcast` of capacity N (nobody lags), then its writer,
/// spawned on the current runtime: the clock's start and each reader's count of items.
pub fn tokio_broadcast(items: Vec<Bytes>, k: usize, paced: bool) -> (Instant, Vec<JoinHandle<usize>>) {
    let (sender, _) = tokio::sync::broadcast::channel::<Bytes>(items.len().max(1));
    let receivers: Vec<_> = (0..k).map(|_| sender.subscribe()).collect();
    let start = Instant::now();
    let readers = receivers
        .into_iter()
        .map(|mut receiver| {
            tokio::spawn(async move {
                let mut read = 0;
                loop {
                    match receiver.recv().await {
                        Ok(item) => {
                            black_box(item);
                            read += 1;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break read,
                        Err(lagged) => panic!("{lagged}"),
                    }
                }
            })
        })
        .collect();
    tokio::spawn(async move {
        for item in items {
            sender.send(item).expect("receivers");
            if paced {
                tokio::task::yield_now().await;
            }
        }
    });
    (start, readers)
}

/// The same on `async-broadcast` (capacity N, no overflow).
pub fn async_broadcast(items: Vec<Bytes>, k: usize, paced: bool) -> (Instant, Vec<JoinHandle<usize>>) {
    let (mut sender, receiver) = async_broadcast::broadcast::<Bytes>(items.len().max(1));
    sender.set_overflow(false);
    let receivers: Vec<_> = (0..k).map(|_| receiver.clone()).collect();
    drop(receiver);
    let start = Instant::now();
    let readers = receivers
        .into_iter()
        .map(|mut receiver| {
            tokio::spawn(async move {
                let mut read = 0;
                while let Ok(item) = receiver.recv().await {
                    black_box(item);
                    read += 1;
                }
                read
            })
        })
        .collect();
    tokio::spawn(async move {
        for item in items {
            sender.broadcast(item).await.expect("receivers");
            if paced {
                tokio::task::yield_now().await;
            }
        }
    });
    (start, readers)
}
