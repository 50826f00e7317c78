//! The run history of the replicas, behind the state store's [`Store`] trait: the same
//! writer thread, catch-up, interrupted runs, `chime status` and `chime history` as
//! with SQLite, over the cluster's schema.
//!
//! - A run is its fire's claim row in `chime_claims`: its start turns the claim
//!   (`claimed`) of this member into `running`, and a retry's start updates that row; a
//!   run without a claim (a manual trigger, `@reboot`) gets a row of its own, under a
//!   negative epoch derived from its run id, so that it never takes a fire's claim key.
//!   Either carries a lease, renewed by its replica, so that a replica's death makes
//!   it `lost`.
//! - A fire handled without a run (skipped, missed) turns its claim into `handled`, so
//!   that its lease is not renewed and it never becomes `lost`.
//! - Per-job facts (last handled fire, last run, failures in a row) are in `chime_jobs`,
//!   pauses in `chime_paused`.
//! - Pruning never deletes a claim of the last ten minutes (a replica whose clock lags
//!   could claim that fire again), nor a live one.
//!
//! The trait is synchronous and tokio-postgres is not: the store owns a current-thread
//! runtime and its own connection, used only on the thread that calls it (the state
//! writer's, or a command's), never on a tokio worker. A batch is one transaction of a
//! few statements, one per kind of write over arrays (`unnest`) for each segment of
//! consecutive writes that this gives the same result as one by one; they are
//! pipelined (sent at once, answered in order). Every call has a timeout; a failed one
//! drops the connection, and the next call connects again.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use super::{ClusterOptions, Fnv, error_text};
use crate::events::{ClusterKind, Event, Events};
use crate::state::writer::Target;
use crate::state::{HistoryQuery, JobSummary, RunRecord, Store, StoreError, Write};

/// The longest one call (a batch, a read) may take before the connection is dropped.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Claims younger than this are never pruned.
const PRUNE_GUARD: &str = "interval '10 minutes'";

type PgError = tokio_postgres::Error;

/// One statement of a batch, sent at its first poll.
type Call<'a> = Pin<Box<dyn Future<Output = Result<(), PgError>> + 'a>>;

/// `chime_claims` as a [`RunRecord`], plus the member that ran it and the replica it
/// was a re-run of (columns 17 and 18).
const RUN_COLUMNS: &str = "job, run_id, scheduled_at, trigger, coalesce(attempts, 1) AS tries, \
     status, exit_code, signal, http_status, error, started, finished, duration_ms, \
     coalesce(lateness_ms, 0) AS late, pid, pid_start, output_tail, member, lost_from";

/// Rows that are runs (a claim not started yet, or claimed again after its run was
/// lost, is not one).
const IS_RUN: &str = "run_id IS NOT NULL AND started IS NOT NULL AND status <> 'claimed'";

// The writes, one statement per kind for a whole segment of a batch (see [`Segment`]).

const HANDLED_SQL: &str = "
UPDATE chime_claims c SET status = 'handled', finished = now()
FROM unnest($1::text[], $2::timestamptz[]) AS t(j, at)
WHERE c.job = t.j AND c.scheduled_at = t.at AND c.member = $3 AND c.status = 'claimed'
    AND c.run_id IS NULL";

