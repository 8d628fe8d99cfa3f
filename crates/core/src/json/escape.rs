//! A JSON string's escaping, as serde_json escapes: `"`, `\` and the control characters, the
//! usual ones by their short escape; shared by the canonical key and anyone writing JSON text.

use core::fmt;

/// The bytes a JSON string cannot hold as they are (RFC 8259, section 7).
static SPECIAL: [bool; 256] = {
    let mut special = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        special[byte] = true;
        byte += 1;
    }
    special[b'"' as usize] = true;
    special[b'\\' as usize] = true;
    special
};

/// Writes `text` escaped for the inside of a JSON string (no quotes around it), as serde_json
/// escapes it: `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`, any other control character as
/// `\u00XX`; runs of anything else go through in one piece.
///
/// ```
/// let mut out = String::new();
/// streamflight_core::json::escape_str(&mut out, "say \"hi\"\n").unwrap();
/// assert_eq!(out, r#"say \"hi\"\n"#);
/// ```
pub fn escape_str<W: fmt::Write + ?Sized>(out: &mut W, text: &str) -> fmt::Result {
    let mut plain = 0;
    for (at, byte) in text.bytes().enumerate() {
        // One load a byte: most text has nothing to escape.
        if !SPECIAL[usize::from(byte)] {
            continue;
        }
        out.write_str(&text[plain..at])?;
        match byte {
            b'"' => out.write_str("\\\"")?,
            b'\\' => out.write_str("\\\\")?,
            b'\n' => out.write_str("\\n")?,
            b'\r' => out.write_str("\\r")?,
            b'\t' => out.write_str("\\t")?,
            0x08 => out.write_str("\\b")?,
            0x0c => out.write_str("\\f")?,
            _ => write!(out, "\\u{byte:04x}")?,
        }
        plain = at + 1;
    }
    out.write_str(&text[plain..])
}

#[cfg(test)]
mod tests {
    use std::string::String;

    #[test]
    fn escapes_as_serde_json_does() {
        let every: String = (0u8..0x80).map(char::from).chain("é\u{2028}".chars()).collect();
        let mut out = String::from("\"");
        super::escape_str(&mut out, &every).unwrap();
        out.push('"');
        assert_eq!(out, serde_json::to_string(&every).unwrap());
    }
}
