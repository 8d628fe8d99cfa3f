//! The operator's upstream key (`--upstream-api-key`) scrubbed from whatever the upstream sends
//! (bodies, header values, events) before any client, log line or the fleet's store sees it (G6).
//!
//! Every credential the gateway adds upstream carries that one key (`Authorization: Bearer K`,
//! Anthropic's `x-api-key: K`), so scrubbing the key scrubs them all. Each occurrence becomes
//! [`REDACTED`]: fixed, so the text says nothing of the key's length, and plain ASCII without
//! quotes, backslashes or line breaks, so a JSON string, a header value and an SSE line stay valid.

use std::fmt;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue};
use bytes::{Bytes, BytesMut};
use memchr::memmem::Finder;

/// What each occurrence of the key is replaced with.
pub(crate) const REDACTED: &[u8] = b"[redacted]";

/// Finds the key, if there is one; cheap to clone (one per flight). Without a key nothing is
/// scanned. Its `Debug` form says whether there is a key, never what it is.
#[derive(Clone, Default)]
pub(crate) struct Scrubber {
    /// The key's searcher (SIMD where the CPU has it); its needle is the key.
    finder: Option<Arc<Finder<'static>>>,
}

impl Scrubber {
    /// A scrubber of `key`; none for no key or an empty one.
    pub(crate) fn new(key: Option<&str>) -> Scrubber {
        let finder = key.filter(|key| !key.is_empty()).map(|key| Arc::new(Finder::new(key).into_owned()));
        Scrubber { finder }
    }

    /// `bytes` with every occurrence of the key replaced: the same bytes, not copied, when
    /// there is none.
    pub(crate) fn bytes(&self, bytes: Bytes) -> Bytes {
        let Some(finder) = self.finder.as_deref() else { return bytes };
        if bytes.len() < finder.needle().len() || finder.find(&bytes).is_none() {
            return bytes;
        }
        let mut out = BytesMut::with_capacity(bytes.len());
        replace(finder, &bytes, &mut out);
        out.freeze()
    }

    /// Every header value in `headers` scrubbed as [`Scrubber::bytes`] does.
    pub(crate) fn headers(&self, headers: &mut HeaderMap) {
        let Some(finder) = self.finder.as_deref() else { return };
        for value in headers.values_mut() {
            if finder.find(value.as_bytes()).is_none() {
                continue;
            }
            let mut out = BytesMut::with_capacity(value.len());
            replace(finder, value.as_bytes(), &mut out);
            // The marker is visible ASCII, so what was a valid value still is; were it not,
            // the value is dropped to the marker alone rather than kept.
            let sensitive = value.is_sensitive();
            *value = HeaderValue::from_maybe_shared(out.freeze())
                .unwrap_or_else(|_| HeaderValue::from_static("[redacted]"));
            value.set_sensitive(sensitive);
        }
    }

    /// `body` (cut short: at a bound, or when its connection broke) scrubbed, and a tail that
    /// is the start of the key replaced too: the rest of the key was never read, but its start
    /// must not go out either.
    pub(crate) fn cut(&self, body: Bytes) -> Bytes {
        let mut pieces = self.pieces();
        let out = pieces.push(body);
        if pieces.held.is_empty() {
            return out;
        }
        let mut out = BytesMut::from(&out[..]);
        out.extend_from_slice(REDACTED);
        out.freeze()
    }

    /// A scrubber for a body that arrives in pieces, where the key may be split between two.
    pub(crate) fn pieces(&self) -> Pieces {
        Pieces { scrubber: self.clone(), held: BytesMut::new() }
    }
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber").field("key", &self.finder.as_ref().map(|_| "[redacted]")).finish()
    }
}

/// Scrubs a body piece by piece ([`Scrubber::pieces`]): a piece's tail that could be the start
/// of the key is held back until the next piece says whether it is, and no other byte is.
/// (No `Debug`: what it holds is the start of the key.)
pub(crate) struct Pieces {
    scrubber: Scrubber,
    /// The end of the last piece that is the start of the key (shorter than the key).
    held: BytesMut,
}

impl Pieces {
    /// What of `piece` (and of what was held) can go out now, scrubbed.
    pub(crate) fn push(&mut self, piece: Bytes) -> Bytes {
        let Some(finder) = self.scrubber.finder.as_deref() else { return piece };
        let key = finder.needle();
        // The held bytes and this piece, as one: copied only after a piece that ended in the
        // start of the key.
        let whole = if self.held.is_empty() {
            piece
        } else {
            self.held.extend_from_slice(&piece);
            self.held.split().freeze()
        };
        let (mut out, last) = match finder.find(&whole) {
            // No occurrence: the piece itself (a slice of it, if its end is held).
            None => (whole.clone(), 0),
            Some(_) => {
                let mut out = BytesMut::with_capacity(whole.len());
                let last = replace(finder, &whole, &mut out);
                (out.freeze(), last)
            }
        };
        // The longest end of the text after the last occurrence that is a start of the key.
        let after = &whole[last..];
        let window = &after[after.len().saturating_sub(key.len() - 1)..];
        let held = memchr::memchr_iter(key[0], window)
            .find(|&at| key.starts_with(&window[at..]))
            .map_or(0, |at| window.len() - at);
        self.held.extend_from_slice(&whole[whole.len() - held..]);
        out.truncate(out.len() - held);
        out
    }

