//! What chime remembers across restarts (DESIGN.md §10): every run, the last fire
//! handled per job, paused jobs. One small [`Store`] trait, shaped so that another
//! backend (PostgreSQL, for replicas) can implement it; SQL lives only in the
//! implementations.
//!
//! - [`sqlite`]: the embedded default, [`SqliteStore`] (WAL, schema version, migrations).
//! - [`writer`]: the one writer thread behind a bounded queue, fed from run events;
//!   nothing on the firing path waits for the database.
//! - [`leftover`]: process groups of interrupted runs that still live.
//! - [`location`]: where the state directory is (`--state-dir`).

pub mod leftover;
pub mod location;
pub mod sqlite;
pub mod writer;

use std::collections::HashMap;

use chrono::{DateTime, Utc};

pub use sqlite::SqliteStore;

/// Bytes of a run's output kept with it (its last lines).
pub const OUTPUT_TAIL_BYTES: usize = 4096;

/// A store error: what failed, and its cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the state database {path} has schema version {found}, newer than this chime understands ({supported}); run a newer chime, or move the directory aside to start afresh"
    )]
    TooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("the state database is corrupt: {0}")]
    Corrupt(#[source] rusqlite::Error),
    #[error("the state database is busy (locked by another process): {0}")]
    Locked(#[source] rusqlite::Error),
    #[error("the state database cannot be written: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The cluster's PostgreSQL (`--cluster`): unreachable, refused, or a statement failed.
    #[error("{what}: {detail}")]
    Cluster { what: String, detail: String },
}

impl StoreError {
    /// How an operator fixes it, for `state.failed`.
    pub fn fix(&self) -> &'static str {
        match self {
            StoreError::TooNew { .. } => {
                "run the chime that wrote it, or move the state directory aside"
            }
            StoreError::Corrupt(_) => "the file is moved aside and a fresh one started",
            StoreError::Locked(_) => {
                "stop the other process holding the database (another chime on the same --state-dir?)"
            }
            StoreError::Sqlite(_) | StoreError::Io { .. } => {
                "free disk space or make the state directory writable (or run with --state-dir none); chime retries"
            }
            StoreError::Cluster { .. } => {
                "check that the cluster database named by --cluster is up and reachable; chime retries"
            }
        }
    }

    pub fn is_corrupt(&self) -> bool {
        matches!(self, StoreError::Corrupt(_))
    }
}

/// A run as it starts (each attempt's `run.started` updates `attempts`).
#[derive(Debug, Clone, PartialEq)]
pub struct RunStart {
    pub job: String,
    pub run_id: String,
    pub scheduled_at: DateTime<Utc>,
    pub trigger: String,
    pub attempt: u32,
    pub started: DateTime<Utc>,
    pub lateness_ms: f64,
    pub pid: Option<u32>,
    /// The process's start time (`/proc/PID/stat` field 22), so a pid is never taken
    /// for a later process that reused it.
    pub pid_start: Option<u64>,
}

/// A run as it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEnd {
    pub run_id: String,
    pub attempts: u32,
    pub outcome: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub finished: DateTime<Utc>,
    pub duration_ms: u64,
    pub output_tail: String,
}

/// One write; the writer applies many in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Started(RunStart),
    Finished(RunEnd),
    /// A fire of the job was handled (run, skipped or counted missed).
    Handled {
        job: String,
        at: DateTime<Utc>,
    },
    Interrupted {
        run_id: String,
        at: DateTime<Utc>,
    },
    Paused {
        job: String,
        paused: bool,
    },
}

/// A stored run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub job: String,
    pub run_id: String,
    pub scheduled_at: DateTime<Utc>,
    pub trigger: String,
    pub attempts: u32,
    /// `running`, `interrupted`, or the outcome (`success`, `failure`, …).
    pub status: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub started: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    pub lateness_ms: f64,
    pub pid: Option<u32>,
    pub pid_start: Option<u64>,
    pub output_tail: Option<String>,
}

impl RunRecord {
    pub fn failed(&self) -> bool {
        !matches!(self.status.as_str(), "success" | "running")
    }
}

/// What `chime status` shows of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSummary {
    pub job: String,
    pub last_handled: Option<DateTime<Utc>>,
    pub last_run: Option<RunRecord>,
    pub running: u32,
    /// Runs that ended other than in success since the last success.
    pub failures_in_row: u32,
    pub paused: bool,
}

/// A history query: newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryQuery {
    pub job: Option<String>,
    pub run_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub failed_only: bool,
    pub limit: usize,
}

/// Persistence of runs and per-job facts. Implementations own their SQL; callers see
/// only these methods. Writes come in batches (one transaction each); the single-write
/// methods are conveniences over [`Store::apply`].
pub trait Store: Send {
    /// Applies every write, all or none.
    fn apply(&mut self, batch: &[Write]) -> Result<(), StoreError>;

    fn record_run_started(&mut self, run: RunStart) -> Result<(), StoreError> {
        self.apply(&[Write::Started(run)])
    }
    fn record_run_finished(&mut self, run: RunEnd) -> Result<(), StoreError> {
        self.apply(&[Write::Finished(run)])
    }
    fn mark_fire_handled(&mut self, job: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.apply(&[Write::Handled {
            job: job.to_string(),
            at,
        }])
    }
    fn mark_interrupted(&mut self, run_id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.apply(&[Write::Interrupted {
            run_id: run_id.to_string(),
            at,
        }])
    }
    fn set_paused(&mut self, job: &str, paused: bool) -> Result<(), StoreError> {
        self.apply(&[Write::Paused {
            job: job.to_string(),
            paused,
        }])
    }

    /// The last fire handled of each job that has one.
    fn last_handled(&self) -> Result<HashMap<String, DateTime<Utc>>, StoreError>;
    /// When each job's last successful run ended (for `chime_last_success_timestamp_seconds`
    /// across restarts), of the runs still kept.
    fn last_successes(&self) -> Result<HashMap<String, DateTime<Utc>>, StoreError>;
    /// Runs still `running`.
    fn unfinished_runs(&self) -> Result<Vec<RunRecord>, StoreError>;
    fn paused_jobs(&self) -> Result<Vec<String>, StoreError>;
    fn runs(&self, query: &HistoryQuery) -> Result<Vec<RunRecord>, StoreError>;
    fn job_summaries(&self) -> Result<Vec<JobSummary>, StoreError>;
    /// The replica (`--cluster-member`) that ran each of these runs, where the store
    /// keeps one (the cluster's); empty otherwise.
    fn run_members(&self, run_ids: &[String]) -> Result<HashMap<String, String>, StoreError> {
        let _ = run_ids;
        Ok(HashMap::new())
    }
    /// Deletes finished runs started before `older_than`, and all but the newest
    /// `keep_per_job` runs of each job; returns how many went.
    fn prune(&mut self, older_than: DateTime<Utc>, keep_per_job: usize) -> Result<u64, StoreError>;
}
