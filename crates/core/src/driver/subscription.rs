//! One request's view of its flight: a `Stream` of [`Event`]s over its history reader, and
//! what it tells its manager (its cancel, its end, its drop), with the key and runtime types erased.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::boxed::Box;

use futures_core::Stream;

use super::registry::Shared;
use crate::history::{History, Reader};
use crate::sync::Arc;
use crate::{Admission, CancelError, Event, Failure, RequestId, Role};

/// What a [`Subscription`] asks of its manager. Each call is one input of
/// the machine, taken by the registry's one path.
pub(super) trait Control<T, E>: Send + Sync {
    /// Cancels the request ([R10](crate::design#r10), [R11](crate::design#r11)).
    fn cancel(&self, id: RequestId) -> Result<(), CancelError>;
    /// Detaches the live request, keeping `history` for its resume ([R18](crate::design#r18)).
    fn detach(&self, id: RequestId, history: Arc<History<T, E>>);
    /// The request yielded its end; `false` if a cancel got there first.
    fn finished(&self, id: RequestId) -> bool;
    /// The live request's subscription is dropped ([R12](crate::design#r12)).
    fn dropped(&self, id: RequestId);
}

impl<K, T, E, R> Control<T, E> for Shared<K, T, E, R>
where
    Shared<K, T, E, R>: Send + Sync,
{
    fn cancel(&self, id: RequestId) -> Result<(), CancelError> {
        Shared::cancel(self, id)
    }

    fn detach(&self, id: RequestId, history: Arc<History<T, E>>) {
        Shared::detach(self, id, history)
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
impl<T, E, C: Control<T, E> + ?Sized> Control<T, E> for Arc<C> {
    fn cancel(&self, id: RequestId) -> Result<(), CancelError> {
        (**self).cancel(id)
    }

    fn detach(&self, id: RequestId, history: Arc<History<T, E>>) {
        (**self).detach(id, history)
    }

    fn finished(&self, id: RequestId) -> bool {
        (**self).finished(id)
    }

    fn dropped(&self, id: RequestId) {
        (**self).dropped(id)
    }
}

/// `shared` as a subscription's handle on its manager.
pub(super) fn control<T, E, C: Control<T, E> + 'static>(shared: &Arc<C>) -> Arc<dyn Control<T, E>> {
    #[cfg(not(all(test, loom)))]
    let control = Arc::clone(shared) as Arc<dyn Control<T, E>>;
    #[cfg(all(test, loom))]
    let control = Arc::from_std(std::sync::Arc::new(Arc::clone(shared)) as std::sync::Arc<dyn Control<T, E>>);
    control
}

/// One request's view of its flight: a `Stream` of [`Event`]s. Items, then
/// exactly one of `Done`, `Failed`, `Cancelled`, then `None` forever ([R14](crate::design#r14)).
///
/// It is a `futures_core::Stream` when `T: Clone` (each subscriber gets its
/// own clone of every item; share large items as `Arc<T>`), whatever `E` is
/// (errors are shared as [`Arc<E>`](crate::Failure::Upstream)). It is `Unpin`
/// always, and `Send` when `T: Send + Sync` and `E: Send + Sync`: hold it
/// across awaits, move it into a response body, call `StreamExt::next` on it.
///
/// [`ready`](Subscription::ready) waits for the first event without taking
/// it (choose a status code before sending a byte);
/// [`into_results`](Subscription::into_results) turns it into a stream of
/// `Result`s for bodies and `?`.
///
/// After 64 items in a row (512 on a flight of more than 512 readers) it returns `Pending`
/// once, having woken itself, as tokio's own channels do when their task's budget runs out:
/// other tasks of its worker run meanwhile.
///
/// Dropping it is a cancellation with nobody left to tell ([R12](crate::design#r12)).
pub struct Subscription<T, E> {
    id: RequestId,
    role: Role,
    reader: Reader<T, E>,
    control: Arc<dyn Control<T, E>>,
    /// The event [`ready`](Subscription::ready) took from the reader, to be
    /// yielded first (boxed: most subscriptions never hold one).
    peeked: Option<Box<Event<T, E>>>,
    /// It yielded its end: its manager was told, or needs not be.
    ended: bool,
    /// Items yielded since it last returned `Pending`: see [`RUN`].
    run: u16,
}

/// Items a subscription yields in a row before it returns `Pending` once, waking itself (as
/// tokio's cooperative budget makes its own channels do). Its task then lets the worker's other
/// readers take the same items in turn while they are in this core's cache: a reader that ran
/// through thousands of items in one go, on both workers at once, moved every item's reference
/// count between the cores at each delivery (issue 26, BENCHMARKS.md: 0.8x tokio's broadcast
/// at K=256, 1.4-1.8x with this).
const RUN: u16 = 64;

/// Readers of a flight above which its subscriptions yield after [`CROWDED_RUN`] items, not
/// [`RUN`]: with thousands of reader tasks, a task's state is out of the core's cache by its
/// next turn and the runtime's queue of them is shared between the workers, so a switch costs
/// more than the items' counts moving between the cores (issue 26, BENCHMARKS.md: 1.54-1.57x
/// tokio's broadcast at K=4096 with 64, 1.76-1.99x with 512; at K=256, 512 fell to 0.9-1.2x).
const CROWD: usize = 512;

/// Items a subscription of a crowded flight (more than [`CROWD`] readers) yields in a row.
const CROWDED_RUN: u16 = 512;

impl<T, E> Subscription<T, E> {
    /// The subscription of an admitted request, reading with `reader`.
    pub(super) fn new(admission: Admission, reader: Reader<T, E>, control: Arc<dyn Control<T, E>>) -> Self {
        Subscription {
            id: admission.id,
            role: admission.role,
            reader,
            control,
            peeked: None,
            ended: false,
            run: 0,
        }
    }

    /// This request's id, for [`Flights::cancel`](super::Flights::cancel).
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// This request's role in its flight.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The index in its flight of the next item this subscription yields: the number of the
    /// flight's items before it. It starts at 0 for a request that reads its flight's whole
    /// history, at the tail under [`LateJoin::Tail`](crate::LateJoin::Tail), at `from` for a
    /// [resumed](super::Flights::resume) one, and counts every item yielded (an item
    /// [`ready`](Subscription::ready) looked at is not yielded yet). What to number events
    /// with, and what to resume from after a [`detach`](Subscription::detach).
    ///
    /// ```
    /// use futures::{StreamExt, stream};
    /// # use streamflight_core::driver::Runtime;
    /// # #[derive(Default)]
    /// # struct Tokio;
    /// # impl Runtime for Tokio {
    /// #     fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> bool {
    /// #         drop(tokio::spawn(task));
    /// #         true
    /// #     }
    /// #     fn sleep(&self, d: std::time::Duration) -> impl Future<Output = ()> + Send + 'static {
    /// #         async move { tokio::time::sleep(d).await }
    /// #     }
    /// # }
    /// # type Flights<K, T, E> = streamflight_core::driver::Flights<K, T, E, Tokio>;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// let flights = Flights::<&str, u32, String>::default();
    /// let mut answer = flights.request("a", async { Ok(stream::iter([Ok(10), Ok(11)])) });
    /// assert_eq!(answer.position(), 0);
    /// answer.ready().await;
    /// assert_eq!(answer.position(), 0, "looked at, not yielded");
    /// answer.next().await;
    /// assert_eq!(answer.position(), 1);
    /// # }
    /// ```
    pub fn position(&self) -> u64 {
        let peeked_item = matches!(self.peeked.as_deref(), Some(Event::Item(_)));
        self.reader.position() - u64::from(peeked_item)
    }

    /// Cancels this request; the same as `Flights::cancel(self.id())`, and
    /// idempotent: cancelling an ended request does nothing.
    pub fn cancel(&self) {
        let _ = self.control.cancel(self.id);
    }

    /// Detaches this request instead of cancelling it ([R18](crate::design#r18)): its client went
    /// away for now (a lost connection, a reloaded page). The request stays
    /// live for the manager's resume window (`Config::resume_window`),
    /// keeping its flight going ([R11](crate::design#r11)), and [`Flights::resume`](super::Flights::resume)
    /// with the returned id gives it a new subscription from the item its
    /// client last had. Where that is, is the caller's to remember (count
    /// the items delivered). Without a resume window (the default), or if
    /// the subscription already yielded its end, this is a drop ([R12](crate::design#r12)).
    pub fn detach(mut self) -> RequestId {
        if !self.ended {
            self.ended = true;
            self.control.detach(self.id, Arc::clone(self.reader.history()));
        }
        self.id
    }

    /// Waits for this subscription's first event (or its next one, if items
    /// were taken already) without taking it: the stream yields it next.
    /// `None` if the stream already yielded its end.
    ///
    /// A handler chooses its status code with it before sending a byte: an
    /// item means the flight streams, an end before any item is the flight's
    /// (or this request's) whole answer.
    ///
    /// ```
    /// use futures::{StreamExt, stream};
    /// use streamflight_core::{Event, Failure};
    /// # use streamflight_core::driver::Runtime;
    /// # #[derive(Default)]
    /// # struct Tokio;
    /// # impl Runtime for Tokio {
    /// #     fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> bool {
    /// #         drop(tokio::spawn(task));
    /// #         true
    /// #     }
    /// #     fn sleep(&self, d: std::time::Duration) -> impl Future<Output = ()> + Send + 'static {
    /// #         async move { tokio::time::sleep(d).await }
    /// #     }
    /// # }
    /// # type Flights<K, T, E> = streamflight_core::driver::Flights<K, T, E, Tokio>;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// let flights = Flights::<&str, u32, String>::default();
    /// let mut ok = flights.request("a", async { Ok(stream::iter([Ok(1), Ok(2)])) });
    /// assert_eq!(ok.ready().await, Some(&Event::Item(1)));
    /// assert_eq!(ok.next().await, Some(Event::Item(1)), "ready took nothing");
    ///
    /// let mut failed = flights.request("b", async { Err::<stream::Empty<_>, _>("no model".to_string()) });
    /// let status = match failed.ready().await {
    ///     Some(Event::Failed(Failure::Upstream(_))) => 502,
    ///     _ => 200,
    /// };
    /// assert_eq!(status, 502);
    /// # }
    /// ```
    pub fn ready(&mut self) -> Ready<'_, T, E>
    where
        T: Clone,
    {
        Ready { subscription: Some(self) }
    }

    /// This subscription as a stream of `Result`s, for a response body or
    /// `?`: each item is `Ok(item)`; `Done` ends the stream; `Failed(f)` is
    /// one `Err(f)`, then the end; `Cancelled` is one
    /// `Err(Failure::Cancelled)`, then the end, so that a body cut by a
    /// cancel is never taken for a whole one.
    ///
    /// ```
    /// use futures::{StreamExt, stream};
    /// use streamflight_core::Failure;
    /// # use streamflight_core::driver::Runtime;
    /// # #[derive(Default)]
    /// # struct Tokio;
    /// # impl Runtime for Tokio {
    /// #     fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> bool {
    /// #         drop(tokio::spawn(task));
    /// #         true
    /// #     }
    /// #     fn sleep(&self, d: std::time::Duration) -> impl Future<Output = ()> + Send + 'static {
    /// #         async move { tokio::time::sleep(d).await }
    /// #     }
    /// # }
    /// # type Flights<K, T, E> = streamflight_core::driver::Flights<K, T, E, Tokio>;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    ///
    /// let flights = Flights::<&str, u32, String>::default();
    /// let upstream = stream::iter([Ok(1), Err("cut".to_string())]);
    /// let results: Vec<_> = flights.request("k", async { Ok(upstream) }).into_results().collect().await;
    /// assert_eq!(results.len(), 2);
    /// assert_eq!(results[0], Ok(1));
    /// assert!(matches!(&results[1], Err(Failure::Upstream(e)) if e.as_str() == "cut"));
    /// # }
    /// ```
    pub fn into_results(self) -> Results<T, E> {
        Results { subscription: self }
    }

    /// The reader yielded its end (or `None` after it): the manager hears of
    /// it once, and a cancel that reached the machine first wins ([R10](crate::design#r10), [R14](crate::design#r14)).
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

impl<T: Clone, E> Stream for Subscription<T, E> {
    type Item = Event<T, E>;

    #[inline]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event<T, E>>> {
        let this = self.get_mut();
        if this.peeked.is_some()
            && let Some(event) = this.peeked.take()
        {
            return Poll::Ready(Some(*event));
        }
        // The readers are counted once a run, at its 64th item.
        if (this.run == RUN && this.reader.history().readers() <= CROWD) || this.run == CROWDED_RUN {
            this.run = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let polled = this.reader.poll_next(cx);
        // The per-item path hands the reader's event on untouched.
        match polled {
            Poll::Ready(Some(Event::Item(_))) => {
                this.run += 1;
                polled
            }
            Poll::Pending => {
                this.run = 0;
                polled
            }
            Poll::Ready(event) => Poll::Ready(this.end(event)),
        }
    }
}

/// The future of [`Subscription::ready`]: the next event, by reference, left
/// in place.
#[must_use = "futures do nothing unless awaited"]
pub struct Ready<'a, T, E> {
    subscription: Option<&'a mut Subscription<T, E>>,
}

impl<'a, T: Clone, E> Future for Ready<'a, T, E> {
    type Output = Option<&'a Event<T, E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(subscription) = self.subscription.take() else {
            // Polled after completion: nothing more to tell.
            return Poll::Ready(None);
        };
        if subscription.peeked.is_none() {
            match Pin::new(&mut *subscription).poll_next(cx) {
                Poll::Pending => {
                    self.subscription = Some(subscription);
                    return Poll::Pending;
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(event)) => subscription.peeked = Some(Box::new(event)),
            }
        }
        Poll::Ready(subscription.peeked.as_deref())
    }
}

