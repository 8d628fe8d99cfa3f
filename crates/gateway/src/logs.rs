//! The `--log-format json` lines: one JSON object a line, written straight into the line's
//! buffer (no map of values, no serializer over an `io::Write` adaptor), as cheap as a text line.
//!
//! A line is `{"timestamp":…,"level":…,"target":…,"message":…,<the event's fields>}`, and,
//! for an event inside spans, `"spans":[{"name":…,<the span's fields>},…]` from the
//! outermost. Strings are escaped as RFC 8259 says; numbers are written as numbers, a float that
//! is not finite as `null`; anything else (`%` and `?` fields) as the string it formats to.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as JSON lines (with [`JsonFields`] for the spans' fields).
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLines;

/// Formats a span's fields as the members of a JSON object, each with a comma before it: what
/// [`JsonLines`] puts after a span's name.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonFields;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\",\"target\":", meta.level())?;
        string(&mut writer, meta.target())?;
        let mut members = Members { out: &mut writer, result: Ok(()) };
        event.record(&mut members);
        members.result?;
        if let Some(scope) = ctx.event_scope() {
            let mut first = true;
            for span in scope.from_root() {
                writer.write_str(if first { ",\"spans\":[{\"name\":" } else { ",{\"name\":" })?;
                first = false;
                string(&mut writer, span.name())?;
                // Fields another formatter wrote (text, not members) are left out, not mangled.
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && (fields.is_empty() || fields.starts_with(','))
                {
                    writer.write_str(fields)?;
                }
                writer.write_char('}')?;
            }
            if !first {
                writer.write_char(']')?;
            }
        }
        writer.write_str("}\n")
    }
}

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut members = Members { out: &mut writer, result: Ok(()) };
        fields.record(&mut members);
        members.result
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        // Members each start with their comma: more of them are simply appended.
        let mut members = Members { out: &mut current.fields, result: Ok(()) };
        fields.record(&mut members);
        members.result
    }
}

/// Writes each field it visits as `,"name":value`; the first failure to write is kept.
struct Members<'a, W: fmt::Write> {
    out: &'a mut W,
    result: fmt::Result,
}

impl<W: fmt::Write> Members<'_, W> {
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            // A field's name is a Rust identifier (or `message`): nothing to escape.
            self.out.write_str(",\"")?;
            self.out.write_str(field.name())?;
            self.out.write_str("\":")?;
            value(self.out)
        })();
    }
}

impl<W: fmt::Write> Visit for Members<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |out| string(out, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |out| out.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |out| out.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |out| out.write_str(if value { "true" } else { "false" }));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.member(field, |out| {
            if value.is_finite() {
                out.write_str(ryu::Buffer::new().format_finite(value))
            } else {
                out.write_str("null")
            }
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// `value` as a JSON string, quotes included.
fn string(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(value)?;
    out.write_char('"')
}

/// Writes what it is given escaped for the inside of a JSON string (the core's escaping, the
/// canonical key's too).
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        streamflight_core::json::escape_str(self.0, text)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// What the lines logged by `log` look like, parsed.
    fn lines(log: impl FnOnce()) -> Vec<serde_json::Value> {
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&written);
        let make = move || Sink(Arc::clone(&sink));
        let layer =
            tracing_subscriber::fmt::layer().event_format(JsonLines).fmt_fields(JsonFields).with_writer(make);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), log);
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }

    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_kind_of_field_is_written_as_json_and_text_is_escaped() {
        let weird = "quote \" backslash \\ newline \n tab \t bell \u{7} é";
        let lines = lines(|| {
            tracing::info!(
                text = weird,
                count = 7u64,
                delta = -3i64,
                yes = true,
                ms = 1.5f64,
                nan = f64::NAN,
                shown = %"a\"b",
                debugged = ?Some(1),
                absent = Option::<u64>::None,
                "hello {}", "there\n"
            );
        });
        let line = &lines[0];
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], module_path!());
        assert_eq!(line["message"], "hello there\n");
        assert_eq!(line["text"], weird);
        assert_eq!(line["count"], 7);
        assert_eq!(line["delta"], -3);
        assert_eq!(line["yes"], true);
        assert_eq!(line["ms"].as_f64(), Some(1.5));
        assert!(line["nan"].is_null());
        assert_eq!(line["shown"], "a\"b");
        assert_eq!(line["debugged"], "Some(1)");
        assert!(line.get("absent").is_none(), "an empty Option is no field: {line}");
        assert!(line.get("spans").is_none());
        let stamp = line["timestamp"].as_str().unwrap();
        assert!(stamp.ends_with('Z') && stamp.contains('T'), "{stamp}");
    }

    #[test]
    fn an_event_in_spans_names_them_from_the_outermost_with_their_fields() {
        let lines = lines(|| {
            let outer = tracing::info_span!("http", request_id = %"abc");
            let _outer = outer.enter();
            let inner = tracing::info_span!("step", n = tracing::field::Empty);
            inner.record("n", 2u64);
            let _inner = inner.enter();
            tracing::warn!("inside");
            tracing::info!(parent: None, "outside");
        });
        assert_eq!(lines[0]["message"], "inside");
        assert_eq!(
            lines[0]["spans"],
            serde_json::json!([{"name": "http", "request_id": "abc"}, {"name": "step", "n": 2}])
        );
        assert!(lines[1].get("spans").is_none(), "{}", lines[1]);
    }
}