/// A start: a retry updates its run; a first attempt takes this member's claim of
/// the fire (`claimed`, or `handled` just before), or else gets a row of its own.
const STARTED_SQL: &str = "
WITH t AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::int4[],
        $6::timestamptz[], $7::float8[], $8::int4[], $9::int8[], $10::int8[])
        WITH ORDINALITY AS t(j, r, at, tr, a, st, l, p, ps, e, n)
),
existing AS (
    SELECT t.r FROM t
    WHERE EXISTS (SELECT 1 FROM chime_claims c WHERE c.run_id = t.r AND c.status <> 'claimed')
),
retry AS (
    UPDATE chime_claims c SET attempts = t.a, pid = coalesce(t.p, c.pid),
        pid_start = coalesce(t.ps, c.pid_start)
    FROM t WHERE c.run_id = t.r AND c.status <> 'claimed'
    RETURNING 1
),
claim AS (
    UPDATE chime_claims c SET status = 'running', run_id = t.r, attempts = t.a, started = t.st,
        lateness_ms = t.l, pid = t.p, pid_start = t.ps, host = $12, finished = NULL,
        lease_until = now() + make_interval(secs => $13)
    FROM t
    WHERE t.r NOT IN (SELECT r FROM existing) AND c.job = t.j AND c.scheduled_at = t.at
        AND c.member = $11 AND c.status IN ('claimed', 'handled') AND t.tr IN ('schedule', 'catch-up')
    RETURNING t.r
),
fresh AS (
    INSERT INTO chime_claims (job, scheduled_at, epoch, member, def_hash, trigger, status,
        run_id, started, lateness_ms, attempts, pid, pid_start, host, lease_until)
    SELECT t.j, t.at, t.e, $11, '', t.tr, 'running', t.r, t.st, t.l, t.a, t.p, t.ps, $12,
        now() + make_interval(secs => $13)
    FROM t WHERE t.r NOT IN (SELECT r FROM existing) AND t.r NOT IN (SELECT r FROM claim)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM retry) + (SELECT count(*) FROM claim) + (SELECT count(*) FROM fresh)";

/// Ends: the runs' rows (still `running`: not one another replica took as lost).
const FINISHED_SQL: &str = "
UPDATE chime_claims c SET attempts = t.a, status = t.o, exit_code = t.x, signal = t.s,
    http_status = t.h, error = t.e, finished = t.f, duration_ms = t.d, output_tail = t.tl
FROM unnest($1::text[], $2::int4[], $3::text[], $4::int4[], $5::int4[], $6::int4[],
    $7::text[], $8::timestamptz[], $9::int8[], $10::text[]) AS t(r, a, o, x, s, h, e, f, d, tl)
WHERE c.run_id = t.r AND c.status = 'running'";

/// Each job's facts from a whole batch, written last in its transaction in the jobs'
/// order, so that the row of a job that several replicas run is locked only from here
/// to the commit, and always in the same order (the replicas' writers then wait for
/// each other briefly, never in a cycle). `$1..$2`: fires handled; `$3..$5`: first
/// starts (job, run, position in the batch); `$6..$8`: ends (run, outcome, position);
/// failures in a row as if the ends came one by one: reset by a job's last success,
/// then counted. An end counts where it was written (its row has its outcome).
const FACTS_SQL: &str = "
WITH h AS (
    SELECT j, max(at) AS at FROM unnest($1::text[], $2::timestamptz[]) AS t(j, at) GROUP BY j
),
s AS (
    SELECT DISTINCT ON (j) j, r FROM unnest($3::text[], $4::text[], $5::int8[]) AS t(j, r, n)
    ORDER BY j, n DESC
),
f AS (
    SELECT c.job AS j, t.o, t.n FROM unnest($6::text[], $7::text[], $8::int8[]) AS t(r, o, n)
    JOIN chime_claims c ON c.run_id = t.r AND c.status = t.o
),
fp AS (
    SELECT j, max(n) FILTER (WHERE o = 'success') AS ok,
        count(*) FILTER (WHERE o <> 'success') AS fails
    FROM f GROUP BY j
),
fa AS (
    SELECT fp.j, fp.ok IS NOT NULL AS reset,
        (SELECT count(*) FROM f WHERE f.j = fp.j AND f.o <> 'success' AND f.n > coalesce(fp.ok, -1))
            AS after
    FROM fp
),
js AS (SELECT j FROM h UNION SELECT j FROM s UNION SELECT j FROM fa)
INSERT INTO chime_jobs AS cj (job, last_handled, last_run_id, failures_in_row)
SELECT js.j, h.at, s.r, coalesce(fa.after, 0)::int4
FROM js LEFT JOIN h ON h.j = js.j LEFT JOIN s ON s.j = js.j LEFT JOIN fa ON fa.j = js.j
ORDER BY js.j
ON CONFLICT (job) DO UPDATE SET
    last_handled = CASE WHEN EXCLUDED.last_handled IS NULL THEN cj.last_handled
        ELSE greatest(cj.last_handled, EXCLUDED.last_handled) END,
    last_run_id = coalesce(EXCLUDED.last_run_id, cj.last_run_id),
    failures_in_row = CASE
        WHEN coalesce((SELECT fa.reset FROM fa WHERE fa.j = EXCLUDED.job), false)
            THEN EXCLUDED.failures_in_row
        ELSE cj.failures_in_row + EXCLUDED.failures_in_row END";

