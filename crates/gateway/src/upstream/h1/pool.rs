//! The idle keep-alive connections to a plain HTTP/1.1 upstream: at most a bound of them, the
//! most recently used first, each dropped once unused for the pool's idle timeout or closed.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::ThreadId;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

/// A connection's sending half; its connection runs in a task of its own.
pub(crate) type Sender = SendRequest<Full<Bytes>>;

/// Idle connections, oldest first, each with the thread it was last used from.
pub(crate) struct Pool {
    idle: Mutex<Vec<(Sender, Instant, ThreadId)>>,
    max_idle: usize,
    timeout: Duration,
    /// A connection is taken only by the thread that used it last: with connection threads
    /// (`--connection-threads`), its task runs on that thread's runtime, and a request from
    /// another would wake it across threads on every step.
    per_thread: bool,
}

impl Pool {
    /// A pool of at most `max_idle` connections, each kept `timeout` unused. Inside a tokio
    /// runtime a task drops the expired ones every `timeout / 4`, so that a quiet gateway does
    /// not hold them (and their buffers) until the next request.
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
    pub(crate) fn take(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let here = std::thread::current().id();
        loop {
            let at = match self.per_thread {
                true => idle.iter().rposition(|(_, _, thread)| *thread == here)?,
                false => idle.len().checked_sub(1)?,
            };
            let (sender, since, _) = idle.remove(at);
            if since.elapsed() < self.timeout && !sender.is_closed() {
                return Some(sender);
            }
        }
    }

    /// Keeps `sender`'s connection for the next request, dropping the oldest if the pool is full.
    pub(crate) fn put(&self, sender: Sender) {
        if sender.is_closed() || self.max_idle == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() >= self.max_idle {
            idle.remove(0);
        }
        idle.push((sender, Instant::now(), std::thread::current().id()));
    }

    /// Drops the expired and closed connections.
    fn expire(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|(sender, since, _)| since.elapsed() < self.timeout && !sender.is_closed());
    }

    /// How many connections are idle.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
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
