//! The run history on PostgreSQL (`--cluster`), behind the same `Store` trait as
//! SQLite: the store against the plain model of tests/support/store_model.rs, and
//! through the binary: `chime history` / `chime status` with the member of each run and
//! every replica's runs in flight, a restarted member taking over its interrupted runs
//! and its jobs' last successes, and `--cluster` given after the subcommand.
//!
//! They need the throwaway PostgreSQL of `scripts/test-postgres`; without it each says
//! SKIPPED (visibly), and under `CHIME_TEST_REQUIRE_POSTGRES` fails.

mod support;

#[path = "support/store_model.rs"]
mod store_model;

use std::cell::RefCell;
use std::io::{Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::Value;

use chime::cluster::ClusterOptions;
use chime::cluster::store::PgStore;
use chime::state::{RunStart, Store, Write};
use store_model::{Model, Op, op, t};
use support::postgres::Pg;
use support::{Chime, LIMIT, is, name, temp_dir, uint, wait_until, write};

fn options(pg: &Pg, member: &str) -> ClusterOptions {
    let password = std::fs::read_to_string(&pg.password_file).expect("the password file");
    ClusterOptions {
        url: pg.url(),
        password: Some(password.trim().to_string()),
        member: member.into(),
        lease: Duration::from_secs(30),
        fallback: Duration::from_secs(1),
        claim_ahead: Duration::from_millis(250),
    }
}

#[test]
fn the_postgres_store_agrees_with_the_plain_model() {
    let Some(pg) = Pg::database("chime_store_model") else {
        return;
    };
    let store = RefCell::new(PgStore::open(&options(&pg, "model"), Some("model")).expect("opens"));
    let config = ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    // One schema for every case, emptied before each (a fresh database per case is slow).
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..50), batch in 1..16usize)| {
        pg.query("TRUNCATE chime_claims, chime_jobs, chime_paused");
        let mut store = store.borrow_mut();
        let model = Model::run(&mut *store, &ops, batch);
        // A reader of every member (as `chime status`) sees the same.
        let reader = PgStore::open(&options(&pg, "reader"), None).expect("a reader");
        model.check(&reader);
    });
}

/// Writes that touch one run, fire or job more than once in a batch (which the store
/// cuts into segments applied kind by kind): the same result as one by one, for every
/// batch size.
#[test]
fn a_batch_touching_a_run_twice_applies_as_one_by_one() {
    let Some(pg) = Pg::database("chime_store_segments") else {
        return;
    };
    let mut store = PgStore::open(&options(&pg, "model"), Some("model")).expect("opens");
    let ops = [
        // a: started, retried twice, failed; the same fire started again by another run.
        Op::Start { job: 0, at: 1 },
        Op::Retry { pick: 0 },
        Op::Retry { pick: 0 },
        Op::Finish {
            pick: 0,
            outcome: 1,
            at: 2,
        },
        Op::Start { job: 0, at: 1 },
        Op::Start { job: 1, at: 3 },
        // a: a success after the failure, then another failure.
        Op::Finish {
            pick: 0,
            outcome: 0,
            at: 4,
        },
        Op::Start { job: 0, at: 5 },
        Op::Finish {
            pick: 1,
            outcome: 2,
            at: 6,
        },
        // c: paused, resumed, paused; started, retried and interrupted.
        Op::Pause {
            job: 2,
            paused: true,
        },
        Op::Pause {
            job: 2,
            paused: false,
        },
        Op::Pause {
            job: 2,
            paused: true,
        },
        Op::Start { job: 2, at: 7 },
        Op::Retry { pick: 1 },
        Op::Interrupt { pick: 1 },
        Op::Handled { job: 0, at: 9 },
        Op::Handled { job: 0, at: 8 },
        Op::Finish {
            pick: 0,
            outcome: 3,
            at: 10,
        },
    ];
    for batch in 1..=ops.len() {
        pg.query("TRUNCATE chime_claims, chime_jobs, chime_paused");
        Model::run(&mut store, &ops, batch);
    }
}

