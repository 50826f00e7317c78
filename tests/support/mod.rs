//! The one harness for tests that run the real `chime` binary.
//!
//! - [`command`] builds `chime ARGS…` with a clean environment ([`CLEARED`]) and, for
//!   every path the service may own (state, runtime sockets, home), a fresh temporary
//!   directory of its own, so that no two runs ever share one, even as root in CI.
//! - [`ChimeCommand::spawn`] starts it as a [`Chime`], whose JSON events on stderr are
//!   followed line by line; every wait has a timeout, none is a fixed sleep. A `Chime`
//!   kills its own process (and the process groups of its runs) when dropped, so a
//!   failing test leaves nothing behind. [`ChimeCommand::run`] runs it to its end.
//! - [`process`] reads the process table (`/proc/PID/stat`); [`notify`] stands in for
//!   systemd's `$NOTIFY_SOCKET`.
//! - [`write`], [`write_atomic`] and [`temp_dir`] prepare schedule files.

#![allow(dead_code)] // Each test file uses a different part of this module.

pub mod notify;
pub mod postgres;
pub mod process;

/// One helper for every skip message (in `postgres`, which the cluster bench includes alone).
#[allow(unused_imports)]
pub use postgres::skipped;

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

/// Bound on any single wait; far above what a passing test needs on a busy machine.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Variables a run must not inherit from whatever runs the tests: systemd's, the
/// service's own settings, the log filter and the zone. A test that wants one sets it.
pub const CLEARED: &[&str] = &["NOTIFY_SOCKET", "JOURNAL_STREAM", "RUST_LOG", "TZ"];

/// Every inherited variable with one of these prefixes is cleared too: chime's
/// settings (`CHIME_*`), the watchdog's and socket activation's.
pub const CLEARED_PREFIXES: &[&str] = &["CHIME_", "WATCHDOG_", "LISTEN_"];

/// Where the service may keep things of its own, each set to a fresh directory per
/// run: `(variable, subdirectory of the run's own temp dir)`.
pub const OWNED_DIRS: &[(&str, &str)] = &[
    ("STATE_DIRECTORY", "state"),
    ("RUNTIME_DIRECTORY", "runtime"),
    ("CACHE_DIRECTORY", "cache"),
    ("LOGS_DIRECTORY", "logs"),
    ("XDG_STATE_HOME", "xdg/state"),
    ("XDG_RUNTIME_DIR", "xdg/runtime"),
    ("XDG_CACHE_HOME", "xdg/cache"),
    ("XDG_CONFIG_HOME", "xdg/config"),
    ("XDG_DATA_HOME", "xdg/data"),
    ("HOME", "home"),
    ("TMPDIR", "tmp"),
];

/// `chime ARGS…`, run in `dir`, not started yet.
pub fn command<S: AsRef<OsStr>>(dir: &Path, args: impl IntoIterator<Item = S>) -> ChimeCommand {
    ChimeCommand {
        dir: dir.to_path_buf(),
        args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(),
        env: Vec::new(),
        wrapper: Vec::new(),
    }
}

/// `chime --log-format json EXTRA… run DIR`, run in `dir`, not started yet.
pub fn service(dir: &Path, extra: &[&str]) -> ChimeCommand {
    let mut command = command(dir, ["--log-format", "json"]);
    command.args(extra).arg("run").arg(dir);
    command
}

/// Runs `chime ARGS…` in `dir` to its end (killed and failed after `timeout`).
pub fn run<S: AsRef<OsStr>>(
    dir: &Path,
    args: impl IntoIterator<Item = S>,
    timeout: Duration,
) -> Output {
    command(dir, args).run(timeout)
}

/// A `chime` command line with its environment. Each start gets a clean environment
/// and fresh owned directories (see the module doc).
#[derive(Debug, Clone)]
pub struct ChimeCommand {
    dir: PathBuf,
    args: Vec<OsString>,
    /// Set (`Some`) or removed (`None`) after the harness's own settings.
    env: Vec<(OsString, Option<OsString>)>,
    /// A program (and its arguments) that starts chime: it gets chime's path and
    /// arguments after its own.
    wrapper: Vec<OsString>,
}

