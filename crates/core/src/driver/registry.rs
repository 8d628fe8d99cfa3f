//! The manager's one lock: the machine and what the driver keeps per flight and per request.
//! Every input goes the same way: fed to the machine under the lock, its actions drained into
//! [`Effects`], the lock released, the effects run.

use alloc::collections::BTreeMap;
use core::time::Duration;

use smallvec::SmallVec;

use super::abort::AbortSignal;
use super::slots::Slots;
use super::{BuildError, Runtime};
use crate::history::{Canceller, History, Reader};
use crate::sync::{Arc, Mutex, MutexGuard, lock};
use crate::{
    Action, Admission, CancelError, Config, FlightId, FlightSummary, Machine, Observer, Outcome, Overflow,
    Position, RequestEvent, RequestId, ResumeError,
};

/// What a manager and its flights' tasks and subscriptions share: the
/// registry behind its lock, and the runtime the flights run on.
pub(super) struct Shared<K, T, E, R> {
    registry: Mutex<Registry<K, T, E>>,
    pub(super) runtime: R,
    /// The config's observer, if any, read without the lock: every hook is called once the
    /// lock is released, and only a branch on this `Option` is paid without one.
    observer: Option<alloc::sync::Arc<dyn Observer>>,
    /// The manager's clock: the machine's time is the time since this instant.
    epoch: std::time::Instant,
    /// The manager itself, for its timer task to reach it (and not keep it alive).
    #[cfg(not(all(test, loom)))]
    me: std::sync::Weak<Self>,
    /// Spawns the timer task for a deadline: chosen where the runtime's
    /// bounds are known, so that no input needs them.
    arm: fn(&Self, Duration),
}

/// Everything behind the manager's lock.
pub(super) struct Registry<K, T, E> {
    machine: Machine<K>,
    /// What the driver holds for each flight the machine has not released,
    /// by slot: exactly the flights the machine holds active.
    handles: Slots<FlightHandles<T, E>>,
    /// How to end each live request alone ([R10](crate::design#r10)), by slot:
    /// exactly the requests the machine holds live and not detached.
    cancellers: Slots<Canceller>,
    /// The history each detached request resumes from ([R18](crate::design#r18)): they are few,
    /// so they alone pay for it.
    detached: BTreeMap<RequestId, Arc<History<T, E>>>,
    /// The deadline the manager's one timer task sleeps until, if one does.
    armed: Option<Duration>,
    /// An observer is set: the actions only it needs to hear of are noted in the effects.
    observed: bool,
    /// How each flight's history is built: weighed or not, and how.
    weighing: Weighing<T>,
}

/// Whether and how flights weigh their items ([`Config::weigher`]), decided once per manager.
#[derive(Clone, Copy)]
enum Weighing<T> {
    /// No bound in bytes: histories weigh nothing.
    Not,
    /// By the config's weigher, or by size (`None`).
    By(Option<fn(&T) -> usize>),
}

/// What the driver held for a request that left, to release unlocked.
pub(super) enum Held<T, E> {
    /// It reads: how to end it alone ([R10](crate::design#r10)).
    Reading(Canceller),
    /// It is detached ([R18](crate::design#r18)): the history it resumes from.
    Detached(
        #[allow(dead_code, reason = "held only to be dropped once the lock is released")] Arc<History<T, E>>,
    ),
}

/// What the driver holds for one flight: where its items go, how to stop it.
pub(super) struct FlightHandles<T, E> {
    history: Arc<History<T, E>>,
    abort: Arc<AbortSignal>,
    /// Requests admitted to it ([`FlightSummary::served`]); resumes are not new requests.
    served: u64,
}

/// What the observer is to hear of an input, beside what its caller tells it: actions a
/// timeout may take several of, noted only when an observer is set.
#[derive(Clone, Copy)]
enum Note {
    /// `Abort`: the flight was abandoned ([R11](crate::design#r11)).
    Aborted(FlightId, FlightSummary),
    /// `Forget`: a detached request's window passed ([R12](crate::design#r12), [R18](crate::design#r18)).
    Forgotten(RequestId),
}

