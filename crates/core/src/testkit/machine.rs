//! The machine's reference model, and a harness that drives a [`Machine`] beside it, checking
//! every reply, action and invariant after each step; it panics on the first disagreement.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use crate::{
    Action, CancelError, Config, FlightError, FlightId, LateJoin, Machine, Orphan, Overflow, Position,
    RequestId, ResumeError, Role, Stats,
};

/// The linger of the timed configs (R17), in the harness's milliseconds.
const LINGER_MS: u64 = 1_000;
/// The resume window of the timed configs (R18). The harness's clock moves 1 ms
/// per input and a check is at most a few hundred inputs, so a linger and a
/// window never end at the same instant: the order of expiry is unambiguous.
const WINDOW_MS: u64 = 1_500;

/// One input to the machine, with flights and requests named by the order in
/// which they were started or issued. An index past the end names an id from
/// another machine: a foreign id, which must be refused like a stale one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum Input {
    /// A request for this key arrives.
    Request(u8),
    /// The flight's preparation succeeded.
    Prepared(u8),
    /// The flight ended (preparation failed, upstream finished...): how is the
    /// driver's to publish, the machine only frees the key.
    Ended(u8),
    /// The flight's history released its first item.
    Truncated(u8),
    /// The request is cancelled.
    Cancel(u8),
    /// The request's subscription is dropped.
    Drop(u8),
    /// The request's subscription yields its end: its flight's end once the flight is
    /// closed, or `Lagged` once the flight's history was truncated. Skipped otherwise,
    /// and for a detached request (it has no subscription).
    Finish(u8),
    /// The flight's upstream finished (`Done`): it may linger (R17).
    Done(u8),
    /// The request's client went away: detached for the resume window (R18).
    Detach(u8),
    /// The detached request is resumed (from item 0: the machine does not check items).
    Resume(u8),
    /// The clock jumps to the next deadline, and the machine is told (skipped if none).
    Advance,
    /// A join-only request for this key: it joins the key's joinable flight as a request
    /// would, or, where a request would lead, is refused and changes nothing.
    Join(u8),
}

impl Input {
    /// Brings an arbitrary input into the model's range: keys to 0..4, indices
    /// to the flights or requests so far plus one foreign id, so that a
    /// fuzzer's bytes rarely go to waste.
    pub fn fit(self, model: &Model) -> Input {
        let flight = |f: u8| (usize::from(f) % (model.flights() + 1)) as u8;
        let request = |r: u8| (usize::from(r) % (model.requests() + 1)) as u8;
        match self {
            Input::Request(key) => Input::Request(key % 4),
            Input::Prepared(f) => Input::Prepared(flight(f)),
            Input::Ended(f) => Input::Ended(flight(f)),
            Input::Truncated(f) => Input::Truncated(flight(f)),
            Input::Cancel(r) => Input::Cancel(request(r)),
            Input::Drop(r) => Input::Drop(request(r)),
            Input::Finish(r) => Input::Finish(request(r)),
            Input::Done(f) => Input::Done(flight(f)),
            Input::Detach(r) => Input::Detach(request(r)),
            Input::Resume(r) => Input::Resume(request(r)),
            Input::Advance => Input::Advance,
            Input::Join(key) => Input::Join(key % 4),
        }
    }
}

/// The fuzz check of the machine: the bytes choose a config and a sequence of
/// inputs (via `arbitrary`), and every step is checked against the model. Panics
/// on any disagreement. The fuzz target and the corpus replay test both call it.
pub fn check_machine(data: &[u8]) {
    let mut bytes = arbitrary::Unstructured::new(data);
    let configs = configs();
    let Ok(choice) = bytes.choose_index(configs.len()) else { return };
    let mut harness = Harness::new(configs[choice].clone());
    // Bounded, so the model's linear scans stay cheap; an exhausted input
    // would otherwise decode as an endless run of default inputs.
    for _ in 0..256 {
        if bytes.is_empty() {
            break;
        }
        let Ok(input) = bytes.arbitrary::<Input>() else { break };
        let input = input.fit(harness.model());
        harness.step(input);
    }
}

