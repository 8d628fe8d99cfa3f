//! SIGHUP: the `--config` file read again, and what can change while serving applied at once
//! (the log filter, the admission and body limits); one log line says what changed.
//!
//! Only the file can have changed: the command line and the environment of a running process
//! are those it started with, and they still win over the file. A key outside [`LIVE`] that
//! changed is named in the line as needing a restart, and is not applied. A file that does
//! not load (or settings that do not check) changes nothing and is logged as an error.
//! Nothing here touches a request being served: a stream goes on under the limits it was
//! admitted with.

use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::file::Loaded;
use crate::config::{Filter, Settings};
use crate::http::inbound::Bounds;
use crate::http::limits::Limits;

/// The keys a reload applies; any other needs a restart.
pub const LIVE: &[&str] = &["log", "max-concurrent-requests", "body-limit", "body-timeout", "body-deadline"];

/// The keys of the body bounds, applied together.
const BODY: &[&str] = &["body-limit", "body-timeout", "body-deadline"];

/// How a new log filter is put in place (the subscriber is the binary's, not the library's).
type SetFilter = Box<dyn Fn(&Filter) -> Result<(), String> + Send + Sync>;

/// What a reload reads again and where it applies it; made by
/// [`App::reloader`](crate::App::reloader).
pub struct Reloader {
    /// The program's arguments, read again with the file (they still win over it).
    args: Vec<OsString>,
    /// The settings the process started with: what the keys that need a restart still are.
    started: Loaded,
    /// The settings in effect: those started with, and the live keys of the last reload.
    current: Loaded,
    limits: Arc<Limits>,
    log: Option<SetFilter>,
}

impl Reloader {
    pub(crate) fn new(args: Vec<OsString>, loaded: Loaded, limits: Arc<Limits>) -> Reloader {
        Reloader { args, started: loaded.clone(), current: loaded, limits, log: None }
    }

    /// Applies a new `--log` filter with `set` on each reload that changes it.
    pub fn on_log(mut self, set: impl Fn(&Filter) -> Result<(), String> + Send + Sync + 'static) -> Reloader {
        self.log = Some(Box::new(set));
        self
    }

    /// Reads the settings again and applies the live keys that changed. `Ok` is the line that
    /// says what changed; `Err` says why nothing did.
    pub fn reload(&mut self) -> Result<String, String> {
        let Some(file) = self.current.file.clone() else {
            return Ok("SIGHUP received: ignored; no --config file to read again".to_owned());
        };
        let next =
            Loaded::from_args(&self.args).map_err(|e| format!("SIGHUP received: {e}; nothing changed"))?;
        let file = file.display();
        next.settings
            .check()
            .map_err(|e| format!("SIGHUP received: config file {file}: {e}; nothing changed"))?;
        let live: Vec<String> = next
            .changed_since(&self.current)
            .into_iter()
            .filter(|key| LIVE.contains(&key.as_str()))
            .collect();
        let waiting: Vec<String> = next
            .changed_since(&self.started)
            .into_iter()
            .filter(|key| !LIVE.contains(&key.as_str()))
            .collect();
        self.apply(&live, &next.settings).map_err(|e| format!("SIGHUP received: {e}; nothing changed"))?;
        let applied: Vec<String> = live
            .iter()
            .map(|key| format!("{key}={}", next.values(key).unwrap_or_default().join(",")))
            .collect();
        self.current = next;
        let mut line = match applied.is_empty() {
            true => format!("SIGHUP received: config file {file} read again; nothing to apply"),
            false => format!("SIGHUP received: config file {file} read again; applied {}", applied.join(" ")),
        };
        if !waiting.is_empty() {
            line.push_str(&format!("; not applied, need a restart: {}", waiting.join(" ")));
        }
        Ok(line)
    }

