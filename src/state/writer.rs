//! The one writer: run events become [`Write`]s in a bounded queue, and a thread of
//! its own applies them in batches, one transaction each. Whoever emits an event only
//! pushes to the queue (a short lock, no I/O), so the firing path never waits for the
//! disk. When the queue is full the oldest write is dropped and counted.
//!
//! A failing database (full disk, read-only, locked) gives `state.failed` with the
//! cause and the fix, and the batch is tried again after a backoff (1 s, doubling up to
//! 30 s), while firing goes on. A corrupt file is moved aside as
//! `state.db.corrupt-<time>` and a fresh one is started. Retention is applied in the
//! background, at start and every hour.
//!
//! The store behind it is any [`Store`], opened (and reopened after a failure) through
//! a [`Target`]: the SQLite file by default, the cluster's PostgreSQL with `--cluster`
//! (`crate::cluster::store`), whose failures are `cluster.failed` instead.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{OUTPUT_TAIL_BYTES, RunEnd, RunStart, SqliteStore, Store, StoreError, Write};
use crate::events::{Event, Events, ExitDetail, Outcome, Trigger};

/// Writes held at most while the database is slow or failing.
pub const DEFAULT_QUEUE: usize = 100_000;
/// Writes applied in one transaction at most.
const BATCH: usize = 10_000;
/// After the first write arrives, the writer lets more gather until none came for this
/// long (or [`GATHER_MAX`] passed), so that a burst of fires is written after it has
/// been dispatched rather than competing with it for the CPU (a fixed wait could end
/// in the middle of a burst).
const GATHER_QUIET: Duration = Duration::from_millis(8);
/// The longest a write waits in the queue before the writer takes it (durability).
const GATHER_MAX: Duration = Duration::from_millis(250);
/// Output tails of runs in flight kept at most.
const MAX_TAILS: usize = 100_000;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How much history is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub keep: Duration,
    pub keep_runs: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep: Duration::from_secs(30 * 86_400),
            keep_runs: 1000,
        }
    }
}

/// What the firing path queues: only the facts the store keeps, with the names as
/// shared references (no copies, no clock read), in a small item (a burst's items are
/// written to memory on the firing path; 10,000 runs are 20,000 items). The strings
/// are made on the writer's thread.
enum Item {
    /// A write as such (from the control socket, or put back after a failure); boxed,
    /// as it is rare and large.
    Write(Box<Write>),
    Started {
        job: Arc<str>,
        run_id: Arc<str>,
        scheduled_at: DateTime<Utc>,
        lateness_ms: f64,
        attempt: u32,
        trigger: Trigger,
        pid: Option<u32>,
    },
    Finished(Ended),
    /// A fire skipped or missed: handled all the same.
    NotRun {
        job: Arc<str>,
        at: DateTime<Utc>,
    },
    /// A line of a run's output: only its last [`OUTPUT_TAIL_BYTES`] are kept.
    Output {
        run_id: Arc<str>,
        line: String,
    },
}

/// A run's end as queued.
struct Ended {
    run_id: Arc<str>,
    attempts: u32,
    outcome: Outcome,
    detail: ExitDetail,
    duration_ms: u64,
}

struct Queue {
    items: VecDeque<Item>,
    capacity: usize,
    dropped: u64,
    closed: bool,
    /// Writes applied so far (for tests and the benchmark).
    applied: u64,
    /// Items taken by the thread and not yet applied (or put back).
    taken: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Signalled after each batch is applied.
    done: Condvar,
}

fn lock(shared: &Shared) -> MutexGuard<'_, Queue> {
    shared
        .queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The queue's producer side: cheap to clone.
#[derive(Clone)]
pub struct StateWriter {
    shared: Arc<Shared>,
}

/// Owns the writer thread; [`WriterThread::close`] flushes what is queued and ends it.
pub struct WriterThread {
    writer: StateWriter,
    thread: Option<JoinHandle<()>>,
}

impl StateWriter {
    fn push(&self, item: Item) {
        let mut queue = lock(&self.shared);
        if queue.closed {
            return;
        }
        if queue.items.len() >= queue.capacity {
            queue.items.pop_front();
            queue.dropped += 1;
        }
        let first = queue.items.is_empty();
        queue.items.push_back(item);
        drop(queue);
        // The writer only waits on `ready` while the queue is empty (or a retry is
        // pending, which is timed): later pushes of a batch need no wake-up, which
        // spares the firing path a futex call per event.
        if first {
            self.shared.ready.notify_one();
        }
    }

