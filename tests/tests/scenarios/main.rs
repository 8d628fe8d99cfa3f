//! Every scenario of the suite, each written once and run on tokio, async-std and smol.
//! `rules` has one scenario (or more) per rule R1-R16; `semantics` the adapter guarantees; `stress` the load run;
//! `outside` the managers used from outside any runtime (`Flights::with_runtime`, the default runtime);
//! `time` the rules with time, linger (R17) and detach/resume (R18); `hooks` what an observer hears;
//! `bytes` the bounds in bytes (R15, R17); `sse` an upstream's events read through the decoder.

mod bytes;
mod hooks;
mod outside;
mod rules;
mod semantics;
mod sse;
mod stress;
mod time;

use std::future::Future;

use streamflight_tests::doubles::{Gate, Probed, Script, ScriptStream};
use streamflight_tests::{Config, Flights, TestRuntime};

/// The error type of the scenarios' upstreams.
type Error = &'static str;

/// The manager most scenarios use: string keys, numbered items.
type Fl<R> = Flights<&'static str, u64, Error, R>;

/// The upstream of most scenarios: a probed, scripted stream.
type Upstream = Probed<ScriptStream<u64, Error>>;

/// A manager with `config`, on the running scenario's runtime.
fn manager<R: TestRuntime>(config: Config) -> Fl<R> {
    Flights::with_runtime(config, R::scenario())
}

/// A closed preparation gate for scripted upstreams.
fn gate() -> Gate<Upstream, Error> {
    Gate::new()
}

/// A `start` future that prepares at once and returns a stream of `script`.
fn ready(script: &Script<u64, Error>) -> impl Future<Output = Result<Upstream, Error>> + Send + 'static {
    let script = script.clone();
    async move { Ok(script.stream()) }
}

/// `range` as the items a subscriber should read.
fn seq(range: std::ops::Range<u64>) -> Vec<u64> {
    range.collect()
}

/// A subscription of [`Fl`].
type Sub = streamflight_tests::Subscription<u64, Error>;

/// The next event of `sub` (within the deadline).
async fn next<R: TestRuntime>(sub: &mut Sub) -> streamflight_tests::Event<u64, Error> {
    streamflight_tests::wait::next_event::<R, u64, Error>(sub).await
}

/// Reads `sub` to its end, checking that `None` follows it forever (R14).
async fn to_end<R: TestRuntime>(sub: &mut Sub) -> (Vec<u64>, streamflight_tests::Event<u64, Error>) {
    streamflight_tests::wait::read_to_end::<R, u64, Error>(sub).await
}

/// Checks that the next event of `sub` is `Item(item)`.
async fn expect_item<R: TestRuntime>(sub: &mut Sub, item: u64) {
    assert_eq!(next::<R>(sub).await, streamflight_tests::Event::Item(item), "request {}", sub.id());
}

/// The contract's static promises, on every adapter: `Flights` is a cheap `Clone + Send + Sync`
/// handle, `Subscription` a `Stream + Unpin + Send` (checked when this compiles).
#[allow(dead_code)]
fn static_promises() {
    fn handle<T: Clone + Send + Sync + 'static>() {}
    fn stream<T: futures::Stream + Unpin + Send + 'static>() {}
    handle::<streamflight_tokio::Flights<String, String, String>>();
    handle::<streamflight_async_std::Flights<String, String, String>>();
    stream::<streamflight_tokio::Subscription<String, String>>();
    stream::<streamflight_async_std::Subscription<String, String>>();
    handle::<streamflight_smol::Flights<String, String, String>>();
    stream::<streamflight_smol::Subscription<String, String>>();
    handle::<Fl<streamflight_tests::Tokio>>();
    stream::<Sub>();
}
