//! The state store at the binary's edge: opening it for `chime run` (interrupted runs,
//! catch-up facts, the writer thread), and `chime status` / `chime history`, which
//! read it beside a running service (WAL) or without one.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;
use serde::Serialize;
use serde_json::Value;

use super::{Settings, exit, load_or_report, parse_duration_arg, print_error};
use crate::daemon::Resume;
use crate::events::{Event, Events};
use crate::job::Job;
use crate::state::location::{self, StateDir};
use crate::state::writer::{self, Retention, WriterThread};
use crate::state::{
    HistoryQuery, JobSummary, RunRecord, SqliteStore, Store, StoreError, Write, leftover,
};

mod output;
use output::Stamp;

#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// A job's name or a run id (default: every job).
    pub target: Option<String>,
    /// How many runs to show.
    #[arg(short = 'n', default_value_t = 20)]
    pub count: usize,
    /// Only runs started since: an RFC 3339 time, or a duration ago (`2h`, `1d`).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// Only runs that did not succeed.
    #[arg(long)]
    pub failed: bool,
    /// One JSON object per run, one a line.
    #[arg(long)]
    pub json: bool,
}

fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let ago = parse_duration_arg(text).map_err(|_| {
        format!("`{text}` is neither an RFC 3339 time nor a duration; write e.g. 2026-03-28T12:00:00Z or 2h")
    })?;
    let ago = chrono::TimeDelta::from_std(ago).map_err(|e| e.to_string())?;
    Ok(Utc::now() - ago)
}

/// The state directory the settings name, or `None` for `--state-dir none`.
fn state_dir(settings: &Settings) -> Option<PathBuf> {
    match location::resolve(
        settings.state_dir.as_deref(),
        &location::Env::from_process(),
    ) {
        StateDir::None => None,
        StateDir::At(dir) => Some(dir),
    }
}

/// What `chime run` keeps of the store while it serves.
pub(super) struct Running {
    pub thread: WriterThread,
}

/// Opens the store for `chime run`: interrupted runs become `interrupted` (with
/// `run.interrupted`), the last handled fires are read for catch-up, and the writer
/// thread starts. `events` is wrapped to record runs. A store that cannot be opened is
/// `state.failed`; the service runs on and the writer tries again later.
pub(super) fn start(settings: &Settings, events: &mut Events) -> (Option<Running>, Resume) {
    let Some(dir) = state_dir(settings) else {
        return (None, Resume::default());
    };
    let mut resume = Resume::default();
    let path = location::db_path(&dir);
    let opened = location::prepare(&dir).and_then(|path| writer::open_or_replace(&path, events));
    let store = match opened {
        Ok(mut store) => {
            take_over(&mut store, events, &mut resume);
            Some(store)
        }
        Err(err) => {
            events.emit(Event::StateFailed {
                what: format!("opening the state database {}", path.display()),
                error: err.to_string(),
                fix: format!(
                    "{}; until then nothing is recorded and catch-up has nothing to go on",
                    err.fix()
                ),
                dropped: 0,
            });
            None
        }
    };
    let retention = Retention {
        keep: settings.history_keep,
        keep_runs: settings.history_keep_runs,
    };
    match WriterThread::start(
        &path,
        store,
        events.clone(),
        retention,
        writer::DEFAULT_QUEUE,
    ) {
        Ok(thread) => {
            *events = thread.writer().recording(events.clone());
            (Some(Running { thread }), resume)
        }
        Err(err) => {
            events.emit(Event::StateFailed {
                what: "starting the state writer thread".into(),
                error: err.to_string(),
                fix: "nothing is recorded this time; check the process's thread limit".into(),
                dropped: 0,
            });
            (None, resume)
        }
    }
}

