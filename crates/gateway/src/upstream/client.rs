//! The upstream's address and the HTTP client that reaches it.
//!
//! Two of the gateway's rules (`DESIGN.md`) are kept here. G6: a URL's credentials never
//! reach a log line or a response ([`UpstreamUrl`] refuses them, [`describe`] strips any
//! from an error's text), and no redirect is followed. G9: `TCP_NODELAY`, pooled
//! connections and HTTP/2 where the upstream offers it.
//!
//! TLS is rustls with the `ring` provider: no OpenSSL and no aws-lc, so the binary builds
//! without a C toolchain for them and links nothing from the system.

use std::ffi::OsStr;
use std::fmt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// How an upstream URL is written, for the messages that refuse one.
const EXAMPLE: &str = "as in https://api.openai.com/v1";

/// How long an unused pooled upstream connection is kept: long enough to carry a steady
/// trickle of requests, short enough to be dropped before most servers drop it themselves.
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The upstream's base URL (`/v1` included), checked at start.
///
/// It holds no user name, password, query or fragment, and its path has no trailing `/`.
/// Its `Debug` and `Display` forms are [`UpstreamUrl::redacted`].
#[derive(Clone)]
pub struct UpstreamUrl {
    /// Scheme, host, port and the base path.
    url: Url,
}

impl UpstreamUrl {
    /// Parses an absolute `http://` or `https://` URL with a host and a path (the API's base,
    /// `/v1` for most); no query, no fragment; a trailing `/` is dropped. Errors are one line saying why (clap shows them; the
    /// binary exits 2).
    ///
    /// A user name or password (`https://user:pass@host/v1`) is refused: the gateway owns
    /// the upstream's `Authorization` header (`--upstream-api-key`, or the leading client's
    /// own), so a URL credential would either be silently overridden or override it. No
    /// message quotes the refused text.
    pub fn parse(text: &str) -> Result<UpstreamUrl, String> {
        let text = text.trim();
        // Checked on the text itself: the `url` crate reads `localhost:8000/v1` as the
        // scheme `localhost`, and `http:host` or `http:///host` as `http://host/`.
        let Some(authority) = ["http://", "https://"].iter().find_map(|scheme| {
            let head = text.get(..scheme.len())?;
            head.eq_ignore_ascii_case(scheme).then(|| &text[scheme.len()..])
        }) else {
            return Err(format!("the upstream URL must start with http:// or https://, {EXAMPLE}"));
        };
        if authority.is_empty() || authority.starts_with(['/', '\\', '?', '#']) {
            return Err(format!("the upstream URL has no host, {EXAMPLE}"));
        }
        let mut url = Url::parse(text).map_err(|e| format!("the upstream URL is not valid: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("the upstream URL must not carry a user name or password: \
                        give the upstream's key with --upstream-api-key"
                .to_owned());
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("the upstream URL has no host, {EXAMPLE}"));
        }
        if url.query().is_some() {
            return Err("the upstream URL must not have a query (`?...`): \
                        a client's query string is passed on as it is"
                .to_owned());
        }
        if url.fragment().is_some() {
            return Err("the upstream URL must not have a fragment (`#...`)".to_owned());
        }
        let path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&path);
        if path.is_empty() {
            // Every API path is joined below the base (`/chat/completions`): without its version
            // every request would get the upstream's 404. Quoted: no credential gets this far.
            let base = url.as_str().trim_end_matches('/');
            return Err(format!(
                "the upstream URL `{base}` has no path: give the base URL with its version, like {base}/v1"
            ));
        }
        Ok(UpstreamUrl { url })
    }

    /// The URL for `path` (which starts with `/`) and an optional raw query below the base:
    /// base `https://h/v1` + `/chat/completions` + `Some("api-version=2024-06-01")` is
    /// `https://h/v1/chat/completions?api-version=2024-06-01`. An empty query is dropped.
    pub fn join(&self, path: &str, query: Option<&str>) -> Url {
        let mut url = self.url.clone();
        url.set_path(&self.below(path));
        url.set_query(query.filter(|query| !query.is_empty()));
        url
    }

    /// What [`UpstreamUrl::join`] names below the origin, as a request line's target:
    /// `/v1/chat/completions?api-version=2024-06-01`, with no URL parsed.
    pub(crate) fn path_and_query(&self, path: &str, query: Option<&str>) -> String {
        let query = query.filter(|query| !query.is_empty());
        let base = self.url.path().trim_end_matches('/');
        // Pushed, not formatted: this is every request's (a `format!` was 1k instructions).
        let mut target = String::with_capacity(base.len() + 2 + path.len() + query.map_or(0, str::len));
        target.push_str(base);
        if !path.starts_with('/') {
            target.push('/');
        }
        target.push_str(path);
        if let Some(query) = query {
            target.push('?');
            target.push_str(query);
        }
        target
    }

    /// `path` below the base's path.
    fn below(&self, path: &str) -> String {
        self.path_and_query(path, None)
    }

    /// For a plain `http://` URL: the host to connect to (an IPv6 address without its
    /// brackets), the port, and the `Host` header's value (the host and any port the URL names).
    pub(crate) fn plain_http(&self) -> Option<(&str, u16, String)> {
        if self.url.scheme() != "http" {
            return None;
        }
        let shown = self.url.host_str()?;
        let host = shown.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(shown);
        let authority = match self.url.port() {
            Some(port) => format!("{shown}:{port}"),
            None => shown.to_owned(),
        };
        Some((host, self.url.port_or_known_default()?, authority))
    }

    /// The URL's origin (scheme://host:port) plus `path_and_query` as sent by a client (for
    /// passthrough of paths outside `/v1`). An empty query is dropped.
    pub fn origin_join(&self, path_and_query: &str) -> Url {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let mut url = self.url.clone();
        if path.starts_with('/') {
            url.set_path(path);
        } else {
            url.set_path(&format!("/{path}"));
        }
        url.set_query(query.filter(|query| !query.is_empty()));
        url
    }

    /// The base with any userinfo removed: the only form that may appear in a log or a
    /// response.
    pub fn redacted(&self) -> String {
        // `parse` refuses credentials, so this removes nothing today; it is here so that
        // the rule holds by construction, whatever `parse` comes to accept.
        let mut url = self.url.clone();
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let text = url.as_str();
        // A base at the root serialises as `https://h/`; every other path has no trailing `/`.
        text.strip_suffix('/').unwrap_or(text).to_owned()
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UpstreamUrl").field(&self.redacted()).finish()
    }
}

