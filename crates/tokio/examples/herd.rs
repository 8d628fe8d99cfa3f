//! The thundering herd, measured: thousands of identical streaming requests (plus a few unique
//! ones, and cancellations, leaders included) against a simulated LLM, through one streamflight manager.
//!
//! ```sh
//! cargo run --release --example herd                       # 10,000 identical + 100 unique requests
//! cargo run --release --example herd -- --clients 50000 --keys 1000 --tokens 100 --cancel 0.2
//! cargo run --release --example herd -- --help
//! ```
//!
//! It ends with a table: upstream calls made against what they would have been without
//! streamflight, the bytes the upstream never had to send, latencies, and peak memory.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use streamflight_tokio::{Event, Flights, Role, Stats};

/// What the herd looks like and how the simulated model behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// Identical requests fired at once (the herd).
    pub clients: usize,
    /// Unique requests (each its own prompt) sprinkled among them.
    pub keys: usize,
    /// Tokens per answer.
    pub tokens: usize,
    /// Fraction of requests cancelled part-way, in `0.0..=1.0`; when above 0,
    /// the herd's leader is always one of them.
    pub cancel: f64,
    /// The model's preparation time before its first token.
    pub prepare: Duration,
    /// Time between tokens.
    pub per_token: Duration,
    /// Seed of the choice of who cancels and when.
    pub seed: u64,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clients: 10_000,
            keys: 100,
            tokens: 50,
            cancel: 0.05,
            prepare: Duration::from_millis(300),
            per_token: Duration::from_millis(20),
            seed: 7,
            progress: true,
        }
    }
}

const USAGE: &str = "\
usage: herd [--clients N] [--keys N] [--tokens N] [--cancel RATIO] [--prepare-ms MS] [--token-ms MS] [--seed N] [--quiet]

  --clients N      identical requests fired at once            (default 10000)
  --keys N         unique requests sprinkled among them         (default 100)
  --tokens N       tokens per answer                            (default 50)
  --cancel RATIO   fraction of requests cancelled part-way;
                   the herd's leader is always one of them      (default 0.05)
  --prepare-ms MS  the model's time before its first token      (default 300)
  --token-ms MS    time between tokens                          (default 20)
  --seed N         who cancels, and when                        (default 7)
  --quiet          no progress bar";

impl Options {
    /// Parses command-line flags (without the program name); `Err` holds the message to print.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut options = Options::default();
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            if flag == "--quiet" {
                options.progress = false;
                continue;
            }
            if flag == "--help" || flag == "-h" {
                return Err(USAGE.to_owned());
            }
            let value = args.next().ok_or_else(|| format!("{flag} needs a value\n\n{USAGE}"))?;
            let bad = || format!("{flag}: cannot read {value:?}\n\n{USAGE}");
            match flag.as_str() {
                "--clients" => options.clients = value.parse().map_err(|_| bad())?,
                "--keys" => options.keys = value.parse().map_err(|_| bad())?,
                "--tokens" => options.tokens = value.parse().map_err(|_| bad())?,
                "--cancel" => options.cancel = value.parse::<f64>().map_err(|_| bad())?.clamp(0.0, 1.0),
                "--prepare-ms" => options.prepare = Duration::from_millis(value.parse().map_err(|_| bad())?),
                "--token-ms" => options.per_token = Duration::from_millis(value.parse().map_err(|_| bad())?),
                "--seed" => options.seed = value.parse().map_err(|_| bad())?,
                _ => return Err(format!("unknown flag {flag}\n\n{USAGE}")),
            }
        }
        Ok(options)
    }

    fn requests(&self) -> usize {
        self.clients + self.keys
    }

    fn distinct_keys(&self) -> usize {
        usize::from(self.clients > 0) + self.keys
    }
}

/// What the upstream did, counted inside the simulated model.
#[derive(Default)]
struct Meter {
    /// Calls to the model (preparations started).
    calls: AtomicU64,
    /// Bytes the model sent.
    bytes: AtomicU64,
}

