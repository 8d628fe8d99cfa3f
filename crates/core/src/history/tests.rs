//! Unit tests, a threaded stress test and the proptest model of the history
//! (random interleavings of append/read/close/cancel/subscribe/drop/truncation
//! against a `Vec`-like reference). All of them also run under Miri.

use std::sync::Arc as StdArc;
use std::sync::atomic::{AtomicIsize, Ordering as StdOrdering};
use std::task::{Context, Poll, Wake, Waker};
use std::vec::Vec;

use proptest::prelude::*;

use super::geometry::Geometry;
use super::*;
use crate::testkit::history::{Op, Tracked, counting, run};

fn poll<T: Clone, E: Clone>(reader: &mut Reader<T, E>) -> Poll<Option<Event<T, E>>> {
    reader.poll_next(&mut Context::from_waker(Waker::noop()))
}

/// Everything a reader yields until it would wait (or ends).
fn drain<T: Clone, E: Clone>(reader: &mut Reader<T, E>) -> Vec<Event<T, E>> {
    let mut events = Vec::new();
    while let Poll::Ready(Some(event)) = poll(reader) {
        events.push(event);
    }
    events
}

fn items(range: core::ops::Range<u32>) -> Vec<Event<u32, u8>> {
    range.map(Event::Item).collect()
}

#[test]
fn replay_tail_and_end() {
    let history = History::<u32, u8>::new(None);
    let mut start = history.subscribe(Position::Start);
    history.extend(0..300);
    let mut tail = history.subscribe(Position::Tail);
    assert_eq!(drain(&mut start), items(0..300));
    assert_eq!(poll(&mut start), Poll::Pending);
    history.append(300);
    assert!(history.close(End::upstream(7)));
    assert!(!history.close(End::Done), "a second close is ignored");
    history.append(301); // ignored after close
    assert_eq!(history.appended(), 301);
    let mut expected = items(300..301);
    expected.push(Event::Failed(Failure::Upstream(StdArc::new(7))));
    assert_eq!(drain(&mut tail), expected);
    assert_eq!(poll(&mut tail), Poll::Ready(None));
    assert_eq!(poll(&mut tail), Poll::Ready(None));
    // Subscribing after the end replays everything, then the end.
    let mut late = history.subscribe(Position::Start);
    let mut expected = items(0..301);
    expected.push(Event::Failed(Failure::Upstream(StdArc::new(7))));
    assert_eq!(drain(&mut late), expected);
    let mut tail = history.subscribe(Position::Tail);
    assert_eq!(drain(&mut tail), [Event::Failed(Failure::Upstream(StdArc::new(7)))]);
}

#[test]
fn cancel_wins_over_a_held_batch() {
    let history = History::<u32, u8>::new(None);
    let mut reader = history.subscribe(Position::Start);
    let mut other = history.subscribe(Position::Start);
    history.extend(0..10);
    assert_eq!(poll(&mut reader), Poll::Ready(Some(Event::Item(0))));
    let canceller = reader.canceller();
    assert!(canceller.clone().cancel());
    assert!(!canceller.cancel(), "already cancelled");
    assert_eq!(poll(&mut reader), Poll::Ready(Some(Event::Cancelled)));
    assert_eq!(poll(&mut reader), Poll::Ready(None));
    assert!(!canceller.cancel(), "already ended");
    history.close(End::Done);
    let mut expected = items(0..10);
    expected.push(Event::Done);
    assert_eq!(drain(&mut other), expected, "others are untouched");
    // After the end was yielded a cancel is a no-op; before, it wins over the end.
    let mut finished = history.subscribe(Position::Tail);
    let mut pending_end = history.subscribe(Position::Tail);
    assert_eq!(drain(&mut finished), [Event::Done]);
    assert!(!finished.canceller().cancel());
    assert!(pending_end.canceller().cancel());
    assert_eq!(drain(&mut pending_end), [Event::Cancelled]);
    let dropped = history.subscribe(Position::Tail);
    let canceller = dropped.canceller();
    drop(dropped);
    assert!(!canceller.cancel(), "dropped");
}

#[test]
fn cancel_wakes_a_parked_reader() {
    let history = History::<u32, u8>::new(None);
    let mut reader = history.subscribe(Position::Start);
    let (count, waker) = counting();
    assert!(reader.poll_next(&mut Context::from_waker(&waker)).is_pending());
    assert!(reader.canceller().cancel());
    assert_eq!(count.0.load(StdOrdering::SeqCst), 1);
    history.append(1);
    assert_eq!(drain(&mut reader), [Event::Cancelled]);
}

