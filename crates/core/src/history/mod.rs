//! The data plane: one shared, append-only history per flight, read by per-subscriber cursors.
//! Runtime-agnostic (only `core::task`'s `Waker`): one writer appends, every [`Reader`] reads at its own pace.
//!
//! # Design
//!
//! Items live once, in chunks of write-once slots, each chunk one allocation
//! shared by counted handles. Chunks double from 1 slot up to 256 (or half the
//! `history_limit`), then stay at that size: a short history costs about what
//! it holds, a long one allocates once per 256 items. The writer fills a slot
//! and publishes it with one atomic store of the length. A [`Reader`] is a
//! cursor plus the chunk it reads from: it takes every published item of that
//! chunk as one batch, then yields them one by one without any lock or shared
//! write; it locks only to step to the next chunk (found in closed form from
//! its index) or to park its `Waker`. The writer wakes parked readers once per
//! append (or, publishing unwoken, once for several) and only when some are parked (an atomic hint, checked after a
//! `SeqCst` fence that pairs with the reader's). With a `history_limit` or a
//! bound in bytes, the writer moves the retained window's start (one atomic,
//! published before the length) and releases the chunks wholly before it; a
//! reader behind the window ends with [`Failure::Lagged`] ([R15](crate::design#r15)).
//! A weighed history keeps each retained item's weight (8 bytes) when a bound
//! may release it, so that its bytes stay exact whatever it released. A [`Canceller`] ends one reader
//! with [`Event::Cancelled`], ahead of anything it has not yet yielded ([R10](crate::design#r10),
//! [R13](crate::design#r13)). Wakers are always called after every lock is released.
//!
//! Memory: an item is stored once; a reader costs [`BYTES_PER_READER`] bytes;
//! a history with one reader past its first item allocates about 400 bytes
//! (itself, its waker table, the reader's cell, a one-slot chunk and the chunk
//! list; BENCHMARKS.md has the breakdown).

// The crate's one allowance of `unsafe`: the chunks' write-once slots,
// published to readers on other threads. The history calls into it at three
// places (a batch's push, a reader's two reads), each allowed where it stands
// with its proof.
#[allow(unsafe_code)]
mod chunk;
mod geometry;
#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;
use core::mem;
use core::task::{Context, Poll, Waker};

use smallvec::SmallVec;

use self::chunk::Chunk;
use self::geometry::Geometry;
use crate::sync::{
    Arc, AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering, fence, lock,
};
use crate::{Event, Failure, Position};

/// First chunk: 2^0 = 1 slot, so that a flight past its first item holds
/// one slot; they double from there.
const MIN_CHUNK_SHIFT: u32 = 0;
/// Largest chunk: 2^8 = 256 items. A reader locks once per chunk at most.
#[cfg(not(all(test, loom)))]
const MAX_CHUNK_SHIFT: u32 = 8;
/// Under loom, chunks of 1, then 2 items, so that small models cross chunks
/// both while they grow and once they are full size.
#[cfg(all(test, loom))]
const MAX_CHUNK_SHIFT: u32 = 1;

/// The state a reader adds to a flight, in bytes: its [`Reader`], its
/// cancellation cell and its waker slot in the history (measured with
/// `size_of`; a `Canceller`, when taken, is 16 more).
pub const BYTES_PER_READER: usize = mem::size_of::<Reader<(), ()>>()
    + mem::size_of::<ReaderCell>()
    + 2 * mem::size_of::<usize>() // the cell's Arc header
    + mem::size_of::<Slot>()
    + mem::size_of::<u32>(); // its entry in the parked list, at most one

/// How a flight ended, as published by [`History::close`]: the crate's one end type.
pub use crate::End;

