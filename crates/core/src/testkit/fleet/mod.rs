//! The fleet's deterministic simulation: the store's model with faults, replicas running the
//! fleet machines, and the invariants written once; what the proptest and the fuzz target run.
//!
//! [`check_fleet`] turns any bytes into a [`Schedule`] and runs it, panicking on the first
//! broken [`Invariant`]; [`simulate`] returns it as a value, with planted [`Bugs`] if asked.

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
