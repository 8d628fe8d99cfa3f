//! The HTTP/1.1 connection over real sockets: a router of a few handlers behind it, and a
//! client that writes raw bytes and reads each response with the shared framing decoder.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body as AnyBody;
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;

use super::{Setup, serve};
use crate::http::serve::{Accepted, Shutdown};
use crate::http::write_timeout::{Limit, WriteTimeouts};
use crate::http1::framing::Framing;

/// Reaching it fails a test; it is not a timing.
const DEADLINE: Duration = Duration::from_secs(10);

/// The streaming handler's body: its first event, then nothing, until it is dropped.
const EVENT: &str = "data: 1\n\n";

/// How many 100 KB frames the large response has.
const PIECES: u8 = 16;

/// The server's send buffer (the kernel doubles it): far less than the large response.
const SEND_BUFFER: usize = 4096;

/// A server of the handlers on a port of its own; `dropped` hears when a stream's body goes.
async fn server(dropped: Option<oneshot::Sender<()>>) -> SocketAddr {
    served(dropped, DEADLINE, Shutdown::new()).await
}

/// [`server`], with its connections' header timeout, and the signal that drains them.
async fn served(
    dropped: Option<oneshot::Sender<()>>,
    header_timeout: Duration,
    draining: Shutdown,
) -> SocketAddr {
    let dropped = Arc::new(std::sync::Mutex::new(dropped));
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/echo", post(|body: Bytes| async move { body }))
        .route("/ignore", post(|| async { "not read" }))
        .route(
            "/big",
            get(|| async {
                let pieces = (0..PIECES).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![i; 100_000])));
                AnyBody::from_stream(futures::stream::iter(pieces))
            }),
        )
        .route(
            "/stream",
            get(move || {
                let guard = dropped.lock().unwrap().take();
                async move {
                    let first = futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from(EVENT)) });
                    let held = futures::stream::pending().map(move |never: Bytes| {
                        let _kept = &guard;
                        Ok(never)
                    });
                    AnyBody::from_stream(first.chain(held))
                }
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            // A small send buffer: a large response is written in many partial writes.
            socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER).unwrap();
            stream.set_nodelay(true).unwrap();
            let (app, draining) = (app.clone(), draining.clone());
            tokio::spawn(async move {
                let writes = Arc::new(Limit { after: Duration::ZERO, cut: WriteTimeouts::default() });
                let accepted = Accepted { peer, nodelay: true };
                let setup = Setup { app, accepted, header_timeout, draining: &draining, writes };
                serve(stream, setup).await;
            });
        }
    });
    address
}

/// A response as the client read it.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// A client: reads responses off its socket, keeping what follows each.
struct Client {
    stream: TcpStream,
    read: Vec<u8>,
}

impl Client {
    async fn connect(address: SocketAddr) -> Client {
        let stream = TcpStream::connect(address).await.unwrap();
        // Each write a segment of its own, at once.
        stream.set_nodelay(true).unwrap();
        Client { stream, read: Vec::new() }
    }

    /// A new connection on which `request` is sent in two writes, cut at `cut`; between them
    /// the server's task runs (a yield lets the runtime poll the sockets first).
    async fn cut(address: SocketAddr, request: &[u8], cut: usize) -> Client {
        let mut client = Client::connect(address).await;
        client.send(&request[..cut]).await;
        tokio::task::yield_now().await;
        client.send(&request[cut..]).await;
        client
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads more; false at the connection's end.
    async fn more(&mut self) -> bool {
        let mut buf = [0_u8; 16 * 1024];
        let read = timeout(DEADLINE, self.stream.read(&mut buf)).await.expect("the server answers");
        match read {
            Ok(0) | Err(_) => false,
            Ok(read) => {
                self.read.extend_from_slice(&buf[..read]);
                true
            }
        }
    }

    /// The next response; `head_only` for a HEAD request's.
    async fn response(&mut self, head_only: bool) -> Answer {
        let (end, status, head) = loop {
            let mut lines = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut lines);
            if let httparse::Status::Complete(end) = response.parse(&self.read).unwrap() {
                let head = String::from_utf8(self.read[..end].to_vec()).unwrap();
                break (end, response.code.unwrap(), head);
            }
            assert!(self.more().await, "closed before a head: {:?}", String::from_utf8_lossy(&self.read));
        };
        self.read.drain(..end);
        let mut answer = Answer { status, head, body: Vec::new() };
        if head_only || status == 100 {
            return answer;
        }
        let mut framing = match (answer.header("content-length"), answer.header("transfer-encoding")) {
            (Some(length), _) => Framing::Length(length.parse().unwrap()),
            (None, Some("chunked")) => Framing::chunked(),
            _ => Framing::Close,
        };
        loop {
            let used = framing.decode(&self.read, &mut answer.body).unwrap();
            self.read.drain(..used);
            if framing.ended() {
                return answer;
            }
            if !self.more().await {
                assert_eq!(framing, Framing::Close, "the body was cut");
                return answer;
            }
        }
    }

