//! A Chat answer merged on its raw JSON, without building a tree, while its chunks keep to the
//! shape every provider streams (a role, words, a finish, usage): a third of a unique non-streaming
//! request's cost was building and merging `serde_json` trees (BENCHMARKS.md, issue 26).
//!
//! Only what the generic merge ([`super::chunks`]) would do is done here, and the first chunk
//! outside the shape hands over: what was merged is written as one chunk that the generic merge
//! takes into the same state, and every later chunk goes there. The shape:
//! - top-level members `id`, `object`, `created`, `model`, `system_fingerprint` and
//!   `service_tier` with scalar values, `usage` with any, `choices` an array or `null`,
//!   `obfuscation` (dropped) and `error` only as `null`;
//! - each choice with an integer `index`, a `delta` that is `null` or holds only `role`,
//!   `content` and `refusal` as strings or `null` (and `obfuscation`), `logprobs` only as `null`,
//!   and `finish_reason` a string or `null`;
//! - no member twice, and no key spelt with an escape.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::dialect::template::Template;

/// A top-level member of a plain chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Top {
    Id,
    Object,
    Created,
    Model,
    SystemFingerprint,
    ServiceTier,
    Usage,
    Choices,
}

impl Top {
    /// The member named `key`, if it is one.
    fn named(key: &str) -> Option<Top> {
        Some(match key {
            "id" => Top::Id,
            "object" => Top::Object,
            "created" => Top::Created,
            "model" => Top::Model,
            "system_fingerprint" => Top::SystemFingerprint,
            "service_tier" => Top::ServiceTier,
            "usage" => Top::Usage,
            "choices" => Top::Choices,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Top::Id => "id",
            Top::Object => "object",
            Top::Created => "created",
            Top::Model => "model",
            Top::SystemFingerprint => "system_fingerprint",
            Top::ServiceTier => "service_tier",
            Top::Usage => "usage",
            Top::Choices => "choices",
        }
    }
}

/// A member of a plain choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Member {
    Index,
    Delta,
    Logprobs,
    FinishReason,
}

/// A member of a plain delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Role,
    Content,
    Refusal,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Role => "role",
            Field::Content => "content",
            Field::Refusal => "refusal",
        }
    }
}

/// What the chunks merged so far add up to, in the generic merge's terms: members in the order
/// first seen, each with its last value that was not `null` (`None`: only `null` so far).
#[derive(Debug, Default)]
pub(crate) struct Plain {
    /// Top-level members; `Choices` has no value here.
    top: Vec<(Top, Option<Box<str>>)>,
    choices: BTreeMap<u64, Choice>,
    /// How many chunks were merged.
    merged: usize,
    /// The last chunk that added to one string alone, around that string, and where it goes: a
    /// chunk equal to it but for that string adds the same way (every other member of a merged
    /// chunk, merged again, changes nothing).
    template: Option<(Template, u64, Field)>,
    /// The bytes before `choices` of the last chunk read whole, and what they named: a chunk
    /// that starts with them is read from its `choices` on (those members, merged again, change
    /// nothing: only a chunk read whole changes them, and it replaces this).
    prefix: Option<Prefix>,
}

/// The start of a chunk, up to its `choices`' value.
#[derive(Debug)]
struct Prefix {
    bytes: Box<[u8]>,
    /// The members named there, `error` and `obfuscation` included: none may come again after.
    names: Vec<&'static str>,
}

/// One choice's merged members.
#[derive(Debug, Default)]
struct Choice {
    members: Vec<Member>,
    /// The delta's fields: `role` set once, `content` and `refusal` concatenated.
    fields: Vec<(Field, Option<String>)>,
    finish_reason: Option<Box<str>>,
}

