//! Flights across replicas, measured (issue 14): what following another replica's flight
//! through Redis adds to each item's latency, how many store commands an item costs, and one
//! upstream request per key for 3,000 clients spread over three replicas.
//!
//! ```sh
//! cargo run --release -p streamflight-redis --example fleet_bench
//! ```
//!
//! It starts its own `redis-server` (from `PATH`, on a free port, persistence off; killed at
//! exit, also on a panic), runs three replicas in this process (each its own `Fleet`, `Flights`
//! and store connections, as in `tests/fleet.rs`) on a tokio runtime with 2 workers, and prints
//! markdown tables. Everything is bounded: a whole run is given up after two minutes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::thread;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedSender, unbounded};
use streamflight_redis::Subscription;
use streamflight_redis::redis::{self, aio::MultiplexedConnection};
use streamflight_redis::{Fleet, FleetConfig, Flights, Text};
use streamflight_tokio::{Config, Event};
use tokio::sync::{oneshot, watch};

/// Items per flight in the latency and command-count parts.
const ITEMS: usize = 2_000;
/// The upstream's pace there: one item every 100 µs, 10,000 items/s.
const EVERY: Duration = Duration::from_micros(100);
/// Measured latency rounds, after one untimed warm-up round (scripts loaded, connections made).
const ROUNDS: usize = 3;
/// The third part's clients, spread over the three replicas,
const CLIENTS: usize = 3_000;
/// on this many keys,
const KEYS: usize = 30;
/// each answer this many items.
const TOKENS: usize = 20;
/// A whole run is given up (with a panic, which still kills the server) after this long.
const DEADLINE: Duration = Duration::from_secs(120);

