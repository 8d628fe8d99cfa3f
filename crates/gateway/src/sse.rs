//! Server-sent events both ways: a bounded decoder for the upstream's stream, and the frames
//! the gateway writes to its clients.
//!
//! The decoder is the gateway's own rather than a crate's because it must bound one event
//! (G7): the SSE crates buffer an event of any size. It keeps only what SSE needs for
//! LLM streams: `data` lines joined by `\n`, and the `event` name (the Responses API and
//! Anthropic's name every event); `id`, `retry` and comments are read and dropped.

use bytes::{Buf, Bytes, BytesMut};

/// One event was larger than the bound.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge {
    /// The bound, in bytes.
    pub limit: usize,
}

/// Room for `data: ` in front of a value on a line that has not ended yet.
const FIELD_SLACK: usize = 16;

/// Splits a byte stream into events' data, holding at most `limit` bytes of one event.
#[derive(Debug)]
pub struct Decoder {
    /// Received bytes not yet split into lines.
    pending: BytesMut,
    /// The data of the event being read, its lines joined by `\n`.
    data: BytesMut,
    /// Whether the event being read has a `data` field (an empty one counts).
    has_data: bool,
    /// The `event` field of the event being read, if it had one.
    name: Option<Bytes>,
    /// Event names expected in this stream: one of them is borrowed, not copied.
    known: &'static [&'static str],
    /// A line ended with `\r`: a `\n` right after it belongs to the same line end.
    after_cr: bool,
    limit: usize,
}

impl Decoder {
    /// A decoder for events of at most `limit` bytes of data.
    pub fn new(limit: usize) -> Decoder {
        Decoder {
            pending: BytesMut::new(),
            data: BytesMut::new(),
            has_data: false,
            name: None,
            known: &[],
            after_cr: false,
            limit,
        }
    }

    /// The same, borrowing the names in `known` instead of copying them (a stream's events
    /// come from a small set of names: no allocation for each).
    pub fn with_names(limit: usize, known: &'static [&'static str]) -> Decoder {
        Decoder { known, ..Decoder::new(limit) }
    }

    /// Adds received bytes; then call [`Decoder::next_event`] until it returns `Ok(None)`.
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// The next complete event's name (its `event` field, if any) and data, if one is complete.
    /// An event without data is no event (as for browsers): its name is forgotten.
    pub fn next_event(&mut self) -> Result<Option<(Option<Bytes>, Bytes)>, TooLarge> {
        loop {
            if self.after_cr && self.pending.first() == Some(&b'\n') {
                self.pending.advance(1);
            }
            self.after_cr = false;
            let Some(end) = memchr::memchr2(b'\n', b'\r', &self.pending) else {
                // An incomplete line may still become part of the event: bound it too (the
                // slack is for the field name in front of its value).
                if self.pending.len() + self.data.len() > self.limit + FIELD_SLACK {
                    return Err(TooLarge { limit: self.limit });
                }
                return Ok(None);
            };
            self.after_cr = self.pending[end] == b'\r';
            let line = self.pending.split_to(end + 1);
            let line = &line[..end];
            if line.is_empty() {
                let name = self.name.take();
                if self.has_data {
                    self.has_data = false;
                    return Ok(Some((name, std::mem::take(&mut self.data).freeze())));
                }
                continue;
            }
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &b""[..]),
            };
            if field == b"event" {
                // A name is short; one over the bound is as refused as data over it.
                if value.len() > self.limit {
                    return Err(TooLarge { limit: self.limit });
                }
                self.name = Some(match self.known.iter().find(|known| known.as_bytes() == value) {
                    Some(known) => Bytes::from_static(known.as_bytes()),
                    None => Bytes::copy_from_slice(value),
                });
            } else if field == b"data" {
                if self.data.len() + value.len() + usize::from(self.has_data) > self.limit {
                    return Err(TooLarge { limit: self.limit });
                }
                // Lines are joined by `\n`; the room is reserved once, exactly, for the usual
                // event of one line.
                self.data.reserve(value.len() + usize::from(self.has_data));
                if self.has_data {
                    self.data.extend_from_slice(b"\n");
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
        }
    }
}

/// The frame of one event whose data is `data` (lines split into `data:` fields, as SSE needs).
pub fn frame(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 8);
    put_data(&mut out, data);
    out.freeze()
}

