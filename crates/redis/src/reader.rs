//! One blocking reader connection per replica, shared by every flight it follows: each
//! follower's read waits in one `XREAD BLOCK` over all the followed streams at once.
//!
//! A follower asks for the entries of its stream after a number ([`Reader::read`]) and gets
//! them, or none once its wait is over, or the store's error. The reader's task keeps every
//! waiting read in one map and loops `XREAD BLOCK <wait> COUNT <batch> STREAMS k1 k2 ... id1
//! id2 ...` over them, in chunks of [`CHUNK`] streams when there are more (each chunk then
//! blocks a share of the wait, so that every stream is read within one wait).
//!
//! A read that arrives while the reader blocks must not wait for the block to end: the reader
//! wakes its own `XREAD` with `CLIENT UNBLOCK <its id>`, sent on the replica's command
//! connection, which is there anyway. That costs no connection of its own (a second blocking
//! connection would double the count the issue is about) and no polling (a short block would
//! cost the store a command per few milliseconds per replica while everything is quiet). An
//! unblock that reaches the store before the `XREAD` it is meant for finds nothing blocked
//! (it says 0): it is sent again shortly, until the read is over.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};
use std::pin::pin;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Client};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::StoreError;
use crate::stream::{Entry, entries, millis};

/// At most this many streams in one `XREAD`: one command stays a few hundred KiB at most.
pub(crate) const CHUNK: usize = 1_000;

/// At most this many entries per stream and read.
const BATCH: usize = 512;

/// How long the reader leaves the store alone after it could not connect or read.
const RETRY: Duration = Duration::from_millis(50);

/// What a read gets: the entries after the number asked, in order (none: its wait passed), or
/// the store's error.
pub(crate) type Read = Result<Vec<(u64, Entry)>, StoreError>;

/// One follower's read, waiting in the reader.
struct Wait {
    /// Its stream's key.
    stream: String,
    /// The number of the last entry it has.
    after: u64,
    /// When it is answered with no entries, if none came.
    until: Instant,
    /// Where its answer goes; closed when the follower stopped waiting.
    reply: oneshot::Sender<Read>,
    /// Its place in the order reads came in.
    seq: u64,
    /// Its stream was in an `XREAD` sent after it came, which found nothing new for it: an
    /// empty answer is true of it.
    read: bool,
}

/// What the reader's task needs of the replica's link: its own connection is made from
/// `client`; its wake-ups go through `store`.
#[derive(Clone)]
pub(crate) struct Link {
    /// Makes the reader's connection.
    pub(crate) client: Client,
    /// The replica's command connection, for `CLIENT UNBLOCK`.
    pub(crate) store: ConnectionManager,
    /// The longest a read waits: a quarter lease.
    pub(crate) block: Duration,
    /// A store call's deadline: connecting, and each step that does not block.
    pub(crate) deadline: Duration,
}

/// A replica's one reader: cheap to clone, its task ends once every handle is gone.
#[derive(Clone)]
pub(crate) struct Reader {
    tx: UnboundedSender<Wait>,
}

impl Reader {
    /// Starts the reader's task on the current tokio runtime.
    pub(crate) fn start(link: Link) -> Reader {
        let (tx, rx) = unbounded_channel();
        tokio::spawn(run(link, rx));
        Reader { tx }
    }

    /// Whether its task is gone (its runtime shut down): start another.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// The entries of `stream` after number `after`, waiting up to `wait` for some. Dropping
    /// the returned receiver withdraws the read.
    pub(crate) fn read(&self, stream: String, after: u64, wait: Duration) -> oneshot::Receiver<Read> {
        let (reply, rx) = oneshot::channel();
        let wait = Wait { stream, after, until: Instant::now() + wait, reply, seq: 0, read: false };
        if let Err(refused) = self.tx.send(wait) {
            // The task is gone: the read fails at once rather than wait for nothing.
            let error = redis::RedisError::from((redis::ErrorKind::Io, "the fleet's reader stopped"));
            let _ = refused.0.reply.send(Err(StoreError::from(error)));
        }
        rx
    }
}

/// The reads waiting, by stream.
#[derive(Default)]
struct Waiting {
    streams: BTreeMap<String, Vec<Wait>>,
    /// The next read's `seq`.
    next: u64,
    /// The last stream of the last chunk read: the next chunk starts after it.
    cursor: Option<String>,
}

impl Waiting {
    fn add(&mut self, mut wait: Wait) {
        wait.seq = self.next;
        self.next += 1;
        self.streams.entry(wait.stream.clone()).or_default().push(wait);
    }

    /// Forgets the reads nobody waits for any more, and answers with nothing those whose
    /// wait is over by `now`, or by `by` if an `XREAD` already found nothing for them (a
    /// little early, so that reads that came at about the same time are answered together,
    /// not each with an `XREAD` of its own).
    fn sweep(&mut self, now: Instant, by: Instant) {
        self.streams.retain(|_, waits| {
            waits.retain(|wait| !wait.reply.is_closed());
            let over = |wait: &mut Wait| wait.until <= now || (wait.read && wait.until <= by);
            for wait in waits.extract_if(.., over) {
                let _ = wait.reply.send(Ok(Vec::new()));
            }
            !waits.is_empty()
        });
    }

