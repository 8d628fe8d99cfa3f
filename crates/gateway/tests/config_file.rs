//! The `--config` file as an operator uses it: under the flags and the environment, an unknown
//! key refused at start, the example file true to the binary, SIGHUP applying the live keys
//! without cutting a stream.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use clap::CommandFactory;
use common::process::Binary;
use common::*;
use serde_json::Value;
use streamflight_gateway::Settings;

/// A config file in the temporary directory, removed when dropped.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(name: &str, text: &str) -> ConfigFile {
        let path = std::env::temp_dir().join(format!("streamflight-test-{}-{name}.toml", std::process::id()));
        let file = ConfigFile(path);
        file.write(text);
        file
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The tokens of one answer of the simulated model behind `binary`.
async fn tokens(binary: &mut Binary) -> usize {
    let (_, address) = binary.ready().await;
    let mut stream = Client::chat(&format!("http://{address}"), "count", None).await;
    assert_eq!(stream.status, 200);
    let events = stream.rest().await;
    let pieces = events.iter().filter_map(|e| serde_json::from_str::<Value>(e).ok());
    pieces
        .filter(|v| {
            v.pointer("/choices/0/delta/content").and_then(Value::as_str).is_some_and(|c| !c.is_empty())
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_beats_the_environment_which_beats_the_file_which_beats_the_default() {
    let quick = ["--sim-token-interval", "0ms", "--sim-first-token-delay", "0ms"];
    let file = ConfigFile::new("precedence", "sim-tokens = 3\n");
    let config = ["--config", file.path()];
    let env = [("STREAMFLIGHT_SIM_TOKENS", "5")];

    let default = tokens(&mut Binary::start(&quick)).await;
    let from_file = tokens(&mut Binary::start(&[&quick[..], &config].concat())).await;
    let from_env = tokens(&mut Binary::start_with_env(&[&quick[..], &config].concat(), &env)).await;
    let flags = [&quick[..], &config, &["--sim-tokens", "7"]].concat();
    let from_flag = tokens(&mut Binary::start_with_env(&flags, &env)).await;
    // The file named by the environment is read as well as one named by the flag.
    let named_by_env = [("STREAMFLIGHT_CONFIG", file.path())];
    let file_from_env = tokens(&mut Binary::start_with_env(&quick, &named_by_env)).await;

    assert_eq!((default, from_file, from_env, from_flag, file_from_env), (40, 3, 5, 7, 3));
}

/// Runs the binary with `flags`, expecting it to refuse to start: the one line that says why.
async fn refused(flags: &[&str]) -> String {
    let mut binary = Binary::start(flags);
    let status = binary.exit().await;
    let stderr = binary.stderr();
    assert_eq!(status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|line| !line.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_owned()
}

#[tokio::test]
async fn an_unknown_key_or_a_wrong_value_stops_the_start_naming_the_key_and_the_file() {
    let file = ConfigFile::new("unknown", "sim-tokens = 3\nmax-concurent-requests = 10\n");
    let line = refused(&["--config", file.path()]).await;
    assert!(line.contains("unknown key `max-concurent-requests`") && line.contains(file.path()), "{line}");

    file.write("max_concurrent_requests = 10\n");
    let line = refused(&["--config", file.path()]).await;
    assert!(
        line.contains("`max_concurrent_requests`") && line.contains("`max-concurrent-requests`"),
        "{line}"
    );

    file.write("linger = 5\n");
    let line = refused(&["--config", file.path()]).await;
    assert!(line.contains("key `linger`") && line.contains("5s"), "{line}");

    let line = refused(&["--config", "/nonexistent/streamflight.toml"]).await;
    assert!(line.contains("/nonexistent/streamflight.toml"), "{line}");
    // Checked like flags: a combination that cannot work, said as the flags' own error.
    file.write("redis = \"redis://127.0.0.1:1/\"\n");
    let line = refused(&["--config", file.path()]).await;
    assert!(line.contains("--redis needs --fleet-secret"), "{line}");
}

/// The example file's `# key = value` lines, in order.
fn example() -> Vec<(String, String)> {
    include_str!("../streamflight.example.toml")
        .lines()
        .filter_map(|line| line.strip_prefix("# ")?.split_once(" = "))
        .map(|(key, value)| {
            let value = value.split(" #").next().unwrap_or_default().trim();
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

#[test]
fn the_example_file_names_every_key_in_order_with_its_default() {
    let command = Settings::command();
    let args: Vec<_> =
        command.get_arguments().filter(|arg| arg.get_long().is_some_and(|long| long != "config")).collect();
    let keys: Vec<&str> = args.iter().filter_map(|arg| arg.get_long()).collect();
    let example = example();
    let shown: Vec<&str> = example.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(shown, keys, "every key, in the flags' order");
    for ((key, value), arg) in example.iter().zip(&args) {
        let defaults: Vec<String> =
            arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
        if let [default] = defaults.as_slice() {
            assert_eq!(value.trim_matches('"'), default, "{key}'s default");
        }
    }
    // Every line uncommented is a file the settings load from (the secrets' examples included).
    let whole: String = example.iter().map(|(key, value)| format!("{key} = {value}\n")).collect();
    let file = ConfigFile::new("example-whole", &whole);
    let loaded = Settings::load(["streamflight-gateway", "--config", file.path()]);
    assert!(loaded.is_ok(), "{:?}", loaded.err().map(|e| e.to_string()));
}

#[tokio::test]
async fn the_binary_starts_on_the_example_files_defaults() {
    // The lines with a default, uncommented: what the binary starts with unchanged.
    let command = Settings::command();
    let defaulted = |key: &str| {
        command.get_arguments().any(|arg| arg.get_long() == Some(key) && !arg.get_default_values().is_empty())
    };
    let text: String = example()
        .into_iter()
        .filter(|(key, _)| defaulted(key))
        .map(|(key, value)| format!("{key} = {value}\n"))
        .collect();
    assert!(text.contains("max-concurrent-requests = 10000\n"), "{text}");
    let file = ConfigFile::new("example-defaults", &text);
    let mut binary = Binary::start(&["--config", file.path()]);
    let (line, _) = binary.ready().await;
    assert!(line.contains("simulated model"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_the_live_keys_and_never_cuts_a_stream() {
    let mock = Mock::start(Mode::Tokens { tokens: 3, interval: Duration::ZERO, gated: true }).await;
    let file =
        ConfigFile::new("sighup", "max-concurrent-requests = 1\nlog = \"info\"\nresume-window = \"10s\"\n");
    let mut binary = Binary::start(&["--upstream", &mock.base, "--config", file.path()]);
    let (_, address) = binary.ready().await;
    let base = format!("http://{address}");
    let mut held = Client::chat(&base, "held", None).await;
    assert_eq!(held.next().await.unwrap(), mock_chunk(0));
    let refused = http().get(format!("{base}/v1/models")).send().await.unwrap();
    assert_eq!(refused.status(), 503, "one request at a time, and one is held");

    file.write("max-concurrent-requests = 2\nlog = \"debug\"\nresume-window = \"1s\"\n");
    binary.signal(libc::SIGHUP);
    let line = binary.line_containing("SIGHUP").await;
    assert!(line.contains("applied max-concurrent-requests=2 log=debug"), "{line}");
    assert!(line.contains("need a restart: resume-window"), "{line}");

    let second = http()
        .post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(chat_body("second", false).to_string());
    let second = tokio::spawn(second.send());
    // The new filter is in place: a debug line of the gateway's own.
    binary.line_containing("admitted").await;

    // A file that does not load changes nothing, and says so.
    file.write("max-concurrent-requests = \"many\"\n");
    binary.signal(libc::SIGHUP);
    let line = binary.line_containing("SIGHUP").await;
    assert!(
        line.contains("ERROR")
            && line.contains("max-concurrent-requests")
            && line.contains("nothing changed"),
        "{line}"
    );
    let third = http().get(format!("{base}/v1/models")).send().await.unwrap();
    assert_eq!(third.status(), 503, "still two at a time, and two are held");

    // Lowered under the two held: neither is cut, and new requests wait for both to end.
    file.write("max-concurrent-requests = 1\nlog = \"debug\"\n");
    binary.signal(libc::SIGHUP);
    let line = binary.line_containing("SIGHUP").await;
    assert!(line.ends_with("applied max-concurrent-requests=1"), "resume-window as started: {line}");
    let fourth = http().get(format!("{base}/v1/models")).send().await.unwrap();
    assert_eq!(fourth.status(), 503);

    mock.open_gate();
    assert_eq!(
        held.rest().await,
        [mock_chunk(1), mock_chunk(2), "[DONE]".to_owned()],
        "the held stream whole"
    );
    assert_eq!(second.await.unwrap().unwrap().status(), 200);
    // Both ended: one request at a time again (the permits come back as their bodies are done).
    eventually("a request is admitted again", || async {
        // The mock echoes what passes through with a 201.
        http().get(format!("{base}/v1/models")).send().await.unwrap().status() == 201
    })
    .await;
    assert!(binary.child.try_wait().unwrap().is_none(), "SIGHUP never ends the process");
    binary.signal(libc::SIGTERM);
    assert!(binary.exit().await.success(), "{}", binary.stderr());
}