/// Every config the checks run under: each late-join policy with each orphan
/// policy, without time and with a linger and a resume window (R17, R18), and one whose
/// truncated flights stay joinable (`Overflow::Lagged`, R15).
pub fn configs() -> Vec<Config> {
    let mut all = Vec::new();
    for timed in [false, true] {
        for late in [LateJoin::Replay, LateJoin::Tail, LateJoin::NewFlight] {
            for orphan in [Orphan::Abort, Orphan::Finish] {
                let config = Config::default().late_join(late).orphan(orphan);
                all.push(match timed {
                    false => config,
                    true => config
                        .linger(Duration::from_millis(LINGER_MS))
                        .resume_window(Duration::from_millis(WINDOW_MS)),
                });
            }
        }
    }
    // A truncated flight that stays joinable and lingers (R15, R17); the machine does not tell
    // `Lagged` from `Truncate` (the driver does).
    let timed = Config::default().linger(Duration::from_millis(LINGER_MS));
    all.push(timed.resume_window(Duration::from_millis(WINDOW_MS)).overflow(Overflow::Lagged));
    all
}

/// Whether `config` has a linger or a resume window: the inputs of time do
/// something of their own only then.
pub fn timed(config: &Config) -> bool {
    !config.linger_duration().is_zero() || !config.resume_window_duration().is_zero()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Preparing,
    Streaming,
    /// Ended `Done`, joinable until the deadline (R17).
    Lingering(u64),
    Closed,
    Aborted,
}

#[derive(Clone, Debug)]
struct ModelFlight {
    key: u8,
    phase: Phase,
    joinable: bool,
    truncated: bool,
}

impl ModelFlight {
    fn active(&self) -> bool {
        matches!(self.phase, Phase::Preparing | Phase::Streaming)
    }
}

#[derive(Clone, Debug)]
struct ModelRequest {
    flight: usize,
    role: Role,
    ended: bool,
    /// Detached until this deadline (R18).
    detached: Option<u64>,
}

/// Where a request for a key goes, in the model.
enum Found {
    /// It joins this flight as this role, from there.
    Join(usize, Role, Position),
    /// This flight streams under `NewFlight`: a request leads a fresh one instead (R3).
    Replace(usize),
    /// No joinable flight: a request leads one (R1).
    Nothing,
}

/// An action with flights and requests named by index, so the model and the machine compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Start(usize),
    Subscribe(usize, usize, Position),
    Cancel(usize),
    Close(usize),
    Forget(usize),
    Release(usize),
    Abort(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    Admitted(Role),
    /// A join's role, or `None`: refused, nothing to join.
    Joined(Option<Role>),
    Flight(Result<(), FlightError>),
    Request(Result<(), CancelError>),
    Resume(Result<(), ResumeError>),
    /// The clock moved to a deadline.
    Timeout,
    /// The input cannot happen in this state (nothing to read yet): not fed to the machine.
    Skipped,
}

/// The reference model: plain vectors and linear scans, every rule spelled out.
#[derive(Clone, Debug)]
pub struct Model {
    config: Config,
    flights: Vec<ModelFlight>,
    requests: Vec<ModelRequest>,
    stats: Stats,
    /// The clock, in milliseconds: one per input, or a jump to a deadline.
    now: u64,
}

impl Model {
    /// A model with nothing in flight.
    pub fn new(config: Config) -> Self {
        Model { config, flights: Vec::new(), requests: Vec::new(), stats: Stats::default(), now: 0 }
    }

    /// The config the model runs under.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Applies `input` to the model alone (for proptest's reference state machine).
    pub fn apply(&mut self, input: Input) {
        self.step(input);
    }

    /// Flights started so far.
    pub fn flights(&self) -> usize {
        self.flights.len()
    }

    /// Requests issued so far.
    pub fn requests(&self) -> usize {
        self.requests.len()
    }

    fn live(&self, flight: usize) -> usize {
        self.requests.iter().filter(|r| r.flight == flight && !r.ended).count()
    }

    fn stats(&self) -> Stats {
        let mut stats = self.stats.clone();
        stats.active_flights = self.flights.iter().filter(|f| f.active()).count();
        stats.active_requests = self.requests.iter().filter(|r| !r.ended).count();
        stats
    }

    fn active_flight(&self, index: u8) -> Option<usize> {
        let index = usize::from(index);
        self.flights.get(index).filter(|f| f.active()).map(|_| index)
    }

    fn live_request(&self, index: u8) -> Option<usize> {
        let index = usize::from(index);
        self.requests.get(index).filter(|r| !r.ended).map(|_| index)
    }

    /// The clock, as the machine is told it.
    fn now(&self) -> Duration {
        Duration::from_millis(self.now)
    }

