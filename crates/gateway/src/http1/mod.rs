//! What the gateway's two HTTP/1.1 ends share (its client, `upstream/h1`, and its server,
//! `http/h1`): body framing and the header rules both read the same way.

pub(crate) mod framing;

use axum::http::HeaderMap;
use axum::http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};

/// The message's `Content-Length`, `None` if it has none; an error (its text) if it is not a
/// number, or if two of them differ (a request smuggling vector: RFC 9112 §6.3).
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, &'static str> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            // Digits only: `u64::from_str` would take a sign too.
            let parsed = part
                .iter()
                .all(u8::is_ascii_digit)
                .then(|| std::str::from_utf8(part).ok()?.parse::<u64>().ok())
                .flatten();
            match (parsed, length) {
                (None, _) => return Err("its content-length is not valid"),
                (Some(n), Some(before)) if n != before => return Err("it has two different content-lengths"),
                (Some(n), _) => length = Some(n),
            }
        }
    }
    Ok(length)
}

/// Whether the message's last `Transfer-Encoding` coding is `chunked` (the framing one); `None`
/// if it has no `Transfer-Encoding`.
pub(crate) fn chunked(headers: &HeaderMap) -> Option<bool> {
    let last = headers.get_all(TRANSFER_ENCODING).iter().next_back()?;
    let coding = last.as_bytes().rsplit(|&b| b == b',').next().unwrap_or_default();
    Some(coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The connection stays open after the message: HTTP/1.1 unless it says `close`, HTTP/1.0
/// only if it says `keep-alive`.
pub(crate) fn persistent(minor: u8, headers: &HeaderMap) -> bool {
    match minor {
        0 => says(headers, "keep-alive"),
        _ => !says(headers, "close"),
    }
}

/// Whether the message's `Connection` header holds `token`.
pub(crate) fn says(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(CONNECTION).iter().any(|value| {
        value.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}
