//! The layer's default key: what makes two HTTP requests identical (method, URI, chosen headers,
//! the body as lossless canonical JSON or else its bytes).

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use streamflight_core::json::{CanonicalJson, canonical_json};

/// The headers [`RequestKey`] holds unless told otherwise
/// ([`CoalesceLayer::key_headers`](super::CoalesceLayer::key_headers)): who asks (`authorization`,
/// `cookie`, so that two callers never share an answer meant for one), which site (`host`), and
/// what shape of answer (`accept`, `accept-encoding`, `accept-language`, `content-type`).
pub static DEFAULT_KEY_HEADERS: [HeaderName; 7] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::HOST,
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::ACCEPT_LANGUAGE,
    header::CONTENT_TYPE,
];

/// The layer's default flight key: the method, the whole URI (path and query, and the authority
/// when the request has one), the values of the chosen headers in order, and the body: its
/// [lossless canonical JSON](crate::json) when it is JSON (so member order, whitespace and the
/// spelling of numbers do not matter, and every digit does), else its bytes.
///
/// Compared by full equality (never by hash alone). Build one yourself to add to it, in
/// [`CoalesceLayer::key`](super::CoalesceLayer::key):
///
/// ```
/// use bytes::Bytes;
/// use streamflight_tokio::tower::{DEFAULT_KEY_HEADERS, RequestKey};
///
/// let ask = |body: &'static str| {
///     let request = http::Request::post("/v1/answer?lang=en").body(Bytes::from(body)).unwrap();
///     RequestKey::new(&request, &DEFAULT_KEY_HEADERS)
/// };
/// assert_eq!(ask(r#"{"prompt": "hi", "n": 1.0}"#), ask(r#"{"n":1,"prompt":"hi"}"#));
/// assert_ne!(ask(r#"{"prompt": "hi", "n": 1}"#), ask(r#"{"prompt": "hi", "n": 2}"#));
/// assert_ne!(ask("plain text"), ask("plain  text"), "not JSON: the bytes, exactly");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestKey {
    method: Method,
    uri: Uri,
    /// Each chosen header's values, in the order of the names, then of the values.
    headers: Vec<(HeaderName, HeaderValue)>,
    body: BodyKey,
}

/// A body as a key: the two kinds never compare equal, whatever their text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum BodyKey {
    Json(CanonicalJson),
    Bytes(Bytes),
}

impl RequestKey {
    /// The key of `request` (its body buffered), with the values of the `headers` it has.
    pub fn new(request: &Request<Bytes>, headers: &[HeaderName]) -> Self {
        let chosen = headers.iter().flat_map(|name| {
            request.headers().get_all(name).iter().map(move |value| (name.clone(), value.clone()))
        });
        let body = request.body();
        // An empty body is no JSON: no need to ask.
        let json = if body.is_empty() { None } else { canonical_json(body).ok() };
        RequestKey {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: chosen.collect(),
            body: json.map_or_else(|| BodyKey::Bytes(body.clone()), BodyKey::Json),
        }
    }

    /// The default key extractor: `None` (the request passes through) for what cannot be
    /// shared, a `CONNECT` or a request to upgrade the connection (a WebSocket); else
    /// [`RequestKey::new`].
    pub fn coalescable(request: &Request<Bytes>, headers: &[HeaderName]) -> Option<Self> {
        let upgrade = request.method() == Method::CONNECT || request.headers().contains_key(header::UPGRADE);
        (!upgrade).then(|| RequestKey::new(request, headers))
    }
}
