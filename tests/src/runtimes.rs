//! [`TestRuntime`] for each adapter's runtime: tokio and smol (a fresh multi-thread runtime,
//! or executor, with 2 workers per scenario) and async-std (its global executor). The scenario
//! itself blocks the test's thread.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use smol::Executor;
use smol::channel::Sender;

use crate::{AsyncStd, Client, Dedicated, Smol, TestRuntime, Tokio, catching};

/// Worker threads of each runtime the suite makes: more than one, so that flight
/// tasks and clients really run at once, and one drop that blocks (a
/// [`Latch`](crate::doubles::Latch)) does not stop the others.
const WORKERS: usize = 2;

impl TestRuntime for Tokio {
    const NAME: &'static str = "tokio";
    const GLOBAL_BY_DEFAULT: bool = false;

    fn scenario() -> Self {
        Tokio::current()
    }

    fn dedicated() -> Dedicated<Self> {
        let runtime = runtime();
        // Dropping the runtime drops every task it holds.
        Dedicated::new(Tokio::with_handle(runtime.handle().clone()), Some(Box::new(move || drop(runtime))))
    }

    fn block_on<F: Future<Output = ()>>(scenario: F) {
        let runtime = runtime();
        runtime.block_on(scenario);
        // Tasks left behind (a flight a failed scenario never ended) must not hold the test up.
        runtime.shutdown_background();
    }

    fn spawn_client<F>(task: F) -> Client<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = tokio::spawn(catching(task));
        Client::new(async move { handle.await.expect("a client task is never aborted") })
    }

    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        tokio::time::sleep(duration)
    }
}

/// A multi-thread tokio runtime of [`WORKERS`] workers.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

impl TestRuntime for AsyncStd {
    const NAME: &'static str = "async-std";
    const GLOBAL_BY_DEFAULT: bool = true;

    fn scenario() -> Self {
        AsyncStd
    }

    fn dedicated() -> Dedicated<Self> {
        // async-std has only its global executor, which never stops.
        Dedicated::new(AsyncStd, None)
    }

    fn block_on<F: Future<Output = ()>>(scenario: F) {
        async_std::task::block_on(scenario);
    }

    fn spawn_client<F>(task: F) -> Client<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Client::new(async_std::task::spawn(catching(task)))
    }

    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send + 'static {
        async_std::task::sleep(duration)
    }
}

thread_local! {
    /// The executor of the smol scenario running on this thread (its own, or one of its workers').
    static SCENARIO_EXECUTOR: RefCell<Option<Arc<Executor<'static>>>> = const { RefCell::new(None) };
}

/// The smol scenario's executor, for its managers and clients.
fn scenario_executor() -> Arc<Executor<'static>> {
    SCENARIO_EXECUTOR
        .with_borrow(Option::clone)
        .expect("a smol scenario's managers and clients are made inside its block_on")
}

/// An executor run by [`WORKERS`] threads until the returned sender is dropped.
fn smol_executor() -> (Arc<Executor<'static>>, Sender<()>, Vec<JoinHandle<()>>) {
    let executor = Arc::new(Executor::new());
    let (stop, stopped) = smol::channel::bounded::<()>(1);
    let workers = (0..WORKERS)
        .map(|_| {
            let (executor, stopped) = (Arc::clone(&executor), stopped.clone());
            thread::spawn(move || {
                // A client may spawn clients too.
                SCENARIO_EXECUTOR.set(Some(Arc::clone(&executor)));
                // `Err(Closed)` once the sender is dropped: the signal to stop.
                let _closed = smol::block_on(executor.run(stopped.recv()));
                SCENARIO_EXECUTOR.set(None);
            })
        })
        .collect();
    (executor, stop, workers)
}

impl TestRuntime for Smol {
    const NAME: &'static str = "smol";
    const GLOBAL_BY_DEFAULT: bool = true;

    fn scenario() -> Self {
        Smol::with_executor(&scenario_executor())
    }

    fn dedicated() -> Dedicated<Self> {
        let (executor, stop, workers) = smol_executor();
        let runtime = Smol::with_executor(&executor);
        let stop = move || {
            drop(stop);
            for worker in workers {
                worker.join().expect("a smol worker never panics");
            }
            // The last `Arc`: the executor drops every task it still holds.
            drop(executor);
        };
        Dedicated::new(runtime, Some(Box::new(stop)))
    }

    fn block_on<F: Future<Output = ()>>(scenario: F) {
        // One executor per scenario, as tokio has one runtime per scenario: the
        // global one has a single thread, which one blocking drop would stall.
        let (executor, stop, _workers) = smol_executor();
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                SCENARIO_EXECUTOR.set(None);
            }
        }
        SCENARIO_EXECUTOR.set(Some(executor));
        let _reset = Reset;
        smol::block_on(scenario);
        // The workers are not joined: tasks left behind (a flight a failed scenario never
        // ended) must not hold the test up. They are dropped with the executor.
        drop(stop);
    }

    fn spawn_client<F>(task: F) -> Client<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // A smol `Task` cancels its future when dropped: the client is detached and
        // reports through a channel, so that it runs to its end whether joined or not,
        // as on the other runtimes.
        let (output, joined) = futures::channel::oneshot::channel();
        scenario_executor()
            .spawn(async move {
                // The receiver is gone only if nobody joins: the output is not wanted.
                let _ = output.send(catching(task).await);
            })
            .detach();
        Client::new(async move { joined.await.expect("a client task runs to its end") })
    }

    async fn sleep(duration: Duration) {
        smol::Timer::after(duration).await;
    }
}
