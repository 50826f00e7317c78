//! Monitoring (DESIGN.md §12) through the real binary: `--listen` serving `/metrics`
//! (parsed by a real Prometheus text parser) and `/health`; healthchecks.io pings and
//! `on_*` hooks against a real HTTP server on 127.0.0.1; bad `--listen` and hook URLs.
//! `/health` turning 503 on a stalled loop is tested in-process (a stopped process
//! could not answer at all).

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value as Json;
use support::{Chime, LIMIT, command, is, name, service, temp_dir, wait_until, write};

/// A free port on 127.0.0.1 for `--listen` (bound, read, released).
fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

/// One plain GET; the status and the body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to --listen");
    stream.set_read_timeout(Some(LIMIT)).expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status");
    (status, body.to_string())
}

/// `/metrics`, parsed.
fn scrape(addr: &str) -> prometheus_parse::Scrape {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("# EOF\n"), "a whole exposition:\n{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|line| Ok(line.to_string())))
        .expect("the Prometheus text parser reads it")
}

fn number(value: &prometheus_parse::Value) -> f64 {
    match value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("not a number: {other:?}"),
    }
}

/// The value of `metric` with exactly these labels, if there is one.
fn sample(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == metric
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
                && s.labels.len() == labels.len()
        })
        .map(|s| number(&s.value))
}

fn jobs_in(scrape: &prometheus_parse::Scrape) -> Vec<String> {
    let mut jobs: Vec<String> = scrape
        .samples
        .iter()
        .filter_map(|s| s.labels.get("job").map(str::to_string))
        .collect();
    jobs.sort();
    jobs.dedup();
    jobs
}

fn start(dir: &std::path::Path, addr: &str, extra: &[&str]) -> Chime {
    let mut args = vec!["--listen", addr];
    args.extend_from_slice(extra);
    let mut chime = service(dir, &args).spawn();
    chime.wait_event("service.started", LIMIT);
    chime
}

/// The `run.finished` of each job, in whatever order they come.
fn finished_all(chime: &mut Chime, jobs: &[&str]) -> HashMap<String, Json> {
    let mut found = HashMap::new();
    while found.len() < jobs.len() {
        let event = chime.wait_for("run.finished of each job", LIMIT, |e| {
            name(e) == "run.finished"
        });
        let job = event["job"].as_str().expect("a job").to_string();
        if jobs.contains(&job.as_str()) {
            found.entry(job).or_insert(event);
        }
    }
    found
}

fn finished(chime: &mut Chime, job: &str) -> Json {
    chime.wait_for(&format!("run.finished of {job}"), LIMIT, |e| {
        is(e, "run.finished", job)
    })
}

