//! A following replica's decisions for one flight (R21, R22): read its stream after the items
//! it has, pass each on, keep its interest alive, and tell a lost leader from a quiet one or
//! from a store that lost the stream and gets it back.

use alloc::vec::Vec;

use super::{CallId, Calls, Lost, Millis, Reply, Timings};

/// What the shell does next for a flight it follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Read the entries after number `after`: with `block`, wait up to a quarter lease for
    /// some. Replies `Entries` or `Failed`.
    Read {
        /// The call.
        call: CallId,
        /// The number of the last entry this follower has.
        after: u64,
        /// Wait for entries (else: what is there now).
        block: bool,
    },
    /// Read the lease: replies `Lease(seen)` or `Failed`.
    CheckLease(CallId),
    /// Keep this replica's interest for a lease: `Done` or `Failed`.
    Refresh(CallId),
    /// Withdraw this replica's interest: `Done` or `Failed`; nothing waits for the reply.
    Withdraw(CallId),
    /// Pass the next item (its bytes, as in the stream) to the local flight.
    Deliver(Vec<u8>),
    /// The machine is done.
    Over(Followed),
}

/// How following ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Followed {
    /// The flight ended whole.
    Done,
    /// The upstream failed: its error, as written.
    Failed(Vec<u8>),
    /// The fleet failed this replica's subscribers: end them with this.
    Lost(Lost),
    /// The leader went before anything was passed on: open the flight again (lead or follow).
    Again,
    /// The store failed before anything was passed on: serve alone.
    Alone,
    /// The local flight is gone.
    Gone,
}

/// One flight's follower on one replica.
#[derive(Debug)]
pub struct Follower {
    calls: Calls,
}

impl Follower {
    /// A follower from entry `from` on (0: the start) at `now`. Only a follower from the start
    /// that is not a resume may end `Again` or `Alone`; a resume ends `Lost` instead.
    pub fn new(timings: Timings, now: Millis, from: u64, resume: bool) -> Follower {
        let _ = (timings, now, from, resume);
        todo!()
    }

    /// This replica's requests on the flight are all gone.
    pub fn handle_local_gone(&mut self, now: Millis) {
        let _ = now;
        todo!()
    }

    /// A store call's reply.
    pub fn handle_reply(&mut self, now: Millis, call: CallId, reply: Reply) {
        let _ = (now, call, reply);
        todo!()
    }

    /// Time passed (`poll_timeout` was reached).
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
