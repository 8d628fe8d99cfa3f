//! Which headers cross the gateway and which are its own: hop-by-hop ones stop here, the
//! credentials name the tenant, the account/project/version selectors join the key (G4, G5).

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1): never forwarded.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers that carry a client's credentials: together they name its tenant (`crate::tenant`).
pub(crate) const CREDENTIALS: &[&str] = &["authorization", "api-key", "x-api-key"];

/// The end-to-end headers of a message: `headers` without the hop-by-hop ones (those listed
/// above, `keep-alive`, and any named by `Connection`), `host` and `content-length`.
pub(crate) fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    end_to_end_with(headers, owned)
}

/// [`end_to_end`]'s headers, each value made by `value` from the message's.
fn end_to_end_with(headers: &HeaderMap, value: fn(&HeaderValue) -> HeaderValue) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value_of) in headers {
        let dropped = HOP_BY_HOP.contains(name)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name.as_str() == "keep-alive"
            || named.iter().any(|n| n == name.as_str());
        if !dropped {
            kept.append(name.clone(), value(value_of));
        }
    }
    kept
}

/// `value` in an allocation of its own. hyper parses a head's values as slices of its read
/// buffer: a clone kept (the upstream's head for a flight's life, a client's headers until
/// they are sent upstream) would keep that whole 8 KiB buffer, and hyper would read into a
/// new one (BENCHMARKS.md, issue 26).
fn owned(value: &HeaderValue) -> HeaderValue {
    let Ok(mut copy) = HeaderValue::from_bytes(value.as_bytes()) else {
        // Not reached: the bytes are those of a valid value.
        return value.clone();
    };
    copy.set_sensitive(value.is_sensitive());
    copy
}

/// The headers sent upstream for a client's request: its end-to-end headers, with its
/// credentials replaced by `credential` (the header by which the API takes the gateway's own
/// key) when the gateway has one of its own.
pub(crate) fn upstream_request(
    headers: &HeaderMap,
    credential: Option<(HeaderName, HeaderValue)>,
) -> HeaderMap {
    let mut out = end_to_end(headers);
    if let Some((name, value)) = credential {
        for name in CREDENTIALS {
            out.remove(*name);
        }
        out.insert(name, value);
    }
    out
}

/// The headers of an upstream response as a client gets them: end to end (so never a
/// `content-length`: the body's framing is the gateway's), the upstream's `x-request-id` renamed
/// `x-upstream-request-id` (the gateway's own is `x-request-id`), and, for a shared (coalesced)
/// answer, no `set-cookie` (a cookie is one client's, never a flight's) and no `content-encoding`
/// (the gateway writes that body itself, uncompressed: a header without its bytes would lie).
pub(crate) fn downstream_response(headers: &HeaderMap, shared: bool) -> HeaderMap {
    downstream(headers, shared, owned)
}

/// [`downstream_response`]'s headers with their values shared with `headers` (not copied): for
/// a map dropped before `headers` is, as one made into the
/// [`Headers`](crate::flight::Headers) a flight keeps.
pub(crate) fn downstream_shared(headers: &HeaderMap, shared: bool) -> HeaderMap {
    downstream(headers, shared, HeaderValue::clone)
}

fn downstream(headers: &HeaderMap, shared: bool, value: fn(&HeaderValue) -> HeaderValue) -> HeaderMap {
    let mut out = end_to_end_with(headers, value);
    if let Some(id) = out.remove("x-request-id") {
        out.insert(HeaderName::from_static("x-upstream-request-id"), id);
    }
    if shared {
        out.remove(header::SET_COOKIE);
        out.remove(header::CONTENT_ENCODING);
    }
    out
}

/// The `content-encoding` of a response if it is not identity (none, empty, or `identity`).
pub(crate) fn encoded(headers: &HeaderMap) -> Option<String> {
    let named: Vec<&str> = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("?").split(','))
        .map(str::trim)
        .filter(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"))
        .collect();
    (!named.is_empty()).then(|| named.join(", "))
}

