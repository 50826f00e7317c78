//! The claim statement of replicas (`chime::cluster::claim_statement`) against a plain
//! model: random sequences of claims by several members (at the instant, ahead of it,
//! catch-up, out of the window), runs starting and ending, pauses and resumes, each
//! checked for what it decided and for the rows it left. Also the claim sent ahead of
//! an instant, by example: an `overlap: skip` job whose earlier run is still live is
//! not skipped then but deferred, and claimed at the instant once that run has ended.
//!
//! They need the throwaway PostgreSQL of `scripts/test-postgres`; without it each says
//! SKIPPED (visibly), and under `CHIME_TEST_REQUIRE_POSTGRES` fails.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use proptest::prelude::*;

use chime::cluster::{ClaimJob, ClaimOutcome, ClaimRequest, ClusterOptions, claim_statement};
use support::postgres::Pg;

const JOBS: [&str; 4] = ["j0", "j1", "j2", "j3"];
/// j0 and j1 are `overlap: skip`.
const SKIP: [bool; 4] = [true, true, false, false];
const MEMBERS: [&str; 3] = ["a", "b", "c"];

fn options(pg: &Pg) -> ClusterOptions {
    let password = std::fs::read_to_string(&pg.password_file).expect("the password file");
    ClusterOptions {
        url: pg.url(),
        password: Some(password.trim().to_string()),
        member: "test".into(),
        lease: Duration::from_secs(30),
        fallback: Duration::from_secs(1),
        claim_ahead: Duration::from_millis(250),
    }
}

struct Db {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Db {
    fn open(pg: &Pg) -> Db {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let client = runtime
            .block_on(chime::cluster::client(&options(pg)))
            .expect("connects and migrates");
        Db { runtime, client }
    }

    fn claim(
        &self,
        member: &str,
        at: DateTime<Utc>,
        jobs: &[usize],
        catch_up: bool,
        ahead: bool,
    ) -> ClaimOutcome {
        let jobs: Vec<ClaimJob<'_>> = jobs
            .iter()
            .map(|&j| ClaimJob {
                name: JOBS[j],
                hash: "h",
                skip: SKIP[j],
            })
            .collect();
        let request = ClaimRequest {
            at,
            member,
            jobs: &jobs,
            catch_up,
            ahead,
            lease: Duration::from_secs(30),
        };
        self.runtime
            .block_on(claim_statement(&self.client, &request))
            .expect("the claim statement")
    }

    fn execute(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) {
        self.runtime
            .block_on(self.client.execute(sql, params))
            .expect("a statement");
    }

