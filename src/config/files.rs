//! Which files to load, and reading them.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{FileType, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{ConfigError, ConfigErrors, Source};

/// Files larger than this are refused rather than read into memory.
pub(super) const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// See [`super::discover`].
pub(super) fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigErrors> {
    let (files, errors, _) = discover_all(paths);
    into_result((files, errors))
}

/// The files found, an error for each path that could not be used, and the
/// directories that hold no schedule file (a warning: `run` keeps watching them).
pub(super) fn discover_all(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<ConfigError>, Vec<PathBuf>) {
    let mut empty = Vec::new();
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let metadata = match std::fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                errors.push(ConfigError::in_file(
                    path,
                    "no such file or directory; check the path".to_string(),
                ));
                continue;
            }
            Err(err) => {
                errors.push(ConfigError::in_file(
                    path,
                    format!("cannot access it: {err}"),
                ));
                continue;
            }
        };
        if !metadata.is_dir() {
            // Refused here, by `stat` alone: reading a FIFO would wait for a writer.
            match not_regular(metadata.file_type()) {
                None => files.push(path.clone()),
                Some(kind) => errors.push(ConfigError::in_file(
                    path,
                    format!(
                        "not a regular file ({kind}); name a schedule file or a directory \
                         of them"
                    ),
                )),
            }
            continue;
        }
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(err) => {
                errors.push(ConfigError::in_file(
                    path,
                    format!("cannot list this directory: {err}"),
                ));
                continue;
            }
        };
        let mut found = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) if is_schedule_file_name(&entry.file_name()) => {
                    let file = entry.path();
                    // A directory named `x.yaml` is not a schedule file; a dangling
                    // symlink, a FIFO or a socket is kept so that reading it reports
                    // the problem (`stat` never blocks; only opening a FIFO would).
                    if !std::fs::metadata(&file).is_ok_and(|m| m.is_dir()) {
                        found.push(file);
                    }
                }
                Ok(_) => {}
                Err(err) => errors.push(ConfigError::in_file(
                    path,
                    format!("cannot list this directory: {err}"),
                )),
            }
        }
        found.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        if found.is_empty() {
            empty.push(path.clone());
        }
        files.extend(found);
    }
    // The same file named twice (`chime check a.yaml a.yaml`, or a file and its
    // directory) is loaded once, not reported as defining all its jobs twice.
    let mut seen = HashSet::new();
    files.retain(|file| seen.insert(std::fs::canonicalize(file).unwrap_or_else(|_| file.clone())));
    (files, errors, empty)
}

fn into_result<T>((value, errors): (T, Vec<ConfigError>)) -> Result<T, ConfigErrors> {
    if errors.is_empty() {
        Ok(value)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// `*.yaml` / `*.yml`, not hidden, not an editor's leftover (`#x.yaml#`, `x.yaml~`,
/// `.x.yaml.swp` are all excluded by these two rules).
pub(super) fn is_schedule_file_name(name: &OsStr) -> bool {
    let bytes = name.as_encoded_bytes();
    let hidden = bytes.first().is_some_and(|b| *b == b'.' || *b == b'#');
    let yaml = [b".yaml".as_slice(), b".yml"]
        .iter()
        .any(|ext| bytes.len() > ext.len() && bytes.ends_with(ext));
    yaml && !hidden
}

/// See [`super::read_sources`].
pub(super) fn read_sources(files: &[PathBuf]) -> Result<Vec<Source>, ConfigErrors> {
    into_result(read_all(files))
}

/// The files read, and an error for each that could not be.
pub(super) fn read_all(files: &[PathBuf]) -> (Vec<Source>, Vec<ConfigError>) {
    let mut sources = Vec::with_capacity(files.len());
    let mut errors = Vec::new();
    for path in files {
        match read_limited(path) {
            Ok(bytes) => sources.push(Source {
                path: path.clone(),
                bytes,
            }),
            Err(message) => errors.push(ConfigError::in_file(path, message)),
        }
    }
    (sources, errors)
}

fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    let cannot_read = |err: std::io::Error| format!("cannot read it: {err}");
    // Checked before opening: opening a FIFO waits for a writer, and opening a device
    // can do things of its own (a tape rewinds, a modem line hangs up).
    refuse_irregular(&std::fs::metadata(path).map_err(cannot_read)?)?;
    // The path may have become a FIFO since the `stat`: O_NONBLOCK makes that `open`
    // return at once instead of waiting, and the `fstat` of what was really opened
    // refuses it. On a regular file the flag changes nothing. O_NOCTTY: a terminal
    // swapped in must not become our controlling terminal.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(cannot_read)?;
    refuse_irregular(&file.metadata().map_err(cannot_read)?)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "the file is larger than {} MiB; split its jobs over several files",
            MAX_FILE_BYTES / (1024 * 1024)
        ));
    }
    Ok(bytes)
}

/// The error for anything but a regular file found where a schedule file should be.
fn refuse_irregular(metadata: &Metadata) -> Result<(), String> {
    match not_regular(metadata.file_type()) {
        None => Ok(()),
        Some(kind) => Err(format!(
            "not a regular file ({kind}); schedule files must be regular files \
             — remove it or move it out of the schedule directory"
        )),
    }
}

/// What a file that is not a regular one is, for messages; `None` for a regular file.
fn not_regular(file_type: FileType) -> Option<&'static str> {
    if file_type.is_file() {
        None
    } else if file_type.is_fifo() {
        Some("a FIFO")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else if file_type.is_dir() {
        Some("a directory")
    } else {
        Some("a special file")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_file_names() {
        for good in ["a.yaml", "b.yml", "10-backup.yaml", "x.y.yaml"] {
            assert!(is_schedule_file_name(OsStr::new(good)), "{good}");
        }
        for bad in [
            ".hidden.yaml",
            "a.yaml~",
            ".a.yaml.swp",
            "a.yaml.swp",
            "#a.yaml#",
            "a.json",
            ".yaml",
            "yaml",
            "a.yaml.bak",
            "a.YAMLx",
        ] {
            assert!(!is_schedule_file_name(OsStr::new(bad)), "{bad}");
        }
    }
}
