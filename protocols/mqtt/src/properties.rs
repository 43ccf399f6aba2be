//! MQTT 5.0 properties: which packet may carry which property, strict decoding
//! (bounded by the property length, no unknown ids, no duplicates, value ranges) and encoding.

use crate::error::{DecodeError, EncodeError};
use crate::types::Properties;
use crate::wire::{Counter, Reader, Sink};

const PAYLOAD_FORMAT_INDICATOR: u32 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u32 = 0x02;
const CONTENT_TYPE: u32 = 0x03;
const RESPONSE_TOPIC: u32 = 0x08;
const CORRELATION_DATA: u32 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u32 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u32 = 0x11;
const ASSIGNED_CLIENT_IDENTIFIER: u32 = 0x12;
const SERVER_KEEP_ALIVE: u32 = 0x13;
const AUTHENTICATION_METHOD: u32 = 0x15;
const AUTHENTICATION_DATA: u32 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u32 = 0x17;
const WILL_DELAY_INTERVAL: u32 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u32 = 0x19;
const RESPONSE_INFORMATION: u32 = 0x1A;
const SERVER_REFERENCE: u32 = 0x1C;
const REASON_STRING: u32 = 0x1F;
const RECEIVE_MAXIMUM: u32 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u32 = 0x22;
const TOPIC_ALIAS: u32 = 0x23;
const MAXIMUM_QOS: u32 = 0x24;
const RETAIN_AVAILABLE: u32 = 0x25;
const USER_PROPERTY: u32 = 0x26;
const MAXIMUM_PACKET_SIZE: u32 = 0x27;
const WILDCARD_SUBSCRIPTION_AVAILABLE: u32 = 0x28;
const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u32 = 0x29;
const SHARED_SUBSCRIPTION_AVAILABLE: u32 = 0x2A;

/// The property set a packet (or the will inside CONNECT) carries; decides what is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PropKind {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl PropKind {
    fn name(self) -> &'static str {
        match self {
            PropKind::Connect => "CONNECT",
            PropKind::Will => "CONNECT will",
            PropKind::ConnAck => "CONNACK",
            PropKind::Publish => "PUBLISH",
            PropKind::Ack => "PUBACK/PUBREC/PUBREL/PUBCOMP",
            PropKind::Subscribe => "SUBSCRIBE",
            PropKind::SubAck => "SUBACK",
            PropKind::Unsubscribe => "UNSUBSCRIBE",
            PropKind::UnsubAck => "UNSUBACK",
            PropKind::Disconnect => "DISCONNECT",
            PropKind::Auth => "AUTH",
        }
    }
}

