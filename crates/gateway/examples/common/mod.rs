//! What the gateway's benchmark examples share (`latency.rs`, `proxies.rs`; each includes this
//! file as `mod common;`): child servers on free ports of 127.0.0.1 and their CPU time from
//! /proc, the open-loop load client and its samples, and facts about the machine and the build.

// Each example uses a part of this module: what one leaves unused is the other's.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tokio::sync::{Mutex, mpsc};

// ---------------------------------------------------------------------------------------------
// The servers, as child processes.

/// A server under load, child of this process, whose CPU time and memory are read from /proc.
pub trait Server {
    /// Its process (a master, for a server of several).
    fn pid(&self) -> u32;

    /// CPU time (user + system) its processes have used so far.
    fn cpu(&self) -> Duration {
        tree_cpu(self.pid())
    }

    /// Resident memory of its processes, KiB.
    fn rss_kib(&self) -> u64 {
        tree_rss_kib(self.pid())
    }
}

/// CPU time (user + system) that process `pid` and its children (nginx's workers, say) have used
/// so far, from `/proc/<pid>/stat` (Linux; zero elsewhere). Clock ticks of 10 ms: enough over
/// seconds of load. A child that has exited is no longer counted: the servers here keep theirs.
#[cfg(target_os = "linux")]
pub fn tree_cpu(pid: u32) -> Duration {
    let ticks: u64 = family(pid).iter().filter_map(|&p| Some(stat_field(p, 11)? + stat_field(p, 12)?)).sum();
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Duration::from_secs_f64(ticks as f64 / per_second.max(1) as f64)
}

#[cfg(not(target_os = "linux"))]
pub fn tree_cpu(_pid: u32) -> Duration {
    Duration::ZERO
}

/// Resident memory (VmRSS) of process `pid` and its children, in KiB (Linux; zero elsewhere).
pub fn tree_rss_kib(pid: u32) -> u64 {
    let rss = |p: u32| {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
        line.split_whitespace().next()?.parse::<u64>().ok()
    };
    family(pid).into_iter().filter_map(rss).sum()
}

/// `pid` and the processes whose parent it is (read from every `/proc/<n>/stat`).
pub fn family(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let Ok(entries) = std::fs::read_dir("/proc") else { return pids };
    for entry in entries.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if stat_field(child, 1) == Some(u64::from(pid)) {
            pids.push(child);
        }
    }
    pids
}

/// The `index`th number after the command's `(name)` in `/proc/<pid>/stat`: 1 is the parent,
/// 11 utime and 12 stime (fields 4, 14 and 15 of proc(5)).
fn stat_field(pid: u32, index: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(index)?.parse().ok()
}

/// A gateway child process, killed (and reaped) on drop.
pub struct Gateway {
    pub port: u16,
    pub child: Child,
}

impl Gateway {
    /// Starts `binary` with `args` on a free port of 127.0.0.1 and waits (10 s at most) for its
    /// `/healthz`. Another process may take the port between its choice and the bind: then the
    /// child exits, and another port is tried.
    pub fn start(binary: &Path, name: &'static str, args: &[&str]) -> Gateway {
        Gateway::start_logging(binary, name, args, None)
    }

    /// As [`Gateway::start`], its log (standard error) written to `log` (else inherited), and
    /// `--log warn` only when `args` name no `--log` of their own.
    pub fn start_logging(binary: &Path, name: &'static str, args: &[&str], log: Option<&Path>) -> Gateway {
        let (port, child) = start_on_free_port(name, |port| {
            let mut command = Command::new(binary);
            command
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .args(if args.contains(&"--log") { &[][..] } else { &["--log", "warn"][..] })
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            if let Some(log) = log {
                let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
                command.stderr(file);
            }
            // Only the flags given here: no setting of the caller's environment (`STREAMFLIGHT_*`)
            // reaches the gateways. (`TOKIO_WORKER_THREADS` does, for experiments.)
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("STREAMFLIGHT_") {
                    command.env_remove(name);
                }
            }
            die_with_parent(&mut command, libc::SIGKILL);
            command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()))
        });
        Gateway { port, child }
    }

    /// The base URL to give as `--upstream`.
    pub fn v1(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The URL of `dialect`'s path.
    pub fn url(&self, dialect: Dialect) -> String {
        format!("http://127.0.0.1:{}{}", self.port, dialect.path())
    }
}

