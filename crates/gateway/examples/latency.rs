//! Gateway latency (issue 10's latency benchmark, DESIGN.md G9): what the gateway adds to a
//! request, measured side by side in one run against the same upstream reached directly.
//!
//! ```text
//! cargo build --release -p streamflight-gateway
//! cargo run --release -p streamflight-gateway --example latency
//! cargo run --release -p streamflight-gateway --example latency -- --dialect all --sections 1,2
//! ```
//!
//! The upstream is the gateway binary itself with its simulated model (it answers like an OpenAI
//! server: chunks, `[DONE]`, a JSON completion; and as the Responses and Messages APIs do), with
//! zero delays and 10 tokens unless said otherwise; "through" is a second gateway in front of it
//! (`--upstream http://127.0.0.1:P/v1`). Both are child processes of the gateway binary
//! (`--gateway`) on free ports of 127.0.0.1, killed when this program
//! ends (a guard kills on drop, panics included; on Linux they also die with this process).
//!
//! Sections, each direct against through in the same run:
//!
//! 1. Non-streaming: unique requests (a counter in the prompt, so nothing coalesces) at a fixed
//!    rate, open loop: a pacer thread hands each request out at its scheduled instant and its
//!    latency is counted from that instant (no coordinated omission), over a fixed pool of
//!    keep-alive HTTP/1.1 connections (one `reqwest` client per connection).
//! 2. Streaming, the same load with `"stream": true`: time to first event, time between events,
//!    whole stream.
//!
//!    Sections 1 and 2 speak Chat Completions unless `--dialect` says `responses` (OpenAI's
//!    Responses API), `messages` (Anthropic's Messages) or `all` (each in turn, then a table of
//!    what the gateway added to each). A stream counts as whole when its dialect's last event came
//!    (`[DONE]`, `response.completed`, `message_stop`): only Chat has a frame after its answer;
//!    the others' bodies just end.
//!
//!    2b. Between two events, on the very same events: an upstream that paces its tokens, and
//!    each request sent twice at once, direct and through. The upstream is itself a gateway, so
//!    it serves both from one flight (the request asks for usage, as the gateway always asks its
//!    upstream, so the two are the same request): each event leaves it once for both paths,
//!    and what the gateway adds to an event, or to a gap between two, is measured without the
//!    upstream's own timer jitter in it.
//! 3. The official Python SDK streaming 10 tokens, 200 sequential requests on one client
//!    (`conformance/latency_sdk.py`, run with the conformance venv's python; skipped, saying why,
//!    when that venv is missing: `crates/gateway/conformance/run` creates it).
//! 4. A burst of identical streams through the gateway, one connection each (kept open, as an
//!    SDK's pool would), all joining one flight before the upstream's first token: how long
//!    after the earliest first event each client gets its own, both as the kernel stamped its
//!    arrival at the client's socket (`SO_TIMESTAMPNS`, Linux) and as the client read it.
//! 5. What observability costs (issue 24): unique requests, non-streaming then streaming, through
//!    front gateways that differ only in what they observe: metrics with logs off, metrics with
//!    the JSON access log (to a file), and with traces exported over OTLP/HTTP as well (to a sink
//!    in this process); and first, with `--baseline-gateway`, a build without this observability.
//!    Each runs in turn, the order rotated every round; the table shows each one's median CPU
//!    per request and its ratio to the first.
//!
//! Timings are the machine's and noisy; nothing here asserts one. Flags: `--help`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;

mod common;
use common::*;

/// "Nothing added between two events", in ms: what this machine's noise allows. A proxy that
/// buffered would add a token interval or more to a gap, one waiting for a delayed ACK
/// (Nagle) about 40 ms.
const NOTHING_ADDED: f64 = 0.3;

/// Section 2b: the paced upstream's time to its first token, in ms: long enough for the request
/// through the gateway to join the direct one's flight before it.
const PAIR_FIRST_TOKEN_MS: u64 = 20;

/// What to run and how hard.
#[derive(Debug, Parser)]
#[command(about = "Latency the gateway adds, direct against through, in one run")]
struct Options {
    /// Requests per second in sections 1 and 2 (open loop).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Measured seconds per path in sections 1 and 2.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Warm-up seconds before each measurement (same rate, not counted).
    #[arg(long, default_value_t = 2)]
    warmup: u32,
    /// Keep-alive connections in sections 1 and 2.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// The API of sections 1 and 2: each one chosen runs both sections with its path and body.
    #[arg(long, value_enum, default_value_t = Dialects::Chat)]
    dialect: Dialects,
    /// The sections to run, of 1 (non-streaming), 2 (streaming), 2b (paced streaming), 3 (SDK),
    /// 4 (burst) and 5 (what metrics, access logs and traces cost).
    #[arg(long, value_delimiter = ',', default_value = "1,2,2b,3,4,5")]
    sections: Vec<String>,
    /// Tokens of every simulated answer.
    #[arg(long, default_value_t = 10)]
    tokens: usize,
    /// Section 2b: the upstream's time between two tokens, in ms (0: skip the section).
    #[arg(long, default_value_t = 5)]
    paced_interval_ms: u64,
    /// Section 2b: pairs of requests per second.
    #[arg(long, default_value_t = 200)]
    paced_rate: u32,
    /// Section 2b: measured seconds.
    #[arg(long, default_value_t = 5)]
    paced_seconds: u32,
    /// Section 3: timed SDK requests per path (0: skip the section).
    #[arg(long, default_value_t = 200)]
    sdk_requests: usize,
    /// Section 4: identical streams in the burst (0: skip the section).
    #[arg(long, default_value_t = 2000)]
    burst: usize,
    /// Section 4: the upstream's time to its first token, in ms; long enough for every stream of
    /// the burst to join the flight before it.
    #[arg(long, default_value_t = 300)]
    burst_first_token_ms: u64,
    /// Section 4: the upstream's time between two tokens, in ms (0: the whole answer at once,
    /// the most the gateway has to write to each stream at the first token).
    #[arg(long, default_value_t = 0)]
    burst_token_interval_ms: u64,
    /// Section 5: requests per second of each run (open loop, unique requests).
    #[arg(long, default_value_t = 500)]
    observe_rate: u32,
    /// Section 5: measured seconds of each run, after a 1 s warm-up.
    #[arg(long, default_value_t = 5)]
    observe_seconds: u32,
    /// Section 5: runs of each variant, in turn (the table shows each variant's median).
    #[arg(long, default_value_t = 3)]
    observe_rounds: usize,
    /// Section 5: a gateway binary built without this build's observability (say, from the commit
    /// before issue 24), measured as the first variant: what metrics cost, with logs off.
    #[arg(long)]
    baseline_gateway: Option<PathBuf>,
    /// The gateway binary (default: `$STREAMFLIGHT_GATEWAY_BIN`, else the newer of the
    /// workspace's `target/dist/streamflight-gateway` and `target/release/streamflight-gateway`).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// The python with the `openai` SDK (default: the workspace's
    /// `target/conformance-venv/bin/python`).
    #[arg(long)]
    python: Option<PathBuf>,
}

