//! Numbers in canonical JSON: one text per exact decimal value, however large its digits or its
//! exponent, so that `1`, `1.0` and `10e-1` meet and no two values do.

use std::fmt::Write as _;
use std::ops::Range;
use std::string::{String, ToString};
use std::vec::Vec;

/// Writes the JSON number `text` in its canonical form. The value is `d × 10^e` with `d` its
/// significant digits (no leading or trailing zero) and `e` an exact exponent; they alone decide
/// the text: an integer in full when that is no longer than `de` form (so at most two zeros
/// appended), a fraction with its point when that is no longer than `de-n`, else `de` / `de-n`.
// Inlined as it was when it lived beside the walker: its common case is a few instructions.
#[inline]
pub(super) fn write_number(out: &mut String, text: &str) {
    // The common case, an integer without three trailing zeros, is its own canonical form.
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    if unsigned.bytes().all(|b| b.is_ascii_digit()) && !text.ends_with("000") && text != "-0" {
        out.push_str(text);
        return;
    }
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = text.split_once(['e', 'E']).unwrap_or((text, ""));
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = int.len() + frac.len();
    let digits = || int.bytes().chain(frac.bytes());
    let Some(first) = digits().position(|d| d != b'0') else {
        // Every zero is the same number, `-0` included.
        out.push('0');
        return;
    };
    let trailing = digits().rev().position(|d| d != b'0').unwrap_or(0);
    let last = all - trailing;
    let significant = (last - first) as i128;
    let push = |out: &mut String, span: Range<usize>| {
        if span.start < int.len() {
            out.push_str(&int[span.start..span.end.min(int.len())]);
        }
        if span.end > int.len() {
            out.push_str(&frac[span.start.max(int.len()) - int.len()..span.end - int.len()]);
        }
    };

    let (exponent_negative, magnitude) = match exponent.as_bytes().first() {
        Some(b'-') => (true, &exponent[1..]),
        Some(b'+') => (false, &exponent[1..]),
        _ => (false, exponent),
    };
    let magnitude = magnitude.trim_start_matches('0');
    // What dropping the point and the trailing zeros does to the exponent: small, the body's size.
    let shift = trailing as i128 - frac.len() as i128;
    let parsed = if magnitude.is_empty() { Some(0) } else { magnitude.parse::<i128>().ok() };
    let exact = parsed.and_then(|m| if exponent_negative { -m } else { m }.checked_add(shift));

    if negative {
        out.push('-');
    }
    let Some(e) = exact else {
        // An exponent beyond i128: only the `de` form fits, its exponent added to in decimal.
        push(out, first..last);
        out.push('e');
        if exponent_negative {
            out.push('-');
        }
        out.push_str(&add_to_decimal(magnitude, if exponent_negative { -shift } else { shift }));
        return;
    };
    if (0..=2).contains(&e) {
        push(out, first..last);
        out.extend(std::iter::repeat_n('0', e as usize));
    } else if e < 0 && -e < significant {
        let point = last - (-e) as usize;
        push(out, first..point);
        out.push('.');
        push(out, point..last);
    } else if e < 0 && -e <= significant + i128::from((-e).ilog10() + 1) {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-e - significant) as usize));
        push(out, first..last);
    } else {
        push(out, first..last);
        let _ = write!(out, "e{e}");
    }
}

/// `decimal + delta`, where `decimal` is the digits of a number far larger than `|delta|`.
fn add_to_decimal(decimal: &str, delta: i128) -> String {
    let mut digits: Vec<u8> = decimal.bytes().map(|d| d - b'0').collect();
    let mut carry = delta;
    for digit in digits.iter_mut().rev() {
        if carry == 0 {
            break;
        }
        let sum = i128::from(*digit) + carry;
        *digit = sum.rem_euclid(10) as u8;
        carry = sum.div_euclid(10);
    }
    let mut text = if carry > 0 { carry.to_string() } else { String::new() };
    let zeros = if text.is_empty() { digits.iter().take_while(|&&d| d == 0).count() } else { 0 };
    text.extend(digits[zeros..].iter().map(|&d| char::from(b'0' + d)));
    text
}
