//! `limits.max_publish_rate`: an MQTT 5 client over its rate is disconnected with
//! 0x96 (message rate too high); MQTT 3.1.1 and STOMP clients are read more slowly
//! instead, and nothing they sent is lost.

mod common;

use bytes::Bytes;
use common::process::Conn;
use common::stomp::{body, StompClient};
use common::*;
use tern_mqtt::{Packet, Properties, ProtocolVersion, Publish, QoS};

const RATE: u32 = 20;

async fn limited() -> TestServer {
    start_server_with(|s| s.limits.max_publish_rate = RATE).await
}

#[tokio::test]
async fn an_mqtt5_client_over_its_rate_is_disconnected_with_0x96() {
    let server = limited().await;
    let (mut conn, _) = Conn::open_with(server.mqtt, ProtocolVersion::V5, "fast-v5", true, None)
        .await
        .expect("connect");
    for i in 0..RATE * 3 {
        let sent = conn
            .send(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: "rate/t".into(),
                packet_id: None,
                properties: Properties::default(),
                payload: Bytes::from(i.to_string()),
            }))
            .await;
        if sent.is_none() {
            break; // the broker already closed the connection
        }
    }
    match conn.recv(WAIT).await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, 0x96, "message rate too high"),
        other => panic!("expected DISCONNECT 0x96, got {other:?}"),
    }
}

#[tokio::test]
async fn an_mqtt311_client_over_its_rate_is_slowed_down_and_loses_nothing() {
    let server = limited().await;
    let mut subscriber = v4::Client::connect(server.mqtt, "sub").await;
    subscriber.subscribe("rate/#", 1).await;
    let mut publisher = v4::Client::connect(server.mqtt, "fast-v311").await;
    let total = (RATE * 2) as usize;
    for i in 0..total {
        publisher
            .publish("rate/t", 1, false, i.to_string().as_bytes())
            .await;
    }
    for i in 0..total {
        assert_eq!(subscriber.recv().await.payload, i.to_string().as_bytes());
    }
    assert!(
        server.is_connected("fast-v311"),
        "throttled, not disconnected"
    );
}

#[tokio::test]
async fn a_stomp_client_over_its_rate_is_slowed_down_and_loses_nothing() {
    let server = limited().await;
    let mut subscriber = StompClient::connect(server.stomp).await;
    subscriber.subscribe("s", "/topic/rate/s", "auto").await;
    let mut sender = StompClient::connect(server.stomp).await;
    let total = RATE * 2;
    for i in 0..total {
        sender
            .send("/topic/rate/s", i.to_string().as_bytes(), &[])
            .await;
    }
    for i in 0..total {
        assert_eq!(body(&subscriber.message().await), i.to_string());
    }
}
