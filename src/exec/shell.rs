//! Shell executor: one attempt of a shell job, run as its own process group.
//!
//! The attempt's process is the leader of a new process group, so that everything it
//! starts (pipelines, background jobs, their children) can be signalled as one unit:
//! on timeout or cancellation the whole group gets SIGTERM, then SIGKILL after the
//! job's `kill_grace` (DESIGN.md §4). `kill_on_drop` would reach the leader only.
//!
//! The normal wait does not poll: it is a `select!` over the leader's exit, the
//! deadline and the cancel token. Polling (every [`TERM_POLL`]) happens only while
//! terminating, to notice when the group has no live member left.
//!
//! When the leader exits on its own, members it left behind in the group (`cmd &`)
//! are orphans of this run: after [`LINGER`] they are terminated the same way, so no
//! run leaves processes in its group. Their fate does not change the outcome, which
//! is the leader's. A process that left the group (`setsid`) is out of reach; if it
//! still holds the output pipes, reading stops [`LINGER`] after the group is gone, so
//! it cannot hang the run (it gets EPIPE if it writes afterwards).
//!
//! Output is read concurrently from both pipes and handed to the [`OutputSink`] line
//! by line as it arrives; a line that grows past [`MAX_LINE_BYTES`] without a newline
//! is passed on in pieces, so memory stays bounded. The pipes are read to the end
//! whatever the sink keeps, so a chatty job never blocks on a full pipe.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::{
    Attempt, AttemptResult, MAX_LINE_BYTES, OutputSink, StartNotice, environment, identity,
};
use crate::events::{ExitDetail, Outcome, Stream};
use crate::job::{Action, ShellCommand};

/// While terminating, how often to check whether the group has emptied.
const TERM_POLL: Duration = Duration::from_millis(15);

/// After the leader exits (or the group is gone), how long the pipes may stay open
/// before chime acts: members still running are terminated, and a reader still
/// waiting for EOF (a process outside the group holds the pipe) is stopped.
const LINGER: Duration = Duration::from_millis(100);

/// After SIGKILL, how long to wait for the group to die before giving up on it. Only
/// a process stuck in the kernel (uninterruptible sleep) takes longer.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// How much is read from a pipe at once.
const READ_CHUNK: usize = 8 * 1024;

/// Runs one attempt of a shell job to its end; see the module documentation.
pub async fn execute(attempt: Attempt, output: Arc<OutputSink>) -> AttemptResult {
    execute_announced(attempt, output, StartNotice::silent()).await
}

/// [`execute`], announcing the start through `start` once the process is spawned (or
/// its spawn failed). The spawn itself happens on a spawner thread
/// ([`super::spawner`]), never on the runtime's workers.
pub async fn execute_announced(
    attempt: Attempt,
    output: Arc<OutputSink>,
    start: StartNotice,
) -> AttemptResult {
    if !matches!(attempt.job.action, Action::Shell(_)) {
        return AttemptResult::failure(error_detail("not a shell job".to_owned()), false);
    }
    // Shutdown or `replace` may have come before the process: then there is no point
    // in starting it only to terminate it.
    if attempt.cancel.is_cancelled() {
        start.now();
        return AttemptResult::with_outcome(
            Outcome::Cancelled,
            error_detail("cancelled before start".to_owned()),
        );
    }
    let (attempt, spawned) = match spawn_off_runtime(attempt, start).await {
        Some(done) => done,
        None => {
            let message = "cannot start the job: the spawner thread failed".to_owned();
            return AttemptResult::failure(error_detail(message), true);
        }
    };
    let (program, mut child) = match spawned {
        Ok(spawned) => spawned,
        Err(Some(message)) => return AttemptResult::failure(error_detail(message), true),
        Err(None) => {
            return AttemptResult::with_outcome(
                Outcome::Cancelled,
                error_detail("cancelled before start".to_owned()),
            );
        }
    };
    // A child not yet waited for always has a pid, and a pid always fits in pid_t;
    // should either ever fail, the attempt fails instead of the service.
    let Some((pid, pgid)) = child
        .id()
        .and_then(|pid| Some((pid, libc::pid_t::try_from(pid).ok()?)))
    else {
        let message = format!("cannot start `{program}`: its process has no pid");
        return AttemptResult::failure(error_detail(message), true);
    };
    output.set_pid(pid);

    let stop_reading = CancellationToken::new();
    let readers = tokio::spawn(pump_both(
        child.stdout.take(),
        child.stderr.take(),
        output,
        stop_reading.clone(),
    ));
    let mut group = Group {
        pgid,
        child,
        leader: None,
        readers: Some(readers),
        guard: DropGuard {
            pgid: Some(pgid),
            stop_reading,
        },
        job: &attempt.job.name,
        run_id: &attempt.run_id,
    };

    let deadline = attempt.deadline;
    let ending = tokio::select! {
        // The leader's exit wins a tie: an attempt that finished just as its deadline
        // passed is not a timeout.
        biased;
        status = group.child.wait() => Ending::Exited(status),
        () = attempt.cancel.cancelled() => Ending::Terminated(Outcome::Cancelled),
        () = expiry(deadline) => Ending::Terminated(Outcome::Timeout),
    };

    match ending {
        Ending::Exited(Ok(status)) => {
            group.leader = Some(status);
            group.after_leader_exit(attempt.job.kill_grace).await;
            result_from_status(status)
        }
        Ending::Exited(Err(err)) => {
            // Without the leader's status the attempt cannot be judged; make sure
            // nothing of it keeps running.
            group.terminate(attempt.job.kill_grace).await;
            group.finish_output().await;
            let message = format!("cannot wait for `{program}`: {}", describe(&err));
            AttemptResult::failure(error_detail(message), true)
        }
        Ending::Terminated(outcome) => {
            let signal = group.terminate(attempt.job.kill_grace).await;
            group.finish_output().await;
            let detail = ExitDetail {
                exit_code: group.leader.and_then(|s| s.code()),
                signal: Some(signal),
                ..ExitDetail::default()
            };
            AttemptResult::with_outcome(outcome, detail)
        }
    }
}

