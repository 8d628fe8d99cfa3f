//! Where a flight lives in the store: every key is derived from the SHA-256 of the flight
//! key, never from the key itself (R24), and all of one flight's keys share one hash slot.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// The store's keys of one flight key, on one fleet.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Names {
    /// `<prefix>{<sha256 hex>}:`: the braces keep a flight's keys in one Redis Cluster slot,
    /// which its scripts need.
    base: String,
}

impl Names {
    /// The names for a key whose identity is `key` (the codec's bytes), under `prefix`.
    pub(crate) fn new(prefix: &str, key: &[u8]) -> Names {
        let digest = Sha256::digest(key);
        let mut base = String::with_capacity(prefix.len() + 68);
        base.push_str(prefix);
        base.push('{');
        for byte in digest {
            let _ = write!(base, "{byte:02x}");
        }
        base.push_str("}:");
        Names { base }
    }

    /// The names under `base`, as [`Names::base`] gave it.
    pub(crate) fn from_base(base: String) -> Names {
        Names { base }
    }

    /// A note's key: its name hashed too.
    pub(crate) fn note(prefix: &str, name: &[u8]) -> String {
        let names = Names::new(prefix, name);
        format!("{}note", names.base)
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

#[cfg(test)]
mod tests {
    use super::Names;

    #[test]
    fn no_key_text_reaches_the_store_and_every_name_shares_one_slot() {
        let names = Names::new("sf:", b"the prompt, with a secret in it");
        for name in [names.lease(), names.items("t0k"), names.interest("t0k")] {
            assert!(!name.contains("prompt") && !name.contains("secret"), "{name}");
            assert!(name.starts_with("sf:{") && name.contains("}:"), "{name}");
            assert_eq!(name.split('{').nth(1).unwrap().split('}').next().unwrap().len(), 64);
        }
        assert_ne!(Names::new("sf:", b"a").lease(), Names::new("sf:", b"b").lease());
        assert_eq!(Names::new("sf:", b"a").lease(), Names::new("sf:", b"a").lease());
    }
}
