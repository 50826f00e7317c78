//! The validated domain model of a job: what `config` produces and every later stage
//! (scheduler, dispatch, run, exec) consumes. Nothing here is raw YAML any more; every
//! value has been checked, defaulted and interpolated.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::account::Account;
use crate::cron::Schedule;
use crate::zone::Zone;

/// Where a definition came from, for error messages and `check` output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceLocation {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
}

impl std::fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One job, fully validated. `Debug` shows `env`'s names, never its values (they may
/// hold `${file:…}` / `${credential:…}` secrets).
#[derive(Clone, PartialEq)]
pub struct Job {
    pub name: String,
    /// The expression as written, for display.
    pub schedule_text: String,
    pub schedule: Schedule,
    pub timezone: Zone,
    pub action: Action,
    pub workdir: Option<PathBuf>,
    /// The job's own environment variables (shell jobs), over the clean one
    /// [`crate::exec::environment`] builds.
    pub env: BTreeMap<String, String>,
    /// `env_inherit: true`: start from the service's environment instead of a clean one.
    pub env_inherit: bool,
    /// `user:` / `group:`: who the job runs as; `None` = chime's own user.
    pub run_as: Option<RunAs>,
    /// Per attempt; `None` means no limit.
    pub timeout: Option<Duration>,
    pub kill_grace: Duration,
    pub retry: RetryPolicy,
    pub overlap: Overlap,
    pub starting_deadline: Option<Duration>,
    /// What becomes of fires missed while chime was not running.
    pub catch_up: CatchUp,
    /// With replicas (`--cluster`): what becomes of a run whose replica was lost.
    pub on_owner_loss: OwnerLoss,
    pub enabled: bool,
    /// Monitoring pings (`healthchecks`, `on_start`, `on_success`, `on_failure`,
    /// `report_missed`); `None` when the job has none.
    pub pings: Option<std::sync::Arc<Pings>>,
    /// Where the job's name stands in its file.
    pub source: SourceLocation,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.name)
            .field("schedule_text", &self.schedule_text)
            .field("schedule", &self.schedule)
            .field("timezone", &self.timezone)
            .field("action", &self.action)
            .field("workdir", &self.workdir)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("env_inherit", &self.env_inherit)
            .field("run_as", &self.run_as)
            .field("timeout", &self.timeout)
            .field("kill_grace", &self.kill_grace)
            .field("retry", &self.retry)
            .field("overlap", &self.overlap)
            .field("starting_deadline", &self.starting_deadline)
            .field("enabled", &self.enabled)
            .field("source", &self.source)
            .finish()
    }
}

/// Who a shell job runs as (`user:` / `group:`), looked up when the files were loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// `user:`'s account; `None` with only `group:`, which keeps chime's own user.
    pub user: Option<Account>,
    /// `group:`: its name and gid, instead of the account's primary group.
    pub group: Option<(String, u32)>,
}

pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);

impl Job {
    /// A job defined in code: every optional key at the default a schedule file gives
    /// it (no workdir, env, timeout or deadline; `kill_grace` 10 s; one attempt;
    /// `overlap: skip`; enabled), in UTC (a file's default zone is the machine's),
    /// placed at line 1 of a file named `(code)`. Change fields with struct update
    /// syntax: `Job { overlap: Overlap::Allow, ..Job::new(..)? }`.
    pub fn new(
        name: impl Into<String>,
        schedule: &str,
        action: Action,
    ) -> Result<Job, crate::cron::CronError> {
        Ok(Job {
            name: name.into(),
            schedule_text: schedule.to_string(),
            schedule: Schedule::parse(schedule)?,
            timezone: Zone::UTC,
            action,
            workdir: None,
            env: BTreeMap::new(),
            env_inherit: false,
            run_as: None,
            timeout: None,
            kill_grace: DEFAULT_KILL_GRACE,
            retry: RetryPolicy::default(),
            overlap: Overlap::default(),
            starting_deadline: None,
            catch_up: CatchUp::None,
            on_owner_loss: OwnerLoss::Lost,
            enabled: true,
            pings: None,
            source: SourceLocation {
                file: PathBuf::from("(code)"),
                line: 1,
                column: 1,
            },
        })
    }
}

/// What a run does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Shell(ShellCommand),
    Http(HttpRequest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellCommand {
    /// A string: run under `/bin/sh -c`.
    Script(String),
    /// A list: exec'd directly, no shell. Never empty.
    Argv(Vec<String>),
}

/// An HTTP call with `${VAR}` already substituted.
///
/// `url` and header values may carry secrets: log `url_template` instead, and never
/// log headers or the body.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    /// The URL as written in the file, before interpolation: safe to log.
    pub url_template: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// Accepted statuses; empty means any 2xx.
    pub expect_status: Vec<u16>,
}