/// Another session locks job `y`'s row, waits until the store's batch (which locks
/// `x`, then `y`) waits for it, then locks `x`: PostgreSQL rolls one back as a
/// deadlock's victim. The batch still applies, whole.
#[test]
fn a_batch_rolled_back_as_a_deadlock_victim_is_applied_again() {
    let Some(pg) = Pg::database("chime_store_deadlock") else {
        return;
    };
    let mut store = PgStore::open(&options(&pg, "m"), Some("m")).expect("opens");
    let handled = |job: &str| Write::Handled {
        job: job.into(),
        at: t(1),
    };
    store
        .apply(&[handled("x"), handled("y")])
        .expect("the jobs' rows");
    let password = std::fs::read_to_string(&pg.password_file).expect("password");
    let mut other = std::process::Command::new(pg.bin.join("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=0", "-h"])
        .arg(pg.dir.join("sock"))
        .args(["-U", "chime", "-d", &pg.db, "-c"])
        .arg(
            "SET statement_timeout = '20s';
             BEGIN;
             SELECT 1 FROM chime_jobs WHERE job = 'y' FOR UPDATE;
             DO $$ BEGIN
                 WHILE NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()
                     AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()) LOOP
                     PERFORM pg_sleep(0.01);
                 END LOOP;
             END $$;
             SELECT 1 FROM chime_jobs WHERE job = 'x' FOR UPDATE;
             COMMIT;",
        )
        .env("PGPASSWORD", password.trim())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("psql starts");
    wait_until("the other session holds y", LIMIT, || {
        pg.count(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE a.datname = current_database() AND a.application_name = 'psql'
               AND l.mode = 'RowShareLock' AND l.granted",
        ) >= 1
    });
    let deadlocks =
        || pg.count("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()");
    let before = deadlocks();
    let start = Write::Started(RunStart {
        job: "y".into(),
        run_id: "run-y".into(),
        scheduled_at: t(2),
        trigger: "manual".into(),
        attempt: 1,
        started: t(2),
        lateness_ms: 0.0,
        pid: None,
        pid_start: None,
    });
    store
        .apply(&[handled("x"), start])
        .expect("applied, after the deadlock");
    let _ = other.wait();
    // Statistics reach pg_stat_database within PostgreSQL's flush interval (10 s).
    wait_until("the deadlock in the statistics", LIMIT, || {
        deadlocks() > before
    });
    assert_eq!(
        pg.query("SELECT job, last_run_id FROM chime_jobs WHERE job = 'y'"),
        vec![vec!["y".to_string(), "run-y".to_string()]]
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM chime_claims WHERE run_id = 'run-y' AND status = 'running'"),
        1
    );
}

/// A free port on 127.0.0.1 for `--listen`.
fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

/// `chime_last_success_timestamp_seconds` of `job` on `/metrics`, if there is one.
fn last_success(addr: &str, job: &str) -> Option<f64> {
    let mut stream = TcpStream::connect(addr).expect("connect to --listen");
    stream.set_read_timeout(Some(LIMIT)).expect("read timeout");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let prefix = format!("chime_last_success_timestamp_seconds{{job=\"{job}\"}} ");
    answer
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.trim().parse().expect("a number"))
}

/// A replica of `DIR/schedules`, started (its events not waited for).
fn replica(dir: &Path, pg: &Pg, member: &str, listen: &str) -> Chime {
    let mut args = pg.replica_args(member, "30s", "300ms");
    args.extend(["--listen".into(), listen.into()]);
    args.extend(["--shutdown-grace".into(), "1s".into()]);
    args.extend(["--log-format".into(), "json".into(), "run".into()]);
    args.push(dir.join("schedules").to_string_lossy().into_owned());
    support::command(dir, &args).spawn()
}

