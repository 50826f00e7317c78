//! Running as root safely (issue 13), against the real binary: schedule files others
//! could change are refused, jobs run as `user:` with their own uid, groups, pipes and
//! process group, the job environment is clean, and `${file:…}` / `${credential:…}`
//! secrets reach a real HTTP server on 127.0.0.1 but never the log.
//!
//! Tests that need root check `geteuid() == 0` and otherwise say on stderr that they
//! were skipped. Every wait is for an event, with a timeout.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use support::{
    Chime, LIMIT, command, is, name, process, run, service, temp_dir, wait_until, write,
};

fn root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped {test}: needs root");
    }
    root
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), None)
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

const NOBODY: u32 = 65534;

/// Every `run.output` line of `job` among `events`.
/// The job's stdout lines, in order (stderr is read by a pump of its own, so its
/// lines may come before or after them).
fn output_lines(events: &[Value], job: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| is(e, "run.output", job) && e["stream"] == "stdout")
        .map(|e| e["line"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The probe: `nobody` dropped a file into a 0777 schedule directory and its
/// `id` ran as root within a second. Now the directory and the file are refused, with
/// the `chmod` / `chown` that fixes them, by `check` and by `run`; the job never runs.
#[test]
fn a_file_nobody_planted_in_a_writable_directory_is_refused() {
    if !root("a_file_nobody_planted_in_a_writable_directory_is_refused") {
        return;
    }
    let outer = temp_dir();
    let dir = outer.path().join("schedules.d");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o777);
    let marker = outer.path().join("ran-as");
    let file = write(
        &dir,
        "evil.yaml",
        format!(
            "jobs:\n  evil:\n    schedule: \"@every 1s\"\n    command: id -u > {}\n",
            marker.display()
        ),
    );
    chown(&file, NOBODY);
    let dir_text = dir.display().to_string();

    let out = run(outer.path(), ["check", dir_text.as_str()], LIMIT);
    assert_eq!(out.code, Some(1), "{out:#?}");
    let errors = out.errors();
    assert_eq!(errors.len(), 2, "{out:#?}");
    assert!(
        errors[0].starts_with(&format!(
            "{dir_text}: is writable by group and others (mode 0777)"
        )),
        "{errors:#?}"
    );
    assert!(
        errors[0].contains(&format!("`chmod go-w {dir_text}`")),
        "{errors:#?}"
    );
    let file_text = file.display().to_string();
    assert!(
        errors[1].starts_with(&format!(
            "{file_text}: is owned by nobody (uid 65534), not root"
        )),
        "{errors:#?}"
    );
    assert!(
        errors[1].contains(&format!("`chown root {file_text}`")),
        "{errors:#?}"
    );
    assert!(errors[1].contains("--insecure-allow-writable-schedules"));

    // The service refuses to start on them: nothing runs.
    let out = service(outer.path(), &[]).arg(&dir).run(LIMIT);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(out.stderr.contains("chmod go-w"), "{out:#?}");
    assert!(!marker.exists(), "the planted job ran");

    // For a container whose mount cannot be fixed: warnings, and the files load.
    let out = run(
        outer.path(),
        [
            "check",
            "--insecure-allow-writable-schedules",
            dir_text.as_str(),
        ],
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{out:#?}");
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 2, "{out:#?}");
    assert!(warnings[0].contains("chmod go-w"), "{warnings:#?}");
}

/// A symlink into a directory others can write is judged by where it leads.
#[test]
fn a_symlink_into_a_writable_directory_is_refused() {
    if !root("a_symlink_into_a_writable_directory_is_refused") {
        return;
    }
    let outer = temp_dir();
    let open = outer.path().join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    let target = write(
        &open,
        "t.yaml",
        "jobs:\n  a:\n    schedule: \"@daily\"\n    command: \"true\"\n",
    );
    let dir = outer.path().join("schedules.d");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(&target, dir.join("a.yaml")).unwrap();
    let out = run(outer.path(), ["check".as_ref(), dir.as_os_str()], LIMIT);
    assert_eq!(out.code, Some(1), "{out:#?}");
    let errors = out.errors();
    assert_eq!(errors.len(), 1, "{out:#?}");
    assert!(errors[0].contains("through a symlink"), "{errors:#?}");
    assert!(
        errors[0].contains(&format!("`chmod go-w {}`", open.display())),
        "{errors:#?}"
    );
}

/// At reload an untrusted file is `config.rejected` with the fix, and the schedule
/// already running keeps firing; once fixed, SIGHUP loads it.
#[test]
fn a_reload_of_an_untrusted_file_is_rejected_and_the_old_schedule_keeps_running() {
    if !root("a_reload_of_an_untrusted_file_is_rejected_and_the_old_schedule_keeps_running") {
        return;
    }
    let dir = temp_dir();
    let file = write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  tick:\n    schedule: \"@every 1s\"\n    command: echo tick\n",
    );
    let mut chime = Chime::start(dir.path(), &[]);
    chime.wait_event("service.started", LIMIT);
    chime.wait_for("a first tick", LIMIT, |e| is(e, "run.finished", "tick"));

    // Others may now write it: the next reload is refused.
    chmod(&file, 0o666);
    chime.signal(libc::SIGHUP);
    let rejected = chime.wait_event("config.rejected", LIMIT);
    let text = rejected.to_string();
    assert!(
        text.contains("mode 0666") && text.contains("chmod go-w"),
        "{rejected}"
    );
    // The old schedule is still in force.
    let after = chime.wait_for("a tick after the rejection", LIMIT, |e| {
        is(e, "run.finished", "tick")
    });
    assert_eq!(after["outcome"], "success", "{after}");

    chmod(&file, 0o644);
    chime.signal(libc::SIGHUP);
    chime.wait_event("config.reloaded", LIMIT);
    chime.stop();
}

/// `user: nobody`: the job runs as uid 65534 with nobody's groups and account
/// variables; its output still arrives through the pipes chime made as root.
#[test]
fn a_job_as_nobody_runs_with_nobodys_uid_groups_and_account() {
    if !root("a_job_as_nobody_runs_with_nobodys_uid_groups_and_account") {
        return;
    }
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  who:\n    schedule: \"@daily\"\n    user: nobody\n    \
         command: id -u; id -g; id -G; echo \"$HOME|$USER|$LOGNAME|$SHELL\"; echo oops >&2\n",
    );
    let path = dir.path().to_str().unwrap();
    let out = run(
        dir.path(),
        ["--log-format", "json", "exec", "who", path],
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{out:#?}");
    let events = out.events();
    let lines = output_lines(&events, "who");
    let nobody = chime::account::user("nobody").unwrap();
    let groups = chime::account::group_list("nobody", nobody.gid).unwrap();
    let mut groups: Vec<String> = groups.iter().map(u32::to_string).collect();
    groups.sort();
    groups.dedup();
    assert_eq!(lines[0], "65534", "{lines:?}");
    assert_eq!(lines[1], nobody.gid.to_string(), "{lines:?}");
    let mut seen: Vec<&str> = lines[2].split(' ').collect();
    seen.sort();
    assert_eq!(seen, groups, "supplementary groups");
    assert_eq!(
        lines[3],
        format!(
            "{}|nobody|nobody|{}",
            nobody.home.display(),
            nobody.shell.display()
        )
    );
    let stderr: Vec<&Value> = events
        .iter()
        .filter(|e| is(e, "run.output", "who") && e["stream"] == "stderr")
        .collect();
    assert_eq!(stderr.len(), 1, "{events:#?}");
}

/// `user:` with a user the test creates, who belongs to a second group: `id -G` shows
/// it (initgroups' list), and `group:` replaces the primary group.
#[test]
fn a_created_user_gets_its_supplementary_groups_and_group_overrides_the_primary() {
    if !root("a_created_user_gets_its_supplementary_groups_and_group_overrides_the_primary") {
        return;
    }
    let user = format!("chime-t{}", std::process::id());
    let extra = format!("chime-g{}", std::process::id());
    let ok = |args: &[&str]| {
        std::process::Command::new(args[0])
            .args(&args[1..])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(&["groupadd", &extra]) {
        eprintln!("skipped: groupadd is not available");
        return;
    }
    let created = ok(&["useradd", "-M", "-N", "-g", "nogroup", "-G", &extra, &user]);
    // Removed whatever happens below.
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::process::Command::new("userdel").arg(&self.0).status();
            let _ = std::process::Command::new("groupdel").arg(&self.1).status();
        }
    }
    let _cleanup = Cleanup(user.clone(), extra.clone());
    assert!(created, "useradd {user}");
    let extra_gid = chime::account::group(&extra).unwrap();
    let account = chime::account::user(&user).unwrap();

    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        format!(
            "jobs:\n  plain:\n    schedule: \"@daily\"\n    user: {user}\n    \
             command: id -u; id -g; id -G\n  \
             grouped:\n    schedule: \"@daily\"\n    user: {user}\n    group: {extra}\n    \
             command: id -g\n"
        ),
    );
    let path = dir.path().to_str().unwrap();
    for job in ["plain", "grouped"] {
        let out = run(
            dir.path(),
            ["--log-format", "json", "exec", job, path],
            LIMIT,
        );
        assert_eq!(out.code, Some(0), "{out:#?}");
        let lines = output_lines(&out.events(), job);
        if job == "plain" {
            assert_eq!(lines[0], account.uid.to_string());
            assert_eq!(lines[1], "65534");
            let groups: Vec<&str> = lines[2].split(' ').collect();
            assert!(
                groups.contains(&extra_gid.to_string().as_str()),
                "{lines:?}"
            );
        } else {
            assert_eq!(lines, [extra_gid.to_string()]);
        }
    }
}