/// Property name and whether `kind` may carry it (MQTT 5.0 table 2.2.2.2); `None` for unknown ids.
fn describe(id: u32, kind: PropKind) -> Option<(&'static str, bool)> {
    use PropKind::*;
    let (name, allowed) = match id {
        PAYLOAD_FORMAT_INDICATOR => ("payload_format_indicator", matches!(kind, Publish | Will)),
        MESSAGE_EXPIRY_INTERVAL => ("message_expiry_interval", matches!(kind, Publish | Will)),
        CONTENT_TYPE => ("content_type", matches!(kind, Publish | Will)),
        RESPONSE_TOPIC => ("response_topic", matches!(kind, Publish | Will)),
        CORRELATION_DATA => ("correlation_data", matches!(kind, Publish | Will)),
        SUBSCRIPTION_IDENTIFIER => (
            "subscription_identifier",
            matches!(kind, Publish | Subscribe),
        ),
        SESSION_EXPIRY_INTERVAL => (
            "session_expiry_interval",
            matches!(kind, Connect | ConnAck | Disconnect),
        ),
        ASSIGNED_CLIENT_IDENTIFIER => ("assigned_client_identifier", kind == ConnAck),
        SERVER_KEEP_ALIVE => ("server_keep_alive", kind == ConnAck),
        AUTHENTICATION_METHOD => (
            "authentication_method",
            matches!(kind, Connect | ConnAck | Auth),
        ),
        AUTHENTICATION_DATA => (
            "authentication_data",
            matches!(kind, Connect | ConnAck | Auth),
        ),
        REQUEST_PROBLEM_INFORMATION => ("request_problem_information", kind == Connect),
        WILL_DELAY_INTERVAL => ("will_delay_interval", kind == Will),
        REQUEST_RESPONSE_INFORMATION => ("request_response_information", kind == Connect),
        RESPONSE_INFORMATION => ("response_information", kind == ConnAck),
        SERVER_REFERENCE => ("server_reference", matches!(kind, ConnAck | Disconnect)),
        REASON_STRING => (
            "reason_string",
            matches!(kind, ConnAck | Ack | SubAck | UnsubAck | Disconnect | Auth),
        ),
        RECEIVE_MAXIMUM => ("receive_maximum", matches!(kind, Connect | ConnAck)),
        TOPIC_ALIAS_MAXIMUM => ("topic_alias_maximum", matches!(kind, Connect | ConnAck)),
        TOPIC_ALIAS => ("topic_alias", kind == Publish),
        MAXIMUM_QOS => ("maximum_qos", kind == ConnAck),
        RETAIN_AVAILABLE => ("retain_available", kind == ConnAck),
        USER_PROPERTY => ("user_property", true),
        MAXIMUM_PACKET_SIZE => ("maximum_packet_size", matches!(kind, Connect | ConnAck)),
        WILDCARD_SUBSCRIPTION_AVAILABLE => ("wildcard_subscription_available", kind == ConnAck),
        SUBSCRIPTION_IDENTIFIER_AVAILABLE => ("subscription_identifier_available", kind == ConnAck),
        SHARED_SUBSCRIPTION_AVAILABLE => ("shared_subscription_available", kind == ConnAck),
        _ => return None,
    };
    Some((name, allowed))
}

fn set<T>(slot: &mut Option<T>, v: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::ProtocolError("duplicate property"));
    }
    *slot = Some(v);
    Ok(())
}

/// Byte properties that are booleans on the wire; anything but 0/1 is a protocol error.
fn flag(v: u8) -> Result<u8, DecodeError> {
    if v > 1 {
        return Err(DecodeError::ProtocolError("property value must be 0 or 1"));
    }
    Ok(v)
}

fn nonzero_u16(v: u16, what: &'static str) -> Result<u16, DecodeError> {
    if v == 0 {
        return Err(DecodeError::ProtocolError(what));
    }
    Ok(v)
}

