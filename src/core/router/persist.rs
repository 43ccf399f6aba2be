//! The core's side of persistence: which state changes become store
//! operations, and the conversions between the core's types and the store's
//! records (the store knows records and bytes only). Only persistent sessions
//! (expiry > 0) and their QoS 1/2 deliveries are stored; QoS 0 and clean
//! sessions live in memory only.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::core::cluster_state::ClusterState;
use crate::core::commit::Commit;
use crate::core::exceptions::Exceptions;
use crate::core::message::{Delivery, Message, MessageProperties, QoS};
use crate::core::session::{Session, SessionOwner, SubscriptionOptions};
use crate::core::topic::Filter;
use crate::store::record::{
    unix_ms_now, DeliveryRecord, MessageRecord, MessageRecordRef, OwnerRecord, SessionRecord,
    SubscriptionRecord, WillRecord,
};
use crate::store::{Store, StoreError, StoreOp};

/// The router's handle on the store: what it writes when sessions, retained
/// messages and wills change, and the cap on stored messages.
#[derive(Debug)]
pub(crate) struct Persistence {
    /// Persistent sessions, their QoS 1/2 deliveries and retained messages go here.
    store: Option<Arc<Store>>,
    /// Stored messages beyond which QoS 1/2 publishes are refused.
    max_messages: u64,
    /// The state shared with the other nodes, in cluster mode (set once at start).
    cluster: OnceLock<Arc<dyn ClusterState>>,
}

/// Where a retained change comes from: a local publisher (shared with the
/// cluster) or the cluster (applied here only, never sent back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetainedOrigin {
    Here,
    Cluster,
}

impl Persistence {
    pub(crate) fn new(store: Option<Arc<Store>>, max_messages: u64) -> Persistence {
        Persistence {
            store,
            max_messages,
            cluster: OnceLock::new(),
        }
    }

    /// Sets the cluster's shared state; false if one was set already.
    pub(crate) fn set_cluster(&self, cluster: Arc<dyn ClusterState>) -> bool {
        self.cluster.set(cluster).is_ok()
    }

    pub(crate) fn cluster(&self) -> Option<&Arc<dyn ClusterState>> {
        self.cluster.get()
    }

    pub(crate) fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Ok while the store may take another message; else (held, limit).
    pub(crate) fn check_room(&self, qos: QoS) -> Result<(), (u64, u64)> {
        if qos == QoS::AtMostOnce {
            return Ok(());
        }
        if let Some(store) = &self.store {
            let held = store.held_messages();
            if held >= self.max_messages {
                return Err((held, self.max_messages));
            }
        }
        Ok(())
    }

    fn submit(&self, ops: impl IntoIterator<Item = StoreOp>) -> Commit {
        match &self.store {
            Some(store) => Commit::of_ticket(store.submit(ops)),
            None => Commit::NONE,
        }
    }

    /// Writes a session's record (subscriptions, expiry) if it is persistent.
    pub(crate) fn save_session(&self, session: &Session, disconnected: bool) -> Commit {
        let Some(store) = &self.store else {
            return Commit::NONE;
        };
        let expiry = session.expiry_interval();
        if expiry == 0 {
            return Commit::NONE;
        }
        let at = disconnected.then(unix_ms_now);
        let record = session_record(expiry, at, &session.owner(), &session.subscriptions());
        session.mark_stored();
        Commit::of_ticket(store.submit([StoreOp::PutSession {
            client_id: session.client_id.to_string(),
            record,
        }]))
    }

    /// Deletes a session's record, if it was ever written.
    pub(crate) fn forget_session(&self, session: &Session) -> Commit {
        if !session.is_stored() {
            return Commit::NONE; // a clean session: nothing of it is in the store
        }
        self.submit([StoreOp::DeleteSession {
            client_id: session.client_id.to_string(),
        }])
    }

    /// Stores the retained message of `topic`, or its removal (`None`), and
    /// shares a local change with the cluster.
    pub(crate) fn retained(
        &self,
        topic: &str,
        message: Option<&Message>,
        origin: RetainedOrigin,
    ) -> Commit {
        if origin == RetainedOrigin::Here {
            if let Some(cluster) = self.cluster.get() {
                cluster.retained_changed(topic, message);
            }
        }
        if self.store.is_none() {
            return Commit::NONE;
        }
        self.submit([retained_op(topic, message)])
    }

    /// Tells the cluster a session's subscriptions changed.
    pub(crate) fn subscriptions_changed(&self, session: &Session) {
        if let Some(cluster) = self.cluster.get() {
            cluster.subscriptions_changed(&session.client_id, &session.subscriptions());
        }
    }

