//! The service in-process (`daemon::serve`): its control loop, and what happens when
//! one of its internal parts fails. Real time, a test executor whose runs last until
//! cancelled, and configuration sources the test controls; every wait has a timeout.

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chime::clock::{Clock, VirtualClock, Wake};
use chime::config::Config;
use chime::daemon::{ConfigSource, Control, Reloaded, ServeOptions, World, serve};
use chime::events::{Event, Events, ExitDetail, Outcome};
use chime::exec::{Attempt, AttemptResult, Executor, OutputSink};
use chime::health::{Failure, Health};
use chime::job::{Action, Job, ShellCommand};
use chime::systemd::Notifier;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

/// Runs last until cancelled; a job named `boom` panics instead (a bug in chime's run
/// code, as far as the service can tell).
#[derive(Clone)]
struct Endless;

impl Executor for Endless {
    async fn execute(&self, attempt: Attempt, _output: Arc<OutputSink>) -> AttemptResult {
        assert!(attempt.job.name != "boom", "the run code broke");
        attempt.cancel.cancelled().await;
        AttemptResult::with_outcome(Outcome::Cancelled, ExitDetail::default())
    }
}

fn job(name: &str, schedule: &str) -> Job {
    Job::new(
        name,
        schedule,
        Action::Shell(ShellCommand::Script("true".into())),
    )
    .unwrap()
}

fn config(jobs: Vec<Job>) -> Config {
    Config {
        jobs,
        files: Vec::new(),
        warnings: Vec::new(),
        default_timezone: chime::zone::Zone::UTC,
    }
}

/// A source whose reloads the test drives: each reload takes the next step from a
/// channel (blocking until the test sends it), and counts itself.
struct Scripted {
    steps: Mutex<std_mpsc::Receiver<Step>>,
    reloads: Arc<Mutex<usize>>,
}

enum Step {
    Load(Vec<Job>),
    Panic,
}

impl ConfigSource for Scripted {
    fn reload(&mut self, _force: bool) -> Reloaded {
        *self.reloads.lock().unwrap() += 1;
        let step = self.steps.lock().unwrap().recv();
        match step {
            Ok(Step::Load(jobs)) => Reloaded::Loaded(config(jobs)),
            Ok(Step::Panic) => panic!("the loader broke"),
            Err(_) => Reloaded::Unchanged,
        }
    }
}

/// A wall clock that panics once told to: the scheduling loop reads it at every wake.
struct Breakable {
    inner: VirtualClock,
    broken: std::sync::atomic::AtomicBool,
}

impl Clock for Breakable {
    fn now(&self) -> DateTime<Utc> {
        assert!(
            !self.broken.load(std::sync::atomic::Ordering::Relaxed),
            "the clock broke"
        );
        self.inner.now()
    }
    fn steady(&self) -> Duration {
        self.inner.steady()
    }
    fn sleep_until(&self, at: DateTime<Utc>) -> impl Future<Output = Wake> + Send {
        self.inner.sleep_until(at)
    }
}

struct Service {
    control: mpsc::Sender<Control>,
    events: mpsc::UnboundedReceiver<Event>,
    seen: Vec<Event>,
    steps: std_mpsc::Sender<Step>,
    reloads: Arc<Mutex<usize>>,
    clock: Arc<Breakable>,
    task: tokio::task::JoinHandle<Result<(), Failure>>,
}

impl Service {
    fn start(jobs: Vec<Job>) -> Service {
        let (steps, step_rx) = std_mpsc::channel();
        let reloads = Arc::new(Mutex::new(0));
        let source = Scripted {
            steps: Mutex::new(step_rx),
            reloads: Arc::clone(&reloads),
        };
        let clock = Arc::new(Breakable {
            inner: VirtualClock::new(Utc::now()),
            broken: std::sync::atomic::AtomicBool::new(false),
        });
        let (events, event_rx) = Events::channel();
        let (control, control_rx) = mpsc::channel(64);
        let options = ServeOptions {
            shutdown_grace: Duration::from_secs(5),
            recheck_every: None,
            timer_thread: false,
            ..ServeOptions::default()
        };
        let world = World {
            clock: Arc::clone(&clock),
            executor: Endless,
            events,
            notifier: Notifier::from_socket_path(None),
            health: Health::new(),
        };
        let task = tokio::spawn(serve(config(jobs), source, options, world, control_rx));
        Service {
            control,
            events: event_rx,
            seen: Vec::new(),
            steps,
            reloads,
            clock,
            task,
        }
    }