fn main() {
    let options = Options::parse();
    let run_section = |name: &str| options.sections.iter().any(|s| s == name);
    let root = workspace_root();
    let gateway = gateway_binary(options.gateway.clone(), "latency");
    let files = raise_open_file_limit();
    let runtime = load_runtime();
    println!("gateway latency, {}, open files {files}", machine_now());
    println!("gateway: {}", gateway.display());
    let tokens = options.tokens.to_string();
    let zero = ["--sim-first-token-delay", "0ms", "--sim-token-interval", "0ms", "--sim-tokens", &tokens];
    let upstream = Gateway::start(&gateway, "upstream", &zero);
    let front = Gateway::start(&gateway, "front", &["--upstream", &upstream.v1()]);
    println!(
        "upstream: the gateway's simulated model (answers like an OpenAI server), zero delays, {tokens} tokens, \
         127.0.0.1:{}; through: a second gateway in front of it, 127.0.0.1:{}",
        upstream.port, front.port
    );
    let run = run_tag();
    let mut goals = Vec::new();

    // 1 and 2: the same open-loop load, direct then through, for each dialect chosen.
    let chosen = options.dialect.each();
    // Only a choice other than the default names its dialect, so that the default's report reads
    // as it always did.
    let named = options.dialect != Dialects::Chat;
    let mut added_by_dialect = Vec::new();
    for &dialect in chosen {
        let (name, path) = (dialect.name(), dialect.path());
        let (of, suffix) =
            if named { (format!(" [{name}: POST {path}]"), format!(", {name}")) } else { Default::default() };
        let tag = format!("{run} {name}");
        let mut added = [f64::NAN; 4];
        let load = Load {
            rate: options.rate,
            warmup: u64::from(options.warmup) * u64::from(options.rate),
            measured: u64::from(options.seconds) * u64::from(options.rate),
            connections: options.connections,
            mode: Mode::Plain,
            dialect,
        };
        if run_section("1") {
            println!(
                "\n1. Non-streaming{of}: unique requests, {} /s open loop (latency from the scheduled send), {} s after a \
                 {} s warm-up, {} keep-alive HTTP/1.1 connections; ms",
                options.rate, options.seconds, options.warmup, options.connections
            );
            let ((direct, direct_cpu), (through, through_cpu)) =
                direct_and_through(&runtime, &upstream, &front, &load, &format!("{tag} plain"));
            print_whole_table(&direct, &through);
            print_cpu(&direct_cpu, &through_cpu);
            let diff = |p: f64| ms(through.whole.pct(p)) - ms(direct.whole.pct(p));
            (added[0], added[1]) = (diff(50.0), diff(99.0));
            for (p, value, target) in [("p50", added[0], 0.3), ("p99", added[1], 1.0)] {
                goals.push(goal(&format!("added latency {p} (non-streaming{suffix})"), value, target, "ms"));
            }
        }

        if run_section("2") {
            let streaming = Load { mode: Mode::Stream, ..load };
            println!(
                "\n2. Streaming{of} ({tokens} tokens, zero delays): the same load with \"stream\": true; first event = \
                 the first `data:` event, gaps = between consecutive `data:` events of one stream; ms"
            );
            let ((direct, direct_cpu), (through, through_cpu)) =
                direct_and_through(&runtime, &upstream, &front, &streaming, &format!("{tag} stream"));
            print_stream_table(&direct, &through);
            print_cpu(&direct_cpu, &through_cpu);
            let diff = |p: f64| ms(through.first.pct(p)) - ms(direct.first.pct(p));
            (added[2], added[3]) = (diff(50.0), diff(99.0));
            for (p, value, target) in [("p50", added[2], 0.3), ("p99", added[3], 1.0)] {
                let what = format!("added time to first event {p} (streaming{suffix})");
                goals.push(goal(&what, value, target, "ms"));
            }
            goals.push(goal(
                &format!("added gap between events p99 (streaming{suffix})"),
                ms(through.gaps.pct(99.0)) - ms(direct.gaps.pct(99.0)),
                NOTHING_ADDED,
                "ms (nothing added)",
            ));
        }
        added_by_dialect.push((dialect, added));
    }
    if named && (run_section("1") || run_section("2")) {
        print_dialect_table(&added_by_dialect);
    }

    if run_section("2b") && options.paced_interval_ms > 0 {
        let interval = format!("{}ms", options.paced_interval_ms);
        let first = format!("{PAIR_FIRST_TOKEN_MS}ms");
        let paced_upstream = Gateway::start(
            &gateway,
            "paced upstream",
            &["--sim-first-token-delay", &first, "--sim-token-interval", &interval, "--sim-tokens", &tokens],
        );
        let paced_front = Gateway::start(&gateway, "paced front", &["--upstream", &paced_upstream.v1()]);
        let pairs = Load::paced(options.paced_rate, options.paced_seconds, options.connections, Mode::Pair);
        println!(
            "\n2b. Between two events, on the same events: a paced upstream ({tokens} tokens {interval} apart, the \
             first after {first}); each request sent twice at once, direct and through the gateway, both served by \
             one upstream flight, so every event leaves the upstream once for both; {} pairs/s, {} s after 1 s \
             warm-up; ms",
            options.paced_rate, options.paced_seconds
        );
        let metrics = reqwest::Client::builder().no_proxy().build().expect("an HTTP client");
        let flights_before = runtime.block_on(flights(&metrics, paced_upstream.port));
        let (pair, cpu) = measured(
            &runtime,
            &[&paced_upstream, &paced_front],
            (paced_upstream.url(Dialect::Chat), Some(paced_front.url(Dialect::Chat))),
            &pairs,
            &format!("{run} pair"),
        );
        let flights_after = runtime.block_on(flights(&metrics, paced_upstream.port));
        print_pair_table(&pair, &cpu);
        if let (Some(before), Some(after)) = (flights_before, flights_after) {
            // One flight per pair, or the two paths did not see the same events.
            let per_pair = (after - before) as f64 / (pairs.warmup + pairs.measured) as f64;
            println!("upstream flights per pair: {per_pair:.3} (1: every pair shared one)");
        }
        goals.push(goal(
            "added to a gap between two events, p99 (paced)",
            ms(pair.added_gap.pct(99.0)),
            NOTHING_ADDED,
            "ms (nothing added)",
        ));
        goals.push(goal(
            "an event's delay through the gateway, p50 (paced)",
            ms(pair.delay.pct(50.0)),
            0.3,
            "ms",
        ));
        goals.push(goal(
            "an event's delay through the gateway, p99 (paced)",
            ms(pair.delay.pct(99.0)),
            1.0,
            "ms",
        ));
    }

    if run_section("3") && options.sdk_requests > 0 {
        println!(
            "\n3. The official openai Python SDK: {} sequential streaming requests ({tokens} tokens, zero delays) on one \
             client, after 20 untimed; whole request, create() to the stream's end; ms",
            options.sdk_requests
        );
        let python =
            options.python.clone().unwrap_or_else(|| root.join("target/conformance-venv/bin/python"));
        match sdk_section(&python, &upstream, &front, options.sdk_requests, &run) {
            Ok((direct, through)) => {
                print_sdk_table(&direct, &through);
                for p in [50.0, 99.0] {
                    let what = format!("SDK stream of {tokens} tokens through the gateway, p{p}");
                    goals.push(goal(&what, ms(through.pct(p)), 5.0, "ms"));
                }
            }
            Err(why) => println!("skipped: {why}"),
        }
    }
    if run_section("5") && options.observe_rounds > 0 {
        goals.extend(observe_section(&runtime, &gateway, &upstream, &options, &run));
    }
    drop(front);
    drop(upstream);

    if run_section("4") && options.burst > 0 {
        let delay = format!("{}ms", options.burst_first_token_ms);
        let interval = format!("{}ms", options.burst_token_interval_ms);
        let pace = match options.burst_token_interval_ms {
            0 => "the rest of the answer with it".to_owned(),
            _ => format!("then one every {interval}"),
        };
        let upstream = Gateway::start(
            &gateway,
            "burst upstream",
            &["--sim-first-token-delay", &delay, "--sim-token-interval", &interval, "--sim-tokens", &tokens],
        );
        let front = Gateway::start(&gateway, "burst front", &["--upstream", &upstream.v1()]);
        println!(
            "\n4. A burst of {} identical streams through the gateway, one HTTP/1.1 connection each, all started at \
             once; the upstream's first token after {delay}, {pace}; lag = a client's first event minus the earliest first \
             event of the burst; ms",
            options.burst
        );
        let burst = runtime.block_on(burst(&upstream, &front, options.burst, &format!("{run} burst")));
        print_burst(&burst, options.burst_first_token_ms);
        if burst.landed_lag.len() > 0 {
            goals.push(goal(
                "burst: p99 first event after the upstream's first token (at the client's socket)",
                ms(burst.landed_lag.pct(99.0)),
                50.0,
                "ms",
            ));
        }
        goals.push(goal(
            "burst: p99 first event after the upstream's first token (read by the client)",
            ms(burst.lag.pct(99.0)),
            50.0,
            "ms",
        ));
    }

    println!("\nGoals (issue 10, G9)");
    println!("| goal | measured | target | |\n|---|---:|---:|---|");
    for line in &goals {
        println!("{line}");
    }
    println!("\nload average at the end: {}", load_average());
}

