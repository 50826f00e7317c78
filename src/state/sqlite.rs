//! The embedded store: one SQLite file in WAL mode (a reader such as `chime status`
//! never blocks the writer), with a schema version in `PRAGMA user_version` and the
//! migrations that lead to it. Times are milliseconds since the Unix epoch.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, Row, params};

use super::{HistoryQuery, JobSummary, RunRecord, Store, StoreError, Write};

/// The schema this binary writes. Migration `k` (index k-1) leads from version k-1 to k.
const MIGRATIONS: &[&str] = &[
    // 1: runs and per-job facts.
    "CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        job TEXT NOT NULL,
        scheduled_at INTEGER NOT NULL,
        trigger TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        status TEXT NOT NULL,
        exit_code INTEGER,
        signal INTEGER,
        http_status INTEGER,
        error TEXT,
        started INTEGER NOT NULL,
        finished INTEGER,
        duration_ms INTEGER,
        lateness_ms REAL NOT NULL,
        pid INTEGER,
        pid_start INTEGER,
        output_tail TEXT
    );
    CREATE INDEX runs_by_job ON runs (job, started);
    CREATE INDEX runs_by_start ON runs (started);
    CREATE INDEX runs_running ON runs (status) WHERE status = 'running';
    CREATE TABLE jobs (
        job TEXT PRIMARY KEY,
        last_handled INTEGER,
        last_run_id TEXT,
        failures_in_row INTEGER NOT NULL DEFAULT 0,
        paused INTEGER NOT NULL DEFAULT 0
    );",
];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The database's file name inside the state directory's `db/`.
pub const DB_FILE: &str = "state.db";

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

fn classify(err: rusqlite::Error) -> StoreError {
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt(err),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Locked(err),
        _ => StoreError::Sqlite(err),
    }
}

fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

const RUN_COLUMNS: &str = "job, run_id, scheduled_at, trigger, attempts, status, exit_code, signal, \
     http_status, error, started, finished, duration_ms, lateness_ms, pid, pid_start, output_tail";