impl Server for Gateway {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server with `spawn(port)` on a free port of 127.0.0.1 and waits (10 s at most) until
/// `GET /healthz` through that port answers 200 (a proxy's answer comes from its upstream).
/// Another process may take the port between its choice and the bind: then the child exits, and
/// another port is tried.
pub fn start_on_free_port(name: &str, mut spawn: impl FnMut(u16) -> Child) -> (u16, Child) {
    let mut last = String::new();
    for _attempt in 0..5 {
        let port = free_port();
        let mut child = spawn(port);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                last = format!("{name} exited at start ({status})");
                break;
            }
            if healthy(port) {
                return (port, child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name} on port {port}: /healthz did not answer within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("{last}");
}

/// Asks the kernel for a port nobody uses right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// Whether `GET /healthz` answers 200 (plain std I/O, so no runtime is needed).
pub fn healthy(port: u16) -> bool {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let request = "GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 200")
}

/// On Linux, the child gets `signal` when this process dies, even by SIGKILL. (The signal follows
/// the thread that spawned the child: always the main thread here, which lives as long as the
/// process.) `signal` is SIGKILL for a lone process, SIGTERM for one whose own children must go
/// with it (nginx's master stops its workers on SIGTERM; killed, it would leave them serving).
#[cfg(target_os = "linux")]
pub fn die_with_parent(command: &mut Command, signal: libc::c_int) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, signal);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub fn die_with_parent(_command: &mut Command, _signal: i32) {}

/// Raises the soft open-file limit to the hard one (the burst holds two descriptors per stream
/// in the front gateway and one here; the children inherit the limit). Returns the limit.
#[cfg(unix)]
pub fn raise_open_file_limit() -> libc::rlim_t {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid rlimit for the call to fill and then read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

#[cfg(not(unix))]
pub fn raise_open_file_limit() -> u64 {
    0
}

// ---------------------------------------------------------------------------------------------
// Sections 1 and 2: the open-loop load.

/// One open-loop run.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub rate: u32,
    /// Requests sent first and not counted.
    pub warmup: u64,
    /// Requests counted.
    pub measured: u64,
    pub connections: usize,
    pub mode: Mode,
    pub dialect: Dialect,
}

impl Load {
    /// Chat requests at `rate` a second for `seconds`, after a second of warm-up.
    pub fn paced(rate: u32, seconds: u32, connections: usize, mode: Mode) -> Load {
        let measured = u64::from(seconds) * u64::from(rate);
        Load { rate, warmup: u64::from(rate), measured, connections, mode, dialect: Dialect::Chat }
    }
}

/// An API the gateway coalesces, as a client of sections 1 and 2 speaks it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dialect {
    /// Chat Completions: unnamed events, then `data: [DONE]`.
    Chat,
    /// OpenAI's Responses API: named events, the last `response.completed`.
    Responses,
    /// Anthropic's Messages: named events, the last `message_stop`.
    Messages,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Chat => "chat",
            Dialect::Responses => "responses",
            Dialect::Messages => "messages",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Dialect::Chat => "/v1/chat/completions",
            Dialect::Responses => "/v1/responses",
            Dialect::Messages => "/v1/messages",
        }
    }

    /// A request for `prompt`.
    pub fn body(self, prompt: &str, stream: bool) -> String {
        let member = if stream { r#","stream":true"# } else { "" };
        match self {
            Dialect::Chat => chat_body(prompt, stream),
            Dialect::Responses => format!(r#"{{"model":"bench","input":"{prompt}"{member}}}"#),
            Dialect::Messages => format!(
                r#"{{"model":"bench","max_tokens":100,"messages":[{{"role":"user","content":"{prompt}"}}]{member}}}"#
            ),
        }
    }

    /// The `data:` or `event:` value of the event that ends a whole stream. Only Chat's is a
    /// frame of its own; the others' streams end with their body, and this event is how a
    /// stream that ended there is told from one cut short.
    pub fn last(self) -> &'static str {
        match self {
            Dialect::Chat => "[DONE]",
            Dialect::Responses => "response.completed",
            Dialect::Messages => "message_stop",
        }
    }
}

