//! `encode` / `encoded_len`: fixed header plus dispatch to the per-packet encoders.
//! The body is measured with a counting sink first, so errors leave `buf` untouched.

use bytes::BytesMut;

use crate::connect::{encode_connack, encode_connect};
use crate::control::{encode_auth, encode_disconnect};
use crate::error::EncodeError;
use crate::publish::{encode_ack, encode_publish as encode_publish_body, publish_flags};
use crate::subscribe::{encode_suback, encode_subscribe, encode_unsuback, encode_unsubscribe};
use crate::types::{Packet, ProtocolVersion, PublishRef};
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
    frame(packet, version, buf)
}

/// Size in bytes the encoded packet would take, so a broker can honour a client's
/// Maximum Packet Size before encoding.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let (_, remaining) = measure(packet, version)?;
    Ok(1 + varint_len(remaining) + remaining)
}

/// [`encode`] for a borrowed PUBLISH: what a broker sends per delivery, with no
/// copy of the topic or properties into a [`crate::Publish`] first.
pub fn encode_publish(
    publish: &PublishRef<'_>,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    frame(publish, version, buf)
}

/// [`encoded_len`] for a borrowed PUBLISH.
pub fn publish_encoded_len(
    publish: &PublishRef<'_>,
    version: ProtocolVersion,
) -> Result<usize, EncodeError> {
    let (_, remaining) = measure(publish, version)?;
    Ok(1 + varint_len(remaining) + remaining)
}

/// What can be framed: a first header byte and a body.
trait Body {
    fn first_byte(&self, version: ProtocolVersion) -> Result<u8, EncodeError>;
    fn write<S: Sink>(&self, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError>;
}

impl Body for Packet {
    fn first_byte(&self, version: ProtocolVersion) -> Result<u8, EncodeError> {
        first_byte(self, version)
    }
    fn write<S: Sink>(&self, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
        write_body(self, version, s)
    }
}

impl Body for PublishRef<'_> {
    fn first_byte(&self, _: ProtocolVersion) -> Result<u8, EncodeError> {
        Ok(0x30 | publish_flags(self)?)
    }
    fn write<S: Sink>(&self, version: ProtocolVersion, s: &mut S) -> Result<(), EncodeError> {
        encode_publish_body(self, version, s)
    }
}

fn frame<B: Body>(
    body: &B,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let (first, remaining) = measure(body, version)?;
    buf.reserve(1 + varint_len(remaining) + remaining);
    buf.put_u8(first);
    buf.put_varint(remaining, "remaining length")?;
    body.write(version, buf)
}

/// First header byte and remaining length; runs every check the real write would.
fn measure<B: Body>(body: &B, version: ProtocolVersion) -> Result<(u8, usize), EncodeError> {
    let first = body.first_byte(version)?;
    let mut counter = Counter::default();
    body.write(version, &mut counter)?;
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
        Packet::Publish(p) => 0x30 | publish_flags(&p.borrowed())?,
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
        Packet::Publish(p) => encode_publish_body(&p.borrowed(), version, s),
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
    fn a_borrowed_publish_encodes_as_the_owned_one() {
        let mut owned = Publish {
            dup: true,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "a/b".into(),
            packet_id: Some(7),
            properties: Default::default(),
            payload: Bytes::from_static(b"hello"),
        };
        owned.properties.content_type = Some("text/plain".into());
        owned.properties.subscription_identifiers = vec![3, 300];
        for version in [V31, V311, V5] {
            let mut expected = BytesMut::new();
            encode(&Packet::Publish(owned.clone()), version, &mut expected).unwrap();
            let mut got = BytesMut::new();
            encode_publish(&owned.borrowed(), version, &mut got).unwrap();
            assert_eq!(got, expected, "{version:?}");
            assert_eq!(
                publish_encoded_len(&owned.borrowed(), version).unwrap(),
                expected.len()
            );
        }
        let mut invalid = owned.borrowed();
        invalid.qos = QoS::AtMostOnce;
        let mut buf = BytesMut::new();
        assert!(encode_publish(&invalid, V311, &mut buf).is_err());
        assert!(buf.is_empty());
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
