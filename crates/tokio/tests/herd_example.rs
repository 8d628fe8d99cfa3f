//! The herd demo, run small: its table's figures must add up (one upstream call per distinct
//! prompt, every request ended once, a cancelled leader's followers finished).

#[path = "../examples/herd.rs"]
#[allow(dead_code)]
mod herd;

use std::time::Duration;

fn small(seed: u64) -> herd::Options {
    herd::Options {
        clients: 300,
        keys: 7,
        tokens: 12,
        cancel: 0.2,
        prepare: Duration::from_millis(40),
        per_token: Duration::from_millis(3),
        seed,
        progress: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_upstream_call_per_distinct_prompt_and_every_figure_adds_up() {
    for seed in [1, 2, 3] {
        let options = small(seed);
        let report = herd::run(&options).await;
        let table = report.to_string();
        assert_eq!(report.requests, 307, "{table}");
        assert_eq!(report.distinct_keys, 8, "{table}");
        assert_eq!(
            report.upstream_calls, report.distinct_keys,
            "one upstream call per distinct prompt: {table}"
        );
        assert_eq!(report.stats.flights, report.distinct_keys, "{table}");
        assert_eq!(report.stats.requests, report.requests, "{table}");
        assert_eq!(report.stats.joined, 299, "the herd joined its leader's flight: {table}");
        assert_eq!(report.done + report.cancelled + report.failed, report.requests, "{table}");
        assert_eq!(report.failed, 0, "{table}");
        assert_eq!(report.cancelled, report.stats.cancelled, "{table}");
        assert!(report.cancelled >= 1, "the herd's leader at least: {table}");
        assert_eq!((report.stats.active_flights, report.stats.active_requests), (0, 0), "{table}");
        // The herd's leader is cancelled; the rest of its flight still finished.
        assert!(report.leaders_cancelled >= 1, "{table}");
        assert!(report.orphans_finished >= 200, "{table}");
        // Whoever finished got every token; cancelled requests got fewer.
        assert!(report.items_delivered >= report.done * options.tokens as u64, "{table}");
        assert!(report.items_delivered < report.requests * options.tokens as u64, "{table}");
        assert!(report.delivered_bytes > 10 * report.upstream_bytes, "{table}");
        let (p50, p99) = report.first_item;
        assert!(options.prepare <= p50 && p50 <= p99, "{table}");
        // The model's last token comes `prepare + tokens * per_token` after the leader's call
        // (minus the few that requests fired later than the leader's were spared).
        assert!(
            report.to_done.0 >= options.prepare + options.per_token * (options.tokens as u32 - 2),
            "{table}"
        );
        assert!(report.peak_memory > 0, "{table}");
        for line in ["upstream streams opened", "bytes that never left the upstream", "peak memory (VmHWM)"] {
            assert!(table.contains(line), "{line}: {table}");
        }
        let requests = table.lines().find(|l| l.starts_with("| requests")).expect("a requests row");
        assert_eq!(requests.matches(" 307 |").count(), 2, "{table}");
    }
}

#[test]
fn flags_are_parsed_and_bad_ones_explained() {
    let args = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let options = herd::Options::parse(args("--clients 5 --keys 2 --tokens 3 --cancel 0.5 --quiet")).unwrap();
    assert_eq!((options.clients, options.keys, options.tokens, options.cancel), (5, 2, 3, 0.5));
    assert!(!options.progress);
    let defaults = herd::Options::parse(args("")).unwrap();
    assert_eq!((defaults.clients, defaults.keys), (10_000, 100));
    assert!(herd::Options::parse(args("--clients many")).unwrap_err().contains("--clients"));
    assert!(herd::Options::parse(args("--tokens")).unwrap_err().contains("needs a value"));
    assert!(herd::Options::parse(args("--help")).unwrap_err().starts_with("usage"));
}
