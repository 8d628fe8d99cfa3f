//! A client's request head, read from its connection into a buffer that grows only as needed
//! (1 KiB to 8 KiB) and parsed with `httparse`: the request, and how its body is framed.

use axum::http::header::EXPECT;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};

use super::socket::Socket;
use crate::http1::{self, framing::Framing};

/// The first size of the buffer a head is read into: a client's head is a few hundred bytes.
/// It doubles for a larger one, up to [`MAX_HEAD`].
const FIRST_READ: usize = 1024;

/// The largest head taken (hyper's least read buffer, which the gateway used): a larger one
/// gets 431 and its connection is closed.
pub(super) const MAX_HEAD: usize = 8 * 1024;

/// The most header lines taken (hyper's own bound); more get 431.
const MAX_HEADERS: usize = 100;

/// A request head, parsed.
#[derive(Debug)]
pub(super) struct Head {
    pub(super) parts: Parts,
    pub(super) framing: Framing,
    /// The request lets its connection serve another request after its response.
    pub(super) keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub(super) expects_continue: bool,
}

/// A head refused: the response it gets, after which the connection is closed.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refused {
    pub(super) status: StatusCode,
    /// Why, for the log.
    pub(super) why: &'static str,
}

impl Refused {
    fn bad(why: &'static str) -> Refused {
        Refused { status: StatusCode::BAD_REQUEST, why }
    }
}

/// What reading a head came to.
// Returned once per request and taken apart at once: a box would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Read {
    /// A head, and what was read after it (its body's start, or pipelined requests).
    Head(Head, Vec<u8>),
    /// The client closed the connection (or reset it) before sending a byte of a head.
    Closed,
    /// The connection broke in the middle of a head.
    Broken(String),
    /// The head is refused.
    Refused(Refused),
}

/// Reads the next request head from `socket`, starting with `received` (pipelined bytes).
/// Nothing is allocated until bytes come.
pub(super) async fn read(socket: &Socket, mut buf: Vec<u8>) -> Read {
    loop {
        if !buf.is_empty() {
            match parse(&buf) {
                Ok(Some((end, head))) => return Read::Head(head, rest(buf, end)),
                Ok(None) if buf.len() >= MAX_HEAD => {
                    return Read::Refused(Refused {
                        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        why: "the request head is over 8 KiB",
                    });
                }
                Ok(None) => {}
                Err(refused) => return Read::Refused(refused),
            }
        }
        if let Err(error) = socket.stream.readable().await {
            return Read::Broken(error.to_string());
        }
        if buf.len() == buf.capacity() {
            let room = if buf.is_empty() {
                FIRST_READ
            } else {
                buf.capacity().min(MAX_HEAD.saturating_sub(buf.len()))
            };
            buf.reserve_exact(room);
        }
        let start = buf.len();
        let end = buf.capacity().min(MAX_HEAD);
        buf.resize(end, 0);
        let read = socket.read(&mut buf[start..]);
        buf.truncate(start + read.as_ref().map_or(0, |&n| n));
        match read {
            Ok(0) if buf.is_empty() => return Read::Closed,
            Ok(0) => {
                return Read::Broken("the client closed its connection in the middle of a head".to_owned());
            }
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) if buf.is_empty() => return Read::Closed,
            Err(error) => return Read::Broken(error.to_string()),
        }
    }
}

/// What follows the head's `end` in `buf`: kept in a buffer of its own size, so that the
/// head's buffer is freed (or no memory at all when nothing followed).
fn rest(buf: Vec<u8>, end: usize) -> Vec<u8> {
    match buf.get(end..) {
        Some(rest) if !rest.is_empty() => rest.to_vec(),
        _ => Vec::new(),
    }
}