/// A flight the machine just started, for its task: its own handles.
pub(super) struct Started<T, E> {
    pub(super) flight: FlightId,
    pub(super) history: Arc<History<T, E>>,
    pub(super) abort: Arc<AbortSignal>,
}

/// What one input leaves to do once the lock is released: every wake, and
/// every drop that may run user code (a history's last handle drops its
/// items). At most one of each: that is all one input of the machine asks for.
#[must_use = "an input's effects wake tasks and drop handles: run them once the lock is released"]
pub(super) struct Effects<T, E> {
    /// `Start`: the new flight, for its task.
    started: Option<Started<T, E>>,
    /// `Subscribe`: the new request's reader.
    reader: Option<Reader<T, E>>,
    /// `Cancel`: the reader to end with `Cancelled`, waking it.
    cancel: Option<Canceller>,
    /// `Close`: the flight's task publishes the end it reported (the key is free, [R7](crate::design#r7)).
    close: bool,
    /// A deadline earlier than the one the timer sleeps until: a timer for it.
    arm: Option<Duration>,
    /// `Abort`: the flight's task to stop, waking it.
    abort: Option<Arc<AbortSignal>>,
    /// `Release` or `Abort`: what was held for the flight, released.
    released: Option<FlightHandles<T, E>>,
    /// What was held for a request that left (finished, dropped, forgotten), released.
    left: Option<Held<T, E>>,
    /// What the observer hears of once the effects ran; empty without one.
    notes: SmallVec<[Note; 1]>,
}

impl<T, E> Default for Effects<T, E> {
    fn default() -> Self {
        Effects {
            started: None,
            reader: None,
            cancel: None,
            close: false,
            arm: None,
            abort: None,
            released: None,
            left: None,
            notes: SmallVec::new(),
        }
    }
}

impl<T, E> Effects<T, E> {
    /// Wakes what the input asked to wake, drops what it released. Only with
    /// no lock held. (By reference: moving the effects costs a copy.)
    #[inline(always)]
    fn run(&mut self) {
        debug_assert!(self.started.is_none() && self.reader.is_none(), "a request takes its own first");
        if let Some(canceller) = self.cancel.take() {
            canceller.cancel();
        }
        if let Some(signal) = self.abort.take() {
            signal.abort();
        }
        self.released = None;
        self.left = None;
    }
}

/// Tells `observer` what the machine's actions noted, in their order.
#[cold]
fn tell(observer: &dyn Observer, notes: &[Note]) {
    for &note in notes {
        match note {
            Note::Aborted(flight, summary) => observer.flight_ended(flight, summary),
            Note::Forgotten(request) => observer.request(request, RequestEvent::Dropped),
        }
    }
}

/// Sets an effect the machine asks for at most once per input.
fn once<V>(slot: &mut Option<V>, value: V) {
    debug_assert!(slot.is_none(), "the machine asked for one effect twice in one input");
    *slot = Some(value);
}

impl<K, T, E, R> Shared<K, T, E, R> {
    /// A manager with no flight, running flights on `runtime`; an error if `config` cannot
    /// build one for items of type `T`.
    pub(super) fn try_new(config: Config, runtime: R) -> Result<Arc<Self>, BuildError>
    where
        K: core::hash::Hash + Eq,
        R: Runtime,
        T: 'static,
        Self: Send + Sync + 'static,
    {
        let observer = config.observer_ref().cloned();
        let weighing = match config.weigher_for::<T>() {
            Ok(weigher) if config.weighs() => Weighing::By(weigher),
            Ok(_) => Weighing::Not,
            Err(weighs) => {
                return Err(BuildError::WeigherType { weighs, items: core::any::type_name::<T>() });
            }
        };
        let registry = Registry {
            weighing,
            observed: observer.is_some(),
            machine: Machine::new(config),
            handles: Slots::new(),
            cancellers: Slots::new(),
            detached: BTreeMap::new(),
            armed: None,
        };
        let registry = Mutex::new(registry);
        let epoch = std::time::Instant::now();
        #[cfg(not(all(test, loom)))]
        let shared = Arc::new_cyclic(|me| Shared {
            registry,
            runtime,
            observer,
            epoch,
            me: me.clone(),
            arm: Self::arm,
        });
        #[cfg(all(test, loom))]
        let shared = Arc::new(Shared { registry, runtime, observer, epoch, arm: Self::arm });
        Ok(shared)
    }

