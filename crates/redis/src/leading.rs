//! How many flights a replica leads for the fleet right now: what a replica that is told to
//! stop waits on before it exits, so that the replicas following its flights lose none (R26).

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::fleet::Fleet;

/// One flight led, counted while it lives: from the lease taken to the end written (or the
/// flight given up, or the lease lost).
pub(crate) struct Leading<'a> {
    count: &'a AtomicUsize,
}

impl<'a> Leading<'a> {
    /// Counts one more flight led in `count`, until dropped.
    pub(crate) fn new(count: &'a AtomicUsize) -> Leading<'a> {
        count.fetch_add(1, Ordering::AcqRel);
        Leading { count }
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<K, T, E> Fleet<K, T, E> {
    /// How many flights this replica leads for the fleet right now: it holds their lease and
    /// has not yet written their end. Other replicas may be following any of them, so a
    /// replica told to stop keeps running until this is 0 (or its grace is over), else their
    /// clients would lose their streams (R26).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use streamflight_redis::{Fleet, FleetConfig, Text};
    ///
    /// let fleet = Fleet::new("redis://127.0.0.1:6379/", Text, FleetConfig::default()).unwrap();
    /// assert_eq!(fleet.leading(), 0, "nothing led before the first request");
    /// # }
    /// ```
    pub fn leading(&self) -> usize {
        self.shared.leading.load(Ordering::Acquire)
    }
}
