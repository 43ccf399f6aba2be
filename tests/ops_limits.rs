//! Limits with safe defaults: subscriptions per client (MQTT 3.1.1 and 5.0, STOMP),
//! per-listener connection caps (MQTT and STOMP), the in-flight window towards a 3.1.1 client.

mod common;

use common::stomp::{frame, StompClient};
use common::*;
use tern_stomp::Command;

/// With a cap of 2, one SUBSCRIBE of three new filters gets the third refused;
/// re-subscribing to a held filter still works (raw packets: the SUBACK codes are the point).
async fn subscription_cap(level: u8, refused: u8) {
    let server = start_server_with(|s| s.limits.max_subscriptions_per_client = 2).await;
    let connect = connect_level(level, &format!("cap-{level}"), true, 0);
    let (mut client, _connack) = raw_client(server.mqtt, &connect).await;
    let props = empty_props(level);
    send(
        &mut client,
        &subscribe_packet(1, props, &[("a/#", 1), ("b/#", 0), ("c/#", 0)]),
    )
    .await;
    let suback = read_packet(&mut client).await.expect("SUBACK");
    assert_eq!(suback, suback_bytes(level, 1, &[1, 0, refused]));
    send(&mut client, &subscribe_packet(2, props, &[("a/#", 0)])).await;
    let suback = read_packet(&mut client).await.expect("SUBACK");
    assert_eq!(suback, suback_bytes(level, 2, &[0]));
    expect_alive(&mut client).await;
}

#[tokio::test]
async fn mqtt_v311_subscription_over_the_cap_gets_0x80() {
    subscription_cap(4, 0x80).await;
}

#[tokio::test]
async fn mqtt_v5_subscription_over_the_cap_gets_quota_exceeded() {
    subscription_cap(5, 0x97).await;
}

#[tokio::test]
async fn stomp_subscription_over_the_cap_is_an_error() {
    let server = start_server_with(|s| s.limits.max_subscriptions_per_client = 1).await;
    let mut client = StompClient::connect(server.stomp).await;
    client.subscribe("s1", "/topic/a", "auto").await;
    client
        .send_frame(&frame(
            Command::Subscribe,
            &[("id", "s2"), ("destination", "/topic/b")],
            b"",
        ))
        .await;
    let error = client.expect_error().await;
    let text = format!("{error:?}");
    assert!(text.contains('1'), "{text}");
}

#[tokio::test]
async fn listener_connection_cap_refuses_mqtt_and_stomp_beyond_it() {
    let server = start_server_with(|s| {
        s.mqtt.max_connections = Some(1);
        s.stomp.max_connections = Some(1);
    })
    .await;
    let (_first, connack) = raw_client(server.mqtt, &connect_v5("listener-cap-1")).await;
    assert_eq!(connack.get(3), Some(&0x00), "accepted: {connack:?}");
    let (_second, connack) = raw_client(server.mqtt, &connect_v5("listener-cap-2")).await;
    assert_eq!(
        connack.get(3),
        Some(&0x97),
        "v5 quota exceeded: {connack:?}"
    );
    let (_third, connack) = raw_client(server.mqtt, &connect_v311("listener-cap-3")).await;
    assert_eq!(
        connack.last(),
        Some(&0x03),
        "3.1.1 server unavailable: {connack:?}"
    );

    let _stomp = StompClient::connect(server.stomp).await;
    let (mut over, first) = StompClient::open(
        server.stomp,
        &[("accept-version", "1.2"), ("host", "localhost")],
    )
    .await;
    assert!(
        matches!(&first, common::stomp::Received::Frame(f) if f.command == Command::Error),
        "{first:?}"
    );
    over.expect_closed().await;
}

