//! What the store keeps, as plain serde records (encoded with postcard). The
//! store knows records and bytes only: the core converts its own types from
//! and to them (`core::router::persist`).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A message as stored: instants become wall-clock milliseconds so expiry survives a restart.
/// Byte fields go through `serde_bytes`: postcard writes them as before (a
/// varint length, then the bytes) but reads and writes them in one piece,
/// not one byte at a time (a replay decodes millions of payloads a second).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub topic: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// Unix milliseconds.
    pub expires_at_ms: Option<u64>,
    pub payload_is_utf8: bool,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    #[serde(with = "serde_bytes")]
    pub correlation_data: Option<Vec<u8>>,
    pub user_properties: Vec<(String, String)>,
    pub publisher: Option<String>,
}

/// Wall-clock milliseconds now.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One origin's mark as stored (`core::peer_marks::PeerMark`): the last
/// message of node `node`'s run `epoch` routed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerMarkRecord {
    pub node: String,
    pub epoch: u64,
    pub seq: u64,
}

/// A subscription as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
    pub subscription_id: Option<u32>,
    /// The selector's text. Kept in a table of its own by the backend (as
    /// the owner), so records written before selectors existed still decode.
    #[serde(skip)]
    pub selector: Option<String>,
}

/// A persistent session: what is needed to bring it back after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Seconds the session outlives its connection (`u32::MAX`: never expires).
    pub expiry_interval: u32,
    /// Unix ms of the last disconnect; None while connected (a crash counts from the restart).
    pub disconnected_at_ms: Option<u64>,
    pub subscriptions: Vec<SubscriptionRecord>,
    /// Kept in a table of its own by the backend, so records written before
    /// owners were recorded still decode (their owner is `Unknown`).
    #[serde(skip)]
    pub owner: OwnerRecord,
}

/// Who a stored session belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OwnerRecord {
    /// Stored before owners were recorded.
    #[default]
    Unknown,
    Anonymous,
    User(String),
}

/// One message owed to a persistent session, pending or in flight. The
/// message itself is stored once per publish (`StoreOp::PutMessage`), however
/// many sessions it is owed to, and referred to by its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub message_id: u64,
    pub qos: u8,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
    /// Set once sent: the packet id it went out with, so a resend uses the same one.
    pub packet_id: Option<u16>,
    /// True after PUBREC (QoS 2): only PUBREL/PUBCOMP remain.
    pub released: bool,
    /// Unix ms when it was queued for the session (0: unknown), so a queue's
    /// age bound (`max_queued_age` of a bridge) holds across a restart.
    pub queued_at_ms: u64,
}

/// A delivery as stored by format version 2: a message id and the fields that
/// follow it, without the queue time (read only to migrate such a store).
/// postcard writes a nested struct as its fields in a row, so this reads the
/// flat record of that version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecordV2 {
    pub message_id: u64,
    pub rest: OldDeliveryFields,
}

/// A delivery as stored by format version 1: its own copy of the message and
/// the same fields as version 2 after it (read only to migrate such a store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecordV1 {
    pub message: MessageRecord,
    pub rest: OldDeliveryFields,
}

/// What formats 1 and 2 stored of a delivery after its message (or message id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OldDeliveryFields {
    pub qos: u8,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
    pub packet_id: Option<u16>,
    pub released: bool,
}

impl OldDeliveryFields {
    /// The current record of a delivery of `message_id`, queued at `queued_at_ms`.
    pub fn current(self, message_id: u64, queued_at_ms: u64) -> DeliveryRecord {
        DeliveryRecord {
            message_id,
            qos: self.qos,
            retain: self.retain,
            subscription_ids: self.subscription_ids,
            packet_id: self.packet_id,
            released: self.released,
            queued_at_ms,
        }
    }
}

/// A will waiting for its delay: published at `due_at_ms` unless its session resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WillRecord {
    pub message: MessageRecord,
    /// Message expiry of the will, seconds from when it is published.
    pub expiry_interval: Option<u32>,
    /// Unix ms when the delay ends; or, for the will of a live connection
    /// stored in a cluster's shared store ([`WillRecord::armed_due`]), the
    /// delay itself, marked by the top bit (above any wall-clock time).
    pub due_at_ms: u64,
}

/// The top bit of `WillRecord::due_at_ms`: the will of a live connection.
const ARMED: u64 = 1 << 63;

impl WillRecord {
    /// `due_at_ms` of the will of a live connection whose delay is
    /// `delay_secs`: the delay starts when the connection is found gone.
    pub fn armed_due(delay_secs: u32) -> u64 {
        ARMED | u64::from(delay_secs)
    }

    /// The delay of the will of a live connection; None for a will whose
    /// delay is running (`due_at_ms` is a time).
    pub fn armed_delay(&self) -> Option<u32> {
        (self.due_at_ms & ARMED != 0)
            .then(|| u32::try_from(self.due_at_ms & !ARMED).unwrap_or(u32::MAX))
    }
}

