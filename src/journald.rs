//! Events as native journal entries, so `journalctl -u chime JOB=backup` works.
//!
//! One datagram per event to journald's socket in its native protocol
//! (<https://systemd.io/JOURNAL_NATIVE_PROTOCOL/>): `KEY=value\n` lines, and for values
//! that contain a newline the binary form `KEY\n`, a little-endian `u64` length, the
//! bytes, `\n`. Every field of [`logging::fields`] becomes a journal field of the same
//! name upper-cased (`JOB`, `RUN_ID`, `OUTCOME`, …), next to `MESSAGE` (the text
//! format's line without its timestamp and level), `PRIORITY`, `SYSLOG_IDENTIFIER`,
//! `EVENT` and `TIMESTAMP` (the event's own time; the journal stamps arrival).
//!
//! **Large entries.** A datagram cannot exceed the socket's send buffer (~208 KiB by
//! default); only an event with very long values gets there (`config.rejected` lists up
//! to 100 errors, each naming a file whose path may be long). Then, as
//! libsystemd does, the entry goes into a sealed memfd whose descriptor is passed to
//! journald with `SCM_RIGHTS`: nothing is truncated.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::events::{Event, rfc3339};
use crate::logging::{self, Level, Value};

/// Where journald listens for native entries.
pub const DEFAULT_SOCKET: &str = "/run/systemd/journal/socket";

/// The `SYSLOG_IDENTIFIER` of every entry.
pub const IDENTIFIER: &str = "chime";

/// Sends events to journald. Blocking: use it from the log writer thread.
#[derive(Debug)]
pub struct JournalWriter {
    socket: UnixDatagram,
    path: PathBuf,
}

impl JournalWriter {
    /// A writer on journald's socket; an error when there is no journal to talk to,
    /// so the caller can fall back to stderr.
    pub fn connect() -> io::Result<JournalWriter> {
        JournalWriter::with_path(Path::new(DEFAULT_SOCKET))
    }

    /// A writer on the socket at `path`.
    ///
    /// The socket is not connected: every entry is addressed to the path, so entries
    /// reach a journald that restarted (and re-created its socket) in the meantime.
    pub fn with_path(path: &Path) -> io::Result<JournalWriter> {
        let meta = std::fs::metadata(path)?;
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a socket", path.display()),
            ));
        }
        Ok(JournalWriter {
            socket: UnixDatagram::unbound()?,
            path: path.to_path_buf(),
        })
    }

    /// Writes one event as one journal entry.
    pub fn write(&self, at: DateTime<Utc>, event: &Event) -> io::Result<()> {
        let entry = encode(event, at);
        match self.socket.send_to(&entry, &self.path) {
            Ok(_) => Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EMSGSIZE) => self.send_memfd(&entry),
            Err(err) => Err(err),
        }
    }

    /// The way for entries too large for a datagram: the entry in a sealed memfd, its
    /// descriptor sent alone. journald reads it and insists on the seals.
    fn send_memfd(&self, entry: &[u8]) -> io::Result<()> {
        // SAFETY: the name is a valid C string; the flags are plain bits.
        let fd = unsafe {
            libc::memfd_create(
                c"chime-journal-entry".as_ptr(),
                libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let mut file = unsafe { File::from_raw_fd(fd) };
        file.write_all(entry)?;
        let seals =
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on a descriptor we own.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(io::Error::last_os_error());
        }

        // A connected socket of its own spares building a sockaddr_un by hand.
        let socket = UnixDatagram::unbound()?;
        socket.connect(&self.path)?;
        send_fd(&socket, file.as_raw_fd())
    }
}

/// Sends a datagram with no data and one descriptor attached.
fn send_fd(socket: &UnixDatagram, fd: libc::c_int) -> io::Result<()> {
    // Room for one cmsghdr carrying one int, aligned for cmsghdr.
    let mut control = [0u64; 4];
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    assert!(
        space <= std::mem::size_of_val(&control),
        "cmsg buffer too small"
    );

    // SAFETY: msghdr is plain data; all-zero is a valid empty message.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = space as _;
    // SAFETY: msg_control points at `space` writable, aligned bytes, enough for one
    // header (checked above), so CMSG_FIRSTHDR is non-null and CMSG_DATA has room for
    // one int.
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<libc::c_int>(), fd);
    }
    // SAFETY: `message` and the buffers it points to live across the call.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &message, libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The syslog priority journald files an event under.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// The journal entry of one event: the datagram [`JournalWriter::write`] sends.
