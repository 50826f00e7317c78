//! The service's lifecycle, as a library: start, serve requests (reloads), stop
//! firing, drain, stop — or fail.
//!
//! [`serve`] is the service as a function: it takes its clock, executor, event sink,
//! configuration source and a control channel, so tests run it in-process on virtual
//! time. It walks a [`Service`] through its phases, each a method. `chime run`
//! (`crate::cli`) wires it to the real world: signals, a directory watcher, systemd's
//! notify socket, stderr, the system clock.
//!
//! - [`source`]: where reloads get their schedules ([`ConfigSource`], [`FileSource`]).
//! - [`reload`]: the control loop, and the reloads it runs beside itself.

mod reload;
mod source;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use self::source::{ConfigSource, FileSource, Reloaded, log_file_warnings};
use crate::clock::Clock;
use crate::config::Config;
use crate::control::server::{self as control, ControlSocket, PauseStore, Taps};
use crate::dispatch::Dispatcher;
use crate::events::{Event, Events};
use crate::exec::Executor;
use crate::health::{BEAT_EVERY, Failure, Health, Loop};
use crate::run::RunSettings;
use crate::scheduler::{Command, Heartbeat, Scheduler};
use crate::systemd::Notifier;

/// How long shutdown waits for the scheduling loop to notice it (it may be applying a
/// huge reload) before going on without it.
const SCHEDULER_STOP_BOUND: Duration = Duration::from_secs(10);

/// How often a shutdown that waits for runs says so again (`service.draining`).
pub const DRAIN_REPORT_EVERY: Duration = Duration::from_secs(5);

/// "waiting for 1 run (backup (r-1)) to finish, up to 27s more; press Ctrl-C again
/// (or send SIGTERM again) to stop it now".
fn draining_message(runs: &[String], left: Duration) -> String {
    let shown: Vec<&str> = runs.iter().take(5).map(String::as_str).collect();
    let more = match runs.len().saturating_sub(shown.len()) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    let (count, them) = match runs.len() {
        1 => ("1 run".to_string(), "it"),
        n => (format!("{n} runs"), "them"),
    };
    format!(
        "waiting for {count} ({}{more}) to finish, up to {}s more; press Ctrl-C again (or \
         send SIGTERM again) to stop {them} now",
        shown.join(", "),
        left.as_secs_f64().ceil() as u64,
    )
}

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
    /// systemd's watchdog interval (`WATCHDOG_USEC`): pinged at half of it while both
    /// loops are alive. `None`: no watchdog.
    pub watchdog: Option<Duration>,
    /// What the state store remembered from before this start.
    pub resume: Resume,
    /// Replicas: scheduled fires are claimed in the cluster's database first.
    pub cluster: Option<crate::cluster::Cluster>,
    /// The control socket to serve (DESIGN.md §11), bound already; `None`: no socket.
    pub control: Option<ControlSocket>,
    /// Where `chime pause` keeps pauses across restarts; `None`: in memory only.
    pub pauses: Option<PauseStore>,
}

/// What a start takes over from the chime before it (DESIGN.md §10).
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// Each job's last fire handled: `catch_up: latest` jobs run their latest missed.
    pub last_handled: HashMap<String, DateTime<Utc>>,
    /// Interrupted runs whose process groups still live, by job.
    pub leftovers: Vec<(String, crate::state::leftover::Group)>,
    /// Jobs paused with `chime pause`.
    pub paused: Vec<String>,
    /// When each job last succeeded, for the metrics.
    pub last_success: HashMap<String, DateTime<Utc>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            shutdown_grace: Duration::from_secs(30),
            max_concurrent_runs: 0,
            run: RunSettings::default(),
            recheck_every: Some(Duration::from_secs(60)),
            timer_thread: true,
            watchdog: None,
            resume: Resume::default(),
            cluster: None,
            control: None,
            pauses: None,
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

/// Why the control loop ended.
pub(super) enum Ended {
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
    let mut service = Service::start(config, options, world);
    let ended = service.serve_requests(source, &mut control).await;
    match service.stop_firing(ended).await {
        Ended::Failed(failure) => {
            service.fail(&failure).await;
            Err(failure)
        }
        Ended::Shutdown => {
            service.drain(&mut control).await;
            service.finish().await;
            Ok(())
        }
    }
}

