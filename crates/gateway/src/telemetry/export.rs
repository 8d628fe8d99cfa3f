//! How the OTLP exporter posts a batch: through the gateway's own reqwest (rustls, no second
//! HTTP stack), on the gateway's tokio runtime, from the SDK's export thread.

use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use tokio::runtime::Handle;

use crate::upstream::client::{self, ClientOptions};

/// An [`HttpClient`] for the exporter. The SDK's batch thread polls the export outside any
/// runtime, and reqwest's connections need tokio's reactor: each post is spawned on `runtime`
/// and only awaited there.
#[derive(Debug)]
pub(super) struct Poster {
    client: reqwest::Client,
    runtime: Handle,
    timeout: Duration,
}

impl Poster {
    /// A client as the upstream's (system and webpki roots, no redirects), whose every post
    /// ends within `timeout`.
    pub(super) fn new(runtime: Handle, timeout: Duration) -> Result<Poster, String> {
        let options = ClientOptions { connect_timeout: timeout, ca_file: None, http2: false };
        let client = client::build(&options).map_err(|e| format!("traces: {e}"))?;
        Ok(Poster { client, runtime, timeout })
    }
}

#[async_trait]
impl HttpClient for Poster {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let post = self
            .client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .timeout(self.timeout)
            .body(body);
        let posted = self.runtime.spawn(async move {
            let answer = post.send().await?;
            let (status, headers) = (answer.status(), answer.headers().clone());
            Ok::<_, reqwest::Error>((status, headers, answer.bytes().await?))
        });
        let (status, headers, body) = posted.await??;
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}
