//! Hooks: an [`Observer`] the driver tells when a flight starts, streams, ends, and when a
//! request joins, leaves, detaches or resumes. Set with [`Config::observer`](crate::Config::observer).

use alloc::sync::Arc;
use core::fmt;

use crate::{FlightId, RequestId, Role};

/// What a manager tells as its flights and requests go; every method does nothing unless
/// overridden. Set one with [`Config::observer`](crate::Config::observer); without one the
/// driver makes no call at all (one branch on an `Option` per event, no allocation).
///
/// # When and where each hook runs
///
/// Every hook runs with none of the manager's locks held (as its wakes do), so a hook may call
/// the manager; it runs on the thread that made the event happen, so keep it short (count,
/// record a span, send on a channel) and never block.
///
/// | hook | when | on which task |
/// |---|---|---|
/// | [`flight_started`](Observer::flight_started) | a request leads a new flight ([R1](crate::design#r1)), before its task is spawned | the caller of `request` |
/// | [`first_item`](Observer::first_item) | the flight's first batch of items is published (readers may see it first) | the flight's task |
/// | [`flight_ended`](Observer::flight_ended) | the flight ended: its key is free already (or lingers, [R17](crate::design#r17)), and no subscriber has seen the end yet ([R7](crate::design#r7)); or it was aborted ([R11](crate::design#r11)) | the flight's task; for `Aborted`, whoever left last (a cancel, a drop, the manager's timer); for `NoRuntime`, whoever dropped the task |
/// | [`request`](Observer::request) `Joined` | a request is admitted, leader included, before its subscription is returned | the caller of `request`, `join` |
/// | `request` `Resumed` | a detached request got its new subscription ([R18](crate::design#r18)) | the caller of `resume` |
/// | `request` `Detached` | a subscription was detached within a resume window ([R18](crate::design#r18)) | the caller of `detach` |
/// | `request` `Cancelled` | a live request was cancelled ([R10](crate::design#r10), [R13](crate::design#r13)) | the caller of `cancel` |
/// | `request` `Dropped` | a live request's subscription was dropped, or detached with no window, or its window passed ([R12](crate::design#r12)) | the dropper; the manager's timer |
/// | `request` `Finished` | a request's subscription yielded its end (`Lagged` included) | the task polling it |
///
/// Each flight gets `flight_started` first and one `flight_ended` last; each request gets
/// `Joined` first and at most one of `Cancelled`, `Dropped`, `Finished` last. Events of
/// inputs made at once on several threads may reach the observer in either order (a
/// follower's `Joined` before its leader's `flight_started`): each is called after the input
/// that decided it, outside the lock.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
/// use futures::{StreamExt, stream};
/// use streamflight_core::{Config, FlightId, FlightSummary, Observer, Outcome};
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
///
/// /// Counts the flights that ended `Done`, and the requests they served.
/// #[derive(Default)]
/// struct Served { flights: AtomicU64, requests: AtomicU64 }
///
/// impl Observer for Served {
///     fn flight_ended(&self, _: FlightId, summary: FlightSummary) {
///         if summary.outcome == Outcome::Done {
///             self.flights.fetch_add(1, Relaxed);
///             self.requests.fetch_add(summary.served, Relaxed);
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let served = Arc::new(Served::default());
/// let flights = Flights::<&str, u32, String>::new(Config::default().observer(served.clone()));
/// let leader = flights.request("prompt", async { Ok(stream::iter([Ok(1), Ok(2)])) });
/// let follower = flights.request("prompt", async { Ok(stream::iter([Ok(1), Ok(2)])) });
/// assert_eq!(leader.collect::<Vec<_>>().await.len(), 3);
/// assert_eq!(follower.collect::<Vec<_>>().await.len(), 3);
/// assert_eq!((served.flights.load(Relaxed), served.requests.load(Relaxed)), (1, 2));
/// # }
/// ```
pub trait Observer: Send + Sync + 'static {
    /// A request leads the new flight `flight` ([R1](crate::design#r1)): its preparation is
    /// about to start.
    fn flight_started(&self, flight: FlightId) {
        let _ = flight;
    }

    /// `flight`'s first item was published: its time to first item ends here.
    fn first_item(&self, flight: FlightId) {
        let _ = flight;
    }

    /// `flight` ended, how and with what counts. Called once per flight, after its key was
    /// freed and before any subscriber can read its end.
    fn flight_ended(&self, flight: FlightId, summary: FlightSummary) {
        let _ = (flight, summary);
    }

    /// Something happened to the request `id`: see [`RequestEvent`].
    fn request(&self, id: RequestId, event: RequestEvent) {
        let _ = (id, event);
    }
}

/// How a flight ended, as [`Observer::flight_ended`] tells it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The upstream finished ([R7](crate::design#r7)); the answer may linger ([R17](crate::design#r17)).
    Done,
    /// Preparation or the upstream returned an error ([R5](crate::design#r5), [R8](crate::design#r8)).
    Failed,
    /// Preparation or the upstream panicked ([R9](crate::design#r9)).
    Panicked,
    /// There was no runtime to run the flight on
    /// ([`Failure::NoRuntime`](crate::Failure::NoRuntime)).
    NoRuntime,
    /// Nobody was left to listen, and the flight was abandoned: its preparation or upstream
    /// dropped ([R11](crate::design#r11), `Orphan::Abort`).
    Aborted,
}

impl Outcome {
    /// `done`, `failed`, `panicked`, `no_runtime` or `aborted`: a metric label or a log field.
    ///
    /// ```
    /// assert_eq!(streamflight_core::Outcome::Aborted.as_str(), "aborted");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed => "failed",
            Outcome::Panicked => "panicked",
            Outcome::NoRuntime => "no_runtime",
            Outcome::Aborted => "aborted",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A flight's end and its counts, as [`Observer::flight_ended`] tells it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlightSummary {
    /// How it ended.
    pub outcome: Outcome,
    /// Items its upstream produced (each stored once, whatever the number of readers).
    pub items: u64,
    /// Requests it served by its end: its leader, followers and joiners (requests that join a
    /// lingering answer later, [R17](crate::design#r17), are told by their `Joined` alone).
    pub served: u64,
}

/// What happened to a request, as [`Observer::request`] tells it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestEvent {
    /// The request was admitted to `flight` as `role` ([R1](crate::design#r1)-[R3](crate::design#r3),
    /// [R17](crate::design#r17)): a `Leader` started it, the others joined it.
    Joined {
        /// The flight it reads.
        flight: FlightId,
        /// Its role there.
        role: Role,
    },
    /// It was cancelled ([R10](crate::design#r10), [R11](crate::design#r11)): its stream yields `Cancelled` next. Its end.
    Cancelled,
    /// Its subscription was dropped, or detached with no resume window, or its window passed
    /// ([R12](crate::design#r12), [R18](crate::design#r18)). Its end.
    Dropped,
    /// Its client went away for now: it stays live for the resume window ([R18](crate::design#r18)).
    Detached,
    /// A detached request has a new subscription, reading from item `from` ([R18](crate::design#r18)).
    Resumed {
        /// The first item it reads.
        from: u64,
    },
    /// Its subscription yielded its end: its flight's, or `Lagged` ([R14](crate::design#r14), [R15](crate::design#r15)). Its end.
    Finished,
}

/// The observer a [`Config`](crate::Config) holds, if any: compared by identity, so that two
/// configurations are equal when they hold the same observer.
#[derive(Clone, Default)]
pub(crate) struct Slot(pub(crate) Option<Arc<dyn Observer>>);

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Slot {}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Some(<observer>)" } else { "None" })
    }
}
