//! streamflight on async-std: one upstream stream for every identical in-flight streaming request.
//!
//! [`Flights::request`] joins the live flight for a key or starts one; the
//! returned [`Subscription`] is a `Stream` of [`Event`]s. The decisions are
//! `streamflight-core`'s; this crate only runs each flight as an async-std task.
//!
//! **async-std is discontinued upstream** (RUSTSEC-2025-0052) and gets no more
//! fixes. This adapter stays for services already on it; a new project that
//! does not use tokio should take `streamflight-smol`, whose API is the same:
//! moving is a change of the `use` line (smol's global executor, like
//! async-std's, runs flights from any thread).
//!
//! ```
//! use futures::StreamExt;
//! use streamflight_async_std::{Event, Flights};
//!
//! async_std::task::block_on(async {
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
//! use streamflight_async_std::{Config, Flights, Overflow, Role};
//!
//! /// An upstream that answers `words` at once.
//! async fn answer(words: &'static [&str]) -> Result<impl futures::Stream<Item = Result<String, String>>, String> {
//!     Ok(futures::stream::iter(words.iter().map(|word| Ok(word.to_string()))))
//! }
//!
//! # async_std::task::block_on(async {
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
use std::time::Duration;

pub use streamflight_core::driver::{BuildError, Ready, Results, Runtime, Subscription};
/// An observer with a `tracing` span per flight and per request (feature `tracing`): the same
/// as [`streamflight_core::spans`].
#[cfg(feature = "tracing")]
pub use streamflight_core::spans;
pub use streamflight_core::{
    CancelError, Config, Event, Failure, FlightId, FlightSummary, LateJoin, Observer, Orphan, Outcome,
    Overflow, ParseIdError, RequestEvent, RequestId, ResumeError, Role, Stats, Weigher,
};

/// The manager on async-std: `request`, `cancel`, `stats`, `is_idle`, `new`, `with_runtime`, all
/// listed below (they are [`streamflight_core::driver::Flights`]'s, with the runtime filled in).
/// `try_new` and `try_with_runtime` build the same manager but return a [`BuildError`] where
/// `new` would panic: a [`Config::weigher`] of another item type than the manager's.
///
/// Flight tasks run on async-std's global executor, wherever `request` is
/// called; [`Flights::new`](streamflight_core::driver::Flights::new) and
/// [`Flights::with_runtime`](streamflight_core::driver::Flights::with_runtime)
/// with [`AsyncStd`] are the same:
///
/// ```
/// use futures::StreamExt;
/// use streamflight_async_std::{AsyncStd, Config, Event, Flights};
///
/// let flights: Flights<&str, u32, String> = Flights::with_runtime(Config::default(), AsyncStd);
/// let answer = flights.request("prompt", async { Ok(futures::stream::iter([Ok(1)])) });
/// let events = async_std::task::block_on(answer.collect::<Vec<_>>());
/// assert_eq!(events, [Event::Item(1), Event::Done]);
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
/// let flights: streamflight_async_std::Flights<&str, u32, Box<dyn std::error::Error + Send>> = Default::default();
/// let _ = flights.request("key", async { Ok(futures::stream::iter([Ok(1)])) });
/// ```
///
/// The same with `Sync`:
///
/// ```
/// let flights: streamflight_async_std::Flights<&str, u32, Box<dyn std::error::Error + Send + Sync>> = Default::default();
/// let _ = flights.request("key", async { Ok(futures::stream::iter([Ok(1)])) });
/// ```
pub type Flights<K, T, E> = streamflight_core::driver::Flights<K, T, E, AsyncStd>;

/// async-std as a streamflight [`Runtime`]: flight tasks run on its global executor.
#[derive(Clone, Copy, Debug, Default)]
pub struct AsyncStd;

impl Runtime for AsyncStd {
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> bool {
        drop(async_std::task::spawn(task));
        true
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        async_std::task::sleep(duration)
    }
}
