//! Section 4 of `cargo bench --bench lateness` (issue 11): process starts beside the
//! floor. `CHIME_BENCH_ONLY=spawn` runs this section alone.
//!
//! Every workload is a child process, as in the rest of the bench:
//! - `floor N SECS THREADS`: the physical limit of the machine, measured in the same
//!   run: at each whole second, THREADS plain threads (woken early, spinning to the
//!   instant) `posix_spawn` N `/bin/sh -c 'date "+%s.%N AT" >> f'` back to back (job
//!   `i` on thread `i % THREADS`), stdio on /dev/null; another thread reaps them.
//! - `spawn FORM N SECS IDLE [THREADS]`: chime's full path, `daemon::serve` with `exec::Real` on
//!   the system clock: N every-second jobs writing the same line, in the string form
//!   (`"date … >> f"`, run by `/bin/sh -c`) or the argv form (`["sh", "-c", "date … >>
//!   f"]`), with IDLE more jobs loaded that do not fire while measuring (daily, 12 h
//!   away), and THREADS spawner threads if given (else one per core).
//! - `httpburst N SECS`: N string-form shell jobs and one HTTP job, all every second;
//!   the HTTP request's arrival at a server on 127.0.0.1 (its head read in full),
//!   against the whole second it was due at.
//!
//! A command's start is its own `date +%s.%N`; its lateness is that minus its
//! scheduled instant. "last" is the lateness of the last command of a burst (the
//! burst's maximum), median over the measured instants.

use super::*;

use std::io::{Read, Write as _};
use std::net::TcpListener;

/// Burst sizes.
const SIZES: [usize; 3] = [1, 20, 100];
/// Shell jobs due beside the HTTP job.
const HTTP_BESIDE: usize = 100;

/// One workload of this section.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SpawnResult {
    expected: u64,
    seen: u64,
    failed_runs: u64,
    /// Scheduled instant → the command's own start.
    command: Option<Stats>,
    /// Median over instants of the burst's last command start.
    last_ms: Option<f64>,
    /// chime's `lateness_ms` (`run.started`: instant → spawned).
    reported: Option<Stats>,
    /// `httpburst`: instant → the request's arrival.
    http: Option<Stats>,
}

/// The child side: a JSON line for `words`, or `None` if they name no workload here.
pub(super) fn child_json(words: &[&str]) -> Option<serde_json::Result<String>> {
    let number = |i: usize| -> u64 {
        words
            .get(i)
            .and_then(|w| w.parse().ok())
            .expect("the parent writes well-formed workload specs")
    };
    let result = match words.first().copied()? {
        "floor" => floor(number(1) as usize, number(2), number(3) as usize),
        "spawn" => {
            let argv = words.get(1) == Some(&"argv");
            // An optional sixth word: the number of spawner threads (default: per core).
            if words.len() > 5 {
                chime::exec::spawner::set_threads(number(5) as usize);
            }
            chime_spawns(
                argv,
                number(2) as usize,
                number(3),
                number(4) as usize,
                false,
            )
        }
        "httpburst" => chime_spawns(false, number(1) as usize, number(2), 0, true),
        _ => return None,
    };
    Some(serde_json::to_string(&result))
}

/// The line each command appends: its own start, then what it was scheduled for.
fn stamp_command(out: &Path, at: &str) -> String {
    format!("date \"+%s.%N {at}\" >> '{}'", out.display())
}

/// `(scheduled, started)` in nanoseconds from the stamp file, inside `window`.
fn read_stamps(out: &Path, window: &Window) -> Vec<(i64, i64)> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let mut stamps = Vec::new();
    for line in text.lines() {
        let Some((stamp, scheduled)) = line.split_once(' ') else {
            continue;
        };
        let Some((s, frac)) = stamp.split_once('.') else {
            continue;
        };
        let scheduled = match scheduled.parse::<i64>() {
            Ok(ns) => Some(ns),
            Err(_) => DateTime::parse_from_rfc3339(scheduled)
                .ok()
                .map(|at| nanos(at.with_timezone(&Utc))),
        };
        let (Ok(s), Ok(frac), Some(scheduled)) = (s.parse::<i64>(), frac.parse::<i64>(), scheduled)
        else {
            continue;
        };
        if window.contains(scheduled) {
            stamps.push((scheduled, s * NS_PER_SEC + frac));
        }
    }
    stamps
}

