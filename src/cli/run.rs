//! `chime run`: the service as a process. Signals are registered first, then the
//! schedules are loaded (a SIGTERM meanwhile is served), then logging, the directory
//! watcher and [`crate::daemon::serve`]; its outcome becomes the exit code.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::{LogFormat, Settings, exit, real_executor, report_errors};
use crate::clock::SystemClock;
use crate::control::server::PauseStore;
use crate::daemon::{ConfigSource, Control, FileSource, Reloaded, ServeOptions, World, serve};
use crate::events::{Event, Events};
use crate::health::Health;
use crate::logging::{self, Format, Level};
use crate::monitor::{Monitor, MonitorOptions};
use crate::state::Write;
use crate::systemd::Notifier;

pub(super) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("chime")
        .build()
}

/// Picks the log format: `auto` is journald when stderr is the journal, text on a
/// terminal, JSON otherwise.
fn resolve_format(requested: LogFormat) -> Format {
    match requested {
        LogFormat::Text => Format::Text,
        LogFormat::Json => Format::Json,
        LogFormat::Journald => Format::Journald,
        LogFormat::Auto => {
            if logging::stderr_is_journal() {
                Format::Journald
            } else if std::io::stderr().is_terminal() {
                Format::Text
            } else {
                Format::Json
            }
        }
    }
}

fn resolve_level(settings: &Settings) -> Level {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| Level::parse(&v))
        .or_else(|| Level::parse(&settings.log_level))
        .unwrap_or(Level::Info)
}

/// Signals become control messages: TERM and INT ask for shutdown (a second: at
/// once), HUP for a reload.
pub(super) fn forward_signals(tx: mpsc::Sender<Control>) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            let control = tokio::select! {
                Some(()) = term.recv() => Control::Shutdown,
                Some(()) = int.recv() => Control::Shutdown,
                Some(()) = hup.recv() => Control::Reload,
                else => return,
            };
            if tx.send(control).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Starts the event log, and routes the few internal diagnostics (`tracing` macros,
/// e.g. a process group that would not die) to stderr in a matching format.
pub(super) fn start_logging(settings: &Settings) -> (Events, logging::LogGuard) {
    let format = resolve_format(settings.log_format);
    let level = resolve_level(settings);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.as_str()));
    let diagnostics = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    // A subscriber may already be installed (tests running several services); keep it.
    let _ = match format {
        Format::Text => diagnostics.compact().try_init(),
        Format::Json | Format::Journald => diagnostics.json().try_init(),
    };
    logging::start(format, level, Box::new(std::io::stderr()))
}

/// `chime run`.
pub(super) fn run(paths: &[PathBuf], settings: &Settings) -> u8 {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return exit::FAILED;
        }
    };
    let code = runtime.block_on(run_service(paths.to_vec(), settings));
    // A read of the files that never returns (a hung mount) must not hold up the exit.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

