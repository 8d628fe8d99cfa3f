//! Sealing what a fleet leaves in the store (R24): every item, every failure and every note is
//! encrypted and authenticated with a key that only a holder of the same request can derive.
//!
//! # What is sealed, and with which key
//!
//! - **A flight's entries** (its items, and its end: done, given up, or failed with the
//!   upstream's error, so that no one but its leader can end it early): sealed with the
//!   *flight's key*, `HKDF-SHA256(salt = fleet secret, ikm = the codec's key bytes, info =
//!   "streamflight/seal/flight/v1")`. The key bytes are the flight's whole identity (in the
//!   gateway: the tenant and the canonical request), so a replica that holds an identical
//!   request derives the same key and one that does not cannot; the store only ever sees the
//!   SHA-256 of those bytes (in key names), from which HKDF's HMAC cannot be computed. With a
//!   fleet secret ([`FleetConfig::secret`]) even a guessed request is not enough: the secret
//!   is needed too.
//! - **Notes** ([`Fleet::save`](crate::Fleet::save)): sealed with a key derived the same way
//!   from the note's name (info `"streamflight/seal/note/v1"`). The gateway names a resume note
//!   by the client's request id, which only that client has; the note holds the flight's
//!   [`Place`](crate::Place), and with it the flight's key, for a replica that resumes the
//!   client without its request body.
//!
//! An entry is `0x01` (the format), a random 96-bit nonce, then the ChaCha20-Poly1305
//! ciphertext and its tag. The text is padded to a multiple of 32 bytes first, so that the
//! store shows an entry's length only to within 32 bytes (an LLM's tokens, one per event, are
//! told apart by their lengths). Its associated data binds it to where it belongs: what it is (an
//! item, an end, a note), then the flight's names, its leader's token and an item's number
//! (or the note's key in the store), so that an entry copied to another flight or another
//! place in its stream, or from one note to another, does not open: a reader of the store
//! can neither read entries nor reorder, repeat or forge them unseen (it can still delete
//! them: readers then see a gap or a lost leader). One that does not open is never passed on as
//! garbage: a reader's subscribers end with [`Lost::Sealed`](crate::Lost::Sealed), a note's
//! reader gets [`StoreError::Sealed`](crate::StoreError::Sealed).
//!
//! # Why ring
//!
//! The workspace already builds `ring` (rustls's crypto provider in the gateway, redis-rs's
//! `rediss://`), a small, audited, constant-time library that has HMAC, HKDF and
//! ChaCha20-Poly1305: nothing new to compile or trust. The RustCrypto crates
//! (`chacha20poly1305`, `hkdf`) would be as good but new to the tree. ChaCha20-Poly1305 rather
//! than AES-GCM: constant-time in software on every CPU (AES-GCM is only on those with AES
//! instructions), and fast enough for tokens by a wide margin. HKDF here yields one block (32
//! bytes), which is two HMACs (RFC 5869: extract, then `T(1)`); it is written with ring's HMAC
//! so that it cannot fail, and the tests check it against ring's own HKDF.

use std::fmt;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;

use crate::fleet::FleetConfig;
use crate::names::Names;

/// The first byte of every sealed entry: the format, so that another one can follow.
const FORMAT: u8 = 1;

/// The HKDF info of a flight's key.
const FLIGHT: &[u8] = b"streamflight/seal/flight/v1";

/// The HKDF info of a note's key.
const NOTE: &[u8] = b"streamflight/seal/note/v1";

/// Bytes a sealed entry has beyond its padded text: the format, the nonce and the tag.
pub(crate) const OVERHEAD: usize = 1 + NONCE_LEN + 16;

/// The plain text is padded to a multiple of this many bytes before it is sealed, so that an
/// entry's size tells a reader of the store its text's length only to within a block: an
/// LLM's tokens are streamed one per event, and their exact lengths say much about the text.
pub(crate) const BLOCK: usize = 32;

/// The secret a fleet's replicas share ([`FleetConfig::secret`]): it keys every seal, so that a
/// reader of the store who can guess a request still cannot read its answer. Never shown.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "Secret(none)" } else { "Secret(..)" })
    }
}

impl FleetConfig {
    /// The secret every replica of the fleet shares (default: none). It keys the derivation
    /// of every seal: without it, the key that seals a flight's entries in the store is
    /// derived from the flight's identity alone (the codec's key bytes, R24), so a reader of
    /// the store who can guess a whole request can read its answer; with it, they also need
    /// the secret. Replicas with different secrets cannot read each other's flights: their
    /// followers end with [`Lost::Sealed`](crate::Lost::Sealed).
    ///
    /// ```
    /// use streamflight_redis::FleetConfig;
    ///
    /// let config = FleetConfig::default().secret("the same on every replica");
    /// assert!(!format!("{config:?}").contains("every replica"), "never shown");
    /// ```
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.secret = Secret(secret.as_ref().to_vec());
        self
    }

    /// The names, and the seal, of the flight whose key is `key` (the codec's bytes).
    pub(crate) fn names(&self, key: &[u8]) -> Names {
        Names::new(&self.prefix, &self.secret, key)
    }
}

