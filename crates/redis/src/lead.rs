//! The shell of the core's [`Leader`] machine: it runs the upstream, passes each item to its
//! own local flight at once, and carries out the machine's store calls (R20, R22).
//!
//! Every call runs as a future beside the upstream, under the store's deadline: an append or
//! a renewal on its way never holds an item back from this replica's own clients (R23). The
//! shell keeps every item it encoded, since the machine's appends name items by number: when
//! the store lost the stream (a `FLUSHALL`, a restart), the machine asks for them again.

use std::pin::{Pin, pin};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, Stream, StreamExt};
use streamflight_core::fleet::leader::{Action, Leader, Over};
use streamflight_core::fleet::{CallId, Ending, Reply};
use tokio::sync::mpsc::UnboundedSender;

use crate::fleet::Shared;
use crate::interest::{Abandoned, abandon};
use crate::lease::renew;
use crate::names::Names;
use crate::stream::{Appended, Bounds, append, finish};
use crate::{Lease, ending};

/// At most this many items go in one script call: one call stays short for the store. A
/// longer append (a stream written again) is several calls under one deadline.
const BATCH: usize = 512;

/// A call on its way.
type Call = BoxFuture<'static, (CallId, Reply)>;

/// What the leader's calls need, shared by them.
struct Flight {
    lease: Lease,
    items: String,
    interest: String,
    bounds: Bounds,
}

