//! The plain model of the state store that every `Store` implementation is checked
//! against (tests/state_store.rs for SQLite, tests/pg_store.rs for PostgreSQL): random
//! sequences of run starts, retries, ends, handled fires, interruptions, pauses and
//! prunes, with every query compared after each step.

#![allow(dead_code)] // Each test file uses a different part of this module.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

use chime::state::{HistoryQuery, RunEnd, RunRecord, RunStart, Store, Write};

const JOBS: &[&str] = &["a", "b", "c"];
const OUTCOMES: &[&str] = &["success", "failure", "timeout", "cancelled"];

pub fn t(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_800_000_000_000 + ms)
        .single()
        .expect("a valid instant")
}

#[derive(Debug, Clone)]
pub enum Op {
    Start {
        job: usize,
        at: i64,
    },
    Retry {
        pick: usize,
    },
    Finish {
        pick: usize,
        outcome: usize,
        at: i64,
    },
    Handled {
        job: usize,
        at: i64,
    },
    Interrupt {
        pick: usize,
    },
    Pause {
        job: usize,
        paused: bool,
    },
    Prune {
        before: i64,
        keep: usize,
    },
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..JOBS.len(), 0..50i64).prop_map(|(job, at)| Op::Start { job, at }),
        1 => any::<usize>().prop_map(|pick| Op::Retry { pick }),
        3 => (any::<usize>(), 0..OUTCOMES.len(), 0..50i64)
            .prop_map(|(pick, outcome, at)| Op::Finish { pick, outcome, at }),
        2 => (0..JOBS.len(), 0..50i64).prop_map(|(job, at)| Op::Handled { job, at }),
        1 => any::<usize>().prop_map(|pick| Op::Interrupt { pick }),
        1 => (0..JOBS.len(), any::<bool>()).prop_map(|(job, paused)| Op::Pause { job, paused }),
        1 => (0..50i64, 0..4usize).prop_map(|(before, keep)| Op::Prune { before, keep }),
    ]
}

#[derive(Debug, Clone)]
struct ModelRun {
    seq: u64,
    record: RunRecord,
}

#[derive(Debug, Default)]
struct ModelJob {
    last_handled: Option<DateTime<Utc>>,
    last_run_id: Option<String>,
    failures: u32,
    paused: bool,
}

#[derive(Debug, Default)]
pub struct Model {
    runs: BTreeMap<String, ModelRun>,
    jobs: BTreeMap<String, ModelJob>,
    seq: u64,
    next_id: u64,
}

impl Model {
    fn running(&self) -> Vec<String> {
        self.runs
            .values()
            .filter(|r| r.record.status == "running")
            .map(|r| r.record.run_id.clone())
            .collect()
    }

    fn ordered(&self) -> Vec<&ModelRun> {
        let mut all: Vec<&ModelRun> = self.runs.values().collect();
        all.sort_by_key(|r| std::cmp::Reverse((r.record.started, r.seq)));
        all
    }

    /// Applies `op` to the model and returns the write(s) for the store, or a prune.
    pub fn step(&mut self, op: &Op) -> Option<Result<Write, (DateTime<Utc>, usize)>> {
        match op {
            Op::Start { job, at } => {
                self.next_id += 1;
                self.seq += 1;
                let run_id = format!("run{:04}", self.next_id);
                let job = JOBS[*job].to_string();
                let start = RunStart {
                    job: job.clone(),
                    run_id: run_id.clone(),
                    scheduled_at: t(*at),
                    trigger: "schedule".into(),
                    attempt: 1,
                    started: t(*at),
                    lateness_ms: 1.5,
                    pid: Some(100 + self.next_id as u32),
                    pid_start: Some(7),
                };
                self.runs.insert(
                    run_id.clone(),
                    ModelRun {
                        seq: self.seq,
                        record: RunRecord {
                            job: job.clone(),
                            run_id: run_id.clone(),
                            scheduled_at: t(*at),
                            trigger: "schedule".into(),
                            attempts: 1,
                            status: "running".into(),
                            exit_code: None,
                            signal: None,
                            http_status: None,
                            error: None,
                            started: t(*at),
                            finished: None,
                            duration_ms: None,
                            lateness_ms: 1.5,
                            pid: start.pid,
                            pid_start: start.pid_start,
                            output_tail: None,
                        },
                    },
                );
                self.jobs.entry(job).or_default().last_run_id = Some(run_id);
                Some(Ok(Write::Started(start)))
            }
            Op::Retry { pick } => {
                let running = self.running();
                let id = running.get(pick % running.len().max(1))?.clone();
                let run = &mut self.runs.get_mut(&id)?.record;
                run.attempts += 1;
                Some(Ok(Write::Started(RunStart {
                    job: run.job.clone(),
                    run_id: id,
                    scheduled_at: run.scheduled_at,
                    trigger: "retry".into(),
                    attempt: run.attempts,
                    started: run.started,
                    lateness_ms: 99.0,
                    pid: None,
                    pid_start: None,
                })))
            }
            Op::Finish { pick, outcome, at } => {
                let running = self.running();
                let id = running.get(pick % running.len().max(1))?.clone();
                let outcome = OUTCOMES[*outcome].to_string();
                let run = &mut self.runs.get_mut(&id)?.record;
                let end = RunEnd {
                    run_id: id.clone(),
                    attempts: run.attempts,
                    outcome: outcome.clone(),
                    exit_code: Some(if outcome == "success" { 0 } else { 1 }),
                    signal: None,
                    http_status: None,
                    error: (outcome == "timeout").then(|| "timed out".to_string()),
                    finished: t(*at + 100),
                    duration_ms: 42,
                    output_tail: format!("tail of {id}\n"),
                };
                run.status = outcome.clone();
                run.exit_code = end.exit_code;
                run.error = end.error.clone();
                run.finished = Some(end.finished);
                run.duration_ms = Some(42);
                run.output_tail = Some(end.output_tail.clone());
                let job = self.jobs.entry(run.job.clone()).or_default();
                job.failures = if outcome == "success" {
                    0
                } else {
                    job.failures + 1
                };
                Some(Ok(Write::Finished(end)))
            }
            Op::Handled { job, at } => {
                let entry = self.jobs.entry(JOBS[*job].to_string()).or_default();
                entry.last_handled = Some(entry.last_handled.map_or(t(*at), |h| h.max(t(*at))));
                Some(Ok(Write::Handled {
                    job: JOBS[*job].to_string(),
                    at: t(*at),
                }))
            }
            Op::Interrupt { pick } => {
                let running = self.running();
                let id = running.get(pick % running.len().max(1))?.clone();
                let at = t(60);
                let run = &mut self.runs.get_mut(&id)?.record;
                run.status = "interrupted".into();
                run.finished = Some(at);
                run.duration_ms = Some((at - run.started).num_milliseconds().max(0) as u64);
                Some(Ok(Write::Interrupted { run_id: id, at }))
            }
            Op::Pause { job, paused } => {
                self.jobs.entry(JOBS[*job].to_string()).or_default().paused = *paused;
                Some(Ok(Write::Paused {
                    job: JOBS[*job].to_string(),
                    paused: *paused,
                }))
            }
            Op::Prune { before, keep } => {
                let before = t(*before);
                self.runs
                    .retain(|_, r| r.record.status == "running" || r.record.started >= before);
                let mut rank: HashMap<String, usize> = HashMap::new();
                let mut doomed = Vec::new();
                for run in self.ordered() {
                    let n = rank.entry(run.record.job.clone()).or_default();
                    *n += 1;
                    if *n > *keep && run.record.status != "running" {
                        doomed.push(run.record.run_id.clone());
                    }
                }
                for id in doomed {
                    self.runs.remove(&id);
                }
                Some(Err((before, *keep)))
            }
        }
    }

