//! The glue every adapter shares: the [`Machine`] behind one lock, a [`History`] per flight,
//! and the flight task that runs the leader's preparation and upstream. An adapter adds only [`Runtime::spawn`].
//!
//! Locking: the machine lock guards the control plane and the id-to-handle maps; it is never held
//! while user code runs (futures, streams, item clones), except the key's own `Hash`, `Eq` and `Drop`.
//! Items never pass through it: the flight task appends to the history, readers read it.

use core::future::{Future, poll_fn};
use core::hash::Hash;
use core::marker::PhantomData;
use core::pin::{Pin, pin};
use core::task::{Context, Poll, Waker};
use hashbrown::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_core::Stream;

use crate::history::{Canceller, End, History, Reader};
use crate::{
    Action, CancelError, Config, Event, Failure, FlightId, Machine, Outcome, RequestId, Role, Stats,
};

/// The one thing an adapter supplies: a way to run a flight's task.
pub trait Runtime: Send + Sync + 'static {
    /// Spawns `task` to run to completion, detached. Returns `false` if there
    /// is no runtime to spawn on (the flight then ends with
    /// [`Failure::NoRuntime`] instead of panicking).
    fn spawn<F: Future<Output = ()> + Send + 'static>(task: F) -> bool;
}

/// Items the flight task takes from a ready upstream before appending them as one batch.
const BATCH: usize = 64;
/// Batches per poll before the flight task yields to its runtime.
const BATCHES_PER_POLL: usize = 16;

/// The manager: joins the live flight for a key or starts one. A cheap
/// `Clone + Send + Sync` handle; every clone is the same manager.
///
/// Each adapter names it with its runtime filled in (`streamflight_tokio::Flights<K, T, E>`).
pub struct Flights<K, T, E, R> {
    shared: Arc<Shared<K, T, E>>,
    runtime: PhantomData<fn() -> R>,
}

impl<K, T, E, R> Clone for Flights<K, T, E, R> {
    fn clone(&self) -> Self {
        Flights { shared: Arc::clone(&self.shared), runtime: PhantomData }
    }
}

impl<K, T, E, R> core::fmt::Debug for Flights<K, T, E, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Flights")
            .field("config", state.machine.config())
            .field("stats", &state.machine.stats())
            .finish()
    }
}

impl<K, T, E, R> Default for Flights<K, T, E, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
    R: Runtime,
{
    fn default() -> Self {
        Flights::new(Config::default())
    }
}