/// Every timestamp is nanoseconds since this one instant of the process: the replicas share
/// the process, so an item's send stamp and its receive stamps are on one clock.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Now, in nanoseconds since `EPOCH`.
fn stamp() -> u64 {
    u64::try_from(EPOCH.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// When the run is given up: every wait below is bounded by it.
static GIVE_UP: LazyLock<Instant> = LazyLock::new(|| Instant::now() + DEADLINE);

/// Panics (the server is still killed) once the run is over its deadline.
fn check_deadline(what: &str) {
    assert!(Instant::now() < *GIVE_UP, "gave up after {DEADLINE:?}: {what}");
}

type Replica = Flights<String, String, String>;

/// The benchmark's own `redis-server`: killed when dropped, so a panic anywhere (which unwinds
/// through `main`) does not leave it running.
struct Server {
    child: Child,
    port: u16,
    url: String,
}

impl Server {
    fn start() -> Server {
        // A free port now; the server takes it a moment later (as the tests do).
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (the Debian package redis-server)");
        Server { child, port, url: format!("redis://127.0.0.1:{port}/") }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `done` holds, polling every millisecond.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    while !done() {
        check_deadline(what);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One field of an `INFO` section, as a number.
async fn info_field(admin: &mut MultiplexedConnection, section: &str, field: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg(section).query_async(admin).await.expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
}

/// Waits until `readers` clients are parked in `XREAD BLOCK`: the followers are reading before
/// the first item exists, so no item's latency includes a reader's start.
async fn wait_readers(admin: &mut MultiplexedConnection, readers: u64) {
    while info_field(admin, "clients", "blocked_clients").await < readers {
        check_deadline("the followers' readers block on the stream");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The upstream of a measured flight: a thread that sends `n` items `"<i>:<send stamp>"`, one
/// every `EVERY` on an absolute schedule (late items go at once, so the mean rate holds). A
/// sleeping thread rather than a spinning one: the two cores are for the replicas and Redis.
/// Returns the first and last send stamps.
fn pace(n: usize, tx: UnboundedSender<String>) -> thread::JoinHandle<(u64, u64)> {
    thread::spawn(move || {
        let start = Instant::now();
        let mut stamps = (0, 0);
        for i in 0..n {
            let due = start + EVERY * u32::try_from(i).expect("a count that fits");
            if Instant::now() >= *GIVE_UP {
                break;
            }
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            let sent = stamp();
            if tx.unbounded_send(format!("{i}:{sent}")).is_err() {
                break;
            }
            if i == 0 {
                stamps.0 = sent;
            }
            stamps.1 = sent;
        }
        // The sender dropped here is the upstream's end.
        stamps
    })
}

/// A paced flight's items and their end as one subscriber sees them: receive − send of each
/// item, in nanoseconds, in order.
async fn latencies(mut subscription: Subscription<String, String>, n: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    let until = tokio::time::Instant::from_std(*GIVE_UP);
    loop {
        let event =
            tokio::time::timeout_at(until, subscription.next()).await.expect("the flight ends in time");
        // Stamped first: the parse is not part of the latency.
        let received = stamp();
        match event {
            Some(Event::Item(item)) => {
                let (i, sent) = item.split_once(':').expect("an item of the bench");
                assert_eq!(
                    i.parse::<usize>().expect("its number"),
                    out.len(),
                    "items in order, none missing"
                );
                out.push(received.saturating_sub(sent.parse().expect("its stamp")));
            }
            Some(Event::Done) => break,
            other => panic!("a paced flight ended with {other:?}"),
        }
    }
    assert_eq!(out.len(), n, "every item");
    out
}

/// What a follower passes as its preparation: never run while another replica leads.
fn follow_only() -> std::future::Ready<Result<futures::stream::Empty<Result<String, String>>, String>> {
    std::future::ready(Err("this replica should have followed, not led".to_owned()))
}

/// A paced flight of `ITEMS` led by `leader` and followed by `followers`, timed from the
/// moment every follower's reader is parked on the stream. Returns each replica's latencies
/// (leader first) and the items' first and last send stamps.
async fn paced_flight(
    admin: &mut MultiplexedConnection,
    key: &str,
    leader: &Replica,
    followers: &[&Replica],
) -> (Vec<Vec<u64>>, (u64, u64)) {
    let (tx, rx) = unbounded::<String>();
    let led = leader.fleet_stats().led;
    let joined: Vec<u64> = followers.iter().map(|f| f.fleet_stats().remote_joins).collect();
    let blocked = info_field(admin, "clients", "blocked_clients").await;
    let mut subscribers = vec![tokio::spawn(latencies(
        leader.request(key.to_owned(), async move { Ok(rx.map(Ok::<String, String>)) }),
        ITEMS,
    ))];
    // The leader first: it must hold the lease before anyone else asks.
    eventually("the leader leads", || leader.fleet_stats().led == led + 1).await;
    for (follower, joined) in followers.iter().zip(joined) {
        subscribers.push(tokio::spawn(latencies(follower.request(key.to_owned(), follow_only()), ITEMS)));
        eventually("a follower follows", || follower.fleet_stats().remote_joins == joined + 1).await;
    }
    wait_readers(admin, blocked + followers.len() as u64).await;
    let producer = pace(ITEMS, tx);
    let mut seen = Vec::new();
    for subscriber in subscribers {
        seen.push(subscriber.await.expect("a subscriber"));
    }
    let sent = tokio::task::spawn_blocking(move || producer.join().expect("the upstream thread"))
        .await
        .expect("the join");
    (seen, sent)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Nanoseconds as milliseconds, to the microsecond.
fn ms(ns: f64) -> String {
    format!("{:.3}", ns / 1e6)
}

/// p50, p99, max of one subscriber's latencies, in ns.
fn summary(mut latencies: Vec<u64>) -> [f64; 3] {
    latencies.sort_unstable();
    [percentile(&latencies, 0.50), percentile(&latencies, 0.99), latencies[latencies.len() - 1]]
        .map(|ns| ns as f64)
}

/// Part 1: per-item latency on the leader's own replica (a) and on a replica following it (b).
async fn latency(admin: &mut MultiplexedConnection, [a, b, _]: &[Replica; 3]) {
    println!("### 1. Per-item latency: the leader's replica vs another replica (ms)\n");
    println!(
        "{ITEMS} items at one per {} µs; receive - send of each item, a subscriber on each replica.\n",
        EVERY.as_micros()
    );
    println!(
        "| round | items/s sent | a (leads): p50 | p99 | max | b (follows): p50 | p99 | max | p99 b - a |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for round in 0..=ROUNDS {
        let (seen, (first, last)) = paced_flight(admin, &format!("latency {round}"), a, &[b]).await;
        let mut seen = seen.into_iter();
        let on_a = summary(seen.next().expect("a's"));
        let on_b = summary(seen.next().expect("b's"));
        let rate = (ITEMS - 1) as f64 / ((last - first) as f64 / 1e9);
        // Round 0 warms up (script loads, reader connections): not reported.
        if round > 0 {
            let row = [rate, on_a[0], on_a[1], on_a[2], on_b[0], on_b[1], on_b[2], on_b[1] - on_a[1]];
            print_row(&round.to_string(), &row);
            rows.push(row);
        }
        // Settle between rounds: nothing of one round's store traffic in the next.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let median: Vec<f64> = (0..rows[0].len())
        .map(|column| {
            let mut values: Vec<f64> = rows.iter().map(|row| row[column]).collect();
            values.sort_by(f64::total_cmp);
            values[values.len() / 2]
        })
        .collect();
    print_row("**median**", &median);
    let worst = rows.iter().map(|row| row[7]).fold(f64::MIN, f64::max);
    let verdict = if worst <= 2e6 { "met" } else { "missed" };
    println!(
        "\n(Each column's median over the rounds.) p99 added by following through Redis: median {} ms, \
         worst round {} ms; goal <= 2 ms: **{verdict}**.\n",
        ms(median[7]),
        ms(worst)
    );
}

/// A row of part 1: the rate sent, then latencies in ms.
fn print_row(label: &str, row: &[f64]) {
    let figures: Vec<String> = row[1..].iter().map(|&ns| ms(ns)).collect();
    println!("| {label} | {:.0} | {} |", row[0], figures.join(" | "));
}

/// `INFO commandstats`: calls (with rejected ones) and µs in Redis, by command.
async fn commandstats(admin: &mut MultiplexedConnection) -> BTreeMap<String, (u64, u64)> {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(admin).await.expect("INFO");
    let mut stats = BTreeMap::new();
    for line in info.lines() {
        let Some((name, fields)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else {
            continue;
        };
        let field = |wanted: &str| {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix(wanted)?.strip_prefix('=')?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        stats.insert(name.to_owned(), (field("calls") + field("rejected_calls"), field("usec")));
    }
    stats
}

/// The bench's own commands, left out of every count: its `INFO`s and its end marker.
fn own(command: &str) -> bool {
    command == "info" || command == "echo"
}

/// What MONITOR saw: calls by command, and whether a script ran it (else a replica sent it).
type Seen = BTreeMap<(String, bool), u64>;

/// The end marker the MONITOR reader stops at.
const MARK: &str = "fleet-bench-end";

/// A `MONITOR` connection, read by a thread until the end marker: it tells the commands the
/// replicas send (round trips) from those the scripts run inside Redis, which `INFO
/// commandstats` counts alike. It slows Redis down, so the counts reported first come from a
/// flight without it.
fn monitor(port: u16, ready: oneshot::Sender<()>) -> thread::JoinHandle<Seen> {
    thread::spawn(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("a MONITOR connection");
        stream.write_all(b"MONITOR\r\n").expect("MONITOR");
        // Short reads, to see the deadline even if the marker never came.
        stream.set_read_timeout(Some(Duration::from_millis(100))).expect("a read timeout");
        let mut reader = BufReader::new(stream);
        let mut seen = Seen::new();
        let mut line = String::new();
        let mut ready = Some(ready);
        loop {
            check_deadline("the MONITOR marker");
            match reader.read_line(&mut line) {
                Ok(0) => panic!("the MONITOR connection closed"),
                Ok(_) if line.ends_with('\n') => {}
                // A timeout keeps what came of the line: read on.
                Ok(_) => continue,
                Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
                Err(error) => panic!("MONITOR: {error}"),
            }
            if line.starts_with("+OK") {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            } else if line.contains(MARK) {
                return seen;
            } else if let Some((who, command)) = monitored(&line)
                && !own(&command)
            {
                *seen.entry((command, who == "lua")).or_default() += 1;
            }
            line.clear();
        }
    })
}

/// `+<time> [<db> <client>] "<command>" ...`: who ran it (`lua` for a script) and the command.
fn monitored(line: &str) -> Option<(&str, String)> {
    let (_, rest) = line.split_once('[')?;
    let (client, rest) = rest.split_once(']')?;
    let who = client.rsplit(' ').next()?;
    let command = rest.split('"').nth(1)?.to_ascii_lowercase();
    Some((who, command))
}

/// Part 2: store commands per item, one leader and two followers.
async fn commands(admin: &mut MultiplexedConnection, port: u16, [a, b, c]: &[Replica; 3]) {
    println!("### 2. Redis commands per item: a leads, b and c follow\n");
    // The counts: a flight with nothing else watching the store.
    let before = commandstats(admin).await;
    paced_flight(admin, "commands", a, &[b, c]).await;
    let after = commandstats(admin).await;
    // Who sent what: the same flight again with MONITOR on.
    let (ready, listening) = oneshot::channel();
    let watcher = monitor(port, ready);
    listening.await.expect("MONITOR is on");
    paced_flight(admin, "commands, monitored", a, &[b, c]).await;
    let _: String = redis::cmd("ECHO").arg(MARK).query_async(admin).await.expect("ECHO");
    let seen = tokio::task::spawn_blocking(move || watcher.join().expect("the MONITOR thread"))
        .await
        .expect("the join");

    // Who runs each command, as the MONITOR flight saw it: the share the replicas sent (the
    // rest ran inside scripts). `None`: not seen there.
    let sent_share = |name: &String| {
        let sent = seen.get(&(name.clone(), false)).copied().unwrap_or(0) as f64;
        let scripted = seen.get(&(name.clone(), true)).copied().unwrap_or(0) as f64;
        (sent + scripted > 0.0).then(|| sent / (sent + scripted))
    };
    let per_item = |count: f64| format!("{:.3}", count / ITEMS as f64);
    println!("{ITEMS} items at one per {} µs; per item, over the whole flight.\n", EVERY.as_micros());
    println!("| command | calls | sent by the replicas | run inside scripts | µs in Redis |");
    println!("|---|---:|---:|---:|---:|");
    // Calls, sent, run inside scripts, and µs of the commands sent (a script's commands are
    // timed again inside its `evalsha`).
    let mut totals = [0.0; 4];
    let mut unknown = Vec::new();
    for (name, &(calls, usec)) in &after {
        if own(name.split('|').next().unwrap_or(name)) {
            continue;
        }
        let (calls_before, usec_before) = before.get(name).copied().unwrap_or_default();
        let (calls, usec) =
            (calls.saturating_sub(calls_before) as f64, usec.saturating_sub(usec_before) as f64);
        if calls == 0.0 {
            continue;
        }
        totals[0] += calls;
        let (sent, scripted) = match sent_share(name) {
            Some(share) => {
                let split = [calls * share, calls * (1.0 - share), usec * share];
                for (total, value) in totals[1..].iter_mut().zip(split) {
                    *total += value;
                }
                (per_item(split[0]), per_item(split[1]))
            }
            None => {
                unknown.push(name.as_str());
                ("?".to_owned(), "?".to_owned())
            }
        };
        println!("| {name} | {} | {sent} | {scripted} | {} |", per_item(calls), per_item(usec));
    }
    let [calls, sent, scripted, usec] = totals.map(per_item);
    println!("| **total** | **{calls}** | **{sent}** | **{scripted}** | **{usec}** |");
    println!(
        "\nWho runs each command (the replicas, or a script inside Redis) is from the same flight run \
         again under MONITOR; the total µs counts the commands sent (a script's own commands are \
         inside its `evalsha`)."
    );
    if !unknown.is_empty() {
        println!("Not seen under MONITOR, left out of the split totals: {unknown:?}.");
    }
    println!();
}

/// Part 3's upstream for `key`: counted when it starts (only a leader starts one), then held
/// at the gate until every request is in, then `TOKENS` items at once.
fn gated(
    key: usize,
    started: &Arc<AtomicUsize>,
    gate: &watch::Receiver<bool>,
) -> impl Future<Output = Result<futures::stream::Iter<std::vec::IntoIter<Result<String, String>>>, String>>
+ Send
+ 'static {
    let (started, mut gate) = (Arc::clone(started), gate.clone());
    async move {
        started.fetch_add(1, Ordering::SeqCst);
        gate.wait_for(|open| *open).await.map_err(|_| "the gate is gone".to_owned())?;
        Ok(futures::stream::iter(answer(key).into_iter().map(Ok).collect::<Vec<_>>()))
    }
}

/// What every client of `key` must get, whichever replica it asked.
fn answer(key: usize) -> Vec<String> {
    (0..TOKENS).map(|i| format!("key {key}: token {i}")).collect()
}

/// One client's whole stream: its items, and whether it ended `Done`.
async fn collect(mut subscription: Subscription<String, String>) -> (Vec<String>, bool) {
    let until = tokio::time::Instant::from_std(*GIVE_UP);
    let mut items = Vec::new();
    loop {
        match tokio::time::timeout_at(until, subscription.next()).await.expect("the stream ends in time") {
            Some(Event::Item(item)) => items.push(item),
            Some(Event::Done) => return (items, true),
            _ => return (items, false),
        }
    }
}

/// Part 3: 3,000 clients over three replicas on 30 keys, every request made while the flights
/// are live: exactly one upstream request per key for the whole fleet.
async fn herd(replicas: &[Replica; 3]) {
    println!("### 3. {CLIENTS} clients over three replicas on {KEYS} keys\n");
    let before: Vec<_> = replicas.iter().map(Replica::fleet_stats).collect();
    let started = Arc::new(AtomicUsize::new(0));
    let (open, gate) = watch::channel(false);
    let t0 = Instant::now();
    // Client i on replica i % 3, key (i / 3) % 30: each key's requests go round all three
    // replicas (with key i % 30, key k would only ever meet replica k % 3).
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let key = (i / 3) % KEYS;
            let subscription = replicas[i % 3].request(format!("herd {key}"), gated(key, &started, &gate));
            (key, tokio::spawn(collect(subscription)))
        })
        .collect();
    let made = t0.elapsed();
    // Every replica has decided, for each key, to lead or follow: only then do answers come,
    // so no request can find a flight already over and start another.
    let decided = || {
        replicas.iter().zip(&before).all(|(replica, before)| {
            let now = replica.fleet_stats();
            (now.led - before.led) + (now.remote_joins - before.remote_joins) == KEYS as u64
        })
    };
    eventually("every replica leads or follows every key", decided).await;
    let all_decided = t0.elapsed();
    open.send_replace(true);
    let gated_at = Instant::now();
    let mut complete = 0;
    for (key, client) in clients {
        let (items, done) = client.await.expect("a client");
        assert!(done && items == answer(key), "client of key {key}: {} items, done: {done}", items.len());
        complete += 1;
    }
    let after_gate = gated_at.elapsed();
    let wall = t0.elapsed();
    let upstreams = started.load(Ordering::SeqCst);
    let delta = |f: fn(&streamflight_redis::FleetStats) -> u64| -> u64 {
        replicas.iter().zip(&before).map(|(replica, before)| f(&replica.fleet_stats()) - f(before)).sum()
    };
    let (led, joins, trouble) =
        (delta(|s| s.led), delta(|s| s.remote_joins), delta(|s| s.store_errors + s.alone + s.leader_lost));
    println!("{TOKENS} items per answer; every upstream held until all requests are in.\n");
    println!(
        "| upstream requests | clients with the full, identical stream | local flights led / following | requests made | all decided | streams done after the gate | wall |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| **{upstreams}** | {complete} / {CLIENTS} | {led} / {joins} | {} ms | {} ms | {} ms | {} ms |",
        ms(made.as_nanos() as f64),
        ms(all_decided.as_nanos() as f64),
        ms(after_gate.as_nanos() as f64),
        ms(wall.as_nanos() as f64),
    );
    println!();
    assert_eq!(upstreams, KEYS, "one upstream request per key for the whole fleet");
    assert_eq!(trouble, 0, "no store errors, no flight alone, no leader lost");
}

/// The three parts, on one set of replicas.
async fn run(server: &Server) {
    let client = redis::Client::open(server.url.as_str()).expect("a valid URL");
    // The bench's own connection, for INFO: the replicas have theirs.
    let mut admin = loop {
        if let Ok(mut connection) = client.get_multiplexed_async_connection().await
            && redis::cmd("PING").query_async::<String>(&mut connection).await.is_ok()
        {
            break connection;
        }
        check_deadline("redis-server answers");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let version: String = redis::cmd("INFO").arg("server").query_async(&mut admin).await.expect("INFO");
    let version = version.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("?").to_owned();
    println!("## fleet_bench: redis-server {version}, three replicas in one process, tokio 2 workers\n");
    // Each replica as a gateway would run it: default fleet settings (3 s lease), its own id.
    let replicas = ["a", "b", "c"].map(|name| {
        let fleet =
            Fleet::new(&server.url, Text, FleetConfig::default().replica(name)).expect("a fleet link");
        Flights::new(fleet, Config::default())
    });
    latency(&mut admin, &replicas).await;
    commands(&mut admin, server.port, &replicas).await;
    herd(&replicas).await;
    let stats: Vec<_> = replicas.iter().map(Replica::fleet_stats).collect();
    println!("Fleet counters at the end (a, b, c): {stats:?}");
}

fn main() {
    // The clock and the deadline start now.
    LazyLock::force(&EPOCH);
    LazyLock::force(&GIVE_UP);
    // Dropped last, also when a panic unwinds through here.
    let server = Server::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        tokio::time::timeout(DEADLINE, run(&server)).await.expect("the whole run within the deadline")
    });
}
