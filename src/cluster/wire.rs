//! How a core message travels between nodes: the NATS subject names its
//! topic (`subject.rs`); the NATS payload is a batch of one or more messages
//! of that topic, in version 3:
//!
//! ```text
//! batch:  [version: u8 = 3][node length: varint][node: UTF-8][epoch: u64 BE] entry+
//! entry:  [length of the rest: varint][seq delta: varint][flags: u8]
//!         [expiry left, ms: varint]?            (flag EXPIRY)
//!         [publisher length: varint][publisher]? (flag PUBLISHER)
//!         [properties length: varint][postcard]? (flag PROPERTIES)
//!         [the message payload: the rest of the entry]
//! flags:  bits 0-1 QoS, RETAIN, EXPIRY, PUBLISHER, SAME_PUBLISHER, PROPERTIES
//! ```
//!
//! The origin node and its run ("epoch") are written once per NATS message;
//! each entry's sequence number (order and de-duplication) is the previous
//! entry's plus its delta (the first's from 0), so a burst costs one byte a
//! message for it. `SAME_PUBLISHER` says the publisher's client id (no-local)
//! is the previous entry's. Properties (MQTT 5 properties ⇄ STOMP headers)
//! are rare and stay a postcard struct. The expiry is what was left when sent
//! (clocks of nodes are not compared). No NATS headers: a plain `PUB` is the
//! cheapest message. A batch ([`Batch`]) holds consecutive messages of one
//! topic (so of one subject: interest routing and shared groups see it as any
//! message of that subject), in the order they were sent: one NATS message
//! instead of many costs every node and the NATS server a fraction per
//! message. Payloads are sliced out of what NATS delivered, never copied.
//!
//! Versions 1 (one message, a postcard meta each) and 2 (a batch of version 1
//! entries), sent by nodes before version 3, are still decoded
//! (`wire_legacy.rs`); a node of those versions drops (and counts) a version 3
//! payload: nodes of both kinds in one cluster do not exchange messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::wire_legacy;
use crate::core::message::{Message, MessageProperties, QoS};

/// The version byte of what this node sends.
pub const VERSION: u8 = 3;

const QOS_BITS: u8 = 0b11;
const RETAIN: u8 = 1 << 2;
const EXPIRY: u8 = 1 << 3;
const PUBLISHER: u8 = 1 << 4;
const SAME_PUBLISHER: u8 = 1 << 5;
const PROPERTIES: u8 = 1 << 6;

/// Which run of which node sent a message, and its place in that run's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    pub node: &'a str,
    /// Random per start of the node: a restarted node's sequence starts again.
    pub epoch: u64,
    pub seq: u64,
}

/// A message's properties as encoded (borrowed from the payload when decoded).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct WireProperties<'a> {
    pub(super) payload_is_utf8: bool,
    pub(super) content_type: Option<&'a str>,
    pub(super) response_topic: Option<&'a str>,
    pub(super) correlation_data: Option<&'a [u8]>,
    #[serde(borrow)]
    pub(super) user_properties: Vec<(&'a str, &'a str)>,
}

impl<'a> WireProperties<'a> {
    pub(super) fn of(p: &'a MessageProperties) -> Self {
        WireProperties {
            payload_is_utf8: p.payload_is_utf8,
            content_type: p.content_type.as_deref(),
            response_topic: p.response_topic.as_deref(),
            correlation_data: p.correlation_data.as_deref(),
            user_properties: p
                .user_properties
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        }
    }

