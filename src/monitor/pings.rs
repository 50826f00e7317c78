//! Sending a job's pings: healthchecks.io's protocol and the generic hooks, each in a
//! task of its own with its own timeout and retries, so a slow or dead monitor never
//! holds up a fire or changes a run. A ping that fails for good is `hook.failed`;
//! only the URL as written is logged, never the one sent (it may carry secrets).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::{Event, Events, rfc3339};
use crate::job::{Hook, Piece, PingUrl, RetryPolicy, RunVar, Template};

/// How much of a run's output a ping carries: its last 10 KiB.
pub const TAIL_BYTES: usize = 10 * 1024;
/// healthchecks.io pings: each try's timeout, and the retries.
const HEALTHCHECKS_TIMEOUT: Duration = Duration::from_secs(10);
const HEALTHCHECKS_RETRY: RetryPolicy = RetryPolicy {
    attempts: 3,
    delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(5),
};

/// A run's facts, as hooks see them (`${CHIME_*}`).
#[derive(Debug, Clone)]
pub(super) struct Facts {
    pub job: Arc<str>,
    pub run_id: Arc<str>,
    pub outcome: String,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<u64>,
    pub scheduled_at: DateTime<Utc>,
    pub output_tail: String,
}

impl Facts {
    fn value(&self, var: RunVar) -> String {
        match var {
            RunVar::Job => self.job.to_string(),
            RunVar::RunId => self.run_id.to_string(),
            RunVar::Outcome => self.outcome.clone(),
            RunVar::ExitCode => self.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            RunVar::DurationMs => self.duration_ms.map(|d| d.to_string()).unwrap_or_default(),
            RunVar::ScheduledAt => rfc3339(self.scheduled_at),
            RunVar::OutputTail => self.output_tail.clone(),
        }
    }
}

/// Where a value goes, which decides how it is escaped.
#[derive(Clone, Copy)]
enum Into {
    Url,
    Header,
    Body,
}

fn render(template: &Template, facts: &Facts, into: Into) -> String {
    let mut out = String::new();
    for piece in &template.0 {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Var { var, json } => {
                let mut value = facts.value(*var);
                if *json {
                    value = serde_json::Value::from(value).to_string();
                }
                match into {
                    Into::Url => percent_encode(&value, &mut out),
                    // A header value cannot hold line breaks or other controls.
                    Into::Header => out.extend(
                        value
                            .chars()
                            .map(|c| if c == '\t' || !c.is_control() { c } else { ' ' }),
                    ),
                    Into::Body => out.push_str(&value),
                }
            }
        }
    }
    out
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn percent_encode(value: &str, out: &mut String) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

/// The last [`TAIL_BYTES`] of a run's output lines.
#[derive(Debug, Default)]
pub(super) struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Tail {
    pub(super) fn push(&mut self, line: &str) {
        self.bytes += line.len() + 1;
        self.lines.push_back(line.to_string());
        while self.bytes > TAIL_BYTES + self.lines.front().map_or(0, |l| l.len() + 1)
            && self.lines.len() > 1
        {
            if let Some(first) = self.lines.pop_front() {
                self.bytes -= first.len() + 1;
            }
        }
    }

    pub(super) fn text(&self) -> String {
        let mut all = String::with_capacity(self.bytes);
        for line in &self.lines {
            all.push_str(line);
            all.push('\n');
        }
        if all.len() > TAIL_BYTES {
            let mut cut = all.len() - TAIL_BYTES;
            while !all.is_char_boundary(cut) {
                cut += 1;
            }
            all.drain(..cut);
        }
        all
    }
}

/// One HTTP request of a ping.
struct Request {
    hook: &'static str,
    job: Arc<str>,
    run_id: Arc<str>,
    method: reqwest::Method,
    url: String,
    url_template: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
    timeout: Duration,
    retry: RetryPolicy,
}

/// Sends pings on the service's runtime.
#[derive(Clone)]
pub(super) struct Pinger {
    client: reqwest::Client,
    events: Events,
    runtime: Handle,
    /// Pings in flight, so that a stopping service can give them a moment.
    pub(super) tracker: TaskTracker,
}

