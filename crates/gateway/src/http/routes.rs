//! The HTTP surface: which path goes where (coalesced endpoints, cancel, metrics, health,
//! everything else passed through) and the layers every request crosses (id, admission, CORS).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, Request, State};
use axum::http::header::{ACCEPT_ENCODING, HeaderValue, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use bytes::Bytes;
use futures::Stream;
use serde_json::json;
use streamflight_redis::{Holder, Taken};
use streamflight_tokio::{ResumeError, Role};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tracing::Instrument;

use crate::answer::Numbered;
use crate::answer::registry::{Asked, Claim, ClientId, Live};
use crate::answer::{self, Wants};
use crate::dialect::Api;
use crate::dialect::error::{Refusal, json_response};
use crate::fleet::handoff;
use crate::flight::{Part, UpstreamError};
use crate::http::access::{Record, Sent};
use crate::http::admin;
use crate::http::headers;
use crate::http::inbound;
use crate::http::limits::Admission;
use crate::http::offload::Unparsed;
use crate::http::passthrough;
use crate::key::Key;
use crate::metrics::Metrics;
use crate::state::Gateway;
use crate::telemetry::{self, ClientSpan};
use crate::upstream::Outgoing;

type Shared = Arc<Gateway>;

/// The gateway's routes over `gateway`, ready to serve.
pub(crate) fn router(gateway: Shared) -> Router {
    let cors = cors(&gateway.settings.cors_origins);
    let mut router = Router::new();
    for api in Api::all() {
        router = router.route(&api.route(), post(coalesced).fallback(passthrough));
    }
    router = router
        .route("/v1/responses/{id}", get(retrieve).fallback(passthrough))
        .route("/v1/requests/{id}", delete(cancel).fallback(passthrough))
        .route("/v1/requests/{id}/events", get(resume).fallback(passthrough))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz));
    // With an admin port the metrics are served there only: not to anyone who reaches this one.
    if gateway.settings.admin_listen.is_none() {
        router = router.route("/metrics", get(admin::metrics));
    }
    let mut router = router
        .fallback(passthrough)
        .layer(middleware::from_fn_with_state(Arc::clone(&gateway), admit))
        .layer(middleware::from_fn_with_state(Arc::clone(&gateway), assign_id))
        .with_state(gateway);
    if let Some(cors) = cors {
        router = router.layer(cors);
    }
    router
}

/// CORS for browser clients, when `--cors-origin` names any origin.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let exposed = ["x-request-id", "x-streamflight-role", "x-upstream-request-id", "retry-after"];
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods(Any)
            .allow_headers(Any)
            .expose_headers(exposed.map(HeaderName::from_static)),
    )
}

/// Gives every request an id and its [`Record`] (its one access line and its metrics, written
/// when its response body is done), and puts the id in the response's `x-request-id`.
async fn assign_id(State(gateway): State<Shared>, mut request: Request, next: Next) -> Response {
    let id = ClientId::random();
    request.extensions_mut().insert(id);
    let metrics = Arc::clone(&gateway.metrics);
    let traced = gateway.traces.as_ref().and_then(|traces| {
        ClientSpan::start(traces, request.method(), request.uri().path(), request.headers())
    });
    let record = Arc::new(Record::new(id, request.method().clone(), request.uri().path(), metrics, traced));
    request.extensions_mut().insert(Arc::clone(&record));
    // The debug lines written while it is handled name it; the access line, written after, by
    // itself. Not at info: the access line says at that level all there is to say of a request
    // (a warning in its handling names it), and a span entered at every poll costs a JSON log
    // as much again as its line.
    let span = tracing::debug_span!("http", request_id = id.digits().as_str());
    let mut response = next.run(request).instrument(span).await;
    // A resumed stream keeps the id its client knows.
    let id = response.extensions().get::<ClientId>().copied().unwrap_or(id);
    record.head(response.status().as_u16(), id, response.headers());
    let shown = HeaderValue::from_str(id.digits().as_str()).expect("hex is a valid header value");
    response.headers_mut().insert("x-request-id", shown);
    response.map(|body| axum::body::Body::new(Sent::new(body, record)))
}

/// Over `--max-concurrent-requests`, a 503 with `retry-after`; else the request holds a permit
/// until its response body is done (a stream holds it to its end). Health and metrics are free.
async fn admit(
    State(gateway): State<Shared>,
    Extension(record): Extension<Arc<Record>>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics") {
        return next.run(request).await;
    }
    let Some(admission) = Admission::take(&gateway.limits, &gateway.metrics) else {
        Metrics::bump(&gateway.metrics.rejected);
        // Counted where it would have gone: its dialect's, or passed through.
        match Api::at(request.uri().path()) {
            Some(api) if request.method() == axum::http::Method::POST => record.dialect(api.name()),
            _ => record.passthrough(),
        }
        let mut response = Api::under(request.uri().path()).error_response(&Refusal::TooManyRequests.error());
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    // Its record hands it to the response body (one wrapper for both): held to the body's end.
    record.admitted(admission);
    next.run(request).await
}

