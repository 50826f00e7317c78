//! Spawner threads: where shell attempts' processes are spawned, off tokio's workers.
//!
//! A spawn is a synchronous system call sequence (clone3 with `CLONE_VFORK`, then the
//! child's exec) that blocks its thread until the child has exec'd: on a 2-core
//! machine a burst of 100 spawns kept both runtime workers busy for ~50 ms, with every
//! `run.started`, output pump and HTTP request due at the same instant queued behind
//! them. Here a small pool of plain threads (one per core by default, at most
//! [`MAX_THREADS`]) takes spawn tasks from one queue, in the order they were
//! submitted (fire order); the run's task awaits the result on a oneshot channel.
//!
//! The threads are started on first use and live as long as the process.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

/// One spawn, run on a spawner thread.
pub type Task = Box<dyn FnOnce() + Send + 'static>;

/// Upper bound on spawner threads (more cores than this gain nothing: the kernel's
/// work per spawn is short and the children need the cores too).
pub const MAX_THREADS: usize = 8;

/// Spawner threads requested before first use; 0 means one per core.
static REQUESTED: AtomicUsize = AtomicUsize::new(0);
static POOL: OnceLock<Option<Pool>> = OnceLock::new();

struct Pool {
    queue: Sender<Task>,
    threads: usize,
}

/// Sets the number of spawner threads (1..=[`MAX_THREADS`]); effective only before
/// the first spawn. For benchmarks comparing pool sizes.
pub fn set_threads(threads: usize) {
    REQUESTED.store(threads.clamp(1, MAX_THREADS), Ordering::Relaxed);
}

/// The number of spawner threads in use (0 if they could not be started: then tasks
/// run on the caller's thread).
pub fn threads() -> usize {
    pool().map_or(0, |p| p.threads)
}

/// Queues `task` for a spawner thread. If no spawner thread can take it (they could
/// not be started), it runs here, on the caller's thread: slower, never lost.
pub fn submit(task: Task) {
    let Some(pool) = pool() else {
        task();
        return;
    };
    if let Err(returned) = pool.queue.send(task) {
        (returned.0)();
    }
}

fn pool() -> Option<&'static Pool> {
    POOL.get_or_init(start).as_ref()
}

fn start() -> Option<Pool> {
    let wanted = match REQUESTED.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_THREADS),
        n => n,
    };
    let (queue, tasks) = channel::<Task>();
    let tasks = Arc::new(Mutex::new(tasks));
    let mut threads = 0;
    for index in 0..wanted {
        let tasks = Arc::clone(&tasks);
        let started = std::thread::Builder::new()
            .name(format!("chime-spawn-{index}"))
            // A spawn needs little stack; many more threads would not need much either.
            .stack_size(256 * 1024)
            .spawn(move || serve(&tasks));
        match started {
            Ok(_) => threads += 1,
            Err(err) => {
                tracing::warn!(error = %err, "cannot start a spawner thread");
                break;
            }
        }
    }
    (threads > 0).then_some(Pool { queue, threads })
}

/// A spawner thread's loop: the next task in submission order, until the queue is gone.
fn serve(tasks: &Mutex<Receiver<Task>>) {
    loop {
        // The lock is held only while waiting for the next task; the task runs without
        // it, so the other threads take the tasks that follow.
        let next = match tasks.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok(task) = next else { return };
        // A panicking task (a bug) must not take the thread with it: its oneshot is
        // dropped, and its run reports the failure.
        if catch_unwind(AssertUnwindSafe(task)).is_err() {
            tracing::error!("a spawn task panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_off_the_callers_thread_and_all_of_them_run() {
        let (done, results) = channel();
        let caller = std::thread::current().id();
        for i in 0..50 {
            let done = done.clone();
            submit(Box::new(move || {
                let _ = done.send((i, std::thread::current().id() != caller));
            }));
        }
        let mut seen: Vec<(i32, bool)> = (0..50).map(|_| results.recv().unwrap()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..50).map(|i| (i, true)).collect::<Vec<_>>());
        assert!(threads() >= 1);
    }

    #[test]
    fn a_panicking_task_does_not_stop_the_pool() {
        for _ in 0..MAX_THREADS + 1 {
            submit(Box::new(|| panic!("a bug")));
        }
        let (done, result) = channel();
        submit(Box::new(move || {
            let _ = done.send(7);
        }));
        assert_eq!(result.recv().unwrap(), 7);
    }
}
