//! MQTT 5.0 half of the mqttbytes differential test (exclusions listed in `oracle.rs`).

use super::*;
use mqttbytes::v5::{
    ConnAckProperties, ConnectProperties, DisconnectProperties, DisconnectReasonCode,
    PubAckProperties, PubAckReason, PubCompProperties, PubCompReason, PubRecProperties,
    PubRecReason, PubRelProperties, PubRelReason, PublishProperties, RetainForwardRule,
    SubAckProperties, SubscribeProperties, SubscribeReasonCode, UnsubAckProperties, UnsubAckReason,
    UnsubscribeProperties, WillProperties,
};

/// Picks the mqttbytes enum variant whose discriminant is `code`.
fn pick<T: Copy + std::fmt::Debug>(all: &[T], as_u8: fn(T) -> u8, code: u8) -> T {
    *all.iter().find(|&&v| as_u8(v) == code).unwrap()
}

fn puback_reason(code: u8) -> PubAckReason {
    use PubAckReason::*;
    let all = [
        Success,
        NoMatchingSubscribers,
        UnspecifiedError,
        ImplementationSpecificError,
        NotAuthorized,
        TopicNameInvalid,
        PacketIdentifierInUse,
        QuotaExceeded,
        PayloadFormatInvalid,
    ];
    pick(&all, |v| v as u8, code)
}

fn pubrec_reason(code: u8) -> PubRecReason {
    use PubRecReason::*;
    let all = [
        Success,
        NoMatchingSubscribers,
        UnspecifiedError,
        ImplementationSpecificError,
        NotAuthorized,
        TopicNameInvalid,
        PacketIdentifierInUse,
        QuotaExceeded,
        PayloadFormatInvalid,
    ];
    pick(&all, |v| v as u8, code)
}

fn pubrel_reason(code: u8) -> PubRelReason {
    use PubRelReason::*;
    pick(&[Success, PacketIdentifierNotFound], |v| v as u8, code)
}

fn pubcomp_reason(code: u8) -> PubCompReason {
    use PubCompReason::*;
    pick(&[Success, PacketIdentifierNotFound], |v| v as u8, code)
}

fn unsuback_reason(code: u8) -> UnsubAckReason {
    use UnsubAckReason::*;
    let all = [
        Success,
        NoSubscriptionExisted,
        UnspecifiedError,
        ImplementationSpecificError,
        NotAuthorized,
        TopicFilterInvalid,
        PacketIdentifierInUse,
    ];
    pick(&all, |v| v as u8, code)
}

fn connack_code(code: u8) -> v5::ConnectReturnCode {
    use v5::ConnectReturnCode::*;
    let all = [
        Success,
        UnspecifiedError,
        MalformedPacket,
        ProtocolError,
        ImplementationSpecificError,
        UnsupportedProtocolVersion,
        ClientIdentifierNotValid,
        BadUserNamePassword,
        NotAuthorized,
        ServerUnavailable,
        ServerBusy,
        Banned,
        BadAuthenticationMethod,
        TopicNameInvalid,
        PacketTooLarge,
        QuotaExceeded,
        PayloadFormatInvalid,
        RetainNotSupported,
        QoSNotSupported,
        UseAnotherServer,
        ServerMoved,
        ConnectionRateExceeded,
    ];
    pick(&all, |v| v as u8, code)
}

/// `None` for empty properties, mirroring mqttbytes' reading of a zero property length.
fn some_if<T>(p: &Properties, f: impl FnOnce(&Properties) -> T) -> Option<T> {
    (!p.is_empty()).then(|| f(p))
}

fn ack_props<T>(p: &Properties, make: fn(Option<String>, Vec<(String, String)>) -> T) -> Option<T> {
    some_if(p, |p| {
        make(p.reason_string.clone(), p.user_properties.clone())
    })
}

fn from_ack_props(
    reason_string: Option<String>,
    user_properties: Vec<(String, String)>,
) -> Properties {
    Properties {
        reason_string,
        user_properties,
        ..Default::default()
    }
}

