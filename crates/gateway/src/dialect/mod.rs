//! The LLM APIs the gateway coalesces, one file each behind one small interface (G10): a
//! dialect says its path, its key, how its upstream streams, its events, its merge and its errors.
//!
//! Adding an API is one new file with a [`Dialect`] and one line in the `dialects!` list below.

pub mod body;
pub mod chunks;
pub mod error;
mod plain;
mod template;

use std::fmt;
use std::hash::{Hash, Hasher};

use axum::http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

use crate::dialect::body::Owned;
use crate::dialect::chunks::CollectError;
use crate::dialect::error::json_response;
use crate::flight::{Event, Part, Parts, UpstreamError};
use futures::StreamExt;

/// Declares each dialect's module and lists its value in `ALL`, so that a dialect is named
/// once: `file::Value`.
macro_rules! dialects {
    ($($file:ident::$dialect:ident),+ $(,)?) => {
        $(mod $file;)+
        /// Every dialect the gateway serves; [`Api::at`] finds a request's among them.
        const ALL: &[&dyn Dialect] = &[$(&$file::$dialect),+];
    };
}

dialects! {
    chat::Chat,
    completions::Completions,
    embeddings::Embeddings,
    responses::Responses,
    messages::Messages,
}

/// What an upstream SSE event is, decided once when it arrives ([`Dialect::classify`]).
#[derive(Debug)]
pub enum Class {
    /// Part of the answer: stored, and sent to every client (a usage-only one only to those
    /// that asked for usage).
    Keep(Event),
    /// A keep-alive (Anthropic's `ping`): never stored; each client gets its own when quiet.
    KeepAlive,
    /// The answer's normal end: the event that says so, stored and sent, if the API has one
    /// (`response.completed`, `message_stop`), or nothing (Chat's `[DONE]`, which each client
    /// gets from the gateway).
    Last(Option<Event>),
    /// An error inside the stream: the flight fails with it, and every client gets it as sent.
    Failure(Event),
}

/// Which [`Class`] an event is, told from its name before the event is built from it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Which {
    /// [`Class::Keep`].
    Keep,
    /// [`Class::KeepAlive`].
    KeepAlive,
    /// [`Class::Last`], with the event.
    Last,
    /// [`Class::Failure`].
    Failure,
}

/// The event of `name` and `data`, classified by `which` from its name (read in place), or
/// for an unnamed one from its data's `type`: for the APIs that name their events.
pub(crate) fn by_name(name: Option<Bytes>, data: Bytes, which: fn(&[u8]) -> Which) -> Class {
    let which = match &name {
        Some(name) => which(name),
        None => which(event_type(&data).unwrap_or_default().as_bytes()),
    };
    let event = Event { name, data, usage_only: false };
    match which {
        Which::Keep => Class::Keep(event),
        Which::KeepAlive => Class::KeepAlive,
        Which::Last => Class::Last(Some(event)),
        Which::Failure => Class::Failure(event),
    }
}

/// One LLM API, as the gateway coalesces it.
pub trait Dialect: Sync {
    /// A short name, for logs: `chat`, `responses`, `messages`, ...
    fn name(&self) -> &'static str;

    /// The path below the upstream's base URL (`/chat/completions`); the client's is `/v1` and it.
    fn path(&self) -> &'static str;

    /// Which members of the body are the gateway's: left out of the key, set upstream. An API
    /// whose answer is not streamed owns none ([`Owned::Nothing`]).
    fn owned(&self) -> Owned;

    /// The request headers that select an account, a project or a version: in the key (G4).
    fn selectors(&self) -> &'static [&'static str] {
        &["openai-organization", "openai-project", "openai-beta"]
    }

    /// Whether this body is not coalesced but passed through (a Responses `background` request,
    /// which lives upstream). Only asked of a body that parsed.
    fn passes(&self, _body: &[u8]) -> bool {
        false
    }

    /// The names its events have (read without a copy for each event).
    fn event_names(&self) -> &'static [&'static str] {
        &[]
    }

    /// What one upstream event is. `name` is its `event:` field, `data` its data as sent.
    fn classify(&self, name: Option<Bytes>, data: Bytes) -> Class;

    /// A merge of the events into the object a non-streaming client gets (G2).
    fn merge(&self) -> Box<dyn Merge>;

    /// The body of one of the gateway's own errors, in this API's shape.
    fn error_body(&self, error: &error::Error<'_>) -> Bytes {
        error.body()
    }

    /// The status a client that has had no byte yet gets for an error event inside the stream.
    fn failure_status(&self, _event: &Event) -> StatusCode {
        StatusCode::BAD_GATEWAY
    }

    /// The body a client that has had no byte yet gets for an error event inside the stream.
    fn failure_body(&self, event: &Event) -> Bytes {
        event.data.clone()
    }

    /// The frame the gateway writes after the last event of an answer that ended normally, if
    /// the API has one of its own (Chat's `data: [DONE]`).
    fn done(&self) -> Option<&'static [u8]> {
        None
    }

    /// The frame a quiet stream gets, so that nothing on its way closes it.
    fn keep_alive(&self) -> &'static [u8] {
        b": keep-alive\n\n"
    }

    /// The name of the event that carries one of the gateway's own errors after the first byte
    /// (`error` for APIs that name their events).
    fn error_event(&self) -> Option<&'static str> {
        None
    }

    /// The credential header by which the gateway's own key (`--upstream-api-key`) is sent.
    fn credential(&self, key: &str) -> Option<(HeaderName, HeaderValue)> {
        HeaderValue::from_str(&format!("Bearer {key}")).ok().map(|value| (AUTHORIZATION, value))
    }

    /// Whether the API names its answers, and has a call of its own to resume one by that id.
    fn names_answers(&self) -> bool {
        false
    }

    /// The id by which the API's own resume call names the answer, if `event` carries it (the
    /// Responses API: `response.id` of `response.created`).
    fn answer_id(&self, _event: &Event) -> Option<Box<str>> {
        None
    }

    /// The event's place in the API's own numbering (`sequence_number`), if it has one.
    fn sequence(&self, _event: &Event) -> Option<u64> {
        None
    }
}