    /// Stores a waiting will; false (nothing stored) without a store.
    pub(crate) fn put_will(
        &self,
        client_id: &str,
        message: &Message,
        expiry_interval: Option<u32>,
        due_at_ms: u64,
    ) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        store.submit([StoreOp::PutWill {
            client_id: client_id.to_string(),
            record: WillRecord {
                message: message_record(message),
                expiry_interval,
                due_at_ms,
            },
        }]);
        true
    }

    pub(crate) fn delete_will(&self, client_id: &str) {
        self.submit([StoreOp::DeleteWill {
            client_id: client_id.to_string(),
        }]);
    }

    /// Removes what a restore found stale (expired messages, ended sessions).
    pub(crate) fn remove_stale(&self, ops: impl IntoIterator<Item = StoreOp>) {
        self.submit(ops);
    }

    /// The commit of everything submitted so far.
    pub(crate) fn latest(&self) -> Commit {
        self.store
            .as_ref()
            .map_or(Commit::NONE, |store| Commit::of_ticket(store.last_ticket()))
    }

    /// Whether `commit` is committed now (see [`Store::is_committed`]).
    pub(crate) fn is_committed(&self, commit: Commit) -> Result<bool, StoreError> {
        match &self.store {
            Some(store) if commit.ticket() != 0 => store.is_committed(commit.ticket()),
            _ => Ok(true),
        }
    }

    /// Resolves once everything up to `commit` is committed.
    pub(crate) async fn wait(&self, commit: Commit) -> Result<(), StoreError> {
        match &self.store {
            Some(store) if commit.ticket() != 0 => store.wait(commit.ticket()).await,
            _ => Ok(()),
        }
    }
}

/// A session's handle on the store, made from the session's own fields when
/// needed rather than kept in every session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Persist<'a> {
    pub(crate) store: &'a Store,
    pub(crate) client_id: &'a str,
}

/// The stored id of one publish's message, shared by the deliveries of one
/// fan-out: the first persistent session stores the message, the others refer
/// to it, so its payload is written once however many sessions are owed it.
#[derive(Debug, Default)]
pub(crate) struct MessageSlot(std::cell::Cell<Option<u64>>);

impl Persist<'_> {
    /// Stores a new pending delivery queued at `queued_at_ms` (and its message,
    /// unless `slot` says this publish's message is stored already).
    pub(crate) fn put_delivery(
        &self,
        delivery: &Delivery,
        slot: &MessageSlot,
        queued_at_ms: u64,
    ) -> Commit {
        let (message_id, new) = match slot.0.get() {
            Some(id) => (id, false),
            None => {
                let id = self.store.next_message_id();
                slot.0.set(Some(id));
                (id, true)
            }
        };
        let message = new.then(|| StoreOp::PutMessage {
            id: message_id,
            record: message_record(&delivery.message),
        });
        let put = StoreOp::PutDelivery {
            client_id: self.client_id.to_string(),
            seq: delivery.seq,
            record: delivery_record(delivery, message_id, queued_at_ms),
        };
        Commit::of_ticket(self.store.submit(message.into_iter().chain([put])))
    }

    /// A stored delivery went out with `packet_id` (`released`: QoS 2 PUBREC came).
    pub(crate) fn mark_delivery(&self, seq: u64, packet_id: u16, released: bool) -> Commit {
        self.submit(StoreOp::MarkDelivery {
            client_id: self.client_id.to_string(),
            seq,
            packet_id,
            released,
        })
    }

    pub(crate) fn delete_delivery(&self, seq: u64) -> Commit {
        if seq == 0 {
            return Commit::NONE;
        }
        self.submit(StoreOp::DeleteDelivery {
            client_id: self.client_id.to_string(),
            seq,
        })
    }

    pub(crate) fn put_incoming_qos2(&self, packet_id: u16) -> Commit {
        self.submit(StoreOp::PutIncomingQos2 {
            client_id: self.client_id.to_string(),
            packet_id,
        })
    }

    pub(crate) fn delete_incoming_qos2(&self, packet_id: u16) -> Commit {
        self.submit(StoreOp::DeleteIncomingQos2 {
            client_id: self.client_id.to_string(),
            packet_id,
        })
    }

    fn submit(&self, op: StoreOp) -> Commit {
        Commit::of_ticket(self.store.submit([op]))
    }
}

/// A message as stored: instants become wall-clock milliseconds so expiry
/// survives a restart.
pub(crate) fn message_record(message: &Message) -> MessageRecord {
    let p = message.properties();
    MessageRecord {
        topic: message.topic.to_string(),
        payload: message.payload.to_vec(),
        qos: message.qos as u8,
        retain: message.retain,
        expires_at_ms: message.expires_at.map(instant_to_unix_ms),
        payload_is_utf8: p.payload_is_utf8,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.as_ref().map(|b| b.to_vec()),
        user_properties: p.user_properties.clone(),
        publisher: message.publisher.as_deref().map(str::to_string),
    }
}