impl Plain {
    /// Merges `chunk` if it keeps to the shape; `false`, with nothing changed, if it does not.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> bool {
        if let Some((template, index, field)) = &self.template
            && let Some(text) = template.string(chunk)
        {
            let (index, field) = (*index, *field);
            self.append(index, field, &text);
            self.merged += 1;
            return true;
        }
        let mut rest = Vec::new();
        let read = match &self.prefix {
            Some(prefix) if chunk.starts_with(&prefix.bytes) => read_after(chunk, prefix, &mut rest),
            _ => None,
        };
        let (mut read, whole) = match read {
            Some(read) => (read, false),
            None => match serde_json::from_slice::<Read<'_>>(chunk) {
                Ok(Read(Some(read))) => (read, true),
                _ => return false,
            },
        };
        let Some(texts) = read.texts() else { return false };
        if whole {
            // Read whole: its start, up to `choices`, is the one a next chunk may share.
            self.prefix = read.choices_at.take().and_then(|(raw, names)| {
                let at = (raw.get().as_ptr() as usize).checked_sub(chunk.as_ptr() as usize)?;
                Some(Prefix { bytes: chunk.get(..at)?.into(), names })
            });
        }
        self.template = None;
        for (top, value) in &read.top {
            set_status(slot(&mut self.top, *top), *value);
        }
        let mut added = Vec::new();
        for (choice, texts) in read.choices.iter().zip(texts) {
            let merged = self.choices.entry(choice.index).or_default();
            for member in &choice.members {
                if !merged.members.contains(member) {
                    merged.members.push(*member);
                }
            }
            set_status(&mut merged.finish_reason, choice.finish_reason);
            for ((field, raw), text) in choice.fields.iter().zip(texts) {
                let slot = slot(&mut merged.fields, *field);
                let Some(text) = text else { continue };
                match (field, slot) {
                    // Set once: the first that is neither `null` nor `""`.
                    (Field::Role, Some(role)) if !role.is_empty() => {}
                    (Field::Role, slot) => *slot = Some(text.into_owned()),
                    (_, slot) => grow(slot.get_or_insert_default(), &text),
                }
                if *field != Field::Role {
                    added.push((choice.index, *field, *raw));
                }
            }
        }
        if let [(index, field, raw)] = added[..] {
            self.template = Template::around(chunk, raw).map(|template| (template, index, field));
        }
        self.merged += 1;
        true
    }

    /// How many chunks were merged.
    pub(crate) fn merged(&self) -> usize {
        self.merged
    }

    /// Appends `text` to a string of choice `index`, as a chunk of the template's shape does.
    fn append(&mut self, index: u64, field: Field, text: &str) {
        let Some(choice) = self.choices.get_mut(&index) else { return };
        if let Some((_, slot)) = choice.fields.iter_mut().find(|(seen, _)| *seen == field) {
            grow(slot.get_or_insert_default(), text);
        }
    }

    /// One chunk that the generic merge takes into the state this one holds: what it is handed
    /// when a chunk does not keep to the shape. `None` if nothing was merged.
    pub(crate) fn as_chunk(&self) -> Option<Vec<u8>> {
        if self.merged == 0 {
            return None;
        }
        let mut out = Vec::with_capacity(256);
        out.push(b'{');
        for (i, (top, value)) in self.top.iter().enumerate() {
            comma(&mut out, i);
            key(&mut out, top.name());
            match top {
                Top::Choices => {
                    out.push(b'[');
                    for (i, (index, choice)) in self.choices.iter().enumerate() {
                        comma(&mut out, i);
                        choice.write_chunk(&mut out, *index);
                    }
                    out.push(b']');
                }
                _ => out.extend_from_slice(value.as_deref().unwrap_or("null").as_bytes()),
            }
        }
        out.push(b'}');
        Some(out)
    }

    /// The completion object's body, as the generic merge's `finish` and `serde_json` write it;
    /// `None` if no chunk carried a choice.
    pub(crate) fn finish(&self) -> Option<Vec<u8>> {
        if self.choices.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(256);
        out.push(b'{');
        let mut written = 0;
        let has = |wanted: Top| self.top.iter().any(|(top, _)| *top == wanted);
        // `object` is the completion's; where no chunk said it, it follows `id`, or comes first.
        let object_after_id = !has(Top::Object) && has(Top::Id);
        if !has(Top::Object) && !has(Top::Id) {
            member(&mut out, &mut written, "object", br#""chat.completion""#);
        }
        for (top, value) in &self.top {
            match top {
                Top::Object => member(&mut out, &mut written, "object", br#""chat.completion""#),
                Top::Choices => {
                    comma(&mut out, written);
                    written += 1;
                    key(&mut out, "choices");
                    out.push(b'[');
                    for (i, (index, choice)) in self.choices.iter().enumerate() {
                        comma(&mut out, i);
                        choice.write_completion(&mut out, *index);
                    }
                    out.push(b']');
                }
                _ => {
                    comma(&mut out, written);
                    written += 1;
                    key(&mut out, top.name());
                    rewrite(&mut out, value.as_deref());
                    if *top == Top::Id && object_after_id {
                        member(&mut out, &mut written, "object", br#""chat.completion""#);
                    }
                }
            }
        }
        out.push(b'}');
        Some(out)
    }
}

impl Choice {
    /// This choice as a chunk's: its members as merged.
    fn write_chunk(&self, out: &mut Vec<u8>, index: u64) {
        out.push(b'{');
        for (i, member) in self.members.iter().enumerate() {
            comma(out, i);
            match member {
                Member::Index => {
                    key(out, "index");
                    let _ = write!(out, "{index}");
                }
                Member::Delta => {
                    key(out, "delta");
                    out.push(b'{');
                    for (i, (field, value)) in self.fields.iter().enumerate() {
                        comma(out, i);
                        key(out, field.name());
                        string_or_null(out, value.as_deref());
                    }
                    out.push(b'}');
                }
                Member::Logprobs => out.extend_from_slice(br#""logprobs":null"#),
                Member::FinishReason => {
                    key(out, "finish_reason");
                    out.extend_from_slice(self.finish_reason.as_deref().unwrap_or("null").as_bytes());
                }
            }
        }
        out.push(b'}');
    }

    /// This choice as the completion's: `index`, `message`, `logprobs` and `finish_reason`,
    /// where the generic merge's `finish_choice` and `finish_message` put them.
    fn write_completion(&self, out: &mut Vec<u8>, index: u64) {
        out.push(b'{');
        let mut written = 0;
        let mut members = self.members.clone();
        // A plain choice always names its index; a completion's choice always has a message,
        // after the index, then `logprobs` and `finish_reason` if no chunk sent them.
        if !members.contains(&Member::Delta) {
            let at = members.iter().position(|m| *m == Member::Index).map_or(0, |i| i + 1);
            members.insert(at, Member::Delta);
        }
        for last in [Member::Logprobs, Member::FinishReason] {
            if !members.contains(&last) {
                members.push(last);
            }
        }
        for member in members {
            comma(out, written);
            written += 1;
            match member {
                Member::Index => {
                    key(out, "index");
                    let _ = write!(out, "{index}");
                }
                Member::Delta => self.write_message(out),
                Member::Logprobs => out.extend_from_slice(br#""logprobs":null"#),
                Member::FinishReason => {
                    key(out, "finish_reason");
                    rewrite(out, self.finish_reason.as_deref());
                }
            }
        }
        out.push(b'}');
    }

    /// `"message":{"role":..,"content":..,"refusal":..}`: the role or `assistant`, the text, or
    /// `null` when there is none but a refusal, and the refusal or `null`.
    fn write_message(&self, out: &mut Vec<u8>) {
        let field = |wanted: Field| {
            self.fields.iter().find(|(field, _)| *field == wanted).and_then(|(_, value)| value.as_deref())
        };
        let role = field(Field::Role).filter(|role| !role.is_empty()).unwrap_or("assistant");
        let refusal = field(Field::Refusal);
        let content = match field(Field::Content) {
            Some(text) if !text.is_empty() => Some(text),
            _ if refusal.is_some_and(|refusal| !refusal.is_empty()) => None,
            _ => Some(""),
        };
        out.extend_from_slice(br#""message":{"role":"#);
        string_or_null(out, Some(role));
        out.extend_from_slice(br#","content":"#);
        string_or_null(out, content);
        out.extend_from_slice(br#","refusal":"#);
        string_or_null(out, refusal);
        out.push(b'}');
    }
}

/// The value of `key` in `members` (first seen, in order), added as `None` if it is not there.
fn slot<K: PartialEq, V>(members: &mut Vec<(K, Option<V>)>, key: K) -> &mut Option<V> {
    let at = match members.iter().position(|(seen, _)| *seen == key) {
        Some(at) => at,
        None => {
            members.push((key, None));
            members.len() - 1
        }
    };
    &mut members[at].1
}

/// The least room a merged text grows by.
const GROWTH: usize = 128;

/// Appends `text` to `whole`, growing its room by at least [`GROWTH`] bytes: an answer grows a
/// token at a time, and from nothing by doubling it would be copied five times by 64 bytes.
fn grow(whole: &mut String, text: &str) {
    if whole.capacity() - whole.len() < text.len() {
        whole.reserve(text.len().max(whole.len()).max(GROWTH));
    }
    whole.push_str(text);
}

/// A status: the last value that is not `null` replaces the one before.
fn set_status(slot: &mut Option<Box<str>>, value: Option<&RawValue>) {
    let Some(value) = value.map(RawValue::get) else { return };
    if value != "null" && slot.as_deref() != Some(value) {
        *slot = Some(value.into());
    }
}

fn comma(out: &mut Vec<u8>, written: usize) {
    if written > 0 {
        out.push(b',');
    }
}

/// `"name":`, for names that need no escape.
fn key(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// A member whose value is already JSON text.
fn member(out: &mut Vec<u8>, written: &mut usize, name: &str, value: &[u8]) {
    comma(out, *written);
    *written += 1;
    key(out, name);
    out.extend_from_slice(value);
}

fn string_or_null(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => {
            let _ = serde_json::to_writer(&mut *out, text);
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// A value as a `serde_json` tree re-serialises it (escapes and exponents as the generic merge
/// writes them), or `null`. Most values are written so already and are copied: a string
/// without an escape (it has no control character or quote either, or it would not be JSON),
/// an integer, a boolean.
fn rewrite(out: &mut Vec<u8>, raw: Option<&str>) {
    let Some(raw) = raw else {
        out.extend_from_slice(b"null");
        return;
    };
    let bytes = raw.as_bytes();
    let as_written = match bytes.first() {
        Some(b'"') => !bytes.contains(&b'\\'),
        Some(b'-' | b'0'..=b'9') => bytes.iter().skip(1).all(u8::is_ascii_digit),
        Some(b't' | b'f' | b'n') => true,
        _ => false,
    };
    if as_written {
        out.extend_from_slice(bytes);
        return;
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(value) => {
            let _ = serde_json::to_writer(&mut *out, &value);
        }
        Err(_) => out.extend_from_slice(b"null"),
    }
}

/// A chunk read as members in the order written, or `None` if it does not keep to the shape.
struct Read<'a>(Option<Chunk<'a>>);

struct Chunk<'a> {
    /// Members with their values (`None` for `choices`), `null` included.
    top: Vec<(Top, Option<&'a RawValue>)>,
    choices: Vec<ChunkChoice<'a>>,
    /// The value of `choices`, and the members named before it.
    choices_at: Option<(&'a RawValue, Vec<&'static str>)>,
    /// The members named, `error` and `obfuscation` included.
    names: Vec<&'static str>,
}

/// `chunk` read from `at`, where a prefix of the names in `prefix` ends and its `choices`
/// starts; `None` if what follows is not a plain chunk's end or names a member again (the
/// chunk is then read whole). `rest` holds the members after `choices`.
fn read_after<'a>(chunk: &'a [u8], prefix: &Prefix, rest: &'a mut Vec<u8>) -> Option<Chunk<'a>> {
    let after = chunk.get(prefix.bytes.len()..)?;
    let mut values = serde_json::Deserializer::from_slice(after).into_iter::<Choices<'a>>();
    let Choices(Some(choices)) = values.next()?.ok()? else { return None };
    let tail = after.get(values.byte_offset()..)?;
    if json_trim(tail) == b"}" {
        return Some(Chunk { top: Vec::new(), choices, choices_at: None, names: Vec::new() });
    }
    // `,"usage":{..}}` is read as the object `{"usage":{..}}`.
    rest.push(b'{');
    rest.extend_from_slice(json_trim(tail).strip_prefix(b",")?);
    let Read(Some(members)) = serde_json::from_slice::<Read<'a>>(rest).ok()? else { return None };
    let again = members.names.iter().any(|name| prefix.names.contains(name) || *name == "choices");
    (!again).then_some(Chunk { choices, ..members })
}

struct ChunkChoice<'a> {
    index: u64,
    members: Vec<Member>,
    fields: Vec<(Field, &'a RawValue)>,
    finish_reason: Option<&'a RawValue>,
}

/// Each choice's fields' texts, in the order of [`ChunkChoice::fields`] (`None` for `null`).
type Texts<'a> = Vec<Vec<Option<Cow<'a, str>>>>;

impl<'a> Chunk<'a> {
    /// Each choice's fields' texts, or `None` if one is not a string.
    fn texts(&self) -> Option<Texts<'a>> {
        self.choices
            .iter()
            .map(|choice| {
                choice
                    .fields
                    .iter()
                    .map(|(_, raw)| match raw.get() {
                        "null" => Some(None),
                        text => serde_json::from_str::<Text<'a>>(text).ok().map(|text| Some(text.0)),
                    })
                    .collect()
            })
            .collect()
    }
}

/// A JSON string, borrowed where it has no escape.
struct Text<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }
        }
        deserializer.deserialize_str(Visit)
    }
}

/// `bytes` without JSON's whitespace around them (not `trim_ascii`'s: a form feed is not JSON's).
fn json_trim(bytes: &[u8]) -> &[u8] {
    let json_space = |byte: &u8| matches!(byte, b' ' | b'\t' | b'\n' | b'\r');
    let start = bytes.iter().position(|byte| !json_space(byte)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|byte| !json_space(byte)).map_or(start, |end| end + 1);
    &bytes[start..end]
}

/// Whether `raw` is a scalar: a string, a number, a boolean or `null`.
fn scalar(raw: &RawValue) -> bool {
    !matches!(raw.get().as_bytes().first(), Some(b'{' | b'['))
}

/// Whether `raw` is a JSON string or `null`.
fn string_or_null_raw(raw: &RawValue) -> bool {
    let text = raw.get();
    text == "null" || text.starts_with('"')
}

impl<'de: 'a, 'a> de::Deserialize<'de> for Read<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ChunkVisitor)
    }
}

struct ChunkVisitor;

impl<'de> Visitor<'de> for ChunkVisitor {
    type Value = Read<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a chat chunk")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Read<'de>, A::Error> {
        let mut chunk = Chunk {
            top: Vec::with_capacity(8),
            choices: Vec::new(),
            choices_at: None,
            names: Vec::with_capacity(8),
        };
        let mut plain = true;
        while let Some(name) = map.next_key::<&'de str>()? {
            let (top, name) = match Top::named(name) {
                Some(top) => (Some(top), top.name()),
                None if name == "error" => (None, "error"),
                None if name == "obfuscation" => (None, "obfuscation"),
                None => {
                    plain = false;
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            plain &= !chunk.names.contains(&name);
            chunk.names.push(name);
            let value = map.next_value::<&'de RawValue>()?;
            match top {
                None if name == "error" => plain &= value.get() == "null",
                None => {}
                Some(Top::Choices) => {
                    match serde_json::from_str::<Option<Choices<'de>>>(value.get()) {
                        Ok(Some(Choices(Some(choices)))) => chunk.choices = choices,
                        Ok(None) => {}
                        _ => plain = false,
                    }
                    let before = chunk.names[..chunk.names.len() - 1].to_vec();
                    chunk.choices_at = Some((value, before));
                    chunk.top.push((Top::Choices, None));
                }
                Some(top) => {
                    plain &= top == Top::Usage || scalar(value);
                    chunk.top.push((top, Some(value)));
                }
            }
        }
        Ok(Read(plain.then_some(chunk)))
    }
}