    /// Runs an input's effects once the lock is released, its timer included.
    #[inline(always)]
    fn finish(&self, effects: &mut Effects<T, E>) {
        effects.run();
        if let Some(deadline) = effects.arm.take() {
            (self.arm)(self, deadline);
        }
    }

    /// Tells the observer, if one is set, of `event` for the request `id`, then of what the
    /// machine's actions noted (the flight it left abandoned, after it). Only with no lock held,
    /// after the effects ran.
    #[inline(always)]
    fn told(&self, id: RequestId, event: Option<RequestEvent>, notes: &[Note]) {
        if let Some(observer) = &self.observer {
            if let Some(event) = event {
                observer.request(id, event);
            }
            if !notes.is_empty() {
                tell(&**observer, notes);
            }
        }
    }

    /// The observer, if one is set: for the flight's task to tell it of its first item.
    #[inline(always)]
    pub(super) fn observer(&self) -> Option<&dyn Observer> {
        self.observer.as_deref()
    }

    /// The manager's clock, as the machine reads it.
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The registry, for reading only: no input goes through this guard.
    pub(super) fn read(&self) -> MutexGuard<'_, Registry<K, T, E>> {
        lock(&self.registry)
    }

    /// The one path of every input: under the lock, `feed` gives the machine
    /// one input, then every action it asks for is applied to `effects`. The
    /// lock is released on return, before anyone runs the effects.
    #[inline(always)]
    fn input<O>(
        &self,
        effects: &mut Effects<T, E>,
        feed: impl FnOnce(&mut Registry<K, T, E>, &mut Effects<T, E>) -> O,
    ) -> O {
        let mut registry = lock(&self.registry);
        let output = feed(&mut registry, effects);
        while let Some(action) = registry.machine.poll_action() {
            registry.apply(action, effects);
        }
        // One timer per manager, for the soonest deadline (R17, R18).
        let next = registry.machine.poll_timeout();
        if let Some(deadline) = next.filter(|&next| registry.armed.is_none_or(|armed| next < armed)) {
            registry.armed = Some(deadline);
            effects.arm = Some(deadline);
        }
        output
    }
}

impl<K, T, E, R> Shared<K, T, E, R>
where
    R: Runtime,
    Self: Send + Sync + 'static,
{
    /// Spawns the timer task for `deadline`: it sleeps until then and tells
    /// the machine the time. Run with no lock held.
    fn arm(&self, deadline: Duration) {
        #[cfg(not(all(test, loom)))]
        {
            let me = self.me.clone();
            let sleep = self.runtime.sleep(deadline.saturating_sub(self.now()));
            let timer = async move {
                sleep.await;
                if let Some(shared) = me.upgrade() {
                    shared.fire(deadline);
                }
            };
            if !self.runtime.spawn(timer) {
                // Nowhere to sleep: the next input tries again.
                let mut registry = lock(&self.registry);
                if registry.armed == Some(deadline) {
                    registry.armed = None;
                }
            }
        }
        #[cfg(all(test, loom))]
        let _ = deadline;
    }

    /// The timer for `deadline` woke: the machine is told the time, unless an
    /// earlier deadline's timer took over meanwhile.
    fn fire(&self, deadline: Duration) {
        let mut effects = Effects::default();
        let now = self.now();
        self.input(&mut effects, |registry, _| {
            if registry.armed == Some(deadline) {
                registry.armed = None;
                registry.machine.handle_timeout(now);
            }
        });
        self.finish(&mut effects);
        if let Some(observer) = &self.observer {
            tell(&**observer, &effects.notes);
        }
    }
}