#[test]
fn metrics_count_the_runs_that_happened() {
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        r#"
jobs:
  good:
    schedule: "@reboot"
    command: "true"
  bad:
    schedule: "@reboot"
    command: "exit 3"
  flaky:
    schedule: "@reboot"
    command: "exit 1"
    retry: { attempts: 2, delay: 10ms }
  later:
    schedule: "0 0 1 1 *"
    command: "true"
"#,
    );
    let addr = free_addr();
    let mut chime = start(dir.path(), &addr, &["--state-dir", "none"]);
    finished_all(&mut chime, &["good", "bad", "flaky"]);
    let before = chrono::Utc::now().timestamp() as f64;
    let metrics = scrape(&addr);
    let runs = |job, outcome| {
        sample(
            &metrics,
            "chime_runs_total",
            &[("job", job), ("outcome", outcome)],
        )
    };
    assert_eq!(runs("good", "success"), Some(1.0));
    assert_eq!(runs("bad", "failure"), Some(1.0));
    // Two attempts are one run.
    assert_eq!(runs("flaky", "failure"), Some(1.0));
    assert_eq!(runs("later", "success"), None);
    assert_eq!(runs("bad", "success"), None);
    assert_eq!(sample(&metrics, "chime_jobs", &[]), Some(4.0));
    assert_eq!(
        sample(&metrics, "chime_running", &[("job", "good")]),
        Some(0.0)
    );
    let last_success = sample(
        &metrics,
        "chime_last_success_timestamp_seconds",
        &[("job", "good")],
    )
    .expect("good succeeded");
    assert!(
        (last_success - before).abs() < 60.0,
        "{last_success} vs {before}"
    );
    assert_eq!(
        sample(
            &metrics,
            "chime_last_success_timestamp_seconds",
            &[("job", "bad")]
        ),
        None
    );
    assert!(
        sample(
            &metrics,
            "chime_last_run_timestamp_seconds",
            &[("job", "bad")]
        )
        .is_some()
    );
    let next = sample(
        &metrics,
        "chime_next_fire_timestamp_seconds",
        &[("job", "later")],
    )
    .expect("a next fire");
    assert!(next > before, "{next}");
    assert_eq!(
        sample(
            &metrics,
            "chime_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    // Histograms are service-wide: three runs started (one of them twice), three ended.
    let lateness = metrics
        .samples
        .iter()
        .find(|s| s.metric == "chime_lateness_seconds")
        .expect("the lateness histogram");
    let prometheus_parse::Value::Histogram(buckets) = &lateness.value else {
        panic!("{lateness:?}")
    };
    assert_eq!(buckets.first().map(|b| b.less_than), Some(0.0001));
    assert_eq!(buckets.last().map(|b| b.count), Some(3.0), "{buckets:?}");
    assert!(
        metrics
            .samples
            .iter()
            .all(|s| s.labels.get("command").is_none()),
        "no command text in labels"
    );
    chime.stop();
}

#[test]
fn a_reload_that_removes_a_job_removes_its_series() {
    let dir = temp_dir();
    let two = r#"
jobs:
  stays:
    schedule: "@reboot"
    command: "true"
  goes:
    schedule: "@reboot"
    command: "exit 2"
"#;
    write(dir.path(), "jobs.yaml", two);
    let addr = free_addr();
    let mut chime = start(dir.path(), &addr, &["--state-dir", "none"]);
    finished_all(&mut chime, &["stays", "goes"]);
    let metrics = scrape(&addr);
    assert_eq!(jobs_in(&metrics), ["goes", "stays"]);
    write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  stays:\n    schedule: \"@reboot\"\n    command: \"true\"\n",
    );
    chime.signal(libc::SIGHUP);
    chime.wait_event("config.reloaded", LIMIT);
    let metrics = scrape(&addr);
    assert_eq!(jobs_in(&metrics), ["stays"]);
    assert_eq!(sample(&metrics, "chime_jobs", &[]), Some(1.0));
    assert_eq!(
        sample(
            &metrics,
            "chime_config_reloads_total",
            &[("result", "applied")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "chime_runs_total",
            &[("job", "stays"), ("outcome", "success")]
        ),
        Some(1.0)
    );
    chime.stop();
}

#[test]
fn last_success_survives_a_restart_with_state_on() {
    let dir = temp_dir();
    let state = dir.path().join("state");
    let state = state.to_str().expect("utf-8 path");
    write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  nightly:\n    schedule: \"@reboot\"\n    command: \"true\"\n",
    );
    let addr = free_addr();
    let mut chime = start(dir.path(), &addr, &["--state-dir", state]);
    finished(&mut chime, "nightly");
    let first = scrape(&addr);
    let success = sample(
        &first,
        "chime_last_success_timestamp_seconds",
        &[("job", "nightly")],
    )
    .expect("a success");
    chime.stop();

    // Started again, the job does not run: the metric comes from the store.
    write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  nightly:\n    schedule: \"0 3 1 1 *\"\n    command: \"true\"\n",
    );
    let addr = free_addr();
    let mut chime = start(dir.path(), &addr, &["--state-dir", state]);
    let second = scrape(&addr);
    let restored = sample(
        &second,
        "chime_last_success_timestamp_seconds",
        &[("job", "nightly")],
    )
    .expect("restored from the state store");
    assert!(
        (restored - success).abs() < 0.002,
        "{restored} vs {success}"
    );
    assert_eq!(
        sample(
            &second,
            "chime_runs_total",
            &[("job", "nightly"), ("outcome", "success")]
        ),
        None,
        "counters start afresh"
    );
    chime.stop();

    // Without state nothing is remembered.
    let addr = free_addr();
    let mut chime = start(dir.path(), &addr, &["--state-dir", "none"]);
    let stateless = scrape(&addr);
    assert_eq!(
        sample(
            &stateless,
            "chime_last_success_timestamp_seconds",
            &[("job", "nightly")]
        ),
        None
    );
    chime.stop();
}

