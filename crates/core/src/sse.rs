//! A bounded decoder of Server-Sent Events (feature `sse`): an upstream's `text/event-stream`
//! bytes in, whole events out, never holding more than a set number of bytes of one event.
//!
//! The SSE crates buffer an event of any size: an upstream that never ends an event would hold
//! the memory of every flight reading it. [`Decoder`] refuses an event (and an unended line)
//! once it cannot fit its bound. It keeps what LLM streams need: `data` lines joined by `\n`,
//! the `event` name and the `id`; `retry` and comments are read and dropped. [`Events`] runs it
//! over any stream of byte chunks (a `reqwest` body, a hyper one) as a `Stream` of events.
//!
//! ```
//! use streamflight_core::sse::Decoder;
//!
//! let mut decoder = Decoder::new(64 * 1024);
//! // Chunks split an event anywhere; events come out whole.
//! decoder.push(b"event: delta\ndata: {\"text\":");
//! assert_eq!(decoder.next_event(), Ok(None));
//! decoder.push(b"\"Hel\"}\n\ndata: [DONE]\n\n");
//! let event = decoder.next_event().unwrap().unwrap();
//! assert_eq!(event.name.as_deref(), Some(&b"delta"[..]));
//! assert_eq!(&event.data[..], b"{\"text\":\"Hel\"}");
//! assert_eq!(&decoder.next_event().unwrap().unwrap().data[..], b"[DONE]");
//! assert_eq!(decoder.next_event(), Ok(None));
//! ```

use core::fmt;
use core::pin::Pin;
use core::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_core::Stream;

/// One decoded event: its data, and its `event` name and `id` when it had them.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event` field (the Responses API and Anthropic's name every event); `None` for
    /// the default (`message`).
    pub name: Option<Bytes>,
    /// The `data` lines, joined by `\n` (an empty `data:` line counts: an event has data).
    pub data: Bytes,
    /// The event's own `id` field, if it had one (the SSE last-event-id of a client is the
    /// last `id` seen: keep it yourself across events that have none).
    pub id: Option<Bytes>,
}

