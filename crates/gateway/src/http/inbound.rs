//! Reading a client's request body within its bounds (G7): at most `--body-limit` bytes, no
//! silence longer than `--body-timeout`, and a declared length over the limit refused at once.

use std::io;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CONNECTION, CONTENT_LENGTH, HeaderMap, HeaderValue};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use crate::dialect::Api;
use crate::dialect::error::Refusal;

/// Why a body could not be read; each is a response in OpenAI's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFailure {
    /// Over `--body-limit`, declared or sent: 413.
    TooLarge,
    /// Silent for longer than `--body-timeout`: 408.
    Timeout,
    /// The client's connection broke mid-body: 400 (it will hardly read it).
    Broken,
}

impl BodyFailure {
    /// What the gateway says of it.
    pub fn refusal(self) -> Refusal<'static> {
        match self {
            BodyFailure::TooLarge => Refusal::BodyTooLarge,
            BodyFailure::Timeout => Refusal::BodyTimeout,
            BodyFailure::Broken => Refusal::BodyBroken,
        }
    }

    /// The response for this failure in `api`'s shape, with `connection: close`: the rest of
    /// the body is never read, so the connection cannot carry another request, and a client
    /// must not try.
    pub fn response(self, api: Api) -> Response {
        let mut response = api.error_response(&self.refusal().error());
        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

/// Whether the request declares a body longer than `limit` (refused before reading a byte).
pub(super) fn declared_too_large(headers: &HeaderMap, limit: usize) -> bool {
    declared_length(headers).is_some_and(|length| length > limit as u64)
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// The whole body, read within the bounds. Memory: the body once (its buffer is sized from
/// `content-length` when declared, so it is not doubled while growing).
pub(super) async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    idle: Duration,
) -> Result<Bytes, BodyFailure> {
    if declared_too_large(headers, limit) {
        return Err(BodyFailure::TooLarge);
    }
    let expected = declared_length(headers).unwrap_or(0) as usize;
    let mut buffer = BytesMut::with_capacity(expected.min(limit));
    let mut pieces = std::pin::pin!(bounded(body, limit, idle));
    while let Some(piece) = pieces.next().await {
        buffer.extend_from_slice(&piece?);
    }
    Ok(buffer.freeze())
}

/// The body as a stream of pieces within the bounds, for passing on without holding it.
pub(super) fn bounded(
    body: Body,
    limit: usize,
    idle: Duration,
) -> impl Stream<Item = Result<Bytes, BodyFailure>> + Send {
    let data = body.into_data_stream();
    futures::stream::unfold(Some((data, 0usize)), move |state| async move {
        let (mut data, seen) = state?;
        match tokio::time::timeout(idle, data.next()).await {
            Err(_) => Some((Err(BodyFailure::Timeout), None)),
            Ok(None) => None,
            Ok(Some(Err(_))) => Some((Err(BodyFailure::Broken), None)),
            Ok(Some(Ok(piece))) if seen + piece.len() > limit => Some((Err(BodyFailure::TooLarge), None)),
            Ok(Some(Ok(piece))) => {
                let seen = seen + piece.len();
                Some((Ok(piece), Some((data, seen))))
            }
        }
    })
}

impl From<BodyFailure> for io::Error {
    fn from(failure: BodyFailure) -> io::Error {
        io::Error::other(failure.refusal().error().message.into_owned())
    }
}
