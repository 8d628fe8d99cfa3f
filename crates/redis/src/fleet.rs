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

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::{Stream, TryFutureExt};
use redis::Client;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use streamflight_core::fleet::{CallId, Millis, Reply, Timings};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::names::Names;
use crate::open::Opened;
use crate::placement::Deciding;
use crate::reader::{self, Reader};
use crate::stream::millis;
use crate::{Codec, FleetRole, Place, StoreError, follow, interest, lead, open};

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
    pub(crate) deadline: Option<Duration>,
    pub(crate) secret: crate::seal::Secret,
    pub(crate) holding: Duration,
}

impl Default for FleetConfig {
    /// Prefix `sf:`, a random replica id, a 3 s lease, streams of about 100,000 entries kept
    /// 30 s after their end, no linger, 1 s without the store after it failed, store calls
    /// given up after 200 ms (at most a third of the lease), and the hand of a request being
    /// read kept an hour.
    fn default() -> Self {
        FleetConfig {
            prefix: "sf:".to_owned(),
            replica: crate::lease::fresh_token()[..12].to_owned(),
            lease: Duration::from_secs(3),
            max_len: 100_000,
            keep: Duration::from_secs(30),
            linger: Duration::ZERO,
            pause: Duration::from_secs(1),
            deadline: None,
            secret: crate::seal::Secret::default(),
            holding: Duration::from_secs(3_600),
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
    /// resumes: at least the resume window of the requests on it ([`matching`](Self::matching)
    /// raises it to that; [`check`](Self::check) says when it falls short).
    pub fn keep(mut self, keep: Duration) -> Self {
        self.keep = keep;
        self
    }

    /// How long after its end a flight is still joined by new requests on any replica (R17),
    /// as the local manager's linger does within one replica. At most [`keep`](Self::keep), and
    /// the local manager's own ([`matching`](Self::matching) takes it from there).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// How long the hand of a request being read ([`Flights::hold`](crate::Flights::hold))
    /// lasts in the store without a word from its replica: as long as the longest answer and
    /// a resume window more, or a replica that died mid-answer leaves it read for that long.
    pub fn holding(mut self, holding: Duration) -> Self {
        self.holding = holding.max(Duration::from_secs(1));
        self
    }

    /// How long the replica serves without the store after a store error before it tries
    /// the store again (R23): no request waits on a store that is down.
    pub fn pause(mut self, pause: Duration) -> Self {
        self.pause = pause;
        self
    }

    /// How long any store call may take before the replica gives up on it (R23): a new
    /// request waits on the store at most this long before it is served alone, and a leader's
    /// renewal or append past it counts as failed (it may still take effect). Default: 200 ms,
    /// or a third of the lease if that is shorter. At least 1 ms.
    ///
    /// ```
    /// use std::time::Duration;
    /// use streamflight_redis::FleetConfig;
    ///
    /// let config = FleetConfig::default().lease(Duration::from_secs(3));
    /// assert_eq!(config.timings().deadline, 200);
    /// let config = config.deadline(Duration::from_millis(50));
    /// assert_eq!((config.timings().lease, config.timings().deadline), (3_000, 50));
    /// ```
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline.max(Duration::from_millis(1)));
        self
    }

