//! The control plane: requests, flight reports (prepared, truncated, ended), cancels and drops in;
//! actions out. It decides who leads, who joins, who ends how and which flight to abort.

use core::fmt;
use core::hash::{BuildHasher, Hash};
use core::time::Duration;

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::config::{Config, LateJoin, Orphan, Overflow};
pub use crate::id::{FlightId, RequestId};
use crate::id::{Slab, next_tag};

/// The role of a request in its flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Started the flight; its `start` future prepares and opens the upstream ([R1](crate::design#r1)).
    Leader,
    /// Joined while the flight was preparing; does no work ([R2](crate::design#r2)).
    Follower,
    /// Joined while the flight was streaming ([R3](crate::design#r3)).
    Joiner,
}

impl Role {
    /// `leader`, `follower` or `joiner`: the role's name as a header value or a metric label
    /// (the gateway's `x-streamflight-role`), with no allocation.
    ///
    /// ```
    /// use streamflight_core::Role;
    ///
    /// assert_eq!(Role::Joiner.as_str(), "joiner");
    /// assert_eq!(Role::Leader.to_string(), Role::Leader.as_str());
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Joiner => "joiner",
        }
    }
}

impl fmt::Display for Role {
    /// [`Role::as_str`]: `leader`, `follower` or `joiner` (as a header value, a log field).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a new subscriber's cursor starts in its flight's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Position {
    /// At the first item: the whole history is replayed ([R3](crate::design#r3) `Replay`, [R4](crate::design#r4)).
    Start,
    /// After the last item appended so far ([R3](crate::design#r3) `Tail`).
    Tail,
    /// At item `n`: a resumed request reads from where its client stopped ([R18](crate::design#r18)).
    At(u64),
}

/// What the machine asks its driver to do. Drained with [`Machine::poll_action`]
/// after every input, and carried out in order. `Release` and `Abort` are a
/// flight's last action: after either, the machine holds nothing of it and the
/// driver releases what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Start `flight`: run the leader's preparation, then its upstream, feeding
    /// items to the flight's history ([R1](crate::design#r1)). Report back with
    /// [`Machine::handle_prepared`], [`Machine::handle_truncated`] and
    /// [`Machine::handle_ended`].
    Start {
        /// The new flight.
        flight: FlightId,
    },
    /// Give `request` a cursor on `flight`'s history at `from` ([R3](crate::design#r3), [R4](crate::design#r4)).
    Subscribe {
        /// The new request.
        request: RequestId,
        /// The flight it reads.
        flight: FlightId,
        /// Where its cursor starts.
        from: Position,
    },
    /// End `request` alone with [`Event::Cancelled`](crate::Event::Cancelled): it wins over
    /// items not yet read; its flight is untouched ([R10](crate::design#r10), [R13](crate::design#r13)).
    Cancel {
        /// The cancelled request.
        request: RequestId,
    },
    /// Publish the end `flight` reported (its [`End`](crate::End)) to its
    /// history: every subscriber reads the remaining items, then this end ([R5](crate::design#r5),
    /// [R7](crate::design#r7), [R8](crate::design#r8), [R9](crate::design#r9)). The key is already free, unless the flight lingers ([R17](crate::design#r17)).
    Close {
        /// The flight that ended.
        flight: FlightId,
    },
    /// Release what is held for the detached `request` ([R18](crate::design#r18)): its resume
    /// window passed, and it was dropped ([R12](crate::design#r12)), with nobody to tell.
    Forget {
        /// The request gone.
        request: RequestId,
    },
    /// Release what is held for `flight` (its history): no request will
    /// subscribe to it any more. Right after its `Close`, or when its linger
    /// is over ([R17](crate::design#r17)). Readers still reading keep what they read.
    Release {
        /// The flight released.
        flight: FlightId,
    },
    /// Nobody is left: drop `flight`'s preparation future or upstream stream
    /// now ([R11](crate::design#r11)), then release the flight. It reports nothing more.
    Abort {
        /// The orphaned flight.
        flight: FlightId,
    },
}

/// Why a resume changed nothing ([R18](crate::design#r18)).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResumeError {
    /// The id names no live request of this manager: it ended, its resume
    /// window passed, or it belongs to another manager.
    UnknownRequest,
    /// The request is live but not detached: it has its subscription (a
    /// second resume of the same request is refused while the first lives).
    NotDetached,
    /// The items from where the request asked to resume were released
    /// (`history_limit`, [R15](crate::design#r15)); `missed` of them. Told by the driver, which
    /// holds the history.
    Released {
        /// Items released before the asked position.
        missed: u64,
    },
    /// The request asked to resume past the items appended so far; `appended`
    /// is how many there are. Told by the driver, which holds the history.
    Ahead {
        /// Items appended so far.
        appended: u64,
    },
}

impl fmt::Display for ResumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResumeError::UnknownRequest => f.write_str("unknown or already ended request"),
            ResumeError::NotDetached => f.write_str("the request is not detached"),
            ResumeError::Released { missed } => write!(f, "{missed} items to resume from were released"),
            ResumeError::Ahead { appended } => write!(f, "past the end: {appended} items so far"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ResumeError {}

/// What [`Machine::handle_request`] and [`Machine::handle_join`] tell the caller about its new request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Admission {
    /// The request's id, for cancel, drop and finish.
    pub id: RequestId,
    /// Its role in its flight.
    pub role: Role,
    /// The flight it belongs to.
    pub flight: FlightId,
}

