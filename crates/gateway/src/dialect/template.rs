//! The bytes around the one string that changes between the events of a long answer: most of
//! its events differ from the one before only there (a token's text), so a merge takes the
//! string out by comparing bytes instead of parsing each event (issue 21's merge cost).

use std::borrow::Cow;

use serde_json::value::RawValue;

/// An event's bytes before and after one of its JSON strings.
#[derive(Debug)]
pub(crate) struct Template {
    prefix: Box<[u8]>,
    suffix: Box<[u8]>,
}

impl Template {
    /// The template of `event` around `value`, a JSON string read from `event` itself (a
    /// `RawValue` borrowed from it); `None` if `value` does not lie within `event`.
    pub(crate) fn around(event: &[u8], value: &RawValue) -> Option<Template> {
        let text = value.get().as_bytes();
        let start = (text.as_ptr() as usize).checked_sub(event.as_ptr() as usize)?;
        let end = start.checked_add(text.len())?;
        if end > event.len() || !text.starts_with(b"\"") {
            return None;
        }
        Some(Template { prefix: event[..start].into(), suffix: event[end..].into() })
    }

    /// The string `event` holds where the template's event held its own, if every other byte
    /// of the two is the same and that place holds exactly one JSON string.
    pub(crate) fn string<'a>(&self, event: &'a [u8]) -> Option<Cow<'a, str>> {
        let middle = event.strip_prefix(&*self.prefix)?.strip_suffix(&*self.suffix)?;
        // One string and nothing else: anything more (`"a","b":"c"`) is not JSON to serde_json.
        match serde_json::from_slice::<&str>(middle) {
            Ok(text) => Some(Cow::Borrowed(text)),
            Err(_) => serde_json::from_slice::<String>(middle).ok().map(Cow::Owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_string_may_change() {
        let first = br#"{"a":1,"text":"one","z":[]}"#;
        #[derive(serde::Deserialize)]
        struct Text<'a> {
            #[serde(borrow)]
            text: &'a RawValue,
        }
        let text: Text<'_> = serde_json::from_slice(first).unwrap();
        let template = Template::around(first, text.text).unwrap();
        assert_eq!(template.string(first).as_deref(), Some("one"));
        assert_eq!(template.string(br#"{"a":1,"text":"two \u00e9\n","z":[]}"#).as_deref(), Some("two é\n"));
        assert_eq!(template.string(br#"{"a":1,"text":"","z":[]}"#).as_deref(), Some(""));
        for other in [
            &br#"{"a":2,"text":"two","z":[]}"#[..],
            br#"{"a":1,"text":"two","z":[1]}"#,
            br#"{"a":1,"text":"a","text":"b","z":[]}"#,
            br#"{"a":1,"text":5,"z":[]}"#,
            br#"{"a":1,"text":null,"z":[]}"#,
            br#"{"a":1,"text":"unterminated,"z":[]}"#,
        ] {
            assert_eq!(template.string(other), None, "{}", String::from_utf8_lossy(other));
        }
        // A value that is not the event's own is refused.
        let elsewhere: Text<'_> = serde_json::from_slice(br#"{"text":"x"}"#).unwrap();
        assert!(Template::around(first, elsewhere.text).is_none());
    }
}
