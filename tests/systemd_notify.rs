//! The sd_notify conversation as systemd hears it (DESIGN.md §5): the real `chime run`
//! with `$NOTIFY_SOCKET` naming a socket this test holds. READY=1 only after a valid
//! start, RELOADING=1 then READY=1 around every reload (accepted or rejected),
//! STOPPING=1 on SIGTERM, watchdog pings when `$WATCHDOG_USEC` asks for them, and none
//! of it leaking into jobs. Every wait is for a datagram or an exit, with a timeout.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chime::systemd::Notifier;

/// Bound on any single wait; far above what a passing test needs on a busy machine.
const LIMIT: Duration = Duration::from_secs(20);

const QUIET: &str = "jobs:\n  idle:\n    schedule: \"0 3 * * *\"\n    command: \"true\"\n";

/// Stands in for systemd: a datagram socket in a temp dir.
struct Systemd {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Systemd {
    fn bind(dir: &Path) -> Systemd {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        Systemd { socket, path }
    }

    /// The next message, or `None` once `deadline` has passed.
    fn next(&self, deadline: Instant) -> Option<String> {
        let left = deadline.checked_duration_since(Instant::now())?;
        self.socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("set a read timeout");
        let mut buf = vec![0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8(buf[..n].to_vec()).expect("notifications are UTF-8"))
    }

    /// Messages up to and including the first whose first line is `wanted`; panics with
    /// what did arrive if none does within [`LIMIT`].
    #[track_caller]
    fn wait_for(&self, wanted: &str) -> Vec<String> {
        let deadline = Instant::now() + LIMIT;
        let mut seen = Vec::new();
        while let Some(message) = self.next(deadline) {
            let done = message.lines().next() == Some(wanted);
            seen.push(message);
            if done {
                return seen;
            }
        }
        panic!("no {wanted} within {LIMIT:?}; received {seen:?}");
    }

    /// Whatever is queued right now, without waiting.
    fn drain(&self) -> Vec<String> {
        self.socket.set_nonblocking(true).expect("nonblocking");
        let mut buf = vec![0u8; 4096];
        let mut all = Vec::new();
        while let Ok(n) = self.socket.recv(&mut buf) {
            all.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        self.socket.set_nonblocking(false).expect("blocking");
        all
    }
}

/// Lifecycle messages only: STATUS= and WATCHDOG= may come at any time.
fn lifecycle(messages: &[String]) -> Vec<&str> {
    messages
        .iter()
        .filter_map(|m| m.lines().next())
        .filter(|first| !first.starts_with("STATUS=") && *first != "WATCHDOG=1")
        .collect()
}

/// `chime run` under a fake systemd. Killed when dropped, so a failing test leaves
/// nothing behind.
struct Service {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Service {
    fn start(dir: &Path, systemd: &Systemd, env: &[(&str, &str)]) -> Service {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chime"));
        command
            .args(["--log-format", "json", "run"])
            .arg(dir)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for name in [
            "CHIME_LOG_FORMAT",
            "CHIME_LOG_LEVEL",
            "CHIME_SHUTDOWN_GRACE",
            "RUST_LOG",
            "JOURNAL_STREAM",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
        ] {
            command.env_remove(name);
        }
        command.env("NOTIFY_SOCKET", &systemd.path);
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("spawn chime");
        let pipe = child.stderr.take().expect("piped stderr");
        let (tx, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Service { child, stderr }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill only sends a signal to our own child.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    #[track_caller]
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "chime did not exit within {LIMIT:?}"
            );
            // Waiting for a child has no timeout in std; a short poll is the bound.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first stderr event named `name` whose `field` satisfies `test`.
    #[track_caller]
    fn wait_event(
        &self,
        name: &str,
        test: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + LIMIT;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.stderr.recv_timeout(left) else {
                break;
            };
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                && event["event"] == name
                && test(&event)
            {
                return event;
            }
            seen.push(line);
        }
        panic!(
            "no matching {name} within {LIMIT:?}; stderr:\n{}",
            seen.join("\n")
        );
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ready_after_start_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), QUIET).unwrap();
    let systemd = Systemd::bind(dir.path());
    let mut service = Service::start(dir.path(), &systemd, &[]);

    let before = systemd.wait_for("READY=1");
    assert_eq!(lifecycle(&before), ["READY=1"], "{before:?}");

    service.signal(libc::SIGTERM);
    let stopping = systemd.wait_for("STOPPING=1");
    assert_eq!(lifecycle(&stopping), ["STOPPING=1"], "{stopping:?}");
    assert_eq!(service.wait_exit().code(), Some(0));
    let after = systemd.drain();
    assert_eq!(lifecycle(&after), Vec::<&str>::new(), "{after:?}");
}

#[test]
fn invalid_schedules_never_report_ready() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "jobs:\n  x:\n    schedule: \"61 * * * *\"\n    command: \"true\"\n",
    )
    .unwrap();
    let systemd = Systemd::bind(dir.path());
    let mut service = Service::start(dir.path(), &systemd, &[]);

