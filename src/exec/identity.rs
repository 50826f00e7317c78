//! Starting a shell job as its `user:` / `group:`.
//!
//! Everything is prepared in chime's process (the account's groups, as `initgroups`
//! would set them, and the workdir as a C string) and the child, between fork and
//! exec, only makes system calls: `setgroups`, `setgid`, `setuid`, then `chdir` to the
//! workdir again. A child of a threaded process may not look up NSS databases or
//! allocate there, so `initgroups` itself cannot run in it; and std runs `pre_exec`
//! hooks after its own `Command::uid`/`gid` switch, too late to set the groups, so the
//! whole switch is this one hook. The second `chdir` runs as the job's user: a workdir
//! it cannot enter fails the spawn with EACCES instead of starting it there as root.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::account;
use crate::job::RunAs;

/// The switch to make in the child, prepared.
#[derive(Debug, Clone)]
pub struct Switch {
    groups: Vec<libc::gid_t>,
    gid: libc::gid_t,
    /// `None` with `group:` alone: the uid stays chime's.
    uid: Option<libc::uid_t>,
    workdir: Option<CString>,
}

impl Switch {
    /// Prepares the switch for `run_as`, starting in `workdir`.
    pub fn prepare(run_as: &RunAs, workdir: Option<&Path>) -> io::Result<Switch> {
        let gid = match (&run_as.group, &run_as.user) {
            (Some((_, gid)), _) => *gid,
            (None, Some(user)) => user.gid,
            // `RunAs` always has one of the two; keep chime's own group otherwise.
            // SAFETY: getegid(2) has no preconditions and cannot fail.
            (None, None) => unsafe { libc::getegid() },
        };
        let groups = match &run_as.user {
            // The account's groups; with `group:` too, that group is the primary one
            // and also in the list, as `sg`/`newgrp` leave it.
            Some(user) => {
                let mut groups = account::group_list(&user.name, user.gid)?;
                if !groups.contains(&gid) {
                    groups.push(gid);
                }
                groups
            }
            None => vec![gid],
        };
        let workdir = workdir
            .map(|dir| CString::new(dir.as_os_str().as_bytes()))
            .transpose()
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(Switch {
            groups,
            gid,
            uid: run_as.user.as_ref().map(|user| user.uid),
            workdir,
        })
    }

    /// Makes the switch. Runs in the child between fork and exec: system calls only,
    /// no allocation.
    pub fn apply(&self) -> io::Result<()> {
        // SAFETY: plain system calls on values prepared before the fork; the pointers
        // are valid for the lengths given.
        unsafe {
            if libc::setgroups(self.groups.len(), self.groups.as_ptr()) != 0
                || libc::setgid(self.gid) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if let Some(uid) = self.uid
                && libc::setuid(uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if let Some(dir) = &self.workdir
                && libc::chdir(dir.as_ptr()) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Who the job runs as, for messages: `user nobody`, `group adm`.
pub fn describe(run_as: &RunAs) -> String {
    match (&run_as.user, &run_as.group) {
        (Some(user), Some((group, _))) => format!("user `{}` and group `{group}`", user.name),
        (Some(user), None) => format!("user `{}`", user.name),
        (None, Some((group, _))) => format!("group `{group}`"),
        (None, None) => "chime's own user".to_string(),
    }
}

/// The message for a spawn as another account that failed with `err`; `None` when
/// the account has nothing to do with it.
pub fn spawn_error(
    program: &str,
    run_as: &RunAs,
    workdir: Option<&Path>,
    err: &io::Error,
) -> Option<String> {
    let who = describe(run_as);
    match (err.raw_os_error(), workdir) {
        (Some(libc::EACCES), Some(dir)) if dir.is_dir() => Some(format!(
            "cannot start `{program}` as {who}: it cannot enter the workdir `{}` or \
             run the program (permission denied); make the directory (and each one \
             above it) searchable by that account, e.g. `chmod o+x`, or choose another",
            dir.display()
        )),
        (Some(libc::EACCES), _) => Some(format!(
            "cannot start `{program}` as {who}: permission denied; make the program \
             executable by that account"
        )),
        (Some(libc::EPERM), _) => Some(format!(
            "cannot start `{program}` as {who}: not permitted to switch to it; run chime \
             as root (see systemd/chime-root.service)"
        )),
        _ => None,
    }
}
