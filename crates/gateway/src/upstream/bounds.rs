//! The bounds on one answer (`--max-answer-bytes`, `--max-answer-duration`, G7): past either,
//! a flight's parts end in an error and the backend's stream is dropped, aborting its request.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};

use crate::config::Settings;
use crate::flight::{Broken, Part, Parts, UpstreamError};

/// How much one answer may carry, and for how long.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    /// Most bytes of the answer: its events' data, or its body's bytes.
    pub(crate) bytes: usize,
    /// Longest the answer may last, counted from its request.
    pub(crate) duration: Duration,
}

impl Bounds {
    /// The bounds `settings` set.
    pub(crate) fn of(settings: &Settings) -> Bounds {
        Bounds { bytes: settings.max_answer_bytes, duration: settings.max_answer_duration }
    }

    /// `parts`, of an answer requested at `started`, ended with [`Broken::AnswerTooLarge`] or
    /// [`Broken::AnswerTooLong`] at the first part past a bound. The stream is dropped then,
    /// so the upstream sees its request's connection (or HTTP/2 stream) closed.
    pub(crate) fn apply(self, parts: Parts, started: Instant) -> Parts {
        // One deadline for the whole answer, not a timer per part.
        let deadline = Box::pin(tokio::time::sleep_until(started + self.duration));
        Bounded { parts: Some(parts), left: self.bytes, deadline, bounds: self }.boxed()
    }

    fn too_large(&self) -> UpstreamError {
        let message = format!(
            "the answer grew past {} bytes (--max-answer-bytes); the upstream request was aborted",
            self.bytes
        );
        UpstreamError::broken(Broken::AnswerTooLarge, message)
    }

    fn too_long(&self) -> UpstreamError {
        let message = format!(
            "the answer lasted longer than {:?} (--max-answer-duration); the upstream request was aborted",
            self.duration
        );
        UpstreamError::broken(Broken::AnswerTooLong, message)
    }
}

/// A backend's parts within [`Bounds`].
struct Bounded {
    /// `None` once a bound is passed: dropped, which aborts the request.
    parts: Option<Parts>,
    /// Bytes the answer may still carry.
    left: usize,
    deadline: Pin<Box<Sleep>>,
    bounds: Bounds,
}

impl Bounded {
    fn fail(&mut self, error: UpstreamError) -> Poll<Option<Result<Part, UpstreamError>>> {
        self.parts = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl Stream for Bounded {
    type Item = Result<Part, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(parts) = this.parts.as_mut() else { return Poll::Ready(None) };
        match parts.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(part))) => {
                let size = match &part {
                    Part::Event(event) => event.data.len(),
                    Part::Body(body) => body.len(),
                    Part::Head(_) => 0,
                };
                if size > this.left {
                    let error = this.bounds.too_large();
                    return this.fail(error);
                }
                this.left -= size;
                Poll::Ready(Some(Ok(part)))
            }
            Poll::Ready(end) => Poll::Ready(end),
            // The deadline is looked at only while the answer waits: a part that is ready costs
            // no clock read, and a stream is never ready for ever (tokio's budget makes every
            // socket read wait in turn).
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let error = this.bounds.too_long();
                    this.fail(error)
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::http::StatusCode;
    use bytes::Bytes;
    use futures::stream;

    use super::*;
    use crate::flight::{Event, Head};

    fn event(data: &'static str) -> Result<Part, UpstreamError> {
        Ok(Part::Event(Event { name: None, data: Bytes::from_static(data.as_bytes()), usage_only: false }))
    }

    fn head() -> Result<Part, UpstreamError> {
        Ok(Part::Head(Arc::new(Head { status: StatusCode::OK, headers: Default::default() })))
    }

    fn kind(item: Option<Result<Part, UpstreamError>>) -> Option<Broken> {
        match item {
            Some(Err(UpstreamError::Broken { kind, .. })) => Some(kind),
            _ => None,
        }
    }

    /// Sets its flag when dropped: the stream it rides in was dropped.
    struct Dropped(Arc<AtomicBool>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn an_answer_up_to_its_bound_passes_and_one_byte_more_fails_and_is_dropped() {
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Dropped(Arc::clone(&dropped));
        let parts = stream::iter([head(), event("12345"), event("678"), event("9"), event("never")])
            .chain(stream::pending())
            .map(move |part| {
                let _ = &guard;
                part
            })
            .boxed();
        let bounds = Bounds { bytes: 8, duration: Duration::from_secs(60) };
        let mut bounded = bounds.apply(parts, Instant::now());
        for _ in 0..3 {
            assert!(matches!(bounded.next().await, Some(Ok(_))));
        }
        let failed = bounded.next().await;
        let Some(Err(UpstreamError::Broken { kind: Broken::AnswerTooLarge, message })) = failed else {
            panic!("{failed:?}")
        };
        assert!(message.contains("--max-answer-bytes") && message.contains('8'), "{message}");
        assert!(dropped.load(Ordering::SeqCst), "the upstream's stream is dropped at once");
        assert!(bounded.next().await.is_none());
    }

    #[tokio::test]
    async fn a_quiet_answer_fails_at_its_deadline() {
        let parts = stream::iter([head(), event("a")]).chain(stream::pending()).boxed();
        let bounds = Bounds { bytes: 1 << 20, duration: Duration::from_millis(50) };
        let mut bounded = bounds.apply(parts, Instant::now());
        assert!(matches!(bounded.next().await, Some(Ok(_))));
        assert!(matches!(bounded.next().await, Some(Ok(_))));
        let failed = bounded.next().await;
        let Some(Err(UpstreamError::Broken { kind: Broken::AnswerTooLong, message })) = failed else {
            panic!("{failed:?}")
        };
        assert!(message.contains("--max-answer-duration"), "{message}");
        assert!(bounded.next().await.is_none());
    }

    #[tokio::test]
    async fn errors_and_ends_pass_as_they_are() {
        let error = UpstreamError::broken(Broken::Truncated, "cut");
        let parts = stream::iter([head(), Err(error)]).boxed();
        let bounds = Bounds { bytes: 1, duration: Duration::from_secs(60) };
        let mut bounded = bounds.apply(parts, Instant::now());
        assert!(matches!(bounded.next().await, Some(Ok(_))));
        assert_eq!(kind(bounded.next().await), Some(Broken::Truncated));
        assert!(bounded.next().await.is_none());
    }
}
