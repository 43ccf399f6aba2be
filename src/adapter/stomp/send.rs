//! SEND: destination → core topic, headers → message properties, then into the
//! core now or at COMMIT (`op.rs`). A SEND to a full queue is an ERROR, never a silent drop.

use std::sync::Arc;

use tern_stomp::Frame;

use super::connection::Connection;
use super::destination::{send_topic, DestinationError};
use super::error::StompAdapterError;
use super::headers::{message_from_send, required, Clock};
use super::op::TxOp;
use crate::admin::Protocol;
use crate::auth::Action;
use crate::core::message::Message;

/// Checks a SEND and makes its message; the dispatcher routes it now or at COMMIT.
pub(super) fn handle_send(conn: &mut Connection, frame: &Frame) -> Result<TxOp, StompAdapterError> {
    let destination = required(frame, "destination")?;
    let topic = send_topic(destination)?;
    let limits = conn.ctx.limits().topic_limits();
    limits
        .check(&topic)
        .map_err(|reason| DestinationError::over_limit(destination, reason))?;
    let username = conn.username.as_deref();
    if !conn.ctx.allowed(
        username,
        &conn.session.client_id,
        Action::Publish,
        &topic,
        &mut conn.log_limit,
    ) {
        return Err(StompAdapterError::Denied {
            action: "send to",
            destination: destination.chars().take(256).collect(),
        });
    }
    let message = message_from_send(
        frame,
        topic,
        Arc::clone(&conn.session.client_id),
        Clock::now(),
    )?;
    let message = Arc::new(message);
    let metrics = &conn.ctx.monitor.metrics;
    metrics
        .traffic(Protocol::Stomp)
        .received(message.qos, message.payload.len());
    metrics.top_topics.record(&message.topic);
    Ok(TxOp::Send(message))
}

/// Routes one message through the core.
pub(super) fn publish(
    conn: &mut Connection,
    message: Arc<Message>,
) -> Result<(), StompAdapterError> {
    let published = conn.ctx.router.publish_checked(message)?;
    conn.stored(published.commit);
    tracing::trace!(client_id = %conn.session.client_id, matched = published.matched, "SEND routed");
    Ok(())
}
