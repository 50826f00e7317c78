//! The binary's edge (DESIGN.md §1): the command line, stderr and exit codes. Every
//! command lives in its own file and calls the library, which returns typed errors;
//! only this module prints them (with their whole chain of causes) and picks the exit
//! code. `main.rs` only calls [`main`].
//!
//! - `check.rs`: `chime check`; `next.rs`: `chime next`; `run.rs`: `chime run` (the
//!   service: signals, watcher, logging, the process's runtime); `exec.rs`: `chime exec`.
//! - `state.rs`: the state store for `run`, `chime status` and `chime history`;
//!   `control.rs`: `chime trigger`, `pause`, `resume`, `kill` and `schema`.

mod check;
mod control;
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
    /// The subcommands' flags written before the subcommand (`chime --log-format json
    /// run`), as earlier versions took them; hidden, so each `--help` lists its own.
    #[command(flatten)]
    pub before: FlagsBefore,
}

/// The subcommands. Each takes flattened flag groups ([`ZoneFlags`], [`LogFlags`],
/// [`ServiceFlags`], [`TrustFlags`], [`StateFlags`], [`HistoryFlags`],
/// [`ControlFlags`], [`ClusterFlags`]), so `--help` shows only its own (DESIGN.md §1's
/// table); a new flag goes into the group, or the subcommand's struct, it belongs to,
/// into [`FlagsBefore`] and into [`Settings::resolve`] (or a `with_*` step).
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the service.
    Run(RunArgs),
    /// Validate schedule files and list every job with its next fire time.
    Check(CheckArgs),
    /// Print upcoming fire times, one RFC 3339 time a line.
    Next(NextArgs),
    /// Run one job now, in the foreground, with its timeout and retries.
    Exec(ExecArgs),
    /// Every job: schedule, next fire, last run and its outcome, running now.
    Status(StatusArgs),
    /// Past runs, newest first: a job's, or one run's attempts, outcome and output.
    History(HistoryCommand),
    /// Run a job now, on the running service (overlap, limit, timeout and retries apply).
    Trigger(TriggerArgs),
    /// Pause jobs: their scheduled fires are skipped until `chime resume`.
    Pause(TargetsArgs),
    /// Resume paused jobs; what was missed meanwhile is not replayed.
    Resume(TargetsArgs),
    /// End a running run (by run id) or every run of a job, as a timeout does.
    Kill(KillArgs),
    /// Print the JSON Schema of the schedule file format.
    Schema,
}

/// Schedule files or directories: a directory means every `*.yaml` / `*.yml` in it.
#[derive(Debug, Clone, Args)]
pub(crate) struct PathArgs {
    /// Schedule files, or directories of `*.yaml` / `*.yml` files (not recursive).
    #[arg(default_value = DEFAULT_PATH)]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub paths: PathArgs,
    #[command(flatten)]
    pub log: LogFlags,
    #[command(flatten)]
    pub zone: ZoneFlags,
    #[command(flatten)]
    pub service: ServiceFlags,
    #[command(flatten)]
    pub state: StateFlags,
    #[command(flatten)]
    pub history: HistoryFlags,
    #[command(flatten)]
    pub control: ControlFlags,
    #[command(flatten)]
    pub cluster: ClusterFlags,
    #[command(flatten)]
    pub trust: TrustFlags,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    pub paths: PathArgs,
    #[command(flatten)]
    pub zone: ZoneFlags,
    #[command(flatten)]
    pub trust: TrustFlags,
}