/// `chime ARGS… history|status …` against the cluster, as a reader.
fn read(dir: &Path, pg: &Pg, command: &[&str]) -> String {
    let mut args = vec![
        "--cluster".to_string(),
        pg.url(),
        "--cluster-password-file".into(),
        pg.password_file.to_string_lossy().into_owned(),
    ];
    args.extend(command.iter().map(|a| a.to_string()));
    let out = support::run(dir, &args, LIMIT);
    assert_eq!(out.code, Some(0), "chime {command:?}: {}", out.stderr);
    out.stdout
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

#[test]
fn history_and_status_show_members_and_a_restarted_member_takes_over() {
    let Some(pg) = Pg::database("chime_store_binary") else {
        return;
    };
    let dir = temp_dir();
    let dir = dir.path();
    let schedules = dir.join("schedules");
    std::fs::create_dir_all(&schedules).expect("mkdir");
    let jobs = |ok_schedule: &str| {
        format!(
            "jobs:
  ok:
    schedule: \"{ok_schedule}\"
    command: echo hello from ok
    timezone: UTC
  long:
    schedule: \"* * * * * *\"
    command: sleep 60
    overlap: skip
    timezone: UTC
"
        )
    };
    write(&schedules, "jobs.yaml", jobs("* * * * * *"));
    let mut a = replica(dir, &pg, "a", &free_addr());
    a.wait_event("cluster.joined", LIMIT);
    let started = a.wait_for("long starts", LIMIT, |e| is(e, "run.started", "long"));
    let long_run = started["run_id"].as_str().expect("a run id").to_string();
    let leftover = uint(&started, "pid") as libc::pid_t;
    a.guard_group(leftover);
    a.wait_for("ok succeeds", LIMIT, |e| {
        is(e, "run.finished", "ok") && e["outcome"] == "success"
    });
    wait_until(
        "the history has ok's success and long running",
        LIMIT,
        || {
            pg.count("SELECT count(*) FROM chime_claims WHERE job = 'ok' AND status = 'success' AND output_tail LIKE 'hello from ok%'") >= 1
            && pg.count(&format!("SELECT count(*) FROM chime_claims WHERE run_id = '{long_run}' AND status = 'running'")) == 1
        },
    );

    // History: the same runs as SQLite's, with the member that ran each.
    let history = json_lines(&read(dir, &pg, &["history", "ok", "--json"]));
    let ok = history
        .iter()
        .find(|run| run["outcome"] == "success")
        .unwrap_or_else(|| panic!("a success of ok: {history:?}"));
    assert_eq!(ok["member"], "a", "{ok}");
    assert_eq!(ok["job"], "ok");
    assert_eq!(ok["trigger"], "schedule");
    assert!(
        ok["output_tail"]
            .as_str()
            .is_some_and(|t| t.contains("hello from ok")),
        "{ok}"
    );
    let text = read(dir, &pg, &["history", "-n", "50"]);
    let header = text.lines().next().unwrap_or_default();
    assert!(
        header.contains("RUN_ID") && header.contains("MEMBER"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains(" ok ") && l.contains(" a ") && l.contains("success")),
        "{text}"
    );
    let one = read(dir, &pg, &["history", &long_run]);
    assert!(
        one.contains(&format!("run {long_run} of long")) && one.contains("member     a"),
        "{one}"
    );

    // Status: each job's last run and where it ran; every replica's runs in flight.
    let schedules_arg = schedules.to_string_lossy().into_owned();
    let status = json_lines(&read(dir, &pg, &["status", &schedules_arg, "--json"]));
    let job = |name: &str| {
        status
            .iter()
            .find(|j| j["job"] == name)
            .unwrap_or_else(|| panic!("{name} in {status:?}"))
            .clone()
    };
    assert_eq!(job("ok")["last_run"]["member"], "a");
    let long = job("long");
    assert_eq!(long["running"], 1, "{long}");
    let in_flight = long["runs_in_flight"].as_array().expect("runs in flight");
    assert_eq!(in_flight.len(), 1, "{long}");
    assert_eq!(in_flight[0]["member"], "a");
    assert_eq!(in_flight[0]["run_id"], long_run.as_str());
    let text = read(dir, &pg, &["status", &schedules_arg]);
    let ok_line = text
        .lines()
        .find(|l| l.starts_with("ok "))
        .unwrap_or_default();
    assert!(ok_line.contains(" a "), "ok last ran on a: {text}");
    assert!(
        text.contains("RUNS IN FLIGHT") && text.lines().any(|l| l.starts_with(&long_run)),
        "{text}"
    );

    // SIGKILL, and started again under the same member, ok no longer due: long's run
    // is interrupted (its group still lives on this host), and ok's last success is
    // restored from the cluster's history.
    let succeeded: f64 = pg.query(
        "SELECT extract(epoch FROM max(finished)) FROM chime_claims WHERE job = 'ok' AND status = 'success'",
    )[0][0]
        .parse()
        .expect("a time");
    a.signal(libc::SIGKILL);
    a.wait_exit(LIMIT);
    assert!(!support::process::live_group_members(leftover).is_empty());
    write(&schedules, "jobs.yaml", jobs("0 3 1 1 *"));
    let addr = free_addr();
    let mut again = replica(dir, &pg, "a", &addr);
    again.guard_group(leftover);
    // Taken over before the service starts (and before or after it joins).
    let interrupted = again.wait_for("long's run is interrupted", LIMIT, |e| {
        name(e) == "run.interrupted" && e["run_id"] == long_run.as_str()
    });
    assert_eq!(interrupted["job"], "long");
    assert_eq!(interrupted["still_running"], true, "{interrupted}");
    assert_eq!(uint(&interrupted, "pid"), leftover as u64);
    assert_eq!(
        pg.count(&format!(
            "SELECT count(*) FROM chime_claims WHERE run_id = '{long_run}' AND status = 'interrupted'"
        )),
        1
    );
    let restored = last_success(&addr, "ok").expect("ok's last success, from PostgreSQL");
    assert!(
        (restored - succeeded).abs() < 0.01,
        "{restored} vs {succeeded}"
    );
    // The leftover group counts as long running: no second copy beside it.
    again.wait_for("long is skipped", LIMIT, |e| {
        is(e, "run.skipped", "long") && e["reason"] == "overlap"
    });
    assert!(
        !again.events().iter().any(|e| is(e, "run.started", "long")),
        "{}",
        again.transcript()
    );
    again.stop();
}

#[test]
fn cluster_flags_after_the_subcommand_work() {
    let Some(pg) = Pg::database("chime_flags_after") else {
        return;
    };
    let dir = temp_dir();
    let dir = dir.path();
    let schedules = dir.join("schedules");
    std::fs::create_dir_all(&schedules).expect("mkdir");
    write(
        &schedules,
        "jobs.yaml",
        "jobs:\n  tick:\n    schedule: \"* * * * * *\"\n    command: \"true\"\n",
    );
    let password_file = pg.password_file.to_string_lossy().into_owned();
    let schedules_arg = schedules.to_string_lossy().into_owned();
    let url = pg.url();
    let mut chime = support::command(
        dir,
        [
            "run",
            "--log-format",
            "json",
            "--cluster",
            &url,
            "--cluster-password-file",
            &password_file,
            "--cluster-member",
            "after",
            &schedules_arg,
        ],
    )
    .spawn();
    chime.wait_event("cluster.joined", LIMIT);
    wait_until("tick ran on member after", LIMIT, || {
        pg.count(
            "SELECT count(*) FROM chime_claims WHERE job = 'tick' AND member = 'after' AND status = 'success'",
        ) >= 1
    });
    let out = support::run(
        dir,
        [
            "status",
            "--cluster",
            &url,
            "--cluster-password-file",
            &password_file,
            &schedules_arg,
        ],
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let tick = out
        .stdout
        .lines()
        .find(|l| l.starts_with("tick "))
        .unwrap_or_default();
    assert!(tick.contains(" after "), "{}", out.stdout);
    let out = support::run(
        dir,
        [
            "history",
            "tick",
            "--json",
            "--cluster",
            &url,
            "--cluster-password-file",
            &password_file,
        ],
        LIMIT,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        json_lines(&out.stdout)
            .iter()
            .any(|run| run["member"] == "after"),
        "{}",
        out.stdout
    );
    chime.stop();
}

/// Three replicas' writers at once, each writing fires handled, runs started and runs
/// ended for the same 150 jobs in its own order (a replica runs a job at one instant,
/// another at the next): they wait for each other but never deadlock (the jobs' rows
/// are locked last, in the jobs' order), and every run is written.
#[test]
fn replicas_writing_the_same_jobs_at_once_never_deadlock() {
    let Some(pg) = Pg::database("chime_store_contention") else {
        return;
    };
    const JOBS: usize = 150;
    const BATCHES: usize = 12;
    let threads: Vec<_> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(k, member)| {
            let options = options(&pg, member);
            let member = member.to_string();
            std::thread::spawn(move || {
                let mut store = PgStore::open(&options, Some(&member)).expect("opens");
                // A different order for each replica, and for each batch.
                let mut order: Vec<usize> = (0..JOBS).collect();
                for round in 0..BATCHES {
                    order.rotate_left(37 * (k + 1) + round);
                    if (k + round) % 2 == 1 {
                        order.reverse();
                    }
                    let at = t(1_000 * (round as i64 * 3 + k as i64));
                    let mut batch = Vec::new();
                    for &j in &order {
                        let job = format!("job{j:03}");
                        let run_id = format!("{member}-{round}-{j}");
                        batch.push(Write::Handled {
                            job: job.clone(),
                            at,
                        });
                        batch.push(Write::Started(RunStart {
                            job,
                            run_id: run_id.clone(),
                            scheduled_at: at,
                            trigger: "manual".into(),
                            attempt: 1,
                            started: at,
                            lateness_ms: 1.0,
                            pid: None,
                            pid_start: None,
                        }));
                    }
                    for &j in order.iter().rev() {
                        batch.push(Write::Finished(chime::state::RunEnd {
                            run_id: format!("{member}-{round}-{j}"),
                            attempts: 1,
                            outcome: if j % 3 == 0 { "failure" } else { "success" }.into(),
                            exit_code: Some(i32::from(j % 3 == 0)),
                            signal: None,
                            http_status: None,
                            error: None,
                            finished: at,
                            duration_ms: 5,
                            output_tail: String::new(),
                        }));
                    }
                    store.apply(&batch).expect("the batch applies");
                }
                store.deadlocks()
            })
        })
        .collect();
    let deadlocks: Vec<u64> = threads
        .into_iter()
        .map(|t| t.join().expect("the writer thread"))
        .collect();
    assert_eq!(
        deadlocks,
        vec![0, 0, 0],
        "transactions rolled back as deadlock victims"
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM chime_claims WHERE status IN ('success', 'failure')"),
        (3 * JOBS * BATCHES) as i64,
        "every run written, ended"
    );
    assert_eq!(
        pg.count("SELECT count(*) FROM chime_jobs WHERE job LIKE 'job%'"),
        JOBS as i64
    );
}
