//! How shell jobs are started (issue 11): `run.started` once the process is spawned,
//! with the job's own pid; spawn failures still announced; a bare program name found
//! in the job's own `PATH`; and no descriptor of chime's reaching a job. The real
//! binary (`chime run`) with every-second jobs; every wait is for a log event.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::{Chime, LIMIT, name, service, temp_dir, write};

/// The events of the first run of `job` that has finished, in log order, once its
/// `run.finished` is in.
#[track_caller]
fn first_run(chime: &mut Chime, job: &str) -> Vec<Value> {
    let finished = chime.wait_for(&format!("run.finished of {job}"), LIMIT, |e| {
        name(e) == "run.finished" && e["job"] == job
    });
    let run_id = finished["run_id"].clone();
    chime
        .events()
        .iter()
        .filter(|e| e["run_id"] == run_id)
        .cloned()
        .collect()
}

fn names(events: &[Value]) -> Vec<&str> {
    events.iter().map(name).collect()
}

fn stdout_lines(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| name(e) == "run.output" && e["stream"] == "stdout")
        .filter_map(|e| e["line"].as_str())
        .collect()
}

#[test]
fn run_started_comes_once_spawned_with_the_jobs_own_pid() {
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        concat!(
            "defaults: { timezone: UTC }\n",
            "jobs:\n",
            "  script:\n    schedule: \"* * * * * *\"\n    command: echo $$\n",
            "  argv:\n    schedule: \"* * * * * *\"\n",
            "    command: [\"sh\", \"-c\", \"echo $$\"]\n",
        ),
    );
    let mut chime = Chime::start(dir.path(), &[]);
    for job in ["script", "argv"] {
        let run = first_run(&mut chime, job);
        assert_eq!(
            names(&run),
            ["run.started", "run.output", "run.finished"],
            "{run:#?}"
        );
        let started = &run[0];
        let pid = started["pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("run.started has a pid: {started}"));
        assert_eq!(
            stdout_lines(&run),
            [pid.to_string()],
            "the pid is the job's own"
        );
        let lateness = started["lateness_ms"].as_f64().expect("lateness_ms");
        assert!(lateness >= 0.0, "{started}");
        assert_eq!(run[2]["outcome"], "success", "{run:#?}");
    }
    chime.stop();
}

#[test]
fn spawn_failures_still_give_run_started_per_attempt_and_a_failure() {
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        concat!(
            "defaults: { timezone: UTC }\n",
            "jobs:\n",
            "  missing:\n    schedule: \"* * * * * *\"\n",
            "    command: [\"chime-test-no-such-program\", \"x\"]\n",
            "    retry: { attempts: 2, delay: 10ms }\n",
            "  nodir:\n    schedule: \"* * * * * *\"\n    command: \"true\"\n",
            "    workdir: /nonexistent/chime-spawn-dir\n",
        ),
    );
    let mut chime = Chime::start(dir.path(), &[]);
    let missing = first_run(&mut chime, "missing");
    assert_eq!(
        names(&missing),
        ["run.started", "run.retrying", "run.started", "run.finished"],
        "{missing:#?}"
    );
    for started in missing.iter().filter(|e| name(e) == "run.started") {
        assert!(
            started.get("pid").is_none(),
            "no process, no pid: {started}"
        );
    }
    let finished = &missing[3];
    assert_eq!(finished["outcome"], "failure", "{finished}");
    assert_eq!(finished["attempts"], 2, "{finished}");
    assert_eq!(
        finished["error"], "cannot start `chime-test-no-such-program`: No such file or directory",
        "{finished}"
    );

    let nodir = first_run(&mut chime, "nodir");
    assert_eq!(names(&nodir), ["run.started", "run.finished"], "{nodir:#?}");
    assert!(nodir[0].get("pid").is_none(), "{}", nodir[0]);
    assert_eq!(nodir[1]["outcome"], "failure", "{}", nodir[1]);
    let error = nodir[1]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("workdir `/nonexistent/chime-spawn-dir`"),
        "the error names the workdir: {error}"
    );
    chime.stop();
}

#[test]
fn a_bare_program_name_is_found_in_the_jobs_own_path() {
    let dir = temp_dir();
    let tools = dir.path().join("tools");
    std::fs::create_dir(&tools).unwrap();
    let tool = write(
        &tools,
        "mytool",
        "#!/bin/sh\necho \"mytool ran as $0 with $1\"\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    write(
        dir.path(),
        "jobs.yaml",
        format!(
            concat!(
                "defaults: {{ timezone: UTC }}\n",
                "jobs:\n",
                "  tool:\n    schedule: \"* * * * * *\"\n",
                "    command: [\"mytool\", \"arg\"]\n",
                "    env: {{ PATH: \"/nonexistent/chime-bin:{}\" }}\n",
            ),
            tools.display()
        ),
    );
    // chime's own PATH does not have the tool: only the job's does.
    let mut chime = Chime::start(dir.path(), &[]);
    let run = first_run(&mut chime, "tool");
    assert_eq!(run.last().unwrap()["outcome"], "success", "{run:#?}");
    assert_eq!(
        stdout_lines(&run),
        [format!("mytool ran as {} with arg", tool.display())]
    );
    assert!(run[0]["pid"].is_u64(), "{}", run[0]);
    chime.stop();
}