/// Parses `--upstream` with [`UpstreamUrl::parse`]; it is what clap uses for a field of
/// type `UpstreamUrl` (through `ValueParserFactory`).
///
/// Clap's own message for a rejected value quotes it, password included; this one quotes
/// it only when it holds no `@`.
#[derive(Clone, Copy, Debug, Default)]
pub struct UpstreamUrlParser;

impl clap::builder::TypedValueParser for UpstreamUrlParser {
    type Value = UpstreamUrl;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<UpstreamUrl, clap::Error> {
        let arg = arg.map_or_else(|| "--upstream".to_owned(), ToString::to_string);
        let message = match value.to_str() {
            Some(text) => match UpstreamUrl::parse(text) {
                Ok(url) => return Ok(url),
                Err(reason) if text.contains('@') => format!("invalid value for '{arg}': {reason}"),
                Err(reason) => format!("invalid value '{text}' for '{arg}': {reason}"),
            },
            None => format!("invalid value for '{arg}': the upstream URL is not valid UTF-8"),
        };
        Err(clap::Error::raw(clap::error::ErrorKind::ValueValidation, message).format(&mut cmd.clone()))
    }
}

impl clap::builder::ValueParserFactory for UpstreamUrl {
    type Parser = UpstreamUrlParser;

    fn value_parser() -> UpstreamUrlParser {
        UpstreamUrlParser
    }
}

/// What the client needs.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Time allowed to open a connection (TCP and TLS handshakes).
    pub connect_timeout: Duration,
    /// A PEM file of certificates trusted as roots besides the system's and webpki's
    /// (`--upstream-ca`), for an upstream behind a private CA.
    pub ca_file: Option<PathBuf>,
    /// Speak HTTP/2 without negotiating it (`--upstream-http2`): the only way to reach a
    /// plain `http://` upstream over HTTP/2 (h2c). Without it, HTTP/2 is used where TLS
    /// negotiates it.
    pub http2: bool,
}

