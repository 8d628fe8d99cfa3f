//! The cancellation fuzz check: the real tokio adapter on a current-thread runtime, with the
//! fuzzer's bytes choosing the interleaving of requests, cancels, drops, upstream steps and polls.
//!
//! The `cancellation` target in `fuzz/` and the corpus replay test both call [`check_cancellation`].
//! Panicking doubles are left out: libFuzzer treats every panic as a crash (R9 has its scenarios).

use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use futures::Stream;

use crate::doubles::{Gate, Probed, Script, ScriptStream};
use crate::{
    Config, Event, Failure, Flights, LateJoin, Orphan, Overflow, RequestId, ResumeError, Subscription, Tokio,
};

type Upstream = Probed<ScriptStream<u32, u8>>;

/// One step of a fuzz case; indices are taken modulo what exists.
#[derive(Arbitrary, Clone, Copy, Debug)]
enum Step {
    /// A request for key `0..3`.
    Request(u8),
    /// The flight's preparation succeeds.
    Open(u8),
    /// The flight's preparation fails.
    FailPreparation(u8),
    /// The flight's upstream yields its next item.
    Push(u8),
    /// The flight's upstream ends.
    Finish(u8),
    /// The flight's upstream fails.
    Fail(u8),
    /// `Flights::cancel(id)`.
    Cancel(u8),
    /// `Subscription::cancel()`.
    CancelSubscription(u8),
    /// The subscription is dropped.
    Drop(u8),
    /// The subscription is polled once.
    Poll(u8),
    /// `Subscription::detach()` (R18).
    Detach(u8),
    /// `Flights::resume(id, from)` of a detached request, from the items it read (R18).
    Resume(u8),
    /// The runtime runs its tasks (the flight tasks) until they wait.
    Run,
}

/// What the check knows of one flight it started.
struct FlightCtl {
    key: u8,
    gate: Gate<Upstream, u8>,
    script: Script<u32, u8>,
    /// The gate was opened or failed.
    released: bool,
    pushed: u32,
    finished: bool,
}

/// What the check knows of one request.
struct Request {
    subscription: Option<Subscription<u32, u8>>,
    flight: usize,
    items: Vec<u32>,
    end: Option<Event<u32, u8>>,
    /// `cancel` returned `Ok`: the next event must be `Cancelled`.
    cancelled: bool,
    /// Detached (R18) and not resumed: its id, to resume it.
    detached: Option<RequestId>,
}

impl Request {
    /// Live, judged as if it still had its subscription: not ended, not cancelled.
    fn live_when_detached(&self) -> bool {
        self.end.is_none() && !self.cancelled
    }

    fn live(&self) -> bool {
        (self.subscription.is_some() || self.detached.is_some()) && self.end.is_none() && !self.cancelled
    }
}

/// A weight per item that varies, so that a flight's bound in bytes releases unevenly.
fn uneven(item: &u32) -> usize {
    *item as usize % 5 + 1
}

fn configs() -> [Config; 7] {
    [
        Config::default(),
        Config::default().orphan(Orphan::Finish),
        Config::default().history_limit(3),
        Config::default().late_join(LateJoin::Tail),
        // A window no case outlives: detached requests are resumed or cancelled, never expire.
        Config::default().resume_window(Duration::from_secs(3600)),
        // Bounds in bytes: three items' worth (each weighs its size), a late request starts anew.
        Config::default().flight_bytes(3 * std::mem::size_of::<u32>()),
        // Uneven weights; a late request joins and is told it lagged.
        Config::default().weigher(uneven as fn(&u32) -> usize).flight_bytes(8).overflow(Overflow::Lagged),
    ]
}

