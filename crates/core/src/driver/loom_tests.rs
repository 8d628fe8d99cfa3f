//! loom models of the driver's races: every interleaving (up to the preemption bound) of a
//! flight's task, polled by hand on its own thread, against a cancel, a drop or a lagged reader.
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p streamflight-core --release --lib loom_`.

use core::future::poll_fn;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::vec::Vec;

use futures::{Stream, StreamExt, future, stream};
use loom::future::block_on;
use loom::thread;

use super::Subscription;
use super::testing::{Manual, Task, manager};
use crate::sync::{Arc, AtomicBool, Ordering};
use crate::{Config, Event, Failure};

type Sub = Subscription<u32, u8>;

/// Reads `sub` to its end, parking through loom's waker (a lost wake-up is a
/// deadlock loom reports), and checks that `None` follows the end (R14).
fn read_all(sub: &mut Sub) -> Vec<Event<u32, u8>> {
    let mut events = Vec::new();
    loop {
        let event = block_on(poll_fn(|cx| Pin::new(&mut *sub).poll_next(cx))).expect("an end before None");
        let end = event.is_end();
        events.push(event);
        if end {
            assert_eq!(poll_once(sub), Poll::Ready(None), "nothing after the end");
            return events;
        }
    }
}

fn poll_once(sub: &mut Sub) -> Poll<Option<Event<u32, u8>>> {
    Pin::new(sub).poll_next(&mut Context::from_waker(Waker::noop()))
}

/// Runs a flight's task to its completion on a thread of its own.
fn run(task: Task) -> thread::JoinHandle<()> {
    thread::spawn(move || block_on(task))
}

/// A value that records its drop: a preparation or an upstream the task must let go of.
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn loom_cancel_against_the_flights_end() {
    loom::model(|| {
        let runtime = Manual::new();
        let flights = manager(Config::default(), &runtime);
        let mut sub = flights.request("k", future::ready(Ok(stream::iter([Ok(1)]))));
        let task = run(runtime.take().expect("the leader's task"));
        // Alone, the cancel also orphans the flight (R11): its abort races the
        // task's end, its `Cancel` the reader's end.
        let canceller = {
            let (flights, id) = (flights.clone(), sub.id());
            thread::spawn(move || flights.cancel(id).is_ok())
        };
        let events = read_all(&mut sub);
        let cancelled = canceller.join().unwrap();
        task.join().unwrap();
        let end = events.last().cloned();
        if cancelled {
            assert_eq!(end, Some(Event::Cancelled), "R10: a successful cancel is the next event");
        } else {
            assert_eq!(events, [Event::Item(1), Event::Done], "the end was read before the cancel");
        }
        let stats = flights.stats();
        assert_eq!(stats.cancelled, u64::from(cancelled));
        assert!(stats.aborted <= stats.cancelled, "only the cancel can orphan the flight");
        drop(sub);
        assert!(flights.is_idle(), "R16");
    });
}

#[test]
fn loom_abort_against_the_tasks_first_poll() {
    loom::model(|| {
        let runtime = Manual::new();
        let flights = manager(Config::default(), &runtime);
        let preparation = Arc::new(AtomicBool::new(false));
        let held = Dropped(Arc::clone(&preparation));
        let start = async move {
            let _held = held;
            future::pending::<Result<stream::Empty<Result<u32, u8>>, u8>>().await
        };
        let sub = flights.request("k", start);
        // The preparation never ends: only the abort can, and it must wake the task.
        let task = run(runtime.take().expect("the leader's task"));
        drop(sub);
        task.join().unwrap();
        assert!(preparation.load(Ordering::SeqCst), "R11: the preparation future was dropped");
        let stats = flights.stats();
        assert_eq!((stats.cancelled, stats.aborted), (1, 1));
        assert!(flights.is_idle(), "R16");
    });
}

#[test]
fn loom_drop_against_the_last_item() {
    loom::model(|| {
        let runtime = Manual::new();
        let flights = manager(Config::default(), &runtime);
        let mut sub = flights.request("k", future::ready(Ok(stream::iter([Ok(1)]))));
        let task = run(runtime.take().expect("the leader's task"));
        let first = block_on(poll_fn(|cx| Pin::new(&mut sub).poll_next(cx)));
        assert_eq!(first, Some(Event::Item(1)));
        // Parked (or already at the end) when dropped, while the task appends and ends.
        let next = poll_once(&mut sub);
        let read_the_end = next == Poll::Ready(Some(Event::Done));
        assert!(next.is_pending() || read_the_end, "{next:?}");
        drop(sub);
        task.join().unwrap();
        let stats = flights.stats();
        assert_eq!(stats.cancelled, u64::from(!read_the_end), "R12: a drop before the end is a cancel");
        assert_eq!(stats.active_requests, 0);
        assert!(flights.is_idle(), "R16");
    });
}

#[test]
fn loom_lagged_reader_against_the_orphan_abort() {
    // The upstream then waits forever (only the abort ends the task), or ends
    // (its end races the abort).
    for ends in [false, true] {
        loom::model(move || {
            let runtime = Manual::new();
            let flights = manager(Config::default().history_limit(1), &runtime);
            let upstream_dropped = Arc::new(AtomicBool::new(false));
            let held = Dropped(Arc::clone(&upstream_dropped));
            // Three items in one batch: the history keeps the last one only.
            let rest = if ends { stream::empty().left_stream() } else { stream::pending().right_stream() };
            let upstream = stream::iter([Ok(0), Ok(1), Ok(2)]).chain(rest).map(move |item| {
                let _held = &held;
                item
            });
            let mut sub = flights.request("k", future::ready(Ok(upstream)));
            let task = run(runtime.take().expect("the leader's task"));
            // The reader lags (R15) and leaves: the last one, it orphans a live flight (R11).
            let events = read_all(&mut sub);
            assert_eq!(events, [Event::Failed(Failure::Lagged { missed: 2 })]);
            task.join().unwrap();
            assert!(upstream_dropped.load(Ordering::SeqCst), "the upstream was dropped");
            let stats = flights.stats();
            assert_eq!(stats.cancelled, 0, "a lag is no cancel");
            assert!(stats.aborted == 1 || ends, "ends: {ends}, aborted: {}", stats.aborted);
            drop(sub);
            assert!(flights.is_idle(), "R16");
        });
    }
}