/// What each request of a load is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// A non-streaming request.
    Plain,
    /// A streaming request.
    Stream,
    /// Two identical streaming requests at once, one direct and one through the gateway: the
    /// upstream serves both from one flight, so each event leaves it once for both paths.
    Pair,
}

/// What one run measured, in nanoseconds.
#[derive(Default)]
pub struct Samples {
    /// Scheduled send to the response's last byte.
    pub whole: Dist,
    /// Scheduled send to the first `data:` event (streams only).
    pub first: Dist,
    /// Between consecutive `data:` events of one stream (streams only).
    pub gaps: Dist,
    /// Scheduled send to a connection's picking the request up: the client's own delay.
    pub dispatch: Dist,
    /// Pairs: an event's arrival through the gateway minus the same event's arrival direct.
    pub delay: Dist,
    /// Pairs: what the gateway added to a gap, the change of `delay` from one event to the next
    /// (through's gap minus direct's gap between the same two events).
    pub added_gap: Dist,
    /// Fewest `data:` events in one stream (streams only), to check they were whole.
    pub fewest_events: Option<usize>,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Samples {
    pub fn merge(&mut self, other: Samples) {
        self.whole.0.extend(other.whole.0);
        self.first.0.extend(other.first.0);
        self.gaps.0.extend(other.gaps.0);
        self.dispatch.0.extend(other.dispatch.0);
        self.delay.0.extend(other.delay.0);
        self.added_gap.0.extend(other.added_gap.0);
        self.fewest_events = match (self.fewest_events, other.fewest_events) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
    }

    pub fn record(&mut self, one: One, mode: Mode) {
        self.whole.add(one.whole);
        if mode == Mode::Plain {
            return;
        }
        self.first.add(one.first);
        for gap in one.gaps {
            self.gaps.add(gap);
        }
        self.fewest_events = Some(self.fewest_events.map_or(one.events, |f| f.min(one.events)));
        if let Some((direct, through)) = one.pair {
            for (d, t) in direct.iter().zip(&through) {
                self.delay.add_between(*d, *t);
            }
            for k in 1..direct.len().min(through.len()) {
                let (direct_gap, through_gap) = (direct[k] - direct[k - 1], through[k] - through[k - 1]);
                let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
                self.added_gap.0.push(ns(through_gap) - ns(direct_gap));
            }
        }
    }

    pub fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }
}

/// A request to send: its number and the instant it is due.
pub type Job = (u64, Instant);

/// Sends `load.warmup + load.measured` unique requests of `load.dialect` to `url` at
/// `load.rate` per second, whatever the answers do: a pacer thread releases each at its instant;
/// `load.connections` tasks, each with its own client and so its own keep-alive connection,
/// take them in turn.
/// Pairs also go to `second` (through the gateway), on a second connection of each task.
/// Bounded: the count is fixed and every request has a 10 s timeout.
pub async fn open_loop(url: String, second: Option<String>, load: &Load, tag: &str) -> Samples {
    let (jobs, queue) = mpsc::unbounded_channel::<Job>();
    let queue = Arc::new(Mutex::new(queue));
    let mut workers = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let (client, other) = (load_client(), load_client());
        let (queue, url, second, tag) = (Arc::clone(&queue), url.clone(), second.clone(), tag.to_owned());
        let load = *load;
        workers.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            loop {
                let job = queue.lock().await.recv().await;
                let Some((seq, due)) = job else { break };
                let counted = seq >= load.warmup;
                if counted {
                    samples.dispatch.add(due.elapsed());
                }
                let prompt = format!("latency {tag} {seq}");
                let dialect = load.dialect;
                let outcome = match (load.mode, &second) {
                    (Mode::Plain, _) => plain_once(&client, &url, dialect.body(&prompt, false), due).await,
                    (Mode::Stream, _) => stream_once(&client, &url, dialect, &prompt, due).await,
                    (Mode::Pair, Some(through)) => {
                        pair_once(&client, &url, &other, through, pair_body(&prompt), due).await
                    }
                    (Mode::Pair, None) => Err("a pair needs a second URL".to_owned()),
                };
                match outcome {
                    Ok(one) if counted => samples.record(one, load.mode),
                    Ok(_) => {}
                    Err(e) => samples.error(e),
                }
            }
            samples
        }));
    }

    let period_ns = 1_000_000_000 / u64::from(load.rate.max(1));
    let total = load.warmup + load.measured;
    let pacer = std::thread::spawn(move || {
        precise_sleeps();
        let start = Instant::now() + Duration::from_millis(10);
        for seq in 0..total {
            let due = start + Duration::from_nanos(period_ns * seq);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if jobs.send((seq, due)).is_err() {
                break;
            }
        }
    });
    let mut samples = Samples::default();
    for worker in workers {
        samples.merge(worker.await.expect("a load task"));
    }
    pacer.join().expect("the pacer");
    for dist in [
        &mut samples.whole,
        &mut samples.first,
        &mut samples.gaps,
        &mut samples.dispatch,
        &mut samples.delay,
        &mut samples.added_gap,
    ] {
        dist.0.sort_unstable();
    }
    samples
}

