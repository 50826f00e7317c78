//! The control socket's service side: binding the socket, accepting peers on the
//! service's runtime (each connection a task of its own, so a slow client holds up
//! nobody), checking them, and carrying out their requests through the same parts the
//! scheduler uses: manual fires go through the scheduling loop and the dispatcher's
//! overlap and limit rules, pauses through the dispatcher's paused set, kills through
//! the run's own cancel token (the executor's timeout path: SIGTERM, `kill_grace`,
//! SIGKILL). With replicas (`--cluster`), pauses are written to the cluster's database
//! before the answer, kills of other replicas' runs are asked of their owners there, and
//! `status` adds the other replicas' runs (`crate::cluster`).

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{COMMANDS, MAX_LINE, Request, VERSION};
use crate::clock::Clock;
use crate::dispatch::{Dispatched, Dispatcher, Manual};
use crate::events::{self, Event, Events, SkipReason};
use crate::exec::Executor;
use crate::run::new_run_id;
use crate::scheduler::Command;

/// How long a peer may take to send its request line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a peer may take to read an answer (a `--wait` stream: each line).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are answered "busy" and closed.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a request waits for the scheduling loop (it may be applying a reload).
const SCHEDULER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a kill of another replica's run waits to see the run end.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Keeps (or forgets, with false) a job's pause.
type KeepPause = dyn Fn(&str, bool) + Send + Sync;

/// Where pauses are kept across restarts (the state store's writer), if anywhere.
#[derive(Clone)]
pub struct PauseStore(Arc<KeepPause>);

impl PauseStore {
    pub fn new(store: impl Fn(&str, bool) + Send + Sync + 'static) -> Self {
        PauseStore(Arc::new(store))
    }
}

impl std::fmt::Debug for PauseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PauseStore")
    }
}

/// The control socket a service serves, bound by the binary's edge.
#[derive(Debug, Clone)]
pub struct ControlSocket {
    pub listener: Arc<std::os::unix::net::UnixListener>,
    pub path: PathBuf,
}

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "another chime answers on the control socket {0}; stop it, or give this one its own with --control-socket PATH"
    )]
    InUse(PathBuf),
    #[error(
        "{0} exists and is not a socket; remove it, or name another path with --control-socket"
    )]
    NotASocket(PathBuf),
    #[error(
        "cannot create the control socket {path}: {source}; name a writable place with --control-socket PATH, or turn it off with --control-socket none"
    )]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Binds the socket at `path` with mode 0660, creating its directory; a stale socket
/// left by a chime that died is replaced, a live one is not.
pub fn bind(path: &Path) -> Result<ControlSocket, BindError> {
    let io_error = |source| BindError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(io_error)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket_like() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(BindError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(io_error)?;
        }
        Ok(_) => return Err(BindError::NotASocket(path.to_path_buf())),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(io_error(err)),
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(io_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_error)?;
    listener.set_nonblocking(true).map_err(io_error)?;
    Ok(ControlSocket {
        listener: Arc::new(listener),
        path: path.to_path_buf(),
    })
}

trait SocketLike {
    fn is_socket_like(&self) -> bool;
}

impl SocketLike for std::fs::FileType {
    fn is_socket_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_socket()
    }
}

/// The runs some `trigger --wait` clients follow: events of those runs are copied to
/// them. While nobody follows a run, an event costs one atomic load.
#[derive(Debug, Default)]
pub struct Taps {
    following: AtomicUsize,
    runs: Mutex<HashMap<Arc<str>, mpsc::UnboundedSender<Event>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Taps {
    /// `inner`, with the events of followed runs copied to their followers.
    pub fn wrap(self: &Arc<Self>, inner: Events) -> Events {
        let taps = Arc::clone(self);
        Events::new(move |event| {
            if taps.following.load(Ordering::Acquire) > 0
                && let Some(run_id) = event.run_id()
                && let Some(follower) = lock(&taps.runs).get(run_id)
            {
                let _ = follower.send(event.clone());
            }
            inner.emit(event);
        })
    }

    fn follow(self: &Arc<Self>, run_id: &Arc<str>) -> Following {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.runs).insert(Arc::clone(run_id), tx);
        self.following.fetch_add(1, Ordering::AcqRel);
        Following {
            taps: Arc::clone(self),
            run_id: Arc::clone(run_id),
            events: rx,
        }
    }
}

