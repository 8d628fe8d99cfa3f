//! The connection layer: how client connections are accepted, kept and closed.
//!
//! It replaces `axum::serve`, which leaves out what a proxy needs (DESIGN.md, G7-G9):
//!
//! - **No added wait (G9).** Every accepted socket gets `TCP_NODELAY`, so a small write is not held
//!   back until the client's delayed ACK (about 40 ms). HTTP/1.1 and HTTP/2 with prior knowledge
//!   (h2c) are served on the same port. [`bind`] sets the listen backlog explicitly (the default
//!   of 128 overflowed under a burst of clients).
//! - **Bounded (G7).** Four guards, so that no connection is kept without a request in flight for
//!   longer than [`Connections::header_timeout`] (plus at most as long again to close it):
//!   - HTTP/1: the connection's header timeout (`http::h1`): its timer starts whenever the
//!     connection starts reading a request head, at the start and again after every response,
//!     so it closes both half-sent heads and idle keep-alive connections.
//!   - Before the protocol is known: the connection's first bytes (HTTP/2's preface or an HTTP/1
//!     request line) must come within `header_timeout`, so a peer that sends nothing is not held
//!     forever. Each connection is then served by the gateway's own HTTP/1.1 connection, which
//!     holds no buffer while a response streams (issue 26), or by hyper's HTTP/2 one (`sniff`).
//!   - HTTP/2, which has no idle timeout of its own: a watchdog that counts the requests in flight
//!     (from the moment a head has been parsed until the response body has been sent or dropped).
//!     Once there has been none for `header_timeout`, it shuts the connection down gracefully,
//!     and drops it if it is still there, still without a request, after `header_timeout` more.
//!     Watching requests rather than reads means a slow upload or a long stream is never cut by it.
//!   - HTTP/2: keep-alive pings every [`H2_PING_INTERVAL`], closing the connection when one is not
//!     acknowledged within [`H2_PING_TIMEOUT`], so a vanished peer does not hold a long stream.
//!   - Both protocols: a write timeout ([`Connections::write_timeout`], G11): a client that takes
//!     no byte of its response for that long has its connection closed (see
//!     [`write_timeout`](crate::http::write_timeout) for how, and for what it does not cover).
//! - **Graceful (G8).** [`serve`] runs until its `stop` future resolves (in the gateway:
//!   [`signal`]), then stops accepting, asks every connection to finish gracefully (HTTP/1:
//!   finish the request in flight, then close; HTTP/2: GOAWAY), waits up to
//!   [`Connections::shutdown_grace`], then fires [`Shutdown`] so that the streams still open end
//!   themselves with an error event, waits up to [`LAST_WRITES`] for those bytes, and closes what
//!   is left. With [`serve_settling`], it also waits (within the same grace period) for
//!   what else the process must finish before it exits: the gateway's flights led for other
//!   replicas of its fleet (R26).
//!
//! Accept errors (`EMFILE` and the like) never end the server: they are logged and accepting
//! pauses for [`ACCEPT_BACKOFF`], since retrying at once would only spin while descriptors are out.

use std::convert::Infallible;
use std::future::{Future, pending};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::{Service, service_fn};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinError, JoinSet};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tower::ServiceExt;
use tracing::{debug, error, info, trace, warn};

use crate::http::guarded::Guarded;
use crate::http::write_timeout::{Limit, WriteTimeout, WriteTimeouts};

