//! The history's reference model and checker: random appends, reads, closes, cancels,
//! subscribes and drops against a plain count of items (and their weights, for a bound in
//! bytes), shared by the proptest and the fuzz target.

use std::sync::Arc as StdArc;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering as StdOrdering};
use std::task::{Context, Poll, Wake, Waker};
use std::vec::Vec;

use crate::history::{Canceller, End, History, Reader};
use crate::{Event, Failure, Position};

/// A waker that counts its wakes.
#[derive(Default)]
pub(crate) struct CountWaker(pub(crate) AtomicUsize);

impl Wake for CountWaker {
    fn wake(self: StdArc<Self>) {
        self.0.fetch_add(1, StdOrdering::SeqCst);
    }
    fn wake_by_ref(self: &StdArc<Self>) {
        self.0.fetch_add(1, StdOrdering::SeqCst);
    }
}

pub(crate) fn counting() -> (StdArc<CountWaker>, Waker) {
    let count = StdArc::new(CountWaker::default());
    (count.clone(), Waker::from(count))
}

/// An item that counts its live copies, to check release and leaks.
#[derive(Debug)]
pub(crate) struct Tracked {
    value: u64,
    live: StdArc<AtomicIsize>,
}

impl Tracked {
    pub(crate) fn new(value: u64, live: &StdArc<AtomicIsize>) -> Self {
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

/// One operation on a history and its readers; indices are taken modulo the readers made.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "testkit", derive(arbitrary::Arbitrary))]
pub(crate) enum Op {
    Append(u8),
    Subscribe(bool),
    Poll(usize),
    PollAll,
    Cancel(usize),
    Drop(usize),
    Close(bool),
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
    /// The bound in bytes, if any: items are then weighed by [`weight`].
    max_bytes: Option<u64>,
    /// `prefix[i]`: what items `0..i` weigh together.
    prefix: Vec<u64>,
    /// Items released: the smallest start of a window that fits both bounds and holds the
    /// newest item, found afresh from the prefix sums (not as the history moves it).
    released: u64,
    /// The first chunk's size and the largest's: the reference walks the
    /// sizes from one to the other, doubling, apart from the history's
    /// closed form.
    first_chunk: u64,
    max_chunk: u64,
    end: Option<End<u8>>,
}

/// What item `value` weighs under a bound in bytes: 0 to 4 bytes, zero weights included.
fn weight_of(value: u64) -> u64 {
    value % 5
}

/// The history's weigher.
fn weight(item: &Tracked) -> usize {
    weight_of(item.value) as usize
}

impl Model {
    /// `count` more items were appended.
    fn append(&mut self, count: u64) {
        for value in self.len..self.len + count {
            self.prefix.push(self.prefix.last().copied().unwrap_or(0) + weight_of(value));
        }
        self.len += count;
        let by_count = self.len.saturating_sub(self.limit);
        let by_bytes = match self.max_bytes {
            Some(max) if self.len > 0 => {
                let total = self.prefix[self.len as usize];
                let fits = self.prefix.partition_point(|&before| total - before > max) as u64;
                fits.min(self.len - 1)
            }
            _ => 0,
        };
        self.released = by_count.max(by_bytes);
    }

    /// What the retained items weigh.
    fn bytes(&self) -> u64 {
        self.prefix[self.len as usize] - self.prefix[self.released as usize]
    }

    /// One past the last index of the chunk holding `index`.
    fn chunk_end(&self, index: u64) -> u64 {
        let (mut end, mut size) = (self.first_chunk, self.first_chunk);
        while end <= index {
            size = (size * 2).min(self.max_chunk);
            end += size;
        }
        end
    }
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
            let released = model.released;
            if self.cursor < released {
                self.finished = true;
                return Some(Some(Event::Failed(Failure::Lagged { missed: released - self.cursor })));
            }
            self.avail = model.len.min(model.chunk_end(self.cursor));
            self.cursor += 1;
            return Some(Some(Event::Item(self.cursor - 1)));
        }
        match &model.end {
            Some(end) => {
                self.finished = true;
                Some(Some(end.event()))
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

/// Runs `ops` on a history bounded by `limit` items and `max_bytes` bytes and checks every
/// event, wake-up, the weight of the retained items, the memory bound and, at the end, that
/// nothing leaked. Panics on any disagreement.
pub(crate) fn run(limit: Option<usize>, max_bytes: Option<usize>, ops: Vec<Op>) {
    let live = StdArc::new(AtomicIsize::new(0));
    let history = match max_bytes {
        None => History::<Tracked, u8>::new(limit),
        Some(max) => History::weighed(limit, Some(max), Some(weight)),
    };
    let mut model = Model {
        len: 0,
        limit: limit.map_or(u64::MAX, |n| n.max(1) as u64),
        max_bytes: max_bytes.map(|max| max as u64),
        prefix: std::vec![0],
        released: 0,
        first_chunk: history.chunk_capacities().0,
        max_chunk: history.chunk_capacities().1,
        end: None,
    };
    // Chunks at most half the window (when they can be), so that at most
    // `1.5 * limit` items are retained.
    assert!(model.max_chunk == 1 || model.max_chunk * 2 <= model.limit);
    assert!(model.first_chunk <= model.max_chunk);
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
                    model.append(u64::from(count));
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
                let end = if failed { End::upstream(9) } else { End::Done };
                assert_eq!(history.close(end.clone()), model.end.is_none());
                model.end.get_or_insert(end);
            }
        }
        assert_eq!(history.appended(), model.len);
        assert_eq!(history.released(), model.released, "the window's start");
        if model.max_bytes.is_some() {
            assert_eq!(history.bytes(), model.bytes(), "the retained items' weight");
        }
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
        let window = model.len - model.released;
        let bound = model.len.min(window + model.max_chunk - 1) + readers * model.max_chunk;
        assert!(live.load(StdOrdering::SeqCst) as u64 <= bound);
    }
    drop(subs);
    assert!(history.every_waker_slot_free(), "every slot freed, no waker kept");
    drop(history);
    assert_eq!(live.load(StdOrdering::SeqCst), 0, "leak");
}

/// The fuzz check of the history: the bytes choose a bound and a sequence of
/// appends, reads, closes, cancels, subscribes and drops (via `arbitrary`),
/// checked against the `Vec` reference the proptest uses. Panics on any disagreement.
pub fn check_history(data: &[u8]) {
    let mut bytes = arbitrary::Unstructured::new(data);
    let limits = [None, Some(1), Some(2), Some(4), Some(7), Some(16)];
    let Ok(limit) = bytes.choose(&limits).copied() else { return };
    let Ok(max_bytes) = bytes.choose(&[None, Some(0), Some(4), Some(12)]).copied() else { return };
    let mut ops = Vec::new();
    while !bytes.is_empty() && ops.len() < 200 {
        match bytes.arbitrary() {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    run(limit, max_bytes, ops);
}
