//! `decode`: fixed header parsing, size limits and dispatch to the per-packet decoders.

use bytes::{Buf, BytesMut};

use crate::connect::{decode_connack, decode_connect};
use crate::control::{decode_auth, decode_disconnect};
use crate::error::DecodeError;
use crate::publish::{decode_ack, decode_publish, AckKind};
use crate::subscribe::{decode_suback, decode_subscribe, decode_unsuback, decode_unsubscribe};
use crate::types::{Packet, ProtocolVersion};
use crate::wire::{parse_varint, Reader};

/// Decode one packet from the front of `buf`.
///
/// * `Ok(None)`: incomplete; `buf` is left untouched (only the fixed header is looked at until
///   the whole packet is there).
/// * `Ok(Some(p))`: exactly that packet's bytes were consumed; the payload is a zero-copy slice.
/// * `Err(e)`: malformed or invalid; the caller should close the connection. The bad packet's
///   bytes are consumed when the whole packet is in `buf`, otherwise `buf` is left untouched.
///
/// `version` is the negotiated version (ignored for CONNECT, which carries its own).
/// `max_packet_size` limits the total packet size, fixed header included; a larger declared
/// size is `PacketTooLarge` as soon as the fixed header is readable.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let Some((remaining, len_len)) = parse_varint(buf.get(1..).unwrap_or_default())? else {
        return Ok(None);
    };
    let header_len = 1 + len_len;
    let total = header_len + remaining as usize;
    let packet_type = first >> 4;
    let flags = first & 0x0F;
    let mut early = check_fixed_header(packet_type, flags, remaining, version);
    if early.is_ok() && total > max_packet_size {
        early = Err(DecodeError::PacketTooLarge {
            size: total,
            max: max_packet_size,
        });
    }
    if let Err(e) = early {
        if buf.len() >= total {
            buf.advance(total);
        }
        return Err(e);
    }
    if buf.len() < total {
        return Ok(None);
    }
    // From here on the packet's bytes are consumed whatever the outcome.
    let mut frame = buf.split_to(total).freeze();
    frame.advance(header_len);
    let mut r = Reader::new(frame);
    let packet = match packet_type {
        1 => Packet::Connect(decode_connect(&mut r)?),
        2 => Packet::ConnAck(decode_connack(&mut r, version)?),
        3 => Packet::Publish(decode_publish(&mut r, flags, version)?),
        4 => Packet::PubAck(decode_ack(&mut r, version, AckKind::PubAck)?),
        5 => Packet::PubRec(decode_ack(&mut r, version, AckKind::PubAck)?),
        6 => Packet::PubRel(decode_ack(&mut r, version, AckKind::PubRel)?),
        7 => Packet::PubComp(decode_ack(&mut r, version, AckKind::PubRel)?),
        8 => Packet::Subscribe(decode_subscribe(&mut r, version)?),
        9 => Packet::SubAck(decode_suback(&mut r, version)?),
        10 => Packet::Unsubscribe(decode_unsubscribe(&mut r, version)?),
        11 => Packet::UnsubAck(decode_unsuback(&mut r, version)?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => Packet::Disconnect(decode_disconnect(&mut r, version)?),
        _ => Packet::Auth(decode_auth(&mut r)?),
    };
    r.finish()?;
    Ok(Some(packet))
}

