//! One run of a job: its attempts, the retry backoff between them, and the events
//! that report each step (`run.started` per attempt, `run.retrying`, `run.finished`).
//!
//! Timeouts and cancellation are enforced by the executor; this module decides
//! whether and when to try again, and stops retrying when the run is cancelled.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::events::{Event, Events, Outcome, Trigger};
use crate::exec::{Attempt, AttemptResult, Executor, OutputSink};
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
}

/// What a finished run reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub outcome: Outcome,
    pub attempts: u32,
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
/// lets shutdown wait for a start it raced with, so none can follow it.
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
    } = request;
    let output = Arc::new(OutputSink::new(
        events.clone(),
        Arc::clone(&name),
        Arc::clone(&run_id),
        settings.output_limit,
    ));
    let started = tokio::time::Instant::now();
    let attempts_allowed = job.retry.attempts.max(1);
    // When the current attempt was due: the fire for the first, the end of the backoff after.
    let mut due = scheduled_at;
    let mut attempt = 1;
    let mut pass = Some(first_pass);
    let result = loop {
        {
            // Held while `run.started` is emitted, dropped before the attempt runs.
            let _pass = pass.take();
            let now = clock.now();
            events.emit(Event::RunStarted {
                job: Arc::clone(&name),
                run_id: Arc::clone(&run_id),
                trigger: if attempt == 1 {
                    trigger
                } else {
                    Trigger::Retry
                },
                scheduled_at,
                lateness_ms: lateness_ms(due, now),
                attempt,
                queued_ms: queued
                    .filter(|_| attempt == 1)
                    .map(|waited| waited.as_secs_f64() * 1000.0),
            });
        }
        let result = if cancel.is_cancelled() {
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
            executor.execute(spec, Arc::clone(&output)).await
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
    events.emit(Event::RunFinished {
        job: Arc::clone(&name),
        run_id: Arc::clone(&run_id),
        attempts: attempt,
        outcome: result.outcome,
        detail: result.detail,
        duration_ms: started.elapsed().as_millis() as u64,
        output_bytes: output.total_bytes(),
        truncated: output.truncated(),
    });
    Some(RunReport {
        outcome: result.outcome,
        attempts: attempt,
    })
}