fn connect_props(p: &Properties) -> ConnectProperties {
    ConnectProperties {
        session_expiry_interval: p.session_expiry_interval,
        receive_maximum: p.receive_maximum,
        max_packet_size: p.maximum_packet_size,
        topic_alias_max: p.topic_alias_maximum,
        request_response_info: p.request_response_information,
        request_problem_info: p.request_problem_information,
        user_properties: p.user_properties.clone(),
        authentication_method: p.authentication_method.clone(),
        authentication_data: p.authentication_data.clone(),
    }
}

fn will_props(p: &Properties) -> WillProperties {
    WillProperties {
        delay_interval: p.will_delay_interval,
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
    }
}

fn connack_props(p: &Properties) -> ConnAckProperties {
    ConnAckProperties {
        session_expiry_interval: p.session_expiry_interval,
        receive_max: p.receive_maximum,
        max_qos: p.maximum_qos,
        retain_available: p.retain_available,
        max_packet_size: p.maximum_packet_size,
        assigned_client_identifier: p.assigned_client_identifier.clone(),
        topic_alias_max: p.topic_alias_maximum,
        reason_string: p.reason_string.clone(),
        user_properties: p.user_properties.clone(),
        wildcard_subscription_available: p.wildcard_subscription_available,
        subscription_identifiers_available: p.subscription_identifier_available,
        shared_subscription_available: p.shared_subscription_available,
        server_keep_alive: p.server_keep_alive,
        response_information: p.response_information.clone(),
        server_reference: p.server_reference.clone(),
        authentication_method: p.authentication_method.clone(),
        authentication_data: p.authentication_data.clone(),
    }
}

fn publish_props(p: &Properties) -> PublishProperties {
    PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        topic_alias: p.topic_alias,
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
        subscription_identifiers: p
            .subscription_identifiers
            .iter()
            .map(|&i| i as usize)
            .collect(),
        content_type: p.content_type.clone(),
    }
}

fn disconnect_props(p: &Properties) -> DisconnectProperties {
    DisconnectProperties {
        session_expiry_interval: p.session_expiry_interval,
        reason_string: p.reason_string.clone(),
        user_properties: p.user_properties.clone(),
        server_reference: p.server_reference.clone(),
    }
}

