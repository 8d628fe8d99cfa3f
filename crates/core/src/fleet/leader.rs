//! The leading replica's decisions for one flight (R20, R22): append the upstream's items to
//! the store in batches under its lease, renew it, finish or give up, and write the stream
//! again when the store lost it. The items reach this replica's own clients before any of this.

use alloc::collections::VecDeque;

use super::{CallId, Calls, Millis, Reply, Timings};

/// At most this many items go in one `Append`: one call stays short for the store.
pub const BATCH: u64 = 512;

/// What the shell does next for a flight it leads. Every leader call is fenced: if the lease
/// holds another token it replies `Fenced` and does nothing; if nobody holds it, it takes it
/// again under this leader's token for a lease (the store lost it) and goes on, unless this
/// leader's stream already holds its end: then the flight is over in the store and a late call
/// (a renewal applied after the finish, a retried finish) must not make it joinable again
/// (R17): nothing changes, `Finish` and `Renew` reply `Written { top }`, `Abandon` replies
/// `Abandoned`, `Append` replies `Fenced`. (The fleet simulation's planted bug
/// `retake_after_end` shows a failure lingering without this.)
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
    /// If the stream holds its end already (a retried finish whose reply was lost), nothing is
    /// written again: the lease gets its linger (or goes) and the reply is `Written { top }`.
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
    /// entry `number` (with the same gap check as `Append`: a stream the store lost is written
    /// again before its end, `Gap { top }`), delete the lease and the interest, reply
    /// `Abandoned`; else `Wanted`.
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

/// The one write call a leader may have in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    Append,
    Finish,
    Abandon,
}

/// One flight's leader.
///
/// It holds at most one write (`Append`, `Finish`, `Abandon`) and, independently, at most one
/// `Renew` in flight: a renewal never waits for a write, nor a write or an item for a
/// renewal. The shell keeps every item's bytes (numbered from 1) until the machine is over,
/// so whatever the store loses, the leader writes again.
///
/// ```
/// use streamflight_core::fleet::leader::{Action, Leader, Over};
/// use streamflight_core::fleet::{Reply, Timings};
///
/// let mut leader = Leader::new(Timings::new(3_000), 0);
/// leader.handle_item(1);
/// let Some(Action::Append { call, first: 1, last: 1 }) = leader.poll_action() else { panic!() };
/// // One write at a time: the next items wait for this one's reply, then go as one batch.
/// leader.handle_item(2);
/// leader.handle_item(2);
/// leader.handle_end(2, true);
/// assert_eq!(leader.poll_action(), None);
/// leader.handle_reply(3, call, Reply::Written { top: 1 });
/// let Some(Action::Append { call, first: 2, last: 3 }) = leader.poll_action() else { panic!() };
/// leader.handle_reply(4, call, Reply::Written { top: 3 });
/// let Some(Action::Finish { call, number: 4, .. }) = leader.poll_action() else { panic!() };
/// leader.handle_reply(5, call, Reply::Written { top: 4 });
/// assert_eq!(leader.poll_action(), Some(Action::Over(Over::Finished)));
/// ```
#[derive(Debug)]
pub struct Leader {
    calls: Calls,
    timings: Timings,
    /// Items the upstream gave so far: the last one's number.
    produced: u64,
    /// The stream's last item as far as this leader knows: every item up to it is stored.
    written: u64,
    /// The upstream's end, once it came: whole or not.
    ended: Option<bool>,
    /// This replica's own requests are all gone.
    local_gone: bool,
    /// Whether to ask the store to give the flight up: set when the local requests go, and
    /// again after each successful renewal (interest records expire), cleared by each ask.
    ask: bool,
    write: Option<(CallId, Write)>,
    renew: Option<CallId>,
    /// When the next renewal is due (while none is in flight).
    next_renew: Millis,
    /// A write failed: the next one waits until then.
    retry_at: Option<Millis>,
    /// Since when every store call has failed.
    failing_since: Option<Millis>,
    over: Option<Over>,
    actions: VecDeque<Action>,
}

