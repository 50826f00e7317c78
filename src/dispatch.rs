//! Dispatch: turns fires into runs under the overlap policy, the concurrency limit and
//! `starting_deadline`, and keeps track of every run in flight so that shutdown can
//! drain or terminate them.
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
//! `run.started`, and a fire refused there is logged as skipped for shutdown. The
//! admission is an atomic count, not a lock, so the hot path stays lock-free.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::events::{Event, Events, MissReason, SkipReason, Trigger};
use crate::exec::Executor;
use crate::health::{Failure, Health, catch_panic};
use crate::job::{Job, Overlap};
use crate::run::{RunRequest, RunSettings, execute_admitted_run, new_run_id};

/// The runs in flight of one job (by name), shared by its scheduler entry and its runs.
/// It outlives reloads that change the job, so overlap rules see runs started under an
/// older definition.
#[derive(Debug, Default)]
pub struct JobRuns {
    state: Mutex<JobState>,
    /// A child of the dispatcher's stop-retries token, made at the job's first run.
    stop_retries: OnceLock<CancellationToken>,
}

/// The runs of one job, as overlap rules need them.
///
/// Tokens are per job, not per run: creating or cloning a token locks its parent, and
/// a burst of 10,000 runs each taking a child of one shared root contended on it. The
/// job's runs share the job's cancel token; `replace` cancels it (ending every run in
/// flight, which is what it asks for) and makes a fresh one for the new run.
#[derive(Debug, Default)]
struct JobState {
    /// Runs in flight.
    running: usize,
    /// Shared by the runs in flight; a child of the dispatcher's cancel-all token.
    cancel: Option<CancellationToken>,
    /// For `overlap: replace` only, the one policy that waits for runs to end: one token
    /// per run in flight, cancelled when it has ended (process group reaped).
    finished: Vec<(Arc<str>, CancellationToken)>,
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

impl JobRuns {
    fn lock(&self) -> MutexGuard<'_, JobState> {
        lock(&self.state)
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
    executor: E,
    clock: Arc<C>,
    events: Events,
    settings: RunSettings,
    /// 0 = no limit.
    max_concurrent: usize,
    /// Runs in flight, plus slots reserved for runs about to start.
    active: AtomicUsize,
    stopping: AtomicBool,
    /// Attempts between their admission and their `run.started` (see [`Inner::admit`]).
    starting: AtomicUsize,
    /// Jobs with a fire waiting for a slot (only with a limit), in the order they began
    /// to wait: exactly the jobs whose [`JobState::queued`] is set. Lock order: this
    /// queue, then a job's state.
    queue: Mutex<VecDeque<Arc<JobRuns>>>,
    tracker: TaskTracker,
    /// Parent of every run's cancel token: terminates all runs.
    cancel_all: CancellationToken,
    /// Parent of every job's stop-retries token: shutdown drops pending retries.
    stop_retries: CancellationToken,
    /// Where a run that panics is reported (the service's health), once set.
    failures: OnceLock<Health>,
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
                executor,
                clock,
                events,
                settings,
                max_concurrent,
                active: AtomicUsize::new(0),
                stopping: AtomicBool::new(false),
                starting: AtomicUsize::new(0),
                queue: Mutex::new(VecDeque::new()),
                tracker: TaskTracker::new(),
                cancel_all: CancellationToken::new(),
                stop_retries: CancellationToken::new(),
                failures: OnceLock::new(),
            }),
        }
    }

    /// Starts a run for the fire, queues it, or skips it, as the job's policy says.
    pub fn fire(&self, fire: Fire) {
        let inner = &self.inner;
        if inner.stopping.load(Ordering::Acquire) {
            inner.skip(&fire.name, fire.scheduled_at, SkipReason::Shutdown);
            return;
        }
        if !fire.job.enabled && fire.trigger != Trigger::Manual {
            inner.skip(&fire.name, fire.scheduled_at, SkipReason::Disabled);
            return;
        }
        if inner.max_concurrent == 0 {
            inner.active.fetch_add(1, Ordering::AcqRel);
            if !self.start(fire, None) {
                self.release_slot();
            }
            return;
        }
        if let Some(fire) = self.take_slot_or_queue(fire)
            && !self.start(fire, None)
        {
            self.release_slot();
        }
    }

    /// With a limit: reserves a free slot for the fire and hands it back to be started,
    /// or else queues it, replacing the job's waiting fire, or skips it.
    fn take_slot_or_queue(&self, fire: Fire) -> Option<Fire> {
        let inner = &self.inner;
        let (name, scheduled_at, reason) = {
            let mut queue = lock(&inner.queue);
            // Checked again under the lock: `stop_accepting` drains the queue after
            // setting the flag, so a fire queued past this point would never leave it.
            if inner.stopping.load(Ordering::Acquire) {
                (fire.name, fire.scheduled_at, SkipReason::Shutdown)
            } else {
                // Fires already waiting go first (fire order), hence a free slot alone
                // is not enough.
                if inner.active.load(Ordering::Acquire) < inner.max_concurrent && queue.is_empty() {
                    inner.active.fetch_add(1, Ordering::AcqRel);
                    return Some(fire);
                }
                let mut state = fire.runs.lock();
                if fire.job.overlap == Overlap::Skip && state.running > 0 {
                    // It would be skipped when its turn came anyway; queuing it would
                    // only let the job's fires pile up and run in a burst.
                    (fire.name, fire.scheduled_at, SkipReason::Overlap)
                } else {
                    let waiting = Waiting {
                        job: fire.job,
                        name: fire.name,
                        scheduled_at: fire.scheduled_at,
                        trigger: fire.trigger,
                        since: inner.clock.steady(),
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
                            return None;
                        }
                    }
                }
            }
        };
        inner.skip(&name, scheduled_at, reason);
        None
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
        let inner = &self.inner;
        inner.stopping.store(true, Ordering::SeqCst);
        // An attempt admitted before the flag was set is emitting its `run.started`,
        // a few instructions from done, never across an await: wait for it.
        while inner.starting.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    }

    /// Stops accepting fires: queued ones are skipped, new ones too, runs dispatched
    /// but not yet started (a `replace` waiting for the run it ends) are skipped when
    /// their turn comes, and pending retries are dropped. Running attempts go on.
    /// Once this returns, no `run.started` follows.
    pub fn stop_accepting(&self) {
        self.stop_starting();
        let inner = &self.inner;
        let queued: Vec<Waiting> = lock(&inner.queue)
            .drain(..)
            .filter_map(|runs| runs.lock().queued.take())
            .collect();
        for waiting in queued {
            inner.skip(&waiting.name, waiting.scheduled_at, SkipReason::Shutdown);
        }
        self.inner.stop_retries.cancel();
        self.inner.tracker.close();
    }

    /// Terminates every run in flight (process groups get SIGTERM, then SIGKILL after
    /// their `kill_grace`).
    pub fn cancel_all(&self) {
        self.inner.cancel_all.cancel();
    }

    /// Waits until every run has ended. Only meaningful after [`Self::stop_accepting`].
    pub async fn wait_idle(&self) {
        self.inner.tracker.wait().await;
    }

    /// Starts a run in a slot already counted in `active`, unless its overlap policy
    /// skips it: then it returns false and the slot is the caller's to release.
    /// `queued` is how long the fire waited for the slot.
    fn start(&self, fire: Fire, queued: Option<Duration>) -> bool {
        let run_id = new_run_id();
        let stop_retries = fire
            .runs
            .stop_retries
            .get_or_init(|| self.inner.stop_retries.child_token())
            .clone();
        let replace = fire.job.overlap == Overlap::Replace;
        let mut wait_for = Vec::new();
        let (cancel, finished) = {
            let mut state = fire.runs.lock();
            if state.running > 0 {
                match fire.job.overlap {
                    Overlap::Skip => {
                        drop(state);
                        self.inner
                            .skip(&fire.name, fire.scheduled_at, SkipReason::Overlap);
                        return false;
                    }
                    Overlap::Replace => {
                        if let Some(old) = state.cancel.take() {
                            old.cancel();
                        }
                        wait_for = state.finished.iter().map(|(_, f)| f.clone()).collect();
                    }
                    Overlap::Allow => {}
                }
            }
            state.running += 1;
            let cancel = state
                .cancel
                .get_or_insert_with(|| self.inner.cancel_all.child_token())
                .clone();
            let finished = replace.then(|| {
                let finished = CancellationToken::new();
                state.finished.push((Arc::clone(&run_id), finished.clone()));
                finished
            });
            (cancel, finished)
        };
        let runs = Arc::clone(&fire.runs);
        let name = Arc::clone(&fire.name);
        let scheduled_at = fire.scheduled_at;
        let request = RunRequest {
            job: fire.job,
            name: fire.name,
            run_id,
            scheduled_at: fire.scheduled_at,
            trigger: fire.trigger,
            cancel,
            stop_retries,
        };
        let this = self.clone();
        let task = async move {
            // `replace`: the new run starts once the old one is terminated and reaped.
            for old in wait_for {
                old.cancelled().await;
            }
            let run_id = Arc::clone(&request.run_id);
            let inner = &this.inner;
            let report = execute_admitted_run(
                &inner.executor,
                &*inner.clock,
                &inner.events,
                &inner.settings,
                request,
                queued,
                || inner.admit(),
            )
            .await;
            if report.is_none() {
                // Shutdown began before it could start (while `replace` waited, or
                // before the task was first polled).
                inner.skip(&name, scheduled_at, SkipReason::Shutdown);
            }
            {
                let mut state = runs.lock();
                state.running = state.running.saturating_sub(1);
                if finished.is_some() {
                    state.finished.retain(|(id, _)| !Arc::ptr_eq(id, &run_id));
                }
            }
            if let Some(finished) = finished {
                finished.cancel();
            }
            this.release_slot();
        };
        // A panic in a run is a failure of chime, not of the job: it is reported, and
        // the service stops (exit code 3) rather than go on with a run unaccounted for.
        let failures = self.inner.failures.get().cloned();
        let task = async move {
            if let Err(payload) = catch_panic(task).await
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
            let (fire, waited) = {
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
                let waited = inner.clock.steady().saturating_sub(waiting.since);
                (waiting.into_fire(runs), waited)
            };
            if let Some(deadline) = fire.job.starting_deadline {
                let waited = inner.clock.now() - fire.scheduled_at;
                if waited.to_std().is_ok_and(|waited| waited > deadline) {
                    inner.events.emit(Event::RunMissed {
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
            if !self.start(fire, Some(waited)) {
                inner.active.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// An attempt admitted to start: shutdown waits until it has emitted its `run.started`.
struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<E, C> Inner<E, C> {
    fn skip(&self, job: &Arc<str>, scheduled_at: DateTime<Utc>, reason: SkipReason) {
        self.events.emit(Event::RunSkipped {
            job: Arc::clone(job),
            scheduled_at,
            reason,
        });
    }

    /// Lets an attempt start unless shutdown has begun. Announcing the start before
    /// reading the flag, while `stop_accepting` sets the flag before reading the count
    /// (all SeqCst), means one of the two always sees the other: either the attempt is
    /// refused, or shutdown waits for its `run.started`.
    fn admit(&self) -> Option<Admitted<'_>> {
        self.starting.fetch_add(1, Ordering::SeqCst);
        let admitted = Admitted(&self.starting);
        if self.stopping.load(Ordering::SeqCst) {
            return None;
        }
        Some(admitted)
    }
}