fn to_v5(p: &Packet) -> v5::Packet {
    match p {
        Packet::Connect(c) => v5::Packet::Connect(v5::Connect {
            protocol: mqttbytes::Protocol::V5,
            keep_alive: c.keep_alive,
            client_id: c.client_id.clone(),
            clean_session: c.clean_start,
            last_will: c.will.as_ref().map(|w| v5::LastWill {
                topic: w.topic.clone(),
                message: w.payload.clone(),
                qos: mb_qos(w.qos),
                retain: w.retain,
                properties: some_if(&w.properties, will_props),
            }),
            login: login(&c.username, &c.password)
                .map(|(username, password)| v5::Login { username, password }),
            properties: some_if(&c.properties, connect_props),
        }),
        // Always `Some`: mqttbytes drops the property length for `None`.
        Packet::ConnAck(a) => v5::Packet::ConnAck(v5::ConnAck {
            session_present: a.session_present,
            code: connack_code(a.code),
            properties: Some(connack_props(&a.properties)),
        }),
        Packet::Publish(p) => v5::Packet::Publish(v5::Publish {
            dup: p.dup,
            qos: mb_qos(p.qos),
            retain: p.retain,
            topic: p.topic.clone(),
            pkid: p.packet_id.unwrap_or(0),
            properties: some_if(&p.properties, publish_props),
            payload: p.payload.clone(),
        }),
        Packet::PubAck(a) => v5::Packet::PubAck(v5::PubAck {
            pkid: a.packet_id,
            reason: puback_reason(a.reason),
            properties: ack_props(&a.properties, |reason_string, user_properties| {
                PubAckProperties {
                    reason_string,
                    user_properties,
                }
            }),
        }),
        Packet::PubRec(a) => v5::Packet::PubRec(v5::PubRec {
            pkid: a.packet_id,
            reason: pubrec_reason(a.reason),
            properties: ack_props(&a.properties, |reason_string, user_properties| {
                PubRecProperties {
                    reason_string,
                    user_properties,
                }
            }),
        }),
        Packet::PubRel(a) => v5::Packet::PubRel(v5::PubRel {
            pkid: a.packet_id,
            reason: pubrel_reason(a.reason),
            properties: ack_props(&a.properties, |reason_string, user_properties| {
                PubRelProperties {
                    reason_string,
                    user_properties,
                }
            }),
        }),
        Packet::PubComp(a) => v5::Packet::PubComp(v5::PubComp {
            pkid: a.packet_id,
            reason: pubcomp_reason(a.reason),
            properties: ack_props(&a.properties, |reason_string, user_properties| {
                PubCompProperties {
                    reason_string,
                    user_properties,
                }
            }),
        }),
        Packet::Subscribe(s) => v5::Packet::Subscribe(v5::Subscribe {
            pkid: s.packet_id,
            filters: s
                .filters
                .iter()
                .map(|f| v5::SubscribeFilter {
                    path: f.filter.clone(),
                    qos: mb_qos(f.options.qos),
                    nolocal: f.options.no_local,
                    preserve_retain: f.options.retain_as_published,
                    retain_forward_rule: match f.options.retain_handling {
                        0 => RetainForwardRule::OnEverySubscribe,
                        1 => RetainForwardRule::OnNewSubscribe,
                        _ => RetainForwardRule::Never,
                    },
                })
                .collect(),
            properties: some_if(&s.properties, |p| SubscribeProperties {
                id: p.subscription_identifiers.first().map(|&i| i as usize),
                user_properties: p.user_properties.clone(),
            }),
        }),
        Packet::SubAck(a) => v5::Packet::SubAck(v5::SubAck {
            pkid: a.packet_id,
            return_codes: a
                .codes
                .iter()
                .map(|&c| SubscribeReasonCode::try_from(c).unwrap())
                .collect(),
            properties: ack_props(&a.properties, |reason_string, user_properties| {
                SubAckProperties {
                    reason_string,
                    user_properties,
                }
            }),
        }),
        Packet::Unsubscribe(u) => v5::Packet::Unsubscribe(v5::Unsubscribe {
            pkid: u.packet_id,
            filters: u.filters.clone(),
            properties: some_if(&u.properties, |p| UnsubscribeProperties {
                user_properties: p.user_properties.clone(),
            }),
        }),
        Packet::UnsubAck(a) => v5::Packet::UnsubAck(v5::UnsubAck {
            pkid: a.packet_id,
            reasons: a.codes.iter().map(|&c| unsuback_reason(c)).collect(),
            properties: ack_props(&a.properties, |reason_string, user_properties| {
                UnsubAckProperties {
                    reason_string,
                    user_properties,
                }
            }),
        }),
        Packet::PingReq => v5::Packet::PingReq,
        Packet::PingResp => v5::Packet::PingResp,
        Packet::Disconnect(d) => v5::Packet::Disconnect(v5::Disconnect {
            reason_code: DisconnectReasonCode::try_from(d.reason).unwrap(),
            properties: some_if(&d.properties, disconnect_props),
        }),
        Packet::Auth(_) => unreachable!("AUTH is not generated for the oracle"),
    }
}

