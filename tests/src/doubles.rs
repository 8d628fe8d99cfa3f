//! Test doubles a user of streamflight would write: a scripted upstream and a preparation gate the
//! test drives, probes that see polls and drops, a slow drop, drop-counted values and a small PRNG.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::Stream;

use crate::wait::{PATIENCE, in_caller};

/// Locks `mutex`, ignoring poison: a double's state stays usable after a scripted panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Counts what happens to the futures or streams it [`wrap`](Probe::wrap)s:
/// how many were made, first polled, polled by the caller, dropped. Cheap to clone; clones share counts.
#[derive(Clone, Debug, Default)]
pub struct Probe {
    counts: Arc<ProbeCounts>,
}

#[derive(Debug, Default)]
struct ProbeCounts {
    made: AtomicUsize,
    polled: AtomicUsize,
    polled_by_caller: AtomicUsize,
    dropped: AtomicUsize,
}

impl Probe {
    /// A probe with every count at 0.
    pub fn new() -> Self {
        Probe::default()
    }

    /// `inner`, watched by this probe.
    pub fn wrap<F>(&self, inner: F) -> Probed<F> {
        self.counts.made.fetch_add(1, Ordering::SeqCst);
        Probed { inner: Box::pin(inner), probe: self.clone(), polled: false }
    }

    /// How many wrapped values were made.
    pub fn made(&self) -> usize {
        self.counts.made.load(Ordering::SeqCst)
    }

    /// How many wrapped values were polled at least once.
    pub fn polled(&self) -> usize {
        self.counts.polled.load(Ordering::SeqCst)
    }

    /// How many polls ran inside [`as_caller`](crate::wait::as_caller): the
    /// caller's own thread during `request`, or a caller reading its subscription.
    pub fn polled_by_caller(&self) -> usize {
        self.counts.polled_by_caller.load(Ordering::SeqCst)
    }

    /// How many wrapped values were dropped.
    pub fn dropped(&self) -> usize {
        self.counts.dropped.load(Ordering::SeqCst)
    }

    /// How many wrapped values are alive.
    pub fn alive(&self) -> usize {
        self.made() - self.dropped()
    }
}

/// A future or stream watched by a [`Probe`].
pub struct Probed<F> {
    inner: Pin<Box<F>>,
    probe: Probe,
    polled: bool,
}

impl<F> Probed<F> {
    fn note_poll(&mut self) {
        if !self.polled {
            self.polled = true;
            self.probe.counts.polled.fetch_add(1, Ordering::SeqCst);
        }
        if in_caller() {
            self.probe.counts.polled_by_caller.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl<F: Future> Future for Probed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        this.note_poll();
        this.inner.as_mut().poll(cx)
    }
}

impl<S: Stream> Stream for Probed<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.get_mut();
        this.note_poll();
        this.inner.as_mut().poll_next(cx)
    }
}

