//! The gateway's settings: command-line flags, each with an environment-variable fallback.
//! Parsed by clap in `main`; tests build them with [`Settings::parse_from`](clap::Parser::parse_from).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Everything the gateway can be told. Each flag also reads the environment
/// variable named in its help (`STREAMFLIGHT_*`); a flag on the command line wins.
#[derive(Clone, Debug, Parser)]
#[command(name = "streamflight-gateway", version, about)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "STREAMFLIGHT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Base URL of an OpenAI-compatible server, `/v1` included (for example
    /// `http://127.0.0.1:8000/v1`); requests go to `<URL>/chat/completions` and
    /// `<URL>/completions`. Without it, the embedded simulated model answers.
    #[arg(long, env = "STREAMFLIGHT_UPSTREAM")]
    pub upstream: Option<String>,

    /// API key sent upstream as `Authorization: Bearer <key>`. Without it, the
    /// leading client's own `Authorization` header is forwarded.
    #[arg(long, env = "STREAMFLIGHT_UPSTREAM_API_KEY", hide_env_values = true)]
    pub upstream_api_key: Option<String>,

    /// Lets requests with different `Authorization` headers share a flight.
    /// Off by default: a tenant never sees an answer made for another.
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

    /// Upstream: time allowed to connect.
    #[arg(long, env = "STREAMFLIGHT_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Upstream: time allowed from sending the request to its response headers.
    #[arg(long, env = "STREAMFLIGHT_RESPONSE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub response_timeout: Duration,

    /// Upstream: longest silence allowed between two events of a streaming answer.
    #[arg(long, env = "STREAMFLIGHT_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Largest request body accepted, in bytes; a larger one gets 413.
    #[arg(long, env = "STREAMFLIGHT_BODY_LIMIT", default_value_t = 2 * 1024 * 1024)]
    pub body_limit: usize,

    /// Most events of one answer kept for late joiners. Past it, the oldest are
    /// released, later identical requests start a new flight, and a reader that
    /// falls out of the window gets an error event. Unbounded if not given.
    #[arg(long, env = "STREAMFLIGHT_HISTORY_LIMIT")]
    pub history_limit: Option<usize>,

    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "STREAMFLIGHT_LOG", default_value = "info")]
    pub log: tracing::Level,
}

/// Parses `250ms`, `2s`, `1m`, or a bare number of milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 =
        number.parse().map_err(|_| format!("`{text}`: expected a number and a unit, like 250ms"))?;
    match unit.trim() {
        "" | "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        other => Err(format!("`{text}`: unknown unit `{other}` (use ms, s or m)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("40"), Ok(Duration::from_millis(40)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3h").is_err());
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
    }
}
