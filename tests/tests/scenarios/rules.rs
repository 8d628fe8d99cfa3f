//! One scenario (or more) per rule of DESIGN.md, R1-R16, named after the rule it proves.
//! Each asserts what a client would check: roles, events in order, stats, what was polled or dropped.

use std::sync::Arc;
use streamflight_tests::doubles::{Counted, Probe, Rng, Script, Tally, yield_once};
use streamflight_tests::wait::{as_caller, assert_closed, eventually, next_within, poll_once};
use streamflight_tests::{
    CancelError, Client, Config, Event, Failure, Flights, LateJoin, Orphan, Role, TestRuntime, scenarios,
    stats,
};

use super::{Error, expect_item, gate, manager, next, ready, seq, to_end};

scenarios! {
    r1_lead,
    r2_follow,
    r3_join_late_replay,
    r3_join_late_tail,
    r3_join_late_new_flight,
    r4_prepared,
    r5_prepare_failed,
    r6_items,
    r7_done,
    r8_upstream_error,
    r9_panic_in_preparation,
    r9_panic_in_upstream,
    r10_leader_cancel_in_company,
    r10_cancel_during_preparation_in_company,
    r11_last_one_out_aborts,
    r11_orphan_finish,
    r12_drop,
    r13_bad_cancel,
    r14_exactly_one_end,
    r14_cancel_racing_the_end,
    r15_stalled_next_to_fast,
    r15_lagged_exact_count,
    r15_late_join_after_truncation,
    r15_lagged_after_the_end,
    r15_lagged_last_one_leaves,
    r16_no_leak,
    r16_no_leak_after_manager_dropped,
}

/// R1: the first request for a key leads a flight whose preparation starts at once,
/// without anyone reading the subscription; another key is another flight.
async fn r1_lead<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    let (gate, script) = (gate(), Script::new());
    let mut leader = as_caller(|| flights.request("k", gate.start()));
    assert_eq!(leader.role(), Role::Leader);
    assert_eq!(flights.stats(), stats! { requests: 1, flights: 1, active_flights: 1, active_requests: 1 });
    eventually::<R>("the leader's preparation to start", || gate.probe().polled() == 1).await;

    let other = Script::new();
    let mut elsewhere = flights.request("another key", ready(&other));
    assert_eq!(elsewhere.role(), Role::Leader);
    assert_eq!(flights.stats().flights, 2);

    gate.open(script.stream());
    script.push(7);
    script.finish();
    other.finish();
    assert_eq!(to_end::<R>(&mut leader).await, (vec![7], Event::Done));
    assert_eq!(to_end::<R>(&mut elsewhere).await, (vec![], Event::Done));
    assert_eq!(gate.probe().polled_by_caller(), 0, "only the flight's task prepares");
}

/// R2: a request while the flight prepares follows it: its `start` is dropped unpolled, it waits.
async fn r2_follow<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    let (gate, script) = (gate(), Script::new());
    let mut leader = flights.request("k", gate.start());
    eventually::<R>("the leader's preparation to start", || gate.probe().polled() == 1).await;
    let mut follower = as_caller(|| flights.request("k", gate.start()));
    assert_eq!(follower.role(), Role::Follower);
    eventually::<R>("the follower's start to be dropped", || gate.probe().dropped() == 1).await;
    assert_eq!(gate.probe().polled(), 1, "a follower does no work");
    assert_eq!(
        flights.stats(),
        stats! { requests: 2, flights: 1, joined: 1, active_flights: 1, active_requests: 2 }
    );
    assert!(poll_once(&mut follower).is_pending(), "a follower waits for the preparation");

    gate.open(script.stream());
    script.push_all([1, 2]);
    script.finish();
    assert_eq!(to_end::<R>(&mut leader).await, (vec![1, 2], Event::Done));
    assert_eq!(to_end::<R>(&mut follower).await, (vec![1, 2], Event::Done));
    assert_eq!(script.probe().made(), 1, "one upstream for both");
}

/// R3 (Replay, the default): a request while the flight streams joins it — from the
/// moment preparation succeeded, before the first item — and gets the whole history, then live items.
async fn r3_join_late_replay<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    let (gate, script) = (gate(), Script::new());
    let mut leader = flights.request("k", gate.start());
    gate.open(script.stream());
    // The upstream is polled only once the flight is reported prepared.
    eventually::<R>("the upstream to be polled", || script.probe().polled() == 1).await;
    let mut early = flights.request("k", gate.start());
    assert_eq!(early.role(), Role::Joiner, "streaming starts when preparation succeeds");

    script.push_all([0, 1, 2]);
    for i in 0..3 {
        expect_item::<R>(&mut leader, i).await;
    }
    let mut late = flights.request("k", gate.start());
    assert_eq!(late.role(), Role::Joiner);
    script.push(3);
    script.finish();
    assert_eq!(to_end::<R>(&mut leader).await, (vec![3], Event::Done));
    for sub in [&mut early, &mut late] {
        assert_eq!(to_end::<R>(sub).await, (seq(0..4), Event::Done), "a joiner replays the whole history");
    }
    assert_eq!(gate.probe().polled(), 1);
    assert_eq!(flights.stats(), stats! { requests: 3, flights: 1, joined: 2 });
}

