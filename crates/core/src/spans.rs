//! [`Spans`] (feature `tracing`): an [`Observer`] that opens a `tracing` span per flight and per
//! request, records their events in them, and closes each at its end.

use std::collections::HashMap;

use tracing::Span;
use tracing::field::Empty;

use crate::sync::{Mutex, lock};
use crate::{FlightId, FlightSummary, Observer, RequestEvent, RequestId};

/// An [`Observer`] that gives every flight an `INFO` span named `flight` (field `flight`, its
/// id; at its end `outcome`, `items` and `served` are recorded on it) and every request a `DEBUG`
/// span named `request` (fields `request`, `flight`, `role`), a child of its flight's span while
/// that flight runs. Each event is a `DEBUG` event in its span (`started`, `first item`,
/// `cancelled`, `detached`, `resumed`…), a flight's end an `INFO` one (`WARN` unless `done`);
/// each span closes at its flight's or request's end. Set it with
/// [`Config::observer`](crate::Config::observer), and enter
/// [`request_span`](Spans::request_span) to put a handler's own events in its request's span.
///
/// It keeps the open spans in two maps behind their locks: with no subscriber interested, a
/// span costs little, but the maps do not. Wrap it in an observer of your own to do more.
///
/// ```
/// use std::sync::Arc;
/// use futures::{StreamExt, stream};
/// use streamflight_core::Config;
/// use streamflight_core::spans::Spans;
/// # use streamflight_core::driver::Runtime;
/// # #[derive(Default)]
/// # struct Tokio;
/// # impl Runtime for Tokio {
/// #     fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> bool {
/// #         drop(tokio::spawn(task));
/// #         true
/// #     }
/// #     fn sleep(&self, d: std::time::Duration) -> impl Future<Output = ()> + Send + 'static {
/// #         async move { tokio::time::sleep(d).await }
/// #     }
/// # }
/// # type Flights<K, T, E> = streamflight_core::driver::Flights<K, T, E, Tokio>;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let spans = Arc::new(Spans::new());
/// let flights = Flights::<&str, u32, String>::new(Config::default().observer(spans.clone()));
/// let answer = flights.request("prompt", async { Ok(stream::iter([Ok(1), Ok(2)])) });
/// let id = answer.id();
/// // The request's span, for the handler's own events.
/// let span = spans.request_span(id).expect("open until the request ends");
/// span.in_scope(|| tracing::info!("answering"));
/// assert_eq!(answer.collect::<Vec<_>>().await.len(), 3);
/// assert!(spans.request_span(id).is_none(), "closed at its end");
/// # }
/// ```
pub struct Spans {
    flights: Mutex<HashMap<FlightId, Span>>,
    requests: Mutex<HashMap<RequestId, Span>>,
}

impl Spans {
    /// No span open yet.
    pub fn new() -> Self {
        Spans { flights: Mutex::new(HashMap::new()), requests: Mutex::new(HashMap::new()) }
    }

    /// The span of the live request `id`, if it has not ended.
    pub fn request_span(&self, id: RequestId) -> Option<Span> {
        lock(&self.requests).get(&id).cloned()
    }

    /// The span of the running flight `flight`, if it has not ended.
    pub fn flight_span(&self, flight: FlightId) -> Option<Span> {
        lock(&self.flights).get(&flight).cloned()
    }

    /// Takes the span of the request `id` out: it ended.
    fn close_request(&self, id: RequestId) -> Option<Span> {
        lock(&self.requests).remove(&id)
    }
}

impl Default for Spans {
    fn default() -> Self {
        Spans::new()
    }
}

impl core::fmt::Debug for Spans {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (flights, requests) = (lock(&self.flights).len(), lock(&self.requests).len());
        f.debug_struct("Spans").field("flights", &flights).field("requests", &requests).finish()
    }
}

impl Observer for Spans {
    fn flight_started(&self, flight: FlightId) {
        let span = tracing::info_span!("flight", %flight, outcome = Empty, items = Empty, served = Empty);
        tracing::debug!(parent: &span, "started");
        lock(&self.flights).insert(flight, span);
    }

    fn first_item(&self, flight: FlightId) {
        if let Some(span) = self.flight_span(flight) {
            tracing::debug!(parent: &span, "first item");
        }
    }

