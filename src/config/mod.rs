//! Schedule files → validated [`Job`]s, with every error located.
//!
//! # Two phases, every error collected
//! `chime check` must report *all* errors of *all* files at once, each with
//! `file:line:column`, but serde's derived `Deserialize` stops at the first error and
//! forgets where values stood. So loading is split:
//!
//! 1. [`tree`]: each file becomes a small span-carrying YAML tree of our own
//!    ([`tree::Node`]), built from granit-parser's events, with serde-saphyr as the
//!    reference for anything unusual and for its syntax-error messages. Only YAML-level
//!    problems fail here — syntax, invalid UTF-8, several documents, and the resource
//!    budgets that stop alias bombs and absurd nesting within milliseconds. Such a
//!    problem ends that file, not the load.
//! 2. [`jobs`]: a hand-written walk over the tree builds [`Job`]s. Every rule (unknown
//!    keys, durations, zones, URLs, `${VAR}` …) records its error with the location of
//!    the offending key or value and carries on, so a bad job hides neither the next
//!    job's errors nor the next file's.
//!
//! Both phases run for every file before anything is returned; the result is all jobs or
//! all errors, which is what reload's all-or-nothing rule needs. Files are checked in
//! parallel, one per thread up to the number of CPUs; job names are compared across files
//! afterwards, in file order, so jobs and errors come out exactly as if the files had been
//! checked one after another.
//!
//! # Layout
//! - [`files`]: [`discover`], [`read_sources`]. The system's zone is [`crate::zone`]'s.
//! - [`tree`]: phase 1. `tree::walk` builds the tree from parser events, `tree::plain`
//!   resolves unquoted scalars, `tree::saphyr` is the serde-saphyr reading it defers to.
//! - [`jobs`]: phase 2, one file's shape and each job. `jobs::loader` puts the files
//!   together; `jobs::keys` (unknown keys, "did you mean", booleans), `jobs::schedule`,
//!   `jobs::settings` (what `defaults` and jobs share), `jobs::retry`, `jobs::command`
//!   and `jobs::http` each check their keys.
//! - [`interpolate`]: `${VAR}`, `${VAR:-default}`, `$${`, `${file:…}`, `${credential:…}`.
//!   [`suggest`]: "did you mean".
//! - [`trust`]: who may change the files (as root: only root), checked at every read.

mod files;
mod interpolate;
mod jobs;
mod suggest;
mod tree;
mod trust;

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

pub use jobs::{json_schema, schema_keys};

use crate::job::{Job, SourceLocation};
use crate::zone::{SystemZone, Zone};

/// What loading needs from outside the files.
#[derive(Clone)]
pub struct LoadOptions {
    /// The zone of jobs that set none, in the job or the file's `defaults`.
    pub default_timezone: Zone,
    /// Variables for `${VAR}` in `http.url`, header values and `body`.
    pub env: HashMap<String, String>,
    /// `--max-jobs`: a set of files that defines more jobs is refused with one error
    /// naming the flag, found before the jobs are built. `None`: no limit.
    pub max_jobs: Option<usize>,
    /// How far files are trusted and whether `user:` / `group:` may be used: see
    /// [`Privileges`].
    pub privileges: Privileges,
}

/// What running as root changes when loading (README, "Running as root").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privileges {
    /// The uid the service runs as: 0 makes untrusted schedule files errors and allows
    /// `user:` / `group:`.
    pub euid: u32,
    /// `--insecure-allow-writable-schedules`: untrusted files are warnings even as root.
    pub allow_writable: bool,
    /// `chime check`: `user:` as non-root is a warning, as check cannot know how the
    /// service will run; `run` and `exec` make it an error.
    pub check_only: bool,
}

impl Privileges {
    /// This process's effective uid, nothing allowed beyond the rules.
    pub fn of_process() -> Privileges {
        Privileges {
            euid: crate::account::effective_uid(),
            allow_writable: false,
            check_only: false,
        }
    }
}

impl LoadOptions {
    /// The service's own environment, and `default_timezone` (a [`Zone`] or a
    /// `chrono_tz::Tz`) or else the system's zone. When the system's zone falls back to
    /// UTC, a warning saying why goes to stderr: this runs once, at start, before the
    /// event log is up.
    pub fn from_process(default_timezone: Option<impl Into<Zone>>) -> LoadOptions {
        // `std::env::vars` panics on a non-UTF-8 variable; such a variable cannot be
        // written as `${NAME}` usefully anyway, so it is left out.
        let env = std::env::vars_os()
            .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
            .collect();
        LoadOptions {
            default_timezone: default_zone(default_timezone.map(Into::into)).warned(),
            env,
            max_jobs: None,
            privileges: Privileges::of_process(),
        }
    }

    /// With `--insecure-allow-writable-schedules` as given.
    pub fn allow_writable(mut self, allow: bool) -> LoadOptions {
        self.privileges.allow_writable = allow;
        self
    }

    /// With `--max-jobs limit`; 0 means no limit.
    pub fn with_max_jobs(self, limit: usize) -> LoadOptions {
        LoadOptions {
            max_jobs: (limit > 0).then_some(limit),
            ..self
        }
    }
}

