//! The leading replica's side of a flight: it runs the upstream, passes each item to its own
//! local flight at once, and appends them to the store in batches under its lease (R20). It
//! gives the flight up only when its own requests are gone and nobody else wants it (R22).

use std::future::Future;
use std::pin::{Pin, pin};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::{MissedTickBehavior, interval_at};

use crate::ending::Ending;
use crate::fleet::Shared;
use crate::interest::{Abandoned, abandon};
use crate::names::Names;
use crate::stream::{Appended, Bounds, append, finish};
use crate::{Lease, StoreError};

/// At most this many items go in one append: one script call stays short for the store.
const BATCH: usize = 512;

/// An append on its way: the batch comes back with the result, to be retried on a failure.
type Writing = Pin<Box<dyn Future<Output = (Vec<Vec<u8>>, Result<Appended, StoreError>)> + Send>>;

/// Leads a flight for the fleet under `lease` until its end is in the store, or it is given
/// up, or the lease is lost (then this replica's own requests are served on, alone).
pub(crate) async fn lead<K, T, E, S>(
    shared: &Shared<K, T, E>,
    names: &Names,
    lease: Lease,
    upstream: S,
    tx: UnboundedSender<Result<T, E>>,
) where
    K: 'static,
    T: 'static,
    E: 'static,
    S: Stream<Item = Result<T, E>>,
{
    let config = &shared.config;
    let items = names.items(lease.token());
    let interest = names.interest(lease.token());
    // A stream whose leader died goes a few lease timeouts later, never stays.
    let bounds = Bounds { max_len: config.max_len, live: config.lease * 4 };
    let mut store = shared.store.clone();
    let mut upstream = pin!(upstream);
    let mut local = Some(tx);
    // Items read but not yet in the store, numbered on from `written`.
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut written: u64 = 0;
    let mut writing: Option<Writing> = None;
    // The flight's end, once the upstream is over: written after every item, with how long the
    // lease stays for newcomers (R17: the linger for a whole answer, none for a failure).
    let mut ending: Option<(Vec<u8>, Duration)> = None;
    let mut sharing = true;
    // The store failed: nothing is written before the next renewal succeeds.
    let mut stalled = false;
    let mut failing_since: Option<Instant> = None;
    // This replica's own requests are gone: ask whether anyone else still wants the flight.
    let mut give_up = false;
    let every = lease.renew_every();
    let mut ticker = interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        if sharing && !stalled && writing.is_none() && give_up && ending.is_none() {
            give_up = false;
            let end = shared.seal_end(names, lease.token(), &Ending::Abandoned);
            match abandon(&mut store, &lease, &items, &interest, written + 1, &end, config.keep).await {
                // R22: nobody wants it; the upstream is dropped (aborted) on return.
                Ok(Abandoned::Yes) => return,
                Ok(Abandoned::Wanted(_)) => {}
                Ok(Abandoned::Fenced) => lost(shared, &mut sharing),
                Err(error) => {
                    give_up = true;
                    stall(shared, &error, &mut stalled, &mut failing_since);
                }
            }
        }
        if sharing && !stalled && writing.is_none() {
            if !pending.is_empty() {
                let batch: Vec<Vec<u8>> = pending.drain(..pending.len().min(BATCH)).collect();
                let (mut store, lease, items) = (store.clone(), lease.clone(), items.clone());
                let first = written + 1;
                let sealed = shared.seal_items(names, lease.token(), first, &batch);
                writing = Some(Box::pin(async move {
                    let result = append(&mut store, &lease, &items, bounds, first, &sealed).await;
                    (batch, result)
                }));
            } else if let Some((end, linger)) = &ending {
                match finish(&mut store, &lease, &items, written + 1, end, config.keep, *linger).await {
                    Ok(Appended::Written(_)) => {
                        shared.answered();
                        return;
                    }
                    Ok(Appended::Fenced) => return shared.leader_lost(),
                    Err(error) => stall(shared, &error, &mut stalled, &mut failing_since),
                }
            }
        }
        if !sharing {
            // The fleet is lost to this flight: this replica's own requests are served on.
            if let (None, Some(tx)) = (&ending, local) {
                forward(upstream, tx).await;
            }
            return;
        }
        tokio::select! {
            (batch, result) = async { writing.as_mut().expect("guarded by the branch's condition").await },
                if writing.is_some() =>
            {
                writing = None;
                match result {
                    Ok(Appended::Written(last)) => {
                        written = last;
                        failing_since = None;
                    }
                    Ok(Appended::Fenced) => lost(shared, &mut sharing),
                    Err(error) => {
                        stall(shared, &error, &mut stalled, &mut failing_since);
                        // Back in front, in order, for the retry.
                        pending.splice(0..0, batch);
                    }
                }
            }
            next = upstream.next(), if ending.is_none() => match next {
                Some(Ok(item)) => {
                    pending.push(shared.codec.encode_item(&item));
                    give_up |= gone(&mut local, Ok(item));
                }
                Some(Err(error)) => {
                    ending = Some((shared.seal_end(names, lease.token(), &Ending::Failed(&shared.codec.encode_error(&error))), Duration::ZERO));
                    give_up |= gone(&mut local, Err(error));
                }
                None => ending = Some((shared.seal_end(names, lease.token(), &Ending::Done), config.linger)),
            },
            _ = ticker.tick() => {
                match lease.renew_with(&mut store, &[&items], bounds.live).await {
                    Ok(true) => {
                        stalled = false;
                        failing_since = None;
                        shared.answered();
                    }
                    Ok(false) => lost(shared, &mut sharing),
                    Err(error) => {
                        shared.failed(&error);
                        failing_since.get_or_insert_with(Instant::now);
                    }
                }
                // Cut off from the store for a whole lease: another replica may lead by now.
                if failing_since.is_some_and(|since| since.elapsed() >= config.lease) {
                    lost(shared, &mut sharing);
                }
                // Interest expires: ask again.
                give_up |= local.is_none();
            }
            () = closed(&local), if local.is_some() => {
                local = None;
                give_up = true;
            }
        }
    }
}

/// This replica no longer leads the flight for the fleet (R20): counted, and the flight goes
/// on for its own requests only.
fn lost<K: 'static, T: 'static, E: 'static>(shared: &Shared<K, T, E>, sharing: &mut bool) {
    if *sharing {
        shared.leader_lost();
        tracing::warn!("lost the lease on a flight it led: serving this replica's requests alone");
    }
    *sharing = false;
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

/// Passes an item to the local flight, if there is one; `true` if it turns out to be gone.
fn gone<T>(local: &mut Option<UnboundedSender<T>>, item: T) -> bool {
    let left = local.as_ref().is_some_and(|tx| tx.send(item).is_err());
    if left {
        *local = None;
    }
    left
}

/// A store error: counted, and nothing written before the next renewal gets through.
fn stall<K: 'static, T: 'static, E: 'static>(
    shared: &Shared<K, T, E>,
    error: &StoreError,
    stalled: &mut bool,
    failing_since: &mut Option<Instant>,
) {
    shared.failed(error);
    *stalled = true;
    failing_since.get_or_insert_with(Instant::now);
}

/// Resolves when the local flight is gone (never, if it already was).
async fn closed<T>(local: &Option<UnboundedSender<T>>) {
    match local {
        Some(tx) => tx.closed().await,
        None => std::future::pending().await,
    }
}
