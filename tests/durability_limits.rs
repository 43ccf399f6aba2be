//! Limits that keep memory and the store bounded, and the publisher is told
//! when one is hit: a subscriber queue that refuses more (`queue_overflow =
//! "refuse"`) and the total store limit (`storage.max_messages`). MQTT 5 gets
//! PUBACK/PUBREC 0x97 quota exceeded, MQTT 3.1.1 is disconnected without an
//! acknowledgement, STOMP gets an ERROR; nothing already accepted is lost.

mod common;

use bytes::Bytes;
use common::process::Conn;
use common::stomp::StompClient;
use common::*;
use tern::core::session::OverflowPolicy;
use tern_mqtt::{Ack, Packet as MqttPacket, Properties, ProtocolVersion, Publish, QoS};
use tern_stomp::Command;

/// A persistent subscriber to `lim/#` at QoS 1 that goes offline.
async fn offline_subscriber(server: &TestServer) {
    let (mut sub, _) = v5::Client::connect_persistent(server.mqtt, "sub").await;
    sub.subscribe("lim/#", 1).await;
    sub.disconnect().await;
}

/// Publishes at `level` (1 or 2) from a 5.0 connection; returns the PUBACK/PUBREC
/// reason code and reason string (a QoS 2 flow that is accepted is completed).
async fn publish_v5(conn: &mut Conn, level: u8, payload: &[u8]) -> (u8, Option<String>) {
    conn.next_id += 1;
    let id = conn.next_id;
    let qos = if level == 1 {
        QoS::AtLeastOnce
    } else {
        QoS::ExactlyOnce
    };
    conn.send(&MqttPacket::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: "lim/t".into(),
        packet_id: Some(id),
        properties: Properties::default(),
        payload: Bytes::copy_from_slice(payload),
    }))
    .await
    .expect("send PUBLISH");
    let ack = match conn.recv(WAIT).await {
        Some(MqttPacket::PubAck(a)) if level == 1 => a,
        Some(MqttPacket::PubRec(a)) if level == 2 => a,
        other => panic!("expected the answer to a QoS {level} PUBLISH, got {other:?}"),
    };
    assert_eq!(ack.packet_id, id);
    if level == 2 && ack.reason < 0x80 {
        conn.send(&MqttPacket::PubRel(Ack {
            packet_id: id,
            reason: 0,
            properties: Properties::default(),
        }))
        .await
        .expect("send PUBREL");
        assert!(
            matches!(conn.recv(WAIT).await, Some(MqttPacket::PubComp(_))),
            "PUBCOMP"
        );
    }
    (ack.reason, ack.properties.reason_string)
}

async fn publisher_v5(server: &TestServer) -> Conn {
    let (conn, _) = Conn::open_with(server.mqtt, ProtocolVersion::V5, "pub", true, None)
        .await
        .expect("connect publisher");
    conn
}

/// A 3.1.1 QoS 1 publish that is refused: the connection closes and no PUBACK came.
async fn publish_v311_is_refused(server: &TestServer) {
    let mut publisher = v4::Client::connect(server.mqtt, "pub-v311").await;
    publisher
        .client
        .publish("lim/t", v4::qos(1), false, b"v311".to_vec())
        .await
        .expect("publish");
    let (seen, _) = publisher.until_closed().await;
    assert!(
        !seen.iter().any(|p| matches!(p, rumqttc::Packet::PubAck(_))),
        "a refused 3.1.1 publish must not be acknowledged: {seen:?}"
    );
}

/// The payloads the subscriber gets back after reconnecting, up to a marker.
async fn drain_subscriber(server: &TestServer) -> Vec<Vec<u8>> {
    let (mut sub, present) = v5::Client::connect_persistent(server.mqtt, "sub").await;
    assert!(present);
    let mut got = Vec::new();
    let mut marker = v5::Client::connect(server.mqtt, "marker").await;
    marker.publish("lim/marker", 0, false, b"marker").await;
    loop {
        let m = sub.recv().await;
        if m.payload == b"marker" {
            return got;
        }
        got.push(m.payload);
    }
}

async fn conn_publish_qos0(conn: &mut Conn) {
    conn.send(&MqttPacket::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "lim/t".into(),
        packet_id: None,
        properties: Properties::default(),
        payload: Bytes::from_static(b"qos0"),
    }))
    .await
    .expect("send QoS 0 PUBLISH");
}

#[tokio::test]
async fn a_full_subscriber_queue_with_policy_refuse_refuses_the_publisher() {
    let server = start_server_with(|s| {
        s.limits.max_queued_messages = 2;
        s.limits.queue_overflow = OverflowPolicy::Refuse;
    })
    .await;
    offline_subscriber(&server).await;
    let mut publisher = publisher_v5(&server).await;
    assert_eq!(publish_v5(&mut publisher, 1, b"1").await.0, 0);
    assert_eq!(publish_v5(&mut publisher, 2, b"2").await.0, 0);
    let (code, why) = publish_v5(&mut publisher, 1, b"3").await;
    assert_eq!(code, 0x97, "quota exceeded");
    assert!(
        why.as_deref().is_some_and(|w| w.contains("sub")),
        "the reason string names the full subscriber: {why:?}"
    );
    let (code, _) = publish_v5(&mut publisher, 2, b"4").await;
    assert_eq!(code, 0x97, "QoS 2 is refused at PUBREC");
    publish_v311_is_refused(&server).await;
    let mut stomp = StompClient::connect(server.stomp).await;
    stomp_send_is_refused(&mut stomp, "/topic/lim/t", "r-1", "full").await;

    // What was accepted is all there, in order; nothing refused slipped in.
    assert_eq!(
        drain_subscriber(&server).await,
        vec![b"1".to_vec(), b"2".to_vec()]
    );
    // Room again: the publisher is accepted.
    assert_eq!(publish_v5(&mut publisher, 1, b"5").await.0, 0);
}