    /// The soonest deadline: a linger's end or a detached request's window's.
    fn next_deadline(&self) -> Option<u64> {
        let lingers = self.flights.iter().filter_map(|f| match f.phase {
            Phase::Lingering(until) => Some(until),
            _ => None,
        });
        let windows = self.requests.iter().filter(|r| !r.ended).filter_map(|r| r.detached);
        lingers.chain(windows).min()
    }

    fn millis(duration: Duration) -> u64 {
        duration.as_millis() as u64
    }

    fn step(&mut self, input: Input) -> (Reply, Vec<Act>) {
        let mut acts = Vec::new();
        if input != Input::Advance {
            self.now += 1;
        }
        let reply = match input {
            Input::Request(key) => Reply::Admitted(self.request(key, &mut acts)),
            Input::Join(key) => Reply::Joined(self.join(key, &mut acts)),
            Input::Prepared(f) => Reply::Flight(match self.active_flight(f) {
                None => Err(FlightError::Stale),
                Some(f) if self.flights[f].phase == Phase::Streaming => Err(FlightError::AlreadyPrepared),
                Some(f) => {
                    self.flights[f].phase = Phase::Streaming;
                    Ok(())
                }
            }),
            Input::Ended(f) | Input::Done(f) => Reply::Flight(match self.active_flight(f) {
                None => Err(FlightError::Stale),
                Some(f) => {
                    let linger = Self::millis(self.config.linger_duration());
                    acts.push(Act::Close(f));
                    if matches!(input, Input::Done(_)) && linger > 0 && self.flights[f].joinable {
                        // R17: joinable, reported no more, until the linger is over.
                        self.flights[f].phase = Phase::Lingering(self.now + linger);
                    } else {
                        self.flights[f].phase = Phase::Closed;
                        self.flights[f].joinable = false;
                        acts.push(Act::Release(f));
                    }
                    Ok(())
                }
            }),
            Input::Truncated(f) => Reply::Flight(match self.active_flight(f) {
                None => Err(FlightError::Stale),
                Some(f) => {
                    // R15: under the other overflow policies a truncated flight stays joinable
                    // (and lingers); the driver serves its late joiners.
                    if self.config.overflow_policy() == Overflow::NewFlight {
                        self.flights[f].joinable = false;
                    }
                    self.flights[f].truncated = true;
                    Ok(())
                }
            }),
            Input::Cancel(r) | Input::Drop(r) => Reply::Request(match self.live_request(r) {
                None => Err(CancelError::UnknownRequest),
                Some(r) => {
                    self.leave(r, matches!(input, Input::Cancel(_)), &mut acts);
                    Ok(())
                }
            }),
            Input::Finish(r) => match self.live_request(r) {
                None => Reply::Request(Err(CancelError::UnknownRequest)),
                Some(r) if self.requests[r].detached.is_some() => Reply::Skipped,
                Some(r) => {
                    let f = &self.flights[self.requests[r].flight];
                    let lagged = f.active() && f.truncated;
                    if matches!(f.phase, Phase::Closed | Phase::Lingering(_)) || lagged {
                        self.requests[r].ended = true;
                        self.orphan_check(self.requests[r].flight, &mut acts);
                        Reply::Request(Ok(()))
                    } else {
                        Reply::Skipped
                    }
                }
            },
            Input::Detach(r) => Reply::Request(match self.live_request(r) {
                Some(r) if self.requests[r].detached.is_none() => {
                    let window = Self::millis(self.config.resume_window_duration());
                    if window == 0 {
                        // No resume window: a drop (R12).
                        self.leave(r, false, &mut acts);
                    } else {
                        self.requests[r].detached = Some(self.now + window);
                    }
                    Ok(())
                }
                _ => Err(CancelError::UnknownRequest),
            }),
            Input::Resume(r) => Reply::Resume(match self.live_request(r) {
                None => Err(ResumeError::UnknownRequest),
                Some(r) if self.requests[r].detached.is_none() => Err(ResumeError::NotDetached),
                Some(r) => {
                    self.requests[r].detached = None;
                    self.stats.resumed += 1;
                    acts.push(Act::Subscribe(r, self.requests[r].flight, Position::At(0)));
                    Ok(())
                }
            }),
            Input::Advance => match self.next_deadline() {
                None => Reply::Skipped,
                Some(deadline) => {
                    self.now = self.now.max(deadline);
                    while let Some(due) = self.next_deadline().filter(|&d| d <= self.now) {
                        self.expire(due, &mut acts);
                    }
                    Reply::Timeout
                }
            },
        };
        (reply, acts)
    }

