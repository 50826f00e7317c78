//! The binary's edge (DESIGN.md §1): the command line, stderr and exit codes. Every
//! command lives in its own file and calls the library, which returns typed errors;
//! only this module prints them (with their whole chain of causes) and picks the exit
//! code. `main.rs` only calls [`main`].
//!
//! - `check.rs`: `chime check`; `next.rs`: `chime next`; `run.rs`: `chime run` (the
//!   service: signals, watcher, logging, the process's runtime); `exec.rs`: `chime exec`.

mod check;
mod cluster;
mod exec;
mod next;
mod run;
mod state;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, Config, ConfigErrors, LoadOptions};
use crate::cron::Schedule;
use crate::duration::parse_duration;
use crate::job::Job;
use crate::zone::{self, Zone};

/// Where `run`, `check`, `next` and `exec` look when no PATH is given.
pub(crate) const DEFAULT_PATH: &str = "/etc/chime/schedules.d";

#[derive(Debug, Parser)]
#[command(name = "chime", version, about = "A cron-style scheduler service")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub settings: Settings,
}

/// Service-wide settings: flags with `CHIME_*` environment fallbacks.
#[derive(Debug, Clone, Args)]
pub(crate) struct Settings {
    /// Log format: auto = journald under systemd, text on a terminal, JSON otherwise.
    #[arg(long, global = true, env = "CHIME_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, env = "CHIME_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Zone for jobs that name none (default: the system's zone): an IANA name, or
    /// as `TZ` takes it, a `:/path` to a zone file or a POSIX rule.
    #[arg(long, global = true, env = "CHIME_DEFAULT_TIMEZONE", value_parser = parse_zone)]
    pub default_timezone: Option<Zone>,
    /// How long running jobs may finish after SIGTERM before they are terminated.
    #[arg(long, global = true, env = "CHIME_SHUTDOWN_GRACE", value_parser = parse_duration_arg, default_value = "30s")]
    pub shutdown_grace: Duration,
    /// At most this many runs at once; further fires wait in order (0 = no limit).
    #[arg(
        long,
        global = true,
        env = "CHIME_MAX_CONCURRENT_RUNS",
        default_value_t = 0
    )]
    pub max_concurrent_runs: usize,
    /// `run` refuses a set of schedules with more jobs, at start and at reload (0 = no
    /// limit).
    #[arg(
        long,
        global = true,
        env = "CHIME_MAX_JOBS",
        default_value_t = DEFAULT_MAX_JOBS
    )]
    pub max_jobs: usize,
    /// Where run history and catch-up state live (`none`: no state). Default:
    /// $STATE_DIRECTORY, else /var/lib/chime as root, else $XDG_STATE_HOME/chime.
    #[arg(long, global = true, env = "CHIME_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Runs older than this are pruned from the history.
    #[arg(long, global = true, env = "CHIME_HISTORY_KEEP", value_parser = parse_duration_arg, default_value = "30d")]
    pub history_keep: Duration,
    /// At most this many runs are kept per job.
    #[arg(
        long,
        global = true,
        env = "CHIME_HISTORY_KEEP_RUNS",
        default_value_t = 1000
    )]
    pub history_keep_runs: usize,
    /// Run as one of several replicas on this PostgreSQL database (DESIGN.md §13):
    /// `postgres://USER@HOST:PORT/DB`. History then lives there, not in SQLite.
    #[arg(long, global = true, env = "CHIME_CLUSTER")]
    pub cluster: Option<String>,
    /// A file holding the database password (default: the systemd credential
    /// `chime-cluster-password`, if any). Never logged.
    #[arg(long, global = true, env = "CHIME_CLUSTER_PASSWORD_FILE")]
    pub cluster_password_file: Option<PathBuf>,
    /// This replica's name among the members (default: host:pid).
    #[arg(long, global = true, env = "CHIME_CLUSTER_MEMBER")]
    pub cluster_member: Option<String>,
    /// How long a claimed run's lease lasts without renewal; a replica that cannot renew
    /// for half of it terminates its runs.
    #[arg(long, global = true, env = "CHIME_CLUSTER_LEASE", value_parser = parse_duration_arg, default_value = "30s")]
    pub cluster_lease: Duration,
    /// How long replicas wait before claiming fires preferred for another member.
    #[arg(long, global = true, env = "CHIME_CLUSTER_FALLBACK", value_parser = parse_duration_arg, default_value = "1s")]
    pub cluster_fallback: Duration,
}

/// `--max-jobs` unless set: twice the 100,000 jobs the service is measured with (README,
/// Performance); a set beyond it is more likely a generator gone wrong than a plan.
pub(crate) const DEFAULT_MAX_JOBS: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Auto,
    Text,
    Json,
    Journald,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the service.
    Run {
        /// Schedule files or directories of `*.yaml` / `*.yml` files.
        #[arg(default_value = DEFAULT_PATH)]
        paths: Vec<PathBuf>,
    },
    /// Validate schedule files and list every job with its next fire time.
    Check {
        #[arg(default_value = DEFAULT_PATH)]
        paths: Vec<PathBuf>,
    },
    /// Print upcoming fire times, one RFC 3339 time a line.
    Next(NextArgs),
    /// Run one job now, in the foreground, with its timeout and retries.
    Exec {
        /// The job's name.
        job: String,
        #[arg(default_value = DEFAULT_PATH)]
        paths: Vec<PathBuf>,
    },
    /// Every job: schedule, next fire, last run and its outcome, running now.
    Status {
        #[arg(default_value = DEFAULT_PATH)]
        paths: Vec<PathBuf>,
        /// One JSON object per job, one a line.
        #[arg(long)]
        json: bool,
    },
    /// Past runs, newest first: a job's, or one run's attempts, outcome and output.
    History(state::HistoryArgs),
}