#[test]
fn append_wakes_parked_readers_once() {
    let history = History::<u32, u8>::new(None);
    let mut reader = history.subscribe(Position::Start);
    let (count, waker) = counting();
    let mut cx = Context::from_waker(&waker);
    assert!(reader.poll_next(&mut cx).is_pending());
    assert!(reader.poll_next(&mut cx).is_pending()); // re-registers, one slot
    history.append(0);
    history.append(1);
    assert_eq!(count.0.load(StdOrdering::SeqCst), 1, "one wake until it parks again");
    assert_eq!(drain(&mut reader), items(0..2));
    assert!(reader.poll_next(&mut cx).is_pending());
    history.close(End::Done);
    assert_eq!(count.0.load(StdOrdering::SeqCst), 2);
    assert_eq!(drain(&mut reader), [Event::Done]);
}

#[test]
fn a_batch_is_unseen_until_published_and_close_publishes_it() {
    let history = History::<u32, u8>::new(None);
    let mut reader = history.subscribe(Position::Start);
    let mut batch = history.batch();
    (0..3).for_each(|item| batch.push(item));
    assert_eq!(batch.len(), 3);
    drop(batch);
    assert_eq!(poll(&mut reader), Poll::Pending, "written, not published");
    assert_eq!(history.appended(), 0);
    history.publish();
    assert_eq!(drain(&mut reader), items(0..3));
    let mut batch = history.batch();
    batch.push(3);
    drop(batch);
    assert!(history.close(End::Done));
    let mut expected = items(3..4);
    expected.push(Event::Done);
    assert_eq!(drain(&mut reader), expected, "an unpublished item comes before the end");
    let mut batch = history.batch();
    batch.push(4);
    assert!(batch.is_empty(), "nothing is written after the end");
    drop(batch);
    history.publish();
    assert_eq!(history.appended(), 4);
}

#[test]
fn lagged_counts_exactly_what_was_released_unread() {
    let history = History::<u32, u8>::new(Some(4));
    // Chunks [0], [1, 2], [3, 4], [5, 6], ...
    assert_eq!((history.geometry.capacity(0), history.geometry.max_capacity()), (1, 2));
    let mut slow = history.subscribe(Position::Start);
    let mut fast = history.subscribe(Position::Start);
    history.extend(0..3);
    // `slow` reads chunk [0], then takes the batch [1, 3) and reads one item of it.
    assert_eq!(poll(&mut slow), Poll::Ready(Some(Event::Item(0))));
    assert_eq!(poll(&mut slow), Poll::Ready(Some(Event::Item(1))));
    assert_eq!(drain(&mut fast), items(0..3));
    let mut batch = history.batch();
    batch.push(3);
    assert!(!batch.releases_first(), "4 items fit");
    batch.push(4);
    assert!(batch.releases_first(), "the fifth releases the first");
    drop(batch);
    assert_eq!(history.released(), 0, "not before it is published");
    history.publish();
    assert_eq!(drain(&mut fast), items(3..5));
    let mut batch = history.batch();
    (5..10).for_each(|item| batch.push(item)); // releases 0..6 (the chunks up to [3, 4])
    assert!(!batch.releases_first(), "the first release happens once");
    drop(batch);
    history.publish();
    assert_eq!(history.released(), 6);
    assert_eq!(lock(&history.state).chunks.front().map(|chunk| chunk.number()), Some(3));
    assert_eq!(drain(&mut fast), [Event::Failed(Failure::Lagged { missed: 1 })]);
    // Item 2 is in its batch: it counts as read. Items 3..6 were missed.
    assert_eq!(poll(&mut slow), Poll::Ready(Some(Event::Item(2))));
    assert_eq!(poll(&mut slow), Poll::Ready(Some(Event::Failed(Failure::Lagged { missed: 3 }))));
    assert_eq!(poll(&mut slow), Poll::Ready(None));
    // A late `Start` reader of a truncated history lags at once.
    let mut late = history.subscribe(Position::Start);
    assert_eq!(drain(&mut late), [Event::Failed(Failure::Lagged { missed: 6 })]);
    let mut tail = history.subscribe(Position::Tail);
    history.append(10);
    assert_eq!(drain(&mut tail), items(10..11));
}

/// The closed forms against a walk over the chunk sizes, for every geometry
/// the history makes and a few more: every index of the first 40 chunks, and
/// chunk boundaries far out.
#[test]
fn geometry_matches_a_walk_over_the_chunks() {
    for (min, max) in [(0, 0), (0, 1), (0, 2), (0, 5), (0, 8), (1, 3), (2, 8), (3, 3), (5, 2), (8, 8)] {
        let geometry = Geometry::new(min, max);
        let (first, largest) = (1 << min.min(max), 1 << max);
        assert_eq!((geometry.capacity(0), geometry.max_capacity()), (first, largest));
        let (mut start, mut size) = (0u64, first as u64);
        for number in 0..40 {
            assert_eq!(geometry.start(number), start, "{min}/{max}: start of chunk {number}");
            assert_eq!(geometry.capacity(number) as u64, size, "{min}/{max}: size of chunk {number}");
            for index in start..start + size {
                assert_eq!(geometry.locate(index), (number, start), "{min}/{max}: item {index}");
            }
            start += size;
            size = (size * 2).min(largest as u64);
        }
        // Far out, where only full-size chunks are: consecutive and covering.
        for number in [1 << 20, (1 << 40) + 3, 1 << 50] {
            let start = geometry.start(number);
            assert_eq!(geometry.start(number + 1), start + largest as u64);
            assert_eq!(geometry.locate(start), (number, start));
            assert_eq!(geometry.locate(start + largest as u64 - 1), (number, start));
        }
    }
}

