//! The gateway's metrics and their OpenMetrics text for `GET /metrics`: the flight manager's and
//! the fleet's counts read at each scrape, and what each request recorded once, when it ended.
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client, rather than the
//! `metrics` facade with its exporter: label sets are typed structs (a label cannot be misspelt
//! or forgotten at a call site), the registry is the gateway's own (no process-wide recorder:
//! two gateways in one test process keep their counts apart), and a request's update is a hash
//! of a few `&'static str`s and an atomic add or a short lock, with no string built per request.
//! It writes OpenMetrics text (`# EOF` at the end, `application/openmetrics-text`), which
//! Prometheus reads; a counter's sample is its family's name with `_total`, as before.
//!
//! # Series
//!
//! | series | type | labels | meaning |
//! |---|---|---|---|
//! | `streamflight_requests_total` | counter | | Coalesced requests admitted. |
//! | `streamflight_flights_total` | counter | | Flights started here: upstream requests made, but for remote joins. |
//! | `streamflight_joined_total` | counter | | Requests served by a flight already in the air. |
//! | `streamflight_cancelled_total` | counter | | Requests cancelled by `DELETE` or by their client leaving. |
//! | `streamflight_aborted_total` | counter | | Flights aborted because nobody was left to listen. |
//! | `streamflight_lingered_total` | counter | | Requests served by a finished answer within `--linger`. |
//! | `streamflight_evicted_total` | counter | | Finished answers released before their `--linger` ended, to keep within `--linger-budget`. |
//! | `streamflight_resumed_total` | counter | | Streams resumed after their client lost its connection. |
//! | `streamflight_upstream_errors_total` | counter | | Flights whose upstream failed. |
//! | `streamflight_passthrough_total` | counter | | Requests proxied unchanged. |
//! | `streamflight_rejected_total` | counter | | Requests refused over `--max-concurrent-requests`. |
//! | `streamflight_write_timeouts_total` | counter | | Connections closed by `--write-timeout`. |
//! | `streamflight_bodies_parsed_off_worker_total` | counter | | Bodies over 256 KiB parsed on the blocking pool. |
//! | `streamflight_fleet_led_total` | counter | | `--redis`: flights led for the whole fleet. |
//! | `streamflight_remote_joins_total` | counter | | `--redis`: flights that followed another replica's. |
//! | `streamflight_fleet_alone_total` | counter | | `--redis`: flights served alone while the store was down. |
//! | `streamflight_store_errors_total` | counter | | `--redis`: store commands that failed. |
//! | `streamflight_fleet_lingered_total` | counter | | `--redis`: requests served by another replica's lingering answer. |
//! | `streamflight_remote_resumed_total` | counter | | `--redis`: streams resumed from another replica's note. |
//! | `streamflight_leader_lost_total` | counter | | `--redis`: flights whose leading replica was lost. |
//! | `streamflight_active_flights` | gauge | | Flights in the air. |
//! | `streamflight_active_requests` | gauge | | Coalesced requests not yet ended. |
//! | `streamflight_fleet_leading` | gauge | | `--redis`: flights led for the fleet now (a stopping replica waits for 0). |
//! | `streamflight_in_flight_requests` | gauge | | Requests being served, streams included. |
//! | `streamflight_responses_total` | counter | `endpoint`, `role`, `outcome`, `status_class`, `model` | Requests to the public port, counted when their response ended (one per access log line). |
//! | `streamflight_first_event_seconds` | histogram | `endpoint`, `role`, `model` | From a request's arrival to the first event its client was sent (a non-streaming client: its whole answer). |
//! | `streamflight_response_duration_seconds` | histogram | `endpoint`, `role`, `outcome`, `model` | From a request's arrival to the end of its response body. |
//! | `streamflight_answer_events` | histogram | `endpoint`, `role`, `outcome` | Events of one coalesced answer a client was sent (answers with at least one). |
//! | `streamflight_upstream_head_seconds` | histogram | `endpoint`, `status_class` | From sending an upstream request (a flight's, or a passthrough) to its response head. |
//! | `streamflight_flights_ended_total` | counter | `outcome` | Flights ended here (`done`, `failed`, `panicked`, `no_runtime`, `aborted`), told by the flight manager's hooks. |
//! | `streamflight_flight_requests` | histogram | | Requests each flight served by its end, its leader included (1: nobody shared it); from the hooks. |
//! | `streamflight_build_info` | info | `version`, `commit` | Always 1: what is running. |
//! | `process_cpu_seconds_total` | counter | | CPU time, user and system (Linux). |
//! | `process_resident_memory_bytes` | gauge | | Resident memory (Linux). |
//! | `process_virtual_memory_bytes` | gauge | | Virtual memory (Linux). |
//! | `process_open_fds`, `process_max_fds` | gauge | | Open file descriptors, and their limit (Linux). |
//! | `process_threads` | gauge | | Threads (Linux). |
//! | `process_start_time_seconds` | gauge | | Start, in seconds since the Unix epoch (Linux). |
//!
//! Labels, each of a few values:
//! - `endpoint`: the dialect that coalesced the request (`chat`, `completions`, `embeddings`,
//!   `responses`, `messages`), `passthrough` (proxied unchanged, G3), or `gateway` (its own
//!   paths: `/metrics`, `/healthz`, `/readyz`, a cancel, a request refused before its dialect).
//! - `role`: `leader`, `follower` or `joiner` in its flight; `none` without one.
//! - `outcome`: `done` (answered whole), `failed` (an error answer or event, a status of 400
//!   or more, a broken body), `cancelled` (`DELETE`, or its client left), `detached` (its client
//!   left within `--resume-window`: it may come back).
//! - `status_class`: `1xx` to `5xx` (`none` if no response was made).
//! - `model`: the request's `model`, if `--metrics-models` lists it (else `other`); without
//!   that flag, the first [`models::MODELS_CAP`] distinct names seen, `other` after them; empty for a
//!   request without one (passthrough, the gateway's own paths).
//!
//! Seconds are bucketed from 1 ms to 17 min, doubling ([`SECONDS`]); events from 1 to 65,536.

