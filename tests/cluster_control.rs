//! Operator controls across replicas on one real PostgreSQL (issue 17, "Controls
//! across replicas"), through the real binary: a pause given to one replica holds on
//! every replica (and across restarts of all), a resume runs the fires again once each
//! with nothing replayed, a kill given to one replica ends a run on another, a trigger
//! runs where it was asked, and a pause the database cannot take changes nothing.
//!
//! Needs the throwaway PostgreSQL of `scripts/test-postgres` (`.ci/run` starts it);
//! without it each test says SKIPPED, and under `CHIME_TEST_REQUIRE_POSTGRES` fails.
//! The tests take turns (one lock); one of them stops the server, so this file is a
//! binary of its own.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde_json::Value;

use support::postgres::Pg;
use support::{Chime, LIMIT, Output, process, temp_dir, wait_until, write};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A replica and its control socket.
struct Replica {
    chime: Chime,
    socket: PathBuf,
    dir: PathBuf,
}

fn start_replica(dir: &Path, pg: &Pg, member: &str) -> Replica {
    let socket = dir.join(format!("{member}.sock"));
    let mut args = pg.replica_args(member, "10s", "500ms");
    args.extend(["--shutdown-grace".into(), "1s".into()]);
    args.extend(["--control-socket".into(), socket.display().to_string()]);
    args.extend(["--log-format".into(), "json".into(), "run".into()]);
    args.push(dir.join("schedules").to_string_lossy().into_owned());
    let mut chime = support::command(dir, &args).spawn();
    chime.wait_event("cluster.joined", LIMIT);
    Replica {
        chime,
        socket,
        dir: dir.to_path_buf(),
    }
}

impl Replica {
    /// `chime --control-socket SOCKET ARGS…`, run to its end.
    fn client(&self, args: &[&str]) -> Output {
        let mut all = vec![
            "--control-socket".to_string(),
            self.socket.display().to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        support::run(&self.dir, &all, LIMIT)
    }

    /// The service's `status` answer, asked on the socket.
    fn status(&self) -> Value {
        let mut stream = UnixStream::connect(&self.socket).expect("connect");
        stream
            .write_all(b"{\"v\":1,\"cmd\":\"status\"}\n")
            .expect("send");
        stream.set_read_timeout(Some(LIMIT)).expect("timeout");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("answer");
        let answer: Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(answer["ok"], true, "{answer}");
        answer
    }

    fn paused(&self) -> Vec<String> {
        self.status()["paused"]
            .as_array()
            .expect("paused")
            .iter()
            .map(|v| v.as_str().expect("a name").to_string())
            .collect()
    }
}

/// A job line that appends its scheduled instant to `markers/JOB`.
fn marker_command(markers: &Path) -> String {
    format!(
        "echo \"$CHIME_SCHEDULED_AT\" >> {}/\"$CHIME_JOB\"",
        markers.display()
    )
}

fn markers(dir: &Path, job: &str) -> Vec<DateTime<Utc>> {
    std::fs::read_to_string(dir.join("markers").join(job))
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().expect("an RFC 3339 instant"))
        .collect()
}

fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339()
}

fn next_second(after: DateTime<Utc>) -> DateTime<Utc> {
    after.duration_trunc(TimeDelta::seconds(1)).expect("trunc") + TimeDelta::seconds(1)
}

/// Waits until `clock`'s fire at `at` (an every-second job that keeps running) has
/// succeeded: every replica has handled the instants before it.
fn wait_for_clock(pg: &Pg, at: DateTime<Utc>) {
    wait_until(&format!("clock's fire at {at}"), LIMIT, || {
        pg.count(&format!(
            "SELECT count(*) FROM chime_claims WHERE job = 'clock' AND scheduled_at >= '{}' AND status = 'success'",
            ts(at)
        )) > 0
    });
}

/// Rows of `tick` scheduled in (after, before) whose status is not `paused`.
fn tick_runs_between(pg: &Pg, after: DateTime<Utc>, before: DateTime<Utc>) -> Vec<Vec<String>> {
    pg.query(&format!(
        "SELECT scheduled_at, member, status FROM chime_claims
         WHERE job = 'tick' AND scheduled_at > '{}' AND scheduled_at < '{}' AND status <> 'paused'",
        ts(after),
        ts(before)
    ))
}

