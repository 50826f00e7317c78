//! Native journal entries through the public `chime::logging::journald` API (DESIGN.md §6:
//! "journald: the same fields as journal fields"). Every event's journal entry carries
//! exactly the JSON format's fields, upper-cased, with the same values, so
//! `journalctl -u chime JOB=backup OUTCOME=failure` finds what `jq` would.

use std::collections::BTreeMap;

use chime::events::{Event, ExitDetail, MissReason, Outcome, SkipReason, Stream, Trigger};
use chime::logging::journald::{entry, matches_journal_stream};
use chime::logging::{format_json, format_text};
use chrono::{DateTime, Utc};
use serde_json::Value;

fn at() -> DateTime<Utc> {
    "2026-10-25T01:30:00.125Z".parse().unwrap()
}

fn every_kind_of_event() -> Vec<Event> {
    let t = at();
    let detail = ExitDetail {
        exit_code: Some(1),
        ..ExitDetail::default()
    };
    vec![
        Event::ServiceStarted {
            version: "1.2.3".into(),
            jobs: 4,
            files: 2,
            zone: "Asia/Kolkata".into(),
        },
        Event::ServiceStopping {
            version: "1.2.3".into(),
            jobs: 4,
            files: 2,
        },
        Event::ServiceStopped {
            version: "1.2.3".into(),
            jobs: 4,
            files: 2,
        },
        Event::ConfigReloaded {
            added: 1,
            changed: 2,
            removed: 3,
            unchanged: 4,
        },
        Event::config_rejected(&[
            "a.yaml:2:3: jobs.x.schedule: minute 61 is out of range 0-59",
            "b.yaml:1:1: unknown key `jbos`; did you mean `jobs`?",
        ]),
        Event::ClockJumped {
            from: t,
            to: t + chrono::Duration::hours(1),
            delta_ms: 3_600_000,
        },
        Event::RunStarted {
            job: "backup".into(),
            run_id: "r-7".into(),
            trigger: Trigger::Retry,
            scheduled_at: t,
            lateness_ms: 0.4567,
            attempt: 2,
            queued_ms: None,
            pid: None,
            caller_uid: None,
        },
        Event::RunStarted {
            job: "backup".into(),
            run_id: "r-9".into(),
            trigger: Trigger::Schedule,
            scheduled_at: t,
            lateness_ms: 1500.25,
            attempt: 1,
            queued_ms: Some(1499.5),
            pid: Some(4242),
            caller_uid: None,
        },
        Event::RunOutput {
            job: "backup".into(),
            run_id: "r-7".into(),
            stream: Stream::Stdout,
            line: "copied 12 files to \"s3://bucket\" = ok".into(),
        },
        Event::RunOutputTruncated {
            job: "backup".into(),
            run_id: "r-7".into(),
            limit_bytes: 65536,
        },
        Event::RunRetrying {
            job: "ping".into(),
            run_id: "r-8".into(),
            attempt: 1,
            outcome: Outcome::Failure,
            detail: ExitDetail {
                http_status: Some(503),
                error: Some("service unavailable".into()),
                ..ExitDetail::default()
            },
            delay_ms: 60_000,
        },
        Event::RunFinished {
            job: "backup".into(),
            run_id: "r-7".into(),
            attempts: 3,
            outcome: Outcome::Timeout,
            detail: ExitDetail {
                signal: Some(9),
                ..detail
            },
            duration_ms: 7_200_000,
            output_bytes: 1024,
            truncated: true,
            by: None,
            caller_uid: None,
        },
        Event::RunSkipped {
            job: "backup".into(),
            scheduled_at: t,
            reason: SkipReason::Overlap,
        },
        Event::RunSkipped {
            job: "backup".into(),
            scheduled_at: t,
            reason: SkipReason::Superseded,
        },
        Event::RunMissed {
            job: "backup".into(),
            scheduled_at: t,
            count: 5,
            reason: MissReason::ClockJump,
        },
    ]
}

fn entry_map(fields: Vec<(String, String)>) -> BTreeMap<String, String> {
    let count = fields.len();
    let map: BTreeMap<String, String> = fields.into_iter().collect();
    assert_eq!(map.len(), count, "no field appears twice");
    map
}

/// What journald accepts as a field name: `[A-Z0-9_]`, not starting with `_` or a
/// digit, at most 64 bytes.
fn is_valid_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(|c: char| c == '_' || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// A JSON value as the journal writes it.
fn as_journal_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().expect("lists are of strings").to_string())
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

