//! How a manager behaves: late joins, orphaned flights, the history bound, linger and resume.
//! One `Config` is shared by the machine and every adapter.

use alloc::sync::Arc;
use core::time::Duration;

use crate::observe::{Observer, Slot};

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

    /// Bounds a flight's history to `items` ([R15](crate::design#r15)). Default: unbounded.
    /// A bound of 0 is taken as 1: the newest item is always retained.
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
