//! The walk that writes canonical JSON: a cursor over text serde_json has checked, writing as it
//! goes, with the paths its duplicate-member errors name.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt::Write as _;
use std::ops::Range;
use std::string::String;
use std::vec;
use std::vec::Vec;

use serde::de;
use smallvec::SmallVec;

use super::Members;
use super::number::write_number;

/// Why the walker stopped.
#[derive(Debug)]
pub(super) enum Fault {
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
pub(super) enum Step {
    Key(String),
    Index(usize),
}

/// The longest member name a path shows in full: a message, not a copy of the body.
pub(super) const SHOWN_KEY_CHARS: usize = 64;

/// `steps` (innermost first) as a path: `messages[0].role`, `["a b"]`, a long name cut with `…`.
pub(super) fn render(steps: &[Step]) -> String {
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

/// Deeper than serde_json lets through (it stops at 128 open containers): a guard for the walker's
/// recursion should the check ever change.
const MAX_DEPTH: usize = 128;

/// A cursor over JSON that serde_json has checked: it writes canonical text as it goes and
/// allocates only for escaped strings and for the members of an object out of key order.
pub(super) struct Walker<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Walker<'a> {
    /// A cursor at the start of `text`, which serde_json has checked.
    pub(super) fn new(text: &'a str) -> Self {
        Walker { text, pos: 0 }
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    pub(super) fn skip_whitespace(&mut self) {
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
    pub(super) fn value(&mut self, out: &mut String, depth: usize) -> Result<(), Fault> {
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

    /// Writes the canonical form of the object at the cursor. With `told` (the top level, or an
    /// object a caller asked to hear of), its members are told of each member and may leave some
    /// out of the text.
    pub(super) fn object(
        &mut self,
        out: &mut String,
        depth: usize,
        mut told: Option<&mut dyn Members>,
    ) -> Result<(), Fault> {
        self.guard(depth)?;
        out.push('{');
        let first = out.len();
        // Where each member starts in `out`: eight bytes a member, whatever its size.
        let mut starts = Vec::new();
        // The raw names of the members left out: the sort below finds a kept member named twice,
        // these are compared here (a few at most: inline, no allocation).
        let mut omitted: SmallVec<[&'a str; 4]> = SmallVec::new();
        self.members(|walker, raw_key, key| {
            let Some(told) = told.as_deref_mut() else {
                if !starts.is_empty() {
                    out.push(',');
                }
                starts.push(out.len());
                write_string(out, raw_key, key);
                out.push(':');
                return walker.value(out, depth).map_err(|fault| fault.within(|| Step::Key(key.to_owned())));
            };
            let omit = told.omit(key);
            if omit {
                if omitted.iter().any(|raw| unescape(raw).is_ok_and(|name| name == key)) {
                    return Err(Fault::duplicate(key));
                }
                omitted.push(raw_key);
            } else {
                if !starts.is_empty() {
                    out.push(',');
                }
                starts.push(out.len());
                write_string(out, raw_key, key);
                out.push(':');
            }
            walker.skip_whitespace();
            let start = walker.pos;
            // A member left out is walked like any value (into a scratch text: it is not in the
            // key), so that a duplicate inside it is refused too; such values are a few bytes.
            let mut scratch = String::new();
            let target = if omit { &mut scratch } else { &mut *out };
            let walked = match told.members_of(key) {
                Some(inner) if walker.peek() == Some(b'{') => walker.object(target, depth + 1, Some(inner)),
                _ => walker.value(target, depth),
            };
            walked.map_err(|fault| fault.within(|| Step::Key(key.to_owned())))?;
            told.member(key, start..walker.pos);
            Ok(())
        })?;
        sort_members(out, first, &starts)?;
        out.push('}');
        Ok(())
    }

    /// Steps through the object at the cursor, calling `each` with every member's raw and unescaped
    /// key and the cursor at its value, which `each` must step over.
    fn members(
        &mut self,
        mut each: impl FnMut(&mut Self, &'a str, &str) -> Result<(), Fault>,
    ) -> Result<(), Fault> {
        self.pos += 1;
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
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
            self.skip_whitespace();
            match self.bump() {
                Some(b',') => {}
                Some(b'}') => return Ok(()),
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
    // Writing to a `String` cannot fail.
    let _ = super::escape_str(out, text);
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
