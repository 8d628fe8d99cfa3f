//! streamflight-gateway: an OpenAI-compatible streaming proxy in which identical in-flight
//! requests share one upstream request; [`router`] builds the server, `main` only runs it.
//!
//! ```no_run
//! use clap::Parser;
//! use streamflight_gateway::{Settings, serve};
//!
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! let settings = Settings::parse_from(["streamflight-gateway", "--listen", "127.0.0.1:0"]);
//! let listener = tokio::net::TcpListener::bind(settings.listen).await?;
//! serve(listener, settings).await
//! # }
//! ```

pub mod config;
pub mod key;
pub mod sim;
pub mod upstream;

use axum::Router;
use axum::routing::get;

pub use config::Settings;

/// The gateway's routes, ready to serve.
pub fn router(settings: Settings) -> Router {
    let _ = settings;
    Router::new().route("/healthz", get(healthz))
}

/// Serves the gateway on `listener` until the process is stopped.
pub async fn serve(listener: tokio::net::TcpListener, settings: Settings) -> std::io::Result<()> {
    axum::serve(listener, router(settings)).await
}

async fn healthz() -> &'static str {
    "ok\n"
}
