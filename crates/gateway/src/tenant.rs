//! Who a client is (G5): its tenant, an HMAC-SHA256 of its credentials keyed with the fleet's
//! secret, so that a tenant seen in the store or a log cannot be tied back to a credential.
//!
//! A plain SHA-256 of an API key can be checked against any key one holds or guesses; an HMAC
//! under a secret the store never sees cannot. Every replica of a fleet must compute the same
//! tenant for the same credentials (a client resumes or cancels on any of them), hence one
//! secret for the fleet (`--fleet-secret`, required with `--redis`); a gateway alone draws a
//! random one at start, as its tenants never leave the process.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::HeaderMap;
use ring::hmac;

use crate::http::headers::CREDENTIALS;

/// What the tenant key is derived from the fleet's secret with: a key of its own, apart from
/// those the store's seals derive from the same secret.
const TENANT: &[u8] = b"streamflight/tenant/v1";

/// The fewest bytes a fleet secret may have: 128 bits, written as text.
pub(crate) const SECRET_MIN: usize = 16;

/// Credentials longer than this (every credential header, named) are hashed without the
/// cache: an API key is tens of bytes.
const CACHED_INPUT: usize = 512;

/// How many credentials each thread remembers the tenant of.
const CACHED: usize = 4;

/// Names tenants: the HMAC key that credentials are hashed with. Never shown.
pub(crate) struct Tenants {
    key: hmac::Key,
    /// Which `Tenants` this is, in the threads' caches (tests make many, with other keys).
    id: u64,
}

/// A credential a thread hashed lately, and its tenant.
struct Seen {
    tenants: u64,
    input: Box<[u8]>,
    tenant: [u8; 32],
}

thread_local! {
    /// The last credentials this thread hashed: most requests come with one of a few keys, and
    /// a tenant is three SHA-256 blocks (2.4% of a unique request's instructions, issue 26).
    static SEEN: RefCell<Vec<Seen>> = const { RefCell::new(Vec::new()) };
}

/// What a tenant is the HMAC of, in pieces: every credential header of `headers`, in a fixed
/// order, each name and value followed by a NUL.
fn input(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    CREDENTIALS.iter().flat_map(move |name| {
        headers
            .get_all(*name)
            .into_iter()
            .flat_map(move |value| [name.as_bytes(), &[0], value.as_bytes(), &[0]])
    })
}

/// Whether `a` and `b` are equal, in a time that does not depend on where they differ: a
/// request's credentials are compared with other clients' here.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |differ, (x, y)| differ | (x ^ y)) == 0
}

impl fmt::Debug for Tenants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tenants(..)")
    }
}

impl Tenants {
    /// Tenants keyed by the fleet's `secret`: the same on every replica that has it.
    pub(crate) fn keyed(secret: &[u8]) -> Tenants {
        let derived = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), TENANT);
        static IDS: AtomicU64 = AtomicU64::new(0);
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        Tenants { key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()), id }
    }

    /// Tenants keyed by a random secret of this process's own (a gateway without a fleet); an
    /// error (one line) if the system has no random source.
    pub(crate) fn random() -> Result<Tenants, String> {
        let mut secret = [0; 32];
        getrandom::fill(&mut secret).map_err(|e| format!("no random source for the tenants' key: {e}"))?;
        Ok(Tenants::keyed(&secret))
    }

    /// The tenant of a request with `headers`: the HMAC of every credential header, in a fixed
    /// order, each name and value followed by a NUL. A client without credentials is a tenant
    /// of its own kind: the empty one.
    pub(crate) fn of(&self, headers: &HeaderMap) -> [u8; 32] {
        let mut buf = [0; CACHED_INPUT];
        let mut len = 0;
        for part in input(headers) {
            let Some(room) = buf.get_mut(len..len + part.len()) else { return self.hashed(headers) };
            room.copy_from_slice(part);
            len += part.len();
        }
        let input = &buf[..len];
        SEEN.with_borrow_mut(|seen| {
            if let Some(hit) = seen.iter().find(|s| s.tenants == self.id && same(&s.input, input)) {
                return hit.tenant;
            }
            let mut tenant = [0; 32];
            tenant.copy_from_slice(hmac::sign(&self.key, input).as_ref());
            if seen.len() == CACHED {
                seen.remove(0);
            }
            seen.push(Seen { tenants: self.id, input: input.into(), tenant });
            tenant
        })
    }

    /// [`Tenants::of`] without the cache, for credentials too long for it.
    fn hashed(&self, headers: &HeaderMap) -> [u8; 32] {
        let mut context = hmac::Context::with_key(&self.key);
        for part in input(headers) {
            context.update(part);
        }
        let mut tenant = [0; 32];
        tenant.copy_from_slice(context.sign().as_ref());
        tenant
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderName, HeaderValue};
    use sha2::{Digest, Sha256};

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    #[test]
    fn a_tenant_is_its_credentials_keyed_by_the_fleet() {
        let tenants = Tenants::keyed(b"the fleet's secret");
        let (a, b) = (map(&[("authorization", "Bearer a")]), map(&[("authorization", "Bearer b")]));
        assert_ne!(tenants.of(&a), tenants.of(&b));
        let azure = map(&[("api-key", "Bearer a")]);
        assert_ne!(
            tenants.of(&a),
            tenants.of(&azure),
            "the same text in another header is another credential"
        );
        let other = map(&[("authorization", "Bearer a"), ("user-agent", "x")]);
        assert_eq!(tenants.of(&a), tenants.of(&other), "only credentials count");
        // Every replica with the secret agrees; one without it, or a process of its own, not.
        assert_eq!(tenants.of(&a), Tenants::keyed(b"the fleet's secret").of(&a));
        assert_ne!(tenants.of(&a), Tenants::keyed(b"another secret").of(&a));
        assert_ne!(tenants.of(&a), Tenants::random().unwrap().of(&a));
        // No longer the plain hash that anyone holding the key could check.
        let plain: [u8; 32] = Sha256::digest(b"authorization\0Bearer a\0").into();
        assert_ne!(tenants.of(&a), plain);
        assert!(!format!("{tenants:?}").contains("secret"));
    }

    #[test]
    fn a_remembered_tenant_is_the_one_the_hash_gives() {
        let (one, two) = (Tenants::keyed(b"one fleet's secret"), Tenants::keyed(b"another fleet's secret"));
        let long = format!("Bearer {}", "k".repeat(CACHED_INPUT));
        let mut maps: Vec<HeaderMap> =
            (0..2 * CACHED).map(|i| map(&[("authorization", &format!("Bearer {i}"))])).collect();
        maps.extend([
            map(&[("authorization", &long)]),
            map(&[]),
            map(&[("authorization", "a"), ("api-key", "b")]),
        ]);
        // Twice over, through two keys: hits, misses and evictions, none crossing keys.
        for _ in 0..2 {
            for headers in &maps {
                for tenants in [&one, &two] {
                    assert_eq!(tenants.of(headers), tenants.hashed(headers));
                }
            }
        }
        assert_ne!(one.of(&maps[0]), two.of(&maps[0]));
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
    }
}
