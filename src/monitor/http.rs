//! `--listen ADDR`: a small HTTP/1 server (hyper) on the service's runtime.
//! `GET /metrics`: the Prometheus text; `GET /health`: 200 while both loops beat (the
//! rule the systemd watchdog follows, [`crate::health`]), 503 naming the stale loop.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::Monitor;
use crate::health::Health;

/// Why `--listen` cannot be served.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr} (--listen / CHIME_LISTEN): {source}; pick a free address and port, e.g. --listen 127.0.0.1:9746, or leave the flag out"
)]
pub struct ListenError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr` at once, so a port in use is an error at start.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ListenError> {
    let fail = |source| ListenError { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(fail)?;
    listener.set_nonblocking(true).map_err(fail)?;
    Ok(listener)
}

/// Serves requests until the task is dropped or aborted.
pub async fn serve(listener: std::net::TcpListener, monitor: Monitor, health: Health) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(error = %err, "the --listen socket cannot be used");
            return;
        }
    };
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors, say: the next accept may work.
                tracing::warn!(error = %err, "accepting a monitoring connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let monitor = monitor.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let monitor = monitor.clone();
                let health = health.clone();
                async move { Ok::<_, Infallible>(answer(request, &monitor, &health).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

const PLAIN: &str = "text/plain; charset=utf-8";

async fn answer(
    request: Request<Incoming>,
    monitor: &Monitor,
    health: &Health,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "only GET\n".into());
    }
    match request.uri().path() {
        "/metrics" => match monitor.scrape().await {
            Some(body) => text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            ),
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                "metrics are not kept\n".into(),
            ),
        },
        "/health" => health_answer(health),
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found; try /metrics or /health\n".into(),
        ),
    }
}

fn health_answer(health: &Health) -> Response<Full<Bytes>> {
    if let Some(failure) = health.failure() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            PLAIN,
            format!("failed: {failure}\n"),
        );
    }
    match health.stale() {
        None => text(StatusCode::OK, PLAIN, "ok\n".into()),
        Some(stale) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            PLAIN,
            format!(
                "stale: the {} loop last beat {:.1} s ago\n",
                stale.as_str(),
                health.age(stale).as_secs_f64()
            ),
        ),
    }
}