#[test]
fn health_is_200_while_the_service_runs() {
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  j:\n    schedule: \"0 0 1 1 *\"\n    command: \"true\"\n",
    );
    let addr = free_addr();
    let mut chime = start(dir.path(), &addr, &["--state-dir", "none"]);
    let (status, body) = get(&addr, "/health");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _) = get(&addr, "/nope");
    assert_eq!(status, 404);
    chime.stop();
}

/// A request the test server got.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    head: String,
    body: String,
}

/// An HTTP server on 127.0.0.1 that records every request and answers 200, or never
/// answers (`hang`: a monitor that is slow for ever).
struct Recorder {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    fn start(hang: bool) -> Recorder {
        Recorder::answering(if hang { None } else { Some(200) })
    }

    /// Answers every request with `status`; `None`: never answers.
    fn answering(status: Option<u16>) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let record = Arc::clone(&record);
                std::thread::spawn(move || serve_one(stream, &record, status));
            }
        });
        Recorder { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// Waits until a request whose target starts with `prefix` came.
    fn wait(&self, prefix: &str) -> Seen {
        let mut found = None;
        wait_until(&format!("a request to {prefix}"), LIMIT, || {
            found = self
                .seen()
                .into_iter()
                .find(|s| s.target.starts_with(prefix));
            found.is_some()
        });
        found.expect("found")
    }
}

fn serve_one(mut stream: TcpStream, record: &Mutex<Vec<Seen>>, status: Option<u16>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).to_string();
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while data.len() < end + 4 + length {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        }
        let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]).to_string();
        let mut first = head.lines().next().unwrap_or_default().split(' ');
        record.lock().expect("lock").push(Seen {
            method: first.next().unwrap_or_default().to_string(),
            target: first.next().unwrap_or_default().to_string(),
            head: head.clone(),
            body,
        });
        data.drain(..end + 4 + length);
        let Some(status) = status else {
            std::thread::sleep(Duration::from_secs(3600));
            return;
        };
        let answer = format!("HTTP/1.1 {status} Whatever\r\nContent-Length: 2\r\n\r\nOK");
        if stream.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn run_id(event: &Json) -> String {
    event["run_id"].as_str().expect("a run id").to_string()
}

#[test]
fn healthchecks_pings_start_exit_code_and_fail_with_the_run_id() {
    let server = Recorder::start(false);
    let hc = format!("http://{}/hc", server.addr);
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        format!(
            r#"
defaults:
  healthchecks: "{hc}/${{CHECK}}-default"
jobs:
  good:
    schedule: "@reboot"
    command: "echo hello; echo world"
    healthchecks: "{hc}/good"
  bad:
    schedule: "@reboot"
    command: "echo oops >&2; exit 3"
    retry: {{ attempts: 2, delay: 10ms }}
    healthchecks: "{hc}/bad"
  slow:
    schedule: "@reboot"
    command: "sleep 30"
    timeout: 200ms
    kill_grace: 100ms
  big:
    schedule: "@reboot"
    command: "i=0; while [ $i -lt 600 ]; do echo \"line $i of the output of a chatty job\"; i=$((i+1)); done"
    healthchecks: "{hc}/big"
"#
        ),
    );
    let mut chime = service(dir.path(), &["--state-dir", "none"])
        .env("CHECK", "slow")
        .spawn();
    let done = finished_all(&mut chime, &["good", "bad", "slow", "big"]);
    let (good, bad, slow, big) = (&done["good"], &done["bad"], &done["slow"], &done["big"]);
    assert_eq!(slow["outcome"], "timeout");

    let rid = run_id(good);
    let start = server.wait(&format!("/hc/good/start?rid={rid}"));
    let end = server.wait(&format!("/hc/good/0?rid={rid}"));
    assert_eq!(
        (start.method.as_str(), end.method.as_str()),
        ("GET", "POST")
    );
    assert_eq!(end.body, "hello\nworld\n");

    // One start and one end per run, after the last attempt, with its exit code.
    let rid = run_id(bad);
    server.wait(&format!("/hc/bad/start?rid={rid}"));
    let end = server.wait(&format!("/hc/bad/3?rid={rid}"));
    // The run's output, both attempts' of it.
    assert_eq!(end.body, "oops\noops\n");

    // The file's default, with a variable from the service's environment.
    let rid = run_id(slow);
    server.wait(&format!("/hc/slow-default/start?rid={rid}"));
    server.wait(&format!("/hc/slow-default/fail?rid={rid}"));

    // The body is the output's last 10 KiB.
    let end = server.wait(&format!("/hc/big/0?rid={}", run_id(big)));
    assert_eq!(end.body.len(), 10 * 1024);
    assert!(
        end.body
            .ends_with("line 599 of the output of a chatty job\n")
    );

    chime.stop();
    let seen = server.seen();
    for job in ["good", "bad", "slow-default", "big"] {
        let mine: Vec<&Seen> = seen
            .iter()
            .filter(|s| s.target.starts_with(&format!("/hc/{job}/")))
            .collect();
        assert_eq!(mine.len(), 2, "one start and one end for {job}: {mine:?}");
        assert!(mine[0].target.contains("/start?"), "start first: {mine:?}");
    }
}

