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
//! - [`duration`]: the `90s` / `1h30m` duration syntax.
//! - [`zone`]: time zones (IANA, TZif, POSIX rules) and the system's zone.
//! - [`cron`]: cron expressions and the time engine (Debian cron's matching and DST rules).
//! - [`job`]: the validated domain model of a job.
//! - [`config`]: schedule files → validated jobs, with every error located.
//! - [`events`]: the log events of DESIGN.md §6 and the handle that carries them.
//! - [`exec`]: executors that carry out one attempt: [`exec::shell`], [`exec::http`].
//! - [`clock`]: the wall clock, steps of it, the early wake-up before an instant, and a
//!   virtual clock for tests.
//! - [`scheduler`]: next fires ordered by instant; clock steps and missed fires.
//! - [`dispatch`]: what becomes of a fire: overlap policy, concurrency limit and queue,
//!   deadlines; it hands the runs it starts to [`run`] and tracks their tasks.
//! - [`run`]: one run from its hand-over to the release of its slot: its place among
//!   the job's runs in flight, attempt admission at shutdown, attempts, retry
//!   backoff, run events.
//! - [`logging`]: events → text / JSON lines on a writer thread.
//! - [`journald`]: events as native journal entries; is stderr the journal?
//! - [`health`]: heartbeats of the scheduling and control loops; internal failures.
//! - [`systemd`]: sd_notify: readiness, reload, stopping, status, watchdog.
//! - [`memory`]: handing memory freed after loading back to the OS.
//! - [`watch`]: the schedule directories watched for changes, replaced ones too.
//! - [`daemon`]: the service's lifecycle and the `run` / `exec` commands.
//! - [`cli`]: the command line and the `check` / `next` commands.

pub mod cli;
pub mod clock;
pub mod config;
pub mod cron;
pub mod daemon;
pub mod dispatch;
pub mod duration;
pub mod events;
pub mod exec;
pub mod health;
pub mod job;
pub mod journald;
pub mod logging;
pub mod memory;
pub mod run;
pub mod scheduler;
pub mod systemd;
pub mod watch;
pub mod zone;
