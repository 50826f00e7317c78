//! The scheduler: one min-heap of next fire instants. It sleeps until the earliest
//! (on the wall clock, see [`crate::clock`]), hands every due fire to the dispatcher,
//! and never polls.
//!
//! It also watches the wall clock. At each wake it compares the wall clock with where
//! a steady clock says it should be; a difference means the clock was stepped, which
//! is logged as `clock.jumped`. Fires passed over by a forward step or by a late
//! wake-up are *missed*: each job runs once for the whole missed span (its latest
//! missed fire, as a catch-up run) unless that is older than its `starting_deadline`,
//! and the missed fires are counted in a `run.missed` event. A backward step replays
//! nothing: every job's next fire is computed from the last one it had.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Wake};
use crate::cron::Schedule;
use crate::dispatch::{Dispatcher, Fire};
use crate::events::{Event, Events, MissReason, Trigger};
use crate::exec::Executor;
use crate::job::Job;

/// A wall-clock difference at least this large counts as a step of the clock.
const STEP_THRESHOLD: TimeDelta = TimeDelta::milliseconds(100);
/// A fire handled later than this after its instant is run as a catch-up.
const LATE_THRESHOLD: TimeDelta = TimeDelta::seconds(1);
/// Counting missed fires stops here (an every-second job after a year-long jump).
const MAX_COUNTED_MISSES: u64 = 1_000_000;

/// A heap item: when, the entry generation it was armed for, and the job's name.
type Timer = Reverse<(DateTime<Utc>, u64, Arc<str>)>;

struct Entry {
    job: Arc<Job>,
    /// Bumped whenever the job's timer is replaced, so stale heap items are ignored.
    generation: u64,
    next: Option<DateTime<Utc>>,
}

/// What a reload changed, by job name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadCounts {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
}

/// Requests to a running scheduler loop.
#[derive(Debug)]
pub enum Command {
    /// Swap in a new set of jobs (see [`Scheduler::replace_jobs`]).
    Replace {
        jobs: Vec<Job>,
        reply: oneshot::Sender<ReloadCounts>,
    },
}

/// Something to do at least every `every` from inside the loop itself (the systemd
/// watchdog ping), so that a stuck loop stops the pings.
pub struct Heartbeat {
    pub every: Duration,
    pub beat: Box<dyn Fn() + Send + Sync>,
}

/// Whether two definitions of a job are the same, apart from where they are written.
fn same_definition(a: &Job, b: &Job) -> bool {
    let mut b = b.clone();
    b.source = a.source.clone();
    *a == b
}

/// The timer structure and its loop.
pub struct Scheduler<E, C> {
    clock: Arc<C>,
    dispatcher: Dispatcher<E, C>,
    events: Events,
    jobs: HashMap<Arc<str>, Entry>,
    heap: BinaryHeap<Timer>,
    generations: u64,
    /// Wall and steady clock at the last look, to notice steps.
    last_wall: DateTime<Utc>,
    last_steady: Duration,
}

impl<E: Executor, C: Clock> Scheduler<E, C> {
    pub fn new(clock: Arc<C>, dispatcher: Dispatcher<E, C>, events: Events) -> Self {
        let last_wall = clock.now();
        let last_steady = clock.steady();
        Scheduler {
            clock,
            dispatcher,
            events,
            jobs: HashMap::new(),
            heap: BinaryHeap::new(),
            generations: 0,
            last_wall,
            last_steady,
        }
    }

    /// Adds jobs and arms their timers from now. `@reboot` jobs are not timed; see
    /// [`Self::fire_reboot_jobs`].
    pub fn add_jobs(&mut self, jobs: impl IntoIterator<Item = Job>) {
        let now = self.clock.now();
        for job in jobs {
            let next = job.schedule.next_after(job.timezone, now);
            self.insert(Arc::new(job), next);
        }
    }

    fn insert(&mut self, job: Arc<Job>, next: Option<DateTime<Utc>>) {
        self.generations += 1;
        let name: Arc<str> = Arc::from(job.name.as_str());
        if let Some(at) = next {
            self.heap
                .push(Reverse((at, self.generations, Arc::clone(&name))));
        }
        self.jobs.insert(
            name,
            Entry {
                job,
                generation: self.generations,
                next,
            },
        );
    }

    /// The jobs currently scheduled.
    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    /// The next fire of a job, if it has one.
    pub fn next_fire(&self, name: &str) -> Option<DateTime<Utc>> {
        self.jobs.get(name).and_then(|entry| entry.next)
    }

    /// Starts every enabled `@reboot` job once.
    pub fn fire_reboot_jobs(&self) {
        let now = self.clock.now();
        for entry in self.jobs.values() {
            if entry.job.schedule == Schedule::Reboot {
                self.dispatcher.fire(Fire {
                    job: Arc::clone(&entry.job),
                    scheduled_at: now,
                    trigger: Trigger::Reboot,
                });
            }
        }
    }

    /// The earliest live timer, dropping stale heap items on the way.
    fn earliest(&mut self) -> Option<DateTime<Utc>> {
        while let Some(Reverse((at, generation, name))) = self.heap.peek() {
            let live = self
                .jobs
                .get(name)
                .is_some_and(|entry| entry.generation == *generation);
            if live {
                return Some(*at);
            }
            self.heap.pop();
        }
        None
    }

