//! A following replica's decisions for one flight (R21, R22): read its stream after the items
//! it has, pass each on, keep its interest alive, and tell a lost leader from a quiet one or
//! from a store that lost the stream and gets it back.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::{CallId, Calls, Ending, Entry, LeaseSeen, Lost, Millis, Reply, Timings};

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
    /// Keep this local flight's interest for a lease: `Done` or `Failed`.
    Refresh(CallId),
    /// Withdraw this local flight's interest (only its own: a replica may have two flights on
    /// one answer): `Done` or `Failed`; nothing waits for the reply.
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

/// The one read-side call a follower may have in flight (a refresh goes beside it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// A read; `last` if it is the final, non-blocking one before the leader is declared lost.
    Read { call: CallId, last: Option<Last> },
    /// A look at the lease after a quiet read.
    Check(CallId),
}

/// Why a final read is made: what the lease looked like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Last {
    /// Held under another token: whatever the stream holds now is all it ever will.
    Other,
    /// Missing for half a lease: if the final read still finds items, the leader lives.
    Missing,
}

/// One flight's follower on one replica.
///
/// It keeps one read (or lease check) in flight and, beside it, one interest refresh. A
/// quiet read makes it look at the lease: held by its leader, it reads on; held by another,
/// the stream is final; missing, the store may have lost it while the leader lives (which
/// takes it back on its next call, within a third of a lease), so it waits half a lease
/// before a final, non-blocking read: an end in it is passed on, items in it show a living
/// leader (it reads on), nothing means the leader is lost. Reads failing for two leases end
/// it too. R21: it ends within two leases of its leader's loss.
///
/// ```
/// use streamflight_core::fleet::follower::{Action, Followed, Follower};
/// use streamflight_core::fleet::{Entry, Ending, Reply, Timings};
///
/// let mut follower = Follower::new(Timings::new(3_000), 0, 0, false);
/// let Some(Action::Read { call, after: 0, block: true }) = follower.poll_action() else { panic!() };
/// let entries = vec![(1, Entry::Item(b"hi".to_vec())), (2, Entry::End(Ending::Done))];
/// follower.handle_reply(5, call, Reply::Entries(entries));
/// assert_eq!(follower.poll_action(), Some(Action::Deliver(b"hi".to_vec())));
/// assert_eq!(follower.poll_action(), Some(Action::Over(Followed::Done)));
/// ```
#[derive(Debug)]
pub struct Follower {
    calls: Calls,
    timings: Timings,
    /// Where it started: a follower from the start that is not a resume may try `Again`.
    fresh: bool,
    /// The number of the last entry passed on.
    had: u64,
    waiting: Option<Waiting>,
    refresh: Option<CallId>,
    /// When the next refresh of this replica's interest is due (while none is in flight).
    next_refresh: Millis,
    /// A read failed: the next one waits until then. `Some(last)` for a final read.
    retry: Option<(Millis, Option<Last>)>,
    /// When a read or check last succeeded: a fault came after it.
    last_ok: Millis,
    /// Since when every read has failed: from the last success, not the first failed reply,
    /// which a blocking read gives only after its block and deadline (R21: two leases from
    /// the fault, not from the follower's noticing it).
    failing_since: Option<Millis>,
    /// Since when the lease has been seen missing, with no entry since.
    missing_since: Option<Millis>,
    over: bool,
    actions: VecDeque<Action>,
}

impl Follower {
    /// A follower from entry `from` on (0: the start) at `now`. Only a follower from the start
    /// that is not a resume may end `Again` or `Alone`; a resume ends `Lost` instead.
    pub fn new(timings: Timings, now: Millis, from: u64, resume: bool) -> Follower {
        let mut follower = Follower {
            calls: Calls::default(),
            timings,
            fresh: from == 0 && !resume,
            had: from,
            waiting: None,
            refresh: None,
            next_refresh: now.saturating_add(timings.third()),
            retry: None,
            last_ok: now,
            failing_since: None,
            missing_since: None,
            over: false,
            actions: VecDeque::new(),
        };
        follower.read(None);
        follower
    }

    /// The number of the last entry passed on.
    pub fn had(&self) -> u64 {
        self.had
    }

    /// Whether it is over.
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// This replica's requests on the flight are all gone.
    pub fn handle_local_gone(&mut self, now: Millis) {
        let _ = now;
        if self.over {
            return;
        }
        let call = self.calls.next();
        self.actions.push_back(Action::Withdraw(call));
        self.end(Followed::Gone);
    }