/// Any path or method the gateway does not coalesce.
async fn passthrough(State(gateway): State<Shared>, request: Request) -> Response {
    passthrough::forward(&gateway, request).await
}

/// `POST` to a dialect's path (`/v1/chat/completions`, `/v1/responses`, `/v1/messages`, ...):
/// joins or starts the flight of the request's key and answers from it.
async fn coalesced(
    State(gateway): State<Shared>,
    Extension(id): Extension<ClientId>,
    Extension(record): Extension<Arc<Record>>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let Some(api) = Api::at(parts.uri.path()) else {
        return Refusal::UnknownUrl.error().response();
    };
    // Its refusals too are the dialect's, unless it passes through after all.
    record.dialect(api.name());
    let settings = &gateway.settings;
    let bytes = match inbound::read(&parts.headers, body, gateway.limits.body()).await {
        Ok(bytes) => bytes,
        Err(failure) => return failure.response(api),
    };
    let parsed = match gateway.offload.parse(&bytes, api.owned()).await {
        Ok(parsed) => parsed,
        Err(Unparsed::Invalid(error)) => return api.error_response(&Refusal::InvalidBody(&error).error()),
        Err(Unparsed::Lost(refusal)) => return api.error_response(&refusal.error()),
    };
    if api.passes(&bytes) {
        // Not coalesced (a background response lives upstream): sent on as it came.
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        return passthrough::forward(&gateway, request).await;
    }
    drop(bytes);
    let query = parts.uri.query().map(str::to_owned);
    let tenant = gateway.tenants.of(&parts.headers);
    let canonical: Arc<str> = parsed.canonical.into();
    let key = Key {
        api,
        tenant: (!settings.share_across_tenants).then_some(tenant),
        selectors: api.selectors(&parts.headers, query.as_deref()).into(),
        body: Arc::clone(&canonical),
    };
    // Hashed only for the line that shows it.
    let digest = tracing::enabled!(tracing::Level::DEBUG).then(|| key.digest());
    let mut sent = headers::upstream_request(&parts.headers, upstream_credential(&gateway, api));
    // The gateway reads the answer (SSE, merged, shared): it must arrive uncompressed. Said
    // outright: with no `accept-encoding` at all a server may pick any encoding (RFC 9110).
    sent.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    let outgoing = Outgoing { api, query, headers: sent, body: parsed.upstream, canonical };
    let prepare = gateway.backend.open(outgoing);
    let named = api.names_answers().then(|| Box::new(key.clone()));
    // Traced: the request's span says what it asks, and its flight is traced if it leads.
    let traced = gateway.traces.as_ref().and_then(|traces| {
        let client = record.span()?;
        Some(telemetry::coalesced(traces, client, parts.uri.path(), api.name(), &key))
    });
    let subscription = fly(&gateway, key, prepare, traced.as_ref());
    // Its hand in the store says this replica holds it: a DELETE or a resume through any
    // replica finds it here; once it is detached, where its flight is, to resume it there.
    let reading = gateway
        .flights
        .fleet()
        .is_some()
        .then(|| gateway.flights.hold(&subscription, &handoff::ticket(id), &tenant));
    let subscription = subscription.into_local();
    let role = subscription.role();
    if let (Some(traced), Some(span)) = (traced, record.span()) {
        traced.placed(span, role, id, parsed.model.as_deref());
    }
    if let Some(model) = parsed.model {
        let label = gateway.metrics.models.label(Some(&model));
        record.model(model, label);
    }
    let registry = Arc::clone(&gateway.registry);
    let asked = Asked { tenant, api, include_usage: parsed.include_usage, record };
    let mut live = Live::enter(registry, id, subscription.id(), role, asked);
    if let Some(reading) = reading {
        live = live.on_leave(handoff::on_leave(reading, api, parsed.include_usage));
    }
    tracing::debug!(?role, key = digest.as_deref(), stream = parsed.stream, "admitted");
    let wants = Wants {
        api,
        stream: parsed.stream,
        include_usage: parsed.include_usage,
        role: (!settings.share_across_tenants).then(|| role_header(role)),
        key: named,
    };
    answer::reply(subscription, wants, live, &gateway.keeping).await
}

