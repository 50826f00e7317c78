//! Executors: carry out one attempt of a run, shell or HTTP.
//!
//! The [`Executor`] trait is the seam between run logic (retries, overlap, timeouts
//! as policy) and the outside world: tests drive the scheduler with a double, the
//! service uses [`Real`], which dispatches to [`shell`] or [`http`].
//!
//! An executor owns the attempt completely: it honours the deadline and the cancel
//! token itself (terminating a process group, aborting a request), reaps what it
//! started, and streams output through the [`OutputSink`] while the attempt runs.

pub mod environment;
pub mod http;
pub mod identity;
pub mod shell;
pub mod spawner;

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::events::{Event, Events, ExitDetail, Outcome, Stream};
use crate::job::{Action, Job};

/// Everything an executor needs to know about one attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub job: Arc<Job>,
    pub run_id: Arc<str>,
    pub scheduled_at: DateTime<Utc>,
    /// 1-based.
    pub attempt: u32,
    /// When the attempt times out (from the job's `timeout`), if it has one.
    pub deadline: Option<Instant>,
    /// Cancelled by `overlap: replace` and by shutdown: terminate now.
    pub cancel: CancellationToken,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    pub outcome: Outcome,
    pub detail: ExitDetail,
    /// Whether a failed attempt may be retried (HTTP 4xx other than 429 may not).
    pub retryable: bool,
}

impl AttemptResult {
    pub fn success(detail: ExitDetail) -> Self {
        AttemptResult {
            outcome: Outcome::Success,
            detail,
            retryable: false,
        }
    }

    pub fn failure(detail: ExitDetail, retryable: bool) -> Self {
        AttemptResult {
            outcome: Outcome::Failure,
            detail,
            retryable,
        }
    }

    pub fn with_outcome(outcome: Outcome, detail: ExitDetail) -> Self {
        AttemptResult {
            outcome,
            detail,
            // Timeouts and unexpected signals are worth another try; cancellation is not.
            retryable: !matches!(outcome, Outcome::Success | Outcome::Cancelled),
        }
    }
}

/// Runs attempts. Implementations must be cheap to share between tasks.
pub trait Executor: Send + Sync + 'static {
    fn execute(
        &self,
        attempt: Attempt,
        output: Arc<OutputSink>,
    ) -> impl Future<Output = AttemptResult> + Send;

    /// [`Self::execute`], announcing the attempt's start through `start` once the job
    /// has really started (its process spawned, its request handed to the client). The
    /// default announces it at once, before the attempt runs: right for executors whose
    /// start is the call itself.
    fn execute_announced(
        &self,
        attempt: Attempt,
        output: Arc<OutputSink>,
        start: StartNotice,
    ) -> impl Future<Output = AttemptResult> + Send {
        start.now();
        self.execute(attempt, output)
    }
}

/// An attempt's `run.started`, emitted once: by [`Self::spawned`] when the job has
/// started, or when it is dropped (an attempt that ended before it could start still
/// has its `run.started`, DESIGN.md §6). It may be sent to another thread (the
/// spawner), and it holds the shutdown's admission pass of the attempt until the event
/// is out, so that no `run.started` can follow `service.stopping`.
pub struct StartNotice {
    inner: Option<StartInner>,
}

struct StartInner {
    events: Events,
    /// `run.started` with its `lateness_ms` and `pid` still to be filled in.
    event: Event,
    /// When the attempt was due.
    due: DateTime<Utc>,
    /// The run's clock when the notice was made, and the steady clock then: the start
    /// instant is read on the steady clock (any thread can), then put on the run's.
    made_at: DateTime<Utc>,
    made: std::time::Instant,
    _pass: Option<Box<dyn Send>>,
}

impl StartNotice {
    /// `event` is the attempt's `run.started` (its `lateness_ms` and `pid` are filled in
    /// when it is emitted); `now` is the run's clock at this moment.
    pub fn new(
        events: Events,
        event: Event,
        due: DateTime<Utc>,
        now: DateTime<Utc>,
        pass: Option<Box<dyn Send>>,
    ) -> Self {
        StartNotice {
            inner: Some(StartInner {
                events,
                event,
                due,
                made_at: now,
                made: std::time::Instant::now(),
                _pass: pass,
            }),
        }
    }

    /// A notice that emits nothing (an executor driven directly, outside a run).
    pub fn silent() -> Self {
        StartNotice { inner: None }
    }

    /// The job has started now: its process `pid` spawned (or its spawn failed, or its
    /// request was handed to the client, `pid` `None`).
    pub fn spawned(mut self, pid: Option<u32>) {
        if let Some(inner) = self.inner.take() {
            let elapsed = TimeDelta::from_std(inner.made.elapsed()).unwrap_or(TimeDelta::zero());
            inner.emit(pid, elapsed);
        }
    }

    /// The attempt starts at the instant the notice was made (read on the run's clock).
    pub fn now(mut self) {
        if let Some(inner) = self.inner.take() {
            inner.emit(None, TimeDelta::zero());
        }
    }
}

impl StartInner {
    fn emit(self, spawned_pid: Option<u32>, elapsed: TimeDelta) {
        let StartInner {
            events,
            mut event,
            due,
            made_at,
            made: _,
            _pass: pass,
        } = self;
        if let Event::RunStarted {
            lateness_ms, pid, ..
        } = &mut event
        {
            *lateness_ms = crate::run::lateness_ms(due, made_at + elapsed);
            *pid = spawned_pid;
        }
        events.emit(event);
        // Only now that the event is out may shutdown go on.
        drop(pass);
    }
}