/// The simulated model: `prepare`, then `tokens` tokens, one every `per_token`.
fn model(
    prompt: u32,
    options: &Options,
    meter: Arc<Meter>,
) -> impl Future<Output = Result<impl Stream<Item = Result<Bytes, String>> + Send + 'static, String>>
+ Send
+ 'static {
    const WORDS: [&str; 12] =
        ["The", "sky", "is", "blue", "because", "air", "scatters", "short", "waves", "of", "sun", "light"];
    let (prepare, per_token, tokens) = (options.prepare, options.per_token, options.tokens);
    async move {
        meter.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(prepare).await;
        let start = tokio::time::Instant::now() + per_token;
        let ticks = tokio::time::interval_at(start, per_token);
        Ok(futures::stream::unfold((0, ticks, meter), move |(i, mut ticks, meter)| async move {
            if i == tokens {
                return None;
            }
            ticks.tick().await;
            let token = Bytes::from(format!("{} ", WORDS[(i + prompt as usize) % WORDS.len()]));
            meter.bytes.fetch_add(token.len() as u64, Ordering::Relaxed);
            Some((Ok(token), (i + 1, ticks, meter)))
        }))
    }
}

/// One request's plan: its prompt, and after how many items it cancels, if it does.
struct Plan {
    prompt: u32,
    cancel_after: Option<usize>,
}

/// A splitmix64 generator: enough randomness for a demo, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The herd in firing order: prompt 0 is the herd's, prompts 1..=keys the unique ones, spread evenly.
fn plans(options: &Options) -> Vec<Plan> {
    let mut rng = Rng(options.seed);
    let cancel_point = |rng: &mut Rng| {
        // 0 items: cancelled during the preparation.
        rng.chance(options.cancel).then(|| rng.below(options.tokens))
    };
    let mut plans = Vec::with_capacity(options.requests());
    // The next unique prompt to fire.
    let mut unique = 1;
    for client in 0..options.clients {
        // The herd's leader is cancelled for sure, half-way through at most.
        let cancel_after = match client {
            0 => (options.cancel > 0.0).then(|| rng.below(options.tokens / 2 + 1)),
            _ => cancel_point(&mut rng),
        };
        plans.push(Plan { prompt: 0, cancel_after });
        while unique <= options.keys && unique <= (client + 1) * options.keys / options.clients {
            plans.push(Plan { prompt: unique as u32, cancel_after: cancel_point(&mut rng) });
            unique += 1;
        }
    }
    for prompt in unique..=options.keys {
        plans.push(Plan { prompt: prompt as u32, cancel_after: cancel_point(&mut rng) });
    }
    plans
}

/// How one request went.
struct Outcome {
    prompt: u32,
    role: Role,
    items: u64,
    bytes: u64,
    first_item: Option<Duration>,
    done: Option<Duration>,
    cancelled: bool,
}

/// The figures the demo prints.
#[derive(Clone, Debug)]
pub struct Report {
    /// The options it ran with.
    pub options: Options,
    /// Requests made.
    pub requests: u64,
    /// Distinct prompts among them.
    pub distinct_keys: u64,
    /// Calls the model received (with streamflight).
    pub upstream_calls: u64,
    /// Items (tokens) delivered to clients, all requests together.
    pub items_delivered: u64,
    /// Bytes the model sent.
    pub upstream_bytes: u64,
    /// Bytes delivered to clients: what the model would have sent without streamflight.
    pub delivered_bytes: u64,
    /// Requests that ended `Done`.
    pub done: u64,
    /// Requests that ended `Cancelled`.
    pub cancelled: u64,
    /// Requests that ended `Failed`.
    pub failed: u64,
    /// Leaders cancelled while at least one other request of their flight went on to `Done`.
    pub leaders_cancelled: u64,
    /// Requests that got `Done` although their flight's leader was cancelled.
    pub orphans_finished: u64,
    /// Time from `request` to the first item: p50, p99.
    pub first_item: (Duration, Duration),
    /// Time from `request` to `Done`: p50, p99.
    pub to_done: (Duration, Duration),
    /// Wall time of the whole herd.
    pub elapsed: Duration,
    /// Peak resident memory of the process (`VmHWM`), in bytes; 0 where unknown.
    pub peak_memory: u64,
    /// The manager's own counters at the end.
    pub stats: Stats,
}

