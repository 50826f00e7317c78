//! Schedule files through the public `chime::config` API: every class of bad input is
//! reported at its exact `file:line:column`, all errors of all files at once, and a good
//! file becomes exactly the jobs it describes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chime::config::{
    self, Config, ConfigErrors, LoadOptions, Source, discover, load, load_sources, read_sources,
};
use chime::cron::Schedule;
use chime::job::{
    Action, CatchUp, DEFAULT_KILL_GRACE, HttpRequest, Job, Overlap, RetryPolicy, ShellCommand,
    SourceLocation,
};
use chime::zone::Zone;
use chrono_tz::Tz;
use tempfile::TempDir;

const SECRET: &str = "tok-5ecr3t";

fn opts() -> LoadOptions {
    LoadOptions {
        default_timezone: Zone::UTC,
        env: [("HC_UUID", "1234-abcd"), ("HC_TOKEN", SECRET)]
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
        max_jobs: None,
        privileges: chime::config::Privileges::of_process(),
    }
}

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}

/// Loads `text` as a file `name` in a fresh directory; returns the file's path too.
fn load_one(name: &str, text: &str) -> (TempDir, PathBuf, Result<Config, ConfigErrors>) {
    let dir = TempDir::new().expect("temp dir");
    let path = write(&dir, name, text);
    let result = load(std::slice::from_ref(&path), &opts());
    (dir, path, result)
}

