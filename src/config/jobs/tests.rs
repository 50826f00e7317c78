//! Phase 2's rules, one test per rule, through `load_sources` on in-memory files.

use std::time::Duration;

use chrono_tz::Tz;

use super::*;
use crate::config::{Config, ConfigErrors, Source, load_sources};
use crate::cron::Schedule;
use crate::job::{Overlap, RetryPolicy};

fn opts() -> LoadOptions {
    LoadOptions {
        default_timezone: "America/New_York".parse().unwrap(),
        env: [
            ("HC_UUID", "uuid-1"),
            ("SECRET", "hunter2"),
            ("BAD", "a\nb"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        max_jobs: None,
        privileges: crate::config::Privileges::of_process(),
    }
}

fn load(text: &str) -> Result<Config, ConfigErrors> {
    let source = Source {
        path: "t.yaml".into(),
        bytes: text.as_bytes().to_vec(),
    };
    load_sources(&[source], &opts())
}

fn jobs(text: &str) -> Vec<Job> {
    match load(text) {
        Ok(config) => config.jobs,
        Err(errors) => panic!("unexpected errors:\n{errors}"),
    }
}

fn errors(text: &str) -> Vec<String> {
    match load(text) {
        Ok(config) => panic!("loaded {} jobs, expected errors", config.jobs.len()),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

/// The only error, which must start with `prefix` and contain each of `words`.
fn only_error(text: &str, prefix: &str, words: &[&str]) {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].starts_with(prefix), "{} !^ {prefix}", errors[0]);
    for word in words {
        assert!(errors[0].contains(word), "{} lacks {word:?}", errors[0]);
    }
}

/// A job `j` with the given extra lines (indented four spaces), on line 2.
fn job(lines: &str) -> String {
    let mut text = "jobs:\n  j:\n    schedule: \"0 3 * * *\"\n".to_string();
    for line in lines.lines() {
        text.push_str("    ");
        text.push_str(line);
        text.push('\n');
    }
    text
}

#[test]
fn defaults_apply_and_jobs_override_them() {
    let jobs = jobs(
        "defaults:\n  timezone: Europe/Berlin\n  timeout: 30m\n  env: { A: a, B: b }\n  \
         retry: { attempts: 3, delay: 1m }\n  overlap: allow\n  enabled: false\n  \
         kill_grace: 3s\n  starting_deadline: 5m\n  workdir: /srv\n\
         jobs:\n  plain:\n    schedule: \"@daily\"\n    command: x\n  \
         own:\n    schedule: \"@daily\"\n    command: x\n    timezone: UTC\n    \
         timeout: 1m\n    env: { B: own, C: c }\n    retry: { max_delay: 2m }\n    \
         overlap: replace\n    enabled: true\n    workdir: /tmp\n",
    );
    let [plain, own] = &jobs[..] else {
        panic!("{jobs:?}")
    };
    assert_eq!(plain.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(plain.timeout, Some(Duration::from_secs(1800)));
    assert_eq!(plain.retry.attempts, 3);
    assert_eq!(plain.retry.delay, Duration::from_secs(60));
    assert_eq!(plain.retry.max_delay, RetryPolicy::default().max_delay);
    assert_eq!(plain.overlap, Overlap::Allow);
    assert!(!plain.enabled);
    assert_eq!(plain.kill_grace, Duration::from_secs(3));
    assert_eq!(plain.starting_deadline, Some(Duration::from_secs(300)));
    assert_eq!(plain.workdir.as_deref(), Some(Path::new("/srv")));

    assert_eq!(own.timezone, Tz::UTC);
    assert_eq!(own.timeout, Some(Duration::from_secs(60)));
    let env: Vec<(&str, &str)> = own
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, [("A", "a"), ("B", "own"), ("C", "c")]);
    assert_eq!(own.retry.attempts, 3);
    assert_eq!(own.retry.max_delay, Duration::from_secs(120));
    assert_eq!(own.overlap, Overlap::Replace);
    assert!(own.enabled);
    assert_eq!(own.workdir.as_deref(), Some(Path::new("/tmp")));
}

#[test]
fn built_in_defaults() {
    let jobs = jobs(&job("command: x"));
    let job = &jobs[0];
    assert_eq!(job.timezone, opts().default_timezone);
    assert_eq!(job.timeout, None);
    assert_eq!(job.kill_grace, job::DEFAULT_KILL_GRACE);
    assert_eq!(job.retry, RetryPolicy::default());
    assert_eq!(job.overlap, Overlap::Skip);
    assert_eq!(job.starting_deadline, None);
    assert!(job.enabled && job.env.is_empty() && job.workdir.is_none());
    assert_eq!(job.source, place(Path::new("t.yaml"), 2, 3));
}

#[test]
fn a_long_retry_delay_raises_the_default_cap() {
    let jobs = jobs(&job("command: x\nretry: { attempts: 2, delay: 1h }"));
    assert_eq!(jobs[0].retry.max_delay, Duration::from_secs(3600));
}

#[test]
fn retry_conflicts_across_defaults_and_job() {
    let text = "defaults:\n  retry: { delay: 20m }\njobs:\n  j:\n    schedule: \"@daily\"\n    \
                command: x\n    retry: { max_delay: 10m }\n";
    only_error(
        text,
        "t.yaml:7:25: ",
        &["`retry.max_delay` (10m)", "(20m)", "`defaults`"],
    );
    // A conflict inside `defaults` is reported once, not once per job.
    let text = "defaults:\n  retry: { delay: 20m, max_delay: 1m }\njobs:\n  a:\n    \
                schedule: \"@daily\"\n    command: x\n  b:\n    schedule: \"@daily\"\n    \
                command: x\n";
    only_error(text, "t.yaml:2:35: ", &["`defaults.retry.max_delay` (1m)"]);
}

#[test]
fn retry_values() {
    only_error(
        &job("command: x\nretry: { attempts: 0 }"),
        "t.yaml:5:24: ",
        &["1 to 100"],
    );
    only_error(
        &job("command: x\nretry: { attempts: 101 }"),
        "t.yaml:5:24: ",
        &["`101`"],
    );
    only_error(
        &job("command: x\nretry: { attempts: 2.5 }"),
        "t.yaml:5:24: ",
        &["`2.5`"],
    );
    only_error(
        &job("command: x\nretry: 3"),
        "t.yaml:5:12: ",
        &["must be a mapping"],
    );
    let jobs = jobs(&job(
        "command: x\nretry: { attempts: 100, delay: 0s, max_delay: 0s }",
    ));
    assert_eq!(jobs[0].retry.attempts, 100);
    assert_eq!(jobs[0].retry.max_delay, Duration::ZERO);
}

#[test]
fn scalars_in_env_and_argv_are_taken_as_written() {
    let jobs = jobs(&job(
        "command: [\"sleep\", 5, 1.50, true]\nenv: { PORT: 0x10, DEBUG: True, X: '' }",
    ));
    let job = &jobs[0];
    assert_eq!(
        job.action,
        Action::Shell(ShellCommand::Argv(vec![
            "sleep".into(),
            "5".into(),
            "1.50".into(),
            "true".into()
        ]))
    );
    assert_eq!(job.env["PORT"], "0x10");
    assert_eq!(job.env["DEBUG"], "True");
    assert_eq!(job.env["X"], "");
}

#[test]
fn env_rules() {
    only_error(
        &job("command: x\nenv: { 1X: a }"),
        "t.yaml:5:12: ",
        &["`1X`", "variable name"],
    );
    only_error(
        &job("command: x\nenv: { A: }"),
        "t.yaml:5:13: ",
        &["`env.A` has no value"],
    );
    only_error(
        &job("command: x\nenv: { A: [1] }"),
        "t.yaml:5:15: ",
        &["must be a string"],
    );
    only_error(
        &job("command: x\nenv: [A]"),
        "t.yaml:5:10: ",
        &["must be a mapping"],
    );
    only_error(
        &job("command: x\nenv: { A: \"\\0\" }"),
        "t.yaml:5:15: ",
        &["NUL"],
    );
}

#[test]
fn interpolation_and_secrets() {
    let text = job(
        "http:\n  url: \"https://hc/${HC_UUID}?k=${SECRET}\"\n  headers: { X-Key: \"${SECRET}\" }\n  \
         body: \"${SECRET}$${LITERAL}\"",
    );
    let jobs = jobs(&text);
    let Action::Http(request) = &jobs[0].action else {
        panic!("not http")
    };
    assert_eq!(request.url, "https://hc/uuid-1?k=hunter2");
    assert_eq!(request.url_template, "https://hc/${HC_UUID}?k=${SECRET}");
    assert_eq!(
        request.headers,
        [("X-Key".to_string(), "hunter2".to_string())]
    );
    assert_eq!(request.body.as_deref(), Some("hunter2${LITERAL}"));
    assert_eq!(request.method, "GET");
    assert!(request.expect_status.is_empty());

    let errors = errors(&job(
        "http:\n  url: \"${SECRET}\"\n  headers: { A: \"${BAD}\", B: \"${NOPE}\" }\n  \
         body: \"${NOPE}${1X}${\"",
    ));
    let all = errors.join("\n");
    assert!(!all.contains("hunter2") && !all.contains("a\nb"), "{all}");
    assert_eq!(errors.len(), 6, "{all}");
    assert!(errors[0].starts_with("t.yaml:5:12: `http.url` \"${SECRET}\" is not a valid URL"));
    assert!(errors[0].contains("after interpolation"), "{}", errors[0]);
    assert!(errors[1].starts_with("t.yaml:6:21: `http.headers.A` has a character"));
    assert!(errors[2].starts_with("t.yaml:6:34: `http.headers.B` uses `${NOPE}`"));
    assert!(errors[3].starts_with("t.yaml:7:13: `http.body` uses `${NOPE}`, but NOPE is not set"));
    assert!(errors[4].contains("`${1X}`, which is not a variable name"));
    assert!(errors[5].contains("without a closing"));
}

#[test]
fn url_rules() {
    for (url, words) in [
        ("/relative", "is not a valid URL"),
        ("ftp://host/x", "must start with http:// or https://"),
        ("mailto:x@example.com", "must start with http://"),
        ("https://", "is not a valid URL"),
    ] {
        let text = job(&format!("http:\n  url: \"{url}\""));
        only_error(
            &text,
            "t.yaml:5:12: ",
            &["`http.url`", words, "absolute URL"],
        );
    }
    only_error(
        &job("http:\n  url: 5"),
        "t.yaml:5:12: ",
        &["must be a string"],
    );
    only_error(
        &job("http: { method: GET }"),
        "t.yaml:4:5: ",
        &["`http` has no `url`"],
    );
    only_error(
        &job("http: https://x"),
        "t.yaml:4:11: ",
        &["must be a mapping"],
    );
}

#[test]
fn http_values() {
    let jobs = jobs(&job(
        "http: { url: \"http://x\", method: patch, expect_status: 304 }",
    ));
    let Action::Http(request) = &jobs[0].action else {
        panic!("not http")
    };
    assert_eq!(request.method, "PATCH");
    assert_eq!(request.expect_status, [304]);
    only_error(
        &job("http: { url: \"http://x\", method: FETCH }"),
        "t.yaml:4:38: ",
        &["`GET`"],
    );
    only_error(
        &job("http: { url: \"http://x\", expect_status: [] }"),
        "t.yaml:4:45: ",
        &["empty list"],
    );
    only_error(
        &job("http: { url: \"http://x\", expect_status: [99] }"),
        "t.yaml:4:46: ",
        &["`99` is not an HTTP status", "100 to 599"],
    );
    only_error(
        &job("http: { url: \"http://x\", headers: { \"a b\": x } }"),
        "t.yaml:4:41: ",
        &["`http.headers.a b` is not a valid header name"],
    );
    only_error(
        &job("http: { url: \"http://x\", body: 5 }"),
        "t.yaml:4:36: ",
        &["quote it"],
    );
}

#[test]
fn unknown_keys_get_hints() {
    only_error(
        &job("command: x\ntimout: 5m"),
        "t.yaml:5:5: ",
        &["unknown key `timout`; did you mean `timeout`?"],
    );
    only_error(
        &job("command: x\ntz: UTC"),
        "t.yaml:5:5: ",
        &["did you mean `timezone`?"],
    );
    only_error(
        &job("command: x\nENV: {}"),
        "t.yaml:5:5: ",
        &["did you mean `env`?"],
    );
    only_error(
        &job("command: x\nattempts: 3"),
        "t.yaml:5:5: ",
        &["belongs under `retry:`"],
    );
    only_error(
        &job("command: x\nfrobnicate: 1"),
        "t.yaml:5:5: ",
        &["a job takes `schedule`, `command`"],
    );
    // The hint stands for the missing `command`; no second error about it.
    only_error(
        &job("cmd: x"),
        "t.yaml:4:5: ",
        &["unknown key `cmd`; did you mean `command`?"],
    );
    only_error(
        "jobs:\n  j:\n    schedul: \"@daily\"\n    command: x\n",
        "t.yaml:3:5: ",
        &["did you mean `schedule`?"],
    );
}

#[test]
fn job_names() {
    only_error(
        "jobs:\n  \"a b\": { schedule: \"@daily\", command: x }\n",
        "t.yaml:2:3: ",
        &["job name `a b`", "rename"],
    );
    only_error(
        "jobs:\n  \"\": { schedule: \"@daily\", command: x }\n",
        "t.yaml:2:3: ",
        &["job name is empty"],
    );
    only_error(
        "jobs:\n  \"a\\nb\": { schedule: \"@daily\", command: x }\n",
        "t.yaml:2:3: ",
        &["`a\\nb`"],
    );
    let jobs = jobs(
        "jobs:\n  123: { schedule: \"@daily\", command: x }\n  a.b_c-D: { schedule: \"@daily\", command: x }\n",
    );
    assert_eq!(jobs[0].name, "123");
    assert_eq!(jobs[1].name, "a.b_c-D");
    only_error(
        "jobs:\n  a: { schedule: \"@daily\", command: x }\n  a: { schedule: \"@daily\", command: y }\n",
        "t.yaml:3:3: ",
        &["job `a` is defined twice: here and at t.yaml:2:3; rename one"],
    );
}

#[test]
fn file_shapes() {
    for empty in ["", "# only a comment\n", "~\n", "---\n"] {
        only_error(
            empty,
            "t.yaml: the file is empty; add a `jobs:` mapping",
            &[],
        );
    }
    only_error(
        "- a\n- b\n",
        "t.yaml:1:1: ",
        &["must be a mapping", "not a list"],
    );
    only_error("hello\n", "t.yaml:1:1: ", &["not a string"]);
    only_error("defaults: {}\n", "t.yaml:1:1: ", &["no `jobs:` mapping"]);
    only_error("jobs:\n", "t.yaml:1:1: ", &["`jobs` is empty"]);
    only_error(
        "jobs:\n  - a: 1\n",
        "t.yaml:2:3: ",
        &["not a list", "no `-`"],
    );
    only_error("jobs: 5\n", "t.yaml:1:7: ", &["`jobs` must be a mapping"]);
    only_error(
        "jobs: {}\nextra: 1\n",
        "t.yaml:2:1: ",
        &["unknown key `extra`", "`defaults`, `jobs`"],
    );
    only_error("job: {}\n", "t.yaml:1:1: ", &["did you mean `jobs`?"]);
    only_error(
        "jobs: {}\nschedule: x\n",
        "t.yaml:2:1: ",
        &["belongs to a job"],
    );
    only_error(
        "jobs: {}\nbackup:\n  schedule: \"@daily\"\n",
        "t.yaml:2:1: ",
        &["`backup` looks like a job", "under `jobs:`"],
    );
    only_error(
        "defaults: 5\njobs: {}\n",
        "t.yaml:1:11: ",
        &["`defaults` must be a mapping"],
    );
    assert!(jobs("jobs: {}\n").is_empty());
    assert!(jobs("defaults:\njobs: {}\n").is_empty());
}

#[test]
fn defaults_refuse_job_only_keys() {
    for key in ["schedule", "command", "http"] {
        only_error(
            &format!("defaults:\n  {key}: x\njobs: {{}}\n"),
            "t.yaml:2:3: ",
            &[&format!("`{key}` cannot be a default"), "set `"],
        );
    }
    only_error(
        "defaults:\n  timout: 1m\njobs: {}\n",
        "t.yaml:2:3: ",
        &["unknown key `defaults.timout`; did you mean `timeout`?"],
    );
}

#[test]
fn durations() {
    only_error(
        &job("command: x\ntimeout: 30"),
        "t.yaml:5:14: ",
        &["bare number `30`", "`30s`"],
    );
    only_error(
        &job("command: x\ntimeout: 0s"),
        "t.yaml:5:14: ",
        &["longer than zero"],
    );
    only_error(
        &job("command: x\nstarting_deadline: 0ms"),
        "t.yaml:5:24: ",
        &["longer than zero"],
    );
    only_error(
        &job("command: x\nkill_grace: 5x"),
        "t.yaml:5:17: ",
        &["`kill_grace`:", "unknown unit `x`"],
    );
    only_error(
        &job("command: x\ntimeout: 1.5"),
        "t.yaml:5:14: ",
        &["must be a duration, not a number `1.5`"],
    );
    only_error(
        &job("command: x\ntimeout:"),
        "t.yaml:5:12: ",
        &["`timeout` is empty"],
    );
    let jobs = jobs(&job("command: x\ntimeout: 1h30m\nstarting_deadline: 500ms"));
    assert_eq!(jobs[0].timeout, Some(Duration::from_secs(5400)));
    assert_eq!(jobs[0].starting_deadline, Some(Duration::from_millis(500)));
}

#[test]
fn booleans_are_true_or_false_only() {
    for word in ["yes", "on", "no", "1", "\"true\""] {
        only_error(
            &job(&format!("command: x\nenabled: {word}")),
            "t.yaml:5:14: ",
            &["`enabled` must be true or false", "use true or false"],
        );
    }
    assert!(!jobs(&job("command: x\nenabled: False"))[0].enabled);
}

#[test]
fn schedules() {
    only_error(
        "jobs:\n  j:\n    command: x\n",
        "t.yaml:2:3: ",
        &["job `j` has no `schedule`"],
    );
    only_error(
        "jobs:\n  j:\n    schedule: 5\n    command: x\n",
        "t.yaml:3:15: ",
        &["must be a string", "quote it"],
    );
    only_error(
        "jobs:\n  j:\n    schedule:\n    command: x\n",
        "t.yaml:3:13: ",
        &["`schedule` is empty"],
    );
    only_error(
        "jobs:\n  j:\n    schedule: \"0 25 * * *\"\n    command: x\n",
        "t.yaml:3:15: ",
        &["`schedule`: hour field", "out of range"],
    );
    only_error(
        "jobs:\n  j:\n    schedule: \"0 0 30 2 *\"\n    command: x\n",
        "t.yaml:3:15: ",
        &["never fires"],
    );
    let config = load("jobs:\n  j:\n    schedule: \"* 0 3 * * *\"\n    command: x\n  r:\n    schedule: \"@reboot\"\n    command: x\n").unwrap();
    assert_eq!(config.jobs[1].schedule, Schedule::Reboot);
    assert_eq!(config.warnings.len(), 1);
    let warning = config.warnings[0].to_string();
    assert!(
        warning.starts_with("t.yaml:3:15: `schedule`: the seconds field is `*`"),
        "{warning}"
    );
}

#[test]
fn command_and_http_exclusive() {
    only_error(
        &job("command: x\nhttp: { url: \"http://x\" }"),
        "t.yaml:5:5: ",
        &["both `command` and `http`"],
    );
    only_error(&job(""), "t.yaml:2:3: ", &["neither `command` nor `http`"]);
    // Both are still checked, so their own errors show too.
    let errors = errors(&job("command: []\nhttp: { url: 5 }"));
    assert_eq!(errors.len(), 3, "{errors:#?}");
}

#[test]
fn command_forms() {
    only_error(
        &job("command: \"  \""),
        "t.yaml:4:14: ",
        &["`command` is empty"],
    );
    only_error(&job("command: []"), "t.yaml:4:14: ", &["empty list"]);
    only_error(
        &job("command: [\"\", a]"),
        "t.yaml:4:15: ",
        &["`command[0]`", "is empty"],
    );
    only_error(
        &job("command: [a, [b]]"),
        "t.yaml:4:18: ",
        &["`command[1]` must be a string"],
    );
    only_error(
        &job("command: {a: b}"),
        "t.yaml:4:14: ",
        &["must be a string or a list"],
    );
    let jobs = jobs(&job("command: |\n  set -e\n  echo hi"));
    assert_eq!(
        jobs[0].action,
        Action::Shell(ShellCommand::Script("set -e\necho hi\n".into()))
    );
}

#[test]
fn duplicate_keys_are_located() {
    only_error(
        &job("command: x\ncommand: y"),
        "t.yaml:5:5: ",
        &["`command` is given twice (first at line 4, column 5)"],
    );
    only_error(
        &job("command: x\nenv: { A: 1, A: 2 }"),
        "t.yaml:5:18: ",
        &["`env.A` is given twice"],
    );
}

#[test]
fn timezones() {
    only_error(
        &job("command: x\ntimezone: Europe/Berln"),
        "t.yaml:5:15: ",
        &["unknown time zone `Europe/Berln`; did you mean `Europe/Berlin`?"],
    );
    only_error(
        &job("command: x\ntimezone: europe/berlin"),
        "t.yaml:5:15: ",
        &["did you mean `Europe/Berlin`?"],
    );
    only_error(
        &job("command: x\ntimezone: Berlin"),
        "t.yaml:5:15: ",
        &["did you mean `Europe/Berlin`?"],
    );
    only_error(
        &job("command: x\ntimezone: Mars/Olympus_Mons"),
        "t.yaml:5:15: ",
        &["IANA name"],
    );
    only_error(
        &job("command: x\ntimezone: 5"),
        "t.yaml:5:15: ",
        &["time zone name"],
    );
    assert_eq!(
        jobs(&job("command: x\ntimezone: Asia/Kolkata"))[0].timezone,
        chrono_tz::Asia::Kolkata
    );
}

#[test]
fn workdir_and_overlap() {
    only_error(
        &job("command: x\nworkdir: data"),
        "t.yaml:5:14: ",
        &["absolute path", "`data`"],
    );
    only_error(
        &job("command: x\nworkdir: \"\""),
        "t.yaml:5:14: ",
        &["not empty"],
    );
    only_error(
        &job("command: x\noverlap: skipp"),
        "t.yaml:5:14: ",
        &["skip, allow or replace", "did you mean `skip`?"],
    );
    only_error(
        &job("command: x\noverlap: queue"),
        "t.yaml:5:14: ",
        &["not `queue`"],
    );
}

#[test]
fn errors_come_in_file_order() {
    let errors = errors(
        "jobs:\n  a:\n    timeout: 5\n    command: []\n  b:\n    schedule: x\n    command: x\n",
    );
    let lines: Vec<&str> = errors.iter().map(|e| &e[..e.find(": ").unwrap()]).collect();
    assert_eq!(
        lines,
        ["t.yaml:2:3", "t.yaml:3:14", "t.yaml:4:14", "t.yaml:6:15"]
    );
}

#[test]
fn invalid_utf8_is_located() {
    let source = Source {
        path: "t.yaml".into(),
        bytes: b"jobs:\n  \xc3\xa9t\xe9: x\n".to_vec(),
    };
    let errors = load_sources(&[source], &opts()).unwrap_err();
    let message = errors.to_string();
    assert!(
        message.starts_with("t.yaml:2:5: the file is not valid UTF-8 (byte 0xe9"),
        "{message}"
    );
}

#[test]
fn errors_across_files_and_cross_file_duplicates() {
    let a = Source {
        path: "a.yaml".into(),
        bytes: b"jobs:\n  x: { schedule: \"@daily\", command: x }\n  bad: { command: x }\n"
            .to_vec(),
    };
    let b = Source {
        path: "b.yaml".into(),
        bytes: b"jobs:\n  x: { schedule: \"@daily\", command: x }\n  y: [\n".to_vec(),
    };
    let c = Source {
        path: "c.yaml".into(),
        bytes: b"jobs:\n  x: { schedule: \"@daily\", command: x }\n".to_vec(),
    };
    let errors: Vec<String> = load_sources(&[a, b, c], &opts())
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].starts_with("a.yaml:3:3: job `bad` has no `schedule`"));
    assert!(
        errors[1].starts_with("b.yaml:3:6: invalid YAML: unclosed bracket"),
        "{}",
        errors[1]
    );
    assert!(errors[2].starts_with("c.yaml:2:3: job `x` is defined twice: here and at a.yaml:2:3"));
}