/// The `--dialect` flag: one API, or each in turn.
#[derive(Clone, Copy, Debug, PartialEq, clap::ValueEnum)]
enum Dialects {
    Chat,
    Responses,
    Messages,
    All,
}

impl Dialects {
    fn each(self) -> &'static [Dialect] {
        match self {
            Dialects::Chat => &[Dialect::Chat],
            Dialects::Responses => &[Dialect::Responses],
            Dialects::Messages => &[Dialect::Messages],
            Dialects::All => &[Dialect::Chat, Dialect::Responses, Dialect::Messages],
        }
    }
}

/// The same load on the upstream directly, then through the front gateway.
fn direct_and_through(
    runtime: &tokio::runtime::Runtime,
    upstream: &Gateway,
    front: &Gateway,
    load: &Load,
    tag: &str,
) -> ((Samples, Vec<f64>), (Samples, Vec<f64>)) {
    let (direct_url, through_url) = (upstream.url(load.dialect), front.url(load.dialect));
    let direct = measured(runtime, &[upstream], (direct_url, None), load, &format!("{tag} direct"));
    let through = measured(runtime, &[upstream, front], (through_url, None), load, &format!("{tag} through"));
    (direct, through)
}

// ---------------------------------------------------------------------------------------------
// Section 3: the Python SDK.