impl<K, T, E, R> Shared<K, T, E, R> {
    /// A request for `key` ([R1](crate::design#r1)-[R3](crate::design#r3)): its admission, its reader, and the flight
    /// it started, if it leads.
    #[inline]
    pub(super) fn request(&self, key: K) -> (Admission, Reader<T, E>, Option<Started<T, E>>)
    where
        K: core::hash::Hash + Eq,
    {
        let mut effects = Effects::default();
        let admission = self.input(&mut effects, |registry, _| registry.machine.handle_request(key));
        let reader = effects.reader.take().expect("the machine subscribes every request it admits");
        let started = effects.started.take();
        self.finish(&mut effects);
        if let Some(observer) = &self.observer {
            if let Some(started) = &started {
                observer.flight_started(started.flight);
            }
            observer.request(
                admission.id,
                RequestEvent::Joined { flight: admission.flight, role: admission.role },
            );
        }
        (admission, reader, started)
    }

    /// A request for `key` that only joins ([R2](crate::design#r2), [R3](crate::design#r3),
    /// [R17](crate::design#r17)): its admission and its reader, or `None` with nothing to
    /// join, the machine unchanged. It never starts a flight, so it has no `Started`.
    #[inline]
    pub(super) fn join(&self, key: &K) -> Option<(Admission, Reader<T, E>)>
    where
        K: core::hash::Hash + Eq,
    {
        let mut effects = Effects::default();
        let admission = self.input(&mut effects, |registry, _| registry.machine.handle_join(key));
        let reader = effects.reader.take();
        self.finish(&mut effects);
        let admission = admission?;
        let joined = RequestEvent::Joined { flight: admission.flight, role: admission.role };
        self.told(admission.id, Some(joined), &[]);
        Some((admission, reader.expect("the machine subscribes every request it admits")))
    }

    /// `flight` prepared: from now on its late requests are joiners ([R3](crate::design#r3), [R4](crate::design#r4)).
    pub(super) fn prepared(&self, flight: FlightId) {
        let mut effects = Effects::default();
        self.input(&mut effects, |registry, _| registry.report(flight, Machine::handle_prepared));
        self.finish(&mut effects);
    }

    /// `flight`'s history is about to release its first item ([R15](crate::design#r15)).
    pub(super) fn truncated(&self, flight: FlightId) {
        let mut effects = Effects::default();
        self.input(&mut effects, |registry, _| registry.report(flight, Machine::handle_truncated));
        self.finish(&mut effects);
    }

    /// `flight` ended, `Done` or not: the machine frees its key ([R7](crate::design#r7)), or
    /// lets a `Done` one linger ([R17](crate::design#r17)). Returns whether the task is to publish
    /// its end: `false` once the flight was aborted.
    ///
    /// The observer hears of it here, with the flight's `items`, unless it was aborted (it
    /// heard of that then).
    /// `bytes` is what its retained items weigh, for the linger budget.
    pub(super) fn ended(&self, flight: FlightId, outcome: Outcome, items: u64, bytes: u64) -> bool {
        let mut effects = Effects::default();
        let now = self.now();
        let served = self.input(&mut effects, |registry, _| {
            let served = registry.handles.get(flight.slot()).map_or(0, |handles| handles.served);
            match outcome {
                Outcome::Done => {
                    registry.report(flight, |machine, flight| machine.handle_done_weighed(flight, now, bytes))
                }
                _ => registry.report(flight, Machine::handle_ended),
            }
            served
        });
        self.finish(&mut effects);
        if effects.close
            && let Some(observer) = &self.observer
        {
            observer.flight_ended(flight, FlightSummary { outcome, items, served });
        }
        effects.close
    }