/// A timeout still ends the whole process group of a job that runs as another user:
/// TERM to the group, then KILL for a member that ignores TERM.
#[test]
fn a_timeout_kills_the_group_of_a_job_running_as_nobody() {
    if !root("a_timeout_kills_the_group_of_a_job_running_as_nobody") {
        return;
    }
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  slow:\n    schedule: \"@every 1h\"\n    user: nobody\n    timeout: 1s\n    \
         kill_grace: 300ms\n    command: (trap '' TERM; sleep 60) & echo started; sleep 60\n",
    );
    let path = dir.path().to_str().unwrap();
    let started = std::time::Instant::now();
    let mut exec = command(dir.path(), ["--log-format", "json", "exec", "slow", path]).spawn();
    // Once it printed, both the leader and the TERM-ignoring member are running.
    exec.wait_for("its first line", LIMIT, |e| is(e, "run.output", "slow"));
    let leader = process::all()
        .into_iter()
        .find(|stat| stat.ppid == exec.pid() && stat.pgrp == stat.pid)
        .expect("the job leads a process group of its own");
    let pgid = leader.pid;
    exec.guard_group(pgid);
    // The subshell's `sleep` may still be starting when the first line arrives: wait
    // for the leader, the subshell and the sleeps (at least three), with a timeout.
    wait_until("the job's group to hold three members", LIMIT, || {
        process::live_group_members(pgid).len() >= 3
    });
    let members = process::live_group_members(pgid);
    for member in &members {
        assert_eq!(
            uid_of(member.pid),
            Some(NOBODY),
            "pid {} runs as nobody",
            member.pid
        );
    }
    let finished = exec.wait_for("run.finished", LIMIT, |e| is(e, "run.finished", "slow"));
    assert_eq!(finished["outcome"], "timeout", "{finished}");
    assert_eq!(finished["signal"], libc::SIGKILL, "{finished}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        process::live_group_members(pgid).is_empty(),
        "members of the job's group outlived it"
    );
    let lines = output_lines(exec.events(), "slow");
    assert_eq!(lines, ["started"]);
}