enum Ending {
    Exited(io::Result<ExitStatus>),
    Terminated(Outcome),
}

/// Sleeps until the deadline, or forever without one.
async fn expiry(deadline: Option<Instant>) {
    match deadline {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Spawns the attempt's process on a spawner thread, in the runtime of the caller
/// (its pipes and its exit are then watched by that runtime), and announces the start
/// there, at the moment of the spawn. The attempt comes back with the spawned child
/// and the program's name, or the error message (`None`: cancelled while it waited
/// for a spawner thread, so not started). `None` if the spawner lost the task.
async fn spawn_off_runtime(attempt: Attempt, start: StartNotice) -> Option<(Attempt, Spawned)> {
    let runtime = tokio::runtime::Handle::current();
    let (done, spawned) = tokio::sync::oneshot::channel();
    super::spawner::submit(Box::new(move || {
        let _runtime = runtime.enter();
        let result = if attempt.cancel.is_cancelled() {
            Err(None)
        } else {
            spawn(&attempt).map_err(Some)
        };
        start.spawned(result.as_ref().ok().and_then(|(_, child)| child.id()));
        // The run's task may be gone (its runtime shutting down): then the child is
        // dropped, and tokio's orphan reaper reaps it when it exits.
        let _ = done.send((attempt, result));
    }));
    spawned.await.ok()
}

/// What a spawn task gives back: see [`spawn_off_runtime`].
type Spawned = Result<(String, Child), Option<String>>;

/// Builds and spawns the attempt's process: the program's name (for messages) and the
/// child, or why it could not start.
fn spawn(attempt: &Attempt) -> Result<(String, Child), String> {
    let Action::Shell(shell) = &attempt.job.action else {
        return Err("not a shell job".to_owned());
    };
    let (program, mut command) = build_command(shell, attempt)?;
    match command.spawn() {
        Ok(child) => Ok((program, child)),
        Err(err) => {
            let workdir = attempt.job.workdir.as_deref();
            Err(attempt
                .job
                .run_as
                .as_ref()
                .and_then(|run_as| identity::spawn_error(&program, run_as, workdir, &err))
                .unwrap_or_else(|| spawn_error(&program, workdir, &err)))
        }
    }
}

/// The command for `shell`, with its environment, directory and stdio, and the name
/// of the program for error messages (switched to the job's `user:` / `group:` in the
/// child before exec, issue 13); or why it cannot be started (an empty argv,
/// which config rejects; a program not found in the job's `PATH`).
///
/// The program is always given to [`Command`] as a path (a bare name is looked up in
/// the job's `PATH` here), and only a job with `user:` / `group:` needs a `pre_exec`
/// closure: so the standard library spawns the others with `posix_spawn` (clone3 with `CLONE_VM | CLONE_VFORK`), never
/// with a `fork` that copies the page tables of a service holding 100,000 jobs.
fn build_command(shell: &ShellCommand, attempt: &Attempt) -> Result<(String, Command), String> {
    let env = environment::for_attempt(attempt, std::env::vars_os());
    let workdir = attempt.job.workdir.as_deref();
    let (program, mut command) = match shell {
        ShellCommand::Script(script) => {
            let mut command = Command::new("/bin/sh");
            command.arg("-c").arg(script);
            ("/bin/sh".to_owned(), command)
        }
        ShellCommand::Argv(argv) => {
            let Some((first, rest)) = argv.split_first() else {
                return Err("empty command".to_owned());
            };
            let path = env
                .iter()
                .rev()
                .find(|(key, _)| key == "PATH")
                .map(|(_, value)| value.as_os_str());
            let resolved = resolve_program(OsStr::new(first), path, workdir)
                .map_err(|err| spawn_error(first, workdir, &err))?;
            let mut command = Command::new(resolved);
            // The program sees the name it was given as its argv[0], as with execvp.
            command.arg0(first).args(rest);
            (first.clone(), command)
        }
    };
    // Issue 13: a clean environment (exec::environment) and the job's `user:` /
    // `group:` (exec::identity), switched to in the child before exec.
    command
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(dir) = workdir {
        command.current_dir(dir);
    }
    if let Some(run_as) = &attempt.job.run_as {
        let switch =
            identity::Switch::prepare(run_as, attempt.job.workdir.as_deref()).map_err(|err| {
                format!(
                    "cannot prepare to run as {}: {}",
                    identity::describe(run_as),
                    describe(&err)
                )
            })?;
        // SAFETY: `apply` makes only system calls on memory prepared before the fork.
        unsafe {
            command.pre_exec(move || switch.apply());
        }
    }
    Ok((program, command))
}

/// Where `program` is, as `execvp` would find it with the job's `PATH` (`path`; the
/// C library's default `/bin:/usr/bin` without one): a name with a `/` is used as
/// it is, a bare name is the first executable regular file of that name in the
/// `PATH`'s directories. Relative directories are taken from the job's `workdir`,
/// where the job runs. Not found is `ENOENT`; found but never executable, `EACCES`.
pub fn resolve_program(
    program: &OsStr,
    path: Option<&OsStr>,
    workdir: Option<&Path>,
) -> io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;

    if program.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    if program.as_encoded_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    let path = path.unwrap_or(OsStr::new("/bin:/usr/bin"));
    let mut denied = false;
    for dir in std::env::split_paths(path) {
        // An empty entry is the current directory, as with execvp.
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let dir = match workdir {
            Some(workdir) if dir.is_relative() => workdir.join(dir),
            _ => dir,
        };
        let candidate = dir.join(program);
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
                return Ok(candidate);
            }
            Ok(_) => denied = true,
            Err(_) => {}
        }
    }
    let code = if denied { libc::EACCES } else { libc::ENOENT };
    Err(io::Error::from_raw_os_error(code))
}

