//! A coalesced endpoint's request body, checked once: its lossless canonical text for the flight key,
//! and the bytes sent upstream, every member as the client sent it but `stream` and `stream_options`.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::{self, Write as _};
use std::ops::Range;

use bytes::Bytes;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A request body, checked and prepared once.
#[derive(Clone, Debug)]
pub struct Body {
    /// Whether the client asked to stream (`"stream": true`). Always `false` for an endpoint that
    /// does not stream (`parse(_, Owned::Nothing)`), whatever the body says.
    pub stream: bool,
    /// Whether the client asked for the usage chunk (`stream_options.include_usage == true`).
    /// Always `false` for an endpoint that does not stream.
    pub include_usage: bool,
    /// The canonical text of the body without `stream` and `stream_options` (the key's part).
    pub canonical: String,
    /// The bytes to send upstream.
    pub upstream: Bytes,
    /// The top-level `model`, if it is a string (for the access log and the metrics' label).
    pub model: Option<Box<str>>,
}

/// Why a body was refused (answered 400 with an OpenAI error body by the caller).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is not one JSON value (nesting deeper than serde_json's limit included):
    /// serde_json's message.
    NotJson(String),
    /// The body is JSON but not an object.
    NotAnObject,
    /// `stream` is neither a boolean nor `null`.
    StreamNotBoolean,
    /// `stream_options` is neither an object nor `null`.
    StreamOptionsNotObject,
    /// `stream_options.include_usage` is neither a boolean nor `null`.
    IncludeUsageNotBoolean,
    /// An object names one member twice (at any depth): the path to it, as `messages[0].role`.
    /// RFC 8259 leaves what that means to each parser (the first, the last, an error), so no key
    /// can stand for what every upstream reads: it is refused.
    DuplicateMember(String),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::NotJson(message) => write!(f, "the body is not valid JSON: {message}"),
            BodyError::NotAnObject => f.write_str("the body must be a JSON object"),
            BodyError::StreamNotBoolean => f.write_str("`stream` must be a boolean"),
            BodyError::StreamOptionsNotObject => f.write_str("`stream_options` must be an object"),
            BodyError::IncludeUsageNotBoolean => {
                f.write_str("`stream_options.include_usage` must be a boolean")
            }
            BodyError::DuplicateMember(path) => {
                write!(f, "the body names the member `{path}` twice: each name may appear once in an object")
            }
        }
    }
}

impl std::error::Error for BodyError {}

/// The `stream_options` the gateway sends when the client sent none.
const USAGE_ONLY: &str = r#"{"include_usage":true}"#;

/// Which top-level members of a body are the gateway's own (a dialect says, G10): left out of
/// the key, and set in the body sent upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owned {
    /// None: the body goes upstream as sent, and every member is in the key (embeddings).
    Nothing,
    /// `stream`, made `true` upstream (the Responses API, Anthropic's Messages).
    Stream,
    /// `stream`, made `true`, and `stream_options`, with `include_usage` made `true` (Chat
    /// Completions and Completions, whose usage comes only when asked for).
    StreamAndUsage,
}

/// Checks `bytes` and prepares both of its uses.
///
/// With `owned` other than [`Owned::Nothing`] the upstream body keeps every top-level member in
/// its place with its value's text as sent, but every `stream` value becomes `true` (a missing
/// one is appended at the end) and, for [`Owned::StreamAndUsage`], every `stream_options` value
/// the client's last one with `include_usage` set to `true` (its other members as sent; a
/// missing one appended). With [`Owned::Nothing`] the upstream body is `bytes`, untouched.
///
/// The canonical text leaves out the owned top-level members; it has every other. A body that
/// names a member twice in any object is refused ([`BodyError::DuplicateMember`]): parsers
/// differ on which one counts, so the key could not say what the upstream reads.
pub fn parse(bytes: &[u8], owned: Owned) -> Result<Body, BodyError> {
    let not_json = |fault: Fault| match fault {
        Fault::Json(error) => BodyError::NotJson(error.to_string()),
        Fault::Duplicate(path) => BodyError::DuplicateMember(render(&path)),
    };
    let text = check(bytes).map_err(Fault::Json).map_err(not_json)?;
    let mut walker = Walker { text, pos: 0 };
    walker.skip_whitespace();
    if walker.peek() != Some(b'{') {
        return Err(BodyError::NotAnObject);
    }
    let mut canonical = String::with_capacity(text.len());
    // Sent as it is with `Owned::Nothing`, so every field is part of the answer: all of them are
    // in the key.
    let mut transport = Transport {
        stream_owned: owned != Owned::Nothing,
        usage: owned == Owned::StreamAndUsage,
        ..Transport::default()
    };
    walker.object(&mut canonical, 1, Some(&mut transport)).map_err(not_json)?;
    // A name with escapes is read as JSON; a member that is no string names no model.
    let model = transport.model.take().and_then(|span| serde_json::from_str::<String>(&text[span]).ok());
    let model = model.map(String::into_boxed_str);
    if owned == Owned::Nothing {
        let upstream = Bytes::copy_from_slice(bytes);
        return Ok(Body { stream: false, include_usage: false, canonical, upstream, model });
    }
    // Duplicates are refused, so there is one at most.
    let stream = match transport.stream.last().map(|span| &text[span.clone()]) {
        None | Some("null" | "false") => false,
        Some("true") => true,
        Some(_) => return Err(BodyError::StreamNotBoolean),
    };
    if !transport.usage {
        let upstream = Bytes::from(upstream_body(text, &transport, None));
        return Ok(Body { stream, include_usage: false, canonical, upstream, model });
    }
    let options = transport.stream_options.last().map(|span| &text[span.clone()]);
    let (include_usage, options) = stream_options(options)?;
    let upstream = Bytes::from(upstream_body(text, &transport, Some(&options)));
    Ok(Body { stream, include_usage, canonical, upstream, model })
}