/// chime is started with two descriptors it inherits without close-on-exec (7 and 9,
/// as a careless parent would leave them), while another job's pipes are open; a job
/// listing its own descriptors sees only 0, 1, 2 and the one its `ls` opened.
#[test]
fn no_descriptor_of_chimes_own_reaches_a_job() {
    let dir = temp_dir();
    write(dir.path(), "inherited", "x");
    write(
        dir.path(),
        "jobs.yaml",
        concat!(
            "defaults: { timezone: UTC }\n",
            "jobs:\n",
            "  busy:\n    schedule: \"* * * * * *\"\n    command: sleep 3\n",
            "    overlap: allow\n",
            "  fds:\n    schedule: \"* * * * * *\"\n",
            "    command: [\"ls\", \"-1\", \"/proc/self/fd\"]\n",
            "  fds-script:\n    schedule: \"* * * * * *\"\n",
            "    command: ls -1 /proc/self/fd\n",
        ),
    );
    let mut command = service(dir.path(), &[]);
    command.via([
        "/bin/sh",
        "-c",
        "exec \"$@\" 7<inherited 9>>inherited",
        "sh",
    ]);
    let mut chime = command.spawn();
    // Wait for a run of each lister that started after `busy` did, so that `busy`'s
    // pipes are open in chime while it spawns.
    let busy = chime.wait_for("busy running", LIMIT, |e| {
        name(e) == "run.started" && e["job"] == "busy"
    });
    let chime_fds: BTreeSet<u32> = std::fs::read_dir(format!("/proc/{}/fd", chime.pid()))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let busy_at = busy["scheduled_at"].as_str().unwrap_or_default().to_owned();
    for job in ["fds", "fds-script"] {
        let run = loop {
            let run = first_run(&mut chime, job);
            if run[0]["scheduled_at"].as_str().unwrap_or_default() > busy_at.as_str() {
                break run;
            }
        };
        assert_eq!(run.last().unwrap()["outcome"], "success", "{run:#?}");
        let mut fds: Vec<u32> = stdout_lines(&run)
            .iter()
            .map(|l| l.parse().expect("a descriptor number"))
            .collect();
        fds.sort_unstable();
        let extra: Vec<u32> = fds.iter().copied().filter(|&fd| fd > 2).collect();
        assert!(
            fds.starts_with(&[0, 1, 2]) && extra.len() <= 1,
            "{job}: the job has descriptors beyond 0-2 and ls's own: {fds:?} \
             (chime had {chime_fds:?})"
        );
    }
    assert!(
        chime_fds.contains(&7) && chime_fds.contains(&9),
        "the test set chime up with descriptors 7 and 9: {chime_fds:?}"
    );
    chime.stop();
}

/// SIGTERM in the middle of a burst, while processes are queued for the spawner
/// threads: attempts admitted before the shutdown are started and announced before
/// `service.stopping`, none after it, and every run announced also finishes.
#[test]
fn shutdown_mid_burst_announces_no_start_after_stopping() {
    let dir = temp_dir();
    let mut yaml = String::from("defaults: { timezone: UTC }\njobs:\n");
    for i in 0..60 {
        yaml.push_str(&format!(
            "  burst-{i:02}:\n    schedule: \"* * * * * *\"\n    command: [\"sh\", \"-c\", \"echo $$\"]\n"
        ));
    }
    write(dir.path(), "jobs.yaml", yaml);
    let mut chime = Chime::start(dir.path(), &[]);
    // The first started run of a burst: the rest of the burst is being spawned.
    chime.wait_event("run.started", LIMIT);
    chime.signal(libc::SIGTERM);
    chime.wait_event("service.stopped", LIMIT);
    assert_eq!(chime.wait_exit(LIMIT).code(), Some(0));
    let (lines, _) = chime.finish(LIMIT);
    let events: Vec<Value> = lines
        .iter()
        .filter_map(|line| support::parse_event(line))
        .collect();
    let stopping = events
        .iter()
        .position(|e| name(e) == "service.stopping")
        .expect("service.stopping is logged");
    let started: Vec<&Value> = events.iter().filter(|e| name(e) == "run.started").collect();
    assert!(!started.is_empty());
    for (i, event) in events.iter().enumerate() {
        if name(event) == "run.started" {
            assert!(i < stopping, "run.started after service.stopping: {event}");
            assert!(event["pid"].is_u64(), "{event}");
            let finished = events[i..]
                .iter()
                .any(|e| name(e) == "run.finished" && e["run_id"] == event["run_id"]);
            assert!(finished, "a started run finishes: {event}");
        }
    }
}
