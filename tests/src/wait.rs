//! Waiting on a condition or an event with a deadline (never sleeping to synchronise), and
//! reading subscriptions the way a client does; polls made here count as the caller's.

use std::cell::Cell;
use std::fmt::Debug;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::{Either, select};
use futures::{Stream, StreamExt};

use crate::{Event, Subscription, TestRuntime};

/// How long any single wait may take before the scenario fails.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// The timer tick between two looks at a condition.
const TICK: Duration = Duration::from_millis(1);

thread_local! {
    static IN_CALLER: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` as "the caller": a [`Probe`](crate::doubles::Probe)d future polled
/// meanwhile on this thread counts in [`Probe::polled_by_caller`](crate::doubles::Probe::polled_by_caller).
pub fn as_caller<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            IN_CALLER.set(self.0);
        }
    }
    let _restore = Restore(IN_CALLER.replace(true));
    f()
}

/// Whether the current thread is inside [`as_caller`].
pub fn in_caller() -> bool {
    IN_CALLER.get()
}

/// `future`'s output, or `None` if `limit` passes first.
pub async fn within<R: TestRuntime, F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    match select(pin!(future), pin!(<R as TestRuntime>::sleep(limit))).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(_) => None,
    }
}

/// Waits until `condition` holds, looking again at every timer tick; fails
/// the scenario, naming `what`, if it does not hold within [`PATIENCE`].
pub async fn eventually<R: TestRuntime>(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "on {}: gave up after {PATIENCE:?} waiting for {what}", R::NAME);
        <R as TestRuntime>::sleep(TICK).await;
    }
}

/// [`eventually`] for a scenario outside any runtime: the thread sleeps a
/// tick between two looks, since there is no runtime timer to wait on.
pub fn eventually_outside<R: TestRuntime>(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "on {}: gave up after {PATIENCE:?} waiting for {what}", R::NAME);
        std::thread::sleep(TICK);
    }
}

/// The next element of `stream`, polled as the caller; fails the scenario,
/// naming `what`, if none arrives within [`PATIENCE`].
pub async fn next_within<R: TestRuntime, S: Stream + Unpin>(what: &str, stream: &mut S) -> Option<S::Item> {
    let next = poll_fn(|cx| as_caller(|| stream.poll_next_unpin(cx)));
    match within::<R, _>(PATIENCE, next).await {
        Some(item) => item,
        None => panic!("on {}: no event within {PATIENCE:?} for {what}", R::NAME),
    }
}

/// The next event of `sub`; fails if its stream closed without an end.
pub async fn next_event<R: TestRuntime, T: Clone, E: Clone>(sub: &mut Subscription<T, E>) -> Event<T, E> {
    let what = format!("request {}", sub.id());
    next_within::<R, _>(&what, sub).await.unwrap_or_else(|| panic!("{what}: stream closed before its end"))
}

/// Reads `sub` up to its end: the items, then the end event. Checks R14:
/// after the end, the stream yields `None`, again and again.
pub async fn read_to_end<R, T, E>(sub: &mut Subscription<T, E>) -> (Vec<T>, Event<T, E>)
where
    R: TestRuntime,
    T: Clone + Debug,
    E: Clone + Debug,
{
    let mut items = Vec::new();
    loop {
        match next_event::<R, T, E>(sub).await {
            Event::Item(item) => items.push(item),
            end => {
                assert_closed(sub);
                return (items, end);
            }
        }
    }
}

/// Polls `stream` once, with a waker that does nothing.
pub fn poll_once<S: Stream + Unpin>(stream: &mut S) -> Poll<Option<S::Item>> {
    as_caller(|| stream.poll_next_unpin(&mut Context::from_waker(futures::task::noop_waker_ref())))
}

/// R14: a stream past its end yields `None` at once, however often it is polled.
pub fn assert_closed<S: Stream + Unpin>(stream: &mut S)
where
    S::Item: Debug,
{
    for _ in 0..5 {
        match poll_once(stream) {
            Poll::Ready(None) => {}
            other => panic!("after its end a subscription must yield None forever, got {other:?}"),
        }
    }
}
