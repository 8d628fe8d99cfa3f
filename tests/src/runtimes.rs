//! [`TestRuntime`] for each adapter's runtime: tokio (a fresh multi-thread runtime with 2 workers
//! per scenario) and async-std (its global executor, the scenario blocking the test's thread).

use std::future::Future;
use std::time::Duration;

use crate::{AsyncStd, Client, TestRuntime, Tokio, catching};

impl TestRuntime for Tokio {
    const NAME: &'static str = "tokio";

    fn block_on<F: Future<Output = ()>>(scenario: F) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
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

impl TestRuntime for AsyncStd {
    const NAME: &'static str = "async-std";

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