/// The object a non-streaming client gets, built one event at a time as they arrive.
pub trait Merge: Send {
    /// Merges the next stored event.
    fn push(&mut self, event: &Event) -> Result<(), CollectError>;

    /// The object's body (JSON), once the answer ended normally.
    fn finish(self: Box<Self>) -> Result<Bytes, CollectError>;
}

/// A dialect, as the rest of the gateway holds it: `Copy`, and compared by its path (two
/// dialects never share one).
#[derive(Clone, Copy)]
pub struct Api(&'static dyn Dialect);

impl Api {
    /// The dialect served at `path` (the client's path, `/v1` included), if it is coalesced.
    pub fn at(path: &str) -> Option<Api> {
        let path = path.strip_suffix('/').unwrap_or(path).strip_prefix("/v1")?;
        ALL.iter().find(|dialect| dialect.path() == path).map(|&dialect| Api(dialect))
    }

    /// Every dialect, for the routes.
    pub fn all() -> impl Iterator<Item = Api> {
        ALL.iter().map(|&dialect| Api(dialect))
    }

    /// The dialect of Chat Completions: the default shape of the gateway's own errors.
    pub fn chat() -> Api {
        Api(&chat::Chat)
    }

    /// The dialect whose path `path` is or lies under (`/v1/messages/count_tokens` is
    /// Anthropic's), else Chat's: whose error shape and credential header a request that is
    /// not coalesced gets.
    pub fn under(path: &str) -> Api {
        let path = path.strip_prefix("/v1").unwrap_or_default();
        let under = |dialect: &&&dyn Dialect| {
            path.strip_prefix(dialect.path()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        ALL.iter().find(under).map_or(Api::chat(), |&dialect| Api(dialect))
    }

    /// The dialect named `name` ([`Dialect::name`]), if there is one.
    pub fn named(name: &str) -> Option<Api> {
        ALL.iter().find(|dialect| dialect.name() == name).map(|&dialect| Api(dialect))
    }

    /// The client's path: `/v1` and the dialect's.
    pub fn route(self) -> String {
        format!("/v1{}", self.0.path())
    }

    /// Whether the upstream is asked to stream (SSE). A streamed answer is shared by streaming
    /// and non-streaming clients alike.
    pub fn streams(self) -> bool {
        self.0.owned() != Owned::Nothing
    }

    /// The response for one of the gateway's own errors, in this API's shape.
    pub fn error_response(self, error: &error::Error<'_>) -> Response {
        json_response(error.status, self.0.error_body(error))
    }

    /// The selectors of `headers` and the query string in one canonical text, for the key.
    pub fn selectors(self, headers: &HeaderMap, query: Option<&str>) -> String {
        crate::http::headers::selectors(self.0.selectors(), headers, query)
    }
}

impl std::ops::Deref for Api {
    type Target = dyn Dialect;

    fn deref(&self) -> &(dyn Dialect + 'static) {
        self.0
    }
}

impl PartialEq for Api {
    fn eq(&self, other: &Api) -> bool {
        self.0.path() == other.0.path()
    }
}

impl Eq for Api {}

impl Hash for Api {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.path().hash(state);
    }
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

/// The JSON body of a merged object.
pub(crate) fn body_of(object: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(object).unwrap_or_default())
}

/// `parts` with each event classified by `api` as an upstream's are on arrival (for the
/// simulated model, whose events are made, not read): keep-alives dropped, the stream ended
/// after its last event, a failure event its error.
pub(crate) fn classified(api: Api, parts: Parts) -> Parts {
    let mut ended = false;
    parts
        .filter_map(move |part| {
            let out = match part {
                _ if ended => None,
                Ok(Part::Event(Event { name, data, .. })) if api.streams() => {
                    match api.classify(name, data) {
                        Class::Keep(event) => Some(Ok(Part::Event(event))),
                        Class::KeepAlive => None,
                        Class::Last(event) => {
                            ended = true;
                            event.map(|event| Ok(Part::Event(event)))
                        }
                        Class::Failure(event) => {
                            ended = true;
                            Some(Err(UpstreamError::InStream(event)))
                        }
                    }
                }
                other => Some(other),
            };
            std::future::ready(out)
        })
        .boxed()
}

/// The `type` member of an event's data, read without building the rest.
pub(crate) fn event_type(data: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    serde_json::from_slice::<Typed>(data).ok()?.kind
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_names_one_dialect() {
        for api in Api::all() {
            assert_eq!(Api::at(&api.route()), Some(api));
            assert_eq!(Api::at(&format!("{}/", api.route())), Some(api));
            assert_eq!(Api::named(api.name()), Some(api));
        }
        assert_eq!(Api::all().count(), ALL.len());
        assert_eq!(Api::at("/v1/messages/count_tokens"), None);
        assert_eq!(Api::at("/v1/responses/resp_1"), None);
        assert_eq!(Api::at("/chat/completions"), None);
        assert_eq!(Api::under("/v1/messages/count_tokens").name(), "messages");
        assert_eq!(Api::under("/v1/messages").name(), "messages");
        assert_eq!(Api::under("/v1/messagesx").name(), "chat");
        assert_eq!(Api::under("/v1/responses/resp_1").name(), "responses");
        assert_eq!(Api::under("/v1/models").name(), "chat");
    }
}
