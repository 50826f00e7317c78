//! The control socket (DESIGN.md §11): operators act on a running service from the
//! shell — `chime trigger`, `pause`, `resume`, `kill`, and `status`'s live facts.
//!
//! A Unix socket, `chime.sock` under `$RUNTIME_DIRECTORY` (systemd's
//! `RuntimeDirectory=`), else `/run/chime` as root or `$XDG_RUNTIME_DIR/chime`;
//! `--control-socket PATH|none` overrides it. Mode 0660: the socket's group says who
//! may act, and peers are checked again with `SO_PEERCRED` (root, the service's own
//! uid, members of the socket's group).
//!
//! **Protocol, version 1.** One request per connection: one JSON object on one line
//! (at most [`MAX_LINE`] bytes), e.g. `{"v":1,"cmd":"trigger","job":"backup"}`. The
//! service answers with one JSON line, `{"v":1,"ok":true,…}` or
//! `{"v":1,"ok":false,"error":"…"}`, and closes the connection; a `trigger` with
//! `"wait":true` follows its answer with the run's events, one a line
//! (`{"v":1,"event":"run.output",…}`), up to its `run.finished`.
//!
//! - [`server`]: the listener, on the service's runtime, and what each command does.
//! - [`client`]: the commands' side, blocking, for the binary's edge.

pub mod client;
pub mod server;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The protocol version this chime speaks.
pub const VERSION: u32 = 1;
/// The longest request line accepted, newline included.
pub const MAX_LINE: usize = 64 * 1024;
/// The socket's file name in its directory.
pub const SOCKET_NAME: &str = "chime.sock";
/// The value of `--control-socket` that turns the socket off.
pub const NONE: &str = "none";

/// A request, as sent on the socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub v: u32,
    pub cmd: String,
    /// `trigger`: the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// `pause`, `resume`: the jobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<String>,
    /// `pause`, `resume`: every job.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    /// `kill`: a run id or a job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `trigger`: stream the run's events until it ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait: bool,
}

impl Request {
    pub fn new(cmd: &str) -> Request {
        Request {
            v: VERSION,
            cmd: cmd.to_string(),
            job: None,
            jobs: Vec::new(),
            all: false,
            target: None,
            wait: false,
        }
    }

    /// What the request names, for `control.request`.
    pub fn target(&self) -> String {
        if let Some(job) = &self.job {
            return job.clone();
        }
        if let Some(target) = &self.target {
            return target.clone();
        }
        if self.all {
            return "--all".into();
        }
        self.jobs.join(" ")
    }
}

/// The commands of protocol version 1.
pub const COMMANDS: &[&str] = &["trigger", "pause", "resume", "kill", "status"];

/// The environment the default socket path is chosen from.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub runtime_directory: Option<OsString>,
    pub xdg_runtime_dir: Option<OsString>,
    pub root: bool,
}

impl Env {
    pub fn from_process() -> Env {
        Env {
            runtime_directory: std::env::var_os("RUNTIME_DIRECTORY"),
            xdg_runtime_dir: std::env::var_os("XDG_RUNTIME_DIR"),
            // SAFETY: geteuid has no preconditions and cannot fail.
            root: unsafe { libc::geteuid() } == 0,
        }
    }
}

/// Where the socket is: `Ok(None)` for `--control-socket none`, `Err` with a hint when
/// there is no default (not root, no `$RUNTIME_DIRECTORY`, no `$XDG_RUNTIME_DIR`).
pub fn socket_path(flag: Option<&Path>, env: &Env) -> Result<Option<PathBuf>, String> {
    if let Some(flag) = flag {
        if flag.as_os_str() == NONE {
            return Ok(None);
        }
        return Ok(Some(flag.to_path_buf()));
    }
    if let Some(dirs) = env.runtime_directory.as_ref().and_then(|d| d.to_str())
        && let Some(first) = dirs.split(':').find(|d| !d.is_empty())
    {
        return Ok(Some(Path::new(first).join(SOCKET_NAME)));
    }
    if env.root {
        return Ok(Some(Path::new("/run/chime").join(SOCKET_NAME)));
    }
    if let Some(xdg) = env.xdg_runtime_dir.as_ref().filter(|x| !x.is_empty()) {
        return Ok(Some(Path::new(xdg).join("chime").join(SOCKET_NAME)));
    }
    Err("no place for the control socket: $RUNTIME_DIRECTORY and $XDG_RUNTIME_DIR are unset and chime is not root; name one with --control-socket PATH (or turn it off with --control-socket none)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_path_follows_flag_then_systemd_then_root_then_xdg() {
        let env = Env {
            runtime_directory: Some("/run/chime:/run/other".into()),
            xdg_runtime_dir: Some("/run/user/1000".into()),
            root: true,
        };
        assert_eq!(
            socket_path(Some(Path::new("/tmp/x.sock")), &env),
            Ok(Some(PathBuf::from("/tmp/x.sock")))
        );
        assert_eq!(socket_path(Some(Path::new("none")), &env), Ok(None));
        assert_eq!(
            socket_path(None, &env),
            Ok(Some(PathBuf::from("/run/chime/chime.sock")))
        );
        let root = Env {
            runtime_directory: None,
            ..env.clone()
        };
        assert_eq!(
            socket_path(None, &root),
            Ok(Some(PathBuf::from("/run/chime/chime.sock")))
        );
        let user = Env {
            root: false,
            ..root.clone()
        };
        assert_eq!(
            socket_path(None, &user),
            Ok(Some(PathBuf::from("/run/user/1000/chime/chime.sock")))
        );
        let nowhere = Env {
            xdg_runtime_dir: None,
            ..user
        };
        assert!(socket_path(None, &nowhere).is_err());
    }

    #[test]
    fn requests_round_trip_and_reject_unknown_fields() {
        let mut request = Request::new("pause");
        request.jobs = vec!["a".into(), "b".into()];
        let line = serde_json::to_string(&request).unwrap();
        assert_eq!(line, r#"{"v":1,"cmd":"pause","jobs":["a","b"]}"#);
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), request);
        assert!(serde_json::from_str::<Request>(r#"{"v":1,"cmd":"x","bogus":1}"#).is_err());
    }
}
