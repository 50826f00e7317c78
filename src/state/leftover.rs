//! Process groups left running by a chime that was killed. A run found unfinished at
//! start is still going only where that is provable: a process with the recorded pid
//! and the same start time (`/proc/PID/stat` field 22), or a process whose environment
//! carries the run's `CHIME_RUN_ID` (a random 64-bit id no other run shares).

use std::collections::{HashMap, HashSet};
use std::fs;

/// A live process group of an interrupted run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    pub pgid: i32,
}

/// `(state, pgrp, starttime)` from a `/proc/PID/stat` line; comm may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(char, i32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After comm: state(3) ppid(4) pgrp(5) … starttime(22).
    let state = fields.first()?.chars().next()?;
    let pgrp = fields.get(2)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, pgrp, start))
}

fn stat_of(pid: i32) -> Option<(char, i32, u64)> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The start time of a live (not zombie) process, in clock ticks since boot.
pub fn start_time(pid: u32) -> Option<u64> {
    let pid = i32::try_from(pid).ok()?;
    stat_of(pid)
        .filter(|(state, _, _)| *state != 'Z')
        .map(|(_, _, start)| start)
}

fn pids() -> impl Iterator<Item = i32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

/// The run id in a process's environment, if it has one.
fn run_id_of(pid: i32) -> Option<String> {
    let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(b"CHIME_RUN_ID="))
        .and_then(|id| std::str::from_utf8(id).ok())
        .map(str::to_string)
}

/// The live groups of the given runs: by recorded pid and start time, or by the run id
/// in a process's environment.
pub fn find(runs: &[(String, Option<u32>, Option<u64>)]) -> HashMap<String, Group> {
    let mut found = HashMap::new();
    for (run_id, pid, started) in runs {
        if let (Some(pid), Some(started)) = (pid, started)
            && let Ok(pid) = i32::try_from(*pid)
            && let Some((state, pgrp, start)) = stat_of(pid)
            && state != 'Z'
            && start == *started
        {
            found.insert(run_id.clone(), Group { pgid: pgrp });
        }
    }
    let wanted: HashSet<&str> = runs
        .iter()
        .map(|(id, _, _)| id.as_str())
        .filter(|id| !found.contains_key(*id))
        .collect();
    if wanted.is_empty() {
        return found;
    }
    let own = std::process::id() as i32;
    for pid in pids() {
        if pid == own {
            continue;
        }
        if let Some(id) = run_id_of(pid)
            && wanted.contains(id.as_str())
            && !found.contains_key(&id)
            && let Some((state, pgrp, _)) = stat_of(pid)
            && state != 'Z'
        {
            found.insert(id, Group { pgid: pgrp });
        }
    }
    found
}

/// Whether any live (not zombie) process is in the group.
pub fn alive(group: Group) -> bool {
    pids()
        .any(|pid| stat_of(pid).is_some_and(|(state, pgrp, _)| pgrp == group.pgid && state != 'Z'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "42 (a (b) c) S 1 40 40 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 1 2";
        assert_eq!(parse_stat(line), Some(('S', 40, 12345)));
    }

    #[test]
    fn this_process_has_a_start_time() {
        assert!(start_time(std::process::id()).is_some());
    }
}
