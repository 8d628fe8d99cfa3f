//! The idle keep-alive connections to a plain HTTP/1.1 upstream: at most a bound of them, the
//! most recently used first, each dropped once unused for the pool's idle timeout or closed.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::ThreadId;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// Idle connections, oldest first, each with the thread it was last used from.
pub(crate) struct Pool {
    idle: Mutex<Vec<(TcpStream, Instant, ThreadId)>>,
    max_idle: usize,
    timeout: Duration,
    /// A connection is taken only by the thread that used it last: with connection threads
    /// (`--connection-threads`), its socket is registered with that thread's runtime, and a
    /// request from another would be woken across threads on every step.
    per_thread: bool,
}

impl Pool {
    /// A pool of at most `max_idle` connections, each kept `timeout` unused. Inside a tokio
    /// runtime a task drops the expired ones every `timeout / 4`, so that a quiet gateway does
    /// not hold them (and the upstream its end of them) until the next request.
    pub(crate) fn new(max_idle: usize, timeout: Duration, per_thread: bool) -> Arc<Pool> {
        let pool = Arc::new(Pool { idle: Mutex::default(), max_idle, timeout, per_thread });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // At least a second apart: `interval` refuses a zero period.
            runtime.spawn(sweep(Arc::downgrade(&pool), (timeout / 4).max(Duration::from_secs(1))));
        }
        pool
    }

    /// The most recently used connection that is still open and not expired (and, per
    /// thread, was last used from this one).
    pub(crate) fn take(&self) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let here = std::thread::current().id();
        loop {
            let at = match self.per_thread {
                true => idle.iter().rposition(|(_, _, thread)| *thread == here)?,
                false => idle.len().checked_sub(1)?,
            };
            let (stream, since, _) = idle.remove(at);
            if since.elapsed() < self.timeout && open(&stream) {
                return Some(stream);
            }
        }
    }

    /// Keeps `stream` for the next request, dropping the oldest if the pool is full.
    pub(crate) fn put(&self, stream: TcpStream) {
        if self.max_idle == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() >= self.max_idle {
            idle.remove(0);
        }
        idle.push((stream, Instant::now(), std::thread::current().id()));
    }

    /// Drops the expired and closed connections.
    fn expire(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|(stream, since, _)| since.elapsed() < self.timeout && open(stream));
    }

    /// How many connections are idle.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// An idle connection is still open: it has nothing to read. A closed one reads its end
/// (or an error); one with bytes no request asked for is no use either. The readiness tokio
/// last saw may be stale: a request on a connection closed meanwhile is sent again (`post`).
fn open(stream: &TcpStream) -> bool {
    let mut byte = [0; 1];
    matches!(stream.try_read(&mut byte), Err(error) if error.kind() == std::io::ErrorKind::WouldBlock)
}

/// Expires `pool`'s connections every `every` until the pool is dropped.
async fn sweep(pool: Weak<Pool>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match pool.upgrade() {
            Some(pool) => pool.expire(),
            None => return,
        }
    }
}
