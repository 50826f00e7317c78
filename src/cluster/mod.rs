//! Replicas on PostgreSQL (DESIGN.md §13): every replica loads the same schedules and
//! runs the same timers; a fire runs only on the replica whose claim of it, keyed by
//! `(job, scheduled_at, epoch)`, was inserted. No consensus of our own: the database's
//! primary key decides.
//!
//! - **Claims.** Fires of one instant are claimed together, in one statement. Each
//!   fire has a preferred replica (rendezvous hashing of job and instant over the live
//!   members); it claims at once, the others after `fallback` (one more statement each).
//!   The window is the database's clock: a claim of an instant more than
//!   [`MAX_SKEW`] away from the database's `now()` is refused, and a replica that fires
//!   early (its clock ahead) waits until the database's clock reaches the instant.
//! - **Leases.** Claimed and running rows carry `lease_until`, renewed by their replica
//!   every quarter lease. A replica that has not renewed for half a lease terminates its
//!   runs (`cluster.fenced`) before anyone may take them over. A row whose lease ran out
//!   becomes `lost` (`run.lost`), on whichever replica sees it first; a job with
//!   `on_owner_loss: rerun` is run again there, once.
//! - **Epoch.** A backward step of the database's clock of more than 3 h bumps the
//!   epoch, so the repeated instants can be claimed again.
//! - **Drift.** Each claim stores a hash of the job's definition (with its resolved
//!   zone); a replica whose definition differs logs `cluster.drift`, as does one whose
//!   whole set of jobs differs from another member's.
//! - **Operator controls.** Pauses live in `chime_paused`: the claim statement skips
//!   paused jobs (so a pause holds from its commit on every replica), and each replica's
//!   own paused set follows through LISTEN/NOTIFY on [`CONTROL_CHANNEL`], read afresh at
//!   every new connection. A kill of another replica's run is a request on the run's
//!   row plus a notification to its owner, which kills it as a local kill does.
//!
//! Two connections, not a pool: one here for claims and leases, and the run history's
//! own, on the state writer's thread ([`store::PgStore`], behind the same `Store` trait
//! as SQLite); tokio-postgres pipelines the statements of concurrent tasks on each, and
//! every statement here is short.

pub mod schema;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;

use crate::clock::{self, Clock, Wake};
use crate::dispatch::{Dispatcher, Fire, Gate};
use crate::events::{ClusterKind, Event, Events, Trigger};
use crate::exec::Executor;
use crate::job::{Job, Overlap, OwnerLoss};

/// How far from the database's clock a replica's may be: claims further off are
/// refused (and `cluster.clock_off` says so); the other replicas run those fires.
pub const MAX_SKEW: Duration = Duration::from_secs(60);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// `--cluster` and its companions.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The connection URL or key=value string, as given (its password, if any, is
    /// never logged: [`ClusterOptions::redacted`]).
    pub url: String,
    /// From `--cluster-password-file` or the systemd credential.
    pub password: Option<String>,
    /// This replica's name among the members (default `host:pid`).
    pub member: String,
    pub lease: Duration,
    /// How long replicas other than a fire's preferred one wait before claiming it.
    pub fallback: Duration,
    /// How long before its instant a fire is claimed by its preferred replica
    /// (at most [`CLAIM_AHEAD_MAX`]).
    pub claim_ahead: Duration,
}

impl ClusterOptions {
    /// The URL with any password left out, for the log.
    pub fn redacted(&self) -> String {
        redact(&self.url)
    }
}

fn redact(url: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        && let Some((userinfo, host)) = rest.split_once('@')
    {
        let user = userinfo.split(':').next().unwrap_or("");
        return format!("postgres://{user}@{host}");
    }
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why a connection failed, and how to fix it.
fn explain(err: &tokio_postgres::Error) -> (String, String) {
    let text = error_text(err);
    let fix = match err.code().map(|c| c.code()) {
        Some("28P01") | Some("28000") => {
            "check the user and the password (--cluster-password-file or the systemd credential chime-cluster-password); chime retries"
        }
        Some("3D000") => "create the database named in --cluster; chime retries",
        _ if text.contains("onnect") || text.contains("No such file") => {
            "start PostgreSQL or check the host and port in --cluster; chime retries, and runs no claimed fire meanwhile"
        }
        _ => "chime retries; fires are not run until a claim succeeds",
    };
    (text, fix.to_string())
}

/// The connection's settings from `--cluster` and the password; an error says what is
/// wrong and how to fix it.
pub(crate) fn config(options: &ClusterOptions) -> Result<tokio_postgres::Config, (String, String)> {
    let mut config: tokio_postgres::Config = options.url.parse().map_err(|err| {
        (
            format!(
                "--cluster {} is not a PostgreSQL connection string: {err}",
                options.redacted()
            ),
            "write it as postgres://USER@HOST:PORT/DB (the password in --cluster-password-file)"
                .to_string(),
        )
    })?;
    if let Some(password) = &options.password {
        config.password(password.as_bytes());
    }
    config.application_name("chime");
    config.connect_timeout(Duration::from_secs(5));
    Ok(config)
}

/// Connects and brings the schema up to date: the claims' connection and the history's.
/// The error says what failed and how to fix it.
pub(crate) async fn connect(
    options: &ClusterOptions,
    notices: Option<&mpsc::UnboundedSender<Notice>>,
) -> Result<
    (
        Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ),
    (String, String),
> {
    let config = config(options)?;
    let what = format!("connecting to {}", options.redacted());
    let (mut client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|err| {
        let (text, fix) = explain(&err);
        (format!("{what}: {text}"), fix)
    })?;
    // The claims' connection listens on CONTROL_CHANNEL: it is driven here, its
    // notifications passed to the control loop. Others are plainly driven.
    let driver = match notices {
        Some(notices) => {
            let notices = notices.clone();
            tokio::spawn(async move {
                let mut connection = connection;
                loop {
                    match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                        Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                            let _ = notices.send(Notice::Payload(n.payload().to_string()));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(err)) => return Err(err),
                        None => return Ok(()),
                    }
                }
            })
        }
        None => tokio::spawn(connection),
    };
    // The claim statement's cost estimates (young tables, no statistics) would
    // have it JIT-compiled every time: 0.6 s of compiling for a 1 ms statement.
    let migrated = match client.batch_execute("SET jit = off").await {
        Ok(()) => schema::migrate(&mut client).await,
        Err(err) => Err(schema::SchemaError::Db(err)),
    };
    let migrated = match migrated {
        Ok(_) if notices.is_some() => client
            .batch_execute(&format!("LISTEN {CONTROL_CHANNEL}"))
            .await
            .map_err(schema::SchemaError::Db),
        Ok(_) => Ok(()),
        Err(err) => Err(err),
    };
    match migrated {
        Ok(()) => Ok((client, driver)),
        Err(err) => {
            driver.abort();
            Err(match err {
                schema::SchemaError::TooNew { found } => (
                    format!(
                        "{what}: the database has chime schema version {found}, newer than this chime understands ({})",
                        schema::SCHEMA_VERSION
                    ),
                    "run the newer chime on every replica (a downgrade is not supported); chime retries".into(),
                ),
                schema::SchemaError::Db(err) => {
                    let (text, fix) = explain(&err);
                    (format!("{what} (migrating the schema): {text}"), fix)
                }
            })
        }
    }
}