fn messages(result: Result<Config, ConfigErrors>) -> Vec<String> {
    match result {
        Ok(config) => panic!("expected errors, loaded {} jobs", config.jobs.len()),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

/// `error` is at `path:at` and mentions each of `words`.
#[track_caller]
fn assert_error(error: &str, path: &Path, at: &str, words: &[&str]) {
    let prefix = format!("{}:{at}: ", path.display());
    assert!(
        error.starts_with(&prefix),
        "{error:?} does not start with {prefix:?}"
    );
    for word in words {
        assert!(error.contains(word), "{error:?} does not mention {word:?}");
    }
}

/// Exactly one error, at `at`, mentioning `words`.
#[track_caller]
fn assert_only_error(name: &str, text: &str, at: &str, words: &[&str]) {
    let (_dir, path, result) = load_one(name, text);
    let errors = messages(result);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_error(&errors[0], &path, at, words);
}

// ---- the file as a whole -------------------------------------------------------------

#[test]
fn empty_file_is_an_error_naming_the_file() {
    for text in ["", "\n\n", "# just a comment\n"] {
        let (_dir, path, result) = load_one("empty.yaml", text);
        let errors = messages(result);
        assert_eq!(
            errors,
            [format!(
                "{}: the file is empty; add a `jobs:` mapping with at least one job (or \
                 delete the file)",
                path.display()
            )]
        );
    }
}

#[test]
fn top_level_must_be_a_mapping() {
    assert_only_error(
        "list.yaml",
        "- a\n- b\n",
        "1:1",
        &["must be a mapping", "not a list"],
    );
    assert_only_error(
        "scalar.yaml",
        "hello\n",
        "1:1",
        &["must be a mapping", "not a string"],
    );
    assert_only_error(
        "nojobs.yaml",
        "defaults:\n  timeout: 1m\n",
        "1:1",
        &["no `jobs:`"],
    );
    assert_only_error(
        "jobslist.yaml",
        "jobs:\n  - backup\n",
        "2:3",
        &["`jobs` must be a mapping from job names to jobs, not a list"],
    );
    assert_only_error(
        "top.yaml",
        "jobs: {}\nschedule: \"@daily\"\n",
        "2:1",
        &["`schedule` belongs to a job", "under `jobs:`"],
    );
}

#[test]
fn invalid_utf8_is_located() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("latin1.yaml");
    std::fs::write(
        &path,
        b"jobs:\n  caf\xe9: { schedule: \"@daily\", command: x }\n",
    )
    .unwrap();
    let errors = messages(load(std::slice::from_ref(&path), &opts()));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_error(
        &errors[0],
        &path,
        "2:6",
        &["not valid UTF-8", "0xe9", "save it as UTF-8"],
    );
}

#[test]
fn yaml_syntax_errors_are_located() {
    assert_only_error(
        "syntax.yaml",
        "jobs:\n  a:\n    schedule: \"@daily\"\n    command: [x, y\n",
        "4:14",
        &["invalid YAML", "unclosed bracket"],
    );
    assert_only_error(
        "docs.yaml",
        "jobs: {}\n---\njobs: {}\n",
        "3:1",
        &["more than one YAML document"],
    );
}

#[test]
fn duplicate_keys_are_located_with_the_first() {
    assert_only_error(
        "dup.yaml",
        "jobs:\n  a:\n    schedule: \"@daily\"\n    command: x\n    schedule: \"@hourly\"\n",
        "5:5",
        &["`schedule` is given twice (first at line 3, column 5); remove one"],
    );
}

// ---- job names -----------------------------------------------------------------------

#[test]
fn job_names_must_be_safe_and_unique_across_files() {
    assert_only_error(
        "names.yaml",
        "jobs:\n  ok-1.x_y: { schedule: \"@daily\", command: x }\n  \"back up\": { schedule: \"@daily\", command: x }\n",
        "3:3",
        &[
            "job name `back up`",
            "letters, digits, `.`, `_` and `-`",
            "rename",
        ],
    );

    let dir = TempDir::new().unwrap();
    let a = write(
        &dir,
        "a.yaml",
        "jobs:\n  x:\n    schedule: \"@daily\"\n    command: x\n",
    );
    let b = write(
        &dir,
        "b.yaml",
        "jobs:\n  y: { schedule: \"@daily\", command: y }\n  x: { schedule: \"@daily\", command: x }\n",
    );
    let errors = messages(load(&[dir.path().to_path_buf()], &opts()));
    assert_eq!(
        errors,
        [format!(
            "{}:3:3: job `x` is defined twice: here and at {}:2:3; rename one",
            b.display(),
            a.display()
        )]
    );
}

// ---- keys ----------------------------------------------------------------------------

#[test]
fn unknown_keys_suggest_the_close_one_or_list_the_valid_ones() {
    assert_only_error(
        "typo.yaml",
        "jobs:\n  a:\n    shedule: \"@daily\"\n    command: x\n",
        "3:5",
        &["unknown key `shedule`; did you mean `schedule`?"],
    );
    assert_only_error(
        "far.yaml",
        "jobs:\n  a:\n    schedule: \"@daily\"\n    command: x\n    colour: red\n",
        "5:5",
        &[
            "unknown key `colour`",
            "`schedule`, `command`, `http`, `timezone`",
            "`enabled`",
        ],
    );
    assert_only_error(
        "nested.yaml",
        "jobs:\n  a:\n    schedule: \"@daily\"\n    http: { url: \"http://x\", methd: POST }\n",
        "4:30",
        &["unknown key `http.methd`; did you mean `method`?"],
    );
    assert_only_error(
        "retry.yaml",
        "jobs:\n  a:\n    schedule: \"@daily\"\n    command: x\n    retry: { atempts: 2 }\n",
        "5:14",
        &["unknown key `retry.atempts`; did you mean `attempts`?"],
    );
    assert_only_error(
        "defaults.yaml",
        "defaults:\n  Timezone: UTC\njobs: {}\n",
        "2:3",
        &["unknown key `defaults.Timezone`; did you mean `timezone`?"],
    );
}

#[test]
fn defaults_refuse_schedule_command_and_http() {
    let (_dir, path, result) = load_one(
        "defaults.yaml",
        "defaults:\n  schedule: \"@daily\"\n  command: x\n  http: { url: \"http://x\" }\njobs: {}\n",
    );
    let errors = messages(result);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    for (error, (at, key)) in
        errors
            .iter()
            .zip([("2:3", "schedule"), ("3:3", "command"), ("4:3", "http")])
    {
        assert_error(
            error,
            &path,
            at,
            &[&format!("`{key}` cannot be a default"), "set `"],
        );
    }
}

// ---- schedule, command, http ---------------------------------------------------------

#[test]
fn schedule_is_required_valid_and_must_fire() {
    assert_only_error(
        "missing.yaml",
        "jobs:\n  a:\n    command: x\n",
        "2:3",
        &["job `a` has no `schedule`", "add one"],
    );
    assert_only_error(
        "invalid.yaml",
        "jobs:\n  a:\n    schedule: \"0 24 * * *\"\n    command: x\n",
        "3:15",
        &["`schedule`:", "hour", "24", "0–23"],
    );
    assert_only_error(
        "never.yaml",
        "jobs:\n  a:\n    schedule: \"0 0 30 2 *\"\n    command: x\n",
        "3:15",
        &["never fires"],
    );
}

#[test]
fn star_seconds_is_a_warning_not_an_error() {
    let (_dir, path, result) = load_one(
        "warn.yaml",
        "jobs:\n  a:\n    schedule: \"* 30 2 * * *\"\n    command: x\n",
    );
    let config = result.expect("loads");
    assert_eq!(config.jobs.len(), 1);
    assert_eq!(config.warnings.len(), 1);
    let warning = config.warnings[0].to_string();
    assert!(
        warning.starts_with(&format!(
            "{}:3:15: `schedule`: the seconds field is `*`",
            path.display()
        )),
        "{warning}"
    );
}

#[test]
fn exactly_one_of_command_and_http() {
    assert_only_error(
        "neither.yaml",
        "jobs:\n  a:\n    schedule: \"@daily\"\n",
        "2:3",
        &["neither `command` nor `http`", "add `command: ...`"],
    );
    assert_only_error(
        "both.yaml",
        "jobs:\n  a:\n    schedule: \"@daily\"\n    command: x\n    http: { url: \"http://x\" }\n",
        "5:5",
        &["both `command` and `http`", "keep one"],
    );
}

#[test]
fn command_must_be_a_string_or_a_list_of_strings() {
    assert_only_error(
        "empty.yaml",
        "jobs:\n  a:\n    schedule: \"@daily\"\n    command: \"\"\n",
        "4:14",
        &["`command` is empty"],
    );
    assert_only_error(
        "emptylist.yaml",
        "jobs:\n  a:\n    schedule: \"@daily\"\n    command: []\n",
        "4:14",
        &["`command` is an empty list"],
    );
    assert_only_error(
        "nested.yaml",
        "jobs:\n  a:\n    schedule: \"@daily\"\n    command: [ls, [x]]\n",
        "4:19",
        &["`command[1]` must be a string, not a list"],
    );
}

#[test]
fn http_is_validated() {
    let text = "jobs:\n  a:\n    schedule: \"@daily\"\n    http:\n      url: \"ftp://example.com/x\"\n      method: FETCH\n      headers: { \"Bad Name\": x }\n      expect_status: [200, 700]\n";
    let (_dir, path, result) = load_one("http.yaml", text);
    let errors = messages(result);
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert_error(
        &errors[0],
        &path,
        "5:12",
        &["`http.url` \"ftp://example.com/x\" must start with http:// or https://"],
    );
    assert_error(
        &errors[1],
        &path,
        "6:15",
        &["`http.method` must be one of `GET`", "not `FETCH`"],
    );
    assert_error(
        &errors[2],
        &path,
        "7:18",
        &["`http.headers.Bad Name` is not a valid header name"],
    );
    assert_error(
        &errors[3],
        &path,
        "8:28",
        &["`700` is not an HTTP status", "100 to 599"],
    );
}

#[test]
fn unset_variables_are_errors_and_values_never_appear() {
    let text = "jobs:\n  a:\n    schedule: \"@daily\"\n    http:\n      url: \"https://hc/${HC_UUID}/${HC_MISSING}\"\n      headers: { Authorization: \"Bearer ${HC_TOKEN}${NOPE}\" }\n      body: \"${HC_TOKEN}\"\n  b:\n    schedule: \"@daily\"\n    http: { url: \"${HC_TOKEN}\" }\n";
    let (_dir, path, result) = load_one("vars.yaml", text);
    let errors = messages(result);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_error(
        &errors[0],
        &path,
        "5:12",
        &["`http.url` uses `${HC_MISSING}`", "HC_MISSING is not set"],
    );
    assert_error(
        &errors[1],
        &path,
        "6:33",
        &["`http.headers.Authorization` uses `${NOPE}`"],
    );
    assert_error(
        &errors[2],
        &path,
        "10:18",
        &["\"${HC_TOKEN}\" is not a valid URL", "after interpolation"],
    );
    let all = errors.join("\n");
    assert!(!all.contains(SECRET) && !all.contains("1234-abcd"), "{all}");
}

// ---- values --------------------------------------------------------------------------

#[test]
fn booleans_are_true_or_false_only() {
    assert_only_error(
        "bool.yaml",
        "jobs:\n  a:\n    schedule: \"@daily\"\n    command: x\n    enabled: yes\n",
        "5:14",
        &["`enabled` must be true or false, not `yes`; use true or false"],
    );
}

#[test]
fn durations_need_a_unit_and_some_must_be_positive() {
    assert_only_error(
        "bare.yaml",
        "jobs:\n  a:\n    schedule: \"@daily\"\n    command: x\n    timeout: 30\n",
        "5:14",
        &["`timeout` is a bare number `30`; add a unit", "`30s`"],
    );
    assert_only_error(
        "zero.yaml",
        "defaults:\n  kill_grace: 0s\njobs: {}\n",
        "2:15",
        &["`defaults.kill_grace` must be longer than zero"],
    );
    assert_only_error(
        "unit.yaml",
        "jobs:\n  a:\n    schedule: \"@daily\"\n    command: x\n    starting_deadline: 5 minutes\n",
        "5:24",
        &["`starting_deadline`:", "5 minutes"],
    );
}

#[test]
fn retry_is_validated() {
    let text = "jobs:\n  a:\n    schedule: \"@daily\"\n    command: x\n    retry: { attempts: 0 }\n  b:\n    schedule: \"@daily\"\n    command: x\n    retry: { attempts: 3, delay: 10m, max_delay: 1m }\n";
    let (_dir, path, result) = load_one("retry.yaml", text);
    let errors = messages(result);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_error(
        &errors[0],
        &path,
        "5:24",
        &[
            "`retry.attempts` must be a whole number from 1 to 100",
            "not `0`",
        ],
    );
    assert_error(
        &errors[1],
        &path,
        "9:50",
        &["`retry.max_delay` (1m) is shorter than `retry.delay` (10m)"],
    );
}

#[test]
fn timezones_are_iana_names_with_a_hint() {
    assert_only_error(
        "tz.yaml",
        "jobs:\n  a:\n    schedule: \"@daily\"\n    command: x\n    timezone: Europe/Berln\n",
        "5:15",
        &["unknown time zone `Europe/Berln`; did you mean `Europe/Berlin`?"],
    );
}

#[test]
fn workdir_overlap_and_env() {
    let text = "jobs:\n  a:\n    schedule: \"@daily\"\n    command: x\n    workdir: var/backups\n    overlap: queue\n    env: { GOOD: 1, BAD-NAME: x, EMPTY: }\n";
    let (_dir, path, result) = load_one("misc.yaml", text);
    let errors = messages(result);
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert_error(
        &errors[0],
        &path,
        "5:14",
        &["`workdir` must be an absolute path", "`var/backups`"],
    );
    assert_error(
        &errors[1],
        &path,
        "6:14",
        &["`overlap` must be skip, allow or replace, not `queue`"],
    );
    assert_error(
        &errors[2],
        &path,
        "7:21",
        &["`BAD-NAME` is not a valid variable name"],
    );
    assert_error(&errors[3], &path, "7:39", &["`env.EMPTY` has no value"]);
}

// ---- everything at once --------------------------------------------------------------

#[test]
fn all_errors_of_all_files_are_reported_at_once() {
    let dir = TempDir::new().unwrap();
    let first = write(
        &dir,
        "10-first.yaml",
        "jobs:\n  a:\n    schedule: \"61 * * * *\"\n    command: x\n  b:\n    schedule: \"@daily\"\n    command: x\n    timeout: 5\n  c:\n    schedule: \"@daily\"\n    enabled: maybe\n",
    );
    let second = write(
        &dir,
        "20-second.yaml",
        "defaults:\n  timezone: Mars/Base\njobs:\n  d:\n    schedule: \"@daily\"\n    comand: x\n  e:\n    schedule: \"@daily\"\n    http: { url: \"${UNSET}\" }\n",
    );
    let broken = write(&dir, "30-broken.yaml", "jobs: [\n");
    let errors = messages(load(&[dir.path().to_path_buf()], &opts()));
    assert_eq!(errors.len(), 8, "{errors:#?}");
    assert_error(&errors[0], &first, "3:15", &["minute field"]);
    assert_error(&errors[1], &first, "8:14", &["bare number"]);
    assert_error(&errors[2], &first, "9:3", &["neither `command` nor `http`"]);
    assert_error(
        &errors[3],
        &first,
        "11:14",
        &["`enabled` must be true or false"],
    );
    assert_error(
        &errors[4],
        &second,
        "2:13",
        &["unknown time zone `Mars/Base`"],
    );
    assert_error(&errors[5], &second, "6:5", &["did you mean `command`?"]);
    assert_error(&errors[6], &second, "9:18", &["`${UNSET}`"]);
    assert_error(&errors[7], &broken, "1:7", &["invalid YAML"]);
    // `ConfigErrors` displays one error a line.
    let shown = ConfigErrors(Vec::new()).to_string();
    assert!(shown.is_empty());
}

// ---- discovery -----------------------------------------------------------------------

#[test]
fn directories_mean_their_yaml_files_sorted_without_leftovers() {
    let dir = TempDir::new().unwrap();
    for name in [
        "b.yml",
        "a.yaml",
        "c.yaml",
        ".hidden.yaml",
        "c.yaml~",
        ".c.yaml.swp",
        "#c.yaml#",
        "notes.txt",
        "d.json",
    ] {
        write(&dir, name, "jobs: {}\n");
    }
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    write(&dir, "sub/inner.yaml", "jobs: {}\n");
    std::fs::create_dir(dir.path().join("dir.yaml")).unwrap();

    let files = discover(&[dir.path().to_path_buf()]).expect("discover");
    let names: Vec<&str> = files
        .iter()
        .map(|file| file.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(names, ["a.yaml", "b.yml", "c.yaml"]);

    // A file given by name is taken whatever its name; the same file twice counts once.
    let notes = dir.path().join("notes.txt");
    let a = dir.path().join("a.yaml");
    let files = discover(&[notes.clone(), a.clone(), dir.path().to_path_buf()]).unwrap();
    assert_eq!(
        files,
        [
            notes,
            a.clone(),
            dir.path().join("b.yml"),
            dir.path().join("c.yaml")
        ]
    );
}

#[test]
fn jobs_come_in_file_order_then_file_position() {
    let dir = TempDir::new().unwrap();
    write(
        &dir,
        "b.yaml",
        "jobs:\n  b2: { schedule: \"@daily\", command: x }\n  b1: { schedule: \"@daily\", command: x }\n",
    );
    write(
        &dir,
        "a.yaml",
        "jobs:\n  a9: { schedule: \"@daily\", command: x }\n",
    );
    let config = load(&[dir.path().to_path_buf()], &opts()).expect("loads");
    let names: Vec<&str> = config.jobs.iter().map(|job| job.name.as_str()).collect();
    assert_eq!(names, ["a9", "b2", "b1"]);
    assert_eq!(
        config.files,
        [dir.path().join("a.yaml"), dir.path().join("b.yaml")]
    );
    assert!(config.warnings.is_empty());
}

#[test]
fn missing_paths_are_errors_naming_each() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("nope.yaml");
    let gone = dir.path().join("gone.d");
    let errors = discover(&[missing.clone(), dir.path().to_path_buf(), gone.clone()]).unwrap_err();
    let shown: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            format!(
                "{}: no such file or directory; check the path",
                missing.display()
            ),
            format!(
                "{}: no such file or directory; check the path",
                gone.display()
            ),
        ]
    );
    assert_eq!(errors.0[0].file(), Some(missing.as_path()));

    // `load` still checks the files that exist, and reports everything together.
    let bad = write(&dir, "bad.yaml", "jobs:\n  a:\n    command: x\n");
    let errors = messages(load(&[missing.clone(), bad.clone()], &opts()));
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!(
        errors[0],
        format!(
            "{}: no such file or directory; check the path",
            missing.display()
        )
    );
    assert_error(&errors[1], &bad, "2:3", &["job `a` has no `schedule`"]);
}

