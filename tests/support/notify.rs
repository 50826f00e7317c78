//! A stand-in for systemd at the other end of `$NOTIFY_SOCKET`: a datagram socket
//! whose messages (each a few `KEY=value` lines) the test reads with a deadline.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::LIMIT;

/// The receiving end of `$NOTIFY_SOCKET`.
pub struct NotifySocket {
    socket: UnixDatagram,
    /// What `$NOTIFY_SOCKET` should say: a path, or `@name` for an abstract socket.
    address: PathBuf,
    /// Every datagram received so far, for failure messages.
    pub received: Vec<String>,
}

impl NotifySocket {
    /// A socket at `path`.
    pub fn bind(path: &Path) -> NotifySocket {
        let socket = UnixDatagram::bind(path).expect("bind the notify socket");
        NotifySocket::new(socket, path.to_path_buf())
    }

    /// A socket at `dir/notify.sock`.
    pub fn bind_in(dir: &Path) -> NotifySocket {
        NotifySocket::bind(&dir.join("notify.sock"))
    }

    /// An abstract socket (`@name`), as systemd sometimes uses; unique to this test
    /// process and `label`.
    pub fn bind_abstract(label: &str) -> NotifySocket {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::SocketAddr;

        let name = format!("chime-test-{}-{label}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
        let socket = UnixDatagram::bind_addr(&addr).expect("bind an abstract socket");
        NotifySocket::new(socket, PathBuf::from(format!("@{name}")))
    }

    fn new(socket: UnixDatagram, address: PathBuf) -> NotifySocket {
        NotifySocket {
            socket,
            address,
            received: Vec::new(),
        }
    }

    /// The value for `$NOTIFY_SOCKET`.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// The next datagram before `deadline`, if any.
    pub fn next(&mut self, deadline: Instant) -> Option<String> {
        let mut buf = vec![0u8; 8192];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("set a read timeout");
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
    }

    /// Datagrams up to and including the first whose first line is `wanted`; panics
    /// with what did arrive if none does within [`LIMIT`].
    #[track_caller]
    pub fn wait_for(&mut self, wanted: &str) -> Vec<String> {
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

    /// Whatever is queued right now, without waiting.
    pub fn drain(&mut self) -> Vec<String> {
        self.socket.set_nonblocking(true).expect("nonblocking");
        let mut buf = vec![0u8; 8192];
        let mut all = Vec::new();
        while let Ok(n) = self.socket.recv(&mut buf) {
            all.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        self.socket.set_nonblocking(false).expect("blocking");
        self.received.extend(all.iter().cloned());
        all
    }

    /// Every datagram line received so far.
    pub fn lines(&self) -> Vec<&str> {
        self.received.iter().flat_map(|d| d.lines()).collect()
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
