//! The core's side of persistence: which state changes become store
//! operations, and how a stored snapshot becomes sessions, retained messages
//! and queues again at start. Only persistent sessions (expiry > 0) and their
//! QoS 1/2 deliveries are stored; QoS 0 and clean sessions live in memory only.

use std::sync::Arc;

use crate::core::message::{Delivery, Message, QoS};
use crate::core::session::SessionOwner;
use crate::store::record::{
    DeliveryRecord, MessageRecord, OwnerRecord, SessionRecord, SubscriptionRecord,
};
use crate::store::{Store, StoreOp};

/// A session's handle on the store, made from the session's own fields when
/// needed rather than kept in every session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Persist<'a> {
    pub(crate) store: &'a Store,
    pub(crate) client_id: &'a str,
}

impl Persist<'_> {
    pub(crate) fn delivery_record(
        delivery: &Delivery,
        packet_id: Option<u16>,
        released: bool,
    ) -> DeliveryRecord {
        DeliveryRecord {
            message: MessageRecord::from_message(&delivery.message),
            qos: delivery.qos as u8,
            retain: delivery.retain,
            subscription_ids: delivery.subscription_ids.clone(),
            packet_id,
            released,
        }
    }

    pub(crate) fn put_delivery(&self, delivery: &Delivery, packet_id: Option<u16>, released: bool) {
        self.store.submit([StoreOp::PutDelivery {
            client_id: self.client_id.to_string(),
            seq: delivery.seq,
            record: Self::delivery_record(delivery, packet_id, released),
        }]);
    }

    pub(crate) fn delete_delivery(&self, seq: u64) {
        if seq != 0 {
            self.store.submit([StoreOp::DeleteDelivery {
                client_id: self.client_id.to_string(),
                seq,
            }]);
        }
    }

    pub(crate) fn put_incoming_qos2(&self, packet_id: u16) {
        self.store.submit([StoreOp::PutIncomingQos2 {
            client_id: self.client_id.to_string(),
            packet_id,
        }]);
    }

    pub(crate) fn delete_incoming_qos2(&self, packet_id: u16) {
        self.store.submit([StoreOp::DeleteIncomingQos2 {
            client_id: self.client_id.to_string(),
            packet_id,
        }]);
    }
}

/// A delivery brought back from the store.
pub(crate) fn delivery_from_record(seq: u64, record: DeliveryRecord) -> Delivery {
    Delivery {
        qos: QoS::from_u8(record.qos).unwrap_or(QoS::AtLeastOnce),
        retain: record.retain,
        subscription_ids: record.subscription_ids,
        message: Arc::new(record.message.into_message()),
        filter: None,
        seq,
    }
}

/// The stored form of a session's owner.
pub(crate) fn owner_record(owner: &SessionOwner) -> OwnerRecord {
    match owner {
        SessionOwner::Unknown => OwnerRecord::Unknown,
        SessionOwner::Anonymous => OwnerRecord::Anonymous,
        SessionOwner::User(user) => OwnerRecord::User(user.to_string()),
    }
}

/// A session's owner as stored.
pub(crate) fn owner_from_record(record: OwnerRecord) -> SessionOwner {
    match record {
        OwnerRecord::Unknown => SessionOwner::Unknown,
        OwnerRecord::Anonymous => SessionOwner::Anonymous,
        OwnerRecord::User(user) => SessionOwner::User(Arc::from(user)),
    }
}

/// The stored form of a session's owner, subscriptions and expiry.
pub(crate) fn session_record(
    expiry_interval: u32,
    disconnected_at_ms: Option<u64>,
    owner: &SessionOwner,
    subscriptions: &[(
        crate::core::topic::Filter,
        crate::core::session::SubscriptionOptions,
    )],
) -> SessionRecord {
    SessionRecord {
        expiry_interval,
        disconnected_at_ms,
        owner: owner_record(owner),
        subscriptions: subscriptions
            .iter()
            .map(|(filter, options)| SubscriptionRecord::new(filter.as_str(), options))
            .collect(),
    }
}

/// A retained message as stored.
pub(crate) fn retained_op(topic: &str, message: Option<&Message>) -> StoreOp {
    match message {
        Some(message) => StoreOp::PutRetained {
            record: MessageRecord::from_message(message),
        },
        None => StoreOp::DeleteRetained {
            topic: topic.to_string(),
        },
    }
}

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