/// Joins or starts the flight of `key`; with `traced`, its upstream request has a span.
fn fly<F, S>(
    gateway: &Gateway,
    key: Key,
    prepare: F,
    traced: Option<&telemetry::Flight>,
) -> streamflight_redis::Subscription<Part, UpstreamError>
where
    F: Future<Output = Result<S, UpstreamError>> + Send + 'static,
    S: Stream<Item = Result<Part, UpstreamError>> + Send + 'static,
{
    match traced {
        Some(flight) => gateway.flights.request(key, flight.wrap(prepare)),
        None => gateway.flights.request(key, prepare),
    }
}

/// The gateway's own key, as `api` takes it, when it has one.
fn upstream_credential(gateway: &Gateway, api: Api) -> Option<(HeaderName, HeaderValue)> {
    match &gateway.backend {
        crate::upstream::backend::Backend::Upstream(upstream) => upstream.credential(api),
        crate::upstream::backend::Backend::Simulated(..) => None,
    }
}

fn role_header(role: Role) -> HeaderValue {
    HeaderValue::from_static(crate::http::access::role_name(role))
}

/// `DELETE /v1/requests/{id}`: cancels a live request by the id from its `x-request-id`, for
/// the tenant that made it only; anyone else gets the 404 of an unknown id (G5).
///
/// In a fleet the cancel follows the request to the replica that holds it now (its hand in the
/// store): an id of the wrong shape costs the store nothing, one read here costs nothing, one
/// nobody holds costs one read, and one held elsewhere a read, a `PUBLISH` and a blocking
/// wait for the holder's answer.
async fn cancel(State(gateway): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    // The raw path segment: an id is 32 hex digits, so anything percent-encoded is unknown
    // (and never a text/plain rejection of a bad escape).
    let shown = uri.path().trim_start_matches("/v1/requests/");
    let tenant = gateway.tenants.of(&headers);
    let Some(id) = ClientId::parse(shown) else {
        return Refusal::RequestNotFound.error().response();
    };
    let found = gateway.registry.find(id, &tenant);
    let api = found.map_or(Api::chat(), |found| found.api);
    let here = |request| gateway.flights.cancel(request).is_ok();
    let in_fleet = gateway.flights.fleet().is_some();
    let ticket = handoff::ticket(id);
    let holder = || gateway.flights.holder(&ticket, &tenant);
    let cancelled = match found {
        // Read here now, or on no fleet: nobody else can be reading it.
        Some(found) if !found.detached || !in_fleet => here(found.request),
        // Detached here: its client may have resumed it through another replica since.
        Some(found) => match holder().await {
            Holder::Elsewhere(replica) => {
                here(found.request);
                handoff::cancel_at(&gateway, &replica, id, tenant).await
            }
            // Ended where it was resumed: what is left here is let go.
            Holder::Ended => {
                here(found.request);
                false
            }
            _ => here(found.request),
        },
        // Not one of this replica's: the one holding it, if any, is asked through the store.
        None if in_fleet => match holder().await {
            Holder::Elsewhere(replica) => handoff::cancel_at(&gateway, &replica, id, tenant).await,
            _ => false,
        },
        None => false,
    };
    if !cancelled {
        return api.error_response(&Refusal::RequestNotFound.error());
    }
    tracing::info!(cancelled = %shown, "cancelled by DELETE");
    let body = json!({"id": shown, "object": "request", "status": "cancelled"});
    json_response(StatusCode::OK, Bytes::from(body.to_string()))
}

