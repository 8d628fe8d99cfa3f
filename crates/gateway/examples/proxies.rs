//! The gateway next to nginx and haproxy (issue 26): what each costs an ordinary request, one
//! nobody shares, as a plain reverse proxy in front of the same upstream, side by side in one run.
//!
//! ```text
//! apt-get install nginx-light haproxy        # Debian's packages; any nginx and haproxy on PATH do
//! cargo build --profile dist -p streamflight-gateway   # the binary as shipped (LTO)
//! cargo run --release -p streamflight-gateway --example proxies -- --rounds 3
//! ```
//!
//! The upstream is the gateway binary with its simulated model at zero delay (10 tokens), as in
//! `latency.rs`. In front of it, each on a free port of 127.0.0.1, started and stopped here with
//! a configuration of its own in a temporary directory:
//!
//! - nginx: 2 workers, `proxy_buffering off`, an upstream keep-alive pool (`keepalive N`,
//!   `proxy_http_version 1.1`, `proxy_set_header Connection ""`), no access log;
//! - haproxy: `mode http`, 2 threads, keep-alive to the server (its default), no logs;
//! - the streamflight gateway: `--upstream http://127.0.0.1:P/v1` (HTTP/1.1 to the upstream).
//!
//! The load is `latency.rs`'s open-loop client (unique requests, so nothing coalesces; latency
//! counted from each request's scheduled instant; a pool of keep-alive HTTP/1.1 connections),
//! non-streaming and streaming Chat Completions, against each path in turn, the order rotated
//! every round: direct (the upstream itself), nginx, haproxy, the gateway. Printed, as medians
//! of the rounds:
//!
//! 1. CPU per request (utime + stime from /proc over the run, warm-up included, of all the
//!    proxy's processes: nginx's master and workers, haproxy's process, the gateway's);
//! 2. latency and what each proxy adds to it against direct in the same round: the whole answer
//!    (non-streaming), the first event (streaming), p50 and p99;
//! 3. the gateway's ratios to nginx and haproxy, and issue 26's goals (CPU at most 2x nginx's,
//!    added p50 within 0.1 ms of nginx's) as met or not;
//! 4. with `--held N` (default 1,000; 0 skips it): resident memory per proxied stream held open
//!    over HTTP/1.1 (RSS growth of all the proxy's processes / N), the upstream streaming one
//!    token a second.
//!
//! Every load is bounded (a fixed count of requests, each with a 10 s timeout; every wait has a
//! deadline). The servers are stopped when this program ends, panics included; should it be
//! killed, they get SIGTERM (nginx's master then stops its workers) or SIGKILL from the kernel,
//! and the proxies' directories (`streamflight-nginx-<pid>`, `streamflight-haproxy-<pid>` in the
//! system's temporary directory) stay behind.
//! Timings are the machine's and noisy; nothing here asserts one. Flags: `--help`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::*;

/// Issue 26: the gateway's CPU per request at most this many times nginx's.
const CPU_GOAL: f64 = 2.0;

/// Issue 26: the gateway's added p50 at most this much above nginx's, in ms.
const ADDED_GOAL_MS: f64 = 0.1;

/// What to run and how hard.
#[derive(Debug, Parser)]
#[command(about = "The gateway's cost per request next to nginx and haproxy, in one run")]
struct Options {
    /// Requests per second (open loop).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Measured seconds of each run (one path, one kind of request).
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Warm-up seconds before each run (same rate; its requests count in CPU per request).
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// Keep-alive connections of the load client.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Rounds: every path and kind of request once per round, the order rotated.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Tokens of every simulated answer.
    #[arg(long, default_value_t = 10)]
    tokens: usize,
    /// nginx's and haproxy's idle keep-alive connections to the upstream, at most.
    #[arg(long, default_value_t = 64)]
    keepalive: usize,
    /// Streams held open through each proxy for memory per held stream (0: skip it).
    #[arg(long, default_value_t = 1000)]
    held: usize,
    /// The nginx binary (default: `nginx` on PATH, else /usr/sbin/nginx).
    #[arg(long)]
    nginx: Option<PathBuf>,
    /// The haproxy binary (default: `haproxy` on PATH, else /usr/sbin/haproxy).
    #[arg(long)]
    haproxy: Option<PathBuf>,
    /// The gateway binary (default: `$STREAMFLIGHT_GATEWAY_BIN`, else the newer of the
    /// workspace's `target/dist/streamflight-gateway` and `target/release/streamflight-gateway`).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// A flag for the gateway in front (not its upstream), as in `--gateway-arg=--connection-threads=2`;
    /// repeat for more.
    #[arg(long = "gateway-arg", allow_hyphen_values = true)]
    gateway_args: Vec<String>,
}

