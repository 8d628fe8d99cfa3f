//! What every handler shares: the settings, the flight manager, the live requests, the
//! backend chosen at start, the metrics, the shutdown and drain signals and the admission permits.

use std::sync::Arc;

use streamflight_redis::Flights;
use streamflight_tokio::Config;

use crate::answer::Keeping;
use crate::answer::registry::Registry;
use crate::config::Settings;
use crate::flight::{Part, UpstreamError};
use crate::http::admin::StoreLook;
use crate::http::limits::Limits;
use crate::http::offload::Offload;
use crate::http::serve::Shutdown;
use crate::key::Key;
use crate::metrics::Metrics;
use crate::telemetry::Traces;
use crate::tenant::Tenants;
use crate::upstream::backend::Backend;

/// The gateway's flight manager: on the fleet `--redis` names, or on none.
pub(crate) type GatewayFlights = Flights<Key, Part, UpstreamError>;

/// The gateway's shared state.
pub(crate) struct Gateway {
    /// The settings it was started with.
    pub settings: Settings,
    /// One flight per key in the air; with `--redis`, each new local flight leads or follows
    /// the fleet's flight of its key, and requests are held, cancelled and resumed across it.
    pub flights: GatewayFlights,
    /// Live coalesced requests by client id.
    pub registry: Arc<Registry>,
    /// Where flights go.
    pub backend: Backend,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// How every stream is kept: the shutdown's end of grace, the keep-alive, the resume window.
    pub keeping: Keeping,
    /// The admission permits (`--max-concurrent-requests`) and the body bounds: a reload
    /// changes them while requests are served.
    pub limits: Arc<Limits>,
    /// Where bodies too big for an async worker are parsed.
    pub offload: Offload,
    /// Who a request's credentials make it (G5): keyed by `--fleet-secret`, else a random key.
    pub tenants: Tenants,
    /// With an OTLP endpoint: what traces each request (`telemetry`).
    pub traces: Option<Traces>,
    /// Fired when the gateway stops taking requests (SIGTERM): `/readyz` says 503 from then.
    pub draining: Shutdown,
    /// The last look `/readyz` took at the fleet's store.
    pub store_look: StoreLook,
}

impl Gateway {
    /// The state for `settings`, on the fleet `--redis` names (no connection is made yet); an
    /// error (one line, for the operator) if they cannot work.
    pub(crate) fn new(settings: Settings, shutdown: Shutdown) -> Result<Gateway, String> {
        settings.check()?;
        let metrics = Arc::new(Metrics::new(&settings.metrics_models));
        let mut config = Config::default()
            .linger(settings.linger)
            .resume_window(settings.resume_window)
            .observer(metrics.observer());
        if let Some(limit) = settings.history_limit {
            config = config.history_limit(limit);
        }
        if let Some(budget) = settings.linger_budget {
            config = config.weigher(crate::flight::weight as fn(&Part) -> usize).linger_budget(budget);
        }
        let backend = Backend::new(&settings, Arc::clone(&metrics))?;
        let limits = Arc::new(Limits::of(&settings));
        let window = settings.linger.max(settings.resume_window);
        let flights = match settings.redis.as_deref() {
            Some(url) => Flights::new(crate::fleet::connect(url, &settings)?, config),
            None => Flights::alone(config),
        };
        let registry = Arc::new(Registry::new(window));
        let resume = (!settings.resume_window.is_zero()).then_some(settings.resume_window);
        let keeping = Keeping { shutdown, keep_alive: settings.keep_alive, resume };
        let offload = Offload::new(Arc::clone(&metrics));
        let tenants = settings
            .fleet_secret
            .as_deref()
            .map_or_else(Tenants::random, |s| Ok(Tenants::keyed(s.as_bytes())))?;
        Ok(Gateway {
            settings,
            flights,
            registry,
            backend,
            metrics,
            keeping,
            limits,
            offload,
            tenants,
            traces: None,
            draining: Shutdown::new(),
            store_look: StoreLook::default(),
        })
    }
}