    /// The deadline `due` is over: a flight's linger (it is released) or a
    /// detached request's window (it is dropped, R12).
    fn expire(&mut self, due: u64, acts: &mut Vec<Act>) {
        if let Some(f) = self.flights.iter().position(|f| f.phase == Phase::Lingering(due)) {
            self.flights[f].phase = Phase::Closed;
            self.flights[f].joinable = false;
            acts.push(Act::Release(f));
        } else if let Some(r) = self.requests.iter().position(|r| !r.ended && r.detached == Some(due)) {
            self.leave(r, false, acts);
            acts.push(Act::Forget(r));
        }
    }

    /// The live request `r` leaves, cancelled (told: `Cancel`) or dropped.
    fn leave(&mut self, r: usize, told: bool, acts: &mut Vec<Act>) {
        self.requests[r].ended = true;
        self.requests[r].detached = None;
        self.stats.cancelled += 1;
        if told {
            acts.push(Act::Cancel(r));
        }
        self.orphan_check(self.requests[r].flight, acts);
    }

    /// Where a request for `key` goes, from the key's joinable flight (R1-R3, R17).
    fn find(&self, key: u8) -> Found {
        let joinable: Vec<usize> = (0..self.flights.len())
            .filter(|&f| self.flights[f].key == key && self.flights[f].joinable)
            .collect();
        assert!(joinable.len() <= 1, "model: two joinable flights for key {key}");
        let Some(&f) = joinable.first() else { return Found::Nothing };
        match self.flights[f].phase {
            // Lingering (R17): the whole finished answer, whatever the late-join policy.
            Phase::Lingering(_) => Found::Join(f, Role::Joiner, Position::Start),
            Phase::Preparing => Found::Join(f, Role::Follower, Position::Start),
            _ => match self.config.late_join_policy() {
                LateJoin::Replay => Found::Join(f, Role::Joiner, Position::Start),
                LateJoin::Tail => Found::Join(f, Role::Joiner, Position::Tail),
                LateJoin::NewFlight => Found::Replace(f),
            },
        }
    }

    fn request(&mut self, key: u8, acts: &mut Vec<Act>) -> Role {
        match self.find(key) {
            Found::Join(f, role, from) => return self.admit(f, role, from, acts),
            // NewFlight (R3): the streaming flight goes on, no longer joinable.
            Found::Replace(f) => self.flights[f].joinable = false,
            Found::Nothing => {}
        }
        self.flights.push(ModelFlight { key, phase: Phase::Preparing, joinable: true, truncated: false });
        self.stats.flights += 1;
        let f = self.flights.len() - 1;
        acts.push(Act::Start(f));
        self.admit(f, Role::Leader, Position::Start, acts)
    }

    /// A join-only request: as a request where it joins, refused (`None`, nothing changes)
    /// where a request would lead.
    fn join(&mut self, key: u8, acts: &mut Vec<Act>) -> Option<Role> {
        match self.find(key) {
            Found::Join(f, role, from) => Some(self.admit(f, role, from, acts)),
            Found::Replace(_) | Found::Nothing => None,
        }
    }

    /// A new request in flight `f` as `role`, reading from `from`.
    fn admit(&mut self, f: usize, role: Role, from: Position, acts: &mut Vec<Act>) -> Role {
        self.stats.requests += 1;
        if role != Role::Leader {
            self.stats.joined += 1;
        }
        if matches!(self.flights[f].phase, Phase::Lingering(_)) {
            self.stats.lingered += 1;
        }
        self.requests.push(ModelRequest { flight: f, role, ended: false, detached: None });
        acts.push(Act::Subscribe(self.requests.len() - 1, f, from));
        role
    }

    fn orphan_check(&mut self, f: usize, acts: &mut Vec<Act>) {
        if self.flights[f].active() && self.live(f) == 0 && self.config.orphan_policy() == Orphan::Abort {
            self.flights[f].phase = Phase::Aborted;
            self.flights[f].joinable = false;
            self.stats.aborted += 1;
            acts.push(Act::Abort(f));
        }
    }
}