#[test]
fn unreadable_file_is_an_error_naming_it() {
    let dir = TempDir::new().unwrap();
    // A dangling symlink: listed (so the problem is reported), but it cannot be opened.
    let dangling = dir.path().join("gone.yaml");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    let errors = read_sources(std::slice::from_ref(&dangling)).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    let shown = errors.0[0].to_string();
    assert!(
        shown.starts_with(&format!("{}: cannot read it: ", dangling.display())),
        "{shown}"
    );

    // A directory handed to `read_sources` is not read at all.
    let not_a_file = dir.path().to_path_buf();
    let errors = read_sources(std::slice::from_ref(&not_a_file)).unwrap_err();
    assert_eq!(
        errors.0[0].to_string(),
        format!(
            "{}: not a regular file (a directory); schedule files must be regular files \
             — remove it or move it out of the schedule directory",
            not_a_file.display()
        )
    );
}

// ---- files that are not regular files ------------------------------------------------

/// Creates a FIFO at `path`.
fn mkfifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path and a plain mode.
    let result = unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) };
    assert_eq!(result, 0, "mkfifo {}", path.display());
}

/// `load(paths)` on another thread, failing the test if it has not returned in 10 s: a
/// blocking `open` of a FIFO would otherwise hang the test run instead of failing it.
fn load_within_limit(paths: Vec<PathBuf>) -> Result<Config, ConfigErrors> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(load(&paths, &opts()));
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("loading must not block on a FIFO or a socket")
}

