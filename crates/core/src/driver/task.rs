//! A flight's task: the leader's preparation, then its upstream into the history, then the end.
//! A named `Future` with named stages and steps; the registry stops it through its abort signal.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::panic::{AssertUnwindSafe, catch_unwind};

use futures_core::Stream;
use pin_project_lite::pin_project;

use super::abort::AbortWatch;
use super::registry::{Shared, Started};
use crate::history::{Batch, History};
use crate::sync::Arc;
use crate::{End, FlightId, Outcome};

/// Items taken from a ready upstream before they are appended as one batch
/// (one publication, one wake of the parked readers).
const BATCH: usize = 64;
/// Items per poll before the task yields to its runtime (tens of microseconds of
/// writing). Each yield lets the readers catch up and park, and wakes them all again
/// after it: with 1,024 items a poll, 4,096 readers of a fast upstream spent more
/// time idling between polls than reading (issue 26, BENCHMARKS.md).
const ITEMS_PER_POLL: usize = 4096;
/// Batches per poll at most, for an upstream that yields one item at a time
/// (each batch a publication: a fence, and a wake of the readers parked since).
const BATCHES_PER_POLL: usize = 256;
/// A flight's first items, whose readers are woken as soon as they are published: a client
/// waits for them most (in the gateway, the response's head and its first event).
const PROMPT_ITEMS: u64 = 2;

pin_project! {
    /// The task of one flight. It reports to the registry (prepared,
    /// truncated, ended) and is the one writer of the flight's history.
    /// Dropping it mid-flight still ends the flight (see its `Drop`).
    #[must_use = "a flight's task does nothing unless spawned"]
    pub(super) struct FlightTask<K, T, E, R, Fut, S> {
        flight: Flight<K, T, E, R>,
        #[pin]
        stage: Stage<Fut, S>,
    }

    impl<K, T, E, R, Fut, S> PinnedDrop for FlightTask<K, T, E, R, Fut, S> {
        fn drop(this: Pin<&mut Self>) {
            this.project().flight.dropped();
        }
    }
}

pin_project! {
    /// Where the flight is.
    #[project = StageMut]
    enum Stage<Fut, S> {
        /// The leader's `start` future prepares the upstream ([R1](crate::design#r1), [R4](crate::design#r4)).
        Preparing { #[pin] start: Fut },
        /// The upstream feeds the history ([R6](crate::design#r6)).
        Streaming { #[pin] upstream: S },
        /// Ended and reported, or aborted: nothing is left to poll.
        Over,
    }
}

/// The task's state beside its stage: how it reports, where it writes.
struct Flight<K, T, E, R> {
    shared: Arc<Shared<K, T, E, R>>,
    id: FlightId,
    history: Arc<History<T, E>>,
    abort: AbortWatch,
    /// A poll is under way: if the task is dropped meanwhile, the poll unwound.
    polling: bool,
    /// The flight's end was reported: the task reports nothing more.
    ended: bool,
    /// An observer waits for the flight's first item: false without one, so that an
    /// unobserved flight pays one branch per batch for it.
    awaits_first: bool,
    /// Items published whose readers are not woken yet: the task polls its upstream once
    /// more first (see [`Flight::holds`]). Fewer than a [`BATCH`]: a byte, which fits beside
    /// the flags where a word made every task 128 bytes larger (tokio pads its tasks' cells).
    held: u8,
    /// Holding the readers back may pay: no hold has yet ended without its polls finding
    /// more. A paced upstream hands over an item at a time, and the poll made for a hold finds
    /// nothing: the flight then stops holding, rather than pay a poll for every item.
    holds_pay: bool,
    /// A poll made for the current hold found more items.
    hold_grew: bool,
}

/// What one pull of the upstream gave.
enum Pulled<E> {
    /// Items: more may be ready by now (a self-waking upstream, a burst), so
    /// the task pulls again before it waits.
    Items,
    /// Nothing: the upstream waits, and will wake the task.
    Pending,
    /// The upstream ended (the batch may hold its last items).
    Ended(End<E>),
}

impl<K, T, E, R, Fut, S> FlightTask<K, T, E, R, Fut, S> {
    /// The task of the flight the machine just started, preparing with `start`.
    pub(super) fn new(shared: Arc<Shared<K, T, E, R>>, started: Started<T, E>, start: Fut) -> Self {
        FlightTask {
            flight: Flight {
                awaits_first: shared.observer().is_some(),
                shared,
                id: started.flight,
                history: started.history,
                abort: AbortWatch::new(started.abort),
                polling: false,
                ended: false,
                held: 0,
                holds_pay: true,
                hold_grew: false,
            },
            stage: Stage::Preparing { start },
        }
    }
}

impl<K, T, E, R, Fut, S> Future for FlightTask<K, T, E, R, Fut, S>
where
    T: Send + Sync,
    Fut: Future<Output = Result<S, E>>,
    S: Stream<Item = Result<T, E>>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        this.flight.polling = true;
        let polled = step(this.flight, this.stage, cx);
        this.flight.polling = false;
        polled
    }
}

