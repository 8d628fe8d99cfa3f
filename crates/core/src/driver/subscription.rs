//! One request's view of its flight: a `Stream` of [`Event`]s over its history reader, and
//! what it tells its manager (its cancel, its end, its drop), with the key and runtime types erased.

use core::pin::Pin;
use core::task::{Context, Poll};

use futures_core::Stream;

use super::registry::Shared;
use crate::history::Reader;
use crate::sync::Arc;
use crate::{Admission, CancelError, Event, RequestId, Role};

/// What a [`Subscription`] asks of its manager. Each call is one input of
/// the machine, taken by the registry's one path.
pub(super) trait Control: Send + Sync {
    /// Cancels the request (R10, R11).
    fn cancel(&self, id: RequestId) -> Result<(), CancelError>;
    /// The request yielded its end; `false` if a cancel got there first.
    fn finished(&self, id: RequestId) -> bool;
    /// The live request's subscription is dropped (R12).
    fn dropped(&self, id: RequestId);
}

impl<K, T, E, R> Control for Shared<K, T, E, R>
where
    Shared<K, T, E, R>: Send + Sync,
{
    fn cancel(&self, id: RequestId) -> Result<(), CancelError> {
        Shared::cancel(self, id)
    }

    fn finished(&self, id: RequestId) -> bool {
        Shared::finished(self, id)
    }

    fn dropped(&self, id: RequestId) {
        Shared::dropped(self, id)
    }
}

// loom's `Arc` cannot be coerced to a trait object; under loom a
// subscription's `Arc<dyn Control>` holds a second `Arc` to its manager.
#[cfg(all(test, loom))]
impl<C: Control + ?Sized> Control for Arc<C> {
    fn cancel(&self, id: RequestId) -> Result<(), CancelError> {
        (**self).cancel(id)
    }

    fn finished(&self, id: RequestId) -> bool {
        (**self).finished(id)
    }

    fn dropped(&self, id: RequestId) {
        (**self).dropped(id)
    }
}

/// `shared` as a subscription's handle on its manager.
pub(super) fn control<C: Control + 'static>(shared: &Arc<C>) -> Arc<dyn Control> {
    #[cfg(not(all(test, loom)))]
    let control = Arc::clone(shared) as Arc<dyn Control>;
    #[cfg(all(test, loom))]
    let control = Arc::from_std(std::sync::Arc::new(Arc::clone(shared)) as std::sync::Arc<dyn Control>);
    control
}

/// One request's view of its flight: a `Stream` of [`Event`]s. Items, then
/// exactly one of `Done`, `Failed`, `Cancelled`, then `None` forever (R14).
///
/// Dropping it is a cancellation with nobody left to tell (R12).
pub struct Subscription<T, E> {
    id: RequestId,
    role: Role,
    reader: Reader<T, E>,
    control: Arc<dyn Control>,
    /// It yielded its end: its manager was told, or needs not be.
    ended: bool,
}

impl<T, E> Subscription<T, E> {
    /// The subscription of an admitted request, reading with `reader`.
    pub(super) fn new(admission: Admission, reader: Reader<T, E>, control: Arc<dyn Control>) -> Self {
        Subscription { id: admission.id, role: admission.role, reader, control, ended: false }
    }

    /// This request's id, for [`Flights::cancel`](super::Flights::cancel).
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// This request's role in its flight.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Cancels this request; the same as `Flights::cancel(self.id())`, and
    /// idempotent: cancelling an ended request does nothing.
    pub fn cancel(&self) {
        let _ = self.control.cancel(self.id);
    }

    /// The reader yielded its end (or `None` after it): the manager hears of
    /// it once, and a cancel that reached the machine first wins (R10, R14).
    #[cold]
    fn end(&mut self, event: Option<Event<T, E>>) -> Option<Event<T, E>> {
        self.ended = true;
        match event {
            // A cancel, decided by the machine already; or `None`, after the end.
            Some(Event::Cancelled) | None => event,
            Some(end) => Some(if self.control.finished(self.id) { end } else { Event::Cancelled }),
        }
    }
}

impl<T, E> core::fmt::Debug for Subscription<T, E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Subscription").field("id", &self.id).field("role", &self.role).finish_non_exhaustive()
    }
}

impl<T: Clone, E: Clone> Stream for Subscription<T, E> {
    type Item = Event<T, E>;

    #[inline]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event<T, E>>> {
        let this = self.get_mut();
        let polled = this.reader.poll_next(cx);
        // The per-item path hands the reader's event on untouched.
        match polled {
            Poll::Pending | Poll::Ready(Some(Event::Item(_))) => polled,
            Poll::Ready(event) => Poll::Ready(this.end(event)),
        }
    }
}

impl<T, E> Drop for Subscription<T, E> {
    fn drop(&mut self) {
        if !self.ended {
            self.control.dropped(self.id);
        }
    }
}
