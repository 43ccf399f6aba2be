//! The admin API, JSON under `/api/`, behind `Authorization: Bearer <http.admin_token>`.
//! No token configured: every call answers 403 saying how to turn it on.
//!
//! | call | does |
//! |---|---|
//! | `GET /api/stats` | uptime, connections, message totals, core counts, top topics (the dashboard polls it) |
//! | `GET /api/clients` | connected clients: protocol, address, username, since, queue depth |
//! | `GET /api/clients/<id>/subscriptions` | a session's subscriptions (connected or not) |
//! | `DELETE /api/clients/<id>` | disconnects the client (MQTT 5: DISCONNECT 0x98) |
//! | `GET /api/cluster/clients/<id>` | cluster mode: the node holding the client id's session |
//! | `GET /api/queues` | point-to-point queues: ready, unacked, consumers |
//! | `GET /api/retained` | retained messages: topic, QoS, size, payload (UTF-8, lossy) |
//! | `DELETE /api/retained/<topic>` | removes one retained message |
//! | `GET /api/config` | the effective settings, secrets blanked |
//! | `/api/streams…` | durable streams: list, inspect, create, purge (`super::streams`) |
//! | `/api/schemas…` | payload schemas: list, show, add a version, delete (`super::schemas`) |
//!
//! Path segments are percent-decoded (`%24SYS`, `%2F` inside a client id).
//!
//! `top_topics` in `/api/stats` are estimates: one publish in
//! [`top_topics::SAMPLE`] is sampled (see [`super::top_topics`]), over the last
//! 10–20 seconds.

use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use super::http::{error, json_ok, HttpResponse, HttpState};
use super::metrics::CoreSnapshot;
use super::top_topics;
use crate::core::session::KickReason;

pub async fn handle(request: Request<Incoming>, state: &HttpState) -> HttpResponse {
    let Some(token) = state.settings.http.admin_token.as_deref() else {
        return error(
            StatusCode::FORBIDDEN,
            "the admin API is disabled: set http.admin_token in the config (or TERN_HTTP__ADMIN_TOKEN)",
        );
    };
    if !authorized(&request, token) {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token: send Authorization: Bearer <http.admin_token>",
        );
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let path = request.uri().path();
    let rest = path.strip_prefix("/api").unwrap_or("");
    let segments: Vec<String> = rest
        .split('/')
        .skip(1)
        .map(percent_decode)
        .collect::<Option<_>>()
        .unwrap_or_default();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = request.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["stats"]) => json_ok(stats(state)),
        (&Method::GET, ["clients"]) => json_ok(list_clients(state)),
        (&Method::GET, ["clients", id, "subscriptions"]) => subscriptions(state, id),
        (&Method::DELETE, ["clients", id]) | (&Method::POST, ["clients", id, "disconnect"]) => {
            disconnect(state, id)
        }
        (&Method::GET, ["queues"]) => json_ok(list_queues(state)),
        (&Method::GET, ["nodes"]) => match state.monitor.cluster() {
            Some(cluster) => json_ok(super::cluster::nodes_json(cluster)),
            None => json_ok(serde_json::json!({ "node": null, "nodes": [] })),
        },
        (&Method::GET, ["cluster", "clients", id]) => match state.monitor.cluster() {
            Some(cluster) => client_node(cluster, id).await,
            None => error(
                StatusCode::NOT_FOUND,
                "not in cluster mode (cluster.enabled = false)",
            ),
        },
        (&Method::GET, ["bridges"]) => {
            json_ok(super::bridges::bridges_json(&state.monitor.bridges()))
        }
        (&Method::GET, ["retained"]) => json_ok(list_retained(state)),
        (&Method::DELETE, ["retained", topic @ ..]) if !topic.is_empty() => {
            delete_retained(state, &topic.join("/"))
        }
        (_, ["streams", rest @ ..]) => super::streams::handle(&method, rest, request, state).await,
        (_, ["schemas", rest @ ..]) => super::schemas::handle(&method, rest, request, state).await,
        (&Method::GET, ["config"]) => match serde_json::to_value(state.settings.redacted()) {
            Ok(config) => json_ok(config),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            "no such admin call (see README: Operations)",
        ),
    }
}

/// Which node holds `client_id`'s session: 404 when none does.
async fn client_node(
    cluster: &crate::cluster::status::ClusterStatus,
    client_id: &str,
) -> HttpResponse {
    match cluster.owner_of(client_id).await {
        Ok(Some(node)) => json_ok(json!({
            "client_id": client_id,
            "this_node": node == *cluster.node,
            "node": node,
        })),
        Ok(None) => error(StatusCode::NOT_FOUND, "no node holds this client id"),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the cluster's client ids cannot be read: {e}"),
        ),
    }
}

