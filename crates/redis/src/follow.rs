//! A following replica's side of a flight: one reader per flight and replica that feeds the
//! local flight from the store (`XREAD BLOCK`), keeps this replica's interest alive (R22),
//! and tells a lost leader (R21) from a quiet one.

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use tokio::sync::mpsc::UnboundedSender;

use crate::ending::Ending;
use crate::fleet::Shared;
use crate::interest::{refresh, withdraw};
use crate::names::Names;
use crate::stream::{Entry, read};
use crate::{Lost, StoreError};

/// At most this many entries per read.
const BATCH: usize = 512;

/// How a reader stopped.
pub(crate) enum Followed {
    /// The flight is over on this replica: its end passed on, or its local flight gone.
    Over,
    /// The leader went before anything was passed on: lead or follow again, from the start.
    Again,
    /// The store failed before anything was passed on: serve alone.
    StoreDown,
}

/// Follows the flight led under `token` from its item `from` on (0: the start), passing each
/// item to the local flight, until it ends (its end passed on), the local flight is gone, or
/// the flight is lost. Only a reader from the start may be told to try `Again`.
pub(crate) async fn follow<K: 'static, T: 'static, E: 'static>(
    shared: &Shared<K, T, E>,
    names: &Names,
    token: &str,
    from: u64,
    tx: &UnboundedSender<Result<T, E>>,
) -> Followed {
    let config = &shared.config;
    let (lease, items, interest) = (names.lease(), names.items(token), names.interest(token));
    // Short enough that a lost leader is noticed within two lease timeouts (R21).
    let block = config.lease / 4;
    let mut store = shared.store.clone();
    let mut connection = None;
    // The number of the last entry passed on: the items so far.
    let mut had: u64 = from;
    let mut refreshed = Instant::now();
    let mut failing_since: Option<Instant> = None;
    // What became of the flight, and whether the connection finished its last read.
    let lost = |had: u64| {
        if had == 0 && from == 0 {
            return Followed::Again;
        }
        shared.leader_lost();
        let _ = tx.send(Err(shared.codec.lost(Lost::Leader)));
        Followed::Over
    };
    let outcome = 'follow: loop {
        let step = tokio::select! {
            step = next(shared, &mut connection, &items, had, block) => step,
            () = tx.closed() => {
                // Mid-read, that connection is busy until its block is over: it is dropped.
                let _ = withdraw(&mut store, &interest, &config.replica).await;
                return Followed::Over;
            }
        };
        let mut entries = match step {
            Ok(entries) => entries,
            Err(error) => {
                shared.failed(&error);
                connection = None;
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= config.lease * 2 {
                    break if had == 0 && from == 0 { Followed::StoreDown } else { lost(had) };
                }
                tokio::time::sleep(block.min(Duration::from_millis(100))).await;
                continue;
            }
        };
        failing_since = None;
        if entries.is_empty() {
            // Quiet for a while: is its leader still there? The leader writes its end before
            // it lets the lease go, so without the lease, what the stream holds is all there is.
            let leads: Result<Option<String>, _> = store.get(&lease).await;
            match leads {
                Ok(Some(current)) if current == token => {}
                Ok(_) => match next(shared, &mut connection, &items, had, Duration::ZERO).await {
                    Ok(last) if last.iter().any(|(_, entry)| matches!(entry, Entry::End(_))) => {
                        entries = last
                    }
                    Ok(_) => break lost(had),
                    Err(error) => shared.failed(&error),
                },
                Err(error) => shared.failed(&StoreError::from(error)),
            }
        }
        for (number, entry) in entries {
            if number != had + 1 {
                // Trimmed past this reader: ending beats skipping.
                let _ = tx.send(Err(shared.codec.lost(Lost::Trimmed)));
                break 'follow Followed::Over;
            }
            match entry {
                Entry::Item(bytes) => {
                    had = number;
                    match shared.open_item(names, token, number, &bytes) {
                        Ok(item) => {
                            if tx.send(Ok(item)).is_err() {
                                let _ = withdraw(&mut store, &interest, &config.replica).await;
                                break 'follow Followed::Over;
                            }
                        }
                        Err(error) => {
                            let _ = tx.send(Err(error));
                            break 'follow Followed::Over;
                        }
                    }
                }
                Entry::End(bytes) => {
                    match shared.open_end(names, token, &bytes).as_deref().map(Ending::decode) {
                        None => {
                            let _ = tx.send(Err(shared.unreadable()));
                            break 'follow Followed::Over;
                        }
                        Some(Ending::Done) => break 'follow Followed::Over,
                        Some(Ending::Failed(error)) => {
                            let _ = tx.send(Err(shared.codec.decode_error(error)));
                            break 'follow Followed::Over;
                        }
                        // Given up while this replica's interest had lapsed.
                        Some(Ending::Abandoned) => break 'follow lost(had),
                    }
                }
            }
        }
        if refreshed.elapsed() >= config.lease / 3 {
            refreshed = Instant::now();
            if let Err(error) = refresh(&mut store, &interest, &config.replica, config.lease).await {
                shared.failed(&error);
            }
        }
    };
    if let Some(connection) = connection {
        shared.idle(connection);
    }
    outcome
}

/// One read on the reader's own connection (opened if it has none).
async fn next<K: 'static, T: 'static, E: 'static>(
    shared: &Shared<K, T, E>,
    connection: &mut Option<redis::aio::MultiplexedConnection>,
    items: &str,
    had: u64,
    block: Duration,
) -> Result<Vec<(u64, Entry)>, StoreError> {
    let connection = match connection {
        Some(connection) => connection,
        None => connection.insert(shared.reader(block).await?),
    };
    read(connection, items, had, block, BATCH).await
}
