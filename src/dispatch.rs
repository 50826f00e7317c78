//! Dispatch: decides what becomes of each fire under the overlap policy, the
//! concurrency limit and `starting_deadline` (start, queue, or skip), and hands the
//! runs it starts over to [`crate::run`], which carries each out to the release of its
//! slot. It tracks every run task so that shutdown can drain or terminate them.
//!
//! Dispatch is on the hot path of a burst (10,000 jobs due at one instant), so it
//! shares as little as possible: each job's runs are tracked in that job's own
//! [`JobRuns`] (handed over by the scheduler with the fire), the count of runs in
//! flight is an atomic, and the one shared lock — the queue of fires waiting for a
//! free slot — is only taken when `--max-concurrent-runs` is set.
//!
//! **The queue** (DESIGN.md §4) holds jobs, not fires: a job waits in line at most once,
//! and its one waiting fire lives in its [`JobRuns`]. A newer fire takes the waiting
//! one's place (that one is logged as superseded), so the queue is bounded by the
//! number of jobs and a job that fell behind runs once, for its latest fire, as a
//! catch-up does. A running `overlap: skip` job is not queued at all.
//!
//! **Shutdown.** Once [`Dispatcher::stop_accepting`] has returned no run starts, not
//! even one that was already dispatched: every attempt is admitted just before its
//! `run.started` (by [`crate::run`]), and a fire refused there is logged as
//! skipped for shutdown. The admission is an atomic count, not a lock, so the hot path
//! stays lock-free.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::events::{Event, Events, MissReason, SkipReason, Trigger};
use crate::exec::Executor;
use crate::health::{Failure, Health, catch_panic};
use crate::job::{Job, Overlap};
use crate::run::{
    Handover, InFlight, JobRecord, LiveRuns, Run, RunSettings, Runner, Slot, Slots, new_run_id,
};

/// What the dispatcher keeps of one job (by name): its runs in flight and its fire
/// waiting for a slot. Shared by the job's scheduler entry and its runs; it outlives
/// reloads that change the job, so overlap rules see runs started under an older
/// definition.
#[derive(Debug, Default)]
pub struct JobRuns {
    state: Mutex<JobState>,
    /// A child of the dispatcher's stop-retries token, made at the job's first run.
    stop_retries: OnceLock<CancellationToken>,
}

/// What the dispatcher keeps of one job, under the job's lock.
#[derive(Debug, Default)]
struct JobState {
    /// The job's runs in flight (the run module's part).
    in_flight: InFlight,
    /// The job's one fire waiting for a free slot (only with a limit). The dispatcher's
    /// queue holds the job's place in line; the fire itself is kept here so that a
    /// newer one replaces it without a search of the queue.
    queued: Option<Waiting>,
}

/// A fire waiting for a free slot. Not a [`Fire`]: that holds the job's [`JobRuns`],
/// which holds this.
#[derive(Debug)]
struct Waiting {
    job: Arc<Job>,
    name: Arc<str>,
    scheduled_at: DateTime<Utc>,
    trigger: Trigger,
    /// When it was queued, on the clock's steady time, so that `queued_ms` does not
    /// count a step of the wall clock.
    since: Duration,
    /// A manual run (`chime trigger`): its run id, known to the operator already.
    manual: Option<Manual>,
}

impl Waiting {
    fn into_fire(self, runs: Arc<JobRuns>) -> Fire {
        Fire {
            job: self.job,
            name: self.name,
            runs,
            scheduled_at: self.scheduled_at,
            trigger: self.trigger,
        }
    }
}

/// What an operator's `chime trigger` adds to a fire: the run's id, chosen before the
/// run starts so that `--wait` can follow it from its first event, and who asked.
#[derive(Debug, Clone)]
pub struct Manual {
    pub run_id: Arc<str>,
    pub caller_uid: u32,
}

/// What became of a manual fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatched {
    Started,
    /// Waiting for a free slot under `--max-concurrent-runs`.
    Queued,
    Skipped(SkipReason),
}

/// What the limit made of a fire.
enum Admission {
    Start(Fire, Option<Manual>),
    Queued,
    Skipped(SkipReason),
}