impl Leader {
    /// A leader that took the lease at `now`.
    pub fn new(timings: Timings, now: Millis) -> Leader {
        Leader {
            calls: Calls::default(),
            timings,
            produced: 0,
            written: 0,
            ended: None,
            local_gone: false,
            ask: false,
            write: None,
            renew: None,
            next_renew: now.saturating_add(timings.third()),
            retry_at: None,
            failing_since: None,
            over: None,
            actions: VecDeque::new(),
        }
    }

    /// The number of the last item the upstream gave.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// The number of the last item known to be in the store: the shell may let go of the
    /// bytes up to it only once the machine is over (the store may lose them).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// How it ended, once it did.
    pub fn over(&self) -> Option<Over> {
        self.over
    }

    /// The upstream gave its next item (numbered on from the last).
    pub fn handle_item(&mut self, now: Millis) {
        if self.over.is_some() || self.ended.is_some() {
            // Nothing comes after the end: an item then is the shell's mistake, and ignored.
            return;
        }
        self.produced += 1;
        self.pump(now);
    }

    /// The upstream ended: whole (`done`) or failed (the shell holds its error).
    pub fn handle_end(&mut self, now: Millis, done: bool) {
        if self.over.is_some() || self.ended.is_some() {
            return;
        }
        self.ended = Some(done);
        self.pump(now);
    }

    /// This replica's own requests on the flight are all gone.
    pub fn handle_local_gone(&mut self, now: Millis) {
        if self.over.is_some() || self.local_gone {
            return;
        }
        self.local_gone = true;
        self.ask = true;
        self.pump(now);
    }

    /// A store call's reply.
    pub fn handle_reply(&mut self, now: Millis, call: CallId, reply: Reply) {
        if self.over.is_some() {
            return;
        }
        if self.renew == Some(call) {
            self.renew = None;
            self.renewed(now, reply);
        } else if let Some((id, write)) = self.write
            && id == call
        {
            self.write = None;
            self.wrote(now, write, reply);
        }
        // Else stale: a call this leader no longer waits for.
        if self.over.is_none() {
            self.pump(now);
        }
    }

    /// Time passed (`poll_timeout` was reached).
    pub fn handle_timeout(&mut self, now: Millis) {
        if self.over.is_some() {
            return;
        }
        if self.cut_off(now) {
            return;
        }
        if self.retry_at.is_some_and(|at| now >= at) {
            self.retry_at = None;
        }
        self.pump(now);
    }

