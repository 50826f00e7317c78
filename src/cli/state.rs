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
use crate::cluster::ClusterOptions;
use crate::cluster::store::{PgStore, PgTarget};
use crate::daemon::Resume;
use crate::events::{Event, Events};
use crate::job::Job;
use crate::state::location::{self, StateDir};
use crate::state::writer::{self, Retention, SqliteTarget, Target, WriterThread};
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
    let path = location::db_path(&dir);
    let opened = location::prepare(&dir)
        .and_then(|path| writer::open_or_replace(&path, events))
        .map(|store| Box::new(store) as Box<dyn Store>);
    let opening = Some(format!("opening the state database {}", path.display()));
    let target = Box::new(SqliteTarget(path));
    start_writer(target, opened, opening, retention(settings), events)
}

pub(super) fn retention(settings: &Settings) -> Retention {
    Retention {
        keep: settings.history_keep,
        keep_runs: settings.history_keep_runs,
    }
}

/// With `--cluster`: the same over the cluster's PostgreSQL (this member's runs left
/// `running` by its previous life become `interrupted`). Connects, so it blocks: call
/// it off the runtime's workers. Returns `events` wrapped to record runs.
pub(super) fn start_cluster(
    options: ClusterOptions,
    retention: Retention,
    mut events: Events,
) -> (Option<Running>, Resume, Events) {
    let target = PgTarget {
        options: options.clone(),
    };
    let opened = PgStore::open(&options, Some(&options.member)).map(|mut store| {
        if let Err(err) = store.release_claims() {
            let what = "releasing this member's claims left by its previous start";
            say(&target, &events, &err, what, "");
        }
        Box::new(store) as Box<dyn Store>
    });
    // A database that cannot be reached at start is reported by the claims' connection
    // (`cluster.failed`, retried with backoff); the writer says so itself only when
    // there is history to write.
    let (state, resume) = start_writer(Box::new(target), opened, None, retention, &mut events);
    (state, resume, events)
}

/// A failure while opening or reading the store, in its target's terms
/// (`state.failed`, or `cluster.failed`).
fn say(target: &dyn Target, events: &Events, err: &StoreError, what: &str, then: &str) {
    target.report(
        events,
        what.to_string(),
        err.to_string(),
        format!("{}{then}", err.fix()),
        0,
    );
}