pub fn encode(event: &Event, at: DateTime<Utc>) -> Vec<u8> {
    let mut entry = Vec::with_capacity(256);
    push_field(&mut entry, "MESSAGE", message(event, at).as_bytes());
    push_field(
        &mut entry,
        "PRIORITY",
        priority(logging::level_of(event)).to_string().as_bytes(),
    );
    push_field(&mut entry, "SYSLOG_IDENTIFIER", IDENTIFIER.as_bytes());
    push_field(&mut entry, "EVENT", event.name().as_bytes());
    push_field(&mut entry, "TIMESTAMP", rfc3339(at).as_bytes());
    for (key, value) in logging::fields(event) {
        let Some(name) = field_name(key) else {
            continue;
        };
        push_field(&mut entry, &name, value_text(&value).as_bytes());
    }
    entry
}

/// Names [`encode`] writes itself; an event field with one of them gets a `CHIME_`
/// prefix rather than a second, conflicting value.
const RESERVED: &[&str] = &[
    "MESSAGE",
    "PRIORITY",
    "SYSLOG_IDENTIFIER",
    "EVENT",
    "TIMESTAMP",
];

/// An event field's journal name: upper case, `[A-Z0-9_]` only, not starting with `_`
/// (trusted fields) or a digit, at most 64 bytes. `None` when nothing is left.
pub fn field_name(key: &str) -> Option<String> {
    let mut name: String = key
        .chars()
        .map(|c| match c.to_ascii_uppercase() {
            c @ ('A'..='Z' | '0'..='9') => c,
            _ => '_',
        })
        .collect();
    let start = name.find(|c: char| c.is_ascii_uppercase())?;
    name.drain(..start);
    if RESERVED.contains(&name.as_str()) {
        name.insert_str(0, "CHIME_");
    }
    name.truncate(64);
    Some(name)
}

/// Whether journald accepts `name` as a field name.
pub fn is_valid_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(|c: char| c == '_' || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// The text format's line without its timestamp and level: `run.finished job=backup …`.
fn message(event: &Event, at: DateTime<Utc>) -> String {
    let line = logging::format_text(at, event);
    // The timestamp and level are digits, punctuation and upper-case letters; the
    // event name is the first thing that can contain `event.name()`.
    match line.find(event.name()) {
        Some(start) => line[start..].to_string(),
        None => line,
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::Str(v) => v.clone(),
        Value::Int(v) => v.to_string(),
        Value::UInt(v) => v.to_string(),
        Value::Float(v) => format!("{v:.3}"),
        Value::Bool(v) => v.to_string(),
        // One item a line; the newlines select the binary form.
        Value::List(v) => v.join("\n"),
    }
}

fn push_field(entry: &mut Vec<u8>, name: &str, value: &[u8]) {
    entry.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        entry.push(b'=');
    }
    entry.extend_from_slice(value);
    entry.push(b'\n');
}

/// Why a journal entry could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed journal entry at byte {offset}: {reason}")]
pub struct DecodeError {
    pub offset: usize,
    pub reason: &'static str,
}

/// The fields of a native journal entry, in order: the inverse of [`encode`], for
/// tests and debugging tools.
pub fn decode(mut entry: &[u8]) -> Result<Vec<(String, Vec<u8>)>, DecodeError> {
    let total = entry.len();
    let fail = |rest: &[u8], reason| DecodeError {
        offset: total - rest.len(),
        reason,
    };
    let mut fields = Vec::new();
    while !entry.is_empty() {
        let end = entry
            .iter()
            .position(|&b| b == b'=' || b == b'\n')
            .ok_or_else(|| fail(entry, "field without `=` or newline"))?;
        let name = std::str::from_utf8(&entry[..end])
            .map_err(|_| fail(entry, "field name is not UTF-8"))?
            .to_string();
        let binary = entry[end] == b'\n';
        entry = &entry[end + 1..];
        let value = if binary {
            let Some((len, rest)) = entry.split_first_chunk::<8>() else {
                return Err(fail(entry, "binary field without its length"));
            };
            let len = usize::try_from(u64::from_le_bytes(*len))
                .map_err(|_| fail(entry, "binary field length overflows"))?;
            if rest.len() < len + 1 || rest[len] != b'\n' {
                return Err(fail(rest, "binary field not followed by a newline"));
            }
            let value = rest[..len].to_vec();
            entry = &rest[len + 1..];
            value
        } else {
            let len = entry
                .iter()
                .position(|&b| b == b'\n')
                .ok_or_else(|| fail(entry, "field not terminated by a newline"))?;
            let value = entry[..len].to_vec();
            entry = &entry[len + 1..];
            value
        };
        fields.push((name, value));
    }
    Ok(fields)
}

