//! The service's lifecycle: start, serve until told to stop, drain, stop. Also the
//! foreground `exec` command.
//!
//! [`serve`] is the service as a library function: it takes its clock, executor,
//! event sink and a control channel, so tests run it in-process on virtual time.
//! [`run_from_cli`] wires it to the real world: signals, stderr, the system clock.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::{LogFormat, Settings, exit, load_or_report};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::events::{Event, Events, Outcome, Trigger};
use crate::exec::{Executor, Real};
use crate::logging::{self, Format, Level};
use crate::run::{RunRequest, RunSettings, execute_run, new_run_id};
use crate::scheduler::Scheduler;

/// What the outside world can ask of a running service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop firing and drain: running runs get the shutdown grace. A second one
    /// terminates them at once.
    Shutdown,
}

/// Settings of one service instance.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub shutdown_grace: Duration,
    pub max_concurrent_runs: usize,
    pub run: RunSettings,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            shutdown_grace: Duration::from_secs(30),
            max_concurrent_runs: 0,
            run: RunSettings::default(),
        }
    }
}

/// Runs the service on loaded jobs until a [`Control::Shutdown`] arrives (or the
/// control channel closes), then drains and returns.
pub async fn serve<E: Executor, C: Clock>(
    config: Config,
    options: ServeOptions,
    clock: Arc<C>,
    executor: E,
    events: Events,
    mut control: mpsc::Receiver<Control>,
) {
    let version = env!("CARGO_PKG_VERSION").to_string();
    let (jobs, files) = (config.jobs.len(), config.files.len());
    let dispatcher = Dispatcher::new(
        executor,
        Arc::clone(&clock),
        events.clone(),
        options.run.clone(),
        options.max_concurrent_runs,
    );
    let mut scheduler = Scheduler::new(Arc::clone(&clock), dispatcher.clone(), events.clone());
    scheduler.add_jobs(config.jobs);
    events.emit(Event::ServiceStarted {
        version: version.clone(),
        jobs,
        files,
    });
    scheduler.fire_reboot_jobs();

    let stop = CancellationToken::new();
    let stop_loop = stop.clone();
    let loop_task = async move { scheduler.run(stop_loop).await };
    tokio::pin!(loop_task);
    tokio::select! {
        () = &mut loop_task => {}
        _ = control.recv() => stop.cancel(),
    }
    loop_task.await;

    events.emit(Event::ServiceStopping {
        version: version.clone(),
        jobs,
        files,
    });
    dispatcher.stop_accepting();
    tokio::select! {
        () = dispatcher.wait_idle() => {}
        () = tokio::time::sleep(options.shutdown_grace) => {}
        Some(Control::Shutdown) = control.recv() => {}
    }
    // Whatever still runs is terminated: SIGTERM to its group, SIGKILL after kill_grace.
    dispatcher.cancel_all();
    dispatcher.wait_idle().await;
    events.emit(Event::ServiceStopped {
        version,
        jobs,
        files,
    });
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("chime")
        .build()
}

/// Picks the log format: `auto` is journald when stderr is the journal, text on a
/// terminal, JSON otherwise.
pub fn resolve_format(requested: LogFormat) -> Format {
    match requested {
        LogFormat::Text => Format::Text,
        LogFormat::Json | LogFormat::Journald => Format::Json,
        LogFormat::Auto => {
            // SAFETY: isatty only inspects the descriptor.
            if unsafe { libc::isatty(libc::STDERR_FILENO) } == 1 {
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

/// Signals become control messages: TERM and INT ask for shutdown (twice: at once).
fn forward_signals(tx: mpsc::Sender<Control>) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = term.recv() => {}
                Some(()) = int.recv() => {}
                else => return,
            }
            if tx.send(Control::Shutdown).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// `chime run`.
pub fn run_from_cli(paths: &[PathBuf], settings: &Settings) -> u8 {
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return exit::FAILED;
        }
    };
    runtime.block_on(async {
        // Signals first: a SIGTERM during loading must stop us cleanly, not kill us.
        let (tx, rx) = mpsc::channel(8);
        if let Err(err) = forward_signals(tx) {
            eprintln!("error: cannot install signal handlers: {err}");
            return exit::FAILED;
        }
        let Some(config) = load_or_report(paths, settings) else {
            return exit::FAILED;
        };
        let executor = match Real::new() {
            Ok(executor) => executor,
            Err(err) => {
                eprintln!("error: {err}");
                return exit::FAILED;
            }
        };
        let (events, _guard) = logging::start(
            resolve_format(settings.log_format),
            resolve_level(settings),
            Box::new(std::io::stderr()),
        );
        let options = ServeOptions {
            shutdown_grace: settings.shutdown_grace,
            max_concurrent_runs: settings.max_concurrent_runs,
            run: RunSettings::default(),
        };
        serve(config, options, Arc::new(SystemClock), executor, events, rx).await;
        exit::OK
    })
}

/// `chime exec JOB`: one run now, in the foreground, logged to stderr.
pub fn exec_from_cli(name: &str, paths: &[PathBuf], settings: &Settings) -> u8 {
    let Some(config) = load_or_report(paths, settings) else {
        return exit::FAILED;
    };
    let Some(job) = config.jobs.into_iter().find(|job| job.name == name) else {
        eprintln!("error: no job named `{name}` in the loaded schedules; `chime check` lists them");
        return exit::FAILED;
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return exit::FAILED;
        }
    };
    runtime.block_on(async {
        let executor = match Real::new() {
            Ok(executor) => executor,
            Err(err) => {
                eprintln!("error: {err}");
                return exit::FAILED;
            }
        };
        let (events, _guard) = logging::start(
            resolve_format(settings.log_format),
            resolve_level(settings),
            Box::new(std::io::stderr()),
        );
        let cancel = CancellationToken::new();
        let on_signal = cancel.clone();
        let (tx, mut rx) = mpsc::channel(8);
        if forward_signals(tx).is_ok() {
            tokio::spawn(async move {
                if rx.recv().await.is_some() {
                    on_signal.cancel();
                }
            });
        }
        let clock = SystemClock;
        let request = RunRequest {
            job: Arc::new(job),
            run_id: new_run_id(),
            scheduled_at: clock.now(),
            trigger: Trigger::Manual,
            cancel,
            stop_retries: CancellationToken::new(),
        };
        let report = execute_run(&executor, &clock, &events, &RunSettings::default(), request).await;
        if report.outcome == Outcome::Success { exit::OK } else { exit::FAILED }
    })
}
