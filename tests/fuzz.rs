//! Fuzzing on stable: property tests that feed the YAML loader and the cron parser
//! arbitrary bytes and mutations of valid input (bytes and lines inserted, deleted,
//! replaced; YAML and cron tokens spliced in).
//!
//! The properties, for every input: no panic; an answer within [`BOUND`] (a hang
//! detector, not a performance figure); every error says where (the file, and a line
//! inside it) and what. A schedule that parses is also evaluated, so the engine sees the
//! odd expressions the parser lets through.
//!
//! The default case counts keep the whole file under a minute in CI's debug build.
//! A longer run: `PROPTEST_CASES=200000 cargo test --release --test fuzz` (see README).
//! Each panic found becomes a named test in the regression section at the end.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chime::config::{ConfigErrors, LoadOptions, Source, load_sources};
use chime::cron::Schedule;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;

/// Longest any single input may take. Far above what one needs (milliseconds), so only
/// a hang or a blow-up trips it, even on a busy machine in a debug build.
const BOUND: Duration = Duration::from_secs(5);

/// The valid files mutations start from: the repository's examples, and shapes they do
/// not use (anchors and merge keys, flow style, block scalars, HTTP with variables).
const SEEDS: &[&str] = &[
    include_str!("../schedules/backup.yaml"),
    include_str!("../schedules/basics.yaml"),
    include_str!("../schedules/calendar.yaml"),
    include_str!("../schedules/http.yaml"),
    "defaults: &d\n  timezone: Europe/Berlin\n  retry: { attempts: 3, delay: 1s, max_delay: 1m }\n\
     jobs:\n  a:\n    <<: *d\n    schedule: \"0 30 2 * * *\"\n    command: [\"/bin/echo\", \"a\"]\n  \
     b: { schedule: '@every 1h30m', command: \"true\", overlap: allow, enabled: true }\n",
    "jobs:\n  script:\n    schedule: \"0 9 L * 5L\"\n    command: |\n      set -e\n      echo \"${HOME}\"\n    \
     env:\n      A: \"1\"\n      B: 0x10\n    workdir: /tmp\n    timeout: 2d\n    kill_grace: 500ms\n",
    "jobs:\n  ping:\n    schedule: \"*/5 * * * *\"\n    http:\n      url: \"https://x/${HC_UUID}\"\n      \
     method: POST\n      headers: { Authorization: \"Bearer ${HC_TOKEN}\" }\n      body: '{\"ok\": true}'\n      \
     expect_status: [200, 204]\n    starting_deadline: 30s\n",
];

/// Pieces of YAML and cron syntax that are likelier than random bytes to reach deep
/// into the parsers: indicators, anchors, tags, keys, numbers at the edges of their types.
const TOKENS: &[&str] = &[
    ":",
    ": ",
    "- ",
    "? ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\"",
    "'",
    "|",
    ">",
    "#",
    "&a ",
    "*a",
    "<<: *a",
    "!!str ",
    "!!binary ",
    "!tag ",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "\t",
    "\r\n",
    "\n",
    "  ",
    "~",
    "null",
    "yes",
    "true",
    "0x",
    "0o7",
    "1e999",
    "-.inf",
    ".nan",
    "99999999999999999999999",
    "-9223372036854775809",
    "\u{feff}",
    "\u{0}",
    "é",
    "\u{2028}",
    "jobs",
    "defaults",
    "schedule",
    "command",
    "http",
    "url",
    "retry",
    "attempts",
    "delay",
    "max_delay",
    "timeout",
    "timezone",
    "env",
    "overlap",
    "enabled",
    "${",
    "${X:-",
    "$${",
    "}",
    "@every ",
    "@reboot",
    "@daily",
    "* ",
    "*/",
    "L",
    "5L",
    "1#5",
    "W",
    "?",
    "SUN-SAT",
    "JAN",
    "0-59/7",
    "60",
    "24",
    "32",
    "13",
    "8",
    "2147483648",
    "4294967296",
    "1h30m",
    "0ms",
    "99999d",
    "Europe/Berlin",
    "Australia/Lord_Howe",
    "America/Santiago",
];

