//! An existing axum app, coalesced by adding one layer: identical requests in flight make one
//! handler call and all get its streamed answer, each told its role in `x-streamflight-role`.
//!
//! ```sh
//! cargo run -p streamflight-tokio --example layer        # LAYER_ADDR changes 127.0.0.1:3000
//! # in two terminals at once: one "generating" line on the server, the same tokens in both
//! curl -iN localhost:3000/generate -d '{"prompt": "why is the sky blue?", "n": 1}'
//! curl -iN localhost:3000/generate -d '{"n": 1.0, "prompt": "why is the sky blue?"}'
//! curl localhost:3000/stats                               # requests: 2, flights: 1, joined: 1, ...
//! ```

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt;
use streamflight_tokio::Config;
use streamflight_tokio::tower::CoalesceLayer;

/// A slow streaming handler that knows nothing of coalescing: one token every 300 ms.
async fn generate(prompt: String) -> Body {
    println!("generating for {prompt}");
    let tokens = futures::stream::iter(["The sky ", "scatters ", "blue ", "light ", "most.\n"]);
    let paced = tokens.then(|token| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok::<_, Infallible>(Bytes::from(token))
    });
    Body::from_stream(paced)
}

/// The layer's counters.
async fn stats(State(layer): State<CoalesceLayer>) -> String {
    format!("{:?}\n", layer.stats())
}

#[tokio::main]
async fn main() {
    let layer = CoalesceLayer::new(Config::default());
    // The layer on the route that streams; the stats route outside it.
    let app = Router::new()
        .route("/generate", post(generate).layer(layer.clone()))
        .route("/stats", get(stats))
        .with_state(layer);
    let address = std::env::var("LAYER_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_string());
    let listener = tokio::net::TcpListener::bind(&address).await.unwrap();
    println!("listening on http://{address}");
    axum::serve(listener, app).await.unwrap();
}