/// Runs left `running` by the chime before become `interrupted`; the last handled
/// fires are read.
fn take_over(store: &mut SqliteStore, events: &Events, resume: &mut Resume) {
    let unfinished = store.unfinished_runs().unwrap_or_else(|err| {
        events.emit(Event::StateFailed {
            what: "reading unfinished runs".into(),
            error: err.to_string(),
            fix: err.fix().into(),
            dropped: 0,
        });
        Vec::new()
    });
    let keys: Vec<_> = unfinished
        .iter()
        .map(|run| (run.run_id.clone(), run.pid, run.pid_start))
        .collect();
    let alive = leftover::find(&keys);
    let now = Utc::now();
    let writes: Vec<Write> = unfinished
        .iter()
        .map(|run| Write::Interrupted {
            run_id: run.run_id.clone(),
            at: now,
        })
        .collect();
    if let Err(err) = store.apply(&writes) {
        events.emit(Event::StateFailed {
            what: "marking unfinished runs interrupted".into(),
            error: err.to_string(),
            fix: err.fix().into(),
            dropped: 0,
        });
    }
    for run in &unfinished {
        let group = alive.get(&run.run_id);
        events.emit(Event::RunInterrupted {
            job: run.job.as_str().into(),
            run_id: run.run_id.as_str().into(),
            scheduled_at: run.scheduled_at,
            still_running: group.is_some(),
            pid: group.map(|g| g.pgid as u32),
        });
        if let Some(group) = group {
            resume.leftovers.push((run.job.clone(), *group));
        }
    }
    match store.paused_jobs() {
        Ok(paused) => resume.paused = paused,
        Err(err) => events.emit(Event::StateFailed {
            what: "reading the paused jobs".into(),
            error: err.to_string(),
            fix: format!("{}; every job runs until paused again", err.fix()),
            dropped: 0,
        }),
    }
    match store.last_successes() {
        Ok(last) => resume.last_success = last,
        Err(err) => events.emit(Event::StateFailed {
            what: "reading the jobs' last successes".into(),
            error: err.to_string(),
            fix: format!(
                "{}; chime_last_success_timestamp_seconds starts empty",
                err.fix()
            ),
            dropped: 0,
        }),
    }
    match store.last_handled() {
        Ok(handled) => resume.last_handled = handled,
        Err(err) => events.emit(Event::StateFailed {
            what: "reading the last handled fires".into(),
            error: err.to_string(),
            fix: format!("{}; no catch-up this time", err.fix()),
            dropped: 0,
        }),
    }
}

/// Opens the database for reading; `Ok(None)` when there is none yet.
fn open_reader(settings: &Settings) -> Result<Option<SqliteStore>, u8> {
    let Some(dir) = state_dir(settings) else {
        eprintln!("error: --state-dir none: there is no history to read");
        return Err(exit::USAGE);
    };
    read_only_store(&dir).map_err(|err| {
        print_error(&err);
        exit::FAILED
    })
}

/// The database in the state directory `dir`, read-only; `Ok(None)` when there is none yet.
fn read_only_store(dir: &Path) -> Result<Option<SqliteStore>, StoreError> {
    let path = location::db_path(dir);
    if !path.is_file() {
        return Ok(None);
    }
    SqliteStore::open_read_only(&path).map(Some)
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// "in 3 min", "5 h ago".
fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (at - now).num_seconds();
    if secs == 0 {
        return "now".into();
    }
    let span = secs.unsigned_abs();
    let amount = match span {
        0..60 => format!("{span} s"),
        60..3600 => format!("{} min", span / 60),
        3600..86_400 => format!("{} h", span / 3600),
        _ => format!("{} d", span / 86_400),
    };
    if secs >= 0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

fn duration(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 1000 => format!("{ms}ms"),
        Some(ms) if ms < 60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) => format!("{}m{}s", ms / 60_000, ms % 60_000 / 1000),
    }
}

/// A run as `--json` prints it.
#[derive(Serialize)]
struct RunJson<'a> {
    job: &'a str,
    run_id: &'a str,
    scheduled_at: Stamp,
    trigger: &'a str,
    attempts: u32,
    outcome: &'a str,
    exit_code: Option<i32>,
    signal: Option<i32>,
    http_status: Option<u16>,
    error: Option<&'a str>,
    started: Stamp,
    finished: Option<Stamp>,
    duration_ms: Option<u64>,
    lateness_ms: f64,
    pid: Option<u32>,
    output_tail: Option<&'a str>,
}

fn run_json(run: &RunRecord) -> RunJson<'_> {
    RunJson {
        job: &run.job,
        run_id: &run.run_id,
        scheduled_at: Stamp::secs(run.scheduled_at),
        trigger: &run.trigger,
        attempts: run.attempts,
        outcome: &run.status,
        exit_code: run.exit_code,
        signal: run.signal,
        http_status: run.http_status,
        error: run.error.as_deref(),
        started: Stamp::millis(run.started),
        finished: run.finished.map(Stamp::millis),
        duration_ms: run.duration_ms,
        lateness_ms: run.lateness_ms,
        pid: run.pid,
        output_tail: run.output_tail.as_deref(),
    }
}

