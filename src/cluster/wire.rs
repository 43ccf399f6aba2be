//! How a core message travels between nodes: the NATS subject names its
//! topic (`subject.rs`); the NATS payload is this encoding, versioned:
//!
//! ```text
//! [version: u8 = 1][meta length: varint][meta: postcard][the message payload]
//! ```
//!
//! `meta` is [`WireMeta`]: the origin node, that node's run ("epoch") and its
//! sequence number (order and de-duplication), QoS, retain, the expiry left,
//! the publisher's client id (no-local) and the properties (MQTT 5 properties
//! ⇄ STOMP headers). No NATS headers: a plain `PUB` is the cheapest message.
//! The payload is sliced out of what NATS delivered, never copied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::core::message::{Message, MessageProperties, QoS};

/// The encoding's version; a node drops (and counts) any other.
pub const WIRE_VERSION: u8 = 1;

/// Which run of which node sent a message, and its place in that run's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    pub node: &'a str,
    /// Random per start of the node: a restarted node's sequence starts again.
    pub epoch: u64,
    pub seq: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireMeta<'a> {
    node: &'a str,
    epoch: u64,
    seq: u64,
    qos: u8,
    retain: bool,
    /// Milliseconds of life left when sent (clocks of nodes are not compared).
    expiry_ms: Option<u64>,
    publisher: Option<&'a str>,
    #[serde(borrow)]
    properties: Option<WireProperties<'a>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireProperties<'a> {
    payload_is_utf8: bool,
    content_type: Option<&'a str>,
    response_topic: Option<&'a str>,
    correlation_data: Option<&'a [u8]>,
    #[serde(borrow)]
    user_properties: Vec<(&'a str, &'a str)>,
}

/// Why a payload from NATS is not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty payload")]
    Empty,
    #[error("unknown encoding version {0}")]
    Version(u8),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

/// `message` as a NATS payload (one copy of the payload, behind the header).
pub fn encode(message: &Message, origin: Origin<'_>, now: Instant) -> Bytes {
    let properties = message.properties.as_deref().map(|p| WireProperties {
        payload_is_utf8: p.payload_is_utf8,
        content_type: p.content_type.as_deref(),
        response_topic: p.response_topic.as_deref(),
        correlation_data: p.correlation_data.as_deref(),
        user_properties: p
            .user_properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
    });
    let meta = WireMeta {
        node: origin.node,
        epoch: origin.epoch,
        seq: origin.seq,
        qos: message.qos as u8,
        retain: message.retain,
        expiry_ms: message.expires_at.map(|at| {
            u64::try_from(at.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
        }),
        publisher: message.publisher.as_deref(),
        properties,
    };
    // Serialising plain data into a Vec cannot fail.
    let meta = postcard::to_allocvec(&meta).unwrap_or_default();
    let mut out = BytesMut::with_capacity(1 + 5 + meta.len() + message.payload.len());
    out.put_u8(WIRE_VERSION);
    put_varint(&mut out, meta.len() as u64);
    out.put_slice(&meta);
    out.put_slice(&message.payload);
    out.freeze()
}

/// A message of `topic` from a NATS payload, with where it came from.
/// The message's payload shares `payload`'s buffer.
pub fn decode<'a>(
    topic: &str,
    payload: &'a Bytes,
    now: Instant,
) -> Result<(Message, Origin<'a>), WireError> {
    let (&version, rest) = payload.split_first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION {
        return Err(WireError::Version(version));
    }
    let (meta_len, used) = get_varint(rest).ok_or(WireError::Malformed("length"))?;
    let meta_start = 1 + used;
    let meta_end = usize::try_from(meta_len)
        .ok()
        .and_then(|len| meta_start.checked_add(len))
        .filter(|end| *end <= payload.len())
        .ok_or(WireError::Malformed("length"))?;
    let meta: WireMeta<'a> = postcard::from_bytes(&payload[meta_start..meta_end])
        .map_err(|_| WireError::Malformed("meta"))?;
    let qos = QoS::from_u8(meta.qos).ok_or(WireError::Malformed("qos"))?;
    let mut message = Message::new(topic, payload.slice(meta_end..), qos, meta.retain);
    message.expires_at = meta
        .expiry_ms
        .and_then(|ms| now.checked_add(Duration::from_millis(ms)));
    message.publisher = meta.publisher.map(Arc::from);
    message.properties = meta.properties.and_then(|p| {
        MessageProperties {
            payload_is_utf8: p.payload_is_utf8,
            content_type: p.content_type.map(str::to_string),
            response_topic: p.response_topic.map(str::to_string),
            correlation_data: p.correlation_data.map(Bytes::copy_from_slice),
            user_properties: p
                .user_properties
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
        .shared()
    });
    let origin = Origin {
        node: meta.node,
        epoch: meta.epoch,
        seq: meta.seq,
    };
    Ok((message, origin))
}

fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// The value and the bytes it took; None when cut short or over 10 bytes.
fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: Origin<'static> = Origin {
        node: "tern-a",
        epoch: 7,
        seq: 42,
    };

    #[test]
    fn a_message_with_everything_survives_the_trip() {
        let now = Instant::now();
        let mut message = Message::new(
            "a/b",
            Bytes::from_static(b"payload"),
            QoS::ExactlyOnce,
            true,
        );
        message.expires_at = now.checked_add(Duration::from_secs(30));
        message.publisher = Some(Arc::from("client\r\n;1"));
        message.properties = MessageProperties {
            payload_is_utf8: true,
            content_type: Some("text/plain".into()),
            response_topic: Some("reply/here".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
        }
        .shared();
        let bytes = encode(&message, ORIGIN, now);
        let (back, origin) = decode("a/b", &bytes, now).expect("decode");
        assert_eq!(origin, ORIGIN);
        assert_eq!(&*back.topic, "a/b");
        assert_eq!(back.payload, message.payload);
        assert_eq!(back.qos, QoS::ExactlyOnce);
        assert!(back.retain);
        assert_eq!(back.expires_at, message.expires_at);
        assert_eq!(back.publisher, message.publisher);
        assert_eq!(back.properties, message.properties);
    }

    #[test]
    fn a_plain_message_costs_a_few_bytes() {
        let message = Message::new("t", Bytes::from_static(b"xyz"), QoS::AtMostOnce, false);
        let bytes = encode(&message, ORIGIN, Instant::now());
        assert!(bytes.len() <= 3 + 16, "{} bytes", bytes.len());
        let (back, _) = decode("t", &bytes, Instant::now()).expect("decode");
        assert_eq!(&back.payload[..], b"xyz");
        assert!(back.properties.is_none() && back.publisher.is_none() && back.expires_at.is_none());
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        let now = Instant::now();
        assert_eq!(
            decode("t", &Bytes::new(), now).err(),
            Some(WireError::Empty)
        );
        assert_eq!(
            decode("t", &Bytes::from_static(b"\x02abc"), now).err(),
            Some(WireError::Version(2))
        );
        assert!(decode("t", &Bytes::from_static(b"\x01\xff"), now).is_err());
        assert!(decode("t", &Bytes::from_static(b"\x01\x7f\x00"), now).is_err());
        assert!(decode("t", &Bytes::from_static(b"\x01\x02\x00\x00"), now).is_err());
    }
}
