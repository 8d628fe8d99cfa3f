//! A tower layer (feature `tower`) that coalesces any HTTP service whose response body streams:
//! identical requests in flight share one call of the inner service, its head and its body frames.
//!
//! [`CoalesceLayer`] is the entry point; see it for what is identical, what passes through, and
//! how failures are answered.

mod key;
mod request;
mod response;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use http::header::HeaderName;
use http::{Request, Response};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

pub use self::key::{DEFAULT_KEY_HEADERS, RequestKey};
use self::request::Read;
pub use self::request::RequestBody;
pub use self::response::{CoalescedBody, CutShort, failure_response};
use self::response::{Piece, Pieces, ROLE_HEADER, failed, role_value, shared};
use crate::{Config, Event, Failure, Flights, LateJoin, Stats, Subscription};

/// The error a flight shares: the inner service's (or its response body's), boxed, as tower
/// services box theirs.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How many bytes of a request body the layer reads to key it, unless told otherwise: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// The key extractor: `None` lets the request pass through.
type KeyFn<K> = Arc<dyn Fn(&Request<Bytes>) -> Option<K> + Send + Sync>;

/// The failure rule.
type OnFailure = Arc<dyn Fn(&Failure<BoxError>) -> Response<Bytes> + Send + Sync>;

/// A tower [`Layer`] that coalesces identical requests in flight: the first one calls the inner
/// service, and every identical request that arrives while its response streams gets the same
/// response (status, headers, every body frame from the first, trailers included) without
/// calling it. The rules are the library's ([`Flights`]): a late joiner gets the whole body
/// replayed; a client that leaves affects no other; the last one to leave drops the inner
/// response (under the default [`Orphan::Abort`](crate::Orphan::Abort)).
///
/// - **The key.** By default a [`RequestKey`]: the method, the URI (path and query), the values
///   of [`DEFAULT_KEY_HEADERS`] (or of [`key_headers`](CoalesceLayer::key_headers)), and the body
///   as [lossless canonical JSON](crate::json) when it is JSON, else its bytes. Your own with
///   [`key`](CoalesceLayer::key). Put into the key everything that can change the answer: two
///   requests with one key get one answer.
/// - **The body.** It is read to be keyed, up to [`body_limit`](CoalesceLayer::body_limit)
///   bytes ([`DEFAULT_BODY_LIMIT`]). A body that declares more, sends more, has trailers or
///   fails while read is not coalesced: the request passes through to the inner service, its
///   body whole (what was read, then the rest), as do requests the key says `None` to (by
///   default a `CONNECT` or an upgrade). A request that passes through has no role header.
/// - **The inner service** is called once per flight, by the flight (so it goes on when its
///   first client leaves), with the first request's parts and body; the others' are dropped.
///   Its readiness is asked then, not in `poll_ready`: a request that joins a flight never
///   waits for it. The inner response's extensions are not shared.
/// - **The role** of each coalesced response is in a header, `x-streamflight-role: leader`,
///   `follower` (joined while the inner service was called) or `joiner` (while the body
///   streamed); the name is [`role_header`](CoalesceLayer::role_header)'s.
/// - **Failures.** An error of the inner service (or a panic) before its response head is
///   every subscriber's response by [`failure_response`] (`502` with a short text), or by
///   [`on_failure`](CoalesceLayer::on_failure). After the head, the body is cut with
///   [`CutShort`] (the connection closes before the end), never ended cleanly.
///
/// The [`Config`] is the library's; [`LateJoin::Tail`] is read as `Replay` (a response cannot
/// start without its head).
///
/// ```
/// use axum::Router;
/// use axum::body::Body;
/// use axum::routing::post;
/// use streamflight_tokio::Config;
/// use streamflight_tokio::tower::CoalesceLayer;
///
/// // Any handler whose body streams, unchanged.
/// async fn answer(prompt: String) -> Body {
///     let tokens = ["Hello", ", ", "world"].map(|token| Ok::<_, std::io::Error>(token.to_string()));
///     Body::from_stream(futures::stream::iter(tokens))
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # let _ = rustls::crypto::ring::default_provider().install_default();
/// let layer = CoalesceLayer::new(Config::default());
/// let app = Router::new().route("/answer", post(answer)).layer(layer.clone());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
/// let address = listener.local_addr().unwrap();
/// tokio::spawn(async move { axum::serve(listener, app).await });
///
/// let response = reqwest::Client::new()
///     .post(format!("http://{address}/answer"))
///     .body(r#"{"prompt": "hi"}"#)
///     .send()
///     .await
///     .unwrap();
/// assert_eq!(response.headers()["x-streamflight-role"], "leader");
/// assert_eq!(response.text().await.unwrap(), "Hello, world");
/// assert_eq!(layer.stats().flights, 1);
/// # }
/// ```
pub struct CoalesceLayer<K = RequestKey> {
    config: Config,
    flights: Flights<K, Piece, BoxError>,
    settings: Settings<K>,
}

