//! streamflight-gateway: an OpenAI-compatible proxy in which identical in-flight requests share
//! one upstream request; [`App`] is the whole server, `main` only parses flags and runs it.
//!
//! ```no_run
//! use clap::Parser;
//! use streamflight_gateway::{App, Settings};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = Settings::parse_from(["streamflight-gateway", "--listen", "127.0.0.1:0"]);
//! let listener = streamflight_gateway::bind(&settings)?;
//! let app = App::new(settings)?;
//! // Serves until SIGTERM or SIGINT, then drains gracefully.
//! app.run(listener, streamflight_gateway::http::serve::signal()).await?;
//! # Ok(()) }
//! ```

#![warn(unreachable_pub)]

mod answer;
pub mod config;
pub mod dialect;
mod fleet;
pub mod flight;
pub mod http;
mod http1;
mod kept_headers;
mod key;
pub mod logs;
mod metrics;
pub mod reload;
mod sim;
pub mod sse;
mod state;
mod telemetry;
mod tenant;
pub mod upstream;

use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::Settings;
use config::file::Loaded;

use crate::fleet::handoff;
use crate::http::limits::Limits;
use crate::http::serve::{Connections, Shutdown};
use crate::http::{routes, serve};
use crate::state::Gateway;

/// jemalloc's settings for the binary (`main.rs` exports them as `_rjem_malloc_conf`; the
/// `floor` example too): freed pages go back to the system at once (with a delay, up to 4 MB of
/// them per arena stayed dirty for as long as the gateway was quiet, which with 2,000 held
/// streams was a KB each), and each thread caches fewer freed blocks (an idle worker's cache is
/// never given back), at no cost in CPU or latency that the latency example can see
/// (BENCHMARKS.md, issue 15). NUL-terminated, as jemalloc reads it.
pub const JEMALLOC_CONF: &[u8] =
    b"background_thread:true,dirty_decay_ms:0,muzzy_decay_ms:0,tcache_nslots_small_max:32,lg_tcache_nslots_mul:-1\0";

/// The gateway, ready to serve: its routes and how it keeps connections.
pub struct App {
    router: axum::Router,
    connections: Connections,
    shutdown: Shutdown,
    /// Fired once `stop` resolves: `/readyz` says 503 from then.
    draining: Shutdown,
    backend: String,
    /// With `--redis`: the fleet, whose flights led for other replicas a stop waits for.
    fleet: Option<streamflight_redis::Fleet<key::Key, flight::Part, flight::UpstreamError>>,
    /// The limits a reload changes.
    limits: Arc<Limits>,
    /// With an OTLP endpoint: the exporter, flushed when the server stops.
    exporting: Option<telemetry::Exporting>,
    /// With `--admin-listen`: its socket, bound, and its routes.
    admin: Option<(TcpListener, axum::Router)>,
}

/// How long the admin port lets a probe or a scrape in progress finish once the gateway has
/// drained: they take milliseconds.
const ADMIN_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

impl App {
    /// Builds the gateway for `settings`. The error is one line for the operator (flags that
    /// cannot work together, a CA file that cannot be read).
    pub fn new(settings: Settings) -> Result<App, String> {
        let shutdown = Shutdown::new();
        let mut gateway = Gateway::new(settings, shutdown.clone())?;
        let settings = &gateway.settings;
        let connections = Connections {
            header_timeout: settings.header_timeout,
            shutdown_grace: settings.shutdown_grace,
            write_timeout: settings.write_timeout,
            // The connection layer counts into the metrics' counter.
            write_timeouts: gateway.metrics.write_timeouts.clone(),
            workers: settings.connection_threads(),
        };
        // With `--redis`, this replica carries out the cancels the others pass on.
        handoff::serve_cancels(&gateway.flights, Arc::clone(&gateway.registry));
        let mut backend = gateway.backend.describe();
        if let Some(fleet) = gateway.flights.fleet() {
            backend.push_str(&format!(
                ", flights shared through Redis as replica {}",
                fleet.config().replica_id()
            ));
        }
        let fleet = gateway.flights.fleet().cloned();
        let limits = Arc::clone(&gateway.limits);
        let exporting = match telemetry::install(&gateway.settings)? {
            Some((traces, exporting)) => {
                gateway.traces = Some(traces);
                Some(exporting)
            }
            None => None,
        };
        let draining = gateway.draining.clone();
        let admin = match gateway.settings.admin_listen {
            Some(address) => Some(
                serve::bind(address, ADMIN_BACKLOG)
                    .map_err(|e| format!("cannot listen on {address} (--admin-listen): {e}"))?,
            ),
            None => None,
        };
        let gateway = Arc::new(gateway);
        let admin = admin.map(|listener| (listener, http::admin::router(Arc::clone(&gateway))));
        let router = routes::router(gateway);
        Ok(App { router, connections, shutdown, draining, backend, fleet, limits, exporting, admin })
    }

    /// The admin port's address (`--admin-listen`, its port chosen if it was 0), if there is one.
    pub fn admin_address(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// What SIGHUP re-reads and changes in this app ([`reload`]): `args` are the program's
    /// arguments, `loaded` the settings loaded from them (with which this app was made).
    pub fn reloader<I, T>(&self, args: I, loaded: Loaded) -> reload::Reloader
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        reload::Reloader::new(args.into_iter().map(Into::into).collect(), loaded, Arc::clone(&self.limits))
    }

    /// What answers the flights, for the startup line.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Serves on `listener` until `stop` resolves, then drains (see [`serve::serve`]); in a
    /// fleet, the drain also waits for the flights this replica leads for the others (R26).
    /// The admin port, if any, answers until the drain is over, `/readyz` with 503 from `stop`.
    pub async fn run(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let settled = fleet::settled(self.fleet);
        let draining = self.draining;
        let stop = async move {
            stop.await;
            draining.end();
        };
        let admin = self.admin.map(|(admin, router)| {
            let connections = Connections {
                shutdown_grace: ADMIN_GRACE,
                // Its own count: `streamflight_write_timeouts_total` is about clients.
                write_timeouts: Default::default(),
                // The admin port's few requests stay on the main runtime.
                workers: 0,
                ..self.connections.clone()
            };
            let (over, drained) = tokio::sync::oneshot::channel::<()>();
            let drained = async move {
                let _ = drained.await;
            };
            (over, tokio::spawn(serve::serve(admin, router, connections, Shutdown::new(), drained)))
        });
        let served =
            serve::serve_settling(listener, self.router, self.connections, self.shutdown, stop, settled)
                .await;
        if let Some((over, admin)) = admin {
            drop(over);
            // Its own errors are its own: the gateway's drain is what the caller asked about.
            let _ = admin.await;
        }
        // The spans of the last requests, ended by the drain, are exported before the stop.
        if let Some(exporting) = self.exporting {
            exporting.shutdown().await;
        }
        served
    }
}

/// The admin port's listen backlog: a few probes and scrapes at a time.
const ADMIN_BACKLOG: u32 = 128;

/// Binds the listening socket of `settings` (`--listen`, `--backlog`).
pub fn bind(settings: &Settings) -> io::Result<TcpListener> {
    serve::bind(settings.listen, settings.backlog)
}

/// Serves the gateway on `listener` until SIGTERM or SIGINT, then drains gracefully.
pub async fn serve(listener: TcpListener, settings: Settings) -> io::Result<()> {
    let app = App::new(settings).map_err(io::Error::other)?;
    app.run(listener, serve::signal()).await
}
