//! The limits a request is admitted and read under (`--max-concurrent-requests`, the body
//! bounds), kept where a reload (SIGHUP) can change them while requests are served.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Settings;
use crate::http::inbound::Bounds;
use crate::metrics::Metrics;

/// The admission permits and the body bounds, read by each request as it comes.
pub(crate) struct Limits {
    /// One permit per request served at once.
    permits: Arc<Semaphore>,
    /// How many permits there are in all (held and free): `--max-concurrent-requests`.
    most: Mutex<usize>,
    /// The bounds a request body is read within.
    body: Mutex<Bounds>,
}

impl Limits {
    /// The limits `settings` set.
    pub(crate) fn of(settings: &Settings) -> Limits {
        let most = capped(settings.max_concurrent_requests);
        Limits {
            permits: Arc::new(Semaphore::new(most)),
            most: Mutex::new(most),
            body: Mutex::new(Bounds::of(settings)),
        }
    }

    /// The admission permits.
    #[cfg(test)]
    pub(crate) fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    /// The body bounds now.
    pub(crate) fn body(&self) -> Bounds {
        *self.body.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads bodies within `bounds` from now on; a body being read keeps its own.
    pub(crate) fn set_body(&self, bounds: Bounds) {
        *self.body.lock().unwrap_or_else(PoisonError::into_inner) = bounds;
    }

    /// Admits at most `most` requests at once from now on. No request is cut: lowered under
    /// the number held, the permits come back one by one as requests end and are kept, so new
    /// requests are refused until fewer than `most` are served.
    pub(crate) fn set_most(&self, most: usize) {
        let most = capped(most);
        let mut now = self.most.lock().unwrap_or_else(PoisonError::into_inner);
        if most >= *now {
            self.permits.add_permits(most - *now);
        } else {
            let fewer = *now - most;
            let left = fewer - self.permits.forget_permits(fewer);
            // The rest are held: a waiter takes each as it is released, ahead of any request
            // (tokio's semaphore serves its queue first), and forgets them. Should the limit rise
            // meanwhile, the permits added go to this waiter first, which keeps the count right.
            if left > 0 {
                let permits = Arc::clone(&self.permits);
                let left = u32::try_from(left).unwrap_or(u32::MAX);
                tokio::spawn(async move {
                    if let Ok(taken) = permits.acquire_many_owned(left).await {
                        taken.forget();
                    }
                });
            }
        }
        *now = most;
    }
}

/// A request's admission: one of the permits, counted in the in-flight gauge until dropped
/// (with its response body, which holds it to its end).
#[derive(Debug)]
pub(crate) struct Admission {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Admission {
    /// A permit now, or `None` when `--max-concurrent-requests` are being served.
    pub(crate) fn take(limits: &Limits, metrics: &Arc<Metrics>) -> Option<Admission> {
        let permit = Arc::clone(&limits.permits).try_acquire_owned().ok()?;
        metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Admission { _permit: permit, metrics: Arc::clone(metrics) })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `most`, within what a semaphore can count.
fn capped(most: usize) -> usize {
    most.min(Semaphore::MAX_PERMITS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn limits(most: &str) -> Limits {
        Limits::of(&Settings::parse_from(["streamflight-gateway", "--max-concurrent-requests", most]))
    }

    /// Waits (within a deadline) until `free` permits are free: the forgetting task runs apart.
    async fn settles(limits: &Limits, free: usize) {
        let settled = async {
            while limits.permits().available_permits() != free {
                tokio::task::yield_now().await;
            }
        };
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), settled).await;
        assert!(waited.is_ok(), "{free} free: {}", limits.permits().available_permits());
    }

    #[tokio::test]
    async fn lowered_under_the_requests_held_then_raised() {
        let limits = limits("4");
        let take =
            |n| (0..n).map(|_| Arc::clone(limits.permits()).try_acquire_owned().unwrap()).collect::<Vec<_>>();
        let held = take(3);
        limits.set_most(1);
        assert!(limits.permits().try_acquire().is_err(), "three held, one allowed");
        drop(held);
        // Two of the three released permits are forgotten: one is left.
        settles(&limits, 1).await;
        limits.set_most(3);
        assert_eq!(limits.permits().available_permits(), 3);

        // Raised again while the lowering still waits for permits: five in all in the end.
        let held = take(3);
        limits.set_most(1);
        tokio::task::yield_now().await;
        limits.set_most(5);
        drop(held);
        settles(&limits, 5).await;
    }
}
