//! Merges an Anthropic Messages API event stream into the `Message` a call without `stream` returns,
//! so one upstream stream can answer streaming and non-streaming clients alike.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::dialect::chunks::CollectError;
use crate::dialect::template::Template;

/// Builds the `Message` one event at a time.
#[derive(Debug, Default)]
pub(super) struct Merge {
    /// The position of the next event, for error reports.
    position: usize,
    state: State,
    /// The last text or thinking delta merged, around its string, with its block's index and
    /// the field it grows: a delta equal to it but for that string is merged by comparing
    /// bytes (issue 21: building every event cost 7 times forwarding it).
    template: Option<(Template, usize, &'static str)>,
}

#[derive(Debug, Default)]
enum State {
    /// No `message_start` yet.
    #[default]
    Waiting,
    /// Between `message_start` and `message_stop`.
    Open(Open),
    /// `message_stop` was merged: this is the finished `Message`.
    Done(Map<String, Value>),
    /// A push failed; the merge is over and keeps answering with that error.
    Failed(CollectError),
}

#[derive(Debug)]
struct Open {
    /// The `message_start` message; its `content` is a null placeholder that keeps the key's place.
    message: Map<String, Value>,
    /// The content blocks, by index.
    blocks: Vec<Block>,
}

#[derive(Debug)]
struct Block {
    fields: Map<String, Value>,
    /// The `input_json_delta` text so far, for a block that takes an input.
    json: Option<String>,
    /// Whether `content_block_stop` was merged.
    stopped: bool,
}

/// Why an event failed, before its position is known.
enum Fault {
    Malformed(String),
    Upstream(Value),
}

fn malformed(reason: impl Into<String>) -> Fault {
    Fault::Malformed(reason.into())
}

/// The event types this merge acts on.
#[derive(Clone, Copy)]
enum Kind {
    MessageStart,
    BlockStart,
    BlockDelta,
    BlockStop,
    MessageDelta,
    MessageStop,
    Error,
    /// `ping`, and any type newer than this code: nothing to merge.
    Ignored,
}

impl Kind {
    fn of(name: &str) -> Kind {
        match name {
            "message_start" => Kind::MessageStart,
            "content_block_start" => Kind::BlockStart,
            "content_block_delta" => Kind::BlockDelta,
            "content_block_stop" => Kind::BlockStop,
            "message_delta" => Kind::MessageDelta,
            "message_stop" => Kind::MessageStop,
            "error" => Kind::Error,
            _ => Kind::Ignored,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::MessageStart => "message_start",
            Kind::BlockStart => "content_block_start",
            Kind::BlockDelta => "content_block_delta",
            Kind::BlockStop => "content_block_stop",
            Kind::MessageDelta => "message_delta",
            Kind::MessageStop => "message_stop",
            Kind::Error => "error",
            Kind::Ignored => "ignored",
        }
    }
}

impl Merge {
    /// A merge that has seen no event yet.
    pub(super) fn new() -> Merge {
        Merge::default()
    }

    /// Merges the next event's data (the SSE `data:` payload, JSON; its `type` says which event).
    ///
    /// `ping` and unknown event types are ignored. An `error` event fails with
    /// [`CollectError::Upstream`], anything that does not fit the stream with
    /// [`CollectError::Malformed`]; after a failure every call returns that same error.
    pub(super) fn push(&mut self, data: &[u8]) -> Result<(), CollectError> {
        let position = self.position;
        self.position += 1;
        if let State::Failed(error) = &self.state {
            return Err(error.clone());
        }
        if self.push_repeat(data) {
            return Ok(());
        }
        self.apply(data).map_err(|fault| {
            let error = match fault {
                Fault::Malformed(reason) => CollectError::Malformed { index: position, reason },
                Fault::Upstream(error) => CollectError::Upstream(error),
            };
            // The state may be half updated: nothing merged after this point could be trusted.
            self.state = State::Failed(error.clone());
            error
        })?;
        self.template = template(data);
        Ok(())
    }

    /// Merges a delta that is the template's but for its string: the same block and field,
    /// still open and still text, as the generic merge requires of it.
    fn push_repeat(&mut self, data: &[u8]) -> bool {
        let (Some((template, index, field)), State::Open(open)) = (&self.template, &mut self.state) else {
            return false;
        };
        let Some(piece) = template.string(data) else { return false };
        let Some(block) = open.blocks.get_mut(*index).filter(|block| !block.stopped) else { return false };
        match block.fields.get_mut(*field) {
            Some(Value::String(text)) => {
                text.push_str(&piece);
                true
            }
            _ => false,
        }
    }