const INTERRUPTED_SQL: &str = "
UPDATE chime_claims c SET status = 'interrupted', finished = t.at,
    duration_ms = greatest(0, floor(extract(epoch FROM (t.at - c.started)) * 1000))::bigint
FROM unnest($1::text[], $2::timestamptz[]) AS t(r, at)
WHERE c.run_id = t.r AND c.status = 'running'";

const PAUSED_SQL: &str = "
WITH t AS (SELECT * FROM unnest($1::text[], $2::bool[]) AS t(j, p)),
jobs AS (INSERT INTO chime_jobs (job) SELECT j FROM t ON CONFLICT DO NOTHING),
d AS (DELETE FROM chime_paused WHERE job IN (SELECT j FROM t WHERE NOT p))
INSERT INTO chime_paused (job) SELECT j FROM t WHERE p ON CONFLICT DO NOTHING";

/// Consecutive writes of a batch that give the same result whether applied one by one
/// or kind by kind (handled fires, starts, ends, interruptions, pauses), as columns:
/// a segment ends before a write that would touch what one of its own writes already
/// did (a run started or ended twice, a fire started twice, a job paused twice).
#[derive(Default)]
struct Segment {
    handled: (Vec<String>, Vec<DateTime<Utc>>),
    started: StartedCols,
    finished: FinishedCols,
    interrupted: (Vec<String>, Vec<DateTime<Utc>>),
    paused: (Vec<String>, Vec<bool>),
    started_runs: HashSet<String>,
    started_fires: HashSet<(String, DateTime<Utc>)>,
    ended_runs: HashSet<String>,
}

#[derive(Default)]
struct StartedCols {
    job: Vec<String>,
    run_id: Vec<String>,
    scheduled_at: Vec<DateTime<Utc>>,
    trigger: Vec<String>,
    attempt: Vec<i32>,
    started: Vec<DateTime<Utc>>,
    lateness: Vec<f64>,
    pid: Vec<Option<i32>>,
    pid_start: Vec<Option<i64>>,
    epoch: Vec<i64>,
}

#[derive(Default)]
struct FinishedCols {
    run_id: Vec<String>,
    attempts: Vec<i32>,
    outcome: Vec<String>,
    exit_code: Vec<Option<i32>>,
    signal: Vec<Option<i32>>,
    http: Vec<Option<i32>>,
    error: Vec<Option<String>>,
    finished: Vec<DateTime<Utc>>,
    duration: Vec<i64>,
    tail: Vec<String>,
}

/// A batch's per-job facts as columns for [`FACTS_SQL`], each write with its position.
#[derive(Default)]
struct Facts {
    handled: (Vec<String>, Vec<DateTime<Utc>>),
    started: (Vec<String>, Vec<String>, Vec<i64>),
    ended: (Vec<String>, Vec<String>, Vec<i64>),
}

impl Facts {
    fn of(batch: &[Write]) -> Facts {
        let mut facts = Facts::default();
        for (n, write) in batch.iter().enumerate() {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            match write {
                Write::Handled { job, at } => {
                    facts.handled.0.push(job.clone());
                    facts.handled.1.push(*at);
                }
                Write::Started(run) if run.attempt <= 1 => {
                    facts.started.0.push(run.job.clone());
                    facts.started.1.push(run.run_id.clone());
                    facts.started.2.push(n);
                }
                Write::Finished(end) => {
                    facts.ended.0.push(end.run_id.clone());
                    facts.ended.1.push(end.outcome.clone());
                    facts.ended.2.push(n);
                }
                Write::Started(_) | Write::Interrupted { .. } | Write::Paused { .. } => {}
            }
        }
        facts
    }

    fn is_empty(&self) -> bool {
        self.handled.0.is_empty() && self.started.0.is_empty() && self.ended.0.is_empty()
    }
}

