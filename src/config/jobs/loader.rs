//! One load over many files: each file is checked on its own (in parallel where there
//! are CPUs to spare), then the outcomes are put together in file order, with job names
//! compared across files and the `--max-jobs` budget kept.

use std::collections::{HashMap, hash_map};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};

use super::{check_file, escaped, place};
use crate::config::{Config, ConfigError, ConfigErrors, ConfigWarning, LoadOptions, Source};
use crate::job::Job;

/// Collects jobs, errors and warnings over all sources of one load.
pub(in crate::config) struct Loader<'o> {
    opts: &'o LoadOptions,
    /// The instant "never fires" is judged from.
    now: DateTime<Utc>,
    jobs: Vec<Job>,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigWarning>,
    /// The files checked so far, in order.
    files: Vec<PathBuf>,
    /// Where each job name was first defined, across all files.
    names: HashMap<String, FirstDefinition>,
}

/// Where a job name was first defined: the index of its file in [`Loader::files`], and
/// its line and column.
#[derive(Clone, Copy)]
struct FirstDefinition {
    file: usize,
    line: u64,
    column: u64,
}

/// An error found after its file was checked (a job name defined in a file before), and
/// how many of the file's errors came before the check it belongs to.
struct LateError {
    errors_before: usize,
    error: ConfigError,
}

/// Jobs declared (entries under `jobs:`) over all files, counted as their trees are
/// built, so that a set over `--max-jobs` is refused before its jobs are validated and
/// built, and the files not yet parsed are not parsed at all.
pub(super) struct JobBudget {
    limit: usize,
    declared: AtomicUsize,
}

impl JobBudget {
    /// How many more jobs fit.
    pub(super) fn remaining(&self) -> usize {
        self.limit
            .saturating_sub(self.declared.load(Ordering::Relaxed))
    }

    /// Counts `jobs` more; false once the total is over the limit.
    pub(super) fn declare(&self, jobs: usize) -> bool {
        self.declared.fetch_add(jobs, Ordering::Relaxed) + jobs <= self.limit
    }

    fn exceeded(&self) -> bool {
        self.declared.load(Ordering::Relaxed) > self.limit
    }
}

/// What one file holds, checked on its own. Job names are compared across files when
/// the outcomes are put together in file order, so files can be checked in parallel.
#[derive(Default)]
pub(super) struct FileOutcome {
    pub(super) jobs: Vec<Job>,
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<ConfigWarning>,
    pub(super) names: Vec<NameUse>,
}

/// A job name as defined in a file.
pub(super) struct NameUse {
    pub(super) name: String,
    pub(super) line: u64,
    pub(super) column: u64,
    /// How many of the file's errors came before the name was checked: a "defined twice"
    /// error goes there, among the other errors at the same place.
    pub(super) errors_before: usize,
}

impl<'o> Loader<'o> {
    /// `errors`: those found before any file was read (missing paths, unreadable files).
    pub(in crate::config) fn new(opts: &'o LoadOptions, errors: Vec<ConfigError>) -> Loader<'o> {
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
    pub(in crate::config) fn add_sources(&mut self, sources: &[Source]) {
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
        let twice = self.names_defined_before(path, names);
        if !twice.is_empty() {
            errors = where_checked(errors, twice);
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

    /// Records the file's job names; a "defined twice" error for each one already taken,
    /// in this file or one before.
    fn names_defined_before(&mut self, path: &Path, names: Vec<NameUse>) -> Vec<LateError> {
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
                    let first_defined = *first.get();
                    let message = format!(
                        "job `{}` is defined twice: here and at {}; rename one",
                        escaped(first.key()),
                        place(
                            &self.files[first_defined.file],
                            first_defined.line,
                            first_defined.column
                        )
                    );
                    twice.push(LateError {
                        errors_before,
                        error: ConfigError::at(place(path, line, column), message),
                    });
                }
                hash_map::Entry::Vacant(slot) => {
                    slot.insert(FirstDefinition { file, line, column });
                }
            }
        }
        twice
    }

    pub(in crate::config) fn finish(self, files: Vec<PathBuf>) -> Result<Config, ConfigErrors> {
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

/// The file's errors with each late one put where its check stood, as if the file had
/// been checked after the others. `late` is in the order of the checks.
fn where_checked(errors: Vec<ConfigError>, late: Vec<LateError>) -> Vec<ConfigError> {
    let mut file_errors = errors.into_iter();
    let mut errors = Vec::with_capacity(file_errors.len() + late.len());
    let mut taken = 0;
    for LateError {
        errors_before,
        error,
    } in late
    {
        errors.extend(
            file_errors
                .by_ref()
                .take(errors_before.saturating_sub(taken)),
        );
        taken = taken.max(errors_before);
        errors.push(error);
    }
    errors.extend(file_errors);
    errors
}