fn sdk_section(
    python: &Path,
    upstream: &Gateway,
    front: &Gateway,
    requests: usize,
    run: &str,
) -> Result<(Dist, Dist), String> {
    if !python.is_file() {
        return Err(format!(
            "no python at {} (the conformance venv with the pinned openai SDK): create it with \
             crates/gateway/conformance/run, or pass --python",
            python.display()
        ));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/latency_sdk.py");
    let direct = sdk_run(python, &script, &upstream.v1(), requests, &format!("{run} sdk direct"))?;
    let through = sdk_run(python, &script, &front.v1(), requests, &format!("{run} sdk through"))?;
    Ok((direct, through))
}

fn sdk_run(python: &Path, script: &Path, base_url: &str, requests: usize, tag: &str) -> Result<Dist, String> {
    let mut command = Command::new(python);
    command
        .arg(script)
        .args(["--base-url", base_url, "--requests", &requests.to_string(), "--warmup", "20", "--tag", tag])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::null());
    for proxy in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
        command.env_remove(proxy);
    }
    let output = command.output().map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("unreadable SDK report: {e}"))?;
    if report["errors"].as_u64() != Some(0) {
        return Err(format!(
            "SDK requests failed: {} errors, first: {}",
            report["errors"], report["first_error"]
        ));
    }
    let mut dist = Dist::default();
    for sample in report["samples_ms"].as_array().ok_or("no samples in the SDK report")? {
        let ms = sample.as_f64().ok_or("a sample that is not a number")?;
        dist.add(Duration::from_secs_f64(ms / 1000.0));
    }
    dist.0.sort_unstable();
    Ok(dist)
}

// ---------------------------------------------------------------------------------------------
// Section 4: the burst.

struct Burst {
    clients: usize,
    errors: usize,
    first_error: Option<String>,
    leaders: usize,
    /// Upstream requests the front gateway made for the burst (its `flights_total` before/after).
    flights: Option<u64>,
    /// Each client's first event minus the earliest first event of all, as the client read it.
    lag: Dist,
    /// The same, as the kernel stamped its arrival at the client's socket: without the time the
    /// 2,000 clients, on the same cores, took to get to their reads.
    landed_lag: Dist,
    /// Burst start to each client's first event.
    first: Dist,
    /// Burst start to each client's response head.
    heads: Dist,
    /// Clients whose response head came before the earliest first event: joined before the
    /// upstream's first token.
    joined_before: usize,
    fewest_events: usize,
    /// CPU time over the burst: the front gateway's, the upstream's, and this process's (the
    /// clients').
    cpu: [Duration; 3],
}

/// What one stream of the burst saw, as instants.
struct Arrival {
    head: Instant,
    first: Instant,
    /// When the bytes of the first event reached the client's socket (the kernel's stamp).
    first_landed: Option<SystemTime>,
    /// The connection, kept open (as an SDK's pool would keep it) until the whole burst is over,
    /// so that no stream's end closes a connection while others still wait for their events.
    _connection: tokio::net::TcpStream,
    leader: bool,
    events: usize,
}