    /// The merged `Message` once `message_stop` was pushed.
    ///
    /// [`CollectError::Empty`] when no `message_start` came, [`CollectError::Malformed`] when the
    /// stream ended before `message_stop`, or the error a push already returned.
    pub(super) fn finish(self) -> Result<Value, CollectError> {
        match self.state {
            State::Done(message) => Ok(Value::Object(message)),
            State::Waiting => Err(CollectError::Empty),
            State::Open(_) => Err(CollectError::Malformed {
                index: self.position,
                reason: "the stream ended before message_stop".to_owned(),
            }),
            State::Failed(error) => Err(error),
        }
    }

    fn apply(&mut self, data: &[u8]) -> Result<(), Fault> {
        let Value::Object(mut event) =
            serde_json::from_slice(data).map_err(|_| malformed("the event data is not JSON"))?
        else {
            return Err(malformed("the event data is not a JSON object"));
        };
        // Read, not removed: removing would reorder the map, and message_delta keeps its key order.
        let kind = match event.get("type") {
            Some(Value::String(name)) => Kind::of(name),
            _ => return Err(malformed("the event has no string type")),
        };
        match kind {
            Kind::Ignored => Ok(()),
            // The API sends the error object under `error`; a bare error event still means a failure.
            Kind::Error => Err(Fault::Upstream(event.remove("error").unwrap_or(Value::Null))),
            Kind::MessageStart => self.start(event),
            // Taken by value so the blocks move into the message instead of being cloned.
            Kind::MessageStop => match std::mem::take(&mut self.state) {
                State::Open(open) => {
                    self.state = State::Done(open.close()?);
                    Ok(())
                }
                other => {
                    self.state = other;
                    Err(self.out_of_place(kind))
                }
            },
            Kind::BlockStart | Kind::BlockDelta | Kind::BlockStop | Kind::MessageDelta => {
                let State::Open(open) = &mut self.state else {
                    return Err(self.out_of_place(kind));
                };
                match kind {
                    Kind::BlockStart => open.start_block(event),
                    Kind::BlockDelta => open.block(&event)?.apply(&mut event),
                    Kind::BlockStop => open.block(&event)?.stop(),
                    _ => open.update(event),
                }
            }
        }
    }

    fn start(&mut self, mut event: Map<String, Value>) -> Result<(), Fault> {
        if !matches!(self.state, State::Waiting) {
            return Err(self.out_of_place(Kind::MessageStart));
        }
        let Some(Value::Object(mut message)) = event.remove("message") else {
            return Err(malformed("message_start has no message object"));
        };
        // The API sends `content: []`; blocks already there would take the first indexes.
        let blocks = match message.get_mut("content").map(Value::take) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.into_iter().map(Block::new).collect::<Result<_, _>>()?,
            Some(_) => return Err(malformed("message_start content is not an array")),
        };
        self.state = State::Open(Open { message, blocks });
        Ok(())
    }

    fn out_of_place(&self, kind: Kind) -> Fault {
        let when = match self.state {
            State::Waiting => "before message_start",
            State::Open(_) => "after message_start",
            _ => "after message_stop",
        };
        malformed(format!("{} {when}", kind.name()))
    }
}

impl Open {
    fn start_block(&mut self, mut event: Map<String, Value>) -> Result<(), Fault> {
        let index = index_of(&event)?;
        // The SDKs append on content_block_start: blocks must start in index order.
        if index != self.blocks.len() {
            return Err(malformed(if index < self.blocks.len() {
                "content_block_start for a block already started"
            } else {
                "content_block_start skips an index"
            }));
        }
        let block = event
            .remove("content_block")
            .ok_or_else(|| malformed("content_block_start has no content_block"))?;
        self.blocks.push(Block::new(block)?);
        Ok(())
    }

    /// The open block that a delta or stop event names.
    fn block(&mut self, event: &Map<String, Value>) -> Result<&mut Block, Fault> {
        let block = self
            .blocks
            .get_mut(index_of(event)?)
            .ok_or_else(|| malformed("no block was started at that index"))?;
        if block.stopped {
            return Err(malformed("the block at that index was already stopped"));
        }
        Ok(block)
    }

    fn update(&mut self, event: Map<String, Value>) -> Result<(), Fault> {
        for (key, value) in event {
            match key.as_str() {
                "type" => {}
                "delta" => {
                    let Value::Object(delta) = value else {
                        return Err(malformed("message_delta delta is not an object"));
                    };
                    for (key, value) in delta {
                        // The SDKs assign these even when null: null is their final value.
                        let always = matches!(key.as_str(), "stop_reason" | "stop_sequence" | "stop_details");
                        set(&mut self.message, key, value, always);
                    }
                }
                "usage" => {
                    let Value::Object(counts) = value else {
                        return Err(malformed("message_delta usage is not an object"));
                    };
                    let usage = self.message.entry("usage").or_insert(Value::Null);
                    if usage.is_null() {
                        *usage = Value::Object(Map::new());
                    }
                    let Value::Object(usage) = usage else {
                        return Err(malformed("the message usage is not an object"));
                    };
                    for (key, value) in counts {
                        // Counts are cumulative, so they replace; an omitted or null one keeps the start's.
                        let always = key == "output_tokens";
                        set(usage, key, value, always);
                    }
                }
                // Top-level extras (beta `context_management`...) replace the message's when given.
                _ => set(&mut self.message, key, value, false),
            }
        }
        Ok(())
    }

