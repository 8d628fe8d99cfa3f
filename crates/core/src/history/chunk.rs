//! A fixed-size block of history slots, written once each by the single
//! writer and then only read, shared by `Arc` between the history and readers.
//!
//! This is the only `unsafe` of the history. The contract is the classic
//! single-producer publication one: the writer initialises slot `i` and only
//! then publishes it (a `Release` store of the history's length, made by the
//! caller); a reader touches slot `i` only after an `Acquire` load of a length
//! greater than its global index. A published slot is never written again; it
//! is dropped with the chunk, when the last `Arc` to it goes.

use core::mem::MaybeUninit;

use crate::sync::{AtomicUsize, Ordering, UnsafeCell};

pub(super) struct Chunk<T> {
    /// Which chunk of the history this is: it holds the items with global
    /// indices `number << shift ..` (the shift lives in the history).
    pub(super) number: u64,
    /// How many leading slots are initialised; written by the writer only,
    /// read by `Drop` (after every other `Arc` is gone).
    written: AtomicUsize,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: a chunk hands out `&T` (to clone) to readers on any thread, so it
// is `Sync` only if `T` is; it moves and drops `T`s across threads, so both
// impls also need `T: Send`. The slots themselves are synchronised by the
// publication protocol described in the module doc.
unsafe impl<T: Send + Sync> Send for Chunk<T> {}
// SAFETY: see above.
unsafe impl<T: Send + Sync> Sync for Chunk<T> {}

impl<T> Chunk<T> {
    /// An empty chunk of `capacity` slots.
    pub(super) fn new(number: u64, capacity: usize) -> Self {
        Chunk {
            number,
            written: AtomicUsize::new(0),
            slots: (0..capacity).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect(),
        }
    }

    /// Initialises slot `offset` with `item`.
    ///
    /// # Safety
    /// Only the history's writer calls this, under its writer lock, once per
    /// slot, in increasing `offset` order, and before the slot is published
    /// (so no reader can be looking at it).
    pub(super) unsafe fn write(&self, offset: usize, item: T) {
        self.slots[offset].with_mut(|slot| {
            // SAFETY: exclusive access per the contract above.
            unsafe { (*slot).write(item) };
        });
        self.written.store(offset + 1, Ordering::Release);
    }

    /// A clone of the item in slot `offset`.
    ///
    /// # Safety
    /// Slot `offset` was published to the caller: it observed, with `Acquire`,
    /// a history length covering it, after the writer's `Release` store (so
    /// `offset` is also below the chunk's capacity).
    #[inline(always)]
    pub(super) unsafe fn get(&self, offset: usize) -> T
    where
        T: Clone,
    {
        debug_assert!(offset < self.slots.len());
        // SAFETY: a published slot is within the chunk (the caller's batch
        // never extends past the chunk's capacity).
        let slot = unsafe { self.slots.get_unchecked(offset) };
        slot.with(|slot| {
            // SAFETY: initialised and never written again (contract above);
            // shared access only, and `T: Sync` for cross-thread reads.
            unsafe { (*slot).assume_init_ref().clone() }
        })
    }
}

impl<T> Drop for Chunk<T> {
    fn drop(&mut self) {
        let written = self.written.load(Ordering::Acquire);
        for slot in &self.slots[..written] {
            slot.with_mut(|slot| {
                // SAFETY: the first `written` slots are initialised, and we
                // are the last owner of the chunk (`&mut self`).
                unsafe { (*slot).assume_init_drop() };
            });
        }
    }
}
