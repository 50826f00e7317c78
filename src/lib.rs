//! chime: a cron-style scheduler service.
//!
//! The time engine, as `chime next` uses it: Debian cron's rules, per-job zones, DST.
//!
//! ```
//! use chime::cron::Schedule;
//! use chrono::{DateTime, Utc};
//!
//! let schedule = Schedule::parse("30 2 * * *").expect("a valid expression");
//! let from: DateTime<Utc> = "2026-03-28T12:00:00Z".parse().expect("an RFC 3339 time");
//! let berlin = chrono_tz::Europe::Berlin;
//! let fires: Vec<String> = schedule
//!     .fires_after(berlin, from)
//!     .take(2)
//!     .map(|at| at.with_timezone(&berlin).to_rfc3339())
//!     .collect();
//! // 02:30 does not exist on the night clocks go forward: it fires once, at 03:00.
//! assert_eq!(fires, ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]);
//! ```
//!
//! # Layout
//! Data flows one way: files → [`config`] → [`scheduler`] → [`dispatch`] → [`run`] →
//! [`exec`] → [`events`] → [`logging`]. [`daemon`] owns the lifecycle; [`cli`] is the
//! only place that knows about the command line, stderr and exit codes.
//!
//! The binary's edge
//! - [`cli`]: the command line, stderr, exit codes; each command in its own file
//!   (`check`, `next`, `run`, `exec`).
//!
//! The service's lifecycle
//! - [`daemon`]: start, reloads (the control loop), drain, stop, fail — a library
//!   function tests run in-process.
//! - [`watch`]: the schedule directories watched for changes, replaced ones too.
//! - [`control`]: the control socket (`chime trigger`, `pause`, `resume`, `kill`, live
//!   `status`): its protocol, its server on the service's runtime, its client.
//! - [`health`]: heartbeats of the scheduling and control loops; internal failures.
//! - [`systemd`]: sd_notify: readiness, reload, stopping, status, watchdog.
//! - [`memory`]: handing memory freed after loading back to the OS.
//!
//! Schedules and time
//! - [`account`]: users and groups from the system's databases (`user:`, `group:`).
//! - [`config`]: schedule files → validated jobs, with every error located.
//! - [`job`]: the validated domain model of a job.
//! - [`cron`]: cron expressions and the time engine (Debian cron's matching and DST rules);
//!   `cron::describe` puts a schedule in words (`check`, `next --cron`).
//! - [`zone`]: time zones (IANA, TZif, POSIX rules) and the system's zone.
//! - [`duration`]: the `90s` / `1h30m` duration syntax.
//! - [`clock`]: the wall clock, steps of it, the early wake-up before an instant, and a
//!   virtual clock for tests.
//!
//! Fires and runs
//! - [`scheduler`]: next fires ordered by instant; reloads in slices; clock steps and
//!   missed fires.
//! - [`dispatch`]: what becomes of a fire: overlap policy, concurrency limit and queue,
//!   deadlines; it hands the runs it starts to [`run`] and tracks their tasks.
//! - [`run`]: one run from its hand-over to the release of its slot: its place among
//!   the job's runs in flight, attempt admission at shutdown, attempts, retry backoff,
//!   run events.
//! - [`exec`]: executors that carry out one attempt: [`exec::shell`], [`exec::http`];
//!   a shell job's clean environment ([`exec::environment`]) and its switch to its
//!   `user:` / `group:` ([`exec::identity`]).
//!
//! Memory across restarts
//! - [`state`]: the state store (run history, last fires handled, paused jobs) behind
//!   one trait, its embedded SQLite implementation and the writer thread that feeds it.
//! - [`cluster`]: replicas on PostgreSQL (`--cluster`): each fire claimed before it
//!   runs, leases and fencing, lost runs, the cluster's history.
//!
//! The log
//! - [`events`]: the log events of DESIGN.md §6, their schema (levels, fields) and the
//!   handle that carries them.
//! - [`logging`]: the writers of that schema: text and JSON lines, native journal
//!   entries; the writer thread.
//! - [`monitor`]: Prometheus metrics, `/health` and `/metrics` (`--listen`), and each
//!   job's pings (healthchecks.io, `on_*` hooks), fed from [`events`] on a thread of
//!   its own.
//!
//! Where the next features go: metrics read [`events`] like the log writers, and
//! `/health` answers from [`health`].

pub mod account;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod control;
pub mod cron;
pub mod daemon;
pub mod dispatch;
pub mod duration;
pub mod events;
pub mod exec;
pub mod health;
pub mod job;
pub mod logging;
pub mod memory;
pub mod monitor;
pub mod run;
pub mod scheduler;
pub mod state;
pub mod systemd;
pub mod watch;
pub mod zone;
