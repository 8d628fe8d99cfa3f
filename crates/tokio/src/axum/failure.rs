//! What a flight that failed becomes: the response of a failure before the first byte, and
//! the short reason a client is told (never the upstream's own text).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::Failure;

/// The default response for a flight that ended before its first item: a
/// status that says whose fault it is, and a short plain-text reason. The
/// upstream's error or panic: `502 Bad Gateway`; no runtime: `503 Service
/// Unavailable`; a cancel: `409 Conflict` (someone cancelled this request on
/// purpose); anything else (a reader that lagged): `500`.
///
/// The upstream's own error text is never sent: it may hold an internal
/// address or a secret (a `reqwest::Error` names its URL). Answer with it,
/// or with your own shape, through [`Answer::on_failure`](super::Answer::on_failure).
pub fn failure_response<E>(failure: &Failure<E>) -> Response {
    let status = match failure {
        Failure::Upstream(_) | Failure::Panicked => StatusCode::BAD_GATEWAY,
        Failure::NoRuntime => StatusCode::SERVICE_UNAVAILABLE,
        Failure::Cancelled => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, failure_reason(failure)).into_response()
}

/// The text of a failure for a client, in a response body or the last SSE event: a short
/// reason, never the upstream's own text.
pub(super) fn failure_reason<E>(failure: &Failure<E>) -> &'static str {
    match failure {
        Failure::Upstream(_) => "the upstream failed",
        Failure::Panicked => "the upstream panicked",
        Failure::NoRuntime => "no runtime to run the upstream on",
        Failure::Lagged { .. } => "this client fell behind the retained history",
        Failure::Cancelled => "the request was cancelled",
        _ => "the answer was lost",
    }
}
