//! The service's lifecycle: start, serve, reload, drain, stop. Also the foreground
//! `exec` command.
//!
//! [`serve`] is the service as a library function: it takes its clock, executor, event
//! sink, configuration source and a control channel, so tests run it in-process on
//! virtual time. [`run_from_cli`] wires it to the real world: signals (registered
//! first), a directory watcher, systemd's notify socket, stderr, the system clock.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::cli::{LogFormat, Settings, exit, report_errors};
use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config, ConfigErrors, LoadOptions, Snapshot};
use crate::dispatch::Dispatcher;
use crate::events::{Event, Events, Outcome, Trigger};
use crate::exec::{Executor, Real};
use crate::logging::{self, Format, Level};
use crate::run::{RunRequest, RunSettings, execute_run, new_run_id};
use crate::scheduler::{Command, Heartbeat, ReloadCounts, Scheduler};
use crate::systemd::Notifier;

/// What the outside world can ask of a running service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop firing and drain: running runs get the shutdown grace. A second one
    /// terminates them at once.
    Shutdown,
    /// Reload the schedules (SIGHUP): always applied and logged.
    Reload,
    /// A watched file may have changed, or the periodic re-check: reload only if the
    /// files' content changed.
    ReloadIfChanged,
}

/// Where a reload gets its schedules from.
pub trait ConfigSource: Send + 'static {
    /// Reads the schedules again. `force` = false may answer [`Reloaded::Unchanged`]
    /// when the files are byte-for-byte what was loaded last time.
    fn reload(&mut self, force: bool) -> Reloaded;
}

#[derive(Debug)]
pub enum Reloaded {
    Unchanged,
    Loaded(Config),
    Rejected(ConfigErrors),
}

/// Schedules read from files and directories, remembering what was read last.
#[derive(Debug)]
pub struct FileSource {
    paths: Vec<PathBuf>,
    options: LoadOptions,
    /// What was read last, loaded or rejected: a file event or re-check that finds the
    /// same bytes again has nothing new to apply or to report.
    last: Snapshot,
}

impl FileSource {
    /// Loads the schedules for the first time; every error of every file is reported.
    pub fn load(
        paths: Vec<PathBuf>,
        options: LoadOptions,
    ) -> Result<(FileSource, Config), ConfigErrors> {
        let snapshot = config::read_snapshot(&paths);
        let config = snapshot.load(&options)?;
        Ok((
            FileSource {
                paths,
                options,
                last: snapshot,
            },
            config,
        ))
    }

    /// The directories to watch: each directory given, and the directory of each file
    /// given (editors save by rename, and Kubernetes swaps a `..data` symlink, so the
    /// files themselves are the wrong thing to watch).
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .paths
            .iter()
            .map(|path| {
                if path.is_dir() {
                    path.clone()
                } else {
                    match path.parent() {
                        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                        _ => PathBuf::from("."),
                    }
                }
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

impl ConfigSource for FileSource {
    fn reload(&mut self, force: bool) -> Reloaded {
        let snapshot = config::read_snapshot(&self.paths);
        if !force && snapshot == self.last {
            return Reloaded::Unchanged;
        }
        let outcome = match snapshot.load(&self.options) {
            Ok(config) => Reloaded::Loaded(config),
            Err(errors) => Reloaded::Rejected(errors),
        };
        self.last = snapshot;
        outcome
    }
}

/// Settings of one service instance.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub shutdown_grace: Duration,
    pub max_concurrent_runs: usize,
    pub run: RunSettings,
    /// How often to re-read the schedules when no file event arrived (for file systems
    /// that deliver none, such as NFS). `None`: never.
    pub recheck_every: Option<Duration>,
    /// Run the scheduling loop on a thread of its own (the service does). Tests on
    /// tokio's virtual time keep it on the test's runtime instead.
    pub timer_thread: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            shutdown_grace: Duration::from_secs(30),
            max_concurrent_runs: 0,
            run: RunSettings::default(),
            recheck_every: Some(Duration::from_secs(60)),
            timer_thread: true,
        }
    }
}

