//! The process's own series (`process_*`, named as Prometheus's other clients name them), read
//! from `/proc` at each scrape: prometheus-client has no collector for them. Linux only.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads the process's figures when scraped; elsewhere than on Linux, or if `/proc` cannot be
/// read, it writes nothing rather than a made-up 0.
#[derive(Debug)]
pub(super) struct Process;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        #[cfg(target_os = "linux")]
        if let Some(sample) = linux::Sample::read() {
            let cpu = ConstCounter::new(sample.cpu_seconds);
            let help = "CPU time the process used, user and system, in seconds.";
            cpu.encode(encoder.encode_descriptor("process_cpu_seconds", help, None, cpu.metric_type())?)?;
            let gauges = [
                ("process_resident_memory_bytes", "Resident memory, in bytes.", sample.resident_bytes),
                ("process_virtual_memory_bytes", "Virtual memory, in bytes.", sample.virtual_bytes),
                ("process_open_fds", "Open file descriptors.", sample.open_fds),
                ("process_max_fds", "The limit of open file descriptors.", sample.max_fds),
                ("process_threads", "Threads of the process.", sample.threads),
                ("process_start_time_seconds", "Start, in seconds since the Unix epoch.", sample.start_time),
            ];
            for (name, help, value) in gauges {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = &mut encoder;
        Ok(())
    }
}

#[cfg(target_os = "linux")]
mod linux {
    /// One reading of `/proc/self`.
    pub(super) struct Sample {
        pub(super) cpu_seconds: f64,
        pub(super) resident_bytes: f64,
        pub(super) virtual_bytes: f64,
        pub(super) open_fds: f64,
        pub(super) max_fds: f64,
        pub(super) threads: f64,
        pub(super) start_time: f64,
    }

    impl Sample {
        /// `None` if `/proc/self/stat` cannot be read or parsed.
        pub(super) fn read() -> Option<Sample> {
            let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
            // The command name (field 2) is in parentheses and may hold anything: the fields
            // after its last `)` start at field 3, the state.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let field = |n: usize| fields.get(n - 3).and_then(|text| text.parse::<u64>().ok());
            // SAFETY: sysconf only reads its integer argument.
            let (ticks, page) =
                unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
            let (ticks, page) = (ticks.max(1) as f64, page.max(1) as f64);
            let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|text| {
                text.lines().find_map(|line| line.strip_prefix("btime ")?.trim().parse::<u64>().ok())
            });
            let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|text| {
                let line = text.lines().find(|line| line.starts_with("Max open files"))?;
                line.trim_start_matches("Max open files").split_whitespace().next()?.parse::<u64>().ok()
            });
            let open_fds = std::fs::read_dir("/proc/self/fd").map(Iterator::count).unwrap_or(0);
            Some(Sample {
                cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
                threads: field(20)? as f64,
                start_time: boot.unwrap_or(0) as f64 + field(22)? as f64 / ticks,
                virtual_bytes: field(23)? as f64,
                resident_bytes: field(24)? as f64 * page,
                open_fds: open_fds as f64,
                max_fds: max_fds.unwrap_or(0) as f64,
            })
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_process_reads_itself() {
            let sample = Sample::read().expect("/proc/self is readable");
            assert!(sample.threads >= 1.0 && sample.resident_bytes > 0.0 && sample.open_fds >= 3.0);
            assert!(sample.start_time > 1.5e9 && sample.max_fds >= sample.open_fds);
        }
    }
}
