//! PUBLISH and its acknowledgements (PUBACK, PUBREC, PUBREL, PUBCOMP).

use crate::codes::{check, reason};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{self, PropKind};
use crate::topic::check_topic_name;
use crate::types::{Ack, ProtocolVersion, Publish, PublishRef, QoS};
use crate::wire::{Reader, Sink};

/// Packet id 0 is reserved in every version [MQTT-2.3.1-1].
pub(crate) fn packet_id(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::ProtocolError("packet identifier 0")),
        id => Ok(id),
    }
}

/// Refuses to write packet id 0, which the peer would reject.
pub(crate) fn put_packet_id<S: Sink>(s: &mut S, id: u16) -> Result<(), EncodeError> {
    if id == 0 {
        return Err(EncodeError::InvalidPacket("packet identifier 0"));
    }
    s.put_u16(id);
    Ok(())
}

/// `flags` are the fixed-header flags, already checked by the header parser.
pub(crate) fn decode_publish(
    r: &mut Reader,
    flags: u8,
    version: ProtocolVersion,
) -> Result<Publish, DecodeError> {
    let qos =
        QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::MalformedPacket("PUBLISH QoS 3"))?;
    let topic = r.string()?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(packet_id(r)?)
    };
    let properties = if version.is_v5() {
        properties::decode(r, PropKind::Publish)?
    } else {
        Default::default()
    };
    // An empty topic is how 5.0 says "use the topic alias" [MQTT-3.3.2-1, 3.3.2.3.4].
    if !(topic.is_empty() && properties.topic_alias.is_some()) {
        check_topic_name(&topic)?;
    }
    Ok(Publish {
        dup: flags & 0x08 != 0,
        qos,
        retain: flags & 0x01 != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

/// Fixed-header flags for a PUBLISH, rejecting combinations the decoder would refuse.
pub(crate) fn publish_flags(p: &PublishRef<'_>) -> Result<u8, EncodeError> {
    if p.qos == QoS::AtMostOnce && p.dup {
        return Err(EncodeError::InvalidPacket("PUBLISH QoS 0 with DUP set"));
    }
    Ok((u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain))
}

pub(crate) fn encode_publish<S: Sink>(
    p: &PublishRef<'_>,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    s.put_string(p.topic, "topic name")?;
    match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, None) => {}
        (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) => put_packet_id(s, id)?,
        _ => {
            return Err(EncodeError::InvalidPacket(
                "PUBLISH packet_id must be Some iff QoS > 0",
            ))
        }
    }
    if version.is_v5() {
        properties::encode(p.properties, PropKind::Publish, s)?;
    }
    s.put_slice(p.payload);
    Ok(())
}

/// Which acknowledgement is being decoded; decides the valid reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckKind {
    /// PUBACK and PUBREC.
    PubAck,
    /// PUBREL and PUBCOMP.
    PubRel,
}

/// 3.x: exactly a packet id. 5.0: packet id, then optional reason code, then optional properties.
pub(crate) fn decode_ack(
    r: &mut Reader,
    version: ProtocolVersion,
    kind: AckKind,
) -> Result<Ack, DecodeError> {
    let packet_id = packet_id(r)?;
    let mut ack = Ack {
        packet_id,
        reason: reason::SUCCESS,
        properties: Default::default(),
    };
    if version.is_v5() && !r.is_empty() {
        let allowed = match kind {
            AckKind::PubAck => reason::PUBACK,
            AckKind::PubRel => reason::PUBREL,
        };
        ack.reason = check(r.u8()?, allowed)?;
        if !r.is_empty() {
            ack.properties = properties::decode(r, PropKind::Ack)?;
        }
    }
    Ok(ack)
}

