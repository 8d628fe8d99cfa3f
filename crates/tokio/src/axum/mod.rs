//! axum glue (feature `axum`): a [`Subscription`](crate::Subscription) as an HTTP response whose
//! status is chosen on its first event, and a cut SSE stream resumed where its client lost it.
//!
//! [`Answer`] waits for the first event: a flight that fails before its first item is an error
//! status, never a 200 with a cut body. [`Answer::sse_resumable`] numbers its events and
//! detaches its request when the client goes; [`resume`] answers the rest from the client's
//! `Last-Event-ID`.
//!
//! ```
//! use axum::response::Response;
//! use axum::response::sse::Event as SseEvent;
//! use streamflight_tokio::Flights;
//! use streamflight_tokio::axum::Answer;
//!
//! async fn handler(flights: Flights<String, String, std::io::Error>, prompt: String) -> Response {
//!     let upstream = async { Ok(futures::stream::iter([Ok("Hello".to_string())])) };
//!     let subscription = flights.request(prompt, upstream);
//!     // 200 and the events once the first token is there; 502 if the upstream failed first.
//!     Answer::new(subscription).sse(|token| SseEvent::default().data(token)).await
//! }
//! ```

mod answer;
mod failure;
mod resume;
mod streams;

pub use self::answer::Answer;
pub use self::failure::failure_response;
pub use self::resume::{ResumeRefused, resume};
