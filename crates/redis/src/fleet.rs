//! One replica's link to the fleet: its store connections, its settings and counters, and
//! [`Fleet::open`], which turns a local flight's preparation into a fleet-wide one.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{Stream, TryFutureExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::names::Names;
use crate::stream::millis;
use crate::{Codec, Lease, Lost, Place, StoreError, follow, interest, lead};

/// How a replica takes part in its fleet. Every replica of a fleet uses the same prefix and
/// timings; each its own replica id.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    pub(crate) prefix: String,
    pub(crate) replica: String,
    pub(crate) lease: Duration,
    pub(crate) max_len: u64,
    pub(crate) keep: Duration,
    pub(crate) linger: Duration,
    pub(crate) pause: Duration,
}

impl Default for FleetConfig {
    /// Prefix `sf:`, a random replica id, a 3 s lease, streams of about 100,000 entries kept
    /// 30 s after their end, no linger, and 1 s without the store after it failed.
    fn default() -> Self {
        FleetConfig {
            prefix: "sf:".to_owned(),
            replica: crate::lease::fresh_token()[..12].to_owned(),
            lease: Duration::from_secs(3),
            max_len: 100_000,
            keep: Duration::from_secs(30),
            linger: Duration::ZERO,
            pause: Duration::from_secs(1),
        }
    }
}

impl FleetConfig {
    /// What every key of this fleet starts with: replicas with different prefixes on one
    /// store are different fleets.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// This replica's name in interest records and logs (default: random, new at each start).
    pub fn replica(mut self, replica: impl Into<String>) -> Self {
        self.replica = replica.into();
        self
    }

    /// The leader's lease timeout (R20), at least 30 ms. It is renewed every third of it; a
    /// replica whose leader stopped ends its subscribers within two of it (R21); interest
    /// records live as long.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
        self
    }

    /// About how many entries a flight's stream keeps (`MAXLEN ~`): a replica that falls
    /// further behind, or joins a longer flight late, ends with [`Lost::Trimmed`](crate::Lost).
    pub fn max_len(mut self, max_len: u64) -> Self {
        self.max_len = max_len.max(1);
        self
    }

    /// How long a flight's stream stays after its end, for replicas still reading it and for
    /// resumes: at least the resume window of the requests on it.
    pub fn keep(mut self, keep: Duration) -> Self {
        self.keep = keep;
        self
    }

    /// How long after its end a flight is still joined by new requests on any replica (R17),
    /// as the local manager's linger does within one replica. At most [`keep`](Self::keep).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// How long the replica serves without the store after a store error before it tries
    /// the store again (R23): no request waits on a store that is down.
    pub fn pause(mut self, pause: Duration) -> Self {
        self.pause = pause;
        self
    }

    /// The replica's id.
    pub fn replica_id(&self) -> &str {
        &self.replica
    }
}

/// What a replica's fleet link has done since it started.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FleetStats {
    /// Local flights this replica led for the fleet: it held the lease and ran the upstream.
    pub led: u64,
    /// Local flights that followed another replica's live flight: no upstream request here.
    /// Neither a finished answer's replay (`lingered`) nor a resumed stream (`replays`).
    pub remote_joins: u64,
    /// Store commands that failed (unreachable, timed out, refused).
    pub store_errors: u64,
    /// Local flights served without the store because it had failed (R23).
    pub alone: u64,
    /// Flights whose leader was lost: this replica's lease lapsed while it led, or the
    /// replica it followed stopped mid-flight (R21).
    pub leader_lost: u64,
    /// Streams replayed from the store for a client that came from another replica.
    pub replays: u64,
    /// Local flights served by another replica's finished answer within its linger (R17): no
    /// upstream request anywhere. Not counted in `remote_joins`.
    pub lingered: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    led: AtomicU64,
    remote_joins: AtomicU64,
    store_errors: AtomicU64,
    alone: AtomicU64,
    leader_lost: AtomicU64,
    replays: AtomicU64,
    lingered: AtomicU64,
}

/// How many idle reader connections a replica keeps for its next readers.
const IDLE_READERS: usize = 64;