/// The canonical text of any JSON value: object keys sorted by their unescaped text (bytewise), no
/// whitespace, strings escaped one way, and numbers written from their exact decimal value (`1`,
/// `1.0`, `10e-1` alike; no two different values alike). A member named twice in one object is an
/// error.
pub fn canonical_json(raw: &[u8]) -> Result<String, serde_json::Error> {
    let text = check(raw)?;
    let mut out = String::with_capacity(text.len());
    match (Walker { text, pos: 0 }).value(&mut out, 0) {
        Ok(()) => Ok(out),
        Err(Fault::Json(error)) => Err(error),
        Err(Fault::Duplicate(path)) => Err(de::Error::custom(BodyError::DuplicateMember(render(&path)))),
    }
}

/// Why the walker stopped.
#[derive(Debug)]
enum Fault {
    /// Not JSON (or deeper than the limit).
    Json(serde_json::Error),
    /// A member named twice in one object: the steps to it, the innermost first (each object or
    /// array adds its own as the error passes out of it, so a body without one pays nothing).
    Duplicate(Vec<Step>),
}

impl From<serde_json::Error> for Fault {
    fn from(error: serde_json::Error) -> Fault {
        Fault::Json(error)
    }
}

impl Fault {
    /// A duplicate of `key` in the object at hand.
    fn duplicate(key: &str) -> Fault {
        Fault::Duplicate(vec![Step::Key(key.to_owned())])
    }

    /// The same fault, seen from the container that holds the value at `step`.
    fn within(self, step: impl FnOnce() -> Step) -> Fault {
        match self {
            Fault::Duplicate(mut path) => {
                path.push(step());
                Fault::Duplicate(path)
            }
            json => json,
        }
    }
}

/// One step of a path into a JSON value.
#[derive(Debug)]
enum Step {
    Key(String),
    Index(usize),
}

/// The longest member name a path shows in full: a message, not a copy of the body.
const SHOWN_KEY_CHARS: usize = 64;

/// `steps` (innermost first) as a path: `messages[0].role`, `["a b"]`, a long name cut with `…`.
fn render(steps: &[Step]) -> String {
    let mut path = String::new();
    for step in steps.iter().rev() {
        match step {
            Step::Index(index) => {
                let _ = write!(path, "[{index}]");
            }
            Step::Key(key) => {
                let mut shown: String = key.chars().take(SHOWN_KEY_CHARS).collect();
                if shown.len() < key.len() {
                    shown.push('…');
                }
                let plain = !key.is_empty()
                    && !key.starts_with(|c: char| c.is_ascii_digit())
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if plain {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&shown);
                } else {
                    let _ = write!(path, "[{}]", serde_json::Value::String(shown));
                }
            }
        }
    }
    path
}

/// Checks that `bytes` is one JSON value, with serde_json's messages and its nesting limit, without
/// building it; the same bytes as text.
fn check(bytes: &[u8]) -> Result<&str, serde_json::Error> {
    serde_json::from_slice::<Checked>(bytes)?;
    // serde_json has checked every string's UTF-8, and JSON outside strings is ASCII.
    std::str::from_utf8(bytes).map_err(|_| de::Error::custom("the body is not UTF-8"))
}

