//! Bytes as lowercase hex digits and back: how tickets, places and cancel messages show the
//! bytes they carry.

/// `bytes` as lowercase hex digits.
pub(crate) fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The `N` bytes that `text` (2N hex digits, either case) shows, if it is that.
pub(crate) fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    decode(text)?.try_into().ok()
}

/// The bytes that `text` (an even count of hex digits, either case) shows, if it is that.
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    // Every byte is an ASCII hex digit: each pair is valid UTF-8 and a valid number.
    text.as_bytes()
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{decode, decode_array, encode};

    #[test]
    fn bytes_read_back_and_nothing_else_does() {
        assert_eq!(decode(&encode(&[0, 9, 0xab, 0xff])), Some(vec![0, 9, 0xab, 0xff]));
        assert_eq!(decode("ABcd"), Some(vec![0xab, 0xcd]));
        assert_eq!(decode_array::<2>("abcd"), Some([0xab, 0xcd]));
        for bad in ["a", "zz", "+1", "é0"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
        assert_eq!(decode_array::<2>("ab"), None);
    }
}
