//! streamflight on smol: one upstream stream for every identical in-flight streaming request.
//!
//! [`Flights::request`] joins the live flight for a key or starts one; the
//! returned [`Subscription`] is a `Stream` of [`Event`]s. The decisions are
//! `streamflight-core`'s; this crate only runs each flight as a task on an
//! async-executor [`Executor`]: smol's global one (the default), or one of
//! your own ([`Smol::with_executor`]).
//!
//! For a new project that does not use tokio, this is the adapter to pick:
//! async-std, the other one, is discontinued upstream.
//!
//! ```
//! use futures::StreamExt;
//! use streamflight_smol::{Event, Flights};
//!
//! smol::block_on(async {
//!     let flights: Flights<String, String, String> = Flights::default();
//!     let upstream = async { Ok(futures::stream::iter(["Hello", ", world"].map(|t| Ok(t.to_string())))) };
//!     let mut answer = flights.request("the prompt".to_string(), upstream);
//!     assert_eq!(answer.next().await, Some(Event::Item("Hello".to_string())));
//!     assert_eq!(answer.next().await, Some(Event::Item(", world".to_string())));
//!     assert_eq!(answer.next().await, Some(Event::Done));
//!     assert_eq!(answer.next().await, None);
//! });
//! ```
//!
//! # Bounds
//!
//! A flight's history is shared by its subscribers and unbounded by default. Bound it in items
//! ([`Config::history_limit`]) or in bytes ([`Config::flight_bytes`], each item weighed once by
//! [`Config::weigher`]); [`Config::overflow`] says what a late request gets from a flight that
//! released its first items, and whether that flight lingers. [`Config::linger_budget`] caps
//! what finished answers held for late requests ([`Config::linger`]) weigh in all: the oldest
//! go first, counted in [`Stats::evicted`].
//!
//! ```
//! use std::time::Duration;
//! use futures::StreamExt;
//! use streamflight_smol::{Config, Flights, Overflow, Role};
//!
//! /// An upstream that answers `words` at once.
//! async fn answer(words: &'static [&str]) -> Result<impl futures::Stream<Item = Result<String, String>>, String> {
//!     Ok(futures::stream::iter(words.iter().map(|word| Ok(word.to_string()))))
//! }
//!
//! # smol::block_on(async {
//! let config = Config::default()
//!     .weigher(|text: &String| text.len())
//!     .flight_bytes(1 << 20) // each answer: its newest MiB
//!     .overflow(Overflow::Lagged) // a late joiner of a longer one is told what it missed
//!     .linger(Duration::from_secs(60))
//!     .linger_budget(16); // finished answers: 16 bytes in all
//! let flights: Flights<&str, String, String> = Flights::new(config);
//! let first = flights.request("first", answer(&["Hello", ", world"])); // 12 bytes
//! assert_eq!(first.count().await, 3);
//! assert_eq!(flights.request("first", answer(&[])).role(), Role::Joiner, "it lingers");
//! let second = flights.request("second", answer(&["Goodbye"])); // 7 more: past 16
//! assert_eq!(second.count().await, 2);
//! assert_eq!(flights.stats().evicted, 1, "the oldest answer made room");
//! assert_eq!(flights.request("first", answer(&[])).role(), Role::Leader);
//! # });
//! ```
#![forbid(unsafe_code)]

/// Server-Sent Events from an upstream (feature `sse`): `streamflight-core`'s bounded decoder,
/// and [`sse::Events`], any stream of byte chunks (a response body) as a stream of its events.
#[cfg(feature = "sse")]
pub use streamflight_core::sse;

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use smol::Executor;

pub use streamflight_core::driver::{BuildError, Ready, Results, Runtime, Subscription};
/// An observer with a `tracing` span per flight and per request (feature `tracing`): the same
/// as [`streamflight_core::spans`].
#[cfg(feature = "tracing")]
pub use streamflight_core::spans;
pub use streamflight_core::{
    CancelError, Config, Event, Failure, FlightId, FlightSummary, LateJoin, Observer, Orphan, Outcome,
    Overflow, ParseIdError, RequestEvent, RequestId, ResumeError, Role, Stats, Weigher,
};