/// The real uid of a process, from /proc.
fn uid_of(pid: libc::pid_t) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A workdir the job's user cannot enter fails the run with a message saying so,
/// instead of starting it there as root.
#[test]
fn a_workdir_the_user_cannot_enter_fails_clearly() {
    if !root("a_workdir_the_user_cannot_enter_fails_clearly") {
        return;
    }
    let dir = temp_dir();
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    chmod(&private, 0o700);
    write(
        dir.path(),
        "jobs.yaml",
        format!(
            "jobs:\n  in-private:\n    schedule: \"@daily\"\n    user: nobody\n    \
             workdir: {}\n    command: pwd\n",
            private.display()
        ),
    );
    let path = dir.path().to_str().unwrap();
    let out = run(
        dir.path(),
        ["--log-format", "json", "exec", "in-private", path],
        LIMIT,
    );
    assert_eq!(out.code, Some(1), "{out:#?}");
    let events = out.events();
    let finished = events
        .iter()
        .find(|e| is(e, "run.finished", "in-private"))
        .expect("run.finished");
    let error = finished["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("as user `nobody`") && error.contains("cannot enter the workdir"),
        "{finished}"
    );
    assert!(output_lines(&events, "in-private").is_empty());
}

/// An unknown user or group is an error at its place in the file.
#[test]
fn an_unknown_user_or_group_is_a_located_error() {
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  a:\n    schedule: \"@daily\"\n    user: no-such-user-chime\n    \
         group: no-such-group-chime\n    command: \"true\"\n",
    );
    let path = dir.path().to_str().unwrap();
    let out = run(dir.path(), ["check", path], LIMIT);
    assert_eq!(out.code, Some(1), "{out:#?}");
    let errors = out.errors();
    let file = dir.path().join("jobs.yaml");
    let at = |line: u32, column: u32| format!("{}:{line}:{column}: there is no ", file.display());
    // As non-root, `user:` is only a warning in check; the lookups fail either way.
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&at(4, 11)) && e.contains("user `no-such-user-chime`")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&at(5, 12)) && e.contains("group `no-such-group-chime`")),
        "{errors:#?}"
    );
}