impl<K, T, E, R> Flights<K, T, E, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
    R: Runtime,
{
    /// A manager with no flight.
    pub fn new(config: Config) -> Self {
        let shared = Shared {
            limit: config.max_history(),
            state: Mutex::new(State {
                machine: Machine::new(config),
                flights: HashMap::new(),
                cancellers: HashMap::new(),
            }),
        };
        Flights { shared: Arc::new(shared), runtime: PhantomData }
    }

    /// Joins the live flight for `key`, or starts one (R1-R3). `start` is
    /// polled only when this request leads, and only by the flight's own task;
    /// a follower's `start` is dropped unpolled. It prepares and returns the
    /// upstream stream. Call it inside the runtime.
    ///
    /// The returned [`Subscription`] yields the flight's items (from the
    /// first one, or the tail under [`LateJoin::Tail`](crate::LateJoin::Tail)),
    /// then exactly one end.
    ///
    /// ```
    /// use futures::{StreamExt, stream};
    /// use streamflight_core::flights::{Flights, Runtime};
    /// use streamflight_core::{Event, Role};
    ///
    /// // What an adapter supplies (streamflight-tokio names this `Tokio`).
    /// struct OnTokio;
    /// impl Runtime for OnTokio {
    ///     fn spawn<F: Future<Output = ()> + Send + 'static>(task: F) -> bool {
    ///         drop(tokio::spawn(task));
    ///         true
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let flights: Flights<&str, u32, String, OnTokio> = Flights::default();
    /// let upstream = || async { Ok(stream::iter([Ok(1), Ok(2)])) };
    /// let leader = flights.request("prompt", upstream());
    /// let follower = flights.request("prompt", upstream()); // dropped unpolled
    /// assert_eq!((leader.role(), follower.role()), (Role::Leader, Role::Follower));
    ///
    /// let expected = [Event::Item(1), Event::Item(2), Event::Done];
    /// assert_eq!(leader.collect::<Vec<_>>().await, expected);
    /// assert_eq!(follower.collect::<Vec<_>>().await, expected);
    /// assert_eq!(flights.stats().flights, 1);
    /// # }
    /// ```
    pub fn request<Fut, S>(&self, key: K, start: Fut) -> Subscription<T, E>
    where
        Fut: Future<Output = Result<S, E>> + Send + 'static,
        S: Stream<Item = Result<T, E>> + Send + 'static,
    {
        let mut state = self.shared.lock();
        let admission = state.machine.handle_request(key);
        let mut flight = None;
        let mut reader = None;
        while let Some(action) = state.machine.poll_action() {
            match action {
                Action::Start { flight: id } => {
                    let history = History::new(self.shared.limit);
                    let abort = Arc::new(AbortCell::default());
                    let handles = FlightHandles { history: Arc::clone(&history), abort: Arc::clone(&abort) };
                    state.flights.insert(id, handles);
                    flight = Some((id, history, abort));
                }
                Action::Subscribe { request, flight: id, from } => {
                    let subscribed = state.flights[&id].history.subscribe(from);
                    state.cancellers.insert(request, subscribed.canceller());
                    reader = Some(subscribed);
                }
                other => state.apply(other, &mut None),
            }
        }
        drop(state);
        let reader = reader.expect("the machine subscribes every request it admits");
        match flight {
            Some((id, history, abort)) => {
                let task = run_flight(Arc::clone(&self.shared), id, history, abort, start);
                if !R::spawn(task) {
                    self.shared.ended(id, Outcome::Failed, End::Failed(Failure::NoRuntime));
                }
            }
            // A follower's or joiner's `start` is dropped unpolled, outside the lock.
            None => drop(start),
        }
        Subscription {
            id: admission.id,
            role: admission.role,
            reader,
            control: self.shared.clone(),
            over: false,
        }
    }

    /// Cancels a live request (R10, R11, R13): its next event is `Cancelled`,
    /// then its stream closes; its flight goes on for the others, or is
    /// aborted if it was the last one. An unknown or ended id is an error and
    /// changes nothing.
    pub fn cancel(&self, id: RequestId) -> Result<(), CancelError> {
        self.shared.cancel(id)
    }

    /// The manager's counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().machine.stats()
    }

    /// Whether the manager holds no state for any key, flight or request (R16).
    pub fn is_idle(&self) -> bool {
        let state = self.shared.lock();
        state.machine.is_idle() && state.flights.is_empty() && state.cancellers.is_empty()
    }
}

struct Shared<K, T, E> {
    limit: Option<usize>,
    state: Mutex<State<K, T, E>>,
}

struct State<K, T, E> {
    machine: Machine<K>,
    /// Every flight the machine has not forgotten.
    flights: HashMap<FlightId, FlightHandles<T, E>>,
    /// How to end each live request alone.
    cancellers: HashMap<RequestId, Canceller>,
}

/// What the manager keeps of a running flight: where its items go, how to stop it.
struct FlightHandles<T, E> {
    history: Arc<History<T, E>>,
    abort: Arc<AbortCell>,
}

impl<K, T, E> Shared<K, T, E> {
    fn lock(&self) -> MutexGuard<'_, State<K, T, E>> {
        // Nothing of ours panics under this lock; should a key's `Hash` or
        // `Eq` have, the state is still consistent and the manager usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<K: Hash + Eq, T, E> State<K, T, E> {
    /// Carries out one action. `end` is the payload of the `Close` this input may cause.
    fn apply(&mut self, action: Action, end: &mut Option<End<E>>) {
        match action {
            Action::Cancel { request } => {
                if let Some(canceller) = self.cancellers.remove(&request) {
                    canceller.cancel();
                }
            }
            Action::Close { flight, .. } => {
                if let (Some(handles), Some(end)) = (self.flights.get(&flight), end.take()) {
                    handles.history.close(end);
                }
            }
            Action::Abort { flight } => {
                if let Some(handles) = self.flights.get(&flight) {
                    handles.abort.abort();
                }
            }
            Action::Forget { flight } => {
                self.flights.remove(&flight);
            }
            // Only a request starts or subscribes, and `request` handles those itself.
            Action::Start { .. } | Action::Subscribe { .. } => {}
        }
    }

