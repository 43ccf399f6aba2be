//! MQTT ⇄ STOMP through the one routing core: payloads, properties ⇄ headers,
//! QoS, retained messages, wildcards and queues, both ways.

mod common;

use bytes::Bytes;
use common::stomp::{body, StompClient};
use common::*;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use tern_stomp::Command;

#[tokio::test]
async fn mqtt_publish_reaches_a_stomp_subscriber_at_every_qos() {
    let server = start_server().await;
    let mut stomp = StompClient::connect(server.stomp).await;
    stomp.subscribe("s", "/topic/sensors/+/temp", "auto").await;
    let mut mqtt = <v4::Client as TestClient>::connect(server.mqtt, "dev-1").await;
    for qos in 0..=2u8 {
        let payload = [b'q', b'0' + qos, 0, 0xff];
        mqtt.publish("sensors/room1/temp", qos, false, &payload)
            .await;
        let m = stomp.message().await;
        assert_eq!(m.header("destination"), Some("/topic/sensors/room1/temp"));
        assert_eq!(&m.body[..], &payload[..], "qos {qos}");
    }
}

#[tokio::test]
async fn mqtt5_properties_become_stomp_headers() {
    let server = start_server().await;
    let mut stomp = StompClient::connect(server.stomp).await;
    stomp
        .subscribe("s", "/topic/req/#", "client-individual")
        .await;
    let mut mqtt = <v5::Client as TestClient>::connect(server.mqtt, "dev-5").await;
    let properties = PublishProperties {
        content_type: Some("application/json".into()),
        response_topic: Some("replies/dev-5".into()),
        correlation_data: Some(Bytes::from_static(b"corr-1")),
        user_properties: vec![("unit".into(), "C".into()), ("unit".into(), "F".into())],
        message_expiry_interval: Some(3600),
        ..Default::default()
    };
    mqtt.publish_with("req/temp", 1, false, b"{\"t\":21}", properties)
        .await;
    let m = stomp.message().await;
    assert_eq!(m.header("content-type"), Some("application/json"));
    assert_eq!(m.header("reply-to"), Some("/topic/replies/dev-5"));
    assert_eq!(m.header("correlation-id"), Some("corr-1"));
    let units: Vec<&str> = m
        .headers
        .iter()
        .filter(|(n, _)| n == "unit")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(units, ["C", "F"]);
    assert!(m.header("expires").is_some());
    assert_eq!(body(&m), "{\"t\":21}");
}

#[tokio::test]
async fn stomp_send_reaches_mqtt5_with_properties_and_the_requested_qos() {
    let server = start_server().await;
    let mut mqtt = <v5::Client as TestClient>::connect(server.mqtt, "app-5").await;
    mqtt.subscribe("cmd/#", 2).await;
    let mut stomp = StompClient::connect(server.stomp).await;
    stomp
        .send(
            "/topic/cmd/dev-1",
            b"on\0off",
            &[
                ("content-type", "text/plain"),
                ("reply-to", "/topic/acks/dev-1"),
                ("correlation-id", "c-42"),
                ("x-origin", "web"),
            ],
        )
        .await;
    let p = mqtt.recv_publish().await;
    assert_eq!(&p.topic[..], b"cmd/dev-1");
    assert_eq!(&p.payload[..], b"on\0off");
    assert_eq!(p.qos as u8, 1, "a SEND enters the core as QoS 1");
    let props = p.properties.expect("properties");
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.response_topic.as_deref(), Some("acks/dev-1"));
    assert_eq!(props.correlation_data.as_deref(), Some(&b"c-42"[..]));
    assert_eq!(
        props.user_properties,
        vec![("x-origin".to_string(), "web".to_string())]
    );
    for (header, expected) in [("0", 0u8), ("2", 2)] {
        stomp
            .send("/topic/cmd/dev-1", b"q", &[("qos", header)])
            .await;
        assert_eq!(mqtt.recv_publish().await.qos as u8, expected);
    }
    let soon = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 30_000)
        .to_string();
    stomp
        .send("/topic/cmd/dev-1", b"e", &[("expires", &soon)])
        .await;
    let expiry = mqtt
        .recv_publish()
        .await
        .properties
        .and_then(|p| p.message_expiry_interval);
    assert!(matches!(expiry, Some(29..=30)), "{expiry:?}");
}