/// A run followed; unfollowed when dropped.
struct Following {
    taps: Arc<Taps>,
    run_id: Arc<str>,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Drop for Following {
    fn drop(&mut self) {
        lock(&self.taps.runs).remove(&self.run_id);
        self.taps.following.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the server works with: the service's parts.
pub(crate) struct Server<E, C> {
    pub dispatcher: Dispatcher<E, C>,
    pub commands: mpsc::Sender<Command>,
    pub events: Events,
    pub taps: Arc<Taps>,
    pub pauses: Option<PauseStore>,
    /// With replicas: pauses live in the cluster's database, kills of other replicas'
    /// runs go through it, and `status` lists every replica's runs.
    pub cluster: Option<crate::cluster::Cluster>,
    /// Cancelled when the service stops: the listener closes, followers are told.
    pub stop: CancellationToken,
}

/// Who may act: root, the service's uid, members of the socket's group.
#[derive(Debug, Clone, Copy)]
struct Allowed {
    uid: u32,
    gid: u32,
}

/// A peer, as `SO_PEERCRED` tells.
#[derive(Debug, Clone, Copy)]
struct Peer {
    uid: u32,
    gid: u32,
    pid: Option<i32>,
}

impl Allowed {
    fn admits(&self, peer: Peer) -> bool {
        peer.uid == 0
            || peer.uid == self.uid
            || peer.gid == self.gid
            || peer
                .pid
                .is_some_and(|pid| supplementary_groups(pid).contains(&self.gid))
    }
}

/// A process's supplementary groups (`Groups:` in `/proc/PID/status`).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|groups| {
            groups
                .split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Serves the socket until `server.stop` is cancelled, then removes it.
pub(crate) fn spawn<E: Executor, C: Clock>(
    socket: &ControlSocket,
    server: Server<E, C>,
) -> io::Result<JoinHandle<()>> {
    let listener = tokio::net::UnixListener::from_std(socket.listener.try_clone()?)?;
    let gid = std::fs::metadata(&socket.path)?.gid();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let allowed = Allowed { uid, gid };
    let path = socket.path.clone();
    let server = Arc::new(server);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let turned_away = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    Ok(tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = server.stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else {
                // EMFILE and the like: wait a moment rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                let error = format!(
                    "the service is busy ({MAX_CONNECTIONS} control connections open); try again"
                );
                let uid = stream.peer_cred().ok().map(|cred| cred.uid());
                server.log("", String::new(), uid, &Err(error.clone()));
                // Told so (within a second), while there are not as many of those too.
                if let Ok(permit) = Arc::clone(&turned_away).try_acquire_owned() {
                    tokio::spawn(async move {
                        let mut stream = stream;
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            write(&mut stream, &error_line(&error)).await;
                            drain(stream).await;
                        })
                        .await;
                        drop(permit);
                    });
                }
                continue;
            };
            let server = Arc::clone(&server);
            tokio::spawn(async move {
                server.connection(stream, allowed).await;
                drop(permit);
            });
        }
        let _ = std::fs::remove_file(&path);
    }))
}

fn reply(mut fields: Map<String, Value>, ok: bool) -> String {
    let mut line = Map::new();
    line.insert("v".into(), json!(VERSION));
    line.insert("ok".into(), json!(ok));
    line.append(&mut fields);
    let mut text = Value::Object(line).to_string();
    text.push('\n');
    text
}

fn error_line(error: &str) -> String {
    let mut fields = Map::new();
    fields.insert("error".into(), json!(error));
    reply(fields, false)
}

