//! Proptest strategies generating packets that are valid for a given protocol version,
//! shared by the round-trip and oracle tests. The allowed-property table here is written
//! independently from the crate's, so the two cross-check each other.
#![allow(dead_code)]

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use tern_mqtt::{
    reason, Ack, Auth, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, Publish,
    QoS, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};

/// Packet families with distinct property sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Will,
    ConnAck,
    Publish,
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

/// Any UTF-8 string without U+0000.
pub fn string() -> impl Strategy<Value = String> {
    "[^\\x00]{0,12}"
}

/// A valid topic name: non-empty, no wildcards, no U+0000.
pub fn topic() -> impl Strategy<Value = String> {
    "[^\\x00+#]{1,12}"
}

pub fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

pub fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

pub fn packet_id() -> impl Strategy<Value = u16> {
    1u16..
}

fn flag() -> impl Strategy<Value = Option<u8>> {
    option::of(0u8..=1)
}

/// Every property with a valid value, before restriction to one packet kind.
fn any_properties() -> impl Strategy<Value = Properties> {
    let a = (
        flag(),
        option::of(any::<u32>()),
        option::of(string()),
        option::of(string()),
        option::of(binary()),
        vec(1u32..=268_435_455, 0..3),
        option::of(any::<u32>()),
        option::of(string()),
        option::of(any::<u16>()),
        option::of(string()),
        option::of(binary()),
        flag(),
    );
    let b = (
        option::of(any::<u32>()),
        flag(),
        option::of(string()),
        option::of(string()),
        option::of(string()),
        option::of(1u16..),
        option::of(any::<u16>()),
        option::of(1u16..),
        flag(),
        flag(),
        vec((string(), string()), 0..3),
        option::of(1u32..),
    );
    let c = (flag(), flag(), flag());
    (a, b, c).prop_map(|(a, b, c)| Properties {
        payload_format_indicator: a.0,
        message_expiry_interval: a.1,
        content_type: a.2,
        response_topic: a.3,
        correlation_data: a.4,
        subscription_identifiers: a.5,
        session_expiry_interval: a.6,
        assigned_client_identifier: a.7,
        server_keep_alive: a.8,
        authentication_method: a.9,
        authentication_data: a.10,
        request_problem_information: a.11,
        will_delay_interval: b.0,
        request_response_information: b.1,
        response_information: b.2,
        server_reference: b.3,
        reason_string: b.4,
        receive_maximum: b.5,
        topic_alias_maximum: b.6,
        topic_alias: b.7,
        maximum_qos: b.8,
        retain_available: b.9,
        user_properties: b.10,
        maximum_packet_size: b.11,
        wildcard_subscription_available: c.0,
        subscription_identifier_available: c.1,
        shared_subscription_available: c.2,
    })
}

