//! The gateway's settings: command-line flags, each with an environment-variable fallback.
//! Loaded by [`Settings::load`] (flags, environment, `--config` file: [`mod@file`]); tests also build
//! them with [`Settings::parse_from`](clap::Parser::parse_from).

pub mod file;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::upstream::client::UpstreamUrl;

/// Everything the gateway can be told. Each flag also reads the environment variable named in
/// its help (`STREAMFLIGHT_*`) and its key in the `--config` file: a flag on the command line
/// wins over the environment, which wins over the file, which wins over the default.
#[derive(Clone, Debug, Parser)]
#[command(name = "streamflight-gateway", version = VERSION, about)]
pub struct Settings {
    /// A TOML file of settings: each key is a flag's long name (`max-concurrent-requests = 100`,
    /// `cors-origin = ["https://a.example"]`, `upstream-http2 = true`). A flag or its
    /// environment variable overrides the file's value. SIGHUP re-reads it and applies `log`,
    /// `max-concurrent-requests`, `body-limit`, `body-timeout` and `body-deadline` at once;
    /// other keys need a restart.
    #[arg(long, env = "STREAMFLIGHT_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on.
    #[arg(long, env = "STREAMFLIGHT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Base URL of an OpenAI-compatible server, `/v1` included (for example
    /// `https://api.openai.com/v1` or `http://127.0.0.1:8000/v1`): a client's `/v1/x` goes to
    /// `<URL>/x`. Without it, the embedded simulated model answers.
    #[arg(long, env = "STREAMFLIGHT_UPSTREAM", hide_env_values = true)]
    pub upstream: Option<UpstreamUrl>,

    /// API key sent upstream as `Authorization: Bearer <key>`, in place of the client's
    /// credentials. Without it, each flight's leading client's own credentials go upstream.
    #[arg(long, env = "STREAMFLIGHT_UPSTREAM_API_KEY", hide_env_values = true)]
    pub upstream_api_key: Option<String>,

    /// PEM file of extra root certificates to trust for an `https://` upstream (a private CA),
    /// besides the system's and the webpki roots.
    #[arg(long, env = "STREAMFLIGHT_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,

    /// Speaks HTTP/2 to the upstream without negotiating it: needed for HTTP/2 to a plain
    /// `http://` upstream (h2c), which must then accept it. An `https://` upstream
    /// negotiates HTTP/2 through TLS without this flag.
    #[arg(long, env = "STREAMFLIGHT_UPSTREAM_HTTP2")]
    pub upstream_http2: bool,

    /// At most this many requests share one HTTP/2 connection to the upstream; the next
    /// opens another connection rather than wait behind them (upstreams commonly allow
    /// 100-256 streams on a connection). No effect over HTTP/1.1.
    #[arg(long, env = "STREAMFLIGHT_UPSTREAM_STREAMS_PER_CONNECTION", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub upstream_streams_per_connection: u32,

    /// Lets requests with different credentials share a flight. Needs `--upstream-api-key`
    /// when `--upstream` is given (a tenant's key must never serve another), and then hides
    /// `x-streamflight-role`. Off by default: a tenant never sees an answer made for another.
    #[arg(long, env = "STREAMFLIGHT_SHARE_ACROSS_TENANTS")]
    pub share_across_tenants: bool,

    /// Simulated model: tokens in a full answer (a request's `max_tokens` may cut it shorter).
    #[arg(long, env = "STREAMFLIGHT_SIM_TOKENS", default_value_t = 40)]
    pub sim_tokens: usize,

    /// Simulated model: time between two tokens (`25ms`, `1s`, ...).
    #[arg(long, env = "STREAMFLIGHT_SIM_TOKEN_INTERVAL", default_value = "25ms", value_parser = parse_duration)]
    pub sim_token_interval: Duration,

