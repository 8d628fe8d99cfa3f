//! The store's model: exactly the semantics the fleet's calls document (lease `SET NX PX`,
//! fenced writes that take a missing lease back, the gap check, XREAD, interest, expiry).
//!
//! It is a plain map of keys with expiry by the store's own clock, applied one call at a
//! time as Redis runs one script at a time. What it applied is logged for the invariants.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::fleet::{Ending, Entry, LeaseSeen, Millis, Reply, Timings};

/// A flight's key in the fleet (what the lease is named after).
pub type Key = u8;
/// A lease's fencing token: fresh at every `Acquire`, never reused.
pub type Token = u64;
/// A replica's name.
pub type Replica = u8;
/// A name in interest records: one per local flight of a replica (its replica, and which of
/// the replica's flights), so that one flight's withdrawal leaves another's interest standing
/// when a replica has two on the same answer at once.
pub type Member = (Replica, usize);

/// At most this many entries per read (as the shells ask).
pub const READ_BATCH: usize = 512;

/// Bugs planted on purpose, to show that the simulation catches each (and which invariant
/// does). All off in a real check.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// The shell passes the linger to every `Finish`, a failed answer's too (the bug of
    /// `lead.rs` before issue 23).
    pub linger_failure: bool,
    /// The store applies a leader's write whoever holds the lease.
    pub skip_fence: bool,
    /// The store gives a flight up though some replica's interest is live.
    pub abandon_despite_interest: bool,
    /// The store appends past a hole instead of replying `Gap`: what it lost stays lost.
    pub no_gap_check: bool,
    /// A leader's late call takes a missing lease back even over a stream that has ended.
    pub retake_after_end: bool,
    /// A follower's lease check is answered from a stale cache: always its own leader's.
    pub stale_lease_check: bool,
    /// `Acquire` is a plain `SET` (no `NX`): it takes a held lease.
    pub acquire_without_nx: bool,
    /// The shell writes a failed upstream's end as `Done`: a truncated answer looks whole.
    pub failure_as_done: bool,
    /// The shell gives each of `Open`'s calls its deadline but never tells `Open` the time:
    /// a decision takes as long as its calls together.
    pub no_open_deadline: bool,
}

/// One store call, as a shell makes it: the machine's action with the names the shell adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `open::Action::Acquire`.
    Acquire {
        /// The flight's key.
        key: Key,
    },
    /// `open::Action::Join`.
    Join {
        /// The flight's key.
        key: Key,
        /// Whose interest.
        member: Member,
    },
    /// `leader::Action::Append`, with the items' bytes.
    Append {
        /// The flight's key.
        key: Key,
        /// The leader's token.
        token: Token,
        /// The first item's number.
        first: u64,
        /// The items.
        items: Vec<Vec<u8>>,
    },
    /// `leader::Action::Finish`, with the end.
    Finish {
        /// The flight's key.
        key: Key,
        /// The leader's token.
        token: Token,
        /// The end's entry number.
        number: u64,
        /// The end.
        end: Ending,
        /// How long the lease stays.
        linger: Millis,
    },
    /// `leader::Action::Renew`.
    Renew {
        /// The flight's key.
        key: Key,
        /// The leader's token.
        token: Token,
    },
    /// `leader::Action::Abandon`.
    Abandon {
        /// The flight's key.
        key: Key,
        /// The leader's token.
        token: Token,
        /// The end's entry number.
        number: u64,
    },
    /// `follower::Action::Read` (the sim parks a blocking read that finds nothing).
    Read {
        /// The followed flight's token.
        token: Token,
        /// The last entry the follower has.
        after: u64,
    },
    /// `follower::Action::CheckLease`.
    CheckLease {
        /// The flight's key.
        key: Key,
        /// The followed flight's token.
        token: Token,
    },
    /// `follower::Action::Refresh`.
    Refresh {
        /// The followed flight's token.
        token: Token,
        /// Whose interest.
        member: Member,
    },
    /// `follower::Action::Withdraw`.
    Withdraw {
        /// The followed flight's token.
        token: Token,
        /// Whose interest.
        member: Member,
    },
}

/// What the store did that the invariants look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A leader's write (append, finish, abandon) went in under `token`; `holder` held the
    /// lease just before (`None`: nobody, and the write took it).
    Write {
        /// The flight's key.
        key: Key,
        /// The writer's token.
        token: Token,
        /// Who held the lease before the write.
        holder: Option<Token>,
    },
    /// A flight was given up while `live` replicas' interest in it was unexpired.
    Abandoned {
        /// The flight's key.
        key: Key,
        /// The leader's token.
        token: Token,
        /// Live interest at that moment.
        live: usize,
    },
}

#[derive(Clone, Copy, Debug)]
struct Lease {
    token: Token,
    until: Millis,
}

#[derive(Clone, Debug, Default)]
struct Stream {
    entries: Vec<(u64, Entry)>,
    until: Millis,
}

impl Stream {
    fn top(&self) -> u64 {
        self.entries.last().map_or(0, |(n, _)| *n)
    }

