//! The service's lifecycle: start, serve, reload, drain, stop. Also the foreground
//! `exec` command.
//!
//! [`serve`] is the service as a library function: it takes its clock, executor, event
//! sink, configuration source and a control channel, so tests run it in-process on
//! virtual time. [`run_from_cli`] wires it to the real world: signals (registered
//! first), a directory watcher, systemd's notify socket, stderr, the system clock.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::cli::{LogFormat, Settings, exit, report_errors};
use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config, ConfigErrors, Fingerprint, LoadOptions};
use crate::dispatch::Dispatcher;
use crate::events::{Event, Events, Outcome, Trigger};
use crate::exec::{Executor, Real};
use crate::health::{BEAT_EVERY, Failure, Health, Loop};
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
    last: Fingerprint,
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
                last: snapshot.fingerprint(),
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
        let fingerprint = snapshot.fingerprint();
        if !force && fingerprint == self.last {
            return Reloaded::Unchanged;
        }
        let outcome = match snapshot.load(&self.options) {
            Ok(config) => Reloaded::Loaded(config),
            Err(errors) => Reloaded::Rejected(errors),
        };
        self.last = fingerprint;
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
    /// The loops' heartbeats and the first internal failure.
    pub health: Health,
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

/// How long a reload may read and validate files before the control loop gives up
/// waiting for it (a file on a hung mount): it is reported, and the next reload starts
/// once the stuck read returns.
pub const RELOAD_BOUND: Duration = Duration::from_secs(60);
/// How long shutdown waits for the scheduling loop to notice it (it may be applying a
/// huge reload) before going on without it.
const SCHEDULER_STOP_BOUND: Duration = Duration::from_secs(10);

/// A reload asked for and not yet started. Requests that arrive while a reload runs
/// coalesce into one.
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    /// Apply even if the files are unchanged (SIGHUP, or after a read was given up).
    force: bool,
    /// Tell systemd `RELOADING=1` … `READY=1` (SIGHUP).
    notify: bool,
}

impl Pending {
    fn merge(self, other: Pending) -> Pending {
        Pending {
            force: self.force || other.force,
            notify: self.notify || other.notify,
        }
    }
}

/// Where the reload in progress stands.
enum Reload<S> {
    /// Nothing running; the source is here.
    Idle(S),
    /// Reading and validating files on a blocking thread, which has the source.
    Loading {
        task: tokio::task::JoinHandle<(S, Reloaded)>,
        since: tokio::time::Instant,
        notify: bool,
        /// Over [`RELOAD_BOUND`]: reported; its outcome will be dropped.
        abandoned: bool,
    },
    /// The scheduler is swapping in a new set.
    Applying {
        source: S,
        counts: oneshot::Receiver<ReloadCounts>,
        notify: bool,
        jobs: usize,
        files: usize,
    },
    /// Between states (never seen outside a transition).
    Gone,
}

/// Why the control loop ended.
enum Ended {
    Shutdown,
    Failed(Failure),
}