fn run_record(row: &Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        job: row.get(0)?,
        run_id: row.get(1)?,
        scheduled_at: at(row.get(2)?),
        trigger: row.get(3)?,
        attempts: row.get(4)?,
        status: row.get(5)?,
        exit_code: row.get(6)?,
        signal: row.get(7)?,
        http_status: row.get(8)?,
        error: row.get(9)?,
        started: at(row.get(10)?),
        finished: row.get::<_, Option<i64>>(11)?.map(at),
        duration_ms: row.get::<_, Option<i64>>(12)?.map(|d| d.max(0) as u64),
        lateness_ms: row.get(13)?,
        pid: row.get(14)?,
        pid_start: row.get::<_, Option<i64>>(15)?.map(|s| s as u64),
        output_tail: row.get(16)?,
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` for writing, and brings its
    /// schema up to date. A newer schema than this binary knows is an error.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(classify)?;
        let mut store = SqliteStore {
            conn,
            path: path.to_path_buf(),
        };
        store.prepare()?;
        Ok(store)
    }

    /// Opens an existing database read-only, beside a running writer (WAL).
    pub fn open_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(classify)?;
        conn.busy_timeout(std::time::Duration::from_secs(2))
            .map_err(classify)?;
        let store = SqliteStore {
            conn,
            path: path.to_path_buf(),
        };
        store.check_version()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_version(&self) -> Result<i64, StoreError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(classify)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.display().to_string(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(version)
    }

    fn prepare(&mut self) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(classify)?;
        // `journal_mode` answers with a row; WAL lets readers in beside the writer.
        let _mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(classify)?;
        self.conn
            .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF; PRAGMA cache_size = -16384; PRAGMA mmap_size = 268435456;")
            .map_err(classify)?;
        let version = self.check_version()?;
        let tx = self.conn.transaction().map_err(classify)?;
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(migration).map_err(classify)?;
            tx.pragma_update(None, "user_version", index as i64 + 1)
                .map_err(classify)?;
        }
        tx.commit().map_err(classify)?;
        Ok(())
    }

    /// Applies a batch in order, with two savings that keep the result the same as one
    /// write at a time: a run that starts and ends within the batch is written once, as
    /// it ended; and each job's facts (last fire handled, last run, failures in a row,
    /// paused) are folded in memory and written once per job, at the end.
    fn apply_batch(tx: &rusqlite::Transaction<'_>, batch: &[Write]) -> rusqlite::Result<()> {
        // Where each run's end is, for runs that end within the batch.
        let mut ends: HashMap<&str, &super::RunEnd> = HashMap::new();
        for write in batch {
            if let Write::Finished(end) = write {
                ends.insert(end.run_id.as_str(), end);
            }
        }
        // The last pid of each run started within the batch (a retry's new process).
        let mut pids: HashMap<&str, (Option<u32>, Option<u64>)> = HashMap::new();
        for write in batch {
            if let Write::Started(run) = write {
                let slot = pids.entry(run.run_id.as_str()).or_default();
                slot.0 = run.pid.or(slot.0);
                slot.1 = run.pid_start.or(slot.1);
            }
        }
        let mut whole: HashSet<&str> = HashSet::new();
        let mut run_jobs: HashMap<&str, &str> = HashMap::new();
        let mut jobs: HashMap<Cow<'_, str>, JobFacts<'_>> = HashMap::new();
        for write in batch {
            match write {
                Write::Started(run) => {
                    let run_id = run.run_id.as_str();
                    run_jobs.insert(run_id, run.job.as_str());
                    if run.attempt <= 1 {
                        jobs.entry(Cow::Borrowed(run.job.as_str()))
                            .or_default()
                            .last_run_id = Some(run_id);
                    }
                    if whole.contains(run_id) {
                        continue;
                    }
                    if let Some(end) = ends.get(run_id) {
                        let (pid, pid_start) = pids.get(run_id).copied().unwrap_or_default();
                        Self::insert_whole(tx, run, end, pid, pid_start)?;
                        whole.insert(run_id);
                        continue;
                    }
                    tx.prepare_cached(
                        "INSERT INTO runs (run_id, job, scheduled_at, trigger, attempts, status,
                            started, lateness_ms, pid, pid_start)
                         VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8, ?9)
                         ON CONFLICT (run_id) DO UPDATE SET attempts = excluded.attempts,
                            pid = coalesce(excluded.pid, pid),
                            pid_start = coalesce(excluded.pid_start, pid_start)",
                    )?
                    .execute(params![
                        run.run_id,
                        run.job,
                        ms(run.scheduled_at),
                        run.trigger,
                        run.attempt,
                        ms(run.started),
                        run.lateness_ms,
                        run.pid,
                        run.pid_start.map(|s| s as i64),
                    ])?;
                }
                Write::Finished(end) => {
                    let run_id = end.run_id.as_str();
                    let job: Option<Cow<'_, str>> = match run_jobs.get(run_id) {
                        Some(job) => Some(Cow::Borrowed(*job)),
                        None => tx
                            .prepare_cached("SELECT job FROM runs WHERE run_id = ?1")?
                            .query_row(params![run_id], |row| row.get::<_, String>(0))
                            .optional()?
                            .map(Cow::Owned),
                    };
                    if !whole.contains(run_id) {
                        Self::finish(tx, end)?;
                    }
                    if let Some(job) = job {
                        jobs.entry(job)
                            .or_default()
                            .outcome(end.outcome == "success");
                    }
                }
                Write::Handled { job, at } => {
                    let facts = jobs.entry(Cow::Borrowed(job.as_str())).or_default();
                    facts.handled = Some(facts.handled.map_or(ms(*at), |h| h.max(ms(*at))));
                }
                Write::Interrupted { run_id, at } => {
                    tx.prepare_cached(
                        "UPDATE runs SET status = 'interrupted', finished = ?2,
                            duration_ms = max(?2 - started, 0)
                         WHERE run_id = ?1 AND status = 'running'",
                    )?
                    .execute(params![run_id, ms(*at)])?;
                }
                Write::Paused { job, paused } => {
                    jobs.entry(Cow::Borrowed(job.as_str())).or_default().paused = Some(*paused);
                }
            }
        }
        for (job, facts) in jobs {
            facts.write(tx, &job)?;
        }
        Ok(())
    }

    /// A run that started and ended within one batch: one row, as it ended.
    fn insert_whole(
        tx: &rusqlite::Transaction<'_>,
        run: &super::RunStart,
        end: &super::RunEnd,
        pid: Option<u32>,
        pid_start: Option<u64>,
    ) -> rusqlite::Result<()> {
        tx.prepare_cached(
            "INSERT INTO runs (run_id, job, scheduled_at, trigger, attempts, status,
                started, lateness_ms, pid, pid_start, exit_code, signal, http_status, error,
                finished, duration_ms, output_tail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
             ON CONFLICT (run_id) DO UPDATE SET attempts = excluded.attempts,
                status = excluded.status, pid = coalesce(excluded.pid, pid),
                pid_start = coalesce(excluded.pid_start, pid_start),
                exit_code = excluded.exit_code, signal = excluded.signal,
                http_status = excluded.http_status, error = excluded.error,
                finished = excluded.finished, duration_ms = excluded.duration_ms,
                output_tail = excluded.output_tail",
        )?
        .execute(params![
            run.run_id,
            run.job,
            ms(run.scheduled_at),
            run.trigger,
            end.attempts,
            end.outcome,
            ms(run.started),
            run.lateness_ms,
            pid,
            pid_start.map(|s| s as i64),
            end.exit_code,
            end.signal,
            end.http_status,
            end.error,
            ms(end.finished),
            end.duration_ms as i64,
            end.output_tail,
        ])?;
        Ok(())
    }

    fn finish(tx: &rusqlite::Transaction<'_>, end: &super::RunEnd) -> rusqlite::Result<()> {
        tx.prepare_cached(
            "UPDATE runs SET attempts = ?2, status = ?3, exit_code = ?4, signal = ?5,
                http_status = ?6, error = ?7, finished = ?8, duration_ms = ?9,
                output_tail = ?10
             WHERE run_id = ?1",
        )?
        .execute(params![
            end.run_id,
            end.attempts,
            end.outcome,
            end.exit_code,
            end.signal,
            end.http_status,
            end.error,
            ms(end.finished),
            end.duration_ms as i64,
            end.output_tail,
        ])?;
        Ok(())
    }
}

/// A job's facts from one batch, folded in order.
#[derive(Default)]
struct JobFacts<'a> {
    handled: Option<i64>,
    last_run_id: Option<&'a str>,
    /// A success was seen: the count restarts from `failures`.
    reset: bool,
    /// Runs that ended other than in success (since the success, if any).
    failures: i64,
    /// An outcome was seen at all.
    ended: bool,
    paused: Option<bool>,
}

impl JobFacts<'_> {
    fn outcome(&mut self, success: bool) {
        self.ended = true;
        if success {
            self.reset = true;
            self.failures = 0;
        } else {
            self.failures += 1;
        }
    }

    fn write(&self, tx: &rusqlite::Transaction<'_>, job: &str) -> rusqlite::Result<()> {
        let creates = self.handled.is_some() || self.last_run_id.is_some() || self.paused.is_some();
        if creates {
            tx.prepare_cached(
                "INSERT INTO jobs (job, last_handled, last_run_id, failures_in_row, paused)
                 VALUES (?1, ?2, ?3, ?4, coalesce(?5, 0))
                 ON CONFLICT (job) DO UPDATE SET
                    last_handled = CASE WHEN ?2 IS NULL THEN last_handled
                        ELSE max(coalesce(last_handled, ?2), ?2) END,
                    last_run_id = coalesce(?3, last_run_id),
                    failures_in_row = CASE WHEN ?6 THEN ?4 ELSE failures_in_row + ?4 END,
                    paused = coalesce(?5, paused)",
            )?
            .execute(params![
                job,
                self.handled,
                self.last_run_id,
                self.failures,
                self.paused,
                self.reset,
            ])?;
        } else if self.ended {
            // Only outcomes: as one at a time, a job without a row gets none.
            tx.prepare_cached(
                "UPDATE jobs SET failures_in_row =
                    CASE WHEN ?3 THEN ?2 ELSE failures_in_row + ?2 END
                 WHERE job = ?1",
            )?
            .execute(params![job, self.failures, self.reset])?;
        }
        Ok(())
    }
}

impl Store for SqliteStore {
    fn apply(&mut self, batch: &[Write]) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(classify)?;
        Self::apply_batch(&tx, batch).map_err(classify)?;
        tx.commit().map_err(classify)
    }

    fn last_handled(&self) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        let mut statement = self
            .conn
            .prepare("SELECT job, last_handled FROM jobs WHERE last_handled IS NOT NULL")
            .map_err(classify)?;
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, String>(0)?, at(row.get(1)?))))
            .map_err(classify)?;
        rows.collect::<rusqlite::Result<_>>().map_err(classify)
    }

    fn last_successes(&self) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT job, max(finished) FROM runs \
                 WHERE status = 'success' AND finished IS NOT NULL GROUP BY job",
            )
            .map_err(classify)?;
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, String>(0)?, at(row.get(1)?))))
            .map_err(classify)?;
        rows.collect::<rusqlite::Result<_>>().map_err(classify)
    }

    fn unfinished_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE status = 'running' ORDER BY started, run_id"
        );
        let mut statement = self.conn.prepare(&sql).map_err(classify)?;
        let rows = statement.query_map([], run_record).map_err(classify)?;
        rows.collect::<rusqlite::Result<_>>().map_err(classify)
    }

    fn paused_jobs(&self) -> Result<Vec<String>, StoreError> {
        let mut statement = self
            .conn
            .prepare("SELECT job FROM jobs WHERE paused != 0 ORDER BY job")
            .map_err(classify)?;
        let rows = statement
            .query_map([], |row| row.get(0))
            .map_err(classify)?;
        rows.collect::<rusqlite::Result<_>>().map_err(classify)
    }

    fn runs(&self, query: &HistoryQuery) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE (?1 IS NULL OR job = ?1) AND (?2 IS NULL OR run_id = ?2)
               AND (?3 IS NULL OR started >= ?3)
               AND (?4 = 0 OR status NOT IN ('success', 'running'))
             ORDER BY started DESC, rowid DESC LIMIT ?5"
        );
        let mut statement = self.conn.prepare(&sql).map_err(classify)?;
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let rows = statement
            .query_map(
                params![
                    query.job,
                    query.run_id,
                    query.since.map(ms),
                    query.failed_only,
                    limit
                ],
                run_record,
            )
            .map_err(classify)?;
        rows.collect::<rusqlite::Result<_>>().map_err(classify)
    }

    fn job_summaries(&self) -> Result<Vec<JobSummary>, StoreError> {
        let mut running: HashMap<String, u32> = HashMap::new();
        {
            let mut statement = self
                .conn
                .prepare("SELECT job, count(*) FROM runs WHERE status = 'running' GROUP BY job")
                .map_err(classify)?;
            let rows = statement
                .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))
                .map_err(classify)?;
            for row in rows {
                let (job, count) = row.map_err(classify)?;
                running.insert(job, count);
            }
        }
        let columns = RUN_COLUMNS
            .split(", ")
            .map(|c| format!("r.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT j.job, j.last_handled, j.failures_in_row, j.paused, r.run_id IS NOT NULL,
                {columns}
             FROM jobs j LEFT JOIN runs r ON r.run_id = j.last_run_id ORDER BY j.job"
        );
        let mut statement = self.conn.prepare(&sql).map_err(classify)?;
        let rows = statement
            .query_map([], |row| {
                let job: String = row.get(0)?;
                let has_run: bool = row.get(4)?;
                let last_run = if has_run {
                    // The run's columns follow the job's five.
                    Some(RunRecord {
                        job: row.get(5)?,
                        run_id: row.get(6)?,
                        scheduled_at: at(row.get(7)?),
                        trigger: row.get(8)?,
                        attempts: row.get(9)?,
                        status: row.get(10)?,
                        exit_code: row.get(11)?,
                        signal: row.get(12)?,
                        http_status: row.get(13)?,
                        error: row.get(14)?,
                        started: at(row.get(15)?),
                        finished: row.get::<_, Option<i64>>(16)?.map(at),
                        duration_ms: row.get::<_, Option<i64>>(17)?.map(|d| d.max(0) as u64),
                        lateness_ms: row.get(18)?,
                        pid: row.get(19)?,
                        pid_start: row.get::<_, Option<i64>>(20)?.map(|s| s as u64),
                        output_tail: row.get(21)?,
                    })
                } else {
                    None
                };
                Ok(JobSummary {
                    running: 0,
                    last_handled: row.get::<_, Option<i64>>(1)?.map(at),
                    failures_in_row: row.get(2)?,
                    paused: row.get(3)?,
                    last_run,
                    job,
                })
            })
            .map_err(classify)?;
        // Sized once: with 100,000 jobs, growing it by doubling copied tens of megabytes.
        let jobs: i64 = self
            .conn
            .query_row("SELECT count(*) FROM jobs", [], |row| row.get(0))
            .map_err(classify)?;
        let mut summaries = Vec::with_capacity(usize::try_from(jobs).unwrap_or(0));
        for row in rows {
            summaries.push(row.map_err(classify)?);
        }
        for summary in &mut summaries {
            summary.running = running.get(&summary.job).copied().unwrap_or(0);
        }
        Ok(summaries)
    }

    fn prune(&mut self, older_than: DateTime<Utc>, keep_per_job: usize) -> Result<u64, StoreError> {
        let keep = i64::try_from(keep_per_job).unwrap_or(i64::MAX);
        let tx = self.conn.transaction().map_err(classify)?;
        let old = tx
            .execute(
                "DELETE FROM runs WHERE started < ?1 AND status != 'running'",
                params![ms(older_than)],
            )
            .map_err(classify)?;
        let extra = tx
            .execute(
                "DELETE FROM runs WHERE status != 'running' AND rowid IN (
                    SELECT rowid FROM (
                        SELECT rowid, row_number() OVER (
                            PARTITION BY job ORDER BY started DESC, rowid DESC) AS n
                        FROM runs)
                    WHERE n > ?1)",
                params![keep],
            )
            .map_err(classify)?;
        tx.commit().map_err(classify)?;
        Ok((old + extra) as u64)
    }
}

/// Whether the file at `path` is a database this binary can open at all, for tools
/// that only read (`status` works without one).
pub fn exists(path: &Path) -> bool {
    path.is_file()
}

/// The last handled fire of one job, for tests and tools.
pub fn last_handled_of(
    store: &SqliteStore,
    job: &str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    store
        .conn
        .query_row(
            "SELECT last_handled FROM jobs WHERE job = ?1",
            params![job],
            |row| row.get::<_, Option<i64>>(0),
        )
        .optional()
        .map(|v| v.flatten().map(at))
        .map_err(classify)
}