impl Options {
    /// The front gateway's flags: its upstream, and `--gateway-arg`'s.
    fn front(&self, upstream: &Gateway) -> Vec<String> {
        let mut args = vec!["--upstream".to_owned(), upstream.v1()];
        args.extend(self.gateway_args.iter().cloned());
        args
    }
}

fn main() {
    let options = Options::parse();
    let gateway = gateway_binary(options.gateway.clone(), "proxies");
    let nginx = find_program(options.nginx.clone(), "nginx");
    let haproxy = find_program(options.haproxy.clone(), "haproxy");
    let files = raise_open_file_limit();
    let runtime = load_runtime();
    println!("the gateway next to nginx and haproxy, {}, open files {files}", machine_now());
    println!("gateway: {}\nnginx: {}\nhaproxy: {}", gateway.display(), version(&nginx), version(&haproxy));

    let tokens = options.tokens.to_string();
    let zero = ["--sim-first-token-delay", "0ms", "--sim-token-interval", "0ms", "--sim-tokens", &tokens];
    let upstream = Gateway::start(&gateway, "upstream", &zero);
    let servers = Fronts::start(&gateway, &nginx, &haproxy, &upstream, &options);
    println!(
        "upstream: the gateway's simulated model, zero delays, {tokens} tokens, 127.0.0.1:{}; nginx :{}, haproxy \
         :{}, gateway :{} in front of it",
        upstream.port, servers.nginx.port, servers.haproxy.port, servers.gateway.port
    );
    println!(
        "\nUnique Chat Completions, {} /s open loop (latency from the scheduled send), {} s after a {} s warm-up, {} \
         keep-alive HTTP/1.1 connections; each path in turn, the order rotated every round, {} rounds",
        options.rate, options.seconds, options.warmup, options.connections, options.rounds
    );
    let table = measure_all(&runtime, &upstream, &servers, &options);
    print_cpu_table(&table);
    print_latency_table(&table);
    print_ratios_and_goals(&table);
    drop(servers);
    drop(upstream);

    if options.held > 0 {
        memory_section(&runtime, &gateway, &nginx, &haproxy, &options);
    }
    println!("\nload average at the end: {}", load_average());
}

