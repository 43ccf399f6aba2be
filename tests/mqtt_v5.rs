//! MQTT 5.0 features: message expiry, properties passed through, topic aliases,
//! subscription identifiers, receive maximum, maximum packet size both ways,
//! reason codes and strings, shared subscriptions and graceful shutdown.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Filter, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{ConnectionError, StateError};

fn expiring(seconds: u32) -> PublishProperties {
    PublishProperties {
        message_expiry_interval: Some(seconds),
        ..Default::default()
    }
}

async fn v5_client(server: &TestServer, id: &str) -> v5::Client {
    <v5::Client as TestClient>::connect(server.mqtt, id).await
}

#[tokio::test]
async fn session_expiry_above_the_server_maximum_is_capped_in_connack() {
    let server = start_server_with(|s| s.limits.max_session_expiry_secs = 10).await;
    let options = v5::persistent_options(server.mqtt, "long"); // asks for 3600 s
    let (_c, ack) = v5::Client::start(options).await;
    let props = ack.properties.expect("CONNACK properties");
    assert_eq!(props.session_expiry_interval, Some(10));
}

#[tokio::test]
async fn message_expiry_interval_counts_down_while_the_message_waits() {
    let server = start_server().await;
    let mut publisher = v5_client(&server, "pub").await;
    publisher
        .publish_with("exp/t", 1, true, b"r", expiring(10))
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // time for the interval to drop
    let mut sub = v5_client(&server, "sub").await;
    sub.subscribe("exp/t", 1).await;
    let p = sub.recv_publish().await;
    let left = p
        .properties
        .and_then(|p| p.message_expiry_interval)
        .expect("expiry interval");
    assert!(
        (1..=9).contains(&left),
        "remaining expiry {left}, published with 10 s"
    );
}

#[tokio::test]
async fn expired_retained_message_is_not_delivered() {
    let server = start_server().await;
    let mut publisher = v5_client(&server, "pub").await;
    publisher
        .publish_with("exp/t", 1, true, b"old", expiring(1))
        .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut sub = v5_client(&server, "sub").await;
    sub.subscribe("exp/t", 1).await;
    sub.expect_no_message().await;
}

#[tokio::test]
async fn expired_queued_message_is_not_delivered() {
    let server = start_server().await;
    let (mut sub, _) = <v5::Client as TestClient>::connect_persistent(server.mqtt, "sub").await;
    sub.subscribe("exp/t", 1).await;
    sub.disconnect().await;
    let mut publisher = v5_client(&server, "pub").await;
    publisher
        .publish_with("exp/t", 1, false, b"short", expiring(1))
        .await;
    publisher
        .publish_with("exp/t", 1, false, b"long", expiring(60))
        .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (mut sub, present) =
        <v5::Client as TestClient>::connect_persistent(server.mqtt, "sub").await;
    assert!(present);
    assert_eq!(sub.recv().await.payload, b"long");
    sub.expect_no_message().await;
}

#[tokio::test]
async fn publish_properties_pass_through_unchanged() {
    let server = start_server().await;
    let mut sub = v5_client(&server, "sub").await;
    sub.subscribe("props/t", 1).await;
    let mut publisher = v5_client(&server, "pub").await;
    let sent = PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(Bytes::from_static(&[0, 1, 2, 0xFF])),
        user_properties: vec![
            ("k".into(), "v1".into()),
            ("a".into(), "b".into()),
            ("k".into(), "v2".into()),
        ],
        ..Default::default()
    };
    publisher
        .publish_with("props/t", 1, false, b"{}", sent.clone())
        .await;
    let got = sub.recv_publish().await.properties.expect("properties");
    assert_eq!(got, sent);
}

/// 5.0 PUBLISH property: topic alias (0x23).
fn alias(n: u16) -> Vec<u8> {
    let [hi, lo] = n.to_be_bytes();
    props(&[0x23, hi, lo])
}

