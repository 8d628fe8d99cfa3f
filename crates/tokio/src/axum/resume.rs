//! [`resume`]: the rest of a [resumable](super::Answer::sse_resumable) stream for a client that
//! lost it, from its `Last-Event-ID` (or `?after=N`), and [`ResumeRefused`], why not.

use std::fmt;
use std::hash::Hash;

use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Answer;
use crate::{Flights, ParseIdError, RequestId, ResumeError};

/// The answer of a detached request ([R18](streamflight_core::design#r18)), from the event after
/// the last one its client had: the `Last-Event-ID` header of `request`, or else its `after`
/// query parameter (`?after=N`), or, with neither, from the flight's first item. Answer it with
/// [`Answer::sse_resumable`], as the stream it resumes: the same status rules (chosen on the
/// first event: the rest of the items, or the request's end), the same numbering, so that
/// what the client holds once it has read to the end is the uninterrupted stream. It can be
/// cut and resumed again.
///
/// The request's id is no secret (`r0.3.1`): check that `request` comes from whoever made the
/// request (your session, your tenant) before resuming it, as for a cancel.
///
/// # Errors
///
/// [`ResumeRefused`], which is a response (`IntoResponse`): `400` for a `Last-Event-ID` that
/// is not a number, `404` for an id that is not a request's, or one that ended or whose resume
/// window passed, `409` for a request that another connection reads, `410` for a request whose
/// events after `Last-Event-ID` were released (`history_limit`), `400` for an id the stream has
/// not sent. See its variants.
///
/// ```
/// use axum::extract::{Path, State};
/// use axum::http::request::Parts;
/// use axum::response::Response;
/// use axum::response::sse::Event as SseEvent;
/// use streamflight_tokio::Flights;
/// use streamflight_tokio::axum::{ResumeRefused, resume};
///
/// // GET /requests/{id}/events, with `Last-Event-ID: 7` or `?after=7`: the events from id 8 on.
/// async fn events(
///     State(flights): State<Flights<String, String, std::io::Error>>,
///     Path(id): Path<String>,
///     request: Parts,
/// ) -> Result<Response, ResumeRefused> {
///     let answer = resume(&flights, id.parse()?, &request)?;
///     Ok(answer.sse_resumable(|token| SseEvent::default().data(token)).await)
/// }
/// # let _: axum::Router = axum::Router::new()
/// #     .route("/requests/{id}/events", axum::routing::get(events))
/// #     .with_state(Flights::default());
/// ```
pub fn resume<K, T, E>(
    flights: &Flights<K, T, E>,
    id: RequestId,
    request: &Parts,
) -> Result<Answer<T, E>, ResumeRefused>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    let from = match last_event_id(request) {
        None => 0,
        Some(last) => {
            let last = last.trim().parse::<u64>().map_err(|_| ResumeRefused::InvalidLastEventId)?;
            last.checked_add(1).ok_or(ResumeRefused::InvalidLastEventId)?
        }
    };
    let subscription = flights.resume(id, from).map_err(ResumeRefused::Resume)?;
    Ok(Answer::new(subscription))
}

/// The `Last-Event-ID` header's text, or else the `after` query parameter's.
fn last_event_id(request: &Parts) -> Option<&str> {
    if let Some(value) = request.headers.get(header::HeaderName::from_static("last-event-id")) {
        // Not text: no number either, refused by the caller's parse.
        return Some(value.to_str().unwrap_or("not text"));
    }
    request.uri.query()?.split('&').find_map(|pair| pair.strip_prefix("after="))
}

/// Why [`resume`] gave no answer. Each variant is a response (`IntoResponse`): the status
/// below, and a short plain-text reason.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeRefused {
    /// `Last-Event-ID` (or `after`) is not the id of an event (a decimal number): `400 Bad
    /// Request`.
    InvalidLastEventId,
    /// The request id is not one (it does not parse): `404 Not Found`, as for an unknown one.
    InvalidRequestId,
    /// The manager refused the resume, by [`ResumeError`]:
    /// [`UnknownRequest`](ResumeError::UnknownRequest) (ended, resume window passed, never
    /// detached and gone): `404 Not Found`; [`NotDetached`](ResumeError::NotDetached) (another
    /// connection reads it, or the server has not seen this client's cut yet): `409 Conflict`;
    /// [`Released`](ResumeError::Released) (the events after `Last-Event-ID` are gone, a gap
    /// the client cannot fill): `410 Gone`; [`Ahead`](ResumeError::Ahead) (an id the stream
    /// has not sent): `400 Bad Request`; any other: `500`.
    Resume(ResumeError),
}

