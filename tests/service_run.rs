//! `chime run` as systemd runs it (DESIGN.md §4–§6): the real binary, JSON logs on
//! stderr, signals. Every wait is for a log event or the exit, bounded by a timeout.

mod support;

use serde_json::Value;
use support::{Chime, LIMIT, assert_fields, name, parse_event, temp_dir, time, write};

const TICK: &str =
    "jobs:\n  tick:\n    schedule: \"* * * * * *\"\n    command: echo hi\n    timezone: UTC\n";

fn start(dir: &std::path::Path, extra: &[&str]) -> Chime {
    Chime::start(dir, extra)
}

#[track_caller]
fn assert_service_event(event: &Value, jobs: u64, files: u64) {
    assert_fields(event, &["version", "jobs", "files"]);
    assert_eq!(event["version"], env!("CARGO_PKG_VERSION"), "{event}");
    assert_eq!(event["jobs"], jobs, "{event}");
    assert_eq!(event["files"], files, "{event}");
}

/// Signals `signal`, then expects the shutdown events in order and exit code 0.
/// Returns every stderr line.
#[track_caller]
fn stop_with(chime: &mut Chime, signal: libc::c_int, jobs: u64, files: u64) -> Vec<String> {
    chime.signal(signal);
    let stopping = chime.wait_event("service.stopping", LIMIT);
    assert_service_event(&stopping, jobs, files);
    let stopped = chime.wait_event("service.stopped", LIMIT);
    assert_service_event(&stopped, jobs, files);
    let status = chime.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(0), "{status:?}");
    let (lines, stdout) = chime.finish(LIMIT);
    assert_eq!(stdout, "", "the service writes nothing to stdout");
    lines
}

/// Every line is a JSON object with `timestamp`, `level` and `event`.
#[track_caller]
fn all_events(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|line| {
            let event = parse_event(line).unwrap_or_else(|| panic!("not JSON: {line:?}"));
            assert_fields(&event, &[]);
            event
        })
        .collect()
}

#[test]
fn every_second_job_fires_each_second_and_sigterm_stops_cleanly() {
    let dir = temp_dir();
    write(dir.path(), "tick.yaml", TICK);
    let mut chime = start(dir.path(), &[]);
    let started = chime.wait_event("service.started", LIMIT);
    assert_service_event(&started, 1, 1);

    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(chime.wait_for("run.started of tick", LIMIT, |e| {
            name(e) == "run.started" && e["job"] == "tick"
        }));
    }
    for run in &runs {
        assert_fields(
            run,
            &[
                "job",
                "run_id",
                "trigger",
                "scheduled_at",
                "lateness_ms",
                "attempt",
            ],
        );
        assert_eq!(run["trigger"], "schedule", "{run}");
        assert_eq!(run["attempt"], 1, "{run}");
        let lateness = run["lateness_ms"]
            .as_f64()
            .expect("lateness_ms is a number");
        assert!(lateness >= 0.0, "{run}");
        assert_eq!(
            time(run, "scheduled_at").timestamp_subsec_nanos(),
            0,
            "{run}"
        );
    }
    for pair in runs.windows(2) {
        let gap = time(&pair[1], "scheduled_at") - time(&pair[0], "scheduled_at");
        assert_eq!(
            gap.num_milliseconds(),
            1000,
            "a second was missed or doubled between\n{}\n{}",
            pair[0],
            pair[1]
        );
        assert_ne!(pair[0]["run_id"], pair[1]["run_id"]);
    }

    // Runs in flight when SIGTERM arrives finish within the shutdown grace, so all
    // four runs' output and end are logged before service.stopped.
    let lines = stop_with(&mut chime, libc::SIGTERM, 1, 1);
    let events = all_events(&lines);
    let position = |wanted: &str, run_id: &Value| {
        events
            .iter()
            .position(|e| name(e) == wanted && &e["run_id"] == run_id)
            .unwrap_or_else(|| panic!("no {wanted} for run {run_id}:\n{}", lines.join("\n")))
    };
    for run in &runs {
        let run_id = &run["run_id"];
        let started_at = position("run.started", run_id);
        let output_at = position("run.output", run_id);
        let finished_at = position("run.finished", run_id);
        assert!(
            started_at < output_at && output_at < finished_at,
            "{}",
            lines.join("\n")
        );

        let output = &events[output_at];
        assert_fields(output, &["job", "run_id", "stream", "line"]);
        assert_eq!(output["job"], "tick");
        assert_eq!(output["stream"], "stdout");
        assert_eq!(output["line"], "hi");

        let finished = &events[finished_at];
        assert_fields(
            finished,
            &[
                "job",
                "run_id",
                "attempts",
                "outcome",
                "exit_code",
                "duration_ms",
                "output_bytes",
                "truncated",
            ],
        );
        assert_eq!(finished["job"], "tick", "{finished}");
        assert_eq!(finished["attempts"], 1, "{finished}");
        assert_eq!(finished["outcome"], "success", "{finished}");
        assert_eq!(finished["exit_code"], 0, "{finished}");
        assert!(finished["duration_ms"].is_u64(), "{finished}");
        assert_eq!(finished["output_bytes"], 3, "\"hi\\n\": {finished}");
        assert_eq!(finished["truncated"], false, "{finished}");
    }
    let names: Vec<&str> = events.iter().map(name).collect();
    assert_eq!(names.first(), Some(&"service.started"), "{names:?}");
    assert_eq!(names.last(), Some(&"service.stopped"), "{names:?}");
}

