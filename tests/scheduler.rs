//! Scheduler, dispatch and retry logic on virtual time with a test executor: no real
//! processes, no waiting. Each test steps a virtual wall clock (`VirtualClock`) on
//! tokio's paused time and checks what ran, when, and what was logged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chime::clock::{Clock, VirtualClock};
use chime::dispatch::Dispatcher;
use chime::events::{Event, Events, ExitDetail, MissReason, Outcome, SkipReason, Trigger};
use chime::exec::{Attempt, AttemptResult, Executor, OutputSink};
use chime::job::{Action, Job, Overlap, RetryPolicy, ShellCommand};
use chime::run::RunSettings;
use chime::scheduler::{Command, ReloadCounts, Scheduler};
use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn job(name: &str, schedule: &str) -> Job {
    Job::new(
        name,
        schedule,
        Action::Shell(ShellCommand::Script("true".into())),
    )
    .unwrap()
}

/// One attempt as the test executor saw it.
#[derive(Debug, Clone)]
struct Call {
    job: String,
    scheduled_at: DateTime<Utc>,
    attempt: u32,
    /// Wall-clock time when the attempt started.
    started: DateTime<Utc>,
    /// The shell script of the definition the attempt ran under.
    script: String,
}

/// How long each job's attempts take and how they end.
#[derive(Clone, Copy)]
struct Behaviour {
    takes: Duration,
    outcome: Outcome,
}

#[derive(Clone)]
struct FakeExecutor {
    clock: Arc<VirtualClock>,
    calls: Arc<Mutex<Vec<Call>>>,
    behaviour: Arc<Mutex<BTreeMap<String, Behaviour>>>,
}

impl Executor for FakeExecutor {
    async fn execute(&self, attempt: Attempt, _output: Arc<OutputSink>) -> AttemptResult {
        self.calls.lock().unwrap().push(Call {
            job: attempt.job.name.clone(),
            scheduled_at: attempt.scheduled_at,
            attempt: attempt.attempt,
            started: self.clock.now(),
            script: match &attempt.job.action {
                Action::Shell(ShellCommand::Script(script)) => script.clone(),
                other => format!("{other:?}"),
            },
        });
        let behaviour = self
            .behaviour
            .lock()
            .unwrap()
            .get(&attempt.job.name)
            .copied()
            .unwrap_or(Behaviour {
                takes: Duration::ZERO,
                outcome: Outcome::Success,
            });
        tokio::select! {
            () = tokio::time::sleep(behaviour.takes) => {}
            () = attempt.cancel.cancelled() => {
                return AttemptResult::with_outcome(Outcome::Cancelled, ExitDetail::default());
            }
        }
        match behaviour.outcome {
            Outcome::Success => AttemptResult::success(ExitDetail {
                exit_code: Some(0),
                ..Default::default()
            }),
            Outcome::Failure => AttemptResult::failure(
                ExitDetail {
                    exit_code: Some(1),
                    ..Default::default()
                },
                true,
            ),
            other => AttemptResult::with_outcome(other, ExitDetail::default()),
        }
    }
}

struct Harness {
    clock: Arc<VirtualClock>,
    calls: Arc<Mutex<Vec<Call>>>,
    events: Arc<Mutex<Vec<Event>>>,
    dispatcher: Dispatcher<FakeExecutor, VirtualClock>,
    commands: tokio::sync::mpsc::Sender<Command>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    fn new(start: &str, jobs: Vec<Job>, max_concurrent: usize) -> Self {
        Self::with_behaviour(start, jobs, max_concurrent, BTreeMap::new())
    }

