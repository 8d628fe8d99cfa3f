//! The driver: carries out the [`Machine`](crate::Machine)'s actions with real tasks and one
//! [`History`](crate::history::History) per flight. Every adapter is this module plus a [`Runtime`].
//!
//! # Structure
//!
//! - [`Flights`] (here): the manager a user holds; every call is one input.
//! - `registry`: the machine and the handles of flights and requests behind
//!   the manager's one lock. Every input takes the same path: fed to the
//!   machine under the lock, every action drained into effects, the lock
//!   released, the effects run.
//! - `task`: a flight's task, a named `Future` (preparing, streaming, over)
//!   that reports to the registry and writes the flight's history.
//! - `abort`: the signal that stops a task from outside ([R11](crate::design#r11)).
//! - `slots`: the per-flight and per-request handles, by the machine's id slots.
//! - [`Subscription`]: one request's stream of events, and what it tells the
//!   manager (its cancel, its end, its drop).
//!
//! # Locks
//!
//! The order, written here once: the history's writer, then the registry
//! (the manager's one lock), then the history's state, then its waker table.
//! Only a flight's task takes its history's writer: it holds it while it
//! polls its upstream straight into a batch (user code that may call the
//! manager, hence the writer first). The registry takes a history lock only
//! to subscribe (the waker table); the abort signal's lock is taken alone.
//! Nothing is woken, spawned, published or dropped under the registry (save
//! a key, dropped by the machine): those are effects, run once it is
//! released, so a waker or a drop may call back into the manager. User code run under the registry: the key's `Hash`, `Eq` and
//! `Drop`, nothing else.

mod abort;
mod build;
mod registry;
mod slots;
mod subscription;
mod task;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(test)]
mod testing;
#[cfg(all(test, not(loom)))]
mod tests;

use core::future::Future;
use core::hash::Hash;
use core::time::Duration;

use futures_core::Stream;

pub use self::build::BuildError;
use self::registry::Shared;
use self::subscription::control;
pub use self::subscription::{Ready, Results, Subscription};
use self::task::FlightTask;
use crate::sync::Arc;
use crate::{CancelError, Config, RequestId, ResumeError, Stats};

/// The one thing an adapter supplies: somewhere to run each flight's task.
pub trait Runtime: Send + Sync + 'static {
    /// Spawns `task` to run to completion, detached. Returns `false` if there
    /// is nowhere to run it; `task` must then be dropped unpolled, and its
    /// drop ends the flight with [`Failure::NoRuntime`](crate::Failure::NoRuntime)
    /// instead of a panic.
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> bool;

    /// A future that completes `duration` after it is first polled: the
    /// manager's one timer (a linger's end, [R17](crate::design#r17); a resume window's, [R18](crate::design#r18))
    /// sleeps on it, in a task of its own. Only polled inside that task, so
    /// it may need the runtime's context when polled, not when made.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static;
}

/// The manager: joins the live flight for a key or starts one. A cheap
/// `Clone + Send + Sync` handle; every clone is the same manager.
///
/// Each adapter names it with its runtime filled in (`streamflight_tokio::Flights<K, T, E>`).
pub struct Flights<K, T, E, R> {
    shared: Arc<Shared<K, T, E, R>>,
}

impl<K, T, E, R> Clone for Flights<K, T, E, R> {
    fn clone(&self) -> Self {
        Flights { shared: Arc::clone(&self.shared) }
    }
}

impl<K, T, E, R> core::fmt::Debug for Flights<K, T, E, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let registry = self.shared.read();
        f.debug_struct("Flights")
            .field("config", registry.machine().config())
            .field("stats", &registry.machine().stats())
            .finish_non_exhaustive()
    }
}

impl<K, T, E, R> Default for Flights<K, T, E, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    R: Runtime + Default,
{
    fn default() -> Self {
        Flights::new(Config::default())
    }
}

impl<K, T, E, R> Flights<K, T, E, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    R: Runtime,
{
    /// A manager with no flight, on the runtime's default value (for the
    /// adapters: the runtime `request` is called from).
    ///
    /// # Panics
    ///
    /// As [`with_runtime`](Flights::with_runtime): a [`weigher`](Config::weigher) of another
    /// item type than `T`. [`try_new`](Flights::try_new) says so with an error instead.
    pub fn new(config: Config) -> Self
    where
        R: Default,
    {
        Flights::with_runtime(config, R::default())
    }

