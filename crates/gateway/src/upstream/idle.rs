//! An upstream response body read piece by piece, failed when the upstream sends nothing for
//! `--idle-timeout`: one timer for the whole body, moved on only when it fires.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::time::{Instant, Sleep};

use super::response::Body;
use crate::flight::{Broken, UpstreamError};

/// A body and its idle bound. A timeout per piece (tokio's `timeout`) put a timer in the
/// wheel and took it out again for every piece, a tenth of a stream's cost; here a piece only
/// notes when it came, and the one timer, when it fires, is set again from the last piece.
pub(super) struct Idle {
    body: Body,
    idle: Duration,
    /// When the last piece came (or the body was first read).
    last: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Idle {
    /// `body`, whose pieces may be at most `idle` apart (the first within `idle` of now).
    pub(super) fn new(body: Body, idle: Duration) -> Idle {
        let last = Instant::now();
        Idle { body, idle, last, timer: Box::pin(tokio::time::sleep_until(last + idle)) }
    }

    /// The next piece of the body, `None` at its end, or why there is none.
    pub(super) async fn next(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        poll_fn(|cx| self.poll_piece(cx)).await
    }

    /// [`Idle::next`], polled: for a stream that holds its state in its own fields, not in a
    /// future beside them.
    pub(super) fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, UpstreamError>> {
        let piece = match self.body.poll_next_unpin(cx) {
            Poll::Ready(piece) => {
                self.last = Instant::now();
                Some(piece)
            }
            Poll::Pending => loop {
                match self.timer.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => {
                        let deadline = self.last + self.idle;
                        if Instant::now() >= deadline {
                            break None;
                        }
                        // A piece came since the timer was set: it waits from that piece.
                        self.timer.as_mut().reset(deadline);
                    }
                }
            },
        };
        Poll::Ready(match piece {
            None => {
                let message = format!("the upstream sent nothing for {:?}", self.idle);
                Err(UpstreamError::broken(Broken::Timeout, message))
            }
            Some(None) => Ok(None),
            Some(Some(Err(e))) => {
                Err(UpstreamError::broken(Broken::Truncated, format!("the upstream response broke: {e}")))
            }
            Some(Some(Ok(piece))) => Ok(Some(piece)),
        })
    }

    /// The answer has ended normally ([`Body::finish`]).
    pub(super) fn finish(self) {
        self.body.finish();
    }
}
