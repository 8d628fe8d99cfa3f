//! The gateway's binary as a process of its own: started with flags, its stderr collected,
//! stopped, paused and killed for real with signals.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::DEADLINE;

/// The binary, started with `--listen 127.0.0.1:0` and `flags`, its stderr collected.
pub struct Binary {
    pub child: Child,
    /// Every line written to stderr so far.
    stderr: Arc<Mutex<Vec<String>>>,
    /// The lines as they come.
    lines: mpsc::UnboundedReceiver<String>,
    /// Joined once stderr has closed (the process is gone).
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Binary {
    pub fn start(flags: &[&str]) -> Binary {
        Binary::start_with_env(flags, &[])
    }

    /// The binary with `variables` set in its otherwise empty environment.
    pub fn start_with_env(flags: &[&str], variables: &[(&str, &str)]) -> Binary {
        Binary::spawn(Command::new(env!("CARGO_BIN_EXE_streamflight-gateway")), flags, variables)
    }

    /// The binary with at most `kib` KiB of address space (`ulimit -v`): an allocation past it
    /// fails, as on a host that has no more memory to give.
    pub fn start_limited(kib: u64, flags: &[&str]) -> Binary {
        let mut command = Command::new("/bin/sh");
        // `exec`: the process (and its pid, for signals) is the gateway's, not the shell's.
        command.args(["-c", &format!(r#"ulimit -v {kib} && exec "$0" "$@""#)]);
        command.arg(env!("CARGO_BIN_EXE_streamflight-gateway"));
        Binary::spawn(command, flags, &[])
    }

    fn spawn(mut command: Command, flags: &[&str], variables: &[(&str, &str)]) -> Binary {
        let mut child = command
            .args(["--listen", "127.0.0.1:0"])
            .args(flags)
            // Neither a `STREAMFLIGHT_*` fallback nor a proxy of the test's environment applies.
            .env_clear()
            .envs(variables.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the gateway binary starts");
        let pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (sender, lines) = mpsc::unbounded_channel();
        let collected = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                collected.lock().unwrap().push(line.clone());
                let _ = sender.send(line);
            }
        });
        Binary { child, stderr, lines, reader: Some(reader) }
    }

    /// Waits for the startup line; returns it and the address it names.
    pub async fn ready(&mut self) -> (String, SocketAddr) {
        loop {
            let line = tokio::time::timeout(DEADLINE, self.lines.recv())
                .await
                .expect("a startup line in time")
                .unwrap_or_else(|| panic!("the gateway ended before it was ready: {}", self.stderr()));
            if line.contains("ready") {
                let listen = line.split_whitespace().find_map(|word| word.strip_prefix("listen="));
                let address = listen.and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("{line}"));
                return (line, address);
            }
        }
    }

    /// Waits for a line of stderr containing `text` (lines before it are passed over), and
    /// returns it.
    pub async fn line_containing(&mut self, text: &str) -> String {
        loop {
            let line = tokio::time::timeout(DEADLINE, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("no line with `{text}` in time: {}", self.stderr()))
                .unwrap_or_else(|| panic!("the gateway ended with no line with `{text}`: {}", self.stderr()));
            if line.contains(text) {
                return line;
            }
        }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) only reads its two integer arguments; the pid is our own child's, which
        // has not been waited for, so it cannot have been reused.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill");
    }

    /// Waits for the process to exit, then for its stderr to close.
    pub async fn exit(&mut self) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(tokio::time::Instant::now() < deadline, "still running; it wrote {}", self.stderr());
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        status
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        // A test that failed midway leaves no gateway behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