/// Why the decoder refused its input.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// One event (its data, its name, its id, or a line not ended yet) was larger than the
    /// bound; the decoder is of no further use for this stream.
    TooLarge {
        /// The bound, in bytes.
        limit: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { limit } => write!(f, "an event exceeded {limit} bytes"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

/// Room for `data: ` in front of a value on a line that has not ended yet.
const FIELD_SLACK: usize = 16;

/// Splits a byte stream into events, holding at most `limit` bytes of one event.
///
/// Feed it with [`push`](Decoder::push), then take events with
/// [`next_event`](Decoder::next_event) until it returns `Ok(None)`. An event's data is one
/// allocation, made as its lines arrive and handed out as it is (`Bytes`): no copy after.
/// See [the module](self) for an example.
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
    /// The `id` field of the event being read, if it had one.
    id: Option<Bytes>,
    /// Event names expected in this stream: one of them is borrowed, not copied.
    known: &'static [&'static str],
    /// A line ended with `\r`: a `\n` right after it belongs to the same line end.
    after_cr: bool,
    /// Whether `id` fields are kept (see [`Decoder::without_ids`]).
    ids: bool,
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
            id: None,
            known: &[],
            after_cr: false,
            ids: true,
            limit,
        }
    }

    /// The same, without keeping the stream's `id` fields: every event's `id` is `None`. For
    /// a caller that names events itself (the gateway numbers its own): an `id` kept is an
    /// allocation an event.
    ///
    /// ```
    /// use streamflight_core::sse::Decoder;
    ///
    /// let mut decoder = Decoder::new(1024).without_ids();
    /// decoder.push(b"id: 7\ndata: a\n\n");
    /// let event = decoder.next_event().unwrap().unwrap();
    /// assert_eq!((&event.data[..], event.id), (&b"a"[..], None));
    /// ```
    pub fn without_ids(self) -> Decoder {
        Decoder { ids: false, ..self }
    }

    /// The same, borrowing the names in `known` instead of copying them (a stream's events
    /// come from a small set of names: no allocation for each).
    ///
    /// ```
    /// use streamflight_core::sse::Decoder;
    ///
    /// const NAMES: &[&str] = &["message_start", "content_block_delta", "message_stop"];
    /// let mut decoder = Decoder::with_names(1024, NAMES);
    /// decoder.push(b"event: message_stop\ndata: {}\n\n");
    /// let name = decoder.next_event().unwrap().unwrap().name.unwrap();
    /// assert_eq!(name.as_ptr(), NAMES[2].as_ptr(), "the known name itself, not a copy");
    /// ```
    pub fn with_names(limit: usize, known: &'static [&'static str]) -> Decoder {
        Decoder { known, ..Decoder::new(limit) }
    }

    /// Adds received bytes; then call [`Decoder::next_event`] until it returns `Ok(None)`.
    // Inlined across crates, as it was when the decoder was the gateway's own: its hot path.
    #[inline]
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    /// Frees the room of the bytes received, if none is pending: for a caller about to wait
    /// for more, maybe long (a held stream), so that its largest read's room is not kept
    /// meanwhile. The next [`Decoder::push`] allocates again, as much as it needs.
    ///
    /// ```
    /// use streamflight_core::sse::Decoder;
    ///
    /// let mut decoder = Decoder::new(1024);
    /// decoder.push(b"data: a\n\ndata: b");
    /// assert_eq!(&decoder.next_event().unwrap().unwrap().data[..], b"a");
    /// assert!(decoder.next_event().unwrap().is_none());
    /// decoder.release(); // `data: b` is pending: kept
    /// decoder.push(b"\n\n");
    /// assert_eq!(&decoder.next_event().unwrap().unwrap().data[..], b"b");
    /// ```
    pub fn release(&mut self) {
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = BytesMut::new();
        }
    }

    /// The next complete event, if one is complete. An event without data is no event (as
    /// for browsers): its name and id are forgotten.
    ///
    /// # Errors
    ///
    /// [`DecodeError::TooLarge`] once the event being read (or a line not ended yet) cannot
    /// fit the bound.
    // Inlined across crates: a call into another crate costs the gateway's per-event path a
    // fifth of its time (measured: 63 ns an event inlined, 76 ns not).
    #[inline]
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, DecodeError> {
        loop {
            if self.after_cr && self.pending.first() == Some(&b'\n') {
                self.pending.advance(1);
            }
            self.after_cr = false;
            let Some(end) = memchr::memchr2(b'\n', b'\r', &self.pending) else {
                // An incomplete line may still become part of the event: bound it too (the
                // slack is for the field name in front of its value).
                if self.pending.len() + self.data.len() > self.limit + FIELD_SLACK {
                    return Err(DecodeError::TooLarge { limit: self.limit });
                }
                return Ok(None);
            };
            self.after_cr = self.pending[end] == b'\r';
            if end == 0 {
                self.pending.advance(1);
                let (name, id) = (self.name.take(), self.id.take());
                if self.has_data {
                    self.has_data = false;
                    let data = core::mem::take(&mut self.data).freeze();
                    return Ok(Some(SseEvent { name, data, id }));
                }
                continue;
            }
            // Read in place and then passed over: splitting each line off as a `BytesMut` of
            // its own cost a shared buffer's reference count, up and down, per line.
            let line = &self.pending[..end];
            let (field, value) = match line.iter().position(|&b| b == b':') {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &b""[..]),
            };
            if field == b"data" {
                if self.data.len() + value.len() + usize::from(self.has_data) > self.limit {
                    return Err(DecodeError::TooLarge { limit: self.limit });
                }
                // Lines are joined by `\n`; the room is reserved once, exactly, for the usual
                // event of one line.
                self.data.reserve(value.len() + usize::from(self.has_data));
                if self.has_data {
                    self.data.extend_from_slice(b"\n");
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            } else if field == b"event" {
                // A name is short; one over the bound is as refused as data over it.
                if value.len() > self.limit {
                    return Err(DecodeError::TooLarge { limit: self.limit });
                }
                self.name = Some(match self.known.iter().find(|known| known.as_bytes() == value) {
                    Some(known) => Bytes::from_static(known.as_bytes()),
                    None => Bytes::copy_from_slice(value),
                });
            } else if field == b"id" && self.ids && !value.contains(&0) {
                // (An id with a NUL is ignored, as the SSE standard says.)
                if value.len() > self.limit {
                    return Err(DecodeError::TooLarge { limit: self.limit });
                }
                self.id = Some(Bytes::copy_from_slice(value));
            }
            self.pending.advance(end + 1);
        }
    }
}