impl Drop for StartNotice {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let elapsed = TimeDelta::from_std(inner.made.elapsed()).unwrap_or(TimeDelta::zero());
            inner.emit(None, elapsed);
        }
    }
}

impl std::fmt::Debug for StartNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartNotice")
            .field("pending", &self.inner.is_some())
            .finish()
    }
}

/// The production executor: shell jobs as processes, HTTP jobs through one shared client.
#[derive(Debug, Clone)]
pub struct Real {
    http: http::HttpExecutor,
}

impl Real {
    pub fn new() -> Result<Self, http::ClientError> {
        Ok(Real {
            http: http::HttpExecutor::new()?,
        })
    }
}

impl Executor for Real {
    async fn execute(&self, attempt: Attempt, output: Arc<OutputSink>) -> AttemptResult {
        self.execute_announced(attempt, output, StartNotice::silent())
            .await
    }

    async fn execute_announced(
        &self,
        attempt: Attempt,
        output: Arc<OutputSink>,
        start: StartNotice,
    ) -> AttemptResult {
        match &attempt.job.action {
            Action::Shell(_) => shell::execute_announced(attempt, output, start).await,
            Action::Http(_) => self.http.execute_announced(attempt, output, start).await,
        }
    }
}

/// Per run, default cap on logged output.
pub const DEFAULT_OUTPUT_LIMIT: u64 = 64 * 1024;
/// Lines longer than this are split into several events.
pub const MAX_LINE_BYTES: usize = 4 * 1024;

/// Turns a run's output into `run.output` events: lines in order, long lines split,
/// invalid UTF-8 replaced, and the whole run capped at a byte limit after which one
/// `run.output_truncated` event is logged and the rest is counted but dropped.
///
/// One sink serves every attempt of a run, so the cap is per run.
#[derive(Debug)]
pub struct OutputSink {
    events: Events,
    job: Arc<str>,
    run_id: Arc<str>,
    limit: u64,
    state: Mutex<OutputState>,
    /// The process of the run's current attempt (0: none yet), for `chime status`.
    pid: AtomicU32,
}

#[derive(Debug, Default)]
struct OutputState {
    /// Bytes of output seen, logged or not.
    total: u64,
    /// Bytes logged so far.
    logged: u64,
    truncated: bool,
}

impl OutputSink {
    pub fn new(events: Events, job: Arc<str>, run_id: Arc<str>, limit: u64) -> Self {
        OutputSink {
            events,
            job,
            run_id,
            limit,
            state: Mutex::new(OutputState::default()),
            pid: AtomicU32::new(0),
        }
    }

    /// Records the process of the attempt that writes here (shell jobs).
    pub fn set_pid(&self, pid: u32) {
        self.pid.store(pid, Ordering::Release);
    }

    /// The process of the current attempt, once one was spawned.
    pub fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::Acquire)).filter(|&pid| pid != 0)
    }

    /// Logs one line (without its newline). Lines over [`MAX_LINE_BYTES`] are split.
    pub fn line(&self, stream: Stream, bytes: &[u8]) {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        if bytes.is_empty() {
            self.piece(stream, bytes);
        }
        for chunk in bytes.chunks(MAX_LINE_BYTES) {
            self.piece(stream, chunk);
        }
    }

    fn piece(&self, stream: Stream, chunk: &[u8]) {
        // The lock is held while emitting so that stdout and stderr lines keep one order.
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let size = chunk.len() as u64 + 1;
        state.total += size;
        if state.truncated {
            return;
        }
        if state.logged + size > self.limit {
            state.truncated = true;
            self.events.emit(Event::RunOutputTruncated {
                job: Arc::clone(&self.job),
                run_id: Arc::clone(&self.run_id),
                limit_bytes: self.limit,
            });
            return;
        }
        state.logged += size;
        self.events.emit(Event::RunOutput {
            job: Arc::clone(&self.job),
            run_id: Arc::clone(&self.run_id),
            stream,
            line: String::from_utf8_lossy(chunk).into_owned(),
        });
    }

    /// Bytes of output the run produced (newlines included), logged or not.
    pub fn total_bytes(&self) -> u64 {
        self.state.lock().map_or(0, |s| s.total)
    }

    pub fn truncated(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(limit: u64) -> (OutputSink, Arc<Mutex<Vec<Event>>>) {
        let (events, store) = Events::recorder();
        (
            OutputSink::new(events, "j".into(), "r".into(), limit),
            store,
        )
    }

    fn lines(store: &Mutex<Vec<Event>>) -> Vec<String> {
        store
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::RunOutput { line, .. } => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn long_lines_are_split_and_bad_utf8_replaced() {
        let (sink, store) = sink(1 << 20);
        sink.line(Stream::Stdout, &vec![b'a'; MAX_LINE_BYTES * 2 + 10]);
        sink.line(Stream::Stderr, b"caf\xff\r");
        let got = lines(&store);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].len(), MAX_LINE_BYTES);
        assert_eq!(got[2].len(), 10);
        assert_eq!(got[3], "caf\u{fffd}");
    }

    #[test]
    fn cap_emits_one_truncation_event_and_keeps_counting() {
        let (sink, store) = sink(20);
        for _ in 0..10 {
            sink.line(Stream::Stdout, b"123456789"); // 10 bytes with newline
        }
        assert_eq!(lines(&store).len(), 2);
        let truncations = store
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Event::RunOutputTruncated { .. }))
            .count();
        assert_eq!(truncations, 1);
        assert!(sink.truncated());
        assert_eq!(sink.total_bytes(), 100);
    }
}
