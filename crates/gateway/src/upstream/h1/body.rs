//! A response body read straight from its connection by whoever polls it (the flight's task):
//! the connection goes back to the pool at the body's clean end, and is closed if dropped before.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use http_body::Frame;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

use super::pool::Pool;
use crate::http1::framing::Framing;

/// The most read from a connection at a time. The buffer is on the stack of each read: a held
/// stream keeps none between its pieces (only a piece of framing cut by a read, rarely).
const READ_BUF: usize = 4096;

/// How long the rest of a body whose answer has ended (after Chat's `[DONE]`) is waited for,
/// so that its connection can be used again: the upstream sends it at once.
const LINGER: Duration = Duration::from_secs(1);

/// A response's body: its connection goes back to the pool when the body has ended, and is
/// closed if the body is dropped before (the upstream then stops generating).
pub(crate) struct Body {
    /// The connection, until the body has ended or failed.
    stream: Option<TcpStream>,
    framing: Framing,
    /// The response lets the connection serve another request after this one.
    keep_alive: bool,
    /// Data read with the head, not yet given out.
    first: Option<Bytes>,
    /// Bytes read and not decoded yet: the start of a piece of framing that a read cut (at
    /// most [`MAX_LINE`](crate::http1::framing::MAX_LINE) bytes), or what followed the body's end.
    pending: Vec<u8>,
    pool: Arc<Pool>,
}

impl Body {
    /// The body framed by `framing` on `stream`, of which `rest` was read with the head.
    pub(super) fn new(
        stream: TcpStream,
        mut framing: Framing,
        keep_alive: bool,
        rest: Vec<u8>,
        pool: Arc<Pool>,
    ) -> Result<Body, String> {
        let mut data = Vec::with_capacity(rest.len());
        let used = framing.decode(&rest, &mut data)?;
        let mut body =
            Body { stream: Some(stream), framing, keep_alive, first: None, pending: Vec::new(), pool };
        body.keep(&rest[used..]);
        body.first = (!data.is_empty()).then(|| Bytes::from(data));
        Ok(body)
    }

    /// The answer has ended: waits up to [`LINGER`] for the body's own end (its last chunk) in
    /// a task of its own, so that its connection can be used again.
    pub(crate) fn finish(mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if self.stream.is_none() {
            return;
        }
        // Already there, most often: no task needed.
        if std::future::poll_fn(|cx| self.poll_rest(cx)).now_or_never().is_some() {
            return;
        }
        runtime.spawn(async move {
            let _ = tokio::time::timeout(LINGER, std::future::poll_fn(|cx| self.poll_rest(cx))).await;
        });
    }

    /// Reads and drops the rest of the body, at most [`READ_BUF`] bytes of it (more is not an
    /// answer's end).
    fn poll_rest(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut read = 0;
        loop {
            match self.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(data))) => {
                    read += data.len();
                    if read > READ_BUF {
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(_) => return Poll::Ready(()),
            }
        }
    }

    /// The body's next data, `None` at its end. After an error the connection is closed and
    /// the body has ended.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        let polled = self.poll_read_data(cx);
        if let Poll::Ready(Some(Err(_))) = polled {
            self.stream = None;
        }
        polled
    }

    /// [`Body::poll_data`] past what came with the head.
    fn poll_read_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            let Some(stream) = self.stream.as_mut() else { return Poll::Ready(None) };
            if self.framing.ended() {
                self.end();
                return Poll::Ready(None);
            }
            // Not zeroed first: `ReadBuf` hands out only what the read filled.
            let mut buf = [MaybeUninit::<u8>::uninit(); READ_BUF];
            let wanted = self.framing.wanted(READ_BUF);
            let mut read = ReadBuf::uninit(&mut buf[..wanted]);
            if let Err(error) = ready!(Pin::new(stream).poll_read(cx, &mut read)) {
                return Poll::Ready(Some(Err(io::Error::new(
                    error.kind(),
                    format!("cannot read the response's body: {error}"),
                ))));
            }
            let read = read.filled();
            if read.is_empty() {
                if self.framing != Framing::Close {
                    let text = "the upstream closed the connection before the body's end (unexpected EOF)";
                    return Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::UnexpectedEof, text))));
                }
                // Read to its close: never reused.
                self.stream = None;
                return Poll::Ready(None);
            }
            // The data is never longer than what was read: one allocation, never grown.
            let mut data = Vec::with_capacity(read.len() + self.pending.len());
            let decoded = if self.pending.is_empty() {
                // Most often: decoded from the read's own buffer, nothing kept.
                self.decode(read, &mut data).map(|used| self.keep(&read[used..]))
            } else {
                let mut pending = std::mem::take(&mut self.pending);
                pending.extend_from_slice(read);
                self.decode(&pending, &mut data).map(|used| {
                    pending.drain(..used);
                    self.pending = if pending.is_empty() { Vec::new() } else { pending };
                })
            };
            if let Err(error) = decoded {
                return Poll::Ready(Some(Err(error)));
            }
            if !data.is_empty() {
                return Poll::Ready(Some(Ok(Bytes::from(data))));
            }
        }
    }

    /// [`Framing::decode`], its error as an I/O error's text.
    fn decode(&mut self, input: &[u8], data: &mut Vec<u8>) -> io::Result<usize> {
        self.framing.decode(input, data).map_err(|text| {
            io::Error::new(io::ErrorKind::InvalidData, format!("the response's body is not valid: {text}"))
        })
    }

    /// Keeps `left` (bytes not decoded) for the next read; an empty buffer gives its memory back.
    fn keep(&mut self, left: &[u8]) {
        if left.is_empty() {
            self.pending = Vec::new();
        } else {
            self.pending.clear();
            self.pending.extend_from_slice(left);
        }
    }

    /// The body has ended: its connection goes back to the pool if the response allows it and
    /// nothing followed the body.
    fn end(&mut self) {
        if let Some(stream) = self.stream.take()
            && self.keep_alive
            && self.pending.is_empty()
        {
            self.pool.put(stream);
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        self.poll_data(cx).map(|data| data.map(|data| data.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_none() && self.first.is_none()
    }
}
