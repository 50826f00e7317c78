//! The HTTP executor against a real HTTP/1.1 server on 127.0.0.1, written here so that
//! each test scripts its responses and sees exactly what arrived on the wire.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chime::events::{Event, Events, Outcome, Stream};
use chime::exec::http::HttpExecutor;
use chime::exec::{Attempt, AttemptResult, DEFAULT_OUTPUT_LIMIT, OutputSink};
use chime::job::{Action, HttpRequest, Job};
use chrono::{DateTime, TimeZone, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Every wait in these tests is bounded by this; none should come close.
const PATIENCE: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

// ---------------------------------------------------------------------------------
// The test server

/// What the server does with the next request it reads.
enum Reply {
    Respond {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// Read the request, then never answer (the connection stays open).
    Hang,
    /// Read the request, then close the connection without a word.
    Close,
}

impl Reply {
    fn status(status: u16) -> Reply {
        Reply::body(status, "")
    }

    fn body(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply::Respond {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }
}

/// One request as the server read it.
#[derive(Debug)]
struct Recorded {
    method: String,
    target: String,
    /// Names lowercased, in arrival order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Which accepted connection (1-based) carried it.
    connection: usize,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: mpsc::UnboundedReceiver<Recorded>,
}

impl Server {
    /// Starts a server that answers requests, on any connection, in script order.
    async fn start(script: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let (tx, requests) = mpsc::unbounded_channel();
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let connection = count.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(serve(stream, connection, Arc::clone(&script), tx.clone()));
            }
        });
        Server {
            addr,
            accepted,
            requests,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    async fn next_request(&mut self) -> Recorded {
        within("a request at the server", self.requests.recv())
            .await
            .expect("server task ended")
    }

    /// Requests already read, without waiting.
    fn drain(&mut self) -> Vec<Recorded> {
        std::iter::from_fn(|| self.requests.try_recv().ok()).collect()
    }
}

async fn serve(
    mut stream: TcpStream,
    connection: usize,
    script: Arc<Mutex<VecDeque<Reply>>>,
    tx: mpsc::UnboundedSender<Recorded>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buf, connection).await else {
            return;
        };
        let _ = tx.send(request);
        let reply = script
            .lock()
            .expect("script lock")
            .pop_front()
            .unwrap_or_else(|| Reply::body(500, "unscripted request"));
        match reply {
            Reply::Respond {
                status,
                headers,
                body,
            } => {
                let mut head = format!("HTTP/1.1 {status} Scripted\r\n");
                if status != 204 {
                    head.push_str(&format!("content-length: {}\r\n", body.len()));
                }
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                // The client may hang up early (it reads only a body's head): fine.
                if stream.write_all(head.as_bytes()).await.is_err()
                    || stream.write_all(&body).await.is_err()
                {
                    return;
                }
            }
            Reply::Hang => {
                // Hold the connection open until the test's runtime drops this task.
                std::future::pending::<()>().await;
            }
            Reply::Close => return,
        }
    }
}

/// Reads one request (head and Content-Length body); `None` at end of stream.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    connection: usize,
) -> Option<Recorded> {
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    buf.drain(..head_end + 4);
    while buf.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf.drain(..length).collect();
    Some(Recorded {
        method,
        target,
        headers,
        body,
        connection,
    })
}

// ---------------------------------------------------------------------------------
// Jobs, attempts and what they logged

fn request(url: &str) -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        url: url.into(),
        url_template: url.into(),
        headers: Vec::new(),
        body: None,
        expect_status: Vec::new(),
    }
}

fn job(http: HttpRequest) -> Arc<Job> {
    Arc::new(Job::new("ping", "* * * * *", Action::Http(http)).expect("valid schedule"))
}

fn scheduled_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 29, 1, 2, 3).unwrap() + chrono::Duration::milliseconds(4)
}

fn attempt(http: HttpRequest) -> Attempt {
    Attempt {
        job: job(http),
        run_id: "run-42".into(),
        scheduled_at: scheduled_at(),
        attempt: 2,
        deadline: None,
        cancel: CancellationToken::new(),
    }
}

