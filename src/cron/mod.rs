//! Cron expressions and the time engine: when does a job fire?
//!
//! Parsing lives in [`expr`]; the search for the next fire, with Debian cron's
//! daylight-saving rules, lives in [`engine`]; [`describe`] puts a schedule in words. The rules are ours and are tested as
//! such; no cron crate decides them.
//!
//! # The rules
//! - Day-of-month and day-of-week: if either field starts with `*` (`*/n` included), a
//!   day must match both; if both are restricted, a day matching either fires.
//! - A *wildcard job* has a minute or hour field that starts with `*`; any other is a
//!   *fixed-time job*.
//! - Local times skipped by a forward shift: a fixed-time job fires once, at the first
//!   instant after the gap; a wildcard job has no fires there.
//! - Local times repeated by a backward shift: a fixed-time job fires only at the first
//!   occurrence; a wildcard job fires in both passes.

pub mod describe;
mod engine;
mod expr;

use std::time::Duration;

use chrono::{DateTime, Utc};

pub use expr::CronExpr;

use crate::zone::Zone;

/// The error for a schedule that parses but never fires, the same from `check` and
/// `next --cron`.
pub fn never_fires_message(text: &str) -> String {
    format!(
        "`schedule` \"{}\" never fires: no date matches it (such as February 30); \
         fix the day-of-month, month or day-of-week field",
        text.escape_debug()
    )
}

/// A parsed `schedule:` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// A five- or six-field expression, or a macro such as `@daily`, evaluated in a zone.
    Cron(CronExpr),
    /// `@every DURATION`: fires at every multiple of the duration since the Unix epoch.
    Every(Duration),
    /// `@reboot`: once when the service starts, never on a timer.
    Reboot,
}

/// Why an expression was rejected; the message names the field and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CronError {
    pub message: String,
}

impl CronError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        CronError {
            message: message.into(),
        }
    }
}

const MACROS: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

impl Schedule {
    /// Parses a schedule: a cron expression, an `@` macro, `@every DURATION` or `@reboot`.
    pub fn parse(text: &str) -> Result<Schedule, CronError> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix('@') {
            let (word, arg) = match rest.split_once(char::is_whitespace) {
                Some((word, arg)) => (word, arg.trim()),
                None => (rest, ""),
            };
            let word_lower = word.to_ascii_lowercase();
            return match word_lower.as_str() {
                "every" => parse_every(arg),
                "reboot" if arg.is_empty() => Ok(Schedule::Reboot),
                _ => {
                    let macro_name = format!("@{word_lower}");
                    match MACROS.iter().find(|(name, _)| *name == macro_name) {
                        Some(_) if !arg.is_empty() => Err(CronError::new(format!(
                            "`{macro_name}` takes no argument, but `{arg}` follows it"
                        ))),
                        Some((_, expansion)) => CronExpr::parse(expansion).map(Schedule::Cron),
                        None => Err(CronError::new(format!(
                            "unknown macro `@{word}`; use one of @yearly, @annually, @monthly, \
                             @weekly, @daily, @midnight, @hourly, @reboot or `@every DURATION`"
                        ))),
                    }
                }
            };
        }
        CronExpr::parse(text).map(Schedule::Cron)
    }

    /// The first fire strictly after `after`, or `None` if there is none (`@reboot`, or an
    /// expression that never matches, such as February 30). `tz` is a [`Zone`] or a
    /// `chrono_tz::Tz`.
    pub fn next_after(&self, tz: impl Into<Zone>, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Reboot => None,
            Schedule::Every(period) => {
                let period_ms = i64::try_from(period.as_millis()).ok()?.max(1);
                let after_ms = after.timestamp_millis();
                let next = (after_ms.div_euclid(period_ms) + 1).checked_mul(period_ms)?;
                DateTime::from_timestamp_millis(next)
            }
            Schedule::Cron(expr) => {
                let start = after.timestamp().checked_add(1)?;
                engine::next_fire(expr, tz.into(), start)
                    .and_then(|secs| DateTime::from_timestamp(secs, 0))
            }
        }
    }

    /// The shortest possible time between two fires: a fire handled sooner than this
    /// after its instant cannot have a later fire due yet.
    pub fn min_gap(&self) -> Duration {
        match self {
            Schedule::Every(period) => (*period).max(Duration::from_millis(1)),
            // Whole seconds, strictly increasing; `@reboot` fires once.
            Schedule::Cron(_) | Schedule::Reboot => Duration::from_secs(1),
        }
    }

    /// An iterator over successive fires after `after`.
    pub fn fires_after(
        &self,
        tz: impl Into<Zone>,
        after: DateTime<Utc>,
    ) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let tz: Zone = tz.into();
        let mut cursor = Some(after);
        std::iter::from_fn(move || {
            let next = self.next_after(tz, cursor?);
            cursor = next;
            next
        })
    }

    /// Whether this is a wildcard job in Debian cron's sense (minute or hour starts with `*`).
    pub fn is_wildcard(&self) -> bool {
        matches!(self, Schedule::Cron(expr) if expr.is_wildcard())
    }

    /// Things that are legal but rarely meant, for `check` to warn about.
    pub fn warnings(&self) -> Vec<String> {
        match self {
            Schedule::Cron(expr) if expr.has_star_seconds() => vec![
                "the seconds field is `*`, so this fires every second of each matching minute; \
                 write `0` as the first field to fire once a minute"
                    .to_string(),
            ],
            _ => Vec::new(),
        }
    }
}

fn parse_every(arg: &str) -> Result<Schedule, CronError> {
    if arg.is_empty() {
        return Err(CronError::new(
            "`@every` needs a duration, e.g. `@every 5m` or `@every 1h30m`",
        ));
    }
    let period = crate::duration::parse_duration(arg)
        .map_err(|err| CronError::new(format!("`@every {arg}`: {err}")))?;
    if period.is_zero() {
        return Err(CronError::new(
            "`@every` needs a duration above zero, e.g. `@every 5m`",
        ));
    }
    Ok(Schedule::Every(period))
}