/// One poll of the task: stop if aborted, else advance the stage as far as it goes.
fn step<K, T, E, R, Fut, S>(
    flight: &mut Flight<K, T, E, R>,
    mut stage: Pin<&mut Stage<Fut, S>>,
    cx: &mut Context<'_>,
) -> Poll<()>
where
    T: Send + Sync,
    Fut: Future<Output = Result<S, E>>,
    S: Stream<Item = Result<T, E>>,
{
    if flight.abort.is_aborted(cx) {
        // R11: the preparation future or the upstream is dropped now, and
        // nothing is reported: the machine has released the flight.
        stage.set(Stage::Over);
        return Poll::Ready(());
    }
    let end = loop {
        match stage.as_mut().project() {
            StageMut::Preparing { start } => match catch_unwind(AssertUnwindSafe(|| start.poll(cx))) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(Ok(upstream))) => {
                    stage.set(Stage::Streaming { upstream });
                    flight.shared.prepared(flight.id);
                }
                Ok(Poll::Ready(Err(e))) => break End::upstream(e),
                Err(_panic) => break End::Panicked,
            },
            StageMut::Streaming { upstream } => match flight.stream(upstream, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(end) => break end,
            },
            StageMut::Over => return Poll::Ready(()),
        }
    };
    flight.end(end);
    // The upstream (or the finished `start` future) goes only after its end is out.
    stage.set(Stage::Over);
    Poll::Ready(())
}

impl<K, T, E, R> Flight<K, T, E, R> {
    /// One poll's worth of streaming: batches of ready items, each written
    /// straight into the history and published at once, until the upstream
    /// waits or ends, or the task must yield; then one wake of the parked readers.
    fn stream<S>(&mut self, mut upstream: Pin<&mut S>, cx: &mut Context<'_>) -> Poll<End<E>>
    where
        T: Send + Sync,
        S: Stream<Item = Result<T, E>>,
    {
        let before = self.history.appended();
        let mut taken = 0;
        let mut published = false;
        let mut waits = false;
        let polled = 'poll: {
            for _ in 0..BATCHES_PER_POLL {
                let mut batch = self.history.batch();
                let pulled = pull(upstream.as_mut(), cx, &mut batch);
                let written = batch.len();
                taken += written;
                let releases_first = batch.releases_first();
                drop(batch);
                // R15: the machine hears of the first release before any reader
                // can see it, so that no late join is admitted onto a released item.
                if releases_first {
                    self.shared.truncated(self.id);
                }
                published |= self.history.publish_unwoken();
                if self.awaits_first && written > 0 {
                    self.first_item();
                }
                match pulled {
                    Pulled::Items if taken < ITEMS_PER_POLL => {}
                    Pulled::Items => break,
                    Pulled::Pending => {
                        waits = true;
                        break 'poll Poll::Pending;
                    }
                    Pulled::Ended(end) => break 'poll Poll::Ready(end),
                }
            }
            // A fast upstream lets the runtime run its readers now and then.
            cx.waker().wake_by_ref();
            Poll::Pending
        };
        if published || self.held > 0 {
            if waits && self.holds(before, taken) {
                self.hold_grew |= self.held > 0;
                // Below a batch, as `holds` says: it fits in a byte.
                self.held = (usize::from(self.held) + taken) as u8;
                cx.waker().wake_by_ref();
            } else {
                // The readers parked meanwhile, once for every batch of this poll (and the
                // polls held before it).
                // A hold whose polls found nothing more: this upstream does not pay for one.
                self.holds_pay &= !(self.held > 0 && taken == 0 && !self.hold_grew);
                self.held = 0;
                self.hold_grew = false;
                self.history.wake();
            }
        }
        polled
    }

