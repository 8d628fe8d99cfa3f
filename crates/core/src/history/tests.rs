//! Unit tests, a threaded stress test and the proptest model of the history
//! (random interleavings of append/read/close/cancel/subscribe/drop/truncation
//! against a `Vec`-like reference). All of them also run under Miri.

use std::sync::Arc as StdArc;
use std::sync::atomic::{AtomicIsize, Ordering as StdOrdering};
use std::task::{Context, Poll, Wake, Waker};
use std::vec::Vec;

use proptest::prelude::*;

use super::check::{Op, Tracked, counting, run};
use super::*;

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
    assert!(history.close(End::Upstream(7)));
    assert!(!history.close(End::Done), "a second close is ignored");
    history.append(301); // ignored after close
    assert_eq!(history.appended(), 301);
    let mut expected = items(300..301);
    expected.push(Event::Failed(Failure::Upstream(7)));
    assert_eq!(drain(&mut tail), expected);
    assert_eq!(poll(&mut tail), Poll::Ready(None));
    assert_eq!(poll(&mut tail), Poll::Ready(None));
    // Subscribing after the end replays everything, then the end.
    let mut late = history.subscribe(Position::Start);
    let mut expected = items(0..301);
    expected.push(Event::Failed(Failure::Upstream(7)));
    assert_eq!(drain(&mut late), expected);
    let mut tail = history.subscribe(Position::Tail);
    assert_eq!(drain(&mut tail), [Event::Failed(Failure::Upstream(7))]);
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
fn lagged_counts_exactly_what_was_released_unread() {
    let history = History::<u32, u8>::new(Some(4));
    assert_eq!(history.chunk_len(), 2);
    let mut slow = history.subscribe(Position::Start);
    let mut fast = history.subscribe(Position::Start);
    history.extend(0..3);
    // `slow` takes the batch [0, 2) (one chunk) and reads one item of it.
    assert_eq!(poll(&mut slow), Poll::Ready(Some(Event::Item(0))));
    assert_eq!(drain(&mut fast), items(0..3));
    assert!(!history.is_full());
    history.append(3);
    assert!(history.is_full());
    assert_eq!(drain(&mut fast), items(3..4));
    history.extend(4..10); // releases 0..6
    assert_eq!(history.released(), 6);
    assert_eq!(drain(&mut fast), [Event::Failed(Failure::Lagged { missed: 2 })]);
    // Item 1 is in its batch: it counts as read. Items 2..6 were missed.
    assert_eq!(poll(&mut slow), Poll::Ready(Some(Event::Item(1))));
    assert_eq!(poll(&mut slow), Poll::Ready(Some(Event::Failed(Failure::Lagged { missed: 4 }))));
    assert_eq!(poll(&mut slow), Poll::Ready(None));
    // A late `Start` reader of a truncated history lags at once.
    let mut late = history.subscribe(Position::Start);
    assert_eq!(drain(&mut late), [Event::Failed(Failure::Lagged { missed: 6 })]);
    let mut tail = history.subscribe(Position::Tail);
    history.append(10);
    assert_eq!(drain(&mut tail), items(10..11));
}

#[test]
fn limit_sizes_chunks_and_bounds_memory() {
    for (limit, chunk) in
        [(None, 256), (Some(0), 1), (Some(1), 1), (Some(3), 1), (Some(4), 2), (Some(100), 32)]
    {
        assert_eq!(History::<u8, u8>::new(limit).chunk_len(), chunk, "{limit:?}");
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

fn limit() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![Just(None), Just(Some(1)), Just(Some(2)), Just(Some(4)), Just(Some(7)), Just(Some(16))]
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
    fn history_matches_the_model(limit in limit(), ops in proptest::collection::vec(op(), 0..80)) {
        run(limit, ops);
    }
}
