//! The runs in flight, by run id, for the control socket: `chime status` lists them
//! (job, pid, elapsed time) and `chime kill` ends one the way a timeout does.
//!
//! Every run registers at its hand-over and leaves at its end, so the registry is on
//! the hot path of a burst: it is split into shards by run id, each under its own
//! lock, and a run takes one lock twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::events::Trigger;
use crate::exec::OutputSink;

const SHARDS: usize = 16;
/// `killed_by` while nobody killed the run.
const NOBODY: u64 = u64::MAX;
/// `killed_by` of a run ended by a fence (no uid: uids are 32 bits).
const FENCED: u64 = u64::MAX - 1;

/// One run in flight, as the control socket sees it.
#[derive(Debug)]
pub struct LiveRun {
    pub job: Arc<str>,
    pub run_id: Arc<str>,
    pub trigger: Trigger,
    pub scheduled_at: DateTime<Utc>,
    /// When it was handed over, on the wall clock and on the clock's steady time.
    pub started: DateTime<Utc>,
    pub started_steady: Duration,
    /// The run's own cancel token (a child of its job's): cancelling it ends this run
    /// only, and drops its retries.
    cancel: CancellationToken,
    /// The uid of the operator who killed it, or [`NOBODY`].
    killed_by: AtomicU64,
    /// The run's output sink, which knows the pid of its current attempt.
    output: OnceLock<Arc<OutputSink>>,
}

impl LiveRun {
    pub(crate) fn new(
        job: Arc<str>,
        run_id: Arc<str>,
        trigger: Trigger,
        scheduled_at: DateTime<Utc>,
        started: (DateTime<Utc>, Duration),
        cancel: CancellationToken,
    ) -> Self {
        LiveRun {
            job,
            run_id,
            trigger,
            scheduled_at,
            started: started.0,
            started_steady: started.1,
            cancel,
            killed_by: AtomicU64::new(NOBODY),
            output: OnceLock::new(),
        }
    }

    pub(crate) fn attach_output(&self, output: &Arc<OutputSink>) {
        let _ = self.output.set(Arc::clone(output));
    }

    /// The process of the current attempt (shell jobs, once spawned).
    pub fn pid(&self) -> Option<u32> {
        self.output.get().and_then(|output| output.pid())
    }

    /// Ends the run as a timeout would (the executor sends its group SIGTERM, then
    /// SIGKILL after `kill_grace`), with no retry. Returns false when someone already
    /// killed it (the first caller is the one reported).
    pub fn kill(&self, caller_uid: u32) -> bool {
        let first = self
            .killed_by
            .compare_exchange(
                NOBODY,
                u64::from(caller_uid),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        self.cancel.cancel();
        first
    }

    /// Ends the run as [`Self::kill`] does, for a replica that lost its lease
    /// (DESIGN.md §13); unless an operator killed it first, it is reported as fenced.
    pub fn fence(&self) {
        let _ =
            self.killed_by
                .compare_exchange(NOBODY, FENCED, Ordering::AcqRel, Ordering::Acquire);
        self.cancel.cancel();
    }

    /// Whether a fence ended it.
    pub fn fenced(&self) -> bool {
        self.killed_by.load(Ordering::Acquire) == FENCED
    }

    /// Who killed it, if an operator did.
    pub fn killed_by(&self) -> Option<u32> {
        match self.killed_by.load(Ordering::Acquire) {
            NOBODY => None,
            uid => u32::try_from(uid).ok(),
        }
    }
}

/// One shard of the registry.
type Shard = Mutex<HashMap<Arc<str>, Arc<LiveRun>>>;

/// Runs in flight by run id.
#[derive(Debug)]
pub struct LiveRuns {
    shards: Box<[Shard]>,
}

impl Default for LiveRuns {
    fn default() -> Self {
        LiveRuns {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LiveRuns {
    fn shard(&self, run_id: &str) -> &Shard {
        // Run ids end in a random hex digit; any byte spreads well enough.
        let byte = run_id.as_bytes().last().copied().unwrap_or(0);
        &self.shards[usize::from(byte) % SHARDS]
    }

    pub(crate) fn insert(&self, run: Arc<LiveRun>) {
        lock(self.shard(&run.run_id)).insert(Arc::clone(&run.run_id), run);
    }

    pub(crate) fn remove(&self, run_id: &str) {
        lock(self.shard(run_id)).remove(run_id);
    }

    pub fn get(&self, run_id: &str) -> Option<Arc<LiveRun>> {
        lock(self.shard(run_id)).get(run_id).cloned()
    }

    /// Every run in flight, oldest first.
    pub fn all(&self) -> Vec<Arc<LiveRun>> {
        let mut runs: Vec<Arc<LiveRun>> = self
            .shards
            .iter()
            .flat_map(|shard| lock(shard).values().cloned().collect::<Vec<_>>())
            .collect();
        runs.sort_by_key(|run| run.started_steady);
        runs
    }

    /// The job's runs in flight, oldest first.
    pub fn of_job(&self, job: &str) -> Vec<Arc<LiveRun>> {
        let mut runs = self.all();
        runs.retain(|run| &*run.job == job);
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, job: &str) -> Arc<LiveRun> {
        Arc::new(LiveRun::new(
            job.into(),
            id.into(),
            Trigger::Manual,
            Utc::now(),
            (Utc::now(), Duration::ZERO),
            CancellationToken::new(),
        ))
    }

    #[test]
    fn registry_finds_runs_by_id_and_job() {
        let live = LiveRuns::default();
        live.insert(run("00000000000000a1", "a"));
        live.insert(run("00000000000000b2", "b"));
        live.insert(run("00000000000000a3", "a"));
        assert_eq!(live.all().len(), 3);
        assert_eq!(live.of_job("a").len(), 2);
        assert!(live.get("00000000000000b2").is_some());
        live.remove("00000000000000b2");
        assert!(live.get("00000000000000b2").is_none());
        assert!(live.of_job("b").is_empty());
    }

    proptest::proptest! {
        /// Inserts and removals in any order, against a plain map of id → job.
        #[test]
        fn the_registry_matches_a_plain_map(
            ops in proptest::collection::vec((proptest::bool::ANY, 0u8..40, 0u8..3), 0..120)
        ) {
            let live = LiveRuns::default();
            let mut model: std::collections::BTreeMap<String, String> = Default::default();
            for (insert, id, job) in ops {
                let id = format!("{id:016x}");
                let job = format!("job{job}");
                if insert && !model.contains_key(&id) {
                    live.insert(run(&id, &job));
                    model.insert(id, job);
                } else if !insert {
                    live.remove(&id);
                    model.remove(&id);
                }
                let all: std::collections::BTreeMap<String, String> = live
                    .all()
                    .iter()
                    .map(|r| (r.run_id.to_string(), r.job.to_string()))
                    .collect();
                proptest::prop_assert_eq!(&all, &model);
                for job in ["job0", "job1", "job2"] {
                    let of_job = live.of_job(job).len();
                    proptest::prop_assert_eq!(of_job, model.values().filter(|j| *j == job).count());
                }
            }
        }
    }

    #[test]
    fn the_first_kill_is_the_one_reported() {
        let one = run("x", "a");
        assert!(one.kill(1000));
        assert!(!one.kill(0));
        assert_eq!(one.killed_by(), Some(1000));
        assert!(one.cancel.is_cancelled());
    }
}
