//! `Http1` against upstreams on real sockets that answer from a script: keep-alive reuse, a
//! connection closed while idle, a body cut short, a head too large.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Http1;
use crate::upstream::client::UpstreamUrl;
use crate::upstream::response::{Body, Response};

/// What the scripted upstream does after each answer.
#[derive(Clone, Copy)]
enum After {
    /// Waits for the next request on the connection.
    KeepAlive,
    /// Closes the connection (no `connection: close` said).
    Close,
}

/// An upstream that answers every request on every connection with `answer`, and counts the
/// connections and requests.
struct Scripted {
    url: UpstreamUrl,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Scripted {
    async fn start(answer: &'static str, after: After) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = UpstreamUrl::parse(&format!("http://{}/v1", listener.local_addr().unwrap())).unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (accepted, served) = (Arc::clone(&connections), Arc::clone(&requests));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, answer, after, Arc::clone(&served)));
            }
        });
        Scripted { url, connections, requests }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Reads each request (its head, then `content-length` bytes) and writes `answer`.
async fn serve(mut stream: TcpStream, answer: &'static str, after: After, served: Arc<AtomicUsize>) {
    let mut read = Vec::new();
    loop {
        let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4) else {
            let mut buf = [0; 1024];
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&read[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map_or(0, |n| n.trim().parse().unwrap());
        while read.len() < end + length {
            let mut buf = [0; 1024];
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
        }
        read.drain(..end + length);
        served.fetch_add(1, Ordering::SeqCst);
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if let After::Close = after {
            return;
        }
    }
}

const WHOLE: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";

/// An SSE answer, chunked: `[DONE]`, then the body's last chunk.
const STREAMED: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n\
                        e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n";

/// A chunked answer whose connection breaks after its first chunk.
const BROKEN: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n\
                      9\r\ndata: a\n\n\r\n";

fn client(url: &UpstreamUrl) -> Http1 {
    Http1::new(url, Duration::from_secs(5), false).expect("an http:// URL")
}

async fn post(http1: &Http1) -> Body {
    let response = http1.post("/v1/chat/completions", HeaderMap::new(), Bytes::from_static(b"{}")).await;
    let Response { status, body, .. } = Response::http1(response.expect("an answer"));
    assert_eq!(status, 200);
    body
}

/// Everything `body` holds, or its error's text.
async fn read(mut body: Body) -> Result<Vec<u8>, String> {
    let mut read = Vec::new();
    while let Some(piece) = body.next().await {
        read.extend_from_slice(&piece?);
    }
    Ok(read)
}

/// Waits (without a deadline a slow machine could miss: up to a minute) until `done`.
async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..6000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

#[tokio::test]
async fn two_sequential_requests_share_one_connection() {
    let upstream = Scripted::start(WHOLE, After::KeepAlive).await;
    let http1 = client(&upstream.url);
    for _ in 0..2 {
        assert_eq!(read(post(&http1).await).await.unwrap(), b"{}");
    }
    assert_eq!((upstream.connections(), upstream.requests()), (1, 2));
    assert_eq!(http1.idle(), 1);
}

#[tokio::test]
async fn a_stream_that_ended_gives_its_connection_back_once_its_last_chunk_comes() {
    let upstream = Scripted::start(STREAMED, After::KeepAlive).await;
    let http1 = client(&upstream.url);
    for _ in 0..2 {
        let mut body = post(&http1).await;
        assert_eq!(body.next().await.unwrap().unwrap(), "data: [DONE]\n\n");
        // The answer's end, seen by the SSE decoder before the body's own.
        body.finish();
        until("the connection is idle", || http1.idle() == 1).await;
    }
    assert_eq!((upstream.connections(), upstream.requests()), (1, 2));
}

#[tokio::test]
async fn a_body_dropped_before_its_end_closes_its_connection() {
    let upstream = Scripted::start(STREAMED, After::KeepAlive).await;
    let http1 = client(&upstream.url);
    drop(post(&http1).await);
    read(post(&http1).await).await.unwrap();
    assert_eq!((upstream.connections(), upstream.requests()), (2, 2));
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used() {
    let upstream = Scripted::start(WHOLE, After::Close).await;
    let http1 = client(&upstream.url);
    for round in 1..=3 {
        // The second and third find the previous connection pooled, closed or closing.
        assert_eq!(read(post(&http1).await).await.unwrap(), b"{}", "request {round}");
    }
    assert_eq!((upstream.connections(), upstream.requests()), (3, 3));
}

#[tokio::test]
async fn an_upstream_that_dies_mid_stream_is_an_error_as_it_is_through_reqwest() {
    let upstream = Scripted::start(BROKEN, After::Close).await;
    let mut body = post(&client(&upstream.url)).await;
    assert_eq!(body.next().await.unwrap().unwrap(), "data: a\n\n");
    let error = body.next().await.expect("an error, not the end").unwrap_err();

    let reqwest = crate::upstream::client::build(&crate::upstream::client::ClientOptions {
        connect_timeout: Duration::from_secs(5),
        ca_file: None,
        http2: false,
    })
    .unwrap();
    let sent = reqwest.post(upstream.url.join("/chat/completions", None)).body("{}").send().await.unwrap();
    let mut through_reqwest = sent.bytes_stream();
    assert_eq!(through_reqwest.next().await.unwrap().unwrap(), "data: a\n\n");
    assert!(through_reqwest.next().await.expect("an error, not the end").is_err());
    // Both are the same `Broken::Truncated` then (`Idle::next`), with their client's text.
    assert!(error.contains("unexpected EOF"), "{error}");
}

#[tokio::test]
async fn a_response_head_over_the_read_buffer_is_refused() {
    let answer = format!("HTTP/1.1 200 OK\r\nx-large: {}\r\ncontent-length: 2\r\n\r\n{{}}", "a".repeat(5000));
    let upstream = Scripted::start(answer.leak(), After::KeepAlive).await;
    let refused = client(&upstream.url).post("/v1/x", HeaderMap::new(), Bytes::new()).await.err();
    assert!(refused.as_deref().is_some_and(|reason| reason.contains("too large")), "{refused:?}");
}

/// With connection threads, a connection goes back to the thread that used it: another
/// thread's request opens its own rather than wake that thread's runtime at every step.
#[tokio::test]
async fn per_thread_a_connection_is_reused_by_its_own_thread_only() {
    let upstream = Scripted::start(WHOLE, After::KeepAlive).await;
    let http1 = Arc::new(Http1::new(&upstream.url, Duration::from_secs(5), true).expect("an http:// URL"));
    // Each request on a thread of its own with its own runtime, as a connection thread is.
    let on_a_thread = |http1: Arc<Http1>| {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move { read(post(&http1).await).await.unwrap() })
        })
    };
    // This test's thread, twice: one connection.
    read(post(&http1).await).await.unwrap();
    read(post(&http1).await).await.unwrap();
    assert_eq!(upstream.connections(), 1);
    // Another thread does not take it (joined off this one, which serves the upstream).
    let other = on_a_thread(Arc::clone(&http1));
    tokio::task::spawn_blocking(move || other.join().unwrap()).await.unwrap();
    assert_eq!(upstream.connections(), 2);
    // This thread's is still there for it.
    read(post(&http1).await).await.unwrap();
    assert_eq!((upstream.connections(), upstream.requests()), (2, 4));
}