    /// The next action, until `None`.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Millis> {
        if self.over.is_some() {
            return None;
        }
        let renew = self.renew.is_none().then_some(self.next_renew);
        let give_up = self.failing_since.map(|since| since.saturating_add(2 * self.timings.lease));
        [renew, self.retry_at, give_up].into_iter().flatten().min()
    }

    /// What a renewal's reply says.
    fn renewed(&mut self, now: Millis, reply: Reply) {
        match reply {
            Reply::Written { top } => {
                self.failing_since = None;
                // The store lost entries (flushed, restarted): write them again.
                if top < self.written {
                    self.written = top;
                }
                // Interest records expire: whoever wanted the flight may be gone now.
                if self.local_gone && self.ended.is_none() {
                    self.ask = true;
                }
            }
            // A finish or give-up in flight may have freed the lease (and someone taken it)
            // before this renewal came: its own reply says how the flight ended.
            Reply::Fenced if matches!(self.write, Some((_, Write::Finish | Write::Abandon))) => {}
            Reply::Fenced => self.end(Over::Lost),
            // `Failed`, or a reply no renewal gets: counted as a failure.
            _ => {
                self.failed(now);
            }
        }
    }

    /// What a write's reply says.
    fn wrote(&mut self, now: Millis, write: Write, reply: Reply) {
        match (write, reply) {
            (Write::Append, Reply::Written { top }) => {
                self.failing_since = None;
                // `top` is the stream's last entry: below the batch's last, the store lost
                // some of it (written again); never above what this leader produced.
                self.written = top.min(self.produced);
            }
            (Write::Finish, Reply::Written { .. }) => self.end(Over::Finished),
            (_, Reply::Gap { top }) => {
                // The store lost the stream's tail: write it again from there.
                self.failing_since = None;
                self.written = top.min(self.written);
                if write == Write::Abandon {
                    self.ask = true;
                }
            }
            (_, Reply::Fenced) => self.end(Over::Lost),
            (Write::Abandon, Reply::Abandoned) => self.end(Over::Abandoned),
            (Write::Abandon, Reply::Wanted) => {
                // Someone else's interest is live: lead on, and ask again after a renewal.
                self.failing_since = None;
            }
            // `Failed`, or a reply this write cannot get: try the write again after a pause.
            _ => {
                if write == Write::Abandon {
                    self.ask = true;
                }
                if !self.failed(now) {
                    self.retry_at = Some(now.saturating_add(self.timings.backoff()));
                }
            }
        }
    }

    /// A store call failed: `true` if that made the leader give the fleet up.
    fn failed(&mut self, now: Millis) -> bool {
        self.failing_since.get_or_insert(now);
        self.cut_off(now)
    }

    /// Cut off from the store for two leases: another replica may lead by now; this one's
    /// requests are served on alone.
    fn cut_off(&mut self, now: Millis) -> bool {
        if self.failing_since.is_some_and(|since| now >= since.saturating_add(2 * self.timings.lease)) {
            self.end(Over::Lost);
            return true;
        }
        false
    }

    /// Makes the calls that are due.
    fn pump(&mut self, now: Millis) {
        if self.over.is_some() {
            return;
        }
        if self.renew.is_none() && now >= self.next_renew {
            let call = self.calls.next();
            self.renew = Some(call);
            self.next_renew = now.saturating_add(self.timings.third());
            self.actions.push_back(Action::Renew(call));
        }
        if self.write.is_some() || self.retry_at.is_some() {
            return;
        }
        let call = self.calls.next();
        if self.written < self.produced {
            let (first, last) = (self.written + 1, self.produced.min(self.written + BATCH));
            self.write = Some((call, Write::Append));
            self.actions.push_back(Action::Append { call, first, last });
        } else if let Some(done) = self.ended {
            // R17: only a whole answer lingers.
            let linger = if done { self.timings.linger } else { 0 };
            self.write = Some((call, Write::Finish));
            self.actions.push_back(Action::Finish { call, number: self.produced + 1, linger });
        } else if self.local_gone && self.ask {
            self.ask = false;
            self.write = Some((call, Write::Abandon));
            self.actions.push_back(Action::Abandon { call, number: self.produced + 1 });
        }
    }

    fn end(&mut self, over: Over) {
        self.over = Some(over);
        self.write = None;
        self.renew = None;
        self.actions.push_back(Action::Over(over));
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;

    fn timings() -> Timings {
        Timings { lease: 3_000, deadline: 200, linger: 5_000 }
    }

    fn drain(leader: &mut Leader) -> Vec<Action> {
        core::iter::from_fn(|| leader.poll_action()).collect()
    }

    fn one(leader: &mut Leader) -> Action {
        let mut actions = drain(leader);
        assert_eq!(actions.len(), 1, "{actions:?}");
        actions.remove(0)
    }

    fn append(leader: &mut Leader) -> (CallId, u64, u64) {
        match one(leader) {
            Action::Append { call, first, last } => (call, first, last),
            other => panic!("expected an append, got {other:?}"),
        }
    }

    #[test]
    fn batches_while_a_write_is_in_flight() {
        let mut leader = Leader::new(timings(), 0);
        leader.handle_item(1);
        let (call, first, last) = append(&mut leader);
        assert_eq!((first, last), (1, 1));
        for _ in 0..600 {
            leader.handle_item(2);
        }
        assert!(drain(&mut leader).is_empty(), "one write at a time");
        leader.handle_reply(3, call, Reply::Written { top: 1 });
        let (call, first, last) = append(&mut leader);
        assert_eq!((first, last), (2, 1 + BATCH));
        leader.handle_reply(4, call, Reply::Written { top: 1 + BATCH });
        let (_, first, last) = append(&mut leader);
        assert_eq!((first, last), (2 + BATCH, 601));
    }

    #[test]
    fn a_failed_answer_finishes_without_linger() {
        let mut leader = Leader::new(timings(), 0);
        leader.handle_item(1);
        let (call, ..) = append(&mut leader);
        leader.handle_end(2, false);
        leader.handle_reply(3, call, Reply::Written { top: 1 });
        let Action::Finish { call, number, linger } = one(&mut leader) else { panic!() };
        assert_eq!((number, linger), (2, 0));
        leader.handle_reply(4, call, Reply::Written { top: 2 });
        assert_eq!(one(&mut leader), Action::Over(Over::Finished));
        assert_eq!(leader.poll_timeout(), None);
    }

    #[test]
    fn a_whole_answer_lingers() {
        let mut leader = Leader::new(timings(), 0);
        leader.handle_end(1, true);
        assert_eq!(one(&mut leader), Action::Finish { call: CallId(1), number: 1, linger: 5_000 });
    }

    #[test]
    fn gap_writes_again_from_the_top() {
        let mut leader = Leader::new(timings(), 0);
        for _ in 0..10 {
            leader.handle_item(1);
        }
        let (call, ..) = append(&mut leader);
        leader.handle_reply(2, call, Reply::Written { top: 10 });
        leader.handle_item(3);
        let (call, first, _) = append(&mut leader);
        assert_eq!(first, 11);
        // The store lost all but the first four items.
        leader.handle_reply(4, call, Reply::Gap { top: 4 });
        assert_eq!(leader.written(), 4);
        let (_, first, last) = append(&mut leader);
        assert_eq!((first, last), (5, 11));
    }

    #[test]
    fn a_renewal_that_finds_a_shorter_stream_writes_again() {
        let mut leader = Leader::new(timings(), 0);
        leader.handle_item(1);
        let (call, ..) = append(&mut leader);
        leader.handle_reply(2, call, Reply::Written { top: 1 });
        leader.handle_timeout(1_000);
        let Action::Renew(renew) = one(&mut leader) else { panic!() };
        leader.handle_reply(1_010, renew, Reply::Written { top: 0 });
        assert_eq!(append(&mut leader).1, 1);
    }

    #[test]
    fn renew_never_waits_on_a_write_in_flight() {
        let mut leader = Leader::new(timings(), 0);
        leader.handle_item(1);
        let (write, ..) = append(&mut leader);
        assert_eq!(leader.poll_timeout(), Some(1_000));
        leader.handle_timeout(1_000);
        let Action::Renew(renew) = one(&mut leader) else { panic!() };
        // Items keep coming while both are out; nothing waits.
        leader.handle_item(1_001);
        assert!(drain(&mut leader).is_empty());
        leader.handle_reply(1_050, renew, Reply::Written { top: 0 });
        assert!(drain(&mut leader).is_empty(), "still one write at a time");
        // The renewal's next turn comes while the write still hangs.
        leader.handle_timeout(2_050);
        assert!(matches!(one(&mut leader), Action::Renew(_)));
        leader.handle_reply(2_060, write, Reply::Written { top: 1 });
        assert_eq!(append(&mut leader).1, 2);
    }

    #[test]
    fn a_renewal_fenced_after_the_finish_went_in_is_not_a_loss() {
        let mut leader = Leader::new(timings(), 0);
        leader.handle_end(999, false);
        let Action::Finish { call: finish, .. } = one(&mut leader) else { panic!() };
        leader.handle_timeout(1_000);
        let Action::Renew(renew) = one(&mut leader) else { panic!() };
        // The finish freed the lease, another replica took it, then the renewal came.
        leader.handle_reply(1_003, renew, Reply::Fenced);
        assert!(drain(&mut leader).is_empty());
        leader.handle_reply(1_004, finish, Reply::Written { top: 1 });
        assert_eq!(one(&mut leader), Action::Over(Over::Finished));
    }

    #[test]
    fn fenced_is_lost() {
        let mut leader = Leader::new(timings(), 0);
        leader.handle_item(1);
        let (call, ..) = append(&mut leader);
        leader.handle_reply(1, call, Reply::Fenced);
        assert_eq!(one(&mut leader), Action::Over(Over::Lost));
        leader.handle_item(2);
        leader.handle_timeout(10_000);
        assert!(drain(&mut leader).is_empty());
    }

    #[test]
    fn a_failed_write_is_retried_after_a_backoff_and_two_leases_of_failure_lose() {
        let mut leader = Leader::new(timings(), 0);
        leader.handle_item(0);
        let (call, ..) = append(&mut leader);
        leader.handle_reply(200, call, Reply::Failed);
        assert!(drain(&mut leader).is_empty());
        assert_eq!(leader.poll_timeout(), Some(500));
        leader.handle_timeout(500);
        let (mut call, first, _) = append(&mut leader);
        assert_eq!(first, 1);
        let mut now = 500;
        while leader.over().is_none() {
            now += 200;
            leader.handle_reply(now, call, Reply::Failed);
            for action in drain(&mut leader) {
                if let Action::Over(over) = action {
                    assert_eq!(over, Over::Lost);
                }
            }
            if leader.over().is_some() {
                break;
            }
            let at = leader.poll_timeout().unwrap();
            now = now.max(at);
            leader.handle_timeout(now);
            for action in drain(&mut leader) {
                match action {
                    Action::Append { call: c, .. } => call = c,
                    Action::Renew(c) => leader.handle_reply(now, c, Reply::Failed),
                    Action::Over(over) => assert_eq!(over, Over::Lost),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert!((6_200..6_700).contains(&now), "{now}");
    }

    #[test]
    fn local_gone_abandons_unless_wanted() {
        let mut leader = Leader::new(timings(), 0);
        leader.handle_item(1);
        let (call, ..) = append(&mut leader);
        leader.handle_local_gone(2);
        // Not while a write is in flight.
        assert!(drain(&mut leader).is_empty());
        leader.handle_reply(3, call, Reply::Written { top: 1 });
        let Action::Abandon { call, number } = one(&mut leader) else { panic!() };
        assert_eq!(number, 2);
        // An item while the give-up is out: it is numbered past the abandon's end.
        leader.handle_item(4);
        leader.handle_reply(5, call, Reply::Wanted);
        let (call, first, _) = append(&mut leader);
        assert_eq!(first, 2);
        leader.handle_reply(6, call, Reply::Written { top: 2 });
        assert!(drain(&mut leader).is_empty(), "asks again only after a renewal");
        leader.handle_timeout(1_000);
        let Action::Renew(renew) = one(&mut leader) else { panic!() };
        leader.handle_reply(1_001, renew, Reply::Written { top: 2 });
        let Action::Abandon { call, number } = one(&mut leader) else { panic!() };
        assert_eq!(number, 3);
        leader.handle_reply(1_002, call, Reply::Abandoned);
        assert_eq!(one(&mut leader), Action::Over(Over::Abandoned));
    }

    #[test]
    fn local_gone_after_the_end_just_finishes() {
        let mut leader = Leader::new(timings(), 0);
        leader.handle_end(1, true);
        let Action::Finish { call, .. } = one(&mut leader) else { panic!() };
        leader.handle_local_gone(2);
        leader.handle_reply(3, call, Reply::Failed);
        leader.handle_timeout(400);
        assert!(matches!(one(&mut leader), Action::Finish { number: 1, .. }));
    }

    #[test]
    fn stale_replies_are_ignored() {
        let mut leader = Leader::new(timings(), 0);
        leader.handle_item(1);
        let (call, ..) = append(&mut leader);
        leader.handle_reply(2, call, Reply::Written { top: 1 });
        leader.handle_item(3);
        let (now_call, ..) = append(&mut leader);
        // The first append's reply again, and ids never handed out.
        leader.handle_reply(4, call, Reply::Fenced);
        leader.handle_reply(4, CallId(99), Reply::Gap { top: 0 });
        assert!(drain(&mut leader).is_empty());
        assert_eq!(leader.over(), None);
        leader.handle_reply(5, now_call, Reply::Written { top: 2 });
        assert_eq!(leader.written(), 2);
    }
}