async fn run_service(paths: Vec<PathBuf>, settings: &Settings) -> u8 {
    // Signals first: a SIGTERM during loading must stop us cleanly, not kill us.
    let (tx, mut rx) = mpsc::channel(16);
    if let Err(err) = forward_signals(tx.clone()) {
        eprintln!("error: cannot install signal handlers: {err}");
        return exit::FAILED;
    }
    let options = settings
        .load_options(settings.default_timezone)
        .with_max_jobs(settings.max_jobs);
    let loading = tokio::task::spawn_blocking(move || FileSource::load(paths, options));
    // Loading is not awaited blindly: a shutdown asked for meanwhile is served.
    let loaded = tokio::select! {
        loaded = loading => loaded,
        () = shutdown_requested(&mut rx) => {
            eprintln!("chime: stopped while loading the schedules");
            return exit::OK;
        }
    };
    let (source, config) = match loaded {
        Ok(Ok(pair)) => pair,
        Ok(Err(errors)) => {
            // In the log's format: a JSON or journal log gets `config.rejected`, as at
            // reload, so that one reader sees both; a person on a terminal, lines.
            if resolve_format(settings.log_format) == Format::Text {
                report_errors(&errors);
            } else {
                let (events, _guard) = start_logging(settings);
                events.emit(Event::config_rejected(&errors.0));
            }
            return exit::FAILED;
        }
        Err(err) => {
            eprintln!("error: loading the schedules failed: {err}");
            return exit::INTERNAL;
        }
    };
    let executor = match real_executor() {
        Ok(executor) => executor,
        Err(code) => return code,
    };
    let control = match crate::control::socket_path(
        settings.control_socket.as_deref(),
        &crate::control::Env::from_process(),
    ) {
        Ok(None) => None,
        Ok(Some(path)) => match crate::control::server::bind(&path) {
            Ok(socket) => Some(socket),
            Err(err) => {
                super::print_error(&err);
                return exit::FAILED;
            }
        },
        Err(hint) => {
            eprintln!("warning: {hint}; running without a control socket");
            None
        }
    };
    // A port in use is an error at start, before anything runs.
    let listener = match settings.listen.map(crate::monitor::http::bind).transpose() {
        Ok(listener) => listener,
        Err(err) => {
            super::print_error(&err);
            return exit::FAILED;
        }
    };
    let (mut events, _guard) = start_logging(settings);
    let cluster_options = match super::cluster_options(settings) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            return exit::FAILED;
        }
    };
    let cluster = cluster_options
        .clone()
        .map(|options| crate::cluster::Cluster::start(options, events.clone()));
    let (state, resume) = match cluster_options {
        // With --cluster the history lives in PostgreSQL, through the same store trait
        // and writer; SQLite is not used. Opening it connects: not on a worker.
        Some(options) => {
            let retention = super::state::retention(settings);
            let opening = events.clone();
            match tokio::task::spawn_blocking(move || {
                super::state::start_cluster(options, retention, opening)
            })
            .await
            {
                Ok((state, resume, recording)) => {
                    events = recording;
                    (state, resume)
                }
                Err(err) => {
                    eprintln!("error: opening the cluster's history failed: {err}");
                    return exit::INTERNAL;
                }
            }
        }
        None => super::state::start(settings, &mut events),
    };
    crate::daemon::log_file_warnings(&config);
    let pauses = state.as_ref().map(|state| {
        let writer = state.thread.writer();
        PauseStore::new(move |job, paused| {
            writer.write(Write::Paused {
                job: job.to_string(),
                paused,
            });
        })
    });
    let monitor = match Monitor::start(
        MonitorOptions {
            metrics: listener.is_some(),
            last_success: resume.last_success.clone(),
        },
        &config.jobs,
        events.clone(),
        tokio::runtime::Handle::current(),
    ) {
        Ok(monitor) => monitor,
        Err(err) => {
            eprintln!("error: cannot start the monitor thread: {err}");
            return exit::INTERNAL;
        }
    };
    let events = monitor.observe(events);
    let health = Health::new();
    let server = listener.map(|listener| {
        tokio::spawn(crate::monitor::http::serve(
            listener,
            monitor.clone(),
            health.clone(),
        ))
    });
    let dirs = source.watch_dirs();
    let quiet = Duration::from_millis(250);
    if let Err(err) = crate::watch::watch(&dirs, quiet, tx, Control::ReloadIfChanged) {
        eprintln!("warning: cannot watch the schedule directories ({err}); reload with SIGHUP");
    }
    let options = ServeOptions {
        shutdown_grace: settings.shutdown_grace,
        max_concurrent_runs: settings.max_concurrent_runs,
        watchdog: Notifier::watchdog_interval(),
        resume,
        cluster: cluster.clone(),
        control,
        pauses,
        ..ServeOptions::default()
    };
    let world = World {
        clock: Arc::new(SystemClock),
        executor,
        events,
        notifier: Notifier::from_env(),
        health,
    };
    let source = Monitored {
        source: InjectedFault::from_env(source),
        monitor: monitor.clone(),
    };
    let served = serve(config, source, options, world, rx).await;
    // The last runs' pings (a run cancelled at shutdown reports its failure).
    monitor.flush(PING_GRACE).await;
    if let Some(server) = server {
        server.abort();
    }
    if let Some(state) = state {
        // What is queued is written before the exit (one last try if the disk fails).
        let _ = tokio::task::spawn_blocking(move || state.thread.close()).await;
    }
    match served {
        Ok(()) => exit::OK,
        Err(_) => exit::INTERNAL,
    }
}

/// How long a stopping service waits for the pings still in flight.
const PING_GRACE: Duration = Duration::from_secs(5);

/// Resolves at the first shutdown request; reload requests before it are moot.
async fn shutdown_requested(control: &mut mpsc::Receiver<Control>) {
    loop {
        match control.recv().await {
            Some(Control::Shutdown) => return,
            Some(_) => {}
            None => std::future::pending().await,
        }
    }
}

/// Tells the monitor each set of jobs a reload loaded (a loaded set is applied).
struct Monitored<S> {
    source: S,
    monitor: Monitor,
}

impl<S: ConfigSource> ConfigSource for Monitored<S> {
    fn reload(&mut self, force: bool) -> Reloaded {
        let reloaded = self.source.reload(force);
        if let Reloaded::Loaded(config) = &reloaded {
            self.monitor.jobs_loaded(&config.jobs);
        }
        reloaded
    }
}

/// A fault for the tests of `service.failed` through the binary: with
/// `CHIME_INJECT_FAULT=reload-panic` in the environment, every reload panics. Without
/// it the source is used as it is.
struct InjectedFault<S> {
    source: S,
    panic_on_reload: bool,
}

impl<S> InjectedFault<S> {
    fn from_env(source: S) -> Self {
        let panic_on_reload =
            std::env::var_os("CHIME_INJECT_FAULT").is_some_and(|fault| fault == "reload-panic");
        InjectedFault {
            source,
            panic_on_reload,
        }
    }
}

impl<S: ConfigSource> ConfigSource for InjectedFault<S> {
    fn reload(&mut self, force: bool) -> Reloaded {
        assert!(
            !self.panic_on_reload,
            "injected fault (CHIME_INJECT_FAULT=reload-panic)"
        );
        self.source.reload(force)
    }
}
