//! Where a reload gets its schedules from: the [`ConfigSource`] seam, and
//! [`FileSource`], the files and directories `chime run` was given.

use std::path::PathBuf;

use crate::config::{self, Config, ConfigErrors, Fingerprint, LoadOptions};

/// Where a reload gets its schedules from.
pub trait ConfigSource: Send + 'static {
    /// Reads the schedules again. `force` = false may answer [`Reloaded::Unchanged`]
    /// when the files are byte-for-byte what was loaded last time.
    fn reload(&mut self, force: bool) -> Reloaded;
}

#[derive(Debug)]
pub enum Reloaded {
    Unchanged,
    Loaded(Config),
    Rejected(ConfigErrors),
}

/// Schedules read from files and directories, remembering what was read last.
#[derive(Debug)]
pub struct FileSource {
    paths: Vec<PathBuf>,
    options: LoadOptions,
    /// What was read last, loaded or rejected: a file event or re-check that finds the
    /// same bytes again has nothing new to apply or to report.
    last: Fingerprint,
}

impl FileSource {
    /// Loads the schedules for the first time; every error of every file is reported.
    pub fn load(
        paths: Vec<PathBuf>,
        options: LoadOptions,
    ) -> Result<(FileSource, Config), ConfigErrors> {
        let snapshot = config::read_snapshot(&paths, options.privileges);
        let config = snapshot.load(&options)?;
        Ok((
            FileSource {
                paths,
                options,
                last: snapshot.fingerprint(),
            },
            config,
        ))
    }

    /// The directories to watch: each directory given, and the directory of each file
    /// given (editors save by rename, and Kubernetes swaps a `..data` symlink, so the
    /// files themselves are the wrong thing to watch).
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .paths
            .iter()
            .map(|path| {
                if path.is_dir() {
                    path.clone()
                } else {
                    match path.parent() {
                        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                        _ => PathBuf::from("."),
                    }
                }
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

impl ConfigSource for FileSource {
    fn reload(&mut self, force: bool) -> Reloaded {
        let snapshot = config::read_snapshot(&self.paths, self.options.privileges);
        let fingerprint = snapshot.fingerprint();
        if !force && fingerprint == self.last {
            return Reloaded::Unchanged;
        }
        let outcome = match snapshot.load(&self.options) {
            Ok(config) => {
                log_file_warnings(&config);
                Reloaded::Loaded(config)
            }
            Err(errors) => Reloaded::Rejected(errors),
        };
        self.last = fingerprint;
        outcome
    }
}

/// Warnings about whole files (who may change them: see `config::trust`) go to the
/// service's log at start and at each reload; the rest of `check`'s warnings are
/// advice about the text, which `check` shows.
pub fn log_file_warnings(config: &Config) {
    for warning in config.warnings.iter().filter(|w| w.location.line == 0) {
        tracing::warn!(warning = %warning, "schedule warning");
    }
}