async fn burst(upstream: &Gateway, front: &Gateway, clients: usize, tag: &str) -> Burst {
    let client = reqwest::Client::builder().no_proxy().build().expect("an HTTP client");
    let flights_before = flights(&client, front.port).await;
    let body: Arc<str> = Arc::from(chat_body(&format!("latency {tag}"), true));
    let cpu_before = [front.cpu(), upstream.cpu(), own_cpu()];
    let start = Instant::now();
    let tasks: Vec<_> =
        (0..clients).map(|_| tokio::spawn(burst_stream(front.port, Arc::clone(&body)))).collect();
    let mut arrivals = Vec::with_capacity(clients);
    let (mut errors, mut first_error) = (0, None);
    for task in tasks {
        match task.await.expect("a burst task") {
            Ok(arrival) => arrivals.push(arrival),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let cpu_after = [front.cpu(), upstream.cpu(), own_cpu()];
    let flights_after = flights(&client, front.port).await;
    let earliest = arrivals.iter().map(|a| a.first).min().unwrap_or(start);
    let mut result = Burst {
        clients,
        errors,
        first_error,
        leaders: arrivals.iter().filter(|a| a.leader).count(),
        flights: flights_before.zip(flights_after).map(|(b, a)| a - b),
        lag: Dist::default(),
        landed_lag: Dist::default(),
        first: Dist::default(),
        heads: Dist::default(),
        joined_before: arrivals.iter().filter(|a| a.head <= earliest).count(),
        fewest_events: arrivals.iter().map(|a| a.events).min().unwrap_or(0),
        cpu: [0, 1, 2].map(|i| cpu_after[i].saturating_sub(cpu_before[i])),
    };
    let landed: Vec<SystemTime> = arrivals.iter().filter_map(|a| a.first_landed).collect();
    if landed.len() == arrivals.len()
        && let Some(&earliest) = landed.iter().min()
    {
        for &time in &landed {
            result.landed_lag.add(time.duration_since(earliest).unwrap_or_default());
        }
    }
    for arrival in &arrivals {
        result.lag.add(arrival.first - earliest);
        result.first.add(arrival.first - start);
        result.heads.add(arrival.head - start);
    }
    for dist in [&mut result.lag, &mut result.landed_lag, &mut result.first, &mut result.heads] {
        dist.0.sort_unstable();
    }
    result
}

/// One stream of the burst, on a connection of its own, with a lean HTTP/1.1 client: a
/// `reqwest` stream costs this process about twice the CPU, which the gateway, on the same
/// cores, would wait for.
async fn burst_stream(port: u16, body: Arc<str>) -> Result<Arrival, String> {
    tokio::time::timeout(Duration::from_secs(60), raw_stream(port, &body))
        .await
        .map_err(|_| "no end within 60 s".to_owned())?
}

async fn raw_stream(port: u16, body: &str) -> Result<Arrival, String> {
    use tokio::io::AsyncWriteExt;

    let mut socket =
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("connect: {e}"))?;
    socket.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    stamp_arrivals(&socket).map_err(|e| format!("SO_TIMESTAMPNS: {e}"))?;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    let mut response = Response::default();
    let mut buffer = vec![0; 16 * 1024];
    let mut events = Events::until(Dialect::Chat.last());
    let mut first_landed = None;
    loop {
        let (read, landed) = read_stamped(&socket, &mut buffer).await.map_err(|e| format!("read: {e}"))?;
        let now = Instant::now();
        if read == 0 {
            if response.finish_at_eof() {
                break;
            }
            return Err("connection closed mid-response".to_owned());
        }
        let had_events = !events.times.is_empty();
        let complete = response.feed(&buffer[..read], now, &mut events)?;
        if !had_events && !events.times.is_empty() {
            first_landed = landed;
        }
        if complete {
            break;
        }
    }
    let head = response.head.ok_or("no response head")?;
    if response.status != 200 {
        return Err(format!("status {}", response.status));
    }
    let first = *events.times.first().ok_or("no event")?;
    if !events.done {
        return Err("stream ended without [DONE]".to_owned());
    }
    Ok(Arrival {
        head,
        first,
        first_landed,
        leader: response.leader,
        events: events.times.len(),
        _connection: socket,
    })
}

/// Asks the kernel to stamp each received packet with the time it reached the socket
/// (`SO_TIMESTAMPNS`, Linux): when the bytes arrived, however late this process reads them.
#[cfg(target_os = "linux")]
fn stamp_arrivals(socket: &tokio::net::TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option value of the size given.
    let status = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if status == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

#[cfg(not(target_os = "linux"))]
fn stamp_arrivals(_socket: &tokio::net::TcpStream) -> std::io::Result<()> {
    Ok(())
}

/// Reads what has arrived, with the kernel's stamp of when it reached the socket (the last
/// packet's, for TCP) when there is one.
#[cfg(target_os = "linux")]
async fn read_stamped(
    socket: &tokio::net::TcpStream,
    buffer: &mut [u8],
) -> std::io::Result<(usize, Option<SystemTime>)> {
    use std::os::fd::AsRawFd;
    loop {
        socket.readable().await?;
        match socket.try_io(tokio::io::Interest::READABLE, || recv_stamped(socket.as_raw_fd(), buffer)) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}

#[cfg(target_os = "linux")]
fn recv_stamped(fd: std::os::fd::RawFd, buffer: &mut [u8]) -> std::io::Result<(usize, Option<SystemTime>)> {
    let mut iov = libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: buffer.len() };
    // Room for a few control messages, aligned for `cmsghdr`.
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data, for which all zeroes is valid (no name, no control yet).
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `message` points at `iov` (into `buffer`) and `control`, both alive for the call.
    let read = unsafe { libc::recvmsg(fd, &mut message, 0) };
    if read < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the kernel filled `message`'s control buffer; the CMSG macros walk it within its
    // `msg_controllen`, and a timestamp's data is one timespec (read unaligned).
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_TIMESTAMPNS {
                let time: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(header).cast());
                stamp = Some(UNIX_EPOCH + Duration::new(time.tv_sec as u64, time.tv_nsec as u32));
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
    }
    Ok((read as usize, stamp))
}

#[cfg(not(target_os = "linux"))]
async fn read_stamped(
    socket: &tokio::net::TcpStream,
    buffer: &mut [u8],
) -> std::io::Result<(usize, Option<SystemTime>)> {
    // `read` needs `&mut`; a shared reference reads through `try_read` instead.
    loop {
        socket.readable().await?;
        match socket.try_read(buffer) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            result => return result.map(|read| (read, None)),
        }
    }
}

/// An HTTP/1.1 response read as its bytes arrive: the head, then the body (chunked, sized, or
/// up to the end of the connection), its bytes handed to an [`Events`] reader.
#[derive(Default)]
struct Response {
    /// Bytes not parsed yet.
    raw: Vec<u8>,
    /// When the head was complete.
    head: Option<Instant>,
    status: u16,
    leader: bool,
    framing: Framing,
}

#[derive(Clone, Copy, Debug, Default)]
enum Framing {
    /// The head is not complete yet.
    #[default]
    Head,
    Chunked,
    /// Body bytes still to come.
    Length(usize),
    UntilClose,
    Done,
}

