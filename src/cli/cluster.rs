//! `chime status` and `chime history` with `--cluster`: the cluster's history, read
//! from PostgreSQL, with the replica (member) that ran each run.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use tokio_postgres::Row;

use super::state::HistoryArgs;
use super::{Settings, exit, load_or_report};
use crate::cluster::ClusterOptions;

/// One row of `chime_claims` as shown.
struct Claim {
    job: String,
    scheduled_at: DateTime<Utc>,
    member: String,
    trigger: String,
    status: String,
    run_id: Option<String>,
    started: Option<DateTime<Utc>>,
    duration_ms: Option<i64>,
    lateness_ms: Option<f64>,
    exit_code: Option<i32>,
    lost_from: Option<String>,
}

const COLUMNS: &str = "job, scheduled_at, member, trigger, status, run_id, started, duration_ms, lateness_ms, exit_code, lost_from";

impl Claim {
    fn of(row: &Row) -> Claim {
        Claim {
            job: row.get(0),
            scheduled_at: row.get(1),
            member: row.get(2),
            trigger: row.get(3),
            status: row.get(4),
            run_id: row.get(5),
            started: row.get(6),
            duration_ms: row.get(7),
            lateness_ms: row.get(8),
            exit_code: row.get(9),
            lost_from: row.get(10),
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "job": self.job,
            "scheduled_at": time(self.scheduled_at),
            "member": self.member,
            "trigger": self.trigger,
            "status": self.status,
            "run_id": self.run_id,
            "started": self.started.map(time),
            "duration_ms": self.duration_ms,
            "lateness_ms": self.lateness_ms,
            "exit_code": self.exit_code,
            "lost_from": self.lost_from,
        })
    }
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Runs `f` with a connection to the cluster's database.
fn with_client<T>(
    options: &ClusterOptions,
    f: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| format!("--cluster {}: {e}", options.redacted()))?;
        if let Some(password) = &options.password {
            config.password(password.as_bytes());
        }
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|e| {
            format!(
                "connecting to {}: {}",
                options.redacted(),
                crate::cluster::error_text(&e)
            )
        })?;
        tokio::spawn(connection);
        f(&client).await.map_err(|e| {
            format!(
                "reading the cluster's history: {}",
                crate::cluster::error_text(&e)
            )
        })
    })
}

fn options(settings: &Settings) -> Result<ClusterOptions, u8> {
    match super::cluster_options(settings) {
        Ok(Some(options)) => Ok(options),
        Ok(None) => Err(exit::USAGE),
        Err(message) => {
            eprintln!("error: {message}");
            Err(exit::USAGE)
        }
    }
}