/// Drives a [`Machine`] and the [`Model`] side by side.
#[derive(Clone)]
pub struct Harness {
    model: Model,
    machine: Machine<u8>,
    flights: Vec<FlightId>,
    requests: Vec<RequestId>,
    /// Requests that are over: their end was told (`Cancel`, `Finish`) or nobody is left (`Drop`).
    over: Vec<bool>,
    foreign_flight: FlightId,
    foreign_request: RequestId,
}

impl Harness {
    /// A fresh machine and model under `config`.
    pub fn new(config: Config) -> Self {
        let mut other = Machine::new(config.clone());
        let foreign = other.handle_request(0);
        Harness {
            model: Model::new(config.clone()),
            machine: Machine::new(config),
            flights: Vec::new(),
            requests: Vec::new(),
            over: Vec::new(),
            foreign_flight: foreign.flight,
            foreign_request: foreign.id,
        }
    }

    /// The reference model, to choose the next input from.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The whole state, machine and model, as text: two harnesses in the same state give
    /// the same text (the exhaustive check compares a join's with a request's).
    pub fn snapshot(&self) -> String {
        let (flights, requests, over) = (&self.flights, &self.requests, &self.over);
        format!("{} {:?} {flights:?} {requests:?} {over:?}", self.machine.snapshot(), self.model)
    }

    fn flight(&self, index: u8) -> FlightId {
        self.flights.get(usize::from(index)).copied().unwrap_or(self.foreign_flight)
    }

    fn request(&self, index: u8) -> RequestId {
        self.requests.get(usize::from(index)).copied().unwrap_or(self.foreign_request)
    }

    /// Applies `input` to both, checks the machine against the model and every
    /// invariant. Returns whether the input changed anything: an input refused with
    /// an error (or skipped) leaves the machine exactly as it was.
    pub fn step(&mut self, input: Input) -> bool {
        let ended_before: Vec<bool> = self.model.requests.iter().map(|r| r.ended).collect();
        let (expected, expected_acts) = self.model.step(input);
        let refused = matches!(
            expected,
            Reply::Joined(None)
                | Reply::Flight(Err(_))
                | Reply::Request(Err(_))
                | Reply::Resume(Err(_))
                | Reply::Skipped
        );
        let before = refused.then(|| self.machine.snapshot());
        let now = self.model.now();
        let reply = match input {
            Input::Request(key) => {
                let admission = self.machine.handle_request(key);
                assert_eq!(self.machine.role(admission.id), Some(admission.role));
                Reply::Admitted(admission.role)
            }
            Input::Join(key) => {
                let admission = self.machine.handle_join(&key);
                if let Some(admission) = admission {
                    assert_eq!(self.machine.role(admission.id), Some(admission.role));
                }
                Reply::Joined(admission.map(|admission| admission.role))
            }
            Input::Prepared(f) => Reply::Flight(self.machine.handle_prepared(self.flight(f))),
            Input::Ended(f) => Reply::Flight(self.machine.handle_ended(self.flight(f))),
            Input::Truncated(f) => Reply::Flight(self.machine.handle_truncated(self.flight(f))),
            Input::Cancel(r) => Reply::Request(self.machine.handle_cancel(self.request(r))),
            Input::Drop(r) => Reply::Request(self.machine.handle_drop(self.request(r))),
            Input::Finish(_) if expected == Reply::Skipped => Reply::Skipped,
            Input::Finish(r) => Reply::Request(self.machine.handle_finished(self.request(r))),
            Input::Done(f) => Reply::Flight(self.machine.handle_done(self.flight(f), now)),
            Input::Detach(r) => Reply::Request(self.machine.handle_detach(self.request(r), now)),
            Input::Resume(r) => Reply::Resume(self.machine.handle_resume(self.request(r), 0)),
            Input::Advance if expected == Reply::Skipped => {
                assert_eq!(self.machine.poll_timeout(), None, "a deadline the model does not have");
                Reply::Skipped
            }
            Input::Advance => {
                self.machine.handle_timeout(now);
                Reply::Timeout
            }
        };
        assert_eq!(reply, expected, "reply to {input:?}");
        if let Some(before) = before {
            assert_eq!(self.machine.snapshot(), before, "{input:?} was refused but changed the machine");
            return false;
        }
        let mut acts = Vec::new();
        while let Some(action) = self.machine.poll_action() {
            acts.push(self.translate(action));
        }
        assert_eq!(acts, expected_acts, "actions after {input:?}");
        if let (Input::Drop(r) | Input::Finish(r), Reply::Request(Ok(()))) = (input, reply) {
            self.end(usize::from(r));
        }
        // A detach without a window, or a window that passed: dropped, nobody to tell (R12).
        if matches!(input, Input::Detach(_) | Input::Advance) {
            let dropped: Vec<usize> = (0..ended_before.len())
                .filter(|&r| !ended_before[r] && self.model.requests[r].ended)
                .collect();
            dropped.into_iter().for_each(|r| self.end(r));
        }
        self.check();
        true
    }

