//! A request's body, read from its connection's socket only when its handler polls it (after
//! admission), through the framing the gateway's client uses too; no buffer held between reads.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::socket::{Slot, Socket};
use crate::http1::framing::Framing;

/// The most read from the socket at a time, into a buffer on the stack of each read.
const READ_BUF: usize = 4096;

/// A request's body. Dropped before its end, it leaves its connection to be closed after the
/// response (the rest of its bytes are never taken for a request).
pub(super) struct Body {
    socket: Arc<Socket>,
    /// Its request's number on the connection ([`Slot::request`]).
    request: u64,
}

impl Body {
    /// The body of the request whose framing `socket`'s slot now holds.
    pub(super) fn new(socket: Arc<Socket>) -> Body {
        let request = {
            let mut slot = socket.slot();
            slot.held = true;
            slot.request
        };
        Body { socket, request }
    }

    /// The shared slot if it is still this body's request's.
    fn slot(&self) -> Option<MutexGuard<'_, Slot>> {
        let slot = self.socket.slot();
        (slot.request == self.request).then_some(slot)
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Some(mut slot) = self.slot() {
            slot.held = false;
        }
    }
}

/// A failure of the body, as the handler sees it.
fn invalid(text: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("the request's body is not valid: {text}"))
}

/// Takes the body's data out of `input` (what was just read, or what was kept) and keeps in
/// `slot` what it leaves: a piece of framing cut by the read, or the next request's bytes.
fn decode(slot: &mut Slot, input: &[u8]) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let used = slot.framing.decode(input, &mut data).map_err(invalid)?;
    let left = &input[used..];
    slot.received = if left.is_empty() { Vec::new() } else { left.to_vec() };
    Ok(data)
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = self.get_mut();
        let socket = &*this.socket;
        // Its request answered and the next one begun: this body has ended.
        let Some(mut slot) = this.slot() else { return Poll::Ready(None) };
        // Asked for by the client, sent once the handler wants the body (never before: a
        // request refused unread is not waited for).
        ready!(socket.poll_interim(&mut slot, cx))?;
        loop {
            if slot.framing.ended() {
                return Poll::Ready(None);
            }
            if !slot.received.is_empty() {
                let received = std::mem::take(&mut slot.received);
                let data = decode(&mut slot, &received)?;
                if !data.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(data)))));
                }
                if slot.framing.ended() {
                    return Poll::Ready(None);
                }
                // A piece of framing waits for more bytes: the next read adds them.
            }
            ready!(socket.stream.poll_read_ready(cx))?;
            let mut buf = [0_u8; READ_BUF];
            let wanted = slot.framing.wanted(READ_BUF);
            let read = match socket.read(&mut buf[..wanted]) {
                Ok(0) => {
                    let text = "the client closed its connection before the body's end";
                    return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::UnexpectedEof, text))));
                }
                Ok(read) => &buf[..read],
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Some(Err(error))),
            };
            let data = if slot.received.is_empty() {
                // Most often: decoded from the read's own buffer, nothing kept.
                decode(&mut slot, read)?
            } else {
                let mut pending = std::mem::take(&mut slot.received);
                pending.extend_from_slice(read);
                decode(&mut slot, &pending)?
            };
            if !data.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(data)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.slot().is_none_or(|slot| slot.framing.ended())
    }

    fn size_hint(&self) -> SizeHint {
        match self.slot().map(|slot| slot.framing) {
            Some(Framing::Length(left)) => SizeHint::with_exact(left),
            Some(_) => SizeHint::default(),
            None => SizeHint::with_exact(0),
        }
    }
}
