//! The monitor's metrics against a plain model: random sequences of loads (jobs added
//! and removed), runs started (and retried), finished, skipped and missed, then a
//! scrape parsed by a Prometheus text parser must show exactly the model's counts —
//! removed jobs' series gone, counters of a job added back started afresh, and
//! `chime_running` never counting a run twice or one of a removed job. Every skip and
//! miss reason (main's `paused`, `superseded`, `downtime` among them) has its own series,
//! and manual runs (`chime trigger`) count like scheduled ones.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chime::events::{Event, ExitDetail, MissReason, Outcome, SkipReason, Trigger};
use chime::job::{Action, Job, ShellCommand};
use chime::monitor::{Monitor, MonitorOptions};
use proptest::prelude::*;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];
const OUTCOMES: [Outcome; 3] = [Outcome::Success, Outcome::Failure, Outcome::Timeout];
const SLOTS: usize = 5;
/// Every reason a fire is skipped or missed: each has its own series.
const SKIPS: [SkipReason; 5] = [
    SkipReason::Overlap,
    SkipReason::Disabled,
    SkipReason::Shutdown,
    SkipReason::Superseded,
    SkipReason::Paused,
];
const MISSES: [MissReason; 4] = [
    MissReason::Deadline,
    MissReason::ClockJump,
    MissReason::LateWakeup,
    MissReason::Downtime,
];

#[derive(Debug, Clone)]
enum Op {
    /// Load the jobs whose bits are set.
    Load(u8),
    /// A run of job `job` in slot `slot` starts (or, when the slot is busy, makes its
    /// next attempt).
    Start {
        job: usize,
        slot: usize,
        /// A manual run (`chime trigger`) rather than a scheduled one.
        manual: bool,
    },
    Finish {
        slot: usize,
        outcome: usize,
    },
    Skip {
        job: usize,
        reason: usize,
    },
    Miss {
        job: usize,
        count: u64,
        reason: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => any::<u8>().prop_map(|mask| Op::Load(mask & 0x0f)),
        4 => (0..NAMES.len(), 0..SLOTS, any::<bool>())
            .prop_map(|(job, slot, manual)| Op::Start { job, slot, manual }),
        4 => (0..SLOTS, 0..OUTCOMES.len()).prop_map(|(slot, outcome)| Op::Finish { slot, outcome }),
        1 => (0..NAMES.len(), 0..SKIPS.len()).prop_map(|(job, reason)| Op::Skip { job, reason }),
        1 => (0..NAMES.len(), 1..4u64, 0..MISSES.len())
            .prop_map(|(job, count, reason)| Op::Miss { job, count, reason }),
    ]
}

#[derive(Default)]
struct Model {
    loaded: BTreeSet<&'static str>,
    runs: BTreeMap<(&'static str, &'static str), u64>,
    skipped: BTreeMap<(&'static str, &'static str), u64>,
    missed: BTreeMap<(&'static str, &'static str), u64>,
    running: BTreeMap<&'static str, i64>,
    /// slot → (run id, job, counted in running)
    in_flight: BTreeMap<usize, (String, &'static str, bool)>,
}

impl Model {
    fn load(&mut self, jobs: BTreeSet<&'static str>) {
        for gone in self.loaded.difference(&jobs) {
            self.runs.retain(|(job, _), _| job != gone);
            self.skipped.retain(|(job, _), _| job != gone);
            self.missed.retain(|(job, _), _| job != gone);
            self.running.remove(gone);
            for run in self.in_flight.values_mut() {
                if run.1 == *gone {
                    run.2 = false;
                }
            }
        }
        self.loaded = jobs;
    }
}

fn jobs(names: &BTreeSet<&'static str>) -> Vec<Job> {
    names
        .iter()
        .map(|name| {
            Job::new(
                *name,
                "0 0 1 1 *",
                Action::Shell(ShellCommand::Script("true".into())),
            )
            .expect("a job")
        })
        .collect()
}

fn mask_names(mask: u8) -> BTreeSet<&'static str> {
    NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, name)| *name)
        .collect()
}

fn number(value: &prometheus_parse::Value) -> f64 {
    match value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("not a number: {other:?}"),
    }
}

