//! `chime run` on a schedule directory that is edited while every-second jobs run
//! (issue 8, DESIGN.md §5). A seeded series of edits — rename-saves, in-place writes,
//! new and deleted files, Kubernetes-style `..data` symlink swaps, rejected edits that
//! are then fixed and followed by SIGHUP — is applied to the directory. After each edit
//! the test waits for the `config.reloaded` it causes (and checks its counts against a
//! model of the job set) or the `config.rejected`. Every job appends its scheduled
//! instant and its command's version to a marker file of its own; at the end the
//! markers are checked against the model's timeline: a job present for a whole second
//! fired at that second exactly once, no job fired while absent, and each run used the
//! command in force at its instant.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;
use support::{Chime, LIMIT, name, parse_event, temp_dir, write, write_atomic};

/// The sequence's seed; `RELOAD_EDITS_SEED=<n>` runs another one.
const SEED: u64 = 0x00c4_1e08_2026_1201;
/// The test makes at least this many edits to the directory.
const MIN_EDITS: usize = 36;
/// How far a fire may stray from the event that added, removed or changed its job: the
/// event is logged just after the scheduler applied the new set, and a fire a little
/// after its instant.
const MARGIN: TimeDelta = TimeDelta::milliseconds(300);
/// The job names.
const POOL: [&str; 8] = [
    "alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "kappa",
];
/// Files written in the directory itself.
const PLAIN: [&str; 3] = ["a.yaml", "b.yaml", "d.yaml"];
/// The file that is a symlink into `..data`, changed only by swapping `..data`.
const SWAPPED: &str = "k.yaml";

/// xorshift64*: a reproducible sequence without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// The time from one edit to the next.
    fn pause(&mut self) -> Duration {
        Duration::from_millis(700 + self.below(501) as u64)
    }
}

/// Job name → version of its command.
type Jobs = BTreeMap<&'static str, u32>;

/// What the directory defines: file → its jobs. A name is in one file at most.
#[derive(Debug, Clone, Default)]
struct Model {
    files: BTreeMap<&'static str, Jobs>,
}

impl Model {
    /// Every job of every file.
    fn jobs(&self) -> Jobs {
        let mut all = Jobs::new();
        for jobs in self.files.values() {
            all.extend(jobs.iter().map(|(name, version)| (*name, *version)));
        }
        all
    }
}

/// `[added, changed, removed, unchanged]` from `old` to `new`.
fn counts(old: &Jobs, new: &Jobs) -> [u64; 4] {
    let mut counts = [0; 4];
    for (name, version) in new {
        match old.get(name) {
            None => counts[0] += 1,
            Some(before) if before != version => counts[1] += 1,
            Some(_) => counts[3] += 1,
        }
    }
    counts[2] = old.keys().filter(|name| !new.contains_key(*name)).count() as u64;
    counts
}

#[derive(Debug, Clone, Copy)]
enum Save {
    /// Write a dotfile (which chime ignores), rename it over FILE: `write_atomic`.
    Rename,
    /// Truncate and write FILE.
    InPlace,
    /// Write `..vN/FILE`, point `..data_tmp` at it and rename that over `..data`.
    Swap,
}

