//! How a core message travels between nodes: the NATS subject names its
//! topic (`subject.rs`); the NATS payload is one of these encodings:
//!
//! ```text
//! one message:   [version: u8 = 1][meta length: varint][meta: postcard][the message payload]
//! a batch:       [version: u8 = 2]([length: varint][one message, version 1])+
//! ```
//!
//! `meta` is [`WireMeta`]: the origin node, that node's run ("epoch") and its
//! sequence number (order and de-duplication), QoS, retain, the expiry left,
//! the publisher's client id (no-local) and the properties (MQTT 5 properties
//! ⇄ STOMP headers). No NATS headers: a plain `PUB` is the cheapest message.
//! A batch ([`Batch`]) holds consecutive messages of one topic (so of one
//! subject: interest routing and shared groups see it as any message of that
//! subject), in the order they were sent: one NATS message instead of many
//! costs every node and the NATS server a fraction per message. Payloads are
//! sliced out of what NATS delivered, never copied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::core::message::{Message, MessageProperties, QoS};

/// The encoding's version of one message; a node drops (and counts) any
/// other but [`BATCH_VERSION`].
pub const WIRE_VERSION: u8 = 1;
/// The version byte of a batch of messages of version [`WIRE_VERSION`].
pub const BATCH_VERSION: u8 = 2;

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
    let mut meta = Vec::new();
    let mut out = BytesMut::new();
    put_entry(&mut out, &mut meta, message, origin, now, false);
    out.freeze()
}

/// Bytes of a message's meta encoded on the stack (node name, publisher and
/// properties short enough).
const META_ON_STACK: usize = 256;

/// Appends `message` in version 1 to `out`, with its length first when
/// `length_first` (an entry of a batch); `meta` is scratch space.
fn put_entry(
    out: &mut BytesMut,
    meta: &mut Vec<u8>,
    message: &Message,
    origin: Origin<'_>,
    now: Instant,
    length_first: bool,
) {
    let fields = wire_meta(message, origin, now);
    // Most metas fit on the stack, written in place (`to_extend` pushes byte
    // by byte); one with big properties goes to the scratch Vec.
    let mut stack = [0u8; META_ON_STACK];
    let meta: &[u8] = match postcard::to_slice(&fields, &mut stack) {
        Ok(written) => written,
        Err(_) => {
            meta.clear();
            let taken = std::mem::take(meta);
            // Serialising plain data into a Vec cannot fail.
            *meta = postcard::to_extend(&fields, taken).unwrap_or_default();
            meta
        }
    };
    let len = 1 + varint_len(meta.len() as u64) + meta.len() + message.payload.len();
    out.reserve(len + 10);
    if length_first {
        put_varint(out, len as u64);
    }
    out.put_u8(WIRE_VERSION);
    put_varint(out, meta.len() as u64);
    out.put_slice(meta);
    out.put_slice(&message.payload);
}

fn wire_meta<'a>(message: &'a Message, origin: Origin<'a>, now: Instant) -> WireMeta<'a> {
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
    WireMeta {
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
    }
}

/// Consecutive messages of one topic gathered into one NATS payload: a
/// batch, or a plain version 1 message when only one was pushed.
#[derive(Debug, Default)]
pub struct Batch {
    /// `[BATCH_VERSION]` and the entries so far.
    out: BytesMut,
    meta: Vec<u8>,
    count: usize,
    /// Where the first entry's message starts (after its length).
    first_body: usize,
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