/// `given`, else `name` on PATH, else in /usr/sbin (root's PATH has it, a user's may not); exits,
/// saying how to install it, when there is none.
fn find_program(given: Option<PathBuf>, name: &str) -> PathBuf {
    if let Some(path) = given {
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    found.unwrap_or_else(|| {
        eprintln!(
            "proxies: no {name} on PATH or in /usr/sbin: install Debian's packages with\n  \
             sudo apt-get install -y nginx-light haproxy\nor pass --{name} PATH"
        );
        std::process::exit(2);
    })
}

/// The first line a program prints for `-v` (nginx prints it on standard error).
fn version(program: &Path) -> String {
    let output = Command::new(program).arg("-v").stdin(Stdio::null()).output();
    let text = output.map(|o| [o.stdout, o.stderr].concat()).unwrap_or_default();
    let first = String::from_utf8_lossy(&text).lines().next().unwrap_or("").trim().to_owned();
    format!("{} ({first})", program.display())
}

// ---------------------------------------------------------------------------------------------
// nginx and haproxy, as child processes.

/// A proxy started here with its own configuration in a temporary directory; stopped (SIGTERM,
/// then SIGKILL to it and its children past a deadline) and its directory removed on drop.
struct Proxy {
    port: u16,
    child: Child,
    dir: PathBuf,
}

impl Proxy {
    /// nginx in front of `upstream`, as issue 26 configures it.
    fn nginx(binary: &Path, upstream: u16, keepalive: usize) -> Proxy {
        Proxy::start("nginx", |dir, port| {
            let config = nginx_config(dir, port, upstream, keepalive);
            let file = dir.join("nginx.conf");
            std::fs::write(&file, config).expect("nginx's configuration");
            let mut command = Command::new(binary);
            command.arg("-p").arg(dir).arg("-c").arg(&file).args(["-g", "daemon off;"]);
            command
        })
    }

    /// haproxy in front of `upstream`, as issue 26 configures it.
    fn haproxy(binary: &Path, upstream: u16, keepalive: usize) -> Proxy {
        Proxy::start("haproxy", |dir, port| {
            let file = dir.join("haproxy.cfg");
            std::fs::write(&file, haproxy_config(port, upstream, keepalive))
                .expect("haproxy's configuration");
            let mut command = Command::new(binary);
            // -db: in the foreground, one process (no master-worker), so its pid is its CPU.
            command.arg("-db").arg("-f").arg(&file);
            command
        })
    }

    /// Makes a directory, then starts `command(dir, port)` on a free port until `/healthz`
    /// answers through it; its standard error goes to `dir/stderr.log`, shown should it fail.
    fn start(name: &'static str, command: impl Fn(&Path, u16) -> Command) -> Proxy {
        let dir = std::env::temp_dir().join(format!("streamflight-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for the proxy");
        let log = dir.join("stderr.log");
        // A proxy that does not come up says why in its log: shown before the panic goes on.
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            start_on_free_port(name, |port| {
                let mut command = command(&dir, port);
                let file = std::fs::File::create(&log).expect("the proxy's log");
                command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(file);
                die_with_parent(&mut command, libc::SIGTERM);
                command.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
            })
        }));
        match started {
            Ok((port, child)) => Proxy { port, child, dir },
            Err(panic) => {
                eprintln!("{name}'s standard error:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
                let _ = std::fs::remove_dir_all(&dir);
                std::panic::resume_unwind(panic);
            }
        }
    }
}

