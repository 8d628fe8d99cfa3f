//! Every request the gateway does not coalesce (G3): method, path, query, headers and body go
//! upstream unchanged and the answer comes back as it is, streamed both ways, within bounds.

use std::borrow::Cow;
use std::io;
use std::sync::{Arc, Mutex};

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use axum::response::Response;
use futures::StreamExt;

use crate::dialect::Api;
use crate::dialect::error::Refusal;
use crate::flight::Broken;
use crate::http::access::{Outcome, Record};
use crate::http::headers;
use crate::http::inbound::{self, BodyFailure, Bounds};
use crate::metrics::Metrics;
use crate::sim;
use crate::state::Gateway;
use crate::upstream::Upstream;
use crate::upstream::backend::Backend;
use crate::upstream::client;

/// Proxies `request` unchanged; without an upstream, the simulated model's `GET /v1/models`.
pub(super) async fn forward(gateway: &Gateway, request: Request) -> Response {
    Metrics::bump(&gateway.metrics.passthrough);
    if let Some(record) = request.extensions().get::<Arc<Record>>() {
        record.passthrough();
    }
    match &gateway.backend {
        Backend::Upstream(upstream) => proxy(upstream, gateway.limits.body(), request).await,
        Backend::Simulated(..) => {
            let path = request.uri().path().trim_end_matches('/');
            if request.method() == axum::http::Method::GET && path == "/v1/models" {
                let mut response = Response::new(Body::from(sim::models()));
                response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                return response;
            }
            Refusal::UnknownUrl.error().response()
        }
    }
}

async fn proxy(upstream: &Upstream, bounds: Bounds, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // Whose error shape and credential header the request gets: the API its path lies under.
    let api = Api::under(parts.uri.path());
    // A failure is told on the request's access line too.
    let record = parts.extensions.get::<Arc<Record>>().cloned();
    if inbound::declared_too_large(&parts.headers, bounds.limit) {
        return BodyFailure::TooLarge.response(api);
    }
    let path = parts.uri.path();
    let query = parts.uri.query();
    let url = match path.strip_prefix("/v1") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => upstream.url.join(rest, query),
        _ => upstream.url.origin_join(parts.uri.path_and_query().map_or(path, |pq| pq.as_str())),
    };
    let mut outgoing = headers::upstream_request(&parts.headers, upstream.credential(api));
    if let Some(length) = parts.headers.get(CONTENT_LENGTH) {
        outgoing.insert(CONTENT_LENGTH, length.clone());
    }
    let (client, ticket) = upstream.lanes.take();
    let mut sent = client.request(parts.method.clone(), url).headers(outgoing);
    // Where the client's side of a failed send is told apart from the upstream's.
    let client_failed: Arc<Mutex<Option<BodyFailure>>> = Arc::default();
    if body.size_hint().exact() != Some(0) {
        let noted = Arc::clone(&client_failed);
        let pieces = inbound::bounded(body, bounds).map(move |piece| {
            piece.map_err(|failure| {
                *noted.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(failure);
                io::Error::from(failure)
            })
        });
        sent = sent.body(reqwest::Body::wrap_stream(pieces));
    }
    let sending = tokio::time::Instant::now();
    let response = match tokio::time::timeout(upstream.response_timeout, sent.send()).await {
        Err(_) => {
            let message =
                format!("no response head from the upstream within {:?}", upstream.response_timeout);
            return failure(record.as_ref(), api, Broken::Timeout, &message);
        }
        Ok(Err(e)) => {
            let noted = *client_failed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(failure) = noted {
                // The client's body was too slow or too large: its 408 or 413, not a 502.
                return failure.response(api);
            }
            let message = format!("cannot reach the upstream {}: {}", upstream.url, client::describe(&e));
            return failure(record.as_ref(), api, Broken::Unreachable, &message);
        }
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    upstream.metrics.upstream_head("passthrough", status.as_u16(), sending.elapsed());
    let mut headers = headers::downstream_response(response.headers(), false);
    upstream.scrubber.headers(&mut headers);
    let idle = upstream.idle_timeout;
    // The ticket keeps the request's place on its lane while the body is read; the body is
    // scrubbed of the gateway's key piece by piece (G6).
    let pieces = upstream.scrubber.pieces();
    let body = futures::stream::unfold(Some((response, ticket, pieces)), move |state| async move {
        let (mut response, ticket, mut pieces) = state?;
        match tokio::time::timeout(idle, response.chunk()).await {
            // A piece held back whole goes out as an empty chunk, which hyper skips.
            Ok(Ok(Some(chunk))) => Some((Ok(pieces.push(chunk)), Some((response, ticket, pieces)))),
            Ok(Ok(None)) => Some((Ok(pieces.finish()), None)),
            // Cut the client's connection: a partial body must never pass for a whole one.
            Ok(Err(e)) => Some((Err(io::Error::other(client::describe(&e))), None)),
            Err(_) => Some((Err(io::Error::other("the upstream went silent")), None)),
        }
    });
    let mut out = Response::new(Body::from_stream(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// The upstream could not be reached or answered no head: the API's error answer, and the
/// reason on the request's access line (its `error`) and in a warning naming the request.
fn failure(record: Option<&Arc<Record>>, api: Api, kind: Broken, message: &str) -> Response {
    if let Some(record) = record {
        tracing::warn!(request_id = record.id().digits().as_str(), %message, "passthrough failed");
        record.end(Outcome::Failed, Some(Cow::Owned(message.to_owned())));
    } else {
        tracing::warn!(%message, "passthrough failed");
    }
    api.error_response(&Refusal::Upstream { kind, message }.error())
}
