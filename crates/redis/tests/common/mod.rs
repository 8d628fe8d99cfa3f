//! A real `redis-server` for each test: started on a free port with persistence off, stopped
//! (killed) when dropped. Without the binary the tests say loudly that they were skipped,
//! unless `STREAMFLIGHT_REQUIRE_REDIS` is set (as `.ci/run` sets it): then a missing server fails.

#![allow(dead_code)]

pub mod answer;

use std::io::Write as _;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of the test's own.
pub struct RedisServer {
    child: Child,
    port: u16,
    /// `redis://127.0.0.1:<port>/`.
    pub url: String,
}

impl RedisServer {
    /// Starts one, or `None` (after saying why on stderr) where there is no `redis-server`.
    ///
    /// The port is free when chosen, but another test process may take it before the server
    /// binds it: then this server exits and the port answers with the other's, whose keys
    /// (the same flight keys) would mix with this test's. So the server that answers must be
    /// this one (its `process_id`), else another port is tried.
    pub async fn start() -> Option<RedisServer> {
        RedisServer::start_with(&[]).await
    }

    /// [`RedisServer::start`] with `args` after the defaults (e.g. `--maxclients 50`).
    pub async fn start_with(args: &[&str]) -> Option<RedisServer> {
        for _attempt in 0..5 {
            let port = free_port();
            let mut server = RedisServer::spawned(port, args, format!("redis://127.0.0.1:{port}/"))?;
            if server.ready().await {
                return Some(server);
            }
            server.kill();
        }
        panic!("no redis-server of this test's own after 5 ports");
    }

    /// One that speaks only TLS (`rediss://localhost`), with the PEM files of its certificate
    /// chain and key; `None` as [`RedisServer::start`].
    pub async fn start_tls(certificate: &str, key: &str) -> Option<RedisServer> {
        let port = free_port();
        let tls = ["--port", "0", "--tls-port", &port.to_string(), "--tls-cert-file", certificate];
        let args = [&tls[..], &["--tls-key-file", key, "--tls-auth-clients", "no"]].concat();
        let server = RedisServer::spawned(port, &args, format!("rediss://localhost:{port}/"))?;
        // It listens once its certificate is loaded.
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Some(server)
    }

