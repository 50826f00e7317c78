//! Monitoring (DESIGN.md §12): Prometheus metrics, `/health`, and each job's pings.
//!
//! The [`Monitor`] reads the event stream beside the log writers: [`Monitor::observe`]
//! wraps an [`Events`] so that the events it needs are also sent, without waiting, to
//! the monitor's own thread. That thread keeps the metrics, the runs in flight (for
//! `chime_running` and the output tail a ping carries) and starts pings as tasks on the
//! service's runtime. A scrape is answered on that thread too, so neither a scrape nor
//! a slow monitoring server ever holds up a fire.
//!
//! - [`metrics`]: the Prometheus families (`prometheus-client`).
//! - [`pings`]: healthchecks.io and the `on_*` hooks.
//! - [`http`]: `--listen`: `GET /metrics`, `GET /health`.

pub mod http;
mod metrics;
mod pings;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use chrono::{DateTime, Utc};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use self::metrics::Metrics;
pub use self::pings::TAIL_BYTES;
use self::pings::{Facts, Pinger, Tail};
use crate::cron::Schedule;
use crate::events::{Event, Events, Outcome, SkipReason};
use crate::job::{Job, Pings};
use crate::zone::Zone;

/// What the monitor is asked to do.
#[derive(Debug, Clone, Default)]
pub struct MonitorOptions {
    /// Keep Prometheus metrics (`--listen` given).
    pub metrics: bool,
    /// Each job's last success, from the state store.
    pub last_success: HashMap<String, DateTime<Utc>>,
}

enum Message {
    /// An event, and when it was emitted.
    Event(Event, DateTime<Utc>),
    Jobs(Vec<Watched>),
    Scrape(tokio::sync::oneshot::Sender<String>),
    /// Everything sent before has been handled: the pings in flight.
    Flush(tokio::sync::oneshot::Sender<tokio_util::task::TaskTracker>),
}

/// What the monitor keeps of a job.
struct Watched {
    name: Arc<str>,
    schedule: Schedule,
    zone: Zone,
    enabled: bool,
    pings: Option<Arc<Pings>>,
}

impl Watched {
    fn of(job: &Job) -> Watched {
        Watched {
            name: Arc::from(job.name.as_str()),
            schedule: job.schedule.clone(),
            zone: job.timezone,
            enabled: job.enabled,
            pings: job.pings.clone(),
        }
    }
}

/// The handle: cheap to clone.
#[derive(Clone)]
pub struct Monitor {
    tx: mpsc::Sender<Message>,
    /// Whether any job has pings: only then are output lines sent over.
    wants_output: Arc<AtomicBool>,
    /// Whether metrics are kept or any job has pings: otherwise no event is sent over.
    active: Arc<AtomicBool>,
    metrics: bool,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Monitor")
    }
}

impl Monitor {
    /// Starts the monitor's thread. `events` receives `hook.failed`; pings run on
    /// `runtime`.
    pub fn start(
        options: MonitorOptions,
        jobs: &[Job],
        events: Events,
        runtime: Handle,
    ) -> std::io::Result<Monitor> {
        let (tx, rx) = mpsc::channel();
        let wants_output = Arc::new(AtomicBool::new(false));
        let metrics = options.metrics.then(Metrics::new);
        let mut state = State {
            metrics,
            jobs: HashMap::new(),
            runs: HashMap::new(),
            pinger: Pinger::new(events, runtime),
            last_scrape_bytes: 0,
        };
        state.jobs_loaded(jobs.iter().map(Watched::of).collect());
        if let Some(metrics) = &state.metrics {
            // Only for jobs still defined (the table has rows for those alone).
            metrics.restore_last_success(&options.last_success);
        }
        std::thread::Builder::new()
            .name("chime-monitor".into())
            .spawn(move || {
                lower_priority();
                while let Ok(message) = rx.recv() {
                    state.handle(message);
                }
            })?;
        let monitor = Monitor {
            tx,
            wants_output,
            active: Arc::new(AtomicBool::new(false)),
            metrics: options.metrics,
        };
        monitor.note_pings(jobs);
        Ok(monitor)
    }