/// One flight's append-only history, shared by all its readers.
///
/// There is exactly one writer (the flight's task), which calls
/// [`append`](History::append), [`extend`](History::extend) and
/// [`close`](History::close); appends never wait for a reader. Every
/// [`Reader`] made by [`subscribe`](History::subscribe) reads each item from
/// its cursor on, in order, with no gap and no duplicate ([R6](crate::design#r6)), then exactly one
/// end ([R14](crate::design#r14)).
///
/// ```
/// use std::task::{Context, Poll, Waker};
/// use streamflight_core::history::{End, History, Reader};
/// use streamflight_core::{Event, Position};
///
/// let history = History::<&str, ()>::new(None);
/// let mut early = history.subscribe(Position::Start);
/// history.append("a");
/// history.append("b");
/// let mut late = history.subscribe(Position::Tail);
/// history.append("c");
/// history.close(End::Done);
///
/// // What a reader yields until it would wait (a `Stream` in an adapter).
/// fn drain(reader: &mut Reader<&'static str, ()>) -> Vec<Event<&'static str, ()>> {
///     let mut cx = Context::from_waker(Waker::noop());
///     let mut events = Vec::new();
///     while let Poll::Ready(Some(event)) = reader.poll_next(&mut cx) {
///         events.push(event);
///     }
///     events
/// }
/// assert_eq!(drain(&mut early), [Event::Item("a"), Event::Item("b"), Event::Item("c"), Event::Done]);
/// assert_eq!(drain(&mut late), [Event::Item("c"), Event::Done]);
/// // Joining after the end replays what is retained, then the end.
/// let mut replay = history.subscribe(Position::Start);
/// assert_eq!(drain(&mut replay).len(), 4);
/// ```
pub struct History<T, E> {
    /// Items appended and published so far. Stored by the writer only (under
    /// `writer`), with `Release`, after the item's slot is written.
    len: AtomicU64,
    /// Set (under `state`) once the end is published; the final `len` is
    /// published before it.
    ended: AtomicBool,
    /// The start of the retained window: items released so far. Stored by
    /// the writer only (under `writer`), with `Release`, before `len`.
    released: AtomicU64,
    /// The retained window, in items (`u64::MAX` for unbounded).
    limit: u64,
    /// The chunks' sizes.
    geometry: Geometry,
    /// The writer's side; only the writer locks it.
    writer: Mutex<Writer<T>>,
    /// The retained chunks and the end.
    state: Mutex<State<T, E>>,
    /// Waker slots, shared with the [`Canceller`]s (which thus never keep the
    /// items alive).
    wakers: Arc<Wakers>,
}

struct Writer<T> {
    /// The chunk being filled.
    tail: Option<Chunk<T>>,
    /// Global index one past the oldest chunk still in `State::chunks`: it
    /// is released once that many items are.
    oldest_end: u64,
    /// Items written, published or not (`len` is the published count).
    written: u64,
    /// Items released, published or not (`History::released` is the published count).
    released: u64,
    /// How a weighed history weighs its items, and what they weigh: boxed, so that a history
    /// that weighs nothing pays one pointer for it.
    scale: Option<Box<Scale<T>>>,
    closed: bool,
}

/// Wakers to call after unlocking: room for one inline, as most flights
/// have one reader, so that they never allocate for it.
type Wakes = SmallVec<[Waker; 1]>;

/// What a weighed history keeps beside its items ([`Config::weigher`](crate::Config::weigher)).
struct Scale<T> {
    /// `None`: each item weighs `size_of::<T>()`, with no call.
    weigher: Option<fn(&T) -> usize>,
    /// The retained window, in bytes (`u128::MAX` for unbounded).
    max_bytes: u128,
    /// Whether a bound may release items: only then is each retained item's weight kept
    /// (weighed for the linger budget alone, a history keeps their sum).
    keeps_weights: bool,
    /// The weight of each item from `Writer::released` to `Writer::written`, oldest first.
    weights: VecDeque<u64>,
    /// What they weigh together.
    bytes: u128,
}

struct State<T, E> {
    /// The retained chunks, oldest first, numbered consecutively. Never
    /// empty once an item is appended (the tail is never released).
    chunks: VecDeque<Chunk<T>>,
    end: Option<End<E>>,
}

/// Every reader's waker slot, and the list of the parked ones.
struct Wakers {
    /// `table.parked.len()`, readable without the lock: the writer skips
    /// waking when it is 0.
    parked: AtomicUsize,
    /// Slots held (readers neither ended nor dropped), readable without the lock: see
    /// [`History::readers`].
    readers: AtomicUsize,
    table: Mutex<WakerTable>,
}

#[derive(Default)]
struct WakerTable {
    slots: Vec<Slot>,
    /// Free slot indices.
    free: Vec<u32>,
    /// Indices of slots with `listed` set, each once (a dropped reader's slot
    /// may stay listed until the next wake; it is then empty or reused).
    parked: Vec<u32>,
}

