//! HTTPS upstreams behind a private CA made here with rcgen: the upstream client on its own
//! (roots, ALPN, redirects, CA files) and the whole gateway in front of an HTTPS mock.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use common::*;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use streamflight_gateway::upstream::client::{self, ClientOptions, UpstreamUrl};
use streamflight_gateway::{App, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower::ServiceExt;

/// A CA and a certificate it signed for `localhost` and `127.0.0.1`.
struct Pki {
    /// The CA's certificate, PEM.
    ca_pem: String,
    /// The server's certificate chain and key.
    server: Arc<rustls::ServerConfig>,
}

/// A fresh PKI whose server offers the ALPN protocols `alpn`.
fn pki(alpn: &[&[u8]]) -> Pki {
    let (ca, leaf, key) = pki::chain(&["localhost", "127.0.0.1"]);

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)
        .unwrap();
    server.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Pki { ca_pem: ca.pem(), server: Arc::new(server) }
}

/// A temporary file, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("sf-tls-{}-{}.pem", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

type Tls = tokio_rustls::server::TlsStream<TcpStream>;

/// What a server saw of one TLS handshake that succeeded.
#[derive(Debug)]
struct Handshake {
    /// The client's ALPN protocols, in its order of preference.
    offered: Vec<Vec<u8>>,
    /// The protocol agreed on.
    chosen: Option<Vec<u8>>,
}

type Handshakes = mpsc::UnboundedReceiver<Handshake>;

/// The next handshake that succeeded, within the deadline (a client that failed to connect
/// makes none, and the test must fail rather than wait forever).
async fn handshake(handshakes: &mut Handshakes) -> Handshake {
    let next = tokio::time::timeout(DEADLINE, handshakes.recv()).await;
    next.expect("a TLS handshake in time").expect("the server runs")
}

/// An HTTPS server on 127.0.0.1 that hands every connection whose handshake succeeded to
/// `handle`, and reports each such handshake.
async fn https<F, Fut>(pki: &Pki, handle: F) -> (SocketAddr, Handshakes)
where
    F: Fn(Tls) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (report, handshakes) = mpsc::unbounded_channel();
    let (config, handle) = (pki.server.clone(), Arc::new(handle));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (config, report, handle) = (config.clone(), report.clone(), Arc::clone(&handle));
            tokio::spawn(async move {
                // Read lazily, to see the client's own ALPN order before rustls picks one.
                let acceptor = rustls::server::Acceptor::default();
                let Ok(start) = tokio_rustls::LazyConfigAcceptor::new(acceptor, tcp).await else { return };
                let offered = start
                    .client_hello()
                    .alpn()
                    .map_or_else(Vec::new, |protocols| protocols.map(<[u8]>::to_vec).collect());
                // A client that does not trust the certificate ends the handshake.
                let Ok(tls) = start.into_stream(config).await else { return };
                let chosen = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                let _ = report.send(Handshake { offered, chosen });
                handle(tls).await;
            });
        }
    });
    (address, handshakes)
}

/// An HTTPS server that answers every request with the bytes of `response`, then closes.
async fn https_raw(pki: &Pki, response: &'static [u8]) -> (SocketAddr, Handshakes) {
    https(pki, move |mut tls| async move {
        let mut head = Vec::new();
        let mut buffer = [0_u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
            match tls.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buffer[..n]),
            }
        }
        let _ = tls.write_all(response).await;
        let _ = tls.shutdown().await;
    })
    .await
}

/// The recording mock upstream of the other tests, served over HTTPS (HTTP/2 or HTTP/1.1, as
/// the client's ALPN chooses), with its base `https://127.0.0.1:PORT/v1`.
async fn https_mock(pki: &Pki, mode: Mode) -> (Arc<Mock>, Handshakes) {
    // The port is known only once bound, and the mock's base names it: bound first, served after.
    let routes = Arc::new(std::sync::OnceLock::<axum::Router>::new());
    let served = Arc::clone(&routes);
    let (address, handshakes) = https(pki, move |tls| {
        let app = served.get().expect("the routes are set before any request").clone();
        async move {
            let service = hyper::service::service_fn(move |request| app.clone().oneshot(request));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        }
    })
    .await;
    let (mock, app) = Mock::app(mode, format!("https://{address}/v1"));
    routes.set(app).expect("set once");
    (mock, handshakes)
}

const OK: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";

fn options(ca_file: Option<&TempFile>) -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(5),
        ca_file: ca_file.map(|file| file.0.clone()),
        http2: false,
    }
}