/// A replica's link to its fleet: give it to each local flight's preparation with
/// [`Fleet::open`], or use [`Flights`](crate::Flights), which does. Cheap to clone.
pub struct Fleet<K, T, E> {
    pub(crate) shared: Arc<Shared<K, T, E>>,
}

impl<K, T, E> Clone for Fleet<K, T, E> {
    fn clone(&self) -> Self {
        Fleet { shared: Arc::clone(&self.shared) }
    }
}

impl<K, T, E> fmt::Debug for Fleet<K, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet").field("config", &self.shared.config).finish_non_exhaustive()
    }
}

pub(crate) struct Shared<K, T, E> {
    pub(crate) client: Client,
    /// Commands that do not block: leases, appends, interest. Reconnects by itself.
    pub(crate) store: ConnectionManager,
    /// Readers' own connections (`XREAD BLOCK` holds one), kept for reuse.
    readers: Mutex<Vec<MultiplexedConnection>>,
    pub(crate) codec: Box<dyn Codec<K, T, E>>,
    pub(crate) config: FleetConfig,
    counters: Counters,
    /// Until when the store is left alone after it failed.
    down_until: Mutex<Option<Instant>>,
    /// The token of the flight this replica leads or follows, by key (and how many of its
    /// flights are on it: an aborted local flight's leader may still run for the others).
    places: Mutex<HashMap<Names, (String, usize)>>,
    /// Flights this replica leads now: lease held, end not yet written ([`Fleet::leading`]).
    pub(crate) leading: AtomicUsize,
}

