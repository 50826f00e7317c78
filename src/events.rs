//! The log events of DESIGN.md §6: one value per state change, with stable names and
//! fields. Components emit [`Event`]s through an [`Events`] handle; [`schema`] says
//! what each event's level and fields are, `logging` writes them, tests collect them.

pub mod schema;

pub(crate) use schema::level_of;
pub use schema::{Level, Value, fields};

use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};

/// How a run (or one attempt of it) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Non-zero exit, an unexpected HTTP status, a connection error.
    Failure,
    /// The attempt ran past its timeout and was terminated.
    Timeout,
    /// The process died of a signal chime did not send.
    Killed,
    /// Terminated by chime: `overlap: replace`, shutdown, or cancellation.
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Timeout => "timeout",
            Outcome::Killed => "killed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    Retry,
    Manual,
    CatchUp,
    Reboot,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Retry => "retry",
            Trigger::Manual => "manual",
            Trigger::CatchUp => "catch-up",
            Trigger::Reboot => "reboot",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// The head of an HTTP response body, logged when the call failed.
    Body,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Body => "body",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    Overlap,
    Disabled,
    Shutdown,
    /// A newer fire of the job took this one's place in the queue for a free slot.
    Superseded,
    /// The job is paused (`chime pause`).
    Paused,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Overlap => "overlap",
            SkipReason::Disabled => "disabled",
            SkipReason::Shutdown => "shutdown",
            SkipReason::Superseded => "superseded",
            SkipReason::Paused => "paused",
        }
    }
}

/// Who cancelled a run (`run.finished` with `outcome: cancelled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelledBy {
    Shutdown,
    /// `overlap: replace`: a newer run of the job took its place.
    Replace,
    /// `chime kill`.
    Operator,
    /// With `--cluster`: this replica could not renew its leases (`cluster.fenced`).
    Fence,
}

impl CancelledBy {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelledBy::Shutdown => "shutdown",
            CancelledBy::Replace => "replace",
            CancelledBy::Operator => "operator",
            CancelledBy::Fence => "fence",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissReason {
    Deadline,
    ClockJump,
    LateWakeup,
    /// Fell while chime was not running (`catch_up: latest`).
    Downtime,
}

impl MissReason {
    pub fn as_str(self) -> &'static str {
        match self {
            MissReason::Deadline => "deadline",
            MissReason::ClockJump => "clock-jump",
            MissReason::LateWakeup => "late-wakeup",
            MissReason::Downtime => "downtime",
        }
    }
}