/// The manager on smol: `request`, `cancel`, `stats`, `is_idle`, `new`, `with_runtime`, all
/// listed below (they are [`streamflight_core::driver::Flights`]'s, with the runtime filled in).
/// `try_new` and `try_with_runtime` build the same manager but return a [`BuildError`] where
/// `new` would panic: a [`Config::weigher`] of another item type than the manager's.
///
/// [`Flights::new`](streamflight_core::driver::Flights::new) (or `default`)
/// spawns each flight's task on smol's global executor, which is started on
/// first use and never stops: `request` works from any thread, inside an
/// async context or not, and its flights never end with
/// [`Failure::NoRuntime`].
/// [`Flights::with_runtime`](streamflight_core::driver::Flights::with_runtime)
/// with [`Smol::with_executor`] spawns them on an executor of your own, which
/// runs them while someone runs it ([`Executor::run`]); once it is dropped,
/// its flights end with [`Failure::NoRuntime`]:
///
/// ```
/// use std::sync::Arc;
///
/// use futures::StreamExt;
/// use streamflight_smol::{Config, Event, Failure, Flights, Smol};
///
/// let executor = Arc::new(smol::Executor::new());
/// let flights: Flights<&str, u32, String> =
///     Flights::with_runtime(Config::default(), Smol::with_executor(&executor));
/// let answer = flights.request("prompt", async { Ok(futures::stream::iter([Ok(1)])) });
/// // This thread runs the executor, and so the flight, while it reads the answer.
/// let events = smol::block_on(executor.run(answer.collect::<Vec<_>>()));
/// assert_eq!(events, [Event::Item(1), Event::Done]);
///
/// // The executor gone, there is nowhere to run a flight: a clean failure, no panic.
/// drop(executor);
/// let mut answer = flights.request("prompt", async { Ok(futures::stream::iter([Ok(1)])) });
/// let end = futures::executor::block_on(answer.next());
/// assert_eq!(end, Some(Event::Failed(Failure::NoRuntime)));
/// ```
///
/// # What the key, the items and the error must be
///
/// `K: Hash + Eq + Clone + Send + Sync + 'static` (the key identical requests share),
/// `T: Clone + Send + Sync + 'static` (an item: every subscriber gets its own clone, so a cheap
/// clone such as `Bytes` or `Arc<str>` keeps fan-out cheap) and `E: Send + Sync + 'static` (the
/// upstream's error, shared by every subscriber behind an `Arc`). A boxed error must say `Sync`
/// too: `Box<dyn Error + Send + Sync>` (or `anyhow::Error`), not `Box<dyn Error + Send>`, which
/// the compiler refuses with E0277 where the manager is used:
///
/// ```compile_fail,E0277
/// let flights: streamflight_smol::Flights<&str, u32, Box<dyn std::error::Error + Send>> = Default::default();
/// let _ = flights.request("key", async { Ok(futures::stream::iter([Ok(1)])) });
/// ```
///
/// The same with `Sync`:
///
/// ```
/// let flights: streamflight_smol::Flights<&str, u32, Box<dyn std::error::Error + Send + Sync>> = Default::default();
/// let _ = flights.request("key", async { Ok(futures::stream::iter([Ok(1)])) });
/// ```
pub type Flights<K, T, E> = streamflight_core::driver::Flights<K, T, E, Smol>;

/// smol as a streamflight [`Runtime`]: flight tasks run on smol's global
/// executor (the default), or on an [`Executor`] of your own.
#[derive(Clone, Debug, Default)]
pub struct Smol {
    // Weak: a manager must not keep an executor alive that nobody runs any
    // more (its flights would hang instead of ending). It also breaks the
    // cycle executor -> flight task -> manager -> executor.
    executor: Option<Weak<Executor<'static>>>,
}

impl Smol {
    /// Flight tasks on smol's global executor (the default): always there,
    /// so `request` never fails with [`Failure::NoRuntime`]. It runs on one
    /// thread unless the `SMOL_THREADS` variable says otherwise; a busy
    /// service may prefer an executor of its own ([`Smol::with_executor`]).
    ///
    /// ```
    /// use futures::StreamExt;
    /// use streamflight_smol::{Config, Event, Flights, Smol};
    ///
    /// let flights: Flights<&str, u32, String> = Flights::with_runtime(Config::default(), Smol::global());
    /// // Any thread will do, inside an executor or not.
    /// let answer = flights.request("prompt", async { Ok(futures::stream::iter([Ok(1)])) });
    /// let events = futures::executor::block_on(answer.collect::<Vec<_>>());
    /// assert_eq!(events, [Event::Item(1), Event::Done]);
    /// ```
    pub fn global() -> Self {
        Smol { executor: None }
    }

    /// Flight tasks on `executor` ([`smol::Executor`] is async-executor's
    /// `Executor`), wherever `request` is called. They run while some thread
    /// runs it ([`Executor::run`]). The manager holds it weakly: once its
    /// last `Arc` is dropped, its pending flights and any later ones end with
    /// [`Failure::NoRuntime`]. See also [`Flights`].
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// use futures::StreamExt;
    /// use streamflight_smol::{Config, Event, Flights, Smol};
    ///
    /// // An executor of the service's own, run by two threads until `stop` is dropped.
    /// let executor = Arc::new(smol::Executor::new());
    /// let (stop, stopped) = smol::channel::bounded::<()>(1);
    /// let workers: Vec<_> = (0..2)
    ///     .map(|_| {
    ///         let (executor, stopped) = (executor.clone(), stopped.clone());
    ///         std::thread::spawn(move || smol::block_on(executor.run(stopped.recv())))
    ///     })
    ///     .collect();
    ///
    /// let flights: Flights<&str, u32, String> =
    ///     Flights::with_runtime(Config::default(), Smol::with_executor(&executor));
    /// let answer = flights.request("prompt", async { Ok(futures::stream::iter([Ok(1), Ok(2)])) });
    /// let events = smol::block_on(answer.collect::<Vec<_>>());
    /// assert_eq!(events, [Event::Item(1), Event::Item(2), Event::Done]);
    ///
    /// drop(stop);
    /// for worker in workers {
    ///     let _closed = worker.join().unwrap();
    /// }
    /// ```
    pub fn with_executor(executor: &Arc<Executor<'static>>) -> Self {
        Smol { executor: Some(Arc::downgrade(executor)) }
    }
}

impl Runtime for Smol {
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> bool {
        // A dropped `Task` cancels its future: each one is detached.
        match &self.executor {
            None => smol::spawn(task).detach(),
            Some(executor) => match executor.upgrade() {
                Some(executor) => executor.spawn(task).detach(),
                None => return false,
            },
        }
        true
    }

    // Not an `async fn`: the timer must not borrow `self` (it outlives it).
    #[allow(clippy::manual_async_fn)]
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        async move {
            smol::Timer::after(duration).await;
        }
    }
}