impl ChimeCommand {
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<S: AsRef<OsStr>>(&mut self, args: impl IntoIterator<Item = S>) -> &mut Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(&mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .push((name.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    pub fn env_remove(&mut self, name: impl AsRef<OsStr>) -> &mut Self {
        self.env.push((name.as_ref().to_owned(), None));
        self
    }

    /// Starts chime through `program ARGS… CHIME_PATH CHIME_ARGS…`, e.g. a shell that
    /// sets something up and `exec`s it (keeping its pid).
    pub fn via<S: AsRef<OsStr>>(
        &mut self,
        program_and_args: impl IntoIterator<Item = S>,
    ) -> &mut Self {
        self.wrapper = program_and_args
            .into_iter()
            .map(|a| a.as_ref().to_owned())
            .collect();
        self
    }

    /// The process to start, with `owned` for the service's own paths.
    fn build(&self, owned: &Path) -> Command {
        let binary = env!("CARGO_BIN_EXE_chime");
        let mut command = match self.wrapper.split_first() {
            None => Command::new(binary),
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
        };
        command
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for name in CLEARED {
            command.env_remove(name);
        }
        for (name, _) in std::env::vars_os() {
            let text = name.to_string_lossy();
            if CLEARED_PREFIXES.iter().any(|p| text.starts_with(p)) {
                command.env_remove(&name);
            }
        }
        for (name, sub) in OWNED_DIRS {
            command.env(name, owned.join(sub));
        }
        for (name, value) in &self.env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        command
    }

    /// Starts it; its stdout and stderr are collected.
    pub fn spawn(&self) -> Chime {
        let owned = owned_dirs();
        let mut command = self.build(owned.path());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let stdout = read_all(child.stdout.take().expect("stdout is piped"));
        let (lines, stderr) = follow_lines(child.stderr.take().expect("stderr is piped"));
        Chime {
            child,
            status: None,
            lines,
            seen: Vec::new(),
            events: Vec::new(),
            cursor: 0,
            closed: false,
            stdout: Some(stdout),
            stderr: Some(stderr),
            groups: Vec::new(),
            _owned: owned,
        }
    }

    /// Runs it to its end; killed and failed after `timeout`.
    pub fn run(&self, timeout: Duration) -> Output {
        let started = Instant::now();
        let mut chime = self.spawn();
        let status = wait_child(&mut chime.child, timeout);
        let elapsed = started.elapsed();
        let Some(status) = status else {
            // The drop kills it as the panic unwinds.
            panic!("{self:?} did not exit within {timeout:?}");
        };
        chime.status = Some(status);
        let (_, stdout) = chime.finish(timeout);
        let stderr = chime
            .stderr
            .take()
            .expect("taken once")
            .join()
            .expect("stderr reader");
        Output {
            code: status.code(),
            stdout,
            stderr,
            elapsed,
        }
    }
}

/// A fresh temp dir with one subdirectory per entry of [`OWNED_DIRS`].
fn owned_dirs() -> tempfile::TempDir {
    let owned = tempfile::Builder::new()
        .prefix("chime-owned-")
        .tempdir()
        .expect("create the service's own temp dir");
    for (_, sub) in OWNED_DIRS {
        let path = owned.path().join(sub);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        // XDG_RUNTIME_DIR must be private to its user; the others may as well be.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    }
    owned
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Sends `pipe`'s lines (without their line ends) on a channel as they come; the
/// thread's result is everything it read, as written.
fn follow_lines(pipe: impl Read + Send + 'static) -> (Receiver<String>, JoinHandle<String>) {
    let (tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut pipe = BufReader::new(pipe);
        let mut all = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            match pipe.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            all.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line);
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            // The receiver may be gone (the test ended); keep reading to the end anyway.
            let _ = tx.send(text.to_owned());
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    (lines, reader)
}

/// Waits for `child` to exit; `None` after `timeout`. std has no wait with a timeout:
/// its status is checked every few milliseconds, so the wait ends soon after the exit.
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

/// A running `chime`: its stderr lines and JSON events, its exit.
pub struct Chime {
    child: Child,
    /// Set once the child is reaped; signals go to its pid only before that.
    status: Option<ExitStatus>,
    lines: Receiver<String>,
    /// Every stderr line received so far, in order.
    seen: Vec<String>,
    /// Every JSON event among them, in order.
    events: Vec<Value>,
    /// `events[..cursor]` have been consumed by the waits.
    cursor: usize,
    /// True once stderr reached its end.
    closed: bool,
    stdout: Option<JoinHandle<String>>,
    /// All of stderr, as written.
    stderr: Option<JoinHandle<String>>,
    /// Process groups to SIGKILL on drop, should the test fail half-way.
    groups: Vec<libc::pid_t>,
    /// The service's own directories; removed after the process is gone.
    _owned: tempfile::TempDir,
}

impl Chime {
    /// Starts `chime ARGS…` in `dir`.
    pub fn spawn<S: AsRef<OsStr>>(dir: &Path, args: impl IntoIterator<Item = S>) -> Chime {
        command(dir, args).spawn()
    }

    /// Starts `chime --log-format json EXTRA… run DIR` in `dir`.
    pub fn start(dir: &Path, extra: &[&str]) -> Chime {
        service(dir, extra).spawn()
    }

    pub fn pid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t")
    }

    /// Every JSON event received so far.
    pub fn events(&self) -> &[Value] {
        &self.events
    }

    /// Every stderr line received so far, one a line, for failure messages.
    pub fn transcript(&self) -> String {
        self.seen.join("\n")
    }

    /// Kill this process group too when the test ends early.
    pub fn guard_group(&mut self, pgid: libc::pid_t) {
        self.groups.push(pgid);
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    #[track_caller]
    pub fn signal(&self, signal: libc::c_int) {
        assert!(
            self.status.is_none(),
            "chime already exited; cannot signal it"
        );
        // SAFETY: kill only sends a signal, to our own child, which is not reaped yet
        // (`status` is set when it is): the pid cannot name another process.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(
            rc,
            0,
            "kill({}, {signal}): {}",
            self.pid(),
            std::io::Error::last_os_error()
        );
    }

    /// Receives the next stderr line; false at end of stream or at `deadline`.
    fn receive(&mut self, deadline: Instant) -> bool {
        if self.closed {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(event) = parse_event(&line) {
                    self.events.push(event);
                }
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
            while self.cursor < self.events.len() {
                let event = &self.events[self.cursor];
                self.cursor += 1;
                if matches(event) {
                    return event.clone();
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
                    self.transcript()
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
        if let Some(status) = self.status {
            return status;
        }
        match wait_child(&mut self.child, timeout) {
            Some(status) => {
                self.status = Some(status);
                status
            }
            None => {
                // Whatever it wrote meanwhile helps to see why.
                let deadline = Instant::now() + Duration::from_millis(200);
                while self.receive(deadline) {}
                panic!(
                    "chime did not exit within {timeout:?}; stderr so far:\n{}",
                    self.transcript()
                )
            }
        }
    }

    /// SIGTERM, then expects `service.stopped` and exit code 0.
    #[track_caller]
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        self.wait_event("service.stopped", LIMIT);
        let status = self.wait_exit(LIMIT);
        assert_eq!(status.code(), Some(0), "{status:?}\n{}", self.transcript());
    }

    /// After the exit: every stderr line it wrote, and its stdout.
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
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            // The service's runs lead process groups of their own: note them while the
            // service still lives, so that a failed test leaves no job behind either.
            let pid = self.pid();
            let own_group = process::stat(pid).map(|stat| stat.pgrp);
            for stat in process::all() {
                if stat.ppid == pid && Some(stat.pgrp) != own_group {
                    self.groups.push(stat.pgrp);
                }
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        for &pgid in &self.groups {
            if !process::live_group_members(pgid).is_empty() {
                // SAFETY: kill only sends a signal; a negative pid names the group, one
                // that a run of this test's service leads and that still has members.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
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

/// Whether `event` is `event_name` about `job`.
pub fn is(event: &Value, event_name: &str, job: &str) -> bool {
    name(event) == event_name && event["job"] == job
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
        DateTime::parse_from_rfc3339(timestamp).is_ok(),
        "timestamp {timestamp:?} is not RFC 3339"
    );
}

/// A time field of an event.
#[track_caller]
pub fn time(event: &Value, field: &str) -> DateTime<Utc> {
    let text = event[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` is not a string: {event}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("`{field}` {text:?} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

/// An unsigned integer field of an event.
#[track_caller]
pub fn uint(event: &Value, field: &str) -> u64 {
    event[field]
        .as_u64()
        .unwrap_or_else(|| panic!("`{field}` is not an unsigned integer: {event}"))
}

/// A temp dir for one test.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temp dir")
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// Writes a file the way careful editors do: a temporary (a dotfile, which chime
/// ignores) renamed over the target, so no reader ever sees half of it.
pub fn write_atomic(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let tmp = write(dir, &format!(".{name}.partial"), contents);
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).expect("rename the temporary over the file");
    path
}

/// Waits until `condition` holds, checking every 20 ms; panics with `what` after
/// `timeout`. For states outside the service's log (the process table).
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
