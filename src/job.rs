//! The validated domain model of a job: what `config` produces and every later stage
//! (scheduler, dispatch, run, exec) consumes. Nothing here is raw YAML any more; every
//! value has been checked, defaulted and interpolated.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

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

/// One job, fully validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub name: String,
    /// The expression as written, for display.
    pub schedule_text: String,
    pub schedule: Schedule,
    pub timezone: Zone,
    pub action: Action,
    pub workdir: Option<PathBuf>,
    /// Extra environment for shell jobs, over the service's own.
    pub env: BTreeMap<String, String>,
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
    /// Where the job's name stands in its file.
    pub source: SourceLocation,
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
            timeout: None,
            kill_grace: DEFAULT_KILL_GRACE,
            retry: RetryPolicy::default(),
            overlap: Overlap::default(),
            starting_deadline: None,
            catch_up: CatchUp::None,
            on_owner_loss: OwnerLoss::Lost,
            enabled: true,
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
