//! streamflight's own memory, counted by a global allocator: bytes per subscriber (100,000 on
//! one flight) and per flight (100,000 at once; 10,000 past their first item), items excluded.
//!
//! The figures BENCHMARKS.md quotes; the goals (at most 256 B per subscriber, 1 KiB per flight
//! with its one request, before its first item and past it) are asserted.
//!
//! `cargo test --release -p streamflight-tokio --test memory -- --nocapture` prints them.
//! One test only, so that no other test allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::task::Poll;

use bytes::Bytes;
use futures::{Stream, StreamExt, stream};
use streamflight_tokio::{Config, Flights, Role, Runtime, Subscription, Tokio};

/// Counts live heap bytes, and logs allocation sizes while `LOGGING` is set.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static LOGGING: AtomicBool = AtomicBool::new(false);
static LOG: [AtomicUsize; 64] = [const { AtomicUsize::new(0) }; 64];
static LOGGED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        if LOGGING.load(Ordering::Relaxed) {
            let at = LOGGED.fetch_add(1, Ordering::Relaxed);
            if let Some(slot) = LOG.get(at) {
                slot.store(layout.size(), Ordering::Relaxed);
            }
        }
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// The sizes of the allocations `f` makes.
fn allocations<R>(f: impl FnOnce() -> R) -> (R, Vec<usize>) {
    LOGGED.store(0, Ordering::Relaxed);
    LOGGING.store(true, Ordering::Relaxed);
    let result = f();
    LOGGING.store(false, Ordering::Relaxed);
    let n = LOGGED.load(Ordering::Relaxed).min(LOG.len());
    (result, LOG[..n].iter().map(|size| size.load(Ordering::Relaxed)).collect())
}

/// The sizes of the allocations made while `f` is awaited (by every task of this thread).
async fn allocations_async<R>(f: impl Future<Output = R>) -> (R, Vec<usize>) {
    LOGGED.store(0, Ordering::Relaxed);
    LOGGING.store(true, Ordering::Relaxed);
    let result = f.await;
    LOGGING.store(false, Ordering::Relaxed);
    let n = LOGGED.load(Ordering::Relaxed).min(LOG.len());
    (result, LOG[..n].iter().map(|size| size.load(Ordering::Relaxed)).collect())
}

const N: usize = 100_000;

/// tokio, counting the manager's timer: how often it sleeps, and wakes.
#[derive(Clone, Default)]
struct CountingRuntime {
    tokio: Tokio,
    sleeps: Arc<AtomicUsize>,
    fired: Arc<AtomicUsize>,
}

impl Runtime for CountingRuntime {
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> bool {
        self.tokio.spawn(task)
    }

    // Not an `async fn`: the timer must not borrow `self`.
    #[allow(clippy::manual_async_fn)]
    fn sleep(&self, duration: std::time::Duration) -> impl Future<Output = ()> + Send + 'static {
        self.sleeps.fetch_add(1, Ordering::Relaxed);
        let (sleep, fired) = (self.tokio.sleep(duration), Arc::clone(&self.fired));
        async move {
            sleep.await;
            fired.fetch_add(1, Ordering::Relaxed);
        }
    }
}
type Manager = Flights<u64, Bytes, ()>;

/// An upstream that never yields, counting the flights that reached it (are streaming).
fn idle_upstream(streaming: Arc<AtomicUsize>) -> impl Stream<Item = Result<Bytes, ()>> + Send {
    let mut counted = false;
    stream::poll_fn(move |_| {
        if !std::mem::replace(&mut counted, true) {
            streaming.fetch_add(1, Ordering::Relaxed);
        }
        Poll::Pending
    })
}

/// Polls every subscription once, so each parks its waker as a waiting reader does.
async fn park(subscriptions: &mut [Subscription<Bytes, ()>]) {
    for subscription in subscriptions {
        assert!(futures::poll!(subscription.next()).is_pending());
    }
}

/// Yields until the manager is idle and every aborted flight task has been dropped.
async fn settle(flights: &Manager) {
    let tasks = tokio::runtime::Handle::current().metrics();
    while !flights.is_idle() || tasks.num_alive_tasks() > 0 {
        tokio::task::yield_now().await;
    }
}

/// Yields until `n` flights are streaming.
async fn until_streaming(streaming: &AtomicUsize, n: usize) {
    while streaming.load(Ordering::Relaxed) < n {
        tokio::task::yield_now().await;
    }
}

