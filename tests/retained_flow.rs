//! Retained messages sent on SUBSCRIBE flow at the subscriber's pace: a retained
//! set many times larger than the session queue's byte limit arrives whole
//! (rumqttc 3.1.1 and 5.0, STOMP), and a STOMP client-ack subscription gets no
//! more than its unacknowledged window at once.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use common::stomp::StompClient;
use common::*;
use tern::core::message::{Message, QoS};
use tern_stomp::Command;

const RETAINED: usize = 2_500;
const PAYLOAD: usize = 8 * 1024;
/// 1 MiB of queue for 20 MB of retained messages.
const QUEUE_BYTES: usize = 1024 * 1024;

async fn server_with_retained(count: usize, payload: usize) -> TestServer {
    let server = start_server_with(|s| s.limits.max_queued_bytes = QUEUE_BYTES).await;
    let router = server.server.as_ref().expect("running").router();
    for i in 0..count {
        router.publish(Arc::new(Message::new(
            format!("fleet/{i}"),
            Bytes::from(vec![b'r'; payload]),
            QoS::AtLeastOnce,
            true,
        )));
    }
    assert_eq!(router.retained_count(), count);
    server
}

fn assert_nothing_dropped(server: &TestServer) {
    let router = server.server.as_ref().expect("running").router();
    assert_eq!(router.stats.deliveries_dropped.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn v311_hash_subscriber_gets_every_retained_message_beyond_the_queue_byte_limit() {
    let server = server_with_retained(RETAINED, PAYLOAD).await;
    let mut options = v4::options(server.mqtt, "retained-reader-3");
    options.set_max_packet_size(64 * 1024, 64 * 1024);
    let (mut client, _) = v4::Client::start(options).await;
    client
        .client
        .subscribe("#", v4::qos(1))
        .await
        .expect("subscribe");
    let mut topics = HashSet::new();
    while topics.len() < RETAINED {
        let publish = client.recv_publish().await;
        assert!(publish.retain);
        assert_eq!(publish.payload.len(), PAYLOAD);
        topics.insert(publish.topic.clone());
    }
    assert_eq!(topics.len(), RETAINED);
    assert_nothing_dropped(&server);
}

#[tokio::test]
async fn v5_qos0_hash_subscriber_gets_every_retained_message_beyond_the_queue_byte_limit() {
    let server = server_with_retained(RETAINED, PAYLOAD).await;
    let mut options = v5::options(server.mqtt, "retained-reader-5");
    options.set_max_packet_size(Some(64 * 1024));
    let (mut client, _) = v5::Client::start(options).await;
    client
        .client
        .subscribe("fleet/#", v5::qos(0))
        .await
        .expect("subscribe");
    let mut topics = HashSet::new();
    while topics.len() < RETAINED {
        let publish = client.recv_publish().await;
        assert!(publish.retain);
        topics.insert(publish.topic.to_vec());
    }
    assert_nothing_dropped(&server);
}

#[tokio::test]
async fn stomp_subscriber_gets_every_retained_message_beyond_the_queue_byte_limit() {
    let server = server_with_retained(RETAINED, PAYLOAD).await;
    let mut client = StompClient::connect(server.stomp).await;
    client.subscribe("all", "/topic/fleet/#", "auto").await;
    let mut destinations = HashSet::new();
    while destinations.len() < RETAINED {
        let message = client.message().await;
        assert_eq!(message.header("subscription"), Some("all"));
        destinations.insert(
            message
                .header("destination")
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_nothing_dropped(&server);
}

#[tokio::test]
async fn stomp_client_ack_subscriber_gets_retained_messages_within_its_unacked_window() {
    let server = start_server_with(|s| s.limits.stomp_max_unacked = 10).await;
    let router = server.server.as_ref().expect("running").router();
    for i in 0..35 {
        router.publish(Arc::new(Message::new(
            format!("w/{i}"),
            Bytes::from_static(b"v"),
            QoS::AtLeastOnce,
            true,
        )));
    }
    let mut client = StompClient::connect(server.stomp).await;
    client
        .subscribe("w", "/topic/w/#", "client-individual")
        .await;
    let mut received = HashSet::new();
    while received.len() < 35 {
        let mut window = Vec::new();
        for _ in 0..10.min(35 - received.len()) {
            window.push(client.message().await);
        }
        // No more than the window until something is acknowledged.
        client.expect_nothing().await;
        for message in &window {
            received.insert(
                message
                    .header("destination")
                    .unwrap_or_default()
                    .to_string(),
            );
            client.ack_message(Command::Ack, message, &[]).await;
        }
    }
    assert_eq!(received.len(), 35);
}