impl<K, T, E> Fleet<K, T, E>
where
    K: 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    /// A link to the store at `url` (`redis://` or `rediss://` for TLS). No connection is made
    /// yet: a replica starts, and serves alone, while the store is down (R23).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use streamflight_redis::{Fleet, FleetConfig, Text};
    ///
    /// let fleet = Fleet::new("redis://127.0.0.1:6379/", Text, FleetConfig::default().replica("a")).unwrap();
    /// assert_eq!(fleet.stats().led, 0);
    /// # }
    /// ```
    pub fn new(
        url: &str,
        codec: impl Codec<K, T, E>,
        config: FleetConfig,
    ) -> Result<Fleet<K, T, E>, StoreError> {
        Fleet::with_client(Client::open(url)?, codec, config)
    }

    /// A link through `client`: for what a URL cannot say, such as the root certificates of a
    /// `rediss://` server with a private CA ([`Client::build_with_tls`]).
    pub fn with_client(
        client: Client,
        codec: impl Codec<K, T, E>,
        config: FleetConfig,
    ) -> Result<Fleet<K, T, E>, StoreError> {
        // Fail fast while the store is down: a request never waits long on it (R23).
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(config.lease))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let store = ConnectionManager::new_lazy_with_config(client.clone(), manager)?;
        Ok(Fleet {
            shared: Arc::new(Shared {
                client,
                store,
                readers: Mutex::new(Vec::new()),
                codec: Box::new(codec),
                config,
                counters: Counters::default(),
                down_until: Mutex::new(None),
                places: Mutex::default(),
                leading: AtomicUsize::new(0),
            }),
        })
    }

    /// Makes a local flight's preparation fleet-wide: pass what this returns to the local
    /// manager's `request` instead of `prepare`. On its first poll it leads the key's flight
    /// for the fleet (takes the lease, runs `prepare`, appends what comes to the store), or
    /// follows the replica that leads it (reads the store; `prepare` is never run), or, with
    /// the store down, runs `prepare` for this replica alone.
    pub fn open<F, S>(
        &self,
        key: &K,
        prepare: F,
    ) -> impl Future<Output = Result<Upstream<T, E>, E>> + Send + 'static
    where
        F: Future<Output = Result<S, E>> + Send + 'static,
        S: Stream<Item = Result<T, E>> + Send + 'static,
        K: Send + Sync,
        T: Sync,
        E: Sync,
    {
        let names = Names::new(&self.shared.config.prefix, &self.shared.codec.key(key));
        let shared = Arc::clone(&self.shared);
        async move {
            let (tx, rx) = unbounded_channel();
            tokio::spawn(fly(shared, names, prepare.try_flatten_stream(), tx));
            Ok(Upstream { rx })
        }
    }

    /// Where the flight of `key` that this replica leads or follows is, if it has one in
    /// the store: for a client that will resume elsewhere ([`Fleet::replay`]).
    pub fn place(&self, key: &K) -> Option<Place> {
        let names = Names::new(&self.shared.config.prefix, &self.shared.codec.key(key));
        let places = self.shared.places.lock().unwrap_or_else(PoisonError::into_inner);
        let token = places.get(&names)?.0.clone();
        Some(Place { names, token })
    }

    /// The items of the flight at `place` after its first `from`, then its end, read from
    /// the store: a stream that a client which lost its connection to another replica
    /// resumes here. This replica's interest is registered before it returns, and keeps the
    /// flight's upstream going meanwhile (R22). Spawns its reader on the current tokio runtime.
    pub async fn replay(&self, place: &Place, from: u64) -> Result<Upstream<T, E>, StoreError>
    where
        K: Send + Sync,
        T: Sync,
        E: Sync,
    {
        let config = &self.shared.config;
        let mut store = self.shared.store.clone();
        let interest = place.names.interest(&place.token);
        if let Err(error) = interest::refresh(&mut store, &interest, &config.replica, config.lease).await {
            self.shared.failed(&error);
            return Err(error);
        }
        let (tx, rx) = unbounded_channel();
        let shared = Arc::clone(&self.shared);
        let place = place.clone();
        self.shared.counters.replays.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let followed = follow::follow(&shared, &place.names, &place.token, from, &tx).await;
            if !matches!(followed, follow::Followed::Over) {
                let _ = tx.send(Err(shared.codec.lost(Lost::Leader)));
            }
        });
        Ok(Upstream { rx })
    }

    /// Keeps `value` under `name` for `ttl`, for any replica to [`load`](Fleet::load): only
    /// a hash of the name is in the store (R24).
    pub async fn save(&self, name: &[u8], value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let mut store = self.shared.store.clone();
        let key = Names::note(&self.shared.config.prefix, name);
        let () = redis::AsyncCommands::pset_ex(&mut store, key, value, millis(ttl)).await?;
        Ok(())
    }

    /// What was [`save`](Fleet::save)d under `name`, if it has not expired.
    pub async fn load(&self, name: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut store = self.shared.store.clone();
        let key = Names::note(&self.shared.config.prefix, name);
        Ok(redis::AsyncCommands::get(&mut store, key).await?)
    }

    /// What this replica's fleet link has done since it started.
    pub fn stats(&self) -> FleetStats {
        let counters = &self.shared.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        FleetStats {
            led: read(&counters.led),
            remote_joins: read(&counters.remote_joins),
            store_errors: read(&counters.store_errors),
            alone: read(&counters.alone),
            leader_lost: read(&counters.leader_lost),
            replays: read(&counters.replays),
            lingered: read(&counters.lingered),
        }
    }

    /// The settings it runs with.
    pub fn config(&self) -> &FleetConfig {
        &self.shared.config
    }
}

/// A local flight's upstream when it goes through the fleet: what [`Fleet::open`] resolves to.
pub struct Upstream<T, E> {
    rx: UnboundedReceiver<Result<T, E>>,
}

impl<T, E> Stream for Upstream<T, E> {
    type Item = Result<T, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl<T, E> fmt::Debug for Upstream<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream").finish_non_exhaustive()
    }
}

/// How many times a replica tries to lead or follow before it serves alone: the lease can
/// change hands between its two steps, but not forever.
const ATTEMPTS: usize = 8;