impl Pinger {
    pub(super) fn new(events: Events, runtime: Handle) -> Pinger {
        let client = reqwest::Client::builder()
            .user_agent(concat!("chime/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Pinger {
            client,
            events,
            runtime,
            tracker: TaskTracker::new(),
        }
    }

    /// healthchecks.io: `URL/<what>?rid=RUN_ID`, once `after` is given.
    pub(super) fn healthchecks(
        &self,
        ping: &PingUrl,
        what: &str,
        facts: &Facts,
        body: Option<String>,
        after: Option<CancellationToken>,
    ) -> JoinHandle<()> {
        let mut rid = String::new();
        percent_encode(&facts.run_id, &mut rid);
        let request = Request {
            hook: match what {
                "start" => "healthchecks.start",
                "fail" => "healthchecks.fail",
                _ => "healthchecks.exit",
            },
            job: Arc::clone(&facts.job),
            run_id: Arc::clone(&facts.run_id),
            method: if body.is_some() {
                reqwest::Method::POST
            } else {
                reqwest::Method::GET
            },
            url: match ping.url.split_once('?') {
                Some((base, query)) => format!("{base}/{what}?{query}&rid={rid}"),
                None => format!("{}/{what}?rid={rid}", ping.url),
            },
            url_template: format!("{} ({what})", ping.template),
            headers: Vec::new(),
            body,
            timeout: HEALTHCHECKS_TIMEOUT,
            retry: HEALTHCHECKS_RETRY,
        };
        self.spawn(request, after)
    }

    /// A generic hook (`name`: `on_start`, `on_success`, `on_failure`).
    pub(super) fn hook(
        &self,
        name: &'static str,
        hook: &Hook,
        facts: &Facts,
        after: Option<CancellationToken>,
    ) -> JoinHandle<()> {
        let request = Request {
            hook: name,
            job: Arc::clone(&facts.job),
            run_id: Arc::clone(&facts.run_id),
            method: reqwest::Method::from_bytes(hook.method.as_bytes())
                .unwrap_or(reqwest::Method::GET),
            url: render(&hook.url, facts, Into::Url),
            url_template: hook.url_template.clone(),
            headers: hook
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), render(value, facts, Into::Header)))
                .collect(),
            body: hook
                .body
                .as_ref()
                .map(|body| render(body, facts, Into::Body)),
            timeout: hook.timeout,
            retry: hook.retry,
        };
        self.spawn(request, after)
    }

    fn spawn(&self, request: Request, after: Option<CancellationToken>) -> JoinHandle<()> {
        let client = self.client.clone();
        let events = self.events.clone();
        self.tracker.spawn_on(
            async move {
                // A run's end is reported after its start, so the monitor pairs them.
                if let Some(after) = after {
                    after.cancelled().await;
                }
                send(&client, &events, request).await;
            },
            &self.runtime,
        )
    }

    /// A signal given once every ping in `pings` is done (`None` when there is none).
    pub(super) fn gate(&self, pings: Vec<JoinHandle<()>>) -> Option<CancellationToken> {
        if pings.is_empty() {
            return None;
        }
        let done = CancellationToken::new();
        let signal = done.clone();
        self.runtime.spawn(async move {
            for ping in pings {
                let _ = ping.await;
            }
            signal.cancel();
        });
        Some(done)
    }
}

/// Sends with retries; the last failure becomes `hook.failed`.
async fn send(client: &reqwest::Client, events: &Events, request: Request) {
    let mut attempt = 1;
    loop {
        let mut builder = client
            .request(request.method.clone(), &request.url)
            .timeout(request.timeout);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        // Errors lose their URL: it may carry a secret.
        let (error, retryable) = match builder.send().await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => {
                let status = response.status();
                let retryable = status.is_server_error() || status.as_u16() == 429;
                (format!("the server answered {status}"), retryable)
            }
            Err(err) => (err.without_url().to_string(), true),
        };
        if !retryable || attempt >= request.retry.attempts {
            events.emit(Event::HookFailed {
                job: request.job,
                run_id: request.run_id,
                hook: request.hook,
                url: request.url_template,
                attempts: attempt,
                error,
            });
            return;
        }
        tokio::time::sleep(request.retry.nominal_delay(attempt)).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            job: "backup".into(),
            run_id: "r1".into(),
            outcome: "failure".into(),
            exit_code: Some(3),
            duration_ms: Some(1500),
            scheduled_at: "2026-03-01T02:30:00Z".parse().unwrap(),
            output_tail: "line \"one\"\nline two\n".into(),
        }
    }

    #[test]
    fn values_are_escaped_for_where_they_go() {
        let template = Template(vec![
            Piece::Text("https://x/?job=".into()),
            Piece::Var {
                var: RunVar::OutputTail,
                json: false,
            },
        ]);
        assert_eq!(
            render(&template, &facts(), Into::Url),
            "https://x/?job=line%20%22one%22%0Aline%20two%0A"
        );
        assert_eq!(
            render(&template, &facts(), Into::Header),
            "https://x/?job=line \"one\" line two "
        );
        let json = Template(vec![
            Piece::Text("{\"tail\": ".into()),
            Piece::Var {
                var: RunVar::OutputTail,
                json: true,
            },
            Piece::Text(", \"code\": \"".into()),
            Piece::Var {
                var: RunVar::ExitCode,
                json: false,
            },
            Piece::Text("\"}".into()),
        ]);
        let body = render(&json, &facts(), Into::Body);
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["tail"], "line \"one\"\nline two\n");
        assert_eq!(parsed["code"], "3");
    }

    #[test]
    fn the_tail_keeps_the_last_10_kib() {
        let mut tail = Tail::default();
        for i in 0..1000 {
            tail.push(&format!("line {i:04} {}", "x".repeat(40)));
        }
        let text = tail.text();
        assert_eq!(text.len(), TAIL_BYTES);
        assert!(text.ends_with(&format!("line 0999 {}\n", "x".repeat(40))));
        let mut short = Tail::default();
        short.push("only");
        assert_eq!(short.text(), "only\n");
    }
}