#[test]
fn sigint_stops_like_sigterm() {
    let dir = temp_dir();
    write(dir.path(), "tick.yaml", TICK);
    let mut chime = start(dir.path(), &[]);
    chime.wait_event("service.started", LIMIT);
    let finished = chime.wait_event("run.finished", LIMIT);
    assert_eq!(finished["outcome"], "success", "{finished}");
    let lines = stop_with(&mut chime, libc::SIGINT, 1, 1);
    all_events(&lines);
}

#[test]
fn failing_job_is_retried_then_finishes_as_failure() {
    let dir = temp_dir();
    write(
        dir.path(),
        "fail.yaml",
        "jobs:\n  flaky:\n    schedule: \"@reboot\"\n    command: echo trying; exit 3\n    \
         retry: {attempts: 2, delay: 200ms}\n",
    );
    let mut chime = start(dir.path(), &[]);
    chime.wait_event("service.started", LIMIT);

    let first = chime.wait_event("run.started", LIMIT);
    assert_eq!(first["job"], "flaky", "{first}");
    assert_eq!(first["trigger"], "reboot", "{first}");
    assert_eq!(first["attempt"], 1, "{first}");
    let run_id = first["run_id"].clone();

    let retrying = chime.wait_event("run.retrying", LIMIT);
    assert_fields(
        &retrying,
        &[
            "job",
            "run_id",
            "attempt",
            "outcome",
            "exit_code",
            "delay_ms",
        ],
    );
    assert_eq!(retrying["run_id"], run_id, "{retrying}");
    assert_eq!(retrying["attempt"], 1, "{retrying}");
    assert_eq!(retrying["outcome"], "failure", "{retrying}");
    assert_eq!(retrying["exit_code"], 3, "{retrying}");
    let delay = retrying["delay_ms"].as_u64().expect("delay_ms is a number");
    assert!((160..=240).contains(&delay), "200ms ± 20 %: {retrying}");

    let second = chime.wait_event("run.started", LIMIT);
    assert_eq!(second["run_id"], run_id, "{second}");
    assert_eq!(second["attempt"], 2, "{second}");
    assert_eq!(second["trigger"], "retry", "{second}");
    assert_eq!(second["scheduled_at"], first["scheduled_at"], "{second}");

    let finished = chime.wait_event("run.finished", LIMIT);
    assert_eq!(finished["run_id"], run_id, "{finished}");
    assert_eq!(finished["attempts"], 2, "{finished}");
    assert_eq!(finished["outcome"], "failure", "{finished}");
    assert_eq!(finished["exit_code"], 3, "{finished}");

    let lines = stop_with(&mut chime, libc::SIGTERM, 1, 1);
    let events = all_events(&lines);
    let outputs = events
        .iter()
        .filter(|e| name(e) == "run.output" && e["line"] == "trying")
        .count();
    assert_eq!(
        outputs,
        2,
        "one output line per attempt:\n{}",
        lines.join("\n")
    );
}

