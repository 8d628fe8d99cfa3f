//! What makes two completion requests identical: the endpoint, the canonical JSON of every
//! field that changes the answer, and (unless tenants share) a hash of the caller's `Authorization`.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

/// The two completion endpoints the gateway serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`: needs `messages`.
    Chat,
    /// `POST /v1/completions` (legacy text completions): needs `prompt`.
    Completions,
}

impl Endpoint {
    /// The path below the upstream's base URL (`/chat/completions`, `/completions`).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/chat/completions",
            Endpoint::Completions => "/completions",
        }
    }
}

/// Fields that shape how the answer travels, not what it says: left out of the key,
/// so a streaming and a non-streaming client of the same question share one flight.
pub const TRANSPORT_FIELDS: &[&str] = &["stream"];

/// The flight key. Compared by full equality, never by hash alone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// Which endpoint was asked.
    pub endpoint: Endpoint,
    /// SHA-256 of the caller's `Authorization` header (`None` when tenants share).
    pub tenant: Option<[u8; 32]>,
    /// The request body without its transport fields, in canonical JSON.
    pub body: Arc<str>,
}

impl Key {
    /// The key of a parsed request body. `authorization` is the raw header, if any;
    /// it is hashed unless `share_across_tenants`.
    pub fn new(
        endpoint: Endpoint,
        body: &Map<String, Value>,
        authorization: Option<&[u8]>,
        share_across_tenants: bool,
    ) -> Key {
        let tenant =
            (!share_across_tenants).then(|| Sha256::digest(authorization.unwrap_or_default()).into());
        let mut answer_fields = body.clone();
        for field in TRANSPORT_FIELDS {
            answer_fields.remove(*field);
        }
        Key { endpoint, tenant, body: canonical_json(&Value::Object(answer_fields)).into() }
    }

    /// A short, stable digest of the whole key, for logs (never for equality).
    pub fn digest(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.endpoint.path());
        hasher.update(self.tenant.unwrap_or_default());
        hasher.update(self.body.as_bytes());
        hex(&hasher.finalize()[..6])
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The canonical text of a JSON value: object keys sorted, no whitespace, and a
/// number that is a whole float within ±2^53 written as an integer (`1.0` as `1`).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (name, field)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(name.clone()).to_string());
                out.push(':');
                write_canonical(field, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Number(number) => out.push_str(&canonical_number(number)),
        other => out.push_str(&other.to_string()),
    }
}

fn canonical_number(number: &Number) -> String {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match number.as_f64() {
        Some(f) if !number.is_i64() && !number.is_u64() && f.fract() == 0.0 && f.abs() <= EXACT => {
            format!("{}", f as i64)
        }
        _ => number.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str, auth: Option<&str>, share: bool) -> Key {
        let Value::Object(body) = serde_json::from_str(text).unwrap() else { panic!("not an object") };
        Key::new(Endpoint::Chat, &body, auth.map(str::as_bytes), share)
    }

    #[test]
    fn order_whitespace_and_transport_fields_do_not_matter() {
        let a =
            key(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":1}"#, None, false);
        let b = key(
            "{ \"temperature\" : 1.0,\n \"stream\": true, \"messages\": [ {\"content\":\"hi\", \"role\":\"user\"} ],\"model\":\"m\" }",
            None,
            false,
        );
        assert_eq!(a, b);
        assert_eq!(&*a.body, r#"{"messages":[{"content":"hi","role":"user"}],"model":"m","temperature":1}"#);
    }

    #[test]
    fn what_changes_the_answer_changes_the_key() {
        let base = key(r#"{"model":"m","messages":[],"temperature":0.5}"#, None, false);
        assert_ne!(base, key(r#"{"model":"m","messages":[],"temperature":0.6}"#, None, false));
        assert_ne!(base, key(r#"{"model":"n","messages":[],"temperature":0.5}"#, None, false));
        assert_ne!(base, key(r#"{"model":"m","messages":[],"temperature":0.5,"tools":[]}"#, None, false));
        assert_ne!(base, key(r#"{"model":"m","messages":[],"temperature":0.5}"#, Some("Bearer a"), false));
    }

    #[test]
    fn tenants_are_apart_unless_told_to_share() {
        let body = r#"{"messages":[]}"#;
        assert_ne!(key(body, Some("Bearer a"), false), key(body, Some("Bearer b"), false));
        assert_eq!(key(body, Some("Bearer a"), true), key(body, Some("Bearer b"), true));
        assert_eq!(key(body, Some("Bearer a"), false), key(body, Some("Bearer a"), false));
    }

    #[test]
    fn numbers() {
        let canon = |t: &str| canonical_json(&serde_json::from_str(t).unwrap());
        assert_eq!(
            canon("[1, 1.0, -2.0, 0.25, 1e2, 18446744073709551615]"),
            "[1,1,-2,0.25,100,18446744073709551615]"
        );
        assert_eq!(canon(r#"{"a\"b":"\u00e9\n"}"#), r#"{"a\"b":"é\n"}"#);
    }
}
