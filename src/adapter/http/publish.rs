//! `POST /v1/topics/{topic}` (one message, the body is its payload) and
//! `POST /v1/publish` (NDJSON: one message a line, each decided on its own).
//!
//! A QoS 1/2 publish is answered after the store committed it (as a PUBACK
//! is); the answer says how many subscriptions (sessions, or a queue) took it.
//! A full queue or store is 503, a payload that fails a `reject` schema 422
//! (with its violations), nothing routed.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::message::{build, options_from, BatchLine, PUBLISH_PARAMS};
use super::names::{topic_from_path, Query};
use super::reply::{json, Body, HttpError};
use super::Call;
use crate::auth::Action;
use crate::core::commit::Commit;
use crate::core::message::{Message, QoS};
use crate::core::router::{PublishRefused, Published, Router};

/// Waits until the store has committed `commit` (what a QoS 1/2 answer
/// promises). The one place the HTTP adapter waits for a commit.
pub(super) async fn wait_committed(router: &Router, commit: Commit) -> Result<(), HttpError> {
    router
        .wait_committed(commit)
        .await
        .map_err(|e| HttpError::Unavailable(format!("the store could not commit: {e}")))
}

/// Checks (ACL, rate) and routes one message; returns how many subscriptions
/// took it and what it stored.
pub(super) fn route(call: &Call<'_>, message: Message) -> Result<Published, HttpError> {
    call.check(Action::Publish, &message.topic)?;
    call.take_rate()?;
    let (qos, size) = (message.qos, message.payload.len());
    let published = call
        .ctx
        .router
        .publish_checked(Arc::new(message))
        .map_err(refusal)?;
    call.metrics().received(qos, size);
    Ok(published)
}

/// A refused publish as an HTTP error: 422 for the payload, 503 for room.
fn refusal(refused: PublishRefused) -> HttpError {
    match refused {
        PublishRefused::SchemaInvalid(invalid) => HttpError::PayloadInvalid {
            reason: invalid.to_string(),
            schema: Some(invalid.schema),
            violations: invalid.violations,
        },
        PublishRefused::PayloadNotUtf8 => HttpError::PayloadInvalid {
            reason: refused.to_string(),
            schema: None,
            violations: Vec::new(),
        },
        other => HttpError::Unavailable(other.to_string()),
    }
}

pub(super) async fn one(
    call: &Call<'_>,
    raw_topic: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let topic = topic_from_path(raw_topic, &call.ctx.limits().topic_limits())?;
    let query = Query::parse(req.uri().query());
    query.only(&PUBLISH_PARAMS, true)?;
    let options = options_from(&query, req.headers())?;
    let payload = call.body(req).await?;
    let message = build(topic, payload, options, &call.caller.client_id);
    call.ctx.monitor.metrics.top_topics.record(&message.topic);
    let qos = message.qos;
    let published = route(call, message)?;
    if qos != QoS::AtMostOnce {
        wait_committed(&call.ctx.router, published.commit).await?;
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "matched": published.matched, "qos": qos as u8 }),
    ))
}

/// NDJSON: each line a JSON object (`message::BatchLine`); the answer lists
/// one result per line, in order: `{"line": n, "matched": m}` or
/// `{"line": n, "error": "…", "status": s}`. Blank lines are skipped.
pub(super) async fn batch(
    call: &Call<'_>,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    Query::parse(req.uri().query()).only(&[], false)?;
    let body = call.body(req).await?;
    let text = std::str::from_utf8(&body).map_err(|_| HttpError::bad("the batch is not UTF-8"))?;
    let limits = call.ctx.limits().topic_limits();
    let mut results = Vec::new();
    // One wait for the whole batch, on the highest commit (group commit).
    let mut commit = Commit::NONE;
    let (mut accepted, mut refused) = (0usize, 0usize);
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let number = index + 1;
        let outcome = serde_json::from_str::<BatchLine>(line)
            .map_err(|e| HttpError::bad(format!("not a message object: {e}")))
            .and_then(BatchLine::into_parts)
            .and_then(|(topic, payload, options)| {
                let topic = topic_from_path_text(&topic, &limits)?;
                let message = build(topic, payload, options, &call.caller.client_id);
                let qos = message.qos;
                route(call, message).map(|matched| (matched, qos))
            });
        match outcome {
            Ok((published, qos)) => {
                accepted += 1;
                if qos != QoS::AtMostOnce {
                    commit.include(published.commit);
                }
                results.push(serde_json::json!({ "line": number, "matched": published.matched }));
            }
            Err(error) => {
                refused += 1;
                let mut entry = error.to_json();
                entry["line"] = serde_json::Value::from(number);
                results.push(entry);
            }
        }
    }
    if !commit.is_none() {
        wait_committed(&call.ctx.router, commit).await?;
    }
    if refused > 0 {
        tracing::debug!(client_id = %call.caller.client_id, accepted, refused, "HTTP batch lines refused");
    }
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "accepted": accepted, "refused": refused, "results": results }),
    ))
}

/// A topic given as JSON text (not percent-encoded), checked as a path's is.
fn topic_from_path_text(
    topic: &str,
    limits: &crate::core::topic_limits::TopicLimits,
) -> Result<String, HttpError> {
    crate::core::topic::validate_topic_name(topic).map_err(|e| {
        HttpError::bad(format!(
            "invalid topic {:?}: {e}",
            super::names::shorten(topic)
        ))
    })?;
    limits.check(topic).map_err(|e| {
        HttpError::bad(format!(
            "invalid topic {:?}: {e}",
            super::names::shorten(topic)
        ))
    })?;
    Ok(topic.to_string())
}
