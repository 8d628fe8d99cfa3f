//! The guarantees an adapter user relies on beyond single rules: who polls `start`, fresh flights
//! after an end, cancel semantics, prompt aborts, stale events, one preparation for 100 requests,
//! and a join that never leads.

use std::sync::Arc;
use std::time::Duration;

use streamflight_tests::doubles::{Counted, Latch, Probe, Script, Tally};
use streamflight_tests::wait::{as_caller, assert_closed, eventually, next_event, next_within, read_to_end};
use streamflight_tests::{
    CancelError, Config, Event, Failure, Flights, LateJoin, Role, TestRuntime, scenarios, stats,
};

use super::{Error, expect_item, gate, manager, next, ready, seq, to_end};

scenarios! {
    start_polled_only_by_the_flights_task,
    fresh_flight_after_any_end,
    cancel_yields_cancelled_then_none,
    cancel_wakes_a_parked_reader,
    lone_cancel_or_drop_aborts_promptly,
    everybody_cancels_during_preparation,
    stale_event_from_aborted_flight,
    hundred_identical_requests_one_preparation,
    join_follows_joins_and_replays_but_never_leads,
}

/// The leader's `start` is polled by the flight's own task — never on the caller's thread
/// during `request`, nor while a caller reads — and without anyone reading; followers'
/// `start` futures are dropped unpolled.
async fn start_polled_only_by_the_flights_task<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    let (gate, script) = (gate(), Script::new());
    let mut subs = vec![as_caller(|| flights.request("k", gate.start()))];
    eventually::<R>("the leader's start to be polled, unread", || gate.probe().polled() == 1).await;
    subs.extend((0..5).map(|_| as_caller(|| flights.request("k", gate.start()))));
    assert!(subs[1..].iter().all(|sub| sub.role() == Role::Follower));
    eventually::<R>("the followers' start futures to be dropped", || gate.probe().dropped() == 5).await;
    gate.open(script.stream());
    script.push_all([1, 2]);
    script.finish();
    for sub in &mut subs {
        assert_eq!(to_end::<R>(sub).await, (vec![1, 2], Event::Done));
    }
    let probe = gate.probe();
    assert_eq!((probe.made(), probe.polled(), probe.polled_by_caller()), (6, 1, 0));
    assert_eq!(script.probe().polled_by_caller(), 0, "the upstream too is polled by the flight's task");
    eventually::<R>("the leader's start to be dropped", || probe.dropped() == 6).await;
}

/// How a flight ends, in [`fresh_flight_after_any_end`].
#[derive(Clone, Copy, Debug)]
enum Ending {
    Done,
    PrepareFailed,
    UpstreamFailed,
    PreparePanicked,
    UpstreamPanicked,
    Aborted,
}

/// Once a subscriber has seen `Done`, `Failed` or an abort, a new request for the key
/// starts a fresh flight: the key is freed before the end is published.
async fn fresh_flight_after_any_end<R: TestRuntime>() {
    use Ending::*;
    let flights = manager::<R>(Config::default());
    let endings = [Done, PrepareFailed, UpstreamFailed, PreparePanicked, UpstreamPanicked, Aborted, Done];
    for (round, ending) in endings.into_iter().enumerate() {
        let (gate, script) = (gate(), Script::new());
        let mut sub = flights.request("k", gate.start());
        assert_eq!(sub.role(), Role::Leader, "after {ending:?}, a fresh flight");
        assert_eq!(flights.stats().flights, round as u64 + 1);
        let company = flights.request("k", gate.start());
        assert_eq!(company.role(), Role::Follower);
        if matches!(ending, Done | UpstreamFailed | UpstreamPanicked) {
            gate.open(script.stream());
        }
        match ending {
            Done => script.finish(),
            PrepareFailed => gate.fail("no"),
            UpstreamFailed => script.fail("no"),
            PreparePanicked => gate.panic(),
            UpstreamPanicked => script.panic(),
            Aborted => {
                company.cancel();
                sub.cancel();
            }
        }
        let end = match ending {
            Done => Event::Done,
            PrepareFailed | UpstreamFailed => Event::Failed(Failure::Upstream(Arc::new("no"))),
            PreparePanicked | UpstreamPanicked => Event::Failed(Failure::Panicked),
            Aborted => Event::Cancelled,
        };
        assert_eq!(next::<R>(&mut sub).await, end, "{ending:?}");
        drop(company);
    }
}