/// Reads a property length and exactly that many bytes of properties.
pub(crate) fn decode(r: &mut Reader, kind: PropKind) -> Result<Properties, DecodeError> {
    let len = r.varint()? as usize;
    if len > r.remaining() {
        return Err(DecodeError::MalformedPacket(
            "property length runs past the packet",
        ));
    }
    // Values are read from a sub-reader so a value cannot run past the property length.
    let mut r = Reader::new(r.take(len)?);
    let mut p = Properties::default();
    while !r.is_empty() {
        let id = r.varint()?;
        let Some((_, allowed)) = describe(id, kind) else {
            return Err(DecodeError::MalformedPacket("unknown property identifier"));
        };
        if !allowed {
            return Err(DecodeError::ProtocolError(
                "property not allowed in this packet",
            ));
        }
        match id {
            PAYLOAD_FORMAT_INDICATOR => set(&mut p.payload_format_indicator, flag(r.u8()?)?)?,
            MESSAGE_EXPIRY_INTERVAL => set(&mut p.message_expiry_interval, r.u32()?)?,
            CONTENT_TYPE => set(&mut p.content_type, r.string()?)?,
            RESPONSE_TOPIC => set(&mut p.response_topic, r.string()?)?,
            CORRELATION_DATA => set(&mut p.correlation_data, r.binary()?)?,
            SUBSCRIPTION_IDENTIFIER => {
                let v = r.varint()?;
                if v == 0 {
                    return Err(DecodeError::ProtocolError("subscription identifier 0"));
                }
                if kind == PropKind::Subscribe && !p.subscription_identifiers.is_empty() {
                    return Err(DecodeError::ProtocolError("duplicate property"));
                }
                p.subscription_identifiers.push(v);
            }
            SESSION_EXPIRY_INTERVAL => set(&mut p.session_expiry_interval, r.u32()?)?,
            ASSIGNED_CLIENT_IDENTIFIER => set(&mut p.assigned_client_identifier, r.string()?)?,
            SERVER_KEEP_ALIVE => set(&mut p.server_keep_alive, r.u16()?)?,
            AUTHENTICATION_METHOD => set(&mut p.authentication_method, r.string()?)?,
            AUTHENTICATION_DATA => set(&mut p.authentication_data, r.binary()?)?,
            REQUEST_PROBLEM_INFORMATION => set(&mut p.request_problem_information, flag(r.u8()?)?)?,
            WILL_DELAY_INTERVAL => set(&mut p.will_delay_interval, r.u32()?)?,
            REQUEST_RESPONSE_INFORMATION => {
                set(&mut p.request_response_information, flag(r.u8()?)?)?
            }
            RESPONSE_INFORMATION => set(&mut p.response_information, r.string()?)?,
            SERVER_REFERENCE => set(&mut p.server_reference, r.string()?)?,
            REASON_STRING => set(&mut p.reason_string, r.string()?)?,
            RECEIVE_MAXIMUM => set(
                &mut p.receive_maximum,
                nonzero_u16(r.u16()?, "receive maximum 0")?,
            )?,
            TOPIC_ALIAS_MAXIMUM => set(&mut p.topic_alias_maximum, r.u16()?)?,
            TOPIC_ALIAS => {
                let v = r.u16()?;
                if v == 0 {
                    return Err(DecodeError::TopicAliasInvalid("topic alias 0"));
                }
                set(&mut p.topic_alias, v)?
            }
            MAXIMUM_QOS => set(&mut p.maximum_qos, flag(r.u8()?)?)?,
            RETAIN_AVAILABLE => set(&mut p.retain_available, flag(r.u8()?)?)?,
            USER_PROPERTY => {
                let k = r.string()?;
                let v = r.string()?;
                p.user_properties.push((k, v));
            }
            MAXIMUM_PACKET_SIZE => {
                let v = r.u32()?;
                if v == 0 {
                    return Err(DecodeError::ProtocolError("maximum packet size 0"));
                }
                set(&mut p.maximum_packet_size, v)?
            }
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                set(&mut p.wildcard_subscription_available, flag(r.u8()?)?)?
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                set(&mut p.subscription_identifier_available, flag(r.u8()?)?)?
            }
            SHARED_SUBSCRIPTION_AVAILABLE => {
                set(&mut p.shared_subscription_available, flag(r.u8()?)?)?
            }
            _ => return Err(DecodeError::MalformedPacket("unknown property identifier")),
        }
    }
    Ok(p)
}

/// Writes the property length followed by the properties.
pub(crate) fn encode<S: Sink>(
    p: &Properties,
    kind: PropKind,
    s: &mut S,
) -> Result<(), EncodeError> {
    let mut len = Counter::default();
    write_all(p, kind, &mut len)?;
    s.put_varint(len.0, "property length")?;
    write_all(p, kind, s)
}

/// Writes one property identifier after checking the packet may carry it.
fn head<S: Sink>(s: &mut S, id: u32, kind: PropKind) -> Result<(), EncodeError> {
    match describe(id, kind) {
        Some((_, true)) => {
            // All identifiers are below 0x80, i.e. a one-byte variable byte integer.
            s.put_varint(id as usize, "property identifier")
        }
        Some((property, false)) => Err(EncodeError::PropertyNotAllowed {
            property,
            packet: kind.name(),
        }),
        None => Err(EncodeError::InvalidPacket("unknown property identifier")),
    }
}

