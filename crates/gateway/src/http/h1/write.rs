//! A response written to its client: its head (status line, `date`, headers, how the body is
//! delimited), then each body frame straight from its `Bytes` in one vectored write; nothing
//! is kept between frames but the unwritten rest of a write the socket took only part of.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use axum::http::response::Parts;
use axum::http::{HeaderValue, StatusCode};
use bytes::{Buf, Bytes};
use http_body::{Body as _, SizeHint};
use tokio::io::AsyncWrite;

use super::date;
use super::socket::Socket;
use crate::http1;

/// How a response's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Delimit {
    /// No body is sent (HEAD, 1xx, 204, 304).
    None,
    /// `content-length`.
    Length,
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Ended by the connection's close (an HTTP/1.0 client and a length not known).
    Close,
}

/// What of the request decides how its response is written.
#[derive(Clone, Copy, Debug)]
pub(super) struct Asked {
    /// A HEAD request: the response has no body.
    pub(super) head: bool,
    /// An HTTP/1.0 request: no chunked framing.
    pub(super) http10: bool,
    /// The connection may serve another request (the request's say, and the server's).
    pub(super) keep_alive: bool,
}

/// A response's head, written out, and what it says of its body and of the connection.
pub(super) struct Head {
    pub(super) bytes: Vec<u8>,
    pub(super) delimit: Delimit,
    pub(super) keep_alive: bool,
}