/// R3 (Tail): a late joiner gets only the items produced after it joined.
async fn r3_join_late_tail<R: TestRuntime>() {
    let flights = manager::<R>(Config::default().late_join(LateJoin::Tail));
    let (gate, script) = (gate(), Script::new());
    let mut leader = flights.request("k", gate.start());
    gate.open(script.stream());
    script.push_all([0, 1]);
    expect_item::<R>(&mut leader, 0).await;
    expect_item::<R>(&mut leader, 1).await;
    let mut tail = flights.request("k", gate.start());
    assert_eq!(tail.role(), Role::Joiner);
    script.push_all([2, 3]);
    script.finish();
    assert_eq!(to_end::<R>(&mut leader).await, (vec![2, 3], Event::Done));
    assert_eq!(to_end::<R>(&mut tail).await, (vec![2, 3], Event::Done), "Tail: only what came after joining");
    assert_eq!(flights.stats(), stats! { requests: 2, flights: 1, joined: 1 });
}

/// R3 (NewFlight): a late request starts a fresh flight, which newer requests follow;
/// the old flight goes on for its own subscribers. While preparing, requests still follow (R2).
async fn r3_join_late_new_flight<R: TestRuntime>() {
    let flights = manager::<R>(Config::default().late_join(LateJoin::NewFlight));
    let (gate1, script1) = (gate(), Script::new());
    let mut leader1 = flights.request("k", gate1.start());
    let mut follower1 = flights.request("k", gate1.start());
    assert_eq!(follower1.role(), Role::Follower);
    gate1.open(script1.stream());
    eventually::<R>("the first upstream to be polled", || script1.probe().polled() == 1).await;

    let (gate2, script2) = (gate(), Script::new());
    let mut leader2 = flights.request("k", gate2.start());
    assert_eq!(leader2.role(), Role::Leader, "NewFlight: a late request leads a fresh flight");
    let mut follower2 = flights.request("k", gate2.start());
    assert_eq!(follower2.role(), Role::Follower, "newer requests follow the fresh flight");
    eventually::<R>("the fresh flight to prepare", || gate2.probe().polled() == 1).await;
    assert_eq!(gate1.probe().polled(), 1);

    // The old flight ends first; the key stays the fresh flight's.
    script1.push(10);
    script1.finish();
    for sub in [&mut leader1, &mut follower1] {
        assert_eq!(to_end::<R>(sub).await, (vec![10], Event::Done));
    }
    let mut follower3 = flights.request("k", gate2.start());
    assert_eq!(follower3.role(), Role::Follower, "the old flight's end left the fresh flight joinable");
    gate2.open(script2.stream());
    script2.push(20);
    script2.finish();
    for sub in [&mut leader2, &mut follower2, &mut follower3] {
        assert_eq!(to_end::<R>(sub).await, (vec![20], Event::Done));
    }
    assert_eq!(flights.stats(), stats! { requests: 5, flights: 2, joined: 3 });
}

/// R4: when preparation succeeds, every waiting request reads from item 0 and the
/// upstream starts — not before.
async fn r4_prepared<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    let (gate, script) = (gate(), Script::new());
    let mut subs: Vec<_> = (0..3).map(|_| flights.request("k", gate.start())).collect();
    eventually::<R>("the preparation to start", || gate.probe().polled() == 1).await;
    assert_eq!(script.probe().made(), 0);
    gate.open(script.stream());
    script.push_all(0..3);
    script.finish();
    for sub in &mut subs {
        assert_eq!(to_end::<R>(sub).await, (seq(0..3), Event::Done));
    }
    assert_eq!((script.probe().made(), script.probe().polled()), (1, 1), "one upstream, started once");
}

/// R5: a failed preparation ends every waiting request with `Failed(Upstream(e))` and frees the key.
async fn r5_prepare_failed<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    let gate = gate();
    let mut subs: Vec<_> = (0..3).map(|_| flights.request("k", gate.start())).collect();
    eventually::<R>("the preparation to start", || gate.probe().polled() == 1).await;
    gate.fail("no model");
    for sub in &mut subs {
        assert_eq!(to_end::<R>(sub).await, (vec![], Event::Failed(Failure::Upstream(Arc::new("no model")))));
    }
    assert_eq!(flights.stats(), stats! { requests: 3, flights: 1, joined: 2 });

    let script = Script::new();
    let mut again = flights.request("k", ready(&script));
    assert_eq!(again.role(), Role::Leader, "the key is free again");
    script.push(1);
    script.finish();
    assert_eq!(to_end::<R>(&mut again).await, (vec![1], Event::Done));
    assert_eq!(flights.stats().flights, 2);
}

