//! The write timeout on a client's connection (G11): a client that takes no byte of its response
//! for `--write-timeout` has its connection closed, so that what its response holds is freed.
//!
//! `WriteTimeout` wraps the accepted socket, under the HTTP/1.1 connection (`http::h1`) or
//! hyper's HTTP/2 one. Its timer runs only while a write is stuck: it is armed when the socket
//! answers a write (or flush) with `Pending`, its send buffer full, and disarmed by any progress.
//! When it fires, the stuck write fails with [`io::ErrorKind::TimedOut`]; the connection then
//! closes and drops the responses on it,
//! which releases their admission permits and their readers' hold on their flights' histories.
//!
//! A stuck write alone does not prove the client took nothing: the kernel reports a full send
//! buffer writable again only once a third of it has drained, and it grows that buffer up to
//! `net.ipv4.tcp_wmem`'s maximum (4 MiB by default), which a client reading slowly but steadily
//! may take longer than the timeout to drain. So on Linux, when the timer fires, the kernel is
//! asked how many bytes the client has not acknowledged yet (`SIOCOUTQ`): fewer than when the
//! write got stuck, and the client is taking bytes, the timer starts again; as many, and it is
//! cut. Elsewhere a stuck write is cut when the timer fires.
//!
//! The timer starts once the kernel's buffers are full: a client that reads nothing is cut after
//! the timeout plus the time the answer takes to fill them (its receive buffer and the gateway's
//! send buffer, up to a few MiB).
//!
//! Cost, per connection: a pointer to the shared `Limit`, one to the timer, which is made on
//! the connection's first stuck write only (most never have one) and reused after, and a count:
//! no task, and no timer at all for a client that keeps up (issue 15 counts a held stream's every
//! byte); a system call when a write gets stuck and when the timer fires.
//!
//! What it does not cover: an HTTP/2 client that keeps reading the socket but withholds
//! flow-control window (`WINDOW_UPDATE`) from one stream. hyper then stops writing that stream
//! without a write ever being stuck, so this guard never sees it; the HTTP/2 keep-alive pings do
//! not either, since the client answers them. Such a stream is bounded by the answer's own end
//! (and `--max-answer-duration`), not by this timeout. Covering it would need hyper to say how
//! long a stream has waited for window, which it does not.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep, sleep};
use tracing::debug;

/// Counts the connections closed by their write timeout; clones share one count.
#[derive(Clone, Debug, Default)]
pub struct WriteTimeouts(Arc<AtomicU64>);

impl WriteTimeouts {
    /// The connections closed so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// What every connection's guard shares: the timeout, and where its firings are counted.
#[derive(Debug)]
pub(crate) struct Limit {
    /// How long a write may stay stuck; zero: for ever (no timeout).
    pub(crate) after: Duration,
    /// Where the connections cut are counted.
    pub(crate) cut: WriteTimeouts,
}

/// Where a connection's writes stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stall {
    /// The last write made progress: the timer (if there is one) is not running.
    Writing,
    /// The last write was stuck: the timer runs from then.
    Stuck,
    /// The timer fired: every write that cannot proceed fails at once.
    Cut,
}

/// An IO that may tell how much of what was written its peer has not acknowledged yet.
pub(crate) trait Unacknowledged {
    /// Bytes written that the peer has not acknowledged; `None` if it cannot be known.
    fn unacknowledged(&self) -> Option<u32>;
}

