//! Replicas cut off from PostgreSQL (issue 17): the server is stopped for longer than
//! a lease. Every replica fences (terminates its runs before their leases end); after
//! the server is back nothing runs twice. Alone in its binary: it stops the server
//! that the other replica tests use. Skipped without `CHIME_TEST_POSTGRES` (see
//! `tests/support/postgres.rs`).

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DurationRound, TimeDelta, Utc};

use support::postgres::Pg;
use support::{Chime, LIMIT, temp_dir, wait_until, write};

fn live_groups(pids: &Path) -> Vec<i32> {
    std::fs::read_to_string(pids)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .filter(|pid| !support::process::live_group_members(*pid).is_empty())
        .collect()
}

struct Groups(std::path::PathBuf);

impl Drop for Groups {
    fn drop(&mut self) {
        for pid in live_groups(&self.0) {
            // SAFETY: only sends a signal, to a group a run of this test leads.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
}

/// Restarts the server if the test fails while it is stopped.
struct Restart<'a>(&'a Pg, bool);

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.start_server();
        }
    }
}

#[test]
fn replicas_cut_off_from_the_database_fence_and_nothing_doubles_after() {
    let Some(pg) = Pg::database("chime_partition") else {
        return;
    };
    let tmp = temp_dir();
    let dir = tmp.path();
    let marks = dir.join("markers");
    std::fs::create_dir_all(&marks).expect("mkdir");
    let pids = dir.join("pids");
    let _groups = Groups(pids.clone());
    let mark = format!(
        "echo \"$CHIME_SCHEDULED_AT\" >> {}/\"$CHIME_JOB\"",
        marks.display()
    );
    let mut yaml = String::from("defaults:\n  timezone: UTC\n  kill_grace: 500ms\njobs:\n");
    yaml.push_str(&format!(
        "  tick:\n    schedule: \"* * * * * *\"\n    overlap: allow\n    command: '{mark}'\n"
    ));
    for i in 0..6 {
        yaml.push_str(&format!(
            "  long{i}:\n    schedule: \"* * * * * *\"\n    command: 'echo $$ >> {}; {mark}; exec sleep 60'\n",
            pids.display()
        ));
    }
    let schedules = dir.join("schedules");
    std::fs::create_dir_all(&schedules).expect("mkdir");
    write(&schedules, "jobs.yaml", yaml);
    let mut replicas: Vec<Chime> = ["a", "b", "c"]
        .iter()
        .map(|member| {
            let mut args = pg.replica_args(member, "3s", "300ms");
            args.extend(
                ["--shutdown-grace", "1s", "--log-format", "json", "run"].map(String::from),
            );
            args.push(schedules.to_string_lossy().into_owned());
            let mut chime = support::command(dir, &args).spawn();
            chime.wait_event("cluster.joined", LIMIT);
            chime
        })
        .collect();
    wait_until("the 6 long jobs run", LIMIT, || {
        pg.count("SELECT count(*) FROM chime_claims WHERE job LIKE 'long%' AND status = 'running'")
            == 6
    });
    let before: HashMap<String, String> = pg
        .query("SELECT job, member FROM chime_claims WHERE job LIKE 'long%' AND status = 'running'")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    assert_eq!(
        live_groups(&pids).len(),
        6,
        "one process group per long run"
    );

    let stopped = std::time::Instant::now();
    pg.stop_server();
    let restart = Restart(&pg, true);
    // Every replica that runs something fences: its runs end before the lease (3 s).
    let owners: std::collections::BTreeSet<&String> = before.values().collect();
    for replica in &mut replicas {
        replica.wait_event("cluster.fenced", LIMIT);
    }
    wait_until("the long runs' groups are gone", LIMIT, || {
        live_groups(&pids).is_empty()
    });
    let fenced_in = stopped.elapsed();
    assert!(
        fenced_in < Duration::from_secs(3),
        "fenced and terminated within the lease: {fenced_in:?}"
    );
    // Each fenced run ends as cancelled, `by: fence` (not replace or shutdown).
    for (member, replica) in ["a", "b", "c"].iter().zip(&mut replicas) {
        if !owners.iter().any(|owner| owner.as_str() == *member) {
            continue;
        }
        let long_finished = |e: &serde_json::Value| {
            e["event"] == "run.finished" && e["job"].as_str().is_some_and(|j| j.starts_with("long"))
        };
        let finished = match replica.events().iter().find(|e| long_finished(e)) {
            Some(event) => event.clone(),
            None => replica.wait_for("a long run's run.finished", LIMIT, long_finished),
        };
        assert_eq!(finished["outcome"], "cancelled", "{finished}");
        assert_eq!(finished["by"], "fence", "{finished}");
        // Those ends cannot be written now: the history writer says so, and retries
        // (what it wrote after the return is checked below: tick's successes).
        let history_failed = |e: &serde_json::Value| {
            e["event"] == "cluster.failed"
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("writing the run history"))
        };
        let failed = match replica.events().iter().find(|e| history_failed(e)) {
            Some(event) => event.clone(),
            None => replica.wait_for("the history writer's cluster.failed", LIMIT, history_failed),
        };
        assert!(
            failed["fix"]
                .as_str()
                .is_some_and(|f| f.contains("chime retries") && f.contains("firing goes on")),
            "{failed}"
        );
    }
    // The outage lasts longer than a lease (the test's parameter, not a wait for an event).
    std::thread::sleep(Duration::from_secs(4).saturating_sub(stopped.elapsed()));
    pg.start_server();
    let outage = stopped.elapsed();
    std::mem::forget(restart);
    for replica in &mut replicas {
        replica.wait_event("cluster.recovered", Duration::from_secs(40));
    }
    // Claims go on: tick runs again, and the long jobs start again, once each.
    let back = Utc::now()
        .duration_trunc(TimeDelta::seconds(1))
        .expect("trunc")
        + TimeDelta::seconds(2);
    wait_until("tick runs after the return", LIMIT, || {
        pg.count(&format!(
            "SELECT count(*) FROM chime_claims WHERE job = 'tick' AND status = 'success' AND scheduled_at >= '{}'",
            back.to_rfc3339()
        )) >= 3
    });
    wait_until("the long jobs run again", LIMIT, || {
        pg.count("SELECT count(*) FROM chime_claims WHERE job LIKE 'long%' AND status = 'running'")
            == 6
    });
    let live = pg.query(
        "SELECT job, count(*) FROM chime_claims WHERE status IN ('claimed', 'running') AND job LIKE 'long%' GROUP BY job HAVING count(*) > 1",
    );
    assert!(live.is_empty(), "a long job live twice: {live:?}");
    assert_eq!(
        live_groups(&pids).len(),
        6,
        "one process group per long job, no more"
    );
    for replica in &mut replicas {
        replica.stop();
    }
    // The runs cut off ended as cancelled (by their replica) or lost (by another).
    let cut: Vec<Vec<String>> = before
        .iter()
        .flat_map(|(job, member)| {
            pg.query(&format!(
                "SELECT job, member, status FROM chime_claims WHERE job = '{job}' AND member = '{member}' AND status IN ('cancelled', 'lost') ORDER BY scheduled_at LIMIT 1"
            ))
        })
        .collect();
    assert_eq!(
        cut.len(),
        6,
        "the runs cut off ended cancelled or lost: {cut:?}"
    );
    let live = pg.query(
        "SELECT job, member, status FROM chime_claims WHERE status IN ('claimed', 'running')",
    );
    assert!(
        live.is_empty(),
        "after a clean stop nothing is left running: {live:?}"
    );
    // Nothing ran twice: every instant once per job, in the markers.
    for entry in std::fs::read_dir(&marks).expect("markers") {
        let entry = entry.expect("entry");
        let text = std::fs::read_to_string(entry.path()).expect("marker");
        let mut seen = HashMap::new();
        for line in text.lines() {
            *seen.entry(line.to_string()).or_insert(0) += 1;
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "{:?} ran twice: {twice:?}",
            entry.file_name()
        );
    }
    let fenced = owners.len();
    eprintln!(
        "partition: server stopped {outage:?} (lease 3s); all 3 replicas logged cluster.fenced; the long runs (on {fenced} of them) were terminated {fenced_in:?} after the stop; all 3 recovered; no instant ran twice"
    );
}
