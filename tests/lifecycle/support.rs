//! Helpers for the lifecycle tests: the real `chime run` binary in a temp dir, its JSON
//! log events followed line by line, signals, the exit, the sd_notify socket. Every
//! wait is for something observable, bounded by a timeout.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

/// How long any single wait may take: generous, the machine is busy.
pub const LIMIT: Duration = Duration::from_secs(20);

/// Environment a test run must not inherit from whatever runs the tests.
const INHERITED_VARS: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "JOURNAL_STREAM",
    "RUST_LOG",
    "CHIME_LOG_FORMAT",
    "CHIME_LOG_LEVEL",
    "CHIME_SHUTDOWN_GRACE",
    "CHIME_MAX_CONCURRENT_RUNS",
    "CHIME_DEFAULT_TIMEZONE",
];

/// `chime --log-format json [extra…] run DIR`, not started yet, with a clean environment
/// (see [`clean_env`]).
pub fn command(dir: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chime"));
    command
        .args(["--log-format", "json"])
        .args(extra)
        .arg("run")
        .arg(dir);
    clean_env(&mut command);
    command
}

/// Removes systemd's variables and chime's own settings from what `command` inherits,
/// so the tests behave the same wherever they run.
pub fn clean_env(command: &mut Command) {
    for var in INHERITED_VARS {
        command.env_remove(var);
    }
}

/// A running `chime run`: its stderr events, its exit. Killed (with SIGKILL) on drop if
/// it is still running, together with any process group the test registered.
pub struct Chime {
    pid: libc::pid_t,
    lines: Receiver<String>,
    exit: Receiver<std::io::Result<ExitStatus>>,
    status: Option<ExitStatus>,
    /// Every stderr line so far, for failure messages.
    all_lines: Vec<String>,
    /// Every JSON event so far, in order.
    events: Vec<Value>,
    /// Process groups to SIGKILL on drop, should the test fail half-way.
    groups: Vec<libc::pid_t>,
}

impl Chime {
    /// Starts `chime run DIR` with JSON logs.
    pub fn start(dir: &Path, extra: &[&str]) -> Chime {
        Chime::spawn(command(dir, extra))
    }

    /// Starts a prepared command (see [`command`]); its stderr is followed.
    pub fn spawn(mut command: Command) -> Chime {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child: Child = command.spawn().expect("spawn the chime binary");
        let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (line_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (exit_tx, exit) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = exit_tx.send(child.wait());
        });
        Chime {
            pid,
            lines,
            exit,
            status: None,
            all_lines: Vec::new(),
            events: Vec::new(),
            groups: Vec::new(),
        }
    }

    /// Every JSON event received so far.
    pub fn events(&self) -> &[Value] {
        &self.events
    }

    /// Every stderr line received so far, one a line, for failure messages.
    pub fn transcript(&self) -> String {
        self.all_lines.join("\n")
    }

    /// Kill this process group too when the test ends early.
    pub fn guard_group(&mut self, pgid: libc::pid_t) {
        self.groups.push(pgid);
    }

    /// Sends a signal to the service.
    pub fn signal(&self, signal: libc::c_int) {
        assert!(
            self.status.is_none(),
            "chime already exited; cannot signal it"
        );
        // SAFETY: kill only sends a signal; the pid is our own unreaped child's.
        let rc = unsafe { libc::kill(self.pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({}, {signal}): {}",
            self.pid,
            std::io::Error::last_os_error()
        );
    }

    /// Reads one stderr line, waiting until `deadline`; `None` on timeout or EOF.
    fn next_line(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => {
                self.all_lines.push(line.clone());
                if let Ok(event @ Value::Object(_)) = serde_json::from_str::<Value>(&line) {
                    self.events.push(event);
                }
                Some(line)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Waits for the next event (after those already waited for) that satisfies
    /// `predicate`; panics with the whole transcript after `timeout`.
    #[track_caller]
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        predicate: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.events.len();
            match self.next_line(deadline) {
                Some(_) => {
                    if self.events.len() > seen && predicate(&self.events[seen]) {
                        return self.events[seen].clone();
                    }
                }
                None => panic!(
                    "no {what} within {timeout:?}; stderr so far:\n{}",
                    self.transcript()
                ),
            }
        }
    }

    /// Waits for the next event named `name`.
    #[track_caller]
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Value {
        self.wait_for(name, timeout, |e| event_name(e) == name)
    }

    /// Waits for the process to exit, reading the rest of its stderr meanwhile.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        match self.exit.recv_timeout(timeout) {
            Ok(Ok(status)) => {
                self.status = Some(status);
                // The pipe closes when the process is gone; take what is left.
                let drain_until = Instant::now() + Duration::from_secs(5);
                while self.next_line(drain_until).is_some() {}
                status
            }
            Ok(Err(err)) => panic!("waiting for chime failed: {err}"),
            Err(_) => {
                let deadline = Instant::now() + Duration::from_millis(200);
                while self.next_line(deadline).is_some() {}
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
}

impl Drop for Chime {
    fn drop(&mut self) {
        if self.status.is_none() && self.exit.try_recv().is_err() {
            // The service's runs lead process groups of their own: note them before
            // the service dies, so a failed test leaves no job behind either.
            let own_group = proc_stat(self.pid).map(|stat| stat.pgrp);
            for stat in all_proc_stats() {
                if stat.ppid == self.pid && Some(stat.pgrp) != own_group {
                    self.groups.push(stat.pgrp);
                }
            }
            // SAFETY: kill only sends a signal to our child, not yet reaped.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = self.exit.recv_timeout(Duration::from_secs(5));
        }
        for &pgid in &self.groups {
            if !live_group_members(pgid).is_empty() {
                // SAFETY: kill only sends a signal; a negative pid names the group.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
        }
    }
}

/// The `event` field of a log event.
pub fn event_name(event: &Value) -> &str {
    event["event"].as_str().unwrap_or("")
}

/// Whether `event` is `name` about `job`.
pub fn is(event: &Value, name: &str, job: &str) -> bool {
    event_name(event) == name && event["job"] == job
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

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temp dir")
}

pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// Writes a file the way careful editors do: a temporary (a dotfile, which chime
/// ignores) renamed over the target, so no reader ever sees half of it.
pub fn write_atomic(dir: &Path, name: &str, contents: &str) {
    let tmp = write(dir, &format!(".{name}.partial"), contents);
    std::fs::rename(&tmp, dir.join(name)).expect("rename the temporary over the file");
}

/// A schedule file with one job per `(name, schedule, command)`, all in UTC. Commands
/// are written as YAML single-quoted strings.
pub fn schedule_file(jobs: &[(&str, &str, &str)]) -> String {
    let mut text = String::from("jobs:\n");
    for (name, schedule, command) in jobs {
        text.push_str(&format!(
            "  {name}:\n    schedule: \"{schedule}\"\n    command: '{}'\n    timezone: UTC\n",
            command.replace('\'', "''")
        ));
    }
    text
}

/// Every second, as a six-field expression.
pub const EVERY_SECOND: &str = "* * * * * *";
/// Never within a test's lifetime.
pub const NEW_YEAR: &str = "0 0 1 1 *";

/// The fields of `/proc/PID/stat` the tests need.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub pid: libc::pid_t,
    pub state: char,
    pub ppid: libc::pid_t,
    pub pgrp: libc::pid_t,
}

/// Reads `/proc/PID/stat`; `None` when the process is gone.
pub fn proc_stat(pid: libc::pid_t) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat {
        pid,
        state,
        ppid,
        pgrp,
    })
}

