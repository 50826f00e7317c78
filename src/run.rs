//! One run of a job, from the moment the dispatcher hands it over to the release of
//! its slot: its place among the job's runs in flight (what the overlap rules look
//! at), the wait for the runs a `replace` ends, the admission of each attempt while
//! shutdown may be starting, its attempts and the retry backoff between them, the
//! events that report each step (`run.started` per attempt, `run.retrying`,
//! `run.finished`), and at its end, its slot given back to the dispatcher.
//!
//! The dispatcher decides whether and when a fire runs (overlap, limit, deadline,
//! queue); this module carries the run out. It does not know the dispatcher: it sees
//! it through `Slots` (what runs share, where a slot goes back) and a job's entry
//! through `JobRecord`, so the module graph stays one-way.
//!
//! Timeouts and cancellation are enforced by the executor; this module decides
//! whether and when to try again, and stops retrying when the run is cancelled.

mod live;

pub use live::{LiveRun, LiveRuns};

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::events::{CancelledBy, Event, Events, Outcome, SkipReason, Trigger};
use crate::exec::{Attempt, AttemptResult, Executor, OutputSink, StartNotice};
use crate::job::Job;

/// A fire turned into a run, ready to start.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub job: Arc<Job>,
    /// The job's name, shared by every event of the run.
    pub name: Arc<str>,
    pub run_id: Arc<str>,
    pub scheduled_at: DateTime<Utc>,
    pub trigger: Trigger,
    /// Cancels the run: terminates the current attempt and drops pending retries.
    pub cancel: CancellationToken,
    /// Lets the current attempt finish but drops any retry (shutdown).
    pub stop_retries: CancellationToken,
    /// Who asked for a manual run (`chime trigger`), by uid.
    pub caller_uid: Option<u32>,
    /// The run's entry among the runs in flight (runs the dispatcher started).
    pub live: Option<Arc<LiveRun>>,
}

/// What a finished run reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub outcome: Outcome,
}

/// Settings shared by every run.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub output_limit: u64,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            output_limit: crate::exec::DEFAULT_OUTPUT_LIMIT,
        }
    }
}

/// What every run shares: where its attempts run, the clock, where its events go, its
/// settings, the parents of its tokens, and the admission that shutdown closes. Owned
/// by the dispatcher, which reaches it on the hot path without a lock: admission is
/// two atomics.
pub(crate) struct Runner<E, C> {
    executor: E,
    clock: Arc<C>,
    events: Events,
    settings: RunSettings,
    /// Set once shutdown began: no attempt starts after it.
    stopping: AtomicBool,
    /// Attempts between their admission and their `run.started` (see [`Self::admit`]);
    /// shared with the passes, which may end on a spawner thread.
    starting: Arc<AtomicUsize>,
    /// Parent of every job's cancel token: terminates all runs.
    cancel_all: CancellationToken,
    /// Parent of every job's stop-retries token: shutdown drops pending retries.
    stop_retries: CancellationToken,
    /// The runs in flight, for the control socket.
    live: LiveRuns,
}

impl<E: Executor, C: Clock> Runner<E, C> {
    pub(crate) fn new(executor: E, clock: Arc<C>, events: Events, settings: RunSettings) -> Self {
        Runner {
            executor,
            clock,
            events,
            settings,
            stopping: AtomicBool::new(false),
            starting: Arc::new(AtomicUsize::new(0)),
            cancel_all: CancellationToken::new(),
            stop_retries: CancellationToken::new(),
            live: LiveRuns::default(),
        }
    }
}

impl<E, C> Runner<E, C> {
    pub(crate) fn clock(&self) -> &Arc<C> {
        &self.clock
    }

    pub(crate) fn events(&self) -> &Events {
        &self.events
    }

    pub(crate) fn live(&self) -> &LiveRuns {
        &self.live
    }

    pub(crate) fn skip(&self, job: &Arc<str>, scheduled_at: DateTime<Utc>, reason: SkipReason) {
        self.events.emit(Event::RunSkipped {
            job: Arc::clone(job),
            scheduled_at,
            reason,
        });
    }

    /// Whether shutdown has begun (no run starts any more).
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Closes the admission: once this returns, no `run.started` follows.
    pub(crate) fn stop_starting(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // An attempt admitted before the flag was set is emitting its `run.started`, or
        // its process is being spawned on a spawner thread, which emits it right after
        // (never waiting for a runtime worker, so this cannot wait for itself): wait.
        while self.starting.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    }

