//! How a manager's keys, items and errors look in the store: the user's [`Codec`], and the
//! failures of the fleet itself ([`Lost`]) that it turns into the user's error type.

/// Turns a manager's keys, items and errors into bytes for the store and back. One value per
/// manager, shared by all its flights; every replica of a fleet must use the same one.
///
/// ```
/// use streamflight_redis::{Codec, Lost};
///
/// /// Byte items under numeric keys; errors as text.
/// struct Raw;
///
/// impl Codec<u64, Vec<u8>, String> for Raw {
///     fn key(&self, key: &u64) -> Vec<u8> { key.to_be_bytes().to_vec() }
///     fn encode_item(&self, item: &Vec<u8>) -> Vec<u8> { item.clone() }
///     fn decode_item(&self, bytes: &[u8]) -> Result<Vec<u8>, String> { Ok(bytes.to_vec()) }
///     fn encode_error(&self, error: &String) -> Vec<u8> { error.as_bytes().to_vec() }
///     fn decode_error(&self, bytes: &[u8]) -> String { String::from_utf8_lossy(bytes).into_owned() }
///     fn lost(&self, lost: Lost) -> String { lost.to_string() }
/// }
/// ```
pub trait Codec<K, T, E>: Send + Sync + 'static {
    /// The key's identity as bytes: equal keys give equal bytes on every replica. Only its
    /// SHA-256 names anything in the store (R24), never these bytes; the key that seals the
    /// flight's entries is derived from them, so they should hold all that makes the request
    /// secret (everything a reader of the store must not be able to guess).
    fn key(&self, key: &K) -> Vec<u8>;

    /// An item as the leader appends it.
    fn encode_item(&self, item: &T) -> Vec<u8>;

    /// An item as a reader gets it back; an entry that cannot be read is the error its
    /// subscribers get (the flight ends there on that replica).
    fn decode_item(&self, bytes: &[u8]) -> Result<T, E>;

    /// The upstream's error, as the leader writes it as the flight's end.
    fn encode_error(&self, error: &E) -> Vec<u8>;

    /// The upstream's error as a reader gets it back: every replica's subscribers get the
    /// upstream's own failure.
    fn decode_error(&self, bytes: &[u8]) -> E;

    /// The error a reader's subscribers get when the fleet itself failed them.
    fn lost(&self, lost: Lost) -> E;
}

/// How the fleet itself failed a replica's subscribers (the core's fleet machines decide it):
/// the upstream did not fail, but this replica can no longer follow the flight.
pub use streamflight_core::fleet::Lost;

/// The codec of text: `String` keys, items and errors, each stored as its UTF-8 bytes, and
/// the fleet's own failures as their [`Display`](std::fmt::Display) text. For services whose items
/// are text, and for trying the fleet out.
#[derive(Clone, Copy, Debug, Default)]
pub struct Text;

impl Codec<String, String, String> for Text {
    fn key(&self, key: &String) -> Vec<u8> {
        key.as_bytes().to_vec()
    }

    fn encode_item(&self, item: &String) -> Vec<u8> {
        item.as_bytes().to_vec()
    }

    fn decode_item(&self, bytes: &[u8]) -> Result<String, String> {
        String::from_utf8(bytes.to_vec()).map_err(|_| "an item in the store is not UTF-8".to_owned())
    }

    fn encode_error(&self, error: &String) -> Vec<u8> {
        error.as_bytes().to_vec()
    }

    fn decode_error(&self, bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    fn lost(&self, lost: Lost) -> String {
        lost.to_string()
    }
}