/// How often an HTTP/2 connection is pinged when the peer has sent nothing in the meantime.
pub const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
/// How long an HTTP/2 ping may go unacknowledged before the connection is closed.
pub const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// How long, after [`Shutdown`] has fired, the streams have to write their last bytes.
pub const LAST_WRITES: Duration = Duration::from_secs(2);
/// How long accepting pauses after an error such as `EMFILE`.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How connections are accepted and kept.
#[derive(Clone, Debug)]
pub struct Connections {
    /// Time a client has to send a request's head, counted from the connection's start or
    /// the end of its previous response; so it also closes idle keep-alive connections.
    /// Must be above zero: zero would close every connection before its first request.
    pub header_timeout: Duration,
    /// Time to let in-flight requests finish after SIGTERM/SIGINT (or the shutdown future).
    pub shutdown_grace: Duration,
    /// Time a client may leave its response's bytes untaken (its socket's send buffer full)
    /// before its connection is closed, and the responses on it dropped. Zero: no limit.
    pub write_timeout: Duration,
    /// Where the connections closed by `write_timeout` are counted.
    pub write_timeouts: WriteTimeouts,
    /// Connection workers (`--connection-threads`): 0 serves every connection on the caller's
    /// runtime; more, each connection on one of that many single-threaded runtimes. The
    /// process's first serve sets their number for its life.
    pub workers: usize,
}

/// What the connection layer knows of the connection a request arrived on: it is in every
/// request's extensions (`axum::Extension<Accepted>`).
#[derive(Clone, Copy, Debug)]
pub struct Accepted {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether `TCP_NODELAY` is on for the socket, as the kernel reports it after the connection
    /// layer set it (false only if setting it failed, which is logged).
    pub nodelay: bool,
}

/// The signal streams watch: fires when the grace period is over and every stream still
/// open must end now (with an error event: the caller's business).
///
/// Clones share one signal. It fires once and stays fired. The server's own signal to its
/// connections to finish (draining) is one too.
///
/// A flag and a `Notify`: a waiter costs a `Notified` (a `watch` receiver and its `wait_for`
/// cost twice as much, in every held stream and connection; BENCHMARKS.md, issue 15).
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    signal: Arc<Signal>,
}

#[derive(Debug, Default)]
struct Signal {
    fired: AtomicBool,
    notify: Notify,
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Resolves once the signal has fired (at once if it already has).
    pub async fn over(&self) {
        loop {
            // Registered before the flag is read, so that a firing in between is not missed.
            let mut fired = pin!(self.signal.notify.notified());
            fired.as_mut().enable();
            if self.is_over() {
                return;
            }
            fired.await;
        }
    }

    /// Whether the signal has fired.
    pub fn is_over(&self) -> bool {
        self.signal.fired.load(Ordering::Acquire)
    }

    /// Fires the signal. [`serve`] does this when the grace period is over; it is public so that
    /// a stream's handling of it can be tested without a server.
    pub fn end(&self) {
        self.signal.fired.store(true, Ordering::Release);
        self.signal.notify.notify_waiters();
    }
}

/// Binds `address` with a listen backlog of `backlog` (at least 1,024 by default upstream of
/// this), with `SO_REUSEADDR` so that a restart does not wait for the old connections' TIME_WAIT.
///
/// The kernel caps the backlog at `net.core.somaxconn` (4,096 by default on Linux since 5.4).
/// Needs a Tokio runtime with I/O enabled; without a runtime it returns an error.
pub fn bind(address: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    // Registering the listener with the reactor panics outside a runtime: make it an error.
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other("binding a listener needs a Tokio runtime"));
    }
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(backlog)
}

