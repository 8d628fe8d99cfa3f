//! An upstream's Server-Sent Events read over a real socket on every runtime, through the
//! bounded decoder each adapter re-exports (feature `sse`): events split across reads come
//! out whole, in order, and an event past the bound is an error, not a growing buffer.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};

use ::smol::Async;
use futures::{AsyncReadExt, Stream};
use streamflight_core::sse::{Events, EventsError};
use streamflight_tests::wait::next_within;
use streamflight_tests::{TestRuntime, scenarios};

/// A body of byte chunks, for naming the decoder's constructor.
type Body = futures::stream::Empty<Result<Vec<u8>, std::io::Error>>;

// The decoder every adapter re-exports is the one read here.
const _: [fn(Body, usize) -> Events<Body>; 3] = [
    streamflight_tokio::sse::Events::new,
    streamflight_async_std::sse::Events::new,
    streamflight_smol::sse::Events::new,
];

scenarios! {
    events_split_across_reads_come_out_whole,
    an_event_over_the_bound_is_an_error_not_a_buffer,
}

/// A server that writes `pieces` one write each on the first connection, then closes it.
fn upstream(pieces: &'static [&'static str]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        for piece in pieces {
            socket.write_all(piece.as_bytes()).unwrap();
            socket.flush().unwrap();
        }
    });
    address
}

/// What the upstream at `address` writes, as chunks of at most `size` bytes, read through
/// async-io's reactor (it serves every runtime of the suite).
async fn chunks(address: SocketAddr, size: usize) -> impl Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let socket = Async::<TcpStream>::connect(address).await.unwrap();
    futures::stream::unfold(Some(socket), move |socket| async move {
        let mut socket = socket?;
        let mut buffer = vec![0; size];
        match socket.read(&mut buffer).await {
            Ok(0) => None,
            Ok(read) => {
                buffer.truncate(read);
                Some((Ok(buffer), Some(socket)))
            }
            Err(error) => Some((Err(error), None)),
        }
    })
}

async fn events_split_across_reads_come_out_whole<R: TestRuntime>() {
    let address = upstream(&[
        "event: delta\ndata: {\"t\":\"Hel",
        "lo\"}\n\nid: 7\ndata: a\ndata: b\n",
        "\n: a comment\n\n",
    ]);
    let mut decoded = Events::new(Box::pin(chunks(address, 8).await), 1024);
    let mut events = Vec::new();
    while let Some(event) = next_within::<R, _>("the next event", &mut decoded).await {
        events.push(event);
    }
    assert_eq!(events.len(), 2, "{events:?}");
    let first = events[0].as_ref().unwrap();
    assert_eq!(first.name.as_deref(), Some(&b"delta"[..]));
    assert_eq!(&first.data[..], br#"{"t":"Hello"}"#);
    let second = events[1].as_ref().unwrap();
    assert_eq!(&second.data[..], b"a\nb");
    assert_eq!(second.id.as_deref(), Some(&b"7"[..]));
}

async fn an_event_over_the_bound_is_an_error_not_a_buffer<R: TestRuntime>() {
    let address = upstream(&["data: ", "0123456789abcdef0123456789abcdef\n\n"]);
    let mut events = Events::new(Box::pin(chunks(address, 64).await), 16);
    let first = next_within::<R, _>("the refusal", &mut events).await;
    assert!(matches!(first, Some(Err(EventsError::Decode(_)))), "{first:?}");
}