impl std::fmt::Debug for HttpRequest {
    // Interpolated values are secrets: Debug shows only what the file said.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &self.url_template)
            .field("headers", &self.headers.len())
            .field("body", &self.body.as_ref().map(String::len))
            .field("expect_status", &self.expect_status)
            .finish()
    }
}

impl HttpRequest {
    /// Whether `status` counts as success for this request.
    pub fn accepts(&self, status: u16) -> bool {
        if self.expect_status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.expect_status.contains(&status)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, at least 1.
    pub attempts: u32,
    /// Delay before the second attempt; doubles each time.
    pub delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 1,
            delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// The nominal delay (before jitter) after failed attempt `attempt` (1-based):
    /// `delay × 2^(attempt-1)`, capped at `max_delay`.
    pub fn nominal_delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.delay
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.max_delay)
    }
}

/// A job's monitoring pings (DESIGN.md §12). They never change a run's outcome.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Pings {
    /// A healthchecks.io ping URL (`${VAR}` interpolated): `/start`, `/<exit code>`,
    /// `/fail`, each with `?rid=RUN_ID`.
    pub healthchecks: Option<PingUrl>,
    pub on_start: Option<Hook>,
    pub on_success: Option<Hook>,
    pub on_failure: Option<Hook>,
    /// Missed fires and skipped ones (but `disabled`) are reported as failures.
    pub report_missed: bool,
}

/// A URL with `${VAR}` substituted; only `template` may be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct PingUrl {
    pub url: String,
    pub template: String,
}

impl std::fmt::Debug for PingUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.template)
    }
}

/// An HTTP hook: like an HTTP job's request, with the run's facts (`${CHIME_*}`)
/// filled in when it is sent.
#[derive(Clone, PartialEq)]
pub struct Hook {
    pub method: String,
    pub url: Template,
    /// The URL as written: safe to log.
    pub url_template: String,
    pub headers: Vec<(String, Template)>,
    pub body: Option<Template>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("method", &self.method)
            .field("url", &self.url_template)
            .field("headers", &self.headers.len())
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

/// Text whose service-environment variables are already substituted, with the run's
/// facts still to come.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template(pub Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    /// `${CHIME_…}`, or `${json:CHIME_…}` (`json`: as a JSON string literal).
    Var {
        var: RunVar,
        json: bool,
    },
}

/// The run's facts a hook can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunVar {
    Job,
    RunId,
    Outcome,
    ExitCode,
    DurationMs,
    ScheduledAt,
    OutputTail,
}

impl RunVar {
    pub const ALL: [RunVar; 7] = [
        RunVar::Job,
        RunVar::RunId,
        RunVar::Outcome,
        RunVar::ExitCode,
        RunVar::DurationMs,
        RunVar::ScheduledAt,
        RunVar::OutputTail,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RunVar::Job => "CHIME_JOB",
            RunVar::RunId => "CHIME_RUN_ID",
            RunVar::Outcome => "CHIME_OUTCOME",
            RunVar::ExitCode => "CHIME_EXIT_CODE",
            RunVar::DurationMs => "CHIME_DURATION_MS",
            RunVar::ScheduledAt => "CHIME_SCHEDULED_AT",
            RunVar::OutputTail => "CHIME_OUTPUT_TAIL",
        }
    }

    pub fn from_name(name: &str) -> Option<RunVar> {
        RunVar::ALL.into_iter().find(|var| var.name() == name)
    }
}

/// `catch_up`: fires missed while chime was down run once, for the latest (`Latest`),
/// or not at all (`None`, as cron and systemd without `Persistent=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    #[default]
    None,
    Latest,
}

/// `on_owner_loss`: a run whose replica died (its lease expired) is only marked `lost`
/// (`Lost`, the default: shell jobs are rarely idempotent), or run again once by
/// another replica (`Rerun`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OwnerLoss {
    #[default]
    Lost,
    Rerun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlap {
    #[default]
    Skip,
    Allow,
    Replace,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Allow => "allow",
            Overlap::Replace => "replace",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let policy = RetryPolicy {
            attempts: 10,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
        };
        let delays: Vec<u64> = (1..=6).map(|a| policy.nominal_delay(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(policy.nominal_delay(200), Duration::from_secs(10));
    }

    #[test]
    fn expect_status_defaults_to_2xx() {
        let mut req = HttpRequest {
            method: "GET".into(),
            url: "http://x".into(),
            url_template: "http://x".into(),
            headers: vec![],
            body: None,
            expect_status: vec![],
        };
        assert!(req.accepts(200) && req.accepts(204) && !req.accepts(301) && !req.accepts(500));
        req.expect_status = vec![301];
        assert!(req.accepts(301) && !req.accepts(200));
    }
}
