//! Dispatch: turns fires into runs under the overlap policy, the concurrency limit and
//! `starting_deadline`, and keeps track of every run in flight so that shutdown can
//! drain or terminate them.
//!
//! Dispatch is on the hot path of a burst (10,000 jobs due at one instant), so it
//! shares as little as possible: each job's runs are tracked in that job's own
//! [`JobRuns`] (handed over by the scheduler with the fire), the count of runs in
//! flight is an atomic, and the one shared lock — the queue of fires waiting for a
//! free slot — is only taken when `--max-concurrent-runs` is set.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::events::{Event, Events, MissReason, SkipReason, Trigger};
use crate::exec::Executor;
use crate::job::{Job, Overlap};
use crate::run::{RunRequest, RunSettings, execute_run, new_run_id};

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
    /// Fires waiting for a slot, in fire order (only with a limit).
    queue: Mutex<VecDeque<Fire>>,
    tracker: TaskTracker,
    /// Parent of every run's cancel token: terminates all runs.
    cancel_all: CancellationToken,
    /// Parent of every job's stop-retries token: shutdown drops pending retries.
    stop_retries: CancellationToken,
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
                queue: Mutex::new(VecDeque::new()),
                tracker: TaskTracker::new(),
                cancel_all: CancellationToken::new(),
                stop_retries: CancellationToken::new(),
            }),
        }
    }

    /// Starts a run for the fire, queues it, or skips it, as the job's policy says.
    pub fn fire(&self, fire: Fire) {
        let inner = &self.inner;
        if inner.stopping.load(Ordering::Acquire) {
            inner.skip(&fire, SkipReason::Shutdown);
            return;
        }
        if !fire.job.enabled && fire.trigger != Trigger::Manual {
            inner.skip(&fire, SkipReason::Disabled);
            return;
        }
        if inner.max_concurrent == 0 {
            inner.active.fetch_add(1, Ordering::AcqRel);
            self.start(fire);
            return;
        }
        {
            let mut queue = lock(&inner.queue);
            if inner.active.load(Ordering::Acquire) >= inner.max_concurrent || !queue.is_empty() {
                queue.push_back(fire);
                return;
            }
            inner.active.fetch_add(1, Ordering::AcqRel);
        }
        self.start(fire);
    }

    /// Keeps one of the runtime's workers running until `at`, a moment away, so that
    /// the runs due then start without waiting for a parked worker to be woken (on a
    /// VM, waking an idle CPU took 0.1–0.3 ms). Once `at` has come the worker looks for
    /// work, and finds the first run as the scheduler starts it.
    pub fn warm_until(&self, at: DateTime<Utc>) {
        let clock = Arc::clone(&self.inner.clock);
        self.inner
            .runtime
            .spawn(async move { clock.settle_until(at) });
    }

    /// A fresh run list for a job (once per job, kept across reloads).
    pub fn job_runs(&self) -> Arc<JobRuns> {
        Arc::new(JobRuns::default())
    }

    /// Runs in flight.
    pub fn active(&self) -> usize {
        self.inner.active.load(Ordering::Acquire)
    }

    /// Stops accepting fires: queued ones are skipped, new ones too, and pending
    /// retries are dropped. Running attempts go on.
    pub fn stop_accepting(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        let queued: Vec<Fire> = lock(&self.inner.queue).drain(..).collect();
        for fire in queued {
            self.inner.skip(&fire, SkipReason::Shutdown);
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

    /// Starts a run in a slot already counted in `active`.
    fn start(&self, fire: Fire) {
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
                        self.inner.skip(&fire, SkipReason::Overlap);
                        self.release_slot();
                        return;
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
            execute_run(
                &inner.executor,
                &*inner.clock,
                &inner.events,
                &inner.settings,
                request,
            )
            .await;
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
        self.inner.tracker.spawn_on(task, &self.inner.runtime);
    }

    /// A run ended (or a reserved slot went unused): start queued fires that now fit.
    fn release_slot(&self) {
        let inner = &self.inner;
        inner.active.fetch_sub(1, Ordering::AcqRel);
        if inner.max_concurrent == 0 {
            return;
        }
        loop {
            let fire = {
                let mut queue = lock(&inner.queue);
                if inner.active.load(Ordering::Acquire) >= inner.max_concurrent {
                    return;
                }
                let Some(fire) = queue.pop_front() else {
                    return;
                };
                inner.active.fetch_add(1, Ordering::AcqRel);
                fire
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
            self.start(fire);
        }
    }
}

impl<E, C> Inner<E, C> {
    fn skip(&self, fire: &Fire, reason: SkipReason) {
        self.events.emit(Event::RunSkipped {
            job: Arc::clone(&fire.name),
            scheduled_at: fire.scheduled_at,
            reason,
        });
    }
}