/// `GET /v1/requests/{id}/events`: resumes the stream of a request whose client lost its
/// connection (R18), with the events after `Last-Event-ID` (or `?after=N`; neither: from the
/// first), then its end: what the client holds is then the uninterrupted stream. For the
/// tenant that made it only, within `--resume-window`; the response keeps its `x-request-id`.
async fn resume(
    State(gateway): State<Shared>,
    Extension(record): Extension<Arc<Record>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let shown = uri.path().trim_start_matches("/v1/requests/").trim_end_matches("/events");
    let tenant = gateway.tenants.of(&headers);
    let Some(id) = ClientId::parse(shown) else {
        return Refusal::RequestNotFound.error().response();
    };
    let last =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned).or_else(|| {
            uri.query()?.split('&').find_map(|pair| pair.strip_prefix("after=")).map(str::to_owned)
        });
    let from = match last.map(|text| text.trim().parse::<u64>()) {
        None => 1,
        Some(Ok(last)) => last.saturating_add(1),
        Some(Err(_)) => return Refusal::InvalidLastEventId.error().response(),
    };
    let Some(found) = gateway.registry.find(id, &tenant) else {
        // Not one of this replica's: another's, if its hand in the fleet's store says so.
        return handoff::resume(&gateway, id, tenant, from, record)
            .await
            .unwrap_or_else(|refusal| refusal.error().response());
    };
    let api = found.api;
    // Detached here, in a fleet: its hand is taken first, so that no other replica resumes
    // it too (one reader, R18); the store silent or without its hand, this replica's is all.
    let mut taken = None;
    if found.detached {
        match gateway.flights.take(&handoff::ticket(id), &tenant, true).await {
            Taken::Yours(yours) => taken = Some(yours),
            Taken::Busy => return api.error_response(&Refusal::RequestStreaming.error()),
            Taken::Ended => return api.error_response(&Refusal::RequestNotFound.error()),
            _ => {}
        }
    }
    // The answer's item `from` in the request's local flight (which may start further on).
    let resumed = match from.checked_sub(found.first) {
        Some(local) => gateway.flights.resume(found.request, local),
        None if found.detached => Err(ResumeError::Released { missed: found.first - from }),
        None => Err(ResumeError::NotDetached),
    };
    let subscription = match resumed {
        Ok(subscription) => subscription,
        Err(error) => {
            if let Some(taken) = taken {
                taken.give_back().await;
            }
            return api.error_response(&match error {
                ResumeError::NotDetached => Refusal::RequestStreaming.error(),
                ResumeError::Released { .. } | ResumeError::Ahead { .. } => Refusal::NoEventsAfter.error(),
                _ => Refusal::RequestNotFound.error(),
            });
        }
    };
    let role = subscription.role();
    let registry = Arc::clone(&gateway.registry);
    let asked = Asked { tenant, api, include_usage: found.include_usage, record };
    let mut live = Live::enter(registry, id, subscription.id(), role, asked);
    gateway.registry.starts_at(id, found.first);
    // This replica reads it now: its hand says so until the stream ends or detaches again.
    let reading = match taken {
        Some(taken) => Some(taken.into_holding()),
        None => gateway
            .flights
            .fleet()
            .is_some()
            .then(|| gateway.flights.hold_ticket(&handoff::ticket(id), &tenant)),
    };
    if let Some(reading) = reading {
        live = live.on_leave(handoff::on_leave(reading, api, found.include_usage));
    }
    tracing::debug!(resumes = %id, from, "resumed");
    answer::resumed(api, subscription, live, found.include_usage, Numbered::From(from), &gateway.keeping)
}

/// `GET /v1/responses/{id}?stream=true&starting_after=N`, the Responses API's own resume:
/// for an answer the gateway holds (live, lingering, or read by a detached client within its
/// window) and the tenant that asked it, the events whose `sequence_number` is above `N`
/// (all of them without it), then the end, from the flight: no request reaches the upstream.
/// Another tenant gets the 404 of an unknown response (G5); a response the gateway does not
/// hold (a `background` one), or a call without `stream=true`, passes through.
async fn retrieve(
    State(gateway): State<Shared>,
    Extension(id): Extension<ClientId>,
    Extension(record): Extension<Arc<Record>>,
    request: Request,
) -> Response {
    let answer_id = request.uri().path().trim_start_matches("/v1/responses/").to_owned();
    let query = request.uri().query().unwrap_or_default();
    let pairs = || query.split('&').filter_map(|pair| pair.split_once('='));
    let streamed = pairs().any(|(name, value)| name == "stream" && value == "true");
    let after = pairs().find(|(name, _)| *name == "starting_after").map(|(_, value)| value.parse::<u64>());
    let api = Api::under("/v1/responses");
    let tenant = gateway.tenants.of(request.headers());
    let (key, detached) = match gateway.registry.answer(&answer_id, &tenant) {
        Some(Claim::Yours(key, detached)) if streamed => (key, detached),
        Some(Claim::NotYours) => return api.error_response(&Refusal::ResponseNotFound(&answer_id).error()),
        _ => return passthrough::forward(&gateway, request).await,
    };
    let after = match after {
        None => None,
        Some(Ok(after)) => Some(after),
        Some(Err(_)) => return api.error_response(&Refusal::InvalidStartingAfter.error()),
    };
    // Joined only if still joinable (live, or lingering): a flight is never restarted for it.
    // Else a reader whose client went away still holds the whole answer: it is resumed.
    let (id, subscription) = match gateway.flights.local().join(&key) {
        Some(subscription) => (id, subscription),
        None => {
            let resumed = detached.into_iter().find_map(|client| {
                let found = gateway.registry.find(client, &tenant)?;
                Some((client, gateway.flights.resume(found.request, 0).ok()?))
            });
            let Some(resumed) = resumed else { return passthrough::forward(&gateway, request).await };
            resumed
        }
    };
    let role = subscription.role();
    let registry = Arc::clone(&gateway.registry);
    let asked = Asked { tenant, api, include_usage: false, record };
    let live = Live::enter(registry, id, subscription.id(), role, asked);
    tracing::debug!(resumes = %id, response = %answer_id, ?after, "resumed by the API's own call");
    answer::resumed(api, subscription, live, false, Numbered::After(after), &gateway.keeping)
}
