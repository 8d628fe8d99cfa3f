//! The deterministic fleet simulation: replicas running the fleet's machines per local flight
//! over the store's model, upstreams, clients and a schedule's faults, one event at a time.
//!
//! The simulation plays the shells: it carries actions out, puts every store call under its
//! deadline, and feeds replies, items and time back. Chance comes only from the schedule.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec::Vec;

use super::invariants::{Checker, Client, ClientEnd, Violation, failure, item};
use super::schedule::{Event, LEASE, Rng, Schedule};
use super::store::{Applied, Bugs, Key, Op, Replica, Store, Token};
use crate::fleet::follower::{self, Followed, Follower};
use crate::fleet::leader::{self, Leader, Over};
use crate::fleet::open::{self, Decision, Open};
use crate::fleet::{CallId, Ending, Millis, Reply, Timings};

/// What a finished simulation saw: the coverage figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Events the simulation processed (inputs to machines, store calls, items...).
    pub steps: u64,
    /// Clients.
    pub clients: u64,
    /// Clients that got the whole answer.
    pub done: u64,
    /// Clients that got the upstream's failure.
    pub failed: u64,
    /// Clients the fleet failed (leader lost).
    pub lost: u64,
    /// Upstream requests made.
    pub upstreams: u64,
    /// Local flights served alone.
    pub alone: u64,
    /// Local flights that followed another replica's.
    pub followed: u64,
    /// Followers told to open again (their leader went before anything came).
    pub again: u64,
    /// Times a leader learnt that the store lost part of its stream (a `Gap`, or a renewal
    /// that found a shorter stream) and wrote it again.
    pub rewrites: u64,
    /// Faults in the schedule.
    pub faults: u64,
    /// Clients of a killed replica resumed on another.
    pub resumed: u64,
}

/// The longest a simulation runs past its last event before every client must have ended.
const TAIL: Millis = 40 * LEASE;
/// Steps after which a simulation is taken to be stuck.
const MAX_STEPS: u64 = 400_000;

#[derive(Debug)]
struct ReplicaState {
    alive: bool,
    paused_until: Millis,
    /// Pauses so far, for the deadline check's excuse.
    pauses: Vec<(Millis, Millis)>,
    /// The shell leaves the store alone until then after a failure (R23).
    avoid_until: Millis,
    /// Each key's joinable local flight.
    by_key: BTreeMap<Key, usize>,
    /// Told to stop: it exits then (R26).
    stopping_until: Option<Millis>,
}

#[derive(Debug)]
enum Role {
    Opening(Open),
    Leading(usize),
    /// `since`: when this follower started (R21's clock starts no earlier).
    Following {
        machine: Follower,
        token: Token,
        since: Millis,
    },
    Alone(usize),
    Over,
}

#[derive(Debug)]
struct Local {
    replica: Replica,
    key: Key,
    /// The machine instance now in charge: replies to an earlier one's calls are dropped.
    uid: u64,
    clients: Vec<usize>,
    history: Vec<Vec<u8>>,
    /// All its clients went away.
    gone: bool,
    opened_at: Millis,
    /// The token the last `Acquire` or `Join` reply named (the shell keeps it).
    token: Option<Token>,
    role: Role,
}

#[derive(Debug)]
struct Lead {
    replica: Replica,
    key: Key,
    uid: u64,
    token: Token,
    machine: Leader,
    run: usize,
    over: bool,
}

#[derive(Debug)]
struct Run {
    replica: Replica,
    key: Key,
    /// Items before the end.
    stop: u64,
    /// The end is `Done` (else the upstream fails after `stop` items).
    done: bool,
    produced: u64,
    next_at: Millis,
    ended: bool,
    aborted: bool,
    local: Option<usize>,
    lead: Option<usize>,
    /// The store took its give-up: the fleet no longer counts it as live.
    given_up: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Open(usize, u64),
    Lead(usize, u64),
    Follow(usize, u64),
    Nobody,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreSide {
    Sent(Millis),
    Hung,
    Parked(Millis),
    Done,
}

#[derive(Debug)]
struct Call {
    replica: Replica,
    target: Target,
    id: CallId,
    op: Op,
    block: bool,
    deadline_at: Millis,
    side: StoreSide,
    reply: Option<(Millis, Reply, Option<Token>)>,
    delivered: bool,
}

/// One simulation.
pub struct Sim<'a> {
    schedule: &'a Schedule,
    bugs: Bugs,
    timings: Timings,
    now: Millis,
    rng: Rng,
    store: Store,
    down_until: Millis,
    hung_until: Millis,
    hung: Vec<usize>,
    lose_until: Millis,
    replicas: Vec<ReplicaState>,
    locals: Vec<Local>,
    leads: Vec<Lead>,
    runs: Vec<Run>,
    clients: Vec<Client>,
    client_replica: Vec<(Replica, usize)>,
    calls: Vec<Call>,
    active: Vec<usize>,
    next_event: usize,
    next_uid: u64,
    checker: Checker,
    report: Report,
    /// Each client's flight token when its replica was killed: where it may resume.
    resumable: BTreeMap<usize, Token>,
    /// Leaders lost (killed, or fenced off), with when: their followers must end within two
    /// leases (R21).
    losses: BTreeMap<Token, Millis>,
    /// When the store was not itself (down, hung, losing replies, restarting): R21's clock
    /// does not run through those.
    store_faults: Vec<(Millis, Millis)>,
    /// Every step and what it did, when asked for (to read a failing schedule).
    trace: Option<Vec<alloc::string::String>>,
}

