//! QoS 0/1/2 in both directions: acknowledgements and packet ids, the whole
//! PUBREC/PUBREL/PUBCOMP flow, exactly-once on resends, DUP redelivery to a
//! resumed session, per-topic ordering and QoS downgrade.

mod common;

use std::collections::HashSet;

use common::*;

async fn qos0_message_is_delivered<C: TestClient>() {
    let server = start_server().await;
    let mut sub = C::connect(server.mqtt, "sub").await;
    assert_eq!(sub.subscribe("q/0", 0).await, vec![0]);
    let mut publisher = C::connect(server.mqtt, "pub").await;
    publisher.publish("q/0", 0, false, b"zero").await;
    let m = sub.recv().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..], m.qos),
        ("q/0", &b"zero"[..], 0)
    );
    assert!(!m.retain && !m.dup);
}

#[tokio::test]
async fn qos0_message_is_delivered_v311() {
    qos0_message_is_delivered::<v4::Client>().await;
}

#[tokio::test]
async fn qos0_message_is_delivered_v5() {
    qos0_message_is_delivered::<v5::Client>().await;
}

async fn qos1_message_is_acknowledged_and_delivered_once<C: TestClient>() {
    let server = start_server().await;
    let mut sub = C::connect(server.mqtt, "sub").await;
    assert_eq!(sub.subscribe("q/1", 1).await, vec![1]);
    let mut publisher = C::connect(server.mqtt, "pub").await;
    publisher.publish("q/1", 1, false, b"one").await; // returns on PUBACK
    let m = sub.recv().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..], m.qos),
        ("q/1", &b"one"[..], 1)
    );
    assert_ne!(m.pkid, 0);
    sub.expect_no_message().await;
}

#[tokio::test]
async fn qos1_message_is_acknowledged_and_delivered_once_v311() {
    qos1_message_is_acknowledged_and_delivered_once::<v4::Client>().await;
}

#[tokio::test]
async fn qos1_message_is_acknowledged_and_delivered_once_v5() {
    qos1_message_is_acknowledged_and_delivered_once::<v5::Client>().await;
}

async fn qos2_message_completes_and_is_delivered_once<C: TestClient>() {
    let server = start_server().await;
    let mut sub = C::connect(server.mqtt, "sub").await;
    assert_eq!(sub.subscribe("q/2", 2).await, vec![2]);
    let mut publisher = C::connect(server.mqtt, "pub").await;
    publisher.publish("q/2", 2, false, b"two").await; // returns on PUBCOMP
    let m = sub.recv().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..], m.qos),
        ("q/2", &b"two"[..], 2)
    );
    assert_ne!(m.pkid, 0);
    sub.expect_no_message().await;
}

#[tokio::test]
async fn qos2_message_completes_and_is_delivered_once_v311() {
    qos2_message_completes_and_is_delivered_once::<v4::Client>().await;
}

#[tokio::test]
async fn qos2_message_completes_and_is_delivered_once_v5() {
    qos2_message_completes_and_is_delivered_once::<v5::Client>().await;
}

async fn qos1_publish_is_acknowledged_with_its_packet_id(level: u8) {
    let server = start_server().await;
    let mut sub = raw_subscriber(server.mqtt, level, "sub", "ack/1", 1).await;
    let (mut s, _) = raw_client(server.mqtt, &connect_level(level, "pub", true, 0)).await;
    let publish = publish_packet(0x02, "ack/1", Some(0x1234), empty_props(level), b"p");
    send(&mut s, &publish).await;
    assert_eq!(
        read_packet(&mut s).await,
        Some(vec![0x40, 0x02, 0x12, 0x34])
    );
    assert_eq!(read_publish(&mut sub, level).await.payload, b"p");
}

#[tokio::test]
async fn qos1_publish_is_acknowledged_with_its_packet_id_v311() {
    qos1_publish_is_acknowledged_with_its_packet_id(4).await;
}

#[tokio::test]
async fn qos1_publish_is_acknowledged_with_its_packet_id_v5() {
    qos1_publish_is_acknowledged_with_its_packet_id(5).await;
}