#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// The job's name, as `chime check` lists it.
    pub job: String,
    #[command(flatten)]
    pub paths: PathArgs,
    #[command(flatten)]
    pub log: LogFlags,
    #[command(flatten)]
    pub zone: ZoneFlags,
    #[command(flatten)]
    pub trust: TrustFlags,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub paths: PathArgs,
    #[command(flatten)]
    pub state: StateFlags,
    #[command(flatten)]
    pub control: ControlFlags,
    #[command(flatten)]
    pub cluster: ClusterReadFlags,
    /// One JSON object per job, one a line.
    #[arg(long)]
    pub json: bool,
    /// The zone of jobs that name none, for their next fire: hidden, as `status` only
    /// reads it (from `CHIME_DEFAULT_TIMEZONE` in the service's environment, say).
    #[arg(long, env = "CHIME_DEFAULT_TIMEZONE", value_parser = parse_zone, hide = true)]
    pub default_timezone: Option<Zone>,
    /// Loads the schedule files under the service's rule: hidden, as with the zone.
    #[arg(long, env = "CHIME_INSECURE_ALLOW_WRITABLE_SCHEDULES", hide = true)]
    pub insecure_allow_writable_schedules: bool,
}

#[derive(Debug, Args)]
pub(crate) struct HistoryCommand {
    #[command(flatten)]
    pub args: state::HistoryArgs,
    #[command(flatten)]
    pub state: StateFlags,
    #[command(flatten)]
    pub control: ControlFlags,
    #[command(flatten)]
    pub cluster: ClusterReadFlags,
}

#[derive(Debug, Args)]
pub(crate) struct TriggerArgs {
    /// The job's name.
    pub job: String,
    /// Stream the run's output; exit 0 if it succeeded, 1 otherwise.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub control: ControlFlags,
}

#[derive(Debug, Args)]
pub(crate) struct TargetsArgs {
    #[command(flatten)]
    pub targets: control::Targets,
    #[command(flatten)]
    pub control: ControlFlags,
}

#[derive(Debug, Args)]
pub(crate) struct KillArgs {
    /// A run id, or a job's name.
    pub target: String,
    #[command(flatten)]
    pub control: ControlFlags,
}

/// `--default-timezone`: every subcommand that evaluates schedules.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ZoneFlags {
    /// Zone for jobs that name none (default: the system's zone): an IANA name, or
    /// as `TZ` takes it, a `:/path` to a zone file or a POSIX rule.
    #[arg(long, env = "CHIME_DEFAULT_TIMEZONE", value_parser = parse_zone)]
    pub default_timezone: Option<Zone>,
}

/// The event log's flags: `run` and `exec`.
#[derive(Debug, Clone, Args)]
pub(crate) struct LogFlags {
    /// Log format: auto = journald under systemd, text on a terminal, JSON otherwise.
    #[arg(long, env = "CHIME_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, env = "CHIME_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// The service's own flags: `run` only.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServiceFlags {
    /// How long running jobs may finish after SIGTERM before they are terminated.
    #[arg(long, env = "CHIME_SHUTDOWN_GRACE", value_parser = parse_duration_arg, default_value = "30s")]
    pub shutdown_grace: Duration,
    /// At most this many runs at once; further fires wait in order (0 = no limit).
    #[arg(long, env = "CHIME_MAX_CONCURRENT_RUNS", default_value_t = 0)]
    pub max_concurrent_runs: usize,
    /// Refuse a set of schedules with more jobs, at start and at reload (0 = no limit).
    #[arg(long, env = "CHIME_MAX_JOBS", default_value_t = DEFAULT_MAX_JOBS)]
    pub max_jobs: usize,
    /// Serve GET /metrics (Prometheus) and GET /health on this address, e.g.
    /// 127.0.0.1:9746 (default: off).
    #[arg(long, env = "CHIME_LISTEN", value_parser = parse_listen)]
    pub listen: Option<std::net::SocketAddr>,
}

/// Who may change the schedule files: `run`, `check` and `exec`, which all load them
/// under the same rule.
#[derive(Debug, Clone, Args)]
pub(crate) struct TrustFlags {
    /// As root, load schedule files and directories that others could change (owned by
    /// another user, or group/other-writable) with a warning instead of refusing them:
    /// for containers whose mounts' modes cannot be fixed.
    #[arg(long, env = "CHIME_INSECURE_ALLOW_WRITABLE_SCHEDULES")]
    pub insecure_allow_writable_schedules: bool,
}