/// The next thing to happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Event,
    HangOver,
    Apply(usize),
    Unpark(usize),
    Deliver(usize),
    Item(usize),
    OpenTimeout(usize),
    LeadTimeout(usize),
    FollowTimeout(usize),
    StopOver(Replica),
}

type Step = Result<(), Violation>;

impl<'a> Sim<'a> {
    /// A simulation of `schedule`, with `bugs` planted.
    pub fn new(schedule: &'a Schedule, bugs: Bugs) -> Sim<'a> {
        let timings = schedule.timings;
        let fault_free = !schedule.has_faults();
        Sim {
            schedule,
            bugs,
            timings,
            now: 0,
            rng: Rng::new(schedule.seed),
            store: Store::new(timings, bugs),
            down_until: 0,
            hung_until: 0,
            hung: Vec::new(),
            lose_until: 0,
            replicas: (0..schedule.replicas)
                .map(|_| ReplicaState {
                    alive: true,
                    paused_until: 0,
                    pauses: Vec::new(),
                    avoid_until: 0,
                    by_key: BTreeMap::new(),
                    stopping_until: None,
                })
                .collect(),
            locals: Vec::new(),
            leads: Vec::new(),
            runs: Vec::new(),
            clients: Vec::new(),
            client_replica: Vec::new(),
            calls: Vec::new(),
            active: Vec::new(),
            next_event: 0,
            next_uid: 0,
            checker: Checker::new(timings, schedule.answers.clone(), fault_free),
            trace: None,
            resumable: BTreeMap::new(),
            losses: BTreeMap::new(),
            store_faults: Vec::new(),
            report: Report {
                faults: schedule.events.iter().filter(|(_, e)| e.is_fault()).count() as u64,
                ..Report::default()
            },
        }
    }

    /// Keeps a trace of every step: [`Sim::trace`] reads it.
    pub fn traced(mut self) -> Self {
        self.trace = Some(Vec::new());
        self
    }

    /// Runs the schedule, and returns the trace with the outcome.
    pub fn trace(self) -> (Vec<alloc::string::String>, Result<Report, Violation>) {
        let mut sim = self.traced();
        let outcome = sim.run_mut();
        (sim.trace.take().unwrap_or_default(), outcome)
    }

    fn note(&mut self, what: impl FnOnce() -> alloc::string::String) {
        if let Some(trace) = &mut self.trace {
            trace.push(format!("{:>6} {}", self.now, what()));
        }
    }

    /// Runs the schedule to its end and past it until every client has its end, checking
    /// every invariant after each step.
    pub fn run(mut self) -> Result<Report, Violation> {
        self.run_mut()
    }

    fn run_mut(&mut self) -> Result<Report, Violation> {
        // Past the last event, and past the end of the last pause it can make.
        let last = self.schedule.events.iter().map(|(at, event)| match event {
            Event::Pause { ms, .. } | Event::Stop { ms, .. } => at + ms,
            _ => *at,
        });
        let cap = last.max().unwrap_or(0) + TAIL;
        while let Some((at, due)) = self.next_due() {
            if at > cap {
                break;
            }
            if at < self.now {
                return self.stuck(format!("{due:?} due at {at}, before now"));
            }
            self.now = at;
            self.report.steps += 1;
            if self.report.steps > MAX_STEPS {
                return self.stuck(format!("over {MAX_STEPS} steps; next {due:?}"));
            }
            self.note(|| format!("{due:?}"));
            self.step(due)?;
            self.check()?;
        }
        self.checker.ended(self.now, &self.clients)?;
        if let Some(lead) = self.leads.iter().find(|l| !l.over && self.replicas[usize::from(l.replica)].alive)
        {
            return self.stuck(format!("key {}: a leader still running at the end", lead.key));
        }
        Ok(self.report)
    }

    fn stuck(&self, detail: alloc::string::String) -> Result<Report, Violation> {
        Err(Violation { invariant: super::invariants::Invariant::Progress, at: self.now, detail })
    }

    /// The state checks, after every step.
    fn check(&mut self) -> Step {
        let log = core::mem::take(&mut self.store.log);
        self.checker.applied(self.now, &log)?;
        // A flight given up in the store is over for the fleet from that moment, though its
        // leader hears so only with the reply.
        for applied in &log {
            if let Applied::Abandoned { token, .. } = applied
                && let Some(lead) = self.leads.iter().find(|lead| lead.token == *token)
            {
                self.runs[lead.run].given_up = true;
            }
        }
        self.store.purge(self.now);
        self.checker.store(self.now, &self.store)?;
        // R21: a follower of a lost leader ends within two leases, unless the store itself
        // failed or its own replica stopped meanwhile.
        for local in &self.locals {
            let Role::Following { token, since, .. } = local.role else { continue };
            let Some(&lost) = self.losses.get(&token) else { continue };
            let from = lost.max(since);
            let overlaps = |&(start, end): &(Millis, Millis)| start <= self.now && end >= from;
            let excused = self.store_faults.iter().any(overlaps)
                || self.replicas[usize::from(local.replica)].pauses.iter().any(overlaps);
            self.checker.leader_loss(self.now, local.key, self.now - from, excused)?;
        }
        Ok(())
    }

    fn uid(&mut self) -> u64 {
        self.next_uid += 1;
        self.next_uid
    }

    /// When `replica` can act on something due at `at`: after its pause.
    fn when(&self, replica: Replica, at: Millis) -> Option<Millis> {
        let state = &self.replicas[usize::from(replica)];
        state.alive.then(|| at.max(state.paused_until))
    }

    fn next_due(&self) -> Option<(Millis, Due)> {
        let mut best: Option<(Millis, Due)> = None;
        let mut consider = |at: Option<Millis>, due: Due| {
            if let Some(at) = at
                && best.is_none_or(|b| (at, due) < b)
            {
                best = Some((at, due));
            }
        };
        consider(self.schedule.events.get(self.next_event).map(|(at, _)| *at), Due::Event);
        if !self.hung.is_empty() {
            consider(Some(self.hung_until), Due::HangOver);
        }
        for &c in &self.active {
            let call = &self.calls[c];
            match call.side {
                StoreSide::Sent(at) => consider(Some(at), Due::Apply(c)),
                StoreSide::Parked(until) => consider(Some(until), Due::Unpark(c)),
                StoreSide::Hung | StoreSide::Done => {}
            }
            if !call.delivered {
                let at = match call.reply {
                    Some((at, ..)) if at <= call.deadline_at => at,
                    _ => call.deadline_at,
                };
                consider(self.when(call.replica, at), Due::Deliver(c));
            }
        }
        for (r, run) in self.runs.iter().enumerate() {
            if !run.ended && !run.aborted {
                consider(self.when(run.replica, run.next_at), Due::Item(r));
            }
        }
        for (l, local) in self.locals.iter().enumerate() {
            let at = match &local.role {
                Role::Opening(open) if !self.bugs.no_open_deadline => {
                    open.poll_timeout().map(|at| (at, Due::OpenTimeout(l)))
                }
                Role::Following { machine, .. } => {
                    machine.poll_timeout().map(|at| (at, Due::FollowTimeout(l)))
                }
                _ => None,
            };
            if let Some((at, due)) = at {
                consider(self.when(local.replica, at), due);
            }
        }
        for (r, state) in self.replicas.iter().enumerate() {
            if let Some(at) = state.stopping_until {
                consider(self.when(r as Replica, at), Due::StopOver(r as Replica));
            }
        }
        for (i, lead) in self.leads.iter().enumerate() {
            if !lead.over
                && let Some(at) = lead.machine.poll_timeout()
            {
                consider(self.when(lead.replica, at), Due::LeadTimeout(i));
            }
        }
        best
    }

    fn step(&mut self, due: Due) -> Step {
        match due {
            Due::Event => {
                let (_, event) = self.schedule.events[self.next_event];
                self.next_event += 1;
                self.event(event)
            }
            Due::HangOver => {
                for c in core::mem::take(&mut self.hung) {
                    self.apply(c);
                }
                Ok(())
            }
            Due::Apply(c) => {
                if self.now < self.down_until {
                    let lat = self.latency();
                    let call = &mut self.calls[c];
                    call.side = StoreSide::Done;
                    call.reply = Some((self.now + lat, Reply::Failed, None));
                } else if self.now < self.hung_until {
                    self.calls[c].side = StoreSide::Hung;
                    self.hung.push(c);
                } else {
                    self.apply(c);
                }
                self.retire(c);
                Ok(())
            }
            Due::Unpark(c) => {
                // The block passed with nothing new.
                let lat = self.latency();
                let call = &mut self.calls[c];
                call.side = StoreSide::Done;
                call.reply = Some((self.now + lat, Reply::Entries(Vec::new()), None));
                self.retire(c);
                Ok(())
            }
            Due::Deliver(c) => self.deliver(c),
            Due::Item(r) => self.produce(r),
            Due::OpenTimeout(l) => {
                if let Role::Opening(open) = &mut self.locals[l].role {
                    open.handle_timeout(self.now);
                }
                self.drain_open(l)
            }
            Due::LeadTimeout(i) => {
                self.leads[i].machine.handle_timeout(self.now);
                self.drain_lead(i)
            }
            Due::StopOver(replica) => {
                // The grace is over: the clients still here get an explicit end, then it exits.
                self.replicas[usize::from(replica)].stopping_until = None;
                for l in 0..self.locals.len() {
                    if self.locals[l].replica == replica && !self.locals[l].clients.is_empty() {
                        self.local_end(l, ClientEnd::Lost(crate::fleet::Lost::Leader))?;
                    }
                }
                self.kill(replica);
                Ok(())
            }
            Due::FollowTimeout(l) => {
                if let Role::Following { machine, .. } = &mut self.locals[l].role {
                    machine.handle_timeout(self.now);
                }
                self.drain_follow(l)
            }
        }
    }

    fn latency(&mut self) -> Millis {
        self.rng.range(1, 4)
    }

    fn event(&mut self, event: Event) -> Step {
        let now = self.now;
        match event {
            Event::Request { replica, key } => {
                let state = &self.replicas[usize::from(replica)];
                if !state.alive || state.paused_until > now || state.stopping_until.is_some() {
                    return Ok(());
                }
                let id = self.clients.len();
                self.clients.push(Client { key, items: 0, end: None, killed: false });
                self.report.clients += 1;
                if let Some(&l) = state.by_key.get(&key) {
                    // A late joiner of the local flight replays its history (R3).
                    self.client_replica.push((replica, l));
                    self.locals[l].clients.push(id);
                    for n in 0..self.locals[l].history.len() {
                        let bytes = self.locals[l].history[n].clone();
                        self.checker.item(now, id, &mut self.clients[id], &bytes)?;
                    }
                    return Ok(());
                }
                let l = self.locals.len();
                self.client_replica.push((replica, l));
                let available = now >= state.avoid_until;
                let uid = self.uid();
                self.locals.push(Local {
                    replica,
                    key,
                    uid,
                    clients: alloc::vec![id],
                    history: Vec::new(),
                    gone: false,
                    opened_at: now,
                    token: None,
                    role: Role::Opening(Open::new(self.timings, now, available)),
                });
                self.replicas[usize::from(replica)].by_key.insert(key, l);
                self.drain_open(l)
            }
            Event::Cancel { client } => {
                if self.clients.is_empty() {
                    return Ok(());
                }
                let id = usize::from(client) % self.clients.len();
                let (replica, l) = self.client_replica[id];
                let state = &self.replicas[usize::from(replica)];
                if self.clients[id].end.is_some() || !state.alive || state.paused_until > now {
                    return Ok(());
                }
                self.checker.end(now, id, &mut self.clients[id], ClientEnd::Cancelled)?;
                self.locals[l].clients.retain(|&c| c != id);
                if self.locals[l].clients.is_empty() {
                    self.local_gone(l)?;
                }
                Ok(())
            }
            Event::Down { ms } => {
                self.store_faults.push((now, now + ms));
                self.down_until = self.down_until.max(now + ms);
                Ok(())
            }
            Event::Hung { ms } => {
                // Calls held through the hang apply after it, up to a deadline later.
                self.store_faults.push((now, now + ms + self.timings.deadline));
                self.hung_until = self.hung_until.max(now + ms);
                Ok(())
            }
            Event::Flush => {
                self.store.flush();
                Ok(())
            }
            Event::Restart { ms } => {
                self.store_faults.push((now, now + ms));
                self.store.flush();
                self.down_until = self.down_until.max(now + ms);
                // Whatever the old process held is gone with it, unanswered.
                for c in core::mem::take(&mut self.hung) {
                    self.calls[c].side = StoreSide::Done;
                    self.retire(c);
                }
                for i in 0..self.active.len() {
                    let c = self.active[i];
                    if let StoreSide::Parked(_) = self.calls[c].side {
                        self.calls[c].side = StoreSide::Done;
                        self.calls[c].reply = Some((now, Reply::Failed, None));
                    }
                }
                Ok(())
            }
            Event::LoseReplies { ms } => {
                self.store_faults.push((now, now + ms));
                self.lose_until = self.lose_until.max(now + ms);
                Ok(())
            }
            Event::Pause { replica, ms } => {
                let state = &mut self.replicas[usize::from(replica)];
                if state.alive {
                    // A stopped process stopped again stays stopped until the later end.
                    state.paused_until = state.paused_until.max(now + ms);
                    state.pauses.push((now, state.paused_until));
                }
                Ok(())
            }
            Event::Stop { replica, ms } => {
                let state = &mut self.replicas[usize::from(replica)];
                if state.alive && state.stopping_until.is_none() {
                    state.stopping_until = Some(now + ms);
                }
                Ok(())
            }
            Event::Kill { replica } => {
                let alive = self.replicas.iter().filter(|r| r.alive).count();
                if alive > 1 && self.replicas[usize::from(replica)].alive {
                    self.kill(replica);
                }
                Ok(())
            }
            Event::ExpireLease { key } => {
                self.store.expire_lease(key);
                Ok(())
            }
            Event::Resume { client, replica } => {
                if self.clients.is_empty() {
                    return Ok(());
                }
                let id = usize::from(client) % self.clients.len();
                let state = &self.replicas[usize::from(replica)];
                if !state.alive || state.paused_until > now || state.stopping_until.is_some() {
                    return Ok(());
                }
                let Some(token) = self.resumable.remove(&id) else { return Ok(()) };
                self.resume(id, replica, token)
            }
        }
    }

    /// A client whose replica was killed resumes on `replica` from the items it had,
    /// following the flight it was on (`Fleet::replay`): its interest first, then a follower
    /// that is a resume (it never opens again: it ends `Lost` if the leader is gone).
    fn resume(&mut self, id: usize, replica: Replica, token: Token) -> Step {
        let now = self.now;
        self.report.resumed += 1;
        let client = &mut self.clients[id];
        client.killed = false;
        let (key, from) = (client.key, client.items);
        let l = self.locals.len();
        // The replica registers its interest before it reads (R22).
        let refresh = crate::fleet::Calls::default().next();
        self.send(replica, Target::Nobody, refresh, Op::Refresh { token, member: (replica, l) }, false);
        self.client_replica[id] = (replica, l);
        let uid = self.uid();
        let machine = Follower::new(self.timings, now, from, true);
        self.locals.push(Local {
            replica,
            key,
            uid,
            clients: alloc::vec![id],
            history: Vec::new(),
            gone: false,
            opened_at: now,
            token: None,
            role: Role::Following { machine, token, since: now },
        });
        self.drain_follow(l)
    }

    fn kill(&mut self, replica: Replica) {
        let state = &mut self.replicas[usize::from(replica)];
        state.alive = false;
        state.by_key.clear();
        state.stopping_until = None;
        for local in self.locals.iter_mut().filter(|l| l.replica == replica) {
            let token = match &local.role {
                Role::Leading(i) => Some(self.leads[*i].token),
                Role::Following { token, .. } => Some(*token),
                _ => None,
            };
            for &c in &local.clients {
                self.clients[c].killed = true;
                if let Some(token) = token {
                    self.resumable.insert(c, token);
                }
            }
            local.clients.clear();
            local.role = Role::Over;
        }
        for lead in self.leads.iter_mut().filter(|l| l.replica == replica) {
            if !lead.over {
                self.losses.insert(lead.token, self.now);
            }
            lead.over = true;
        }
        for run in self.runs.iter_mut().filter(|r| r.replica == replica) {
            run.aborted = true;
        }
    }

    /// Sends a store call for a machine.
    fn send(&mut self, replica: Replica, target: Target, id: CallId, op: Op, block: bool) {
        self.note(|| format!("  r{replica} {target:?} sends {id:?} {op:?}"));
        let apply_at = self.now + self.latency();
        let wait = if block { self.timings.lease / 4 + self.timings.deadline } else { self.timings.deadline };
        let c = self.calls.len();
        self.calls.push(Call {
            replica,
            target,
            id,
            op,
            block,
            deadline_at: self.now + wait,
            side: StoreSide::Sent(apply_at),
            reply: None,
            delivered: false,
        });
        self.active.push(c);
    }

    /// The store runs a call now.
    fn apply(&mut self, c: usize) {
        let (reply, token) = self.store.apply(self.now, &self.calls[c].op);
        self.note(|| format!("  store applies call {c}: {reply:?}"));
        let lat = self.latency();
        let call = &mut self.calls[c];
        if call.block && reply == Reply::Entries(Vec::new()) {
            call.side = StoreSide::Parked(self.now + self.timings.lease / 4);
        } else {
            call.side = StoreSide::Done;
            if self.now >= self.lose_until {
                call.reply = Some((self.now + lat, reply, token));
            }
        }
        self.unpark();
        self.retire(c);
    }

    /// Blocking reads that find entries now are answered.
    fn unpark(&mut self) {
        for i in 0..self.active.len() {
            let c = self.active[i];
            if let (StoreSide::Parked(_), Op::Read { token, after }) = (self.calls[c].side, &self.calls[c].op)
                && self.store.readable(*token, *after)
            {
                let (reply, _) = self.store.apply(self.now, &self.calls[c].op);
                let at = self.now + self.latency();
                let call = &mut self.calls[c];
                call.side = StoreSide::Done;
                call.reply = Some((at, reply, None));
            }
        }
    }

    /// Forgets a call both sides are done with.
    fn retire(&mut self, c: usize) {
        let call = &self.calls[c];
        if call.delivered && call.side == StoreSide::Done {
            self.active.retain(|&a| a != c);
        }
    }

    /// The shell hands a call's reply (or its deadline's `Failed`) to its machine.
    fn deliver(&mut self, c: usize) -> Step {
        let now = self.now;
        let call = &mut self.calls[c];
        call.delivered = true;
        let (reply, token) = match call.reply.take() {
            Some((at, reply, token)) if at <= call.deadline_at => (reply, token),
            _ => (Reply::Failed, None),
        };
        let (replica, target, id) = (call.replica, call.target, call.id);
        self.retire(c);
        self.note(|| format!("  r{replica} {target:?} gets {id:?} {reply:?} {token:?}"));
        if !self.replicas[usize::from(replica)].alive {
            return Ok(());
        }
        // The shell's view of the store (R23): leave it alone a while after a failure.
        let state = &mut self.replicas[usize::from(replica)];
        state.avoid_until = if reply == Reply::Failed { now + LEASE } else { 0 };
        match target {
            Target::Open(l, uid) => {
                let local = &mut self.locals[l];
                if local.uid != uid {
                    return Ok(());
                }
                if token.is_some() {
                    local.token = token;
                }
                if let Role::Opening(open) = &mut local.role {
                    open.handle_reply(now, id, reply);
                }
                self.drain_open(l)
            }
            Target::Lead(i, uid) => {
                let lead = &mut self.leads[i];
                if lead.uid != uid || lead.over {
                    return Ok(());
                }
                let written = lead.machine.written();
                lead.machine.handle_reply(now, id, reply);
                if lead.machine.written() < written {
                    self.report.rewrites += 1;
                }
                self.drain_lead(i)
            }
            Target::Follow(l, uid) => {
                let local = &mut self.locals[l];
                if local.uid != uid {
                    return Ok(());
                }
                if let Role::Following { machine, .. } = &mut local.role {
                    machine.handle_reply(now, id, reply);
                }
                self.drain_follow(l)
            }
            Target::Nobody => Ok(()),
        }
    }

    fn drain_open(&mut self, l: usize) -> Step {
        loop {
            let local = &mut self.locals[l];
            let Role::Opening(open) = &mut local.role else { return Ok(()) };
            let Some(action) = open.poll_action() else { return Ok(()) };
            let (replica, key, uid) = (local.replica, local.key, local.uid);
            match action {
                open::Action::Acquire(id) => {
                    self.send(replica, Target::Open(l, uid), id, Op::Acquire { key }, false)
                }
                open::Action::Join(id) => {
                    self.send(
                        replica,
                        Target::Open(l, uid),
                        id,
                        Op::Join { key, member: (replica, l) },
                        false,
                    );
                }
                open::Action::Decided(decision) => self.decide(l, decision)?,
            }
        }
    }

    fn paused_between(&self, replica: Replica, from: Millis) -> bool {
        self.replicas[usize::from(replica)].pauses.iter().any(|&(_, until)| until > from)
    }

    fn decide(&mut self, l: usize, decision: Decision) -> Step {
        self.note(|| format!("  local {l} decided {decision:?}"));
        let now = self.now;
        let (replica, key, opened_at, gone) = {
            let local = &self.locals[l];
            (local.replica, local.key, local.opened_at, local.gone)
        };
        let paused = self.paused_between(replica, opened_at);
        self.checker.placed(now, key, now - opened_at, paused)?;
        let token = self.locals[l].token.take();
        match (decision, token) {
            (Decision::Lead, Some(token)) => {
                let live = self.live_runs(key);
                self.checker.upstream(now, key, false, live)?;
                let i = self.leads.len();
                let run = self.start_run(replica, key, (!gone).then_some(l), Some(i));
                let uid = self.uid();
                self.leads.push(Lead {
                    replica,
                    key,
                    uid,
                    token,
                    machine: Leader::new(self.timings, now),
                    run,
                    over: false,
                });
                self.locals[l].role = if gone { Role::Over } else { Role::Leading(i) };
                if gone {
                    self.leads[i].machine.handle_local_gone(now);
                }
                self.drain_lead(i)
            }
            (Decision::Follow { .. }, Some(token)) => {
                self.report.followed += 1;
                let uid = self.uid();
                let mut machine = Follower::new(self.timings, now, 0, false);
                if gone {
                    machine.handle_local_gone(now);
                }
                let local = &mut self.locals[l];
                local.uid = uid;
                local.role = Role::Following { machine, token, since: now };
                self.drain_follow(l)
            }
            (Decision::Alone, _) => {
                self.report.alone += 1;
                self.checker.fleet_failed(now, "a flight served alone")?;
                if gone {
                    self.locals[l].role = Role::Over;
                    return Ok(());
                }
                let live = self.live_runs(key);
                self.checker.upstream(now, key, true, live)?;
                let run = self.start_run(replica, key, Some(l), None);
                self.locals[l].role = Role::Alone(run);
                Ok(())
            }
            // Led or followed without a token: the shell could not name the flight.
            (_, None) => Err(Violation {
                invariant: super::invariants::Invariant::Progress,
                at: now,
                detail: format!("key {key}: {decision:?} with no token from the store"),
            }),
        }
    }

    /// Upstream runs of `key` that the fleet counts as live: not ended, not aborted, not
    /// given up in the store.
    fn live_runs(&self, key: Key) -> usize {
        self.runs.iter().filter(|r| r.key == key && !r.ended && !r.aborted && !r.given_up).count()
    }

    fn start_run(&mut self, replica: Replica, key: Key, local: Option<usize>, lead: Option<usize>) -> usize {
        self.report.upstreams += 1;
        let whole = self.schedule.answers[usize::from(key)];
        // One upstream in four fails part way.
        let (stop, done) = if self.schedule.upstream_failures && self.rng.next_u64().is_multiple_of(4) {
            (self.rng.range(0, whole - 1), false)
        } else {
            (whole, true)
        };
        let next_at = self.now + self.rng.range(5, 30);
        self.runs.push(Run {
            replica,
            key,
            stop,
            done,
            produced: 0,
            next_at,
            ended: false,
            aborted: false,
            local,
            lead,
            given_up: false,
        });
        self.runs.len() - 1
    }

    /// The upstream gives its next item, or its end.
    fn produce(&mut self, r: usize) -> Step {
        let now = self.now;
        let interval = self.rng.range(2, 15);
        let run = &mut self.runs[r];
        run.next_at = now + interval;
        let (key, local, lead) = (run.key, run.local, run.lead);
        if run.produced < run.stop {
            run.produced += 1;
            let bytes = item(key, run.produced);
            if let Some(l) = local {
                self.local_item(l, bytes)?;
            }
            if let Some(i) = lead.filter(|&i| !self.leads[i].over) {
                self.leads[i].machine.handle_item(now);
                self.drain_lead(i)?;
            }
        } else {
            run.ended = true;
            let (done, stop) = (run.done, run.stop);
            if let Some(l) = local {
                let end = if done { ClientEnd::Done } else { ClientEnd::Failed(failure(key, stop)) };
                self.local_end(l, end)?;
            }
            if let Some(i) = lead.filter(|&i| !self.leads[i].over) {
                self.leads[i].machine.handle_end(now, done);
                self.drain_lead(i)?;
            }
        }
        Ok(())
    }

    fn drain_lead(&mut self, i: usize) -> Step {
        let now = self.now;
        loop {
            let lead = &mut self.leads[i];
            if lead.over {
                return Ok(());
            }
            let Some(action) = lead.machine.poll_action() else { return Ok(()) };
            let (replica, key, token, target) =
                (lead.replica, lead.key, lead.token, Target::Lead(i, lead.uid));
            let run = &self.runs[lead.run];
            match action {
                leader::Action::Append { call, first, last } => {
                    let items = (first..=last).map(|n| item(key, n)).collect();
                    self.send(replica, target, call, Op::Append { key, token, first, items }, false);
                }
                leader::Action::Finish { call, number, linger } => {
                    let end = if run.done || self.bugs.failure_as_done {
                        Ending::Done
                    } else {
                        Ending::Failed(failure(key, run.stop))
                    };
                    // The planted bug: every end lingers, a failure's too.
                    let linger = if self.bugs.linger_failure {
                        linger.max(self.timings.linger).max(LEASE)
                    } else {
                        linger
                    };
                    self.send(replica, target, call, Op::Finish { key, token, number, end, linger }, false);
                }
                leader::Action::Renew(call) => {
                    self.send(replica, target, call, Op::Renew { key, token }, false)
                }
                leader::Action::Abandon { call, number } => {
                    self.send(replica, target, call, Op::Abandon { key, token, number }, false);
                }
                leader::Action::Over(over) => {
                    let r = lead.run;
                    if let Some(trace) = &mut self.trace {
                        trace.push(format!("{:>6}   lead {i} over {over:?}", now));
                    }
                    lead.over = true;
                    let run = &mut self.runs[r];
                    run.lead = None;
                    match over {
                        Over::Finished => {}
                        Over::Abandoned => {
                            run.given_up = true;
                            run.aborted = true;
                        }
                        Over::Lost => {
                            self.losses.insert(lead.token, now);
                            // The replica's own requests are served on alone.
                            if run.local.is_none() {
                                run.aborted = true;
                            }
                            self.checker.fleet_failed(now, "a leader lost")?;
                        }
                    }
                }
            }
        }
    }

    fn drain_follow(&mut self, l: usize) -> Step {
        let now = self.now;
        loop {
            let local = &mut self.locals[l];
            let Role::Following { machine, token, .. } = &mut local.role else { return Ok(()) };
            let Some(action) = machine.poll_action() else { return Ok(()) };
            let (replica, key, token, target) =
                (local.replica, local.key, *token, Target::Follow(l, local.uid));
            match action {
                follower::Action::Read { call, after, block } => {
                    self.send(replica, target, call, Op::Read { token, after }, block);
                }
                follower::Action::CheckLease(call) => {
                    self.send(replica, target, call, Op::CheckLease { key, token }, false)
                }
                follower::Action::Refresh(call) => {
                    self.send(replica, target, call, Op::Refresh { token, member: (replica, l) }, false)
                }
                follower::Action::Withdraw(call) => self.send(
                    replica,
                    Target::Nobody,
                    call,
                    Op::Withdraw { token, member: (replica, l) },
                    false,
                ),
                follower::Action::Deliver(bytes) => self.local_item(l, bytes)?,
                follower::Action::Over(followed) => {
                    self.note(|| format!("  local {l} followed {followed:?}"));
                    self.locals[l].role = Role::Over;
                    match followed {
                        Followed::Done => self.local_end(l, ClientEnd::Done)?,
                        Followed::Failed(error) => self.local_end(l, ClientEnd::Failed(error))?,
                        Followed::Lost(lost) => self.local_end(l, ClientEnd::Lost(lost))?,
                        Followed::Again => {
                            self.report.again += 1;
                            self.checker.fleet_failed(now, "a follower's leader lost")?;
                            let available = now >= self.replicas[usize::from(replica)].avoid_until;
                            let uid = self.uid();
                            let local = &mut self.locals[l];
                            local.uid = uid;
                            local.opened_at = now;
                            local.role = Role::Opening(Open::new(self.timings, now, available));
                            return self.drain_open(l);
                        }
                        Followed::Alone => {
                            self.report.alone += 1;
                            self.checker.fleet_failed(now, "a follower cut off from the store")?;
                            let live = self.live_runs(key);
                            self.checker.upstream(now, key, true, live)?;
                            let run = self.start_run(replica, key, Some(l), None);
                            self.locals[l].role = Role::Alone(run);
                        }
                        Followed::Gone => {}
                    }
                    return Ok(());
                }
            }
        }
    }

    /// The local flight's next item: to every client on it.
    fn local_item(&mut self, l: usize, bytes: Vec<u8>) -> Step {
        let local = &mut self.locals[l];
        for &c in &local.clients {
            self.checker.item(self.now, c, &mut self.clients[c], &bytes)?;
        }
        local.history.push(bytes);
        Ok(())
    }

    /// The local flight's end: to every client on it; the key is free on this replica.
    fn local_end(&mut self, l: usize, end: ClientEnd) -> Step {
        match end {
            ClientEnd::Done => self.report.done += 1,
            ClientEnd::Failed(_) => self.report.failed += 1,
            ClientEnd::Lost(_) => {
                self.report.lost += 1;
                self.checker.fleet_failed(self.now, "clients lost")?;
            }
            ClientEnd::Cancelled => {}
        }
        let local = &mut self.locals[l];
        let state = &mut self.replicas[usize::from(local.replica)];
        if state.by_key.get(&local.key) == Some(&l) {
            state.by_key.remove(&local.key);
        }
        for c in core::mem::take(&mut local.clients) {
            self.checker.end(self.now, c, &mut self.clients[c], end.clone())?;
        }
        Ok(())
    }

    /// Every client of the local flight went away.
    fn local_gone(&mut self, l: usize) -> Step {
        let now = self.now;
        let local = &mut self.locals[l];
        local.gone = true;
        let state = &mut self.replicas[usize::from(local.replica)];
        if state.by_key.get(&local.key) == Some(&l) {
            state.by_key.remove(&local.key);
        }
        match &mut local.role {
            Role::Opening(_) | Role::Over => Ok(()),
            Role::Leading(i) => {
                let i = *i;
                local.role = Role::Over;
                let lead = &mut self.leads[i];
                self.runs[lead.run].local = None;
                if lead.over {
                    // Lost before: the upstream served this replica alone; nobody is left.
                    self.runs[lead.run].aborted = true;
                    return Ok(());
                }
                lead.machine.handle_local_gone(now);
                self.drain_lead(i)
            }
            Role::Following { machine, .. } => {
                machine.handle_local_gone(now);
                self.drain_follow(l)
            }
            Role::Alone(run) => {
                self.runs[*run].aborted = true;
                local.role = Role::Over;
                Ok(())
            }
        }
    }
}
