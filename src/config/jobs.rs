//! Phase 2: the YAML tree → validated [`Job`]s.
//!
//! Every check records its error with the location of the key or value at fault and
//! goes on, so one run reports everything wrong in every file. A job with any error is
//! left out; if any error was found at all, the caller gets the errors and no jobs.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, hash_map};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::{TZ_VARIANTS, Tz};

use crate::zone::Zone;

use super::interpolate::is_var_name;
use super::suggest::{closest, distance};
use super::tree::{self, Node, NodeKind, Parsed};
use super::{Config, ConfigError, ConfigErrors, ConfigWarning, LoadOptions, Source};
use crate::cron::{CronError, Schedule};
use crate::duration::{HumanDuration, parse_duration};
use crate::job::{self, Action, Job, Overlap, RetryPolicy, ShellCommand, SourceLocation};

mod http;
#[cfg(test)]
mod tests;

use http::HTTP_KEYS;

const TOP_KEYS: &[&str] = &["defaults", "jobs"];
const JOB_KEYS: &[&str] = &[
    "schedule",
    "command",
    "http",
    "timezone",
    "workdir",
    "env",
    "timeout",
    "kill_grace",
    "retry",
    "overlap",
    "starting_deadline",
    "enabled",
];
/// Keys a job has but `defaults` cannot: they say what and when, not how.
const JOB_ONLY_KEYS: &[&str] = &["schedule", "command", "http"];
const RETRY_KEYS: &[&str] = &["attempts", "delay", "max_delay"];
const OVERLAPS: &[(&str, Overlap)] = &[
    ("skip", Overlap::Skip),
    ("allow", Overlap::Allow),
    ("replace", Overlap::Replace),
];
/// Upper bound of `retry.attempts`: beyond this a retry policy is a polling loop.
pub(crate) const MAX_ATTEMPTS: u32 = 100;

/// Other spellings people reach for, mapped to the key meant.
const KEY_ALIASES: &[(&str, &str)] = &[
    ("cmd", "command"),
    ("run", "command"),
    ("exec", "command"),
    ("script", "command"),
    ("cron", "schedule"),
    ("when", "schedule"),
    ("tz", "timezone"),
    ("time_zone", "timezone"),
    ("zone", "timezone"),
    ("cwd", "workdir"),
    ("dir", "workdir"),
    ("working_dir", "workdir"),
    ("working_directory", "workdir"),
    ("environment", "env"),
    ("retries", "retry"),
    ("deadline", "starting_deadline"),
    ("disabled", "enabled"),
    ("grace", "kill_grace"),
    ("status", "expect_status"),
    ("expected_status", "expect_status"),
    ("header", "headers"),
    ("max_attempts", "attempts"),
];

/// Collects jobs, errors and warnings over all sources of one load.
pub(crate) struct Loader<'o> {
    opts: &'o LoadOptions,
    /// The instant "never fires" is judged from.
    now: DateTime<Utc>,
    jobs: Vec<Job>,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigWarning>,
    /// The files checked so far, in order.
    files: Vec<PathBuf>,
    /// Where each job name was first defined, across all files: the index in `files`,
    /// line and column.
    names: HashMap<String, (usize, u64, u64)>,
}

/// Jobs declared (entries under `jobs:`) over all files, counted as their trees are
/// built, so that a set over `--max-jobs` is refused before its jobs are validated and
/// built, and the files not yet parsed are not parsed at all.
struct JobBudget {
    limit: usize,
    declared: AtomicUsize,
}

impl JobBudget {
    /// How many more jobs fit.
    fn remaining(&self) -> usize {
        self.limit
            .saturating_sub(self.declared.load(Ordering::Relaxed))
    }

    /// Counts `jobs` more; false once the total is over the limit.
    fn declare(&self, jobs: usize) -> bool {
        self.declared.fetch_add(jobs, Ordering::Relaxed) + jobs <= self.limit
    }

    fn exceeded(&self) -> bool {
        self.declared.load(Ordering::Relaxed) > self.limit
    }
}