#[test]
fn invalid_schedules_exit_1_without_starting() {
    let dir = temp_dir();
    let path = write(
        dir.path(),
        "bad.yaml",
        "jobs:\n  a:\n    schedule: \"0 3 * * *\"\n    command: x\n    enabled: yes\n",
    );
    let mut chime = start(dir.path(), &[]);
    let status = chime.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(1), "{status:?}");
    let (lines, stdout) = chime.finish(LIMIT);
    assert_eq!(stdout, "");
    // In the JSON log: `config.rejected`, as a reload's (issue 12).
    let rejected = lines
        .iter()
        .filter_map(|line| parse_event(line))
        .find(|e| name(e) == "config.rejected")
        .unwrap_or_else(|| panic!("no config.rejected in {lines:#?}"));
    assert!(
        rejected["errors"][0]
            .as_str()
            .is_some_and(|e| e.starts_with(&format!("{}:5:14: ", path.display()))),
        "{}",
        lines.join("\n")
    );
    assert!(
        !lines
            .iter()
            .filter_map(|l| parse_event(l))
            .any(|e| name(&e) == "service.started"),
        "{}",
        lines.join("\n")
    );
}

#[test]
fn run_reports_every_startup_error_like_check() {
    // DESIGN.md §5: on start, "on any error print all of them and exit 1" — a missing
    // path must not hide the errors of the files that do exist.
    let dir = temp_dir();
    let missing = dir.path().join("gone.yaml");
    let bad = write(
        dir.path(),
        "bad.yaml",
        "jobs:\n  a:\n    schedule: \"0 3 * * *\"\n    command: x\n    enabled: yes\n",
    );
    let args = [
        "--log-format",
        "json",
        "run",
        missing.to_str().unwrap(),
        bad.to_str().unwrap(),
    ];
    let mut chime = Chime::spawn(dir.path(), args);
    assert_eq!(chime.wait_exit(LIMIT).code(), Some(1));
    let (lines, _) = chime.finish(LIMIT);
    // Regression (issue 12): with --log-format json they were plain `error:` lines that
    // broke a JSON reader; now one `config.rejected` event, as at reload, and only it.
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let rejected = parse_event(&lines[0]).expect("a JSON event");
    assert_eq!(name(&rejected), "config.rejected", "{rejected}");
    assert_eq!(rejected["error_count"], 2, "{rejected}");
    let errors = rejected["errors"].as_array().expect("a list of errors");
    assert!(
        errors[0]
            .as_str()
            .is_some_and(|e| e.starts_with(&format!("{}: no such file", missing.display()))),
        "{rejected}"
    );
    assert!(
        errors[1]
            .as_str()
            .is_some_and(|e| e.starts_with(&format!("{}:5:14: ", bad.display()))),
        "the bad file's error is missing: {rejected}"
    );

    // On a terminal's format, people read lines, as from `check`.
    let text = support::run(
        dir.path(),
        ["run", "--log-format", "text", bad.to_str().unwrap()],
        LIMIT,
    );
    assert_eq!(text.code, Some(1), "{text:#?}");
    assert!(
        text.stderr
            .starts_with(&format!("error: {}:5:14: ", bad.display())),
        "{text:#?}"
    );
}