    /// The timings the fleet's machines run with: the lease, the deadline and the linger.
    pub fn timings(&self) -> Timings {
        let mut timings = Timings::new(as_millis(self.lease));
        if let Some(deadline) = self.deadline {
            timings.deadline = as_millis(deadline);
        }
        timings.linger = as_millis(self.linger);
        timings
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
    /// Every command that does not block: leases, appends, interest, the reader's wake-ups.
    /// Reconnects by itself.
    pub(crate) store: ConnectionManager,
    /// The one blocking reader of every flight this replica follows, started on first use.
    reader: Mutex<Option<Reader>>,
    pub(crate) codec: Box<dyn Codec<K, T, E>>,
    pub(crate) config: FleetConfig,
    /// The machines' timings, from the config.
    pub(crate) timings: Timings,
    /// The machines' clock starts here: their `now` is the milliseconds since.
    origin: Instant,
    counters: Counters,
    /// Flights this replica leads for the fleet now (the lease held, the end not yet written).
    leading: AtomicUsize,
    /// The local flights this replica has put on the fleet: each is a member of its own in the
    /// interest of the flight it follows.
    members: AtomicU64,
    /// Until when the store is left alone after it failed.
    down_until: Mutex<Option<Instant>>,
    /// The token of the flight this replica leads or follows, by key (and how many of its
    /// flights are on it: an aborted local flight's leader may still run for the others).
    places: Mutex<HashMap<Names, (String, usize)>>,
    /// Idle connections for [`Fleet::ask`]'s blocking pop (one per ask on its way).
    pub(crate) asking: Mutex<Vec<redis::aio::MultiplexedConnection>>,
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
    /// assert_eq!(fleet.leading(), 0);
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
        let timings = config.timings();
        // Every call has its own deadline above this; these bound what the client itself waits.
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
                reader: Mutex::new(None),
                codec: Box::new(codec),
                config,
                timings,
                origin: Instant::now(),
                counters: Counters::default(),
                leading: AtomicUsize::new(0),
                members: AtomicU64::new(0),
                down_until: Mutex::new(None),
                places: Mutex::default(),
                asking: Mutex::default(),
            }),
        })
    }

    /// Makes a local flight's preparation fleet-wide: pass what this returns to the local
    /// manager's `request` instead of `prepare`. On its first poll it leads the key's flight
    /// for the fleet (takes the lease, runs `prepare`, appends what comes to the store), or
    /// follows the replica that leads it (reads the store; `prepare` is never run), or, with
    /// the store down or slower than its deadline, runs `prepare` for this replica alone.
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
        self.open_placed(key, prepare, None)
    }

    /// Where the flight of `key` that this replica leads or follows is, if it has one in
    /// the store: for a client that will resume elsewhere ([`Fleet::replay`]).
    pub fn place(&self, key: &K) -> Option<Place> {
        let names = self.shared.config.names(&self.shared.codec.key(key));
        let places = self.shared.places.lock().unwrap_or_else(PoisonError::into_inner);
        let token = places.get(&names)?.0.clone();
        Some(Place { names, token })
    }

    /// The items of the flight at `place` after its first `from`, then its end, read from
    /// the store: a stream that a client which lost its connection to another replica
    /// resumes here. This replica's interest is registered before it returns (within the
    /// store's deadline), and keeps the flight's upstream going meanwhile (R22). Spawns its
    /// follower on the current tokio runtime.
    pub async fn replay(&self, place: &Place, from: u64) -> Result<Upstream<T, E>, StoreError>
    where
        K: Send + Sync,
        T: Sync,
        E: Sync,
    {
        let config = &self.shared.config;
        let mut store = self.shared.store.clone();
        let interest = place.names.interest(&place.token);
        let member = self.shared.member();
        let refresh = interest::refresh(&mut store, &interest, &member, config.lease);
        if let Err(error) = self.shared.within(self.shared.deadline(), refresh).await {
            self.shared.failed(&error);
            return Err(error);
        }
        let (tx, rx) = unbounded_channel();
        let shared = Arc::clone(&self.shared);
        let place = place.clone();
        self.shared.counters.replays.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            // A resume never starts over nor serves alone: it ends, `Lost` if the fleet failed it.
            let _ = follow::follow(&shared, &place.names, &place.token, &member, from, true, &tx).await;
        });
        Ok(Upstream { rx })
    }

    /// Keeps `value` under `name` for `ttl`, for any replica to [`load`](Fleet::load): only
    /// a hash of the name is in the store (R24), and the value is sealed with a key derived
    /// from the name (and the fleet's [secret](FleetConfig::secret)): whoever does not know
    /// the name cannot read it. Given up after the store's deadline ([`StoreError::Deadline`]).
    pub async fn save(&self, name: &[u8], value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let mut store = self.shared.store.clone();
        let key = Names::note(&self.shared.config.prefix, name);
        let sealed = crate::seal::seal_note(&self.shared.config.secret, name, &key, value)
            .ok_or(StoreError::Sealed)?;
        let save = async {
            Ok(redis::AsyncCommands::pset_ex::<_, _, ()>(&mut store, &key, sealed, millis(ttl)).await?)
        };
        self.shared.within(self.shared.deadline(), save).await
    }

    /// What was [`save`](Fleet::save)d under `name`, if it has not expired;
    /// [`StoreError::Sealed`] if what is there does not open with `name`. Given up after the
    /// store's deadline ([`StoreError::Deadline`]).
    pub async fn load(&self, name: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut store = self.shared.store.clone();
        let key = Names::note(&self.shared.config.prefix, name);
        let load = async { Ok(redis::AsyncCommands::get::<_, Option<Vec<u8>>>(&mut store, &key).await?) };
        let sealed = self.shared.within(self.shared.deadline(), load).await?;
        sealed
            .map(|sealed| {
                crate::seal::open_note(&self.shared.config.secret, name, &key, &sealed)
                    .ok_or(StoreError::Sealed)
            })
            .transpose()
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

    /// How many flights this replica leads for the fleet right now: it holds their lease and
    /// has not yet written their end. Other replicas may be following them, so a replica told
    /// to stop keeps running until this is 0 or its grace period is over (R26).
    pub fn leading(&self) -> usize {
        self.shared.leading.load(Ordering::SeqCst)
    }

    /// The settings it runs with.
    pub fn config(&self) -> &FleetConfig {
        &self.shared.config
    }
}

