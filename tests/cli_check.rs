//! `chime check` as users run it (DESIGN.md §1, §2): the real binary on real files.
//! A good set of files exits 0 and lists every job with its schedule, zone and next
//! fire; every class of bad input exits 1 with `error: file:line:column: …` on stderr,
//! all errors of all files in one run, and nothing on stdout.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use support::{LIMIT, Output, run, temp_dir, write};

/// `chime check PATHS…`, run in a fresh temp dir.
fn check(paths: &[&Path]) -> Output {
    let dir = temp_dir();
    let mut args = vec![PathBuf::from("check")];
    args.extend(paths.iter().map(|p| p.to_path_buf()));
    run(dir.path(), args, LIMIT)
}

/// Asserts a failed check: exit 1, nothing on stdout, the summary line last.
#[track_caller]
fn assert_failed(out: &Output, errors: usize) {
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_eq!(out.stdout, "", "stdout must stay empty on failure");
    let summary = if errors == 1 {
        "1 error found; nothing was loaded".to_string()
    } else {
        format!("{errors} errors found; nothing was loaded")
    };
    assert_eq!(
        out.stderr.lines().last(),
        Some(summary.as_str()),
        "{out:#?}"
    );
    assert_eq!(out.errors().len(), errors, "{out:#?}");
}

/// Asserts `error` is at `path:at` (`at` = "line:column", or "" for the whole file) and
/// mentions each of `words`.
#[track_caller]
fn assert_error(error: &str, path: &Path, at: &str, words: &[&str]) {
    let prefix = if at.is_empty() {
        format!("{}: ", path.display())
    } else {
        format!("{}:{at}: ", path.display())
    };
    assert!(
        error.starts_with(&prefix),
        "{error:?} does not start with {prefix:?}"
    );
    for word in words {
        assert!(error.contains(word), "{error:?} does not mention {word:?}");
    }
}

/// Checks one file holding `text`; asserts it is the only error, at `at`, with `words`.
#[track_caller]
fn assert_only_error(text: impl AsRef<[u8]>, at: &str, words: &[&str]) -> Output {
    let dir = temp_dir();
    let path = write(dir.path(), "jobs.yaml", text);
    let out = check(&[&path]);
    assert_failed(&out, 1);
    assert_error(out.errors()[0], &path, at, words);
    out
}

/// The names of the jobs in an example file: the two-space-indented keys below `jobs:`.
fn job_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_jobs = false;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.starts_with('#') && !line.trim().is_empty() {
            in_jobs = line.trim_end() == "jobs:";
            continue;
        }
        let Some(rest) = line.strip_prefix("  ") else {
            continue;
        };
        if !in_jobs || rest.starts_with([' ', '#']) {
            continue;
        }
        if let Some((name, after)) = rest.split_once(':') {
            let after = after.trim();
            if after.is_empty() || after.starts_with('#') {
                names.push(name.to_string());
            }
        }
    }
    names
}