impl Segment {
    /// Adds `write` if it keeps the segment equivalent to one-by-one; gives it back if not.
    fn add<'w>(&mut self, write: &'w Write) -> Result<(), &'w Write> {
        match write {
            Write::Handled { job, at } => {
                self.handled.0.push(job.clone());
                self.handled.1.push(*at);
            }
            Write::Started(run) => {
                let fire = (run.job.clone(), run.scheduled_at);
                if self.started_runs.contains(&run.run_id)
                    || self.ended_runs.contains(&run.run_id)
                    || self.started_fires.contains(&fire)
                {
                    return Err(write);
                }
                self.started_runs.insert(run.run_id.clone());
                self.started_fires.insert(fire);
                let cols = &mut self.started;
                cols.job.push(run.job.clone());
                cols.run_id.push(run.run_id.clone());
                cols.scheduled_at.push(run.scheduled_at);
                cols.trigger.push(run.trigger.clone());
                cols.attempt
                    .push(i32::try_from(run.attempt).unwrap_or(i32::MAX));
                cols.started.push(run.started);
                cols.lateness.push(run.lateness_ms);
                cols.pid.push(run.pid.and_then(|p| i32::try_from(p).ok()));
                cols.pid_start.push(run.pid_start.map(|s| s as i64));
                cols.epoch.push(own_epoch(&run.run_id));
            }
            Write::Finished(end) => {
                if !self.ended_runs.insert(end.run_id.clone()) {
                    return Err(write);
                }
                let cols = &mut self.finished;
                cols.run_id.push(end.run_id.clone());
                cols.attempts
                    .push(i32::try_from(end.attempts).unwrap_or(i32::MAX));
                cols.outcome.push(end.outcome.clone());
                cols.exit_code.push(end.exit_code);
                cols.signal.push(end.signal);
                cols.http.push(end.http_status.map(i32::from));
                cols.error.push(end.error.clone());
                cols.finished.push(end.finished);
                cols.duration
                    .push(i64::try_from(end.duration_ms).unwrap_or(i64::MAX));
                cols.tail.push(end.output_tail.clone());
            }
            Write::Interrupted { run_id, at } => {
                if !self.ended_runs.insert(run_id.clone()) {
                    return Err(write);
                }
                self.interrupted.0.push(run_id.clone());
                self.interrupted.1.push(*at);
            }
            Write::Paused { job, paused } => {
                if self.paused.0.contains(job) {
                    return Err(write);
                }
                self.paused.0.push(job.clone());
                self.paused.1.push(*paused);
            }
        }
        Ok(())
    }

    /// The batch, cut into segments.
    fn cut(batch: &[Write]) -> Vec<Segment> {
        let mut segments = vec![Segment::default()];
        for write in batch {
            let last = segments.len() - 1;
            if segments[last].add(write).is_err() {
                let mut fresh = Segment::default();
                // A write always fits an empty segment.
                let _ = fresh.add(write);
                segments.push(fresh);
            }
        }
        segments
    }
}

/// The connection and its prepared writes.
struct Conn {
    client: Client,
    started: Statement,
    finished: Statement,
    handled: Statement,
    facts: Statement,
    interrupted: Statement,
    paused: Statement,
}

/// The cluster's history as a [`Store`].
pub struct PgStore {
    runtime: tokio::runtime::Runtime,
    options: ClusterOptions,
    /// The member whose runs this store writes and takes over (`None`: a reader of
    /// every replica's runs, as `chime status`).
    member: Option<String>,
    host: String,
    conn: RefCell<Option<Conn>>,
    /// Transactions PostgreSQL rolled back as deadlock victims (and tried again).
    deadlocks: std::cell::Cell<u64>,
}

impl PgStore {
    /// How many of this store's transactions were rolled back as deadlock victims (each
    /// tried again): replicas' writers must never deadlock each other.
    pub fn deadlocks(&self) -> u64 {
        self.deadlocks.get()
    }

