//! The scheduler: every job's next fire in one map ordered by instant. It sleeps until
//! the earliest (on the wall clock, see [`crate::clock`]), hands every due fire to the
//! dispatcher, and never polls.
//!
//! It also watches the wall clock. At each wake it compares the wall clock with where
//! a steady clock says it should be; a difference means the clock was stepped, which
//! is logged as `clock.jumped`. Fires passed over by a forward step or by a late
//! wake-up are *missed*: each job runs once for the whole missed span (its latest
//! missed fire, as a catch-up run) unless that is older than its `starting_deadline`,
//! and the missed fires are counted in a `run.missed` event. After a backward step of up
//! to three hours, wildcard jobs (and `@every`) go on from the new time, while a
//! fixed-time job keeps its next fire, so it never repeats an instant it already ran;
//! after a larger one every job starts afresh from the new time (Debian cron's rules).
//! Besides each wake-up, the clock is looked at on every heartbeat (at least once a
//! second), so a step is noticed even when no timer tells of it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::clock::{self, Clock};
use crate::cron::Schedule;
use crate::dispatch::{Dispatched, Dispatcher, Fire, JobRuns, Manual};
use crate::events::{Event, Events, MissReason, Trigger};
use crate::exec::Executor;
use crate::job::{CatchUp, Job};
use crate::run::JobRecord;

/// A wall-clock difference at least this large counts as a step of the clock.
const STEP_THRESHOLD: TimeDelta = TimeDelta::milliseconds(100);
/// A fire handled later than this after its instant is run as a catch-up.
const LATE_THRESHOLD: TimeDelta = TimeDelta::seconds(1);
/// How long the loop applies a reload before it looks for fires due meanwhile, and
/// how many steps it takes between looks at the time.
const REPLACE_SLICE: Duration = Duration::from_millis(1);
const REPLACE_STEPS: usize = 128;
/// A backward step larger than this is a new time: every job starts afresh from it.
const BIG_BACKWARD_STEP: TimeDelta = TimeDelta::hours(3);
/// Counting missed fires stops here (an every-second job after a year-long jump).
const MAX_COUNTED_MISSES: u64 = 1_000_000;

/// An armed timer: the generation it was armed for, and the job's slot.
type Timer = (u64, usize);

struct Entry {
    job: Arc<Job>,
    name: Arc<str>,
    /// The job's runs in flight; kept across reloads that change the job.
    runs: Arc<JobRuns>,
    /// Changed whenever the job's timer is re-armed, so stale timers are ignored.
    generation: u64,
}

/// What a reload changed, by job name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadCounts {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
}

/// A new set of jobs being swapped in, a slice at a time (see
/// [`Scheduler::continue_replace`]), so that a reload of 100,000 jobs does not hold up
/// the fires due meanwhile.
#[derive(Debug)]
pub struct Replacement {
    /// The new set's jobs not applied yet.
    jobs: std::vec::IntoIter<Job>,
    /// Which of the slots that existed at the start hold a job of the new set.
    seen: Vec<bool>,
    /// The next slot the removal sweep looks at.
    sweep: usize,
    counts: ReloadCounts,
}

