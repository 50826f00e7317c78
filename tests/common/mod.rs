//! Helpers for tests that run the real `chime` binary: spawn it in a temp dir with a
//! clean environment, collect its stderr line by line on a thread, wait for log events
//! (always with a timeout, never a fixed sleep), signal it, and wait for it to exit.
//! A [`Chime`] kills its process when dropped, so a failing test leaves nothing behind.

#![allow(dead_code)] // Each test file uses a different part of this module.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Bound on any single wait; far above what a passing test needs on a busy machine.
pub const LIMIT: Duration = Duration::from_secs(20);

/// The service's own settings, which the test runner's environment must not leak into.
const CHIME_ENV: &[&str] = &[
    "CHIME_LOG_FORMAT",
    "CHIME_LOG_LEVEL",
    "CHIME_DEFAULT_TIMEZONE",
    "CHIME_SHUTDOWN_GRACE",
    "CHIME_MAX_CONCURRENT_RUNS",
    "CHIME_MAX_JOBS",
    "RUST_LOG",
    "JOURNAL_STREAM",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// `chime ARGS…` run in `dir`, with the service's settings removed from the environment
/// and stdin closed.
pub fn command<S: AsRef<OsStr>>(dir: &Path, args: impl IntoIterator<Item = S>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chime"));
    command.args(args).current_dir(dir).stdin(Stdio::null());
    for name in CHIME_ENV {
        command.env_remove(name);
    }
    command
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a schedule file");
    path
}

/// A temp dir for one test.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temp dir")
}

/// What a finished command printed, and how it ended.
#[derive(Debug)]
pub struct Output {
    /// `None` when it died of a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// From spawn to exit.
    pub elapsed: Duration,
}

impl Output {
    /// Stderr's lines that start with `error: `, without that prefix.
    pub fn errors(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter_map(|line| line.strip_prefix("error: "))
            .collect()
    }

    /// Every stderr line parsed as a JSON object; panics on a line that is not one.
    pub fn events(&self) -> Vec<Value> {
        self.stderr
            .lines()
            .map(|line| {
                parse_event(line).unwrap_or_else(|| panic!("not a JSON event: {line:?}\n{self:#?}"))
            })
            .collect()
    }
}

/// Runs `chime ARGS…` in `dir` to its end (killed and failed after `timeout`).
pub fn run<S: AsRef<OsStr>>(
    dir: &Path,
    args: impl IntoIterator<Item = S>,
    timeout: Duration,
) -> Output {
    run_command(command(dir, args), timeout)
}

/// Runs a prepared [`command`] to its end (killed and failed after `timeout`).
pub fn run_command(mut command: Command, timeout: Duration) -> Output {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chime");
    // Both pipes are drained at once, so a chatty run cannot block on a full pipe.
    let stdout = read_all(child.stdout.take().expect("piped stdout"));
    let stderr = read_all(child.stderr.take().expect("piped stderr"));
    let mut guard = KillOnDrop(Some(child));
    let status = wait_child(guard.0.as_mut().expect("child"), timeout);
    let elapsed = started.elapsed();
    let Some(status) = status else {
        // The guard's drop kills it as the panic unwinds.
        panic!("{command:?} did not exit within {timeout:?}");
    };
    Output {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        elapsed,
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for `child` to exit; `None` after `timeout`. Polls its status every few
/// milliseconds: the wait ends as soon as it exits, and never lasts past the timeout.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A JSON object, or `None` for any other line.
pub fn parse_event(line: &str) -> Option<Value> {
    serde_json::from_str::<Value>(line)
        .ok()
        .filter(Value::is_object)
}

/// The event's name (`""` when it has none).
pub fn name(event: &Value) -> &str {
    event["event"].as_str().unwrap_or("")
}

/// Asserts that `event` has every one of `fields`, and the three every line has.
#[track_caller]
pub fn assert_fields(event: &Value, fields: &[&str]) {
    for field in ["timestamp", "level", "event"].iter().chain(fields) {
        assert!(
            event.get(field).is_some_and(|v| !v.is_null()),
            "{} lacks `{field}`: {event}",
            name(event)
        );
    }
    let timestamp = event["timestamp"].as_str().expect("timestamp is a string");
    assert!(
        chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
        "timestamp {timestamp:?} is not RFC 3339"
    );
}

/// A running `chime` whose stderr lines arrive on a channel.
pub struct Chime {
    child: Child,
    lines: Receiver<String>,
    /// Every stderr line received so far, in order.
    seen: Vec<String>,
    /// `seen[..cursor]` has been consumed by `wait_for`.
    cursor: usize,
    /// True once stderr reached its end.
    closed: bool,
    stdout: Option<JoinHandle<String>>,
}

impl Chime {
    /// Starts `chime ARGS…` in `dir`.
    pub fn spawn<S: AsRef<OsStr>>(dir: &Path, args: impl IntoIterator<Item = S>) -> Chime {
        Chime::spawn_command(command(dir, args))
    }

    /// Starts a prepared [`command`].
    pub fn spawn_command(mut command: Command) -> Chime {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chime");
        let stdout = read_all(child.stdout.take().expect("piped stdout"));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Chime {
            child,
            lines,
            seen: Vec::new(),
            cursor: 0,
            closed: false,
            stdout: Some(stdout),
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits in i32")
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill only sends a signal to our own child, which has not been reaped:
        // `Chime` reaps it in `wait_exit` or on drop only.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// Receives the next stderr line into `seen`; false at end of stream or timeout.
    fn receive(&mut self, deadline: Instant) -> bool {
        if self.closed {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => {
                self.seen.push(line);
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                self.closed = true;
                false
            }
        }
    }

    /// The first JSON event after those already consumed for which `matches` holds,
    /// waiting up to `timeout` for it. Events before it are consumed too. Panics with
    /// everything seen when it does not come.
    #[track_caller]
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut matches: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            while self.cursor < self.seen.len() {
                let line = &self.seen[self.cursor];
                self.cursor += 1;
                if let Some(event) = parse_event(line)
                    && matches(&event)
                {
                    return event;
                }
            }
            if !self.receive(deadline) {
                let why = if self.closed {
                    "chime closed its stderr (exited?)"
                } else {
                    "timed out"
                };
                panic!(
                    "waiting for {what}: {why} after {timeout:?}; stderr so far:\n{}",
                    self.seen.join("\n")
                );
            }
        }
    }

    /// The next event named `event`.
    #[track_caller]
    pub fn wait_event(&mut self, event: &str, timeout: Duration) -> Value {
        self.wait_for(event, timeout, |e| name(e) == event)
    }

    /// Waits for the process to exit; panics (and the drop kills it) after `timeout`.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match wait_child(&mut self.child, timeout) {
            Some(status) => status,
            None => panic!(
                "chime did not exit within {timeout:?}; stderr so far:\n{}",
                self.seen.join("\n")
            ),
        }
    }

    /// After exit: every stderr line it wrote, and its stdout.
    #[track_caller]
    pub fn finish(&mut self, timeout: Duration) -> (Vec<String>, String) {
        let deadline = Instant::now() + timeout;
        while self.receive(deadline) {}
        assert!(self.closed, "stderr still open {timeout:?} after exit");
        let stdout = self
            .stdout
            .take()
            .expect("finish is called once")
            .join()
            .expect("stdout reader");
        (self.seen.clone(), stdout)
    }
}

impl Drop for Chime {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Whether process `pid` is gone or a zombie (reaped by whoever its parent is now).
pub fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command name in parentheses, which may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Waits up to `timeout` for `pid` to be dead, checking every few milliseconds.
pub fn wait_dead(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if is_dead(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
