//! The operator's endpoints: `/metrics`, `/healthz` (alive) and `/readyz` (ready for traffic),
//! on the public port, or with `--admin-listen` on a port of their own that answers through a drain.
//!
//! With `--admin-listen`, `/metrics` leaves the public port (what it tells is the operator's
//! business); `/healthz` and `/readyz` stay there too, for a load balancer that can only probe
//! the port it sends traffic to: they tell nothing a client could use. The admin port's
//! requests get no access line (a probe every few seconds would drown the clients' lines).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::time::Instant;

use crate::metrics;
use crate::state::Gateway;

type Shared = Arc<Gateway>;

/// How long `/readyz` waits for the fleet's store to answer before calling it unreachable.
pub(crate) const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one look at the store stands for: `/readyz`, reachable by anyone on the public
/// port, makes at most one store command a second however often it is asked.
const STORE_LOOK_LASTS: Duration = Duration::from_secs(1);

/// The admin port's routes over `gateway`.
pub(crate) fn router(gateway: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(gateway)
}

/// `GET /metrics`: every series, as OpenMetrics text.
pub(crate) async fn metrics(State(gateway): State<Shared>) -> Response {
    let fleet = gateway.flights.fleet_stats();
    let leading = gateway.flights.fleet().map_or(0, |fleet| fleet.leading());
    let text = gateway.metrics.render(&gateway.flights.stats(), &fleet, leading);
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

/// `GET /healthz`: the process is alive (200 for as long as it answers, drain included).
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 `ready` while the gateway takes new requests; 503 with the reason while
/// it drains after SIGTERM, or, with `--redis`, while its store does not answer (unless
/// `--ready-without-redis` accepts serving alone then, which the 200's text says).
pub(crate) async fn readyz(State(gateway): State<Shared>) -> Response {
    if gateway.draining.is_over() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining: stopping after SIGTERM or SIGINT\n")
            .into_response();
    }
    if gateway.flights.fleet().is_some() && !gateway.store_look.reachable(&gateway).await {
        if gateway.settings.ready_without_redis {
            let text = "ready: the store is unreachable, serving alone (--ready-without-redis)\n";
            return (StatusCode::OK, text).into_response();
        }
        return (StatusCode::SERVICE_UNAVAILABLE, "the fleet's store (--redis) is unreachable\n")
            .into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

/// The last look at the fleet's store: when, and whether it answered.
#[derive(Debug, Default)]
pub(crate) struct StoreLook(Mutex<Option<(Instant, bool)>>);

impl StoreLook {
    /// Whether the store answered a read within [`STORE_PROBE_TIMEOUT`], looked at again if
    /// the last look is older than [`STORE_LOOK_LASTS`]. True without a fleet.
    async fn reachable(&self, gateway: &Gateway) -> bool {
        let Some(fleet) = gateway.flights.fleet() else { return true };
        let last = *self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, reachable)) = last
            && at.elapsed() < STORE_LOOK_LASTS
        {
            return reachable;
        }
        // A read of a note nobody writes: one round trip, whatever the store holds.
        let answered = tokio::time::timeout(STORE_PROBE_TIMEOUT, fleet.load(b"readyz")).await;
        let reachable = matches!(answered, Ok(Ok(_)));
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), reachable));
        reachable
    }
}