    /// Set before the jobs take effect, so that no run of a job with pings is missed.
    fn note_pings(&self, jobs: &[Job]) {
        let pings = jobs.iter().any(|job| job.pings.is_some());
        self.wants_output.store(pings, Ordering::Relaxed);
        self.active.store(pings || self.metrics, Ordering::Relaxed);
    }

    /// `events`, and a copy of what the monitor needs sent to it (never waiting).
    pub fn observe(&self, events: Events) -> Events {
        let tx = self.tx.clone();
        let wants_output = Arc::clone(&self.wants_output);
        let active = Arc::clone(&self.active);
        Events::new(move |event| {
            if !active.load(Ordering::Relaxed) {
                return events.emit(event);
            }
            let wanted = match &event {
                Event::RunOutput { .. } => wants_output.load(Ordering::Relaxed),
                Event::RunStarted { .. }
                | Event::RunFinished { .. }
                | Event::RunSkipped { .. }
                | Event::RunMissed { .. }
                | Event::ConfigReloaded { .. }
                | Event::ConfigRejected { .. } => true,
                _ => false,
            };
            if wanted {
                // The monitor thread ends only when every sender is gone.
                let _ = tx.send(Message::Event(event.clone(), Utc::now()));
            }
            events.emit(event);
        })
    }

    /// A new set of jobs was loaded (at start, or by a reload that was applied).
    pub fn jobs_loaded(&self, jobs: &[Job]) {
        self.note_pings(jobs);
        let _ = self
            .tx
            .send(Message::Jobs(jobs.iter().map(Watched::of).collect()));
    }

    /// Waits, up to `bound`, for the pings of every event sent so far (a stopping
    /// service gives the last runs' pings this moment).
    pub async fn flush(&self, bound: std::time::Duration) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.tx.send(Message::Flush(reply)).is_err() {
            return;
        }
        let wait = async {
            if let Ok(tracker) = answer.await {
                tracker.close();
                tracker.wait().await;
            }
        };
        let _ = tokio::time::timeout(bound, wait).await;
    }

    /// The metrics in Prometheus' text format; `None` without metrics.
    pub async fn scrape(&self) -> Option<String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx.send(Message::Scrape(reply)).ok()?;
        answer.await.ok()
    }
}

/// The monitor's work (a scrape of 100,000 jobs is tens of milliseconds of CPU) gives
/// way to the scheduling thread and the runs' workers on a busy machine: the thread
/// runs at nice +10. Linux applies `setpriority` to the calling thread.
fn lower_priority() {
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
    let changed = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10)
    };
    if changed != 0 {
        tracing::debug!("the monitor thread keeps the service's priority");
    }
}

struct JobState {
    watched: Watched,
    /// The next fire last computed; recomputed once it has passed.
    next_fire: Option<Option<DateTime<Utc>>>,
}

/// A run in flight.
struct RunTrack {
    job: Arc<str>,
    /// Counted in `chime_running` (its job was loaded at its start, and has not been
    /// removed since).
    counted: bool,
    pings: Option<Arc<Pings>>,
    scheduled_at: DateTime<Utc>,
    tail: Tail,
    /// The pings sent at its start (healthchecks', `on_start`): each channel reports
    /// the end after its start.
    healthchecks_start: Vec<JoinHandle<()>>,
    hook_start: Vec<JoinHandle<()>>,
}

struct State {
    metrics: Option<Metrics>,
    jobs: HashMap<Arc<str>, JobState>,
    runs: HashMap<Arc<str>, RunTrack>,
    pinger: Pinger,
    /// The size of the last scrape, to allocate the next at once.
    last_scrape_bytes: usize,
}

