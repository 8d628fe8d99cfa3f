//! A fleet simulation's schedule: the fleet's shape and what happens when, decoded from any
//! bytes (a fuzzer's, proptest's, or a seed's), so that every byte string is a valid schedule.

use alloc::vec::Vec;

use super::store::{Key, Replica};
use crate::fleet::{Millis, Timings};

/// The lease of every simulated fleet, in ms (a third of it: the deadline's bound).
pub const LEASE: Millis = 300;

/// Something that happens to the fleet at a point of a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A client asks `replica` for `key`.
    Request {
        /// Where.
        replica: Replica,
        /// What.
        key: Key,
    },
    /// A client (by index among those so far, modulo) goes away.
    Cancel {
        /// Which.
        client: u8,
    },
    /// The store refuses every call for a while.
    Down {
        /// How long.
        ms: Millis,
    },
    /// The store takes calls but answers none for a while (SIGSTOP); it applies them after.
    Hung {
        /// How long.
        ms: Millis,
    },
    /// `FLUSHALL`.
    Flush,
    /// The store restarts empty: down for a while, then back with nothing.
    Restart {
        /// How long it is down.
        ms: Millis,
    },
    /// Calls apply but their replies are lost, for a while.
    LoseReplies {
        /// How long.
        ms: Millis,
    },
    /// A replica stops (SIGSTOP) for a while: its machines get no input, then catch up.
    Pause {
        /// Which.
        replica: Replica,
        /// How long.
        ms: Millis,
    },
    /// A replica is told to stop (SIGTERM): it takes no new client and serves on for `ms`,
    /// then ends its clients' streams with an explicit failure and exits (its leaders vanish).
    Stop {
        /// Which.
        replica: Replica,
        /// Its grace.
        ms: Millis,
    },
    /// A replica is killed: its leaders vanish, its clients are gone.
    Kill {
        /// Which.
        replica: Replica,
    },
    /// A flight's lease lapses now.
    ExpireLease {
        /// Whose.
        key: Key,
    },
    /// A client of a killed replica comes back on `replica` and resumes its stream from the
    /// items it had (R18 across replicas): it follows the flight it was on.
    Resume {
        /// Which (by index among those so far, modulo).
        client: u8,
        /// Where.
        replica: Replica,
    },
}

impl Event {
    /// Whether it is a fault (anything but a client coming, going or resuming).
    pub fn is_fault(&self) -> bool {
        !matches!(self, Event::Request { .. } | Event::Cancel { .. } | Event::Resume { .. })
    }
}

/// A whole schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// How many replicas (2 to 4).
    pub replicas: u8,
    /// How many distinct keys (1 to 3).
    pub keys: u8,
    /// The fleet's timings.
    pub timings: Timings,
    /// Each key's answer length in items (every upstream run of a key gives the same items).
    pub answers: Vec<u64>,
    /// The seed of everything the schedule leaves to chance (latencies, upstream pacing).
    pub seed: u64,
    /// Whether an upstream may fail part way (one in four does); off in scenarios that
    /// count whole answers.
    pub upstream_failures: bool,
    /// What happens, at which time, in order.
    pub events: Vec<(Millis, Event)>,
}

/// Reads bytes, giving zeros once they run out.
struct Bytes<'a> {
    data: &'a [u8],
}

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&byte, rest)) => {
                self.data = rest;
                byte
            }
            None => 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl Schedule {
    /// The schedule these bytes say. Schedules with `faults` off keep only requests and
    /// cancels: those are the fault-free schedules, held to one upstream request per key.
    pub fn from_bytes(data: &[u8]) -> Schedule {
        let mut bytes = Bytes { data };
        let replicas = 2 + bytes.next() % 3;
        let keys = 1 + bytes.next() % 3;
        let shape = bytes.next();
        let faults = !shape.is_multiple_of(3);
        let linger = if shape & 0x10 != 0 { 2 * LEASE / 3 } else { 0 };
        let timings = Timings { lease: LEASE, deadline: LEASE / 6, linger };
        let answers = (0..keys).map(|_| 1 + u64::from(bytes.next() % 40)).collect();
        let seed = u64::from_le_bytes([0; 8].map(|_| bytes.next()));
        let mut events = Vec::new();
        let mut at: Millis = 0;
        while !bytes.is_empty() && events.len() < 48 {
            at += Millis::from(bytes.next() % 64);
            let (kind, a, b) = (bytes.next(), bytes.next(), bytes.next());
            let replica = a % replicas;
            let ms = 20 + 10 * Millis::from(b % 48);
            // Clients come and go more often than things break: a fault in four events.
            let event = match kind % 32 {
                0..=14 | 31 => Event::Request { replica, key: b % keys },
                30 => Event::Stop { replica, ms },
                15..=18 => Event::Cancel { client: a },
                19 | 20 => Event::Resume { client: a, replica: b % replicas },
                21 => Event::Down { ms },
                22 => Event::Hung { ms },
                23 => Event::Flush,
                24 => Event::Restart { ms },
                25 => Event::LoseReplies { ms },
                26 | 27 => Event::Pause { replica, ms },
                28 => Event::Kill { replica },
                _ => Event::ExpireLease { key: b % keys },
            };
            if faults || !event.is_fault() {
                events.push((at, event));
            }
        }
        Schedule { replicas, keys, timings, answers, seed, upstream_failures: true, events }
    }

    /// Whether any event is a fault.
    pub fn has_faults(&self) -> bool {
        self.events.iter().any(|(_, event)| event.is_fault())
    }
}

/// A small deterministic generator (SplitMix64): the simulation's only source of chance.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// `count` random bytes: a random schedule's source.
    pub fn bytes(&mut self, count: usize) -> Vec<u8> {
        (0..count).map(|_| self.next_u64() as u8).collect()
    }
}
