//! The control loop and the reloads it runs beside itself.
//!
//! The loop serves signals, file events and re-checks, and watches the scheduling loop
//! and every other part for failures. It never awaits a reload: reading the files runs
//! on a blocking thread and applying them on the scheduling loop, each a state of
//! [`Reload`] that the loop moves on when it answers. A shutdown request is served at
//! once whatever is queued or running; reload requests that arrive while one runs
//! coalesce into one more.

use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};

use super::source::{ConfigSource, Reloaded};
use super::{Control, Ended, ServeOptions, Status, lock};
use crate::events::{Event, Events};
use crate::health::{BEAT_EVERY, Failure, Health, Loop};
use crate::scheduler::{Command, ReloadCounts};
use crate::systemd::Notifier;

/// How long a reload may read and validate files before the control loop gives up
/// waiting for it (a file on a hung mount): it is reported, and the next reload starts
/// once the stuck read returns.
pub(crate) const RELOAD_BOUND: Duration = Duration::from_secs(60);
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

/// What the control loop reports to, and how it counts runs in flight.
pub(super) struct Reporting<'a> {
    pub(super) events: &'a Events,
    pub(super) notifier: &'a Notifier,
    pub(super) status: &'a Mutex<Status>,
    pub(super) health: &'a Health,
    pub(super) active: &'a (dyn Fn() -> usize + Sync),
}

/// The control loop: serves signals, file events and re-checks, runs reloads beside
/// itself (never awaiting one), and watches the scheduling loop. A shutdown request
/// is served at once, whatever reload is queued or running; reload requests that
/// arrive while one runs coalesce into one more.
pub(super) async fn control_loop<S: ConfigSource>(
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
                    if let Some(warning) = Event::config_warning(&config.path_warnings()) {
                        report.events.emit(warning);
                    }
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