/// Counters of a manager. Every field is exact when read between inputs.
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests ever made.
    pub requests: u64,
    /// Flights ever started (= preparations started).
    pub flights: u64,
    /// Requests served by an existing flight (followers and joiners).
    pub joined: u64,
    /// Requests that ended `Cancelled`, dropped ones included ([R12](crate::design#r12)).
    pub cancelled: u64,
    /// Flights aborted because nobody was left ([R11](crate::design#r11)).
    pub aborted: u64,
    /// Requests served by a lingering flight, a finished answer ([R17](crate::design#r17)).
    pub lingered: u64,
    /// Detached requests resumed ([R18](crate::design#r18)).
    pub resumed: u64,
    /// Finished flights released before their linger was over, or never lingered, to keep
    /// lingering flights within [`Config::linger_budget`] ([R17](crate::design#r17)).
    pub evicted: u64,
    /// Flights not yet ended.
    pub active_flights: usize,
    /// Requests not yet ended ([R13](crate::design#r13)).
    pub active_requests: usize,
}

/// Why [`Machine::handle_cancel`] (or a drop or finish) changed nothing.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelError {
    /// The id names no live request of this manager: it already ended, was
    /// cancelled or dropped, or belongs to another manager ([R13](crate::design#r13)).
    UnknownRequest,
}

impl fmt::Display for CancelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelError::UnknownRequest => f.write_str("unknown or already ended request"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CancelError {}

/// Why a flight input ([`Machine::handle_prepared`], [`Machine::handle_ended`],
/// [`Machine::handle_truncated`]) changed nothing: the input was refused.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlightError {
    /// The flight has already ended or been aborted (or belongs to another
    /// machine): a late report, recognised and ignored.
    Stale,
    /// The flight was already reported prepared.
    AlreadyPrepared,
}

impl fmt::Display for FlightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlightError::Stale => f.write_str("the flight has already ended"),
            FlightError::AlreadyPrepared => f.write_str("the flight was already prepared"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FlightError {}

#[derive(Clone, Debug)]
struct Flight<K> {
    key: K,
    hash: u64,
    streaming: bool,
    /// Still the key's joinable flight: not replaced ([R3](crate::design#r3) `NewFlight`), not truncated ([R15](crate::design#r15)).
    joinable: bool,
    /// Requests of this flight that have not ended ([R11](crate::design#r11)), detached ones
    /// included ([R18](crate::design#r18)). Requests are numbered by `u32` slots, so this cannot overflow.
    live: u32,
    /// Ended `Done` and lingering ([R17](crate::design#r17)): joinable, reported no more.
    ended: bool,
}

/// How a request leaves its flight.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leave {
    Cancelled,
    Dropped,
    Finished,
}

/// Where a new request for a key goes, told by the key's joinable flight.
#[derive(Clone, Copy)]
enum Lookup {
    /// It joins `flight` as `role`, its cursor at `from` ([R2](crate::design#r2),
    /// [R3](crate::design#r3), [R17](crate::design#r17)).
    Join { flight: FlightId, role: Role, from: Position },
    /// The key's flight streams and the policy is `NewFlight`: a request leads a fresh
    /// flight, and `stale` is no longer joinable ([R3](crate::design#r3)).
    Replace { stale: FlightId },
    /// No joinable flight: a request leads one ([R1](crate::design#r1)).
    Lead,
}

#[derive(Clone, Debug)]
struct Request {
    flight: FlightId,
    role: Role,
    /// Detached ([R18](crate::design#r18)); the end of its window is in `Machine::windows`.
    detached: bool,
}

/// What a deadline is for: a flight's linger ([R17](crate::design#r17)) or a request's resume window ([R18](crate::design#r18)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Linger(FlightId),
    Window(RequestId),
}

/// The control plane of streamflight: a deterministic, sans-IO state machine.
///
/// Feed it inputs with the `handle_*` methods; after each, drain
/// [`poll_action`](Machine::poll_action) and carry the actions out. It never
/// touches a clock, a task or a channel, never sees an item, and never panics
/// on bad input: stale or unknown ids come back as error values.
///
/// ```
/// use streamflight_core::{Action, Config, Machine, Role};
///
/// let mut machine = Machine::new(Config::default());
/// let leader = machine.handle_request("prompt");
/// let follower = machine.handle_request("prompt");
/// assert_eq!((leader.role, follower.role), (Role::Leader, Role::Follower));
///
/// // The run loop: after every input, drain the actions and carry them out.
/// let mut started = Vec::new();
/// while let Some(action) = machine.poll_action() {
///     match action {
///         Action::Start { flight } => started.push(flight), // spawn prepare + upstream
///         Action::Subscribe { .. } => {}                   // give the request a cursor
///         _ => {}
///     }
/// }
/// assert_eq!(started, [leader.flight]);
///
/// // The leader cancels: in company, it alone ends (R10).
/// machine.handle_cancel(leader.id).unwrap();
/// assert_eq!(machine.poll_action(), Some(Action::Cancel { request: leader.id }));
/// assert_eq!(machine.poll_action(), None);
///
/// // The flight finishes; the key is free before anyone reads the end (R7).
/// machine.handle_prepared(leader.flight).unwrap();
/// machine.handle_ended(leader.flight).unwrap();
/// assert_eq!(machine.poll_action(), Some(Action::Close { flight: leader.flight }));
/// assert_eq!(machine.handle_request("prompt").role, Role::Leader);
/// ```
#[derive(Clone)]
pub struct Machine<K> {
    config: Config,
    hasher: DefaultHashBuilder,
    /// Flights not yet ended ([`Stats::active_flights`]).
    active_flights: Slab<Flight<K>>,
    /// The joinable flight of each key, by flight slot; the key itself lives in the flight.
    joinable: HashTable<u32>,
    /// Requests not yet ended ([`Stats::active_requests`]).
    active_requests: Slab<Request>,
    /// Every pending deadline, soonest first; removed as soon as it no longer applies.
    timers: BTreeSet<(Duration, Timer)>,
    /// The end of each detached request's resume window ([R18](crate::design#r18)): detached
    /// requests are few, so they alone pay for it.
    windows: BTreeMap<RequestId, Duration>,
    /// Under a linger budget ([`Config::linger_budget`]), the lingering flights with their
    /// weight in bytes, by the end of their linger and then the order they finished in: the
    /// oldest first, ties included (not by id: slots are reused). Their total is
    /// `lingering_bytes`; `finished` numbers them.
    lingering: BTreeMap<(Duration, u64), (FlightId, u64)>,
    finished: u64,
    /// Wider than a weight: a total may briefly reach twice the budget.
    lingering_bytes: u128,
    actions: VecDeque<Action>,
    stats: Stats,
}

