//! A backward step of the wall clock, through the real binary under libfaketime
//! (issue 9 item 5). libfaketime shifts the time chime reads, not the kernel's clock,
//! so no timerfd is cancelled by the step: this proves the backward-step rule as the
//! late wake-up and heartbeat path sees it. (Noticing a step within a second when the
//! kernel reports it is covered by the virtual-clock tests in tests/scheduler.rs.)
//!
//! Skipped, with a message, where libfaketime is not installed; `.ci/run` installs it.

mod support;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::Value;
use support::{LIMIT, temp_dir, write};

const LIBFAKETIME: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
];

fn libfaketime() -> Option<PathBuf> {
    LIBFAKETIME
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

/// Sets the offset libfaketime applies, so that the wall clock reads `at` now.
fn set_fake_time(file: &Path, at: DateTime<Utc>) {
    let offset = (at - Utc::now()).num_milliseconds() as f64 / 1e3;
    // Written aside and renamed, so that chime never reads half a value.
    let staged = file.with_extension("new");
    std::fs::write(&staged, format!("{offset:+.3}\n")).unwrap();
    std::fs::rename(&staged, file).unwrap();
}

fn scheduled(event: &Value) -> DateTime<Utc> {
    event["scheduled_at"].as_str().unwrap().parse().unwrap()
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

#[test]
fn after_a_backward_step_wildcard_jobs_go_on_and_a_fixed_time_job_does_not_repeat() {
    let Some(lib) = libfaketime() else {
        eprintln!("SKIPPED: libfaketime is not installed (apt-get install faketime)");
        return;
    };
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        "defaults:\n  timezone: UTC\njobs:\n  five:\n    schedule: \"*/5 * * * * *\"\n    command: \"true\"\n  fixed:\n    schedule: \"30 10 * * *\"\n    command: \"true\"\n",
    );
    let fake = dir.path().join("faketime");
    set_fake_time(&fake, at("2026-11-25T10:29:57Z"));
    let mut command = support::command(
        dir.path(),
        ["--log-format", "json", "run", dir.path().to_str().unwrap()],
    );
    command
        .env("LD_PRELOAD", &lib)
        .env("FAKETIME_TIMESTAMP_FILE", &fake)
        .env("FAKETIME_NO_CACHE", "1")
        // The steady clock stays real, so that a step shows as a step.
        .env("DONT_FAKE_MONOTONIC", "1");
    let mut chime = command.spawn();
    let is_run = |event: &Value, job: &str, instant: &str| {
        event["event"] == "run.started" && event["job"] == job && scheduled(event) == at(instant)
    };
    chime.wait_for("fixed at 10:30:00", LIMIT, |e| {
        is_run(e, "fixed", "2026-11-25T10:30:00Z")
    });
    chime.wait_for("five at 10:30:05", LIMIT, |e| {
        is_run(e, "five", "2026-11-25T10:30:05Z")
    });
    // Back 10 s: the clock reads 10:29:5x again, and 10:30:00 comes a second time.
    let now: DateTime<Utc> = Utc::now();
    set_fake_time(&fake, at("2026-11-25T10:29:56Z") + (Utc::now() - now));
    let jumped = chime.wait_event("clock.jumped", LIMIT);
    let delta = jumped["delta_ms"].as_i64().unwrap();
    assert!(
        (-12_000..=-7_000).contains(&delta),
        "a step of about -10 s: {jumped}"
    );
    // The wildcard job goes on from the new time (before the fix it was silent until
    // 10:30:10, its next fire before the step).
    chime.wait_for("five at 10:30:00 again", LIMIT, |e| {
        is_run(e, "five", "2026-11-25T10:30:00Z")
    });
    chime.wait_for("five at 10:30:05 again", LIMIT, |e| {
        is_run(e, "five", "2026-11-25T10:30:05Z")
    });
    chime.signal(libc::SIGTERM);
    chime.wait_event("service.stopped", LIMIT);
    let status = chime.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(0), "{status:?}");
    let (lines, _) = chime.finish(LIMIT);
    let fixed: Vec<Value> = lines
        .iter()
        .filter_map(|line| support::parse_event(line))
        .filter(|e| e["event"] == "run.started" && e["job"] == "fixed")
        .collect();
    assert_eq!(
        fixed.len(),
        1,
        "the fixed-time job ran its 10:30 once: {fixed:#?}"
    );
}