/// R6: every subscriber reads every item once, in upstream order, with no gap and no
/// duplicate, however the items arrive; a joiner midway too.
async fn r6_items<R: TestRuntime>() {
    const N: u64 = 2000;
    let flights = manager::<R>(Config::default());
    let (gate, script) = (gate(), Script::new());
    let read = |mut sub: super::Sub| R::spawn_client(async move { to_end::<R>(&mut sub).await });
    let mut readers: Vec<Client<_>> = (0..3).map(|_| read(flights.request("k", gate.start()))).collect();
    gate.open(script.stream());
    eventually::<R>("the upstream to be polled", || script.probe().polled() == 1).await;
    let mut rng = Rng::new(6);
    let mut next = 0;
    while next < N {
        if next >= N / 2 && readers.len() == 3 {
            let joiner = flights.request("k", gate.start());
            assert_eq!(joiner.role(), Role::Joiner);
            readers.push(read(joiner));
        }
        let burst = (1 + rng.below(100)).min(N - next);
        script.push_all(next..next + burst);
        next += burst;
        if rng.chance(50) {
            yield_once().await;
        }
    }
    script.finish();
    for reader in readers {
        assert_eq!(reader.join().await, (seq(0..N), Event::Done));
    }
}

/// R7: after the remaining items every subscriber gets `Done`; the key is free before
/// anyone sees it, so whoever has seen `Done` and asks again leads a fresh flight.
async fn r7_done<R: TestRuntime>() {
    const ROUNDS: u64 = 20;
    let flights = manager::<R>(Config::default());
    let scripts: Vec<Script<u64, Error>> = (0..=ROUNDS).map(|_| Script::new()).collect();
    let mut leader = flights.request("k", ready(&scripts[0]));
    for round in 0..ROUNDS {
        let script = &scripts[round as usize];
        let next_script = &scripts[round as usize + 1];
        assert_eq!(leader.role(), Role::Leader, "round {round}: seen Done, asked again, leads");
        assert_eq!(flights.stats().flights, round + 1);
        let mut other = flights.request("k", ready(next_script));
        assert_ne!(other.role(), Role::Leader, "round {round}: the flight is live");
        script.push_all([round, round + 100]);
        script.finish();
        if round % 2 == 0 {
            assert_eq!(to_end::<R>(&mut leader).await, (vec![round, round + 100], Event::Done));
            leader = flights.request("k", ready(next_script));
            assert_eq!(to_end::<R>(&mut other).await, (vec![round, round + 100], Event::Done));
        } else {
            assert_eq!(to_end::<R>(&mut other).await, (vec![round, round + 100], Event::Done));
            let mut old = std::mem::replace(&mut leader, flights.request("k", ready(next_script)));
            assert_eq!(to_end::<R>(&mut old).await, (vec![round, round + 100], Event::Done));
        }
    }
    drop(leader);
    assert_eq!(flights.stats().aborted, 1);
    assert!(flights.is_idle());
}

/// R8: an upstream error reaches every subscriber after every item produced before it.
async fn r8_upstream_error<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    let (gate, script) = (gate(), Script::new());
    let mut leader = flights.request("k", gate.start());
    let mut follower = flights.request("k", gate.start());
    gate.open(script.stream());
    script.push_all([1, 2]);
    expect_item::<R>(&mut leader, 1).await;
    let mut joiner = flights.request("k", gate.start());
    assert_eq!(joiner.role(), Role::Joiner);
    script.fail("broken pipe");
    script.push(3);
    let failed = Event::Failed(Failure::Upstream(Arc::new("broken pipe")));
    assert_eq!(to_end::<R>(&mut leader).await, (vec![2], failed.clone()));
    assert_eq!(to_end::<R>(&mut follower).await, (vec![1, 2], failed.clone()));
    assert_eq!(to_end::<R>(&mut joiner).await, (vec![1, 2], failed));
    eventually::<R>("the failed upstream to be dropped", || script.probe().dropped() == 1).await;
    assert_eq!(flights.request("k", gate.start()).role(), Role::Leader, "the key is free again");
}

/// R9: a panic in preparation ends every request of the flight with `Failed(Panicked)`;
/// the manager stays usable, for the same key too.
async fn r9_panic_in_preparation<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    let gate = gate();
    let mut leader = flights.request("k", gate.start());
    let mut follower = flights.request("k", gate.start());
    eventually::<R>("the preparation to start", || gate.probe().polled() == 1).await;
    gate.panic();
    for sub in [&mut leader, &mut follower] {
        assert_eq!(to_end::<R>(sub).await, (vec![], Event::Failed(Failure::Panicked)));
    }
    eventually::<R>("the panicked preparation to be dropped", || gate.probe().alive() == 0).await;

    let script = Script::new();
    let mut again = flights.request("k", ready(&script));
    assert_eq!(again.role(), Role::Leader);
    script.push(5);
    script.finish();
    assert_eq!(to_end::<R>(&mut again).await, (vec![5], Event::Done));
    assert_eq!(flights.stats(), stats! { requests: 3, flights: 2, joined: 1 });
}