    /// Simulated model: time before the first token (queueing, prompt processing).
    #[arg(long, env = "STREAMFLIGHT_SIM_FIRST_TOKEN_DELAY", default_value = "100ms", value_parser = parse_duration)]
    pub sim_first_token_delay: Duration,

    /// Upstream: time allowed to connect (TLS included).
    #[arg(long, env = "STREAMFLIGHT_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Upstream: time allowed from sending the request to its response head.
    #[arg(long, env = "STREAMFLIGHT_RESPONSE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub response_timeout: Duration,

    /// Upstream: longest silence allowed while reading a response (between two events).
    #[arg(long, env = "STREAMFLIGHT_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Clients: time to send a request's head, counted from the connection's start or the end
    /// of its previous response (so it also closes idle keep-alive connections).
    #[arg(long, env = "STREAMFLIGHT_HEADER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Clients: longest silence allowed while a request body is being received.
    #[arg(long, env = "STREAMFLIGHT_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// Clients: the longest a request's whole body may take to arrive, however steadily it
    /// trickles in (408 past it), so that slow bodies cannot hold the admission permits.
    #[arg(long, env = "STREAMFLIGHT_BODY_DEADLINE", default_value = "60s", value_parser = parse_duration)]
    pub body_deadline: Duration,

    /// Clients: the longest a client may leave the bytes of its response untaken (a client
    /// that stopped reading). Past it the connection is closed, and its admission permit and
    /// its hold on the answer's history are released. 0: no limit.
    #[arg(long, env = "STREAMFLIGHT_WRITE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Largest request body accepted, in bytes; a larger one gets 413.
    #[arg(long, env = "STREAMFLIGHT_BODY_LIMIT", default_value_t = 32 * 1024 * 1024)]
    pub body_limit: usize,

    /// Most requests served at once (streams included); over it, 503 with `retry-after`.
    #[arg(long, env = "STREAMFLIGHT_MAX_CONCURRENT_REQUESTS", default_value_t = 10_000)]
    pub max_concurrent_requests: usize,

    /// Largest single upstream SSE event, in bytes; a larger one fails the flight (502).
    #[arg(long, env = "STREAMFLIGHT_MAX_EVENT_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_event_bytes: usize,

    /// Most bytes of one answer (the sum of its events' data): past it, every client of the
    /// flight gets the dialect's error and the upstream request is aborted. It also bounds
    /// what is merged for a non-streaming client.
    #[arg(long, env = "STREAMFLIGHT_MAX_ANSWER_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_answer_bytes: usize,

    /// Longest one answer may stream, counted from its upstream request: past it, every client
    /// of the flight gets the dialect's error and the upstream request is aborted.
    #[arg(long, env = "STREAMFLIGHT_MAX_ANSWER_DURATION", default_value = "30m", value_parser = parse_duration)]
    pub max_answer_duration: Duration,

    /// Most bytes of an upstream error body passed on; the rest is cut.
    #[arg(long, env = "STREAMFLIGHT_MAX_ERROR_BODY", default_value_t = 64 * 1024)]
    pub max_error_body: usize,

    /// Listen backlog: connections the kernel queues before they are accepted.
    #[arg(long, env = "STREAMFLIGHT_BACKLOG", default_value_t = 4096)]
    pub backlog: u32,

    /// Threads that serve client connections, each one a single-threaded runtime that serves
    /// the connections given to it from start to end (their flights, upstream connections and
    /// timers), as nginx's workers do: a request's tasks then never wake another thread. None:
    /// one per CPU the process may run on; 0: every connection on the main, work-stealing
    /// runtime. Read at start.
    #[arg(long, env = "STREAMFLIGHT_CONNECTION_THREADS")]
    pub connection_threads: Option<usize>,

    /// Time without an event after which a streaming client gets a keep-alive (an SSE comment;
    /// Anthropic's clients an `event: ping`), so that nothing on its way closes a quiet stream.
    #[arg(long, env = "STREAMFLIGHT_KEEP_ALIVE", default_value = "15s", value_parser = parse_duration)]
    pub keep_alive: Duration,

