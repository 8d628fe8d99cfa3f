//! The bounds in bytes: a weigher per item, a per-flight byte bound with its overflow policy
//! (R15), and the byte budget of lingering answers (R17), oldest evicted first.

use std::time::Duration;

use streamflight_tests::doubles::Script;
use streamflight_tests::wait::eventually;
use streamflight_tests::{Config, Event, Failure, Overflow, Role, TestRuntime, scenarios};

use super::{Error, expect_item, manager, ready, seq, to_end};

scenarios! {
    r15_a_byte_bound_releases_by_weight_and_a_reader_that_keeps_up_reads_everything,
    r15_r17_a_truncated_answer_lingers_as_the_overflow_policy_says,
    r15_a_late_request_to_a_truncated_streaming_flight_is_served_as_the_policy_says,
    r17_the_linger_budget_evicts_the_oldest_answer_first,
}

const MINUTE: Duration = Duration::from_secs(60);

/// Item `n` weighs `n` bytes.
fn by_value(item: &u64) -> usize {
    *item as usize
}

/// Past the byte bound the oldest items go, by what they weigh: a reader that keeps up reads
/// every item and `Done`; one that never read is told exactly how many it missed; a late
/// request starts a new flight (the default overflow policy, as with `history_limit`).
async fn r15_a_byte_bound_releases_by_weight_and_a_reader_that_keeps_up_reads_everything<R: TestRuntime>() {
    let flights = manager::<R>(Config::default().weigher(by_value).flight_bytes(10));
    let script = Script::<u64, Error>::new();
    let mut fast = flights.request("k", ready(&script));
    let mut slow = flights.request("k", ready(&Script::new()));
    for item in 1..=6 {
        script.push(item);
        expect_item::<R>(&mut fast, item).await;
    }
    // Each push drops the oldest items until the rest weigh at most 10: after 4, 1..=4 (10
    // bytes); after 5, 4 and 5; after 6, 6 alone (5 + 6 = 11). Items 1..=5 were released.
    script.finish();
    assert_eq!(to_end::<R>(&mut fast).await, (vec![], Event::Done));
    assert_eq!(to_end::<R>(&mut slow).await, (vec![], Event::Failed(Failure::Lagged { missed: 5 })));
    let late = flights.request("k", ready(&Script::new()));
    assert_eq!(late.role(), Role::Leader, "a truncated answer is not joined by default");
}

/// A finished answer that lost its first items still lingers under `Lagged` and `Truncate`:
/// a late request joins it without a new upstream, and is told what it missed (`Lagged`) or
/// reads what is retained (`Truncate`). Under `NewFlight` it does not linger.
async fn r15_r17_a_truncated_answer_lingers_as_the_overflow_policy_says<R: TestRuntime>() {
    for policy in [Overflow::NewFlight, Overflow::Lagged, Overflow::Truncate] {
        let config = Config::default().weigher(by_value).flight_bytes(9).overflow(policy).linger(MINUTE);
        let flights = manager::<R>(config);
        let script = Script::<u64, Error>::new();
        let mut first = flights.request("k", ready(&script));
        for item in 1..=5 {
            script.push(item);
            expect_item::<R>(&mut first, item).await;
        }
        script.finish();
        assert_eq!(to_end::<R>(&mut first).await, (vec![], Event::Done), "{policy:?}");
        // Retained: 4 and 5 (9 bytes); 1, 2 and 3 were released.
        let mut late = flights.request("k", ready(&Script::new()));
        let expected = match policy {
            Overflow::NewFlight => {
                assert_eq!(late.role(), Role::Leader, "no linger on a truncated answer");
                continue;
            }
            Overflow::Lagged => (vec![], Event::Failed(Failure::Lagged { missed: 3 })),
            _ => (seq(4..6), Event::Done),
        };
        assert_eq!(late.role(), Role::Joiner, "{policy:?}: the answer lingers");
        assert_eq!(to_end::<R>(&mut late).await, expected, "{policy:?}");
        assert_eq!((flights.stats().flights, script.probe().made()), (1, 1), "{policy:?}: one upstream");
    }
}

/// Lingering answers share a byte budget: when one more would overflow it, the oldest are
/// released first, each counted in `Stats::evicted`; their keys then lead new flights while
/// the newer answers are still served from memory.
async fn r17_the_linger_budget_evicts_the_oldest_answer_first<R: TestRuntime>() {
    let config = Config::default().weigher(by_value).linger(MINUTE).linger_budget(10);
    let flights = manager::<R>(config);
    for (key, items) in [("a", vec![3, 3]), ("b", vec![4]), ("c", vec![2])] {
        let script = Script::<u64, Error>::new();
        let mut sub = flights.request(key, ready(&script));
        script.push_all(items.clone());
        script.finish();
        assert_eq!(to_end::<R>(&mut sub).await, (items, Event::Done));
    }
    // 6 + 4 bytes fit; with 2 more, "a" (the oldest) goes.
    eventually::<R>("the oldest answer to be evicted", || flights.stats().evicted == 1).await;
    let mut b = flights.request("b", ready(&Script::new()));
    assert_eq!(b.role(), Role::Joiner, "a newer answer still lingers");
    assert_eq!(to_end::<R>(&mut b).await, (vec![4], Event::Done));
    assert_eq!(flights.request("c", ready(&Script::new())).role(), Role::Joiner);
    assert_eq!(flights.request("a", ready(&Script::new())).role(), Role::Leader, "evicted");
    assert_eq!(flights.stats().evicted, 1);
}

/// While the flight still streams, a late request to a flight that released items starts a new
/// flight (`NewFlight`), ends at once with what it missed (`Lagged`), or reads the retained
/// items and then the live ones (`Truncate`).
async fn r15_a_late_request_to_a_truncated_streaming_flight_is_served_as_the_policy_says<R: TestRuntime>() {
    for policy in [Overflow::NewFlight, Overflow::Lagged, Overflow::Truncate] {
        let flights = manager::<R>(Config::default().weigher(by_value).flight_bytes(9).overflow(policy));
        let script = Script::<u64, Error>::new();
        let mut first = flights.request("k", ready(&script));
        for item in 1..=5 {
            script.push(item);
            expect_item::<R>(&mut first, item).await;
        }
        // Retained: 4 and 5 (9 bytes); 1, 2 and 3 were released.
        let mut late = flights.request("k", ready(&Script::new()));
        match policy {
            Overflow::NewFlight => assert_eq!(late.role(), Role::Leader, "{policy:?}"),
            Overflow::Lagged => {
                assert_eq!(late.role(), Role::Joiner);
                assert_eq!(
                    to_end::<R>(&mut late).await,
                    (vec![], Event::Failed(Failure::Lagged { missed: 3 }))
                );
            }
            _ => {
                assert_eq!(late.role(), Role::Joiner);
                expect_item::<R>(&mut late, 4).await;
                expect_item::<R>(&mut late, 5).await;
                script.push(6);
                expect_item::<R>(&mut late, 6).await;
            }
        }
        script.finish();
        if policy == Overflow::Truncate {
            assert_eq!(to_end::<R>(&mut late).await, (vec![], Event::Done));
        }
        assert_eq!(to_end::<R>(&mut first).await.1, Event::Done, "{policy:?}: the first reader kept up");
    }
}