/// R9: a panic in the upstream ends every request with `Failed(Panicked)` after the items
/// before it; the manager stays usable.
async fn r9_panic_in_upstream<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    let (gate, script) = (gate(), Script::new());
    let mut leader = flights.request("k", gate.start());
    let mut follower = flights.request("k", gate.start());
    gate.open(script.stream());
    script.push(1);
    script.panic();
    for sub in [&mut leader, &mut follower] {
        assert_eq!(to_end::<R>(sub).await, (vec![1], Event::Failed(Failure::Panicked)));
    }
    eventually::<R>("the panicked upstream to be dropped", || script.probe().dropped() == 1).await;

    let fresh = Script::new();
    let mut again = flights.request("k", ready(&fresh));
    assert_eq!(again.role(), Role::Leader);
    fresh.push(2);
    fresh.finish();
    assert_eq!(to_end::<R>(&mut again).await, (vec![2], Event::Done));
}

/// R10: the leader cancels mid-stream, with an item in the history it has not read:
/// its next event is `Cancelled`; its three followers read every item, then `Done`.
async fn r10_leader_cancel_in_company<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    let (gate, script) = (gate(), Script::new());
    let mut leader = flights.request("k", gate.start());
    let mut followers: Vec<_> = (0..3).map(|_| flights.request("k", gate.start())).collect();
    gate.open(script.stream());
    script.push_all(0..3);
    for i in 0..3 {
        expect_item::<R>(&mut followers[0], i).await;
    }
    expect_item::<R>(&mut leader, 0).await;

    assert_eq!(flights.cancel(leader.id()), Ok(()));
    assert_eq!(
        flights.stats(),
        stats! { requests: 4, flights: 1, joined: 3, cancelled: 1, active_flights: 1, active_requests: 3 }
    );
    assert_eq!(next::<R>(&mut leader).await, Event::Cancelled, "a cancel wins over unread items");
    assert_closed(&mut leader);

    let readers: Vec<_> = followers
        .into_iter()
        .map(|mut sub| R::spawn_client(async move { to_end::<R>(&mut sub).await }))
        .collect();
    script.push_all(3..10);
    assert_eq!(script.probe().dropped(), 0, "the upstream goes on for the followers");
    script.finish();
    let mut readers = readers.into_iter();
    assert_eq!(readers.next().unwrap().join().await, (seq(3..10), Event::Done));
    for reader in readers {
        assert_eq!(reader.join().await, (seq(0..10), Event::Done));
    }
    assert_eq!(gate.probe().polled(), 1);
    assert_eq!(flights.stats(), stats! { requests: 4, flights: 1, joined: 3, cancelled: 1 });
}

/// R10: during preparation, the leader's cancel (through the subscription) or a
/// follower's (through the manager) ends that request alone; preparation goes on.
async fn r10_cancel_during_preparation_in_company<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    for leader_cancels in [true, false] {
        let (gate, script) = (gate(), Script::new());
        let mut leader = flights.request("k", gate.start());
        let mut follower = flights.request("k", gate.start());
        eventually::<R>("the preparation to start", || gate.probe().polled() == 1).await;
        let (gone, stays) = if leader_cancels {
            leader.cancel();
            (&mut leader, &mut follower)
        } else {
            assert_eq!(flights.cancel(follower.id()), Ok(()));
            (&mut follower, &mut leader)
        };
        assert_eq!(next::<R>(gone).await, Event::Cancelled);
        assert_closed(gone);
        assert_eq!(gate.probe().alive(), 1, "the leader's preparation is still alive");
        gate.open(script.stream());
        script.push(1);
        script.finish();
        assert_eq!(to_end::<R>(stays).await, (vec![1], Event::Done));
    }

    // The leader's subscription dropped at once, maybe before its task first ran.
    let (gate, script) = (gate(), Script::new());
    let leader = flights.request("k", gate.start());
    let mut follower = flights.request("k", gate.start());
    drop(leader);
    eventually::<R>("the preparation to start", || gate.probe().polled() == 1).await;
    gate.open(script.stream());
    script.push(1);
    script.finish();
    assert_eq!(to_end::<R>(&mut follower).await, (vec![1], Event::Done));
    assert_eq!(flights.stats(), stats! { requests: 6, flights: 3, joined: 3, cancelled: 3 });
}