    /// Connects (creating or migrating the schema). `member`: the replica this store
    /// writes for, whose unfinished runs [`Store::unfinished_runs`] returns; `None`
    /// reads every replica's.
    pub fn open(options: &ClusterOptions, member: Option<&str>) -> Result<PgStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io {
                what: "cannot start the cluster store's runtime".into(),
                source,
            })?;
        let store = PgStore {
            runtime,
            options: options.clone(),
            member: member.map(str::to_string),
            host: super::hostname(),
            deadlocks: std::cell::Cell::new(0),
            conn: RefCell::new(None),
        };
        let conn = store.connect()?;
        *store.conn.borrow_mut() = Some(conn);
        Ok(store)
    }

    fn connect(&self) -> Result<Conn, StoreError> {
        let options = &self.options;
        let what = || format!("connecting to {}", options.redacted());
        self.runtime.block_on(async {
            let (client, _driver) =
                tokio::time::timeout(CALL_TIMEOUT, super::connect(options, None))
                    .await
                    .map_err(|_| StoreError::Cluster {
                        what: what(),
                        detail: format!("no answer in {}s", CALL_TIMEOUT.as_secs()),
                    })?
                    .map_err(|(detail, _fix)| StoreError::Cluster {
                        what: "opening the cluster's history".into(),
                        detail,
                    })?;
            let prepare = async {
                Ok::<_, PgError>(Conn {
                    started: client.prepare(STARTED_SQL).await?,
                    finished: client.prepare(FINISHED_SQL).await?,
                    handled: client.prepare(HANDLED_SQL).await?,
                    facts: client.prepare(FACTS_SQL).await?,
                    interrupted: client.prepare(INTERRUPTED_SQL).await?,
                    paused: client.prepare(PAUSED_SQL).await?,
                    client,
                })
            };
            prepare.await.map_err(|err| StoreError::Cluster {
                what: what(),
                detail: error_text(&err),
            })
        })
    }

    /// Runs `f` on the connection (made first if there is none); a failure or a
    /// timeout drops it. A connection kept from before that the server closed meanwhile
    /// (a restart: nothing drives it between calls, so it is found out only here) is
    /// made again and `f` tried once more; a transaction rolled back as a deadlock's
    /// victim is tried again too.
    fn with<T>(
        &self,
        what: &str,
        f: impl AsyncFn(&Conn) -> Result<T, PgError>,
    ) -> Result<T, StoreError> {
        let taken = self.conn.borrow_mut().take();
        let mut kept = taken.is_some();
        let mut deadlocks = 0;
        let mut conn = match taken {
            Some(conn) if !conn.client.is_closed() => conn,
            _ => {
                kept = false;
                self.connect()?
            }
        };
        loop {
            let result = self
                .runtime
                .block_on(async { tokio::time::timeout(CALL_TIMEOUT, f(&conn)).await });
            return match result {
                Ok(Ok(value)) => {
                    *self.conn.borrow_mut() = Some(conn);
                    Ok(value)
                }
                Ok(Err(err))
                    if kept
                        && (err.is_closed() || err.code() == Some(&SqlState::ADMIN_SHUTDOWN)) =>
                {
                    kept = false;
                    conn = self.connect()?;
                    continue;
                }
                // Should two transactions ever deadlock (the batches lock the jobs' rows
                // in one order, so they should not), the victim goes again, at once.
                Ok(Err(err))
                    if deadlocks < 3 && err.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) =>
                {
                    deadlocks += 1;
                    self.deadlocks.set(self.deadlocks.get() + 1);
                    continue;
                }
                Ok(Err(err)) => Err(StoreError::Cluster {
                    what: what.into(),
                    detail: error_text(&err),
                }),
                Err(_) => Err(StoreError::Cluster {
                    what: what.into(),
                    detail: format!("no answer in {}s", CALL_TIMEOUT.as_secs()),
                }),
            };
        }
    }

    fn query(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.with(what, async |conn| conn.client.query(sql, params).await)
    }

    /// This member's claims left `claimed` by a previous life (killed before their
    /// runs started) become `interrupted`: under the same member name their leases
    /// would otherwise be renewed for ever, and an `overlap: skip` job never run again.
    pub fn release_claims(&mut self) -> Result<u64, StoreError> {
        let Some(member) = self.member.clone() else {
            return Ok(0);
        };
        self.with(
            "releasing this member's claims of a previous start",
            async |conn| {
                conn.client
                    .execute(
                        "UPDATE chime_claims SET status = 'interrupted', finished = now()
                     WHERE member = $1 AND status = 'claimed'",
                        &[&member],
                    )
                    .await
            },
        )
    }
}