#[derive(Default)]
struct Slot {
    waker: Option<Waker>,
    /// Bumped whenever the slot is freed, so a stale canceller cannot wake
    /// the slot's next owner.
    generation: u32,
    listed: bool,
}

/// What a reader shares with its cancellers.
struct ReaderCell {
    state: AtomicU8,
    slot: u32,
    generation: u32,
}

const LIVE: u8 = 0;
const CANCELLED: u8 = 1;
/// Ended (yielded its end) or dropped: cancelling it is a no-op.
const GONE: u8 = 2;

impl<T, E> History<T, E> {
    /// A new, empty history. `limit` is the flight's `history_limit`
    /// ([`Config::max_history`](crate::Config::max_history)): past it the
    /// oldest items are released (`None`: unbounded; `Some(0)` counts as 1).
    pub fn new(limit: Option<usize>) -> Arc<Self> {
        Self::build(limit, None)
    }

    /// A new, empty history whose items are weighed as they are appended, by `weigher`
    /// (`None`: each weighs `size_of::<T>()`), bounded by `limit` items and `max_bytes`
    /// bytes: past either, the oldest items are released, though never the newest
    /// ([R15](crate::design#r15)). [`bytes`](History::bytes) tells what the retained items weigh.
    ///
    /// ```
    /// use streamflight_core::history::History;
    ///
    /// let history = History::<String, ()>::weighed(None, Some(10), Some(|s: &String| s.len()));
    /// history.extend(["abcd", "efgh"].map(String::from));
    /// assert_eq!((history.released(), history.bytes()), (0, 8));
    /// history.append("ijkl".to_string()); // 12 bytes > 10: the oldest item goes
    /// assert_eq!((history.released(), history.bytes()), (1, 8));
    /// history.append("a string of 24 bytes....".to_string()); // the newest stays, whatever it weighs
    /// assert_eq!((history.released(), history.bytes()), (3, 24));
    /// ```
    pub fn weighed(
        limit: Option<usize>,
        max_bytes: Option<usize>,
        weigher: Option<fn(&T) -> usize>,
    ) -> Arc<Self> {
        let max_bytes = max_bytes.map_or(u128::MAX, |n| n as u128);
        let keeps_weights = limit.is_some() || max_bytes != u128::MAX;
        let scale = Scale { weigher, max_bytes, keeps_weights, weights: VecDeque::new(), bytes: 0 };
        Self::build(limit, Some(Box::new(scale)))
    }

    fn build(limit: Option<usize>, scale: Option<Box<Scale<T>>>) -> Arc<Self> {
        let limit = limit.map_or(u64::MAX, |n| n.max(1) as u64);
        // Chunks at most half the window, so that at most `1.5 * limit` items
        // are ever retained.
        let max_shift = match limit {
            u64::MAX => MAX_CHUNK_SHIFT,
            n => (n / 2).max(1).ilog2().min(MAX_CHUNK_SHIFT),
        };
        let geometry = Geometry::new(MIN_CHUNK_SHIFT, max_shift);
        Arc::new(History {
            len: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            released: AtomicU64::new(0),
            limit,
            geometry,
            writer: Mutex::new(Writer {
                tail: None,
                oldest_end: geometry.start(1),
                written: 0,
                released: 0,
                scale,
                closed: false,
            }),
            state: Mutex::new(State { chunks: VecDeque::new(), end: None }),
            wakers: Arc::new(Wakers {
                parked: AtomicUsize::new(0),
                readers: AtomicUsize::new(0),
                table: Mutex::new(WakerTable::default()),
            }),
        })
    }

    /// Readers of this history that have neither yielded their end nor been dropped, as
    /// last counted: a hint (a relaxed load, which may lag a reader that has just come or
    /// gone), not something to synchronise on.
    pub(crate) fn readers(&self) -> usize {
        self.wakers.readers.load(Ordering::Relaxed)
    }

