//! The `streamflight-gateway` binary as an operator runs it: its startup line, start-up errors
//! (exit 2, one line), graceful shutdown on SIGTERM and SIGINT (G8), no credential in its output.

mod common;

use std::time::Duration;

use common::process::Binary;
use common::*;

/// Runs the binary with `flags`, expecting it to refuse to start; returns the line that says
/// why, and the whole of stderr.
async fn refused(flags: &[&str]) -> (String, String) {
    let mut binary = Binary::start(flags);
    let status = binary.exit().await;
    let stderr = binary.stderr();
    assert_eq!(status.code(), Some(2), "{flags:?}: {stderr}");
    let mut lines = stderr.lines().filter(|line| !line.trim().is_empty());
    let reason = lines.next().unwrap_or_default().to_owned();
    assert!(reason.starts_with("error: "), "{flags:?}: {stderr}");
    // Only clap's usage hints may follow the one line that says why.
    for line in lines {
        assert!(line.starts_with("Usage: ") || line.starts_with("For more information"), "{stderr}");
    }
    (reason, stderr)
}

/// A port nothing listens on (it was free a moment ago).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn start_up_errors_exit_2_with_one_line() {
    for upstream in ["localhost:8000/v1", "ftp://x/v1"] {
        let (reason, _) = refused(&["--upstream", upstream]).await;
        assert!(reason.contains("http:// or https://"), "{reason}");
    }
    let (reason, stderr) = refused(&["--upstream", "https://user:s3cret@host/v1"]).await;
    assert!(reason.contains("--upstream-api-key") && !stderr.contains("s3cret"), "{stderr}");
    let (reason, _) = refused(&["--share-across-tenants", "--upstream", "http://127.0.0.1:9/v1"]).await;
    assert!(reason.contains("--share-across-tenants needs --upstream-api-key"), "{reason}");
    let (reason, _) =
        refused(&["--upstream-ca", "/nonexistent.pem", "--upstream", "https://127.0.0.1:9/v1"]).await;
    assert!(reason.contains("/nonexistent.pem"), "{reason}");
    // A fleet's replicas must agree on the secret that keys its tenants and seals its store.
    let redis = format!("redis://127.0.0.1:{}/", closed_port());
    let (reason, _) = refused(&["--redis", &redis]).await;
    assert!(reason.contains("--redis needs --fleet-secret"), "{reason}");
    let (reason, stderr) = refused(&["--redis", &redis, "--fleet-secret", "tiny-s3cret"]).await;
    assert!(reason.contains("at least 16 characters") && !stderr.contains("tiny-s3cret"), "{stderr}");
}

/// Issue 22: an upstream URL with no path (every request would get a 404) and a duration with
/// no unit (seconds? milliseconds?) never start: exit 2, one line saying what to write instead.
#[tokio::test]
async fn start_up_refuses_what_would_never_work_saying_what_to_write() {
    let port = closed_port();
    for upstream in [format!("http://127.0.0.1:{port}"), format!("http://127.0.0.1:{port}/")] {
        let (reason, _) = refused(&["--upstream", &upstream]).await;
        let expected = format!(
            "the upstream URL `http://127.0.0.1:{port}` has no path: give the base URL with its version, \
             like http://127.0.0.1:{port}/v1"
        );
        assert!(reason.contains(&expected), "{reason}");
    }
    let upstream = format!("http://127.0.0.1:{port}/v1");
    let (reason, _) = refused(&["--upstream", &upstream, "--linger", "5"]).await;
    assert!(
        reason.contains("has no unit") && reason.contains("--linger") && reason.contains("5s"),
        "{reason}"
    );
}