/// Runs `load` against `url` (and `second`, for pairs) and notes the CPU time each of `servers`
/// spent on it, per request sent (warm-up included), in microseconds.
pub fn measured(
    runtime: &tokio::runtime::Runtime,
    gateways: &[&dyn Server],
    (url, second): (String, Option<String>),
    load: &Load,
    tag: &str,
) -> (Samples, Vec<f64>) {
    let before: Vec<Duration> = gateways.iter().map(|g| g.cpu()).collect();
    let samples = runtime.block_on(open_loop(url, second, load, tag));
    let sent = (load.warmup + load.measured).max(1) as f64;
    let cpu = gateways
        .iter()
        .zip(before)
        .map(|(g, b)| g.cpu().saturating_sub(b).as_secs_f64() * 1e6 / sent)
        .collect();
    (samples, cpu)
}

/// On Linux, makes this thread's sleeps end within about a microsecond of their deadline
/// (the default timer slack is 50 us).
#[cfg(target_os = "linux")]
pub fn precise_sleeps() {
    // SAFETY: sets a property of the calling thread; no memory is passed.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

#[cfg(not(target_os = "linux"))]
pub fn precise_sleeps() {}

/// A client for one keep-alive HTTP/1.1 connection.
pub fn load_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client")
}

/// A streaming chat request that asks for usage: the gateway always asks its upstream for it,
/// so with it the direct request and the gateway's upstream request are the same request, and
/// the upstream (itself a gateway) serves them from one flight.
pub fn pair_body(prompt: &str) -> String {
    format!(
        r#"{{"model":"bench","messages":[{{"role":"user","content":"{prompt}"}}],"stream":true,"stream_options":{{"include_usage":true}}}}"#
    )
}