/// Compares the bearer token in constant time (for equal lengths). The scheme
/// name is case-insensitive (RFC 9110 §11.1): `bearer` and `BEARER` are `Bearer`.
fn authorized(request: &Request<Incoming>, token: &str) -> bool {
    let Some(sent) = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
    else {
        return false;
    };
    let (a, b) = (sent.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of an `Authorization` value with the Bearer scheme, in any case.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// How many topics `/api/stats` ranks.
const TOP_TOPICS: usize = 10;

fn stats(state: &HttpState) -> Value {
    let metrics = &state.monitor.metrics;
    let totals = metrics.totals();
    let core = CoreSnapshot::take(metrics, &state.router);
    let (mqtt, stomp) = state.monitor.connected_by_protocol();
    let top: Vec<Value> = metrics
        .top_topics
        .top(TOP_TOPICS, std::time::Instant::now())
        .into_iter()
        .map(|t| json!({ "topic": &*t.topic, "messages": t.messages, "rate": t.rate }))
        .collect();
    let dropped: serde_json::Map<String, Value> = core
        .dropped
        .iter()
        .map(|(reason, count)| ((*reason).to_string(), json!(count)))
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.monitor.uptime().as_secs(),
        "connections": { "total": mqtt + stomp, "mqtt": mqtt, "stomp": stomp },
        "messages": {
            "received": totals.messages_received,
            "sent": totals.messages_sent,
            "bytes_received": totals.bytes_received,
            "bytes_sent": totals.bytes_sent,
            "dropped": dropped,
        },
        "sessions": { "online": core.sessions_online, "offline": core.sessions_offline },
        "subscriptions": core.subscriptions,
        "retained": core.retained,
        "queued": { "sessions": core.queued_sessions, "queues": core.queued_queues },
        "top_topics": top,
        "top_topics_sample": top_topics::SAMPLE,
    })
}

fn list_clients(state: &HttpState) -> Value {
    let clients: Vec<Value> = state
        .monitor
        .clients()
        .into_iter()
        .map(|c| {
            let session = state.router.session(&c.client_id);
            let queued = session.as_ref().map_or(0, |s| s.pending_len());
            let inflight = session.as_ref().map_or(0, |s| s.inflight_len());
            let subscriptions = session.as_ref().map_or(0, |s| s.subscriptions().len());
            json!({
                "client_id": &*c.client_id,
                "protocol": c.protocol.label(),
                "listener": c.listener,
                "address": c.address.to_string(),
                "username": c.username.as_deref(),
                "connected_since": c.connected_since,
                "queue_depth": queued,
                "inflight": inflight,
                "subscriptions": subscriptions,
                // Cluster mode: this node (the clients listed are connected here).
                "node": state.monitor.cluster().map(|c| &*c.node),
            })
        })
        .collect();
    Value::Array(clients)
}

fn subscriptions(state: &HttpState, client_id: &str) -> HttpResponse {
    let Some(session) = state.router.session(client_id) else {
        return error(StatusCode::NOT_FOUND, "no session with that client id");
    };
    let mut list: Vec<Value> = session
        .subscriptions()
        .into_iter()
        .map(|(filter, options)| {
            json!({
                "filter": filter.as_str(),
                "qos": options.qos as u8,
                "no_local": options.no_local,
                "retain_as_published": options.retain_as_published,
                "subscription_id": options.subscription_id,
            })
        })
        .collect();
    list.sort_by(|a, b| a["filter"].as_str().cmp(&b["filter"].as_str()));
    json_ok(Value::Array(list))
}

fn disconnect(state: &HttpState, client_id: &str) -> HttpResponse {
    if state.router.kick(client_id, KickReason::Administrative) {
        tracing::info!(client_id, "disconnected by an operator (admin API)");
        json_ok(json!({ "disconnected": client_id }))
    } else {
        error(
            StatusCode::NOT_FOUND,
            "no connected client with that client id",
        )
    }
}

fn list_queues(state: &HttpState) -> Value {
    let queues: Vec<Value> = state
        .router
        .queues()
        .depths()
        .into_iter()
        .map(|(name, d)| {
            json!({
                "name": name,
                "ready": d.ready,
                "unacked": d.unacked,
                "depth": d.ready + d.unacked,
                "consumers": d.consumers,
            })
        })
        .collect();
    Value::Array(queues)
}

fn list_retained(state: &HttpState) -> Value {
    let mut list: Vec<Value> = state
        .router
        .retained_all()
        .into_iter()
        .map(|m| {
            json!({
                "topic": &*m.topic,
                "qos": m.qos as u8,
                "payload_bytes": m.payload.len(),
                "payload": String::from_utf8_lossy(&m.payload),
            })
        })
        .collect();
    list.sort_by(|a, b| a["topic"].as_str().cmp(&b["topic"].as_str()));
    Value::Array(list)
}

fn delete_retained(state: &HttpState, topic: &str) -> HttpResponse {
    if state.router.delete_retained(topic) {
        tracing::info!(topic, "retained message deleted (admin API)");
        json_ok(json!({ "deleted": topic }))
    } else {
        error(StatusCode::NOT_FOUND, "no retained message on that topic")
    }
}

/// `%XX` → byte; None when an escape is broken or the result is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_decoding_takes_escapes_and_refuses_broken_ones() {
        assert_eq!(percent_decode("%24SYS").as_deref(), Some("$SYS"));
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%zz"), None);
    }
}
