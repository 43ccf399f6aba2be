//! What the store keeps, as plain serde records (encoded with postcard), and
//! their conversion from and to the core's types.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::core::message::{Message, MessageProperties, QoS};
use crate::core::session::SubscriptionOptions;

/// A message as stored: instants become wall-clock milliseconds so expiry survives a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// Unix milliseconds.
    pub expires_at_ms: Option<u64>,
    pub payload_is_utf8: bool,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
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

impl MessageRecord {
    pub fn from_message(message: &Message) -> MessageRecord {
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

    pub fn into_message(self) -> Message {
        let properties = MessageProperties {
            payload_is_utf8: self.payload_is_utf8,
            content_type: self.content_type,
            response_topic: self.response_topic,
            correlation_data: self.correlation_data.map(Bytes::from),
            user_properties: self.user_properties,
        };
        Message {
            topic: Arc::from(self.topic),
            payload: Bytes::from(self.payload),
            qos: QoS::from_u8(self.qos).unwrap_or(QoS::AtLeastOnce),
            retain: self.retain,
            expires_at: self.expires_at_ms.map(unix_ms_to_instant),
            properties: properties.shared(),
            publisher: self.publisher.map(Arc::from),
        }
    }
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
}

impl SubscriptionRecord {
    pub fn new(filter: &str, options: &SubscriptionOptions) -> SubscriptionRecord {
        SubscriptionRecord {
            filter: filter.to_string(),
            qos: options.qos as u8,
            no_local: options.no_local,
            retain_as_published: options.retain_as_published,
            retain_handling: options.retain_handling,
            subscription_id: options.subscription_id,
        }
    }

    pub fn options(&self) -> SubscriptionOptions {
        SubscriptionOptions {
            qos: QoS::from_u8(self.qos).unwrap_or(QoS::AtMostOnce),
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            retain_handling: self.retain_handling,
            subscription_id: self.subscription_id,
            // Derived from the ACL again when the session is resumed, never stored.
            exceptions: crate::core::exceptions::Exceptions::NONE,
        }
    }
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

/// One message owed to a persistent session, pending or in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub message: MessageRecord,
    pub qos: u8,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
    /// Set once sent: the packet id it went out with, so a resend uses the same one.
    pub packet_id: Option<u16>,
    /// True after PUBREC (QoS 2): only PUBREL/PUBCOMP remain.
    pub released: bool,
}

/// A will waiting for its delay: published at `due_at_ms` unless its session resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WillRecord {
    pub message: MessageRecord,
    /// Message expiry of the will, seconds from when it is published.
    pub expiry_interval: Option<u32>,
    /// Unix ms when the delay ends.
    pub due_at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_survives_record_round_trip() {
        let mut message = Message::new(
            "a/b",
            Bytes::from_static(b"\x00\x01payload"),
            QoS::ExactlyOnce,
            true,
        );
        message.expires_at = Message::expiry_from_interval(60);
        message.publisher = Some(Arc::from("pub-1"));
        message.properties = Some(Arc::new(MessageProperties {
            payload_is_utf8: false,
            content_type: Some("application/json".into()),
            response_topic: Some("reply/x".into()),
            correlation_data: Some(Bytes::from_static(b"corr")),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "v2".into())],
        }));
        let record = MessageRecord::from_message(&message);
        let bytes = postcard::to_allocvec(&record).unwrap();
        let back: MessageRecord = postcard::from_bytes(&bytes).unwrap();
        let restored = back.into_message();
        assert_eq!(restored.topic, message.topic);
        assert_eq!(restored.payload, message.payload);
        assert_eq!(restored.qos, message.qos);
        assert!(restored.retain);
        assert_eq!(restored.properties, message.properties);
        assert_eq!(restored.publisher.as_deref(), Some("pub-1"));
        let left = restored.remaining_expiry(Instant::now()).unwrap();
        assert!((58..=61).contains(&left), "{left}");
    }
}
