//! A plain `http://` upstream over HTTP/1.1 (vLLM, Ollama) through hyper's own client connections,
//! pooled here: reqwest's layers cost a held stream and a request more (BENCHMARKS.md, issue 26).
//!
//! TLS, HTTP/2 and proxies stay with reqwest. G6: no redirect is followed (hyper follows none) and
//! the URL holds no credential. G9: `TCP_NODELAY`, and a connection is reused once its response ends.

mod pool;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::header::{ACCEPT, HOST};
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use bytes::Bytes;
use futures::FutureExt;
use http_body::{Body as _, Frame};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::Builder;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::upstream::client::{POOL_IDLE_TIMEOUT, UpstreamUrl, describe};
use pool::{Pool, Sender};

/// What hyper reads from a connection at a time, and so the largest response head taken: an
/// LLM server's head is a few hundred bytes, and a held stream keeps this buffer (hyper's
/// adaptive default starts at 8 KiB and may grow to 400).
const READ_BUF: usize = 4096;

/// Idle connections kept for the next requests: beyond this many, a burst's connections are
/// closed when it ends (each idle one holds ~20 KB: hyper's write buffer and dispatch channel).
const MAX_IDLE: usize = 256;

/// How long the rest of a body whose answer has ended (after Chat's `[DONE]`) is waited for,
/// so that its connection can be used again: the upstream sends it at once.
const LINGER: Duration = Duration::from_secs(1);

/// The client of one plain `http://` upstream.
pub(crate) struct Http1 {
    /// The host to connect to (an IPv6 address without its brackets) and its port.
    host: String,
    port: u16,
    /// The `Host` header: the URL's host and any port it names.
    authority: HeaderValue,
    connect_timeout: Duration,
    handshake: Builder,
    pool: Arc<Pool>,
}

impl Http1 {
    /// The client of `url` if it is a plain `http://` URL, else `None`.
    /// `per_thread`: each idle connection is reused only from the thread that last used it
    /// (connection threads, `--connection-threads`).
    pub(crate) fn new(url: &UpstreamUrl, connect_timeout: Duration, per_thread: bool) -> Option<Http1> {
        let (host, port, authority) = url.plain_http()?;
        let authority = HeaderValue::from_str(&authority).ok()?;
        let mut handshake = Builder::new();
        handshake.read_buf_exact_size(Some(READ_BUF));
        let pool = Pool::new(MAX_IDLE, POOL_IDLE_TIMEOUT, per_thread);
        Some(Http1 { host: host.to_owned(), port, authority, connect_timeout, handshake, pool })
    }

    /// POSTs `body` with `headers` (end-to-end ones; `Host` is set here) to `path_and_query`
    /// on an idle connection, or a new one. A request that an idle connection never sent
    /// (the upstream closed it as it was taken) is sent again on another. The error is its
    /// text, for the operator.
    pub(crate) async fn post(
        &self,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<Body>, String> {
        let uri =
            Uri::try_from(path_and_query).map_err(|e| format!("the request's path is not valid: {e}"))?;
        headers.insert(HOST, self.authority.clone());
        // What reqwest sends when the client sent none: the same upstream request either way.
        headers.entry(ACCEPT).or_insert(HeaderValue::from_static("*/*"));
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        loop {
            let (mut sender, reused) = match self.pool.take() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            // A reused connection may still be reading the end of its last response.
            if let Err(error) = sender.ready().await {
                if reused {
                    continue;
                }
                return Err(describe(&error));
            }
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let pool = Arc::clone(&self.pool);
                    return Ok(response.map(|incoming| Body { incoming, sender: Some(sender), pool }));
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(describe(&error.into_error())),
                },
            }
        }
    }

    /// A new connection, its task spawned.
    async fn connect(&self) -> Result<Sender, String> {
        let connecting = TcpStream::connect((self.host.as_str(), self.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Err(_) => {
                return Err(format!("no connection within {:?} (--connect-timeout)", self.connect_timeout));
            }
            Ok(Err(error)) => return Err(format!("cannot connect: {error}")),
            Ok(Ok(stream)) => stream,
        };
        stream.set_nodelay(true).map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
        let (sender, connection) =
            self.handshake.handshake(TokioIo::new(stream)).await.map_err(|e| describe(&e))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %describe(&error), "an upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// How many connections are idle.
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.pool.len()
    }
}

/// A response's body: its connection goes back to the pool when the body has ended, and is
/// closed if the body is dropped before (the upstream then stops generating).
pub(crate) struct Body {
    incoming: Incoming,
    sender: Option<Sender>,
    pool: Arc<Pool>,
}

impl Body {
    /// The answer has ended: waits up to [`LINGER`] for the body's own end (its last chunk) in
    /// a task of its own, so that its connection can be used again.
    pub(crate) fn finish(mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if self.sender.is_none() {
            return;
        }
        // Already there, most often: no task needed.
        if std::future::poll_fn(|cx| self.poll_rest(cx)).now_or_never().is_some() {
            return;
        }
        runtime.spawn(async move {
            let _ = tokio::time::timeout(LINGER, std::future::poll_fn(|cx| self.poll_rest(cx))).await;
        });
    }

    /// Reads and drops the rest of the body, at most [`READ_BUF`] bytes of it (more is not an
    /// answer's end).
    fn poll_rest(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut read = 0;
        loop {
            match Pin::new(&mut *self).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    read += frame.data_ref().map_or(0, Bytes::len);
                    if read > READ_BUF {
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(_) => return Poll::Ready(()),
            }
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.incoming).poll_frame(cx);
        if let Poll::Ready(None) = polled
            && let Some(sender) = self.sender.take()
        {
            self.pool.put(sender);
        }
        polled
    }
}

#[cfg(test)]
mod tests;