impl Server for Proxy {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let pid = self.child.id();
        // SAFETY: kill sends a signal to our own child, which has not been reaped yet.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                // Past the deadline: its children first (they would outlive a killed master).
                for child in family(pid).into_iter().skip(1) {
                    // SAFETY: as above, to a child of our child.
                    unsafe { libc::kill(child as libc::pid_t, libc::SIGKILL) };
                }
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// nginx as issue 26 has it: 2 workers, no buffering of answers, an upstream keep-alive pool,
/// no access log. Every path it writes is in `dir`, so nothing of the system's is touched.
fn nginx_config(dir: &Path, port: u16, upstream: u16, keepalive: usize) -> String {
    let dir = dir.display();
    format!(
        r#"worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream gateway {{
        server 127.0.0.1:{upstream};
        keepalive {keepalive};
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://gateway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"#
    )
}

/// haproxy as issue 26 has it: HTTP mode, 2 threads, keep-alive to the server (its default
/// `http-reuse safe`, idle connections capped like nginx's pool), no `log` lines.
fn haproxy_config(port: u16, upstream: u16, keepalive: usize) -> String {
    format!(
        r#"global
    nbthread 2
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend front
    bind 127.0.0.1:{port}
    default_backend gateway
backend gateway
    server upstream 127.0.0.1:{upstream} pool-max-conn {keepalive}
"#
    )
}

/// The three servers in front of the upstream.
struct Fronts {
    nginx: Proxy,
    haproxy: Proxy,
    gateway: Gateway,
}

impl Fronts {
    fn start(gateway: &Path, nginx: &Path, haproxy: &Path, upstream: &Gateway, options: &Options) -> Fronts {
        let front = options.front(upstream);
        Fronts {
            nginx: Proxy::nginx(nginx, upstream.port, options.keepalive),
            haproxy: Proxy::haproxy(haproxy, upstream.port, options.keepalive),
            gateway: Gateway::start(
                gateway,
                "gateway",
                &front.iter().map(String::as_str).collect::<Vec<_>>(),
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CPU and latency.

/// The paths, in the order of the first round, and the kinds of request.
const PATHS: [&str; 4] = ["direct", "nginx", "haproxy", "gateway"];
const KINDS: [(Mode, &str); 2] = [(Mode::Plain, "non-streaming"), (Mode::Stream, "streaming")];

/// One run: a path, a kind of request, a round.
#[derive(Clone, Copy, Default)]
struct Run {
    /// The proxy's CPU per request, us (direct: none, NaN).
    cpu: f64,
    /// The upstream's CPU per request, us: the same work on every path, a check on the runs.
    upstream_cpu: f64,
    /// p50 and p99 of the whole answer (non-streaming) or of the first event (streaming), ms.
    p50: f64,
    p99: f64,
    /// p50 and p99 minus direct's in the same round, ms.
    added50: f64,
    added99: f64,
    /// How late the client itself handed requests out, p99, ms: past [`DISTURBED`], the machine
    /// was busy with something else.
    late: f64,
}

/// Every run, by kind of request, path and round.
type Table = [[Vec<Run>; 4]; 2];

fn measure_all(
    runtime: &tokio::runtime::Runtime,
    upstream: &Gateway,
    servers: &Fronts,
    options: &Options,
) -> Table {
    let run_tag = run_tag();
    let mut table: Table = Default::default();
    for round in 0..options.rounds {
        for (k, (mode, kind)) in KINDS.into_iter().enumerate() {
            let load = Load {
                rate: options.rate,
                warmup: u64::from(options.warmup) * u64::from(options.rate),
                measured: u64::from(options.seconds) * u64::from(options.rate),
                connections: options.connections,
                mode,
                dialect: Dialect::Chat,
            };
            let mut runs = [Run::default(); 4];
            for i in 0..PATHS.len() {
                let p = (i + round) % PATHS.len();
                let tag = format!("{run_tag} {round} {kind} {}", PATHS[p]);
                runs[p] = one_run(runtime, upstream, servers, p, &load, &tag);
            }
            let direct = runs[0];
            for (p, run) in runs.iter_mut().enumerate() {
                (run.added50, run.added99) = (run.p50 - direct.p50, run.p99 - direct.p99);
                println!(
                    "round {} {kind:>13} {:>7}: CPU {:>6.1} us (upstream {:>5.1}), p50 {:.3} ms (added {:+.3}), p99 \
                     {:.3} ms (added {:+.3}), client late p99 {:.3} ms",
                    round + 1,
                    PATHS[p],
                    run.cpu,
                    run.upstream_cpu,
                    run.p50,
                    run.added50,
                    run.p99,
                    run.added99,
                    run.late
                );
                table[k][p].push(*run);
            }
        }
    }
    let disturbed = table.iter().flatten().flatten().filter(|run| run.late > DISTURBED).count();
    if disturbed > 0 {
        println!(
            "note: in {disturbed} of {} runs the client itself was more than {DISTURBED} ms late at p99: the machine \
             was busy with something else; p99 figures of those runs say more about that than about the proxies",
            options.rounds * PATHS.len() * KINDS.len()
        );
    }
    table
}

/// Path `p` of [`PATHS`] under `load`: its latency, the proxy's CPU and the upstream's.
fn one_run(
    runtime: &tokio::runtime::Runtime,
    upstream: &Gateway,
    servers: &Fronts,
    p: usize,
    load: &Load,
    tag: &str,
) -> Run {
    let (proxy, port): (Option<&dyn Server>, u16) = match PATHS[p] {
        "direct" => (None, upstream.port),
        "nginx" => (Some(&servers.nginx), servers.nginx.port),
        "haproxy" => (Some(&servers.haproxy), servers.haproxy.port),
        _ => (Some(&servers.gateway), servers.gateway.port),
    };
    let url = format!("http://127.0.0.1:{port}{}", Dialect::Chat.path());
    let mut watched: Vec<&dyn Server> = vec![upstream];
    watched.extend(proxy);
    let (samples, cpu) = measured(runtime, &watched, (url, None), load, tag);
    if samples.errors > 0 {
        println!("{} {tag}: errors {}", PATHS[p], errors(&samples));
    }
    let latency = if load.mode == Mode::Plain { &samples.whole } else { &samples.first };
    Run {
        cpu: cpu.get(1).copied().unwrap_or(f64::NAN),
        upstream_cpu: cpu[0],
        p50: ms(latency.pct(50.0)),
        p99: ms(latency.pct(99.0)),
        late: ms(samples.dispatch.pct(99.0)),
        ..Run::default()
    }
}

/// The median of `field` over a path's rounds.
fn median_of(runs: &[Run], field: fn(&Run) -> f64) -> f64 {
    let mut values: Vec<f64> = runs.iter().map(field).collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A figure for a table cell: `-` where there is none (direct's own CPU, its added latency).
fn cell(value: f64, precision: usize, signed: bool) -> String {
    match (value.is_nan(), signed) {
        (true, _) => "-".to_owned(),
        (false, true) => format!("{value:+.precision$}"),
        (false, false) => format!("{value:.precision$}"),
    }
}

fn print_cpu_table(table: &Table) {
    println!(
        "\nCPU per request, us (utime + stime of all the proxy's processes over each run, warm-up included; 10 ms \
         ticks), median of the rounds\n\
         | path | non-streaming | upstream's | streaming | upstream's |\n|---|---:|---:|---:|---:|"
    );
    for (p, path) in PATHS.iter().enumerate() {
        let figures: Vec<String> = (0..KINDS.len())
            .flat_map(|k| {
                let runs = &table[k][p];
                [
                    cell(median_of(runs, |r| r.cpu), 1, false),
                    cell(median_of(runs, |r| r.upstream_cpu), 1, false),
                ]
            })
            .collect();
        println!("| {path} | {} |", figures.join(" | "));
    }
}

fn print_latency_table(table: &Table) {
    println!(
        "\nLatency, ms, median of the rounds: non-streaming the whole answer, streaming the first event; added = the \
         path's minus direct's in the same round\n\
         | path | non-streaming p50 | p99 | added p50 | added p99 | first event p50 | p99 | added p50 | added p99 |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (p, path) in PATHS.iter().enumerate() {
        let figures: Vec<String> = (0..KINDS.len())
            .flat_map(|k| {
                let runs = &table[k][p];
                let added = |value: f64| if p == 0 { f64::NAN } else { value };
                [
                    cell(median_of(runs, |r| r.p50), 3, false),
                    cell(median_of(runs, |r| r.p99), 3, false),
                    cell(added(median_of(runs, |r| r.added50)), 3, true),
                    cell(added(median_of(runs, |r| r.added99)), 3, true),
                ]
            })
            .collect();
        println!("| {path} | {} |", figures.join(" | "));
    }
}

fn print_ratios_and_goals(table: &Table) {
    let (nginx, haproxy, gateway) = (1, 2, 3);
    let cpu = |k: usize, p: usize| median_of(&table[k][p], |r| r.cpu);
    let added = |k: usize, p: usize| median_of(&table[k][p], |r| r.added50);
    println!(
        "\nThe gateway against each proxy: CPU as a ratio, added p50 as a ratio and a difference (ms)\n\
         | figure | gateway / nginx | gateway / haproxy |\n|---|---:|---:|"
    );
    for (k, (_, kind)) in KINDS.iter().enumerate() {
        println!(
            "| CPU per request, {kind} | {:.2}x | {:.2}x |",
            cpu(k, gateway) / cpu(k, nginx),
            cpu(k, gateway) / cpu(k, haproxy)
        );
        let what = if k == 0 { "added p50, whole answer" } else { "added p50, first event" };
        println!(
            "| {what}, {kind} | {:.2}x ({:+.3}) | {:.2}x ({:+.3}) |",
            added(k, gateway) / added(k, nginx),
            added(k, gateway) - added(k, nginx),
            added(k, gateway) / added(k, haproxy),
            added(k, gateway) - added(k, haproxy)
        );
    }
    println!("\nGoals (issue 26)\n| goal | gateway | nginx | target | |\n|---|---:|---:|---:|---|");
    for (k, (_, kind)) in KINDS.iter().enumerate() {
        let (ours, theirs) = (cpu(k, gateway), cpu(k, nginx));
        let met = ours <= CPU_GOAL * theirs;
        println!(
            "| CPU per unique request, {kind} | {ours:.1} us | {theirs:.1} us | <= {CPU_GOAL}x nginx ({:.1} us) | {} |",
            CPU_GOAL * theirs,
            verdict(met)
        );
    }
    for (k, (_, kind)) in KINDS.iter().enumerate() {
        let (ours, theirs) = (added(k, gateway), added(k, nginx));
        let met = ours <= theirs + ADDED_GOAL_MS;
        println!(
            "| added p50, {kind} | {ours:+.3} ms | {theirs:+.3} ms | <= nginx + {ADDED_GOAL_MS} ms | {} |",
            verdict(met)
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

// ---------------------------------------------------------------------------------------------
// Memory per held stream.

/// Each proxy in turn, fresh, in front of a slow upstream (first token after 100 ms, then one a
/// second, for 10 minutes: no stream ends while it is held): `--held` streams opened through it,
/// each read to its first event and then held; the proxy's RSS growth over N.
fn memory_section(
    runtime: &tokio::runtime::Runtime,
    gateway: &Path,
    nginx: &Path,
    haproxy: &Path,
    options: &Options,
) {
    let slow = ["--sim-first-token-delay", "100ms", "--sim-token-interval", "1s", "--sim-tokens", "600"];
    let upstream = Gateway::start(gateway, "slow upstream", &slow);
    println!(
        "\nMemory per held proxied stream over HTTP/1.1: {} unique streams opened through a fresh proxy, each read \
         to its first event and then held (the upstream: one token a second); RSS of all the proxy's processes \
         (VmRSS, KiB) after ten short streams and while held, the lowest of readings every 0.25 s once it stops falling\n\
         | proxy | before | held | per stream |\n|---|---:|---:|---:|",
        options.held
    );
    let tag = run_tag();
    let mut per_stream = [f64::NAN; 3];
    for (i, name) in ["nginx", "haproxy", "gateway"].into_iter().enumerate() {
        let (port, server): (u16, Box<dyn Server>) = match name {
            "nginx" => {
                let proxy = Proxy::nginx(nginx, upstream.port, options.keepalive);
                (proxy.port, Box::new(proxy))
            }
            "haproxy" => {
                let proxy = Proxy::haproxy(haproxy, upstream.port, options.keepalive);
                (proxy.port, Box::new(proxy))
            }
            _ => {
                let args = options.front(&upstream);
                let front =
                    Gateway::start(gateway, "gateway", &args.iter().map(String::as_str).collect::<Vec<_>>());
                (front.port, Box::new(front))
            }
        };
        if let Err(why) = runtime.block_on(warm_up(port, &format!("{tag} {name}"))) {
            println!("| {name} | warm-up failed: {why} | | |");
            continue;
        }
        let before = server.rss_kib();
        let held = runtime.block_on(hold_streams(port, options.held, &format!("{tag} {name}")));
        match held {
            Ok(streams) => {
                let during = settled_rss(server.as_ref());
                let per = (during as f64 - before as f64) / streams.len() as f64;
                println!("| {name} | {before} | {during} | {per:.1} KiB |");
                per_stream[i] = per;
                drop(streams);
            }
            Err(why) => println!("| {name} | {before} | failed: {why} | |"),
        }
    }
    let [nginx, haproxy, ours] = per_stream;
    println!(
        "gateway / nginx {:.2}x, gateway / haproxy {:.2}x; issue 26's goal, at most nginx's: {}",
        ours / nginx,
        ours / haproxy,
        verdict(ours <= nginx)
    );
}

/// Ten short streams read to their end, at once, before the baseline: the proxy's workers,
/// buffers and allocator warmed, as in a proxy that serves (as scripts/memory.py does).
async fn warm_up(port: u16, tag: &str) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{port}{}", Dialect::Chat.path());
    let streams = (0..10).map(|i| {
        // Two tokens: the slow upstream's whole answer would take minutes.
        let body = format!(
            r#"{{"model":"bench","max_tokens":2,"messages":[{{"role":"user","content":"warm {tag} {i}"}}],"stream":true}}"#
        );
        let url = url.clone();
        async move { stream_events(&load_client(), &url, Dialect::Chat, body).await }
    });
    futures::future::join_all(streams).await.into_iter().try_for_each(|r| r.map(drop))
}

/// RSS once it has stopped falling: read every 0.25 s from 1 s after the streams are open until
/// the lowest reading has stood for 1.5 s (6 s at most), and the lowest taken. What opening the
/// streams freed is given back over a moment (jemalloc's decay; see scripts/memory.py), so the
/// lowest is what the held streams keep.
fn settled_rss(server: &dyn Server) -> u64 {
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let (mut lowest, mut since) = (server.rss_kib(), Instant::now());
    while start.elapsed() < Duration::from_secs(6) && since.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(250));
        let rss = server.rss_kib();
        if rss < lowest {
            (lowest, since) = (rss, Instant::now());
        }
    }
    lowest
}

/// Opens `count` unique streams through the proxy on `port` (100 at a time), each read to its
/// first event; returns the open connections, or why not within 60 s.
async fn hold_streams(port: u16, count: usize, tag: &str) -> Result<Vec<tokio::net::TcpStream>, String> {
    let opening = futures::stream::iter(0..count)
        .map(|i| open_held(port, chat_body(&format!("held {tag} {i}"), true)))
        .buffer_unordered(100)
        .collect::<Vec<_>>();
    let opened = tokio::time::timeout(Duration::from_secs(60), opening)
        .await
        .map_err(|_| format!("{count} streams not open within 60 s"))?;
    opened.into_iter().collect()
}

/// One streaming request over a raw HTTP/1.1 connection, read until its first `data:` event
/// (10 s at most); the connection is returned unread from there on.
async fn open_held(port: u16, body: String) -> Result<tokio::net::TcpStream, String> {
    let mut socket =
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| format!("connect: {e}"))?;
    let mut request = Vec::new();
    let _ = write!(
        request,
        "POST {} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        Dialect::Chat.path(),
        body.len()
    );
    socket.write_all(&request).await.map_err(|e| format!("send: {e}"))?;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let first_event = async {
        while !received.windows(5).any(|w| w == b"data:") {
            let n = socket.read(&mut buffer).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err(format!("closed before an event: {}", String::from_utf8_lossy(&received)));
            }
            received.extend_from_slice(&buffer[..n]);
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), first_event)
        .await
        .map_err(|_| "no event in 10 s".to_owned())??;
    if !received.starts_with(b"HTTP/1.1 200") {
        return Err(format!("not 200: {}", String::from_utf8_lossy(&received)));
    }
    Ok(socket)
}
