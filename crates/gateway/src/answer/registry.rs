//! The ids clients see (`x-request-id`) and the live coalesced requests behind them, each with
//! its tenant, so that only the tenant that made a request can cancel or resume it (G5); and the
//! answers the gateway holds by the API's own id (a Responses `resp_…`), for the API's resume.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use streamflight_tokio::{RequestId, Role};

use crate::dialect::Api;
use crate::http::access::{Outcome, Record};
use crate::key::Key;

/// The id a client sees in `x-request-id`: 128 random bits, shown as 32 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ClientId(u128);

impl ClientId {
    /// A fresh id from the operating system's random source, read for [`IDS_PER_READ`] ids
    /// at a time by each thread: a `getrandom` call per request was one of its system calls.
    pub(crate) fn random() -> ClientId {
        RANDOM.with_borrow_mut(|random| {
            if random.next == IDS_PER_READ {
                // Without a random source the process cannot make unguessable ids: a broken host.
                getrandom::fill(&mut random.bytes).expect("the operating system's random source");
                random.next = 0;
            }
            let at = random.next * 16;
            random.next += 1;
            let mut bytes = [0; 16];
            bytes.copy_from_slice(&random.bytes[at..at + 16]);
            ClientId(u128::from_le_bytes(bytes))
        })
    }

    /// Its 16 bytes, most significant first: their hex digits are its text.
    pub(crate) fn bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The id of these 16 bytes ([`bytes`](Self::bytes)).
    pub(crate) fn of_bytes(bytes: &[u8; 16]) -> Option<ClientId> {
        Some(ClientId(u128::from_be_bytes(*bytes)))
    }

    /// The id shown as `text`, if it is one (32 hex digits).
    pub(crate) fn parse(text: &str) -> Option<ClientId> {
        let hex = text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit());
        hex.then(|| u128::from_str_radix(text, 16).ok().map(ClientId)).flatten()
    }

    /// Its 32 lowercase hex digits, made without an allocation or the formatting machinery (a
    /// request writes them two or three times: its header, its access line, its log span).
    pub(crate) fn digits(self) -> Digits {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut digits = [0; 32];
        for (at, digit) in digits.iter_mut().enumerate() {
            let nibble = (self.0 >> (4 * (31 - at))) & 0xf;
            *digit = HEX[nibble as usize];
        }
        Digits(digits)
    }
}

/// Ids made from one read of the random source.
const IDS_PER_READ: usize = 64;

/// A thread's random bytes for its next ids, each id's 16 used once.
struct Random {
    bytes: [u8; 16 * IDS_PER_READ],
    /// The next id's index in `bytes`: [`IDS_PER_READ`] once they are all used.
    next: usize,
}

thread_local! {
    static RANDOM: std::cell::RefCell<Random> =
        const { std::cell::RefCell::new(Random { bytes: [0; 16 * IDS_PER_READ], next: IDS_PER_READ }) };
}

/// A [`ClientId`]'s 32 hex digits.
#[derive(Clone, Copy)]
pub(crate) struct Digits([u8; 32]);

impl Digits {
    /// The digits as text.
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits and letters were written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.digits().as_str())
    }
}

/// Live coalesced requests by the id their client was shown.
#[derive(Debug)]
pub(crate) struct Registry {
    live: Mutex<Table>,
}

/// The entries, and when each detached one's window ends, oldest first (one window for all:
/// the queue stays in order), so that forgetting them needs no timer of its own.
#[derive(Debug, Default)]
struct Table {
    entries: HashMap<ClientId, Entry>,
    expiries: VecDeque<(Instant, ClientId, u64)>,
    /// Answers by the API's own id, while a client reads them and for the window after.
    answers: HashMap<Box<str>, Answer>,
    /// When each answer nobody reads any more is forgotten, oldest first (with the `held` mark
    /// it had then: a later reader's leaving pushes a later expiry).
    answer_expiries: VecDeque<(Instant, Box<str>, u64)>,
    /// How long an answer nobody reads stays findable: the longer of the linger and the resume
    /// window (a flight that no longer lingers and has no detached client cannot be joined).
    answer_window: Duration,
}

/// An answer the gateway holds, by its API's id.
#[derive(Debug)]
struct Answer {
    tenant: [u8; 32],
    key: Key,
    /// Clients reading it now.
    readers: usize,
    /// How many times its last reader left: which expiry is the live one.
    left: u64,
    /// Its readers that were detached (their clients went away), newest last: one of them is
    /// resumed when the flight can no longer be joined.
    detached: Vec<ClientId>,
}

/// An answer found by its API's id.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The tenant's: its flight's key, to join it, and its detached readers, newest first.
    Yours(Key, Vec<ClientId>),
    /// Another tenant's: to be answered as unknown (G5).
    NotYours,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    request: RequestId,
    tenant: [u8; 32],
    /// Its API: how a resumed stream is written.
    api: Api,
    /// What the stream's client asked for, for a resume to answer alike.
    include_usage: bool,
    /// Detached (its client lost its connection): which detach, so that the window's end
    /// forgets only that one (R18).
    detached: Option<u64>,
    /// The answer's index of its local flight's first item: 0, but for a stream resumed
    /// from another replica's flight, whose local flight starts where the resume did.
    first: u64,
}