    /// Puts the `keys` of `settings` in place (the log filter first: the one step that can fail).
    fn apply(&self, keys: &[String], settings: &Settings) -> Result<(), String> {
        let has = |key: &str| keys.iter().any(|k| k == key);
        if let (true, Some(set)) = (has("log"), &self.log) {
            set(&settings.log)?;
        }
        if has("max-concurrent-requests") {
            self.limits.set_most(settings.max_concurrent_requests);
        }
        if BODY.iter().any(|key| has(key)) {
            self.limits.set_body(Bounds::of(settings));
        }
        Ok(())
    }
}

/// Whether a reloader watches SIGHUP: the disposition of a signal is the process's, so this is
/// too ([`serve::signal`](crate::http::serve::signal) then leaves SIGHUP to it).
static WATCHED: AtomicBool = AtomicBool::new(false);

/// Whether [`watch`] has been called in this process.
pub(crate) fn watched() -> bool {
    WATCHED.load(Ordering::Relaxed)
}

/// Watches for SIGHUP from now on (before this, one would end the process): each reloads
/// with `reloader` and logs its line, at info, under the filter it may have just set.
pub fn watch(mut reloader: Reloader) -> std::io::Result<()> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    WATCHED.store(true, Ordering::Relaxed);
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            // The file is small and a reload rare: it is read on this task, not a blocking one.
            match reloader.reload() {
                Ok(line) => tracing::info!("{line}"),
                Err(line) => tracing::error!("{line}"),
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Mutex;

    use super::*;

    fn path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("streamflight-reload-{}-{name}.toml", std::process::id()))
    }

    #[tokio::test]
    async fn live_keys_are_applied_the_rest_named_and_a_bad_file_changes_nothing() {
        let file = path("live");
        std::fs::write(&file, "log = \"warn\"\nmax-concurrent-requests = 4\nsim-tokens = 3\n").unwrap();
        let args: Vec<OsString> =
            ["streamflight-gateway", "--config", file.to_str().unwrap(), "--body-limit", "9"]
                .map(OsString::from)
                .into();
        let loaded = Loaded::from_args(&args).unwrap();
        let limits = Arc::new(Limits::of(&loaded.settings));
        let filters = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&filters);
        let mut reloader = Reloader::new(args, loaded, Arc::clone(&limits)).on_log(move |filter| {
            seen.lock().unwrap().push(format!("{filter:?}"));
            Ok(())
        });
        assert!(reloader.reload().unwrap().contains("nothing to apply"));

        std::fs::write(
            &file,
            "log = \"info\"\nmax-concurrent-requests = 6\nsim-tokens = 5\nbody-limit = 1\n",
        )
        .unwrap();
        let line = reloader.reload().unwrap();
        assert!(line.contains("applied max-concurrent-requests=6 log=info;"), "{line}");
        assert!(line.ends_with("not applied, need a restart: sim-tokens"), "{line}");
        assert!(!line.contains("body-limit"), "the flag still wins over the file: {line}");
        assert_eq!(limits.permits().available_permits(), 6);
        assert_eq!(filters.lock().unwrap().len(), 1);

        std::fs::write(&file, "log = \"debug\"\nmax-concurrent-requests = \"many\"\n").unwrap();
        let error = reloader.reload().unwrap_err();
        assert!(error.contains("max-concurrent-requests") && error.ends_with("nothing changed"), "{error}");
        std::fs::write(&file, "max-concurrent-requests = 0\n").unwrap();
        assert!(reloader.reload().unwrap_err().contains("above 0"));
        assert_eq!(limits.permits().available_permits(), 6);
        assert_eq!(filters.lock().unwrap().len(), 1);

        std::fs::write(&file, "body-timeout = \"1s\"\n").unwrap();
        let line = reloader.reload().unwrap();
        // `log` is back to its default, `info`, which it already was.
        assert!(line.contains("applied body-timeout=1s max-concurrent-requests=10000;"), "{line}");
        assert_eq!(limits.body().idle, std::time::Duration::from_secs(1));
        assert_eq!(limits.body().limit, 9);
        let _ = std::fs::remove_file(&file);
    }
}
