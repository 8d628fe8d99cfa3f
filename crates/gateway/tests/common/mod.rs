//! Helpers the gateway's end-to-end tests share: starting a gateway on a free port
//! and reading its SSE responses over real HTTP.

#![allow(dead_code)]

use clap::Parser;
use streamflight_gateway::Settings;

/// Starts a gateway on 127.0.0.1 with a free port; `flags` come after the program name.
pub async fn gateway(flags: &[&str]) -> String {
    let mut args = vec!["streamflight-gateway", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(flags);
    let settings = Settings::parse_from(args);
    let listener = tokio::net::TcpListener::bind(settings.listen).await.expect("bind a free port");
    let address = listener.local_addr().unwrap();
    tokio::spawn(streamflight_gateway::serve(listener, settings));
    format!("http://{address}")
}

/// A client that never goes through a proxy.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}
