//! streamflight on tokio: one upstream stream for every identical in-flight streaming request.
//!
//! [`Flights::request`] joins the live flight for a key or starts one; the
//! returned [`Subscription`] is a `Stream` of [`Event`]s. The decisions are
//! `streamflight-core`'s; this crate only runs each flight as a tokio task.
//!
//! ```
//! use futures::StreamExt;
//! use streamflight_tokio::{Event, Flights};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let flights: Flights<String, String, String> = Flights::default();
//! let upstream = async { Ok(futures::stream::iter(["Hello", ", world"].map(|t| Ok(t.to_string())))) };
//! let mut answer = flights.request("the prompt".to_string(), upstream);
//! assert_eq!(answer.next().await, Some(Event::Item("Hello".to_string())));
//! assert_eq!(answer.next().await, Some(Event::Item(", world".to_string())));
//! assert_eq!(answer.next().await, Some(Event::Done));
//! assert_eq!(answer.next().await, None);
//! # }
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
//! use streamflight_tokio::{Config, Flights, Overflow, Role};
//!
//! /// An upstream that answers `words` at once.
//! async fn answer(words: &'static [&str]) -> Result<impl futures::Stream<Item = Result<String, String>>, String> {
//!     Ok(futures::stream::iter(words.iter().map(|word| Ok(word.to_string()))))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
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
//! # }
//! ```
//!
//! # Features
//!
//! - `axum`: [`axum::Answer`], a subscription as a response whose status waits for its first
//!   event; [`Answer::sse_resumable`](axum::Answer::sse_resumable) and [`axum::resume`], a cut
//!   stream resumed from its client's `Last-Event-ID`.
//! - `tower`: [`tower::CoalesceLayer`], any HTTP service whose response body streams, coalesced
//!   by a key of the request (its body as [`json`]'s lossless canonical JSON by default).
//! - `sse`: [`sse`], the bounded decoder of an upstream's Server-Sent Events; with `reqwest`,
//!   [`sse::events`], a `reqwest::Response` as a `Stream` of them.
//! - `tracing`: [`spans::Spans`], an [`Observer`] with a `tracing` span per flight and per
//!   request. An observer of your own needs no feature: set it with [`Config::observer`].
#![forbid(unsafe_code)]

#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "sse")]
pub mod sse;
#[cfg(feature = "tower")]
pub mod tower;

/// Lossless canonical JSON (feature `tower`): the tower layer's default body key, and the
/// gateway's. The same as [`streamflight_core::json`].
#[cfg(feature = "tower")]
pub use streamflight_core::json;

use std::future::Future;
use std::time::Duration;

use tokio::runtime::Handle;

pub use streamflight_core::driver::{BuildError, Ready, Results, Runtime, Subscription};
/// An observer with a `tracing` span per flight and per request (feature `tracing`): the same
/// as [`streamflight_core::spans`].
#[cfg(feature = "tracing")]
pub use streamflight_core::spans;
pub use streamflight_core::{
    CancelError, Config, Event, Failure, FlightId, FlightSummary, LateJoin, Observer, Orphan, Outcome,
    Overflow, ParseIdError, RequestEvent, RequestId, ResumeError, Role, Stats, Weigher,
};

/// The manager on tokio: `request`, `cancel`, `stats`, `is_idle`, `new`, `with_runtime`, all
/// listed below (they are [`streamflight_core::driver::Flights`]'s, with the runtime filled in).
/// `try_new` and `try_with_runtime` build the same manager but return a [`BuildError`] where
/// `new` would panic: a [`Config::weigher`] of another item type than the manager's.
///
/// [`Flights::new`](streamflight_core::driver::Flights::new) (or `default`)
/// spawns each flight's task on the runtime `request` is called from: called
/// outside any runtime, the flight ends at once with [`Failure::NoRuntime`].
/// [`Flights::with_runtime`](streamflight_core::driver::Flights::with_runtime)
/// with [`Tokio::with_handle`] spawns them on the given runtime, wherever
/// `request` is called:
///
/// ```
/// use futures::StreamExt;
/// use streamflight_tokio::{Config, Event, Failure, Flights, Tokio};
///
/// let runtime = tokio::runtime::Runtime::new().unwrap();
/// // Neither built nor called inside the runtime.
/// let flights: Flights<&str, u32, String> =
///     Flights::with_runtime(Config::default(), Tokio::with_handle(runtime.handle().clone()));
/// let answer = flights.request("prompt", async { Ok(futures::stream::iter([Ok(1)])) });
/// assert_eq!(runtime.block_on(answer.collect::<Vec<_>>()), [Event::Item(1), Event::Done]);
///
/// // On the current runtime, outside any: a clean failure, no panic.
/// let current: Flights<&str, u32, String> = Flights::default();
/// let mut answer = current.request("prompt", async { Ok(futures::stream::iter([Ok(1)])) });
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
/// let flights: streamflight_tokio::Flights<&str, u32, Box<dyn std::error::Error + Send>> = Default::default();
/// let _ = flights.request("key", async { Ok(futures::stream::iter([Ok(1)])) });
/// ```
///
/// The same with `Sync`:
///
/// ```
/// let flights: streamflight_tokio::Flights<&str, u32, Box<dyn std::error::Error + Send + Sync>> = Default::default();
/// let _ = flights.request("key", async { Ok(futures::stream::iter([Ok(1)])) });
/// ```
pub type Flights<K, T, E> = streamflight_core::driver::Flights<K, T, E, Tokio>;

/// tokio as a streamflight [`Runtime`]: flight tasks run on the runtime of a
/// [`Handle`], or on the one current where `request` is called (the default).
#[derive(Clone, Debug, Default)]
pub struct Tokio {
    handle: Option<Handle>,
}

impl Tokio {
    /// Flight tasks on the runtime `request` is called from (the default).
    pub fn current() -> Self {
        Tokio { handle: None }
    }

    /// Flight tasks on `handle`'s runtime, wherever `request` is called.
    /// See [`Flights`] for an example.
    pub fn with_handle(handle: Handle) -> Self {
        Tokio { handle: Some(handle) }
    }
}

impl Runtime for Tokio {
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> bool {
        let handle = match &self.handle {
            Some(handle) => handle.clone(),
            None => match Handle::try_current() {
                Ok(current) => current,
                Err(_) => return false,
            },
        };
        drop(handle.spawn(task));
        true
    }

    /// tokio's timer: made when first polled, in the timer's task, on the
    /// flights' runtime, which must have its time driver (`enable_time`, or
    /// `enable_all`, as `#[tokio::main]` does) when a linger or a resume
    /// window is set.
    // Not an `async fn`: the timer must not borrow `self` (it outlives it).
    #[allow(clippy::manual_async_fn)]
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        async move { tokio::time::sleep(duration).await }
    }
}