    fn with_behaviour(
        start: &str,
        jobs: Vec<Job>,
        max_concurrent: usize,
        behaviour: BTreeMap<String, Behaviour>,
    ) -> Self {
        let clock = Arc::new(VirtualClock::new(at(start)));
        let (events, store) = Events::recorder();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(behaviour));
        let executor = FakeExecutor {
            clock: Arc::clone(&clock),
            calls: Arc::clone(&calls),
            behaviour,
        };
        let dispatcher = Dispatcher::new(
            executor,
            Arc::clone(&clock),
            events.clone(),
            RunSettings::default(),
            max_concurrent,
        );
        let mut scheduler = Scheduler::new(Arc::clone(&clock), dispatcher.clone(), events);
        scheduler.add_jobs(jobs);
        let stop = CancellationToken::new();
        let token = stop.clone();
        let (commands, command_rx) = tokio::sync::mpsc::channel(1);
        let task = tokio::spawn(async move { scheduler.run(token, command_rx, None).await });
        Harness {
            clock,
            calls,
            events: store,
            dispatcher,
            commands,
            stop,
            task: Some(task),
        }
    }

    /// Lets virtual time run on (every timer due in that span fires).
    async fn run_for(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    /// Swaps in new jobs through the running loop, as a reload does.
    async fn reload(&self, jobs: Vec<Job>) -> ReloadCounts {
        let (reply, counts) = tokio::sync::oneshot::channel();
        self.commands
            .send(Command::Replace { jobs, reply })
            .await
            .unwrap();
        counts.await.unwrap()
    }

    fn starts(&self) -> Vec<(String, DateTime<Utc>, u32, DateTime<Utc>)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| (c.job.clone(), c.scheduled_at, c.attempt, c.started))
            .collect()
    }

    fn scheduled(&self, job: &str) -> Vec<DateTime<Utc>> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.job == job && c.attempt == 1)
            .map(|c| c.scheduled_at)
            .collect()
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    async fn stop(mut self) -> Vec<Event> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        self.dispatcher.stop_accepting();
        self.dispatcher.cancel_all();
        tokio::time::timeout(Duration::from_secs(60), self.dispatcher.wait_idle())
            .await
            .unwrap();
        self.events()
    }
}

fn seconds(start: &str, count: i64) -> Vec<DateTime<Utc>> {
    (0..count)
        .map(|k| at(start) + TimeDelta::seconds(k))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn fires_every_second_exactly_on_time() {
    let h = Harness::new(
        "2026-11-25T10:00:00.500Z",
        vec![job("tick", "* * * * * *")],
        0,
    );
    h.run_for(Duration::from_millis(5_000)).await; // until 10:00:05.5
    let starts = h.starts();
    let expected = seconds("2026-11-25T10:00:01Z", 5);
    assert_eq!(h.scheduled("tick"), expected);
    // On virtual time the dispatch is exact: each attempt starts at its instant.
    for (_, scheduled, _, started) in &starts {
        assert_eq!(scheduled, started);
    }
    let events = h.stop().await;
    let lateness: Vec<f64> = events
        .iter()
        .filter_map(|e| match e {
            Event::RunStarted {
                lateness_ms,
                trigger: Trigger::Schedule,
                ..
            } => Some(*lateness_ms),
            _ => None,
        })
        .collect();
    assert_eq!(lateness, vec![0.0; 5]);
}

#[tokio::test(start_paused = true)]
async fn follows_dst_in_the_jobs_zone() {
    let mut berlin = job("berlin", "30 2 * * *");
    berlin.timezone = chrono_tz::Europe::Berlin.into();
    let h = Harness::new("2026-03-28T12:00:00Z", vec![berlin], 0);
    h.run_for(Duration::from_secs(3 * 86_400)).await;
    assert_eq!(
        h.scheduled("berlin"),
        vec![
            at("2026-03-29T03:00:00+02:00"),
            at("2026-03-30T02:30:00+02:00"),
            at("2026-03-31T02:30:00+02:00")
        ]
    );
    h.stop().await;
}

/// Every `run.missed`: (first missed instant, count, reason).
fn missed(events: &[Event]) -> Vec<(DateTime<Utc>, u64, MissReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::RunMissed {
                scheduled_at,
                count,
                reason,
                ..
            } => Some((*scheduled_at, *count, *reason)),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn forward_step_runs_one_catch_up_and_counts_the_rest() {
    let h = Harness::new(
        "2026-11-25T10:00:30Z",
        vec![job("minutely", "* * * * *")],
        0,
    );
    h.run_for(Duration::from_secs(40)).await; // 10:01:10, fired 10:01:00
    h.clock.step(TimeDelta::minutes(10)); // now 10:11:10
    h.run_for(Duration::from_secs(60)).await; // 10:12:10
    let starts = h.starts();
    let triggers: Vec<(DateTime<Utc>, DateTime<Utc>)> = starts.iter().map(|s| (s.1, s.3)).collect();
    assert_eq!(
        triggers,
        vec![
            (at("2026-11-25T10:01:00Z"), at("2026-11-25T10:01:00Z")),
            // One catch-up for 10:02 … 10:11: the latest missed fire, run right after the step.
            (at("2026-11-25T10:11:00Z"), at("2026-11-25T10:11:10Z")),
            (at("2026-11-25T10:12:00Z"), at("2026-11-25T10:12:00Z")),
        ]
    );
    let events = h.stop().await;
    assert!(events.iter().any(|e| matches!(e,
        Event::ClockJumped { delta_ms, .. } if *delta_ms == 600_000)));
    assert_eq!(
        missed(&events),
        vec![(at("2026-11-25T10:02:00Z"), 9, MissReason::ClockJump)]
    );
    let catch_up = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::RunStarted {
                    trigger: Trigger::CatchUp,
                    ..
                }
            )
        })
        .count();
    assert_eq!(catch_up, 1);
}