    fn drain(&mut self, mut end: Option<End<E>>) {
        while let Some(action) = self.machine.poll_action() {
            self.apply(action, &mut end);
        }
    }
}

impl<K: Hash + Eq, T, E> Shared<K, T, E> {
    fn cancel(&self, id: RequestId) -> Result<(), CancelError> {
        let mut state = self.lock();
        state.machine.handle_cancel(id)?;
        state.drain(None);
        Ok(())
    }

    fn prepared(&self, flight: FlightId) {
        // Stale if the flight was aborted meanwhile: its task stops at its next poll.
        let _ = self.lock().machine.handle_prepared(flight);
    }

    fn truncated(&self, flight: FlightId) {
        let _ = self.lock().machine.handle_truncated(flight);
    }

    /// The flight ended; the machine frees its key, then its history publishes `end` (R7).
    fn ended(&self, flight: FlightId, outcome: Outcome, end: End<E>) {
        let mut state = self.lock();
        if state.machine.handle_ended(flight, outcome).is_ok() {
            state.drain(Some(end));
        }
    }
}

/// What a [`Subscription`] needs of its manager, with the key type erased.
trait Control: Send + Sync {
    fn cancel(&self, id: RequestId) -> Result<(), CancelError>;
    /// The request read its end; `false` if a cancel got there first.
    fn finished(&self, id: RequestId) -> bool;
    fn dropped(&self, id: RequestId);
}

impl<K: Hash + Eq + Send, T: Send + Sync, E: Send> Control for Shared<K, T, E> {
    fn cancel(&self, id: RequestId) -> Result<(), CancelError> {
        Shared::cancel(self, id)
    }

    fn finished(&self, id: RequestId) -> bool {
        let mut state = self.lock();
        state.cancellers.remove(&id);
        let live = state.machine.handle_finished(id).is_ok();
        state.drain(None);
        live
    }

    fn dropped(&self, id: RequestId) {
        let mut state = self.lock();
        state.cancellers.remove(&id);
        if state.machine.handle_drop(id).is_ok() {
            state.drain(None);
        }
    }
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
    /// It yielded its end (or its reader did).
    over: bool,
}

