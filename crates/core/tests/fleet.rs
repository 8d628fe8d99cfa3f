//! The fleet's machines in the deterministic fleet simulation (R19-R25): proptest over
//! schedules, each planted bug caught by the invariant it breaks, and the coverage.

use std::time::Instant;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use streamflight_core::fleet::Timings;
use streamflight_core::testkit::fleet::{Bugs, Event, Invariant, Report, Rng, Schedule, simulate};

/// Random schedules from a fixed seed: the same sweep on every run.
fn sweep(seed: u64, count: usize) -> impl Iterator<Item = Schedule> {
    let mut rng = Rng::new(seed);
    (0..count).map(move |_| Schedule::from_bytes(&rng.bytes(240)))
}

fn add(total: &mut Report, report: Report) {
    total.steps += report.steps;
    total.clients += report.clients;
    total.done += report.done;
    total.failed += report.failed;
    total.lost += report.lost;
    total.upstreams += report.upstreams;
    total.alone += report.alone;
    total.followed += report.followed;
    total.again += report.again;
    total.rewrites += report.rewrites;
    total.faults += report.faults;
    total.resumed += report.resumed;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Any schedule, faults or not, holds every invariant.
    #[test]
    fn every_schedule_holds_every_invariant(data in vec(any::<u8>(), 0..320)) {
        let schedule = Schedule::from_bytes(&data);
        if let Err(violation) = simulate(&schedule, Bugs::default()) {
            prop_assert!(false, "{violation:?}\nin {schedule:?}");
        }
    }

    /// Fault-free schedules (the third byte a multiple of 3) are held to one upstream
    /// request per key and no fleet failure at all.
    #[test]
    fn a_healthy_store_means_one_upstream_per_key(mut data in vec(any::<u8>(), 3..320)) {
        data[2] -= data[2] % 3;
        let schedule = Schedule::from_bytes(&data);
        prop_assert!(!schedule.has_faults());
        if let Err(violation) = simulate(&schedule, Bugs::default()) {
            prop_assert!(false, "{violation:?}\nin {schedule:?}");
        }
    }
}

/// A fixed sweep passes and reaches every path worth reaching: joins, rewrites after a lost
/// stream, lost leaders, followers sent to open again, flights served alone. Prints the rate.
#[test]
fn sweep_covers_the_fleet_and_reports_its_rate() {
    let count = 3_000;
    let started = Instant::now();
    let mut total = Report::default();
    for schedule in sweep(23, count) {
        match simulate(&schedule, Bugs::default()) {
            Ok(report) => add(&mut total, report),
            Err(violation) => panic!("{violation:?}\nin {schedule:?}"),
        }
    }
    let elapsed = started.elapsed();
    println!(
        "fleet simulation: {count} schedules in {elapsed:?} ({:.0} schedules/s, {:.0} steps/s); {total:?}",
        count as f64 / elapsed.as_secs_f64(),
        total.steps as f64 / elapsed.as_secs_f64(),
    );
    assert!(total.followed > 1_000, "{total:?}");
    assert!(total.rewrites > 50, "{total:?}");
    assert!(total.lost > 20, "{total:?}");
    assert!(total.again > 5, "{total:?}");
    assert!(total.alone > 100, "{total:?}");
    assert!(total.failed > 100 && total.done > 1_000, "{total:?}");
    assert!(total.resumed > 10, "{total:?}");
}

/// Runs the sweep with `bugs` planted until a schedule breaks `expected`; every schedule that
/// breaks something breaks `expected` or one of `also`, and holds without the bug.
fn caught(bugs: Bugs, expected: Invariant, also: &[Invariant]) {
    for schedule in sweep(5, 3_000) {
        if let Err(violation) = simulate(&schedule, bugs) {
            assert!(violation.invariant == expected || also.contains(&violation.invariant), "{violation:?}");
            assert!(simulate(&schedule, Bugs::default()).is_ok(), "the schedule fails without the bug too");
            if violation.invariant == expected {
                return;
            }
        }
    }
    panic!("{bugs:?} was not caught by {expected:?}");
}

/// The shell lingers every end, a failure's too (lead.rs before issue 23): a lease stands on
/// a failed answer.
#[test]
fn planted_linger_of_a_failure_is_caught() {
    caught(Bugs { linger_failure: true, ..Bugs::default() }, Invariant::NoFailureLingers, &[]);
}

/// The store applies a fenced-off leader's writes: a replica paused past its lease writes
/// while another leads.
#[test]
fn planted_skipped_fence_is_caught() {
    caught(Bugs { skip_fence: true, ..Bugs::default() }, Invariant::OneWriter, &[]);
}

/// The store gives a flight up though a follower's interest is live.
#[test]
fn planted_abandon_despite_interest_is_caught() {
    caught(Bugs { abandon_despite_interest: true, ..Bugs::default() }, Invariant::NoJoinedAbandoned, &[]);
}

/// The store appends past what it lost instead of asking the leader to write it again.
#[test]
fn planted_missing_gap_check_is_caught() {
    caught(Bugs { no_gap_check: true, ..Bugs::default() }, Invariant::StreamWhole, &[]);
}

