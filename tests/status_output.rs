//! `chime status` over many jobs (issue 14's ≤ 1 s work): every job of the files, in
//! name order whatever the files' order, joined with exactly its own stored facts
//! (never another job's, never a job only the store knows), across the chunks the
//! lines are rendered in; and a schedule file with errors reported as `check` reports
//! it, before anything the store has to say.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

use chime::state::{RunEnd, RunStart, SqliteStore, Store, Write};
use support::{LIMIT, command, temp_dir, write};

/// More than two of the chunks status renders in (2,048 jobs each).
const JOBS: usize = 5_000;

fn t(secs: i64, ms: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, ms * 1_000_000)
        .single()
        .expect("a valid instant")
}

fn name(i: usize) -> String {
    format!("job-{i:05}")
}

/// What the store holds of job `i`: (outcomes of its runs, oldest first; paused).
/// `None` as an outcome is a run still `running`.
fn stored(i: usize) -> (Vec<Option<&'static str>>, bool) {
    let runs = match i % 5 {
        0 => vec![],
        1 => vec![Some("success")],
        2 => vec![Some("success"), Some("failure"), Some("timeout")],
        3 => vec![Some("failure"), None],
        _ => vec![Some("failure"), Some("success")],
    };
    (runs, i.is_multiple_of(7))
}

fn start(job: &str, run_id: &str, at: DateTime<Utc>) -> RunStart {
    RunStart {
        job: job.to_string(),
        run_id: run_id.to_string(),
        scheduled_at: at,
        trigger: "schedule".into(),
        attempt: 1,
        started: at,
        lateness_ms: 2.0,
        pid: None,
        pid_start: None,
    }
}

fn end(run_id: &str, outcome: &str, at: DateTime<Utc>) -> RunEnd {
    RunEnd {
        run_id: run_id.to_string(),
        attempts: 1,
        outcome: outcome.to_string(),
        exit_code: Some(i32::from(outcome != "success")),
        signal: None,
        http_status: None,
        error: None,
        finished: at,
        duration_ms: 250,
        output_tail: format!("{run_id} said hello\n"),
    }
}

/// The JSON `status` gives of a stored run (as `history --json` does).
fn run_json(job: &str, run_id: &str, outcome: Option<&str>, at: DateTime<Utc>) -> Value {
    json!({
        "job": job,
        "run_id": run_id,
        "scheduled_at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "trigger": "schedule",
        "attempts": 1,
        "outcome": outcome.unwrap_or("running"),
        "exit_code": outcome.map(|o| i32::from(o != "success")),
        "signal": null,
        "http_status": null,
        "error": null,
        "started": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "finished": outcome.map(|_| (at + chrono::TimeDelta::milliseconds(250))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "duration_ms": outcome.map(|_| 250),
        "lateness_ms": 2.0,
        "pid": null,
        "output_tail": outcome.map(|_| format!("{run_id} said hello\n")),
    })
}

/// Writes the store: the runs of [`stored`] for every job, and runs of jobs that no
/// file defines (named to sort before, between and after the files' jobs). Returns
/// each job's expected last run.
fn fill_store(state: &Path) -> BTreeMap<String, Value> {
    let path = chime::state::location::prepare(state).expect("the db dir");
    let mut store = SqliteStore::open(&path).expect("the store opens");
    let mut writes = Vec::new();
    let mut last = BTreeMap::new();
    let mut seq = 0;
    let ghosts = ["a-ghost", "job-00010x", "zz-ghost"].map(String::from);
    let jobs = (0..JOBS).map(name).chain(ghosts.iter().cloned());
    for (i, job) in jobs.enumerate() {
        let (runs, paused) = if i < JOBS {
            stored(i)
        } else {
            (vec![Some("failure")], true)
        };
        for outcome in runs {
            seq += 1;
            let run_id = format!("{seq:016x}");
            let at = t(seq, (seq % 1000) as u32);
            writes.push(Write::Started(start(&job, &run_id, at)));
            if let Some(outcome) = outcome {
                writes.push(Write::Finished(end(
                    &run_id,
                    outcome,
                    at + chrono::TimeDelta::milliseconds(250),
                )));
            }
            last.insert(job.clone(), run_json(&job, &run_id, outcome, at));
        }
        if paused {
            writes.push(Write::Paused { job, paused: true });
        }
    }
    store.apply(&writes).expect("the runs are written");
    last
}

#[test]
fn status_joins_each_job_with_its_own_stored_facts_in_name_order() {
    let dir = temp_dir();
    let schedules = dir.path().join("schedules");
    std::fs::create_dir(&schedules).expect("mkdir");
    // Three files, jobs in no order: file k holds the jobs i with i % 3 == k, from the
    // last down. Every 11th job is disabled.
    for k in 0..3 {
        let mut text = String::from("defaults:\n  timezone: Europe/Berlin\njobs:\n");
        for i in (0..JOBS).rev().filter(|i| i % 3 == k) {
            text.push_str(&format!(
                "  {}:\n    schedule: \"*/5 * * * *\"\n    command: \"true\"\n",
                name(i)
            ));
            if i % 11 == 0 {
                text.push_str("    enabled: false\n");
            }
        }
        write(&schedules, &format!("{k}.yaml"), text);
    }
    let state = dir.path().join("state");
    let last = fill_store(&state);
    let state_arg = state.to_str().expect("UTF-8");
    let files = schedules.to_str().expect("UTF-8");

    let out = command(
        dir.path(),
        ["--state-dir", state_arg, "status", files, "--json"],
    )
    .run(LIMIT);
    assert_eq!(out.code, Some(0), "{out:?}");
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), JOBS, "one line per job of the files, no other");
    let now = Utc::now();
    for (i, line) in lines.iter().enumerate() {
        let job = name(i);
        assert_eq!(line["job"], job.as_str(), "in name order");
        let (runs, paused) = stored(i);
        let failures = runs
            .iter()
            .rev()
            .flatten()
            .take_while(|&&o| o != "success")
            .count();
        let running = runs.iter().filter(|o| o.is_none()).count();
        let next = &line["next_fire"];
        if i % 11 == 0 {
            assert_eq!(line["enabled"], false, "{line}");
            assert!(next.is_null(), "{line}");
        } else {
            assert_eq!(line["enabled"], true, "{line}");
            let at =
                DateTime::parse_from_rfc3339(next.as_str().expect("a time")).expect("RFC 3339");
            assert!(next.as_str().is_some_and(|n| n.ends_with('Z')), "{line}");
            assert!(at > now - chrono::TimeDelta::seconds(5), "{line}");
            assert!(at <= now + chrono::TimeDelta::minutes(5), "{line}");
        }
        let expected = json!({
            "job": job,
            "schedule": "*/5 * * * *",
            "zone": "Europe/Berlin",
            "enabled": i % 11 != 0,
            "next_fire": next.clone(),
            "last_run": last.get(&job).cloned().unwrap_or(Value::Null),
            "running": running,
            "failures_in_row": failures,
            "paused": paused,
            "runs_in_flight": [],
            "live": false,
        });
        assert_eq!(line, &expected, "job {i}");
    }

    // The text form: the same jobs in the same order, one line each.
    let text = command(dir.path(), ["--state-dir", state_arg, "status", files]).run(LIMIT);
    assert_eq!(text.code, Some(0), "{text:?}");
    let mut rows = text.stdout.lines();
    assert!(rows.next().is_some_and(|h| h.starts_with("JOB ")));
    let rows: Vec<&str> = rows.collect();
    assert_eq!(rows.len(), JOBS);
    for (i, row) in rows.iter().enumerate() {
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(fields[0], name(i), "{row}");
        let (runs, paused) = stored(i);
        let outcome = match runs.last() {
            None => "-",
            Some(None) => "running",
            Some(Some(outcome)) => outcome,
        };
        assert!(row.contains(&format!(" {outcome} ")), "{row}");
        assert_eq!(
            fields.last().copied(),
            Some(if paused { "paused" } else { "-" }),
            "{row}"
        );
    }
}