/// Lateness of every command, and the median over instants of each burst's last.
fn command_stats(stamps: &[(i64, i64)]) -> (Option<Stats>, Option<f64>) {
    let mut last: HashMap<i64, i64> = HashMap::new();
    for &(scheduled, started) in stamps {
        let entry = last.entry(scheduled).or_insert(started);
        *entry = (*entry).max(started);
    }
    let lateness = stamps.iter().map(|&(s, t)| ms(t - s)).collect();
    let lasts = last.iter().map(|(&s, &t)| ms(t - s)).collect();
    (Stats::of(lateness), Stats::of(lasts).map(|s| s.p50))
}

/// Sleeps until 2 ms before `at` (wall clock, nanoseconds), then spins to it.
fn spin_until(at: i64) {
    let early = at - 2 * NS_PER_MS - now_nanos();
    if early > 0 {
        std::thread::sleep(Duration::from_nanos(early as u64));
    }
    while now_nanos() < at {
        std::hint::spin_loop();
    }
}

fn floor(jobs: usize, secs: u64, threads: usize) -> SpawnResult {
    let dir = tempfile::tempdir().expect("a temp dir can be created");
    let out = dir.path().join("stamps");
    let window = Window::after(now_nanos(), secs);
    let (reap, children) = std::sync::mpsc::channel::<std::process::Child>();
    let reaper = std::thread::spawn(move || {
        for mut child in children {
            let _ = child.wait();
        }
    });
    let threads = threads.max(1);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let reap = reap.clone();
            let out = &out;
            scope.spawn(move || {
                for k in 0..secs as i64 {
                    let at = window.first + k * NS_PER_SEC;
                    let mut burst: Vec<Command> = (t..jobs)
                        .step_by(threads)
                        .map(|_| {
                            let mut command = Command::new("/bin/sh");
                            command
                                .arg("-c")
                                .arg(stamp_command(out, &at.to_string()))
                                .stdin(Stdio::null())
                                .stdout(Stdio::null())
                                .stderr(Stdio::null());
                            command
                        })
                        .collect();
                    spin_until(at);
                    for command in &mut burst {
                        if let Ok(child) = command.spawn() {
                            let _ = reap.send(child);
                        }
                    }
                }
            });
        }
    });
    drop(reap);
    reaper.join().expect("the reaper does not panic");
    let stamps = read_stamps(&out, &window);
    let (command, last_ms) = command_stats(&stamps);
    SpawnResult {
        expected: jobs as u64 * secs,
        seen: stamps.len() as u64,
        failed_runs: 0,
        command,
        last_ms,
        reported: None,
        http: None,
    }
}

/// A local HTTP server that answers 200 to every request (keep-alive) and notes when
/// each request's head has arrived.
fn http_server() -> (u16, Arc<std::sync::Mutex<Vec<i64>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a local port can be bound");
    let port = listener
        .local_addr()
        .expect("a bound socket has an address")
        .port();
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::new()));
    let noted = Arc::clone(&arrivals);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let noted = Arc::clone(&noted);
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        let arrived = now_nanos();
                        if let Ok(mut all) = noted.lock() {
                            all.push(arrived);
                        }
                        pending.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if stream.write_all(reply).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, arrivals)
}