    /// A store call's reply.
    pub fn handle_reply(&mut self, now: Millis, call: CallId, reply: Reply) {
        if self.over {
            return;
        }
        if self.refresh == Some(call) {
            // Its failure is the shell's to count: the reads tell whether the store is there.
            self.refresh = None;
        } else {
            match self.waiting {
                Some(Waiting::Read { call: id, last }) if id == call => {
                    self.waiting = None;
                    self.on_read(now, last, reply);
                }
                Some(Waiting::Check(id)) if id == call => {
                    self.waiting = None;
                    self.on_check(now, reply);
                }
                // Stale.
                _ => {}
            }
        }
        self.pump(now);
    }

    /// Time passed (`poll_timeout` was reached).
    pub fn handle_timeout(&mut self, now: Millis) {
        if self.over || self.cut_off(now) {
            return;
        }
        if let Some((at, last)) = self.retry
            && now >= at
        {
            self.retry = None;
            self.read(last);
        }
        self.pump(now);
    }

    /// The next action, until `None`.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Millis> {
        if self.over {
            return None;
        }
        let refresh = self.refresh.is_none().then_some(self.next_refresh);
        let retry = self.retry.map(|(at, _)| at);
        let give_up = self.failing_since.map(|since| since.saturating_add(2 * self.timings.lease));
        [refresh, retry, give_up].into_iter().flatten().min()
    }

    fn on_read(&mut self, now: Millis, last: Option<Last>, reply: Reply) {
        let Reply::Entries(entries) = reply else {
            // `Failed`, or a reply no read gets.
            return self.failed(now, last);
        };
        self.failing_since = None;
        self.last_ok = now;
        let any = !entries.is_empty();
        for (number, entry) in entries {
            if number != self.had + 1 {
                // Trimmed past this reader (or a store that skips): ending beats a gap.
                return self.end(Followed::Lost(Lost::Trimmed));
            }
            self.had = number;
            match entry {
                Entry::Item(bytes) => self.actions.push_back(Action::Deliver(bytes)),
                Entry::End(Ending::Done) => return self.end(Followed::Done),
                Entry::End(Ending::Failed(error)) => return self.end(Followed::Failed(error)),
                // Given up while this replica's interest had lapsed: the rest is nowhere.
                Entry::End(Ending::Abandoned) => return self.leader_lost(),
                Entry::Unreadable => return self.end(Followed::Lost(Lost::Sealed)),
            }
        }
        match last {
            // Another leads: what the stream held now is all it ever will.
            Some(Last::Other) => self.leader_lost(),
            // Entries: a leader writes, alive.
            _ if any => {
                self.missing_since = None;
                self.read(None);
            }
            Some(Last::Missing) => self.leader_lost(),
            // Quiet for a block: is its leader still there?
            None => {
                let call = self.calls.next();
                self.waiting = Some(Waiting::Check(call));
                self.actions.push_back(Action::CheckLease(call));
            }
        }
    }

    fn on_check(&mut self, now: Millis, reply: Reply) {
        if matches!(reply, Reply::Lease(_)) {
            self.last_ok = now;
        }
        match reply {
            Reply::Lease(LeaseSeen::Ours) => {
                self.failing_since = None;
                self.missing_since = None;
                self.read(None);
            }
            Reply::Lease(LeaseSeen::Other) => {
                self.failing_since = None;
                self.read(Some(Last::Other));
            }
            Reply::Lease(LeaseSeen::Missing) => {
                self.failing_since = None;
                // The store may have lost the lease while the leader lives: it takes it back
                // on its next call (a third of a lease at most). Half a lease is past that.
                let since = *self.missing_since.get_or_insert(now);
                if now >= since.saturating_add(self.timings.lease / 2) {
                    self.read(Some(Last::Missing));
                } else {
                    self.read(None);
                }
            }
            _ => self.failed(now, None),
        }
    }

    /// A read or a check failed: try again after a pause, or give up after two leases.
    fn failed(&mut self, now: Millis, last: Option<Last>) {
        self.failing_since.get_or_insert(self.last_ok);
        if !self.cut_off(now) {
            self.retry = Some((now.saturating_add(self.timings.backoff()), last));
        }
    }

    /// The store failed for two leases: this replica can no longer follow.
    fn cut_off(&mut self, now: Millis) -> bool {
        if self.failing_since.is_some_and(|since| now >= since.saturating_add(2 * self.timings.lease)) {
            if self.fresh && self.had == 0 {
                self.end(Followed::Alone);
            } else {
                self.end(Followed::Lost(Lost::Leader));
            }
            return true;
        }
        false
    }

    fn leader_lost(&mut self) {
        if self.fresh && self.had == 0 {
            self.end(Followed::Again);
        } else {
            self.end(Followed::Lost(Lost::Leader));
        }
    }

    fn read(&mut self, last: Option<Last>) {
        let call = self.calls.next();
        self.waiting = Some(Waiting::Read { call, last });
        self.actions.push_back(Action::Read { call, after: self.had, block: last.is_none() });
    }

    /// Makes the refresh that is due.
    fn pump(&mut self, now: Millis) {
        if self.over || self.refresh.is_some() || now < self.next_refresh {
            return;
        }
        let call = self.calls.next();
        self.refresh = Some(call);
        self.next_refresh = now.saturating_add(self.timings.third());
        self.actions.push_back(Action::Refresh(call));
    }

    fn end(&mut self, followed: Followed) {
        self.over = true;
        self.waiting = None;
        self.refresh = None;
        self.retry = None;
        self.actions.push_back(Action::Over(followed));
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;

    fn timings() -> Timings {
        Timings::new(3_000)
    }

    fn drain(follower: &mut Follower) -> Vec<Action> {
        core::iter::from_fn(|| follower.poll_action()).collect()
    }

    fn read(follower: &mut Follower) -> (CallId, u64, bool) {
        let actions = drain(follower);
        match actions.as_slice() {
            [Action::Read { call, after, block }] => (*call, *after, *block),
            other => panic!("expected a read, got {other:?}"),
        }
    }

    fn check(follower: &mut Follower) -> CallId {
        let actions: Vec<_> =
            drain(follower).into_iter().filter(|a| !matches!(a, Action::Refresh(_))).collect();
        match actions.as_slice() {
            [Action::CheckLease(call)] => *call,
            other => panic!("expected a lease check, got {other:?}"),
        }
    }

    fn item(n: u64) -> (u64, Entry) {
        (n, Entry::Item(vec![n as u8]))
    }

    #[test]
    fn delivers_in_order_and_ends_with_the_failure() {
        let mut f = Follower::new(timings(), 0, 0, false);
        let (call, after, block) = read(&mut f);
        assert_eq!((after, block), (0, true));
        f.handle_reply(1, call, Reply::Entries(vec![item(1), item(2)]));
        let actions = drain(&mut f);
        assert_eq!(actions[..2], [Action::Deliver(vec![1]), Action::Deliver(vec![2])]);
        let Action::Read { call, after: 2, block: true } = actions[2] else { panic!("{actions:?}") };
        f.handle_reply(2, call, Reply::Entries(vec![(3, Entry::End(Ending::Failed(vec![9])))]));
        assert_eq!(drain(&mut f), [Action::Over(Followed::Failed(vec![9]))]);
        assert_eq!(f.poll_timeout(), None);
    }

    #[test]
    fn a_gap_is_trimmed() {
        let mut f = Follower::new(timings(), 0, 4, true);
        let (call, after, _) = read(&mut f);
        assert_eq!(after, 4);
        f.handle_reply(1, call, Reply::Entries(vec![item(7)]));
        assert_eq!(drain(&mut f), [Action::Over(Followed::Lost(Lost::Trimmed))]);
    }

    #[test]
    fn quiet_and_led_by_another_is_a_lost_leader_unless_the_end_is_there() {
        for (end, expected) in [(true, Followed::Done), (false, Followed::Lost(Lost::Leader))] {
            let mut f = Follower::new(timings(), 0, 0, false);
            let (call, ..) = read(&mut f);
            f.handle_reply(1, call, Reply::Entries(vec![item(1)]));
            let actions = drain(&mut f);
            let Action::Read { call, .. } = actions[1] else { panic!() };
            f.handle_reply(750, call, Reply::Entries(vec![]));
            let call = check(&mut f);
            f.handle_reply(751, call, Reply::Lease(LeaseSeen::Other));
            let (call, after, block) = read(&mut f);
            assert_eq!((after, block), (1, false));
            let entries = if end { vec![(2, Entry::End(Ending::Done))] } else { vec![] };
            f.handle_reply(752, call, Reply::Entries(entries));
            assert_eq!(drain(&mut f), [Action::Over(expected)]);
        }
    }

    #[test]
    fn a_leader_lost_before_anything_came_is_tried_again() {
        let mut f = Follower::new(timings(), 0, 0, false);
        let (call, ..) = read(&mut f);
        f.handle_reply(750, call, Reply::Entries(vec![]));
        let call = check(&mut f);
        f.handle_reply(751, call, Reply::Lease(LeaseSeen::Other));
        let (call, ..) = read(&mut f);
        f.handle_reply(752, call, Reply::Entries(vec![]));
        assert_eq!(drain(&mut f), [Action::Over(Followed::Again)]);
        // A resume from the start is not tried again.
        let mut f = Follower::new(timings(), 0, 0, true);
        let (call, ..) = read(&mut f);
        f.handle_reply(1, call, Reply::Entries(vec![(1, Entry::End(Ending::Abandoned))]));
        assert_eq!(drain(&mut f), [Action::Over(Followed::Lost(Lost::Leader))]);
    }

    #[test]
    fn an_entry_the_shell_could_not_open_ends_the_flight_there_after_what_came_before() {
        let mut f = Follower::new(timings(), 0, 0, false);
        let (call, ..) = read(&mut f);
        f.handle_reply(1, call, Reply::Entries(vec![item(1), (2, Entry::Unreadable), item(3)]));
        assert_eq!(drain(&mut f), [Action::Deliver(vec![1]), Action::Over(Followed::Lost(Lost::Sealed))]);
    }

    #[test]
    fn a_missing_lease_is_waited_for_half_a_lease() {
        let mut f = Follower::new(timings(), 0, 0, false);
        let (call, ..) = read(&mut f);
        f.handle_reply(100, call, Reply::Entries(vec![item(1)]));
        let (mut now, mut call) = (
            100,
            match drain(&mut f)[1] {
                Action::Read { call, .. } => call,
                _ => panic!(),
            },
        );
        // Quiet reads while the lease is missing: read on until half a lease has passed.
        loop {
            now += 750;
            f.handle_reply(now, call, Reply::Entries(vec![]));
            let check = check(&mut f);
            f.handle_reply(now, check, Reply::Lease(LeaseSeen::Missing));
            let actions: Vec<_> =
                drain(&mut f).into_iter().filter(|a| !matches!(a, Action::Refresh(_))).collect();
            let [Action::Read { call: next, block, .. }] = actions.as_slice() else { panic!("{actions:?}") };
            call = *next;
            if !block {
                break;
            }
        }
        assert_eq!(now, 100 + 750 * 3);
        // The final read finds what the living leader wrote after it took the lease back.
        f.handle_reply(now, call, Reply::Entries(vec![item(2)]));
        let actions = drain(&mut f);
        assert_eq!(actions[0], Action::Deliver(vec![2]));
        assert!(matches!(actions[1], Action::Read { after: 2, block: true, .. }));
        assert!(!f.is_over());
    }

    #[test]
    fn failing_reads_give_up_after_two_leases() {
        let mut f = Follower::new(timings(), 0, 0, false);
        let (mut call, ..) = read(&mut f);
        let mut now = 0;
        loop {
            now += 200;
            f.handle_reply(now, call, Reply::Failed);
            let mut next = None;
            while next.is_none() && !f.is_over() {
                let at = f.poll_timeout().unwrap();
                now = now.max(at);
                f.handle_timeout(now);
                for action in drain(&mut f) {
                    match action {
                        Action::Read { call, .. } => next = Some(call),
                        Action::Refresh(c) => f.handle_reply(now, c, Reply::Failed),
                        Action::Over(over) => assert_eq!(over, Followed::Alone),
                        other => panic!("{other:?}"),
                    }
                }
            }
            match next {
                Some(next) => call = next,
                None => break,
            }
        }
        // Two leases from the last success (the start), not from the first failed reply.
        assert!((6_000..6_400).contains(&now), "{now}");
    }

    #[test]
    fn refreshes_beside_a_read_and_withdraws_when_gone() {
        let mut f = Follower::new(timings(), 0, 0, false);
        let (call, ..) = read(&mut f);
        assert_eq!(f.poll_timeout(), Some(1_000));
        f.handle_timeout(1_000);
        let [Action::Refresh(refresh)] = drain(&mut f)[..] else { panic!() };
        f.handle_reply(1_001, refresh, Reply::Failed);
        assert!(drain(&mut f).is_empty(), "a refresh's failure ends nothing");
        f.handle_local_gone(1_002);
        let actions = drain(&mut f);
        assert!(matches!(actions[..], [Action::Withdraw(_), Action::Over(Followed::Gone)]));
        // Stale from now on.
        f.handle_reply(1_003, call, Reply::Entries(vec![item(1)]));
        assert!(drain(&mut f).is_empty());
    }

    #[test]
    fn stale_replies_are_ignored() {
        let mut f = Follower::new(timings(), 0, 0, false);
        let (first, ..) = read(&mut f);
        f.handle_reply(1, first, Reply::Entries(vec![item(1)]));
        let _ = drain(&mut f);
        f.handle_reply(2, first, Reply::Entries(vec![item(2)]));
        f.handle_reply(2, CallId(77), Reply::Lease(LeaseSeen::Other));
        assert!(drain(&mut f).is_empty());
        assert_eq!(f.had(), 1);
    }
}