impl State {
    fn handle(&mut self, message: Message) {
        match message {
            Message::Event(event, at) => self.event(&event, at),
            Message::Jobs(jobs) => self.jobs_loaded(jobs),
            Message::Flush(reply) => {
                let _ = reply.send(self.pinger.tracker.clone());
            }
            Message::Scrape(reply) => {
                if let Some(text) = self.scrape() {
                    let _ = reply.send(text);
                }
            }
        }
    }

    fn jobs_loaded(&mut self, jobs: Vec<Watched>) {
        let mut old = std::mem::take(&mut self.jobs);
        let names: Vec<Arc<str>> = jobs.iter().map(|job| Arc::clone(&job.name)).collect();
        for watched in jobs {
            let next_fire = old.remove(&watched.name).and_then(|kept| {
                let same = kept.watched.schedule == watched.schedule
                    && kept.watched.zone == watched.zone
                    && kept.watched.enabled == watched.enabled;
                same.then_some(kept.next_fire).flatten()
            });
            self.jobs
                .insert(Arc::clone(&watched.name), JobState { watched, next_fire });
        }
        // A removed job's series go; its runs in flight no longer count.
        for track in self.runs.values_mut() {
            if old.contains_key(&track.job) {
                track.counted = false;
            }
        }
        if let Some(metrics) = &self.metrics {
            metrics.jobs_loaded(names.iter());
            for (name, job) in &self.jobs {
                if !job.watched.enabled {
                    metrics.set_next_fire(name, None);
                }
            }
        }
    }

    fn scrape(&mut self) -> Option<String> {
        let metrics = self.metrics.as_ref()?;
        let now = Utc::now();
        for (name, job) in &mut self.jobs {
            if !job.watched.enabled {
                continue;
            }
            let stale = match job.next_fire {
                None => true,
                Some(Some(at)) => at <= now,
                Some(None) => false,
            };
            if stale {
                let next = job.watched.schedule.next_after(job.watched.zone, now);
                job.next_fire = Some(next);
                metrics.set_next_fire(name, next);
            }
        }
        let text = metrics.encode(self.last_scrape_bytes);
        self.last_scrape_bytes = text.len();
        Some(text)
    }

    fn event(&mut self, event: &Event, at: DateTime<Utc>) {
        let known = event.job().is_some_and(|job| self.jobs.contains_key(job));
        let first = match event {
            Event::RunStarted { run_id, .. } => !self.runs.contains_key(run_id),
            _ => false,
        };
        if let Some(metrics) = &self.metrics {
            let running = match event {
                Event::RunFinished { run_id, .. } => {
                    self.runs.get(run_id).is_some_and(|track| track.counted)
                }
                _ => false,
            };
            metrics.observe(event, at, first, known, running);
        }
        match event {
            Event::RunStarted {
                job,
                run_id,
                scheduled_at,
                ..
            } if first => self.run_started(job, run_id, *scheduled_at, known),
            Event::RunOutput { run_id, line, .. } => {
                if let Some(track) = self.runs.get_mut(run_id)
                    && track.pings.is_some()
                {
                    track.tail.push(line);
                }
            }
            Event::RunFinished { .. } => self.run_finished(event),
            Event::RunSkipped {
                job,
                scheduled_at,
                reason,
            } if !matches!(reason, SkipReason::Disabled | SkipReason::Paused) => {
                let text = format!(
                    "run.skipped: job {job}, fire at {}, reason {}",
                    crate::events::rfc3339(*scheduled_at),
                    reason.as_str()
                );
                self.not_run(job, *scheduled_at, "skipped", text);
            }
            Event::RunMissed {
                job,
                scheduled_at,
                count,
                reason,
            } => {
                let text = format!(
                    "run.missed: job {job}, {count} fire(s) up to {}, reason {}",
                    crate::events::rfc3339(*scheduled_at),
                    reason.as_str()
                );
                self.not_run(job, *scheduled_at, "missed", text);
            }
            _ => {}
        }
    }

