//! Unit tests, a threaded stress test and the proptest model of the history
//! (random interleavings of append/read/close/cancel/subscribe/drop/truncation
//! against a `Vec`-like reference). All of them also run under Miri.

use std::sync::Arc as StdArc;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering as StdOrdering};
use std::task::{Context, Poll, Wake, Waker};
use std::vec::Vec;

use proptest::prelude::*;

use super::*;

/// A waker that counts its wakes.
#[derive(Default)]
struct CountWaker(AtomicUsize);

impl Wake for CountWaker {
    fn wake(self: StdArc<Self>) {
        self.0.fetch_add(1, StdOrdering::SeqCst);
    }
    fn wake_by_ref(self: &StdArc<Self>) {
        self.0.fetch_add(1, StdOrdering::SeqCst);
    }
}

fn counting() -> (StdArc<CountWaker>, Waker) {
    let count = StdArc::new(CountWaker::default());
    (count.clone(), Waker::from(count))
}

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
    assert!(history.close(End::Failed(Failure::Upstream(7))));
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

/// An item that counts its live copies, to check release and leaks.
#[derive(Debug)]
struct Tracked {
    value: u64,
    live: StdArc<AtomicIsize>,
}

impl Tracked {
    fn new(value: u64, live: &StdArc<AtomicIsize>) -> Self {
        live.fetch_add(1, StdOrdering::SeqCst);
        Tracked { value, live: live.clone() }
    }
}

impl Clone for Tracked {
    fn clone(&self) -> Self {
        Tracked::new(self.value, &self.live)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.live.fetch_sub(1, StdOrdering::SeqCst);
    }
}

// ---------------------------------------------------------------------------
// The model.

