//! The gateway's wire format for flights shared across replicas through Redis: how a flight's
//! key, items and failure are written to the store, and read back by every replica of a fleet.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::Bytes;
use streamflight_redis::{Codec, Lost};

use crate::flight::{Broken, Event, Head, Headers, Part, UpstreamError};
use crate::key::Key;

/// The gateway's [`Codec`]: every replica of a fleet must run the same wire format.
///
/// The key is [`Key::identity`]. An item or a failure is one tag byte, then its fields: fixed
/// ones as big-endian integers, variable ones as their length (u32, big-endian) and then their
/// bytes, nothing after the last. Bytes that are not exactly that read back as
/// [`Broken::Malformed`], never as a panic.
///
/// | tag    | what                          | then                                             |
/// |--------|-------------------------------|--------------------------------------------------|
/// | `0x11` | [`Part::Head`]                | head                                             |
/// | `0x12` | [`Part::Event`]               | `usage_only` (0 or 1), data                      |
/// | `0x13` | [`Part::Body`]                | bytes                                            |
/// | `0x14` | [`UpstreamError::Status`]     | head, body                                       |
/// | `0x15` | [`UpstreamError::InStream`]   | data                                             |
/// | `0x16` | [`UpstreamError::Broken`]     | kind (one byte), message (UTF-8)                 |
/// | `0x17` | [`Part::Event`] with a name   | `usage_only` (0 or 1), name, data                |
/// | `0x18` | [`UpstreamError::InStream`] with a name | name, data                             |
///
/// An event without an `event:` name keeps the tags it had before names were kept (`0x12`,
/// `0x15`), so that replicas of either version read each other's unnamed events.
///
/// A head is the status (u16), the number of headers (u32), then each header's name and value
/// (any bytes a header value may hold, not only UTF-8).
pub(super) struct Wire;

// A tag's high nibble is the format's version, its low nibble the variant. A replica that meets
// a tag it does not know (another version, mid-upgrade) fails the flight rather than guess.
const HEAD: u8 = 0x11;
const EVENT: u8 = 0x12;
const BODY: u8 = 0x13;
const STATUS: u8 = 0x14;
const IN_STREAM: u8 = 0x15;
const BROKEN: u8 = 0x16;
const NAMED_EVENT: u8 = 0x17;
const NAMED_IN_STREAM: u8 = 0x18;

impl Codec<Key, Part, UpstreamError> for Wire {
    fn key(&self, key: &Key) -> Vec<u8> {
        key.identity()
    }

    fn encode_item(&self, item: &Part) -> Vec<u8> {
        match item {
            Part::Head(head) => {
                let mut out = vec![HEAD];
                put_head(&mut out, head);
                out
            }
            Part::Event(event) => {
                let name = event.name.as_deref();
                let mut out = Vec::with_capacity(2 + 8 + name.map_or(0, <[u8]>::len) + event.data.len());
                out.push(if name.is_some() { NAMED_EVENT } else { EVENT });
                out.push(u8::from(event.usage_only));
                if let Some(name) = name {
                    put(&mut out, name);
                }
                put(&mut out, &event.data);
                out
            }
            Part::Body(body) => tagged(BODY, body),
        }
    }

    fn decode_item(&self, bytes: &[u8]) -> Result<Part, UpstreamError> {
        read_part(bytes).map_err(|malformed| malformed.error("item"))
    }

    fn encode_error(&self, error: &UpstreamError) -> Vec<u8> {
        match error {
            UpstreamError::Status { head, body } => {
                let mut out = vec![STATUS];
                put_head(&mut out, head);
                put(&mut out, body);
                out
            }
            UpstreamError::InStream(Event { name: None, data, .. }) => tagged(IN_STREAM, data),
            UpstreamError::InStream(Event { name: Some(name), data, .. }) => {
                let mut out = Vec::with_capacity(1 + 8 + name.len() + data.len());
                out.push(NAMED_IN_STREAM);
                put(&mut out, name);
                put(&mut out, data);
                out
            }
            UpstreamError::Broken { kind, message } => {
                let mut out = Vec::with_capacity(2 + 4 + message.len());
                out.push(BROKEN);
                out.push(kind_code(*kind));
                put(&mut out, message.as_bytes());
                out
            }
        }
    }