    /// Queues a write.
    pub fn write(&self, write: Write) {
        self.push(Item::Write(Box::new(write)));
    }

    /// Queues the events that matter to the store, as a small [`Item`] (the facts kept,
    /// the names as shared references), without reading the clock: what to write is
    /// worked out on the writer's thread (a run's end is its start plus its measured
    /// duration).
    pub fn observe(&self, event: &Event) {
        let item = match event {
            Event::RunStarted {
                job,
                run_id,
                trigger,
                scheduled_at,
                lateness_ms,
                attempt,
                pid,
                ..
            } => Item::Started {
                job: Arc::clone(job),
                run_id: Arc::clone(run_id),
                scheduled_at: *scheduled_at,
                lateness_ms: *lateness_ms,
                attempt: *attempt,
                trigger: *trigger,
                pid: *pid,
            },
            Event::RunFinished {
                run_id,
                attempts,
                outcome,
                detail,
                duration_ms,
                ..
            } => Item::Finished(Ended {
                run_id: Arc::clone(run_id),
                attempts: *attempts,
                outcome: *outcome,
                detail: detail.clone(),
                duration_ms: *duration_ms,
            }),
            Event::RunOutput { run_id, line, .. } => Item::Output {
                run_id: Arc::clone(run_id),
                line: line.clone(),
            },
            Event::RunSkipped {
                job, scheduled_at, ..
            }
            | Event::RunMissed {
                job, scheduled_at, ..
            } => Item::NotRun {
                job: Arc::clone(job),
                at: *scheduled_at,
            },
            _ => return,
        };
        self.push(item);
    }

    /// Events that go to `inner` and, for runs, to the store too.
    pub fn recording(&self, inner: Events) -> Events {
        let writer = self.clone();
        Events::new(move |event| {
            writer.observe(&event);
            inner.emit(event);
        })
    }

    /// Writes applied so far and writes dropped (queue full).
    pub fn counts(&self) -> (u64, u64) {
        let queue = lock(&self.shared);
        (queue.applied, queue.dropped)
    }

    /// Waits until everything queued so far has been applied (or `timeout` passed);
    /// returns whether the queue emptied.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut queue = lock(&self.shared);
        while !queue.items.is_empty() || queue.taken > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            queue = self
                .shared
                .done
                .wait_timeout(queue, left.min(Duration::from_millis(50)))
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
        true
    }
}

/// Where the writer's store lives: it is (re)opened there, and failures are reported
/// in its terms.
pub trait Target: Send {
    /// Where, for messages (a file's path, a database's URL without its password).
    fn describe(&self) -> String;
    /// Opens the store for writing.
    fn open(&mut self, events: &Events) -> Result<Box<dyn Store>, StoreError>;
    /// The store said it is corrupt: starts afresh (by default, opens it again).
    fn replace_corrupt(
        &mut self,
        events: &Events,
        err: &StoreError,
    ) -> Result<Box<dyn Store>, StoreError> {
        let _ = err;
        self.open(events)
    }
    /// Says that writing failed (`state.failed` by default).
    fn report(&self, events: &Events, what: String, error: String, fix: String, dropped: u64) {
        events.emit(Event::StateFailed {
            what,
            error,
            fix,
            dropped,
        });
    }
}

/// The SQLite file of the state directory.
pub struct SqliteTarget(pub PathBuf);

impl Target for SqliteTarget {
    fn describe(&self) -> String {
        self.0.display().to_string()
    }
    fn open(&mut self, events: &Events) -> Result<Box<dyn Store>, StoreError> {
        Ok(Box::new(open_or_replace(&self.0, events)?))
    }
    fn replace_corrupt(
        &mut self,
        events: &Events,
        err: &StoreError,
    ) -> Result<Box<dyn Store>, StoreError> {
        Ok(Box::new(replace_corrupt(&self.0, events, err)?))
    }
}