impl ResumeRefused {
    /// The response's status (see the variants).
    pub fn status(&self) -> StatusCode {
        match self {
            ResumeRefused::InvalidLastEventId => StatusCode::BAD_REQUEST,
            ResumeRefused::InvalidRequestId => StatusCode::NOT_FOUND,
            ResumeRefused::Resume(error) => match error {
                ResumeError::UnknownRequest => StatusCode::NOT_FOUND,
                ResumeError::NotDetached => StatusCode::CONFLICT,
                ResumeError::Released { .. } => StatusCode::GONE,
                ResumeError::Ahead { .. } => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// The response body's text: a short reason for the client.
    fn reason(&self) -> &'static str {
        match self {
            ResumeRefused::InvalidLastEventId => {
                "Last-Event-ID (or after) must be the id of an event of this stream"
            }
            ResumeRefused::InvalidRequestId => "no such request",
            ResumeRefused::Resume(error) => match error {
                ResumeError::UnknownRequest => "no such request: it ended, or its resume window passed",
                ResumeError::NotDetached => "the request's stream is being read",
                ResumeError::Released { .. } => "the events after Last-Event-ID are no longer held",
                ResumeError::Ahead { .. } => "Last-Event-ID names an event this stream has not sent",
                _ => "the request cannot be resumed",
            },
        }
    }
}

impl From<ParseIdError> for ResumeRefused {
    fn from(_: ParseIdError) -> Self {
        ResumeRefused::InvalidRequestId
    }
}

impl fmt::Display for ResumeRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ResumeRefused {}

impl IntoResponse for ResumeRefused {
    fn into_response(self) -> Response {
        (self.status(), self.reason()).into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::Request;
    use futures::StreamExt;

    use super::*;
    use crate::{Config, Event};

    fn parts(last: &str) -> Parts {
        Request::builder().header("last-event-id", last).body(()).unwrap().into_parts().0
    }

    #[tokio::test]
    async fn a_gap_is_gone_and_every_refusal_has_its_status() {
        let config = Config::default().history_limit(2).resume_window(Duration::from_secs(30));
        let flights: Flights<&str, u32, String> = Flights::new(config);
        let (items, upstream) = futures::channel::mpsc::unbounded();
        let mut answer = flights.request("k", async { Ok(upstream) });
        items.unbounded_send(Ok(0)).unwrap();
        assert_eq!(answer.next().await, Some(Event::Item(0)));
        let id = answer.detach();
        for item in 1..5 {
            items.unbounded_send(Ok(item)).unwrap();
        }
        drop(items);
        // The flight reads its upstream to the end, releasing all but the last two items.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while flights.stats().active_flights > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the flight ends within 10 s");
            tokio::task::yield_now().await;
        }
        let gap = resume(&flights, id, &parts("0")).unwrap_err();
        assert_eq!(gap, ResumeRefused::Resume(ResumeError::Released { missed: 2 }));
        assert_eq!(gap.into_response().status(), StatusCode::GONE);
        let ahead = resume(&flights, id, &parts("9")).unwrap_err();
        assert_eq!(ahead.status(), StatusCode::BAD_REQUEST);
        assert_eq!(resume(&flights, id, &parts("x")).unwrap_err(), ResumeRefused::InvalidLastEventId);
        assert_eq!(ResumeRefused::from(ParseIdError::Malformed).status(), StatusCode::NOT_FOUND);

        // Still detached after the refusals: from what is held, the rest and the end.
        let rest = resume(&flights, id, &parts("2")).unwrap().into_subscription();
        assert_eq!(rest.collect::<Vec<_>>().await, [Event::Item(3), Event::Item(4), Event::Done]);
        let gone = resume(&flights, id, &parts("2")).unwrap_err();
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    }
}