    fn pings_of(&self, job: &str) -> Option<Arc<Pings>> {
        self.jobs.get(job).and_then(|job| job.watched.pings.clone())
    }

    fn run_started(
        &mut self,
        job: &Arc<str>,
        run_id: &Arc<str>,
        scheduled_at: DateTime<Utc>,
        known: bool,
    ) {
        let pings = self.pings_of(job);
        let mut healthchecks_start = Vec::new();
        let mut hook_start = Vec::new();
        if let Some(pings) = &pings {
            let facts = Facts {
                job: Arc::clone(job),
                run_id: Arc::clone(run_id),
                outcome: "started".into(),
                exit_code: None,
                duration_ms: None,
                scheduled_at,
                output_tail: String::new(),
            };
            if let Some(ping) = &pings.healthchecks {
                healthchecks_start
                    .push(self.pinger.healthchecks(ping, "start", &facts, None, None));
            }
            if let Some(hook) = &pings.on_start {
                hook_start.push(self.pinger.hook("on_start", hook, &facts, None));
            }
        }
        self.runs.insert(
            Arc::clone(run_id),
            RunTrack {
                job: Arc::clone(job),
                counted: known,
                pings,
                scheduled_at,
                tail: Tail::default(),
                healthchecks_start,
                hook_start,
            },
        );
    }

    fn run_finished(&mut self, event: &Event) {
        let Event::RunFinished {
            job,
            run_id,
            outcome,
            detail,
            duration_ms,
            ..
        } = event
        else {
            return;
        };
        let Some(track) = self.runs.remove(run_id) else {
            return;
        };
        let Some(pings) = track.pings else {
            return;
        };
        let facts = Facts {
            job: Arc::clone(job),
            run_id: Arc::clone(run_id),
            outcome: outcome.as_str().to_string(),
            exit_code: detail.exit_code,
            duration_ms: Some(*duration_ms),
            scheduled_at: track.scheduled_at,
            output_tail: track.tail.text(),
        };
        if let Some(ping) = &pings.healthchecks {
            // An exit code when the process ended by itself; `fail` for a timeout, a
            // kill, a cancellation or an HTTP job's failure.
            let what = match (outcome, detail.exit_code) {
                (Outcome::Success | Outcome::Failure, Some(code)) => code.to_string(),
                (Outcome::Success, None) => "0".to_string(),
                _ => "fail".to_string(),
            };
            let body = Some(facts.output_tail.clone());
            let after = self.pinger.gate(track.healthchecks_start);
            self.pinger.healthchecks(ping, &what, &facts, body, after);
        }
        let hook = match outcome {
            Outcome::Success => pings.on_success.as_ref().map(|hook| ("on_success", hook)),
            _ => pings.on_failure.as_ref().map(|hook| ("on_failure", hook)),
        };
        if let Some((name, hook)) = hook {
            let after = self.pinger.gate(track.hook_start);
            self.pinger.hook(name, hook, &facts, after);
        }
    }

    /// `report_missed`: a fire that did not run is reported as a failure, with a
    /// fresh run id and the reason as the body.
    fn not_run(
        &mut self,
        job: &Arc<str>,
        scheduled_at: DateTime<Utc>,
        outcome: &str,
        text: String,
    ) {
        let Some(pings) = self.pings_of(job).filter(|pings| pings.report_missed) else {
            return;
        };
        let facts = Facts {
            job: Arc::clone(job),
            run_id: crate::run::new_run_id(),
            outcome: outcome.to_string(),
            exit_code: None,
            duration_ms: None,
            scheduled_at,
            output_tail: text,
        };
        if let Some(ping) = &pings.healthchecks {
            self.pinger
                .healthchecks(ping, "fail", &facts, Some(facts.output_tail.clone()), None);
        }
        if let Some(hook) = &pings.on_failure {
            self.pinger.hook("on_failure", hook, &facts, None);
        }
    }
}
