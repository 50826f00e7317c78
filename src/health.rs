//! Is the service well? Heartbeats of its two loops, and the first internal failure.
//!
//! The scheduling loop and the control loop each beat at least once a second. The
//! service is *alive* while both beats are under [`STALE_AFTER`] old; the systemd
//! watchdog pings only then, so a stuck loop — either of them — gets the service
//! restarted. An internal task that fails (a panic, a loop that ends unasked) reports
//! a [`Failure`]; the service then stops and exits with code 3.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A loop whose beat is older than this is stuck.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(5);
/// How often each loop beats, at least.
pub(crate) const BEAT_EVERY: Duration = Duration::from_secs(1);

/// The two loops that must keep beating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loop {
    Scheduler,
    Control,
}

impl Loop {
    pub fn as_str(self) -> &'static str {
        match self {
            Loop::Scheduler => "scheduler",
            Loop::Control => "control",
        }
    }
}

/// An internal part of the service that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {what} failed: {error}")]
pub struct Failure {
    /// Which part: `scheduler`, `reload`, …
    pub what: &'static str,
    pub error: String,
}

impl Failure {
    /// A failure from a task's panic payload.
    pub fn from_panic(what: &'static str, payload: Box<dyn Any + Send>) -> Failure {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string());
        Failure {
            what,
            error: format!("panicked: {message}"),
        }
    }
}

/// Shared by the loops and whoever asks after them. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    start: Instant,
    /// Milliseconds after `start` of each loop's last beat.
    scheduler: AtomicU64,
    control: AtomicU64,
    failure: Mutex<Option<Failure>>,
    failed: Notify,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    /// Both loops count as having just beaten.
    pub fn new() -> Health {
        Health {
            inner: Arc::new(Inner {
                start: Instant::now(),
                scheduler: AtomicU64::new(0),
                control: AtomicU64::new(0),
                failure: Mutex::new(None),
                failed: Notify::new(),
            }),
        }
    }

    fn since_start(&self) -> u64 {
        u64::try_from(self.inner.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn beat_of(&self, which: Loop) -> &AtomicU64 {
        match which {
            Loop::Scheduler => &self.inner.scheduler,
            Loop::Control => &self.inner.control,
        }
    }

    pub fn beat(&self, which: Loop) {
        self.beat_of(which)
            .store(self.since_start(), Ordering::Relaxed);
    }

    /// How long ago a loop last beat.
    pub fn age(&self, which: Loop) -> Duration {
        let last = self.beat_of(which).load(Ordering::Relaxed);
        Duration::from_millis(self.since_start().saturating_sub(last))
    }

    /// The first loop found stuck, if any.
    pub fn stale(&self) -> Option<Loop> {
        [Loop::Scheduler, Loop::Control]
            .into_iter()
            .find(|&which| self.age(which) >= STALE_AFTER)
    }

    pub fn alive(&self) -> bool {
        self.stale().is_none()
    }

    /// Reports a failure; the first one reported is the one the service stops for.
    pub fn fail(&self, failure: Failure) {
        let mut slot = self
            .inner
            .failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            *slot = Some(failure);
        }
        drop(slot);
        self.inner.failed.notify_waiters();
    }

    pub fn failure(&self) -> Option<Failure> {
        self.inner
            .failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Resolves once a failure has been reported.
    pub async fn failed(&self) -> Failure {
        loop {
            let notified = self.inner.failed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(failure) = self.failure() {
                return failure;
            }
            notified.await;
        }
    }
}

pin_project_lite::pin_project! {
    /// A future that turns a panic while it is polled into an `Err` with the panic's
    /// payload, so that the task running it can report the failure instead of
    /// vanishing. See [`catch_panic`].
    pub(crate) struct CatchPanic<F> {
        #[pin]
        inner: F,
    }
}

/// Wraps a task's future: a panic inside it becomes `Err(payload)`.
pub(crate) fn catch_panic<F: Future>(inner: F) -> CatchPanic<F> {
    CatchPanic { inner }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        // After a panic the future is never polled again (its task ends with the Err),
        // so whatever state the panic left behind is not observed.
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_loop_that_stops_beating_goes_stale_after_five_seconds() {
        let health = Health::new();
        assert!(health.alive());
        tokio::time::advance(Duration::from_secs(3)).await;
        health.beat(Loop::Scheduler);
        tokio::time::advance(Duration::from_millis(2_500)).await;
        // The control loop last beat at 0 (5.5 s ago); the scheduler at 3 s.
        assert_eq!(health.stale(), Some(Loop::Control));
        health.beat(Loop::Control);
        assert!(health.alive());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(health.stale(), Some(Loop::Scheduler));
    }

    #[tokio::test]
    async fn a_panic_inside_a_caught_future_is_returned() {
        let caught = catch_panic(async {
            tokio::task::yield_now().await;
            panic!("broke after a yield");
        })
        .await;
        let failure = Failure::from_panic("run", caught.unwrap_err());
        assert_eq!(failure.error, "panicked: broke after a yield");
        assert_eq!(catch_panic(async { 7 }).await.ok(), Some(7));
    }

    #[tokio::test]
    async fn the_first_failure_is_kept_and_wakes_the_waiter() {
        let health = Health::new();
        let waiter = tokio::spawn({
            let health = health.clone();
            async move { health.failed().await }
        });
        tokio::task::yield_now().await;
        health.fail(Failure {
            what: "reload",
            error: "first".into(),
        });
        health.fail(Failure {
            what: "scheduler",
            error: "second".into(),
        });
        let failure = waiter.await.unwrap();
        assert_eq!(failure.what, "reload");
        assert_eq!(health.failure(), Some(failure));
    }
}
