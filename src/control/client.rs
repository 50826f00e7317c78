//! The control socket's client side, for `chime trigger`, `pause`, `resume`, `kill`
//! and `status`: blocking, one request per connection.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::Request;

/// How long the first answer may take (the service waits up to 30 s for its
/// scheduling loop).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "the service is not running (nothing answers on {path}); start it, or name its socket with --control-socket PATH"
    )]
    NotRunning {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "permission denied on the control socket {path}: only root, the service's user and members of its group ({group}) may act"
    )]
    Denied { path: PathBuf, group: String },
    #[error("talking to the service on {path} failed")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the service sent something this chime does not understand: {0}")]
    Protocol(String),
    /// The service answered with an error.
    #[error("{0}")]
    Refused(String),
}

/// The name of a file's group, or its gid.
fn group_of(path: &Path) -> String {
    let Ok(meta) = std::fs::metadata(path) else {
        return "?".into();
    };
    let gid = meta.gid();
    std::fs::read_to_string("/etc/group")
        .ok()
        .and_then(|groups| {
            groups.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let _password = fields.next()?;
                (fields.next()?.parse::<u32>().ok()? == gid).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| gid.to_string())
}

/// A request sent, its answer read; for `trigger --wait`, the lines after it.
pub struct Connection {
    path: PathBuf,
    reader: BufReader<UnixStream>,
}

impl Connection {
    /// Sends `request` to the service at `path` and reads its answer: the fields of a
    /// success, or [`ClientError::Refused`] with the service's error.
    pub fn send(
        path: &Path,
        request: &Request,
    ) -> Result<(Connection, Map<String, Value>), ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| match source.kind() {
            io::ErrorKind::PermissionDenied => ClientError::Denied {
                path: path.to_path_buf(),
                group: group_of(path),
            },
            _ => ClientError::NotRunning {
                path: path.to_path_buf(),
                source,
            },
        })?;
        let io_error = |source| ClientError::Io {
            path: path.to_path_buf(),
            source,
        };
        stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .map_err(io_error)?;
        let mut line =
            serde_json::to_string(request).map_err(|err| ClientError::Protocol(err.to_string()))?;
        line.push('\n');
        // A service that refuses at once (a peer not allowed, too many connections)
        // may answer and close before the request is written: its answer still counts.
        let sent = (&stream).write_all(line.as_bytes());
        let mut connection = Connection {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
        };
        let answer = match (connection.next_line(), sent) {
            (Ok(Some(answer)), _) => answer,
            (_, Err(err)) => return Err(io_error(err)),
            (Err(err), Ok(())) => return Err(err),
            (Ok(None), Ok(())) => {
                return Err(ClientError::Protocol(
                    "the service closed the connection without an answer".into(),
                ));
            }
        };
        if answer.get("ok") != Some(&Value::Bool(true)) {
            let error = answer
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("the service refused the request")
                .to_string();
            return Err(ClientError::Refused(error));
        }
        // A stream that follows (`--wait`) may be as long as the run.
        let _ = connection.reader.get_ref().set_read_timeout(None);
        Ok((connection, answer))
    }

    /// The next line of the answer, or `None` when the service closed the connection.
    pub fn next_line(&mut self) -> Result<Option<Map<String, Value>>, ClientError> {
        let mut line = String::new();
        let read = self
            .reader
            .read_line(&mut line)
            .map_err(|source| ClientError::Io {
                path: self.path.clone(),
                source,
            })?;
        if read == 0 {
            return Ok(None);
        }
        match serde_json::from_str(&line) {
            Ok(Value::Object(map)) => Ok(Some(map)),
            _ => Err(ClientError::Protocol(line.trim_end().to_string())),
        }
    }
}