/// Requests to a running scheduler loop.
#[derive(Debug)]
pub enum Command {
    /// Swap in a new set of jobs (see [`Scheduler::replace_jobs`]).
    Replace {
        jobs: Vec<Job>,
        reply: oneshot::Sender<ReloadCounts>,
    },
    /// Run a job now (`chime trigger`); the reply is `None` when no job has the name.
    Trigger {
        job: String,
        manual: Manual,
        reply: oneshot::Sender<Option<Dispatched>>,
    },
    /// The names of the jobs loaded (`chime pause`, `resume`).
    Names {
        reply: oneshot::Sender<Vec<Arc<str>>>,
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
    // Spelled out (rather than comparing clones) so that a reload of 100,000 jobs does
    // not copy them; a new field of `Job` must be added here.
    let Job {
        name,
        schedule_text,
        schedule,
        timezone,
        action,
        workdir,
        env,
        env_inherit,
        run_as,
        timeout,
        kill_grace,
        retry,
        overlap,
        starting_deadline,
        catch_up,
        on_owner_loss,
        enabled,
        pings,
        source: _,
    } = a;
    *name == b.name
        && *schedule_text == b.schedule_text
        && *schedule == b.schedule
        && *timezone == b.timezone
        && *action == b.action
        && *workdir == b.workdir
        && *env == b.env
        && *env_inherit == b.env_inherit
        && *run_as == b.run_as
        && *timeout == b.timeout
        && *kill_grace == b.kill_grace
        && *retry == b.retry
        && *overlap == b.overlap
        && *starting_deadline == b.starting_deadline
        && *catch_up == b.catch_up
        && *on_owner_loss == b.on_owner_loss
        && *enabled == b.enabled
        && *pings == b.pings
}

/// The timer structure and its loop.
pub struct Scheduler<E, C> {
    clock: Arc<C>,
    dispatcher: Dispatcher<E, C>,
    /// The runtime the dispatcher starts runs on: one of its workers is kept running
    /// until each instant (see [`clock::sleep_until_warm`]).
    workers: tokio::runtime::Handle,
    events: Events,
    /// Jobs by slot; a removed job leaves a hole that the next new job reuses.
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    by_name: HashMap<Arc<str>, usize>,
    /// Timers grouped by instant: cron jobs share instants (whole seconds, minutes), so
    /// one wake-up takes a whole bucket instead of popping a heap once per job.
    timers: BTreeMap<DateTime<Utc>, Vec<Timer>>,
    /// Timers in `timers`, live and stale. Reloads and clock steps leave stale ones
    /// behind (a yearly job's would stay for a year), so once they outnumber the jobs
    /// the map is swept; see [`Self::compact_timers`].
    armed: usize,
    generations: u64,
    /// Fires dispatched in this wake-up whose next fire is still to be armed (kept to
    /// reuse its allocation).
    rearm: Vec<(DateTime<Utc>, usize)>,
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
            workers: dispatcher.runtime().clone(),
            dispatcher,
            events,
            slots: Vec::new(),
            free: Vec::new(),
            by_name: HashMap::new(),
            timers: BTreeMap::new(),
            armed: 0,
            generations: 0,
            rearm: Vec::new(),
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

    /// Adds a job under a new name; returns its slot.
    fn insert(&mut self, job: Arc<Job>, next: Option<DateTime<Utc>>) -> usize {
        let name: Arc<str> = Arc::from(job.name.as_str());
        let runs = self.dispatcher.job_runs();
        self.place(
            Entry {
                job,
                name,
                runs,
                generation: 0,
            },
            next,
        )
    }

    /// Puts an entry in a slot (a free one, or its name's) and arms its timer; returns
    /// the slot.
    fn place(&mut self, mut entry: Entry, next: Option<DateTime<Utc>>) -> usize {
        self.generations += 1;
        entry.generation = self.generations;
        let slot = match self.by_name.get(&entry.name) {
            Some(&slot) => slot,
            None => {
                let slot = self.free.pop().unwrap_or_else(|| {
                    self.slots.push(None);
                    self.slots.len() - 1
                });
                self.by_name.insert(Arc::clone(&entry.name), slot);
                slot
            }
        };
        if let Some(at) = next {
            self.push_timer(at, entry.generation, slot);
        }
        self.slots[slot] = Some(entry);
        slot
    }

    /// Timers held, live and stale (what reloads leave behind is swept from time to time).
    pub fn timer_count(&self) -> usize {
        self.armed
    }

    /// The jobs currently scheduled.
    pub fn job_count(&self) -> usize {
        self.by_name.len()
    }