/// What the layer's services share besides the flights.
struct Settings<K> {
    key: KeyFn<K>,
    body_limit: usize,
    role_header: HeaderName,
    on_failure: OnFailure,
}

impl<K> Clone for Settings<K> {
    fn clone(&self) -> Self {
        Settings {
            key: Arc::clone(&self.key),
            body_limit: self.body_limit,
            role_header: self.role_header.clone(),
            on_failure: Arc::clone(&self.on_failure),
        }
    }
}

impl CoalesceLayer<RequestKey> {
    /// A layer with its own flights under `config`, keyed by [`RequestKey`] with
    /// [`DEFAULT_KEY_HEADERS`]. Every service it makes shares its flights: clone the layer (a
    /// cheap handle) to put it on several routes and still share one key space.
    pub fn new(config: Config) -> Self {
        let config = match config.late_join_policy() {
            LateJoin::Tail => config.late_join(LateJoin::Replay),
            _ => config,
        };
        let settings = Settings {
            key: Arc::new(|request: &Request<Bytes>| RequestKey::coalescable(request, &DEFAULT_KEY_HEADERS)),
            body_limit: DEFAULT_BODY_LIMIT,
            role_header: ROLE_HEADER,
            on_failure: Arc::new(failure_response),
        };
        CoalesceLayer { flights: Flights::new(config.clone()), config, settings }
    }

    /// Keys requests by [`RequestKey`] with the values of `headers` (instead of
    /// [`DEFAULT_KEY_HEADERS`]): name every header that can change the answer, the caller's
    /// identity first.
    ///
    /// ```
    /// use http::header::{AUTHORIZATION, HeaderName};
    /// use streamflight_tokio::Config;
    /// use streamflight_tokio::tower::CoalesceLayer;
    ///
    /// let layer = CoalesceLayer::new(Config::default())
    ///     .key_headers([AUTHORIZATION, HeaderName::from_static("openai-organization")]);
    /// ```
    pub fn key_headers(self, headers: impl IntoIterator<Item = HeaderName>) -> Self {
        let headers: Arc<[HeaderName]> = headers.into_iter().collect();
        self.key(move |request| RequestKey::coalescable(request, &headers))
    }
}

impl<K> CoalesceLayer<K>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    /// Keys requests with `key` (given the request, its body read), with fresh flights: two
    /// requests share a flight when their keys are equal; a request `key` says `None` to passes
    /// through.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{Method, Request};
    /// use streamflight_tokio::Config;
    /// use streamflight_tokio::tower::{CoalesceLayer, DEFAULT_KEY_HEADERS, RequestKey};
    ///
    /// // Only POSTs to /v1/ are shared; and a tenant header, of the caller's own, too.
    /// let layer = CoalesceLayer::new(Config::default()).key(|request: &Request<Bytes>| {
    ///     let shared = request.method() == Method::POST && request.uri().path().starts_with("/v1/");
    ///     let tenant = request.headers().get("x-tenant").cloned();
    ///     shared.then(|| (tenant, RequestKey::new(request, &DEFAULT_KEY_HEADERS)))
    /// });
    /// ```
    pub fn key<J, F>(self, key: F) -> CoalesceLayer<J>
    where
        J: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
        F: Fn(&Request<Bytes>) -> Option<J> + Send + Sync + 'static,
    {
        let Settings { body_limit, role_header, on_failure, .. } = self.settings;
        let settings = Settings { key: Arc::new(key), body_limit, role_header, on_failure };
        CoalesceLayer { flights: Flights::new(self.config.clone()), config: self.config, settings }
    }

    /// Reads at most `bytes` of a request body to key it ([`DEFAULT_BODY_LIMIT`]); a longer body
    /// passes through uncoalesced. `0`: only requests without a body are coalesced.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.settings.body_limit = bytes;
        self
    }

    /// Names the header that carries each coalesced response's role (`x-streamflight-role`).
    pub fn role_header(mut self, name: HeaderName) -> Self {
        self.settings.role_header = name;
        self
    }

    /// Answers a flight that failed before its response head with `respond` instead of
    /// [`failure_response`]: your own status and body (the role header is added to it).
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::Response;
    /// use streamflight_tokio::Config;
    /// use streamflight_tokio::tower::CoalesceLayer;
    ///
    /// let layer = CoalesceLayer::new(Config::default()).on_failure(|_failure| {
    ///     let body = Bytes::from_static(br#"{"error":{"message":"try again"}}"#);
    ///     Response::builder().status(503).header("content-type", "application/json").body(body).unwrap()
    /// });
    /// ```
    pub fn on_failure<F>(mut self, respond: F) -> Self
    where
        F: Fn(&Failure<BoxError>) -> Response<Bytes> + Send + Sync + 'static,
    {
        self.settings.on_failure = Arc::new(respond);
        self
    }

    /// The counters of the layer's flights (shared by every service it made).
    pub fn stats(&self) -> Stats {
        self.flights.stats()
    }
}