#[derive(Clone, Debug)]
enum Op {
    Append(u8),
    Subscribe(bool),
    Poll(usize),
    PollAll,
    Cancel(usize),
    Drop(usize),
    Close(bool),
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

/// The reference: a reader's expected behaviour, computed from the plain
/// count of appended items (the `Vec` of item `i` being `i`).
#[derive(Clone, Debug)]
struct ModelReader {
    cursor: u64,
    avail: u64,
    finished: bool,
    cancelled: bool,
}

struct Model {
    len: u64,
    limit: u64,
    chunk: u64,
    end: Option<End<u8>>,
}

impl ModelReader {
    /// The next event, or `None` for `Pending`.
    fn poll(&mut self, model: &Model) -> Option<Option<Event<u64, u8>>> {
        if self.finished {
            return Some(None);
        }
        if self.cancelled {
            self.finished = true;
            return Some(Some(Event::Cancelled));
        }
        if self.cursor < self.avail {
            self.cursor += 1;
            return Some(Some(Event::Item(self.cursor - 1)));
        }
        if self.cursor < model.len {
            let released = model.len.saturating_sub(model.limit);
            if self.cursor < released {
                self.finished = true;
                return Some(Some(Event::Failed(Failure::Lagged { missed: released - self.cursor })));
            }
            self.avail = model.len.min((self.cursor / model.chunk + 1) * model.chunk);
            self.cursor += 1;
            return Some(Some(Event::Item(self.cursor - 1)));
        }
        match &model.end {
            Some(end) => {
                self.finished = true;
                Some(Some(match end {
                    End::Done => Event::Done,
                    End::Failed(failure) => Event::Failed(failure.clone()),
                }))
            }
            None => None,
        }
    }
}

struct Sub {
    reader: Option<Reader<Tracked, u8>>,
    canceller: Canceller,
    model: ModelReader,
    count: StdArc<CountWaker>,
    waker: Waker,
    /// Wake count when it last returned `Pending`.
    parked_at: Option<usize>,
}

impl Sub {
    fn poll(&mut self, model: &Model) {
        let expected = self.model.poll(model);
        let Some(reader) = &mut self.reader else { return };
        let got = reader.poll_next(&mut Context::from_waker(&self.waker));
        let got = match got {
            Poll::Pending => None,
            Poll::Ready(event) => Some(event.map(|event| match event {
                Event::Item(item) => Event::Item(item.value),
                Event::Done => Event::Done,
                Event::Failed(failure) => Event::Failed(failure),
                Event::Cancelled => Event::Cancelled,
            })),
        };
        assert_eq!(got, expected);
        self.parked_at = got.is_none().then(|| self.count.0.load(StdOrdering::SeqCst));
    }
}

fn run(limit: Option<usize>, ops: Vec<Op>) {
    let live = StdArc::new(AtomicIsize::new(0));
    let history = History::<Tracked, u8>::new(limit);
    let mut model = Model {
        len: 0,
        limit: limit.map_or(u64::MAX, |n| n.max(1) as u64),
        chunk: history.chunk_len(),
        end: None,
    };
    assert!(model.chunk == 1 || model.chunk * 2 <= model.limit);
    let mut subs: Vec<Sub> = Vec::new();
    for op in ops {
        match op {
            Op::Append(count) => {
                let start = model.len;
                let batch = (start..start + u64::from(count)).map(|value| Tracked::new(value, &live));
                if count == 1 {
                    batch.for_each(|item| history.append(item));
                } else {
                    history.extend(batch);
                }
                if model.end.is_none() {
                    model.len += u64::from(count);
                }
            }
            Op::Subscribe(start) => {
                let from = if start { Position::Start } else { Position::Tail };
                let reader = history.subscribe(from);
                let cursor = if start { 0 } else { model.len };
                let (count, waker) = counting();
                subs.push(Sub {
                    canceller: reader.canceller(),
                    reader: Some(reader),
                    model: ModelReader { cursor, avail: cursor, finished: false, cancelled: false },
                    count,
                    waker,
                    parked_at: None,
                });
            }
            Op::Poll(index) => {
                if !subs.is_empty() {
                    let count = subs.len();
                    subs[index % count].poll(&model);
                }
            }
            Op::PollAll => {
                for sub in &mut subs {
                    sub.poll(&model);
                }
            }
            Op::Cancel(index) => {
                if !subs.is_empty() {
                    let count = subs.len();
                    let sub = &mut subs[index % count];
                    let expected = sub.reader.is_some() && !sub.model.finished && !sub.model.cancelled;
                    assert_eq!(sub.canceller.cancel(), expected);
                    if expected {
                        sub.model.cancelled = true;
                    }
                }
            }
            Op::Drop(index) => {
                if !subs.is_empty() {
                    let count = subs.len();
                    subs[index % count].reader = None;
                }
            }
            Op::Close(failed) => {
                let end = if failed { End::Failed(Failure::Upstream(9)) } else { End::Done };
                assert_eq!(history.close(end.clone()), model.end.is_none());
                model.end.get_or_insert(end);
            }
        }
        assert_eq!(history.appended(), model.len);
        // No lost wake-up: a parked reader that now has something to yield was woken.
        for sub in &subs {
            if let (Some(_), Some(at)) = (&sub.reader, sub.parked_at)
                && sub.model.clone().poll(&model).is_some()
            {
                assert!(sub.count.0.load(StdOrdering::SeqCst) > at, "lost wake-up");
            }
        }
        // Memory: the retained window (rounded to chunks) plus one chunk per reader.
        let readers = subs.iter().filter(|sub| sub.reader.is_some()).count() as u64;
        let bound = model.len.min(model.limit.saturating_add(model.chunk - 1)) + readers * model.chunk;
        assert!(live.load(StdOrdering::SeqCst) as u64 <= bound);
    }
    drop(subs);
    {
        let table = lock(&history.wakers.table);
        assert_eq!(table.free.len(), table.slots.len(), "every slot freed");
        assert!(table.slots.iter().all(|slot| slot.waker.is_none()));
    }
    drop(history);
    assert_eq!(live.load(StdOrdering::SeqCst), 0, "leak");
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