/// The head of a response of `parts` with a body of size `size`, to a request `asked`.
pub(super) fn head(parts: &mut Parts, size: SizeHint, asked: Asked) -> Head {
    let status = parts.status;
    let headers = &mut parts.headers;
    let bodiless = asked.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    // The framing is the connection's business: a handler's own is not taken.
    headers.remove(TRANSFER_ENCODING);
    let mut added: Option<(&[u8], Option<u64>)> = None;
    let delimit = if headers.contains_key(CONTENT_LENGTH) {
        Delimit::Length
    } else if status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational()
    {
        Delimit::None
    } else if let Some(length) = size.exact() {
        added = Some((b"content-length: ", Some(length)));
        Delimit::Length
    } else if asked.http10 {
        Delimit::Close
    } else {
        if !asked.head {
            added = Some((b"transfer-encoding: chunked", None));
        }
        Delimit::Chunked
    };
    let delimit = if bodiless { Delimit::None } else { delimit };
    let keep_alive = asked.keep_alive && delimit != Delimit::Close && !http1::says(headers, "close");
    let mut bytes = Vec::with_capacity(
        128 + headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum::<usize>(),
    );
    bytes.extend_from_slice(b"HTTP/1.1 ");
    bytes.extend_from_slice(status.as_str().as_bytes());
    bytes.push(b' ');
    bytes.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    bytes.extend_from_slice(b"\r\n");
    if !headers.contains_key(DATE) {
        bytes.extend_from_slice(b"date: ");
        date::append(&mut bytes);
        bytes.extend_from_slice(b"\r\n");
    }
    if !keep_alive && !asked.http10 && !http1::says(headers, "close") {
        headers.append(CONNECTION, HeaderValue::from_static("close"));
    } else if keep_alive && asked.http10 && !http1::says(headers, "keep-alive") {
        headers.append(CONNECTION, HeaderValue::from_static("keep-alive"));
    }
    for (name, value) in headers.iter() {
        bytes.extend_from_slice(name.as_str().as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(value.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    if let Some((line, number)) = added {
        bytes.extend_from_slice(line);
        if let Some(number) = number {
            bytes.extend_from_slice(itoa::Buffer::new().format(number).as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    Head { bytes, delimit, keep_alive }
}

/// Why a response was not sent whole.
#[derive(Debug)]
pub(super) enum Unsent {
    /// The client closed or reset its connection.
    Gone,
    /// A write failed (the write timeout among them).
    Write(io::Error),
    /// The response's body failed: its client must not take what it got for a whole body.
    Body(axum::Error),
}

/// The largest chunk size line: 16 hex digits and its line end.
const SIZE_LINE: usize = 18;

/// What is to be written and is not yet: the head (until it is), a chunk's size line, its
/// data, and what follows it. A partial write leaves the rest here; nothing else is kept.
struct Out {
    head: Vec<u8>,
    line: [u8; SIZE_LINE],
    line_at: usize,
    line_end: usize,
    data: Bytes,
    tail: &'static [u8],
}

/// A chunk's end, and a chunked body's end.
const CHUNK_END: &[u8] = b"\r\n";
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
const CHUNK_END_AND_LAST: &[u8] = b"\r\n0\r\n\r\n";

impl Out {
    fn is_empty(&self) -> bool {
        self.head.is_empty() && self.line_at == self.line_end && self.data.is_empty() && self.tail.is_empty()
    }

    /// Takes `data` to write, with its chunk framing if `chunked` (and the body's end with it
    /// if `last`).
    fn frame(&mut self, data: Bytes, chunked: bool, last: bool) {
        if chunked {
            if data.is_empty() {
                self.tail = if last { LAST_CHUNK } else { b"" };
                return;
            }
            let mut digits = [0_u8; 16];
            let mut at = digits.len();
            let mut size = data.len();
            loop {
                at -= 1;
                digits[at] = b"0123456789abcdef"[size & 0xf];
                size >>= 4;
                if size == 0 {
                    break;
                }
            }
            let length = digits.len() - at;
            self.line[..length].copy_from_slice(&digits[at..]);
            self.line[length..length + 2].copy_from_slice(b"\r\n");
            self.line_at = 0;
            self.line_end = length + 2;
            self.tail = if last { CHUNK_END_AND_LAST } else { CHUNK_END };
        }
        self.data = data;
    }

    /// Writes what is left, in as few system calls as the socket allows.
    fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            let slices = [
                IoSlice::new(&self.head),
                IoSlice::new(&self.line[self.line_at..self.line_end]),
                IoSlice::new(&self.data),
                IoSlice::new(self.tail),
            ];
            let mut written = match Pin::new(&mut *io).poll_write_vectored(cx, &slices) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(written)) => written,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            };
            let head = written.min(self.head.len());
            if head == self.head.len() {
                // Written: its memory goes at once.
                self.head = Vec::new();
            } else {
                self.head.drain(..head);
            }
            written -= head;
            let line = written.min(self.line_end - self.line_at);
            self.line_at += line;
            written -= line;
            let data = written.min(self.data.len());
            if data == self.data.len() {
                // Written: let go of it (an advanced `Bytes` still holds its whole allocation
                // until the next frame, which for a held stream may be long).
                self.data = Bytes::new();
            } else {
                self.data.advance(data);
            }
            written -= data;
            self.tail = self.tail.get(written..).unwrap_or_default();
        }
        Poll::Ready(Ok(()))
    }
}

/// Writes `head` and then `body` (unless the head says it has none) to `io`, watching
/// `socket` for the client's close all the while: then `body` is dropped at once.
pub(super) async fn send<W: AsyncWrite + Unpin>(
    io: &mut W,
    socket: &Socket,
    head: Vec<u8>,
    delimit: Delimit,
    body: Body,
) -> Result<(), Unsent> {
    let chunked = delimit == Delimit::Chunked;
    let mut body = (delimit != Delimit::None).then_some(body);
    let mut out = Out { head, line: [0; SIZE_LINE], line_at: 0, line_end: 0, data: Bytes::new(), tail: b"" };
    // The head goes with the first frame when that is ready at once.
    let mut first = true;
    poll_fn(|cx| {
        loop {
            if !first || body.is_none() {
                match out.poll_write(io, cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(Unsent::Write(error))),
                    Poll::Pending => {
                        return match socket.poll_gone(cx) {
                            Poll::Ready(_) => Poll::Ready(Err(Unsent::Gone)),
                            Poll::Pending => Poll::Pending,
                        };
                    }
                }
            }
            let Some(polled) = body.as_mut() else { return Poll::Ready(Ok(())) };
            match Pin::new(polled).poll_frame(cx) {
                Poll::Pending if first => first = false,
                Poll::Pending => {
                    return match socket.poll_gone(cx) {
                        Poll::Ready(_) => Poll::Ready(Err(Unsent::Gone)),
                        Poll::Pending => Poll::Pending,
                    };
                }
                Poll::Ready(None) => {
                    first = false;
                    body = None;
                    if chunked {
                        out.tail = LAST_CHUNK;
                    }
                }
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(Unsent::Body(error))),
                Poll::Ready(Some(Ok(frame))) => {
                    first = false;
                    // Trailers are not sent.
                    if let Ok(data) = frame.into_data() {
                        let last = polled_end(&body);
                        out.frame(data, chunked, last && chunked);
                        if last {
                            body = None;
                        }
                    }
                }
            }
        }
    })
    .await
}

/// Whether the body has no more frames (so its end is written with its last data).
fn polled_end(body: &Option<Body>) -> bool {
    body.as_ref().is_none_or(|body| body.is_end_stream())
}
