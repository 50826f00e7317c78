//! The state store's section of `cargo bench --bench lateness` (issue 14), run in the
//! same child processes as the rest:
//! - the 10,000-job burst with the store off and on, interleaved (off, on, off, on …,
//!   5 repeats each): the median over repeats of each run's p99;
//! - the writer alone, fed 10,000 runs a second (start, one output line, end) through
//!   its bounded queue: runs applied per second, writes dropped, time to drain; and the
//!   database's size per million runs;
//! - `chime status --json` with 100,000 jobs, each with a run in the store: 5 runs,
//!   each one's wall time and CPU time (user + sys, from `RUSAGE_CHILDREN`), with the
//!   load average beside them (the wall time means little on a busy machine).
//!
//! `CHIME_BENCH_STATE=only` runs only this section, `0` skips it.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chime::events::{Event, ExitDetail, Outcome, Stream, Trigger};
use chime::state::writer::{self, Retention, WriterThread};
use chime::state::{RunStart, SqliteStore, Store, Write};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::{SchedResult, Stats, run_child, sched_chime_with, write_yaml};

const BURST_JOBS: usize = 10_000;
const REPEATS: usize = 5;
const WRITER_RATE: u64 = 10_000;
const STATUS_JOBS: usize = 100_000;
const STATUS_RUNS: usize = 5;

