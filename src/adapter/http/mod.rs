//! HTTP `/v1`: the third protocol, served on the web port beside WebSocket
//! (`transport/ws.rs` hands every `/v1` request here).
//!
//! - `mod.rs` (this file): routing, login (HTTP Basic), CORS, per-client limits;
//! - `names.rs`: paths and query strings ⇄ core names;
//! - `message.rs`: query/headers ⇄ message properties, messages as JSON;
//! - `publish.rs`: `POST /v1/topics/{topic}`, `POST /v1/publish` (NDJSON);
//! - `pull.rs`: `POST /v1/queues/{q}/pull|ack|nack|extend` (leases in `core/queue`);
//! - `events.rs`: `GET /v1/events` (server-sent events); `resume.rs`: from a stream;
//! - `request.rs`: `POST /v1/request/{topic}` (request/reply);
//! - `openapi.json`: `GET /v1/openapi.json`;
//! - `reply.rs`: errors → responses, in one place.
//!
//! Who: HTTP Basic with the password file's users, or anonymous where the
//! listener allows it (loopback only by default); a login is verified once per
//! connection (keep-alive requests reuse it). Every request's client id is
//! `http:<peer address>`, and the ACL checks it as it checks MQTT and STOMP
//! clients. Per-client limits (a client is its user, or its address when
//! anonymous): `limits.max_publish_rate` and `limits.http_max_open_streams`.

mod events;
mod message;
mod names;
mod publish;
mod pull;
pub mod reply;
mod request;
mod resume;
mod selector;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, AUTHORIZATION, CONTENT_LENGTH, ORIGIN, VARY,
};
use hyper::{Method, Request, Response, StatusCode};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::log_limit::LogLimit;
use super::rate::RateLimit;
use super::{Context, Peer};
use crate::admin::Protocol;
use crate::auth::{Action, Principal};
use crate::core::router::Router;
use reply::{Body, HttpError};

/// Where every `/v1` path starts.
pub const PREFIX: &str = "/v1";

/// Whether a request path belongs to this adapter.
pub fn handles(path: &str) -> bool {
    path == PREFIX || path.starts_with("/v1/")
}

/// What the HTTP adapter keeps across connections: per-client limits.
#[derive(Debug, Default)]
pub struct HttpState {
    /// Open server-sent event streams and long polls, by client.
    open: Mutex<HashMap<Arc<str>, usize>>,
    /// Publish rate buckets, by client (only when `limits.max_publish_rate` is set).
    rates: Mutex<HashMap<Arc<str>, RateLimit>>,
}

/// Rate buckets kept at most; past it, buckets with no debt are forgotten.
const MAX_RATE_BUCKETS: usize = 65_536;

/// A slot among a client's open streams; freed when dropped.
#[derive(Debug)]
pub(crate) struct OpenSlot {
    state: Arc<HttpState>,
    client: Arc<str>,
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        let mut open = self.state.open.lock();
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// One connection's state: its verified login and its log limit.
#[derive(Debug, Default)]
pub struct Connection {
    /// The `Authorization` value verified last, with whom it proved.
    login: Mutex<Option<(HeaderValue, Principal)>>,
    log: Mutex<LogLimit>,
}

/// Who sent a request, once logged in.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub principal: Principal,
    /// `http:<peer address>`: the client id the ACL and the logs see.
    pub client_id: Arc<str>,
    /// Whom per-client limits count: the user, or the address when anonymous.
    pub key: Arc<str>,
}

impl Caller {
    pub fn username(&self) -> Option<&str> {
        self.principal.username.as_deref()
    }
}

/// Everything a handler needs.
pub(crate) struct Call<'a> {
    pub ctx: &'a Context,
    pub conn: &'a Connection,
    pub caller: Caller,
}

