//! Time as the service reads it: the wall clock (fires are wall-clock instants), a
//! clock that keeps counting through suspend (to tell a stepped wall clock from a late
//! wake-up), and a sleep until a wall-clock instant that ends early when the wall clock
//! is stepped.
//!
//! [`SystemClock`] sleeps on a `timerfd` armed on `CLOCK_REALTIME` with
//! `TFD_TIMER_CANCEL_ON_SET`: the kernel wakes it at the exact instant (no tokio
//! millisecond rounding, no polling) and also the moment anyone sets the clock.
//! It is armed [`SystemClock::LEAD`] early and the last moment is spun away (see
//! [`sleep_until_warm`]), since waking a thread parked on an idle CPU is slow next to
//! the lateness a fire should have (measured: benches/README.md).
//! [`VirtualClock`] runs on tokio's virtual time so tests can step, jump and cross DST
//! without waiting.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// Why a sleep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The wall clock reached the instant.
    Due,
    /// The wall clock was set (stepped) while sleeping.
    Stepped,
}

pub trait Clock: Send + Sync + 'static {
    /// The wall clock.
    fn now(&self) -> DateTime<Utc>;
    /// A steady clock that also counts time spent suspended.
    fn steady(&self) -> Duration;
    /// Resolves when the wall clock reaches `at`, or early when the wall clock is stepped.
    fn sleep_until(&self, at: DateTime<Utc>) -> impl Future<Output = Wake> + Send;
    /// How long before an instant the scheduler wakes, so that its thread and a worker
    /// are already running when the instant comes; zero (the default) wakes at the
    /// instant itself.
    fn lead(&self) -> Duration {
        Duration::ZERO
    }
    /// Busy-waits until the wall clock reaches `at`, at most [`Self::lead`] away; gives
    /// up after twice the lead (a clock stepped back meanwhile). The default returns at
    /// once.
    fn settle_until(&self, _at: DateTime<Utc>) {}
}

/// Sleeps until `at` as [`Clock::sleep_until`] does, but so that threads are already
/// running when the instant comes: when `at` is more than [`Clock::lead`] away, it
/// wakes that much early, keeps one of `workers`' threads spinning until `at` (the runs
/// due then start on it without waiting for a parked worker to be woken; once `at`
/// has come it looks for work and finds them) and spins to the instant itself.
pub async fn sleep_until_warm<C: Clock>(
    clock: &Arc<C>,
    at: DateTime<Utc>,
    workers: &tokio::runtime::Handle,
) -> Wake {
    let lead = TimeDelta::from_std(clock.lead()).unwrap_or(TimeDelta::zero());
    // Nothing to warm when the instant is within the lead: this thread has just run (and
    // spinning all the way there would keep two threads busy for a job firing every
    // millisecond).
    if lead.is_zero() || at - clock.now() <= lead {
        return clock.sleep_until(at).await;
    }
    match clock.sleep_until(at - lead).await {
        Wake::Due => {
            let worker = Arc::clone(clock);
            workers.spawn(async move { worker.settle_until(at) });
            clock.settle_until(at);
            Wake::Due
        }
        Wake::Stepped => Wake::Stepped,
    }
}

/// The machine's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// How early the scheduler wakes: enough to cover waking a thread from an idle CPU
    /// (benches/README.md). Spinning away what is left costs, per instant at which
    /// something fires, up to this much CPU on each of two threads (the scheduler's and
    /// a worker), twice this at worst: 0.06 % of a core for an every-second job.
    /// Nothing while nothing is due.
    pub const LEAD: Duration = Duration::from_micros(300);
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn lead(&self) -> Duration {
        Self::LEAD
    }

    fn settle_until(&self, at: DateTime<Utc>) {
        let give_up = std::time::Instant::now() + 2 * Self::LEAD;
        while Utc::now() < at && std::time::Instant::now() < give_up {
            std::hint::spin_loop();
        }
    }

    fn steady(&self) -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on Linux ≥ 2.6.39.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        if rc != 0 {
            return Duration::ZERO;
        }
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    async fn sleep_until(&self, at: DateTime<Utc>) -> Wake {
        match timerfd::sleep_until(at).await {
            Ok(wake) => wake,
            Err(_) => {
                // No timerfd (not Linux, or out of descriptors): fall back to a steady
                // sleep, capped so a stepped clock is still noticed within a second.
                let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
                if Utc::now() >= at {
                    Wake::Due
                } else {
                    Wake::Stepped
                }
            }
        }
    }
}

