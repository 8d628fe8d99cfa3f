//! The manager whose flights span replicas: the tokio manager of this replica, with each new
//! local flight's preparation made fleet-wide by its [`Fleet`].

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::Stream;
use streamflight_tokio::{CancelError, Config, RequestId, ResumeError, Role, Stats};

use crate::placement::{Deciding, Placement};
use crate::{Codec, ConfigError, Fleet, FleetConfig, FleetStats, StoreError, Subscription};

/// [`streamflight_tokio::Flights`] across a fleet: the same API, and one upstream request per
/// key for every replica on the store (R19). Within a replica, flights are the local
/// manager's (its history, its fan-out); across replicas, the [`Fleet`] leads or follows.
///
/// ```no_run
/// # #[tokio::main] async fn main() {
/// use futures::StreamExt;
/// use streamflight_redis::{Fleet, FleetConfig, Flights, Text};
/// use streamflight_tokio::{Config, Event};
///
/// // On every replica: the same store, the same codec.
/// let fleet = Fleet::new("redis://127.0.0.1:6379/", Text, FleetConfig::default()).unwrap();
/// let flights = Flights::new(fleet, Config::default());
/// let answer = async {
///     Ok::<_, String>(futures::stream::iter(["to".to_owned(), "ken".to_owned()].map(Ok)))
/// };
/// let events: Vec<_> = flights.request("the prompt".to_owned(), answer).collect().await;
/// assert!(matches!(events.last(), Some(Event::Done)));
/// # }
/// ```
pub struct Flights<K, T, E> {
    local: streamflight_tokio::Flights<K, T, E>,
    /// `None`: on no fleet ([`Flights::alone`]), every flight is served here alone.
    fleet: Option<Fleet<K, T, E>>,
    placements: Arc<Mutex<Placements<K>>>,
    /// The requests resumed here from a hand-off, each its own flight ([`crate::Ticket`]).
    pub(crate) resumes: streamflight_tokio::Flights<u64, T, E>,
    /// The key of the next resume's flight.
    pub(crate) resumed: Arc<AtomicU64>,
    /// The local manager's resume window: how long a hand-off waits.
    pub(crate) resume_window: Duration,
    /// The placement of every flight on no fleet: decided, alone.
    alone: Arc<Placement>,
}

/// The placement of each key's latest local flight, for the requests that join it.
struct Placements<K> {
    /// Strong: a lingering flight's placement outlives its fleet task and its subscriptions,
    /// for a joiner within the linger to read; [`Placements::prune`] forgets it after.
    by_key: HashMap<K, Arc<Placement>>,
    /// How long a finished local flight is joined (the local manager's linger).
    linger: Duration,
    /// Prune when the map grows past this: amortised, one sweep per doubling.
    prune_at: usize,
}

impl<K: Hash + Eq> Placements<K> {
    /// Forgets the placements nobody can read any more: no subscription holds them, and their
    /// flight's fleet task ended longer than a linger ago.
    fn prune(&mut self) {
        let linger = self.linger;
        self.by_key.retain(|_, placement| {
            Arc::strong_count(placement) > 1 || placement.over().is_none_or(|over| over.elapsed() <= linger)
        });
        self.prune_at = (self.by_key.len() * 2).max(64);
    }
}

impl<K, T, E> Clone for Flights<K, T, E> {
    fn clone(&self) -> Self {
        Flights {
            local: self.local.clone(),
            fleet: self.fleet.clone(),
            placements: Arc::clone(&self.placements),
            resumes: self.resumes.clone(),
            resumed: Arc::clone(&self.resumed),
            resume_window: self.resume_window,
            alone: Arc::clone(&self.alone),
        }
    }
}

impl<K, T, E> std::fmt::Debug for Flights<K, T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights").field("fleet", &self.fleet).finish_non_exhaustive()
    }
}