/// Runs one fuzz case; panics on the first broken promise.
pub fn check_cancellation(data: &[u8]) {
    let mut input = Unstructured::new(data);
    let configs = configs();
    let Ok(choice) = input.choose_index(configs.len()) else { return };
    let config = configs[choice].clone();
    let bounded = config.history_limit_items().is_some() || config.flight_bytes_limit().is_some();
    let tail = config.late_join_policy() == LateJoin::Tail;
    let windowed = !config.resume_window_duration().is_zero();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    let _inside = runtime.enter();
    let manager: Flights<u8, u32, u8, Tokio> = Flights::new(config);
    let mut flights: Vec<FlightCtl> = Vec::new();
    let mut requests: Vec<Request> = Vec::new();
    let run = |runtime: &tokio::runtime::Runtime| {
        runtime.block_on(async {
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
        })
    };

    let trace = std::env::var_os("STREAMFLIGHT_FUZZ_TRACE").is_some();
    for _ in 0..200 {
        if input.is_empty() {
            break;
        }
        let Ok(step) = input.arbitrary::<Step>() else { break };
        if trace {
            eprintln!("{step:?}");
        }
        let aborted = manager.stats().aborted;
        let flight = |i: u8| (!flights.is_empty()).then(|| usize::from(i) % flights.len());
        let request = |i: u8| (!requests.is_empty()).then(|| usize::from(i) % requests.len());
        match step {
            Step::Request(key) => {
                let (key, gate) = (key % 3, Gate::new());
                let subscription = manager.request(key, gate.start());
                let index = if subscription.role() == crate::Role::Leader {
                    let script = Script::new();
                    flights.push(FlightCtl {
                        key,
                        gate,
                        script,
                        released: false,
                        pushed: 0,
                        finished: false,
                    });
                    flights.len() - 1
                } else {
                    // A key's joinable flight is always its latest: a newer one starts only when none is.
                    flights.iter().rposition(|f| f.key == key).expect("a joiner joins a started flight")
                };
                requests.push(Request {
                    subscription: Some(subscription),
                    flight: index,
                    items: Vec::new(),
                    end: None,
                    cancelled: false,
                    detached: None,
                });
            }
            Step::Open(f) | Step::FailPreparation(f) => {
                if let Some(f) = flight(f).filter(|&f| !flights[f].released) {
                    let ctl = &mut flights[f];
                    ctl.released = true;
                    match step {
                        Step::Open(_) => ctl.gate.open(ctl.script.stream()),
                        _ => ctl.gate.fail(3),
                    }
                }
            }
            Step::Push(f) => {
                if let Some(f) = flight(f).filter(|&f| !flights[f].finished) {
                    let ctl = &mut flights[f];
                    ctl.script.push(ctl.pushed);
                    ctl.pushed += 1;
                }
            }
            Step::Finish(f) | Step::Fail(f) => {
                if let Some(f) = flight(f).filter(|&f| !flights[f].finished) {
                    let ctl = &mut flights[f];
                    ctl.finished = true;
                    match step {
                        Step::Finish(_) => ctl.script.finish(),
                        _ => ctl.script.fail(7),
                    }
                }
            }
            Step::Cancel(r) | Step::CancelSubscription(r) => {
                if let Some(r) = request(r) {
                    let request = &mut requests[r];
                    let live = request.live();
                    let issued = match (&request.subscription, step, request.detached) {
                        (Some(s), Step::CancelSubscription(_), _) => {
                            s.cancel();
                            true
                        }
                        (Some(s), _, _) => {
                            let result = manager.cancel(s.id());
                            assert_eq!(result.is_ok(), live, "cancel of request {r}: {result:?} (R13)");
                            true
                        }
                        (None, Step::Cancel(_), Some(id)) => {
                            let result = manager.cancel(id);
                            assert_eq!(result.is_ok(), live, "cancel of detached request {r}: {result:?}");
                            true
                        }
                        (None, _, _) => false,
                    };
                    request.cancelled |= live && issued;
                }
            }
            Step::Drop(r) => {
                if let Some(r) = request(r) {
                    requests[r].subscription = None;
                }
            }
            Step::Detach(r) => {
                if let Some(r) = request(r) {
                    let request = &mut requests[r];
                    if let Some(subscription) = request.subscription.take() {
                        let id = subscription.detach();
                        // Only a live request with a window stays (else: a drop, R12).
                        if windowed && request.live_when_detached() {
                            request.detached = Some(id);
                        }
                    }
                }
            }
            Step::Resume(r) => {
                if let Some(r) = request(r) {
                    resume(&manager, &mut requests[r], r);
                }
            }
            Step::Poll(r) => {
                if let Some(r) = request(r) {
                    poll_once(&mut requests[r], r, bounded, tail);
                }
            }
            Step::Run => run(&runtime),
        }
        if manager.stats().aborted > aborted {
            // The last one out (cancelled, dropped, or lagged when polled) aborted its flight:
            // the preparation or upstream is dropped promptly (R11, R15).
            let (Step::Cancel(r)
            | Step::CancelSubscription(r)
            | Step::Drop(r)
            | Step::Poll(r)
            | Step::Detach(r)) = step
            else {
                panic!("{step:?} aborted a flight")
            };
            let f = requests[usize::from(r) % requests.len()].flight;
            run(&runtime);
            let (gate, script) = (flights[f].gate.probe(), flights[f].script.probe());
            assert_eq!(gate.alive(), 0, "flight {f} aborted by {step:?}, its start future lives on");
            if script.polled() > 0 {
                assert_eq!(script.alive(), 0, "flight {f} aborted by {step:?}, its upstream lives on");
            }
        }
    }

    // Let everything settle: open and finish every flight, then read every request to its end.
    for ctl in &mut flights {
        if !std::mem::replace(&mut ctl.released, true) {
            ctl.gate.open(ctl.script.stream());
        }
        if !ctl.finished {
            ctl.finished = true;
            ctl.script.finish();
        }
    }
    for (r, request) in requests.iter_mut().enumerate() {
        resume(&manager, request, r);
    }
    for _ in 0..64 {
        run(&runtime);
        for (r, request) in requests.iter_mut().enumerate() {
            while request.subscription.is_some() && poll_once(request, r, bounded, tail) {}
        }
        if requests.iter().all(|r| r.subscription.is_none() || r.end.is_some()) {
            break;
        }
    }
    for (r, request) in requests.iter().enumerate() {
        if request.subscription.is_some() {
            let end = request.end.as_ref().unwrap_or_else(|| panic!("request {r} never ended (R14)"));
            if matches!(end, Event::Done) && !tail {
                let pushed = flights[request.flight].pushed;
                assert_eq!(request.items, (0..pushed).collect::<Vec<_>>(), "request {r} ended Done (R6, R7)");
            }
        }
    }
    requests.clear();
    run(&runtime);
    let stats = manager.stats();
    assert_eq!((stats.active_requests, stats.active_flights), (0, 0), "R16: {stats:?}");
    assert!(manager.is_idle(), "R16: the manager kept state");
    for (f, FlightCtl { gate, script, .. }) in flights.into_iter().enumerate() {
        assert_eq!(gate.probe().alive(), 0, "flight {f}: a start future outlived everything");
        // An aborted flight's gate may still hold the stream the check opened it with.
        drop(gate);
        assert_eq!(script.probe().alive(), 0, "flight {f}: an upstream outlived everything");
    }
}

