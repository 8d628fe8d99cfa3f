//! Canonicalising a big request body off the async workers: above [`OFF_WORKER_BYTES`] a body is
//! parsed on tokio's blocking pool, a few at a time, so that huge bodies never hold up small requests.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::dialect::body::{self, Body, BodyError, Owned};
use crate::dialect::error::Refusal;
use crate::metrics::Metrics;

/// Bodies of more than this many bytes are parsed on the blocking pool. A parse costs 1 to 20 ms
/// a MiB by the body's shape (release build; a long string least, a long array of tiny numbers
/// most; `tests/body_memory.rs` prints them): at this size at most a few milliseconds on the
/// worker, for the common chat request far less, where the hand-off to another thread and back
/// costs tens of microseconds on every request above it. Above it a body would hold an async
/// worker, and every connection that worker serves, for up to seconds (21 MB, a million keys:
/// 0.14 s).
pub(crate) const OFF_WORKER_BYTES: usize = 256 * 1024;

/// Why a body was not parsed.
#[derive(Debug)]
pub(crate) enum Unparsed {
    /// The body itself was refused.
    Invalid(BodyError),
    /// The blocking pool did not run the parse (the runtime is stopping) or it failed inside.
    Lost(Refusal<'static>),
}

/// Where big bodies are parsed: one fewer at a time than the process has CPUs (one at least),
/// the others waiting their turn.
///
/// Parsing uses only CPU, so more parses at once would not end sooner; they would start more
/// threads (tokio's pool grows to 512), hold more bodies' canonical texts at once, and take the
/// last CPU from the async workers, whose small requests and `/healthz` would then wait for the
/// scheduler behind them. A flood of huge bodies queues here instead, each holding its admission
/// permit (so `--max-concurrent-requests` still bounds the bodies held).
pub(crate) struct Offload {
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl Offload {
    /// One parse at a time per CPU the process may use, but one left to the async workers.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Offload {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        Offload { permits: Arc::new(Semaphore::new(cpus.saturating_sub(1).max(1))), metrics }
    }

    /// [`body::parse`] of `bytes`, on this worker for a small body, else on the blocking pool.
    pub(crate) async fn parse(&self, bytes: &Bytes, owned: Owned) -> Result<Body, Unparsed> {
        if bytes.len() <= OFF_WORKER_BYTES {
            return body::parse(bytes, owned).map_err(Unparsed::Invalid);
        }
        // Never closed, so this waits its turn; the permit goes with the parse, so a client that
        // leaves while its body is being parsed does not free a place before the thread does.
        let permit = Arc::clone(&self.permits).acquire_owned().await;
        Metrics::bump(&self.metrics.bodies_parsed_off_worker);
        let bytes = bytes.clone();
        let parsed = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            body::parse(&bytes, owned)
        })
        .await;
        match parsed {
            Ok(parsed) => parsed.map_err(Unparsed::Invalid),
            Err(stopped) if stopped.is_cancelled() => Err(Unparsed::Lost(Refusal::ShuttingDown)),
            Err(_) => Err(Unparsed::Lost(Refusal::BodyUnchecked)),
        }
    }
}