fn url(text: &str) -> UpstreamUrl {
    UpstreamUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[tokio::test]
async fn https_with_the_ca_file_succeeds() {
    let pki = pki(&[b"http/1.1"]);
    let (address, mut handshakes) = https_raw(&pki, OK).await;
    let ca = TempFile::new(&pki.ca_pem);
    let client = client::build(&options(Some(&ca))).unwrap();
    for host in ["localhost", "127.0.0.1"] {
        let base = url(&format!("https://{host}:{}/v1", address.port()));
        let response = client.get(base.join("/models", None)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "hello");
        assert_eq!(handshake(&mut handshakes).await.chosen.as_deref(), Some(&b"http/1.1"[..]));
    }
}

#[tokio::test]
async fn https_offers_h2_first() {
    let pki = pki(&[b"h2", b"http/1.1"]);
    let (address, mut handshakes) = https_raw(&pki, b"").await;
    let ca = TempFile::new(&pki.ca_pem);
    let client = client::build(&options(Some(&ca))).unwrap();
    // The server cannot speak HTTP/2: the request fails, the handshake has been seen.
    let _ = client.get(format!("https://127.0.0.1:{}/v1/models", address.port())).send().await;
    let seen = handshake(&mut handshakes).await;
    assert_eq!(seen.offered, [&b"h2"[..], &b"http/1.1"[..]]);
    assert_eq!(seen.chosen.as_deref(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn https_without_the_ca_file_is_an_unknown_issuer() {
    let pki = pki(&[b"http/1.1"]);
    let (address, _handshakes) = https_raw(&pki, OK).await;
    let client = client::build(&options(None)).unwrap();
    let error =
        client.get(format!("https://127.0.0.1:{}/v1/models", address.port())).send().await.unwrap_err();
    let text = client::describe(&error).to_lowercase();
    assert!(text.contains("certificate") && text.contains("unknownissuer"), "{text}");
}

#[tokio::test]
async fn a_redirect_reaches_the_caller() {
    let pki = pki(&[b"http/1.1"]);
    let response = b"HTTP/1.1 302 Found\r\nlocation: http://elsewhere.invalid/v1/models\r\n\
                     content-length: 0\r\nconnection: close\r\n\r\n";
    let (address, _handshakes) = https_raw(&pki, response).await;
    let ca = TempFile::new(&pki.ca_pem);
    let client = client::build(&options(Some(&ca))).unwrap();
    let response = client
        .get(format!("https://127.0.0.1:{}/v1/models", address.port()))
        .bearer_auth("sk-leader")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "http://elsewhere.invalid/v1/models");
}

#[test]
fn a_bad_ca_file_is_an_error_at_start() {
    let missing = std::env::temp_dir().join("sf-tls-no-such-file.pem");
    let error = client::build(&ClientOptions {
        connect_timeout: Duration::from_secs(1),
        ca_file: Some(missing),
        http2: false,
    })
    .unwrap_err();
    assert!(error.contains("sf-tls-no-such-file.pem") && !error.contains('\n'), "{error}");

    let empty = TempFile::new("not a certificate\n");
    let error = client::build(&options(Some(&empty))).unwrap_err();
    assert!(error.contains("no PEM certificate"), "{error}");

    let broken = TempFile::new("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n");
    let error = client::build(&options(Some(&broken))).unwrap_err();
    assert!(error.contains("CA file"), "{error}");
}

#[tokio::test]
async fn chats_stream_and_collect_through_an_https_upstream_with_a_private_ca() {
    let pki = pki(&[b"h2", b"http/1.1"]);
    let (mock, mut handshakes) =
        https_mock(&pki, Mode::Tokens { tokens: 3, interval: Duration::ZERO, gated: false }).await;
    let ca = TempFile::new(&pki.ca_pem);
    let base = gateway(&["--upstream", &mock.base, "--upstream-ca", ca.path()]).await;

    let events = Client::chat(&base, "over TLS", Some("Bearer sk-tls")).await.rest().await;
    let chunks: Vec<String> = (0..3).map(mock_chunk).collect();
    assert_eq!(events, [&chunks[..], &["[DONE]".to_owned()]].concat());
    let chosen = handshake(&mut handshakes).await.chosen;
    assert_eq!(chosen.as_deref(), Some(&b"h2"[..]), "HTTP/2 where offered");
    assert_eq!(mock.last().header("authorization").as_deref(), Some("Bearer sk-tls"));

    let request =
        http().post(format!("{base}/v1/chat/completions")).body(chat_body("collected", false).to_string());
    let collected = Client::send(request).await;
    assert_eq!(collected.status, 200);
    let collected = collected.json().await;
    assert_eq!(collected["choices"][0]["message"]["content"], "t0 t1 t2 ");
    assert_eq!(collected["usage"]["total_tokens"], 8);
    assert_eq!(mock.received(), 2);
}

#[tokio::test]
async fn without_the_private_ca_a_client_gets_a_502_naming_the_certificate() {
    let pki = pki(&[b"h2", b"http/1.1"]);
    let (mock, _handshakes) =
        https_mock(&pki, Mode::Tokens { tokens: 3, interval: Duration::ZERO, gated: false }).await;
    let base = gateway(&["--upstream", &mock.base]).await;
    for stream in [true, false] {
        let request =
            http().post(format!("{base}/v1/chat/completions")).body(chat_body("q", stream).to_string());
        let response = Client::send(request).await;
        assert_eq!(response.status, 502, "stream: {stream}");
        let error = openai_error(&response.json().await, "upstream_unreachable");
        assert!(error["message"].as_str().unwrap().to_lowercase().contains("certificate"), "{error}");
    }
    assert_eq!(mock.received(), 0, "no request went over a connection that is not trusted");
}

#[tokio::test]
async fn an_unreadable_ca_file_stops_the_gateway_at_start() {
    let directory = std::env::temp_dir();
    let missing = directory.join("sf-tls-missing-ca.pem");
    for path in [missing.to_str().unwrap(), directory.to_str().unwrap()] {
        let flags = ["gw", "--upstream", "https://127.0.0.1:9/v1", "--upstream-ca", path];
        let Err(error) = App::new(Settings::parse_from(flags)) else { panic!("{path} was accepted") };
        assert!(error.contains(path) && error.contains("CA file") && !error.contains('\n'), "{error}");
    }
}
