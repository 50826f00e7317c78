//! The command line (DESIGN.md §1): parsing, and the commands that are not the service
//! itself. `main.rs` only calls [`main`]; every command reports through its exit code.

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
pub const DEFAULT_PATH: &str = "/etc/chime/schedules.d";

#[derive(Debug, Parser)]
#[command(name = "chime", version, about = "A cron-style scheduler service")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub settings: Settings,
}

/// Service-wide settings: flags with `CHIME_*` environment fallbacks.
#[derive(Debug, Clone, Args)]
pub struct Settings {
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
}

/// `--max-jobs` unless set: twice the 100,000 jobs the service is measured with (README,
/// Performance); a set beyond it is more likely a generator gone wrong than a plan.
pub const DEFAULT_MAX_JOBS: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
    Journald,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
}

#[derive(Debug, Args)]
pub struct NextArgs {
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

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check { paths } => check(&paths, &cli.settings),
        Command::Next(args) => next(&args, &cli.settings),
        Command::Run { paths } => crate::daemon::run_from_cli(&paths, &cli.settings),
        Command::Exec { job, paths } => crate::daemon::exec_from_cli(&job, &paths, &cli.settings),
    };
    ExitCode::from(code)
}

/// Loads the schedules, printing every error to stderr when there are any.
pub fn load_or_report(paths: &[PathBuf], settings: &Settings) -> Option<Config> {
    load_with(paths, &LoadOptions::from_process(settings.default_timezone))
}

fn load_with(paths: &[PathBuf], options: &LoadOptions) -> Option<Config> {
    config::load(paths, options)
        .map_err(|errors| report_errors(&errors))
        .ok()
}

/// Prints every error, one a line, and a count.
pub fn report_errors(errors: &ConfigErrors) {
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
pub fn format_fire(at: DateTime<Utc>, tz: Zone) -> String {
    tz.local(at).to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

fn check(paths: &[PathBuf], settings: &Settings) -> u8 {
    let default_zone = config::default_zone(settings.default_timezone);
    let options = LoadOptions::from_process(Some(default_zone.clone().warned()));
    let Some(config) = load_with(paths, &options) else {
        return exit::FAILED;
    };
    let now = Utc::now();
    let mut stderr = std::io::stderr().lock();
    // On stderr, as a note beside the listing: stdout stays the table and its summary.
    let _ = writeln!(stderr, "default zone: {default_zone}");
    for warning in &config.warnings {
        let _ = writeln!(stderr, "warning: {warning}");
    }
    let rows: Vec<[String; 4]> = config
        .jobs
        .iter()
        .map(|job| {
            [
                job.name.clone(),
                job.schedule_text.clone(),
                job.timezone.name().to_string(),
                describe_next(job, now),
            ]
        })
        .collect();
    let mut stdout = std::io::stdout().lock();
    let _ = write_table(&mut stdout, ["JOB", "SCHEDULE", "ZONE", "NEXT FIRE"], &rows);
    let _ = writeln!(
        stdout,
        "{} job{} in {} file{}: ok",
        config.jobs.len(),
        if config.jobs.len() == 1 { "" } else { "s" },
        config.files.len(),
        if config.files.len() == 1 { "" } else { "s" },
    );
    exit::OK
}

fn describe_next(job: &Job, now: DateTime<Utc>) -> String {
    if !job.enabled {
        return "disabled".to_string();
    }
    match (&job.schedule, job.schedule.next_after(job.timezone, now)) {
        (Schedule::Reboot, _) => "at service start".to_string(),
        (_, Some(at)) => format_fire(at, job.timezone),
        (_, None) => "never".to_string(),
    }
}

fn write_table(
    out: &mut impl Write,
    header: [&str; 4],
    rows: &[[String; 4]],
) -> std::io::Result<()> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: [&str; 4]| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, header)?;
    for row in rows {
        line(out, [&row[0], &row[1], &row[2], &row[3]])?;
    }
    Ok(())
}

fn next(args: &NextArgs, settings: &Settings) -> u8 {
    let from = args.from.unwrap_or_else(Utc::now);
    let lines: Vec<String> = if let Some(expr) = &args.cron {
        let schedule = match Schedule::parse(expr) {
            Ok(schedule) => schedule,
            Err(err) => {
                eprintln!("error: --cron `{expr}`: {err}");
                return exit::USAGE;
            }
        };
        let tz = match args.tz {
            Some(tz) => tz,
            None => config::default_zone(settings.default_timezone).warned(),
        };
        schedule
            .fires_after(tz, from)
            .take(args.count)
            .map(|at| format_fire(at, tz))
            .collect()
    } else {
        let Some(config) = load_or_report(&args.paths, settings) else {
            return exit::FAILED;
        };
        match &args.job {
            Some(name) => {
                let Some(job) = config.jobs.iter().find(|job| &job.name == name) else {
                    let known: Vec<&str> = config.jobs.iter().map(|j| j.name.as_str()).collect();
                    eprintln!(
                        "error: no job named `{name}`; loaded jobs: {}",
                        known.join(", ")
                    );
                    return exit::FAILED;
                };
                job.schedule
                    .fires_after(job.timezone, from)
                    .take(args.count)
                    .map(|at| format_fire(at, job.timezone))
                    .collect()
            }
            None => merged_fires(&config.jobs, from, args.count),
        }
    };
    let mut stdout = std::io::stdout().lock();
    for line in lines {
        if writeln!(stdout, "{line}").is_err() {
            break;
        }
    }
    exit::OK
}

/// The next `count` fires of all enabled jobs together, in time order, each line
/// followed by the job's name.
fn merged_fires(jobs: &[Job], from: DateTime<Utc>, count: usize) -> Vec<String> {
    let mut all: Vec<(DateTime<Utc>, &Job)> = jobs
        .iter()
        .filter(|job| job.enabled)
        .flat_map(|job| {
            job.schedule
                .fires_after(job.timezone, from)
                .take(count)
                .map(move |at| (at, job))
        })
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    all.into_iter()
        .take(count)
        .map(|(at, job)| format!("{} {}", format_fire(at, job.timezone), job.name))
        .collect()
}
