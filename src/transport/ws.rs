//! The WebSocket listener: one port for MQTT and STOMP over WebSocket, and for
//! the static files of `web.root` over plain HTTP.
//!
//! Each TCP connection is served as HTTP/1.1 (hyper) until a request upgrades
//! it. The upgrade is checked here, before the `101 Switching Protocols`:
//!
//! - `Origin`, when the client sends one (browsers do), must be allowed by
//!   `websocket.allowed_origins` (403 otherwise);
//! - `Sec-WebSocket-Protocol` picks the protocol: the first offer Tern knows
//!   (`mqtt`, `mqttv3.1` → MQTT; `v10.stomp`, `v11.stomp`, `v12.stomp` → STOMP),
//!   echoed in the response; offers but none known: 400;
//! - no offer: the path picks (`/mqtt`, `/stomp`); any other path: 404;
//! - a WebSocket version other than 13: 426 with `Sec-WebSocket-Version: 13`.
//!
//! The upgraded connection becomes a [`WsStream`] served by the same adapter as
//! TCP, in the same task (so it keeps its place under the connection cap).
//! A plain GET of `/mqtt` or `/stomp` is answered 426 Upgrade Required; other
//! GET and HEAD requests are files below `web.root` (hyper-staticfile: no path
//! leaves the root, content type by extension; `web_root`: nor does a symlink)
//! or 404. Requests under `/v1` are the HTTP adapter's (`adapter/http`).

use std::convert::Infallible;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ORIGIN, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_tungstenite::tungstenite::error::ProtocolError;
use hyper_tungstenite::HyperWebsocket;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use super::web_root::{self, ConfinedOpener};
use super::ws_stream::{Carried, WsStream};
use crate::adapter::{self, Context, Peer};
use crate::config::WebSocketSettings;

/// Subprotocols Tern accepts, with what each carries.
pub const SUBPROTOCOLS: [(&str, Carried); 5] = [
    ("mqtt", Carried::Mqtt),
    ("mqttv3.1", Carried::Mqtt),
    ("v12.stomp", Carried::Stomp),
    ("v11.stomp", Carried::Stomp),
    ("v10.stomp", Carried::Stomp),
];

/// tungstenite's read buffer (its default is 128 KiB, all of it touched by the
/// first read: ~133 KB per idle connection). A frame larger than this still
/// fits (the buffer grows to the frame's length); reads take at most this much
/// per call, so small frames are still parsed many per read.
const WS_READ_BUFFER: usize = 4 * 1024;

/// How long the server waits for the client's Close after sending its own.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

type Body = BoxBody<Bytes, io::Error>;

/// An accepted upgrade, waiting for hyper to hand over the connection.
type Upgrade = Arc<Mutex<Option<(HyperWebsocket, Carried)>>>;

/// Serves one connection of the WebSocket port: HTTP until an upgrade, then
/// MQTT or STOMP over the WebSocket until the end.
/// Generic over the stream so a TLS stream (WSS) can be served the same way.
pub async fn serve<S>(stream: S, mut peer: Peer, ctx: Context)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Boxed: hyper's connection state is large and over once the client has
    // upgraded, so an idle WebSocket's task does not carry it.
    let Some((websocket, carried)) = Box::pin(serve_http(stream, &peer, &ctx)).await else {
        return;
    };
    let websocket = match websocket.await {
        Ok(websocket) => websocket,
        Err(e) => {
            tracing::debug!(peer = %peer.addr, error = %e, "WebSocket upgrade failed");
            return;
        }
    };
    let mut stream = WsStream::new(websocket, carried, ctx.shutdown.clone());
    peer.listener = match carried {
        Carried::Mqtt => "ws-mqtt",
        Carried::Stomp => "ws-stomp",
    };
    let (addr, listener) = (peer.addr, peer.listener);
    match carried {
        Carried::Mqtt => adapter::mqtt::serve(&mut stream, peer, ctx).await,
        Carried::Stomp => adapter::stomp::serve(&mut stream, peer, ctx).await,
    }
    // The adapter has usually sent our Close already (not when it gave up before
    // CONNECT); a clean close then waits for the client's.
    let ended = tokio::time::timeout(CLOSE_LINGER, async {
        let _ = stream.shutdown().await;
        loop {
            match stream.get_mut().next().await {
                Some(Ok(Message::Close(_))) => stream.note_close_received(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Some(e),
                None => return None,
            }
        }
    })
    .await;
    log_unclean_close(&stream, addr, listener, ended);
}