/// What a sealed entry is: part of its associated data, so that one kind never opens as
/// another (an item as the flight's error, a note as an item).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An item of a flight.
    Item,
    /// A flight's end (done, failed with the upstream's error, or given up).
    End,
    /// A note.
    Note,
    /// A message between replicas.
    Message,
}

impl Kind {
    fn label(self) -> &'static [u8] {
        match self {
            Kind::Item => b"item\0",
            Kind::End => b"end\0",
            Kind::Note => b"note\0",
            Kind::Message => b"message\0",
        }
    }
}

/// A key that seals entries: a flight's or a note's. Never shown.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Seal {
    key: [u8; 32],
}

impl fmt::Debug for Seal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Seal(..)")
    }
}

impl Seal {
    /// The key of the flight whose identity is `key` (the codec's bytes), in the fleet of
    /// `secret`.
    pub(crate) fn flight(secret: &Secret, key: &[u8]) -> Seal {
        Seal { key: hkdf(&secret.0, key, FLIGHT) }
    }

    /// The key of the note named `name`, in the fleet of `secret`.
    pub(crate) fn note(secret: &Secret, name: &[u8]) -> Seal {
        Seal { key: hkdf(&secret.0, name, NOTE) }
    }

    /// A key as [`Seal::bytes`] gave it (from a [`Place`](crate::Place)'s text).
    pub(crate) fn from_bytes(key: [u8; 32]) -> Seal {
        Seal { key }
    }

    /// The key itself: only for a [`Place`](crate::Place), which is only ever stored sealed.
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// `plain`, sealed as a `kind` bound to `bound` (its associated data after the kind).
    /// `None` only if the system's random source failed (no nonce) or the text is past
    /// ChaCha20-Poly1305's limit (256 GiB): the caller stores nothing readable instead.
    pub(crate) fn seal(&self, kind: Kind, bound: &[&[u8]], plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0; NONCE_LEN];
        getrandom::fill(&mut nonce).ok()?;
        self.seal_with(nonce, kind, bound, plain)
    }

    /// `plain`, sealed as [`Seal::seal`] does but with a nonce derived from the key, `kind`,
    /// `bound` and `plain` themselves (HMAC-SHA256, as in SIV): the same text seals the same
    /// every time, so that the store can compare a sealed note with the one a replica
    /// expects ([`Fleet::swap`](crate::Fleet::swap)). A nonce repeats only with its whole
    /// input, which then gives the same bytes again: only the equality of two notes of one
    /// name shows.
    pub(crate) fn seal_fixed(&self, kind: Kind, bound: &[&[u8]], plain: &[u8]) -> Option<Vec<u8>> {
        let mut context = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, &self.key));
        context.update(b"streamflight/seal/nonce/v1\0");
        context.update(&aad(kind, bound));
        context.update(plain);
        let mut nonce = [0; NONCE_LEN];
        nonce.copy_from_slice(&context.sign().as_ref()[..NONCE_LEN]);
        self.seal_with(nonce, kind, bound, plain)
    }

    fn seal_with(
        &self,
        nonce: [u8; NONCE_LEN],
        kind: Kind,
        bound: &[&[u8]],
        plain: &[u8],
    ) -> Option<Vec<u8>> {
        let key = self.aead()?;
        let mut out = Vec::with_capacity(OVERHEAD + plain.len() + BLOCK);
        out.push(FORMAT);
        out.extend_from_slice(&nonce);
        let mut text = padded(plain);
        let aad = aad(kind, bound);
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), &mut text)
            .ok()?;
        out.extend_from_slice(&text);
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    /// The plain text of `sealed`, if it is exactly what [`Seal::seal`] made of it with this
    /// key, `kind` and `bound`; `None` for anything else (altered, cut, another flight's).
    pub(crate) fn open(&self, kind: Kind, bound: &[&[u8]], sealed: &[u8]) -> Option<Vec<u8>> {
        let (&format, rest) = sealed.split_first()?;
        let (nonce, text) = rest.split_first_chunk::<NONCE_LEN>()?;
        if format != FORMAT {
            return None;
        }
        let key = self.aead()?;
        let mut text = text.to_vec();
        let aad = aad(kind, bound);
        let plain =
            key.open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(&aad), &mut text).ok()?.len();
        text.truncate(plain);
        unpadded(text)
    }

    fn aead(&self) -> Option<LessSafeKey> {
        UnboundKey::new(&CHACHA20_POLY1305, &self.key).ok().map(LessSafeKey::new)
    }
}