/// Where the state store lives: `run`, `status` and `history`.
#[derive(Debug, Clone, Args)]
pub(crate) struct StateFlags {
    /// Where run history and catch-up state live (`none`: no state). Default:
    /// $STATE_DIRECTORY, else /var/lib/chime as root, else $XDG_STATE_HOME/chime.
    #[arg(long, env = "CHIME_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// How much history the service keeps: `run` only.
#[derive(Debug, Clone, Args)]
pub(crate) struct HistoryFlags {
    /// Runs older than this are pruned from the history.
    #[arg(long, env = "CHIME_HISTORY_KEEP", value_parser = parse_duration_arg, default_value = "30d")]
    pub history_keep: Duration,
    /// At most this many runs are kept per job.
    #[arg(long, env = "CHIME_HISTORY_KEEP_RUNS", default_value_t = DEFAULT_HISTORY_KEEP_RUNS)]
    pub history_keep_runs: usize,
}

/// Replicas on PostgreSQL (DESIGN.md §13): `run`. `status` and `history` take
/// [`ClusterReadFlags`] (`--cluster` only, to read the cluster's history).
#[derive(Debug, Clone, Args)]
pub(crate) struct ClusterFlags {
    /// Run as one of several replicas on this PostgreSQL database (DESIGN.md §13):
    /// `postgres://USER@HOST:PORT/DB`. History then lives there, not in SQLite.
    #[arg(long, env = "CHIME_CLUSTER")]
    pub cluster: Option<String>,
    /// A file holding the database password (default: the systemd credential
    /// `chime-cluster-password`, if any). Never logged.
    #[arg(long, env = "CHIME_CLUSTER_PASSWORD_FILE")]
    pub cluster_password_file: Option<PathBuf>,
    /// This replica's name among the members (default: host:pid).
    #[arg(long, env = "CHIME_CLUSTER_MEMBER")]
    pub cluster_member: Option<String>,
    /// How long a claimed run's lease lasts without renewal; a replica that cannot renew
    /// for half of it terminates its runs.
    #[arg(long, env = "CHIME_CLUSTER_LEASE", value_parser = parse_duration_arg, default_value = "30s")]
    pub cluster_lease: Duration,
    /// How long replicas wait before claiming fires preferred for another member.
    #[arg(long, env = "CHIME_CLUSTER_FALLBACK", value_parser = parse_duration_arg, default_value = "1s")]
    pub cluster_fallback: Duration,
    /// How long before its instant a fire is claimed, so that the claim's round trip is
    /// over when the instant comes (at most 10s; more for a distant database).
    #[arg(long, env = "CHIME_CLUSTER_CLAIM_AHEAD", value_parser = parse_duration_arg, default_value = "250ms")]
    pub cluster_claim_ahead: Duration,
}

/// `--cluster` for `status` and `history`: the history is read from PostgreSQL.
#[derive(Debug, Clone, Args)]
pub(crate) struct ClusterReadFlags {
    /// Read the history of the replicas on this PostgreSQL database (`run --cluster`).
    #[arg(long, env = "CHIME_CLUSTER")]
    pub cluster: Option<String>,
    /// The database password's file: hidden, as `run --help` documents it.
    #[arg(long, env = "CHIME_CLUSTER_PASSWORD_FILE", hide = true)]
    pub cluster_password_file: Option<PathBuf>,
}

/// The control socket: `run`, which serves it, and the commands that ask it
/// (`status`, `history`, `trigger`, `pause`, `resume`, `kill`).
#[derive(Debug, Clone, Args)]
pub(crate) struct ControlFlags {
    /// The control socket (`none`: no socket). Default: $RUNTIME_DIRECTORY/chime.sock,
    /// else /run/chime/chime.sock as root, else $XDG_RUNTIME_DIR/chime/chime.sock.
    #[arg(long, env = "CHIME_CONTROL_SOCKET")]
    pub control_socket: Option<PathBuf>,
}

/// `--history-keep` unless set.
const DEFAULT_HISTORY_KEEP: Duration = Duration::from_secs(30 * 24 * 3600);
/// `--history-keep-runs` unless set.
const DEFAULT_HISTORY_KEEP_RUNS: usize = 1000;

impl Settings {
    /// The load options of these settings, with `default_timezone`.
    pub(crate) fn load_options(&self, default_timezone: Option<impl Into<Zone>>) -> LoadOptions {
        LoadOptions::from_process(default_timezone)
            .allow_writable(self.insecure_allow_writable_schedules)
    }
}

/// The same flags before the subcommand. Given there, they win over the
/// subcommand's defaults and environment; a subcommand without the flag ignores it.
#[derive(Debug, Clone, Args)]
pub(crate) struct FlagsBefore {
    #[arg(long = "log-format", value_enum, hide = true)]
    log_format: Option<LogFormat>,
    #[arg(long = "log-level", hide = true)]
    log_level: Option<String>,
    #[arg(long = "default-timezone", value_parser = parse_zone, hide = true)]
    default_timezone: Option<Zone>,
    #[arg(long = "shutdown-grace", value_parser = parse_duration_arg, hide = true)]
    shutdown_grace: Option<Duration>,
    #[arg(long = "max-concurrent-runs", hide = true)]
    max_concurrent_runs: Option<usize>,
    #[arg(long = "max-jobs", hide = true)]
    max_jobs: Option<usize>,
    #[arg(long = "listen", value_parser = parse_listen, hide = true)]
    listen: Option<std::net::SocketAddr>,
    #[arg(long = "insecure-allow-writable-schedules", hide = true)]
    insecure_allow_writable_schedules: bool,
    #[arg(long = "state-dir", hide = true)]
    state_dir: Option<PathBuf>,
    #[arg(long = "history-keep", value_parser = parse_duration_arg, hide = true)]
    history_keep: Option<Duration>,
    #[arg(long = "history-keep-runs", hide = true)]
    history_keep_runs: Option<usize>,
    #[arg(long = "control-socket", hide = true)]
    control_socket: Option<PathBuf>,
    #[arg(long = "cluster", hide = true)]
    cluster: Option<String>,
    #[arg(long = "cluster-password-file", hide = true)]
    cluster_password_file: Option<PathBuf>,
    #[arg(long = "cluster-member", hide = true)]
    cluster_member: Option<String>,
    #[arg(long = "cluster-lease", value_parser = parse_duration_arg, hide = true)]
    cluster_lease: Option<Duration>,
    #[arg(long = "cluster-fallback", value_parser = parse_duration_arg, hide = true)]
    cluster_fallback: Option<Duration>,
    #[arg(long = "cluster-claim-ahead", value_parser = parse_duration_arg, hide = true)]
    cluster_claim_ahead: Option<Duration>,
}

/// Every setting a command may read, resolved from its flag groups (a group the
/// subcommand lacks gives its defaults).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub log_format: LogFormat,
    pub log_level: String,
    pub default_timezone: Option<Zone>,
    pub shutdown_grace: Duration,
    pub max_concurrent_runs: usize,
    pub max_jobs: usize,
    pub listen: Option<std::net::SocketAddr>,
    pub insecure_allow_writable_schedules: bool,
    pub state_dir: Option<PathBuf>,
    pub history_keep: Duration,
    pub history_keep_runs: usize,
    pub control_socket: Option<PathBuf>,
    pub cluster: Option<String>,
    pub cluster_password_file: Option<PathBuf>,
    pub cluster_member: Option<String>,
    pub cluster_lease: Duration,
    pub cluster_fallback: Duration,
    pub cluster_claim_ahead: Duration,
}

