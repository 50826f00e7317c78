//! chime: a cron-style scheduler service.
//!
//! # Layout
//! - [`duration`]: the `90s` / `1h30m` duration syntax.
//! - [`cron`]: cron expressions and the time engine (Debian cron's matching and DST rules).
//! - [`job`]: the validated domain model of a job.
//! - [`config`]: schedule files → validated jobs, with every error located.
//! - [`events`]: the log events of DESIGN.md §6 and the handle that carries them.
//! - [`exec`]: executors that carry out one attempt: [`exec::shell`], [`exec::http`].
//! - [`cli`]: the command line and the `check` / `next` commands.

pub mod cli;
pub mod config;
pub mod cron;
pub mod duration;
pub mod events;
pub mod exec;
pub mod job;