/// What makes an edit invalid.
#[derive(Debug, Clone, Copy)]
enum Flaw {
    BadYaml,
    UnknownKey,
    /// A job named like one in another file.
    Duplicate(&'static str),
}

#[derive(Debug)]
enum Step {
    /// Write (or create) `file` with `jobs`.
    Write {
        file: &'static str,
        jobs: Jobs,
        how: Save,
    },
    Delete {
        file: &'static str,
    },
    /// Write `file` with `jobs` and a flaw, wait `wait`, write it without the flaw,
    /// then SIGHUP.
    Reject {
        file: &'static str,
        jobs: Jobs,
        flaw: Flaw,
        how: Save,
        fix: Save,
        wait: Duration,
    },
}

/// The schedule directory and the marker directory.
struct Schedules {
    dir: PathBuf,
    markers: PathBuf,
    /// N of the `..vN` that `..data` points to.
    version: u32,
}

impl Schedules {
    fn text(&self, jobs: &Jobs, flaw: Option<Flaw>) -> String {
        let mut text = String::from("jobs:\n");
        let write_job = |text: &mut String, name: &str, version: u32| {
            let marker = self.markers.join(name);
            write!(
                text,
                "  {name}:\n    schedule: \"* * * * * *\"\n    timezone: UTC\n    command: |\n      \
                 echo \"$CHIME_SCHEDULED_AT v{version}\" >> '{}'\n",
                marker.display()
            )
            .unwrap();
        };
        for (index, (name, version)) in jobs.iter().enumerate() {
            write_job(&mut text, name, *version);
            if index == 0 && matches!(flaw, Some(Flaw::UnknownKey)) {
                text.push_str("    retries: 3\n");
            }
        }
        match flaw {
            Some(Flaw::BadYaml) => text.push_str("  broken: [unclosed\n"),
            Some(Flaw::Duplicate(name)) => write_job(&mut text, name, 0),
            Some(Flaw::UnknownKey) | None => {}
        }
        text
    }

    fn save(&mut self, file: &str, text: &str, how: Save) {
        match how {
            Save::Rename => {
                write_atomic(&self.dir, file, text);
            }
            // `fs::write` opens with O_TRUNC, then writes.
            Save::InPlace => {
                write(&self.dir, file, text);
            }
            Save::Swap => {
                let old = format!("..v{}", self.version);
                self.version += 1;
                let new = format!("..v{}", self.version);
                std::fs::create_dir(self.dir.join(&new)).unwrap();
                write(&self.dir.join(&new), file, text);
                let temp = self.dir.join("..data_tmp");
                std::os::unix::fs::symlink(&new, &temp).unwrap();
                std::fs::rename(&temp, self.dir.join("..data")).unwrap();
                std::fs::remove_dir_all(self.dir.join(old)).unwrap();
            }
        }
    }