const GOOD_JOB: &str = "jobs:\n  a: { schedule: \"@daily\", command: x }\n";

#[test]
fn fifo_in_a_directory_is_an_error_naming_it() {
    let dir = TempDir::new().unwrap();
    write(&dir, "a.yaml", GOOD_JOB);
    let fifo = dir.path().join("f.yaml");
    mkfifo(&fifo);
    let errors = messages(load_within_limit(vec![dir.path().to_path_buf()]));
    assert_eq!(
        errors,
        [format!(
            "{}: not a regular file (a FIFO); schedule files must be regular files \
             — remove it or move it out of the schedule directory",
            fifo.display()
        )]
    );
}

#[test]
fn fifo_given_as_a_path_is_an_error_naming_it() {
    let dir = TempDir::new().unwrap();
    let good = write(&dir, "a.yaml", GOOD_JOB);
    let fifo = dir.path().join("f.yaml");
    mkfifo(&fifo);
    let errors = messages(load_within_limit(vec![fifo.clone(), good]));
    assert_eq!(
        errors,
        [format!(
            "{}: not a regular file (a FIFO); name a schedule file or a directory of them",
            fifo.display()
        )]
    );
    // `read_sources` on its own (a path that became a FIFO after discovery) refuses it
    // too, without waiting for a writer.
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(read_sources(&[path]));
    });
    let errors = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("read_sources must not block on a FIFO")
        .unwrap_err();
    assert!(
        errors.0[0]
            .to_string()
            .contains("not a regular file (a FIFO)"),
        "{errors}"
    );
}