/// After `cancel` returns — through the manager or the subscription — the next event is
/// `Cancelled`, then `None`, even with items unread; a second cancel is `UnknownRequest`.
async fn cancel_yields_cancelled_then_none<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    let (gate, script) = (gate(), Script::new());
    let mut unread = flights.request("k", gate.start());
    let mut half_read = flights.request("k", gate.start());
    let mut stays = flights.request("k", gate.start());
    gate.open(script.stream());
    script.push_all(0..3);
    for i in 0..3 {
        expect_item::<R>(&mut stays, i).await;
    }
    expect_item::<R>(&mut half_read, 0).await;

    assert_eq!(flights.cancel(unread.id()), Ok(()));
    half_read.cancel();
    assert_eq!(flights.stats().cancelled, 2);
    for sub in [&mut unread, &mut half_read] {
        assert_eq!(next::<R>(sub).await, Event::Cancelled, "three items were waiting");
        assert_closed(sub);
        assert_eq!(flights.cancel(sub.id()), Err(CancelError::UnknownRequest));
        sub.cancel();
    }
    assert_eq!(flights.stats().cancelled, 2, "cancelling again changes nothing");
    script.push(3);
    script.finish();
    assert_eq!(to_end::<R>(&mut stays).await, (vec![3], Event::Done));
    assert_eq!(flights.stats(), stats! { requests: 3, flights: 1, joined: 2, cancelled: 2 });
}

/// A cancel from another task wakes a reader parked on its subscription (no lost wake-up),
/// while preparing and while streaming; it reads `Cancelled`, then `None`.
async fn cancel_wakes_a_parked_reader<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    for round in 0..20u64 {
        let (gate, script) = (gate(), Script::new());
        let mut sub = flights.request("k", gate.start());
        let mut stays = flights.request("k", gate.start());
        let streaming = round % 2 == 1;
        if streaming {
            gate.open(script.stream());
            script.push(1);
            expect_item::<R>(&mut stays, 1).await;
            expect_item::<R>(&mut sub, 1).await;
        }
        let (id, parked) = (sub.id(), Probe::new());
        let mut watched = parked.wrap(sub);
        let reader = R::spawn_client(async move {
            let end = next_within::<R, _>("the parked reader", &mut watched).await;
            (end, next_within::<R, _>("the cancelled reader", &mut watched).await)
        });
        eventually::<R>("the reader to park", || parked.polled() == 1).await;
        assert_eq!(flights.cancel(id), Ok(()));
        assert_eq!(reader.join().await, (Some(Event::Cancelled), None), "round {round}");
        assert_eq!(flights.stats().aborted, round, "the other one still listens");
        drop(stays);
    }
}

/// A lone cancel or drop aborts the preparation future or the upstream stream promptly
/// (dropped, not merely ignored), counted in `aborted`; in company nothing is aborted.
async fn lone_cancel_or_drop_aborts_promptly<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    let mut aborted = 0;
    for preparing in [true, false] {
        for by_drop in [false, true] {
            let case = format!("preparing: {preparing}, by drop: {by_drop}");
            let (gate, script) = (gate(), Script::new());
            let mut sub = flights.request("k", gate.start());
            assert_eq!(sub.role(), Role::Leader, "{case}");
            let mut company = flights.request("k", gate.start());
            if preparing {
                eventually::<R>("the preparation to start", || gate.probe().polled() == 1).await;
            } else {
                gate.open(script.stream());
                script.push(1);
                expect_item::<R>(&mut sub, 1).await;
            }
            // In company: the flight goes on.
            if by_drop {
                drop(company);
            } else {
                company.cancel();
                assert_eq!(next::<R>(&mut company).await, Event::Cancelled);
            }
            assert_eq!(flights.stats().aborted, aborted, "{case}: someone still listens");
            if !preparing {
                script.push(2);
                expect_item::<R>(&mut sub, 2).await;
            }
            if preparing {
                // Once prepared, the leader's finished `start` future is dropped: only the upstream lives.
                assert_eq!(gate.probe().alive(), 1, "{case}: the leader's preparation is alive");
            }
            assert_eq!(script.probe().dropped(), 0, "{case}: no upstream was dropped");
            // Alone: the flight is aborted.
            if by_drop {
                drop(sub);
            } else {
                sub.cancel();
                assert_eq!(next::<R>(&mut sub).await, Event::Cancelled);
            }
            aborted += 1;
            assert_eq!(flights.stats().aborted, aborted, "{case}");
            if preparing {
                eventually::<R>("the preparation future to be dropped", || gate.probe().alive() == 0).await;
                assert_eq!(script.probe().made(), 0, "{case}: no upstream was opened");
            } else {
                eventually::<R>("the upstream stream to be dropped", || script.probe().dropped() == 1).await;
            }
        }
    }
    eventually::<R>("the manager to be idle", || flights.is_idle()).await;
}

