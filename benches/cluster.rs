//! `cargo bench --bench cluster`: 3 replicas of the real binary on one local PostgreSQL
//! (issue 17), 1,000 every-second jobs (`command: "true"`), beside one stateless chime
//! (`--state-dir none`) in the same run, given a third of the jobs so that it starts
//! as many runs a second as each replica does (otherwise the comparison measures the
//! load of spawning three times as many processes, not the claims). Prints:
//! - lateness (`run.started`'s `lateness_ms`: instant → run started, which with
//!   `--cluster` includes the claim's round trip) p50 / p99 / max, clustered and
//!   stateless, and the difference;
//! - database transactions per instant per replica (`pg_stat_database.xact_commit`
//!   over the window: claims, the history writer's batches, heartbeats);
//! - CPU per replica (utime + stime over the window, as % of one core).
//!
//! Needs the test PostgreSQL: `scripts/test-postgres run cargo bench --bench cluster`.
//! Settings: `CHIME_BENCH_SECS` (measured seconds, default 30), `CHIME_BENCH_JOBS`
//! (default 1000), `CHIME_BENCH_QUICK=1` (10 s, 200 jobs: a smoke run, not the figures).

#[path = "../tests/support/postgres.rs"]
#[allow(dead_code)]
mod postgres;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

/// (scheduled_at, lateness_ms) of each run.started, as the reader thread collects them.
type Starts = Arc<Mutex<Vec<(DateTime<Utc>, f64)>>>;

struct Replica {
    name: String,
    child: Child,
    started: Starts,
}

