//! Bounds in bytes: the weigher a [`Config`](crate::Config) carries for any item type, and what
//! an item weighs when no weigher is set.

use alloc::sync::Arc;
use core::any::{Any, TypeId, type_name};
use core::fmt;

/// What one item weighs, in bytes, for the bounds in bytes
/// ([`Config::weigher`](crate::Config::weigher)). Called once per item, as it is appended.
pub type Weigher<T> = fn(&T) -> usize;

/// The weigher of a [`Config`](crate::Config), its item type erased: the config is not generic
/// over the item type, so the manager takes the function back out, typed, once when it is built.
#[derive(Clone)]
pub(crate) struct Erased {
    /// A `fn(&T) -> usize`, boxed once per config (not per item).
    weigh: Arc<dyn Any + Send + Sync>,
    item: TypeId,
    item_name: &'static str,
}

impl Erased {
    /// Erases `weigh`'s item type.
    pub(crate) fn new<T: 'static>(weigh: fn(&T) -> usize) -> Self {
        Erased { weigh: Arc::new(weigh), item: TypeId::of::<T>(), item_name: type_name::<T>() }
    }

    /// The function back, if it weighs `T`s; else the name of the type it weighs.
    pub(crate) fn typed<T: 'static>(&self) -> Result<Weigher<T>, &'static str> {
        match self.weigh.downcast_ref::<fn(&T) -> usize>() {
            Some(&weigh) if self.item == TypeId::of::<T>() => Ok(weigh),
            _ => Err(self.item_name),
        }
    }
}

impl PartialEq for Erased {
    /// The same weigher: set once and cloned with its config (function pointers
    /// themselves have no reliable equality).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.weigh, &other.weigh)
    }
}

impl Eq for Erased {}

impl fmt::Debug for Erased {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Weigher(fn(&{}) -> usize)", self.item_name)
    }
}

/// What an item weighs without a weigher: its own size, a constant, so that an unweighed bound
/// costs no call per item.
#[cfg(feature = "std")]
pub(crate) const fn default_weight<T>() -> usize {
    core::mem::size_of::<T>()
}
