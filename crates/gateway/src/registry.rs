//! The ids clients see (`x-request-id`) and the live coalesced requests behind them, each with
//! its tenant, so that only the tenant that made a request can cancel it (G5).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

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
    live: Mutex<HashMap<ClientId, Entry>>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    request: RequestId,
    tenant: [u8; 32],
}

impl Registry {
    fn live(&self) -> MutexGuard<'_, HashMap<ClientId, Entry>> {
        // The map holds plain data: a panic elsewhere cannot leave it half-changed.
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a live request of `tenant`.
    pub fn insert(&self, id: ClientId, request: RequestId, tenant: [u8; 32]) {
        self.live().insert(id, Entry { request, tenant });
    }

    /// Forgets a request that ended or whose client left.
    pub fn remove(&self, id: ClientId) {
        self.live().remove(&id);
    }

    /// The request shown as `id`, if it is live and `tenant`'s; anyone else learns nothing.
    pub fn find(&self, id: ClientId, tenant: &[u8; 32]) -> Option<RequestId> {
        self.live().get(&id).filter(|entry| &entry.tenant == tenant).map(|entry| entry.request)
    }
}

/// A live request's place in the registry: leaves it when dropped (the request ended or its
/// client left), and logs how the request ended.
#[derive(Debug)]
pub struct Live {
    registry: Arc<Registry>,
    id: ClientId,
    role: Role,
    ended: bool,
}

impl Live {
    /// Records `request` of `tenant` as live under `id` until the returned guard drops.
    pub fn enter(
        registry: Arc<Registry>,
        id: ClientId,
        request: RequestId,
        role: Role,
        tenant: [u8; 32],
    ) -> Live {
        registry.insert(id, request, tenant);
        Live { registry, id, role, ended: false }
    }

    /// The request got its end (`outcome` says which, for the log).
    pub fn ended(&mut self, outcome: &dyn fmt::Display) {
        self.ended = true;
        tracing::info!(request_id = %self.id, role = ?self.role, %outcome, "ended");
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.registry.remove(self.id);
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