/// Resolves on SIGTERM or SIGINT (on other platforms than unix: on ctrl-c); SIGHUP never ends
/// it: tools send SIGHUP to ask for a reload or a log reopen, which must not cut every stream.
/// With a reloader watching ([`crate::reload::watch`], as the binary does) SIGHUP is its to
/// act on; without one it is logged and ignored.
///
/// The signals are watched from the call, not from the first poll: call it before telling
/// anyone the gateway is up, so that a signal sent then does not find the default action (which
/// ends the process). Needs a Tokio runtime with signals enabled; outside one, or if a signal
/// cannot be watched, that is logged and the others are still watched. Once watched, a signal
/// no longer ends the process by itself, for the process's whole life: to act on a second one
/// (say, to exit at once on a second ctrl-c), call this again.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};

        fn watch(kind: SignalKind, name: &'static str) -> Option<Signal> {
            // Watching outside a runtime panics: make it a warning.
            if tokio::runtime::Handle::try_current().is_err() {
                warn!("cannot watch {name}: no Tokio runtime");
                return None;
            }
            signal(kind).map_err(|error| warn!(%error, "cannot watch {name}")).ok()
        }
        async fn received(signal: Option<Signal>) {
            if let Some(mut signal) = signal
                && signal.recv().await.is_some()
            {
                return;
            }
            // Not watched, or (`None`) no more signals can arrive: this one never fires.
            pending().await
        }
        async fn ignored(signal: Option<Signal>) -> Infallible {
            if let Some(mut signal) = signal {
                while signal.recv().await.is_some() {
                    if !crate::reload::watched() {
                        info!(
                            "SIGHUP received: ignored; the gateway has nothing to reload (logs go to stderr)"
                        );
                    }
                }
            }
            pending().await
        }
        let term = watch(SignalKind::terminate(), "SIGTERM");
        let int = watch(SignalKind::interrupt(), "SIGINT");
        let hup = watch(SignalKind::hangup(), "SIGHUP");
        async move {
            tokio::select! {
                () = received(term) => info!("SIGTERM received: shutting down"),
                () = received(int) => info!("SIGINT received: shutting down"),
                never = ignored(hup) => match never {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => info!("ctrl-c received: shutting down"),
            Err(error) => {
                warn!(%error, "cannot watch ctrl-c");
                pending::<()>().await;
            }
        }
    }
}

/// Serves `app` on `listener` until `stop` resolves; then stops accepting, lets open
/// requests finish for `shutdown_grace`, then fires `shutdown` (so streams end with an
/// error event), waits up to [`LAST_WRITES`] for those last bytes to be written, closes the
/// connections left, and returns Ok.
///
/// Every request carries an [`Accepted`] extension. Accept errors do not end the loop (see the
/// module's documentation). No protocol upgrade (`Upgrade: ...`) is served: the gateway has none.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    connections: Connections,
    shutdown: Shutdown,
    stop: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_settling(listener, app, connections, shutdown, stop, std::future::ready(())).await
}

/// [`serve`], with one more thing to wait for before the streams still open are told to end:
/// `settled`, awaited once the connections have closed (or the grace period is over), within
/// the same grace period. The gateway waits there for the flights it leads for other replicas
/// of its fleet (R26): its own clients may be gone while theirs still read what it leads.
pub async fn serve_settling(
    listener: TcpListener,
    app: Router,
    connections: Connections,
    shutdown: Shutdown,
    stop: impl Future<Output = ()> + Send + 'static,
    settled: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let protocols = Arc::new(Protocols::new(&connections));
    // Fired once the connections are to finish gracefully.
    let draining = Shutdown::new();
    let mut open = JoinSet::new();
    let mut stop = pin!(stop);
    // Set after an accept error: accepting resumes at this instant.
    let mut resume: Option<Instant> = None;
    debug!(address = ?listener.local_addr().ok(), "accepting connections");

    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            // Reaped as they end, so that the set holds only open connections.
            Some(ended) = open.join_next(), if !open.is_empty() => reap(ended),
            () = sleep_until(resume.unwrap_or_else(Instant::now)), if resume.is_some() => resume = None,
            accepted = listener.accept(), if resume.is_none() => match accepted {
                Ok((stream, peer)) => {
                    trace!(%peer, "connection accepted");
                    let (protocols, app, draining) = (Arc::clone(&protocols), app.clone(), draining.clone());
                    let header_timeout = connections.header_timeout;
                    let serve = move |stream| connection(protocols, stream, peer, app, header_timeout, draining);
                    match crate::http::workers::workers(connections.workers) {
                        Some(workers) => workers.serve(&mut open, stream, serve),
                        None => {
                            open.spawn(serve(stream));
                        }
                    }
                }
                // The peer gave up before the accept: nothing is short, try the next one.
                Err(error) if transient(&error) => debug!(%error, "accept failed"),
                Err(error) => {
                    warn!(%error, "accept failed; pausing accepts for {ACCEPT_BACKOFF:?}");
                    resume = Some(Instant::now() + ACCEPT_BACKOFF);
                }
            },
        }
    }

    // Dropping the listener refuses new connections, those still in the backlog included.
    drop(listener);
    let grace = connections.shutdown_grace;
    info!(connections = open.len(), "stopped accepting; letting open requests finish for up to {grace:?}");
    draining.end();
    let over = Instant::now() + grace;
    let closed = drain(&mut open, grace).await;
    if open.is_empty() {
        info!(closed, "every connection closed within the grace period");
        // What else holds the process (the fleet's flights), within what is left of the grace.
        if timeout(over.saturating_duration_since(Instant::now()), settled).await.is_err() {
            info!("grace period over before the flights led for other replicas ended");
        }
    } else {
        info!(closed, still_open = open.len(), "grace period over; telling the streams still open to end");
    }
    shutdown.end();
    if !open.is_empty() {
        let closed = drain(&mut open, LAST_WRITES).await;
        info!(closed, still_open = open.len(), "streams told to end");
    }
    if !open.is_empty() {
        info!(connections = open.len(), "closing the connections still open");
        open.shutdown().await;
    }
    info!("all connections closed");
    Ok(())
}