/// Uses the 5.0 short forms: no reason when it is success without properties,
/// no property length when there are no properties.
pub(crate) fn encode_ack<S: Sink>(
    a: &Ack,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    put_packet_id(s, a.packet_id)?;
    if version.is_v5() {
        let bare = a.properties.is_empty();
        if bare && a.reason == reason::SUCCESS {
            return Ok(());
        }
        s.put_u8(a.reason);
        if !bare {
            properties::encode(&a.properties, PropKind::Ack, s)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;
    use crate::{DecodeError, Packet, Properties};
    use bytes::Bytes;

    fn publish(qos: QoS, topic: &str) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            packet_id: (qos != QoS::AtMostOnce).then_some(7),
            properties: Properties::default(),
            payload: Bytes::from_static(b"hello"),
        }
    }

    fn ack(reason: u8) -> Ack {
        Ack {
            packet_id: 9,
            reason,
            properties: Properties::default(),
        }
    }

    #[test]
    fn publish_topic_with_wildcard_is_topic_name_invalid() {
        for topic in ["a/+", "#", "a/#", "+"] {
            for v in [V31, V311] {
                let mut body = s(topic);
                body.push(b'x');
                let r = dec(&frame(0x30, &body), v);
                assert!(
                    matches!(r, Err(DecodeError::TopicNameInvalid(_))),
                    "{topic}"
                );
            }
            let mut body = s(topic);
            body.push(0x00);
            let r = dec(&frame(0x30, &body), V5);
            assert!(
                matches!(r, Err(DecodeError::TopicNameInvalid(_))),
                "{topic}"
            );
        }
        assert_eq!(DecodeError::TopicNameInvalid("").reason_code(), 0x90);
    }

    #[test]
    fn publish_empty_topic_without_topic_alias_is_topic_name_invalid() {
        let r = dec(&frame(0x30, &[0x00, 0x00]), V311);
        assert!(matches!(r, Err(DecodeError::TopicNameInvalid(_))));
        let r = dec(&frame(0x30, &[0x00, 0x00, 0x00]), V5);
        assert!(matches!(r, Err(DecodeError::TopicNameInvalid(_))));
    }

    #[test]
    fn publish_empty_topic_with_topic_alias_is_allowed_in_v5() {
        let Packet::Publish(p) =
            dec(&frame(0x30, &[0x00, 0x00, 0x03, 0x23, 0x00, 0x04]), V5).unwrap()
        else {
            panic!()
        };
        assert_eq!(p.topic, "");
        assert_eq!(p.properties.topic_alias, Some(4));
        round_trip(&Packet::Publish(p), V5);
    }

    #[test]
    fn publish_topic_alias_0_is_topic_alias_invalid() {
        let r = dec(
            &frame(0x30, &[0x00, 0x01, b'a', 0x03, 0x23, 0x00, 0x00]),
            V5,
        );
        assert!(matches!(r, Err(DecodeError::TopicAliasInvalid(_))));
        assert_eq!(DecodeError::TopicAliasInvalid("").reason_code(), 0x94);
    }

    #[test]
    fn publish_qos1_with_packet_id_0_is_protocol_error() {
        assert!(is_protocol_error(dec(
            &frame(0x32, &[0x00, 0x01, b'a', 0x00, 0x00]),
            V311
        )));
    }

    #[test]
    fn publish_topic_with_nul_is_malformed() {
        assert!(is_malformed(dec(&frame(0x30, &[0x00, 0x01, 0x00]), V311)));
    }

    #[test]
    fn publish_round_trips_with_flags_in_every_version() {
        for v in [V31, V311, V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let mut p = publish(qos, "a/b");
                p.retain = true;
                p.dup = qos != QoS::AtMostOnce;
                if v == V5 {
                    p.properties.subscription_identifiers = vec![1, 268_435_455];
                    p.properties.user_properties = vec![("k".into(), "v".into())];
                }
                round_trip(&Packet::Publish(p), v);
            }
        }
    }

    #[test]
    fn publish_with_empty_payload_round_trips() {
        let mut p = publish(QoS::AtLeastOnce, "t");
        p.payload = Bytes::new();
        round_trip(&Packet::Publish(p), V311);
    }

    #[test]
    fn encoding_publish_with_inconsistent_packet_id_is_an_error() {
        let mut buf = bytes::BytesMut::new();
        let mut p = publish(QoS::AtLeastOnce, "t");
        p.packet_id = None;
        assert!(crate::encode(&Packet::Publish(p), V311, &mut buf).is_err());
        let mut p = publish(QoS::AtMostOnce, "t");
        p.packet_id = Some(1);
        assert!(crate::encode(&Packet::Publish(p), V311, &mut buf).is_err());
        let mut p = publish(QoS::AtMostOnce, "t");
        p.dup = true;
        assert!(crate::encode(&Packet::Publish(p), V311, &mut buf).is_err());
        let mut p = publish(QoS::AtLeastOnce, "t");
        p.packet_id = Some(0);
        assert!(crate::encode(&Packet::Publish(p), V311, &mut buf).is_err());
        assert!(buf.is_empty());
    }

    #[test]
    fn ack_with_packet_id_0_is_protocol_error() {
        for v in [V31, V311, V5] {
            assert!(is_protocol_error(dec(&[0x40, 0x02, 0x00, 0x00], v)));
            assert!(is_protocol_error(dec(&[0x50, 0x02, 0x00, 0x00], v)));
            assert!(is_protocol_error(dec(&[0x62, 0x02, 0x00, 0x00], v)));
            assert!(is_protocol_error(dec(&[0x70, 0x02, 0x00, 0x00], v)));
        }
    }

    #[test]
    fn ack_v3_with_extra_bytes_is_malformed() {
        for first in [0x40, 0x50, 0x62, 0x70] {
            assert!(is_malformed(dec(&[first, 0x03, 0x00, 0x01, 0x00], V311)));
            assert!(is_malformed(dec(
                &[first, 0x04, 0x00, 0x01, 0x00, 0x00],
                V31
            )));
        }
    }

    #[test]
    fn ack_shorter_than_packet_id_is_malformed() {
        assert!(is_malformed(dec(&[0x40, 0x01, 0x00], V5)));
        assert!(is_malformed(dec(&[0x40, 0x00], V311)));
    }

    #[test]
    fn ack_v5_short_forms_decode() {
        assert_eq!(
            dec(&[0x40, 0x02, 0x00, 0x09], V5),
            Ok(Packet::PubAck(ack(0)))
        );
        assert_eq!(
            dec(&[0x50, 0x03, 0x00, 0x09, 0x10], V5),
            Ok(Packet::PubRec(ack(0x10)))
        );
        assert_eq!(
            dec(&[0x62, 0x04, 0x00, 0x09, 0x92, 0x00], V5),
            Ok(Packet::PubRel(ack(0x92)))
        );
    }

    #[test]
    fn ack_v5_encoder_uses_short_forms() {
        assert_eq!(enc(&Packet::PubAck(ack(0)), V5), [0x40, 0x02, 0x00, 0x09]);
        assert_eq!(
            enc(&Packet::PubComp(ack(0x92)), V5),
            [0x70, 0x03, 0x00, 0x09, 0x92]
        );
        let mut a = ack(0);
        a.properties.reason_string = Some("r".into());
        assert_eq!(
            enc(&Packet::PubAck(a.clone()), V5),
            [0x40, 0x08, 0x00, 0x09, 0x00, 0x04, 0x1F, 0x00, 0x01, b'r']
        );
        round_trip(&Packet::PubAck(a.clone()), V5);
        // 3.x drops the reason and properties.
        assert_eq!(enc(&Packet::PubAck(a), V311), [0x40, 0x02, 0x00, 0x09]);
    }

    #[test]
    fn ack_v5_reason_code_not_valid_for_packet_is_protocol_error() {
        assert!(is_protocol_error(dec(&[0x40, 0x03, 0x00, 0x01, 0x92], V5)));
        assert!(is_protocol_error(dec(&[0x62, 0x03, 0x00, 0x01, 0x10], V5)));
        assert!(is_protocol_error(dec(&[0x70, 0x03, 0x00, 0x01, 0x80], V5)));
    }

    #[test]
    fn ack_v5_with_bytes_after_properties_is_malformed() {
        assert!(is_malformed(dec(
            &[0x40, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00],
            V5
        )));
    }

    #[test]
    fn acks_round_trip_in_every_version() {
        for v in [V31, V311, V5] {
            for p in [
                Packet::PubAck(ack(0)),
                Packet::PubRec(ack(0)),
                Packet::PubRel(ack(0)),
                Packet::PubComp(ack(0)),
            ] {
                round_trip(&p, v);
            }
        }
    }
}
