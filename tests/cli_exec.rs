//! `chime exec JOB` (DESIGN.md §1, §4): one run now, in the foreground, with the job's
//! timeout and retries, logged as JSON on stderr; exit 0 on success, 1 otherwise.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{LIMIT, Output, assert_fields, name, run, temp_dir, write};

const JOBS: &str = r#"jobs:
  hello:
    schedule: "@daily"
    command: echo hello; echo to-stderr >&2
  flaky:
    schedule: "@daily"
    command: exit 4
    retry: { attempts: 2, delay: 200ms }
  slow:
    schedule: "@daily"
    command: sleep 30 & echo "$!"; wait
    timeout: 300ms
    kill_grace: 1s
  parked:
    schedule: "@daily"
    command: echo parked
    enabled: false
"#;

fn exec(job: &str) -> Output {
    let dir = temp_dir();
    write(dir.path(), "jobs.yaml", JOBS);
    let path = dir.path().to_str().expect("UTF-8 temp dir").to_string();
    run(
        dir.path(),
        ["--log-format", "json", "exec", job, path.as_str()],
        LIMIT,
    )
}

fn named<'a>(events: &'a [Value], event: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| name(e) == event).collect()
}

#[test]
fn succeeding_job_exits_0_and_its_output_is_logged() {
    let out = exec("hello");
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(out.stdout, "", "job output goes to the log, not stdout");
    let events = out.events();
    for event in &events {
        assert_fields(event, &[]);
    }
    let started = named(&events, "run.started");
    assert_eq!(started.len(), 1, "{out:#?}");
    assert_eq!(started[0]["job"], "hello");
    assert_eq!(started[0]["trigger"], "manual");
    assert_eq!(started[0]["attempt"], 1);
    let lines: Vec<(&str, &str)> = named(&events, "run.output")
        .iter()
        .map(|e| (e["stream"].as_str().unwrap(), e["line"].as_str().unwrap()))
        .collect();
    assert!(lines.contains(&("stdout", "hello")), "{lines:?}");
    assert!(lines.contains(&("stderr", "to-stderr")), "{lines:?}");
    let finished = named(&events, "run.finished");
    assert_eq!(finished.len(), 1, "{out:#?}");
    assert_eq!(finished[0]["outcome"], "success");
    assert_eq!(finished[0]["exit_code"], 0);
    assert_eq!(finished[0]["attempts"], 1);
    assert_eq!(finished[0]["run_id"], started[0]["run_id"]);
}

#[test]
fn failing_job_uses_its_retries_then_exits_1() {
    let out = exec("flaky");
    assert_eq!(out.code, Some(1), "{out:#?}");
    let events = out.events();
    let started = named(&events, "run.started");
    let attempts: Vec<(&Value, &Value)> = started
        .iter()
        .map(|e| (&e["attempt"], &e["trigger"]))
        .collect();
    assert_eq!(
        attempts,
        [
            (&Value::from(1), &Value::from("manual")),
            (&Value::from(2), &Value::from("retry"))
        ],
        "{out:#?}"
    );
    assert_eq!(started[0]["run_id"], started[1]["run_id"]);
    let retrying = named(&events, "run.retrying");
    assert_eq!(retrying.len(), 1, "{out:#?}");
    assert_eq!(retrying[0]["exit_code"], 4);
    let finished = named(&events, "run.finished");
    assert_eq!(finished.len(), 1, "{out:#?}");
    assert_eq!(finished[0]["outcome"], "failure");
    assert_eq!(finished[0]["attempts"], 2);
    assert_eq!(finished[0]["exit_code"], 4);
}

#[test]
fn unknown_job_exits_1_naming_it() {
    let out = exec("no-such-job");
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.starts_with("error: ") && out.stderr.contains("`no-such-job`"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("run.started"),
        "nothing ran: {}",
        out.stderr
    );
}