    /// On SIGTERM or SIGINT: time given to open requests to finish before the rest are ended
    /// with an error event.
    #[arg(long, env = "STREAMFLIGHT_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Browser origin allowed by CORS (repeat it, or `*` for any). None: no CORS headers.
    #[arg(long = "cors-origin", env = "STREAMFLIGHT_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Most events of one answer kept for late joiners. Past it, the oldest are
    /// released, later identical requests start a new flight, and a reader that
    /// falls out of the window gets an error event. Unbounded if not given.
    #[arg(long, env = "STREAMFLIGHT_HISTORY_LIMIT")]
    pub history_limit: Option<usize>,

    /// How long a finished answer (ended with `[DONE]`) serves identical requests
    /// after its end, with no new upstream request: a retry, a second tab, a page
    /// of clients loading over a few seconds. 0: none. A failed answer never lingers.
    #[arg(long, env = "STREAMFLIGHT_LINGER", default_value = "0s", value_parser = parse_duration)]
    pub linger: Duration,

    /// Most bytes all lingering answers may hold together (their events' data and names):
    /// past it, the answers that finished first stop lingering first (their readers keep
    /// reading them), and an answer larger than it all never lingers. Unbounded if not given.
    #[arg(long, env = "STREAMFLIGHT_LINGER_BUDGET")]
    pub linger_budget: Option<usize>,

    /// How long a streaming client that lost its connection may resume its stream
    /// (`GET /v1/requests/{id}/events` with `Last-Event-ID`): its request stays
    /// live that long, and its upstream goes on. 0: a lost connection cancels.
    #[arg(long, env = "STREAMFLIGHT_RESUME_WINDOW", default_value = "10s", value_parser = parse_duration)]
    pub resume_window: Duration,

    /// Shares flights with every replica on this Redis (`redis://`, or `rediss://` for TLS;
    /// credentials in the URL): one upstream request per key for the whole fleet. While it
    /// cannot be reached, each replica serves and coalesces on its own.
    #[arg(long, env = "STREAMFLIGHT_REDIS", hide_env_values = true)]
    pub redis: Option<String>,

    /// PEM file of the root certificates that a `rediss://` server's certificate chains to (a
    /// private CA); without it, the system's roots.
    #[arg(long, env = "STREAMFLIGHT_REDIS_CA")]
    pub redis_ca: Option<PathBuf>,

    /// The secret every replica of a fleet shares (at least 16 characters, say
    /// `openssl rand -hex 32`); required with `--redis`. It keys the tenants (an HMAC of each
    /// client's credentials instead of their plain hash) and the seals of everything stored in
    /// Redis. Without `--redis`: a random one, new at each start.
    #[arg(long, env = "STREAMFLIGHT_FLEET_SECRET", hide_env_values = true)]
    pub fleet_secret: Option<String>,

    /// This replica's name in the fleet (the store's interest records, the logs). Default:
    /// random, new at each start.
    #[arg(long, env = "STREAMFLIGHT_REPLICA_ID")]
    pub replica_id: Option<String>,

    /// With `--redis`: the lease of the replica that leads a flight, renewed every third of it.
    /// Should that replica stop, the others end its streams with an `upstream_lost` error
    /// within two leases.
    #[arg(long, env = "STREAMFLIGHT_LEASE", default_value = "3s", value_parser = parse_duration)]
    pub lease: Duration,

    /// Serves `/metrics`, `/healthz` and `/readyz` on this address, a port for the operator
    /// alone that keeps answering while the gateway drains after SIGTERM (`/readyz` then says
    /// 503). With it, the public port serves no `/metrics`. Without it, all three are on the
    /// public port.
    #[arg(long, env = "STREAMFLIGHT_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// With `--redis`: `/readyz` says ready (200, saying so) while the store is unreachable,
    /// for an operator who accepts that each replica then serves and coalesces alone. Without
    /// it, `/readyz` says 503 then, so that traffic goes to replicas that share.
    #[arg(long, env = "STREAMFLIGHT_READY_WITHOUT_REDIS")]
    pub ready_without_redis: bool,

