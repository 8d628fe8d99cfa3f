//! The request side of the layer: a body read up to a bound to be keyed, and the body the inner
//! service gets, whole or (past the bound) what was read followed by the rest.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::BoxError;

/// The request body the inner service gets: the bytes the layer read (all of a coalesced
/// request's body; the start of one that passes through), then what the client had not sent yet,
/// its trailers or its error, as the client sent them. `Data` is [`Bytes`].
pub struct RequestBody<B> {
    /// What was read, not yet given on.
    read: Option<Bytes>,
    /// The trailers met while reading.
    trailers: Option<HeaderMap>,
    /// The client's body failed while it was read.
    error: Option<BoxError>,
    /// The rest of the client's body.
    rest: Option<Pin<Box<B>>>,
}

impl<B> RequestBody<B> {
    /// A whole body, read already.
    pub(super) fn whole(bytes: Bytes) -> Self {
        RequestBody { read: Some(bytes), trailers: None, error: None, rest: None }
    }

    /// A body not read at all.
    fn untouched(body: Pin<Box<B>>) -> Self {
        RequestBody { read: None, trailers: None, error: None, rest: Some(body) }
    }
}

impl<B> std::fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody").field("read", &self.read).finish_non_exhaustive()
    }
}

impl<B: Body<Error: Into<BoxError>>> Body for RequestBody<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Nothing in it is pinned but the boxed rest.
        let this = &mut *self;
        if let Some(read) = this.read.take().filter(|read| !read.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(read))));
        }
        if let Some(error) = this.error.take() {
            return Poll::Ready(Some(Err(error)));
        }
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        match this.rest.as_mut() {
            Some(rest) => poll_bytes(rest.as_mut(), cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        let read = self.read.as_ref().is_none_or(Bytes::is_empty);
        let rest = self.rest.as_ref().is_none_or(|rest| rest.is_end_stream());
        read && self.error.is_none() && self.trailers.is_none() && rest
    }

    fn size_hint(&self) -> SizeHint {
        let read = self.read.as_ref().map_or(0, |read| read.len() as u64);
        let mut hint = self.rest.as_ref().map_or_else(|| SizeHint::with_exact(0), |rest| rest.size_hint());
        hint.set_lower(hint.lower().saturating_add(read));
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper.saturating_add(read));
        }
        hint
    }
}

/// The next frame of `body`, its data as `Bytes` and its error boxed.
pub(super) fn poll_bytes<B: Body<Error: Into<BoxError>>>(
    body: Pin<&mut B>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    let frame = ready!(body.poll_frame(cx));
    Poll::Ready(frame.map(|frame| frame.map(|frame| frame.map_data(into_bytes)).map_err(Into::into)))
}

/// `data` as `Bytes` (no copy when it is `Bytes` already).
pub(super) fn into_bytes(mut data: impl Buf) -> Bytes {
    data.copy_to_bytes(data.remaining())
}

/// A request body, read for its key or not.
pub(super) enum Read<B> {
    /// All of it, within the bound.
    Whole(Bytes),
    /// Not all of it: over the bound (declared or sent), or with trailers or an error. It passes
    /// through, as the client sent it.
    Partial(RequestBody<B>),
}

/// Reads `body` up to `limit` bytes. A body that declares more is not read at all; nothing is
/// reserved on a declared length, only on bytes that came.
pub(super) async fn read<B>(body: B, limit: usize) -> Read<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut body = Box::pin(body);
    if body.size_hint().lower() > limit as u64 {
        return Read::Partial(RequestBody::untouched(body));
    }
    let mut read = BytesMut::new();
    loop {
        let frame = match poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            None => return Read::Whole(read.freeze()),
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                let error = Some(error.into());
                return Read::Partial(RequestBody {
                    read: Some(read.freeze()),
                    trailers: None,
                    error,
                    rest: None,
                });
            }
        };
        match frame.into_data() {
            Ok(data) => {
                let over = read.len() + data.remaining() > limit;
                read.put(data);
                if over {
                    return Read::Partial(RequestBody {
                        read: Some(read.freeze()),
                        trailers: None,
                        error: None,
                        rest: Some(body),
                    });
                }
            }
            // Trailers are not in the key: a request with trailers is not coalesced.
            Err(frame) => {
                let trailers = frame.into_trailers().ok();
                return Read::Partial(RequestBody {
                    read: Some(read.freeze()),
                    trailers,
                    error: None,
                    rest: Some(body),
                });
            }
        }
    }
}
