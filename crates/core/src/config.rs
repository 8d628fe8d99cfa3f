//! How a manager behaves: late joins, orphaned flights, the history's bounds (items, bytes),
//! linger and its byte budget, resume. One `Config` is shared by the machine and every adapter.

use alloc::sync::Arc;
use core::time::Duration;

use crate::observe::{Observer, Slot};
use crate::weigh::{Erased, Weigher};

/// What a request for a key whose flight is already streaming does ([R3](crate::design#r3)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LateJoin {
    /// Join and receive the whole history from the first item, then the live items.
    #[default]
    Replay,
    /// Join and receive only the items produced after joining.
    Tail,
    /// Start a fresh flight; the streaming one is no longer joinable.
    NewFlight,
}

/// What happens to a flight when its last live request leaves ([R11](crate::design#r11)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Orphan {
    /// Abort the flight: drop its preparation future or upstream stream.
    #[default]
    Abort,
    /// Let the flight run to its end (to warm a cache); it stays joinable.
    Finish,
}

/// What a request gets from a flight whose history released its oldest items to stay within
/// [`history_limit`](Config::history_limit) or [`flight_bytes`](Config::flight_bytes)
/// ([R15](crate::design#r15), [R17](crate::design#r17)).
///
/// Subscribers already reading are not concerned: one whose cursor falls out of the retained
/// window ends with [`Failure::Lagged`](crate::Failure::Lagged) under every policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Overflow {
    /// A late request starts a new flight, so that it gets a whole answer; the truncated
    /// flight is no longer joinable and never lingers.
    #[default]
    NewFlight,
    /// A late request still joins (the flight still lingers once `Done`) and, if it would
    /// read from a released item, ends at once with `Failed(Lagged { missed })`: no upstream
    /// is started for it, and it is told what it missed.
    Lagged,
    /// A late request still joins (the flight still lingers once `Done`) and reads the
    /// truncated history: from the oldest retained item when it joins, then the live items and
    /// the end (if it then falls behind the window, it lags as any reader does). For items
    /// that stand alone (log lines, events), not for an answer that is read whole.
    Truncate,
}

/// The configuration of a manager. Built with chained setters:
///
/// ```
/// use streamflight_core::{Config, LateJoin, Orphan};
///
/// let config = Config::default()
///     .late_join(LateJoin::Tail)
///     .orphan(Orphan::Finish)
///     .history_limit(1024);
/// assert_eq!(config.late_join_policy(), LateJoin::Tail);
/// assert_eq!(config.history_limit_items(), Some(1024));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    late_join: LateJoin,
    orphan: Orphan,
    history_limit: Option<usize>,
    linger: Duration,
    resume_window: Duration,
    observer: Slot,
    overflow: Overflow,
    flight_bytes: Option<usize>,
    linger_budget: Option<usize>,
    weigher: Option<Erased>,
}

impl Config {
    /// Sets the late-join policy ([R3](crate::design#r3)). Default: [`LateJoin::Replay`].
    pub fn late_join(mut self, policy: LateJoin) -> Self {
        self.late_join = policy;
        self
    }

    /// Sets the orphan policy ([R11](crate::design#r11)). Default: [`Orphan::Abort`].
    pub fn orphan(mut self, policy: Orphan) -> Self {
        self.orphan = policy;
        self
    }

    /// Bounds a flight's history to `items` ([R15](crate::design#r15)): past it the oldest
    /// items are released, subscribers that fall behind end with `Lagged`, and late requests
    /// are served as the [`overflow`](Config::overflow) policy says. Default: unbounded.
    /// A bound of 0 is taken as 1: the newest item is always retained. For a bound in bytes,
    /// see [`flight_bytes`](Config::flight_bytes); both may be set.
    ///
    /// Appends never wait for readers, and a fast upstream's ready items are
    /// appended in bursts of up to a thousand: keep the bound above the
    /// largest burst you expect, or even readers that keep up will lag.
    pub fn history_limit(mut self, items: usize) -> Self {
        self.history_limit = Some(items.max(1));
        self
    }

    /// Keeps a flight that ended `Done` joinable for `after_done` ([R17](crate::design#r17)): a
    /// request for its key in that window joins it as a joiner, replays its
    /// whole history, gets `Done`, and starts no upstream (whatever the
    /// late-join policy: it governs joining a *streaming* flight). A flight
    /// that failed, panicked or was aborted, or whose history released items
    /// ([R15](crate::design#r15)), never lingers. Default: zero, no linger.
    pub fn linger(mut self, after_done: Duration) -> Self {
        self.linger = after_done;
        self
    }

    /// How long a detached request stays live, waiting to be resumed ([R18](crate::design#r18)).
    /// Default: zero, detaching is dropping ([R12](crate::design#r12)).
    pub fn resume_window(mut self, window: Duration) -> Self {
        self.resume_window = window;
        self
    }