    fn translate(&mut self, action: Action) -> Act {
        let flight = |h: &Self, id: FlightId| {
            h.flights.iter().position(|&f| f == id).expect("unknown flight in an action")
        };
        let request = |h: &Self, id: RequestId| {
            h.requests.iter().position(|&r| r == id).expect("unknown request in an action")
        };
        match action {
            Action::Start { flight: id } => {
                assert!(!self.flights.contains(&id), "a flight id was reused");
                self.flights.push(id);
                Act::Start(self.flights.len() - 1)
            }
            Action::Subscribe { request: id, flight: f, from: Position::At(from) } => {
                // A resume (R18): a request already known.
                Act::Subscribe(request(self, id), flight(self, f), Position::At(from))
            }
            Action::Subscribe { request: id, flight: f, from } => {
                assert!(!self.requests.contains(&id), "a request id was reused");
                self.requests.push(id);
                self.over.push(false);
                Act::Subscribe(self.requests.len() - 1, flight(self, f), from)
            }
            Action::Cancel { request: id } => {
                let r = request(self, id);
                self.end(r);
                Act::Cancel(r)
            }
            Action::Close { flight: id } => Act::Close(flight(self, id)),
            Action::Release { flight: id } => Act::Release(flight(self, id)),
            Action::Forget { request: id } => Act::Forget(request(self, id)),
            Action::Abort { flight: id } => {
                let f = flight(self, id);
                // Aborted only when nobody is left and the policy says so (R11).
                assert_eq!(self.model.live(f), 0, "aborted a flight with live requests");
                assert_eq!(self.model.config.orphan_policy(), Orphan::Abort, "aborted under Finish");
                Act::Abort(f)
            }
        }
    }

    /// Exactly one end per request, nothing after it (R14).
    fn end(&mut self, r: usize) {
        assert!(!core::mem::replace(&mut self.over[r], true), "request {r} ended twice");
    }

    /// The invariants, checked after every step.
    pub fn check(&self) {
        self.machine.audit();
        let model = &self.model;
        assert_eq!(self.machine.stats(), model.stats(), "stats");
        for flight in &model.flights {
            let key = flight.key;
            let joinable = model.flights.iter().filter(|f| f.key == key && f.joinable && f.active()).count();
            assert!(joinable <= 1, "two joinable flights for key {key}");
        }
        for (r, (&id, m)) in self.requests.iter().zip(&model.requests).enumerate() {
            assert_eq!(self.over[r], m.ended, "request {r} over");
            assert_eq!(
                self.machine.is_detached(id),
                !m.ended && m.detached.is_some(),
                "request {r} detached"
            );
            assert_eq!(self.machine.role(id), (!m.ended).then_some(m.role), "role of request {r}");
            let flight = self.machine.flight_of(id);
            assert_eq!(flight, (!m.ended).then_some(self.flights[m.flight]), "flight of request {r}");
            if !m.ended {
                assert!(
                    model.flights[m.flight].phase != Phase::Aborted,
                    "a live request in an aborted flight"
                );
            }
        }
        for (f, (&id, m)) in self.flights.iter().zip(&model.flights).enumerate() {
            assert_eq!(self.machine.is_active(id), m.active(), "flight {f} active");
        }
        let deadline = model.next_deadline().map(Duration::from_millis);
        assert_eq!(self.machine.poll_timeout(), deadline, "the next deadline");
        let quiet = model.requests.iter().all(|r| r.ended);
        if quiet && model.config.orphan_policy() == Orphan::Abort {
            assert!(model.flights.iter().all(|f| !f.active()), "Abort: a flight outlived its last request");
        }
        let lingering = model.flights.iter().any(|f| matches!(f.phase, Phase::Lingering(_)));
        if quiet && !lingering && model.flights.iter().all(|f| !f.active()) {
            assert!(self.machine.is_idle(), "R16: state left behind");
        }
    }
}
