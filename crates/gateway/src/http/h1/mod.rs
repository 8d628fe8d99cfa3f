//! The gateway's own HTTP/1.1 server connection: requests read, handed to the router and
//! answered in the connection's own task, with no read or write buffer held while a response streams.
//!
//! hyper's kept an 8 KiB read buffer and an 8 KiB write buffer per connection for its whole life
//! (BENCHMARKS.md, issue 26). Here a head is read into a buffer that grows only as needed and
//! goes once the request is handed over (unless it holds pipelined bytes); the body reads the
//! socket itself when its handler polls it ([`body`]); the response goes out frame by frame
//! straight from its `Bytes` ([`write`]). No task or channel per connection.

mod body;
mod date;
mod head;
mod socket;
mod write;

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::body::Body as AnyBody;
use axum::http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use tokio::time::error::Elapsed;
use tower::ServiceExt;
use tower::util::Oneshot;
use tracing::{debug, trace};

use body::Body;
use head::Read;
use socket::{Interim, Socket, Writer};
use write::{Asked, Unsent};

use crate::http::serve::{Accepted, Shutdown};
use crate::http::write_timeout::{Limit, WriteTimeout};

/// What the connection is served with, beside its socket.
pub(crate) struct Setup<'a> {
    pub(crate) app: Router,
    pub(crate) accepted: Accepted,
    /// Time a client has for a whole head, from the connection's start and from each
    /// response's end (so it also closes idle keep-alive connections).
    pub(crate) header_timeout: Duration,
    /// Fires when the server drains: an idle connection closes at once, a busy one after its
    /// response.
    pub(crate) draining: &'a Shutdown,
    /// The write timeout.
    pub(crate) writes: Arc<Limit>,
}

/// Serves HTTP/1.1 on `stream` until the client closes, a request or response says close,
/// the server drains, a head is refused or times out, or a write fails.
///
/// Not an `async fn`: its arguments would stay in the connection's task beside what is made of
/// them. The task holds, while a response streams, the connection's few fields and the
/// response's writing: every other phase is boxed or lives between two awaits (BENCHMARKS.md,
/// issue 26: it was 1.9 KB a held stream).
pub(crate) fn serve(
    stream: tokio::net::TcpStream,
    served: Setup<'_>,
) -> impl Future<Output = ()> + Send + '_ {
    let Setup { app, accepted, header_timeout, draining, writes } = served;
    let socket = Arc::new(Socket::new(stream));
    let mut io = WriteTimeout::new(Writer(Arc::clone(&socket)), writes);
    let connection = Connection { app, accepted, header_timeout, draining, socket };
    // Borrowed by `run`, not moved into it: an `async fn` keeps its arguments twice.
    async move { connection.run(&mut io).await }
}

/// A client connection's own state, beside the writer of its responses.
struct Connection<'a> {
    app: Router,
    accepted: Accepted,
    header_timeout: Duration,
    draining: &'a Shutdown,
    socket: Arc<Socket>,
}

/// What to do after a head was read, or was not.
enum Step {
    /// Close the connection (why is logged).
    Close,
    /// Answer the request: the router's answer, boxed (it is large and lives only until the
    /// response's head), and what the request asked of its response.
    Route(Pin<Box<Oneshot<Router, Request<Body>>>>, Asked),
    /// Refuse the request with this status, then close.
    Refuse(StatusCode),
}

