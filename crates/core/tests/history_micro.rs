//! Single-thread cost of a delivery through the history against the bare
//! clone-and-drop floor (no contention, no scheduler): the history's own
//! per-item overhead. Ignored by default; run with
//! `cargo test -p streamflight-core --release --test history_micro -- --ignored --nocapture`.

use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use streamflight_core::history::{End, History};
use streamflight_core::{Event, Position};

#[test]
#[ignore = "a measurement, not a check"]
fn single_thread_overhead() {
    let (n, k) = (100_000usize, 64usize);
    const SLICE: usize = 1024;
    let items: Vec<Bytes> =
        (0..n).map(|i| Bytes::from(format!("data: token {i:>8}\n\n").into_bytes())).collect();
    items.iter().for_each(|item| drop(item.clone()));
    for round in 0..3 {
        let start = Instant::now();
        for item in &items {
            for _ in 0..k {
                black_box(item.clone());
            }
        }
        let floor = start.elapsed();

        let history = History::<Bytes, ()>::new(None);
        let mut readers: Vec<_> = (0..k).map(|_| history.subscribe(Position::Start)).collect();
        let start = Instant::now();
        let mut cx = Context::from_waker(Waker::noop());
        // Append in slices and let every reader catch up, so the items are
        // cache-hot as they are for the floor.
        for slice in items.chunks(SLICE) {
            history.extend(slice.iter().cloned());
            for reader in &mut readers {
                while let Poll::Ready(Some(event)) = reader.poll_next(&mut cx) {
                    if let Event::Item(item) = event {
                        black_box(item);
                    }
                }
            }
        }
        history.close(End::Done);
        let read = start.elapsed();
        let per = |d: std::time::Duration| d.as_secs_f64() * 1e9 / (n * k) as f64;
        println!("round {round}: floor {:.2} ns/delivery, history {:.2} ns/delivery", per(floor), per(read));
    }
}