/// Why a stream of [`Events`] ended with an error.
#[non_exhaustive]
#[derive(Debug)]
pub enum EventsError<E> {
    /// The byte stream failed (a connection reset, a timeout).
    Body(E),
    /// The bytes were refused by the [`Decoder`] (an event over the bound).
    Decode(DecodeError),
}

/// The byte stream's error: `?` on a body's (or a request's) error in an upstream whose error
/// type is `EventsError<E>`.
impl<E> From<E> for EventsError<E> {
    fn from(error: E) -> Self {
        EventsError::Body(error)
    }
}

impl<E: fmt::Display> fmt::Display for EventsError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventsError::Body(error) => write!(f, "the event stream's body failed: {error}"),
            EventsError::Decode(error) => write!(f, "the event stream was refused: {error}"),
        }
    }
}

#[cfg(feature = "std")]
impl<E: std::error::Error + 'static> std::error::Error for EventsError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EventsError::Body(error) => Some(error),
            EventsError::Decode(error) => Some(error),
        }
    }
}

pin_project_lite::pin_project! {
    /// A stream of byte chunks (`Result<impl AsRef<[u8]>, E>`) as a stream of its events,
    /// decoded with a bound: `Ok(event)` for each, then the end when the bytes end. An error
    /// (of the bytes or of the decoder) is yielded once, then the stream ends. An event the
    /// bytes stop in the middle of is dropped, as the SSE standard says: a caller that needs
    /// a terminal event (`[DONE]`) checks that it came.
    ///
    /// ```
    /// use futures::{StreamExt, stream};
    /// use streamflight_core::sse::{Events, EventsError};
    ///
    /// # futures::executor::block_on(async {
    /// let body = stream::iter([Ok::<_, std::io::Error>(&b"data: a\n"[..]), Ok(b"\ndata: b\n\n")]);
    /// let data: Vec<_> = Events::new(body, 1024).map(|event| event.unwrap().data).collect().await;
    /// assert_eq!(data, ["a", "b"]);
    ///
    /// let endless = stream::iter([Ok::<_, std::io::Error>(vec![b'x'; 4096])]);
    /// let refused = Events::new(endless, 1024).next().await.unwrap();
    /// assert!(matches!(refused, Err(EventsError::Decode(_))));
    /// # });
    /// ```
    #[must_use = "streams do nothing unless polled"]
    pub struct Events<S> {
        #[pin]
        body: S,
        decoder: Decoder,
        // It yielded its end (an error, or the bytes' end).
        over: bool,
    }
}

impl<S> Events<S> {
    /// The events of `body`, each at most `limit` bytes.
    pub fn new(body: S, limit: usize) -> Self {
        Events::with_decoder(body, Decoder::new(limit))
    }

    /// The events of `body`, read by `decoder` (one made by [`Decoder::with_names`]).
    pub fn with_decoder(body: S, decoder: Decoder) -> Self {
        Events { body, decoder, over: false }
    }
}

impl<S> fmt::Debug for Events<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("decoder", &self.decoder)
            .field("over", &self.over)
            .finish_non_exhaustive()
    }
}