/// A sub-second `@every` job: a fire handled less than a second late can still have a
/// later fire due, so it is a catch-up, not an on-time run.
#[tokio::test(start_paused = true)]
async fn sub_second_every_job_catches_up_after_a_short_step() {
    let h = Harness::new(
        "2026-11-25T10:00:00.050Z",
        vec![job("fast", "@every 200ms")],
        0,
    );
    h.run_for(Duration::from_millis(200)).await; // 10:00:00.250, fired .200
    h.clock.step(TimeDelta::milliseconds(500)); // now .750: .400 and .600 are due
    h.run_for(Duration::from_millis(100)).await; // .850, fired .800
    let starts: Vec<(DateTime<Utc>, DateTime<Utc>)> =
        h.starts().iter().map(|s| (s.1, s.3)).collect();
    assert_eq!(
        starts,
        vec![
            (
                at("2026-11-25T10:00:00.200Z"),
                at("2026-11-25T10:00:00.200Z")
            ),
            (
                at("2026-11-25T10:00:00.600Z"),
                at("2026-11-25T10:00:00.750Z")
            ),
            (
                at("2026-11-25T10:00:00.800Z"),
                at("2026-11-25T10:00:00.800Z")
            ),
        ]
    );
    let events = h.stop().await;
    assert_eq!(
        missed(&events),
        vec![(at("2026-11-25T10:00:00.400Z"), 1, MissReason::ClockJump)]
    );
    let triggers: Vec<Trigger> = events
        .iter()
        .filter_map(|e| match e {
            Event::RunStarted { trigger, .. } => Some(*trigger),
            _ => None,
        })
        .collect();
    assert_eq!(
        triggers,
        vec![Trigger::Schedule, Trigger::CatchUp, Trigger::Schedule]
    );
}

#[tokio::test(start_paused = true)]
async fn forward_step_past_the_starting_deadline_runs_nothing() {
    let mut j = job("minutely", "* * * * *");
    j.starting_deadline = Some(Duration::from_secs(30));
    let h = Harness::new("2026-11-25T10:00:30Z", vec![j], 0);
    h.run_for(Duration::from_secs(40)).await; // 10:01:10
    h.clock.step(TimeDelta::seconds(10 * 60 + 35)); // 10:11:45: 10:11:00 is 45 s old
    h.run_for(Duration::from_secs(30)).await; // 10:12:15
    assert_eq!(
        h.scheduled("minutely"),
        vec![at("2026-11-25T10:01:00Z"), at("2026-11-25T10:12:00Z")]
    );
    let events = h.stop().await;
    assert_eq!(
        missed(&events),
        vec![(at("2026-11-25T10:02:00Z"), 10, MissReason::Deadline)]
    );
}

