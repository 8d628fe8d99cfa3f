//! The shell of the core's [`Open`] machine: a new local flight leads, follows or serves
//! alone, asking the store within one deadline (R23) and never waiting on it longer.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use streamflight_core::fleet::open::{Action, Decision, Open};
use streamflight_core::fleet::{CallId, Reply};
use tokio::sync::oneshot;

use crate::fleet::Shared;
use crate::interest;
use crate::names::Names;
use crate::{Lease, StoreError};

/// Where a new local flight goes, with what the shell needs for it.
pub(crate) enum Opened {
    /// Lead it under this lease.
    Lead(Lease),
    /// Follow the flight led under this token; `ended`: its answer was over already.
    Follow {
        /// The leader's token, which names the flight's stream.
        token: String,
        /// Its stream held its end when joined.
        ended: bool,
    },
    /// Serve it for this replica alone.
    Alone,
}

/// What a call brought besides its reply: the lease taken, or the token of who leads.
enum Got {
    Nothing,
    Lease(Lease),
    Token(String),
}

/// A call on its way.
type Call = BoxFuture<'static, (CallId, Reply, Got)>;

/// Runs the [`Open`] machine for the flight at `names` until it decides.
pub(crate) async fn open<K, T, E>(shared: &Arc<Shared<K, T, E>>, names: &Names, member: &str) -> Opened
where
    K: 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let mut machine = Open::new(shared.timings, shared.now(), shared.available());
    let mut calls: FuturesUnordered<Call> = FuturesUnordered::new();
    let (mut lease, mut token) = (None, None);
    loop {
        while let Some(action) = machine.poll_action() {
            match action {
                Action::Acquire(call) => calls.push(acquire(shared, names, call)),
                Action::Join(call) => calls.push(join(shared, names, member, call)),
                Action::Decided(decision) => {
                    let opened = match decision {
                        Decision::Lead => lease.take().map_or(Opened::Alone, Opened::Lead),
                        Decision::Follow { ended } => {
                            token.take().map_or(Opened::Alone, |token| Opened::Follow { token, ended })
                        }
                        Decision::Alone => {
                            if !calls.is_empty() {
                                // Undecided when the deadline came: the store is too slow to
                                // wait on, counted as failed; the next requests go alone at
                                // once for the pause (R23).
                                shared.failed(&StoreError::Deadline(shared.deadline()));
                            }
                            Opened::Alone
                        }
                    };
                    release(shared, lease.take());
                    settle(shared, calls);
                    return opened;
                }
            }
        }
        let timeout = machine.poll_timeout();
        tokio::select! {
            Some((call, reply, got)) = calls.next(), if !calls.is_empty() => {
                match got {
                    Got::Nothing => {}
                    Got::Lease(taken) => release(shared, lease.replace(taken)),
                    Got::Token(joined) => token = Some(joined),
                }
                machine.handle_reply(shared.now(), call, reply);
            }
            () = tokio::time::sleep_until(shared.instant(timeout.unwrap_or(u64::MAX / 4))), if timeout.is_some() => {
                machine.handle_timeout(shared.now());
            }
            // Undecided with nothing to wait for: serve alone rather than wait forever.
            else => {
                settle(shared, calls);
                release(shared, lease);
                return Opened::Alone;
            }
        }
    }
}

/// `Acquire`: the lease, if it is free.
///
/// The `SET` runs in a task of its own, not under the call's deadline: a call given up (a
/// hung store) may still take the lease once the store goes on, and a lease nobody leads
/// under would keep newcomers following a flight that never comes, for a lease and more. The
/// task hands the lease to the call if it still waits, else gives it back at once.
fn acquire<K, T, E>(shared: &Arc<Shared<K, T, E>>, names: &Names, call: CallId) -> Call
where
    K: 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let (shared, key) = (Arc::clone(shared), names.lease());
    let (tx, rx) = oneshot::channel::<Result<Option<Lease>, StoreError>>();
    let task = Arc::clone(&shared);
    tokio::spawn(async move {
        let mut store = task.store.clone();
        let taken = Lease::acquire(&mut store, &key, task.config.lease).await;
        if let Err(Ok(Some(unused))) = tx.send(taken) {
            release(&task, Some(unused));
        }
    });
    async move {
        let mut taken = None;
        let acquire = async {
            let stopped = || StoreError::Deadline(shared.deadline());
            taken = rx.await.map_err(|_| stopped())??;
            Ok::<_, StoreError>(if taken.is_some() { Reply::Acquired } else { Reply::Held })
        };
        let reply = shared.call(shared.deadline(), acquire).await;
        if reply == Reply::Failed {
            // Given up: a lease taken all the same goes back.
            release(&shared, taken.take());
        }
        (call, reply, taken.map_or(Got::Nothing, Got::Lease))
    }
    .boxed()
}

/// `Join`: who leads, with this local flight's interest (as `member`) in its flight.
fn join<K, T, E>(shared: &Arc<Shared<K, T, E>>, names: &Names, member: &str, call: CallId) -> Call
where
    K: 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let (shared, names, member) = (Arc::clone(shared), names.clone(), member.to_owned());
    async move {
        let mut store = shared.store.clone();
        let mut token = None;
        let join = async {
            let config = &shared.config;
            let lease = names.lease();
            let joined = interest::join(&mut store, &lease, names.base(), &member, config.lease);
            Ok::<_, StoreError>(match joined.await? {
                Some(interest::Joined { token: leader, ended }) => {
                    token = Some(leader);
                    Reply::Joined { ended }
                }
                None => Reply::NotLed,
            })
        };
        let reply = shared.call(shared.deadline(), join).await;
        (call, reply, token.map_or(Got::Nothing, Got::Token))
    }
    .boxed()
}

/// A lease taken but not led under (the machine decided otherwise) is given back at once, so
/// that the next request does not find a flight nobody runs.
fn release<K, T, E>(shared: &Arc<Shared<K, T, E>>, lease: Option<Lease>)
where
    K: 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let Some(lease) = lease else { return };
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let mut store = shared.store.clone();
        let _ = shared.within(shared.deadline(), lease.release(&mut store)).await;
    });
}

/// Calls still on their way once the machine decided: an `Acquire` among them may yet take
/// the lease, which is then given back.
fn settle<K, T, E>(shared: &Arc<Shared<K, T, E>>, mut calls: FuturesUnordered<Call>)
where
    K: 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    if calls.is_empty() {
        return;
    }
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        while let Some((_, _, got)) = calls.next().await {
            if let Got::Lease(lease) = got {
                release(&shared, Some(lease));
            }
        }
    });
}