#[test]
fn repository_examples_are_valid_and_every_job_is_listed() {
    let schedules = Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules");
    let out = check(&[&schedules]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(out.errors(), Vec::<&str>::new(), "{out:#?}");

    let mut files: Vec<PathBuf> = std::fs::read_dir(&schedules)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut expected = Vec::new();
    for file in &files {
        let names = job_names(&std::fs::read_to_string(file).unwrap());
        assert!(!names.is_empty(), "no jobs found in {}", file.display());
        expected.extend(names);
    }

    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("JOB "), "{}", out.stdout);
    let listed: Vec<&str> = lines[1..lines.len() - 1]
        .iter()
        .map(|line| line.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(listed, expected, "jobs listed in file order");
    assert_eq!(
        lines.last().copied(),
        Some(format!("{} jobs in {} files: ok", expected.len(), files.len()).as_str())
    );
}

const GOOD: &str = r#"defaults:
  timezone: Asia/Kolkata      # +05:30 all year: no daylight saving time
jobs:
  backup:
    schedule: "30 2 * * *"
    command: echo backup
  tokyo:
    schedule: "@hourly"
    timezone: Asia/Tokyo
    command: ["echo", "hi"]
  ping:
    schedule: "@every 5m"
    http: { url: "https://example.com/ping" }
  boot:
    schedule: "@reboot"
    command: echo boot
  off:
    schedule: "@daily"
    command: echo off
    enabled: false
"#;

#[test]
fn good_file_lists_jobs_with_schedule_zone_and_next_fire() {
    let dir = temp_dir();
    let path = write(dir.path(), "good.yaml", GOOD);
    let before = Utc::now();
    let out = check(&[&path]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    // No warnings: stderr only names the default zone (whatever this machine's is).
    let notes: Vec<&str> = out.stderr.lines().collect();
    assert!(
        notes.len() == 1 && notes[0].starts_with("default zone: "),
        "{out:#?}"
    );

    let lines: Vec<&str> = out.stdout.lines().collect();
    let column = lines[0].find("NEXT FIRE").expect("a NEXT FIRE column");
    let meaning = lines[0].find("MEANING").expect("a MEANING column");
    let next = |row: usize| -> &str { lines[row][column..meaning].trim_end() };
    // The next fires depend on now: check their shape, zone offset and that they lie
    // ahead, then blank them for the snapshot of the rest.
    let fire = |row: usize| -> DateTime<FixedOffset> {
        let text = next(row);
        let at = DateTime::parse_from_rfc3339(text)
            .unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"));
        assert!(at > before, "{text} is not in the future");
        at
    };
    let backup = fire(1);
    assert!(next(1).ends_with("T02:30:00+05:30"), "{}", next(1));
    assert!(backup <= before + chrono::Duration::days(1));
    let tokyo = fire(2);
    assert!(next(2).ends_with(":00:00+09:00"), "{}", next(2));
    assert!(tokyo <= before + chrono::Duration::hours(1));
    let ping = fire(3);
    assert!(next(3).ends_with("+05:30"), "{}", next(3));
    assert_eq!(
        ping.timestamp() % 300,
        0,
        "@every 5m is aligned to the epoch"
    );
    assert!(ping <= before + chrono::Duration::minutes(5));

    let blanked: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(row, line)| match row {
            1..=3 => format!("{}<next>  {}", &line[..column], &line[meaning..]),
            _ => line.to_string(),
        })
        .collect();
    let expected = [
        "JOB     SCHEDULE    ZONE          NEXT FIRE                  MEANING",
        "backup  30 2 * * *  Asia/Kolkata  <next>  at 02:30 every day",
        "tokyo   @hourly     Asia/Tokyo    <next>  at minute 0 of every hour",
        "ping    @every 5m   Asia/Kolkata  <next>  every 5 minutes (epoch-aligned)",
        "boot    @reboot     Asia/Kolkata  at service start           once, when the service starts",
        "off     @daily      Asia/Kolkata  disabled                   at 00:00 every day",
        "5 jobs in 1 file: ok",
    ];
    assert_eq!(blanked, expected, "\n{}", out.stdout);
}

#[test]
fn six_fields_that_look_like_five_and_question_marks_warn_but_pass() {
    let dir = temp_dir();
    let path = write(
        dir.path(),
        "habits.yaml",
        "jobs:\n  meant-0230:\n    schedule: \"30 2 * * * *\"\n    command: echo hi\n  \
         quartz:\n    schedule: \"0 0 12 ? * MON\"\n    command: echo hi\n",
    );
    let out = check(&[&path]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter_map(|line| line.strip_prefix("warning: "))
        .collect();
    assert_eq!(warnings.len(), 2, "{out:#?}");
    assert_error(
        warnings[0],
        &path,
        "3:15",
        &[
            "fires at second 30 of minute 2 of every hour",
            "drop the last `*`: \"30 2 * * *\"",
        ],
    );
    assert_error(warnings[1], &path, "6:15", &["`?` is read as `*`"]);
    assert!(
        out.stdout
            .contains("at second 30 of minute 2 of every hour"),
        "{}",
        out.stdout
    );
}

/// Regression (issue 12): a directory holding no `*.yaml` gave "0 jobs in 0 files:
/// ok" and nothing else.
#[test]
fn a_directory_without_schedule_files_is_warned_about() {
    let dir = temp_dir();
    write(dir.path(), "jobs.yaml.disabled", "jobs: {}\n");
    let out = check(&[dir.path()]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let warning = out
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("warning: "))
        .unwrap_or_else(|| panic!("no warning: {out:#?}"));
    assert_error(
        warning,
        dir.path(),
        "",
        &["holds no schedule files", "`*.yaml` and `*.yml`"],
    );
}

/// Regression (issue 12): unquoted `schedule: */5 * * * *` said "reference to unknown
/// value", `schedule: @daily` "unexpected character", and neither said to quote it.
#[test]
fn unquoted_schedule_starting_with_a_yaml_character_says_to_quote_it() {
    for value in ["*/5 * * * *", "@daily", "? * * * *", "*"] {
        let text = format!("jobs:\n  a:\n    schedule: {value}\n    command: echo hi\n");
        assert_only_error(
            text,
            "3:15",
            &[
                "invalid YAML",
                "quote the schedule",
                "`schedule: \"*/5 * * * *\"`",
            ],
        );
    }
    // Unquoted and fine in YAML: no error at all.
    let dir = temp_dir();
    let path = write(
        dir.path(),
        "ok.yaml",
        "jobs:\n  a:\n    schedule: 0 0 * * *\n    command: echo hi\n",
    );
    assert_eq!(check(&[&path]).code, Some(0));
}

#[test]
fn six_fields_with_star_seconds_warns_but_passes() {
    let dir = temp_dir();
    let path = write(
        dir.path(),
        "secs.yaml",
        "jobs:\n  busy:\n    schedule: \"* 0 3 * * *\"\n    command: echo hi\n    timezone: UTC\n",
    );
    let out = check(&[&path]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter_map(|line| line.strip_prefix("warning: "))
        .collect();
    assert_eq!(warnings.len(), 1, "{out:#?}");
    assert_error(
        warnings[0],
        &path,
        "3:15",
        &["seconds field", "`*`", "every second"],
    );
    assert!(out.errors().is_empty(), "{out:#?}");
    assert!(
        out.stdout.lines().any(|line| line.starts_with("busy ")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("T03:00:00+00:00"), "{}", out.stdout);
}

// ---- one test per class of bad input ---------------------------------------------------

/// `bad_input! { test_name: yaml => "line:col", [words…]; … }`: a test each, asserting
/// exit 1, the one error at exactly `file:line:col`, and the words of its message.
macro_rules! bad_input {
    ($($name:ident: $text:expr => $at:expr, [$($word:expr),* $(,)?];)*) => {$(
        #[test]
        fn $name() {
            assert_only_error($text, $at, &[$($word),*]);
        }
    )*};
}

bad_input! {
    unknown_key_suggests_the_right_one:
        "jobs:\n  a:\n    schedul: \"0 3 * * *\"\n    command: x\n"
        => "3:5", ["unknown key `schedul`", "did you mean `schedule`?"];
    boolean_must_be_true_or_false:
        "jobs:\n  a:\n    schedule: \"0 3 * * *\"\n    command: x\n    enabled: yes\n"
        => "5:14", ["`enabled`", "`yes`", "true or false"];
    command_and_http_together:
        "jobs:\n  a:\n    schedule: \"0 3 * * *\"\n    command: x\n    http: { url: \"https://example.com/\" }\n"
        => "5:5", ["job `a`", "both", "`command`", "`http`"];
    neither_command_nor_http:
        "jobs:\n  a:\n    schedule: \"0 3 * * *\"\n    timeout: 5s\n"
        => "2:3", ["job `a`", "neither", "`command`", "`http`"];
    unknown_time_zone_suggests_the_closest:
        "jobs:\n  a:\n    schedule: \"0 3 * * *\"\n    command: x\n    timezone: Europe/Berln\n"
        => "5:15", ["`timezone`", "Europe/Berln", "did you mean `Europe/Berlin`?"];
    cron_field_out_of_range:
        "jobs:\n  a:\n    schedule: \"60 * * * *\"\n    command: x\n"
        => "3:15", ["`schedule`", "minute", "60", "0–59"];
    schedule_that_never_fires:
        "jobs:\n  a:\n    schedule: \"0 0 30 2 *\"\n    command: x\n"
        => "3:15", ["`schedule`", "0 0 30 2 *", "never fires"];
    duration_without_unit:
        "jobs:\n  a:\n    schedule: \"0 3 * * *\"\n    command: x\n    timeout: 30\n"
        => "5:14", ["`timeout`", "30", "unit", "30s"];
    url_that_is_not_a_url:
        "jobs:\n  a:\n    schedule: \"0 3 * * *\"\n    http:\n      url: \"not a url\"\n"
        => "5:12", ["`http.url`", "not a url", "not a valid URL", "https://"];
    unknown_http_method:
        "jobs:\n  a:\n    schedule: \"0 3 * * *\"\n    http:\n      url: \"https://example.com/\"\n      method: FETCH\n"
        => "6:15", ["`http.method`", "`FETCH`", "GET", "POST"];
    empty_file:
        "" => "", ["the file is empty", "jobs:"];
    comment_only_file:
        "# nothing here yet\n\n" => "", ["the file is empty"];
    list_instead_of_mapping:
        "- backup\n- rotate\n"
        => "1:1", ["must be a mapping", "not a list", "jobs:"];
    invalid_utf8:
        b"jobs:\n  a\xff:\n    schedule: \"0 3 * * *\"\n    command: x\n".as_slice()
        => "2:4", ["not valid UTF-8", "0xff", "save it as UTF-8"];
    yaml_syntax_error:
        "jobs:\n  a: [1, 2\n"
        => "2:6", ["invalid YAML", "unclosed bracket"];
    schedule_in_defaults:
        "defaults:\n  schedule: \"0 3 * * *\"\njobs:\n  a:\n    schedule: \"0 3 * * *\"\n    command: x\n"
        => "2:3", ["`schedule` cannot be a default", "set `schedule` on each job"];
}

#[test]
fn unset_variable_is_named_and_no_value_leaks() {
    const SECRET: &str = "s3cr3t-t0ken-value";
    let dir = temp_dir();
    let path = write(
        dir.path(),
        "http.yaml",
        r#"jobs:
  ping:
    schedule: "@every 5m"
    http:
      url: "https://example.com/${CHIME_TEST_SECRET}/${CHIME_TEST_UNSET}"
      headers: { Authorization: "Bearer ${CHIME_TEST_SECRET}" }
  bad-url:
    schedule: "@every 5m"
    http:
      url: "${CHIME_TEST_SECRET}"
"#,
    );
    let mut command = support::command(dir.path(), [Path::new("check"), &path]);
    command
        .env("CHIME_TEST_SECRET", SECRET)
        .env_remove("CHIME_TEST_UNSET");
    let out = command.run(LIMIT);
    assert_failed(&out, 2);
    let errors = out.errors();
    assert_error(
        errors[0],
        &path,
        "5:12",
        &[
            "`http.url`",
            "${CHIME_TEST_UNSET}",
            "not set",
            "${CHIME_TEST_UNSET:-",
        ],
    );
    // Invalid only once interpolated: the message shows the template, not the value.
    assert_error(
        errors[1],
        &path,
        "10:12",
        &["`http.url`", "${CHIME_TEST_SECRET}", "after interpolation"],
    );
    assert!(
        !out.stderr.contains(SECRET),
        "a value leaked:\n{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("s3cr3t"),
        "a value leaked:\n{}",
        out.stderr
    );
}

/// `levels` levels of anchors, each a list of `width` aliases of the one before:
/// a few hundred bytes that expand to `width^levels` strings.
fn alias_bomb(levels: usize, width: usize) -> String {
    let mut text = format!("a0: &a0 [{}]\n", vec!["\"lol\""; width].join(", "));
    for level in 1..=levels {
        let refs = vec![format!("*a{}", level - 1); width].join(", ");
        text.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
    }
    text.push_str("jobs:\n  x:\n    schedule: \"0 3 * * *\"\n    command: x\n");
    text
}

/// How fast a hostile file must be rejected; generous for a loaded debug build, far
/// below what expanding it (or overflowing the stack) would take.
const QUICKLY: Duration = Duration::from_secs(5);

#[test]
fn alias_bomb_is_rejected_quickly() {
    let bomb = alias_bomb(9, 9);
    let dir = temp_dir();
    let path = write(dir.path(), "bomb.yaml", &bomb);
    let out = check(&[&path]);
    assert!(out.elapsed < QUICKLY, "took {:?}", out.elapsed);
    assert_failed(&out, 1);
    let error = out.errors()[0];
    assert!(error.contains("alias"), "{error}");
    // Located at one of the aliases: lines 2–10 hold them, from column 10 on.
    let position = error
        .strip_prefix(&format!("{}:", path.display()))
        .unwrap_or_else(|| panic!("{error:?} does not name {}", path.display()));
    let mut parts = position.splitn(3, ':');
    let line: u32 = parts.next().unwrap().parse().expect("a line number");
    let column: u32 = parts.next().unwrap().parse().expect("a column number");
    assert!((2..=10).contains(&line) && column >= 10, "{error}");
}

#[test]
fn ten_thousand_nested_brackets_are_rejected_quickly() {
    let dir = temp_dir();
    let path = write(dir.path(), "deep.yaml", "[".repeat(10_000));
    let out = check(&[&path]);
    assert!(out.elapsed < QUICKLY, "took {:?}", out.elapsed);
    assert_eq!(out.code, Some(1), "no crash (stack overflow): {out:#?}");
    assert_failed(&out, 1);
    let error = out.errors()[0];
    // "nested more than N levels": the error stands at the bracket that is one too many.
    let limit: usize = error
        .split("nested more than ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no depth limit named in {error:?}"));
    assert_error(error, &path, &format!("1:{}", limit + 1), &["levels deep"]);
}

#[test]
fn duplicate_job_name_across_files_names_both_places() {
    let dir = temp_dir();
    let first = write(
        dir.path(),
        "a.yaml",
        "jobs:\n  dup:\n    schedule: \"0 3 * * *\"\n    command: x\n",
    );
    let second = write(
        dir.path(),
        "b.yaml",
        "# the same name again\njobs:\n  other:\n    schedule: \"0 3 * * *\"\n    command: x\n  dup:\n    schedule: \"0 4 * * *\"\n    command: y\n",
    );
    let out = check(&[dir.path()]);
    assert_failed(&out, 1);
    let error = out.errors()[0];
    assert_error(error, &second, "6:3", &["`dup`", "twice", "rename"]);
    assert!(
        error.contains(&format!("{}:2:3", first.display())),
        "the first definition is not named: {error}"
    );
}

#[test]
fn all_errors_of_all_files_in_one_run() {
    let dir = temp_dir();
    let one = write(
        dir.path(),
        "1-first.yaml",
        "jobs:\n  a:\n    schedule: \"61 * * * *\"\n    command: x\n    timeout: 5\n  b:\n    schedul: \"0 3 * * *\"\n    command: x\n",
    );
    let two = write(
        dir.path(),
        "2-second.yaml",
        "jobs:\n  c:\n    schedule: \"0 3 * * *\"\n    http:\n      url: \"https://example.com/\"\n      method: FETCH\n    enabled: yes\n    timezone: Mars/Olympus\n",
    );
    let out = check(&[dir.path()]);
    assert_failed(&out, 6);
    let errors = out.errors();
    assert_error(errors[0], &one, "3:15", &["minute", "61"]);
    assert_error(errors[1], &one, "5:14", &["`timeout`"]);
    assert_error(errors[2], &one, "7:5", &["`schedul`"]);
    assert_error(errors[3], &two, "6:15", &["`http.method`"]);
    assert_error(errors[4], &two, "7:14", &["`enabled`"]);
    assert_error(errors[5], &two, "8:15", &["Mars/Olympus"]);
}

#[test]
fn missing_path_is_named() {
    let dir = temp_dir();
    let missing = dir.path().join("no-such-dir");
    let out = check(&[&missing]);
    assert_failed(&out, 1);
    assert_error(
        out.errors()[0],
        &missing,
        "",
        &["no such file or directory"],
    );
}

#[test]
fn missing_path_does_not_hide_errors_of_other_files() {
    let dir = temp_dir();
    let missing = dir.path().join("gone.yaml");
    let bad = write(
        dir.path(),
        "bad.yaml",
        "jobs:\n  a:\n    schedule: \"0 3 * * *\"\n",
    );
    let out = check(&[&missing, &bad]);
    assert_failed(&out, 2);
    assert_error(out.errors()[0], &missing, "", &["no such file"]);
    assert_error(out.errors()[1], &bad, "2:3", &["neither"]);
}

/// Issue 9: `mkfifo d/f.yaml; chime check d` never returned (a blocking `open`).
#[test]
fn fifo_in_the_directory_is_an_error_not_a_hang() {
    let dir = temp_dir();
    let schedules = dir.path().join("d");
    std::fs::create_dir(&schedules).unwrap();
    write(
        &schedules,
        "a.yaml",
        "jobs:\n  a: { schedule: \"@daily\", command: x }\n",
    );
    let fifo = schedules.join("f.yaml");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path and a plain mode.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
    let socket = schedules.join("s.yaml");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();

    // `run` bounds the wait: a hang fails the test after LIMIT instead of blocking it.
    let out = check(&[&schedules]);
    assert_failed(&out, 2);
    assert_error(
        out.errors()[0],
        &fifo,
        "",
        &["not a regular file (a FIFO)", "remove it or move it out"],
    );
    assert_error(
        out.errors()[1],
        &socket,
        "",
        &["not a regular file (a socket)"],
    );

    let out = check(&[&fifo]);
    assert_failed(&out, 1);
    assert_error(out.errors()[0], &fifo, "", &["not a regular file (a FIFO)"]);

    // The service refuses to start on it the same way, rather than hanging unkillable.
    // (Its log is JSON here, not a terminal: the error is in `config.rejected`.)
    let out = run(dir.path(), [Path::new("run"), &schedules], LIMIT);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(
        out.stderr.contains("\"event\":\"config.rejected\"")
            && out
                .stderr
                .contains(&format!("{}: not a regular file (a FIFO)", fifo.display())),
        "{out:#?}"
    );
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let dir = temp_dir();
    let out = run(dir.path(), ["check", "--bogus"], LIMIT);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("--bogus"), "{}", out.stderr);
}

#[test]
fn directory_loads_yaml_files_by_name_and_ignores_leftovers() {
    let dir = temp_dir();
    let job = |name: &str| {
        format!("jobs:\n  {name}:\n    schedule: \"@daily\"\n    command: x\n    timezone: UTC\n")
    };
    write(dir.path(), "b.yml", job("second"));
    write(dir.path(), "a.yaml", job("first"));
    // None of these is a schedule file; each would be an error (or a duplicate) if read.
    write(dir.path(), ".hidden.yaml", "not: [valid");
    write(dir.path(), "a.yaml~", job("first"));
    write(dir.path(), ".a.yaml.swp", "\u{0}\u{1}binary");
    write(dir.path(), "#a.yaml#", job("first"));
    write(dir.path(), "notes.txt", "not yaml at all: [");
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    write(&dir.path().join("sub"), "c.yaml", job("nested"));
    let out = check(&[dir.path()]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let listed: Vec<&str> = lines[1..lines.len() - 1]
        .iter()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(listed, ["first", "second"], "{}", out.stdout);
    assert_eq!(
        lines.last(),
        Some(&"2 jobs in 2 files: ok"),
        "{}",
        out.stdout
    );
}

#[test]
fn default_timezone_flag_and_environment_apply_to_jobs_without_one() {
    let dir = temp_dir();
    let path = write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  a:\n    schedule: \"0 3 * * *\"\n    command: x\n",
    );
    let path_arg = path.to_str().unwrap();
    let out = run(
        dir.path(),
        ["--default-timezone", "Asia/Tokyo", "check", path_arg],
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stdout.contains("Asia/Tokyo"), "{}", out.stdout);
    assert!(out.stdout.contains("T03:00:00+09:00"), "{}", out.stdout);

    let mut command = support::command(dir.path(), ["check", path_arg]);
    command.env("CHIME_DEFAULT_TIMEZONE", "Asia/Kolkata");
    let out = command.run(LIMIT);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stdout.contains("Asia/Kolkata"), "{}", out.stdout);
    assert!(out.stdout.contains("T03:00:00+05:30"), "{}", out.stdout);
}

/// `chime check` with `TZ` set to `tz` on a job that names no zone: the output.
fn check_with_tz(tz: &str, extra: &[&str]) -> Output {
    let dir = temp_dir();
    let path = write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  a:\n    schedule: \"0 3 * * *\"\n    command: x\n",
    );
    let mut args: Vec<&str> = extra.to_vec();
    args.push("check");
    args.push(path.to_str().unwrap());
    let mut command = support::command(dir.path(), args);
    command.env("TZ", tz);
    command.run(LIMIT)
}