/// hyper's HTTP/1.1 read buffer in the `floor` example, and so the largest request head it
/// takes, as the gateway's own connection does (BENCHMARKS.md, issue 15).
const READ_BUFFER: usize = 8 * 1024;

/// The h2c connection builder, with the timers of the module's documentation, and what every
/// connection shares.
///
/// A connection's protocol is told by its first bytes ([`sniff`]) and it is then served by
/// the gateway's HTTP/1.1 connection or this, not by hyper-util's auto connection, which holds
/// room for either protocol in every connection: about 1 KB more per held HTTP/1.1 stream
/// (BENCHMARKS.md, issue 15).
struct Protocols {
    http2: http2::Builder<TokioExecutor>,
    /// Every connection's write timeout.
    writes: Arc<Limit>,
}

impl Protocols {
    fn new(connections: &Connections) -> Protocols {
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT);
        let writes =
            Arc::new(Limit { after: connections.write_timeout, cut: connections.write_timeouts.clone() });
        Protocols { http2, writes }
    }
}

/// How the gateway served HTTP/1.1 with hyper, before its own connection (`http::h1`): public for
/// the `floor` example, which measures what hyper's costs alone: its header timer, the 8 KiB read
/// buffer, and writes flattened into the write buffer rather than queued in a list of their own.
pub fn http1_builder(header_timeout: Duration) -> http1::Builder {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(READ_BUFFER)
        .writev(false);
    http1
}

/// The HTTP/2 connection preface (RFC 9113, section 3.4), with which a client speaking h2c with
/// prior knowledge begins.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Tells HTTP/2's preface from an HTTP/1.1 request by the connection's first bytes, without
/// taking them from the socket; `None` if the peer closed first.
///
/// It looks once, at whatever has arrived: `PRI ` (the preface's first 4 bytes, not an HTTP/1.1
/// method) is HTTP/2, whose server checks the rest (and may send its SETTINGS first, as HTTP/2
/// allows); anything else is HTTP/1.1. Clients write the preface in one piece, so fewer than 4
/// bytes of it come only from a broken peer, whose `PRI * HTTP/2.0` hyper's HTTP/1.1 refuses.
/// Looking once keeps the phase small: waiting for more bytes needs a timer.
async fn sniff(stream: &TcpStream) -> io::Result<Option<Protocol>> {
    const HTTP2: usize = 4;
    let mut first = [0_u8; HTTP2];
    match stream.peek(&mut first).await? {
        0 => Ok(None),
        HTTP2 if first == PREFACE[..HTTP2] => Ok(Some(Protocol::Http2)),
        _ => Ok(Some(Protocol::Http1)),
    }
}

