//! The fleet's decisions as sans-IO machines: whether a replica leads, follows or serves a
//! flight alone, and what its leader and followers do with each store reply (R19-R24).
//!
//! The store itself (Redis, or the testkit's model of it) is outside: a machine asks for a
//! store call with an [`Action`](leader::Action) naming a [`CallId`], the shell makes the call
//! under a deadline and hands the [`Reply`] back with that id. Time is an input (`now`, in ms
//! from any origin, never decreasing); a machine never reads a clock, spawns or waits. Every
//! input is followed by draining `poll_action` until it is `None`; `poll_timeout` says when to
//! call `handle_timeout` next. A reply whose call the machine no longer waits for is stale and
//! ignored.
//!
//! What the store must do for each call, exactly, is written on the calls: the real scripts
//! (`streamflight-redis`) and the testkit's model implement the same semantics.

pub mod follower;
pub mod leader;
pub mod open;

/// A point in time, in milliseconds from an origin of the caller's choice.
pub type Millis = u64;

/// Names one store call of one machine: a reply is matched to its call, and a reply to a call
/// the machine no longer waits for (stale) is ignored. Only machines make them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(u64);

/// Hands out a machine's call ids: never the same twice.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    next: u64,
}

impl Calls {
    /// A new id.
    pub(crate) fn next(&mut self) -> CallId {
        self.next += 1;
        CallId(self.next)
    }
}

/// How a flight's lease looks to a follower that checks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseSeen {
    /// Held under the followed flight's token: its leader is alive.
    Ours,
    /// Held under another token: the followed flight's leader can never write again.
    Other,
    /// Nobody holds it: the leader finished, died, or the store lost it (a leader that is
    /// alive takes it back on its next call).
    Missing,
}

/// The timings every machine of a fleet shares; the same on every replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// The lease timeout (R20). A leader renews every third of it; a follower ends within two
    /// of it after its leader is lost (R21); interest lives as long (R22).
    pub lease: Millis,
    /// How long a store call may take before the shell gives up on it and replies
    /// [`Reply::Failed`] (the call may still take effect). No request waits on the store
    /// longer (R23).
    pub deadline: Millis,
    /// How long a finished (whole) answer's lease stays for newcomers (R17); a failed answer
    /// never lingers.
    pub linger: Millis,
}

impl Timings {
    /// A lease of `lease` ms, the default deadline (200 ms, at most a third of the lease) and
    /// no linger.
    pub fn new(lease: Millis) -> Timings {
        Timings { lease, deadline: 200.min(lease / 3).max(1), linger: 0 }
    }

    /// A third of the lease: how often a leader renews and a follower refreshes its interest
    /// (both live a lease), so that two may fail before either lapses.
    pub fn third(self) -> Millis {
        (self.lease / 3).max(1)
    }

    /// How long a failed call waits before it is tried again.
    pub fn backoff(self) -> Millis {
        (self.lease / 10).max(1)
    }
}

/// A store call's reply, as the shell hands it back. Which replies a call may get is written
/// on the action that asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The store failed, or the call's deadline passed: it may or may not have taken effect.
    Failed,
    /// `Acquire`: the lease was free and is now this replica's, under `token`.
    Acquired,
    /// `Acquire`: another replica holds the lease.
    Held,
    /// `Join`: a flight is led under the lease's token (the shell keeps it); `ended` if its
    /// stream holds its end already (a finished answer within its linger).
    Joined {
        /// Its stream holds its end.
        ended: bool,
    },
    /// `Join`: nobody leads.
    NotLed,
    /// A leader's write (`Append`, `Finish`) or renewal went in: the stream's last entry
    /// number is now `top`. A renewal reports the top it found.
    Written {
        /// The number of the stream's last entry after the call.
        top: u64,
    },
    /// `Append`, `Finish`: the stream holds fewer entries than the write follows on from
    /// (the store lost them): nothing was written; the leader writes again from `top + 1`.
    Gap {
        /// The number of the stream's last entry (0: the stream is gone).
        top: u64,
    },
    /// A leader's call: the lease is another token's. Nothing was written.
    Fenced,
    /// `Abandon`: some replica's interest is live: nothing was written, lead on.
    Wanted,
    /// `Abandon`: nobody else wanted the flight: its end is written and the lease is free.
    Abandoned,
    /// `Read`: the entries after the asked number, in order, at most a batch (none: the
    /// read's block passed with nothing new).
    Entries(alloc::vec::Vec<(u64, Entry)>),
    /// `CheckLease`: what the lease is now.
    Lease(LeaseSeen),
    /// `Refresh`, `Withdraw`: done.
    Done,
}

/// One entry of a flight's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// An item of the upstream, as the codec (and the seal) wrote it.
    Item(alloc::vec::Vec<u8>),
    /// The flight's end: the stream's last entry.
    End(Ending),
    /// An entry the shell could not open (R24: altered in the store, or sealed under another
    /// fleet secret): the follower ends `Lost(Sealed)` there rather than pass on what it
    /// cannot vouch for.
    Unreadable,
}

/// A flight's end, as written in its stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The upstream ended whole.
    Done,
    /// The upstream failed: its error, as the codec wrote it.
    Failed(alloc::vec::Vec<u8>),
    /// The leader gave the flight up: its own requests were gone and nobody else wanted it.
    Abandoned,
}

/// How the fleet itself failed a follower's subscribers: the upstream did not fail, but this
/// replica can no longer follow the flight.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// The leading replica crashed, stalled or lost the store mid-flight, after this replica
    /// had already passed items on (R21): the rest of the answer is nowhere.
    Leader,
    /// The stream was trimmed past this replica's reader: the items it missed are gone, so the
    /// flight ends rather than skip them.
    Trimmed,
    /// An entry of the flight's stream did not open (R24): it was altered in the store, or
    /// sealed by a replica with another fleet secret. The flight ends there on this replica
    /// rather than pass on what it cannot vouch for. (The shell's, not the machines'.)
    Sealed,
    /// An entry opened but this replica's codec could not read it: replicas built with
    /// different item or error types share the store (a rolling upgrade). The flight ends there
    /// on this replica rather than pass on a guess. (The codec's, not the machines'.)
    Undecodable,
}

impl core::fmt::Display for Lost {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Lost::Leader => "the replica leading this flight was lost mid-stream",
            Lost::Trimmed => "this replica fell behind the flight's stream past its bound",
            Lost::Sealed => "an entry of the flight's stream in the store could not be opened",
            Lost::Undecodable => "an entry of the flight's stream in the store could not be decoded",
        })
    }
}
