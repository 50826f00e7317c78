//! The state store through the real binary (DESIGN.md §10): a SIGKILL and a restart
//! (interrupted runs, a leftover group that still counts for `overlap: skip`, no fire
//! twice, `catch_up`), a store that cannot be written or is corrupt, `chime status` and
//! `chime history` beside a service firing 1,000 jobs a second, and `--state-dir none`.

mod support;

use std::collections::HashSet;
use std::io::{Read, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use chime::state::{SqliteStore, Store};
use support::process;
use support::{Chime, LIMIT, command, is, name, service, temp_dir, time, uint, wait_until, write};

fn db(state: &Path) -> std::path::PathBuf {
    state.join("db").join("state.db")
}

/// The last handled fire of `job`, as the running service has written it so far.
fn handled(state: &Path, job: &str) -> Option<DateTime<Utc>> {
    let store = SqliteStore::open_read_only(&db(state)).ok()?;
    store.last_handled().ok()?.get(job).copied()
}

/// `(job, scheduled_at)` of every first attempt's `run.started`.
fn fires(events: &[Value]) -> Vec<(String, DateTime<Utc>)> {
    events
        .iter()
        .filter(|e| name(e) == "run.started" && uint(e, "attempt") == 1)
        .map(|e| {
            (
                e["job"].as_str().unwrap_or("").to_string(),
                time(e, "scheduled_at"),
            )
        })
        .collect()
}

/// The process group of a run of `chime_pid` (its child leading a group of its own).
fn run_groups(chime_pid: libc::pid_t) -> Vec<libc::pid_t> {
    let own = process::stat(chime_pid).map(|s| s.pgrp);
    process::all()
        .into_iter()
        .filter(|s| s.ppid == chime_pid && Some(s.pgrp) != own && s.pid == s.pgrp)
        .map(|s| s.pgrp)
        .collect()
}

#[test]
fn a_killed_service_restarts_with_interrupted_runs_catch_up_and_no_fire_twice() {
    let dir = temp_dir();
    let state = dir.path().join("state");
    let state_arg = state.to_str().expect("a UTF-8 path").to_string();
    write(
        dir.path(),
        "jobs.yaml",
        "jobs:
  slow:
    schedule: \"*/2 * * * * *\"
    command: sleep 60
    timezone: UTC
  late:
    schedule: \"*/2 * * * * *\"
    command: \"true\"
    catch_up: latest
    timezone: UTC
  plain:
    schedule: \"*/2 * * * * *\"
    command: \"true\"
    timezone: UTC
",
    );
    let extra = ["--state-dir", state_arg.as_str(), "--shutdown-grace", "1s"];
    let mut first = Chime::start(dir.path(), &extra);
    let started = first.wait_for("slow starts", LIMIT, |e| is(e, "run.started", "slow"));
    let fire = time(&started, "scheduled_at");
    let slow_run = started["run_id"].as_str().expect("a run id").to_string();
    // SIGKILL only once the store has every job's fire of that instant: the writer is
    // asynchronous, and what it had not written yet a restart cannot know.
    wait_until("the fire is recorded", LIMIT, || {
        ["slow", "late", "plain"]
            .iter()
            .all(|job| handled(&state, job).is_some_and(|at| at >= fire))
    });
    let groups = run_groups(first.pid());
    assert_eq!(groups.len(), 1, "one run group (slow's): {groups:?}");
    let leftover = groups[0];
    first.guard_group(leftover);
    first.signal(libc::SIGKILL);
    first.wait_exit(LIMIT);
    let before: Vec<_> = fires(first.events());
    let last_before = before.iter().map(|(_, at)| *at).max().expect("fires");

    // Down across at least one fire of the jobs.
    let missed = last_before + TimeDelta::seconds(2);
    wait_until("a fire passes while chime is down", LIMIT, || {
        Utc::now() > missed + TimeDelta::milliseconds(300)
    });
    let restarted_at = Utc::now();
    let mut second = Chime::start(dir.path(), &extra);
    second.guard_group(leftover);
    let interrupted = second.wait_for("slow's run is interrupted", LIMIT, |e| {
        name(e) == "run.interrupted" && e["run_id"] == slow_run.as_str()
    });
    assert_eq!(interrupted["job"], "slow");
    assert_eq!(interrupted["still_running"], true, "{interrupted}");
    assert_eq!(uint(&interrupted, "pid"), leftover as u64);

    // The catch-up job runs its latest missed fire, once.
    let catch_up = second.wait_for("late catches up", LIMIT, |e| {
        is(e, "run.started", "late") && e["trigger"] == "catch-up"
    });
    let caught = time(&catch_up, "scheduled_at");
    assert!(
        caught >= missed && caught <= restarted_at,
        "the latest fire missed while down: {caught} (down from {last_before} to {restarted_at})"
    );

    // While the leftover group runs, slow's fires are skipped, not started beside it.
    let skipped = second.wait_for("slow is skipped", LIMIT, |e| {
        is(e, "run.skipped", "slow") && e["reason"] == "overlap"
    });
    assert!(
        !second.events().iter().any(|e| is(e, "run.started", "slow")),
        "a second copy of slow started beside the leftover:\n{}",
        second.transcript()
    );
    // Once the leftover group ends, slow runs again.
    assert!(!process::live_group_members(leftover).is_empty());
    // SAFETY: kill only sends a signal, to a group a run of this test's service leads
    // and that still has members (checked just above).
    unsafe { libc::kill(-leftover, libc::SIGKILL) };
    let again = second.wait_for("slow starts again", LIMIT, |e| is(e, "run.started", "slow"));
    assert!(time(&again, "scheduled_at") > time(&skipped, "scheduled_at"));
    for group in run_groups(second.pid()) {
        second.guard_group(group);
    }
    second.stop();

    let after = fires(second.events());
    let catch_ups: Vec<_> = second
        .events()
        .iter()
        .filter(|e| name(e) == "run.started" && e["trigger"] == "catch-up")
        .collect();
    assert_eq!(
        catch_ups.len(),
        1,
        "only late catches up, once: {catch_ups:?}"
    );
    let mut seen = HashSet::new();
    for fire in before.iter().chain(&after) {
        assert!(seen.insert(fire.clone()), "fire run twice: {fire:?}");
    }
    assert!(
        !after
            .iter()
            .any(|(job, at)| job == "plain" && *at <= restarted_at),
        "plain (catch_up none) ran a fire from the downtime: {after:?}"
    );

    // The history has the interrupted run.
    let out = command(
        dir.path(),
        ["--state-dir", &state_arg, "history", &slow_run, "--json"],
    )
    .run(LIMIT);
    assert_eq!(out.code, Some(0), "{out:?}");
    let run: Value = serde_json::from_str(out.stdout.trim()).expect("one JSON run");
    assert_eq!(run["outcome"], "interrupted");
    assert_eq!(run["job"], "slow");
}

const QUICK_JOB: &str = "jobs:
  tick:
    schedule: \"* * * * * *\"
    command: echo tick
    timezone: UTC
";

#[test]
fn a_state_dir_that_cannot_be_created_gives_state_failed_and_firing_goes_on() {
    let dir = temp_dir();
    write(dir.path(), "jobs.yaml", QUICK_JOB);
    let blocker = write(dir.path(), "not-a-dir", "a regular file");
    let state = blocker.join("state");
    let mut chime = Chime::start(dir.path(), &["--state-dir", state.to_str().expect("UTF-8")]);
    let failed = chime.wait_event("state.failed", LIMIT);
    for field in ["what", "error", "fix"] {
        assert!(
            !failed[field].as_str().unwrap_or("").is_empty(),
            "{field} missing: {failed}"
        );
    }
    chime.wait_event("service.started", LIMIT);
    let finished = chime.wait_for("tick runs", LIMIT, |e| is(e, "run.finished", "tick"));
    assert_eq!(finished["outcome"], "success");
    chime.stop();
}

#[test]
fn a_corrupt_database_is_moved_aside_and_a_fresh_one_started() {
    let dir = temp_dir();
    write(dir.path(), "jobs.yaml", QUICK_JOB);
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("db")).expect("mkdir");
    std::fs::write(db(&state), vec![0x5a; 8192]).expect("write garbage");
    let state_arg = state.to_str().expect("UTF-8");
    let mut chime = Chime::start(dir.path(), &["--state-dir", state_arg]);
    let failed = chime.wait_event("state.failed", LIMIT);
    assert!(
        failed["fix"].as_str().unwrap_or("").contains("moved aside"),
        "{failed}"
    );
    let finished = chime.wait_for("tick runs", LIMIT, |e| is(e, "run.finished", "tick"));
    let run_id = finished["run_id"].as_str().expect("run id").to_string();
    chime.stop();
    let aside: Vec<_> = std::fs::read_dir(state.join("db"))
        .expect("read db/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.db.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let out = command(
        dir.path(),
        ["--state-dir", state_arg, "history", &run_id, "--json"],
    )
    .run(LIMIT);
    let run: Value = serde_json::from_str(out.stdout.trim()).expect("the run, in the fresh db");
    assert_eq!(run["outcome"], "success");
    assert_eq!(run["output_tail"], "tick\n");
}