/// A JSON value seen and let go: deserializing it checks the value, keeping nothing.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Checked, D::Error> {
        // `deserialize_any` descends through serde_json's depth check, which skipping a value
        // (`IgnoredAny`, `RawValue`) does not.
        deserializer.deserialize_any(Checked)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Checked, A::Error> {
        while items.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    // Objects, and numbers too: under `arbitrary_precision` serde_json hands a number over as a
    // one-member map holding its text.
    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Checked, A::Error> {
        while members.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// Deeper than serde_json lets through (it stops at 128 open containers): a guard for the walker's
/// recursion should the check ever change.
const MAX_DEPTH: usize = 128;

/// Where the top-level `stream`, `stream_options` and `model` members' values are, and where
/// members end.
#[derive(Default)]
struct Transport {
    /// The span of every `stream` value, in order.
    stream: Vec<Range<usize>>,
    /// The span of every `stream_options` value, in order (when they are the gateway's).
    stream_options: Vec<Range<usize>>,
    /// Whether `stream` is the gateway's (not for an endpoint that does not stream).
    stream_owned: bool,
    /// Whether `stream_options` is the gateway's too.
    usage: bool,
    /// The span of the `model` value, which stays in the key.
    model: Option<Range<usize>>,
    /// Whether the object has any member.
    members: bool,
    /// Where the last member's value ends (just after `{` when there is none).
    end: usize,
}

/// A cursor over JSON that serde_json has checked: it writes canonical text as it goes and
/// allocates only for escaped strings and for the members of an object out of key order.
struct Walker<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Walker<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Checked input never gets here; an error rather than a panic if it ever does.
    fn broken(&self) -> serde_json::Error {
        de::Error::custom(format_args!("unexpected JSON at byte {}", self.pos))
    }

    fn slice(&self, span: Range<usize>) -> Result<&'a str, serde_json::Error> {
        self.text.get(span).ok_or_else(|| self.broken())
    }

    fn guard(&self, depth: usize) -> Result<(), serde_json::Error> {
        if depth > MAX_DEPTH { Err(de::Error::custom("recursion limit exceeded")) } else { Ok(()) }
    }

    /// Writes the canonical form of the value at the cursor, inside `depth` containers.
    fn value(&mut self, out: &mut String, depth: usize) -> Result<(), Fault> {
        self.skip_whitespace();
        match self.peek() {
            Some(b'{') => self.object(out, depth + 1, None),
            Some(b'[') => self.array(out, depth + 1),
            Some(b'"') => {
                let raw = self.string()?;
                write_string(out, raw, &unescape(raw)?);
                Ok(())
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
                    self.pos += 1;
                }
                write_number(out, self.slice(start..self.pos)?);
                Ok(())
            }
            _ => {
                let rest = self.slice(self.pos..self.text.len())?;
                let literal = ["true", "false", "null"].into_iter().find(|word| rest.starts_with(word));
                let literal = literal.ok_or_else(|| self.broken())?;
                out.push_str(literal);
                self.pos += literal.len();
                Ok(())
            }
        }
    }

    fn array(&mut self, out: &mut String, depth: usize) -> Result<(), Fault> {
        self.guard(depth)?;
        self.pos += 1;
        out.push('[');
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            out.push(']');
            return Ok(());
        }
        let mut index = 0;
        loop {
            self.value(out, depth).map_err(|fault| fault.within(|| Step::Index(index)))?;
            index += 1;
            self.skip_whitespace();
            match self.bump() {
                Some(b',') => out.push(','),
                Some(b']') => break,
                _ => return Err(self.broken().into()),
            }
        }
        out.push(']');
        Ok(())
    }

    /// Writes the canonical form of the object at the cursor. With `transport` (the top level),
    /// `stream` and `stream_options` are left out and their values' spans noted there instead.
    fn object(
        &mut self,
        out: &mut String,
        depth: usize,
        mut transport: Option<&mut Transport>,
    ) -> Result<(), Fault> {
        self.guard(depth)?;
        out.push('{');
        let first = out.len();
        // Where each member starts in `out`: eight bytes a member, whatever its size.
        let mut starts = Vec::new();
        let (end, any) = self.members(|walker, raw_key, key| {
            let spans = match (transport.as_deref_mut(), key) {
                (Some(transport), "stream") if transport.stream_owned => Some(&mut transport.stream),
                (Some(transport), "stream_options") if transport.usage => Some(&mut transport.stream_options),
                _ => None,
            };
            if let Some(spans) = spans {
                if !spans.is_empty() {
                    return Err(Fault::duplicate(key));
                }
                // Walked like any value (into a scratch text: it is not in the key), so that a
                // duplicate inside it is refused too; these values are a few bytes.
                walker.skip_whitespace();
                let start = walker.pos;
                walker
                    .value(&mut String::new(), depth)
                    .map_err(|fault| fault.within(|| Step::Key(key.to_owned())))?;
                spans.push(start..walker.pos);
                return Ok(());
            }
            if !starts.is_empty() {
                out.push(',');
            }
            starts.push(out.len());
            write_string(out, raw_key, key);
            out.push(':');
            walker.skip_whitespace();
            let start = walker.pos;
            walker.value(out, depth).map_err(|fault| fault.within(|| Step::Key(key.to_owned())))?;
            if let (Some(transport), "model") = (transport.as_deref_mut(), key) {
                transport.model = Some(start..walker.pos);
            }
            Ok(())
        })?;
        if let Some(transport) = transport {
            transport.members = any;
            transport.end = end;
        }
        sort_members(out, first, &starts)?;
        out.push('}');
        Ok(())
    }

    /// Steps through the object at the cursor, calling `each` with every member's raw and unescaped
    /// key and the cursor at its value, which `each` must step over. Where the last value ends
    /// (just after `{` if there is none), and whether there was a member.
    fn members<E: From<serde_json::Error>>(
        &mut self,
        mut each: impl FnMut(&mut Self, &'a str, &str) -> Result<(), E>,
    ) -> Result<(usize, bool), E> {
        self.pos += 1;
        let mut end = self.pos;
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok((end, false));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.broken().into());
            }
            let raw_key = self.string()?;
            self.skip_whitespace();
            if self.bump() != Some(b':') {
                return Err(self.broken().into());
            }
            self.skip_whitespace();
            each(self, raw_key, &unescape(raw_key)?)?;
            end = self.pos;
            self.skip_whitespace();
            match self.bump() {
                Some(b',') => {}
                Some(b'}') => return Ok((end, true)),
                _ => return Err(self.broken().into()),
            }
        }
    }

    /// Steps over the string at the cursor (at its opening quote): its raw text, quotes included.
    fn string(&mut self) -> Result<&'a str, serde_json::Error> {
        let start = self.pos;
        self.pos += 1;
        loop {
            let rest = self.text.as_bytes().get(self.pos..).unwrap_or_default();
            let at = rest.iter().position(|&b| b == b'"' || b == b'\\').ok_or_else(|| self.broken())?;
            self.pos += at + 1;
            if rest[at] == b'"' {
                return self.slice(start..self.pos);
            }
            // Whatever follows a backslash is part of the escape, a quote included.
            self.pos += 1;
        }
    }

    /// Steps over the value at the cursor without writing it: its span.
    fn skip_value(&mut self) -> Result<Range<usize>, serde_json::Error> {
        self.skip_whitespace();
        let start = self.pos;
        match self.peek() {
            Some(b'"') => {
                self.string()?;
            }
            Some(b'{' | b'[') => {
                // A count, not a recursion: any depth is safe here.
                let mut open = 0usize;
                loop {
                    match self.peek() {
                        Some(b'"') => {
                            self.string()?;
                            continue;
                        }
                        Some(b'{' | b'[') => open += 1,
                        Some(b'}' | b']') => open -= 1,
                        Some(_) => {}
                        None => return Err(self.broken()),
                    }
                    self.pos += 1;
                    if open == 0 {
                        break;
                    }
                }
            }
            _ => {
                while let Some(byte) = self.peek() {
                    if matches!(byte, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.pos += 1;
                }
            }
        }
        Ok(start..self.pos)
    }
}