impl<F> Drop for Probed<F> {
    fn drop(&mut self) {
        self.probe.counts.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// One step of a [`Script`].
enum Step<T, E> {
    Item(T),
    Finish,
    Fail(E),
    Panic,
}

/// A scripted upstream: the test pushes items and then finishes, fails or
/// panics it; [`stream`](Script::stream) is what the `start` future returns.
/// Clones share the script; its streams are [`probe`](Script::probe)d.
pub struct Script<T, E> {
    shared: Arc<ScriptShared<T, E>>,
}

struct ScriptShared<T, E> {
    state: Mutex<ScriptState<T, E>>,
    probe: Probe,
}

struct ScriptState<T, E> {
    steps: VecDeque<Step<T, E>>,
    waker: Option<Waker>,
}

impl<T, E> Clone for Script<T, E> {
    fn clone(&self) -> Self {
        Script { shared: Arc::clone(&self.shared) }
    }
}

impl<T, E> Default for Script<T, E> {
    fn default() -> Self {
        let state = ScriptState { steps: VecDeque::new(), waker: None };
        Script { shared: Arc::new(ScriptShared { state: Mutex::new(state), probe: Probe::new() }) }
    }
}

impl<T, E> Script<T, E> {
    /// An empty script.
    pub fn new() -> Self {
        Script::default()
    }

    /// A stream playing this script (one at a time: streams share the steps).
    pub fn stream(&self) -> Probed<ScriptStream<T, E>> {
        self.shared.probe.wrap(ScriptStream { shared: Arc::clone(&self.shared), over: false })
    }

    /// Watches the streams of this script: made, polled, dropped.
    pub fn probe(&self) -> &Probe {
        &self.shared.probe
    }

    fn then(&self, step: Step<T, E>) {
        let waker = {
            let mut state = lock(&self.shared.state);
            state.steps.push_back(step);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The upstream yields `Ok(item)`.
    pub fn push(&self, item: T) {
        self.then(Step::Item(item));
    }

    /// The upstream yields every item, in order.
    pub fn push_all(&self, items: impl IntoIterator<Item = T>) {
        let waker = {
            let mut state = lock(&self.shared.state);
            state.steps.extend(items.into_iter().map(Step::Item));
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The upstream ends.
    pub fn finish(&self) {
        self.then(Step::Finish);
    }

    /// The upstream yields `Err(error)` (streamflight ends the flight there).
    pub fn fail(&self, error: E) {
        self.then(Step::Fail(error));
    }

    /// The upstream panics when polled for its next item.
    pub fn panic(&self) {
        self.then(Step::Panic);
    }

    /// Steps pushed but not yet played.
    pub fn pending_steps(&self) -> usize {
        lock(&self.shared.state).steps.len()
    }
}

/// The stream of a [`Script`]: plays its steps, waiting when there is none.
pub struct ScriptStream<T, E> {
    shared: Arc<ScriptShared<T, E>>,
    over: bool,
}

impl<T, E> Stream for ScriptStream<T, E> {
    type Item = Result<T, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T, E>>> {
        let this = self.get_mut();
        if this.over {
            return Poll::Ready(None);
        }
        let step = {
            let mut state = lock(&this.shared.state);
            match state.steps.pop_front() {
                Some(step) => step,
                None => {
                    state.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        };
        match step {
            Step::Item(item) => Poll::Ready(Some(Ok(item))),
            Step::Fail(error) => Poll::Ready(Some(Err(error))),
            Step::Finish => {
                this.over = true;
                Poll::Ready(None)
            }
            Step::Panic => panic!("the scripted upstream panics, as told"),
        }
    }
}

/// How a [`Gate`] releases its preparation.
enum Release<S, E> {
    Open(S),
    Fail(E),
    Panic,
}

/// A preparation the test releases: every [`start`](Gate::start) future
/// waits until the test [`open`](Gate::open)s (it returns `Ok(stream)`),
/// [`fail`](Gate::fail)s (`Err(e)`) or [`panic`](Gate::panic)s it. The
/// futures are [`probe`](Gate::probe)d. Clones share the gate.
pub struct Gate<S, E> {
    shared: Arc<GateShared<S, E>>,
}

struct GateShared<S, E> {
    state: Mutex<GateState<S, E>>,
    probe: Probe,
}

struct GateState<S, E> {
    release: Option<Release<S, E>>,
    waker: Option<Waker>,
}

impl<S, E> Clone for Gate<S, E> {
    fn clone(&self) -> Self {
        Gate { shared: Arc::clone(&self.shared) }
    }
}

impl<S, E> Default for Gate<S, E> {
    fn default() -> Self {
        let state = GateState { release: None, waker: None };
        Gate { shared: Arc::new(GateShared { state: Mutex::new(state), probe: Probe::new() }) }
    }
}

impl<S, E> Gate<S, E> {
    /// A closed gate.
    pub fn new() -> Self {
        Gate::default()
    }

    /// A `start` future waiting on this gate (only one of them gets the release).
    pub fn start(&self) -> Probed<GateFuture<S, E>> {
        self.shared.probe.wrap(GateFuture { shared: Arc::clone(&self.shared) })
    }

    /// Watches the `start` futures: made, polled (= preparations run), dropped.
    pub fn probe(&self) -> &Probe {
        &self.shared.probe
    }

    fn release(&self, release: Release<S, E>) {
        let waker = {
            let mut state = lock(&self.shared.state);
            assert!(state.release.is_none(), "a gate is released once");
            state.release = Some(release);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The preparation succeeds with `upstream`.
    pub fn open(&self, upstream: S) {
        self.release(Release::Open(upstream));
    }

    /// The preparation fails with `error`.
    pub fn fail(&self, error: E) {
        self.release(Release::Fail(error));
    }

    /// The preparation panics.
    pub fn panic(&self) {
        self.release(Release::Panic);
    }
}

/// The `start` future of a [`Gate`].
pub struct GateFuture<S, E> {
    shared: Arc<GateShared<S, E>>,
}

impl<S, E> Future for GateFuture<S, E> {
    type Output = Result<S, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<S, E>> {
        let release = {
            let mut state = lock(&self.shared.state);
            match state.release.take() {
                Some(release) => release,
                None => {
                    state.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        };
        match release {
            Release::Open(upstream) => Poll::Ready(Ok(upstream)),
            Release::Fail(error) => Poll::Ready(Err(error)),
            Release::Panic => panic!("the gated preparation panics, as told"),
        }
    }
}

/// Makes a drop slow: a value [`hold`](Latch::hold)s wraps blocks in its
/// `Drop` until the test [`release`](Latch::release)s the latch (or
/// [`PATIENCE`] passes), like an upstream that closes its connection synchronously.
#[derive(Clone, Default)]
pub struct Latch {
    shared: Arc<(Mutex<LatchState>, Condvar)>,
}

#[derive(Default)]
struct LatchState {
    entered: bool,
    released: bool,
}

impl Latch {
    /// A latch not yet released.
    pub fn new() -> Self {
        Latch::default()
    }

    /// `inner`, whose drop waits for this latch.
    pub fn hold<S>(&self, inner: S) -> Held<S> {
        Held { inner: Box::pin(inner), latch: self.clone() }
    }

    /// Whether a held value's drop has begun (and waits).
    pub fn entered(&self) -> bool {
        lock(&self.shared.0).entered
    }

    /// Lets every held drop go on.
    pub fn release(&self) {
        lock(&self.shared.0).released = true;
        self.shared.1.notify_all();
    }
}

/// A stream whose drop waits for its [`Latch`].
pub struct Held<S> {
    inner: Pin<Box<S>>,
    latch: Latch,
}

impl<S: Stream> Stream for Held<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl<S> Drop for Held<S> {
    fn drop(&mut self) {
        let (state, released) = &*self.latch.shared;
        let deadline = Instant::now() + PATIENCE;
        let mut state = lock(state);
        state.entered = true;
        while !state.released && Instant::now() < deadline {
            state = released
                .wait_timeout(state, Duration::from_millis(50))
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }
}

/// Counts the [`Counted`] values it makes that are alive (clones included),
/// for leak checks (R16). Clones share the count.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    alive: Arc<AtomicIsize>,
}

impl Tally {
    /// A tally at 0.
    pub fn new() -> Self {
        Tally::default()
    }

    /// A counted value.
    pub fn make(&self, value: u64) -> Counted {
        self.alive.fetch_add(1, Ordering::SeqCst);
        Counted { value, tally: self.clone() }
    }

    /// How many of its values (and their clones) are alive.
    pub fn alive(&self) -> isize {
        self.alive.load(Ordering::SeqCst)
    }
}

/// A value whose every copy is counted by its [`Tally`]; equal and hashed by value alone.
pub struct Counted {
    value: u64,
    tally: Tally,
}

impl Counted {
    /// The value.
    pub fn value(&self) -> u64 {
        self.value
    }
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.tally.make(self.value)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.tally.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PartialEq for Counted {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for Counted {}

impl Hash for Counted {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.value.hash(state);
    }
}

impl fmt::Debug for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counted({})", self.value)
    }
}

/// A pause of a [`Sequence`]: a future that resolves when it may go on (a timer, say).
pub type Pause = Pin<Box<dyn Future<Output = ()> + Send>>;

/// An upstream producing a known sequence, `first..first + len`, pausing every few
/// items, and ending with `Err(error)` if one is set.
pub struct Sequence<E> {
    next: u64,
    end: u64,
    error: Option<E>,
    pause_every: u64,
    /// Makes each pause; `None`: a pause only gives the task's turn away.
    make_pause: Option<fn() -> Pause>,
    /// The pause under way, if any.
    pause: Option<Pause>,
    /// The pause before the item `next` is over.
    paused: bool,
}

impl<E> Sequence<E> {
    /// `first..first + len`, then the end (or `Err(error)`), giving its task's
    /// turn away before every `pause_every`-th item (0: never).
    pub fn new(first: u64, len: u64, pause_every: u64, error: Option<E>) -> Self {
        Sequence {
            next: first,
            end: first + len,
            error,
            pause_every,
            make_pause: None,
            pause: None,
            paused: false,
        }
    }

    /// The same, but each pause waits for a future made by `make_pause` (a
    /// timer, for an upstream whose items arrive over time).
    pub fn with_pauses(mut self, make_pause: fn() -> Pause) -> Self {
        self.make_pause = Some(make_pause);
        self
    }
}

impl<E: Unpin> Stream for Sequence<E> {
    type Item = Result<u64, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<u64, E>>> {
        let this = self.get_mut();
        if this.next == this.end {
            return Poll::Ready(this.error.take().map(Err));
        }
        if this.pause_every != 0 && this.next.is_multiple_of(this.pause_every) && !this.paused {
            match (this.make_pause, &mut this.pause) {
                (None, _) => {
                    this.paused = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                (Some(make), pause) => {
                    let pending = pause.get_or_insert_with(make).as_mut().poll(cx).is_pending();
                    if pending {
                        return Poll::Pending;
                    }
                    this.pause = None;
                }
            }
        }
        this.paused = false;
        let item = this.next;
        this.next += 1;
        Poll::Ready(Some(Ok(item)))
    }
}

/// Resolves after giving the task's turn away once.
pub async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

/// A small deterministic PRNG (xorshift64*), seeded by the test: no `rand` needed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is fine).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// `true` with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