impl<T, E> core::fmt::Debug for Ready<'_, T, E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ready").finish_non_exhaustive()
    }
}

/// A [`Subscription`] as a stream of `Result`s: see
/// [`into_results`](Subscription::into_results). Dropping it drops the
/// subscription ([R12](crate::design#r12)).
#[must_use = "streams do nothing unless polled"]
pub struct Results<T, E> {
    subscription: Subscription<T, E>,
}

impl<T, E> Results<T, E> {
    /// The request's id, for a cancel.
    pub fn id(&self) -> RequestId {
        self.subscription.id
    }

    /// The request's role in its flight.
    pub fn role(&self) -> Role {
        self.subscription.role
    }
}

impl<T: Clone, E> Stream for Results<T, E> {
    type Item = Result<T, Failure<E>>;

    #[inline]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let subscription = &mut self.get_mut().subscription;
        Pin::new(subscription).poll_next(cx).map(|event| match event? {
            Event::Item(item) => Some(Ok(item)),
            Event::Done => None,
            Event::Failed(failure) => Some(Err(failure)),
            Event::Cancelled => Some(Err(Failure::Cancelled)),
        })
    }
}

impl<T, E> core::fmt::Debug for Results<T, E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Results").field("subscription", &self.subscription).finish()
    }
}

impl<T, E> Drop for Subscription<T, E> {
    fn drop(&mut self) {
        if !self.ended {
            self.control.dropped(self.id);
        }
    }
}