/// Takes over from the store as opened (or says why it is not, with `opening`: what
/// was being done) and starts its writer.
fn start_writer(
    target: Box<dyn Target>,
    opened: Result<Box<dyn Store>, StoreError>,
    opening: Option<String>,
    retention: Retention,
    events: &mut Events,
) -> (Option<Running>, Resume) {
    let mut resume = Resume::default();
    let store = match opened {
        Ok(mut store) => {
            take_over(store.as_mut(), target.as_ref(), events, &mut resume);
            Some(store)
        }
        Err(err) => {
            if let Some(opening) = opening {
                say(
                    target.as_ref(),
                    events,
                    &err,
                    &opening,
                    "; until then nothing is recorded and catch-up has nothing to go on",
                );
            }
            None
        }
    };
    match WriterThread::start_with(
        target,
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
fn take_over(store: &mut dyn Store, target: &dyn Target, events: &Events, resume: &mut Resume) {
    let unfinished = store.unfinished_runs().unwrap_or_else(|err| {
        say(target, events, &err, "reading unfinished runs", "");
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
        say(
            target,
            events,
            &err,
            "marking unfinished runs interrupted",
            "",
        );
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
        Err(err) => say(
            target,
            events,
            &err,
            "reading the paused jobs",
            "; every job runs until paused again",
        ),
    }
    match store.last_successes() {
        Ok(last) => resume.last_success = last,
        Err(err) => say(
            target,
            events,
            &err,
            "reading the jobs' last successes",
            "; chime_last_success_timestamp_seconds starts empty",
        ),
    }
    match store.last_handled() {
        Ok(handled) => resume.last_handled = handled,
        Err(err) => say(
            target,
            events,
            &err,
            "reading the last handled fires",
            "; no catch-up this time",
        ),
    }
}

/// Opens the database for reading (the cluster's with `--cluster`); `Ok(None)` when
/// there is none yet.
fn open_reader(settings: &Settings) -> Result<Option<Box<dyn Store>>, u8> {
    match super::cluster_options(settings) {
        Ok(None) => {}
        Ok(Some(options)) => {
            return match PgStore::open(&options, None) {
                Ok(store) => Ok(Some(Box::new(store))),
                Err(err) => {
                    eprintln!("error: {err}; check --cluster and that the database is up");
                    Err(exit::FAILED)
                }
            };
        }
        Err(message) => {
            eprintln!("error: {message}");
            return Err(exit::USAGE);
        }
    }
    let Some(dir) = state_dir(settings) else {
        eprintln!("error: --state-dir none: there is no history to read");
        return Err(exit::USAGE);
    };
    let path = location::db_path(&dir);
    if !path.is_file() {
        return Ok(None);
    }
    SqliteStore::open_read_only(&path)
        .map(|store| Some(Box::new(store) as Box<dyn Store>))
        .map_err(|err| {
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
    /// With `--cluster`: the replica that ran it.
    #[serde(skip_serializing_if = "Option::is_none")]
    member: Option<&'a str>,
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
        member: None,
    }
}

/// With `--cluster`: the member of each run, as a column (padded) and for `--json`.
struct Members(Option<HashMap<String, String>>);

impl Members {
    fn of<'r>(
        store: Option<&dyn Store>,
        settings: &Settings,
        runs: impl Iterator<Item = &'r RunRecord>,
    ) -> Result<Members, u8> {
        let Some(store) = store.filter(|_| settings.cluster.is_some()) else {
            return Ok(Members(None));
        };
        let ids: Vec<String> = runs.map(|run| run.run_id.clone()).collect();
        match store.run_members(&ids) {
            Ok(members) => Ok(Members(Some(members))),
            Err(err) => {
                print_error(&err);
                Err(exit::FAILED)
            }
        }
    }

    fn get(&self, run_id: &str) -> Option<&str> {
        self.0.as_ref()?.get(run_id).map(String::as_str)
    }

    /// `text` with the MEMBER column after it, when there is one.
    fn column(&self, text: &str, width: usize, member: Option<&str>) -> String {
        match &self.0 {
            None => format!("{text:<width$}"),
            Some(_) => format!("{text:<width$} {:<12}", member.unwrap_or("-")),
        }
    }

    fn json<'a>(&'a self, run: &'a RunRecord) -> RunJson<'a> {
        RunJson {
            member: self.get(&run.run_id),
            ..run_json(run)
        }
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
    /// Whether `runs` are all the runs in flight (the service answered, or the cluster's
    /// database told every replica's).
    runs_known: bool,
    /// With --cluster: which replica ran each last run.
    members: &'a Members,
    /// Its runs in flight, by job.
    runs: HashMap<&'a str, Vec<&'a Value>>,
    /// Its paused jobs; `None` when it did not answer (the store's then).
    paused: Option<HashSet<&'a str>>,
}

/// `chime status`.
pub(super) fn status(paths: &[PathBuf], json_out: bool, settings: &Settings) -> u8 {
    // The process ends right after: what loading frees is kept for reuse, not handed
    // back to the OS after each file only to be faulted in again for the next.
    crate::memory::keep_freed();
    // With --cluster the history is the cluster's database (every replica's runs).
    let cluster = settings.cluster.is_some();
    let (config, store, stored) = if cluster {
        let Some(config) = load_or_report(paths, settings) else {
            return exit::FAILED;
        };
        let store = match open_reader(settings) {
            Ok(store) => store,
            Err(code) => return code,
        };
        let stored = store.as_ref().map(|store| store.job_summaries());
        (config, store, stored)
    } else {
        // Stateless (`--state-dir none`): only what the service itself tells. Otherwise
        // the store is read beside the load, which takes most of the time with many jobs.
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
        (config, None, stored)
    };
    let mut summaries = match stored {
        None => Vec::new(),
        Some(Ok(all)) => all,
        Some(Err(err)) => {
            print_error(&err);
            return exit::FAILED;
        }
    };
    let members = match Members::of(
        store.as_deref(),
        settings,
        summaries.iter().filter_map(|s| s.last_run.as_ref()),
    ) {
        Ok(members) => members,
        Err(code) => return code,
    };
    // While the service runs, its live facts (runs in flight, pauses) come first.
    let live = match super::control::live_status(settings) {
        Ok(live) => live,
        Err(code) => return code,
    };
    // With --cluster, every replica's runs in flight, from the database.
    let cluster_runs: Vec<Value> = match store.as_deref() {
        Some(store) if cluster => match in_flight(store) {
            Ok(runs) => runs,
            Err(code) => return code,
        },
        _ => Vec::new(),
    };
    let mut live_facts = Live {
        answered: live.is_some(),
        runs_known: live.is_some() || cluster,
        runs: HashMap::new(),
        paused: None,
        members: &members,
    };
    let live_runs: &[Value] = if cluster {
        &cluster_runs
    } else {
        live.as_ref()
            .and_then(|live| live.get("running"))
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    };
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
            "{:<job$} {:<schedule$} {:<zone$} {:<25} {:<11} {:<25} {:<11} {} {:>8} {:>9} {:>7} {:>5} PAUSED",
            "JOB",
            "SCHEDULE",
            "ZONE",
            "NEXT",
            "LEFT",
            "LAST",
            "PASSED",
            members.column("OUTCOME", 11, Some("MEMBER")),
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
        if !live_facts.runs_known {
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
                // With replicas, each run says which one runs it: in the MEMBER column
                // with --cluster, else as the local service tells it.
                let on = match run.get("member").and_then(Value::as_str) {
                    Some(m) if !cluster => format!(" on {m}"),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "{:<16} {} pid {:<8} {:<9} running for {}{on}",
                    field("run_id"),
                    members.column(&field("job"), widths.job, Some(&field("member"))),
                    field("pid"),
                    field("trigger"),
                    duration(run.get("elapsed_ms").and_then(Value::as_u64)),
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
    let running = if live.runs_known {
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
            last_run: last.map(|run| live.members.json(run)),
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
        "{:<job_w$} {:<schedule_w$} {:<zone_w$} {:<25} {:<11} {:<25} {:<11} {} {:>8} {:>9} {:>7} {:>5} {}",
        job.name,
        job.schedule_text,
        job.timezone.name(),
        next_at,
        left,
        last_at,
        passed,
        live.members.column(
            &outcome,
            11,
            last.and_then(|run| live.members.get(&run.run_id))
        ),
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
    let members = match Members::of(Some(store.as_ref()), settings, runs.iter()) {
        Ok(members) => members,
        Err(code) => return code,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        for run in &runs {
            json_line(&mut out, &members.json(run));
        }
    } else if one_run {
        for run in &runs {
            print_run(&mut out, run);
            if let Some(member) = members.get(&run.run_id) {
                let _ = writeln!(out, "  member     {member}");
            }
        }
    } else {
        let job_w = runs
            .iter()
            .map(|run| run.job.chars().count())
            .fold("JOB".len(), usize::max);
        let _ = writeln!(
            out,
            "{:<24} {:<job_w$} {} {:<9} {:<11} {:>8} {:>8} {:>9}  DETAIL",
            "STARTED",
            "JOB",
            members.column("RUN_ID", 16, Some("MEMBER")),
            "TRIGGER",
            "OUTCOME",
            "ATTEMPTS",
            "DURATION",
            "LATENESS"
        );
        for run in &runs {
            let _ = writeln!(
                out,
                "{:<24} {:<job_w$} {} {:<9} {:<11} {:>8} {:>8} {:>9}  {}",
                run.started.to_rfc3339_opts(SecondsFormat::Secs, true),
                run.job,
                members.column(&run.run_id, 16, members.get(&run.run_id)),
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

/// With `--cluster`: every replica's runs in flight, as the service's control socket
/// tells its own (with the member).
fn in_flight(store: &dyn Store) -> Result<Vec<Value>, u8> {
    let fail = |err: StoreError| {
        print_error(&err);
        exit::FAILED
    };
    let runs = store.unfinished_runs().map_err(fail)?;
    let ids: Vec<String> = runs.iter().map(|run| run.run_id.clone()).collect();
    let members = store.run_members(&ids).map_err(fail)?;
    let now = Utc::now();
    Ok(runs
        .iter()
        .map(|run| {
            serde_json::json!({
                "run_id": run.run_id,
                "job": run.job,
                "pid": run.pid,
                "trigger": run.trigger,
                "elapsed_ms": (now - run.started).num_milliseconds().max(0),
                "member": members.get(&run.run_id),
            })
        })
        .collect())
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
