//! The canonical text's promises: equal values written alike, different ones never, every
//! duplicate member refused with its path, any input an error rather than a panic.

use std::format;
use std::ops::Range;
use std::string::{String, ToString};
use std::vec::Vec;

use serde_json::Value;

use super::walker::SHOWN_KEY_CHARS;
use super::*;

fn canon(text: &str) -> String {
    canonical_json(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}")).into_string()
}

/// Leaves the top-level members it names out of the key, and notes every member's span.
struct Omit<'a>(&'a [&'a str], Vec<(String, Range<usize>)>);

impl Members for Omit<'_> {
    fn omit(&mut self, name: &str) -> bool {
        self.0.contains(&name)
    }

    fn member(&mut self, name: &str, value: Range<usize>) {
        self.1.push((name.to_owned(), value));
    }
}

#[test]
fn equal_numbers_are_written_alike() {
    for one in ["1", "1.0", "1e0", "1E0", "1e+0", "1e-0", "10e-1", "0.10e1", "100e-2", "0.001e3", "1.000"] {
        assert_eq!(canon(one), "1", "{one}");
    }
    for zero in ["0", "-0", "0.0", "-0.0e5", "0e-7", "0E+99999999999999999999999999999999999999999"] {
        assert_eq!(canon(zero), "0", "{zero}");
    }
    let cases = [
        ("-2.0", "-2"),
        ("10", "10"),
        ("-100", "-100"),
        ("-10000", "-1e4"),
        ("7", "7"),
        ("100", "100"),
        ("1e2", "100"),
        ("1000", "1e3"),
        ("1E+003", "1e3"),
        ("0.25", "0.25"),
        ("25e-2", "0.25"),
        ("1.5", "1.5"),
        ("0.05", "0.05"),
        ("0.001", "1e-3"),
        ("-12.50e-1", "-1.25"),
        ("1e400", "1e400"),
        ("123.456e-400", "123456e-403"),
        ("18446744073709551615", "18446744073709551615"),
        ("-9223372036854775809", "-9223372036854775809"),
    ];
    for (number, canonical) in cases {
        assert_eq!(canon(number), canonical, "{number}");
    }
}