impl Response {
    /// Takes the bytes of one read; true once the response is complete.
    fn feed(&mut self, bytes: &[u8], now: Instant, events: &mut Events) -> Result<bool, String> {
        self.raw.extend_from_slice(bytes);
        if let Framing::Head = self.framing {
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else { return Ok(false) };
            self.head = Some(now);
            self.parse_head(end)?;
            self.raw.drain(..end + 4);
        }
        loop {
            match self.framing {
                Framing::Head => return Ok(false),
                Framing::Done => return Ok(true),
                Framing::UntilClose => {
                    events.feed(&self.raw, now);
                    self.raw.clear();
                    return Ok(false);
                }
                Framing::Length(left) => {
                    let take = left.min(self.raw.len());
                    events.feed(&self.raw[..take], now);
                    self.raw.drain(..take);
                    self.framing = if left == take { Framing::Done } else { Framing::Length(left - take) };
                    return Ok(left == take);
                }
                Framing::Chunked => {
                    // `<hex size>[;extensions]\r\n<data>\r\n`; size 0 ends the body (trailers,
                    // never sent here, are not read).
                    let Some(line) = self.raw.windows(2).position(|w| w == b"\r\n") else { return Ok(false) };
                    let text = std::str::from_utf8(&self.raw[..line]).map_err(|_| "bad chunk size")?;
                    let hex = text.split(';').next().unwrap_or("").trim();
                    let size =
                        usize::from_str_radix(hex, 16).map_err(|_| format!("bad chunk size {text:?}"))?;
                    if size == 0 {
                        self.framing = Framing::Done;
                        return Ok(true);
                    }
                    if self.raw.len() < line + 2 + size + 2 {
                        return Ok(false);
                    }
                    events.feed(&self.raw[line + 2..line + 2 + size], now);
                    if &self.raw[line + 2 + size..line + 4 + size] != b"\r\n" {
                        return Err("chunk not followed by CRLF".to_owned());
                    }
                    self.raw.drain(..line + 4 + size);
                }
            }
        }
    }

    fn parse_head(&mut self, end: usize) -> Result<(), String> {
        let head = std::str::from_utf8(&self.raw[..end]).map_err(|_| "response head not UTF-8")?;
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or("");
        self.status = status
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3)?.parse().ok())
            .ok_or_else(|| format!("bad status line {status:?}"))?;
        self.framing = Framing::UntilClose;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "transfer-encoding" if value.eq_ignore_ascii_case("chunked") => {
                    self.framing = Framing::Chunked
                }
                "content-length" if !matches!(self.framing, Framing::Chunked) => {
                    let length = value.parse().map_err(|_| format!("bad content-length {value:?}"))?;
                    self.framing = if length == 0 { Framing::Done } else { Framing::Length(length) };
                }
                "x-streamflight-role" => self.leader = value == "leader",
                _ => {}
            }
        }
        Ok(())
    }

    /// At the end of the connection: whether the response was complete.
    fn finish_at_eof(&self) -> bool {
        matches!(self.framing, Framing::UntilClose | Framing::Done)
    }
}