#[tokio::test(start_paused = true)]
async fn backward_step_replays_nothing() {
    let h = Harness::new(
        "2026-11-25T10:00:30Z",
        vec![job("minutely", "* * * * *")],
        0,
    );
    h.run_for(Duration::from_secs(40)).await; // fired 10:01:00; now 10:01:10
    h.clock.step(TimeDelta::minutes(-5)); // now 09:56:10
    // Six virtual minutes: the wall clock goes 09:56:10 → 10:02:10.
    h.run_for(Duration::from_secs(360)).await;
    assert_eq!(
        h.scheduled("minutely"),
        vec![at("2026-11-25T10:01:00Z"), at("2026-11-25T10:02:00Z")]
    );
    let events = h.stop().await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ClockJumped { delta_ms, .. } if *delta_ms == -300_000))
    );
    assert!(!events.iter().any(|e| matches!(e, Event::RunMissed { .. })));
}

#[tokio::test(start_paused = true)]
async fn overlap_skip_drops_fires_while_running() {
    let behaviour = BTreeMap::from([(
        "slow".to_string(),
        Behaviour {
            takes: Duration::from_millis(2_500),
            outcome: Outcome::Success,
        },
    )]);
    let h = Harness::with_behaviour(
        "2026-11-25T10:00:00.500Z",
        vec![job("slow", "* * * * * *")],
        0,
        behaviour,
    );
    h.run_for(Duration::from_millis(6_000)).await; // fires at :01 … :06
    // :01 runs until :03.5, so :02 and :03 are skipped; :04 runs until :06.5, :05 and :06 skipped.
    assert_eq!(
        h.scheduled("slow"),
        vec![at("2026-11-25T10:00:01Z"), at("2026-11-25T10:00:04Z")]
    );
    let events = h.stop().await;
    let skipped: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::RunSkipped {
                scheduled_at,
                reason: SkipReason::Overlap,
                ..
            } => Some(*scheduled_at),
            _ => None,
        })
        .collect();
    assert_eq!(
        skipped,
        vec![
            at("2026-11-25T10:00:02Z"),
            at("2026-11-25T10:00:03Z"),
            at("2026-11-25T10:00:05Z"),
            at("2026-11-25T10:00:06Z")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn overlap_allow_runs_side_by_side() {
    let mut j = job("slow", "* * * * * *");
    j.overlap = Overlap::Allow;
    let behaviour = BTreeMap::from([(
        "slow".to_string(),
        Behaviour {
            takes: Duration::from_millis(2_500),
            outcome: Outcome::Success,
        },
    )]);
    let h = Harness::with_behaviour("2026-11-25T10:00:00.500Z", vec![j], 0, behaviour);
    h.run_for(Duration::from_millis(3_000)).await;
    assert_eq!(h.scheduled("slow"), seconds("2026-11-25T10:00:01Z", 3));
    assert_eq!(h.dispatcher.active(), 3);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn overlap_replace_cancels_the_running_one_first() {
    let mut j = job("slow", "* * * * * *");
    j.overlap = Overlap::Replace;
    let behaviour = BTreeMap::from([(
        "slow".to_string(),
        Behaviour {
            takes: Duration::from_millis(2_500),
            outcome: Outcome::Success,
        },
    )]);
    let h = Harness::with_behaviour("2026-11-25T10:00:00.500Z", vec![j], 0, behaviour);
    h.run_for(Duration::from_millis(3_000)).await;
    assert_eq!(h.scheduled("slow"), seconds("2026-11-25T10:00:01Z", 3));
    let events = h.stop().await;
    let outcomes: Vec<Outcome> = events
        .iter()
        .filter_map(|e| match e {
            Event::RunFinished { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .collect();
    // Each run was replaced by the next; the last one was cancelled by the test's stop.
    assert_eq!(outcomes, vec![Outcome::Cancelled; 3]);
    assert_eq!(most_at_once(&events), 1);
}

/// The most runs of one job that were in flight at the same moment, from the events.
fn most_at_once(events: &[Event]) -> usize {
    let mut open = 0usize;
    let mut most = 0usize;
    for e in events {
        match e {
            Event::RunStarted { attempt: 1, .. } => {
                open += 1;
                most = most.max(open);
            }
            Event::RunFinished { .. } => open -= 1,
            _ => {}
        }
    }
    most
}

#[tokio::test(start_paused = true)]
async fn concurrency_limit_queues_in_fire_order_and_respects_deadlines() {
    let a = job("a", "0 * * * * *");
    let b = job("b", "0 * * * * *");
    let mut c = job("c", "0 * * * * *");
    c.starting_deadline = Some(Duration::from_secs(15));
    let d = job("d", "0 * * * * *");
    let ten = Behaviour {
        takes: Duration::from_secs(10),
        outcome: Outcome::Success,
    };
    let behaviour: BTreeMap<String, Behaviour> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| (n.to_string(), ten))
        .collect();
    let h = Harness::with_behaviour("2026-11-25T10:00:30Z", vec![a, b, c, d], 1, behaviour);
    h.run_for(Duration::from_secs(60)).await; // 10:01:30
    let starts: Vec<(String, DateTime<Utc>)> = h.starts().into_iter().map(|s| (s.0, s.3)).collect();
    assert_eq!(
        starts,
        vec![
            ("a".to_string(), at("2026-11-25T10:01:00Z")),
            ("b".to_string(), at("2026-11-25T10:01:10Z")),
            // c would start 20 s late, past its 15 s deadline: missed; d takes its turn.
            ("d".to_string(), at("2026-11-25T10:01:20Z")),
        ]
    );
    let events = h.stop().await;
    assert!(events.iter().any(|e| matches!(e,
        Event::RunMissed { job, reason: MissReason::Deadline, count: 1, .. } if &**job == "c")));
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially_with_jitter_and_a_cap() {
    let mut j = job("flaky", "0 0 * * *");
    j.retry = RetryPolicy {
        attempts: 5,
        delay: Duration::from_secs(10),
        max_delay: Duration::from_secs(25),
    };
    let behaviour = BTreeMap::from([(
        "flaky".to_string(),
        Behaviour {
            takes: Duration::ZERO,
            outcome: Outcome::Failure,
        },
    )]);
    let h = Harness::with_behaviour("2026-11-25T23:59:59Z", vec![j], 0, behaviour);
    h.run_for(Duration::from_secs(200)).await;
    let starts: Vec<DateTime<Utc>> = h.starts().into_iter().map(|s| s.3).collect();
    assert_eq!(starts.len(), 5);
    let gaps: Vec<f64> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]).num_milliseconds() as f64 / 1000.0)
        .collect();
    // Nominal 10, 20, 25 (capped), 25 s, each within ±20 %.
    for (gap, nominal) in gaps.iter().zip([10.0, 20.0, 25.0, 25.0]) {
        assert!(
            *gap >= nominal * 0.8 - 0.001 && *gap <= nominal * 1.2 + 0.001,
            "gap {gap} vs {nominal}"
        );
    }
    let events = h.stop().await;
    let retrying = events
        .iter()
        .filter(|e| matches!(e, Event::RunRetrying { .. }))
        .count();
    assert_eq!(retrying, 4);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::RunFinished {
            attempts: 5,
            outcome: Outcome::Failure,
            ..
        }
    )));
}