/// The paused jobs (`chime pause`), by name: their scheduled fires are skipped
/// (`run.skipped reason=paused`); manual runs still start. The scheduling thread reads
/// it at every fire, so while nothing is paused a fire costs one atomic load.
#[derive(Debug, Default)]
pub struct PausedJobs {
    any: AtomicBool,
    names: RwLock<BTreeSet<String>>,
}

impl PausedJobs {
    fn names(&self) -> std::sync::RwLockReadGuard<'_, BTreeSet<String>> {
        self.names
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn edit<R>(&self, f: impl FnOnce(&mut BTreeSet<String>) -> R) -> R {
        let mut names = self
            .names
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = f(&mut names);
        self.any.store(!names.is_empty(), Ordering::Release);
        result
    }

    pub fn is_paused(&self, job: &str) -> bool {
        self.any.load(Ordering::Acquire) && self.names().contains(job)
    }

    /// Pauses a job; false if it was paused already.
    pub fn pause(&self, job: &str) -> bool {
        self.edit(|names| names.insert(job.to_string()))
    }

    /// Resumes a job; false if it was not paused.
    pub fn resume(&self, job: &str) -> bool {
        self.edit(|names| names.remove(job))
    }

    /// Makes `names` the paused jobs (with replicas: the cluster database's pauses,
    /// after another replica changed them); the jobs newly paused and newly resumed.
    pub fn set_all(&self, names: BTreeSet<String>) -> (Vec<String>, Vec<String>) {
        self.edit(|old| {
            let paused = names.difference(old).cloned().collect();
            let resumed = old.difference(&names).cloned().collect();
            *old = names;
            (paused, resumed)
        })
    }

    /// The paused jobs, sorted by name.
    pub fn list(&self) -> Vec<String> {
        self.names().iter().cloned().collect()
    }
}

impl JobRuns {
    fn lock(&self) -> MutexGuard<'_, JobState> {
        lock(&self.state)
    }
}

impl JobRecord for JobRuns {
    fn with_in_flight<R>(&self, f: impl FnOnce(&mut InFlight) -> R) -> R {
        f(&mut self.lock().in_flight)
    }
}

/// One fire of a job.
#[derive(Debug, Clone)]
pub struct Fire {
    pub job: Arc<Job>,
    /// The job's name, shared (events carry it without copying).
    pub name: Arc<str>,
    pub runs: Arc<JobRuns>,
    pub scheduled_at: DateTime<Utc>,
    pub trigger: Trigger,
}

/// Where fires are claimed before they run, with replicas (`crate::cluster`).
pub trait Gate: Send + Sync + 'static {
    /// Takes a fire to claim; it must not block.
    fn submit(&self, fire: Fire);
    /// The fires submitted so far are all that the scheduler had due at this wake-up:
    /// they can be claimed together.
    fn flush(&self) {}
    /// How long before its instant a fire is handed over, so that its claim is back
    /// by then: the gate holds a won fire until its instant ([`Dispatcher::fire_claimed`]
    /// then). Zero (the default): at the instant.
    fn ahead(&self) -> Duration {
        Duration::ZERO
    }
    /// Shutdown: the fires held whose instant has not come are let go (not run, and
    /// not reported: their instant never came while the service ran).
    fn stop(&self) {}
}

/// Hands fires to runs. Cheap to clone; clones share one state.
pub struct Dispatcher<E, C> {
    inner: Arc<Inner<E, C>>,
}

