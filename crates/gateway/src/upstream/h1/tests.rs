//! `Http1` against upstreams on real sockets that answer from a script: keep-alive reuse, a
//! connection closed while idle or as it is used, a body cut short or dropped, a head too
//! large, bodies cut at awkward places.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// What the scripted upstream answers the `n`th request (from 1) on its `c`th connection
/// (from 1): `None` closes the connection without an answer.
type Script = Arc<dyn Fn(usize, usize) -> Option<&'static str> + Send + Sync>;

/// An upstream that answers every request on every connection with `answer` (or as a script
/// says), and counts the connections and requests.
struct Scripted {
    url: UpstreamUrl,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Scripted {
    async fn start(answer: &'static str, after: After) -> Scripted {
        Scripted::script(Arc::new(move |_, _| Some(answer)), after).await
    }

    async fn script(script: Script, after: After) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = UpstreamUrl::parse(&format!("http://{}/v1", listener.local_addr().unwrap())).unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (accepted, served) = (Arc::clone(&connections), Arc::clone(&requests));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let connection = accepted.fetch_add(1, Ordering::SeqCst) + 1;
                let script = Arc::clone(&script);
                let answers = move |request| script(connection, request);
                tokio::spawn(serve(stream, answers, after, Arc::clone(&served)));
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

/// Reads each request (its head, then `content-length` bytes) and writes its answer.
async fn serve(
    mut stream: TcpStream,
    answers: impl Fn(usize) -> Option<&'static str>,
    after: After,
    served: Arc<AtomicUsize>,
) {
    let mut read = Vec::new();
    for request in 1.. {
        if !read_request(&mut stream, &mut read).await {
            return;
        }
        served.fetch_add(1, Ordering::SeqCst);
        let Some(answer) = answers(request) else { return };
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if let After::Close = after {
            return;
        }
    }
}

/// Reads a request (its head, then `content-length` bytes) from `stream` into `read` and
/// drops it; false if the connection ended first.
async fn read_request(stream: &mut TcpStream, read: &mut Vec<u8>) -> bool {
    loop {
        let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4) else {
            let mut buf = [0; 1024];
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
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
                Ok(0) | Err(_) => return false,
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
        }
        read.drain(..end + length);
        return true;
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

/// An upstream that answers one request in pieces, each written once the test says so (the
/// one before was read: data came out of it), or at once; then notes whether the client
/// closed the connection.
struct Stepped {
    url: UpstreamUrl,
    next: tokio::sync::mpsc::UnboundedSender<()>,
    closed: Arc<AtomicBool>,
}

/// A piece of an answer, written at once or when the test says.
enum Piece {
    Now(&'static str),
    Told(&'static str),
}

impl Stepped {
    async fn start(pieces: Vec<Piece>) -> Stepped {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = UpstreamUrl::parse(&format!("http://{}/v1", listener.local_addr().unwrap())).unwrap();
        let (next, mut told) = tokio::sync::mpsc::unbounded_channel();
        let closed = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&closed);
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            assert!(read_request(&mut stream, &mut Vec::new()).await);
            for piece in pieces {
                let text = match piece {
                    Piece::Now(text) => text,
                    Piece::Told(text) => {
                        told.recv().await.expect("told to write");
                        text
                    }
                };
                stream.write_all(text.as_bytes()).await.unwrap();
                tokio::task::yield_now().await;
            }
            // The client's close (or reset), or its next request.
            let mut byte = [0; 1];
            if matches!(stream.read(&mut byte).await, Ok(0) | Err(_)) {
                seen.store(true, Ordering::SeqCst);
            }
        });
        Stepped { url, next, closed }
    }

    /// Lets the next piece be written.
    fn next(&self) {
        self.next.send(()).unwrap();
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// An upstream answering in `pieces`, its client, and the body of the client's request.
async fn answered_in(pieces: Vec<Piece>) -> (Stepped, Http1, Body) {
    let upstream = Stepped::start(pieces).await;
    let http1 = client(&upstream.url);
    let body = post(&http1).await;
    (upstream, http1, body)
}

/// `body`'s next piece of data.
async fn piece(body: &mut Body) -> Vec<u8> {
    body.next().await.expect("a piece").expect("data").to_vec()
}

#[tokio::test]
async fn a_chunked_body_cut_at_awkward_places_comes_out_whole_and_its_connection_is_kept() {
    let (upstream, http1, mut body) = answered_in(vec![
        // The head cut in two, then the first chunk and the start of the second's size line.
        Piece::Now("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-enc"),
        Piece::Now("oding: chunked\r\n\r\n9\r\ndata: a\n\n\r\na"),
        // The size line's end and the start of its data.
        Piece::Told("\r\ndata: b"),
        // The rest of the data and half its line end.
        Piece::Told("b\n\n\r"),
        // The other half, a chunk with an extension, and the last chunk cut between `\r` and `\n`.
        Piece::Told("\ne;x=1\r\ndata: [DONE]\n\n\r\n0\r"),
        // The empty trailer section, cut too.
        Piece::Told("\n\r"),
        Piece::Told("\n"),
    ])
    .await;
    let mut data = Vec::new();
    for _ in 0..3 {
        data.extend(piece(&mut body).await);
        upstream.next();
    }
    data.extend(piece(&mut body).await);
    upstream.next();
    upstream.next();
    assert!(body.next().await.is_none(), "the body's end");
    assert_eq!(String::from_utf8(data).unwrap(), "data: a\n\ndata: bb\n\ndata: [DONE]\n\n");
    assert_eq!(http1.idle(), 1);
    assert!(!upstream.closed());
}

#[tokio::test]
async fn a_length_delimited_body_cut_in_pieces_comes_out_whole_and_its_connection_is_kept() {
    let (upstream, http1, mut body) = answered_in(vec![
        Piece::Now("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n{\"a"),
        Piece::Told("\":"),
        Piece::Told("123}"),
    ])
    .await;
    let mut data = piece(&mut body).await;
    upstream.next();
    data.extend(piece(&mut body).await);
    upstream.next();
    assert_eq!(read(body).await.map(|rest| [data, rest].concat()).unwrap(), b"{\"a\":123}");
    assert_eq!(http1.idle(), 1);
}

#[tokio::test]
async fn a_body_dropped_before_its_end_is_a_close_the_upstream_sees() {
    let (upstream, http1, mut body) = answered_in(vec![Piece::Now(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: a\n\n\r\n",
    )])
    .await;
    assert_eq!(piece(&mut body).await, b"data: a\n\n");
    drop(body);
    until("the upstream sees the connection closed", || upstream.closed()).await;
    assert_eq!(http1.idle(), 0);
}

#[tokio::test]
async fn a_response_that_says_connection_close_does_not_keep_its_connection() {
    const CLOSING: &str = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}";
    // The upstream would keep it open: the client closes it, as the response said.
    let upstream = Scripted::start(CLOSING, After::KeepAlive).await;
    let http1 = client(&upstream.url);
    for _ in 0..2 {
        assert_eq!(read(post(&http1).await).await.unwrap(), b"{}");
        assert_eq!(http1.idle(), 0);
    }
    assert_eq!((upstream.connections(), upstream.requests()), (2, 2));
}

#[tokio::test]
async fn a_pooled_connection_closed_as_it_is_used_is_tried_once_more_on_a_new_one() {
    // The first connection answers once, then takes the next request and closes unanswered
    // (its idle timeout, raced); the others answer.
    let script: Script = Arc::new(|connection, request| (connection > 1 || request == 1).then_some(WHOLE));
    let upstream = Scripted::script(script, After::KeepAlive).await;
    let http1 = client(&upstream.url);
    assert_eq!(read(post(&http1).await).await.unwrap(), b"{}");
    assert_eq!(read(post(&http1).await).await.unwrap(), b"{}");
    assert_eq!((upstream.connections(), upstream.requests()), (2, 3));
    assert_eq!(http1.idle(), 1);
}

#[tokio::test]
async fn a_new_connection_closed_unanswered_is_an_error_not_sent_again() {
    let upstream = Scripted::script(Arc::new(|_, _| None), After::KeepAlive).await;
    let error = client(&upstream.url).post("/v1/x", HeaderMap::new(), Bytes::new()).await.err();
    assert!(error.as_deref().is_some_and(|e| e.contains("closed before a response")), "{error:?}");
    assert_eq!((upstream.connections(), upstream.requests()), (1, 1));
}

#[tokio::test]
async fn a_pooled_connection_is_tried_once_more_only_once() {
    // The first connection answers once, then closes unanswered; so does every new one.
    let upstream = Scripted::script(
        Arc::new(|connection, request| ((connection, request) == (1, 1)).then_some(WHOLE)),
        After::KeepAlive,
    )
    .await;
    let http1 = client(&upstream.url);
    assert_eq!(read(post(&http1).await).await.unwrap(), b"{}");
    let error = http1.post("/v1/x", HeaderMap::new(), Bytes::new()).await.err();
    assert!(error.is_some());
    assert_eq!((upstream.connections(), upstream.requests()), (2, 3));
}

#[tokio::test]
async fn an_answer_to_a_request_not_sent_is_not_taken_for_the_next_response() {
    // Bytes from the upstream while the connection is idle: it is not reused.
    const EXTRA: &str =
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    let upstream = Scripted::start(EXTRA, After::KeepAlive).await;
    let http1 = client(&upstream.url);
    for _ in 0..2 {
        assert_eq!(read(post(&http1).await).await.unwrap(), b"{}");
    }
    assert_eq!(upstream.connections(), 2);
}
