//! Dispatch: turns fires into runs under the overlap policy, the concurrency limit and
//! `starting_deadline`, and keeps track of every run in flight so that shutdown can
//! drain or terminate them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::events::{Event, Events, MissReason, SkipReason, Trigger};
use crate::exec::Executor;
use crate::job::{Job, Overlap};
use crate::run::{RunRequest, RunSettings, execute_run, new_run_id};

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
    executor: E,
    clock: Arc<C>,
    events: Events,
    settings: RunSettings,
    /// 0 = no limit.
    max_concurrent: usize,
    state: Mutex<State>,
    tracker: TaskTracker,
    /// Parent of every run's cancel token: terminates all runs.
    cancel_all: CancellationToken,
    /// Parent of every run's stop-retries token: shutdown drops pending retries.
    stop_retries: CancellationToken,
}

#[derive(Default)]
struct State {
    running: HashMap<Arc<str>, Vec<Active>>,
    active: usize,
    queue: VecDeque<Fire>,
    stopping: bool,
}

struct Active {
    run_id: Arc<str>,
    cancel: CancellationToken,
    /// Cancelled when the run has ended (so `replace` can wait for it).
    finished: CancellationToken,
}

/// One fire of a job.
#[derive(Debug, Clone)]
pub struct Fire {
    pub job: Arc<Job>,
    pub scheduled_at: DateTime<Utc>,
    pub trigger: Trigger,
}

impl<E: Executor, C: Clock> Dispatcher<E, C> {
    pub fn new(
        executor: E,
        clock: Arc<C>,
        events: Events,
        settings: RunSettings,
        max_concurrent: usize,
    ) -> Self {
        Dispatcher {
            inner: Arc::new(Inner {
                executor,
                clock,
                events,
                settings,
                max_concurrent,
                state: Mutex::new(State::default()),
                tracker: TaskTracker::new(),
                cancel_all: CancellationToken::new(),
                stop_retries: CancellationToken::new(),
            }),
        }
    }

    /// Starts a run for the fire, queues it, or skips it, as the job's policy says.
    pub fn fire(&self, fire: Fire) {
        let mut state = self.inner.lock();
        if state.stopping {
            self.inner.skip(&fire, SkipReason::Shutdown);
            return;
        }
        if !fire.job.enabled && fire.trigger != Trigger::Manual {
            self.inner.skip(&fire, SkipReason::Disabled);
            return;
        }
        if self.inner.max_concurrent > 0 && state.active >= self.inner.max_concurrent {
            state.queue.push_back(fire);
            return;
        }
        self.start(&mut state, fire);
    }

    /// Runs in flight.
    pub fn active(&self) -> usize {
        self.inner.lock().active
    }

    /// Stops accepting fires: queued ones are skipped, new ones too, and pending
    /// retries are dropped. Running attempts go on.
    pub fn stop_accepting(&self) {
        let queued: Vec<Fire> = {
            let mut state = self.inner.lock();
            state.stopping = true;
            state.queue.drain(..).collect()
        };
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

    fn start(&self, state: &mut MutexGuard<'_, State>, fire: Fire) {
        let name: Arc<str> = Arc::from(fire.job.name.as_str());
        let running = state.running.entry(Arc::clone(&name)).or_default();
        let mut wait_for = Vec::new();
        if !running.is_empty() {
            match fire.job.overlap {
                Overlap::Skip => {
                    self.inner.skip(&fire, SkipReason::Overlap);
                    return;
                }
                Overlap::Replace => {
                    for old in running.iter() {
                        old.cancel.cancel();
                        wait_for.push(old.finished.clone());
                    }
                }
                Overlap::Allow => {}
            }
        }
        let run_id = new_run_id();
        let cancel = self.inner.cancel_all.child_token();
        let finished = CancellationToken::new();
        running.push(Active {
            run_id: Arc::clone(&run_id),
            cancel: cancel.clone(),
            finished: finished.clone(),
        });
        state.active += 1;
        let request = RunRequest {
            job: fire.job,
            run_id,
            scheduled_at: fire.scheduled_at,
            trigger: fire.trigger,
            cancel,
            stop_retries: self.inner.stop_retries.child_token(),
        };
        let this = self.clone();
        self.inner.tracker.spawn(async move {
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
            finished.cancel();
            this.finished(&name, &run_id);
        });
    }

    /// Bookkeeping when a run ends; starts queued fires that now fit.
    fn finished(&self, name: &Arc<str>, run_id: &Arc<str>) {
        let mut state = self.inner.lock();
        if let Some(runs) = state.running.get_mut(name) {
            runs.retain(|active| &active.run_id != run_id);
            if runs.is_empty() {
                state.running.remove(name);
            }
        }
        state.active = state.active.saturating_sub(1);
        while self.inner.max_concurrent == 0 || state.active < self.inner.max_concurrent {
            let Some(fire) = state.queue.pop_front() else {
                break;
            };
            if let Some(deadline) = fire.job.starting_deadline {
                let waited = self.inner.clock.now() - fire.scheduled_at;
                if waited.to_std().is_ok_and(|waited| waited > deadline) {
                    self.inner.events.emit(Event::RunMissed {
                        job: Arc::from(fire.job.name.as_str()),
                        scheduled_at: fire.scheduled_at,
                        count: 1,
                        reason: MissReason::Deadline,
                    });
                    continue;
                }
            }
            self.start(&mut state, fire);
        }
    }
}

impl<E, C> Inner<E, C> {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the bookkeeping half-updated in a
        // way that matters more than stopping the service would; carry on.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn skip(&self, fire: &Fire, reason: SkipReason) {
        self.events.emit(Event::RunSkipped {
            job: Arc::from(fire.job.name.as_str()),
            scheduled_at: fire.scheduled_at,
            reason,
        });
    }
}
