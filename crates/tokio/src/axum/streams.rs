//! The bodies an [`Answer`](super::Answer) streams: its SSE events (numbered, and detached when
//! the client goes, if resumable) and its plain chunks.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::response::sse::Event as SseEvent;
use futures_core::Stream;
use streamflight_core::driver::Results;

use super::failure::failure_reason;
use crate::{Event, Subscription};

/// The events of [`Answer::sse`](super::Answer::sse) and
/// [`Answer::sse_resumable`](super::Answer::sse_resumable).
pub(super) struct SseEvents<T, E, F> {
    /// `None` once the last event is out.
    subscription: Option<Subscription<T, E>>,
    item: F,
    /// Resumable: the `id` of the next item's event (its index in the flight); dropped before
    /// the end (the client went away), the request is detached, not cancelled.
    next_id: Option<u64>,
}

impl<T, E, F> SseEvents<T, E, F> {
    /// The events of `subscription`, each item's made by `item`. Resumable, each item's event
    /// has its index in the flight as its `id`, and the request is detached if the events are
    /// dropped before their end.
    pub(super) fn new(subscription: Subscription<T, E>, item: F, resumable: bool) -> Self {
        let next_id = resumable.then(|| subscription.position());
        SseEvents { subscription: Some(subscription), item, next_id }
    }
}

// Nothing in it is ever pinned: `item` is only called by `&mut`.
impl<T, E, F> Unpin for SseEvents<T, E, F> {}

impl<T, E, F> Stream for SseEvents<T, E, F>
where
    T: Clone,
    F: FnMut(T) -> SseEvent,
{
    type Item = Result<SseEvent, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(subscription) = this.subscription.as_mut() else { return Poll::Ready(None) };
        let event = match Pin::new(subscription).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Event::Item(item))) => {
                let event = (this.item)(item);
                let Some(id) = this.next_id.as_mut() else { return Poll::Ready(Some(Ok(event))) };
                let numbered = event.id(id.to_string());
                *id += 1;
                return Poll::Ready(Some(Ok(numbered)));
            }
            Poll::Ready(Some(Event::Failed(failure))) => {
                Some(SseEvent::default().event("error").data(failure_reason(&failure)))
            }
            Poll::Ready(Some(Event::Cancelled)) => {
                Some(SseEvent::default().event("cancelled").data("cancelled"))
            }
            Poll::Ready(Some(Event::Done)) => Some(SseEvent::default().event("done").data("[DONE]")),
            Poll::Ready(None) => None,
        };
        // The end: the subscription is done (and told its manager so).
        this.subscription = None;
        Poll::Ready(event.map(Ok))
    }
}

impl<T, E, F> Drop for SseEvents<T, E, F> {
    fn drop(&mut self) {
        // Dropped before its end: the client went away. A resumable answer keeps its request
        // for the resume window (a drop without one); any other is cancelled, by the drop.
        if let (Some(subscription), Some(_)) = (self.subscription.take(), self.next_id) {
            subscription.detach();
        }
    }
}

/// The chunks of [`Answer::body`](super::Answer::body).
pub(super) struct Chunks<T, E> {
    pub(super) results: Results<T, E>,
}

impl<T, E> Stream for Chunks<T, E>
where
    T: Clone + Into<Bytes>,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let results = Pin::new(&mut self.get_mut().results);
        results.poll_next(cx).map(|result| {
            result.map(|result| {
                result.map(Into::into).map_err(|failure| std::io::Error::other(failure_reason(&failure)))
            })
        })
    }
}
