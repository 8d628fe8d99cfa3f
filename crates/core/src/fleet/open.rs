//! How a replica's new local flight finds its place in the fleet: lead it (the lease was
//! free), follow whoever leads it, or serve it alone, within one store deadline (R23).

use alloc::collections::VecDeque;

use super::{CallId, Calls, Millis, Reply, Timings};

/// How many times a flight tries to take the lease before it serves alone: the lease can
/// change hands between `Acquire` and `Join`, but not forever.
pub const ROUNDS: u32 = 8;

/// What the shell does next for a flight being opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Take the flight's lease if it is free (`SET NX PX lease` with a fresh token): replies
    /// `Acquired`, `Held` or `Failed`.
    Acquire(CallId),
    /// Find who leads and register this local flight's interest in its flight for a lease, in
    /// one step (R22): replies `Joined { ended }`, `NotLed` or `Failed`.
    Join(CallId),
    /// The decision; the machine is done.
    Decided(Decision),
}

/// Where a new local flight goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// This replica holds the lease: it runs the upstream for the fleet ([`Leader`](super::leader::Leader)).
    Lead,
    /// Another replica leads: read its stream ([`Follower`](super::follower::Follower)).
    /// `ended`: its answer was over already (a linger's replay, counted apart).
    Follow {
        /// The flight's stream held its end when joined.
        ended: bool,
    },
    /// The store failed or did not answer within the deadline: serve this replica alone.
    Alone,
}

/// The one call an opening flight waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    Acquire(CallId),
    Join(CallId),
}

/// Opens one local flight in the fleet.
///
/// ```
/// use streamflight_core::fleet::open::{Action, Decision, Open};
/// use streamflight_core::fleet::{Reply, Timings};
///
/// let mut open = Open::new(Timings::new(3_000), 0, true);
/// let Some(Action::Acquire(call)) = open.poll_action() else { panic!() };
/// // Another replica leads: join it.
/// open.handle_reply(5, call, Reply::Held);
/// let Some(Action::Join(call)) = open.poll_action() else { panic!() };
/// open.handle_reply(9, call, Reply::Joined { ended: false });
/// assert_eq!(open.poll_action(), Some(Action::Decided(Decision::Follow { ended: false })));
/// assert_eq!(open.poll_timeout(), None);
/// ```
#[derive(Debug)]
pub struct Open {
    calls: Calls,
    /// When the decision is `Alone` at the latest: one deadline for the whole decision, so
    /// that no request waits on the store longer (R23), however many rounds it takes.
    until: Millis,
    /// The call waited for; `None` once decided.
    waiting: Option<Waiting>,
    /// `Acquire` calls made so far.
    rounds: u32,
    actions: VecDeque<Action>,
}

impl Open {
    /// A flight opened at `now`. `available`: the store may be tried (no recent failure within
    /// the replica's pause); if not, the decision is `Alone` at once.
    pub fn new(timings: Timings, now: Millis, available: bool) -> Open {
        let mut open = Open {
            calls: Calls::default(),
            until: now.saturating_add(timings.deadline),
            waiting: None,
            rounds: 0,
            actions: VecDeque::new(),
        };
        if available {
            open.acquire();
        } else {
            open.decide(Decision::Alone);
        }
        open
    }

    /// Whether the decision is made (it may still be waiting in `poll_action`).
    pub fn is_decided(&self) -> bool {
        self.waiting.is_none()
    }

    /// A store call's reply.
    pub fn handle_reply(&mut self, now: Millis, call: CallId, reply: Reply) {
        // Past the deadline nothing the store says counts: the request is served alone.
        self.handle_timeout(now);
        let Some(waiting) = self.waiting else { return };
        match (waiting, reply) {
            (Waiting::Acquire(id), reply) if id == call => match reply {
                Reply::Acquired => self.decide(Decision::Lead),
                Reply::Held => {
                    let call = self.calls.next();
                    self.waiting = Some(Waiting::Join(call));
                    self.actions.push_back(Action::Join(call));
                }
                // `Failed`, or a reply no acquire can get: the store is not to be trusted now.
                _ => self.decide(Decision::Alone),
            },
            (Waiting::Join(id), reply) if id == call => match reply {
                Reply::Joined { ended } => self.decide(Decision::Follow { ended }),
                // The lease went between the two calls: try to take it again, a few times.
                Reply::NotLed if self.rounds < ROUNDS => self.acquire(),
                _ => self.decide(Decision::Alone),
            },
            // Stale: not the call waited for.
            _ => {}
        }
    }

    /// Time passed: at `poll_timeout`, undecided, the decision is `Alone`.
    pub fn handle_timeout(&mut self, now: Millis) {
        if self.waiting.is_some() && now >= self.until {
            self.decide(Decision::Alone);
        }
    }

