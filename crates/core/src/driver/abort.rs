//! How the registry stops a flight's task from outside ([R11](crate::design#r11)): a flag and the task's waker,
//! `AtomicWaker`-style over `crate::sync`, so that loom checks it with the rest of the driver.

use core::task::{Context, Waker};

use crate::sync::{Arc, AtomicBool, Mutex, Ordering, lock};

/// The registry's side: set once, then wake the task.
#[derive(Debug, Default)]
pub(super) struct AbortSignal {
    aborted: AtomicBool,
    /// The task's last registered waker. Locked when the task registers a
    /// waker it has not registered before (its first poll, as a rule) and
    /// when aborting: never on the task's every poll.
    waker: Mutex<Option<Waker>>,
}

impl AbortSignal {
    /// Aborts the flight: the task's next poll stops it, and the task is woken
    /// for that poll. Call it with no other lock held: the wake may run the task.
    pub(super) fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        let waker = lock(&self.waker).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether [`abort`](AbortSignal::abort) was called, without registering anything.
    pub(super) fn is_set(&self) -> bool {
        self.aborted.load(Ordering::Acquire)
    }
}

/// The task's side: the signal, and the waker the task last registered with
/// it, to compare against without locking.
#[derive(Debug)]
pub(super) struct AbortWatch {
    signal: Arc<AbortSignal>,
    registered: Option<Waker>,
}

impl AbortWatch {
    /// Watches `signal`.
    pub(super) fn new(signal: Arc<AbortSignal>) -> Self {
        AbortWatch { signal, registered: None }
    }

    /// Whether the flight was aborted. If not, an abort from now on wakes
    /// `cx`'s waker.
    pub(super) fn is_aborted(&mut self, cx: &Context<'_>) -> bool {
        if self.signal.is_set() {
            return true;
        }
        // Registered before: the signal still holds it, or an abort took it
        // and woke it, in which case this poll or the next sees the flag.
        if self.registered.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
            return false;
        }
        let waker = cx.waker().clone();
        let replaced = lock(&self.signal.waker).replace(waker.clone());
        self.registered = Some(waker);
        drop(replaced);
        // Checked again: an abort between the first check and the
        // registration took the old waker, or none, and woke only that. Its
        // flag was stored before it locked, so we see it here.
        self.signal.is_set()
    }

    /// The signal watched.
    pub(super) fn signal(&self) -> &AbortSignal {
        &self.signal
    }
}