/// `--cluster-lease` unless set.
const DEFAULT_CLUSTER_LEASE: Duration = Duration::from_secs(30);
/// `--cluster-fallback` unless set.
const DEFAULT_CLUSTER_FALLBACK: Duration = Duration::from_secs(1);
/// `--cluster-claim-ahead` unless set.
const DEFAULT_CLUSTER_CLAIM_AHEAD: Duration = Duration::from_millis(250);

impl Settings {
    fn resolve(
        before: &FlagsBefore,
        zone: &ZoneFlags,
        log: Option<&LogFlags>,
        service: Option<&ServiceFlags>,
        trust: Option<&TrustFlags>,
    ) -> Settings {
        Settings {
            log_format: before
                .log_format
                .or(log.map(|l| l.log_format))
                .unwrap_or(LogFormat::Auto),
            log_level: before
                .log_level
                .clone()
                .or(log.map(|l| l.log_level.clone()))
                .unwrap_or_else(|| "info".to_string()),
            default_timezone: before.default_timezone.or(zone.default_timezone),
            shutdown_grace: before
                .shutdown_grace
                .or(service.map(|s| s.shutdown_grace))
                .unwrap_or(Duration::from_secs(30)),
            max_concurrent_runs: before
                .max_concurrent_runs
                .or(service.map(|s| s.max_concurrent_runs))
                .unwrap_or(0),
            max_jobs: before
                .max_jobs
                .or(service.map(|s| s.max_jobs))
                .unwrap_or(DEFAULT_MAX_JOBS),
            listen: before.listen.or(service.and_then(|s| s.listen)),
            insecure_allow_writable_schedules: before.insecure_allow_writable_schedules
                || trust.is_some_and(|t| t.insecure_allow_writable_schedules),
            state_dir: before.state_dir.clone(),
            history_keep: before.history_keep.unwrap_or(DEFAULT_HISTORY_KEEP),
            history_keep_runs: before
                .history_keep_runs
                .unwrap_or(DEFAULT_HISTORY_KEEP_RUNS),
            control_socket: before.control_socket.clone(),
            cluster: before.cluster.clone(),
            cluster_password_file: before.cluster_password_file.clone(),
            cluster_member: before.cluster_member.clone(),
            cluster_lease: before.cluster_lease.unwrap_or(DEFAULT_CLUSTER_LEASE),
            cluster_fallback: before.cluster_fallback.unwrap_or(DEFAULT_CLUSTER_FALLBACK),
            cluster_claim_ahead: before
                .cluster_claim_ahead
                .unwrap_or(DEFAULT_CLUSTER_CLAIM_AHEAD),
        }
    }