/// A renewal applied after the finish takes the lease back over an ended stream.
#[test]
fn planted_retake_after_the_end_is_caught() {
    caught(Bugs { retake_after_end: true, ..Bugs::default() }, Invariant::NoFailureLingers, &[]);
}

/// Followers check a stale lease (always their leader's): a killed leader's followers wait
/// past two leases (or, where the store also failed, forever: no end).
#[test]
fn planted_stale_lease_check_is_caught() {
    caught(Bugs { stale_lease_check: true, ..Bugs::default() }, Invariant::LeaderLoss, &[Invariant::Streams]);
}

/// `Acquire` takes a held lease: two leaders for one key with a healthy store.
#[test]
fn planted_acquire_without_nx_is_caught() {
    caught(
        Bugs { acquire_without_nx: true, ..Bugs::default() },
        Invariant::OneUpstream,
        &[Invariant::LeaderLoss],
    );
}

/// A failed upstream's end written as `Done` (Pingora #932's class): followers see a truncated
/// answer end whole.
#[test]
fn planted_failure_written_as_done_is_caught() {
    caught(Bugs { failure_as_done: true, ..Bugs::default() }, Invariant::Streams, &[]);
}

/// `Open` never told the time: a hung store holds a request for two call deadlines.
#[test]
fn planted_missing_open_deadline_is_caught() {
    caught(Bugs { no_open_deadline: true, ..Bugs::default() }, Invariant::Deadline, &[]);
}

/// A schedule written by hand: two replicas, one key whose answer is 40 whole items.
fn scenario(events: Vec<(u64, Event)>) -> Report {
    let schedule = Schedule {
        replicas: 2,
        keys: 1,
        timings: Timings { lease: 300, deadline: 50, linger: 0 },
        answers: vec![40],
        seed: 1,
        upstream_failures: false,
        events,
    };
    simulate(&schedule, Bugs::default()).unwrap_or_else(|violation| panic!("{violation:?}"))
}

/// R25: the store flushed mid-flight while its leader lives loses no answer: the leader
/// writes the stream again and the follower carries on from the item it had.
#[test]
fn a_flushed_store_loses_no_answer() {
    let report = scenario(vec![
        (0, Event::Request { replica: 0, key: 0 }),
        (20, Event::Request { replica: 1, key: 0 }),
        (150, Event::Flush),
    ]);
    assert_eq!((report.done, report.lost, report.upstreams, report.followed), (2, 0, 1, 1), "{report:?}");
    assert!(report.rewrites >= 1, "{report:?}");
}

/// R21: a killed leader's follower, which had items already, ends `Lost` (within two leases:
/// the invariant); a client that had nothing opens again and leads.
#[test]
fn a_killed_leader_loses_its_followers_explicitly() {
    let report = scenario(vec![
        (0, Event::Request { replica: 0, key: 0 }),
        (20, Event::Request { replica: 1, key: 0 }),
        (150, Event::Kill { replica: 0 }),
    ]);
    assert_eq!((report.lost, report.done), (1, 0), "{report:?}");
    let report = scenario(vec![
        (0, Event::Request { replica: 0, key: 0 }),
        (2, Event::Request { replica: 1, key: 0 }),
        (12, Event::Kill { replica: 0 }),
    ]);
    assert_eq!((report.again, report.done, report.upstreams), (1, 1, 2), "{report:?}");
}

/// R23: a hung store costs a new request one deadline, then it is served alone.
#[test]
fn a_hung_store_costs_one_deadline() {
    let report = scenario(vec![(0, Event::Hung { ms: 2_000 }), (10, Event::Request { replica: 0, key: 0 })]);
    assert_eq!((report.alone, report.done), (1, 1), "{report:?}");
}

/// R18 across replicas: a client of a killed follower resumes on the leader's replica and
/// gets the rest of the answer, whole.
#[test]
fn a_resume_on_another_replica_reads_on() {
    let report = scenario(vec![
        (0, Event::Request { replica: 0, key: 0 }),
        (20, Event::Request { replica: 1, key: 0 }),
        (120, Event::Kill { replica: 1 }),
        (140, Event::Resume { client: 1, replica: 0 }),
    ]);
    assert_eq!((report.resumed, report.done, report.lost), (1, 2, 0), "{report:?}");
}

/// R26: a replica told to stop takes no new client but leads on for its grace: a peer's
/// follower gets the whole answer; with a short grace, both streams end explicitly.
#[test]
fn a_stopping_replica_leads_on_for_its_grace() {
    let report = scenario(vec![
        (0, Event::Request { replica: 0, key: 0 }),
        (20, Event::Request { replica: 1, key: 0 }),
        (50, Event::Stop { replica: 0, ms: 2_000 }),
        (100, Event::Request { replica: 0, key: 0 }),
    ]);
    assert_eq!((report.clients, report.done, report.lost, report.upstreams), (2, 2, 0, 1), "{report:?}");
    let report = scenario(vec![
        (0, Event::Request { replica: 0, key: 0 }),
        (20, Event::Request { replica: 1, key: 0 }),
        (50, Event::Stop { replica: 0, ms: 10 }),
    ]);
    assert_eq!((report.done, report.lost), (0, 2), "{report:?}");
}
