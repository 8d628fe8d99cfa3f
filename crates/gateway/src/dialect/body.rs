//! A coalesced endpoint's request body, checked once: its lossless canonical text for the flight key,
//! and the bytes sent upstream, every member as the client sent it but `stream` and `stream_options`.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use streamflight_core::json::{KeyError, Members, canonical_object};

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

impl From<KeyError> for BodyError {
    fn from(error: KeyError) -> BodyError {
        match error {
            KeyError::NotJson(message) => BodyError::NotJson(message),
            KeyError::NotAnObject => BodyError::NotAnObject,
            KeyError::DuplicateMember(path) => BodyError::DuplicateMember(path),
            other => BodyError::NotJson(other.to_string()),
        }
    }
}

/// The `stream_options` the gateway sends when the client sent none.
const USAGE_ONLY: &[u8] = br#"{"include_usage":true}"#;

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
/// The canonical text ([`streamflight_core::json`], the library's lossless canonical JSON)
/// leaves out the owned top-level members; it has every other. A body that names a member twice
/// in any object is refused ([`BodyError::DuplicateMember`]): parsers differ on which one counts,
/// so the key could not say what the upstream reads.
pub fn parse(bytes: &[u8], owned: Owned) -> Result<Body, BodyError> {
    // Sent as it is with `Owned::Nothing`, so every field is part of the answer: all of them are
    // in the key.
    let mut transport = Transport {
        stream_owned: owned != Owned::Nothing,
        usage: owned == Owned::StreamAndUsage,
        ..Transport::default()
    };
    let canonical = canonical_object(bytes, &mut transport)?.into_string();
    // A name with escapes is read as JSON; a member that is no string names no model.
    let model = transport.model.take().and_then(|span| serde_json::from_slice::<String>(&bytes[span]).ok());
    let model = model.map(String::into_boxed_str);
    if owned == Owned::Nothing {
        let upstream = Bytes::copy_from_slice(bytes);
        return Ok(Body { stream: false, include_usage: false, canonical, upstream, model });
    }
    // Duplicates are refused, so there is one at most.
    let stream = match transport.stream.clone().map(|span| &bytes[span]) {
        None | Some(b"null" | b"false") => false,
        Some(b"true") => true,
        Some(_) => return Err(BodyError::StreamNotBoolean),
    };
    if !transport.usage {
        let upstream = Bytes::from(upstream_body(bytes, &transport, None));
        return Ok(Body { stream, include_usage: false, canonical, upstream, model });
    }
    let (include_usage, options) = stream_options(bytes, &transport)?;
    let upstream = Bytes::from(upstream_body(bytes, &transport, Some(&options)));
    Ok(Body { stream, include_usage, canonical, upstream, model })
}

/// Where the top-level `stream`, `stream_options` and `model` members' values are, and where
/// members end: what the canonical walk tells of the body's top level.
#[derive(Default)]
struct Transport {
    /// The span of the `stream` value (when it is the gateway's).
    stream: Option<Range<usize>>,
    /// The span of the `stream_options` value (when it is the gateway's).
    stream_options: Option<Range<usize>>,
    /// Whether `stream` is the gateway's (not for an endpoint that does not stream).
    stream_owned: bool,
    /// Whether `stream_options` is the gateway's too.
    usage: bool,
    /// The span of the `model` value, which stays in the key.
    model: Option<Range<usize>>,
    /// Where the last member's value ends; `None` for an object without members.
    end: Option<usize>,
    /// The members of the `stream_options` object, told in the same walk (when it is the
    /// gateway's).
    options: Usage,
}

impl Members for Transport {
    fn omit(&mut self, name: &str) -> bool {
        match name {
            "stream" => self.stream_owned,
            "stream_options" => self.usage,
            _ => false,
        }
    }

    fn member(&mut self, name: &str, value: Range<usize>) {
        self.end = Some(value.end);
        match name {
            "stream" if self.stream_owned => self.stream = Some(value),
            "stream_options" if self.usage => self.stream_options = Some(value),
            "model" => self.model = Some(value),
            _ => {}
        }
    }

    fn members_of(&mut self, name: &str) -> Option<&mut dyn Members> {
        (self.usage && name == "stream_options").then_some(&mut self.options as &mut dyn Members)
    }
}

/// Where an object without members is to be written in: just after its `{` (`text` is a checked
/// object, so its first `{` opens it).
fn inside(text: &[u8]) -> usize {
    text.iter().position(|&byte| byte == b'{').map_or(0, |open| open + 1)
}

