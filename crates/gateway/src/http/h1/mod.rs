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
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::body::Body as AnyBody;
use axum::http::{Request, Response, Version};
use http_body::Body as _;
use tower::ServiceExt;
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
pub(crate) async fn serve(stream: tokio::net::TcpStream, served: Setup<'_>) {
    let Setup { app, accepted, header_timeout, draining, writes } = served;
    let peer = accepted.peer;
    let socket = Arc::new(Socket::new(stream));
    let mut io = WriteTimeout::new(Writer(Arc::clone(&socket)), writes);
    loop {
        let received = std::mem::take(&mut socket.slot().received);
        // Boxed: its timer lives only while a head is awaited, not while a response streams.
        let reading = Box::pin(async {
            tokio::select! {
                biased;
                () = draining.over() => None,
                read = tokio::time::timeout(header_timeout, head::read(&socket, received)) => Some(read),
            }
        });
        let (head, rest) = match reading.await {
            None => return trace!(%peer, "closing an idle connection: the server drains"),
            Some(Err(_elapsed)) => {
                return debug!(%peer, "closing a connection without a whole head for {header_timeout:?}");
            }
            Some(Ok(Read::Head(head, rest))) => (head, rest),
            Some(Ok(Read::Closed)) => return trace!(%peer, "connection closed"),
            Some(Ok(Read::Broken(why))) => return debug!(%peer, why, "connection closed"),
            Some(Ok(Read::Refused(refused))) => {
                debug!(%peer, status = %refused.status, why = refused.why, "request head refused");
                let mut response = Response::new(AnyBody::empty());
                *response.status_mut() = refused.status;
                let asked = Asked { head: false, http10: false, keep_alive: false };
                let _ = respond(&mut io, &socket, response, asked).await;
                return socket.finish();
            }
        };
        let asked = Asked {
            head: head.parts.method == axum::http::Method::HEAD,
            http10: head.parts.version == Version::HTTP_10,
            keep_alive: head.keep_alive,
        };
        {
            let mut slot = socket.slot();
            slot.request += 1;
            slot.received = rest;
            slot.framing = head.framing;
            slot.interim = if head.expects_continue { Interim::Owed(0) } else { Interim::None };
        }
        let mut request = Request::from_parts(head.parts, Body::new(Arc::clone(&socket)));
        request.extensions_mut().insert(accepted);
        // Boxed: the router's future is large and lives only until the response's head.
        let mut answer = Box::pin(app.clone().oneshot(request));
        let answered = poll_fn(|cx| match answer.as_mut().poll(cx) {
            Poll::Ready(Ok(response)) => Poll::Ready(Some(response)),
            Poll::Ready(Err(infallible)) => match infallible {},
            Poll::Pending => socket.poll_gone(cx).map(|_| None),
        })
        .await;
        drop(answer);
        let Some(response) = answered else {
            return debug!(%peer, "the client closed its connection before its response");
        };
        let asked = Asked { keep_alive: asked.keep_alive && !draining.is_over(), ..asked };
        match respond(&mut io, &socket, response, asked).await {
            Ok(true) if reusable(&socket) => {}
            Ok(_) => return socket.finish(),
            Err(Unsent::Gone) => return debug!(%peer, "the client closed its connection during its response"),
            Err(Unsent::Write(error)) => return debug!(%peer, %error, "cannot write a response"),
            Err(Unsent::Body(error)) => {
                debug!(%peer, %error, "a response's body failed: closing its connection");
                return socket.finish();
            }
        }
        if draining.is_over() {
            return socket.finish();
        }
    }
}

/// Writes `response` to the request `asked`; whether the connection may serve another.
async fn respond(
    io: &mut WriteTimeout<Writer>,
    socket: &Socket,
    response: Response<AnyBody>,
    asked: Asked,
) -> Result<bool, Unsent> {
    let (mut parts, body) = response.into_parts();
    // A body its handler let go of unread, and whose rest has not come: the response says the
    // connection closes (one still held may yet be read: that is known after the response).
    let unread = {
        let slot = socket.slot();
        !slot.held && !slot.framing.ended()
    };
    let asked = Asked { keep_alive: asked.keep_alive && (!unread || reusable(socket)), ..asked };
    let head = write::head(&mut parts, body.size_hint(), asked);
    drop(parts);
    let mut bytes = head.bytes;
    {
        // The response comes first: a `100 Continue` not begun is no longer sent, and the rest
        // of one begun goes before the head.
        let mut slot = socket.slot();
        if let Interim::Owed(at) = std::mem::replace(&mut slot.interim, Interim::None)
            && let Some(rest) = socket::CONTINUE.get(at..).filter(|_| at > 0)
        {
            bytes.splice(0..0, rest.iter().copied());
        }
    }
    write::send(io, socket, bytes, head.delimit, body).await?;
    Ok(head.keep_alive)
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