    /// The reads of `streams` that came before `seq` were read by an `XREAD` that found
    /// nothing more for them.
    fn read(&mut self, streams: &[String], seq: u64) {
        for stream in streams {
            for wait in self.streams.get_mut(stream).into_iter().flatten() {
                wait.read |= wait.seq < seq;
            }
        }
    }

    /// Every waiting read fails with `error`.
    fn fail(&mut self, error: &StoreError) {
        for wait in std::mem::take(&mut self.streams).into_values().flatten() {
            let _ = wait.reply.send(Err(error.again()));
        }
    }

    /// Gives each waiting read of the streams in `reply` what it had not had yet.
    fn dispatch(&mut self, reply: StreamReadReply) {
        for key in reply.keys {
            let Some(mut waits) = self.streams.remove(&key.key) else { continue };
            let stream = key.key.clone();
            let read = entries(key);
            let had = |wait: &Wait| read.last().is_some_and(|(top, _)| *top > wait.after);
            for wait in waits.extract_if(.., |wait| had(wait)) {
                let new = read.iter().filter(|(number, _)| *number > wait.after).cloned().collect();
                let _ = wait.reply.send(Ok(new));
            }
            if !waits.is_empty() {
                self.streams.insert(stream, waits);
            }
        }
    }

    /// The next chunk's streams, after the last chunk's in their order (from the first again
    /// past the last), with the number to read after in each (the lowest its reads have), and
    /// how many chunks there are now: every stream is in one of that many chunks in a row.
    fn chunk(&mut self) -> (Vec<String>, Vec<String>, usize) {
        let chunks = self.streams.len().div_ceil(CHUNK).max(1);
        let after = match self.cursor.take() {
            Some(cursor) if chunks > 1 => self.streams.range::<String, _>((Excluded(cursor), Unbounded)),
            _ => self.streams.range::<String, _>(..),
        };
        let (mut keys, mut ids) = (Vec::new(), Vec::new());
        for (stream, waits) in after.chain(self.streams.iter()).take(CHUNK.min(self.streams.len())) {
            keys.push(stream.clone());
            ids.push(format!("{}-0", waits.iter().map(|wait| wait.after).min().unwrap_or(0)));
        }
        // A stream that came round again (fewer streams past the cursor than a chunk) is in it
        // once.
        let mut seen = std::collections::HashSet::new();
        let (keys, ids): (Vec<_>, Vec<_>) =
            keys.into_iter().zip(ids).filter(|(key, _)| seen.insert(key.clone())).unzip();
        self.cursor = keys.last().cloned();
        (keys, ids, chunks)
    }

    /// When the first waiting read's wait is over.
    fn first_until(&self) -> Option<Instant> {
        self.streams.values().flatten().map(|wait| wait.until).min()
    }
}

/// The reader's task: until every handle is gone and no read waits.
async fn run(link: Link, mut rx: UnboundedReceiver<Wait>) {
    let mut waiting = Waiting::default();
    let mut connection: Option<(MultiplexedConnection, i64)> = None;
    let mut open = true;
    loop {
        while let Ok(wait) = rx.try_recv() {
            waiting.add(wait);
        }
        let now = Instant::now();
        waiting.sweep(now, now + link.block / 2);
        let Some(until) = waiting.first_until() else {
            if !open {
                return;
            }
            match rx.recv().await {
                Some(wait) => waiting.add(wait),
                None => open = false,
            }
            continue;
        };
        let (mut reads, id) = match &mut connection {
            Some((reads, id)) => (reads.clone(), *id),
            None => match connect(&link).await {
                Ok((reads, id)) => {
                    connection = Some((reads.clone(), id));
                    (reads, id)
                }
                Err(error) => {
                    waiting.fail(&error);
                    pause(&mut rx, &mut waiting, &mut open).await;
                    continue;
                }
            },
        };
        let (keys, ids, chunks) = waiting.chunk();
        let (sent, seq) = (keys.clone(), waiting.next);
        // Every chunk is read within one wait; no read waits past its own.
        let share = link.block / u32::try_from(chunks).unwrap_or(u32::MAX);
        let block = until.saturating_duration_since(Instant::now()).min(share).max(Duration::from_millis(1));
        let options = StreamReadOptions::default()
            .count(BATCH)
            .block(usize::try_from(millis(block)).unwrap_or(usize::MAX));
        let read = async move { reads.xread_options(&keys, &ids, &options).await };
        let mut read = pin!(read);
        let mut wake: Option<BoxFuture<'static, bool>> = None;
        let mut woken = false;
        let result: Result<Option<StreamReadReply>, redis::RedisError> = loop {
            tokio::select! {
                result = &mut read => break result,
                wait = rx.recv(), if open => match wait {
                    Some(wait) => {
                        waiting.add(wait);
                        if !woken {
                            woken = true;
                            wake = Some(unblock(link.clone(), id, Duration::ZERO));
                        }
                    }
                    None => open = false,
                },
                unblocked = async {
                    match wake.as_mut() {
                        Some(wake) => wake.await,
                        None => std::future::pending().await,
                    }
                }, if wake.is_some() =>
                {
                    // Nothing was blocked yet: the read is still on its way to the store.
                    wake = (!unblocked).then(|| unblock(link.clone(), id, Duration::from_millis(1)));
                }
            }
        };
        match result {
            Ok(reply) => {
                waiting.dispatch(reply.unwrap_or_default());
                waiting.read(&sent, seq);
            }
            Err(error) => {
                connection = None;
                waiting.fail(&StoreError::from(error));
                pause(&mut rx, &mut waiting, &mut open).await;
            }
        }
    }
}