/// Marks every descriptor above stderr that this process inherited as close-on-exec,
/// so that jobs get none of them (what chime opens itself is close-on-exec already).
/// Called once at startup, before any thread or descriptor of chime's own exists.
pub fn close_inherited_on_exec() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<libc::c_int> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD only read and set the descriptor's flag; a descriptor
        // that is no longer open (the one `read_dir` used) makes them fail harmlessly.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// "cannot start `x`: No such file or directory", naming the workdir when that is
/// what is missing (spawn reports ENOENT for both).
fn spawn_error(program: &str, workdir: Option<&Path>, err: &io::Error) -> String {
    match workdir {
        Some(dir) if !dir.is_dir() => format!(
            "cannot start `{program}`: workdir `{}`: {}",
            dir.display(),
            describe(err)
        ),
        _ => format!("cannot start `{program}`: {}", describe(err)),
    }
}

/// An I/O error's message without std's " (os error N)" suffix, which only repeats
/// the message as a number.
fn describe(err: &io::Error) -> String {
    let text = err.to_string();
    match err.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .map_or_else(|| text.clone(), str::to_owned),
        None => text,
    }
}

fn error_detail(error: String) -> ExitDetail {
    ExitDetail {
        error: Some(error),
        ..ExitDetail::default()
    }
}