#[tokio::test(start_paused = true)]
async fn shutdown_drops_pending_retries() {
    let mut j = job("flaky", "0 0 * * *");
    j.retry = RetryPolicy {
        attempts: 3,
        delay: Duration::from_secs(60),
        max_delay: Duration::from_secs(60),
    };
    let behaviour = BTreeMap::from([(
        "flaky".to_string(),
        Behaviour {
            takes: Duration::ZERO,
            outcome: Outcome::Failure,
        },
    )]);
    let h = Harness::with_behaviour("2026-11-25T23:59:59Z", vec![j], 0, behaviour);
    h.run_for(Duration::from_secs(5)).await; // first attempt failed, retry pending
    h.dispatcher.stop_accepting();
    tokio::time::timeout(Duration::from_secs(1), h.dispatcher.wait_idle())
        .await
        .expect("retry dropped at once");
    let events = h.stop().await;
    assert!(events.iter().any(|e| matches!(
        e,
        Event::RunFinished {
            attempts: 1,
            outcome: Outcome::Cancelled,
            ..
        }
    )));
}

#[tokio::test(start_paused = true)]
async fn disabled_jobs_do_not_run() {
    let mut j = job("off", "* * * * * *");
    j.enabled = false;
    let h = Harness::new("2026-11-25T10:00:00.500Z", vec![j], 0);
    h.run_for(Duration::from_millis(2_000)).await;
    assert!(h.starts().is_empty());
    let events = h.stop().await;
    assert!(events.iter().any(|e| matches!(
        e,
        Event::RunSkipped {
            reason: SkipReason::Disabled,
            ..
        }
    )));
}

