//! What a subscription yields (items, then exactly one end, [R14](crate::design#r14)) and how a flight ends.
//! A flight's [`End`] travels unchanged from its task through its history to each subscriber.

use alloc::sync::Arc;
use core::fmt;

/// One event of a subscription: items, then exactly one of `Done`, `Failed`
/// or `Cancelled` (rule [R14](crate::design#r14)), after which the stream yields `None`.
///
/// axum has an `Event` too (`axum::response::sse::Event`): import this one
/// under the crate's name (`streamflight_tokio::Event as FlightEvent`) or
/// name it by path.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<T, E> {
    /// One item of the upstream, in upstream order ([R6](crate::design#r6)).
    Item(T),
    /// The upstream finished; every item before it was delivered ([R7](crate::design#r7)).
    Done,
    /// Preparation or the upstream failed, or this subscriber lagged ([R5](crate::design#r5), [R8](crate::design#r8), [R9](crate::design#r9), [R15](crate::design#r15)).
    Failed(Failure<E>),
    /// This request was cancelled or was the last one out ([R10](crate::design#r10), [R11](crate::design#r11)).
    Cancelled,
}

// By hand: an event is `Clone` when its item is, whatever the error (shared).
impl<T: Clone, E> Clone for Event<T, E> {
    fn clone(&self) -> Self {
        match self {
            Event::Item(item) => Event::Item(item.clone()),
            Event::Done => Event::Done,
            Event::Failed(failure) => Event::Failed(failure.clone()),
            Event::Cancelled => Event::Cancelled,
        }
    }
}

impl<T, E> Event<T, E> {
    /// Whether this is an end event (anything but an item).
    pub fn is_end(&self) -> bool {
        !matches!(self, Event::Item(_))
    }
}

/// Why a request ended with [`Event::Failed`].
///
/// The upstream's error is shared: every subscriber of the flight gets the
/// same [`Arc`], so `E` need not be `Clone` (a `reqwest::Error`, an
/// `std::io::Error` will do).
#[non_exhaustive]
#[derive(Debug, PartialEq, Eq)]
pub enum Failure<E> {
    /// Preparation or the upstream returned `Err(e)` ([R5](crate::design#r5), [R8](crate::design#r8)); every
    /// subscriber of the flight holds the same `e`.
    Upstream(Arc<E>),
    /// Preparation or the upstream panicked ([R9](crate::design#r9)).
    Panicked,
    /// The flight had no runtime to run on: `request` was called outside the
    /// adapter's runtime, or the runtime dropped the flight's task (it shut
    /// down) before the flight ended.
    NoRuntime,
    /// The subscriber fell out of the retained history ([R15](crate::design#r15)); `missed` is the
    /// number of released items it had not read.
    Lagged {
        /// Items released before this subscriber could read them.
        missed: u64,
    },
    /// The request was cancelled ([R10](crate::design#r10), [R11](crate::design#r11)). Only a stream of results
    /// (`Subscription::into_results`) says it so, as its last item: a
    /// subscription's events say [`Event::Cancelled`].
    Cancelled,
}

// By hand: cloning shares the error, whatever `E` is.
impl<E> Clone for Failure<E> {
    fn clone(&self) -> Self {
        match self {
            Failure::Upstream(e) => Failure::Upstream(Arc::clone(e)),
            Failure::Panicked => Failure::Panicked,
            Failure::NoRuntime => Failure::NoRuntime,
            Failure::Lagged { missed } => Failure::Lagged { missed: *missed },
            Failure::Cancelled => Failure::Cancelled,
        }
    }
}

impl<E: fmt::Display> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Upstream(e) => write!(f, "upstream failed: {e}"),
            Failure::Panicked => f.write_str("upstream panicked"),
            Failure::NoRuntime => f.write_str("no runtime to run the flight on"),
            Failure::Lagged { missed } => write!(f, "lagged behind the history by {missed} items"),
            Failure::Cancelled => f.write_str("the request was cancelled"),
        }
    }
}

#[cfg(feature = "std")]
impl<E: std::error::Error + 'static> std::error::Error for Failure<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Failure::Upstream(e) => Some(&**e),
            _ => None,
        }
    }
}

/// How a flight ended: exactly the ends a flight can have, and nothing a
/// single subscriber can cause (a cancel or a lag is that subscriber's own end,
/// never its flight's). An aborted flight has no end: nobody is left to tell.
///
/// The flight's task reports it, the history publishes it, and every
/// subscriber turns it into its end [`Event`] with [`End::event`], the one
/// place where a flight's end becomes an event.
///
/// ```
/// use std::sync::Arc;
/// use streamflight_core::{End, Event, Failure};
///
/// assert_eq!(End::<&str>::Done.event::<u32>(), Event::Done);
/// let end = End::upstream("503");
/// assert_eq!(end.event::<u32>(), Event::Failed(Failure::Upstream(Arc::new("503"))));
/// ```
#[derive(Debug, PartialEq, Eq)]
pub enum End<E> {
    /// The upstream finished ([R7](crate::design#r7)).
    Done,
    /// Preparation or the upstream returned `Err(e)` ([R5](crate::design#r5), [R8](crate::design#r8)), shared by
    /// every subscriber.
    Upstream(Arc<E>),
    /// Preparation or the upstream panicked ([R9](crate::design#r9)).
    Panicked,
    /// There was no runtime to run the flight on (see [`Failure::NoRuntime`]).
    NoRuntime,
}

// By hand: cloning shares the error, whatever `E` is.
impl<E> Clone for End<E> {
    fn clone(&self) -> Self {
        match self {
            End::Done => End::Done,
            End::Upstream(e) => End::Upstream(Arc::clone(e)),
            End::Panicked => End::Panicked,
            End::NoRuntime => End::NoRuntime,
        }
    }
}

impl<E> End<E> {
    /// The end for the upstream's error `e`.
    pub fn upstream(e: E) -> Self {
        End::Upstream(Arc::new(e))
    }

    /// The end event a subscriber yields for this end.
    pub fn event<T>(&self) -> Event<T, E> {
        match self {
            End::Done => Event::Done,
            End::Upstream(e) => Event::Failed(Failure::Upstream(Arc::clone(e))),
            End::Panicked => Event::Failed(Failure::Panicked),
            End::NoRuntime => Event::Failed(Failure::NoRuntime),
        }
    }
}