/// A chunk's `choices`: `None` if one of them does not keep to the shape.
struct Choices<'a>(Option<Vec<ChunkChoice<'a>>>);

impl<'de: 'a, 'a> de::Deserialize<'de> for Choices<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Choices<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of choices")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Choices<'de>, A::Error> {
                let mut choices: Vec<ChunkChoice<'de>> = Vec::with_capacity(1);
                let mut plain = true;
                while let Some(choice) = seq.next_element::<ChoiceRead<'de>>()? {
                    match choice.0 {
                        // Two choices of one index in one chunk: the generic merge's business.
                        Some(choice) if choices.iter().all(|seen| seen.index != choice.index) => {
                            choices.push(choice)
                        }
                        _ => plain = false,
                    }
                }
                Ok(Choices(plain.then_some(choices)))
            }
        }
        deserializer.deserialize_seq(Visit)
    }
}

/// One element of `choices`: `None` if it does not keep to the shape.
struct ChoiceRead<'a>(Option<ChunkChoice<'a>>);

impl<'de: 'a, 'a> de::Deserialize<'de> for ChoiceRead<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = ChoiceRead<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a choice")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ChoiceRead<'de>, A::Error> {
                let mut choice = ChunkChoice {
                    index: 0,
                    members: Vec::with_capacity(4),
                    fields: Vec::new(),
                    finish_reason: None,
                };
                let named = |name: &str| match name {
                    "index" => Some(Member::Index),
                    "delta" => Some(Member::Delta),
                    "logprobs" => Some(Member::Logprobs),
                    "finish_reason" => Some(Member::FinishReason),
                    _ => None,
                };
                let mut plain = read_members(map, named, |member, value| {
                    let once = !choice.members.contains(&member);
                    choice.members.push(member);
                    let text = value.get();
                    once && match member {
                        // Digits alone: a number the generic merge reads as this index and
                        // writes back the same.
                        Member::Index => match text.parse::<u64>() {
                            Ok(index) if text.bytes().all(|b| b.is_ascii_digit()) => {
                                choice.index = index;
                                true
                            }
                            _ => false,
                        },
                        Member::Delta if text == "null" => true,
                        Member::Delta => match serde_json::from_str::<Delta<'de>>(text) {
                            Ok(Delta(Some(fields))) => {
                                choice.fields = fields;
                                true
                            }
                            _ => false,
                        },
                        Member::Logprobs => text == "null",
                        Member::FinishReason => {
                            choice.finish_reason = Some(value);
                            string_or_null_raw(value)
                        }
                    }
                })?;
                plain &= choice.members.contains(&Member::Index);
                Ok(ChoiceRead(plain.then_some(choice)))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// A choice's `delta`: `None` if it does not keep to the shape.