/// The gateway's `streamflight_flights_total`: upstream requests made.
async fn flights(client: &reqwest::Client, port: u16) -> Option<u64> {
    let text = client.get(format!("http://127.0.0.1:{port}/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|line| line.strip_prefix("streamflight_flights_total ")?.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// Section 5: what metrics, access logs and traces cost.

/// One gateway configuration of section 5, in front of the shared upstream.
struct Variant {
    name: &'static str,
    front: Gateway,
    /// Where its log went, to count the lines it wrote.
    log: Option<PathBuf>,
    /// The gateway's CPU per request (us), one entry per round: non-streaming, then streaming.
    cpu: [Vec<f64>; 2],
}

/// Section 5: the same unique requests through gateways that differ only in what they observe,
/// each run in turn (the order rotated every round), CPU per request of the front gateway alone.
/// Returns its goals: the cost of metrics with JSON access logs (at most 5%), and with traces
/// exported as well (at most 15%), each against the first variant.
fn observe_section(
    runtime: &tokio::runtime::Runtime,
    gateway: &Path,
    upstream: &Gateway,
    options: &Options,
    run: &str,
) -> Vec<String> {
    let sink = runtime.block_on(OtlpSink::start());
    let logs = workspace_root().join("target/latency-logs");
    std::fs::create_dir_all(&logs).expect("a directory for the logs");
    let endpoint = sink.endpoint();
    let json = ["--log", "info", "--log-format", "json"];
    let traced = [&json[..], &["--otlp-endpoint", &endpoint]].concat();
    let mut plan: Vec<(&'static str, &Path, Vec<&str>, Option<PathBuf>)> = Vec::new();
    if let Some(baseline) = &options.baseline_gateway {
        plan.push(("baseline binary (its counters), logs off", baseline, Vec::new(), None));
    }
    plan.push(("metrics, logs off", gateway, Vec::new(), None));
    plan.push(("metrics + JSON access log", gateway, json.to_vec(), Some(logs.join("json.log"))));
    plan.push(("metrics + JSON access log + traces (OTLP)", gateway, traced, Some(logs.join("traced.log"))));
    let upstream_flag = upstream.v1();
    let mut variants: Vec<Variant> = plan
        .into_iter()
        .map(|(name, binary, flags, log)| {
            let args = [&["--upstream", upstream_flag.as_str()][..], &flags].concat();
            let front = Gateway::start_logging(binary, name, &args, log.as_deref());
            Variant { name, front, log, cpu: [Vec::new(), Vec::new()] }
        })
        .collect();
    let load = Load::paced(options.observe_rate, options.observe_seconds, options.connections, Mode::Plain);
    println!(
        "\n5. What observability costs: unique Chat requests, {} /s open loop, {} s after a 1 s warm-up, through \
         gateways that differ only in what they observe (the JSON log written to a file, traces exported over \
         OTLP/HTTP to a sink in this process), each in turn, {} rounds; the gateway's CPU per request (us, 10 ms \
         ticks), median of the rounds",
        options.observe_rate, options.observe_seconds, options.observe_rounds
    );
    let requests = load.warmup + load.measured;
    for round in 0..options.observe_rounds {
        for (m, mode) in [Mode::Plain, Mode::Stream].into_iter().enumerate() {
            let load = Load { mode, ..load };
            let count = variants.len();
            for k in 0..count {
                let variant = &mut variants[(k + round) % count];
                let tag = format!("{run} observe {round} {m} {}", variant.name);
                let url = variant.front.url(Dialect::Chat);
                let (samples, cpu) = measured(runtime, &[&variant.front], (url, None), &load, &tag);
                if samples.errors > 0 {
                    println!("{}: {}", variant.name, errors(&samples));
                }
                variant.cpu[m].push(cpu[0]);
            }
        }
    }
    let median = |values: &[f64]| {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let reference = [median(&variants[0].cpu[0]), median(&variants[0].cpu[1])];
    let per_request = (options.observe_rounds as u64 * 2 * requests) as f64;
    println!(
        "| variant | non-streaming | vs first | streaming | vs first | log lines per request |\n\
         |---|---:|---:|---:|---:|---:|"
    );
    let mut ratios = Vec::new();
    for variant in &variants {
        let cpu = [median(&variant.cpu[0]), median(&variant.cpu[1])];
        let ratio = [cpu[0] / reference[0], cpu[1] / reference[1]];
        let lines = variant.log.as_ref().map_or(0, |log| {
            std::fs::read_to_string(log)
                .map_or(0, |text| text.lines().filter(|l| l.contains("\"request\"")).count())
        });
        println!(
            "| {} | {:.0} | {:.3}x | {:.0} | {:.3}x | {:.2} |",
            variant.name,
            cpu[0],
            ratio[0],
            cpu[1],
            ratio[1],
            lines as f64 / per_request
        );
        ratios.push(ratio);
    }
    let (spans, batches) = sink.received();
    println!("the OTLP sink received {batches} exports, {spans} bytes of spans");
    let last = ratios.len() - 1;
    let against = variants[0].name;
    let mut goals = Vec::new();
    for (m, what) in ["non-streaming", "streaming"].into_iter().enumerate() {
        goals.push(goal(
            &format!("CPU with metrics + JSON access log, {what}, against \"{against}\""),
            ratios[last - 1][m],
            1.05,
            "x",
        ));
        goals.push(goal(
            &format!("CPU with traces exported too, {what}, against \"{against}\""),
            ratios[last][m],
            1.15,
            "x",
        ));
    }
    goals
}

/// An OTLP/HTTP receiver that takes every export and answers 200: the traced variant's collector,
/// costing the gateway what a real one would (a POST per batch), and counting what it got.
struct OtlpSink {
    port: u16,
    received: Arc<std::sync::Mutex<(u64, u64)>>,
}

impl OtlpSink {
    async fn start() -> OtlpSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port for the OTLP sink");
        let port = listener.local_addr().expect("its address").port();
        let received = Arc::new(std::sync::Mutex::new((0, 0)));
        let counts = Arc::clone(&received);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let counts = Arc::clone(&counts);
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let counts = Arc::clone(&counts);
                            async move {
                                use http_body_util::BodyExt;
                                let bytes = request
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes().len())
                                    .unwrap_or(0);
                                let mut counts =
                                    counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                                counts.0 += bytes as u64;
                                counts.1 += 1;
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Empty::<bytes::Bytes>::new(),
                                ))
                            }
                        });
                    let io = hyper_util::rt::TokioIo::new(socket);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        OtlpSink { port, received }
    }

    /// The endpoint to give as `--otlp-endpoint`.
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Bytes of spans received, and exports.
    fn received(&self) -> (u64, u64) {
        *self.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn print_whole_table(direct: &Samples, through: &Samples) {
    println!("| path | requests | errors | p50 | p90 | p99 | max | client dispatch p99 |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, s) in [("direct", direct), ("through the gateway", through)] {
        println!(
            "| {name} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            s.whole.len(),
            errors(s),
            ms(s.whole.pct(50.0)),
            ms(s.whole.pct(90.0)),
            ms(s.whole.pct(99.0)),
            ms(s.whole.max()),
            ms(s.dispatch.pct(99.0)),
        );
    }
    let d = |f: fn(&Dist) -> i64| ms(f(&through.whole)) - ms(f(&direct.whole));
    println!(
        "| **added** (through - direct) | | | **{:+.3}** | {:+.3} | **{:+.3}** | {:+.3} | |",
        d(|x| x.pct(50.0)),
        d(|x| x.pct(90.0)),
        d(|x| x.pct(99.0)),
        d(Dist::max)
    );
    warn_if_disturbed(direct, through);
}

fn print_stream_table(direct: &Samples, through: &Samples) {
    println!(
        "| path | streams | errors | first event p50 | p90 | p99 | max | gap p50 | gap p99 | gap max | whole p50 | whole p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, s) in [("direct", direct), ("through the gateway", through)] {
        println!(
            "| {name} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            s.whole.len(),
            errors(s),
            ms(s.first.pct(50.0)),
            ms(s.first.pct(90.0)),
            ms(s.first.pct(99.0)),
            ms(s.first.max()),
            ms(s.gaps.pct(50.0)),
            ms(s.gaps.pct(99.0)),
            ms(s.gaps.max()),
            ms(s.whole.pct(50.0)),
            ms(s.whole.pct(99.0)),
        );
    }
    let d = |f: &dyn Fn(&Samples) -> i64| ms(f(through)) - ms(f(direct));
    println!(
        "| **added** (through - direct) | | | **{:+.3}** | {:+.3} | {:+.3} | {:+.3} | {:+.3} | **{:+.3}** | {:+.3} | {:+.3} | {:+.3} |",
        d(&|s| s.first.pct(50.0)),
        d(&|s| s.first.pct(90.0)),
        d(&|s| s.first.pct(99.0)),
        d(&|s| s.first.max()),
        d(&|s| s.gaps.pct(50.0)),
        d(&|s| s.gaps.pct(99.0)),
        d(&|s| s.gaps.max()),
        d(&|s| s.whole.pct(50.0)),
        d(&|s| s.whole.pct(99.0)),
    );
    println!(
        "`data:` events per stream (fewest): direct {}, through {}; client dispatch p99: direct {:.3}, through {:.3}",
        direct.fewest_events.unwrap_or(0),
        through.fewest_events.unwrap_or(0),
        ms(direct.dispatch.pct(99.0)),
        ms(through.dispatch.pct(99.0)),
    );
    warn_if_disturbed(direct, through);
}

/// Sections 1 and 2 side by side, one row per dialect: what the gateway added (through - direct)
/// to a whole non-streaming request and to a stream's first event (`[p50, p99, p50, p99]`; a
/// section not run is blank).
fn print_dialect_table(rows: &[(Dialect, [f64; 4])]) {
    println!("\nAdded by the gateway (through - direct), per dialect; ms");
    println!("| dialect | path | non-streaming p50 | p99 | first event p50 | p99 |");
    println!("|---|---|---:|---:|---:|---:|");
    for (dialect, added) in rows {
        let cell = |x: f64| if x.is_nan() { String::new() } else { format!("{x:+.3}") };
        let [a, b, c, d] = added.map(cell);
        println!("| {} | {} | {a} | {b} | {c} | {d} |", dialect.name(), dialect.path());
    }
}

fn print_cpu(direct: &[f64], through: &[f64]) {
    let at = |v: &[f64], i: usize| v.get(i).copied().unwrap_or(0.0);
    println!(
        "CPU per request (us, warm-up included, 10 ms ticks): direct: upstream {:.0}; through: upstream {:.0}, \
         gateway {:.0}",
        at(direct, 0),
        at(through, 0),
        at(through, 1)
    );
}

fn print_pair_table(pair: &Samples, cpu: &[f64]) {
    println!("| | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|");
    let row = |name: &str, d: &Dist| {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} |",
            ms(d.pct(50.0)),
            ms(d.pct(90.0)),
            ms(d.pct(99.0)),
            ms(d.max())
        );
    };
    row("the upstream's gap between two events (direct)", &pair.gaps);
    row("an event's delay through the gateway (through - direct, same event)", &pair.delay);
    row("**added to a gap** (through's gap - direct's gap, same two events)", &pair.added_gap);
    println!(
        "pairs {}, failed {}; `data:` events per stream (fewest) {}; CPU per pair (us, warm-up included): upstream \
         {:.0}, gateway {:.0}",
        pair.whole.len(),
        errors(pair),
        pair.fewest_events.unwrap_or(0),
        cpu.first().copied().unwrap_or(0.0),
        cpu.get(1).copied().unwrap_or(0.0)
    );
    warn_if_disturbed(pair, pair);
}