#[test]
fn symlink_to_a_fifo_is_an_error_naming_the_link() {
    let dir = TempDir::new().unwrap();
    let fifo = dir.path().join("pipe");
    mkfifo(&fifo);
    let link = dir.path().join("link.yaml");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    let errors = messages(load_within_limit(vec![dir.path().to_path_buf()]));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with(&format!("{}: not a regular file (a FIFO)", link.display())),
        "{}",
        errors[0]
    );
}

#[test]
fn socket_in_a_directory_is_an_error_naming_it() {
    let dir = TempDir::new().unwrap();
    write(&dir, "a.yaml", GOOD_JOB);
    let socket = dir.path().join("s.yaml");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let errors = messages(load_within_limit(vec![dir.path().to_path_buf()]));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with(&format!(
            "{}: not a regular file (a socket); schedule files must be regular files",
            socket.display()
        )),
        "{}",
        errors[0]
    );
}

#[test]
fn device_given_as_a_path_is_an_error_naming_it() {
    let errors = messages(load_within_limit(vec![PathBuf::from("/dev/null")]));
    assert_eq!(
        errors,
        [
            "/dev/null: not a regular file (a character device); name a schedule file or a \
          directory of them"
        ]
    );
}

// ---- a good file ---------------------------------------------------------------------