#[test]
fn hooks_carry_the_run_facts() {
    let server = Recorder::start(false);
    let base = format!("http://{}", server.addr);
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        format!(
            r#"
defaults:
  on_failure:
    url: "{base}/fail/${{CHIME_JOB}}?outcome=${{CHIME_OUTCOME}}&code=${{CHIME_EXIT_CODE}}&tail=${{CHIME_OUTPUT_TAIL}}"
    method: POST
    headers: {{ X-Token: "${{TOKEN}}", X-Run: "${{CHIME_RUN_ID}}" }}
    body: '{{"job": ${{json:CHIME_JOB}}, "tail": ${{json:CHIME_OUTPUT_TAIL}}, "ms": "${{CHIME_DURATION_MS}}", "at": ${{json:CHIME_SCHEDULED_AT}}}}'
jobs:
  good:
    schedule: "@reboot"
    command: "echo fine"
    on_start: {{ url: "{base}/start/${{CHIME_RUN_ID}}" }}
    on_success: {{ url: "{base}/ok/${{CHIME_JOB}}/${{CHIME_EXIT_CODE}}", method: PUT, body: "${{CHIME_OUTPUT_TAIL}}" }}
  bad:
    schedule: "@reboot"
    command: "echo 'a b&c'; exit 4"
"#
        ),
    );
    let mut chime = service(dir.path(), &["--state-dir", "none"])
        .env("TOKEN", "s3cret")
        .spawn();
    let done = finished_all(&mut chime, &["good", "bad"]);
    server.wait(&format!("/start/{}", run_id(&done["good"])));
    let ok = server.wait("/ok/good/0");
    assert_eq!((ok.method.as_str(), ok.body.as_str()), ("PUT", "fine\n"));
    let fail = server.wait("/fail/bad?");
    assert_eq!(
        fail.target, "/fail/bad?outcome=failure&code=4&tail=a%20b%26c%0A",
        "values are percent-encoded in the URL"
    );
    let body: Json = serde_json::from_str(&fail.body).expect("a JSON body");
    assert_eq!(body["job"], "bad");
    assert_eq!(body["tail"], "a b&c\n");
    assert!(
        body["ms"]
            .as_str()
            .is_some_and(|ms| ms.parse::<u64>().is_ok())
    );
    assert!(body["at"].as_str().is_some_and(|at| at.ends_with('Z')));
    assert!(
        server
            .seen()
            .iter()
            .all(|s| !s.target.starts_with("/fail/good"))
    );
    let head = fail.head.to_ascii_lowercase();
    assert!(head.contains("\r\nx-token: s3cret"), "{head}");
    assert!(
        head.contains(&format!("\r\nx-run: {}", run_id(&done["bad"]))),
        "{head}"
    );
    chime.stop();
}

