//! Reading a client's request body within its bounds (G7): at most `--body-limit` bytes, no
//! silence longer than `--body-timeout`, all of it within `--body-deadline`, and a declared length
//! over the limit refused at once; memory follows the bytes received, never the length declared.

use std::io;
use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use axum::body::Body;
use axum::http::header::{CONNECTION, CONTENT_LENGTH, HeaderMap, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
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
    /// Not whole within `--body-deadline` (this long), however steadily it came: 408.
    Deadline(Duration),
    /// The client's connection broke mid-body: 400 (it will hardly read it).
    Broken,
}

impl BodyFailure {
    /// What the gateway says of it.
    pub fn refusal(self) -> Refusal<'static> {
        match self {
            BodyFailure::TooLarge => Refusal::BodyTooLarge,
            BodyFailure::Timeout => Refusal::BodyTimeout,
            BodyFailure::Deadline(deadline) => Refusal::BodyDeadline(deadline),
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

/// The bounds a request body is read within, from the settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    /// `--body-limit`: most bytes.
    pub limit: usize,
    /// `--body-timeout`: longest silence between two pieces.
    pub idle: Duration,
    /// `--body-deadline`: longest the whole body may take, counted from when reading starts
    /// (the head has arrived and the request holds its admission permit).
    pub deadline: Duration,
}

impl Bounds {
    /// The bounds `settings` set.
    pub(crate) fn of(settings: &crate::Settings) -> Bounds {
        Bounds { limit: settings.body_limit, idle: settings.body_timeout, deadline: settings.body_deadline }
    }
}

/// Whether the request declares a body longer than `limit` (refused before reading a byte).
pub(super) fn declared_too_large(headers: &HeaderMap, limit: usize) -> bool {
    declared_length(headers).is_some_and(|length| length > limit as u64)
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// The whole body, read within `bounds`.
///
/// Memory follows what has arrived, never what was declared (a `content-length` is a promise
/// that costs its sender nothing): the buffer at most doubles at each step, so it holds at most
/// twice the bytes received (three times while it moves), and it stops at the declared length
/// once the bytes reach it, so an honest body ends in a buffer of its own size.
pub(super) async fn read(headers: &HeaderMap, body: Body, bounds: Bounds) -> Result<Bytes, BodyFailure> {
    if declared_too_large(headers, bounds.limit) {
        return Err(BodyFailure::TooLarge);
    }
    let declared = declared_length(headers).and_then(|length| usize::try_from(length).ok());
    let mut buffer = Vec::new();
    let mut pieces = std::pin::pin!(bounded(body, bounds));
    while let Some(piece) = pieces.next().await {
        let piece = piece?;
        grow(&mut buffer, piece.len(), declared);
        buffer.extend_from_slice(&piece);
    }
    Ok(Bytes::from(buffer))
}

/// Makes room in `buffer` for `more` bytes: twice its capacity (or what they need, if more), but
/// no more than `declared` when the bytes fit in it.
fn grow(buffer: &mut Vec<u8>, more: usize, declared: Option<usize>) {
    let needed = buffer.len().saturating_add(more);
    if needed <= buffer.capacity() {
        return;
    }
    let mut room = needed.max(buffer.capacity().saturating_mul(2));
    if let Some(declared) = declared.filter(|&declared| declared >= needed) {
        room = room.min(declared);
    }
    buffer.reserve_exact(room - buffer.len());
}

/// The body as a stream of pieces within `bounds`, for passing on without holding it.
pub(super) fn bounded(body: Body, bounds: Bounds) -> impl Stream<Item = Result<Bytes, BodyFailure>> + Send {
    let data = body.into_data_stream();
    let Bounds { limit, idle, deadline } = bounds;
    let end = after(deadline);
    futures::stream::unfold(Some((data, 0usize)), move |state| async move {
        let (mut data, seen) = state?;
        // One timer for both bounds: whichever comes first.
        let silent = after(idle);
        let wake = end.min(silent);
        match timeout_at(wake, data.next()).await {
            Err(_) if wake < silent => Some((Err(BodyFailure::Deadline(deadline)), None)),
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

/// The instant `duration` from now; one too far to be an instant (a flag of years) is thirty
/// years away, as Tokio's own timeouts do.
fn after(duration: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(duration.min(FAR)).unwrap_or(now)
}

impl From<BodyFailure> for io::Error {
    fn from(failure: BodyFailure) -> io::Error {
        io::Error::other(failure.refusal().error().message.into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The capacities `grow` gives a buffer that receives `pieces` of `size` bytes.
    fn capacities(pieces: usize, size: usize, declared: Option<usize>) -> Vec<usize> {
        let mut buffer = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..pieces {
            grow(&mut buffer, size, declared);
            buffer.extend(std::iter::repeat_n(0_u8, size));
            seen.push(buffer.capacity());
        }
        seen
    }

    #[test]
    fn a_declared_length_reserves_nothing_before_the_bytes_come() {
        // One byte of a declared 32 MiB.
        let first = capacities(1, 1, Some(32 << 20));
        assert!(first[0] < 64, "{first:?}");
    }

    #[test]
    fn the_buffer_holds_at_most_twice_what_arrived() {
        for declared in [None, Some(1 << 20), Some(32 << 20)] {
            for (received, capacity) in capacities(200, 5_000, declared).into_iter().enumerate() {
                let received = (received + 1) * 5_000;
                assert!(capacity <= 2 * received, "{declared:?}: {capacity} for {received}");
            }
        }
    }

    #[test]
    fn an_honest_declared_length_ends_in_a_buffer_of_its_size() {
        let declared = 1_000_000;
        let last = *capacities(200, 5_000, Some(declared)).last().unwrap();
        assert_eq!(last, declared);
    }
}
