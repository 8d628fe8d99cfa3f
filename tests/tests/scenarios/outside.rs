//! Managers used from a plain thread, outside any runtime: on a runtime given to
//! `Flights::with_runtime`, before and after that runtime stops, and on the default runtime.
//! Each scenario runs on a thread of its own and reads by blocking it (the whole scenario
//! has a deadline: no runtime timer is at hand here).

use futures::StreamExt;
use futures::executor::block_on;
use streamflight_tests::doubles::Script;
use streamflight_tests::wait::{as_caller, eventually_outside};
use streamflight_tests::{Config, Event, Failure, Flights, Role, TestRuntime, scenarios};

use super::{Error, Fl, Sub, gate, ready};

scenarios! { outside:
    with_runtime_from_a_plain_thread,
    with_runtime_stopped,
    default_runtime_from_a_plain_thread,
}

/// Every event of `sub` up to its end, read as the caller by blocking this thread.
fn read(sub: &mut Sub) -> Vec<Event<u64, Error>> {
    as_caller(|| block_on(sub.by_ref().collect()))
}

/// `items` as events, then `end`.
fn events(items: std::ops::Range<u64>, end: Event<u64, Error>) -> Vec<Event<u64, Error>> {
    items.map(Event::Item).chain([end]).collect()
}

/// A manager built and called on a plain thread runs its flights on the runtime
/// it was given: one preparation, polled by that runtime, never by the caller.
fn with_runtime_from_a_plain_thread<R: TestRuntime>() {
    let dedicated = R::dedicated();
    let flights: Fl<R> = Flights::with_runtime(Config::default(), dedicated.runtime.clone());
    let (gate, script) = (gate(), Script::new());
    let mut leader = as_caller(|| flights.request("k", gate.start()));
    let mut follower = as_caller(|| flights.request("k", gate.start()));
    assert_eq!((leader.role(), follower.role()), (Role::Leader, Role::Follower));
    gate.open(script.stream());
    script.push_all([1, 2, 3]);
    script.finish();
    assert_eq!(read(&mut leader), events(1..4, Event::Done));
    assert_eq!(read(&mut follower), events(1..4, Event::Done));
    let probe = gate.probe();
    assert_eq!((probe.made(), probe.polled(), probe.polled_by_caller()), (2, 1, 0));
    assert_eq!(script.probe().polled_by_caller(), 0, "the upstream too is polled by the runtime");
    assert_eq!(flights.stats().flights, 1);
    drop((leader, follower));
    eventually_outside::<R>("the manager to hold nothing", || flights.is_idle());
}

/// A runtime that stops drops the flight it was preparing: its request ends
/// `Failed(NoRuntime)`, never hangs; so does every later one, at once. A
/// runtime that cannot stop (async-std's) runs the flight to its end.
fn with_runtime_stopped<R: TestRuntime>() {
    let dedicated = R::dedicated();
    let flights: Fl<R> = Flights::with_runtime(Config::default(), dedicated.runtime.clone());
    let (gate, script) = (gate(), Script::new());
    let mut preparing = flights.request("k", gate.start());
    eventually_outside::<R>("the preparation to start", || gate.probe().polled() == 1);
    if !dedicated.stop() {
        gate.open(script.stream());
        script.push_all([1]);
        script.finish();
        assert_eq!(read(&mut preparing), events(1..2, Event::Done));
        return;
    }
    assert_eq!(read(&mut preparing), [Event::Failed(Failure::NoRuntime)]);
    eventually_outside::<R>("the preparation to be dropped", || gate.probe().dropped() == 1);
    let mut later = flights.request("k", gate.start());
    assert_eq!(read(&mut later), [Event::Failed(Failure::NoRuntime)]);
    assert_eq!(gate.probe().polled(), 1, "nothing runs once the runtime has stopped");
    eventually_outside::<R>("the later start to be dropped", || gate.probe().dropped() == 2);
    drop((preparing, later));
    eventually_outside::<R>("the manager to hold nothing", || flights.is_idle());
}

/// The default runtime from a plain thread: a global executor (async-std,
/// smol) runs the flight; tokio, which needs a current runtime, ends it
/// `Failed(NoRuntime)` without polling `start`.
fn default_runtime_from_a_plain_thread<R: TestRuntime>() {
    let flights: Fl<R> = Flights::new(Config::default());
    let script = Script::new();
    script.push_all([1, 2]);
    script.finish();
    let mut sub = flights.request("k", ready(&script));
    if R::GLOBAL_BY_DEFAULT {
        assert_eq!(read(&mut sub), events(1..3, Event::Done));
    } else {
        assert_eq!(read(&mut sub), [Event::Failed(Failure::NoRuntime)]);
        assert_eq!(script.probe().made(), 0, "start was never polled");
    }
    drop(sub);
    eventually_outside::<R>("the manager to hold nothing", || flights.is_idle());
}