    /// (job, instant) → (member, status) of every fire's claim.
    fn rows(&self) -> BTreeMap<(String, DateTime<Utc>), (String, String)> {
        self.runtime
            .block_on(self.client.query(
                "SELECT job, scheduled_at, member, status FROM chime_claims WHERE epoch >= 0",
                &[],
            ))
            .expect("the claims")
            .iter()
            .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
            .collect()
    }
}

/// Whole seconds, a little ahead: instants a few seconds from it are well inside the
/// window (60 s either side of the database's clock), ±120 s from it outside.
fn base() -> DateTime<Utc> {
    Utc::now()
        .duration_trunc(TimeDelta::seconds(1))
        .expect("truncates")
        + TimeDelta::seconds(10)
}

#[test]
fn a_skip_job_claimed_ahead_waits_for_the_instant_to_be_decided() {
    let Some(pg) = Pg::database("chime_claim_ahead") else {
        return;
    };
    let db = Db::open(&pg);
    let t0 = base();
    let t1 = t0 + TimeDelta::seconds(1);
    // j0 (skip) at t0, claimed by a and running.
    let first = db.claim("a", t0, &[0], false, false);
    assert_eq!(first.won, ["j0"]);
    db.execute(
        "UPDATE chime_claims SET status = 'running', started = now() WHERE job = 'j0'",
        &[],
    );
    // Ahead of t1, by b: j0 is not decided (its t0 run may end before t1); j2 (allow)
    // is won. Nothing is written for j0, so no one else is kept from it either.
    let ahead = db.claim("b", t1, &[0, 2], false, true);
    assert_eq!(ahead.won, ["j2"]);
    assert_eq!(ahead.deferred, ["j0"]);
    assert!(ahead.skipped.is_empty(), "{ahead:?}");
    assert!(!db.rows().contains_key(&("j0".to_string(), t1)));
    // The t0 run ends before t1: the claim at the instant wins.
    db.execute(
        "UPDATE chime_claims SET status = 'success', finished = now() WHERE job = 'j0'",
        &[],
    );
    let at_instant = db.claim("b", t1, &[0], false, false);
    assert_eq!(at_instant.won, ["j0"]);
    // And when the earlier run is still live at the instant, the claim there skips.
    let t2 = t1 + TimeDelta::seconds(1);
    let ahead = db.claim("c", t2, &[0], false, true);
    assert_eq!(ahead.deferred, ["j0"]);
    let at_instant = db.claim("c", t2, &[0], false, false);
    assert_eq!(at_instant.skipped, ["j0"]);
    assert_eq!(
        db.rows().get(&("j0".to_string(), t2)),
        Some(&("c".to_string(), "skipped".to_string()))
    );
    // A paused job is decided ahead all the same: paused.
    db.execute("INSERT INTO chime_paused (job) VALUES ('j0')", &[]);
    let t3 = t2 + TimeDelta::seconds(1);
    let ahead = db.claim("a", t3, &[0], false, true);
    assert_eq!(ahead.paused, ["j0"]);
    assert!(ahead.deferred.is_empty());
}

/// What a test does to the claims.
#[derive(Debug, Clone)]
enum Op {
    /// `member` claims `jobs` (indexes into JOBS) at instant `at` (seconds from the
    /// base; beyond ±60 s out of the window).
    Claim {
        member: usize,
        at: i64,
        jobs: Vec<usize>,
        catch_up: bool,
        ahead: bool,
    },
    /// The run of a won claim starts (`pick` chooses among the claimed rows).
    Start {
        pick: usize,
    },
    /// A live run ends.
    Finish {
        pick: usize,
    },
    Pause {
        job: usize,
    },
    Resume {
        job: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            0..MEMBERS.len(),
            prop_oneof![9 => -3i64..6, 1 => prop_oneof![Just(-120i64), Just(120i64)]],
            proptest::sample::subsequence((0..JOBS.len()).collect::<Vec<_>>(), 1..=JOBS.len()),
            prop::bool::weighted(0.1),
            any::<bool>(),
        )
            .prop_map(|(member, at, jobs, catch_up, ahead)| Op::Claim {
                member,
                at,
                jobs,
                catch_up,
                ahead,
            }),
        2 => any::<usize>().prop_map(|pick| Op::Start { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Finish { pick }),
        1 => (0..JOBS.len()).prop_map(|job| Op::Pause { job }),
        1 => (0..JOBS.len()).prop_map(|job| Op::Resume { job }),
    ]
}

/// The plain model: each fire's claim, and the paused jobs.
#[derive(Default)]
struct Model {
    rows: BTreeMap<(String, DateTime<Utc>), (String, String)>,
    paused: BTreeSet<String>,
}

impl Model {
    /// What the claim decides: (won, skipped, paused, deferred), and the rows it adds.
    fn claim(
        &mut self,
        member: &str,
        at: DateTime<Utc>,
        jobs: &[usize],
        in_window: bool,
        ahead: bool,
    ) -> [Vec<String>; 4] {
        let mut out: [Vec<String>; 4] = Default::default();
        if !in_window {
            return out;
        }
        for &j in jobs {
            let job = JOBS[j].to_string();
            let key = (job.clone(), at);
            if self.rows.contains_key(&key) {
                continue; // another member's (or an earlier claim's) already
            }
            let busy = SKIP[j]
                && self.rows.iter().any(|((k, when), (_, status))| {
                    *k == job && *when < at && (status == "claimed" || status == "running")
                });
            let status = if self.paused.contains(&job) {
                "paused"
            } else if busy && ahead {
                out[3].push(job);
                continue;
            } else if busy {
                "skipped"
            } else {
                "claimed"
            };
            let list = match status {
                "claimed" => 0,
                "skipped" => 1,
                _ => 2,
            };
            out[list].push(job);
            self.rows
                .insert(key, (member.to_string(), status.to_string()));
        }
        for list in &mut out {
            list.sort();
        }
        out
    }