struct Logged {
    sink: Arc<OutputSink>,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Logged {
    fn new() -> Logged {
        let (events, store) = Events::recorder();
        Logged {
            sink: Arc::new(OutputSink::new(
                events,
                "ping".into(),
                "run-42".into(),
                DEFAULT_OUTPUT_LIMIT,
            )),
            events: store,
        }
    }

    /// `run.output` lines, with their stream.
    fn lines(&self) -> Vec<(Stream, String)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::RunOutput { stream, line, .. } => Some((*stream, line.clone())),
                _ => None,
            })
            .collect()
    }
}

/// Runs one attempt through a fresh executor.
async fn run(attempt: Attempt) -> (AttemptResult, Logged) {
    let executor = HttpExecutor::new().expect("client builds");
    let logged = Logged::new();
    let result = within(
        "the attempt",
        executor.execute(attempt, Arc::clone(&logged.sink)),
    )
    .await;
    (result, logged)
}

fn assert_success(result: &AttemptResult, status: u16) {
    assert_eq!(result.outcome, Outcome::Success, "{result:?}");
    assert_eq!(result.detail.http_status, Some(status));
    assert_eq!(result.detail.error, None);
}

fn assert_failure(result: &AttemptResult, status: Option<u16>, retryable: bool) {
    assert_eq!(result.outcome, Outcome::Failure, "{result:?}");
    assert_eq!(result.detail.http_status, status, "{result:?}");
    assert_eq!(result.retryable, retryable, "{result:?}");
}

// ---------------------------------------------------------------------------------
// Statuses

#[tokio::test]
async fn success_on_200_and_204_without_logging_the_body() {
    let server = Server::start(vec![Reply::body(200, "fine\n"), Reply::status(204)]).await;
    for status in [200, 204] {
        let (result, logged) = run(attempt(request(&server.url("/ok")))).await;
        assert_success(&result, status);
        assert!(!result.retryable);
        assert_eq!(logged.lines(), []);
    }
}

#[tokio::test]
async fn custom_expect_status_301_is_success_and_the_redirect_is_not_followed() {
    let mut server = Server::start(vec![
        Reply::Respond {
            status: 301,
            headers: vec![("location", "/elsewhere".into())],
            body: Vec::new(),
        },
        Reply::body(200, "not what was expected"),
    ])
    .await;
    let mut http = request(&server.url("/moved"));
    http.expect_status = vec![301];

    let (result, _) = run(attempt(http.clone())).await;
    assert_success(&result, 301);
    assert_eq!(server.next_request().await.target, "/moved");

    // With only 301 expected, a 200 is an unexpected status: it fails, not retried.
    let (result, _) = run(attempt(http)).await;
    assert_failure(&result, Some(200), false);
    let second = server.next_request().await;
    assert_eq!(second.target, "/moved", "the redirect must not be followed");
    assert!(server.drain().is_empty());
}

#[tokio::test]
async fn status_503_is_a_retryable_failure() {
    let server = Server::start(vec![Reply::body(503, "busy")]).await;
    let (result, logged) = run(attempt(request(&server.url("/")))).await;
    assert_failure(&result, Some(503), true);
    assert_eq!(logged.lines(), [(Stream::Body, "busy".to_owned())]);
}

#[tokio::test]
async fn status_429_is_a_retryable_failure() {
    let server = Server::start(vec![Reply::status(429)]).await;
    let (result, logged) = run(attempt(request(&server.url("/")))).await;
    assert_failure(&result, Some(429), true);
    assert_eq!(logged.lines(), [], "an empty body logs nothing");
}

#[tokio::test]
async fn status_404_fails_without_retry_and_logs_its_body_head() {
    let server = Server::start(vec![Reply::body(
        404,
        b"no such hook\r\nsee the docs\n\ncaf\xc3\xa9 \xff\n",
    )])
    .await;
    let (result, logged) = run(attempt(request(&server.url("/hook")))).await;
    assert_failure(&result, Some(404), false);
    assert_eq!(result.detail.error, None);
    let lines: Vec<_> = logged.lines();
    assert_eq!(
        lines,
        [
            (Stream::Body, "no such hook".to_owned()),
            (Stream::Body, "see the docs".to_owned()),
            (Stream::Body, String::new()),
            (Stream::Body, "café \u{fffd}".to_owned()),
        ]
    );
    let names: Vec<_> = logged
        .events
        .lock()
        .unwrap()
        .iter()
        .map(Event::name)
        .collect();
    assert!(names.iter().all(|n| *n == "run.output"), "{names:?}");
}