/// The upstream HTTP client: one, built as [`clients`] builds each.
///
/// Errors (an unreadable CA file, one without a certificate) are one line for the operator.
pub fn build(options: &ClientOptions) -> Result<reqwest::Client, String> {
    clients(options)?()
}

/// A maker of upstream HTTP clients, each with its own connection pool, for the upstream's
/// lanes (`upstream::lanes`). The trusted roots are read, and the proxies named, once.
///
/// - TLS: rustls with the `ring` provider; trusted roots are the system's
///   (rustls-native-certs), webpki-roots (so a container without a CA bundle still reaches
///   public providers) and the certificates of `options.ca_file`. ALPN offers h2, then
///   http/1.1.
/// - No redirect is followed: a 3xx reaches the client as it is, and no credential goes to
///   another origin (G6).
/// - `TCP_NODELAY` (G9), `options.connect_timeout`, idle pooled connections dropped after 90 s.
/// - Proxies: the environment's `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`
///   (either case) are honoured, as curl and the OpenAI Python SDK do, because an egress-filtered
///   network reaches a hosted provider only through one; a TLS upstream stays end-to-end
///   encrypted through the proxy's CONNECT tunnel. reqwest's `system-proxy` feature is not
///   enabled: it adds only the macOS and Windows system settings, not a server's.
///
/// Errors (an unreadable CA file, one without a certificate) are one line for the operator.
pub fn clients(
    options: &ClientOptions,
) -> Result<impl Fn() -> Result<reqwest::Client, String> + Send + Sync + 'static, String> {
    let roots = roots(options.ca_file.as_deref())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS for the upstream: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // reqwest leaves a preconfigured config's ALPN as it is, and speaks HTTP/2 when h2 is
    // negotiated.
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let proxies = proxy_variables();
    if !proxies.is_empty() {
        // Names only: a proxy URL may hold a password.
        tracing::info!(variables = ?proxies, "upstream requests go through the proxy the environment names");
    }
    let options = options.clone();
    Ok(move || {
        let builder = reqwest::Client::builder()
            // The `Any` must be reqwest's own `rustls::ClientConfig`; another rustls version
            // would make `build` fail, which the tests catch.
            .tls_backend_preconfigured(tls.clone())
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .connect_timeout(options.connect_timeout)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT);
        let builder = if options.http2 { builder.http2_prior_knowledge() } else { builder };
        builder.build().map_err(|e| format!("cannot build the upstream HTTP client: {}", describe(&e)))
    })
}

/// The proxy variables the environment sets (not empty), by name.
pub(crate) fn proxy_variables() -> Vec<&'static str> {
    ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
        .into_iter()
        .filter(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
        .collect()
}

/// The roots a server certificate may chain to.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    // A missing or partly unreadable system store is not fatal: webpki-roots follow.
    let native = rustls_native_certs::load_native_certs();
    let (system, unusable) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(system, unusable, errors = native.errors.len(), "upstream TLS: system roots loaded");
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let shown = path.display();
        let unreadable = |e: rustls_pki_types::pem::Error| format!("cannot read the CA file {shown}: {e}");
        let mut count = 0_usize;
        for certificate in CertificateDer::pem_file_iter(path).map_err(unreadable)? {
            count += 1;
            roots
                .add(certificate.map_err(unreadable)?)
                .map_err(|e| format!("certificate {count} of the CA file {shown} is not usable: {e}"))?;
        }
        if count == 0 {
            return Err(format!(
                "the CA file {shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
            ));
        }
    }
    Ok(roots)
}

/// `error` and its sources joined, with any userinfo of any URL in it removed.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let line = cause.to_string();
        // Some errors repeat their source's text in their own.
        if !line.is_empty() && !text.ends_with(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    strip_userinfo(&text)
}

