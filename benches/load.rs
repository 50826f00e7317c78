//! `cargo bench --bench load`: validating 100,000 jobs from YAML and computing every
//! job's first fire, the work `chime check` and `chime run` do at start.
//!
//! The jobs are spread over 10 files with a realistic mix of expressions, zones and
//! keys. Each round loads them from disk and computes first fires; the median of the
//! rounds is reported, with the spread, because this machine is noisy.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chime::config::{LoadOptions, load};
use chrono::Utc;

const JOBS: usize = 100_000;
const FILES: usize = 10;
const ROUNDS: usize = 5;

const SCHEDULES: &[&str] = &[
    "30 2 * * *",
    "*/5 * * * *",
    "0 9 * * MON-FRI",
    "0 0 L * *",
    "0 9 * * 5L",
    "0 10 * * 1#2",
    "15 */2 1,15 * *",
    "@hourly",
    "@every 90s",
    "0 30 7 * * *",
];
const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",
];

fn write_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let per_file = JOBS / FILES;
    (0..FILES)
        .map(|f| {
            let mut text = String::from("defaults:\n  timeout: 10m\njobs:\n");
            for j in 0..per_file {
                let n = f * per_file + j;
                let schedule = SCHEDULES[n % SCHEDULES.len()];
                let zone = ZONES[n % ZONES.len()];
                let _ = writeln!(text, "  job-{n}:");
                let _ = writeln!(text, "    schedule: \"{schedule}\"");
                let _ = writeln!(text, "    timezone: {zone}");
                if n.is_multiple_of(4) {
                    let _ = writeln!(text, "    command: [\"/usr/bin/env\", \"echo\", \"{n}\"]");
                    let _ = writeln!(text, "    retry: {{ attempts: 3, delay: 10s }}");
                } else {
                    let _ = writeln!(text, "    command: echo job {n}");
                    let _ = writeln!(text, "    overlap: allow");
                }
            }
            let path = dir.join(format!("jobs-{f:02}.yaml"));
            std::fs::write(&path, text).expect("temp dir is writable");
            path
        })
        .collect()
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_files(dir.path());
    let paths = vec![dir.path().to_path_buf()];
    let options = LoadOptions::from_process(Some(chrono_tz::UTC));
    let mut load_times = Vec::new();
    let mut fire_times = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        let config = load(&paths, &options).expect("generated schedules are valid");
        let loaded = start.elapsed();
        let now = Utc::now();
        let fires = config
            .jobs
            .iter()
            .filter_map(|job| job.schedule.next_after(job.timezone, now))
            .count();
        let total = start.elapsed();
        assert_eq!(config.jobs.len(), JOBS);
        assert_eq!(fires, JOBS);
        load_times.push(loaded);
        fire_times.push(total - loaded);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (min_load, max_load) = (
        *load_times.iter().min().expect("rounds"),
        *load_times.iter().max().expect("rounds"),
    );
    let load_median = median(&mut load_times);
    let fire_median = median(&mut fire_times);
    let total = load_median + fire_median;
    println!(
        "100,000 jobs in {FILES} files, {ROUNDS} rounds (median; load range {min_load:.2?}–{max_load:.2?})"
    );
    println!("  read + parse + validate: {load_median:.3?}");
    println!("  first fire of every job: {fire_median:.3?}");
    println!(
        "  total:                   {total:.3?}   target < 1 s: {}",
        if total < Duration::from_secs(1) {
            "PASS"
        } else {
            "MISS"
        }
    );
}