    /// A server on `port` with `args` (after the defaults: a later one wins), or `None` where
    /// there is no `redis-server`.
    fn spawned(port: u16, args: &[&str], url: String) -> Option<RedisServer> {
        let child = match spawn(port, args) {
            Ok(child) => child,
            Err(error) if std::env::var_os("STREAMFLIGHT_REQUIRE_REDIS").is_some() => {
                panic!("STREAMFLIGHT_REQUIRE_REDIS is set but redis-server cannot start: {error}")
            }
            Err(error) => {
                // Straight to stderr: the test harness captures `eprintln!`, and this must be seen.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: redis-server cannot start ({error}): install the Debian package \
                     redis-server to run the Redis tests (CI sets STREAMFLIGHT_REQUIRE_REDIS and installs it)"
                );
                return None;
            }
        };
        Some(RedisServer { child, port, url })
    }

    /// Kills the server for real (SIGKILL): everything it held is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server without ending it (SIGSTOP): a hung store, whose connections stay open
    /// and whose commands never answer.
    pub fn stop(&self) {
        self.signal("-STOP");
    }

    /// Lets a stopped server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}: {status}");
    }

    /// One field of `INFO <section>`, as a number.
    pub async fn info(&self, section: &str, field: &str) -> u64 {
        let client = redis::Client::open(self.url.as_str()).expect("a valid URL");
        let mut connection = client.get_multiplexed_async_connection().await.expect("a connection");
        let info: String = redis::cmd("INFO").arg(section).query_async(&mut connection).await.expect("INFO");
        let line = info.lines().find_map(|line| line.strip_prefix(&format!("{field}:")));
        line.and_then(|value| value.trim().parse().ok()).unwrap_or_else(|| panic!("no {field} in {info}"))
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(self.port, &[]).expect("redis-server starts again");
        assert!(self.ready().await, "the restarted redis-server is not the one answering its port");
    }

    /// Waits until it answers: true if the server answering is this one, false if another
    /// process's answers its port (this one could not bind it, and exits).
    async fn ready(&mut self) -> bool {
        let client = redis::Client::open(self.url.as_str()).expect("a valid URL");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut connection) = client.get_multiplexed_async_connection().await {
                let info: redis::RedisResult<String> =
                    redis::cmd("INFO").arg("server").query_async(&mut connection).await;
                if let Ok(info) = info {
                    let pid = info.lines().find_map(|line| line.strip_prefix("process_id:"));
                    return pid.is_some_and(|pid| pid.trim() == self.child.id().to_string());
                }
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            assert!(Instant::now() < deadline, "redis-server did not answer within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A connection manager on this server (it reconnects by itself).
    pub async fn manager(&self) -> redis::aio::ConnectionManager {
        let client = redis::Client::open(self.url.as_str()).expect("a valid URL");
        client.get_connection_manager().await.expect("a connection to the test's redis-server")
    }
}

/// Waits (up to `within`) until `done` holds; how long it took.
pub async fn within(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// A `redis-server` on `port`, persistence off, with `args` after.
fn spawn(port: u16, args: &[&str]) -> std::io::Result<Child> {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (10 s at most) until the lease at `key` is free, and takes it for `ttl`: what a
/// replica does when the leader went quiet.
pub async fn take_when_free(
    store: &mut redis::aio::ConnectionManager,
    key: &str,
    ttl: Duration,
) -> streamflight_redis::Lease {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(lease) = streamflight_redis::Lease::acquire(store, key, ttl).await.unwrap() {
            return lease;
        }
        assert!(Instant::now() < deadline, "the lease at {key} never became free");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (10 s at most) until `done` holds.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every key in the store, with everything under it (`SCAN`, then by type `GET`, `XRANGE`,
/// `ZRANGE`, `HGETALL`, `LRANGE`, `SMEMBERS`): one dump per key, its name first.
pub async fn dump(store: &mut redis::aio::ConnectionManager) -> Vec<(String, Vec<u8>)> {
    let mut dumped = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(100).query_async(store).await.unwrap();
        for key in keys {
            let kind: String = redis::cmd("TYPE").arg(&key).query_async(store).await.unwrap();
            let read = match kind.as_str() {
                "string" => redis::cmd("GET").arg(&key).clone(),
                "stream" => redis::cmd("XRANGE").arg(&key).arg("-").arg("+").clone(),
                "zset" => redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).arg("WITHSCORES").clone(),
                "hash" => redis::cmd("HGETALL").arg(&key).clone(),
                "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).clone(),
                "set" => redis::cmd("SMEMBERS").arg(&key).clone(),
                // Expired between the scan and the look.
                "none" => continue,
                other => panic!("a key of a type the dump does not read: {other}"),
            };
            let value: redis::Value = read.query_async(store).await.unwrap();
            let mut bytes = key.as_bytes().to_vec();
            flatten(&value, &mut bytes);
            dumped.push((key, bytes));
        }
        if next == 0 {
            return dumped;
        }
        cursor = next;
    }
}

/// Every byte string in a reply, one after another.
pub fn flatten(value: &redis::Value, out: &mut Vec<u8>) {
    match value {
        redis::Value::BulkString(bytes) => out.extend_from_slice(bytes),
        redis::Value::SimpleString(text) | redis::Value::VerbatimString { text, .. } => {
            out.extend_from_slice(text.as_bytes())
        }
        redis::Value::Array(values) | redis::Value::Set(values) => {
            values.iter().for_each(|value| flatten(value, out))
        }
        redis::Value::Map(pairs) => pairs.iter().for_each(|(key, value)| {
            flatten(key, out);
            flatten(value, out);
        }),
        other => out.extend_from_slice(format!("{other:?}").as_bytes()),
    }
}

/// The keys whose dump holds `needle`.
pub fn holding<'a>(dumped: &'a [(String, Vec<u8>)], needle: &str) -> Vec<&'a str> {
    let found = |bytes: &[u8]| bytes.windows(needle.len()).any(|window| window == needle.as_bytes());
    dumped.iter().filter(|(_, bytes)| found(bytes)).map(|(key, _)| key.as_str()).collect()
}