#[test]
fn a_monitor_that_is_down_or_slow_delays_no_fire_and_changes_no_outcome() {
    let slow = Recorder::start(true);
    let down = free_addr(); // nothing listens there
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        format!(
            r#"
jobs:
  tick:
    schedule: "@every 1s"
    command: "true"
    healthchecks: "http://{}/hc/${{SECRET}}"
    on_success:
      url: "http://{down}/hook/${{SECRET}}"
      retry: {{ attempts: 2, delay: 50ms }}
      timeout: 1s
"#,
            slow.addr
        ),
    );
    let mut chime = service(dir.path(), &["--state-dir", "none"])
        .env("SECRET", "hunter2")
        .spawn();
    let mut fires = Vec::new();
    for _ in 0..4 {
        let started = chime.wait_for("run.started of tick", LIMIT, |e| {
            is(e, "run.started", "tick")
        });
        fires.push(started["lateness_ms"].as_f64().expect("lateness"));
        let done = finished(&mut chime, "tick");
        assert_eq!(done["outcome"], "success");
    }
    assert!(
        fires.iter().all(|&ms| ms < 500.0),
        "no fire waited for a ping: lateness {fires:?} ms"
    );
    let failed = chime.wait_event("hook.failed", LIMIT);
    assert_eq!(failed["hook"], "on_success");
    assert_eq!(failed["attempts"], 2);
    assert!(
        failed["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/hook/${SECRET}"))
    );
    chime.stop();
    assert!(
        !chime.transcript().contains("hunter2"),
        "a secret reached the log:\n{}",
        chime.transcript()
    );
    assert!(slow.seen().len() >= 4, "the slow monitor was pinged");
}

#[test]
fn report_missed_reports_skipped_fires_as_failures_with_a_fresh_run_id() {
    let server = Recorder::start(false);
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        format!(
            r#"
jobs:
  long:
    schedule: "@every 1s"
    command: "sleep 1.6"
    report_missed: true
    healthchecks: "http://{0}/hc/long"
    on_failure: {{ url: "http://{0}/fail/${{CHIME_OUTCOME}}/${{CHIME_RUN_ID}}", method: POST, body: "${{CHIME_OUTPUT_TAIL}}" }}
  quiet:
    schedule: "@every 1s"
    enabled: false
    command: "true"
    report_missed: true
    healthchecks: "http://{0}/hc/quiet"
"#,
            server.addr
        ),
    );
    let mut chime = service(dir.path(), &["--state-dir", "none"]).spawn();
    let started = chime.wait_for("run.started of long", LIMIT, |e| {
        is(e, "run.started", "long")
    });
    chime.wait_for("run.skipped of long", LIMIT, |e| {
        is(e, "run.skipped", "long") && e["reason"] == "overlap"
    });
    let fail = server.wait("/hc/long/fail?rid=");
    assert!(fail.body.contains("reason overlap"), "{fail:?}");
    let rid = fail.target.split("rid=").nth(1).expect("a rid");
    assert_ne!(rid, run_id(&started), "a fresh run id");
    let hook = server.wait("/fail/skipped/");
    assert!(hook.body.contains("reason overlap"), "{hook:?}");
    chime.stop();
    assert!(
        server
            .seen()
            .iter()
            .all(|s| !s.target.starts_with("/hc/quiet")),
        "disabled is not reported"
    );
}

#[test]
fn bad_listen_addresses_are_clear_errors_at_start() {
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        "jobs:\n  j:\n    schedule: \"@daily\"\n    command: \"true\"\n",
    );
    let path = dir.path().to_str().expect("utf-8");
    let out = command(dir.path(), ["--listen", "localhost:port", "run", path]).run(LIMIT);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("--listen") && out.stderr.contains("127.0.0.1:9746"),
        "{}",
        out.stderr
    );
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = command(
        dir.path(),
        ["--state-dir", "none", "--listen", &addr, "run", path],
    )
    .run(LIMIT);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!("cannot listen on {addr}")) && out.stderr.contains("--listen"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("service.started"), "{}", out.stderr);
    let out = command(dir.path(), ["run", path])
        .env("CHIME_LISTEN", "nonsense")
        .run(LIMIT);
    assert_eq!(out.code, Some(2), "{out:?}");
}