#[test]
fn bytes_per_subscriber_and_per_flight() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let inline = size_of::<Subscription<Bytes, ()>>();

        // 100,000 subscribers on one streaming flight.
        let flights = Manager::default();
        let streaming = Arc::new(AtomicUsize::new(0));
        let upstream = idle_upstream(Arc::clone(&streaming));
        let leader = flights.request(0, async move { Ok(upstream) });
        until_streaming(&streaming, 1).await;
        let mut subscribers = Vec::with_capacity(N);
        let before = live();
        for _ in 0..N {
            subscribers.push(flights.request(0, async { Ok(stream::pending()) }));
        }
        let joined = (live() - before) as usize;
        park(&mut subscribers).await;
        let parked = (live() - before) as usize;
        assert!(subscribers.iter().all(|s| s.role() == Role::Joiner));
        let (one, sizes) = allocations(|| flights.request(0, async { Ok(stream::pending()) }));
        let per_subscriber = parked / N + inline;
        println!(
            "per subscriber: {} B heap on joining, {} B once parked, + {inline} B Subscription = {per_subscriber} B; \
             a join allocates {sizes:?}",
            joined / N,
            parked / N,
        );
        drop((one, subscribers, leader));
        settle(&flights).await;

        // 100,000 flights at once, each streaming, each with its one request.
        let flights = Manager::default();
        let streaming = Arc::new(AtomicUsize::new(0));
        let mut leaders = Vec::with_capacity(N);
        let before = live();
        for key in 0..N as u64 {
            let upstream = idle_upstream(Arc::clone(&streaming));
            leaders.push(flights.request(key, async move { Ok(upstream) }));
        }
        until_streaming(&streaming, N).await;
        park(&mut leaders).await;
        let per_flight = (live() - before) as usize / N + inline;
        let upstream = idle_upstream(Arc::clone(&streaming));
        let (one, sizes) = allocations(|| flights.request(u64::MAX, async move { Ok(upstream) }));
        println!(
            "per flight, with its one request, its tokio task and its (idle) upstream: {per_flight} B; \
             without the request: {} B; a lead allocates {sizes:?} (the largest is the task)",
            per_flight - per_subscriber,
        );
        drop((one, leaders));
        settle(&flights).await;

        // 10,000 flights at once, each past its first item (a static one: no heap of its own).
        const M: usize = 10_000;
        let flights = Manager::default();
        let streaming = Arc::new(AtomicUsize::new(0));
        let mut leaders = Vec::with_capacity(M);
        let before = live();
        for key in 0..M as u64 {
            let upstream = stream::iter([Ok(Bytes::from_static(b"token"))]).chain(idle_upstream(Arc::clone(&streaming)));
            leaders.push(flights.request(key, async move { Ok(upstream) }));
        }
        until_streaming(&streaming, M).await;
        for leader in &mut leaders {
            assert!(leader.next().await.is_some_and(|event| matches!(event, streamflight_tokio::Event::Item(_))));
        }
        park(&mut leaders).await;
        let per_flight_with_item = (live() - before) as usize / M + inline;
        let upstream = stream::iter([Ok(Bytes::from_static(b"token"))]).chain(idle_upstream(Arc::clone(&streaming)));
        let (mut one, _) = allocations(|| flights.request(u64::MAX, async move { Ok(upstream) }));
        let (first, sizes) = allocations_async(one.next()).await;
        assert!(matches!(first, Some(streamflight_tokio::Event::Item(_))));
        println!(
            "per flight past its first item, with its one request: {per_flight_with_item} B \
             (the first item allocates {sizes:?} while the flight task runs)"
        );
        drop((one, leaders));
        settle(&flights).await;

        // 100,000 requests of one flight detached (R18): what each costs while away, and how
        // often the manager's one timer wakes to let them all go.
        let window = std::time::Duration::from_millis(200);
        let counting = CountingRuntime::default();
        let flights: streamflight_core::driver::Flights<u64, Bytes, (), CountingRuntime> =
            streamflight_core::driver::Flights::with_runtime(Config::default().resume_window(window), counting.clone());
        let streaming = Arc::new(AtomicUsize::new(0));
        let upstream = idle_upstream(Arc::clone(&streaming));
        let mut subscriptions = vec![flights.request(0, async move { Ok(upstream) })];
        until_streaming(&streaming, 1).await;
        subscriptions.extend((1..N).map(|_| flights.request(0, async { Ok(stream::pending()) })));
        park(&mut subscriptions).await;
        let mut ids = Vec::with_capacity(N);
        let before = live();
        ids.extend(subscriptions.drain(..).map(Subscription::detach));
        let per_detached = (live() - before) / N as isize;
        assert!(ids.iter().all(|&id| flights.resume(id, u64::MAX).is_err()), "every one still detached");
        let start = std::time::Instant::now();
        while !flights.is_idle() {
            tokio::task::yield_now().await;
        }
        let (arms, fires) = (counting.sleeps.load(Ordering::Relaxed), counting.fired.load(Ordering::Relaxed));
        println!(
            "100,000 detached requests: {per_detached:+} B of heap each while away (the reader's cell and \
             waker slot given back; a resume window and the history's handle kept); all let go {:?} after \
             the last detach; the manager's timer slept {arms} times, woke {fires} times",
            start.elapsed()
        );
        assert!(arms < N / 100, "one timer per manager, not one per request: {arms} sleeps");

        assert!(per_subscriber <= 256, "goal: at most 256 B per subscriber, got {per_subscriber}");
        assert!(per_flight - per_subscriber <= 1024, "goal: at most 1 KiB per flight, got {per_flight}");
        assert!(
            per_flight_with_item <= 1024,
            "goal: at most 1 KiB per flight past its first item, with its request, got {per_flight_with_item}"
        );
    });
}
