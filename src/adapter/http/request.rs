//! `POST /v1/request/{topic}?timeout=S`: request/reply over any protocol.
//!
//! The body is published to `{topic}` (options as for a publish) with a fresh
//! response topic `tern/reply/<random>` and correlation data (the client's
//! `correlation-id`, or a fresh one); the first message published to that
//! response topic within `timeout` seconds (default 30, at most
//! `limits.http_max_wait_secs`) is the HTTP response: its payload as the body,
//! its content type as `Content-Type`, its topic as `Tern-Topic`, its
//! correlation data as `Tern-Correlation-Id`, its user properties as
//! `Tern-Property-<name>` headers. No reply in time: 504.
//!
//! The responder (MQTT 5, STOMP `reply-to`, or HTTP) must be allowed to
//! publish to `tern/reply/#`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};

use super::message::{build, options_from, PUBLISH_PARAMS};
use super::names::{topic_from_path, Query};
use super::publish::route;
use super::reply::{full, Body, HttpError};
use super::Call;
use crate::core::message::{Message, QoS};
use crate::core::session::SubscriptionOptions;
use crate::core::topic::Filter;

/// Where replies to HTTP requests go; one fresh level below it per request.
pub const REPLY_PREFIX: &str = "tern/reply/";

const DEFAULT_TIMEOUT_SECS: u64 = 30;

pub(super) async fn handle(
    call: &Call<'_>,
    raw_topic: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let limits = call.ctx.limits();
    let topic = topic_from_path(raw_topic, &limits.topic_limits())?;
    let query = Query::parse(req.uri().query());
    let mut known = PUBLISH_PARAMS.to_vec();
    known.push("timeout");
    query.only(&known, true)?;
    let timeout = query
        .number("timeout", DEFAULT_TIMEOUT_SECS)?
        .clamp(1, limits.http_max_wait_secs);
    let mut options = options_from(&query, req.headers())?;
    let payload = call.body(req).await?;
    let reply_topic = format!("{REPLY_PREFIX}{:032x}", rand::random::<u128>());
    let filter = Filter::parse(&reply_topic)
        .map_err(|e| HttpError::Unavailable(format!("reply topic: {e}")))?;
    options.properties.response_topic = Some(reply_topic.clone());
    if options.properties.correlation_data.is_none() {
        let id = format!("{:016x}", rand::random::<u64>());
        options.properties.correlation_data = Some(Bytes::from(id.into_bytes()));
    }
    let _slot = call.open_slot()?;
    let router = Arc::clone(&call.ctx.router);
    let attached = call.private_session("request")?;
    let session = attached.session;
    // A private, fresh topic: the requester needs no ACL right to hear its reply.
    router.subscribe(
        &session,
        filter,
        SubscriptionOptions {
            qos: QoS::AtMostOnce,
            no_local: false,
            retain_as_published: false,
            retain_handling: 2,
            subscription_id: None,
            exceptions: Default::default(),
            selector: None,
        },
    );
    let message = build(topic, payload, options, &call.caller.client_id);
    let outcome = match route(call, message) {
        Ok(_) => wait_reply(call, &session, Duration::from_secs(timeout)).await,
        Err(e) => Err(e),
    };
    router.detach(&session, attached.connection_id);
    let reply = outcome?;
    call.metrics().sent(reply.qos, reply.payload.len());
    Ok(response_of(&reply))
}

async fn wait_reply(
    call: &Call<'_>,
    session: &crate::core::session::Session,
    timeout: Duration,
) -> Result<Arc<Message>, HttpError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut got = Vec::new();
    loop {
        session.take_pending(1, &mut got);
        if let Some(delivery) = got.pop() {
            return Ok(delivery.message);
        }
        tokio::select! {
            _ = session.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {
                return Err(HttpError::Timeout(format!("no reply within {} s", timeout.as_secs())));
            }
            _ = call.ctx.shutdown.cancelled() => {
                return Err(HttpError::Unavailable("the broker is shutting down".into()));
            }
        }
    }
}

/// The HTTP response carrying a reply message.
fn response_of(reply: &Message) -> Response<Body> {
    let mut response = Response::new(full(reply.payload.clone()));
    let headers = response.headers_mut();
    let props = reply.properties();
    let content_type = props
        .content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
    headers.insert(CONTENT_TYPE, content_type);
    if let Ok(topic) = HeaderValue::from_str(&reply.topic) {
        headers.insert("tern-topic", topic);
    }
    if let Some(id) = props
        .correlation_data
        .as_deref()
        .and_then(|c| HeaderValue::from_bytes(c).ok())
    {
        headers.insert("tern-correlation-id", id);
    }
    for (name, value) in &props.user_properties {
        let name = HeaderName::from_bytes(format!("tern-property-{name}").as_bytes());
        if let (Ok(name), Ok(value)) = (name, HeaderValue::from_str(value)) {
            headers.append(name, value);
        }
    }
    response
}
