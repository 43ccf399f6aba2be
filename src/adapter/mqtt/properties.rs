//! MQTT PUBLISH properties ⇄ core message, both ways; pure functions (the
//! connection state they need, such as topic aliases, stays with the caller).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tern_mqtt::{Properties, ProtocolVersion};

use crate::core::message::{Delivery, Message, MessageProperties, QoS};

/// Builds a core message from the parts of a PUBLISH or a will.
///
/// - `topic`, `payload`, `qos`, `retain` are taken as given (a topic alias is
///   resolved before).
/// - payload format indicator 1 → the payload is UTF-8; 0 or absent → not said.
/// - content type, response topic, correlation data → the same message properties.
/// - user properties → user properties, order and repeats kept.
/// - message expiry interval (seconds) → expires that long from now; absent →
///   never expires.
/// - `publisher`: the client id, for no-local.
/// - Other properties (topic alias, subscription identifiers) are not part of
///   the message.
pub(super) fn message_from_parts(
    topic: Arc<str>,
    payload: Bytes,
    qos: QoS,
    retain: bool,
    properties: &Properties,
    publisher: Arc<str>,
) -> Message {
    let shared = MessageProperties {
        payload_is_utf8: properties.payload_format_indicator == Some(1),
        content_type: properties.content_type.clone(),
        response_topic: properties.response_topic.clone(),
        correlation_data: properties.correlation_data.clone(),
        user_properties: properties.user_properties.clone(),
    };
    Message {
        topic,
        payload,
        qos,
        retain,
        expires_at: properties
            .message_expiry_interval
            .and_then(Message::expiry_from_interval),
        properties: shared.shared(),
        publisher: Some(publisher),
    }
}