#[tokio::test(start_paused = true)]
async fn unchanged_job_neither_doubles_nor_skips_across_reloads() {
    let h = Harness::new(
        "2026-11-25T10:00:00.500Z",
        vec![job("tick", "* * * * * *"), job("other", "@hourly")],
        0,
    );
    // Ten reloads at awkward moments: just before, at and just after fires.
    for offset_ms in [100, 499, 500, 501, 900, 999, 1, 250, 750, 0] {
        h.run_for(Duration::from_millis(offset_ms)).await;
        let counts = h
            .reload(vec![job("tick", "* * * * * *"), job("other", "@hourly")])
            .await;
        assert_eq!(
            counts,
            ReloadCounts {
                added: 0,
                changed: 0,
                removed: 0,
                unchanged: 2
            }
        );
    }
    // 5.2 s of virtual time have passed since 10:00:00.5; let it reach 10:00:07.
    h.run_for(Duration::from_millis(1_300)).await;
    assert_eq!(h.scheduled("tick"), seconds("2026-11-25T10:00:01Z", 6));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn reload_adds_changes_and_removes_by_name() {
    let h = Harness::new(
        "2026-11-25T10:00:00.500Z",
        vec![
            job("keep", "* * * * * *"),
            job("change", "*/2 * * * * *"),
            job("drop", "* * * * * *"),
        ],
        0,
    );
    h.run_for(Duration::from_millis(1_000)).await; // 10:00:01.5: keep, drop fired at :01
    let counts = h
        .reload(vec![
            job("keep", "* * * * * *"),
            job("change", "*/3 * * * * *"),
            job("new", "* * * * * *"),
        ])
        .await;
    assert_eq!(
        counts,
        ReloadCounts {
            added: 1,
            changed: 1,
            removed: 1,
            unchanged: 1
        }
    );
    h.run_for(Duration::from_millis(5_000)).await; // to 10:00:06.5
    assert_eq!(h.scheduled("keep"), seconds("2026-11-25T10:00:01Z", 6));
    assert_eq!(h.scheduled("drop"), vec![at("2026-11-25T10:00:01Z")]);
    assert_eq!(h.scheduled("new"), seconds("2026-11-25T10:00:02Z", 5));
    // The changed job's new schedule (every 3 s) applies from its next fire.
    assert_eq!(
        h.scheduled("change"),
        vec![at("2026-11-25T10:00:03Z"), at("2026-11-25T10:00:06Z")]
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_changed_command_keeps_the_timer_and_runs_in_flight_keep_their_definition() {
    let mut slow = job("slow", "*/2 * * * * *");
    slow.overlap = Overlap::Allow;
    let behaviour = BTreeMap::from([(
        "slow".to_string(),
        Behaviour {
            takes: Duration::from_millis(3_000),
            outcome: Outcome::Success,
        },
    )]);
    let h = Harness::with_behaviour("2026-11-25T10:00:01.500Z", vec![slow.clone()], 0, behaviour);
    h.run_for(Duration::from_millis(1_000)).await; // 10:00:02.5: a run from :02 is in flight
    let mut edited = slow.clone();
    edited.action = Action::Shell(ShellCommand::Script("echo edited".into()));
    let counts = h.reload(vec![edited]).await;
    assert_eq!(counts.changed, 1);
    h.run_for(Duration::from_millis(2_000)).await; // 10:00:04.5
    assert_eq!(
        h.scheduled("slow"),
        vec![at("2026-11-25T10:00:02Z"), at("2026-11-25T10:00:04Z")]
    );
    let scripts: Vec<String> = h
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.script.clone())
        .collect();
    assert_eq!(scripts, vec!["true".to_string(), "echo edited".to_string()]);
    h.stop().await;
}