#[test]
fn hook_urls_with_an_unknown_scheme_are_located_errors_in_check() {
    let dir = temp_dir();
    let file = write(
        dir.path(),
        "jobs.yaml",
        r#"jobs:
  j:
    schedule: "@daily"
    command: "true"
    healthchecks: "hc-ping.com/abc"
    on_failure:
      url: "ftp://example.com/${CHIME_JOB}"
    on_start: { url: "https://example.com/${CHIME_RUN_ID}", body: "${json:CHIME_OUTPUT_TAIL}" }
    on_success: { url: "https://example.com/${NOT_SET}" }
"#,
    );
    let out = command(dir.path(), ["check", dir.path().to_str().expect("utf-8")]).run(LIMIT);
    assert_eq!(out.code, Some(1), "{out:?}");
    let file = file.display();
    let errors = out.errors();
    let find = |needle: &str| {
        errors
            .iter()
            .find(|e| e.contains(needle))
            .unwrap_or_else(|| panic!("no error with {needle}: {errors:?}"))
            .to_string()
    };
    let scheme = find("ftp://");
    assert!(scheme.contains(&format!("{file}:7:12")), "{scheme}");
    assert!(
        scheme.contains("scheme `ftp`") && scheme.contains("http://"),
        "{scheme}"
    );
    let relative = find("hc-ping.com/abc");
    assert!(relative.contains(&format!("{file}:5:19")), "{relative}");
    let unset = find("NOT_SET");
    assert!(unset.contains("not set"), "{unset}");
    // The run's facts are known to the loader: no "unset variable" for them.
    assert_eq!(errors.len(), 3, "{errors:?}");
}

/// `/health` in-process, on tokio's virtual time: a loop that stops beating (a stall
/// injected by not beating it) turns it to 503 naming the loop, and a beat turns it back.
#[tokio::test(start_paused = true)]
async fn health_turns_503_on_a_stalled_loop_and_back_to_200() {
    use chime::health::{Health, Loop};
    use chime::monitor::{Monitor, MonitorOptions, http};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_health(addr: std::net::SocketAddr) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        let (head, body) = answer.split_once("\r\n\r\n").expect("an answer");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("a status");
        (status, body.to_string())
    }

    let health = Health::new();
    let monitor = Monitor::start(
        MonitorOptions::default(),
        &[],
        chime::events::Events::discard(),
        tokio::runtime::Handle::current(),
    )
    .expect("monitor");
    let listener = http::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(http::serve(listener, monitor, health.clone()));

    assert_eq!(get_health(addr).await, (200, "ok\n".into()));
    tokio::time::advance(Duration::from_secs(3)).await;
    health.beat(Loop::Scheduler);
    health.beat(Loop::Control);
    assert_eq!(get_health(addr).await.0, 200);

    // The control loop stalls: 5 s without a beat.
    tokio::time::advance(Duration::from_secs(4)).await;
    health.beat(Loop::Scheduler);
    tokio::time::advance(Duration::from_secs(1)).await;
    let (status, body) = get_health(addr).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("control loop last beat 5.0 s ago"), "{body}");

    // It beats again: healthy.
    health.beat(Loop::Control);
    assert_eq!(get_health(addr).await, (200, "ok\n".into()));

    // Both stall: the scheduler is named first.
    tokio::time::advance(Duration::from_secs(6)).await;
    let (status, body) = get_health(addr).await;
    assert_eq!(status, 503);
    assert!(body.contains("scheduler loop"), "{body}");
    health.beat(Loop::Scheduler);
    health.beat(Loop::Control);
    assert_eq!(get_health(addr).await.0, 200);

    // Without --listen's metrics the scrape says so rather than serving nothing.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    server.abort();
}

