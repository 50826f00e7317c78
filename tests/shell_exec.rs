//! The shell executor against real processes: outcomes, environment, streamed output,
//! and termination of whole process groups (DESIGN.md §4).
//!
//! Every wait is bounded by `tokio::time::timeout`; nothing sleeps to let time pass.
//! "Dead" below means gone or a zombie: chime reaps its own child, but members
//! re-parented to init are reaped by init, whenever it gets to it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chime::events::{Event, Events, Outcome, Stream};
use chime::exec::{
    Attempt, AttemptResult, DEFAULT_OUTPUT_LIMIT, MAX_LINE_BYTES, OutputSink, shell,
};
use chime::job::{Action, Job, ShellCommand};
use chrono::{DateTime, Utc};
use support::process;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

/// Bound on any single wait; far above what a passing test needs.
const LIMIT: Duration = Duration::from_secs(20);

/// What "promptly" means for runs that must not wait for a 30 s / 1000 s child.
const PROMPT: Duration = Duration::from_secs(5);

fn job(command: ShellCommand) -> Job {
    Job {
        kill_grace: Duration::from_millis(300),
        ..Job::new("test-job", "* * * * *", Action::Shell(command)).unwrap()
    }
}

fn script(text: &str) -> Job {
    job(ShellCommand::Script(text.into()))
}

fn argv(args: &[&str]) -> Job {
    job(ShellCommand::Argv(
        args.iter().map(|a| a.to_string()).collect(),
    ))
}

fn scheduled_at() -> DateTime<Utc> {
    "2024-05-06T07:08:09.010Z".parse().unwrap()
}

/// An attempt in progress, with its events as they come.
struct Running {
    handle: JoinHandle<AttemptResult>,
    events: UnboundedReceiver<Event>,
    cancel: CancellationToken,
    sink: Arc<OutputSink>,
    started: Instant,
}

fn start(job: Job) -> Running {
    start_with_limit(job, DEFAULT_OUTPUT_LIMIT)
}

fn start_with_limit(job: Job, limit: u64) -> Running {
    let (events, rx) = Events::channel();
    let sink = Arc::new(OutputSink::new(
        events,
        job.name.as_str().into(),
        "run-1".into(),
        limit,
    ));
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let attempt = Attempt {
        deadline: job.timeout.map(|t| started + t),
        job: Arc::new(job),
        run_id: "run-1".into(),
        scheduled_at: scheduled_at(),
        attempt: 3,
        cancel: cancel.clone(),
    };
    Running {
        handle: tokio::spawn(shell::execute(attempt, Arc::clone(&sink))),
        events: rx,
        cancel,
        sink,
        started,
    }
}

impl Running {
    /// The next output line, waiting for it while the job runs.
    async fn next_line(&mut self) -> (Stream, String) {
        loop {
            let event = timeout(LIMIT, self.events.recv())
                .await
                .expect("an output line in time")
                .expect("the sink is alive");
            if let Event::RunOutput { stream, line, .. } = event {
                return (stream, line);
            }
        }
    }

    async fn next_pid(&mut self) -> libc::pid_t {
        let (stream, line) = self.next_line().await;
        assert_eq!(stream, Stream::Stdout);
        line.parse().expect("a pid line")
    }

    /// The result, how long the attempt took, and every event not yet received.
    async fn finish(mut self) -> (AttemptResult, Duration, Vec<Event>) {
        let result = timeout(LIMIT, &mut self.handle)
            .await
            .expect("the attempt ends in time")
            .expect("the attempt does not panic");
        let elapsed = self.started.elapsed();
        // The executor is done: whatever it emitted is already queued.
        let mut rest = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            rest.push(event);
        }
        (result, elapsed, rest)
    }
}

/// Runs `job` to its end: result, elapsed time and output lines.
async fn run(job: Job) -> (AttemptResult, Duration, Vec<(Stream, String)>) {
    let (result, elapsed, events) = start(job).finish().await;
    (result, elapsed, output_lines(&events))
}

