//! The fleet's invariants, written once: the simulation calls these after every step, and
//! the proptest, the fuzz target and the planted-bug tests all read the same [`Violation`].
//!
//! Each check returns the first broken rule as a value (never panics), naming the invariant,
//! so that a planted bug's test can say which check caught it.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::store::{Applied, Key, Store};
use crate::fleet::{Ending, Entry, Lost, Millis, Timings};

/// The rules the simulation holds the fleet to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invariant {
    /// At most one writer per flight generation: a leader's write goes in only while its
    /// token holds the lease (or takes a missing one): a fenced-off leader never writes (R20).
    OneWriter,
    /// Every client's stream is a prefix of its flight's answer followed by exactly one end:
    /// the whole answer, the upstream's own failure after exactly the items before it, or an
    /// explicit fleet failure; never truncation, duplication, reordering, or no end (R14, R21).
    Streams,
    /// A failed (or given-up) answer never lingers: no lease stands on an ended-failed stream,
    /// so nobody joins it (R17).
    NoFailureLingers,
    /// A flight some replica's live interest is on is never given up (R22).
    NoJoinedAbandoned,
    /// With a healthy store (fault-free schedules) one upstream request per key at a time,
    /// and no fleet failure at all: nobody alone, no leader lost (R19).
    OneUpstream,
    /// No request waits on the store longer than its deadline to be placed (R23).
    Deadline,
    /// A store that lost a stream while its leader lives loses no answer: every stream is
    /// items 1..=n with no hole (the model never trims), so no reader is ever cut off with
    /// `Lost::Trimmed` (R25).
    StreamWhole,
    /// A follower of a lost leader (killed, or fenced off) ends within two leases of the loss,
    /// while the store is well and its own replica runs (R21).
    LeaderLoss,
    /// The simulation makes progress: machines end, deadlines move forward.
    Progress,
}

/// A broken invariant: which, when, and what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The rule.
    pub invariant: Invariant,
    /// The simulated time.
    pub at: Millis,
    /// What was seen.
    pub detail: String,
}

/// A client's end as it saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEnd {
    /// The whole answer.
    Done,
    /// The upstream's failure, as written.
    Failed(Vec<u8>),
    /// The fleet failed it.
    Lost(Lost),
    /// It went away itself.
    Cancelled,
}

/// What one client received, as the checks see it.
#[derive(Clone, Debug)]
pub struct Client {
    /// Its key.
    pub key: Key,
    /// Items received.
    pub items: u64,
    /// Its end.
    pub end: Option<ClientEnd>,
    /// Its replica was killed: its stream just stopped, with nobody to tell.
    pub killed: bool,
}

/// Item `n` (from 1) of `key`'s answer: every upstream run of a key gives the same items,
/// each naming its key and place, so a mixed, duplicated or reordered item is seen.
pub fn item(key: Key, n: u64) -> Vec<u8> {
    let n = n.to_le_bytes();
    alloc::vec![0xA5, key, n[0], n[1]]
}

/// The upstream's failure of `key` after `m` items: it names how many came before it.
pub fn failure(key: Key, m: u64) -> Vec<u8> {
    let m = m.to_le_bytes();
    alloc::vec![0xEE, key, m[0], m[1]]
}

/// The checks, with what they need to know about the schedule.
#[derive(Clone, Debug)]
pub struct Checker {
    timings: Timings,
    answers: Vec<u64>,
    fault_free: bool,
}

type Checked = Result<(), Violation>;

fn broken(invariant: Invariant, at: Millis, detail: String) -> Checked {
    Err(Violation { invariant, at, detail })
}

impl Checker {
    /// For a schedule with these answers; `fault_free` holds it to [`Invariant::OneUpstream`].
    pub fn new(timings: Timings, answers: Vec<u64>, fault_free: bool) -> Checker {
        Checker { timings, answers, fault_free }
    }

    /// Whether the schedule is fault-free.
    pub fn fault_free(&self) -> bool {
        self.fault_free
    }

