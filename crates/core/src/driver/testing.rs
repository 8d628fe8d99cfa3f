//! What the driver's unit tests and loom models share: a runtime that keeps the tasks spawned
//! on it for the test to poll by hand, and a manager on it.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;

use super::{Flights, Runtime};
use crate::Config;
use crate::sync::{Arc, Mutex, lock};

/// A spawned task, as the test runtime keeps it.
pub(super) type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A runtime that runs nothing: it keeps each spawned task for the test to
/// take and poll (or drop). It refuses every spawn when built `refusing`.
#[derive(Clone)]
pub(super) struct Manual {
    tasks: Arc<Mutex<Vec<Task>>>,
    refusing: bool,
}

impl Manual {
    /// A runtime that keeps its tasks.
    pub(super) fn new() -> Self {
        Manual { tasks: Arc::new(Mutex::new(Vec::new())), refusing: false }
    }

    /// A runtime that refuses every spawn, as one outside any runtime would.
    #[cfg(not(loom))]
    pub(super) fn refusing() -> Self {
        Manual { refusing: true, ..Manual::new() }
    }

    /// The oldest task spawned and not yet taken.
    pub(super) fn take(&self) -> Option<Task> {
        let mut tasks = lock(&self.tasks);
        (!tasks.is_empty()).then(|| tasks.remove(0))
    }
}

impl Runtime for Manual {
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> bool {
        if self.refusing {
            return false;
        }
        lock(&self.tasks).push(Box::pin(task));
        true
    }

    /// Never wakes: the tests that use time drive the machine's clock themselves.
    fn sleep(&self, _: core::time::Duration) -> impl Future<Output = ()> + Send + 'static {
        core::future::pending()
    }
}

/// The manager the tests drive: string keys, numbered items, numbered errors.
pub(super) type Manager = Flights<&'static str, u32, u8, Manual>;

/// A manager under `config` on `runtime`.
pub(super) fn manager(config: Config, runtime: &Manual) -> Manager {
    Flights::with_runtime(config, runtime.clone())
}