#[tokio::test]
async fn a_huge_error_body_logs_only_its_first_kibibyte() {
    // 4 MiB in lines of 99 characters; a multi-byte character straddles byte 1024.
    let mut body = "x".repeat(1023).into_bytes();
    body.extend_from_slice("é\n".as_bytes());
    for _ in 0..(4 << 20) / 100 {
        body.extend_from_slice(&[b'y'; 99]);
        body.push(b'\n');
    }
    let server = Server::start(vec![Reply::body(500, body)]).await;
    let (result, logged) = run(attempt(request(&server.url("/")))).await;
    assert_failure(&result, Some(500), true);
    let lines = logged.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].1, "x".repeat(1023), "the cut character is dropped");
}

// ---------------------------------------------------------------------------------
// Connection errors never leak the interpolated URL

const SECRET_PATH: &str = "/hook/s3cr3t-t0ken?key=hunter2";

fn secret_request(addr: SocketAddr, scheme: &str) -> HttpRequest {
    HttpRequest {
        url: format!("{scheme}://{addr}{SECRET_PATH}"),
        url_template: format!("{scheme}://{addr}/hook/${{TOKEN}}?key=${{KEY}}"),
        ..request("http://unused")
    }
}

fn assert_no_secret(result: &AttemptResult) {
    let shown = format!("{result:?}");
    for secret in ["s3cr3t", "hunter2", SECRET_PATH] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
}

#[tokio::test]
async fn connection_refused_is_retryable_and_does_not_show_the_url() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);

    let (result, logged) = run(attempt(secret_request(addr, "http"))).await;
    assert_failure(&result, None, true);
    assert_eq!(result.detail.error.as_deref(), Some("connection refused"));
    assert_no_secret(&result);
    assert_eq!(logged.lines(), []);
}

#[tokio::test]
async fn connection_closed_without_a_response_is_retryable_and_does_not_show_the_url() {
    let server = Server::start(vec![Reply::Close]).await;
    let (result, _) = run(attempt(secret_request(server.addr, "http"))).await;
    assert_failure(&result, None, true);
    let error = result.detail.error.as_deref().expect("a reason");
    assert!(!error.is_empty());
    assert_no_secret(&result);
}

#[tokio::test]
async fn tls_failure_is_retryable_and_does_not_show_the_url() {
    // A plain-text server answering a TLS handshake with HTTP.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let (result, _) = run(attempt(secret_request(addr, "https"))).await;
    assert_failure(&result, None, true);
    let error = result.detail.error.as_deref().expect("a reason");
    assert!(error.starts_with("TLS error"), "{error}");
    assert_no_secret(&result);
}

#[tokio::test]
async fn an_invalid_header_fails_at_once_without_sending() {
    let mut server = Server::start(vec![]).await;
    let mut http = request(&server.url("/"));
    http.headers = vec![("Bad Name".into(), "secret-value".into())];
    let (result, _) = run(attempt(http)).await;
    assert_failure(&result, None, false);
    let error = result.detail.error.as_deref().expect("a reason");
    assert!(
        error.contains("Bad Name") && !error.contains("secret-value"),
        "{error}"
    );
    assert!(server.drain().is_empty());
    assert_eq!(server.connections(), 0);
}

// ---------------------------------------------------------------------------------
// What goes on the wire