struct Delta<'a>(Option<Vec<(Field, &'a RawValue)>>);

impl<'de: 'a, 'a> de::Deserialize<'de> for Delta<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Delta<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a delta")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Delta<'de>, A::Error> {
                let mut fields: Vec<(Field, &'de RawValue)> = Vec::with_capacity(3);
                let named = |name: &str| match name {
                    "role" => Some(Field::Role),
                    "content" => Some(Field::Content),
                    "refusal" => Some(Field::Refusal),
                    _ => None,
                };
                let plain = read_members(map, named, |field, value| {
                    let once = !fields.iter().any(|(seen, _)| *seen == field);
                    fields.push((field, value));
                    once && string_or_null_raw(value)
                })?;
                Ok(Delta(plain.then_some(fields)))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// Reads a map's members, each value raw, through `each`, which says whether the member keeps
/// to the shape; `false` too for a name `named` does not know, but `obfuscation` (once), which
/// every merge drops.
fn read_members<'de, A: MapAccess<'de>, K>(
    mut map: A,
    named: impl Fn(&str) -> Option<K>,
    mut each: impl FnMut(K, &'de RawValue) -> bool,
) -> Result<bool, A::Error> {
    let mut plain = true;
    let mut seen_obfuscation = false;
    while let Some(name) = map.next_key::<&'de str>()? {
        match named(name) {
            Some(key) => plain &= each(key, map.next_value::<&'de RawValue>()?),
            None => {
                plain &= name == "obfuscation" && !seen_obfuscation;
                seen_obfuscation = true;
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(plain)
}