fn every_second_jobs(dir: &Path) {
    let marks = dir.join("markers");
    std::fs::create_dir_all(&marks).expect("mkdir");
    let schedules = dir.join("schedules");
    std::fs::create_dir_all(&schedules).expect("mkdir");
    let mut yaml = String::from("defaults:\n  timezone: UTC\njobs:\n");
    for job in ["tick", "clock"] {
        yaml.push_str(&format!(
            "  {job}:\n    schedule: \"* * * * * *\"\n    overlap: allow\n    command: '{}'\n",
            marker_command(&marks)
        ));
    }
    write(&schedules, "jobs.yaml", yaml);
}

#[test]
fn a_pause_on_one_replica_holds_on_every_replica_and_across_restarts() {
    let _serial = serial();
    let Some(pg) = Pg::database("chime_control_pause") else {
        return;
    };
    let tmp = temp_dir();
    let dir = tmp.path();
    every_second_jobs(dir);
    let mut replicas: Vec<Replica> = ["a", "b", "c"]
        .iter()
        .map(|m| start_replica(dir, &pg, m))
        .collect();
    wait_until("tick has run", LIMIT, || {
        pg.count("SELECT count(*) FROM chime_claims WHERE job = 'tick' AND status = 'success'") >= 2
    });

    // Paused on a: in the database before the answer.
    let out = replicas[0].client(&["pause", "tick"]);
    let acknowledged = Utc::now();
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stdout.contains("paused tick"), "{out:#?}");
    assert!(
        out.stderr.contains("in the cluster database"),
        "the answer says where the pause is kept: {out:#?}"
    );
    let row = pg.query("SELECT job, member, paused_by FROM chime_paused");
    let uid = unsafe { libc::geteuid() }.to_string();
    assert_eq!(row, vec![vec!["tick".to_string(), "a".into(), uid.clone()]]);
    assert_eq!(replicas[0].paused(), ["tick"], "a's own state at once");
    // The others hear of it (NOTIFY) within about a second.
    let heard = Instant::now();
    for replica in &replicas[1..] {
        wait_until(
            "the others show tick paused",
            Duration::from_secs(3),
            || replica.paused() == ["tick"],
        );
    }
    eprintln!(
        "b and c showed the pause {:?} after the answer",
        heard.elapsed()
    );

    // No replica runs a fire of tick after the acknowledgement; the claims say paused.
    let until = next_second(acknowledged) + TimeDelta::seconds(3);
    wait_for_clock(&pg, until);
    let ran = tick_runs_between(&pg, acknowledged, until + TimeDelta::seconds(1));
    assert!(ran.is_empty(), "tick claimed while paused: {ran:?}");
    let paused_rows = pg.count(&format!(
        "SELECT count(*) FROM chime_claims WHERE job = 'tick' AND status = 'paused' AND scheduled_at > '{}'",
        ts(acknowledged)
    ));
    assert!(
        paused_rows >= 3,
        "tick's fires claimed as paused: {paused_rows}"
    );
    let marked: Vec<_> = markers(dir, "tick")
        .into_iter()
        .filter(|at| *at > acknowledged)
        .collect();
    assert!(marked.is_empty(), "tick ran while paused: {marked:?}");

    // Every replica restarts: the pause is still there, on each.
    for replica in &mut replicas {
        replica.chime.stop();
    }
    let skipped: usize = replicas
        .iter_mut()
        .map(|r| {
            let (lines, _) = r.chime.finish(LIMIT);
            lines
                .iter()
                .filter_map(|l| support::parse_event(l))
                .filter(|e| {
                    e["event"] == "run.skipped" && e["job"] == "tick" && e["reason"] == "paused"
                })
                .count()
        })
        .sum();
    assert!(skipped >= 3, "run.skipped reason=paused logged: {skipped}");
    let replicas: Vec<Replica> = ["a", "b", "c"]
        .iter()
        .map(|m| start_replica(dir, &pg, m))
        .collect();
    for replica in &replicas {
        assert_eq!(replica.paused(), ["tick"], "paused after the restart");
    }
    let restarted = Utc::now();
    wait_for_clock(&pg, next_second(restarted) + TimeDelta::seconds(1));

    // Resumed on c: fires after it run again, once each, and nothing missed is replayed.
    let out = replicas[2].client(&["resume", "tick"]);
    let resumed = Utc::now();
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(out.stdout.contains("resumed tick"), "{out:#?}");
    for replica in &replicas {
        wait_until(
            "every replica shows tick resumed",
            Duration::from_secs(3),
            || replica.paused().is_empty(),
        );
    }
    let from = next_second(resumed);
    let to = from + TimeDelta::seconds(2);
    wait_for_clock(&pg, to);
    let ran = tick_runs_between(&pg, acknowledged, resumed);
    assert!(ran.is_empty(), "replayed or run while paused: {ran:?}");
    let marks = markers(dir, "tick");
    let mut count: HashMap<DateTime<Utc>, usize> = HashMap::new();
    for at in &marks {
        *count.entry(*at).or_default() += 1;
    }
    assert!(
        count.values().all(|n| *n == 1),
        "an instant twice: {count:?}"
    );
    assert!(
        marks.iter().all(|at| *at <= acknowledged || *at >= resumed),
        "tick ran between the pause and the resume: {marks:?}"
    );
    let mut at = from;
    while at <= to {
        assert_eq!(count.get(&at), Some(&1), "tick at {at} after the resume");
        assert_eq!(
            pg.count(&format!(
                "SELECT count(*) FROM chime_claims WHERE job = 'tick' AND scheduled_at = '{}' AND status = 'success'",
                ts(at)
            )),
            1
        );
        at += TimeDelta::seconds(1);
    }

    // A pause no replica has heard of (written without a notification): the claim
    // statement alone keeps tick from running.
    pg.query("INSERT INTO chime_paused (job) VALUES ('tick')");
    let unheard = Utc::now();
    let until = next_second(unheard) + TimeDelta::seconds(2);
    wait_for_clock(&pg, until);
    for replica in &replicas {
        assert!(replica.paused().is_empty(), "no replica heard of it");
    }
    let ran = tick_runs_between(&pg, unheard, until + TimeDelta::seconds(1));
    assert!(
        ran.is_empty(),
        "tick claimed while paused in the database: {ran:?}"
    );
    let marked: Vec<_> = markers(dir, "tick")
        .into_iter()
        .filter(|at| *at > unheard)
        .collect();
    assert!(marked.is_empty(), "tick ran while paused: {marked:?}");
    for mut replica in replicas {
        replica.chime.stop();
    }
}

