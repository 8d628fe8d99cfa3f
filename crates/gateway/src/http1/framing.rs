//! Where a response body ends: a length, `chunked` framing (sizes read by `httparse`), or the
//! connection's close; the body's data taken out of whatever pieces its bytes arrive in.

/// The longest piece of chunked framing taken (a size line with its extensions, a trailer
/// line): a longer one is an error, so what waits for more bytes stays small.
pub(crate) const MAX_LINE: usize = 1024;

/// How a body is framed, and how far its reading is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `Content-Length`: this many bytes are still to come.
    Length(u64),
    /// `Transfer-Encoding: chunked`, at this point of it.
    Chunked(Chunk),
    /// Neither: the body ends when the connection does.
    Close,
}

/// Where chunked framing is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// A chunk's size line comes next.
    Size,
    /// This many bytes of a chunk's data.
    Data(u64),
    /// The line end after a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk: lines up to an empty one.
    Trailers,
    /// The body has ended.
    Done,
}

impl Framing {
    /// A chunked body, from its start.
    pub(crate) fn chunked() -> Framing {
        Framing::Chunked(Chunk::Size)
    }

    /// The body has ended (a connection-delimited one ends at its close, seen elsewhere).
    pub(crate) fn ended(&self) -> bool {
        matches!(self, Framing::Length(0) | Framing::Chunked(Chunk::Done))
    }

    /// At most how many bytes to read next: never past the end of a body of known length, so
    /// that the connection holds the next response's bytes only.
    pub(crate) fn wanted(&self, most: usize) -> usize {
        match *self {
            Framing::Length(left) => most.min(usize::try_from(left).unwrap_or(usize::MAX)),
            _ => most,
        }
    }

    /// Takes the body's data out of `input` into `data` and returns how many bytes of `input`
    /// it used: what is left is either the start of a piece of framing that needs more bytes,
    /// or bytes after the body's end. The error is its text.
    pub(crate) fn decode(&mut self, input: &[u8], data: &mut Vec<u8>) -> Result<usize, String> {
        match self {
            Framing::Length(left) => {
                let taken = input.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                data.extend_from_slice(&input[..taken]);
                *left -= taken as u64;
                Ok(taken)
            }
            Framing::Close => {
                data.extend_from_slice(input);
                Ok(input.len())
            }
            Framing::Chunked(chunk) => chunk.decode(input, data),
        }
    }
}

impl Chunk {
    /// [`Framing::decode`] for a chunked body.
    fn decode(&mut self, input: &[u8], data: &mut Vec<u8>) -> Result<usize, String> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match *self {
                Chunk::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        at += used;
                        *self = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
                    }
                    Ok(httparse::Status::Partial) => return waiting(at, rest, "a chunk's size line"),
                    Err(_) => return Err("a chunk's size line is not valid".to_owned()),
                },
                Chunk::Data(left) => {
                    let taken = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    if taken == 0 {
                        return Ok(at);
                    }
                    data.extend_from_slice(&rest[..taken]);
                    at += taken;
                    let left = left - taken as u64;
                    *self = if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) };
                }
                Chunk::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        at += 2;
                        *self = Chunk::Size;
                    }
                    [] | [b'\r'] => return Ok(at),
                    _ => return Err("a chunk's data is longer than its size".to_owned()),
                },
                Chunk::Trailers => match memchr::memmem::find(rest, b"\r\n") {
                    Some(0) => {
                        at += 2;
                        *self = Chunk::Done;
                    }
                    // A trailer field: not kept (the gateway forwards none).
                    Some(end) => at += end + 2,
                    None => return waiting(at, rest, "a trailer line"),
                },
                Chunk::Done => return Ok(at),
            }
        }
    }
}

/// `at`, the bytes used, while `rest`, the start of `what`, waits for more: unless it is
/// already longer than any such piece is allowed to be.
fn waiting(at: usize, rest: &[u8], what: &str) -> Result<usize, String> {
    match rest.len() > MAX_LINE {
        true => Err(format!("{what} is longer than {MAX_LINE} bytes")),
        false => Ok(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data of `body` given to `framing` in pieces cut at each of `cuts`, as `Body` does:
    /// what a piece leaves undecoded goes before the next one.
    fn decode_in_pieces(
        mut framing: Framing,
        body: &[u8],
        cuts: &[usize],
    ) -> Result<(Vec<u8>, usize), String> {
        let mut data = Vec::new();
        let mut pending = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain([&body.len()]) {
            pending.extend_from_slice(&body[from..to]);
            from = to;
            let used = framing.decode(&pending, &mut data)?;
            pending.drain(..used);
        }
        assert!(framing.ended() || framing == Framing::Close, "not ended: {framing:?}");
        Ok((data, pending.len()))
    }

    const CHUNKED: &[u8] =
        b"9\r\ndata: a\n\n\r\n1c;ext=\"x\"\r\ndata: {\"b\":\"cdefghijklmn\"}\n\n\r\n0\r\nx-t: 1\r\n\r\n";
    const DATA: &[u8] = b"data: a\n\ndata: {\"b\":\"cdefghijklmn\"}\n\n";

    #[test]
    fn chunked_data_comes_out_whole_however_the_bytes_are_cut() {
        assert_eq!(decode_in_pieces(Framing::chunked(), CHUNKED, &[]).unwrap(), (DATA.to_vec(), 0));
        // Every single cut, and every pair of cuts: inside a size line, between `\r` and `\n`,
        // inside data, inside the trailers.
        for a in 0..=CHUNKED.len() {
            for b in a..=CHUNKED.len() {
                let decoded = decode_in_pieces(Framing::chunked(), CHUNKED, &[a, b]);
                assert_eq!(decoded.unwrap(), (DATA.to_vec(), 0), "cut at {a} and {b}");
            }
        }
        // One byte at a time.
        let every: Vec<usize> = (1..CHUNKED.len()).collect();
        assert_eq!(decode_in_pieces(Framing::chunked(), CHUNKED, &every).unwrap(), (DATA.to_vec(), 0));
    }

    #[test]
    fn a_length_ends_its_body_and_leaves_what_follows() {
        for cut in 0..=6 {
            let decoded = decode_in_pieces(Framing::Length(4), b"abcdXY", &[cut]).unwrap();
            assert_eq!(decoded, (b"abcd".to_vec(), 2), "cut at {cut}");
        }
    }

    #[test]
    fn bytes_after_the_last_chunk_are_left() {
        let (data, left) = decode_in_pieces(Framing::chunked(), b"1\r\na\r\n0\r\n\r\nHTTP", &[5]).unwrap();
        assert_eq!((data.as_slice(), left), (b"a".as_slice(), 4));
    }

    #[test]
    fn bad_chunked_framing_is_an_error() {
        for body in [b"z\r\n".as_slice(), b"1\r\nab\r\n0\r\n\r\n", b"fffffffffffffffff\r\n"] {
            assert!(decode_in_pieces(Framing::chunked(), body, &[]).is_err(), "{body:?}");
        }
        // A size line still without its end past the bound: nothing waits for more of it.
        let long_line = format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(MAX_LINE));
        assert!(decode_in_pieces(Framing::chunked(), long_line.as_bytes(), &[MAX_LINE + 2]).is_err());
    }
}