impl<K> Clone for CoalesceLayer<K> {
    fn clone(&self) -> Self {
        CoalesceLayer {
            config: self.config.clone(),
            flights: self.flights.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl<K> fmt::Debug for CoalesceLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoalesceLayer")
            .field("flights", &self.flights)
            .field("body_limit", &self.settings.body_limit)
            .field("role_header", &self.settings.role_header)
            .finish_non_exhaustive()
    }
}

impl<S, K> Layer<S> for CoalesceLayer<K> {
    type Service = Coalesce<S, K>;

    fn layer(&self, inner: S) -> Coalesce<S, K> {
        Coalesce { inner, flights: self.flights.clone(), settings: Arc::new(self.settings.clone()) }
    }
}

/// The service [`CoalesceLayer`] makes around `S`: see the layer.
pub struct Coalesce<S, K = RequestKey> {
    inner: S,
    flights: Flights<K, Piece, BoxError>,
    settings: Arc<Settings<K>>,
}

impl<S: Clone, K> Clone for Coalesce<S, K> {
    fn clone(&self) -> Self {
        Coalesce {
            inner: self.inner.clone(),
            flights: self.flights.clone(),
            settings: Arc::clone(&self.settings),
        }
    }
}

impl<S: fmt::Debug, K> fmt::Debug for Coalesce<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalesce")
            .field("inner", &self.inner)
            .field("flights", &self.flights)
            .finish_non_exhaustive()
    }
}

impl<S, K, B, R> Service<Request<B>> for Coalesce<S, K>
where
    S: Service<Request<RequestBody<B>>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
    R: Body + Send + 'static,
    R::Error: Into<BoxError>,
{
    type Response = Response<CoalescedBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    /// Always ready: the inner service's readiness is asked when it is called (see the layer).
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Box::pin(self.clone().serve(request))
    }
}

impl<S, K> Coalesce<S, K>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    /// Reads and keys `request`, then joins its flight (or starts one), or passes it through.
    async fn serve<B, R>(self, request: Request<B>) -> Result<Response<CoalescedBody<R>>, S::Error>
    where
        S: Service<Request<RequestBody<B>>, Response = Response<R>> + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Error: Into<BoxError>,
        R: Body + Send + 'static,
        R::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let bytes = match request::read(body, self.settings.body_limit).await {
            Read::Whole(bytes) => bytes,
            Read::Partial(body) => return pass(self.inner, Request::from_parts(parts, body)).await,
        };
        let request = Request::from_parts(parts, bytes);
        let Some(key) = (self.settings.key)(&request) else {
            return pass(self.inner, request.map(RequestBody::whole)).await;
        };
        let subscription = self.flights.request(key, lead(self.inner, request.map(RequestBody::whole)));
        Ok(answer(subscription, &self.settings).await)
    }
}

/// Calls `inner` with `request`, uncoalesced.
async fn pass<S, B, R>(mut inner: S, request: Request<B>) -> Result<Response<CoalescedBody<R>>, S::Error>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    poll_fn(|cx| inner.poll_ready(cx)).await?;
    Ok(inner.call(request).await?.map(CoalescedBody::inner))
}

/// A flight's preparation: calls `inner` with the leader's request; its response head is the
/// flight's first item, its body frames the next ones.
async fn lead<S, B, R>(mut inner: S, request: Request<B>) -> Result<Pieces<R>, BoxError>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Error: Into<BoxError>,
{
    poll_fn(|cx| inner.poll_ready(cx)).await.map_err(Into::into)?;
    let response = inner.call(request).await.map_err(Into::into)?;
    Ok(Pieces::new(response))
}

/// A subscriber's response, once its flight has a head or has failed: the head and the frames,
/// or the failure rule's answer; its role in a header either way.
async fn answer<K, R>(
    mut subscription: Subscription<Piece, BoxError>,
    settings: &Settings<K>,
) -> Response<CoalescedBody<R>> {
    let role = role_value(subscription.role());
    let first = poll_fn(|cx| Pin::new(&mut subscription).poll_next(cx)).await;
    let mut response = match first {
        Some(Event::Item(Piece::Head(head))) => shared(&head, subscription.into_results()),
        Some(Event::Failed(failure)) => failed(&*settings.on_failure, &failure),
        Some(Event::Cancelled) => failed(&*settings.on_failure, &Failure::Cancelled),
        // The head is always the first item, and `Tail` is read as `Replay`: never met.
        Some(Event::Item(_) | Event::Done) | None => {
            failed(&*settings.on_failure, &Failure::Lagged { missed: 0 })
        }
    };
    response.headers_mut().insert(settings.role_header.clone(), role);
    response
}