/// The properties of the PUBLISH that carries `delivery` to a client of
/// `version` at `now`.
///
/// - 3.1 / 3.1.1: none (those versions have no properties).
/// - 5.0, from the message: UTF-8 payload → payload format indicator 1 (absent
///   otherwise); content type, response topic, correlation data and user
///   properties (order and repeats kept) as published; an expiry → message
///   expiry interval, the whole seconds left at `now` rounded up (absent: it
///   never expires).
/// - 5.0, from the delivery: the identifiers of every matching subscription
///   that has one → subscription identifiers.
/// - The topic alias is not set here: the connection chooses it, for a PUBLISH
///   that goes out.
pub(super) fn publish_properties(
    delivery: &Delivery,
    version: ProtocolVersion,
    now: Instant,
) -> Properties {
    let mut properties = Properties::default();
    if version != ProtocolVersion::V5 {
        return properties;
    }
    let message = &delivery.message;
    let shared = message.properties();
    if shared.payload_is_utf8 {
        properties.payload_format_indicator = Some(1);
    }
    properties.message_expiry_interval = message.remaining_expiry(now);
    properties.content_type.clone_from(&shared.content_type);
    properties.response_topic.clone_from(&shared.response_topic);
    properties
        .correlation_data
        .clone_from(&shared.correlation_data);
    properties
        .user_properties
        .clone_from(&shared.user_properties);
    properties
        .subscription_identifiers
        .clone_from(&delivery.subscription_ids);
    properties
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn build(properties: &Properties) -> Message {
        message_from_parts(
            Arc::from("a/b"),
            Bytes::from_static(b"hi"),
            QoS::AtLeastOnce,
            true,
            properties,
            Arc::from("pub-1"),
        )
    }

    fn full_properties() -> Properties {
        Properties {
            payload_format_indicator: Some(1),
            content_type: Some("application/json".into()),
            response_topic: Some("replies/1".into()),
            correlation_data: Some(Bytes::from_static(b"\x00c")),
            user_properties: vec![
                ("k".into(), "1".into()),
                ("k".into(), "2".into()),
                ("a".into(), "x".into()),
            ],
            message_expiry_interval: Some(60),
            topic_alias: Some(3),
            subscription_identifiers: vec![9],
            ..Properties::default()
        }
    }

    fn delivery(message: Message, subscription_ids: Vec<u32>) -> Delivery {
        Delivery {
            message: Arc::new(message),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids,
            filter: None,
            seq: 0,
        }
    }

    #[test]
    fn publish_parts_are_taken_as_given_with_the_publisher() {
        let m = build(&Properties::default());
        assert_eq!(&*m.topic, "a/b");
        assert_eq!(&m.payload[..], b"hi");
        assert_eq!(m.qos, QoS::AtLeastOnce);
        assert!(m.retain);
        assert_eq!(m.publisher.as_deref(), Some("pub-1"));
        assert!(m.properties.is_none(), "no properties: nothing shared");
        assert!(m.expires_at.is_none(), "no expiry interval: never expires");
    }

    #[test]
    fn publish_properties_become_message_properties() {
        let m = build(&full_properties());
        let p = m.properties();
        assert!(p.payload_is_utf8);
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        assert_eq!(p.response_topic.as_deref(), Some("replies/1"));
        assert_eq!(p.correlation_data.as_deref(), Some(&b"\x00c"[..]));
        assert_eq!(
            p.user_properties,
            vec![
                ("k".to_string(), "1".to_string()),
                ("k".to_string(), "2".to_string()),
                ("a".to_string(), "x".to_string())
            ],
            "order and repeats kept"
        );
    }

    #[test]
    fn payload_format_indicator_zero_says_nothing() {
        let properties = Properties {
            payload_format_indicator: Some(0),
            ..Properties::default()
        };
        assert!(!build(&properties).properties().payload_is_utf8);
    }

    #[test]
    fn message_expiry_interval_becomes_an_expiry_from_now() {
        let before = Instant::now();
        let m = build(&full_properties());
        let at = m.expires_at.expect("expires");
        assert!(at >= before + Duration::from_secs(60));
        assert!(at <= Instant::now() + Duration::from_secs(60));
    }

    #[test]
    fn a_3x_client_gets_no_properties() {
        let d = delivery(build(&full_properties()), vec![4]);
        let now = Instant::now();
        assert_eq!(
            publish_properties(&d, ProtocolVersion::V311, now),
            Properties::default()
        );
        assert_eq!(
            publish_properties(&d, ProtocolVersion::V31, now),
            Properties::default()
        );
    }

    #[test]
    fn a_5_client_gets_the_message_properties_and_subscription_ids() {
        let d = delivery(build(&full_properties()), vec![4, 7]);
        let p = publish_properties(&d, ProtocolVersion::V5, Instant::now());
        assert_eq!(p.payload_format_indicator, Some(1));
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        assert_eq!(p.response_topic.as_deref(), Some("replies/1"));
        assert_eq!(p.correlation_data.as_deref(), Some(&b"\x00c"[..]));
        assert_eq!(p.user_properties.len(), 3);
        assert_eq!(p.user_properties[1], ("k".to_string(), "2".to_string()));
        assert_eq!(p.subscription_identifiers, vec![4, 7]);
        assert_eq!(p.topic_alias, None, "the connection chooses aliases");
    }

    #[test]
    fn a_5_client_is_not_told_utf8_or_expiry_the_message_does_not_have() {
        let d = delivery(build(&Properties::default()), vec![]);
        let p = publish_properties(&d, ProtocolVersion::V5, Instant::now());
        assert_eq!(p, Properties::default());
    }

    #[test]
    fn the_expiry_interval_forwarded_is_what_is_left_rounded_up() {
        let d = delivery(build(&full_properties()), vec![]);
        let at = d.message.expires_at.expect("expires");
        let p = publish_properties(&d, ProtocolVersion::V5, at - Duration::from_millis(20_500));
        assert_eq!(p.message_expiry_interval, Some(21));
        let p = publish_properties(&d, ProtocolVersion::V5, at + Duration::from_secs(1));
        assert_eq!(p.message_expiry_interval, Some(0), "past its expiry");
    }
}