/// `text` with the `user:password@` of every `scheme://` authority in it removed.
///
/// An authority ends at the first `/`, `?`, `#` or whitespace (a serialised http(s) URL
/// always has a `/` after it); its userinfo is everything up to its last `@`, since a
/// serialised password has its own `@` percent-encoded. On text that is not a URL this
/// may drop more than a password, never less.
fn strip_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end =
            tail.find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace()).unwrap_or(tail.len());
        let (authority, after) = tail.split_at(end);
        out.push_str(authority.rfind('@').map_or(authority, |at| &authority[at + 1..]));
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn url(text: &str) -> UpstreamUrl {
        UpstreamUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn refused(text: &str) -> String {
        match UpstreamUrl::parse(text) {
            Ok(url) => panic!("{text} was accepted as {url}"),
            Err(reason) => {
                assert!(!reason.contains('\n'), "{reason:?} is not one line");
                reason
            }
        }
    }

    #[test]
    fn parse_accepts_http_and_https_and_drops_a_trailing_slash() {
        assert_eq!(url("https://api.openai.com/v1").redacted(), "https://api.openai.com/v1");
        assert_eq!(url("https://api.openai.com/v1/").redacted(), "https://api.openai.com/v1");
        assert_eq!(url("http://127.0.0.1:8000/v1//").redacted(), "http://127.0.0.1:8000/v1");
        assert_eq!(url("HTTP://LocalHost:8000/v1").redacted(), "http://localhost:8000/v1");
        assert_eq!(url("http://[::1]:8000/v1").redacted(), "http://[::1]:8000/v1");
        assert_eq!(url("  http://h:11434/v1\n").redacted(), "http://h:11434/v1");
    }

    #[test]
    fn parse_refuses_what_is_not_an_absolute_http_url() {
        for text in
            ["localhost:8000/v1", "127.0.0.1:8000/v1", "api.openai.com/v1", "ftp://h/v1", "http:h/v1", ""]
        {
            assert!(refused(text).contains("http:// or https://"), "{text}");
        }
        for text in ["http:///v1", "https://", "http://?x", "https://:443/v1"] {
            refused(text);
        }
        assert!(refused("https://h/v1?api-version=1").contains("query"));
        assert!(refused("https://h/v1?").contains("query"));
        assert!(refused("https://h/v1#top").contains("fragment"));
        assert!(refused("http://h:99999/v1").contains("port"));
    }

    #[test]
    fn parse_refuses_a_base_without_a_path_saying_what_to_write() {
        for text in ["http://127.0.0.1:8000", "http://127.0.0.1:8000/", "https://h//"] {
            let reason = refused(text);
            assert!(reason.contains("has no path") && reason.contains("/v1"), "{text}: {reason}");
        }
        assert_eq!(
            refused("http://127.0.0.1:8000/"),
            "the upstream URL `http://127.0.0.1:8000` has no path: give the base URL with its version, \
             like http://127.0.0.1:8000/v1"
        );
        assert_eq!(url("https://h/openai").redacted(), "https://h/openai");
    }

    #[test]
    fn parse_refuses_credentials_without_quoting_them() {
        for text in ["https://user:s3cret@h/v1", "https://s3cret@h/v1", "https://:s3cret@h/v1"] {
            let reason = refused(text);
            assert!(reason.contains("--upstream-api-key"), "{reason}");
            assert!(!reason.contains("s3cret"), "{reason}");
        }
    }

    #[test]
    fn join_puts_the_path_and_query_below_the_base() {
        let base = url("https://h/v1/");
        let joined = base.join("/chat/completions", Some("api-version=2024-06-01"));
        assert_eq!(joined.as_str(), "https://h/v1/chat/completions?api-version=2024-06-01");
        assert_eq!(base.join("/models", None).as_str(), "https://h/v1/models");
        assert_eq!(base.join("/models", Some("")).as_str(), "https://h/v1/models");
        assert_eq!(base.join("models", None).as_str(), "https://h/v1/models");
        assert_eq!(url("http://h:8080/api").join("/v1/models", None).as_str(), "http://h:8080/api/v1/models");
        let deep = url("https://r.openai.azure.com/openai/deployments/gpt");
        assert_eq!(
            deep.join("/chat/completions", Some("api-version=2024-06-01&x=a%20b")).as_str(),
            "https://r.openai.azure.com/openai/deployments/gpt/chat/completions?api-version=2024-06-01&x=a%20b"
        );
    }

    #[test]
    fn path_and_query_is_what_join_puts_below_the_origin() {
        let base = url("http://h:8000/v1/");
        for (path, query) in
            [("/chat/completions", Some("api-version=1&x=a%20b")), ("models", Some("")), ("/x", None)]
        {
            let joined = base.join(path, query);
            let expected =
                format!("{}{}", joined.path(), joined.query().map_or(String::new(), |q| format!("?{q}")));
            assert_eq!(base.path_and_query(path, query), expected);
        }
    }

    #[test]
    fn plain_http_names_where_to_connect_and_the_host_header() {
        assert_eq!(url("http://h:8000/v1").plain_http(), Some(("h", 8000, "h:8000".to_owned())));
        assert_eq!(url("http://h/v1").plain_http(), Some(("h", 80, "h".to_owned())));
        assert_eq!(url("http://[::1]:11434/v1").plain_http(), Some(("::1", 11434, "[::1]:11434".to_owned())));
        assert_eq!(url("https://h/v1").plain_http(), None);
    }

    #[test]
    fn origin_join_keeps_only_the_origin() {
        let base = url("https://h:8443/v1");
        assert_eq!(base.origin_join("/health?full=1").as_str(), "https://h:8443/health?full=1");
        assert_eq!(base.origin_join("/v2/models").as_str(), "https://h:8443/v2/models");
        assert_eq!(base.origin_join("/").as_str(), "https://h:8443/");
        assert_eq!(base.origin_join("/files/a%2Fb?").as_str(), "https://h:8443/files/a%2Fb");
        assert_eq!(base.origin_join("x").as_str(), "https://h:8443/x");
    }

    #[test]
    fn display_and_debug_are_the_redacted_form() {
        let base = url("https://h/v1");
        assert_eq!(base.to_string(), "https://h/v1");
        assert_eq!(format!("{base:?}"), r#"UpstreamUrl("https://h/v1")"#);
    }

    #[test]
    fn strip_userinfo_removes_every_credential() {
        assert_eq!(
            strip_userinfo("error sending request for url (http://user:se@cr%40et@127.0.0.1:1/v1): refused"),
            "error sending request for url (http://127.0.0.1:1/v1): refused"
        );
        assert_eq!(
            strip_userinfo("a https://k@h/x b socks5://u:p@proxy:1080 c http://h2?q=a@b"),
            "a https://h/x b socks5://proxy:1080 c http://h2?q=a@b"
        );
        assert_eq!(strip_userinfo("no url, mail@example.com"), "no url, mail@example.com");
        assert_eq!(strip_userinfo("ends in http://"), "ends in http://");
    }

    /// The gateway's flag as its `config.rs` would declare it.
    #[derive(Debug, Parser)]
    struct Flags {
        /// The upstream.
        #[arg(long)]
        upstream: Option<UpstreamUrl>,
    }

    #[test]
    fn clap_refuses_with_a_usage_error_that_does_not_quote_a_password() {
        let flags = Flags::try_parse_from(["gw", "--upstream", "https://h/v1/"]).unwrap();
        assert_eq!(flags.upstream.unwrap().redacted(), "https://h/v1");

        let error = Flags::try_parse_from(["gw", "--upstream", "https://user:s3cret@h/v1"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let shown = error.render().to_string();
        assert!(shown.contains("--upstream-api-key") && !shown.contains("s3cret"), "{shown}");

        let error = Flags::try_parse_from(["gw", "--upstream", "localhost:8000/v1"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        let shown = error.render().to_string();
        assert!(shown.contains("'localhost:8000/v1'") && shown.contains("http://"), "{shown}");
    }

    #[tokio::test]
    async fn describe_hides_a_url_password() {
        // A port that was free a moment ago: the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client =
            build(&ClientOptions { connect_timeout: Duration::from_secs(5), ca_file: None, http2: false })
                .unwrap();
        let error = client.get(format!("http://user:secret@127.0.0.1:{port}/v1")).send().await.unwrap_err();
        let text = describe(&error);
        assert!(error.is_connect(), "{text}");
        assert!(text.contains("127.0.0.1") && !text.contains("secret"), "{text}");
    }
}