#[test]
fn timeout_ends_the_run_quickly_and_kills_its_process_group() {
    let out = exec("slow");
    assert_eq!(out.code, Some(1), "{out:#?}");
    // 300 ms timeout, then SIGTERM (sleep obeys it); far below sleep's 30 s.
    assert!(
        out.elapsed < Duration::from_secs(10),
        "took {:?}",
        out.elapsed
    );
    let events = out.events();
    let finished = named(&events, "run.finished");
    assert_eq!(finished.len(), 1, "{out:#?}");
    assert_eq!(finished[0]["outcome"], "timeout", "{out:#?}");
    assert_eq!(finished[0]["attempts"], 1);
    let pid: i32 = named(&events, "run.output")
        .first()
        .and_then(|e| e["line"].as_str())
        .and_then(|line| line.parse().ok())
        .unwrap_or_else(|| panic!("no pid logged: {out:#?}"));
    assert!(
        support::process::wait_dead(pid, LIMIT),
        "the job's `sleep` ({pid}) outlived its timeout"
    );
}

#[test]
fn disabled_job_still_runs_on_demand() {
    // `enabled: false` stops firing; `exec` is an explicit request.
    let out = exec("parked");
    assert_eq!(out.code, Some(0), "{out:#?}");
    let events = out.events();
    assert!(
        named(&events, "run.output")
            .iter()
            .any(|e| e["line"] == "parked"),
        "{out:#?}"
    );
}

#[test]
fn invalid_schedules_exit_1_before_running_anything() {
    let dir = temp_dir();
    let path = write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  hello:\n    schedule: \"@daily\"\n    command: echo hello\n    timeout: 5\n",
    );
    let out = run(
        dir.path(),
        [
            "--log-format",
            "json",
            "exec",
            "hello",
            path.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(
        out.stderr
            .contains(&format!("error: {}:5:14: ", path.display())),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("run.started"), "{}", out.stderr);
}

#[test]
fn sigterm_cancels_the_run_and_exits_1() {
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        JOBS.replace("timeout: 300ms", "timeout: 1h"),
    );
    let path = dir.path().to_str().unwrap().to_string();
    let mut chime = support::Chime::spawn(
        dir.path(),
        ["--log-format", "json", "exec", "slow", path.as_str()],
    );
    let started = chime.wait_event("run.started", LIMIT);
    let output = chime.wait_event("run.output", LIMIT);
    let pid: i32 = output["line"].as_str().unwrap().parse().unwrap();
    chime.signal(libc::SIGTERM);
    let finished = chime.wait_event("run.finished", LIMIT);
    assert_eq!(finished["run_id"], started["run_id"]);
    assert_eq!(finished["outcome"], "cancelled", "{finished}");
    assert_eq!(chime.wait_exit(LIMIT).code(), Some(1));
    assert!(
        support::process::wait_dead(pid, LIMIT),
        "the job's `sleep` ({pid}) outlived the cancelled run"
    );
}

/// The harness (tests/support) starts every process with directories of its own for
/// what the service may keep (state, runtime sockets, home), which jobs inherit with
/// `env_inherit: true`: two starts never share one.
#[test]
fn each_start_gets_directories_of_its_own() {
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  where:\n    schedule: \"@daily\"\n    env_inherit: true\n    \
         command: echo \"$STATE_DIRECTORY $RUNTIME_DIRECTORY $XDG_RUNTIME_DIR $HOME\"; \
         test -d \"$STATE_DIRECTORY\" -a -d \"$XDG_RUNTIME_DIR\"\n",
    );
    let path = dir.path().to_str().expect("UTF-8 temp dir").to_string();
    let owned = || -> Vec<String> {
        let out = run(
            dir.path(),
            ["--log-format", "json", "exec", "where", path.as_str()],
            LIMIT,
        );
        assert_eq!(out.code, Some(0), "the directories exist: {out:#?}");
        let events = out.events();
        let output = named(&events, "run.output");
        assert_eq!(output.len(), 1, "{out:#?}");
        let line = output[0]["line"].as_str().expect("a line").to_owned();
        line.split(' ').map(str::to_owned).collect()
    };
    let first = owned();
    let second = owned();
    assert_eq!(first.len(), 4, "{first:?}");
    for path in first.iter().chain(&second) {
        assert!(path.starts_with('/'), "{first:?} {second:?}");
        assert!(
            !path.starts_with(dir.path().to_str().expect("UTF-8")),
            "apart from the schedules: {path}"
        );
    }
    for (a, b) in first.iter().zip(&second) {
        assert_ne!(a, b, "two starts share a directory");
    }
}