/// The text of a raw JSON string (quotes included); serde_json unescapes it when it must.
fn unescape(raw: &str) -> Result<Cow<'_, str>, serde_json::Error> {
    match raw.get(1..raw.len().saturating_sub(1)) {
        Some(inner) if !inner.contains('\\') => Ok(Cow::Borrowed(inner)),
        _ => serde_json::from_str(raw).map(Cow::Owned),
    }
}

/// Writes `text` as a canonical JSON string: only `"`, `\` and control characters escaped, as
/// serde_json escapes them. `raw` is the same string as the client wrote it, copied when it is
/// already canonical (no escape in it: JSON allows no raw `"`, `\` or control character).
fn write_string(out: &mut String, raw: &str, text: &str) {
    if !raw.contains('\\') {
        out.push_str(raw);
        return;
    }
    out.push('"');
    let mut plain = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[plain..at]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        plain = at + 1;
    }
    out.push_str(&text[plain..]);
    out.push('"');
}

/// The unescaped bytes of the canonical key that starts `member` (at its opening quote). Every
/// canonical escape stands for one ASCII byte.
fn key_bytes(member: &str) -> impl Iterator<Item = u8> + '_ {
    let mut bytes = member.bytes().skip(1);
    std::iter::from_fn(move || match bytes.next()? {
        b'"' => None,
        b'\\' => Some(match bytes.next()? {
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'u' => (&mut bytes).take(4).fold(0u8, |code, digit| {
                // `\u00XX`: the two leading zeros shift out of the byte.
                code << 4 | (digit as char).to_digit(16).unwrap_or(0) as u8
            }),
            other => other,
        }),
        byte => Some(byte),
    })
}

fn compare_keys(a: &str, b: &str) -> Ordering {
    key_bytes(a).cmp(key_bytes(b))
}

/// Puts the members of an object, written in arrival order in `out` from `first` (each at one of
/// `starts`, separated by commas), in key order; a key found twice is a [`Fault::Duplicate`]. The
/// duplicates are found by the comparisons the order needs anyway: two equal keys are never in
/// strict order, and are neighbours once sorted.
fn sort_members(out: &mut String, first: usize, starts: &[usize]) -> Result<(), Fault> {
    let in_order = starts.windows(2).all(|pair| compare_keys(&out[pair[0]..], &out[pair[1]..]).is_lt());
    if in_order {
        return Ok(());
    }
    let ends = starts.iter().skip(1).map(|&start| start - 1).chain([out.len()]);
    let mut members: Vec<Range<usize>> = starts.iter().copied().zip(ends).map(|(s, e)| s..e).collect();
    members.sort_by(|a, b| compare_keys(&out[a.clone()], &out[b.clone()]));
    let twice =
        members.windows(2).find(|pair| compare_keys(&out[pair[0].clone()], &out[pair[1].clone()]).is_eq());
    if let Some(pair) = twice {
        let key: Vec<u8> = key_bytes(&out[pair[0].clone()]).collect();
        return Err(Fault::duplicate(&String::from_utf8_lossy(&key)));
    }
    let mut sorted = String::with_capacity(out.len() - first);
    for member in &members {
        if !sorted.is_empty() {
            sorted.push(',');
        }
        sorted.push_str(&out[member.clone()]);
    }
    out.truncate(first);
    out.push_str(&sorted);
    Ok(())
}

/// Writes the JSON number `text` in its canonical form. The value is `d × 10^e` with `d` its
/// significant digits (no leading or trailing zero) and `e` an exact exponent; they alone decide
/// the text: an integer in full when that is no longer than `de` form (so at most two zeros
/// appended), a fraction with its point when that is no longer than `de-n`, else `de` / `de-n`.
fn write_number(out: &mut String, text: &str) {
    // The common case, an integer without three trailing zeros, is its own canonical form.
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    if unsigned.bytes().all(|b| b.is_ascii_digit()) && !text.ends_with("000") && text != "-0" {
        out.push_str(text);
        return;
    }
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = text.split_once(['e', 'E']).unwrap_or((text, ""));
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = int.len() + frac.len();
    let digits = || int.bytes().chain(frac.bytes());
    let Some(first) = digits().position(|d| d != b'0') else {
        // Every zero is the same number, `-0` included.
        out.push('0');
        return;
    };
    let trailing = digits().rev().position(|d| d != b'0').unwrap_or(0);
    let last = all - trailing;
    let significant = (last - first) as i128;
    let push = |out: &mut String, span: Range<usize>| {
        if span.start < int.len() {
            out.push_str(&int[span.start..span.end.min(int.len())]);
        }
        if span.end > int.len() {
            out.push_str(&frac[span.start.max(int.len()) - int.len()..span.end - int.len()]);
        }
    };

    let (exponent_negative, magnitude) = match exponent.as_bytes().first() {
        Some(b'-') => (true, &exponent[1..]),
        Some(b'+') => (false, &exponent[1..]),
        _ => (false, exponent),
    };
    let magnitude = magnitude.trim_start_matches('0');
    // What dropping the point and the trailing zeros does to the exponent: small, the body's size.
    let shift = trailing as i128 - frac.len() as i128;
    let parsed = if magnitude.is_empty() { Some(0) } else { magnitude.parse::<i128>().ok() };
    let exact = parsed.and_then(|m| if exponent_negative { -m } else { m }.checked_add(shift));

    if negative {
        out.push('-');
    }
    let Some(e) = exact else {
        // An exponent beyond i128: only the `de` form fits, its exponent added to in decimal.
        push(out, first..last);
        out.push('e');
        if exponent_negative {
            out.push('-');
        }
        out.push_str(&add_to_decimal(magnitude, if exponent_negative { -shift } else { shift }));
        return;
    };
    if (0..=2).contains(&e) {
        push(out, first..last);
        out.extend(std::iter::repeat_n('0', e as usize));
    } else if e < 0 && -e < significant {
        let point = last - (-e) as usize;
        push(out, first..point);
        out.push('.');
        push(out, point..last);
    } else if e < 0 && -e <= significant + i128::from((-e).ilog10() + 1) {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-e - significant) as usize));
        push(out, first..last);
    } else {
        push(out, first..last);
        let _ = write!(out, "e{e}");
    }
}

