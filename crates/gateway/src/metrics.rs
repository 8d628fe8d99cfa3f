//! The gateway's counters and their Prometheus text for `GET /metrics`: the manager's own
//! statistics plus what only the HTTP side sees (upstream failures, passthrough, refusals).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use streamflight_redis::FleetStats;
use streamflight_tokio::Stats;

use crate::http::write_timeout::WriteTimeouts;

/// Counters kept by the HTTP side. Relaxed atomics: each is a monotonic count read for display.
#[derive(Debug, Default)]
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
}

impl Metrics {
    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Every series in the Prometheus text format; the fleet's are 0 without `--redis`
    /// (`leading`: the flights this replica leads for the fleet now).
    pub(crate) fn render(&self, stats: &Stats, fleet: &FleetStats, leading: usize) -> String {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let rows: [(&str, &str, &str, u64); 23] = [
            ("requests_total", "counter", "Coalesced requests admitted.", stats.requests),
            (
                "flights_total",
                "counter",
                "Flights started on this replica: upstream requests made, but for remote joins.",
                stats.flights,
            ),
            (
                "fleet_led_total",
                "counter",
                "Flights this replica led for the whole fleet (--redis): upstream requests made.",
                fleet.led,
            ),
            (
                "remote_joins_total",
                "counter",
                "Flights that followed another replica's live flight (--redis): no upstream request here.",
                fleet.remote_joins,
            ),
            (
                "fleet_alone_total",
                "counter",
                "Flights served by this replica alone while the store was down (--redis).",
                fleet.alone,
            ),
            (
                "store_errors_total",
                "counter",
                "Commands to the fleet's store that failed (--redis).",
                fleet.store_errors,
            ),
            (
                "fleet_lingered_total",
                "counter",
                "Requests served by another replica's finished answer within its linger (--redis): no upstream request.",
                fleet.lingered,
            ),
            (
                "remote_resumed_total",
                "counter",
                "Streams resumed here from another replica's note (--redis).",
                fleet.replays,
            ),
            (
                "leader_lost_total",
                "counter",
                "Flights whose leading replica was lost: this one's lease lapsed, or the one it followed stopped.",
                fleet.leader_lost,
            ),
            ("joined_total", "counter", "Requests served by a flight already in the air.", stats.joined),
            (
                "cancelled_total",
                "counter",
                "Requests cancelled by DELETE or by their client leaving.",
                stats.cancelled,
            ),
            ("aborted_total", "counter", "Flights aborted because nobody was left to listen.", stats.aborted),
            (
                "lingered_total",
                "counter",
                "Requests served by a finished answer within --linger, with no upstream request.",
                stats.lingered,
            ),
            (
                "resumed_total",
                "counter",
                "Streams resumed after their client lost its connection (GET /v1/requests/{id}/events).",
                stats.resumed,
            ),
            (
                "upstream_errors_total",
                "counter",
                "Flights whose upstream failed.",
                read(&self.upstream_errors),
            ),
            ("passthrough_total", "counter", "Requests proxied unchanged.", read(&self.passthrough)),
            (
                "rejected_total",
                "counter",
                "Requests refused over --max-concurrent-requests.",
                read(&self.rejected),
            ),
            (
                "write_timeouts_total",
                "counter",
                "Connections closed because their client took no byte of its response for --write-timeout.",
                self.write_timeouts.count(),
            ),
            (
                "bodies_parsed_off_worker_total",
                "counter",
                "Request bodies over 256 KiB, parsed on the blocking pool rather than an async worker.",
                read(&self.bodies_parsed_off_worker),
            ),
            ("active_flights", "gauge", "Flights in the air.", stats.active_flights as u64),
            ("active_requests", "gauge", "Coalesced requests not yet ended.", stats.active_requests as u64),
            (
                "fleet_leading",
                "gauge",
                "Flights this replica leads for the fleet now (--redis): a stopping replica waits for 0.",
                leading as u64,
            ),
            (
                "in_flight_requests",
                "gauge",
                "Requests being served, streams included.",
                read(&self.in_flight),
            ),
        ];
        let mut text = String::new();
        for (name, kind, help, value) in rows {
            let _ = writeln!(text, "# HELP streamflight_{name} {help}\n# TYPE streamflight_{name} {kind}");
            let _ = writeln!(text, "streamflight_{name} {value}");
        }
        text
    }
}