/// Kills the process groups whose leaders' pids are in `file`, at the end.
struct Groups(PathBuf);

impl Drop for Groups {
    fn drop(&mut self) {
        let Ok(text) = std::fs::read_to_string(&self.0) else {
            return;
        };
        for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if !process::live_group_members(pid).is_empty() {
                // SAFETY: only sends a signal, to a group a run of this test leads.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        }
    }
}

#[test]
fn a_trigger_runs_where_asked_and_a_kill_reaches_the_run_on_another_replica() {
    let _serial = serial();
    let Some(pg) = Pg::database("chime_control_kill") else {
        return;
    };
    let tmp = temp_dir();
    let dir = tmp.path();
    let pids = dir.join("pids");
    let children = dir.join("children");
    let _groups = Groups(pids.clone());
    let schedules = dir.join("schedules");
    std::fs::create_dir_all(&schedules).expect("mkdir");
    // Never fires by itself (once a year); its shell and a child in its group.
    let long = format!(
        "echo $$ >> {}; sleep 300 & echo $! >> {}; wait",
        pids.display(),
        children.display()
    );
    write(
        &schedules,
        "jobs.yaml",
        format!(
            "defaults:\n  timezone: UTC\njobs:\n  long:\n    schedule: \"0 0 1 1 *\"\n    kill_grace: 1s\n    command: '{long}'\n"
        ),
    );
    let mut a = start_replica(dir, &pg, "a");
    let mut b = start_replica(dir, &pg, "b");

    // Triggered on b: it runs on b, recorded with b, no claim involved.
    let out = b.client(&["trigger", "long"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let run_id = out
        .stdout
        .lines()
        .next()
        .expect("the run id")
        .trim()
        .to_string();
    let started = b.chime.wait_for("long started on b", LIMIT, |e| {
        e["event"] == "run.started" && e["run_id"] == run_id.as_str()
    });
    assert_eq!(started["trigger"], "manual");
    let pid = started["pid"].as_i64().expect("a pid") as i32;
    wait_until("the run recorded with its member and pid", LIMIT, || {
        pg.count(&format!(
            "SELECT count(*) FROM chime_claims WHERE run_id = '{run_id}' AND status = 'running'
             AND member = 'b' AND trigger = 'manual' AND epoch < 0 AND pid = {pid}"
        )) == 1
    });

    // a's status lists b's run, marked with its member.
    let status = a.status();
    let runs = status["running"].as_array().expect("running");
    assert_eq!(runs.len(), 1, "{status}");
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    assert_eq!(runs[0]["member"], "b");
    assert_eq!(runs[0]["pid"], pid);
    // And chime status's RUNS IN FLIGHT, through a.
    let out = a.client(&["status", &schedules.display().to_string()]);
    assert!(
        out.stdout.contains(&run_id) && out.stdout.contains("on b"),
        "{out:#?}"
    );

    // Killed on a: b ends it as a local kill would, and a says so.
    wait_until("the child is written", LIMIT, || {
        std::fs::read_to_string(&children).is_ok_and(|t| t.ends_with('\n'))
    });
    let child: i32 = std::fs::read_to_string(&children)
        .expect("children")
        .trim()
        .parse()
        .expect("a pid");
    let out = a.client(&["kill", &run_id]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    assert!(
        out.stdout
            .contains(&format!("killed run {run_id} of long on replica b"))
            && out.stdout.contains("ended cancelled"),
        "{out:#?}"
    );
    let finished = b.chime.wait_for("long finished on b", LIMIT, |e| {
        e["event"] == "run.finished" && e["run_id"] == run_id.as_str()
    });
    assert_eq!(finished["outcome"], "cancelled", "{finished}");
    assert_eq!(finished["by"], "operator", "{finished}");
    assert_eq!(
        finished["caller_uid"].as_u64(),
        Some(u64::from(unsafe { libc::geteuid() }))
    );
    assert!(process::wait_dead(pid, LIMIT), "the run's shell ended");
    assert!(process::wait_dead(child, LIMIT), "its group's child ended");
    assert!(process::live_group_members(pid).is_empty());
    assert_eq!(
        pg.query(&format!(
            "SELECT status, kill_acked IS NOT NULL FROM chime_claims WHERE run_id = '{run_id}'"
        )),
        vec![vec!["cancelled".to_string(), "t".into()]]
    );
    let request = a.chime.wait_for("a's control.request", LIMIT, |e| {
        e["event"] == "control.request" && e["command"] == "kill"
    });
    assert_eq!(request["result"], "ok");

    // An unknown run id is a clear error, on either replica.
    let out = a.client(&["kill", "0123456789abcdef"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(
        out.stderr
            .contains("no run or job named `0123456789abcdef`"),
        "{out:#?}"
    );
    a.chime.stop();
    b.chime.stop();
    let (lines, _) = a.chime.finish(LIMIT);
    let on_a: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"run.started\""))
        .collect();
    assert!(on_a.is_empty(), "nothing ran on a: {on_a:?}");
}

#[test]
fn a_pause_the_database_cannot_take_changes_nothing() {
    let _serial = serial();
    let Some(pg) = Pg::database("chime_control_down") else {
        return;
    };
    let tmp = temp_dir();
    let dir = tmp.path();
    every_second_jobs(dir);
    let mut a = start_replica(dir, &pg, "a");
    pg.stop_server();
    let out = a.client(&["pause", "tick"]);
    pg.start_server();
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(
        out.stderr.contains("cannot pause across the replicas")
            && out.stderr.contains("nothing was paused"),
        "{out:#?}"
    );
    assert!(a.paused().is_empty(), "not paused here either");
    a.chime.wait_event("cluster.recovered", LIMIT);
    assert!(a.paused().is_empty());
    assert_eq!(pg.count("SELECT count(*) FROM chime_paused"), 0);
    a.chime.stop();
}