    /// `..v1/FILE`, `..data -> ..v1` and `FILE -> ..data/FILE`, as a ConfigMap volume.
    fn create_swapped(&mut self, file: &str, text: &str) {
        self.version = 1;
        std::fs::create_dir(self.dir.join("..v1")).unwrap();
        write(&self.dir.join("..v1"), file, text);
        std::os::unix::fs::symlink("..v1", self.dir.join("..data")).unwrap();
        std::os::unix::fs::symlink(format!("..data/{file}"), self.dir.join(file)).unwrap();
    }
}

/// `jobs` changed in one of four ways: a job added, removed, replaced by another (as in
/// the issue), or given a new command.
fn rewrite(rng: &mut Rng, jobs: &Jobs, free: &[&'static str], version: &mut u32) -> Jobs {
    let mut new = jobs.clone();
    loop {
        let any = |rng: &mut Rng, new: &Jobs| *new.keys().nth(rng.below(new.len())).unwrap();
        match rng.below(4) {
            0 if !free.is_empty() && new.len() < 3 => {
                new.insert(rng.pick(free), bump(version));
            }
            1 if new.len() >= 2 => {
                let gone = any(rng, &new);
                new.remove(gone);
            }
            2 if !free.is_empty() => {
                let gone = any(rng, &new);
                new.remove(gone);
                new.insert(rng.pick(free), bump(version));
            }
            3 => {
                let changed = any(rng, &new);
                new.insert(changed, bump(version));
            }
            _ => continue,
        }
        return new;
    }
}

fn bump(version: &mut u32) -> u32 {
    *version += 1;
    *version
}

fn save_for(rng: &mut Rng, file: &str) -> Save {
    if file == SWAPPED {
        Save::Swap
    } else if rng.below(2) == 0 {
        Save::Rename
    } else {
        Save::InPlace
    }
}

/// The kinds of step, dealt from a shuffled deck so that every kind comes up in every
/// round of `DECK.len()` steps (when it can).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Reject,
    Create,
    Delete,
    Rewrite,
    Swap,
}

const DECK: [Kind; 6] = [
    Kind::Reject,
    Kind::Create,
    Kind::Delete,
    Kind::Rewrite,
    Kind::Rewrite,
    Kind::Swap,
];

/// The next edit, of kind `kind` or, when that cannot be done, a rewrite. Every edit
/// changes the job set or a command, so that it makes chime reload (chime skips files
/// whose bytes are the same) and log `config.reloaded`. `SWAPPED` always keeps a job,
/// so the directory never runs out of them.
fn plan(rng: &mut Rng, kind: Kind, model: &Model, version: &mut u32) -> Step {
    let present = model.jobs();
    let free: Vec<&'static str> = POOL
        .iter()
        .copied()
        .filter(|name| !present.contains_key(name))
        .collect();
    let existing: Vec<&'static str> = model.files.keys().copied().collect();
    let plain: Vec<&'static str> = PLAIN
        .iter()
        .copied()
        .filter(|file| model.files.contains_key(file))
        .collect();
    let absent: Vec<&'static str> = PLAIN
        .iter()
        .copied()
        .filter(|file| !model.files.contains_key(file))
        .collect();
    match kind {
        Kind::Reject => {
            let file = rng.pick(&existing);
            let jobs = rewrite(rng, &model.files[file], &free, version);
            let elsewhere: Vec<&'static str> = present
                .keys()
                .copied()
                .filter(|name| !model.files[file].contains_key(name))
                .collect();
            let flaw = match rng.below(3) {
                0 => Flaw::BadYaml,
                1 if !elsewhere.is_empty() => Flaw::Duplicate(rng.pick(&elsewhere)),
                _ => Flaw::UnknownKey,
            };
            Step::Reject {
                file,
                jobs,
                flaw,
                how: save_for(rng, file),
                fix: save_for(rng, file),
                wait: rng.pause(),
            }
        }
        Kind::Create if !absent.is_empty() && !free.is_empty() => {
            let file = rng.pick(&absent);
            let mut jobs = Jobs::new();
            for _ in 0..1 + rng.below(2).min(free.len() - 1) {
                let name = loop {
                    let name = rng.pick(&free);
                    if !jobs.contains_key(name) {
                        break name;
                    }
                };
                jobs.insert(name, bump(version));
            }
            Step::Write {
                file,
                jobs,
                how: save_for(rng, file),
            }
        }
        Kind::Delete if !plain.is_empty() => Step::Delete {
            file: rng.pick(&plain),
        },
        _ => {
            let file = if kind == Kind::Swap || plain.is_empty() {
                SWAPPED
            } else {
                rng.pick(&plain)
            };
            let jobs = rewrite(rng, &model.files[file], &free, version);
            Step::Write {
                file,
                jobs,
                how: save_for(rng, file),
            }
        }
    }
}

fn time(event: &Value) -> DateTime<Utc> {
    support::time(event, "timestamp")
}

/// The running service, the directory, and what the test knows of both.
struct Session {
    chime: Chime,
    files: Schedules,
    model: Model,
    /// From each `config.reloaded` (and `service.started`) on, the jobs present.
    history: Vec<(DateTime<Utc>, Jobs)>,
    /// Writes, renames, swaps and deletions done to the directory.
    edits: usize,
    /// How many edits of each kind.
    kinds: BTreeMap<&'static str, usize>,
    /// `config.*` events received.
    config_events: usize,
}

impl Session {
    fn apply(&mut self, step: Step, label: &str) {
        match step {
            Step::Write { file, jobs, how } => {
                let text = self.files.text(&jobs, None);
                let kind = if self.model.files.contains_key(file) {
                    kind(how)
                } else {
                    "create"
                };
                self.files.save(file, &text, how);
                self.count(kind);
                let mut new = self.model.clone();
                new.files.insert(file, jobs);
                self.expect_reloaded(label, new);
            }
            Step::Delete { file } => {
                std::fs::remove_file(self.files.dir.join(file)).unwrap();
                self.count("delete");
                let mut new = self.model.clone();
                new.files.remove(file);
                self.expect_reloaded(label, new);
            }
            Step::Reject {
                file,
                jobs,
                flaw,
                how,
                fix,
                wait,
            } => {
                let due = Instant::now() + wait;
                let text = self.files.text(&jobs, Some(flaw));
                self.files.save(file, &text, how);
                self.count("rejected");
                let event = self.next_config_event(label);
                assert_eq!(name(&event), "config.rejected", "{label}: {event}");
                println!("{}  {label}: rejected", event["timestamp"]);
                let errors = event["errors"].as_array().unwrap();
                assert!(
                    errors
                        .iter()
                        .any(|error| error.as_str().unwrap().contains(file)),
                    "{label}: no error names {file}: {event}"
                );
                // The old set goes on running meanwhile (the markers show it).
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let text = self.files.text(&jobs, None);
                self.files.save(file, &text, fix);
                self.count("fix");
                let mut new = self.model.clone();
                new.files.insert(file, jobs);
                // The fix's own file event reloads first; waiting for that keeps the
                // order of events fixed. Then SIGHUP reloads the same set.
                self.expect_reloaded(&format!("{label}, fixed"), new.clone());
                self.chime.signal(libc::SIGHUP);
                self.expect_reloaded(&format!("{label}, SIGHUP"), new);
            }
        }
    }