    /// Total number of items ever appended (released ones included).
    pub fn appended(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// Number of items released so far because of the bounds ([R15](crate::design#r15)):
    /// the index of the oldest retained item.
    pub fn released(&self) -> u64 {
        self.released.load(Ordering::Acquire)
    }

    /// What the retained items weigh, in bytes, items written and not yet published
    /// included: 0 for a history that is not [`weighed`](History::weighed). Saturates at
    /// `u64::MAX`.
    pub fn bytes(&self) -> u64 {
        let bytes = lock(&self.writer).scale.as_ref().map_or(0, |scale| scale.bytes);
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }

    /// The capacities of the first chunk and of the largest, for the reference model.
    #[cfg(all(feature = "testkit", not(loom)))]
    pub(crate) fn chunk_capacities(&self) -> (u64, u64) {
        (self.geometry.capacity(0) as u64, self.geometry.max_capacity() as u64)
    }

    /// Whether every reader's waker slot is free and holds no waker, for the reference model.
    #[cfg(all(feature = "testkit", not(loom)))]
    pub(crate) fn every_waker_slot_free(&self) -> bool {
        let table = lock(&self.wakers.table);
        table.free.len() == table.slots.len() && table.slots.iter().all(|slot| slot.waker.is_none())
    }

    /// Whether [`close`](History::close) was called.
    pub fn is_closed(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Publishes the flight's end: every reader yields its remaining items,
    /// then this end ([R7](crate::design#r7), [R8](crate::design#r8)). Returns `false`, changing nothing, if the
    /// history was already closed. Appends after it are ignored.
    pub fn close(&self, end: End<E>) -> bool {
        let mut writer = lock(&self.writer);
        if writer.closed {
            return false;
        }
        writer.closed = true;
        // Items written and not yet published come before the end.
        self.released.store(writer.released, Ordering::Release);
        self.len.store(writer.written, Ordering::Release);
        let tail = writer.tail.take();
        drop(writer);
        drop(tail);
        {
            let mut state = lock(&self.state);
            state.end = Some(end);
            self.ended.store(true, Ordering::Release);
        }
        let mut wake = Wakes::new();
        self.wakers.take_parked(&mut wake);
        wake.into_iter().for_each(Waker::wake);
        true
    }

    /// Makes a reader whose cursor is at item 0 ([`Position::Start`]: the
    /// whole history is replayed, [R3](crate::design#r3)/[R4](crate::design#r4)) or after the last item appended so
    /// far ([`Position::Tail`]). Subscribing after [`close`](History::close)
    /// works: the reader gets the retained items then the end. If items were
    /// already released, a `Start` reader ends at once with
    /// [`Failure::Lagged`].
    #[cfg(not(all(test, loom)))]
    pub fn subscribe(self: &Arc<Self>, from: Position) -> Reader<T, E> {
        Self::subscribe_to(self, from)
    }

    /// [`subscribe`](History::subscribe) without a method receiver (loom's
    /// `Arc` cannot be one).
    pub(crate) fn subscribe_to(this: &Arc<Self>, from: Position) -> Reader<T, E> {
        let (slot, generation) = {
            let mut table = lock(&this.wakers.table);
            let slot = match table.free.pop() {
                Some(slot) => slot,
                None => {
                    push_first_alone(&mut table.slots, Slot::default());
                    (table.slots.len() - 1) as u32
                }
            };
            this.wakers.readers.store(table.held(), Ordering::Relaxed);
            (slot, table.slots[slot as usize].generation)
        };
        let cursor = match from {
            Position::Start => 0,
            Position::Tail => this.len.load(Ordering::Acquire),
            // Past the items appended so far, the reader waits for them.
            Position::At(n) => n,
        };
        Reader {
            history: Arc::clone(this),
            cell: Arc::new(ReaderCell { state: AtomicU8::new(LIVE), slot, generation }),
            chunk: None,
            base: cursor,
            next: 0,
            batch_end: 0,
            finished: false,
        }
    }
}

impl<T: Send + Sync, E> History<T, E> {
    /// Appends one item; never blocks on or waits for a reader. Wakes the
    /// parked readers, if any. Ignored (the item is dropped) after
    /// [`close`](History::close). Only the flight's one writer calls it.
    pub fn append(&self, item: T) {
        self.extend(core::iter::once(item));
    }

    /// Appends every item of `items`, publishing them at once: one wake of
    /// the parked readers for the lot. Otherwise as [`append`](History::append).
    pub fn extend<I: IntoIterator<Item = T>>(&self, items: I) {
        let mut batch = self.batch();
        items.into_iter().for_each(|item| batch.push(item));
        drop(batch);
        self.publish();
    }

    /// Starts writing items in place, unseen by readers until
    /// [`publish`](History::publish): the writer fills a batch straight from
    /// its source, with no buffer of its own, and may act between writing and
    /// publishing (the driver tells the machine of a first release, [R15](crate::design#r15)).
    pub fn batch(&self) -> Batch<'_, T, E> {
        Batch { history: self, writer: lock(&self.writer), len: 0 }
    }

    /// Publishes every item written so far: readers see them, the parked
    /// ones are woken (once), and chunks out of the window are released.
    pub fn publish(&self) {
        if self.publish_unwoken() {
            self.wake();
        }
    }

    /// Publishes as [`publish`](History::publish) does, but wakes no parked reader: the writer
    /// calls [`wake`](History::wake) before it waits. A writer with many batches ready wakes
    /// its readers once for them all, not once per batch, so that readers on other threads do
    /// not park and wake again for each batch, all at the same item (issue 26). Readers still
    /// running see every published item at once. Returns whether anything new was published.
    pub fn publish_unwoken(&self) -> bool {
        let mut writer = lock(&self.writer);
        let len = writer.written;
        if len == self.len.load(Ordering::Relaxed) {
            return false;
        }
        // The window's start first: a reader that sees the new length sees it too.
        self.released.store(writer.released, Ordering::Release);
        self.len.store(len, Ordering::Release);

        // Release the chunks wholly out of the window. The window's start is
        // published first, so a reader holding `state` after this sees it.
        let released = writer.released;
        let mut popped = Vec::new();
        if released >= writer.oldest_end {
            let mut state = lock(&self.state);
            while let Some(chunk) = state.chunks.front() {
                writer.oldest_end = self.geometry.start(chunk.number() + 1);
                if writer.oldest_end > released {
                    break;
                }
                popped.extend(state.chunks.pop_front());
            }
        }
        drop(writer);
        drop(popped);
        true
    }

    /// Wakes the readers parked since the last wake: after
    /// [`publish_unwoken`](History::publish_unwoken), before the writer waits.
    pub fn wake(&self) {
        // Pairs with the fence in `Reader::poll_slow`: either we see its parked
        // hint, or it sees every length published before this call.
        fence(Ordering::SeqCst);
        if self.wakers.parked.load(Ordering::Relaxed) == 0 {
            return;
        }
        // Once per writer's poll, not per batch: no buffer kept for it (one waker is inline).
        let mut wake = Wakes::new();
        self.wakers.take_parked(&mut wake);
        wake.into_iter().for_each(Waker::wake);
    }
}

/// Items being written into a [`History`] in place by its one writer, not yet
/// published: see [`History::batch`]. Dropping it leaves them written, for
/// the next [`publish`](History::publish) (or [`close`](History::close)).
pub struct Batch<'a, T, E> {
    history: &'a History<T, E>,
    writer: MutexGuard<'a, Writer<T>>,
    len: usize,
}