#[tokio::test]
async fn method_headers_body_and_chime_headers_arrive() {
    let mut server = Server::start(vec![Reply::status(204)]).await;
    let http = HttpRequest {
        method: "POST".into(),
        headers: vec![
            ("Authorization".into(), "Bearer t0ken".into()),
            ("Content-Type".into(), "application/json".into()),
            ("X-Tag".into(), "one".into()),
            ("X-Tag".into(), "two".into()),
            // chime's own headers cannot be overridden by a job.
            ("X-Chime-Attempt".into(), "99".into()),
        ],
        body: Some(r#"{"ok": true}"#.into()),
        ..request(&server.url("/ping?x=1"))
    };
    let (result, _) = run(attempt(http)).await;
    assert_success(&result, 204);

    let got = server.next_request().await;
    assert_eq!(got.method, "POST");
    assert_eq!(got.target, "/ping?x=1");
    assert_eq!(got.body, br#"{"ok": true}"#);
    assert_eq!(got.header("authorization"), Some("Bearer t0ken"));
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.headers_named("x-tag"), ["one", "two"]);
    assert_eq!(got.header("x-chime-job"), Some("ping"));
    assert_eq!(got.header("x-chime-run-id"), Some("run-42"));
    assert_eq!(
        got.header("x-chime-scheduled-at"),
        Some("2026-03-29T01:02:03.004Z")
    );
    assert_eq!(got.headers_named("x-chime-attempt"), ["2"]);
    let agent = got.header("user-agent").expect("a user agent");
    assert_eq!(agent, format!("chime/{}", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn get_without_body_sends_no_body() {
    let mut server = Server::start(vec![Reply::status(200)]).await;
    let (result, _) = run(attempt(request(&server.url("/")))).await;
    assert_success(&result, 200);
    let got = server.next_request().await;
    assert_eq!(got.method, "GET");
    assert!(got.body.is_empty());
    assert_eq!(got.header("content-length"), None);
}

// ---------------------------------------------------------------------------------
// Deadline and cancel

#[tokio::test]
async fn a_server_that_never_answers_times_out_at_the_deadline() {
    let server = Server::start(vec![Reply::Hang]).await;
    let mut attempt = attempt(request(&server.url("/slow")));
    let started = Instant::now();
    attempt.deadline = Some(started + Duration::from_millis(300));
    let (result, logged) = run(attempt).await;
    let took = started.elapsed();

    assert_eq!(result.outcome, Outcome::Timeout, "{result:?}");
    assert!(result.retryable);
    assert_eq!(result.detail.http_status, None);
    assert!(took >= Duration::from_millis(300), "ended early: {took:?}");
    assert!(took < Duration::from_secs(3), "ended late: {took:?}");
    assert_eq!(logged.lines(), []);
}

#[tokio::test]
async fn cancel_ends_the_attempt_as_cancelled() {
    let mut server = Server::start(vec![Reply::Hang]).await;
    let attempt = attempt(request(&server.url("/slow")));
    let cancel = attempt.cancel.clone();
    let executor = HttpExecutor::new().expect("client builds");
    let logged = Logged::new();
    let sink = Arc::clone(&logged.sink);
    let running = tokio::spawn(async move { executor.execute(attempt, sink).await });

    // Cancel only once the request is in flight.
    server.next_request().await;
    cancel.cancel();
    let result = within("the cancelled attempt", running)
        .await
        .expect("attempt task");
    assert_eq!(result.outcome, Outcome::Cancelled, "{result:?}");
    assert!(!result.retryable);
}

#[tokio::test]
async fn an_already_cancelled_attempt_sends_nothing() {
    let mut server = Server::start(vec![Reply::status(200)]).await;
    let attempt = attempt(request(&server.url("/")));
    attempt.cancel.cancel();
    let (result, _) = run(attempt).await;
    assert_eq!(result.outcome, Outcome::Cancelled);
    assert!(server.drain().is_empty());
}

// ---------------------------------------------------------------------------------
// Connection reuse

#[tokio::test]
async fn attempts_through_one_executor_share_one_connection() {
    let mut server = Server::start(vec![
        Reply::body(200, "first"),
        Reply::body(404, "gone"),
        Reply::status(204),
    ])
    .await;
    let executor = HttpExecutor::new().expect("client builds");
    let logged = Logged::new();
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let result = within(
            "an attempt",
            executor.execute(attempt(request(&server.url("/"))), Arc::clone(&logged.sink)),
        )
        .await;
        outcomes.push((result.outcome, result.detail.http_status));
    }
    assert_eq!(
        outcomes,
        [
            (Outcome::Success, Some(200)),
            (Outcome::Failure, Some(404)),
            (Outcome::Success, Some(204)),
        ]
    );
    let connections: Vec<_> = server.drain().iter().map(|r| r.connection).collect();
    assert_eq!(connections, [1, 1, 1]);
    assert_eq!(server.connections(), 1);
}