/// An event of a followed run, as a line of the `--wait` stream.
fn event_line(event: &Event) -> String {
    let mut line = Map::new();
    line.insert("v".into(), json!(VERSION));
    line.insert("event".into(), json!(event.name()));
    for (name, value) in events::fields(event) {
        let value = match value {
            events::Value::Str(s) => json!(s),
            events::Value::Int(i) => json!(i),
            events::Value::UInt(u) => json!(u),
            events::Value::Float(f) => json!(f),
            events::Value::Bool(b) => json!(b),
            events::Value::List(l) => json!(l),
        };
        line.insert(name.into(), value);
    }
    let mut text = Value::Object(line).to_string();
    text.push('\n');
    text
}

/// A request's answer: the fields of a success, or what went wrong.
type Answer = Result<Map<String, Value>, String>;

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

const EXAMPLE: &str = r#"{"v":1,"cmd":"status"}"#;

/// Reads one request line, bounded in length and time.
async fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    let mut line = Vec::new();
    let mut reader = BufReader::new(stream).take(MAX_LINE as u64 + 1);
    let read = tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    match read {
        Err(_) => {
            return Err(format!(
                "no request within {} s: send one JSON line, e.g. {EXAMPLE}",
                READ_TIMEOUT.as_secs()
            ));
        }
        Ok(Err(err)) => return Err(format!("reading the request failed: {err}")),
        Ok(Ok(_)) => {}
    }
    if line.last() != Some(&b'\n') {
        if line.len() > MAX_LINE {
            return Err(format!(
                "the request is longer than {MAX_LINE} bytes; send one JSON line, e.g. {EXAMPLE}"
            ));
        }
        return Err(format!(
            "the connection was closed before the request's end (a newline); send one JSON line, e.g. {EXAMPLE}"
        ));
    }
    let request: Request = serde_json::from_slice(&line).map_err(|err| {
        format!("not a valid request ({err}); send one JSON object on one line, e.g. {EXAMPLE}")
    })?;
    if request.v != VERSION {
        return Err(format!(
            "protocol version {} is not spoken here; this chime speaks version {VERSION}",
            request.v
        ));
    }
    Ok(request)
}

/// After an error answer: what the peer still sends is read and dropped (a little,
/// briefly), so that closing with unread data does not reset the connection before
/// the peer has read the answer.
async fn drain(mut stream: UnixStream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 8192];
    let mut left = 4 * MAX_LINE;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

async fn write(stream: &mut UnixStream, text: &str) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(text.as_bytes())).await,
        Ok(Ok(()))
    )
}

impl<E: Executor, C: Clock> Server<E, C> {
    fn log(&self, command: &str, target: String, uid: Option<u32>, result: &Answer) {
        self.events.emit(Event::ControlRequest {
            command: command.to_string(),
            target,
            caller_uid: uid,
            result: match result {
                Ok(_) => "ok".into(),
                Err(error) => error.clone(),
            },
        });
    }

    async fn connection(&self, mut stream: UnixStream, allowed: Allowed) {
        let peer = match stream.peer_cred() {
            Ok(cred) => Peer {
                uid: cred.uid(),
                gid: cred.gid(),
                pid: cred.pid(),
            },
            Err(err) => {
                let answer = Err(format!("cannot tell who is asking (SO_PEERCRED: {err})"));
                self.log("", String::new(), None, &answer);
                return;
            }
        };
        if !allowed.admits(peer) {
            let answer = Err(format!(
                "uid {} may not control this chime: only root, uid {} and members of the control socket's group (gid {}) may",
                peer.uid, allowed.uid, allowed.gid
            ));
            self.log("", String::new(), Some(peer.uid), &answer);
            if let Err(error) = answer {
                write(&mut stream, &error_line(&error)).await;
            }
            drain(stream).await;
            return;
        }
        let request = match read_request(&mut stream).await {
            Ok(request) => request,
            Err(error) => {
                let answer = Err(error);
                self.log("", String::new(), Some(peer.uid), &answer);
                if let Err(error) = answer {
                    write(&mut stream, &error_line(&error)).await;
                }
                drain(stream).await;
                return;
            }
        };
        let target = request.target();
        if request.cmd == "trigger" && request.wait {
            self.trigger_and_follow(&request, peer.uid, &mut stream)
                .await;
            return;
        }
        let answer = match request.cmd.as_str() {
            "trigger" => self
                .trigger(&request, peer.uid)
                .await
                .map(|(fields, _)| fields),
            "pause" => self.pause(&request, true, peer.uid).await,
            "resume" => self.pause(&request, false, peer.uid).await,
            "kill" => self.kill(&request, peer.uid).await,
            "status" => Ok(self.status().await),
            other => Err(format!(
                "unknown command `{other}`; this chime knows {}",
                COMMANDS.join(", ")
            )),
        };
        self.log(&request.cmd, target, Some(peer.uid), &answer);
        let line = match answer {
            Ok(fields) => reply(fields, true),
            Err(error) => error_line(&error),
        };
        write(&mut stream, &line).await;
    }