/// Everybody cancels (or drops) while the flight prepares: nobody is left, the preparation
/// future is dropped and no upstream is ever opened.
async fn everybody_cancels_during_preparation<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    let gate = gate();
    let mut subs: Vec<_> = (0..5).map(|_| flights.request("k", gate.start())).collect();
    eventually::<R>("the preparation to start", || gate.probe().polled() == 1).await;
    subs[0].cancel();
    assert_eq!(flights.cancel(subs[2].id()), Ok(()));
    subs[3].cancel();
    let last = subs.pop().expect("five requests");
    drop(subs.remove(1));
    assert_eq!(flights.stats().aborted, 0);
    assert_eq!(gate.probe().alive(), 1, "one listener is left");
    drop(last);
    assert_eq!(flights.stats(), stats! { requests: 5, flights: 1, joined: 4, cancelled: 5, aborted: 1 });
    for sub in &mut subs {
        assert_eq!(next::<R>(sub).await, Event::Cancelled);
        assert_closed(sub);
    }
    eventually::<R>("the preparation future to be dropped", || gate.probe().alive() == 0).await;
    assert!(flights.is_idle());
}

/// A `start` future's stream type that is never opened.
type Unused = futures::stream::Empty<Result<Counted, Error>>;

/// A stale event from an aborted flight never touches a newer flight for the key: flight 1
/// is aborted while its upstream is still closing; flight 2 starts; flight 1 then reports its end.
async fn stale_event_from_aborted_flight<R: TestRuntime>() {
    let flights: Flights<&str, Counted, Error, R> = Flights::with_runtime(Config::default(), R::scenario());
    let (old_items, new_items) = (Tally::new(), Tally::new());
    let latch = Latch::new();
    let old = Script::new();
    let closing = latch.hold(old.stream());
    let mut first = flights.request("k", async move { Ok::<_, Error>(closing) });
    old.push(old_items.make(1));
    assert_eq!(next_event::<R, _, _>(&mut first).await, Event::Item(old_items.make(1)));
    drop(first);
    assert_eq!(flights.stats().aborted, 1);
    eventually::<R>("flight 1's upstream to be closing", || latch.entered()).await;

    let new = Script::new();
    let fresh = new.clone();
    let mut second = flights.request("k", async move { Ok::<_, Error>(fresh.stream()) });
    assert_eq!(second.role(), Role::Leader);
    eventually::<R>("flight 2 to stream", || new.probe().polled() == 1).await;
    let mut third = flights.request("k", async { Err::<Unused, _>("unused") });
    assert_eq!(third.role(), Role::Joiner);

    latch.release();
    eventually::<R>("flight 1's task to end", || old.probe().dropped() == 1 && old_items.alive() == 0).await;

    let mut fourth = flights.request("k", async { Err::<Unused, _>("unused") });
    assert_eq!(fourth.role(), Role::Joiner, "flight 2 is still the key's flight");
    assert_eq!((flights.stats().flights, flights.stats().active_flights), (2, 1));
    new.push_all([10, 11].map(|i| new_items.make(i)));
    new.finish();
    for sub in [&mut second, &mut third, &mut fourth] {
        let (items, end) = read_to_end::<R, _, _>(sub).await;
        assert_eq!((items.iter().map(Counted::value).collect::<Vec<_>>(), end), (vec![10, 11], Event::Done));
    }
    eventually::<R>("the manager to be idle", || flights.is_idle()).await;
}