/// Regression (issue 12): a directory holding no schedule file gave "0 jobs in 0
/// files: ok" and no word. `run` warns at start and at a reload that empties it, and
/// keeps watching it: a file added later is loaded.
#[test]
fn an_empty_schedule_directory_is_warned_about_and_watched() {
    let dir = temp_dir();
    let schedules = dir.path().join("schedules.d");
    std::fs::create_dir(&schedules).unwrap();
    write(&schedules, "README.txt", "not a schedule");
    let mut chime = Chime::spawn(
        dir.path(),
        ["run", "--log-format", "json", schedules.to_str().unwrap()],
    );
    assert_service_event(&chime.wait_event("service.started", LIMIT), 0, 0);
    let warning = chime.wait_event("config.warning", LIMIT);
    let text = warning["warnings"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        text.starts_with(&format!(
            "{}: this directory holds no schedule files",
            schedules.display()
        )) && text.contains("`*.yaml` and `*.yml`"),
        "{warning}"
    );
    // Still watched: a file added is loaded.
    let file = write(&schedules, "tick.yaml", TICK);
    let reloaded = chime.wait_event("config.reloaded", LIMIT);
    assert_eq!(reloaded["added"], 1, "{reloaded}");
    // Emptied again: the warning again, with the reload.
    std::fs::remove_file(file).unwrap();
    let again = chime.wait_event("config.warning", LIMIT);
    assert!(
        again["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("holds no schedule files")),
        "{again}"
    );
    let reloaded = chime.wait_event("config.reloaded", LIMIT);
    assert_eq!(reloaded["removed"], 1, "{reloaded}");
    stop_with(&mut chime, libc::SIGTERM, 0, 0);
}

/// Regression (issue 8): a panic in the reload loader ended the reload loop and the
/// service stopped with `service.stopped` and exit 0, as if asked to. An internal
/// failure is `service.failed` and exit code 3, so `Restart=on-failure` restarts it.
#[test]
fn an_internal_failure_is_logged_and_exits_with_code_3() {
    let dir = temp_dir();
    write(dir.path(), "tick.yaml", TICK);
    let mut command = support::command(
        dir.path(),
        ["--log-format", "json", "run", dir.path().to_str().unwrap()],
    );
    command.env("CHIME_INJECT_FAULT", "reload-panic");
    let mut chime = command.spawn();
    chime.wait_event("service.started", LIMIT);
    chime.signal(libc::SIGHUP);
    let failed = chime.wait_event("service.failed", LIMIT);
    assert_fields(&failed, &["what", "error"]);
    assert_eq!(failed["what"], "reload", "{failed}");
    assert_eq!(failed["level"], "error", "{failed}");
    let status = chime.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(3), "{status:?}");
    let (lines, _) = chime.finish(LIMIT);
    assert!(
        !lines.iter().any(|line| line.contains("service.stopped")),
        "{lines:#?}"
    );
}

/// Regression (issue 9 item 7): `service.started` did not name the zone in use.
#[test]
fn service_started_names_the_default_zone() {
    let dir = temp_dir();
    write(dir.path(), "tick.yaml", TICK);
    let rule = "CET-1CEST,M3.5.0,M10.5.0/3";
    let mut command = support::command(
        dir.path(),
        ["--log-format", "json", "run", dir.path().to_str().unwrap()],
    );
    command.env("TZ", rule);
    let mut chime = command.spawn();
    let started = chime.wait_event("service.started", LIMIT);
    assert_fields(&started, &["version", "jobs", "files", "zone"]);
    assert_eq!(started["zone"], rule, "{started}");
    stop_with(&mut chime, libc::SIGTERM, 1, 1);
}