#[test]
fn a_schedule_error_is_reported_as_check_does_before_the_store_is_looked_at() {
    let dir = temp_dir();
    let file = write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  backup:\n    schedule: \"*/5 * * * *\"\n    comand: \"true\"\n",
    );
    // A database written by a newer chime: status refuses it, but only once the files
    // load.
    let state = dir.path().join("state");
    let path = chime::state::location::prepare(&state).expect("the db dir");
    drop(SqliteStore::open(&path).expect("created"));
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.pragma_update(None, "user_version", 99)
        .expect("bump the version");
    drop(conn);
    let state_arg = state.to_str().expect("UTF-8");
    let file_arg = file.to_str().expect("UTF-8");

    let check = command(dir.path(), ["check", file_arg]).run(LIMIT);
    assert_eq!(check.code, Some(1), "{check:?}");
    let status = command(
        dir.path(),
        ["--state-dir", state_arg, "status", file_arg, "--json"],
    )
    .run(LIMIT);
    assert_eq!(status.code, Some(1), "{status:?}");
    assert!(status.stdout.is_empty(), "{status:?}");
    assert!(!check.errors().is_empty(), "{check:?}");
    assert_eq!(status.errors(), check.errors(), "the errors `check` gives");
    assert!(
        status.errors()[0].contains("jobs.yaml:4:5"),
        "located: {status:?}"
    );
    assert!(!status.stderr.contains("schema version"), "{status:?}");

    // With the file fixed, the store's problem is the one reported.
    write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  backup:\n    schedule: \"*/5 * * * *\"\n    command: \"true\"\n",
    );
    let status = command(
        dir.path(),
        ["--state-dir", state_arg, "status", file_arg, "--json"],
    )
    .run(LIMIT);
    assert_eq!(status.code, Some(1), "{status:?}");
    assert!(
        status.stderr.contains("schema version 99") && status.stderr.contains("newer chime"),
        "{status:?}"
    );
}

/// Long job names, schedules and zones widen their columns: every row's later columns
/// start where the header's do (they used to be fixed at 24/16/16 characters).
#[test]
fn the_text_table_widens_its_columns_for_long_names() {
    let dir = temp_dir();
    let schedules = dir.path().join("schedules");
    std::fs::create_dir(&schedules).expect("mkdir");
    write(
        &schedules,
        "jobs.yaml",
        "jobs:\n  a-rather-long-job-name-for-the-table:\n    schedule: \"0 30 7 * * MON-FRI\"\n    timezone: America/Argentina/Buenos_Aires\n    command: \"true\"\n  b:\n    schedule: \"@hourly\"\n    timezone: UTC\n    command: \"true\"\n",
    );
    let state = dir.path().join("state");
    let out = command(
        dir.path(),
        [
            "--state-dir",
            state.to_str().expect("utf-8"),
            "status",
            schedules.to_str().expect("utf-8"),
        ],
    )
    .run(LIMIT);
    assert_eq!(out.code, Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().take(3).collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    let header = lines[0];
    for column in ["SCHEDULE", "ZONE", "NEXT"] {
        let at = header.find(column).expect("a column");
        for row in &lines[1..] {
            assert!(
                row.len() > at && row.as_bytes()[at - 1] == b' ' && row.as_bytes()[at] != b' ',
                "column {column} starts at {at} in the header but not in\n{header}\n{row}"
            );
        }
    }
}