/// An HTTP/2 connection, as [`watched`] sees it (a trait, since its service's type cannot be named).
trait Served: Future<Output = Result<(), hyper::Error>> {
    /// Sends GOAWAY: the open streams finish, no new one is taken, then it ends.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<S> Served for http2::Connection<Io, S, TokioExecutor>
where
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as http_body::Body>::Data: Send,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self);
    }
}

/// An HTTP/2 connection's socket as hyper drives it: its writes bounded by the write timeout.
type Io = TokioIo<WriteTimeout<TcpStream>>;

/// Accept errors that concern one connection only, not the process's resources.
fn transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Waits up to `within` for the open connections to end; returns how many did.
async fn drain(open: &mut JoinSet<()>, within: Duration) -> usize {
    let mut deadline = pin!(sleep(within));
    let mut closed = 0;
    loop {
        tokio::select! {
            biased;
            ended = open.join_next() => match ended {
                Some(ended) => {
                    reap(ended);
                    closed += 1;
                }
                None => return closed,
            },
            () = &mut deadline => return closed,
        }
    }
}

/// Logs how a connection's task ended, if that is news.
fn reap(ended: Result<(), JoinError>) {
    if let Err(error) = ended
        && error.is_panic()
    {
        // On HTTP/1 a handler runs in its connection's task: its panic ends just that connection.
        error!(%error, "a connection's task panicked");
    }
}

/// Why a connection is being closed by the server.
enum Closing {
    /// The server is shutting down.
    Draining,
    /// No request in flight for the header timeout.
    Idle,
}

/// Serves one connection until it ends, the server drains, or it idles out.
///
/// Not an `async fn`, which would keep its arguments twice in the connection's task (as its
/// own and as the locals they are moved to) for the connection's whole life.
fn connection(
    protocols: Arc<Protocols>,
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    draining: Shutdown,
) -> impl Future<Output = ()> + Send {
    if let Err(error) = stream.set_nodelay(true) {
        warn!(%peer, %error, "cannot set TCP_NODELAY");
    }
    // Made here, so that the task keeps the peer's address once (in it).
    let accepted = Accepted { peer, nodelay: stream.nodelay().unwrap_or(false) };
    async move {
        let peer = accepted.peer;

        // Boxed: the compiler would keep this phase's room in the task beside the connection's for
        // the connection's whole life (0.5 KB per held stream); the box goes once the bytes are seen.
        // Until the protocol is known, draining ends the connection at once.
        let sniffed = Box::pin(async {
            tokio::select! {
                sniffed = timeout(header_timeout, sniff(&stream)) => Some(sniffed),
                () = draining.over() => None,
            }
        })
        .await;
        let Some(sniffed) = sniffed else { return };
        match sniffed {
            Ok(Ok(Some(Protocol::Http1))) => {
                // It closes an idle connection itself (the header timeout), and when draining
                // finishes the response in flight, if any, then closes; the server bounds the wait
                // with its grace period.
                let writes = Arc::clone(&protocols.writes);
                let served =
                    crate::http::h1::Setup { app, accepted, header_timeout, draining: &draining, writes };
                crate::http::h1::serve(stream, served).await;
            }
            // Boxed, so that an HTTP/1.1 connection's task has no room for HTTP/2's state.
            Ok(Ok(Some(Protocol::Http2))) => {
                let io: Io = TokioIo::new(WriteTimeout::new(stream, Arc::clone(&protocols.writes)));
                let in_flight = Arc::new(InFlight::default());
                let service = service(app, accepted, Some(Arc::clone(&in_flight)));
                let mut conn = Box::pin(protocols.http2.serve_connection(io, service));
                Box::pin(watched(conn.as_mut(), peer, &in_flight, &draining, header_timeout)).await;
            }
            Ok(Ok(None)) => trace!(%peer, "connection closed before a request"),
            Ok(Err(error)) => debug!(%peer, %error, "connection failed before a request"),
            Err(_elapsed) => debug!(%peer, "closing a connection that sent nothing for {header_timeout:?}"),
        }
    }
}

