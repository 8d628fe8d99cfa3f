//! The frames the gateway writes to its clients' Server-Sent Events streams. The upstream's
//! stream is read by the library's bounded decoder (`streamflight_tokio::sse`).

use bytes::{Bytes, BytesMut};

/// The frame of one event whose data is `data` (lines split into `data:` fields, as SSE needs).
pub fn frame(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 8);
    put_data(&mut out, data);
    out.freeze()
}

/// The `data:` lines of `data` and the blank line that ends the event.
fn put_data(out: &mut BytesMut, data: &[u8]) {
    // memchr finds the line ends (usually none: a JSON event is one line) a word at a time,
    // where a byte-by-byte split cost more than the rest of the frame.
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', data).chain([data.len()]) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&data[start..end]);
        out.extend_from_slice(b"\n");
        start = end + 1;
    }
    out.extend_from_slice(b"\n");
}

/// An event frame with its `id:` (the event's index in the answer), so that a client that lost
/// its connection can resume after it (`Last-Event-ID`), and its `event:` name, if it has one.
pub fn frame_with_id(id: u64, name: Option<&[u8]>, data: &[u8]) -> Bytes {
    let mut digits = itoa::Buffer::new();
    let id = digits.format(id);
    let named = name.map_or(0, |name| name.len() + 8);
    // `id: `, the id, `\n`, `data: `, the data, `\n\n`: exact for one line (a JSON event),
    // where one byte short made every frame grow and copy itself once.
    let mut out = BytesMut::with_capacity(data.len() + id.len() + named + 13);
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

    #[test]
    fn frames_split_lines() {
        assert_eq!(&frame(b"{\"a\":1}")[..], b"data: {\"a\":1}\n\n");
        assert_eq!(&frame(b"a\nb")[..], b"data: a\ndata: b\n\n");
        // Empty lines, at the start, the end, and in the middle, are data lines too.
        assert_eq!(&frame(b"")[..], b"data: \n\n");
        assert_eq!(&frame(b"\na\n\nb\n")[..], b"data: \ndata: a\ndata: \ndata: b\ndata: \n\n");
    }

    #[test]
    fn a_frame_with_an_id_names_its_event() {
        let frame = frame_with_id(3, Some(b"message_stop"), b"{}");
        assert_eq!(&frame[..], b"id: 3\nevent: message_stop\ndata: {}\n\n");
        assert_eq!(&frame_with_id(u64::MAX, None, b"x")[..], b"id: 18446744073709551615\ndata: x\n\n");
    }
}