/// A job as `status --json` prints it.
#[derive(Serialize)]
struct StatusJson<'a> {
    job: &'a str,
    schedule: &'a str,
    zone: &'a str,
    enabled: bool,
    next_fire: Option<Stamp>,
    last_run: Option<RunJson<'a>>,
    running: u32,
    failures_in_row: u32,
    paused: bool,
    /// While the service answers: its runs of the job in flight (pid, elapsed time).
    runs_in_flight: &'a [&'a Value],
    /// Whether the service answered (else only stored facts are shown).
    live: bool,
}

fn json_line(out: &mut impl std::io::Write, value: &impl Serialize) {
    if serde_json::to_writer(&mut *out, value).is_ok() {
        let _ = out.write_all(b"\n");
    }
}

/// The stored facts of every job, read on a thread of their own while the schedule
/// files load; none when there is no database yet.
fn stored_summaries(dir: &Path) -> Result<Vec<JobSummary>, StoreError> {
    Ok(match read_only_store(dir)? {
        Some(store) => store.job_summaries()?,
        None => Vec::new(),
    })
}

/// What the running service says, for every job line.
struct Live<'a> {
    /// Whether it answered.
    answered: bool,
    /// Its runs in flight, by job.
    runs: HashMap<&'a str, Vec<&'a Value>>,
    /// Its paused jobs; `None` when it did not answer (the store's then).
    paused: Option<HashSet<&'a str>>,
}