#[test]
fn a_run_cancelled_at_shutdown_reports_its_failure_before_chime_exits() {
    let server = Recorder::start(false);
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        format!(
            "jobs:\n  long:\n    schedule: \"@reboot\"\n    command: \"sleep 30\"\n    kill_grace: 100ms\n    healthchecks: \"http://{}/hc/long\"\n",
            server.addr
        ),
    );
    let mut chime = service(
        dir.path(),
        &["--state-dir", "none", "--shutdown-grace", "100ms"],
    )
    .spawn();
    let started = chime.wait_for("run.started of long", LIMIT, |e| {
        is(e, "run.started", "long")
    });
    let rid = run_id(&started);
    server.wait(&format!("/hc/long/start?rid={rid}"));
    chime.stop();
    let done = chime
        .events()
        .iter()
        .find(|e| is(e, "run.finished", "long"))
        .cloned()
        .expect("the run's end was logged");
    assert_eq!(done["outcome"], "cancelled");
    // Sent before the process ended: no waiting here.
    let seen = server.seen();
    assert!(
        seen.iter()
            .any(|s| s.target == format!("/hc/long/fail?rid={rid}")),
        "{seen:?}"
    );
}

#[test]
fn a_failing_hook_is_retried_by_its_own_policy_and_logged_without_changing_the_run() {
    let busy = Recorder::answering(Some(503));
    let gone = Recorder::answering(Some(404));
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        format!(
            r#"
jobs:
  j:
    schedule: "@reboot"
    command: "exit 1"
    on_start: {{ url: "http://{}/busy", retry: {{ attempts: 3, delay: 10ms }} }}
    on_failure: {{ url: "http://{}/gone", retry: {{ attempts: 3, delay: 10ms }} }}
"#,
            busy.addr, gone.addr
        ),
    );
    let mut chime = service(dir.path(), &["--state-dir", "none"]).spawn();
    let done = finished(&mut chime, "j");
    assert_eq!(done["outcome"], "failure", "the run's own outcome");
    let mut failed = HashMap::new();
    while failed.len() < 2 {
        let event = chime.wait_event("hook.failed", LIMIT);
        failed.insert(event["hook"].as_str().expect("hook").to_string(), event);
    }
    // 503 is retried (3 attempts); 404 fails at once.
    assert_eq!(failed["on_start"]["attempts"], 3);
    assert!(
        failed["on_start"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("503"))
    );
    assert_eq!(failed["on_failure"]["attempts"], 1);
    assert!(
        failed["on_failure"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("404"))
    );
    assert_eq!(failed["on_failure"]["run_id"], done["run_id"]);
    assert_eq!(busy.seen().len(), 3);
    assert_eq!(gone.seen().len(), 1);
    chime.stop();
}

#[test]
fn pings_added_by_a_reload_are_sent_from_the_next_run() {
    let server = Recorder::start(false);
    let dir = temp_dir();
    let job = "jobs:\n  tick:\n    schedule: \"@every 1s\"\n    command: \"echo tock\"\n";
    write(dir.path(), "jobs.yaml", job);
    // No --listen and no pings at start: the monitor is idle.
    let mut chime = service(dir.path(), &["--state-dir", "none"]).spawn();
    finished(&mut chime, "tick");
    write(
        dir.path(),
        "jobs.yaml",
        format!(
            "{job}    healthchecks: \"http://{}/hc/tick\"\n",
            server.addr
        ),
    );
    chime.signal(libc::SIGHUP);
    chime.wait_event("config.reloaded", LIMIT);
    let started = chime.wait_for("a run after the reload", LIMIT, |e| {
        is(e, "run.started", "tick")
    });
    let rid = run_id(&started);
    server.wait(&format!("/hc/tick/start?rid={rid}"));
    let end = server.wait(&format!("/hc/tick/0?rid={rid}"));
    assert_eq!(end.body, "tock\n");
    chime.stop();
}

