//! The Prometheus metrics of DESIGN.md §12, kept with `prometheus-client` and fed by
//! the monitor thread. Per job only counters and gauges; histograms are service-wide.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::events::{Event, MissReason, Outcome, SkipReason};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobOutcome {
    job: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobReason {
    job: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

type Seconds = Gauge<f64, AtomicU64>;
type DurationFamily = Family<OutcomeLabel, Histogram, fn() -> Histogram>;

const OUTCOMES: [Outcome; 5] = [
    Outcome::Success,
    Outcome::Failure,
    Outcome::Timeout,
    Outcome::Killed,
    Outcome::Cancelled,
];
const SKIP_REASONS: [SkipReason; 4] = [
    SkipReason::Overlap,
    SkipReason::Disabled,
    SkipReason::Shutdown,
    SkipReason::Superseded,
];
const MISS_REASONS: [MissReason; 4] = [
    MissReason::Deadline,
    MissReason::ClockJump,
    MissReason::LateWakeup,
    MissReason::Downtime,
];

/// Lateness buckets, 100 µs to 10 s.
const LATENESS_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Run duration buckets, 10 ms to 2 h.
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

pub(super) struct Metrics {
    registry: Registry,
    runs: Family<JobOutcome, Counter>,
    run_duration: DurationFamily,
    lateness: Histogram,
    last_duration: Family<JobLabel, Seconds>,
    running: Family<JobLabel, Gauge>,
    missed: Family<JobReason, Counter>,
    skipped: Family<JobReason, Counter>,
    last_run: Family<JobLabel, Seconds>,
    last_success: Family<JobLabel, Seconds>,
    next_fire: Family<JobLabel, Seconds>,
    reloads: Family<ResultLabel, Counter>,
    jobs: Gauge,
}

fn seconds(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

fn label(job: &str) -> JobLabel {
    JobLabel {
        job: job.to_string(),
    }
}

impl Metrics {
    pub(super) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("chime");
        let runs = Family::<JobOutcome, Counter>::default();
        registry.register("runs", "Runs finished, by job and outcome", runs.clone());
        let run_duration: DurationFamily =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        registry.register(
            "run_duration_seconds",
            "How long runs took, all jobs, by outcome",
            run_duration.clone(),
        );
        let lateness = Histogram::new(LATENESS_BUCKETS);
        registry.register(
            "lateness_seconds",
            "From a fire's scheduled instant to its run's start, all jobs",
            lateness.clone(),
        );
        let last_duration = Family::<JobLabel, Seconds>::default();
        registry.register(
            "last_duration_seconds",
            "How long the job's last run took",
            last_duration.clone(),
        );
        let running = Family::<JobLabel, Gauge>::default();
        registry.register("running", "Runs of the job in flight", running.clone());
        let missed = Family::<JobReason, Counter>::default();
        registry.register(
            "missed_fires",
            "Fires missed, by job and reason",
            missed.clone(),
        );
        let skipped = Family::<JobReason, Counter>::default();
        registry.register(
            "skipped_fires",
            "Fires skipped, by job and reason",
            skipped.clone(),
        );
        let last_run = Family::<JobLabel, Seconds>::default();
        registry.register(
            "last_run_timestamp_seconds",
            "When the job's last run started (Unix time)",
            last_run.clone(),
        );
        let last_success = Family::<JobLabel, Seconds>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "When the job's last successful run ended (Unix time; kept across restarts with the state store)",
            last_success.clone(),
        );
        let next_fire = Family::<JobLabel, Seconds>::default();
        registry.register(
            "next_fire_timestamp_seconds",
            "The job's next scheduled fire (Unix time)",
            next_fire.clone(),
        );
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Reloads of the schedules, by result (applied, rejected)",
            reloads.clone(),
        );
        for result in ["applied", "rejected"] {
            let _ = reloads.get_or_create(&ResultLabel { result });
        }
        let jobs = Gauge::default();
        registry.register("jobs", "Jobs loaded", jobs.clone());
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "chime's version", build);
        Metrics {
            registry,
            runs,
            run_duration,
            lateness,
            last_duration,
            running,
            missed,
            skipped,
            last_run,
            last_success,
            next_fire,
            reloads,
            jobs,
        }
    }

    pub(super) fn restore_last_success(&self, last: &HashMap<String, DateTime<Utc>>) {
        for (job, at) in last {
            self.last_success
                .get_or_create(&label(job))
                .set(seconds(*at));
        }
    }

    /// Jobs were loaded (`count` in all): the removed ones' series go.
    pub(super) fn jobs_loaded<'a>(&self, count: usize, removed: impl Iterator<Item = &'a str>) {
        self.jobs.set(i64::try_from(count).unwrap_or(i64::MAX));
        for job in removed {
            let one = label(job);
            for family in [
                &self.last_duration,
                &self.last_run,
                &self.last_success,
                &self.next_fire,
            ] {
                family.remove(&one);
            }
            self.running.remove(&one);
            for outcome in OUTCOMES {
                self.runs.remove(&JobOutcome {
                    job: job.to_string(),
                    outcome: outcome.as_str(),
                });
            }
            for reason in SKIP_REASONS.map(SkipReason::as_str) {
                self.skipped.remove(&JobReason {
                    job: job.to_string(),
                    reason,
                });
            }
            for reason in MISS_REASONS.map(MissReason::as_str) {
                self.missed.remove(&JobReason {
                    job: job.to_string(),
                    reason,
                });
            }
        }
    }

    pub(super) fn set_next_fire(&self, job: &str, at: Option<DateTime<Utc>>) {
        match at {
            Some(at) => {
                self.next_fire.get_or_create(&label(job)).set(seconds(at));
            }
            None => {
                self.next_fire.remove(&label(job));
            }
        }
    }

    /// `first`: the run's first `run.started` (retries are the same run). `known`: the
    /// event's job is loaded. `running`: a `run.finished` whose start was counted in
    /// `chime_running` (and the job not removed since).
    pub(super) fn observe(&self, event: &Event, first: bool, known: bool, running: bool) {
        match event {
            Event::RunStarted {
                job,
                scheduled_at,
                lateness_ms,
                ..
            } if first => {
                self.lateness.observe(lateness_ms / 1000.0);
                if known {
                    let started = seconds(*scheduled_at) + lateness_ms / 1000.0;
                    self.last_run.get_or_create(&label(job)).set(started);
                    self.running.get_or_create(&label(job)).inc();
                }
            }
            Event::RunFinished {
                job,
                outcome,
                duration_ms,
                ..
            } => {
                let took = *duration_ms as f64 / 1000.0;
                self.run_duration
                    .get_or_create(&OutcomeLabel {
                        outcome: outcome.as_str(),
                    })
                    .observe(took);
                if !known {
                    return;
                }
                let one = label(job);
                if running && let Some(running) = self.running.get(&one) {
                    running.dec();
                }
                self.runs
                    .get_or_create(&JobOutcome {
                        job: job.to_string(),
                        outcome: outcome.as_str(),
                    })
                    .inc();
                self.last_duration.get_or_create(&one).set(took);
                if *outcome == Outcome::Success {
                    self.last_success
                        .get_or_create(&one)
                        .set(seconds(Utc::now()));
                }
            }
            Event::RunSkipped { job, reason, .. } if known => {
                self.skipped
                    .get_or_create(&JobReason {
                        job: job.to_string(),
                        reason: reason.as_str(),
                    })
                    .inc();
            }
            Event::RunMissed {
                job, count, reason, ..
            } if known => {
                self.missed
                    .get_or_create(&JobReason {
                        job: job.to_string(),
                        reason: reason.as_str(),
                    })
                    .inc_by(*count);
            }
            Event::ConfigReloaded { .. } => {
                self.reloads
                    .get_or_create(&ResultLabel { result: "applied" })
                    .inc();
            }
            Event::ConfigRejected { .. } => {
                self.reloads
                    .get_or_create(&ResultLabel { result: "rejected" })
                    .inc();
            }
            _ => {}
        }
    }

    /// The text exposition (OpenMetrics text, which Prometheus reads).
    pub(super) fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %err, "encoding the metrics failed");
        }
        out
    }
}