#[tokio::test]
async fn max_inflight_bounds_unacknowledged_deliveries_to_a_v311_client() {
    let server = start_server_with(|s| s.limits.max_inflight = 2).await;
    let mut sub = raw_subscriber(server.mqtt, 4, "inflight-sub", "inflight/t", 1).await;
    let mut publisher = v4::Client::connect(server.mqtt, "inflight-pub").await;
    for i in 0..4u8 {
        publisher.publish("inflight/t", 1, false, &[i]).await;
    }
    let first = read_publish(&mut sub, 4).await;
    let second = read_publish(&mut sub, 4).await;
    assert_eq!((first.payload.clone(), second.payload), (vec![0], vec![1]));
    expect_silence(&mut sub).await; // two unacknowledged: the window is closed
    send(
        &mut sub,
        &ack_packet(0x40, first.packet_id.expect("QoS 1 id")),
    )
    .await;
    assert_eq!(read_publish(&mut sub, 4).await.payload, vec![2]);
    expect_silence(&mut sub).await;
}

/// A 1 MiB message with its headers fits the default limits (4 MiB): a STOMP
/// SEND and an MQTT PUBLISH each arrive whole.
#[tokio::test]
async fn a_1_mib_message_fits_the_default_limits() {
    let server = start_server().await;
    let body = vec![b'x'; 1024 * 1024];
    let mut sub = StompClient::connect(server.stomp).await;
    sub.subscribe("s", "/topic/big", "auto").await;
    let mut c = StompClient::connect(server.stomp).await;
    c.send(
        "/topic/big",
        &body,
        &[("content-type", "application/octet-stream")],
    )
    .await;
    assert_eq!(sub.message().await.body.len(), body.len());

    let mut s = raw_subscriber(server.mqtt, 4, "big-sub", "big", 0).await;
    let (mut p, _) = raw_client(server.mqtt, &connect_level(4, "big-pub", true, 0)).await;
    send(&mut p, &publish_packet(0, "big", None, None, &body)).await;
    let got = read_packet(&mut s).await.expect("the 1 MiB PUBLISH");
    assert_eq!(packet_body(&got).len(), 2 + 3 + body.len());
    expect_alive(&mut p).await;
}

/// With 16 MiB limits, a 16 MB STOMP frame (no content-length: the NUL is
/// searched for) and a 16 MB MQTT PUBLISH written in 64 KiB chunks are taken
/// whole. The decoders' linear work is checked in tern-stomp's
/// `a_16_mb_frame_fed_in_64_kib_chunks_is_scanned_once` and measured by
/// `cargo bench --bench codec -- large`.
#[tokio::test]
async fn a_16_mb_frame_and_packet_pass_a_16_mib_limit() {
    use tokio::io::AsyncWriteExt;
    const SIZE: usize = 16_000_000;
    let server = start_server_with(|s| {
        s.limits.stomp_max_frame_size = 16 * 1024 * 1024;
        s.limits.max_packet_size = 16 * 1024 * 1024;
    })
    .await;
    let mut sub = StompClient::connect(server.stomp).await;
    sub.subscribe("s", "/topic/huge", "auto").await;
    let mut c = StompClient::connect(server.stomp).await;
    let mut wire = b"SEND\ndestination:/topic/huge\nreceipt:huge\n\n".to_vec();
    wire.resize(wire.len() + SIZE, b'y');
    wire.push(0);
    for chunk in wire.chunks(64 * 1024) {
        c.stream.write_all(chunk).await.expect("write");
    }
    let receipt = c.expect(Command::Receipt).await;
    assert_eq!(receipt.header("receipt-id"), Some("huge"));
    assert_eq!(sub.message().await.body.len(), SIZE);

    let mut s = raw_subscriber(server.mqtt, 4, "huge-sub", "huge", 0).await;
    let (mut p, _) = raw_client(server.mqtt, &connect_level(4, "huge-pub", true, 0)).await;
    let packet = publish_packet(0, "huge", None, None, &vec![b'z'; SIZE]);
    for chunk in packet.chunks(64 * 1024) {
        p.write_all(chunk).await.expect("write");
    }
    let got = read_packet(&mut s).await.expect("the 16 MB PUBLISH");
    assert_eq!(packet_body(&got).len(), 2 + 4 + SIZE);
    expect_alive(&mut p).await;
}