/// The reader's own connection, and its client id for `CLIENT UNBLOCK`, within the deadline.
async fn connect(link: &Link) -> Result<(MultiplexedConnection, i64), StoreError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(link.deadline))
        .set_response_timeout(Some(link.block + link.deadline));
    let connect = async {
        let mut connection = link.client.get_multiplexed_async_connection_with_config(&config).await?;
        let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut connection).await?;
        Ok::<_, StoreError>((connection, id))
    };
    tokio::time::timeout(link.deadline * 2, connect)
        .await
        .map_err(|_| StoreError::Deadline(link.deadline * 2))?
}

/// Wakes the reader's blocked `XREAD` (after `after`): `false` if nothing was blocked.
fn unblock(link: Link, id: i64, after: Duration) -> BoxFuture<'static, bool> {
    async move {
        tokio::time::sleep(after).await;
        let mut store = link.store.clone();
        let mut unblock = redis::cmd("CLIENT");
        unblock.arg("UNBLOCK").arg(id);
        let command = unblock.query_async::<i64>(&mut store);
        // A wake-up that fails or does not come in time leaves the read to end with its block.
        !matches!(tokio::time::timeout(link.deadline, command).await, Ok(Ok(0)))
    }
    .boxed()
}

/// After a failure: the store is left alone for a moment; reads that come meanwhile wait.
async fn pause(rx: &mut UnboundedReceiver<Wait>, waiting: &mut Waiting, open: &mut bool) {
    let pause = tokio::time::sleep(RETRY);
    let mut pause = pin!(pause);
    loop {
        tokio::select! {
            () = &mut pause => return,
            wait = rx.recv(), if *open => match wait {
                Some(wait) => waiting.add(wait),
                None => *open = false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    //! The reader alone against a real `redis-server` (skipped without one, unless
    //! `STREAMFLIGHT_REQUIRE_REDIS` is set): more streams than a chunk, each read answered
    //! with its own entries, a quiet read answered empty, a new read not kept waiting.

    use std::process::{Command, Stdio};
    use std::time::Duration;

    use redis::AsyncCommands;
    use tokio::time::Instant;

    use super::{CHUNK, Link, Reader};
    use crate::stream::Entry;

    /// A `redis-server` of this test's own, killed when dropped.
    struct Server(std::process::Child);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_reader_serves_more_streams_than_a_chunk_and_wakes_for_a_new_one() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn();
        let _server = match spawned {
            Ok(child) => Server(child),
            Err(error) if std::env::var_os("STREAMFLIGHT_REQUIRE_REDIS").is_some() => panic!("{error}"),
            Err(_) => return,
        };
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut store = loop {
            if let Ok(store) = client.get_connection_manager().await {
                break store;
            }
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let block = Duration::from_secs(2);
        let link = Link { client, store: store.clone(), block, deadline: Duration::from_millis(200) };
        let reader = Reader::start(link);

        // More streams than one XREAD takes, all waiting; one in three gets an entry.
        let streams = CHUNK + CHUNK / 2;
        let waiting: Vec<_> = (0..streams).map(|i| reader.read(format!("s{i}"), 0, block)).collect();
        for i in (0..streams).step_by(3) {
            let () = store.xadd(format!("s{i}"), "1-0", &[("i", format!("{i}"))]).await.unwrap();
        }
        for (i, read) in waiting.into_iter().enumerate() {
            let entries = tokio::time::timeout(block * 6, read).await.unwrap().unwrap().unwrap();
            let expected =
                if i % 3 == 0 { vec![(1, Entry::Item(format!("{i}").into_bytes()))] } else { vec![] };
            assert_eq!(entries, expected, "stream {i}");
        }

        // The reader blocks on a quiet stream; a new read is read at once, not after the block.
        let _quiet = reader.read("quiet".to_owned(), 0, block);
        let blocked = async || {
            let info: String =
                redis::cmd("INFO").arg("clients").query_async(&mut store.clone()).await.unwrap();
            info.contains("blocked_clients:1")
        };
        while !blocked().await {
            assert!(Instant::now() < deadline + Duration::from_secs(10), "the reader never blocked");
        }
        let () = store.xadd("new", "1-0", &[("i", "x")]).await.unwrap();
        let asked = Instant::now();
        let read = reader.read("new".to_owned(), 0, block).await.unwrap().unwrap();
        assert_eq!(read, [(1, Entry::Item(b"x".to_vec()))]);
        assert!(asked.elapsed() < block / 2, "waited {:?}", asked.elapsed());
    }
}
