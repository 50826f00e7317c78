//! Writes events as log lines: text for people, JSON for machines, native journal
//! entries under systemd. Formatting and writing happen on a thread of their own, fed
//! by a channel, so the scheduler never waits for stderr.

use std::io::Write;
use std::sync::mpsc;
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};

use crate::events::{Event, Events, ExitDetail, Outcome, SkipReason, rfc3339};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }

    pub fn parse(text: &str) -> Option<Level> {
        match text.trim().to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            "trace" => Some(Level::Trace),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    /// Native journal entries with every field queryable (`journalctl JOB=backup`);
    /// JSON on the writer when the journal's socket cannot be reached.
    Journald,
}

/// A field value, shared by every output format.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    List(Vec<String>),
}

/// How important an event is.
pub fn level_of(event: &Event) -> Level {
    match event {
        Event::ConfigRejected { .. } | Event::ServiceFailed { .. } => Level::Error,
        Event::RunFinished { outcome, .. } => match outcome {
            Outcome::Success => Level::Info,
            Outcome::Cancelled => Level::Warn,
            Outcome::Failure | Outcome::Timeout | Outcome::Killed => Level::Error,
        },
        Event::ClockJumped { .. }
        | Event::RunRetrying { .. }
        | Event::RunMissed { .. }
        | Event::RunOutputTruncated { .. } => Level::Warn,
        Event::RunSkipped {
            reason: SkipReason::Disabled,
            ..
        } => Level::Debug,
        _ => Level::Info,
    }
}