#[test]
fn big_numbers_keep_every_digit() {
    let a = canon(r#"{"seed":123456789012345678901234567890}"#);
    let b = canon(r#"{"seed":123456789012345678901234567891}"#);
    assert_eq!(a, r#"{"seed":123456789012345678901234567890}"#);
    assert_eq!(b, r#"{"seed":123456789012345678901234567891}"#);
    assert_ne!(canon("0.30000000000000000000000000001"), canon("0.3"));
    assert_ne!(canon("9007199254740993"), canon("9007199254740992"));
    assert_eq!(canon("123456789012345678901234567890e-29"), canon("1.23456789012345678901234567890"));
}

#[test]
fn exponents_beyond_i128_are_exact() {
    let huge = "1".to_owned() + &"0".repeat(45);
    let huge_and_one = "1".to_owned() + &"0".repeat(44) + "1";
    let less = "9".repeat(45);
    let e = |mantissa: &str, exponent: &str| canon(&format!("{mantissa}e{exponent}"));
    assert_eq!(e("1", &huge), format!("1e{huge}"));
    assert_eq!(e("10", &less), format!("1e{huge}"));
    assert_eq!(e("0.1", &huge_and_one), format!("1e{huge}"));
    assert_eq!(e("100", &format!("-{huge}")), format!("1e-{}", "9".repeat(44) + "8"));
    assert_eq!(e("0.01", &format!("+{huge}")), format!("1e{}", "9".repeat(44) + "8"));
    assert_ne!(e("1", &huge), e("1", &less));
    assert_eq!(e("-1.0", &format!("000{huge}")), format!("-1e{huge}"));
}

/// Numbers of up to 15 significant digits are exact in f64: there the canonical texts must be
/// equal exactly when the values are, and must be worth the same.
#[test]
fn canonical_numbers_agree_with_f64_where_it_is_exact() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let mut seen: Vec<(f64, String)> = Vec::new();
    for _ in 0..3000 {
        let digits: String = (0..=next(6)).map(|_| char::from(b'0' + next(10) as u8)).collect();
        let digits = digits.trim_start_matches('0');
        let digits = if digits.is_empty() { "0" } else { digits };
        let point = next(digits.len() as u64 + 1) as usize;
        let mut text = if point == digits.len() && digits != "0" {
            // Trailing zeros: the short integers and the `de` form must meet.
            digits.to_owned() + &"0".repeat(next(5) as usize)
        } else if point == digits.len() {
            digits.to_owned()
        } else {
            let (int, frac) = digits.split_at(point);
            format!("{}.{frac}{}", if int.is_empty() { "0" } else { int }, "0".repeat(next(3) as usize))
        };
        if next(2) == 0 {
            text = format!("{text}e{}", next(13) as i64 - 6);
        }
        if next(4) == 0 {
            text.insert(0, '-');
        }
        let value: f64 = text.parse().unwrap();
        let canonical = canon(&text);
        assert_eq!(canonical.parse::<f64>().unwrap(), value, "{text} -> {canonical}");
        assert_eq!(canon(&canonical), canonical, "{text}: not idempotent");
        for (other, other_canonical) in &seen {
            assert_eq!(*other == value, *other_canonical == canonical, "{text} against {other_canonical}");
        }
        if seen.len() < 300 {
            seen.push((value, canonical));
        }
    }
}

#[test]
fn keys_are_sorted_by_their_unescaped_text() {
    assert_eq!(canon(r#"{"b":1,"\u0061a":2,"a":3}"#), r#"{"a":3,"aa":2,"b":1}"#);
    // `"` (0x22) sorts between `!` and `#` though its escape begins with `\` (0x5c).
    assert_eq!(canon(r##"{"#":3,"\"":2,"!":1,"\n":0}"##), r##"{"\n":0,"!":1,"\"":2,"#":3}"##);
    assert_eq!(canon(r#"{"b":{"y":1,"x":2},"a":[3,{"d":4,"c":5}]}"#), {
        r#"{"a":[3,{"c":5,"d":4}],"b":{"x":2,"y":1}}"#
    });
    assert_eq!(canon(r#"{"é":1,"z":2}"#), r#"{"z":2,"é":1}"#);
    assert_eq!(canon("{}"), "{}");
    assert_eq!(canon(r#"{"a":{}}"#), r#"{"a":{}}"#);
}

/// The path a refused body names, or a panic if it was not refused for a duplicate.
/// The path a refused object names, or a panic if it was not refused for a duplicate.
fn duplicate(text: &str, omitted: &[&str]) -> String {
    match canonical_object(text.as_bytes(), &mut Omit(omitted, Vec::new())) {
        Err(KeyError::DuplicateMember(path)) => path,
        other => panic!("{text}: {other:?}"),
    }
}

#[test]
fn a_member_named_twice_is_refused_at_any_depth_with_its_path() {
    let cases = [
        (r#"{"a":1,"a":2}"#, "a"),
        (r#"{"model":"m","messages":[{"role":"user","content":"A"}],"messages":[]}"#, "messages"),
        // Unescaped alike, so one name whatever its escapes.
        (r#"{"a":1,"\u0061":2}"#, "a"),
        (r#"{"é":1,"z":2,"\u00e9":3}"#, r#"["é"]"#),
        (r#"{"messages":[{"role":"user","content":"x"},{"role":"a","content":"y","role":"b"}]}"#, {
            "messages[1].role"
        }),
        (r#"{"tools":[[{"f":{"x":1,"y":{"q":1,"q":1}}}]]}"#, "tools[0][0].f.y.q"),
        (r#"{"a b":{"\n":1,"\n":2}}"#, r#"["a b"]["\n"]"#),
        (r#"{"stream":true,"\u0073tream":false}"#, "stream"),
        (r#"{"stream_options":{},"n":1,"stream_options":null}"#, "stream_options"),
        (r#"{"stream_options":{"include_usage":true,"include_usage":null}}"#, "stream_options.include_usage"),
        (r#"{"stream_options":{"x":{"y":1,"y":1}}}"#, "stream_options.x.y"),
    ];
    for (text, path) in cases {
        assert_eq!(duplicate(text, &["stream", "stream_options"]), path, "{text}");
    }
    // Left out of the key or not, a name twice is refused.
    assert_eq!(duplicate(r#"{"stream_options":{},"stream_options":{}}"#, &["stream"]), "stream_options");
    assert_eq!(duplicate(r#"{"input":["a"],"input":["b"]}"#, &[]), "input");
    let long = "k".repeat(1000);
    let path = duplicate(&format!(r#"{{"{long}":1,"{long}":2}}"#), &[]);
    assert_eq!(path, "k".repeat(SHOWN_KEY_CHARS) + "…");
    let error = canonical_json(br#"[{"a":1,"a":1}]"#).unwrap_err();
    assert_eq!(error, KeyError::DuplicateMember("[0].a".to_owned()));
    assert_eq!(error.to_string(), "the member `[0].a` is named twice");
    // Equal values or not, in order or not: a name twice is refused; distinct names are not.
    assert!(canonical_json(br#"{"b":1,"a":1,"ab":1,"a\u0000":1}"#).is_ok());
}

#[test]
fn whitespace_and_escapes_do_not_matter() {
    let a = canon(
        " {\"messages\" : [ {\"role\":\"user\", \"content\":\"h\\u00e9\\/\\t\\u0001\\ud83d\\ude00\"} ],\n\t\"n\":1.0 } ",
    );
    let b = canon(r#"{"n":1,"messages":[{"content":"hé/\t\u0001😀","role":"user"}]}"#);
    assert_eq!(a, b);
    assert_eq!(a, r#"{"messages":[{"content":"hé/\t\u0001😀","role":"user"}],"n":1}"#);
    assert_eq!(canon(r#"["\"\\\b\f\n\r\u001F\u007f"]"#), "[\"\\\"\\\\\\b\\f\\n\\r\\u001f\u{7f}\"]");
    assert_eq!(canon(" [ true , false , null , [ ] ] "), "[true,false,null,[]]");
}

#[test]
fn canonical_text_is_json_of_the_same_value() {
    let text = r#"{"z":[1.50,{"b":"x\"y","a":null}],"a":-0.0,"m":1E+2}"#;
    let canonical = canon(text);
    let again: Value = serde_json::from_str(&canonical).unwrap();
    assert_eq!(
        again,
        serde_json::from_str::<Value>(r#"{"a":0,"m":100,"z":[1.5,{"a":null,"b":"x\"y"}]}"#).unwrap()
    );
    assert_eq!(canon(&canonical), canonical);
}

#[test]
fn not_json_is_refused() {
    for bad in
        ["", "{", "{\"a\":}", "[1,]", "{} {}", "01", "1.", "\"\\ud800\"", "\"\u{1}\"", "nul", "{\"a\" 1}"]
    {
        assert!(canonical_json(bad.as_bytes()).is_err(), "{bad:?}");
        assert!(matches!(canonical_object(bad.as_bytes(), &mut ()), Err(KeyError::NotJson(_))), "{bad:?}");
    }
    assert!(canonical_json(b"\"\xff\"").is_err());
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let nested = |depth: usize| "[".repeat(depth) + &"]".repeat(depth);
    assert_eq!(canon(&nested(127)), nested(127));
    assert!(canonical_json(nested(128).as_bytes()).unwrap_err().to_string().contains("recursion limit"));
    assert!(canonical_json(nested(1_000_000).as_bytes()).is_err());
    let deep_object = r#"{"a":"#.repeat(100_000) + "1" + &"}".repeat(100_000);
    let body = format!(r#"{{"stream":true,"x":{deep_object}}}"#);
    let refused = canonical_object(body.as_bytes(), &mut Omit(&["stream"], Vec::new()));
    assert!(matches!(refused, Err(KeyError::NotJson(m)) if m.contains("recursion")));
}

#[test]
fn members_are_told_in_order_with_their_text_left_out_or_not() {
    let body = r#" { "stream" : true, "model":"m", "n" : [1, 2] } "#;
    let mut omit = Omit(&["stream"], Vec::new());
    let key = canonical_object(body.as_bytes(), &mut omit).unwrap();
    assert_eq!(key.as_str(), r#"{"model":"m","n":[1,2]}"#);
    let seen: Vec<(&str, &str)> =
        omit.1.iter().map(|(name, span)| (name.as_str(), &body[span.clone()])).collect();
    assert_eq!(seen, [("stream", "true"), ("model", r#""m""#), ("n", "[1, 2]")]);
    assert_eq!(canonical_object(b"[]", &mut ()), Err(KeyError::NotAnObject));
    assert_eq!(canonical_object(b" \"text\" ", &mut ()), Err(KeyError::NotAnObject));
    assert!(matches!(canonical_object(b"{", &mut ()), Err(KeyError::NotJson(_))));
    assert_eq!(canonical_object(b"{}", &mut ()).unwrap().as_str(), "{}");
}

/// Tells `outer` of the top level, and `inner` of the members of `options`.
struct Nested<'a> {
    outer: Omit<'a>,
    inner: Omit<'a>,
}

impl Members for Nested<'_> {
    fn omit(&mut self, name: &str) -> bool {
        self.outer.omit(name)
    }

    fn member(&mut self, name: &str, value: Range<usize>) {
        self.outer.member(name, value);
    }

    fn members_of(&mut self, name: &str) -> Option<&mut dyn Members> {
        (name == "options").then_some(&mut self.inner as &mut dyn Members)
    }
}

#[test]
fn the_members_of_an_object_asked_for_are_told_in_the_same_walk() {
    let body = r#"{"options": {"b": 1, "x": {"y": 2}, "a" : "z"}, "n": 1}"#;
    let mut told = Nested { outer: Omit(&["options"], Vec::new()), inner: Omit(&["b"], Vec::new()) };
    let key = canonical_object(body.as_bytes(), &mut told).unwrap();
    assert_eq!(key.as_str(), r#"{"n":1}"#);
    let inner: Vec<(&str, &str)> =
        told.inner.1.iter().map(|(name, span)| (name.as_str(), &body[span.clone()])).collect();
    assert_eq!(inner, [("b", "1"), ("x", r#"{"y": 2}"#), ("a", r#""z""#)], "ranges of the whole body");
    // Kept, the asked-for object is in the key without what its members left out.
    let mut told = Nested { outer: Omit(&[], Vec::new()), inner: Omit(&["b"], Vec::new()) };
    let key = canonical_object(body.as_bytes(), &mut told).unwrap();
    assert_eq!(key.as_str(), r#"{"n":1,"options":{"a":"z","x":{"y":2}}}"#);
    // Not an object: walked as any value, nobody told.
    let mut told = Nested { outer: Omit(&[], Vec::new()), inner: Omit(&[], Vec::new()) };
    assert_eq!(canonical_object(br#"{"options":[1]}"#, &mut told).unwrap().as_str(), r#"{"options":[1]}"#);
    assert!(told.inner.1.is_empty());
    let mut told = Nested { outer: Omit(&[], Vec::new()), inner: Omit(&[], Vec::new()) };
    let twice = canonical_object(br#"{"options":{"q":1,"q":2}}"#, &mut told);
    assert_eq!(twice, Err(KeyError::DuplicateMember("options.q".to_owned())));
}

#[test]
fn large_bodies_stay_linear() {
    let numbers = (0..200_000).map(|i| (i % 10).to_string()).collect::<Vec<_>>().join(",");
    let text = format!(r#"{{"input":[{numbers}],"model":"e"}}"#);
    assert_eq!(canon(&text).len(), text.len());
    let members = (0..50_000).rev().map(|i| format!(r#""k{i:05}":{i}"#)).collect::<Vec<_>>().join(",");
    let canonical = canon(&format!("{{{members}}}"));
    assert!(canonical.starts_with(r#"{"k00000":0,"k00001":1,"#));
}