/// `chime status --cluster`: each job's last run on any replica, and its live runs.
pub(super) fn status(paths: &[PathBuf], json_out: bool, settings: &Settings) -> u8 {
    let Some(config) = load_or_report(paths, settings) else {
        return exit::FAILED;
    };
    let options = match options(settings) {
        Ok(options) => options,
        Err(code) => return code,
    };
    let sql = format!(
        "SELECT DISTINCT ON (job) {COLUMNS} FROM chime_claims
         WHERE status NOT IN ('skipped', 'missed') ORDER BY job, scheduled_at DESC"
    );
    let read = with_client(&options, async |client| {
        let last = client.query(&sql, &[]).await?;
        let live = client
            .query(
                "SELECT job, string_agg(member, ',' ORDER BY member) FROM chime_claims
                 WHERE status IN ('claimed', 'running') GROUP BY job",
                &[],
            )
            .await?;
        Ok((last, live))
    });
    let (last, live) = match read {
        Ok(rows) => rows,
        Err(message) => {
            eprintln!("error: {message}; check --cluster and that the database is up");
            return exit::FAILED;
        }
    };
    let last: HashMap<String, Claim> = last
        .iter()
        .map(Claim::of)
        .map(|c| (c.job.clone(), c))
        .collect();
    let live: HashMap<String, String> = live.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut jobs: Vec<_> = config.jobs.iter().collect();
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    if !json_out {
        let _ = writeln!(
            out,
            "{:<24} {:<16} {:<24} {:<12} {:<10} {:<12}",
            "JOB", "SCHEDULE", "LAST", "RAN ON", "OUTCOME", "RUNNING ON"
        );
    }
    for job in jobs {
        let claim = last.get(&job.name);
        let running = live.get(&job.name).cloned().unwrap_or_default();
        if json_out {
            let line = json!({
                "job": job.name,
                "schedule": job.schedule_text,
                "last_run": claim.map(Claim::json),
                "running_on": running.split(',').filter(|m| !m.is_empty()).collect::<Vec<_>>(),
            });
            let _ = writeln!(out, "{line}");
        } else {
            let (at, member, status) = match claim {
                Some(c) => (
                    c.scheduled_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                    c.member.clone(),
                    c.status.clone(),
                ),
                None => ("never".into(), "-".into(), "-".into()),
            };
            let running = if running.is_empty() {
                "-".into()
            } else {
                running
            };
            let _ = writeln!(
                out,
                "{:<24} {:<16} {:<24} {:<12} {:<10} {:<12}",
                job.name, job.schedule_text, at, member, status, running
            );
        }
    }
    let _ = out.flush();
    exit::OK
}

/// `chime history --cluster`: runs newest first, with the replica that ran each.
pub(super) fn history(args: &HistoryArgs, settings: &Settings) -> u8 {
    let options = match options(settings) {
        Ok(options) => options,
        Err(code) => return code,
    };
    let target = args.target.clone().unwrap_or_default();
    let since = args.since;
    let limit = args.count as i64;
    let failed = args.failed;
    let sql = format!(
        "SELECT {COLUMNS} FROM chime_claims
         WHERE status NOT IN ('skipped', 'missed')
           AND ($1 = '' OR job = $1 OR run_id = $1)
           AND ($2::timestamptz IS NULL OR coalesce(started, scheduled_at) >= $2)
           AND (NOT $3 OR status NOT IN ('success', 'running', 'claimed'))
         ORDER BY coalesce(started, scheduled_at) DESC LIMIT $4"
    );
    let rows = match with_client(&options, async |client| {
        client
            .query(&sql, &[&target, &since, &failed, &limit])
            .await
    }) {
        Ok(rows) => rows,
        Err(message) => {
            eprintln!("error: {message}; check --cluster and that the database is up");
            return exit::FAILED;
        }
    };
    let claims: Vec<Claim> = rows.iter().map(Claim::of).collect();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        for claim in &claims {
            let _ = writeln!(out, "{}", claim.json());
        }
    } else {
        let _ = writeln!(
            out,
            "{:<24} {:<24} {:<16} {:<12} {:<9} {:<10} {:>8} {:>9}  DETAIL",
            "SCHEDULED", "JOB", "RUN_ID", "MEMBER", "TRIGGER", "OUTCOME", "DURATION", "LATENESS"
        );
        for c in &claims {
            let mut detail = Vec::new();
            if let Some(code) = c.exit_code {
                detail.push(format!("exit {code}"));
            }
            if let Some(from) = &c.lost_from {
                detail.push(format!("re-run of a run lost on {from}"));
            }
            let _ = writeln!(
                out,
                "{:<24} {:<24} {:<16} {:<12} {:<9} {:<10} {:>8} {:>9}  {}",
                c.scheduled_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                c.job,
                c.run_id.as_deref().unwrap_or("-"),
                c.member,
                c.trigger,
                c.status,
                c.duration_ms.map_or("-".into(), |ms| format!("{ms}ms")),
                c.lateness_ms.map_or("-".into(), |ms| format!("{ms:.0}ms")),
                detail.join(", ")
            );
        }
    }
    let _ = out.flush();
    exit::OK
}
