//! HTTP executor: one attempt of an HTTP job, through one shared client.
//!
//! The request races the attempt's deadline and cancel token; the status decides the
//! outcome (DESIGN.md §4): an expected status is success; 429, 5xx and connection
//! errors are retryable failures; any other status fails at once. On failure the head
//! of the response body is logged on [`Stream::Body`].
//!
//! The interpolated URL and header values may carry secrets, so nothing here ever
//! formats them: errors are described from their causes, never from reqwest's
//! top-level message (which quotes the URL), and logs name `url_template` only.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Attempt, AttemptResult, OutputSink, StartNotice};
use crate::events::{ExitDetail, Outcome, Stream, rfc3339};
use crate::job::{Action, HttpRequest};

/// Sent with every request unless the job sets its own `User-Agent`.
const USER_AGENT: &str = concat!("chime/", env!("CARGO_PKG_VERSION"));

/// Bounds establishing a connection (DNS, TCP, TLS). The attempt's deadline still
/// applies on top; this only stops a dead host from holding a job with no timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a failed response's body is logged.
pub const BODY_HEAD_BYTES: usize = 1024;

/// How much of a successful response's body is read (and dropped) so that the
/// connection can go back to the pool. A longer body costs the connection, not time.
const DRAIN_BYTES: usize = 64 * 1024;

/// Once the status is known the outcome is decided; reading the body (for the log
/// or for connection reuse) gets at most this long, besides the deadline and cancel.
const BODY_GRACE: Duration = Duration::from_secs(2);

/// The HTTP client could not be set up (TLS roots, system configuration).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client")]
pub struct ClientError(#[source] reqwest::Error);

/// Carries out HTTP attempts. Clones share one client, hence one connection pool.
#[derive(Debug, Clone)]
pub struct HttpExecutor {
    client: reqwest::Client,
}

impl HttpExecutor {
    pub fn new() -> Result<Self, ClientError> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            // A redirect is a status like any other: following it could turn a POST
            // into a GET or carry credentials elsewhere. Jobs that expect one list it
            // in `expect_status`.
            .redirect(reqwest::redirect::Policy::none())
            // No overall `timeout`: each attempt has its own deadline, raced below.
            .build()
            .map_err(ClientError)?;
        Ok(HttpExecutor { client })
    }

    pub async fn execute(&self, attempt: Attempt, output: Arc<OutputSink>) -> AttemptResult {
        self.execute_announced(attempt, output, StartNotice::silent())
            .await
    }

    /// [`Self::execute`], announcing the start through `start` when the request is
    /// handed to the client (or could not be built).
    pub async fn execute_announced(
        &self,
        attempt: Attempt,
        output: Arc<OutputSink>,
        start: StartNotice,
    ) -> AttemptResult {
        let Action::Http(spec) = &attempt.job.action else {
            // `Real` dispatches by action, so this is a caller's bug; report, don't panic.
            return failure("not an HTTP job", false);
        };
        let request = match self.build(spec, &attempt) {
            Ok(request) => request,
            // The same request would be just as invalid next time.
            Err(reason) => return failure(reason, false),
        };
        start.spawned(None);

        let sent = race(
            &attempt.cancel,
            attempt.deadline,
            self.client.execute(request),
        )
        .await;
        let mut response = match sent {
            Raced::Done(Ok(response)) => response,
            Raced::Done(Err(err)) => {
                let reason = scrub(describe(&err, is_https(spec)), spec);
                tracing::debug!(
                    job = %attempt.job.name,
                    url = %spec.url_template,
                    error = %reason,
                    "HTTP request failed"
                );
                // Builder errors are deterministic; everything else happened on the
                // wire (connect, TLS, reset, a broken response) and may pass.
                return failure(reason, !err.is_builder());
            }
            Raced::Cancelled => return interrupted(Outcome::Cancelled),
            Raced::TimedOut => return interrupted(Outcome::Timeout),
        };

        let status = response.status().as_u16();
        tracing::debug!(
            job = %attempt.job.name,
            url = %spec.url_template,
            status,
            "HTTP response"
        );
        let detail = ExitDetail {
            http_status: Some(status),
            ..ExitDetail::default()
        };

        // The status has decided the outcome; the body is read for the log (failure)
        // or for connection reuse (success) only, and never changes the outcome. A
        // body that stalls is abandoned at the deadline, on cancel or after a short
        // grace; dropping an unfinished response closes its connection.
        let body_deadline = earliest(attempt.deadline, Instant::now() + BODY_GRACE);
        if spec.accepts(status) {
            let _ = race(
                &attempt.cancel,
                Some(body_deadline),
                drain_body(&mut response, DRAIN_BYTES),
            )
            .await;
            return AttemptResult::success(detail);
        }

        let mut head = Vec::new();
        // Whatever arrived before an error, the deadline or cancel is still worth
        // logging, so how the read ended does not matter.
        let _ = race(
            &attempt.cancel,
            Some(body_deadline),
            read_body_into(&mut response, BODY_HEAD_BYTES, &mut head),
        )
        .await;
        log_body_head(&output, &head);

        // 429 and 5xx say "not now"; other statuses will not change by retrying.
        let retryable = status == 429 || (500..600).contains(&status);
        AttemptResult::failure(detail, retryable)
    }

    /// The request for this attempt: the job's method, URL, headers and body, plus the
    /// `X-Chime-*` headers. Errors are short reasons that quote no value.
    fn build(&self, spec: &HttpRequest, attempt: &Attempt) -> Result<reqwest::Request, String> {
        let method = reqwest::Method::from_bytes(spec.method.as_bytes())
            .map_err(|_| format!("invalid HTTP method `{}`", spec.method))?;
        let url = reqwest::Url::parse(&spec.url).map_err(|err| format!("invalid URL: {err}"))?;

        let mut headers = HeaderMap::new();
        for (name, value) in &spec.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name `{name}`"))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value for header `{name}`"))?;
            // Values may hold credentials: keep them out of any Debug output.
            value.set_sensitive(true);
            // `append`: a job may repeat a header on purpose.
            headers.append(name, value);
        }
        // Set after the job's own headers so that a job cannot spoof them.
        let chime = [
            ("x-chime-job", attempt.job.name.clone()),
            ("x-chime-run-id", attempt.run_id.to_string()),
            ("x-chime-scheduled-at", rfc3339(attempt.scheduled_at)),
            ("x-chime-attempt", attempt.attempt.to_string()),
        ];
        for (name, value) in chime {
            let value = HeaderValue::from_str(&value)
                .map_err(|_| format!("`{value}` cannot be sent as header `{name}`"))?;
            headers.insert(HeaderName::from_static(name), value);
        }

        let mut builder = self.client.request(method, url).headers(headers);
        if let Some(body) = &spec.body {
            builder = builder.body(body.clone());
        }
        builder
            .build()
            .map_err(|err| scrub(describe(&err, is_https(spec)), spec))
    }
}