/// Regression (issue 9 item 6): replacing the schedule directory as a whole (`mv d
/// d.old; mkdir d`, as deployment tools do) lost the watch for good; later edits
/// waited for the 60 s re-check. The parent is watched too and the watch moves to the
/// new directory. (Waits are 20 s at most, well under the re-check.)
#[test]
fn a_replaced_schedule_directory_is_still_watched() {
    let root = temp_dir();
    let dir = root.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    write(&dir, "a.yaml", TICK);
    let mut chime = start(&dir, &[]);
    chime.wait_event("service.started", LIMIT);
    std::fs::rename(&dir, root.path().join("d.old")).unwrap();
    // Built aside and moved in whole, so that no reload sees it half-written.
    let staged = root.path().join(".staged");
    std::fs::create_dir(&staged).unwrap();
    write(
        &staged,
        "a.yaml",
        format!("{TICK}  tock:\n    schedule: \"* * * * * *\"\n    command: echo hi\n"),
    );
    std::fs::rename(&staged, &dir).unwrap();
    let reloaded = chime.wait_event("config.reloaded", LIMIT);
    assert_eq!(reloaded["added"], 1, "{reloaded}");
    // An edit inside the new directory is seen too: the watch moved to it.
    write(
        &dir,
        "b.yaml",
        "jobs:\n  third:\n    schedule: \"* * * * * *\"\n    command: echo hi\n",
    );
    let reloaded = chime.wait_event("config.reloaded", LIMIT);
    assert_eq!(reloaded["added"], 1, "{reloaded}");
    assert_eq!(reloaded["unchanged"], 2, "{reloaded}");
    stop_with(&mut chime, libc::SIGTERM, 3, 2);
}

/// Issue 9: a FIFO added to the schedule directory blocked the reload for good (SIGTERM
/// ignored after it), and one `config.rejected` line carried every error of the set.
#[test]
fn reload_with_a_fifo_and_150_errors_is_rejected_with_the_first_100() {
    let dir = temp_dir();
    write(dir.path(), "tick.yaml", TICK);
    let mut chime = start(dir.path(), &[]);
    chime.wait_event("service.started", LIMIT);

    let mut bad = String::from("jobs:\n");
    for index in 0..150 {
        bad.push_str(&format!("  bad-{index}: {{ command: x }}\n"));
    }
    write(dir.path(), "bad.yaml", bad);
    let fifo = dir.path().join("f.yaml");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path and a plain mode.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    chime.signal(libc::SIGHUP);

    // The watcher may have reloaded between the two writes; wait for the complete set.
    let rejected = chime.wait_for("config.rejected with 151 errors", LIMIT, |event| {
        name(event) == "config.rejected" && event["error_count"] == 151
    });
    assert_fields(&rejected, &["errors", "error_count"]);
    let errors = rejected["errors"].as_array().expect("errors is a list");
    assert_eq!(errors.len(), 100, "{rejected}");
    // Errors met while reading come before those of the files' contents.
    let fifo_error = format!("{}: not a regular file (a FIFO)", fifo.display());
    assert!(
        errors[0]
            .as_str()
            .is_some_and(|e| e.starts_with(&fifo_error)),
        "{rejected}"
    );
    assert!(
        errors[1..]
            .iter()
            .all(|e| e.as_str().is_some_and(|e| e.contains("has no `schedule`"))),
        "{rejected}"
    );
    // The old schedule keeps running, and the service still hears SIGTERM.
    chime.wait_event("run.started", LIMIT);
    let lines = stop_with(&mut chime, libc::SIGTERM, 1, 1);
    all_events(&lines);
}

fn jobs_file(names: &[&str]) -> String {
    let mut text = String::from("jobs:\n");
    for name in names {
        text.push_str(&format!(
            "  {name}:\n    schedule: \"* * * * * *\"\n    command: echo hi\n    timezone: UTC\n"
        ));
    }
    text
}

const OVER_TWO: &str = "error: the schedules define more than --max-jobs 2 jobs; raise \
                        --max-jobs (or CHIME_MAX_JOBS) if this is intended (`chime check` \
                        counts them all)";

#[test]
fn a_set_over_max_jobs_does_not_start() {
    let dir = temp_dir();
    write(dir.path(), "jobs.yaml", jobs_file(&["a", "b", "c"]));
    let path = dir.path().to_str().expect("temp dir path is UTF-8");
    for (args, env) in [
        (vec!["run", "--max-jobs", "2", path], None),
        (vec!["run", path], Some("2")),
    ] {
        let mut command = support::command(dir.path(), &args);
        if let Some(limit) = env {
            command.env("CHIME_MAX_JOBS", limit);
        }
        let out = command.run(LIMIT);
        assert_eq!(out.code, Some(1), "{out:#?}");
        // Not a terminal: the log is JSON, and the error a `config.rejected` event.
        let over = OVER_TWO.strip_prefix("error: ").expect("an error line");
        assert!(
            out.stderr.contains("\"event\":\"config.rejected\"") && out.stderr.contains(over),
            "{out:#?}"
        );
    }
    // At the limit it starts.
    let mut chime = start(dir.path(), &["--max-jobs", "3"]);
    chime.wait_event("service.started", LIMIT);
    stop_with(&mut chime, libc::SIGTERM, 3, 1);
}

