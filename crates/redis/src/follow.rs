//! The shell of the core's [`Follower`] machine: it feeds a local flight from another
//! replica's stream through the replica's one reader, and carries out the machine's checks.
//!
//! The machine decides everything (when to read, check the lease, keep the interest, end and
//! how); the shell reads through [`Reader`](crate::reader::Reader) (blocking reads) or the
//! command connection (a read that does not wait), each call under its deadline.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use redis::AsyncCommands;
use streamflight_core::fleet::follower::{Action, Followed as Ending, Follower};
use streamflight_core::fleet::{CallId, Entry, LeaseSeen, Lost, Reply};
use tokio::sync::mpsc::UnboundedSender;

use crate::fleet::Shared;
use crate::interest::{refresh, withdraw};
use crate::names::Names;
use crate::{StoreError, ending, stream};

/// At most this many entries per read.
const BATCH: usize = 512;

/// How following stopped, for the flight's shell.
pub(crate) enum Followed {
    /// The flight is over on this replica: its end passed on, or its local flight gone.
    Over,
    /// The leader went before anything was passed on: open the flight again.
    Again,
    /// The store failed before anything was passed on: serve alone.
    Alone,
}

/// A call on its way.
type Call = BoxFuture<'static, (CallId, Reply)>;

/// Follows the flight led under `token` from its item `from` on (0: the start), passing each
/// item to the local flight, until it ends (its end passed on), the local flight is gone, or
/// the flight is lost. Only a first follower (not a `resume`) may be told to start `Again`
/// or serve `Alone`. `member` names the local flight in the flight's interest.
pub(crate) async fn follow<K, T, E>(
    shared: &Arc<Shared<K, T, E>>,
    names: &Names,
    token: &str,
    member: &str,
    from: u64,
    resume: bool,
    tx: &UnboundedSender<Result<T, E>>,
) -> Followed
where
    K: 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let keys = Arc::new(Keys {
        names: names.clone(),
        lease: names.lease(),
        token: token.to_owned(),
        items: names.items(token),
        interest: names.interest(token),
        member: member.to_owned(),
    });
    let mut machine = Follower::new(shared.timings, shared.now(), from, resume);
    let mut calls: FuturesUnordered<Call> = FuturesUnordered::new();
    let mut here = true;
    loop {
        let mut gone = false;
        while let Some(action) = machine.poll_action() {
            match action {
                Action::Read { call, after, block } => calls.push(read(shared, &keys, call, after, block)),
                Action::CheckLease(call) => calls.push(check(shared, &keys, call)),
                Action::Refresh(call) => calls.push(refreshed(shared, &keys, call)),
                Action::Withdraw(call) => calls.push(withdrawn(shared, &keys, call)),
                Action::Deliver(bytes) => {
                    if !here {
                        continue;
                    }
                    let delivered = match shared.codec.decode_item(&bytes) {
                        Ok(item) => tx.send(Ok(item)).is_ok(),
                        Err(error) => {
                            // An entry this replica cannot read: its flight ends there.
                            let _ = tx.send(Err(error));
                            false
                        }
                    };
                    if !delivered {
                        (here, gone) = (false, true);
                    }
                }
                Action::Over(ended) => return over(shared, ended, tx),
            }
        }
        if gone {
            machine.handle_local_gone(shared.now());
            continue;
        }
        let timeout = machine.poll_timeout();
        tokio::select! {
            Some((call, reply)) = calls.next(), if !calls.is_empty() => {
                machine.handle_reply(shared.now(), call, reply);
            }
            () = tx.closed(), if here => {
                here = false;
                machine.handle_local_gone(shared.now());
            }
            () = tokio::time::sleep_until(shared.instant(timeout.unwrap_or(u64::MAX / 4))), if timeout.is_some() => {
                machine.handle_timeout(shared.now());
            }
            // Nothing left to wait for and no end: nothing more can come of this flight.
            else => return over(shared, Ending::Lost(Lost::Leader), tx),
        }
    }
}

/// The store's keys of the followed flight, and its names (which open its entries).
struct Keys {
    names: Names,
    lease: String,
    token: String,
    items: String,
    interest: String,
    /// This local flight's name in the interest.
    member: String,
}