impl<T: Send + Sync, E> Batch<'_, T, E> {
    /// Writes `item` after the last one written. Ignored (the item is
    /// dropped) after [`close`](History::close).
    #[inline]
    pub fn push(&mut self, item: T) {
        let writer = &mut *self.writer;
        if writer.closed {
            return;
        }
        // Weighed before it is moved into its slot; an unweighed history pays one branch.
        let weight = writer.scale.as_ref().map(|scale| scale.weigh(&item));
        let tail = match &writer.tail {
            Some(tail) if !tail.is_full() => tail,
            full_or_none => {
                let number = full_or_none.as_ref().map_or(0, |tail| tail.number() + 1);
                let geometry = &self.history.geometry;
                debug_assert_eq!(geometry.start(number), writer.written);
                let chunk = Chunk::new(number, geometry.capacity(number));
                let mut state = lock(&self.history.state);
                // Room for one chunk first: a short history has one.
                if state.chunks.capacity() == 0 {
                    state.chunks.reserve_exact(1);
                }
                state.chunks.push_back(chunk.clone());
                drop(state);
                // The old tail stays alive through the table or its readers.
                writer.tail.insert(chunk)
            }
        };
        // SAFETY: we are the only writer (writer lock held), and `len` covers
        // only slots written before it is stored (`History::publish`).
        #[allow(unsafe_code)]
        unsafe {
            tail.push(item)
        };
        writer.written += 1;
        self.len += 1;
        if let (Some(scale), Some(weight)) = (&mut writer.scale, weight) {
            scale.add(weight);
        }
        writer.trim(self.history.limit);
    }

    /// Whether publishing what was written releases the first item ([R15](crate::design#r15)):
    /// true for exactly one publication of a bounded history. The driver asks this between
    /// writing a batch and publishing it, to tell the machine first (`handle_truncated`), so
    /// that no late join is admitted onto a released item.
    pub fn releases_first(&self) -> bool {
        self.writer.released > 0 && self.history.released.load(Ordering::Relaxed) == 0
    }

    /// Items written through this batch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written through this batch.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T, E> fmt::Debug for Batch<'_, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch").field("len", &self.len).finish_non_exhaustive()
    }
}

