//! Bringing the router back from a stored snapshot at start: sessions, their
//! deliveries and incoming QoS 2 state, retained messages, queues and wills.

use std::collections::HashMap;
use std::sync::Arc;

use super::persist::{
    delivery_from_record, message_from_record, owner_from_record, subscription_options,
};
use super::Router;
use crate::core::message::Message;
use crate::core::peer_marks::SessionMarks;
use crate::core::session::{Session, SubscriptionOptions};
use crate::core::topic::Filter;
use crate::store::record::{unix_ms_now, SubscriptionRecord};
use crate::store::{Snapshot, StoreOp};

/// What a restore brought back, for the start-up log.
#[derive(Debug, Default, Clone, Copy)]
pub struct Restored {
    pub sessions: usize,
    pub deliveries: usize,
    pub retained: usize,
    pub queued: usize,
    pub wills: usize,
    pub expired_sessions: usize,
}

/// A subscription as stored (or carried from another node of the cluster),
/// its selector compiled again; None, logged, for a filter or a selector that
/// no longer parses (never delivering everything in its place).
pub(super) fn stored_subscription(
    router: &Router,
    client_id: &str,
    record: &SubscriptionRecord,
) -> Option<(Filter, SubscriptionOptions)> {
    let mut options = subscription_options(record);
    if let Some(text) = &record.selector {
        match router.compile_selector(text) {
            Ok(selector) => options.selector = Some(selector),
            Err(e) => {
                tracing::warn!(client_id, filter = %record.filter, error = %e, "stored subscription with a selector that no longer parses skipped");
                return None;
            }
        }
    }
    match Filter::parse(&record.filter) {
        Ok(filter) => Some((filter, options)),
        Err(e) => {
            tracing::warn!(client_id, filter = %record.filter, error = %e, "stored subscription skipped");
            None
        }
    }
}

/// See [`Router::restore`]. Each session restored gets `marks` (a session
/// taken over from another node: what it had there) before it subscribes.
pub(super) fn restore(router: &Arc<Router>, snapshot: Snapshot, marks: &SessionMarks) -> Restored {
    let mut restored = Restored::default();
    router
        .streams()
        .restore(snapshot.streams, snapshot.stream_consumers);
    router
        .streams()
        .restore_declarations(snapshot.stream_declarations);
    let now_ms = unix_ms_now();
    let mut sessions: HashMap<String, Arc<Session>> = HashMap::new();
    // Subscribed once their stored deliveries are queued: a session taken
    // over while messages flow gets no live message before those.
    let mut to_subscribe = Vec::new();
    let mut stale = Vec::new();
    for (client_id, record) in snapshot.sessions {
        // A crash while connected counts from now; a clean disconnect from then.
        let since = record.disconnected_at_ms.unwrap_or(now_ms);
        let left_ms = if record.expiry_interval == u32::MAX {
            u64::MAX
        } else {
            (u64::from(record.expiry_interval) * 1000).saturating_sub(now_ms.saturating_sub(since))
        };
        if left_ms == 0 {
            stale.push(client_id);
            continue;
        }
        let owner = owner_from_record(record.owner.clone());
        let session = router
            .sessions
            .insert_restored(&client_id, record.expiry_interval, owner);
        session.set_peer_marks(marks.clone());
        for subscription in &record.subscriptions {
            if let Some((filter, options)) = stored_subscription(router, &client_id, subscription) {
                to_subscribe.push((Arc::clone(&session), filter, options));
            }
        }
        if left_ms != u64::MAX {
            let secs = u32::try_from(left_ms.div_ceil(1000)).unwrap_or(u32::MAX);
            router.expire_later(&session, secs);
        }
        sessions.insert(client_id, session);
        restored.sessions += 1;
    }
    // Each stored message once, shared by every session it is owed to.
    let messages: HashMap<u64, Arc<Message>> = snapshot
        .messages
        .into_iter()
        .map(|(id, record)| (id, Arc::new(message_from_record(record))))
        .collect();
    let mut orphans = Vec::new();
    let mut lost = Vec::new();
    for (client_id, seq, record) in snapshot.deliveries {
        let Some(session) = sessions.get(&client_id) else {
            orphans.push(client_id);
            continue;
        };
        let Some(message) = messages.get(&record.message_id) else {
            tracing::warn!(
                client_id,
                seq,
                message_id = record.message_id,
                "stored delivery without its message skipped"
            );
            lost.push(StoreOp::DeleteDelivery { client_id, seq });
            continue;
        };
        let (packet_id, released, at) = (record.packet_id, record.released, record.queued_at_ms);
        let delivery = delivery_from_record(seq, record, Arc::clone(message));
        session.restore_delivery(delivery, packet_id, released, at);
        restored.deliveries += 1;
    }
    router.persistence.remove_stale(lost);
    if tracing::enabled!(tracing::Level::DEBUG) {
        for (client_id, session) in &sessions {
            let owed = session.pending_len() + session.inflight_len();
            tracing::debug!(client_id, owed, "session restored");
        }
    }
    for (session, filter, options) in to_subscribe {
        router.routing.subscribe(&session, filter, options);
    }
    for (client_id, packet_id) in snapshot.incoming_qos2 {
        if let Some(session) = sessions.get(&client_id) {
            session.restore_incoming_qos2(packet_id);
        }
    }
    let now = std::time::Instant::now();
    // Messages that expired while the broker was down are removed, not restored.
    let mut expired = Vec::new();
    for record in snapshot.retained {
        let message = message_from_record(record);
        if message.is_expired(now) {
            expired.push(StoreOp::DeleteRetained {
                topic: message.topic.to_string(),
            });
        } else {
            router.routing.restore_retained(Arc::new(message));
            restored.retained += 1;
        }
    }
    for (queue, seq, record) in snapshot.queued {
        let message = message_from_record(record);
        if message.is_expired(now) {
            expired.push(StoreOp::DeleteQueued { queue, seq });
        } else {
            router
                .routing
                .queues()
                .restore(&queue, seq, Arc::new(message));
            restored.queued += 1;
        }
    }
    // Last, so a will that is due now reaches restored sessions and retained state.
    restored.wills = router.restore_wills(snapshot.wills);
    // Leftovers of sessions that ended: removed so the store does not grow.
    orphans.sort();
    orphans.dedup();
    restored.expired_sessions = stale.len();
    router.persistence.remove_stale(expired);
    router.persistence.remove_stale(
        stale
            .into_iter()
            .chain(orphans)
            .map(|client_id| StoreOp::DeleteSession { client_id }),
    );
    restored
}
