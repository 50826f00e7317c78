//! The schema every log writer reads: an event's level, and its fields (names, values,
//! order) as DESIGN.md §6 names them. Writers decide only how to spell them.

use chrono::{DateTime, Utc};

use super::{ClusterKind, Event, ExitDetail, Outcome, SkipReason, rfc3339};

/// How important an event is; `--log-level` and `RUST_LOG` filter on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }

    pub fn parse(text: &str) -> Option<Level> {
        match text.trim().to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            "trace" => Some(Level::Trace),
            _ => None,
        }
    }
}

/// A field value, shared by every output format.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    List(Vec<String>),
}

/// How important an event is.
pub(crate) fn level_of(event: &Event) -> Level {
    match event {
        Event::ConfigRejected { .. } | Event::ServiceFailed { .. } | Event::StateFailed { .. } => {
            Level::Error
        }
        Event::RunFinished { outcome, .. } => match outcome {
            Outcome::Success => Level::Info,
            Outcome::Cancelled => Level::Warn,
            Outcome::Failure | Outcome::Timeout | Outcome::Killed => Level::Error,
        },
        Event::Cluster { kind, .. } => match kind {
            ClusterKind::Failed | ClusterKind::Fenced => Level::Error,
            ClusterKind::Drift | ClusterKind::ClockOff => Level::Warn,
            ClusterKind::Joined | ClusterKind::Recovered => Level::Info,
        },
        Event::ClockJumped { .. }
        | Event::RunLost { .. }
        | Event::ConfigWarning { .. }
        | Event::RunRetrying { .. }
        | Event::RunMissed { .. }
        | Event::RunOutputTruncated { .. }
        | Event::RunInterrupted { .. }
        | Event::HookFailed { .. } => Level::Warn,
        Event::RunSkipped {
            reason: SkipReason::Disabled,
            ..
        } => Level::Debug,
        Event::ControlRequest { result, .. } if result != "ok" => Level::Warn,
        _ => Level::Info,
    }
}

/// How many items a list field leaves out: `config.rejected` lists the first errors
/// only, and a reader of a one-line rendering should see that it is not all of them.
pub(crate) fn omitted_errors(event: &Event) -> usize {
    match event {
        Event::ConfigRejected {
            errors,
            error_count,
        } => error_count.saturating_sub(errors.len()),
        _ => 0,
    }
}