/// `message_record`, borrowed from `message` (a stream append encodes it at once).
pub(crate) fn message_record_ref(message: &Message) -> MessageRecordRef<'_> {
    let p = message.properties();
    MessageRecordRef {
        topic: &message.topic,
        payload: &message.payload,
        qos: message.qos as u8,
        retain: message.retain,
        expires_at_ms: message.expires_at.map(instant_to_unix_ms),
        payload_is_utf8: p.payload_is_utf8,
        content_type: p.content_type.as_deref(),
        response_topic: p.response_topic.as_deref(),
        correlation_data: p.correlation_data.as_deref(),
        user_properties: &p.user_properties,
        publisher: message.publisher.as_deref(),
    }
}

/// A stored message brought back.
pub(crate) fn message_from_record(record: MessageRecord) -> Message {
    let properties = MessageProperties {
        payload_is_utf8: record.payload_is_utf8,
        content_type: record.content_type,
        response_topic: record.response_topic,
        correlation_data: record.correlation_data.map(Bytes::from),
        user_properties: record.user_properties,
    };
    Message {
        topic: Arc::from(record.topic),
        payload: Bytes::from(record.payload),
        qos: QoS::from_u8(record.qos).unwrap_or(QoS::AtLeastOnce),
        retain: record.retain,
        expires_at: record.expires_at_ms.map(unix_ms_to_instant),
        properties: properties.shared(),
        publisher: record.publisher.map(Arc::from),
    }
}

fn instant_to_unix_ms(at: Instant) -> u64 {
    let now = Instant::now();
    let base = unix_ms_now();
    if at >= now {
        let ahead = u64::try_from(at.duration_since(now).as_millis()).unwrap_or(u64::MAX);
        base.saturating_add(ahead)
    } else {
        let behind = u64::try_from(now.duration_since(at).as_millis()).unwrap_or(u64::MAX);
        base.saturating_sub(behind)
    }
}

fn unix_ms_to_instant(ms: u64) -> Instant {
    let base = unix_ms_now();
    let now = Instant::now();
    if ms >= base {
        now.checked_add(Duration::from_millis(ms - base))
            .unwrap_or(now)
    } else {
        now.checked_sub(Duration::from_millis(base - ms))
            .unwrap_or(now)
    }
}

/// A subscription as stored.
pub(crate) fn subscription_record(
    filter: &str,
    options: &SubscriptionOptions,
) -> SubscriptionRecord {
    SubscriptionRecord {
        filter: filter.to_string(),
        qos: options.qos as u8,
        no_local: options.no_local,
        retain_as_published: options.retain_as_published,
        retain_handling: options.retain_handling,
        subscription_id: options.subscription_id,
        selector: options.selector.as_ref().map(|s| s.text().to_owned()),
    }
}

/// A stored subscription's options.
pub(crate) fn subscription_options(record: &SubscriptionRecord) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::from_u8(record.qos).unwrap_or(QoS::AtMostOnce),
        no_local: record.no_local,
        retain_as_published: record.retain_as_published,
        retain_handling: record.retain_handling,
        subscription_id: record.subscription_id,
        // Derived from the ACL again when the session is resumed, never stored.
        exceptions: Exceptions::NONE,
        selector: None,
    }
}

/// A new pending delivery of the message stored as `message_id`.
pub(crate) fn delivery_record(
    delivery: &Delivery,
    message_id: u64,
    queued_at_ms: u64,
) -> DeliveryRecord {
    DeliveryRecord {
        message_id,
        qos: delivery.qos as u8,
        retain: delivery.retain,
        subscription_ids: delivery.subscription_ids.clone(),
        packet_id: None,
        released: false,
        queued_at_ms,
    }
}

/// A delivery brought back from the store, of `message` (shared by every
/// session the store owed it to).
pub(crate) fn delivery_from_record(
    seq: u64,
    record: DeliveryRecord,
    message: Arc<Message>,
) -> Delivery {
    Delivery {
        qos: QoS::from_u8(record.qos).unwrap_or(QoS::AtLeastOnce),
        retain: record.retain,
        subscription_ids: record.subscription_ids,
        message,
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
    subscriptions: &[(Filter, SubscriptionOptions)],
) -> SessionRecord {
    SessionRecord {
        expiry_interval,
        disconnected_at_ms,
        owner: owner_record(owner),
        subscriptions: subscriptions
            .iter()
            .map(|(filter, options)| subscription_record(filter.as_str(), options))
            .collect(),
    }
}

/// A retained message as stored.
pub(crate) fn retained_op(topic: &str, message: Option<&Message>) -> StoreOp {
    match message {
        Some(message) => StoreOp::PutRetained {
            record: message_record(message),
        },
        None => StoreOp::DeleteRetained {
            topic: topic.to_string(),
        },
    }
}