mod flights;
mod models;
mod process;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use streamflight_redis::FleetStats;
use streamflight_tokio::Stats;

use crate::http::write_timeout::WriteTimeouts;

pub(crate) use models::Models;

/// How the text is served: OpenMetrics, which Prometheus asks for and reads.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Buckets of the seconds histograms: 1 ms doubling 21 times, to 1,048 s (past 10 minutes).
pub(crate) const SECONDS: (f64, f64, u16) = (0.001, 2.0, 21);

/// Buckets of the events histogram: 1 doubling 17 times, to 65,536 events.
const EVENTS: (f64, f64, u16) = (1.0, 2.0, 17);

/// Labels of `streamflight_responses_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Responded {
    endpoint: &'static str,
    role: &'static str,
    outcome: &'static str,
    status_class: &'static str,
    model: Arc<str>,
}

/// Labels of `streamflight_first_event_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FirstEvent {
    endpoint: &'static str,
    role: &'static str,
    model: Arc<str>,
}

/// Labels of `streamflight_response_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Lasted {
    endpoint: &'static str,
    role: &'static str,
    outcome: &'static str,
    model: Arc<str>,
}

/// Labels of `streamflight_answer_events`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answered {
    endpoint: &'static str,
    role: &'static str,
    outcome: &'static str,
}

/// Labels of `streamflight_upstream_head_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Headed {
    endpoint: &'static str,
    status_class: &'static str,
}

/// A histogram family, its buckets made by a plain function.
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds() -> Histogram {
    let (start, factor, count) = SECONDS;
    Histogram::new(exponential_buckets(start, factor, count))
}

fn events() -> Histogram {
    let (start, factor, count) = EVENTS;
    Histogram::new(exponential_buckets(start, factor, count))
}