    /// Lets the attempt in progress of every run finish, but drops every retry.
    pub(crate) fn stop_retries(&self) {
        self.stop_retries.cancel();
    }

    /// Terminates every run in flight.
    pub(crate) fn cancel_all(&self) {
        self.cancel_all.cancel();
    }

    /// Terminates every run in flight as a timeout does, through each run's own token
    /// (as `chime kill` does), so that later runs start as usual: a replica that lost
    /// its lease (DESIGN.md §13). Their `run.finished` says `by: fence`.
    pub(crate) fn fence(&self) {
        for run in self.live.all() {
            run.fence();
        }
    }

    /// A job's stop-retries token (one per job, made at its first run).
    pub(crate) fn job_stop_retries(&self) -> CancellationToken {
        self.stop_retries.child_token()
    }

    /// Lets an attempt start unless shutdown has begun. Announcing the start before
    /// reading the flag, while [`Self::stop_starting`] sets the flag before reading the
    /// count (all SeqCst), means one of the two always sees the other: either the
    /// attempt is refused, or shutdown waits for its `run.started`.
    fn admit(&self) -> Option<Admitted> {
        self.starting.fetch_add(1, Ordering::SeqCst);
        let admitted = Admitted(Arc::clone(&self.starting));
        if self.stopping.load(Ordering::SeqCst) {
            return None;
        }
        Some(admitted)
    }
}

/// An attempt admitted to start: shutdown waits until it has emitted its `run.started`.
struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The runs in flight of one job, as the overlap rules need them. Kept in the job's
/// entry in the dispatcher, under the job's lock (see [`JobRecord`]).
///
/// Tokens are per job, not per run: creating or cloning a token locks its parent, and
/// a burst of 10,000 runs each taking a child of one shared root contended on it. The
/// job's runs share the job's cancel token; `replace` cancels it (ending every run in
/// flight, which is what it asks for) and makes a fresh one for the new run.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    /// Runs in flight.
    running: usize,
    /// Shared by the runs in flight; a child of the runner's cancel-all token.
    cancel: Option<CancellationToken>,
    /// For `overlap: replace` only, the one policy that waits for runs to end: one per
    /// run in flight.
    finished: Vec<Finished>,
}

/// The token of a `replace` run that is cancelled once the run has ended (its process
/// group reaped): the next run waits for it.
#[derive(Debug)]
struct Finished {
    run_id: Arc<str>,
    token: CancellationToken,
}

/// A run's place among its job's runs in flight, as [`InFlight::enter`] made it.
pub(crate) struct Entered {
    /// The run's own cancel token, a child of the job's (shared by its runs in flight).
    cancel: CancellationToken,
    /// `replace`: the runs it ends, to be seen reaped before it starts.
    replaced: Vec<CancellationToken>,
    /// `replace`: cancelled when this run has ended.
    finished: Option<CancellationToken>,
}

impl InFlight {
    pub(crate) fn running(&self) -> usize {
        self.running
    }

    /// Counts a new run in. With `replace`, the runs in flight are cancelled and the new
    /// run will wait until they have ended.
    pub(crate) fn enter<E, C>(
        &mut self,
        run_id: &Arc<str>,
        replace: bool,
        runner: &Runner<E, C>,
    ) -> Entered {
        let mut replaced = Vec::new();
        if replace && self.running > 0 {
            if let Some(old) = self.cancel.take() {
                old.cancel();
            }
            replaced = self.finished.iter().map(|f| f.token.clone()).collect();
        }
        self.running += 1;
        // The run's own token, so that `chime kill` can end this run alone; a child of
        // the job's, which `replace` and shutdown cancel. Made here at once: a clone of
        // the job's token to make it from later would lock the job's node twice more.
        let cancel = self
            .cancel
            .get_or_insert_with(|| runner.cancel_all.child_token())
            .child_token();
        let finished = replace.then(|| {
            let token = CancellationToken::new();
            self.finished.push(Finished {
                run_id: Arc::clone(run_id),
                token: token.clone(),
            });
            token
        });
        Entered {
            cancel,
            replaced,
            finished,
        }
    }