    async fn ask<R>(&self, command: Command, answer: oneshot::Receiver<R>) -> Result<R, String> {
        let gone = || "the service is stopping".to_string();
        if self.commands.send(command).await.is_err() {
            return Err(gone());
        }
        match tokio::time::timeout(SCHEDULER_TIMEOUT, answer).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(gone()),
            Err(_) => Err(format!(
                "the scheduling loop did not answer within {} s; try again",
                SCHEDULER_TIMEOUT.as_secs()
            )),
        }
    }

    async fn job_names(&self) -> Result<BTreeSet<String>, String> {
        let (reply, answer) = oneshot::channel();
        let names = self.ask(Command::Names { reply }, answer).await?;
        Ok(names.iter().map(|name| name.to_string()).collect())
    }

    /// Fires the job by hand; the answer and the run id, when a run is coming.
    async fn trigger(
        &self,
        request: &Request,
        uid: u32,
    ) -> Result<(Map<String, Value>, Arc<str>), String> {
        let run_id = new_run_id();
        self.trigger_as(request, uid, run_id).await
    }

    async fn trigger_as(
        &self,
        request: &Request,
        uid: u32,
        run_id: Arc<str>,
    ) -> Result<(Map<String, Value>, Arc<str>), String> {
        let Some(job) = request.job.clone() else {
            return Err(
                "trigger needs a job: {\"v\":1,\"cmd\":\"trigger\",\"job\":\"NAME\"}".into(),
            );
        };
        let manual = Manual {
            run_id: Arc::clone(&run_id),
            caller_uid: uid,
        };
        let (reply, answer) = oneshot::channel();
        let command = Command::Trigger {
            job: job.clone(),
            manual,
            reply,
        };
        match self.ask(command, answer).await? {
            None => Err(format!(
                "no job named `{job}` is loaded; `chime status` lists the jobs"
            )),
            Some(Dispatched::Started) => Ok((
                fields(json!({"run_id": &*run_id, "job": job, "dispatched": "started"})),
                run_id,
            )),
            Some(Dispatched::Queued) => Ok((
                fields(json!({"run_id": &*run_id, "job": job, "dispatched": "queued"})),
                run_id,
            )),
            Some(Dispatched::Skipped(SkipReason::Shutdown)) => {
                Err("the service is shutting down; the run was not started".into())
            }
            Some(Dispatched::Skipped(_)) => Err(format!(
                "`{job}` is already running (or has a run waiting) and its overlap policy is skip; the manual run was skipped (run.skipped reason=overlap)"
            )),
        }
    }

    /// `trigger --wait`: the answer, then the run's events until its `run.finished`.
    async fn trigger_and_follow(&self, request: &Request, uid: u32, stream: &mut UnixStream) {
        let run_id = new_run_id();
        // Followed before it is fired, so that no event of it is missed.
        let mut following = self.taps.follow(&run_id);
        let answer = self.trigger_as(request, uid, run_id).await;
        let answer = answer.map(|(fields, _)| fields);
        self.log("trigger", request.target(), Some(uid), &answer);
        let line = match answer {
            Ok(fields) => reply(fields, true),
            Err(error) => {
                write(stream, &error_line(&error)).await;
                return;
            }
        };
        if !write(stream, &line).await {
            return;
        }
        loop {
            let event = tokio::select! {
                event = following.events.recv() => event,
                () = self.stop.cancelled() => None,
            };
            let Some(event) = event else {
                let line = error_line("the service stopped before the run ended");
                write(stream, &line).await;
                return;
            };
            if !write(stream, &event_line(&event)).await {
                // The client went away; the run goes on.
                return;
            }
            if matches!(event, Event::RunFinished { .. }) {
                return;
            }
        }
    }

    async fn pause(&self, request: &Request, pause: bool, uid: u32) -> Answer {
        let verb = if pause { "pause" } else { "resume" };
        if request.all != request.jobs.is_empty() {
            return Err(format!(
                "{verb} needs job names or all: {{\"v\":1,\"cmd\":\"{verb}\",\"jobs\":[\"NAME\"]}} or {{\"v\":1,\"cmd\":\"{verb}\",\"all\":true}}"
            ));
        }
        if let Some(cluster) = &self.cluster {
            return self.pause_cluster(cluster, request, pause, uid).await;
        }
        let paused = self.dispatcher.paused();
        let targets: Vec<String> = if request.all {
            if pause {
                self.job_names().await?.into_iter().collect()
            } else {
                paused.list()
            }
        } else {
            let names = self.job_names().await?;
            // A paused job removed from the files can still be resumed.
            let known = |job: &String| names.contains(job) || (!pause && paused.is_paused(job));
            let unknown: Vec<&String> = request.jobs.iter().filter(|job| !known(job)).collect();
            if !unknown.is_empty() {
                let list: Vec<String> = unknown.iter().map(|j| format!("`{j}`")).collect();
                return Err(format!(
                    "no job named {} is loaded; nothing was {verb}d (`chime status` lists the jobs)",
                    list.join(", ")
                ));
            }
            request.jobs.clone()
        };
        let mut changed = Vec::new();
        let mut unchanged = Vec::new();
        for job in targets {
            let did = if pause {
                paused.pause(&job)
            } else {
                paused.resume(&job)
            };
            if did {
                if let Some(store) = &self.pauses {
                    (store.0)(&job, pause);
                }
                changed.push(job);
            } else {
                unchanged.push(job);
            }
        }
        let kept = if self.pauses.is_some() {
            "in the state store: kept across restarts and reloads"
        } else {
            "in memory only (--state-dir none): forgotten when the service restarts"
        };
        let (done, already) = if pause {
            ("paused", "already_paused")
        } else {
            ("resumed", "not_paused")
        };
        Ok(fields(
            json!({done: changed, already: unchanged, "kept": kept}),
        ))
    }

    /// With replicas: the pause is written to the cluster's database (with a
    /// notification to the others) before the answer; the local set follows at once.
    /// Without the database nothing changes, and the answer says why.
    async fn pause_cluster(
        &self,
        cluster: &crate::cluster::Cluster,
        request: &Request,
        pause: bool,
        uid: u32,
    ) -> Answer {
        let verb = if pause { "pause" } else { "resume" };
        let unreachable = |err: String| {
            format!(
                "cannot {verb} across the replicas: {err}; nothing was {verb}d (pauses live in the cluster database; try again when it is reachable)"
            )
        };
        let targets: Option<Vec<String>> = if request.all {
            if pause {
                Some(self.job_names().await?.into_iter().collect())
            } else {
                None
            }
        } else {
            let names = self.job_names().await?;
            // A paused job removed from the files can still be resumed.
            let stored: BTreeSet<String> = if pause {
                BTreeSet::new()
            } else {
                cluster
                    .paused_jobs()
                    .await
                    .map_err(unreachable)?
                    .into_iter()
                    .collect()
            };
            let unknown: Vec<String> = request
                .jobs
                .iter()
                .filter(|job| !names.contains(*job) && !stored.contains(*job))
                .map(|job| format!("`{job}`"))
                .collect();
            if !unknown.is_empty() {
                return Err(format!(
                    "no job named {} is loaded; nothing was {verb}d (`chime status` lists the jobs)",
                    unknown.join(", ")
                ));
            }
            Some(request.jobs.clone())
        };
        let changed = cluster
            .set_paused(targets.as_deref(), pause, uid)
            .await
            .map_err(unreachable)?;
        // The database now holds the targets as asked: so does this replica, at once
        // (the notification comes to it too, and finds nothing more to do).
        let paused = self.dispatcher.paused();
        match &targets {
            Some(targets) => {
                for job in targets {
                    if pause {
                        paused.pause(job);
                    } else {
                        paused.resume(job);
                    }
                }
            }
            None => {
                paused.set_all(BTreeSet::new());
            }
        }
        let unchanged: Vec<&String> = targets
            .iter()
            .flatten()
            .filter(|job| !changed.contains(job))
            .collect();
        let (done, already) = if pause {
            ("paused", "already_paused")
        } else {
            ("resumed", "not_paused")
        };
        Ok(fields(json!({
            done: changed,
            already: unchanged,
            "kept": "in the cluster database: shared by every replica, kept across restarts",
        })))
    }

    async fn kill(&self, request: &Request, uid: u32) -> Answer {
        let Some(target) = request.target.clone() else {
            return Err("kill needs a run id or a job: {\"v\":1,\"cmd\":\"kill\",\"target\":\"RUN_ID|JOB\"}".into());
        };
        let live = self.dispatcher.live();
        let runs = match live.get(&target) {
            Some(run) => vec![run],
            None => live.of_job(&target),
        };
        // Runs of other replicas: asked of their owners through the database.
        let remote = match &self.cluster {
            Some(cluster) if live.get(&target).is_none() => {
                Some(cluster.request_kill(&target, uid).await)
            }
            _ => None,
        };
        if let Some(remote) = remote {
            return self.kill_across(target, uid, runs, remote).await;
        }
        if runs.is_empty() {
            return Err(if self.job_names().await?.contains(&target) {
                format!("`{target}` has no run in flight; nothing was killed")
            } else {
                format!("no run or job named `{target}`; `chime status` lists the runs in flight")
            });
        }
        let killed: Vec<Value> = runs
            .iter()
            .filter(|run| run.kill(uid))
            .map(|run| json!({"run_id": &*run.run_id, "job": &*run.job, "pid": run.pid()}))
            .collect();
        if killed.is_empty() {
            return Err(format!("`{target}` is being killed already"));
        }
        Ok(fields(json!({"killed": killed})))
    }

    /// A kill with replicas: this replica's runs are killed here, the others' asked of
    /// their owners; the answer waits a few seconds to say whether each request was
    /// taken and the run ended.
    async fn kill_across(
        &self,
        target: String,
        uid: u32,
        local: Vec<Arc<crate::run::LiveRun>>,
        remote: Result<Vec<crate::cluster::RemoteRun>, String>,
    ) -> Answer {
        let remote = match remote {
            Ok(remote) => remote,
            Err(err) if local.is_empty() => {
                return Err(format!(
                    "no run of `{target}` is in flight on this replica, and the others' runs cannot be looked up: {err}; nothing was killed"
                ));
            }
            Err(err) => {
                tracing::warn!(error = %err, "kill: the other replicas' runs cannot be looked up");
                Vec::new()
            }
        };
        if local.is_empty() && remote.is_empty() {
            return Err(if self.job_names().await?.contains(&target) {
                format!("`{target}` has no run in flight on any replica; nothing was killed")
            } else {
                format!(
                    "no run or job named `{target}` is in flight on any replica; `chime status` lists the runs in flight"
                )
            });
        }
        let killed: Vec<Value> = local
            .iter()
            .filter(|run| run.kill(uid))
            .map(|run| json!({"run_id": &*run.run_id, "job": &*run.job, "pid": run.pid()}))
            .collect();
        let Some(cluster) = &self.cluster else {
            return Ok(fields(json!({"killed": killed})));
        };
        let ids: Vec<String> = remote.iter().map(|r| r.run_id.clone()).collect();
        let mut progress = Vec::new();
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        while !ids.is_empty() {
            match cluster.kill_progress(&ids).await {
                Ok(now) => progress = now,
                Err(err) => {
                    tracing::warn!(error = %err, "kill: following the requests");
                }
            }
            let all_ended =
                progress.len() == ids.len() && progress.iter().all(|p| p.status != "running");
            if all_ended || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let requested: Vec<Value> = remote
            .iter()
            .map(|run| {
                let seen = progress.iter().find(|p| p.run_id == run.run_id);
                let status = seen.map_or("running", |p| p.status.as_str());
                json!({
                    "run_id": run.run_id,
                    "job": run.job,
                    "member": run.member,
                    "pid": run.pid,
                    "delivered": seen.is_some_and(|p| p.delivered),
                    "ended": status != "running",
                    "outcome": (status != "running").then_some(status),
                })
            })
            .collect();
        Ok(fields(json!({"killed": killed, "requested": requested})))
    }

    async fn status(&self) -> Map<String, Value> {
        let mut answer = self.local_status();
        let Some(cluster) = &self.cluster else {
            return answer;
        };
        let member = cluster.member().to_string();
        let mut running: Vec<Value> = answer
            .remove("running")
            .and_then(|r| match r {
                Value::Array(runs) => Some(runs),
                _ => None,
            })
            .unwrap_or_default();
        for run in &mut running {
            if let Value::Object(run) = run {
                run.insert("member".into(), json!(member));
            }
        }
        match cluster.remote_runs().await {
            Ok(remote) => running.extend(remote.into_iter().map(|run| {
                json!({
                    "job": run.job,
                    "run_id": run.run_id,
                    "trigger": run.trigger,
                    "scheduled_at": events::rfc3339(run.scheduled_at),
                    "started": run.started.map(events::rfc3339),
                    "elapsed_ms": run.elapsed_ms,
                    "pid": run.pid,
                    "member": run.member,
                })
            })),
            Err(err) => {
                answer.insert("cluster_error".into(), json!(err));
            }
        }
        answer.insert("running".into(), Value::Array(running));
        answer.insert("member".into(), json!(member));
        answer.insert("pauses_kept".into(), json!("cluster database"));
        answer
    }

    fn local_status(&self) -> Map<String, Value> {
        let clock = self.dispatcher.clock();
        let now = clock.steady();
        let running: Vec<Value> = self
            .dispatcher
            .live()
            .all()
            .iter()
            .map(|run| {
                json!({
                    "job": &*run.job,
                    "run_id": &*run.run_id,
                    "trigger": run.trigger.as_str(),
                    "scheduled_at": events::rfc3339(run.scheduled_at),
                    "started": events::rfc3339(run.started),
                    "elapsed_ms": now.saturating_sub(run.started_steady).as_millis() as u64,
                    "pid": run.pid(),
                })
            })
            .collect();
        fields(json!({
            "running": running,
            "paused": self.dispatcher.paused().list(),
            "pauses_kept": if self.pauses.is_some() { "state store" } else { "memory" },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_allowed_are_root_the_service_and_its_group() {
        let allowed = Allowed { uid: 990, gid: 990 };
        let peer = |uid, gid| Peer {
            uid,
            gid,
            pid: None,
        };
        assert!(allowed.admits(peer(0, 0)));
        assert!(allowed.admits(peer(990, 1)));
        assert!(allowed.admits(peer(1000, 990)));
        assert!(!allowed.admits(peer(65534, 65534)));
        // Our own process's supplementary groups are read from /proc.
        let me = Peer {
            uid: 65534,
            gid: 65534,
            pid: Some(std::process::id() as i32),
        };
        let groups = supplementary_groups(std::process::id() as i32);
        if let Some(&group) = groups.first() {
            assert!(Allowed { uid: 1, gid: group }.admits(me));
        }
    }
}