async fn inbound_qos2_flow_is_pubrec_then_pubcomp(level: u8) {
    let server = start_server().await;
    let mut sub = raw_subscriber(server.mqtt, level, "sub", "in/2", 2).await;
    let (mut s, _) = raw_client(server.mqtt, &connect_level(level, "pub", true, 0)).await;
    send(
        &mut s,
        &publish_packet(0x04, "in/2", Some(0x0102), empty_props(level), b"x"),
    )
    .await;
    assert_eq!(
        read_packet(&mut s).await,
        Some(vec![0x50, 0x02, 0x01, 0x02])
    );
    send(&mut s, &ack_packet(0x62, 0x0102)).await;
    assert_eq!(
        read_packet(&mut s).await,
        Some(vec![0x70, 0x02, 0x01, 0x02])
    );
    let p = read_publish(&mut sub, level).await;
    assert_eq!((p.qos, &p.payload[..]), (2, &b"x"[..]));
}

#[tokio::test]
async fn inbound_qos2_flow_is_pubrec_then_pubcomp_v311() {
    inbound_qos2_flow_is_pubrec_then_pubcomp(4).await;
}

#[tokio::test]
async fn inbound_qos2_flow_is_pubrec_then_pubcomp_v5() {
    inbound_qos2_flow_is_pubrec_then_pubcomp(5).await;
}

async fn outbound_qos2_flow_is_publish_pubrec_pubrel_pubcomp(level: u8) {
    let server = start_server().await;
    let mut sub = raw_subscriber(server.mqtt, level, "sub", "out/2", 2).await;
    let mut publisher = <v4::Client as TestClient>::connect(server.mqtt, "pub").await;
    publisher.publish("out/2", 2, false, b"y").await;
    let p = read_publish(&mut sub, level).await;
    assert_eq!((p.qos, p.dup, &p.payload[..]), (2, false, &b"y"[..]));
    let id = p.packet_id.expect("packet id");
    send(&mut sub, &ack_packet(0x50, id)).await;
    assert_eq!(read_packet(&mut sub).await, Some(ack_packet(0x62, id)));
    send(&mut sub, &ack_packet(0x70, id)).await;
    expect_silence(&mut sub).await;
}

#[tokio::test]
async fn outbound_qos2_flow_is_publish_pubrec_pubrel_pubcomp_v311() {
    outbound_qos2_flow_is_publish_pubrec_pubrel_pubcomp(4).await;
}

#[tokio::test]
async fn outbound_qos2_flow_is_publish_pubrec_pubrel_pubcomp_v5() {
    outbound_qos2_flow_is_publish_pubrec_pubrel_pubcomp(5).await;
}

async fn qos2_publish_resent_with_dup_before_pubrel_is_delivered_once(level: u8) {
    let server = start_server().await;
    let mut sub = <v4::Client as TestClient>::connect(server.mqtt, "sub").await;
    sub.subscribe("dup/2", 2).await;
    let (mut s, _) = raw_client(server.mqtt, &connect_level(level, "pub", true, 0)).await;
    send(
        &mut s,
        &publish_packet(0x04, "dup/2", Some(9), empty_props(level), b"once"),
    )
    .await;
    assert_eq!(read_packet(&mut s).await, Some(ack_packet(0x50, 9)));
    // The PUBREC "was lost": the client resends with DUP.
    send(
        &mut s,
        &publish_packet(0x0C, "dup/2", Some(9), empty_props(level), b"once"),
    )
    .await;
    assert_eq!(read_packet(&mut s).await, Some(ack_packet(0x50, 9)));
    send(&mut s, &ack_packet(0x62, 9)).await;
    assert_eq!(read_packet(&mut s).await, Some(ack_packet(0x70, 9)));
    assert_eq!(sub.recv().await.payload, b"once");
    sub.expect_no_message().await;
}

#[tokio::test]
async fn qos2_publish_resent_with_dup_before_pubrel_is_delivered_once_v311() {
    qos2_publish_resent_with_dup_before_pubrel_is_delivered_once(4).await;
}

#[tokio::test]
async fn qos2_publish_resent_with_dup_before_pubrel_is_delivered_once_v5() {
    qos2_publish_resent_with_dup_before_pubrel_is_delivered_once(5).await;
}