    /// Adds `run`'s cluster flags (a flag given before the subcommand wins).
    fn with_cluster(mut self, before: &FlagsBefore, cluster: &ClusterFlags) -> Settings {
        self.cluster = self.cluster.or_else(|| cluster.cluster.clone());
        self.cluster_password_file = self
            .cluster_password_file
            .or_else(|| cluster.cluster_password_file.clone());
        self.cluster_member = self
            .cluster_member
            .or_else(|| cluster.cluster_member.clone());
        self.cluster_lease = before.cluster_lease.unwrap_or(cluster.cluster_lease);
        self.cluster_fallback = before.cluster_fallback.unwrap_or(cluster.cluster_fallback);
        self.cluster_claim_ahead = before
            .cluster_claim_ahead
            .unwrap_or(cluster.cluster_claim_ahead);
        self
    }

    /// Adds `status`'s and `history`'s `--cluster`.
    fn with_cluster_read(mut self, cluster: &ClusterReadFlags) -> Settings {
        self.cluster = self.cluster.or_else(|| cluster.cluster.clone());
        self.cluster_password_file = self
            .cluster_password_file
            .or_else(|| cluster.cluster_password_file.clone());
        self
    }

    /// Adds the state store's flags of a subcommand that has them (a flag given
    /// before the subcommand wins, as with the other groups).
    fn with_state(
        mut self,
        before: &FlagsBefore,
        state: &StateFlags,
        history: Option<&HistoryFlags>,
    ) -> Settings {
        self.state_dir = self.state_dir.or_else(|| state.state_dir.clone());
        if let Some(history) = history {
            self.history_keep = before.history_keep.unwrap_or(history.history_keep);
            self.history_keep_runs = before
                .history_keep_runs
                .unwrap_or(history.history_keep_runs);
        }
        self
    }

