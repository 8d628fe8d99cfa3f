//! What the driver keeps per flight and per request, by the slot of the machine's id.
//! The machine says which ids are live; a table by slot costs a third of a map by id.

use std::vec::Vec;

/// Values by id slot. The caller stores only for ids the machine holds live
/// and takes them out when the machine lets the id go, so a slot never holds
/// a stale id's value.
pub(super) struct Slots<V> {
    values: Vec<Option<V>>,
    len: usize,
}

impl<V> Slots<V> {
    /// An empty table.
    pub(super) const fn new() -> Self {
        Slots { values: Vec::new(), len: 0 }
    }

    /// Stores `value` at `slot`, which must be empty.
    pub(super) fn insert(&mut self, slot: u32, value: V) {
        let slot = slot as usize;
        if slot >= self.values.len() {
            self.values.resize_with(slot + 1, || None);
        }
        let previous = self.values[slot].replace(value);
        debug_assert!(previous.is_none(), "a live id's slot held a value already");
        self.len += usize::from(previous.is_none());
    }

    /// The value at `slot`.
    pub(super) fn get(&self, slot: u32) -> Option<&V> {
        self.values.get(slot as usize)?.as_ref()
    }

    /// The value at `slot`, to change.
    pub(super) fn get_mut(&mut self, slot: u32) -> Option<&mut V> {
        self.values.get_mut(slot as usize)?.as_mut()
    }

    /// Takes the value at `slot` out.
    pub(super) fn take(&mut self, slot: u32) -> Option<V> {
        let value = self.values.get_mut(slot as usize)?.take();
        self.len -= usize::from(value.is_some());
        value
    }

    /// Whether no slot holds a value.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }
}