/// Cron expressions mutations start from: every feature of DESIGN.md §3.
const CRON_SEEDS: &[&str] = &[
    "30 2 * * *",
    "*/5 * * * *",
    "0 9 * * MON-FRI",
    "0 0 L * *",
    "0 9 * * 5L",
    "0 10 * * 1#2",
    "15 */2 1,15 * *",
    "0 30 7 * * *",
    "*/10 * * * * *",
    "23 0-20/2 * * *",
    "0 0 29 2 *",
    "0 0 31 4 *",
    "0 12 * JAN,jul sun",
    "0 0 1-7 * 7",
    "@hourly",
    "@yearly",
    "@every 90s",
    "@every 1h30m",
    "@reboot",
];

const ZONES: &[Tz] = &[
    Tz::UTC,
    Tz::Europe__Berlin,
    Tz::America__New_York,
    Tz::Australia__Lord_Howe,
    Tz::America__Santiago,
    Tz::Pacific__Apia,
];

/// Case counts: `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default);
    Config {
        cases,
        // A failing case is shrunk to a small input; the shrink itself stays bounded.
        max_shrink_iters: 4096,
        ..Config::default()
    }
}

fn options() -> LoadOptions {
    LoadOptions {
        default_timezone: chime::zone::Zone::UTC,
        env: [
            ("HC_UUID", "1234"),
            ("HC_TOKEN", "secret"),
            ("HOME", "/root"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect(),
        max_jobs: None,
        privileges: chime::config::Privileges::of_process(),
    }
}

/// One change to a byte string; positions are fractions of the length, so they stay
/// valid whatever the earlier changes did to it.
#[derive(Debug, Clone)]
enum Mutation {
    InsertByte(Index, u8),
    DeleteByte(Index),
    ReplaceByte(Index, u8),
    InsertToken(Index, usize),
    ReplaceWithToken(Index, usize, usize),
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    /// Moves a line's indentation by -2..=2 spaces.
    Reindent(Index, i8),
}

/// Mostly printable ASCII: a random byte is usually not UTF-8, which ends the file's
/// check before the YAML parser sees it.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![4 => 0x20..0x7fu8, 1 => any::<u8>()]
}

fn mutation(tokens: usize) -> impl Strategy<Value = Mutation> {
    let token = 0..tokens;
    prop_oneof![
        (any::<Index>(), byte()).prop_map(|(at, b)| Mutation::InsertByte(at, b)),
        any::<Index>().prop_map(Mutation::DeleteByte),
        (any::<Index>(), byte()).prop_map(|(at, b)| Mutation::ReplaceByte(at, b)),
        (any::<Index>(), token.clone()).prop_map(|(at, t)| Mutation::InsertToken(at, t)),
        (any::<Index>(), token, 1..8usize)
            .prop_map(|(at, t, len)| Mutation::ReplaceWithToken(at, t, len)),
        any::<Index>().prop_map(Mutation::DeleteLine),
        any::<Index>().prop_map(Mutation::DuplicateLine),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (any::<Index>(), -2..=2i8).prop_map(|(at, by)| Mutation::Reindent(at, by)),
    ]
}

/// `index` as a position in `0..=len` (insertion points include the end).
fn point(index: &Index, len: usize) -> usize {
    index.index(len + 1)
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation, tokens: &[&str]) {
    match mutation {
        Mutation::InsertByte(at, byte) => {
            let at = point(at, bytes.len());
            bytes.insert(at, *byte);
        }
        Mutation::DeleteByte(at) if !bytes.is_empty() => {
            bytes.remove(at.index(bytes.len()));
        }
        Mutation::ReplaceByte(at, byte) if !bytes.is_empty() => {
            let at = at.index(bytes.len());
            bytes[at] = *byte;
        }
        Mutation::InsertToken(at, token) => {
            let at = point(at, bytes.len());
            bytes.splice(at..at, tokens[*token].bytes());
        }
        Mutation::ReplaceWithToken(at, token, len) => {
            let at = point(at, bytes.len());
            let end = (at + len).min(bytes.len());
            bytes.splice(at..end, tokens[*token].bytes());
        }
        Mutation::DeleteLine(at) => edit_lines(bytes, |lines| {
            if !lines.is_empty() {
                lines.remove(at.index(lines.len()));
            }
        }),
        Mutation::DuplicateLine(at) => edit_lines(bytes, |lines| {
            if !lines.is_empty() {
                let at = at.index(lines.len());
                lines.insert(at, lines[at].clone());
            }
        }),
        Mutation::SwapLines(a, b) => edit_lines(bytes, |lines| {
            if !lines.is_empty() {
                let (a, b) = (a.index(lines.len()), b.index(lines.len()));
                lines.swap(a, b);
            }
        }),
        Mutation::Reindent(at, by) => edit_lines(bytes, |lines| {
            if !lines.is_empty() {
                let at = at.index(lines.len());
                let line = &mut lines[at];
                if *by > 0 {
                    line.splice(0..0, std::iter::repeat_n(b' ', *by as usize));
                } else {
                    let spaces = line.iter().take_while(|b| **b == b' ').count();
                    line.drain(..spaces.min(by.unsigned_abs() as usize));
                }
            }
        }),
        // Deleting or replacing a byte of nothing leaves nothing.
        Mutation::DeleteByte(_) | Mutation::ReplaceByte(..) => {}
    }
}

fn edit_lines(bytes: &mut Vec<u8>, edit: impl FnOnce(&mut Vec<Vec<u8>>)) {
    let mut lines: Vec<Vec<u8>> = bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    edit(&mut lines);
    *bytes = lines.join(&b'\n');
}

fn mutated(
    seeds: &'static [&'static str],
    tokens: &'static [&'static str],
    most: usize,
) -> impl Strategy<Value = Vec<u8>> {
    (
        0..seeds.len(),
        prop::collection::vec(mutation(tokens.len()), 1..=most),
    )
        .prop_map(move |(seed, mutations)| {
            let mut bytes = seeds[seed].as_bytes().to_vec();
            for mutation in &mutations {
                apply(&mut bytes, mutation, tokens);
            }
            bytes
        })
}