    /// At the body's end: what was held back, which turned out not to be the key.
    pub(crate) fn finish(&mut self) -> Bytes {
        self.held.split().freeze()
    }
}

/// Writes `text` to `out` with every occurrence of the key replaced by [`REDACTED`]; returns
/// where the text after the last occurrence starts (0 if there is none).
fn replace(finder: &Finder<'_>, text: &[u8], out: &mut BytesMut) -> usize {
    let mut from = 0;
    for at in finder.find_iter(text) {
        out.extend_from_slice(&text[from..at]);
        out.extend_from_slice(REDACTED);
        from = at + finder.needle().len();
    }
    out.extend_from_slice(&text[from..]);
    from
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-secret-0123456789";

    fn scrubber() -> Scrubber {
        Scrubber::new(Some(KEY))
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn every_occurrence_is_replaced_and_the_rest_kept() {
        let body = Bytes::from(format!(r#"{{"error":"Bearer {KEY} refused; {KEY}{KEY}"}}"#));
        let scrubbed = scrubber().bytes(body);
        assert_eq!(text(&scrubbed), r#"{"error":"Bearer [redacted] refused; [redacted][redacted]"}"#);
    }

    #[test]
    fn without_an_occurrence_or_a_key_the_bytes_are_not_copied() {
        let body = Bytes::from_static(b"nothing to see, sk-secret- but not the rest");
        assert_eq!(scrubber().bytes(body.clone()).as_ptr(), body.as_ptr());
        let with_key = Bytes::from(format!("x {KEY}"));
        assert_eq!(Scrubber::new(None).bytes(with_key.clone()).as_ptr(), with_key.as_ptr());
        assert_eq!(Scrubber::new(Some("")).bytes(with_key.clone()), with_key);
    }

    #[test]
    fn the_debug_form_does_not_show_the_key() {
        let shown = format!("{:?}", scrubber());
        assert!(!shown.contains("sk-"), "{shown}");
    }

    #[test]
    fn header_values_are_scrubbed() {
        let mut headers = HeaderMap::new();
        headers.insert("www-authenticate", HeaderValue::from_str(&format!("Bearer {KEY}")).unwrap());
        headers.append("x-other", HeaderValue::from_static("fine"));
        scrubber().headers(&mut headers);
        assert_eq!(headers["www-authenticate"], "Bearer [redacted]");
        assert_eq!(headers["x-other"], "fine");
    }

    /// Every way of cutting `body` in two: what goes out, put together, is the body scrubbed.
    #[test]
    fn a_key_split_between_pieces_is_scrubbed_wherever_the_cut() {
        let body = format!("a {KEY} b s sk {KEY}");
        let expected = "a [redacted] b s sk [redacted]";
        for first in 0..=body.len() {
            for second in first..=body.len() {
                let mut pieces = scrubber().pieces();
                let mut out = Vec::new();
                for piece in [&body[..first], &body[first..second], &body[second..]] {
                    out.extend_from_slice(&pieces.push(Bytes::copy_from_slice(piece.as_bytes())));
                }
                out.extend_from_slice(&pieces.finish());
                assert_eq!(text(&out), expected, "cut at {first} and {second}");
            }
        }
    }

    #[test]
    fn only_a_tail_that_starts_the_key_is_held() {
        let mut pieces = scrubber().pieces();
        let piece = Bytes::from_static(b"plain text");
        assert_eq!(pieces.push(piece.clone()).as_ptr(), piece.as_ptr(), "passed as it came");
        assert_eq!(text(&pieces.push(Bytes::from_static(b"ends in sk-sec"))), "ends in ");
        assert_eq!(text(&pieces.push(Bytes::from_static(b"ond"))), "sk-second");
        assert_eq!(text(&pieces.push(Bytes::from_static(b"the end: s"))), "the end: ");
        assert_eq!(text(&pieces.finish()), "s", "flushed at the end");
    }

    #[test]
    fn a_cut_body_loses_the_start_of_the_key_too() {
        let cut = scrubber().cut(Bytes::from(format!("{KEY} then sk-secret-01")));
        assert_eq!(text(&cut), "[redacted] then [redacted]");
        assert_eq!(text(&scrubber().cut(Bytes::from_static(b"whole"))), "whole");
    }
}
