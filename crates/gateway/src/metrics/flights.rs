//! What the flight manager tells of each flight as it ends, through the library's hooks (an
//! [`Observer`]): how it ended, and how many requests it served: the coalescing, per flight.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use streamflight_tokio::{FlightId, FlightSummary, Observer};

/// Labels of `streamflight_flights_ended_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Ended {
    /// [`Outcome::as_str`](streamflight_tokio::Outcome::as_str): `done`, `failed`, `panicked`,
    /// `no_runtime` or `aborted`.
    outcome: &'static str,
}

/// The series the hooks feed: shared handles, updated once per flight, when it ends.
#[derive(Clone, Debug)]
pub(super) struct Flights {
    ended: Family<Ended, Counter>,
    served: Histogram,
}

impl Flights {
    /// The series, registered in `registry`; `served` counts with `buckets` (1 to 65,536).
    pub(super) fn new(registry: &mut Registry, served: Histogram) -> Flights {
        let ended = Family::<Ended, Counter>::default();
        registry.register(
            "streamflight_flights_ended",
            "Flights ended here, by how they ended",
            ended.clone(),
        );
        registry.register(
            "streamflight_flight_requests",
            "Requests each flight served by its end (its leader included: 1 is a flight nobody shared)",
            served.clone(),
        );
        Flights { ended, served }
    }
}

impl Observer for Flights {
    fn flight_ended(&self, _: FlightId, summary: FlightSummary) {
        self.ended.get_or_create(&Ended { outcome: summary.outcome.as_str() }).inc();
        self.served.observe(summary.served as f64);
    }
}