/// What one file holds, checked on its own. Job names are compared across files when
/// the outcomes are put together in file order, so files can be checked in parallel.
#[derive(Default)]
struct FileOutcome {
    jobs: Vec<Job>,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigWarning>,
    names: Vec<NameUse>,
}

/// A job name as defined in a file.
struct NameUse {
    name: String,
    line: u64,
    column: u64,
    /// How many of the file's errors came before the name was checked: a "defined twice"
    /// error goes there, among the other errors at the same place.
    errors_before: usize,
}

impl<'o> Loader<'o> {
    /// `errors`: those found before any file was read (missing paths, unreadable files).
    pub(crate) fn new(opts: &'o LoadOptions, errors: Vec<ConfigError>) -> Loader<'o> {
        Loader {
            opts,
            now: Utc::now(),
            jobs: Vec::new(),
            errors,
            warnings: Vec::new(),
            files: Vec::new(),
            names: HashMap::new(),
        }
    }

    /// Checks the files, several at once where there are CPUs to spare; their jobs and
    /// errors join those of the files before them, in file order as if checked one by one.
    ///
    /// With [`LoadOptions::max_jobs`], a set that declares more jobs is refused with that
    /// one error (besides those met while reading): the jobs are counted as the files are
    /// parsed, and once the count is over, the file being parsed stops there and no more
    /// are validated or parsed.
    pub(crate) fn add_sources(&mut self, sources: &[Source]) {
        let (opts, now) = (self.opts, self.now);
        let budget = opts.max_jobs.map(|limit| JobBudget {
            limit,
            declared: AtomicUsize::new(self.jobs.len()),
        });
        let outcomes = parallel_map(sources, |source| {
            if budget.as_ref().is_some_and(JobBudget::exceeded) {
                return FileOutcome::default();
            }
            let outcome = check_file(&source.path, &source.bytes, opts, now, budget.as_ref());
            // The file's parse tree is gone: give its pages back before the next file.
            crate::memory::release_freed();
            outcome
        });
        if let Some(budget) = &budget
            && budget.exceeded()
        {
            // The jobs built before the count went over are not needed any more.
            drop(outcomes);
            crate::memory::release_freed();
            self.errors.push(too_many_jobs(budget.limit));
            return;
        }
        // Grown once, not file by file: a job is large, and there may be 100,000.
        self.jobs
            .reserve(outcomes.iter().map(|outcome| outcome.jobs.len()).sum());
        self.names
            .reserve(outcomes.iter().map(|outcome| outcome.names.len()).sum());
        for (source, outcome) in sources.iter().zip(outcomes) {
            self.merge(&source.path, outcome);
        }
    }

    /// Adds one file's outcome, with the names it defines checked against all before.
    fn merge(&mut self, path: &Path, outcome: FileOutcome) {
        let FileOutcome {
            jobs,
            mut errors,
            mut warnings,
            names,
        } = outcome;
        let file = self.files.len();
        self.files.push(path.to_path_buf());
        let mut twice = Vec::new();
        for NameUse {
            name,
            line,
            column,
            errors_before,
        } in names
        {
            match self.names.entry(name) {
                hash_map::Entry::Occupied(first) => {
                    let &(first_file, first_line, first_column) = first.get();
                    let message = format!(
                        "job `{}` is defined twice: here and at {}; rename one",
                        escaped(first.key()),
                        place(&self.files[first_file], first_line, first_column)
                    );
                    twice.push((
                        errors_before,
                        ConfigError::at(place(path, line, column), message),
                    ));
                }
                hash_map::Entry::Vacant(slot) => {
                    slot.insert((file, line, column));
                }
            }
        }
        if !twice.is_empty() {
            // Each where its check stood, as if the file had been checked after the others.
            let mut file_errors = errors.into_iter();
            errors = Vec::with_capacity(file_errors.len() + twice.len());
            let mut taken = 0;
            for (errors_before, error) in twice {
                errors.extend(
                    file_errors
                        .by_ref()
                        .take(errors_before.saturating_sub(taken)),
                );
                taken = taken.max(errors_before);
                errors.push(error);
            }
            errors.extend(file_errors);
        }
        // Checks run job by job, key by key; readers go top to bottom.
        errors.sort_by_key(|error| {
            error
                .location
                .as_ref()
                .map(|location| (location.line, location.column))
        });
        warnings.sort_by_key(|warning| (warning.location.line, warning.location.column));
        self.jobs.extend(jobs);
        self.errors.extend(errors);
        self.warnings.extend(warnings);
    }

    pub(crate) fn finish(self, files: Vec<PathBuf>) -> Result<Config, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(Config {
                jobs: self.jobs,
                default_timezone: self.opts.default_timezone,
                files,
                warnings: self.warnings,
            })
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}

/// `f` over every item, in parallel on up to as many threads as there are CPUs; the
/// results come back in the items' order. Without spare CPUs, or when a thread cannot be
/// started, the work stays on this thread.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = match items.len() {
        0 | 1 => 1,
        len => std::thread::available_parallelism().map_or(1, |cpus| cpus.get().min(len)),
    };
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(index) else {
                return done;
            };
            done.push((index, f(item)));
        }
    };
    let mut results: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, work).ok())
            .collect();
        let mut done = work();
        for helper in helpers {
            match helper.join() {
                Ok(more) => done.extend(more),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        for (index, result) in done {
            results[index] = Some(result);
        }
    });
    results
        .into_iter()
        .map(|result| result.expect("every index below the length is taken by one thread"))
        .collect()
}