fn chime_spawns(argv: bool, jobs: usize, secs: u64, idle: usize, http: bool) -> SpawnResult {
    let dir = tempfile::tempdir().expect("a temp dir can be created");
    let schedules = dir.path().join("schedules");
    let idle_dir = dir.path().join("idle");
    for d in [&schedules, &idle_dir] {
        std::fs::create_dir(d).expect("the temp dir is writable");
    }
    let out = dir.path().join("stamps");
    let command = stamp_command(&out, "$CHIME_SCHEDULED_AT");
    let action = if argv {
        let quoted = serde_json::to_string(&command).expect("a string serialises");
        format!("[\"sh\", \"-c\", {quoted}]")
    } else {
        format!("'{}'", command.replace('\'', "''"))
    };
    write_yaml(&schedules, jobs, 1, |i| {
        format!("  job-{i:06}:\n    schedule: \"* * * * * *\"\n    command: {action}\n")
    });
    let server = http.then(http_server);
    if let Some((port, _)) = &server {
        let ping = format!(
            "  ping:\n    schedule: \"* * * * * *\"\n    http:\n      url: \"http://127.0.0.1:{port}/ping\"\n"
        );
        std::fs::write(
            schedules.join("ping.yaml"),
            format!("defaults:\n  timezone: UTC\njobs:\n{ping}"),
        )
        .expect("the temp dir is writable");
    }
    let hour = (Utc::now().hour() + 12) % 24;
    if idle > 0 {
        write_yaml(&idle_dir, idle, BULK_FILES, |i| {
            format!(
                "  idle-{i:06}:\n    schedule: \"{} {hour} * * *\"\n    command: /usr/local/bin/report --part {i}\n",
                i % 60
            )
        });
    }
    let options = LoadOptions::from_process(Some(chrono_tz::UTC));
    let config = match load(&[schedules, idle_dir], &options) {
        Ok(config) => config,
        Err(errors) => panic!("generated schedules are invalid:\n{errors}"),
    };

    let started = Recorder::new(capacity(jobs + 1, secs));
    let failed = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(tokio::sync::Notify::new());
    let events = {
        let started = Arc::clone(&started);
        let failed = Arc::clone(&failed);
        let ready = Arc::clone(&ready);
        Events::new(move |event| match event {
            Event::ServiceStarted { .. } => ready.notify_one(),
            Event::RunStarted {
                job,
                scheduled_at,
                lateness_ms,
                ..
            } if job.starts_with("job-") => started.push(
                job_index(&job),
                nanos(scheduled_at),
                (lateness_ms * 1e6) as i64,
            ),
            Event::RunFinished { outcome, .. } if outcome != Outcome::Success => {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        })
    };
    let executor = Real::new().expect("the HTTP client can be built");
    let runtime = runtime();
    let window = runtime.block_on(async {
        let (control, rx) = mpsc::channel(1);
        let timer = tokio::spawn(async move {
            // Measured from the first whole seconds after the start, once every job
            // (idle ones included) is scheduled.
            ready.notified().await;
            let window = Window::after(now_nanos(), secs);
            sleep_until_wall(window.end()).await;
            tokio::time::sleep(GRACE).await;
            control
                .send(Control::Shutdown)
                .await
                .expect("the service listens until told to stop");
            window
        });
        serve_jobs(config, executor, events, rx).await;
        timer.await.expect("the timer task does not panic")
    });
    drop(runtime);

    let stamps = read_stamps(&out, &window);
    let (command, last_ms) = command_stats(&stamps);
    let reported = started
        .take()
        .into_iter()
        .filter(|&(_, scheduled, _)| window.contains(scheduled))
        .map(|(_, _, lateness)| ms(lateness))
        .collect();
    let http = server.and_then(|(_, arrivals)| {
        let arrivals = arrivals.lock().map(|a| a.clone()).unwrap_or_default();
        let lateness = arrivals
            .into_iter()
            .map(|at| (at.div_euclid(NS_PER_SEC) * NS_PER_SEC, at))
            .filter(|&(second, _)| window.contains(second))
            .map(|(second, at)| ms(at - second))
            .collect();
        Stats::of(lateness)
    });
    SpawnResult {
        expected: jobs as u64 * secs,
        seen: stamps.len() as u64,
        failed_runs: failed.load(Ordering::Relaxed),
        command,
        last_ms,
        reported: Stats::of(reported),
        http,
    }
}

/// One variant at one size: its label and its result (`None` if it failed).
type Variant = (String, Option<SpawnResult>);

/// The parent side: every workload of the section, one process each.
pub(super) struct Section {
    rows: Vec<(usize, Vec<Variant>)>,
    http: Option<SpawnResult>,
    idle: usize,
}

pub(super) fn run(settings: &Settings) -> Section {
    let secs = settings.secs;
    let idle = settings.bulk_jobs;
    let mut rows = Vec::new();
    for jobs in SIZES {
        let mut variants = vec![
            (
                "floor, 1 thread".to_owned(),
                run_child(&format!("floor {jobs} {secs} 1"), secs),
            ),
            (
                "floor, 2 threads".to_owned(),
                run_child(&format!("floor {jobs} {secs} 2"), secs),
            ),
        ];
        for (form, loaded) in [("string", 0), ("argv", 0), ("string", idle), ("argv", idle)] {
            let label = if loaded == 0 {
                format!("chime, {form} form")
            } else {
                format!("chime, {form} form, {} idle jobs", count(loaded as u64))
            };
            let spec = format!("spawn {form} {jobs} {secs} {loaded}");
            variants.push((label, run_child(&spec, secs)));
        }
        variants.push((
            "chime, string form, 1 spawner thread".to_owned(),
            run_child(&format!("spawn string {jobs} {secs} 0 1"), secs),
        ));
        rows.push((jobs, variants));
    }
    let http = run_child(&format!("httpburst {HTTP_BESIDE} {secs}"), secs);
    Section { rows, http, idle }
}

impl Section {
    pub(super) fn render(&self, o: &mut String, secs: u64) {
        let _ = writeln!(
            o,
            "## 4. Process starts beside the floor\n\n\
             Each command is `/bin/sh -c 'date \"+%s.%N …\" >> FILE'`, N of them due at every whole second for {secs} s; lateness = the command's own timestamp − its instant. **Floor**: plain threads spinning to the instant and `posix_spawn`ing the N commands back to back (the machine's limit, measured in this run). **chime**: `daemon::serve` with `exec::Real`, string form (`command: \"date …\"`) or argv form (`command: [\"sh\", \"-c\", \"date …\"]`), alone or beside {} jobs that do not fire while measuring. *last*: the burst's last command, median over instants. Ratios are to the 1-thread floor. `lateness_ms`: chime's own figure from `run.started` (instant → spawned).\n",
            count(self.idle as u64)
        );
        let _ = writeln!(
            o,
            "| jobs | variant | commands seen | failed | p50 ms | × floor | p99 ms | last ms | × floor | lateness_ms p50 | p99 |"
        );
        let _ = writeln!(o, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (jobs, variants) in &self.rows {
            let floor = variants.first().and_then(|(_, r)| r.as_ref());
            let floor_p50 = floor.and_then(|r| r.command).map(|s| s.p50);
            let floor_last = floor.and_then(|r| r.last_ms);
            for (label, r) in variants {
                let Some(r) = r else {
                    let _ = writeln!(o, "| {jobs} | {label} | failed | | | | | | | | |");
                    continue;
                };
                let p50 = r.command.map(|s| s.p50);
                let _ = writeln!(
                    o,
                    "| {jobs} | {label} | {} of {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    count(r.seen),
                    count(r.expected),
                    r.failed_runs,
                    f(p50, 2),
                    ratio(p50, floor_p50),
                    f(r.command.map(|s| s.p99), 2),
                    f(r.last_ms, 2),
                    ratio(r.last_ms, floor_last),
                    f(r.reported.map(|s| s.p50), 2),
                    f(r.reported.map(|s| s.p99), 2),
                );
            }
        }
        let _ = writeln!(o);
        match &self.http {
            Some(r) => {
                let _ = writeln!(
                    o,
                    "HTTP job due at the same instant as {HTTP_BESIDE} shell jobs (string form): its request reached a server on 127.0.0.1 at p50 {} ms, p99 {} ms, max {} ms after the instant (n = {}); the shell commands beside it: p50 {} ms, last {} ms.\n",
                    f(r.http.map(|s| s.p50), 2),
                    f(r.http.map(|s| s.p99), 2),
                    f(r.http.map(|s| s.max), 2),
                    r.http.map_or(0, |s| s.n),
                    f(r.command.map(|s| s.p50), 2),
                    f(r.last_ms, 2),
                );
            }
            None => {
                let _ = writeln!(o, "HTTP job beside {HTTP_BESIDE} shell jobs: failed\n");
            }
        }
    }
}