impl<T> Writer<T> {
    /// Moves the window's start past the oldest items until the rest fit both bounds; the
    /// newest item always stays. Unweighed, one comparison.
    #[inline(always)]
    fn trim(&mut self, limit: u64) {
        while self.written - self.released > limit {
            self.release_oldest();
        }
        while self.scale.as_ref().is_some_and(|scale| scale.bytes > scale.max_bytes)
            && self.written - self.released > 1
        {
            self.release_oldest();
        }
    }

    fn release_oldest(&mut self) {
        self.released += 1;
        if let Some(scale) = &mut self.scale {
            scale.remove_oldest();
        }
    }
}

impl<T> Scale<T> {
    /// What `item` weighs.
    #[inline]
    fn weigh(&self, item: &T) -> u64 {
        match self.weigher {
            None => crate::weigh::default_weight::<T>() as u64,
            Some(weigh) => weigh(item) as u64,
        }
    }

    /// One more item, weighing `weight`, is retained.
    fn add(&mut self, weight: u64) {
        if self.keeps_weights {
            self.weights.push_back(weight);
        }
        self.bytes += u128::from(weight);
    }

    /// The oldest retained item is released.
    fn remove_oldest(&mut self) {
        if let Some(weight) = self.weights.pop_front() {
            self.bytes -= u128::from(weight);
        }
    }
}

/// Pushes `value`, allocating room for it alone if `vec` has none: most
/// flights have one reader, and a flight's memory is what it allocates. Later
/// pushes grow it as usual.
fn push_first_alone<V>(vec: &mut Vec<V>, value: V) {
    if vec.capacity() == 0 {
        vec.reserve_exact(1);
    }
    vec.push(value);
}

impl Wakers {
    /// Moves every parked waker into `out` (to be woken after unlocking).
    fn take_parked(&self, out: &mut Wakes) {
        let mut guard = lock(&self.table);
        let table = &mut *guard;
        for index in table.parked.drain(..) {
            let slot = &mut table.slots[index as usize];
            slot.listed = false;
            out.extend(slot.waker.take());
        }
        self.parked.store(0, Ordering::Relaxed);
    }

    /// Frees a reader's slot; returns its waker, to drop after unlocking.
    fn release(&self, index: u32) -> Option<Waker> {
        let mut table = lock(&self.table);
        let slot = &mut table.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        let waker = slot.waker.take();
        table.free.push(index);
        self.readers.store(table.held(), Ordering::Relaxed);
        waker
    }
}