/// Fires the herd, waits for every request to end, and measures.
pub async fn run(options: &Options) -> Report {
    let flights: Flights<u32, Bytes, String> = Flights::default();
    let meter = Arc::new(Meter::default());
    let plans = plans(options);
    let bar = if options.progress { ProgressBar::new(plans.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>3} [{bar:32}] {pos}/{len} requests ended · {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let delivered = Arc::new(AtomicU64::new(0));

    let started = Instant::now();
    let mut clients = Vec::with_capacity(plans.len());
    for Plan { prompt, cancel_after } in plans {
        let at = Instant::now();
        let mut answer = flights.request(prompt, model(prompt, options, Arc::clone(&meter)));
        let (bar, delivered, prepare) = (bar.clone(), Arc::clone(&delivered), options.prepare);
        clients.push(tokio::spawn(async move {
            let role = answer.role();
            let mut outcome =
                Outcome { prompt, role, items: 0, bytes: 0, first_item: None, done: None, cancelled: false };
            if cancel_after == Some(0) {
                // Gone while the model is still preparing.
                tokio::time::sleep(prepare / 2).await;
                answer.cancel();
            }
            while let Some(event) = answer.next().await {
                match event {
                    Event::Item(token) => {
                        outcome.first_item.get_or_insert_with(|| at.elapsed());
                        outcome.items += 1;
                        outcome.bytes += token.len() as u64;
                        if delivered.fetch_add(1, Ordering::Relaxed).is_multiple_of(4096) {
                            bar.set_message(format!(
                                "{} tokens delivered",
                                delivered.load(Ordering::Relaxed)
                            ));
                        }
                        if cancel_after == Some(outcome.items as usize) {
                            answer.cancel();
                        }
                    }
                    Event::Done => outcome.done = Some(at.elapsed()),
                    Event::Cancelled => outcome.cancelled = true,
                    Event::Failed(_) => {}
                }
            }
            bar.inc(1);
            outcome
        }));
    }
    let mut outcomes = Vec::with_capacity(clients.len());
    for client in clients {
        outcomes.push(client.await.expect("a client task"));
    }
    let elapsed = started.elapsed();
    bar.finish_with_message(format!("{} tokens delivered", delivered.load(Ordering::Relaxed)));

    report(options, &outcomes, &meter, flights.stats(), elapsed)
}

fn report(options: &Options, outcomes: &[Outcome], meter: &Meter, stats: Stats, elapsed: Duration) -> Report {
    let count = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count() as u64;
    // Per prompt: was its leader cancelled, and how many others finished.
    let mut flights: HashMap<u32, (bool, u64)> = HashMap::new();
    for o in outcomes {
        let entry = flights.entry(o.prompt).or_default();
        if o.role == Role::Leader {
            entry.0 = o.cancelled;
        } else if o.done.is_some() {
            entry.1 += 1;
        }
    }
    let orphaned = flights.values().filter(|(cancelled, finished)| *cancelled && *finished > 0);
    let percentiles = |mut times: Vec<Duration>| {
        times.sort_unstable();
        let at = |p: usize| times.get((times.len() * p / 100).min(times.len().saturating_sub(1))).copied();
        (at(50).unwrap_or_default(), at(99).unwrap_or_default())
    };
    Report {
        options: options.clone(),
        requests: outcomes.len() as u64,
        distinct_keys: options.distinct_keys() as u64,
        upstream_calls: meter.calls.load(Ordering::Relaxed),
        items_delivered: outcomes.iter().map(|o| o.items).sum(),
        upstream_bytes: meter.bytes.load(Ordering::Relaxed),
        delivered_bytes: outcomes.iter().map(|o| o.bytes).sum(),
        done: count(&|o| o.done.is_some()),
        cancelled: count(&|o| o.cancelled),
        failed: count(&|o| o.done.is_none() && !o.cancelled),
        leaders_cancelled: orphaned.clone().count() as u64,
        orphans_finished: orphaned.map(|(_, finished)| finished).sum(),
        first_item: percentiles(outcomes.iter().filter_map(|o| o.first_item).collect()),
        to_done: percentiles(outcomes.iter().filter_map(|o| o.done).collect()),
        elapsed,
        peak_memory: peak_memory(),
        stats,
    }
}

/// The process's peak resident set (`VmHWM` in `/proc/self/status`), in bytes; 0 off Linux.
pub fn peak_memory() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// `12345678` as `12,345,678`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        let row = |f: &mut fmt::Formatter<'_>, what: &str, with: String, without: String| {
            writeln!(f, "| {what:<39} | {with:>18} | {without:>26} |")
        };
        writeln!(
            f,
            "herd: {} identical + {} unique requests, {} tokens every {} ms after {} ms, {:.0}% cancelled; {:.2} s",
            thousands(o.clients as u64),
            thousands(o.keys as u64),
            o.tokens,
            o.per_token.as_millis(),
            o.prepare.as_millis(),
            o.cancel * 100.0,
            self.elapsed.as_secs_f64(),
        )?;
        row(f, "", "with streamflight".into(), "without".into())?;
        writeln!(f, "|{:-<41}|{:-<20}|{:-<28}|", "", "", "")?;
        row(f, "requests", thousands(self.requests), thousands(self.requests))?;
        let fewer = self.requests as f64 / self.upstream_calls.max(1) as f64;
        row(
            f,
            "upstream streams opened",
            thousands(self.upstream_calls),
            format!("{} ({fewer:.0}x)", thousands(self.requests)),
        )?;
        row(f, "items delivered", thousands(self.items_delivered), thousands(self.items_delivered))?;
        row(
            f,
            "bytes sent by the upstream",
            thousands(self.upstream_bytes),
            thousands(self.delivered_bytes),
        )?;
        let saved = self.delivered_bytes.saturating_sub(self.upstream_bytes);
        let share = 100.0 * saved as f64 / self.delivered_bytes.max(1) as f64;
        row(
            f,
            "bytes that never left the upstream",
            format!("{} ({share:.1}%)", thousands(saved)),
            "0".into(),
        )?;
        let (p50, p99) = self.first_item;
        row(f, "time to first item, p50 / p99", format!("{} / {}", ms(p50), ms(p99)), String::new())?;
        let (p50, p99) = self.to_done;
        row(f, "time to Done, p50 / p99", format!("{} / {}", ms(p50), ms(p99)), String::new())?;
        row(
            f,
            "ended Done / Cancelled / Failed",
            format!("{} / {} / {}", thousands(self.done), thousands(self.cancelled), thousands(self.failed)),
            String::new(),
        )?;
        row(
            f,
            "leaders cancelled, their flight went on",
            thousands(self.leaders_cancelled),
            format!("({} followers got Done)", thousands(self.orphans_finished)),
        )?;
        row(
            f,
            "peak memory (VmHWM)",
            format!("{:.1} MiB", self.peak_memory as f64 / (1 << 20) as f64),
            String::new(),
        )?;
        let s = &self.stats;
        writeln!(
            f,
            "stats: requests {}, flights {}, joined {}, cancelled {}, aborted {}, active flights {}, active requests {}",
            s.requests, s.flights, s.joined, s.cancelled, s.aborted, s.active_flights, s.active_requests
        )
    }
}

#[tokio::main]
async fn main() {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    print!("{}", run(&options).await);
}