fn detail_fields(fields: &mut Vec<(&'static str, Value)>, detail: &ExitDetail) {
    if let Some(code) = detail.exit_code {
        fields.push(("exit_code", Value::Int(code.into())));
    }
    if let Some(signal) = detail.signal {
        fields.push(("signal", Value::Int(signal.into())));
    }
    if let Some(status) = detail.http_status {
        fields.push(("http_status", Value::UInt(status.into())));
    }
    if let Some(error) = &detail.error {
        fields.push(("error", Value::Str(error.clone())));
    }
}

/// The event's fields, in a stable order, as DESIGN.md §6 names them.
pub fn fields(event: &Event) -> Vec<(&'static str, Value)> {
    use Value::*;
    let s = |v: &str| Str(v.to_string());
    let t = |v: &DateTime<Utc>| Str(rfc3339(*v));
    let mut f: Vec<(&'static str, Value)> = Vec::new();
    match event {
        Event::ServiceStarted {
            version,
            jobs,
            files,
            zone,
        } => {
            f.push(("version", s(version)));
            f.push(("jobs", UInt(*jobs as u64)));
            f.push(("files", UInt(*files as u64)));
            f.push(("zone", s(zone)));
        }
        Event::ServiceStopping {
            version,
            jobs,
            files,
        }
        | Event::ServiceStopped {
            version,
            jobs,
            files,
        } => {
            f.push(("version", s(version)));
            f.push(("jobs", UInt(*jobs as u64)));
            f.push(("files", UInt(*files as u64)));
        }
        Event::ConfigReloaded {
            added,
            changed,
            removed,
            unchanged,
        } => {
            f.push(("added", UInt(*added as u64)));
            f.push(("changed", UInt(*changed as u64)));
            f.push(("removed", UInt(*removed as u64)));
            f.push(("unchanged", UInt(*unchanged as u64)));
        }
        Event::ServiceFailed { what, error } => {
            f.push(("what", s(what)));
            f.push(("error", s(error)));
        }
        Event::ConfigRejected {
            errors,
            error_count,
        } => {
            f.push(("errors", List(errors.clone())));
            f.push(("error_count", UInt(*error_count as u64)));
        }
        Event::ClockJumped { from, to, delta_ms } => {
            f.push(("from", t(from)));
            f.push(("to", t(to)));
            f.push(("delta_ms", Int(*delta_ms)));
        }
        Event::RunStarted {
            job,
            run_id,
            trigger,
            scheduled_at,
            lateness_ms,
            attempt,
            queued_ms,
        } => {
            f.push(("job", s(job)));
            f.push(("run_id", s(run_id)));
            f.push(("trigger", s(trigger.as_str())));
            f.push(("scheduled_at", t(scheduled_at)));
            f.push(("lateness_ms", Float(*lateness_ms)));
            f.push(("attempt", UInt((*attempt).into())));
            if let Some(queued_ms) = queued_ms {
                f.push(("queued_ms", Float(*queued_ms)));
            }
        }
        Event::RunOutput {
            job,
            run_id,
            stream,
            line,
        } => {
            f.push(("job", s(job)));
            f.push(("run_id", s(run_id)));
            f.push(("stream", s(stream.as_str())));
            f.push(("line", s(line)));
        }
        Event::RunOutputTruncated {
            job,
            run_id,
            limit_bytes,
        } => {
            f.push(("job", s(job)));
            f.push(("run_id", s(run_id)));
            f.push(("limit_bytes", UInt(*limit_bytes)));
        }
        Event::RunRetrying {
            job,
            run_id,
            attempt,
            outcome,
            detail,
            delay_ms,
        } => {
            f.push(("job", s(job)));
            f.push(("run_id", s(run_id)));
            f.push(("attempt", UInt((*attempt).into())));
            f.push(("outcome", s(outcome.as_str())));
            detail_fields(&mut f, detail);
            f.push(("delay_ms", UInt(*delay_ms)));
        }
        Event::RunFinished {
            job,
            run_id,
            attempts,
            outcome,
            detail,
            duration_ms,
            output_bytes,
            truncated,
        } => {
            f.push(("job", s(job)));
            f.push(("run_id", s(run_id)));
            f.push(("attempts", UInt((*attempts).into())));
            f.push(("outcome", s(outcome.as_str())));
            detail_fields(&mut f, detail);
            f.push(("duration_ms", UInt(*duration_ms)));
            f.push(("output_bytes", UInt(*output_bytes)));
            f.push(("truncated", Bool(*truncated)));
        }
        Event::RunSkipped {
            job,
            scheduled_at,
            reason,
        } => {
            f.push(("job", s(job)));
            f.push(("scheduled_at", t(scheduled_at)));
            f.push(("reason", s(reason.as_str())));
        }
        Event::RunMissed {
            job,
            scheduled_at,
            count,
            reason,
        } => {
            f.push(("job", s(job)));
            f.push(("scheduled_at", t(scheduled_at)));
            f.push(("count", UInt(*count)));
            f.push(("reason", s(reason.as_str())));
        }
    }
    f
}

/// One JSON object: `timestamp`, `level`, `event`, then the fields at top level.
pub fn format_json(at: DateTime<Utc>, event: &Event) -> String {
    let mut map = serde_json::Map::new();
    map.insert("timestamp".into(), rfc3339(at).into());
    map.insert("level".into(), level_of(event).as_str().into());
    map.insert("event".into(), event.name().into());
    for (key, value) in fields(event) {
        let json = match value {
            Value::Str(v) => serde_json::Value::from(v),
            Value::Int(v) => v.into(),
            Value::UInt(v) => v.into(),
            Value::Float(v) => serde_json::Number::from_f64((v * 1000.0).round() / 1000.0)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Bool(v) => v.into(),
            Value::List(v) => v.into(),
        };
        map.insert(key.into(), json);
    }
    serde_json::Value::Object(map).to_string()
}

/// One human line: `time LEVEL event key=value …`, values quoted when they need it.
pub fn format_text(at: DateTime<Utc>, event: &Event) -> String {
    let mut line = format!(
        "{} {:>5} {}",
        rfc3339(at),
        level_of(event).as_str().to_ascii_uppercase(),
        event.name()
    );
    // A reader of the text line sees at the end of the list that it is not all of it.
    let omitted = match event {
        Event::ConfigRejected {
            errors,
            error_count,
        } => error_count.saturating_sub(errors.len()),
        _ => 0,
    };
    for (key, value) in fields(event) {
        let text = match value {
            Value::Str(v) => quote(&v),
            Value::Int(v) => v.to_string(),
            Value::UInt(v) => v.to_string(),
            Value::Float(v) => format!("{v:.3}"),
            Value::Bool(v) => v.to_string(),
            Value::List(mut v) => {
                if key == "errors" && omitted > 0 {
                    v.push(format!("… and {omitted} more"));
                }
                quote(&v.join("; "))
            }
        };
        line.push(' ');
        line.push_str(key);
        line.push('=');
        line.push_str(&text);
    }
    line
}

fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=');
    if plain {
        value.to_string()
    } else {
        format!("{value:?}")
    }
}

enum Message {
    Event(DateTime<Utc>, Event),
    Stop,
}

/// The log writer thread. Dropping the guard writes every pending line, then stops it.
pub struct LogGuard {
    sender: mpsc::Sender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let _ = self.sender.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the writer thread; events at `min_level` or more important are written.
pub fn start(
    format: Format,
    min_level: Level,
    mut out: Box<dyn Write + Send>,
) -> (Events, LogGuard) {
    let (sender, receiver) = mpsc::channel::<Message>();
    let thread = std::thread::Builder::new()
        .name("chime-log".into())
        .spawn(move || {
            let journal = match format {
                Format::Journald => crate::journald::JournalWriter::connect().ok(),
                _ => None,
            };
            while let Ok(first) = receiver.recv() {
                // Write everything already queued, then flush once.
                for message in std::iter::once(first).chain(receiver.try_iter()) {
                    let (at, event) = match message {
                        Message::Event(at, event) => (at, event),
                        Message::Stop => {
                            let _ = out.flush();
                            return;
                        }
                    };
                    if level_of(&event) > min_level {
                        continue;
                    }
                    if let Some(journal) = &journal
                        && journal.write(at, &event).is_ok()
                    {
                        continue;
                    }
                    let line = match format {
                        Format::Text => format_text(at, &event),
                        Format::Json | Format::Journald => format_json(at, &event),
                    };
                    let _ = writeln!(out, "{line}");
                }
                let _ = out.flush();
            }
        })
        .ok();
    let tx = sender.clone();
    let events = Events::new(move |event| {
        let _ = tx.send(Message::Event(Utc::now(), event));
    });
    (events, LogGuard { sender, thread })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        "2026-10-25T01:30:00Z".parse().unwrap()
    }

    /// Issue 9: one `config.rejected` line for 100,000 invalid jobs was 17 MB.
    #[test]
    fn config_rejected_lists_the_first_100_errors_and_the_count_in_every_format() {
        let errors: Vec<String> = (1..=150)
            .map(|line| format!("a.yaml:{line}:3: job `j{line}` has no `schedule`"))
            .collect();
        let event = Event::config_rejected(&errors);
        let Event::ConfigRejected {
            errors: shown,
            error_count,
        } = &event
        else {
            panic!("{event:?}");
        };
        assert_eq!(shown.as_slice(), &errors[..100]);
        assert_eq!(*error_count, 150);

        let json: serde_json::Value = serde_json::from_str(&format_json(at(), &event)).unwrap();
        assert_eq!(json["error_count"], 150);
        let listed = json["errors"].as_array().unwrap();
        assert_eq!(listed.len(), 100);
        assert_eq!(listed[99], errors[99].as_str());

        let text = format_text(at(), &event);
        assert!(
            text.contains(&format!("{}; … and 50 more\" error_count=150", errors[99])),
            "{text}"
        );
        assert!(!text.contains(&errors[100]), "{text}");

        let journal: std::collections::HashMap<String, Vec<u8>> =
            crate::journald::decode(&crate::journald::encode(&event, at()))
                .unwrap()
                .into_iter()
                .collect();
        assert_eq!(journal["ERROR_COUNT"], b"150");
        assert_eq!(journal["ERRORS"], errors[..100].join("\n").as_bytes());
        let message = String::from_utf8_lossy(&journal["MESSAGE"]);
        assert!(message.contains("… and 50 more"), "{message}");
    }

    #[test]
    fn config_rejected_with_few_errors_has_no_trailer() {
        let event = Event::config_rejected(&["a.yaml:1:1: bad", "b.yaml: empty"]);
        let text = format_text(at(), &event);
        assert!(
            text.ends_with(" errors=\"a.yaml:1:1: bad; b.yaml: empty\" error_count=2"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&format_json(at(), &event)).unwrap();
        assert_eq!(json["errors"].as_array().unwrap().len(), 2);
        assert_eq!(json["error_count"], 2);
    }
}
