//! The manager's one lock: the machine and what the driver keeps per flight and per request.
//! Every input goes the same way: fed to the machine under the lock, its actions drained into
//! [`Effects`], the lock released, the effects run.

use super::abort::AbortSignal;
use super::slots::Slots;
use crate::history::{Canceller, History, Reader};
use crate::sync::{Arc, Mutex, MutexGuard, lock};
use crate::{Action, Admission, CancelError, Config, FlightId, Machine, RequestId};

/// What a manager and its flights' tasks and subscriptions share: the
/// registry behind its lock, and the runtime the flights run on.
pub(super) struct Shared<K, T, E, R> {
    registry: Mutex<Registry<K, T, E>>,
    pub(super) runtime: R,
}

/// Everything behind the manager's lock.
pub(super) struct Registry<K, T, E> {
    machine: Machine<K>,
    /// What the driver holds for each flight the machine has not released,
    /// by slot: exactly the flights the machine holds active.
    handles: Slots<FlightHandles<T, E>>,
    /// How to end each live request alone ([R10](crate::design#r10)), by slot: exactly the
    /// requests the machine holds live.
    cancellers: Slots<Canceller>,
}

/// What the driver holds for one flight: where its items go, how to stop it.
pub(super) struct FlightHandles<T, E> {
    history: Arc<History<T, E>>,
    abort: Arc<AbortSignal>,
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
    /// `Abort`: the flight's task to stop, waking it.
    abort: Option<Arc<AbortSignal>>,
    /// `Release` or `Abort`: what was held for the flight, released.
    released: Option<FlightHandles<T, E>>,
    /// The canceller of a request that finished or was dropped, released.
    left: Option<Canceller>,
}

impl<T, E> Default for Effects<T, E> {
    fn default() -> Self {
        Effects {
            started: None,
            reader: None,
            cancel: None,
            close: false,
            abort: None,
            released: None,
            left: None,
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

/// Sets an effect the machine asks for at most once per input.
fn once<V>(slot: &mut Option<V>, value: V) {
    debug_assert!(slot.is_none(), "the machine asked for one effect twice in one input");
    *slot = Some(value);
}

impl<K, T, E, R> Shared<K, T, E, R> {
    /// A registry with no flight, running flights on `runtime`.
    pub(super) fn new(config: Config, runtime: R) -> Self
    where
        K: core::hash::Hash + Eq,
    {
        let registry =
            Registry { machine: Machine::new(config), handles: Slots::new(), cancellers: Slots::new() };
        Shared { registry: Mutex::new(registry), runtime }
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
        output
    }

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
        effects.run();
        (admission, reader, started)
    }

    /// `flight` prepared: from now on its late requests are joiners ([R3](crate::design#r3), [R4](crate::design#r4)).
    pub(super) fn prepared(&self, flight: FlightId) {
        let mut effects = Effects::default();
        self.input(&mut effects, |registry, _| registry.report(flight, Machine::handle_prepared));
        effects.run();
    }

    /// `flight`'s history is about to release its first item ([R15](crate::design#r15)).
    pub(super) fn truncated(&self, flight: FlightId) {
        let mut effects = Effects::default();
        self.input(&mut effects, |registry, _| registry.report(flight, Machine::handle_truncated));
        effects.run();
    }

    /// `flight` ended: the machine frees its key ([R7](crate::design#r7)). Returns whether the
    /// task is to publish its end: `false` once the flight was aborted.
    pub(super) fn ended(&self, flight: FlightId) -> bool {
        let mut effects = Effects::default();
        self.input(&mut effects, |registry, _| registry.report(flight, Machine::handle_ended));
        effects.run();
        effects.close
    }

    /// Cancels a live request ([R10](crate::design#r10), [R11](crate::design#r11), [R13](crate::design#r13)).
    pub(super) fn cancel(&self, id: RequestId) -> Result<(), CancelError> {
        let mut effects = Effects::default();
        let result = self.input(&mut effects, |registry, _| registry.machine.handle_cancel(id));
        effects.run();
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
        effects.run();
        result.is_ok()
    }

    /// A live request's subscription was dropped ([R12](crate::design#r12)).
    pub(super) fn dropped(&self, id: RequestId) {
        let mut effects = Effects::default();
        // Refused if a cancel reached the machine first: the request is gone already.
        let _ = self.input(&mut effects, |registry, effects| {
            effects.left = registry.leave(id);
            registry.machine.handle_drop(id)
        });
        effects.run();
    }
}

impl<K, T, E> Registry<K, T, E> {
    /// The machine, for reading.
    pub(super) fn machine(&self) -> &Machine<K> {
        &self.machine
    }

    /// Whether the driver holds nothing for any flight or request ([R16](crate::design#r16)).
    pub(super) fn holds_nothing(&self) -> bool {
        self.handles.is_empty() && self.cancellers.is_empty()
    }

    /// The canceller of `id`, if it is live: it is leaving its flight.
    fn leave(&mut self, id: RequestId) -> Option<Canceller> {
        self.machine.flight_of(id)?;
        self.cancellers.take(id.slot())
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
                let history = History::new(self.machine.config().history_limit_items());
                let abort = Arc::new(AbortSignal::default());
                let handles = FlightHandles { history: Arc::clone(&history), abort: Arc::clone(&abort) };
                self.handles.insert(flight.slot(), handles);
                once(&mut effects.started, Started { flight, history, abort });
            }
            Action::Subscribe { request, flight, from } => {
                // The machine subscribes only to flights it has not released.
                if let Some(handles) = self.handles.get(flight.slot()) {
                    let reader = History::subscribe_to(&handles.history, from);
                    self.cancellers.insert(request.slot(), reader.canceller());
                    once(&mut effects.reader, reader);
                }
            }
            Action::Cancel { request } => {
                if let Some(canceller) = self.cancellers.take(request.slot()) {
                    once(&mut effects.cancel, canceller);
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
                    once(&mut effects.abort, Arc::clone(&handles.abort));
                    once(&mut effects.released, handles);
                }
            }
        }
    }
}
