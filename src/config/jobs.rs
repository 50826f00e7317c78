//! Phase 2: the YAML tree → validated [`Job`]s.
//!
//! Every check records its error with the location of the key or value at fault and
//! goes on, so one run reports everything wrong in every file. A job with any error is
//! left out; if any error was found at all, the caller gets the errors and no jobs.
//!
//! # Layout
//! This file walks one file's tree: the file's shape, `jobs:`, and each job from its
//! name to the built [`Job`]. Each kind of key has its own room, all of them methods of
//! the one [`FileChecker`]:
//! - `loader`: many files at once, in file order; names across files; `--max-jobs`.
//! - `keys`: which keys each level takes, duplicates, unknown keys and "did you mean",
//!   strict booleans.
//! - `schedule`: `schedule` and `timezone`. `settings`: what `defaults` and jobs share,
//!   and their merge. `retry`: `retry` and the policy after the merge.
//! - `command`: the shell `command`. `http`: the `http:` mapping.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::tree::{self, Node, NodeKind, Parsed};
use super::{ConfigError, LoadOptions};
use crate::job::{self, Action, Job, ShellCommand, SourceLocation};

mod command;
mod hooks;
mod http;
mod keys;
mod loader;
mod retry;
mod schedule;
mod schema;
mod settings;
#[cfg(test)]
mod tests;

use keys::{Entry, JOB_KEYS};
pub(super) use loader::Loader;
use loader::{FileOutcome, JobBudget, NameUse};
use schedule::ParsedSchedule;
pub use schema::{json_schema, schema_keys};
use settings::Settings;

/// Checks one file's tree.
struct FileChecker<'a, 'o> {
    file: &'a Path,
    src: &'a str,
    opts: &'o LoadOptions,
    /// The instant "never fires" is judged from.
    now: DateTime<Utc>,
    out: FileOutcome,
    /// Each distinct `schedule` text, parsed once: files repeat a few expressions.
    schedules: HashMap<String, ParsedSchedule>,
}

/// The keys of one job, sorted out before they are checked.
struct JobKeys<'n> {
    /// The settings the job sets itself.
    own: Settings,
    schedule: Option<Entry<'n>>,
    command: Option<Entry<'n>>,
    http: Option<Entry<'n>>,
    /// Keys suggested for misspelt ones: no "missing" error for those on top.
    suggested: Vec<&'static str>,
}

/// Checks one file on its own; with a budget, only while the set stays within it.
fn check_file(
    path: &Path,
    bytes: &[u8],
    opts: &LoadOptions,
    now: DateTime<Utc>,
    budget: Option<&JobBudget>,
) -> FileOutcome {
    let mut outcome = FileOutcome::default();
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => {
            let offset = err.valid_up_to();
            let valid = String::from_utf8_lossy(&bytes[..offset]);
            let line = valid.matches('\n').count() + 1;
            let column = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            outcome.errors.push(ConfigError::at(
                place(path, line as u64, column as u64),
                format!(
                    "the file is not valid UTF-8 (byte {:#04x} at offset {offset}); \
                     save it as UTF-8",
                    bytes[offset]
                ),
            ));
            return outcome;
        }
    };
    let max_jobs = budget.map_or(usize::MAX, JobBudget::remaining);
    let root = match tree::parse_within(text, max_jobs) {
        Ok(Parsed::Tree(root)) => root,
        Ok(Parsed::TooManyJobs(count)) => {
            if let Some(budget) = budget {
                // Over by construction: `count` is more than what remained.
                let _within = budget.declare(count);
            }
            return outcome;
        }
        Err(err) => {
            outcome.errors.push(if err.line == 0 {
                ConfigError::in_file(path, err.message)
            } else {
                ConfigError::at(place(path, err.line, err.column), err.message)
            });
            return outcome;
        }
    };
    if budget.is_some_and(|budget| !budget.declare(declared_jobs(&root))) {
        return outcome;
    }
    let mut checker = FileChecker {
        file: path,
        src: text,
        opts,
        now,
        out: outcome,
        schedules: HashMap::new(),
    };
    checker.check(&root);
    checker.out
}

/// The entries under the top-level `jobs:` key, for the `--max-jobs` budget; whether
/// each is a valid job is for the checks after.
fn declared_jobs(root: &Node) -> usize {
    let NodeKind::Map(entries) = &root.kind else {
        return 0;
    };
    entries
        .iter()
        .filter(|(key, _)| matches!(&key.kind, NodeKind::Str(name) if name == "jobs"))
        .map(|(_, value)| match &value.kind {
            NodeKind::Map(jobs) => jobs.len(),
            _ => 0,
        })
        .sum()
}