    /// Adds `--control-socket` of a subcommand that has it.
    fn with_control(mut self, control: &ControlFlags) -> Settings {
        self.control_socket = self
            .control_socket
            .or_else(|| control.control_socket.clone());
        self
    }
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

#[derive(Debug, Args)]
pub(crate) struct NextArgs {
    /// Schedule files or directories of `*.yaml` / `*.yml` files (ignored with --cron).
    #[arg(default_value = DEFAULT_PATH)]
    pub paths: Vec<PathBuf>,
    /// Only this job's fires.
    #[arg(long, conflicts_with = "cron")]
    pub job: Option<String>,
    /// An expression to evaluate instead of schedule files; quote it as one word,
    /// e.g. --cron "*/5 * * * *". Its meaning in words goes to stderr.
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
    #[command(flatten)]
    pub zone: ZoneFlags,
}

fn parse_zone(text: &str) -> Result<Zone, String> {
    zone::parse_zone(text, std::path::Path::new(zone::ZONEINFO_DIR))
        .map_err(|reason| format!("`{text}` {reason}; use a name such as Europe/Berlin or UTC"))
}

fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "`{text}` is not an address and port; write e.g. 127.0.0.1:9746 (or [::1]:9746); \
             host names are not looked up"
        )
    })
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
    if settings.cluster_claim_ahead > crate::cluster::CLAIM_AHEAD_MAX {
        return Err(format!(
            "--cluster-claim-ahead {}ms is too long: at most {}s (a fire is claimed that long before its instant)",
            settings.cluster_claim_ahead.as_millis(),
            crate::cluster::CLAIM_AHEAD_MAX.as_secs()
        ));
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
        claim_ahead: settings.cluster_claim_ahead,
    }))
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let before = &cli.before;
    let code = match &cli.command {
        Command::Check(args) => {
            let settings = Settings::resolve(before, &args.zone, None, None, Some(&args.trust));
            check::check(&args.paths.paths, &settings)
        }
        Command::Next(args) => {
            let settings = Settings::resolve(before, &args.zone, None, None, None);
            next::next(args, &settings)
        }
        Command::Run(args) => {
            let service = Some(&args.service);
            let trust = Some(&args.trust);
            let settings = Settings::resolve(before, &args.zone, Some(&args.log), service, trust)
                .with_state(before, &args.state, Some(&args.history))
                .with_control(&args.control)
                .with_cluster(before, &args.cluster);
            run::run(&args.paths.paths, &settings)
        }
        Command::Exec(args) => {
            let trust = Some(&args.trust);
            let settings = Settings::resolve(before, &args.zone, Some(&args.log), None, trust);
            exec::exec(&args.job, &args.paths.paths, &settings)
        }
        Command::Status(args) => {
            let zone = ZoneFlags {
                default_timezone: args.default_timezone,
            };
            let trust = TrustFlags {
                insecure_allow_writable_schedules: args.insecure_allow_writable_schedules,
            };
            let settings = Settings::resolve(before, &zone, None, None, Some(&trust))
                .with_state(before, &args.state, None)
                .with_control(&args.control)
                .with_cluster_read(&args.cluster);
            state::status(&args.paths.paths, args.json, &settings)
        }
        Command::History(command) => {
            let settings = Settings::resolve(before, &ZoneFlags::default(), None, None, None)
                .with_state(before, &command.state, None)
                .with_control(&command.control)
                .with_cluster_read(&command.cluster);
            state::history(&command.args, &settings)
        }
        Command::Trigger(args) => {
            control::trigger(&args.job, args.wait, &control_only(before, &args.control))
        }
        Command::Pause(args) => {
            control::pause(&args.targets, true, &control_only(before, &args.control))
        }
        Command::Resume(args) => {
            control::pause(&args.targets, false, &control_only(before, &args.control))
        }
        Command::Kill(args) => control::kill(&args.target, &control_only(before, &args.control)),
        Command::Schema => control::schema(),
    };
    ExitCode::from(code)
}

/// The settings of a command that only asks the control socket.
fn control_only(before: &FlagsBefore, control: &ControlFlags) -> Settings {
    Settings::resolve(before, &ZoneFlags::default(), None, None, None).with_control(control)
}

/// Loads the schedules, printing every error to stderr when there are any.
pub(crate) fn load_or_report(paths: &[PathBuf], settings: &Settings) -> Option<Config> {
    load_with(paths, &settings.load_options(settings.default_timezone))
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
