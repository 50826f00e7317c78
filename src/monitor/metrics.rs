//! The Prometheus metrics of DESIGN.md §12, kept with `prometheus-client` and fed by
//! the monitor thread. Per job only counters and gauges; histograms are service-wide.
//!
//! The per-job series live in one table, a row of plain numbers per job, written out
//! through `prometheus-client`'s encoder by a [`Collector`]: with 100,000 jobs, a
//! `Family` per metric (a hash map of label strings to separately allocated atomics)
//! spent most of a scrape on cache misses (`perf`: 600,000 series, ~390 ns each).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::events::{Event, MissReason, Outcome, SkipReason};

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

type DurationFamily = Family<OutcomeLabel, Histogram, fn() -> Histogram>;

const OUTCOMES: [Outcome; 5] = [
    Outcome::Success,
    Outcome::Failure,
    Outcome::Timeout,
    Outcome::Killed,
    Outcome::Cancelled,
];
/// Every [`SkipReason`], in [`skip_index`]'s order.
const SKIP_REASONS: [SkipReason; 5] = [
    SkipReason::Overlap,
    SkipReason::Disabled,
    SkipReason::Shutdown,
    SkipReason::Superseded,
    SkipReason::Paused,
];
/// Every [`MissReason`], in [`miss_index`]'s order.
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

/// One job's numbers; `None` (or zero, for counters) means "no series yet".
#[derive(Debug)]
struct Row {
    job: Arc<str>,
    /// By [`OUTCOMES`] index.
    runs: [u64; 5],
    last_duration: Option<f64>,
    /// Present once a run of the job started.
    running: Option<i64>,
    /// By [`SKIP_REASONS`] / [`MISS_REASONS`] index.
    skipped: [u64; SKIP_REASONS.len()],
    missed: [u64; MISS_REASONS.len()],
    last_run: Option<f64>,
    last_success: Option<f64>,
    next_fire: Option<f64>,
}

impl Row {
    fn new(job: Arc<str>) -> Row {
        Row {
            job,
            runs: [0; 5],
            last_duration: None,
            running: None,
            skipped: [0; SKIP_REASONS.len()],
            missed: [0; MISS_REASONS.len()],
            last_run: None,
            last_success: None,
            next_fire: None,
        }
    }
}

/// Every loaded job's row, in load order.
#[derive(Debug, Default)]
struct JobTable {
    index: HashMap<Arc<str>, usize>,
    rows: Vec<Row>,
}

impl JobTable {
    fn row(&mut self, job: &str) -> Option<&mut Row> {
        let at = *self.index.get(job)?;
        self.rows.get_mut(at)
    }
}

/// Writes the per-job families from the table.
#[derive(Debug)]
struct PerJob(Arc<Mutex<JobTable>>);

fn lock(table: &Mutex<JobTable>) -> std::sync::MutexGuard<'_, JobTable> {
    table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Collector for PerJob {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let table = lock(&self.0);
        let rows = &table.rows;
        let counter = |encoder: &mut DescriptorEncoder,
                       name: &str,
                       help: &str,
                       label: &str,
                       values: &[&'static str],
                       of: fn(&Row) -> &[u64]|
         -> Result<(), std::fmt::Error> {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for row in rows {
                for (value, &count) in values.iter().zip(of(row)) {
                    if count > 0 {
                        let labels = [("job", &*row.job), (label, *value)];
                        family
                            .encode_family(&labels)?
                            .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
                    }
                }
            }
            Ok(())
        };
        let gauge = |encoder: &mut DescriptorEncoder,
                     name: &str,
                     help: &str,
                     of: fn(&Row) -> Option<f64>|
         -> Result<(), std::fmt::Error> {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for row in rows {
                if let Some(value) = of(row) {
                    let labels = [("job", &*row.job)];
                    family.encode_family(&labels)?.encode_gauge(&value)?;
                }
            }
            Ok(())
        };
        counter(
            &mut encoder,
            "runs",
            "Runs finished, by job and outcome",
            "outcome",
            &OUTCOMES.map(Outcome::as_str),
            |row| &row.runs,
        )?;
        gauge(
            &mut encoder,
            "last_duration_seconds",
            "How long the job's last run took",
            |row| row.last_duration,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "running",
                "Runs of the job in flight",
                None,
                MetricType::Gauge,
            )?;
            for row in rows {
                if let Some(running) = row.running {
                    let labels = [("job", &*row.job)];
                    family.encode_family(&labels)?.encode_gauge(&running)?;
                }
            }
        }
        counter(
            &mut encoder,
            "missed_fires",
            "Fires missed, by job and reason",
            "reason",
            &MISS_REASONS.map(MissReason::as_str),
            |row| &row.missed,
        )?;
        counter(
            &mut encoder,
            "skipped_fires",
            "Fires skipped, by job and reason",
            "reason",
            &SKIP_REASONS.map(SkipReason::as_str),
            |row| &row.skipped,
        )?;
        gauge(
            &mut encoder,
            "last_run_timestamp_seconds",
            "When the job's last run started (Unix time)",
            |row| row.last_run,
        )?;
        gauge(
            &mut encoder,
            "last_success_timestamp_seconds",
            "When the job's last successful run ended (Unix time; kept across restarts with the state store)",
            |row| row.last_success,
        )?;
        gauge(
            &mut encoder,
            "next_fire_timestamp_seconds",
            "The job's next scheduled fire (Unix time)",
            |row| row.next_fire,
        )
    }
}