/// The head at the start of `buf` and where it ends; `None` if `buf` holds only part of one.
pub(super) fn parse(buf: &[u8]) -> Result<Option<(usize, Head)>, Refused> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut lines);
    let end = match request.parse(buf) {
        Ok(httparse::Status::Complete(end)) => end,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refused {
                status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                why: "the request has over 100 header lines",
            });
        }
        Err(_) => return Err(Refused::bad("the request head is not valid")),
    };
    let (Some(method), Some(path), Some(minor)) = (request.method, request.path, request.version) else {
        return Err(Refused::bad("the request head is not valid"));
    };
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| Refused::bad("the method is not valid"))?;
    let uri = Uri::try_from(path).map_err(|_| Refused::bad("the request target is not valid"))?;
    let mut headers = HeaderMap::with_capacity(request.headers.len());
    for line in request.headers.iter() {
        let name = HeaderName::from_bytes(line.name.as_bytes());
        let value = HeaderValue::from_bytes(line.value);
        let (Ok(name), Ok(value)) = (name, value) else {
            return Err(Refused::bad("a header is not valid"));
        };
        headers.append(name, value);
    }
    let framing = framing(&headers)?;
    let keep_alive = http1::persistent(minor, &headers);
    let expects_continue = minor == 1
        && !framing.ended()
        && headers.get(EXPECT).is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut head = Request::new(());
    *head.method_mut() = method;
    *head.uri_mut() = uri;
    *head.version_mut() = if minor == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
    *head.headers_mut() = headers;
    let (parts, ()) = head.into_parts();
    Ok(Some((end, Head { parts, framing, keep_alive, expects_continue })))
}

/// How a request's body is framed (RFC 9112 §6.3): chunked only as the last coding; a length
/// beside it, two lengths that differ, or any other coding is refused (request smuggling).
fn framing(headers: &HeaderMap) -> Result<Framing, Refused> {
    let length =
        http1::content_length(headers).map_err(|_| Refused::bad("the content-length is not valid"))?;
    match (http1::chunked(headers), length) {
        (Some(true), None) => Ok(Framing::chunked()),
        (Some(true), Some(_)) => {
            Err(Refused::bad("the request has both a content-length and chunked framing"))
        }
        (Some(false), _) => Err(Refused {
            status: StatusCode::NOT_IMPLEMENTED,
            why: "the request's transfer-encoding does not end with chunked",
        }),
        (None, length) => Ok(Framing::Length(length.unwrap_or(0))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> StatusCode {
        match parse(text.as_bytes()) {
            Err(refused) => refused.status,
            Ok(head) => panic!("taken: {text:?}: {head:?}"),
        }
    }

    fn head(text: &str) -> Head {
        match parse(text.as_bytes()) {
            Ok(Some((end, head))) => {
                assert_eq!(end, text.len());
                head
            }
            other => panic!("not a head: {text:?}: {other:?}"),
        }
    }

    #[test]
    fn smuggling_is_refused() {
        let bad = StatusCode::BAD_REQUEST;
        assert_eq!(
            refused("POST / HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"),
            bad
        );
        assert_eq!(refused("POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n"), bad);
        assert_eq!(refused("POST / HTTP/1.1\r\ncontent-length: 3, 4\r\n\r\n"), bad);
        assert_eq!(refused("POST / HTTP/1.1\r\ncontent-length: +3\r\n\r\n"), bad);
        let unknown = StatusCode::NOT_IMPLEMENTED;
        assert_eq!(refused("POST / HTTP/1.1\r\ntransfer-encoding: chunked, gzip\r\n\r\n"), unknown);
        assert_eq!(refused("POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n"), unknown);
        assert_eq!(refused("GET / HTTP/1.1\r\nbad name: x\r\n\r\n"), bad);
        assert_eq!(refused("GET / HTTP/1.1\r\n\x01\r\n\r\n"), bad);
        let many: String = (0..101).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert_eq!(
            refused(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn framing_and_keep_alive_follow_the_head() {
        let chunked = head("POST /a?b=c HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n");
        assert_eq!(chunked.framing, Framing::chunked());
        assert_eq!(chunked.parts.uri, "/a?b=c");
        assert_eq!(head("POST / HTTP/1.1\r\ncontent-length: 5, 5\r\n\r\n").framing, Framing::Length(5));
        assert_eq!(head("GET / HTTP/1.1\r\n\r\n").framing, Framing::Length(0));
        assert!(head("GET / HTTP/1.1\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nconnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        let expects = head("POST / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n");
        assert!(expects.expects_continue);
        // Nothing to wait for without a body.
        assert!(!head("POST / HTTP/1.1\r\nexpect: 100-continue\r\n\r\n").expects_continue);
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nhost: a"), Ok(None)));
    }
}