/// A history holds the chunks the geometry says, numbered in order, whether
/// items come one by one or in batches that straddle chunks.
#[test]
fn chunks_double_then_stay_full_size() {
    let capacities = |history: &History<u32, u8>| -> Vec<usize> {
        let state = lock(&history.state);
        for (index, chunk) in state.chunks.iter().enumerate() {
            assert_eq!(chunk.number(), index as u64);
        }
        state.chunks.iter().map(Chunk::capacity).collect()
    };
    let history = History::<u32, u8>::new(None);
    assert_eq!(capacities(&history), [0usize; 0], "nothing before the first item");
    history.append(0);
    assert_eq!(capacities(&history), [1]);
    history.append(1);
    assert_eq!(capacities(&history), [1, 2]);
    history.extend(2..600);
    assert_eq!(capacities(&history), [1, 2, 4, 8, 16, 32, 64, 128, 256, 256]);
    let mut reader = history.subscribe(Position::Start);
    history.close(End::Done);
    let mut expected = items(0..600);
    expected.push(Event::Done);
    assert_eq!(drain(&mut reader), expected);
}

#[test]
fn limit_sizes_chunks_and_bounds_memory() {
    // The first chunk holds one item; the largest at most half the window.
    for (limit, largest) in
        [(None, 256), (Some(0), 1), (Some(1), 1), (Some(3), 1), (Some(4), 2), (Some(100), 32)]
    {
        let geometry = History::<u8, u8>::new(limit).geometry;
        assert_eq!((geometry.capacity(0), geometry.max_capacity()), (1, largest), "{limit:?}");
    }
    let live = StdArc::new(AtomicIsize::new(0));
    let history = History::<Tracked, u8>::new(Some(10));
    for value in 0..1000 {
        history.append(Tracked::new(value, &live));
        assert!(live.load(StdOrdering::SeqCst) <= 10 + 4, "{}", live.load(StdOrdering::SeqCst));
    }
    drop(history);
    assert_eq!(live.load(StdOrdering::SeqCst), 0);
}

#[test]
fn dropping_readers_frees_their_slots() {
    let history = History::<u32, u8>::new(None);
    let (_, waker) = counting();
    for _ in 0..100 {
        let mut reader = history.subscribe(Position::Tail);
        assert!(reader.poll_next(&mut Context::from_waker(&waker)).is_pending());
    }
    let table = lock(&history.wakers.table);
    assert_eq!(table.slots.len(), 1, "slots are reused");
    assert!(table.slots.iter().all(|slot| slot.waker.is_none()));
    assert!(table.parked.len() <= 1);
}

#[test]
fn reader_is_send_and_unpin_and_small() {
    fn send_unpin<X: Send + Unpin>() {}
    fn send_sync_clone<X: Send + Sync + Clone>() {}
    send_unpin::<Reader<bytes_like::Bytes, u8>>();
    send_sync_clone::<Canceller>();
    send_sync_clone::<StdArc<History<bytes_like::Bytes, u8>>>();
    std::println!("bytes per reader: {BYTES_PER_READER}");
    const { assert!(BYTES_PER_READER <= 128) };
}

mod bytes_like {
    /// Stand-in for `bytes::Bytes` (a `Send + Sync` cheap clone).
    #[derive(Clone)]
    pub(super) struct Bytes(#[allow(dead_code)] std::sync::Arc<[u8]>);
}

/// Every thread sees every item in order then the end; no lost wake-up
/// (a lost one would hang the test).
#[test]
fn threads_read_everything() {
    let n: u32 = if cfg!(miri) { 200 } else { 20_000 };
    let history = History::<u32, u8>::new(None);
    let readers: Vec<_> = (0..3).map(|_| history.subscribe(Position::Start)).collect();
    let handles: Vec<_> = readers
        .into_iter()
        .map(|mut reader| {
            std::thread::spawn(move || {
                let waker = Waker::from(StdArc::new(Unpark(std::thread::current())));
                let mut cx = Context::from_waker(&waker);
                let mut next = 0;
                loop {
                    match reader.poll_next(&mut cx) {
                        Poll::Ready(Some(Event::Item(item))) => {
                            assert_eq!(item, next);
                            next += 1;
                        }
                        Poll::Ready(Some(end)) => {
                            assert_eq!(end, Event::Done);
                            assert_eq!(reader.poll_next(&mut cx), Poll::Ready(None));
                            return next;
                        }
                        Poll::Ready(None) => unreachable!(),
                        Poll::Pending => std::thread::park(),
                    }
                }
            })
        })
        .collect();
    for item in 0..n {
        history.append(item);
        if item % 64 == 0 {
            std::thread::yield_now();
        }
    }
    history.close(End::Done);
    for handle in handles {
        assert_eq!(handle.join().unwrap(), n);
    }
}

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: StdArc<Self>) {
        self.0.unpark();
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..6).prop_map(Op::Append),
        2 => any::<bool>().prop_map(Op::Subscribe),
        5 => any::<usize>().prop_map(Op::Poll),
        1 => Just(Op::PollAll),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => any::<usize>().prop_map(Op::Drop),
        1 => any::<bool>().prop_map(Op::Close),
    ]
}

