//! The `streamflight-gateway` binary: parses the flags, sets up logging, binds, serves.
//! Everything else is in the library, where the tests reach it.

use clap::Parser;
use streamflight_gateway::{Settings, serve};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let settings = Settings::parse();
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_max_level(settings.log)
        .with_target(false)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    let upstream = settings.upstream.as_deref().unwrap_or("the embedded simulated model");
    tracing::info!(listen = %listener.local_addr()?, %upstream, "streamflight-gateway ready");
    serve(listener, settings).await
}