    /// As [`new`](Flights::new), but a config that cannot build this manager is an error
    /// rather than a panic: a [`weigher`](Config::weigher) of another item type than `T`.
    ///
    /// ```
    /// use streamflight_core::Config;
    /// use streamflight_core::driver::{BuildError, Flights, Runtime};
    /// # #[derive(Default)]
    /// # struct Nowhere;
    /// # impl Runtime for Nowhere {
    /// #     fn spawn<F: Future<Output = ()> + Send + 'static>(&self, _: F) -> bool { false }
    /// #     fn sleep(&self, _: std::time::Duration) -> impl Future<Output = ()> + Send + 'static {
    /// #         std::future::pending()
    /// #     }
    /// # }
    ///
    /// // Items are `u32`s, but the weigher weighs `String`s.
    /// let config = Config::default().weigher(|text: &String| text.len()).flight_bytes(1 << 20);
    /// let built = Flights::<&str, u32, String, Nowhere>::try_new(config);
    /// assert!(matches!(built, Err(BuildError::WeigherType { items: "u32", .. })));
    ///
    /// let config = Config::default().weigher(|n: &u32| *n as usize).flight_bytes(1 << 20);
    /// assert!(Flights::<&str, u32, String, Nowhere>::try_new(config).is_ok());
    /// ```
    pub fn try_new(config: Config) -> Result<Self, BuildError>
    where
        R: Default,
    {
        Flights::try_with_runtime(config, R::default())
    }

    /// As [`with_runtime`](Flights::with_runtime), but a config that cannot build this manager
    /// is an error rather than a panic (see [`try_new`](Flights::try_new)).
    pub fn try_with_runtime(config: Config, runtime: R) -> Result<Self, BuildError> {
        Ok(Flights { shared: Shared::try_new(config, runtime)? })
    }

    /// A manager with no flight whose flights run on `runtime`: a handle on a
    /// runtime the manager was not built in, or a dedicated one.
    ///
    /// # Panics
    ///
    /// If `config` has a [`weigher`](Config::weigher) of another item type than `T`: a
    /// type error the config cannot catch (it is not generic over the item), caught here,
    /// when the manager is built, rather than at the first item.
    /// [`try_with_runtime`](Flights::try_with_runtime) says so with an error instead.
    ///
    /// ```
    /// use futures::{StreamExt, stream};
    /// use std::time::Duration;
    /// use streamflight_core::driver::{Flights, Runtime};
    /// use streamflight_core::{Config, Event};
    ///
    /// /// A runtime of one's own: here, a handle on a tokio runtime.
    /// struct OnHandle(tokio::runtime::Handle);
    /// impl Runtime for OnHandle {
    ///     fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> bool {
    ///         drop(self.0.spawn(task));
    ///         true
    ///     }
    ///     fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send + 'static {
    ///         async move { tokio::time::sleep(d).await }
    ///     }
    /// }
    ///
    /// let runtime = tokio::runtime::Runtime::new().unwrap();
    /// // Built outside the runtime, and `request` called outside it too.
    /// let flights: Flights<&str, u32, String, OnHandle> =
    ///     Flights::with_runtime(Config::default(), OnHandle(runtime.handle().clone()));
    /// let answer = flights.request("prompt", async { Ok(stream::iter([Ok(1)])) });
    /// let events = runtime.block_on(answer.collect::<Vec<_>>());
    /// assert_eq!(events, [Event::Item(1), Event::Done]);
    /// ```
    pub fn with_runtime(config: Config, runtime: R) -> Self {
        match Flights::try_with_runtime(config, runtime) {
            Ok(flights) => flights,
            Err(error) => panic!("{error}"),
        }
    }