impl crate::core::router::Router {
    /// Rebuilds sessions, their queued and in-flight deliveries, incoming QoS 2
    /// state and retained messages from a stored snapshot. Call once, before
    /// serving. Sessions whose expiry passed while the broker was down are removed.
    pub fn restore(
        self: &Arc<Self>,
        snapshot: crate::store::Snapshot,
    ) -> Result<Restored, crate::store::StoreError> {
        use crate::core::topic::Filter;
        use crate::store::record::unix_ms_now;
        use std::collections::HashMap;

        let mut restored = Restored::default();
        let now_ms = unix_ms_now();
        let mut sessions: HashMap<String, Arc<crate::core::session::Session>> = HashMap::new();
        let mut stale = Vec::new();
        for (client_id, record) in snapshot.sessions {
            // A crash while connected counts from now; a clean disconnect from then.
            let since = record.disconnected_at_ms.unwrap_or(now_ms);
            let left_ms = if record.expiry_interval == u32::MAX {
                u64::MAX
            } else {
                (u64::from(record.expiry_interval) * 1000)
                    .saturating_sub(now_ms.saturating_sub(since))
            };
            if left_ms == 0 {
                stale.push(client_id);
                continue;
            }
            let owner = owner_from_record(record.owner.clone());
            let session = self.insert_restored_session(&client_id, record.expiry_interval, owner);
            for subscription in &record.subscriptions {
                match Filter::parse(&subscription.filter) {
                    Ok(filter) => {
                        self.subscribe_unsaved(&session, filter, subscription.options());
                    }
                    Err(e) => {
                        tracing::warn!(client_id, filter = %subscription.filter, error = %e, "stored subscription skipped")
                    }
                }
            }
            if left_ms != u64::MAX {
                let secs = u32::try_from(left_ms.div_ceil(1000)).unwrap_or(u32::MAX);
                self.expire_later(&session, secs);
            }
            sessions.insert(client_id, session);
            restored.sessions += 1;
        }
        let mut orphans = Vec::new();
        for (client_id, seq, record) in snapshot.deliveries {
            match sessions.get(&client_id) {
                Some(session) => {
                    let (packet_id, released) = (record.packet_id, record.released);
                    session.restore_delivery(
                        delivery_from_record(seq, record),
                        packet_id,
                        released,
                    );
                    restored.deliveries += 1;
                }
                None => orphans.push(client_id),
            }
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
            let message = record.into_message();
            if message.is_expired(now) {
                expired.push(StoreOp::DeleteRetained {
                    topic: message.topic.to_string(),
                });
            } else {
                self.restore_retained(Arc::new(message));
                restored.retained += 1;
            }
        }
        for (queue, seq, record) in snapshot.queued {
            let message = record.into_message();
            if message.is_expired(now) {
                expired.push(StoreOp::DeleteQueued { queue, seq });
            } else {
                self.queues().restore(&queue, seq, Arc::new(message));
                restored.queued += 1;
            }
        }
        // Last, so a will that is due now reaches restored sessions and retained state.
        restored.wills = self.restore_wills(snapshot.wills);
        // Leftovers of sessions that ended: removed so the store does not grow.
        orphans.sort();
        orphans.dedup();
        restored.expired_sessions = stale.len();
        if let Some(store) = self.store() {
            store.submit(expired);
            store.submit(
                stale
                    .into_iter()
                    .chain(orphans)
                    .map(|client_id| StoreOp::DeleteSession { client_id }),
            );
        }
        Ok(restored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::router::Router;
    use crate::core::session::{OverflowPolicy, QueueLimits, Session};
    use crate::store::redb::RedbBackend;
    use crate::store::Durability;

    fn record(topic: &str, expires_at_ms: Option<u64>) -> MessageRecord {
        let mut message = Message::new(
            topic,
            bytes::Bytes::from_static(b"x"),
            QoS::AtLeastOnce,
            true,
        );
        message.expires_at = None;
        let mut record = MessageRecord::from_message(&message);
        record.expires_at_ms = expires_at_ms;
        record
    }

    #[tokio::test]
    async fn messages_that_expired_while_down_are_removed_from_the_store() {
        let dir = std::env::temp_dir().join(format!("tern-persist-expired-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("tern.redb");
        let past = Some(1);
        let backend = Arc::new(RedbBackend::open(&path).expect("open"));
        let store = Store::start(backend, Durability::Batched);
        store.submit([
            StoreOp::PutRetained {
                record: record("old/retained", past),
            },
            StoreOp::PutRetained {
                record: record("live/retained", None),
            },
            StoreOp::PutQueued {
                queue: "jobs".into(),
                seq: 1,
                record: record("$queue/jobs", past),
            },
            StoreOp::PutQueued {
                queue: "jobs".into(),
                seq: 2,
                record: record("$queue/jobs", None),
            },
        ]);
        store.flush().await.expect("flush");

        let limits = QueueLimits {
            max_queued: 10,
            max_queued_bytes: 0,
            overflow: OverflowPolicy::DropOldest,
        };
        let router = Arc::new(Router::new(limits).with_store(Arc::clone(&store)));
        let restored = router
            .restore(store.load().expect("load"))
            .expect("restore");
        assert_eq!((restored.retained, restored.queued), (1, 1));
        store.flush().await.expect("flush");
        let after = store.load().expect("reload");
        let topics: Vec<&str> = after.retained.iter().map(|r| r.topic.as_str()).collect();
        assert_eq!(topics, vec!["live/retained"]);
        let seqs: Vec<u64> = after.queued.iter().map(|(_, seq, _)| *seq).collect();
        assert_eq!(seqs, vec![2]);
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store in a fresh directory (removed by the test at its end).
    fn fresh_store(name: &str) -> (std::path::PathBuf, Arc<Store>) {
        let dir = std::env::temp_dir().join(format!("tern-persist-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let backend = Arc::new(RedbBackend::open(&dir.join("tern.redb")).expect("open"));
        (dir, Store::start(backend, Durability::Batched))
    }

    fn small_limits() -> QueueLimits {
        QueueLimits {
            max_queued: 10,
            max_queued_bytes: 0,
            overflow: OverflowPolicy::DropOldest,
        }
    }

    #[tokio::test]
    async fn only_a_persistent_session_stores_its_incoming_qos2_ids() {
        let (dir, store) = fresh_store("qos2");
        let limits = small_limits();
        let clean = Session::with_store(Arc::from("clean"), 0, limits, Some(Arc::clone(&store)));
        let before = store.last_ticket();
        assert!(clean.record_incoming_qos2(7));
        assert!(clean.release_incoming_qos2(7));
        assert_eq!(
            store.last_ticket(),
            before,
            "a clean session's QoS 2 flow touches no store"
        );

        let kept = Session::with_store(Arc::from("kept"), 60, limits, Some(Arc::clone(&store)));
        assert!(kept.record_incoming_qos2(8));
        // The session stops being persistent: the stored id is still deleted at PUBREL.
        kept.set_expiry_interval(0);
        assert!(kept.release_incoming_qos2(8));
        assert_eq!(store.last_ticket(), before + 2, "one put and one delete");
        store.flush().await.expect("flush");
        assert!(store.load().expect("load").incoming_qos2.is_empty());
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_clean_session_comes_and_goes_without_a_store_operation() {
        let (dir, store) = fresh_store("clean");
        let limits = small_limits();
        let router = Arc::new(Router::new(limits).with_store(Arc::clone(&store)));
        let before = store.last_ticket();
        let anonymous = SessionOwner::Anonymous;
        let clean = router
            .attach(&Arc::from("clean"), &anonymous, true, 0)
            .expect("attach");
        router.detach(&clean.session, clean.connection_id);
        assert_eq!(
            store.last_ticket(),
            before,
            "clean session: no store operation"
        );

        let kept = router
            .attach(&Arc::from("kept"), &anonymous, true, 60)
            .expect("attach");
        assert!(
            store.last_ticket() > before,
            "a persistent session is saved"
        );
        let saved = store.last_ticket();
        // Taken over by a clean start: the stored session is deleted.
        let again = router
            .attach(&Arc::from("kept"), &anonymous, true, 0)
            .expect("attach");
        assert!(
            store.last_ticket() > saved,
            "the old stored session is deleted"
        );
        drop(kept);
        router.detach(&again.session, again.connection_id);
        store.flush().await.expect("flush");
        assert!(store.load().expect("load").sessions.is_empty());
        store.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