    fn count(&mut self, kind: &'static str) {
        self.edits += 1;
        *self.kinds.entry(kind).or_default() += 1;
    }

    fn next_config_event(&mut self, what: &str) -> Value {
        self.config_events += 1;
        self.chime.wait_for(what, LIMIT, |event| {
            matches!(name(event), "config.reloaded" | "config.rejected")
        })
    }

    /// Waits for the reload of `new` and checks its counts.
    fn expect_reloaded(&mut self, label: &str, new: Model) {
        let event = self.next_config_event(label);
        assert_eq!(name(&event), "config.reloaded", "{label}: {event}");
        let old = self.model.jobs();
        let jobs = new.jobs();
        let got = ["added", "changed", "removed", "unchanged"].map(|k| event[k].as_u64().unwrap());
        assert_eq!(
            got,
            counts(&old, &jobs),
            "{label}: [added, changed, removed, unchanged] of {event}, from {old:?} to {jobs:?}"
        );
        println!("{}  {label}: {got:?} → {jobs:?}", event["timestamp"]);
        self.history.push((time(&event), jobs));
        self.model = new;
    }
}

fn kind(how: Save) -> &'static str {
    match how {
        Save::Rename => "rename",
        Save::InPlace => "in-place",
        Save::Swap => "swap",
    }
}

/// The jobs of the states in force at some time in `[from, to]`; the last state lasts
/// until `end`.
fn states_during(
    history: &[(DateTime<Utc>, Jobs)],
    end: DateTime<Utc>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<&Jobs> {
    history
        .iter()
        .enumerate()
        .filter(|(index, (at, _))| {
            let until = history.get(index + 1).map_or(end, |(next, _)| *next);
            *at <= to && from <= until
        })
        .map(|(_, (_, jobs))| jobs)
        .collect()
}

fn ceil_second(at: DateTime<Utc>) -> i64 {
    at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0)
}

