//! The rules with time: linger (R17) and detach/resume (R18), on the manager's one timer.
//! Windows meant to stay open are a minute long; windows meant to pass are waited out on a condition.

use std::time::Duration;

use streamflight_tests::doubles::Script;
use streamflight_tests::wait::eventually;
use streamflight_tests::{
    Config, Event, Failure, LateJoin, Orphan, ResumeError, Role, TestRuntime, scenarios,
};

use super::{Error, expect_item, manager, ready, seq, to_end};

scenarios! {
    r17_linger_serves_a_finished_answer_without_a_new_upstream,
    r17_a_linger_ends_and_a_failed_flight_never_lingers,
    r18_a_detached_request_resumes_where_its_client_stopped,
    r18_resume_is_refused_when_it_cannot_be_honoured,
    r18_a_lone_detached_request_keeps_its_flight_until_its_window_passes,
    r17_linger_under_every_late_join_policy_and_orphan_policy,
    r17_a_truncated_history_is_never_lingered_on,
    r18_resume_from_the_end_and_from_released_items,
}

const MINUTE: Duration = Duration::from_secs(60);
/// A window short enough to wait out.
const SHORT: Duration = Duration::from_millis(20);

/// With a linger, a request for a key whose flight finished `Done` a moment ago joins it: the
/// whole answer, then `Done`, and no new upstream.
async fn r17_linger_serves_a_finished_answer_without_a_new_upstream<R: TestRuntime>() {
    let flights = manager::<R>(Config::default().linger(MINUTE));
    let script = Script::<u64, Error>::new();
    let mut first = flights.request("k", ready(&script));
    script.push_all([1, 2, 3]);
    script.finish();
    assert_eq!(to_end::<R>(&mut first).await, (seq(1..4), Event::Done));
    let mut late = flights.request("k", ready(&Script::new()));
    assert_eq!(late.role(), Role::Joiner);
    assert_eq!(to_end::<R>(&mut late).await, (seq(1..4), Event::Done));
    let stats = flights.stats();
    assert_eq!((stats.requests, stats.flights, stats.joined), (2, 1, 1), "one upstream for both");
    assert_eq!(script.probe().made(), 1);
}

/// A linger ends on the manager's timer: the flight is released, the manager idle, and the next
/// request leads a new flight. A flight that failed is never lingered on.
async fn r17_a_linger_ends_and_a_failed_flight_never_lingers<R: TestRuntime>() {
    let flights = manager::<R>(Config::default().linger(SHORT));
    let script = Script::<u64, Error>::new();
    let mut first = flights.request("k", ready(&script));
    script.push(1);
    script.finish();
    assert_eq!(to_end::<R>(&mut first).await, (seq(1..2), Event::Done));
    eventually::<R>("the linger to end and the flight to be released", || flights.is_idle()).await;
    let again = Script::new();
    let mut second = flights.request("k", ready(&again));
    assert_eq!(second.role(), Role::Leader, "after the linger, a new flight");
    again.fail("no");
    assert!(matches!(to_end::<R>(&mut second).await.1, Event::Failed(_)));
    let third = flights.request("k", ready(&Script::new()));
    assert_eq!(third.role(), Role::Leader, "a failed flight does not linger");
}

/// A detached request stays live; resumed from the items its client had, it reads the rest
/// and its one end, even when its flight ended while it was away.
async fn r18_a_detached_request_resumes_where_its_client_stopped<R: TestRuntime>() {
    let flights = manager::<R>(Config::default().resume_window(MINUTE));
    let script = Script::<u64, Error>::new();
    let mut sub = flights.request("k", ready(&script));
    script.push_all([0, 1, 2]);
    expect_item::<R>(&mut sub, 0).await;
    expect_item::<R>(&mut sub, 1).await;
    let id = sub.detach();
    assert_eq!(flights.stats().active_requests, 1, "a detached request is live");
    script.push(3);
    script.finish();
    let mut resumed = flights.resume(id, 2).expect("a detached request resumes");
    assert_eq!(resumed.id(), id);
    assert_eq!(to_end::<R>(&mut resumed).await, (seq(2..4), Event::Done));
    assert_eq!(flights.resume(id, 0).err(), Some(ResumeError::UnknownRequest), "it has seen its end");
    eventually::<R>("the manager to let everything go", || flights.is_idle()).await;
}

/// Resume refuses what it cannot honour, and the request stays detached: a second resume while
/// the first subscription lives, a position past the items so far.
async fn r18_resume_is_refused_when_it_cannot_be_honoured<R: TestRuntime>() {
    let flights = manager::<R>(Config::default().resume_window(MINUTE));
    let script = Script::<u64, Error>::new();
    let mut sub = flights.request("k", ready(&script));
    script.push_all([0, 1]);
    expect_item::<R>(&mut sub, 0).await;
    expect_item::<R>(&mut sub, 1).await;
    let id = sub.detach();
    assert_eq!(flights.resume(id, 3).err(), Some(ResumeError::Ahead { appended: 2 }));
    let mut resumed = flights.resume(id, 0).expect("still detached after a refusal");
    assert_eq!(flights.resume(id, 0).err(), Some(ResumeError::NotDetached), "one subscription at a time");
    // From the start: a client that lost everything reads it all again.
    expect_item::<R>(&mut resumed, 0).await;
    expect_item::<R>(&mut resumed, 1).await;
    resumed.cancel();
    assert_eq!(to_end::<R>(&mut resumed).await, (vec![], Event::Cancelled));
}

