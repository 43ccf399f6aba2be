//! CONNECT and CONNACK bodies.

use crate::codes::reason;
use crate::error::{DecodeError, EncodeError};
use crate::properties::{self, PropKind};
use crate::topic::check_topic_name;
use crate::types::{ConnAck, Connect, ProtocolVersion, QoS, Will};
use crate::wire::{Reader, Sink};

const RESERVED: u8 = 0x01;
const CLEAN_START: u8 = 0x02;
const WILL: u8 = 0x04;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USERNAME: u8 = 0x80;
/// High bit of the protocol level: the client is a bridge (MQTT 3.x only).
const BRIDGE: u8 = 0x80;

/// Decodes a CONNECT body; the protocol version comes from the packet itself.
pub(crate) fn decode_connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.string()?;
    let level = r.u8()?;
    // The high bit of a 3.x level marks a bridge (Mosquitto's `try_private`).
    let bridge = level & BRIDGE != 0 && level & !BRIDGE < 5;
    let protocol = ProtocolVersion::from_name_and_level(&name, level & !BRIDGE)
        .filter(|_| bridge || level & BRIDGE == 0);
    let Some(protocol) = protocol else {
        return Err(DecodeError::UnsupportedProtocolVersion { name, level });
    };
    let v5 = protocol.is_v5();
    let flags = r.u8()?;
    if flags & RESERVED != 0 {
        return Err(DecodeError::MalformedPacket("CONNECT reserved flag is set"));
    }
    let will_qos = QoS::from_u8((flags >> 3) & 0x03)
        .ok_or(DecodeError::MalformedPacket("CONNECT will QoS 3"))?;
    let will_retain = flags & WILL_RETAIN != 0;
    let has_will = flags & WILL != 0;
    if !has_will && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(DecodeError::MalformedPacket(
            "CONNECT will QoS or retain set without will flag",
        ));
    }
    let has_username = flags & USERNAME != 0;
    let has_password = flags & PASSWORD != 0;
    if !v5 && has_password && !has_username {
        return Err(DecodeError::MalformedPacket(
            "CONNECT password flag without username flag",
        ));
    }
    let keep_alive = r.u16()?;
    let properties = if v5 {
        properties::decode(r, PropKind::Connect)?
    } else {
        Default::default()
    };
    let client_id = r.string()?;
    let will = if has_will {
        let properties = if v5 {
            properties::decode(r, PropKind::Will)?
        } else {
            Default::default()
        };
        let topic = r.string()?;
        check_topic_name(&topic)?;
        let payload = r.binary()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start: flags & CLEAN_START != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
        bridge,
    })
}

/// Writes a CONNECT body framed for `c.protocol`.
pub(crate) fn encode_connect<S: Sink>(c: &Connect, s: &mut S) -> Result<(), EncodeError> {
    let v5 = c.protocol.is_v5();
    if !v5 && c.password.is_some() && c.username.is_none() {
        return Err(EncodeError::InvalidPacket(
            "MQTT 3.x CONNECT cannot carry a password without a username",
        ));
    }
    if c.bridge && v5 {
        return Err(EncodeError::InvalidPacket(
            "the bridge flag is for MQTT 3.x (5.0 has no-local)",
        ));
    }
    s.put_string(c.protocol.protocol_name(), "protocol name")?;
    s.put_u8(c.protocol.level() | if c.bridge { BRIDGE } else { 0 });
    let mut flags = 0;
    if c.clean_start {
        flags |= CLEAN_START;
    }
    if let Some(w) = &c.will {
        flags |= WILL | ((w.qos as u8) << 3);
        if w.retain {
            flags |= WILL_RETAIN;
        }
    }
    if c.username.is_some() {
        flags |= USERNAME;
    }
    if c.password.is_some() {
        flags |= PASSWORD;
    }
    s.put_u8(flags);
    s.put_u16(c.keep_alive);
    if v5 {
        properties::encode(&c.properties, PropKind::Connect, s)?;
    }
    s.put_string(&c.client_id, "client identifier")?;
    if let Some(w) = &c.will {
        if v5 {
            properties::encode(&w.properties, PropKind::Will, s)?;
        }
        s.put_string(&w.topic, "will topic")?;
        s.put_binary(&w.payload, "will payload")?;
    }
    if let Some(u) = &c.username {
        s.put_string(u, "username")?;
    }
    if let Some(p) = &c.password {
        s.put_binary(p, "password")?;
    }
    Ok(())
}

