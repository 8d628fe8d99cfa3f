//! The driver's unit tests: effects run with the lock released (a waker may call back into the
//! manager), the ends a flight's task reports on its own (no runtime, dropped), and none when aborted.

use std::pin::Pin;
use std::sync::Arc as StdArc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use std::vec::Vec;

use futures::channel::mpsc::{UnboundedSender, unbounded};
use futures::{Stream, future, stream};

use super::testing::{Manager, Manual, Task, manager};
use super::{BuildError, Subscription};
use crate::{Config, Event, Failure, Role};

type Sub = Subscription<u32, u8>;
type Upstream = futures::channel::mpsc::UnboundedReceiver<Result<u32, u8>>;
type Feeder = UnboundedSender<Result<u32, u8>>;

/// A preparation that never finishes.
fn preparing() -> future::Pending<Result<Upstream, u8>> {
    future::pending()
}

/// A preparation that succeeds at once with an upstream the test feeds through the sender.
fn feed() -> (Feeder, future::Ready<Result<Upstream, u8>>) {
    let (sender, upstream) = unbounded();
    (sender, future::ready(Ok(upstream)))
}

fn poll_with(sub: &mut Sub, waker: &Waker) -> Poll<Option<Event<u32, u8>>> {
    Pin::new(sub).poll_next(&mut Context::from_waker(waker))
}

fn poll(sub: &mut Sub) -> Poll<Option<Event<u32, u8>>> {
    poll_with(sub, Waker::noop())
}

/// Counts its wakes.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: StdArc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads `sub`'s items `0..n` and its `Done`, counting the times it returned `Pending` between
/// them: after every run of items it yields once, woken at once (`subscription::RUN`).
fn read_past_yields(sub: &mut Sub, n: u32) -> usize {
    let counter = StdArc::new(Counter::default());
    let waker = Waker::from(counter.clone());
    let mut yields = 0;
    for expected in (0..n).map(Event::Item).chain([Event::Done]) {
        let mut polled = poll_with(sub, &waker);
        if polled.is_pending() {
            yields += 1;
            polled = poll_with(sub, &waker);
        }
        assert_eq!(polled, Poll::Ready(Some(expected)));
    }
    assert_eq!(counter.0.load(Ordering::Relaxed), yields, "woken at each yield");
    yields
}

fn run_with(task: &mut Task, waker: &Waker) -> Poll<()> {
    task.as_mut().poll(&mut Context::from_waker(waker))
}

fn run(task: &mut Task) -> Poll<()> {
    run_with(task, Waker::noop())
}

/// A waker whose every wake calls back into the manager, as an application's
/// waker may (one that runs its task inline, or reports somewhere).
struct CallBack<F> {
    call: F,
    calls: AtomicUsize,
}

impl<F: Fn() + Send + Sync + 'static> Wake for CallBack<F> {
    fn wake(self: StdArc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &StdArc<Self>) {
        (self.call)();
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

fn call_back<F: Fn() + Send + Sync + 'static>(call: F) -> (StdArc<CallBack<F>>, Waker) {
    let callback = StdArc::new(CallBack { call, calls: AtomicUsize::new(0) });
    (StdArc::clone(&callback), Waker::from(callback))
}

/// Runs `body` on a thread of its own and fails if it has not returned
/// within a deadline: a waker called under the manager's non-reentrant lock
/// would deadlock it.
fn without_deadlock(what: &str, body: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        body();
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(10)) {
        Ok(()) => thread.join().expect("the body returned"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: deadlocked, a wake ran under the manager's lock")
        }
    }
}

#[test]
fn a_cancelled_readers_waker_may_call_back_into_the_manager() {
    without_deadlock("R10: the cancelled reader's wake", || {
        let runtime = Manual::new();
        let flights = manager(Config::default(), &runtime);
        let mut leader = flights.request("k", preparing());
        let mut follower = flights.request("k", preparing());
        // The follower's wake reads the stats and cancels the leader: one input inside another's effects.
        let (callback, waker) = call_back({
            let (flights, leader) = (flights.clone(), leader.id());
            move || {
                let _ = flights.stats();
                let _ = flights.cancel(leader);
            }
        });
        assert_eq!(poll_with(&mut follower, &waker), Poll::Pending);
        flights.cancel(follower.id()).unwrap();
        assert_eq!(callback.calls.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut follower), Poll::Ready(Some(Event::Cancelled)));
        assert_eq!(poll(&mut leader), Poll::Ready(Some(Event::Cancelled)));
        assert_eq!(flights.stats().aborted, 1, "the leader was the last one out");
        drop(runtime.take());
        assert!(flights.is_idle());
    });
}