#[test]
fn a_locked_database_gives_state_failed_firing_goes_on_and_writes_catch_up_later() {
    let dir = temp_dir();
    write(dir.path(), "jobs.yaml", QUICK_JOB);
    let state = dir.path().join("state");
    let mut chime = Chime::start(dir.path(), &["--state-dir", state.to_str().expect("UTF-8")]);
    chime.wait_for("tick runs", LIMIT, |e| is(e, "run.finished", "tick"));
    wait_until("the database exists", LIMIT, || {
        handled(&state, "tick").is_some()
    });
    // Another process holds the write lock.
    let mut holder = rusqlite::Connection::open(db(&state)).expect("open beside chime");
    let lock = holder
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .expect("take the write lock");
    let failed = chime.wait_event("state.failed", LIMIT);
    assert!(
        failed["error"].as_str().unwrap_or("").contains("locked")
            || failed["error"].as_str().unwrap_or("").contains("busy"),
        "{failed}"
    );
    // Firing went on meanwhile.
    let during = chime.wait_for("tick runs while locked", LIMIT, |e| {
        is(e, "run.finished", "tick")
    });
    let during_run = during["run_id"].as_str().expect("run id").to_string();
    lock.rollback().expect("release the lock");
    drop(holder);
    // The writes held back are applied once the lock is gone.
    wait_until("the run fired while locked is recorded", LIMIT, || {
        SqliteStore::open_read_only(&db(&state))
            .ok()
            .and_then(|s| {
                s.runs(&chime::state::HistoryQuery {
                    run_id: Some(during_run.clone()),
                    limit: 1,
                    ..Default::default()
                })
                .ok()
            })
            .is_some_and(|runs| runs.len() == 1 && runs[0].status == "success")
    });
    chime.stop();
}

