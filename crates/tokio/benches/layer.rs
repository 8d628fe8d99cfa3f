//! The tower layer against the same axum handler without it, in the same run (criterion;
//! figures and the command in BENCHMARKS.md): what a user pays to put [`CoalesceLayer`] in
//! front of a streaming route, and what a burst of identical requests gains.
//!
//! - `layer-unique`: one request at a time, each with its own body (nothing to share): the
//!   layer's cost per request (reading and keying the body, a flight, the shared frames).
//! - `layer-burst`: 64 identical requests at once, each read to its end by its own task, the
//!   handler's first frame 2 ms away (its upstream's latency): the handler runs once behind
//!   the layer, 64 times without it, and the burst takes about as long either way.
//!
//! Both call the router as a tower service in process (no sockets: the layer's cost alone),
//! on a tokio multi-thread runtime with 2 workers. The handler streams 8 frames of 64 bytes,
//! yielding to the runtime before each, as an upstream's chunks arrive.

use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use futures::StreamExt;
use http_body_util::BodyExt;
use streamflight_tokio::Config;
use streamflight_tokio::tower::CoalesceLayer;
use tokio::runtime::Runtime;
use tower_service::Service;

/// Requests in a burst.
const BURST: usize = 64;
/// Frames of each answer, and their size.
const FRAMES: usize = 8;
const FRAME: &[u8] = &[b'x'; 64];

/// How many times the handler ran: what the layer saves.
static CALLS: AtomicU64 = AtomicU64::new(0);

/// How long the handler's upstream takes to its first frame in the burst (a model's first
/// token is tens of milliseconds or more): long enough for a burst to be in flight at once.
const FIRST_FRAME: Duration = Duration::from_millis(2);

/// A streaming handler that knows nothing of coalescing; for a burst's prompt its first frame
/// comes after [`FIRST_FRAME`].
async fn answer(prompt: Bytes) -> Body {
    CALLS.fetch_add(1, Relaxed);
    if prompt.starts_with(b"{\"prompt\": \"burst") {
        tokio::time::sleep(FIRST_FRAME).await;
    }
    let frames = futures::stream::iter(0..FRAMES).then(|_| async {
        tokio::task::yield_now().await;
        Ok::<_, std::convert::Infallible>(Bytes::from_static(FRAME))
    });
    Body::from_stream(frames)
}

fn router(layered: bool) -> Router {
    let route = post(answer);
    let route = if layered { route.layer(CoalesceLayer::new(Config::default())) } else { route };
    Router::new().route("/answer", route)
}

/// Sends `body` to `router` and reads the response to its end: the bytes read.
async fn send(mut router: Router, body: String) -> usize {
    let request = http::Request::post("/answer").body(Body::from(body)).expect("a request");
    poll_fn(|cx| <Router as Service<http::Request<Body>>>::poll_ready(&mut router, cx)).await.expect("ready");
    let response = router.call(request).await.expect("a response");
    response.into_body().collect().await.expect("the body").to_bytes().len()
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

fn layer(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("layer-unique");
    group.sample_size(20).measurement_time(Duration::from_secs(2));
    for (name, layered) in [("direct", false), ("coalesced", true)] {
        let router = router(layered);
        let mut n = 0u64;
        group.bench_function(BenchmarkId::new(name, "1"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        n += 1;
                        let body = format!(r#"{{"prompt": "unique {n}"}}"#);
                        assert_eq!(send(router.clone(), body).await, FRAMES * FRAME.len());
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("layer-burst");
    group.sample_size(20).sampling_mode(SamplingMode::Flat).measurement_time(Duration::from_secs(2));
    for (name, layered) in [("direct", false), ("coalesced", true)] {
        let router = router(layered);
        let (mut bursts, before) = (0u64, CALLS.load(Relaxed));
        group.bench_function(BenchmarkId::new(name, BURST), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    bursts += 1;
                    let body = format!(r#"{{"prompt": "burst {bursts}"}}"#);
                    let started = Instant::now();
                    rt.block_on(async {
                        let clients: Vec<_> =
                            (0..BURST).map(|_| tokio::spawn(send(router.clone(), body.clone()))).collect();
                        for client in clients {
                            assert_eq!(client.await.expect("a client"), FRAMES * FRAME.len());
                        }
                    });
                    spent += started.elapsed();
                }
                spent
            })
        });
        let calls = CALLS.load(Relaxed) - before;
        eprintln!(
            "layer-burst/{name}: {:.1} handler calls per burst of {BURST}",
            calls as f64 / bursts as f64
        );
    }
    group.finish();
}

criterion_group!(benches, layer);
criterion_main!(benches);