/// Every process's stat (those that vanish while listing are left out).
pub fn all_proc_stats() -> Vec<ProcStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter_map(proc_stat)
        .collect()
}

/// Processes of group `pgid` that are alive (not zombies), from `/proc/*/stat`.
pub fn live_group_members(pgid: libc::pid_t) -> Vec<ProcStat> {
    all_proc_stats()
        .into_iter()
        .filter(|stat| stat.pgrp == pgid && !matches!(stat.state, 'Z' | 'X'))
        .collect()
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

/// CLOCK_MONOTONIC in microseconds, as sd_notify's `MONOTONIC_USEC` counts.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    u64::try_from(ts.tv_sec).expect("monotonic seconds are positive") * 1_000_000
        + u64::try_from(ts.tv_nsec).expect("nanoseconds are positive") / 1_000
}

/// The receiving end of `$NOTIFY_SOCKET`: datagrams, each split into its
/// `KEY=value` lines.
pub struct NotifySocket {
    socket: UnixDatagram,
    /// Every datagram received so far, for failure messages.
    pub received: Vec<String>,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> NotifySocket {
        let socket = UnixDatagram::bind(path).expect("bind the notify socket");
        NotifySocket::from_socket(socket)
    }

    pub fn from_socket(socket: UnixDatagram) -> NotifySocket {
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set a read timeout");
        NotifySocket {
            socket,
            received: Vec::new(),
        }
    }

    /// The next datagram before `deadline`, if any.
    pub fn next(&mut self, deadline: Instant) -> Option<String> {
        let mut buf = vec![0u8; 8192];
        while Instant::now() < deadline {
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.received.push(text.clone());
                    return Some(text);
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(err) => panic!("receiving from the notify socket: {err}"),
            }
        }
        None
    }

    /// Waits for a datagram with a line starting with `wanted`. Datagrams before it
    /// may only hold lines `allowed` accepts; anything else fails the test. Returns the
    /// datagram's lines.
    #[track_caller]
    pub fn expect(&mut self, wanted: &str, allowed: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + LIMIT;
        loop {
            let Some(datagram) = self.next(deadline) else {
                panic!(
                    "no `{wanted}` datagram within {LIMIT:?}; received so far: {:?}",
                    self.received
                );
            };
            let lines: Vec<String> = datagram.lines().map(str::to_owned).collect();
            if lines.iter().any(|line| line.starts_with(wanted)) {
                return lines;
            }
            for line in &lines {
                assert!(
                    allowed(line),
                    "unexpected `{line}` while waiting for `{wanted}`; received so far: {:?}",
                    self.received
                );
            }
        }
    }

    /// Every datagram line received so far.
    pub fn lines(&self) -> Vec<&str> {
        self.received.iter().flat_map(|d| d.lines()).collect()
    }
}