/// R11: the last live request leaving aborts the flight (Orphan::Abort): the preparation
/// future or the upstream stream is dropped promptly, counted in `aborted`, and the key is free.
async fn r11_last_one_out_aborts<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());

    // Alone, during preparation.
    let gate1 = gate();
    let mut lone = flights.request("k", gate1.start());
    eventually::<R>("the preparation to start", || gate1.probe().polled() == 1).await;
    assert_eq!(flights.cancel(lone.id()), Ok(()));
    assert_eq!(flights.stats().aborted, 1, "counted when cancel returns");
    assert_eq!(next::<R>(&mut lone).await, Event::Cancelled);
    eventually::<R>("the preparation future to be dropped", || gate1.probe().dropped() == 1).await;

    // Alone, cancelled at once, maybe before the flight's task first ran.
    let gate0 = gate();
    let mut hasty = flights.request("k", gate0.start());
    assert_eq!(hasty.role(), Role::Leader);
    hasty.cancel();
    assert_eq!(flights.stats().aborted, 2);
    assert_eq!(next::<R>(&mut hasty).await, Event::Cancelled);
    eventually::<R>("the unstarted preparation to be dropped", || gate0.probe().dropped() == 1).await;

    // Two, while streaming: the first to go changes nothing, the last aborts.
    let (gate2, script) = (gate(), Script::new());
    let mut first = flights.request("k", gate2.start());
    assert_eq!(first.role(), Role::Leader, "the aborted flight freed the key");
    let mut second = flights.request("k", gate2.start());
    gate2.open(script.stream());
    script.push(1);
    expect_item::<R>(&mut first, 1).await;
    expect_item::<R>(&mut second, 1).await;
    first.cancel();
    assert_eq!(next::<R>(&mut first).await, Event::Cancelled);
    assert_eq!(flights.stats().aborted, 2);
    assert_eq!(script.probe().dropped(), 0, "someone still listens");
    script.push(2);
    expect_item::<R>(&mut second, 2).await;
    drop(second);
    assert_eq!(flights.stats().aborted, 3);
    eventually::<R>("the upstream stream to be dropped", || script.probe().dropped() == 1).await;
    assert_eq!(flights.request("k", gate2.start()).role(), Role::Leader);
    assert_eq!(flights.stats(), stats! { requests: 5, flights: 4, joined: 1, cancelled: 5, aborted: 4 });
}

/// R11 (Orphan::Finish): with nobody left the flight goes on to its end, stays joinable
/// meanwhile, and frees the key when it ends.
async fn r11_orphan_finish<R: TestRuntime>() {
    let flights = manager::<R>(Config::default().orphan(Orphan::Finish));
    let (gate, script) = (gate(), Script::new());
    let mut leader = flights.request("k", gate.start());
    eventually::<R>("the preparation to start", || gate.probe().polled() == 1).await;
    leader.cancel();
    assert_eq!(next::<R>(&mut leader).await, Event::Cancelled);
    let follower = flights.request("k", gate.start());
    assert_eq!(follower.role(), Role::Follower, "the orphaned flight is still joinable");
    drop(follower);
    assert_eq!(gate.probe().alive(), 1, "the preparation goes on");

    gate.open(script.stream());
    script.push_all([0, 1, 2]);
    eventually::<R>("the upstream to be polled", || script.probe().polled() == 1).await;
    let mut joiner = flights.request("k", gate.start());
    assert_eq!(joiner.role(), Role::Joiner);
    for i in 0..3 {
        expect_item::<R>(&mut joiner, i).await;
    }
    drop(joiner);
    script.push(3);
    script.finish();
    eventually::<R>("the orphaned flight to end", || flights.stats().active_flights == 0).await;
    assert_eq!(script.pending_steps(), 0, "the upstream was played to its end");
    eventually::<R>("the finished upstream to be dropped", || script.probe().dropped() == 1).await;
    assert_eq!(flights.stats(), stats! { requests: 3, flights: 1, joined: 2, cancelled: 3 });
    assert_eq!(flights.request("k", gate.start()).role(), Role::Leader, "the key is free once it ended");
}

/// R12: dropping a subscription is a cancellation (counted), alone or in company.
async fn r12_drop<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    let (gate, script) = (gate(), Script::new());
    let mut leader = flights.request("k", gate.start());
    let follower = flights.request("k", gate.start());
    gate.open(script.stream());
    script.push(1);
    drop(follower);
    assert_eq!(
        flights.stats(),
        stats! { requests: 2, flights: 1, joined: 1, cancelled: 1, active_flights: 1, active_requests: 1 }
    );
    expect_item::<R>(&mut leader, 1).await;
    script.push(2);
    expect_item::<R>(&mut leader, 2).await;
    drop(leader);
    assert_eq!(flights.stats(), stats! { requests: 2, flights: 1, joined: 1, cancelled: 2, aborted: 1 });
    eventually::<R>("the upstream stream to be dropped", || script.probe().dropped() == 1).await;
    assert!(flights.is_idle());
}