#[test]
fn the_stateless_mode_writes_nothing_and_fires_as_before() {
    let dir = temp_dir();
    write(dir.path(), "jobs.yaml", QUICK_JOB);
    let state = dir.path().join("state");
    let mut chime = service(dir.path(), &["--state-dir", "none"])
        .env("CHIME_STATE_DIR", state.to_str().expect("UTF-8"))
        .spawn();
    chime.wait_for("tick runs", LIMIT, |e| is(e, "run.finished", "tick"));
    chime.stop();
    assert!(
        !chime.events().iter().any(|e| name(e).starts_with("state.")),
        "no state events: {}",
        chime.transcript()
    );
    assert!(!state.exists(), "nothing written under the state dir");
    let out = command(dir.path(), ["--state-dir", "none", "history"]).run(LIMIT);
    assert_eq!(out.code, Some(2), "{out:?}");
}

/// A tiny HTTP server on 127.0.0.1 answering 204 to everything, until the test ends.
fn http_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if stream
                            .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    format!("http://{addr}/ping")
}

#[test]
fn status_and_history_beside_a_service_firing_1000_jobs_a_second() {
    const JOBS: usize = 1000;
    let dir = temp_dir();
    let url = http_server();
    let mut text = String::from("defaults:\n  timezone: UTC\njobs:\n");
    for i in 0..JOBS {
        text.push_str(&format!(
            "  job{i:04}:\n    schedule: \"* * * * * *\"\n    http:\n      url: \"{url}\"\n"
        ));
    }
    write(dir.path(), "jobs.yaml", text);
    let state = dir.path().join("state");
    let state_arg = state.to_str().expect("UTF-8").to_string();
    let mut chime = Chime::start(dir.path(), &["--state-dir", &state_arg]);
    chime.wait_event("service.started", LIMIT);
    // Three seconds of fires: 3,000 runs.
    let mut finished = 0;
    chime.wait_for("3,000 runs", Duration::from_secs(60), |e| {
        if name(e) == "run.finished" {
            finished += 1;
        }
        finished >= 3 * JOBS
    });
    let jobs_file = dir.path().join("jobs.yaml");
    let jobs_arg = jobs_file.to_str().expect("UTF-8");

    let status = command(
        dir.path(),
        ["--state-dir", &state_arg, "status", jobs_arg, "--json"],
    )
    .run(LIMIT);
    assert_eq!(status.code, Some(0), "{status:?}");
    let lines: Vec<Value> = status
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), JOBS, "one line per job");
    let now = Utc::now();
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["job"], format!("job{i:04}"), "sorted by name");
        assert_eq!(line["schedule"], "* * * * * *");
        assert_eq!(line["zone"], "UTC");
        let next = time(line, "next_fire");
        assert!(next > now - TimeDelta::seconds(2) && next <= now + TimeDelta::seconds(2));
        let last = &line["last_run"];
        assert!(last.is_object(), "every job ran in 3 s: {line}");
        assert_eq!(last["job"], line["job"]);
        assert!(
            last["outcome"] == "success" || last["outcome"] == "running",
            "{line}"
        );
        assert_eq!(line["failures_in_row"], 0, "{line}");
    }

    let history = command(
        dir.path(),
        ["--state-dir", &state_arg, "history", "-n", "200", "--json"],
    )
    .run(LIMIT);
    assert_eq!(history.code, Some(0), "{history:?}");
    let runs: Vec<Value> = history
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(runs.len(), 200);
    let starts: Vec<DateTime<Utc>> = runs.iter().map(|r| time(r, "started")).collect();
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let ids: HashSet<&str> = runs.iter().filter_map(|r| r["run_id"].as_str()).collect();
    assert_eq!(ids.len(), 200, "no run twice");

    // One job's history, and one run by its id: consistent with status.
    let one = &lines[7]["last_run"];
    let run_id = one["run_id"].as_str().expect("run id");
    let by_job = command(
        dir.path(),
        [
            "--state-dir",
            &state_arg,
            "history",
            "job0007",
            "-n",
            "3",
            "--json",
        ],
    )
    .run(LIMIT);
    let job_runs: Vec<Value> = by_job
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(job_runs.len(), 3);
    assert!(job_runs.iter().all(|r| r["job"] == "job0007"));
    assert!(
        time(&job_runs[0], "started") >= time(one, "started"),
        "history's newest is status's last run or later"
    );
    let by_id = command(
        dir.path(),
        ["--state-dir", &state_arg, "history", run_id, "--json"],
    )
    .run(LIMIT);
    let run: Value = serde_json::from_str(by_id.stdout.trim()).expect("one run");
    assert_eq!(run["run_id"], run_id);
    assert_eq!(run["job"], "job0007");
    assert_eq!(run["trigger"], "schedule");

    // The text form answers in one screen per job line.
    let text = command(dir.path(), ["--state-dir", &state_arg, "status", jobs_arg]).run(LIMIT);
    let mut text_lines = text.stdout.lines();
    assert!(text_lines.next().is_some_and(|h| h.starts_with("JOB")));
    assert_eq!(text_lines.count(), JOBS);
    chime.stop();
}

