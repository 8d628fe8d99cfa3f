//! How a replica's new local flight finds its place in the fleet: lead it (the lease was
//! free), follow whoever leads it, or serve it alone, within one store deadline (R23).

use super::{CallId, Calls, Millis, Reply, Timings};

/// What the shell does next for a flight being opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Take the flight's lease if it is free (`SET NX PX lease` with a fresh token): replies
    /// `Acquired`, `Held` or `Failed`.
    Acquire(CallId),
    /// Find who leads and register this replica's interest in its flight for a lease, in one
    /// step (R22): replies `Joined { ended }`, `NotLed` or `Failed`.
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

/// Opens one local flight in the fleet.
#[derive(Debug)]
pub struct Open {
    calls: Calls,
}

impl Open {
    /// A flight opened at `now`. `available`: the store may be tried (no recent failure within
    /// the replica's pause); if not, the decision is `Alone` at once.
    pub fn new(timings: Timings, now: Millis, available: bool) -> Open {
        let _ = (timings, now, available);
        todo!()
    }

    /// A store call's reply.
    pub fn handle_reply(&mut self, now: Millis, call: CallId, reply: Reply) {
        let _ = (now, call, reply);
        todo!()
    }

    /// Time passed: at `poll_timeout`, undecided, the decision is `Alone`.
    pub fn handle_timeout(&mut self, now: Millis) {
        let _ = now;
        todo!()
    }

    /// The next action, until `None`.
    pub fn poll_action(&mut self) -> Option<Action> {
        todo!()
    }

    /// When to call `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Millis> {
        todo!()
    }
}
