//! Telling systemd how the service is doing: the `sd_notify` protocol (readiness,
//! reloads, stopping, status, watchdog pings).
//!
//! A message is one datagram of `KEY=value` lines sent to the socket named by
//! `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket). Without that variable
//! the [`Notifier`] is inert, so the same code runs under systemd, in a terminal and in
//! tests. Sending never fails loudly: systemd being gone must not stop the service.
//!
//! The messages and the `MONOTONIC_USEC` clock are the `sd-notify` crate's
//! [`NotifyState`]. The datagram is sent here, not by `sd_notify::notify`, which reads
//! only `$NOTIFY_SOCKET` (tests and [`Notifier::from_socket_path`] name a socket),
//! cannot reach an abstract socket (`@name`: it fails with `ENOENT`), and sets no send
//! timeout; see README, "Dependencies, and why".

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

use sd_notify::NotifyState;

/// How long one notification may wait for room in systemd's queue. systemd drains it
/// promptly; the bound only matters when it is wedged, and then a dropped ping is
/// better than a stuck scheduling loop.
const SEND_TIMEOUT: Duration = Duration::from_millis(500);

/// A handle on systemd's notification socket. Create it once (it owns its socket) and
/// share it, e.g. in an `Arc`; every method takes `&self`.
pub struct Notifier {
    target: Option<Target>,
}

struct Target {
    socket: UnixDatagram,
    address: SocketAddr,
    /// `$NOTIFY_SOCKET` as given, for `Debug`.
    name: PathBuf,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Some(target) => write!(f, "Notifier({})", target.name.display()),
            None => f.write_str("Notifier(inert)"),
        }
    }
}

impl Default for Notifier {
    /// An inert notifier: every message goes nowhere.
    fn default() -> Self {
        Notifier { target: None }
    }
}

impl Notifier {
    /// The notifier systemd asked for through `$NOTIFY_SOCKET`; inert without it.
    ///
    /// The variable stays set (changing the environment of a threaded process is
    /// unsound); shell jobs do not inherit it because `exec::shell` removes it.
    pub fn from_env() -> Notifier {
        Notifier::from_socket_path(std::env::var_os("NOTIFY_SOCKET").map(PathBuf::from))
    }

    /// A notifier on an explicit socket: an absolute path, or `@name` for an abstract
    /// socket. `None`, an empty value or anything else (a relative path, systemd's
    /// newer `vsock:` addresses) gives an inert notifier.
    pub fn from_socket_path(path: Option<PathBuf>) -> Notifier {
        let Some(name) = path else {
            return Notifier::default();
        };
        match open(name.as_os_str()) {
            Ok(Some((socket, address))) => Notifier {
                target: Some(Target {
                    socket,
                    address,
                    name,
                }),
            },
            // Unusable: behave as if systemd had not asked.
            Ok(None) | Err(_) => Notifier::default(),
        }
    }

    /// Whether messages go anywhere.
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// `READY=1`: start-up (or a reload) is complete.
    pub fn ready(&self) {
        self.notify_states(&[NotifyState::Ready]);
    }