/// Chunks of 1 to 256 slots (unbounded), of 1 only (limits 1, 2), of 1 then 2
/// (4, 7), of 1 to 8 (16) and of 1 to 32 (64).
fn limit() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![
        Just(None),
        Just(Some(1)),
        Just(Some(2)),
        Just(Some(4)),
        Just(Some(7)),
        Just(Some(16)),
        Just(Some(64)),
    ]
}

/// No bound in bytes (the history weighs nothing), or one of 0 (only the newest item is kept),
/// a few items' worth, or some dozens'.
fn max_bytes() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![2 => Just(None), 1 => Just(Some(0)), 1 => Just(Some(6)), 1 => Just(Some(40))]
}

fn config() -> ProptestConfig {
    if cfg!(miri) {
        ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() }
    } else {
        ProptestConfig::with_cases(1000)
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn history_matches_the_model(
        limit in limit(),
        max_bytes in max_bytes(),
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        run(limit, max_bytes, ops);
    }
}

#[test]
fn a_weighed_history_counts_what_it_retains_exactly_under_both_bounds() {
    let by_value = |item: &u32| *item as usize;
    // At most 3 items and 10 bytes: whichever is tighter releases.
    let history = History::<u32, u8>::weighed(Some(3), Some(10), Some(by_value));
    history.extend([1, 1, 1]);
    assert_eq!((history.released(), history.bytes()), (0, 3));
    history.append(1); // four items: the count releases one
    assert_eq!((history.released(), history.bytes()), (1, 3));
    history.append(9); // 1 + 1 + 9 = 11 bytes: the weight releases two more
    assert_eq!((history.released(), history.bytes()), (3, 10));
    history.append(0); // weighs nothing: fits
    assert_eq!((history.released(), history.bytes()), (3, 10));
    history.append(20); // alone past the bound, and kept: the newest always stays
    assert_eq!((history.released(), history.bytes()), (6, 20));
    let mut late = history.subscribe(Position::At(history.released()));
    history.close(End::Done);
    assert_eq!(drain(&mut late), [Event::Item(20), Event::Done]);

    // Weighed with no bound (for the linger budget): the sum only, no weight kept per item.
    let history = History::<u32, u8>::weighed(None, None, Some(by_value));
    history.extend(0..100);
    assert_eq!((history.released(), history.bytes()), (0, 4950));
    assert!(lock(&history.writer).scale.as_ref().is_some_and(|scale| scale.weights.is_empty()));
    // Without a weigher an item weighs its size.
    let history = History::<u32, u8>::weighed(None, Some(8), None);
    history.extend(0..5);
    assert_eq!((history.released(), history.bytes()), (3, 8));
}

/// Counts its wakes.
struct Wakes(core::sync::atomic::AtomicUsize);

impl Wake for Wakes {
    fn wake(self: StdArc<Self>) {
        self.0.fetch_add(1, StdOrdering::Relaxed);
    }
}

#[test]
fn batches_published_unwoken_wake_a_parked_reader_once_on_wake() {
    let history = History::<u32, u8>::new(None);
    let mut reader = history.subscribe(Position::Start);
    let wakes = StdArc::new(Wakes(Default::default()));
    let waker = Waker::from(wakes.clone());
    assert_eq!(reader.poll_next(&mut Context::from_waker(&waker)), Poll::Pending);
    for item in 0..3 {
        history.batch().push(item);
        assert!(history.publish_unwoken());
    }
    assert!(!history.publish_unwoken(), "nothing new to publish");
    assert_eq!(wakes.0.load(StdOrdering::Relaxed), 0, "not woken before the writer's wake");
    history.wake();
    history.wake();
    assert_eq!(wakes.0.load(StdOrdering::Relaxed), 1, "woken once for the three batches");
    assert_eq!(drain(&mut reader), items(0..3));
}