    pub(super) fn into_shared(self) -> Option<Arc<MessageProperties>> {
        MessageProperties {
            payload_is_utf8: self.payload_is_utf8,
            content_type: self.content_type.map(str::to_string),
            response_topic: self.response_topic.map(str::to_string),
            correlation_data: self.correlation_data.map(Bytes::copy_from_slice),
            user_properties: self
                .user_properties
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
        .shared()
    }
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

/// `message` alone as a NATS payload (one copy of the payload, behind the header).
pub fn encode(message: &Message, origin: Origin<'_>, now: Instant) -> Bytes {
    let mut batch = Batch::default();
    batch.push(message, origin, now);
    batch.take()
}

/// Messages of one topic and one origin gathered into one NATS payload.
#[derive(Debug, Default)]
pub struct Batch {
    /// The header and the entries so far.
    out: BytesMut,
    /// Scratch space for an entry's properties.
    properties: Vec<u8>,
    count: usize,
    /// The sequence number of the last entry (entries carry the difference).
    last_seq: u64,
    /// The last entry's publisher (the next one naming it says so in a bit).
    last_publisher: Option<Arc<str>>,
}

impl Batch {
    /// Sets `bytes` aside for the batch about to start (none pushed yet): one
    /// that grows to about that is written once, not copied at every doubling
    /// of its buffer, and a lone message takes no more than it needs.
    pub fn reserve(&mut self, bytes: usize) {
        if self.count == 0 {
            self.out.clear();
            self.out.reserve(bytes);
        }
    }

    /// Appends `message`. The caller keeps one topic per batch, and one
    /// origin node and epoch (the first message's are the batch's).
    pub fn push(&mut self, message: &Message, origin: Origin<'_>, now: Instant) {
        if self.count == 0 {
            self.out.clear();
            self.out.reserve(1 + 1 + origin.node.len() + 8 + 16);
            self.out.put_u8(VERSION);
            put_varint(&mut self.out, origin.node.len() as u64);
            self.out.put_slice(origin.node.as_bytes());
            self.out.put_u64(origin.epoch);
            self.last_seq = 0;
            self.last_publisher = None;
        }
        let delta = origin.seq.wrapping_sub(self.last_seq);
        self.last_seq = origin.seq;
        let mut flags = message.qos as u8 & QOS_BITS;
        if message.retain {
            flags |= RETAIN;
        }
        let expiry = message.expires_at.map(|at| {
            u64::try_from(at.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
        });
        if expiry.is_some() {
            flags |= EXPIRY;
        }
        let mut publisher: &[u8] = &[];
        match (&message.publisher, &self.last_publisher) {
            // One connection's messages share one `Arc`: mostly a pointer compare.
            (Some(this), Some(last)) if Arc::ptr_eq(this, last) || this == last => {
                flags |= SAME_PUBLISHER;
            }
            (Some(this), _) => {
                flags |= PUBLISHER;
                publisher = this.as_bytes();
                self.last_publisher = Some(Arc::clone(this));
            }
            (None, _) => {}
        }
        self.properties.clear();
        if let Some(p) = message.properties.as_deref() {
            flags |= PROPERTIES;
            let taken = std::mem::take(&mut self.properties);
            // Serialising plain data into a Vec cannot fail.
            self.properties =
                postcard::to_extend(&WireProperties::of(p), taken).unwrap_or_default();
        }
        let mut len = varint_len(delta) + 1 + message.payload.len();
        if let Some(ms) = expiry {
            len += varint_len(ms);
        }
        if flags & PUBLISHER != 0 {
            len += varint_len(publisher.len() as u64) + publisher.len();
        }
        if flags & PROPERTIES != 0 {
            len += varint_len(self.properties.len() as u64) + self.properties.len();
        }
        self.out.reserve(len + 10);
        put_varint(&mut self.out, len as u64);
        put_varint(&mut self.out, delta);
        self.out.put_u8(flags);
        if let Some(ms) = expiry {
            put_varint(&mut self.out, ms);
        }
        if flags & PUBLISHER != 0 {
            put_varint(&mut self.out, publisher.len() as u64);
            self.out.put_slice(publisher);
        }
        if flags & PROPERTIES != 0 {
            put_varint(&mut self.out, self.properties.len() as u64);
            self.out.put_slice(&self.properties);
        }
        self.out.put_slice(&message.payload);
        self.count += 1;
    }

    /// Messages pushed since the last [`Batch::take`].
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the payload so far.
    pub fn size(&self) -> usize {
        self.out.len()
    }

    /// The payload to publish, and a fresh batch.
    pub fn take(&mut self) -> Bytes {
        self.count = 0;
        self.last_publisher = None;
        self.out.split().freeze()
    }
}

/// Every message of a NATS payload of `topic` (one, or a batch's in order),
/// with where each came from. Their payloads share `payload`'s buffer. A
/// batch with one bad entry is refused whole.
pub fn decode_all<'a>(
    topic: &str,
    payload: &'a Bytes,
    now: Instant,
) -> Result<Vec<(Message, Origin<'a>)>, WireError> {
    let mut out = Vec::new();
    decode_each(&Arc::from(topic), payload, now, |message, origin| {
        out.push((message, origin));
    })?;
    Ok(out)
}

/// [`decode_all`] without its list: `each` gets every message in order, all
/// sharing `topic` and, while consecutive entries name the same publisher,
/// one `publisher` (no allocation per message for either). On an error,
/// `each` may have had the entries before the bad one: the caller drops
/// them (a batch with one bad entry is refused whole).
pub fn decode_each<'a>(
    topic: &Arc<str>,
    payload: &'a Bytes,
    now: Instant,
    mut each: impl FnMut(Message, Origin<'a>),
) -> Result<(), WireError> {
    let (&version, _) = payload.split_first().ok_or(WireError::Empty)?;
    if version != VERSION {
        return wire_legacy::decode_each(topic, payload, now, each);
    }
    let end = payload.len();
    let mut at = 1;
    let node_len = get_len(payload, &mut at, end)?;
    let node = std::str::from_utf8(&payload[at..at + node_len])
        .map_err(|_| WireError::Malformed("node"))?;
    at += node_len;
    let epoch = payload
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or(WireError::Malformed("epoch"))?;
    at += 8;
    if at == end {
        return Err(WireError::Malformed("empty batch"));
    }
    let mut seq = 0u64;
    let mut publisher: Option<Arc<str>> = None;
    while at < end {
        let len = get_len(payload, &mut at, end)?;
        let entry_end = at + len;
        seq = seq.wrapping_add(get_varint_at(payload, &mut at, entry_end)?);
        let flags = *payload
            .get(at)
            .filter(|_| at < entry_end)
            .ok_or(WireError::Malformed("flags"))?;
        at += 1;
        let qos = QoS::from_u8(flags & QOS_BITS).ok_or(WireError::Malformed("qos"))?;
        let expiry = if flags & EXPIRY != 0 {
            Some(get_varint_at(payload, &mut at, entry_end)?)
        } else {
            None
        };
        if flags & PUBLISHER != 0 {
            let len = get_len(payload, &mut at, entry_end)?;
            let name = std::str::from_utf8(&payload[at..at + len])
                .map_err(|_| WireError::Malformed("publisher"))?;
            at += len;
            publisher = Some(Arc::from(name));
        } else if flags & SAME_PUBLISHER == 0 {
            publisher = None;
        } else if publisher.is_none() {
            return Err(WireError::Malformed("publisher"));
        }
        let properties = if flags & PROPERTIES != 0 {
            let len = get_len(payload, &mut at, entry_end)?;
            let p: WireProperties<'_> = postcard::from_bytes(&payload[at..at + len])
                .map_err(|_| WireError::Malformed("properties"))?;
            at += len;
            p.into_shared()
        } else {
            None
        };
        let mut message = Message::new(
            Arc::clone(topic),
            payload.slice(at..entry_end),
            qos,
            flags & RETAIN != 0,
        );
        message.expires_at = expiry.and_then(|ms| now.checked_add(Duration::from_millis(ms)));
        message.publisher = publisher.clone();
        message.properties = properties;
        each(message, Origin { node, epoch, seq });
        at = entry_end;
    }
    Ok(())
}

/// The one message of a NATS payload of `topic` (an error for a batch of more).
/// The message's payload shares `payload`'s buffer.
pub fn decode<'a>(
    topic: &str,
    payload: &'a Bytes,
    now: Instant,
) -> Result<(Message, Origin<'a>), WireError> {
    let mut all = decode_all(topic, payload, now)?;
    match (all.pop(), all.is_empty()) {
        (Some(one), true) => Ok(one),
        _ => Err(WireError::Malformed("more than one message")),
    }
}

/// A varint length at `*at` of bytes that must follow it before `end`; moves
/// `at` past the varint.
fn get_len(payload: &[u8], at: &mut usize, end: usize) -> Result<usize, WireError> {
    let len = get_varint_at(payload, at, end)?;
    usize::try_from(len)
        .ok()
        .filter(|len| *len <= end - *at)
        .ok_or(WireError::Malformed("length"))
}

/// The varint at `*at` (ending before `end`); moves `at` past it.
fn get_varint_at(payload: &[u8], at: &mut usize, end: usize) -> Result<u64, WireError> {
    let (value, used) = payload
        .get(*at..end)
        .and_then(get_varint)
        .ok_or(WireError::Malformed("length"))?;
    *at += used;
    Ok(value)
}

pub(super) fn varint_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

pub(super) fn put_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// The value and the bytes it took; None when cut short or over 10 bytes.
pub(super) fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}
