//! `chime next` as scripts use it (DESIGN.md §1, §3): fire times only on stdout, one
//! RFC 3339 time a line with the zone's offset, strictly after `--from`; errors on
//! stderr with the exit codes of §1. Expected times are computed by hand in comments.

mod support;

use support::{LIMIT, Output, run, temp_dir, write};

fn next(args: &[&str]) -> Output {
    let dir = temp_dir();
    let mut all = vec!["next"];
    all.extend(args);
    run(dir.path(), all, LIMIT)
}

#[track_caller]
fn assert_prints(out: &Output, expected: &str) {
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(out.stdout, expected, "{out:#?}");
    // With --cron, stderr holds the expression in words, one line; nothing else.
    assert!(
        out.stderr.lines().count() <= 1
            && !out.stderr.contains("error")
            && !out.stderr.contains("warning"),
        "{out:#?}"
    );
}

#[test]
fn cron_in_words_goes_to_stderr_and_times_to_stdout() {
    let out = next(&[
        "--cron",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--from",
        "2026-03-30T12:00:00Z",
        "-n",
        "1",
    ]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(out.stdout, "2026-03-31T02:30:00+02:00\n", "{out:#?}");
    assert_eq!(
        out.stderr, "30 2 * * *: at 02:30 every day (Europe/Berlin)\n",
        "{out:#?}"
    );
}

#[test]
fn cron_six_fields_looking_like_five_warns_on_stderr() {
    let out = next(&[
        "--cron",
        "*/5 * * * * *",
        "--tz",
        "UTC",
        "--from",
        "2026-03-30T12:00:00Z",
        "-n",
        "2",
    ]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(
        out.stdout,
        "2026-03-30T12:00:05+00:00\n2026-03-30T12:00:10+00:00\n"
    );
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines[0], "*/5 * * * * *: every 5 seconds (UTC)", "{out:#?}");
    assert!(
        lines[1].starts_with("warning: six fields") && lines[1].contains("\"*/5 * * * *\""),
        "{out:#?}"
    );
}

/// Regression (issue 12): `next --cron "0 0 31 2 *"` printed nothing and exited 0 while
/// `check` called it "never fires".
#[test]
fn cron_that_never_fires_exits_1_with_checks_message() {
    let out = next(&["--cron", "0 0 31 2 *", "--tz", "UTC"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_eq!(out.stdout, "", "{out:#?}");
    assert!(
        out.stderr.contains(
            "error: `schedule` \"0 0 31 2 *\" never fires: no date matches it (such as February 30)"
        ),
        "{out:#?}"
    );
    // The same words as `check` on a file holding it.
    let dir = temp_dir();
    let path = write(
        dir.path(),
        "feb.yaml",
        "jobs:\n  feb:\n    schedule: \"0 0 31 2 *\"\n    command: x\n",
    );
    let checked = run(dir.path(), ["check", path.to_str().unwrap()], LIMIT);
    assert_eq!(checked.code, Some(1), "{checked:#?}");
    assert!(
        checked
            .stderr
            .contains("`schedule` \"0 0 31 2 *\" never fires: no date matches it"),
        "{checked:#?}"
    );
}

/// Regression (issue 12): `--cron */5 * * * *` unquoted reached clap as several words.
#[test]
fn cron_given_as_several_words_says_to_quote_it() {
    let out = next(&["--cron", "*/5", "*", "*", "*", "*"]);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert_eq!(out.stdout, "", "{out:#?}");
    assert!(
        out.stderr
            .contains("quote the schedule, for example --cron \"*/5 * * * *\""),
        "{out:#?}"
    );
}

#[test]
fn issue_example_berlin_spring_forward() {
    // 2026-03-29 02:00 CET → 03:00 CEST: the skipped 02:30 runs once, at 03:00.
    let out = next(&[
        "--cron",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--from",
        "2026-03-28T12:00:00Z",
        "-n",
        "3",
    ]);
    assert_prints(
        &out,
        "2026-03-29T03:00:00+02:00\n2026-03-30T02:30:00+02:00\n2026-03-31T02:30:00+02:00\n",
    );
}

#[test]
fn new_york_fall_back_fixed_time_runs_once() {
    // 2026-11-01 02:00 EDT → 01:00 EST: 01:30 happens twice; a fixed-time job runs at
    // the first one only (05:30Z), then daily at 01:30 EST.
    let out = next(&[
        "--cron",
        "30 1 * * *",
        "--tz",
        "America/New_York",
        "--from",
        "2026-10-31T12:00:00Z",
        "-n",
        "3",
    ]);
    assert_prints(
        &out,
        "2026-11-01T01:30:00-04:00\n2026-11-02T01:30:00-05:00\n2026-11-03T01:30:00-05:00\n",
    );
}

#[test]
fn new_york_fall_back_wildcard_fires_in_both_passes() {
    // From 00:45 EDT (04:45Z): every half hour stays every half hour in UTC, so 01:00
    // and 01:30 appear once with -04:00 and once with -05:00.
    let out = next(&[
        "--cron",
        "*/30 * * * *",
        "--tz",
        "America/New_York",
        "--from",
        "2026-11-01T04:45:00Z",
        "-n",
        "6",
    ]);
    assert_prints(
        &out,
        "2026-11-01T01:00:00-04:00\n\
         2026-11-01T01:30:00-04:00\n\
         2026-11-01T01:00:00-05:00\n\
         2026-11-01T01:30:00-05:00\n\
         2026-11-01T02:00:00-05:00\n\
         2026-11-01T02:30:00-05:00\n",
    );
}

#[test]
fn new_york_spring_forward_fixed_time_runs_after_the_gap() {
    // 2026-03-08 02:00 EST → 03:00 EDT: 02:30 does not exist that day.
    let out = next(&[
        "--cron",
        "30 2 * * *",
        "--tz",
        "America/New_York",
        "--from",
        "2026-03-07T12:00:00Z",
        "-n",
        "2",
    ]);
    assert_prints(
        &out,
        "2026-03-08T03:00:00-04:00\n2026-03-09T02:30:00-04:00\n",
    );
}

#[test]
fn every_with_milliseconds_is_aligned_to_the_epoch() {
    // 12:00:00Z is a multiple of 1.5 s since the epoch, so it is a fire itself; the
    // output starts strictly after it.
    let out = next(&[
        "--cron",
        "@every 1500ms",
        "--tz",
        "UTC",
        "--from",
        "2026-03-28T12:00:00Z",
        "-n",
        "3",
    ]);
    assert_prints(
        &out,
        "2026-03-28T12:00:01.500+00:00\n2026-03-28T12:00:03+00:00\n2026-03-28T12:00:04.500+00:00\n",
    );
}

#[test]
fn from_is_exclusive() {
    let out = next(&[
        "--cron",
        "0 12 * * *",
        "--tz",
        "UTC",
        "--from",
        "2026-03-28T12:00:00Z",
        "-n",
        "1",
    ]);
    assert_prints(&out, "2026-03-29T12:00:00+00:00\n");
}

#[test]
fn zero_count_prints_nothing() {
    let out = next(&[
        "--cron",
        "* * * * *",
        "--tz",
        "UTC",
        "--from",
        "2026-03-28T12:00:00Z",
        "-n",
        "0",
    ]);
    assert_prints(&out, "");
}

const FILE: &str = r#"defaults:
  timezone: Europe/Berlin
jobs:
  nightly:
    schedule: "30 2 * * *"
    command: echo nightly
  hourly:
    schedule: "0 * * * *"
    timezone: UTC
    command: echo hourly
"#;

#[test]
fn job_from_a_file() {
    let dir = temp_dir();
    let path = write(dir.path(), "jobs.yaml", FILE);
    let out = run(
        dir.path(),
        [
            "next",
            path.to_str().unwrap(),
            "--job",
            "nightly",
            "--from",
            "2026-03-28T12:00:00Z",
            "-n",
            "2",
        ],
        LIMIT,
    );
    assert_prints(
        &out,
        "2026-03-29T03:00:00+02:00\n2026-03-30T02:30:00+02:00\n",
    );
}

#[test]
fn without_job_all_fires_merge_with_names() {
    // From 00:30Z (01:30 CET): hourly fires at 01:00Z and 02:00Z; nightly's 02:30 is
    // skipped by the spring-forward gap, so it fires at 03:00 CEST, which is 01:00Z too.
    // In time order, ties by name.
    let dir = temp_dir();
    let path = write(dir.path(), "jobs.yaml", FILE);
    let out = run(
        dir.path(),
        [
            "next",
            path.to_str().unwrap(),
            "--from",
            "2026-03-29T00:30:00Z",
            "-n",
            "3",
        ],
        LIMIT,
    );
    assert_prints(
        &out,
        "2026-03-29T01:00:00+00:00 hourly\n\
         2026-03-29T03:00:00+02:00 nightly\n\
         2026-03-29T02:00:00+00:00 hourly\n",
    );
}

#[test]
fn unknown_job_fails_naming_it() {
    let dir = temp_dir();
    let path = write(dir.path(), "jobs.yaml", FILE);
    let out = run(
        dir.path(),
        ["next", path.to_str().unwrap(), "--job", "weekly"],
        LIMIT,
    );
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("`weekly`"), "{}", out.stderr);
    assert!(
        out.stderr.contains("nightly"),
        "lists the known jobs: {}",
        out.stderr
    );
}

#[test]
fn invalid_file_fails_with_its_errors() {
    let dir = temp_dir();
    let path = write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  a:\n    schedule: \"0 25 * * *\"\n    command: x\n",
    );
    let out = run(dir.path(), ["next", path.to_str().unwrap()], LIMIT);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr
            .contains(&format!("error: {}:3:15: ", path.display())),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_cron_is_an_error() {
    let out = next(&["--cron", "61 2 * * *", "--tz", "UTC"]);
    assert_ne!(out.code, Some(0), "{out:#?}");
    assert!(out.code.is_some(), "died of a signal: {out:#?}");
    assert_eq!(out.stdout, "");
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    assert!(out.stderr.contains("61"), "{}", out.stderr);
    assert!(out.stderr.contains("minute"), "{}", out.stderr);
}

#[test]
fn bad_from_is_a_usage_error() {
    let out = next(&["--cron", "30 2 * * *", "--from", "yesterday"]);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("yesterday"), "{}", out.stderr);
    assert!(out.stderr.contains("RFC 3339"), "{}", out.stderr);
}

#[test]
fn bad_zone_is_a_usage_error() {
    let out = next(&["--cron", "30 2 * * *", "--tz", "Europe/Berln"]);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert_eq!(out.stdout, "");
    assert!(out.stderr.contains("Europe/Berln"), "{}", out.stderr);
}

#[test]
fn tz_defaults_to_the_default_timezone() {
    let dir = temp_dir();
    let args = [
        "next",
        "--cron",
        "0 3 * * *",
        "--from",
        "2026-03-28T12:00:00Z",
        "-n",
        "1",
    ];
    let mut command = support::command(dir.path(), args);
    command.env("CHIME_DEFAULT_TIMEZONE", "Asia/Tokyo");
    assert_prints(&command.run(LIMIT), "2026-03-29T03:00:00+09:00\n");
    let mut with_flag = vec!["--default-timezone", "Australia/Lord_Howe"];
    with_flag.extend(args);
    // Lord Howe is on daylight saving time (+11:00) in March.
    assert_prints(
        &run(dir.path(), with_flag, LIMIT),
        "2026-03-29T03:00:00+11:00\n",
    );
}
