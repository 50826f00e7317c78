//! Events as native journal entries, so `journalctl -u chime JOB=backup` works.
//!
//! Every field of the event schema ([`crate::events::fields`]) becomes a journal field
//! of the same name upper-cased (`JOB`, `RUN_ID`, `OUTCOME`, …), next to `PRIORITY`,
//! `MESSAGE` (the text format's line without its time and level),
//! `SYSLOG_IDENTIFIER`, `EVENT` and `TIMESTAMP` (the event's own time; the journal
//! stamps arrival). A list is one item a line.
//!
//! The native protocol itself (one datagram per entry, the binary form for values with
//! a newline, a sealed memfd for an entry too large for a datagram) is
//! `libsystemd::logging::journal_send`'s; see README, "Dependencies, and why".

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use chrono::{DateTime, Utc};
use libsystemd::logging::{Priority, SD_JOURNAL_SOCK_PATH, journal_send};

use super::text;
use crate::events::schema::{self, Level, Value};
use crate::events::{Event, rfc3339};

/// The `SYSLOG_IDENTIFIER` of every entry.
pub(crate) const IDENTIFIER: &str = "chime";

/// Sends events to journald. Blocking: use it from the log writer thread.
#[derive(Debug)]
pub struct JournalWriter {
    _private: (),
}

impl JournalWriter {
    /// A writer on journald's socket; an error when there is no journal to talk to,
    /// so the caller can fall back to stderr.
    ///
    /// Each entry is addressed to the socket's path, so entries reach a journald that
    /// restarted (and re-created its socket) in the meantime.
    pub fn connect() -> io::Result<JournalWriter> {
        let path = Path::new(SD_JOURNAL_SOCK_PATH);
        if !std::fs::metadata(path)?.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a socket", path.display()),
            ));
        }
        Ok(JournalWriter { _private: () })
    }

    /// Writes one event as one journal entry.
    pub fn write(&self, at: DateTime<Utc>, event: &Event) -> io::Result<()> {
        journal_send(
            journal_priority(schema::level_of(event)),
            &text::summary(event),
            fields_after_message(event, at).into_iter(),
        )
        .map_err(io::Error::other)
    }
}

fn journal_priority(level: Level) -> Priority {
    match level {
        Level::Error => Priority::Error,
        Level::Warn => Priority::Warning,
        Level::Info => Priority::Info,
        Level::Debug | Level::Trace => Priority::Debug,
    }
}

/// The syslog priority journald files an event under.
pub fn priority(level: Level) -> u8 {
    journal_priority(level).into()
}

/// The fields of one event's journal entry, in the order [`JournalWriter::write`]
/// sends them: `PRIORITY`, `MESSAGE`, then the rest.
pub fn entry(event: &Event, at: DateTime<Utc>) -> Vec<(String, String)> {
    let mut entry = vec![
        (
            "PRIORITY".to_string(),
            priority(schema::level_of(event)).to_string(),
        ),
        ("MESSAGE".to_string(), text::summary(event)),
    ];
    entry.extend(fields_after_message(event, at));
    entry
}

fn fields_after_message(event: &Event, at: DateTime<Utc>) -> Vec<(String, String)> {
    let mut entry = vec![
        ("SYSLOG_IDENTIFIER".to_string(), IDENTIFIER.to_string()),
        ("EVENT".to_string(), event.name().to_string()),
        ("TIMESTAMP".to_string(), rfc3339(at)),
    ];
    for (key, value) in schema::fields(event) {
        if let Some(name) = field_name(key) {
            entry.push((name, value_text(&value)));
        }
    }
    entry
}

/// Names the entry carries itself; an event field with one of them gets a `CHIME_`
/// prefix rather than a second, conflicting value.
const RESERVED: &[&str] = &[
    "MESSAGE",
    "PRIORITY",
    "SYSLOG_IDENTIFIER",
    "EVENT",
    "TIMESTAMP",
];

/// An event field's journal name: upper case, `[A-Z0-9_]` only, not starting with `_`
/// (trusted fields) or a digit, at most 64 bytes. `None` when nothing is left. The
/// journal drops a field with an invalid name, so it is made valid here.
fn field_name(key: &str) -> Option<String> {
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

fn value_text(value: &Value) -> String {
    match value {
        Value::Str(v) => v.clone(),
        Value::Int(v) => v.to_string(),
        Value::UInt(v) => v.to_string(),
        Value::Float(v) => format!("{v:.3}"),
        Value::Bool(v) => v.to_string(),
        // One item a line.
        Value::List(v) => v.join("\n"),
    }
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
    // A duplicate of the descriptor, as a `File`, to ask for its metadata.
    let Ok(stderr) = io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(stderr).metadata() else {
        return false;
    };
    matches_journal_stream(value, meta.dev(), meta.ino())
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
    use std::fs::File;

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
            by: None,
            caller_uid: None,
        }
    }

    fn as_map(event: &Event) -> HashMap<String, String> {
        entry(event, at()).into_iter().collect()
    }

    /// What journald accepts as a field name (libsystemd drops any other).
    fn is_valid_field_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 64
            && !name.starts_with(|c: char| c == '_' || c.is_ascii_digit())
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    }

    #[test]
    fn run_finished_becomes_journal_fields() {
        let fields: Vec<String> = entry(&finished(), at())
            .into_iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        assert_eq!(
            fields,
            [
                "PRIORITY=3",
                "MESSAGE=run.finished job=backup run_id=r-1 attempts=3 outcome=failure \
                 exit_code=2 duration_ms=1234 output_bytes=99 truncated=false",
                "SYSLOG_IDENTIFIER=chime",
                "EVENT=run.finished",
                "TIMESTAMP=2026-03-29T01:00:00.250Z",
                "JOB=backup",
                "RUN_ID=r-1",
                "ATTEMPTS=3",
                "OUTCOME=failure",
                "EXIT_CODE=2",
                "DURATION_MS=1234",
                "OUTPUT_BYTES=99",
                "TRUNCATED=false",
            ]
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
            pid: None,
            caller_uid: None,
        };
        let map = as_map(&event);
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
            pid: None,
            caller_uid: None,
        };
        let map = as_map(&event);
        assert_eq!(map["QUEUED_MS"], "2500.000");
        assert!(map["MESSAGE"].ends_with(" attempt=1 queued_ms=2500.000"));
    }

    #[test]
    fn multi_line_values_keep_their_newlines() {
        let errors = vec![
            "a.yaml:3:5: jobs.x.schedule: bad".to_string(),
            "b.yaml:1:1: unknown key `jbos`; did you mean `jobs`?".to_string(),
        ];
        let map = as_map(&Event::config_rejected(&errors));
        assert_eq!(map["ERRORS"], errors.join("\n"));
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
        let map = as_map(&output);
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
            Event::ConfigWarning {
                warnings: vec!["/etc/chime/schedules.d: holds no schedule files".into()],
            },
            Event::ServiceDraining {
                runs: vec!["backup (r1)".into()],
                grace_left_ms: 25_000,
                message: "waiting for 1 run".into(),
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
            let fields = entry(event, at());
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
        assert_eq!(as_map(&skipped)["PRIORITY"], "7");
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
                    "logging::journald::tests::stderr_probe",
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