impl Unacknowledged for tokio::net::TcpStream {
    #[cfg(target_os = "linux")]
    fn unacknowledged(&self) -> Option<u32> {
        use std::os::fd::AsRawFd;
        let mut queued: libc::c_int = 0;
        // SAFETY: SIOCOUTQ (TIOCOUTQ) on a TCP socket writes one int through the pointer, which
        // points to one; the descriptor is this stream's own, open while it is borrowed.
        let done = unsafe { libc::ioctl(self.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        if done == 0 { u32::try_from(queued).ok() } else { None }
    }

    #[cfg(not(target_os = "linux"))]
    fn unacknowledged(&self) -> Option<u32> {
        None
    }
}

/// A connection's IO, with its writes bounded by `Limit::after` (see the module's documentation).
#[derive(Debug)]
pub(crate) struct WriteTimeout<T> {
    io: T,
    limit: Arc<Limit>,
    /// Made on the first stuck write and kept for the next ones.
    timer: Option<Pin<Box<Sleep>>>,
    /// What the client had not acknowledged when the timer (re)started; [`UNKNOWN`] if not known.
    unacknowledged: u32,
    stall: Stall,
}

/// [`WriteTimeout::unacknowledged`] when the IO cannot tell.
const UNKNOWN: u32 = u32::MAX;

/// Notes in `noted` what `io`'s peer has not acknowledged; true if that is less than before.
fn took_bytes(io: &impl Unacknowledged, noted: &mut u32) -> bool {
    let now = io.unacknowledged().unwrap_or(UNKNOWN);
    now < std::mem::replace(noted, now)
}

impl<T: Unacknowledged> WriteTimeout<T> {
    /// `io`, its writes bounded by `limit`.
    pub(crate) fn new(io: T, limit: Arc<Limit>) -> WriteTimeout<T> {
        WriteTimeout { io, limit, timer: None, unacknowledged: UNKNOWN, stall: Stall::Writing }
    }

    /// What the socket's answer to a write means once the timer has had its say: progress (or an
    /// error of its own) disarms it; `Pending` arms it, or fails the write if it has fired.
    fn guard<R>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            if self.stall == Stall::Stuck {
                self.stall = Stall::Writing;
            }
            return polled;
        }
        let after = self.limit.after;
        if after.is_zero() {
            return Poll::Pending;
        }
        if self.stall != Stall::Cut {
            if self.stall == Stall::Writing {
                took_bytes(&self.io, &mut self.unacknowledged);
            }
            let timer = match (&mut self.timer, self.stall) {
                (Some(timer), Stall::Stuck) => timer,
                (Some(timer), _) => {
                    timer.as_mut().reset(Instant::now() + after);
                    timer
                }
                (None, _) => self.timer.insert(Box::pin(sleep(after))),
            };
            self.stall = Stall::Stuck;
            // Registers the task to be woken when it fires, so that the stuck write is retried.
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if took_bytes(&self.io, &mut self.unacknowledged) {
                // Slowly, but the client takes bytes: another period, from now.
                timer.as_mut().reset(Instant::now() + after);
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            self.stall = Stall::Cut;
            self.limit.cut.bump();
            debug!("closing a connection whose client took no byte of its response for {after:?}");
        }
        let message = format!("the client took no byte of its response for {after:?} (--write-timeout)");
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, message)))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeout<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unacknowledged + Unpin> AsyncWrite for WriteTimeout<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.guard(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.guard(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.guard(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    use super::*;

    impl Unacknowledged for DuplexStream {
        fn unacknowledged(&self) -> Option<u32> {
            None
        }
    }

    /// Reaching it fails a test; it is not a timing.
    const DEADLINE: Duration = Duration::from_secs(10);

    /// A guarded end of a pipe whose buffer holds 4 bytes, its other end, and the count.
    fn pipe(after: Duration) -> (WriteTimeout<DuplexStream>, DuplexStream, WriteTimeouts) {
        let (ours, theirs) = duplex(4);
        let cut = WriteTimeouts::default();
        let limit = Arc::new(Limit { after, cut: cut.clone() });
        (WriteTimeout::new(ours, limit), theirs, cut)
    }

    fn write(ours: &mut WriteTimeout<DuplexStream>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(ours).poll_write(&mut Context::from_waker(Waker::noop()), bytes)
    }

    #[tokio::test]
    async fn a_write_stuck_for_the_timeout_fails_and_is_counted_once() {
        let (mut ours, _theirs, cut) = pipe(Duration::from_millis(50));
        assert!(ours.timer.is_none(), "no timer before a write is stuck");
        let stuck = tokio::time::timeout(DEADLINE, ours.write_all(b"more than four bytes")).await;
        let error = stuck.expect("the write timeout fires").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        // Later writes fail at once, and the connection is counted once.
        let again = ours.write_all(b"x").await.unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::TimedOut);
        assert_eq!(cut.count(), 1);
    }

    #[tokio::test]
    async fn progress_stops_the_timer_and_the_next_stuck_write_starts_it_again() {
        let (mut ours, mut theirs, cut) = pipe(DEADLINE);
        assert!(write(&mut ours, b"four").is_ready());
        assert!(ours.timer.is_none(), "no timer while writes proceed");
        assert!(write(&mut ours, b"more").is_pending());
        assert_eq!(ours.stall, Stall::Stuck);
        let timer: *const Sleep = &**ours.timer.as_ref().expect("a timer once a write is stuck");
        // The client takes a byte: the next write proceeds, and the timer stops.
        theirs.read_exact(&mut [0_u8; 1]).await.unwrap();
        assert!(write(&mut ours, b"more").is_ready());
        assert_eq!(ours.stall, Stall::Writing);
        // Stuck again: the same timer runs again, from now.
        assert!(write(&mut ours, b"more").is_pending());
        assert_eq!(ours.stall, Stall::Stuck);
        assert!(std::ptr::eq(timer, &**ours.timer.as_ref().unwrap()), "the timer is reused");
        assert_eq!(cut.count(), 0);
    }

    #[test]
    fn a_connection_pays_three_words_for_it() {
        use std::mem::size_of;
        let (guarded, bare) =
            (size_of::<WriteTimeout<tokio::net::TcpStream>>(), size_of::<tokio::net::TcpStream>());
        println!(
            "{bare} bytes for a socket, {guarded} guarded; a stuck write's timer {} more",
            size_of::<Sleep>()
        );
        assert!(guarded <= bare + 3 * size_of::<usize>(), "{guarded} bytes, {bare} bare");
    }

    #[tokio::test]
    async fn zero_is_no_timeout() {
        let (mut ours, _theirs, cut) = pipe(Duration::ZERO);
        assert!(write(&mut ours, b"four").is_ready());
        assert!(write(&mut ours, b"more").is_pending());
        assert!(ours.timer.is_none());
        assert_eq!(cut.count(), 0);
    }
}
