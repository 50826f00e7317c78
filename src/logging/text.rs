//! The text format, for people: `time LEVEL event key=value …`, values quoted when
//! they need it.

use chrono::{DateTime, Utc};

use crate::events::schema::{self, Value};
use crate::events::{Event, rfc3339};

/// One human line: `time LEVEL event key=value …`.
pub fn format_text(at: DateTime<Utc>, event: &Event) -> String {
    format!(
        "{} {:>5} {}",
        rfc3339(at),
        schema::level_of(event).as_str().to_ascii_uppercase(),
        summary(event)
    )
}

/// The line without its time and level: `run.finished job=backup …`. The journal's
/// `MESSAGE`, where the entry carries time and priority apart.
pub fn summary(event: &Event) -> String {
    let mut line = event.name().to_string();
    let omitted = schema::omitted_errors(event);
    for (key, value) in schema::fields(event) {
        let text = match value {
            Value::Str(v) => quote(&v),
            Value::Int(v) => v.to_string(),
            Value::UInt(v) => v.to_string(),
            Value::Float(v) => format!("{v:.3}"),
            Value::Bool(v) => v.to_string(),
            Value::List(mut v) => {
                // A reader sees at the end of the list that it is not all of it.
                if omitted > 0 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        "2026-10-25T01:30:00Z".parse().unwrap()
    }

    #[test]
    fn config_rejected_with_few_errors_has_no_trailer() {
        let event = Event::config_rejected(&["a.yaml:1:1: bad", "b.yaml: empty"]);
        let text = format_text(at(), &event);
        assert!(
            text.ends_with(" errors=\"a.yaml:1:1: bad; b.yaml: empty\" error_count=2"),
            "{text}"
        );
    }

    #[test]
    fn the_line_is_time_level_and_summary() {
        let event = Event::RunSkipped {
            job: "nightly backup".into(),
            scheduled_at: at(),
            reason: crate::events::SkipReason::Overlap,
        };
        assert_eq!(
            format_text(at(), &event),
            "2026-10-25T01:30:00.000Z  INFO run.skipped job=\"nightly backup\" \
             scheduled_at=2026-10-25T01:30:00.000Z reason=overlap"
        );
    }
}
