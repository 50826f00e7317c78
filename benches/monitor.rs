//! `cargo bench --bench monitor`: a `/metrics` scrape with 100,000 jobs loaded, each of
//! which has run once (issue 15; targets: a scrape takes ≤ 250 ms and delays no fire by
//! more than 5 ms).
//!
//! As `chime run --listen` runs it: the scheduler on a thread of its own, on the system
//! clock, with 100,000 yearly jobs and a probe job firing every 10 ms; every event goes
//! through the monitor (`Monitor::observe`), which answers scrapes on its own thread;
//! the HTTP server is the service's (`monitor::http::serve`), on 127.0.0.1. Before the
//! scrapes, each job's run (a `run.started` and a `run.finished`) is reported, so
//! each job has its per-job series. Each scrape is a whole HTTP GET read to its end;
//! between scrapes 300 ms of quiet are the control for the probe's lateness (its
//! scheduled instant → its run entering the executor).
//!
//! `CHIME_BENCH_JOBS` sets the number of jobs (default 100,000); `CHIME_BENCH_ROUNDS`
//! the scrapes (default 10). A smoke run: `CHIME_BENCH_JOBS=10000 CHIME_BENCH_ROUNDS=3`.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chime::clock::{Clock, SystemClock};
use chime::dispatch::Dispatcher;
use chime::events::{Event, Events, ExitDetail, Outcome, Trigger};
use chime::exec::{Attempt, AttemptResult, Executor, OutputSink};
use chime::health::Health;
use chime::job::{Action, Job, ShellCommand};
use chime::monitor::{Monitor, MonitorOptions, http};
use chime::run::RunSettings;
use chime::scheduler::Scheduler;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PROBE: &str = "probe";

type Fires = Arc<Mutex<Vec<(DateTime<Utc>, DateTime<Utc>)>>>;

/// Probe fires: (scheduled, entered the executor).
#[derive(Clone, Default)]
struct Probe {
    fires: Fires,
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// One GET of `/metrics`, read to its end: (milliseconds, body bytes).
fn scrape(addr: std::net::SocketAddr) -> (f64, usize) {
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    let took = started.elapsed().as_secs_f64() * 1e3;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "a scrape answered");
    (took, answer.len())
}