/// What the markers say against the timeline: failures, how many seconds each job had
/// to fire in, and how many fires there were.
fn check_markers(
    markers: &Path,
    history: &[(DateTime<Utc>, Jobs)],
    sigterm_at: DateTime<Utc>,
    stopping_at: DateTime<Utc>,
) -> (Vec<String>, BTreeMap<&'static str, usize>, usize) {
    let mut failures = Vec::new();
    let mut required = BTreeMap::new();
    let mut fires = 0;
    let started = history[0].0;
    for job in POOL {
        let text = std::fs::read_to_string(markers.join(job)).unwrap_or_default();
        // Instant → versions of the runs for it.
        let mut runs: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for line in text.lines() {
            let (instant, version) = line.split_once(" v").unwrap();
            let instant = DateTime::parse_from_rfc3339(instant)
                .unwrap()
                .with_timezone(&Utc);
            let version: u32 = version.parse().unwrap();
            fires += 1;
            if instant.timestamp_subsec_nanos() != 0 {
                failures.push(format!("{job}: instant {instant} is not a whole second"));
            }
            runs.entry(instant.timestamp()).or_default().push(version);
            let near = states_during(history, stopping_at, instant - MARGIN, instant + MARGIN);
            if !near.iter().any(|jobs| jobs.contains_key(job)) {
                failures.push(format!("{job} fired for {instant} while absent"));
            } else if !near.iter().any(|jobs| jobs.get(job) == Some(&version)) {
                failures.push(format!(
                    "{job} ran command v{version} for {instant}; in force: {:?}",
                    near.iter().map(|jobs| jobs.get(job)).collect::<Vec<_>>()
                ));
            }
        }
        for (second, versions) in &runs {
            if versions.len() > 1 {
                failures.push(format!(
                    "{job} fired {} times for {}",
                    versions.len(),
                    DateTime::from_timestamp(*second, 0).unwrap()
                ));
            }
        }
        for second in ceil_second(started + MARGIN)..=(sigterm_at - MARGIN).timestamp() {
            let instant = DateTime::from_timestamp(second, 0).unwrap();
            let near = states_during(history, sigterm_at, instant - MARGIN, instant + MARGIN);
            if near.iter().all(|jobs| jobs.contains_key(job)) {
                *required.entry(job).or_default() += 1;
                if !runs.contains_key(&second) {
                    failures.push(format!("{job} did not fire for {instant}"));
                }
            }
        }
    }
    (failures, required, fires)
}