    fn decode_error(&self, bytes: &[u8]) -> UpstreamError {
        read_failure(bytes).unwrap_or_else(|malformed| malformed.error("failure"))
    }

    fn lost(&self, lost: Lost) -> UpstreamError {
        UpstreamError::broken(Broken::Lost, lost.to_string())
    }
}

/// An item, if `bytes` are exactly one.
fn read_part(bytes: &[u8]) -> Result<Part, Malformed> {
    let mut reader = Reader(bytes);
    let part = match reader.byte()? {
        HEAD => Part::Head(Arc::new(reader.head()?)),
        EVENT => {
            let usage_only = reader.flag()?;
            Part::Event(Event { name: None, data: Bytes::copy_from_slice(reader.field()?), usage_only })
        }
        NAMED_EVENT => {
            let usage_only = reader.flag()?;
            let name = Some(Bytes::copy_from_slice(reader.field()?));
            Part::Event(Event { name, data: Bytes::copy_from_slice(reader.field()?), usage_only })
        }
        BODY => Part::Body(Bytes::copy_from_slice(reader.field()?)),
        _ => return Err(Malformed("unknown tag")),
    };
    reader.end()?;
    Ok(part)
}

/// A failure, if `bytes` are exactly one.
fn read_failure(bytes: &[u8]) -> Result<UpstreamError, Malformed> {
    let mut reader = Reader(bytes);
    let failure = match reader.byte()? {
        STATUS => {
            let head = Arc::new(reader.head()?);
            UpstreamError::Status { head, body: Bytes::copy_from_slice(reader.field()?) }
        }
        IN_STREAM => UpstreamError::InStream(Event {
            name: None,
            data: Bytes::copy_from_slice(reader.field()?),
            usage_only: false,
        }),
        NAMED_IN_STREAM => {
            let name = Some(Bytes::copy_from_slice(reader.field()?));
            UpstreamError::InStream(Event {
                name,
                data: Bytes::copy_from_slice(reader.field()?),
                usage_only: false,
            })
        }
        BROKEN => {
            let kind = kind_from(reader.byte()?).ok_or(Malformed("unknown failure kind"))?;
            let message = std::str::from_utf8(reader.field()?).map_err(|_| Malformed("message not UTF-8"))?;
            UpstreamError::broken(kind, message)
        }
        _ => return Err(Malformed("unknown tag")),
    };
    reader.end()?;
    Ok(failure)
}

/// Each kind's byte on the wire: fixed here, never the enum's order, so that reordering or
/// adding kinds does not change what a stored failure means.
fn kind_code(kind: Broken) -> u8 {
    match kind {
        Broken::Unreachable => 1,
        Broken::Timeout => 2,
        Broken::Truncated => 3,
        Broken::TooLarge => 4,
        Broken::Malformed => 5,
        Broken::Lost => 6,
        Broken::AnswerTooLarge => 7,
        Broken::AnswerTooLong => 8,
    }
}

/// The kind a byte stands for ([`kind_code`]'s inverse).
fn kind_from(code: u8) -> Option<Broken> {
    Some(match code {
        1 => Broken::Unreachable,
        2 => Broken::Timeout,
        3 => Broken::Truncated,
        4 => Broken::TooLarge,
        5 => Broken::Malformed,
        6 => Broken::Lost,
        7 => Broken::AnswerTooLarge,
        8 => Broken::AnswerTooLong,
        _ => return None,
    })
}

/// Writes a head: status, number of headers, then each name and value. Repeated names are
/// written once per value, in the map's order, so they read back as they were.
fn put_head(out: &mut Vec<u8>, head: &Head) {
    out.extend_from_slice(&head.status.as_u16().to_be_bytes());
    out.extend_from_slice(&length(head.headers.len()).to_be_bytes());
    for (name, value) in head.headers.iter() {
        put(out, name.as_bytes());
        put(out, value);
    }
}

/// A tag, then one field.
fn tagged(tag: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 4 + bytes.len());
    out.push(tag);
    put(&mut out, bytes);
    out
}

