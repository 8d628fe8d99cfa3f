//! The span of one flight (kind `CLIENT`, the upstream request), under its leader's span, and
//! how the requests of a flight find it: by key, while any of them or the flight lives.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError, Weak};

use futures::{Stream, StreamExt};
use hashbrown::HashMap;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanContext, SpanKind, Status, Tracer as _};
use opentelemetry_sdk::trace::{SdkTracer, Span};
use serde::Deserialize;
use streamflight_tokio::Role;

use super::Traces;
use super::client::{ClientSpan, under};
use crate::answer::registry::ClientId;
use crate::flight::{Part, UpstreamError};
use crate::http::access::role_name;
use crate::key::Key;

/// The flight of each key that has a traced leader, for the requests that join it to link to.
/// Weak: an entry goes when its flight and every request of it are done. hashbrown's hasher:
/// a key holds the whole canonical body, which SipHash would walk slowly at every request.
#[derive(Debug, Default)]
pub(crate) struct Leaders {
    flights: Mutex<HashMap<Key, Weak<FlightSlot>>>,
}

impl Leaders {
    fn find(&self, key: &Key) -> Option<Arc<FlightSlot>> {
        self.flights.lock().unwrap_or_else(PoisonError::into_inner).get(key).and_then(Weak::upgrade)
    }
}

/// What the requests of one flight share of its trace.
#[derive(Debug)]
pub(crate) struct FlightSlot {
    /// The flight span's context, once the upstream request started.
    context: OnceLock<SpanContext>,
    /// The leader's `x-request-id`, which names the flight.
    flight_id: OnceLock<Arc<str>>,
    /// The model its leader's body asked for.
    model: OnceLock<Option<Arc<str>>>,
    /// How many requests joined it (followers and joiners).
    joined: AtomicU64,
    /// The answer's usage, [`UNKNOWN`] until it says.
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    /// Where it is listed, to unlist it when it goes.
    key: Key,
    leaders: Weak<Leaders>,
}

/// A token count the answer has not given.
const UNKNOWN: u64 = u64::MAX;

impl FlightSlot {
    /// Puts what is known of the flight on a client `span`: the link to the flight's span,
    /// its id, the model, and the answer's usage.
    pub(super) fn describe(&self, span: &mut Span) {
        if let Some(context) = self.context.get() {
            span.add_link(context.clone(), Vec::new());
        }
        self.attributes(span);
    }

    /// The attributes the flight's span and its requests' share.
    fn attributes(&self, span: &mut Span) {
        if let Some(id) = self.flight_id.get() {
            span.set_attribute(KeyValue::new("streamflight.flight_id", Arc::clone(id)));
        }
        if let Some(Some(model)) = self.model.get() {
            span.set_attribute(KeyValue::new("gen_ai.request.model", Arc::clone(model)));
        }
        for (name, count) in [
            ("gen_ai.usage.input_tokens", &self.input_tokens),
            ("gen_ai.usage.output_tokens", &self.output_tokens),
        ] {
            let count = count.load(Ordering::Relaxed);
            if count != UNKNOWN {
                span.set_attribute(KeyValue::new(name, i64::try_from(count).unwrap_or(i64::MAX)));
            }
        }
    }
}

impl Drop for FlightSlot {
    fn drop(&mut self) {
        // Never listed (not a leader's): nothing to unlist, no lock to take.
        if self.flight_id.get().is_none() {
            return;
        }
        let Some(leaders) = self.leaders.upgrade() else { return };
        let mut flights = leaders.flights.lock().unwrap_or_else(PoisonError::into_inner);
        // Only if the entry is still this flight's, not a later flight's of the same key.
        if flights.get(&self.key).is_some_and(|listed| std::ptr::eq(listed.as_ptr(), self)) {
            flights.remove(&self.key);
        }
    }
}

/// How a client request reaches its flight's slot: found when it joined, or (when it joined
/// before its leader listed the flight) looked up again when its span ends.
#[derive(Debug)]
pub(super) enum Link {
    Found(Arc<FlightSlot>),
    Later(Arc<Leaders>, Key),
}

impl Link {
    /// The slot, if it can be found.
    pub(super) fn slot(&self) -> Option<Arc<FlightSlot>> {
        match self {
            Link::Found(slot) => Some(Arc::clone(slot)),
            Link::Later(leaders, key) => leaders.find(key),
        }
    }
}

