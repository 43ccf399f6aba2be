//! Unit tests of `wire.rs` (and of reading what older nodes sent, `wire_legacy.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::wire::*;
use super::wire_legacy::{encode_v1, V2};
use crate::core::message::{Message, MessageProperties, QoS};

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
fn big_properties_and_a_long_publisher_survive_the_trip() {
    let now = Instant::now();
    let mut message = Message::new("t", Bytes::from_static(b"xyz"), QoS::AtLeastOnce, false);
    message.publisher = Some(Arc::from("p".repeat(512)));
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
    // Version, node, epoch; entry length, sequence, flags; the payload.
    let most = 1 + 1 + ORIGIN.node.len() + 8 + 3 + 3;
    assert!(bytes.len() <= most, "{} bytes", bytes.len());
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
        decode("t", &Bytes::from_static(b"\x04abc"), now).err(),
        Some(WireError::Version(4))
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
    assert_eq!(bytes[0], VERSION);
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
fn a_batch_of_one_is_what_encode_makes_and_a_batch_is_reusable() {
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
    let header = |node: &[u8]| {
        let mut out = vec![VERSION, node.len() as u8];
        out.extend_from_slice(node);
        out.extend_from_slice(&7u64.to_be_bytes());
        out
    };
    let with = |entry: &[u8]| {
        let mut out = header(b"n");
        out.extend_from_slice(entry);
        out
    };
    assert!(refused(b""));
    assert!(refused(b"\x03"), "no node");
    assert!(refused(&header(b"n")), "a batch of nothing");
    assert!(refused(&header(b"n")[..5]), "an epoch cut short");
    assert!(
        refused(&with(b"\x05\x01\x00")),
        "an entry longer than the payload"
    );
    assert!(refused(&with(b"\x02\x01\x03")), "QoS 3");
    assert!(
        refused(&with(b"\x02\x01\x20")),
        "the same publisher as no one"
    );
    assert!(
        refused(&with(b"\x03\x01\x10\x05")),
        "a publisher longer than its entry"
    );
    assert!(refused(&with(b"\x02\x01\x08")), "an expiry missing");
    assert!(
        refused(&with(b"\x03\x01\x40\x00")),
        "properties that are not"
    );
    let mut bad_node = header(b"\xff");
    bad_node.extend_from_slice(b"\x02\x01\x00");
    assert!(refused(&bad_node), "a node name that is not UTF-8");
    assert!(refused(b"\x02\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"));
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

#[test]
fn the_node_and_run_are_sent_once_per_batch() {
    let now = Instant::now();
    let message = Message::new("t", Bytes::from_static(b"xyz"), QoS::AtMostOnce, false);
    let one = batch_of(std::slice::from_ref(&message), now);
    let hundred = batch_of(&vec![message; 100], now);
    // Each further entry: its length, sequence delta, flags and payload.
    assert_eq!(hundred.len() - one.len(), 99 * (3 + 3));
    let node = ORIGIN.node.as_bytes();
    let copies = hundred.windows(node.len()).filter(|w| *w == node).count();
    assert_eq!(copies, 1);
}

#[test]
fn sequence_numbers_need_not_be_consecutive() {
    let now = Instant::now();
    let message = Message::new("t", Bytes::from_static(b"x"), QoS::AtLeastOnce, false);
    let seqs = [0, 0, 5, 1 << 40, 3, u64::MAX, 0];
    let mut batch = Batch::default();
    for seq in seqs {
        batch.push(&message, origin(seq), now);
    }
    let bytes = batch.take();
    let back = decode_all("t", &bytes, now).expect("decode");
    assert_eq!(back.iter().map(|(_, o)| o.seq).collect::<Vec<_>>(), seqs);
}

#[test]
fn what_older_nodes_sent_is_still_read() {
    let now = Instant::now();
    let mut message = Message::new("a/b", Bytes::from_static(b"old"), QoS::AtLeastOnce, true);
    message.publisher = Some(Arc::from("pub-1"));
    message.expires_at = now.checked_add(Duration::from_secs(5));
    message.properties = MessageProperties {
        content_type: Some("text/plain".into()),
        ..MessageProperties::default()
    }
    .shared();
    let alone = Bytes::from(encode_v1(&message, ORIGIN, now, false));
    let (back, from) = decode("a/b", &alone, now).expect("version 1");
    assert_eq!(from, ORIGIN);
    assert_eq!(back.payload, message.payload);
    assert_eq!(back.publisher, message.publisher);
    assert_eq!(back.expires_at, message.expires_at);
    assert_eq!(back.properties, message.properties);
    let mut two = vec![V2];
    two.extend(encode_v1(&message, origin(1), now, true));
    two.extend(encode_v1(&message, origin(2), now, true));
    let two = Bytes::from(two);
    let back = decode_all("a/b", &two, now).expect("version 2");
    assert_eq!(back.iter().map(|(_, o)| o.seq).collect::<Vec<_>>(), [1, 2]);
    assert!(back
        .iter()
        .all(|(m, _)| m.retain && m.qos == QoS::AtLeastOnce));
    let mut nested = vec![V2];
    let inner = [vec![V2], encode_v1(&message, ORIGIN, now, true)].concat();
    put_varint_vec(&mut nested, inner.len() as u64);
    nested.extend_from_slice(&inner);
    assert!(
        decode_all("a/b", &Bytes::from(nested), now).is_err(),
        "a batch in a batch"
    );
}

fn put_varint_vec(out: &mut Vec<u8>, value: u64) {
    let mut buf = BytesMut::new();
    put_varint(&mut buf, value);
    out.extend_from_slice(&buf);
}