async fn qos2_packet_id_is_reusable_after_pubcomp(level: u8) {
    let server = start_server().await;
    let mut sub = <v4::Client as TestClient>::connect(server.mqtt, "sub").await;
    sub.subscribe("reuse/2", 2).await;
    let (mut s, _) = raw_client(server.mqtt, &connect_level(level, "pub", true, 0)).await;
    for payload in [&b"first"[..], b"second"] {
        send(
            &mut s,
            &publish_packet(0x04, "reuse/2", Some(5), empty_props(level), payload),
        )
        .await;
        assert_eq!(read_packet(&mut s).await, Some(ack_packet(0x50, 5)));
        send(&mut s, &ack_packet(0x62, 5)).await;
        assert_eq!(read_packet(&mut s).await, Some(ack_packet(0x70, 5)));
        assert_eq!(sub.recv().await.payload, payload);
    }
}

#[tokio::test]
async fn qos2_packet_id_is_reusable_after_pubcomp_v311() {
    qos2_packet_id_is_reusable_after_pubcomp(4).await;
}

#[tokio::test]
async fn qos2_packet_id_is_reusable_after_pubcomp_v5() {
    qos2_packet_id_is_reusable_after_pubcomp(5).await;
}

async fn unacknowledged_messages_are_resent_with_dup_on_reconnect(level: u8) {
    let server = start_server().await;
    let connect = connect_level(level, "sub", false, 3600);
    let (mut s, _) = raw_client(server.mqtt, &connect).await;
    let subscribe = subscribe_packet(1, empty_props(level), &[("re/1", 1), ("re/2", 2)]);
    send(&mut s, &subscribe).await;
    assert_eq!(
        read_packet(&mut s).await,
        Some(suback_bytes(level, 1, &[1, 2]))
    );
    let mut publisher = <v4::Client as TestClient>::connect(server.mqtt, "pub").await;
    publisher.publish("re/1", 1, false, b"one").await;
    publisher.publish("re/2", 2, false, b"two").await;
    let first = read_publish(&mut s, level).await;
    let second = read_publish(&mut s, level).await;
    assert!(!first.dup && !second.dup);
    drop(s); // no acknowledgement at all

    let (mut s, connack) = raw_client(server.mqtt, &connect).await;
    assert_eq!(
        connack[2],
        resumed_flags(level),
        "session present: {connack:02x?}"
    );
    let again = [
        read_publish(&mut s, level).await,
        read_publish(&mut s, level).await,
    ];
    for (old, new) in [first, second].iter().zip(&again) {
        assert!(new.dup, "resend must carry DUP: {new:?}");
        assert_eq!(
            (&new.topic, new.packet_id, new.qos),
            (&old.topic, old.packet_id, old.qos)
        );
        assert_eq!(new.payload, old.payload);
    }
    send(&mut s, &ack_packet(0x40, again[0].packet_id.unwrap())).await;
    let id2 = again[1].packet_id.unwrap();
    send(&mut s, &ack_packet(0x50, id2)).await;
    assert_eq!(read_packet(&mut s).await, Some(ack_packet(0x62, id2)));
    send(&mut s, &ack_packet(0x70, id2)).await;
    expect_silence(&mut s).await;
}

#[tokio::test]
async fn unacknowledged_messages_are_resent_with_dup_on_reconnect_v311() {
    unacknowledged_messages_are_resent_with_dup_on_reconnect(4).await;
}

#[tokio::test]
async fn unacknowledged_messages_are_resent_with_dup_on_reconnect_v5() {
    unacknowledged_messages_are_resent_with_dup_on_reconnect(5).await;
}

async fn pubrel_is_resent_on_reconnect_when_pubcomp_was_missing(level: u8) {
    let server = start_server().await;
    let connect = connect_level(level, "sub", false, 3600);
    let (mut s, _) = raw_client(server.mqtt, &connect).await;
    send(
        &mut s,
        &subscribe_packet(1, empty_props(level), &[("rel/2", 2)]),
    )
    .await;
    assert_eq!(
        read_packet(&mut s).await,
        Some(suback_bytes(level, 1, &[2]))
    );
    let mut publisher = <v4::Client as TestClient>::connect(server.mqtt, "pub").await;
    publisher.publish("rel/2", 2, false, b"r").await;
    let id = read_publish(&mut s, level).await.packet_id.unwrap();
    send(&mut s, &ack_packet(0x50, id)).await;
    assert_eq!(read_packet(&mut s).await, Some(ack_packet(0x62, id)));
    drop(s); // PUBCOMP never sent

    let (mut s, connack) = raw_client(server.mqtt, &connect).await;
    assert_eq!(connack[2], resumed_flags(level));
    assert_eq!(
        read_packet(&mut s).await,
        Some(ack_packet(0x62, id)),
        "PUBREL, not the message"
    );
    send(&mut s, &ack_packet(0x70, id)).await;
    expect_silence(&mut s).await;
}