/// A detached request alone keeps its flight from being aborted (R11) while its window is
/// open; a cancel by id still ends it at once; a window that passes drops it (R12), and the
/// upstream alone is aborted.
async fn r18_a_lone_detached_request_keeps_its_flight_until_its_window_passes<R: TestRuntime>() {
    let flights = manager::<R>(Config::default().resume_window(MINUTE));
    let script = Script::<u64, Error>::new();
    let sub = flights.request("k", ready(&script));
    eventually::<R>("the upstream to be made", || script.probe().made() == 1).await;
    let id = sub.detach();
    assert_eq!((flights.stats().aborted, flights.stats().active_flights), (0, 1), "R11 waits");
    flights.cancel(id).expect("a detached request can be cancelled");
    assert_eq!(flights.stats().aborted, 1);
    eventually::<R>("the cancelled flight's upstream to be dropped", || script.probe().dropped() == 1).await;

    let flights = manager::<R>(Config::default().resume_window(SHORT));
    let script = Script::<u64, Error>::new();
    let sub = flights.request("k", ready(&script));
    eventually::<R>("the upstream to be made", || script.probe().made() == 1).await;
    let id = sub.detach();
    eventually::<R>("the window to pass and the flight to be aborted", || flights.stats().aborted == 1).await;
    eventually::<R>("the upstream to be dropped", || script.probe().dropped() == 1).await;
    assert_eq!(flights.resume(id, 0).err(), Some(ResumeError::UnknownRequest));
    eventually::<R>("the manager to let everything go", || flights.is_idle()).await;
}

/// Linger governs a finished flight, the late-join policy a streaming one: under `Tail` and
/// `NewFlight` too, a request within the linger replays the whole answer. With `Orphan::Finish`,
/// a flight nobody listens to any more runs to its end, then lingers for the next one.
async fn r17_linger_under_every_late_join_policy_and_orphan_policy<R: TestRuntime>() {
    for config in [
        Config::default().late_join(LateJoin::Tail),
        Config::default().late_join(LateJoin::NewFlight),
        Config::default().orphan(Orphan::Finish),
    ] {
        let flights = manager::<R>(config.clone().linger(MINUTE));
        let script = Script::<u64, Error>::new();
        let mut first = flights.request("k", ready(&script));
        eventually::<R>("the upstream to be made", || script.probe().made() == 1).await;
        script.push_all([1, 2]);
        let finish = config.orphan_policy() == Orphan::Finish;
        if finish {
            drop(first); // Nobody left: the flight goes on regardless.
            script.finish();
        } else {
            script.finish();
            assert_eq!(to_end::<R>(&mut first).await, (seq(1..3), Event::Done), "{config:?}");
        }
        eventually::<R>("the flight to finish", || flights.stats().active_flights == 0).await;
        let mut late = flights.request("k", ready(&Script::new()));
        assert_eq!(late.role(), Role::Joiner, "{config:?}");
        assert_eq!(to_end::<R>(&mut late).await, (seq(1..3), Event::Done), "{config:?}");
        assert_eq!(flights.stats().flights, 1, "{config:?}");
    }
}

/// A flight whose history released items (R15) never lingers: the answer is no longer whole.
async fn r17_a_truncated_history_is_never_lingered_on<R: TestRuntime>() {
    let flights = manager::<R>(Config::default().history_limit(2).linger(MINUTE));
    let script = Script::<u64, Error>::new();
    let mut first = flights.request("k", ready(&script));
    script.push_all([1, 2, 3, 4]);
    script.finish();
    let (items, end) = to_end::<R>(&mut first).await;
    assert!(end == Event::Done || matches!(end, Event::Failed(Failure::Lagged { .. })), "{items:?} {end:?}");
    eventually::<R>("the flight to finish", || flights.stats().active_flights == 0).await;
    let again = flights.request("k", ready(&Script::new()));
    assert_eq!(again.role(), Role::Leader, "no linger on a truncated answer");
}

/// A resume from the end reads only the end; one from items already released by the history
/// bound is refused with how many were missed, and the request stays detached.
async fn r18_resume_from_the_end_and_from_released_items<R: TestRuntime>() {
    let flights = manager::<R>(Config::default().resume_window(MINUTE));
    let script = Script::<u64, Error>::new();
    let mut sub = flights.request("k", ready(&script));
    script.push_all([0, 1, 2]);
    script.finish();
    for item in 0..3 {
        expect_item::<R>(&mut sub, item).await;
    }
    let id = sub.detach();
    let mut resumed = flights.resume(id, 3).expect("from the end");
    assert_eq!(to_end::<R>(&mut resumed).await, (vec![], Event::Done));

    let flights = manager::<R>(Config::default().resume_window(MINUTE).history_limit(2));
    let script = Script::<u64, Error>::new();
    let mut sub = flights.request("k", ready(&script));
    script.push(0);
    expect_item::<R>(&mut sub, 0).await;
    let id = sub.detach();
    script.push_all([1, 2, 3, 4, 5]);
    script.finish();
    // The flight ends while its one request is away; the request stays live (R18).
    eventually::<R>("the flight to end", || flights.stats().active_flights == 0).await;
    assert_eq!(flights.stats().active_requests, 1);
    // Six items, two retained: 0..4 were released.
    assert_eq!(flights.resume(id, 1).err(), Some(ResumeError::Released { missed: 3 }));
    let mut resumed = flights.resume(id, 4).expect("from a retained item, still detached");
    assert_eq!(to_end::<R>(&mut resumed).await, (seq(4..6), Event::Done));
}