/// R13: a request is live until its end is read, even past its flight's end; cancelling
/// an ended, cancelled or foreign id is `UnknownRequest` and changes nothing.
async fn r13_bad_cancel<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    let gate1 = gate();
    let mut a = flights.request("a", gate1.start());
    assert_eq!(flights.cancel(a.id()), Ok(()));
    assert_eq!(flights.stats().active_requests, 0, "a cancelled request stops counting when cancel returns");
    assert_eq!(flights.cancel(a.id()), Err(CancelError::UnknownRequest));
    a.cancel();
    assert_eq!(flights.stats(), stats! { requests: 1, flights: 1, cancelled: 1, aborted: 1 });
    assert_eq!(next::<R>(&mut a).await, Event::Cancelled);
    assert_closed(&mut a);
    assert_eq!(flights.cancel(a.id()), Err(CancelError::UnknownRequest));

    // The flight ended, but b has not read its end: b is live, and a cancel wins.
    let script = Script::new();
    let mut b = flights.request("b", ready(&script));
    let mut c = flights.request("b", ready(&script));
    script.push_all(0..3);
    script.finish();
    assert_eq!(to_end::<R>(&mut c).await, (seq(0..3), Event::Done));
    assert_eq!(flights.stats().active_requests, 1);
    assert_eq!(flights.cancel(b.id()), Ok(()));
    assert_eq!(next::<R>(&mut b).await, Event::Cancelled, "no item, no Done after the cancel");
    assert_closed(&mut b);
    assert_eq!(flights.cancel(c.id()), Err(CancelError::UnknownRequest), "c read its end");

    // An id of another manager.
    let other = manager::<R>(Config::default());
    let gate2 = gate();
    let mut d = other.request("a", gate2.start());
    assert_eq!(flights.cancel(d.id()), Err(CancelError::UnknownRequest));
    assert_eq!(other.stats().active_requests, 1);
    assert!(poll_once(&mut d).is_pending(), "the other manager's request is untouched");
    assert_eq!(flights.stats(), stats! { requests: 3, flights: 2, joined: 1, cancelled: 2, aborted: 1 });
}

/// R14: each kind of end comes once, then the stream yields `None` forever.
async fn r14_exactly_one_end<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    let (done, failed, panicked) = (Script::new(), Script::new(), Script::new());
    let mut subs = [
        flights.request("done", ready(&done)),
        flights.request("failed", ready(&failed)),
        flights.request("panicked", ready(&panicked)),
        flights.request("cancelled", gate().start()),
    ];
    done.finish();
    failed.fail("no");
    panicked.panic();
    subs[3].cancel();
    let ends = [
        Event::Done,
        Event::Failed(Failure::Upstream(Arc::new("no"))),
        Event::Failed(Failure::Panicked),
        Event::Cancelled,
    ];
    for (sub, end) in subs.iter_mut().zip(ends) {
        assert_eq!(to_end::<R>(sub).await, (vec![], end));
        assert_eq!(next_within::<R, _>("a closed subscription", sub).await, None);
        assert_eq!(flights.cancel(sub.id()), Err(CancelError::UnknownRequest));
        assert_closed(sub);
    }
}

/// R14 and R13: a cancel racing the flight's end from another task: the request gets one
/// end, `Cancelled` exactly when the cancel succeeded, `Done` exactly when it came too late.
async fn r14_cancel_racing_the_end<R: TestRuntime>() {
    let flights = manager::<R>(Config::default());
    let mut outcomes = [0; 2];
    for round in 0..40u64 {
        let script = Script::new();
        let mut sub = flights.request("k", ready(&script));
        let mut witness = flights.request("k", ready(&script));
        let canceller = {
            let (flights, id) = (flights.clone(), sub.id());
            R::spawn_client(async move {
                for _ in 0..round % 4 {
                    yield_once().await;
                }
                flights.cancel(id)
            })
        };
        script.push(round);
        script.finish();
        let (_, end) = to_end::<R>(&mut sub).await;
        let cancelled = canceller.join().await;
        match (&cancelled, &end) {
            (Ok(()), Event::Cancelled) => outcomes[0] += 1,
            (Err(CancelError::UnknownRequest), Event::Done) => outcomes[1] += 1,
            other => panic!("round {round}: cancel and end disagree: {other:?}"),
        }
        assert_eq!(to_end::<R>(&mut witness).await, (vec![round], Event::Done));
    }
    assert_eq!(flights.stats().cancelled, outcomes[0]);
    assert!(flights.is_idle());
}

/// R15: a stalled subscriber next to a fast one over 10,000 items: the fast one and the
/// upstream finish while the stalled one has read nothing; then it reads all of them.
async fn r15_stalled_next_to_fast<R: TestRuntime>() {
    const N: u64 = 10_000;
    let flights = manager::<R>(Config::default());
    let (gate, script) = (gate(), Script::new());
    let mut fast = flights.request("k", gate.start());
    let mut stalled = flights.request("k", gate.start());
    assert!(poll_once(&mut stalled).is_pending(), "the stalled one is parked");
    let fast = R::spawn_client(async move { to_end::<R>(&mut fast).await });
    gate.open(script.stream());
    script.push_all(0..N);
    script.finish();
    assert_eq!(fast.join().await, (seq(0..N), Event::Done));
    eventually::<R>("the upstream to be played out and dropped", || script.probe().dropped() == 1).await;
    assert_eq!(to_end::<R>(&mut stalled).await, (seq(0..N), Event::Done));
}