    fn ended(&self) -> bool {
        matches!(self.entries.last(), Some((_, Entry::End(_))))
    }
}

#[derive(Clone, Debug, Default)]
struct Interest {
    members: BTreeMap<Member, Millis>,
    until: Millis,
}

/// How a leader's call stands against the lease.
enum Fence {
    /// Its token holds the lease (perhaps just taken back); `holder` held it before.
    Held { holder: Option<Token> },
    /// Another token holds it.
    Fenced,
    /// Nobody holds it and this leader's stream has its end: the flight is over in the store,
    /// and a late call must not take the lease back (a failure would linger).
    Ended,
}

/// The in-memory store.
#[derive(Clone, Debug)]
pub struct Store {
    timings: Timings,
    bugs: Bugs,
    leases: BTreeMap<Key, Lease>,
    streams: BTreeMap<Token, Stream>,
    interest: BTreeMap<Token, Interest>,
    next_token: Token,
    /// What was applied since the invariants last looked.
    pub log: Vec<Applied>,
}

impl Store {
    /// An empty store.
    pub fn new(timings: Timings, bugs: Bugs) -> Store {
        Store {
            timings,
            bugs,
            leases: BTreeMap::new(),
            streams: BTreeMap::new(),
            interest: BTreeMap::new(),
            next_token: 0,
            log: Vec::new(),
        }
    }

    /// How long a live stream outlives its leader's last write or renewal.
    fn live(&self) -> Millis {
        4 * self.timings.lease
    }

    /// How long a stream stays after its end (for readers still on it).
    fn keep(&self) -> Millis {
        10 * self.timings.lease
    }

    /// Everything gone: `FLUSHALL`, or a restart without persistence.
    pub fn flush(&mut self) {
        self.leases.clear();
        self.streams.clear();
        self.interest.clear();
    }

    /// The lease of `key` lapses now ("lease expiry at any point").
    pub fn expire_lease(&mut self, key: Key) {
        self.leases.remove(&key);
    }

    /// Drops every key whose time is up at `now`.
    pub fn purge(&mut self, now: Millis) {
        self.leases.retain(|_, lease| lease.until > now);
        self.streams.retain(|_, stream| stream.until > now);
        self.interest.retain(|_, interest| interest.until > now);
    }

    /// The token holding `key`'s lease.
    pub fn holder(&self, key: Key) -> Option<Token> {
        self.leases.get(&key).map(|lease| lease.token)
    }

    /// Each lease with its stream's end if it has one: for "no failure lingers".
    pub fn leases_with_ends(&self) -> impl Iterator<Item = (Key, Token, Option<&Ending>)> {
        self.leases.iter().map(|(key, lease)| {
            let end = self.streams.get(&lease.token).and_then(|s| match s.entries.last() {
                Some((_, Entry::End(end))) => Some(end),
                _ => None,
            });
            (*key, lease.token, end)
        })
    }

    /// Each stream's entry numbers, for "a stream has no hole".
    pub fn streams(&self) -> impl Iterator<Item = (Token, &[(u64, Entry)])> {
        self.streams.iter().map(|(token, stream)| (*token, stream.entries.as_slice()))
    }

    /// Whether a read of `token` after `after` would find something now.
    pub fn readable(&self, token: Token, after: u64) -> bool {
        self.streams.get(&token).is_some_and(|s| s.top() > after)
    }

