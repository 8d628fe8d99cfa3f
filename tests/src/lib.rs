//! The scenario suite of streamflight: each scenario is written once, generic over a [`TestRuntime`],
//! and the [`scenarios!`] macro runs it on every adapter (tokio, async-std and smol).
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
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::thread;
use std::time::Duration;

use futures::FutureExt;

pub use streamflight_async_std::AsyncStd;
pub use streamflight_core::driver::{Flights, Runtime, Subscription};
pub use streamflight_core::{
    CancelError, Config, Event, Failure, LateJoin, Orphan, Overflow, RequestId, ResumeError, Role, Stats,
};
pub use streamflight_smol::Smol;
pub use streamflight_tokio::Tokio;

/// How long a whole scenario may take before it fails as hung.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(30);

/// A streamflight [`Runtime`] the suite can drive: run a scenario, spawn client tasks, tell time.
pub trait TestRuntime: Runtime + Default + Clone + Sized {
    /// The runtime's name, for failure messages.
    const NAME: &'static str;

    /// Whether the default runtime is a global executor that every thread
    /// reaches (async-std, smol), rather than the runtime current where
    /// `request` is called (tokio).
    const GLOBAL_BY_DEFAULT: bool;

    /// What a scenario's managers run on (`Flights::with_runtime(config, R::scenario())`),
    /// called inside [`TestRuntime::block_on`]: the runtime the scenario runs in.
    fn scenario() -> Self;

    /// A runtime of this kind that the suite owns, for `Flights::with_runtime`.
    fn dedicated() -> Dedicated<Self>;

    /// Runs `scenario` to completion on the calling thread, inside this runtime
    /// (so that [`Runtime::spawn`] and [`TestRuntime::scenario`] find it). Panics propagate.
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

/// A runtime the suite owns (see [`TestRuntime::dedicated`]), stopped when dropped.
pub struct Dedicated<R> {
    /// What to give `Flights::with_runtime`.
    pub runtime: R,
    /// Stops the runtime and drops the tasks it still holds; `None` for one
    /// that cannot stop (async-std's global executor).
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl<R> Dedicated<R> {
    /// A runtime value, and how to stop the runtime it spawns on, if it can be stopped.
    fn new(runtime: R, stop: Option<Box<dyn FnOnce() + Send>>) -> Self {
        Dedicated { runtime, stop }
    }

    /// Stops the runtime and returns once every task it held is dropped; `false` if it cannot be stopped.
    pub fn stop(mut self) -> bool {
        match self.stop.take() {
            Some(stop) => {
                stop();
                true
            }
            None => false,
        }
    }
}

impl<R> Drop for Dedicated<R> {
    fn drop(&mut self) {
        // A failed scenario must not leave a runtime's threads behind.
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
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

/// Runs one scenario (the future `scenario` makes) inside `R` with the [`SCENARIO_LIMIT`] deadline.
pub fn run<R: TestRuntime>(name: &str, scenario: impl AsyncFnOnce()) {
    R::block_on(async {
        if wait::within::<R, _>(SCENARIO_LIMIT, scenario()).await.is_none() {
            panic!("scenario {name} on {} did not finish within {SCENARIO_LIMIT:?}", R::NAME);
        }
    });
}

/// Runs one scenario that must run outside any runtime (a plain function) on
/// a thread of its own, with the [`SCENARIO_LIMIT`] deadline. Panics propagate.
pub fn outside<R: TestRuntime>(name: &str, scenario: fn()) {
    let (finished, done) = channel();
    let thread = thread::spawn(move || {
        scenario();
        // The receiver is gone only if the scenario already timed out.
        let _ = finished.send(());
    });
    match done.recv_timeout(SCENARIO_LIMIT) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => {
            if let Err(panic) = thread.join() {
                resume_unwind(panic);
            }
        }
        // The thread is left blocked: nothing can end it from here.
        Err(RecvTimeoutError::Timeout) => {
            panic!("scenario {name} on {} did not finish within {SCENARIO_LIMIT:?}", R::NAME)
        }
    }
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
/// module) on every adapter: it generates `mod tokio { #[test] fn name() }`,
/// `mod async_std { ... }` and `mod smol { ... }`. Attributes before a name
/// (`#[ignore = "..."]`) go on every test.
///
/// `scenarios! { outside: name, ... }` does the same for scenarios that must
/// run outside any runtime, plain `fn name<R: TestRuntime>()`s (see [`outside`]).
#[macro_export]
macro_rules! scenarios {
    (outside: $($(#[$meta:meta])* $name:ident),* $(,)?) => {
        $crate::scenarios!(@on outside, $($(#[$meta])* $name),*);
    };
    (@on $runner:ident, $($(#[$meta:meta])* $name:ident),*) => {
        /// The scenarios on tokio: a multi-thread runtime with 2 workers per test.
        mod tokio {
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    $crate::$runner::<$crate::Tokio>(stringify!($name), super::$name::<$crate::Tokio>);
                }
            )*
        }

        /// The scenarios on async-std: its global executor.
        mod async_std {
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    $crate::$runner::<$crate::AsyncStd>(stringify!($name), super::$name::<$crate::AsyncStd>);
                }
            )*
        }

        /// The scenarios on smol: an executor with 2 worker threads per test.
        mod smol {
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    $crate::$runner::<$crate::Smol>(stringify!($name), super::$name::<$crate::Smol>);
                }
            )*
        }
    };
    ($($(#[$meta:meta])* $name:ident),* $(,)?) => {
        $crate::scenarios!(@on run, $($(#[$meta])* $name),*);
    };
}