/// Checks type, reserved flag bits [MQTT-2.2.2-1, MQTT-2.2.2-2] and body-less packets' lengths,
/// all of which are known before the body arrives.
fn check_fixed_header(
    packet_type: u8,
    flags: u8,
    remaining: u32,
    version: ProtocolVersion,
) -> Result<(), DecodeError> {
    let expected_flags = match packet_type {
        0 => return Err(DecodeError::MalformedPacket("reserved packet type 0")),
        3 => {
            if (flags >> 1) & 0x03 == 3 {
                return Err(DecodeError::MalformedPacket("PUBLISH QoS 3"));
            }
            if (flags >> 1) & 0x03 == 0 && flags & 0x08 != 0 {
                return Err(DecodeError::MalformedPacket("PUBLISH QoS 0 with DUP set"));
            }
            flags
        }
        6 | 8 | 10 => 0b0010,
        15 if !version.is_v5() => {
            return Err(DecodeError::MalformedPacket(
                "AUTH does not exist before MQTT 5.0",
            ))
        }
        _ => 0,
    };
    if flags != expected_flags {
        return Err(DecodeError::MalformedPacket(
            "reserved fixed header flags are invalid",
        ));
    }
    let bodyless = matches!(packet_type, 12 | 13) || (packet_type == 14 && !version.is_v5());
    if bodyless && remaining != 0 {
        return Err(DecodeError::MalformedPacket(
            "packet must have remaining length 0",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;
    use crate::{Ack, Publish, QoS};
    use bytes::Bytes;

    #[test]
    fn packet_type_0_is_malformed() {
        for v in [V31, V311, V5] {
            assert!(is_malformed(dec(&[0x00, 0x00], v)));
        }
    }

    #[test]
    fn packet_type_15_is_malformed_before_v5() {
        assert!(is_malformed(dec(&[0xF0, 0x00], V31)));
        assert!(is_malformed(dec(&[0xF0, 0x00], V311)));
        assert!(matches!(dec(&[0xF0, 0x00], V5), Ok(Packet::Auth(_))));
    }

    #[test]
    fn auth_with_nonzero_flags_is_malformed() {
        assert!(is_malformed(dec(&[0xF1, 0x00], V5)));
    }

    #[test]
    fn pubrel_subscribe_unsubscribe_require_flags_0010() {
        for v in [V31, V311, V5] {
            assert!(is_malformed(dec(&[0x60, 0x02, 0x00, 0x01], v)));
            assert!(is_malformed(dec(&[0x63, 0x02, 0x00, 0x01], v)));
            assert!(matches!(
                dec(&[0x62, 0x02, 0x00, 0x01], v),
                Ok(Packet::PubRel(_))
            ));
            let sub = frame(0x80, &[0x00, 0x01, 0x00, 0x01, b'a', 0x00]);
            assert!(is_malformed(dec(&sub, v)));
            let unsub = frame(0xA0, &[0x00, 0x01, 0x00, 0x01, b'a']);
            assert!(is_malformed(dec(&unsub, v)));
        }
    }

    #[test]
    fn other_packets_with_nonzero_flags_are_malformed() {
        for first in [0x41u8, 0x52, 0x78, 0xC1, 0xD2, 0xE4, 0x18, 0x21, 0x98, 0xB1] {
            let r = dec(&[first, 0x02, 0x00, 0x01], V311);
            assert!(is_malformed(r), "{first:#x}");
        }
    }

    #[test]
    fn publish_with_qos_3_is_malformed() {
        let p = frame(0x36, &[0x00, 0x01, b'a', 0x00, 0x01]);
        assert!(is_malformed(dec(&p, V311)));
    }

    #[test]
    fn publish_qos_0_with_dup_is_malformed() {
        let p = frame(0x38, &[0x00, 0x01, b'a']);
        assert!(is_malformed(dec(&p, V311)));
    }

    #[test]
    fn remaining_length_longer_than_4_bytes_is_malformed() {
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01][..]);
        assert!(matches!(
            decode(&mut buf, V311, usize::MAX),
            Err(DecodeError::MalformedPacket(_))
        ));
    }

    #[test]
    fn pingreq_and_pingresp_with_nonzero_length_are_malformed() {
        for v in [V31, V311, V5] {
            assert!(is_malformed(dec(&[0xC0, 0x01, 0x00], v)));
            assert!(is_malformed(dec(&[0xD0, 0x01, 0x00], v)));
            assert_eq!(dec(&[0xC0, 0x00], v), Ok(Packet::PingReq));
            assert_eq!(dec(&[0xD0, 0x00], v), Ok(Packet::PingResp));
        }
    }

    #[test]
    fn disconnect_v3_with_nonzero_length_is_malformed() {
        assert!(is_malformed(dec(&[0xE0, 0x01, 0x00], V31)));
        assert!(is_malformed(dec(&[0xE0, 0x01, 0x00], V311)));
    }

    #[test]
    fn puback_v311_with_trailing_byte_is_malformed() {
        assert!(is_malformed(dec(&[0x40, 0x03, 0x00, 0x01, 0x00], V311)));
    }

    #[test]
    fn partial_packet_returns_none_and_leaves_buffer_untouched() {
        let full = frame(0x32, &[0x00, 0x01, b'a', 0x00, 0x07, b'x', b'y']);
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(decode(&mut buf, V311, usize::MAX), Ok(None), "cut {cut}");
            assert_eq!(&buf[..], &full[..cut]);
        }
    }

    #[test]
    fn several_packets_in_buffer_decode_one_by_one() {
        let mut bytes = vec![0xC0, 0x00];
        bytes.extend(frame(0x40, &[0x00, 0x05]));
        bytes.extend([0xD0, 0x00, 0x40]);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(decode(&mut buf, V311, 100), Ok(Some(Packet::PingReq)));
        let ack = Ack {
            packet_id: 5,
            reason: 0,
            properties: Default::default(),
        };
        assert_eq!(decode(&mut buf, V311, 100), Ok(Some(Packet::PubAck(ack))));
        assert_eq!(decode(&mut buf, V311, 100), Ok(Some(Packet::PingResp)));
        assert_eq!(decode(&mut buf, V311, 100), Ok(None));
        assert_eq!(&buf[..], &[0x40]);
    }

    #[test]
    fn packet_too_large_is_reported_from_the_fixed_header_alone() {
        // Declares 16,383 body bytes but carries none of them.
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0x7F][..]);
        assert_eq!(
            decode(&mut buf, V5, 1000),
            Err(DecodeError::PacketTooLarge {
                size: 16_386,
                max: 1000
            })
        );
        assert_eq!(
            DecodeError::PacketTooLarge { size: 0, max: 0 }.reason_code(),
            0x95
        );
    }

    #[test]
    fn packet_exactly_at_max_size_is_accepted() {
        let p = [0x40, 0x02, 0x00, 0x01];
        let mut buf = BytesMut::from(&p[..]);
        assert!(decode(&mut buf, V311, 4).unwrap().is_some());
        let mut buf = BytesMut::from(&p[..]);
        assert!(decode(&mut buf, V311, 3).is_err());
    }

    #[test]
    fn bad_packet_is_consumed_when_complete() {
        let mut bytes = vec![0x40, 0x02, 0x00, 0x00]; // packet id 0
        bytes.extend([0xC0, 0x00]);
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(decode(&mut buf, V311, 100).is_err());
        assert_eq!(decode(&mut buf, V311, 100), Ok(Some(Packet::PingReq)));
        // A bad fixed header is consumed too once the packet is complete...
        let mut buf = BytesMut::from(&[0x41, 0x02, 0x00, 0x01, 0xC0, 0x00][..]);
        assert!(decode(&mut buf, V311, 100).is_err());
        assert_eq!(&buf[..], &[0xC0, 0x00]);
        // ...but not while incomplete.
        let mut buf = BytesMut::from(&[0x41, 0x02, 0x00][..]);
        assert!(decode(&mut buf, V311, 100).is_err());
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn publish_payload_is_a_zero_copy_slice() {
        let bytes = frame(0x30, &[0x00, 0x01, b'a', 1, 2, 3]);
        let mut buf = BytesMut::from(&bytes[..]);
        let start = buf.as_ptr() as usize;
        let Some(Packet::Publish(p)) = decode(&mut buf, V311, 100).unwrap() else {
            panic!("not a publish");
        };
        assert_eq!(p.payload, Bytes::from_static(&[1, 2, 3]));
        assert_eq!(p.payload.as_ptr() as usize, start + 5);
        assert_eq!(
            p,
            Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: "a".into(),
                packet_id: None,
                properties: Default::default(),
                payload: Bytes::from_static(&[1, 2, 3]),
            }
        );
    }
}
