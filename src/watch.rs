//! Watching the schedule directories for changes.
//!
//! Directories are watched, not files: editors save by rename, and Kubernetes swaps a
//! `..data` symlink. Each directory's parent is watched too, so that a directory
//! replaced as a whole (`mv d d.old; mkdir d`, as deployment tools do), or removed and
//! made again, is noticed: the watch is then moved to the new directory. Events are
//! debounced into one message once they have been quiet for a while.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// A directory watched, and which directory it was when the watch was set.
struct Watched {
    path: PathBuf,
    /// Device and inode of the directory watched; `None` while it is missing.
    identity: Option<(u64, u64)>,
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path)
        .ok()
        .filter(std::fs::Metadata::is_dir)
        .map(|meta| (meta.dev(), meta.ino()))
}

/// Watches `dirs` and sends `message` on `tx` once their events have been quiet for
/// `quiet`. Runs until `tx` closes. Fails only if a directory cannot be watched at all.
pub fn watch<T: Clone + Send + 'static>(
    dirs: &[PathBuf],
    quiet: Duration,
    tx: mpsc::Sender<T>,
    message: T,
) -> notify::Result<()> {
    // Absolute, so that the paths events carry compare with ours.
    let dirs: Vec<PathBuf> = dirs
        .iter()
        .map(|dir| std::path::absolute(dir).unwrap_or_else(|_| dir.clone()))
        .collect();
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let relevant = dirs.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            // An overflowed queue, say: something may have changed.
            let _ = raw_tx.send(());
            return;
        };
        // The parents' other entries are none of our business.
        let ours = event.paths.is_empty()
            || event.paths.iter().any(|path| {
                relevant
                    .iter()
                    .any(|dir| path == dir || path.parent() == Some(dir.as_path()))
            });
        if ours && !event.kind.is_access() {
            let _ = raw_tx.send(());
        }
    })?;
    let mut watched = Vec::with_capacity(dirs.len());
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        watched.push(Watched {
            path: dir.clone(),
            identity: identity(dir),
        });
    }
    let mut parents: Vec<&Path> = dirs.iter().filter_map(|dir| dir.parent()).collect();
    parents.sort();
    parents.dedup();
    for parent in parents {
        // Without it a replaced directory waits for the periodic re-check.
        if let Err(err) = watcher.watch(parent, RecursiveMode::NonRecursive) {
            tracing::warn!(parent = %parent.display(), error = %err,
                "cannot watch the schedule directory's parent; a replaced directory is noticed at the next re-check");
        }
    }
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            // Debounce: wait until nothing happened for `quiet`.
            loop {
                match tokio::time::timeout(quiet, raw_rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            rearm(&mut watcher, &mut watched);
            if tx.send(message.clone()).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Moves the watch of every directory that is not the one watched any more (replaced,
/// or back after being removed) to the directory now at its path.
fn rearm(watcher: &mut RecommendedWatcher, watched: &mut [Watched]) {
    for dir in watched {
        let now = identity(&dir.path);
        if now == dir.identity {
            continue;
        }
        // The old watch may be gone with its directory already.
        let _ = watcher.unwatch(&dir.path);
        dir.identity = match now {
            Some(_)
                if watcher
                    .watch(&dir.path, RecursiveMode::NonRecursive)
                    .is_ok() =>
            {
                now
            }
            _ => None,
        };
    }
}
