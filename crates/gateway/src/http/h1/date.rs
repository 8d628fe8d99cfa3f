//! The `date` header's value (RFC 9110 §6.6.1), formatted once a second per thread rather than
//! for every response: a response's head only copies it.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// The length of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub(super) const LENGTH: usize = 29;

/// The value last formatted on this thread, and the second it is for.
struct Cached {
    second: u64,
    value: [u8; LENGTH],
}

thread_local! {
    static CACHED: RefCell<Cached> = const { RefCell::new(Cached { second: u64::MAX, value: [0; LENGTH] }) };
}

/// Appends the current date's value to `out`.
pub(super) fn append(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.second != second {
            let formatted = httpdate::fmt_http_date(now);
            // Always 29 bytes; a clock before 1970 or past 9999 formats otherwise, and is cut.
            let bytes = formatted.as_bytes();
            let n = bytes.len().min(LENGTH);
            cached.value = [b' '; LENGTH];
            cached.value[..n].copy_from_slice(&bytes[..n]);
            cached.second = second;
        }
        out.extend_from_slice(&cached.value);
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_date_reads_back() {
        let mut out = Vec::new();
        super::append(&mut out);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
        assert!(text.ends_with(" GMT"), "{text}");
    }
}