/// How the leader ended on its own: exit 0, another code, or a signal from someone
/// other than chime.
fn result_from_status(status: ExitStatus) -> AttemptResult {
    use std::os::unix::process::ExitStatusExt;

    match (status.code(), status.signal()) {
        (Some(0), _) => AttemptResult::success(ExitDetail {
            exit_code: Some(0),
            ..ExitDetail::default()
        }),
        (Some(code), _) => AttemptResult::failure(
            ExitDetail {
                exit_code: Some(code),
                ..ExitDetail::default()
            },
            true,
        ),
        (None, signal) => AttemptResult::with_outcome(
            Outcome::Killed,
            ExitDetail {
                signal,
                ..ExitDetail::default()
            },
        ),
    }
}

/// A running attempt: the leader, its group and the output readers.
struct Group<'a> {
    pgid: libc::pid_t,
    child: Child,
    /// The leader's status once reaped.
    leader: Option<ExitStatus>,
    /// The task reading both pipes; `None` once it has finished.
    readers: Option<JoinHandle<()>>,
    guard: DropGuard,
    job: &'a str,
    run_id: &'a str,
}

impl Group<'_> {
    /// The leader exited by itself: give its pipes a moment to close, clean up what it
    /// left running in the group, then collect the rest of the output.
    async fn after_leader_exit(&mut self, grace: Duration) {
        let drained = self.wait_readers(LINGER).await;
        if group_has_live_members(self.pgid).await {
            tracing::warn!(
                job = self.job,
                run_id = self.run_id,
                pgid = self.pgid,
                "job exited leaving processes in its group; terminating them"
            );
            self.terminate(grace).await;
        } else {
            self.guard.disarm();
        }
        if !drained {
            self.finish_output().await;
        }
    }

    /// SIGTERM the group, wait up to `grace` for it to be gone, then SIGKILL it.
    /// Returns the last signal sent. Afterwards the leader is reaped (unless the
    /// kernel would not let it die within [`KILL_WAIT`]).
    async fn terminate(&mut self, grace: Duration) -> i32 {
        signal_group(self.pgid, libc::SIGTERM);
        // A stopped member would hold SIGTERM pending until the grace runs out; let it
        // act on it now, as systemd does.
        signal_group(self.pgid, libc::SIGCONT);
        let mut sent = libc::SIGTERM;
        if !self.wait_gone(Instant::now() + grace).await {
            signal_group(self.pgid, libc::SIGKILL);
            sent = libc::SIGKILL;
            if !self.wait_gone(Instant::now() + KILL_WAIT).await {
                // Dropping the child later hands the leader to tokio's orphan reaper,
                // so it is still reaped once it dies.
                tracing::warn!(
                    job = self.job,
                    run_id = self.run_id,
                    pgid = self.pgid,
                    "process group survived SIGKILL; giving up on it"
                );
            }
        }
        // Gone, or SIGKILL already sent: nothing left for the drop guard to do, and
        // once the group is gone its id may be reused.
        self.guard.disarm();
        sent
    }

    /// Whether the leader has been reaped and no member of the group is alive, by
    /// `until`. Polls: this runs only while terminating.
    async fn wait_gone(&mut self, until: Instant) -> bool {
        loop {
            if self.leader.is_none() {
                // An error means the child was already reaped; there is nothing to wait for.
                match self.child.try_wait() {
                    Ok(Some(status)) => self.leader = Some(status),
                    Ok(None) => {}
                    Err(_) => return !group_has_live_members(self.pgid).await,
                }
            }
            if self.leader.is_some() && !group_has_live_members(self.pgid).await {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            sleep((until - now).min(TERM_POLL)).await;
        }
    }

    /// Waits for the readers to reach EOF on both pipes, up to `limit`.
    async fn wait_readers(&mut self, limit: Duration) -> bool {
        let Some(readers) = self.readers.as_mut() else {
            return true;
        };
        // A reader that panicked has nothing more to give either.
        if timeout(limit, readers).await.is_ok() {
            self.readers = None;
            true
        } else {
            false
        }
    }

    /// Once the group is gone, only a process that left it can still hold the pipes:
    /// give the readers [`LINGER`] to finish, then stop them.
    async fn finish_output(&mut self) {
        if self.wait_readers(LINGER).await {
            return;
        }
        self.guard.stop_reading.cancel();
        // Stopping is prompt (the readers check the token before every read); the
        // bound only keeps a bug there from hanging the run.
        if !self.wait_readers(LINGER).await
            && let Some(readers) = self.readers.take()
        {
            readers.abort();
        }
    }
}

