//! Connection workers: current-thread runtimes, one per thread, each serving the connections
//! given to it from start to end, so that a request's tasks never wake another thread.
//!
//! On one work-stealing runtime a request crosses tasks four times (its connection, its flight,
//! the upstream client's connection, and back), and on two workers most crossings wake the
//! other, parked, worker: 11 context switches a request against nginx's 2 (BENCHMARKS.md, "The
//! kernel's half"). A worker here runs everything its connections spawn (flights, upstream
//! connections, timers) on its own thread, as an nginx worker does; flights are still shared
//! with every other worker's requests through the one manager.

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::Duration;

use tokio::runtime::Handle;

/// How often a worker's own timer fires (see [`tick`]).
const TICK: Duration = Duration::from_secs(1);

/// The process's connection workers, started on first use and kept for its life.
pub(crate) struct Workers {
    handles: Vec<Handle>,
    /// The next worker to give a connection to: round robin.
    next: AtomicUsize,
}

/// The workers for a serve that asks for `threads`: none for 0 (its connections stay on the
/// caller's runtime); else the process's, `threads` of them started on the first such call
/// and shared by every later one.
pub(crate) fn workers(threads: usize) -> Option<&'static Workers> {
    static WORKERS: OnceLock<Option<Workers>> = OnceLock::new();
    if threads == 0 {
        return None;
    }
    WORKERS.get_or_init(|| Workers::start(threads)).as_ref()
}

impl Workers {
    /// Starts `threads` workers, none if `threads` is 0 or a thread cannot be made (logged).
    fn start(threads: usize) -> Option<Workers> {
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::warn!(%error, "cannot make a connection worker; connections stay on the main runtime");
                    return None;
                }
            };
            handles.push(runtime.handle().clone());
            let spawned = std::thread::Builder::new()
                .name(format!("streamflight-worker-{index}"))
                // The runtime runs its tasks only while a thread blocks on it: this one, for good.
                .spawn(move || runtime.block_on(tick()));
            if let Err(error) = spawned {
                tracing::warn!(%error, "cannot start a connection worker; connections stay on the main runtime");
                return None;
            }
        }
        (!handles.is_empty()).then(|| Workers { handles, next: AtomicUsize::new(0) })
    }

    /// The worker the next connection goes to.
    pub(crate) fn pick(&self) -> &Handle {
        &self.handles[self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len()]
    }

    /// Runs `task` on the next worker, with the worker's own socket for `stream`: a socket
    /// accepted on one runtime is read through that runtime's reactor, so it is moved over.
    pub(crate) fn serve<F, Fut>(
        &self,
        set: &mut tokio::task::JoinSet<()>,
        stream: tokio::net::TcpStream,
        task: F,
    ) where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let std = match stream.into_std() {
            Ok(std) => std,
            Err(error) => {
                tracing::debug!(%error, "a connection could not be moved to a worker");
                return;
            }
        };
        set.spawn_on(
            async move {
                match tokio::net::TcpStream::from_std(std) {
                    Ok(stream) => task(stream).await,
                    Err(error) => tracing::debug!(%error, "a connection could not be moved to a worker"),
                }
            },
            self.pick(),
        );
    }
}

/// What a worker's thread runs besides its connections: a timer that fires every [`TICK`],
/// for good, so that its runtime never waits with no timer or only far ones. Tokio wakes a
/// runtime's driver (a write to its eventfd, then one more `epoll_wait`) whenever a timer is
/// set sooner than the one it last waited for, even from the runtime's own thread: a
/// request's timers, each sooner than the one before (the upstream's response timeout, 120 s;
/// its idle timeout, 60 s; the connection's header timeout, 30 s), did so twice a request
/// (BENCHMARKS.md, issue 26). An idle worker wakes once a second for it.
async fn tick() {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
    }
}
