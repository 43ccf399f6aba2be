//! Topic depth and length caps (`limits.max_topic_levels`, `max_topic_length`) for
//! PUBLISH, SUBSCRIBE, UNSUBSCRIBE, wills and STOMP destinations, and the caps on
//! retained messages (`limits.max_retained_messages`, `max_retained_bytes`).
//! Raw packets where the reason code is the point.

mod common;

use std::sync::atomic::Ordering;

use common::stomp::{frame, StompClient};
use common::*;
use tern_stomp::Command;

/// A topic of `levels` levels ("a/a/…").
fn deep(levels: usize) -> String {
    vec!["a"; levels].join("/")
}

/// The reason code of a 5.0 PUBACK/PUBREC (after fixed header and packet id).
fn ack_reason(packet: &[u8]) -> u8 {
    packet.get(4).copied().unwrap_or(0)
}

#[tokio::test]
async fn v5_publish_deeper_than_max_topic_levels_gets_0x90_and_the_connection_stays() {
    let server = start_server().await;
    let (mut client, _) = raw_client(server.mqtt, &connect_v5("deep-pub")).await;
    let at_limit = deep(128);
    send(
        &mut client,
        &publish_packet(0x02, &at_limit, Some(1), Some(&[0]), b"x"),
    )
    .await;
    let puback = read_packet(&mut client).await.expect("PUBACK");
    assert_ne!(ack_reason(&puback), 0x90, "128 levels are fine: {puback:?}");
    let over = deep(129);
    send(
        &mut client,
        &publish_packet(0x02, &over, Some(2), Some(&[0]), b"x"),
    )
    .await;
    let puback = read_packet(&mut client).await.expect("PUBACK");
    assert_eq!((puback[0], ack_reason(&puback)), (0x40, 0x90), "{puback:?}");
    send(
        &mut client,
        &publish_packet(0x04, &over, Some(3), Some(&[0]), b"x"),
    )
    .await;
    let pubrec = read_packet(&mut client).await.expect("PUBREC");
    assert_eq!((pubrec[0], ack_reason(&pubrec)), (0x50, 0x90), "{pubrec:?}");
    expect_alive(&mut client).await;
    assert_eq!(server.server.as_ref().unwrap().router().retained_count(), 0);
}

#[tokio::test]
async fn v5_qos0_publish_deeper_than_the_limit_is_disconnected_with_0x90() {
    let server = start_server().await;
    let (mut client, _) = raw_client(server.mqtt, &connect_v5("deep-pub0")).await;
    send(
        &mut client,
        &publish_packet(0x01, &deep(129), None, Some(&[0]), b"x"),
    )
    .await;
    let rest = expect_closed(&mut client).await;
    assert_eq!(disconnect_reason(&rest), 0x90, "{rest:?}");
}

#[tokio::test]
async fn v311_publish_deeper_than_the_limit_closes_the_connection() {
    let server = start_server().await;
    let (mut client, _) = raw_client(server.mqtt, &connect_v311("deep-pub3")).await;
    send(
        &mut client,
        &publish_packet(0x03, &deep(129), Some(1), None, b"x"),
    )
    .await;
    let rest = expect_closed(&mut client).await;
    assert!(rest.is_empty(), "no PUBACK: {rest:?}");
    assert_eq!(server.server.as_ref().unwrap().router().retained_count(), 0);
}

async fn deep_subscribe_refused(level: u8, code: u8) {
    let server = start_server().await;
    let connect = connect_level(level, &format!("deep-sub-{level}"), true, 0);
    let (mut client, _) = raw_client(server.mqtt, &connect).await;
    let over = format!("{}/#", deep(128));
    let shared = format!("$share/g/{}", deep(128));
    let filters = [(over.as_str(), 1), ("ok/#", 1), (shared.as_str(), 0)];
    send(
        &mut client,
        &subscribe_packet(1, empty_props(level), &filters),
    )
    .await;
    let suback = read_packet(&mut client).await.expect("SUBACK");
    assert_eq!(suback, suback_bytes(level, 1, &[code, 1, 0]));
    assert_eq!(
        server
            .server
            .as_ref()
            .unwrap()
            .router()
            .subscription_count(),
        2
    );
    expect_alive(&mut client).await;
}

#[tokio::test]
async fn v5_subscribe_deeper_than_the_limit_gets_0x8f_a_share_prefix_is_not_counted() {
    deep_subscribe_refused(5, 0x8F).await;
}

#[tokio::test]
async fn v311_subscribe_deeper_than_the_limit_gets_0x80() {
    deep_subscribe_refused(4, 0x80).await;
}

#[tokio::test]
async fn v5_unsubscribe_deeper_than_the_limit_gets_0x8f() {
    let server = start_server().await;
    let (mut client, _) = raw_client(server.mqtt, &connect_v5("deep-unsub")).await;
    let mut body = 7u16.to_be_bytes().to_vec();
    body.push(0);
    body.extend(mqtt_str(deep(129)));
    send(&mut client, &common::frame(0xA2, &body)).await;
    let unsuback = read_packet(&mut client).await.expect("UNSUBACK");
    assert_eq!(unsuback, vec![0xB0, 4, 0, 7, 0, 0x8F]);
}