fn print_sdk_table(direct: &Dist, through: &Dist) {
    println!("| path | requests | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|");
    for (name, d) in [("direct", direct), ("through the gateway", through)] {
        println!(
            "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
            d.len(),
            ms(d.pct(50.0)),
            ms(d.pct(90.0)),
            ms(d.pct(99.0)),
            ms(d.max())
        );
    }
    let diff = |p: f64| ms(through.pct(p)) - ms(direct.pct(p));
    println!(
        "| **added** (through - direct) | | {:+.3} | {:+.3} | {:+.3} | {:+.3} |",
        diff(50.0),
        diff(90.0),
        diff(99.0),
        ms(through.max()) - ms(direct.max())
    );
}

fn print_burst(burst: &Burst, first_token_ms: u64) {
    println!("| | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|");
    let row = |name: &str, d: &Dist| {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} |",
            ms(d.pct(50.0)),
            ms(d.pct(90.0)),
            ms(d.pct(99.0)),
            ms(d.max())
        );
    };
    if burst.landed_lag.len() > 0 {
        row("**lag behind the earliest first event, arrival at the client's socket**", &burst.landed_lag);
        row("lag behind the earliest first event, read by the client", &burst.lag);
    } else {
        row("**lag behind the earliest first event, read by the client**", &burst.lag);
    }
    row(&format!("first event, from the burst's start (upstream: {first_token_ms} ms)"), &burst.first);
    row("response head, from the burst's start", &burst.heads);
    let flights = burst.flights.map_or_else(|| "?".to_owned(), |f| f.to_string());
    let error = burst.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default();
    println!(
        "streams {}, failed {}{error}; leaders {}, upstream requests {flights}; heads before the first event {} of {}; \
         `data:` events per stream (fewest) {}",
        burst.clients,
        burst.errors,
        burst.leaders,
        burst.joined_before,
        burst.clients - burst.errors,
        burst.fewest_events
    );
    println!(
        "CPU over the burst (ms): gateway {:.0}, upstream {:.0}, the {} clients (this process) {:.0}",
        burst.cpu[0].as_secs_f64() * 1e3,
        burst.cpu[1].as_secs_f64() * 1e3,
        burst.clients,
        burst.cpu[2].as_secs_f64() * 1e3
    );
}

/// CPU time (user + system) this process has used so far.
#[cfg(unix)]
fn own_cpu() -> Duration {
    // SAFETY: rusage is plain integers, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage for the call to fill.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

#[cfg(not(unix))]
fn own_cpu() -> Duration {
    Duration::ZERO
}

/// One line of the goals table.
fn goal(what: &str, measured: f64, target: f64, unit: &str) -> String {
    let met = if measured <= target { "met" } else { "**missed**" };
    format!("| {what} | {measured:.3} | <= {target} {unit} | {met} |")
}