#[test]
fn random_edits_while_every_second_jobs_run() {
    let began = Instant::now();
    let seed = std::env::var("RELOAD_EDITS_SEED")
        .ok()
        .map_or(SEED, |seed| seed.parse().unwrap());
    println!("seed {seed} (RELOAD_EDITS_SEED={seed} repeats this sequence)");
    let mut rng = Rng(seed | 1);
    let root = temp_dir();
    let dir = root.path().join("schedules");
    let markers = root.path().join("markers");
    std::fs::create_dir(&dir).unwrap();
    std::fs::create_dir(&markers).unwrap();
    assert!(!markers.to_str().unwrap().contains('\''), "{markers:?}");

    let mut files = Schedules {
        dir: dir.clone(),
        markers: markers.clone(),
        version: 0,
    };
    let mut model = Model::default();
    model
        .files
        .insert("a.yaml", Jobs::from([("alpha", 1), ("beta", 1)]));
    model.files.insert("b.yaml", Jobs::from([("eps", 1)]));
    model.files.insert(SWAPPED, Jobs::from([("kappa", 1)]));
    for (file, jobs) in &model.files {
        let text = files.text(jobs, None);
        if *file == SWAPPED {
            files.create_swapped(file, &text);
        } else {
            files.save(file, &text, Save::InPlace);
        }
    }

    let args = [
        OsStr::new("--log-format"),
        OsStr::new("json"),
        OsStr::new("run"),
        dir.as_os_str(),
    ];
    let mut chime = Chime::spawn(root.path(), args);
    let started = chime.wait_event("service.started", LIMIT);
    assert_eq!(started["jobs"], 4, "{started}");
    assert_eq!(started["files"], 3, "{started}");
    let mut session = Session {
        chime,
        files,
        history: vec![(time(&started), model.jobs())],
        model,
        edits: 0,
        kinds: BTreeMap::new(),
        config_events: 0,
    };

    // The scenario: a.yaml's alpha and beta become beta and gamma (saved by
    // rename), then d.yaml adds delta, which must then fire every second.
    session.apply(
        Step::Write {
            file: "a.yaml",
            jobs: Jobs::from([("beta", 1), ("gamma", 2)]),
            how: Save::Rename,
        },
        "issue 8: a.yaml alpha+beta → beta+gamma",
    );
    session.apply(
        Step::Write {
            file: "d.yaml",
            jobs: Jobs::from([("delta", 3)]),
            how: Save::InPlace,
        },
        "issue 8: d.yaml with delta",
    );
    // Let delta be present for a few whole seconds before the random edits start.
    std::thread::sleep(Duration::from_millis(2500));
    // The last version used above; new ones count on from it.
    let mut version = 3;

    let mut steps = 0;
    let mut deck = Vec::new();
    while session.edits < MIN_EDITS {
        steps += 1;
        let due = Instant::now() + rng.pause();
        if deck.is_empty() {
            deck = DECK.to_vec();
            for index in (1..deck.len()).rev() {
                deck.swap(index, rng.below(index + 1));
            }
        }
        let kind = deck.pop().unwrap();
        let step = plan(&mut rng, kind, &session.model, &mut version);
        let label = format!("step {steps}: {step:?}");
        session.apply(step, &label);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }

    let sigterm_at = Utc::now();
    session.chime.signal(libc::SIGTERM);
    let stopping = session.chime.wait_event("service.stopping", LIMIT);
    assert_eq!(stopping["jobs"], session.model.jobs().len(), "{stopping}");
    session.chime.wait_event("service.stopped", LIMIT);
    let status = session.chime.wait_exit(LIMIT);
    assert_eq!(status.code(), Some(0), "{status:?}");
    let (lines, _) = session.chime.finish(LIMIT);
    let events: Vec<Value> = lines.iter().filter_map(|line| parse_event(line)).collect();

    let (mut failures, required, fires) =
        check_markers(&markers, &session.history, sigterm_at, time(&stopping));
    let config_events = events
        .iter()
        .filter(|event| name(event).starts_with("config."))
        .count();
    if config_events != session.config_events {
        failures.push(format!(
            "{config_events} config events logged, {} expected",
            session.config_events
        ));
    }
    for event in &events {
        let unsuccessful = name(event) == "run.finished" && event["outcome"] != "success";
        let lost = matches!(name(event), "run.missed" | "run.skipped") && time(event) < sigterm_at;
        if unsuccessful || lost {
            failures.push(format!("unexpected: {event}"));
        }
    }
    let delta = required.get("delta").copied().unwrap_or(0);
    assert!(delta >= 2, "delta had to fire in {delta} seconds only");
    if !failures.is_empty() {
        let mut report = String::new();
        for (at, jobs) in &session.history {
            writeln!(report, "  from {at}: {jobs:?}").unwrap();
        }
        for event in &events {
            if !matches!(name(event), "run.started" | "run.finished" | "run.output") {
                writeln!(report, "  {event}").unwrap();
            }
        }
        panic!(
            "seed {seed}: {} failures:\n{}\ntimeline:\n{report}",
            failures.len(),
            failures.join("\n")
        );
    }
    for kind in [
        "rename", "in-place", "swap", "create", "delete", "rejected", "fix",
    ] {
        assert!(
            session.kinds.contains_key(kind),
            "seed {seed}: no {kind} edit in {:?}",
            session.kinds
        );
    }
    println!(
        "seed {seed}: {} edits {:?}, {} reloads, {fires} fires, {} (job, second) pairs \
         required to fire, {:.1} s",
        session.edits,
        session.kinds,
        session.history.len() - 1,
        required.values().sum::<usize>(),
        began.elapsed().as_secs_f64()
    );
}
