//! The fleet's deterministic simulation: the store's model with faults, replicas running the
//! fleet machines, and the invariants written once; what the proptest and the fuzz target run.
//!
//! [`check_fleet`] turns any bytes into a [`Schedule`] and runs it, panicking on the first
//! broken [`Invariant`]; [`simulate`] returns it as a value, with planted [`Bugs`] if asked.
//!
//! A schedule is 2-4 replicas, 1-3 keys, a lease of 300 ms (deadline 50 ms, linger 0 or
//! 200 ms), and up to 48 events: requests, cancels, resumes on another replica, and (in two
//! schedules of three) faults: the store down, hung (calls apply after the hang, replies come
//! too late), flushed, restarted empty, losing replies; a replica paused, killed, or told to
//! stop (it serves on for its grace, then ends its streams explicitly); a lease lapsing. Store calls take 1-4 ms each way; upstreams give 1-40 items, one in four fails
//! part way. Every step is followed by the checks of [`invariants`]:
//!
//! | invariant | rule | planted bug it catches (`tests/fleet.rs`) |
//! |---|---|---|
//! | [`Invariant::OneWriter`] | R20 | `skip_fence` |
//! | [`Invariant::Streams`] | R14, R21 | `failure_as_done`, `stale_lease_check` (no end) |
//! | [`Invariant::NoFailureLingers`] | R17 | `linger_failure`, `retake_after_end` |
//! | [`Invariant::NoJoinedAbandoned`] | R22 | `abandon_despite_interest` |
//! | [`Invariant::OneUpstream`] | R19 | `acquire_without_nx` |
//! | [`Invariant::Deadline`] | R23 | `no_open_deadline` |
//! | [`Invariant::StreamWhole`] | R25 | `no_gap_check` |
//! | [`Invariant::LeaderLoss`] | R21 | `stale_lease_check` |

pub mod invariants;
pub mod schedule;
pub mod sim;
pub mod store;

pub use invariants::{Invariant, Violation};
pub use schedule::{Event, Rng, Schedule};
pub use sim::Report;
pub use store::Bugs;

/// Runs `schedule` with `bugs` planted: its report, or the first invariant it broke.
pub fn simulate(schedule: &Schedule, bugs: Bugs) -> Result<Report, Violation> {
    sim::Sim::new(schedule, bugs).run()
}

/// Runs `schedule` and returns every step it took with the outcome: to read a failure.
pub fn trace(
    schedule: &Schedule,
    bugs: Bugs,
) -> (alloc::vec::Vec<alloc::string::String>, Result<Report, Violation>) {
    sim::Sim::new(schedule, bugs).trace()
}

/// Runs the schedule these bytes say; panics, naming the invariant and the schedule, if one
/// breaks. The fuzz target and the proptest call this.
pub fn check_fleet(data: &[u8]) -> Report {
    let schedule = Schedule::from_bytes(data);
    match simulate(&schedule, Bugs::default()) {
        Ok(report) => report,
        Err(violation) => panic!("{violation:?}\nin {schedule:#?}"),
    }
}