fn write_all<S: Sink>(p: &Properties, kind: PropKind, s: &mut S) -> Result<(), EncodeError> {
    let byte = |s: &mut S, id: u32, v: Option<u8>| -> Result<(), EncodeError> {
        if let Some(v) = v {
            head(s, id, kind)?;
            s.put_u8(v);
        }
        Ok(())
    };
    let two = |s: &mut S, id: u32, v: Option<u16>| -> Result<(), EncodeError> {
        if let Some(v) = v {
            head(s, id, kind)?;
            s.put_u16(v);
        }
        Ok(())
    };
    let four = |s: &mut S, id: u32, v: Option<u32>| -> Result<(), EncodeError> {
        if let Some(v) = v {
            head(s, id, kind)?;
            s.put_u32(v);
        }
        Ok(())
    };
    let string = |s: &mut S, id: u32, v: &Option<String>, f: &'static str| {
        if let Some(v) = v {
            head(s, id, kind)?;
            s.put_string(v, f)?;
        }
        Ok::<(), EncodeError>(())
    };
    let binary = |s: &mut S, id: u32, v: &Option<bytes::Bytes>, f: &'static str| {
        if let Some(v) = v {
            head(s, id, kind)?;
            s.put_binary(v, f)?;
        }
        Ok::<(), EncodeError>(())
    };

    byte(s, PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator)?;
    four(s, MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval)?;
    string(s, CONTENT_TYPE, &p.content_type, "content_type")?;
    string(s, RESPONSE_TOPIC, &p.response_topic, "response_topic")?;
    binary(s, CORRELATION_DATA, &p.correlation_data, "correlation_data")?;
    for &id in &p.subscription_identifiers {
        head(s, SUBSCRIPTION_IDENTIFIER, kind)?;
        s.put_varint(id as usize, "subscription identifier")?;
    }
    four(s, SESSION_EXPIRY_INTERVAL, p.session_expiry_interval)?;
    string(
        s,
        ASSIGNED_CLIENT_IDENTIFIER,
        &p.assigned_client_identifier,
        "assigned_client_identifier",
    )?;
    two(s, SERVER_KEEP_ALIVE, p.server_keep_alive)?;
    string(
        s,
        AUTHENTICATION_METHOD,
        &p.authentication_method,
        "authentication_method",
    )?;
    binary(
        s,
        AUTHENTICATION_DATA,
        &p.authentication_data,
        "authentication_data",
    )?;
    byte(
        s,
        REQUEST_PROBLEM_INFORMATION,
        p.request_problem_information,
    )?;
    four(s, WILL_DELAY_INTERVAL, p.will_delay_interval)?;
    byte(
        s,
        REQUEST_RESPONSE_INFORMATION,
        p.request_response_information,
    )?;
    string(
        s,
        RESPONSE_INFORMATION,
        &p.response_information,
        "response_information",
    )?;
    string(s, SERVER_REFERENCE, &p.server_reference, "server_reference")?;
    string(s, REASON_STRING, &p.reason_string, "reason_string")?;
    two(s, RECEIVE_MAXIMUM, p.receive_maximum)?;
    two(s, TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum)?;
    two(s, TOPIC_ALIAS, p.topic_alias)?;
    byte(s, MAXIMUM_QOS, p.maximum_qos)?;
    byte(s, RETAIN_AVAILABLE, p.retain_available)?;
    for (k, v) in &p.user_properties {
        head(s, USER_PROPERTY, kind)?;
        s.put_string(k, "user property name")?;
        s.put_string(v, "user property value")?;
    }
    four(s, MAXIMUM_PACKET_SIZE, p.maximum_packet_size)?;
    byte(
        s,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        p.wildcard_subscription_available,
    )?;
    byte(
        s,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        p.subscription_identifier_available,
    )?;
    byte(
        s,
        SHARED_SUBSCRIPTION_AVAILABLE,
        p.shared_subscription_available,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;
    use crate::{Ack, Packet, Publish, QoS};
    use bytes::BytesMut;

    /// 5.0 PUBACK (packet id 1, reason 0) with the given raw property bytes.
    fn puback(props: &[u8]) -> Vec<u8> {
        let mut body = vec![0x00, 0x01, 0x00, props.len() as u8];
        body.extend_from_slice(props);
        frame(0x40, &body)
    }

    /// 5.0 QoS 0 PUBLISH to "t" with the given raw property bytes.
    fn publish(props: &[u8]) -> Vec<u8> {
        let mut body = s("t");
        body.push(props.len() as u8);
        body.extend_from_slice(props);
        frame(0x30, &body)
    }

    /// 5.0 CONNECT with the given raw property bytes.
    fn connect(props: &[u8]) -> Vec<u8> {
        let mut body = s("MQTT");
        body.extend([5, 0x02, 0x00, 0x00, props.len() as u8]);
        body.extend_from_slice(props);
        body.extend(s("c"));
        frame(0x10, &body)
    }

    #[test]
    fn property_length_running_past_the_packet_is_malformed() {
        let b = frame(0x40, &[0x00, 0x01, 0x00, 0x09, 0x1F, 0x00, 0x01, b'r']);
        assert!(is_malformed(dec(&b, V5)));
    }

    #[test]
    fn property_value_running_past_the_property_length_is_malformed() {
        // Property length 2 but the reason string inside claims 1 more byte; the trailing
        // byte is inside the packet, so only a bounded reader catches it.
        let b = frame(0x40, &[0x00, 0x01, 0x00, 0x03, 0x1F, 0x00, 0x01, b'r']);
        assert!(is_malformed(dec(&b, V5)));
    }

    #[test]
    fn unknown_property_identifier_is_malformed() {
        assert!(is_malformed(dec(&puback(&[0x05, 0x00]), V5)));
        assert!(is_malformed(dec(&puback(&[0x80, 0x01, 0x00]), V5)));
    }

    #[test]
    fn property_not_allowed_for_packet_is_protocol_error() {
        // Topic Alias in PUBACK, Session Expiry in PUBLISH, Will Delay in CONNECT itself.
        assert!(is_protocol_error(dec(&puback(&[0x23, 0x00, 0x01]), V5)));
        assert!(is_protocol_error(dec(&publish(&[0x11, 0, 0, 0, 1]), V5)));
        assert!(is_protocol_error(dec(&connect(&[0x18, 0, 0, 0, 1]), V5)));
    }

    #[test]
    fn duplicate_property_is_protocol_error() {
        let rs = [0x1F, 0x00, 0x01, b'a'];
        assert!(is_protocol_error(dec(&puback(&[rs, rs].concat()), V5)));
        let mei = [0x02, 0, 0, 0, 9];
        assert!(is_protocol_error(dec(&publish(&[mei, mei].concat()), V5)));
    }

    #[test]
    fn duplicate_user_property_and_publish_subscription_identifier_are_allowed() {
        let up = [0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v'];
        let Packet::PubAck(a) = dec(&puback(&[up, up].concat()), V5).unwrap() else {
            panic!()
        };
        assert_eq!(a.properties.user_properties.len(), 2);
        let Packet::Publish(p) = dec(&publish(&[0x0B, 0x01, 0x0B, 0x80, 0x01]), V5).unwrap() else {
            panic!()
        };
        assert_eq!(p.properties.subscription_identifiers, [1, 128]);
    }

    #[test]
    fn subscription_identifier_0_is_protocol_error() {
        assert!(is_protocol_error(dec(&publish(&[0x0B, 0x00]), V5)));
    }

    #[test]
    fn receive_maximum_0_is_protocol_error() {
        assert!(is_protocol_error(dec(&connect(&[0x21, 0x00, 0x00]), V5)));
    }

    #[test]
    fn maximum_packet_size_0_is_protocol_error() {
        assert!(is_protocol_error(dec(&connect(&[0x27, 0, 0, 0, 0]), V5)));
    }

    #[test]
    fn boolean_properties_other_than_0_or_1_are_protocol_error() {
        assert!(is_protocol_error(dec(&publish(&[0x01, 0x02]), V5)));
        assert!(is_protocol_error(dec(&connect(&[0x17, 0x02]), V5)));
        assert!(is_protocol_error(dec(&connect(&[0x19, 0x02]), V5)));
        assert!(dec(&connect(&[0x17, 0x01, 0x19, 0x00]), V5).is_ok());
    }

    #[test]
    fn connack_maximum_qos_2_is_protocol_error() {
        let b = frame(0x20, &[0x00, 0x00, 0x02, 0x24, 0x02]);
        assert!(is_protocol_error(dec(&b, V5)));
    }

    #[test]
    fn property_string_with_invalid_utf8_is_malformed() {
        assert!(is_malformed(dec(&puback(&[0x1F, 0x00, 0x01, 0xFF]), V5)));
    }

    #[test]
    fn encoding_a_property_not_allowed_for_the_packet_is_an_error() {
        let mut a = Ack {
            packet_id: 1,
            reason: 0,
            properties: Default::default(),
        };
        a.properties.topic_alias = Some(3);
        let mut buf = BytesMut::new();
        assert_eq!(
            crate::encode(&Packet::PubAck(a.clone()), V5, &mut buf),
            Err(EncodeError::PropertyNotAllowed {
                property: "topic_alias",
                packet: "PUBACK/PUBREC/PUBREL/PUBCOMP",
            })
        );
        assert!(buf.is_empty());
        // 3.x simply omits properties.
        assert!(crate::encode(&Packet::PubAck(a), V311, &mut buf).is_ok());
    }

    #[test]
    fn encoding_an_oversized_property_string_is_an_error() {
        let mut p = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "t".into(),
            packet_id: None,
            properties: Default::default(),
            payload: Default::default(),
        };
        p.properties.content_type = Some("x".repeat(65_536));
        let r = crate::encode(&Packet::Publish(p), V5, &mut BytesMut::new());
        assert!(matches!(r, Err(EncodeError::FieldTooLong { .. })));
    }

    #[test]
    fn encoding_a_subscription_identifier_above_varint_max_is_an_error() {
        let mut p = Properties::default();
        p.subscription_identifiers.push(268_435_456);
        let r = encode(&p, PropKind::Publish, &mut Counter::default());
        assert!(matches!(r, Err(EncodeError::ValueTooLarge { .. })));
    }

    #[test]
    fn every_property_round_trips_where_allowed() {
        let mut will = Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(10),
            content_type: Some("c".into()),
            response_topic: Some("r".into()),
            correlation_data: Some(bytes::Bytes::from_static(b"\x00")),
            will_delay_interval: Some(3),
            ..Default::default()
        };
        will.user_properties.push(("k".into(), "".into()));
        let connack = Properties {
            session_expiry_interval: Some(1),
            assigned_client_identifier: Some("id".into()),
            server_keep_alive: Some(30),
            authentication_method: Some("m".into()),
            authentication_data: Some(bytes::Bytes::new()),
            response_information: Some("ri".into()),
            server_reference: Some("sr".into()),
            reason_string: Some("rs".into()),
            receive_maximum: Some(65_535),
            topic_alias_maximum: Some(7),
            maximum_qos: Some(0),
            retain_available: Some(1),
            maximum_packet_size: Some(u32::MAX),
            wildcard_subscription_available: Some(0),
            subscription_identifier_available: Some(1),
            shared_subscription_available: Some(0),
            ..Default::default()
        };
        for (p, kind) in [(will, PropKind::Will), (connack, PropKind::ConnAck)] {
            let mut buf = BytesMut::new();
            encode(&p, kind, &mut buf).unwrap();
            let mut r = Reader::new(buf.freeze());
            assert_eq!(decode(&mut r, kind).unwrap(), p);
            assert!(r.is_empty());
        }
    }
}