    async fn wait_for(&mut self, what: &str, matches: impl Fn(&Event) -> bool) -> Event {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(event) = self.events.recv().await {
                self.seen.push(event.clone());
                if matches(&event) {
                    return Some(event);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(event)) => event,
            _ => panic!("no {what} within {WAIT:?}; saw {:#?}", self.seen),
        }
    }

    async fn wait_event(&mut self, name: &str) -> Event {
        self.wait_for(name, |e| e.name() == name).await
    }

    async fn send(&self, control: Control) {
        self.control.send(control).await.unwrap();
    }

    async fn wait_reloads(&self, count: usize) {
        tokio::time::timeout(WAIT, async {
            while *self.reloads.lock().unwrap() < count {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("fewer than {count} reloads started"));
    }

    async fn ended(self) -> Result<(), Failure> {
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("serve returned in time")
            .expect("serve did not panic")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_reload_is_a_service_failure_not_a_clean_stop() {
    let mut service = Service::start(vec![job("tick", "* * * * * *")]);
    service.wait_event("service.started").await;
    // A run is in flight when the failure comes: it is terminated, not left behind.
    service.wait_event("run.started").await;
    service.steps.send(Step::Panic).unwrap();
    service.send(Control::Reload).await;
    let failed = service.wait_event("service.failed").await;
    let Event::ServiceFailed { what, error } = &failed else {
        unreachable!()
    };
    assert_eq!(what, "reload");
    assert!(error.contains("the loader broke"), "{error}");
    service
        .wait_for("the run's end", |e| {
            matches!(
                e,
                Event::RunFinished {
                    outcome: Outcome::Cancelled,
                    ..
                }
            )
        })
        .await;
    let seen: Vec<&str> = service.seen.iter().map(Event::name).collect();
    let result = service.ended().await;
    assert_eq!(result.unwrap_err().what, "reload");
    assert!(!seen.contains(&"service.stopped"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_scheduling_loop_is_a_service_failure() {
    let mut service = Service::start(vec![job("tick", "* * * * * *")]);
    service.wait_event("service.started").await;
    // The start-up's own reads of the clock (@reboot jobs, leftovers, catch-up) follow
    // `service.started`; a run started means the scheduling loop has taken over.
    service.wait_event("run.started").await;
    service
        .clock
        .broken
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let failed = service.wait_event("service.failed").await;
    let Event::ServiceFailed { what, error } = &failed else {
        unreachable!()
    };
    assert_eq!(what, "scheduler");
    assert!(error.contains("the clock broke"), "{error}");
    assert_eq!(service.ended().await.unwrap_err().what, "scheduler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_run_is_a_service_failure() {
    let mut service = Service::start(vec![job("tick", "* * * * * *"), job("boom", "* * * * * *")]);
    let failed = service.wait_event("service.failed").await;
    let Event::ServiceFailed { what, error } = &failed else {
        unreachable!()
    };
    assert_eq!(what, "run");
    assert!(error.contains("the run code broke"), "{error}");
    assert_eq!(service.ended().await.unwrap_err().what, "run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_served_while_a_reload_is_stuck() {
    let mut service = Service::start(vec![job("tick", "* * * * * *")]);
    service.wait_event("service.started").await;
    service.send(Control::Reload).await;
    // The reload is now blocked reading (no step sent): a hung file.
    service.wait_reloads(1).await;
    service.send(Control::Shutdown).await;
    service.wait_event("service.stopped").await;
    assert_eq!(service.ended().await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_requests_during_a_reload_coalesce_into_one_more() {
    let mut service = Service::start(vec![job("a", "* * * * * *")]);
    service.wait_event("service.started").await;
    service.send(Control::Reload).await;
    service.wait_reloads(1).await;
    for _ in 0..30 {
        service.send(Control::Reload).await;
        service.send(Control::ReloadIfChanged).await;
    }
    // Release the first reload: one more follows for the 60 requests, not 60.
    service
        .steps
        .send(Step::Load(vec![
            job("a", "* * * * * *"),
            job("b", "* * * * * *"),
        ]))
        .unwrap();
    service.wait_event("config.reloaded").await;
    service.wait_reloads(2).await;
    service
        .steps
        .send(Step::Load(vec![job("b", "* * * * * *")]))
        .unwrap();
    let second = service.wait_event("config.reloaded").await;
    assert_eq!(
        second,
        Event::ConfigReloaded {
            added: 0,
            changed: 0,
            removed: 1,
            unchanged: 1
        }
    );
    // A shutdown now is not held up by anything queued.
    service.send(Control::Shutdown).await;
    service.wait_event("service.stopped").await;
    let reloads = *service.reloads.lock().unwrap();
    assert_eq!(reloads, 2);
    assert_eq!(service.ended().await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_wins_over_queued_reloads() {
    let mut service = Service::start(vec![job("a", "* * * * * *")]);
    service.wait_event("service.started").await;
    for _ in 0..20 {
        service.send(Control::Reload).await;
    }
    service.send(Control::Shutdown).await;
    service.wait_event("service.stopped").await;
    // At most the one reload already started; it was left blocked and abandoned.
    assert!(*service.reloads.lock().unwrap() <= 1);
    let seen: Vec<&str> = service.seen.iter().map(Event::name).collect();
    assert!(!seen.contains(&"config.reloaded"), "{seen:?}");
    assert_eq!(service.ended().await, Ok(()));
}

/// The service in-process on tokio's virtual time, reading real schedule files from a
/// temporary directory: reloads, the drain and its grace, a second signal. Each event
/// is recorded with the virtual wall-clock time it was emitted at.
mod on_virtual_time {
    use super::*;
    use chime::config::LoadOptions;
    use chime::daemon::FileSource;
    use chrono::TimeDelta;
    use std::collections::HashMap;
    use std::path::Path;

    const START: &str = "2026-11-25T10:00:00.500Z";

    /// Each run takes `takes` (virtual), or until cancelled.
    #[derive(Clone)]
    struct Sleeps {
        takes: Duration,
    }

    impl Executor for Sleeps {
        async fn execute(&self, attempt: Attempt, _output: Arc<OutputSink>) -> AttemptResult {
            tokio::select! {
                () = tokio::time::sleep(self.takes) => {
                    AttemptResult::success(ExitDetail::default())
                }
                () = attempt.cancel.cancelled() => {
                    AttemptResult::with_outcome(Outcome::Cancelled, ExitDetail::default())
                }
            }
        }
    }

    fn schedule_file(dir: &Path, jobs: &[&str]) {
        let mut text = String::from("jobs:\n");
        for job in jobs {
            text.push_str(&format!(
                "  {job}:\n    schedule: \"* * * * * *\"\n    command: \"true\"\n"
            ));
        }
        std::fs::write(dir.join("jobs.yaml"), text).unwrap();
    }

    /// Every event, with the virtual time it was emitted at.
    type Timeline = Arc<Mutex<Vec<(DateTime<Utc>, Event)>>>;

    struct Virtual {
        clock: Arc<VirtualClock>,
        control: mpsc::Sender<Control>,
        events: Timeline,
        task: tokio::task::JoinHandle<Result<(), Failure>>,
        dir: tempfile::TempDir,
    }

    impl Virtual {
        fn start(jobs: &[&str], takes: Duration) -> Virtual {
            let dir = tempfile::tempdir().unwrap();
            schedule_file(dir.path(), jobs);
            let options = LoadOptions {
                default_timezone: chime::zone::Zone::UTC,
                env: HashMap::new(),
                max_jobs: None,
                privileges: chime::config::Privileges::of_process(),
            };
            let (source, config) =
                FileSource::load(vec![dir.path().to_path_buf()], options).unwrap();
            let clock = Arc::new(VirtualClock::new(START.parse().unwrap()));
            let events: Timeline = Arc::new(Mutex::new(Vec::new()));
            let sink = {
                let events = Arc::clone(&events);
                let clock = Arc::clone(&clock);
                Events::new(move |event| events.lock().unwrap().push((clock.now(), event)))
            };
            let (control, control_rx) = mpsc::channel(16);
            let world = World {
                clock: Arc::clone(&clock),
                executor: Sleeps { takes },
                events: sink,
                notifier: Notifier::from_socket_path(None),
                health: Health::new(),
            };
            let options = ServeOptions {
                shutdown_grace: Duration::from_secs(30),
                recheck_every: None,
                timer_thread: false,
                ..ServeOptions::default()
            };
            let task = tokio::spawn(serve(config, source, options, world, control_rx));
            Virtual {
                clock,
                control,
                events,
                task,
                dir,
            }
        }

        /// Waits (on virtual time, which jumps ahead) for the first event named `name`
        /// after `from` events were already seen; returns its index and time.
        async fn wait_event(&self, name: &str, from: usize) -> (usize, DateTime<Utc>) {
            for _ in 0..10_000 {
                if let Some((index, (at, _))) = self
                    .events
                    .lock()
                    .unwrap()
                    .iter()
                    .enumerate()
                    .skip(from)
                    .find(|(_, (_, e))| e.name() == name)
                {
                    return (index, *at);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!(
                "no {name} in 100 virtual seconds: {:#?}",
                self.events.lock().unwrap()
            );
        }

        fn events_named(&self, name: &str) -> Vec<(DateTime<Utc>, Event)> {
            self.events
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, e)| e.name() == name)
                .cloned()
                .collect()
        }

        fn runs_of(&self, job: &str) -> usize {
            self.events
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, e)| matches!(e, Event::RunStarted { job: j, .. } if &**j == job))
                .count()
        }

        async fn ended(self) -> Result<(), Failure> {
            tokio::time::timeout(Duration::from_secs(600), self.task)
                .await
                .expect("serve returned")
                .expect("serve did not panic")
        }
    }

    #[tokio::test(start_paused = true)]
    async fn accepted_and_rejected_reloads() {
        let service = Virtual::start(&["a"], Duration::ZERO);
        service.wait_event("service.started", 0).await;
        schedule_file(service.dir.path(), &["a", "b"]);
        service.control.send(Control::Reload).await.unwrap();
        let (seen, _) = service.wait_event("config.reloaded", 0).await;
        assert_eq!(
            service.events_named("config.reloaded")[0].1,
            Event::ConfigReloaded {
                added: 1,
                changed: 0,
                removed: 0,
                unchanged: 1
            }
        );
        std::fs::write(
            service.dir.path().join("bad.yaml"),
            "jobs:\n  c:\n    schedule: \"61 * * * *\"\n    command: x\n",
        )
        .unwrap();
        service.control.send(Control::Reload).await.unwrap();
        let (rejected, at) = service.wait_event("config.rejected", seen).await;
        let Event::ConfigRejected {
            errors,
            error_count,
        } = &service.events.lock().unwrap()[rejected].1.clone()
        else {
            unreachable!()
        };
        assert_eq!(*error_count, 1);
        assert!(errors[0].contains("bad.yaml:3:"), "{errors:?}");
        // The old set keeps running: b fires in the next seconds, c never.
        let b_before = service.runs_of("b");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            service.runs_of("b") >= b_before + 3,
            "b stopped after the rejected reload"
        );
        assert_eq!(service.runs_of("c"), 0);
        assert!(service.clock.now() > at);
        service.control.send(Control::Shutdown).await.unwrap();
        assert_eq!(service.ended().await, Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_ends_at_the_grace_and_terminates_what_still_runs() {
        let service = Virtual::start(&["slow"], Duration::from_secs(3_600));
        let (seen, _) = service.wait_event("run.started", 0).await;
        service.control.send(Control::Shutdown).await.unwrap();
        let (_, stopping) = service.wait_event("service.stopping", seen).await;
        let (_, cancelled) = service.wait_event("run.finished", seen).await;
        let (_, stopped) = service.wait_event("service.stopped", seen).await;
        // The run had its 30 s of grace, then was terminated; nothing started after.
        assert_eq!(cancelled - stopping, TimeDelta::seconds(30));
        assert!(stopped >= cancelled);
        let finished = service.events_named("run.finished");
        assert!(matches!(
            finished[0].1,
            Event::RunFinished {
                outcome: Outcome::Cancelled,
                ..
            }
        ));
        assert_eq!(service.runs_of("slow"), 1);
        assert_eq!(service.ended().await, Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_shutdown_ends_the_grace_at_once_and_a_reload_during_the_drain_is_skipped() {
        let service = Virtual::start(&["slow"], Duration::from_secs(3_600));
        let (seen, _) = service.wait_event("run.started", 0).await;
        service.control.send(Control::Shutdown).await.unwrap();
        let (_, stopping) = service.wait_event("service.stopping", seen).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        // A reload asked for during the drain is moot: it neither runs nor hides the
        // second shutdown behind it.
        schedule_file(service.dir.path(), &["slow", "other"]);
        service.control.send(Control::Reload).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let second = service.clock.now();
        service.control.send(Control::Shutdown).await.unwrap();
        let (_, cancelled) = service.wait_event("run.finished", seen).await;
        // Terminated at the second request (virtual time stands still meanwhile), some
        // 10 s into a 30 s grace.
        assert_eq!(cancelled, second);
        assert!(
            cancelled - stopping < TimeDelta::seconds(11),
            "{stopping} → {cancelled}"
        );
        service.wait_event("service.stopped", seen).await;
        assert!(service.events_named("config.reloaded").is_empty());
        assert_eq!(service.runs_of("other"), 0);
        assert_eq!(service.ended().await, Ok(()));
    }
}

/// A wall clock that blocks its caller while told to: a scheduling loop stuck in a call.
struct Stallable {
    inner: VirtualClock,
    stalled: std::sync::atomic::AtomicBool,
}

impl Clock for Stallable {
    fn now(&self) -> DateTime<Utc> {
        while self.stalled.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.inner.now()
    }
    fn steady(&self) -> Duration {
        self.inner.steady()
    }
    fn sleep_until(&self, at: DateTime<Utc>) -> impl Future<Output = Wake> + Send {
        self.inner.sleep_until(at)
    }
}

/// Issue 9 (liveness): the watchdog pinged from its own schedule whatever the loops
/// did. Now it pings only while both loops have beaten within 5 s, so a stuck
/// scheduling loop stops the pings and systemd restarts the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_scheduling_loop_stops_the_watchdog_pings() {
    use std::os::unix::net::UnixDatagram;
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let clock = Arc::new(Stallable {
        inner: VirtualClock::new(Utc::now()),
        stalled: std::sync::atomic::AtomicBool::new(false),
    });
    let (control, control_rx) = mpsc::channel(4);
    let world = World {
        clock: Arc::clone(&clock),
        executor: Endless,
        events: Events::discard(),
        notifier: Notifier::from_socket_path(Some(socket_path)),
        health: Health::new(),
    };
    let options = ServeOptions {
        recheck_every: None,
        watchdog: Some(Duration::from_millis(400)),
        ..ServeOptions::default()
    };
    let service = tokio::spawn(serve(
        config(Vec::new()),
        Scripted {
            steps: Mutex::new(std_mpsc::channel().1),
            reloads: Arc::new(Mutex::new(0)),
        },
        options,
        world,
        control_rx,
    ));
    // Pings (every 200 ms) collected on a thread, with when they came.
    let started = std::time::Instant::now();
    let collector = std::thread::spawn(move || {
        let mut pings = Vec::new();
        let mut buffer = [0u8; 512];
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(n) = socket.recv(&mut buffer)
                && String::from_utf8_lossy(&buffer[..n]).contains("WATCHDOG=1")
            {
                pings.push(started.elapsed());
            }
        }
        pings
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    clock.stalled.store(true, Ordering::Relaxed);
    let stalled_at = started.elapsed();
    let pings = tokio::task::spawn_blocking(move || collector.join().unwrap())
        .await
        .unwrap();
    clock.stalled.store(false, Ordering::Relaxed);
    control.send(Control::Shutdown).await.unwrap();
    tokio::time::timeout(WAIT, service)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let before = pings.iter().filter(|at| **at < stalled_at).count();
    let late = pings
        .iter()
        .filter(|at| **at > stalled_at + Duration::from_secs(7))
        .count();
    assert!(before >= 3, "pings while alive: {pings:?}");
    // Stale after 5 s (plus up to a second for the beat before the stall).
    assert_eq!(
        late, 0,
        "pinged 7 s into a stuck loop (stalled at {stalled_at:?}): {pings:?}"
    );
}