/// R15: with `history_limit(10)`, a subscriber that read 3 items and fell behind 33 gets
/// `Failed(Lagged { missed: 20 })` (23 released, 3 of them read), never a gap; it leaves,
/// the others go on.
async fn r15_lagged_exact_count<R: TestRuntime>() {
    let flights = manager::<R>(Config::default().history_limit(10));
    let (gate, script) = (gate(), Script::new());
    let mut fast = flights.request("k", gate.start());
    let mut slow = flights.request("k", gate.start());
    gate.open(script.stream());
    for i in 0..3 {
        script.push(i);
        expect_item::<R>(&mut fast, i).await;
        expect_item::<R>(&mut slow, i).await;
    }
    for i in 3..33 {
        script.push(i);
        expect_item::<R>(&mut fast, i).await;
    }
    assert_eq!(to_end::<R>(&mut slow).await, (vec![], Event::Failed(Failure::Lagged { missed: 20 })));
    assert_eq!(flights.cancel(slow.id()), Err(CancelError::UnknownRequest), "a lagged request has ended");
    assert_eq!(
        flights.stats(),
        stats! { requests: 2, flights: 1, joined: 1, active_flights: 1, active_requests: 1 }
    );
    script.push(33);
    script.finish();
    assert_eq!(to_end::<R>(&mut fast).await, (vec![33], Event::Done));
}

/// R15: once the history released an item, a late request starts a new flight, under
/// Replay and Tail alike; before that, it joins.
async fn r15_late_join_after_truncation<R: TestRuntime>() {
    for policy in [LateJoin::Replay, LateJoin::Tail] {
        let flights = manager::<R>(Config::default().history_limit(10).late_join(policy));
        let (gate, script) = (gate(), Script::new());
        let mut leader = flights.request("k", gate.start());
        gate.open(script.stream());
        for i in 0..10 {
            script.push(i);
            expect_item::<R>(&mut leader, i).await;
        }
        let mut joiner = flights.request("k", gate.start());
        assert_eq!(joiner.role(), Role::Joiner, "{policy:?}: nothing released yet");
        if policy == LateJoin::Replay {
            for i in 0..10 {
                expect_item::<R>(&mut joiner, i).await;
            }
        }
        script.push(10);
        expect_item::<R>(&mut leader, 10).await;
        expect_item::<R>(&mut joiner, 10).await;
        let (gate2, script2) = (super::gate(), Script::new());
        let mut late = flights.request("k", gate2.start());
        assert_eq!(
            late.role(),
            Role::Leader,
            "{policy:?}: after truncation a late request starts a new flight"
        );
        assert_eq!(flights.stats().flights, 2);
        script.finish();
        assert_eq!(to_end::<R>(&mut leader).await, (vec![], Event::Done));
        assert_eq!(to_end::<R>(&mut joiner).await, (vec![], Event::Done));
        let mut later = flights.request("k", gate2.start());
        assert_eq!(
            later.role(),
            Role::Follower,
            "{policy:?}: the truncated flight's end left the new one joinable"
        );
        gate2.open(script2.stream());
        script2.finish();
        assert_eq!(to_end::<R>(&mut late).await, (vec![], Event::Done));
        assert_eq!(to_end::<R>(&mut later).await, (vec![], Event::Done));
    }
}

/// R15: a subscriber still reading after the flight ended lags all the same if the window
/// moved past it: `Lagged { missed }`, not `Done`.
async fn r15_lagged_after_the_end<R: TestRuntime>() {
    let flights = manager::<R>(Config::default().history_limit(4));
    let (gate, script) = (gate(), Script::new());
    let mut fast = flights.request("k", gate.start());
    let mut slow = flights.request("k", gate.start());
    gate.open(script.stream());
    for i in 0..10 {
        script.push(i);
        expect_item::<R>(&mut fast, i).await;
    }
    script.finish();
    assert_eq!(to_end::<R>(&mut fast).await, (vec![], Event::Done));
    assert_eq!(to_end::<R>(&mut slow).await, (vec![], Event::Failed(Failure::Lagged { missed: 6 })));
    assert_eq!(flights.stats(), stats! { requests: 2, flights: 1, joined: 1 });
    assert!(flights.is_idle());
}

/// R15 and R11: a lagged subscriber has left its flight; when it was the last one, the
/// flight is aborted and its upstream dropped.
async fn r15_lagged_last_one_leaves<R: TestRuntime>() {
    let flights = manager::<R>(Config::default().history_limit(4));
    let (gate, script) = (gate(), Script::new());
    let mut slow = flights.request("k", gate.start());
    let mut witness = flights.request("k", gate.start());
    gate.open(script.stream());
    for i in 0..10 {
        script.push(i);
        expect_item::<R>(&mut witness, i).await;
    }
    witness.cancel();
    assert_eq!(next::<R>(&mut witness).await, Event::Cancelled);
    assert_eq!(flights.stats().aborted, 0, "the slow one is still live");
    assert_eq!(to_end::<R>(&mut slow).await, (vec![], Event::Failed(Failure::Lagged { missed: 6 })));
    assert_eq!(flights.stats(), stats! { requests: 2, flights: 1, joined: 1, cancelled: 1, aborted: 1 });
    eventually::<R>("the upstream stream to be dropped", || script.probe().dropped() == 1).await;
    assert_eq!(flights.request("k", gate.start()).role(), Role::Leader);
}