impl fmt::Debug for LoadOptions {
    // The environment holds secrets: show how many variables, never their values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadOptions")
            .field("default_timezone", &self.default_timezone)
            .field("env", &format_args!("{} variables", self.env.len()))
            .field("max_jobs", &self.max_jobs)
            .field("privileges", &self.privileges)
            .finish()
    }
}

/// The system's time zone as the C library sees it: see
/// [`crate::zone::resolve_system_zone`]. A fallback to UTC says why in its `warning`.
pub fn system_timezone() -> SystemZone {
    SystemZone::from_process()
}

/// The default zone of jobs: `--default-timezone` when given, else the system's.
pub(crate) fn default_zone(flag: Option<Zone>) -> SystemZone {
    match flag {
        Some(zone) => SystemZone {
            zone,
            source: "--default-timezone".to_string(),
            warning: None,
        },
        None => system_timezone(),
    }
}

/// The schedule files named by `paths`: a file as given; a directory means its `*.yaml`
/// and `*.yml` files (not recursive, sorted by name; dotfiles and editor leftovers such
/// as `x.yaml~`, `.x.yaml.swp`, `#x.yaml#` ignored). A path that does not exist is an
/// error naming it; all such errors are returned together. A file named twice is
/// listed once.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigErrors> {
    files::discover(paths)
}

/// One schedule file's path (as given, for messages) and contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// Reads every file; each one that cannot be read (or is over 64 MiB, or is not a
/// regular file: a FIFO would block the read) is an error naming it.
pub fn read_sources(files: &[PathBuf]) -> Result<Vec<Source>, ConfigErrors> {
    files::read_sources(files)
}

/// Validates every source into jobs, or returns every error of every source.
pub fn load_sources(sources: &[Source], opts: &LoadOptions) -> Result<Config, ConfigErrors> {
    let mut loader = jobs::Loader::new(opts, Vec::new());
    loader.add_sources(sources);
    loader.finish(sources.iter().map(|source| source.path.clone()).collect())
}

/// [`discover`], [`read_sources`] and [`load_sources`] in one. A missing path or an
/// unreadable file does not stop the others from being checked: the errors of all of
/// them come back together.
pub fn load(paths: &[PathBuf], opts: &LoadOptions) -> Result<Config, ConfigErrors> {
    read_snapshot(paths, opts.privileges).load(opts)
}

/// The files behind a set of paths as read at one moment, with every problem met while
/// finding and reading them. A reload compares snapshots to skip unchanged files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub sources: Vec<Source>,
    errors: Vec<ConfigError>,
    /// Files and directories others could change, when that is not an error
    /// ([`trust`]).
    /// (Also directories given that hold no schedule file: a warning each.)
    warnings: Vec<ConfigWarning>,
}

/// Finds and reads the files behind `paths`, collecting every error on the way. Each
/// path given and each file found is checked for who may change it ([`trust`]): as
/// root an error unless `--insecure-allow-writable-schedules`, otherwise a warning.
pub(crate) fn read_snapshot(paths: &[PathBuf], privileges: Privileges) -> Snapshot {
    let (files, mut errors, empty_dirs) = files::discover_all(paths);
    let mut warnings: Vec<ConfigWarning> = empty_dirs
        .into_iter()
        .map(|dir| ConfigWarning {
            location: SourceLocation {
                file: dir,
                line: 0,
                column: 0,
            },
            message: NO_SCHEDULE_FILES.to_string(),
        })
        .collect();
    let enforce = privileges.euid == 0 && !privileges.allow_writable;
    for path in paths.iter().chain(&files) {
        for untrusted in trust::check(path, privileges) {
            if enforce {
                let message = format!(
                    "{} (or, where the modes cannot be fixed, start chime with \
                     --insecure-allow-writable-schedules)",
                    untrusted.message
                );
                errors.push(ConfigError::in_file(&untrusted.path, message));
            } else {
                warnings.push(ConfigWarning {
                    location: SourceLocation {
                        file: untrusted.path,
                        line: 0,
                        column: 0,
                    },
                    message: untrusted.message,
                });
            }
        }
    }
    let (sources, read_errors) = files::read_all(&files);
    errors.extend(read_errors);
    Snapshot {
        sources,
        errors,
        warnings,
    }
}

/// What a [`Snapshot`] was, in a few bytes a file: enough to tell whether the files
/// changed since, without keeping their contents (a rejected 100 MB set would otherwise
/// stay in memory until the next change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    /// Each file's, in order.
    files: Vec<FileFingerprint>,
    /// A hash of the errors met while finding and reading the files.
    errors: u64,
}

/// One file of a [`Fingerprint`]: its path, and the length and hash of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileFingerprint {
    path: PathBuf,
    len: usize,
    hash: u64,
}