fn output_lines(events: &[Event]) -> Vec<(Stream, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::RunOutput { stream, line, .. } => Some((*stream, line.clone())),
            _ => None,
        })
        .collect()
}

fn stdout(lines: &[(Stream, String)]) -> Vec<&str> {
    lines
        .iter()
        .filter(|(s, _)| *s == Stream::Stdout)
        .map(|(_, l)| l.as_str())
        .collect()
}

/// `kill(target, 0)` failed with ESRCH: no such process (or, negative, no such group).
fn no_such(target: libc::pid_t) -> bool {
    // SAFETY: kill(2) with signal 0 only checks for existence.
    let rc = unsafe { libc::kill(target, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Live (non-zombie) members of group `pgid`.
fn live_members(pgid: libc::pid_t) -> Vec<libc::pid_t> {
    if no_such(-pgid) {
        return Vec::new();
    }
    process::live_group_members(pgid)
        .iter()
        .map(|stat| stat.pid)
        .collect()
}

/// After the attempt: its leader is reaped (no zombie of chime's) and nothing of its
/// group still runs.
fn assert_group_gone(pgid: libc::pid_t) {
    assert!(no_such(pgid), "leader {pgid} not reaped");
    assert_eq!(
        live_members(pgid),
        [] as [libc::pid_t; 0],
        "group {pgid} survives"
    );
}

/// Kills a test's stray process even when an assertion fails first.
struct KillOnDrop(libc::pid_t);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) of a pid this test started.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

#[tokio::test]
async fn exit_zero_is_success() {
    let (result, _, _) = run(script("exit 0")).await;
    assert_eq!(result.outcome, Outcome::Success);
    assert_eq!(result.detail.exit_code, Some(0));
    assert!(!result.retryable);
}

#[tokio::test]
async fn nonzero_exit_is_a_retryable_failure() {
    let (result, _, _) = run(script("exit 3")).await;
    assert_eq!(result.outcome, Outcome::Failure);
    assert_eq!(result.detail.exit_code, Some(3));
    assert_eq!(result.detail.signal, None);
    assert!(result.retryable);
}

#[tokio::test]
async fn a_signal_chime_did_not_send_is_killed() {
    let (result, _, _) = run(script("kill -KILL $$")).await;
    assert_eq!(result.outcome, Outcome::Killed);
    assert_eq!(result.detail.signal, Some(libc::SIGKILL));
    assert_eq!(result.detail.exit_code, None);
    assert!(result.retryable);
}

#[tokio::test]
async fn argv_is_executed_without_a_shell() {
    let (result, _, lines) = run(argv(&["echo", "$HOME", "a  b", ";", "exit 1"])).await;
    assert_eq!(result.outcome, Outcome::Success);
    assert_eq!(stdout(&lines), ["$HOME a  b ; exit 1"]);
}

#[tokio::test]
async fn a_missing_program_is_a_retryable_spawn_failure() {
    for program in ["/nonexistent/chime-test", "chime-test-no-such-program"] {
        let (result, _, _) = run(argv(&[program, "x"])).await;
        assert_eq!(result.outcome, Outcome::Failure);
        assert!(result.retryable);
        assert_eq!(
            result.detail.error.as_deref(),
            Some(format!("cannot start `{program}`: No such file or directory").as_str())
        );
    }
}

#[tokio::test]
async fn a_missing_workdir_is_a_spawn_failure_that_names_it() {
    let mut job = script("true");
    job.workdir = Some("/nonexistent/chime-dir".into());
    let (result, _, _) = run(job).await;
    assert_eq!(result.outcome, Outcome::Failure);
    assert!(result.retryable);
    assert_eq!(
        result.detail.error.as_deref(),
        Some("cannot start `/bin/sh`: workdir `/nonexistent/chime-dir`: No such file or directory")
    );
}

#[tokio::test]
async fn env_chime_values_and_workdir_reach_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut job = script(concat!(
        "pwd -P; echo \"$GREETING\"; echo \"$HOME\"; ",
        "echo \"$CHIME_JOB|$CHIME_RUN_ID|$CHIME_SCHEDULED_AT|$CHIME_ATTEMPT\"; ",
        "test -n \"$PATH\" && echo inherited-path"
    ));
    job.workdir = Some(dir.path().to_owned());
    job.env = [("GREETING", "hello  world"), ("HOME", "/elsewhere")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    let (result, _, lines) = run(job).await;
    assert_eq!(result.outcome, Outcome::Success, "{lines:?}");
    let expected_dir = dir.path().canonicalize().unwrap();
    assert_eq!(
        stdout(&lines),
        [
            expected_dir.to_str().unwrap(),
            "hello  world",
            "/elsewhere",
            "test-job|run-1|2024-05-06T07:08:09.010Z|3",
            "inherited-path",
        ]
    );
}

#[tokio::test]
async fn stdin_is_dev_null() {
    // With an inherited stdin `cat` would wait for the test runner's input.
    let (result, _, lines) = run(script("readlink /proc/self/fd/0; cat; echo eof")).await;
    assert_eq!(result.outcome, Outcome::Success);
    assert_eq!(stdout(&lines), ["/dev/null", "eof"]);
}

/// Variables only a child process can have in its environment: set by the test below
/// when it runs this test binary again, for just this test.
const PROBE: &str = "CHIME_TEST_SYSTEMD_PROBE";

#[tokio::test]
async fn systemd_variables_do_not_reach_the_job() {
    // Setting them in this process would race the other tests' spawns (set_var is
    // unsafe for that reason), so the check runs in a fresh copy of this binary.
    let exe = std::env::current_exe().unwrap();
    let output = timeout(
        LIMIT,
        tokio::process::Command::new(exe)
            .args(["probe_systemd_env", "--exact", "--ignored", "--nocapture"])
            .env(PROBE, "1")
            .env("NOTIFY_SOCKET", "/run/systemd/notify")
            .env("WATCHDOG_USEC", "30000000")
            .env("WATCHDOG_PID", "1")
            .env("LISTEN_FDS", "2")
            .env("LISTEN_PID", "1")
            .env("LISTEN_FDNAMES", "http:admin")
            .env("CHIME_TEST_INHERITED", "yes")
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{report}");
    assert!(
        report.contains("1 passed"),
        "the probe did not run: {report}"
    );
}

#[tokio::test]
#[ignore = "run in a child process by systemd_variables_do_not_reach_the_job"]
async fn probe_systemd_env() {
    if std::env::var_os(PROBE).is_none() {
        return;
    }
    // With `env_inherit: true`: a clean environment (the default) has none of them
    // anyway (tests/root.rs).
    let mut job = argv(&["env"]);
    job.env_inherit = true;
    let (result, _, lines) = run(job).await;
    assert_eq!(result.outcome, Outcome::Success);
    let env = stdout(&lines);
    assert!(env.contains(&"CHIME_TEST_INHERITED=yes"), "{env:?}");
    for var in ["NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_"] {
        assert!(
            !env.iter().any(|l| l.starts_with(var)),
            "{var} leaked: {env:?}"
        );
    }
}

#[tokio::test]
async fn output_lines_arrive_in_order_while_the_job_runs() {
    let mut running = start(script(
        "echo first; echo oops >&2; echo second; echo again >&2; sleep 1000",
    ));
    let mut out = Vec::new();
    let mut err = Vec::new();
    while out.len() + err.len() < 4 {
        match running.next_line().await {
            (Stream::Stdout, line) => out.push(line),
            (_, line) => err.push(line),
        }
    }
    assert_eq!(out, ["first", "second"]);
    assert_eq!(err, ["oops", "again"]);
    assert!(!running.handle.is_finished(), "the lines came only at exit");

    running.cancel.cancel();
    let (result, _, _) = running.finish().await;
    assert_eq!(result.outcome, Outcome::Cancelled);
}

#[tokio::test]
async fn a_long_line_is_passed_on_in_pieces_before_its_newline() {
    let mut running = start(script("head -c 10000 /dev/zero | tr '\\0' a; sleep 1000"));
    // Two full pieces come while the job runs, though no newline was ever written.
    for _ in 0..2 {
        let (stream, line) = running.next_line().await;
        assert_eq!((stream, line.len()), (Stream::Stdout, MAX_LINE_BYTES));
    }
    assert!(!running.handle.is_finished());
    running.cancel.cancel();
    let (_, _, rest) = running.finish().await;
    // The unterminated rest is flushed at the end.
    let lines = output_lines(&rest);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].1.len(), 10000 - 2 * MAX_LINE_BYTES);
}

#[tokio::test]
async fn a_final_unterminated_line_is_flushed() {
    let (result, _, lines) = run(script("printf 'a\\n\\nb'")).await;
    assert_eq!(result.outcome, Outcome::Success);
    assert_eq!(stdout(&lines), ["a", "", "b"]);
}

#[tokio::test]
async fn a_flood_of_output_is_drained_and_capped() {
    // 50 MB on stdout and 1 MB on stderr at once, in two-byte lines: both pipes must
    // be drained while the sink drops everything past its cap. A pipe left unread
    // would block the job until the `finish` timeout.
    let running = start(script(
        "yes | head -c 1000000 >&2 & yes | head -c 50000000; wait",
    ));
    let sink = Arc::clone(&running.sink);
    let (result, elapsed, events) = running.finish().await;
    assert_eq!(result.outcome, Outcome::Success);
    let truncations = events
        .iter()
        .filter(|e| matches!(e, Event::RunOutputTruncated { .. }))
        .count();
    assert_eq!(truncations, 1);
    assert!(output_lines(&events).len() as u64 <= DEFAULT_OUTPUT_LIMIT / 2);
    assert_eq!(sink.total_bytes(), 51_000_000);
    // Mostly the sink's per-line cost, in a debug build; a blocked pipe never ends.
    assert!(elapsed < LIMIT * 3 / 4, "took {elapsed:?}");
}

#[tokio::test]
async fn timeout_kills_a_group_that_ignores_sigterm() {
    let mut job = script("echo $$; trap '' TERM; sleep 1000 & sleep 1000; wait");
    job.timeout = Some(Duration::from_millis(300));
    job.kill_grace = Duration::from_millis(300);
    let mut running = start(job);
    let pgid = running.next_pid().await;
    let (result, elapsed, _) = running.finish().await;

    assert_eq!(result.outcome, Outcome::Timeout);
    assert_eq!(result.detail.signal, Some(libc::SIGKILL));
    assert!(result.retryable);
    assert!(
        elapsed >= Duration::from_millis(600),
        "grace skipped: {elapsed:?}"
    );
    assert!(elapsed < PROMPT, "took {elapsed:?}");
    assert_group_gone(pgid);
}

#[tokio::test]
async fn timeout_of_a_cooperative_job_ends_with_sigterm_without_waiting_the_grace() {
    let mut job = argv(&["sleep", "1000"]);
    job.timeout = Some(Duration::from_millis(200));
    job.kill_grace = Duration::from_secs(30);
    let (result, elapsed, _) = start(job).finish().await;
    assert_eq!(result.outcome, Outcome::Timeout);
    assert_eq!(result.detail.signal, Some(libc::SIGTERM));
    assert_eq!(result.detail.exit_code, None);
    assert!(elapsed < PROMPT, "took {elapsed:?}");
}

#[tokio::test]
async fn cancellation_terminates_the_group() {
    let mut running = start(script("echo $$; sleep 1000 & sleep 1000"));
    let pgid = running.next_pid().await;
    running.cancel.cancel();
    let (result, elapsed, _) = running.finish().await;
    assert_eq!(result.outcome, Outcome::Cancelled);
    assert_eq!(result.detail.signal, Some(libc::SIGTERM));
    assert!(!result.retryable);
    assert!(elapsed < PROMPT, "took {elapsed:?}");
    assert_group_gone(pgid);
}

#[tokio::test]
async fn cancelled_before_start_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let cancel = CancellationToken::new();
    cancel.cancel();
    let attempt = Attempt {
        job: Arc::new(script(&format!("touch '{}'", marker.display()))),
        run_id: "run-1".into(),
        scheduled_at: scheduled_at(),
        attempt: 1,
        deadline: None,
        cancel,
    };
    let sink = Arc::new(OutputSink::new(
        Events::discard(),
        "test-job".into(),
        "run-1".into(),
        DEFAULT_OUTPUT_LIMIT,
    ));
    let result = timeout(LIMIT, shell::execute(attempt, sink)).await.unwrap();
    assert_eq!(result.outcome, Outcome::Cancelled);
    assert!(!result.retryable);
    assert!(!marker.exists());
}