impl<T, E> Subscription<T, E> {
    /// This request's id, for [`Flights::cancel`].
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

impl<T, E> Subscription<T, E> {
    /// The reader yielded its end (or `None` after it): tell the manager, once.
    #[cold]
    fn end(&mut self, event: Option<Event<T, E>>) -> Option<Event<T, E>> {
        match event {
            Some(Event::Cancelled) | None => {
                self.over = true;
                event
            }
            Some(end) => {
                self.over = true;
                // A cancel that raced this end and reached the machine first wins.
                Some(if self.control.finished(self.id) { end } else { Event::Cancelled })
            }
        }
    }
}

impl<T, E> Drop for Subscription<T, E> {
    fn drop(&mut self) {
        if !self.over {
            self.control.dropped(self.id);
        }
    }
}

/// Lets the machine stop a flight's task from outside: set, then wake.
#[derive(Default)]
struct AbortCell {
    aborted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl AbortCell {
    fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Registers the task's waker, then tells whether it must stop.
    fn is_aborted(&self, cx: &Context<'_>) -> bool {
        if self.aborted.load(Ordering::Acquire) {
            return true;
        }
        {
            let mut slot = self.waker.lock().unwrap_or_else(|p| p.into_inner());
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
        }
        // Checked again: an abort between the first check and the registration found no waker.
        self.aborted.load(Ordering::Acquire)
    }
}

/// Reports the flight's end even if the task dies without doing so (a panic
/// while dropping the upstream, a runtime shutting down), so no subscriber waits forever.
struct EndGuard<K: Hash + Eq, T, E> {
    shared: Arc<Shared<K, T, E>>,
    flight: FlightId,
    armed: bool,
}

impl<K: Hash + Eq, T, E> EndGuard<K, T, E> {
    fn end(mut self, outcome: Outcome, end: End<E>) {
        self.armed = false;
        self.shared.ended(self.flight, outcome, end);
    }
}

impl<K: Hash + Eq, T, E> Drop for EndGuard<K, T, E> {
    fn drop(&mut self) {
        if self.armed {
            // Stale, and so ignored, when the flight was aborted.
            self.shared.ended(self.flight, Outcome::Panicked, End::Failed(Failure::Panicked));
        }
    }
}

/// What one poll of the upstream produced.
enum Pulled<E> {
    Batch,
    Ended(Outcome, End<E>),
    Aborted,
}

/// The flight's task: preparation, then the upstream into the history, then the end.
/// Returning drops the `start` future or the stream (R11 abort).
async fn run_flight<K, T, E, Fut, S>(
    shared: Arc<Shared<K, T, E>>,
    flight: FlightId,
    history: Arc<History<T, E>>,
    abort: Arc<AbortCell>,
    start: Fut,
) where
    K: Hash + Eq,
    T: Send + Sync,
    Fut: Future<Output = Result<S, E>>,
    S: Stream<Item = Result<T, E>>,
{
    let guard = EndGuard { shared: Arc::clone(&shared), flight, armed: true };
    let mut start = pin!(start);
    let prepared = poll_fn(|cx| {
        if abort.is_aborted(cx) {
            return Poll::Ready(None);
        }
        match catch_unwind(AssertUnwindSafe(|| start.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => Poll::Ready(Some(Ok(result))),
            Err(_) => Poll::Ready(Some(Err(()))),
        }
    })
    .await;
    let upstream = match prepared {
        None => return,
        Some(Ok(Ok(upstream))) => upstream,
        Some(Ok(Err(e))) => return guard.end(Outcome::Failed, End::Failed(Failure::Upstream(e))),
        Some(Err(())) => return guard.end(Outcome::Panicked, End::Failed(Failure::Panicked)),
    };
    shared.prepared(flight);
    let mut upstream = pin!(upstream);
    let mut batch: Vec<T> = Vec::new();
    let mut told_truncated = false;
    loop {
        let pulled = poll_fn(|cx| {
            if abort.is_aborted(cx) {
                return Poll::Ready(Pulled::Aborted);
            }
            for _ in 0..BATCHES_PER_POLL {
                let pulled = pull(upstream.as_mut(), cx, &mut batch);
                if !batch.is_empty() {
                    // Late joins go to a new flight before the first item is released (R15).
                    let limit = shared.limit.map_or(u64::MAX, |n| n as u64);
                    if !told_truncated && history.appended() + batch.len() as u64 > limit {
                        told_truncated = true;
                        shared.truncated(flight);
                    }
                    history.extend(batch.drain(..));
                }
                if !matches!(pulled, Poll::Ready(Pulled::Batch)) {
                    // A burst's buffer is not kept while the upstream idles: a trickling
                    // flight (a token stream) holds room for a few items, not for `BATCH`.
                    if batch.capacity() > 8 {
                        batch = Vec::new();
                    }
                    return pulled;
                }
            }
            // A fast upstream yields to its runtime now and then.
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await;
        match pulled {
            Pulled::Batch => {}
            Pulled::Ended(outcome, end) => return guard.end(outcome, end),
            Pulled::Aborted => return,
        }
    }
}

/// Polls the upstream for up to `BATCH` ready items into `batch`.
fn pull<T, E, S>(mut upstream: Pin<&mut S>, cx: &mut Context<'_>, batch: &mut Vec<T>) -> Poll<Pulled<E>>
where
    S: Stream<Item = Result<T, E>>,
{
    while batch.len() < BATCH {
        match catch_unwind(AssertUnwindSafe(|| upstream.as_mut().poll_next(cx))) {
            Ok(Poll::Ready(Some(Ok(item)))) => batch.push(item),
            Ok(Poll::Ready(Some(Err(e)))) => {
                return Poll::Ready(Pulled::Ended(Outcome::Failed, End::Failed(Failure::Upstream(e))));
            }
            Ok(Poll::Ready(None)) => return Poll::Ready(Pulled::Ended(Outcome::Done, End::Done)),
            Err(_) => return Poll::Ready(Pulled::Ended(Outcome::Panicked, End::Failed(Failure::Panicked))),
            Ok(Poll::Pending) => {
                return if batch.is_empty() { Poll::Pending } else { Poll::Ready(Pulled::Batch) };
            }
        }
    }
    Poll::Ready(Pulled::Batch)
}
