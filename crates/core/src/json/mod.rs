//! Lossless canonical JSON (feature `json`): one text per JSON value, for keys that must tell two
//! request bodies apart exactly when their values differ (rule G4: integers of any size compared exactly).
//!
//! Two bodies have the same canonical text exactly when they hold the same value: member order,
//! whitespace, string escapes and the spelling of numbers (`1`, `1.0`, `10e-1`) do not matter;
//! every digit does (`123456789012345678901234567890` is never rounded). An object that names a
//! member twice is refused, because parsers differ on which one counts.
//!
//! ```
//! use streamflight_core::json::canonical_json;
//!
//! let a = canonical_json(br#"{"model": "m", "seed": 123456789012345678901234567890, "t": 1.0}"#).unwrap();
//! let b = canonical_json(br#"{"t":10e-1,"seed":123456789012345678901234567890,"model":"m"}"#).unwrap();
//! assert_eq!(a, b);
//! assert_eq!(a.as_str(), r#"{"model":"m","seed":123456789012345678901234567890,"t":1}"#);
//! let c = canonical_json(br#"{"t":1,"seed":123456789012345678901234567891,"model":"m"}"#).unwrap();
//! assert_ne!(a, c);
//! ```
//!
//! It turns on serde_json's `arbitrary_precision` feature (to check numbers of any size), which
//! cargo then turns on for every crate of the build that uses serde_json.

mod escape;
mod number;
#[cfg(test)]
mod tests;
mod walker;

use std::fmt;
use std::ops::Range;
use std::string::String;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

pub use self::escape::escape_str;
use self::walker::{Fault, Walker};

/// The canonical text of a JSON value: compact JSON of the same value, object members sorted by
/// their unescaped names (bytewise), strings escaped one way, numbers written from their exact
/// decimal value. Equal exactly when the values are; use it as (part of) a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CanonicalJson(String);

impl CanonicalJson {
    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The canonical text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for CanonicalJson {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CanonicalJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a body has no canonical text.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The body is not one JSON value (or nests deeper than 128 arrays and objects): serde_json's
    /// message, which says where.
    NotJson(String),
    /// The body is JSON but not an object ([`canonical_object`] only).
    NotAnObject,
    /// An object names one member twice (at any depth): the path to it, as `messages[0].role`
    /// (a name longer than 64 characters cut with `…`). RFC 8259 leaves what that means to each
    /// parser (the first, the last, an error), so no key can stand for what every reader reads.
    DuplicateMember(String),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::NotJson(message) => write!(f, "not valid JSON: {message}"),
            KeyError::NotAnObject => f.write_str("not a JSON object"),
            KeyError::DuplicateMember(path) => write!(f, "the member `{path}` is named twice"),
        }
    }
}

impl std::error::Error for KeyError {}

impl From<Fault> for KeyError {
    fn from(fault: Fault) -> KeyError {
        match fault {
            Fault::Json(error) => KeyError::NotJson(error.to_string()),
            Fault::Duplicate(path) => KeyError::DuplicateMember(walker::render(&path)),
        }
    }
}

/// The canonical text of the JSON value `body` (any value: an object, an array, a number...).
///
/// # Errors
///
/// [`KeyError::NotJson`] if `body` is not one JSON value; [`KeyError::DuplicateMember`] if an
/// object in it names a member twice.
///
/// ```
/// use streamflight_core::json::{KeyError, canonical_json};
///
/// let text = canonical_json(b" [ {\"b\": \"\\u00e9\", \"a\": 1E+2}, -0.0, 0.001 ] ").unwrap();
/// assert_eq!(text.as_str(), r#"[{"a":100,"b":"é"},0,1e-3]"#);
/// assert!(matches!(canonical_json(b"{\"a\":1,\"a\":1}"), Err(KeyError::DuplicateMember(path)) if path == "a"));
/// assert!(matches!(canonical_json(b"not json"), Err(KeyError::NotJson(_))));
/// ```
pub fn canonical_json(body: &[u8]) -> Result<CanonicalJson, KeyError> {
    let text = check(body).map_err(Fault::Json)?;
    let mut out = String::with_capacity(text.len());
    Walker::new(text).value(&mut out, 0)?;
    Ok(CanonicalJson(out))
}

/// What [`canonical_object`] tells its caller of an object's top-level members, in the one walk
/// that writes the canonical text. Both methods default to nothing.
pub trait Members {
    /// Whether the top-level member `name` (unescaped) is left out of the canonical text: a field
    /// that cannot change the answer (a transport option the caller sets itself). It is checked
    /// all the same: a left-out member named twice is refused too.
    fn omit(&mut self, name: &str) -> bool {
        let _ = name;
        false
    }

    /// The top-level member `name` (unescaped) has its value at `value`, a range of the body's
    /// bytes (its text as sent), left out or not. Called in the body's order, once per member,
    /// after the members of its value (see [`members_of`](Members::members_of)).
    fn member(&mut self, name: &str, value: Range<usize>) {
        let _ = (name, value);
    }

    /// Who is to be told of the members of `name`'s value, if it is an object, in the same walk
    /// (their ranges are of the whole body too); `None` (the default): nobody.
    fn members_of(&mut self, name: &str) -> Option<&mut dyn Members> {
        let _ = name;
        None
    }
}

/// Nothing to be told, nothing left out: `canonical_object(body, &mut ())`.
impl Members for () {}

/// The canonical text of the JSON object `body`, without the top-level members `members` omits,
/// telling `members` where each top-level value is (and, through [`Members::members_of`], the
/// members of the objects it asks for): a key and the fields a caller needs from the body, in
/// one walk.
///
/// # Errors
///
/// As [`canonical_json`], and [`KeyError::NotAnObject`] if `body` is JSON but not an object.
///
/// ```
/// use std::ops::Range;
/// use streamflight_core::json::{Members, canonical_object};
///
/// /// Leaves `stream` out of the key and notes where `model` is.
/// #[derive(Default)]
/// struct Fields {
///     model: Option<Range<usize>>,
/// }
/// impl Members for Fields {
///     fn omit(&mut self, name: &str) -> bool {
///         name == "stream"
///     }
///     fn member(&mut self, name: &str, value: Range<usize>) {
///         if name == "model" {
///             self.model = Some(value);
///         }
///     }
/// }
///
/// let body = br#"{"stream": true, "model": "m", "n": 1.0}"#;
/// let mut fields = Fields::default();
/// let key = canonical_object(body, &mut fields).unwrap();
/// assert_eq!(key.as_str(), r#"{"model":"m","n":1}"#);
/// assert_eq!(&body[fields.model.unwrap()], br#""m""#);
/// ```
pub fn canonical_object(body: &[u8], members: &mut dyn Members) -> Result<CanonicalJson, KeyError> {
    let text = check(body).map_err(Fault::Json)?;
    let mut walker = Walker::new(text);
    walker.skip_whitespace();
    if walker.peek() != Some(b'{') {
        return Err(KeyError::NotAnObject);
    }
    let mut out = String::with_capacity(text.len());
    walker.object(&mut out, 1, Some(members))?;
    Ok(CanonicalJson(out))
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
