//! Persistent sessions: subscriptions kept, messages queued for offline clients
//! up to `limits.max_queued_messages` with the overflow policy applied; 5.0
//! session expiry.

mod common;

use common::*;
use tern::core::session::OverflowPolicy;

async fn persistent_session_keeps_its_subscriptions<C: TestClient>() {
    let server = start_server().await;
    let (mut sub, present) = C::connect_persistent(server.mqtt, "sub").await;
    assert!(!present, "first connection has no session");
    sub.subscribe("s/t", 1).await;
    sub.disconnect().await;
    let (mut sub, present) = C::connect_persistent(server.mqtt, "sub").await;
    assert!(present || !C::HAS_SESSION_PRESENT, "session resumed");
    let mut publisher = C::connect(server.mqtt, "pub").await;
    publisher.publish("s/t", 1, false, b"kept").await;
    assert_eq!(sub.recv().await.payload, b"kept");
}

#[tokio::test]
async fn persistent_session_keeps_its_subscriptions_v311() {
    persistent_session_keeps_its_subscriptions::<v4::Client>().await;
}

#[tokio::test]
async fn persistent_session_keeps_its_subscriptions_v5() {
    persistent_session_keeps_its_subscriptions::<v5::Client>().await;
}

async fn clean_start_discards_the_previous_session<C: TestClient>() {
    let server = start_server().await;
    let (mut sub, _) = C::connect_persistent(server.mqtt, "sub").await;
    sub.subscribe("s/t", 1).await;
    sub.disconnect().await;
    let mut sub = C::connect(server.mqtt, "sub").await;
    let mut publisher = C::connect(server.mqtt, "pub").await;
    publisher.publish("s/t", 1, false, b"x").await;
    sub.expect_no_message().await;
    sub.disconnect().await;
    let (_sub, present) = C::connect_persistent(server.mqtt, "sub").await;
    assert!(!present);
}

#[tokio::test]
async fn clean_start_discards_the_previous_session_v311() {
    clean_start_discards_the_previous_session::<v4::Client>().await;
}

#[tokio::test]
async fn clean_start_discards_the_previous_session_v5() {
    clean_start_discards_the_previous_session::<v5::Client>().await;
}

async fn takeover_of_a_persistent_session_keeps_the_session<C: TestClient>() {
    let server = start_server().await;
    let (mut first, _) = C::connect_persistent(server.mqtt, "sub").await;
    first.subscribe("s/t", 1).await;
    let (mut second, present) = C::connect_persistent(server.mqtt, "sub").await;
    assert!(
        present || !C::HAS_SESSION_PRESENT,
        "the live session is handed over"
    );
    let mut publisher = C::connect(server.mqtt, "pub").await;
    publisher.publish("s/t", 1, false, b"to the new one").await;
    assert_eq!(second.recv().await.payload, b"to the new one");
    assert_eq!(
        first.closed_by_server().await,
        vec![],
        "the old connection gets nothing"
    );
}

#[tokio::test]
async fn takeover_of_a_persistent_session_keeps_the_session_v311() {
    takeover_of_a_persistent_session_keeps_the_session::<v4::Client>().await;
}

#[tokio::test]
async fn takeover_of_a_persistent_session_keeps_the_session_v5() {
    takeover_of_a_persistent_session_keeps_the_session::<v5::Client>().await;
}

/// A persistent subscriber to "off/t" (QoS 2) that went away; returns once it is offline.
async fn offline_subscriber<C: TestClient>(server: &TestServer) {
    let (mut sub, _) = C::connect_persistent(server.mqtt, "sub").await;
    sub.subscribe("off/t", 2).await;
    sub.disconnect().await;
    assert!(!server.is_connected("sub"));
}

/// Reconnects the subscriber and returns the payloads it receives until the marker.
async fn received_after_reconnect<C: TestClient>(
    server: &TestServer,
    publisher: &mut C,
) -> Vec<Vec<u8>> {
    let (mut sub, present) = C::connect_persistent(server.mqtt, "sub").await;
    assert!(present || !C::HAS_SESSION_PRESENT);
    publisher.publish("off/t", 1, false, b"marker").await;
    let mut got = Vec::new();
    loop {
        let m = sub.recv().await;
        if m.payload == b"marker" {
            return got;
        }
        got.push(m.payload);
    }
}