#[test]
fn an_aborted_tasks_waker_may_call_back_into_the_manager() {
    without_deadlock("R11: the aborted task's wake", || {
        let runtime = Manual::new();
        let flights = manager(Config::default(), &runtime);
        let alone = flights.request("k", preparing());
        let mut task = runtime.take().expect("the leader's task");
        let (callback, waker) = call_back({
            let flights = flights.clone();
            move || assert_eq!(flights.stats().aborted, 1)
        });
        assert_eq!(run_with(&mut task, &waker), Poll::Pending);
        drop(alone);
        assert_eq!(callback.calls.load(Ordering::SeqCst), 1);
        assert_eq!(run(&mut task), Poll::Ready(()));
        assert!(flights.is_idle());
    });
}

#[test]
fn a_closed_flights_readers_wakers_may_call_back_into_the_manager() {
    without_deadlock("R7: the end's wake", || {
        let runtime = Manual::new();
        let flights = manager(Config::default(), &runtime);
        let (upstream, start) = feed();
        let mut sub = flights.request("k", start);
        let mut task = runtime.take().expect("the leader's task");
        // The wake sees the key free already (R7): a request for it leads a new flight.
        let (callback, waker) = call_back({
            let flights = flights.clone();
            move || assert_eq!(flights.request("k", preparing()).role(), Role::Leader)
        });
        upstream.unbounded_send(Ok(1)).unwrap();
        assert_eq!(run(&mut task), Poll::Pending);
        assert_eq!(poll(&mut sub), Poll::Ready(Some(Event::Item(1))));
        assert_eq!(poll_with(&mut sub, &waker), Poll::Pending);
        upstream.close_channel();
        assert_eq!(run(&mut task), Poll::Ready(()));
        assert_eq!(callback.calls.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut sub), Poll::Ready(Some(Event::Done)));
        assert_eq!(poll(&mut sub), Poll::Ready(None));
    });
}

#[test]
fn a_request_with_nowhere_to_run_fails_no_runtime() {
    let runtime = Manual::refusing();
    let flights = manager(Config::default(), &runtime);
    let mut sub = flights.request("k", preparing());
    assert_eq!(poll(&mut sub), Poll::Ready(Some(Event::Failed(Failure::NoRuntime))));
    assert_eq!(poll(&mut sub), Poll::Ready(None));
    assert_eq!(flights.request("k", preparing()).role(), Role::Leader, "the key is free");
    assert!(flights.is_idle());
}

#[test]
fn a_task_dropped_before_its_end_ends_its_flight_no_runtime() {
    for polled in [false, true] {
        let runtime = Manual::new();
        let flights = manager(Config::default(), &runtime);
        let (upstream, start) = feed();
        let mut sub = flights.request("k", start);
        let mut task = runtime.take().expect("the leader's task");
        if polled {
            upstream.unbounded_send(Ok(7)).unwrap();
            assert_eq!(run(&mut task), Poll::Pending);
        }
        // A runtime shutting down drops its tasks.
        drop(task);
        if polled {
            assert_eq!(poll(&mut sub), Poll::Ready(Some(Event::Item(7))));
        }
        assert_eq!(poll(&mut sub), Poll::Ready(Some(Event::Failed(Failure::NoRuntime))), "polled: {polled}");
        drop(sub);
        assert!(flights.is_idle());
    }
}

#[test]
fn an_aborted_flight_reports_nothing() {
    // Aborted before its first poll, while preparing, and while streaming; the
    // registry refuses (in tests: panics on) any report the machine would refuse.
    for polls in 0..3 {
        let runtime = Manual::new();
        let flights = manager(Config::default(), &runtime);
        let (upstream, start) = feed();
        let sub = flights.request("k", start);
        let mut task = runtime.take().expect("the leader's task");
        for _ in 0..polls {
            upstream.unbounded_send(Ok(1)).unwrap();
            assert_eq!(run(&mut task), Poll::Pending);
        }
        drop(sub);
        let fresh = flights.request("k", preparing());
        assert_eq!(fresh.role(), Role::Leader);
        // The old task drops its upstream and reports nothing; the new flight is untouched.
        assert_eq!(run(&mut task), Poll::Ready(()));
        assert!(upstream.is_closed(), "the upstream was dropped (R11)");
        let stats = flights.stats();
        assert_eq!((stats.aborted, stats.active_flights, stats.active_requests), (1, 1, 1), "polls: {polls}");
        drop((fresh, runtime.take()));
        assert!(flights.is_idle());
    }
}