/// A running service, between the phases [`serve`] walks it through.
struct Service<E, C> {
    options: ServeOptions,
    events: Events,
    notifier: Arc<Notifier>,
    health: Health,
    status: Arc<Mutex<Status>>,
    dispatcher: Dispatcher<E, C>,
    version: String,
    /// Cancelled to stop the scheduling loop.
    stop: CancellationToken,
    scheduler_task: Option<JoinHandle<()>>,
    /// Reloads for the scheduling loop.
    commands: mpsc::Sender<Command>,
    watchdog: Option<JoinHandle<()>>,
    /// Cancelled to close the control socket.
    control_stop: CancellationToken,
    control_task: Option<JoinHandle<()>>,
}

impl<E: Executor, C: Clock> Service<E, C> {
    /// Start: schedules the jobs, logs `service.started`, tells systemd `READY=1`, runs
    /// the `@reboot` jobs, and starts the scheduling loop and the watchdog.
    fn start(config: Config, options: ServeOptions, world: World<E, C>) -> Self {
        let World {
            clock,
            executor,
            events,
            notifier,
            health,
        } = world;
        let notifier = Arc::new(notifier);
        // `trigger --wait` follows a run's events from here.
        let taps = Arc::new(Taps::default());
        let events = match options.control {
            Some(_) => taps.wrap(events),
            None => events,
        };
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
        if let Some(cluster) = &options.cluster {
            cluster.attach(&dispatcher, &config.jobs);
        }
        for job in &options.resume.paused {
            dispatcher.paused().pause(job);
        }
        let mut scheduler = Scheduler::new(Arc::clone(&clock), dispatcher.clone(), events.clone());
        scheduler.add_jobs(config.jobs);
        crate::memory::release_freed();
        events.emit(Event::ServiceStarted {
            version: version.clone(),
            jobs: scheduler.job_count(),
            files: config.files.len(),
            zone: config.default_timezone.name().to_string(),
        });
        if let Some(warning) =
            Event::config_warning(&crate::config::path_warnings(&config.warnings))
        {
            events.emit(warning);
        }
        notifier.ready();
        notifier.status(&lock(&status).line(0));
        scheduler.fire_reboot_jobs();
        scheduler.adopt_leftovers(&options.resume.leftovers);
        scheduler.catch_up(&options.resume.last_handled);

        let stop = CancellationToken::new();
        let (commands, command_rx) = mpsc::channel(4);
        let scheduler_task = Some(spawn_scheduler(
            scheduler,
            stop.clone(),
            command_rx,
            &health,
            options.timer_thread,
        ));
        let watchdog = options
            .watchdog
            .map(|interval| spawn_watchdog(interval, &notifier, &health, &status, &dispatcher));
        let control_stop = CancellationToken::new();
        let control_task = options.control.as_ref().and_then(|socket| {
            let server = control::Server {
                dispatcher: dispatcher.clone(),
                commands: commands.clone(),
                events: events.clone(),
                taps,
                pauses: options.pauses.clone(),
                cluster: options.cluster.clone(),
                stop: control_stop.clone(),
            };
            control::spawn(socket, server)
                .inspect_err(|err| {
                    tracing::warn!(error = %err, path = %socket.path.display(), "the control socket cannot be served");
                })
                .ok()
        });
        Service {
            options,
            events,
            notifier,
            health,
            status,
            dispatcher,
            version,
            stop,
            scheduler_task,
            commands,
            watchdog,
            control_stop,
            control_task,
        }
    }

    /// Serve: the control loop (see [`reload`]), until a shutdown request or a failure.
    async fn serve_requests<S: ConfigSource>(
        &mut self,
        source: S,
        control: &mut mpsc::Receiver<Control>,
    ) -> Ended {
        let dispatcher = &self.dispatcher;
        reload::control_loop(
            source,
            &self.options,
            control,
            &mut self.scheduler_task,
            &self.commands,
            reload::Reporting {
                events: &self.events,
                notifier: &self.notifier,
                status: &self.status,
                health: &self.health,
                active: &|| dispatcher.active(),
            },
        )
        .await
    }