    /// Applies one call at `now`: the reply, and the token for `Acquire` and `Join`.
    pub fn apply(&mut self, now: Millis, op: &Op) -> (Reply, Option<Token>) {
        self.purge(now);
        let lease = self.timings.lease;
        match op {
            Op::Acquire { key } => {
                if self.leases.contains_key(key) && !self.bugs.acquire_without_nx {
                    return (Reply::Held, None);
                }
                self.next_token += 1;
                let token = self.next_token;
                self.leases.insert(*key, Lease { token, until: now + lease });
                (Reply::Acquired, Some(token))
            }
            Op::Join { key, member } => {
                let Some(token) = self.holder(*key) else { return (Reply::NotLed, None) };
                let interest = self.interest.entry(token).or_default();
                interest.members.insert(*member, now + lease);
                interest.until = now + 2 * lease;
                let ended = self.streams.get(&token).is_some_and(Stream::ended);
                (Reply::Joined { ended }, Some(token))
            }
            Op::Append { key, token, first, items } => {
                let Fence::Held { holder } = self.fence(now, *key, *token) else {
                    return (Reply::Fenced, None);
                };
                let live = self.live();
                let stream = self.streams.entry(*token).or_default();
                if stream.ended() {
                    // Nothing goes after an end.
                    return (Reply::Fenced, None);
                }
                let top = stream.top();
                if *first > top + 1 && !self.bugs.no_gap_check {
                    return (Reply::Gap { top }, None);
                }
                for (i, item) in items.iter().enumerate() {
                    let n = first + i as u64;
                    if n > stream.top() {
                        stream.entries.push((n, Entry::Item(item.clone())));
                    }
                }
                stream.until = now + live;
                let top = stream.top();
                self.log.push(Applied::Write { key: *key, token: *token, holder });
                (Reply::Written { top }, None)
            }
            Op::Finish { key, token, number, end, linger } => {
                let holder = match self.fence(now, *key, *token) {
                    Fence::Fenced => return (Reply::Fenced, None),
                    Fence::Ended => {
                        let top = self.streams.get(token).map_or(0, Stream::top);
                        return (Reply::Written { top }, None);
                    }
                    Fence::Held { holder } => holder,
                };
                let keep = self.keep();
                let stream = self.streams.entry(*token).or_default();
                let top = stream.top();
                if !stream.ended() {
                    if *number > top + 1 {
                        return (Reply::Gap { top }, None);
                    }
                    if *number <= top {
                        // Redis refuses an id at or below the top: the script errs.
                        return (Reply::Failed, None);
                    }
                    stream.entries.push((*number, Entry::End(end.clone())));
                    stream.until = now + keep;
                }
                let top = stream.top();
                if *linger > 0 {
                    self.leases.insert(*key, Lease { token: *token, until: now + linger });
                } else {
                    self.leases.remove(key);
                }
                self.log.push(Applied::Write { key: *key, token: *token, holder });
                (Reply::Written { top }, None)
            }
            Op::Renew { key, token } => {
                let top = self.streams.get(token).map_or(0, Stream::top);
                match self.fence(now, *key, *token) {
                    Fence::Fenced => (Reply::Fenced, None),
                    Fence::Ended => (Reply::Written { top }, None),
                    Fence::Held { .. } => {
                        if let Some(held) = self.leases.get_mut(key) {
                            held.until = now + lease;
                        }
                        let live = self.live();
                        if let Some(stream) = self.streams.get_mut(token).filter(|s| !s.ended()) {
                            stream.until = now + live;
                        }
                        (Reply::Written { top }, None)
                    }
                }
            }
            Op::Abandon { key, token, number } => {
                let holder = match self.fence(now, *key, *token) {
                    Fence::Fenced => return (Reply::Fenced, None),
                    // Its end is in: a retried give-up whose first reply was lost.
                    Fence::Ended => return (Reply::Abandoned, None),
                    Fence::Held { holder } => holder,
                };
                let live = self.interest.get_mut(token).map_or(0, |interest| {
                    interest.members.retain(|_, until| *until > now);
                    interest.members.len()
                });
                if live > 0 && !self.bugs.abandon_despite_interest {
                    return (Reply::Wanted, None);
                }
                let keep = self.keep();
                let stream = self.streams.entry(*token).or_default();
                let top = stream.top();
                if stream.ended() {
                    return (Reply::Abandoned, None);
                }
                if *number > top + 1 && !self.bugs.no_gap_check {
                    return (Reply::Gap { top }, None);
                }
                if *number <= top {
                    return (Reply::Failed, None);
                }
                stream.entries.push((*number, Entry::End(Ending::Abandoned)));
                stream.until = now + keep;
                self.leases.remove(key);
                self.interest.remove(token);
                self.log.push(Applied::Write { key: *key, token: *token, holder });
                self.log.push(Applied::Abandoned { key: *key, token: *token, live });
                (Reply::Abandoned, None)
            }
            Op::Read { token, after } => {
                let entries = self.streams.get(token).map_or_else(Vec::new, |stream| {
                    stream.entries.iter().filter(|(n, _)| n > after).take(READ_BATCH).cloned().collect()
                });
                (Reply::Entries(entries), None)
            }
            Op::CheckLease { key, token } => {
                let seen = match self.holder(*key) {
                    _ if self.bugs.stale_lease_check => LeaseSeen::Ours,
                    None => LeaseSeen::Missing,
                    Some(held) if held == *token => LeaseSeen::Ours,
                    Some(_) => LeaseSeen::Other,
                };
                (Reply::Lease(seen), None)
            }
            Op::Refresh { token, member } => {
                let interest = self.interest.entry(*token).or_default();
                interest.members.insert(*member, now + lease);
                interest.until = now + 2 * lease;
                (Reply::Done, None)
            }
            Op::Withdraw { token, member } => {
                if let Some(interest) = self.interest.get_mut(token) {
                    interest.members.remove(member);
                }
                (Reply::Done, None)
            }
        }
    }

    /// The fence of every leader call, taking a lost lease back when the flight has not ended.
    fn fence(&mut self, now: Millis, key: Key, token: Token) -> Fence {
        match self.leases.get(&key) {
            Some(lease) if lease.token == token => Fence::Held { holder: Some(token) },
            Some(lease) if self.bugs.skip_fence => Fence::Held { holder: Some(lease.token) },
            Some(_) => Fence::Fenced,
            None => {
                let ended = self.streams.get(&token).is_some_and(Stream::ended);
                if ended && !self.bugs.retake_after_end {
                    return Fence::Ended;
                }
                self.leases.insert(key, Lease { token, until: now + self.timings.lease });
                Fence::Held { holder: None }
            }
        }
    }
}