    /// `RELOADING=1` with the monotonic timestamp systemd ≥ 253 wants for
    /// `Type=notify-reload`; older versions ignore the extra line. Follow it with
    /// [`ready`](Self::ready) when the reload is done, accepted or rejected.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.notify_states(&[NotifyState::Reloading, now]),
            // CLOCK_MONOTONIC always exists on Linux; without it, the bare state.
            Err(_) => self.notify_states(&[NotifyState::Reloading]),
        }
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.notify_states(&[NotifyState::Stopping]);
    }

    /// `STATUS=…`, the one-line status `systemctl status` shows. Line breaks would end
    /// the field early, so they become spaces.
    pub fn status(&self, text: &str) {
        let line: String = text
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        self.notify_states(&[NotifyState::Status(&line)]);
    }

    /// `EXTEND_TIMEOUT_USEC=…`: asks for more time to start, reload or stop, counted
    /// from now (e.g. while a long shutdown drain is still making progress).
    pub fn extend_timeout(&self, by: Duration) {
        // Written out: the crate's `ExtendTimeoutUsec` holds a u32, at most 71 minutes,
        // and a shutdown grace may be longer.
        self.notify(&format!("EXTEND_TIMEOUT_USEC={}", by.as_micros()));
    }

    /// `WATCHDOG=1`: the service is alive. Send it from the loop whose liveness it
    /// vouches for, at half of [`watchdog_interval`](Self::watchdog_interval).
    pub fn watchdog(&self) {
        self.notify_states(&[NotifyState::Watchdog]);
    }

    /// The watchdog timeout systemd expects pings within: `$WATCHDOG_USEC`, if set,
    /// non-zero, and meant for this process (`$WATCHDOG_PID` absent or our pid).
    ///
    /// Not `sd_notify::watchdog_enabled`: it returns a zero interval for
    /// `WATCHDOG_USEC=0` (a zero tick period panics in `tokio::time::interval`) and
    /// takes an unreadable `$WATCHDOG_PID` as absent, where we take it as not ours.
    pub fn watchdog_interval() -> Option<Duration> {
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
    }

    /// Sends `states` as one message, one a line, ignoring failure.
    fn notify_states(&self, states: &[NotifyState]) {
        if self.target.is_none() {
            return;
        }
        let message: Vec<String> = states.iter().map(ToString::to_string).collect();
        self.notify(&message.join("\n"));
    }

    /// Sends one message of `KEY=value` lines, ignoring failure (see the module docs).
    pub fn notify(&self, state: &str) {
        let _ = self.send(state);
    }

    /// Sends one message of `KEY=value` lines. `Ok` when inert.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        target
            .socket
            .send_to_addr(state.as_bytes(), &target.address)
            .map(drop)
    }
}

/// The socket and address for a `$NOTIFY_SOCKET` value; `None` for values that name no
/// socket we can reach.
fn open(name: &OsStr) -> io::Result<Option<(UnixDatagram, SocketAddr)>> {
    let bytes = name.as_bytes();
    let address = match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(name)?,
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
        _ => return Ok(None),
    };
    let socket = UnixDatagram::unbound()?;
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    Ok(Some((socket, address)))
}