    /// Stop firing: ends the scheduling loop (it may be in the middle of a huge
    /// reload: waited for, but not for ever) and the watchdog. A part that failed
    /// meanwhile turns a shutdown into a failure.
    async fn stop_firing(&mut self, ended: Ended) -> Ended {
        self.stop.cancel();
        if let Some(task) = self.scheduler_task.take()
            && let Ok(Err(err)) = tokio::time::timeout(SCHEDULER_STOP_BOUND, task).await
            && err.is_panic()
        {
            self.health
                .fail(Failure::from_panic("scheduler", err.into_panic()));
        }
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.abort();
        }
        match (ended, self.health.failure()) {
            (Ended::Shutdown, Some(failure)) => Ended::Failed(failure),
            (ended, _) => ended,
        }
    }

    /// Fail: nothing is drained, the service is broken. Logs `service.failed`, then
    /// terminates every run (its group gets SIGTERM, then SIGKILL) and reaps it, so
    /// nothing is left behind.
    async fn fail(&mut self, failure: &Failure) {
        self.events.emit(Event::ServiceFailed {
            what: failure.what.to_string(),
            error: failure.error.clone(),
        });
        self.notifier.status(&failure.to_string());
        self.dispatcher.stop_accepting();
        self.end_runs().await;
    }

    /// Terminates whatever still runs and reaps it, lets go of the claims of fires not
    /// yet due (replicas), and closes the control socket.
    async fn end_runs(&mut self) {
        self.dispatcher.cancel_all();
        self.dispatcher.wait_idle().await;
        if let Some(cluster) = &self.options.cluster {
            cluster.release().await;
        }
        self.close_control().await;
    }

    /// Closes the control socket (and removes it); `trigger --wait` clients are told.
    async fn close_control(&mut self) {
        self.control_stop.cancel();
        if let Some(task) = self.control_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
    }

    /// The jobs and files loaded last, for the stopping events.
    fn counts(&self) -> (usize, usize) {
        let status = lock(&self.status);
        (status.jobs, status.files)
    }

    /// Drain: tells systemd `STOPPING=1`, logs `service.stopping`, drops pending
    /// retries and lets running runs finish within the shutdown grace. A second
    /// shutdown request ends the grace; reload requests during the drain are moot and
    /// are skipped, not allowed to hide it.
    async fn drain(&self, control: &mut mpsc::Receiver<Control>) {
        let (jobs, files) = self.counts();
        self.notifier.stopping();
        self.dispatcher.stop_starting();
        self.events.emit(Event::ServiceStopping {
            version: self.version.clone(),
            jobs,
            files,
        });
        self.dispatcher.stop_accepting();
        let in_flight = self.dispatcher.active();
        if in_flight > 0 {
            // Tell systemd the stop takes longer than its timeout may allow: the grace,
            // then up to a kill grace per run group, plus a margin.
            self.notifier
                .extend_timeout(self.options.shutdown_grace + Duration::from_secs(70));
            self.notifier
                .status(&format!("stopping: waiting for {in_flight} runs"));
        }
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
            () = self.dispatcher.wait_idle() => {}
            () = tokio::time::sleep(self.options.shutdown_grace) => {}
            () = second_shutdown => {}
            () = self.report_draining() => {}
        }
    }

    /// `service.draining` now and every [`DRAIN_REPORT_EVERY`] while runs are waited
    /// for: which, how much grace is left, and that a second signal stops them now.
    /// Never returns; the drain ends it.
    async fn report_draining(&self) {
        let deadline = tokio::time::Instant::now() + self.options.shutdown_grace;
        loop {
            let runs = self.dispatcher.running_runs();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !runs.is_empty() {
                let message = draining_message(&runs, left);
                self.notifier.status(&message);
                self.events.emit(Event::ServiceDraining {
                    runs,
                    grace_left_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
                    message,
                });
            }
            tokio::time::sleep(DRAIN_REPORT_EVERY).await;
        }
    }

    /// Stop: whatever still runs is terminated (SIGTERM to its group, SIGKILL after
    /// its `kill_grace`) and reaped; then `service.stopped`.
    async fn finish(mut self) {
        self.end_runs().await;
        let (jobs, files) = self.counts();
        self.events.emit(Event::ServiceStopped {
            version: self.version,
            jobs,
            files,
        });
    }
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
    interval: Duration,
    notifier: &Arc<Notifier>,
    health: &Health,
    status: &Arc<Mutex<Status>>,
    dispatcher: &Dispatcher<E, C>,
) -> tokio::task::JoinHandle<()> {
    let notifier = Arc::clone(notifier);
    let health = health.clone();
    let status = Arc::clone(status);
    let dispatcher = dispatcher.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval / 2);
        loop {
            ticks.tick().await;
            if health.alive() {
                notifier.watchdog();
                notifier.status(&lock(&status).line(dispatcher.active()));
            }
        }
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
