//! The sd_notify conversation as systemd hears it (DESIGN.md §5): the real `chime run`
//! with `$NOTIFY_SOCKET` naming a socket this test holds. READY=1 only after a valid
//! start, RELOADING=1 then READY=1 around a rejected reload too, STOPPING=1 on
//! SIGTERM, and none of it leaking into jobs. Every wait is for a datagram or an exit,
//! with a timeout. (An accepted reload's RELOADING=1 with its MONOTONIC_USEC, and the
//! watchdog's pings, are tested in `lifecycle.rs`.)

mod support;

use std::path::Path;
use std::time::Instant;

use chime::systemd::Notifier;
use support::notify::NotifySocket;
use support::{Chime, LIMIT, is, service, temp_dir, write};

const QUIET: &str = "jobs:\n  idle:\n    schedule: \"0 3 * * *\"\n    command: \"true\"\n";

/// `chime run DIR` with `$NOTIFY_SOCKET` naming `systemd`, and `env` set.
fn start(dir: &Path, systemd: &NotifySocket, env: &[(&str, &str)]) -> Chime {
    let mut command = service(dir, &[]);
    command.env("NOTIFY_SOCKET", systemd.address());
    for (name, value) in env {
        command.env(name, value);
    }
    command.spawn()
}

/// Lifecycle messages only: STATUS= and WATCHDOG= may come at any time.
fn lifecycle(messages: &[String]) -> Vec<&str> {
    messages
        .iter()
        .filter_map(|m| m.lines().next())
        .filter(|first| !first.starts_with("STATUS=") && *first != "WATCHDOG=1")
        .collect()
}

#[test]
fn ready_after_start_and_stopping_on_sigterm() {
    let dir = temp_dir();
    write(dir.path(), "a.yaml", QUIET);
    let mut systemd = NotifySocket::bind_in(dir.path());
    let mut service = start(dir.path(), &systemd, &[]);

    let before = systemd.wait_for("READY=1");
    assert_eq!(lifecycle(&before), ["READY=1"], "{before:?}");

    service.signal(libc::SIGTERM);
    let stopping = systemd.wait_for("STOPPING=1");
    assert_eq!(lifecycle(&stopping), ["STOPPING=1"], "{stopping:?}");
    assert_eq!(service.wait_exit(LIMIT).code(), Some(0));
    let after = systemd.drain();
    assert_eq!(lifecycle(&after), Vec::<&str>::new(), "{after:?}");
}

#[test]
fn invalid_schedules_never_report_ready() {
    let dir = temp_dir();
    write(
        dir.path(),
        "bad.yaml",
        "jobs:\n  x:\n    schedule: \"61 * * * *\"\n    command: \"true\"\n",
    );
    let mut systemd = NotifySocket::bind_in(dir.path());
    let mut service = start(dir.path(), &systemd, &[]);

    assert_eq!(service.wait_exit(LIMIT).code(), Some(1));
    // It has exited: everything it ever sent is already queued.
    let sent = systemd.drain();
    assert!(!sent.iter().any(|m| m.starts_with("READY=1")), "{sent:?}");
}

#[test]
fn rejected_reload_still_ends_in_ready() {
    let dir = temp_dir();
    write(dir.path(), "a.yaml", QUIET);
    let mut systemd = NotifySocket::bind_in(dir.path());
    let mut service = start(dir.path(), &systemd, &[]);
    systemd.wait_for("READY=1");

    // The watcher may see this file too; one reload or two, each must end in READY=1,
    // or systemd would consider the service stuck in "reloading".
    write(
        dir.path(),
        "b.yaml",
        "jobs:\n  y:\n    schedul: \"* * * * *\"\n",
    );
    service.signal(libc::SIGHUP);
    service.wait_event("config.rejected", LIMIT);
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
    assert_eq!(service.wait_exit(LIMIT).code(), Some(0));
}

#[test]
fn jobs_do_not_inherit_the_notification_socket() {
    let dir = temp_dir();
    write(
        dir.path(),
        "a.yaml",
        "jobs:\n  probe:\n    schedule: \"* * * * * *\"\n    \
         command: 'echo \"ns=${NOTIFY_SOCKET-unset} wd=${WATCHDOG_USEC-unset}\"'\n",
    );
    let mut systemd = NotifySocket::bind_in(dir.path());
    let mut service = start(dir.path(), &systemd, &[("WATCHDOG_USEC", "30000000")]);
    systemd.wait_for("READY=1");

    let output = service.wait_for("run.output of probe", LIMIT, |e| {
        is(e, "run.output", "probe")
    });
    assert_eq!(output["line"], "ns=unset wd=unset", "{output}");

    service.signal(libc::SIGTERM);
    assert_eq!(service.wait_exit(LIMIT).code(), Some(0));
}

#[test]
fn public_notifier_speaks_the_protocol() {
    let dir = temp_dir();
    let mut systemd = NotifySocket::bind_in(dir.path());
    let notifier = Notifier::from_socket_path(Some(systemd.address().to_path_buf()));
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