#[test]
fn every_key_round_trips_into_the_job() {
    let text = r#"# schedules/backup.yaml
defaults:
  timezone: Europe/Berlin
  timeout: 30m
  env: { SHARED: "1" }
jobs:
  nightly-backup:
    schedule: "30 2 * * *"
    command: /usr/local/bin/backup --full
    workdir: /var/backups
    env: { RCLONE_CONFIG: /etc/rclone.conf, PORT: 8080 }
    timeout: 2h
    kill_grace: 30s
    retry: { attempts: 3, delay: 1m, max_delay: 10m }
    overlap: replace
    starting_deadline: 5m
    enabled: false
  rotate:
    schedule: "@daily"
    command: ["/usr/sbin/logrotate", "/etc/logrotate.conf"]
    timezone: UTC
    overlap: allow
  ping:
    schedule: "@every 5m"
    http:
      url: "https://hc.example.net/ping/${HC_UUID}"
      method: post
      headers: { Authorization: "Bearer ${HC_TOKEN}", X-Literal: "$${NOT_A_VAR}" }
      body: '{"ok": true}'
      expect_status: [200, 204]
    timeout: 10s
"#;
    let (_dir, path, result) = load_one("backup.yaml", text);
    let config = result.unwrap_or_else(|errors| panic!("{errors}"));
    let berlin: Zone = "Europe/Berlin".parse().unwrap();
    let at = |line, column| SourceLocation {
        file: path.clone(),
        line,
        column,
    };
    let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let expected = vec![
        Job {
            name: "nightly-backup".into(),
            schedule_text: "30 2 * * *".into(),
            schedule: Schedule::parse("30 2 * * *").unwrap(),
            timezone: berlin,
            action: Action::Shell(ShellCommand::Script("/usr/local/bin/backup --full".into())),
            workdir: Some("/var/backups".into()),
            env: env(&[
                ("PORT", "8080"),
                ("RCLONE_CONFIG", "/etc/rclone.conf"),
                ("SHARED", "1"),
            ]),
            env_inherit: false,
            run_as: None,
            timeout: Some(Duration::from_secs(7200)),
            kill_grace: Duration::from_secs(30),
            retry: RetryPolicy {
                attempts: 3,
                delay: Duration::from_secs(60),
                max_delay: Duration::from_secs(600),
            },
            overlap: Overlap::Replace,
            starting_deadline: Some(Duration::from_secs(300)),
            catch_up: CatchUp::None,
            on_owner_loss: chime::job::OwnerLoss::Lost,
            enabled: false,
            pings: None,
            source: at(7, 3),
        },
        Job {
            name: "rotate".into(),
            schedule_text: "@daily".into(),
            schedule: Schedule::parse("@daily").unwrap(),
            timezone: Zone::UTC,
            action: Action::Shell(ShellCommand::Argv(vec![
                "/usr/sbin/logrotate".into(),
                "/etc/logrotate.conf".into(),
            ])),
            workdir: None,
            env: env(&[("SHARED", "1")]),
            env_inherit: false,
            run_as: None,
            timeout: Some(Duration::from_secs(1800)),
            kill_grace: DEFAULT_KILL_GRACE,
            retry: RetryPolicy::default(),
            overlap: Overlap::Allow,
            starting_deadline: None,
            catch_up: CatchUp::None,
            on_owner_loss: chime::job::OwnerLoss::Lost,
            enabled: true,
            pings: None,
            source: at(18, 3),
        },
        Job {
            name: "ping".into(),
            schedule_text: "@every 5m".into(),
            schedule: Schedule::Every(Duration::from_secs(300)),
            timezone: berlin,
            action: Action::Http(HttpRequest {
                method: "POST".into(),
                url: "https://hc.example.net/ping/1234-abcd".into(),
                url_template: "https://hc.example.net/ping/${HC_UUID}".into(),
                headers: vec![
                    ("Authorization".into(), format!("Bearer {SECRET}")),
                    ("X-Literal".into(), "${NOT_A_VAR}".into()),
                ],
                body: Some(r#"{"ok": true}"#.into()),
                expect_status: vec![200, 204],
            }),
            workdir: None,
            env: env(&[("SHARED", "1")]),
            env_inherit: false,
            run_as: None,
            timeout: Some(Duration::from_secs(10)),
            kill_grace: DEFAULT_KILL_GRACE,
            retry: RetryPolicy::default(),
            overlap: Overlap::Skip,
            starting_deadline: None,
            catch_up: CatchUp::None,
            on_owner_loss: chime::job::OwnerLoss::Lost,
            enabled: true,
            pings: None,
            source: at(23, 3),
        },
    ];
    assert_eq!(config.jobs, expected);
    assert_eq!(config.files, std::slice::from_ref(&path));
    assert!(config.warnings.is_empty());
}

/// The repository's `schedules/` are documentation; they must stay valid. Without the
/// demo variables set, their `${VAR:-default}` defaults apply.
#[test]
fn the_example_schedules_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules");
    let opts = LoadOptions {
        default_timezone: Zone::UTC,
        env: Default::default(),
        max_jobs: None,
        privileges: chime::config::Privileges::of_process(),
    };
    let config = load(&[dir], &opts).unwrap_or_else(|errors| panic!("{errors}"));
    assert!(!config.jobs.is_empty());
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let ping = config
        .jobs
        .iter()
        .find(|job| job.name == "healthcheck-ping");
    if let Some(Action::Http(request)) = ping.map(|job| &job.action) {
        assert_eq!(request.url, "http://127.0.0.1:8080/ping");
        assert!(request.url_template.starts_with("${CHIME_DEMO_PING_URL:-"));
    }
}

#[test]
fn load_sources_works_on_bytes_in_memory() {
    let sources = [Source {
        path: "memory.yaml".into(),
        bytes: b"jobs:\n  a: { schedule: \"@hourly\", command: x }\n".to_vec(),
    }];
    let config = load_sources(&sources, &opts()).expect("loads");
    assert_eq!(config.jobs[0].source.to_string(), "memory.yaml:2:3");
    assert_eq!(config.files, [PathBuf::from("memory.yaml")]);
}

#[test]
fn options_from_the_process() {
    let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
    let opts = LoadOptions::from_process(Some(tokyo));
    assert_eq!(opts.default_timezone, tokyo);
    assert_eq!(opts.env.get("PATH"), std::env::var("PATH").ok().as_ref());
    // Whatever the machine's zone, asking for it must not fail.
    let _ = config::system_timezone();
}

