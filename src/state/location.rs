//! Where the state lives: `--state-dir` (`CHIME_STATE_DIR`), else `$STATE_DIRECTORY`
//! (systemd's `StateDirectory=`, the first path if several), else `/var/lib/chime` as
//! root, else `$XDG_STATE_HOME/chime` or `~/.local/state/chime`. The database sits in
//! the directory's `db/` (mode 0700), apart from anything jobs may keep there.

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::StoreError;
use super::sqlite::DB_FILE;

/// The value of `--state-dir` that turns the store off.
pub const NONE: &str = "none";

/// Where state goes, or that there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateDir {
    None,
    At(PathBuf),
}

/// The environment the default is chosen from.
pub struct Env {
    pub state_directory: Option<OsString>,
    pub xdg_state_home: Option<OsString>,
    pub home: Option<OsString>,
    pub root: bool,
}

impl Env {
    pub fn from_process() -> Env {
        Env {
            state_directory: std::env::var_os("STATE_DIRECTORY"),
            xdg_state_home: std::env::var_os("XDG_STATE_HOME"),
            home: std::env::var_os("HOME"),
            // SAFETY: geteuid has no preconditions and cannot fail.
            root: unsafe { libc::geteuid() } == 0,
        }
    }
}

/// Resolves `--state-dir` (`None` when not given).
pub fn resolve(flag: Option<&Path>, env: &Env) -> StateDir {
    if let Some(flag) = flag {
        if flag.as_os_str() == NONE {
            return StateDir::None;
        }
        return StateDir::At(flag.to_path_buf());
    }
    if let Some(dirs) = env.state_directory.as_ref().and_then(|d| d.to_str())
        && let Some(first) = dirs.split(':').find(|d| !d.is_empty())
    {
        return StateDir::At(PathBuf::from(first));
    }
    if env.root {
        return StateDir::At(PathBuf::from("/var/lib/chime"));
    }
    if let Some(xdg) = env.xdg_state_home.as_ref().filter(|x| !x.is_empty()) {
        return StateDir::At(Path::new(xdg).join("chime"));
    }
    match &env.home {
        Some(home) => StateDir::At(Path::new(home).join(".local/state/chime")),
        None => StateDir::At(PathBuf::from(".chime-state")),
    }
}

/// The database file under a state directory.
pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("db").join(DB_FILE)
}

/// Creates `dir/db` (0700) if needed and returns the database path.
pub fn prepare(dir: &Path) -> Result<PathBuf, StoreError> {
    let db_dir = dir.join("db");
    let io = |what: String| move |source| StoreError::Io { what, source };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&db_dir)
        .map_err(io(format!("cannot create {}", db_dir.display())))?;
    std::fs::set_permissions(&db_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io(format!("cannot set the mode of {}", db_dir.display())))?;
    Ok(db_dir.join(DB_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(state: Option<&str>, xdg: Option<&str>, home: Option<&str>, root: bool) -> Env {
        Env {
            state_directory: state.map(OsString::from),
            xdg_state_home: xdg.map(OsString::from),
            home: home.map(OsString::from),
            root,
        }
    }

    #[test]
    fn the_default_follows_systemd_then_root_then_xdg_then_home() {
        let at = |p: &str| StateDir::At(PathBuf::from(p));
        assert_eq!(
            resolve(
                None,
                &env(Some("/var/lib/chime:/var/lib/other"), None, None, true)
            ),
            at("/var/lib/chime")
        );
        assert_eq!(
            resolve(None, &env(None, Some("/x"), None, true)),
            at("/var/lib/chime")
        );
        assert_eq!(
            resolve(None, &env(None, Some("/x"), Some("/h"), false)),
            at("/x/chime")
        );
        assert_eq!(
            resolve(None, &env(None, None, Some("/h"), false)),
            at("/h/.local/state/chime")
        );
        assert_eq!(
            resolve(Some(Path::new("none")), &env(Some("/s"), None, None, true)),
            StateDir::None
        );
        assert_eq!(
            resolve(Some(Path::new("/d")), &env(Some("/s"), None, None, true)),
            at("/d")
        );
    }
}