/// The parts of the outside world [`serve`] talks to.
pub struct World<E, C> {
    pub clock: Arc<C>,
    pub executor: E,
    pub events: Events,
    pub notifier: Notifier,
}

/// A line for `systemctl status`.
#[derive(Debug, Default)]
struct Status {
    jobs: usize,
    files: usize,
    last_reload: Option<String>,
}

impl Status {
    fn line(&self, in_flight: usize) -> String {
        let mut line = format!(
            "{} job{} from {} file{}; {} run{} in flight",
            self.jobs,
            if self.jobs == 1 { "" } else { "s" },
            self.files,
            if self.files == 1 { "" } else { "s" },
            in_flight,
            if in_flight == 1 { "" } else { "s" },
        );
        if let Some(reload) = &self.last_reload {
            line.push_str("; last reload ");
            line.push_str(reload);
        }
        line
    }
}

/// Runs the service until [`Control::Shutdown`] arrives (or the control channel
/// closes), then drains and returns.
pub async fn serve<E: Executor, C: Clock, S: ConfigSource>(
    config: Config,
    source: S,
    options: ServeOptions,
    world: World<E, C>,
    mut control: mpsc::Receiver<Control>,
) {
    let World {
        clock,
        executor,
        events,
        notifier,
    } = world;
    let notifier = Arc::new(notifier);
    let version = env!("CARGO_PKG_VERSION").to_string();
    let status = Arc::new(Mutex::new(Status {
        jobs: config.jobs.len(),
        files: config.files.len(),
        last_reload: None,
    }));
    let dispatcher = Dispatcher::new(
        executor,
        Arc::clone(&clock),
        events.clone(),
        options.run.clone(),
        options.max_concurrent_runs,
    );
    let mut scheduler = Scheduler::new(Arc::clone(&clock), dispatcher.clone(), events.clone());
    scheduler.add_jobs(config.jobs);
    crate::memory::release_freed();
    events.emit(Event::ServiceStarted {
        version: version.clone(),
        jobs: scheduler.job_count(),
        files: config.files.len(),
    });
    notifier.ready();
    notifier.status(&lock(&status).line(0));
    scheduler.fire_reboot_jobs();

    // The watchdog is pinged from inside the scheduling loop: a stuck loop stops it.
    let heartbeat = Notifier::watchdog_interval().map(|interval| {
        let notifier = Arc::clone(&notifier);
        let status = Arc::clone(&status);
        let dispatcher = dispatcher.clone();
        Heartbeat {
            every: interval / 2,
            beat: Box::new(move || {
                notifier.watchdog();
                notifier.status(&lock(&status).line(dispatcher.active()));
            }),
        }
    });
    let stop = CancellationToken::new();
    let (commands, command_rx) = mpsc::channel(4);
    let loop_stop = stop.clone();
    let scheduler_loop = async move { scheduler.run(loop_stop, command_rx, heartbeat).await };
    let scheduler_task = if options.timer_thread {
        // The scheduling loop gets a thread (and a small runtime) of its own: runs never
        // delay its wake-ups, and while it hands out a burst of fires, the runtime's
        // workers already start the runs.
        let timer_runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match timer_runtime {
            Ok(timer_runtime) => {
                tokio::task::spawn_blocking(move || timer_runtime.block_on(scheduler_loop))
            }
            Err(err) => {
                tracing::warn!(error = %err, "no runtime for the timer thread; sharing the workers");
                tokio::spawn(scheduler_loop)
            }
        }
    } else {
        tokio::spawn(scheduler_loop)
    };

    let mut source = Some(source);
    let mut recheck = options.recheck_every.map(|every| {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    loop {
        let request = tokio::select! {
            request = control.recv() => request,
            _ = async {
                match recheck.as_mut() {
                    Some(interval) => interval.tick().await,
                    None => std::future::pending().await,
                }
            } => Some(Control::ReloadIfChanged),
        };
        let force = match request {
            None | Some(Control::Shutdown) => break,
            Some(Control::Reload) => true,
            Some(Control::ReloadIfChanged) => false,
        };
        let Some(mut taken) = source.take() else {
            break;
        };
        if force {
            notifier.reloading();
        }
        // Reading and validating files is blocking work: keep it off the runtime's workers.
        let (returned, outcome) = match tokio::task::spawn_blocking(move || {
            let outcome = taken.reload(force);
            (taken, outcome)
        })
        .await
        {
            Ok(pair) => pair,
            Err(_) => break,
        };
        source = Some(returned);
        let when = Utc::now().format("%Y-%m-%d %H:%M:%S UTC");
        match outcome {
            Reloaded::Unchanged => {}
            Reloaded::Rejected(errors) => {
                lock(&status).last_reload =
                    Some(format!("{when} rejected ({} errors)", errors.0.len()));
                events.emit(Event::config_rejected(&errors.0));
            }
            Reloaded::Loaded(config) => {
                let files = config.files.len();
                let jobs = config.jobs.len();
                let (reply, counts) = oneshot::channel();
                if commands
                    .send(Command::Replace {
                        jobs: config.jobs,
                        reply,
                    })
                    .await
                    .is_err()
                {
                    break;
                }
                let counts: ReloadCounts = counts.await.unwrap_or_default();
                crate::memory::release_freed();
                {
                    let mut status = lock(&status);
                    status.jobs = jobs;
                    status.files = files;
                    status.last_reload = Some(format!("{when} ok"));
                }
                events.emit(Event::ConfigReloaded {
                    added: counts.added,
                    changed: counts.changed,
                    removed: counts.removed,
                    unchanged: counts.unchanged,
                });
            }
        }
        if force {
            notifier.ready();
        }
        notifier.status(&lock(&status).line(dispatcher.active()));
    }

    // Shutdown: stop firing, drop pending retries, let runs finish within the grace.
    stop.cancel();
    let _ = scheduler_task.await;
    notifier.stopping();
    let (jobs, files) = {
        let status = lock(&status);
        (status.jobs, status.files)
    };
    events.emit(Event::ServiceStopping {
        version: version.clone(),
        jobs,
        files,
    });
    dispatcher.stop_accepting();
    let in_flight = dispatcher.active();
    if in_flight > 0 {
        // Tell systemd the stop takes longer than its timeout may allow: the grace,
        // then up to a kill grace per run group, plus a margin.
        notifier.extend_timeout(options.shutdown_grace + Duration::from_secs(70));
        notifier.status(&format!("stopping: waiting for {in_flight} runs"));
    }
    // A second shutdown request ends the grace; reload requests during the drain are
    // moot and are skipped, not allowed to hide it.
    let second_shutdown = async {
        loop {
            match control.recv().await {
                Some(Control::Shutdown) => return,
                Some(Control::Reload | Control::ReloadIfChanged) => {}
                None => std::future::pending().await,
            }
        }
    };
    tokio::select! {
        () = dispatcher.wait_idle() => {}
        () = tokio::time::sleep(options.shutdown_grace) => {}
        () = second_shutdown => {}
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        LogFormat::Json => Format::Json,
        LogFormat::Journald => Format::Journald,
        LogFormat::Auto => {
            if crate::journald::stderr_is_journal() {
                Format::Journald
            // SAFETY: isatty only inspects the descriptor.
            } else if unsafe { libc::isatty(libc::STDERR_FILENO) } == 1 {
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
fn forward_signals(tx: mpsc::Sender<Control>) -> std::io::Result<()> {
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

/// Turns file-system events in `dirs` into [`Control::ReloadIfChanged`], debounced:
/// one request once events have been quiet for `quiet`.
pub fn watch(
    dirs: &[PathBuf],
    quiet: Duration,
    tx: mpsc::Sender<Control>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|event| !event.kind.is_access()) {
            let _ = raw_tx.send(());
        }
    })?;
    for dir in dirs {
        watcher.watch(Path::new(dir), notify::RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            // Debounce: wait until nothing happened for `quiet`.
            loop {
                match tokio::time::timeout(quiet, raw_rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if tx.send(Control::ReloadIfChanged).await.is_err() {
                return;
            }
        }
    });
    Ok(watcher)
}

/// Starts the event log, and routes the few internal diagnostics (`tracing` macros,
/// e.g. a process group that would not die) to stderr in a matching format.
fn start_logging(settings: &Settings) -> (Events, logging::LogGuard) {
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
        let (tx, rx) = mpsc::channel(16);
        if let Err(err) = forward_signals(tx.clone()) {
            eprintln!("error: cannot install signal handlers: {err}");
            return exit::FAILED;
        }
        let options =
            LoadOptions::from_process(settings.default_timezone).with_max_jobs(settings.max_jobs);
        let paths = paths.to_vec();
        let loaded = tokio::task::spawn_blocking(move || FileSource::load(paths, options)).await;
        let (source, config) = match loaded {
            Ok(Ok(pair)) => pair,
            Ok(Err(errors)) => {
                report_errors(&errors);
                return exit::FAILED;
            }
            Err(err) => {
                eprintln!("error: loading the schedules failed: {err}");
                return exit::FAILED;
            }
        };
        let executor = match Real::new() {
            Ok(executor) => executor,
            Err(err) => {
                eprintln!("error: {err}");
                return exit::FAILED;
            }
        };
        let (events, _guard) = start_logging(settings);
        // Keep the watcher alive for as long as the service runs.
        let _watcher = match watch(&source.watch_dirs(), Duration::from_millis(250), tx) {
            Ok(watcher) => Some(watcher),
            Err(err) => {
                eprintln!(
                    "warning: cannot watch the schedule directories ({err}); reload with SIGHUP"
                );
                None
            }
        };
        let options = ServeOptions {
            shutdown_grace: settings.shutdown_grace,
            max_concurrent_runs: settings.max_concurrent_runs,
            ..ServeOptions::default()
        };
        let world = World {
            clock: Arc::new(SystemClock),
            executor,
            events,
            notifier: Notifier::from_env(),
        };
        serve(config, source, options, world, rx).await;
        exit::OK
    })
}

/// `chime exec JOB`: one run now, in the foreground, logged to stderr.
pub fn exec_from_cli(name: &str, paths: &[PathBuf], settings: &Settings) -> u8 {
    let options = LoadOptions::from_process(settings.default_timezone);
    let config = match config::load(paths, &options) {
        Ok(config) => config,
        Err(errors) => {
            report_errors(&errors);
            return exit::FAILED;
        }
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
        let (events, _guard) = start_logging(settings);
        let cancel = CancellationToken::new();
        let on_signal = cancel.clone();
        let (tx, mut rx) = mpsc::channel(8);
        if forward_signals(tx).is_ok() {
            tokio::spawn(async move {
                while let Some(control) = rx.recv().await {
                    if control == Control::Shutdown {
                        on_signal.cancel();
                    }
                }
            });
        }
        let clock = SystemClock;
        let request = RunRequest {
            name: Arc::from(job.name.as_str()),
            job: Arc::new(job),
            run_id: new_run_id(),
            scheduled_at: clock.now(),
            trigger: Trigger::Manual,
            cancel,
            stop_retries: CancellationToken::new(),
        };
        let report =
            execute_run(&executor, &clock, &events, &RunSettings::default(), request).await;
        if report.outcome == Outcome::Success {
            exit::OK
        } else {
            exit::FAILED
        }
    })
}