    /// The models that get a `model` label of their own in the metrics (comma-separated);
    /// any other is `other`. Without it, the first 32 distinct names requested get one.
    #[arg(long, env = "STREAMFLIGHT_METRICS_MODELS", value_delimiter = ',')]
    pub metrics_models: Vec<String>,

    /// What to log: a level (error, warn, info, debug or trace) or a tracing filter of
    /// directives, such as `info,streamflight_gateway=debug`.
    #[arg(long, env = "STREAMFLIGHT_LOG", default_value = "info", value_parser = parse_filter)]
    pub log: Filter,

    /// How log lines are written on stderr: `text` for people, `json` (one object a line) for
    /// a log pipeline.
    #[arg(long, env = "STREAMFLIGHT_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// OTLP/HTTP collector to export traces to (its base URL; `/v1/traces` is added). Without
    /// it, `OTEL_EXPORTER_OTLP_ENDPOINT` is honoured; with neither, no traces.
    #[arg(long, env = "STREAMFLIGHT_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// The version `--version` prints: the crate's, and the commit it was built from (`unknown`
/// when built outside a git checkout).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("STREAMFLIGHT_COMMIT"), ")");

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text an event, for people.
    Text,
    /// One JSON object a line, for a log pipeline.
    Json,
}

/// A `--log` filter, checked when the flags are read: its text, which parses as a tracing
/// `EnvFilter` (that type is not `Clone`, so each subscriber makes its own from the text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter(String);

impl Filter {
    /// The filter for a subscriber.
    pub fn filter(&self) -> tracing_subscriber::EnvFilter {
        // Checked by `parse_filter`: the text parses.
        tracing_subscriber::EnvFilter::try_new(&self.0)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    }
}

/// A tracing filter's directives (a bare level is one), refused with the parser's reason.
fn parse_filter(text: &str) -> Result<Filter, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map(|_| Filter(text.to_owned()))
        .map_err(|e| format!("not a log level or filter: {e}"))
}

impl Settings {
    /// The connection threads to start: `--connection-threads`, else one per CPU the process
    /// may run on (fewer, per request, context switches, system calls and instructions than the
    /// work-stealing runtime's, streamed or not: BENCHMARKS.md, issue 26).
    pub fn connection_threads(&self) -> usize {
        self.connection_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
    }

    /// Checks what clap cannot: combinations of flags. The error is one line, for the operator.
    pub fn check(&self) -> Result<(), String> {
        if self.share_across_tenants && self.upstream.is_some() && self.upstream_api_key.is_none() {
            return Err("--share-across-tenants needs --upstream-api-key: without it one tenant's \
                        credentials would serve another's requests"
                .to_owned());
        }
        if self.max_concurrent_requests == 0
            || self.body_limit == 0
            || self.max_event_bytes == 0
            || self.max_answer_bytes == 0
        {
            return Err("--max-concurrent-requests, --body-limit, --max-event-bytes and --max-answer-bytes \
                        must be above 0"
                .to_owned());
        }
        if self.redis.is_some() && self.fleet_secret.is_none() {
            return Err("--redis needs --fleet-secret (or STREAMFLIGHT_FLEET_SECRET), the same on every \
                        replica: it keys the tenants and seals what is stored in Redis"
                .to_owned());
        }
        if self.fleet_secret.as_ref().is_some_and(|secret| secret.len() < crate::tenant::SECRET_MIN) {
            return Err(format!(
                "--fleet-secret must be at least {} characters (say, `openssl rand -hex 32`)",
                crate::tenant::SECRET_MIN
            ));
        }
        if self.max_answer_duration.is_zero() || self.body_deadline.is_zero() {
            // Zero would fail every answer (every body) at once: there is no "none" for these.
            return Err("--max-answer-duration and --body-deadline must be above 0".to_owned());
        }
        Ok(())
    }
}