/// A request's would-be flight, made before it is known whether it leads: its upstream
/// request is traced only if it runs ([`Flight::wrap`]), which it does only for the leader.
#[derive(Debug)]
pub(crate) struct Flight {
    slot: Arc<FlightSlot>,
    leaders: Arc<Leaders>,
    tracer: SdkTracer,
    parent: SpanContext,
    operation: &'static str,
}

impl Traces {
    /// The flight `client` would lead for `key`.
    pub(super) fn flight(&self, client: &ClientSpan, key: &Key, operation: &'static str) -> Flight {
        let slot = Arc::new(FlightSlot {
            context: OnceLock::new(),
            flight_id: OnceLock::new(),
            model: OnceLock::new(),
            joined: AtomicU64::new(0),
            input_tokens: AtomicU64::new(UNKNOWN),
            output_tokens: AtomicU64::new(UNKNOWN),
            key: key.clone(),
            leaders: Arc::downgrade(&self.leaders),
        });
        let (tracer, parent) = (self.tracer.clone(), client.context());
        Flight { slot, leaders: Arc::clone(&self.leaders), tracer, parent, operation }
    }
}

impl Flight {
    /// `prepare`, traced: the flight span starts when it is first polled (the upstream request
    /// is made) and ends with the answer's stream, or with the failure.
    pub(crate) fn wrap<F, S>(
        &self,
        prepare: F,
    ) -> impl Future<
        Output = Result<impl Stream<Item = Result<Part, UpstreamError>> + use<F, S>, UpstreamError>,
    > + use<F, S>
    where
        F: Future<Output = Result<S, UpstreamError>>,
        S: Stream<Item = Result<Part, UpstreamError>>,
    {
        let (slot, tracer, parent) = (Arc::clone(&self.slot), self.tracer.clone(), self.parent.clone());
        let operation = self.operation;
        async move {
            // Room for the seven attributes it ends with: no regrowth.
            let mut attributes = Vec::with_capacity(7);
            attributes.push(KeyValue::new("gen_ai.operation.name", operation));
            // Named `chat`, and `chat gpt-x` at its end, once its leader named the model.
            let span = tracer
                .span_builder(operation)
                .with_kind(SpanKind::Client)
                .with_attributes(attributes)
                .start_with_context(&tracer, &under(parent));
            let _ = slot.context.set(span.span_context().clone());
            let mut watch = Watch { span, slot, operation };
            match prepare.await {
                Ok(parts) => Ok(parts.inspect(move |item| watch.see(item))),
                Err(error) => {
                    watch.failed(&error);
                    Err(error)
                }
            }
        }
    }

    /// Where the request of this flight stands, now that its `role` is known: a leader lists
    /// the flight under its key, with its `id` and the `model` its body asked for; anyone else
    /// links to the flight it joined. `client` is the request's span.
    pub(crate) fn placed(self, client: &ClientSpan, role: Role, id: ClientId, model: Option<&str>) {
        let link = if role == Role::Leader {
            let _ = self.slot.flight_id.set(Arc::from(id.digits().as_str()));
            let _ = self.slot.model.set(model.map(Arc::from));
            let mut flights = self.leaders.flights.lock().unwrap_or_else(PoisonError::into_inner);
            flights.insert(self.slot.key.clone(), Arc::downgrade(&self.slot));
            drop(flights);
            Link::Found(self.slot)
        } else {
            match self.leaders.find(&self.slot.key) {
                Some(found) => {
                    found.joined.fetch_add(1, Ordering::Relaxed);
                    Link::Found(found)
                }
                None => Link::Later(Arc::clone(&self.leaders), self.slot.key.clone()),
            }
        };
        client.placed(role_name(role), link);
    }
}

/// The flight span while its answer streams; ended when dropped (the answer ended, failed,
/// or was given up).
struct Watch {
    span: Span,
    slot: Arc<FlightSlot>,
    operation: &'static str,
}

impl Watch {
    fn see(&mut self, item: &Result<Part, UpstreamError>) {
        match item {
            Ok(Part::Head(head)) => {
                let status = i64::from(head.status.as_u16());
                self.span.set_attribute(KeyValue::new("http.response.status_code", status));
            }
            // A named event carries usage only if it is one of those that do (the Responses
            // API's end, Anthropic's start and delta): the many deltas are not searched.
            Ok(Part::Event(event)) if event.name.as_deref().is_none_or(carries_usage) => {
                self.usage(&event.data)
            }
            Ok(Part::Event(_)) => {}
            Ok(Part::Body(piece)) => self.usage(piece),
            Err(error) => self.failed(error),
        }
    }

