//! `cargo bench --bench reload`: does a big reload hold up fires due while it is
//! applied? (issue 9; target: a reload of 100,000 jobs delays no fire by more than 5 ms)
//!
//! A scheduler runs on a thread of its own, on the system clock, as `chime run` runs
//! it, with 100,000 jobs that do not fire during the bench and one probe job firing
//! every 10 ms. Reloads are sent one after another: every job's command changed, then
//! every job renamed (100,000 added and 100,000 removed), alternately. For each probe
//! fire scheduled while a reload was being applied, the bench notes how late its run
//! began (the executor entered, minus the scheduled instant).
//!
//! Side by side, in the same process: the baseline is the same reload applied all at
//! once (`Scheduler::replace_jobs`, what the loop did before it applied reloads in
//! slices): the time it takes is how long every fire due meanwhile waited.
//!
//! `CHIME_BENCH_JOBS` sets the number of jobs (default 100,000); `CHIME_BENCH_ROUNDS`
//! the reloads of each kind (default 5).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chime::clock::{Clock, SystemClock};
use chime::dispatch::Dispatcher;
use chime::events::{Event, Events, ExitDetail};
use chime::exec::{Attempt, AttemptResult, Executor, OutputSink};
use chime::job::{Action, Job, ShellCommand};
use chime::run::RunSettings;
use chime::scheduler::{Command, Scheduler};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

// As the service runs (main.rs): the allocator shapes how freeing replaced jobs costs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PROBE: &str = "probe";

type ProbeFires = Arc<Mutex<Vec<(DateTime<Utc>, DateTime<Utc>)>>>;

/// Probe fires: (scheduled, entered the executor).
#[derive(Clone, Default)]
struct Probe {
    fires: ProbeFires,
}