async fn messages_for_an_offline_client_are_queued_in_order<C: TestClient>() {
    let server = start_server().await;
    offline_subscriber::<C>(&server).await;
    let mut publisher = C::connect(server.mqtt, "pub").await;
    for (i, qos) in [1u8, 2, 1, 2].into_iter().enumerate() {
        publisher
            .publish("off/t", qos, false, &[b'0' + i as u8])
            .await;
    }
    let got = received_after_reconnect(&server, &mut publisher).await;
    assert_eq!(
        got,
        vec![b"0".to_vec(), b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]
    );
}

#[tokio::test]
async fn messages_for_an_offline_client_are_queued_in_order_v311() {
    messages_for_an_offline_client_are_queued_in_order::<v4::Client>().await;
}

#[tokio::test]
async fn messages_for_an_offline_client_are_queued_in_order_v5() {
    messages_for_an_offline_client_are_queued_in_order::<v5::Client>().await;
}

/// Tern keeps only QoS 1/2 messages for offline clients (3.1.1 and 5.0 let a server drop QoS 0).
async fn qos0_messages_for_an_offline_client_are_not_queued<C: TestClient>() {
    let server = start_server().await;
    offline_subscriber::<C>(&server).await;
    let mut publisher = C::connect(server.mqtt, "pub").await;
    publisher.publish("off/t", 0, false, b"dropped").await;
    publisher.publish("off/t", 1, false, b"queued").await;
    let got = received_after_reconnect(&server, &mut publisher).await;
    assert_eq!(got, vec![b"queued".to_vec()]);
}

#[tokio::test]
async fn qos0_messages_for_an_offline_client_are_not_queued_v311() {
    qos0_messages_for_an_offline_client_are_not_queued::<v4::Client>().await;
}

#[tokio::test]
async fn qos0_messages_for_an_offline_client_are_not_queued_v5() {
    qos0_messages_for_an_offline_client_are_not_queued::<v5::Client>().await;
}

/// Queue bound 3; five messages published while the subscriber is offline.
async fn overflow<C: TestClient>(policy: OverflowPolicy) -> Vec<Vec<u8>> {
    let server = start_server_with(|s| {
        s.limits.max_queued_messages = 3;
        s.limits.queue_overflow = policy;
    })
    .await;
    offline_subscriber::<C>(&server).await;
    let mut publisher = C::connect(server.mqtt, "pub").await;
    for i in 1..=5u8 {
        publisher.publish("off/t", 1, false, &[b'0' + i]).await;
    }
    received_after_reconnect(&server, &mut publisher).await
}

fn payloads(s: &str) -> Vec<Vec<u8>> {
    s.bytes().map(|b| vec![b]).collect()
}

#[tokio::test]
async fn offline_queue_overflow_drop_oldest_keeps_the_newest_messages_v311() {
    assert_eq!(
        overflow::<v4::Client>(OverflowPolicy::DropOldest).await,
        payloads("345")
    );
}

#[tokio::test]
async fn offline_queue_overflow_drop_oldest_keeps_the_newest_messages_v5() {
    assert_eq!(
        overflow::<v5::Client>(OverflowPolicy::DropOldest).await,
        payloads("345")
    );
}

#[tokio::test]
async fn offline_queue_overflow_drop_new_keeps_the_oldest_messages_v311() {
    assert_eq!(
        overflow::<v4::Client>(OverflowPolicy::DropNew).await,
        payloads("123")
    );
}

#[tokio::test]
async fn offline_queue_overflow_drop_new_keeps_the_oldest_messages_v5() {
    assert_eq!(
        overflow::<v5::Client>(OverflowPolicy::DropNew).await,
        payloads("123")
    );
}