impl WakerTable {
    /// Slots held by a reader.
    fn held(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

impl<T, E> fmt::Debug for History<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("History")
            .field("appended", &self.appended())
            .field("released", &self.released())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// One subscriber's cursor into a [`History`].
///
/// [`poll_next`](Reader::poll_next) yields every item from the cursor on, in
/// order, then exactly one end, then `None` forever ([R6](crate::design#r6), [R14](crate::design#r14)). It is a
/// `Stream` in all but name: adapters wrap it. Dropping it frees its waker
/// slot ([R16](crate::design#r16)); it is `Send` and `Unpin` when `T: Send + Sync` and `E: Send`.
pub struct Reader<T, E> {
    history: Arc<History<T, E>>,
    cell: Arc<ReaderCell>,
    /// The chunk holding the current batch: its slots `next..batch_end`.
    chunk: Option<Chunk<T>>,
    /// Global index of `chunk`'s first slot; the cursor is `base + next`.
    base: u64,
    /// Offset in `chunk` of the next item to yield.
    next: u32,
    /// End of the current batch (exclusive offset): published slots only.
    batch_end: u32,
    finished: bool,
}

impl<T: Clone, E> Reader<T, E> {
    /// The next event: `Ready(Some(Item))` while items are available (read
    /// as a batch: no lock, no shared write per item), `Pending` with the
    /// waker parked when the reader has caught up, then exactly one end event
    /// (`Done`, `Failed` or `Cancelled`), then `Ready(None)` forever.
    ///
    /// A cancel (see [`canceller`](Reader::canceller)) wins over every item
    /// not yet yielded ([R10](crate::design#r10), [R13](crate::design#r13)). A reader that fell out of the retained
    /// window ends with `Failed(Lagged { missed })`, `missed` counting the
    /// released items it had not taken into a batch ([R15](crate::design#r15)).
    #[inline]
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event<T, E>>> {
        // The per-item path: one comparison, one load of the cancel state,
        // one clone. A finished reader has an empty batch (`finish`), so it
        // takes the slow path too.
        if self.next < self.batch_end
            && let Some(chunk) = &self.chunk
            && self.cell.state.load(Ordering::Acquire) != CANCELLED
        {
            // SAFETY: `next < batch_end`, and `base + batch_end` never exceeds a length this
            // reader loaded with `Acquire` (`next_batch`), so the slot is
            // published; `batch_end` never exceeds the chunk's capacity.
            #[allow(unsafe_code)]
            let item = unsafe { chunk.get(self.next as usize) };
            self.next += 1;
            return Poll::Ready(Some(Event::Item(item)));
        }
        self.poll_slow(cx)
    }

    #[cold]
    fn cancelled(&mut self) -> Poll<Option<Event<T, E>>> {
        Poll::Ready(Some(self.finish(Event::Cancelled)))
    }

    #[inline(always)]
    fn next_in_batch(&mut self) -> Option<T> {
        let chunk = self.chunk.as_ref()?;
        if self.next >= self.batch_end {
            return None;
        }
        // SAFETY: `next < batch_end`, and `base + batch_end` never exceeds a length this
        // reader loaded with `Acquire` (`next_batch`), so the slot is published.
        #[allow(unsafe_code)]
        let item = unsafe { chunk.get(self.next as usize) };
        self.next += 1;
        Some(item)
    }

    /// The batch is exhausted: take the next one, or the end, or park.
    #[cold]
    fn poll_slow(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event<T, E>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if self.cell.state.load(Ordering::Acquire) == CANCELLED {
            return self.cancelled();
        }
        let history = &*self.history;
        let mut parked = false;
        loop {
            // `ended` before `len`: if the end is seen, so is the final length.
            let ended = history.ended.load(Ordering::Acquire);
            let len = history.len.load(Ordering::Acquire);
            if self.cursor() < len {
                return Poll::Ready(Some(self.next_batch(len)));
            }
            if ended {
                let end = lock(&history.state).end.as_ref().map_or(Event::Done, End::event);
                return Poll::Ready(Some(self.finish(end)));
            }
            if parked {
                return Poll::Pending;
            }
            // Park, then look again: the writer's fence pairs with ours.
            {
                let mut guard = lock(&history.wakers.table);
                let table = &mut *guard;
                let slot = &mut table.slots[self.cell.slot as usize];
                match &slot.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => slot.waker = Some(cx.waker().clone()),
                }
                if !slot.listed {
                    slot.listed = true;
                    push_first_alone(&mut table.parked, self.cell.slot);
                    history.wakers.parked.store(table.parked.len(), Ordering::Relaxed);
                }
                // A cancel that missed our waker is seen here (it stored
                // before locking the table).
                if self.cell.state.load(Ordering::Acquire) == CANCELLED {
                    drop(guard);
                    return Poll::Ready(Some(self.finish(Event::Cancelled)));
                }
            }
            fence(Ordering::SeqCst);
            parked = true;
        }
    }

    /// Starts a batch at the cursor (`cursor < len`) and yields its first
    /// item, or ends the reader if it fell out of the window.
    fn next_batch(&mut self, len: u64) -> Event<T, E> {
        let history = &*self.history;
        let cursor = self.cursor();
        let released = history.released.load(Ordering::Acquire);
        if cursor < released {
            return self.lagged(released);
        }
        let (number, start) = history.geometry.locate(cursor);
        let mut len = len;
        if self.chunk.as_ref().is_none_or(|chunk| chunk.number() != number) {
            let state = lock(&history.state);
            // Look again under the lock: the writer may have released our
            // chunk since, but only after publishing a length that shows it.
            len = history.len.load(Ordering::Acquire);
            let released = history.released.load(Ordering::Acquire);
            if cursor < released {
                drop(state);
                return self.lagged(released);
            }
            // Chunks are numbered consecutively from the oldest retained one.
            let first = state.chunks.front().map_or(0, Chunk::number);
            let chunk = state.chunks.get((number - first) as usize).cloned();
            drop(state);
            // The old chunk, if this was its last reader, drops here, unlocked.
            self.chunk = chunk;
            self.base = start;
        }
        let capacity = history.geometry.capacity(number) as u64;
        // Offsets within a chunk: at most its capacity, 256.
        self.next = (cursor - self.base) as u32;
        self.batch_end = (len.min(self.base + capacity) - self.base) as u32;
        match self.next_in_batch() {
            Some(item) => Event::Item(item),
            // Unreachable by the invariants above (the chunk holding a
            // published, retained item is in the table); stay safe anyway.
            None => self.lagged(released.max(cursor + 1)),
        }
    }

    fn lagged(&mut self, released: u64) -> Event<T, E> {
        let missed = released - self.cursor();
        self.finish(Event::Failed(Failure::Lagged { missed }))
    }

    /// Ends the reader with `end`, or with `Cancelled` if a cancel got in
    /// first (the cell's state decides: one end, [R14](crate::design#r14)).
    fn finish(&mut self, end: Event<T, E>) -> Event<T, E> {
        let end = match self.cell.state.compare_exchange(LIVE, GONE, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => end,
            Err(_) => {
                self.cell.state.store(GONE, Ordering::Release);
                Event::Cancelled
            }
        };
        self.finished = true;
        self.base = self.cursor();
        (self.next, self.batch_end) = (0, 0);
        self.chunk = None;
        drop(self.history.wakers.release(self.cell.slot));
        end
    }
}

impl<T, E> Reader<T, E> {
    /// A handle that ends this reader alone with [`Event::Cancelled`].
    pub fn canceller(&self) -> Canceller {
        Canceller { wakers: Arc::clone(&self.history.wakers), cell: Arc::clone(&self.cell) }
    }