/// 100 identical concurrent requests from 100 client tasks: exactly one preparation,
/// one leader, and every request reads every item.
async fn hundred_identical_requests_one_preparation<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    let (gate, script) = (gate(), Script::new());
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let (flights, gate) = (flights.clone(), gate.clone());
            R::spawn_client(async move {
                let mut sub = flights.request("k", gate.start());
                (sub.role(), to_end::<R>(&mut sub).await)
            })
        })
        .collect();
    eventually::<R>("all 100 requests", || flights.stats().requests == 100).await;
    gate.open(script.stream());
    script.push_all(0..5);
    script.finish();
    let mut leaders = 0;
    for client in clients {
        let (role, read) = client.join().await;
        leaders += usize::from(role == Role::Leader);
        assert_eq!(read, (seq(0..5), Event::Done));
    }
    assert_eq!(leaders, 1);
    assert_eq!((gate.probe().made(), gate.probe().polled()), (100, 1), "one preparation");
    assert_eq!(script.probe().made(), 1);
    assert_eq!(flights.stats(), stats! { requests: 100, flights: 1, joined: 99 });
}

/// `join` joins as `request` would: a preparing flight as a follower (R2), a streaming one with
/// its whole history (R3), a lingering one's whole answer (R17). Where a request would lead (no
/// flight for the key, or a streaming one under `NewFlight`) it is `None`: no preparation, no
/// upstream, nothing counted.
async fn join_follows_joins_and_replays_but_never_leads<R: TestRuntime>() {
    let flights = manager::<R>(Config::default().linger(Duration::from_secs(60)));
    assert!(flights.join(&"k").is_none(), "nothing to join");
    assert_eq!(flights.stats(), stats! {}, "nothing counted");
    assert!(flights.is_idle());

    let (gate, script) = (gate(), Script::new());
    let mut leader = flights.request("k", gate.start());
    eventually::<R>("the leader's preparation to start", || gate.probe().polled() == 1).await;
    let mut follower = flights.join(&"k").expect("a preparing flight");
    assert_eq!(follower.role(), Role::Follower);
    gate.open(script.stream());
    script.push_all([0, 1, 2]);
    for i in 0..3 {
        expect_item::<R>(&mut leader, i).await;
    }
    let mut joiner = flights.join(&"k").expect("a streaming flight");
    assert_eq!(joiner.role(), Role::Joiner);
    script.push(3);
    script.finish();
    assert_eq!(to_end::<R>(&mut leader).await, (vec![3], Event::Done));
    for sub in [&mut follower, &mut joiner] {
        assert_eq!(to_end::<R>(sub).await, (seq(0..4), Event::Done), "request {}", sub.id());
    }
    let mut late = flights.join(&"k").expect("a lingering flight");
    assert_eq!(late.role(), Role::Joiner);
    assert_eq!(to_end::<R>(&mut late).await, (seq(0..4), Event::Done), "the whole answer");
    let after = stats! { requests: 4, flights: 1, joined: 3, lingered: 1 };
    assert_eq!(flights.stats(), after);

    assert!(flights.join(&"another key").is_none(), "nothing to join");
    assert_eq!(flights.stats(), after, "nothing started, nothing counted");
    assert_eq!((gate.probe().made(), gate.probe().polled()), (1, 1), "one preparation in all");
    assert_eq!(script.probe().made(), 1, "one upstream in all");

    // NewFlight: a request for a streaming flight would start a fresh one, so a join does not join.
    let flights = manager::<R>(Config::default().late_join(LateJoin::NewFlight));
    let script = Script::new();
    let mut leader = flights.request("k", ready(&script));
    eventually::<R>("the upstream to be polled", || script.probe().polled() == 1).await;
    let before = flights.stats();
    assert!(flights.join(&"k").is_none(), "NewFlight: a request would lead");
    assert_eq!(flights.stats(), before);
    script.push(1);
    script.finish();
    assert_eq!(to_end::<R>(&mut leader).await, (vec![1], Event::Done));
    assert_eq!(script.probe().made(), 1);
}