impl<K, T, E> Flights<K, T, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// A manager on `fleet`, its local flights configured by `config` (spawned on the tokio
    /// runtime `request` is called from). The fleet's linger and keep are not checked against
    /// `config` (a disagreement is logged): [`try_new`](Self::try_new) refuses one, and
    /// [`connect`](Self::connect) derives them from `config`.
    pub fn new(fleet: Fleet<K, T, E>, config: Config) -> Self {
        if let Err(error) = fleet.config().check(&config) {
            tracing::warn!(%error, "the fleet's settings disagree with the local manager's");
        }
        Flights::on(Some(fleet), config)
    }

    /// A manager on no fleet: the local manager alone, behind the same API, for an application
    /// that shares flights across replicas only when it is given a store. Every request is
    /// served on this replica ([`FleetRole::Alone`](crate::FleetRole::Alone)); what needs
    /// the store finds nothing there ([`holder`](Self::holder) says `Here`, [`take`](Self::take)
    /// `Unknown`, [`replay`](Self::replay) fails with [`StoreError::NoFleet`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use futures::StreamExt;
    /// use streamflight_redis::{FleetRole, Flights};
    /// use streamflight_tokio::{Config, Event};
    ///
    /// let flights = Flights::<String, String, String>::alone(Config::default());
    /// let answer = async { Ok::<_, String>(futures::stream::iter([Ok("token".to_owned())])) };
    /// let mut subscription = flights.request("a prompt".to_owned(), answer);
    /// assert_eq!(subscription.fleet_role(), Some(FleetRole::Alone));
    /// assert_eq!(subscription.next().await, Some(Event::Item("token".to_owned())));
    /// assert!(flights.fleet().is_none());
    /// # }
    /// ```
    pub fn alone(config: Config) -> Self {
        Flights::on(None, config)
    }

    /// A manager on `fleet`, or on none.
    fn on(fleet: Option<Fleet<K, T, E>>, config: Config) -> Self {
        let placements =
            Placements { by_key: HashMap::new(), linger: config.linger_duration(), prune_at: 64 };
        let placements = Arc::new(Mutex::new(placements));
        let alone = Placement::default();
        alone.decided(crate::FleetRole::Alone, None);
        Flights {
            resumes: crate::handoff::resumes(&config),
            resumed: Arc::default(),
            resume_window: config.resume_window_duration(),
            local: streamflight_tokio::Flights::new(config),
            fleet,
            placements,
            alone: Arc::new(alone),
        }
    }

    /// A manager on `fleet`, as [`new`](Self::new), if the fleet's settings agree with the
    /// local manager's `config` ([`FleetConfig::check`]): the same linger, and a finished
    /// stream kept at least as long as the linger and the resume window.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// use streamflight_redis::{ConfigError, Fleet, FleetConfig, Flights, Text};
    /// use streamflight_tokio::Config;
    ///
    /// let local = Config::default().linger(Duration::from_secs(5));
    /// let fleet = Fleet::new("redis://127.0.0.1:6379/", Text, FleetConfig::default()).unwrap();
    /// let refused = Flights::try_new(fleet, local.clone()).unwrap_err();
    /// assert!(matches!(refused, ConfigError::Linger { .. }));
    /// let fleet = Fleet::new("redis://127.0.0.1:6379/", Text, FleetConfig::default().matching(&local)).unwrap();
    /// assert!(Flights::try_new(fleet, local).is_ok());
    /// # }
    /// ```
    pub fn try_new(fleet: Fleet<K, T, E>, config: Config) -> Result<Self, ConfigError> {
        fleet.config().check(&config)?;
        Ok(Flights::new(fleet, config))
    }

    /// A manager on the store at `url` whose fleet settings take their linger and keep from
    /// the local manager's `config` ([`FleetConfig::matching`]): linger and the resume window
    /// are set in one place. No connection is made yet, as [`Fleet::new`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// use streamflight_redis::{FleetConfig, Flights, Text};
    /// use streamflight_tokio::Config;
    ///
    /// let local = Config::default().linger(Duration::from_secs(5)).resume_window(Duration::from_secs(60));
    /// let flights = Flights::connect("redis://127.0.0.1:6379/", Text, FleetConfig::default(), local).unwrap();
    /// assert_eq!(flights.fleet().unwrap().config().linger_duration(), Duration::from_secs(5));
    /// assert_eq!(flights.fleet().unwrap().config().keep_duration(), Duration::from_secs(60));
    /// # }
    /// ```
    pub fn connect(
        url: &str,
        codec: impl Codec<K, T, E>,
        fleet: FleetConfig,
        config: Config,
    ) -> Result<Self, StoreError> {
        let fleet = Fleet::new(url, codec, fleet.matching(&config))?;
        Ok(Flights::new(fleet, config))
    }

    /// Joins the flight of `key` on this replica, or starts it: then it follows the replica
    /// that leads `key` for the fleet, or leads it (and only then is `prepare` run).
    pub fn request<F, S>(&self, key: K, prepare: F) -> Subscription<T, E>
    where
        F: Future<Output = Result<S, E>> + Send + 'static,
        S: Stream<Item = Result<T, E>> + Send + 'static,
    {
        let Some(fleet) = &self.fleet else {
            return Subscription::new(self.local.request(key, prepare), Some(Arc::clone(&self.alone)));
        };
        let placement = Arc::new(Placement::default());
        let upstream = fleet.open_placed(&key, prepare, Some(Deciding(Arc::clone(&placement))));
        // Under the lock, so that the map follows the local manager's order: a request that
        // joins a flight finds the placement of the one that started it, never an older one's.
        let mut placements = self.placements.lock().unwrap_or_else(PoisonError::into_inner);
        let local = self.local.request(key.clone(), upstream);
        let placement = if local.role() == Role::Leader {
            if placements.by_key.len() >= placements.prune_at {
                placements.prune();
            }
            placements.by_key.insert(key, Arc::clone(&placement));
            Some(placement)
        } else {
            placements.by_key.get(&key).cloned()
        };
        drop(placements);
        Subscription::new(local, placement)
    }

    /// Cancels a live request of this replica, as [`streamflight_tokio::Flights::cancel`]: its
    /// flight goes on for the others, on every replica.
    /// A request resumed here from a [hand-off](Self::resume_ticket) is cancelled the same way.
    pub fn cancel(&self, id: RequestId) -> Result<(), CancelError> {
        // An id is its manager's alone: the other one refuses it unchanged.
        self.local.cancel(id).or_else(|_| self.resumes.cancel(id))
    }

    /// Resumes a detached request of this replica, as [`streamflight_tokio::Flights::resume`]
    /// (one resumed here from a [hand-off](Self::resume_ticket) too). On another replica, a
    /// request [handed off](Self::hand_off) resumes with [`resume_ticket`](Self::resume_ticket).
    pub fn resume(
        &self,
        id: RequestId,
        from: u64,
    ) -> Result<streamflight_tokio::Subscription<T, E>, ResumeError> {
        match self.local.resume(id, from) {
            Err(ResumeError::UnknownRequest) => self.resumes.resume(id, from),
            resumed => resumed,
        }
    }

    /// This replica's counters.
    pub fn stats(&self) -> Stats {
        self.local.stats()
    }

    /// What this replica's fleet link has done (nothing on no fleet).
    pub fn fleet_stats(&self) -> FleetStats {
        self.fleet.as_ref().map(Fleet::stats).unwrap_or_default()
    }

    /// Whether this replica holds no state for any key, flight or request.
    pub fn is_idle(&self) -> bool {
        self.local.is_idle() && self.resumes.is_idle()
    }

    /// The local manager.
    pub fn local(&self) -> &streamflight_tokio::Flights<K, T, E> {
        &self.local
    }

    /// The fleet link; `None` on no fleet ([`alone`](Self::alone)).
    pub fn fleet(&self) -> Option<&Fleet<K, T, E>> {
        self.fleet.as_ref()
    }

    /// The fleet link, if any (for the crate, whatever the bounds).
    pub(crate) fn fleet_link(&self) -> Option<&Fleet<K, T, E>> {
        self.fleet.as_ref()
    }
}