/// One message of a durable stream, at its offset (the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    /// Unix milliseconds when it was published. First in the encoding, with
    /// `size`, so retention reads both without decoding the message.
    pub time_ms: u64,
    /// Topic plus payload bytes: what `max_bytes` counts.
    pub size: u64,
    pub message: MessageRecord,
}

/// A `StreamRecord` borrowed from the message it keeps, encoded exactly as
/// the owned one (same fields, same order, same serde shapes), so an append
/// encodes once, at the publish, without copying the message into owned fields.
#[derive(Debug, Serialize)]
pub struct StreamRecordRef<'a> {
    pub time_ms: u64,
    pub size: u64,
    pub message: MessageRecordRef<'a>,
}

/// `MessageRecord`, borrowed: see `StreamRecordRef`.
#[derive(Debug, Serialize)]
pub struct MessageRecordRef<'a> {
    pub topic: &'a str,
    #[serde(with = "serde_bytes")]
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
    pub expires_at_ms: Option<u64>,
    pub payload_is_utf8: bool,
    pub content_type: Option<&'a str>,
    pub response_topic: Option<&'a str>,
    #[serde(with = "serde_bytes")]
    pub correlation_data: Option<&'a [u8]>,
    pub user_properties: &'a [(String, String)],
    pub publisher: Option<&'a str>,
}

/// What the store knows of one stream at start: its offsets and bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamState {
    pub name: String,
    /// Offset of the oldest message kept (`next` when empty).
    pub first: u64,
    /// Offset the next message gets.
    pub next: u64,
    /// Sum of the kept messages' `size`.
    pub bytes: u64,
    /// Publish time of the oldest message kept (0 when empty).
    pub first_time_ms: u64,
}

/// A stream another node sharing the store created or deleted (admin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamChange {
    /// Created: its declaration as stored (`StoreOp::PutStreamDeclaration`).
    Created {
        stream: String,
        settings: Vec<u8>,
    },
    Deleted {
        stream: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_armed_will_keeps_its_delay_and_a_waiting_one_its_time() {
        let will = |due_at_ms| WillRecord {
            message: crate::store::suite::message("t"),
            expiry_interval: None,
            due_at_ms,
        };
        assert_eq!(will(WillRecord::armed_due(0)).armed_delay(), Some(0));
        assert_eq!(
            will(WillRecord::armed_due(u32::MAX)).armed_delay(),
            Some(u32::MAX)
        );
        assert_eq!(will(unix_ms_now()).armed_delay(), None);
        assert_eq!(will(0).armed_delay(), None);
    }

    /// `MessageRecord` as stored before its byte fields went through
    /// `serde_bytes` (plain `Vec<u8>`, serialized element by element).
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct MessageRecordBefore {
        topic: String,
        payload: Vec<u8>,
        qos: u8,
        retain: bool,
        expires_at_ms: Option<u64>,
        payload_is_utf8: bool,
        content_type: Option<String>,
        response_topic: Option<String>,
        correlation_data: Option<Vec<u8>>,
        user_properties: Vec<(String, String)>,
        publisher: Option<String>,
    }

    #[test]
    fn byte_fields_keep_their_encoding_so_stored_records_read_the_same() {
        for (payload, correlation) in [
            (vec![0u8, 1, 127, 128, 255], Some(vec![9u8; 300])),
            (vec![7u8; 70_000], None),
            (Vec::new(), Some(Vec::new())),
        ] {
            let before = MessageRecordBefore {
                topic: "sensors/room1".into(),
                payload: payload.clone(),
                qos: 1,
                retain: true,
                expires_at_ms: Some(123),
                payload_is_utf8: false,
                content_type: Some("application/octet-stream".into()),
                response_topic: None,
                correlation_data: correlation.clone(),
                user_properties: vec![("k".into(), "v".into())],
                publisher: Some("alice".into()),
            };
            let stored = postcard::to_allocvec(&before).unwrap();
            let now: MessageRecord = postcard::from_bytes(&stored).unwrap();
            assert_eq!(now.payload, payload);
            assert_eq!(now.correlation_data, correlation);
            assert_eq!(now.topic, before.topic);
            assert_eq!(now.publisher, before.publisher);
            // Written again, the same bytes; and the borrowed form agrees.
            assert_eq!(postcard::to_allocvec(&now).unwrap(), stored);
            let borrowed = MessageRecordRef {
                topic: &now.topic,
                payload: &now.payload,
                qos: now.qos,
                retain: now.retain,
                expires_at_ms: now.expires_at_ms,
                payload_is_utf8: now.payload_is_utf8,
                content_type: now.content_type.as_deref(),
                response_topic: now.response_topic.as_deref(),
                correlation_data: now.correlation_data.as_deref(),
                user_properties: &now.user_properties,
                publisher: now.publisher.as_deref(),
            };
            assert_eq!(postcard::to_allocvec(&borrowed).unwrap(), stored);
        }
    }
}