fn frame_send(destination: &str, receipt: &str) -> tern_stomp::Frame {
    common::stomp::frame(
        Command::Send,
        &[("destination", destination), ("receipt", receipt)],
        b"stomp",
    )
}

/// A SEND with a receipt is answered with an ERROR naming the receipt and the
/// limit (no RECEIPT), and the connection is closed (`expect_error` checks that).
async fn stomp_send_is_refused(
    stomp: &mut StompClient,
    destination: &str,
    receipt: &str,
    words: &str,
) {
    stomp.send_frame(&frame_send(destination, receipt)).await;
    let error = stomp.expect_error().await;
    assert_eq!(error.header("receipt-id"), Some(receipt));
    let message = error.header("message").unwrap_or_default();
    assert!(message.contains(words), "{message}");
}

#[tokio::test]
async fn the_total_store_limit_refuses_qos1_and_qos2_publishes_but_not_qos0() {
    let dir = std::env::temp_dir().join(format!("tern-limits-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data_dir = dir.clone();
    let server = start_server_with(move |s| {
        s.storage.enabled = true;
        s.storage.data_dir = data_dir;
        s.storage.max_messages = 3;
    })
    .await;
    offline_subscriber(&server).await;
    let mut publisher = publisher_v5(&server).await;
    for payload in [b"1", b"2", b"3"] {
        assert_eq!(publish_v5(&mut publisher, 1, payload).await.0, 0);
    }
    let (code, why) = publish_v5(&mut publisher, 1, b"4").await;
    assert_eq!(code, 0x97);
    assert!(
        why.as_deref().is_some_and(|w| w.contains("store is full")),
        "{why:?}"
    );
    assert_eq!(publish_v5(&mut publisher, 2, b"5").await.0, 0x97);
    // QoS 0 is never stored, so the store limit does not apply to it: no DISCONNECT follows.
    conn_publish_qos0(&mut publisher).await;
    assert_eq!(publish_v5(&mut publisher, 1, b"still").await.0, 0x97);
    publish_v311_is_refused(&server).await;
    let mut stomp = StompClient::connect(server.stomp).await;
    stomp_send_is_refused(&mut stomp, "/queue/jobs", "r-2", "store is full").await;

    assert_eq!(
        drain_subscriber(&server).await,
        vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]
    );
    // Once the delivered messages are gone from the store, publishes are accepted again.
    let router = server.server.as_ref().expect("server").router().clone();
    eventually("the store to empty", || {
        router.store_status().map(|s| s.held_messages) == Some(0)
    })
    .await;
    assert_eq!(publish_v5(&mut publisher, 1, b"6").await.0, 0);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Topic `lim/t` (5 bytes) plus a 10-byte payload: what one message counts
/// against `limits.max_queued_bytes`.
const MESSAGE_BYTES: usize = 5 + 10;

#[tokio::test]
async fn the_byte_limit_of_a_session_queue_keeps_the_newest_messages_that_fit() {
    let server = start_server_with(|s| {
        s.limits.max_queued_bytes = 3 * MESSAGE_BYTES;
        s.limits.queue_overflow = OverflowPolicy::DropOldest;
    })
    .await;
    offline_subscriber(&server).await;
    let mut publisher = publisher_v5(&server).await;
    for i in 0..5 {
        let payload = format!("message-{i:02}");
        assert_eq!(publish_v5(&mut publisher, 1, payload.as_bytes()).await.0, 0);
    }
    // Bigger than the whole limit: it cannot fit even alone, so it is the one
    // dropped, and the publisher hears that nobody took it (0x10).
    assert_eq!(publish_v5(&mut publisher, 1, &[b'x'; 64]).await.0, 0x10);
    let router = server.server.as_ref().expect("in-process server").router();
    assert_eq!(
        router
            .stats
            .deliveries_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    assert_eq!(
        drain_subscriber(&server).await,
        vec![
            b"message-02".to_vec(),
            b"message-03".to_vec(),
            b"message-04".to_vec()
        ]
    );
}

#[tokio::test]
async fn the_byte_limit_with_policy_refuse_refuses_mqtt_and_stomp_publishers() {
    let server = start_server_with(|s| {
        s.limits.max_queued_bytes = 2 * MESSAGE_BYTES;
        s.limits.queue_overflow = OverflowPolicy::Refuse;
    })
    .await;
    offline_subscriber(&server).await;
    let mut publisher = publisher_v5(&server).await;
    assert_eq!(publish_v5(&mut publisher, 1, b"message-01").await.0, 0);
    assert_eq!(publish_v5(&mut publisher, 2, b"message-02").await.0, 0);
    // One byte is left: a message of any size is refused, and the count limit is far away.
    let (code, why) = publish_v5(&mut publisher, 1, b"3").await;
    assert_eq!(code, 0x97, "quota exceeded");
    assert!(why.as_deref().is_some_and(|w| w.contains("sub")), "{why:?}");
    publish_v311_is_refused(&server).await;
    let mut stomp = StompClient::connect(server.stomp).await;
    stomp_send_is_refused(&mut stomp, "/topic/lim/t", "r-3", "full").await;
    assert_eq!(
        drain_subscriber(&server).await,
        vec![b"message-01".to_vec(), b"message-02".to_vec()]
    );
}