/// What ended an attempt, in the terms the log reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitDetail {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub http_status: Option<u16>,
    /// A short reason when there is no code: "connection refused", "spawn failed: …".
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    ServiceStarted {
        version: String,
        jobs: usize,
        files: usize,
        /// The default zone of jobs that name none, by its display name.
        zone: String,
    },
    ServiceStopping {
        version: String,
        jobs: usize,
        files: usize,
    },
    ServiceStopped {
        version: String,
        jobs: usize,
        files: usize,
    },
    /// An internal part failed; the service stops and exits with code 3.
    ServiceFailed { what: String, error: String },
    ConfigReloaded {
        added: usize,
        changed: usize,
        removed: usize,
        unchanged: usize,
    },
    /// Built by [`Event::config_rejected`], which keeps the event small whatever the
    /// number of errors.
    ConfigRejected {
        /// The first [`REJECTED_ERRORS_SHOWN`] errors, each with `file:line:column`.
        errors: Vec<String>,
        /// How many errors there were in all.
        error_count: usize,
    },
    /// Things legal but rarely meant in the schedules loaded (at start and at each
    /// reload), e.g. a directory holding no schedule file.
    ConfigWarning { warnings: Vec<String> },
    /// Repeats while a shutdown waits for runs to finish.
    ServiceDraining {
        /// The runs waited for, each `job (run_id)`.
        runs: Vec<String>,
        /// How much of the shutdown grace is left.
        grace_left_ms: u64,
        /// The same for people: what is waited for, and how to stop it now.
        message: String,
    },
    ClockJumped {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        delta_ms: i64,
    },
    RunStarted {
        job: Arc<str>,
        run_id: Arc<str>,
        trigger: Trigger,
        scheduled_at: DateTime<Utc>,
        lateness_ms: f64,
        attempt: u32,
        /// How long the fire waited for a free slot under `--max-concurrent-runs`; `None`
        /// when it did not go through the queue (and on retries).
        queued_ms: Option<f64>,
        /// The process spawned, for shell jobs; `None` for HTTP jobs and when the spawn
        /// failed.
        pid: Option<u32>,
        /// Who asked for a manual run (`chime trigger`), by uid.
        caller_uid: Option<u32>,
    },
    RunOutput {
        job: Arc<str>,
        run_id: Arc<str>,
        stream: Stream,
        line: String,
    },
    RunOutputTruncated {
        job: Arc<str>,
        run_id: Arc<str>,
        limit_bytes: u64,
    },
    RunRetrying {
        job: Arc<str>,
        run_id: Arc<str>,
        attempt: u32,
        outcome: Outcome,
        detail: ExitDetail,
        delay_ms: u64,
    },
    RunFinished {
        job: Arc<str>,
        run_id: Arc<str>,
        attempts: u32,
        outcome: Outcome,
        detail: ExitDetail,
        duration_ms: u64,
        output_bytes: u64,
        truncated: bool,
        /// With `outcome: cancelled`: who cancelled it.
        by: Option<CancelledBy>,
        /// With `by: operator`: the uid of who asked (`chime kill`).
        caller_uid: Option<u32>,
    },
    RunSkipped {
        job: Arc<str>,
        scheduled_at: DateTime<Utc>,
        reason: SkipReason,
    },
    RunMissed {
        job: Arc<str>,
        scheduled_at: DateTime<Utc>,
        count: u64,
        reason: MissReason,
    },
    /// A run the state store still had as running at start: chime was killed or the
    /// machine lost power. `still_running`: its process group is provably still alive.
    RunInterrupted {
        job: Arc<str>,
        run_id: Arc<str>,
        scheduled_at: DateTime<Utc>,
        still_running: bool,
        pid: Option<u32>,
    },
    /// The state store could not be written (or opened): what happened, how to fix it,
    /// and how many queued writes were dropped so far. Firing goes on.
    StateFailed {
        what: String,
        error: String,
        fix: String,
        dropped: u64,
    },
    /// Replicas (DESIGN.md §13): `cluster.joined`, `cluster.failed`, `cluster.fenced`,
    /// `cluster.drift`, `cluster.clock_off`, `cluster.recovered`. `detail` says what
    /// happened; `fix`, when there is one, what an operator does about it.
    Cluster {
        kind: ClusterKind,
        member: String,
        detail: String,
        fix: Option<String>,
    },
    /// A claimed run whose replica stopped renewing its lease (it died or was cut off):
    /// it is `lost`, and re-run here only when the job says `on_owner_loss: rerun`.
    RunLost {
        job: Arc<str>,
        run_id: Option<String>,
        scheduled_at: DateTime<Utc>,
        owner: String,
        rerun: bool,
    },
    /// A request on the control socket (`chime trigger`, `pause`, …) and what came of it.
    ControlRequest {
        command: String,
        /// The job, run id or `--all` it named (empty when none).
        target: String,
        caller_uid: Option<u32>,
        /// `ok`, or what went wrong.
        result: String,
    },
    /// A monitoring ping (`healthchecks`, `on_start`, `on_success`, `on_failure`) failed
    /// after its own retries. The run's outcome is not changed by it. `url` is the URL as
    /// written (before interpolation), never the one sent.
    HookFailed {
        job: Arc<str>,
        run_id: Arc<str>,
        hook: &'static str,
        url: String,
        attempts: u32,
        error: String,
    },
}

/// Which `cluster.*` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterKind {
    Joined,
    Failed,
    Fenced,
    Drift,
    ClockOff,
    Recovered,
}

/// How many errors a `config.rejected` event lists. One event for 100,000 invalid jobs
/// was a 17 MB log line; the first hundred show what is wrong, `chime check` lists all.
pub(crate) const REJECTED_ERRORS_SHOWN: usize = 100;

impl Event {
    /// `config.rejected` for `errors`: the first [`REJECTED_ERRORS_SHOWN`] of them and
    /// their total count.
    pub fn config_rejected<E: ToString>(errors: &[E]) -> Event {
        Event::ConfigRejected {
            errors: errors
                .iter()
                .take(REJECTED_ERRORS_SHOWN)
                .map(ToString::to_string)
                .collect(),
            error_count: errors.len(),
        }
    }