#[tokio::test]
async fn topic_alias_from_the_client_is_resolved_and_can_be_remapped() {
    let server = start_server().await;
    let mut sub = <v4::Client as TestClient>::connect(server.mqtt, "sub").await;
    sub.subscribe("al/+", 1).await;
    let (mut s, _) = raw_client(server.mqtt, &connect_v5("pub")).await;
    send(
        &mut s,
        &publish_packet(0, "al/t", None, Some(&alias(1)), b"set"),
    )
    .await;
    send(
        &mut s,
        &publish_packet(0, "", None, Some(&alias(1)), b"used"),
    )
    .await;
    send(
        &mut s,
        &publish_packet(0, "al/u", None, Some(&alias(1)), b"remapped"),
    )
    .await;
    send(
        &mut s,
        &publish_packet(0x02, "", Some(1), Some(&alias(1)), b"used again"),
    )
    .await;
    assert_eq!(read_packet(&mut s).await, Some(ack_packet(0x40, 1)));
    let got: Vec<(String, Vec<u8>)> = [
        sub.recv().await,
        sub.recv().await,
        sub.recv().await,
        sub.recv().await,
    ]
    .into_iter()
    .map(|m| (m.topic, m.payload))
    .collect();
    let expected = [
        ("al/t", "set"),
        ("al/t", "used"),
        ("al/u", "remapped"),
        ("al/u", "used again"),
    ];
    let expected: Vec<(String, Vec<u8>)> = expected
        .iter()
        .map(|(t, p)| (t.to_string(), p.as_bytes().to_vec()))
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn subscription_identifiers_come_with_each_matching_message() {
    let server = start_server().await;
    let mut sub = v5::Client::start(v5::options(server.mqtt, "sub")).await.0;
    sub.subscribe_with(vec![Filter::new("si/+", QoS::AtLeastOnce)], Some(7))
        .await;
    sub.subscribe_with(vec![Filter::new("si/#", QoS::AtLeastOnce)], Some(300))
        .await;
    let mut publisher = v5_client(&server, "pub").await;
    publisher.publish("si/t", 1, false, b"both").await;
    publisher.publish("si", 1, false, b"one").await;
    let ids = |p: rumqttc::v5::mqttbytes::v5::Publish| {
        let mut ids = p
            .properties
            .map(|p| p.subscription_identifiers)
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    };
    assert_eq!(
        ids(sub.recv_publish().await),
        vec![7, 300],
        "one delivery, both identifiers"
    );
    assert_eq!(ids(sub.recv_publish().await), vec![300]);
}

#[tokio::test]
async fn client_receive_maximum_bounds_unacknowledged_deliveries() {
    let server = start_server().await;
    // CONNECT properties: receive maximum (0x21) = 2.
    let connect = connect_packet(
        "MQTT",
        5,
        0x02,
        60,
        Some(&props(&[0x21, 0x00, 0x02])),
        &mqtt_str("slow"),
    );
    let (mut s, _) = raw_client(server.mqtt, &connect).await;
    send(&mut s, &subscribe_packet(1, Some(&[0]), &[("rm/t", 1)])).await;
    assert_eq!(read_packet(&mut s).await, Some(suback_bytes(5, 1, &[1])));
    let mut publisher = v5_client(&server, "pub").await;
    for i in 0..5u8 {
        publisher.publish("rm/t", 1, false, &[i]).await;
    }
    let first = read_publish(&mut s, 5).await;
    let second = read_publish(&mut s, 5).await;
    assert_eq!((first.payload.clone(), second.payload), (vec![0], vec![1]));
    expect_silence(&mut s).await; // two outstanding: the window is closed
    send(&mut s, &ack_packet(0x40, first.packet_id.unwrap())).await;
    let third = read_publish(&mut s, 5).await;
    assert_eq!(third.payload, vec![2]);
    expect_silence(&mut s).await;
}

#[tokio::test]
async fn oversize_publish_is_refused_with_disconnect_0x95() {
    let server = start_server_with(|s| s.limits.max_packet_size = 1024).await;
    let (mut s, _) = raw_client(server.mqtt, &connect_v5("big")).await;
    send(
        &mut s,
        &publish_packet(0, "big/t", None, Some(&[0]), &[b'x'; 2000]),
    )
    .await;
    let bytes = expect_closed(&mut s).await;
    assert_eq!(disconnect_reason(&bytes), 0x95, "{bytes:02x?}");
    assert_broker_healthy(server.mqtt).await;
}

#[tokio::test]
async fn message_larger_than_the_client_maximum_packet_size_is_not_sent_to_it() {
    let server = start_server().await;
    // CONNECT properties: maximum packet size (0x27) = 100.
    let connect = connect_packet(
        "MQTT",
        5,
        0x02,
        60,
        Some(&props(&[0x27, 0, 0, 0, 100])),
        &mqtt_str("tiny"),
    );
    let (mut s, _) = raw_client(server.mqtt, &connect).await;
    send(&mut s, &subscribe_packet(1, Some(&[0]), &[("mp/t", 1)])).await;
    assert_eq!(read_packet(&mut s).await, Some(suback_bytes(5, 1, &[1])));
    let mut publisher = v5_client(&server, "pub").await;
    publisher.publish("mp/t", 1, false, &[b'x'; 500]).await;
    publisher.publish("mp/t", 1, false, b"small").await;
    let p = read_publish(&mut s, 5).await;
    assert_eq!(p.payload, b"small");
    send(&mut s, &ack_packet(0x40, p.packet_id.unwrap())).await;
    expect_silence(&mut s).await;
}

/// The reason string (0x1F) of a 5.0 DISCONNECT, if any.
fn reason_string(disconnect: &[u8]) -> Option<String> {
    let body = packet_body(disconnect);
    let props = body.get(2..)?; // reason, property length (< 128 here)
    (props.first() == Some(&0x1F)).then(|| {
        let len = usize::from(u16::from_be_bytes([props[1], props[2]]));
        String::from_utf8(props[3..3 + len].to_vec()).expect("utf-8")
    })
}

#[tokio::test]
async fn server_disconnect_carries_a_reason_code_and_reason_string() {
    let server = start_server().await;
    let (mut s, _) = raw_client(server.mqtt, &connect_v5("twice")).await;
    send(&mut s, &connect_v5("twice")).await;
    let bytes = expect_closed(&mut s).await;
    assert_eq!(disconnect_reason(&bytes), 0x82);
    let why = reason_string(&bytes).expect("reason string");
    assert!(why.contains("CONNECT"), "{why}");
}

#[tokio::test]
async fn server_disconnect_drops_the_reason_string_beyond_the_client_maximum_packet_size() {
    let server = start_server().await;
    let connect = connect_packet(
        "MQTT",
        5,
        0x02,
        60,
        Some(&props(&[0x27, 0, 0, 0, 8])),
        &mqtt_str("tiny"),
    );
    let (mut s, _) = raw_client(server.mqtt, &connect).await;
    send(&mut s, &connect_v5("tiny")).await;
    let bytes = expect_closed(&mut s).await;
    assert_eq!(disconnect_reason(&bytes), 0x82, "{bytes:02x?}");
    assert!(
        bytes.len() <= 8,
        "DISCONNECT of {} bytes, client maximum is 8",
        bytes.len()
    );
}

#[tokio::test]
async fn publish_without_subscribers_is_acknowledged_with_0x10() {
    let server = start_server().await;
    let (mut s, _) = raw_client(server.mqtt, &connect_v5("pub")).await;
    send(
        &mut s,
        &publish_packet(0x02, "nobody/t", Some(1), Some(&[0]), b"x"),
    )
    .await;
    assert_eq!(
        read_packet(&mut s).await,
        Some(vec![0x40, 0x03, 0x00, 0x01, 0x10])
    );
    send(
        &mut s,
        &publish_packet(0x04, "nobody/t", Some(2), Some(&[0]), b"x"),
    )
    .await;
    assert_eq!(
        read_packet(&mut s).await,
        Some(vec![0x50, 0x03, 0x00, 0x02, 0x10])
    );
    send(&mut s, &ack_packet(0x62, 2)).await;
    assert_eq!(read_packet(&mut s).await, Some(ack_packet(0x70, 2)));
}

#[tokio::test]
async fn shared_subscription_hands_each_message_to_one_member_in_turn() {
    let server = start_server().await;
    let mut a = v5_client(&server, "a").await;
    let mut b = v5_client(&server, "b").await;
    assert_eq!(a.subscribe("$share/g/jobs/+", 1).await, vec![1]);
    assert_eq!(b.subscribe("$share/g/jobs/+", 1).await, vec![1]);
    let mut all = v5_client(&server, "all").await;
    all.subscribe("jobs/+", 1).await;
    let mut publisher = v5_client(&server, "pub").await;
    for i in 0..6u8 {
        publisher.publish("jobs/x", 1, false, &[i]).await;
    }
    let (mut got_a, mut got_b) = (HashSet::new(), HashSet::new());
    for _ in 0..3 {
        got_a.insert(a.recv().await.payload[0]);
        got_b.insert(b.recv().await.payload[0]);
    }
    a.expect_no_message().await;
    b.expect_no_message().await;
    assert!(got_a.is_disjoint(&got_b), "{got_a:?} / {got_b:?}");
    assert_eq!(got_a.len() + got_b.len(), 6);
    for i in 0..6u8 {
        assert_eq!(
            all.recv().await.payload,
            vec![i],
            "a plain subscriber gets every message"
        );
    }
}

#[tokio::test]
async fn shared_subscription_gets_no_retained_messages_on_subscribe() {
    let server = start_server().await;
    let mut publisher = v5_client(&server, "pub").await;
    publisher.publish("jobs/x", 1, true, b"retained").await;
    let mut member = v5_client(&server, "a").await;
    member.subscribe("$share/g/jobs/+", 1).await;
    member.expect_no_message().await;
}

#[tokio::test]
async fn server_shutdown_sends_disconnect_0x8b_and_closes_3x_connections() {
    let mut server = start_server().await;
    let mut c5 = v5_client(&server, "c5").await;
    let mut c311 = <v4::Client as TestClient>::connect(server.mqtt, "c311").await;
    let running = server.server.take().expect("server");
    let shutdown = tokio::spawn(running.shutdown(common::WAIT));
    let (_, error) = c5.until_closed().await;
    assert!(
        matches!(
            error,
            ConnectionError::MqttState(StateError::ServerDisconnect {
                reason_code: DisconnectReasonCode::ServerShuttingDown,
                ..
            })
        ),
        "{error:?}"
    );
    let (seen, _) = c311.until_closed().await;
    assert!(seen.is_empty(), "{seen:?}");
    tokio::time::timeout(common::WAIT, shutdown)
        .await
        .expect("shutdown finishes")
        .expect("no panic");
}

/// Server-assigned topic aliases: with Topic Alias Maximum 2 in CONNECT, the
/// first PUBLISH of a topic carries topic + alias, a repeat the alias and an
/// empty topic, and a third topic takes the least recently used alias.
#[tokio::test]
async fn server_assigns_topic_aliases_with_lru_replacement() {
    let server = start_server().await;
    let alias_max = props(&[0x22, 0x00, 0x02]);
    let connect = connect_packet("MQTT", 5, 0x02, 60, Some(&alias_max), &mqtt_str("aliased"));
    let (mut sub, connack) = raw_client(server.mqtt, &connect).await;
    assert_eq!(connack[3], 0x00);
    send(
        &mut sub,
        &subscribe_packet(1, Some(&[0x00]), &[("fleet/#", 0)]),
    )
    .await;
    assert_eq!(read_packet(&mut sub).await, Some(suback_bytes(5, 1, &[0])));
    let (mut publisher, _) = raw_client(server.mqtt, &connect_v311("pub")).await;
    let long = |name: &str| format!("fleet/building-7/floor-3/room-12/{name}/temperature");
    let (a, b, c) = (long("a"), long("b"), long("c"));
    // (topic published, topic on the wire, alias)
    let expected = [
        (&a, a.as_str(), 1u8),
        (&a, "", 1),
        (&b, b.as_str(), 2),
        (&a, "", 1),
        (&c, c.as_str(), 2), // b was the least recently used
        (&b, b.as_str(), 1), // then a
        (&c, "", 2),
    ];
    for (i, (topic, _, _)) in expected.iter().enumerate() {
        send(
            &mut publisher,
            &publish_packet(0, topic, None, None, &[i as u8]),
        )
        .await;
    }
    for (i, (_, wire_topic, alias)) in expected.iter().enumerate() {
        let p = read_publish(&mut sub, 5).await;
        assert_eq!(p.payload, vec![i as u8]);
        assert_eq!(p.topic, *wire_topic, "message {i}");
        assert_eq!(p.properties, vec![0x23, 0x00, *alias], "message {i}");
    }
    // A client that set no maximum gets plain topics.
    let mut plain = raw_subscriber(server.mqtt, 5, "plain", "fleet/#", 0).await;
    send(&mut publisher, &publish_packet(0, &a, None, None, b"x")).await;
    let p = read_publish(&mut plain, 5).await;
    assert_eq!(
        (p.topic.as_str(), p.properties.as_slice()),
        (a.as_str(), &[][..])
    );
}
