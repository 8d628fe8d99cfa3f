//! The scenario suite of streamflight: each scenario is written once, generic over a [`TestRuntime`],
//! and the [`scenarios!`] macro runs it on every adapter (tokio and async-std).
//!
//! A scenario is an `async fn name<R: TestRuntime>()` driving a
//! [`Flights<K, T, E, R>`](Flights) — the very type each adapter names — with
//! the test doubles of [`doubles`] and the deadline-bound waits of [`wait`].
//! Nothing here sleeps to synchronise: every wait is on a condition, with a deadline.

pub mod doubles;
pub mod fuzz;
mod runtimes;
pub mod wait;

use std::future::Future;
use std::panic::{AssertUnwindSafe, resume_unwind};
use std::pin::Pin;
use std::time::Duration;

use futures::FutureExt;

pub use streamflight_async_std::AsyncStd;
pub use streamflight_core::driver::{Flights, Runtime, Subscription};
pub use streamflight_core::{CancelError, Config, Event, Failure, LateJoin, Orphan, RequestId, Role, Stats};
pub use streamflight_tokio::Tokio;

/// How long a whole scenario may take before it fails as hung.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(30);

/// A streamflight [`Runtime`] the suite can drive: run a scenario, spawn client tasks, tell time.
pub trait TestRuntime: Runtime + Default + Sized {
    /// The runtime's name, for failure messages.
    const NAME: &'static str;

    /// Runs `scenario` to completion on the calling thread, inside this runtime
    /// (so that [`Runtime::spawn`] finds it). Panics propagate.
    fn block_on<F: Future<Output = ()>>(scenario: F);

    /// Spawns a client task on this runtime; [`Client::join`] waits for its
    /// output and re-raises its panic, if it had one.
    fn spawn_client<F>(task: F) -> Client<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static;

    /// A timer that fires once `duration` has passed.
    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send + 'static;
}

/// The join handle of a client task spawned by [`TestRuntime::spawn_client`].
#[must_use = "a client's panics surface only when it is joined"]
pub struct Client<T> {
    handle: Pin<Box<dyn Future<Output = std::thread::Result<T>> + Send>>,
}

impl<T> Client<T> {
    /// Wraps a runtime's join handle of a task whose body was made unwind-safe by [`catching`].
    fn new(handle: impl Future<Output = std::thread::Result<T>> + Send + 'static) -> Self {
        Client { handle: Box::pin(handle) }
    }

    /// Waits for the task's output; a panic in the task is resumed here.
    pub async fn join(self) -> T {
        match self.handle.await {
            Ok(output) => output,
            Err(panic) => resume_unwind(panic),
        }
    }
}

/// `task` with its panic caught, so that every runtime reports it the same way through [`Client::join`].
fn catching<F: Future>(task: F) -> impl Future<Output = std::thread::Result<F::Output>> {
    AssertUnwindSafe(task).catch_unwind()
}

/// Runs one scenario on `R` with the [`SCENARIO_LIMIT`] deadline.
pub fn run<R: TestRuntime>(name: &str, scenario: impl Future<Output = ()>) {
    R::block_on(async {
        if wait::within::<R, _>(SCENARIO_LIMIT, scenario).await.is_none() {
            panic!("scenario {name} on {} did not finish within {SCENARIO_LIMIT:?}", R::NAME);
        }
    });
}

/// A [`Stats`] with the named fields set and every other field 0:
/// `stats! { requests: 2, flights: 1 }`.
#[macro_export]
macro_rules! stats {
    ($($field:ident: $value:expr),* $(,)?) => {{
        let mut stats = $crate::Stats::default();
        $(stats.$field = $value;)*
        stats
    }};
}

/// Runs each listed scenario (`async fn name<R: TestRuntime>()` in the calling
/// module) on both adapters: it generates `mod tokio { #[test] fn name() }`
/// and `mod async_std { #[test] fn name() }`. Attributes before a name
/// (`#[ignore = "..."]`) go on both tests.
#[macro_export]
macro_rules! scenarios {
    ($($(#[$meta:meta])* $name:ident),* $(,)?) => {
        /// The scenarios on tokio: a multi-thread runtime with 2 workers per test.
        mod tokio {
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    $crate::run::<$crate::Tokio>(stringify!($name), super::$name::<$crate::Tokio>());
                }
            )*
        }

        /// The scenarios on async-std: its global executor.
        mod async_std {
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    $crate::run::<$crate::AsyncStd>(stringify!($name), super::$name::<$crate::AsyncStd>());
                }
            )*
        }
    };
}
