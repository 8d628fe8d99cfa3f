//! A small, obviously correct reference model of the control plane, and a harness that drives
//! a [`Machine`] beside it, checking every reply, action and invariant after each step.
//!
//! The proptest model test, the exhaustive enumeration and the fuzz targets all use this one
//! harness. It panics on the first disagreement: it is a test oracle, not an API.

use alloc::vec::Vec;

use crate::{
    Action, CancelError, Config, FlightError, FlightId, LateJoin, Machine, Orphan, Outcome, Position,
    RequestId, Role, Stats,
};

/// One input to the machine, with flights and requests named by the order in
/// which they were started or issued. An index past the end names an id from
/// another machine: a foreign id, which must be refused like a stale one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum Op {
    /// A request for this key arrives.
    Request(u8),
    /// The flight's preparation succeeded.
    Prepared(u8),
    /// The flight ended (preparation failed, upstream finished...).
    Ended(u8, Outcome),
    /// The flight's history released its first item.
    Truncated(u8),
    /// The request is cancelled.
    Cancel(u8),
    /// The request's subscription is dropped.
    Drop(u8),
    /// The request's subscription yields its end: its flight's end once the flight is
    /// closed, or `Lagged` once the flight's history was truncated. Skipped otherwise.
    Finish(u8),
}

impl Op {
    /// Brings an arbitrary op into the model's range: keys to 0..4, indices
    /// to the flights or requests so far plus one foreign id, so that a
    /// fuzzer's bytes rarely go to waste.
    pub fn fit(self, model: &Model) -> Op {
        let flight = |f: u8| (usize::from(f) % (model.flights() + 1)) as u8;
        let request = |r: u8| (usize::from(r) % (model.requests() + 1)) as u8;
        match self {
            Op::Request(key) => Op::Request(key % 4),
            Op::Prepared(f) => Op::Prepared(flight(f)),
            Op::Ended(f, outcome) => Op::Ended(flight(f), outcome),
            Op::Truncated(f) => Op::Truncated(flight(f)),
            Op::Cancel(r) => Op::Cancel(request(r)),
            Op::Drop(r) => Op::Drop(request(r)),
            Op::Finish(r) => Op::Finish(request(r)),
        }
    }
}

/// The fuzz check of the machine: the bytes choose a config and a sequence of
/// ops (via `arbitrary`), and every step is checked against the model. Panics
/// on any disagreement. The fuzz target and the corpus replay test both call it.
pub fn check_machine(data: &[u8]) {
    let mut input = arbitrary::Unstructured::new(data);
    let configs = configs();
    let Ok(choice) = input.choose_index(configs.len()) else { return };
    let mut harness = Harness::new(configs[choice].clone());
    // Bounded, so the model's linear scans stay cheap; an exhausted input
    // would otherwise decode as an endless run of default ops.
    for _ in 0..256 {
        if input.is_empty() {
            break;
        }
        let Ok(op) = input.arbitrary::<Op>() else { break };
        let op = op.fit(harness.model());
        harness.step(op);
    }
}

/// Every config the checks run under: each late-join policy with each orphan policy.
pub fn configs() -> Vec<Config> {
    let mut all = Vec::new();
    for late in [LateJoin::Replay, LateJoin::Tail, LateJoin::NewFlight] {
        for orphan in [Orphan::Abort, Orphan::Finish] {
            all.push(Config::default().late_join(late).orphan(orphan));
        }
    }
    all
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Preparing,
    Streaming,
    Closed(Outcome),
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
}

/// An action with flights and requests named by index, so the model and the machine compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Start(usize),
    Subscribe(usize, usize, Position),
    Cancel(usize),
    Close(usize, Outcome),
    Abort(usize),
    Forget(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    Admitted(Role),
    Flight(Result<(), FlightError>),
    Request(Result<(), CancelError>),
    /// The op cannot happen in this state (nothing to read yet): not fed to the machine.
    Skipped,
}

/// The reference model: plain vectors and linear scans, every rule spelled out.
#[derive(Clone, Debug)]
pub struct Model {
    config: Config,
    flights: Vec<ModelFlight>,
    requests: Vec<ModelRequest>,
    stats: Stats,
}