    /// Appends `message` (the caller keeps one topic per batch).
    pub fn push(&mut self, message: &Message, origin: Origin<'_>, now: Instant) {
        if self.count == 0 {
            self.out.clear();
            self.out.put_u8(BATCH_VERSION);
        }
        let before = self.out.len();
        put_entry(&mut self.out, &mut self.meta, message, origin, now, true);
        if self.count == 0 {
            let (_, used) = get_varint(&self.out[before..]).unwrap_or((0, 0));
            self.first_body = before + used;
        }
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

    /// The payload to publish (version 1 for a single message), and a fresh batch.
    pub fn take(&mut self) -> Bytes {
        let mut taken = self.out.split();
        if self.count == 1 {
            taken.advance(self.first_body);
        }
        self.count = 0;
        taken.freeze()
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
    let (&version, rest) = payload.split_first().ok_or(WireError::Empty)?;
    let mut publisher = None;
    if version != BATCH_VERSION {
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
        if payload.get(start) == Some(&BATCH_VERSION) {
            return Err(WireError::Malformed("a batch in a batch"));
        }
        let (message, origin) = decode_at(topic, payload, start, end, now, &mut publisher)?;
        each(message, origin);
        at = end;
    }
    Ok(())
}

/// A message of `topic` from a NATS payload (version 1 only; see
/// [`decode_all`] for batches). The message's payload shares `payload`'s buffer.
pub fn decode<'a>(
    topic: &str,
    payload: &'a Bytes,
    now: Instant,
) -> Result<(Message, Origin<'a>), WireError> {
    decode_at(&Arc::from(topic), payload, 0, payload.len(), now, &mut None)
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
    if version != WIRE_VERSION {
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

fn varint_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
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
    fn a_meta_too_big_for_the_stack_survives_the_trip() {
        let now = Instant::now();
        let mut message = Message::new("t", Bytes::from_static(b"xyz"), QoS::AtLeastOnce, false);
        message.publisher = Some(Arc::from("p".repeat(META_ON_STACK * 2)));
        message.properties = MessageProperties {
            user_properties: vec![("k".repeat(300), "v".repeat(300))],
            ..MessageProperties::default()
        }
        .shared();
        let mut batch = Batch::default();
        batch.push(&message, origin(1), now);
        batch.push(&message, origin(2), now);
        let bytes = batch.take();
        let back = decode_all("t", &bytes, now).expect("decode");
        assert_eq!(back.len(), 2);
        for (got, _) in &back {
            assert_eq!(got.publisher, message.publisher);
            assert_eq!(got.properties, message.properties);
            assert_eq!(&got.payload[..], b"xyz");
        }
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

    fn origin(seq: u64) -> Origin<'static> {
        Origin { seq, ..ORIGIN }
    }

    fn batch_of(messages: &[Message], now: Instant) -> Bytes {
        let mut batch = Batch::default();
        for (i, message) in messages.iter().enumerate() {
            batch.push(message, origin(10 + i as u64), now);
        }
        assert_eq!(batch.len(), messages.len());
        batch.take()
    }

    #[test]
    fn a_batch_brings_back_every_message_in_order() {
        let now = Instant::now();
        let mut with_everything =
            Message::new("a/b", Bytes::from_static(b"two"), QoS::AtLeastOnce, true);
        with_everything.publisher = Some(Arc::from("pub-1"));
        with_everything.expires_at = now.checked_add(Duration::from_secs(5));
        with_everything.properties = MessageProperties {
            user_properties: vec![("k".into(), "v".into())],
            ..MessageProperties::default()
        }
        .shared();
        let messages = [
            Message::new("a/b", Bytes::from_static(b"one"), QoS::AtMostOnce, false),
            with_everything,
            Message::new("a/b", Bytes::new(), QoS::ExactlyOnce, false),
        ];
        let bytes = batch_of(&messages, now);
        assert_eq!(bytes[0], BATCH_VERSION);
        let back = decode_all("a/b", &bytes, now).expect("decode");
        assert_eq!(back.len(), 3);
        for (i, ((message, origin), sent)) in back.iter().zip(&messages).enumerate() {
            assert_eq!(origin.seq, 10 + i as u64);
            assert_eq!(origin.node, "tern-a");
            assert_eq!(&*message.topic, "a/b");
            assert_eq!(message.payload, sent.payload);
            assert_eq!(message.qos, sent.qos);
            assert_eq!(message.retain, sent.retain);
            assert_eq!(message.publisher, sent.publisher);
            assert_eq!(message.expires_at, sent.expires_at);
            assert_eq!(message.properties, sent.properties);
        }
    }

    #[test]
    fn a_batch_of_one_is_a_plain_message_and_a_batch_is_reusable() {
        let now = Instant::now();
        let message = Message::new("t", Bytes::from_static(b"xyz"), QoS::AtMostOnce, false);
        let mut batch = Batch::default();
        batch.push(&message, ORIGIN, now);
        let one = batch.take();
        assert!(batch.is_empty());
        assert_eq!(one, encode(&message, ORIGIN, now));
        assert_eq!(decode("t", &one, now).expect("decode").1, ORIGIN);
        batch.push(&message, origin(1), now);
        batch.push(&message, origin(2), now);
        let two = batch.take();
        let back = decode_all("t", &two, now).expect("decode");
        assert_eq!(back.iter().map(|(_, o)| o.seq).collect::<Vec<_>>(), [1, 2]);
        assert!(
            decode("t", &two, now).is_err(),
            "decode takes one message only"
        );
    }

    #[test]
    fn a_batch_decodes_with_one_topic_and_one_publisher_shared() {
        let now = Instant::now();
        let from = |publisher: &str| {
            let mut message = Message::new("t", Bytes::from_static(b"x"), QoS::AtMostOnce, false);
            message.publisher = Some(Arc::from(publisher));
            message
        };
        let bytes = batch_of(&[from("p1"), from("p1"), from("p2")], now);
        let topic: Arc<str> = Arc::from("t");
        let mut back = Vec::new();
        decode_each(&topic, &bytes, now, |message, _| back.push(message)).expect("decode");
        assert_eq!(back.len(), 3);
        assert!(back.iter().all(|m| Arc::ptr_eq(&m.topic, &topic)));
        let publishers: Vec<&Arc<str>> = back.iter().filter_map(|m| m.publisher.as_ref()).collect();
        assert_eq!(
            publishers.iter().map(|p| &***p).collect::<Vec<_>>(),
            ["p1", "p1", "p2"]
        );
        assert!(
            Arc::ptr_eq(publishers[0], publishers[1]),
            "one allocation for a run of one publisher"
        );
    }

    #[test]
    fn bad_batches_are_refused_whole() {
        let now = Instant::now();
        let message = Message::new("t", Bytes::from_static(b"xyz"), QoS::AtMostOnce, false);
        let good = batch_of(&[message.clone(), message.clone()], now);
        let refused = |bytes: &[u8]| decode_all("t", &Bytes::copy_from_slice(bytes), now).is_err();
        assert!(refused(b""));
        assert!(refused(b"\x02"), "a batch of nothing");
        assert!(refused(b"\x02\x05\x01"), "an entry longer than the payload");
        assert!(refused(b"\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"));
        assert!(refused(b"\x02\x02\x03\x00"), "an entry of another version");
        let mut nested = vec![BATCH_VERSION];
        put_varint_vec(&mut nested, good.len() as u64);
        nested.extend_from_slice(&good);
        assert!(refused(&nested), "a batch in a batch");
        // Every cut of a good batch: an error or fewer messages, never a panic.
        for cut in 0..good.len() {
            if let Ok(back) = decode_all("t", &good.slice(..cut), now) {
                assert!(back.len() < 2, "cut at {cut}");
            }
        }
        let mut junk = good.to_vec();
        junk.push(0x01);
        assert!(refused(&junk), "trailing bytes that are no entry");
    }

    fn put_varint_vec(out: &mut Vec<u8>, value: u64) {
        let mut buf = BytesMut::new();
        put_varint(&mut buf, value);
        out.extend_from_slice(&buf);
    }
}