impl Call<'_> {
    /// A fresh core session of the caller's for one request (an event stream,
    /// a request waiting for its reply): clean start, never stored, its id
    /// `<client id>-<kind>-<random>`.
    pub(super) fn private_session(
        &self,
        kind: &str,
    ) -> Result<crate::core::router::Attached, HttpError> {
        let client_id: Arc<str> = Arc::from(format!(
            "{}-{kind}-{:016x}",
            self.caller.client_id,
            rand::random::<u64>()
        ));
        let owner = crate::core::session::SessionOwner::of(self.caller.principal.username.as_ref());
        self.ctx
            .router
            .attach(&client_id, &owner, true, 0)
            .map_err(|e| HttpError::Unavailable(e.to_string()))
    }

    /// The ACL decision for `action` on `target` (a topic, filter or `$queue/…`);
    /// 403 naming it when refused (logged within the connection's limit).
    pub fn check(&self, action: Action, target: &str) -> Result<(), HttpError> {
        let allowed = self.ctx.allowed(
            self.caller.username(),
            &self.caller.client_id,
            action,
            target,
            &mut self.conn.log.lock(),
        );
        if allowed {
            return Ok(());
        }
        Err(HttpError::Forbidden {
            action: match action {
                Action::Publish => "publish to",
                Action::Subscribe => "subscribe to",
            },
            target: names::shorten(target),
        })
    }

    /// Counts one published message against the client's rate; 429 with
    /// `Retry-After` when over it (`limits.max_publish_rate`).
    pub fn take_rate(&self) -> Result<(), HttpError> {
        let per_sec = self.ctx.limits().max_publish_rate;
        if per_sec == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut rates = self.ctx.http.rates.lock();
        if rates.len() >= MAX_RATE_BUCKETS && !rates.contains_key(&self.caller.key) {
            rates.retain(|_, bucket| bucket.debt(now).is_some());
        }
        let bucket = match rates.entry(Arc::clone(&self.caller.key)) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => match RateLimit::new(per_sec) {
                Some(bucket) => entry.insert(bucket),
                None => return Ok(()),
            },
        };
        if bucket.take(now) {
            return Ok(());
        }
        let debt = bucket.debt(now).unwrap_or(Duration::from_secs(1));
        Err(HttpError::TooMany {
            reason: format!(
                "over the publish rate of {per_sec} messages a second (limits.max_publish_rate)"
            ),
            retry_after: Some(debt.as_secs() + u64::from(debt.subsec_nanos() > 0)),
        })
    }

    /// A slot among the client's open streams and long polls; 429 when it has
    /// `limits.http_max_open_streams` already.
    pub fn open_slot(&self) -> Result<OpenSlot, HttpError> {
        let max = self.ctx.limits().http_max_open_streams;
        let mut open = self.ctx.http.open.lock();
        let count = open.entry(Arc::clone(&self.caller.key)).or_insert(0);
        if *count >= max {
            return Err(HttpError::TooMany {
                reason: format!(
                    "{max} event streams or long polls already open (limits.http_max_open_streams)"
                ),
                retry_after: None,
            });
        }
        *count += 1;
        Ok(OpenSlot {
            state: Arc::clone(&self.ctx.http),
            client: Arc::clone(&self.caller.key),
        })
    }

    /// The request body, at most `limits.http_max_body_size` bytes (413 beyond).
    pub async fn body(&self, req: Request<Incoming>) -> Result<Bytes, HttpError> {
        let limit = self.ctx.limits().http_max_body_size;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(HttpError::TooLarge { limit });
        }
        match http_body_util::Limited::new(req.into_body(), limit)
            .collect()
            .await
        {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                Err(HttpError::TooLarge { limit })
            }
            Err(e) => Err(HttpError::bad(format!("cannot read the request body: {e}"))),
        }
    }

    pub fn metrics(&self) -> &crate::admin::metrics::Traffic {
        self.ctx.monitor.metrics.traffic(Protocol::Http)
    }
}

/// Answers one `/v1` request.
pub async fn handle(
    req: Request<Incoming>,
    peer: &Peer,
    ctx: &Context,
    conn: &Connection,
) -> Response<Body> {
    let origin = req.headers().get(ORIGIN).cloned();
    if let Some(origin) = &origin {
        let text = origin.to_str().unwrap_or("");
        if !ctx.settings.websocket.origin_allowed(text) {
            return HttpError::Forbidden {
                action: "call from origin",
                target: format!("{text:?} (websocket.allowed_origins)"),
            }
            .into_response();
        }
        if req.method() == Method::OPTIONS {
            return preflight(&req, origin.clone());
        }
    }
    let mut response = match route(req, peer, ctx, conn).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(VARY, HeaderValue::from_static("Origin"));
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(
                "Retry-After, WWW-Authenticate, Tern-Topic, Tern-Correlation-Id",
            ),
        );
    }
    response
}

/// The answer to a CORS preflight from an allowed origin.
fn preflight(req: &Request<Incoming>, origin: HeaderValue) -> Response<Body> {
    let mut response = Response::new(reply::full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(VARY, HeaderValue::from_static("Origin"));
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    let asked = req
        .headers()
        .get(ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("Authorization, Content-Type"));
    headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, asked);
    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}

async fn route(
    req: Request<Incoming>,
    peer: &Peer,
    ctx: &Context,
    conn: &Connection,
) -> Result<Response<Body>, HttpError> {
    let path = req.uri().path().to_string();
    let rest = path.strip_prefix("/v1/").unwrap_or("");
    if rest == "openapi.json" {
        return only(&req, &Method::GET, "GET").map(|()| openapi());
    }
    let endpoint = Endpoint::of(rest).ok_or_else(|| {
        HttpError::NotFound(format!(
            "no endpoint at {} (see /v1/openapi.json)",
            names::shorten(&path)
        ))
    })?;
    let (method, allow) = endpoint.method();
    only(&req, &method, allow)?;
    let caller = login(&req, peer, ctx, conn).await?;
    let call = Call { ctx, conn, caller };
    match endpoint {
        Endpoint::Publish(topic) => publish::one(&call, &topic, req).await,
        Endpoint::Batch => publish::batch(&call, req).await,
        Endpoint::Queue(queue, op) => pull::handle(&call, &queue, op, req).await,
        Endpoint::Events => events::open(&call, &req),
        Endpoint::Request(topic) => request::handle(&call, &topic, req).await,
    }
}