/// After the merge with the operator controls and secrets: a manual run (`chime
/// trigger`) is pinged and counted like a scheduled one; a paused job's skipped fires
/// are counted (`reason="paused"`) but not reported by `report_missed`; a hook's
/// `${credential:…}` reaches the server (header and JSON body) and never the log, also
/// when the hook fails (`hook.failed` shows the URL as written).
#[test]
fn manual_runs_are_monitored_paused_fires_are_not_reported_and_hook_secrets_stay_unlogged() {
    const SECRET: &str = "s3cret-hook-token";
    let server = Recorder::start(false);
    let creds = temp_dir();
    write(creds.path(), "token", format!("{SECRET}\n"));
    let place = temp_dir();
    let socket = place.path().join("chime.sock");
    let socket = socket.to_str().expect("a UTF-8 path");
    let dir = temp_dir();
    write(
        dir.path(),
        "jobs.yaml",
        format!(
            r#"
jobs:
  manual:
    schedule: "0 0 1 1 *"
    command: "echo by hand"
    healthchecks: "http://{0}/hc/manual"
    on_success: {{ url: "http://{0}/ok/${{CHIME_JOB}}", method: POST, headers: {{ Authorization: "Bearer ${{credential:token}}" }}, body: '{{"token": ${{json:credential:token}}}}' }}
    on_start: {{ url: "http://127.0.0.1:1/start?t=${{credential:token}}" }}
  paused:
    schedule: "@every 1s"
    command: "true"
    report_missed: true
    healthchecks: "http://{0}/hc/paused"
"#,
            server.addr
        ),
    );
    let addr = free_addr();
    let mut chime = service(
        dir.path(),
        &[
            "--log-level",
            "trace",
            "--listen",
            &addr,
            "--state-dir",
            "none",
            "--control-socket",
            socket,
        ],
    )
    .env("CREDENTIALS_DIRECTORY", creds.path())
    .spawn();
    chime.wait_event("service.started", LIMIT);
    let client = |args: &[&str]| {
        let mut all = vec!["--control-socket", socket];
        all.extend_from_slice(args);
        support::run(dir.path(), all, LIMIT)
    };
    // Pause `paused` and see one of its fires skipped for it.
    let out = client(&["pause", "paused"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let skipped = chime.wait_for("run.skipped reason=paused", LIMIT, |e| {
        is(e, "run.skipped", "paused") && e["reason"] == "paused"
    });
    // A manual run of `manual`: pinged as any run.
    let out = client(&["trigger", "manual", "--wait"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let started = chime.wait_for("run.started of manual", LIMIT, |e| {
        is(e, "run.started", "manual")
    });
    assert_eq!(started["trigger"], "manual");
    let rid = run_id(&started);
    server.wait(&format!("/hc/manual/start?rid={rid}"));
    let exit = server.wait("/hc/manual/0?rid=");
    assert!(exit.target.ends_with(&rid), "{exit:?}");
    assert!(exit.body.contains("by hand"), "{exit:?}");
    let hook = server.wait("/ok/manual");
    assert!(
        hook.head.contains(&format!("Bearer {SECRET}")),
        "{}",
        hook.head
    );
    let body: Json = serde_json::from_str(&hook.body).expect("a JSON body");
    assert_eq!(body["token"], SECRET);
    let failed = chime.wait_for("hook.failed of on_start", LIMIT, |e| {
        is(e, "hook.failed", "manual") && e["hook"] == "on_start"
    });
    assert_eq!(
        failed["url"], "http://127.0.0.1:1/start?t=${credential:token}",
        "{failed}"
    );
    // The metrics count the manual run and the paused fire.
    wait_until("the manual run in the metrics", LIMIT, || {
        let scrape = scrape(&addr);
        sample(
            &scrape,
            "chime_runs_total",
            &[("job", "manual"), ("outcome", "success")],
        ) == Some(1.0)
            && sample(
                &scrape,
                "chime_skipped_fires_total",
                &[("job", "paused"), ("reason", "paused")],
            )
            .is_some_and(|n| n >= 1.0)
    });
    chime.stop();
    assert!(
        server
            .seen()
            .iter()
            .all(|s| !s.target.contains("/hc/paused/fail")),
        "a paused fire ({skipped}) was reported as missed"
    );
    let (lines, stdout) = chime.finish(LIMIT);
    for line in lines.iter().map(String::as_str).chain(stdout.lines()) {
        assert!(!line.contains(SECRET), "the secret was logged: {line}");
    }
}