/// CPU time (user + system) of the whole process so far.
fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn main() {
    chime::memory::configure_allocator();
    let jobs = env_usize("CHIME_BENCH_JOBS", 100_000);
    let rounds = env_usize("CHIME_BENCH_ROUNDS", 10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let _guard = runtime.enter();

    let mut set: Vec<Job> = (0..jobs)
        .map(|i| {
            let action = Action::Shell(ShellCommand::Script("true".into()));
            Job::new(format!("job-{i}"), "0 0 1 1 *", action).expect("a valid schedule")
        })
        .collect();
    let probe_action = Action::Shell(ShellCommand::Script("true".into()));
    set.push(Job::new(PROBE, "@every 10ms", probe_action).expect("a valid schedule"));

    let monitor = Monitor::start(
        MonitorOptions {
            metrics: true,
            ..MonitorOptions::default()
        },
        &set,
        Events::discard(),
        runtime.handle().clone(),
    )
    .expect("the monitor starts");
    let events = monitor.observe(Events::discard());
    // Each job has run once.
    let now = Utc::now();
    for job in set.iter().take(jobs) {
        let name: Arc<str> = Arc::from(job.name.as_str());
        let run_id: Arc<str> = chime::run::new_run_id();
        events.emit(Event::RunStarted {
            job: Arc::clone(&name),
            run_id: Arc::clone(&run_id),
            trigger: Trigger::Schedule,
            scheduled_at: now,
            lateness_ms: 0.5,
            attempt: 1,
            queued_ms: None,
            pid: None,
            caller_uid: None,
        });
        events.emit(Event::RunFinished {
            job: name,
            run_id,
            attempts: 1,
            outcome: Outcome::Success,
            detail: ExitDetail::default(),
            duration_ms: 12,
            output_bytes: 0,
            truncated: false,
            by: None,
            caller_uid: None,
        });
    }
    let listener = http::bind("127.0.0.1:0".parse().expect("an address")).expect("bind");
    let addr = listener.local_addr().expect("its address");
    runtime.spawn(http::serve(listener, monitor.clone(), Health::new()));

    let probe = Probe::default();
    let dispatcher = Dispatcher::new(
        probe.clone(),
        Arc::new(SystemClock),
        events.clone(),
        RunSettings::default(),
        0,
    );
    let mut scheduler = Scheduler::new(Arc::new(SystemClock), dispatcher, events);
    scheduler.add_jobs(set);
    let stop = CancellationToken::new();
    let (_commands, command_rx) = tokio::sync::mpsc::channel(1);
    let token = stop.clone();
    let timer_thread = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a timer runtime")
            .block_on(scheduler.run(token, command_rx, None));
    });

    // The first scrape also takes in the runs reported above and computes every job's
    // next fire; it is reported on its own.
    let (first_ms, first_bytes) = scrape(addr);
    let mut took = Vec::new();
    let mut bytes = first_bytes;
    let mut windows = Vec::new();
    let mut quiet = Vec::new();
    for _ in 0..rounds {
        let quiet_from = SystemClock.now();
        std::thread::sleep(Duration::from_millis(300));
        quiet.push((quiet_from, SystemClock.now()));
        let from = SystemClock.now();
        let (ms, size) = scrape(addr);
        windows.push((from, SystemClock.now()));
        took.push(ms);
        bytes = size;
    }
    // The same, without HTTP: the monitor thread's share.
    let mut direct = Vec::new();
    let cpu_before = cpu_seconds();
    for _ in 0..rounds.min(5) {
        let started = Instant::now();
        let text = runtime.block_on(monitor.scrape()).expect("metrics");
        direct.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(!text.is_empty());
    }
    let cpu_per_scrape = (cpu_seconds() - cpu_before) * 1e3 / direct.len() as f64;
    direct.sort_by(f64::total_cmp);
    std::thread::sleep(Duration::from_millis(50));
    stop.cancel();
    timer_thread.join().expect("the timer thread ends");
    took.sort_by(f64::total_cmp);

    let fires = probe.fires.lock().map(|f| f.clone()).unwrap_or_default();
    let late_in = |spans: &[(DateTime<Utc>, DateTime<Utc>)]| -> Vec<f64> {
        let inside = |at: &DateTime<Utc>| spans.iter().any(|(a, b)| at > a && at < b);
        let mut late: Vec<f64> = fires
            .iter()
            .filter(|(scheduled, _)| inside(scheduled))
            .map(|(scheduled, entered)| {
                (*entered - *scheduled).num_microseconds().unwrap_or(0) as f64 / 1e3
            })
            .collect();
        late.sort_by(f64::total_cmp);
        late
    };
    println!("# /metrics with {jobs} jobs, each run once; {rounds} scrapes; probe every 10 ms\n");
    println!(
        "first scrape (takes in {jobs} runs, computes every next fire): {first_ms:.1} ms, {first_bytes} bytes"
    );
    println!(
        "scrapes: median {:.1} ms, max {:.1} ms, {bytes} bytes each (target ≤ 250 ms)\n",
        percentile(&took, 50.0),
        took.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "encoding alone (Monitor::scrape, no HTTP): median {:.1} ms, {cpu_per_scrape:.1} ms of CPU per scrape (the process's, probe included)\n",
        percentile(&direct, 50.0)
    );
    println!("| probe fires | count | lateness p50 / p99 / max ms |");
    println!("|---|---:|---:|");
    for (label, spans) in [("during scrapes", &windows), ("control (quiet)", &quiet)] {
        let late = late_in(spans);
        println!(
            "| {label} | {} | {:.2} / {:.2} / {:.2} |",
            late.len(),
            percentile(&late, 50.0),
            percentile(&late, 99.0),
            late.last().copied().unwrap_or(f64::NAN)
        );
    }
}