impl<E, C> Clone for Dispatcher<E, C> {
    fn clone(&self) -> Self {
        Dispatcher {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<E, C> {
    /// Where runs are spawned: the runtime that created the dispatcher, even when fires
    /// come from the scheduler's own thread.
    runtime: tokio::runtime::Handle,
    /// What every run shares, and the admission of their attempts.
    runner: Runner<E, C>,
    /// 0 = no limit.
    max_concurrent: usize,
    /// Runs in flight, plus slots reserved for runs about to start.
    active: AtomicUsize,
    /// Jobs with a fire waiting for a slot (only with a limit), in the order they began
    /// to wait: exactly the jobs whose [`JobState::queued`] is set. Lock order: this
    /// queue, then a job's state.
    queue: Mutex<VecDeque<Arc<JobRuns>>>,
    tracker: TaskTracker,
    /// With replicas: scheduled and catch-up fires are claimed there first, and come
    /// back through [`Dispatcher::fire_claimed`] when the claim was won.
    gate: OnceLock<Arc<dyn Gate>>,
    /// Where a run that panics is reported (the service's health), once set.
    failures: OnceLock<Health>,
    paused: Arc<PausedJobs>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stay consistent at every await-free step; after a panic
    // elsewhere, carrying on is better than stopping the service.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<E: Executor, C: Clock> Dispatcher<E, C> {
    /// Must be called inside the tokio runtime that is to run the jobs.
    pub fn new(
        executor: E,
        clock: Arc<C>,
        events: Events,
        settings: RunSettings,
        max_concurrent: usize,
    ) -> Self {
        Dispatcher {
            inner: Arc::new(Inner {
                runtime: tokio::runtime::Handle::current(),
                runner: Runner::new(executor, clock, events, settings),
                max_concurrent,
                active: AtomicUsize::new(0),
                queue: Mutex::new(VecDeque::new()),
                tracker: TaskTracker::new(),
                gate: OnceLock::new(),
                failures: OnceLock::new(),
                paused: Arc::default(),
            }),
        }
    }

    /// Starts a run for the fire, queues it, or skips it, as the job's policy says.
    /// With a [`Gate`], scheduled and catch-up fires are claimed there first.
    pub fn fire(&self, fire: Fire) {
        if matches!(fire.trigger, Trigger::Schedule | Trigger::CatchUp)
            && let Some(gate) = self.inner.gate.get()
        {
            gate.submit(fire);
            return;
        }
        self.fire_claimed(fire);
    }

    /// Tells the gate (if any) that this wake-up's fires have all been handed over.
    pub fn flush_claims(&self) {
        if let Some(gate) = self.inner.gate.get() {
            gate.flush();
        }
    }

    /// How long before its instant the scheduler hands a fire over: the gate's
    /// [`Gate::ahead`], zero without one.
    pub fn claim_ahead(&self) -> Duration {
        self.inner
            .gate
            .get()
            .map_or(Duration::ZERO, |gate| gate.ahead())
    }

    /// Claims fires at `gate` from now on (the first call wins).
    pub fn claim_at(&self, gate: Arc<dyn Gate>) {
        let _ = self.inner.gate.set(gate);
    }

    /// Terminates every run in flight; later runs start as usual.
    pub fn fence(&self) {
        self.inner.runner.fence();
    }

    /// A fire claimed as skipped: its job runs on some replica (`overlap: skip`).
    pub fn skip_overlap(&self, fire: &Fire) {
        self.inner
            .runner
            .skip(&fire.name, fire.scheduled_at, SkipReason::Overlap);
    }

    /// A fire the cluster's claim found paused (on some replica, maybe before this one
    /// heard of it): skipped as a paused fire.
    pub fn skip_paused(&self, fire: &Fire) {
        self.inner
            .runner
            .skip(&fire.name, fire.scheduled_at, SkipReason::Paused);
    }

    /// A fire whose claim was won (or that needs none): as [`Self::fire`] without one.
    pub fn fire_claimed(&self, fire: Fire) {
        let inner = &self.inner;
        if inner.runner.is_stopping() {
            inner
                .runner
                .skip(&fire.name, fire.scheduled_at, SkipReason::Shutdown);
            return;
        }
        // A disabled or paused job still runs when asked by hand ([`Self::fire_manual`]).
        if !fire.job.enabled && fire.trigger != Trigger::Manual {
            inner
                .runner
                .skip(&fire.name, fire.scheduled_at, SkipReason::Disabled);
            return;
        }
        if fire.trigger != Trigger::Manual && inner.paused.is_paused(&fire.name) {
            inner
                .runner
                .skip(&fire.name, fire.scheduled_at, SkipReason::Paused);
            return;
        }
        self.admit(fire, None);
    }

    /// A run an operator asked for (`chime trigger`): through the same overlap policy
    /// and limit as a scheduled fire, on disabled and paused jobs too, and not bound by
    /// `starting_deadline` while it waits for a slot.
    pub fn fire_manual(&self, mut fire: Fire, manual: Manual) -> Dispatched {
        fire.trigger = Trigger::Manual;
        if self.inner.runner.is_stopping() {
            self.inner
                .runner
                .skip(&fire.name, fire.scheduled_at, SkipReason::Shutdown);
            return Dispatched::Skipped(SkipReason::Shutdown);
        }
        self.admit(fire, Some(manual))
    }

    /// Starts the fire, queues it or skips it, under the limit and overlap policy.
    fn admit(&self, fire: Fire, manual: Option<Manual>) -> Dispatched {
        let inner = &self.inner;
        let admission = if inner.max_concurrent == 0 {
            inner.active.fetch_add(1, Ordering::AcqRel);
            Admission::Start(fire, manual)
        } else {
            self.take_slot_or_queue(fire, manual)
        };
        match admission {
            Admission::Start(fire, manual) => {
                if self.start(fire, None, manual) {
                    Dispatched::Started
                } else {
                    self.release_slot();
                    Dispatched::Skipped(SkipReason::Overlap)
                }
            }
            Admission::Queued => Dispatched::Queued,
            Admission::Skipped(reason) => Dispatched::Skipped(reason),
        }
    }

    /// With a limit: reserves a free slot for the fire and hands it back to be started,
    /// or else queues it, replacing the job's waiting fire, or skips it.
    fn take_slot_or_queue(&self, fire: Fire, manual: Option<Manual>) -> Admission {
        let inner = &self.inner;
        let (name, scheduled_at, reason) = {
            let mut queue = lock(&inner.queue);
            // Checked again under the lock: `stop_accepting` drains the queue after
            // setting the flag, so a fire queued past this point would never leave it.
            if inner.runner.is_stopping() {
                (fire.name, fire.scheduled_at, SkipReason::Shutdown)
            } else {
                // Fires already waiting go first (fire order), hence a free slot alone
                // is not enough.
                if inner.active.load(Ordering::Acquire) < inner.max_concurrent && queue.is_empty() {
                    inner.active.fetch_add(1, Ordering::AcqRel);
                    return Admission::Start(fire, manual);
                }
                let mut state = fire.runs.lock();
                if fire.job.overlap == Overlap::Skip && state.in_flight.running() > 0 {
                    // It would be skipped when its turn came anyway; queuing it would
                    // only let the job's fires pile up and run in a burst.
                    (fire.name, fire.scheduled_at, SkipReason::Overlap)
                } else if state
                    .queued
                    .as_ref()
                    .is_some_and(|old| old.manual.is_some())
                {
                    // A manual run waiting keeps its place: its operator may be
                    // following it (`--wait`). The job has a run coming already.
                    (fire.name, fire.scheduled_at, SkipReason::Overlap)
                } else {
                    let waiting = Waiting {
                        job: fire.job,
                        name: fire.name,
                        scheduled_at: fire.scheduled_at,
                        trigger: fire.trigger,
                        since: inner.runner.clock().steady(),
                        manual,
                    };
                    // A newer fire takes the older one's place in line rather than
                    // going to the back: the job has been waiting since then, and a
                    // job that fires faster than slots free up would otherwise be
                    // pushed back for ever by its own fires.
                    match state.queued.replace(waiting) {
                        Some(old) => (old.name, old.scheduled_at, SkipReason::Superseded),
                        None => {
                            drop(state);
                            queue.push_back(fire.runs);
                            return Admission::Queued;
                        }
                    }
                }
            }
        };
        inner.runner.skip(&name, scheduled_at, reason);
        if reason == SkipReason::Superseded {
            // The older fire went; this one waits in its place.
            return Admission::Queued;
        }
        Admission::Skipped(reason)
    }

    /// Reports runs that panic to `health` (the first call wins).
    pub fn report_failures_to(&self, health: &Health) {
        let _ = self.inner.failures.set(health.clone());
    }

    /// The runtime runs are started on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.inner.runtime
    }

    /// A fresh run list for a job (once per job, kept across reloads).
    pub fn job_runs(&self) -> Arc<JobRuns> {
        Arc::new(JobRuns::default())
    }

    /// The paused jobs.
    pub fn paused(&self) -> &Arc<PausedJobs> {
        &self.inner.paused
    }

    /// The runs in flight, by run id.
    pub fn live(&self) -> &LiveRuns {
        self.inner.runner.live()
    }

    /// The clock runs are timed with.
    pub fn clock(&self) -> &Arc<C> {
        self.inner.runner.clock()
    }

    /// Runs in flight.
    pub fn active(&self) -> usize {
        self.inner.active.load(Ordering::Acquire)
    }

    /// Jobs with a fire waiting for a free slot (at most one fire each).
    pub fn queued(&self) -> usize {
        if self.inner.max_concurrent == 0 {
            return 0;
        }
        lock(&self.inner.queue).len()
    }

    /// Stops starting runs (the first step of [`Self::stop_accepting`]): once this
    /// returns, no `run.started` follows. The daemon calls it before it logs
    /// `service.stopping`, so that no run can be seen starting after that event.
    pub fn stop_starting(&self) {
        self.inner.runner.stop_starting();
    }

    /// Stops accepting fires: queued ones are skipped, new ones too, runs dispatched
    /// but not yet started (a `replace` waiting for the run it ends) are skipped when
    /// their turn comes, and pending retries are dropped. Running attempts go on.
    /// Once this returns, no `run.started` follows.
    pub fn stop_accepting(&self) {
        self.stop_starting();
        let inner = &self.inner;
        if let Some(gate) = inner.gate.get() {
            gate.stop();
        }
        let queued: Vec<Waiting> = lock(&inner.queue)
            .drain(..)
            .filter_map(|runs| runs.lock().queued.take())
            .collect();
        for waiting in queued {
            inner
                .runner
                .skip(&waiting.name, waiting.scheduled_at, SkipReason::Shutdown);
        }
        inner.runner.stop_retries();
        inner.tracker.close();
    }

    /// Terminates every run in flight (process groups get SIGTERM, then SIGKILL after
    /// their `kill_grace`).
    pub fn cancel_all(&self) {
        self.inner.runner.cancel_all();
    }

    /// The runs in flight, as `job (run_id)`, sorted.
    pub fn running_runs(&self) -> Vec<String> {
        let mut runs: Vec<String> = self
            .live()
            .all()
            .iter()
            .map(|run| format!("{} ({})", run.job, run.run_id))
            .collect();
        runs.sort();
        runs
    }

    /// Waits until every run has ended. Only meaningful after [`Self::stop_accepting`].
    pub async fn wait_idle(&self) {
        self.inner.tracker.wait().await;
    }

    /// Starts a run in a slot already counted in `active`, unless its overlap policy
    /// skips it: then it returns false and the slot is the caller's to release.
    /// `queued` is how long the fire waited for the slot.
    fn start(&self, fire: Fire, queued: Option<Duration>, manual: Option<Manual>) -> bool {
        let runner = &self.inner.runner;
        let (run_id, caller_uid) = match manual {
            Some(manual) => (manual.run_id, Some(manual.caller_uid)),
            None => (new_run_id(), None),
        };
        let stop_retries = fire
            .runs
            .stop_retries
            .get_or_init(|| runner.job_stop_retries())
            .clone();
        let entered = {
            let mut state = fire.runs.lock();
            if fire.job.overlap == Overlap::Skip && state.in_flight.running() > 0 {
                drop(state);
                runner.skip(&fire.name, fire.scheduled_at, SkipReason::Overlap);
                return false;
            }
            let replace = fire.job.overlap == Overlap::Replace;
            state.in_flight.enter(&run_id, replace, runner)
        };
        let handover = Handover {
            job: fire.job,
            name: fire.name,
            run_id,
            scheduled_at: fire.scheduled_at,
            trigger: fire.trigger,
            stop_retries,
            caller_uid,
            runs: fire.runs,
            queued,
        };
        let run = Run::new(handover, entered, Slot::new(self.clone()));
        // A panic in a run is a failure of chime, not of the job: it is reported, and
        // the service stops (exit code 3) rather than go on with a run unaccounted for.
        let failures = self.inner.failures.get().cloned();
        let task = async move {
            let outcome = catch_panic(run.run()).await;
            if let Err(payload) = outcome
                && let Some(health) = failures
            {
                health.fail(Failure::from_panic("run", payload));
            }
        };
        self.inner.tracker.spawn_on(task, &self.inner.runtime);
        true
    }

    /// A run ended (or a reserved slot went unused): start queued fires that now fit.
    fn release_slot(&self) {
        let inner = &self.inner;
        inner.active.fetch_sub(1, Ordering::AcqRel);
        if inner.max_concurrent == 0 {
            return;
        }
        loop {
            let (fire, waited, manual) = {
                let mut queue = lock(&inner.queue);
                if inner.active.load(Ordering::Acquire) >= inner.max_concurrent {
                    return;
                }
                let Some(runs) = queue.pop_front() else {
                    return;
                };
                let Some(waiting) = runs.lock().queued.take() else {
                    // Cannot happen: a job is in line exactly while it has a fire waiting.
                    continue;
                };
                inner.active.fetch_add(1, Ordering::AcqRel);
                let waited = inner.runner.clock().steady().saturating_sub(waiting.since);
                let manual = waiting.manual.clone();
                (waiting.into_fire(runs), waited, manual)
            };
            if let Some(deadline) = fire.job.starting_deadline.filter(|_| manual.is_none()) {
                let waited = inner.runner.clock().now() - fire.scheduled_at;
                if waited.to_std().is_ok_and(|waited| waited > deadline) {
                    inner.runner.events().emit(Event::RunMissed {
                        job: Arc::clone(&fire.name),
                        scheduled_at: fire.scheduled_at,
                        count: 1,
                        reason: MissReason::Deadline,
                    });
                    inner.active.fetch_sub(1, Ordering::AcqRel);
                    continue;
                }
            }
            // A `skip` job that started running since it was queued (its definition
            // changed from `allow`) is skipped here; the loop hands the slot on.
            if !self.start(fire, Some(waited), manual) {
                inner.active.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl<E: Executor, C: Clock> Slots for Dispatcher<E, C> {
    type Executor = E;
    type Clock = C;

    fn runner(&self) -> &Runner<E, C> {
        &self.inner.runner
    }

    fn release_slot(&self) {
        Dispatcher::release_slot(self);
    }

    fn forget_slot(&self) {
        self.inner.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Pauses, resumes and whole replacements (a replica following the cluster's
        /// pauses) in any order, against a plain set; each replacement reports exactly
        /// the jobs it paused and resumed.
        #[test]
        fn paused_jobs_match_a_plain_set(
            ops in proptest::collection::vec(
                (0u8..3, 0u8..4, proptest::collection::btree_set(0u8..4, 0..4)),
                0..60,
            )
        ) {
            let paused = PausedJobs::default();
            let mut model: BTreeSet<String> = BTreeSet::new();
            let name = |j: u8| format!("job{j}");
            for (kind, job, all) in ops {
                match kind {
                    0 => proptest::prop_assert_eq!(paused.pause(&name(job)), model.insert(name(job))),
                    1 => proptest::prop_assert_eq!(paused.resume(&name(job)), model.remove(&name(job))),
                    _ => {
                        let all: BTreeSet<String> = all.into_iter().map(name).collect();
                        let (newly, gone) = paused.set_all(all.clone());
                        let want_new: Vec<String> = all.difference(&model).cloned().collect();
                        let want_gone: Vec<String> = model.difference(&all).cloned().collect();
                        proptest::prop_assert_eq!(newly, want_new);
                        proptest::prop_assert_eq!(gone, want_gone);
                        model = all;
                    }
                }
                proptest::prop_assert_eq!(paused.list(), model.iter().cloned().collect::<Vec<_>>());
                for j in 0..4 {
                    proptest::prop_assert_eq!(paused.is_paused(&name(j)), model.contains(&name(j)));
                }
            }
        }
    }
}
