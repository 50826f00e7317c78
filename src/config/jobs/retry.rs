//! `retry:` — attempts, delay and its cap — and the policy a job gets once its own
//! `retry` is merged over the file's `defaults`, where a conflict can span both.

use std::time::Duration;

use super::{FileChecker, escaped};
use crate::config::ConfigError;
use crate::config::tree::{Node, NodeKind};
use crate::duration::HumanDuration;
use crate::job::{RetryPolicy, SourceLocation};

pub(super) const RETRY_KEYS: &[&str] = &["attempts", "delay", "max_delay"];
/// Upper bound of `retry.attempts`: beyond this a retry policy is a polling loop.
pub(super) const MAX_ATTEMPTS: u32 = 100;

/// `retry` as one mapping (a job's or `defaults`') sets it; `None` means "not set here".
#[derive(Debug, Clone, Default)]
pub(super) struct RetrySettings {
    attempts: Option<u32>,
    delay: Option<Placed>,
    max_delay: Option<Placed>,
}

impl RetrySettings {
    /// A job's own `retry` over its file's defaults, key by key.
    pub(super) fn over(self, defaults: &RetrySettings) -> RetrySettings {
        RetrySettings {
            attempts: self.attempts.or(defaults.attempts),
            delay: self.delay.or_else(|| defaults.delay.clone()),
            max_delay: self.max_delay.or_else(|| defaults.max_delay.clone()),
        }
    }
}

/// A duration and where it was written, to report conflicts between two places.
#[derive(Debug, Clone)]
struct Placed {
    value: Duration,
    at: SourceLocation,
    in_defaults: bool,
}

impl FileChecker<'_, '_> {
    pub(super) fn retry(&mut self, path: &str, node: &Node, in_defaults: bool) -> RetrySettings {
        let mut retry = RetrySettings::default();
        if !matches!(node.kind, NodeKind::Map(_)) {
            let message = format!(
                "`{path}` must be a mapping such as `{{ attempts: 3, delay: 1m, max_delay: \
                 10m }}`, not {}",
                node.describe()
            );
            self.error(node, message);
            return retry;
        }
        let prefix = format!("{path}.");
        let mut max_delay_node = None;
        for field in self.entries(node, &prefix, true) {
            let value = field.value;
            let key_path = format!("{prefix}{}", field.key);
            match field.key.as_ref() {
                "attempts" => retry.attempts = self.attempts(&key_path, value),
                "delay" | "max_delay" => {
                    let placed = self
                        .duration(&key_path, value, None)
                        .map(|duration| Placed {
                            value: duration,
                            at: self.location(value),
                            in_defaults,
                        });
                    if field.key == "delay" {
                        retry.delay = placed;
                    } else {
                        retry.max_delay = placed;
                        max_delay_node = Some(value);
                    }
                }
                _ => {
                    self.unknown_key(&field, &prefix, RETRY_KEYS, "`retry`");
                }
            }
        }
        if let (Some(delay), Some(max_delay), Some(node)) =
            (&retry.delay, &retry.max_delay, max_delay_node)
            && max_delay.value < delay.value
        {
            let message = format!(
                "`{path}.max_delay` ({}) is shorter than `{path}.delay` ({}); make \
                 `max_delay` at least as long as `delay`",
                HumanDuration(max_delay.value),
                HumanDuration(delay.value)
            );
            self.error(node, message);
        }
        retry
    }

    fn attempts(&mut self, path: &str, node: &Node) -> Option<u32> {
        if let NodeKind::Int(attempts) = node.kind
            && let Ok(attempts) = u32::try_from(attempts)
            && (1..=MAX_ATTEMPTS).contains(&attempts)
        {
            return Some(attempts);
        }
        let message = format!(
            "`{path}` must be a whole number from 1 to {MAX_ATTEMPTS} (the total number of \
             attempts, the first included), not `{}`",
            escaped(&self.text(node))
        );
        self.error(node, message);
        None
    }

    /// The job's retry policy from its merged settings, checking what only the merge
    /// reveals: `max_delay` from one place shorter than `delay` from the other.
    pub(super) fn retry_policy(&mut self, retry: &RetrySettings) -> Option<RetryPolicy> {
        let default = RetryPolicy::default();
        if let (Some(delay), Some(max_delay)) = (&retry.delay, &retry.max_delay)
            && max_delay.value < delay.value
        {
            // Both from the same mapping: already reported there.
            if delay.in_defaults == max_delay.in_defaults {
                return None;
            }
            let (at, from) = if max_delay.in_defaults {
                (&delay.at, "`retry.max_delay` is set in `defaults`")
            } else {
                (&max_delay.at, "`retry.delay` is set in `defaults`")
            };
            let message = format!(
                "`retry.max_delay` ({}) is shorter than `retry.delay` ({}) ({from}); make \
                 `max_delay` at least as long as `delay`",
                HumanDuration(max_delay.value),
                HumanDuration(delay.value)
            );
            self.out.errors.push(ConfigError::at(at.clone(), message));
            return None;
        }
        let delay = retry.delay.as_ref().map_or(default.delay, |d| d.value);
        // A long delay without a cap raises the default cap rather than failing.
        let max_delay = retry
            .max_delay
            .as_ref()
            .map_or(default.max_delay.max(delay), |d| d.value);
        Some(RetryPolicy {
            attempts: retry.attempts.unwrap_or(default.attempts),
            delay,
            max_delay,
        })
    }
}
