//! Graceful shutdown on SIGTERM: clients are told (MQTT 5 DISCONNECT 0x8B,
//! STOMP ERROR), the store is flushed, the process exits 0, and persistent
//! QoS 1 messages that were in flight come back after the restart.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::process::{data_dir, free_port, Broker, Conn};
use common::stomp::StompClient;
use tern_mqtt::{
    Packet, Properties, ProtocolVersion, Publish, QoS, Subscribe, SubscribeFilter,
    SubscriptionOptions,
};
use tern_stomp::Command;

const WAIT: Duration = Duration::from_secs(10);

async fn subscribe(conn: &mut Conn, filter: &str) {
    conn.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            },
        }],
        properties: Properties::default(),
    }))
    .await
    .expect("send SUBSCRIBE");
    assert!(matches!(conn.recv(WAIT).await, Some(Packet::SubAck(_))));
}

fn publish(id: u16, payload: String) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "work/items".into(),
        packet_id: Some(id),
        properties: Properties::default(),
        payload: Bytes::from(payload),
    })
}

#[tokio::test]
async fn sigterm_says_goodbye_flushes_the_store_and_loses_nothing_in_flight() {
    let dir = data_dir("shutdown");
    let (mqtt_port, stomp_port) = (free_port(), free_port());
    let mut broker = Broker::start(mqtt_port, stomp_port, &dir).await;
    // A persistent 5.0 subscriber that receives but never acknowledges.
    let (mut worker, _) = Conn::open_with(
        broker.mqtt,
        ProtocolVersion::V5,
        "worker",
        false,
        Some(3600),
    )
    .await
    .expect("connect worker");
    subscribe(&mut worker, "work/#").await;
    let mut stomp = StompClient::connect(broker.stomp).await;
    let (mut publisher, _) = Conn::open(broker.mqtt, "producer", true)
        .await
        .expect("connect producer");
    let count = 50u16;
    for id in 1..=count {
        publisher
            .send(&publish(id, format!("item-{id}")))
            .await
            .expect("send");
        assert!(
            matches!(publisher.recv(WAIT).await, Some(Packet::PubAck(_))),
            "PUBACK {id}"
        );
    }
    // All 50 reach the worker, unacknowledged (in flight up to the window, the rest queued).
    let mut seen = 0;
    while seen < 20 {
        match worker.recv(WAIT).await {
            Some(Packet::Publish(_)) => seen += 1,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    assert_eq!(broker.terminate(), Some(0), "exit 0 after SIGTERM");
    // The 5.0 client was told why.
    loop {
        match worker.recv(WAIT).await {
            Some(Packet::Publish(_)) => continue,
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason, 0x8B, "server shutting down");
                break;
            }
            other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
        }
    }
    let error = stomp.expect_error().await;
    assert_eq!(error.command, Command::Error);

    let broker = Broker::start(mqtt_port, stomp_port, &dir).await;
    let (mut worker, present) = Conn::open_with(
        broker.mqtt,
        ProtocolVersion::V5,
        "worker",
        false,
        Some(3600),
    )
    .await
    .expect("reconnect worker");
    assert!(present);
    let mut got = Vec::new();
    while got.len() < usize::from(count) {
        match worker.recv(WAIT).await {
            Some(Packet::Publish(p)) => {
                got.push(String::from_utf8_lossy(&p.payload).into_owned());
                worker
                    .send(&Packet::PubAck(tern_mqtt::Ack {
                        packet_id: p.packet_id.unwrap_or(0),
                        reason: 0,
                        properties: Properties::default(),
                    }))
                    .await;
            }
            other => panic!(
                "expected the unacknowledged messages again, got {other:?} after {}",
                got.len()
            ),
        }
    }
    let expected: Vec<String> = (1..=count).map(|id| format!("item-{id}")).collect();
    assert_eq!(
        got, expected,
        "every acknowledged message, in order, after the restart"
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