    /// Swaps in a new set of jobs, matched by name. Unchanged jobs keep their timers
    /// (no fire doubled or lost); a changed job keeps its next fire if its schedule and
    /// zone are the same, and otherwise takes its next fire from the new schedule;
    /// removed jobs stop; new jobs start from now. Runs in flight keep the definition
    /// they started with. `@reboot` jobs added by a reload do not run: the service did
    /// not start.
    pub fn replace_jobs(&mut self, jobs: Vec<Job>) -> ReloadCounts {
        let now = self.clock.now();
        let mut counts = ReloadCounts::default();
        let mut old = std::mem::take(&mut self.jobs);
        for job in jobs {
            match old.remove(job.name.as_str()) {
                Some(entry) if same_definition(&entry.job, &job) => {
                    counts.unchanged += 1;
                    let name: Arc<str> = Arc::from(job.name.as_str());
                    self.jobs.insert(name, entry);
                }
                Some(entry) => {
                    counts.changed += 1;
                    let same_timing =
                        entry.job.schedule == job.schedule && entry.job.timezone == job.timezone;
                    if same_timing {
                        let name: Arc<str> = Arc::from(job.name.as_str());
                        self.jobs.insert(
                            name,
                            Entry {
                                job: Arc::new(job),
                                generation: entry.generation,
                                next: entry.next,
                            },
                        );
                    } else {
                        let next = job.schedule.next_after(job.timezone, now);
                        self.insert(Arc::new(job), next);
                    }
                }
                None => {
                    counts.added += 1;
                    let next = job.schedule.next_after(job.timezone, now);
                    self.insert(Arc::new(job), next);
                }
            }
        }
        // Whatever is left was removed; its heap items are now stale and get dropped.
        counts.removed = old.len();
        counts
    }

    /// Runs until `shutdown` is cancelled, applying commands between fires.
    pub async fn run(
        &mut self,
        shutdown: CancellationToken,
        mut commands: mpsc::Receiver<Command>,
        heartbeat: Option<Heartbeat>,
    ) {
        self.last_wall = self.clock.now();
        self.last_steady = self.clock.steady();
        let mut commands_open = true;
        loop {
            if let Some(heartbeat) = &heartbeat {
                (heartbeat.beat)();
            }
            let earliest = self.earliest();
            let clock = Arc::clone(&self.clock);
            let sleep = async move {
                match earliest {
                    Some(at) => clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let beat_due = async {
                match &heartbeat {
                    Some(heartbeat) => tokio::time::sleep(heartbeat.every).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                command = commands.recv(), if commands_open => match command {
                    Some(Command::Replace { jobs, reply }) => {
                        let counts = self.replace_jobs(jobs);
                        let _ = reply.send(counts);
                    }
                    None => commands_open = false,
                },
                wake = sleep => self.on_wake(wake),
                () = beat_due => {}
            }
        }
    }

    /// Handles one wake-up: notices clock steps, then fires everything due.
    pub fn on_wake(&mut self, wake: Wake) {
        let now = self.clock.now();
        let steady = self.clock.steady();
        let expected = self.last_wall
            + TimeDelta::from_std(steady.saturating_sub(self.last_steady))
                .unwrap_or(TimeDelta::MAX);
        let delta = now - expected;
        let stepped = delta.abs() >= STEP_THRESHOLD;
        if stepped {
            self.events.emit(Event::ClockJumped {
                from: expected,
                to: now,
                delta_ms: delta.num_milliseconds(),
            });
        }
        let _ = wake;
        self.last_wall = now;
        self.last_steady = steady;
        let reason = if stepped && delta > TimeDelta::zero() {
            MissReason::ClockJump
        } else {
            MissReason::LateWakeup
        };
        self.fire_due(now, reason);
    }

    fn fire_due(&mut self, now: DateTime<Utc>, reason: MissReason) {
        while let Some(Reverse((at, generation, name))) = self.heap.peek().cloned() {
            if at > now {
                break;
            }
            self.heap.pop();
            let Some(entry) = self.jobs.get_mut(&name) else {
                continue;
            };
            if entry.generation != generation {
                continue;
            }
            let job = Arc::clone(&entry.job);
            // Every fire of this job up to now: the first is `at`. The search ends at the
            // first fire after now, which is the job's next timer.
            let mut latest = at;
            let mut count: u64 = 1;
            let mut upcoming = job.schedule.next_after(job.timezone, latest);
            while let Some(next) = upcoming {
                if next > now {
                    break;
                }
                latest = next;
                count += 1;
                upcoming = if count < MAX_COUNTED_MISSES {
                    job.schedule.next_after(job.timezone, latest)
                } else {
                    // Stop counting; resume from now.
                    job.schedule.next_after(job.timezone, now)
                };
            }
            if count == 1 && now - at < LATE_THRESHOLD {
                self.dispatcher.fire(Fire {
                    job: Arc::clone(&job),
                    scheduled_at: at,
                    trigger: Trigger::Schedule,
                });
            } else {
                let too_old = job.starting_deadline.is_some_and(|deadline| {
                    (now - latest).to_std().is_ok_and(|late| late > deadline)
                });
                if too_old {
                    self.events.emit(Event::RunMissed {
                        job: Arc::from(job.name.as_str()),
                        scheduled_at: at,
                        count,
                        reason: MissReason::Deadline,
                    });
                } else {
                    if count > 1 {
                        self.events.emit(Event::RunMissed {
                            job: Arc::from(job.name.as_str()),
                            scheduled_at: at,
                            count: count - 1,
                            reason,
                        });
                    }
                    self.dispatcher.fire(Fire {
                        job: Arc::clone(&job),
                        scheduled_at: latest,
                        trigger: Trigger::CatchUp,
                    });
                }
            }
            // The next fire is after everything handled: never one already due, so a
            // backward step later cannot bring any of these back.
            let next = upcoming;
            self.generations += 1;
            let entry = self.jobs.get_mut(&name).expect("entry looked up above");
            entry.generation = self.generations;
            entry.next = next;
            if let Some(next) = next {
                self.heap.push(Reverse((next, self.generations, name)));
            }
        }
    }
}