/// What one request's record says when its response is done ([`Metrics::finished`]).
#[derive(Debug)]
pub(crate) struct Finished<'a> {
    /// Its `endpoint` label.
    pub endpoint: &'static str,
    /// Its `role` label.
    pub role: &'static str,
    /// Its `outcome` label.
    pub outcome: &'static str,
    /// The response's status (0: none was made).
    pub status: u16,
    /// Its `model` label ([`Models::label`]).
    pub model: &'a Arc<str>,
    /// From its arrival to the first event its client was sent, if one was.
    pub first_event: Option<Duration>,
    /// From its arrival to the end of its response body.
    pub duration: Duration,
    /// Events of a coalesced answer its client was sent.
    pub events: u32,
}

/// Every series but the process's: counters kept by the HTTP side (relaxed atomics, each a
/// monotonic count read for display), and the families each request updates once.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Flights whose upstream failed (connect, timeout, non-2xx, broken stream, in-stream error).
    pub upstream_errors: AtomicU64,
    /// Requests proxied unchanged (G3).
    pub passthrough: AtomicU64,
    /// Requests refused with 503 because `--max-concurrent-requests` were already served.
    pub rejected: AtomicU64,
    /// Requests being served now (streams included).
    pub in_flight: AtomicU64,
    /// Connections closed because their client took no byte of its response for
    /// `--write-timeout`; counted by the connection layer, which shares it.
    pub write_timeouts: WriteTimeouts,
    /// Coalesced request bodies over `OFF_WORKER_BYTES` (256 KiB), parsed on the blocking pool.
    pub bodies_parsed_off_worker: AtomicU64,
    /// The `model` label's values.
    pub models: Models,
    responses: Family<Responded, Counter>,
    first_event: Histograms<FirstEvent>,
    duration: Histograms<Lasted>,
    events: Histograms<Answered>,
    upstream_head: Histograms<Headed>,
    /// The series the flight manager's hooks feed (`flights.rs`).
    flights: flights::Flights,
    /// The families above, `streamflight_build_info` and the process's series.
    registry: Registry,
}

impl Metrics {
    /// Empty counts; `models` is `--metrics-models` (empty: the first [`models::MODELS_CAP`] seen).
    pub(crate) fn new(models: &[String]) -> Metrics {
        let responses = Family::<Responded, Counter>::default();
        let first_event = Histograms::<FirstEvent>::new_with_constructor(seconds as fn() -> Histogram);
        let duration = Histograms::<Lasted>::new_with_constructor(seconds as fn() -> Histogram);
        let answer_events = Histograms::<Answered>::new_with_constructor(events as fn() -> Histogram);
        let upstream_head = Histograms::<Headed>::new_with_constructor(seconds as fn() -> Histogram);
        let mut registry = Registry::default();
        // Counters are named without `_total`: the text adds it to their samples. The registry
        // ends each help with a full stop of its own.
        registry.register(
            "streamflight_responses",
            "Requests to the public port, counted when their response ended",
            responses.clone(),
        );
        registry.register(
            "streamflight_first_event_seconds",
            "From a request's arrival to the first event its client was sent",
            first_event.clone(),
        );
        registry.register(
            "streamflight_response_duration_seconds",
            "From a request's arrival to the end of its response body",
            duration.clone(),
        );
        registry.register(
            "streamflight_answer_events",
            "Events of one coalesced answer a client was sent",
            answer_events.clone(),
        );
        registry.register(
            "streamflight_upstream_head_seconds",
            "From sending an upstream request to its response head",
            upstream_head.clone(),
        );
        let build = [("version", env!("CARGO_PKG_VERSION")), ("commit", env!("STREAMFLIGHT_COMMIT"))];
        // An info family's sample is its name with `_info`.
        registry.register("streamflight_build", "The version running, and its commit", Info::new(build));
        registry.register_collector(Box::new(process::Process));
        let flights = flights::Flights::new(&mut registry, events());
        Metrics {
            upstream_errors: AtomicU64::new(0),
            passthrough: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            write_timeouts: WriteTimeouts::default(),
            bodies_parsed_off_worker: AtomicU64::new(0),
            models: Models::new(models),
            responses,
            first_event,
            duration,
            events: answer_events,
            upstream_head,
            flights,
            registry,
        }
    }

