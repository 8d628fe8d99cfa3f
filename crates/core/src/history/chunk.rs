//! One block of history slots, written once each by the single writer and then
//! only read, shared through counted handles by the history and its readers.
//!
//! This is the only `unsafe` of the crate. A chunk is one allocation: a header
//! (reference count, written count, number, capacity) followed by its slots,
//! so a chunk costs one `malloc` and a handle is one pointer. Two contracts:
//!
//! - Publication (single producer): the writer fills the slots in order
//!   ([`Chunk::push`]) and only then publishes them (a `Release` store of the
//!   history's length, made by the caller); a reader touches a slot only after
//!   an `Acquire` load of a length covering it. A filled slot is never written
//!   again.
//! - Ownership (as `Arc`'s): every [`Chunk`] handle counts one reference; the
//!   handle that drops the count to zero drops the written items and frees the
//!   allocation, after an `Acquire` fence that orders it after every other
//!   handle's use (each decrement is a `Release`).

use alloc::alloc::{alloc, dealloc, handle_alloc_error};
use core::alloc::Layout;
use core::mem::MaybeUninit;
use core::ptr::{self, NonNull};

use crate::sync::{AtomicUsize, Ordering, UnsafeCell, fence};

type Slot<T> = UnsafeCell<MaybeUninit<T>>;

/// What precedes the slots in a chunk's allocation.
#[repr(C)]
struct Header<T> {
    /// Live [`Chunk`] handles.
    refs: AtomicUsize,
    /// How many leading slots are initialised: stored by the writer only
    /// (which alone reads it back), read by the last handle's drop (ordered
    /// by `refs`), hence `Relaxed`.
    written: AtomicUsize,
    /// Which chunk of the history this is.
    number: u64,
    capacity: usize,
    /// Where the slots start (`capacity` of them follow in the allocation);
    /// only ever reached through the allocation's own pointer, never a
    /// reference to the header (which covers no slot).
    slots: [Slot<T>; 0],
}

/// A counted handle to one chunk (clone: one more reference, as `Arc`).
pub(super) struct Chunk<T> {
    header: NonNull<Header<T>>,
}

// SAFETY: a chunk hands out `&T` (to clone) to readers on any thread, so it is
// `Sync` only if `T` is; the last handle drops `T`s on whatever thread it is
// on, so both impls also need `T: Send`. The reference count is atomic, and
// the slots are synchronised by the publication contract in the module doc.
unsafe impl<T: Send + Sync> Send for Chunk<T> {}
// SAFETY: see above.
unsafe impl<T: Send + Sync> Sync for Chunk<T> {}

impl<T> Chunk<T> {
    /// An empty chunk of `capacity` slots, in one allocation.
    pub(super) fn new(number: u64, capacity: usize) -> Self {
        let layout = Self::layout(capacity);
        // SAFETY: the layout is never zero-sized (the header is not).
        let raw = unsafe { alloc(layout) }.cast::<Header<T>>();
        let Some(header) = NonNull::new(raw) else { handle_alloc_error(layout) };
        // SAFETY: `raw` is a fresh allocation of `layout`, aligned for
        // `Header<T>` and large enough for it and `capacity` slots after it
        // (`layout` and the `slots` field agree, see `layout`); each write
        // initialises memory nothing else can see yet.
        unsafe {
            raw.write(Header {
                refs: AtomicUsize::new(1),
                written: AtomicUsize::new(0),
                number,
                capacity,
                slots: [],
            });
            let slots = (&raw mut (*raw).slots).cast::<Slot<T>>();
            for offset in 0..capacity {
                // An uninitialised item: this writes nothing outside loom,
                // where the cell is what tracks the slot's accesses.
                slots.add(offset).write(UnsafeCell::new(MaybeUninit::uninit()));
            }
        }
        Chunk { header }
    }