/// `decimal + delta`, where `decimal` is the digits of a number far larger than `|delta|`.
fn add_to_decimal(decimal: &str, delta: i128) -> String {
    let mut digits: Vec<u8> = decimal.bytes().map(|d| d - b'0').collect();
    let mut carry = delta;
    for digit in digits.iter_mut().rev() {
        if carry == 0 {
            break;
        }
        let sum = i128::from(*digit) + carry;
        *digit = sum.rem_euclid(10) as u8;
        carry = sum.div_euclid(10);
    }
    let mut text = if carry > 0 { carry.to_string() } else { String::new() };
    let zeros = if text.is_empty() { digits.iter().take_while(|&&d| d == 0).count() } else { 0 };
    text.extend(digits[zeros..].iter().map(|&d| char::from(b'0' + d)));
    text
}

/// The upstream body of a streamed endpoint: `text` with its `stream` values made `true`, its
/// `stream_options` values made `options` (if given), and the missing ones appended after the
/// last member.
fn upstream_body(text: &str, transport: &Transport, options: Option<&str>) -> Vec<u8> {
    let mut edits: Vec<(Range<usize>, &str)> = Vec::new();
    edits.extend(transport.stream.iter().map(|span| (span.clone(), "true")));
    let mut appended = String::new();
    if transport.stream.is_empty() {
        appended.push_str(r#","stream":true"#);
    }
    if let Some(options) = options {
        edits.extend(transport.stream_options.iter().map(|span| (span.clone(), options)));
        if transport.stream_options.is_empty() {
            appended.push_str(r#","stream_options":"#);
            appended.push_str(options);
        }
    }
    let appended = if transport.members { &appended[..] } else { appended.get(1..).unwrap_or_default() };
    if !appended.is_empty() {
        edits.push((transport.end..transport.end, appended));
    }
    edits.sort_by_key(|(span, _)| span.start);
    splice(text, &edits).into_bytes()
}

/// `text` with each span (in order, apart) replaced by its text.
fn splice(text: &str, edits: &[(Range<usize>, &str)]) -> String {
    let mut out = String::with_capacity(text.len() + edits.iter().map(|(_, new)| new.len()).sum::<usize>());
    let mut copied = 0;
    for (span, new) in edits {
        out.push_str(&text[copied..span.start]);
        out.push_str(new);
        copied = span.end;
    }
    out.push_str(&text[copied..]);
    out
}

/// The client's `include_usage`, and the `stream_options` to send upstream: the client's (`raw`,
/// its last `stream_options` value) with every `include_usage` made `true`, or one appended.
fn stream_options(raw: Option<&str>) -> Result<(bool, Cow<'_, str>), BodyError> {
    let Some(raw) = raw.filter(|&raw| raw != "null") else {
        return Ok((false, Cow::Borrowed(USAGE_ONLY)));
    };
    if !raw.starts_with('{') {
        return Err(BodyError::StreamOptionsNotObject);
    }
    let mut usage = Vec::new();
    let mut walker = Walker { text: raw, pos: 0 };
    let (end, any) = walker
        .members(|walker, _, key| {
            let span = walker.skip_value()?;
            if key == "include_usage" {
                usage.push(span);
            }
            Ok(())
        })
        .map_err(|error: serde_json::Error| BodyError::NotJson(error.to_string()))?;
    let include_usage = match usage.last().map(|span| &raw[span.clone()]) {
        None | Some("null" | "false") => false,
        Some("true") => true,
        Some(_) => return Err(BodyError::IncludeUsageNotBoolean),
    };
    let edits: Vec<(Range<usize>, &str)> = if usage.is_empty() {
        let member = if any { r#","include_usage":true"# } else { r#""include_usage":true"# };
        vec![(end..end, member)]
    } else {
        usage.into_iter().map(|span| (span, "true")).collect()
    };
    Ok((include_usage, Cow::Owned(splice(raw, &edits))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn canon(text: &str) -> String {
        canonical_json(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn upstream(body: &Body) -> &str {
        std::str::from_utf8(&body.upstream).unwrap()
    }

    fn parsed(text: &str) -> Body {
        parse(text.as_bytes(), Owned::StreamAndUsage).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn equal_numbers_are_written_alike() {
        for one in ["1", "1.0", "1e0", "1E0", "1e+0", "1e-0", "10e-1", "0.10e1", "100e-2", "0.001e3", "1.000"]
        {
            assert_eq!(canon(one), "1", "{one}");
        }
        for zero in ["0", "-0", "0.0", "-0.0e5", "0e-7", "0E+99999999999999999999999999999999999999999"] {
            assert_eq!(canon(zero), "0", "{zero}");
        }
        let cases = [
            ("-2.0", "-2"),
            ("10", "10"),
            ("-100", "-100"),
            ("-10000", "-1e4"),
            ("7", "7"),
            ("100", "100"),
            ("1e2", "100"),
            ("1000", "1e3"),
            ("1E+003", "1e3"),
            ("0.25", "0.25"),
            ("25e-2", "0.25"),
            ("1.5", "1.5"),
            ("0.05", "0.05"),
            ("0.001", "1e-3"),
            ("-12.50e-1", "-1.25"),
            ("1e400", "1e400"),
            ("123.456e-400", "123456e-403"),
            ("18446744073709551615", "18446744073709551615"),
            ("-9223372036854775809", "-9223372036854775809"),
        ];
        for (number, canonical) in cases {
            assert_eq!(canon(number), canonical, "{number}");
        }
    }

    #[test]
    fn big_numbers_keep_every_digit() {
        let a = canon(r#"{"seed":123456789012345678901234567890}"#);
        let b = canon(r#"{"seed":123456789012345678901234567891}"#);
        assert_eq!(a, r#"{"seed":123456789012345678901234567890}"#);
        assert_eq!(b, r#"{"seed":123456789012345678901234567891}"#);
        assert_ne!(canon("0.30000000000000000000000000001"), canon("0.3"));
        assert_ne!(canon("9007199254740993"), canon("9007199254740992"));
        assert_eq!(canon("123456789012345678901234567890e-29"), canon("1.23456789012345678901234567890"));
    }

    #[test]
    fn exponents_beyond_i128_are_exact() {
        let huge = "1".to_owned() + &"0".repeat(45);
        let huge_and_one = "1".to_owned() + &"0".repeat(44) + "1";
        let less = "9".repeat(45);
        let e = |mantissa: &str, exponent: &str| canon(&format!("{mantissa}e{exponent}"));
        assert_eq!(e("1", &huge), format!("1e{huge}"));
        assert_eq!(e("10", &less), format!("1e{huge}"));
        assert_eq!(e("0.1", &huge_and_one), format!("1e{huge}"));
        assert_eq!(e("100", &format!("-{huge}")), format!("1e-{}", "9".repeat(44) + "8"));
        assert_eq!(e("0.01", &format!("+{huge}")), format!("1e{}", "9".repeat(44) + "8"));
        assert_ne!(e("1", &huge), e("1", &less));
        assert_eq!(e("-1.0", &format!("000{huge}")), format!("-1e{huge}"));
    }

    /// Numbers of up to 15 significant digits are exact in f64: there the canonical texts must be
    /// equal exactly when the values are, and must be worth the same.
    #[test]
    fn canonical_numbers_agree_with_f64_where_it_is_exact() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        let mut seen: Vec<(f64, String)> = Vec::new();
        for _ in 0..3000 {
            let digits: String = (0..=next(6)).map(|_| char::from(b'0' + next(10) as u8)).collect();
            let digits = digits.trim_start_matches('0');
            let digits = if digits.is_empty() { "0" } else { digits };
            let point = next(digits.len() as u64 + 1) as usize;
            let mut text = if point == digits.len() && digits != "0" {
                // Trailing zeros: the short integers and the `de` form must meet.
                digits.to_owned() + &"0".repeat(next(5) as usize)
            } else if point == digits.len() {
                digits.to_owned()
            } else {
                let (int, frac) = digits.split_at(point);
                format!("{}.{frac}{}", if int.is_empty() { "0" } else { int }, "0".repeat(next(3) as usize))
            };
            if next(2) == 0 {
                text = format!("{text}e{}", next(13) as i64 - 6);
            }
            if next(4) == 0 {
                text.insert(0, '-');
            }
            let value: f64 = text.parse().unwrap();
            let canonical = canon(&text);
            assert_eq!(canonical.parse::<f64>().unwrap(), value, "{text} -> {canonical}");
            assert_eq!(canon(&canonical), canonical, "{text}: not idempotent");
            for (other, other_canonical) in &seen {
                assert_eq!(
                    *other == value,
                    *other_canonical == canonical,
                    "{text} against {other_canonical}"
                );
            }
            if seen.len() < 300 {
                seen.push((value, canonical));
            }
        }
    }

    #[test]
    fn keys_are_sorted_by_their_unescaped_text() {
        assert_eq!(canon(r#"{"b":1,"\u0061a":2,"a":3}"#), r#"{"a":3,"aa":2,"b":1}"#);
        // `"` (0x22) sorts between `!` and `#` though its escape begins with `\` (0x5c).
        assert_eq!(canon(r##"{"#":3,"\"":2,"!":1,"\n":0}"##), r##"{"\n":0,"!":1,"\"":2,"#":3}"##);
        assert_eq!(canon(r#"{"b":{"y":1,"x":2},"a":[3,{"d":4,"c":5}]}"#), {
            r#"{"a":[3,{"c":5,"d":4}],"b":{"x":2,"y":1}}"#
        });
        assert_eq!(canon(r#"{"é":1,"z":2}"#), r#"{"z":2,"é":1}"#);
        assert_eq!(canon("{}"), "{}");
        assert_eq!(canon(r#"{"a":{}}"#), r#"{"a":{}}"#);
    }

    /// The path a refused body names, or a panic if it was not refused for a duplicate.
    fn duplicate(text: &str, owned: Owned) -> String {
        match parse(text.as_bytes(), owned) {
            Err(BodyError::DuplicateMember(path)) => path,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn a_member_named_twice_is_refused_at_any_depth_with_its_path() {
        let cases = [
            (r#"{"a":1,"a":2}"#, "a"),
            (r#"{"model":"m","messages":[{"role":"user","content":"A"}],"messages":[]}"#, "messages"),
            // Unescaped alike, so one name whatever its escapes.
            (r#"{"a":1,"\u0061":2}"#, "a"),
            (r#"{"é":1,"z":2,"\u00e9":3}"#, r#"["é"]"#),
            (r#"{"messages":[{"role":"user","content":"x"},{"role":"a","content":"y","role":"b"}]}"#, {
                "messages[1].role"
            }),
            (r#"{"tools":[[{"f":{"x":1,"y":{"q":1,"q":1}}}]]}"#, "tools[0][0].f.y.q"),
            (r#"{"a b":{"\n":1,"\n":2}}"#, r#"["a b"]["\n"]"#),
            (r#"{"stream":true,"\u0073tream":false}"#, "stream"),
            (r#"{"stream_options":{},"n":1,"stream_options":null}"#, "stream_options"),
            (
                r#"{"stream_options":{"include_usage":true,"include_usage":null}}"#,
                "stream_options.include_usage",
            ),
            (r#"{"stream_options":{"x":{"y":1,"y":1}}}"#, "stream_options.x.y"),
        ];
        for (text, path) in cases {
            assert_eq!(duplicate(text, Owned::StreamAndUsage), path, "{text}");
        }
        // Whoever owns `stream` and `stream_options`, and at the top of an embedding.
        assert_eq!(
            duplicate(r#"{"stream_options":{},"stream_options":{}}"#, Owned::Stream),
            "stream_options"
        );
        assert_eq!(duplicate(r#"{"input":["a"],"input":["b"]}"#, Owned::Nothing), "input");
        let long = "k".repeat(1000);
        let path = duplicate(&format!(r#"{{"{long}":1,"{long}":2}}"#), Owned::Nothing);
        assert_eq!(path, "k".repeat(SHOWN_KEY_CHARS) + "…");
        let error = BodyError::DuplicateMember("messages[1].role".to_owned());
        assert_eq!(
            error.to_string(),
            "the body names the member `messages[1].role` twice: each name may appear once in an object"
        );
        assert!(canonical_json(br#"[{"a":1,"a":1}]"#).unwrap_err().to_string().contains("`[0].a` twice"));
        // Equal values or not, in order or not: a name twice is refused; distinct names are not.
        assert!(parse(br#"{"b":1,"a":1,"ab":1,"a\u0000":1}"#, Owned::Nothing).is_ok());
    }

    #[test]
    fn whitespace_and_escapes_do_not_matter() {
        let a = canon(
            " {\"messages\" : [ {\"role\":\"user\", \"content\":\"h\\u00e9\\/\\t\\u0001\\ud83d\\ude00\"} ],\n\t\"n\":1.0 } ",
        );
        let b = canon(r#"{"n":1,"messages":[{"content":"hé/\t\u0001😀","role":"user"}]}"#);
        assert_eq!(a, b);
        assert_eq!(a, r#"{"messages":[{"content":"hé/\t\u0001😀","role":"user"}],"n":1}"#);
        assert_eq!(canon(r#"["\"\\\b\f\n\r\u001F\u007f"]"#), "[\"\\\"\\\\\\b\\f\\n\\r\\u001f\u{7f}\"]");
        assert_eq!(canon(" [ true , false , null , [ ] ] "), "[true,false,null,[]]");
    }

    #[test]
    fn canonical_text_is_json_of_the_same_value() {
        let text = r#"{"z":[1.50,{"b":"x\"y","a":null}],"a":-0.0,"m":1E+2}"#;
        let canonical = canon(text);
        let again: Value = serde_json::from_str(&canonical).unwrap();
        assert_eq!(
            again,
            serde_json::from_str::<Value>(r#"{"a":0,"m":100,"z":[1.5,{"a":null,"b":"x\"y"}]}"#).unwrap()
        );
        assert_eq!(canon(&canonical), canonical);
    }

    #[test]
    fn not_json_is_refused() {
        for bad in
            ["", "{", "{\"a\":}", "[1,]", "{} {}", "01", "1.", "\"\\ud800\"", "\"\u{1}\"", "nul", "{\"a\" 1}"]
        {
            assert!(canonical_json(bad.as_bytes()).is_err(), "{bad:?}");
            assert!(
                matches!(parse(bad.as_bytes(), Owned::StreamAndUsage), Err(BodyError::NotJson(_))),
                "{bad:?}"
            );
        }
        assert!(canonical_json(b"\"\xff\"").is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let nested = |depth: usize| "[".repeat(depth) + &"]".repeat(depth);
        assert_eq!(canon(&nested(127)), nested(127));
        assert!(canonical_json(nested(128).as_bytes()).unwrap_err().to_string().contains("recursion limit"));
        assert!(canonical_json(nested(1_000_000).as_bytes()).is_err());
        let deep_object = r#"{"a":"#.repeat(100_000) + "1" + &"}".repeat(100_000);
        let body = format!(r#"{{"stream":true,"x":{deep_object}}}"#);
        assert!(
            matches!(parse(body.as_bytes(), Owned::StreamAndUsage), Err(BodyError::NotJson(m)) if m.contains("recursion"))
        );
    }

    #[test]
    fn the_upstream_gets_the_body_as_sent() {
        let text = "{ \"seed\": 123456789012345678901234567890, \"model\":\"m\",\n \"temperature\": 1.0e0, \
                    \"messages\": [{\"role\":\"user\",\"content\":\"\\u00e9\"}], \"stream\": false }";
        let body = parsed(text);
        let expected = text.replace("\"stream\": false", "\"stream\": true");
        let expected = expected.replace(" }", ",\"stream_options\":{\"include_usage\":true} }");
        assert_eq!(upstream(&body), expected);
        assert!(upstream(&body).contains("\"seed\": 123456789012345678901234567890,"));
        assert!(upstream(&body).contains("\"temperature\": 1.0e0"));
        assert!(!body.stream);
        assert!(!body.include_usage);
        assert_eq!(
            body.canonical,
            r#"{"messages":[{"content":"é","role":"user"}],"model":"m","seed":123456789012345678901234567890,"temperature":1}"#
        );
        let other = parsed(&text.replace("890,", "891,"));
        assert_ne!(body.canonical, other.canonical);
        assert!(upstream(&other).contains("123456789012345678901234567891"));
    }

    #[test]
    fn stream_fields_are_the_gateways() {
        let body = parsed(r#"{"model":"m","messages":[]}"#);
        assert_eq!(
            upstream(&body),
            r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#
        );
        let empty = parsed("{ }");
        assert_eq!(upstream(&empty), r#"{"stream":true,"stream_options":{"include_usage":true} }"#);
        assert_eq!(empty.canonical, "{}");

        let body = parsed(r#"{"stream_options":{"x":[1],"include_usage":false},"stream":true,"n":2}"#);
        assert_eq!(
            upstream(&body),
            r#"{"stream_options":{"x":[1],"include_usage":true},"stream":true,"n":2}"#
        );
        assert!(body.stream && !body.include_usage);
        assert_eq!(body.canonical, r#"{"n":2}"#);

        let body = parsed(r#"{"stream":true,"stream_options":{ "x" : 1.50 } ,"n":2}"#);
        assert_eq!(
            upstream(&body),
            r#"{"stream":true,"stream_options":{ "x" : 1.50,"include_usage":true } ,"n":2}"#
        );
        let body = parsed(r#"{"stream":null,"stream_options":{},"n":2}"#);
        assert_eq!(upstream(&body), r#"{"stream":true,"stream_options":{"include_usage":true},"n":2}"#);
        assert!(!body.stream);
        let body = parsed(r#"{"stream_options":null,"stream":true}"#);
        assert_eq!(upstream(&body), r#"{"stream_options":{"include_usage":true},"stream":true}"#);
        let body = parsed(r#"{"stream":true,"stream_options":{"include_usage":true}}"#);
        assert!(body.stream && body.include_usage);
        assert_eq!(upstream(&body), r#"{"stream":true,"stream_options":{"include_usage":true}}"#);
    }

    #[test]
    fn streaming_or_not_the_key_is_the_same() {
        let a =
            parsed(r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#);
        let b = parsed(r#"{"messages":[],"model":"m"}"#);
        assert_eq!(a.canonical, b.canonical);
        // Only the top level's transport fields are the gateway's.
        let nested = parsed(r#"{"tools":[{"stream":true}],"metadata":{"stream_options":1}}"#);
        assert_eq!(nested.canonical, r#"{"metadata":{"stream_options":1},"tools":[{"stream":true}]}"#);
    }

    #[test]
    fn embeddings_go_upstream_untouched() {
        let text =
            " {\"input\": [\"a\", 1e400], \"model\":\"e\", \"stream\": \"odd\", \"stream_options\": 3}\n";
        let body = parse(text.as_bytes(), Owned::Nothing).unwrap();
        assert_eq!(&body.upstream[..], text.as_bytes());
        // Sent as they are, `stream` and `stream_options` may change the answer: they are in the key.
        assert_eq!(body.canonical, r#"{"input":["a",1e400],"model":"e","stream":"odd","stream_options":3}"#);
        assert!(!body.stream && !body.include_usage);
        assert_eq!(body.model.as_deref(), Some("e"));
    }

    #[test]
    fn the_top_level_model_is_read_as_a_string_or_not_at_all() {
        let model = |text: &str| parsed(text).model;
        assert_eq!(model(r#"{"model": "gpt-4o", "messages": []}"#).as_deref(), Some("gpt-4o"));
        assert_eq!(model(r#"{"model":"a\"b\u0063"}"#).as_deref(), Some("a\"bc"));
        assert_eq!(model(r#"{"model": 4}"#), None);
        assert_eq!(model(r#"{"messages": [{"model": "nested"}]}"#), None);
        assert_eq!(model(r#"{"stream": true}"#), None);
    }

    #[test]
    fn refusals() {
        let refused = |text: &str| parse(text.as_bytes(), Owned::StreamAndUsage).unwrap_err();
        assert_eq!(refused("[]"), BodyError::NotAnObject);
        assert_eq!(refused(" \"text\" "), BodyError::NotAnObject);
        assert_eq!(refused(r#"{"stream":"yes"}"#), BodyError::StreamNotBoolean);
        assert_eq!(refused(r#"{"stream":1}"#), BodyError::StreamNotBoolean);
        assert_eq!(refused(r#"{"stream_options":true}"#), BodyError::StreamOptionsNotObject);
        assert_eq!(refused(r#"{"stream_options":[]}"#), BodyError::StreamOptionsNotObject);
        assert_eq!(
            refused(r#"{"stream_options":{"include_usage":"yes"}}"#),
            BodyError::IncludeUsageNotBoolean
        );
        assert_eq!(refused(r#"{"stream":"yes","stream":true}"#), BodyError::DuplicateMember("stream".into()));
        let BodyError::NotJson(message) = refused("{\"a\":}") else { panic!("not NotJson") };
        assert!(message.contains("line 1 column 6"), "{message}");
        assert_eq!(BodyError::StreamNotBoolean.to_string(), "`stream` must be a boolean");
    }

    #[test]
    fn large_bodies_stay_linear() {
        let numbers = (0..200_000).map(|i| (i % 10).to_string()).collect::<Vec<_>>().join(",");
        let text = format!(r#"{{"input":[{numbers}],"model":"e"}}"#);
        let body = parse(text.as_bytes(), Owned::Nothing).unwrap();
        assert_eq!(body.canonical.len(), text.len());
        let members = (0..50_000).rev().map(|i| format!(r#""k{i:05}":{i}"#)).collect::<Vec<_>>().join(",");
        let canonical = canon(&format!("{{{members}}}"));
        assert!(canonical.starts_with(r#"{"k00000":0,"k00001":1,"#));
    }
}