fn spawn(name: &str, args: &[String], schedules: &Path, dir: &Path) -> Replica {
    std::fs::create_dir_all(dir.join(format!("runtime-{name}"))).expect("mkdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_chime"))
        .args(args)
        .arg("--log-format")
        .arg("json")
        .arg("run")
        .arg(schedules)
        .env("STATE_DIRECTORY", dir.join(format!("state-{name}")))
        // Each its own control socket: under one default path only the first would start.
        .env("RUNTIME_DIRECTORY", dir.join(format!("run-{name}")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chime starts");
    let started: Starts = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&started);
    let stderr = child.stderr.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !line.contains("\"run.started\"") {
                if line.contains("\"cluster.") || line.contains("\"error\"") {
                    eprintln!("{line}");
                }
                continue;
            }
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let at = event["scheduled_at"].as_str().and_then(|s| s.parse().ok());
            let late = event["lateness_ms"].as_f64();
            if let (Some(at), Some(late)) = (at, late) {
                sink.lock().expect("lock").push((at, late));
            }
        }
    });
    Replica {
        name: name.into(),
        child,
        started,
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    utime + stime
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let quick = std::env::var_os("CHIME_BENCH_QUICK").is_some();
    let secs: u64 = std::env::var("CHIME_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 10 } else { 30 });
    let jobs: usize = std::env::var("CHIME_BENCH_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 200 } else { 1000 });
    if std::env::var_os("CHIME_TEST_POSTGRES").is_none() {
        eprintln!(
            "cluster bench: no PostgreSQL; run `scripts/test-postgres run cargo bench --bench cluster`"
        );
        return;
    }
    let pg = postgres::Pg::database("chime_bench").expect("the test PostgreSQL");
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let mut yaml = String::from("defaults:\n  timezone: UTC\n  overlap: allow\njobs:\n");
    for i in 0..jobs {
        yaml.push_str(&format!(
            "  job{i:04}:\n    schedule: \"* * * * * *\"\n    command: \"true\"\n"
        ));
    }
    let shared = tmp.path().join("cluster");
    std::fs::create_dir_all(&shared).expect("mkdir");
    std::fs::write(shared.join("jobs.yaml"), yaml).expect("write");
    let alone = dir.join("stateless");
    std::fs::create_dir_all(&alone).expect("mkdir");
    let mut yaml = String::from("defaults:\n  timezone: UTC\n  overlap: allow\njobs:\n");
    for i in 0..jobs / 3 {
        yaml.push_str(&format!(
            "  job{i:04}:\n    schedule: \"* * * * * *\"\n    command: \"true\"\n"
        ));
    }
    std::fs::write(alone.join("jobs.yaml"), yaml).expect("write");
    let mut replicas: Vec<Replica> = ["a", "b", "c"]
        .iter()
        .map(|m| spawn(m, &pg.replica_args(m, "30s", "1s"), &shared, dir))
        .collect();
    replicas.push(spawn(
        "stateless",
        &["--state-dir".to_string(), "none".to_string()],
        &alone,
        dir,
    ));
    // Warm-up: loading, connecting, the first claims.
    std::thread::sleep(Duration::from_secs(5));
    let xact = |pg: &postgres::Pg| -> i64 {
        pg.count("SELECT xact_commit FROM pg_stat_database WHERE datname = 'chime_bench'")
    };
    let ticks_before: Vec<u64> = replicas.iter().map(|r| cpu_ticks(r.child.id())).collect();
    let xact_before = xact(&pg);
    let from = Utc::now();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let elapsed = t0.elapsed().as_secs_f64();
    let to = Utc::now();
    let xact_after = xact(&pg);
    let ticks_after: Vec<u64> = replicas.iter().map(|r| cpu_ticks(r.child.id())).collect();
    for replica in &mut replicas {
        // SAFETY: only sends a signal, to a child this bench started.
        unsafe { libc::kill(replica.child.id() as i32, libc::SIGTERM) };
        let _ = replica.child.wait();
    }
    // The run.started of the window: scheduled in [from + 1 s, to - 2 s].
    let window = |r: &Replica| -> Vec<f64> {
        r.started
            .lock()
            .expect("lock")
            .iter()
            .filter(|(at, _)| {
                *at > from + chrono::TimeDelta::seconds(1)
                    && *at < to - chrono::TimeDelta::seconds(2)
            })
            .map(|(_, late)| *late)
            .collect()
    };
    let mut clustered: Vec<f64> = replicas[..3].iter().flat_map(&window).collect();
    let mut stateless = window(&replicas[3]);
    clustered.sort_by(f64::total_cmp);
    stateless.sort_by(f64::total_cmp);
    let instants = (secs as f64 - 3.0).max(1.0);
    let hz = 100.0; // USER_HZ on Linux
    println!(
        "## Replicas on PostgreSQL: {jobs} every-second jobs, 3 replicas + 1 stateless, {secs} s{}",
        if quick {
            " (quick: not the figures)"
        } else {
            ""
        }
    );
    println!();
    println!("| | runs | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (name, v) in [
        ("3 replicas (claimed)", &clustered),
        ("stateless, a third of the jobs", &stateless),
    ] {
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} |",
            v.len(),
            percentile(v, 0.5),
            percentile(v, 0.99),
            v.last().copied().unwrap_or(f64::NAN)
        );
    }
    println!(
        "| claim overhead | | {:+.2} | {:+.2} | |",
        percentile(&clustered, 0.5) - percentile(&stateless, 0.5),
        percentile(&clustered, 0.99) - percentile(&stateless, 0.99)
    );
    println!();
    let expected = jobs as f64 * instants;
    println!(
        "runs by the replicas: {} for about {expected:.0} fires in the window (each fire once)",
        clustered.len()
    );
    println!(
        "database transactions per instant per replica: {:.2} ({} over {elapsed:.1} s, 3 replicas)",
        (xact_after - xact_before) as f64 / elapsed / 3.0,
        xact_after - xact_before
    );
    for (i, replica) in replicas.iter().enumerate() {
        let cpu = (ticks_after[i] - ticks_before[i]) as f64 / hz / elapsed * 100.0;
        println!("CPU {}: {cpu:.1} % of a core", replica.name);
    }
}