/// The error's text with its causes (the server's code and message, when it sent one).
pub fn error_text(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

/// A replica's link to the cluster: its connection (re-made when lost) and what it
/// reports. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("member", &self.member())
            .field("url", &self.inner.options.redacted())
            .finish()
    }
}

struct Inner {
    options: ClusterOptions,
    events: Events,
    client: watch::Receiver<Option<Arc<Client>>>,
    /// Each job's definition hash, by name (refreshed as fires come).
    hashes: Mutex<HashMap<String, (usize, String)>>,
    /// The live members, sorted (refreshed by the heartbeat).
    members: Mutex<Vec<String>>,
    /// Fires not run because no claim could be made, since the last report.
    unclaimed: std::sync::atomic::AtomicU64,
    /// This host's clock minus the database's, in ms, as the last claim saw it.
    offset_ms: std::sync::atomic::AtomicI64,
    /// Notifications on [`CONTROL_CHANNEL`] (and a resync at each new connection), for
    /// the control loop.
    notices: mpsc::UnboundedSender<Notice>,
    notices_rx: Mutex<Option<mpsc::UnboundedReceiver<Notice>>>,
    /// Fires claimed ahead of their instant, held until it comes.
    pending: Mutex<Pending>,
}

/// The fires held until their instant, by claim statement; at shutdown, what is let go.
#[derive(Default)]
struct Pending {
    /// By token: the instant, its fires, and what their claim decided.
    held: HashMap<u64, (DateTime<Utc>, Vec<Fire>, Claimed)>,
    next: u64,
    /// Set at shutdown ([`Gate::stop`]): nothing more is held, nothing held runs.
    stopped: bool,
    /// Fires this member claimed but will not run (their instant had not come when the
    /// service stopped): their claims are deleted ([`Cluster::release`]), so that
    /// another replica's fallback claim takes them.
    released: Vec<(String, DateTime<Utc>)>,
}

impl Pending {
    fn release(&mut self, at: DateTime<Utc>, claimed: &Claimed) {
        self.released
            .extend(claimed.won.iter().map(|job| (job.clone(), at)));
    }
}

/// The `LISTEN`/`NOTIFY` channel of operator controls across replicas: `pauses` (the
/// paused jobs changed: read them again) and `kill MEMBER` (a kill asked of MEMBER's
/// runs: the rows say which).
pub const CONTROL_CHANNEL: &str = "chime_control";

/// What the control loop hears.
#[derive(Debug)]
pub(crate) enum Notice {
    /// A new connection (at start or after a loss): anything may have been missed.
    Resync,
    Payload(String),
}

/// A run in flight on another replica, from its claim's row.
#[derive(Debug, Clone)]
pub struct RemoteRun {
    pub job: String,
    pub run_id: String,
    pub member: String,
    pub trigger: String,
    pub scheduled_at: DateTime<Utc>,
    pub started: Option<DateTime<Utc>>,
    pub pid: Option<i32>,
    /// How long it has run, by the database's clock.
    pub elapsed_ms: u64,
}

impl RemoteRun {
    /// From the columns job, run_id, member, trigger, scheduled_at, started, pid and
    /// elapsed ms, in that order.
    fn from_row(r: &tokio_postgres::Row) -> RemoteRun {
        RemoteRun {
            job: r.get(0),
            run_id: r.get::<_, Option<String>>(1).unwrap_or_default(),
            member: r.get(2),
            trigger: r.get(3),
            scheduled_at: r.get(4),
            started: r.get(5),
            pid: r.get(6),
            elapsed_ms: u64::try_from(r.get::<_, i64>(7)).unwrap_or(0),
        }
    }
}

/// How far a kill asked of another replica got.
#[derive(Debug, Clone)]
pub struct KillProgress {
    pub run_id: String,
    /// The owner took the request (and killed the run's process group).
    pub delivered: bool,
    /// The run's status in the history (`running` until it ended).
    pub status: String,
}

/// The longest the claim loop waits for the rest of a wake-up's fires.
const CLAIM_SETTLE_MAX: Duration = Duration::from_millis(20);

/// The longest `--cluster-claim-ahead`. A fire is claimed (by its preferred replica)
/// that long before its instant, so that the claim's round trip is over when the
/// instant comes and the run starts on time, as without replicas. The default, 250 ms,
/// is twice the longest claim statement seen on a loaded 2-core VM with a local
/// database (333 fires: a median 23 ms, at most 112 ms).
pub const CLAIM_AHEAD_MAX: Duration = Duration::from_secs(10);

/// How long an operator's request waits for the database.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

impl Cluster {
    /// Starts connecting (in the background, retrying with backoff) and returns at once.
    /// Must be called inside the runtime.
    pub fn start(options: ClusterOptions, events: Events) -> Cluster {
        let (tx, rx) = watch::channel(None);
        let (notices, notices_rx) = mpsc::unbounded_channel();
        let cluster = Cluster {
            inner: Arc::new(Inner {
                members: Mutex::new(vec![options.member.clone()]),
                options,
                events,
                client: rx,
                hashes: Mutex::new(HashMap::new()),
                unclaimed: Default::default(),
                offset_ms: Default::default(),
                notices,
                notices_rx: Mutex::new(Some(notices_rx)),
                pending: Mutex::new(Pending::default()),
            }),
        };
        tokio::spawn(cluster.clone().supervise(tx));
        cluster
    }

    pub fn member(&self) -> &str {
        &self.inner.options.member
    }

    fn emit(&self, kind: ClusterKind, detail: String, fix: Option<String>) {
        self.inner.events.emit(Event::Cluster {
            kind,
            member: self.inner.options.member.clone(),
            detail,
            fix,
        });
    }

    fn client(&self) -> Option<Arc<Client>> {
        self.inner.client.borrow().clone()
    }

