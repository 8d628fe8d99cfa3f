//! The ids clients see (`x-request-id`) and the live coalesced requests behind them, each with
//! its tenant, so that only the tenant that made a request can cancel or resume it (G5).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use streamflight_tokio::{RequestId, Role};

/// The id a client sees in `x-request-id`: 128 random bits, shown as 32 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientId(u128);

impl ClientId {
    /// A fresh id from the operating system's random source.
    pub fn random() -> ClientId {
        let mut bytes = [0; 16];
        // Without a random source the process cannot make unguessable ids: a broken host.
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        ClientId(u128::from_le_bytes(bytes))
    }

    /// The id shown as `text`, if it is one (32 hex digits).
    pub fn parse(text: &str) -> Option<ClientId> {
        let hex = text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit());
        hex.then(|| u128::from_str_radix(text, 16).ok().map(ClientId)).flatten()
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Live coalesced requests by the id their client was shown.
#[derive(Debug, Default)]
pub struct Registry {
    live: Mutex<Table>,
}

/// The entries, and when each detached one's window ends, oldest first (one window for all:
/// the queue stays in order), so that forgetting them needs no timer of its own.
#[derive(Debug, Default)]
struct Table {
    entries: HashMap<ClientId, Entry>,
    expiries: VecDeque<(Instant, ClientId, u64)>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    request: RequestId,
    tenant: [u8; 32],
    /// What the stream's client asked for, for a resume to answer alike.
    include_usage: bool,
    /// Detached (its client lost its connection): which detach, so that the window's end
    /// forgets only that one (R18).
    detached: Option<u64>,
}

/// A live request found for its tenant.
#[derive(Clone, Copy, Debug)]
pub struct Found {
    /// The library's request.
    pub request: RequestId,
    /// `stream_options.include_usage` of its client.
    pub include_usage: bool,
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
        table
    }

    /// Records a live request of `tenant` (or its resumed stream).
    pub fn insert(&self, id: ClientId, request: RequestId, tenant: [u8; 32], include_usage: bool) {
        self.live().entries.insert(id, Entry { request, tenant, include_usage, detached: None });
    }

    /// Forgets a request that ended or whose client left.
    pub fn remove(&self, id: ClientId) {
        self.live().entries.remove(&id);
    }

    /// The request shown as `id`, if it is live and `tenant`'s; anyone else learns nothing.
    pub fn find(&self, id: ClientId, tenant: &[u8; 32]) -> Option<Found> {
        let table = self.live();
        let entry = table.entries.get(&id).filter(|entry| &entry.tenant == tenant)?;
        Some(Found { request: entry.request, include_usage: entry.include_usage })
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
pub struct Live {
    registry: Arc<Registry>,
    id: ClientId,
    role: Role,
    ended: bool,
    /// Detached: the entry outlives this guard, until the resume window passes.
    kept: bool,
    /// Told the window when the request is detached (to leave a note for other replicas).
    detached: Option<OnDetach>,
}

/// What a [`Live`] does when its request is detached, besides keeping its entry.
pub type OnDetach = Box<dyn FnOnce(Duration) + Send + Sync>;

impl Live {
    /// Records `request` of `tenant` as live under `id` until the returned guard drops.
    pub fn enter(
        registry: Arc<Registry>,
        id: ClientId,
        request: RequestId,
        role: Role,
        tenant: [u8; 32],
        include_usage: bool,
    ) -> Live {
        registry.insert(id, request, tenant, include_usage);
        Live { registry, id, role, ended: false, kept: false, detached: None }
    }

    /// Calls `hook` with the window if the request is detached.
    pub fn on_detach(mut self, hook: OnDetach) -> Live {
        self.detached = Some(hook);
        self
    }

    /// The client lost its connection and its request was detached (R18): the entry stays,
    /// for a resume, until `window` passes (the library lets the request go then too).
    pub fn detach(mut self, window: Duration) {
        self.ended = true;
        tracing::info!(request_id = %self.id, role = ?self.role, "client went away: detached");
        self.registry.detach(self.id, window);
        self.kept = true;
        if let Some(hook) = self.detached.take() {
            hook(window);
        }
    }

    /// The request got its end (`outcome` says which, for the log).
    pub fn ended(&mut self, outcome: &dyn fmt::Display) {
        self.ended = true;
        tracing::info!(request_id = %self.id, role = ?self.role, %outcome, "ended");
    }
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live").field("id", &self.id).field("role", &self.role).finish_non_exhaustive()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if !self.kept {
            self.registry.remove(self.id);
        }
        if !self.ended {
            tracing::info!(request_id = %self.id, role = ?self.role, "client went away");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_refuse_anything_else() {
        let id = ClientId::random();
        assert_eq!(ClientId::parse(&id.to_string()), Some(id));
        assert_ne!(ClientId::random(), id);
        assert_eq!(ClientId::parse("xyz"), None);
        assert_eq!(ClientId::parse(&"g".repeat(32)), None);
        assert_eq!(ClientId::parse(&"+1".repeat(16)), None);
    }
}