/// A connection's answer to one request.
type Answer = Pin<Box<dyn Future<Output = Result<Response<Guarded<Option<Busy>>>, Infallible>> + Send>>;

/// The service of a connection: `app`, with `accepted` in every request's extensions and, if
/// given (HTTP/2, whose watchdog counts them), each request counted in `in_flight` until its
/// response body is gone.
fn service(
    app: Router,
    accepted: Accepted,
    in_flight: Option<Arc<InFlight>>,
) -> impl Service<
    Request<Incoming>,
    Response = Response<Guarded<Option<Busy>>>,
    Error = Infallible,
    Future = Answer,
> + Clone {
    service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(accepted);
        let busy = in_flight.as_ref().map(Busy::start);
        let app = app.clone();
        // Boxed: hyper keeps room for the service's future for the connection's whole life,
        // and this one lives only until the response head.
        let answer: Answer = Box::pin(async move {
            let response = match app.oneshot(request).await {
                Ok(response) => response,
                Err(infallible) => match infallible {},
            };
            // The request stays in flight until its body has been sent (or dropped).
            Ok(response.map(|body| Guarded::new(body, busy)))
        });
        answer
    })
}

/// Serves an HTTP/2 connection until it ends, the server drains, or it has had no request in
/// flight for `header_timeout`; the last two shut it down gracefully (GOAWAY, then its open
/// streams finish).
async fn watched<C: Served>(
    mut conn: Pin<&mut C>,
    peer: SocketAddr,
    in_flight: &InFlight,
    draining: &Shutdown,
    header_timeout: Duration,
) {
    let closing = tokio::select! {
        ended = conn.as_mut() => return closed(peer, ended),
        () = draining.over() => Closing::Draining,
        () = quiet(in_flight, header_timeout) => Closing::Idle,
    };
    conn.as_mut().graceful_shutdown();
    match closing {
        // The server bounds this wait with its grace period.
        Closing::Draining => closed(peer, conn.await),
        Closing::Idle => {
            debug!(%peer, "closing a connection without a request for {header_timeout:?}");
            // A peer that neither reads our GOAWAY nor sends anything is not waited for.
            tokio::select! {
                ended = conn.as_mut() => closed(peer, ended),
                () = quiet(in_flight, header_timeout) => {
                    debug!(%peer, "dropping an idle connection that did not close");
                }
            }
        }
    }
}

/// Logs how a connection ended: at debug, since peers cause these errors.
fn closed(peer: SocketAddr, ended: Result<(), hyper::Error>) {
    match ended {
        Ok(()) => trace!(%peer, "connection closed"),
        Err(error) => debug!(%peer, %error, "connection closed"),
    }
}

/// The requests in flight on one connection (watched on HTTP/2); every change wakes the watchdog, even one that a
/// later change undoes before it looks. An atomic and a `Notify`: a `watch` channel, which this
/// was, costs five times as much per held stream.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    changed: Notify,
}

/// Resolves once no request has been in flight, and none has started, for `period`.
async fn quiet(in_flight: &InFlight, period: Duration) {
    loop {
        // Registered before the count is read, so that no change in between goes unseen.
        let mut changed = pin!(in_flight.changed.notified());
        changed.as_mut().enable();
        if in_flight.count.load(Ordering::Acquire) > 0 {
            changed.await;
        } else if timeout(period, changed).await.is_err() {
            return;
        }
    }
}

/// One request in flight on a connection, from its head until its response body is gone.
struct Busy(Arc<InFlight>);

impl Busy {
    fn start(in_flight: &Arc<InFlight>) -> Busy {
        in_flight.count.fetch_add(1, Ordering::AcqRel);
        in_flight.changed.notify_waiters();
        Busy(Arc::clone(in_flight))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}