/// A chat request for `prompt`.
pub fn chat_body(prompt: &str, stream: bool) -> String {
    let stream = if stream { r#","stream":true"# } else { "" };
    format!(r#"{{"model":"bench","messages":[{{"role":"user","content":"{prompt}"}}]{stream}}}"#)
}

/// What one request took, counted from its scheduled instant.
pub struct One {
    pub whole: Duration,
    pub first: Duration,
    pub gaps: Vec<Duration>,
    pub events: usize,
    /// Pairs: each event's arrival direct and through.
    pub pair: Option<(Vec<Instant>, Vec<Instant>)>,
}

/// POSTs `body` as JSON to `url`; the response, its body unread.
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: String,
) -> Result<reqwest::Response, String> {
    let request = client.post(url).header("content-type", "application/json").body(body);
    request.send().await.map_err(|e| format!("send: {e}"))
}

pub async fn plain_once(
    client: &reqwest::Client,
    url: &str,
    body: String,
    due: Instant,
) -> Result<One, String> {
    let response = post_json(client, url, body).await?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| format!("body: {e}"))?;
    let whole = due.elapsed();
    if status != reqwest::StatusCode::OK {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    if !bytes.starts_with(b"{") {
        return Err("not a JSON completion".to_owned());
    }
    Ok(One { whole, first: whole, gaps: Vec::new(), events: 0, pair: None })
}

pub async fn stream_once(
    client: &reqwest::Client,
    url: &str,
    dialect: Dialect,
    prompt: &str,
    due: Instant,
) -> Result<One, String> {
    let events = stream_events(client, url, dialect, dialect.body(prompt, true)).await?;
    let whole = due.elapsed();
    let first = events.times.first().map_or(whole, |&t| t - due);
    let gaps = events.times.windows(2).map(|w| w[1] - w[0]).collect();
    Ok(One { whole, first, gaps, events: events.times.len(), pair: None })
}

/// The same request direct and through at once; the figures are the direct one's, plus both
/// streams' event times.
pub async fn pair_once(
    direct_client: &reqwest::Client,
    direct_url: &str,
    through_client: &reqwest::Client,
    through_url: &str,
    body: String,
    due: Instant,
) -> Result<One, String> {
    let (direct, through) = tokio::join!(
        stream_events(direct_client, direct_url, Dialect::Chat, body.clone()),
        stream_events(through_client, through_url, Dialect::Chat, body)
    );
    let (direct, through) = (direct?, through?);
    if direct.times.len() != through.times.len() {
        return Err(format!(
            "{} events direct but {} through: not one flight",
            direct.times.len(),
            through.times.len()
        ));
    }
    let whole = due.elapsed();
    let first = direct.times.first().map_or(whole, |&t| t - due);
    let gaps = direct.times.windows(2).map(|w| w[1] - w[0]).collect();
    Ok(One { whole, first, gaps, events: direct.times.len(), pair: Some((direct.times, through.times)) })
}

/// Sends a streaming request of `dialect` and reads its events to the end of the body, which
/// must have brought the dialect's last event.
pub async fn stream_events(
    client: &reqwest::Client,
    url: &str,
    dialect: Dialect,
    body: String,
) -> Result<Events, String> {
    let response = post_json(client, url, body).await?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("{status}: {text}"));
    }
    let mut events = Events::until(dialect.last());
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("stream: {e}"))?;
        events.feed(&chunk, Instant::now());
    }
    if !events.done {
        return Err(format!("stream ended without {}", dialect.last()));
    }
    Ok(events)
}

/// An SSE reader that notes when each `data:` event was complete (the arrival of the bytes
/// that ended it), and whether the last one came. Comments (`: keep-alive`) are not events.
pub struct Events {
    pub pending: Vec<u8>,
    pub times: Vec<Instant>,
    /// The `data:` or `event:` value of the last event ([`Dialect::last`]).
    pub last: &'static str,
    pub done: bool,
}

impl Events {
    pub fn until(last: &'static str) -> Events {
        Events { pending: Vec::new(), times: Vec::new(), last, done: false }
    }

    pub fn feed(&mut self, bytes: &[u8], now: Instant) {
        self.pending.extend_from_slice(bytes);
        while let Some((end, skip)) = blank_line(&self.pending) {
            // An event's `data:` line may follow its `id:` and `event:` lines, in any order.
            let lines = || self.pending[..end].split(|&b| b == b'\n');
            if lines().any(|line| line.starts_with(b"data:")) {
                self.times.push(now);
                let is_last = |line: &[u8]| {
                    let value = line.strip_prefix(b"data:").or_else(|| line.strip_prefix(b"event:"));
                    value.is_some_and(|value| value.trim_ascii() == self.last.as_bytes())
                };
                self.done |= lines().any(is_last);
            }
            self.pending.drain(..end + skip);
        }
    }
}