/// Resumes `request` if it is detached, from the items it read: it must be accepted if the
/// request is live, and its reading goes on where it stopped (checked by [`poll_once`], R6).
fn resume(manager: &Flights<u8, u32, u8, Tokio>, request: &mut Request, r: usize) {
    let Some(id) = request.detached else { return };
    let live = request.live();
    match manager.resume(id, request.items.len() as u64) {
        Ok(subscription) => {
            assert!(live, "request {r}: resumed after it ended");
            assert_eq!(subscription.id(), id);
            request.subscription = Some(subscription);
            request.detached = None;
        }
        Err(ResumeError::UnknownRequest) => {
            assert!(!live, "request {r}: live and detached, but unknown to resume (R18)");
            request.detached = None;
        }
        Err(error) => panic!("request {r}: resume from the items it read refused: {error:?}"),
    }
}

/// Polls `request` once; returns whether it yielded something. Checks R6, R10, R13, R14.
fn poll_once(request: &mut Request, r: usize, bounded: bool, tail: bool) -> bool {
    let Some(subscription) = request.subscription.as_mut() else { return false };
    let mut cx = Context::from_waker(Waker::noop());
    let polled = Pin::new(subscription).poll_next(&mut cx);
    let Poll::Ready(event) = polled else {
        assert!(!request.cancelled || request.end.is_some(), "request {r}: cancelled but Pending (R10)");
        return false;
    };
    match (event, &request.end) {
        (None, Some(_)) => false,
        (None, None) => panic!("request {r}: the stream closed without an end (R14)"),
        (Some(event), Some(end)) => panic!("request {r}: {event:?} after its end {end:?} (R14)"),
        (Some(Event::Item(item)), None) => {
            assert!(!request.cancelled, "request {r}: item {item} after a cancel returned (R10)");
            let expected = request.items.last().map_or(if tail { item } else { 0 }, |last| last + 1);
            assert_eq!(item, expected, "request {r}: items out of order or with a gap (R6)");
            request.items.push(item);
            true
        }
        (Some(end), None) => {
            if request.cancelled {
                assert_eq!(end, Event::Cancelled, "request {r}: a cancel returned, then {end:?} (R10)");
            }
            if let Event::Failed(Failure::Lagged { missed }) = end {
                assert!(bounded && missed > 0, "request {r}: lagged by {missed} without a bound (R15)");
            }
            request.end = Some(end);
            true
        }
    }
}