/// If the attempt's future is dropped mid-run (its task aborted), the group would run
/// on unsupervised: kill it outright and stop reading its output.
struct DropGuard {
    /// `None` once the group needs no more signals.
    pgid: Option<libc::pid_t>,
    stop_reading: CancellationToken,
}

impl DropGuard {
    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            signal_group(pgid, libc::SIGKILL);
        }
        self.stop_reading.cancel();
    }
}

/// Sends `signal` to every process of group `pgid`.
fn signal_group(pgid: libc::pid_t, signal: i32) {
    // kill(-1) would signal every process chime may signal, and kill(0) chime's own
    // group: never let a bad id get there.
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and has no memory-safety preconditions.
    // ESRCH (group already gone) is the only expected failure and needs no handling.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Whether any process of group `pgid` is still alive.
///
/// `kill(-pgid, 0)` succeeds while the group has any member, including zombies. The
/// leader is reaped by chime, but members re-parented to init are reaped by init, on
/// its own schedule or (chime as a container's PID 1) never; a zombie holds no pipe
/// and runs no code, so on Linux the members are looked up in /proc and zombies are
/// not counted. EPERM (a member changed its user) counts as alive.
async fn group_has_live_members(pgid: libc::pid_t) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: as in `signal_group`; signal 0 only checks for existence.
    let result = unsafe { libc::kill(-pgid, 0) };
    if result != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return false;
    }
    // Reading /proc is a few syscalls per process on the host: off the async threads.
    tokio::task::spawn_blocking(move || proc_scan::live_member(pgid).unwrap_or(true))
        .await
        .unwrap_or(true)
}

mod proc_scan {
    //! Process-group membership from Linux's /proc.

    use std::fs;

    /// Whether a non-zombie process of group `pgid` exists; `None` when /proc cannot
    /// tell (not Linux, not mounted).
    pub(super) fn live_member(pgid: libc::pid_t) -> Option<bool> {
        let entries = fs::read_dir("/proc").ok()?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            // A process that exits between listing and reading is simply not alive.
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if let Some((state, group)) = parse_stat(&stat)
                && group == pgid
                && !matches!(state, 'Z' | 'X' | 'x')
            {
                return Some(true);
            }
        }
        Some(false)
    }

    /// The state letter and process group from a `/proc/<pid>/stat` line:
    /// `pid (comm) state ppid pgrp …`, where comm may itself hold spaces and parens.
    pub(super) fn parse_stat(stat: &str) -> Option<(char, libc::pid_t)> {
        let (_, rest) = stat.rsplit_once(')')?;
        let mut fields = rest.split_ascii_whitespace();
        let state = fields.next()?.chars().next()?;
        let _ppid = fields.next()?;
        let pgrp = fields.next()?.parse().ok()?;
        Some((state, pgrp))
    }
}

/// Reads both pipes to EOF (or until told to stop), concurrently.
async fn pump_both<O, E>(
    stdout: Option<O>,
    stderr: Option<E>,
    output: Arc<OutputSink>,
    stop: CancellationToken,
) where
    O: AsyncRead + Unpin,
    E: AsyncRead + Unpin,
{
    tokio::join!(
        pump(stdout, Stream::Stdout, &output, &stop),
        pump(stderr, Stream::Stderr, &output, &stop),
    );
}

async fn pump<R: AsyncRead + Unpin>(
    pipe: Option<R>,
    stream: Stream,
    output: &OutputSink,
    stop: &CancellationToken,
) {
    let Some(mut pipe) = pipe else {
        return;
    };
    let mut buf = vec![0u8; READ_CHUNK];
    let mut lines = LineSplitter::default();
    let mut emit = |line: &[u8]| output.line(stream, line);
    loop {
        let read = tokio::select! {
            // Stop first: a writer outside the group could keep the pipe always ready.
            biased;
            () = stop.cancelled() => break,
            read = pipe.read(&mut buf) => read,
        };
        match read {
            Ok(0) => break,
            Ok(n) => lines.push(&buf[..n], &mut emit),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            // A pipe read does not fail in practice; if it does there is no more output.
            Err(_) => break,
        }
    }
    lines.finish(&mut emit);
}