impl Connection<'_> {
    async fn run(&self, io: &mut WriteTimeout<Writer>) {
        let peer = &self.accepted.peer;
        loop {
            let received = std::mem::take(&mut self.socket.slot().received);
            // Boxed: its timer lives only while a head is awaited, not while a response streams.
            let reading = Box::pin(async {
                tokio::select! {
                    biased;
                    () = self.draining.over() => None,
                    read = tokio::time::timeout(self.header_timeout, head::read(&self.socket, received)) => Some(read),
                }
            });
            let (response, asked) = match self.begin(reading.await) {
                Step::Close => return,
                Step::Refuse(status) => {
                    let mut response = Response::new(AnyBody::empty());
                    *response.status_mut() = status;
                    (response, Asked { head: false, http10: false, keep_alive: false })
                }
                Step::Route(mut answer, asked) => {
                    let answered = poll_fn(|cx| match answer.as_mut().poll(cx) {
                        Poll::Ready(Ok(response)) => Poll::Ready(Some(response)),
                        Poll::Ready(Err(infallible)) => match infallible {},
                        Poll::Pending => self.socket.poll_gone(cx).map(|_| None),
                    })
                    .await;
                    drop(answer);
                    let Some(response) = answered else {
                        return debug!(%peer, "the client closed its connection before its response");
                    };
                    (response, Asked { keep_alive: asked.keep_alive && !self.draining.is_over(), ..asked })
                }
            };
            let (head, body) = prepare(&self.socket, response, asked);
            let keep_alive = head.keep_alive;
            match write::send(io, &self.socket, head.bytes, head.delimit, body).await {
                Ok(()) if keep_alive && reusable(&self.socket) => {}
                Ok(()) => return self.socket.finish(),
                Err(Unsent::Gone) => {
                    return debug!(%peer, "the client closed its connection during its response");
                }
                Err(Unsent::Write(error)) => return debug!(%peer, %error, "cannot write a response"),
                Err(Unsent::Body(error)) => {
                    debug!(%peer, %error, "a response's body failed: closing its connection");
                    return self.socket.finish();
                }
            }
            if self.draining.is_over() {
                return self.socket.finish();
            }
        }
    }

    /// What to do with what reading a head came to (`None`: the server drains); logged here
    /// when it ends the connection.
    fn begin(&self, read: Option<Result<Read, Elapsed>>) -> Step {
        let peer = self.accepted.peer;
        let (head, rest) = match read {
            None => {
                trace!(%peer, "closing an idle connection: the server drains");
                return Step::Close;
            }
            Some(Err(_elapsed)) => {
                debug!(%peer, "closing a connection without a whole head for {:?}", self.header_timeout);
                return Step::Close;
            }
            Some(Ok(Read::Head(head, rest))) => (head, rest),
            Some(Ok(Read::Closed)) => {
                trace!(%peer, "connection closed");
                return Step::Close;
            }
            Some(Ok(Read::Broken(why))) => {
                debug!(%peer, why, "connection closed");
                return Step::Close;
            }
            Some(Ok(Read::Refused(refused))) => {
                debug!(%peer, status = %refused.status, why = refused.why, "request head refused");
                return Step::Refuse(refused.status);
            }
        };
        let asked = Asked {
            head: head.parts.method == axum::http::Method::HEAD,
            http10: head.parts.version == Version::HTTP_10,
            keep_alive: head.keep_alive,
        };
        {
            let mut slot = self.socket.slot();
            slot.request += 1;
            slot.received = rest;
            slot.framing = head.framing;
            slot.interim = if head.expects_continue { Interim::Owed(0) } else { Interim::None };
        }
        let mut request = Request::from_parts(head.parts, Body::new(Arc::clone(&self.socket)));
        request.extensions_mut().insert(self.accepted);
        Step::Route(Box::pin(self.app.clone().oneshot(request)), asked)
    }
}

/// `response` to the request `asked`, its head written out (with what is left of a
/// `100 Continue` begun in front), and its body.
fn prepare(socket: &Socket, response: Response<AnyBody>, asked: Asked) -> (write::Head, AnyBody) {
    let (mut parts, body) = response.into_parts();
    // A body its handler let go of unread, and whose rest has not come: the response says the
    // connection closes (one still held may yet be read: that is known after the response).
    let unread = {
        let slot = socket.slot();
        !slot.held && !slot.framing.ended()
    };
    let asked = Asked { keep_alive: asked.keep_alive && (!unread || reusable(socket)), ..asked };
    let mut head = write::head(&mut parts, body.size_hint(), asked);
    // The response comes first: a `100 Continue` not begun is no longer sent, and the rest
    // of one begun goes before the head.
    let mut slot = socket.slot();
    if let Interim::Owed(at) = std::mem::replace(&mut slot.interim, Interim::None)
        && let Some(rest) = socket::CONTINUE.get(at..).filter(|_| at > 0)
    {
        head.bytes.splice(0..0, rest.iter().copied());
    }
    (head, body)
}

/// Whether the next request can be read after this one's response: its body has been read to
/// its end, or its rest is all in the bytes received already (taken now, not read for).
fn reusable(socket: &Socket) -> bool {
    let mut slot = socket.slot();
    if slot.framing.ended() {
        return true;
    }
    let received = std::mem::take(&mut slot.received);
    let mut ignored = Vec::new();
    match slot.framing.decode(&received, &mut ignored) {
        Ok(used) if slot.framing.ended() => {
            slot.received = received.get(used..).map(<[u8]>::to_vec).unwrap_or_default();
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