    /// `config.warning` for `warnings` (the first [`REJECTED_ERRORS_SHOWN`]), or `None`
    /// when there are none.
    pub fn config_warning<W: ToString>(warnings: &[W]) -> Option<Event> {
        (!warnings.is_empty()).then(|| Event::ConfigWarning {
            warnings: warnings
                .iter()
                .take(REJECTED_ERRORS_SHOWN)
                .map(ToString::to_string)
                .collect(),
        })
    }

    /// The stable event name of DESIGN.md §6.
    pub fn name(&self) -> &'static str {
        match self {
            Event::ServiceStarted { .. } => "service.started",
            Event::ServiceStopping { .. } => "service.stopping",
            Event::ServiceStopped { .. } => "service.stopped",
            Event::ServiceFailed { .. } => "service.failed",
            Event::ConfigReloaded { .. } => "config.reloaded",
            Event::ConfigRejected { .. } => "config.rejected",
            Event::ConfigWarning { .. } => "config.warning",
            Event::ServiceDraining { .. } => "service.draining",
            Event::ClockJumped { .. } => "clock.jumped",
            Event::RunStarted { .. } => "run.started",
            Event::RunOutput { .. } => "run.output",
            Event::RunOutputTruncated { .. } => "run.output_truncated",
            Event::RunRetrying { .. } => "run.retrying",
            Event::RunFinished { .. } => "run.finished",
            Event::RunSkipped { .. } => "run.skipped",
            Event::RunMissed { .. } => "run.missed",
            Event::RunInterrupted { .. } => "run.interrupted",
            Event::StateFailed { .. } => "state.failed",
            Event::Cluster { kind, .. } => match kind {
                ClusterKind::Joined => "cluster.joined",
                ClusterKind::Failed => "cluster.failed",
                ClusterKind::Fenced => "cluster.fenced",
                ClusterKind::Drift => "cluster.drift",
                ClusterKind::ClockOff => "cluster.clock_off",
                ClusterKind::Recovered => "cluster.recovered",
            },
            Event::RunLost { .. } => "run.lost",
            Event::ControlRequest { .. } => "control.request",
            Event::HookFailed { .. } => "hook.failed",
        }
    }

    /// The job this event is about, if any.
    pub fn job(&self) -> Option<&str> {
        match self {
            Event::RunStarted { job, .. }
            | Event::RunOutput { job, .. }
            | Event::RunOutputTruncated { job, .. }
            | Event::RunRetrying { job, .. }
            | Event::RunFinished { job, .. }
            | Event::RunSkipped { job, .. }
            | Event::RunMissed { job, .. }
            | Event::RunInterrupted { job, .. }
            | Event::RunLost { job, .. }
            | Event::HookFailed { job, .. } => Some(job),
            _ => None,
        }
    }

    /// The run this event is about, if any.
    pub fn run_id(&self) -> Option<&Arc<str>> {
        match self {
            Event::RunStarted { run_id, .. }
            | Event::RunOutput { run_id, .. }
            | Event::RunOutputTruncated { run_id, .. }
            | Event::RunRetrying { run_id, .. }
            | Event::RunFinished { run_id, .. }
            | Event::RunInterrupted { run_id, .. } => Some(run_id),
            _ => None,
        }
    }
}

/// RFC 3339 with milliseconds, as every event writes times.
pub(crate) fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Where events go. Cheap to clone; every component holds one.
#[derive(Clone)]
pub struct Events {
    sink: Arc<dyn Fn(Event) + Send + Sync>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Events")
    }
}

impl Events {
    pub fn new(sink: impl Fn(Event) + Send + Sync + 'static) -> Self {
        Events {
            sink: Arc::new(sink),
        }
    }

    /// Drops every event.
    pub fn discard() -> Self {
        Events::new(|_| {})
    }

    /// Events sent into an unbounded channel, for tests and for a logging task.
    pub fn channel() -> (Self, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let events = Events::new(move |event| {
            // A closed receiver means nobody listens any more; dropping is right.
            let _ = tx.send(event);
        });
        (events, rx)
    }

    /// Events kept in memory, for tests that inspect them afterwards.
    pub fn recorder() -> (Self, Arc<Mutex<Vec<Event>>>) {
        let store = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&store);
        let events = Events::new(move |event| {
            if let Ok(mut all) = sink.lock() {
                all.push(event);
            }
        });
        (events, store)
    }

    pub fn emit(&self, event: Event) {
        (self.sink)(event);
    }
}