/// Files are checked in parallel, but a name defined twice is still reported in its
/// file's place, in file order, and among the other errors at its key where checking the
/// files one by one put it.
#[test]
fn names_twice_across_many_files_keep_their_place() {
    let sources: Vec<Source> = (0..12)
        .map(|index| Source {
            path: format!("f{index:02}.yaml").into(),
            bytes: format!(
                "jobs:\n  own-{index}: {{ schedule: \"@daily\", command: x }}\n  \"a b\":\n  \
                 late-{index}: {{ command: x }}\n"
            )
            .into_bytes(),
        })
        .collect();
    let errors: Vec<String> = load_sources(&sources, &opts())
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errors.len(), 3 + 11 * 4, "{errors:#?}");
    assert!(errors[0].starts_with("f00.yaml:3:3: job name `a b` may contain only"));
    assert!(errors[1].starts_with("f00.yaml:3:3: job `a b` is empty"));
    assert!(errors[2].starts_with("f00.yaml:4:3: job `late-0` has no `schedule`"));
    for index in 1..12 {
        let file = &errors[index * 4 - 1..index * 4 + 3];
        let name = format!("f{index:02}.yaml");
        assert!(file[0].starts_with(&format!("{name}:3:3: job name `a b` may contain only")));
        assert_eq!(
            file[1],
            format!("{name}:3:3: job `a b` is defined twice: here and at f00.yaml:3:3; rename one")
        );
        assert!(file[2].starts_with(&format!("{name}:3:3: job `a b` is empty")));
        assert!(file[3].starts_with(&format!("{name}:4:3: job `late-{index}` has no `schedule`")));
    }
}

