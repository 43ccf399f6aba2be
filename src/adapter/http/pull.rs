//! Pull from a queue with leases: `POST /v1/queues/{q}/pull?max=N&wait=S&visibility=S`
//! long-polls up to `wait` seconds (at most `limits.http_max_wait_secs`) for up
//! to `max` messages (at most [`MAX_PULL`]), each under a lease of `visibility`
//! seconds (default `limits.http_lease_secs`). Then `ack`, `nack` (optional
//! `delay` seconds before redelivery) and `extend` (`visibility` seconds from
//! now) take `{"lease_ids": ["…", …]}`; an unknown (or expired) lease id is 404,
//! the known ones of the same request are still done. The leases themselves
//! live in the core (`core/queue/lease.rs`): an expired one gives its message
//! back to the queue, for a consumer of any protocol.
//!
//! `selector=` pulls only the messages a JMS selector matches; the others stay
//! in the queue, in their place.
//!
//! In cluster mode the queue is the cluster's: a pull takes its messages from
//! the cluster-wide queue, and leases them on the node that served the pull
//! (ack, nack and extend go to that node); what is nacked or expires goes back
//! to the queue for a consumer on any node.
//!
//! Pulling, acking and the rest need the right to subscribe to `$queue/{q}`.

use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::message::MessageView;
use super::names::{queue_from_segment, queue_topic, Query};
use super::reply::{json, json_of, Body, HttpError};
use super::selector::selector_from_query;
use super::Call;
use crate::auth::Action;

/// Messages one pull may take.
pub const MAX_PULL: u64 = 1000;
/// Longest visibility timeout a lease may have, seconds (12 hours).
pub const MAX_VISIBILITY_SECS: u64 = 12 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QueueOp {
    Pull,
    Ack,
    Nack,
    Extend,
}

impl QueueOp {
    pub(super) fn of(name: &str) -> Option<QueueOp> {
        match name {
            "pull" => Some(QueueOp::Pull),
            "ack" => Some(QueueOp::Ack),
            "nack" => Some(QueueOp::Nack),
            "extend" => Some(QueueOp::Extend),
            _ => None,
        }
    }
}

/// One pulled message: the message with its lease.
#[derive(Debug, serde::Serialize)]
struct LeasedView<'a> {
    #[serde(flatten)]
    message: MessageView<'a>,
    lease_id: String,
    /// Seconds until the message goes back to the queue.
    visibility_timeout: u64,
}

#[derive(Debug, serde::Serialize)]
struct Pulled<'a> {
    messages: Vec<LeasedView<'a>>,
}

/// The body of ack, nack and extend.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseRequest {
    #[serde(default)]
    lease_ids: Vec<String>,
    #[serde(default)]
    lease_id: Option<String>,
    /// nack: seconds before the message goes back.
    #[serde(default)]
    delay: Option<u64>,
    /// extend: the new visibility timeout, seconds from now.
    #[serde(default)]
    visibility: Option<u64>,
}

pub(super) async fn handle(
    call: &Call<'_>,
    raw_queue: &str,
    op: QueueOp,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let queue = queue_from_segment(raw_queue)?;
    call.check(Action::Subscribe, &queue_topic(&queue))?;
    match op {
        QueueOp::Pull => pull(call, &queue, req).await,
        op => leases(call, &queue, op, req).await,
    }
}

async fn pull(
    call: &Call<'_>,
    queue: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let limits = call.ctx.limits();
    let query = Query::parse(req.uri().query());
    query.only(&["max", "wait", "visibility", "selector"], false)?;
    let selector = selector_from_query(call, &query)?;
    let selector = selector.as_deref();
    let max = query.number("max", 1)?.clamp(1, MAX_PULL) as usize;
    let wait = query.number("wait", 0)?.min(limits.http_max_wait_secs);
    let visibility = query
        .number("visibility", limits.http_lease_secs)?
        .clamp(1, MAX_VISIBILITY_SECS);
    let visibility = Duration::from_secs(visibility);
    let queues = call.ctx.router.queues();
    let mut leased = queues.pull_matching(queue, max, visibility, selector);
    if leased.is_empty() && queues.is_clustered() {
        // Cluster mode: the queue lives in the cluster; the leases live here.
        let _slot = if wait > 0 {
            Some(call.open_slot()?)
        } else {
            None
        };
        let wait = Duration::from_secs(wait);
        tokio::select! {
            got = queues.pull_from_cluster(queue, max, visibility, selector, wait) => leased = got,
            () = call.ctx.shutdown.cancelled() => {}
        }
    } else if leased.is_empty() && wait > 0 {
        let _slot = call.open_slot()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
        let watch = queues.watch_arrivals();
        loop {
            let arrived = watch.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            leased = queues.pull_matching(queue, max, visibility, selector);
            if !leased.is_empty() {
                break;
            }
            tokio::select! {
                _ = &mut arrived => {}
                _ = tokio::time::sleep_until(deadline) => break,
                _ = call.ctx.shutdown.cancelled() => break,
            }
        }
    }
    let now = Instant::now();
    let messages: Vec<LeasedView<'_>> = leased
        .iter()
        .map(|lease| {
            call.metrics()
                .sent(lease.message.qos, lease.message.payload.len());
            let left = lease.deadline.saturating_duration_since(now);
            LeasedView {
                message: MessageView::new(&lease.message, lease.message.retain, now),
                lease_id: format!("{:x}", lease.lease_id),
                visibility_timeout: left.as_secs() + u64::from(left.subsec_nanos() >= 500_000_000),
            }
        })
        .collect();
    Ok(json_of(StatusCode::OK, &Pulled { messages }))
}

async fn leases(
    call: &Call<'_>,
    queue: &str,
    op: QueueOp,
    req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    Query::parse(req.uri().query()).only(&[], false)?;
    let body = call.body(req).await?;
    let request: LeaseRequest = serde_json::from_slice(&body)
        .map_err(|e| HttpError::bad(format!("expected {{\"lease_ids\": [...]}}: {e}")))?;
    let ids: Vec<String> = request
        .lease_ids
        .into_iter()
        .chain(request.lease_id)
        .collect();
    if ids.is_empty() {
        return Err(HttpError::bad("no lease_ids"));
    }
    let queues = call.ctx.router.queues();
    let delay = Duration::from_secs(request.delay.unwrap_or(0).min(MAX_VISIBILITY_SECS));
    let visibility = Duration::from_secs(
        request
            .visibility
            .unwrap_or(call.ctx.limits().http_lease_secs)
            .clamp(1, MAX_VISIBILITY_SECS),
    );
    let (mut done, mut unknown) = (Vec::new(), Vec::new());
    for id in ids {
        let Ok(lease) = u64::from_str_radix(&id, 16) else {
            unknown.push(id);
            continue;
        };
        let result = match op {
            QueueOp::Ack => queues.ack_lease(queue, lease),
            QueueOp::Nack => queues.nack_lease(queue, lease, delay),
            QueueOp::Extend => queues.extend_lease(queue, lease, visibility).map(|_| ()),
            QueueOp::Pull => Ok(()),
        };
        match result {
            Ok(()) => done.push(id),
            Err(_) => unknown.push(id),
        }
    }
    let status = if unknown.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    let mut body = serde_json::json!({ "done": done, "unknown": unknown });
    if !unknown.is_empty() {
        body["error"] =
            "unknown lease id (never issued, already acked or nacked, or expired)".into();
        body["status"] = 404.into();
    }
    Ok(json(status, &body))
}
