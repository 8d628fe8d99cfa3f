//! The idle keep-alive connections to a plain HTTP/1.1 upstream: at most a bound of them, the
//! most recently used first, each dropped once unused for the pool's idle timeout or closed.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

/// A connection's sending half; its connection runs in a task of its own.
pub(crate) type Sender = SendRequest<Full<Bytes>>;

/// Idle connections, oldest first.
pub(crate) struct Pool {
    idle: Mutex<Vec<(Sender, Instant)>>,
    max_idle: usize,
    timeout: Duration,
}

impl Pool {
    /// A pool of at most `max_idle` connections, each kept `timeout` unused. Inside a tokio
    /// runtime a task drops the expired ones every `timeout / 4`, so that a quiet gateway does
    /// not hold them (and their buffers) until the next request.
    pub(crate) fn new(max_idle: usize, timeout: Duration) -> Arc<Pool> {
        let pool = Arc::new(Pool { idle: Mutex::default(), max_idle, timeout });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // At least a second apart: `interval` refuses a zero period.
            runtime.spawn(sweep(Arc::downgrade(&pool), (timeout / 4).max(Duration::from_secs(1))));
        }
        pool
    }

    /// The most recently used connection that is still open and not expired.
    pub(crate) fn take(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((sender, since)) = idle.pop() {
            if since.elapsed() < self.timeout && !sender.is_closed() {
                return Some(sender);
            }
        }
        None
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
        idle.push((sender, Instant::now()));
    }

    /// Drops the expired and closed connections.
    fn expire(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|(sender, since)| since.elapsed() < self.timeout && !sender.is_closed());
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
