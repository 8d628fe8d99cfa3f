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

    /// Item `number` (from 1) of the flight led under `token`, sealed: bound to this flight's
    /// names, that token and its place in the stream. Should it not be sealable (no random
    /// source), an entry that never opens: nothing is ever stored in clear.
    pub(crate) fn seal_item(&self, token: &str, number: u64, plain: &[u8]) -> Vec<u8> {
        self.sealed(Kind::Item, &[self.base.as_bytes(), token.as_bytes(), &number.to_be_bytes()], plain)
    }

    /// The plain text of item `number` of the flight led under `token`, if `sealed` is what
    /// [`Names::seal_item`] made for them; `None` for anything else (altered, moved,
    /// another flight's).
    pub(crate) fn open_item(&self, token: &str, number: u64, sealed: &[u8]) -> Option<Vec<u8>> {
        self.seal.open(Kind::Item, &[self.base.as_bytes(), token.as_bytes(), &number.to_be_bytes()], sealed)
    }

    /// The end (`ending.rs`'s bytes) of the flight led under `token`, sealed: bound to this
    /// flight's names and that token, so that no one can end a flight but its leader.
    pub(crate) fn seal_end(&self, token: &str, plain: &[u8]) -> Vec<u8> {
        self.sealed(Kind::End, &[self.base.as_bytes(), token.as_bytes()], plain)
    }

    /// The plain end of the flight led under `token`, if `sealed` is what
    /// [`Names::seal_end`] made for them.
    pub(crate) fn open_end(&self, token: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        self.seal.open(Kind::End, &[self.base.as_bytes(), token.as_bytes()], sealed)
    }

    fn sealed(&self, kind: Kind, bound: &[&[u8]], plain: &[u8]) -> Vec<u8> {
        self.seal.seal(kind, bound, plain).unwrap_or_else(|| {
            tracing::warn!("an entry could not be sealed (no random source?): stored unreadable");
            Vec::new()
        })
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

    /// The interest in the flight led under `token`: one member per local flight on it.
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