#[tokio::test]
async fn v31_connack_never_sets_session_present() {
    let server = start_server().await;
    let connect = connect_packet("MQIsdp", 3, 0x00, 60, None, &mqtt_str("old"));
    for _ in 0..2 {
        let (mut s, connack) = raw_client(server.mqtt, &connect).await;
        assert_eq!(
            connack,
            vec![0x20, 0x02, 0x00, 0x00],
            "3.1 has no session-present flag"
        );
        send(&mut s, &[0xE0, 0x00]).await;
        expect_closed(&mut s).await;
    }
    assert!(
        server.has_session("old"),
        "the 3.1 session persists all the same"
    );
}

/// Connects "exp" at 5.0 without clean start and the given session expiry, subscribes, drops.
async fn session_with_expiry(server: &TestServer, expiry: u32) {
    let connect = connect_level(5, "exp", false, expiry);
    let mut s = raw_subscriber_with(server, &connect).await;
    send(&mut s, &[0xE0, 0x00]).await;
    expect_closed(&mut s).await;
}

async fn raw_subscriber_with(server: &TestServer, connect: &[u8]) -> tokio::net::TcpStream {
    let (mut s, connack) = raw_client(server.mqtt, connect).await;
    assert_eq!(connack[3], 0x00);
    send(
        &mut s,
        &subscribe_packet(1, empty_props(5), &[("exp/t", 1)]),
    )
    .await;
    assert_eq!(read_packet(&mut s).await, Some(suback_bytes(5, 1, &[1])));
    s
}

async fn resumes(server: &TestServer) -> bool {
    let (_s, connack) = raw_client(server.mqtt, &connect_level(5, "exp", false, 60)).await;
    connack[2] == 0x01
}

#[tokio::test]
async fn session_is_resumed_within_its_expiry_interval_v5() {
    let server = start_server().await;
    session_with_expiry(&server, 60).await;
    assert!(resumes(&server).await);
}

#[tokio::test]
async fn session_is_gone_after_its_expiry_interval_v5() {
    let server = start_server().await;
    session_with_expiry(&server, 1).await;
    assert!(server.has_session("exp"), "kept for 1 s");
    eventually("session expiry", || !server.has_session("exp")).await;
    assert!(!resumes(&server).await);
}

#[tokio::test]
async fn session_expiry_0_ends_the_session_at_disconnect_v5() {
    let server = start_server().await;
    session_with_expiry(&server, 0).await;
    assert!(!server.has_session("exp"));
    assert!(!resumes(&server).await);
}

#[tokio::test]
async fn disconnect_with_session_expiry_0_ends_the_session_v5() {
    let server = start_server().await;
    let mut s = raw_subscriber_with(&server, &connect_level(5, "exp", false, 60)).await;
    // DISCONNECT, reason 0, properties: session expiry interval 0.
    send(&mut s, &[0xE0, 0x07, 0x00, 0x05, 0x11, 0, 0, 0, 0]).await;
    expect_closed(&mut s).await;
    assert!(!resumes(&server).await);
}

#[tokio::test]
async fn disconnect_cannot_set_a_session_expiry_after_0_at_connect_v5() {
    let server = start_server().await;
    let mut s = raw_subscriber_with(&server, &connect_level(5, "exp", false, 0)).await;
    send(&mut s, &[0xE0, 0x07, 0x00, 0x05, 0x11, 0, 0, 0, 60]).await;
    let bytes = expect_closed(&mut s).await;
    assert_eq!(disconnect_reason(&bytes), 0x82, "{bytes:02x?}");
    assert!(!resumes(&server).await, "the session ended with expiry 0");
}

#[tokio::test]
async fn offline_queue_overflow_drop_oldest_keeps_the_newest_messages_v31() {
    assert_eq!(
        overflow::<v31::Client>(OverflowPolicy::DropOldest).await,
        payloads("345")
    );
}

#[tokio::test]
async fn offline_queue_overflow_drop_new_keeps_the_oldest_messages_v31() {
    assert_eq!(
        overflow::<v31::Client>(OverflowPolicy::DropNew).await,
        payloads("123")
    );
}

v31_cases!(
    clients: [
        persistent_session_keeps_its_subscriptions,
        clean_start_discards_the_previous_session,
        takeover_of_a_persistent_session_keeps_the_session,
        messages_for_an_offline_client_are_queued_in_order,
        qos0_messages_for_an_offline_client_are_not_queued,
    ],
    levels: [],
);