fn load_as(text: &str, euid: u32, check_only: bool) -> Result<Config, ConfigErrors> {
    let source = Source {
        path: "t.yaml".into(),
        bytes: text.as_bytes().to_vec(),
    };
    let mut opts = opts();
    opts.privileges = crate::config::Privileges {
        euid,
        allow_writable: false,
        check_only,
    };
    load_sources(&[source], &opts)
}

#[test]
fn user_and_group_are_looked_up_and_merged_over_defaults() {
    let text = "defaults:\n  user: nobody\n  env_inherit: true\njobs:\n  \
                a:\n    schedule: \"@daily\"\n    command: x\n  \
                b:\n    schedule: \"@daily\"\n    command: x\n    group: root\n    \
                env_inherit: false\n";
    let config = load_as(text, 0, false).unwrap_or_else(|e| panic!("{e}"));
    let [a, b] = &config.jobs[..] else {
        panic!("two jobs")
    };
    let run_as = a.run_as.as_ref().unwrap();
    assert_eq!(run_as.user.as_ref().unwrap().uid, 65534);
    assert_eq!(run_as.group, None);
    assert!(a.env_inherit && !b.env_inherit);
    let run_as = b.run_as.as_ref().unwrap();
    assert_eq!(run_as.user.as_ref().unwrap().name, "nobody");
    assert_eq!(run_as.group, Some(("root".to_string(), 0)));
}

