//! `cargo bench --bench soak` (not in CI): does the service stay flat over a long run?
//!
//! The service runs in-process (`daemon::serve`, as `chime run` runs it) with the real
//! executor: 1,000 shell jobs (`true`): ten every second, the rest every 30 s or every
//! minute, spread over the seconds of the minute (about 35 runs a second). Every 10 s a reload swaps in the
//! next of a cycle of sets (commands changed, jobs renamed, schedules changed, jobs
//! removed and added back); every 150 s the wall clock is stepped, alternately 20 s
//! forward and 20 s back (a clock of the bench's own, over the system clock, so the
//! machine's clock is left alone).
//!
//! Printed per minute: RSS, open descriptors, runs started, and `lateness_ms` of
//! `run.started` (scheduled instant → process spawned) p50 / p99 / max. Flat means:
//! the last minute's RSS within 10 % of the second minute's, descriptors within 2, and
//! lateness p99 within 2×.
//!
//! Also printed: the live heap (bytes allocated and not yet freed, counted by a wrapper
//! around mimalloc, so a leak shows as growth here whatever the allocator retains) and
//! mimalloc's committed memory (`mi_process_info`'s `current_commit`).
//!
//! `CHIME_SOAK_MINUTES` sets the length (default 30). Switches for bisecting, all off
//! by default: `CHIME_SOAK_NO_RELOAD=1` (no reloads), `CHIME_SOAK_NO_STEPS=1` (no clock
//! steps), `CHIME_SOAK_NO_RUNS=1` (every schedule yearly: nothing fires in the run).

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chime::clock::{Clock, SystemClock, Wake};
use chime::config::Config;
use chime::daemon::{ConfigSource, Control, Reloaded, ServeOptions, World, serve};
use chime::events::{Event, Events, Trigger};
use chime::exec::Real;
use chime::health::Health;
use chime::job::{Action, Job, ShellCommand};
use chime::systemd::Notifier;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{Notify, mpsc};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated through the global allocator and not yet freed.
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
/// Allocations not yet freed.
static LIVE_BLOCKS: AtomicI64 = AtomicI64::new(0);

/// mimalloc, counting what is live (requested sizes, not mimalloc's size classes).
struct Counting;

// SAFETY: every call is forwarded unchanged to mimalloc; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let ptr = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
            LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let ptr = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
            LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let new = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        new
    }
}

/// mimalloc's committed memory in bytes.
fn committed() -> usize {
    let mut out = [0usize; 8];
    let [
        elapsed,
        user,
        system,
        rss,
        peak_rss,
        commit,
        peak_commit,
        faults,
    ] = &mut out;
    // SAFETY: every pointer is to a live, writable usize.
    unsafe {
        libmimalloc_sys::mi_process_info(
            elapsed,
            user,
            system,
            rss,
            peak_rss,
            commit,
            peak_commit,
            faults,
        );
    }
    out[5]
}

fn switch(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

const JOBS: usize = 1_000;

/// The system clock shifted by an offset the bench steps, as NTP would step it.
struct SteppedClock {
    offset_ms: AtomicI64,
    stepped: Notify,
}

impl SteppedClock {
    fn offset(&self) -> TimeDelta {
        TimeDelta::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    fn step(&self, by: TimeDelta) {
        self.offset_ms
            .fetch_add(by.num_milliseconds(), Ordering::Relaxed);
        self.stepped.notify_waiters();
    }
}

impl Clock for SteppedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset()
    }

    fn steady(&self) -> Duration {
        SystemClock.steady()
    }

    fn lead(&self) -> Duration {
        SystemClock::LEAD
    }

    fn settle_until(&self, at: DateTime<Utc>) {
        SystemClock.settle_until(at - self.offset());
    }

    async fn sleep_until(&self, at: DateTime<Utc>) -> Wake {
        let stepped = self.stepped.notified();
        tokio::pin!(stepped);
        stepped.as_mut().enable();
        tokio::select! {
            wake = SystemClock.sleep_until(at - self.offset()) => wake,
            () = stepped => Wake::Stepped,
        }
    }
}

/// The k-th set of the reload cycle.
fn set(k: usize, no_runs: bool) -> Vec<Job> {
    let variant = k % 4;
    // With no runs, every schedule fires only on 1 January at midnight.
    let rest = if no_runs { "0 0 1 1 *" } else { "* * * * *" };
    (0..JOBS)
        .filter(|i| !(variant == 3 && i % 10 == 0)) // every tenth job removed, then back
        .map(|i| {
            // Spread over the seconds of the minute, as real fleets are, so that the
            // bench measures the service, not 500 process starts at one instant.
            let second = i % 60;
            let schedule = match (i % 100, variant) {
                _ if i < 10 && !no_runs => "* * * * * *".to_string(),
                (0..=49, 2) => format!("{second} {rest}"), // changed schedules
                (0..=49, _) => format!("{second},{} {rest}", (second + 30) % 60),
                _ => format!("{second} {rest}"),
            };
            // Renamed in odd sets: the names of a fifth of the jobs alternate.
            let name = if i % 5 == 0 && k % 2 == 1 {
                format!("renamed-{i}")
            } else {
                format!("job-{i}")
            };
            let script = format!("true {}", if variant == 1 { "changed" } else { "" });
            Job::new(name, &schedule, Action::Shell(ShellCommand::Script(script)))
                .expect("a valid schedule")
        })
        .collect()
}

fn config(jobs: Vec<Job>) -> Config {
    Config {
        jobs,
        files: Vec::new(),
        warnings: Vec::new(),
        default_timezone: chime::zone::Zone::UTC,
    }
}

/// A source that hands out the next set of the cycle at each reload.
struct Cycle {
    next: usize,
    no_runs: bool,
}