/// Clears every property MQTT 5.0 (table 2.2.2.2) does not allow for `kind`.
pub fn restrict(p: Properties, kind: Kind) -> Properties {
    use Kind::*;
    let keep = |kinds: &[Kind]| kinds.contains(&kind);
    let mut sub_ids = if keep(&[Publish, Subscribe]) {
        p.subscription_identifiers
    } else {
        Vec::new()
    };
    if kind == Subscribe {
        sub_ids.truncate(1);
    }
    Properties {
        payload_format_indicator: p
            .payload_format_indicator
            .filter(|_| keep(&[Publish, Will])),
        message_expiry_interval: p.message_expiry_interval.filter(|_| keep(&[Publish, Will])),
        content_type: p.content_type.filter(|_| keep(&[Publish, Will])),
        response_topic: p.response_topic.filter(|_| keep(&[Publish, Will])),
        correlation_data: p.correlation_data.filter(|_| keep(&[Publish, Will])),
        subscription_identifiers: sub_ids,
        session_expiry_interval: p
            .session_expiry_interval
            .filter(|_| keep(&[Connect, ConnAck, Disconnect])),
        assigned_client_identifier: p.assigned_client_identifier.filter(|_| keep(&[ConnAck])),
        server_keep_alive: p.server_keep_alive.filter(|_| keep(&[ConnAck])),
        authentication_method: p
            .authentication_method
            .filter(|_| keep(&[Connect, ConnAck, Auth])),
        authentication_data: p
            .authentication_data
            .filter(|_| keep(&[Connect, ConnAck, Auth])),
        request_problem_information: p.request_problem_information.filter(|_| keep(&[Connect])),
        will_delay_interval: p.will_delay_interval.filter(|_| keep(&[Will])),
        request_response_information: p.request_response_information.filter(|_| keep(&[Connect])),
        response_information: p.response_information.filter(|_| keep(&[ConnAck])),
        server_reference: p.server_reference.filter(|_| keep(&[ConnAck, Disconnect])),
        reason_string: p
            .reason_string
            .filter(|_| keep(&[ConnAck, Ack, SubAck, UnsubAck, Disconnect, Auth])),
        receive_maximum: p.receive_maximum.filter(|_| keep(&[Connect, ConnAck])),
        topic_alias_maximum: p.topic_alias_maximum.filter(|_| keep(&[Connect, ConnAck])),
        topic_alias: p.topic_alias.filter(|_| keep(&[Publish])),
        maximum_qos: p.maximum_qos.filter(|_| keep(&[ConnAck])),
        retain_available: p.retain_available.filter(|_| keep(&[ConnAck])),
        user_properties: p.user_properties,
        maximum_packet_size: p.maximum_packet_size.filter(|_| keep(&[Connect, ConnAck])),
        wildcard_subscription_available: p
            .wildcard_subscription_available
            .filter(|_| keep(&[ConnAck])),
        subscription_identifier_available: p
            .subscription_identifier_available
            .filter(|_| keep(&[ConnAck])),
        shared_subscription_available: p.shared_subscription_available.filter(|_| keep(&[ConnAck])),
    }
}

/// Properties valid for `kind`; always empty before 5.0.
pub fn properties(v: ProtocolVersion, kind: Kind) -> BoxedStrategy<Properties> {
    if v == ProtocolVersion::V5 {
        any_properties()
            .prop_map(move |p| restrict(p, kind))
            .boxed()
    } else {
        Just(Properties::default()).boxed()
    }
}

/// A reason code from `codes` in 5.0, success before.
fn reason_from(v: ProtocolVersion, codes: &'static [u8]) -> BoxedStrategy<u8> {
    if v == ProtocolVersion::V5 {
        proptest::sample::select(codes).boxed()
    } else {
        Just(0).boxed()
    }
}

pub fn will(v: ProtocolVersion) -> impl Strategy<Value = Will> {
    (
        topic(),
        binary(),
        qos(),
        any::<bool>(),
        properties(v, Kind::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
}

pub fn connect(v: ProtocolVersion) -> impl Strategy<Value = Connect> {
    (
        any::<bool>(),
        any::<u16>(),
        string(),
        option::of(will(v)),
        option::of(string()),
        option::of(binary()),
        properties(v, Kind::Connect),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // 3.x forbids a password without a username.
                let password = if v == ProtocolVersion::V5 || username.is_some() {
                    password
                } else {
                    None
                };
                Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                    bridge: false,
                }
            },
        )
}

pub fn connack(v: ProtocolVersion) -> impl Strategy<Value = ConnAck> {
    let code = if v == ProtocolVersion::V5 {
        proptest::sample::select(reason::CONNACK).boxed()
    } else {
        (0u8..=5).boxed()
    };
    (any::<bool>(), code, properties(v, Kind::ConnAck)).prop_map(
        |(session_present, code, properties)| ConnAck {
            session_present: session_present && code == 0,
            code,
            properties,
        },
    )
}

pub fn publish(v: ProtocolVersion) -> impl Strategy<Value = Publish> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic(),
        any::<bool>(),
        packet_id(),
        properties(v, Kind::Publish),
        binary(),
    )
        .prop_map(
            |(qos, dup, retain, topic, use_alias, id, properties, payload)| {
                let qos0 = qos == QoS::AtMostOnce;
                // 5.0 may leave the topic empty when a topic alias stands in for it.
                let topic = if use_alias && properties.topic_alias.is_some() {
                    String::new()
                } else {
                    topic
                };
                Publish {
                    dup: dup && !qos0,
                    qos,
                    retain,
                    topic,
                    packet_id: (!qos0).then_some(id),
                    properties,
                    payload,
                }
            },
        )
}