#[test]
fn the_machine_hears_of_truncation_before_the_first_release() {
    let runtime = Manual::new();
    let flights = manager(Config::default().history_limit(2), &runtime);
    let (upstream, start) = feed();
    let mut leader = flights.request("k", start);
    let mut task = runtime.take().expect("the leader's task");
    upstream.unbounded_send(Ok(0)).unwrap();
    assert_eq!(run(&mut task), Poll::Pending);
    assert_eq!(flights.request("k", preparing()).role(), Role::Joiner, "two items fit");
    for item in 1..3 {
        upstream.unbounded_send(Ok(item)).unwrap();
    }
    assert_eq!(run(&mut task), Poll::Pending);
    // The batch released item 0: a late join would start there, so it leads a new flight.
    assert_eq!(flights.request("k", preparing()).role(), Role::Leader);
    assert_eq!(poll(&mut leader), Poll::Ready(Some(Event::Failed(Failure::Lagged { missed: 1 }))));
}

#[test]
fn a_ready_upstream_is_appended_in_batches_and_the_task_yields() {
    let runtime = Manual::new();
    let flights = manager(Config::default(), &runtime);
    let items: Vec<Result<u32, u8>> = (0..20_000).map(Ok).collect();
    let mut sub = flights.request("k", future::ready(Ok::<_, u8>(stream::iter(items))));
    let mut task = runtime.take().expect("the leader's task");
    let mut polls = 0;
    while run(&mut task).is_pending() {
        polls += 1;
    }
    assert!(polls >= 4, "a poll appends at most 4,096 items, then yields: {polls}");
    assert_eq!(read_past_yields(&mut sub, 20_000), 20_000 / 64, "a yield after every 64 items");
}

#[test]
fn a_crowded_flights_subscriptions_yield_less_often() {
    let runtime = Manual::new();
    let flights = manager(Config::default(), &runtime);
    let items: Vec<Result<u32, u8>> = (0..20_000).map(Ok).collect();
    let mut subs = vec![flights.request("k", future::ready(Ok::<_, u8>(stream::iter(items))))];
    subs.extend((0..512).map(|_| flights.request("k", preparing())));
    let mut task = runtime.take().expect("the leader's task");
    while run(&mut task).is_pending() {}
    let mut first = subs.swap_remove(0);
    assert_eq!(
        read_past_yields(&mut first, 20_000),
        20_000 / 512,
        "513 readers: a yield after every 512 items"
    );
    // Down to 512 readers (the first has read its end), the others yield as usual again.
    assert_eq!(
        read_past_yields(&mut subs[0], 20_000),
        20_000 / 64,
        "512 readers: a yield after every 64 items"
    );
}

/// An upstream that returns `Pending` after every item, waking itself: always ready, one item
/// at a time.
struct OneByOne {
    items: core::ops::Range<u32>,
    rest: bool,
}

impl Stream for OneByOne {
    type Item = Result<u32, u8>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if core::mem::take(&mut self.rest) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.rest = true;
        Poll::Ready(self.items.next().map(Ok))
    }
}

#[test]
fn an_upstream_ready_one_item_at_a_time_is_drained_256_batches_a_poll() {
    let runtime = Manual::new();
    let flights = manager(Config::default(), &runtime);
    let upstream = OneByOne { items: 0..1000, rest: false };
    let mut sub = flights.request("k", future::ready(Ok::<_, u8>(upstream)));
    let mut task = runtime.take().expect("the leader's task");
    let mut polls = 0;
    while run(&mut task).is_pending() {
        polls += 1;
    }
    assert!((3..=4).contains(&polls), "256 one-item batches a poll, then a yield: {polls}");
    read_past_yields(&mut sub, 1000);
}

/// Items weigh their value, in bytes.
fn by_value(item: &u32) -> usize {
    *item as usize
}

/// A flight of `key` on `flights` whose upstream yields `items` then ends, run to its end;
/// every other task spawned meanwhile (a timer) is dropped.
fn finished(flights: &super::testing::Manager, runtime: &Manual, key: &'static str, items: &[u32]) -> Sub {
    let (upstream, start) = feed();
    let sub = flights.request(key, start);
    let mut task = runtime.take().expect("the leader's task");
    items.iter().for_each(|&item| upstream.unbounded_send(Ok(item)).unwrap());
    drop(upstream);
    assert_eq!(run(&mut task), Poll::Ready(()));
    // A linger armed the manager's timer, a task of its own: the test drives no clock.
    while runtime.take().is_some() {}
    sub
}

