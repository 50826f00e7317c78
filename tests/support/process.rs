//! The process table, as `/proc/PID/stat` shows it: state, parent, process group.
//! Read-only; the only processes a test may signal are its own (see [`super::Chime`]).

use std::time::{Duration, Instant};

/// The fields of `/proc/PID/stat` the tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pid: libc::pid_t,
    /// `R`, `S`, `D`, `Z` (zombie), `X` (dead), …
    pub state: char,
    pub ppid: libc::pid_t,
    pub pgrp: libc::pid_t,
}

impl Stat {
    /// A zombie or dead: it runs no more, whether or not it was reaped yet.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// `/proc/PID/stat`; `None` when the process is gone.
pub fn stat(pid: libc::pid_t) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse(pid, &text)
}

/// `pid (comm) state ppid pgrp …`: the command name may hold spaces and parentheses,
/// so the fields are counted from its last `)`.
fn parse(pid: libc::pid_t, text: &str) -> Option<Stat> {
    let (_, after) = text.rsplit_once(')')?;
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(Stat {
        pid,
        state,
        ppid,
        pgrp,
    })
}

/// Every process's stat (those that vanish while listing are left out).
pub fn all() -> Vec<Stat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter_map(stat)
        .collect()
}

/// Members of group `pgid` that still run (not zombies).
pub fn live_group_members(pgid: libc::pid_t) -> Vec<Stat> {
    all()
        .into_iter()
        .filter(|stat| stat.pgrp == pgid && !stat.is_dead())
        .collect()
}

/// Whether process `pid` is gone or a zombie (reaped by whoever its parent is now).
pub fn is_dead(pid: libc::pid_t) -> bool {
    stat(pid).is_none_or(|stat| stat.is_dead())
}

/// Waits up to `timeout` for `pid` to be dead, checking every few milliseconds.
pub fn wait_dead(pid: libc::pid_t, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if is_dead(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `signal` is pending for `pid`: sent, and not yet taken by a handler of any
/// of its threads (`SigPnd` of each thread, `ShdPnd` of the process). `None` when
/// the process is gone.
pub fn signal_pending(pid: libc::pid_t, signal: libc::c_int) -> Option<bool> {
    let bit = 1u64 << (signal - 1);
    let pending = |path: String, field: &str| -> Option<bool> {
        let status = std::fs::read_to_string(path).ok()?;
        let mask = status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())?;
        Some(mask & bit != 0)
    };
    if pending(format!("/proc/{pid}/status"), "ShdPnd:")? {
        return Some(true);
    }
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(threads.flatten().any(|thread| {
        let tid = thread.file_name();
        pending(
            format!("/proc/{pid}/task/{}/status", tid.to_string_lossy()),
            "SigPnd:",
        ) == Some(true)
    }))
}