mod timerfd {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use chrono::{DateTime, Utc};
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    use super::Wake;

    pub(super) async fn sleep_until(at: DateTime<Utc>) -> io::Result<Wake> {
        // SAFETY: plain syscall; the returned descriptor is owned below.
        let raw = unsafe {
            libc::timerfd_create(libc::CLOCK_REALTIME, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // A zero it_value would disarm the timer; instants at or before the epoch are
        // long past anyway, so 1 ns fires at once just the same.
        let (secs, nanos) = if at.timestamp() <= 0 {
            (0, 1)
        } else {
            (at.timestamp(), i64::from(at.timestamp_subsec_nanos()))
        };
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: secs as libc::time_t,
                tv_nsec: nanos as libc::c_long,
            },
        };
        let flags = libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET;
        // SAFETY: `fd` is a valid timerfd and `spec` a valid itimerspec.
        let rc =
            unsafe { libc::timerfd_settime(fd.as_raw_fd(), flags, &spec, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the OwnedFd keeps the descriptor open, unchanged, for as long as the
        // AsyncFd that owns it lives.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        loop {
            let mut guard = fd.readable().await?;
            let mut expirations = [0u8; 8];
            // SAFETY: reading 8 bytes into an 8-byte buffer from a valid descriptor.
            let n = unsafe {
                libc::read(
                    fd.get_ref().as_raw_fd(),
                    expirations.as_mut_ptr().cast(),
                    expirations.len(),
                )
            };
            if n == 8 {
                return Ok(Wake::Due);
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ECANCELED) => return Ok(Wake::Stepped),
                Some(libc::EAGAIN) => guard.clear_ready(),
                Some(libc::EINTR) => {}
                _ => return Err(err),
            }
        }
    }
}

/// A wall clock on tokio's (pausable) time, plus steps: for tests.
///
/// Wall time = start + elapsed tokio time + the sum of all steps. With
/// `#[tokio::test(start_paused = true)]` tokio jumps ahead whenever every task waits,
/// so a test of a day of fires takes milliseconds.
#[derive(Debug)]
pub struct VirtualClock {
    start_wall: DateTime<Utc>,
    start: tokio::time::Instant,
    stepped_by: Mutex<TimeDelta>,
    stepped: tokio::sync::Notify,
}

impl VirtualClock {
    pub fn new(start_wall: DateTime<Utc>) -> Self {
        VirtualClock {
            start_wall,
            start: tokio::time::Instant::now(),
            stepped_by: Mutex::new(TimeDelta::zero()),
            stepped: tokio::sync::Notify::new(),
        }
    }

    /// Steps the wall clock by `delta` (negative: backwards), as NTP or an operator would.
    pub fn step(&self, delta: TimeDelta) {
        if let Ok(mut total) = self.stepped_by.lock() {
            *total += delta;
        }
        self.stepped.notify_waiters();
    }

    fn steps(&self) -> TimeDelta {
        self.stepped_by.lock().map_or(TimeDelta::zero(), |d| *d)
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = TimeDelta::from_std(self.start.elapsed()).unwrap_or(TimeDelta::MAX);
        self.start_wall + elapsed + self.steps()
    }

    fn steady(&self) -> Duration {
        self.start.elapsed()
    }

    async fn sleep_until(&self, at: DateTime<Utc>) -> Wake {
        loop {
            let stepped = self.stepped.notified();
            tokio::pin!(stepped);
            stepped.as_mut().enable();
            let now = self.now();
            if now >= at {
                return Wake::Due;
            }
            let wait = (at - now).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut stepped => return Wake::Stepped,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settle_until_returns_once_a_near_instant_has_come() {
        let at = Utc::now() + TimeDelta::microseconds(200);
        SystemClock.settle_until(at);
        assert!(Utc::now() >= at);
    }

    #[test]
    fn settle_until_gives_up_on_an_instant_beyond_the_lead() {
        let at = Utc::now() + TimeDelta::hours(1);
        let spun = std::time::Instant::now();
        SystemClock.settle_until(at);
        assert!(Utc::now() < at);
        assert!(
            spun.elapsed() < Duration::from_secs(5),
            "it spun {:?}",
            spun.elapsed()
        );
    }
}
