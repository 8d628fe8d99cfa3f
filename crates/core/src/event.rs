//! What a subscription yields: items, then exactly one end (R14).
//! Shared by the machine (which decides ends) and the history (which delivers them).

use core::fmt;

/// One event of a subscription: items, then exactly one of `Done`, `Failed`
/// or `Cancelled` (rule R14), after which the stream yields `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<T, E> {
    /// One item of the upstream, in upstream order (R6).
    Item(T),
    /// The upstream finished; every item before it was delivered (R7).
    Done,
    /// Preparation or the upstream failed, or this subscriber lagged (R5, R8, R9, R15).
    Failed(Failure<E>),
    /// This request was cancelled or was the last one out (R10, R11).
    Cancelled,
}

impl<T, E> Event<T, E> {
    /// Whether this is an end event (anything but an item).
    pub fn is_end(&self) -> bool {
        !matches!(self, Event::Item(_))
    }
}

/// Why a request ended with [`Event::Failed`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure<E> {
    /// Preparation or the upstream returned `Err(e)` (R5, R8).
    Upstream(E),
    /// Preparation or the upstream panicked (R9).
    Panicked,
    /// The flight could not start: `request` was called outside the adapter's
    /// runtime, so there was nowhere to run the leader's task.
    NoRuntime,
    /// The subscriber fell out of the retained history (R15); `missed` is the
    /// number of released items it had not read.
    Lagged {
        /// Items released before this subscriber could read them.
        missed: u64,
    },
}

impl<E: fmt::Display> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Upstream(e) => write!(f, "upstream failed: {e}"),
            Failure::Panicked => f.write_str("upstream panicked"),
            Failure::NoRuntime => f.write_str("no runtime to run the flight on"),
            Failure::Lagged { missed } => write!(f, "lagged behind the history by {missed} items"),
        }
    }
}

#[cfg(feature = "std")]
impl<E: fmt::Debug + fmt::Display> std::error::Error for Failure<E> {}
