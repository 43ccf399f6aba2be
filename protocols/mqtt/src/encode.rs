//! `encode` / `encoded_len`: fixed header plus dispatch to the per-packet encoders.
//! The body is measured with a counting sink first, so errors leave `buf` untouched.

use bytes::BytesMut;

use crate::connect::{encode_connack, encode_connect};
use crate::control::{encode_auth, encode_disconnect};
use crate::error::EncodeError;
use crate::publish::{encode_ack, encode_publish, publish_flags};
use crate::subscribe::{encode_suback, encode_subscribe, encode_unsuback, encode_unsubscribe};
use crate::types::{Packet, ProtocolVersion};
use crate::wire::{varint_len, Counter, Sink, VARINT_MAX};

/// Append the encoding of `packet` for `version` to `buf`.
///
/// Errors (never silent truncation) when a string/binary field exceeds 65,535 bytes or the
/// remaining length exceeds 268,435,455; nothing is appended then. For 3.x, properties and
/// 5.0-only fields are omitted. CONNECT is framed for its own `protocol`, not `version`.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let (first, remaining) = measure(packet, version)?;
    buf.reserve(1 + varint_len(remaining) + remaining);
    buf.put_u8(first);
    buf.put_varint(remaining, "remaining length")?;
    write_body(packet, version, buf)
}

/// Size in bytes the encoded packet would take, so a broker can honour a client's
/// Maximum Packet Size before encoding.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let (_, remaining) = measure(packet, version)?;
    Ok(1 + varint_len(remaining) + remaining)
}

/// First header byte and remaining length; runs every check the real write would.
fn measure(packet: &Packet, version: ProtocolVersion) -> Result<(u8, usize), EncodeError> {
    let first = first_byte(packet, version)?;
    let mut counter = Counter::default();
    write_body(packet, version, &mut counter)?;
    if counter.0 > VARINT_MAX {
        return Err(EncodeError::PacketTooLarge {
            remaining_length: counter.0,
        });
    }
    Ok((first, counter.0))
}

fn first_byte(packet: &Packet, version: ProtocolVersion) -> Result<u8, EncodeError> {
    Ok(match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(p) => 0x30 | publish_flags(p)?,
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) if !version.is_v5() => {
            return Err(EncodeError::UnsupportedInVersion { packet: "AUTH" })
        }
        Packet::Auth(_) => 0xF0,
    })
}

fn write_body<S: Sink>(
    packet: &Packet,
    version: ProtocolVersion,
    s: &mut S,
) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(c) => encode_connect(c, s),
        Packet::ConnAck(c) => encode_connack(c, version, s),
        Packet::Publish(p) => encode_publish(p, version, s),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            encode_ack(a, version, s)
        }
        Packet::Subscribe(sub) => encode_subscribe(sub, version, s),
        Packet::SubAck(a) => encode_suback(a, version, s),
        Packet::Unsubscribe(u) => encode_unsubscribe(u, version, s),
        Packet::UnsubAck(a) => encode_unsuback(a, version, s),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(d) => encode_disconnect(d, version, s),
        Packet::Auth(a) => encode_auth(a, s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;
    use crate::{Publish, QoS};
    use bytes::Bytes;

    fn publish(payload: Bytes) -> Packet {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "t".into(),
            packet_id: None,
            properties: Default::default(),
            payload,
        })
    }

    #[test]
    fn encoding_a_topic_longer_than_65535_bytes_is_an_error_not_a_truncation() {
        let Packet::Publish(mut p) = publish(Bytes::new()) else {
            unreachable!()
        };
        p.topic = "a".repeat(65_536);
        let mut buf = BytesMut::from(&b"keep"[..]);
        let r = encode(&Packet::Publish(p), V311, &mut buf);
        assert_eq!(
            r,
            Err(EncodeError::FieldTooLong {
                field: "topic name",
                len: 65_536
            })
        );
        assert_eq!(&buf[..], b"keep");
    }

    #[test]
    fn encoding_a_remaining_length_above_268435455_is_an_error() {
        // Zeroed allocation is lazy, and the counting pass never reads the payload.
        let p = publish(Bytes::from(vec![0u8; VARINT_MAX]));
        assert!(matches!(
            encoded_len(&p, V311),
            Err(EncodeError::PacketTooLarge { .. })
        ));
    }

    #[test]
    fn encoded_len_matches_encode_across_length_boundaries() {
        for n in [0usize, 120, 124, 125, 126, 16_380, 16_381, 16_382, 70_000] {
            let p = publish(Bytes::from(vec![7u8; n]));
            for v in [V31, V311, V5] {
                let bytes = enc(&p, v);
                assert_eq!(encoded_len(&p, v).unwrap(), bytes.len());
                assert_eq!(dec(&bytes, v).unwrap(), p);
            }
        }
    }

    #[test]
    fn encode_appends_to_existing_buffer_contents() {
        let mut buf = BytesMut::from(&[0xC0, 0x00][..]);
        encode(&Packet::PingResp, V311, &mut buf).unwrap();
        assert_eq!(&buf[..], &[0xC0, 0x00, 0xD0, 0x00]);
    }
}