fn from_v5(p: v5::Packet) -> Packet {
    match p {
        v5::Packet::Connect(c) => {
            let (username, password) = c
                .login
                .map(|l| unlogin(l.username, l.password))
                .unwrap_or_default();
            let properties = c
                .properties
                .map(|p| Properties {
                    session_expiry_interval: p.session_expiry_interval,
                    receive_maximum: p.receive_maximum,
                    maximum_packet_size: p.max_packet_size,
                    topic_alias_maximum: p.topic_alias_max,
                    request_response_information: p.request_response_info,
                    request_problem_information: p.request_problem_info,
                    user_properties: p.user_properties,
                    authentication_method: p.authentication_method,
                    authentication_data: p.authentication_data,
                    ..Default::default()
                })
                .unwrap_or_default();
            Packet::Connect(Connect {
                protocol: ProtocolVersion::V5,
                clean_start: c.clean_session,
                keep_alive: c.keep_alive,
                client_id: c.client_id,
                will: c.last_will.map(|w| Will {
                    topic: w.topic,
                    payload: w.message,
                    qos: our_qos(w.qos),
                    retain: w.retain,
                    properties: w
                        .properties
                        .map(|p| Properties {
                            will_delay_interval: p.delay_interval,
                            payload_format_indicator: p.payload_format_indicator,
                            message_expiry_interval: p.message_expiry_interval,
                            content_type: p.content_type,
                            response_topic: p.response_topic,
                            correlation_data: p.correlation_data,
                            user_properties: p.user_properties,
                            ..Default::default()
                        })
                        .unwrap_or_default(),
                }),
                username,
                password,
                properties,
                bridge: false,
            })
        }
        v5::Packet::ConnAck(a) => Packet::ConnAck(ConnAck {
            session_present: a.session_present,
            code: a.code as u8,
            properties: a
                .properties
                .map(|p| Properties {
                    session_expiry_interval: p.session_expiry_interval,
                    receive_maximum: p.receive_max,
                    maximum_qos: p.max_qos,
                    retain_available: p.retain_available,
                    maximum_packet_size: p.max_packet_size,
                    assigned_client_identifier: p.assigned_client_identifier,
                    topic_alias_maximum: p.topic_alias_max,
                    reason_string: p.reason_string,
                    user_properties: p.user_properties,
                    wildcard_subscription_available: p.wildcard_subscription_available,
                    subscription_identifier_available: p.subscription_identifiers_available,
                    shared_subscription_available: p.shared_subscription_available,
                    server_keep_alive: p.server_keep_alive,
                    response_information: p.response_information,
                    server_reference: p.server_reference,
                    authentication_method: p.authentication_method,
                    authentication_data: p.authentication_data,
                    ..Default::default()
                })
                .unwrap_or_default(),
        }),
        v5::Packet::Publish(p) => Packet::Publish(Publish {
            dup: p.dup,
            qos: our_qos(p.qos),
            retain: p.retain,
            topic: p.topic,
            packet_id: pid(our_qos(p.qos), p.pkid),
            properties: p
                .properties
                .map(|p| Properties {
                    payload_format_indicator: p.payload_format_indicator,
                    message_expiry_interval: p.message_expiry_interval,
                    topic_alias: p.topic_alias,
                    response_topic: p.response_topic,
                    correlation_data: p.correlation_data,
                    user_properties: p.user_properties,
                    subscription_identifiers: p
                        .subscription_identifiers
                        .into_iter()
                        .map(|i| i as u32)
                        .collect(),
                    content_type: p.content_type,
                    ..Default::default()
                })
                .unwrap_or_default(),
            payload: p.payload,
        }),
        v5::Packet::PubAck(a) => Packet::PubAck(Ack {
            packet_id: a.pkid,
            reason: a.reason as u8,
            properties: a
                .properties
                .map(|p| from_ack_props(p.reason_string, p.user_properties))
                .unwrap_or_default(),
        }),
        v5::Packet::PubRec(a) => Packet::PubRec(Ack {
            packet_id: a.pkid,
            reason: a.reason as u8,
            properties: a
                .properties
                .map(|p| from_ack_props(p.reason_string, p.user_properties))
                .unwrap_or_default(),
        }),
        v5::Packet::PubRel(a) => Packet::PubRel(Ack {
            packet_id: a.pkid,
            reason: a.reason as u8,
            properties: a
                .properties
                .map(|p| from_ack_props(p.reason_string, p.user_properties))
                .unwrap_or_default(),
        }),
        v5::Packet::PubComp(a) => Packet::PubComp(Ack {
            packet_id: a.pkid,
            reason: a.reason as u8,
            properties: a
                .properties
                .map(|p| from_ack_props(p.reason_string, p.user_properties))
                .unwrap_or_default(),
        }),
        v5::Packet::Subscribe(s) => Packet::Subscribe(Subscribe {
            packet_id: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| SubscribeFilter {
                    filter: f.path,
                    options: SubscriptionOptions {
                        qos: our_qos(f.qos),
                        no_local: f.nolocal,
                        retain_as_published: f.preserve_retain,
                        retain_handling: match f.retain_forward_rule {
                            RetainForwardRule::OnEverySubscribe => 0,
                            RetainForwardRule::OnNewSubscribe => 1,
                            RetainForwardRule::Never => 2,
                        },
                    },
                })
                .collect(),
            properties: s
                .properties
                .map(|p| Properties {
                    subscription_identifiers: p.id.map(|i| i as u32).into_iter().collect(),
                    user_properties: p.user_properties,
                    ..Default::default()
                })
                .unwrap_or_default(),
        }),
        v5::Packet::SubAck(a) => Packet::SubAck(SubAck {
            packet_id: a.pkid,
            codes: a.return_codes.into_iter().map(|c| c as u8).collect(),
            properties: a
                .properties
                .map(|p| from_ack_props(p.reason_string, p.user_properties))
                .unwrap_or_default(),
        }),
        v5::Packet::Unsubscribe(u) => Packet::Unsubscribe(Unsubscribe {
            packet_id: u.pkid,
            filters: u.filters,
            properties: u
                .properties
                .map(|p| Properties {
                    user_properties: p.user_properties,
                    ..Default::default()
                })
                .unwrap_or_default(),
        }),
        v5::Packet::UnsubAck(a) => Packet::UnsubAck(UnsubAck {
            packet_id: a.pkid,
            codes: a.reasons.into_iter().map(|c| c as u8).collect(),
            properties: a
                .properties
                .map(|p| from_ack_props(p.reason_string, p.user_properties))
                .unwrap_or_default(),
        }),
        v5::Packet::PingReq => Packet::PingReq,
        v5::Packet::PingResp => Packet::PingResp,
        v5::Packet::Disconnect(d) => Packet::Disconnect(Disconnect {
            reason: d.reason_code as u8,
            properties: d
                .properties
                .map(|p| Properties {
                    session_expiry_interval: p.session_expiry_interval,
                    reason_string: p.reason_string,
                    user_properties: p.user_properties,
                    server_reference: p.server_reference,
                    ..Default::default()
                })
                .unwrap_or_default(),
        }),
    }
}