/// Parses `250ms`, `2s`, `1m` or `1h`. A number needs its unit (`0` alone is allowed): a bare
/// `5` for `--linger` could mean 5 s as well as 5 ms, so it is refused rather than guessed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 =
        number.parse().map_err(|_| format!("`{text}`: expected a number and a unit, like 250ms"))?;
    let seconds = |factor: u64| number.checked_mul(factor).map(Duration::from_secs);
    let duration = match unit.trim() {
        "" if number == 0 => Some(Duration::ZERO),
        "" => return Err(format!("`{text}` has no unit: write {number}ms, {number}s or {number}m")),
        "ms" => Some(Duration::from_millis(number)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        other => return Err(format!("`{text}`: unknown unit `{other}` (use ms, s, m or h)")),
    };
    duration.ok_or_else(|| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        let bare = parse_duration("5").unwrap_err();
        assert!(bare.contains("no unit") && bare.contains("5s"), "{bare}");
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3d").is_err());
    }

    #[test]
    fn defaults() {
        let settings = Settings::parse_from(["streamflight-gateway"]);
        assert_eq!(settings.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(settings.upstream.is_none() && !settings.share_across_tenants);
        // About one second of tens of tokens, like a real model.
        let answer =
            settings.sim_first_token_delay + settings.sim_token_interval * settings.sim_tokens as u32;
        assert!(answer >= Duration::from_millis(800) && answer <= Duration::from_millis(1500), "{answer:?}");
        // G7: every client-side wait at most 30 s, a listen backlog of at least 1,024.
        assert!(settings.header_timeout <= Duration::from_secs(30));
        assert!(settings.body_timeout <= Duration::from_secs(30));
        assert!(settings.backlog >= 1024);
        assert_eq!(settings.body_limit, 32 << 20);
        assert!(settings.check().is_ok());
    }

    #[test]
    fn sharing_tenants_upstream_needs_a_key_of_its_own() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["streamflight-gateway", "--share-across-tenants"];
            args.extend_from_slice(extra);
            Settings::parse_from(args)
        };
        assert!(parse(&[]).check().is_ok(), "the simulated model has no credentials to leak");
        assert!(parse(&["--upstream", "http://127.0.0.1:1/v1"]).check().is_err());
        assert!(parse(&["--upstream", "http://127.0.0.1:1/v1", "--upstream-api-key", "k"]).check().is_ok());
    }

    #[test]
    fn a_bound_of_zero_that_would_refuse_everything_is_refused() {
        let check =
            |flag: &str, value: &str| Settings::parse_from(["streamflight-gateway", flag, value]).check();
        for flag in ["--max-answer-duration", "--body-deadline"] {
            let refused = check(flag, "0s").unwrap_err();
            assert!(refused.contains(flag), "{refused}");
            assert!(check(flag, "1s").is_ok());
        }
        assert!(check("--max-answer-bytes", "0").is_err());
    }

    #[test]
    fn a_fleet_needs_a_secret_of_some_length() {
        let check = |flags: &[&str]| {
            Settings::parse_from([&["streamflight-gateway"], flags].concat())
                .check()
                .map_err(|e| e.to_string())
        };
        let redis = ["--redis", "redis://127.0.0.1:6379/"];
        let refused = check(&redis).unwrap_err();
        assert!(
            refused.contains("--fleet-secret") && refused.contains("STREAMFLIGHT_FLEET_SECRET"),
            "{refused}"
        );
        assert!(check(&[&redis[..], &["--fleet-secret", "0123456789abcdef"]].concat()).is_ok());
        let short = check(&[&redis[..], &["--fleet-secret", "short"]].concat()).unwrap_err();
        assert!(short.contains("at least 16") && !short.contains("short"), "{short}");
        assert!(check(&[]).is_ok(), "alone, a random secret");
    }
}