impl<S, B, E> Stream for Events<S>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
{
    type Item = Result<SseEvent, EventsError<E>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if *this.over {
            return Poll::Ready(None);
        }
        loop {
            match this.decoder.next_event() {
                Ok(Some(event)) => return Poll::Ready(Some(Ok(event))),
                Ok(None) => {}
                Err(error) => {
                    *this.over = true;
                    return Poll::Ready(Some(Err(EventsError::Decode(error))));
                }
            }
            match this.body.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => this.decoder.push(chunk.as_ref()),
                Poll::Ready(Some(Err(error))) => {
                    *this.over = true;
                    return Poll::Ready(Some(Err(EventsError::Body(error))));
                }
                Poll::Ready(None) => {
                    *this.over = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec::Vec;

    fn text(bytes: &Bytes) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn decode(chunks: &[&[u8]], limit: usize) -> Result<Vec<String>, DecodeError> {
        let mut decoder = Decoder::new(limit);
        let mut events = Vec::new();
        for chunk in chunks {
            decoder.push(chunk);
            while let Some(event) = decoder.next_event()? {
                let mut shown = String::new();
                if let Some(id) = &event.id {
                    shown = alloc::format!("#{}:", text(id));
                }
                if let Some(name) = &event.name {
                    shown.push_str(&text(name));
                    shown.push('=');
                }
                shown.push_str(&text(&event.data));
                events.push(shown);
            }
        }
        Ok(events)
    }

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let stream =
            b"data: {\"a\":1}\n\n: comment\n\nevent: x\ndata:two\ndata: lines\n\r\nid: 7\ndata: [DONE]\r\n\r\n";
        let whole = decode(&[stream], 1024).unwrap();
        assert_eq!(whole, ["{\"a\":1}", "x=two\nlines", "#7:[DONE]"]);
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
        let too_large = Err(DecodeError::TooLarge { limit: 8 });
        assert_eq!(decode(&[b"data: 12345678\n\n"], 8).unwrap(), ["12345678"]);
        assert_eq!(decode(&[b"data: 123456789\n\n"], 8), too_large);
        assert_eq!(decode(&[b"data: 1234\ndata: 5678\n\n"], 8), too_large);
        assert_eq!(decode(&[b"id: 123456789\ndata: x\n\n"], 8), too_large);
        // A line that never ends is refused once it cannot fit, not buffered forever.
        let endless = alloc::vec![b'x'; 100];
        assert_eq!(decode(&[b"data: ", &endless], 64), Err(DecodeError::TooLarge { limit: 64 }));
    }

    #[test]
    fn a_name_and_an_id_belong_to_their_event_alone() {
        let stream = b"event: ping\nid: 1\n\nevent: message_start\ndata: {}\n\ndata: plain\n\n";
        assert_eq!(decode(&[stream], 64).unwrap(), ["message_start={}", "plain"]);
        assert_eq!(decode(&[b"event: 123456789\ndata: x\n\n"], 8), Err(DecodeError::TooLarge { limit: 8 }));
        assert_eq!(decode(&[b"id: a\0b\ndata: x\n\n"], 8).unwrap(), ["x"], "an id with a NUL is ignored");
        // A known name is the known one itself, not a copy.
        const KNOWN: &[&str] = &["message_start"];
        let mut decoder = Decoder::with_names(64, KNOWN);
        decoder.push(b"event: message_start\ndata: {}\n\nevent: other\ndata: {}\n\n");
        let known = decoder.next_event().unwrap().unwrap().name;
        assert_eq!(known.unwrap().as_ptr(), KNOWN[0].as_ptr());
        let other = decoder.next_event().unwrap().unwrap().name;
        assert_eq!(other.as_deref(), Some(&b"other"[..]));
    }

    #[test]
    fn a_stream_of_chunks_ends_after_its_first_error() {
        let chunks = [Ok(&b"data: a\n\nda"[..]), Ok(b"ta: b\n\n"), Err("reset"), Ok(b"data: c\n\n")];
        let mut events = Events::new(futures::stream::iter(chunks), 64);
        let mut next = || futures::executor::block_on(futures::StreamExt::next(&mut events));
        assert_eq!(next().unwrap().unwrap().data, "a");
        assert_eq!(next().unwrap().unwrap().data, "b");
        assert!(matches!(next(), Some(Err(EventsError::Body("reset")))));
        assert!(next().is_none(), "nothing after the error");
    }
}
