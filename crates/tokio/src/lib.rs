//! streamflight on tokio: one upstream stream for every identical in-flight streaming request.
//!
//! [`Flights::request`] joins the live flight for a key or starts one; the
//! returned [`Subscription`] is a `Stream` of [`Event`]s. The decisions are
//! `streamflight-core`'s; this crate only runs each flight as a tokio task.
//!
//! ```
//! use futures::StreamExt;
//! use streamflight_tokio::{Event, Flights};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let flights: Flights<String, String, String> = Flights::default();
//! let upstream = async { Ok(futures::stream::iter(["Hello", ", world"].map(|t| Ok(t.to_string())))) };
//! let mut answer = flights.request("the prompt".to_string(), upstream);
//! assert_eq!(answer.next().await, Some(Event::Item("Hello".to_string())));
//! assert_eq!(answer.next().await, Some(Event::Item(", world".to_string())));
//! assert_eq!(answer.next().await, Some(Event::Done));
//! assert_eq!(answer.next().await, None);
//! # }
//! ```

use std::future::Future;

pub use streamflight_core::flights::{Runtime, Subscription};
pub use streamflight_core::{CancelError, Config, Event, Failure, LateJoin, Orphan, RequestId, Role, Stats};

/// The manager on tokio: see [`streamflight_core::flights::Flights`] for its methods.
/// Flight tasks are spawned on the runtime `request` is called from.
pub type Flights<K, T, E> = streamflight_core::flights::Flights<K, T, E, Tokio>;

/// tokio as a streamflight [`Runtime`]: flight tasks run on the current runtime.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokio;

impl Runtime for Tokio {
    fn spawn<F: Future<Output = ()> + Send + 'static>(task: F) -> bool {
        tokio::runtime::Handle::try_current().map(|runtime| drop(runtime.spawn(task))).is_ok()
    }
}
