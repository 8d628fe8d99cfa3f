//! Server-Sent Events from an upstream (feature `sse`): `streamflight-core`'s bounded decoder,
//! and (feature `reqwest`) a `reqwest::Response` as a `Stream` of its events.
//!
//! An upstream that streams `text/event-stream` (an LLM API) becomes a flight's items with
//! [`events`]: one [`SseEvent`] per event, each at most a set number of bytes, so that an
//! upstream that never ends an event cannot hold a flight's memory.

pub use streamflight_core::sse::{DecodeError, Decoder, Events, EventsError, SseEvent};

/// The events of `response`'s body, each at most `limit` bytes of data: `Ok(event)` for each,
/// then the end; an error of the body or an event over the bound is yielded once, then the
/// end. Check the status first (`error_for_status`): any body is read as events.
///
/// ```
/// use futures::StreamExt;
/// use streamflight_tokio::sse;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// // An upstream's answer (here made in place; usually `client.post(url).send().await?`).
/// let upstream = axum::http::Response::new("data: Hel\n\ndata: lo\n\ndata: [DONE]\n\n");
/// let response = reqwest::Response::from(upstream);
/// let tokens: Vec<_> = sse::events(response, 64 * 1024)
///     .map(|event| event.map(|event| event.data))
///     .take_while(|data| std::future::ready(data.as_ref().is_ok_and(|data| data != "[DONE]")))
///     .collect()
///     .await;
/// assert_eq!(tokens.len(), 2);
/// assert_eq!(tokens[0].as_ref().unwrap(), "Hel");
/// # }
/// ```
#[cfg(feature = "reqwest")]
pub fn events(
    response: reqwest::Response,
    limit: usize,
) -> Events<impl futures_core::Stream<Item = Result<impl AsRef<[u8]>, reqwest::Error>> + Send> {
    Events::new(response.bytes_stream(), limit)
}