pub(super) struct Metrics {
    registry: Registry,
    jobs_table: Arc<Mutex<JobTable>>,
    run_duration: DurationFamily,
    lateness: Histogram,
    reloads: Family<ResultLabel, Counter>,
    jobs: Gauge,
}

fn seconds(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

/// `reason`'s place in [`SKIP_REASONS`]; exhaustive, so a new reason must be listed.
fn skip_index(reason: SkipReason) -> usize {
    match reason {
        SkipReason::Overlap => 0,
        SkipReason::Disabled => 1,
        SkipReason::Shutdown => 2,
        SkipReason::Superseded => 3,
        SkipReason::Paused => 4,
    }
}

/// `reason`'s place in [`MISS_REASONS`]; exhaustive, as [`skip_index`].
fn miss_index(reason: MissReason) -> usize {
    match reason {
        MissReason::Deadline => 0,
        MissReason::ClockJump => 1,
        MissReason::LateWakeup => 2,
        MissReason::Downtime => 3,
    }
}

fn position<T: PartialEq>(all: &[T], one: T) -> usize {
    all.iter().position(|x| *x == one).unwrap_or(0)
}

impl Metrics {
    pub(super) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("chime");
        let jobs_table = Arc::new(Mutex::new(JobTable::default()));
        registry.register_collector(Box::new(PerJob(Arc::clone(&jobs_table))));
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
            jobs_table,
            run_duration,
            lateness,
            reloads,
            jobs,
        }
    }

    /// Last successes from the state store, for the jobs loaded.
    pub(super) fn restore_last_success(&self, last: &HashMap<String, DateTime<Utc>>) {
        let mut table = lock(&self.jobs_table);
        for (job, at) in last {
            if let Some(row) = table.row(job) {
                row.last_success = Some(seconds(*at));
            }
        }
    }

    /// A set of jobs was loaded: rows of kept jobs stay, removed jobs' rows (and so
    /// their series) go, new jobs get empty rows.
    pub(super) fn jobs_loaded<'a>(&self, names: impl Iterator<Item = &'a Arc<str>>) {
        let mut table = lock(&self.jobs_table);
        let JobTable { index, rows } = std::mem::take(&mut *table);
        let mut old: Vec<Option<Row>> = rows.into_iter().map(Some).collect();
        for name in names {
            let row = index
                .get(name)
                .and_then(|&at| old.get_mut(at).and_then(Option::take))
                .unwrap_or_else(|| Row::new(Arc::clone(name)));
            let at = table.rows.len();
            table.index.insert(Arc::clone(name), at);
            table.rows.push(row);
        }
        self.jobs
            .set(i64::try_from(table.rows.len()).unwrap_or(i64::MAX));
    }

    pub(super) fn set_next_fire(&self, job: &str, at: Option<DateTime<Utc>>) {
        if let Some(row) = lock(&self.jobs_table).row(job) {
            row.next_fire = at.map(seconds);
        }
    }

    /// `first`: the run's first `run.started` (retries are the same run). `known`: the
    /// event's job is loaded. `running`: a `run.finished` whose start was counted in
    /// `chime_running` (and the job not removed since). `at`: when it was emitted.
    pub(super) fn observe(
        &self,
        event: &Event,
        at: DateTime<Utc>,
        first: bool,
        known: bool,
        running: bool,
    ) {
        match event {
            Event::RunStarted {
                job,
                scheduled_at,
                lateness_ms,
                ..
            } if first => {
                self.lateness.observe(lateness_ms / 1000.0);
                if known && let Some(row) = lock(&self.jobs_table).row(job) {
                    row.last_run = Some(seconds(*scheduled_at) + lateness_ms / 1000.0);
                    *row.running.get_or_insert(0) += 1;
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
                if let Some(row) = lock(&self.jobs_table).row(job) {
                    if running && let Some(count) = &mut row.running {
                        *count -= 1;
                    }
                    row.runs[position(&OUTCOMES, *outcome)] += 1;
                    row.last_duration = Some(took);
                    if *outcome == Outcome::Success {
                        row.last_success = Some(seconds(at));
                    }
                }
            }
            Event::RunSkipped { job, reason, .. } if known => {
                if let Some(row) = lock(&self.jobs_table).row(job) {
                    row.skipped[skip_index(*reason)] += 1;
                }
            }
            Event::RunMissed {
                job, count, reason, ..
            } if known => {
                if let Some(row) = lock(&self.jobs_table).row(job) {
                    row.missed[miss_index(*reason)] += count;
                }
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
    pub(super) fn encode(&self, size_hint: usize) -> String {
        let mut out = String::with_capacity(size_hint + size_hint / 8);
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %err, "encoding the metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_slot() {
        for (i, reason) in SKIP_REASONS.into_iter().enumerate() {
            assert_eq!(skip_index(reason), i, "{}", reason.as_str());
        }
        for (i, reason) in MISS_REASONS.into_iter().enumerate() {
            assert_eq!(miss_index(reason), i, "{}", reason.as_str());
        }
    }
}
