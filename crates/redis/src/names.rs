//! Where a flight lives in the store: every key is derived from the SHA-256 of the flight
//! key, never from the key itself (R24), and all of one flight's keys share one hash slot.
//! With the names goes the flight's seal (`seal.rs`): what is stored under them is sealed.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::seal::{Kind, Seal, Secret};

/// The store's keys of one flight key, on one fleet, and the key that seals its entries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Names {
    /// `<prefix>{<sha256 hex>}:`: the braces keep a flight's keys in one Redis Cluster slot,
    /// which its scripts need.
    base: String,
    /// The flight's key for its entries, derived from the same key bytes (never shown).
    seal: Seal,
}

impl Names {
    /// The names for a key whose identity is `key` (the codec's bytes), under `prefix`, with
    /// its seal in the fleet of `secret`.
    pub(crate) fn new(prefix: &str, secret: &Secret, key: &[u8]) -> Names {
        Names { base: hashed(prefix, key), seal: Seal::flight(secret, key) }
    }

    /// The names under `base`, as [`Names::base`] gave it, with the seal
    /// [`Names::seal_key`] gave.
    pub(crate) fn from_base(base: String, seal: Seal) -> Names {
        Names { base, seal }
    }

    /// A note's key: its name hashed too.
    pub(crate) fn note(prefix: &str, name: &[u8]) -> String {
        format!("{}note", hashed(prefix, name))
    }

    /// `plain` sealed as an entry of `kind` of the flight led under `token` (bound to this
    /// flight's names and that token). Should it not be sealable (no random source), an entry
    /// that never opens: nothing is ever stored in clear.
    pub(crate) fn seal(&self, kind: Kind, token: &str, plain: &[u8]) -> Vec<u8> {
        self.seal.seal(kind, &[self.base.as_bytes(), token.as_bytes()], plain).unwrap_or_else(|| {
            tracing::warn!("an entry could not be sealed (no random source?): stored unreadable");
            Vec::new()
        })
    }

    /// The plain text of an entry of `kind` of the flight led under `token`, if it is one
    /// that [`Names::seal`] made for them; `None` for anything else (altered, another's).
    pub(crate) fn open(&self, kind: Kind, token: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        self.seal.open(kind, &[self.base.as_bytes(), token.as_bytes()], sealed)
    }

    /// The flight's seal, for its [`Place`](crate::Place).
    pub(crate) fn seal_key(&self) -> &Seal {
        &self.seal
    }

    /// The lease: whoever holds it leads the key's flight; its value, the token, names the
    /// flight's stream and interest.
    pub(crate) fn lease(&self) -> String {
        format!("{}lease", self.base)
    }

    /// The items of the flight led under `token`.
    pub(crate) fn items(&self, token: &str) -> String {
        format!("{}{token}:items", self.base)
    }

    /// The interest in the flight led under `token`: one member per replica.
    pub(crate) fn interest(&self, token: &str) -> String {
        format!("{}{token}:interest", self.base)
    }

    /// What [`Names::items`] and [`Names::interest`] start with, for the scripts that learn
    /// the token in the store.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }
}

/// `<prefix>{<sha256 hex of key>}:`.
fn hashed(prefix: &str, key: &[u8]) -> String {
    let digest = Sha256::digest(key);
    let mut base = String::with_capacity(prefix.len() + 68);
    base.push_str(prefix);
    base.push('{');
    for byte in digest {
        let _ = write!(base, "{byte:02x}");
    }
    base.push_str("}:");
    base
}

#[cfg(test)]
mod tests {
    use super::Names;
    use crate::seal::Secret;

    #[test]
    fn no_key_text_reaches_the_store_and_every_name_shares_one_slot() {
        let new = |prefix: &str, key: &[u8]| Names::new(prefix, &Secret::default(), key);
        let names = new("sf:", b"the prompt, with a secret in it");
        for name in [names.lease(), names.items("t0k"), names.interest("t0k")] {
            assert!(!name.contains("prompt") && !name.contains("secret"), "{name}");
            assert!(name.starts_with("sf:{") && name.contains("}:"), "{name}");
            assert_eq!(name.split('{').nth(1).unwrap().split('}').next().unwrap().len(), 64);
        }
        assert_ne!(new("sf:", b"a").lease(), new("sf:", b"b").lease());
        assert_eq!(new("sf:", b"a").lease(), new("sf:", b"a").lease());
    }
}