    /// Applies `ops` to a fresh model and to `store`, in batches of `batch` writes as
    /// the writer sends them, checking every query after each batch and prune.
    pub fn run(store: &mut dyn Store, ops: &[Op], batch: usize) -> Model {
        let mut model = Model::default();
        let mut pending = Vec::new();
        for op in ops {
            match model.step(op) {
                None => {}
                Some(Ok(write)) => {
                    pending.push(write);
                    if pending.len() >= batch {
                        store.apply(&pending).expect("the batch applies");
                        pending.clear();
                        model.check(store);
                    }
                }
                Some(Err((before, keep))) => {
                    store.apply(&pending).expect("the batch applies");
                    pending.clear();
                    store.prune(before, keep).expect("prune");
                    model.check(store);
                }
            }
        }
        store.apply(&pending).expect("the batch applies");
        model.check(store);
        model
    }

    pub fn check(&self, store: &dyn Store) {
        let handled = store.last_handled().expect("last_handled");
        let expected: HashMap<String, DateTime<Utc>> = self
            .jobs
            .iter()
            .filter_map(|(name, job)| Some((name.clone(), job.last_handled?)))
            .collect();
        assert_eq!(handled, expected, "last handled fires");

        let mut unfinished: Vec<String> = store
            .unfinished_runs()
            .expect("unfinished")
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        unfinished.sort();
        assert_eq!(unfinished, self.running(), "unfinished runs");

        let paused: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.paused)
            .map(|(n, _)| n.clone())
            .collect();
        assert_eq!(store.paused_jobs().expect("paused"), paused, "paused jobs");

        let all = store
            .runs(&HistoryQuery {
                limit: 10_000,
                ..HistoryQuery::default()
            })
            .expect("runs");
        let expected: Vec<RunRecord> = self
            .ordered()
            .into_iter()
            .map(|r| r.record.clone())
            .collect();
        assert_eq!(all, expected, "every run, newest first");

        for job in JOBS {
            let query = HistoryQuery {
                job: Some(job.to_string()),
                failed_only: true,
                limit: 2,
                ..HistoryQuery::default()
            };
            let got: Vec<String> = store
                .runs(&query)
                .expect("runs")
                .into_iter()
                .map(|r| r.run_id)
                .collect();
            let want: Vec<String> = expected
                .iter()
                .filter(|r| r.job == *job && r.failed())
                .take(2)
                .map(|r| r.run_id.clone())
                .collect();
            assert_eq!(got, want, "the newest 2 failed runs of {job}");
        }

        let summaries = store.job_summaries().expect("summaries");
        assert_eq!(
            summaries.iter().map(|s| s.job.as_str()).collect::<Vec<_>>(),
            self.jobs.keys().map(String::as_str).collect::<Vec<_>>()
        );
        for summary in summaries {
            let job = &self.jobs[&summary.job];
            assert_eq!(
                summary.failures_in_row, job.failures,
                "failures of {}",
                summary.job
            );
            assert_eq!(summary.paused, job.paused);
            assert_eq!(summary.last_handled, job.last_handled);
            let last = job
                .last_run_id
                .as_ref()
                .and_then(|id| self.runs.get(id))
                .map(|r| r.record.clone());
            assert_eq!(summary.last_run, last, "last run of {}", summary.job);
            let running = self
                .runs
                .values()
                .filter(|r| r.record.job == summary.job && r.record.status == "running")
                .count() as u32;
            assert_eq!(summary.running, running);
        }
    }
}