    /// The observer to give the flight manager ([`Config::observer`](streamflight_tokio::Config::observer)):
    /// it feeds `streamflight_flights_ended_total` and `streamflight_flight_requests`.
    pub(crate) fn observer(&self) -> Arc<dyn streamflight_tokio::Observer> {
        Arc::new(self.flights.clone())
    }

    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// One request's response is done: counted, and its times observed.
    pub(crate) fn finished(&self, done: &Finished<'_>) {
        let Finished { endpoint, role, outcome, status, model, .. } = *done;
        let status_class = status_class(status);
        self.responses
            .get_or_create(&Responded { endpoint, role, outcome, status_class, model: Arc::clone(model) })
            .inc();
        if let Some(first) = done.first_event {
            self.first_event
                .get_or_create(&FirstEvent { endpoint, role, model: Arc::clone(model) })
                .observe(first.as_secs_f64());
        }
        self.duration
            .get_or_create(&Lasted { endpoint, role, outcome, model: Arc::clone(model) })
            .observe(done.duration.as_secs_f64());
        if done.events > 0 {
            self.events.get_or_create(&Answered { endpoint, role, outcome }).observe(f64::from(done.events));
        }
    }

    /// An upstream request of `endpoint` got its response head, of `status`, `took` after it
    /// was sent.
    pub(crate) fn upstream_head(&self, endpoint: &'static str, status: u16, took: Duration) {
        let status_class = status_class(status);
        self.upstream_head.get_or_create(&Headed { endpoint, status_class }).observe(took.as_secs_f64());
    }

    /// Every series as OpenMetrics text; the fleet's are 0 without `--redis` (`leading`: the
    /// flights this replica leads for the fleet now).
    pub(crate) fn render(&self, stats: &Stats, fleet: &FleetStats, leading: usize) -> String {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counts = Counts {
            counters: [
                ("requests", "Coalesced requests admitted.", stats.requests),
                (
                    "flights",
                    "Flights started on this replica: upstream requests made, but for remote joins.",
                    stats.flights,
                ),
                (
                    "fleet_led",
                    "Flights this replica led for the whole fleet (--redis): upstream requests made.",
                    fleet.led,
                ),
                (
                    "remote_joins",
                    "Flights that followed another replica's live flight (--redis): no upstream request here.",
                    fleet.remote_joins,
                ),
                (
                    "fleet_alone",
                    "Flights served by this replica alone while the store was down (--redis).",
                    fleet.alone,
                ),
                ("store_errors", "Commands to the fleet's store that failed (--redis).", fleet.store_errors),
                (
                    "fleet_lingered",
                    "Requests served by another replica's finished answer within its linger (--redis): no upstream request.",
                    fleet.lingered,
                ),
                (
                    "remote_resumed",
                    "Streams resumed here from another replica's note (--redis).",
                    fleet.replays,
                ),
                (
                    "leader_lost",
                    "Flights whose leading replica was lost: this one's lease lapsed, or the one it followed stopped.",
                    fleet.leader_lost,
                ),
                ("joined", "Requests served by a flight already in the air.", stats.joined),
                ("cancelled", "Requests cancelled by DELETE or by their client leaving.", stats.cancelled),
                ("aborted", "Flights aborted because nobody was left to listen.", stats.aborted),
                (
                    "evicted",
                    "Finished answers that stopped lingering before --linger ended, to keep within --linger-budget.",
                    stats.evicted,
                ),
                (
                    "lingered",
                    "Requests served by a finished answer within --linger, with no upstream request.",
                    stats.lingered,
                ),
                (
                    "resumed",
                    "Streams resumed after their client lost its connection (GET /v1/requests/{id}/events).",
                    stats.resumed,
                ),
                ("upstream_errors", "Flights whose upstream failed.", read(&self.upstream_errors)),
                ("passthrough", "Requests proxied unchanged.", read(&self.passthrough)),
                ("rejected", "Requests refused over --max-concurrent-requests.", read(&self.rejected)),
                (
                    "write_timeouts",
                    "Connections closed because their client took no byte of its response for --write-timeout.",
                    self.write_timeouts.count(),
                ),
                (
                    "bodies_parsed_off_worker",
                    "Request bodies over 256 KiB, parsed on the blocking pool rather than an async worker.",
                    read(&self.bodies_parsed_off_worker),
                ),
            ],
            gauges: [
                ("active_flights", "Flights in the air.", stats.active_flights as u64),
                ("active_requests", "Coalesced requests not yet ended.", stats.active_requests as u64),
                (
                    "fleet_leading",
                    "Flights this replica leads for the fleet now (--redis): a stopping replica waits for 0.",
                    leading as u64,
                ),
                ("in_flight_requests", "Requests being served, streams included.", read(&self.in_flight)),
            ],
        };
        let mut now = Registry::with_prefix("streamflight");
        now.register_collector(Box::new(counts));
        let mut text = String::new();
        // Writing to a String cannot fail, nor can these encoders on their own.
        let _ = encode_registry(&mut text, &now)
            .and_then(|()| encode_registry(&mut text, &self.registry))
            .and_then(|()| encode_eof(&mut text));
        text
    }
}