    /// Connects, migrates, and reconnects when the connection ends; says why each
    /// attempt failed, backing off from 1 s to 30 s. Only the `main` connection (claims,
    /// leases) speaks; the history's reports its failures where it writes.
    async fn supervise(self, tx: watch::Sender<Option<Arc<Client>>>) {
        let mut backoff = BACKOFF_FIRST;
        let mut was_connected = false;
        loop {
            match connect(&self.inner.options, Some(&self.inner.notices)).await {
                Ok((client, connection)) => {
                    backoff = BACKOFF_FIRST;
                    self.emit(
                        if was_connected {
                            ClusterKind::Recovered
                        } else {
                            ClusterKind::Joined
                        },
                        format!(
                            "connected to {} as member {}",
                            self.inner.options.redacted(),
                            self.member()
                        ),
                        None,
                    );
                    was_connected = true;
                    tx.send_replace(Some(Arc::new(client)));
                    let _ = self.inner.notices.send(Notice::Resync);
                    let ended = connection.await;
                    tx.send_replace(None);
                    let error = match ended {
                        Ok(Ok(())) => "the database closed the connection".to_string(),
                        Ok(Err(err)) => error_text(&err),
                        Err(err) => err.to_string(),
                    };
                    self.emit(
                        ClusterKind::Failed,
                        format!("lost the connection to the cluster database: {error}"),
                        Some("chime reconnects; runs are fenced if the lease cannot be renewed, and no fire runs until a claim succeeds".into()),
                    );
                }
                Err((detail, fix)) => {
                    let unclaimed = self
                        .inner
                        .unclaimed
                        .swap(0, std::sync::atomic::Ordering::Relaxed);
                    self.emit(
                        ClusterKind::Failed,
                        format!(
                            "{detail}; {unclaimed} fire(s) not run meanwhile; next try in {}s",
                            backoff.as_secs()
                        ),
                        Some(fix),
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Claims this dispatcher's scheduled fires from now on, and starts the heartbeat,
    /// the lease renewal (with fencing) and the detection of lost runs. The run history
    /// goes through the state writer ([`store::PgStore`]).
    pub fn attach<E: Executor, C: Clock>(&self, dispatcher: &Dispatcher<E, C>, jobs: &[Job]) {
        {
            let mut hashes = self.inner.hashes.lock().unwrap_or_else(|p| p.into_inner());
            for job in jobs {
                hashes.insert(job.name.clone(), (0, definition_hash(job)));
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let known: Known = Arc::new(Mutex::new(HashMap::new()));
        dispatcher.claim_at(Arc::new(ClaimGate {
            tx,
            cluster: self.clone(),
        }));
        let runtime = dispatcher.runtime().clone();
        runtime.spawn(
            self.clone()
                .claim_loop(rx, dispatcher.clone(), Arc::clone(&known)),
        );
        runtime.spawn(self.clone().lease_loop(dispatcher.clone(), known));
        let notices = self
            .inner
            .notices_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(notices) = notices {
            runtime.spawn(self.clone().control_loop(notices, dispatcher.clone()));
        }
    }

    /// Operator controls from other replicas: pauses re-read when one changed (and at
    /// each new connection, when notifications may have been missed); kills asked of
    /// this member's runs carried out as a local kill.
    async fn control_loop<E: Executor, C: Clock>(
        self,
        mut rx: mpsc::UnboundedReceiver<Notice>,
        dispatcher: Dispatcher<E, C>,
    ) {
        let kill_mine = format!("kill {}", self.member());
        while let Some(first) = rx.recv().await {
            let (mut pauses, mut kills) = (false, false);
            let mut notice = Some(first);
            while let Some(n) = notice {
                match n {
                    Notice::Resync => (pauses, kills) = (true, true),
                    Notice::Payload(p) if p == "pauses" => pauses = true,
                    Notice::Payload(p) if p == kill_mine => kills = true,
                    Notice::Payload(_) => {}
                }
                notice = rx.try_recv().ok();
            }
            if pauses {
                self.sync_pauses(&dispatcher).await;
            }
            if kills {
                self.take_kills(&dispatcher).await;
            }
        }
    }

    /// Makes the local paused set the database's.
    async fn sync_pauses<E: Executor, C: Clock>(&self, dispatcher: &Dispatcher<E, C>) {
        match self.paused_jobs().await {
            Ok(names) => {
                dispatcher.paused().set_all(names.into_iter().collect());
            }
            Err(err) => self.emit(
                ClusterKind::Failed,
                format!("reading the paused jobs: {err}"),
                Some("chime reads them again when it reconnects; the claims skip paused jobs meanwhile".into()),
            ),
        }
    }

    /// Carries out the kills other replicas asked of this member's runs.
    async fn take_kills<E: Executor, C: Clock>(&self, dispatcher: &Dispatcher<E, C>) {
        let Some(client) = self.client() else {
            return;
        };
        let member = self.member();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&member];
        let asked = client.query(
            "UPDATE chime_claims SET kill_acked = now()
             WHERE member = $1 AND status = 'running' AND kill_requested IS NOT NULL AND kill_acked IS NULL
             RETURNING run_id, kill_by",
            &params,
        );
        match tokio::time::timeout(CONTROL_TIMEOUT, asked).await {
            Ok(Ok(rows)) => {
                for row in rows {
                    let run_id: Option<String> = row.get(0);
                    let by: Option<i64> = row.get(1);
                    if let Some(run) = run_id.and_then(|id| dispatcher.live().get(&id)) {
                        run.kill(by.and_then(|b| u32::try_from(b).ok()).unwrap_or(0));
                    }
                }
            }
            Ok(Err(err)) => self.emit(
                ClusterKind::Failed,
                format!(
                    "reading the kills asked of this replica: {}",
                    error_text(&err)
                ),
                Some("chime reads them again at its next connection".into()),
            ),
            Err(_) => {}
        }
    }

    fn control_client(&self) -> Result<Arc<Client>, String> {
        self.client().ok_or_else(|| {
            format!(
                "this replica is not connected to the cluster database ({})",
                self.inner.options.redacted()
            )
        })
    }

    /// A statement of an operator's request, bounded by [`CONTROL_TIMEOUT`].
    async fn control_query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, String> {
        let client = self.control_client()?;
        match tokio::time::timeout(CONTROL_TIMEOUT, client.query(sql, params)).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(err)) => Err(format!("the cluster database: {}", error_text(&err))),
            Err(_) => Err(format!(
                "the cluster database did not answer within {} s",
                CONTROL_TIMEOUT.as_secs()
            )),
        }
    }

    /// The jobs paused in the cluster, sorted.
    pub async fn paused_jobs(&self) -> Result<Vec<String>, String> {
        let rows = self
            .control_query("SELECT job FROM chime_paused ORDER BY job", &[])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Pauses (or resumes) `jobs` for every replica (`None` with `pause: false`: every
    /// paused job), and tells the others; returns the jobs whose state changed. Done
    /// when this returns: no fire of a paused job whose instant comes later runs on any
    /// replica (given the same `--cluster-claim-ahead` everywhere), and a resumed job's
    /// next fires run.
    pub async fn set_paused(
        &self,
        jobs: Option<&[String]>,
        pause: bool,
        caller_uid: u32,
    ) -> Result<Vec<String>, String> {
        let member = self.member();
        let uid = i64::from(caller_uid);
        let jobs: Vec<String> = jobs.map(<[String]>::to_vec).unwrap_or_default();
        // One statement: the change and its notification commit together.
        let rows = if pause {
            self.control_query(
                "WITH ins AS (
                    INSERT INTO chime_paused (job, paused_by, member)
                    SELECT j, $2, $3 FROM unnest($1::text[]) AS j
                    ON CONFLICT (job) DO NOTHING RETURNING job)
                 SELECT job, pg_notify('chime_control', 'pauses') FROM ins",
                &[&jobs, &uid, &member],
            )
            .await?
        } else {
            let all = jobs.is_empty();
            self.control_query(
                "WITH del AS (
                    DELETE FROM chime_paused WHERE $2 OR job = ANY($1) RETURNING job)
                 SELECT job, pg_notify('chime_control', 'pauses') FROM del",
                &[&jobs, &all],
            )
            .await?
        };
        let mut changed: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        changed.sort();
        // Fires are claimed up to --cluster-claim-ahead before their instants: waiting
        // that long after the commit, every fire whose instant comes after the answer
        // is claimed after the change, and so follows it on every replica.
        if !changed.is_empty() {
            tokio::time::sleep(self.inner.options.claim_ahead).await;
        }
        Ok(changed)
    }

    /// The runs in flight on the other replicas (their claims' `running` rows whose
    /// lease holds).
    pub async fn remote_runs(&self) -> Result<Vec<RemoteRun>, String> {
        let member = self.member();
        let rows = self
            .control_query(
                "SELECT job, run_id, member, trigger, scheduled_at, started, pid,
                    greatest(0, extract(epoch FROM now() - coalesce(started, claimed_at)) * 1000)::bigint
                 FROM chime_claims
                 WHERE status = 'running' AND member <> $1 AND run_id IS NOT NULL
                   AND (lease_until IS NULL OR lease_until > now())
                 ORDER BY started",
                &[&member],
            )
            .await?;
        Ok(rows.iter().map(RemoteRun::from_row).collect())
    }

    /// Asks the owners of the runs `target` names (a run id, or a job: its runs) on other
    /// replicas to kill them: a request on each run's row, and a notification to its
    /// owner. Returns the runs asked.
    pub async fn request_kill(
        &self,
        target: &str,
        caller_uid: u32,
    ) -> Result<Vec<RemoteRun>, String> {
        let member = self.member();
        let uid = i64::from(caller_uid);
        let rows = self
            .control_query(
                "WITH req AS (
                    UPDATE chime_claims SET kill_by = $3, kill_requested = now(), kill_acked = NULL
                    WHERE status = 'running' AND member <> $2 AND (run_id = $1 OR job = $1)
                      AND (lease_until IS NULL OR lease_until > now())
                    RETURNING job, run_id, member, trigger, scheduled_at, started, pid,
                        greatest(0, extract(epoch FROM now() - coalesce(started, claimed_at)) * 1000)::bigint)
                 SELECT req.*, pg_notify('chime_control', 'kill ' || member) FROM req",
                &[&target, &member, &uid],
            )
            .await?;
        Ok(rows.iter().map(RemoteRun::from_row).collect())
    }

    /// How far the kills asked of other replicas got.
    pub async fn kill_progress(&self, run_ids: &[String]) -> Result<Vec<KillProgress>, String> {
        let rows = self
            .control_query(
                "SELECT run_id, kill_acked IS NOT NULL, status FROM chime_claims WHERE run_id = ANY($1)",
                &[&run_ids],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| KillProgress {
                run_id: r.get(0),
                delivered: r.get(1),
                status: r.get(2),
            })
            .collect())
    }

    fn def_hash(&self, job: &Arc<Job>) -> String {
        let key = Arc::as_ptr(job) as usize;
        let mut hashes = self.inner.hashes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((ptr, hash)) = hashes.get(&job.name)
            && *ptr == key
        {
            return hash.clone();
        }
        let hash = definition_hash(job);
        hashes.insert(job.name.clone(), (key, hash.clone()));
        hash
    }

    /// The hash of every job's definition hash, for comparison between members.
    fn jobs_hash(&self) -> String {
        let hashes = self.inner.hashes.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<(&String, &String)> = hashes.iter().map(|(k, (_, h))| (k, h)).collect();
        all.sort();
        let mut h = Fnv::new();
        for (name, hash) in all {
            h.write(name.as_bytes());
            h.write(b"=");
            h.write(hash.as_bytes());
            h.write(b";");
        }
        format!("{:016x}", h.finish())
    }

    /// Receives fires, groups those of one instant, and claims them.
    async fn claim_loop<E: Executor, C: Clock>(
        self,
        mut rx: mpsc::UnboundedReceiver<ClaimMsg>,
        dispatcher: Dispatcher<E, C>,
        known: Known,
    ) {
        let mut drift_said: HashSet<(String, String)> = HashSet::new();
        let drift_said = Arc::new(Mutex::new(std::mem::take(&mut drift_said)));
        while let Some(first) = rx.recv().await {
            // The scheduler hands a wake-up's fires over one by one from its own thread,
            // then says it is done: they are claimed together (one statement for this
            // replica's preferred fires, one for the fallback), not one per chunk that
            // happened to be waiting. Should the word not come, they go after
            // CLAIM_SETTLE_MAX.
            let mut fires = Vec::new();
            let mut next = Some(first);
            while let Some(ClaimMsg::Fire(fire)) = next {
                fires.push(fire);
                next = tokio::time::timeout(CLAIM_SETTLE_MAX, rx.recv())
                    .await
                    .unwrap_or_default();
            }
            if fires.is_empty() {
                continue;
            }
            let mut by_instant: HashMap<(DateTime<Utc>, bool), Vec<Fire>> = HashMap::new();
            for fire in fires {
                {
                    let mut known = known.lock().unwrap_or_else(|p| p.into_inner());
                    known.insert(
                        fire.name.to_string(),
                        (Arc::clone(&fire.job), Arc::clone(&fire.runs)),
                    );
                }
                let catch_up = fire.trigger == Trigger::CatchUp;
                by_instant
                    .entry((fire.scheduled_at, catch_up))
                    .or_default()
                    .push(fire);
            }
            let members = self
                .inner
                .members
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            for ((at, catch_up), fires) in by_instant {
                let (mine, others): (Vec<Fire>, Vec<Fire>) = fires
                    .into_iter()
                    .partition(|f| preferred(&members, &f.name, at) == self.member());
                if !mine.is_empty() {
                    let this = self.clone();
                    let dispatcher = dispatcher.clone();
                    let drift = Arc::clone(&drift_said);
                    tokio::spawn(async move {
                        this.claim(at, catch_up, mine, &dispatcher, &drift).await;
                    });
                }
                if !others.is_empty() {
                    let this = self.clone();
                    let dispatcher = dispatcher.clone();
                    let drift = Arc::clone(&drift_said);
                    // By the database's clock: a replica whose clock is ahead must not
                    // take the other members' fires before they try.
                    let ahead = self
                        .inner
                        .offset_ms
                        .load(std::sync::atomic::Ordering::Relaxed)
                        .max(0);
                    let fallback = TimeDelta::from_std(self.inner.options.fallback)
                        .unwrap_or(TimeDelta::zero())
                        + TimeDelta::milliseconds(ahead);
                    let start = if catch_up {
                        dispatcher.clock().now()
                    } else {
                        at
                    } + fallback;
                    tokio::spawn(async move {
                        wait_until(dispatcher.clock(), start, dispatcher.runtime()).await;
                        this.claim(at, catch_up, others, &dispatcher, &drift).await;
                    });
                }
            }
        }
    }

    /// Claims the fires of one instant and dispatches the won ones when the instant
    /// comes: one statement, sent `--cluster-claim-ahead` before the instant by the preferred
    /// replica. Claimed that early, an `overlap: skip` job whose earlier run is live on
    /// some replica is not decided yet (that run may end before the instant): it is
    /// claimed again at the instant, the one case of a second statement.
    async fn claim<E: Executor, C: Clock>(
        &self,
        at: DateTime<Utc>,
        catch_up: bool,
        fires: Vec<Fire>,
        dispatcher: &Dispatcher<E, C>,
        drift_said: &Mutex<HashSet<(String, String)>>,
    ) {
        let clock = dispatcher.clock();
        let mut fires = fires;
        loop {
            let now = clock.now();
            let ahead = !catch_up && at > now;
            let Some(claimed) = self
                .claim_once(at, catch_up, ahead, &fires, now, drift_said)
                .await
            else {
                return;
            };
            // Until the instant (and the database's clock at it, for a host whose clock
            // is ahead), the fires are held where a shutdown finds them.
            let due = at + TimeDelta::milliseconds(claimed.offset_ms.max(0));
            let token = {
                let mut pending = self.pending();
                if pending.stopped {
                    pending.release(at, &claimed);
                    return;
                }
                pending.next += 1;
                let token = pending.next;
                pending.held.insert(token, (at, fires, claimed));
                token
            };
            if !catch_up {
                wait_until(clock, due, dispatcher.runtime()).await;
            }
            let Some((_, fires_now, claimed)) = self.pending().held.remove(&token) else {
                return; // let go by a shutdown
            };
            let mut again = Vec::new();
            for fire in fires_now {
                if claimed.won.contains(&*fire.name) {
                    dispatcher.fire_claimed(fire);
                } else if claimed.skipped.contains(&*fire.name) {
                    dispatcher.skip_overlap(&fire);
                } else if claimed.paused.contains(&*fire.name) {
                    dispatcher.skip_paused(&fire);
                } else if claimed.deferred.contains(&*fire.name) {
                    again.push(fire);
                }
            }
            if again.is_empty() || !ahead {
                return;
            }
            fires = again;
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// At shutdown, after the runs: deletes the claims of fires this member won ahead
    /// of instants that had not come when it stopped, so that another replica's
    /// fallback claim runs them. Bounded by a few seconds; a claim left (the database
    /// unreachable) becomes `lost` when its lease runs out, or `interrupted` when this
    /// member starts again.
    pub async fn release(&self) {
        let released = std::mem::take(&mut self.pending().released);
        if released.is_empty() {
            return;
        }
        let (jobs, ats): (Vec<String>, Vec<DateTime<Utc>>) = released.into_iter().unzip();
        let member = self.member();
        let result = self
            .control_query(
                "DELETE FROM chime_claims c USING unnest($2::text[], $3::timestamptz[]) AS t(j, at)
                 WHERE c.job = t.j AND c.scheduled_at = t.at AND c.member = $1
                   AND c.status = 'claimed' AND c.run_id IS NULL AND c.lost_from IS NULL",
                &[&member, &jobs, &ats],
            )
            .await;
        if let Err(err) = result {
            self.emit(
                ClusterKind::Failed,
                format!(
                    "releasing {} claim(s) of fires not yet due at shutdown: {err}",
                    jobs.len()
                ),
                Some("they become lost when their lease runs out (or interrupted when this member starts again)".into()),
            );
        }
    }

    /// One claim statement for fires of one instant (`ahead`: sent before it). `None`
    /// when it failed (said, and counted as unclaimed).
    async fn claim_once(
        &self,
        at: DateTime<Utc>,
        catch_up: bool,
        ahead: bool,
        fires: &[Fire],
        local_now: DateTime<Utc>,
        drift_said: &Mutex<HashSet<(String, String)>>,
    ) -> Option<Claimed> {
        let Some(client) = self.client() else {
            self.inner
                .unclaimed
                .fetch_add(fires.len() as u64, std::sync::atomic::Ordering::Relaxed);
            return None;
        };
        let hashes: Vec<String> = fires.iter().map(|f| self.def_hash(&f.job)).collect();
        let jobs: Vec<ClaimJob<'_>> = fires
            .iter()
            .zip(&hashes)
            .map(|(f, hash)| ClaimJob {
                name: &f.name,
                hash,
                skip: f.job.overlap == Overlap::Skip,
            })
            .collect();
        let request = ClaimRequest {
            at,
            member: self.member(),
            jobs: &jobs,
            catch_up,
            ahead,
            lease: self.inner.options.lease,
        };
        let outcome = match tokio::time::timeout(
            self.inner.options.lease,
            claim_statement(&client, &request),
        )
        .await
        {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(err)) => {
                self.inner
                    .unclaimed
                    .fetch_add(fires.len() as u64, std::sync::atomic::Ordering::Relaxed);
                self.emit(
                    ClusterKind::Failed,
                    format!(
                        "claiming {} fire(s) of {at}: {}",
                        fires.len(),
                        error_text(&err)
                    ),
                    Some("these fires are not run here; another replica may".into()),
                );
                return None;
            }
            Err(_) => {
                self.inner
                    .unclaimed
                    .fetch_add(fires.len() as u64, std::sync::atomic::Ordering::Relaxed);
                return None;
            }
        };
        let ClaimOutcome {
            db_now,
            won,
            skipped,
            drifted,
            in_window,
            paused,
            deferred,
        } = outcome;
        // The statement's `now()` is when it began: the host's clock minus the
        // database's, short of the one-way latency.
        let offset = local_now - db_now;
        self.inner.offset_ms.store(
            offset.num_milliseconds(),
            std::sync::atomic::Ordering::Relaxed,
        );
        if !in_window {
            self.emit(
                ClusterKind::ClockOff,
                format!(
                    "claims of {at} refused: this host's clock is {:.3}s off the database's (at most {}s allowed)",
                    offset.num_milliseconds() as f64 / 1000.0,
                    MAX_SKEW.as_secs()
                ),
                Some("synchronise this host's clock (NTP); the other replicas run these fires".into()),
            );
        }
        for entry in drifted {
            let mut said = drift_said.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((job, member)) = entry.split_once(' ')
                && said.insert((job.to_string(), member.to_string()))
            {
                self.emit(
                    ClusterKind::Drift,
                    format!(
                        "job {job} is defined differently on member {member} (its definition or resolved zone differs from this replica's)"
                    ),
                    Some("give every replica the same schedule files and an explicit timezone".into()),
                );
            }
        }
        Some(Claimed {
            won: won.into_iter().collect(),
            skipped: skipped.into_iter().collect(),
            paused: paused.into_iter().collect(),
            deferred: deferred.into_iter().collect(),
            offset_ms: offset.num_milliseconds(),
        })
    }

    /// Heartbeat, lease renewal, fencing, lost runs, the epoch, membership.
    async fn lease_loop<E: Executor, C: Clock>(self, dispatcher: Dispatcher<E, C>, known: Known) {
        let lease = self.inner.options.lease;
        // Leases are renewed every quarter lease; the membership that spreads claims is
        // refreshed at least every second, so that views agree soon after a change.
        let every = (lease / 4).min(Duration::from_secs(1));
        let mut last_renewed = Instant::now();
        let mut fenced = false;
        let mut others_said: HashMap<String, String> = HashMap::new();
        let mut tick = tokio::time::interval(every.min(Duration::from_millis(250)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_beat = Instant::now();
        loop {
            tick.tick().await;
            if !fenced && last_renewed.elapsed() > lease / 2 {
                fenced = true;
                let running = dispatcher.active();
                dispatcher.fence();
                self.emit(
                    ClusterKind::Fenced,
                    format!(
                        "the lease could not be renewed for {:.1}s (lease {:.1}s): {running} run(s) in flight terminated, before another replica may take them over",
                        last_renewed.elapsed().as_secs_f64(),
                        lease.as_secs_f64()
                    ),
                    Some("check the database and the network to it; chime reconnects and claims again".into()),
                );
            }
            if Instant::now() < next_beat {
                continue;
            }
            next_beat = Instant::now() + every;
            let Some(client) = self.client() else {
                continue;
            };
            let sent = Instant::now();
            let rerun: Vec<String> = known
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(_, (job, _))| job.on_owner_loss == OwnerLoss::Rerun)
                .map(|(name, _)| name.clone())
                .collect();
            match tokio::time::timeout(lease / 4, self.beat(&client, &rerun)).await {
                Ok(Ok(beat)) => {
                    last_renewed = sent;
                    if fenced {
                        fenced = false;
                        self.emit(
                            ClusterKind::Recovered,
                            "the lease is renewed again; claiming fires again".into(),
                            None,
                        );
                    }
                    *self.inner.members.lock().unwrap_or_else(|p| p.into_inner()) =
                        beat.members.iter().map(|(m, _)| m.clone()).collect();
                    let mine = self.jobs_hash();
                    for (member, hash) in &beat.members {
                        if member != self.member()
                            && !hash.is_empty()
                            && *hash != mine
                            && others_said.get(member) != Some(hash)
                        {
                            others_said.insert(member.clone(), hash.clone());
                            self.emit(
                                ClusterKind::Drift,
                                format!("member {member} has a different set of job definitions than this replica"),
                                Some("give every replica the same schedule files".into()),
                            );
                        }
                    }
                    self.take_lost(beat.lost, &dispatcher, &known);
                }
                Ok(Err(err)) => {
                    self.emit(
                        ClusterKind::Failed,
                        format!("renewing the lease: {}", error_text(&err)),
                        Some("chime retries; runs are fenced if it cannot renew in time".into()),
                    );
                }
                Err(_) => {}
            }
        }
    }

    async fn beat(&self, client: &Client, rerun: &[String]) -> Result<Beat, tokio_postgres::Error> {
        let lease = self.inner.options.lease.as_secs_f64();
        let host = hostname();
        let pid = std::process::id() as i32;
        let jobs_hash = self.jobs_hash();
        let member = self.member();
        let p_member: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&member, &host, &pid, &jobs_hash];
        let p_renew: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&member, &lease];
        let p_live: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&lease];
        let p_lost: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&rerun, &member, &lease];
        let (_, _, members, lost, _) = tokio::try_join!(
            client.execute(
                "INSERT INTO chime_members (member, host, pid, jobs_hash) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (member) DO UPDATE SET heartbeat = now(), jobs_hash = EXCLUDED.jobs_hash",
                &p_member,
            ),
            client.execute(
                // Rows the history writer holds at this moment (a run starting or
                // ending) are passed over, not waited for: waiting, in another order
                // than the writer's, deadlocked; the writer sets a starting run's lease
                // itself, and an ending run needs none.
                "UPDATE chime_claims SET lease_until = now() + make_interval(secs => $2)
                 WHERE (job, scheduled_at, epoch) IN (
                     SELECT job, scheduled_at, epoch FROM chime_claims
                     WHERE member = $1 AND status IN ('claimed', 'running') AND lease_until > now()
                     FOR UPDATE SKIP LOCKED)",
                &p_renew,
            ),
            client.query(
                "SELECT member, jobs_hash FROM chime_members
                 WHERE heartbeat > now() - make_interval(secs => $1) ORDER BY member",
                &p_live,
            ),
            client.query(LOST_SQL, &p_lost),
            client.execute(EPOCH_SQL, &[]),
        )?;
        Ok(Beat {
            members: members.iter().map(|r| (r.get(0), r.get(1))).collect(),
            lost: lost
                .iter()
                .map(|r| Lost {
                    job: r.get(0),
                    scheduled_at: r.get(1),
                    run_id: r.get(2),
                    owner: r.get(3),
                    rerun: r.get(4),
                })
                .collect(),
        })
    }

