//! The operations HTTP listener (hyper, HTTP/1.1): `/metrics` (Prometheus text),
//! `/healthz`, the admin API under `/api/` ([`super::api`]), the web dashboard
//! at `/` and `/dashboard` ([`super::dashboard`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Monitor;
use crate::config::Settings;
use crate::core::router::Router;

/// A response with its whole body.
pub type HttpResponse = Response<Full<Bytes>>;

/// A JSON 200.
pub(super) fn json_ok(value: serde_json::Value) -> HttpResponse {
    respond(StatusCode::OK, "application/json", value.to_string())
}

/// A JSON error: `{"error": message}`.
pub(super) fn error(status: StatusCode, message: &str) -> HttpResponse {
    respond(
        status,
        "application/json",
        serde_json::json!({ "error": message }).to_string(),
    )
}

/// A request's whole body, at most `max` bytes.
pub(super) async fn read_body(request: Request<Incoming>, max: usize) -> Result<Vec<u8>, String> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(request.into_body(), max);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) => Err(format!("cannot read the body (at most {max} bytes): {e}")),
    }
}

/// What the handlers read.
#[derive(Debug)]
pub struct HttpState {
    pub monitor: Arc<Monitor>,
    pub router: Arc<Router>,
    pub settings: Arc<Settings>,
    /// Cancelled at shutdown: `/healthz` turns 503, connections close.
    pub shutdown: CancellationToken,
}

/// How long a client has to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the listener (a taken port is a start-up error, like the broker's other listeners).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    crate::transport::tcp::bind("http", addr).await
}

/// Serves HTTP on `listener` until shutdown; connections are tracked by `tracker`.
pub async fn run(listener: TcpListener, state: Arc<HttpState>, tracker: TaskTracker) {
    let shutdown = state.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::error!(listener = "http", error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(request, &state).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
                }
            }
        });
    }
}

async fn route(request: Request<Incoming>, state: &HttpState) -> HttpResponse {
    let path = request.uri().path().to_string();
    match (request.method(), path.as_str()) {
        (&Method::GET, "/metrics") => {
            let cluster = state.monitor.cluster().map(|c| &**c);
            let bridges = state.monitor.bridges();
            let body = state
                .monitor
                .metrics
                .render(&state.router, cluster, &bridges);
            respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            )
        }
        (&Method::GET, "/healthz") => healthz(state),
        (_, p) if p == "/api" || p.starts_with("/api/") => super::api::handle(request, state).await,
        (&Method::GET, p) => {
            super::dashboard::serve(p).unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found\n"))
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// 200 while every listener's accept loop runs and the store commits; 503
/// otherwise. Cluster mode: 200 `degraded: ...` while the NATS connection is down.
fn healthz(state: &HttpState) -> HttpResponse {
    if state.shutdown.is_cancelled() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    if state.monitor.listeners_down() > 0 {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "a listener stopped accepting\n",
        );
    }
    if state
        .router
        .store_status()
        .is_some_and(|store| !store.healthy)
    {
        return text(StatusCode::SERVICE_UNAVAILABLE, "store failing\n");
    }
    if let Some(body) = state
        .monitor
        .cluster()
        .and_then(|c| super::cluster::degraded(c))
    {
        return text(StatusCode::OK, body);
    }
    text(StatusCode::OK, "ok\n")
}

pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> HttpResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub fn text(status: StatusCode, body: &'static str) -> HttpResponse {
    respond(status, "text/plain; charset=utf-8", body)
}