    /// The next action, until `None`.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.waiting.map(|_| self.until)
    }

    fn acquire(&mut self) {
        self.rounds += 1;
        let call = self.calls.next();
        self.waiting = Some(Waiting::Acquire(call));
        self.actions.push_back(Action::Acquire(call));
    }

    fn decide(&mut self, decision: Decision) {
        self.waiting = None;
        self.actions.push_back(Action::Decided(decision));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings() -> Timings {
        Timings::new(3_000)
    }

    fn acquire(open: &mut Open) -> CallId {
        match open.poll_action() {
            Some(Action::Acquire(call)) => call,
            other => panic!("expected an acquire, got {other:?}"),
        }
    }

    fn join(open: &mut Open) -> CallId {
        match open.poll_action() {
            Some(Action::Join(call)) => call,
            other => panic!("expected a join, got {other:?}"),
        }
    }

    #[test]
    fn unavailable_store_is_alone_at_once() {
        let mut open = Open::new(timings(), 0, false);
        assert_eq!(open.poll_action(), Some(Action::Decided(Decision::Alone)));
        assert_eq!(open.poll_action(), None);
        assert_eq!(open.poll_timeout(), None);
    }

    #[test]
    fn acquired_leads() {
        let mut open = Open::new(timings(), 0, true);
        let call = acquire(&mut open);
        assert_eq!(open.poll_timeout(), Some(200));
        open.handle_reply(1, call, Reply::Acquired);
        assert_eq!(open.poll_action(), Some(Action::Decided(Decision::Lead)));
        assert!(open.is_decided());
    }

    #[test]
    fn held_joins_and_follows_an_ended_flight() {
        let mut open = Open::new(timings(), 0, true);
        let call = acquire(&mut open);
        open.handle_reply(1, call, Reply::Held);
        let call = join(&mut open);
        open.handle_reply(2, call, Reply::Joined { ended: true });
        assert_eq!(open.poll_action(), Some(Action::Decided(Decision::Follow { ended: true })));
    }

    #[test]
    fn not_led_tries_again_a_bounded_number_of_times() {
        let mut open = Open::new(timings(), 0, true);
        for _ in 0..ROUNDS {
            let call = acquire(&mut open);
            open.handle_reply(1, call, Reply::Held);
            let call = join(&mut open);
            open.handle_reply(1, call, Reply::NotLed);
        }
        assert_eq!(open.poll_action(), Some(Action::Decided(Decision::Alone)));
    }

    #[test]
    fn failure_is_alone() {
        let mut open = Open::new(timings(), 0, true);
        let call = acquire(&mut open);
        open.handle_reply(1, call, Reply::Held);
        let call = join(&mut open);
        open.handle_reply(2, call, Reply::Failed);
        assert_eq!(open.poll_action(), Some(Action::Decided(Decision::Alone)));
    }

    #[test]
    fn times_out_to_alone_at_the_one_deadline() {
        let mut open = Open::new(timings(), 100, true);
        let call = acquire(&mut open);
        open.handle_reply(250, call, Reply::Held);
        let _ = join(&mut open);
        // One deadline for the whole decision, not one per call.
        assert_eq!(open.poll_timeout(), Some(300));
        open.handle_timeout(299);
        assert_eq!(open.poll_action(), None);
        open.handle_timeout(300);
        assert_eq!(open.poll_action(), Some(Action::Decided(Decision::Alone)));
        assert_eq!(open.poll_timeout(), None);
    }

    #[test]
    fn a_reply_after_the_deadline_is_alone() {
        let mut open = Open::new(timings(), 0, true);
        let call = acquire(&mut open);
        open.handle_reply(200, call, Reply::Acquired);
        assert_eq!(open.poll_action(), Some(Action::Decided(Decision::Alone)));
    }

    #[test]
    fn stale_and_odd_replies() {
        let mut open = Open::new(timings(), 0, true);
        let first = acquire(&mut open);
        open.handle_reply(1, first, Reply::Held);
        let call = join(&mut open);
        // The acquire's id again: stale, ignored.
        open.handle_reply(2, first, Reply::Acquired);
        assert_eq!(open.poll_action(), None);
        // A reply no join gets: the store is not trusted.
        open.handle_reply(3, call, Reply::Fenced);
        assert_eq!(open.poll_action(), Some(Action::Decided(Decision::Alone)));
        // Decided: anything later is ignored.
        open.handle_reply(4, call, Reply::Joined { ended: false });
        open.handle_timeout(10_000);
        assert_eq!(open.poll_action(), None);
    }
}