    fn take_lost<E: Executor, C: Clock>(
        &self,
        lost: Vec<Lost>,
        dispatcher: &Dispatcher<E, C>,
        known: &Known,
    ) {
        for lost in lost {
            let name: Arc<str> = Arc::from(lost.job.as_str());
            self.inner.events.emit(Event::RunLost {
                job: Arc::clone(&name),
                run_id: lost.run_id,
                scheduled_at: lost.scheduled_at,
                owner: lost.owner,
                rerun: lost.rerun,
            });
            if lost.rerun {
                let entry = known
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&lost.job)
                    .cloned();
                if let Some((job, runs)) = entry {
                    dispatcher.fire_claimed(Fire {
                        job,
                        name,
                        runs,
                        scheduled_at: lost.scheduled_at,
                        trigger: Trigger::Schedule,
                    });
                }
            }
        }
    }
}

type Known = Arc<Mutex<HashMap<String, (Arc<Job>, Arc<crate::dispatch::JobRuns>)>>>;

/// What one claim statement decided, by job.
struct Claimed {
    won: HashSet<String>,
    skipped: HashSet<String>,
    paused: HashSet<String>,
    /// `overlap: skip` jobs with an earlier fire live, claimed ahead: claimed again at
    /// the instant.
    deferred: HashSet<String>,
    /// This host's clock minus the database's, in ms.
    offset_ms: i64,
}