pub(crate) fn decode_connack(
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::MalformedPacket(
            "CONNACK reserved flag bits are set",
        ));
    }
    let session_present = flags & 0x01 != 0;
    let code = r.u8()?;
    let properties = if version.is_v5() {
        crate::codes::check(code, reason::CONNACK)?;
        properties::decode(r, PropKind::ConnAck)?
    } else {
        if code > 5 {
            return Err(DecodeError::MalformedPacket(
                "CONNACK return code is reserved",
            ));
        }
        Default::default()
    };
    if session_present && code != 0 {
        return Err(DecodeError::ProtocolError(
            "CONNACK session present with a failure code",
        ));
    }
    Ok(ConnAck {
        session_present,
        code,
        properties,
    })
}

pub(crate) fn encode_connack<S: Sink>(
    c: &ConnAck,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    s.put_u8(u8::from(c.session_present));
    s.put_u8(c.code);
    if version.is_v5() {
        properties::encode(&c.properties, PropKind::ConnAck, s)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;
    use crate::{connack_v3, DecodeError, Packet, Properties};
    use bytes::Bytes;

    /// CONNECT frame: protocol name, level, flags, keep alive 60, then `rest`.
    fn connect(name: &str, level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
        let mut body = s(name);
        body.extend([level, flags, 0x00, 0x3C]);
        body.extend_from_slice(rest);
        frame(0x10, &body)
    }

    fn minimal(protocol: ProtocolVersion) -> Connect {
        Connect {
            protocol,
            clean_start: true,
            keep_alive: 60,
            client_id: "c".into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
            bridge: false,
        }
    }

    #[test]
    fn a_3x_level_with_the_high_bit_is_a_bridge_of_that_version() {
        let c311 = dec(&connect("MQTT", 0x84, 0x02, &s("c")), V5).unwrap();
        let bridge = |protocol| Connect {
            bridge: true,
            ..minimal(protocol)
        };
        assert_eq!(c311, Packet::Connect(bridge(V311)));
        let c31 = dec(&connect("MQIsdp", 0x83, 0x02, &s("c")), V5).unwrap();
        assert_eq!(c31, Packet::Connect(bridge(V31)));
        // 5.0 has no-local instead: 0x85 is no version.
        let r = dec(&connect("MQTT", 0x85, 0x02, &s("c")), V311);
        assert!(matches!(
            r,
            Err(DecodeError::UnsupportedProtocolVersion { level: 0x85, .. })
        ));
        // The flag goes out as it came in; a 5.0 CONNECT cannot carry it.
        assert_eq!(enc(&Packet::Connect(bridge(V311)), V311)[8], 0x84);
        let mut buf = bytes::BytesMut::new();
        assert!(crate::encode(&Packet::Connect(bridge(V5)), V5, &mut buf).is_err());
    }

    #[test]
    fn connect_protocol_names_and_levels_map_to_versions() {
        let c31 = dec(&connect("MQIsdp", 3, 0x02, &s("c")), V311).unwrap();
        assert_eq!(c31, Packet::Connect(minimal(V31)));
        let c311 = dec(&connect("MQTT", 4, 0x02, &s("c")), V5).unwrap();
        assert_eq!(c311, Packet::Connect(minimal(V311)));
        let mut rest = vec![0x00];
        rest.extend(s("c"));
        let c5 = dec(&connect("MQTT", 5, 0x02, &rest), V311).unwrap();
        assert_eq!(c5, Packet::Connect(minimal(V5)));
    }

    #[test]
    fn connect_with_unknown_name_or_level_is_unsupported_protocol_version() {
        for (name, level) in [
            ("MQTT", 3),
            ("MQTT", 6),
            ("MQIsdp", 4),
            ("MQIsdp", 5),
            ("FOO", 4),
        ] {
            let r = dec(&connect(name, level, 0x02, &s("c")), V311);
            assert_eq!(
                r,
                Err(DecodeError::UnsupportedProtocolVersion {
                    name: name.into(),
                    level
                })
            );
        }
        let e = DecodeError::UnsupportedProtocolVersion {
            name: "MQTT".into(),
            level: 6,
        };
        assert_eq!(e.reason_code(), 0x84);
    }

    #[test]
    fn connect_with_reserved_flag_set_is_malformed() {
        for (name, level) in [("MQIsdp", 3), ("MQTT", 4), ("MQTT", 5)] {
            let r = dec(&connect(name, level, 0x03, &[0x00, 0x00, 0x01, b'c']), V311);
            assert!(is_malformed(r));
        }
    }

    #[test]
    fn connect_will_qos_without_will_flag_is_malformed() {
        assert!(is_malformed(dec(&connect("MQTT", 4, 0x0A, &s("c")), V311)));
    }

    #[test]
    fn connect_will_retain_without_will_flag_is_malformed() {
        assert!(is_malformed(dec(&connect("MQTT", 4, 0x22, &s("c")), V311)));
    }

    #[test]
    fn connect_will_qos_3_is_malformed() {
        let mut rest = s("c");
        rest.extend(s("t"));
        rest.extend(s("m"));
        assert!(is_malformed(dec(&connect("MQTT", 4, 0x1E, &rest), V311)));
    }

    #[test]
    fn connect_password_without_username_is_malformed_in_3x() {
        let mut rest = s("c");
        rest.extend(s("pw"));
        assert!(is_malformed(dec(&connect("MQTT", 4, 0x42, &rest), V311)));
        assert!(is_malformed(dec(&connect("MQIsdp", 3, 0x42, &rest), V31)));
    }

    #[test]
    fn connect_password_without_username_is_allowed_in_v5() {
        let mut rest = vec![0x00];
        rest.extend(s("c"));
        rest.extend(s("pw"));
        let Packet::Connect(c) = dec(&connect("MQTT", 5, 0x42, &rest), V5).unwrap() else {
            panic!()
        };
        assert_eq!(c.username, None);
        assert_eq!(c.password, Some(Bytes::from_static(b"pw")));
        round_trip(&Packet::Connect(c), V5);
    }

    #[test]
    fn connect_empty_password_is_some_empty() {
        let mut rest = s("c");
        rest.extend(s("user"));
        rest.extend([0x00, 0x00]);
        let Packet::Connect(c) = dec(&connect("MQTT", 4, 0xC2, &rest), V311).unwrap() else {
            panic!()
        };
        assert_eq!(c.username.as_deref(), Some("user"));
        assert_eq!(c.password, Some(Bytes::new()));
    }

    #[test]
    fn connect_password_is_binary_not_utf8() {
        let mut rest = s("c");
        rest.extend(s("user"));
        rest.extend([0x00, 0x03, 0xFF, 0x00, 0xC3]);
        let Packet::Connect(c) = dec(&connect("MQTT", 4, 0xC2, &rest), V311).unwrap() else {
            panic!()
        };
        assert_eq!(c.password, Some(Bytes::from_static(&[0xFF, 0x00, 0xC3])));
    }

    #[test]
    fn connect_v31_client_id_length_is_not_enforced() {
        let id = "a".repeat(100);
        let Packet::Connect(c) = dec(&connect("MQIsdp", 3, 0x02, &s(&id)), V31).unwrap() else {
            panic!()
        };
        assert_eq!(c.client_id, id);
    }

    #[test]
    fn connect_will_topic_with_wildcard_is_topic_name_invalid() {
        let mut rest = s("c");
        rest.extend(s("a/#"));
        rest.extend(s("m"));
        let r = dec(&connect("MQTT", 4, 0x06, &rest), V311);
        assert!(matches!(r, Err(DecodeError::TopicNameInvalid(_))));
    }

    #[test]
    fn connect_with_trailing_bytes_is_malformed() {
        let mut rest = s("c");
        rest.push(0x00);
        assert!(is_malformed(dec(&connect("MQTT", 4, 0x02, &rest), V311)));
    }

    #[test]
    fn connect_truncated_inside_payload_is_malformed() {
        let mut rest = s("c");
        rest.extend([0x00, 0x05, b'u']); // username claims 5 bytes
        assert!(is_malformed(dec(&connect("MQTT", 4, 0x82, &rest), V311)));
    }

    #[test]
    fn connect_full_round_trips_in_every_version() {
        for v in [V31, V311, V5] {
            let mut c = minimal(v);
            c.clean_start = false;
            c.username = Some("u".into());
            c.password = Some(Bytes::from_static(b"\x00\xFF"));
            c.will = Some(Will {
                topic: "w/t".into(),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::ExactlyOnce,
                retain: true,
                properties: Properties::default(),
            });
            if v == V5 {
                c.properties.session_expiry_interval = Some(30);
                c.properties.receive_maximum = Some(10);
                if let Some(w) = c.will.as_mut() {
                    w.properties.will_delay_interval = Some(5);
                    w.properties.content_type = Some("text/plain".into());
                }
            }
            round_trip(&Packet::Connect(c), V311);
        }
    }

    #[test]
    fn connack_with_reserved_flag_bits_is_malformed() {
        assert!(is_malformed(dec(&[0x20, 0x02, 0x02, 0x00], V311)));
        assert!(is_malformed(dec(&[0x20, 0x03, 0x80, 0x00, 0x00], V5)));
    }

    #[test]
    fn connack_session_present_with_failure_code_is_protocol_error() {
        assert!(is_protocol_error(dec(&[0x20, 0x02, 0x01, 0x05], V311)));
        assert!(is_protocol_error(dec(&[0x20, 0x03, 0x01, 0x87, 0x00], V5)));
    }

    #[test]
    fn connack_v3_reserved_return_code_is_malformed() {
        assert!(is_malformed(dec(&[0x20, 0x02, 0x00, 0x06], V311)));
    }

    #[test]
    fn connack_v5_unknown_reason_code_is_protocol_error() {
        assert!(is_protocol_error(dec(&[0x20, 0x03, 0x00, 0x10, 0x00], V5)));
    }

    #[test]
    fn connack_round_trips_in_every_version() {
        for v in [V31, V311, V5] {
            let mut a = ConnAck {
                session_present: true,
                code: connack_v3::ACCEPTED,
                properties: Properties::default(),
            };
            if v == V5 {
                a.properties.assigned_client_identifier = Some("gen-1".into());
                a.properties.maximum_qos = Some(1);
                a.properties.topic_alias_maximum = Some(0);
            }
            round_trip(&Packet::ConnAck(a), v);
        }
        let refused = ConnAck {
            session_present: false,
            code: connack_v3::NOT_AUTHORIZED,
            properties: Properties::default(),
        };
        assert_eq!(
            enc(&Packet::ConnAck(refused), V311),
            [0x20, 0x02, 0x00, 0x05]
        );
    }

    #[test]
    fn connack_v3_omits_properties() {
        let mut a = ConnAck {
            session_present: false,
            code: 0,
            properties: Properties::default(),
        };
        a.properties.reason_string = Some("ignored".into());
        assert_eq!(enc(&Packet::ConnAck(a), V311), [0x20, 0x02, 0x00, 0x00]);
    }

    #[test]
    fn encoding_v3_connect_with_password_but_no_username_is_an_error() {
        let mut c = minimal(V311);
        c.password = Some(Bytes::from_static(b"p"));
        let mut buf = bytes::BytesMut::new();
        assert!(crate::encode(&Packet::Connect(c), V311, &mut buf).is_err());
        assert!(buf.is_empty());
    }
}
