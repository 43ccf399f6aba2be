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