/// The store for a child's burst run: a writer on a fresh database in a temp dir.
pub fn burst(jobs: usize, secs: u64, store: bool) -> SchedResult {
    if !store {
        return sched_chime_with(jobs, secs, |events| events);
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = chime::state::location::prepare(dir.path()).expect("the db dir");
    let opened = SqliteStore::open(&path).expect("the store opens");
    let thread = WriterThread::start(
        &path,
        Some(opened),
        chime::events::Events::discard(),
        Retention::default(),
        writer::DEFAULT_QUEUE,
    )
    .expect("the writer starts");
    let writer = thread.writer();
    let result = sched_chime_with(jobs, secs, move |events| writer.recording(events));
    thread.close();
    result
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriterResult {
    runs: u64,
    offered_s: f64,
    drained_s: f64,
    applied_writes: u64,
    dropped: u64,
    db_bytes: u64,
}

/// The writer fed `rate` runs a second for `secs` seconds.
pub fn writer_throughput(rate: u64, secs: u64) -> WriterResult {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = chime::state::location::prepare(dir.path()).expect("the db dir");
    let opened = SqliteStore::open(&path).expect("the store opens");
    let thread = WriterThread::start(
        &path,
        Some(opened),
        chime::events::Events::discard(),
        Retention {
            keep: Duration::from_secs(86_400 * 365),
            keep_runs: usize::MAX,
        },
        writer::DEFAULT_QUEUE,
    )
    .expect("the writer starts");
    let writer = thread.writer();
    let jobs: Vec<Arc<str>> = (0..1000)
        .map(|i| Arc::from(format!("job-{i:04}")))
        .collect();
    let start = Instant::now();
    let total = rate * secs;
    for n in 0..total {
        // Paced: run n is due at n / rate seconds.
        let due = Duration::from_secs_f64(n as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let job = Arc::clone(&jobs[n as usize % jobs.len()]);
        let run_id = chime::run::new_run_id();
        let now = Utc::now();
        writer.observe(&Event::RunStarted {
            job: Arc::clone(&job),
            run_id: Arc::clone(&run_id),
            trigger: Trigger::Schedule,
            scheduled_at: now,
            lateness_ms: 0.5,
            attempt: 1,
            queued_ms: None,
            pid: None,
            caller_uid: None,
        });
        writer.observe(&Event::RunOutput {
            job: Arc::clone(&job),
            run_id: Arc::clone(&run_id),
            stream: Stream::Stdout,
            line: format!("backup of {job} done: 1234 files"),
        });
        writer.observe(&Event::RunFinished {
            job,
            run_id,
            attempts: 1,
            outcome: Outcome::Success,
            detail: ExitDetail {
                exit_code: Some(0),
                ..ExitDetail::default()
            },
            duration_ms: 12,
            output_bytes: 30,
            truncated: false,
            by: None,
            caller_uid: None,
        });
    }
    let offered_s = start.elapsed().as_secs_f64();
    writer.flush(Duration::from_secs(600));
    let drained_s = start.elapsed().as_secs_f64();
    let (applied_writes, dropped) = writer.counts();
    thread.close();
    let db_bytes = std::fs::read_dir(path.parent().expect("db/"))
        .expect("read db/")
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    WriterResult {
        runs: total,
        offered_s,
        drained_s,
        applied_writes,
        dropped,
        db_bytes,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResult {
    jobs: usize,
    status_s: Vec<f64>,
    /// User + sys CPU seconds of each run.
    cpu_s: Vec<f64>,
    /// The 1-minute load average before the first run and after the last.
    load: (f64, f64),
    ok: bool,
}

/// CPU seconds (user + sys) used so far by this process's waited-for children.
fn children_cpu_s() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and a pointer to a live struct.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `chime status --json` over `jobs` jobs, each with one run in the store (5 tries).
pub fn status(jobs: usize) -> StatusResult {
    let dir = tempfile::tempdir().expect("a temp dir");
    let schedules = dir.path().join("schedules");
    std::fs::create_dir(&schedules).expect("mkdir");
    write_yaml(&schedules, jobs, 10, |i| {
        format!("  job-{i:06}:\n    schedule: \"*/5 * * * *\"\n    command: \"true\"\n")
    });
    let state = dir.path().join("state");
    let path = chime::state::location::prepare(&state).expect("the db dir");
    let mut store = SqliteStore::open(&path).expect("the store opens");
    let now = Utc::now();
    let writes: Vec<Write> = (0..jobs)
        .flat_map(|i| {
            let run_id = format!("{i:016x}");
            [
                Write::Started(RunStart {
                    job: format!("job-{i:06}"),
                    run_id: run_id.clone(),
                    scheduled_at: now,
                    trigger: "schedule".into(),
                    attempt: 1,
                    started: now,
                    lateness_ms: 1.0,
                    pid: None,
                    pid_start: None,
                }),
                Write::Finished(chime::state::RunEnd {
                    run_id,
                    attempts: 1,
                    outcome: "success".into(),
                    exit_code: Some(0),
                    signal: None,
                    http_status: None,
                    error: None,
                    finished: now,
                    duration_ms: 5,
                    output_tail: "ok\n".into(),
                }),
            ]
        })
        .collect();
    for chunk in writes.chunks(20_000) {
        store.apply(chunk).expect("the runs are written");
    }
    drop(store);
    let mut status_s = Vec::new();
    let mut cpu_s = Vec::new();
    let mut ok = true;
    let load_before = load_average();
    for _ in 0..STATUS_RUNS {
        let cpu_before = children_cpu_s();
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_chime"))
            .arg("--state-dir")
            .arg(&state)
            .arg("status")
            .arg(&schedules)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
            .expect("chime status runs");
        status_s.push(started.elapsed().as_secs_f64());
        cpu_s.push(children_cpu_s() - cpu_before);
        let lines = out.stdout.iter().filter(|&&b| b == b'\n').count();
        ok &= out.status.success() && lines == jobs;
    }
    StatusResult {
        jobs,
        status_s,
        cpu_s,
        load: (load_before, load_average()),
        ok,
    }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

/// Runs this section's children and renders its report.
pub fn section(secs: u64, quick: bool) -> String {
    let repeats = if quick { 2 } else { REPEATS };
    let jobs = if quick { 1_000 } else { BURST_JOBS };
    let mut off = Vec::new();
    let mut on = Vec::new();
    for _ in 0..repeats {
        for (store, into) in [(false, &mut off), (true, &mut on)] {
            let spec = format!("state-burst {jobs} {secs} {}", u8::from(store));
            let p99 = run_child::<SchedResult>(&spec, secs)
                .and_then(|r| Stats::of(r.lateness_ms.iter().map(|&v| f64::from(v)).collect()))
                .map(|s| s.p99);
            into.push(p99);
        }
    }
    let off: Vec<f64> = off.into_iter().flatten().collect();
    let on: Vec<f64> = on.into_iter().flatten().collect();
    let writer_secs = secs.max(2);
    let written: Option<WriterResult> = run_child(
        &format!("state-writer {WRITER_RATE} {writer_secs}"),
        writer_secs,
    );
    let status_jobs = if quick { 10_000 } else { STATUS_JOBS };
    let status: Option<StatusResult> = run_child(&format!("state-status {status_jobs}"), 90);

    let mut out = String::from("\n## State store (issue 14)\n\n");
    let f = |v: Option<f64>| v.map_or("failed".to_string(), |v| format!("{v:.2}"));
    let (off_m, on_m) = (median(off.clone()), median(on.clone()));
    out.push_str(&format!(
        "{jobs}-job burst, fire lateness p99 (ms), {repeats} interleaved repeats:\n\n\
         | store | p99 per repeat | median |\n|---|---|---|\n\
         | off | {off:.2?} | {} |\n| on | {on:.2?} | {} |\n\n",
        f(off_m),
        f(on_m)
    ));
    if let (Some(a), Some(b)) = (off_m, on_m) {
        out.push_str(&format!(
            "store on vs off: {:+.1} % (target: within 10 %)\n\n",
            (b - a) / a * 100.0
        ));
    }
    match written {
        Some(w) => out.push_str(&format!(
            "Writer fed {WRITER_RATE} runs/s for {writer_secs} s ({} runs, {} writes): offered in {:.2} s, \
             all applied {:.2} s after the start ({:.0} runs/s), {} dropped; database {:.1} MB per million runs \
             (runs with a one-line output tail)\n\n",
            w.runs,
            w.applied_writes,
            w.offered_s,
            w.drained_s,
            w.runs as f64 / w.drained_s,
            w.dropped,
            w.db_bytes as f64 / w.runs as f64 * 1e6 / 1e6
        )),
        None => out.push_str("Writer workload failed\n\n"),
    }
    match status {
        Some(s) => out.push_str(&format!(
            "`chime status --json` with {} jobs (each with a run stored), {} runs: wall {:.2?} s \
             (median {}; target ≤ 1 s), CPU user+sys {:.2?} s (median {}), load average {:.1} → {:.1} ({})\n",
            s.jobs,
            s.status_s.len(),
            s.status_s,
            f(median(s.status_s.clone())),
            s.cpu_s,
            f(median(s.cpu_s.clone())),
            s.load.0,
            s.load.1,
            if s.ok { "all lines" } else { "WRONG OUTPUT" }
        )),
        None => out.push_str("status workload failed\n"),
    }
    out
}

/// The child workloads of this section; `None` for a spec that is not one of them.
pub fn child(words: &[&str]) -> Option<serde_json::Result<String>> {
    let number = |i: usize| -> u64 {
        words
            .get(i)
            .and_then(|w| w.parse().ok())
            .expect("the parent writes well-formed workload specs")
    };
    Some(match words.first().copied()? {
        "state-burst" => {
            serde_json::to_string(&burst(number(1) as usize, number(2), number(3) == 1))
        }
        "state-writer" => serde_json::to_string(&writer_throughput(number(1), number(2))),
        "state-status" => serde_json::to_string(&status(number(1) as usize)),
        _ => return None,
    })
}
