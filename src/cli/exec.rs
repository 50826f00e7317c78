//! `chime exec JOB`: one run now, in the foreground, with its timeout and retries,
//! logged to stderr.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::run::{forward_signals, runtime, start_logging};
use super::{Settings, exit, real_executor, report_errors};
use crate::clock::{Clock, SystemClock};
use crate::config;
use crate::daemon::Control;
use crate::events::{Outcome, Trigger};
use crate::run::{RunRequest, RunSettings, execute_run, new_run_id};

/// `chime exec JOB`: one run now, in the foreground, logged to stderr.
pub(super) fn exec(name: &str, paths: &[PathBuf], settings: &Settings) -> u8 {
    let options = settings.load_options(settings.default_timezone);
    let config = match config::load(paths, &options) {
        Ok(config) => config,
        Err(errors) => {
            report_errors(&errors);
            return exit::FAILED;
        }
    };
    let Some(job) = config.jobs.into_iter().find(|job| job.name == name) else {
        eprintln!("error: no job named `{name}` in the loaded schedules; `chime check` lists them");
        return exit::FAILED;
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return exit::FAILED;
        }
    };
    runtime.block_on(async {
        let executor = match real_executor() {
            Ok(executor) => executor,
            Err(code) => return code,
        };
        let (events, _guard) = start_logging(settings);
        let cancel = CancellationToken::new();
        let on_signal = cancel.clone();
        let (tx, mut rx) = mpsc::channel(8);
        if forward_signals(tx).is_ok() {
            tokio::spawn(async move {
                while let Some(control) = rx.recv().await {
                    if control == Control::Shutdown {
                        on_signal.cancel();
                    }
                }
            });
        }
        let clock = SystemClock;
        let request = RunRequest {
            name: Arc::from(job.name.as_str()),
            job: Arc::new(job),
            run_id: new_run_id(),
            scheduled_at: clock.now(),
            trigger: Trigger::Manual,
            // A signal ends the run as a shutdown does (`by: shutdown`).
            stop_retries: cancel.clone(),
            cancel,
            caller_uid: None,
            live: None,
        };
        let report =
            execute_run(&executor, &clock, &events, &RunSettings::default(), request).await;
        if report.outcome == Outcome::Success {
            exit::OK
        } else {
            exit::FAILED
        }
    })
}
