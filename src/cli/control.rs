//! `chime trigger`, `pause`, `resume`, `kill` (requests on the control socket) and
//! `chime schema`.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;
use serde_json::{Map, Value};

use super::{Settings, exit, print_error};
use crate::control::client::{ClientError, Connection};
use crate::control::{self, Request};

#[derive(Debug, Args)]
pub(crate) struct Targets {
    /// The jobs' names.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub jobs: Vec<String>,
    /// Every job.
    #[arg(long)]
    pub all: bool,
}

/// The socket the settings name, or the exit code after saying why there is none.
fn socket(settings: &Settings) -> Result<PathBuf, u8> {
    match control::socket_path(
        settings.control_socket.as_deref(),
        &control::Env::from_process(),
    ) {
        Ok(Some(path)) => Ok(path),
        Ok(None) => {
            eprintln!("error: --control-socket none: there is no service to ask");
            Err(exit::FAILED)
        }
        Err(hint) => {
            eprintln!("error: {hint}");
            Err(exit::FAILED)
        }
    }
}

fn send(settings: &Settings, request: &Request) -> Result<(Connection, Map<String, Value>), u8> {
    let path = socket(settings)?;
    Connection::send(&path, request).map_err(|err| {
        // Said so, so that `trigger --wait` tells a refused request from a failed run.
        eprintln!("error: the request failed: {err}");
        let mut cause = std::error::Error::source(&err);
        while let Some(inner) = cause {
            eprintln!("  caused by: {inner}");
            cause = inner.source();
        }
        exit::FAILED
    })
}

fn names(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn text<'a>(map: &'a Map<String, Value>, key: &str) -> &'a str {
    map.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `chime trigger JOB [--wait]`.
pub(super) fn trigger(job: &str, wait: bool, settings: &Settings) -> u8 {
    let mut request = Request::new("trigger");
    request.job = Some(job.to_string());
    request.wait = wait;
    let (mut connection, answer) = match send(settings, &request) {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    let run_id = text(&answer, "run_id").to_string();
    let queued = text(&answer, "dispatched") == "queued";
    if !wait {
        let how = if queued {
            " (waiting for a free slot)"
        } else {
            ""
        };
        println!("{run_id}");
        eprintln!("triggered {job}: run {run_id}{how}");
        return exit::OK;
    }
    eprintln!(
        "triggered {job}: run {run_id}{}",
        if queued {
            ", waiting for a free slot"
        } else {
            ""
        }
    );
    follow(&mut connection, job, &run_id)
}

/// Prints the run's output as it comes; the exit code says how the run ended.
fn follow(connection: &mut Connection, job: &str, run_id: &str) -> u8 {
    let mut stdout = std::io::stdout().lock();
    loop {
        let line = match connection.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => {
                eprintln!(
                    "error: the request failed: the service closed the connection before run {run_id} ended; `chime history {run_id}` shows what became of it"
                );
                return exit::FAILED;
            }
            Err(err) => {
                eprintln!("error: the request failed:");
                print_error(&err);
                return exit::FAILED;
            }
        };
        if line.get("ok") == Some(&Value::Bool(false)) {
            eprintln!("error: the request failed: {}", text(&line, "error"));
            return exit::FAILED;
        }
        match text(&line, "event") {
            "run.output" => {
                let out = text(&line, "line");
                if text(&line, "stream") == "stderr" {
                    eprintln!("{out}");
                } else {
                    let _ = writeln!(stdout, "{out}");
                    let _ = stdout.flush();
                }
            }
            "run.retrying" => eprintln!(
                "chime: attempt {} ended: {}; retrying in {} ms",
                line.get("attempt").unwrap_or(&Value::Null),
                text(&line, "outcome"),
                line.get("delay_ms").unwrap_or(&Value::Null)
            ),
            "run.finished" => {
                let outcome = text(&line, "outcome");
                if outcome == "success" {
                    eprintln!("chime: run {run_id} of {job} succeeded");
                    return exit::OK;
                }
                let mut detail = String::new();
                for key in ["exit_code", "signal", "http_status", "error", "by"] {
                    if let Some(value) = line.get(key) {
                        let value = value
                            .as_str()
                            .map_or_else(|| value.to_string(), str::to_string);
                        detail.push_str(&format!(", {key} {value}"));
                    }
                }
                eprintln!(
                    "chime: the run failed: run {run_id} of {job} ended with outcome {outcome}{detail}"
                );
                return exit::FAILED;
            }
            _ => {}
        }
    }
}