impl<K: Send + Sync + 'static, T: Send + Sync + 'static, E: Send + Sync + 'static> Fleet<K, T, E> {
    /// [`open`](Self::open), telling `placement` (if any) each decision its flight takes.
    pub(crate) fn open_placed<F: Future<Output = Result<S, E>> + Send + 'static, S>(
        &self,
        key: &K,
        prepare: F,
        placement: Option<Deciding>,
    ) -> impl Future<Output = Result<Upstream<T, E>, E>> + Send + 'static + use<F, S, K, T, E>
    where
        S: Stream<Item = Result<T, E>> + Send + 'static,
    {
        let names = self.shared.config.names(&self.shared.codec.key(key));
        let shared = Arc::clone(&self.shared);
        async move {
            let (tx, rx) = unbounded_channel();
            tokio::spawn(fly(shared, names, prepare.try_flatten_stream(), tx, placement));
            Ok(Upstream { rx })
        }
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

/// How many times a replica opens a flight again (its leader went before anything came)
/// before it serves alone: the lease can change hands, but not forever.
const ATTEMPTS: usize = 8;

/// One local flight's life in the fleet: lead it, or follow whoever leads it (and open it
/// again if that leader is lost before anything came), or serve alone.
async fn fly<K, T, E, S>(
    shared: Arc<Shared<K, T, E>>,
    names: Names,
    upstream: S,
    tx: UnboundedSender<Result<T, E>>,
    placement: Option<Deciding>,
) where
    S: Stream<Item = Result<T, E>> + Send + 'static,
    K: 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let decided = |role, token: Option<&str>| {
        if let Some(Deciding(placement)) = &placement {
            let place = token.map(|token| Place { names: names.clone(), token: token.to_owned() });
            placement.decided(role, place);
        }
    };
    let member = shared.member();
    for _ in 0..ATTEMPTS {
        match open::open(&shared, &names, &member).await {
            Opened::Lead(lease) => {
                decided(FleetRole::Led, Some(lease.token()));
                shared.counters.led.fetch_add(1, Ordering::Relaxed);
                let _here = Here::new(&shared, &names, lease.token());
                return lead::lead(&shared, &names, lease, upstream, tx).await;
            }
            Opened::Follow { token, ended } => {
                decided(FleetRole::Followed, Some(&token));
                // Counted apart: a live flight joined, or a finished one replayed (R17).
                let counter = if ended { &shared.counters.lingered } else { &shared.counters.remote_joins };
                counter.fetch_add(1, Ordering::Relaxed);
                let here = Here::new(&shared, &names, &token);
                let followed = follow::follow(&shared, &names, &token, &member, 0, false, &tx).await;
                drop(here);
                match followed {
                    follow::Followed::Over => return,
                    follow::Followed::Again => {}
                    follow::Followed::Alone => break,
                }
            }
            Opened::Alone => break,
        }
    }
    decided(FleetRole::Alone, None);
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

/// One flight this replica leads for the fleet, counted in [`Fleet::leading`] while it lives.
pub(crate) struct Leading<'a> {
    count: &'a AtomicUsize,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<K, T, E> Shared<K, T, E> {
    /// A new name in interest records for one local flight (or one resume) of this replica.
    /// Per flight, not per replica: a replica can have two on the same answer at once (one
    /// whose requests are gone while its join was on its way, and a newer one), and the first
    /// one's withdrawal must leave the second's interest standing (R22).
    pub(crate) fn member(&self) -> String {
        format!("{}/{}", self.config.replica, self.members.fetch_add(1, Ordering::Relaxed))
    }

    /// Whether the store may be tried (it has not failed within the pause).
    pub(crate) fn available(&self) -> bool {
        let down = self.down_until.lock().unwrap_or_else(PoisonError::into_inner);
        down.is_none_or(|until| Instant::now() >= until)
    }

    /// A store error: counted, logged, and the store left alone for the pause (R23).
    pub(crate) fn failed(&self, error: &StoreError) {
        self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
        let mut down = self.down_until.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if down.is_none_or(|until| now >= until) {
            tracing::warn!(%error, pause = ?self.config.pause, "the fleet's store failed: serving new flights alone meanwhile");
        }
        *down = Some(now + self.config.pause);
    }

    /// The store answered: the pause is over.
    pub(crate) fn answered(&self) {
        let mut down = self.down_until.lock().unwrap_or_else(PoisonError::into_inner);
        if down.is_some() {
            *down = None;
        }
    }

    /// A flight's leader was lost, as this replica saw it.
    pub(crate) fn leader_lost(&self) {
        self.counters.leader_lost.fetch_add(1, Ordering::Relaxed);
    }

    /// The machines' clock: milliseconds since the link was made.
    pub(crate) fn now(&self) -> Millis {
        as_millis(self.origin.elapsed())
    }

    /// When the machines' clock reads `at`, for a timer.
    pub(crate) fn instant(&self, at: Millis) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.origin + Duration::from_millis(at))
    }

    /// How long a store call may take.
    pub(crate) fn deadline(&self) -> Duration {
        Duration::from_millis(self.timings.deadline)
    }

    /// `call`, given up after `deadline` (R23): a hung store answers nothing, and nothing waits
    /// on it past its deadline.
    pub(crate) async fn within<R>(
        &self,
        deadline: Duration,
        call: impl Future<Output = Result<R, StoreError>>,
    ) -> Result<R, StoreError> {
        tokio::time::timeout(deadline, call).await.unwrap_or(Err(StoreError::Deadline(deadline)))
    }

    /// A machine's store call carried out: its reply, or `Failed` (counted, and new flights
    /// served alone for the pause) if the store failed or missed the deadline.
    pub(crate) async fn call(
        &self,
        deadline: Duration,
        call: impl Future<Output = Result<Reply, StoreError>>,
    ) -> Reply {
        match self.within(deadline, call).await {
            Ok(reply) => {
                self.answered();
                reply
            }
            Err(error) => {
                self.failed(&error);
                Reply::Failed
            }
        }
    }

    /// Store call `id` of a machine: `make`'s future on the command connection, under the
    /// store's deadline, its reply (or `Failed`) handed back with the id. The one shape of
    /// every leader's and follower's call.
    pub(crate) fn issue<F, Fut>(self: &Arc<Self>, id: CallId, make: F) -> BoxFuture<'static, (CallId, Reply)>
    where
        K: 'static,
        T: Send + 'static,
        E: Send + 'static,
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<Reply, StoreError>> + Send + 'static,
    {
        let (shared, call) = (Arc::clone(self), make(self.store.clone()));
        async move { (id, shared.call(shared.deadline(), call).await) }.boxed()
    }

    /// One more flight led for the fleet, until the returned guard goes.
    pub(crate) fn leading(&self) -> Leading<'_> {
        self.leading.fetch_add(1, Ordering::SeqCst);
        Leading { count: &self.leading }
    }

    /// The replica's reader of followed streams: started on first use, on the current runtime
    /// (again if the runtime it ran on is gone).
    pub(crate) fn reader(&self) -> Reader {
        let mut reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        match &*reader {
            Some(running) if !running.is_closed() => running.clone(),
            _ => {
                let link = reader::Link {
                    client: self.client.clone(),
                    store: self.store.clone(),
                    block: self.config.lease / 4,
                    deadline: self.deadline(),
                };
                reader.insert(Reader::start(link)).clone()
            }
        }
    }
}

/// A duration in whole milliseconds, for the machines.
pub(crate) fn as_millis(duration: Duration) -> Millis {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