/// Sleeps until the wall clock reaches `at` (on time to the microsecond, as the
/// scheduler does). A clock stepped back meanwhile ends the wait: the claim stands by
/// the database's clock, not this host's.
async fn wait_until<C: Clock>(clock: &Arc<C>, at: DateTime<Utc>, workers: &tokio::runtime::Handle) {
    while clock.now() < at {
        if clock::sleep_until_warm(clock, at, workers).await == Wake::Stepped
            && clock.now() < at - TimeDelta::from_std(CLAIM_AHEAD_MAX).unwrap_or(TimeDelta::zero())
        {
            return;
        }
    }
}

struct Beat {
    members: Vec<(String, String)>,
    lost: Vec<Lost>,
}

struct Lost {
    job: String,
    scheduled_at: DateTime<Utc>,
    run_id: Option<String>,
    owner: String,
    rerun: bool,
}

/// The claim of one instant's fires: inserted rows are won (`claimed`), `paused` when
/// the job is in `chime_paused` (so a pause holds on every replica from its commit, even
/// before the others heard of it), or `skipped` when the job is `overlap: skip` and an
/// earlier fire of it is live on any replica (claimed early by a replica whose clock is
/// ahead does not count; one whose lease ran out counts until it is marked lost, so
/// that a re-run comes before later fires). Sent ahead of the instant (`$10`), such a
/// skip is not decided: nothing is inserted and the job is returned as deferred, to be
/// claimed again at the instant, when that earlier run may have ended. Also returns the
/// database's clock, claims of the same fires by members with another definition, and
/// whether the instant was inside the window.
const CLAIM_SQL: &str = "
WITH e AS (SELECT epoch FROM chime_epoch),
w AS (SELECT $8::bool OR ($2::timestamptz BETWEEN now() - make_interval(secs => $9) AND now() + make_interval(secs => $9)) AS ok),
t AS (
    SELECT u.j, u.h,
        EXISTS (SELECT 1 FROM chime_paused p WHERE p.job = u.j) AS paused,
        u.s AND EXISTS (
            SELECT 1 FROM chime_claims c
            WHERE c.job = u.j AND c.status IN ('claimed', 'running') AND c.scheduled_at < $2
        ) AS busy
    FROM unnest($1::text[], $4::text[], $7::bool[]) AS u(j, h, s), e
    -- Fires claimed already (by the preferred member, when this is a fallback) are
    -- passed over at the cost of one index probe each.
    WHERE NOT EXISTS (
        SELECT 1 FROM chime_claims c WHERE c.job = u.j AND c.scheduled_at = $2 AND c.epoch = e.epoch
    )
),
ins AS (
    INSERT INTO chime_claims (job, scheduled_at, epoch, member, def_hash, trigger, status, lease_until)
    SELECT t.j, $2, e.epoch, $3, t.h, $5,
        CASE WHEN t.paused THEN 'paused' WHEN t.busy THEN 'skipped' ELSE 'claimed' END,
        now() + make_interval(secs => $6)
    FROM t, e, w
    WHERE w.ok AND (t.paused OR NOT t.busy OR NOT $10::bool)
    ON CONFLICT (job, scheduled_at, epoch) DO NOTHING
    RETURNING job, status
)
SELECT now(),
    coalesce((SELECT array_agg(job) FROM ins WHERE status = 'claimed'), '{}'::text[]),
    coalesce((SELECT array_agg(job) FROM ins WHERE status = 'skipped'), '{}'::text[]),
    coalesce((SELECT array_agg(c.job || ' ' || c.member)
        FROM chime_claims c JOIN unnest($1::text[], $4::text[]) AS t(j, h) ON c.job = t.j
        WHERE c.scheduled_at = $2 AND c.epoch = (SELECT epoch FROM e) AND c.def_hash <> t.h), '{}'::text[]),
    (SELECT ok FROM w),
    coalesce((SELECT array_agg(job) FROM ins WHERE status = 'paused'), '{}'::text[]),
    coalesce((SELECT array_agg(t.j) FROM t, w WHERE w.ok AND $10::bool AND t.busy AND NOT t.paused), '{}'::text[])";