#[test]
fn journal_entries_carry_the_json_fields() {
    for event in every_kind_of_event() {
        let json: Value = serde_json::from_str(&format_json(at(), &event)).unwrap();
        let journal = entry_map(entry(&event, at()));

        assert_eq!(journal["EVENT"], json["event"].as_str().unwrap());
        assert_eq!(journal["TIMESTAMP"], json["timestamp"].as_str().unwrap());
        assert_eq!(journal["SYSLOG_IDENTIFIER"], "chime");
        let priority = match json["level"].as_str().unwrap() {
            "error" => "3",
            "warn" => "4",
            "info" => "6",
            _ => "7",
        };
        assert_eq!(journal["PRIORITY"], priority, "{}", event.name());
        assert!(
            journal["MESSAGE"].starts_with(event.name()) && !journal["MESSAGE"].contains('\n'),
            "MESSAGE is one line naming the event: {:?}",
            journal["MESSAGE"]
        );

        let object = json.as_object().unwrap();
        let mut expected = vec![
            "EVENT",
            "MESSAGE",
            "PRIORITY",
            "SYSLOG_IDENTIFIER",
            "TIMESTAMP",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        for (key, value) in object {
            if ["timestamp", "level", "event"].contains(&key.as_str()) {
                continue;
            }
            let name = key.to_ascii_uppercase();
            let got = journal
                .get(&name)
                .unwrap_or_else(|| panic!("{} lacks {name}: {journal:?}", event.name()));
            if let Value::Number(n) = value {
                let got: f64 = got
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={got:?} is a number"));
                assert!(
                    (got - n.as_f64().unwrap()).abs() < 1e-9,
                    "{name}: {got} vs {n}"
                );
            } else {
                assert_eq!(got, &as_journal_text(value), "{name} of {}", event.name());
            }
            expected.push(name);
        }
        expected.sort();
        assert_eq!(
            journal.keys().cloned().collect::<Vec<_>>(),
            expected,
            "{}",
            event.name()
        );
        for name in journal.keys() {
            assert!(is_valid_field_name(name), "{name}");
        }
    }
}

#[test]
fn lists_survive_as_one_item_a_line() {
    let event = &every_kind_of_event()[4];
    let journal = entry_map(entry(event, at()));
    let errors: Vec<&str> = journal["ERRORS"].lines().collect();
    assert_eq!(errors.len(), 2);
    assert!(errors[0].starts_with("a.yaml:2:3: "));
}

#[test]
fn journal_stream_names_device_and_inode() {
    assert!(matches_journal_stream("0:42", 0, 42));
    assert!(matches_journal_stream(
        "2049:18446744073709551615",
        2049,
        u64::MAX
    ));
    assert!(!matches_journal_stream("2049:42", 2049, 43));
    assert!(!matches_journal_stream("42", 0, 42));
}

/// Issue 9: `reason=superseded` and `queued_ms` read the same in text, JSON and the
/// journal, and `queued_ms` is left out when the fire did not wait.
#[test]
fn superseded_and_queued_ms_in_every_format() {
    use chime::logging::format_text;
    let skipped = Event::RunSkipped {
        job: "fast".into(),
        scheduled_at: at(),
        reason: SkipReason::Superseded,
    };
    assert!(format_text(at(), &skipped).ends_with(" reason=superseded"));
    let json: Value = serde_json::from_str(&format_json(at(), &skipped)).unwrap();
    assert_eq!(json["reason"], "superseded");
    assert_eq!(entry_map(entry(&skipped, at()))["REASON"], "superseded");

    let started = |queued_ms| Event::RunStarted {
        job: "fast".into(),
        run_id: "r-1".into(),
        trigger: Trigger::Schedule,
        scheduled_at: at(),
        lateness_ms: 12.5,
        attempt: 1,
        queued_ms,
        pid: None,
        caller_uid: None,
    };
    let queued = started(Some(12.25));
    assert!(format_text(at(), &queued).ends_with(" queued_ms=12.250"));
    let json: Value = serde_json::from_str(&format_json(at(), &queued)).unwrap();
    assert_eq!(json["queued_ms"], 12.25);
    assert_eq!(entry_map(entry(&queued, at()))["QUEUED_MS"], "12.250");

    let direct = started(None);
    assert!(!format_text(at(), &direct).contains("queued_ms"));
    let json: Value = serde_json::from_str(&format_json(at(), &direct)).unwrap();
    assert!(json.get("queued_ms").is_none());
    assert!(!entry_map(entry(&direct, at())).contains_key("QUEUED_MS"));
}

/// `service.started` names the default zone in every log format (issue 9 item 7).
#[test]
fn service_started_carries_the_zone_in_every_format() {
    let event = &every_kind_of_event()[0];
    let json: Value = serde_json::from_str(&format_json(at(), event)).unwrap();
    assert_eq!(json["event"], "service.started");
    assert_eq!(json["zone"], "Asia/Kolkata");
    assert_eq!(entry_map(entry(event, at()))["ZONE"], "Asia/Kolkata");
    let text = format_text(at(), event);
    assert!(text.contains("zone=Asia/Kolkata"), "{text}");
}