/// The variable names a job's `env` prints, sorted.
fn names_of(lines: &[String]) -> Vec<String> {
    let mut names: Vec<String> = lines
        .iter()
        .filter_map(|l| l.split_once('=').map(|(name, _)| name.to_string()))
        .collect();
    names.sort();
    names
}

/// A shell job sees exactly what it was given: nothing of the service's environment
/// but LANG / LC_*, even a variable meant for `${VAR}` in an HTTP header.
#[test]
fn no_shell_job_sees_a_variable_it_was_not_given() {
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  clean:\n    schedule: \"@daily\"\n    timezone: Europe/Berlin\n    \
         env: { OWN: \"mine\", TOKEN_COPY: \"${HC_TOKEN}\" }\n    command: [\"env\"]\n  \
         inherit:\n    schedule: \"@daily\"\n    env_inherit: true\n    command: [\"env\"]\n",
    );
    let path = dir.path().to_str().unwrap();
    let exec = |job: &str| {
        let mut command = command(dir.path(), ["--log-format", "json", "exec", job, path]);
        command
            .env("HC_TOKEN", "service-secret")
            .env("LANG", "C.UTF-8")
            .env("LC_TIME", "C");
        let out = command.run(LIMIT);
        assert_eq!(out.code, Some(0), "{out:#?}");
        output_lines(&out.events(), job)
    };
    let clean = exec("clean");
    assert_eq!(
        names_of(&clean),
        [
            "CHIME_ATTEMPT",
            "CHIME_JOB",
            "CHIME_RUN_ID",
            "CHIME_SCHEDULED_AT",
            "HOME",
            "LANG",
            "LC_TIME",
            "LOGNAME",
            "OWN",
            "PATH",
            "SHELL",
            "TOKEN_COPY",
            "TZ",
            "USER",
        ],
        "{clean:#?}"
    );
    assert!(clean.contains(&"TZ=Europe/Berlin".to_string()));
    assert!(
        clean.contains(&"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into())
    );
    // Given explicitly through `env:`, the job has it; otherwise not.
    assert!(clean.contains(&"TOKEN_COPY=service-secret".to_string()));
    let inherit = exec("inherit");
    assert!(
        inherit.contains(&"HC_TOKEN=service-secret".to_string()),
        "{inherit:#?}"
    );
    assert!(names_of(&inherit).contains(&"STATE_DIRECTORY".to_string()));
}