/// Loads `bytes` as `fuzz.yaml` beside a valid file, and checks the properties.
fn check_load(bytes: &[u8]) {
    let path = PathBuf::from("schedules/fuzz.yaml");
    let other = PathBuf::from("schedules/other.yaml");
    let sources = [
        Source {
            path: path.clone(),
            bytes: bytes.to_vec(),
        },
        // Job names are compared across files: a fuzzed name may clash with this one.
        Source {
            path: other.clone(),
            bytes: b"jobs:\n  nightly-backup: { schedule: \"@daily\", command: x }\n".to_vec(),
        },
    ];
    let started = Instant::now();
    let result = load_sources(&sources, &options());
    let took = started.elapsed();
    assert!(took < BOUND, "loading took {took:?}");
    match result {
        Ok(config) => {
            for job in &config.jobs {
                evaluate(&job.schedule, job.timezone, epoch(1_774_000_000));
            }
        }
        Err(errors) => assert_located(&errors, &path, &other, bytes),
    }
    // The `--max-jobs` count stops parsing part-way; that path must hold up too. The
    // valid file's one job leaves room for one more.
    if let Err(errors) = load_sources(&sources, &options().with_max_jobs(2)) {
        assert!(!errors.0.is_empty(), "a rejection without errors");
        for error in &errors.0 {
            assert!(error.message.trim().len() >= 10, "{error:?}");
        }
    }
}

/// Every error is about one of the two files, at a line that exists in it (or 0 for the
/// whole file), and says something.
#[track_caller]
fn assert_located(errors: &ConfigErrors, fuzzed: &Path, other: &Path, bytes: &[u8]) {
    assert!(!errors.0.is_empty(), "a rejection without errors");
    let lines = yaml_lines(bytes);
    for error in &errors.0 {
        let location = error
            .location
            .as_ref()
            .unwrap_or_else(|| panic!("an error without a file: {error}"));
        assert!(
            location.file == fuzzed || location.file == other,
            "an error about another file: {error}"
        );
        if location.file == fuzzed {
            assert!(
                location.line <= lines,
                "line {} of a {lines}-line file: {error}",
                location.line
            );
        }
        assert!(
            location.line > 0 || location.column == 0,
            "a column without a line: {error}"
        );
        assert!(
            error.message.trim().len() >= 10,
            "an error that says nothing: {error:?}"
        );
    }
}