#[derive(Debug, Args)]
pub(crate) struct NextArgs {
    /// Schedule files or directories (ignored with --cron).
    #[arg(default_value = DEFAULT_PATH)]
    pub paths: Vec<PathBuf>,
    /// Only this job's fires.
    #[arg(long, conflicts_with = "cron")]
    pub job: Option<String>,
    /// An expression to evaluate instead of schedule files.
    #[arg(long)]
    pub cron: Option<String>,
    /// The zone for --cron (default: the service's default zone).
    #[arg(long, requires = "cron", value_parser = parse_zone)]
    pub tz: Option<Zone>,
    /// How many fire times to print.
    #[arg(short = 'n', default_value_t = 5)]
    pub count: usize,
    /// Count from this instant (RFC 3339, e.g. 2026-03-28T12:00:00Z; default: now).
    #[arg(long, value_parser = parse_instant)]
    pub from: Option<DateTime<Utc>>,
}

fn parse_zone(text: &str) -> Result<Zone, String> {
    zone::parse_zone(text, std::path::Path::new(zone::ZONEINFO_DIR))
        .map_err(|reason| format!("`{text}` {reason}; use a name such as Europe/Berlin or UTC"))
}

fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("`{text}` is not an RFC 3339 time ({e}); write e.g. 2026-03-28T12:00:00Z")
        })
}

/// Exit codes of DESIGN.md §1.
pub mod exit {
    pub const OK: u8 = 0;
    /// Invalid schedules, or a failed `exec`.
    pub const FAILED: u8 = 1;
    /// A usage error.
    pub const USAGE: u8 = 2;
    /// The service failed internally (`service.failed`): systemd's `Restart=on-failure`
    /// brings it back.
    pub const INTERNAL: u8 = 3;
}

/// `--cluster` and its companions, with the password read from its file or the
/// systemd credential; `None` without `--cluster`.
pub(crate) fn cluster_options(
    settings: &Settings,
) -> Result<Option<crate::cluster::ClusterOptions>, String> {
    let Some(url) = settings.cluster.clone() else {
        return Ok(None);
    };
    let file = settings.cluster_password_file.clone().or_else(|| {
        std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(|dir| PathBuf::from(dir).join("chime-cluster-password"))
            .filter(|path| path.exists())
    });
    let password = match file {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .map_err(|err| {
                    format!(
                        "cannot read the cluster password file {}: {err}; fix --cluster-password-file",
                        path.display()
                    )
                })?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        ),
        None => None,
    };
    if settings.cluster_lease < Duration::from_millis(400) {
        return Err("--cluster-lease must be at least 400ms".into());
    }
    Ok(Some(crate::cluster::ClusterOptions {
        url,
        password,
        member: settings
            .cluster_member
            .clone()
            .unwrap_or_else(|| format!("{}:{}", crate::cluster::hostname(), std::process::id())),
        lease: settings.cluster_lease,
        fallback: settings.cluster_fallback,
        keep: settings.history_keep,
    }))
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check { paths } => check::check(&paths, &cli.settings),
        Command::Next(args) => next::next(&args, &cli.settings),
        Command::Run { paths } => run::run(&paths, &cli.settings),
        Command::Exec { job, paths } => exec::exec(&job, &paths, &cli.settings),
        Command::Status { paths, json } => state::status(&paths, json, &cli.settings),
        Command::History(args) => state::history(&args, &cli.settings),
    };
    ExitCode::from(code)
}

/// Loads the schedules, printing every error to stderr when there are any.
pub(crate) fn load_or_report(paths: &[PathBuf], settings: &Settings) -> Option<Config> {
    load_with(paths, &LoadOptions::from_process(settings.default_timezone))
}

pub(crate) fn load_with(paths: &[PathBuf], options: &LoadOptions) -> Option<Config> {
    config::load(paths, options)
        .map_err(|errors| report_errors(&errors))
        .ok()
}

/// Prints every error, one a line, and a count.
pub(crate) fn report_errors(errors: &ConfigErrors) {
    let mut stderr = std::io::stderr().lock();
    for error in &errors.0 {
        let _ = writeln!(stderr, "error: {error}");
    }
    let _ = writeln!(
        stderr,
        "{} error{} found; nothing was loaded",
        errors.0.len(),
        if errors.0.len() == 1 { "" } else { "s" }
    );
}

/// A fire time as `next` and `check` print it: RFC 3339 in the job's zone.
pub(crate) fn format_fire(at: DateTime<Utc>, tz: Zone) -> String {
    tz.local(at).to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// Prints an error and every cause under it, one a line (`caused by: …`), so that what
/// the library knew (an OS error under a client error, say) reaches the operator.
pub(crate) fn print_error(error: &dyn std::error::Error) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "error: {error}");
    let mut cause = error.source();
    while let Some(inner) = cause {
        let _ = writeln!(stderr, "  caused by: {inner}");
        cause = inner.source();
    }
}

/// The production executor, or the exit code after saying why there is none.
pub(crate) fn real_executor() -> Result<crate::exec::Real, u8> {
    crate::exec::Real::new().map_err(|err| {
        print_error(&err);
        exit::FAILED
    })
}
