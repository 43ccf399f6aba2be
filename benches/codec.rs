//! Wire codecs: MQTT PUBLISH (64-byte payload) and STOMP SEND / MESSAGE frames.
//!
//! Decode benches feed a fresh buffer holding one packet (setup not timed); the
//! `x1000` variants decode 1,000 back-to-back packets from one buffer, as a
//! connection does after a 64 KiB read. Encode benches append to a cleared buffer.
//!
//! The `large` group feeds one 1, 4 or 16 MiB packet/frame in 64 KiB chunks,
//! decoding after each chunk as a connection does after each read: throughput
//! that does not fall with the size shows the decoders do not rescan from the start.
//!
//! Run: `cargo bench --bench codec`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tern_mqtt::{Packet, Properties, ProtocolVersion, Publish, QoS};
use tern_stomp::{Command, Decoder, Frame, Item, Limits, Version};

const PAYLOAD: [u8; 64] = [0x5a; 64];

fn publish(qos: QoS) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: "sensors/building-7/room-42/temperature".to_string(),
        packet_id: (qos != QoS::AtMostOnce).then_some(4242),
        properties: Properties::default(),
        payload: Bytes::from_static(&PAYLOAD),
    })
}

fn wire_mqtt(packet: &Packet, version: ProtocolVersion, copies: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    for _ in 0..copies {
        tern_mqtt::encode(packet, version, &mut buf).expect("encodable");
    }
    buf
}

fn mqtt(c: &mut Criterion) {
    let mut group = c.benchmark_group("mqtt");
    for (name, version, qos) in [
        ("v311_qos0", ProtocolVersion::V311, QoS::AtMostOnce),
        ("v311_qos1", ProtocolVersion::V311, QoS::AtLeastOnce),
        ("v5_qos1", ProtocolVersion::V5, QoS::AtLeastOnce),
    ] {
        let packet = publish(qos);
        let one = wire_mqtt(&packet, version, 1);
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("decode_publish_{name}"), |b| {
            b.iter_batched(
                || one.clone(),
                |mut buf| tern_mqtt::decode(&mut buf, version, 1 << 20).expect("valid"),
                BatchSize::SmallInput,
            )
        });
        let mut out = BytesMut::with_capacity(256);
        group.bench_function(format!("encode_publish_{name}"), |b| {
            b.iter(|| {
                out.clear();
                tern_mqtt::encode(black_box(&packet), version, &mut out).expect("encodable");
                out.len()
            })
        });
        if name == "v311_qos0" {
            let many = wire_mqtt(&packet, version, 1000);
            group.throughput(Throughput::Elements(1000));
            group.bench_function(format!("decode_publish_{name}_x1000"), |b| {
                b.iter_batched(
                    || many.clone(),
                    |mut buf| {
                        let mut n = 0;
                        while let Some(p) =
                            tern_mqtt::decode(&mut buf, version, 1 << 20).expect("valid")
                        {
                            black_box(&p);
                            n += 1;
                        }
                        n
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

fn send_frame() -> Frame {
    Frame::new(Command::Send)
        .with_header(
            "destination",
            "/topic/sensors/building-7/room-42/temperature",
        )
        .with_header("content-type", "application/octet-stream")
        .with_body(Bytes::from_static(&PAYLOAD))
}

fn message_frame() -> Frame {
    Frame::new(Command::Message)
        .with_header(
            "destination",
            "/topic/sensors/building-7/room-42/temperature",
        )
        .with_header("message-id", "1234567")
        .with_header("subscription", "sub-0")
        .with_header("content-type", "application/octet-stream")
        .with_body(Bytes::from_static(&PAYLOAD))
}

fn wire_stomp(frame: &Frame, copies: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    for _ in 0..copies {
        tern_stomp::encode(frame, Version::V1_2, &mut buf);
    }
    buf
}

fn decoder() -> Decoder {
    let mut d = Decoder::new(Limits::default());
    d.set_version(Version::V1_2);
    d
}

fn stomp(c: &mut Criterion) {
    let mut group = c.benchmark_group("stomp");
    for (name, frame) in [("send", send_frame()), ("message", message_frame())] {
        let one = wire_stomp(&frame, 1);
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("decode_{name}"), |b| {
            b.iter_batched(
                || (one.clone(), decoder()),
                |(mut buf, mut d)| match d.decode(&mut buf).expect("valid") {
                    Some(Item::Frame(f)) => f,
                    other => panic!("unexpected {other:?}"),
                },
                BatchSize::SmallInput,
            )
        });
        let mut out = BytesMut::with_capacity(512);
        group.bench_function(format!("encode_{name}"), |b| {
            b.iter(|| {
                out.clear();
                tern_stomp::encode(black_box(&frame), Version::V1_2, &mut out);
                out.len()
            })
        });
    }
    let many = wire_stomp(&send_frame(), 1000);
    group.throughput(Throughput::Elements(1000));
    group.bench_function("decode_send_x1000", |b| {
        b.iter_batched(
            || (many.clone(), decoder()),
            |(mut buf, mut d)| {
                let mut n = 0;
                while let Some(item) = d.decode(&mut buf).expect("valid") {
                    black_box(&item);
                    n += 1;
                }
                n
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Appends `wire` to `buf` 64 KiB at a time, decoding after each chunk;
/// returns how many items were decoded (1). `buf` is reused across iterations so
/// that page faults of a fresh allocation do not drown the decoders' work.
fn feed_in_chunks<T>(
    buf: &mut BytesMut,
    wire: &[u8],
    mut decode: impl FnMut(&mut BytesMut) -> Option<T>,
) -> usize {
    buf.clear();
    buf.reserve(wire.len());
    let mut decoded = 0;
    for chunk in wire.chunks(64 * 1024) {
        buf.extend_from_slice(chunk);
        while let Some(item) = decode(buf) {
            black_box(&item);
            decoded += 1;
        }
    }
    decoded
}

fn large(c: &mut Criterion) {
    let mut group = c.benchmark_group("large");
    group.sample_size(10);
    let mut buf = BytesMut::new();
    for mib in [1usize, 4, 16] {
        let size = mib * 1024 * 1024;
        let limit = size + 1024;
        // A STOMP SEND without content-length: the NUL must be searched for.
        let mut stomp = b"SEND\ndestination:/queue/big\n\n".to_vec();
        stomp.resize(stomp.len() + size, b'x');
        stomp.push(0);
        group.throughput(Throughput::Bytes(stomp.len() as u64));
        group.bench_function(format!("stomp_send_{mib}MiB_in_64KiB_chunks"), |b| {
            b.iter(|| {
                let mut d = Decoder::new(Limits {
                    max_frame_size: limit,
                    ..Limits::default()
                });
                let n = feed_in_chunks(&mut buf, &stomp, |b| d.decode(b).expect("valid"));
                assert_eq!(n, 1);
            })
        });
        let publish = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "big".to_string(),
            packet_id: Some(1),
            properties: Properties::default(),
            payload: Bytes::from(vec![0x5a; size]),
        });
        let mqtt = wire_mqtt(&publish, ProtocolVersion::V311, 1);
        group.throughput(Throughput::Bytes(mqtt.len() as u64));
        group.bench_function(format!("mqtt_publish_{mib}MiB_in_64KiB_chunks"), |b| {
            b.iter(|| {
                let n = feed_in_chunks(&mut buf, &mqtt, |b| {
                    tern_mqtt::decode(b, ProtocolVersion::V311, limit).expect("valid")
                });
                assert_eq!(n, 1);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, mqtt, stomp, large);
criterion_main!(benches);