/// `plain`, then `0x80`, then zeros up to a multiple of [`BLOCK`] (ISO/IEC 7816-4 padding:
/// at least one byte, so that any text reads back).
fn padded(plain: &[u8]) -> Vec<u8> {
    let len = (plain.len() / BLOCK + 1) * BLOCK;
    let mut text = Vec::with_capacity(len + 16);
    text.extend_from_slice(plain);
    text.push(0x80);
    text.resize(len, 0);
    text
}

/// The text [`padded`] was given; `None` if `text` is not padded so.
fn unpadded(mut text: Vec<u8>) -> Option<Vec<u8>> {
    let end = text.iter().rposition(|&byte| byte != 0)?;
    if text[end] != 0x80 || !text.len().is_multiple_of(BLOCK) {
        return None;
    }
    text.truncate(end);
    Some(text)
}

/// The associated data: the kind's label, then each part after its length (u32, big-endian),
/// so that no two bindings read alike.
fn aad(kind: Kind, bound: &[&[u8]]) -> Vec<u8> {
    let mut aad = kind.label().to_vec();
    for part in bound {
        aad.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        aad.extend_from_slice(part);
    }
    aad
}

/// HKDF-SHA256 (RFC 5869) of `ikm` with `salt` and `info`, 32 bytes: extract
/// (`PRK = HMAC(salt, ikm)`), then its first block (`T(1) = HMAC(PRK, info || 0x01)`).
fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let prk = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salt), ikm);
    let mut context = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref()));
    context.update(info);
    context.update(&[1]);
    let mut key = [0; 32];
    for (byte, from) in key.iter_mut().zip(context.sign().as_ref()) {
        *byte = *from;
    }
    key
}

/// A note's value as [`Fleet::save`](crate::Fleet::save) stores it: sealed with the key of its
/// name, bound to its key in the store. `None` if it cannot be sealed (no random source).
/// Sealed the same way every time (a nonce derived from the note itself), so that a swap
/// compares sealed notes in the store.
pub(crate) fn seal_note(secret: &Secret, name: &[u8], key: &str, value: &[u8]) -> Option<Vec<u8>> {
    Seal::note(secret, name).seal_fixed(Kind::Note, &[key.as_bytes()], value)
}

/// A message published on `channel` (its name in the store), sealed with a key of the fleet's
/// secret and the channel: a reader of the store without the secret learns nothing from it.
pub(crate) fn seal_message(secret: &Secret, channel: &str, message: &[u8]) -> Option<Vec<u8>> {
    Seal::note(secret, channel.as_bytes()).seal(Kind::Message, &[channel.as_bytes()], message)
}

/// A message as [`seal_message`] sealed it, if it opens.
pub(crate) fn open_message(secret: &Secret, channel: &str, sealed: &[u8]) -> Option<Vec<u8>> {
    Seal::note(secret, channel.as_bytes()).open(Kind::Message, &[channel.as_bytes()], sealed)
}