    /// Whether the readers of the `taken` items just published (after `before` others) wait
    /// for one more poll of the upstream, the task woken again at once for it. An upstream
    /// that hands a read over item by item from a task of its own (hyper's body channel
    /// holds one chunk) has the rest of that read ready once its task has run, which a
    /// runtime's queue does before this task again: the readers are then woken once for the
    /// whole read, and write it at once, where they woke and wrote once per item on a
    /// single-threaded runtime (issue 26). Never for the first items, nor past a batch.
    fn holds(&self, before: u64, taken: usize) -> bool {
        self.holds_pay && taken > 0 && before >= PROMPT_ITEMS && usize::from(self.held) + taken < BATCH
    }

    /// The flight's first item is out: the observer hears of it, with no lock held.
    #[cold]
    fn first_item(&mut self) {
        self.awaits_first = false;
        if let Some(observer) = self.shared.observer() {
            observer.first_item(self.id);
        }
    }

    /// The flight ended with `end`: the machine frees the key first ([R7](crate::design#r7)),
    /// then every reader sees `end` after its remaining items.
    fn end(&mut self, end: End<E>) {
        self.ended = true;
        let outcome = match end {
            End::Done => Outcome::Done,
            End::Upstream(_) => Outcome::Failed,
            End::Panicked => Outcome::Panicked,
            End::NoRuntime => Outcome::NoRuntime,
        };
        // Read before the registry is locked: the history's writer comes first (see `driver`).
        let bytes = self.history.bytes();
        if self.shared.ended(self.id, outcome, self.history.appended(), bytes) {
            self.history.close(end);
        }
    }

    /// The task is dropped. Mid-flight (neither ended nor aborted), nobody
    /// would ever end the flight: it ends now, `Panicked` if a poll unwound,
    /// else `NoRuntime` (the runtime dropped the task: it shut down, or had
    /// refused to spawn it).
    fn dropped(&mut self) {
        if self.ended || self.abort.signal().is_set() {
            return;
        }
        self.end(if self.polling { End::Panicked } else { End::NoRuntime });
    }
}

/// Polls the upstream for up to [`BATCH`] ready items into `batch`, catching
/// its panics ([R9](crate::design#r9)). A pull that took items never reports `Pending`: the
/// upstream is polled again (within [`ITEMS_PER_POLL`] and [`BATCHES_PER_POLL`]) before the task
/// waits, so that a self-waking upstream is drained several items per task
/// poll and its readers woken once per batch.
fn pull<T, E, S>(mut upstream: Pin<&mut S>, cx: &mut Context<'_>, batch: &mut Batch<'_, T, E>) -> Pulled<E>
where
    T: Send + Sync,
    S: Stream<Item = Result<T, E>>,
{
    while batch.len() < BATCH {
        match catch_unwind(AssertUnwindSafe(|| upstream.as_mut().poll_next(cx))) {
            // The item's weigher, if any, runs in `push`: its panic is the upstream's (R9).
            Ok(Poll::Ready(Some(Ok(item)))) => {
                if catch_unwind(AssertUnwindSafe(|| batch.push(item))).is_err() {
                    return Pulled::Ended(End::Panicked);
                }
            }
            Ok(Poll::Ready(Some(Err(e)))) => return Pulled::Ended(End::upstream(e)),
            Ok(Poll::Ready(None)) => return Pulled::Ended(End::Done),
            Ok(Poll::Pending) if batch.is_empty() => return Pulled::Pending,
            Ok(Poll::Pending) => return Pulled::Items,
            Err(_panic) => return Pulled::Ended(End::Panicked),
        }
    }
    Pulled::Items
}
