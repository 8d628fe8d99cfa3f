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
pub mod openai;
pub mod server;
pub mod sim;
pub mod upstream;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};

pub use config::Settings;

/// The gateway's routes, ready to serve: `POST /v1/chat/completions`, `POST /v1/completions`,
/// `DELETE /v1/requests/{id}`, `GET /metrics`, `GET /healthz`. Call it inside a tokio runtime.
pub fn router(settings: Settings) -> Router {
    let body_limit = settings.body_limit;
    let gateway = Arc::new(server::Gateway::new(settings));
    Router::new()
        .route("/v1/chat/completions", post(server::chat))
        .route("/v1/completions", post(server::completions))
        .route("/v1/requests/{id}", delete(server::cancel))
        .route("/metrics", get(server::metrics))
        .route("/healthz", get(server::healthz))
        .fallback(server::not_found)
        .method_not_allowed_fallback(server::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(server::assign_id))
        .with_state(gateway)
}

/// Serves the gateway on `listener` until the process is stopped.
pub async fn serve(listener: tokio::net::TcpListener, settings: Settings) -> std::io::Result<()> {
    axum::serve(listener, router(settings)).await
}