fn hash_of(value: &impl Hash) -> u64 {
    // SipHash with fixed keys: the same bytes hash the same within the process, which
    // is all a comparison with the last read needs.
    let mut hasher = std::hash::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

impl Snapshot {
    /// The snapshot's fingerprint, to compare with a later read.
    pub fn fingerprint(&self) -> Fingerprint {
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(ToString::to_string)
            .chain(self.warnings.iter().map(ToString::to_string))
            .collect();
        Fingerprint {
            files: self
                .sources
                .iter()
                .map(|source| FileFingerprint {
                    path: source.path.clone(),
                    len: source.bytes.len(),
                    hash: hash_of(&source.bytes),
                })
                .collect(),
            errors: hash_of(&errors),
        }
    }

    /// Validates the snapshot; the errors include those met while reading it.
    pub fn load(&self, opts: &LoadOptions) -> Result<Config, ConfigErrors> {
        let mut loader = jobs::Loader::new(opts, self.errors.clone());
        loader.add_sources(&self.sources);
        let mut config = loader.finish(
            self.sources
                .iter()
                .map(|source| source.path.clone())
                .collect(),
        )?;
        config.warnings.splice(0..0, self.warnings.iter().cloned());
        Ok(config)
    }
}

/// The warning for a directory given that holds no schedule file.
pub const NO_SCHEDULE_FILES: &str = "this directory holds no schedule files (looked for \
     `*.yaml` and `*.yml`, not dotfiles or editor leftovers such as `*~`); nothing is \
     scheduled from it until one is added (`chime run` keeps watching it)";

/// A valid set of schedule files.
#[derive(Debug, Clone)]
pub struct Config {
    /// In file order, then in order within each file.
    pub jobs: Vec<Job>,
    /// The zone of jobs that name none: `service.started` reports it.
    pub default_timezone: Zone,
    /// The files loaded, in order.
    pub files: Vec<PathBuf>,
    /// Things that are legal but rarely meant; `check` prints them.
    pub warnings: Vec<ConfigWarning>,
}

impl Config {
    /// The warnings about whole paths (a directory holding no schedule file), which
    /// `run` logs as `config.warning` at start and at reload; `check` prints them all.
    pub fn path_warnings(&self) -> Vec<&ConfigWarning> {
        path_warnings(&self.warnings)
    }
}

/// See [`Config::path_warnings`].
pub fn path_warnings(warnings: &[ConfigWarning]) -> Vec<&ConfigWarning> {
    warnings
        .iter()
        .filter(|warning| warning.location.line == 0)
        .collect()
}

/// One problem, and where it is.
///
/// `location` is `None` only for errors that concern no file. An error about a whole
/// file (it is empty, unreadable, missing) has a location with line and column 0, and
/// displays as `file: message`; any other displays as `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub location: Option<SourceLocation>,
    /// What is wrong and how to fix it. Never contains an interpolated `${VAR}` value.
    pub message: String,
}

impl ConfigError {
    fn at(location: SourceLocation, message: String) -> ConfigError {
        ConfigError {
            location: Some(location),
            message,
        }
    }

    /// An error about a whole file.
    fn in_file(file: &Path, message: String) -> ConfigError {
        ConfigError::at(
            SourceLocation {
                file: file.to_path_buf(),
                line: 0,
                column: 0,
            },
            message,
        )
    }

    /// The file the error is about, if any.
    pub fn file(&self) -> Option<&Path> {
        self.location
            .as_ref()
            .map(|location| location.file.as_path())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(location) if location.line == 0 => {
                write!(f, "{}: {}", location.file.display(), self.message)
            }
            Some(location) => write!(f, "{location}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Something legal but rarely meant, e.g. a six-field schedule with `*` seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub location: SourceLocation,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location.line {
            // About a whole file or directory.
            0 => write!(f, "{}: {}", self.location.file.display(), self.message),
            _ => write!(f, "{}: {}", self.location, self.message),
        }
    }
}

/// Every error found, in file order, then in order within each file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    /// One error a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display_shapes() {
        let located = ConfigError::at(
            SourceLocation {
                file: "a.yaml".into(),
                line: 3,
                column: 5,
            },
            "bad".into(),
        );
        assert_eq!(located.to_string(), "a.yaml:3:5: bad");
        let whole_file = ConfigError::in_file(Path::new("b.yaml"), "empty".into());
        assert_eq!(whole_file.to_string(), "b.yaml: empty");
        assert_eq!(whole_file.file(), Some(Path::new("b.yaml")));
        let nowhere = ConfigError {
            location: None,
            message: "no paths".into(),
        };
        assert_eq!(nowhere.to_string(), "no paths");
        let all = ConfigErrors(vec![located, whole_file]);
        assert_eq!(all.to_string(), "a.yaml:3:5: bad\nb.yaml: empty");
    }

    #[test]
    fn load_options_debug_hides_the_environment() {
        let opts = LoadOptions {
            default_timezone: Zone::UTC,
            env: [("TOKEN".to_string(), "s3cret".to_string())].into(),
            max_jobs: None,
            privileges: Privileges::of_process(),
        };
        let shown = format!("{opts:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("TOKEN"),
            "{shown}"
        );
        assert!(shown.contains("1 variables"));
    }
}