/// A status's class, as the `status_class` label has it.
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

/// The counts read at one scrape: (name without the prefix nor `_total`, help, value).
#[derive(Debug)]
struct Counts {
    counters: [(&'static str, &'static str, u64); 20],
    gauges: [(&'static str, &'static str, u64); 4],
}

impl Collector for Counts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for &(name, help, value) in &self.counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
        }
        for &(name, help, value) in &self.gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_keeps_its_name_and_the_new_ones_have_labels() {
        let metrics = Metrics::new(&["gpt-x".to_owned()]);
        let model = metrics.models.label(Some("gpt-x"));
        metrics.finished(&Finished {
            endpoint: "chat",
            role: "leader",
            outcome: "done",
            status: 200,
            model: &model,
            first_event: Some(Duration::from_millis(3)),
            duration: Duration::from_millis(40),
            events: 12,
        });
        metrics.upstream_head("chat", 200, Duration::from_millis(2));
        let text = metrics.render(&Stats::default(), &FleetStats::default(), 0);
        for line in [
            "streamflight_requests_total 0",
            "streamflight_bodies_parsed_off_worker_total 0",
            "streamflight_in_flight_requests 0",
            "streamflight_fleet_leading 0",
            r#"streamflight_responses_total{endpoint="chat",role="leader",outcome="done",status_class="2xx",model="gpt-x"} 1"#,
            r#"streamflight_first_event_seconds_count{endpoint="chat",role="leader",model="gpt-x"} 1"#,
            r#"streamflight_first_event_seconds_bucket{le="0.004",endpoint="chat",role="leader",model="gpt-x"} 1"#,
            r#"streamflight_answer_events_count{endpoint="chat",role="leader",outcome="done"} 1"#,
            r#"streamflight_upstream_head_seconds_count{endpoint="chat",status_class="2xx"} 1"#,
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        let build = format!(
            r#"streamflight_build_info{{version="{}",commit="{}"}} 1"#,
            env!("CARGO_PKG_VERSION"),
            env!("STREAMFLIGHT_COMMIT")
        );
        assert!(text.lines().any(|l| l == build), "{text}");
        assert_eq!(text.matches("streamflight_requests_total ").count(), 1);
        assert!(text.lines().all(|line| !line.ends_with("..")), "one full stop a help: {text}");
        // The buckets reach past ten minutes.
        assert!(text.contains(r#"le="1048.576""#), "{text}");
    }
}