// ---------------------------------------------------------------------------------
// Secrets

const SECRET: &str = "tok-7f3a9c1e-never-log-me";

/// What a test server does with each request it reads.
#[derive(Clone, Copy)]
enum Reply {
    Status(u16),
    /// Read the request, then never answer.
    Hang,
}

/// A one-thread HTTP/1.1 server on 127.0.0.1 that records each request's head.
struct Server {
    addr: SocketAddr,
    requests: mpsc::Receiver<String>,
}

impl Server {
    fn start(reply: Reply) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, requests) = mpsc::channel();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let Some(head) = read_request(&stream) else {
                    continue;
                };
                if tx.send(head).is_err() {
                    return;
                }
                match reply {
                    Reply::Status(code) => {
                        let mut stream = stream;
                        let _ = write!(
                            stream,
                            "HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                        );
                    }
                    Reply::Hang => held.push(stream),
                }
            }
        });
        Server { addr, requests }
    }

    fn next_request(&self) -> String {
        self.requests
            .recv_timeout(LIMIT)
            .expect("a request reached the server")
    }
}

/// The request line, the headers and the body (by content-length).
fn read_request(stream: &TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().ok()?;
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    head.push_str(&String::from_utf8_lossy(&body));
    Some(head)
}

/// A credentials directory as systemd's `LoadCredential=token:…` makes it.
fn credentials() -> tempfile::TempDir {
    let dir = temp_dir();
    write(dir.path(), "token", format!("{SECRET}\n"));
    dir
}

fn http_job(name: &str, url: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    schedule: \"@daily\"\n    timeout: 1s\n{extra}    http:\n      \
         url: \"{url}\"\n      method: POST\n      \
         headers: {{ Authorization: \"Bearer ${{credential:token}}\" }}\n      \
         body: '{{\"t\": \"${{credential:token}}\"}}'\n"
    )
}

/// Runs `chime exec JOB` on `schedule`, with `$CREDENTIALS_DIRECTORY`; asserts that no
/// line it wrote holds the secret. Returns its events.
fn exec_without_leaks(job: &str, schedule: &str, creds: &Path) -> (Option<i32>, Vec<Value>) {
    let dir = temp_dir();
    write(dir.path(), "jobs.yaml", schedule);
    let path = dir.path().to_str().unwrap();
    // At the most detailed level: no debug line may carry it either.
    let args = [
        "--log-format",
        "json",
        "--log-level",
        "trace",
        "exec",
        job,
        path,
    ];
    let mut command = command(dir.path(), args);
    command.env("CREDENTIALS_DIRECTORY", creds);
    let out = command.run(LIMIT);
    for line in out.stderr.lines().chain(out.stdout.lines()) {
        assert!(
            !line.contains(SECRET),
            "{job}: the secret was logged: {line}"
        );
    }
    let events = out
        .stderr
        .lines()
        .filter_map(support::parse_event)
        .collect();
    (out.code, events)
}

