//! An upstream's Server-Sent Events read over a real socket on async-std, through the re-exported
//! bounded decoder (feature `sse`): events split across reads come out whole, in order.

use std::io::Write;
use std::net::TcpListener;

use futures::{AsyncReadExt, StreamExt};
use streamflight_async_std::sse::{Events, EventsError};

/// A server that writes `pieces` one write each on the first connection, then closes it.
fn upstream(pieces: &'static [&'static str]) -> std::net::SocketAddr {
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

#[test]
fn events_split_across_reads_come_out_whole() {
    let address = upstream(&[
        "event: delta\ndata: {\"t\":\"Hel",
        "lo\"}\n\nid: 7\ndata: a\ndata: b\n",
        "\n: a comment\n\n",
    ]);
    async_std::task::block_on(async {
        let socket = async_std::net::TcpStream::connect(address).await.unwrap();
        let chunks = futures::stream::unfold(socket, |mut socket| async move {
            let mut buffer = vec![0; 8];
            match socket.read(&mut buffer).await {
                Ok(0) => None,
                Ok(read) => {
                    buffer.truncate(read);
                    Some((Ok::<_, std::io::Error>(buffer), socket))
                }
                Err(error) => Some((Err(error), socket)),
            }
        });
        let events: Vec<_> = Events::new(Box::pin(chunks), 1024).collect().await;
        assert_eq!(events.len(), 2, "{events:?}");
        let first = events[0].as_ref().unwrap();
        assert_eq!(first.name.as_deref(), Some(&b"delta"[..]));
        assert_eq!(&first.data[..], br#"{"t":"Hello"}"#);
        let second = events[1].as_ref().unwrap();
        assert_eq!(&second.data[..], b"a\nb");
        assert_eq!(second.id.as_deref(), Some(&b"7"[..]));
    });
}

#[test]
fn an_event_over_the_bound_is_an_error_not_a_buffer() {
    let address = upstream(&["data: ", "0123456789abcdef0123456789abcdef\n\n"]);
    async_std::task::block_on(async {
        let socket = async_std::net::TcpStream::connect(address).await.unwrap();
        let mut all = Vec::new();
        let (mut socket, mut buffer) = (socket, vec![0; 64]);
        loop {
            let read = socket.read(&mut buffer).await.unwrap();
            if read == 0 {
                break;
            }
            all.push(Ok::<_, std::io::Error>(buffer[..read].to_vec()));
        }
        let mut events = Events::new(futures::stream::iter(all), 16);
        assert!(matches!(events.next().await, Some(Err(EventsError::Decode(_)))));
    });
}