/// Where the first event of `bytes` ends: the offset of the blank line and its length.
pub fn blank_line(bytes: &[u8]) -> Option<(usize, usize)> {
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|at| (at, 2));
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|at| (at, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

// ---------------------------------------------------------------------------------------------
// Figures and tables.

/// Durations in nanoseconds, signed (a difference may be negative); sorted before they are read.
#[derive(Default)]
pub struct Dist(pub Vec<i64>);

impl Dist {
    pub fn add(&mut self, d: Duration) {
        self.0.push(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    }

    /// `later` minus `earlier`, negative when `later` came first.
    pub fn add_between(&mut self, earlier: Instant, later: Instant) {
        let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        self.0.push(if later >= earlier { ns(later - earlier) } else { -ns(earlier - later) });
    }

    /// The `p`th percentile (nearest rank) in ns; 0 when empty.
    pub fn pct(&self, p: f64) -> i64 {
        if self.0.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    pub fn max(&self) -> i64 {
        self.0.last().copied().unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

pub fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

pub fn errors(samples: &Samples) -> String {
    match &samples.first_error {
        Some(e) => format!("{} ({e})", samples.errors),
        None => samples.errors.to_string(),
    }
}

/// The client's own lateness (see `Samples::dispatch`) past which a run is called disturbed, ms.
pub const DISTURBED: f64 = 0.5;

/// Says so when the client itself was late: then the machine was busy with something else, and
/// the figures of this load say more about that than about the gateway.
pub fn warn_if_disturbed(direct: &Samples, through: &Samples) {
    let late = ms(direct.dispatch.pct(99.0)).max(ms(through.dispatch.pct(99.0)));
    if late > DISTURBED {
        println!(
            "note: this client was itself {late:.3} ms late at p99 handing requests out: the machine was busy; \
             these figures are disturbed, run again"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The machine and the build.

/// The gateway binary to start: `given`, else the default build's; exits, saying how to build it,
/// when there is none, and warns when the sources are newer than it.
pub fn gateway_binary(given: Option<PathBuf>, example: &str) -> PathBuf {
    let root = workspace_root();
    let gateway = given.unwrap_or_else(|| default_gateway(&root));
    if !gateway.is_file() {
        eprintln!(
            "{example}: no gateway binary at {}: build it first with\n  cargo build --profile dist -p streamflight-gateway",
            gateway.display()
        );
        std::process::exit(2);
    }
    warn_if_stale(&gateway, &root);
    gateway
}

/// The load client's runtime: two workers, as many as the machine the figures were taken on has
/// cores (the servers share them).
pub fn load_runtime() -> tokio::runtime::Runtime {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A report's first facts: the time (UTC), the CPUs and the load average.
pub fn machine_now() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{} UTC: {cpus} CPUs ({}), load average {} at start", utc_now(), cpu_model(), load_average())
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the workspace root")
}

/// `$STREAMFLIGHT_GATEWAY_BIN`, else the newer of the workspace's two builds of the gateway: the
/// binary as shipped (`--profile dist`, with LTO) and the release one.
pub fn default_gateway(root: &Path) -> PathBuf {
    if let Some(path) = std::env::var_os("STREAMFLIGHT_GATEWAY_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |t| root.join(t));
    let (dist, release) =
        (target.join("dist/streamflight-gateway"), target.join("release/streamflight-gateway"));
    let built = |path: &Path| path.metadata().and_then(|m| m.modified()).ok();
    match (built(&dist), built(&release)) {
        (Some(shipped), released) if released.is_none_or(|r| shipped >= r) => dist,
        _ => release,
    }
}

/// Warns when a source of the gateway (or of the crates under it) is newer than the binary.
pub fn warn_if_stale(binary: &Path, root: &Path) {
    let Ok(built) = binary.metadata().and_then(|m| m.modified()) else { return };
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut dirs: Vec<PathBuf> =
        ["crates/gateway/src", "crates/tokio/src", "crates/core/src"].iter().map(|d| root.join(d)).collect();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified())
                && newest.as_ref().is_none_or(|(t, _)| modified > *t)
            {
                newest = Some((modified, path));
            }
        }
    }
    if let Some((modified, path)) = newest
        && modified > built
    {
        eprintln!(
            "warning: {} is newer than the binary; rebuild it (cargo build --profile dist -p streamflight-gateway)",
            path.display()
        );
    }
}

pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// A tag unique to this run, in every prompt: no flight is shared with anything else.
pub fn run_tag() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

/// Now, as `YYYY-MM-DD HH:MM`, UTC (civil-from-days, without a date crate).
pub fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut text = String::new();
    let _ = write!(text, "{year:04}-{month:02}-{day:02} {:02}:{:02}", rest / 3600, rest % 3600 / 60);
    text
}
