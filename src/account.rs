//! Accounts from the system's user and group databases (`getpwnam_r`, `getgrnam_r`,
//! `getgrouplist`, through the C library so NSS sources count): who a job with `user:`
//! and `group:` runs as, and who chime itself is.

use std::ffi::{CStr, CString};
use std::path::PathBuf;

/// A user account: what a job running as it needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    /// The account's primary group.
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
}

/// The effective uid of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    effective_uid() == 0
}

/// The account named `name`, or with that numeric uid when `name` is a number that
/// names no account. `Err` says what was wrong, without guessing how to fix it.
pub fn user(name: &str) -> Result<Account, String> {
    if let Some(account) = passwd_entry(Key::name(name)?)? {
        return Ok(account);
    }
    if let Ok(uid) = name.parse::<u32>()
        && let Some(account) = passwd_entry(Key::Id(uid))?
    {
        return Ok(account);
    }
    Err(format!("there is no user `{name}` on this system"))
}

/// The account of `uid`, if it has one.
pub fn user_by_uid(uid: u32) -> Option<Account> {
    passwd_entry(Key::Id(uid)).ok().flatten()
}

/// The gid of the group named `name` (or a number naming an existing group).
pub fn group(name: &str) -> Result<u32, String> {
    if let Some(gid) = group_entry(Key::name(name)?)? {
        return Ok(gid);
    }
    if let Ok(gid) = name.parse::<u32>()
        && group_entry(Key::Id(gid))?.is_some()
    {
        return Ok(gid);
    }
    Err(format!("there is no group `{name}` on this system"))
}

/// The supplementary groups of `user` as `initgroups` would set them, `gid` included.
/// Asked at each spawn, in chime's process, so membership changes take effect and the
/// child only has to call `setgroups` (the database lookups are not async-signal-safe,
/// so they cannot run between fork and exec).
pub fn group_list(user: &str, gid: u32) -> std::io::Result<Vec<libc::gid_t>> {
    let name = CString::new(user).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut count = libc::c_int::try_from(groups.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `name` is NUL-terminated; `groups` has room for `count` entries and
        // getgrouplist writes at most that many, reporting the number needed.
        let found =
            unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        let needed = usize::try_from(count).unwrap_or(0);
        if found >= 0 {
            groups.truncate(needed);
            return Ok(groups);
        }
        if needed <= groups.len() || groups.len() >= 65_536 {
            return Err(std::io::Error::other("getgrouplist failed"));
        }
        groups.resize(needed, 0);
    }
}

/// What an entry is looked up by.
enum Key {
    Name(CString),
    Id(u32),
}

impl Key {
    fn name(name: &str) -> Result<Key, String> {
        CString::new(name)
            .map(Key::Name)
            .map_err(|_| "a name cannot contain a NUL character".to_string())
    }
}

/// Calls a `get*_r` lookup with a buffer that grows while it answers `ERANGE`; gives
/// the entry it filled, `None` when there is none, or the error in words (`what`: which
/// database).
fn lookup<T, R>(
    what: &str,
    call: impl Fn(&mut T, &mut [libc::c_char], &mut *mut T) -> libc::c_int,
    read: impl FnOnce(&T) -> R,
) -> Result<Option<R>, String> {
    let mut buffer: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: the entries looked up (passwd, group) are plain C structs for which
        // all-zero is a valid value to be overwritten.
        let mut entry: T = unsafe { std::mem::zeroed() };
        let mut result: *mut T = std::ptr::null_mut();
        let code = call(&mut entry, &mut buffer, &mut result);
        if code == libc::ERANGE && buffer.len() < 1 << 20 {
            let larger = buffer.len() * 4;
            buffer.resize(larger, 0);
            continue;
        }
        if code != 0 {
            return Err(format!(
                "cannot read the {what} database: {}",
                std::io::Error::from_raw_os_error(code)
            ));
        }
        if result.is_null() {
            return Ok(None);
        }
        // The strings in `entry` point into `buffer`, still alive here.
        return Ok(Some(read(&entry)));
    }
}

fn passwd_entry(key: Key) -> Result<Option<Account>, String> {
    lookup(
        "user",
        |entry: &mut libc::passwd, buffer, result| {
            // SAFETY: every pointer is valid for the call; the strings written into
            // `entry` point into `buffer`, which outlives their use in `read`.
            unsafe {
                match &key {
                    Key::Name(name) => libc::getpwnam_r(
                        name.as_ptr(),
                        entry,
                        buffer.as_mut_ptr(),
                        buffer.len(),
                        result,
                    ),
                    Key::Id(uid) => {
                        libc::getpwuid_r(*uid, entry, buffer.as_mut_ptr(), buffer.len(), result)
                    }
                }
            }
        },
        |entry| {
            // SAFETY: on success the fields are NUL-terminated strings inside the buffer.
            let text = |ptr: *const libc::c_char| unsafe {
                if ptr.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(ptr).to_string_lossy().into_owned()
                }
            };
            Account {
                name: text(entry.pw_name),
                uid: entry.pw_uid,
                gid: entry.pw_gid,
                home: PathBuf::from(text(entry.pw_dir)),
                shell: PathBuf::from(text(entry.pw_shell)),
            }
        },
    )
}

fn group_entry(key: Key) -> Result<Option<u32>, String> {
    lookup(
        "group",
        |entry: &mut libc::group, buffer, result| {
            // SAFETY: as in `passwd_entry`.
            unsafe {
                match &key {
                    Key::Name(name) => libc::getgrnam_r(
                        name.as_ptr(),
                        entry,
                        buffer.as_mut_ptr(),
                        buffer.len(),
                        result,
                    ),
                    Key::Id(gid) => {
                        libc::getgrgid_r(*gid, entry, buffer.as_mut_ptr(), buffer.len(), result)
                    }
                }
            }
        },
        |entry: &libc::group| entry.gr_gid,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_nobody_are_found() {
        let root = user("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(user("0").unwrap().name, "root");
        assert_eq!(group("root").unwrap(), 0);
        assert!(user("no-such-user-chime").unwrap_err().contains("no user"));
        assert!(
            group("no-such-group-chime")
                .unwrap_err()
                .contains("no group")
        );
        assert!(group_list("root", 0).unwrap().contains(&0));
    }
}