/// The `data:` lines of `data` and the blank line that ends the event.
fn put_data(out: &mut BytesMut, data: &[u8]) {
    for line in data.split(|&b| b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"\n");
}

/// An event frame with its `id:` (the event's index in the answer), so that a client that lost
/// its connection can resume after it (`Last-Event-ID`), and its `event:` name, if it has one.
pub fn frame_with_id(id: u64, name: Option<&[u8]>, data: &[u8]) -> Bytes {
    let id = id.to_string();
    let named = name.map_or(0, |name| name.len() + 8);
    let mut out = BytesMut::with_capacity(data.len() + id.len() + named + 12);
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\n");
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name);
        out.extend_from_slice(b"\n");
    }
    put_data(&mut out, data);
    out.freeze()
}

/// A comment frame: keeps a connection (and the proxies on its way) from timing out.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(chunks: &[&[u8]], limit: usize) -> Result<Vec<String>, TooLarge> {
        let mut decoder = Decoder::new(limit);
        let mut events = Vec::new();
        for chunk in chunks {
            decoder.push(chunk);
            while let Some((name, data)) = decoder.next_event()? {
                let data = String::from_utf8(data.to_vec()).unwrap();
                events.push(match name {
                    Some(name) => format!("{}={data}", String::from_utf8(name.to_vec()).unwrap()),
                    None => data,
                });
            }
        }
        Ok(events)
    }

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let stream =
            b"data: {\"a\":1}\n\n: comment\n\nevent: x\ndata:two\ndata: lines\n\r\ndata: [DONE]\r\n\r\n";
        let whole = decode(&[stream], 1024).unwrap();
        assert_eq!(whole, ["{\"a\":1}", "x=two\nlines", "[DONE]"]);
        for split in 0..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(decode(&[a, b], 1024).unwrap(), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(decode(&bytes, 1024).unwrap(), whole);
    }

    #[test]
    fn cr_alone_ends_a_line() {
        assert_eq!(decode(&[b"data: a\r\rdata: b\r", b"\r"], 64).unwrap(), ["a", "b"]);
    }

    #[test]
    fn an_event_over_the_bound_is_refused_even_before_its_line_ends() {
        assert_eq!(decode(&[b"data: 12345678\n\n"], 8).unwrap(), ["12345678"]);
        assert_eq!(decode(&[b"data: 123456789\n\n"], 8), Err(TooLarge { limit: 8 }));
        assert_eq!(decode(&[b"data: 1234\ndata: 5678\n\n"], 8), Err(TooLarge { limit: 8 }));
        // A line that never ends is refused once it cannot fit, not buffered forever.
        let endless = vec![b'x'; 100];
        assert_eq!(decode(&[b"data: ", &endless], 64), Err(TooLarge { limit: 64 }));
    }

    #[test]
    fn a_name_belongs_to_its_event_alone() {
        let stream = b"event: ping\n\nevent: message_start\ndata: {}\n\ndata: plain\n\n";
        assert_eq!(decode(&[stream], 64).unwrap(), ["message_start={}", "plain"]);
        assert_eq!(decode(&[b"event: 123456789\ndata: x\n\n"], 8), Err(TooLarge { limit: 8 }));
        // A known name is the known one itself, not a copy.
        const KNOWN: &[&str] = &["message_start"];
        let mut decoder = Decoder::with_names(64, KNOWN);
        decoder.push(b"event: message_start\ndata: {}\n\nevent: other\ndata: {}\n\n");
        let (known, _) = decoder.next_event().unwrap().unwrap();
        assert_eq!(known.unwrap().as_ptr(), KNOWN[0].as_ptr());
        let (other, _) = decoder.next_event().unwrap().unwrap();
        assert_eq!(other.as_deref(), Some(&b"other"[..]));
        let frame = frame_with_id(3, Some(b"message_stop"), b"{}");
        assert_eq!(&frame[..], b"id: 3\nevent: message_stop\ndata: {}\n\n");
    }

    #[test]
    fn frames_split_lines() {
        assert_eq!(&frame(b"{\"a\":1}")[..], b"data: {\"a\":1}\n\n");
        assert_eq!(&frame(b"a\nb")[..], b"data: a\ndata: b\n\n");
    }
}