fn place(file: &Path, line: u64, column: u64) -> SourceLocation {
    SourceLocation {
        file: file.to_path_buf(),
        line,
        column,
    }
}

impl<'a> FileChecker<'a, '_> {
    fn location(&self, node: &Node) -> SourceLocation {
        place(self.file, node.line, node.column)
    }

    fn error(&mut self, node: &Node, message: String) {
        let location = self.location(node);
        self.out.errors.push(ConfigError::at(location, message));
    }

    fn text<'n>(&self, node: &'n Node) -> Cow<'n, str>
    where
        'a: 'n,
    {
        match node.scalar_text(self.src) {
            Some(text) => text,
            None => Cow::Borrowed(node.describe()),
        }
    }

    fn check(&mut self, root: &Node) {
        match &root.kind {
            NodeKind::Map(_) => {}
            NodeKind::Null => {
                self.out.errors.push(ConfigError::in_file(
                    self.file,
                    "the file is empty; add a `jobs:` mapping with at least one job \
                     (or delete the file)"
                        .to_string(),
                ));
                return;
            }
            _ => {
                let message = format!(
                    "the file must be a mapping with a `jobs:` key (and optionally \
                     `defaults:`), not {}; write `jobs:` and the jobs under it",
                    root.describe()
                );
                self.error(root, message);
                return;
            }
        }
        let entries = self.entries(root, "", true);
        let mut defaults = None;
        let mut jobs = None;
        let mut suggested = Vec::new();
        for entry in &entries {
            match entry.key.as_ref() {
                "defaults" => defaults = Some(entry),
                "jobs" => jobs = Some(entry),
                _ => suggested.extend(self.unknown_top_key(entry)),
            }
        }
        let defaults = match defaults {
            Some(entry) => self.defaults(entry.value),
            None => Settings::default(),
        };
        match jobs {
            Some(entry) => self.jobs(entry, &defaults),
            // `job:` got a "did you mean `jobs`?" already.
            None if suggested.contains(&"jobs") => {}
            None => self.error(
                root,
                "the file has no `jobs:` mapping; add `jobs:` with at least one job under it"
                    .to_string(),
            ),
        }
    }

    fn jobs(&mut self, entry: &Entry<'_>, defaults: &Settings) {
        let node = entry.value;
        match &node.kind {
            NodeKind::Map(_) => {}
            NodeKind::Null => {
                self.error(
                    entry.key_node,
                    "`jobs` is empty; add at least one job under it (or write `jobs: {}` \
                     for a file without jobs)"
                        .to_string(),
                );
                return;
            }
            NodeKind::Seq(_) => {
                self.error(
                    node,
                    "`jobs` must be a mapping from job names to jobs, not a list; write \
                     each job as `name:` (no `-`) with its keys indented below"
                        .to_string(),
                );
                return;
            }
            _ => {
                let message = format!(
                    "`jobs` must be a mapping from job names to jobs, not {}",
                    node.describe()
                );
                self.error(node, message);
                return;
            }
        }
        // Names are compared with each other, in this file and others, in `Loader::merge`.
        let entries = self.entries(node, "jobs.", false);
        self.out.jobs.reserve(entries.len());
        for job_entry in entries {
            let before = self.out.errors.len();
            let job = self.job(&job_entry, defaults);
            if self.out.errors.len() == before
                && let Some(job) = job
            {
                self.out.jobs.push(job);
            }
        }
    }

    fn job(&mut self, entry: &Entry<'_>, defaults: &Settings) -> Option<Job> {
        let name = entry.key.as_ref();
        let here = self.job_name(entry);
        if !self.job_is_mapping(entry) {
            return None;
        }
        let mut keys = self.job_keys(entry.value);
        let settings = std::mem::take(&mut keys.own).over(defaults);
        let timezone = settings.timezone.unwrap_or(self.opts.default_timezone);
        let schedule = match &keys.schedule {
            Some(field) => self.schedule(field.value, timezone),
            None if keys.suggested.contains(&"schedule") => None,
            None => {
                let message = format!(
                    "job `{}` has no `schedule`; add one, e.g. `schedule: \"30 2 * * *\"` \
                     or `schedule: \"@daily\"`",
                    escaped(name)
                );
                self.error(entry.key_node, message);
                None
            }
        };
        let action = self.action(entry, &keys);
        let retry = self.retry_policy(&settings.retry);

        let (schedule_text, schedule) = schedule?;
        let pings = settings.pings();
        Some(Job {
            name: name.to_string(),
            schedule_text,
            schedule,
            timezone,
            action: action?,
            workdir: settings.workdir,
            env: settings.env,
            env_inherit: settings.env_inherit.unwrap_or(false),
            run_as: (settings.user.is_some() || settings.group.is_some()).then_some(job::RunAs {
                user: settings.user,
                group: settings.group,
            }),
            timeout: settings.timeout,
            kill_grace: settings.kill_grace.unwrap_or(job::DEFAULT_KILL_GRACE),
            retry: retry?,
            overlap: settings.overlap.unwrap_or_default(),
            starting_deadline: settings.starting_deadline,
            catch_up: settings.catch_up.unwrap_or_default(),
            on_owner_loss: settings.on_owner_loss.unwrap_or_default(),
            enabled: settings.enabled.unwrap_or(true),
            pings,
            source: here,
        })
    }

    /// Checks a job's name and records where it stands, for the comparison across files.
    fn job_name(&mut self, entry: &Entry<'_>) -> SourceLocation {
        let name = entry.key.as_ref();
        let here = self.location(entry.key_node);
        if name.is_empty() {
            self.error(
                entry.key_node,
                "a job name is empty; name the job with letters, digits, `.`, `_` or `-`"
                    .to_string(),
            );
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            let message = format!(
                "job name `{}` may contain only letters, digits, `.`, `_` and `-` (it \
                 becomes a log field and an environment value); rename it",
                escaped(name)
            );
            self.error(entry.key_node, message);
        }
        // Whether the name is taken is known only when all files before are merged.
        self.out.names.push(NameUse {
            name: name.to_string(),
            line: here.line,
            column: here.column,
            errors_before: self.out.errors.len(),
        });
        here
    }

    /// Whether the job's body is a mapping; if not, says so.
    fn job_is_mapping(&mut self, entry: &Entry<'_>) -> bool {
        let body = entry.value;
        let message = match &body.kind {
            NodeKind::Map(_) => return true,
            NodeKind::Null => {
                let message = format!(
                    "job `{}` is empty; give it a `schedule` and a `command` (or `http`)",
                    escaped(&entry.key)
                );
                self.error(entry.key_node, message);
                return false;
            }
            _ => format!(
                "job `{}` must be a mapping of keys such as `schedule` and `command`, not {}",
                escaped(&entry.key),
                body.describe()
            ),
        };
        self.error(body, message);
        false
    }

    /// Sorts a job's keys: `schedule`, `command` and `http` are kept for later, the
    /// settings it shares with `defaults` are read, and any other key is unknown.
    fn job_keys<'n>(&mut self, body: &'n Node) -> JobKeys<'n>
    where
        'a: 'n,
    {
        let mut keys = JobKeys {
            own: Settings::default(),
            schedule: None,
            command: None,
            http: None,
            suggested: Vec::new(),
        };
        for field in self.entries(body, "", true) {
            match field.key.as_ref() {
                "schedule" => keys.schedule = Some(field),
                "command" => keys.command = Some(field),
                "http" => keys.http = Some(field),
                _ => {
                    if !self.setting(&field, &mut keys.own, "") {
                        let suggested = self.unknown_key(&field, "", JOB_KEYS, "a job");
                        keys.suggested.extend(suggested);
                    }
                }
            }
        }
        keys
    }

    /// What the job does: its `command` or its `http` request, exactly one of them.
    fn action(&mut self, entry: &Entry<'_>, keys: &JobKeys<'_>) -> Option<Action> {
        let name = entry.key.as_ref();
        let (command, http) = (keys.command.as_ref(), keys.http.as_ref());
        // Both are checked even when both are given, so that all their errors show.
        let shell: Option<ShellCommand> = command.and_then(|command| self.command(command.value));
        let request = http.and_then(|http| self.http(http));
        match (command, http) {
            (Some(command), Some(http)) => {
                let later = if (http.key_node.line, http.key_node.column)
                    > (command.key_node.line, command.key_node.column)
                {
                    http.key_node
                } else {
                    command.key_node
                };
                let message = format!(
                    "job `{}` has both `command` and `http`; a job does one of them — keep \
                     one (or split it into two jobs)",
                    escaped(name)
                );
                self.error(later, message);
                None
            }
            (None, None)
                if keys
                    .suggested
                    .iter()
                    .any(|key| ["command", "http"].contains(key)) =>
            {
                None
            }
            (None, None) => {
                let message = format!(
                    "job `{}` has neither `command` nor `http`; add `command: ...` to run a \
                     program, or `http: {{ url: ... }}` to call a URL",
                    escaped(name)
                );
                self.error(entry.key_node, message);
                None
            }
            (Some(_), None) => shell.map(Action::Shell),
            (None, Some(_)) => request.map(Action::Http),
        }
    }
}

/// User text made safe for a one-line message: newlines and control characters escaped.
fn escaped(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(text.escape_debug().to_string())
    } else {
        Cow::Borrowed(text)
    }
}
