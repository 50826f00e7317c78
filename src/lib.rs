//! chime: a cron-style scheduler service.
//!
//! # Layout
//! - [`duration`]: the `90s` / `1h30m` duration syntax.
//! - [`cron`]: cron expressions and the time engine (Debian cron's matching and DST rules).
//! - [`job`]: the validated domain model of a job.
//! - [`config`]: schedule files → validated jobs, with every error located.
//! - [`events`]: the log events of DESIGN.md §6 and the handle that carries them.
//! - [`exec`]: executors that carry out one attempt: [`exec::shell`], [`exec::http`].
//! - [`clock`]: the wall clock, steps of it, and a virtual clock for tests.
//! - [`scheduler`]: the min-heap of next fires; clock steps and missed fires.
//! - [`dispatch`]: overlap policy, concurrency limit, runs in flight.
//! - [`run`]: one run: attempts, retry backoff, run events.
//! - [`logging`]: events → text / JSON lines on a writer thread.
//! - [`journald`]: events as native journal entries; is stderr the journal?
//! - [`systemd`]: sd_notify: readiness, reload, stopping, status, watchdog.
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
pub mod job;
pub mod journald;
pub mod logging;
pub mod run;
pub mod scheduler;
pub mod systemd;