#[tokio::test]
async fn a_topic_longer_than_max_topic_length_is_refused() {
    let server = start_server_with(|s| s.limits.max_topic_length = 100).await;
    let (mut client, _) = raw_client(server.mqtt, &connect_v5("long-pub")).await;
    let long = "x".repeat(101);
    send(
        &mut client,
        &publish_packet(0x02, &long, Some(1), Some(&[0]), b"x"),
    )
    .await;
    let puback = read_packet(&mut client).await.expect("PUBACK");
    assert_eq!(ack_reason(&puback), 0x90, "{puback:?}");
    send(
        &mut client,
        &publish_packet(0x02, &"x".repeat(100), Some(2), Some(&[0]), b"x"),
    )
    .await;
    let puback = read_packet(&mut client).await.expect("PUBACK");
    assert_ne!(ack_reason(&puback), 0x90, "{puback:?}");
}

#[tokio::test]
async fn a_will_topic_deeper_than_the_limit_is_refused_at_connect() {
    let server = start_server().await;
    let mut payload = mqtt_str("deep-will");
    payload.push(0); // will properties
    payload.extend(mqtt_str(deep(129)));
    payload.extend(mqtt_str("bye"));
    let connect = connect_packet("MQTT", 5, 0x02 | 0x04, 30, Some(&[0]), &payload);
    let (_client, connack) = raw_client(server.mqtt, &connect).await;
    assert_eq!(connack.get(3), Some(&0x90), "{connack:?}");
}

#[tokio::test]
async fn stomp_send_and_subscribe_over_the_limits_are_errors() {
    let server = start_server_with(|s| s.limits.max_topic_length = 300).await;
    let mut client = StompClient::connect(server.stomp).await;
    let destination = format!("/topic/{}", deep(129));
    client
        .send_frame(&frame(
            Command::Send,
            &[("destination", &destination)],
            b"x",
        ))
        .await;
    let error = client.expect_error().await;
    let message = error.header("message").unwrap_or_default().to_string();
    assert!(message.contains("max_topic_levels"), "{message}");

    let mut client = StompClient::connect(server.stomp).await;
    let destination = format!("/topic/{}", "y".repeat(301));
    client
        .send_frame(&frame(
            Command::Subscribe,
            &[("id", "1"), ("destination", &destination)],
            b"",
        ))
        .await;
    let error = client.expect_error().await;
    let message = error.header("message").unwrap_or_default().to_string();
    assert!(message.contains("max_topic_length"), "{message}");
    assert_eq!(
        server
            .server
            .as_ref()
            .unwrap()
            .router()
            .subscription_count(),
        0
    );
}

#[tokio::test]
async fn v5_retained_publish_over_the_message_cap_gets_0x97_replacing_and_clearing_work() {
    let server = start_server_with(|s| s.limits.max_retained_messages = 2).await;
    let router = server.server.as_ref().unwrap().router().clone();
    let (mut client, _) = raw_client(server.mqtt, &connect_v5("retain-cap")).await;
    let publish = |id: u16, topic: &str, payload: &'static [u8]| {
        publish_packet(0x03, topic, Some(id), Some(&[0]), payload)
    };
    for (id, topic) in [(1, "r/1"), (2, "r/2")] {
        send(&mut client, &publish(id, topic, b"v")).await;
        let puback = read_packet(&mut client).await.expect("PUBACK");
        assert_ne!(ack_reason(&puback), 0x97, "{puback:?}");
    }
    send(&mut client, &publish(3, "r/3", b"v")).await;
    let puback = read_packet(&mut client).await.expect("PUBACK");
    assert_eq!(ack_reason(&puback), 0x97, "{puback:?}");
    assert_eq!(router.stats.retained_refused.load(Ordering::Relaxed), 1);
    // At the cap: a replacement and a clear still work, then there is room.
    send(&mut client, &publish(4, "r/1", b"bigger than before")).await;
    assert_ne!(ack_reason(&read_packet(&mut client).await.unwrap()), 0x97);
    send(&mut client, &publish(5, "r/2", b"")).await;
    assert_ne!(ack_reason(&read_packet(&mut client).await.unwrap()), 0x97);
    send(&mut client, &publish(6, "r/3", b"v")).await;
    assert_ne!(ack_reason(&read_packet(&mut client).await.unwrap()), 0x97);
    let mut topics: Vec<String> = router
        .retained_all()
        .iter()
        .map(|m| m.topic.to_string())
        .collect();
    topics.sort();
    assert_eq!(topics, vec!["r/1", "r/3"]);
    // Counted in the metric.
    let body = common::http::get(server.http, "/metrics").await.body;
    assert!(
        body.contains("tern_messages_dropped_total{reason=\"retained_limit\"} 1"),
        "{body}"
    );
}

#[tokio::test]
async fn v311_retained_publish_over_the_byte_cap_closes_without_ack() {
    // "r/1" + 7 bytes = 10: one message fills the cap.
    let server = start_server_with(|s| s.limits.max_retained_bytes = 10).await;
    let (mut client, _) = raw_client(server.mqtt, &connect_v311("retain-bytes")).await;
    send(
        &mut client,
        &publish_packet(0x03, "r/1", Some(1), None, b"1234567"),
    )
    .await;
    assert_eq!(read_packet(&mut client).await, Some(vec![0x40, 2, 0, 1]));
    // Same size replaces fine.
    send(
        &mut client,
        &publish_packet(0x03, "r/1", Some(2), None, b"7654321"),
    )
    .await;
    assert_eq!(read_packet(&mut client).await, Some(vec![0x40, 2, 0, 2]));
    send(
        &mut client,
        &publish_packet(0x03, "r/2", Some(3), None, b"x"),
    )
    .await;
    let rest = expect_closed(&mut client).await;
    assert!(rest.is_empty(), "no PUBACK: {rest:?}");
    let router = server.server.as_ref().unwrap().router().clone();
    assert_eq!(router.retained_count(), 1);
    assert_eq!(router.retained_bytes(), 10);
}