    /// The allocation of a chunk of `capacity` slots.
    fn layout(capacity: usize) -> Layout {
        // A `&Header<T>` must cover no slot byte (slots are written while
        // headers are read): no padding after the `slots` field.
        const { assert!(core::mem::size_of::<Header<T>>() == core::mem::offset_of!(Header<T>, slots)) };
        let slots = Layout::array::<Slot<T>>(capacity).expect("a chunk's size fits in isize");
        let (layout, offset) =
            Layout::new::<Header<T>>().extend(slots).expect("a chunk's size fits in isize");
        // The slots start where the header's zero-length `slots` field does:
        // `repr(C)` puts it after the header's fields, aligned for a slot.
        debug_assert_eq!(offset, core::mem::offset_of!(Header<T>, slots));
        layout.pad_to_align()
    }

    fn header(&self) -> &Header<T> {
        // SAFETY: the allocation lives as long as any handle (this one), and
        // its header is initialised and only mutated through atomics.
        unsafe { self.header.as_ref() }
    }

    /// Which chunk of its history this is.
    pub(super) fn number(&self) -> u64 {
        self.header().number
    }

    /// How many slots it has.
    pub(super) fn capacity(&self) -> usize {
        self.header().capacity
    }

    /// The slot at `offset`, which must be below the capacity.
    #[inline(always)]
    fn slot(&self, offset: usize) -> &Slot<T> {
        debug_assert!(offset < self.capacity());
        // SAFETY: the pointer is the allocation's own (its provenance covers
        // the slots); `offset < capacity` keeps it within them; every slot
        // was initialised as a cell in `new` and lives until the last drop.
        unsafe { &*(&raw const (*self.header.as_ptr()).slots).cast::<Slot<T>>().add(offset) }
    }

    /// Whether every slot is filled.
    pub(super) fn is_full(&self) -> bool {
        self.header().written.load(Ordering::Relaxed) == self.capacity()
    }

    /// Fills the next slot with `item`.
    ///
    /// # Safety
    /// Only the history's writer calls this, under its writer lock, and then
    /// publishes the slot; until it does, no reader looks at it.
    pub(super) unsafe fn push(&self, item: T) {
        let header = self.header();
        let offset = header.written.load(Ordering::Relaxed);
        assert!(offset < header.capacity, "push into a full chunk");
        self.slot(offset).with_mut(|slot| {
            // SAFETY: exclusive access per the contract above: a slot past
            // `written` is neither filled nor published.
            unsafe { (*slot).write(item) };
        });
        header.written.store(offset + 1, Ordering::Relaxed);
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
        self.slot(offset).with(|slot| {
            // SAFETY: initialised and never written again (contract above);
            // shared access only, and `T: Sync` for cross-thread reads.
            unsafe { (*slot).assume_init_ref().clone() }
        })
    }
}

impl<T> Clone for Chunk<T> {
    fn clone(&self) -> Self {
        // Relaxed as in `Arc`: a new handle is made from an existing one,
        // which already keeps the allocation alive.
        let old = self.header().refs.fetch_add(1, Ordering::Relaxed);
        // Each handle is at least a pointer in memory, so this is a leak of
        // handles on a massive scale; stop rather than wrap the count.
        if old > isize::MAX as usize {
            std::process::abort();
        }
        Chunk { header: self.header }
    }
}

impl<T> Drop for Chunk<T> {
    fn drop(&mut self) {
        if self.header().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Pairs with every other handle's `Release` decrement: their uses of
        // the chunk (and the writer's writes) happen before what follows.
        fence(Ordering::Acquire);
        let raw = self.header.as_ptr();
        // SAFETY: this was the last handle, so nothing else can reach the
        // allocation: the first `written` slots hold items, every slot and
        // the header were initialised in `new`, and the layout is `new`'s.
        // (An item whose drop panics leaks the rest of the chunk: never unsound.)
        unsafe {
            let capacity = (*raw).capacity;
            let written = (*raw).written.load(Ordering::Relaxed);
            let slots = (&raw mut (*raw).slots).cast::<Slot<T>>();
            for offset in 0..written {
                (*slots.add(offset)).with_mut(|slot| (*slot).assume_init_drop());
            }
            // The cells and the header's atomics (no-ops outside loom).
            ptr::drop_in_place(ptr::slice_from_raw_parts_mut(slots, capacity));
            ptr::drop_in_place(raw);
            dealloc(raw.cast(), Self::layout(capacity));
        }
    }
}