/// A run without a claim of its own: a negative epoch from its run id, so that it
/// never takes a fire's key and two such runs of one instant do not collide.
fn own_epoch(run_id: &str) -> i64 {
    let mut h = Fnv::new();
    h.write(run_id.as_bytes());
    -1 - (h.finish() >> 2) as i64
}

fn run_record(row: &Row, at: usize) -> RunRecord {
    let trigger: String = row.get(at + 3);
    let lost_from: Option<String> = row.get(at + 18);
    let status: String = row.get(at + 5);
    let mut error: Option<String> = row.get(at + 9);
    // What the claims add to a run's story, where SQLite has none.
    let note = match (&lost_from, status.as_str()) {
        (Some(from), _) => Some(format!("re-run of a run lost on {from}")),
        (None, "lost") => Some(format!(
            "lost: replica {} stopped renewing its lease",
            row.get::<_, String>(at + 17)
        )),
        _ => None,
    };
    if let Some(note) = note {
        error = Some(match error {
            Some(error) => format!("{error}; {note}"),
            None => note,
        });
    }
    RunRecord {
        job: row.get(at),
        run_id: row.get(at + 1),
        scheduled_at: row.get(at + 2),
        // The claim's `catch_up` is the run's `catch-up`.
        trigger: if trigger == "catch_up" {
            "catch-up".into()
        } else {
            trigger
        },
        attempts: row.get::<_, i32>(at + 4).max(0) as u32,
        status,
        exit_code: row.get(at + 6),
        signal: row.get(at + 7),
        http_status: row
            .get::<_, Option<i32>>(at + 8)
            .and_then(|s| u16::try_from(s).ok()),
        error,
        started: row.get(at + 10),
        finished: row.get(at + 11),
        duration_ms: row.get::<_, Option<i64>>(at + 12).map(|d| d.max(0) as u64),
        lateness_ms: row.get(at + 13),
        pid: row
            .get::<_, Option<i32>>(at + 14)
            .and_then(|p| u32::try_from(p).ok()),
        pid_start: row.get::<_, Option<i64>>(at + 15).map(|s| s as u64),
        output_tail: row.get(at + 16),
    }
}

