//! What every handler shares: the settings, the flight manager, the live requests, the
//! backend chosen at start, the counters, the shutdown signal and the admission permits.

use std::sync::Arc;

use streamflight_tokio::{Config, Flights};
use tokio::sync::Semaphore;

use crate::backend::Backend;
use crate::config::Settings;
use crate::flight::{Part, UpstreamError};
use crate::key::Key;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::serve::Shutdown;

/// The gateway's shared state.
pub struct Gateway {
    /// The settings it was started with.
    pub settings: Settings,
    /// One flight per key in the air.
    pub flights: Flights<Key, Part, UpstreamError>,
    /// Live coalesced requests by client id.
    pub registry: Arc<Registry>,
    /// Where flights go.
    pub backend: Backend,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Fires when the shutdown grace is over: open streams end with an error event.
    pub shutdown: Shutdown,
    /// One permit per request served at once (`--max-concurrent-requests`).
    pub permits: Arc<Semaphore>,
}

impl Gateway {
    /// The state for `settings`; an error (one line, for the operator) if they cannot work.
    pub fn new(settings: Settings, shutdown: Shutdown) -> Result<Gateway, String> {
        settings.check()?;
        let mut config = Config::default().linger(settings.linger).resume_window(settings.resume_window);
        if let Some(limit) = settings.history_limit {
            config = config.history_limit(limit);
        }
        let metrics = Arc::new(Metrics::default());
        let backend = Backend::new(&settings, Arc::clone(&metrics))?;
        let permits = Arc::new(Semaphore::new(settings.max_concurrent_requests.min(Semaphore::MAX_PERMITS)));
        Ok(Gateway {
            settings,
            flights: Flights::new(config),
            registry: Arc::default(),
            backend,
            metrics,
            shutdown,
            permits,
        })
    }
}