#[test]
fn a_reload_over_max_jobs_is_rejected_and_the_old_set_keeps_running() {
    let dir = temp_dir();
    write(dir.path(), "a.yaml", jobs_file(&["a", "b"]));
    let mut chime = start(dir.path(), &["--max-jobs", "2"]);
    chime.wait_event("service.started", LIMIT);
    write(dir.path(), "c.yaml", jobs_file(&["c"]));
    chime.signal(libc::SIGHUP);
    let rejected = chime.wait_event("config.rejected", LIMIT);
    assert_eq!(rejected["error_count"], 1, "{rejected}");
    assert_eq!(
        rejected["errors"][0].as_str(),
        OVER_TWO.strip_prefix("error: "),
        "{rejected}"
    );
    // The old jobs still fire, the new one does not.
    chime.wait_for("run.started of a", LIMIT, |event| {
        name(event) == "run.started" && event["job"] == "a"
    });
    let lines = stop_with(&mut chime, libc::SIGTERM, 2, 1);
    assert!(
        all_events(&lines)
            .iter()
            .all(|event| !(name(event) == "run.started" && event["job"] == "c")),
        "job c of the rejected set ran"
    );
}

/// Regression (issue 12): `schedules/` pinged 127.0.0.1:8080, which a fresh machine
/// does not have, and logged retries and errors. The examples run clean offline, and
/// within the first half-minute show output, an `@reboot` job, the overlap policy and
/// a retry that succeeds.
#[test]
fn the_example_schedules_run_clean_offline() {
    let dir = temp_dir();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules");
    let mut chime = Chime::spawn(
        dir.path(),
        [
            std::ffi::OsStr::new("run"),
            std::ffi::OsStr::new("--log-format"),
            std::ffi::OsStr::new("json"),
            examples.as_os_str(),
        ],
    );
    let wait = std::time::Duration::from_secs(45);
    chime.wait_for("warm-cache's run.finished", wait, |e| {
        support::is(e, "run.finished", "warm-cache") && e["outcome"] == "success"
    });
    chime.wait_for("overlap-demo skipped", wait, |e| {
        support::is(e, "run.skipped", "overlap-demo") && e["reason"] == "overlap"
    });
    chime.wait_for("retry-demo retrying", wait, |e| {
        support::is(e, "run.retrying", "retry-demo")
    });
    let retried = chime.wait_for("retry-demo's run.finished", wait, |e| {
        support::is(e, "run.finished", "retry-demo")
    });
    assert_eq!(retried["outcome"], "success", "{retried}");
    assert_eq!(retried["attempts"], 2, "{retried}");
    chime.signal(libc::SIGTERM);
    chime.wait_event("service.stopped", LIMIT);
    assert_eq!(chime.wait_exit(LIMIT).code(), Some(0));
    let (lines, _) = chime.finish(LIMIT);
    let events: Vec<Value> = lines.iter().filter_map(|l| parse_event(l)).collect();
    assert_eq!(events.len(), lines.len(), "only JSON events: {lines:#?}");
    let bad: Vec<&Value> = events
        .iter()
        .filter(|e| e["level"] == "error" || name(e) == "config.warning")
        .collect();
    assert!(bad.is_empty(), "errors on a fresh machine: {bad:#?}");
    // Nothing of the disabled HTTP examples was tried.
    assert!(
        !lines.iter().any(|l| l.contains("127.0.0.1:8080")),
        "{lines:#?}"
    );
}