// ---- hostile input -------------------------------------------------------------------

#[test]
fn alias_bomb_is_rejected() {
    let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..10 {
        let refs = vec![format!("*a{}", level - 1); 10].join(", ");
        bomb.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
    }
    bomb.push_str("jobs: {}\n");
    let (_dir, path, result) = load_one("bomb.yaml", &bomb);
    let errors = messages(result);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].starts_with(&format!("{}:", path.display())));
    assert!(
        errors[0].contains("too many alias expansions"),
        "{}",
        errors[0]
    );
}

#[test]
fn absurd_nesting_is_rejected() {
    for text in [
        "[".repeat(10_000),
        "{a: ".repeat(10_000),
        "- ".repeat(10_000) + "x\n",
    ] {
        let (_dir, path, result) = load_one("deep.yaml", &text);
        let errors = messages(result);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].starts_with(&format!("{}:1:", path.display())),
            "{}",
            errors[0]
        );
        assert!(errors[0].contains("nested more than"), "{}", errors[0]);
    }
}

// ---- --max-jobs ----------------------------------------------------------------------

/// `count` files of `per_file` jobs each in a fresh directory.
fn job_files(count: usize, per_file: usize) -> TempDir {
    let dir = TempDir::new().unwrap();
    for file in 0..count {
        let mut text = String::from("jobs:\n");
        for job in 0..per_file {
            text.push_str(&format!(
                "  j{file}-{job}: {{ schedule: \"@daily\", command: x }}\n"
            ));
        }
        write(&dir, &format!("f{file:02}.yaml"), &text);
    }
    dir
}

fn with_max_jobs(limit: usize) -> LoadOptions {
    opts().with_max_jobs(limit)
}

fn over_max_jobs(limit: usize) -> String {
    format!(
        "the schedules define more than --max-jobs {limit} jobs; raise --max-jobs \
         (or CHIME_MAX_JOBS) if this is intended (`chime check` counts them all)"
    )
}

#[test]
fn a_set_over_max_jobs_is_one_error_naming_the_flag() {
    let dir = job_files(2, 2);
    let paths = [dir.path().to_path_buf()];
    assert_eq!(
        messages(load(&paths, &with_max_jobs(3))),
        [over_max_jobs(3)]
    );
    // At the limit, and with no limit, the set loads.
    assert_eq!(load(&paths, &with_max_jobs(4)).unwrap().jobs.len(), 4);
    assert_eq!(load(&paths, &with_max_jobs(0)).unwrap().jobs.len(), 4);
    assert_eq!(with_max_jobs(0).max_jobs, None);
    // One file alone over the limit, in block or flow style.
    let (_dir, _path, result) = load_one(
        "one.yaml",
        "jobs:\n  a: { schedule: \"@daily\", command: x }\n  b: {}\n  c: {}\n",
    );
    assert_eq!(
        result.unwrap_err().0.len(),
        4,
        "without a limit: every error"
    );
    let dir = TempDir::new().unwrap();
    let flow = write(&dir, "flow.yaml", "{jobs: {a: 1, b: 2, c: 3}}\n");
    assert_eq!(
        messages(load(&[flow], &with_max_jobs(2))),
        [over_max_jobs(2)]
    );
}

#[test]
fn counting_stops_once_over_max_jobs() {
    // 40 jobs in 20 files against a limit of 3, or a file of 20,000 jobs against a
    // limit of 10: either is refused after a few files or entries, with the same error.
    let dir = job_files(20, 2);
    let errors = messages(load(&[dir.path().to_path_buf()], &with_max_jobs(3)));
    assert_eq!(errors, [over_max_jobs(3)]);
    let mut text = String::from("jobs:\n");
    for index in 0..20_000 {
        text.push_str(&format!("  j{index}: {{ schedule: \"@daily\" }}\n"));
    }
    let (_dir, _path, result) = load_one("big.yaml", &text);
    let errors = result.unwrap_err();
    assert_eq!(
        errors.0.len(),
        20_000,
        "without a limit: every missing command"
    );
    let dir = TempDir::new().unwrap();
    let big = write(&dir, "big.yaml", &text);
    assert_eq!(
        messages(load(&[big], &with_max_jobs(10))),
        [over_max_jobs(10)]
    );
}

#[test]
fn max_jobs_counts_declared_jobs_and_keeps_reading_errors() {
    // Invalid jobs count too (the limit is about the size of the set), and an error met
    // while reading is still reported beside the limit's.
    let dir = TempDir::new().unwrap();
    write(
        &dir,
        "a.yaml",
        "jobs:\n  a: { command: x }\n  b: { schedule: \"@daily\" }\n  c: {}\n",
    );
    let missing = dir.path().join("gone.yaml");
    let errors = messages(load(
        &[missing.clone(), dir.path().to_path_buf()],
        &with_max_jobs(2),
    ));
    assert_eq!(
        errors,
        [
            format!(
                "{}: no such file or directory; check the path",
                missing.display()
            ),
            over_max_jobs(2),
        ]
    );
    // Within the limit, the same file's own errors are all reported as usual.
    let errors = messages(load(&[dir.path().to_path_buf()], &with_max_jobs(3)));
    assert_eq!(errors.len(), 4, "{errors:#?}");
}

