//! Core deliveries → MESSAGE frames: which subscription(s) a delivery is for,
//! and what each one must later acknowledge.
//!
//! - Topic deliveries: one MESSAGE per STOMP subscription on the matched filter;
//!   a retained message sent on SUBSCRIBE only to the newest subscription on it.
//! - Queue deliveries: one MESSAGE to one subscription on that queue. With
//!   ack=auto the queue is told at once that the message is done; otherwise the
//!   queue is told it was written (`claim`) and the ACK or NACK settles it. A
//!   delivery the queue no longer expects from this session (given back
//!   meanwhile, e.g. after an UNSUBSCRIBE) is not written.
//! - A topic or stream delivery goes to the subscriptions whose selector
//!   matches it (the core filtered already when there is just one).
//! - Expired messages and deliveries for subscriptions that are gone are skipped.

use std::sync::Arc;

use tern_stomp::Version;

use super::ack::Outstanding;
use super::connection::Connection;
use super::headers::{message_frame, Clock, MessageIds};
use super::subscribe::Subscription;
use crate::admin::Protocol;
use crate::core::content::MessageView;
use crate::core::message::Delivery;

pub(super) fn write_delivery(conn: &mut Connection, delivery: &Delivery, clock: Clock) {
    if delivery.message.is_expired(clock.now) {
        conn.ctx.monitor.metrics.dropped_expired(1);
        return;
    }
    let Some(filter) = delivery.filter.as_deref() else {
        return;
    };
    let subscriptions = conn.protocol.subscriptions.for_filter(filter);
    let Some(first) = subscriptions.first() else {
        tracing::debug!(client_id = %conn.session.client_id, filter, "delivery for a subscription that is gone");
        return;
    };
    if let Some(queue) = first.queue.clone() {
        let Some(subscription) = conn.protocol.subscriptions.next_for_queue(filter) else {
            return;
        };
        let queues = conn.ctx.router.queues();
        let mine = if subscription.ack.acks() {
            queues.claim(&queue, &conn.session, &delivery.message)
        } else {
            // Auto-acknowledged: a crash before this commit redelivers it, as allowed.
            queues
                .ack(&queue, &conn.session, &delivery.message)
                .is_some()
        };
        if mine {
            write_to(conn, delivery, &subscription, clock);
        }
        return;
    }
    if delivery.retain {
        // A retained message sent on SUBSCRIBE is for the subscription that
        // asked for it, the newest on its filter (STOMP live deliveries never
        // carry the retain flag).
        if let Some(newest) = subscriptions.last() {
            write_to(conn, delivery, newest, clock);
        }
        return;
    }
    // With one subscription on the filter the core applied its selector; with
    // several, each one's selector decides here (one view for all of them).
    let view = MessageView::new(&delivery.message);
    for subscription in &subscriptions {
        let wanted = subscriptions.len() == 1
            || subscription
                .selector
                .as_ref()
                .is_none_or(|selector| selector.matches(&view));
        if wanted {
            write_to(conn, delivery, subscription, clock);
        }
    }
}

/// Writes one MESSAGE for `subscription`, recording it when the subscription acknowledges.
pub(super) fn write_to(
    conn: &mut Connection,
    delivery: &Delivery,
    subscription: &Subscription,
    clock: Clock,
) {
    let (seq, message_id) = conn.next_message_id();
    let acks = subscription.ack.acks();
    let ids = MessageIds {
        message_id: &message_id,
        subscription: &subscription.id,
        ack: (acks && conn.protocol.version == Version::V1_2).then_some(message_id.as_str()),
    };
    let frame = message_frame(delivery, ids, clock);
    conn.send(&frame);
    let traffic = conn.ctx.monitor.metrics.traffic(Protocol::Stomp);
    traffic.sent(delivery.qos, delivery.message.payload.len());
    let stream = delivery
        .filter
        .as_ref()
        .filter(|f| crate::core::stream::is_stream_filter(f));
    if acks {
        conn.protocol.unacked.insert(
            seq,
            Outstanding {
                subscription: Arc::clone(&subscription.id),
                queue: subscription
                    .queue
                    .as_ref()
                    .map(|q| (Arc::clone(q), Arc::clone(&delivery.message))),
                stream: stream.map(|f| (Arc::clone(f), Arc::clone(&delivery.message))),
            },
        );
    } else if let Some(filter) = stream {
        // ack=auto: acknowledged when written.
        conn.ctx
            .router
            .streams()
            .acked(&conn.session, filter, &delivery.message);
    }
}