/// Lines as YAML counts them: `\r\n`, `\n` and a lone `\r` each end one (the parser
/// gives locations in these terms, as editors that accept old Mac files show them).
fn yaml_lines(bytes: &[u8]) -> u64 {
    let breaks = bytes
        .iter()
        .enumerate()
        .filter(|&(at, byte)| {
            *byte == b'\n' || (*byte == b'\r' && bytes.get(at + 1) != Some(&b'\n'))
        })
        .count();
    breaks as u64 + 1
}

fn epoch(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("in range")
}

/// The engine on a schedule the parser accepted: a few fires, strictly increasing.
fn evaluate(schedule: &Schedule, tz: impl Into<chime::zone::Zone>, from: DateTime<Utc>) {
    let tz: chime::zone::Zone = tz.into();
    let _ = schedule.warnings();
    let _ = schedule.min_gap();
    let mut last = from;
    for fire in schedule.fires_after(tz, from).take(3) {
        assert!(fire > last, "{schedule:?} in {tz}: {fire} after {last}");
        last = fire;
    }
}

/// Parses `text` and checks the properties.
fn check_cron(text: &str, zone: usize, from: i64) {
    let started = Instant::now();
    match Schedule::parse(text) {
        Ok(schedule) => evaluate(&schedule, ZONES[zone], epoch(from)),
        Err(err) => assert!(
            err.message.trim().len() >= 10,
            "an error that says nothing for {text:?}: {err:?}"
        ),
    }
    let took = started.elapsed();
    assert!(took < BOUND, "{text:?} took {took:?}");
}

/// Instants from 1970 to 2200: DST rules past and future, and the years near the ends
/// of what zones describe.
fn instant() -> impl Strategy<Value = i64> {
    prop_oneof![
        0..7_258_118_400i64,
        // Around today's DST transitions, where the engine works hardest.
        1_700_000_000..1_900_000_000i64,
    ]
}

proptest! {
    #![proptest_config(cases(300))]

    #[test]
    fn loader_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_load(&bytes);
    }

    #[test]
    fn loader_survives_yaml_like_text(text in "[ -~\t\n]{0,300}") {
        check_load(text.as_bytes());
    }
}

proptest! {
    #![proptest_config(cases(1500))]

    #[test]
    fn loader_survives_mutated_schedule_files(bytes in mutated(SEEDS, TOKENS, 6)) {
        check_load(&bytes);
    }

    #[test]
    fn cron_parser_survives_mutated_expressions(
        text in mutated(CRON_SEEDS, TOKENS, 4)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        zone in 0..ZONES.len(),
        from in instant(),
    ) {
        check_cron(&text, zone, from);
    }

    #[test]
    fn cron_parser_survives_cron_like_text(
        text in "[0-9*/,LW#?@ a-zA-Z-]{0,40}",
        zone in 0..ZONES.len(),
        from in instant(),
    ) {
        check_cron(&text, zone, from);
    }
}

proptest! {
    #![proptest_config(cases(500))]

    #[test]
    fn cron_parser_survives_arbitrary_text(text in any::<String>(), from in instant()) {
        check_cron(&text, 0, from);
    }
}

// ---- regressions: each a panic or a hang the fuzzing found ---------------------------

/// Found by the fuzzer (the check's line count was wrong, not the loader): YAML ends a
/// line at a lone `\r` too, so an error after one is on the next line, not past the end.
#[test]
fn lone_carriage_return_ends_a_line_in_error_locations() {
    let text = b"jobs:\n  a:\r    schedule: \"@daily\"\n    kill_grace::\n";
    check_load(text);
    let sources = [Source {
        path: "cr.yaml".into(),
        bytes: text.to_vec(),
    }];
    let errors = load_sources(&sources, &options()).expect_err("`kill_grace:` is unknown");
    assert_eq!(errors.0.len(), 2, "{errors}");
    let shown = errors.to_string();
    assert!(
        shown.starts_with("cr.yaml:2:3: job `a` has neither"),
        "{shown}"
    );
    assert!(
        shown.contains("cr.yaml:4:5: unknown key `kill_grace:`"),
        "{shown}"
    );
}