/// A `${credential:token}` header (and body) reaches a local server, and never the
/// log: on success and on every failure path.
#[test]
fn a_credential_reaches_the_server_and_never_the_log() {
    let creds = credentials();
    let ok = Server::start(Reply::Status(204));
    let schedule = format!(
        "jobs:\n{}",
        http_job("ping", &format!("http://{}/ping", ok.addr), "")
    );
    let (code, events) = exec_without_leaks("ping", &schedule, creds.path());
    assert_eq!(code, Some(0), "{events:#?}");
    let request = ok.next_request();
    assert!(
        request.contains(&format!("authorization: Bearer {SECRET}\r\n"))
            || request.contains(&format!("Authorization: Bearer {SECRET}\r\n")),
        "{request}"
    );
    assert!(
        request.ends_with(&format!("{{\"t\": \"{SECRET}\"}}")),
        "{request}"
    );

    // A bad status, with the secret in the URL too.
    let bad = Server::start(Reply::Status(500));
    let schedule = format!(
        "jobs:\n{}",
        http_job(
            "bad",
            &format!("http://{}/x/${{credential:token}}", bad.addr),
            ""
        )
    );
    let (code, events) = exec_without_leaks("bad", &schedule, creds.path());
    assert_eq!(code, Some(1));
    assert!(
        bad.next_request()
            .starts_with(&format!("POST /x/{SECRET} "))
    );
    let finished = events.iter().find(|e| name(e) == "run.finished").unwrap();
    assert_eq!(finished["http_status"], 500, "{finished}");

    // Connection refused: a port that was just free.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let schedule = format!(
        "jobs:\n{}",
        http_job(
            "refused",
            &format!("http://{closed}/x/${{credential:token}}"),
            ""
        )
    );
    let (code, events) = exec_without_leaks("refused", &schedule, creds.path());
    assert_eq!(code, Some(1));
    let finished = events.iter().find(|e| name(e) == "run.finished").unwrap();
    assert_eq!(finished["outcome"], "failure", "{finished}");
    assert!(
        finished["error"]
            .as_str()
            .is_some_and(|e| e.contains("refused")),
        "{finished}"
    );

    // A timeout: the server reads the request and never answers.
    let hang = Server::start(Reply::Hang);
    let schedule = format!(
        "jobs:\n{}",
        http_job(
            "hangs",
            &format!("http://{}/x/${{credential:token}}", hang.addr),
            ""
        )
    );
    let (code, events) = exec_without_leaks("hangs", &schedule, creds.path());
    assert_eq!(code, Some(1));
    let finished = events.iter().find(|e| name(e) == "run.finished").unwrap();
    assert_eq!(finished["outcome"], "timeout", "{finished}");

    // An `env:` secret of a shell job that fails.
    let schedule = "jobs:\n  shell:\n    schedule: \"@daily\"\n    \
                    env: { TOKEN: \"${credential:token}\" }\n    \
                    command: test \"$TOKEN\" = \"\"\n";
    let (code, events) = exec_without_leaks("shell", schedule, creds.path());
    assert_eq!(code, Some(1), "{events:#?}");

    // The credential missing at load: an error naming it, not a value.
    let empty = temp_dir();
    let schedule = format!("jobs:\n{}", http_job("gone", "http://127.0.0.1:9/", ""));
    let (code, _) = exec_without_leaks("gone", &schedule, empty.path());
    assert_eq!(code, Some(1));
    let dir = temp_dir();
    write(dir.path(), "jobs.yaml", &schedule);
    let mut check = command(dir.path(), ["check".as_ref(), dir.path().as_os_str()]);
    check.env("CREDENTIALS_DIRECTORY", empty.path());
    let out = check.run(LIMIT);
    assert_eq!(out.code, Some(1));
    assert!(
        out.errors()
            .iter()
            .any(|e| e.contains("`${credential:token}`") && e.contains("cannot read")),
        "{out:#?}"
    );
}