    fn fire_of(entry: &Entry, scheduled_at: DateTime<Utc>, trigger: Trigger) -> Fire {
        Fire {
            job: Arc::clone(&entry.job),
            name: Arc::clone(&entry.name),
            runs: Arc::clone(&entry.runs),
            scheduled_at,
            trigger,
        }
    }

    /// Runs a job now, by hand, through the dispatcher's rules; `None`: no such job.
    pub fn trigger(&self, job: &str, manual: Manual) -> Option<Dispatched> {
        let entry = self
            .by_name
            .get(job)
            .and_then(|&slot| self.slots[slot].as_ref())?;
        let fire = Self::fire_of(entry, self.clock.now(), Trigger::Manual);
        Some(self.dispatcher.fire_manual(fire, manual))
    }

    /// Starts every enabled `@reboot` job once.
    pub fn fire_reboot_jobs(&self) {
        let now = self.clock.now();
        for entry in self.slots.iter().flatten() {
            if entry.job.schedule == Schedule::Reboot {
                self.dispatcher
                    .fire(Self::fire_of(entry, now, Trigger::Reboot));
            }
        }
    }

    /// Fires missed while chime was down (`handled`: each job's last fire handled, from
    /// the state store): a `catch_up: latest` job runs once for its latest missed fire,
    /// by the rule of a forward clock step (`run.missed reason: downtime`).
    pub fn catch_up(&mut self, handled: &HashMap<String, DateTime<Utc>>) {
        let now = self.clock.now();
        let due: Vec<(DateTime<Utc>, usize)> = self
            .by_name
            .iter()
            .filter_map(|(name, &slot)| {
                let job = &self.slots[slot].as_ref()?.job;
                if job.catch_up != CatchUp::Latest || !job.enabled {
                    return None;
                }
                let first = job
                    .schedule
                    .next_after(job.timezone, *handled.get(&**name)?)?;
                (first <= now).then_some((first, slot))
            })
            .collect();
        for (at, slot) in due {
            self.fire_late(at, slot, now, MissReason::Downtime);
        }
    }