/// Writes `bytes` after their length.
fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&length(bytes.len()).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A field's length as written. Every field the gateway writes is far below 4 GiB (events and
/// bodies are cut at their bounds, and Redis refuses values over 512 MiB unless told otherwise),
/// so one that is not is a bug, and writing a wrong length would only hide it.
fn length(len: usize) -> u32 {
    u32::try_from(len).expect("a field of 4 GiB or more cannot be stored")
}

/// Why stored bytes are not something this format wrote.
struct Malformed(&'static str);

impl Malformed {
    /// The error the flight's subscribers on this replica get: the stored `what` is unreadable.
    fn error(self, what: &str) -> UpstreamError {
        let message = format!("the fleet's stored {what} for this flight cannot be read: {}", self.0);
        UpstreamError::broken(Broken::Malformed, message)
    }
}

/// Reads fields from the front of stored bytes. Every read checks what is left, so no input,
/// however cut or forged, can make it index out of bounds or allocate more than it holds.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The next `len` bytes.
    fn take(&mut self, len: usize) -> Result<&'a [u8], Malformed> {
        let (taken, rest) = self.0.split_at_checked(len).ok_or(Malformed("cut short"))?;
        self.0 = rest;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, Malformed> {
        let &[byte] = self.take(1)? else { return Err(Malformed("cut short")) };
        Ok(byte)
    }

    fn flag(&mut self) -> Result<bool, Malformed> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Malformed("invalid flag")),
        }
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        let &[a, b] = self.take(2)? else { return Err(Malformed("cut short")) };
        Ok(u16::from_be_bytes([a, b]))
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        let &[a, b, c, d] = self.take(4)? else { return Err(Malformed("cut short")) };
        Ok(u32::from_be_bytes([a, b, c, d]))
    }

    /// A variable field: its length, then that many bytes.
    fn field(&mut self) -> Result<&'a [u8], Malformed> {
        let len = usize::try_from(self.u32()?).map_err(|_| Malformed("cut short"))?;
        self.take(len)
    }

    fn head(&mut self) -> Result<Head, Malformed> {
        let status = StatusCode::from_u16(self.u16()?).map_err(|_| Malformed("invalid status"))?;
        // The count is not trusted for capacity: each header takes at least 8 bytes, so a forged
        // count runs out of input (and fails) long before it costs anything.
        let count = self.u32()?;
        let mut headers = HeaderMap::new();
        for _ in 0..count {
            let name = HeaderName::from_bytes(self.field()?).map_err(|_| Malformed("invalid header name"))?;
            let value =
                HeaderValue::from_bytes(self.field()?).map_err(|_| Malformed("invalid header value"))?;
            headers.try_append(name, value).map_err(|_| Malformed("too many headers"))?;
        }
        Ok(Head { status, headers: Headers::from(&headers) })
    }

    /// Succeeds only if everything was read: trailing bytes mean the writer meant something else.
    fn end(&self) -> Result<(), Malformed> {
        if self.0.is_empty() { Ok(()) } else { Err(Malformed("trailing bytes")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::Api;
    use crate::dialect::error::Refusal;

    fn head(status: u16, headers: &[(&str, &[u8])]) -> Arc<Head> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        Arc::new(Head { status: StatusCode::from_u16(status).unwrap(), headers: Headers::from(&map) })
    }

    /// A head with a repeated name (its values must stay in order) and a value that is not UTF-8.
    fn rich_head(status: u16) -> Arc<Head> {
        head(
            status,
            &[
                ("content-type", b"text/event-stream"),
                ("x-ratelimit-remaining-requests", b"41"),
                ("set-cookie", b"a=1"),
                ("set-cookie", b"b=2"),
                ("x-latin1", b"caf\xe9 \xff\x80"),
                ("x-empty", b""),
            ],
        )
    }

    /// Every kind of [`Broken`]: the match stops compiling when a kind is added, so the list
    /// cannot silently miss it.
    fn kinds() -> [Broken; 8] {
        let kinds = [
            Broken::Unreachable,
            Broken::Timeout,
            Broken::Truncated,
            Broken::TooLarge,
            Broken::Malformed,
            Broken::Lost,
            Broken::AnswerTooLarge,
            Broken::AnswerTooLong,
        ];
        for kind in kinds {
            match kind {
                Broken::Unreachable
                | Broken::Timeout
                | Broken::Truncated
                | Broken::TooLarge
                | Broken::Malformed
                | Broken::Lost
                | Broken::AnswerTooLarge
                | Broken::AnswerTooLong => {}
            }
        }
        kinds
    }

    fn parts() -> Vec<Part> {
        vec![
            Part::Head(rich_head(200)),
            Part::Head(head(204, &[])),
            Part::Event(Event {
                name: None,
                data: Bytes::from_static(br#"{"choices":[{"delta":{}}]}"#),
                usage_only: false,
            }),
            Part::Event(Event {
                name: None,
                data: Bytes::from_static(br#"{"choices":[],"usage":{}}"#),
                usage_only: true,
            }),
            Part::Event(Event { name: None, data: Bytes::new(), usage_only: false }),
            Part::Event(Event {
                name: Some(Bytes::from_static(b"message_stop")),
                data: Bytes::from_static(br#"{"type":"message_stop"}"#),
                usage_only: false,
            }),
            Part::Event(Event { name: Some(Bytes::new()), data: Bytes::new(), usage_only: true }),
            Part::Body(Bytes::from_static(b"{\"data\":[]}\n\xff")),
            Part::Body(Bytes::new()),
        ]
    }

    fn failures() -> Vec<UpstreamError> {
        let mut failures = vec![
            UpstreamError::Status { head: rich_head(429), body: Bytes::from_static(b"{\"error\":{}}") },
            UpstreamError::Status { head: head(500, &[]), body: Bytes::new() },
            UpstreamError::InStream(Event {
                name: None,
                data: Bytes::from_static(br#"{"error":{"message":"overloaded"}}"#),
                usage_only: false,
            }),
            UpstreamError::InStream(Event { name: None, data: Bytes::new(), usage_only: false }),
            UpstreamError::InStream(Event {
                name: Some(Bytes::from_static(b"error")),
                data: Bytes::from_static(br#"{"type":"error","error":{"type":"overloaded_error"}}"#),
                usage_only: false,
            }),
            UpstreamError::broken(Broken::Truncated, ""),
        ];
        for kind in kinds() {
            failures.push(UpstreamError::broken(kind, format!("{kind:?}: déjà vu ✓")));
        }
        failures
    }

    /// Every part and failure above, encoded.
    fn encodings() -> Vec<Vec<u8>> {
        let parts = parts().into_iter().map(|part| Wire.encode_item(&part));
        parts.chain(failures().into_iter().map(|failure| Wire.encode_error(&failure))).collect()
    }

    /// Headers in the map's order, repeated names included.
    fn pairs(head: &Head) -> Vec<(String, Vec<u8>)> {
        head.headers.iter().map(|(name, value)| (name.to_owned(), value.to_vec())).collect()
    }

    fn same_head(a: &Head, b: &Head) -> bool {
        a.status == b.status && pairs(a) == pairs(b)
    }

    fn same_part(a: &Part, b: &Part) -> bool {
        match (a, b) {
            (Part::Head(a), Part::Head(b)) => same_head(a, b),
            (Part::Event(a), Part::Event(b)) => {
                a.name == b.name && a.data == b.data && a.usage_only == b.usage_only
            }
            (Part::Body(a), Part::Body(b)) => a == b,
            _ => false,
        }
    }

    fn same_failure(a: &UpstreamError, b: &UpstreamError) -> bool {
        match (a, b) {
            (UpstreamError::Status { head: a, body: x }, UpstreamError::Status { head: b, body: y }) => {
                same_head(a, b) && x == y
            }
            (UpstreamError::InStream(a), UpstreamError::InStream(b)) => a.name == b.name && a.data == b.data,
            (
                UpstreamError::Broken { kind: a, message: x },
                UpstreamError::Broken { kind: b, message: y },
            ) => a == b && x == y,
            _ => false,
        }
    }

    /// The decoders' own failure, not a stored `Malformed` that was read back.
    fn is_malformed(error: &UpstreamError) -> bool {
        let UpstreamError::Broken { kind: Broken::Malformed, message } = error else { return false };
        message.contains("cannot be read")
    }

    /// Both decoders on `bytes`: each must fail as malformed.
    fn assert_malformed(bytes: &[u8]) {
        match Wire.decode_item(bytes) {
            Err(error) => assert!(is_malformed(&error), "{bytes:?} gave {error:?}"),
            Ok(part) => panic!("{bytes:?} decoded to {part:?}"),
        }
        let error = Wire.decode_error(bytes);
        assert!(is_malformed(&error), "{bytes:?} gave {error:?}");
    }

    #[test]
    fn every_part_round_trips() {
        for part in parts() {
            let bytes = Wire.encode_item(&part);
            let back = Wire.decode_item(&bytes).unwrap();
            assert!(same_part(&part, &back), "{part:?} came back as {back:?}");
            assert_eq!(Wire.encode_item(&back), bytes);
        }
    }

    #[test]
    fn every_failure_round_trips() {
        for failure in failures() {
            let bytes = Wire.encode_error(&failure);
            let back = Wire.decode_error(&bytes);
            assert!(same_failure(&failure, &back), "{failure:?} came back as {back:?}");
            assert_eq!(Wire.encode_error(&back), bytes);
        }
    }

    #[test]
    fn the_encoding_is_as_documented() {
        let head = head(200, &[("a", b"\xff"), ("a", b"")]);
        assert_eq!(
            Wire.encode_item(&Part::Head(head)),
            [
                &[HEAD, 0, 200, 0, 0, 0, 2][..],
                &[0, 0, 0, 1, b'a', 0, 0, 0, 1, 0xff],
                &[0, 0, 0, 1, b'a', 0, 0, 0, 0]
            ]
            .concat()
        );
        let event = Part::Event(Event { name: None, data: Bytes::from_static(b"hi"), usage_only: true });
        assert_eq!(Wire.encode_item(&event), [EVENT, 1, 0, 0, 0, 2, b'h', b'i']);
        assert_eq!(Wire.encode_item(&Part::Body(Bytes::new())), [BODY, 0, 0, 0, 0]);
        let broken = UpstreamError::broken(Broken::Lost, "x");
        assert_eq!(Wire.encode_error(&broken), [BROKEN, 6, 0, 0, 0, 1, b'x']);
    }

    #[test]
    fn items_and_failures_do_not_pass_for_each_other() {
        for part in parts() {
            assert!(is_malformed(&Wire.decode_error(&Wire.encode_item(&part))));
        }
        for failure in failures() {
            assert!(is_malformed(&Wire.decode_item(&Wire.encode_error(&failure)).unwrap_err()));
        }
    }

    #[test]
    fn lost_is_a_retryable_502() {
        for lost in [Lost::Leader, Lost::Trimmed] {
            let error = Wire.lost(lost);
            let UpstreamError::Broken { kind: Broken::Lost, message } = &error else { panic!("{error:?}") };
            assert_eq!(*message, lost.to_string());
            assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
            assert_eq!(Refusal::Upstream { kind: Broken::Lost, message }.error().code, "upstream_lost");
        }
    }

    #[test]
    fn every_kind_has_its_own_byte() {
        for kind in kinds() {
            assert_eq!(kind_from(kind_code(kind)), Some(kind));
        }
        assert_eq!(kind_from(0), None);
        assert_eq!(kind_from(9), None);
    }

    #[test]
    fn every_prefix_and_any_trailing_byte_is_malformed() {
        for bytes in encodings() {
            for len in 0..bytes.len() {
                assert_malformed(&bytes[..len]);
            }
            assert_malformed(&[&bytes[..], &[0]].concat());
        }
    }

    #[test]
    fn invalid_fields_are_malformed() {
        let field = |bytes: &[u8]| [&(bytes.len() as u32).to_be_bytes()[..], bytes].concat();
        let header = |name: &[u8], value: &[u8]| {
            [&[HEAD, 0, 200, 0, 0, 0, 1][..], &field(name), &field(value)].concat()
        };
        for bytes in [
            vec![],
            vec![0x00],
            vec![0x21, 0, 0, 0, 0],
            vec![HEAD, 0, 99, 0, 0, 0, 0],
            vec![HEAD, 0x03, 0xe8, 0, 0, 0, 0],
            header(b"bad name", b"x"),
            header(b"", b"x"),
            header(b"x-ok", b"line\nbreak"),
            header(b"x-ok", b"nul\0"),
            vec![HEAD, 0, 200, 0xff, 0xff, 0xff, 0xff],
            vec![EVENT, 2, 0, 0, 0, 0],
            vec![BODY, 0xff, 0xff, 0xff, 0xff],
            vec![BROKEN, 0, 0, 0, 0, 0],
            vec![BROKEN, 9, 0, 0, 0, 0],
            [&[BROKEN, 1][..], &field(b"\xff\xfe")].concat(),
            vec![STATUS, 0, 200, 0, 0, 0, 0],
        ] {
            assert_malformed(&bytes);
        }
    }

    /// A small deterministic generator (xorshift64*): the same garbage on every run, so a
    /// failure can be replayed.
    struct Noise(u64);

    impl Noise {
        fn word(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.word() as u8).collect()
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let mut noise = Noise(0x5eed_f1a9);
        for round in 0..20_000 {
            let len = (noise.word() % 96) as usize;
            let mut bytes = noise.bytes(len);
            // Half the rounds start with a real tag, to get past the first byte.
            if round % 2 == 1 && !bytes.is_empty() {
                bytes[0] =
                    [HEAD, EVENT, BODY, STATUS, IN_STREAM, BROKEN, NAMED_EVENT, NAMED_IN_STREAM][round % 8];
            }
            assert_malformed(&bytes);
        }
    }

    #[test]
    fn corrupted_encodings_never_panic() {
        let mut noise = Noise(0xc0ff_ee00);
        for bytes in encodings() {
            for at in 0..bytes.len() {
                for _ in 0..8 {
                    let mut corrupted = bytes.clone();
                    corrupted[at] = noise.word() as u8;
                    // Any answer will do (a data byte may change into another valid one), as
                    // long as it is an answer.
                    let _ = Wire.decode_item(&corrupted);
                    let _ = Wire.decode_error(&corrupted);
                }
            }
        }
    }

    fn key() -> Key {
        Key {
            api: Api::chat(),
            tenant: Some([7; 32]),
            selectors: "api-version=1".into(),
            body: Arc::from(r#"{"model":"m","messages":[]}"#),
        }
    }

    #[test]
    fn equal_keys_give_equal_bytes() {
        let (a, b) = (key(), key());
        assert!(!Arc::ptr_eq(&a.body, &b.body));
        assert_eq!(Wire.key(&a), Wire.key(&b));
        assert_eq!(Wire.key(&a), a.identity());
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.digest().len(), 12);
    }

    #[test]
    fn keys_differing_in_one_field_give_different_bytes() {
        let with = |change: fn(&mut Key)| {
            let mut key = key();
            change(&mut key);
            key
        };
        let keys = [
            key(),
            with(|key| key.api = Api::named("completions").unwrap()),
            with(|key| key.api = Api::named("embeddings").unwrap()),
            with(|key| key.tenant = None),
            with(|key| key.tenant = Some([0; 32])),
            with(|key| key.tenant.as_mut().unwrap()[31] = 8),
            with(|key| key.selectors = "".into()),
            with(|key| key.selectors = "api-version=2".into()),
            with(|key| key.body = Arc::from("")),
            with(|key| key.body = Arc::from(r#"{"model":"n","messages":[]}"#)),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
                assert_ne!(Wire.key(a), Wire.key(b), "{a:?} and {b:?}");
                assert_ne!(a.digest(), b.digest());
            }
        }
    }

    #[test]
    fn field_boundaries_cannot_be_moved() {
        let key = |tenant: Option<[u8; 32]>, selectors: &str, body: &str| {
            Wire.key(&Key { api: Api::chat(), tenant, selectors: selectors.into(), body: Arc::from(body) })
        };
        assert_ne!(key(None, "ab", "c"), key(None, "a", "bc"));
        assert_ne!(key(None, "", "abc"), key(None, "abc", ""));
        assert_ne!(key(None, "a\0", "b"), key(None, "a", "\0b"));
        // Without a presence byte, "no tenant" could pass for a tenant of zeros.
        assert_ne!(key(None, "", ""), key(Some([0; 32]), "", ""));
        let zeros = "\0".repeat(33);
        assert_ne!(key(None, &zeros, ""), key(Some([0; 32]), "\0", ""));
    }
}