/// Runs the service until [`Control::Shutdown`] arrives (or the control channel
/// closes), then drains and returns. An internal failure (a panicking reload or run,
/// a scheduling loop that ends) is logged as `service.failed`; runs are terminated and
/// the failure is returned, for the binary to exit with code 3.
pub async fn serve<E: Executor, C: Clock, S: ConfigSource>(
    config: Config,
    source: S,
    options: ServeOptions,
    world: World<E, C>,
    mut control: mpsc::Receiver<Control>,
) -> Result<(), Failure> {
    let World {
        clock,
        executor,
        events,
        notifier,
        health,
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
    dispatcher.report_failures_to(&health);
    let mut scheduler = Scheduler::new(Arc::clone(&clock), dispatcher.clone(), events.clone());
    scheduler.add_jobs(config.jobs);
    crate::memory::release_freed();
    events.emit(Event::ServiceStarted {
        version: version.clone(),
        jobs: scheduler.job_count(),
        files: config.files.len(),
        zone: config.default_timezone.name().to_string(),
    });
    notifier.ready();
    notifier.status(&lock(&status).line(0));
    scheduler.fire_reboot_jobs();

    let stop = CancellationToken::new();
    let (commands, command_rx) = mpsc::channel(4);
    let mut scheduler_task = Some(spawn_scheduler(
        scheduler,
        stop.clone(),
        command_rx,
        &health,
        options.timer_thread,
    ));
    let watchdog = spawn_watchdog(&notifier, &health, &status, &dispatcher);

    let ended = control_loop(
        source,
        &options,
        &mut control,
        &mut scheduler_task,
        &commands,
        Reporting {
            events: &events,
            notifier: &notifier,
            status: &status,
            health: &health,
            active: &|| dispatcher.active(),
        },
    )
    .await;

    // Stop firing. The scheduling loop may be in the middle of a huge reload: wait for
    // it, but not for ever.
    stop.cancel();
    if let Some(task) = scheduler_task.take() {
        match tokio::time::timeout(SCHEDULER_STOP_BOUND, task).await {
            Ok(Ok(())) | Err(_) => {}
            Ok(Err(err)) if err.is_panic() => {
                health.fail(Failure::from_panic("scheduler", err.into_panic()));
            }
            Ok(Err(_)) => {}
        }
    }
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    // A part that failed while the loop was ending still counts.
    let ended = match (ended, health.failure()) {
        (Ended::Shutdown, Some(failure)) => Ended::Failed(failure),
        (ended, _) => ended,
    };
    let (jobs, files) = {
        let status = lock(&status);
        (status.jobs, status.files)
    };
    if let Ended::Failed(failure) = ended {
        // Nothing is drained: the service is broken. Runs are terminated (their groups
        // get SIGTERM, then SIGKILL) and reaped, so nothing is left behind.
        events.emit(Event::ServiceFailed {
            what: failure.what.to_string(),
            error: failure.error.clone(),
        });
        notifier.status(&failure.to_string());
        dispatcher.stop_accepting();
        dispatcher.cancel_all();
        dispatcher.wait_idle().await;
        return Err(failure);
    }
    notifier.stopping();
    dispatcher.stop_starting();
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
    Ok(())
}

/// Starts the scheduling loop. It beats [`Health`] at least every second.
fn spawn_scheduler<E: Executor, C: Clock>(
    mut scheduler: Scheduler<E, C>,
    stop: CancellationToken,
    commands: mpsc::Receiver<Command>,
    health: &Health,
    own_thread: bool,
) -> tokio::task::JoinHandle<()> {
    let beat_health = health.clone();
    let heartbeat = Heartbeat {
        every: BEAT_EVERY,
        beat: Box::new(move || beat_health.beat(Loop::Scheduler)),
    };
    let scheduler_loop = async move { scheduler.run(stop, commands, Some(heartbeat)).await };
    if !own_thread {
        return tokio::spawn(scheduler_loop);
    }
    // The scheduling loop gets a thread (and a small runtime) of its own: runs never
    // delay its wake-ups, and while it hands out a burst of fires, the runtime's
    // workers already start the runs.
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(timer_runtime) => {
            tokio::task::spawn_blocking(move || timer_runtime.block_on(scheduler_loop))
        }
        Err(err) => {
            tracing::warn!(error = %err, "no runtime for the timer thread; sharing the workers");
            tokio::spawn(scheduler_loop)
        }
    }
}

/// When systemd asks for a watchdog: pings it, and refreshes the status line, while
/// both loops are alive (see [`crate::health`]). A stuck loop stops the pings.
fn spawn_watchdog<E: Executor, C: Clock>(
    notifier: &Arc<Notifier>,
    health: &Health,
    status: &Arc<Mutex<Status>>,
    dispatcher: &Dispatcher<E, C>,
) -> Option<tokio::task::JoinHandle<()>> {
    let interval = Notifier::watchdog_interval()?;
    let notifier = Arc::clone(notifier);
    let health = health.clone();
    let status = Arc::clone(status);
    let dispatcher = dispatcher.clone();
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval / 2);
        loop {
            ticks.tick().await;
            if health.alive() {
                notifier.watchdog();
                notifier.status(&lock(&status).line(dispatcher.active()));
            }
        }
    }))
}

/// What the control loop reports to, and how it counts runs in flight.
struct Reporting<'a> {
    events: &'a Events,
    notifier: &'a Notifier,
    status: &'a Mutex<Status>,
    health: &'a Health,
    active: &'a (dyn Fn() -> usize + Sync),
}