/// Where the thread writes, and what it says when it cannot.
struct Sink {
    target: Box<dyn Target>,
    store: Option<Box<dyn Store>>,
    events: Events,
    retention: Retention,
    tails: HashMap<Arc<str>, String>,
    /// When each run in flight started, for its end (bounded like `tails`).
    starts: HashMap<Arc<str>, DateTime<Utc>>,
    failing: bool,
    last_said: Option<Instant>,
}

impl WriterThread {
    /// Starts the writer for the database at `path`. `store` is the database already
    /// opened (`None` if it could not be: it is opened again later).
    pub fn start(
        path: &Path,
        store: Option<SqliteStore>,
        events: Events,
        retention: Retention,
        capacity: usize,
    ) -> std::io::Result<WriterThread> {
        let store = store.map(|store| Box::new(store) as Box<dyn Store>);
        let target = Box::new(SqliteTarget(path.to_path_buf()));
        Self::start_with(target, store, events, retention, capacity)
    }

    /// Starts the writer for any store: `store` is the one already opened at `target`
    /// (`None` if it could not be: it is opened again later).
    pub fn start_with(
        target: Box<dyn Target>,
        store: Option<Box<dyn Store>>,
        events: Events,
        retention: Retention,
        capacity: usize,
    ) -> std::io::Result<WriterThread> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                capacity: capacity.max(1),
                dropped: 0,
                closed: false,
                applied: 0,
                taken: 0,
            }),
            ready: Condvar::new(),
            done: Condvar::new(),
        });
        let mut sink = Sink {
            target,
            store,
            events,
            retention,
            tails: HashMap::new(),
            starts: HashMap::new(),
            failing: false,
            last_said: None,
        };
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("chime-state".into())
            .spawn(move || sink.run(&thread_shared))?;
        Ok(WriterThread {
            writer: StateWriter { shared },
            thread: Some(thread),
        })
    }

    pub fn writer(&self) -> StateWriter {
        self.writer.clone()
    }

    /// Applies what is queued (one last try if the database fails) and ends the thread.
    pub fn close(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        lock(&self.writer.shared).closed = true;
        self.writer.shared.ready.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Sink {
    fn run(&mut self, shared: &Shared) {
        // The firing path comes first: this thread yields the CPU to it (Linux gives
        // each thread its own nice value).
        // SAFETY: setpriority and gettid have no memory effects; a failure leaves the
        // thread at its normal priority, which is only slower for the firing path.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
        }
        let mut next_prune = Instant::now();
        let mut backoff = BACKOFF_FIRST;
        let mut retry_at: Option<Instant> = None;
        // The batch taken from the queue: whole queues are swapped under the lock
        // (no copying there), and this one is handed back empty the next time.
        let mut taken: VecDeque<Item> = VecDeque::new();
        loop {
            let closed = {
                let mut queue = lock(shared);
                loop {
                    let now = Instant::now();
                    let retry_due = retry_at.is_none_or(|at| at <= now);
                    if queue.closed || (!queue.items.is_empty() && retry_due) {
                        break;
                    }
                    if next_prune <= now && retry_due {
                        break;
                    }
                    // While a failed batch waits for its retry, nothing else is due.
                    let until = retry_at.unwrap_or(next_prune);
                    let wait = until
                        .saturating_duration_since(now)
                        .max(Duration::from_millis(1));
                    queue = shared
                        .ready
                        .wait_timeout(queue, wait)
                        .map(|(guard, _)| guard)
                        .unwrap_or_else(|poisoned| poisoned.into_inner().0);
                }
                if !queue.closed && !queue.items.is_empty() && retry_at.is_none() {
                    drop(queue);
                    queue = gather(shared);
                }
                if taken.capacity() > 4 * BATCH {
                    // Let a past backlog's memory go.
                    taken = VecDeque::new();
                }
                std::mem::swap(&mut queue.items, &mut taken);
                queue.taken = taken.len();
                queue.closed
            };
            if next_prune <= Instant::now() && retry_at.is_none() {
                self.prune();
                next_prune = Instant::now() + PRUNE_EVERY;
            }
            // One transaction per BATCH items.
            let mut failed = None;
            while !taken.is_empty() {
                let chunk: Vec<Item> = taken.drain(..taken.len().min(BATCH)).collect();
                let writes = self.take_writes(chunk);
                let result = if writes.is_empty() {
                    Ok(())
                } else {
                    self.apply(&writes)
                };
                match result {
                    Ok(()) => {
                        let mut queue = lock(shared);
                        queue.applied += writes.len() as u64;
                        queue.taken = taken.len();
                    }
                    Err(err) => {
                        failed = Some((err, writes));
                        break;
                    }
                }
            }
            let mut queue = lock(shared);
            queue.taken = 0;
            match failed {
                None => {
                    if self.failing {
                        self.failing = false;
                        self.last_said = None;
                    }
                    backoff = BACKOFF_FIRST;
                    retry_at = None;
                }
                Some((err, writes)) => {
                    let dropped = queue.dropped;
                    if closed {
                        drop(queue);
                        self.say(&err, "writing the run history at shutdown", dropped, true);
                        return;
                    }
                    // Back to the front of the queue (the failed writes, then the rest
                    // of the batch), dropping the oldest over capacity.
                    while let Some(item) = taken.pop_back() {
                        queue.items.push_front(item);
                    }
                    for write in writes.into_iter().rev() {
                        queue.items.push_front(Item::Write(Box::new(write)));
                    }
                    while queue.items.len() > queue.capacity {
                        queue.items.pop_front();
                        queue.dropped += 1;
                    }
                    let dropped = queue.dropped;
                    drop(queue);
                    self.say(&err, "writing the run history", dropped, false);
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    shared.done.notify_all();
                    continue;
                }
            }
            let finished = closed && queue.items.is_empty();
            drop(queue);
            shared.done.notify_all();
            if finished {
                return;
            }
        }
    }

    /// The writes a batch's items mean; output lines go to the runs' tails, and a
    /// finished run takes its tail along.
    fn take_writes(&mut self, queued: Vec<Item>) -> Vec<Write> {
        let mut writes = Vec::with_capacity(queued.len() * 2);
        for item in queued {
            match item {
                Item::Started {
                    job,
                    run_id,
                    scheduled_at,
                    lateness_ms,
                    attempt,
                    trigger,
                    pid,
                } => {
                    let started = scheduled_at
                        + chrono::TimeDelta::microseconds((lateness_ms * 1000.0) as i64);
                    if attempt <= 1 {
                        if self.starts.len() >= MAX_TAILS {
                            // Runs whose end was dropped from a full queue: forget them.
                            self.starts.clear();
                        }
                        self.starts.insert(Arc::clone(&run_id), started);
                        writes.push(Write::Handled {
                            job: job.to_string(),
                            at: scheduled_at,
                        });
                    }
                    writes.push(Write::Started(RunStart {
                        job: job.to_string(),
                        run_id: run_id.to_string(),
                        scheduled_at,
                        trigger: trigger.as_str().to_string(),
                        attempt,
                        started,
                        lateness_ms,
                        // The spawned process (shell jobs), with its start time read
                        // here rather than on the run's path: a later chime tells a live
                        // leftover group from a process that reused the pid by it.
                        pid,
                        pid_start: pid.and_then(super::leftover::start_time),
                    }));
                }
                Item::Finished(end) => {
                    let Ended {
                        run_id,
                        attempts,
                        outcome,
                        detail,
                        duration_ms,
                    } = end;
                    // The run's measured duration from its start; the writer's own
                    // clock only for a run whose start it never saw.
                    let finished = match self.starts.remove(&run_id) {
                        Some(started) => {
                            started
                                + chrono::TimeDelta::milliseconds(
                                    i64::try_from(duration_ms).unwrap_or(i64::MAX / 4),
                                )
                        }
                        None => Utc::now(),
                    };
                    writes.push(Write::Finished(RunEnd {
                        run_id: run_id.to_string(),
                        attempts,
                        outcome: outcome.as_str().to_string(),
                        exit_code: detail.exit_code,
                        signal: detail.signal,
                        http_status: detail.http_status,
                        error: detail.error,
                        finished,
                        duration_ms,
                        output_tail: self.tails.remove(&run_id).unwrap_or_default(),
                    }));
                }
                Item::NotRun { job, at } => writes.push(Write::Handled {
                    job: job.to_string(),
                    at,
                }),
                Item::Output { run_id, line } => {
                    if self.tails.len() >= MAX_TAILS && !self.tails.contains_key(&run_id) {
                        // Runs whose end was dropped from a full queue: forget them.
                        self.tails.clear();
                    }
                    let tail = self.tails.entry(run_id).or_default();
                    tail.push_str(&line);
                    tail.push('\n');
                    if tail.len() > OUTPUT_TAIL_BYTES {
                        let mut cut = tail.len() - OUTPUT_TAIL_BYTES;
                        while !tail.is_char_boundary(cut) {
                            cut += 1;
                        }
                        tail.drain(..cut);
                    }
                }
                Item::Write(write) => writes.push(*write),
            }
        }
        writes
    }

    fn apply(&mut self, writes: &[Write]) -> Result<(), StoreError> {
        let store = match &mut self.store {
            Some(store) => store,
            None => self.store.insert(self.target.open(&self.events)?),
        };
        match store.apply(writes) {
            Err(err) if err.is_corrupt() => {
                self.store = None;
                let fresh = self.target.replace_corrupt(&self.events, &err)?;
                let store = self.store.insert(fresh);
                store.apply(writes)
            }
            other => other,
        }
    }

    fn prune(&mut self) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let keep =
            chrono::TimeDelta::from_std(self.retention.keep).unwrap_or(chrono::TimeDelta::MAX);
        let older_than = Utc::now()
            .checked_sub_signed(keep)
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
        if let Err(err) = store.prune(older_than, self.retention.keep_runs) {
            self.say(&err, "pruning the run history", 0, true);
        }
    }

    /// `state.failed`: at the first failure of a streak, then at most once a minute.
    fn say(&mut self, err: &StoreError, what: &str, dropped: u64, always: bool) {
        let quiet = self
            .last_said
            .is_some_and(|at| at.elapsed() < Duration::from_secs(60));
        self.failing = true;
        if quiet && !always {
            return;
        }
        self.last_said = Some(Instant::now());
        self.target.report(
            &self.events,
            format!("{what} to {}", self.target.describe()),
            error_chain(err),
            format!(
                "{}; firing goes on{}",
                err.fix(),
                if dropped > 0 {
                    format!(", {dropped} queued writes dropped so far")
                } else {
                    String::new()
                }
            ),
            dropped,
        );
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = inner.source();
    }
    text
}