    /// Joins the live flight for `key`, or starts one ([R1](crate::design#r1)-[R3](crate::design#r3)). `start` is
    /// polled only when this request leads, and only by the flight's own task;
    /// a follower's `start` is dropped unpolled. It prepares and returns the
    /// upstream stream. If the runtime has nowhere to run the flight (tokio's
    /// default, called outside any runtime), the flight ends at once with
    /// [`Failure::NoRuntime`](crate::Failure::NoRuntime), never a panic.
    ///
    /// The returned [`Subscription`] yields the flight's items (from the
    /// first one, or the tail under [`LateJoin::Tail`](crate::LateJoin::Tail)),
    /// then exactly one end.
    ///
    /// ```
    /// use futures::{StreamExt, stream};
    /// use std::time::Duration;
    /// use streamflight_core::driver::{Flights, Runtime};
    /// use streamflight_core::{Event, Role};
    ///
    /// // What an adapter supplies (streamflight-tokio names this `Tokio`).
    /// #[derive(Default)]
    /// struct OnTokio;
    /// impl Runtime for OnTokio {
    ///     fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> bool {
    ///         drop(tokio::spawn(task));
    ///         true
    ///     }
    ///     fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send + 'static {
    ///         async move { tokio::time::sleep(d).await }
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
        let (admission, reader, started) = self.shared.request(key);
        match started {
            Some(started) => {
                let task = FlightTask::new(Arc::clone(&self.shared), started, start);
                // Refused, the task is dropped unpolled, and its drop ends the flight.
                let _spawned = self.shared.runtime.spawn(task);
            }
            // A follower's or joiner's `start` is dropped unpolled, outside the lock.
            None => drop(start),
        }
        Subscription::new(admission, reader, control(&self.shared))
    }

    /// Joins the joinable flight for `key` as [`request`](Flights::request) would, but never
    /// starts one: it follows a preparing flight ([R2](crate::design#r2)), joins a streaming
    /// one under the late-join policy ([R3](crate::design#r3)), or reads a lingering one's
    /// whole answer ([R17](crate::design#r17)). With nothing to join (no flight for `key`,
    /// or a streaming one under [`LateJoin::NewFlight`](crate::LateJoin::NewFlight), where a
    /// request would start a fresh flight) it returns `None` and changes nothing: no request
    /// is counted, and `key` is neither cloned nor kept. For a caller that must never start
    /// upstream work, such as one serving "resume this answer" from the live flights.
    ///
    /// ```
    /// use futures::{StreamExt, stream};
    /// use std::time::Duration;
    /// use streamflight_core::driver::{Flights, Runtime};
    /// use streamflight_core::{Config, Event, Role};
    ///
    /// #[derive(Default)]
    /// struct OnTokio;
    /// impl Runtime for OnTokio {
    ///     fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> bool {
    ///         drop(tokio::spawn(task));
    ///         true
    ///     }
    ///     fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send + 'static {
    ///         async move { tokio::time::sleep(d).await }
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let config = Config::default().linger(Duration::from_secs(60));
    /// let flights: Flights<&str, u32, String, OnTokio> = Flights::new(config);
    /// assert!(flights.join(&"prompt").is_none(), "nothing to join, and nothing started");
    /// assert_eq!(flights.stats().requests, 0);
    ///
    /// let leader = flights.request("prompt", async { Ok(stream::iter([Ok(1), Ok(2)])) });
    /// let follower = flights.join(&"prompt").expect("the flight is preparing");
    /// assert_eq!(follower.role(), Role::Follower);
    /// let expected = [Event::Item(1), Event::Item(2), Event::Done];
    /// assert_eq!(leader.collect::<Vec<_>>().await, expected);
    /// assert_eq!(follower.collect::<Vec<_>>().await, expected);
    ///
    /// // Finished, the answer lingers: a join reads all of it again, with no new upstream.
    /// let again = flights.join(&"prompt").expect("the answer lingers");
    /// assert_eq!(again.collect::<Vec<_>>().await, expected);
    /// assert_eq!(flights.stats().flights, 1);
    /// # }
    /// ```
    pub fn join(&self, key: &K) -> Option<Subscription<T, E>> {
        let (admission, reader) = self.shared.join(key)?;
        Some(Subscription::new(admission, reader, control(&self.shared)))
    }

    /// Cancels a live request ([R10](crate::design#r10), [R11](crate::design#r11), [R13](crate::design#r13)): its next event is `Cancelled`,
    /// then its stream closes; its flight goes on for the others, or is
    /// aborted if it was the last one. An unknown or ended id is an error and
    /// changes nothing.
    pub fn cancel(&self, id: RequestId) -> Result<(), CancelError> {
        self.shared.cancel(id)
    }

    /// Resumes a detached request ([R18](crate::design#r18)) from item `from` (the number of
    /// items its client already has): a new subscription that yields the
    /// items from there, the live ones, then the request's one end ([R14](crate::design#r14)
    /// holds across the detach). Within the resume window only, and once at
    /// a time.
    ///
    /// # Errors
    ///
    /// [`ResumeError::UnknownRequest`] if the request ended or its window
    /// passed; [`ResumeError::NotDetached`] if it has a subscription;
    /// [`ResumeError::Released`] if items from `from` on were released
    /// (`history_limit`, [R15](crate::design#r15)); [`ResumeError::Ahead`] past the items so far.
    /// The request stays detached after an error.
    pub fn resume(&self, id: RequestId, from: u64) -> Result<Subscription<T, E>, ResumeError> {
        let (admission, reader) = self.shared.resume(id, from)?;
        Ok(Subscription::new(admission, reader, control(&self.shared)))
    }

    /// The manager's counters.
    pub fn stats(&self) -> Stats {
        self.shared.read().machine().stats()
    }

    /// Whether the manager holds no state for any key, flight or request ([R16](crate::design#r16)).
    pub fn is_idle(&self) -> bool {
        let registry = self.shared.read();
        registry.machine().is_idle() && registry.holds_nothing()
    }
}