/// Polls statements already sent on one connection until all have answered, in
/// order: each is sent at its first poll, so all go out at once; answers come in the
/// order sent, so later ones are only looked at once the earlier have answered.
async fn pipelined<'a>(calls: Vec<Call<'a>>) -> Result<(), PgError> {
    let mut calls: Vec<Option<_>> = calls.into_iter().map(Some).collect();
    let mut next = 0;
    let mut sent = false;
    std::future::poll_fn(move |cx| {
        let mut index = next;
        while index < calls.len() {
            if let Some(call) = calls[index].as_mut() {
                match call.as_mut().poll(cx) {
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                    Poll::Ready(Ok(())) => calls[index] = None,
                    // Sent, and registered for its answer: the ones after it come later.
                    Poll::Pending if sent => return Poll::Pending,
                    Poll::Pending => {}
                }
            }
            if index == next && calls[index].is_none() {
                next += 1;
            }
            index += 1;
        }
        sent = true;
        if next < calls.len() {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    })
    .await
}

impl Store for PgStore {
    fn apply(&mut self, batch: &[Write]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let member = self.member.clone().unwrap_or_default();
        let host = self.host.clone();
        let lease = self.options.lease.as_secs_f64();
        let segments = Segment::cut(batch);
        let facts = Facts::of(batch);
        self.with("writing the run history", async |conn| {
            let (member, host, lease) = (&member, &host, &lease);
            let client = &conn.client;
            let mut calls: Vec<Call<'_>> = Vec::with_capacity(segments.len() * 5 + 2);
            calls.push(Box::pin(client.batch_execute("BEGIN")));
            for seg in &segments {
                if !seg.handled.0.is_empty() {
                    let (jobs, ats) = &seg.handled;
                    calls.push(Box::pin(async move {
                        let params: [&(dyn ToSql + Sync); 3] = [jobs, ats, member];
                        client.execute(&conn.handled, &params).await.map(drop)
                    }));
                }
                if !seg.started.job.is_empty() {
                    let c = &seg.started;
                    calls.push(Box::pin(async move {
                        let params: [&(dyn ToSql + Sync); 13] = [
                            &c.job,
                            &c.run_id,
                            &c.scheduled_at,
                            &c.trigger,
                            &c.attempt,
                            &c.started,
                            &c.lateness,
                            &c.pid,
                            &c.pid_start,
                            &c.epoch,
                            member,
                            host,
                            lease,
                        ];
                        client.execute(&conn.started, &params).await.map(drop)
                    }));
                }
                if !seg.finished.run_id.is_empty() {
                    let c = &seg.finished;
                    calls.push(Box::pin(async move {
                        let params: [&(dyn ToSql + Sync); 10] = [
                            &c.run_id,
                            &c.attempts,
                            &c.outcome,
                            &c.exit_code,
                            &c.signal,
                            &c.http,
                            &c.error,
                            &c.finished,
                            &c.duration,
                            &c.tail,
                        ];
                        client.execute(&conn.finished, &params).await.map(drop)
                    }));
                }
                if !seg.interrupted.0.is_empty() {
                    let (ids, ats) = &seg.interrupted;
                    calls.push(Box::pin(async move {
                        let params: [&(dyn ToSql + Sync); 2] = [ids, ats];
                        client.execute(&conn.interrupted, &params).await.map(drop)
                    }));
                }
                if !seg.paused.0.is_empty() {
                    let (jobs, paused) = &seg.paused;
                    calls.push(Box::pin(async move {
                        let params: [&(dyn ToSql + Sync); 2] = [jobs, paused];
                        client.execute(&conn.paused, &params).await.map(drop)
                    }));
                }
            }
            if !facts.is_empty() {
                let f = &facts;
                calls.push(Box::pin(async move {
                    let params: [&(dyn ToSql + Sync); 8] = [
                        &f.handled.0,
                        &f.handled.1,
                        &f.started.0,
                        &f.started.1,
                        &f.started.2,
                        &f.ended.0,
                        &f.ended.1,
                        &f.ended.2,
                    ];
                    client.execute(&conn.facts, &params).await.map(drop)
                }));
            }
            calls.push(Box::pin(client.batch_execute("COMMIT")));
            pipelined(calls).await
        })
    }

    fn last_handled(&self) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        // A fire claimed by any replica was handled, even where its replica died
        // before it wrote so.
        let rows = self.query(
            "reading the last handled fires",
            "SELECT job, max(at) FROM (
                SELECT job, last_handled AS at FROM chime_jobs WHERE last_handled IS NOT NULL
                UNION ALL
                SELECT job, max(scheduled_at) FROM chime_claims WHERE epoch >= 0 GROUP BY job
             ) h GROUP BY job",
            &[],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn last_successes(&self) -> Result<HashMap<String, DateTime<Utc>>, StoreError> {
        let rows = self.query(
            "reading the jobs' last successes",
            "SELECT job, max(finished) FROM chime_claims
             WHERE status = 'success' AND finished IS NOT NULL GROUP BY job",
            &[],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn unfinished_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS}, host FROM chime_claims
             WHERE status = 'running' AND {IS_RUN} AND ($1::text IS NULL OR member = $1)
             ORDER BY started, run_id"
        );
        let rows = self.query("reading unfinished runs", &sql, &[&self.member])?;
        Ok(rows
            .iter()
            .map(|row| {
                let mut run = run_record(row, 0);
                // A member's runs of a previous life on another host: their pids mean
                // nothing here, so no process of this host is taken for them.
                let host: Option<String> = row.get(19);
                if self.member.is_some() && host.as_deref() != Some(self.host.as_str()) {
                    run.pid = None;
                    run.pid_start = None;
                }
                run
            })
            .collect())
    }

    fn paused_jobs(&self) -> Result<Vec<String>, StoreError> {
        let rows = self.query(
            "reading the paused jobs",
            "SELECT job FROM chime_paused ORDER BY job COLLATE \"C\"",
            &[],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn runs(&self, query: &HistoryQuery) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM chime_claims
             WHERE {IS_RUN} AND ($1::text IS NULL OR job = $1) AND ($2::text IS NULL OR run_id = $2)
               AND ($3::timestamptz IS NULL OR started >= $3)
               AND (NOT $4 OR status NOT IN ('success', 'running'))
             ORDER BY started DESC, run_id DESC LIMIT $5"
        );
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let rows = self.query(
            "reading the run history",
            &sql,
            &[
                &query.job,
                &query.run_id,
                &query.since,
                &query.failed_only,
                &limit,
            ],
        )?;
        Ok(rows.iter().map(|r| run_record(r, 0)).collect())
    }

    fn job_summaries(&self) -> Result<Vec<JobSummary>, StoreError> {
        let sql = format!(
            "SELECT j.job, j.last_handled, j.failures_in_row,
                EXISTS (SELECT 1 FROM chime_paused p WHERE p.job = j.job),
                (SELECT count(*) FROM chime_claims c
                 WHERE c.job = j.job AND c.status = 'running' AND c.run_id IS NOT NULL)::int,
                r.*
             FROM chime_jobs j LEFT JOIN LATERAL (
                SELECT {RUN_COLUMNS} FROM chime_claims c
                WHERE c.run_id = j.last_run_id AND {IS_RUN} LIMIT 1
             ) r ON true
             ORDER BY j.job COLLATE \"C\""
        );
        let rows = self.query("reading the jobs' summaries", &sql, &[])?;
        Ok(rows
            .iter()
            .map(|row| {
                let has_run = row.get::<_, Option<String>>(6).is_some();
                JobSummary {
                    job: row.get(0),
                    last_handled: row.get(1),
                    failures_in_row: row.get::<_, i32>(2).max(0) as u32,
                    paused: row.get(3),
                    running: row.get::<_, i32>(4).max(0) as u32,
                    last_run: has_run.then(|| run_record(row, 5)),
                }
            })
            .collect())
    }

    fn prune(&mut self, older_than: DateTime<Utc>, keep_per_job: usize) -> Result<u64, StoreError> {
        let keep = i64::try_from(keep_per_job).unwrap_or(i64::MAX);
        let old = format!(
            "DELETE FROM chime_claims WHERE status NOT IN ('claimed', 'running')
             AND coalesce(started, claimed_at) < $1
             AND (epoch < 0 OR scheduled_at < now() - {PRUNE_GUARD})"
        );
        let extra = format!(
            "DELETE FROM chime_claims c USING (
                SELECT job, scheduled_at, epoch, row_number() OVER (
                    PARTITION BY job ORDER BY started DESC, run_id DESC) AS n
                FROM chime_claims WHERE {IS_RUN}) r
             WHERE c.job = r.job AND c.scheduled_at = r.scheduled_at AND c.epoch = r.epoch
               AND r.n > $1 AND c.status NOT IN ('claimed', 'running')
               AND (c.epoch < 0 OR c.scheduled_at < now() - {PRUNE_GUARD})"
        );
        self.with("pruning the run history", async |conn| {
            let old = conn.client.execute(&old, &[&older_than]).await?;
            let extra = conn.client.execute(&extra, &[&keep]).await?;
            Ok(old + extra)
        })
    }

    fn run_members(&self, run_ids: &[String]) -> Result<HashMap<String, String>, StoreError> {
        if run_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = self.query(
            "reading the runs' members",
            "SELECT run_id, member FROM chime_claims WHERE run_id = ANY($1)",
            &[&run_ids],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

/// The writer's target with `--cluster`: the cluster's database, whose failures are
/// `cluster.failed`.
pub struct PgTarget {
    pub options: ClusterOptions,
}

impl Target for PgTarget {
    fn describe(&self) -> String {
        self.options.redacted()
    }

    fn open(&mut self, _events: &Events) -> Result<Box<dyn Store>, StoreError> {
        Ok(Box::new(PgStore::open(
            &self.options,
            Some(&self.options.member),
        )?))
    }

    fn report(&self, events: &Events, what: String, error: String, fix: String, dropped: u64) {
        let _ = dropped;
        events.emit(Event::Cluster {
            kind: ClusterKind::Failed,
            member: self.options.member.clone(),
            detail: format!("{what}: {error}"),
            fix: Some(fix),
        });
    }
}
