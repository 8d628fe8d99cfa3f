//! The fleet's machines alone under arbitrary input sequences (any reply to any call, stale or
//! not, items, ends, time): they never panic, end once, say nothing after their end, never
//! spin on a timeout, and keep at most one write (or read) and one renewal in flight.

use proptest::collection::vec;
use proptest::prelude::*;
use streamflight_core::fleet::follower::{self, Follower};
use streamflight_core::fleet::leader::{self, Leader};
use streamflight_core::fleet::open::{self, Open};
use streamflight_core::fleet::{CallId, Ending, Entry, LeaseSeen, Reply, Timings};

/// One input to a machine.
#[derive(Clone, Debug)]
enum Input {
    /// An upstream item (leader).
    Item,
    /// The upstream's end (leader).
    End(bool),
    /// The local flight is gone.
    Gone,
    /// A reply to the `which`-th call made so far (modulo), stale or not.
    Reply(usize, Reply),
    /// Time passes by this much, and `handle_timeout` is called.
    Wait(u64),
}

fn reply() -> impl Strategy<Value = Reply> {
    let number = 0u64..12;
    let entry = prop_oneof![
        4 => (0u8..4).prop_map(|b| Entry::Item(vec![b])),
        1 => Just(Entry::End(Ending::Done)),
        1 => Just(Entry::End(Ending::Failed(vec![9]))),
        1 => Just(Entry::End(Ending::Abandoned)),
    ];
    prop_oneof![
        3 => Just(Reply::Failed),
        1 => Just(Reply::Acquired),
        1 => Just(Reply::Held),
        1 => any::<bool>().prop_map(|ended| Reply::Joined { ended }),
        1 => Just(Reply::NotLed),
        3 => number.clone().prop_map(|top| Reply::Written { top }),
        1 => number.clone().prop_map(|top| Reply::Gap { top }),
        1 => Just(Reply::Fenced),
        1 => Just(Reply::Wanted),
        1 => Just(Reply::Abandoned),
        3 => vec((number, entry), 0..4).prop_map(Reply::Entries),
        1 => prop_oneof![Just(LeaseSeen::Ours), Just(LeaseSeen::Other), Just(LeaseSeen::Missing)].prop_map(Reply::Lease),
        1 => Just(Reply::Done),
    ]
}

fn inputs() -> impl Strategy<Value = Vec<Input>> {
    let input = prop_oneof![
        3 => Just(Input::Item),
        1 => any::<bool>().prop_map(Input::End),
        1 => Just(Input::Gone),
        6 => (0usize..64, reply()).prop_map(|(which, reply)| Input::Reply(which, reply)),
        3 => (0u64..400).prop_map(Input::Wait),
    ];
    vec(input, 0..80)
}

const TIMINGS: Timings = Timings { lease: 300, deadline: 50, linger: 100 };

/// What every machine owes its shell, checked on each drained action.
#[derive(Default)]
struct Ledger {
    calls: Vec<CallId>,
    over: bool,
}

impl Ledger {
    fn call(&mut self, id: CallId) {
        assert!(!self.over, "a call after the end");
        assert!(!self.calls.contains(&id), "a call id used twice");
        self.calls.push(id);
    }

    fn end(&mut self) {
        assert!(!self.over, "two ends");
        self.over = true;
    }

    fn pick(&self, which: usize) -> Option<CallId> {
        (!self.calls.is_empty()).then(|| self.calls[which % self.calls.len()])
    }
}

/// After `handle_timeout(now)`, the next timeout is later (no spin).
fn moves_on(next: Option<u64>, now: u64) {
    assert!(next.is_none_or(|at| at > now), "timeout {next:?} not past {now}");
}