impl Model {
    /// A model with nothing in flight.
    pub fn new(config: Config) -> Self {
        Model { config, flights: Vec::new(), requests: Vec::new(), stats: Stats::default() }
    }

    /// The config the model runs under.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Applies `op` to the model alone (for proptest's reference state machine).
    pub fn apply(&mut self, op: Op) {
        self.step(op);
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

    fn step(&mut self, op: Op) -> (Reply, Vec<Act>) {
        let mut acts = Vec::new();
        let reply = match op {
            Op::Request(key) => Reply::Admitted(self.request(key, &mut acts)),
            Op::Prepared(f) => Reply::Flight(match self.active_flight(f) {
                None => Err(FlightError::Stale),
                Some(f) if self.flights[f].phase == Phase::Streaming => Err(FlightError::AlreadyPrepared),
                Some(f) => {
                    self.flights[f].phase = Phase::Streaming;
                    Ok(())
                }
            }),
            Op::Ended(f, outcome) => Reply::Flight(match self.active_flight(f) {
                None => Err(FlightError::Stale),
                Some(f) => {
                    self.flights[f].phase = Phase::Closed(outcome);
                    self.flights[f].joinable = false;
                    acts.extend([Act::Close(f, outcome), Act::Forget(f)]);
                    Ok(())
                }
            }),
            Op::Truncated(f) => Reply::Flight(match self.active_flight(f) {
                None => Err(FlightError::Stale),
                Some(f) => {
                    self.flights[f].joinable = false;
                    self.flights[f].truncated = true;
                    Ok(())
                }
            }),
            Op::Cancel(r) | Op::Drop(r) => Reply::Request(match self.live_request(r) {
                None => Err(CancelError::UnknownRequest),
                Some(r) => {
                    self.requests[r].ended = true;
                    self.stats.cancelled += 1;
                    if matches!(op, Op::Cancel(_)) {
                        acts.push(Act::Cancel(r));
                    }
                    self.orphan_check(self.requests[r].flight, &mut acts);
                    Ok(())
                }
            }),
            Op::Finish(r) => match self.live_request(r) {
                None => Reply::Request(Err(CancelError::UnknownRequest)),
                Some(r) => {
                    let f = &self.flights[self.requests[r].flight];
                    let lagged = f.active() && f.truncated;
                    if matches!(f.phase, Phase::Closed(_)) || lagged {
                        self.requests[r].ended = true;
                        self.orphan_check(self.requests[r].flight, &mut acts);
                        Reply::Request(Ok(()))
                    } else {
                        Reply::Skipped
                    }
                }
            },
        };
        (reply, acts)
    }

    fn request(&mut self, key: u8, acts: &mut Vec<Act>) -> Role {
        self.stats.requests += 1;
        let joinable: Vec<usize> = (0..self.flights.len())
            .filter(|&f| self.flights[f].key == key && self.flights[f].joinable)
            .collect();
        assert!(joinable.len() <= 1, "model: two joinable flights for key {key}");
        let joined = match joinable.first() {
            Some(&f) if self.flights[f].phase == Phase::Preparing => {
                Some((f, Role::Follower, Position::Start))
            }
            Some(&f) => match self.config.late_join_policy() {
                LateJoin::Replay => Some((f, Role::Joiner, Position::Start)),
                LateJoin::Tail => Some((f, Role::Joiner, Position::Tail)),
                LateJoin::NewFlight => {
                    self.flights[f].joinable = false;
                    None
                }
            },
            None => None,
        };
        let (flight, role, from) = joined.unwrap_or_else(|| {
            self.flights.push(ModelFlight { key, phase: Phase::Preparing, joinable: true, truncated: false });
            self.stats.flights += 1;
            acts.push(Act::Start(self.flights.len() - 1));
            (self.flights.len() - 1, Role::Leader, Position::Start)
        });
        if role != Role::Leader {
            self.stats.joined += 1;
        }
        self.requests.push(ModelRequest { flight, role, ended: false });
        acts.push(Act::Subscribe(self.requests.len() - 1, flight, from));
        role
    }

    fn orphan_check(&mut self, f: usize, acts: &mut Vec<Act>) {
        if self.flights[f].active() && self.live(f) == 0 && self.config.orphan_policy() == Orphan::Abort {
            self.flights[f].phase = Phase::Aborted;
            self.flights[f].joinable = false;
            self.stats.aborted += 1;
            acts.extend([Act::Abort(f), Act::Forget(f)]);
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

    /// The reference model, to choose the next op from.
    pub fn model(&self) -> &Model {
        &self.model
    }

    fn flight(&self, index: u8) -> FlightId {
        self.flights.get(usize::from(index)).copied().unwrap_or(self.foreign_flight)
    }

    fn request(&self, index: u8) -> RequestId {
        self.requests.get(usize::from(index)).copied().unwrap_or(self.foreign_request)
    }

    /// Applies `op` to both, checks the machine against the model and every
    /// invariant. Returns whether the op changed anything: an op refused with
    /// an error (or skipped) leaves the machine exactly as it was.
    pub fn step(&mut self, op: Op) -> bool {
        let (expected, expected_acts) = self.model.step(op);
        let before = matches!(expected, Reply::Flight(Err(_)) | Reply::Request(Err(_)) | Reply::Skipped)
            .then(|| self.machine.snapshot());
        let reply = match op {
            Op::Request(key) => {
                let admission = self.machine.handle_request(key);
                assert_eq!(self.machine.role(admission.id), Some(admission.role));
                Reply::Admitted(admission.role)
            }
            Op::Prepared(f) => Reply::Flight(self.machine.handle_prepared(self.flight(f))),
            Op::Ended(f, outcome) => Reply::Flight(self.machine.handle_ended(self.flight(f), outcome)),
            Op::Truncated(f) => Reply::Flight(self.machine.handle_truncated(self.flight(f))),
            Op::Cancel(r) => Reply::Request(self.machine.handle_cancel(self.request(r))),
            Op::Drop(r) => Reply::Request(self.machine.handle_drop(self.request(r))),
            Op::Finish(_) if expected == Reply::Skipped => Reply::Skipped,
            Op::Finish(r) => Reply::Request(self.machine.handle_finished(self.request(r))),
        };
        assert_eq!(reply, expected, "reply to {op:?}");
        if let Some(before) = before {
            assert_eq!(self.machine.snapshot(), before, "{op:?} was refused but changed the machine");
            return false;
        }
        let mut acts = Vec::new();
        while let Some(action) = self.machine.poll_action() {
            acts.push(self.translate(action));
        }
        assert_eq!(acts, expected_acts, "actions after {op:?}");
        if let (Op::Drop(r) | Op::Finish(r), Reply::Request(Ok(()))) = (op, reply) {
            self.end(usize::from(r));
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
            Action::Close { flight: id, outcome } => Act::Close(flight(self, id), outcome),
            Action::Abort { flight: id } => {
                let f = flight(self, id);
                // Aborted only when nobody is left and the policy says so (R11).
                assert_eq!(self.model.live(f), 0, "aborted a flight with live requests");
                assert_eq!(self.model.config.orphan_policy(), Orphan::Abort, "aborted under Finish");
                Act::Abort(f)
            }
            Action::Forget { flight: id } => Act::Forget(flight(self, id)),
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
        let quiet = model.requests.iter().all(|r| r.ended);
        if quiet && model.config.orphan_policy() == Orphan::Abort {
            assert!(model.flights.iter().all(|f| !f.active()), "Abort: a flight outlived its last request");
        }
        if quiet && model.flights.iter().all(|f| !f.active()) {
            assert!(self.machine.is_idle(), "R16: state left behind");
        }
    }
}

/// The fuzz check of the history: the bytes choose a bound and a sequence of
/// appends, reads, closes, cancels, subscribes and drops (via `arbitrary`),
/// checked against the `Vec` reference the proptest uses. Panics on any disagreement.
#[cfg(all(feature = "std", not(loom)))]
pub fn check_history(data: &[u8]) {
    let mut input = arbitrary::Unstructured::new(data);
    let limits = [None, Some(1), Some(2), Some(4), Some(7), Some(16)];
    let Ok(limit) = input.choose(&limits).copied() else { return };
    let mut ops = Vec::new();
    while !input.is_empty() && ops.len() < 200 {
        match input.arbitrary() {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    crate::history::check::run(limit, ops);
}