impl<K: fmt::Debug> fmt::Debug for Machine<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Machine")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .field("pending_actions", &self.actions.len())
            .finish_non_exhaustive()
    }
}

impl<K> Machine<K> {
    /// The configuration this machine was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters, exact between inputs.
    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }

    /// Whether the machine holds no flight and no request ([R16](crate::design#r16)).
    pub fn is_idle(&self) -> bool {
        self.active_flights.len() == 0 && self.active_requests.len() == 0 && self.joinable.is_empty()
    }

    /// The role of a live request.
    pub fn role(&self, id: RequestId) -> Option<Role> {
        self.active_requests.get(id.0).map(|r| r.role)
    }

    /// The flight of a live request.
    pub fn flight_of(&self, id: RequestId) -> Option<FlightId> {
        self.active_requests.get(id.0).map(|r| r.flight)
    }

    /// Whether `flight` has not ended yet (a lingering flight has, [R17](crate::design#r17)).
    pub fn is_active(&self, flight: FlightId) -> bool {
        self.running(flight).is_some()
    }

    /// Whether the live request `id` is detached, waiting to be resumed ([R18](crate::design#r18)).
    pub fn is_detached(&self, id: RequestId) -> bool {
        self.active_requests.get(id.0).is_some_and(|r| r.detached)
    }

    /// The next deadline the machine waits for (a linger's end, [R17](crate::design#r17); a resume
    /// window's, [R18](crate::design#r18)), as the caller's monotonic time; `None` if none. Call
    /// [`handle_timeout`](Machine::handle_timeout) once the clock reaches it.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.timers.first().map(|&(deadline, _)| deadline)
    }

    /// A flight that has not ended.
    fn running(&self, flight: FlightId) -> Option<&Flight<K>> {
        self.active_flights.get(flight.0).filter(|f| !f.ended)
    }

    /// The next action to carry out, in order. Drain it to `None` after
    /// every input, before the next one.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // The inputs below never hash or compare a key, so they need no bound on
    // it: a driver reports a flight's progress without knowing its key type.

    /// Preparation of `flight` succeeded: from now on, new requests join it
    /// as joiners ([R3](crate::design#r3), [R4](crate::design#r4)). Its subscribers already hold cursors at item 0.
    pub fn handle_prepared(&mut self, flight: FlightId) -> Result<(), FlightError> {
        let f = self.active_flights.get_mut(flight.0).filter(|f| !f.ended).ok_or(FlightError::Stale)?;
        if f.streaming {
            return Err(FlightError::AlreadyPrepared);
        }
        f.streaming = true;
        Ok(())
    }

    /// `flight` ended: preparation failed or panicked, or the upstream
    /// failed or panicked ([R5](crate::design#r5), [R8](crate::design#r8), [R9](crate::design#r9)); the driver holds how (its
    /// [`End`](crate::End)). The key is freed before the `Close` action
    /// publishes the end; then `Release`. (An upstream that finished is
    /// [`handle_done`](Machine::handle_done), which may linger.)
    pub fn handle_ended(&mut self, flight: FlightId) -> Result<(), FlightError> {
        self.end_flight(flight)?;
        self.actions.push_back(Action::Close { flight });
        self.actions.push_back(Action::Release { flight });
        Ok(())
    }

    /// `flight`'s upstream finished at `now` ([R7](crate::design#r7)): as
    /// [`handle_ended`](Machine::handle_ended), but with a linger ([R17](crate::design#r17)) a
    /// flight still joinable stays so until `now + linger`: `Close` now,
    /// `Release` when the linger is over. `now` is the caller's monotonic
    /// time, as a `Duration` since an epoch of its choosing.
    pub fn handle_done(&mut self, flight: FlightId, now: Duration) -> Result<(), FlightError> {
        self.handle_done_weighed(flight, now, 0)
    }

    /// [`handle_done`](Machine::handle_done) for a flight whose retained items weigh `bytes`
    /// ([`Config::linger_budget`]): if lingering it would take the lingering flights past the
    /// budget, those that started lingering first are released (`Release`, counted in
    /// [`Stats::evicted`]) until it fits; a flight that alone weighs more than the budget
    /// does not linger (and is counted too).
    pub fn handle_done_weighed(
        &mut self,
        flight: FlightId,
        now: Duration,
        bytes: u64,
    ) -> Result<(), FlightError> {
        let linger = self.config.linger_duration();
        let budget = self.config.linger_budget_bytes().map(|b| b as u128);
        let f = self.active_flights.get_mut(flight.0).filter(|f| !f.ended).ok_or(FlightError::Stale)?;
        if linger.is_zero() || !f.joinable {
            return self.handle_ended(flight);
        }
        if budget.is_some_and(|budget| u128::from(bytes) > budget) {
            self.stats.evicted += 1;
            return self.handle_ended(flight);
        }
        f.ended = true;
        self.stats.active_flights -= 1;
        let deadline = now.saturating_add(linger);
        self.timers.insert((deadline, Timer::Linger(flight)));
        self.actions.push_back(Action::Close { flight });
        if let Some(budget) = budget {
            self.lingering.insert((deadline, self.finished), (flight, bytes));
            self.finished += 1;
            self.lingering_bytes += u128::from(bytes);
            while self.lingering_bytes > budget {
                self.evict_oldest();
            }
        }
        Ok(())
    }

    /// Releases the lingering flight that started lingering first, before its linger is over.
    fn evict_oldest(&mut self) {
        let Some(((deadline, _), (flight, bytes))) = self.lingering.pop_first() else { return };
        self.lingering_bytes -= u128::from(bytes);
        self.timers.remove(&(deadline, Timer::Linger(flight)));
        self.stats.evicted += 1;
        self.release_lingering(flight);
    }

    /// A lingering flight is over: its key is freed and its history released.
    fn release_lingering(&mut self, flight: FlightId) {
        self.unjoin(flight);
        self.active_flights.remove(flight.0);
        self.actions.push_back(Action::Release { flight });
    }

    /// A live request's client went away for now ([R18](crate::design#r18)): the request stays
    /// live (it keeps its flight from being orphaned, [R11](crate::design#r11)) until `now +
    /// resume_window`, to be resumed with [`handle_resume`](Machine::handle_resume).
    /// The driver drops its subscription's reader and keeps its history.
    /// With no resume window it is a drop ([R12](crate::design#r12)). A request not live, or
    /// already detached, is refused.
    pub fn handle_detach(&mut self, id: RequestId, now: Duration) -> Result<(), CancelError> {
        let window = self.config.resume_window_duration();
        let request = self.active_requests.get_mut(id.0).filter(|r| !r.detached);
        let request = request.ok_or(CancelError::UnknownRequest)?;
        if window.is_zero() {
            return self.leave(id, Leave::Dropped);
        }
        request.detached = true;
        let deadline = now.saturating_add(window);
        self.windows.insert(id, deadline);
        self.timers.insert((deadline, Timer::Window(id)));
        Ok(())
    }

    /// Resumes a detached request from item `from` ([R18](crate::design#r18)): a `Subscribe` at
    /// [`Position::At`]. Whether `from` is within its history is the driver's
    /// to check first ([`ResumeError::Released`], [`ResumeError::Ahead`]).
    pub fn handle_resume(&mut self, id: RequestId, from: u64) -> Result<(), ResumeError> {
        let request = self.active_requests.get_mut(id.0).ok_or(ResumeError::UnknownRequest)?;
        if !core::mem::replace(&mut request.detached, false) {
            return Err(ResumeError::NotDetached);
        }
        let flight = request.flight;
        self.close_window(id);
        self.stats.resumed += 1;
        self.actions.push_back(Action::Subscribe { request: id, flight, from: Position::At(from) });
        Ok(())
    }

    /// The clock reached `now`: every linger ([R17](crate::design#r17)) and resume window ([R18](crate::design#r18))
    /// over by then ends, in deadline order. An early or repeated call does nothing.
    pub fn handle_timeout(&mut self, now: Duration) {
        while let Some(&(deadline, timer)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Linger(flight) => {
                    let weighed = self.lingering.range((deadline, 0)..=(deadline, u64::MAX));
                    let entry = weighed.filter(|(_, (f, _))| *f == flight).map(|(&key, _)| key).next();
                    if let Some((_, bytes)) = entry.and_then(|key| self.lingering.remove(&key)) {
                        self.lingering_bytes -= u128::from(bytes);
                    }
                    self.release_lingering(flight);
                }
                // The window passed with no resume: a drop (R12).
                Timer::Window(id) => {
                    if self.leave(id, Leave::Dropped).is_ok() {
                        self.actions.push_back(Action::Forget { request: id });
                    }
                }
            }
        }
    }

    /// `flight`'s history released its first item ([R15](crate::design#r15)): under
    /// [`Overflow::NewFlight`] late requests for its key start a new flight from now on (and it
    /// will not linger); under the other policies it stays joinable, and the driver serves late
    /// joiners as the policy says.
    pub fn handle_truncated(&mut self, flight: FlightId) -> Result<(), FlightError> {
        self.running(flight).ok_or(FlightError::Stale)?;
        if self.config.overflow_policy() == Overflow::NewFlight {
            self.unjoin(flight);
        }
        Ok(())
    }

    /// Cancels a live request: it alone ends `Cancelled` ([R10](crate::design#r10)); if it was
    /// the last live request of a running flight, the flight is orphaned ([R11](crate::design#r11)).
    pub fn handle_cancel(&mut self, id: RequestId) -> Result<(), CancelError> {
        self.leave(id, Leave::Cancelled)
    }

    /// A live request's subscription was dropped: a cancellation with nobody
    /// left to tell ([R12](crate::design#r12)), so no `Cancel` action.
    pub fn handle_drop(&mut self, id: RequestId) -> Result<(), CancelError> {
        self.leave(id, Leave::Dropped)
    }

    /// A request's subscription yielded its end: its flight's end, or
    /// `Lagged`. It leaves; a lagged one may leave its flight orphaned ([R15](crate::design#r15), [R11](crate::design#r11)).
    pub fn handle_finished(&mut self, id: RequestId) -> Result<(), CancelError> {
        self.leave(id, Leave::Finished)
    }

    /// Frees the key of `flight` if it is still the key's joinable flight; a
    /// newer flight for the same key is never touched.
    fn unjoin(&mut self, flight: FlightId) {
        let Some(f) = self.active_flights.get_mut(flight.0) else { return };
        if !core::mem::replace(&mut f.joinable, false) {
            return;
        }
        let (hash, slot) = (f.hash, flight.0.slot());
        if let Ok(entry) = self.joinable.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
    }

    fn end_flight(&mut self, flight: FlightId) -> Result<(), FlightError> {
        self.running(flight).ok_or(FlightError::Stale)?;
        self.unjoin(flight);
        self.active_flights.remove(flight.0);
        self.stats.active_flights -= 1;
        Ok(())
    }

    /// Forgets the resume window of `id`, which is no longer detached.
    fn close_window(&mut self, id: RequestId) {
        if let Some(deadline) = self.windows.remove(&id) {
            self.timers.remove(&(deadline, Timer::Window(id)));
        }
    }

    fn leave(&mut self, id: RequestId, how: Leave) -> Result<(), CancelError> {
        let request = self.active_requests.remove(id.0).ok_or(CancelError::UnknownRequest)?;
        self.stats.active_requests -= 1;
        if request.detached {
            self.close_window(id);
        }
        match how {
            Leave::Cancelled => {
                self.stats.cancelled += 1;
                self.actions.push_back(Action::Cancel { request: id });
            }
            Leave::Dropped => self.stats.cancelled += 1,
            Leave::Finished => {}
        }
        let orphaned = match self.active_flights.get_mut(request.flight.0) {
            Some(f) => {
                f.live -= 1;
                f.live == 0 && !f.ended && self.config.orphan_policy() == Orphan::Abort
            }
            None => false,
        };
        if orphaned && self.end_flight(request.flight).is_ok() {
            self.stats.aborted += 1;
            self.actions.push_back(Action::Abort { flight: request.flight });
        }
        Ok(())
    }
}