#[tokio::test]
async fn stomp_send_reaches_an_mqtt_3_subscriber() {
    let server = start_server().await;
    let mut mqtt = <v4::Client as TestClient>::connect(server.mqtt, "old-dev").await;
    mqtt.subscribe("lights/+", 1).await;
    let mut stomp = StompClient::connect_version(server.stomp, "1.0").await;
    stomp.send("/topic/lights/kitchen", b"on", &[]).await;
    let m = mqtt.recv().await;
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice(), m.qos),
        ("lights/kitchen", &b"on"[..], 1)
    );
}

#[tokio::test]
async fn retained_mqtt_messages_reach_a_new_stomp_subscriber() {
    let server = start_server().await;
    let mut mqtt = <v4::Client as TestClient>::connect(server.mqtt, "dev-r").await;
    mqtt.publish("status/dev-r", 1, true, b"online").await;
    let mut stomp = StompClient::connect(server.stomp).await;
    stomp.subscribe("s", "/topic/status/#", "auto").await;
    let m = stomp.message().await;
    assert_eq!(m.header("destination"), Some("/topic/status/dev-r"));
    assert_eq!(m.header("retain"), Some("true"));
    assert_eq!(body(&m), "online");
}

#[tokio::test]
async fn retained_stomp_messages_reach_a_new_mqtt_subscriber() {
    let server = start_server().await;
    let mut stomp = StompClient::connect(server.stomp).await;
    stomp
        .send("/topic/config/site", b"v2", &[("retain", "true")])
        .await;
    let mut mqtt = <v4::Client as TestClient>::connect(server.mqtt, "dev-c").await;
    mqtt.subscribe("config/#", 1).await;
    let m = mqtt.recv().await;
    assert!(m.retain);
    assert_eq!(m.payload, b"v2");
}

#[tokio::test]
async fn queues_are_shared_by_mqtt_and_stomp() {
    let server = start_server().await;
    // MQTT producer → STOMP consumer.
    let mut mqtt = <v4::Client as TestClient>::connect(server.mqtt, "producer").await;
    mqtt.publish("$queue/jobs", 1, false, b"from-mqtt").await;
    let mut stomp = StompClient::connect(server.stomp).await;
    stomp
        .subscribe("q", "/queue/jobs", "client-individual")
        .await;
    let m = stomp.message().await;
    assert_eq!(m.header("destination"), Some("/queue/jobs"));
    assert_eq!(body(&m), "from-mqtt");
    stomp.ack_message(Command::Ack, &m, &[]).await;
    stomp
        .send_with_receipt(common::stomp::frame(
            Command::Unsubscribe,
            &[("id", "q")],
            b"",
        ))
        .await;
    // STOMP producer → MQTT consumer.
    let mut consumer = <v4::Client as TestClient>::connect(server.mqtt, "worker").await;
    consumer.subscribe("$queue/jobs", 1).await;
    stomp.send("/queue/jobs", b"from-stomp", &[]).await;
    let m = consumer.recv().await;
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        ("$queue/jobs", &b"from-stomp"[..])
    );
}

#[tokio::test]
async fn mqtt_and_stomp_consumers_compete_for_one_queue() {
    let server = start_server().await;
    let mut stomp = StompClient::connect(server.stomp).await;
    stomp.subscribe("q", "/queue/mixed", "auto").await;
    let mut mqtt = <v4::Client as TestClient>::connect(server.mqtt, "mixed-worker").await;
    mqtt.subscribe("$queue/mixed", 1).await;
    let mut producer = StompClient::connect(server.stomp).await;
    for i in 0..6 {
        producer
            .send("/queue/mixed", i.to_string().as_bytes(), &[])
            .await;
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(body(&stomp.message().await));
        seen.push(String::from_utf8(mqtt.recv().await.payload).unwrap());
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2", "3", "4", "5"]);
    stomp.expect_nothing().await;
    mqtt.expect_no_message().await;
}

#[tokio::test]
async fn queue_message_unacknowledged_by_an_mqtt_consumer_is_redelivered() {
    let server = start_server().await;
    let mut raw = raw_subscriber(server.mqtt, 4, "forgetful", "$queue/redo", 1).await;
    let mut producer = StompClient::connect(server.stomp).await;
    producer.send("/queue/redo", b"important", &[]).await;
    let p = read_publish(&mut raw, 4).await;
    assert_eq!(p.payload, b"important");
    drop(raw); // no PUBACK, clean session: the message goes back to the queue
    let mut stomp = StompClient::connect(server.stomp).await;
    stomp.subscribe("q", "/queue/redo", "auto").await;
    assert_eq!(body(&stomp.message().await), "important");
}