/// The error for a set of files over `--max-jobs`. It gives no total: counting stopped
/// at the limit, and how far it got depends on which thread parsed what first.
fn too_many_jobs(limit: usize) -> ConfigError {
    ConfigError {
        location: None,
        message: format!(
            "the schedules define more than --max-jobs {limit} jobs; raise --max-jobs \
             (or CHIME_MAX_JOBS) if this is intended (`chime check` counts them all)"
        ),
    }
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

fn place(file: &Path, line: u64, column: u64) -> SourceLocation {
    SourceLocation {
        file: file.to_path_buf(),
        line,
        column,
    }
}

/// A mapping entry whose key is a scalar.
struct Entry<'n> {
    key: Cow<'n, str>,
    key_node: &'n Node,
    value: &'n Node,
}

/// The settings `defaults` and jobs share; `None` means "not set here".
#[derive(Debug, Clone, Default)]
struct Settings {
    timezone: Option<Zone>,
    workdir: Option<PathBuf>,
    env: BTreeMap<String, String>,
    timeout: Option<Duration>,
    kill_grace: Option<Duration>,
    retry: RetrySettings,
    overlap: Option<Overlap>,
    starting_deadline: Option<Duration>,
    enabled: Option<bool>,
}

#[derive(Debug, Clone, Default)]
struct RetrySettings {
    attempts: Option<u32>,
    delay: Option<Placed>,
    max_delay: Option<Placed>,
}

/// A duration and where it was written, to report conflicts between two places.
#[derive(Debug, Clone)]
struct Placed {
    value: Duration,
    at: SourceLocation,
    in_defaults: bool,
}

impl Settings {
    /// A job's own settings over its file's defaults (`env` and `retry` key by key).
    fn over(self, defaults: &Settings) -> Settings {
        let mut env = defaults.env.clone();
        env.extend(self.env);
        Settings {
            timezone: self.timezone.or(defaults.timezone),
            workdir: self.workdir.or_else(|| defaults.workdir.clone()),
            env,
            timeout: self.timeout.or(defaults.timeout),
            kill_grace: self.kill_grace.or(defaults.kill_grace),
            retry: RetrySettings {
                attempts: self.retry.attempts.or(defaults.retry.attempts),
                delay: self.retry.delay.or_else(|| defaults.retry.delay.clone()),
                max_delay: self
                    .retry
                    .max_delay
                    .or_else(|| defaults.retry.max_delay.clone()),
            },
            overlap: self.overlap.or(defaults.overlap),
            starting_deadline: self.starting_deadline.or(defaults.starting_deadline),
            enabled: self.enabled.or(defaults.enabled),
        }
    }
}

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