    /// Counts in a run an earlier chime left behind, whose process group still runs;
    /// [`InFlight::disown`] when that group has ended.
    pub(crate) fn adopt(&mut self) {
        self.running += 1;
    }

    pub(crate) fn disown(&mut self) {
        self.running = self.running.saturating_sub(1);
    }

    /// Counts a run out (see [`InFlight::enter`]).
    fn leave(&mut self, run_id: &Arc<str>, replace: bool) {
        self.running = self.running.saturating_sub(1);
        if replace {
            self.finished.retain(|f| !Arc::ptr_eq(&f.run_id, run_id));
        }
    }
}

/// A job's entry in the dispatcher, which keeps the job's [`InFlight`] under its lock.
pub(crate) trait JobRecord: Send + Sync + 'static {
    /// Runs `f` on the job's runs in flight, under the job's lock.
    fn with_in_flight<R>(&self, f: impl FnOnce(&mut InFlight) -> R) -> R;
}

/// The dispatcher as its runs see it: what they share, and where their slots go back.
pub(crate) trait Slots: Send + Sync + 'static {
    type Executor: Executor;
    type Clock: Clock;
    fn runner(&self) -> &Runner<Self::Executor, Self::Clock>;
    /// A run ended: its slot goes to the fires waiting for one.
    fn release_slot(&self);
    /// A run's task ended without ending the run (it panicked, or its runtime dropped
    /// it): the slot is counted free, and nothing is started from here.
    fn forget_slot(&self);
}

/// A slot counted in the dispatcher's runs in flight, held by one run. The run gives
/// it back at its end ([`Slot::release`]); dropped otherwise, it is only uncounted.
pub(crate) struct Slot<S: Slots> {
    slots: S,
    released: bool,
}

impl<S: Slots> Slot<S> {
    /// Takes over a slot already counted by `slots`.
    pub(crate) fn new(slots: S) -> Self {
        Slot {
            slots,
            released: false,
        }
    }

    fn release(mut self) {
        self.released = true;
        self.slots.release_slot();
    }
}

impl<S: Slots> Drop for Slot<S> {
    fn drop(&mut self) {
        if !self.released {
            self.slots.forget_slot();
        }
    }
}

/// A run's place among its job's runs in flight, given up when it is dropped: at the
/// run's end, or when its task ends otherwise (a panic), so that a `replace` waiting
/// for it is not left waiting.
struct Place<J: JobRecord> {
    runs: Arc<J>,
    run_id: Arc<str>,
    finished: Option<CancellationToken>,
}

impl<J: JobRecord> Drop for Place<J> {
    fn drop(&mut self) {
        let replace = self.finished.is_some();
        self.runs
            .with_in_flight(|in_flight| in_flight.leave(&self.run_id, replace));
        if let Some(finished) = self.finished.take() {
            finished.cancel();
        }
    }
}

/// A fire the dispatcher let through, handed over with what it needs: its place among
/// the job's runs in flight and its slot. [`Run::run`] carries it out.
pub(crate) struct Run<S: Slots, J: JobRecord> {
    request: RunRequest,
    /// How long the fire waited for its slot (with a limit).
    queued: Option<Duration>,
    replaced: Vec<CancellationToken>,
    place: Place<J>,
    slot: Slot<S>,
}

/// A fire as the dispatcher hands it over (the cancel token comes from [`Entered`]).
pub(crate) struct Handover<J> {
    pub job: Arc<Job>,
    pub name: Arc<str>,
    pub run_id: Arc<str>,
    pub scheduled_at: DateTime<Utc>,
    pub trigger: Trigger,
    pub stop_retries: CancellationToken,
    /// Who asked for a manual run, by uid.
    pub caller_uid: Option<u32>,
    /// The job's entry, where [`Entered`] was made.
    pub runs: Arc<J>,
    pub queued: Option<Duration>,
}

impl<S: Slots, J: JobRecord> Run<S, J> {
    pub(crate) fn new(fire: Handover<J>, entered: Entered, slot: Slot<S>) -> Self {
        let Entered {
            cancel,
            replaced,
            finished,
        } = entered;
        Run {
            place: Place {
                runs: fire.runs,
                run_id: Arc::clone(&fire.run_id),
                finished,
            },
            request: RunRequest {
                job: fire.job,
                name: fire.name,
                run_id: fire.run_id,
                scheduled_at: fire.scheduled_at,
                trigger: fire.trigger,
                cancel,
                stop_retries: fire.stop_retries,
                caller_uid: fire.caller_uid,
                live: None,
            },
            queued: fire.queued,
            replaced,
            slot,
        }
    }

