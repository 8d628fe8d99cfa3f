//! A client connection's socket, shared by its connection (which writes responses) and its
//! request body (which reads itself when polled), with what they share of the reading.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use std::io::Read as _;

use socket2::SockRef;
use tokio::io::{AsyncWrite, Interest};
use tokio::net::TcpStream;

use crate::http::write_timeout::Unacknowledged;
use crate::http1::framing::Framing;

/// What a request's interim `100 Continue` response is.
pub(super) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The most a read that watches for the client's close takes: bytes that come meanwhile are
/// the next request's (pipelined), kept, and no more is read until the response is done.
const WATCH_READ: usize = 1024;

/// One client connection's socket. Reads and writes go through `&TcpStream` (`try_read`,
/// `try_write`), so the request body can read it from whatever task polls it (passthrough's
/// upstream client) while the connection keeps its write side, without a split or a task.
pub(super) struct Socket {
    pub(super) stream: TcpStream,
    slot: Mutex<Slot>,
}

/// The reading state a connection and its request's body share.
#[derive(Debug)]
pub(super) struct Slot {
    /// Bytes received and not used yet: the body's next bytes (the start of a piece of framing
    /// a read cut), or once it has ended, the next requests' (pipelined). Empty: no memory.
    pub(super) received: Vec<u8>,
    /// The request body's framing, and how far it has been read.
    pub(super) framing: Framing,
    /// The request's body is still held by its handler (and may read).
    pub(super) held: bool,
    /// The interim `100 Continue` the client asked for.
    pub(super) interim: Interim,
    /// Which of the connection's requests the slot is for: a body kept past its response (in
    /// the upstream client's task) must not read the next request's bytes.
    pub(super) request: u64,
}

/// Where a request's `100 Continue` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Interim {
    /// Not asked for, or no longer to be sent (the response was sent first).
    None,
    /// Asked for; this many of its bytes have been written (a write can take part of it).
    Owed(usize),
}

impl Slot {
    /// The connection may read the socket itself: the body is done with it and nothing
    /// received waits to be used (more would only be pipelined requests to hold).
    fn watchable(&self) -> bool {
        self.received.is_empty() && (!self.held || self.framing.ended())
    }
}

/// What watching a streaming response's socket found.
#[derive(Debug)]
pub(super) struct Gone;

impl Socket {
    /// `stream`, no request on it yet.
    pub(super) fn new(stream: TcpStream) -> Socket {
        let slot = Slot {
            received: Vec::new(),
            framing: Framing::Length(0),
            held: false,
            interim: Interim::None,
            request: 0,
        };
        Socket { stream, slot: Mutex::new(slot) }
    }

    /// Reads what the socket has into `buf` (`WouldBlock` when it has nothing).
    ///
    /// A read that leaves room in `buf` took all there was (as tokio's own `poll_read` takes
    /// it, on epoll and kqueue), so the socket is marked not readable until the next bytes
    /// come: otherwise the next read (the watch for the client's close, during every answer)
    /// is a system call that finds nothing, one more a request.
    pub(super) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut read = None;
        let outcome = self.stream.try_io(Interest::READABLE, || {
            let n = (&*SockRef::from(&self.stream)).read(buf)?;
            read = Some(n);
            match n > 0 && n < buf.len() {
                // `WouldBlock` is how readiness is cleared; the bytes are kept in `read`.
                true => Err(io::ErrorKind::WouldBlock.into()),
                false => Ok(()),
            }
        });
        match (read, outcome) {
            (Some(n), _) => Ok(n),
            (None, Err(error)) => Err(error),
            (None, Ok(())) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// The shared reading state. Nothing panics while holding it; if something did, the
    /// state is still whole (each change is one assignment), so a poisoned lock is taken as is.
    pub(super) fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ready once the client has closed or reset the connection, as far as a read can tell
    /// without taking its next request's bytes: pending while the body may still read, or
    /// when bytes wait (then they are kept in [`Slot::received`] and nothing more is read).
    pub(super) fn poll_gone(&self, cx: &mut Context<'_>) -> Poll<Gone> {
        let mut slot = self.slot();
        if !slot.watchable() {
            return Poll::Pending;
        }
        loop {
            if ready!(self.stream.poll_read_ready(cx)).is_err() {
                return Poll::Ready(Gone);
            }
            let mut buf = [0_u8; WATCH_READ];
            match self.read(&mut buf) {
                Ok(0) => return Poll::Ready(Gone),
                Ok(read) => {
                    slot.received.extend_from_slice(&buf[..read]);
                    return Poll::Pending;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Poll::Ready(Gone),
            }
        }
    }

    /// Writes what is left of the `100 Continue` owed, if it is.
    pub(super) fn poll_interim(&self, slot: &mut Slot, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Interim::Owed(at) = slot.interim {
            let Some(rest) = CONTINUE.get(at..).filter(|rest| !rest.is_empty()) else {
                slot.interim = Interim::None;
                break;
            };
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(rest) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(written) => slot.interim = Interim::Owed(at + written),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Sends the connection's FIN: what was written is delivered before the close, even while
    /// the request body (in another task) still holds the socket.
    pub(super) fn finish(&self) {
        let _ = socket2::SockRef::from(&self.stream).shutdown(std::net::Shutdown::Write);
    }
}

/// The write side of a [`Socket`], as the write timeout wraps it.
pub(super) struct Writer(pub(super) Arc<Socket>);

impl Unacknowledged for Writer {
    fn unacknowledged(&self) -> Option<u32> {
        self.0.stream.unacknowledged()
    }
}

impl Writer {
    /// Calls `write` until the socket takes bytes or fails otherwise than by being full.
    fn poll_with(
        &self,
        cx: &mut Context<'_>,
        write: impl Fn(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.stream.poll_write_ready(cx))?;
            match write(&self.0.stream) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                written => return Poll::Ready(written),
            }
        }
    }
}

impl AsyncWrite for Writer {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_with(cx, |stream| stream.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_with(cx, |stream| stream.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.finish();
        Poll::Ready(Ok(()))
    }
}
