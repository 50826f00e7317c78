//! Who may change the schedule files: as root, anyone who can write a schedule file or
//! its directory can run commands as root, so (like cron with crontabs) such files are
//! refused. Each file and each directory given must be owned by root and not writable
//! by group or others; as non-root, owned by root or by chime's own uid, and breaking
//! the rule is a warning only. A symlink is judged by its target, and by the
//! directories above the target (a root-owned sticky directory such as `/tmp` is fine
//! there: others cannot replace root's entries in it).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::Privileges;

/// One file or directory that is not trusted: the path to name, and why with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Untrusted {
    pub(super) path: PathBuf,
    pub(super) message: String,
}

/// Checks a path given on the command line (`is_dir`: a directory of schedule files)
/// or a schedule file found in one. Paths that cannot be read are left to the reading
/// that follows, which reports them.
pub(super) fn check(path: &Path, privileges: Privileges) -> Vec<Untrusted> {
    let mut found = Vec::new();
    let Ok(target) = std::fs::canonicalize(path) else {
        return found;
    };
    // Anything but a file or a directory (a FIFO, a device) is refused as such already.
    if !std::fs::metadata(&target).is_ok_and(|m| m.is_file() || m.is_dir()) {
        return found;
    }
    if let Some(message) = judge(&target, privileges, false) {
        found.push(Untrusted {
            path: path.to_path_buf(),
            message: describe_target(path, &target, &message),
        });
    }
    let through_link = target != absolute(path);
    if through_link {
        for dir in target.ancestors().skip(1) {
            if let Some(message) = judge(dir, privileges, true) {
                found.push(Untrusted {
                    path: path.to_path_buf(),
                    message: format!(
                        "it leads (through a symlink) to `{}`, whose directory `{}` {message}",
                        target.display(),
                        dir.display()
                    ),
                });
            }
        }
    }
    found
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn describe_target(path: &Path, target: &Path, message: &str) -> String {
    if absolute(path) == target {
        message.to_string()
    } else {
        format!(
            "its target `{}` (through a symlink) {message}",
            target.display()
        )
    }
}

/// Why `path` may be changed by someone other than root (or chime's user), with the
/// commands that fix it; `None` when it is fine. `ancestor`: a directory above a
/// symlink's target, where a root-owned sticky directory is accepted.
fn judge(path: &Path, privileges: Privileges, ancestor: bool) -> Option<String> {
    let metadata = std::fs::metadata(path).ok()?;
    let (uid, mode) = (metadata.uid(), metadata.mode() & 0o7777);
    let owner_ok = uid == 0 || (privileges.euid != 0 && uid == privileges.euid);
    let sticky_root_dir = ancestor && metadata.is_dir() && uid == 0 && mode & 0o1000 != 0;
    let writable = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        _ if sticky_root_dir => None,
        (true, true) => Some("group and others"),
        (true, false) => Some("its group"),
        (false, true) => Some("others"),
        (false, false) => None,
    };
    let shown = path.display();
    let mut problems = Vec::new();
    let mut fixes = Vec::new();
    if !owner_ok {
        let owner = crate::account::user_by_uid(uid).map_or_else(
            || format!("uid {uid}"),
            |a| format!("{} (uid {uid})", a.name),
        );
        let allowed = if privileges.euid == 0 {
            "root".to_string()
        } else {
            format!("root or chime's own uid {}", privileges.euid)
        };
        problems.push(format!("is owned by {owner}, not {allowed}"));
        fixes.push(format!("`chown root {shown}`"));
    }
    if let Some(who) = writable {
        problems.push(format!("is writable by {who} (mode {mode:04o})"));
        fixes.push(format!("`chmod go-w {shown}`"));
    }
    if problems.is_empty() {
        return None;
    }
    let who = if privileges.euid == 0 {
        "root"
    } else {
        "chime's user"
    };
    Some(format!(
        "{}: whoever can change it can run commands as {who}; fix it with {}",
        problems.join(" and "),
        fixes.join(" and ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn as_root() -> Privileges {
        Privileges {
            euid: 0,
            allow_writable: false,
            check_only: false,
        }
    }

    #[test]
    fn modes_and_owners() {
        if crate::account::effective_uid() != 0 {
            eprintln!("skipped: needs root to own the test files as root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.yaml");
        std::fs::write(&file, "jobs: {}\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(check(&file, as_root()), []);
        assert_eq!(check(dir.path(), as_root()), []);

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let found = check(&file, as_root());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("group and others (mode 0666)"));
        assert!(found[0].message.contains("`chmod go-w "));

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        let found = check(&file, as_root());
        assert!(
            found[0]
                .message
                .contains("owned by nobody (uid 65534), not root")
        );
        assert!(found[0].message.contains("`chown root "));
        // As nobody, a file of nobody's is fine.
        let nobody = Privileges {
            euid: 65534,
            ..as_root()
        };
        assert_eq!(check(&file, nobody), []);
    }

    #[test]
    fn a_symlink_is_judged_by_its_target_and_the_targets_directories() {
        if crate::account::effective_uid() != 0 {
            eprintln!("skipped: needs root to own the test files as root");
            return;
        }
        let outer = tempfile::tempdir().unwrap();
        let open = outer.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let target = open.join("t.yaml");
        std::fs::write(&target, "jobs: {}\n").unwrap();
        let dir = outer.path().join("given");
        std::fs::create_dir(&dir).unwrap();
        let link = dir.join("a.yaml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let found = check(&link, as_root());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("through a symlink"), "{found:?}");
        assert!(
            found[0]
                .message
                .contains("writable by group and others (mode 0777)")
        );
        // /tmp (sticky, root's) above the target is accepted.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check(&link, as_root()), []);
    }
}