/// Whether stderr is connected to the journal: systemd sets `$JOURNAL_STREAM` to
/// `<device>:<inode>` of the stream it hands a service, and a redirect replaces the
/// descriptor but not the variable, so the numbers must match stderr's own.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some(value) = value.to_str() else {
        return false;
    };
    // SAFETY: fstat writes into the zeroed struct we own.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(libc::STDERR_FILENO, &mut stat) } != 0 {
        return false;
    }
    matches_journal_stream(value, stat.st_dev, stat.st_ino)
}

/// Whether a `$JOURNAL_STREAM` value names the file with `dev` and `ino`.
pub fn matches_journal_stream(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>() == Ok(dev) && i.parse::<u64>() == Ok(ino)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ExitDetail, Outcome, Stream, Trigger};
    use std::collections::HashMap;
    use std::os::unix::fs::{FileExt, MetadataExt};
    use std::time::Duration;

    fn at() -> DateTime<Utc> {
        "2026-03-29T01:00:00.250Z".parse().unwrap()
    }

    fn finished() -> Event {
        Event::RunFinished {
            job: "backup".into(),
            run_id: "r-1".into(),
            attempts: 3,
            outcome: Outcome::Failure,
            detail: ExitDetail {
                exit_code: Some(2),
                ..ExitDetail::default()
            },
            duration_ms: 1234,
            output_bytes: 99,
            truncated: false,
        }
    }

    fn as_map(entry: &[u8]) -> HashMap<String, String> {
        decode(entry)
            .expect("decodes")
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v).expect("UTF-8 value")))
            .collect()
    }

    #[test]
    fn run_finished_becomes_journal_fields() {
        let entry = encode(&finished(), at());
        let text = String::from_utf8(entry.clone()).unwrap();
        assert_eq!(
            text,
            "MESSAGE=run.finished job=backup run_id=r-1 attempts=3 outcome=failure exit_code=2 \
             duration_ms=1234 output_bytes=99 truncated=false\n\
             PRIORITY=3\n\
             SYSLOG_IDENTIFIER=chime\n\
             EVENT=run.finished\n\
             TIMESTAMP=2026-03-29T01:00:00.250Z\n\
             JOB=backup\n\
             RUN_ID=r-1\n\
             ATTEMPTS=3\n\
             OUTCOME=failure\n\
             EXIT_CODE=2\n\
             DURATION_MS=1234\n\
             OUTPUT_BYTES=99\n\
             TRUNCATED=false\n"
        );
    }

    #[test]
    fn run_started_fields() {
        let event = Event::RunStarted {
            job: "ping".into(),
            run_id: "r-2".into(),
            trigger: Trigger::CatchUp,
            scheduled_at: "2026-03-29T00:59:00Z".parse().unwrap(),
            lateness_ms: 1.5,
            attempt: 1,
            queued_ms: None,
        };
        let map = as_map(&encode(&event, at()));
        assert_eq!(map["EVENT"], "run.started");
        assert_eq!(map["PRIORITY"], "6");
        assert_eq!(map["TRIGGER"], "catch-up");
        assert_eq!(map["SCHEDULED_AT"], "2026-03-29T00:59:00.000Z");
        assert_eq!(map["LATENESS_MS"], "1.500");
        assert_eq!(map["ATTEMPT"], "1");
        assert!(map["MESSAGE"].starts_with("run.started job=ping "));
        assert!(
            !map.contains_key("QUEUED_MS"),
            "absent when the fire did not wait"
        );
    }

    #[test]
    fn a_queued_run_started_carries_queued_ms() {
        let event = Event::RunStarted {
            job: "ping".into(),
            run_id: "r-3".into(),
            trigger: Trigger::Schedule,
            scheduled_at: "2026-03-29T00:59:00Z".parse().unwrap(),
            lateness_ms: 2500.25,
            attempt: 1,
            queued_ms: Some(2500.0),
        };
        let map = as_map(&encode(&event, at()));
        assert_eq!(map["QUEUED_MS"], "2500.000");
        assert!(map["MESSAGE"].ends_with(" attempt=1 queued_ms=2500.000"));
    }

    #[test]
    fn multi_line_values_use_the_binary_form() {
        let errors = vec![
            "a.yaml:3:5: jobs.x.schedule: bad".to_string(),
            "b.yaml:1:1: unknown key `jbos`; did you mean `jobs`?".to_string(),
        ];
        let event = Event::config_rejected(&errors);
        let entry = encode(&event, at());
        let joined = errors.join("\n");
        let mut expected = b"ERRORS\n".to_vec();
        expected.extend_from_slice(&(joined.len() as u64).to_le_bytes());
        expected.extend_from_slice(joined.as_bytes());
        expected.push(b'\n');
        assert!(
            entry
                .windows(expected.len())
                .any(|w| w == expected.as_slice()),
            "binary ERRORS field in {entry:?}"
        );
        let map = as_map(&entry);
        assert_eq!(map["ERRORS"], joined);
        assert_eq!(map["PRIORITY"], "3");
        // MESSAGE stays one line.
        assert!(!map["MESSAGE"].contains('\n'));

        // A single output line with an embedded newline also survives.
        let output = Event::RunOutput {
            job: "j".into(),
            run_id: "r".into(),
            stream: Stream::Stderr,
            line: "two\nlines = and\r\0 binary".into(),
        };
        let map = as_map(&encode(&output, at()));
        assert_eq!(map["LINE"], "two\nlines = and\r\0 binary");
        assert_eq!(map["STREAM"], "stderr");
    }

    #[test]
    fn every_field_name_is_valid_for_journald() {
        let events = [
            finished(),
            Event::ServiceStarted {
                version: "0.1.0".into(),
                jobs: 2,
                files: 1,
                zone: "Europe/Berlin".into(),
            },
            Event::ConfigReloaded {
                added: 1,
                changed: 0,
                removed: 2,
                unchanged: 3,
            },
            Event::ClockJumped {
                from: at(),
                to: at(),
                delta_ms: -5000,
            },
            Event::RunRetrying {
                job: "j".into(),
                run_id: "r".into(),
                attempt: 1,
                outcome: Outcome::Timeout,
                detail: ExitDetail {
                    signal: Some(15),
                    http_status: Some(503),
                    error: Some("connection refused".into()),
                    ..ExitDetail::default()
                },
                delay_ms: 60_000,
            },
        ];
        for event in &events {
            let fields = decode(&encode(event, at())).unwrap();
            for (name, _) in &fields {
                assert!(is_valid_field_name(name), "{name} in {}", event.name());
            }
            let mut names: Vec<_> = fields.iter().map(|(n, _)| n).collect();
            names.sort();
            names.dedup();
            assert_eq!(
                names.len(),
                fields.len(),
                "duplicate fields in {}",
                event.name()
            );
        }
    }

    #[test]
    fn field_names_are_sanitised() {
        assert_eq!(field_name("run_id").as_deref(), Some("RUN_ID"));
        assert_eq!(field_name("http-status").as_deref(), Some("HTTP_STATUS"));
        assert_eq!(field_name("_private").as_deref(), Some("PRIVATE"));
        assert_eq!(field_name("9lives").as_deref(), Some("LIVES"));
        assert_eq!(field_name("message").as_deref(), Some("CHIME_MESSAGE"));
        assert_eq!(field_name("__"), None);
        assert_eq!(field_name(&"x".repeat(100)).map(|n| n.len()), Some(64));
        assert!(!is_valid_field_name("_PID"));
        assert!(!is_valid_field_name("1A"));
        assert!(!is_valid_field_name("job"));
        assert!(is_valid_field_name("RUN_ID"));
    }

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(priority(Level::Error), 3);
        assert_eq!(priority(Level::Warn), 4);
        assert_eq!(priority(Level::Info), 6);
        assert_eq!(priority(Level::Debug), 7);
        assert_eq!(priority(Level::Trace), 7);
        let skipped = Event::RunSkipped {
            job: "j".into(),
            scheduled_at: at(),
            reason: crate::events::SkipReason::Disabled,
        };
        assert_eq!(as_map(&encode(&skipped, at()))["PRIORITY"], "7");
    }

    #[test]
    fn decode_rejects_truncated_entries() {
        assert!(decode(b"A=1").is_err());
        assert!(decode(b"A\n\x05\x00\x00\x00\x00\x00\x00\x00ab\n").is_err());
        assert!(decode(b"NOVALUE").is_err());
        assert_eq!(decode(b"").unwrap(), vec![]);
    }

    fn receiver(dir: &tempfile::TempDir) -> (UnixDatagram, PathBuf) {
        let path = dir.path().join("journal.socket");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (socket, path)
    }

    #[test]
    fn write_sends_one_datagram_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, path) = receiver(&dir);
        let writer = JournalWriter::with_path(&path).unwrap();
        writer.write(at(), &finished()).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], encode(&finished(), at()).as_slice());
    }

    #[test]
    fn with_path_needs_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        assert!(JournalWriter::with_path(&dir.path().join("absent")).is_err());
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(JournalWriter::with_path(&file).is_err());
    }

    /// Receives one datagram that carries no data and one descriptor.
    fn receive_fd(socket: &UnixDatagram) -> File {
        let mut data = [0u8; 16];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        let mut control = [0u64; 8];
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut message, libc::MSG_CMSG_CLOEXEC) };
        assert_eq!(n, 0, "no data beside the descriptor");
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&message);
            assert!(!header.is_null(), "a control message");
            assert_eq!((*header).cmsg_level, libc::SOL_SOCKET);
            assert_eq!((*header).cmsg_type, libc::SCM_RIGHTS);
            let fd = std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<libc::c_int>());
            File::from_raw_fd(fd)
        }
    }

    #[test]
    fn oversized_entries_travel_in_a_sealed_memfd() {
        let dir = tempfile::tempdir().unwrap();
        let (socket, path) = receiver(&dir);
        let writer = JournalWriter::with_path(&path).unwrap();
        // ~1 MiB of errors: far beyond any datagram send buffer.
        let errors: Vec<String> = (0..8000)
            .map(|i| {
                format!(
                    "schedules/many.yaml:{i}:1: jobs.job-{i}.schedule: {}",
                    "x".repeat(100)
                )
            })
            .collect();
        // Built directly: `Event::config_rejected` would keep only the first 100.
        let event = Event::ConfigRejected {
            error_count: errors.len(),
            errors,
        };
        let entry = encode(&event, at());
        assert!(entry.len() > 1 << 20);

        writer.write(at(), &event).unwrap();

        let memfd = receive_fd(&socket);
        let seals = unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_GET_SEALS) };
        let wanted =
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        assert_eq!(
            seals & wanted,
            wanted,
            "journald accepts only sealed memfds"
        );
        let len = memfd.metadata().unwrap().len() as usize;
        let mut contents = vec![0u8; len];
        memfd.read_exact_at(&mut contents, 0).unwrap();
        assert_eq!(contents, entry);
        assert_eq!(as_map(&contents)["EVENT"], "config.rejected");
    }

    #[test]
    fn journal_stream_values() {
        assert!(matches_journal_stream("8:12345", 8, 12345));
        assert!(matches_journal_stream("8:12345\n", 8, 12345));
        assert!(!matches_journal_stream("8:12346", 8, 12345));
        assert!(!matches_journal_stream("9:12345", 8, 12345));
        assert!(!matches_journal_stream("", 8, 12345));
        assert!(!matches_journal_stream("8", 8, 12345));
        assert!(!matches_journal_stream("8:x", 8, 12345));
        assert!(!matches_journal_stream("-8:12345", 8, 12345));
    }

    /// Run in a child process by `stderr_is_journal_checks_stderr_itself` (it needs its
    /// own environment and stderr); a no-op in the ordinary test run.
    #[test]
    fn stderr_probe() {
        if let Ok(expected) = std::env::var("CHIME_TEST_EXPECT_JOURNAL") {
            assert_eq!(stderr_is_journal(), expected == "1");
        }
    }

    #[test]
    fn stderr_is_journal_checks_stderr_itself() {
        let dir = tempfile::tempdir().unwrap();
        let stderr_path = dir.path().join("stderr");
        let stderr = File::create(&stderr_path).unwrap();
        let meta = stderr.metadata().unwrap();
        let (dev, ino) = (meta.dev(), meta.ino());
        let cases = [
            (Some(format!("{dev}:{ino}")), "1"),
            (Some(format!("{dev}:{}", ino + 1)), "0"),
            (None, "0"),
        ];
        for (stream, expected) in cases {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap());
            child
                .args([
                    "--exact",
                    "journald::tests::stderr_probe",
                    "--test-threads=1",
                ])
                .env("CHIME_TEST_EXPECT_JOURNAL", expected)
                .env_remove("JOURNAL_STREAM")
                .stdout(std::process::Stdio::null())
                .stderr(stderr.try_clone().unwrap());
            if let Some(stream) = &stream {
                child.env("JOURNAL_STREAM", stream);
            }
            let status = child.status().unwrap();
            assert!(
                status.success(),
                "JOURNAL_STREAM={stream:?}: child saw the wrong answer; its stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
    }
}