/// One job of a [`ClaimRequest`].
#[derive(Debug, Clone, Copy)]
pub struct ClaimJob<'a> {
    pub name: &'a str,
    /// Its definition hash ([`definition_hash`]).
    pub hash: &'a str,
    /// `overlap: skip`.
    pub skip: bool,
}

/// The claim of fires of one instant, as one statement ([`claim_statement`]).
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    pub at: DateTime<Utc>,
    pub member: &'a str,
    pub jobs: &'a [ClaimJob<'a>],
    /// Catch-up fires: outside the window by nature.
    pub catch_up: bool,
    /// Sent before the instant: `overlap: skip` jobs with an earlier fire live are
    /// deferred, not skipped.
    pub ahead: bool,
    pub lease: Duration,
}

/// What a claim statement decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimOutcome {
    /// The database's clock when the statement began.
    pub db_now: DateTime<Utc>,
    /// Jobs whose fire this member claimed: to run.
    pub won: Vec<String>,
    /// Recorded as skipped (`overlap: skip`, an earlier fire live).
    pub skipped: Vec<String>,
    /// `job member` of claims of the same fires with another definition.
    pub drifted: Vec<String>,
    /// Whether the instant was within [`MAX_SKEW`] of the database's clock.
    pub in_window: bool,
    /// Recorded as paused (in `chime_paused`).
    pub paused: Vec<String>,
    /// Not decided (claimed ahead, an earlier fire live): to claim again at the instant.
    pub deferred: Vec<String>,
}