    /// Whether the server closed the connection (with nothing more sent).
    async fn closed(&mut self) -> bool {
        !self.more().await && self.read.is_empty()
    }
}

const HELLO: &[u8] = b"GET /hello HTTP/1.1\r\nhost: a\r\n\r\n";

#[tokio::test]
async fn pipelined_requests_in_one_write_are_answered_in_order() {
    let address = server(None).await;
    let mut client = Client::connect(address).await;
    let mut all = HELLO.to_vec();
    all.extend_from_slice(b"POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabc");
    all.extend_from_slice(b"POST /echo HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n");
    all.extend_from_slice(b"HEAD /hello HTTP/1.1\r\n\r\n");
    all.extend_from_slice(HELLO);
    client.send(&all).await;
    let first = client.response(false).await;
    assert_eq!((first.status, first.body.as_slice()), (200, b"hello".as_slice()));
    assert!(first.header("date").is_some(), "{}", first.head);
    assert_eq!(client.response(false).await.body, b"abc");
    assert_eq!(client.response(false).await.body, b"de");
    let head = client.response(true).await;
    assert_eq!(head.header("content-length"), Some("5"), "{}", head.head);
    assert_eq!(client.response(false).await.body, b"hello");
}

#[tokio::test]
async fn a_request_cut_at_every_byte_is_read_whole() {
    let address = server(None).await;
    let request: &[u8] = b"POST /echo HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
    for cut in 0..=request.len() {
        let mut client = Client::cut(address, request, cut).await;
        let answer = client.response(false).await;
        assert_eq!((answer.status, answer.body.as_slice()), (200, b"abcde".as_slice()), "cut at {cut}");
    }
    let request: &[u8] = b"POST /echo HTTP/1.1\r\ncontent-length: 5\r\n\r\nabcde";
    for cut in 0..=request.len() {
        let mut client = Client::cut(address, request, cut).await;
        client.send(HELLO).await;
        assert_eq!(client.response(false).await.body, b"abcde", "cut at {cut}");
        assert_eq!(client.response(false).await.body, b"hello", "cut at {cut}");
    }
}

#[tokio::test]
async fn continue_is_sent_when_the_body_is_wanted_and_only_then() {
    let address = server(None).await;
    let mut client = Client::connect(address).await;
    client.send(b"POST /echo HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n").await;
    assert_eq!(client.response(false).await.status, 100);
    client.send(b"ok").await;
    assert_eq!(client.response(false).await.body, b"ok");
    // Not read by its handler: no `100 Continue`, and the connection closes after the answer.
    client.send(b"POST /ignore HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n").await;
    let answer = client.response(false).await;
    assert_eq!((answer.status, answer.header("connection")), (200, Some("close")), "{}", answer.head);
    assert!(client.closed().await);
}

#[tokio::test]
async fn an_unread_body_already_received_does_not_end_the_connection() {
    let address = server(None).await;
    let mut client = Client::connect(address).await;
    let mut both = b"POST /ignore HTTP/1.1\r\ncontent-length: 2\r\n\r\nxy".to_vec();
    both.extend_from_slice(HELLO);
    client.send(&both).await;
    assert_eq!(client.response(false).await.body, b"not read");
    assert_eq!(client.response(false).await.body, b"hello");
}

#[tokio::test]
async fn http10_gets_no_chunks_and_a_close() {
    let address = server(None).await;
    let mut client = Client::connect(address).await;
    client.send(b"GET /big HTTP/1.0\r\n\r\n").await;
    let answer = client.response(false).await;
    assert_eq!(answer.header("transfer-encoding"), None, "{}", answer.head);
    assert_eq!(answer.body.len(), usize::from(PIECES) * 100_000);
    assert!(client.closed().await);
    // With keep-alive and a length: kept.
    let mut client = Client::connect(address).await;
    client.send(b"GET /hello HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").await;
    let answer = client.response(false).await;
    assert_eq!(answer.header("connection"), Some("keep-alive"), "{}", answer.head);
    client.send(b"GET /hello HTTP/1.0\r\n\r\n").await;
    assert_eq!(client.response(false).await.body, b"hello");
    assert!(client.closed().await);
}