fn check(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut model = Model::default();
    let all: BTreeSet<&'static str> = NAMES.into_iter().collect();
    let monitor = Monitor::start(
        MonitorOptions {
            metrics: true,
            ..MonitorOptions::default()
        },
        &jobs(&all),
        chime::events::Events::discard(),
        runtime.handle().clone(),
    )
    .expect("monitor");
    model.load(all);
    let events = monitor.observe(chime::events::Events::discard());
    let at = chrono::Utc::now();
    let mut next_id = 0;
    for op in ops {
        match op {
            Op::Load(mask) => {
                let names = mask_names(mask);
                monitor.jobs_loaded(&jobs(&names));
                model.load(names);
            }
            Op::Start { job, slot, manual } => {
                let (run_id, job, attempt) = match model.in_flight.get(&slot) {
                    Some((run_id, job, _)) => (run_id.clone(), *job, 2),
                    None => {
                        next_id += 1;
                        let run_id = format!("run-{next_id}");
                        let job = NAMES[job];
                        let counted = model.loaded.contains(job);
                        if counted {
                            *model.running.entry(job).or_default() += 1;
                        }
                        model.in_flight.insert(slot, (run_id.clone(), job, counted));
                        (run_id, job, 1)
                    }
                };
                events.emit(Event::RunStarted {
                    job: Arc::from(job),
                    run_id: Arc::from(run_id.as_str()),
                    trigger: if attempt > 1 {
                        Trigger::Retry
                    } else if manual {
                        Trigger::Manual
                    } else {
                        Trigger::Schedule
                    },
                    scheduled_at: at,
                    lateness_ms: 1.0,
                    attempt,
                    queued_ms: None,
                    pid: Some(4242),
                    caller_uid: manual.then_some(0),
                });
            }
            Op::Finish { slot, outcome } => {
                let Some((run_id, job, counted)) = model.in_flight.remove(&slot) else {
                    continue;
                };
                let outcome = OUTCOMES[outcome];
                if model.loaded.contains(job) {
                    *model.runs.entry((job, outcome.as_str())).or_default() += 1;
                    if counted {
                        *model.running.entry(job).or_default() -= 1;
                    }
                }
                events.emit(Event::RunFinished {
                    job: Arc::from(job),
                    run_id: Arc::from(run_id.as_str()),
                    attempts: 1,
                    outcome,
                    detail: ExitDetail::default(),
                    duration_ms: 5,
                    output_bytes: 0,
                    truncated: false,
                    by: None,
                    caller_uid: None,
                });
            }
            Op::Skip { job, reason } => {
                let job = NAMES[job];
                let reason = SKIPS[reason];
                if model.loaded.contains(job) {
                    *model.skipped.entry((job, reason.as_str())).or_default() += 1;
                }
                events.emit(Event::RunSkipped {
                    job: Arc::from(job),
                    scheduled_at: at,
                    reason,
                });
            }
            Op::Miss { job, count, reason } => {
                let job = NAMES[job];
                let reason = MISSES[reason];
                if model.loaded.contains(job) {
                    *model.missed.entry((job, reason.as_str())).or_default() += count;
                }
                events.emit(Event::RunMissed {
                    job: Arc::from(job),
                    scheduled_at: at,
                    count,
                    reason,
                });
            }
        }
    }
    let text = runtime
        .block_on(monitor.scrape())
        .expect("metrics are kept");
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parsed");
    let value = |metric: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| number(&s.value))
    };
    for job in NAMES {
        if !model.loaded.contains(job) {
            let series: Vec<_> = scrape
                .samples
                .iter()
                .filter(|s| s.labels.get("job") == Some(job))
                .collect();
            prop_assert!(series.is_empty(), "removed job {job}: {series:?}");
            continue;
        }
        for outcome in OUTCOMES {
            let expected = model.runs.get(&(job, outcome.as_str())).copied();
            let got = value(
                "chime_runs_total",
                &[("job", job), ("outcome", outcome.as_str())],
            );
            prop_assert_eq!(
                got,
                expected.map(|n| n as f64),
                "runs {} {}",
                job,
                outcome.as_str()
            );
        }
        for reason in SKIPS.map(SkipReason::as_str) {
            let skipped = value(
                "chime_skipped_fires_total",
                &[("job", job), ("reason", reason)],
            );
            prop_assert_eq!(
                skipped,
                model.skipped.get(&(job, reason)).map(|n| *n as f64),
                "skipped {} {}",
                job,
                reason
            );
        }
        for reason in MISSES.map(MissReason::as_str) {
            let missed = value(
                "chime_missed_fires_total",
                &[("job", job), ("reason", reason)],
            );
            prop_assert_eq!(
                missed,
                model.missed.get(&(job, reason)).map(|n| *n as f64),
                "missed {} {}",
                job,
                reason
            );
        }
        let running = value("chime_running", &[("job", job)]).unwrap_or(0.0);
        let expected = model.running.get(job).copied().unwrap_or(0);
        prop_assert!(expected >= 0, "the model never goes below zero");
        prop_assert_eq!(running, expected as f64, "running {}", job);
    }
    prop_assert_eq!(value("chime_jobs", &[]), Some(model.loaded.len() as f64));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn metrics_follow_the_model(ops in proptest::collection::vec(op(), 0..60)) {
        check(ops)?;
    }
}