/// `chime pause JOB...|--all` and `chime resume JOB...|--all`.
pub(super) fn pause(targets: &Targets, pause: bool, settings: &Settings) -> u8 {
    let mut request = Request::new(if pause { "pause" } else { "resume" });
    request.jobs = targets.jobs.clone();
    request.all = targets.all;
    let answer = match send(settings, &request) {
        Ok((_, answer)) => answer,
        Err(code) => return code,
    };
    let (done, already, verb, state) = if pause {
        ("paused", "already_paused", "paused", "already paused")
    } else {
        ("resumed", "not_paused", "resumed", "not paused")
    };
    for job in names(answer.get(done)) {
        println!("{verb} {job}");
    }
    for job in names(answer.get(already)) {
        println!("{job} was {state}");
    }
    eprintln!("pauses are kept {}", text(&answer, "kept"));
    exit::OK
}

/// `chime kill RUN_ID|JOB`.
pub(super) fn kill(target: &str, settings: &Settings) -> u8 {
    let mut request = Request::new("kill");
    request.target = Some(target.to_string());
    let answer = match send(settings, &request) {
        Ok((_, answer)) => answer,
        Err(code) => return code,
    };
    for run in answer
        .get("killed")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let pid = run
            .get("pid")
            .and_then(Value::as_u64)
            .map_or(String::new(), |pid| format!(" (pid {pid})"));
        println!(
            "killing run {} of {}{pid}: SIGTERM to its process group, SIGKILL after its kill_grace",
            run.get("run_id").and_then(Value::as_str).unwrap_or(""),
            run.get("job").and_then(Value::as_str).unwrap_or("")
        );
    }
    // With replicas: runs of other replicas, asked of their owners.
    for run in answer
        .get("requested")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let field = |key: &str| run.get(key).and_then(Value::as_str).unwrap_or("");
        let flag = |key: &str| run.get(key).and_then(Value::as_bool).unwrap_or(false);
        let pid = run
            .get("pid")
            .and_then(Value::as_u64)
            .map_or(String::new(), |pid| format!(" (pid {pid})"));
        let what = format!(
            "run {} of {} on replica {}{pid}",
            field("run_id"),
            field("job"),
            field("member")
        );
        match (flag("delivered"), flag("ended")) {
            (true, true) => println!(
                "killed {what}: its replica took the request; the run ended {}",
                field("outcome")
            ),
            (true, false) => {
                println!("killing {what}: its replica took the request; the run had not ended yet")
            }
            (false, true) => println!(
                "{what} ended ({}) before its replica took the request",
                field("outcome")
            ),
            (false, false) => println!(
                "asked replica {} to kill {what}: the request is in the database, not taken yet (is that replica up?)",
                field("member")
            ),
        }
    }
    exit::OK
}

/// The live facts of a running service for `chime status`: `Ok(None)` when no service
/// answers (the stored facts are all there is).
pub(super) fn live_status(settings: &Settings) -> Result<Option<Map<String, Value>>, u8> {
    let Ok(Some(path)) = control::socket_path(
        settings.control_socket.as_deref(),
        &control::Env::from_process(),
    ) else {
        return Ok(None);
    };
    match Connection::send(&path, &Request::new("status")) {
        Ok((_, answer)) => Ok(Some(answer)),
        Err(ClientError::NotRunning { .. }) => Ok(None),
        Err(err) => {
            // The stored facts are still worth showing.
            eprintln!("warning: no live facts from the service: {err}");
            Ok(None)
        }
    }
}

/// `chime schema`.
pub(super) fn schema() -> u8 {
    let schema = crate::config::json_schema();
    match serde_json::to_string_pretty(&schema) {
        Ok(text) => {
            println!("{text}");
            exit::OK
        }
        Err(err) => {
            print_error(&err);
            exit::FAILED
        }
    }
}