/// Regression (issue 9 item 7): POSIX `TZ` rules, `TZ=:/path` and `TZ=garbage` fell
/// back to UTC without a word, and nothing said which zone was in use.
#[test]
fn check_names_the_default_zone_it_took_from_tz() {
    let rule = "CET-1CEST,M3.5.0,M10.5.0/3";
    let cases = [
        ("Asia/Kolkata", "Asia/Kolkata (from TZ)", &["+05:30"][..]),
        (
            rule,
            "CET-1CEST,M3.5.0,M10.5.0/3 (from TZ)",
            &["+01:00", "+02:00"][..],
        ),
        (
            ":/usr/share/zoneinfo/America/New_York",
            "America/New_York (from TZ)",
            &["-05:00", "-04:00"][..],
        ),
    ];
    for (tz, shown, offsets) in cases {
        if tz.contains("/usr/share/zoneinfo") && !Path::new("/usr/share/zoneinfo").is_dir() {
            // Straight to stderr, past the harness's capture, so the skip is seen.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("SKIPPED: TZ={tz}: /usr/share/zoneinfo is absent\n").as_bytes(),
            );
            continue;
        }
        let out = check_with_tz(tz, &[]);
        assert_eq!(out.code, Some(0), "TZ={tz}: {out:#?}");
        assert_eq!(
            out.stderr,
            format!("default zone: {shown}\n"),
            "TZ={tz}: {out:#?}"
        );
        let row = out.stdout.lines().nth(1).expect("a row for the job");
        assert!(
            row.contains(&format!("  {}  ", shown.split(' ').next().unwrap())),
            "{row}"
        );
        assert!(
            offsets
                .iter()
                .any(|offset| row.contains(&format!("T03:00:00{offset}  "))),
            "TZ={tz}: {row}"
        );
    }
}

#[test]
fn check_warns_when_tz_is_not_a_zone_and_uses_utc() {
    let out = check_with_tz("garbage", &[]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "warning: TZ=garbage is not a zone chime understands (not an IANA name, a \
             :/path, or a POSIX rule); using UTC",
            "default zone: UTC (fallback)",
        ],
        "{out:#?}"
    );
    assert!(out.stdout.contains("T03:00:00+00:00"), "{}", out.stdout);
}

#[test]
fn default_timezone_flag_takes_a_posix_rule_and_wins_over_tz() {
    let out = check_with_tz("garbage", &["--default-timezone", "<+0545>-5:45"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(
        out.stderr, "default zone: <+0545>-5:45 (from --default-timezone)\n",
        "TZ is not even looked at: {out:#?}"
    );
    assert!(out.stdout.contains("T03:00:00+05:45"), "{}", out.stdout);
}