    fn flight_ended(&self, flight: FlightId, summary: FlightSummary) {
        // Taken out under the lock, recorded and dropped (closed) outside it.
        let Some(span) = lock(&self.flights).remove(&flight) else { return };
        let FlightSummary { outcome, items, served } = summary;
        span.record("outcome", outcome.as_str()).record("items", items).record("served", served);
        match outcome {
            crate::Outcome::Done => tracing::info!(parent: &span, %outcome, items, served, "ended"),
            _ => tracing::warn!(parent: &span, %outcome, items, served, "ended"),
        }
    }

    fn request(&self, id: RequestId, event: RequestEvent) {
        match event {
            RequestEvent::Joined { flight, role } => {
                let parent = self.flight_span(flight);
                let span = tracing::debug_span!(parent: parent.and_then(|span| span.id()), "request", request = %id, %flight, %role);
                tracing::debug!(parent: &span, "joined");
                lock(&self.requests).insert(id, span);
            }
            RequestEvent::Detached => {
                if let Some(span) = self.request_span(id) {
                    tracing::debug!(parent: &span, "detached");
                }
            }
            RequestEvent::Resumed { from } => {
                if let Some(span) = self.request_span(id) {
                    tracing::debug!(parent: &span, from, "resumed");
                }
            }
            RequestEvent::Cancelled | RequestEvent::Dropped | RequestEvent::Finished => {
                if let Some(span) = self.close_request(id) {
                    let how = match event {
                        RequestEvent::Cancelled => "cancelled",
                        RequestEvent::Dropped => "dropped",
                        _ => "finished",
                    };
                    tracing::debug!(parent: &span, "{how}");
                }
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::string::{String, ToString};
    use std::sync::{Arc, Mutex};
    use std::vec::Vec;

    use futures::{StreamExt, stream};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    use super::Spans;
    use crate::Config;
    use crate::driver::{Flights, Runtime};

    #[derive(Default)]
    struct OnTokio;
    impl Runtime for OnTokio {
        fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> bool {
            drop(tokio::spawn(task));
            true
        }
        /// Never needed: the test sets no linger and no resume window.
        fn sleep(&self, _: core::time::Duration) -> impl Future<Output = ()> + Send + 'static {
            core::future::pending()
        }
    }

    /// A subscriber that writes down each span it opens and closes (its last handle dropped), by name.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<(Vec<String>, Vec<usize>)>>);

    impl Subscriber for Log {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let (log, handles) = &mut *self.0.lock().unwrap();
            log.push(["open ", span.metadata().name()].concat());
            handles.push(1);
            Id::from_u64(handles.len() as u64)
        }
        fn clone_span(&self, id: &Id) -> Id {
            self.0.lock().unwrap().1[id.into_u64() as usize - 1] += 1;
            id.clone()
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, _: &Event<'_>) {}
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
        fn try_close(&self, id: Id) -> bool {
            let (log, handles) = &mut *self.0.lock().unwrap();
            let handles = &mut handles[id.into_u64() as usize - 1];
            *handles -= 1;
            if *handles == 0 {
                let opened =
                    log.iter().filter(|line| line.starts_with("open")).nth(id.into_u64() as usize - 1);
                let name = opened.expect("opened").replace("open", "close");
                log.push(name);
            }
            *handles == 0
        }
    }

    /// A flight and its two requests each get a span, closed at their ends: the flight's first
    /// (its end is told before its readers see it), then each request's.
    #[test]
    fn a_span_per_flight_and_per_request_closed_at_their_ends() {
        let log = Log::default();
        let _default = tracing::subscriber::set_default(log.clone());
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let spans = Arc::new(Spans::new());
        let flights: Flights<&str, u32, u8, OnTokio> =
            Flights::new(Config::default().observer(spans.clone()));
        runtime.block_on(async {
            let leader = flights.request("k", async { Ok(stream::iter([Ok(1)])) });
            let follower = flights.request("k", async { Ok(stream::iter([Ok(1)])) });
            assert_eq!(leader.collect::<Vec<_>>().await.len(), 2);
            assert_eq!(follower.collect::<Vec<_>>().await.len(), 2);
        });
        let log = log.0.lock().unwrap().0.clone();
        let expected =
            ["open flight", "open request", "open request", "close flight", "close request", "close request"];
        assert_eq!(log, expected.map(ToString::to_string));
        assert_eq!(format!("{spans:?}"), "Spans { flights: 0, requests: 0 }");
    }
}
