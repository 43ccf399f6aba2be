//! The protocol-neutral message every adapter translates into and out of.
//!
//! One `Arc<Message>` is shared by every subscriber it is delivered to; the
//! payload is a `Bytes` slice of the publisher's read buffer, never copied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Delivery guarantee, the routing core's own type (MQTT's three levels; STOMP maps onto them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// What MQTT 5 properties and STOMP headers have in common; carried unchanged
/// from publisher to subscriber whatever the two protocols are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageProperties {
    /// True when the publisher declared the payload UTF-8 text (MQTT payload format indicator 1).
    pub payload_is_utf8: bool,
    pub content_type: Option<String>,
    /// Where a reply should go (MQTT response topic, STOMP `reply-to`), as a core topic.
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    /// MQTT 5 user properties / STOMP custom headers, order and repeats kept.
    pub user_properties: Vec<(String, String)>,
}

impl MessageProperties {
    /// No property set: what most messages carry.
    pub const NONE: MessageProperties = MessageProperties {
        payload_is_utf8: false,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    };

    pub fn is_empty(&self) -> bool {
        *self == MessageProperties::NONE
    }

    /// How a message holds `self`: nothing at all when empty, so the common
    /// message costs no allocation (and no free on the subscriber's thread).
    pub fn shared(self) -> Option<Arc<MessageProperties>> {
        (!self.is_empty()).then(|| Arc::new(self))
    }
}

#[derive(Debug, Clone)]
pub struct Message {
    pub topic: Arc<str>,
    pub payload: Bytes,
    /// QoS the publisher sent with; each subscriber gets at most its subscription's QoS.
    pub qos: QoS,
    pub retain: bool,
    /// Absolute expiry (MQTT message expiry interval, STOMP `expires`); expired messages are not delivered.
    pub expires_at: Option<Instant>,
    /// Shared rather than inline, and None when empty, so the common
    /// no-properties case costs one pointer and no allocation. Read with
    /// [`Message::properties`].
    pub properties: Option<Arc<MessageProperties>>,
    /// Client id of the publisher, so no-local subscriptions can skip their own messages.
    pub publisher: Option<Arc<str>>,
}

impl Message {
    pub fn new(topic: impl Into<Arc<str>>, payload: Bytes, qos: QoS, retain: bool) -> Message {
        Message {
            topic: topic.into(),
            payload,
            qos,
            retain,
            expires_at: None,
            properties: None,
            publisher: None,
        }
    }

    /// The message's properties ([`MessageProperties::NONE`] when it has none).
    pub fn properties(&self) -> &MessageProperties {
        static NONE: MessageProperties = MessageProperties::NONE;
        self.properties.as_deref().unwrap_or(&NONE)
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Whole seconds left before expiry, rounded up (what MQTT 5 forwards as the updated interval).
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }

    pub fn expiry_from_interval(seconds: u32) -> Option<Instant> {
        Instant::now().checked_add(Duration::from_secs(u64::from(seconds)))
    }
}

/// One message on its way to one session, with what that session's subscription decided.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Arc<Message>,
    /// min(publish QoS, subscription QoS).
    pub qos: QoS,
    /// Retain flag as the subscriber must see it (set for retained messages sent on subscribe,
    /// or kept on live messages when the subscription asked for retain-as-published).
    pub retain: bool,
    /// MQTT 5 subscription identifiers of every matching subscription.
    pub subscription_ids: Vec<u32>,
    /// The filter that matched (STOMP needs it to name the subscription).
    pub filter: Option<Arc<str>>,
    /// Key of this delivery in the store (0: not stored). Set by the session.
    pub seq: u64,
}