fn write_v5(p: &v5::Packet) -> BytesMut {
    let mut buf = BytesMut::new();
    match p {
        v5::Packet::Connect(x) => x.write(&mut buf),
        v5::Packet::ConnAck(x) => x.write(&mut buf),
        v5::Packet::Publish(x) => x.write(&mut buf),
        v5::Packet::PubAck(x) => x.write(&mut buf),
        v5::Packet::PubRec(x) => x.write(&mut buf),
        v5::Packet::PubRel(x) => x.write(&mut buf),
        v5::Packet::PubComp(x) => x.write(&mut buf),
        v5::Packet::Subscribe(x) => x.write(&mut buf),
        v5::Packet::SubAck(x) => x.write(&mut buf),
        v5::Packet::Unsubscribe(x) => x.write(&mut buf),
        v5::Packet::UnsubAck(x) => x.write(&mut buf),
        v5::Packet::PingReq => v5::PingReq.write(&mut buf),
        v5::Packet::PingResp => v5::PingResp.write(&mut buf),
        v5::Packet::Disconnect(x) => x.write(&mut buf),
    }
    .unwrap();
    buf
}

/// mqttbytes cannot read the DISCONNECT short forms we (correctly) emit.
fn mqttbytes_can_read(p: &Packet) -> bool {
    !matches!(p, Packet::Disconnect(d) if d.properties.is_empty())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn v5_we_encode_mqttbytes_decodes(
        p in oracle_packet(ProtocolVersion::V5).prop_filter("short DISCONNECT", mqttbytes_can_read)
    ) {
        let mut buf = ours_to_bytes(&p, ProtocolVersion::V5);
        let theirs = v5::read(&mut buf, MAX).unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(from_v5(theirs), p);
    }

    #[test]
    fn v5_mqttbytes_encodes_we_decode(p in oracle_packet(ProtocolVersion::V5)) {
        let buf = write_v5(&to_v5(&p));
        prop_assert_eq!(ours_from_bytes(buf, ProtocolVersion::V5), p);
    }
}