    /// Global index of the next item this reader will yield.
    pub fn position(&self) -> u64 {
        self.cursor()
    }

    fn cursor(&self) -> u64 {
        self.base + self.next as u64
    }

    /// The history this reader reads.
    pub fn history(&self) -> &Arc<History<T, E>> {
        &self.history
    }
}

impl<T, E> Drop for Reader<T, E> {
    fn drop(&mut self) {
        if !self.finished {
            self.cell.state.store(GONE, Ordering::Release);
            drop(self.history.wakers.release(self.cell.slot));
        }
    }
}

impl<T, E> fmt::Debug for Reader<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("position", &self.cursor())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// Ends one [`Reader`] alone with [`Event::Cancelled`] ([R10](crate::design#r10), [R13](crate::design#r13)); cheap to
/// clone and to send. It keeps no item alive.
#[derive(Clone)]
pub struct Canceller {
    wakers: Arc<Wakers>,
    cell: Arc<ReaderCell>,
}

impl Canceller {
    /// Cancels the reader: once this returns `true`, its next event is
    /// `Cancelled` (ahead of any item it has not yielded), then `None`; it is
    /// woken. Returns `false`, changing nothing, if the reader already
    /// yielded its end, was cancelled, or was dropped. Other readers are
    /// untouched.
    pub fn cancel(&self) -> bool {
        let cell = &*self.cell;
        if cell.state.compare_exchange(LIVE, CANCELLED, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return false;
        }
        let waker = {
            let mut table = lock(&self.wakers.table);
            let slot = &mut table.slots[cell.slot as usize];
            if slot.generation == cell.generation { slot.waker.take() } else { None }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }
}

impl fmt::Debug for Canceller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Canceller").finish_non_exhaustive()
    }
}