    /// Sets the [`Observer`] the manager tells of every flight's start, first item and end,
    /// and of every request's admission, cancel, detach, resume and end. Default: none, and
    /// then the driver makes no call and allocates nothing for it. Two configurations are
    /// equal when they hold the same observer (the same `Arc`). See [`Observer`] for when
    /// and where each hook runs, and an example.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Slot(Some(observer));
        self
    }

    /// Weighs each item for the bounds in bytes ([`flight_bytes`](Config::flight_bytes),
    /// [`linger_budget`](Config::linger_budget)): `weigh(&item)` is called once per item, as
    /// it is appended, and never again; weights are summed exactly (saturating at `u64::MAX`).
    /// Without a weigher an item weighs `size_of::<T>()`, with no call; with neither bound set,
    /// nothing is weighed at all. `T` is the manager's item type: a manager built with a
    /// weigher of another type panics ([`Flights::with_runtime`](crate::driver::Flights::with_runtime)).
    /// Two configurations are equal when they hold the same weigher: set once, then cloned.
    ///
    /// ```
    /// use streamflight_core::Config;
    ///
    /// let config = Config::default().weigher(|text: &String| text.len()).flight_bytes(1 << 20);
    /// let weigh = config.weigher_for::<String>().unwrap().expect("a weigher of strings");
    /// assert_eq!(weigh(&"four".to_string()), 4);
    /// assert!(config.weigher_for::<Vec<u8>>().is_err(), "not a weigher of byte vectors");
    /// ```
    pub fn weigher<T: 'static>(mut self, weigh: Weigher<T>) -> Self {
        self.weigher = Some(Erased::new(weigh));
        self
    }

    /// Bounds each flight's history to `bytes`, as weighed by the
    /// [`weigher`](Config::weigher) ([R15](crate::design#r15)): past it the oldest items are
    /// released until the rest weigh at most `bytes` (the newest item is always retained,
    /// whatever it weighs), subscribers that fall behind end with `Lagged`, and late requests
    /// are served as the [`overflow`](Config::overflow) policy says. Works with
    /// [`history_limit`](Config::history_limit): the tighter bound releases first. Default:
    /// unbounded.
    ///
    /// The bound is exact for what a subscriber can read; the memory of released items goes
    /// with their chunk of the history (up to 256 items), once no reader is in it.
    ///
    /// ```
    /// use streamflight_core::{Config, Overflow};
    ///
    /// let config = Config::default()
    ///     .weigher(|chunk: &Vec<u8>| chunk.len())
    ///     .flight_bytes(64 << 10)
    ///     .overflow(Overflow::Lagged);
    /// assert_eq!(config.flight_bytes_limit(), Some(64 << 10));
    /// ```
    pub fn flight_bytes(mut self, bytes: usize) -> Self {
        self.flight_bytes = Some(bytes);
        self
    }

    /// What a late request gets from a flight whose history released items
    /// ([`history_limit`](Config::history_limit), [`flight_bytes`](Config::flight_bytes)), and
    /// whether such a flight lingers. Default: [`Overflow::NewFlight`].
    pub fn overflow(mut self, policy: Overflow) -> Self {
        self.overflow = policy;
        self
    }

    /// Caps what lingering flights ([R17](crate::design#r17)) hold in all to `bytes`: the
    /// weight of their retained items, as weighed by the [`weigher`](Config::weigher). When a
    /// finished flight would take the total past it, the flights that started lingering first
    /// are released first until it fits (a flight that alone weighs more never lingers); each
    /// counts in [`Stats::evicted`](crate::Stats::evicted). Readers of an evicted flight keep
    /// reading it. Default: no cap.
    ///
    /// ```
    /// use std::time::Duration;
    /// use streamflight_core::Config;
    ///
    /// let config = Config::default()
    ///     .linger(Duration::from_secs(30))
    ///     .weigher(|text: &String| text.len())
    ///     .linger_budget(16 << 20);
    /// assert_eq!(config.linger_budget_bytes(), Some(16 << 20));
    /// ```
    pub fn linger_budget(mut self, bytes: usize) -> Self {
        self.linger_budget = Some(bytes);
        self
    }

    /// The weigher set by [`weigher`](Config::weigher), typed: `Ok(None)` without one,
    /// `Err(name)` with the name of the item type it weighs if that is not `T`.
    pub fn weigher_for<T: 'static>(&self) -> Result<Option<Weigher<T>>, &'static str> {
        self.weigher.as_ref().map(Erased::typed).transpose()
    }

    /// The per-flight byte bound, if any.
    pub fn flight_bytes_limit(&self) -> Option<usize> {
        self.flight_bytes
    }

    /// The byte budget of lingering flights, if any.
    pub fn linger_budget_bytes(&self) -> Option<usize> {
        self.linger_budget
    }

    /// The overflow policy.
    pub fn overflow_policy(&self) -> Overflow {
        self.overflow
    }

    /// Whether items are weighed: a bound in bytes is set.
    pub fn weighs(&self) -> bool {
        self.flight_bytes.is_some() || self.linger_budget.is_some()
    }

    /// The observer set by [`observer`](Config::observer), if any.
    pub fn observer_ref(&self) -> Option<&Arc<dyn Observer>> {
        self.observer.0.as_ref()
    }

    /// The linger after `Done` ([R17](crate::design#r17)).
    pub fn linger_duration(&self) -> Duration {
        self.linger
    }

    /// The resume window of a detached request ([R18](crate::design#r18)).
    pub fn resume_window_duration(&self) -> Duration {
        self.resume_window
    }

    /// The late-join policy.
    pub fn late_join_policy(&self) -> LateJoin {
        self.late_join
    }

    /// The orphan policy.
    pub fn orphan_policy(&self) -> Orphan {
        self.orphan
    }

    /// The history bound set by [`history_limit`](Config::history_limit), in
    /// items, if any (never 0).
    pub fn history_limit_items(&self) -> Option<usize> {
        self.history_limit
    }

    /// The history bound, if any.
    #[deprecated(note = "named after its setter now: use `history_limit_items`")]
    pub fn max_history(&self) -> Option<usize> {
        self.history_limit_items()
    }
}