/// A live request found for its tenant.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Found {
    /// The library's request.
    pub request: RequestId,
    /// Its API.
    pub api: Api,
    /// `stream_options.include_usage` of its client.
    pub include_usage: bool,
    /// Whether its client lost its connection (R18): no one reads it here now.
    pub detached: bool,
    /// The answer's index of its local flight's first item (see [`Registry::starts_at`]).
    pub first: u64,
}

impl Registry {
    /// The table, with the detached entries whose window passed forgotten.
    fn live(&self) -> MutexGuard<'_, Table> {
        // The table holds plain data: a panic elsewhere cannot leave it half-changed.
        let mut table = self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        while let Some(&(end, id, mark)) = table.expiries.front() {
            if end > now {
                break;
            }
            table.expiries.pop_front();
            if table.entries.get(&id).is_some_and(|entry| entry.detached == Some(mark)) {
                table.entries.remove(&id);
            }
        }
        while let Some((end, _, _)) = table.answer_expiries.front() {
            if *end > now {
                break;
            }
            let Some((_, id, mark)) = table.answer_expiries.pop_front() else { break };
            if table.answers.get(&id).is_some_and(|answer| answer.readers == 0 && answer.left == mark) {
                table.answers.remove(&id);
            }
        }
        table
    }

    /// A registry whose answers stay findable for `answer_window` after their last reader left.
    pub(crate) fn new(answer_window: Duration) -> Registry {
        let table = Table { answer_window, ..Table::default() };
        Registry { live: Mutex::new(table) }
    }

    /// The answer the API names `id`, if the gateway holds it.
    pub(crate) fn answer(&self, id: &str, tenant: &[u8; 32]) -> Option<Claim> {
        let table = self.live();
        let answer = table.answers.get(id)?;
        Some(if &answer.tenant == tenant {
            Claim::Yours(answer.key.clone(), answer.detached.iter().rev().copied().collect())
        } else {
            Claim::NotYours
        })
    }

    /// A client of `tenant` reads the answer the API names `id`, of the flight of `key`.
    fn read_answer(&self, id: &str, tenant: [u8; 32], key: &Key) {
        let mut table = self.live();
        let answer = table.answers.entry(id.into()).or_insert_with(|| Answer {
            tenant,
            key: key.clone(),
            readers: 0,
            left: 0,
            detached: Vec::new(),
        });
        // An id is the upstream's: one that two tenants' flights both claim is nobody's to resume.
        if answer.tenant == tenant && &answer.key == key {
            answer.readers += 1;
        }
    }

    /// A reader of answer `id` left (ended, went away or, as `detached`, detached).
    fn leave_answer(&self, id: &str, detached: Option<ClientId>) {
        let mut table = self.live();
        let window = table.answer_window;
        let Some(answer) = table.answers.get_mut(id) else { return };
        if let Some(client) = detached {
            answer.detached.push(client);
        }
        answer.readers = answer.readers.saturating_sub(1);
        if answer.readers == 0 {
            answer.left += 1;
            let mark = answer.left;
            table.answer_expiries.push_back((Instant::now() + window, id.into(), mark));
        }
    }

    /// Records a live request of `tenant` (or its resumed stream).
    pub(crate) fn insert(
        &self,
        id: ClientId,
        request: RequestId,
        tenant: [u8; 32],
        api: Api,
        include_usage: bool,
    ) {
        let entry = Entry { request, tenant, api, include_usage, detached: None, first: 0 };
        self.live().entries.insert(id, entry);
    }

    /// The local flight of request `id` starts at the answer's item `first` (a stream resumed
    /// from another replica's flight): a later resume here reads from the local item that is
    /// the answer's item it asks for.
    pub(crate) fn starts_at(&self, id: ClientId, first: u64) {
        if let Some(entry) = self.live().entries.get_mut(&id) {
            entry.first = first;
        }
    }

    /// Forgets a request that ended or whose client left.
    pub(crate) fn remove(&self, id: ClientId) {
        self.live().entries.remove(&id);
    }

    /// The request shown as `id`, if it is live and `tenant`'s; anyone else learns nothing.
    pub(crate) fn find(&self, id: ClientId, tenant: &[u8; 32]) -> Option<Found> {
        let table = self.live();
        let entry = table.entries.get(&id).filter(|entry| &entry.tenant == tenant)?;
        let detached = entry.detached.is_some();
        let (request, api, include_usage, first) =
            (entry.request, entry.api, entry.include_usage, entry.first);
        Some(Found { request, api, include_usage, detached, first })
    }

    /// Marks `id` detached until `window` passes; then it is forgotten, unless resumed.
    fn detach(&self, id: ClientId, window: Duration) {
        static DETACHES: AtomicU64 = AtomicU64::new(0);
        let mark = DETACHES.fetch_add(1, Ordering::Relaxed);
        let mut table = self.live();
        let Some(entry) = table.entries.get_mut(&id) else { return };
        entry.detached = Some(mark);
        table.expiries.push_back((Instant::now() + window, id, mark));
    }
}

