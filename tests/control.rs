//! The control socket through the real binary (DESIGN.md §11): `chime trigger`,
//! `pause`, `resume`, `kill` and `status` against a running service, and bad input on
//! the socket, each answered with an error and no effect on the service.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Chime, LIMIT, Output, is, name, process};

/// A service on `schedules` with its control socket and state in `place`.
struct Service {
    chime: Chime,
    socket: PathBuf,
    state: PathBuf,
    dir: PathBuf,
}

fn start(dir: &Path, place: &Path, extra: &[&str]) -> Service {
    let socket = place.join("chime.sock");
    let state = place.join("state");
    let mut args = vec![
        "--control-socket".to_string(),
        socket.display().to_string(),
        "--state-dir".to_string(),
        state.display().to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut chime = Chime::start(dir, &args);
    chime.wait_event("service.started", LIMIT);
    Service {
        chime,
        socket,
        state,
        dir: dir.to_path_buf(),
    }
}

impl Service {
    /// `chime --control-socket … ARGS…`, run to its end.
    fn client(&self, args: &[&str]) -> Output {
        let mut all = vec![
            "--control-socket".to_string(),
            self.socket.display().to_string(),
            "--state-dir".to_string(),
            self.state.display().to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        support::run(&self.dir, &all, LIMIT)
    }

    /// A request line sent raw; the answer's lines.
    fn raw(&self, bytes: &[u8]) -> Vec<Value> {
        let mut stream = UnixStream::connect(&self.socket).expect("connect");
        stream.write_all(bytes).expect("send");
        read_answer(stream)
    }

    /// The next `control.request` event.
    fn request_logged(&mut self) -> Value {
        self.chime
            .wait_for("control.request", LIMIT, |e| name(e) == "control.request")
    }

    /// The `control.request` of `command`, logged already or still to come (a run it
    /// started may be logged on either side of it).
    fn request_of(&mut self, command: &str) -> Value {
        let seen = self
            .chime
            .events()
            .iter()
            .find(|e| name(e) == "control.request" && e["command"] == command)
            .cloned();
        seen.unwrap_or_else(|| {
            self.chime.wait_for(command, LIMIT, |e| {
                name(e) == "control.request" && e["command"] == command
            })
        })
    }
}

fn read_answer(mut stream: UnixStream) -> Vec<Value> {
    stream.set_read_timeout(Some(LIMIT)).expect("read timeout");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read the answer");
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

fn error_of(answer: &[Value]) -> String {
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert_eq!(answer[0]["ok"], false, "{answer:?}");
    assert_eq!(answer[0]["v"], 1);
    answer[0]["error"].as_str().expect("an error").to_string()
}

/// A job that never fires by itself (once a year, at new year).
fn manual_job(name: &str, command: &str, extra: &str) -> String {
    format!("  {name}:\n    schedule: \"0 0 1 1 *\"\n    command: {command:?}\n{extra}")
}

fn schedules(dir: &Path, jobs: &[String]) {
    support::write(dir, "jobs.yaml", format!("jobs:\n{}", jobs.concat()));
}

#[test]
fn trigger_runs_a_job_now_and_wait_streams_its_output_and_outcome() {
    let dir = support::temp_dir();
    let place = support::temp_dir();
    schedules(
        dir.path(),
        &[
            manual_job("hello", "echo one; echo two >&2; echo three", ""),
            manual_job(
                "fails",
                "echo oops; exit 3",
                "    retry: { attempts: 2, delay: 100ms }\n",
            ),
            manual_job("off", "echo disabled but asked", "    enabled: false\n"),
        ],
    );
    let mut service = start(dir.path(), place.path(), &[]);

    let out = service.client(&["trigger", "hello", "--wait"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(out.stdout, "one\nthree\n");
    assert!(out.stderr.contains("two\n"), "{out:#?}");
    assert!(out.stderr.contains("succeeded"), "{out:#?}");
    let started = service.chime.wait_for("run.started of hello", LIMIT, |e| {
        is(e, "run.started", "hello")
    });
    let logged = service.request_of("trigger");
    assert_eq!(logged["command"], "trigger");
    assert_eq!(logged["target"], "hello");
    assert_eq!(logged["result"], "ok");
    // SAFETY: geteuid has no preconditions.
    assert_eq!(logged["caller_uid"], u64::from(unsafe { libc::geteuid() }));
    assert_eq!(started["trigger"], "manual");
    assert_eq!(started["caller_uid"], logged["caller_uid"]);
    // Announced once the process is spawned, so it carries its pid beside the caller.
    assert!(
        started["pid"].as_u64().is_some_and(|pid| pid > 0),
        "{started}"
    );

    // A failing run: retried as its job says, then exit 1 saying the run failed.
    let out = service.client(&["trigger", "fails", "--wait"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stderr.contains("the run failed"), "{out:#?}");
    assert!(out.stderr.contains("retrying"), "{out:#?}");
    assert_eq!(out.stdout, "oops\noops\n");
    let finished = service.chime.wait_for("run.finished of fails", LIMIT, |e| {
        is(e, "run.finished", "fails")
    });
    assert_eq!(finished["attempts"], 2);

    // A disabled job runs when asked by hand.
    let out = service.client(&["trigger", "off", "--wait"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(out.stdout, "disabled but asked\n");

    // A request that fails says so, and nothing runs.
    let out = service.client(&["trigger", "nope", "--wait"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(
        out.stderr
            .contains("the request failed: no job named `nope`"),
        "{out:#?}"
    );
    service.chime.stop();
    let nope_runs = service
        .chime
        .events()
        .iter()
        .filter(|e| e["job"] == "nope")
        .count();
    assert_eq!(nope_runs, 0);
}

#[test]
fn client_commands_fail_clearly_when_the_service_is_not_running() {
    let dir = support::temp_dir();
    let socket = dir.path().join("absent.sock");
    let socket = socket.display().to_string();
    for args in [
        vec!["trigger", "x"],
        vec!["pause", "x"],
        vec!["resume", "--all"],
        vec!["kill", "x"],
    ] {
        let mut all = vec!["--control-socket", &socket];
        all.extend(args.iter().copied());
        let out = support::run(dir.path(), &all, LIMIT);
        assert_eq!(out.code, Some(1), "{args:?}: {out:#?}");
        assert!(
            out.stderr.contains("the service is not running"),
            "{args:?}: {out:#?}"
        );
    }
}

/// The pids of a job's runs in flight, from `chime status --json`.
fn runs_in_flight(service: &Service, job: &str) -> Vec<Value> {
    let out = service.client(&["status", "--json", service.dir.to_str().expect("utf-8")]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    out.stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("JSON"))
        .find(|line| line["job"] == job)
        .and_then(|line| line["runs_in_flight"].as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn trigger_while_running_follows_each_overlap_policy() {
    let dir = support::temp_dir();
    let place = support::temp_dir();
    let long = "sleep 30";
    schedules(
        dir.path(),
        &[
            manual_job("skip", long, "    overlap: skip\n"),
            manual_job("allow", long, "    overlap: allow\n"),
            manual_job(
                "replace",
                long,
                "    overlap: replace\n    kill_grace: 2s\n",
            ),
        ],
    );
    let mut service = start(dir.path(), place.path(), &[]);
    for job in ["skip", "allow", "replace"] {
        let out = service.client(&["trigger", job]);
        assert_eq!(out.code, Some(0), "{out:#?}");
        service
            .chime
            .wait_for("the first run", LIMIT, |e| is(e, "run.started", job));
    }

    // skip: the second is refused, and said so.
    let out = service.client(&["trigger", "skip"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stderr.contains("overlap policy is skip"), "{out:#?}");
    let skipped = service
        .chime
        .wait_for("run.skipped", LIMIT, |e| is(e, "run.skipped", "skip"));
    assert_eq!(skipped["reason"], "overlap");

    // allow: a second run beside the first.
    let out = service.client(&["trigger", "allow"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    service
        .chime
        .wait_for("the second run", LIMIT, |e| is(e, "run.started", "allow"));
    assert_eq!(runs_in_flight(&service, "allow").len(), 2);

    // replace: the running one is ended (by: replace), then the new one starts.
    let first = runs_in_flight(&service, "replace");
    assert_eq!(first.len(), 1);
    let out = service.client(&["trigger", "replace"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let ended = service.chime.wait_for("the replaced run", LIMIT, |e| {
        is(e, "run.finished", "replace")
    });
    assert_eq!(ended["run_id"], first[0]["run_id"]);
    assert_eq!(ended["outcome"], "cancelled");
    assert_eq!(ended["by"], "replace");
    let second = service
        .chime
        .wait_for("the new run", LIMIT, |e| is(e, "run.started", "replace"));
    assert_eq!(second["trigger"], "manual");
    assert_ne!(second["run_id"], first[0]["run_id"]);

    for job in ["skip", "allow", "replace"] {
        let out = service.client(&["kill", job]);
        assert_eq!(out.code, Some(0), "{out:#?}");
    }
    service.chime.stop();
}

#[test]
fn trigger_waits_for_a_slot_under_the_concurrency_limit() {
    let dir = support::temp_dir();
    let place = support::temp_dir();
    schedules(
        dir.path(),
        &[
            manual_job("hog", "sleep 30", ""),
            manual_job("next", "echo my turn", ""),
        ],
    );
    let mut service = start(dir.path(), place.path(), &["--max-concurrent-runs", "1"]);
    assert_eq!(service.client(&["trigger", "hog"]).code, Some(0));
    service
        .chime
        .wait_for("hog", LIMIT, |e| is(e, "run.started", "hog"));
    let out = service.client(&["trigger", "next"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stderr.contains("waiting for a free slot"), "{out:#?}");
    assert!(runs_in_flight(&service, "next").is_empty());
    // A manual run waiting keeps its place: a second one is refused, not queued.
    let again = service.client(&["trigger", "next"]);
    assert_eq!(again.code, Some(1), "{again:#?}");
    assert!(again.stderr.contains("has a run waiting"), "{again:#?}");
    assert_eq!(service.client(&["kill", "hog"]).code, Some(0));
    let started = service.chime.wait_for("next, once hog ended", LIMIT, |e| {
        is(e, "run.started", "next")
    });
    assert_eq!(started["trigger"], "manual");
    assert!(started["queued_ms"].as_f64().is_some(), "{started}");
    service.chime.stop();
    let next_runs = service
        .chime
        .events()
        .iter()
        .filter(|e| is(e, "run.started", "next"))
        .count();
    assert_eq!(next_runs, 1, "{}", service.chime.transcript());
}

#[test]
fn pause_survives_a_restart_and_resume_never_replays() {
    let dir = support::temp_dir();
    let place = support::temp_dir();
    support::write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  tick:\n    schedule: \"*/2 * * * * *\"\n    command: \"true\"\n    catch_up: latest\n  other:\n    schedule: \"0 0 1 1 *\"\n    command: \"true\"\n",
    );
    let mut service = start(dir.path(), place.path(), &[]);
    service
        .chime
        .wait_for("a fire of tick", LIMIT, |e| is(e, "run.started", "tick"));
    let out = service.client(&["pause", "tick"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stdout.contains("paused tick"), "{out:#?}");
    assert!(out.stderr.contains("kept across restarts"), "{out:#?}");
    let skipped = service
        .chime
        .wait_for("a paused fire", LIMIT, |e| is(e, "run.skipped", "tick"));
    assert_eq!(skipped["reason"], "paused");
    // Pausing twice is no error; an unknown job is, and pauses nothing.
    let out = service.client(&["pause", "tick"]);
    assert!(out.stdout.contains("tick was already paused"), "{out:#?}");
    let out = service.client(&["pause", "other", "nope"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stderr.contains("no job named `nope`"), "{out:#?}");
    // A paused job still runs when asked by hand.
    let out = service.client(&["trigger", "tick", "--wait"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let manual = service
        .chime
        .wait_for("the manual run", LIMIT, |e| is(e, "run.started", "tick"));
    assert_eq!(manual["trigger"], "manual");
    // A reload that changes the job keeps it paused.
    support::write_atomic(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  tick:\n    schedule: \"*/2 * * * * *\"\n    command: \"true\"\n    catch_up: latest\n    timeout: 1m\n  other:\n    schedule: \"0 0 1 1 *\"\n    command: \"true\"\n",
    );
    let reloaded = service.chime.wait_event("config.reloaded", LIMIT);
    assert_eq!(reloaded["changed"], 1, "{reloaded}");
    let skipped = service
        .chime
        .wait_for("a paused fire after the reload", LIMIT, |e| {
            is(e, "run.skipped", "tick")
        });
    assert_eq!(skipped["reason"], "paused");
    service.chime.stop();

    // Down for a while: `catch_up: latest` would run a fire missed meanwhile.
    std::thread::sleep(Duration::from_secs(3));
    let out = support::run(
        dir.path(),
        [
            "--state-dir",
            service.state.to_str().expect("utf-8"),
            "--control-socket",
            "none",
            "status",
            "--json",
            dir.path().to_str().expect("utf-8"),
        ],
        LIMIT,
    );
    let tick: Value = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
        .find(|l| l["job"] == "tick")
        .expect("tick in status");
    assert_eq!(
        tick["paused"], true,
        "the stored pause, service down: {out:#?}"
    );

    let mut service = start(dir.path(), place.path(), &[]);
    let skipped = service
        .chime
        .wait_for("a paused fire after the restart", LIMIT, |e| {
            is(e, "run.skipped", "tick")
        });
    assert_eq!(skipped["reason"], "paused");
    let out = service.client(&["status", dir.path().to_str().expect("utf-8")]);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("tick") && l.ends_with("paused")),
        "{out:#?}"
    );
    assert!(
        !service
            .chime
            .events()
            .iter()
            .any(|e| is(e, "run.started", "tick")),
        "a paused job ran: {}",
        service.chime.transcript()
    );
    let resumed_at = chrono::Utc::now();
    let out = service.client(&["resume", "tick"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let started = service.chime.wait_for("tick after the resume", LIMIT, |e| {
        is(e, "run.started", "tick")
    });
    assert_eq!(started["trigger"], "schedule", "{started}");
    assert!(
        support::time(&started, "scheduled_at") >= resumed_at - chrono::TimeDelta::seconds(1),
        "a fire from before the resume was replayed: {started}"
    );
    service.chime.stop();
    let replays = service
        .chime
        .events()
        .iter()
        .filter(|e| is(e, "run.started", "tick") && e["trigger"] != "schedule")
        .count();
    assert_eq!(replays, 0, "{}", service.chime.transcript());
}

#[test]
fn pauses_without_a_state_store_are_in_memory_and_say_so() {
    let dir = support::temp_dir();
    let place = support::temp_dir();
    schedules(dir.path(), &[manual_job("a", "true", "")]);
    let socket = place.path().join("chime.sock");
    let socket = socket.to_str().expect("utf-8");
    let mut chime = Chime::start(
        dir.path(),
        &["--control-socket", socket, "--state-dir", "none"],
    );
    chime.wait_event("service.started", LIMIT);
    let out = support::run(
        dir.path(),
        ["--control-socket", socket, "pause", "--all"],
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stdout.contains("paused a"), "{out:#?}");
    assert!(out.stderr.contains("memory only"), "{out:#?}");
    chime.stop();
}

#[test]
fn kill_ends_a_group_that_ignores_sigterm_without_a_retry() {
    let dir = support::temp_dir();
    let place = support::temp_dir();
    // Leader and a child both ignore SIGTERM.
    let stubborn = "trap '' TERM; sh -c \"trap '' TERM; sleep 60\" & sleep 60; wait";
    schedules(
        dir.path(),
        &[manual_job(
            "stubborn",
            stubborn,
            "    kill_grace: 1s\n    retry: { attempts: 3, delay: 100ms }\n",
        )],
    );
    let mut service = start(dir.path(), place.path(), &[]);
    assert_eq!(service.client(&["trigger", "stubborn"]).code, Some(0));
    let started = service
        .chime
        .wait_for("the run", LIMIT, |e| is(e, "run.started", "stubborn"));

    // Status while the run is in flight: its pid and how long it has run.
    let mut runs = Vec::new();
    support::wait_until("the run's pid in status", LIMIT, || {
        runs = runs_in_flight(&service, "stubborn");
        runs.len() == 1 && runs[0]["pid"].as_u64().is_some()
    });
    assert_eq!(runs[0]["run_id"], started["run_id"]);
    assert!(runs[0]["elapsed_ms"].as_u64().is_some(), "{runs:?}");
    let pgid = libc::pid_t::try_from(runs[0]["pid"].as_u64().expect("pid")).expect("pid_t");
    service.chime.guard_group(pgid);
    support::wait_until("the group's second member", LIMIT, || {
        process::live_group_members(pgid).len() >= 3
    });
    let out = service.client(&["status", service.dir.to_str().expect("utf-8")]);
    assert!(out.stdout.contains("RUNS IN FLIGHT"), "{out:#?}");
    assert!(out.stdout.contains(&format!("pid {pgid}")), "{out:#?}");

    let before = Instant::now();
    let out = service.client(&["kill", started["run_id"].as_str().expect("run id")]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stdout.contains("killing run"), "{out:#?}");
    let finished = service.chime.wait_for("the killed run", LIMIT, |e| {
        is(e, "run.finished", "stubborn")
    });
    assert_eq!(finished["outcome"], "cancelled");
    assert_eq!(finished["by"], "operator");
    assert_eq!(
        finished["caller_uid"],
        u64::from(unsafe { libc::geteuid() })
    );
    assert_eq!(finished["attempts"], 1, "no retry after a kill");
    assert_eq!(finished["signal"], libc::SIGKILL);
    assert!(
        before.elapsed() >= Duration::from_millis(900),
        "SIGKILL came before kill_grace"
    );
    assert!(
        process::live_group_members(pgid).is_empty(),
        "the group is gone"
    );
    let logged = service.request_of("kill");
    assert_eq!(logged["target"], started["run_id"]);
    assert_eq!(logged["result"], "ok");

    // Nothing left to kill: said so.
    let out = service.client(&["kill", "stubborn"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stderr.contains("has no run in flight"), "{out:#?}");
    let out = service.client(&["kill", "0123456789abcdef"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stderr.contains("no run or job named"), "{out:#?}");
    service.chime.stop();
    let retries = service
        .chime
        .events()
        .iter()
        .filter(|e| name(e) == "run.retrying")
        .count();
    assert_eq!(retries, 0);
}

#[test]
fn a_second_client_is_served_while_the_first_follows_a_run() {
    let dir = support::temp_dir();
    let place = support::temp_dir();
    schedules(
        dir.path(),
        &[
            manual_job(
                "long",
                "echo started; while [ ! -e go ]; do sleep 0.05; done; echo done",
                "",
            ),
            manual_job("other", "true", ""),
        ],
    );
    let mut service = start(dir.path(), place.path(), &[]);
    let socket = service.socket.display().to_string();
    let follower = support::command(
        dir.path(),
        [
            "--control-socket",
            socket.as_str(),
            "trigger",
            "long",
            "--wait",
        ],
    )
    .spawn();
    service
        .chime
        .wait_for("the followed run", LIMIT, |e| is(e, "run.output", "long"));
    // Meanwhile, another client.
    let out = service.client(&["pause", "other"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(runs_in_flight(&service, "long").len(), 1);
    std::fs::write(dir.path().join("go"), b"").expect("release the run");
    let mut follower = follower;
    let status = follower.wait_exit(LIMIT);
    let (_, stdout) = follower.finish(LIMIT);
    assert_eq!(status.code(), Some(0));
    assert_eq!(stdout, "started\ndone\n");
    service.chime.stop();
}

#[test]
fn bad_input_on_the_socket_is_answered_with_an_error_and_changes_nothing() {
    let dir = support::temp_dir();
    let place = support::temp_dir();
    schedules(dir.path(), &[manual_job("a", "echo ran", "")]);
    let mut service = start(dir.path(), place.path(), &[]);

    // A slow client first: it holds its connection while the others are served.
    let slow = UnixStream::connect(&service.socket).expect("connect");
    let slow_since = Instant::now();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "garbage",
            b"\x00\xffhello there\n".to_vec(),
            "not a valid request",
        ),
        (
            "not an object",
            b"[1,2,3]\n".to_vec(),
            "not a valid request",
        ),
        (
            "unknown command",
            b"{\"v\":1,\"cmd\":\"reboot\"}\n".to_vec(),
            "unknown command `reboot`",
        ),
        (
            "unknown field",
            b"{\"v\":1,\"cmd\":\"status\",\"sudo\":true}\n".to_vec(),
            "not a valid request",
        ),
        (
            "another version",
            b"{\"v\":2,\"cmd\":\"status\"}\n".to_vec(),
            "protocol version 2",
        ),
        (
            "unknown job",
            b"{\"v\":1,\"cmd\":\"trigger\",\"job\":\"zz\"}\n".to_vec(),
            "no job named `zz`",
        ),
        (
            "no job",
            b"{\"v\":1,\"cmd\":\"trigger\"}\n".to_vec(),
            "trigger needs a job",
        ),
        (
            "pause neither",
            b"{\"v\":1,\"cmd\":\"pause\"}\n".to_vec(),
            "pause needs job names or all",
        ),
        (
            "oversized line",
            vec![b'x'; 200 * 1024],
            "longer than 65536 bytes",
        ),
    ];
    for (what, bytes, expected) in &cases {
        let error = error_of(&service.raw(bytes));
        assert!(error.contains(expected), "{what}: {error}");
        let logged = service.request_logged();
        assert!(
            logged["result"]
                .as_str()
                .is_some_and(|r| r.contains(expected)),
            "{what}: {logged}"
        );
        assert_eq!(logged["level"], "warn");
    }

    // Half-closed: a request without its newline, then the write side shut.
    let mut half = UnixStream::connect(&service.socket).expect("connect");
    half.write_all(b"{\"v\":1,\"cmd\":\"status\"")
        .expect("send");
    half.shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let error = error_of(&read_answer(half));
    assert!(error.contains("closed before the request's end"), "{error}");

    // The slow client is answered once its time is up, not before.
    let error = error_of(&read_answer(slow));
    assert!(error.contains("no request within 5 s"), "{error}");
    assert!(
        slow_since.elapsed() >= Duration::from_secs(4),
        "{:?}",
        slow_since.elapsed()
    );

    // Nothing of it changed the service: no run, no pause, and it still works.
    assert!(
        !service
            .chime
            .events()
            .iter()
            .any(|e| name(e) == "run.started"),
        "{}",
        service.chime.transcript()
    );
    let status = service.raw(b"{\"v\":1,\"cmd\":\"status\"}\n");
    assert_eq!(status[0]["ok"], true, "{status:?}");
    assert_eq!(status[0]["paused"], serde_json::json!([]));
    let out = service.client(&["trigger", "a", "--wait"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(out.stdout, "ran\n");
    service.chime.stop();
}

/// Runs `chime ARGS…` as `nobody` (uid 65534) through setpriv.
fn as_nobody(dir: &Path, args: &[&str]) -> Output {
    let mut command = support::command(dir, args);
    command.via([
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ]);
    command.run(LIMIT)
}

#[test]
fn a_peer_that_is_not_allowed_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to run a client as another uid");
        return;
    }
    if std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: setpriv (util-linux) is not installed");
        return;
    }
    let dir = support::temp_dir();
    let place = support::temp_dir();
    schedules(dir.path(), &[manual_job("a", "true", "")]);
    // The socket's directory must be reachable by nobody's path permissions.
    use std::os::unix::fs::PermissionsExt;
    for path in [dir.path(), place.path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let mut service = start(dir.path(), place.path(), &[]);
    let socket = service.socket.display().to_string();
    let mode = std::fs::metadata(&service.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "the socket is created 0660");

    // At 0660, the file system already keeps nobody out, and the client says why.
    let out = as_nobody(dir.path(), &["--control-socket", &socket, "pause", "a"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stderr.contains("permission denied"), "{out:#?}");
    assert!(out.stderr.contains("members of its group"), "{out:#?}");

    // Opened to everyone by mistake: SO_PEERCRED still refuses the peer.
    std::fs::set_permissions(&service.socket, std::fs::Permissions::from_mode(0o666))
        .expect("chmod the socket");
    let out = as_nobody(dir.path(), &["--control-socket", &socket, "pause", "a"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(
        out.stderr.contains("uid 65534 may not control this chime"),
        "{out:#?}"
    );
    let logged = service.request_logged();
    assert_eq!(logged["caller_uid"], 65534);
    assert!(
        logged["result"]
            .as_str()
            .is_some_and(|r| r.contains("may not"))
    );
    let status = service.raw(b"{\"v\":1,\"cmd\":\"status\"}\n");
    assert_eq!(
        status[0]["paused"],
        serde_json::json!([]),
        "nothing was paused"
    );
    service.chime.stop();
    assert!(!service.socket.exists(), "the socket is removed at stop");
}

/// A pause or resume request, as the model-based test sends it.
#[derive(Debug, Clone)]
enum Op {
    Pause(Vec<usize>),
    Resume(Vec<usize>),
    PauseAll,
    ResumeAll,
}

/// Random sequences of pauses and resumes (some naming a job that does not exist),
/// sent to one service, checked against a plain set: every answer says what changed,
/// a request naming an unknown job changes nothing, and `status` lists the model.
#[test]
fn pauses_and_resumes_follow_a_plain_set() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use std::collections::BTreeSet;

    const NAMES: [&str; 4] = ["a", "b", "c", "ghost"];
    let dir = support::temp_dir();
    let place = support::temp_dir();
    schedules(
        dir.path(),
        &["a", "b", "c"].map(|job| manual_job(job, "true", "")),
    );
    let mut service = start(dir.path(), place.path(), &[]);
    let names = || proptest::collection::vec(0..NAMES.len(), 1..4);
    let op = prop_oneof![
        names().prop_map(Op::Pause),
        names().prop_map(Op::Resume),
        Just(Op::PauseAll),
        Just(Op::ResumeAll),
    ];
    let request = |op: &Op| -> String {
        let (cmd, jobs, all) = match op {
            Op::Pause(jobs) => ("pause", jobs.clone(), false),
            Op::Resume(jobs) => ("resume", jobs.clone(), false),
            Op::PauseAll => ("pause", Vec::new(), true),
            Op::ResumeAll => ("resume", Vec::new(), true),
        };
        let jobs: Vec<&str> = jobs.iter().map(|&i| NAMES[i]).collect();
        let mut line = if all {
            serde_json::json!({"v": 1, "cmd": cmd, "all": true})
        } else {
            serde_json::json!({"v": 1, "cmd": cmd, "jobs": jobs})
        }
        .to_string();
        line.push('\n');
        line
    };
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().expect("a name").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut runner = TestRunner::new(Config {
        cases: 12,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op, 1..16), |ops| {
        // Each case starts with nothing paused.
        let reset = service.raw(b"{\"v\":1,\"cmd\":\"resume\",\"all\":true}\n");
        prop_assert_eq!(&reset[0]["ok"], &Value::Bool(true));
        let mut model: BTreeSet<&str> = BTreeSet::new();
        for op in &ops {
            let answer = service.raw(request(op).as_bytes());
            let answer = &answer[0];
            let (pause, targets): (bool, Vec<&str>) = match op {
                Op::Pause(jobs) => (true, jobs.iter().map(|&i| NAMES[i]).collect()),
                Op::Resume(jobs) => (false, jobs.iter().map(|&i| NAMES[i]).collect()),
                Op::PauseAll => (true, vec!["a", "b", "c"]),
                Op::ResumeAll => (false, model.iter().copied().collect()),
            };
            if targets.contains(&"ghost") {
                prop_assert_eq!(&answer["ok"], &Value::Bool(false), "{:?}: {}", op, answer);
                prop_assert!(
                    answer["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("`ghost`"))
                );
            } else {
                prop_assert_eq!(&answer["ok"], &Value::Bool(true), "{:?}: {}", op, answer);
                let mut changed = Vec::new();
                let mut unchanged = Vec::new();
                for job in targets {
                    let did = if pause {
                        model.insert(job)
                    } else {
                        model.remove(job)
                    };
                    if did {
                        changed.push(job)
                    } else {
                        unchanged.push(job)
                    }
                }
                let (done, already) = if pause {
                    ("paused", "already_paused")
                } else {
                    ("resumed", "not_paused")
                };
                prop_assert_eq!(strings(&answer[done]), changed, "{:?}: {}", op, answer);
                prop_assert_eq!(strings(&answer[already]), unchanged, "{:?}: {}", op, answer);
            }
            let status = service.raw(b"{\"v\":1,\"cmd\":\"status\"}\n");
            let listed = strings(&status[0]["paused"]);
            let expected: Vec<String> = model.iter().map(|s| s.to_string()).collect();
            prop_assert_eq!(listed, expected, "after {:?}", op);
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    service.chime.stop();
}

#[test]
fn connections_beyond_the_limit_are_turned_away_and_the_service_goes_on() {
    let dir = support::temp_dir();
    let place = support::temp_dir();
    schedules(dir.path(), &[manual_job("a", "echo ran", "")]);
    let mut service = start(dir.path(), place.path(), &[]);
    // 32 clients that send nothing hold every slot.
    let holders: Vec<UnixStream> = (0..32)
        .map(|_| UnixStream::connect(&service.socket).expect("connect"))
        .collect();
    let error = error_of(&service.raw(b"{\"v\":1,\"cmd\":\"status\"}\n"));
    assert!(error.contains("busy"), "{error}");
    drop(holders);
    // Their slots come back as they go; then requests are served again.
    support::wait_until("a free slot", LIMIT, || {
        service.raw(b"{\"v\":1,\"cmd\":\"status\"}\n")[0]["ok"] == true
    });
    let out = service.client(&["trigger", "a", "--wait"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(out.stdout, "ran\n");
    service.chime.stop();
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_is_not_taken_over() {
    let dir = support::temp_dir();
    let place = support::temp_dir();
    schedules(dir.path(), &[manual_job("a", "echo ran", "")]);
    // A socket file left by a chime that died: nothing answers on it.
    let stale =
        std::os::unix::net::UnixListener::bind(place.path().join("chime.sock")).expect("bind");
    drop(stale);
    assert!(place.path().join("chime.sock").exists());
    let mut service = start(dir.path(), place.path(), &[]);
    let out = service.client(&["trigger", "a", "--wait"]);
    assert_eq!(out.code, Some(0), "{out:#?}");

    // A second service on the same socket refuses to start, and says how to fix it.
    let socket = service.socket.display().to_string();
    let other = support::temp_dir();
    let second = support::service(dir.path(), &["--control-socket", &socket])
        .env("STATE_DIRECTORY", other.path())
        .run(LIMIT);
    assert_eq!(second.code, Some(1), "{second:#?}");
    assert!(
        second.stderr.contains("another chime answers"),
        "{second:#?}"
    );
    assert!(second.stderr.contains("--control-socket"), "{second:#?}");
    // The first still serves.
    let out = service.client(&["trigger", "a", "--wait"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    service.chime.stop();
}
