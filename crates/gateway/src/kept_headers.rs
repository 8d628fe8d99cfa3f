//! A response head's headers as a flight keeps them for its life: every name and value in one
//! allocation, made into a `HeaderMap` for each response that sends them.

use std::fmt;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;

/// Headers kept in one allocation, in their order, a repeated name once per value.
///
/// A `HeaderMap` spends about 100 bytes an entry besides the names and values (its buckets and
/// its index), and an allocation per value: some 700 bytes for the few headers of a streamed
/// answer, which every flight holds as long as it lives (BENCHMARKS.md, issue 26). This holds
/// the names and values alone.
///
/// A value's `sensitive` mark (which tells HTTP/2 not to index it) is not kept: these are an
/// upstream's response headers, not a client's credentials.
///
/// ```
/// use axum::http::{HeaderMap, HeaderValue, header};
/// use streamflight_gateway::flight::Headers;
///
/// let mut map = HeaderMap::new();
/// map.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
/// map.append("x-note", HeaderValue::from_static("one"));
/// map.append("x-note", HeaderValue::from_static("two"));
/// let kept = Headers::from(&map);
/// assert_eq!(kept.get("content-type"), Some(&b"text/event-stream"[..]));
/// assert_eq!(kept.len(), 3);
/// assert_eq!(kept.to_map(), map);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// For each header: its name's length (`u16`, a `HeaderName`'s bound) and its value's
    /// (`u32`), little-endian, then the name and the value.
    text: Bytes,
}

/// The lengths in front of each header's name and value.
const LENGTHS: usize = 6;

impl Headers {
    /// How many headers (a repeated name counts once per value).
    pub fn len(&self) -> usize {
        self.pieces().count()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Each name (lower case) and value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        // `from_utf8` cannot fail: a name was written from a `HeaderName`, which is ASCII.
        self.pieces().map(|(name, value)| (std::str::from_utf8(name).unwrap_or_default(), value))
    }

    /// The bytes of the names and values.
    pub fn size(&self) -> usize {
        self.text.len() - LENGTHS * self.len()
    }

    /// The first value of `name` (in any case), if there is one.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.pieces().find(|(kept, _)| kept.eq_ignore_ascii_case(name.as_bytes())).map(|(_, value)| value)
    }

    /// The headers as a `HeaderMap`, for a response: values share this allocation.
    pub fn to_map(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.len());
        for (name, value) in self.pieces() {
            let name = HeaderName::from_bytes(name);
            let value = HeaderValue::from_maybe_shared(self.text.slice_ref(value));
            // Always both: they were written from a valid name and value.
            if let (Ok(name), Ok(value)) = (name, value) {
                map.append(name, value);
            }
        }
        map
    }

    /// Each name and value as bytes, read by their lengths (no scan).
    fn pieces(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut rest = &self.text[..];
        std::iter::from_fn(move || {
            let (&[n0, n1, v0, v1, v2, v3], after) = rest.split_first_chunk::<LENGTHS>()?;
            let name_len = usize::from(u16::from_le_bytes([n0, n1]));
            let value_len = usize::try_from(u32::from_le_bytes([v0, v1, v2, v3])).ok()?;
            let (name, after) = after.split_at_checked(name_len)?;
            let (value, after) = after.split_at_checked(value_len)?;
            rest = after;
            Some((name, value))
        })
    }
}

impl From<&HeaderMap> for Headers {
    fn from(map: &HeaderMap) -> Headers {
        let size = map.iter().map(|(name, value)| LENGTHS + name.as_str().len() + value.len()).sum();
        let mut text = Vec::with_capacity(size);
        for (name, value) in map {
            let (name, value) = (name.as_str().as_bytes(), value.as_bytes());
            // Both fit: a name is at most 64 KiB (`HeaderName`'s bound), a value is part of a
            // head read whole (at most a few hundred KiB).
            let (Ok(name_len), Ok(value_len)) = (u16::try_from(name.len()), u32::try_from(value.len()))
            else {
                continue;
            };
            text.extend_from_slice(&name_len.to_le_bytes());
            text.extend_from_slice(&value_len.to_le_bytes());
            text.extend_from_slice(name);
            text.extend_from_slice(value);
        }
        Headers { text: Bytes::from(text) }
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(name, value)| (name, String::from_utf8_lossy(value))))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_header_comes_back_in_order_with_its_bytes() {
        let mut map = HeaderMap::new();
        map.append("x-b", HeaderValue::from_static("2"));
        map.append("set-cookie", HeaderValue::from_static("a=1"));
        map.append("set-cookie", HeaderValue::from_static("b=2"));
        map.append("x-empty", HeaderValue::from_static(""));
        map.append("x-colon", HeaderValue::from_static("a: b:c"));
        map.append("x-opaque", HeaderValue::from_bytes(b"caf\xe9\ttab").unwrap());
        let kept = Headers::from(&map);
        let pairs: Vec<_> = kept.iter().collect();
        assert_eq!(
            pairs,
            [
                ("x-b", &b"2"[..]),
                ("set-cookie", b"a=1"),
                ("set-cookie", b"b=2"),
                ("x-empty", b""),
                ("x-colon", b"a: b:c"),
                ("x-opaque", b"caf\xe9\ttab"),
            ]
        );
        assert_eq!(kept.len(), 6);
        assert_eq!(
            kept.size(),
            map.iter().map(|(name, value)| name.as_str().len() + value.len()).sum::<usize>()
        );
        assert_eq!(kept.to_map(), map);
        assert_eq!(kept.get("X-Colon"), Some(&b"a: b:c"[..]));
        assert_eq!(kept.get("set-cookie"), Some(&b"a=1"[..]), "the first value");
        assert_eq!(kept.get("x-none"), None);
    }

    #[test]
    fn no_headers_is_empty() {
        let kept = Headers::from(&HeaderMap::new());
        assert!(kept.is_empty());
        assert_eq!(kept.len(), 0);
        assert_eq!(kept.iter().count(), 0);
        assert!(kept.to_map().is_empty());
        assert_eq!(kept, Headers::default());
    }
}
