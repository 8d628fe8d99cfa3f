//! streamflight on async-std: one upstream stream for every identical in-flight streaming request.
//!
//! [`Flights::request`] joins the live flight for a key or starts one; the
//! returned [`Subscription`] is a `Stream` of [`Event`]s. The decisions are
//! `streamflight-core`'s; this crate only runs each flight as an async-std task.
//!
//! ```
//! use futures::StreamExt;
//! use streamflight_async_std::{Event, Flights};
//!
//! async_std::task::block_on(async {
//!     let flights: Flights<String, String, String> = Flights::default();
//!     let upstream = async { Ok(futures::stream::iter(["Hello", ", world"].map(|t| Ok(t.to_string())))) };
//!     let mut answer = flights.request("the prompt".to_string(), upstream);
//!     assert_eq!(answer.next().await, Some(Event::Item("Hello".to_string())));
//!     assert_eq!(answer.next().await, Some(Event::Item(", world".to_string())));
//!     assert_eq!(answer.next().await, Some(Event::Done));
//!     assert_eq!(answer.next().await, None);
//! });
//! ```

use std::future::Future;

pub use streamflight_core::flights::{Runtime, Subscription};
pub use streamflight_core::{CancelError, Config, Event, Failure, LateJoin, Orphan, RequestId, Role, Stats};

/// The manager on async-std: see [`streamflight_core::flights::Flights`] for its methods.
pub type Flights<K, T, E> = streamflight_core::flights::Flights<K, T, E, AsyncStd>;

/// async-std as a streamflight [`Runtime`]: flight tasks run on its global executor.
#[derive(Clone, Copy, Debug, Default)]
pub struct AsyncStd;

impl Runtime for AsyncStd {
    fn spawn<F: Future<Output = ()> + Send + 'static>(task: F) -> bool {
        drop(async_std::task::spawn(task));
        true
    }
}