#[test]
fn user_as_non_root_is_an_error_for_run_and_a_warning_for_check() {
    let text = job("command: x\nuser: nobody");
    let errors = load_as(&text, 1000, false).unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    let error = errors.0[0].to_string();
    assert!(
        error.starts_with("t.yaml:5:11: `user` needs chime to run as root")
            && error.contains("runs as uid 1000"),
        "{error}"
    );
    let config = load_as(&text, 1000, true).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.warnings.len(), 1);
    assert!(
        config.warnings[0]
            .to_string()
            .contains("`chime run` refuses it")
    );
    assert!(config.jobs[0].run_as.is_some());
}

#[test]
fn env_values_take_variables_and_secrets_and_debug_hides_them() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "file-secret\n").unwrap();
    let text = job(&format!(
        "command: x\nenv: {{ A: \"${{SECRET}}\", B: \"${{file:{}}}\", C: \"$${{x}} $y\" }}",
        secret.display()
    ));
    let jobs = jobs(&text);
    assert_eq!(jobs[0].env["A"], "hunter2");
    assert_eq!(jobs[0].env["B"], "file-secret");
    assert_eq!(jobs[0].env["C"], "${x} $y");
    let shown = format!("{:?}", jobs[0]);
    assert!(
        !shown.contains("hunter2") && !shown.contains("file-secret"),
        "{shown}"
    );
    // A missing file: the error names the file and the key, at the value.
    only_error(
        &job("command: x\nenv: { T: \"${file:/nonexistent/chime-token}\" }"),
        "t.yaml:5:15: `env.T` uses `${file:/nonexistent/chime-token}`",
        &["cannot read `/nonexistent/chime-token`: No such file or directory"],
    );
}