#[tokio::test]
async fn a_head_over_eight_kib_gets_431_and_a_close() {
    let address = server(None).await;
    let mut client = Client::connect(address).await;
    client.send(format!("GET /hello HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(7_000)).as_bytes()).await;
    assert_eq!(client.response(false).await.status, 200);
    client.send(format!("GET /hello HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(9_000)).as_bytes()).await;
    assert_eq!(client.response(false).await.status, 431);
    assert!(client.closed().await);
}

#[tokio::test]
async fn smuggling_is_refused_with_a_close() {
    let address = server(None).await;
    for (request, status) in [
        ("POST /echo HTTP/1.1\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("POST /echo HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc", 400),
        ("POST /echo HTTP/1.1\r\ntransfer-encoding: chunked, identity\r\n\r\n", 501),
        ("GET /hello HTTP/1.1\r\nhost : a\r\n\r\n", 400),
    ] {
        let mut client = Client::connect(address).await;
        client.send(request.as_bytes()).await;
        let answer = client.response(false).await;
        assert_eq!(answer.status, status, "{request:?}");
        assert_eq!(answer.header("connection"), Some("close"), "{request:?}");
        assert!(client.closed().await, "{request:?}");
    }
}

#[tokio::test]
async fn a_client_gone_mid_stream_drops_the_response_body() {
    let (dropped, gone) = oneshot::channel();
    let address = server(Some(dropped)).await;
    let mut client = Client::connect(address).await;
    client.send(b"GET /stream HTTP/1.1\r\n\r\n").await;
    let mut read = Vec::new();
    while !read.windows(EVENT.len()).any(|w| w == EVENT.as_bytes()) {
        let mut buf = [0_u8; 1024];
        let n = timeout(DEADLINE, client.stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the stream's first event comes");
        read.extend_from_slice(&buf[..n]);
    }
    drop(client);
    let heard = timeout(DEADLINE, gone).await.expect("the body is dropped once the client is gone");
    assert!(heard.is_err(), "the guard was dropped, not sent");
}

/// Its 100 KB frames go through an 8 KiB send buffer: each is written in many partial writes,
/// each resumed from the rest of the last.
#[tokio::test]
async fn a_response_larger_than_the_socket_buffers_is_written_whole() {
    let address = server(None).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(address).await.unwrap();
    let mut client = Client { stream, read: Vec::new() };
    client.send(b"GET /big HTTP/1.1\r\n\r\n").await;
    let answer = client.response(false).await;
    assert_eq!(answer.header("transfer-encoding"), Some("chunked"));
    assert_eq!(answer.body.len(), usize::from(PIECES) * 100_000);
    for (i, piece) in answer.body.chunks(100_000).enumerate() {
        assert!(piece.iter().all(|&b| usize::from(b) == i), "piece {i}");
    }
    client.send(HELLO).await;
    assert_eq!(client.response(false).await.body, b"hello");
}

#[tokio::test]
async fn the_header_timeout_closes_half_sent_heads_and_idle_connections() {
    // Short, since the test waits for it; the deadline is what fails the test.
    let address = served(None, Duration::from_millis(200), Shutdown::new()).await;
    let mut half = Client::connect(address).await;
    half.send(b"GET /hello HTTP/1.1\r\nhost:").await;
    let mut idle = Client::connect(address).await;
    idle.send(HELLO).await;
    assert_eq!(idle.response(false).await.body, b"hello");
    assert!(half.closed().await, "a half-sent head");
    assert!(idle.closed().await, "an idle keep-alive connection");
}

#[tokio::test]
async fn draining_closes_idle_connections_at_once_and_busy_ones_after_their_response() {
    let draining = Shutdown::new();
    let address = served(None, DEADLINE, draining.clone()).await;
    let mut idle = Client::connect(address).await;
    idle.send(HELLO).await;
    assert_eq!(idle.response(false).await.body, b"hello");
    // A request in flight when the server drains: its handler waits for its body (the
    // `100 Continue` says the handler has it).
    let mut busy = Client::connect(address).await;
    busy.send(b"POST /echo HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n").await;
    assert_eq!(busy.response(false).await.status, 100);
    draining.end();
    assert!(idle.closed().await, "an idle connection closes at once");
    busy.send(b"ok").await;
    let answer = busy.response(false).await;
    assert_eq!(answer.body, b"ok");
    assert_eq!(answer.header("connection"), Some("close"), "{}", answer.head);
    assert!(busy.closed().await);
}
