//! An upstream's response head, read from its connection and parsed with `httparse`: its status
//! and headers, how its body is framed, and whether the connection may serve another request.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::Failed;
use crate::http1::{self, framing::Framing};

/// The first size of the buffer a head is read into: an LLM server's head is a few hundred
/// bytes. It doubles for a larger one, up to [`MAX_HEAD`].
const FIRST_READ: usize = 1024;

/// The largest head taken (as hyper's client was set, and nginx's default `proxy_buffer_size`):
/// a larger one is an error, which the gateway answers with a 502.
pub(super) const MAX_HEAD: usize = 4096;

/// The most header lines taken (hyper's own bound).
const MAX_HEADERS: usize = 100;

/// A response head, parsed.
pub(super) struct Head {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) framing: Framing,
    /// The response lets its connection serve another request once its body has ended.
    pub(super) keep_alive: bool,
    /// What was read after the head: the start of the body.
    pub(super) rest: Vec<u8>,
}

/// Reads the response head from `stream`. The failure says whether nothing at all was read
/// (the connection was closed or reset first): only then may the request be sent again.
pub(super) async fn read(stream: &mut TcpStream) -> Result<Head, Failed> {
    let mut buf = Vec::with_capacity(FIRST_READ);
    let mut answered = false;
    loop {
        if buf.len() == buf.capacity() {
            if buf.len() >= MAX_HEAD {
                return Err(Failed::answered(format!(
                    "the response head is too large (over {MAX_HEAD} bytes)"
                )));
            }
            buf.reserve_exact(buf.capacity().min(MAX_HEAD - buf.len()));
        }
        let read = stream.read_buf(&mut buf).await;
        match read {
            Ok(0) if !answered => {
                return Err(Failed::unanswered("the connection closed before a response came".to_owned()));
            }
            Ok(0) => {
                return Err(Failed::answered(
                    "the connection closed in the middle of the response head".to_owned(),
                ));
            }
            Err(error) if !answered && closed(&error) => {
                return Err(Failed::unanswered(format!(
                    "the connection broke before a response came: {error}"
                )));
            }
            Err(error) => return Err(Failed::answered(format!("cannot read the response: {error}"))),
            Ok(_) => answered = true,
        }
        // An interim answer (`100 Continue`, `103 Early Hints`) is skipped: the final one follows.
        while let Some((end, head)) = parse(&buf).map_err(Failed::answered)? {
            match head {
                Some(head) => return Ok(Head { rest: buf.split_off(end), ..head }),
                None => drop(buf.drain(..end)),
            }
        }
    }
}

/// An error that says the peer closed or reset the connection.
fn closed(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(error.kind(), ConnectionReset | ConnectionAborted | BrokenPipe)
}

/// The head at the start of `buf` and where it ends, `None` inside for an interim (1xx) one;
/// `None` if `buf` holds only part of a head.
fn parse(buf: &[u8]) -> Result<Option<(usize, Option<Head>)>, String> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut lines);
    let end = match response.parse(buf) {
        Ok(httparse::Status::Complete(end)) => end,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(format!("the response head is not valid: {error}")),
    };
    let (Some(code), Some(minor)) = (response.code, response.version) else {
        return Err("the response head is not valid: no status".to_owned());
    };
    if (100..200).contains(&code) {
        // A `101 Switching Protocols` was never asked for: no upgrade is requested.
        if code == 101 {
            return Err("the upstream switched protocols though it was not asked to".to_owned());
        }
        return Ok(Some((end, None)));
    }
    let status =
        StatusCode::from_u16(code).map_err(|_| format!("the response's status {code} is not valid"))?;
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    for line in response.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes());
        let value = HeaderValue::from_bytes(line.value);
        let (Ok(name), Ok(value)) = (name, value) else {
            return Err(format!("the response header `{}` is not valid", line.name));
        };
        headers.append(name, value);
    }
    let framing = framing(status, &headers)?;
    let keep_alive = framing != Framing::Close && http1::persistent(minor, &headers);
    Ok(Some((end, Some(Head { status, headers, framing, keep_alive, rest: Vec::new() }))))
}

/// How the body of a response with `status` and `headers` ends (RFC 9112 §6.3).
fn framing(status: StatusCode, headers: &HeaderMap) -> Result<Framing, String> {
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Length(0));
    }
    // The last coding is the framing one; any other ends with the connection.
    if let Some(chunked) = http1::chunked(headers) {
        return Ok(if chunked { Framing::chunked() } else { Framing::Close });
    }
    let length =
        http1::content_length(headers).map_err(|text| format!("the response is not valid: {text}"))?;
    Ok(length.map_or(Framing::Close, Framing::Length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        match parse(text.as_bytes()) {
            Ok(Some((end, Some(head)))) => {
                assert_eq!(end, text.len());
                head
            }
            _ => panic!("not a final head: {text:?}"),
        }
    }

    #[test]
    fn framing_follows_the_headers() {
        assert_eq!(head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n").framing, Framing::Length(12));
        let chunked =
            head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\ncontent-length: 3\r\n\r\n");
        assert_eq!(chunked.framing, Framing::chunked());
        assert_eq!(head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n").framing, Framing::Close);
        assert_eq!(head("HTTP/1.1 200 OK\r\n\r\n").framing, Framing::Close);
        assert_eq!(head("HTTP/1.1 204 No Content\r\n\r\n").framing, Framing::Length(0));
        assert_eq!(head("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n").framing, Framing::Length(5));
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        assert!(head("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(!head("HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(!head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(head("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n").keep_alive);
        // Read to its close: the connection cannot serve another.
        assert!(!head("HTTP/1.1 200 OK\r\n\r\n").keep_alive);
    }

    #[test]
    fn bad_heads_are_errors_not_panics() {
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad name: 1\r\n\r\n",
            "SMTP 200 OK\r\n\r\n",
        ] {
            assert!(parse(text.as_bytes()).is_err(), "{text:?}");
        }
    }

    #[test]
    fn an_interim_head_is_skipped_and_a_partial_one_waits() {
        assert!(matches!(parse(b"HTTP/1.1 100 Continue\r\n\r\n"), Ok(Some((25, None)))));
        assert!(matches!(parse(b"HTTP/1.1 200 OK\r\ncontent-le"), Ok(None)));
    }
}