/// A note's value as [`Fleet::load`](crate::Fleet::load) reads it back, if it opens.
pub(crate) fn open_note(secret: &Secret, name: &[u8], key: &str, sealed: &[u8]) -> Option<Vec<u8>> {
    Seal::note(secret, name).open(Kind::Note, &[key.as_bytes()], sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn names(secret: &str, key: &[u8]) -> Names {
        FleetConfig::default().secret(secret).names(key)
    }

    #[test]
    fn the_derivation_is_rfc_5869_hkdf_sha256() {
        // RFC 5869, A.1: the first 32 bytes of its OKM.
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let okm = "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf";
        let hex: String = hkdf(&salt, &ikm, &info).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, okm);
        // And ring's own HKDF, on keys and infos of every kind used here.
        struct Len32;
        impl ring::hkdf::KeyType for Len32 {
            fn len(&self) -> usize {
                32
            }
        }
        for (salt, ikm, info) in [(&b""[..], &b"k"[..], FLIGHT), (b"secret", b"a long key", NOTE)] {
            let mut theirs = [0; 32];
            let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, salt).extract(ikm);
            prk.expand(&[info], Len32).unwrap().fill(&mut theirs).unwrap();
            assert_eq!(hkdf(salt, ikm, info), theirs);
        }
    }

    #[test]
    fn an_entry_opens_for_its_own_flight_place_and_token_only() {
        let names = names("s", b"the request");
        let sealed = names.seal_item(TOKEN, 3, b"the answer");
        assert_eq!(sealed.len(), OVERHEAD + BLOCK);
        assert!(!sealed.windows(6).any(|w| w == b"answer"), "not in clear");
        assert_eq!(names.open_item(TOKEN, 3, &sealed).as_deref(), Some(&b"the answer"[..]));
        // Anywhere else: another place in the stream, the end, another token, request, secret
        // or fleet prefix.
        let other_token = "f".repeat(32);
        assert_eq!(names.open_item(TOKEN, 4, &sealed), None, "an item moved in its stream");
        assert_eq!(names.open_end(TOKEN, &sealed), None, "an item as the end");
        assert_eq!(names.open_item(&other_token, 3, &sealed), None);
        assert_eq!(self::names("s", b"another request").open_item(TOKEN, 3, &sealed), None);
        assert_eq!(self::names("t", b"the request").open_item(TOKEN, 3, &sealed), None);
        let prefixed = FleetConfig::default().secret("s").prefix("other:").names(b"the request");
        assert_eq!(prefixed.open_item(TOKEN, 3, &sealed), None);
        // Every byte matters, and a cut entry is no entry.
        for at in 0..sealed.len() {
            let mut altered = sealed.clone();
            altered[at] ^= 1;
            assert_eq!(names.open_item(TOKEN, 3, &altered), None, "byte {at}");
            assert_eq!(names.open_item(TOKEN, 3, &sealed[..at]), None, "cut at {at}");
        }
        // A fresh nonce each time: the same item twice is two different entries.
        assert_ne!(names.seal_item(TOKEN, 3, b"the answer"), sealed);
        // An end opens as the end of its own flight only.
        let end = names.seal_end(TOKEN, b"d");
        assert_eq!(names.open_end(TOKEN, &end).as_deref(), Some(&b"d"[..]));
        assert_eq!(names.open_end(&other_token, &end), None);
        assert_eq!(names.open_item(TOKEN, 1, &end), None);
        assert_eq!(names.open_end(TOKEN, b"d"), None, "an end in clear is no end");
    }

    #[test]
    fn an_entrys_size_tells_its_texts_length_only_to_within_a_block() {
        let names = names("s", b"k");
        let size = |len: usize| names.seal_item(TOKEN, 1, &vec![b'x'; len]).len();
        assert_eq!(size(0), OVERHEAD + BLOCK);
        assert_eq!(size(1), size(BLOCK - 1), "one byte or a block less one: the same size");
        assert_eq!(size(BLOCK), OVERHEAD + 2 * BLOCK);
        // Any text reads back as it was, whatever bytes it ends with.
        for plain in [&b""[..], b"\0", b"\x80", b"a\x80\0", &[0x80; 32], &[0; 33], &[7; 64]] {
            assert_eq!(names.open_item(TOKEN, 1, &names.seal_item(TOKEN, 1, plain)).as_deref(), Some(plain));
            assert_eq!(unpadded(padded(plain)).as_deref(), Some(plain));
        }
        for bad in [&b""[..], &[0; 32], &[0x80; 31], &[1; 32]] {
            assert_eq!(unpadded(bad.to_vec()), None, "{bad:?}");
        }
    }

    #[test]
    fn without_a_secret_the_key_needs_the_request_not_its_hash() {
        use sha2::{Digest, Sha256};
        let request = b"the request";
        let with = Seal::flight(&Secret::default(), request);
        // What the store's names show, taken as the key's input, gives another key.
        let hashed = Seal::flight(&Secret::default(), &Sha256::digest(request));
        assert_ne!(with, hashed);
        assert_ne!(with, Seal::flight(&Secret(b"s".to_vec()), request));
        assert_ne!(with, Seal::note(&Secret::default(), request), "a note's key is another");
    }

    #[test]
    fn a_note_opens_under_its_own_name_and_key_only() {
        let secret = Secret(b"fleet".to_vec());
        let sealed = seal_note(&secret, b"client 7", "sf:{ab}:note", b"the place").unwrap();
        assert_eq!(
            open_note(&secret, b"client 7", "sf:{ab}:note", &sealed).as_deref(),
            Some(&b"the place"[..])
        );
        assert_eq!(open_note(&secret, b"client 8", "sf:{ab}:note", &sealed), None);
        assert_eq!(open_note(&secret, b"client 7", "sf:{cd}:note", &sealed), None);
        assert_eq!(open_note(&Secret::default(), b"client 7", "sf:{ab}:note", &sealed), None);
        assert_eq!(open_note(&secret, b"client 7", "sf:{ab}:note", b"the place"), None, "clear is refused");
    }

    #[test]
    fn secrets_and_keys_are_never_shown() {
        let config = FleetConfig::default().secret("hunter2");
        assert!(!format!("{config:?}").contains("hunter2"));
        let names = config.names(b"k");
        let shown = format!("{names:?}");
        let key: String = names.seal_key().bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&key[..8]), "{shown}");
    }
}