/// Whether this process may mount (root, and a kernel and sandbox that allow it).
fn can_mount() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("d=$(mktemp -d) || exit 1; mount -t tmpfs -o size=64k tmpfs \"$d\"; r=$?; umount \"$d\" 2>/dev/null; rmdir \"$d\"; exit $r")
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_full_filesystem_gives_state_failed_and_firing_goes_on() {
    if !can_mount() {
        eprintln!("skipped: needs root and a mountable tmpfs (unshare -m)");
        return;
    }
    let dir = temp_dir();
    let mut text = String::from("defaults:\n  timezone: UTC\njobs:\n");
    for i in 0..30 {
        // 5 KiB of output a run: the 4 KiB tail fills the small disk within seconds.
        text.push_str(&format!(
            "  chatty{i:02}:\n    schedule: \"* * * * * *\"\n    command: yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 5000\n"
        ));
    }
    write(dir.path(), "jobs.yaml", text);
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    let state_arg = state.to_str().expect("UTF-8").to_string();
    // A 256 KiB tmpfs over the state dir, in a mount namespace of chime's own (gone
    // with it).
    let mount = format!("mount -t tmpfs -o size=256k tmpfs '{state_arg}' && exec \"$0\" \"$@\"");
    let mut chime = service(dir.path(), &["--state-dir", &state_arg])
        .via([
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &mount,
        ])
        .spawn();
    chime.wait_event("service.started", LIMIT);
    let failed = chime.wait_event("state.failed", Duration::from_secs(60));
    let error = failed["error"].as_str().unwrap_or("");
    assert!(error.contains("full"), "{failed}");
    assert!(
        failed["fix"].as_str().unwrap_or("").contains("disk space"),
        "{failed}"
    );
    // Firing goes on.
    let after = chime.wait_for("a run after the failure", LIMIT, |e| {
        name(e) == "run.finished"
    });
    assert_eq!(after["outcome"], "success", "{after}");
    chime.stop();
}