#[tokio::test]
async fn pubrel_is_resent_on_reconnect_when_pubcomp_was_missing_v311() {
    pubrel_is_resent_on_reconnect_when_pubcomp_was_missing(4).await;
}

#[tokio::test]
async fn pubrel_is_resent_on_reconnect_when_pubcomp_was_missing_v5() {
    pubrel_is_resent_on_reconnect_when_pubcomp_was_missing(5).await;
}

async fn unacknowledged_deliveries_have_distinct_nonzero_packet_ids(level: u8) {
    let server = start_server().await;
    let mut sub = raw_subscriber(server.mqtt, level, "sub", "ids/+", 1).await;
    let mut publisher = <v4::Client as TestClient>::connect(server.mqtt, "pub").await;
    for i in 0..5 {
        publisher.publish(&format!("ids/{i}"), 1, false, b"m").await;
    }
    let mut ids = HashSet::new();
    for _ in 0..5 {
        let id = read_publish(&mut sub, level)
            .await
            .packet_id
            .expect("packet id");
        assert_ne!(id, 0);
        assert!(ids.insert(id), "packet id {id} reused while in flight");
    }
}

#[tokio::test]
async fn unacknowledged_deliveries_have_distinct_nonzero_packet_ids_v311() {
    unacknowledged_deliveries_have_distinct_nonzero_packet_ids(4).await;
}

#[tokio::test]
async fn unacknowledged_deliveries_have_distinct_nonzero_packet_ids_v5() {
    unacknowledged_deliveries_have_distinct_nonzero_packet_ids(5).await;
}

async fn messages_on_one_topic_arrive_in_publish_order<C: TestClient>() {
    let server = start_server().await;
    let mut sub = C::connect(server.mqtt, "sub").await;
    sub.subscribe("order/t", 2).await;
    let mut publisher = C::connect(server.mqtt, "pub").await;
    for i in 0..30u32 {
        publisher
            .publish("order/t", 1 + (i % 2) as u8, false, &i.to_be_bytes())
            .await;
    }
    for i in 0..30u32 {
        let m = sub.recv().await;
        assert_eq!(m.payload, i.to_be_bytes(), "message {i} out of order");
        assert_eq!(u32::from(m.qos), 1 + i % 2);
    }
}

#[tokio::test]
async fn messages_on_one_topic_arrive_in_publish_order_v311() {
    messages_on_one_topic_arrive_in_publish_order::<v4::Client>().await;
}

#[tokio::test]
async fn messages_on_one_topic_arrive_in_publish_order_v5() {
    messages_on_one_topic_arrive_in_publish_order::<v5::Client>().await;
}

async fn delivery_qos_is_the_lower_of_publish_and_subscription<C: TestClient>() {
    let server = start_server().await;
    let mut subs = Vec::new();
    for granted in 0..=2u8 {
        let mut c = C::connect(server.mqtt, &format!("sub{granted}")).await;
        assert_eq!(c.subscribe("down/t", granted).await, vec![granted]);
        subs.push(c);
    }
    let mut publisher = C::connect(server.mqtt, "pub").await;
    for published in 0..=2u8 {
        publisher.publish("down/t", published, false, b"q").await;
        for (granted, sub) in subs.iter_mut().enumerate() {
            let m = sub.recv().await;
            assert_eq!(
                m.qos,
                published.min(granted as u8),
                "published {published}, granted {granted}"
            );
        }
    }
}

#[tokio::test]
async fn delivery_qos_is_the_lower_of_publish_and_subscription_v311() {
    delivery_qos_is_the_lower_of_publish_and_subscription::<v4::Client>().await;
}

#[tokio::test]
async fn delivery_qos_is_the_lower_of_publish_and_subscription_v5() {
    delivery_qos_is_the_lower_of_publish_and_subscription::<v5::Client>().await;
}