fn read_all(sub: &mut Sub) -> Vec<Event<u32, u8>> {
    core::iter::from_fn(|| match poll(sub) {
        Poll::Ready(Some(event)) => Some(event),
        _ => None,
    })
    .collect()
}

#[test]
fn a_byte_bound_truncates_and_a_late_joiner_gets_what_the_overflow_policy_says() {
    use crate::Overflow;
    let minute = Duration::from_secs(60);
    for policy in [Overflow::NewFlight, Overflow::Lagged, Overflow::Truncate] {
        let runtime = Manual::new();
        let config = Config::default().weigher(by_value).flight_bytes(10).overflow(policy).linger(minute);
        let flights = manager(config, &runtime);
        // 1 + 2 + 3 + 4 = 10 bytes fit; with 5, items 1..=3 go (4 + 5 = 9 bytes).
        let mut first = finished(&flights, &runtime, "k", &[1, 2, 3, 4, 5]);
        assert_eq!(read_all(&mut first), [Event::Failed(Failure::Lagged { missed: 3 })], "{policy:?}");
        let mut late = flights.request("k", preparing());
        let expected = match policy {
            Overflow::NewFlight => {
                assert_eq!(late.role(), Role::Leader, "a truncated answer does not linger");
                continue;
            }
            Overflow::Lagged => vec![Event::Failed(Failure::Lagged { missed: 3 })],
            Overflow::Truncate => vec![Event::Item(4), Event::Item(5), Event::Done],
        };
        assert_eq!(late.role(), Role::Joiner, "{policy:?}: the truncated answer lingers");
        assert_eq!(read_all(&mut late), expected, "{policy:?}");
        assert_eq!(flights.stats().flights, 1);
    }
}

#[test]
fn the_linger_budget_evicts_the_oldest_finished_answer_and_counts_it() {
    let runtime = Manual::new();
    let config = Config::default().weigher(by_value).linger(Duration::from_secs(60)).linger_budget(10);
    let flights = manager(config, &runtime);
    let mut a = finished(&flights, &runtime, "a", &[3, 3]);
    let mut b = finished(&flights, &runtime, "b", &[4]);
    assert_eq!(flights.stats().evicted, 0, "6 + 4 bytes fit");
    let mut c = finished(&flights, &runtime, "c", &[2]);
    assert_eq!(flights.stats().evicted, 1, "12 bytes do not: the oldest goes");
    for (sub, items) in [(&mut a, vec![3, 3]), (&mut b, vec![4]), (&mut c, vec![2])] {
        let mut expected: Vec<_> = items.into_iter().map(Event::Item).collect();
        expected.push(Event::Done);
        assert_eq!(read_all(sub), expected, "readers of an evicted answer read it whole");
    }
    // Heavier than the budget: never lingers, and evicts nothing.
    drop(finished(&flights, &runtime, "heavy", &[11]));
    assert_eq!(flights.stats().evicted, 2);
    assert_eq!(flights.request("heavy", preparing()).role(), Role::Leader);
    assert_eq!(flights.request("a", preparing()).role(), Role::Leader, "evicted");
    assert_eq!(flights.request("b", preparing()).role(), Role::Joiner, "still lingering");
    assert_eq!(flights.request("c", preparing()).role(), Role::Joiner, "still lingering");
}

#[test]
fn without_a_weigher_an_item_weighs_its_size() {
    let runtime = Manual::new();
    let flights = manager(Config::default().flight_bytes(3 * size_of::<u32>()), &runtime);
    let mut sub = finished(&flights, &runtime, "k", &[7, 8, 9, 10]);
    assert_eq!(read_all(&mut sub), [Event::Failed(Failure::Lagged { missed: 1 })]);
}

#[test]
#[should_panic(
    expected = "Config::weigher weighs `alloc::string::String`, but this manager's items are `u32`"
)]
fn a_weigher_of_another_item_type_is_refused_when_the_manager_is_built() {
    let _ = manager(Config::default().weigher(|text: &String| text.len()).flight_bytes(1), &Manual::new());
}