#[tokio::test]
async fn the_startup_line_says_what_answers() {
    let mut simulated = Binary::start(&[]);
    let (line, address) = simulated.ready().await;
    assert!(line.contains("simulated model") && line.contains("--upstream"), "{line}");
    let health = http().get(format!("http://{address}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "the address of the startup line is served");

    let upstream = format!("http://127.0.0.1:{}/v1", closed_port());
    let mut proxying = Binary::start(&["--upstream", &upstream]);
    let (line, _) = proxying.ready().await;
    assert!(line.contains(&format!("the upstream {upstream}")) && !line.contains("simulated"), "{line}");

    for binary in [&mut simulated, &mut proxying] {
        binary.signal(libc::SIGTERM);
        assert_eq!(binary.exit().await.code(), Some(0), "{}", binary.stderr());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_a_stream_in_flight_finishes_and_the_process_exits_0() {
    // The stream cannot end before the test opens the gate: what happens meanwhile is certain.
    let mock = Mock::start(Mode::Tokens { tokens: 3, interval: Duration::ZERO, gated: true }).await;
    let mut binary = Binary::start(&["--upstream", &mock.base]);
    let (_, address) = binary.ready().await;
    let base = format!("http://{address}");
    let mut stream = Client::chat(&base, "q", None).await;
    assert_eq!(stream.next().await.unwrap(), mock_chunk(0));

    binary.signal(libc::SIGTERM);
    let refused = tokio::time::timeout(DEADLINE, async {
        loop {
            match tokio::net::TcpStream::connect(address).await {
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => return,
                // Not refused yet: polled, since nothing announces the listener's closing.
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    refused.await.expect("new connections refused");
    assert!(binary.child.try_wait().unwrap().is_none(), "the process waits for the stream");

    mock.open_gate();
    assert_eq!(stream.rest().await, [mock_chunk(1), mock_chunk(2), "[DONE]".to_owned()]);
    assert!(binary.exit().await.success(), "{}", binary.stderr());
    assert!(binary.stderr().contains("SIGTERM received"), "{}", binary.stderr());
}

#[tokio::test]
async fn on_sigint_a_stream_outliving_the_grace_ends_with_an_error_event_and_the_process_exits_0() {
    let mut binary = Binary::start(&[
        "--shutdown-grace",
        "200ms",
        "--sim-first-token-delay",
        "0ms",
        "--sim-token-interval",
        "10ms",
        "--sim-tokens",
        "100000",
    ]);
    let (_, address) = binary.ready().await;
    let mut stream = Client::chat(&format!("http://{address}"), "a long answer", None).await;
    assert_eq!(stream.status, 200);
    stream.next().await.expect("the stream has begun");

    binary.signal(libc::SIGINT);
    // `rest` returns once the server has closed the stream.
    let events = stream.rest().await;
    let last = events.last().expect("an event after the signal");
    openai_error(&serde_json::from_str(last).unwrap(), "shutting_down");
    assert!(events.iter().all(|event| event != "[DONE]"), "{events:?}");
    assert!(binary.exit().await.success(), "{}", binary.stderr());
    assert!(binary.stderr().contains("SIGINT received"), "{}", binary.stderr());
}

#[tokio::test]
async fn a_clients_authorization_appears_in_no_response_and_no_log_line() {
    const SECRET: &str = "sk-secret-123";
    let upstream = format!("http://127.0.0.1:{}/v1", closed_port());
    // The most verbose level: what an operator debugging this would turn on.
    let mut binary = Binary::start(&["--upstream", &upstream, "--log", "trace"]);
    let (_, address) = binary.ready().await;
    let base = format!("http://{address}");
    let authorization = format!("Bearer {SECRET}");
    let requests = [
        http().post(format!("{base}/v1/chat/completions")).body(chat_body("q", true).to_string()),
        http().post(format!("{base}/v1/chat/completions")).body(chat_body("q", false).to_string()),
        http().get(format!("{base}/v1/models")),
    ];
    for request in requests {
        let response = Client::send(request.header("authorization", &authorization)).await;
        assert_eq!(response.status, 502);
        let body = response.text().await;
        assert!(body.contains("cannot reach the upstream") && !body.contains(SECRET), "{body}");
    }
    binary.signal(libc::SIGTERM);
    assert!(binary.exit().await.success());
    let stderr = binary.stderr();
    assert!(stderr.contains("cannot reach the upstream"), "the failures were logged: {stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
}

/// Issue 24, first step: `--version` names the commit the binary was built from; with
/// `--log-format json` every line on stderr is one JSON object (the ready line's fields as
/// its own), and `--log` takes a tracing filter; a bad filter or format never starts.
#[tokio::test]
async fn version_names_its_commit_and_logs_are_json_under_a_filter() {
    let version = std::process::Command::new(env!("CARGO_BIN_EXE_streamflight-gateway"))
        .arg("--version")
        .env_clear()
        .output()
        .unwrap();
    let version = String::from_utf8(version.stdout).unwrap();
    let expected = concat!("streamflight-gateway ", env!("CARGO_PKG_VERSION"), " (commit ");
    assert!(version.starts_with(expected), "{version}");
    let head = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output();
    if let Some(head) = head.ok().filter(|head| head.status.success()) {
        let head = String::from_utf8(head.stdout).unwrap();
        assert!(version.contains(&format!("(commit {})", head.trim())), "{version} is not {head}");
    }

    // The gateway's own info lines, and nobody's debug ones.
    let mut binary = Binary::start(&["--log-format", "json", "--log", "warn,streamflight_gateway=info"]);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !binary.stderr().contains("ready") {
        assert!(tokio::time::Instant::now() < deadline, "no ready line: {}", binary.stderr());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    binary.signal(libc::SIGTERM);
    assert!(binary.exit().await.success());
    let lines: Vec<serde_json::Value> = binary
        .stderr()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let ready =
        lines.iter().find(|line| line["message"].as_str().is_some_and(|m| m.contains("ready"))).unwrap();
    assert_eq!(ready["level"], "INFO");
    assert!(ready["listen"].as_str().is_some_and(|listen| listen.starts_with("127.0.0.1:")), "{ready}");
    assert!(lines.iter().all(|line| line["level"] != "DEBUG" && line["level"] != "TRACE"), "{lines:?}");
    assert!(lines.len() >= 3, "ready, the signal, the stop: {lines:?}");

    let (reason, _) = refused(&["--log", "info,=x["]).await;
    assert!(reason.contains("not a log level or filter"), "{reason}");
    let (reason, _) = refused(&["--log-format", "yaml"]).await;
    assert!(reason.contains("--log-format"), "{reason}");
}