/// Logs a WebSocket that ended without the closing handshake (a client gone
/// half-open, or reset): once per connection, so an operator can tell a
/// vanished browser from one that said goodbye.
fn log_unclean_close<T>(
    stream: &WsStream<T>,
    addr: std::net::SocketAddr,
    listener: &'static str,
    ended: Result<Option<tungstenite::Error>, tokio::time::error::Elapsed>,
) {
    if stream.close_received() {
        return;
    }
    match ended {
        Err(_) => tracing::info!(
            peer = %addr,
            listener,
            "WebSocket half-open: the client sent no Close and did not answer ours; dropped"
        ),
        Ok(error) => tracing::info!(
            peer = %addr,
            listener,
            error = error.map(|e| e.to_string()).unwrap_or_default(),
            "WebSocket half-open close: the client went away without a Close"
        ),
    }
}

/// Serves HTTP on the connection until it ends or a request upgrades it;
/// returns the accepted upgrade, if any.
async fn serve_http<S>(stream: S, peer: &Peer, ctx: &Context) -> Option<(HyperWebsocket, Carried)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upgrade: Upgrade = Arc::new(Mutex::new(None));
    let service = {
        let upgrade = Arc::clone(&upgrade);
        let (ctx, peer) = (ctx.clone(), peer.clone());
        let conn = Arc::new(adapter::http::Connection::default());
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let upgrade = Arc::clone(&upgrade);
            let (ctx, peer, conn) = (ctx.clone(), peer.clone(), Arc::clone(&conn));
            async move {
                if adapter::http::handles(req.uri().path()) {
                    return Ok::<_, Infallible>(
                        adapter::http::handle(req, &peer, &ctx, &conn).await,
                    );
                }
                let settings = &ctx.settings;
                Ok::<_, Infallible>(
                    route(
                        req,
                        &settings.websocket,
                        settings.web.root.as_deref(),
                        &upgrade,
                    )
                    .await,
                )
            }
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(ctx.limits().connect_timeout_secs));
    let conn = http
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        _ = ctx.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(peer = %peer.addr, error = %e, "HTTP connection ended");
    }
    let upgraded = upgrade.lock().take();
    upgraded
}

/// Answers one HTTP request: an upgrade, a refusal, or a file.
async fn route(
    mut req: Request<Incoming>,
    settings: &WebSocketSettings,
    web_root: Option<&Path>,
    upgrade: &Upgrade,
) -> Response<Body> {
    let path = req.uri().path();
    let ws_path = path == "/mqtt" || path == "/stomp";
    if !hyper_tungstenite::is_upgrade_request(&req) {
        if ws_path {
            let mut response = text(
                StatusCode::UPGRADE_REQUIRED,
                "this is a WebSocket endpoint: connect with a WebSocket client\n",
            );
            response
                .headers_mut()
                .insert(UPGRADE, HeaderValue::from_static("websocket"));
            return response;
        }
        return match (web_root, req.method()) {
            (Some(root), &Method::GET | &Method::HEAD) => static_file(req, root).await,
            (Some(_), _) => text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n"),
            (None, _) => text(
                StatusCode::NOT_FOUND,
                "not found (no web.root is configured; WebSocket clients use /mqtt or /stomp)\n",
            ),
        };
    }
    if req.method() != Method::GET {
        return text(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade must be a GET\n",
        );
    }
    if let Some(origin) = req.headers().get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !settings.origin_allowed(origin) {
            tracing::info!(origin, "WebSocket refused: origin not allowed");
            return text(
                StatusCode::FORBIDDEN,
                &format!("origin {origin:?} is not allowed (websocket.allowed_origins)\n"),
            );
        }
    }
    let (carried, chosen) = match choose(&req) {
        Ok(choice) => choice,
        Err(response) => return response,
    };
    match hyper_tungstenite::upgrade(&mut req, Some(websocket_config(settings))) {
        Ok((response, websocket)) => {
            *upgrade.lock() = Some((websocket, carried));
            let (mut parts, body) = response.into_parts();
            if let Some(protocol) = chosen {
                parts
                    .headers
                    .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
            }
            Response::from_parts(parts, full(body))
        }
        Err(ProtocolError::MissingSecWebSocketVersionHeader) => {
            let mut response = text(
                StatusCode::UPGRADE_REQUIRED,
                "unsupported WebSocket version: this server speaks version 13\n",
            );
            response
                .headers_mut()
                .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            response
        }
        Err(e) => text(
            StatusCode::BAD_REQUEST,
            &format!("bad WebSocket upgrade: {e}\n"),
        ),
    }
}