/// One local flight's life in the fleet: lead it, or follow whoever leads it (and lead it
/// after all if that leader is lost before anything came), or serve alone.
async fn fly<K, T, E, S>(
    shared: Arc<Shared<K, T, E>>,
    names: Names,
    upstream: S,
    tx: UnboundedSender<Result<T, E>>,
) where
    S: Stream<Item = Result<T, E>> + Send + 'static,
    K: 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let config = &shared.config;
    let mut store = shared.store.clone();
    for _ in 0..ATTEMPTS {
        if !shared.available() {
            break;
        }
        match Lease::acquire(&mut store, &names.lease(), config.lease).await {
            Ok(Some(lease)) => {
                shared.counters.led.fetch_add(1, Ordering::Relaxed);
                let _here = Here::new(&shared, &names, lease.token());
                let _leading = crate::leading::Leading::new(&shared.leading);
                return lead::lead(&shared, &names, lease, upstream, tx).await;
            }
            Ok(None) => {}
            Err(error) => {
                shared.failed(&error);
                break;
            }
        }
        match interest::join(&mut store, &names.lease(), names.base(), &config.replica, config.lease).await {
            Ok(Some(interest::Joined { token, ended })) => {
                // Counted apart: a live flight joined, or a finished one replayed (R17).
                let counter = if ended { &shared.counters.lingered } else { &shared.counters.remote_joins };
                counter.fetch_add(1, Ordering::Relaxed);
                let here = Here::new(&shared, &names, &token);
                let followed = follow::follow(&shared, &names, &token, 0, &tx).await;
                drop(here);
                match followed {
                    follow::Followed::Over => return,
                    follow::Followed::Again => {}
                    follow::Followed::StoreDown => break,
                }
            }
            // The lease went between the two steps: try to take it again.
            Ok(None) => {}
            Err(error) => {
                shared.failed(&error);
                break;
            }
        }
    }
    shared.counters.alone.fetch_add(1, Ordering::Relaxed);
    lead::alone(upstream, tx).await;
}

/// This replica is on the flight led under a token, while it lives.
struct Here<'a, K, T, E> {
    shared: &'a Shared<K, T, E>,
    names: &'a Names,
    token: String,
}

impl<'a, K, T, E> Here<'a, K, T, E> {
    fn new(shared: &'a Shared<K, T, E>, names: &'a Names, token: &str) -> Self {
        let mut places = shared.places.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = places.entry(names.clone()).or_insert_with(|| (token.to_owned(), 0));
        if entry.0 != token {
            // A newer flight of the key: the one a newcomer's request is on.
            *entry = (token.to_owned(), 0);
        }
        entry.1 += 1;
        Here { shared, names, token: token.to_owned() }
    }
}

impl<K, T, E> Drop for Here<'_, K, T, E> {
    fn drop(&mut self) {
        let mut places = self.shared.places.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = places.get_mut(self.names).filter(|entry| entry.0 == self.token) {
            entry.1 -= 1;
            if entry.1 == 0 {
                places.remove(self.names);
            }
        }
    }
}

impl<K, T, E> Shared<K, T, E> {
    /// Whether the store may be tried (it has not failed within the pause).
    fn available(&self) -> bool {
        let down = self.down_until.lock().unwrap_or_else(PoisonError::into_inner);
        down.is_none_or(|until| Instant::now() >= until)
    }

    /// A store error: counted, logged, and the store left alone for the pause (R23).
    pub(crate) fn failed(&self, error: &StoreError) {
        self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
        let mut down = self.down_until.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if down.is_none_or(|until| now >= until) {
            tracing::warn!(%error, pause = ?self.config.pause, "the fleet's store failed: serving this replica's requests alone meanwhile");
        }
        *down = Some(now + self.config.pause);
    }

    /// The store answered: the pause is over.
    pub(crate) fn answered(&self) {
        *self.down_until.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// A flight's leader was lost, as this replica saw it.
    pub(crate) fn leader_lost(&self) {
        self.counters.leader_lost.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection of its own for a reader: an idle one, or a new one whose replies may
    /// take as long as a blocking read.
    pub(crate) async fn reader(&self, block: Duration) -> Result<MultiplexedConnection, StoreError> {
        if let Some(idle) = self.readers.lock().unwrap_or_else(PoisonError::into_inner).pop() {
            return Ok(idle);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(block + self.config.lease));
        Ok(self.client.get_multiplexed_async_connection_with_config(&config).await?)
    }

    /// A reader's connection back, after a read that completed: ready for the next reader.
    pub(crate) fn idle(&self, connection: MultiplexedConnection) {
        let mut idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_READERS {
            idle.push(connection);
        }
    }
}