pub fn ack(v: ProtocolVersion, codes: &'static [u8]) -> impl Strategy<Value = Ack> {
    (packet_id(), reason_from(v, codes), properties(v, Kind::Ack)).prop_map(
        |(packet_id, reason, properties)| Ack {
            packet_id,
            reason,
            properties,
        },
    )
}

pub fn subscription_options(v: ProtocolVersion) -> BoxedStrategy<SubscriptionOptions> {
    if v == ProtocolVersion::V5 {
        (qos(), any::<bool>(), any::<bool>(), 0u8..=2)
            .prop_map(
                |(qos, no_local, retain_as_published, retain_handling)| SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published,
                    retain_handling,
                },
            )
            .boxed()
    } else {
        qos()
            .prop_map(|qos| SubscriptionOptions {
                qos,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            })
            .boxed()
    }
}

pub fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Subscribe> {
    let filter = (string(), subscription_options(v))
        .prop_map(|(filter, options)| SubscribeFilter { filter, options });
    (
        packet_id(),
        vec(filter, 1..4),
        properties(v, Kind::Subscribe),
    )
        .prop_map(|(packet_id, filters, properties)| Subscribe {
            packet_id,
            filters,
            properties,
        })
}

pub fn suback(v: ProtocolVersion) -> impl Strategy<Value = SubAck> {
    let codes: &'static [u8] = if v == ProtocolVersion::V5 {
        reason::SUBACK
    } else {
        reason::SUBACK_V3
    };
    (
        packet_id(),
        vec(proptest::sample::select(codes), 1..5),
        properties(v, Kind::SubAck),
    )
        .prop_map(|(packet_id, codes, properties)| SubAck {
            packet_id,
            codes,
            properties,
        })
}

pub fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Unsubscribe> {
    (
        packet_id(),
        vec(string(), 1..4),
        properties(v, Kind::Unsubscribe),
    )
        .prop_map(|(packet_id, filters, properties)| Unsubscribe {
            packet_id,
            filters,
            properties,
        })
}

pub fn unsuback(v: ProtocolVersion) -> impl Strategy<Value = UnsubAck> {
    let codes = if v == ProtocolVersion::V5 {
        vec(proptest::sample::select(reason::UNSUBACK), 1..5).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (packet_id(), codes, properties(v, Kind::UnsubAck)).prop_map(
        |(packet_id, codes, properties)| UnsubAck {
            packet_id,
            codes,
            properties,
        },
    )
}

pub fn disconnect(v: ProtocolVersion) -> impl Strategy<Value = Disconnect> {
    (
        reason_from(v, reason::DISCONNECT),
        properties(v, Kind::Disconnect),
    )
        .prop_map(|(reason, properties)| Disconnect { reason, properties })
}

pub fn auth() -> impl Strategy<Value = Auth> {
    (
        proptest::sample::select(reason::AUTH),
        properties(ProtocolVersion::V5, Kind::Auth),
    )
        .prop_map(|(reason, properties)| Auth { reason, properties })
}

/// Any packet valid in `v` (CONNECT carries `v` as its own protocol).
pub fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(v).prop_map(Packet::Connect),
        connack(v).prop_map(Packet::ConnAck),
        publish(v).prop_map(Packet::Publish),
        ack(v, reason::PUBACK).prop_map(Packet::PubAck),
        ack(v, reason::PUBACK).prop_map(Packet::PubRec),
        ack(v, reason::PUBREL).prop_map(Packet::PubRel),
        ack(v, reason::PUBREL).prop_map(Packet::PubComp),
        subscribe(v).prop_map(Packet::Subscribe),
        suback(v).prop_map(Packet::SubAck),
        unsubscribe(v).prop_map(Packet::Unsubscribe),
        unsuback(v).prop_map(Packet::UnsubAck),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(v).prop_map(Packet::Disconnect),
    ];
    if v == ProtocolVersion::V5 {
        prop_oneof![14 => common, 1 => auth().prop_map(Packet::Auth)].boxed()
    } else {
        common.boxed()
    }
}

pub const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];

pub fn version() -> impl Strategy<Value = ProtocolVersion> {
    proptest::sample::select(&VERSIONS[..])
}