/// The upstream body of a streamed endpoint: `text` with its `stream` value made `true`, its
/// `stream_options` value made `options` (if given), and the missing ones appended after the
/// last member.
fn upstream_body(text: &[u8], transport: &Transport, options: Option<&[u8]>) -> Vec<u8> {
    let mut edits: Vec<(Range<usize>, &[u8])> = Vec::new();
    edits.extend(transport.stream.clone().map(|span| (span, &b"true"[..])));
    let mut appended = Vec::new();
    if transport.stream.is_none() {
        appended.extend_from_slice(br#","stream":true"#);
    }
    if let Some(options) = options {
        edits.extend(transport.stream_options.clone().map(|span| (span, options)));
        if transport.stream_options.is_none() {
            appended.extend_from_slice(br#","stream_options":"#);
            appended.extend_from_slice(options);
        }
    }
    let appended =
        if transport.end.is_some() { &appended[..] } else { appended.get(1..).unwrap_or_default() };
    if !appended.is_empty() {
        let end = transport.end.unwrap_or_else(|| inside(text));
        edits.push((end..end, appended));
    }
    edits.sort_by_key(|(span, _)| span.start);
    splice(text, &edits)
}

/// `text` with each span (in order, apart) replaced by its text.
fn splice(text: &[u8], edits: &[(Range<usize>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + edits.iter().map(|(_, new)| new.len()).sum::<usize>());
    let mut copied = 0;
    for (span, new) in edits {
        out.extend_from_slice(&text[copied..span.start]);
        out.extend_from_slice(new);
        copied = span.end;
    }
    out.extend_from_slice(&text[copied..]);
    out
}

/// Where `include_usage` is in a `stream_options` object, and where its members end (ranges of
/// the whole body).
#[derive(Default)]
struct Usage {
    /// The span of the `include_usage` value.
    include_usage: Option<Range<usize>>,
    /// Where the last member's value ends; `None` for an object without members.
    end: Option<usize>,
}

impl Members for Usage {
    fn member(&mut self, name: &str, value: Range<usize>) {
        self.end = Some(value.end);
        if name == "include_usage" {
            self.include_usage = Some(value);
        }
    }
}

/// The client's `include_usage`, and the `stream_options` to send upstream: the client's (its
/// `stream_options` value in `body`) with its `include_usage` made `true`, or one appended.
fn stream_options<'a>(body: &'a [u8], transport: &Transport) -> Result<(bool, Cow<'a, [u8]>), BodyError> {
    let Some(span) = transport.stream_options.clone().filter(|span| &body[span.clone()] != b"null") else {
        return Ok((false, Cow::Borrowed(USAGE_ONLY)));
    };
    let raw = &body[span.clone()];
    if !raw.starts_with(b"{") {
        return Err(BodyError::StreamOptionsNotObject);
    }
    // The walk told `options` of the object's members, in ranges of the whole body.
    let options = &transport.options;
    let include_usage = match options.include_usage.clone().map(|at| &body[at]) {
        None | Some(b"null" | b"false") => false,
        Some(b"true") => true,
        Some(_) => return Err(BodyError::IncludeUsageNotBoolean),
    };
    let within = |at: usize| at - span.start;
    let edits: Vec<(Range<usize>, &[u8])> = match options.include_usage.clone() {
        Some(at) => vec![(within(at.start)..within(at.end), b"true")],
        None => {
            let end = options.end.map_or_else(|| inside(raw), within);
            let member: &[u8] =
                if options.end.is_some() { br#","include_usage":true"# } else { br#""include_usage":true"# };
            vec![(end..end, member)]
        }
    };
    Ok((include_usage, Cow::Owned(splice(raw, &edits))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(body: &Body) -> &str {
        std::str::from_utf8(&body.upstream).unwrap()
    }

    fn parsed(text: &str) -> Body {
        parse(text.as_bytes(), Owned::StreamAndUsage).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// The path a refused body names, or a panic if it was not refused for a duplicate.
    fn duplicate(text: &str, owned: Owned) -> String {
        match parse(text.as_bytes(), owned) {
            Err(BodyError::DuplicateMember(path)) => path,
            other => panic!("{text}: {other:?}"),
        }
    }

    /// The canonical JSON's own tests (`streamflight_core::json`) hold every other case: these are
    /// the gateway's own members, left out of the key, and its message.
    #[test]
    fn a_member_named_twice_is_refused_at_any_depth_with_its_path() {
        let cases = [
            (r#"{"stream":true,"\u0073tream":false}"#, "stream"),
            (r#"{"stream_options":{},"n":1,"stream_options":null}"#, "stream_options"),
            (
                r#"{"stream_options":{"include_usage":true,"include_usage":null}}"#,
                "stream_options.include_usage",
            ),
            (r#"{"messages":[{"role":"a","content":"y","role":"b"}]}"#, "messages[0].role"),
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
        let error = BodyError::DuplicateMember("messages[1].role".to_owned());
        assert_eq!(
            error.to_string(),
            "the body names the member `messages[1].role` twice: each name may appear once in an object"
        );
        // Equal values or not, in order or not: a name twice is refused; distinct names are not.
        assert!(parse(br#"{"b":1,"a":1,"ab":1,"a\u0000":1}"#, Owned::Nothing).is_ok());
    }

    #[test]
    fn not_json_is_refused() {
        for bad in
            ["", "{", "{\"a\":}", "[1,]", "{} {}", "01", "1.", "\"\\ud800\"", "\"\u{1}\"", "nul", "{\"a\" 1}"]
        {
            assert!(
                matches!(parse(bad.as_bytes(), Owned::StreamAndUsage), Err(BodyError::NotJson(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(parse(b"\"\xff\"", Owned::Nothing), Err(BodyError::NotJson(_))));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let nested = |depth: usize| "[".repeat(depth) + &"]".repeat(depth);
        let array = |depth: usize| format!(r#"{{"a":{}}}"#, nested(depth));
        assert!(parse(array(126).as_bytes(), Owned::Nothing).is_ok());
        assert!(
            matches!(parse(array(127).as_bytes(), Owned::Nothing), Err(BodyError::NotJson(m)) if m.contains("recursion limit"))
        );
        assert!(parse(array(1_000_000).as_bytes(), Owned::Nothing).is_err());
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
        let body = parse(format!("{{{members}}}").as_bytes(), Owned::Nothing).unwrap();
        assert!(body.canonical.starts_with(r#"{"k00000":0,"k00001":1,"#));
    }
}
