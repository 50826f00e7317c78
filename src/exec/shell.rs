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

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::{Attempt, AttemptResult, MAX_LINE_BYTES, OutputSink};
use crate::events::{ExitDetail, Outcome, Stream, rfc3339};
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

/// The environment variables systemd hands to the service itself. A job inheriting
/// them could notify or claim sockets on the service's behalf.
const SERVICE_ONLY_VARS: &[&str] = &["NOTIFY_SOCKET"];
const SERVICE_ONLY_PREFIXES: &[&str] = &["WATCHDOG_", "LISTEN_"];

/// Runs one attempt of a shell job to its end; see the module documentation.
pub async fn execute(attempt: Attempt, output: Arc<OutputSink>) -> AttemptResult {
    let Action::Shell(command) = &attempt.job.action else {
        return AttemptResult::failure(error_detail("not a shell job".to_owned()), false);
    };
    // Shutdown or `replace` may have come before the process: then there is no point
    // in starting it only to terminate it.
    if attempt.cancel.is_cancelled() {
        return AttemptResult::with_outcome(
            Outcome::Cancelled,
            error_detail("cancelled before start".to_owned()),
        );
    }
    let Some((program, mut command)) = build_command(command, &attempt) else {
        return AttemptResult::failure(error_detail("empty command".to_owned()), false);
    };
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            let message = spawn_error(&program, attempt.job.workdir.as_deref(), &err);
            return AttemptResult::failure(error_detail(message), true);
        }
    };
    let pid = child
        .id()
        .expect("a child that has not been waited for has a pid");
    let pgid = libc::pid_t::try_from(pid).expect("a pid fits in pid_t");
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

/// The command for `shell`, with its environment, directory and stdio, and the name
/// of the program for error messages. `None` for an empty argv (config rejects it).
fn build_command(shell: &ShellCommand, attempt: &Attempt) -> Option<(String, Command)> {
    let (program, mut command) = match shell {
        ShellCommand::Script(script) => {
            let mut command = Command::new("/bin/sh");
            command.arg("-c").arg(script);
            ("/bin/sh".to_owned(), command)
        }
        ShellCommand::Argv(argv) => {
            let (first, rest) = argv.split_first()?;
            let mut command = Command::new(first);
            command.args(rest);
            (first.clone(), command)
        }
    };
    command
        .env_clear()
        .envs(child_env(std::env::vars_os(), attempt))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(dir) = &attempt.job.workdir {
        command.current_dir(dir);
    }
    Some((program, command))
}

/// The job's environment: the service's own (`base`) minus what systemd meant for the
/// service alone, then the job's `env`, then the `CHIME_*` values, which a job's `env`
/// cannot override because the run's identity must be trustworthy.
fn child_env(
    base: impl Iterator<Item = (OsString, OsString)>,
    attempt: &Attempt,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = base.filter(|(key, _)| !service_only(key)).collect();
    let job = &attempt.job;
    let chime = [
        ("CHIME_JOB", job.name.clone()),
        ("CHIME_RUN_ID", attempt.run_id.to_string()),
        ("CHIME_SCHEDULED_AT", rfc3339(attempt.scheduled_at)),
        ("CHIME_ATTEMPT", attempt.attempt.to_string()),
    ];
    let overrides = job
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .chain(chime);
    for (key, value) in overrides {
        env.retain(|(k, _)| k != key);
        env.push((key.into(), value.into()));
    }
    env
}

fn service_only(key: &OsStr) -> bool {
    let key = key.as_encoded_bytes();
    SERVICE_ONLY_VARS.iter().any(|v| key == v.as_bytes())
        || SERVICE_ONLY_PREFIXES
            .iter()
            .any(|p| key.starts_with(p.as_bytes()))
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
    use std::collections::BTreeMap;

    use crate::job::Job;

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

    fn attempt(env: &[(&str, &str)]) -> Attempt {
        let job = Job {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            kill_grace: Duration::from_secs(1),
            ..Job::new(
                "backup",
                "* * * * *",
                Action::Shell(ShellCommand::Script("true".into())),
            )
            .unwrap()
        };
        Attempt {
            job: Arc::new(job),
            run_id: "r1".into(),
            scheduled_at: "2024-03-01T02:03:04.5Z".parse().unwrap(),
            attempt: 2,
            deadline: None,
            cancel: CancellationToken::new(),
        }
    }

    #[test]
    fn systemd_variables_are_dropped_and_job_env_and_chime_values_win() {
        let base = [
            ("PATH", "/bin"),
            ("NOTIFY_SOCKET", "/run/notify"),
            ("WATCHDOG_USEC", "1000"),
            ("WATCHDOG_PID", "1"),
            ("LISTEN_FDS", "2"),
            ("LISTEN_PID", "1"),
            ("LISTEN_FDNAMES", "a:b"),
            ("LISTENER", "kept: not a systemd variable"),
            ("HOME", "/root"),
            ("CHIME_RUN_ID", "spoofed"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let attempt = attempt(&[("HOME", "/srv"), ("CHIME_JOB", "spoofed"), ("X", "1")]);
        let env: BTreeMap<String, String> = child_env(base.into_iter(), &attempt)
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect();
        let expected: BTreeMap<String, String> = [
            ("PATH", "/bin"),
            ("LISTENER", "kept: not a systemd variable"),
            ("HOME", "/srv"),
            ("X", "1"),
            ("CHIME_JOB", "backup"),
            ("CHIME_RUN_ID", "r1"),
            ("CHIME_SCHEDULED_AT", "2024-03-01T02:03:04.500Z"),
            ("CHIME_ATTEMPT", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(env, expected);
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