/// Cuts a byte stream into lines without holding more than [`MAX_LINE_BYTES`] of an
/// unfinished one: a longer line goes out in pieces as it arrives.
#[derive(Debug, Default)]
struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, mut data: &[u8], emit: &mut impl FnMut(&[u8])) {
        while let Some(newline) = data.iter().position(|&b| b == b'\n') {
            let (line, rest) = (&data[..newline], &data[newline + 1..]);
            if self.pending.is_empty() {
                emit(line);
            } else {
                self.pending.extend_from_slice(line);
                emit(&self.pending);
                self.pending.clear();
            }
            data = rest;
        }
        self.pending.extend_from_slice(data);
        // Strictly more than a piece: a line of exactly MAX_LINE_BYTES whose newline is
        // still in flight stays whole instead of being followed by an empty line.
        while self.pending.len() > MAX_LINE_BYTES {
            emit(&self.pending[..MAX_LINE_BYTES]);
            self.pending.drain(..MAX_LINE_BYTES);
        }
    }

    /// Flushes an unterminated last line.
    fn finish(&mut self, emit: &mut impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
            self.pending.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut splitter = LineSplitter::default();
        let mut emit = |l: &[u8]| out.push(l.to_vec());
        for chunk in chunks {
            splitter.push(chunk, &mut emit);
        }
        splitter.finish(&mut emit);
        out
    }

    #[test]
    fn lines_are_reassembled_across_chunks() {
        let got = split(&[b"ab", b"c\nde", b"\n\nf"]);
        assert_eq!(got, [&b"abc"[..], b"de", b"", b"f"]);
    }

    #[test]
    fn a_long_line_goes_out_in_pieces_before_its_newline() {
        let mut out = Vec::new();
        let mut splitter = LineSplitter::default();
        splitter.push(&vec![b'a'; MAX_LINE_BYTES * 2 + 1], &mut |l: &[u8]| {
            out.push(l.len())
        });
        assert_eq!(out, [MAX_LINE_BYTES, MAX_LINE_BYTES]);
        assert_eq!(splitter.pending.len(), 1);
    }

    #[test]
    fn a_line_of_exactly_the_limit_stays_whole() {
        let line = vec![b'a'; MAX_LINE_BYTES];
        let got = split(&[&line, b"\nb\n"]);
        assert_eq!(got, [line, b"b".to_vec()]);
    }

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let stat = "1234 (a) b (c) S 1 777 777 0 -1 4194560";
        assert_eq!(proc_scan::parse_stat(stat), Some(('S', 777)));
        assert_eq!(proc_scan::parse_stat("garbage"), None);
    }

    #[test]
    fn programs_are_resolved_as_execvp_would() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let (bin, plain, rel) = (dir.path().join("bin"), dir.path().join("plain"), "rel");
        for sub in [&bin, &plain, &dir.path().join(rel)] {
            std::fs::create_dir(sub).unwrap();
        }
        let write = |path: PathBuf, mode: u32| {
            std::fs::write(&path, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        let tool = write(bin.join("tool"), 0o755);
        write(plain.join("tool"), 0o644);
        let noexec = write(plain.join("noexec"), 0o644);
        let local = write(dir.path().join(rel).join("local"), 0o700);
        let path = std::env::join_paths([&plain, &bin, Path::new(rel)]).unwrap();
        let resolve = |program: &str| {
            resolve_program(OsStr::new(program), Some(&path), Some(dir.path()))
                .map_err(|e| e.raw_os_error())
        };
        // Not executable in the first directory: the next one's.
        assert_eq!(resolve("tool"), Ok(tool));
        assert_eq!(resolve("noexec"), Err(Some(libc::EACCES)));
        assert_eq!(resolve("missing"), Err(Some(libc::ENOENT)));
        // A relative entry is taken from the workdir.
        assert_eq!(resolve("local"), Ok(local));
        // A name with a slash is used as given.
        assert_eq!(resolve("./x/y"), Ok(PathBuf::from("./x/y")));
        assert_eq!(resolve(noexec.to_str().unwrap()), Ok(noexec));
        // Without a PATH, the C library's default.
        assert_eq!(
            resolve_program(OsStr::new("sh"), None, None).ok(),
            Some(PathBuf::from("/bin/sh"))
        );
    }

    #[test]
    fn io_errors_lose_the_os_error_suffix() {
        let err = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(
            spawn_error("x", None, &err),
            "cannot start `x`: No such file or directory"
        );
        assert_eq!(
            spawn_error("x", Some(Path::new("/no/such/dir")), &err),
            "cannot start `x`: workdir `/no/such/dir`: No such file or directory"
        );
    }
}