/// `${file:…}` is read again at each reload: a rotated secret takes effect at SIGHUP.
#[test]
fn a_file_secret_is_read_again_at_reload() {
    let secrets = temp_dir();
    let token = write(secrets.path(), "token", "first-secret\n");
    let server = Server::start(Reply::Status(200));
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        format!(
            "jobs:\n  ping:\n    schedule: \"@every 1s\"\n    http:\n      \
             url: \"http://{}/\"\n      \
             headers: {{ X-Token: \"${{file:{}}}\" }}\n",
            server.addr,
            token.display()
        ),
    );
    let mut chime = Chime::start(dir.path(), &[]);
    chime.wait_event("service.started", LIMIT);
    assert!(server.next_request().contains("x-token: first-secret\r\n"));
    std::fs::write(&token, "second-secret\n").unwrap();
    chime.signal(libc::SIGHUP);
    let reloaded = chime.wait_event("config.reloaded", LIMIT);
    assert_eq!(reloaded["changed"], 1, "{reloaded}");
    // Requests already on their way may carry the old value; a later one the new.
    let mut seen_new = false;
    for _ in 0..10 {
        if server.next_request().contains("x-token: second-secret\r\n") {
            seen_new = true;
            break;
        }
    }
    assert!(seen_new, "the new secret never arrived");
    chime.stop();
    let text = chime.transcript();
    assert!(!text.contains("first-secret") && !text.contains("second-secret"));
}

/// As another user (root starts chime as `nobody` here): an untrusted file is only a
/// warning, and `user:` is refused by `run` but only a warning in `check`.
#[test]
fn as_non_root_untrusted_files_warn_and_user_is_refused_by_run() {
    if !root("as_non_root_untrusted_files_warn_and_user_is_refused_by_run") {
        return;
    }
    let dir = temp_dir();
    chmod(dir.path(), 0o755);
    let file = write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  a:\n    schedule: \"@daily\"\n    command: \"true\"\n",
    );
    chmod(&file, 0o666);
    let as_nobody = |args: &[&str]| {
        let mut command = command(dir.path(), args);
        command.via([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]);
        command.run(LIMIT)
    };
    let path = dir.path().to_str().unwrap();
    let out = as_nobody(&["check", path]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(
        out.stderr.contains(&format!(
            "warning: {}: is writable by group and others (mode 0666): whoever can change \
             it can run commands as chime's user; fix it with `chmod go-w {}`",
            file.display(),
            file.display()
        )),
        "{out:#?}"
    );

    // The service loads it, and its log says what `check` said. (No control socket:
    // nobody cannot create one in the harness's root-owned runtime directory, and
    // would rightly fail to start.)
    let mut service = service(dir.path(), &["--control-socket", "none"]);
    service.via([
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ]);
    let mut chime = service.spawn();
    let warning = chime.wait_for("the warning in the log", LIMIT, |e| {
        e["fields"]["message"] == "schedule warning"
    });
    assert!(
        warning["fields"]["warning"]
            .as_str()
            .is_some_and(|w| w.contains("mode 0666") && w.contains("chmod go-w")),
        "{warning}"
    );
    chime.wait_event("service.started", LIMIT);
    chime.stop();

    chmod(&file, 0o644);
    write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  a:\n    schedule: \"@daily\"\n    user: root\n    command: \"true\"\n",
    );
    let out = as_nobody(&["check", path]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stderr.contains("warning: ") && out.stderr.contains("`chime run` refuses it"));
    // A text log: start-up errors as plain `error:` lines (a JSON log has them as one
    // config.rejected event).
    let out = as_nobody(&["run", "--log-format", "text", path]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    let errors = out.errors();
    assert_eq!(errors.len(), 1, "{out:#?}");
    assert!(
        errors[0].contains("jobs.yaml:4:11: `user` needs chime to run as root")
            && errors[0].contains("runs as uid 65534"),
        "{errors:#?}"
    );
}