impl<K: Hash + Eq> Machine<K> {
    /// A machine with no flight and no request.
    pub fn new(config: Config) -> Self {
        let tag = next_tag();
        Machine {
            config,
            hasher: DefaultHashBuilder::default(),
            active_flights: Slab::new(tag),
            joinable: HashTable::new(),
            active_requests: Slab::new(tag),
            timers: BTreeSet::new(),
            windows: BTreeMap::new(),
            lingering: BTreeMap::new(),
            finished: 0,
            lingering_bytes: 0,
            actions: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// A request for `key` arrives: it leads a new flight ([R1](crate::design#r1)), follows a
    /// preparing one ([R2](crate::design#r2)), or joins a streaming one under the late-join
    /// policy ([R3](crate::design#r3)). Emits `Start` when it leads, then its `Subscribe`.
    pub fn handle_request(&mut self, key: K) -> Admission {
        let hash = self.hasher.hash_one(&key);
        let (flight, role, from) = match self.lookup(&key, hash) {
            Lookup::Join { flight, role, from } => (flight, role, from),
            Lookup::Replace { stale } => {
                self.unjoin(stale);
                (self.start(key, hash), Role::Leader, Position::Start)
            }
            Lookup::Lead => (self.start(key, hash), Role::Leader, Position::Start),
        };
        self.admit(flight, role, from)
    }

    /// A request for `key` that only joins: it joins the key's joinable flight exactly as
    /// [`handle_request`](Machine::handle_request) would (a preparing one as a follower,
    /// [R2](crate::design#r2); a streaming one as a joiner under the late-join policy,
    /// [R3](crate::design#r3); a lingering one as a joiner of the whole answer,
    /// [R17](crate::design#r17)), but never leads. With no joinable flight, or a streaming one
    /// under [`LateJoin::NewFlight`] (which would start a fresh flight), it is refused with
    /// `None` and leaves the machine exactly as it was; the key is only hashed and compared,
    /// never kept. Emits its `Subscribe`.
    pub fn handle_join(&mut self, key: &K) -> Option<Admission> {
        let hash = self.hasher.hash_one(key);
        match self.lookup(key, hash) {
            Lookup::Join { flight, role, from } => Some(self.admit(flight, role, from)),
            Lookup::Replace { .. } | Lookup::Lead => None,
        }
    }

    /// Where a request for `key` (hashed to `hash`) goes, from the key's joinable flight
    /// ([R1](crate::design#r1)-[R3](crate::design#r3), [R17](crate::design#r17)). It only
    /// reads, so that a refused join changes nothing.
    fn lookup(&self, key: &K, hash: u64) -> Lookup {
        let flights = &self.active_flights;
        let found =
            self.joinable.find(hash, |&slot| flights.by_slot(slot).is_some_and(|(_, f)| f.key == *key));
        let Some((id, f)) = found.and_then(|&slot| flights.by_slot(slot)) else {
            return Lookup::Lead;
        };
        let flight = FlightId(id);
        let (role, from) = match (f.ended, f.streaming, self.config.late_join_policy()) {
            // Lingering (R17): the whole finished answer, whatever the late-join policy.
            (true, _, _) => (Role::Joiner, Position::Start),
            (false, false, _) => (Role::Follower, Position::Start),
            (false, true, LateJoin::Replay) => (Role::Joiner, Position::Start),
            (false, true, LateJoin::Tail) => (Role::Joiner, Position::Tail),
            (false, true, LateJoin::NewFlight) => return Lookup::Replace { stale: flight },
        };
        Lookup::Join { flight, role, from }
    }

    /// Admits a new request to `flight` as `role`, its cursor at `from`: counted, live in its
    /// flight ([R11](crate::design#r11)), and subscribed.
    fn admit(&mut self, flight: FlightId, role: Role, from: Position) -> Admission {
        self.stats.requests += 1;
        if role != Role::Leader {
            self.stats.joined += 1;
        }
        if let Some(f) = self.active_flights.get_mut(flight.0) {
            f.live += 1;
            // Only a lingering flight is joined after its end (R17).
            if f.ended {
                self.stats.lingered += 1;
            }
        }
        let id = RequestId(self.active_requests.insert(Request { flight, role, detached: false }));
        self.stats.active_requests += 1;
        self.actions.push_back(Action::Subscribe { request: id, flight, from });
        Admission { id, role, flight }
    }

    fn start(&mut self, key: K, hash: u64) -> FlightId {
        self.stats.flights += 1;
        self.stats.active_flights += 1;
        let flight = Flight { key, hash, streaming: false, joinable: true, live: 0, ended: false };
        let id = self.active_flights.insert(flight);
        let flights = &self.active_flights;
        self.joinable
            .insert_unique(hash, id.slot(), |&slot| flights.by_slot(slot).map_or(0, |(_, f)| f.hash));
        let flight = FlightId(id);
        self.actions.push_back(Action::Start { flight });
        flight
    }

    /// A description of the machine's whole state, for the model checks: two
    /// machines in the same state give the same text. Not a stable API.
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn snapshot(&self) -> alloc::string::String
    where
        K: fmt::Debug,
    {
        let flights: alloc::vec::Vec<_> = self.active_flights.iter().collect();
        let requests: alloc::vec::Vec<_> = self.active_requests.iter().collect();
        let (timers, windows) = (&self.timers, &self.windows);
        alloc::format!("{flights:?} {requests:?} {timers:?} {windows:?} {:?} {:?}", self.actions, self.stats)
    }

    /// Checks the machine's internal bookkeeping (live counts, the key index,
    /// the stats), panicking on the first inconsistency. Not a stable API.
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn audit(&self) {
        let mut live = alloc::vec![0u32; self.active_flights.capacity()];
        for (_, r) in self.active_requests.iter() {
            if let Some(f) = self.active_flights.get(r.flight.0) {
                live[r.flight.0.slot() as usize] += 1;
                assert!(f.live > 0);
            }
        }
        let mut joinable = 0;
        for (id, f) in self.active_flights.iter() {
            assert_eq!(f.live, live[id.slot() as usize], "live count of {id:?}");
            assert_eq!(f.hash, self.hasher.hash_one(&f.key));
            let indexed = self.joinable.find(f.hash, |&s| s == id.slot()).is_some();
            assert_eq!(indexed, f.joinable, "index of {id:?}");
            joinable += usize::from(f.joinable);
        }
        assert_eq!(joinable, self.joinable.len(), "the key index names only joinable flights");
        let running = self.active_flights.iter().filter(|(_, f)| !f.ended).count();
        assert_eq!(self.stats.active_flights, running);
        assert_eq!(self.stats.active_requests, self.active_requests.len());
        // One timer per lingering flight and per detached request, nothing else (R16).
        let lingering = self.active_flights.iter().filter(|(_, f)| f.ended).count();
        let detached = self.active_requests.iter().filter(|(_, r)| r.detached).count();
        assert_eq!(self.timers.len(), lingering + detached, "timers");
        assert_eq!(self.windows.len(), detached, "windows");
        // Under a linger budget, every lingering flight is weighed once, and the total is within it.
        if let Some(budget) = self.config.linger_budget_bytes() {
            assert_eq!(self.lingering.len(), lingering, "weighed lingering flights");
            assert!(self.lingering_bytes <= budget as u128, "the linger budget");
        }
        let total: u128 = self.lingering.values().map(|&(_, b)| u128::from(b)).sum();
        assert_eq!(total, self.lingering_bytes, "lingering bytes");
        for (&(deadline, _), &(flight, _)) in &self.lingering {
            assert!(self.timers.contains(&(deadline, Timer::Linger(flight))), "a weighed flight lingers");
        }
        for &(deadline, timer) in &self.timers {
            match timer {
                Timer::Linger(flight) => assert!(self.active_flights.get(flight.0).is_some_and(|f| f.ended)),
                Timer::Window(id) => {
                    assert!(self.active_requests.get(id.0).is_some_and(|r| r.detached));
                    assert_eq!(self.windows.get(&id), Some(&deadline));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn drain(m: &mut Machine<&'static str>) -> Vec<Action> {
        core::iter::from_fn(|| m.poll_action()).collect()
    }

    #[test]
    fn r17_a_done_flight_lingers_then_is_released() {
        let second = Duration::from_secs(1);
        let mut m = Machine::new(Config::default().linger(second));
        let leader = m.handle_request("k");
        m.handle_prepared(leader.flight).unwrap();
        drain(&mut m);
        m.handle_done(leader.flight, Duration::ZERO).unwrap();
        assert_eq!(drain(&mut m), [Action::Close { flight: leader.flight }]);
        assert_eq!(m.poll_timeout(), Some(second));
        // Within the linger: a joiner of the finished answer, from its start, no new flight.
        let late = m.handle_request("k");
        assert_eq!((late.role, late.flight), (Role::Joiner, leader.flight));
        let subscribe = Action::Subscribe { request: late.id, flight: leader.flight, from: Position::Start };
        assert_eq!(drain(&mut m), [subscribe]);
        assert!(!m.is_active(leader.flight), "a lingering flight has ended");
        m.handle_timeout(second - Duration::from_millis(1));
        assert_eq!(drain(&mut m), [], "not yet");
        m.handle_timeout(second);
        assert_eq!(drain(&mut m), [Action::Release { flight: leader.flight }]);
        assert_eq!(m.handle_request("k").role, Role::Leader, "after the linger, a new flight");
        // A failed flight never lingers.
        let failed = m.handle_request("f");
        m.handle_ended(failed.flight).unwrap();
        drain(&mut m);
        assert_eq!(m.handle_request("f").role, Role::Leader);
    }

    #[test]
    fn r18_a_detached_request_keeps_its_flight_until_its_window_passes() {
        let window = Duration::from_secs(10);
        let mut m = Machine::new(Config::default().resume_window(window));
        let alone = m.handle_request("k");
        drain(&mut m);
        m.handle_detach(alone.id, Duration::ZERO).unwrap();
        assert_eq!(drain(&mut m), [], "R11 waits: the detached request is live");
        assert!(m.is_detached(alone.id));
        assert_eq!(m.handle_detach(alone.id, Duration::ZERO), Err(CancelError::UnknownRequest));
        m.handle_resume(alone.id, 3).unwrap();
        let resumed = Action::Subscribe { request: alone.id, flight: alone.flight, from: Position::At(3) };
        assert_eq!(drain(&mut m), [resumed]);
        assert_eq!(m.handle_resume(alone.id, 3), Err(ResumeError::NotDetached), "one subscription at a time");
        assert_eq!(m.poll_timeout(), None, "a resumed request has no deadline");
        // Detached again, never resumed: at the end of its window it is dropped, and
        // being alone it orphans its flight (R12, R11).
        m.handle_detach(alone.id, Duration::from_secs(1)).unwrap();
        m.handle_timeout(Duration::from_secs(11));
        assert_eq!(
            drain(&mut m),
            [Action::Abort { flight: alone.flight }, Action::Forget { request: alone.id }]
        );
        assert_eq!(m.handle_resume(alone.id, 0), Err(ResumeError::UnknownRequest));
        assert!(m.is_idle());
    }

    #[test]
    fn r1_r2_r3_roles_follow_the_flight_phase() {
        let mut m = Machine::new(Config::default());
        let leader = m.handle_request("k");
        let follower = m.handle_request("k");
        m.handle_prepared(leader.flight).unwrap();
        let joiner = m.handle_request("k");
        let other = m.handle_request("other key");
        assert_eq!(
            [leader.role, follower.role, joiner.role, other.role],
            [Role::Leader, Role::Follower, Role::Joiner, Role::Leader]
        );
        assert_eq!((follower.flight, joiner.flight), (leader.flight, leader.flight));
        let stats = m.stats();
        assert_eq!((stats.requests, stats.flights, stats.joined), (4, 2, 2));
    }

    #[test]
    fn r2_r3_r17_a_join_joins_as_a_request_would_and_never_leads() {
        let second = Duration::from_secs(1);
        let mut m = Machine::new(Config::default().linger(second));
        let before = m.snapshot();
        assert_eq!(m.handle_join(&"k"), None, "nothing to join");
        assert_eq!(m.snapshot(), before, "a refused join changes nothing");
        let leader = m.handle_request("k");
        drain(&mut m);
        let follower = m.handle_join(&"k").expect("a preparing flight");
        assert_eq!((follower.role, follower.flight), (Role::Follower, leader.flight));
        let subscribe = |a: Admission, from| Action::Subscribe { request: a.id, flight: a.flight, from };
        assert_eq!(drain(&mut m), [subscribe(follower, Position::Start)], "no Start");
        m.handle_prepared(leader.flight).unwrap();
        let joiner = m.handle_join(&"k").expect("a streaming flight");
        assert_eq!(joiner.role, Role::Joiner);
        assert_eq!(drain(&mut m), [subscribe(joiner, Position::Start)]);
        m.handle_done(leader.flight, Duration::ZERO).unwrap();
        drain(&mut m);
        let late = m.handle_join(&"k").expect("a lingering flight");
        assert_eq!((late.role, late.flight), (Role::Joiner, leader.flight));
        assert_eq!(drain(&mut m), [subscribe(late, Position::Start)]);
        let stats = m.stats();
        assert_eq!((stats.requests, stats.flights, stats.joined, stats.lingered), (4, 1, 3, 1));
        m.handle_timeout(second);
        drain(&mut m);
        let before = m.snapshot();
        assert_eq!(m.handle_join(&"k"), None, "the linger is over");
        assert_eq!(m.snapshot(), before);

        // Tail: from the tail, as a request. NewFlight: a request would lead, so a join is refused.
        let mut m = Machine::new(Config::default().late_join(LateJoin::Tail));
        let leader = m.handle_request("k");
        m.handle_prepared(leader.flight).unwrap();
        drain(&mut m);
        let tail = m.handle_join(&"k").unwrap();
        assert_eq!(drain(&mut m), [subscribe(tail, Position::Tail)]);
        let mut m = Machine::new(Config::default().late_join(LateJoin::NewFlight));
        let leader = m.handle_request("k");
        assert_eq!(m.handle_join(&"k").map(|a| a.role), Some(Role::Follower), "preparing: follows");
        m.handle_prepared(leader.flight).unwrap();
        drain(&mut m);
        let before = m.snapshot();
        assert_eq!(m.handle_join(&"k"), None);
        assert_eq!(m.snapshot(), before, "the streaming flight is still the key's");
        assert_eq!(m.handle_request("k").role, Role::Leader);
    }

    #[test]
    fn r3_tail_and_new_flight_policies() {
        let mut m = Machine::new(Config::default().late_join(LateJoin::Tail));
        let leader = m.handle_request("k");
        m.handle_prepared(leader.flight).unwrap();
        drain(&mut m);
        let joiner = m.handle_request("k");
        assert_eq!(
            drain(&mut m),
            [Action::Subscribe { request: joiner.id, flight: leader.flight, from: Position::Tail }]
        );

        let mut m = Machine::new(Config::default().late_join(LateJoin::NewFlight));
        let first = m.handle_request("k");
        m.handle_prepared(first.flight).unwrap();
        let second = m.handle_request("k");
        assert_eq!(second.role, Role::Leader);
        assert_ne!(second.flight, first.flight);
        // The old flight goes on, and its end frees nothing of the new one.
        m.handle_ended(first.flight).unwrap();
        assert_eq!(m.handle_request("k").flight, second.flight);
    }

    #[test]
    fn r10_a_leader_cancelled_in_company_ends_alone() {
        let mut m = Machine::new(Config::default());
        let leader = m.handle_request("k");
        let follower = m.handle_request("k");
        drain(&mut m);
        m.handle_cancel(leader.id).unwrap();
        assert_eq!(drain(&mut m), [Action::Cancel { request: leader.id }]);
        assert!(m.is_active(leader.flight));
        assert_eq!(m.role(follower.id), Some(Role::Follower));
    }

    #[test]
    fn r11_last_one_out_aborts_and_frees_the_key_first() {
        let mut m = Machine::new(Config::default());
        let alone = m.handle_request("k");
        drain(&mut m);
        m.handle_cancel(alone.id).unwrap();
        let flight = alone.flight;
        assert_eq!(drain(&mut m), [Action::Cancel { request: alone.id }, Action::Abort { flight }]);
        assert_eq!(m.stats().aborted, 1);
        let next = m.handle_request("k");
        assert_eq!(next.role, Role::Leader);
        // A late report from the aborted flight is stale and leaves the new one alone.
        assert_eq!(m.handle_ended(flight), Err(FlightError::Stale));
        assert_eq!(m.handle_prepared(flight), Err(FlightError::Stale));
        assert!(m.is_active(next.flight));
    }

    #[test]
    fn r11_finish_policy_keeps_an_orphan_running_and_joinable() {
        let mut m = Machine::new(Config::default().orphan(Orphan::Finish));
        let alone = m.handle_request("k");
        m.handle_drop(alone.id).unwrap();
        assert!(m.is_active(alone.flight));
        assert_eq!(m.handle_request("k").role, Role::Follower);
    }

    #[test]
    fn r13_bad_cancels_are_errors_and_change_nothing() {
        let mut m = Machine::new(Config::default());
        let mut other = Machine::new(Config::default());
        let foreign = other.handle_request("k");
        let mine = m.handle_request("k");
        assert_eq!(m.handle_cancel(foreign.id), Err(CancelError::UnknownRequest));
        m.handle_cancel(mine.id).unwrap();
        assert_eq!(m.handle_cancel(mine.id), Err(CancelError::UnknownRequest));
        assert_eq!(m.handle_drop(mine.id), Err(CancelError::UnknownRequest));
        assert_eq!(m.stats().cancelled, 1);
    }

    #[test]
    fn r13_a_request_lives_until_it_reads_its_end() {
        let mut m = Machine::new(Config::default());
        let r = m.handle_request("k");
        m.handle_ended(r.flight).unwrap();
        assert_eq!(m.stats().active_requests, 1);
        // Cancelled before reading the end: it ends Cancelled, nothing is aborted.
        m.handle_cancel(r.id).unwrap();
        assert_eq!(m.stats().aborted, 0);
        assert!(m.is_idle());
    }

    #[test]
    fn r15_truncation_sends_late_joins_to_a_new_flight_and_lagging_counts_as_leaving() {
        let mut m = Machine::new(Config::default());
        let leader = m.handle_request("k");
        m.handle_prepared(leader.flight).unwrap();
        m.handle_truncated(leader.flight).unwrap();
        let late = m.handle_request("k");
        assert_eq!(late.role, Role::Leader);
        drain(&mut m);
        // The leader finds itself lagged: its flight is orphaned (R11).
        m.handle_finished(leader.id).unwrap();
        assert_eq!(drain(&mut m), [Action::Abort { flight: leader.flight }]);
        assert_eq!(m.stats().cancelled, 0);
    }

    /// A flight of `key` that streamed and finished `Done` at `now`, weighing `bytes`.
    fn done(m: &mut Machine<&'static str>, key: &'static str, now: Duration, bytes: u64) -> FlightId {
        let leader = m.handle_request(key);
        m.handle_prepared(leader.flight).unwrap();
        drain(m);
        m.handle_done_weighed(leader.flight, now, bytes).unwrap();
        leader.flight
    }

    #[test]
    fn r17_the_linger_budget_evicts_the_oldest_lingering_flights_first() {
        let minute = Duration::from_secs(60);
        let mut m = Machine::new(Config::default().linger(minute).linger_budget(100));
        let a = done(&mut m, "a", Duration::from_secs(1), 40);
        let b = done(&mut m, "b", Duration::from_secs(2), 40);
        assert_eq!(drain(&mut m), [Action::Close { flight: b }]);
        m.audit();
        // 40 + 40 + 30 > 100: the oldest, `a`, goes; `b` and `c` stay joinable.
        let c = done(&mut m, "c", Duration::from_secs(3), 30);
        assert_eq!(drain(&mut m), [Action::Close { flight: c }, Action::Release { flight: a }]);
        assert_eq!(m.stats().evicted, 1);
        m.audit();
        assert_eq!(m.handle_request("a").role, Role::Leader, "an evicted flight is no longer joinable");
        assert_eq!(m.handle_request("b").role, Role::Joiner);
        assert_eq!(m.handle_request("c").role, Role::Joiner);
        drain(&mut m);
        // Heavier than the whole budget: it never lingers, and the others are untouched.
        let heavy = done(&mut m, "heavy", Duration::from_secs(4), 101);
        assert_eq!(drain(&mut m), [Action::Close { flight: heavy }, Action::Release { flight: heavy }]);
        assert_eq!(m.stats().evicted, 2);
        // One that needs every other lingering flight gone takes them oldest first.
        let d = done(&mut m, "d", Duration::from_secs(5), 100);
        let evictions = [Action::Release { flight: b }, Action::Release { flight: c }];
        assert_eq!(drain(&mut m)[1..], evictions);
        assert_eq!(m.stats().evicted, 4);
        m.audit();
        // The survivor's linger still ends on time, and frees its weight.
        m.handle_timeout(Duration::from_secs(5) + minute);
        assert!(drain(&mut m).contains(&Action::Release { flight: d }));
        m.audit();
        let e = done(&mut m, "e", Duration::from_secs(70), 100);
        assert_eq!(drain(&mut m), [Action::Close { flight: e }], "the budget is whole again");
    }

    #[test]
    fn r15_r17_a_truncated_flight_stays_joinable_and_lingers_unless_the_policy_is_new_flight() {
        let minute = Duration::from_secs(60);
        for policy in [Overflow::NewFlight, Overflow::Lagged, Overflow::Truncate] {
            let mut m = Machine::new(Config::default().linger(minute).history_limit(2).overflow(policy));
            let leader = m.handle_request("k");
            m.handle_prepared(leader.flight).unwrap();
            m.handle_truncated(leader.flight).unwrap();
            let late = m.handle_request("k");
            let joins = policy != Overflow::NewFlight;
            assert_eq!(late.role == Role::Joiner, joins, "{policy:?}: a late request while streaming");
            m.handle_finished(late.id).unwrap();
            drain(&mut m);
            m.handle_done(leader.flight, Duration::ZERO).unwrap();
            drain(&mut m);
            let after = m.handle_request("k");
            assert_eq!(after.flight == leader.flight, joins, "{policy:?}: lingers");
            m.audit();
        }
    }

    #[test]
    fn ids_display_and_never_repeat() {
        let mut m = Machine::new(Config::default());
        let a = m.handle_request("k");
        m.handle_drop(a.id).unwrap();
        let b = m.handle_request("k");
        assert_ne!(a.id, b.id);
        assert_ne!(alloc::format!("{}", a.id), alloc::format!("{}", b.id));
    }
}