/// R16: once every flight ended (done, failed, panicked, aborted, lagged) and every
/// subscription is dropped, the manager holds nothing: idle, every key and item dropped.
async fn r16_no_leak<R: TestRuntime>() {
    let (keys, items) = (Tally::new(), Tally::new());
    let flights: Flights<Counted, Counted, Error, R> =
        Flights::with_runtime(Config::default().history_limit(8), R::scenario());
    let (starts, upstreams) = (Probe::new(), Probe::new());
    let request = |key: u64, script: &Script<Counted, Error>| {
        let (script, upstreams) = (script.clone(), upstreams.clone());
        flights.request(
            keys.make(key),
            starts.wrap(async move { Ok::<_, Error>(upstreams.wrap(script.stream())) }),
        )
    };
    let scripts: Vec<Script<Counted, Error>> = (0..6).map(|_| Script::new()).collect();
    let mut done = [request(0, &scripts[0]), request(0, &scripts[0])];
    let mut failed = request(1, &scripts[1]);
    let mut aborted = request(2, &scripts[2]);
    let mut panicked = request(3, &scripts[3]);
    let mut lagged = [request(4, &scripts[4]), request(4, &scripts[4])];
    let dropped = request(5, &Script::new());

    scripts[0].push_all((0..3).map(|i| items.make(i)));
    scripts[0].finish();
    scripts[1].push(items.make(1));
    scripts[1].fail("no");
    scripts[2].push(items.make(2));
    scripts[3].push(items.make(3));
    scripts[3].panic();
    drop(dropped);
    for sub in &mut done {
        let (got, end) = streamflight_tests::wait::read_to_end::<R, _, _>(sub).await;
        assert_eq!((got.len(), end), (3, Event::Done));
    }
    assert!(matches!(next_of::<R>(&mut failed).await, Event::Item(_)));
    assert_eq!(next_of::<R>(&mut failed).await, Event::Failed(Failure::Upstream(Arc::new("no"))));
    assert!(matches!(next_of::<R>(&mut aborted).await, Event::Item(_)));
    aborted.cancel();
    assert_eq!(next_of::<R>(&mut aborted).await, Event::Cancelled);
    assert!(matches!(next_of::<R>(&mut panicked).await, Event::Item(_)));
    assert_eq!(next_of::<R>(&mut panicked).await, Event::Failed(Failure::Panicked));
    for i in 0..20 {
        scripts[4].push(items.make(i));
        assert_eq!(next_of::<R>(&mut lagged[0]).await, Event::Item(items.make(i)));
    }
    assert!(matches!(next_of::<R>(&mut lagged[1]).await, Event::Failed(Failure::Lagged { .. })));
    scripts[4].finish();
    assert_eq!(next_of::<R>(&mut lagged[0]).await, Event::Done);

    drop((done, failed, aborted, panicked, lagged));
    eventually::<R>("the manager to be idle", || flights.is_idle()).await;
    let stats = flights.stats();
    assert_eq!((stats.active_flights, stats.active_requests), (0, 0));
    assert_eq!((stats.requests, stats.flights, stats.aborted), (8, 6, 2));
    eventually::<R>("every start future and upstream to be dropped", || {
        starts.alive() == 0 && upstreams.alive() == 0
    })
    .await;
    eventually::<R>("every key and item to be dropped", || keys.alive() == 0 && items.alive() == 0).await;
    drop(scripts);
}

/// R16: dropping every manager handle while flights are live ends none of them; once their
/// subscribers are done, every key, item, start future and upstream is dropped.
async fn r16_no_leak_after_manager_dropped<R: TestRuntime>() {
    let (keys, items) = (Tally::new(), Tally::new());
    let flights: Flights<Counted, Counted, Error, R> =
        Flights::with_runtime(Config::default(), R::scenario());
    let (reading, leaving) = (Script::new(), Script::new());
    let starts = Probe::new();
    let start = |script: &Script<Counted, Error>| {
        let script = script.clone();
        starts.wrap(async move { Ok::<_, Error>(script.stream()) })
    };
    let mut reader = flights.request(keys.make(1), start(&reading));
    let lone = flights.request(keys.make(2), start(&leaving));
    drop(flights.clone());
    drop(flights);

    reading.push(items.make(1));
    reading.finish();
    leaving.push(items.make(2));
    let (got, end) = streamflight_tests::wait::read_to_end::<R, _, _>(&mut reader).await;
    assert_eq!((got, end), (vec![items.make(1)], Event::Done));
    // Taken by the flight, not merely polled: an item still in the script would outlive the flight.
    eventually::<R>("the second upstream's item to be taken", || leaving.pending_steps() == 0).await;
    drop(lone);
    eventually::<R>("the abandoned flight's upstream to be dropped", || leaving.probe().dropped() == 1).await;
    drop(reader);
    eventually::<R>("every start future and upstream to be dropped", || {
        starts.alive() == 0 && reading.probe().alive() == 0
    })
    .await;
    eventually::<R>("every key and item to be dropped", || keys.alive() == 0 && items.alive() == 0).await;
}

/// The next event of a subscription of counted items.
async fn next_of<R: TestRuntime>(
    sub: &mut streamflight_tests::Subscription<Counted, Error>,
) -> Event<Counted, Error> {
    streamflight_tests::wait::next_event::<R, Counted, Error>(sub).await
}
