//! The linger budget (R17) against a plain reference: random finished flights of random
//! weights and random passing time; which keys still linger, and `Stats::evicted`, checked.

use std::time::Duration;

use proptest::prelude::*;
use streamflight_core::{Action, Config, Machine, Role};

const BUDGET: u64 = 10;
const LINGER: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
enum Op {
    /// A request for `key`; if it leads, its flight finishes at once, weighing `bytes`.
    Done { key: u8, bytes: u64 },
    /// The clock moves on by this many milliseconds.
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..6, 0..=BUDGET + 2).prop_map(|(key, bytes)| Op::Done { key, bytes }),
        1 => (0u64..60).prop_map(Op::Advance),
    ]
}

/// The reference: the lingering flights in the order they finished, with their deadline
/// and weight; a newcomer that does not fit evicts from the front.
#[derive(Default)]
struct Reference {
    lingering: Vec<(u8, Duration, u64)>,
    evicted: u64,
}

impl Reference {
    fn lingers(&self, key: u8) -> bool {
        self.lingering.iter().any(|&(k, _, _)| k == key)
    }

    fn done(&mut self, key: u8, deadline: Duration, bytes: u64) {
        if bytes > BUDGET {
            self.evicted += 1;
            return;
        }
        self.lingering.push((key, deadline, bytes));
        while self.lingering.iter().map(|&(_, _, b)| b).sum::<u64>() > BUDGET {
            self.lingering.remove(0);
            self.evicted += 1;
        }
    }
}

fn drain(machine: &mut Machine<u8>) -> Vec<Action> {
    std::iter::from_fn(|| machine.poll_action()).collect()
}

proptest! {
    #[test]
    fn the_budget_keeps_the_newest_answers_that_fit(ops in proptest::collection::vec(op(), 0..60)) {
        let mut machine = Machine::new(Config::default().linger(LINGER).linger_budget(BUDGET as usize));
        let mut reference = Reference::default();
        let mut now = Duration::ZERO;
        for op in ops {
            match op {
                Op::Done { key, bytes } => {
                    let admission = machine.handle_request(key);
                    let expected = if reference.lingers(key) { Role::Joiner } else { Role::Leader };
                    prop_assert_eq!(admission.role, expected, "key {}", key);
                    if admission.role == Role::Leader {
                        machine.handle_prepared(admission.flight).unwrap();
                        machine.handle_done_weighed(admission.flight, now, bytes).unwrap();
                        reference.done(key, now + LINGER, bytes);
                    }
                    machine.handle_finished(admission.id).unwrap();
                }
                Op::Advance(ms) => {
                    now += Duration::from_millis(ms);
                    machine.handle_timeout(now);
                    reference.lingering.retain(|&(_, deadline, _)| deadline > now);
                }
            }
            drain(&mut machine);
            machine.audit();
            prop_assert_eq!(machine.stats().evicted, reference.evicted);
        }
    }
}