/// How a future raced against cancel and the deadline ended.
enum Raced<T> {
    Done(T),
    Cancelled,
    TimedOut,
}

/// Runs `work` until it finishes, `cancel` fires or `deadline` passes. Cancel wins a
/// tie (a shutdown should not be reported as a timeout); an already-passed deadline
/// or an already-cancelled token ends the race before `work` starts.
async fn race<T>(
    cancel: &CancellationToken,
    deadline: Option<Instant>,
    work: impl Future<Output = T>,
) -> Raced<T> {
    let expiry = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        () = cancel.cancelled() => Raced::Cancelled,
        () = expiry => Raced::TimedOut,
        result = work => Raced::Done(result),
    }
}

fn earliest(deadline: Option<Instant>, other: Instant) -> Instant {
    deadline.map_or(other, |at| at.min(other))
}

/// Reads and discards up to `limit` bytes of body. Returns whether the body ended,
/// which is what lets hyper put the connection back in the pool.
async fn drain_body(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<bool, reqwest::Error> {
    let mut seen = 0;
    while seen < limit {
        match response.chunk().await? {
            Some(chunk) => seen += chunk.len(),
            None => return Ok(true),
        }
    }
    Ok(false)
}

/// Reads the body into `into` until it holds `limit` bytes or the body ends; at most
/// one chunk is read past what is kept. `into` keeps what arrived even if the read
/// fails or is abandoned midway (the future is dropped by [`race`]).
async fn read_body_into(
    response: &mut reqwest::Response,
    limit: usize,
    into: &mut Vec<u8>,
) -> Result<(), reqwest::Error> {
    while into.len() < limit {
        match response.chunk().await? {
            Some(chunk) => {
                let room = limit - into.len();
                into.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            None => break,
        }
    }
    Ok(())
}

/// Logs a body head line by line. A character cut in half at the byte limit is
/// dropped rather than shown as a replacement character.
fn log_body_head(output: &OutputSink, head: &[u8]) {
    let mut head = head;
    if head.len() >= BODY_HEAD_BYTES
        && let Err(err) = std::str::from_utf8(head)
        && err.error_len().is_none()
    {
        head = &head[..err.valid_up_to()];
    }
    let head = head.strip_suffix(b"\n").unwrap_or(head);
    if head.is_empty() {
        return;
    }
    for line in head.split(|&b| b == b'\n') {
        output.line(Stream::Body, line);
    }
}

fn failure(reason: impl Into<String>, retryable: bool) -> AttemptResult {
    AttemptResult::failure(
        ExitDetail {
            error: Some(reason.into()),
            ..ExitDetail::default()
        },
        retryable,
    )
}

/// A timeout or cancellation before the response arrived: the outcome says it all.
fn interrupted(outcome: Outcome) -> AttemptResult {
    AttemptResult::with_outcome(outcome, ExitDetail::default())
}

/// A short human reason for a failed request, built from the error's causes only:
/// reqwest's own message quotes the URL, which may carry secrets.
///
/// The causes are reqwest's connector and hyper's errors, which expose no kinds for
/// these cases, so their shapes are relied on: a resolver failure sits under
/// hyper-util's "dns error", a TCP failure is an `io::Error` under "tcp connect
/// error", a TLS failure is a bare `io::Error` carrying rustls' message, a broken
/// response is a `hyper::Error`. tests/http_exec.rs pins refused, closed and TLS;
/// an unknown shape still yields its innermost message, just less neatly labelled.
fn describe(err: &reqwest::Error, https: bool) -> String {
    let causes: Vec<&(dyn StdError + 'static)> =
        std::iter::successors(err.source(), |&e| e.source()).collect();
    let texts: Vec<String> = causes.iter().map(ToString::to_string).collect();
    let innermost = texts.last();

    if let Some(at) = texts.iter().position(|t| t == "dns error") {
        return match innermost {
            Some(cause) if texts.len() > at + 1 => format!("DNS lookup failed: {cause}"),
            _ => "DNS lookup failed".to_owned(),
        };
    }
    if let Some(reason) = causes
        .iter()
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .find_map(io_reason)
    {
        return reason;
    }
    if err.is_timeout() {
        // No request timeout is configured, so this is the connect timeout.
        return format!("connect timed out after {}s", CONNECT_TIMEOUT.as_secs());
    }
    let tcp_failed = texts.iter().any(|t| t.starts_with("tcp "));
    match innermost {
        Some(cause) if err.is_connect() && https && !tcp_failed => format!("TLS error: {cause}"),
        Some(cause) if err.is_connect() => format!("connect failed: {cause}"),
        Some(cause) => cause.clone(),
        // No cause to quote: reqwest's kind, with the URL stripped.
        None => err_kind(err),
    }
}

/// Names the I/O failures an operator can act on; others fall through to the
/// generic description.
fn io_reason(io: &io::Error) -> Option<String> {
    use io::ErrorKind as K;
    let text = match io.kind() {
        K::ConnectionRefused => "connection refused",
        K::ConnectionReset => "connection reset by peer",
        K::ConnectionAborted => "connection aborted",
        K::BrokenPipe => "connection closed by peer",
        K::UnexpectedEof => "connection closed unexpectedly",
        K::HostUnreachable => "host unreachable",
        K::NetworkUnreachable => "network unreachable",
        K::NetworkDown => "network down",
        K::AddrNotAvailable => "address not available",
        K::TimedOut => "connection timed out",
        _ => return None,
    };
    Some(text.to_owned())
}

/// What kind of failure reqwest saw, for an error that has no cause to quote.
fn err_kind(err: &reqwest::Error) -> String {
    let text = if err.is_builder() {
        "invalid request"
    } else if err.is_connect() {
        "connect failed"
    } else if err.is_body() {
        "request or response body error"
    } else if err.is_decode() {
        "invalid response"
    } else {
        "error sending request"
    };
    text.to_owned()
}

fn is_https(spec: &HttpRequest) -> bool {
    spec.url
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// Last line of defence: whatever a cause said, the interpolated URL never leaves,
/// neither as written nor as the URL parser normalised it.
fn scrub(reason: String, spec: &HttpRequest) -> String {
    let normalised = reqwest::Url::parse(&spec.url).map(String::from).ok();
    [Some(spec.url.as_str()), normalised.as_deref()]
        .into_iter()
        .flatten()
        .filter(|url| !url.is_empty())
        .fold(reason, |reason, url| {
            reason.replace(url, &spec.url_template)
        })
}