#[test]
fn try_with_runtime_says_which_types_a_weigher_mismatched() {
    let config = Config::default().weigher(|text: &String| text.len()).flight_bytes(1);
    let Err(error) = Manager::try_with_runtime(config, Manual::new()) else { panic!("built") };
    assert_eq!(error, BuildError::WeigherType { weighs: "alloc::string::String", items: "u32" });
    assert_eq!(
        error.to_string(),
        "Config::weigher weighs `alloc::string::String`, but this manager's items are `u32`"
    );
    let config = Config::default().weigher(|n: &u32| *n as usize).flight_bytes(1);
    assert!(Manager::try_with_runtime(config, Manual::new()).is_ok());
    assert!(Manager::try_with_runtime(Config::default(), Manual::new()).is_ok());
}

#[test]
fn a_panicking_weigher_ends_its_flight_panicked() {
    let runtime = Manual::new();
    let flights = manager(Config::default().weigher(|_: &u32| panic!("weigher")).flight_bytes(1), &runtime);
    let mut sub = finished(&flights, &runtime, "k", &[1]);
    assert_eq!(read_all(&mut sub), [Event::Failed(Failure::Panicked)]);
    assert!(flights.is_idle(), "the key is free, nothing held");
}

#[test]
fn a_bursts_readers_are_woken_once_the_upstream_has_nothing_more_ready() {
    let runtime = Manual::new();
    let flights = manager(Config::default(), &runtime);
    let (upstream, start) = feed();
    let mut sub = flights.request("k", start);
    let mut task = runtime.take().expect("the leader's task");
    let reader = StdArc::new(Counter::default());
    let reader_waker = Waker::from(reader.clone());
    let task_wakes = StdArc::new(Counter::default());
    let task_waker = Waker::from(task_wakes.clone());
    let woken = |counter: &Counter| counter.0.load(Ordering::Relaxed);
    // The task's wakes during a run of it are its own (the channel wakes it at each send).
    let run_woken = |task: &mut Task| {
        let before = woken(&task_wakes);
        assert_eq!(run_with(task, &task_waker), Poll::Pending);
        woken(&task_wakes) - before
    };
    // The first items wake their parked reader at once.
    for item in 0..2 {
        assert_eq!(poll_with(&mut sub, &reader_waker), Poll::Pending);
        upstream.unbounded_send(Ok(item)).unwrap();
        assert_eq!(run_woken(&mut task), 0, "item {item}: the task does not wake itself");
        assert_eq!(woken(&reader), item as usize + 1, "item {item} woke its reader");
        assert_eq!(poll(&mut sub), Poll::Ready(Some(Event::Item(item))));
    }
    // Later, the upstream's items one poll at a time: the reader waits while each poll took
    // some, the task woken again for the next; the poll that finds nothing wakes the reader.
    assert_eq!(poll_with(&mut sub, &reader_waker), Poll::Pending);
    for item in 2..5 {
        upstream.unbounded_send(Ok(item)).unwrap();
        assert_eq!(run_woken(&mut task), 1, "item {item}: the task polls its upstream once more");
    }
    assert_eq!(woken(&reader), 2, "not yet");
    assert_eq!(run_woken(&mut task), 0);
    assert_eq!(woken(&reader), 3, "once for the three");
    for item in 2..5 {
        assert_eq!(poll(&mut sub), Poll::Ready(Some(Event::Item(item))));
    }
    // Then paced, an item at a time: the poll made for the first hold finds nothing, and the
    // flight stops holding; each later item wakes its reader at once, with no poll more.
    assert_eq!(poll_with(&mut sub, &reader_waker), Poll::Pending);
    upstream.unbounded_send(Ok(5)).unwrap();
    assert_eq!(run_woken(&mut task), 1, "item 5 is held");
    assert_eq!(run_woken(&mut task), 0);
    assert_eq!(woken(&reader), 4, "item 5 after a poll that found nothing");
    assert_eq!(poll(&mut sub), Poll::Ready(Some(Event::Item(5))));
    for item in 6..8 {
        assert_eq!(poll_with(&mut sub, &reader_waker), Poll::Pending);
        upstream.unbounded_send(Ok(item)).unwrap();
        assert_eq!(run_woken(&mut task), 0, "item {item}: no hold");
        assert_eq!(woken(&reader), item as usize - 1, "item {item} woke its reader at once");
        assert_eq!(poll(&mut sub), Poll::Ready(Some(Event::Item(item))));
    }
    upstream.close_channel();
    assert_eq!(run(&mut task), Poll::Ready(()));
    assert_eq!(poll(&mut sub), Poll::Ready(Some(Event::Done)));
}