/// Sends one claim statement ([`CLAIM_SQL`]). Jobs in none of the outcome's lists were
/// claimed by another member already (or the instant was outside the window).
pub async fn claim_statement(
    client: &Client,
    request: &ClaimRequest<'_>,
) -> Result<ClaimOutcome, tokio_postgres::Error> {
    let names: Vec<&str> = request.jobs.iter().map(|j| j.name).collect();
    let hashes: Vec<&str> = request.jobs.iter().map(|j| j.hash).collect();
    let skip: Vec<bool> = request.jobs.iter().map(|j| j.skip).collect();
    let trigger = if request.catch_up {
        "catch_up"
    } else {
        "schedule"
    };
    let lease = request.lease.as_secs_f64();
    let skew = MAX_SKEW.as_secs_f64();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
        &names,
        &request.at,
        &request.member,
        &hashes,
        &trigger,
        &lease,
        &skip,
        &request.catch_up,
        &skew,
        &request.ahead,
    ];
    let row = client.query_one(CLAIM_SQL, &params).await?;
    let sorted = |i: usize| {
        let mut v: Vec<String> = row.get(i);
        v.sort();
        v
    };
    Ok(ClaimOutcome {
        db_now: row.get(0),
        won: sorted(1),
        skipped: sorted(2),
        drifted: sorted(3),
        in_window: row.get(4),
        paused: sorted(5),
        deferred: sorted(6),
    })
}