/// `chime status`.
pub(super) fn status(paths: &[PathBuf], json_out: bool, settings: &Settings) -> u8 {
    if settings.cluster.is_some() {
        return super::cluster::status(paths, json_out, settings);
    }
    // The process ends right after: what loading frees is kept for reuse, not handed
    // back to the OS after each file only to be faulted in again for the next.
    crate::memory::keep_freed();
    // Stateless (`--state-dir none`): only what the service itself tells. Otherwise the
    // store is read beside the load, which takes most of the time with many jobs.
    let dir = state_dir(settings);
    let (config, stored) = std::thread::scope(|scope| {
        let stored = dir.as_deref().map(|dir| {
            std::thread::Builder::new()
                .spawn_scoped(scope, || stored_summaries(dir))
                .map_err(|_| dir)
        });
        let config = load_or_report(paths, settings);
        let stored = stored.map(|thread| match thread {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // No thread to spare: read here.
            Err(dir) => stored_summaries(dir),
        });
        (config, stored)
    });
    let Some(config) = config else {
        return exit::FAILED;
    };
    let mut summaries = match stored {
        None => Vec::new(),
        Some(Ok(all)) => all,
        Some(Err(err)) => {
            print_error(&err);
            return exit::FAILED;
        }
    };
    // While the service runs, its live facts (runs in flight, pauses) come first.
    let live = match super::control::live_status(settings) {
        Ok(live) => live,
        Err(code) => return code,
    };
    let mut live_facts = Live {
        answered: live.is_some(),
        runs: HashMap::new(),
        paused: None,
    };
    let live_runs: &[Value] = live
        .as_ref()
        .and_then(|live| live.get("running"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    for run in live_runs {
        if let Some(job) = run.get("job").and_then(Value::as_str) {
            live_facts.runs.entry(job).or_default().push(run);
        }
    }
    live_facts.paused = live.as_ref().map(|live| {
        live.get("paused")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    });
    let now = Utc::now();
    // Jobs and stored summaries both by name (unique on each side), joined in one pass.
    let mut jobs: Vec<&Job> = config.jobs.iter().collect();
    jobs.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    summaries.sort_unstable_by(|a, b| a.job.cmp(&b.job));
    let mut stored = summaries.iter().peekable();
    let lines: Vec<(&Job, Option<&JobSummary>)> = jobs
        .into_iter()
        .map(|job| {
            while stored.next_if(|s| s.job < job.name).is_some() {}
            (job, stored.next_if(|s| s.job == job.name))
        })
        .collect();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let widths = Widths::of(lines.iter().map(|(job, _)| *job));
    if !json_out {
        let _ = writeln!(
            out,
            "{:<job$} {:<schedule$} {:<zone$} {:<25} {:<11} {:<25} {:<11} {:<11} {:>8} {:>9} {:>7} {:>5} PAUSED",
            "JOB",
            "SCHEDULE",
            "ZONE",
            "NEXT",
            "LEFT",
            "LAST",
            "PASSED",
            "OUTCOME",
            "DURATION",
            "LATENESS",
            "RUNNING",
            "FAILS",
            job = widths.job,
            schedule = widths.schedule,
            zone = widths.zone,
        );
    }
    let _ = output::write_in_order(&mut out, &lines, |text, &(job, summary)| {
        status_line(
            text,
            job,
            summary,
            &live_facts,
            now,
            (!json_out).then_some(&widths),
        );
    });
    if !json_out {
        if !live_facts.answered {
            eprintln!("(the service does not answer on its control socket: stored facts only)");
        } else if !live_runs.is_empty() {
            let _ = writeln!(out, "\nRUNS IN FLIGHT");
            for run in live_runs {
                let field = |key: &str| {
                    run.get(key).map_or(String::from("-"), |v| match v {
                        Value::String(s) => s.clone(),
                        Value::Null => "-".into(),
                        other => other.to_string(),
                    })
                };
                // With replicas, each run says which one runs it.
                let on = run
                    .get("member")
                    .and_then(Value::as_str)
                    .map_or(String::new(), |m| format!(" on {m}"));
                let _ = writeln!(
                    out,
                    "{:<16} {:<job_w$} pid {:<8} {:<9} running for {}{on}",
                    field("run_id"),
                    field("job"),
                    field("pid"),
                    field("trigger"),
                    duration(run.get("elapsed_ms").and_then(Value::as_u64)),
                    job_w = widths.job,
                );
            }
        }
    }
    let _ = out.flush();
    exit::OK
}

/// One job's line of `chime status`, JSON or text.
/// The text table's widths of its variable columns: each as wide as its longest value,
/// so that long job names, schedules and zones keep the columns aligned.
struct Widths {
    job: usize,
    schedule: usize,
    zone: usize,
}

impl Widths {
    fn of<'a>(jobs: impl Iterator<Item = &'a Job>) -> Widths {
        let mut widths = Widths {
            job: "JOB".len(),
            schedule: "SCHEDULE".len(),
            zone: "ZONE".len(),
        };
        for job in jobs {
            widths.job = widths.job.max(job.name.chars().count());
            widths.schedule = widths.schedule.max(job.schedule_text.chars().count());
            widths.zone = widths.zone.max(job.timezone.name().chars().count());
        }
        widths
    }
}

/// One job's line: JSON when `text` is `None`, else a table row with those widths.
fn status_line(
    out: &mut Vec<u8>,
    job: &Job,
    summary: Option<&JobSummary>,
    live: &Live<'_>,
    now: DateTime<Utc>,
    text: Option<&Widths>,
) {
    let next = if job.enabled {
        job.schedule.next_after(job.timezone, now)
    } else {
        None
    };
    let last = summary.and_then(|s| s.last_run.as_ref());
    let in_flight = live
        .runs
        .get(job.name.as_str())
        .map_or(&[][..], Vec::as_slice);
    let running = if live.answered {
        in_flight.len() as u32
    } else {
        summary.map_or(0, |s| s.running)
    };
    let paused = match &live.paused {
        Some(paused) => paused.contains(job.name.as_str()),
        None => summary.is_some_and(|s| s.paused),
    };
    let fails = summary.map_or(0, |s| s.failures_in_row);
    let Some(widths) = text else {
        let line = StatusJson {
            job: &job.name,
            schedule: &job.schedule_text,
            zone: job.timezone.name(),
            enabled: job.enabled,
            next_fire: next.map(Stamp::secs),
            last_run: last.map(run_json),
            running,
            failures_in_row: fails,
            paused,
            runs_in_flight: in_flight,
            live: live.answered,
        };
        json_line(out, &line);
        return;
    };
    let (next_at, left) = match next {
        Some(at) => (super::format_fire(at, job.timezone), relative(at, now)),
        None if !job.enabled => ("disabled".into(), "-".into()),
        None => ("-".into(), "-".into()),
    };
    let (last_at, passed, outcome, took, late) = match last {
        Some(run) => (
            super::format_fire(
                run.started
                    - chrono::TimeDelta::nanoseconds(i64::from(
                        run.started.timestamp_subsec_nanos(),
                    )),
                job.timezone,
            ),
            relative(run.started, now),
            run.status.clone(),
            duration(run.duration_ms),
            format!("{:.0}ms", run.lateness_ms),
        ),
        None => (
            "never".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ),
    };
    let _ = writeln!(
        out,
        "{:<job_w$} {:<schedule_w$} {:<zone_w$} {:<25} {:<11} {:<25} {:<11} {:<11} {:>8} {:>9} {:>7} {:>5} {}",
        job.name,
        job.schedule_text,
        job.timezone.name(),
        next_at,
        left,
        last_at,
        passed,
        outcome,
        took,
        late,
        running,
        fails,
        if paused { "paused" } else { "-" },
        job_w = widths.job,
        schedule_w = widths.schedule,
        zone_w = widths.zone,
    );
}

/// `chime history`.
pub(super) fn history(args: &HistoryArgs, settings: &Settings) -> u8 {
    if settings.cluster.is_some() {
        return super::cluster::history(args, settings);
    }
    let store = match open_reader(settings) {
        Ok(Some(store)) => store,
        Ok(None) => {
            if !args.json {
                eprintln!("no history yet");
            }
            return exit::OK;
        }
        Err(code) => return code,
    };
    let mut query = HistoryQuery {
        since: args.since,
        failed_only: args.failed,
        limit: args.count,
        ..HistoryQuery::default()
    };
    // A run id names one run; anything else is a job.
    let mut one_run = false;
    if let Some(target) = &args.target {
        let by_id = HistoryQuery {
            run_id: Some(target.clone()),
            limit: 1,
            ..HistoryQuery::default()
        };
        match store.runs(&by_id) {
            Ok(found) if !found.is_empty() => {
                one_run = true;
                query = by_id;
            }
            Ok(_) => query.job = Some(target.clone()),
            Err(err) => {
                print_error(&err);
                return exit::FAILED;
            }
        }
    }
    let runs = match store.runs(&query) {
        Ok(runs) => runs,
        Err(err) => {
            print_error(&err);
            return exit::FAILED;
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        for run in &runs {
            json_line(&mut out, &run_json(run));
        }
    } else if one_run {
        for run in &runs {
            print_run(&mut out, run);
        }
    } else {
        let job_w = runs
            .iter()
            .map(|run| run.job.chars().count())
            .fold("JOB".len(), usize::max);
        let _ = writeln!(
            out,
            "{:<24} {:<job_w$} {:<16} {:<9} {:<11} {:>8} {:>8} {:>9}  DETAIL",
            "STARTED", "JOB", "RUN_ID", "TRIGGER", "OUTCOME", "ATTEMPTS", "DURATION", "LATENESS"
        );
        for run in &runs {
            let _ = writeln!(
                out,
                "{:<24} {:<job_w$} {:<16} {:<9} {:<11} {:>8} {:>8} {:>9}  {}",
                run.started.to_rfc3339_opts(SecondsFormat::Secs, true),
                run.job,
                run.run_id,
                run.trigger,
                run.status,
                run.attempts,
                duration(run.duration_ms),
                format!("{:.0}ms", run.lateness_ms),
                detail(run)
            );
        }
        if runs.is_empty() && args.target.is_some() {
            let _ = writeln!(
                out,
                "(no runs recorded for {})",
                query.job.unwrap_or_default()
            );
        }
    }
    let _ = out.flush();
    exit::OK
}

fn detail(run: &RunRecord) -> String {
    let mut parts = Vec::new();
    if let Some(code) = run.exit_code {
        parts.push(format!("exit {code}"));
    }
    if let Some(signal) = run.signal {
        parts.push(format!("signal {signal}"));
    }
    if let Some(status) = run.http_status {
        parts.push(format!("http {status}"));
    }
    if let Some(error) = &run.error {
        parts.push(error.clone());
    }
    parts.join(", ")
}

fn print_run(out: &mut impl std::io::Write, run: &RunRecord) {
    let _ = writeln!(out, "run {} of {}", run.run_id, run.job);
    let _ = writeln!(out, "  scheduled  {}", time(run.scheduled_at));
    let _ = writeln!(out, "  trigger    {}", run.trigger);
    let _ = writeln!(
        out,
        "  started    {} ({:.0}ms late)",
        run.started.to_rfc3339_opts(SecondsFormat::Millis, true),
        run.lateness_ms
    );
    if let Some(finished) = run.finished {
        let _ = writeln!(
            out,
            "  finished   {} after {}",
            finished.to_rfc3339_opts(SecondsFormat::Millis, true),
            duration(run.duration_ms)
        );
    }
    let _ = writeln!(out, "  attempts   {}", run.attempts);
    let _ = writeln!(out, "  outcome    {} {}", run.status, detail(run));
    if let Some(pid) = run.pid {
        let _ = writeln!(out, "  pid        {pid}");
    }
    if let Some(tail) = run.output_tail.as_deref().filter(|t| !t.is_empty()) {
        let _ = writeln!(out, "  output (last {} bytes):", tail.len());
        for line in tail.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
}
