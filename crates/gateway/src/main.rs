//! The `streamflight-gateway` binary: loads the settings, sets up logging, binds, serves until
//! SIGTERM or SIGINT, reloads on SIGHUP. Everything else is in the library, for the tests.

use std::process::ExitCode;

use streamflight_gateway::App;
use streamflight_gateway::config::LogFormat;
use streamflight_gateway::config::file::{LoadError, Loaded};
use streamflight_gateway::logs::{JsonFields, JsonLines};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload};

/// With `--features dhat-heap`, every allocation is recorded (see BENCHMARKS.md).
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// jemalloc (the default feature `jemalloc`): after a burst of streams it gives the memory
/// back, where glibc's malloc kept it in its per-thread arenas (BENCHMARKS.md, issue 15).
#[cfg(all(feature = "jemalloc", not(feature = "dhat-heap")))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings ([`streamflight_gateway::JEMALLOC_CONF`]), read once at its start.
// SAFETY: the symbol jemalloc reads is a pointer to a NUL-terminated string, which this is;
// nothing else defines it.
#[cfg(all(feature = "jemalloc", not(feature = "dhat-heap")))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &u8 = &streamflight_gateway::JEMALLOC_CONF[0];

#[tokio::main]
async fn main() -> ExitCode {
    #[cfg(feature = "dhat-heap")]
    let _profiler = profile();
    let args: Vec<_> = std::env::args_os().collect();
    let loaded = match Loaded::from_args(&args) {
        Ok(loaded) => loaded,
        // Help and version go out whole; a usage error is one line, exit code 2.
        Err(LoadError::Usage(e)) if !e.use_stderr() => e.exit(),
        Err(e) => return fail(&e.to_string()),
    };
    let settings = loaded.settings.clone();
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // The filter in a reload layer: SIGHUP can set another one.
    let (filter, filters) = reload::Layer::new(settings.log.filter());
    let logs = tracing_subscriber::registry().with(filter);
    match settings.log_format {
        LogFormat::Text => {
            logs.with(fmt::layer().with_writer(std::io::stderr).with_target(false).with_ansi(colour)).init()
        }
        LogFormat::Json => logs
            .with(fmt::layer().with_writer(std::io::stderr).event_format(JsonLines).fmt_fields(JsonFields))
            .init(),
    }
    let listen = settings.listen;
    let listener = match streamflight_gateway::bind(&settings) {
        Ok(listener) => listener,
        Err(e) => return fail(&format!("cannot listen on {listen}: {e}")),
    };
    let app = match App::new(settings) {
        Ok(app) => app,
        Err(e) => return fail(&e),
    };
    let reloader = app
        .reloader(args, loaded)
        .on_log(move |filter| filters.reload(filter.filter()).map_err(|e| format!("the log filter: {e}")));
    // Signals are watched from here on: one sent once the line below is out finds them watched.
    if let Err(e) = streamflight_gateway::reload::watch(reloader) {
        return fail(&format!("cannot watch for SIGHUP: {e}"));
    }
    let stop = streamflight_gateway::http::serve::signal();
    let address = listener.local_addr().map_or_else(|_| listen.to_string(), |a| a.to_string());
    let admin = app.admin_address().map_or_else(|| "off".to_owned(), |a| a.to_string());
    tracing::info!(listen = %address, %admin, "streamflight-gateway ready, answering from {}", app.backend());
    match app.run(listener, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("stopped: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The heap profile, written to dhat-heap.json at SIGUSR1 (the heap as it is then, say with
/// streams held: `scripts/memory.py --dhat-snapshot`) or else when main returns.
#[cfg(feature = "dhat-heap")]
fn profile() -> std::sync::Arc<std::sync::Mutex<Option<dhat::Profiler>>> {
    let profiler = std::sync::Arc::new(std::sync::Mutex::new(Some(dhat::Profiler::new_heap())));
    let written = std::sync::Arc::clone(&profiler);
    tokio::spawn(async move {
        let kind = tokio::signal::unix::SignalKind::user_defined1();
        if let Ok(mut signal) = tokio::signal::unix::signal(kind) {
            signal.recv().await;
            drop(written.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
        }
    });
    profiler
}

/// A start-up error: one line, exit code 2 (as clap's own usage errors).
fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}