/// A `schedule` text's parse, and for each zone met with it whether it ever fires.
struct ParsedSchedule {
    parsed: Result<Schedule, CronError>,
    fires: Vec<(Zone, bool)>,
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

    /// The entries of a mapping node. Keys that are not scalars are errors; with
    /// `unique`, so is a key given twice (the later one is dropped).
    fn entries<'n>(&mut self, map: &'n Node, prefix: &str, unique: bool) -> Vec<Entry<'n>>
    where
        'a: 'n,
    {
        let NodeKind::Map(pairs) = &map.kind else {
            return Vec::new();
        };
        let mut entries: Vec<Entry<'n>> = Vec::with_capacity(pairs.len());
        // Most mappings have a handful of keys, where a scan beats hashing; the index is
        // for the rare large one (a long `env`).
        let mut seen: Option<HashMap<Cow<'n, str>, &'n Node>> =
            (unique && pairs.len() > 16).then(HashMap::new);
        for (key_node, value) in pairs {
            let Some(key) = key_node.scalar_text(self.src) else {
                self.error(
                    key_node,
                    format!(
                        "a key {}is {}; keys must be plain names",
                        in_place(prefix),
                        key_node.describe()
                    ),
                );
                continue;
            };
            if unique {
                let first = match &seen {
                    Some(seen) => seen.get(&key).copied(),
                    None => entries
                        .iter()
                        .find(|entry| entry.key == key)
                        .map(|entry| entry.key_node),
                };
                if let Some(first) = first {
                    let message = format!(
                        "`{prefix}{}` is given twice (first at line {}, column {}); remove one",
                        escaped(&key),
                        first.line,
                        first.column
                    );
                    self.error(key_node, message);
                    continue;
                }
                if let Some(seen) = &mut seen {
                    seen.insert(key.clone(), key_node);
                }
            }
            entries.push(Entry {
                key,
                key_node,
                value,
            });
        }
        entries
    }

    /// An unknown key: a "did you mean" when one is close, else the valid keys.
    /// Returns the key suggested, if any.
    fn unknown_key<'k>(
        &mut self,
        entry: &Entry<'_>,
        prefix: &str,
        valid: &[&'k str],
        what: &str,
    ) -> Option<&'k str> {
        let key = entry.key.as_ref();
        let alias = KEY_ALIASES
            .iter()
            .find(|(alias, _)| alias.eq_ignore_ascii_case(key))
            .and_then(|(_, meant)| valid.iter().copied().find(|valid| valid == meant));
        let suggestion = alias.or_else(|| closest(key, valid.iter().copied(), 2));
        let hint = if let Some(meant) = suggestion {
            format!("did you mean `{meant}`?")
        } else if prefix.is_empty() && HTTP_KEYS.contains(&key) {
            format!("`{key}` belongs under `http:`, e.g. `http: {{ {key}: ... }}`")
        } else if prefix.is_empty() && RETRY_KEYS.contains(&key) {
            format!("`{key}` belongs under `retry:`, e.g. `retry: {{ {key}: ... }}`")
        } else {
            format!("{what} takes {}", list(valid))
        };
        let message = format!("unknown key `{prefix}{}`; {hint}", escaped(key));
        self.error(entry.key_node, message);
        suggestion
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

    /// Returns the key suggested, if any.
    fn unknown_top_key(&mut self, entry: &Entry<'_>) -> Option<&'static str> {
        let key = entry.key.as_ref();
        let looks_like_job = match &entry.value.kind {
            NodeKind::Map(pairs) => pairs
                .iter()
                .any(|(k, _)| matches!(&k.kind, NodeKind::Str(s) if s == "schedule")),
            _ => false,
        };
        if JOB_KEYS.contains(&key) {
            let message = format!(
                "`{key}` belongs to a job, not the top level; put it under `jobs:` and the \
                 job's name, or under `defaults:`"
            );
            self.error(entry.key_node, message);
            None
        } else if looks_like_job && closest(key, TOP_KEYS.iter().copied(), 2).is_none() {
            let message = format!(
                "`{}` looks like a job, but jobs go under `jobs:`; indent it below a \
                 `jobs:` line",
                escaped(key)
            );
            self.error(entry.key_node, message);
            None
        } else {
            self.unknown_key(entry, "", TOP_KEYS, "the top level")
        }
    }

    fn defaults(&mut self, node: &Node) -> Settings {
        let mut settings = Settings::default();
        match &node.kind {
            NodeKind::Map(_) => {}
            NodeKind::Null => return settings,
            _ => {
                let message = format!(
                    "`defaults` must be a mapping of settings such as `timezone` and \
                     `timeout`, not {}",
                    node.describe()
                );
                self.error(node, message);
                return settings;
            }
        }
        for entry in self.entries(node, "defaults.", true) {
            let key = entry.key.as_ref();
            if JOB_ONLY_KEYS.contains(&key) {
                let message = format!(
                    "`{key}` cannot be a default: `defaults` takes every job key but \
                     `schedule`, `command` and `http`; set `{key}` on each job"
                );
                self.error(entry.key_node, message);
            } else if !self.setting(&entry, &mut settings, "defaults.") {
                let valid: Vec<&str> = JOB_KEYS
                    .iter()
                    .copied()
                    .filter(|key| !JOB_ONLY_KEYS.contains(key))
                    .collect();
                self.unknown_key(&entry, "defaults.", &valid, "`defaults`");
            }
        }
        settings
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

        let body = entry.value;
        match &body.kind {
            NodeKind::Map(_) => {}
            NodeKind::Null => {
                let message = format!(
                    "job `{}` is empty; give it a `schedule` and a `command` (or `http`)",
                    escaped(name)
                );
                self.error(entry.key_node, message);
                return None;
            }
            _ => {
                let message = format!(
                    "job `{}` must be a mapping of keys such as `schedule` and `command`, \
                     not {}",
                    escaped(name),
                    body.describe()
                );
                self.error(body, message);
                return None;
            }
        }

        let mut own = Settings::default();
        let (mut schedule, mut command, mut http) = (None, None, None);
        // Keys suggested for misspelt ones: no "missing" error for those on top.
        let mut suggested = Vec::new();
        let entries = self.entries(body, "", true);
        for field in &entries {
            match field.key.as_ref() {
                "schedule" => schedule = Some(field),
                "command" => command = Some(field),
                "http" => http = Some(field),
                _ => {
                    if !self.setting(field, &mut own, "") {
                        suggested.extend(self.unknown_key(field, "", JOB_KEYS, "a job"));
                    }
                }
            }
        }
        let settings = own.over(defaults);
        let timezone = settings.timezone.unwrap_or(self.opts.default_timezone);

        let schedule = match schedule {
            Some(field) => self.schedule(field.value, timezone),
            None if suggested.contains(&"schedule") => None,
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
        // Both are checked even when both are given, so that all their errors show.
        let shell = command.and_then(|command| self.command(command.value));
        let request = http.and_then(|http| self.http(http));
        let action = match (command, http) {
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
                if suggested
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
        };
        let retry = self.retry_policy(&settings.retry);

        let (schedule_text, schedule) = schedule?;
        Some(Job {
            name: name.to_string(),
            schedule_text,
            schedule,
            timezone,
            action: action?,
            workdir: settings.workdir,
            env: settings.env,
            timeout: settings.timeout,
            kill_grace: settings.kill_grace.unwrap_or(job::DEFAULT_KILL_GRACE),
            retry: retry?,
            overlap: settings.overlap.unwrap_or_default(),
            starting_deadline: settings.starting_deadline,
            enabled: settings.enabled.unwrap_or(true),
            source: here,
        })
    }

    /// Reads one of the keys `defaults` and jobs share; `false` if `entry` is none.
    fn setting(&mut self, entry: &Entry<'_>, settings: &mut Settings, prefix: &str) -> bool {
        let key = entry.key.as_ref();
        let path = || format!("{prefix}{key}");
        let value = entry.value;
        match key {
            "timezone" => settings.timezone = self.timezone(&path(), value),
            "workdir" => settings.workdir = self.workdir(&path(), value),
            "env" => settings.env = self.env(&path(), value),
            "timeout" => {
                settings.timeout = self.duration(&path(), value, Some("leave it out for no limit"));
            }
            "kill_grace" => {
                settings.kill_grace =
                    self.duration(&path(), value, Some("leave it out for the default of 10s"));
            }
            "starting_deadline" => {
                settings.starting_deadline =
                    self.duration(&path(), value, Some("leave it out for no deadline"));
            }
            "retry" => settings.retry = self.retry(&path(), value, !prefix.is_empty()),
            "overlap" => settings.overlap = self.overlap(&path(), value),
            "enabled" => settings.enabled = self.boolean(&path(), value),
            _ => return false,
        }
        true
    }

    fn schedule(&mut self, node: &Node, timezone: Zone) -> Option<(String, Schedule)> {
        let text = match &node.kind {
            NodeKind::Str(text) => text,
            NodeKind::Null => {
                self.error(
                    node,
                    "`schedule` is empty; write a cron expression such as \"30 2 * * *\" \
                     or a macro such as \"@daily\""
                        .to_string(),
                );
                return None;
            }
            _ => {
                let message = format!(
                    "`schedule` must be a string such as \"30 2 * * *\" or \"@daily\", \
                     not {} (`{}`); quote it",
                    node.describe(),
                    self.text(node)
                );
                self.error(node, message);
                return None;
            }
        };
        let now = self.now;
        // Looked up by `&str`: a String is made only for a text not seen before.
        let cached = match self.schedules.get_mut(text.as_str()) {
            Some(cached) => cached,
            None => self
                .schedules
                .entry(text.clone())
                .or_insert(ParsedSchedule {
                    parsed: Schedule::parse(text),
                    fires: Vec::new(),
                }),
        };
        let schedule = match &cached.parsed {
            Ok(schedule) => schedule.clone(),
            Err(err) => {
                let message = format!("`schedule`: {err}");
                self.error(node, message);
                return None;
            }
        };
        let fires = match cached.fires.iter().find(|(zone, _)| *zone == timezone) {
            Some(&(_, fires)) => fires,
            None => {
                let fires = !matches!(schedule, Schedule::Cron(_))
                    || schedule.next_after(timezone, now).is_some();
                cached.fires.push((timezone, fires));
                fires
            }
        };
        if !fires {
            let message = format!(
                "`schedule` \"{}\" never fires: no date matches it (such as February 30); \
                 fix the day-of-month, month or day-of-week field",
                text.escape_debug()
            );
            self.error(node, message);
            return None;
        }
        for warning in schedule.warnings() {
            let location = self.location(node);
            self.out.warnings.push(ConfigWarning {
                location,
                message: format!("`schedule`: {warning}"),
            });
        }
        Some((text.clone(), schedule))
    }

    fn command(&mut self, node: &Node) -> Option<ShellCommand> {
        const HOW: &str = "a string runs under /bin/sh -c, a list such as \
                           [\"/usr/bin/backup\", \"--full\"] runs without a shell";
        match &node.kind {
            NodeKind::Str(script) if script.trim().is_empty() => {
                self.error(node, format!("`command` is empty; {HOW}"));
                None
            }
            NodeKind::Str(script) if script.contains('\0') => {
                self.error(
                    node,
                    "`command` contains a NUL character, which no command line can hold; \
                     remove it"
                        .to_string(),
                );
                None
            }
            NodeKind::Str(script) => Some(ShellCommand::Script(script.clone())),
            NodeKind::Seq(items) if items.is_empty() => {
                self.error(node, format!("`command` is an empty list; {HOW}"));
                None
            }
            NodeKind::Seq(items) => {
                let mut argv = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    match item.scalar_text(self.src) {
                        Some(arg) if index == 0 && arg.is_empty() => self.error(
                            item,
                            "`command[0]`, the program to run, is empty; write its path, \
                             e.g. \"/usr/bin/backup\""
                                .to_string(),
                        ),
                        Some(arg) if arg.contains('\0') => self.error(
                            item,
                            format!(
                                "`command[{index}]` contains a NUL character, which no \
                                 argument can hold; remove it"
                            ),
                        ),
                        Some(arg) => argv.push(arg.into_owned()),
                        None => {
                            let message = format!(
                                "`command[{index}]` must be a string, not {}; {HOW}",
                                item.describe()
                            );
                            self.error(item, message);
                        }
                    }
                }
                (argv.len() == items.len()).then_some(ShellCommand::Argv(argv))
            }
            _ => {
                let message = format!(
                    "`command` must be a string or a list, not {}; {HOW}",
                    node.describe()
                );
                self.error(node, message);
                None
            }
        }
    }

    fn timezone(&mut self, path: &str, node: &Node) -> Option<Zone> {
        let NodeKind::Str(name) = &node.kind else {
            let message = format!(
                "`{path}` must be a time zone name such as \"Europe/Berlin\" or \"UTC\", \
                 not {}",
                node.describe()
            );
            self.error(node, message);
            return None;
        };
        // IANA names only: the other forms of a zone are for the system's zone.
        if let Ok(tz) = name.parse::<Tz>() {
            return Some(Zone::Iana(tz));
        }
        let hint = match suggest_zone(name) {
            Some(zone) => format!("did you mean `{zone}`?"),
            None => "use an IANA name such as `Europe/Berlin` or `UTC` (see \
                     `timedatectl list-timezones`)"
                .to_string(),
        };
        let message = format!("`{path}`: unknown time zone `{}`; {hint}", escaped(name));
        self.error(node, message);
        None
    }

    fn workdir(&mut self, path: &str, node: &Node) -> Option<PathBuf> {
        let not = match &node.kind {
            NodeKind::Str(dir) if dir.starts_with('/') && !dir.contains('\0') => {
                return Some(PathBuf::from(dir));
            }
            NodeKind::Str(dir) if dir.contains('\0') => "a path with a NUL character".to_string(),
            NodeKind::Str(dir) if dir.is_empty() => "empty".to_string(),
            NodeKind::Str(dir) => format!("the relative path `{}`", escaped(dir)),
            _ => node.describe().to_string(),
        };
        let message = format!(
            "`{path}` must be an absolute path (starting with `/`), not {not}; write the \
             full path, e.g. `/var/lib/backup`"
        );
        self.error(node, message);
        None
    }

    fn env(&mut self, path: &str, node: &Node) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        if !matches!(node.kind, NodeKind::Map(_)) {
            let message = format!(
                "`{path}` must be a mapping of variable names to values, not {}; write \
                 e.g. `{path}: {{ RCLONE_CONFIG: /etc/rclone.conf }}`",
                node.describe()
            );
            self.error(node, message);
            return env;
        }
        let prefix = format!("{path}.");
        for field in self.entries(node, &prefix, true) {
            let name = field.key.as_ref();
            if !is_var_name(name) {
                let message = format!(
                    "`{path}`: `{}` is not a valid variable name; use letters, digits and \
                     `_`, not starting with a digit",
                    escaped(name)
                );
                self.error(field.key_node, message);
                continue;
            }
            // Numbers and booleans are taken as written: `PORT: 8080` means "8080".
            match field.value.scalar_text(self.src) {
                Some(value) if value.contains('\0') => {
                    let message = format!(
                        "`{path}.{name}` contains a NUL character, which no environment \
                         variable can hold; remove it"
                    );
                    self.error(field.value, message);
                }
                Some(value) => {
                    env.insert(name.to_string(), value.into_owned());
                }
                None if matches!(field.value.kind, NodeKind::Null) => {
                    let message = format!(
                        "`{path}.{name}` has no value; write `{name}: \"\"` for an empty \
                         value, or remove it"
                    );
                    self.error(field.value, message);
                }
                None => {
                    let message = format!(
                        "`{path}.{name}` must be a string, not {}; write `{name}: \"value\"`",
                        field.value.describe()
                    );
                    self.error(field.value, message);
                }
            }
        }
        env
    }

    /// A duration; `positive` (with its hint) rejects zero.
    fn duration(&mut self, path: &str, node: &Node, positive: Option<&str>) -> Option<Duration> {
        const HOW: &str = "write a number with a unit, e.g. 500ms, 90s, 5m, 1h30m or 2d";
        let message = match &node.kind {
            NodeKind::Str(text) => match parse_duration(text) {
                Ok(duration) if duration.is_zero() && positive.is_some() => format!(
                    "`{path}` must be longer than zero; {}",
                    positive.unwrap_or_default()
                ),
                Ok(duration) => return Some(duration),
                Err(err) => format!("`{path}`: {err}"),
            },
            NodeKind::Int(_) => {
                let number = self.text(node);
                format!(
                    "`{path}` is a bare number `{number}`; add a unit, e.g. `{number}s` or \
                     `{number}m` (units: ms, s, m, h, d)"
                )
            }
            NodeKind::Null => format!("`{path}` is empty; {HOW}"),
            _ => format!(
                "`{path}` must be a duration, not {} `{}`; {HOW}",
                node.describe(),
                escaped(&self.text(node))
            ),
        };
        self.error(node, message);
        None
    }

    fn boolean(&mut self, path: &str, node: &Node) -> Option<bool> {
        if let NodeKind::Bool(value) = node.kind {
            return Some(value);
        }
        let message = format!(
            "`{path}` must be true or false, not `{}`; use true or false",
            escaped(&self.text(node))
        );
        self.error(node, message);
        None
    }

    fn overlap(&mut self, path: &str, node: &Node) -> Option<Overlap> {
        if let NodeKind::Str(text) = &node.kind
            && let Some((_, overlap)) = OVERLAPS.iter().find(|(name, _)| name == text)
        {
            return Some(*overlap);
        }
        let text = self.text(node);
        let names = OVERLAPS.iter().map(|(name, _)| *name);
        let hint = match closest(&text, names, 2) {
            Some(name) => format!("; did you mean `{name}`?"),
            None => String::new(),
        };
        let message = format!(
            "`{path}` must be skip, allow or replace, not `{}`{hint}",
            escaped(&text)
        );
        self.error(node, message);
        None
    }

    fn retry(&mut self, path: &str, node: &Node, in_defaults: bool) -> RetrySettings {
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
    fn retry_policy(&mut self, retry: &RetrySettings) -> Option<RetryPolicy> {
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

/// A zone name close to `name`: by whole name, or by city for a bare `Berlin`.
fn suggest_zone(name: &str) -> Option<&'static str> {
    let names = || TZ_VARIANTS.iter().map(|tz| tz.name());
    if let Some(zone) = closest(name, names(), 3) {
        return Some(zone);
    }
    if name.contains('/') {
        return None;
    }
    let wanted = name.replace(' ', "_");
    names()
        .filter_map(|zone| {
            let city = zone.rsplit('/').next()?;
            (zone.contains('/') && distance(&wanted, city) <= 1).then_some(zone)
        })
        .min_by_key(|zone| distance(&wanted, zone.rsplit('/').next().unwrap_or(zone)))
}

/// `a`, `b` and `c` as "`a`, `b`, `c`".
fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|item| format!("`{item}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where a key stands, for "a key in `env` is a list".
fn in_place(prefix: &str) -> String {
    match prefix.strip_suffix('.') {
        Some(path) => format!("in `{path}` "),
        None => String::new(),
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
