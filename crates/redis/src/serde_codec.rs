//! A [`Codec`] for any key, item and error types that implement serde's traits (feature
//! `serde`): each value as CBOR, so that no user writes the bytes by hand.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Codec, Lost};

/// The codec of serde types: keys, items and errors stored as CBOR ([`ciborium`]), the fleet's
/// own failures ([`Lost`]) turned into `E` by the function it was made with. Every replica of
/// a fleet must use the same types (an entry another version wrote that does not read back
/// ends that replica's subscribers with [`Lost::Undecodable`], turned into `E` the same way).
///
/// A key's bytes must be the same for equal keys on every replica: a key type whose
/// serialization depends on more than its value (a `HashMap`'s order) must not be used.
///
/// Runnable without a store: a replica whose store is down serves alone (R23).
///
/// ```
/// # #[tokio::main] async fn main() {
/// use futures::StreamExt;
/// use serde::{Deserialize, Serialize};
/// use streamflight_redis::{Fleet, FleetConfig, Flights, Lost, SerdeCodec};
/// use streamflight_tokio::{Config, Event, Failure};
///
/// /// A service's own error: what its upstream said, or the fleet's failure.
/// #[derive(Debug, Serialize, Deserialize)]
/// enum Error {
///     RateLimited { retry_after: u32 },
///     Fleet(String),
/// }
///
/// impl From<Lost> for Error {
///     fn from(lost: Lost) -> Error {
///         Error::Fleet(lost.to_string())
///     }
/// }
///
/// let fleet = Fleet::new("redis://127.0.0.1:6379/", SerdeCodec::default(), FleetConfig::default()).unwrap();
/// let flights: Flights<(String, u32), Vec<u8>, Error> = Flights::new(fleet, Config::default());
/// let answer = async { Err::<futures::stream::Empty<_>, _>(Error::RateLimited { retry_after: 3 }) };
/// let events: Vec<_> = flights.request(("a prompt".to_owned(), 7), answer).collect().await;
/// // On this replica or any other that shares the flight: the upstream's own error.
/// assert!(matches!(
///     events.last(),
///     Some(Event::Failed(Failure::Upstream(error))) if matches!(**error, Error::RateLimited { retry_after: 3 })
/// ));
/// # }
/// ```
pub struct SerdeCodec<E> {
    lost: fn(Lost) -> E,
}

impl<E> SerdeCodec<E> {
    /// A codec whose readers turn the fleet's own failures into `E` with `lost` (for an error
    /// type that has no `From<Lost>`, such as `String`).
    ///
    /// ```
    /// use streamflight_redis::{Codec, SerdeCodec};
    ///
    /// let codec = SerdeCodec::new(|lost| format!("fleet: {lost}"));
    /// let bytes = Codec::<u64, Vec<u16>, String>::encode_item(&codec, &vec![1, 2, 3]);
    /// assert_eq!(Codec::<u64, Vec<u16>, String>::decode_item(&codec, &bytes), Ok(vec![1, 2, 3]));
    /// ```
    pub fn new(lost: fn(Lost) -> E) -> Self {
        SerdeCodec { lost }
    }
}

impl<E: From<Lost>> Default for SerdeCodec<E> {
    /// A codec that turns the fleet's own failures into `E` with its `From<Lost>`.
    fn default() -> Self {
        SerdeCodec::new(E::from)
    }
}

// By hand: derived ones would ask `E: Clone` and `E: Debug`, which a function pointer does not need.
impl<E> Clone for SerdeCodec<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for SerdeCodec<E> {}

impl<E> fmt::Debug for SerdeCodec<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerdeCodec").finish_non_exhaustive()
    }
}

/// `value` as CBOR, or `None` if its `Serialize` refused.
fn encode(value: &impl Serialize) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).ok()?;
    Some(bytes)
}

/// The value `bytes` hold, all of them.
fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Option<V> {
    let mut reader = bytes;
    let value = ciborium::from_reader(&mut reader).ok()?;
    // Trailing bytes: not what an encoder of `V` wrote.
    reader.is_empty().then_some(value)
}

impl<K, T, E> Codec<K, T, E> for SerdeCodec<E>
where
    K: Serialize + 'static,
    T: Serialize + DeserializeOwned + 'static,
    E: Serialize + DeserializeOwned + 'static,
{
    fn key(&self, key: &K) -> Vec<u8> {
        encode(key).unwrap_or_else(|| {
            // Equal keys must never share bytes with a different key: a key that does not
            // serialize gets bytes nobody else has, so its flight is never shared (served by
            // this replica as if alone) rather than mixed with another's.
            tracing::warn!("a flight key did not serialize: its flight is not shared with other replicas");
            crate::lease::fresh_token().into_bytes()
        })
    }

    fn encode_item(&self, item: &T) -> Vec<u8> {
        // Empty bytes never decode: the readers end `Undecodable` rather than skip the item.
        encode(item).unwrap_or_default()
    }

    fn decode_item(&self, bytes: &[u8]) -> Result<T, E> {
        decode(bytes).ok_or_else(|| (self.lost)(Lost::Undecodable))
    }

    fn encode_error(&self, error: &E) -> Vec<u8> {
        encode(error).unwrap_or_default()
    }

    fn decode_error(&self, bytes: &[u8]) -> E {
        decode(bytes).unwrap_or_else(|| (self.lost)(Lost::Undecodable))
    }

    fn lost(&self, lost: Lost) -> E {
        (self.lost)(lost)
    }
}

#[cfg(test)]
mod tests {
    use super::SerdeCodec;
    use crate::{Codec, Lost};

    type Pair = SerdeCodec<String>;

    fn codec() -> Pair {
        SerdeCodec::new(|lost| format!("lost: {lost}"))
    }

    #[test]
    fn values_read_back_as_written_and_anything_else_is_undecodable() {
        let codec = codec();
        let item = (7u8, "tok".to_owned(), vec![Some(1.5f64), None]);
        let bytes = Codec::<u8, _, String>::encode_item(&codec, &item);
        assert_eq!(Codec::<u8, _, String>::decode_item(&codec, &bytes), Ok(item.clone()));
        let undecodable = format!("lost: {}", Lost::Undecodable);
        for bad in [&b""[..], &bytes[..bytes.len() - 1], &[bytes.as_slice(), &[0]].concat()] {
            let read = Codec::<u8, (u8, String, Vec<Option<f64>>), String>::decode_item(&codec, bad);
            assert_eq!(read, Err(undecodable.clone()), "{bad:?}");
        }
        let error = Codec::<u8, u8, String>::encode_error(&codec, &"429".to_owned());
        assert_eq!(Codec::<u8, u8, String>::decode_error(&codec, &error), "429");
        assert_eq!(Codec::<u8, u8, String>::decode_error(&codec, b"\xff"), undecodable);
        assert_eq!(Codec::<u8, u8, String>::lost(&codec, Lost::Leader), format!("lost: {}", Lost::Leader));
    }

    #[test]
    fn equal_keys_give_equal_bytes_and_different_keys_different_ones() {
        let codec = codec();
        let key = |key: &(String, u32)| Codec::<_, u8, String>::key(&codec, key);
        assert_eq!(key(&("a".to_owned(), 1)), key(&("a".to_owned(), 1)));
        assert_ne!(key(&("a".to_owned(), 1)), key(&("a".to_owned(), 2)));
        assert_ne!(key(&("a".to_owned(), 1)), key(&("b".to_owned(), 1)));
    }
}