/// Leads a flight for the fleet under `lease` until its end is in the store, or it is given
/// up, or the lease is lost (then this replica's own requests are served on, alone).
pub(crate) async fn lead<K, T, E, S>(
    shared: &Arc<Shared<K, T, E>>,
    names: &Names,
    lease: Lease,
    upstream: S,
    tx: UnboundedSender<Result<T, E>>,
) where
    K: 'static,
    T: Send + 'static,
    E: Send + 'static,
    S: Stream<Item = Result<T, E>>,
{
    let config = &shared.config;
    let flight = Arc::new(Flight {
        items: names.items(lease.token()),
        interest: names.interest(lease.token()),
        // A stream whose leader died goes a few lease timeouts later, never stays.
        bounds: Bounds { max_len: config.max_len, live: config.lease * 4 },
        lease,
    });
    let leading = shared.leading();
    let mut machine = Leader::new(shared.timings, shared.now());
    let mut upstream = pin!(upstream);
    let mut local = Some(tx);
    // Every item as written to the store, item `n` at `n - 1`: the machine may ask for any
    // of them again. Shared with the calls on their way, never copied for them.
    let mut written: Vec<Arc<[u8]>> = Vec::new();
    let mut ending: Option<Ending> = None;
    // The upstream's end, for this replica's requests: held back until the store has it (the
    // finish's reply) or for two deadlines at most, so that whoever saw the end and asks again
    // anywhere starts a fresh flight or replays a whole answer's linger, as on one replica
    // (R7, R17), and never waits on a hung store for it (R23).
    let mut held: Option<(Option<E>, tokio::time::Instant)> = None;
    let mut finishing: Option<CallId> = None;
    let mut calls: FuturesUnordered<Call> = FuturesUnordered::new();
    loop {
        while let Some(action) = machine.poll_action() {
            let call = match action {
                Action::Append { call, first, last } => {
                    let batch = usize::try_from(first.max(1) - 1)
                        .ok()
                        .zip(usize::try_from(last).ok())
                        .and_then(|(from, to)| written.get(from..to.max(from)));
                    match batch {
                        Some(batch) => appended(shared, &flight, call, first, batch.to_vec()),
                        // Items it never had: the machine's mistake, answered as a failure.
                        None => async move { (call, Reply::Failed) }.boxed(),
                    }
                }
                Action::Finish { call, number, linger } => match &ending {
                    Some(end) => {
                        finishing = Some(call);
                        let end = names.seal_end(flight.lease.token(), &ending::encode(end));
                        finished(shared, &flight, call, number, end, linger)
                    }
                    None => async move { (call, Reply::Failed) }.boxed(),
                },
                Action::Renew(call) => renewed(shared, &flight, call),
                Action::Abandon { call, number } => {
                    let end = names.seal_end(flight.lease.token(), &ending::encode(&Ending::Abandoned));
                    abandoned(shared, &flight, call, number, end)
                }
                Action::Over(over) => {
                    drop(leading);
                    let ended = held.is_some();
                    release_end(&mut local, &mut held);
                    if over == Over::Lost {
                        shared.leader_lost();
                        give_back(shared, &flight);
                        tracing::warn!(
                            "lost the lease on a flight it led: serving this replica's requests alone"
                        );
                        // The fleet is lost to this flight: this replica's own requests are
                        // served on (the upstream is dropped, aborted, if they are gone).
                        if let (false, Some(tx)) = (ended, local) {
                            forward(upstream, tx).await;
                        }
                    }
                    return;
                }
            };
            calls.push(call);
        }
        let timeout = machine.poll_timeout();
        tokio::select! {
            Some((call, reply)) = calls.next(), if !calls.is_empty() => {
                if finishing == Some(call) {
                    // The end is in the store, or the store failed it: either way, no later.
                    release_end(&mut local, &mut held);
                }
                machine.handle_reply(shared.now(), call, reply);
            }
            () = tokio::time::sleep_until(held.as_ref().map_or_else(tokio::time::Instant::now, |held| held.1)),
                if held.is_some() =>
            {
                release_end(&mut local, &mut held);
            }
            next = upstream.next(), if ending.is_none() => {
                // This replica's own requests first: the store's copy follows.
                match next {
                    Some(Ok(item)) => {
                        let number = written.len() as u64 + 1;
                        let plain = shared.codec.encode_item(&item);
                        written.push(names.seal_item(flight.lease.token(), number, &plain).into());
                        if local.as_ref().is_some_and(|tx| tx.send(Ok(item)).is_err()) {
                            local = None;
                            machine.handle_local_gone(shared.now());
                        }
                        machine.handle_item(shared.now());
                    }
                    Some(Err(error)) => {
                        ending = Some(Ending::Failed(shared.codec.encode_error(&error)));
                        held = Some((Some(error), tokio::time::Instant::now() + shared.deadline() * 2));
                        machine.handle_end(shared.now(), false);
                    }
                    None => {
                        ending = Some(Ending::Done);
                        held = Some((None, tokio::time::Instant::now() + shared.deadline() * 2));
                        machine.handle_end(shared.now(), true);
                    }
                }
            }
            () = closed(&local), if local.is_some() && ending.is_none() => {
                local = None;
                machine.handle_local_gone(shared.now());
            }
            () = tokio::time::sleep_until(shared.instant(timeout.unwrap_or(u64::MAX / 4))), if timeout.is_some() => {
                machine.handle_timeout(shared.now());
            }
            // The upstream is over, the local flight gone, no call or timer left: the machine
            // waits for nothing, so nothing more can come of this flight.
            else => return,
        }
    }
}

/// `Append`: `batch`, numbered from `first`, in script calls of [`BATCH`] items.
fn appended<K, T, E>(
    shared: &Arc<Shared<K, T, E>>,
    flight: &Arc<Flight>,
    call: CallId,
    first: u64,
    batch: Vec<Arc<[u8]>>,
) -> Call
where
    K: 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let flight = Arc::clone(flight);
    shared.issue(call, move |mut store| async move {
        let mut top = first.saturating_sub(1);
        for (n, chunk) in (first..).step_by(BATCH).zip(batch.chunks(BATCH)) {
            match append(&mut store, &flight.lease, &flight.items, flight.bounds, n, chunk).await? {
                Appended::Written(now) => top = now,
                other => return Ok(reply(other)),
            }
        }
        Ok(Reply::Written { top })
    })
}

/// `Finish`: the end `end` as entry `number`, the lease kept `linger` ms or deleted.
fn finished<K, T, E>(
    shared: &Arc<Shared<K, T, E>>,
    flight: &Arc<Flight>,
    call: CallId,
    number: u64,
    end: Vec<u8>,
    linger: u64,
) -> Call
where
    K: 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let flight = Arc::clone(flight);
    let (keep, linger) = (shared.config.keep, std::time::Duration::from_millis(linger));
    shared.issue(call, move |mut store| async move {
        Ok(reply(finish(&mut store, &flight.lease, &flight.items, number, &end, keep, linger).await?))
    })
}