/// 405 unless the request uses `method`.
fn only(req: &Request<Incoming>, method: &Method, allow: &'static str) -> Result<(), HttpError> {
    if req.method() == method {
        Ok(())
    } else {
        Err(HttpError::MethodNotAllowed(allow))
    }
}

/// The endpoints, by path (the part after `/v1/`).
enum Endpoint {
    /// The raw (percent-encoded) rest of the path after `topics/`.
    Publish(String),
    Batch,
    Queue(String, pull::QueueOp),
    Events,
    Request(String),
}

impl Endpoint {
    fn of(rest: &str) -> Option<Endpoint> {
        if let Some(topic) = rest.strip_prefix("topics/") {
            return Some(Endpoint::Publish(topic.to_string()));
        }
        if let Some(topic) = rest.strip_prefix("request/") {
            return Some(Endpoint::Request(topic.to_string()));
        }
        match rest {
            "publish" => return Some(Endpoint::Batch),
            "events" => return Some(Endpoint::Events),
            _ => {}
        }
        let (queue, op) = rest.strip_prefix("queues/")?.split_once('/')?;
        Some(Endpoint::Queue(queue.to_string(), pull::QueueOp::of(op)?))
    }

    fn method(&self) -> (Method, &'static str) {
        match self {
            Endpoint::Events => (Method::GET, "GET"),
            _ => (Method::POST, "POST"),
        }
    }
}

/// Decides who sent the request: HTTP Basic, or anonymous where allowed.
async fn login(
    req: &Request<Incoming>,
    peer: &Peer,
    ctx: &Context,
    conn: &Connection,
) -> Result<Caller, HttpError> {
    let authorization = req.headers().get(AUTHORIZATION).cloned();
    let cached = {
        let login = conn.login.lock();
        login
            .as_ref()
            .filter(|(value, _)| Some(value) == authorization.as_ref())
            .map(|(_, principal)| principal.clone())
    };
    let principal = match cached {
        Some(principal) => principal,
        None => {
            let (username, password) = match &authorization {
                None => (None, None),
                Some(value) => basic(value)?,
            };
            let principal = ctx
                .auth
                .authenticate_async(peer.login(username, password))
                .await
                .map_err(|e| match e {
                    crate::auth::AuthError::BadCredentials => HttpError::BadCredentials,
                    crate::auth::AuthError::NotAuthorized => HttpError::Unauthorized,
                })?;
            if let Some(value) = authorization {
                *conn.login.lock() = Some((value, principal.clone()));
            }
            principal
        }
    };
    let key: Arc<str> = match &principal.username {
        Some(user) => Arc::from(format!("user:{user}")),
        None => Arc::from(format!("addr:{}", peer.addr.ip())),
    };
    Ok(Caller {
        principal,
        client_id: Arc::from(format!("http:{}", peer.addr)),
        key,
    })
}

/// The username and password of an HTTP Basic `Authorization` value.
fn basic(value: &HeaderValue) -> Result<(Option<String>, Option<Vec<u8>>), HttpError> {
    let text = value.to_str().map_err(|_| HttpError::BadCredentials)?;
    let (scheme, encoded) = text
        .trim()
        .split_once(' ')
        .ok_or(HttpError::BadCredentials)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(HttpError::BadCredentials);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| HttpError::BadCredentials)?;
    let decoded = String::from_utf8(decoded).map_err(|_| HttpError::BadCredentials)?;
    let (user, password) = decoded.split_once(':').ok_or(HttpError::BadCredentials)?;
    Ok((Some(user.to_string()), Some(password.as_bytes().to_vec())))
}

/// `GET /v1/openapi.json`: this API described in OpenAPI 3.1.
fn openapi() -> Response<Body> {
    let mut response = Response::new(reply::full(Bytes::from_static(include_bytes!(
        "openapi.json"
    ))));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Puts back the messages of expired pull leases, a few times a second, until shutdown.
pub async fn expire_leases(router: Arc<Router>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                router.queues().expire_leases(Instant::now());
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_decoded() {
        let value = HeaderValue::from_static("Basic YWxpY2U6czNjcjN0");
        let (user, password) = basic(&value).unwrap();
        assert_eq!(user.as_deref(), Some("alice"));
        assert_eq!(password.as_deref(), Some(&b"s3cr3t"[..]));
        assert!(basic(&HeaderValue::from_static("Bearer x")).is_err());
        assert!(basic(&HeaderValue::from_static("Basic !!")).is_err());
    }

    #[test]
    fn paths_pick_endpoints() {
        assert!(matches!(Endpoint::of("topics/a/b"), Some(Endpoint::Publish(t)) if t == "a/b"));
        assert!(matches!(Endpoint::of("publish"), Some(Endpoint::Batch)));
        assert!(matches!(Endpoint::of("events"), Some(Endpoint::Events)));
        assert!(matches!(Endpoint::of("queues/q/pull"), Some(Endpoint::Queue(q, _)) if q == "q"));
        assert!(Endpoint::of("queues/q/nope").is_none());
        assert!(Endpoint::of("queues/q").is_none());
        assert!(Endpoint::of("nothing").is_none());
        assert!(handles("/v1/x") && handles("/v1") && !handles("/v10") && !handles("/mqtt"));
    }
}