    /// Runs of an earlier chime whose process groups still live count as running for
    /// their jobs' overlap policies until the groups end (watched once a second).
    pub fn adopt_leftovers(&self, leftovers: &[(String, crate::state::leftover::Group)]) {
        for (name, group) in leftovers {
            let Some(entry) = self
                .by_name
                .get(name.as_str())
                .and_then(|&slot| self.slots[slot].as_ref())
            else {
                continue;
            };
            let runs = Arc::clone(&entry.runs);
            runs.with_in_flight(|in_flight| in_flight.adopt());
            let group = *group;
            self.workers.spawn(async move {
                loop {
                    let alive =
                        tokio::task::spawn_blocking(move || crate::state::leftover::alive(group))
                            .await
                            .unwrap_or(false);
                    if !alive {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                runs.with_in_flight(|in_flight| in_flight.disown());
            });
        }
    }

    /// The earliest live timer, dropping stale timers on the way.
    fn earliest(&mut self) -> Option<DateTime<Utc>> {
        loop {
            let mut first = self.timers.first_entry()?;
            let slots = &self.slots;
            let before = first.get().len();
            first
                .get_mut()
                .retain(|&(generation, slot)| Self::is_live(slots, generation, slot));
            self.armed -= before - first.get().len();
            if !first.get().is_empty() {
                return Some(*first.key());
            }
            first.remove();
        }
    }

    /// The instant of the next armed timer, if any: what the loop sleeps until. For
    /// drivers that step time themselves (tests): wake then, and call [`Self::on_wake`].
    pub fn next_wake(&mut self) -> Option<DateTime<Utc>> {
        let ahead = self.ahead();
        self.earliest().map(|at| at - ahead)
    }

    /// How long before their instants fires are handed over: with replicas, the claim
    /// gate's lead ([`Dispatcher::claim_ahead`]), so that claims are back by then;
    /// zero otherwise.
    fn ahead(&self) -> TimeDelta {
        TimeDelta::from_std(self.dispatcher.claim_ahead()).unwrap_or(TimeDelta::zero())
    }

    /// Checks the bookkeeping that reloads keep: every name maps to the slot holding
    /// it and back, free slots are exactly the empty ones, and every job with a next
    /// fire has exactly one live timer. For tests; an `Err` says what is wrong.
    pub fn check_consistency(&self) -> Result<(), String> {
        for (name, &slot) in &self.by_name {
            match self.slots.get(slot) {
                Some(Some(entry)) if entry.name == *name => {}
                _ => {
                    return Err(format!(
                        "`{name}` maps to slot {slot}, which does not hold it"
                    ));
                }
            }
        }
        let mut free = self.free.clone();
        free.sort_unstable();
        let before = free.len();
        free.dedup();
        if free.len() != before {
            return Err(format!("a slot is free twice: {:?}", self.free));
        }
        let total: usize = self.timers.values().map(Vec::len).sum();
        if total != self.armed {
            return Err(format!("{total} timers in the map, {} counted", self.armed));
        }
        let mut live_timers = vec![0usize; self.slots.len()];
        for &(generation, slot) in self.timers.values().flatten() {
            if self.live(generation, slot) {
                live_timers[slot] += 1;
            }
        }
        for (slot, entry) in self.slots.iter().enumerate() {
            let is_free = free.binary_search(&slot).is_ok();
            match entry {
                None if !is_free => return Err(format!("slot {slot} is empty but not free")),
                None => {}
                Some(_) if is_free => return Err(format!("slot {slot} is free but holds a job")),
                Some(entry) => {
                    if self.by_name.get(&entry.name) != Some(&slot) {
                        return Err(format!("`{}` in slot {slot} is not indexed", entry.name));
                    }
                    let timed = entry.job.schedule != Schedule::Reboot;
                    let expected = usize::from(timed && self.has_future(&entry.job));
                    if live_timers[slot] != expected {
                        return Err(format!(
                            "`{}` has {} live timers, expected {expected}",
                            entry.name, live_timers[slot]
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether a job has any fire after now (a timer must then be armed for it).
    fn has_future(&self, job: &Job) -> bool {
        job.schedule
            .next_after(job.timezone, self.clock.now())
            .is_some()
    }

    fn is_live(slots: &[Option<Entry>], generation: u64, slot: usize) -> bool {
        matches!(slots.get(slot), Some(Some(entry)) if entry.generation == generation)
    }

    fn live(&self, generation: u64, slot: usize) -> bool {
        Self::is_live(&self.slots, generation, slot)
    }

    /// Swaps in a new set of jobs, matched by name, all at once. Unchanged jobs keep
    /// their timers (no fire doubled or lost); a changed job keeps its next fire if its
    /// schedule and zone are the same, and otherwise takes its next fire from the new
    /// schedule; removed jobs stop; new jobs start from now. Runs in flight keep the
    /// definition they started with. `@reboot` jobs added by a reload do not run: the
    /// service did not start. The loop applies a reload in slices instead (see
    /// [`Replacement`]), firing what falls due between them.
    pub fn replace_jobs(&mut self, jobs: Vec<Job>) -> ReloadCounts {
        let mut replacement = self.start_replace(jobs);
        loop {
            if let Some(counts) = self.continue_replace(&mut replacement, usize::MAX) {
                return counts;
            }
        }
    }

    /// Begins swapping in a new set of jobs; nothing changes until
    /// [`Self::continue_replace`] applies it.
    pub fn start_replace(&self, jobs: Vec<Job>) -> Replacement {
        Replacement {
            jobs: jobs.into_iter(),
            seen: vec![false; self.slots.len()],
            sweep: 0,
            counts: ReloadCounts::default(),
        }
    }

    /// Applies up to `budget` more steps of a replacement (a step is one job of the new
    /// set, or one slot of the sweep that removes jobs left out of it). Returns the
    /// counts once the replacement is complete. Between calls the set is part old,
    /// part new: every job is in one of its two definitions, and jobs left out still
    /// fire until the sweep reaches them.
    pub fn continue_replace(
        &mut self,
        replacement: &mut Replacement,
        budget: usize,
    ) -> Option<ReloadCounts> {
        let now = self.clock.now();
        let mut left = budget;
        while left > 0 {
            let Some(job) = replacement.jobs.next() else {
                break;
            };
            left -= 1;
            let slot = self.apply_one(job, now, &mut replacement.counts);
            // A new job may take a slot freed by an earlier reload, so it is marked too:
            // otherwise the sweep would take it for a job left out of the set.
            if let Some(seen) = replacement.seen.get_mut(slot) {
                *seen = true;
            }
        }
        // Jobs not in the new set are removed; their timers go stale.
        while left > 0 && replacement.sweep < replacement.seen.len() {
            left -= 1;
            let slot = replacement.sweep;
            replacement.sweep += 1;
            if !replacement.seen[slot]
                && let Some(entry) = self.slots[slot].take()
            {
                replacement.counts.removed += 1;
                self.by_name.remove(&entry.name);
                self.free.push(slot);
            }
        }
        let done = replacement.jobs.len() == 0 && replacement.sweep >= replacement.seen.len();
        if done {
            self.compact_timers();
        }
        done.then_some(replacement.counts)
    }

    /// Applies a replacement for at most [`REPLACE_SLICE`] of time; returns the counts
    /// once it is complete.
    fn replace_slice(&mut self, replacement: &mut Replacement) -> Option<ReloadCounts> {
        let started = std::time::Instant::now();
        loop {
            if let Some(counts) = self.continue_replace(replacement, REPLACE_STEPS) {
                return Some(counts);
            }
            if started.elapsed() >= REPLACE_SLICE {
                return None;
            }
        }
    }

    /// Applies one job of a new set; returns its slot.
    fn apply_one(&mut self, job: Job, now: DateTime<Utc>, counts: &mut ReloadCounts) -> usize {
        let Some(&slot) = self.by_name.get(job.name.as_str()) else {
            counts.added += 1;
            let next = job.schedule.next_after(job.timezone, now);
            return self.insert(Arc::new(job), next);
        };
        let Some(entry) = self.slots[slot].as_mut() else {
            return slot;
        };
        if same_definition(&entry.job, &job) {
            counts.unchanged += 1;
            return slot;
        }
        counts.changed += 1;
        if entry.job.schedule == job.schedule && entry.job.timezone == job.timezone {
            // Same timing: the armed timer stays valid; only the definition changes.
            entry.job = Arc::new(job);
        } else {
            let next = job.schedule.next_after(job.timezone, now);
            let entry = Entry {
                job: Arc::new(job),
                name: Arc::clone(&entry.name),
                runs: Arc::clone(&entry.runs),
                generation: 0,
            };
            self.place(entry, next);
        }
        slot
    }

    /// Runs until `shutdown` is cancelled, applying commands between fires. A reload is
    /// applied in slices of about a millisecond, with the fires due meanwhile between
    /// them; a second reload waits for the first to complete.
    pub async fn run(
        &mut self,
        shutdown: CancellationToken,
        mut commands: mpsc::Receiver<Command>,
        heartbeat: Option<Heartbeat>,
    ) {
        self.last_wall = self.clock.now();
        self.last_steady = self.clock.steady();
        let mut commands_open = true;
        let mut replacing: Option<(Replacement, oneshot::Sender<ReloadCounts>)> = None;
        loop {
            if let Some(heartbeat) = &heartbeat {
                (heartbeat.beat)();
            }
            if let Some((replacement, _)) = replacing.as_mut() {
                match self.replace_slice(replacement) {
                    Some(counts) => {
                        if let Some((_, reply)) = replacing.take() {
                            let _ = reply.send(counts);
                        }
                    }
                    None => {
                        // Fire what fell due during the slice, then the next slice.
                        if self.next_wake().is_some_and(|at| at <= self.clock.now()) {
                            self.on_wake();
                        }
                        if shutdown.is_cancelled() {
                            return;
                        }
                        tokio::task::yield_now().await;
                        continue;
                    }
                }
            }
            let earliest = self.next_wake();
            let clock = Arc::clone(&self.clock);
            let workers = self.workers.clone();
            let sleep = async move {
                match earliest {
                    // The first run of the instant starts within microseconds of it.
                    Some(at) => clock::sleep_until_warm(&clock, at, &workers).await,
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
                        replacing = Some((self.start_replace(jobs), reply));
                    }
                    Some(Command::Trigger { job, manual, reply }) => {
                        let _ = reply.send(self.trigger(&job, manual));
                    }
                    Some(Command::Names { reply }) => {
                        let _ = reply.send(self.by_name.keys().cloned().collect());
                    }
                    None => commands_open = false,
                },
                _ = sleep => self.on_wake(),
                // A step of the clock that no timer told of is noticed here.
                () = beat_due => self.on_wake(),
            }
        }
    }

    /// Handles one wake-up, whatever woke it (a timer, a step of the clock the kernel
    /// reported, a heartbeat): notices clock steps by comparing the wall clock with the
    /// steady clock, then fires everything due.
    pub fn on_wake(&mut self) {
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
        self.last_wall = now;
        self.last_steady = steady;
        if stepped && delta < TimeDelta::zero() {
            self.after_backward_step(now, -delta);
        }
        let reason = if stepped && delta > TimeDelta::zero() {
            MissReason::ClockJump
        } else {
            MissReason::LateWakeup
        };
        self.fire_due(now, reason);
    }

    /// Re-arms timers after the wall clock went back by `by`: wildcard and `@every`
    /// jobs go on from the new time; a fixed-time job keeps its next fire (the one
    /// after its last), so it does not run an instant twice, unless the step is over
    /// [`BIG_BACKWARD_STEP`], after which every job starts afresh.
    fn after_backward_step(&mut self, now: DateTime<Utc>, by: TimeDelta) {
        let afresh = by > BIG_BACKWARD_STEP;
        for slot in 0..self.slots.len() {
            let Some(entry) = self.slots[slot].as_ref() else {
                continue;
            };
            let schedule = &entry.job.schedule;
            let goes_on = matches!(schedule, Schedule::Every(_)) || schedule.is_wildcard();
            if !(afresh || goes_on) {
                continue;
            }
            let next = schedule.next_after(entry.job.timezone, now);
            self.invalidate_timers(slot);
            self.arm(slot, next);
        }
        self.compact_timers();
    }

    fn fire_due(&mut self, now: DateTime<Utc>, reason: MissReason) {
        // On-time fires are dispatched first and their next fires computed after, so
        // that in a burst (10,000 jobs due at one instant) the last job's run does not
        // wait for every other job's next fire to be computed.
        let mut rearm = std::mem::take(&mut self.rearm);
        // With replicas, fires up to the claim's lead ahead go too: the gate holds each
        // until its instant.
        let due_by = now + self.ahead();
        while let Some(bucket) = self.timers.first_entry() {
            if *bucket.key() > due_by {
                break;
            }
            let (at, due) = bucket.remove_entry();
            self.armed -= due.len();
            for (generation, slot) in due {
                if !self.live(generation, slot) {
                    continue;
                }
                if self.fire_on_time(at, slot, now) {
                    rearm.push((at, slot));
                } else {
                    self.fire_late(at, slot, now, reason);
                }
            }
        }
        // With replicas: this wake-up's fires go to the claim as one.
        self.dispatcher.flush_claims();
        for (at, slot) in rearm.drain(..) {
            let upcoming = self.slots[slot]
                .as_ref()
                .and_then(|entry| entry.job.schedule.next_after(entry.job.timezone, at));
            self.arm(slot, upcoming);
        }
        self.rearm = rearm;
    }

    /// Dispatches a fire handled within the job's shortest possible gap between fires
    /// (and within [`LATE_THRESHOLD`]): then no later fire of it can be due yet, so the
    /// fire is on time and its next fire can be computed afterwards. The job's pending
    /// timers are invalidated at once, so a duplicate timer in this same wake-up cannot
    /// fire it again. Returns false, doing nothing, for a fire that is not on time.
    fn fire_on_time(&mut self, at: DateTime<Utc>, slot: usize, now: DateTime<Utc>) -> bool {
        let Some(entry) = self.slots[slot].as_ref() else {
            return false;
        };
        let late = now - at;
        let gap = TimeDelta::from_std(entry.job.schedule.min_gap()).unwrap_or(TimeDelta::MAX);
        if late >= LATE_THRESHOLD || late >= gap {
            return false;
        }
        self.dispatcher
            .fire(Self::fire_of(entry, at, Trigger::Schedule));
        self.invalidate_timers(slot);
        true
    }

    /// Makes every timer armed so far for the job in `slot` stale.
    fn invalidate_timers(&mut self, slot: usize) {
        self.generations += 1;
        let generation = self.generations;
        if let Some(entry) = self.slots[slot].as_mut() {
            entry.generation = generation;
        }
    }

    /// Arms a job's timer for its next fire (none: the job never fires again) under the
    /// job's current generation.
    fn arm(&mut self, slot: usize, upcoming: Option<DateTime<Utc>>) {
        let Some(entry) = self.slots[slot].as_ref() else {
            return;
        };
        if let Some(next) = upcoming {
            let generation = entry.generation;
            self.push_timer(next, generation, slot);
        }
    }

    fn push_timer(&mut self, at: DateTime<Utc>, generation: u64, slot: usize) {
        self.timers.entry(at).or_default().push((generation, slot));
        self.armed += 1;
    }

    /// Drops every stale timer once they outnumber the jobs (plus a margin, so small
    /// sets are not swept at every reload): one pass over the map, after a reload or a
    /// clock step, never on the way to a fire.
    fn compact_timers(&mut self) {
        if self.armed <= 2 * self.by_name.len() + 1024 {
            return;
        }
        let slots = &self.slots;
        let mut armed = 0;
        self.timers.retain(|_, bucket| {
            bucket.retain(|&(generation, slot)| Self::is_live(slots, generation, slot));
            armed += bucket.len();
            !bucket.is_empty()
        });
        self.armed = armed;
    }

    /// Handles one due timer of one job that was not handled on time: counts its missed
    /// fires and runs the latest as a catch-up (or none, past its `starting_deadline`).
    fn fire_late(
        &mut self,
        at: DateTime<Utc>,
        slot: usize,
        now: DateTime<Utc>,
        reason: MissReason,
    ) {
        let Some(entry) = self.slots[slot].as_ref() else {
            return;
        };
        let job = &entry.job;
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
        // Not on time (see `fire_on_time`), even when nothing else was missed: a
        // catch-up run of the latest fire, unless that is past the deadline.
        let too_old = job
            .starting_deadline
            .is_some_and(|deadline| (now - latest).to_std().is_ok_and(|late| late > deadline));
        if too_old {
            self.events.emit(Event::RunMissed {
                job: Arc::clone(&entry.name),
                scheduled_at: at,
                count,
                reason: MissReason::Deadline,
            });
        } else {
            if count > 1 {
                self.events.emit(Event::RunMissed {
                    job: Arc::clone(&entry.name),
                    scheduled_at: at,
                    count: count - 1,
                    reason,
                });
            }
            self.dispatcher
                .fire(Self::fire_of(entry, latest, Trigger::CatchUp));
            self.dispatcher.flush_claims();
        }
        // The next fire is after everything handled: never one already due.
        self.invalidate_timers(slot);
        self.arm(slot, upcoming);
    }
}