/// The `selectors` (request headers that select an account, a project or an API version, which
/// can change the answer: a dialect names them) and the query string in one canonical text,
/// for the key.
pub(crate) fn selectors(selectors: &[&str], headers: &HeaderMap, query: Option<&str>) -> String {
    let mut text = String::new();
    for name in selectors {
        for value in headers.get_all(*name) {
            text.push_str(name);
            text.push(':');
            text.push_str(&String::from_utf8_lossy(value.as_bytes()));
            text.push('\n');
        }
    }
    if let Some(query) = query {
        text.push('?');
        text.push_str(query);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| (HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    #[test]
    fn hop_by_hop_headers_stop_here() {
        let headers = map(&[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("host", "gateway"),
            ("content-length", "12"),
            ("user-agent", "OpenAI/Python"),
            ("traceparent", "00-1-2-01"),
        ]);
        let kept = end_to_end(&headers);
        let names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["user-agent", "traceparent"]);
    }

    #[test]
    fn kept_values_do_not_hold_the_buffer_they_were_parsed_from() {
        // As hyper parses a head: each value a slice of one read buffer.
        let buffer = bytes::Bytes::from(b"Bearer client; OpenAI/Python".to_vec());
        let span = buffer.as_ptr_range();
        let mut headers = HeaderMap::new();
        let mut key = HeaderValue::from_maybe_shared(buffer.slice(..13)).unwrap();
        key.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, key);
        headers.insert(header::USER_AGENT, HeaderValue::from_maybe_shared(buffer.slice(15..)).unwrap());
        let kept = end_to_end(&headers);
        for (name, value) in &kept {
            assert_eq!(value, headers.get(name).unwrap());
            assert!(!span.contains(&value.as_bytes().as_ptr()), "{name} still points into the buffer");
        }
        assert!(kept.get(header::AUTHORIZATION).unwrap().is_sensitive(), "a credential stays sensitive");
        assert!(!kept.get(header::USER_AGENT).unwrap().is_sensitive());
    }

    #[test]
    fn the_gateways_key_replaces_every_client_credential() {
        let headers =
            map(&[("authorization", "Bearer client"), ("api-key", "azure"), ("openai-project", "p")]);
        let ours = (header::AUTHORIZATION, HeaderValue::from_static("Bearer gateway"));
        let out = upstream_request(&headers, Some(ours));
        assert_eq!(out.get("authorization").unwrap(), "Bearer gateway");
        assert!(out.get("api-key").is_none());
        assert_eq!(out.get("openai-project").unwrap(), "p");
        assert_eq!(upstream_request(&headers, None).get("authorization").unwrap(), "Bearer client");
    }

    #[test]
    fn selectors_select() {
        let org = map(&[("openai-organization", "org-1")]);
        let openai = ["openai-organization", "openai-project", "openai-beta"];
        assert_ne!(selectors(&openai, &org, None), selectors(&openai, &HeaderMap::new(), None));
        assert_ne!(
            selectors(&openai, &org, Some("api-version=1")),
            selectors(&openai, &org, Some("api-version=2"))
        );
        let beta = map(&[("anthropic-beta", "tools-1")]);
        let anthropic = ["anthropic-version", "anthropic-beta"];
        assert_ne!(selectors(&anthropic, &beta, None), selectors(&anthropic, &HeaderMap::new(), None));
        assert_eq!(selectors(&openai, &beta, None), "", "another API's selectors are not this one's");
    }

    #[test]
    fn upstream_ids_are_renamed_and_cookies_never_shared() {
        let headers = map(&[("x-request-id", "up-1"), ("set-cookie", "a=b"), ("retry-after", "3")]);
        let out = downstream_response(&headers, true);
        assert_eq!(out.get("x-upstream-request-id").unwrap(), "up-1");
        assert!(out.get("x-request-id").is_none() && out.get("set-cookie").is_none());
        assert_eq!(out.get("retry-after").unwrap(), "3");
        assert!(downstream_response(&headers, false).get("set-cookie").is_some());
    }

    #[test]
    fn an_encoding_stays_with_its_bytes_only() {
        let headers = map(&[("content-encoding", "gzip"), ("content-length", "12"), ("content-type", "x/y")]);
        let shared = downstream_response(&headers, true);
        assert!(shared.get("content-encoding").is_none() && shared.get("content-length").is_none());
        assert_eq!(shared.get("content-type").unwrap(), "x/y");
        // Passed through, the body is the upstream's bytes: their encoding goes with them.
        let passed = downstream_response(&headers, false);
        assert_eq!(passed.get("content-encoding").unwrap(), "gzip");
        assert!(passed.get("content-length").is_none(), "the framing is the gateway's");

        assert_eq!(encoded(&headers).as_deref(), Some("gzip"));
        assert_eq!(encoded(&map(&[("content-encoding", "identity")])), None);
        assert_eq!(encoded(&map(&[("content-encoding", "")])), None);
        assert_eq!(encoded(&HeaderMap::new()), None);
        assert_eq!(encoded(&map(&[("content-encoding", "Identity, br")])).as_deref(), Some("br"));
        let twice = map(&[("content-encoding", "gzip"), ("content-encoding", "br")]);
        assert_eq!(encoded(&twice).as_deref(), Some("gzip, br"));
    }
}