impl ConfigSource for Cycle {
    fn reload(&mut self, _force: bool) -> Reloaded {
        self.next += 1;
        Reloaded::Loaded(config(set(self.next, self.no_runs)))
    }
}

fn rss_kb() -> u64 {
    kb_field("/proc/self/status", "VmRSS:")
}

/// Of the RSS, how much is in transparent huge pages (2 MiB each).
fn huge_kb() -> u64 {
    kb_field("/proc/self/smaps_rollup", "AnonHugePages:")
}

fn kb_field(path: &str, field: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

struct Minute {
    rss_kb: u64,
    live: i64,
    fds: usize,
    runs: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

fn main() {
    chime::memory::configure_allocator();
    let minutes: usize = std::env::var("CHIME_SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let no_reload = switch("CHIME_SOAK_NO_RELOAD");
    let no_steps = switch("CHIME_SOAK_NO_STEPS");
    let no_runs = switch("CHIME_SOAK_NO_RUNS");
    if no_reload || no_steps || no_runs {
        println!("switches: no reload {no_reload}, no steps {no_steps}, no runs {no_runs}\n");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let lateness = Arc::new(Mutex::new(Vec::<f64>::new()));
    let reloads = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let catch_ups = Arc::new(AtomicUsize::new(0));
    let events = {
        let catch_ups = Arc::clone(&catch_ups);
        let lateness = Arc::clone(&lateness);
        let reloads = Arc::clone(&reloads);
        let failures = Arc::clone(&failures);
        Events::new(move |event| match event {
            // Catch-up runs after a forward step are late by design; they are counted,
            // not mixed into the lateness of scheduled runs.
            Event::RunStarted {
                trigger: Trigger::CatchUp,
                ..
            } => {
                catch_ups.fetch_add(1, Ordering::Relaxed);
            }
            Event::RunStarted { lateness_ms, .. } => {
                if let Ok(mut lateness) = lateness.lock() {
                    lateness.push(lateness_ms);
                }
            }
            Event::ConfigReloaded { .. } => {
                reloads.fetch_add(1, Ordering::Relaxed);
            }
            Event::ServiceFailed { .. } | Event::ConfigRejected { .. } => {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        })
    };
    let clock = Arc::new(SteppedClock {
        offset_ms: AtomicI64::new(0),
        stepped: Notify::new(),
    });
    let rows = runtime.block_on(async {
        let (control, control_rx) = mpsc::channel(16);
        let world = World {
            clock: Arc::clone(&clock),
            executor: Real::new().expect("an HTTP client"),
            events,
            notifier: Notifier::from_socket_path(None),
            health: Health::new(),
        };
        let options = ServeOptions {
            recheck_every: None,
            ..ServeOptions::default()
        };
        let service = tokio::spawn(serve(
            config(set(0, no_runs)),
            Cycle { next: 0, no_runs },
            options,
            world,
            control_rx,
        ));
        let mut rows = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        println!(
            "| minute | RSS MB | of which huge pages MB | live heap MB | live blocks | mimalloc commit MB | open fds | scheduled runs | lateness p50 / p99 / max ms | reloads so far | catch-ups so far |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for minute in 1..=minutes {
            for step in 0..6 {
                tick.tick().await;
                if !no_reload {
                    let _ = control.send(Control::Reload).await;
                }
                let seconds = ((minute - 1) * 6 + step + 1) * 10;
                if seconds % 150 == 0 && !no_steps {
                    let forward = (seconds / 150) % 2 == 1;
                    clock.step(TimeDelta::seconds(if forward { 20 } else { -20 }));
                }
            }
            let mut late = std::mem::take(&mut *lateness.lock().expect("not poisoned"));
            late.sort_by(f64::total_cmp);
            let row = Minute {
                rss_kb: rss_kb(),
                live: LIVE_BYTES.load(Ordering::Relaxed),
                fds: open_fds(),
                runs: late.len(),
                p50: percentile(&late, 50.0),
                p99: percentile(&late, 99.0),
                max: late.last().copied().unwrap_or(f64::NAN),
            };
            println!(
                "| {minute} | {:.1} | {:.1} | {:.2} | {} | {:.1} | {} | {} | {:.2} / {:.2} / {:.2} | {} | {} |",
                row.rss_kb as f64 / 1024.0,
                huge_kb() as f64 / 1024.0,
                row.live as f64 / 1_048_576.0,
                LIVE_BLOCKS.load(Ordering::Relaxed),
                committed() as f64 / 1_048_576.0,
                row.fds,
                row.runs,
                row.p50,
                row.p99,
                row.max,
                reloads.load(Ordering::Relaxed),
                catch_ups.load(Ordering::Relaxed),
            );
            rows.push(row);
        }
        let _ = control.send(Control::Shutdown).await;
        let _ = service.await;
        rows
    });
    println!(
        "\nfailures or rejected reloads: {}",
        failures.load(Ordering::Relaxed)
    );
    if let (Some(second), Some(last)) = (rows.get(1), rows.last()) {
        let rss = last.rss_kb as f64 / second.rss_kb.max(1) as f64;
        println!(
            "live heap last/second {:.3}",
            last.live as f64 / second.live.max(1) as f64
        );
        let fds = last.fds.abs_diff(second.fds);
        let p99 = last.p99 / second.p99;
        println!(
            "flat? RSS last/second {rss:.3} (within 10 %: {}), descriptors {} → {} (within 2: {}), p99 last/second {p99:.2} (within 2×: {})",
            (0.9..=1.1).contains(&rss),
            second.fds,
            last.fds,
            fds <= 2,
            p99 <= 2.0,
        );
    }
}