fn detail_fields(fields: &mut Vec<(&'static str, Value)>, detail: &ExitDetail) {
    if let Some(code) = detail.exit_code {
        fields.push(("exit_code", Value::Int(code.into())));
    }
    if let Some(signal) = detail.signal {
        fields.push(("signal", Value::Int(signal.into())));
    }
    if let Some(status) = detail.http_status {
        fields.push(("http_status", Value::UInt(status.into())));
    }
    if let Some(error) = &detail.error {
        fields.push(("error", Value::Str(error.clone())));
    }
}

/// The event's fields, in a stable order, as DESIGN.md §6 names them.
pub fn fields(event: &Event) -> Vec<(&'static str, Value)> {
    use Value::*;
    let s = |v: &str| Str(v.to_string());
    let t = |v: &DateTime<Utc>| Str(rfc3339(*v));
    let mut f: Vec<(&'static str, Value)> = Vec::new();
    match event {
        Event::ServiceStarted {
            version,
            jobs,
            files,
            zone,
        } => {
            f.push(("version", s(version)));
            f.push(("jobs", UInt(*jobs as u64)));
            f.push(("files", UInt(*files as u64)));
            f.push(("zone", s(zone)));
        }
        Event::ServiceStopping {
            version,
            jobs,
            files,
        }
        | Event::ServiceStopped {
            version,
            jobs,
            files,
        } => {
            f.push(("version", s(version)));
            f.push(("jobs", UInt(*jobs as u64)));
            f.push(("files", UInt(*files as u64)));
        }
        Event::ConfigReloaded {
            added,
            changed,
            removed,
            unchanged,
        } => {
            f.push(("added", UInt(*added as u64)));
            f.push(("changed", UInt(*changed as u64)));
            f.push(("removed", UInt(*removed as u64)));
            f.push(("unchanged", UInt(*unchanged as u64)));
        }
        Event::ServiceFailed { what, error } => {
            f.push(("what", s(what)));
            f.push(("error", s(error)));
        }
        Event::ConfigRejected {
            errors,
            error_count,
        } => {
            f.push(("errors", List(errors.clone())));
            f.push(("error_count", UInt(*error_count as u64)));
        }
        Event::ConfigWarning { warnings } => {
            f.push(("warnings", List(warnings.clone())));
        }
        Event::ServiceDraining {
            runs,
            grace_left_ms,
            message,
        } => {
            f.push(("runs", List(runs.clone())));
            f.push(("grace_left_ms", UInt(*grace_left_ms)));
            f.push(("message", s(message)));
        }
        Event::ClockJumped { from, to, delta_ms } => {
            f.push(("from", t(from)));
            f.push(("to", t(to)));
            f.push(("delta_ms", Int(*delta_ms)));
        }
        Event::RunStarted {
            job,
            run_id,
            trigger,
            scheduled_at,
            lateness_ms,
            attempt,
            queued_ms,
            pid,
            caller_uid,
        } => {
            f.push(("job", s(job)));
            f.push(("run_id", s(run_id)));
            f.push(("trigger", s(trigger.as_str())));
            f.push(("scheduled_at", t(scheduled_at)));
            f.push(("lateness_ms", Float(*lateness_ms)));
            f.push(("attempt", UInt((*attempt).into())));
            if let Some(queued_ms) = queued_ms {
                f.push(("queued_ms", Float(*queued_ms)));
            }
            if let Some(pid) = pid {
                f.push(("pid", UInt((*pid).into())));
            }
            if let Some(uid) = caller_uid {
                f.push(("caller_uid", UInt((*uid).into())));
            }
        }
        Event::RunOutput {
            job,
            run_id,
            stream,
            line,
        } => {
            f.push(("job", s(job)));
            f.push(("run_id", s(run_id)));
            f.push(("stream", s(stream.as_str())));
            f.push(("line", s(line)));
        }
        Event::RunOutputTruncated {
            job,
            run_id,
            limit_bytes,
        } => {
            f.push(("job", s(job)));
            f.push(("run_id", s(run_id)));
            f.push(("limit_bytes", UInt(*limit_bytes)));
        }
        Event::RunRetrying {
            job,
            run_id,
            attempt,
            outcome,
            detail,
            delay_ms,
        } => {
            f.push(("job", s(job)));
            f.push(("run_id", s(run_id)));
            f.push(("attempt", UInt((*attempt).into())));
            f.push(("outcome", s(outcome.as_str())));
            detail_fields(&mut f, detail);
            f.push(("delay_ms", UInt(*delay_ms)));
        }
        Event::RunFinished {
            job,
            run_id,
            attempts,
            outcome,
            detail,
            duration_ms,
            output_bytes,
            truncated,
            by,
            caller_uid,
        } => {
            f.push(("job", s(job)));
            f.push(("run_id", s(run_id)));
            f.push(("attempts", UInt((*attempts).into())));
            f.push(("outcome", s(outcome.as_str())));
            detail_fields(&mut f, detail);
            f.push(("duration_ms", UInt(*duration_ms)));
            f.push(("output_bytes", UInt(*output_bytes)));
            f.push(("truncated", Bool(*truncated)));
            if let Some(by) = by {
                f.push(("by", s(by.as_str())));
            }
            if let Some(uid) = caller_uid {
                f.push(("caller_uid", UInt((*uid).into())));
            }
        }
        Event::RunSkipped {
            job,
            scheduled_at,
            reason,
        } => {
            f.push(("job", s(job)));
            f.push(("scheduled_at", t(scheduled_at)));
            f.push(("reason", s(reason.as_str())));
        }
        Event::RunMissed {
            job,
            scheduled_at,
            count,
            reason,
        } => {
            f.push(("job", s(job)));
            f.push(("scheduled_at", t(scheduled_at)));
            f.push(("count", UInt(*count)));
            f.push(("reason", s(reason.as_str())));
        }
        Event::RunInterrupted {
            job,
            run_id,
            scheduled_at,
            still_running,
            pid,
        } => {
            f.push(("job", s(job)));
            f.push(("run_id", s(run_id)));
            f.push(("scheduled_at", t(scheduled_at)));
            f.push(("still_running", Bool(*still_running)));
            if let Some(pid) = pid {
                f.push(("pid", UInt((*pid).into())));
            }
        }
        Event::StateFailed {
            what,
            error,
            fix,
            dropped,
        } => {
            f.push(("what", s(what)));
            f.push(("error", s(error)));
            f.push(("fix", s(fix)));
            f.push(("dropped", UInt(*dropped)));
        }
        Event::Cluster {
            kind: _,
            member,
            detail,
            fix,
        } => {
            f.push(("member", s(member)));
            f.push(("detail", s(detail)));
            if let Some(fix) = fix {
                f.push(("fix", s(fix)));
            }
        }
        Event::RunLost {
            job,
            run_id,
            scheduled_at,
            owner,
            rerun,
        } => {
            f.push(("job", s(job)));
            if let Some(run_id) = run_id {
                f.push(("run_id", s(run_id)));
            }
            f.push(("scheduled_at", t(scheduled_at)));
            f.push(("owner", s(owner)));
            f.push(("rerun", Bool(*rerun)));
        }
        Event::ControlRequest {
            command,
            target,
            caller_uid,
            result,
        } => {
            f.push(("command", s(command)));
            f.push(("target", s(target)));
            if let Some(uid) = caller_uid {
                f.push(("caller_uid", UInt((*uid).into())));
            }
            f.push(("result", s(result)));
        }
        Event::HookFailed {
            job,
            run_id,
            hook,
            url,
            attempts,
            error,
        } => {
            f.push(("job", s(job)));
            f.push(("run_id", s(run_id)));
            f.push(("hook", s(hook)));
            f.push(("url", s(url)));
            f.push(("attempts", UInt((*attempts).into())));
            f.push(("error", s(error)));
        }
    }
    f
}