/// Connects to the cluster database as a replica does (migrating the schema), for
/// tools and tests; the connection is driven in the background.
pub async fn client(options: &ClusterOptions) -> Result<Client, String> {
    connect(options, None)
        .await
        .map(|(client, _driver)| client)
        .map_err(|(text, fix)| format!("{text} ({fix})"))
}

/// Rows whose lease ran out become `lost`; those of `rerun` jobs (`$1`), not re-run
/// before, are claimed again by this replica (`$2`) instead, with the lost run noted.
const LOST_SQL: &str = "
UPDATE chime_claims c SET
    status = CASE WHEN c.job = ANY($1) AND c.lost_from IS NULL THEN 'claimed' ELSE 'lost' END,
    finished = CASE WHEN c.job = ANY($1) AND c.lost_from IS NULL THEN NULL ELSE now() END,
    lost_from = CASE WHEN c.job = ANY($1) AND c.lost_from IS NULL THEN c.member ELSE c.lost_from END,
    lost_run_id = CASE WHEN c.job = ANY($1) AND c.lost_from IS NULL THEN c.run_id ELSE c.lost_run_id END,
    member = CASE WHEN c.job = ANY($1) AND c.lost_from IS NULL THEN $2 ELSE c.member END,
    lease_until = CASE WHEN c.job = ANY($1) AND c.lost_from IS NULL THEN now() + make_interval(secs => $3) ELSE c.lease_until END
FROM (SELECT job, scheduled_at, epoch, member, run_id FROM chime_claims
      WHERE status IN ('claimed', 'running') AND lease_until < now()
      FOR UPDATE SKIP LOCKED) old
WHERE c.job = old.job AND c.scheduled_at = old.scheduled_at AND c.epoch = old.epoch
RETURNING c.job, c.scheduled_at, old.run_id, old.member, c.status = 'claimed'";

/// A backward step of the database's clock of more than 3 h bumps the epoch.
const EPOCH_SQL: &str = "
UPDATE chime_epoch SET
    epoch = epoch + CASE WHEN high_water > now() + interval '3 hours' THEN 1 ELSE 0 END,
    high_water = CASE WHEN high_water > now() + interval '3 hours' THEN now() ELSE greatest(high_water, now()) END";

/// Sends fires to the claim loop.
struct ClaimGate {
    tx: mpsc::UnboundedSender<ClaimMsg>,
    cluster: Cluster,
}

/// What the claim loop hears from the scheduler.
enum ClaimMsg {
    Fire(Fire),
    /// The fires so far are all of the scheduler's wake-up.
    Flush,
}

impl Gate for ClaimGate {
    fn submit(&self, fire: Fire) {
        let _ = self.tx.send(ClaimMsg::Fire(fire));
    }

    fn flush(&self) {
        let _ = self.tx.send(ClaimMsg::Flush);
    }

    fn ahead(&self) -> Duration {
        self.cluster.inner.options.claim_ahead
    }

    fn stop(&self) {
        let mut pending = self.cluster.pending();
        pending.stopped = true;
        for (at, _, claimed) in std::mem::take(&mut pending.held).into_values() {
            pending.release(at, &claimed);
        }
    }
}

/// The member that should claim a fire first: rendezvous hashing of (job, instant)
/// over the live members (the highest score wins).
pub fn preferred<'m>(members: &'m [String], job: &str, at: DateTime<Utc>) -> &'m str {
    let instant = at.timestamp_millis().to_le_bytes();
    members
        .iter()
        .max_by_key(|member| {
            let mut h = Fnv::new();
            h.write(job.as_bytes());
            h.write(&[0]);
            h.write(&instant);
            h.write(&[0]);
            h.write(member.as_bytes());
            (mix(h.finish()), member.as_str())
        })
        .map_or("", String::as_str)
}

/// A job's definition hash: everything but where it stands in its file, with its
/// resolved zone.
pub fn definition_hash(job: &Job) -> String {
    let mut plain = job.clone();
    plain.source = crate::job::SourceLocation {
        file: std::path::PathBuf::new(),
        line: 0,
        column: 0,
    };
    let text = format!("{plain:?}|zone={}", job.timezone.name());
    let mut h = Fnv::new();
    h.write(text.as_bytes());
    format!("{:016x}", h.finish())
}

/// FNV-1a, 64 bits: stable across builds and hosts (unlike std's hasher).
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A finaliser (splitmix64's), so that near keys score independently.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_spreads_and_moves_little_when_a_member_leaves() {
        let members: Vec<String> = ["a:1", "b:2", "c:3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let at: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("time");
        let mut counts: HashMap<&str, usize> = HashMap::new();
        let mut moved = 0;
        for i in 0..3000 {
            let job = format!("job-{i}");
            let owner = preferred(&members, &job, at);
            *counts.entry(owner).or_default() += 1;
            let two = &members[..2];
            let after = preferred(two, &job, at);
            if owner != "c:3" && after != owner {
                moved += 1;
            }
        }
        for member in &members {
            let n = counts[member.as_str()];
            assert!((800..1200).contains(&n), "{member}: {n} of 3000");
        }
        assert_eq!(moved, 0, "only the leaving member's fires move");
    }

    #[test]
    fn passwords_are_not_logged() {
        assert_eq!(
            redact("postgres://chime:hunter2@db:5432/x"),
            "postgres://chime@db:5432/x"
        );
        assert_eq!(
            redact("host=db user=chime password=hunter2"),
            "host=db user=chime password=***"
        );
    }
}