    /// Carries the run out, from its start to the release of its slot.
    pub(crate) async fn run(self) {
        let Run {
            mut request,
            queued,
            replaced,
            place,
            slot,
        } = self;
        let runner = slot.slots.runner();
        let clock = &*runner.clock;
        let live = Arc::new(LiveRun::new(
            Arc::clone(&request.name),
            Arc::clone(&request.run_id),
            request.trigger,
            request.scheduled_at,
            (clock.now(), clock.steady()),
            request.cancel.clone(),
        ));
        let registered = Registered::new(&runner.live, &live);
        request.live = Some(live);
        // `replace`: the new run starts once the old one is terminated and reaped.
        for old in replaced {
            old.cancelled().await;
        }
        let name = Arc::clone(&request.name);
        let scheduled_at = request.scheduled_at;
        let report = execute_admitted_run(
            &runner.executor,
            &*runner.clock,
            &runner.events,
            &runner.settings,
            request,
            queued,
            || runner.admit(),
        )
        .await;
        if report.is_none() {
            // Shutdown began before it could start (while `replace` waited, or before
            // the task was first polled).
            runner.skip(&name, scheduled_at, SkipReason::Shutdown);
        }
        drop(registered);
        drop(place);
        slot.release();
    }
}

/// A run's entry among the runs in flight, removed when it is dropped (at the run's
/// end, or when its task ends otherwise).
struct Registered<'a> {
    live: &'a LiveRuns,
    run_id: Arc<str>,
}

impl<'a> Registered<'a> {
    fn new(live: &'a LiveRuns, run: &Arc<LiveRun>) -> Self {
        live.insert(Arc::clone(run));
        Registered {
            live,
            run_id: Arc::clone(&run.run_id),
        }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.live.remove(&self.run_id);
    }
}

/// A fresh run id: 16 hex digits, unique within the process and, with overwhelming
/// likelihood, across restarts (a random per-process seed, mixed with a counter).
pub fn new_run_id() -> Arc<str> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    // splitmix64: a bijection, so distinct counters give distinct ids.
    let mut z = seed.wrapping_add(
        COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 16];
    for (i, digit) in text.iter_mut().enumerate() {
        *digit = HEX[((z >> (60 - 4 * i)) & 0xf) as usize];
    }
    Arc::from(std::str::from_utf8(&text).expect("hex digits are ASCII"))
}

/// Spreads a delay by ±20 % so that many jobs failing together do not retry in lockstep.
pub fn jittered(nominal: Duration) -> Duration {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(nominal.as_nanos() as u64);
    // A uniform factor in [0.8, 1.2].
    let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    nominal.mul_f64(0.8 + 0.4 * unit)
}

/// Milliseconds from `scheduled` to `now`, with microsecond resolution.
pub fn lateness_ms(scheduled: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (now - scheduled)
        .num_microseconds()
        .map_or(f64::MAX, |us| us as f64 / 1000.0)
}

/// Runs every attempt of one run and reports how it ended.
pub async fn execute_run<E: Executor, C: Clock>(
    executor: &E,
    clock: &C,
    events: &Events,
    settings: &RunSettings,
    request: RunRequest,
) -> RunReport {
    let always = || Some(());
    execute_admitted_run(executor, clock, events, settings, request, None, always)
        .await
        .expect("a run that is always admitted starts")
}