    /// What the store applied: one writer, no joined flight given up.
    pub fn applied(&self, now: Millis, log: &[Applied]) -> Checked {
        for applied in log {
            match *applied {
                Applied::Write { key, token, holder } if holder.is_some_and(|h| h != token) => {
                    return broken(
                        Invariant::OneWriter,
                        now,
                        format!("key {key}: token {token} wrote while token {holder:?} held the lease"),
                    );
                }
                Applied::Abandoned { key, token, live } if live > 0 => {
                    return broken(
                        Invariant::NoJoinedAbandoned,
                        now,
                        format!("key {key}: flight {token} given up with {live} replicas' interest live"),
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The store's state: no failure lingers, no stream has a hole.
    pub fn store(&self, now: Millis, store: &Store) -> Checked {
        for (key, token, end) in store.leases_with_ends() {
            if matches!(end, Some(Ending::Failed(_) | Ending::Abandoned)) {
                return broken(
                    Invariant::NoFailureLingers,
                    now,
                    format!("key {key}: the lease stands on flight {token}, which ended {end:?}"),
                );
            }
        }
        for (token, entries) in store.streams() {
            for (i, (number, entry)) in entries.iter().enumerate() {
                let last = i + 1 == entries.len();
                if *number != i as u64 + 1 || (matches!(entry, Entry::End(_)) && !last) {
                    return broken(
                        Invariant::StreamWhole,
                        now,
                        format!("stream {token}: entry {} is numbered {number} ({entry:?})", i + 1),
                    );
                }
            }
        }
        Ok(())
    }

    /// A client receives an item.
    pub fn item(&self, now: Millis, id: usize, client: &mut Client, bytes: &[u8]) -> Checked {
        if let Some(end) = &client.end {
            return broken(Invariant::Streams, now, format!("client {id}: an item after its end {end:?}"));
        }
        client.items += 1;
        let expected = item(client.key, client.items);
        if bytes != expected.as_slice() {
            return broken(
                Invariant::Streams,
                now,
                format!(
                    "client {id} (key {}): item {} is {bytes:?}, not {expected:?}",
                    client.key, client.items
                ),
            );
        }
        Ok(())
    }

    /// A client receives its end.
    pub fn end(&self, now: Millis, id: usize, client: &mut Client, end: ClientEnd) -> Checked {
        if let Some(first) = &client.end {
            return broken(
                Invariant::Streams,
                now,
                format!("client {id}: a second end {end:?} after {first:?}"),
            );
        }
        let whole = self.answers.get(usize::from(client.key)).copied().unwrap_or(0);
        let items = client.items;
        let wrong = match &end {
            ClientEnd::Done => (items != whole).then(|| format!("Done after {items} of {whole} items")),
            ClientEnd::Failed(error) => (*error != failure(client.key, items))
                .then(|| format!("Failed({error:?}) after {items} items: not the upstream's failure there")),
            ClientEnd::Lost(Lost::Trimmed) => {
                return broken(
                    Invariant::StreamWhole,
                    now,
                    format!("client {id}: cut off (Trimmed) after {items}"),
                );
            }
            ClientEnd::Lost(_) if self.fault_free => {
                return broken(
                    Invariant::OneUpstream,
                    now,
                    format!("client {id}: {end:?} with a healthy store"),
                );
            }
            ClientEnd::Lost(_) | ClientEnd::Cancelled => None,
        };
        client.end = Some(end);
        match wrong {
            Some(detail) => {
                broken(Invariant::Streams, now, format!("client {id} (key {}): {detail}", client.key))
            }
            None => Ok(()),
        }
    }

    /// Every client that was not killed has its end once the simulation is over.
    pub fn ended(&self, now: Millis, clients: &[Client]) -> Checked {
        for (id, client) in clients.iter().enumerate() {
            if client.end.is_none() && !client.killed {
                return broken(
                    Invariant::Streams,
                    now,
                    format!("client {id} (key {}): no end after {} items", client.key, client.items),
                );
            }
        }
        Ok(())
    }

    /// A flight was placed (`Open` decided) `waited` ms after it was opened; `paused`: its
    /// replica was stopped meanwhile (nothing it could do).
    pub fn placed(&self, now: Millis, key: Key, waited: Millis, paused: bool) -> Checked {
        if waited > self.timings.deadline && !paused {
            return broken(
                Invariant::Deadline,
                now,
                format!("key {key}: placed after {waited} ms, past the deadline {}", self.timings.deadline),
            );
        }
        Ok(())
    }

    /// A follower of `key` still follows `waited` ms after its leader was lost; `excused`:
    /// the store failed or its replica stopped meanwhile.
    pub fn leader_loss(&self, now: Millis, key: Key, waited: Millis, excused: bool) -> Checked {
        if waited > 2 * self.timings.lease && !excused {
            return broken(
                Invariant::LeaderLoss,
                now,
                format!("key {key}: a follower still follows {waited} ms after its leader was lost"),
            );
        }
        Ok(())
    }

    /// An upstream request starts for `key` (`alone`: outside the fleet) while `live` others
    /// of the key run for the fleet.
    pub fn upstream(&self, now: Millis, key: Key, alone: bool, live: usize) -> Checked {
        if self.fault_free && (alone || live > 0) {
            return broken(
                Invariant::OneUpstream,
                now,
                format!(
                    "key {key}: an upstream request ({}) beside {live} live",
                    if alone { "alone" } else { "led" }
                ),
            );
        }
        Ok(())
    }

    /// The fleet gave a flight up (`what`): with a healthy store it never should.
    pub fn fleet_failed(&self, now: Millis, what: &str) -> Checked {
        if self.fault_free {
            return broken(Invariant::OneUpstream, now, format!("{what} with a healthy store"));
        }
        Ok(())
    }
}
