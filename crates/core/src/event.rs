//! What a subscription yields (items, then exactly one end, R14) and how a flight ends.
//! A flight's [`End`] travels unchanged from its task through its history to each subscriber.

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
    /// The flight had no runtime to run on: `request` was called outside the
    /// adapter's runtime, or the runtime dropped the flight's task (it shut
    /// down) before the flight ended.
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

/// How a flight ended: exactly the ends a flight can have, and nothing a
/// single subscriber can cause (a cancel or a lag is that subscriber's own end,
/// never its flight's). An aborted flight has no end: nobody is left to tell.
///
/// The flight's task reports it, the history publishes it, and every
/// subscriber turns it into its end [`Event`] with [`End::event`], the one
/// place where a flight's end becomes an event.
///
/// ```
/// use streamflight_core::{End, Event, Failure};
///
/// assert_eq!(End::<&str>::Done.event::<u32>(), Event::Done);
/// assert_eq!(End::Upstream("503").event::<u32>(), Event::Failed(Failure::Upstream("503")));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End<E> {
    /// The upstream finished (R7).
    Done,
    /// Preparation or the upstream returned `Err(e)` (R5, R8).
    Upstream(E),
    /// Preparation or the upstream panicked (R9).
    Panicked,
    /// There was no runtime to run the flight on (see [`Failure::NoRuntime`]).
    NoRuntime,
}

impl<E: Clone> End<E> {
    /// The end event a subscriber yields for this end.
    pub fn event<T>(&self) -> Event<T, E> {
        match self {
            End::Done => Event::Done,
            End::Upstream(e) => Event::Failed(Failure::Upstream(e.clone())),
            End::Panicked => Event::Failed(Failure::Panicked),
            End::NoRuntime => Event::Failed(Failure::NoRuntime),
        }
    }
}