#[tokio::test]
async fn qos2_resend_at_the_receive_maximum_is_acknowledged_not_refused_v5() {
    let server = start_server_with(|s| s.limits.receive_maximum = 2).await;
    let (mut s, _) = raw_client(server.mqtt, &connect_v5("pub")).await;
    for id in 1..=2 {
        send(
            &mut s,
            &publish_packet(0x04, "rm/t", Some(id), Some(&[0]), b"x"),
        )
        .await;
        assert_eq!(read_packet(&mut s).await.map(|p| p[0]), Some(0x50));
    }
    send(
        &mut s,
        &publish_packet(0x0C, "rm/t", Some(2), Some(&[0]), b"x"),
    )
    .await;
    assert_eq!(
        read_packet(&mut s).await.map(|p| p[0]),
        Some(0x50),
        "PUBREC for the resend"
    );
    send(&mut s, &ack_packet(0x62, 1)).await;
    assert_eq!(read_packet(&mut s).await, Some(ack_packet(0x70, 1)));
}

async fn qos2_publish_resent_after_reconnect_is_delivered_once(level: u8) {
    let server = start_server().await;
    let mut sub = <v4::Client as TestClient>::connect(server.mqtt, "sub").await;
    sub.subscribe("again/2", 2).await;
    let connect = connect_level(level, "pub", false, 3600);
    let (mut s, _) = raw_client(server.mqtt, &connect).await;
    send(
        &mut s,
        &publish_packet(0x04, "again/2", Some(7), empty_props(level), b"m"),
    )
    .await;
    assert_eq!(read_packet(&mut s).await, Some(ack_packet(0x50, 7)));
    drop(s); // PUBREC "lost": the client resends on its resumed session
    let (mut s, connack) = raw_client(server.mqtt, &connect).await;
    assert_eq!(connack[2], resumed_flags(level));
    send(
        &mut s,
        &publish_packet(0x0C, "again/2", Some(7), empty_props(level), b"m"),
    )
    .await;
    assert_eq!(read_packet(&mut s).await, Some(ack_packet(0x50, 7)));
    send(&mut s, &ack_packet(0x62, 7)).await;
    assert_eq!(read_packet(&mut s).await, Some(ack_packet(0x70, 7)));
    assert_eq!(sub.recv().await.payload, b"m");
    sub.expect_no_message().await;
}

#[tokio::test]
async fn qos2_publish_resent_after_reconnect_is_delivered_once_v311() {
    qos2_publish_resent_after_reconnect_is_delivered_once(4).await;
}

#[tokio::test]
async fn qos2_publish_resent_after_reconnect_is_delivered_once_v5() {
    qos2_publish_resent_after_reconnect_is_delivered_once(5).await;
}

async fn large_payload_is_delivered_intact(level: u8) {
    let server = start_server().await;
    let mut sub = raw_subscriber(server.mqtt, level, "sub", "big/t", 1).await;
    let (mut s, _) = raw_client(server.mqtt, &connect_level(level, "pub", true, 0)).await;
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    send(
        &mut s,
        &publish_packet(0x02, "big/t", Some(1), empty_props(level), &payload),
    )
    .await;
    assert_eq!(read_packet(&mut s).await, Some(ack_packet(0x40, 1)));
    let p = read_publish(&mut sub, level).await;
    assert!(
        p.payload == payload,
        "payload of {} bytes differs",
        p.payload.len()
    );
}

#[tokio::test]
async fn large_payload_is_delivered_intact_v311() {
    large_payload_is_delivered_intact(4).await;
}

#[tokio::test]
async fn large_payload_is_delivered_intact_v5() {
    large_payload_is_delivered_intact(5).await;
}

v31_cases!(
    clients: [
        qos0_message_is_delivered,
        qos1_message_is_acknowledged_and_delivered_once,
        qos2_message_completes_and_is_delivered_once,
        messages_on_one_topic_arrive_in_publish_order,
        delivery_qos_is_the_lower_of_publish_and_subscription,
    ],
    levels: [
        qos1_publish_is_acknowledged_with_its_packet_id,
        inbound_qos2_flow_is_pubrec_then_pubcomp,
        outbound_qos2_flow_is_publish_pubrec_pubrel_pubcomp,
        qos2_publish_resent_with_dup_before_pubrel_is_delivered_once,
        qos2_packet_id_is_reusable_after_pubcomp,
        unacknowledged_messages_are_resent_with_dup_on_reconnect,
        pubrel_is_resent_on_reconnect_when_pubcomp_was_missing,
        unacknowledged_deliveries_have_distinct_nonzero_packet_ids,
        qos2_publish_resent_after_reconnect_is_delivered_once,
        large_payload_is_delivered_intact,
    ],
);