/// A live request's place in the registry: leaves it when dropped (the request ended or its
/// client left), and logs how the request ended.
pub(crate) struct Live {
    registry: Arc<Registry>,
    id: ClientId,
    tenant: [u8; 32],
    ended: bool,
    /// Detached: the entry outlives this guard, until the resume window passes.
    kept: bool,
    /// Told how this reader of the request leaves it (to leave a note for other replicas).
    leaving: Option<OnLeave>,
    /// Where the request's end is recorded, for its one log line.
    record: Arc<Record>,
    /// The answer's id in its API, once known, while this client reads it.
    answer: Option<Box<str>>,
}

/// Who asked a live request, and for what.
pub(crate) struct Asked {
    /// The tenant.
    pub tenant: [u8; 32],
    /// The API.
    pub api: Api,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// Its record, for its log line.
    pub record: Arc<Record>,
}

/// How a [`Live`] left its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Leaving {
    /// Its client lost its connection: the request is detached for this window (R18).
    Detached(Duration),
    /// The request ended, was cancelled, or its client left with no window to come back in.
    Gone,
}

/// What a [`Live`] does when it leaves its request, besides keeping or dropping its entry.
pub(crate) type OnLeave = Box<dyn FnOnce(Leaving) + Send + Sync>;

impl Live {
    /// Records `request` of `tenant` as live under `id` until the returned guard drops.
    pub(crate) fn enter(
        registry: Arc<Registry>,
        id: ClientId,
        request: RequestId,
        role: Role,
        asked: Asked,
    ) -> Live {
        let Asked { tenant, api, include_usage, record } = asked;
        registry.insert(id, request, tenant, api, include_usage);
        record.role(role);
        Live { registry, id, tenant, ended: false, kept: false, leaving: None, record, answer: None }
    }

    /// The answer this client reads is named `answer` by its API (its flight's key is `key`):
    /// findable by that id while the client reads it, and for the window after.
    pub(crate) fn names(&mut self, answer: Box<str>, key: &Key) {
        if self.answer.is_none() {
            self.registry.read_answer(&answer, self.tenant, key);
            self.answer = Some(answer);
        }
    }

    /// The id its client sees.
    pub(crate) fn id(&self) -> ClientId {
        self.id
    }

    /// The record of this request's end.
    pub(crate) fn record(&self) -> &Record {
        &self.record
    }

    /// Calls `hook` once, when this guard leaves its request: detached (with the window) or
    /// gone (ended, cancelled, or its client left with no window).
    pub(crate) fn on_leave(mut self, hook: OnLeave) -> Live {
        self.leaving = Some(hook);
        self
    }

    /// The client lost its connection and its request was detached (R18): the entry stays,
    /// for a resume, until `window` passes (the library lets the request go then too).
    pub(crate) fn detach(mut self, window: Duration) {
        self.ended = true;
        self.record.end(Outcome::Detached, None);
        self.registry.detach(self.id, window);
        self.kept = true;
        if let Some(hook) = self.leaving.take() {
            hook(Leaving::Detached(window));
        }
    }

    /// The request got its end: `outcome`, and `why` when it did not end well (its log line).
    pub(crate) fn ended(&mut self, outcome: Outcome, why: Option<Cow<'static, str>>) {
        self.ended = true;
        self.record.end(outcome, why);
    }
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if !self.kept {
            self.registry.remove(self.id);
            if let Some(hook) = self.leaving.take() {
                hook(Leaving::Gone);
            }
        }
        if let Some(answer) = self.answer.take() {
            self.registry.leave_answer(&answer, self.kept.then_some(self.id));
        }
        if !self.ended {
            self.record.end(Outcome::Cancelled, Some(Cow::Borrowed("client went away")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_shows_as_its_32_hex_digits_and_reads_back() {
        for raw in [0, 1, 0xabc, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210] {
            let id = ClientId(raw);
            assert_eq!(id.digits().as_str(), format!("{raw:032x}"));
            assert_eq!(ClientId::parse(id.digits().as_str()), Some(id));
        }
    }

    #[test]
    fn ids_round_trip_and_refuse_anything_else() {
        let id = ClientId::random();
        assert_eq!(ClientId::parse(&id.to_string()), Some(id));
        assert_ne!(ClientId::random(), id);
        assert_eq!(ClientId::parse("xyz"), None);
        assert_eq!(ClientId::parse(&"g".repeat(32)), None);
        assert_eq!(ClientId::parse(&"+1".repeat(16)), None);
    }

    #[test]
    fn ids_from_several_reads_of_the_random_source_all_differ() {
        let ids: std::collections::HashSet<_> = (0..3 * IDS_PER_READ).map(|_| ClientId::random()).collect();
        assert_eq!(ids.len(), 3 * IDS_PER_READ);
        assert!(!ids.contains(&ClientId(0)), "no id is the buffer's zeroes");
    }
}