proptest! {
    #[test]
    fn leader_under_any_inputs(inputs in inputs()) {
        let mut now = 0;
        let mut leader = Leader::new(TIMINGS, now);
        let mut ledger = Ledger::default();
        let (mut write, mut renew): (Option<CallId>, Option<CallId>) = (None, None);
        for input in inputs {
            match input {
                Input::Item => leader.handle_item(now),
                Input::End(done) => leader.handle_end(now, done),
                Input::Gone => leader.handle_local_gone(now),
                Input::Reply(which, reply) => {
                    if let Some(id) = ledger.pick(which) {
                        if write == Some(id) { write = None; }
                        if renew == Some(id) { renew = None; }
                        leader.handle_reply(now, id, reply);
                    }
                }
                Input::Wait(ms) => {
                    now += ms;
                    leader.handle_timeout(now);
                    moves_on(leader.poll_timeout(), now);
                }
            }
            while let Some(action) = leader.poll_action() {
                match action {
                    leader::Action::Append { call, first, last } => {
                        prop_assert!(write.is_none(), "two writes in flight");
                        prop_assert!(first <= last && last <= leader.produced() && first == leader.written() + 1);
                        prop_assert!(last - first < leader::BATCH);
                        write = Some(call);
                        ledger.call(call);
                    }
                    leader::Action::Finish { call, number, .. } | leader::Action::Abandon { call, number } => {
                        prop_assert!(write.is_none(), "two writes in flight");
                        prop_assert_eq!(number, leader.produced() + 1);
                        write = Some(call);
                        ledger.call(call);
                    }
                    leader::Action::Renew(call) => {
                        prop_assert!(renew.is_none(), "two renewals in flight");
                        renew = Some(call);
                        ledger.call(call);
                    }
                    leader::Action::Over(_) => ledger.end(),
                }
            }
        }
    }

    #[test]
    fn follower_under_any_inputs(inputs in inputs(), from in 0u64..3, resume: bool) {
        let mut now = 0;
        let mut follower = Follower::new(TIMINGS, now, from, resume);
        let mut ledger = Ledger::default();
        let mut reading: Option<CallId> = None;
        let mut delivered = 0;
        for input in inputs {
            match input {
                Input::Item | Input::End(_) => continue,
                Input::Gone => follower.handle_local_gone(now),
                Input::Reply(which, reply) => {
                    if let Some(id) = ledger.pick(which) {
                        if reading == Some(id) { reading = None; }
                        follower.handle_reply(now, id, reply);
                    }
                }
                Input::Wait(ms) => {
                    now += ms;
                    follower.handle_timeout(now);
                    moves_on(follower.poll_timeout(), now);
                }
            }
            while let Some(action) = follower.poll_action() {
                match action {
                    follower::Action::Read { call, after, .. } => {
                        prop_assert!(reading.is_none(), "two reads in flight");
                        prop_assert_eq!(after, from + delivered);
                        reading = Some(call);
                        ledger.call(call);
                    }
                    follower::Action::CheckLease(call) => {
                        prop_assert!(reading.is_none(), "a check beside a read");
                        reading = Some(call);
                        ledger.call(call);
                    }
                    follower::Action::Refresh(call) | follower::Action::Withdraw(call) => ledger.call(call),
                    follower::Action::Deliver(_) => {
                        prop_assert!(!ledger.over);
                        delivered += 1;
                    }
                    follower::Action::Over(followed) => {
                        // Only a fresh follower that passed nothing on may open again or go alone.
                        if matches!(followed, follower::Followed::Again | follower::Followed::Alone) {
                            prop_assert!(from == 0 && !resume && delivered == 0, "{followed:?}");
                        }
                        ledger.end();
                    }
                }
            }
        }
    }

    #[test]
    fn open_under_any_inputs(inputs in inputs(), available: bool) {
        let start = 7;
        let mut now = start;
        let mut open = Open::new(TIMINGS, now, available);
        let mut ledger = Ledger::default();
        let mut rounds = 0;
        for input in inputs {
            match input {
                Input::Item | Input::End(_) | Input::Gone => {}
                Input::Reply(which, reply) => {
                    if let Some(id) = ledger.pick(which) {
                        open.handle_reply(now, id, reply);
                    }
                }
                Input::Wait(ms) => {
                    now += ms;
                    open.handle_timeout(now);
                    moves_on(open.poll_timeout(), now);
                }
            }
            while let Some(action) = open.poll_action() {
                match action {
                    open::Action::Acquire(call) => {
                        rounds += 1;
                        prop_assert!(rounds <= open::ROUNDS);
                        ledger.call(call);
                    }
                    open::Action::Join(call) => ledger.call(call),
                    open::Action::Decided(decision) => {
                        if !available {
                            prop_assert_eq!(decision, open::Decision::Alone);
                        }
                        ledger.end();
                    }
                }
            }
            // R23: undecided only before the one deadline (any input at or past it decides).
            if !ledger.over {
                prop_assert!(now < start + TIMINGS.deadline, "undecided at {now}");
                prop_assert_eq!(open.poll_timeout(), Some(start + TIMINGS.deadline));
            }
        }
    }
}