/// The WebSocket's buffers: small while idle (see [`WS_READ_BUFFER`]).
fn websocket_config(settings: &WebSocketSettings) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        // Each flush of the adapter is one message, written at once: no second
        // buffer that would keep a busy connection's largest batch.
        .write_buffer_size(0)
        .max_message_size(Some(settings.max_message_size))
        .max_frame_size(Some(settings.max_message_size))
}

/// What the upgrade carries: by the first subprotocol offered that Tern knows
/// (returned to be echoed), else by the path when none is offered.
#[allow(clippy::result_large_err)]
fn choose(req: &Request<Incoming>) -> Result<(Carried, Option<&'static str>), Response<Body>> {
    let offered: Vec<&str> = req
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .collect();
    if offered.is_empty() {
        return match req.uri().path() {
            "/mqtt" => Ok((Carried::Mqtt, None)),
            "/stomp" => Ok((Carried::Stomp, None)),
            path => Err(text(
                StatusCode::NOT_FOUND,
                &format!(
                    "no WebSocket endpoint at {path}: offer a subprotocol ({}) or use /mqtt or /stomp\n",
                    known_subprotocols()
                ),
            )),
        };
    }
    let chosen = offered
        .iter()
        .find_map(|name| SUBPROTOCOLS.iter().find(|(known, _)| known == name));
    match chosen {
        Some((name, carried)) => Ok((*carried, Some(*name))),
        None => Err(text(
            StatusCode::BAD_REQUEST,
            &format!(
                "no supported WebSocket subprotocol in {:?}: this server speaks {}\n",
                offered.join(", "),
                known_subprotocols()
            ),
        )),
    }
}

fn known_subprotocols() -> String {
    SUBPROTOCOLS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A file below `root` (hyper-staticfile: `..` cannot leave it; `index.html` for
/// directories; [`ConfinedOpener`]: nor can a symlink).
async fn static_file(req: Request<Incoming>, root: &Path) -> Response<Body> {
    let files = hyper_staticfile::Static::with_opener(ConfinedOpener::new(root));
    match files.serve(req).await {
        Ok(response) => response.map(|body| body.boxed()),
        Err(e) if web_root::is_bad_path(&e) => text(StatusCode::BAD_REQUEST, "bad path\n"),
        Err(e) => {
            tracing::warn!(error = %e, root = %root.display(), "cannot serve a file");
            text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n")
        }
    }
}

fn full(body: Full<Bytes>) -> Body {
    body.map_err(|never| match never {}).boxed()
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(full(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::core::router::Router;
    use crate::core::session::{OverflowPolicy, QueueLimits};

    /// What a WebSocket connection's task may weigh (the STOMP adapter's future
    /// and the WebSocket are inside it; measured 1,752 bytes); hyper's HTTP
    /// state is boxed and gone once upgraded.
    const MAX_WS_FUTURE: usize = 1792;

    #[test]
    fn an_idle_websocket_keeps_small_buffers_and_a_small_task() {
        let config = websocket_config(&WebSocketSettings::default());
        assert!(
            config.read_buffer_size <= 4096,
            "tungstenite defaults to 128 KiB"
        );
        assert_eq!(config.write_buffer_size, 0);

        let limits = QueueLimits {
            max_queued: 10,
            max_queued_bytes: 0,
            overflow: OverflowPolicy::DropNew,
            max_queued_age_ms: 0,
        };
        let router = Arc::new(Router::new(limits));
        let ctx = Context::open(router, Arc::new(Settings::ephemeral()), Default::default());
        let peer = Peer {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            listener: "ws",
            anonymous_allowed: true,
            admitted: true,
            cert_username: None,
        };
        let (stream, _) = tokio::io::duplex(64);
        let task = serve(stream, peer, ctx);
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= MAX_WS_FUTURE,
            "WebSocket connection future: {size} bytes"
        );
    }
}