    /// Cancels a live request ([R10](crate::design#r10), [R11](crate::design#r11), [R13](crate::design#r13)).
    pub(super) fn cancel(&self, id: RequestId) -> Result<(), CancelError> {
        let mut effects = Effects::default();
        let result = self.input(&mut effects, |registry, _| registry.machine.handle_cancel(id));
        self.finish(&mut effects);
        self.told(id, result.ok().map(|()| RequestEvent::Cancelled), &effects.notes);
        result
    }

    /// A request yielded its flight's end or `Lagged`. Returns `false` if a
    /// cancel reached the machine first: the request then ends `Cancelled`.
    pub(super) fn finished(&self, id: RequestId) -> bool {
        let mut effects = Effects::default();
        let result = self.input(&mut effects, |registry, effects| {
            effects.left = registry.leave(id);
            registry.machine.handle_finished(id)
        });
        self.finish(&mut effects);
        self.told(id, result.ok().map(|()| RequestEvent::Finished), &effects.notes);
        result.is_ok()
    }

    /// A live request's subscription was dropped ([R12](crate::design#r12)).
    pub(super) fn dropped(&self, id: RequestId) {
        let mut effects = Effects::default();
        // Refused if a cancel reached the machine first: the request is gone already.
        let result = self.input(&mut effects, |registry, effects| {
            effects.left = registry.leave(id);
            registry.machine.handle_drop(id)
        });
        self.finish(&mut effects);
        self.told(id, result.ok().map(|()| RequestEvent::Dropped), &effects.notes);
    }

    /// A live request's client went away for now ([R18](crate::design#r18)): it stays live for the
    /// resume window, `history` kept for it; with no window, a drop ([R12](crate::design#r12)).
    pub(super) fn detach(&self, id: RequestId, history: Arc<History<T, E>>) {
        let mut effects = Effects::default();
        let now = self.now();
        let told = self.input(&mut effects, |registry, effects| {
            if registry.machine.handle_detach(id, now).is_err() {
                return None; // A cancel got there first: the request is gone.
            }
            effects.left = registry.cancellers.take(id.slot()).map(Held::Reading);
            if !registry.machine.is_detached(id) {
                return Some(RequestEvent::Dropped); // No resume window.
            }
            registry.detached.insert(id, history);
            Some(RequestEvent::Detached)
        });
        self.finish(&mut effects);
        self.told(id, told, &effects.notes);
    }

    /// Resumes a detached request from item `from` ([R18](crate::design#r18)): its admission and
    /// its new reader.
    pub(super) fn resume(&self, id: RequestId, from: u64) -> Result<(Admission, Reader<T, E>), ResumeError> {
        let mut effects = Effects::default();
        let admission = self.input(&mut effects, |registry, _| {
            let role = registry.machine.role(id).ok_or(ResumeError::UnknownRequest)?;
            let flight = registry.machine.flight_of(id).ok_or(ResumeError::UnknownRequest)?;
            let Some(history) = registry.detached.get(&id) else {
                return Err(ResumeError::NotDetached);
            };
            let (released, appended) = (history.released(), history.appended());
            if from < released {
                return Err(ResumeError::Released { missed: released - from });
            }
            if from > appended {
                return Err(ResumeError::Ahead { appended });
            }
            registry.machine.handle_resume(id, from)?;
            Ok(Admission { id, role, flight })
        });
        let reader = effects.reader.take();
        self.finish(&mut effects);
        let admission = admission?;
        self.told(id, Some(RequestEvent::Resumed { from }), &[]);
        Ok((admission, reader.expect("the machine subscribes every request it resumes")))
    }
}

impl<K, T, E> Registry<K, T, E> {
    /// The machine, for reading.
    pub(super) fn machine(&self) -> &Machine<K> {
        &self.machine
    }

    /// Whether the driver holds nothing for any flight or request ([R16](crate::design#r16)).
    pub(super) fn holds_nothing(&self) -> bool {
        self.handles.is_empty() && self.cancellers.is_empty() && self.detached.is_empty()
    }

    /// What is held for `id`, if it is live: it is leaving its flight.
    fn leave(&mut self, id: RequestId) -> Option<Held<T, E>> {
        self.machine.flight_of(id)?;
        self.take(id)
    }

