//! Decoding of the encodings nodes sent before version 3 (`wire.rs`), so a
//! node reads what an older one still has in flight (a queue's or a shared
//! group's stream in JetStream):
//!
//! ```text
//! one message:   [version: u8 = 1][meta length: varint][meta: postcard][the message payload]
//! a batch:       [version: u8 = 2]([length: varint][one message, version 1])+
//! ```
//!
//! `meta` is [`WireMeta`]: origin node, epoch, sequence, QoS, retain, the
//! expiry left, the publisher and the properties, for every message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::wire::{get_varint, Origin, WireError, WireProperties};
use crate::core::message::{Message, QoS};

/// One message.
pub(super) const V1: u8 = 1;
/// A batch of version 1 messages.
pub(super) const V2: u8 = 2;

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct WireMeta<'a> {
    pub(super) node: &'a str,
    pub(super) epoch: u64,
    pub(super) seq: u64,
    pub(super) qos: u8,
    pub(super) retain: bool,
    /// Milliseconds of life left when sent.
    pub(super) expiry_ms: Option<u64>,
    pub(super) publisher: Option<&'a str>,
    #[serde(borrow)]
    pub(super) properties: Option<WireProperties<'a>>,
}

/// `wire::decode_each` for versions 1 and 2.
pub(super) fn decode_each<'a>(
    topic: &Arc<str>,
    payload: &'a Bytes,
    now: Instant,
    mut each: impl FnMut(Message, Origin<'a>),
) -> Result<(), WireError> {
    let (&version, rest) = payload.split_first().ok_or(WireError::Empty)?;
    let mut publisher = None;
    if version != V2 {
        let (message, origin) = decode_at(topic, payload, 0, payload.len(), now, &mut publisher)?;
        each(message, origin);
        return Ok(());
    }
    if rest.is_empty() {
        return Err(WireError::Malformed("empty batch"));
    }
    let mut at = 1;
    while at < payload.len() {
        let (len, used) = get_varint(&payload[at..]).ok_or(WireError::Malformed("length"))?;
        let start = at + used;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .filter(|end| *end <= payload.len())
            .ok_or(WireError::Malformed("length"))?;
        if payload.get(start) == Some(&V2) {
            return Err(WireError::Malformed("a batch in a batch"));
        }
        let (message, origin) = decode_at(topic, payload, start, end, now, &mut publisher)?;
        each(message, origin);
        at = end;
    }
    Ok(())
}

/// The version 1 message in `payload[start..end]`; `publisher` is the
/// previous entry's, shared when this one names the same.
fn decode_at<'a>(
    topic: &Arc<str>,
    payload: &'a Bytes,
    start: usize,
    end: usize,
    now: Instant,
    publisher: &mut Option<Arc<str>>,
) -> Result<(Message, Origin<'a>), WireError> {
    let frame = &payload[start..end];
    let (&version, rest) = frame.split_first().ok_or(WireError::Empty)?;
    if version != V1 {
        return Err(WireError::Version(version));
    }
    let (meta_len, used) = get_varint(rest).ok_or(WireError::Malformed("length"))?;
    let meta_start = start + 1 + used;
    let meta_end = usize::try_from(meta_len)
        .ok()
        .and_then(|len| meta_start.checked_add(len))
        .filter(|meta_end| *meta_end <= end)
        .ok_or(WireError::Malformed("length"))?;
    let meta: WireMeta<'a> = postcard::from_bytes(&payload[meta_start..meta_end])
        .map_err(|_| WireError::Malformed("meta"))?;
    let qos = QoS::from_u8(meta.qos).ok_or(WireError::Malformed("qos"))?;
    let mut message = Message::new(
        Arc::clone(topic),
        payload.slice(meta_end..end),
        qos,
        meta.retain,
    );
    message.expires_at = meta
        .expiry_ms
        .and_then(|ms| now.checked_add(Duration::from_millis(ms)));
    message.publisher = meta.publisher.map(|name| match publisher {
        Some(last) if **last == *name => Arc::clone(last),
        _ => Arc::clone(publisher.insert(Arc::from(name))),
    });
    message.properties = meta.properties.and_then(WireProperties::into_shared);
    let origin = Origin {
        node: meta.node,
        epoch: meta.epoch,
        seq: meta.seq,
    };
    Ok((message, origin))
}

/// What a node before version 3 sent for `message`: version 1 alone, with
/// its length first when `length_first` (an entry of a version 2 batch).
#[cfg(test)]
pub(super) fn encode_v1(
    message: &Message,
    origin: Origin<'_>,
    now: Instant,
    length_first: bool,
) -> Vec<u8> {
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
        properties: message.properties.as_deref().map(WireProperties::of),
    };
    let meta = postcard::to_allocvec(&meta).unwrap_or_default();
    let mut body = bytes::BytesMut::new();
    bytes::BufMut::put_u8(&mut body, V1);
    super::wire::put_varint(&mut body, meta.len() as u64);
    body.extend_from_slice(&meta);
    body.extend_from_slice(&message.payload);
    if !length_first {
        return body.to_vec();
    }
    let mut out = bytes::BytesMut::new();
    super::wire::put_varint(&mut out, body.len() as u64);
    out.extend_from_slice(&body);
    out.to_vec()
}