impl Executor for Probe {
    async fn execute(&self, attempt: Attempt, _output: Arc<OutputSink>) -> AttemptResult {
        let entered = Utc::now();
        if attempt.job.name == PROBE
            && let Ok(mut fires) = self.fires.lock()
        {
            fires.push((attempt.scheduled_at, entered));
        }
        AttemptResult::success(ExitDetail::default())
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `jobs` yearly jobs named `{prefix}-{i}` running `echo {version}`, and the probe.
fn set(jobs: usize, prefix: &str, version: usize) -> Vec<Job> {
    let mut set: Vec<Job> = (0..jobs)
        .map(|i| {
            let action = Action::Shell(ShellCommand::Script(format!("echo {version}")));
            Job::new(format!("{prefix}-{i}"), "0 0 1 1 *", action).expect("a valid schedule")
        })
        .collect();
    let probe = Action::Shell(ShellCommand::Script("true".into()));
    set.push(Job::new(PROBE, "@every 10ms", probe).expect("a valid schedule"));
    set
}

/// The `k`-th reload: even ones change every command, odd ones rename every job.
fn reload_set(jobs: usize, k: usize) -> (&'static str, Vec<Job>) {
    let prefix = if (k / 2).is_multiple_of(2) { "a" } else { "b" };
    if k.is_multiple_of(2) {
        ("every command changed", set(jobs, prefix, k + 1))
    } else {
        let other = if prefix == "a" { "b" } else { "a" };
        ("every job renamed", set(jobs, other, k + 1))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(values, 50.0)
}

fn main() {
    chime::memory::configure_allocator();
    let jobs = env_usize("CHIME_BENCH_JOBS", 100_000);
    let rounds = env_usize("CHIME_BENCH_ROUNDS", 5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let _guard = runtime.enter();

    // Baseline: the same reloads applied all at once, on a scheduler that is not running.
    let mut all_at_once: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    {
        let dispatcher = Dispatcher::new(
            Probe::default(),
            Arc::new(SystemClock),
            Events::discard(),
            RunSettings::default(),
            0,
        );
        let mut scheduler = Scheduler::new(Arc::new(SystemClock), dispatcher, Events::discard());
        scheduler.add_jobs(set(jobs, "a", 0));
        for k in 0..2 * rounds {
            let (_, new) = reload_set(jobs, k);
            let started = Instant::now();
            let counts = scheduler.replace_jobs(new);
            all_at_once[k % 2].push(started.elapsed().as_secs_f64() * 1e3);
            assert!(counts.changed + counts.added >= jobs, "{counts:?}");
        }
    }

    // chime: the loop on its own thread, reloads applied in slices.
    let probe = Probe::default();
    let missed = Arc::new(Mutex::new(Vec::<(DateTime<Utc>, u64)>::new()));
    let events = {
        let missed = Arc::clone(&missed);
        Events::new(move |event| {
            if let Event::RunMissed {
                scheduled_at,
                count,
                ..
            } = event
                && let Ok(mut missed) = missed.lock()
            {
                missed.push((scheduled_at, count));
            }
        })
    };
    let dispatcher = Dispatcher::new(
        probe.clone(),
        Arc::new(SystemClock),
        events.clone(),
        RunSettings::default(),
        0,
    );
    let mut scheduler = Scheduler::new(Arc::new(SystemClock), dispatcher, events);
    scheduler.add_jobs(set(jobs, "a", 0));
    let stop = CancellationToken::new();
    let (commands, command_rx) = tokio::sync::mpsc::channel(1);
    let token = stop.clone();
    let timer_thread = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a timer runtime")
            .block_on(scheduler.run(token, command_rx, None));
    });
    // Reloads are built before they are timed, and between them the probe fires.
    let mut windows: [Vec<(DateTime<Utc>, DateTime<Utc>)>; 2] = [Vec::new(), Vec::new()];
    let mut sliced: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    // The control: the probe while nothing else happens (300 ms before each reload).
    let mut quiet: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for k in 0..2 * rounds {
        let (_, new) = reload_set(jobs, k);
        let quiet_from = SystemClock.now();
        std::thread::sleep(Duration::from_millis(300));
        quiet.push((quiet_from, SystemClock.now()));
        let (reply, counts) = tokio::sync::oneshot::channel();
        let from = SystemClock.now();
        let started = Instant::now();
        commands
            .blocking_send(Command::Replace { jobs: new, reply })
            .expect("the loop takes reloads");
        counts.blocking_recv().expect("the loop answers");
        sliced[k % 2].push(started.elapsed().as_secs_f64() * 1e3);
        windows[k % 2].push((from, SystemClock.now()));
    }
    std::thread::sleep(Duration::from_millis(100));
    stop.cancel();
    timer_thread.join().expect("the timer thread ends");

    let fires = probe.fires.lock().map(|f| f.clone()).unwrap_or_default();
    let missed = missed.lock().map(|m| m.clone()).unwrap_or_default();
    println!(
        "# Reload while firing: {jobs} jobs, probe every 10 ms, {rounds} reloads of each kind\n"
    );
    println!(
        "| reload | all at once: apply ms, median (= the stall of every fire due meanwhile) | sliced: apply ms, median | probe fires during reloads | lateness p50 / p99 / max ms | missed fires |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let late_in = |spans: &[(DateTime<Utc>, DateTime<Utc>)]| -> (Vec<f64>, u64) {
        let inside = |at: &DateTime<Utc>| spans.iter().any(|(a, b)| at > a && at < b);
        let mut late: Vec<f64> = fires
            .iter()
            .filter(|(scheduled, _)| inside(scheduled))
            .map(|(scheduled, entered)| {
                (*entered - *scheduled).num_microseconds().unwrap_or(0) as f64 / 1e3
            })
            .collect();
        late.sort_by(f64::total_cmp);
        let missed = missed
            .iter()
            .filter(|(at, _)| inside(at))
            .map(|(_, count)| count)
            .sum();
        (late, missed)
    };
    let row = |label: &str, once: String, sliced: String, late: &[f64], missed: u64| {
        println!(
            "| {label} | {once} | {sliced} | {} | {:.2} / {:.2} / {:.2} | {missed} |",
            late.len(),
            percentile(late, 50.0),
            percentile(late, 99.0),
            late.last().copied().unwrap_or(f64::NAN),
        );
    };
    let (late, missed_count) = late_in(&quiet);
    row(
        "none (control: the probe alone)",
        "–".into(),
        "–".into(),
        &late,
        missed_count,
    );
    for kind in 0..2 {
        let (late, missed_count) = late_in(&windows[kind]);
        row(
            reload_set(1, kind).0,
            format!("{:.1}", median(&mut all_at_once[kind].clone())),
            format!("{:.1}", median(&mut sliced[kind].clone())),
            &late,
            missed_count,
        );
    }
}
