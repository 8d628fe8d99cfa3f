//! A POST as the bytes sent on an HTTP/1.1 connection: its head (request line, `Host`, the
//! end-to-end headers, `Content-Length`) and its body, written together in one vectored write.

use std::io::{self, IoSlice};

use axum::http::header::{ACCEPT, CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use axum::http::{HeaderMap, HeaderValue};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The head of a POST of `length` bytes to `target` on `host`, with `headers` (end-to-end
/// ones: any `Host`, `Content-Length` or hop-by-hop framing header among them is left out, the
/// head says its own). The error is its text.
pub(super) fn head(
    target: &str,
    host: &HeaderValue,
    headers: &HeaderMap,
    length: usize,
) -> Result<Vec<u8>, String> {
    // `UpstreamUrl` writes the target percent-encoded: anything else would break the line.
    if !target.starts_with('/') || !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("the request's path is not valid: {target:?}"));
    }
    let size = headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum::<usize>();
    let mut head = Vec::with_capacity(target.len() + host.len() + size + 80);
    head.extend_from_slice(b"POST ");
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    head.extend_from_slice(host.as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if [HOST, CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION].contains(name) {
            continue;
        }
        line(&mut head, name.as_str(), value.as_bytes());
    }
    // What reqwest sends when the client sent none: the same upstream request either way.
    if !headers.contains_key(ACCEPT) {
        line(&mut head, "accept", b"*/*");
    }
    line(&mut head, "content-length", itoa::Buffer::new().format(length).as_bytes());
    head.extend_from_slice(b"\r\n");
    Ok(head)
}

/// Appends the header line `name: value`.
fn line(head: &mut Vec<u8>, name: &str, value: &[u8]) {
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// Writes `head` then `body` to `stream`: in one system call unless the socket takes less.
pub(super) async fn write(stream: &mut TcpStream, mut head: &[u8], mut body: &[u8]) -> io::Result<()> {
    while !head.is_empty() || !body.is_empty() {
        let written = stream.write_vectored(&[IoSlice::new(head), IoSlice::new(body)]).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let of_head = written.min(head.len());
        head = &head[of_head..];
        body = &body[written - of_head..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_has_its_own_host_and_length_and_every_end_to_end_header() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer k"));
        headers.append("x-multi", HeaderValue::from_static("1"));
        headers.append("x-multi", HeaderValue::from_static("2"));
        headers.insert(HOST, HeaderValue::from_static("client-side"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
        let head =
            head("/v1/chat/completions?a=b", &HeaderValue::from_static("h:8000"), &headers, 2).unwrap();
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /v1/chat/completions?a=b HTTP/1.1\r\nhost: h:8000\r\nauthorization: Bearer k\r\n\
             x-multi: 1\r\nx-multi: 2\r\naccept: */*\r\ncontent-length: 2\r\n\r\n"
        );
    }

    #[test]
    fn a_target_that_would_break_the_line_is_refused() {
        let host = HeaderValue::from_static("h");
        for target in ["v1/x", "/v1/x y", "/v1/x\r\nx: 1", "/v1/é"] {
            assert!(head(target, &host, &HeaderMap::new(), 0).is_err(), "{target:?}");
        }
    }
}