/// [`Notifier::watchdog_interval`] on explicit values.
pub(crate) fn watchdog_interval_from(
    usec: Option<&str>,
    pid: Option<&str>,
    our_pid: u32,
) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok()? != our_pid
    {
        return None;
    }
    match usec?.trim().parse::<u64>().ok()? {
        0 => None,
        usec => Some(Duration::from_micros(usec)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn monotonic_usec() -> i128 {
        match NotifyState::monotonic_usec_now() {
            Ok(NotifyState::MonotonicUsec(usec)) => usec,
            other => panic!("the monotonic clock: {other:?}"),
        }
    }

    /// A bound socket standing in for systemd, with a read timeout so a missing
    /// message fails the test instead of hanging it.
    fn listener(dir: &tempfile::TempDir) -> (UnixDatagram, PathBuf) {
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the test socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set a read timeout");
        (socket, path)
    }

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = vec![0u8; 4096];
        let n = socket.recv(&mut buf).expect("a datagram within 5 s");
        String::from_utf8(buf[..n].to_vec()).expect("notifications are UTF-8")
    }

    /// Nothing further is waiting on the socket.
    fn assert_drained(socket: &UnixDatagram) {
        socket.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 64];
        let err = socket.recv(&mut buf).expect_err("no further datagram");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn every_message_is_one_exact_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, path) = listener(&dir);
        let notifier = Notifier::from_socket_path(Some(path));
        assert!(notifier.is_active());

        notifier.ready();
        assert_eq!(receive(&socket), "READY=1");
        notifier.stopping();
        assert_eq!(receive(&socket), "STOPPING=1");
        notifier.watchdog();
        assert_eq!(receive(&socket), "WATCHDOG=1");
        notifier.status("3 jobs, next fire 02:30");
        assert_eq!(receive(&socket), "STATUS=3 jobs, next fire 02:30");
        notifier.extend_timeout(Duration::from_millis(1500));
        assert_eq!(receive(&socket), "EXTEND_TIMEOUT_USEC=1500000");
        notifier.notify("CUSTOM=1\nOTHER=2");
        assert_eq!(receive(&socket), "CUSTOM=1\nOTHER=2");
        assert_drained(&socket);
    }

    #[test]
    fn reloading_carries_the_monotonic_clock() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, path) = listener(&dir);
        let notifier = Notifier::from_socket_path(Some(path));

        let before = monotonic_usec();
        notifier.reloading();
        let after = monotonic_usec();

        let message = receive(&socket);
        let (first, second) = message.split_once('\n').expect("two lines");
        assert_eq!(first, "RELOADING=1");
        let stamp: i128 = second
            .strip_prefix("MONOTONIC_USEC=")
            .expect("MONOTONIC_USEC line")
            .parse()
            .expect("a number");
        assert!(
            before <= stamp && stamp <= after,
            "{before} <= {stamp} <= {after}"
        );
    }

    #[test]
    fn status_cannot_smuggle_extra_fields() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, path) = listener(&dir);
        let notifier = Notifier::from_socket_path(Some(path));
        notifier.status("reload rejected\nREADY=1\r\n");
        assert_eq!(receive(&socket), "STATUS=reload rejected READY=1  ");
    }

    #[test]
    fn abstract_socket_names_work() {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "chime-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&address).expect("bind an abstract socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();

        let notifier = Notifier::from_socket_path(Some(PathBuf::from(format!("@{name}"))));
        assert!(notifier.is_active());
        notifier.ready();
        assert_eq!(receive(&socket), "READY=1");
    }

    #[test]
    fn inert_without_a_usable_socket() {
        for value in [
            None,
            Some(""),
            Some("relative/notify"),
            Some("vsock:2:1234"),
        ] {
            let notifier = Notifier::from_socket_path(value.map(PathBuf::from));
            assert!(!notifier.is_active(), "{value:?}");
            // All of these are no-ops and must not panic.
            notifier.ready();
            notifier.reloading();
            notifier.stopping();
            notifier.status("x");
            notifier.extend_timeout(Duration::from_secs(1));
            notifier.watchdog();
            assert!(notifier.send("READY=1").is_ok());
        }
        assert!(!Notifier::default().is_active());
    }

    #[test]
    fn a_vanished_systemd_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, path) = listener(&dir);
        let notifier = Notifier::from_socket_path(Some(path.clone()));
        drop(socket);
        std::fs::remove_file(&path).unwrap();
        assert!(notifier.send("READY=1").is_err());
        notifier.ready(); // ignored, no panic
        assert!(notifier.is_active());
    }

    #[test]
    fn watchdog_interval_rules() {
        let us = Some("30000000");
        assert_eq!(
            watchdog_interval_from(us, None, 42),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval_from(us, Some("42"), 42),
            Some(Duration::from_secs(30))
        );
        // Meant for another process (e.g. inherited by a child of ours).
        assert_eq!(watchdog_interval_from(us, Some("41"), 42), None);
        assert_eq!(watchdog_interval_from(us, Some("garbage"), 42), None);
        assert_eq!(watchdog_interval_from(None, None, 42), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 42), None);
    }

    #[test]
    fn debug_names_the_socket() {
        assert_eq!(format!("{:?}", Notifier::default()), "Notifier(inert)");
        let notifier = Notifier::from_socket_path(Some(PathBuf::from("/run/systemd/notify")));
        assert_eq!(format!("{notifier:?}"), "Notifier(/run/systemd/notify)");
    }
}