/// Slow in a debug build (serde-saphyr unoptimized); run with `--ignored` or in release.
#[test]
#[ignore]
fn a_file_with_100_000_jobs_loads() {
    let mut text = String::from("defaults:\n  timeout: 1m\njobs:\n");
    for index in 0..100_000 {
        text.push_str(&format!(
            "  job-{index}:\n    schedule: \"*/5 * * * *\"\n    command: [\"/bin/echo\", \"{index}\"]\n    retry: {{ attempts: 2, delay: 1s }}\n"
        ));
    }
    let (_dir, _path, result) = load_one("big.yaml", &text);
    let config = result.unwrap_or_else(|errors| panic!("{}", errors.0[0]));
    assert_eq!(config.jobs.len(), 100_000);
    assert_eq!(config.jobs[99_999].name, "job-99999");
}

/// `Job::new` promises the defaults a file gives a job that sets nothing optional.
#[test]
fn a_job_with_only_the_required_keys_loads_as_job_new_builds_it() {
    let (_dir, path, result) = load_one(
        "bare.yaml",
        "jobs:\n  bare:\n    schedule: \"*/5 * * * *\"\n    command: [\"/bin/true\"]\n",
    );
    let config = result.expect("loads");
    let built = Job::new(
        "bare",
        "*/5 * * * *",
        Action::Shell(ShellCommand::Argv(vec!["/bin/true".into()])),
    )
    .unwrap();
    let expected = Job {
        source: SourceLocation {
            file: path,
            line: 2,
            column: 3,
        },
        ..built
    };
    assert_eq!(config.jobs, vec![expected]);
}

#[test]
fn pings_merge_over_defaults_and_keep_the_run_facts_for_later() {
    use chime::job::{Piece, RunVar};
    let (_dir, path, result) = load_one(
        "pings.yaml",
        r#"
defaults:
  healthchecks: "https://hc-ping.com/${HC_UUID}/"
  report_missed: true
  on_failure:
    url: "https://ntfy.example/${CHIME_JOB}"
    method: post
    headers: { Authorization: "Bearer ${HC_TOKEN}" }
    body: '{"tail": ${json:CHIME_OUTPUT_TAIL}, "token": ${json:HC_TOKEN}}'
    timeout: 3s
    retry: { attempts: 2 }
jobs:
  inherits:
    schedule: "@daily"
    command: "true"
  own:
    schedule: "@daily"
    command: "true"
    healthchecks: "https://hc.example/ping/x?create=1"
    report_missed: false
  none:
    schedule: "@daily"
    command: "true"
    on_success: { url: "https://x.example/ok" }
"#,
    );
    let config = result.unwrap_or_else(|errors| panic!("{errors:?} in {}", path.display()));
    let job = |name: &str| {
        config
            .jobs
            .iter()
            .find(|job| job.name == name)
            .and_then(|job| job.pings.clone())
            .expect("pings")
    };
    let inherits = job("inherits");
    let hc = inherits.healthchecks.as_ref().expect("from defaults");
    assert_eq!(hc.url, "https://hc-ping.com/1234-abcd");
    assert_eq!(hc.template, "https://hc-ping.com/${HC_UUID}/");
    assert!(inherits.report_missed);
    let hook = inherits.on_failure.as_ref().expect("from defaults");
    assert_eq!(hook.method, "POST");
    assert_eq!(hook.timeout, Duration::from_secs(3));
    assert_eq!(hook.retry.attempts, 2);
    assert_eq!(
        hook.url.0,
        [
            Piece::Text("https://ntfy.example/".into()),
            Piece::Var {
                var: RunVar::Job,
                json: false
            }
        ]
    );
    assert_eq!(
        hook.body.as_ref().expect("a body").0,
        [
            Piece::Text("{\"tail\": ".into()),
            Piece::Var {
                var: RunVar::OutputTail,
                json: true
            },
            Piece::Text(format!(", \"token\": \"{SECRET}\"}}")),
        ]
    );
    // Secrets stay out of Debug output.
    assert!(!format!("{inherits:?}").contains(SECRET));
    let own = job("own");
    assert_eq!(
        own.healthchecks.as_ref().map(|hc| hc.url.as_str()),
        Some("https://hc.example/ping/x?create=1")
    );
    assert!(!own.report_missed);
    assert!(own.on_failure.is_some());
    assert!(job("none").on_success.is_some());
}

#[test]
fn ping_keys_are_checked_like_every_key() {
    let (_dir, path, result) = load_one(
        "bad-pings.yaml",
        r#"jobs:
  j:
    schedule: "@daily"
    command: "true"
    on_fail: { url: "https://x.example" }
    report_missed: yes
    on_start: "https://x.example"
    on_success: { method: POST }
"#,
    );
    let errors = messages(result);
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert_error(
        &errors[0],
        &path,
        "5:5",
        &["on_fail", "did you mean `on_failure`"],
    );
    assert_error(
        &errors[1],
        &path,
        "6:20",
        &["report_missed", "true or false"],
    );
    assert_error(&errors[2], &path, "7:15", &["on_start", "mapping", "url"]);
    assert_error(&errors[3], &path, "8:17", &["on_success", "no `url`"]);
}