    assert_eq!(service.wait_exit().code(), Some(1));
    // It has exited: everything it ever sent is already queued.
    let sent = systemd.drain();
    assert!(!sent.iter().any(|m| m.starts_with("READY=1")), "{sent:?}");
}

#[test]
fn sighup_reload_is_bracketed_by_reloading_and_ready() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), QUIET).unwrap();
    let systemd = Systemd::bind(dir.path());
    let mut service = Service::start(dir.path(), &systemd, &[]);
    systemd.wait_for("READY=1");

    service.signal(libc::SIGHUP);
    let reloading = systemd.wait_for("RELOADING=1");
    let stamp = reloading.last().unwrap().lines().nth(1).unwrap_or_default();
    let usec: u64 = stamp
        .strip_prefix("MONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {reloading:?}"))
        .parse()
        .expect("MONOTONIC_USEC is a number");
    assert!(usec > 0);
    let done = systemd.wait_for("READY=1");
    assert_eq!(lifecycle(&done), ["READY=1"], "{done:?}");

    service.signal(libc::SIGTERM);
    systemd.wait_for("STOPPING=1");
    assert_eq!(service.wait_exit().code(), Some(0));
}

#[test]
fn rejected_reload_still_ends_in_ready() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), QUIET).unwrap();
    let systemd = Systemd::bind(dir.path());
    let mut service = Service::start(dir.path(), &systemd, &[]);
    systemd.wait_for("READY=1");

    // The watcher may see this file too; one reload or two, each must end in READY=1,
    // or systemd would consider the service stuck in "reloading".
    std::fs::write(
        dir.path().join("b.yaml"),
        "jobs:\n  y:\n    schedul: \"* * * * *\"\n",
    )
    .unwrap();
    service.signal(libc::SIGHUP);
    service.wait_event("config.rejected", |_| true);
    systemd.wait_for("RELOADING=1");
    systemd.wait_for("READY=1");

    service.signal(libc::SIGTERM);
    let tail = systemd.wait_for("STOPPING=1");
    let mut open_reloads = 0i32;
    for first in lifecycle(&tail) {
        match first {
            "RELOADING=1" => open_reloads += 1,
            "READY=1" => open_reloads -= 1,
            _ => {}
        }
    }
    assert_eq!(open_reloads, 0, "every RELOADING=1 is answered: {tail:?}");
    assert_eq!(service.wait_exit().code(), Some(0));
}

#[test]
fn watchdog_pings_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), QUIET).unwrap();
    let systemd = Systemd::bind(dir.path());
    // 400 ms: pings every 200 ms, while the scheduler sleeps until 03:00.
    let mut service = Service::start(dir.path(), &systemd, &[("WATCHDOG_USEC", "400000")]);
    systemd.wait_for("READY=1");
    for _ in 0..3 {
        systemd.wait_for("WATCHDOG=1");
    }
    service.signal(libc::SIGTERM);
    systemd.wait_for("STOPPING=1");
    assert_eq!(service.wait_exit().code(), Some(0));
}

#[test]
fn jobs_do_not_inherit_the_notification_socket() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "jobs:\n  probe:\n    schedule: \"* * * * * *\"\n    \
         command: 'echo \"ns=${NOTIFY_SOCKET-unset} wd=${WATCHDOG_USEC-unset}\"'\n",
    )
    .unwrap();
    let systemd = Systemd::bind(dir.path());
    let mut service = Service::start(dir.path(), &systemd, &[("WATCHDOG_USEC", "30000000")]);
    systemd.wait_for("READY=1");

    let output = service.wait_event("run.output", |e| e["job"] == "probe");
    assert_eq!(output["line"], "ns=unset wd=unset", "{output}");

    service.signal(libc::SIGTERM);
    assert_eq!(service.wait_exit().code(), Some(0));
}

#[test]
fn public_notifier_speaks_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let systemd = Systemd::bind(dir.path());
    let notifier = Notifier::from_socket_path(Some(systemd.path.clone()));
    assert!(notifier.is_active());
    notifier.ready();
    notifier.reloading();
    notifier.ready();
    notifier.stopping();
    let deadline = Instant::now() + LIMIT;
    let got: Vec<String> = (0..4).filter_map(|_| systemd.next(deadline)).collect();
    assert_eq!(
        lifecycle(&got),
        ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
    );
    assert!(!Notifier::from_socket_path(None).is_active());
}