    /// Ends the message: unstopped blocks are finalised, and `content` takes its merged value.
    fn close(mut self) -> Result<Map<String, Value>, Fault> {
        let mut content = Vec::with_capacity(self.blocks.len());
        for mut block in self.blocks {
            if !block.stopped {
                block.stop()?;
            }
            content.push(Value::Object(block.fields));
        }
        // Replaces the placeholder in place, or adds `content` last if message_start had none.
        self.message.insert("content".to_owned(), Value::Array(content));
        Ok(self.message)
    }
}

impl Block {
    fn new(block: Value) -> Result<Block, Fault> {
        let Value::Object(fields) = block else {
            return Err(malformed("a content block is not an object"));
        };
        let takes_input = fields.contains_key("input")
            || matches!(
                fields.get("type").and_then(Value::as_str),
                Some("tool_use" | "server_tool_use" | "mcp_tool_use")
            );
        Ok(Block { fields, json: takes_input.then(String::new), stopped: false })
    }

    fn apply(&mut self, event: &mut Map<String, Value>) -> Result<(), Fault> {
        let Some(Value::Object(mut delta)) = event.remove("delta") else {
            return Err(malformed("content_block_delta has no delta object"));
        };
        let kind = match delta.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            _ => return Err(malformed("the delta has no string type")),
        };
        match kind {
            "text_delta" => append(&mut self.fields, &mut delta, "text"),
            "thinking_delta" => append(&mut self.fields, &mut delta, "thinking"),
            // Normally one delta onto the start's "": appending gives it byte for byte either way.
            "signature_delta" => append(&mut self.fields, &mut delta, "signature"),
            "input_json_delta" => {
                let Some(json) = self.json.as_mut() else {
                    return Err(malformed("input_json_delta for a block that takes no input"));
                };
                let Some(Value::String(part)) = delta.remove("partial_json") else {
                    return Err(malformed("input_json_delta has no string partial_json"));
                };
                json.push_str(&part);
                Ok(())
            }
            "citations_delta" => {
                let Some(citation) = delta.remove("citation") else {
                    return Err(malformed("citations_delta has no citation"));
                };
                match self.fields.get_mut("citations") {
                    Some(Value::Array(citations)) => citations.push(citation),
                    Some(slot @ Value::Null) => *slot = Value::Array(vec![citation]),
                    None => {
                        self.fields.insert("citations".to_owned(), Value::Array(vec![citation]));
                    }
                    Some(_) => return Err(malformed("the block's citations is not an array")),
                }
                Ok(())
            }
            // A delta type newer than this code: strings grow, anything else is the latest value.
            _ => {
                for (key, value) in delta {
                    if key == "type" {
                        continue;
                    }
                    match (self.fields.get_mut(&key), value) {
                        (Some(Value::String(text)), Value::String(part)) => text.push_str(&part),
                        (Some(slot), value) => *slot = value,
                        (None, value) => {
                            self.fields.insert(key, value);
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Finalises the block: the streamed input, if any, replaces the start's.
    fn stop(&mut self) -> Result<(), Fault> {
        self.stopped = true;
        match self.json.take() {
            // No input_json_delta text: the start's `input` (normally `{}`) is the input.
            Some(json) if !json.is_empty() => {
                let input: Value =
                    serde_json::from_str(&json).map_err(|_| malformed("the tool input is not valid JSON"))?;
                self.fields.insert("input".to_owned(), input);
            }
            _ => {}
        }
        Ok(())
    }
}

/// The event's `index`, a non-negative integer.
fn index_of(event: &Map<String, Value>) -> Result<usize, Fault> {
    event
        .get("index")
        .and_then(Value::as_u64)
        .and_then(|index| usize::try_from(index).ok())
        .ok_or_else(|| malformed("the event has no integer index"))
}

/// Appends the delta's string `key` to the block's.
fn append(fields: &mut Map<String, Value>, delta: &mut Map<String, Value>, key: &str) -> Result<(), Fault> {
    let Some(Value::String(part)) = delta.remove(key) else {
        return Err(malformed(format!("the delta has no string {key}")));
    };
    match fields.get_mut(key) {
        // Taking the first piece whole saves a copy when a block starts empty.
        Some(Value::String(text)) if text.is_empty() => *text = part,
        Some(Value::String(text)) => text.push_str(&part),
        Some(slot @ Value::Null) => *slot = Value::String(part),
        None => {
            fields.insert(key.to_owned(), Value::String(part));
        }
        Some(_) => return Err(malformed(format!("the block's {key} is not a string"))),
    }
    Ok(())
}

/// The template of a text or thinking delta (`content_block_delta` with only `type`,
/// `index` and `delta` {`type`, and `text` or `thinking`}), if `data` is one.
fn template(data: &[u8]) -> Option<(Template, usize, &'static str)> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Delta<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        index: usize,
        #[serde(borrow)]
        delta: Piece<'a>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Piece<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(borrow, default)]
        text: Option<&'a RawValue>,
        #[serde(borrow, default)]
        thinking: Option<&'a RawValue>,
    }
    let event: Delta<'_> = serde_json::from_slice(data).ok()?;
    let (field, raw) = match (event.kind, event.delta.kind, event.delta.text, event.delta.thinking) {
        ("content_block_delta", "text_delta", Some(raw), None) => ("text", raw),
        ("content_block_delta", "thinking_delta", None, Some(raw)) => ("thinking", raw),
        _ => return None,
    };
    Some((Template::around(data, raw)?, event.index, field))
}

/// Sets `key` (in place if present, last if new); a null only counts when `always`.
fn set(map: &mut Map<String, Value>, key: String, value: Value, always: bool) {
    if always || !value.is_null() {
        map.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::Merge;
    use crate::dialect::chunks::CollectError;

    /// Merges the events' data, failing on the first error like the gateway does.
    fn merge(events: &[Value]) -> Result<Value, CollectError> {
        let mut merge = Merge::new();
        for event in events {
            merge.push(event.to_string().as_bytes())?;
        }
        merge.finish()
    }

    fn merge_raw(events: &[&str]) -> Result<Value, CollectError> {
        let mut merge = Merge::new();
        for event in events {
            merge.push(event.as_bytes())?;
        }
        merge.finish()
    }

    fn start(usage: Value) -> Value {
        json!({"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [],
            "model": "claude-sonnet-4-6", "stop_reason": null, "stop_sequence": null, "usage": usage,
        }})
    }

    fn block_start(index: usize, block: Value) -> Value {
        json!({"type": "content_block_start", "index": index, "content_block": block})
    }

    fn delta(index: usize, delta: Value) -> Value {
        json!({"type": "content_block_delta", "index": index, "delta": delta})
    }

    fn text(index: usize, text: &str) -> Value {
        delta(index, json!({"type": "text_delta", "text": text}))
    }

    fn block_stop(index: usize) -> Value {
        json!({"type": "content_block_stop", "index": index})
    }

    fn message_delta(stop_reason: &str, output_tokens: u64) -> Value {
        json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
               "usage": {"output_tokens": output_tokens}})
    }

    fn stop() -> Value {
        json!({"type": "message_stop"})
    }

    fn reason(error: CollectError) -> (usize, String) {
        match error {
            CollectError::Malformed { index, reason } => (index, reason),
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn text_answer() {
        let message = merge(&[
            start(json!({"input_tokens": 10, "output_tokens": 1})),
            block_start(0, json!({"type": "text", "text": ""})),
            json!({"type": "ping"}),
            text(0, "Hello"),
            text(0, ", wörld"),
            text(0, "!"),
            block_stop(0),
            message_delta("end_turn", 12),
            stop(),
        ])
        .unwrap();
        assert_eq!(
            message.to_string(),
            json!({"id": "msg_1", "type": "message", "role": "assistant",
                   "content": [{"type": "text", "text": "Hello, wörld!"}],
                   "model": "claude-sonnet-4-6", "stop_reason": "end_turn", "stop_sequence": null,
                   "usage": {"input_tokens": 10, "output_tokens": 12}})
            .to_string()
        );
    }

    #[test]
    fn tool_input_in_many_pieces() {
        let input = r#"{"location": "San Francisco, CA", "unit": "celsius", "note": "a \"quoted\" \u00e9"}"#;
        let mut events = vec![
            start(json!({"input_tokens": 5, "output_tokens": 1})),
            block_start(0, json!({"type": "text", "text": "Let me check."})),
            block_stop(0),
            block_start(1, json!({"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}})),
            delta(1, json!({"type": "input_json_delta", "partial_json": ""})),
        ];
        // Three bytes at a time: pieces split keys, string values and the escapes inside them.
        for piece in input.as_bytes().chunks(3) {
            let piece = std::str::from_utf8(piece).unwrap();
            events.push(delta(1, json!({"type": "input_json_delta", "partial_json": piece})));
        }
        events.extend([block_stop(1), message_delta("tool_use", 30), stop()]);
        let message = merge(&events).unwrap();
        assert_eq!(
            message["content"],
            json!([{"type": "text", "text": "Let me check."},
                   {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                    "input": {"location": "San Francisco, CA", "unit": "celsius", "note": "a \"quoted\" é"}}])
        );
        assert_eq!(message["stop_reason"], "tool_use");
    }

    #[test]
    fn empty_tool_input_keeps_the_start_input() {
        let message = merge(&[
            start(json!({"input_tokens": 5, "output_tokens": 1})),
            block_start(0, json!({"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}})),
            delta(0, json!({"type": "input_json_delta", "partial_json": ""})),
            block_stop(0),
            block_start(
                1,
                json!({"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
                                  "input": {}}),
            ),
            delta(1, json!({"type": "input_json_delta", "partial_json": "{\"query\": \"rust\"}"})),
            block_stop(1),
            message_delta("tool_use", 9),
            stop(),
        ])
        .unwrap();
        assert_eq!(message["content"][0]["input"], json!({}));
        assert_eq!(message["content"][1]["input"], json!({"query": "rust"}));
    }

    #[test]
    fn thinking_signature_and_text() {
        let message = merge(&[
            start(json!({"input_tokens": 3, "output_tokens": 1})),
            block_start(0, json!({"type": "thinking", "thinking": "", "signature": ""})),
            delta(0, json!({"type": "thinking_delta", "thinking": "Let me think"})),
            delta(0, json!({"type": "thinking_delta", "thinking": " about it."})),
            delta(0, json!({"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"})),
            block_stop(0),
            block_start(1, json!({"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"})),
            block_stop(1),
            block_start(2, json!({"type": "text", "text": ""})),
            text(2, "42."),
            block_stop(2),
            message_delta("end_turn", 20),
            stop(),
        ])
        .unwrap();
        assert_eq!(
            message["content"],
            json!([{"type": "thinking", "thinking": "Let me think about it.",
                    "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"},
                   {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
                   {"type": "text", "text": "42."}])
        );
    }

    #[test]
    fn citations() {
        let first = json!({"type": "char_location", "cited_text": "The grass is green.", "document_index": 0,
                           "document_title": "Facts", "start_char_index": 0, "end_char_index": 20});
        let second = json!({"type": "web_search_result_location", "cited_text": "Sky", "url": "https://a.b",
                            "title": "Sky", "encrypted_index": "Eo8B"});
        let message = merge(&[
            start(json!({"input_tokens": 3, "output_tokens": 1})),
            block_start(0, json!({"type": "text", "text": "", "citations": []})),
            delta(0, json!({"type": "citations_delta", "citation": first})),
            text(0, "the grass is green"),
            delta(0, json!({"type": "citations_delta", "citation": second})),
            block_stop(0),
            // A start without `citations`: the first citation creates the array.
            block_start(1, json!({"type": "text", "text": ""})),
            delta(1, json!({"type": "citations_delta", "citation": second})),
            text(1, "and the sky blue"),
            block_stop(1),
            message_delta("end_turn", 20),
            stop(),
        ])
        .unwrap();
        assert_eq!(
            message["content"],
            json!([{"type": "text", "text": "the grass is green", "citations": [first, second]},
                   {"type": "text", "text": "and the sky blue", "citations": [second]}])
        );
    }

    #[test]
    fn unknown_blocks_and_deltas() {
        let result = json!({"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1",
                            "content": [{"type": "web_search_result", "url": "https://a.b", "title": "T",
                                         "encrypted_content": "Eq", "page_age": null}]});
        let message = merge(&[
            start(json!({"input_tokens": 3, "output_tokens": 1})),
            block_start(0, result.clone()),
            block_stop(0),
            block_start(1, json!({"type": "future_block", "body": "", "n": 1})),
            delta(1, json!({"type": "body_delta", "body": "ab"})),
            delta(1, json!({"type": "body_delta", "body": "cd", "n": 2, "extra": [1]})),
            block_stop(1),
            json!({"type": "future_event", "index": "whatever"}),
            message_delta("end_turn", 20),
            stop(),
        ])
        .unwrap();
        assert_eq!(message["content"][0].to_string(), result.to_string());
        assert_eq!(
            message["content"][1].to_string(),
            json!({"type": "future_block", "body": "abcd", "n": 2, "extra": [1]}).to_string()
        );
    }

    #[test]
    fn usage_updated_by_message_delta() {
        let message = merge(&[
            start(
                json!({"input_tokens": 472, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 100,
                         "output_tokens": 2, "service_tier": "standard"}),
            ),
            block_start(0, json!({"type": "text", "text": ""})),
            text(0, "Hi"),
            block_stop(0),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                   "usage": {"input_tokens": null, "cache_read_input_tokens": 120, "output_tokens": 7,
                             "server_tool_use": {"web_search_requests": 1}}}),
            stop(),
        ])
        .unwrap();
        // Keys keep their place; the new one comes last.
        assert_eq!(
            message["usage"].to_string(),
            json!({"input_tokens": 472, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 120,
                   "output_tokens": 7, "service_tier": "standard",
                   "server_tool_use": {"web_search_requests": 1}})
            .to_string()
        );
    }

    #[test]
    fn stop_sequence_and_unknown_message_fields() {
        let message = merge(&[
            json!({"type": "message_start", "message": {
                "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "m",
                "stop_reason": null, "stop_sequence": null, "container": null, "future": {"a": 1},
                "usage": {"input_tokens": 3, "output_tokens": 1}}}),
            block_start(0, json!({"type": "text", "text": ""})),
            text(0, "one, two, "),
            block_stop(0),
            json!({"type": "message_delta",
                   "delta": {"stop_reason": "stop_sequence", "stop_sequence": "three",
                             "container": {"id": "c1", "expires_at": "2030-01-01T00:00:00Z"}},
                   "usage": {"output_tokens": 6}, "context_management": {"applied_edits": []}}),
            stop(),
        ])
        .unwrap();
        assert_eq!(
            message.to_string(),
            json!({"id": "msg_1", "type": "message", "role": "assistant",
                   "content": [{"type": "text", "text": "one, two, "}], "model": "m",
                   "stop_reason": "stop_sequence", "stop_sequence": "three",
                   "container": {"id": "c1", "expires_at": "2030-01-01T00:00:00Z"}, "future": {"a": 1},
                   "usage": {"input_tokens": 3, "output_tokens": 6},
                   "context_management": {"applied_edits": []}})
            .to_string()
        );
    }

    #[test]
    fn big_numbers_keep_their_digits() {
        let message = merge_raw(&[
            r#"{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","content":[],"model":"x","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":123456789012345678901234567890,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"n","input":{}}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"a\": 9007199254740993"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"1, \"b\": 0.10000000000000000000001, \"c\": 1e400}"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":18446744073709551616}}"#,
            r#"{"type":"message_stop"}"#,
        ])
        .unwrap();
        // Every digit kept; serde_json only spells the exponent `e+` (the same number).
        assert_eq!(
            message["content"][0]["input"].to_string(),
            r#"{"a":90071992547409931,"b":0.10000000000000000000001,"c":1e+400}"#
        );
        assert_eq!(
            message["usage"].to_string(),
            r#"{"input_tokens":123456789012345678901234567890,"output_tokens":18446744073709551616}"#
        );
    }

    #[test]
    fn error_event() {
        let error = json!({"type": "overloaded_error", "message": "Overloaded"});
        let mut merge = Merge::new();
        merge.push(start(json!({"input_tokens": 1, "output_tokens": 1})).to_string().as_bytes()).unwrap();
        merge.push(block_start(0, json!({"type": "text", "text": ""})).to_string().as_bytes()).unwrap();
        let event = json!({"type": "error", "error": error});
        assert_eq!(merge.push(event.to_string().as_bytes()), Err(CollectError::Upstream(error.clone())));
        // The failure sticks: later events and finish report it again.
        assert_eq!(merge.push(stop().to_string().as_bytes()), Err(CollectError::Upstream(error.clone())));
        assert_eq!(merge.finish(), Err(CollectError::Upstream(error)));

        // Even before message_start, and without an `error` object, it is the upstream failing.
        let mut merge = Merge::new();
        assert_eq!(merge.push(br#"{"type": "error"}"#), Err(CollectError::Upstream(Value::Null)));
    }

    #[test]
    fn stream_without_message_stop() {
        let error = merge(&[
            start(json!({"input_tokens": 1, "output_tokens": 1})),
            block_start(0, json!({"type": "text", "text": ""})),
            text(0, "cut"),
        ])
        .unwrap_err();
        assert_eq!(reason(error), (3, "the stream ended before message_stop".to_owned()));
    }

    #[test]
    fn nothing_to_merge_is_empty() {
        assert_eq!(merge(&[]), Err(CollectError::Empty));
        assert_eq!(merge(&[json!({"type": "ping"}), json!({"type": "ping"})]), Err(CollectError::Empty));
    }

    #[test]
    fn an_unstopped_block_is_finalised_at_message_stop() {
        let message = merge(&[
            start(json!({"input_tokens": 1, "output_tokens": 1})),
            block_start(0, json!({"type": "tool_use", "id": "t", "name": "n", "input": {}})),
            delta(0, json!({"type": "input_json_delta", "partial_json": "{\"x\": [1, 2]}"})),
            message_delta("tool_use", 4),
            stop(),
        ])
        .unwrap();
        assert_eq!(message["content"][0]["input"], json!({"x": [1, 2]}));
    }

    #[test]
    fn garbage() {
        let ok = start(json!({"input_tokens": 1, "output_tokens": 1})).to_string();
        let open = block_start(0, json!({"type": "text", "text": "secret"})).to_string();
        let cases: &[(&[&str], usize, &str)] = &[
            (&["not json at all"], 0, "the event data is not JSON"),
            (&[&ok, "[1, 2]"], 1, "the event data is not a JSON object"),
            (&[&ok, r#"{"index": 0}"#], 1, "the event has no string type"),
            (
                &[&ok, r#"{"type": "content_block_start", "index": "0", "content_block": {}}"#],
                1,
                "the event has no integer index",
            ),
            (
                &[&ok, r#"{"type": "content_block_start", "index": 0.5, "content_block": {}}"#],
                1,
                "the event has no integer index",
            ),
            (
                &[&ok, r#"{"type": "content_block_start", "index": -1, "content_block": {}}"#],
                1,
                "the event has no integer index",
            ),
            (
                &[&ok, r#"{"type": "content_block_start", "index": 1, "content_block": {}}"#],
                1,
                "content_block_start skips an index",
            ),
            (&[&ok, &open, &open], 2, "content_block_start for a block already started"),
            (
                &[&ok, r#"{"type": "content_block_start", "index": 0, "content_block": "text"}"#],
                1,
                "a content block is not an object",
            ),
            (
                &[
                    &ok,
                    r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}"#,
                ],
                1,
                "no block was started at that index",
            ),
            (
                &[
                    &ok,
                    &open,
                    r#"{"type": "content_block_stop", "index": 0}"#,
                    r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}"#,
                ],
                3,
                "the block at that index was already stopped",
            ),
            (
                &[
                    &ok,
                    &open,
                    r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta"}}"#,
                ],
                2,
                "the delta has no string text",
            ),
            (
                &[&ok, &open, r#"{"type": "content_block_delta", "index": 0, "delta": {"text": "secret"}}"#],
                2,
                "the delta has no string type",
            ),
            (
                &[
                    &ok,
                    &open,
                    r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{"}}"#,
                ],
                2,
                "input_json_delta for a block that takes no input",
            ),
            (
                &[
                    &ok,
                    r#"{"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "input": {}}}"#,
                    r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"secret"}}"#,
                    r#"{"type": "content_block_stop", "index": 0}"#,
                ],
                3,
                "the tool input is not valid JSON",
            ),
            (&[r#"{"type": "message_stop"}"#], 0, "message_stop before message_start"),
            (
                &[&ok, r#"{"type": "message_stop"}"#, r#"{"type": "message_stop"}"#],
                2,
                "message_stop after message_stop",
            ),
            (&[&ok, &ok], 1, "message_start after message_start"),
            (
                &[&ok, r#"{"type": "message_stop"}"#, r#"{"type": "message_delta", "delta": {}}"#],
                2,
                "message_delta after message_stop",
            ),
            (
                &[r#"{"type": "message_start", "message": "secret"}"#],
                0,
                "message_start has no message object",
            ),
            (
                &[&ok, r#"{"type": "message_delta", "delta": "secret"}"#],
                1,
                "message_delta delta is not an object",
            ),
        ];
        for (events, index, expected) in cases {
            let error = merge_raw(events).unwrap_err();
            let (at, why) = reason(error);
            assert_eq!((at, why.as_str()), (*index, *expected), "{events:?}");
            assert!(!why.contains("secret"), "{why}");
        }
    }

    /// `text_pieces` of llmock's streaming.py: pieces matching `\s*\S+\s*`, or the text whole.
    fn llmock_text_pieces(text: &str) -> Vec<&str> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while !rest.trim_start().is_empty() {
            let word = rest.len() - rest.trim_start().len();
            let word_end = rest[word..].find(char::is_whitespace).map_or(rest.len(), |at| word + at);
            let end = rest.len() - rest[word_end..].trim_start().len();
            pieces.push(&rest[..end]);
            rest = &rest[end..];
        }
        if pieces.concat() == text { pieces } else { vec![text] }
    }

    /// `fragments` of llmock's streaming.py: 12 characters at a time, or one empty fragment.
    fn llmock_fragments(value: &str) -> Vec<String> {
        let chars: Vec<char> = value.chars().collect();
        let fragments: Vec<String> = chars.chunks(12).map(|chunk| chunk.iter().collect()).collect();
        if fragments.is_empty() { vec![String::new()] } else { fragments }
    }

    /// Python's `json.dumps(data, separators=(",", ":"))`: compact, and ASCII only.
    fn python_dumps(data: &Value) -> String {
        let mut out = String::new();
        for c in data.to_string().chars() {
            // serde_json already escaped the control characters; Python also escapes DEL and non-ASCII.
            if (' '..='~').contains(&c) {
                out.push(c);
            } else {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
        out
    }

    /// The data of each event llmock's `anthropic_events` sends for a completion.
    fn llmock_events(
        answer: &str,
        calls: &[(&str, &str, &str)],
        stop_reason: &str,
        tokens: (u64, u64),
    ) -> Vec<String> {
        let mut events = vec![json!({"type": "message_start", "message": {
            "id": "msg_01", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-6",
            "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": tokens.0, "output_tokens": 1}}})];
        let mut index = 0;
        if !answer.is_empty() || calls.is_empty() {
            events.push(block_start(index, json!({"type": "text", "text": ""})));
            events.push(json!({"type": "ping"}));
            events.extend(llmock_text_pieces(answer).into_iter().map(|piece| text(index, piece)));
            events.push(block_stop(index));
            index += 1;
        }
        for (id, name, arguments) in calls {
            events.push(block_start(index, json!({"type": "tool_use", "id": id, "name": name, "input": {}})));
            for fragment in llmock_fragments(arguments) {
                events.push(delta(index, json!({"type": "input_json_delta", "partial_json": fragment})));
            }
            events.push(block_stop(index));
            index += 1;
        }
        events.push(
            json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                           "usage": {"output_tokens": tokens.1}}),
        );
        events.push(stop());
        events.iter().map(python_dumps).collect()
    }

    #[test]
    fn llmock_stream_merges_into_llmock_message() {
        let arguments = r#"{"city": "Z\u00fcrich", "days": 3, "units": ["metric"], "big": 123456789012345678901234567890}"#;
        let events = llmock_events(
            "Hello, wörld! How are  you today?\n",
            &[("toolu_0123456789abcdef01234567", "get_weather", arguments), ("toolu_2", "noop", "{}")],
            "tool_use",
            (17, 42),
        );
        // Events captured from llmock 0.2.2 for this completion: the builder sends the same bytes.
        let captured = [
            (
                0,
                r#"{"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-6","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":17,"output_tokens":1}}}"#,
            ),
            (2, r#"{"type":"ping"}"#),
            (
                4,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"w\u00f6rld! "}}"#,
            ),
            (
                8,
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"today?\n"}}"#,
            ),
            (
                10,
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_0123456789abcdef01234567","name":"get_weather","input":{}}}"#,
            ),
            (
                11,
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Z\\"}}"#,
            ),
            (
                12,
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"u00fcrich\", "}}"#,
            ),
            (
                17,
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"012345678901"}}"#,
            ),
            (
                21,
                r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#,
            ),
            (
                23,
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":42}}"#,
            ),
            (24, r#"{"type":"message_stop"}"#),
        ];
        assert_eq!(events.len(), 25);
        for (at, data) in captured {
            assert_eq!(events[at], data, "event {at}");
        }
        let mut merge = Merge::new();
        for event in &events {
            merge.push(event.as_bytes()).unwrap();
        }
        // llmock's non-streaming answer to the same completion (routers/anthropic.py), compact.
        let expected = r#"{"id":"msg_01","type":"message","role":"assistant","content":[{"type":"text","text":"Hello, wörld! How are  you today?\n"},{"type":"tool_use","id":"toolu_0123456789abcdef01234567","name":"get_weather","input":{"city":"Zürich","days":3,"units":["metric"],"big":123456789012345678901234567890}},{"type":"tool_use","id":"toolu_2","name":"noop","input":{}}],"model":"claude-sonnet-4-6","stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":17,"output_tokens":42}}"#;
        assert_eq!(merge.finish().unwrap().to_string(), expected);
    }

    #[test]
    fn thousands_of_events() {
        let mut merge = Merge::new();
        let mut push = |event: Value| merge.push(event.to_string().as_bytes()).unwrap();
        push(start(json!({"input_tokens": 1, "output_tokens": 1})));
        push(block_start(0, json!({"type": "text", "text": ""})));
        for _ in 0..20_000 {
            push(text(0, "word "));
        }
        push(block_stop(0));
        push(block_start(1, json!({"type": "tool_use", "id": "t", "name": "n", "input": {}})));
        push(delta(1, json!({"type": "input_json_delta", "partial_json": "{\"list\": ["})));
        for i in 0..20_000 {
            push(delta(1, json!({"type": "input_json_delta", "partial_json": format!("{i}, ")})));
        }
        push(delta(1, json!({"type": "input_json_delta", "partial_json": "0]}"})));
        push(block_stop(1));
        push(message_delta("tool_use", 40_000));
        push(stop());
        let message = merge.finish().unwrap();
        assert_eq!(message["content"][0]["text"].as_str().unwrap().len(), 5 * 20_000);
        assert_eq!(message["content"][1]["input"]["list"].as_array().unwrap().len(), 20_001);
    }
}