/// `Renew`: the lease and the stream's life extended; the stream's top in the reply.
fn renewed<K, T, E>(shared: &Arc<Shared<K, T, E>>, flight: &Arc<Flight>, call: CallId) -> Call
where
    K: 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let flight = Arc::clone(flight);
    shared.issue(call, move |mut store| async move {
        let (lease, live) = (&flight.lease, flight.bounds.live);
        let top = renew(&mut store, lease.key(), lease.token(), lease.ttl(), &[&flight.items], live).await?;
        Ok(top.map_or(Reply::Fenced, |top| Reply::Written { top }))
    })
}

/// `Abandon`: given up if nobody else wants the flight, its (sealed) end written as entry
/// `number`.
fn abandoned<K, T, E>(
    shared: &Arc<Shared<K, T, E>>,
    flight: &Arc<Flight>,
    call: CallId,
    number: u64,
    end: Vec<u8>,
) -> Call
where
    K: 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let (flight, keep) = (Arc::clone(flight), shared.config.keep);
    shared.issue(call, move |mut store| async move {
        let given = abandon(&mut store, &flight.lease, &flight.items, &flight.interest, number, &end, keep);
        Ok(match given.await? {
            Abandoned::Yes => Reply::Abandoned,
            Abandoned::Wanted(_) => Reply::Wanted,
            Abandoned::Fenced => Reply::Fenced,
            Abandoned::Gap(top) => Reply::Gap { top },
        })
    })
}

/// A leader that lost the flight lets its lease go, if it is still its own. Calls given up
/// on a hung store run when it goes on, in order on the one command connection: a renewal
/// among them takes back the lease that lapsed meanwhile, and newcomers would follow a flight
/// that nobody leads, for a lease. This compare-and-delete runs after them.
fn give_back<K, T, E>(shared: &Arc<Shared<K, T, E>>, flight: &Arc<Flight>)
where
    K: 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let (shared, flight) = (Arc::clone(shared), Arc::clone(flight));
    tokio::spawn(async move {
        let mut store = shared.store.clone();
        let _ = flight.lease.clone().release(&mut store).await;
    });
}

/// A fenced write's result as the machine's reply.
fn reply(appended: Appended) -> Reply {
    match appended {
        Appended::Written(top) => Reply::Written { top },
        Appended::Gap(top) => Reply::Gap { top },
        Appended::Fenced => Reply::Fenced,
    }
}

/// Serves a flight for this replica alone, without the store (R23).
pub(crate) async fn alone<T, E, S>(upstream: S, tx: UnboundedSender<Result<T, E>>)
where
    S: Stream<Item = Result<T, E>>,
{
    forward(pin!(upstream), tx).await;
}

/// Passes the upstream's items to the local flight until the end, or until the local flight
/// is gone (then the upstream is dropped: aborted).
async fn forward<T, E, S>(mut upstream: Pin<&mut S>, tx: UnboundedSender<Result<T, E>>)
where
    S: Stream<Item = Result<T, E>>,
{
    loop {
        tokio::select! {
            next = upstream.next() => match next {
                Some(item) => {
                    if tx.send(item).is_err() {
                        return;
                    }
                }
                None => return,
            },
            () = tx.closed() => return,
        }
    }
}

/// Gives this replica's requests the upstream's end held back for them: its error, or the
/// end of their stream.
fn release_end<T, E>(
    local: &mut Option<UnboundedSender<Result<T, E>>>,
    held: &mut Option<(Option<E>, tokio::time::Instant)>,
) {
    // Dropping the sender ends the local flight's stream: `Done`, unless an error went first.
    if let Some((error, _)) = held.take()
        && let (Some(tx), Some(error)) = (local.take(), error)
    {
        let _ = tx.send(Err(error));
    }
}

/// Resolves when the local flight is gone (never, if it already was).
async fn closed<T>(local: &Option<UnboundedSender<T>>) {
    match local {
        Some(tx) => tx.closed().await,
        None => std::future::pending().await,
    }
}
