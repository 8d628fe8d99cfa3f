//! A response written to its client: its head (status line, `date`, headers, how the body is
//! delimited), then its body's frames straight from their `Bytes`, those ready together in one
//! vectored write; nothing is kept between writes but the unwritten rest of a partial one.

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

/// The most frames taken ahead of the socket: those ready when the connection is woken go in
/// one vectored write (a flight wakes its readers once for all the events it has), and a
/// client slower than its answer holds no more than these until the socket takes them.
const BATCH: usize = 16;

/// One frame to write: its chunk size line (if chunked), its data, and its end.
struct Piece {
    line: [u8; SIZE_LINE],
    line_at: u8,
    line_end: u8,
    data: Bytes,
    end: &'static [u8],
}

impl Piece {
    /// `data`, framed as a chunk if `chunked`.
    fn new(data: Bytes, chunked: bool) -> Piece {
        let mut piece = Piece { line: [0; SIZE_LINE], line_at: 0, line_end: 0, data, end: b"" };
        if chunked {
            let mut size = piece.data.len();
            let digits = (usize::BITS - size.leading_zeros()).div_ceil(4).max(1) as usize;
            for at in (0..digits).rev() {
                piece.line[at] = b"0123456789abcdef"[size & 0xf];
                size >>= 4;
            }
            piece.line[digits..digits + 2].copy_from_slice(b"\r\n");
            piece.line_end = (digits + 2) as u8;
            piece.end = CHUNK_END;
        }
        piece
    }

    fn line(&self) -> &[u8] {
        &self.line[usize::from(self.line_at)..usize::from(self.line_end)]
    }

    /// Takes `written` bytes off its front; what is left of them once it is written whole.
    fn advance(&mut self, written: usize) -> usize {
        let line = written.min(self.line().len());
        self.line_at += line as u8;
        let written = written - line;
        let data = written.min(self.data.len());
        self.data.advance(data);
        let written = written - data;
        let end = written.min(self.end.len());
        self.end = &self.end[end..];
        written - end
    }

    fn is_empty(&self) -> bool {
        self.line().is_empty() && self.data.is_empty() && self.end.is_empty()
    }
}

/// What is to be written and is not yet: the head (until it is), the frames taken, and the
/// body's end. A partial write leaves the rest here; once all is written nothing is kept (a
/// held stream keeps no buffer and no frame between its events).
struct Out {
    head: Vec<u8>,
    pieces: Vec<Piece>,
    tail: &'static [u8],
}

/// A chunk's end, and a chunked body's end.
const CHUNK_END: &[u8] = b"\r\n";
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

impl Out {
    fn is_empty(&self) -> bool {
        self.head.is_empty() && self.pieces.is_empty() && self.tail.is_empty()
    }

    /// Writes what is left, in as few system calls as the socket allows.
    fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            let mut slices = [IoSlice::new(&[]); 2 + 3 * BATCH];
            let mut count = 0;
            for slice in std::iter::once(&self.head[..])
                .chain(self.pieces.iter().flat_map(|piece| [piece.line(), &piece.data[..], piece.end]))
                .chain(std::iter::once(self.tail))
                .filter(|slice| !slice.is_empty())
            {
                slices[count] = IoSlice::new(slice);
                count += 1;
            }
            let mut written = match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]) {
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
            let mut done = 0;
            for piece in &mut self.pieces {
                written = piece.advance(written);
                if !piece.is_empty() {
                    break;
                }
                done += 1;
            }
            if done == self.pieces.len() {
                // Written: the frames (and the room for them) go at once.
                self.pieces = Vec::new();
            } else {
                self.pieces.drain(..done);
            }
            self.tail = self.tail.get(written..).unwrap_or_default();
        }
        Poll::Ready(Ok(()))
    }
}

/// Writes `head` and then `body` (unless the head says it has none) to `io`, watching
/// `socket` for the client's close all the while: then `body` is dropped at once.
///
/// The frames ready when it is polled (up to [`BATCH`]) go out together with what is left to
/// write, in one vectored write: one system call for all that a wake brings.
pub(super) async fn send<W: AsyncWrite + Unpin>(
    io: &mut W,
    socket: &Socket,
    head: Vec<u8>,
    delimit: Delimit,
    body: Body,
) -> Result<(), Unsent> {
    let chunked = delimit == Delimit::Chunked;
    let mut body = (delimit != Delimit::None).then_some(body);
    let mut out = Out { head, pieces: Vec::new(), tail: b"" };
    poll_fn(|cx| {
        loop {
            // Every frame ready now, up to the batch.
            let mut waiting = false;
            while let Some(polled) = body.as_mut()
                && out.pieces.len() < BATCH
            {
                match Pin::new(polled).poll_frame(cx) {
                    Poll::Pending => {
                        waiting = true;
                        break;
                    }
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(Unsent::Body(error))),
                    Poll::Ready(Some(Ok(frame))) => {
                        // Trailers are not sent; an empty frame is not a chunk (it would end the body).
                        if let Ok(data) = frame.into_data()
                            && !data.is_empty()
                        {
                            out.pieces.push(Piece::new(data, chunked));
                        }
                        if !polled_end(&body) {
                            continue;
                        }
                        body = None;
                    }
                    Poll::Ready(None) => body = None,
                }
                if chunked {
                    out.tail = LAST_CHUNK;
                }
            }
            match out.poll_write(io, cx) {
                Poll::Ready(Ok(())) if body.is_none() => return Poll::Ready(Ok(())),
                // All written, and the body has more to come later: wait for it.
                Poll::Ready(Ok(())) if waiting => {}
                // All written, and the batch was full: take the next frames.
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(Unsent::Write(error))),
                Poll::Pending => {}
            }
            return match socket.poll_gone(cx) {
                Poll::Ready(_) => Poll::Ready(Err(Unsent::Gone)),
                Poll::Pending => Poll::Pending,
            };
        }
    })
    .await
}

/// Whether the body has no more frames (so its end is written with its last data).
fn polled_end(body: &Option<Body>) -> bool {
    body.as_ref().is_none_or(|body| body.is_end_stream())
}

#[cfg(test)]
mod tests {
    use futures::stream;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A writer that records each write it is given.
    #[derive(Default)]
    struct Recorded(Vec<Vec<u8>>);

    impl AsyncWrite for Recorded {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.0.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let write: Vec<u8> = bufs.iter().flat_map(|buf| buf.iter().copied()).collect();
            let written = write.len();
            self.0.push(write);
            Poll::Ready(Ok(written))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn the_frames_ready_together_go_in_one_write_and_a_full_batch_in_the_next() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let socket = Socket::new(listener.accept().await.unwrap().0);
        let events = BATCH + 3;
        let frames = (0..events).map(|i| Ok::<_, io::Error>(Bytes::from(format!("data: {i}\n\n"))));
        let body = Body::from_stream(stream::iter(frames));
        let mut io = Recorded::default();
        send(&mut io, &socket, b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), Delimit::Chunked, body).await.unwrap();
        let writes = io.0;
        assert_eq!(writes.len(), 2, "a batch, then the rest: {writes:?}");
        let all: Vec<u8> = writes.concat();
        let mut expected = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        for i in 0..events {
            let data = format!("data: {i}\n\n");
            expected.extend_from_slice(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes());
        }
        expected.extend_from_slice(LAST_CHUNK);
        assert_eq!(String::from_utf8_lossy(&all), String::from_utf8_lossy(&expected));
        drop(client);
    }
}