/// Opens the database for writing; a corrupt one is moved aside (with `state.failed`)
/// and a fresh one started.
pub fn open_or_replace(path: &Path, events: &Events) -> Result<SqliteStore, StoreError> {
    match SqliteStore::open(path) {
        Err(err) if err.is_corrupt() => replace_corrupt(path, events, &err),
        other => other,
    }
}

fn replace_corrupt(
    path: &Path,
    events: &Events,
    err: &StoreError,
) -> Result<SqliteStore, StoreError> {
    let stamp = Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{stamp}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside).map_err(|source| StoreError::Io {
        what: format!("cannot move the corrupt {} aside", path.display()),
        source,
    })?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(side));
    }
    events.emit(Event::StateFailed {
        what: format!("opening the state database {}", path.display()),
        error: error_chain(err),
        fix: format!(
            "the corrupt file was moved aside to {} and a fresh database started; the history before it is in that file",
            aside.display()
        ),
        dropped: 0,
    });
    SqliteStore::open(path)
}

/// Lets writes gather until none arrived for [`GATHER_QUIET`], [`GATHER_MAX`] passed, the
/// queue is half full or closing; returns the queue locked.
fn gather(shared: &Shared) -> MutexGuard<'_, Queue> {
    let start = Instant::now();
    let mut seen = lock(shared).items.len();
    loop {
        let left = GATHER_MAX.saturating_sub(start.elapsed());
        std::thread::sleep(GATHER_QUIET.min(left));
        let queue = lock(shared);
        let len = queue.items.len();
        if queue.closed || len == seen || len >= queue.capacity / 2 || start.elapsed() >= GATHER_MAX
        {
            return queue;
        }
        seen = len;
    }
}

#[cfg(test)]
mod tests {
    /// The firing path writes one item per run event; keep it small.
    #[test]
    fn a_queued_item_stays_small() {
        let size = std::mem::size_of::<super::Item>();
        assert!(size <= 96, "an item is {size} bytes");
    }
}
