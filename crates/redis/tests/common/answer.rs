//! The answers the fleet tests' upstreams give: paced and counted by the test, and what a
//! test reads of a subscription (the next items, everything, whether it ended `Done`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use streamflight_redis::Subscription;
use streamflight_tokio::Event;
use tokio::sync::Semaphore;

/// An upstream the test drives: it yields item `i` once the test has released it, and counts
/// the requests made and the streams dropped before their end (aborted).
#[derive(Clone)]
pub struct Upstream {
    started: Arc<AtomicUsize>,
    aborted: Arc<AtomicUsize>,
    released: Arc<Semaphore>,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream { started: Arc::default(), aborted: Arc::default(), released: Arc::new(Semaphore::new(0)) }
    }
}

impl Upstream {
    /// One upstream request: `n` items `t0`, `t1`, ..., each after a release, then `fail` if
    /// given, else the end.
    pub fn answer(
        &self,
        n: usize,
        fail: Option<&str>,
    ) -> impl Future<Output = Result<futures::stream::BoxStream<'static, Result<String, String>>, String>>
    + Send
    + 'static {
        let this = self.clone();
        let fail = fail.map(str::to_owned);
        async move {
            this.started.fetch_add(1, Ordering::SeqCst);
            let guard = Aborted { count: Arc::clone(&this.aborted), armed: true };
            let items = futures::stream::unfold((0, guard), move |(i, mut guard)| {
                let (released, fail) = (Arc::clone(&this.released), fail.clone());
                async move {
                    if i == n {
                        guard.armed = false;
                        return fail.map(|error| (Err(error), (i + 1, guard)));
                    }
                    if i > n {
                        return None;
                    }
                    released.acquire().await.unwrap().forget();
                    Some((Ok(format!("t{i}")), (i + 1, guard)))
                }
            });
            Ok(items.boxed())
        }
    }

    /// Lets `items` more items go, over all the answers of this upstream.
    pub fn release(&self, items: usize) {
        self.released.add_permits(items);
    }

    /// How many upstream requests were made.
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// How many answers were dropped before their end.
    pub fn aborted(&self) -> usize {
        self.aborted.load(Ordering::SeqCst)
    }
}

/// Counts an upstream dropped before its end.
pub struct Aborted {
    count: Arc<AtomicUsize>,
    armed: bool,
}

impl Drop for Aborted {
    fn drop(&mut self) {
        if self.armed {
            self.count.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The next event, within 10 s.
pub async fn next(subscription: &mut Subscription<String, String>) -> Option<Event<String, String>> {
    tokio::time::timeout(Duration::from_secs(10), subscription.next()).await.expect("an event within 10 s")
}

/// The next `n` events, each an item.
pub async fn take(subscription: &mut Subscription<String, String>, n: usize) -> Vec<String> {
    let mut taken = Vec::with_capacity(n);
    for _ in 0..n {
        match next(subscription).await {
            Some(Event::Item(item)) => taken.push(item),
            other => panic!("an item, not {other:?}"),
        }
    }
    taken
}

/// Everything a subscription (the fleet's or the local manager's) yields.
pub async fn all(
    subscription: impl futures::Stream<Item = Event<String, String>>,
) -> Vec<Event<String, String>> {
    tokio::time::timeout(Duration::from_secs(20), subscription.collect()).await.expect("the stream ends")
}

pub fn items(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("t{i}")).collect()
}

/// The items of `events`, and whether they ended `Done`.
pub fn done(events: &[Event<String, String>]) -> (Vec<String>, bool) {
    let items =
        events.iter().filter_map(|e| if let Event::Item(i) = e { Some(i.clone()) } else { None }).collect();
    (items, matches!(events.last(), Some(Event::Done)))
}
