//! Writes events as log lines: text for people, JSON for machines, native journal
//! entries under systemd. Each writer reads the schema in [`crate::events::schema`]
//! and decides only how to spell it.
//!
//! - [`text`]: `time LEVEL event key=value …`.
//! - [`json`]: one object a line.
//! - [`journald`]: native journal entries; is stderr the journal?
//! - [`writer`]: the thread that formats and writes, fed by a channel.

pub mod journald;
pub mod json;
pub mod text;
pub mod writer;

pub use crate::events::Level;
pub use journald::stderr_is_journal;
pub use json::format_json;
pub use text::format_text;
pub use writer::{LogGuard, start};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    /// Native journal entries with every field queryable (`journalctl JOB=backup`);
    /// JSON on the writer when the journal's socket cannot be reached.
    Journald,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;
    use chrono::{DateTime, Utc};

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

        let journal: std::collections::HashMap<String, String> =
            journald::entry(&event, at()).into_iter().collect();
        assert_eq!(journal["ERROR_COUNT"], "150");
        assert_eq!(journal["ERRORS"], errors[..100].join("\n"));
        assert!(
            journal["MESSAGE"].contains("… and 50 more"),
            "{}",
            journal["MESSAGE"]
        );
    }
}