/// [`execute_run`] for the dispatcher: `queued` is how long the fire waited for a free
/// slot (reported as `queued_ms` on the first `run.started`), and `admit` is asked
/// before every attempt. It returns a pass, held while that attempt's `run.started` is
/// emitted, or `None` once shutdown has begun: then the first attempt does not start
/// (the result is `None`; the caller logs the fire as skipped) and a later one ends
/// the run as cancelled, as a dropped retry does. Holding the pass across the event
/// lets shutdown wait for a start it raced with, so none can follow it. The pass goes
/// with the attempt's [`StartNotice`] (to a spawner thread for a shell job), so it is
/// held until the job has really started and `run.started` is out.
pub async fn execute_admitted_run<E, C, P>(
    executor: &E,
    clock: &C,
    events: &Events,
    settings: &RunSettings,
    request: RunRequest,
    queued: Option<Duration>,
    mut admit: impl FnMut() -> Option<P>,
) -> Option<RunReport>
where
    E: Executor,
    C: Clock,
    P: Send + 'static,
{
    // Refused before anything of the run exists: nothing to report but the refusal.
    let first_pass = admit()?;
    let RunRequest {
        job,
        name,
        run_id,
        scheduled_at,
        trigger,
        cancel,
        stop_retries,
        caller_uid,
        live,
    } = request;
    let output = Arc::new(OutputSink::new(
        events.clone(),
        Arc::clone(&name),
        Arc::clone(&run_id),
        settings.output_limit,
    ));
    if let Some(live) = &live {
        live.attach_output(&output);
    }
    let started = tokio::time::Instant::now();
    let attempts_allowed = job.retry.attempts.max(1);
    // When the current attempt was due: the fire for the first, the end of the backoff after.
    let mut due = scheduled_at;
    let mut attempt = 1;
    let mut pass = Some(first_pass);
    let result = loop {
        // `run.started` goes out when the job has really started (DESIGN.md §6): the
        // executor announces it, with the pass held until then.
        let start = StartNotice::new(
            events.clone(),
            Event::RunStarted {
                job: Arc::clone(&name),
                run_id: Arc::clone(&run_id),
                trigger: if attempt == 1 {
                    trigger
                } else {
                    Trigger::Retry
                },
                scheduled_at,
                lateness_ms: 0.0,
                attempt,
                queued_ms: queued
                    .filter(|_| attempt == 1)
                    .map(|waited| waited.as_secs_f64() * 1000.0),
                pid: None,
                caller_uid,
            },
            due,
            clock.now(),
            pass.take().map(|pass| Box::new(pass) as Box<dyn Send>),
        );
        let result = if cancel.is_cancelled() {
            start.now();
            AttemptResult::with_outcome(Outcome::Cancelled, Default::default())
        } else {
            let spec = Attempt {
                job: Arc::clone(&job),
                run_id: Arc::clone(&run_id),
                scheduled_at,
                attempt,
                deadline: job.timeout.map(|t| tokio::time::Instant::now() + t),
                cancel: cancel.clone(),
            };
            executor
                .execute_announced(spec, Arc::clone(&output), start)
                .await
        };
        let retry = result.outcome != Outcome::Success
            && result.retryable
            && attempt < attempts_allowed
            && !cancel.is_cancelled()
            && !stop_retries.is_cancelled();
        if !retry {
            break result;
        }
        let delay = jittered(job.retry.nominal_delay(attempt));
        events.emit(Event::RunRetrying {
            job: Arc::clone(&name),
            run_id: Arc::clone(&run_id),
            attempt,
            outcome: result.outcome,
            detail: result.detail.clone(),
            delay_ms: delay.as_millis() as u64,
        });
        due = clock.now() + chrono::TimeDelta::from_std(delay).unwrap_or(chrono::TimeDelta::MAX);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => {
                // The pending retry is dropped; the run ends as cancelled.
                break AttemptResult::with_outcome(Outcome::Cancelled, result.detail);
            }
            () = stop_retries.cancelled() => {
                break AttemptResult::with_outcome(Outcome::Cancelled, result.detail);
            }
        }
        pass = admit();
        if pass.is_none() {
            // Shutdown began as the backoff ended: the retry is dropped all the same.
            break AttemptResult::with_outcome(Outcome::Cancelled, result.detail);
        }
        attempt += 1;
    };
    let killed_by = live.as_ref().and_then(|live| live.killed_by());
    let fenced = live.as_ref().is_some_and(|live| live.fenced());
    let by = (result.outcome == Outcome::Cancelled).then(|| match killed_by {
        Some(_) => CancelledBy::Operator,
        None if fenced => CancelledBy::Fence,
        None if stop_retries.is_cancelled() => CancelledBy::Shutdown,
        None => CancelledBy::Replace,
    });
    events.emit(Event::RunFinished {
        job: Arc::clone(&name),
        run_id: Arc::clone(&run_id),
        attempts: attempt,
        outcome: result.outcome,
        detail: result.detail,
        duration_ms: started.elapsed().as_millis() as u64,
        output_bytes: output.total_bytes(),
        truncated: output.truncated(),
        by,
        caller_uid: killed_by.filter(|_| by == Some(CancelledBy::Operator)),
    });
    Some(RunReport {
        outcome: result.outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner() -> Runner<crate::exec::Real, crate::clock::SystemClock> {
        let executor = crate::exec::Real::new().expect("the real executor starts");
        Runner::new(
            executor,
            Arc::new(crate::clock::SystemClock),
            Events::discard(),
            RunSettings::default(),
        )
    }

    #[test]
    fn replace_ends_the_runs_in_flight_and_waits_for_them() {
        let runner = runner();
        let mut in_flight = InFlight::default();
        let first: Arc<str> = Arc::from("first");
        let old = in_flight.enter(&first, true, &runner);
        assert!(old.replaced.is_empty(), "nothing to replace yet");
        let second: Arc<str> = Arc::from("second");
        let new = in_flight.enter(&second, true, &runner);
        assert!(old.cancel.is_cancelled(), "the run in flight is ended");
        assert!(!new.cancel.is_cancelled(), "the new run gets a fresh token");
        assert_eq!(new.replaced.len(), 1);
        assert_eq!(in_flight.running(), 2);

        in_flight.leave(&first, true);
        assert_eq!(in_flight.running(), 1);
        assert_eq!(in_flight.finished.len(), 1);
        assert!(Arc::ptr_eq(&in_flight.finished[0].run_id, &second));
    }

    #[test]
    fn allow_shares_the_jobs_token_and_waits_for_nothing() {
        let runner = runner();
        let mut in_flight = InFlight::default();
        let a = in_flight.enter(&Arc::from("a"), false, &runner);
        let b = in_flight.enter(&Arc::from("b"), false, &runner);
        assert!(b.replaced.is_empty() && b.finished.is_none());
        runner.cancel_all();
        assert!(a.cancel.is_cancelled() && b.cancel.is_cancelled());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Model: a count of admitted attempts. Each admitted attempt's `run.started`
        /// goes out through its notice, here or on a spawner thread, announced or
        /// dropped; when `stop_starting` returns, every admitted attempt has been
        /// announced, and no attempt is admitted after it.
        #[test]
        fn no_start_is_announced_after_stop_starting(
            ops in proptest::collection::vec(0u8..4, 1..60),
            stop_at in 0usize..60,
        ) {
            let (events, store) = Events::recorder();
            let runner = Runner::new(
                crate::exec::Real::new().expect("the real executor starts"),
                Arc::new(crate::clock::SystemClock),
                events.clone(),
                RunSettings::default(),
            );
            let announced = || store.lock().map_or(0, |s| s.len());
            let mut admitted = 0;
            let mut stopped = false;
            for (i, &op) in ops.iter().enumerate() {
                if i == stop_at {
                    runner.stop_starting();
                    stopped = true;
                    proptest::prop_assert_eq!(announced(), admitted);
                }
                let Some(pass) = runner.admit() else {
                    proptest::prop_assert!(stopped);
                    continue;
                };
                proptest::prop_assert!(!stopped);
                admitted += 1;
                let now = Utc::now();
                let notice = StartNotice::new(
                    events.clone(),
                    Event::RunStarted {
                        job: "j".into(),
                        run_id: i.to_string().into(),
                        trigger: Trigger::Schedule,
                        scheduled_at: now,
                        lateness_ms: 0.0,
                        attempt: 1,
                        queued_ms: None,
                        pid: None,
                        caller_uid: None,
                    },
                    now,
                    now,
                    Some(Box::new(pass)),
                );
                match op {
                    0 => notice.now(),
                    1 => drop(notice),
                    2 => crate::exec::spawner::submit(Box::new(move || notice.spawned(Some(1)))),
                    _ => crate::exec::spawner::submit(Box::new(move || {
                        std::thread::yield_now();
                        drop(notice);
                    })),
                }
            }
            runner.stop_starting();
            proptest::prop_assert_eq!(announced(), admitted);
        }
    }

    #[test]
    fn admission_closes_at_stop_starting() {
        let runner = runner();
        assert!(runner.admit().is_some());
        runner.stop_starting();
        assert!(runner.is_stopping());
        assert!(runner.admit().is_none());
    }
}