    /// The `pick`-th row in `status` (in key order), if any.
    fn pick(&self, status: &[&str], pick: usize) -> Option<(String, DateTime<Utc>)> {
        let live: Vec<_> = self
            .rows
            .iter()
            .filter(|(_, (_, s))| status.contains(&s.as_str()))
            .map(|(k, _)| k.clone())
            .collect();
        (!live.is_empty()).then(|| live[pick % live.len()].clone())
    }
}

#[test]
fn claims_agree_with_the_plain_model() {
    let Some(pg) = Pg::database("chime_claims_model") else {
        return;
    };
    let db = Db::open(&pg);
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..40))| {
        db.execute("TRUNCATE chime_claims, chime_paused", &[]);
        let base = base();
        let mut model = Model::default();
        for op in &ops {
            match op {
                Op::Claim { member, at, jobs, catch_up, ahead } => {
                    let when = base + TimeDelta::seconds(*at);
                    let got = db.claim(MEMBERS[*member], when, jobs, *catch_up, *ahead);
                    let in_window = *catch_up || at.abs() < 100;
                    prop_assert_eq!(got.in_window, in_window, "{:?}", op);
                    let [won, skipped, paused, deferred] =
                        model.claim(MEMBERS[*member], when, jobs, in_window, *ahead);
                    prop_assert_eq!(&got.won, &won, "won: {:?}", op);
                    prop_assert_eq!(&got.skipped, &skipped, "skipped: {:?}", op);
                    prop_assert_eq!(&got.paused, &paused, "paused: {:?}", op);
                    prop_assert_eq!(&got.deferred, &deferred, "deferred: {:?}", op);
                    prop_assert!(got.drifted.is_empty());
                }
                Op::Start { pick } => {
                    if let Some((job, at)) = model.pick(&["claimed"], *pick) {
                        db.execute(
                            "UPDATE chime_claims SET status = 'running', started = now() WHERE job = $1 AND scheduled_at = $2",
                            &[&job, &at],
                        );
                        if let Some(row) = model.rows.get_mut(&(job, at)) {
                            row.1 = "running".into();
                        }
                    }
                }
                Op::Finish { pick } => {
                    if let Some((job, at)) = model.pick(&["claimed", "running"], *pick) {
                        db.execute(
                            "UPDATE chime_claims SET status = 'success', finished = now() WHERE job = $1 AND scheduled_at = $2",
                            &[&job, &at],
                        );
                        if let Some(row) = model.rows.get_mut(&(job, at)) {
                            row.1 = "success".into();
                        }
                    }
                }
                Op::Pause { job } => {
                    db.execute(
                        "INSERT INTO chime_paused (job) VALUES ($1) ON CONFLICT DO NOTHING",
                        &[&JOBS[*job]],
                    );
                    model.paused.insert(JOBS[*job].to_string());
                }
                Op::Resume { job } => {
                    db.execute("DELETE FROM chime_paused WHERE job = $1", &[&JOBS[*job]]);
                    model.paused.remove(JOBS[*job]);
                }
            }
            prop_assert_eq!(&db.rows(), &model.rows, "rows after {:?}", op);
        }
    });
}
