//! The leading replica's decisions for one flight (R20, R22): append the upstream's items to
//! the store in batches under its lease, renew it, finish or give up, and write the stream
//! again when the store lost it. The items reach this replica's own clients before any of this.

use super::{CallId, Calls, Millis, Reply, Timings};

/// What the shell does next for a flight it leads. Every leader call is fenced: if the lease
/// holds another token it replies `Fenced` and does nothing; if nobody holds it, it takes it
/// again under this leader's token for a lease (the store lost it) and goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Append items `first..=last` (numbered from 1; the shell holds their bytes). If the
    /// stream's last entry is below `first - 1`, reply `Gap { top }` and write nothing; else
    /// write those above the stream's last entry (a retried batch is never written twice),
    /// let the stream live a few leases more, and reply `Written { top }`.
    Append {
        /// The call.
        call: CallId,
        /// The first item's number.
        first: u64,
        /// The last item's number.
        last: u64,
    },
    /// Write the flight's end (the shell holds it) as entry `number`, one past the last item,
    /// with the same gap check as `Append`; keep the stream for the resume window; keep the
    /// lease `linger` ms more (a whole answer, R17) or delete it now (0). `Written { top }`.
    Finish {
        /// The call.
        call: CallId,
        /// The end's entry number.
        number: u64,
        /// How long newcomers still find the flight: 0 for a failure.
        linger: Millis,
    },
    /// Extend the lease (and the stream's life) by a lease; reply `Written { top }` with the
    /// stream's last entry number, so a leader sees a stream the store lost.
    Renew(CallId),
    /// Give the flight up if no replica's interest is live: then write `Ending::Abandoned` as
    /// entry `number`, delete the lease and the interest, reply `Abandoned`; else `Wanted`.
    Abandon {
        /// The call.
        call: CallId,
        /// The end's entry number.
        number: u64,
    },
    /// The machine is done; the flight is over for the fleet.
    Over(Over),
}

/// How a leader's part in the fleet ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    /// The end is in the store.
    Finished,
    /// Given up (R22): the shell aborts the upstream.
    Abandoned,
    /// Fenced off, or cut off from the store for two leases: the shell serves this replica's
    /// own requests on alone, with no store call.
    Lost,
}

/// One flight's leader.
#[derive(Debug)]
pub struct Leader {
    calls: Calls,
}

impl Leader {
    /// A leader that took the lease at `now`.
    pub fn new(timings: Timings, now: Millis) -> Leader {
        let _ = (timings, now);
        todo!()
    }

    /// The upstream gave its next item (numbered on from the last).
    pub fn handle_item(&mut self, now: Millis) {
        let _ = now;
        todo!()
    }

    /// The upstream ended: whole (`done`) or failed (the shell holds its error).
    pub fn handle_end(&mut self, now: Millis, done: bool) {
        let _ = (now, done);
        todo!()
    }

    /// This replica's own requests on the flight are all gone.
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