    /// What is held for the request `id`, taken out.
    fn take(&mut self, id: RequestId) -> Option<Held<T, E>> {
        match self.cancellers.take(id.slot()) {
            Some(canceller) => Some(Held::Reading(canceller)),
            None => self.detached.remove(&id).map(Held::Detached),
        }
    }

    /// Feeds `flight`'s task's report to the machine, unless the flight was
    /// aborted: the driver released it then, and its task's late report is
    /// nothing for the machine to refuse.
    fn report<F>(&mut self, flight: FlightId, input: impl FnOnce(&mut Machine<K>, FlightId) -> Result<(), F>)
    where
        F: core::fmt::Debug,
    {
        if self.machine.is_active(flight) {
            let accepted = input(&mut self.machine, flight);
            // The task reports each step once, in order, and only while its
            // flight lives: a refusal is a driver bug (checked in tests, loom's included).
            if cfg!(any(test, debug_assertions)) {
                assert!(accepted.is_ok(), "the machine refused a flight's report: {accepted:?}");
            }
        }
    }

    /// Carries out one action of the machine, as far as it can be under the
    /// lock; the rest goes into `effects`.
    #[inline]
    fn apply(&mut self, action: Action, effects: &mut Effects<T, E>) {
        match action {
            Action::Start { flight } => {
                let config = self.machine.config();
                let limit = config.history_limit_items();
                let history = match self.weighing {
                    Weighing::Not => History::new(limit),
                    Weighing::By(weigher) => History::weighed(limit, config.flight_bytes_limit(), weigher),
                };
                let abort = Arc::new(AbortSignal::default());
                let handles =
                    FlightHandles { history: Arc::clone(&history), abort: Arc::clone(&abort), served: 0 };
                self.handles.insert(flight.slot(), handles);
                once(&mut effects.started, Started { flight, history, abort });
            }
            Action::Subscribe { request, from: from @ Position::At(_), .. } => {
                // A resume (R18): the history kept for the detached request.
                if let Some(history) = self.detached.remove(&request) {
                    let reader = History::subscribe_to(&history, from);
                    self.cancellers.insert(request.slot(), reader.canceller());
                    once(&mut effects.reader, reader);
                }
            }
            Action::Subscribe { request, flight, from } => {
                // The machine subscribes only to flights it has not released.
                if let Some(handles) = self.handles.get_mut(flight.slot()) {
                    handles.served += 1;
                    // R15: the truncated history, from its oldest retained item, if the policy says so.
                    let from = match (from, self.machine.config().overflow_policy()) {
                        (Position::Start, Overflow::Truncate) => Position::At(handles.history.released()),
                        _ => from,
                    };
                    let reader = History::subscribe_to(&handles.history, from);
                    self.cancellers.insert(request.slot(), reader.canceller());
                    once(&mut effects.reader, reader);
                }
            }
            Action::Cancel { request } => match self.take(request) {
                Some(Held::Reading(canceller)) => once(&mut effects.cancel, canceller),
                // Detached: nobody reads, nothing to wake; what was kept goes.
                held => effects.left = held,
            },
            Action::Forget { request } => {
                effects.left = self.take(request);
                if self.observed {
                    effects.notes.push(Note::Forgotten(request));
                }
            }
            Action::Close { .. } => effects.close = true,
            Action::Release { flight } => {
                if let Some(handles) = self.handles.take(flight.slot()) {
                    once(&mut effects.released, handles);
                }
            }
            Action::Abort { flight } => {
                if let Some(handles) = self.handles.take(flight.slot()) {
                    if self.observed {
                        let (items, served) = (handles.history.appended(), handles.served);
                        let summary = FlightSummary { outcome: Outcome::Aborted, items, served };
                        effects.notes.push(Note::Aborted(flight, summary));
                    }
                    once(&mut effects.abort, Arc::clone(&handles.abort));
                    once(&mut effects.released, handles);
                }
            }
        }
    }
}
