//! A plain `http://` upstream over HTTP/1.1 (vLLM, Ollama) through a client of the gateway's
//! own: a pooled socket per request, read by the flight's task (BENCHMARKS.md, issue 26).
//!
//! No task or channel per connection, and no buffer held between a stream's pieces: hyper's
//! client kept ~20 KB a held stream. TLS, HTTP/2 and proxies stay with reqwest. G6: no redirect
//! is followed and the URL holds no credential. G9: `TCP_NODELAY`, and a connection is reused
//! once its response ends.

mod body;
mod head;
mod pool;
mod request;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Response};
use bytes::Bytes;
use tokio::net::TcpStream;

pub(crate) use body::Body;
use pool::Pool;

use crate::upstream::client::{POOL_IDLE_TIMEOUT, UpstreamUrl};

/// Idle connections kept for the next requests: beyond this many, a burst's connections are
/// closed when it ends.
const MAX_IDLE: usize = 256;

/// The client of one plain `http://` upstream.
pub(crate) struct Http1 {
    /// The host to connect to (an IPv6 address without its brackets) and its port.
    host: String,
    port: u16,
    /// The `Host` header: the URL's host and any port it names.
    authority: HeaderValue,
    connect_timeout: Duration,
    pool: Arc<Pool>,
}

impl Http1 {
    /// The client of `url` if it is a plain `http://` URL, else `None`.
    /// `per_thread`: each idle connection is reused only from the thread that last used it
    /// (connection threads, `--connection-threads`).
    pub(crate) fn new(url: &UpstreamUrl, connect_timeout: Duration, per_thread: bool) -> Option<Http1> {
        let (host, port, authority) = url.plain_http()?;
        let authority = HeaderValue::from_str(&authority).ok()?;
        let pool = Pool::new(MAX_IDLE, POOL_IDLE_TIMEOUT, per_thread);
        Some(Http1 { host: host.to_owned(), port, authority, connect_timeout, pool })
    }

    /// POSTs `body` with `headers` (end-to-end ones; `Host` is set here) to `path_and_query`
    /// on an idle connection, or a new one, and reads the response's head. The error is its
    /// text, for the operator.
    ///
    /// An idle connection the upstream closed meanwhile (its idle timeout, a restart) shows as
    /// a failed write or as a close before any response byte: the request is then sent once
    /// more, on a new connection. Only then: as every HTTP client does (hyper, Go's, curl), a
    /// POST is never sent again once any byte of an answer came, or when a new connection
    /// failed, since the upstream may have begun to generate.
    pub(crate) async fn post(
        &self,
        path_and_query: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<Body>, String> {
        let head = request::head(path_and_query, &self.authority, &headers, body.len())?;
        let mut idle = self.pool.take();
        loop {
            let reused = idle.is_some();
            let stream = match idle.take() {
                Some(stream) => stream,
                None => self.connect().await?,
            };
            match self.exchange(stream, &head, &body).await {
                Ok(response) => return Ok(response),
                Err(failed) if failed.unanswered && reused => continue,
                Err(failed) => return Err(failed.text),
            }
        }
    }

    /// Sends the request's `head` and `body` on `stream` and reads the response's head.
    async fn exchange(
        &self,
        mut stream: TcpStream,
        head: &[u8],
        body: &[u8],
    ) -> Result<Response<Body>, Failed> {
        if let Err(error) = request::write(&mut stream, head, body).await {
            return Err(Failed::unanswered(format!("cannot send the request: {error}")));
        }
        let head = head::read(&mut stream).await?;
        let body = Body::new(stream, head.framing, head.keep_alive, head.rest, Arc::clone(&self.pool))
            .map_err(|text| Failed::answered(format!("the response's body is not valid: {text}")))?;
        let mut response = Response::new(body);
        *response.status_mut() = head.status;
        *response.headers_mut() = head.headers;
        Ok(response)
    }

    /// A new connection.
    async fn connect(&self) -> Result<TcpStream, String> {
        let connecting = TcpStream::connect((self.host.as_str(), self.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Err(_) => {
                return Err(format!("no connection within {:?} (--connect-timeout)", self.connect_timeout));
            }
            Ok(Err(error)) => return Err(format!("cannot connect: {error}")),
            Ok(Ok(stream)) => stream,
        };
        stream.set_nodelay(true).map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
        Ok(stream)
    }

    /// How many connections are idle.
    #[cfg(test)]
    pub(crate) fn idle(&self) -> usize {
        self.pool.len()
    }
}

/// Why a request got no response, and whether nothing at all came back: only such a request
/// may be sent again (on a new connection, when this one was reused).
struct Failed {
    text: String,
    /// Nothing came back: the connection failed as the request was written, or closed (or was
    /// reset) before any byte of a response.
    unanswered: bool,
}

impl Failed {
    /// A failure before any byte of a response.
    fn unanswered(text: String) -> Failed {
        Failed { text, unanswered: true }
    }

    /// A failure once a response had begun, or that a retry would not mend.
    fn answered(text: String) -> Failed {
        Failed { text, unanswered: false }
    }
}

#[cfg(test)]
mod tests;