/// The control loop: serves signals, file events and re-checks, runs reloads beside
/// itself (never awaiting one), and watches the scheduling loop. A shutdown request
/// is served at once, whatever reload is queued or running; reload requests that
/// arrive while one runs coalesce into one more.
async fn control_loop<S: ConfigSource>(
    source: S,
    options: &ServeOptions,
    control: &mut mpsc::Receiver<Control>,
    scheduler_task: &mut Option<tokio::task::JoinHandle<()>>,
    commands: &mpsc::Sender<Command>,
    report: Reporting<'_>,
) -> Ended {
    let mut reload = Reload::Idle(source);
    let mut pending: Option<Pending> = None;
    let mut recheck = options.recheck_every.map(|every| {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    let mut beat = tokio::time::interval(BEAT_EVERY);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        report.health.beat(Loop::Control);
        if let (Reload::Idle(_), Some(next)) = (&reload, pending) {
            pending = None;
            reload = start_reload(reload, next, report.notifier);
        }
        tokio::select! {
            biased;
            failure = report.health.failed() => return Ended::Failed(failure),
            request = control.recv() => match request {
                None | Some(Control::Shutdown) => return Ended::Shutdown,
                Some(Control::Reload) => {
                    let asked = Pending { force: true, notify: true };
                    pending = Some(pending.unwrap_or_default().merge(asked));
                }
                Some(Control::ReloadIfChanged) => {
                    pending = Some(pending.unwrap_or_default());
                }
            },
            ended = async {
                match scheduler_task.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            } => {
                *scheduler_task = None;
                return Ended::Failed(match ended {
                    Err(err) if err.is_panic() => Failure::from_panic("scheduler", err.into_panic()),
                    Err(err) => Failure { what: "scheduler", error: err.to_string() },
                    Ok(()) => Failure {
                        what: "scheduler",
                        error: "the scheduling loop ended unasked".to_string(),
                    },
                });
            }
            progress = async {
                match &mut reload {
                    Reload::Loading { task, .. } => Progress::Loaded(task.await),
                    Reload::Applying { counts, .. } => Progress::Applied(counts.await),
                    _ => std::future::pending().await,
                }
            } => {
                match step_reload(std::mem::replace(&mut reload, Reload::Gone), progress, commands, &report) {
                    Ok((next, again)) => {
                        reload = next;
                        if let Some(again) = again {
                            pending = Some(pending.unwrap_or_default().merge(again));
                        }
                    }
                    Err(failure) => return Ended::Failed(failure),
                }
            }
            _ = beat.tick() => {
                if let Reload::Loading { since, abandoned, notify, .. } = &mut reload
                    && !*abandoned
                    && since.elapsed() >= RELOAD_BOUND
                {
                    *abandoned = true;
                    report.events.emit(Event::config_rejected(&[format!(
                        "reading the schedules has taken over {} s (a file on a hung file \
                         system?); the old schedule keeps running, and the files are read \
                         again once that read returns",
                        RELOAD_BOUND.as_secs()
                    )]));
                    finish_reload(&report, *notify);
                    *notify = false;
                }
            }
            _ = async {
                match recheck.as_mut() {
                    Some(interval) => interval.tick().await,
                    None => std::future::pending().await,
                }
            } => {
                pending = Some(pending.unwrap_or_default());
            }
        }
    }
}

/// What a reload in progress produced.
enum Progress<S> {
    Loaded(Result<(S, Reloaded), tokio::task::JoinError>),
    Applied(Result<ReloadCounts, oneshot::error::RecvError>),
}

/// Moves a reload on by what it produced: a loaded set goes to the scheduler, a
/// rejected one is logged, an applied one is logged. Returns the new state, and a
/// reload to run next (after a read that was given up on).
fn step_reload<S: ConfigSource>(
    reload: Reload<S>,
    progress: Progress<S>,
    commands: &mpsc::Sender<Command>,
    report: &Reporting<'_>,
) -> Result<(Reload<S>, Option<Pending>), Failure> {
    let lost = || Failure {
        what: "reload",
        error: "lost track of a reload".to_string(),
    };
    match progress {
        Progress::Loaded(loaded) => {
            let Reload::Loading {
                notify, abandoned, ..
            } = reload
            else {
                return Err(lost());
            };
            let (source, outcome) = loaded.map_err(|err| {
                if err.is_panic() {
                    Failure::from_panic("reload", err.into_panic())
                } else {
                    Failure {
                        what: "reload",
                        error: err.to_string(),
                    }
                }
            })?;
            if abandoned {
                // Its outcome is stale; whatever was asked since, read afresh.
                let again = Pending {
                    force: true,
                    notify: false,
                };
                return Ok((Reload::Idle(source), Some(again)));
            }
            match outcome {
                Reloaded::Loaded(config) => {
                    let files = config.files.len();
                    let jobs = config.jobs.len();
                    let (reply, counts) = oneshot::channel();
                    // One reload applies at a time, so the channel has room.
                    let replace = Command::Replace {
                        jobs: config.jobs,
                        reply,
                    };
                    if commands.try_send(replace).is_err() {
                        return Err(Failure {
                            what: "scheduler",
                            error: "the scheduling loop stopped taking reloads".to_string(),
                        });
                    }
                    let applying = Reload::Applying {
                        source,
                        counts,
                        notify,
                        jobs,
                        files,
                    };
                    Ok((applying, None))
                }
                Reloaded::Rejected(errors) => {
                    lock(report.status).last_reload = Some(format!(
                        "{} rejected ({} errors)",
                        now_text(),
                        errors.0.len()
                    ));
                    report.events.emit(Event::config_rejected(&errors.0));
                    finish_reload(report, notify);
                    Ok((Reload::Idle(source), None))
                }
                Reloaded::Unchanged => {
                    finish_reload(report, notify);
                    Ok((Reload::Idle(source), None))
                }
            }
        }
        Progress::Applied(counts) => {
            let Reload::Applying {
                source,
                notify,
                jobs,
                files,
                ..
            } = reload
            else {
                return Err(lost());
            };
            let counts = counts.map_err(|_| Failure {
                what: "scheduler",
                error: "the scheduling loop dropped a reload".to_string(),
            })?;
            crate::memory::release_freed();
            {
                let mut status = lock(report.status);
                status.jobs = jobs;
                status.files = files;
                status.last_reload = Some(format!("{} ok", now_text()));
            }
            report.events.emit(Event::ConfigReloaded {
                added: counts.added,
                changed: counts.changed,
                removed: counts.removed,
                unchanged: counts.unchanged,
            });
            finish_reload(report, notify);
            Ok((Reload::Idle(source), None))
        }
    }
}

/// Starts reading the files on a blocking thread (they may be many, or slow).
fn start_reload<S: ConfigSource>(
    reload: Reload<S>,
    pending: Pending,
    notifier: &Notifier,
) -> Reload<S> {
    let Reload::Idle(mut source) = reload else {
        return reload;
    };
    if pending.notify {
        notifier.reloading();
    }
    let force = pending.force;
    let task = tokio::task::spawn_blocking(move || {
        let outcome = source.reload(force);
        (source, outcome)
    });
    Reload::Loading {
        task,
        since: tokio::time::Instant::now(),
        notify: pending.notify,
        abandoned: false,
    }
}

/// A reload has been answered: systemd hears `READY=1` if it heard `RELOADING=1`.
fn finish_reload(report: &Reporting<'_>, notify: bool) {
    if notify {
        report.notifier.ready();
    }
    report
        .notifier
        .status(&lock(report.status).line((report.active)()));
}

fn now_text() -> String {
    Utc::now().format("%Y-%m-%d %H:%M:%S UTC").to_string()
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
    let options =
        LoadOptions::from_process(settings.default_timezone).with_max_jobs(settings.max_jobs);
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
            report_errors(&errors);
            return exit::FAILED;
        }
        Err(err) => {
            eprintln!("error: loading the schedules failed: {err}");
            return exit::INTERNAL;
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
    let dirs = source.watch_dirs();
    let quiet = Duration::from_millis(250);
    if let Err(err) = crate::watch::watch(&dirs, quiet, tx, Control::ReloadIfChanged) {
        eprintln!("warning: cannot watch the schedule directories ({err}); reload with SIGHUP");
    }
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
        health: Health::new(),
    };
    let source = InjectedFault::from_env(source);
    match serve(config, source, options, world, rx).await {
        Ok(()) => exit::OK,
        Err(_) => exit::INTERNAL,
    }
}

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