    fn failed(&mut self, error: &UpstreamError) {
        let status = i64::from(error.status().as_u16());
        let kind = match error {
            UpstreamError::Status { .. } => "status".to_owned(),
            UpstreamError::InStream(_) => "in_stream".to_owned(),
            UpstreamError::Broken { kind, .. } => format!("{kind:?}"),
        };
        self.span.set_attribute(KeyValue::new("http.response.status_code", status));
        self.span.set_attribute(KeyValue::new("error.type", kind));
        self.span.set_status(Status::error("the upstream answer failed"));
    }

    /// Reads the usage an event or body piece may carry (the last `"usage"` object in it:
    /// Chat's usage chunk, the Responses API's `response.completed`, Anthropic's message
    /// events, an embeddings body).
    fn usage(&self, data: &[u8]) {
        let Some((input, output)) = usage(data) else { return };
        if let Some(count) = input {
            self.slot.input_tokens.store(count, Ordering::Relaxed);
        }
        if let Some(count) = output {
            self.slot.output_tokens.store(count, Ordering::Relaxed);
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let joined = i64::try_from(self.slot.joined.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        self.span.set_attribute(KeyValue::new("streamflight.joined", joined));
        if let Some(Some(model)) = self.slot.model.get() {
            // The GenAI conventions' name: the operation and the model.
            self.span.update_name(format!("{} {model}", self.operation));
        }
        self.slot.attributes(&mut self.span);
        self.span.end();
    }
}

/// Whether an event of this name may carry a usage object: the Responses API's last events and
/// Anthropic's `message_start` (input tokens) and `message_delta` (output tokens).
fn carries_usage(name: &[u8]) -> bool {
    matches!(
        name,
        b"response.completed"
            | b"response.incomplete"
            | b"response.failed"
            | b"message_start"
            | b"message_delta"
    )
}

/// The input and output token counts of the last usage object in `data`, if it has one. Only
/// the bytes after `"usage"` are parsed, and only as far as that object goes.
fn usage(data: &[u8]) -> Option<(Option<u64>, Option<u64>)> {
    // Every Chat chunk but the last ends so (with `include_usage`, which the gateway asks for):
    // the last usage in it is none, as the search below would find, for nothing.
    if data.trim_ascii_end().ends_with(br#""usage":null}"#) {
        return None;
    }
    // Built once: a searcher's setup costs more than the search of a short event.
    static USAGE: LazyLock<memchr::memmem::FinderRev<'static>> =
        LazyLock::new(|| memchr::memmem::FinderRev::new(b"\"usage\""));
    let at = USAGE.rfind(data)?;
    let rest = data[at + b"\"usage\"".len()..].trim_ascii_start().strip_prefix(b":")?.trim_ascii_start();
    // Chat's chunks say `"usage":null` until the last: no parse (and no error built) for those.
    if !rest.starts_with(b"{") {
        return None;
    }
    let usage = serde_json::Deserializer::from_slice(rest).into_iter::<Usage>().next()?.ok()?;
    Some((usage.input_tokens.or(usage.prompt_tokens), usage.output_tokens.or(usage.completion_tokens)))
}

/// The token counts of a usage object, as OpenAI's and Anthropic's APIs name them.
#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::usage;

    #[test]
    fn usage_is_read_as_each_api_gives_it() {
        let chat = br#"{"id":"c","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":12,"total_tokens":16}}"#;
        assert_eq!(usage(chat), Some((Some(4), Some(12))));
        let responses =
            br#"{"type":"response.completed","response":{"usage":{"input_tokens":5,"output_tokens":7}}}"#;
        assert_eq!(usage(responses), Some((Some(5), Some(7))));
        let delta =
            br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage" : {"output_tokens":9}}"#;
        assert_eq!(usage(delta), Some((None, Some(9))));
        let embeddings = br#"{"data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":3,"total_tokens":3}}"#;
        assert_eq!(usage(embeddings), Some((Some(3), None)));
        // No usage, a usage that is not an object, the word in a text: nothing.
        assert_eq!(usage(br#"{"choices":[{"delta":{"content":"hi"}}]}"#), None);
        assert_eq!(usage(br#"{"usage":null}"#), None);
        assert_eq!(usage(br#"{"choices":[],"usage":null}"#), None);
        // An earlier usage than the last one does not count: the last says none.
        assert_eq!(usage(br#"{"a":{"usage":{"prompt_tokens":1}},"usage":null}"#), None);
        assert_eq!(usage(br#"{"content":"the \"usage\" word"}"#), None);
    }
}