/// The machine's end, carried out on the local flight.
fn over<K: 'static, T: 'static, E: 'static>(
    shared: &Shared<K, T, E>,
    ended: Ending,
    tx: &UnboundedSender<Result<T, E>>,
) -> Followed {
    match ended {
        // The local flight ends whole when its sender goes.
        Ending::Done | Ending::Gone => Followed::Over,
        Ending::Failed(error) => {
            let _ = tx.send(Err(shared.codec.decode_error(&error)));
            Followed::Over
        }
        Ending::Lost(lost) => {
            if lost == Lost::Leader {
                shared.leader_lost();
            }
            if lost == Lost::Sealed {
                tracing::warn!(
                    "an entry of a flight in the store does not open: altered there, or written by a \
                     replica with another fleet secret"
                );
            }
            let _ = tx.send(Err(shared.codec.lost(lost)));
            Followed::Over
        }
        Ending::Again => Followed::Again,
        Ending::Alone => Followed::Alone,
    }
}

/// `Read`: through the replica's reader if it waits (up to a quarter lease), else at once on
/// the command connection.
fn read<K, T, E>(
    shared: &Arc<Shared<K, T, E>>,
    keys: &Arc<Keys>,
    call: CallId,
    after: u64,
    block: bool,
) -> Call
where
    K: 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let (shared, keys) = (Arc::clone(shared), Arc::clone(keys));
    if block {
        let wait = Duration::from_millis(shared.timings.lease / 4);
        let waiting = shared.reader().read(keys.items.clone(), after, wait);
        return async move {
            let read = async {
                let entries = waiting.await.unwrap_or_else(|_| Err(stopped()))?;
                Ok(Reply::Entries(entries.into_iter().map(|read| opened(&keys, read)).collect()))
            };
            (call, shared.call(wait + shared.deadline(), read).await)
        }
        .boxed();
    }
    shared.issue(call, move |mut store| async move {
        let entries = stream::read(&mut store, &keys.items, after, Duration::ZERO, BATCH).await?;
        Ok(Reply::Entries(entries.into_iter().map(|read| opened(&keys, read)).collect()))
    })
}

/// An entry of the stream as the machine reads it: opened with the flight's seal (R24), item
/// `n` bound to its number, or `Unreadable` (altered in the store, another fleet's).
fn opened(keys: &Keys, (number, entry): (u64, stream::Entry)) -> (u64, Entry) {
    let opened = match entry {
        stream::Entry::Item(sealed) => keys.names.open_item(&keys.token, number, &sealed).map(Entry::Item),
        stream::Entry::End(sealed) => {
            keys.names.open_end(&keys.token, &sealed).map(|end| Entry::End(ending::decode(&end)))
        }
    };
    (number, opened.unwrap_or(Entry::Unreadable))
}

/// The reader went before it answered (its runtime is shutting down).
fn stopped() -> StoreError {
    StoreError::from(redis::RedisError::from((redis::ErrorKind::Io, "the fleet's reader stopped")))
}

/// `CheckLease`: whose the lease is now.
fn check<K, T, E>(shared: &Arc<Shared<K, T, E>>, keys: &Arc<Keys>, call: CallId) -> Call
where
    K: 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let keys = Arc::clone(keys);
    shared.issue(call, move |mut store| async move {
        let holder: Option<String> = store.get(&keys.lease).await?;
        Ok(Reply::Lease(match holder {
            None => LeaseSeen::Missing,
            Some(holder) if holder == keys.token => LeaseSeen::Ours,
            Some(_) => LeaseSeen::Other,
        }))
    })
}

/// `Refresh`: this local flight's interest kept for a lease more.
fn refreshed<K, T, E>(shared: &Arc<Shared<K, T, E>>, keys: &Arc<Keys>, call: CallId) -> Call
where
    K: 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let keys = Arc::clone(keys);
    let lease = shared.config.lease;
    shared.issue(call, move |mut store| async move {
        refresh(&mut store, &keys.interest, &keys.member, lease).await?;
        Ok(Reply::Done)
    })
}

/// `Withdraw`: this local flight's interest withdrawn (another's on this replica stays). Nothing waits for it: it runs on in a task
/// of its own if the machine ends first; its reply is handed back if it does not.
fn withdrawn<K, T, E>(shared: &Arc<Shared<K, T, E>>, keys: &Arc<Keys>, call: CallId) -> Call
where
    K: 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let (shared, keys) = (Arc::clone(shared), Arc::clone(keys));
    let task = tokio::spawn(async move {
        let mut store = shared.store.clone();
        let withdrawn = async {
            withdraw(&mut store, &keys.interest, &keys.member).await?;
            Ok(Reply::Done)
        };
        shared.call(shared.deadline(), withdrawn).await
    });
    async move { (call, task.await.unwrap_or(Reply::Failed)) }.boxed()
}
