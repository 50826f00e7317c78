//! Each subcommand's `--help` lists only its own flags (DESIGN.md §1's table), and
//! every argument has a description (issue 12: `--shutdown-grace` and
//! `--max-concurrent-runs` were listed under `check`, `next` and `exec`, and `[PATHS]`
//! had none).

mod support;

use support::{LIMIT, run, temp_dir};

fn help(subcommand: &str) -> String {
    let dir = temp_dir();
    let out = run(dir.path(), [subcommand, "--help"], LIMIT);
    assert_eq!(out.code, Some(0), "{out:#?}");
    out.stdout
}

const ALL: &[&str] = &[
    "--log-format",
    "--log-level",
    "--default-timezone",
    "--shutdown-grace",
    "--max-concurrent-runs",
    "--max-jobs",
    "--state-dir",
    "--history-keep",
    "--history-keep-runs",
    "--listen",
    "--control-socket",
    "--cluster",
    "--cluster-password-file",
    "--cluster-member",
    "--cluster-lease",
    "--cluster-fallback",
    "--cluster-claim-ahead",
    "--cron",
    "--tz",
    "--job",
    "--from",
];

#[test]
fn each_subcommand_lists_only_its_own_flags() {
    let own: &[(&str, &[&str])] = &[
        (
            "run",
            &[
                "--log-format",
                "--log-level",
                "--default-timezone",
                "--shutdown-grace",
                "--max-concurrent-runs",
                "--max-jobs",
                "--state-dir",
                "--history-keep",
                "--history-keep-runs",
                "--listen",
                "--control-socket",
                "--cluster",
                "--cluster-password-file",
                "--cluster-member",
                "--cluster-lease",
                "--cluster-fallback",
                "--cluster-claim-ahead",
            ],
        ),
        ("check", &["--default-timezone"]),
        (
            "next",
            &["--default-timezone", "--cron", "--tz", "--job", "--from"],
        ),
        (
            "exec",
            &["--log-format", "--log-level", "--default-timezone"],
        ),
        ("status", &["--state-dir", "--control-socket", "--cluster"]),
        ("history", &["--state-dir", "--control-socket", "--cluster"]),
        ("trigger", &["--control-socket"]),
        ("pause", &["--control-socket"]),
        ("resume", &["--control-socket"]),
        ("kill", &["--control-socket"]),
        ("schema", &[]),
    ];
    for (subcommand, flags) in own {
        let text = help(subcommand);
        for flag in ALL {
            let listed = text.contains(&format!("{flag} <"));
            assert_eq!(
                listed,
                flags.contains(flag),
                "`chime {subcommand} --help` and {flag}:\n{text}"
            );
        }
    }
}

/// `--json`, a switch, only where DESIGN.md §1 lists it.
#[test]
fn json_only_on_status_and_history() {
    for subcommand in [
        "run", "check", "exec", "status", "history", "trigger", "kill",
    ] {
        let text = help(subcommand);
        assert_eq!(
            text.lines()
                .any(|line| line.trim_start().starts_with("--json")),
            matches!(subcommand, "status" | "history"),
            "`chime {subcommand} --help` and --json:\n{text}"
        );
    }
}

#[test]
fn every_argument_is_described() {
    let with_arguments = [
        "run", "check", "next", "exec", "status", "history", "trigger", "pause", "resume", "kill",
    ];
    for subcommand in with_arguments {
        let text = help(subcommand);
        let arguments = text
            .split("Arguments:\n")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .unwrap_or_else(|| panic!("no Arguments section:\n{text}"));
        for line in arguments.lines() {
            let described = line.trim().split_once("  ").map(|(_, d)| d.trim());
            assert!(
                described.is_some_and(|d| d.len() > 10),
                "`chime {subcommand} --help`: {line:?} has no description"
            );
        }
    }
}

/// Flags before the subcommand, as earlier versions took them, still work.
#[test]
fn flags_before_the_subcommand_still_work() {
    let dir = temp_dir();
    let out = run(
        dir.path(),
        [
            "--default-timezone",
            "Asia/Tokyo",
            "next",
            "--cron",
            "0 9 * * *",
            "--from",
            "2026-03-27T12:00:00Z",
            "-n",
            "1",
        ],
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert_eq!(out.stdout, "2026-03-28T09:00:00+09:00\n", "{out:#?}");
}

/// The cluster's timings out of range are refused before anything starts, saying which
/// flag and what it may be.
#[test]
fn cluster_timings_out_of_range_are_refused() {
    let dir = temp_dir();
    std::fs::write(dir.path().join("jobs.yaml"), "jobs: {}\n").expect("write");
    let jobs = dir.path().join("jobs.yaml").to_string_lossy().into_owned();
    for (flag, value, says) in [
        (
            "--cluster-lease",
            "300ms",
            "--cluster-lease must be at least 400ms",
        ),
        (
            "--cluster-claim-ahead",
            "11s",
            "--cluster-claim-ahead 11000ms is too long: at most 10s",
        ),
    ] {
        let out = run(
            dir.path(),
            [
                "run",
                "--cluster",
                "postgres://chime@127.0.0.1:1/chime",
                flag,
                value,
                &jobs,
            ],
            LIMIT,
        );
        assert_eq!(out.code, Some(1), "{flag} {value}: {out:#?}");
        assert!(out.stderr.contains(says), "{flag} {value}: {out:#?}");
    }
}