#[tokio::test]
async fn dropping_the_attempt_kills_its_group() {
    let mut running = start(script("echo $$; trap '' TERM; sleep 1000 & sleep 1000"));
    let pgid = running.next_pid().await;
    running.handle.abort();
    let _ = timeout(LIMIT, &mut running.handle).await.unwrap();
    // SIGKILL was sent as the future was dropped; delivery takes a moment.
    timeout(LIMIT, async {
        while !live_members(pgid).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the group dies");
}

#[tokio::test]
async fn a_background_grandchild_holding_stdout_does_not_hang_the_run() {
    let mut running = start(script("echo $$; sleep 30 & echo $!; echo done"));
    let pgid = running.next_pid().await;
    let grandchild = running.next_pid().await;
    let (result, elapsed, rest) = running.finish().await;
    assert_eq!(result.outcome, Outcome::Success);
    assert_eq!(stdout(&output_lines(&rest)), ["done"]);
    assert!(elapsed < PROMPT, "took {elapsed:?}");
    assert!(
        process::is_dead(grandchild),
        "grandchild {grandchild} survives"
    );
    assert_group_gone(pgid);
}

#[tokio::test]
async fn a_left_behind_member_that_ignores_sigterm_is_killed_after_the_grace() {
    let mut job = script("echo $$; trap '' TERM; sleep 30 >/dev/null 2>&1 & echo $!");
    job.kill_grace = Duration::from_millis(300);
    let mut running = start(job);
    let pgid = running.next_pid().await;
    let grandchild = running.next_pid().await;
    let (result, elapsed, _) = running.finish().await;
    assert_eq!(result.outcome, Outcome::Success);
    assert!(elapsed < PROMPT, "took {elapsed:?}");
    assert!(
        process::is_dead(grandchild),
        "grandchild {grandchild} survives"
    );
    assert_group_gone(pgid);
}

#[tokio::test]
async fn an_escaped_grandchild_holding_stdout_does_not_hang_the_run() {
    // setsid leaves the group (it does not fork: a background child of a
    // non-interactive shell is no group leader), so $! is the escaped sleep itself.
    let mut running = start(script("echo $$; setsid sleep 30 & echo $!; echo done"));
    let pgid = running.next_pid().await;
    let escaped = running.next_pid().await;
    let _cleanup = KillOnDrop(escaped);
    let (result, elapsed, rest) = running.finish().await;
    assert_eq!(result.outcome, Outcome::Success);
    assert_eq!(stdout(&output_lines(&rest)), ["done"]);
    assert!(elapsed < PROMPT, "took {elapsed:?}");
    assert_group_gone(pgid);
    // Out of chime's reach by design; this shows the test exercised an escape.
    let stat = process::stat(escaped).expect("the escaped process runs on");
    assert_ne!(stat.state, 'Z');
    assert_eq!(stat.pgrp, escaped);
}
