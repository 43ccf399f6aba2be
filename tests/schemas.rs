//! Schema `reject` on the MQTT wire, as raw bytes where paho cannot show it:
//! a QoS 2 PUBLISH gets PUBREC 0x99 with the reason string in 5.0 (and a
//! resend with the same id is a new message); in 3.1.1 the QoS 2 flow
//! completes as if accepted and the message is dropped. The clients' view is
//! in tests/interop/test_schemas.py.

mod common;

use common::*;
use tern::config::SchemaSettings;
use tern::core::schema::{OnInvalid, SchemaKind};

const TEMPERATURE: &str = r#"{"type": "object", "required": ["temp"],
    "properties": {"temp": {"type": "number"}}}"#;

async fn server_with_schema(dir: &tempfile::TempDir) -> TestServer {
    let file = dir.path().join("temperature.json");
    std::fs::write(&file, TEMPERATURE).expect("write schema");
    start_server_with(move |s| {
        s.schema.push(SchemaSettings {
            name: "temperature".into(),
            topics: vec!["t/#".into()],
            kind: SchemaKind::JsonSchema,
            file,
            on_invalid: OnInvalid::Reject,
        })
    })
    .await
}

fn reason(packet: &[u8]) -> u8 {
    packet_body(packet).get(2).copied().unwrap_or(0)
}

#[tokio::test]
async fn a_qos2_publish_failing_a_reject_schema_gets_pubrec_0x99_v5() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server_with_schema(&dir).await;
    let (mut s, _) = raw_client(server.mqtt, &connect_level(5, "pub", true, 0)).await;
    let bad = publish_packet(0x04, "t/a", Some(7), Some(&[0x00]), br#"{"temp": "x"}"#);
    send(&mut s, &bad).await;
    let pubrec = read_packet(&mut s).await.expect("PUBREC");
    assert_eq!(pubrec[0], 0x50, "{pubrec:02x?}");
    assert_eq!(reason(&pubrec), 0x99, "{pubrec:02x?}");
    assert!(String::from_utf8_lossy(&pubrec).contains("/temp"));
    // Not accepted: the same id again is a new message, checked again.
    let good = publish_packet(0x04, "t/a", Some(7), Some(&[0x00]), br#"{"temp": 1}"#);
    send(&mut s, &good).await;
    let pubrec = read_packet(&mut s).await.expect("PUBREC");
    assert_eq!(
        reason(&pubrec),
        0x10,
        "accepted, no subscriber: {pubrec:02x?}"
    );
}

#[tokio::test]
async fn a_qos2_publish_failing_a_reject_schema_completes_and_is_dropped_v311() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server_with_schema(&dir).await;
    let mut sub = raw_subscriber(server.mqtt, 4, "sub", "t/#", 1).await;
    let (mut s, _) = raw_client(server.mqtt, &connect_level(4, "pub", true, 0)).await;
    send(&mut s, &publish_packet(0x04, "t/a", Some(7), None, b"[]")).await;
    assert_eq!(
        read_packet(&mut s).await,
        Some(vec![0x50, 0x02, 0x00, 0x07])
    );
    send(&mut s, &ack_packet(0x62, 7)).await;
    assert_eq!(
        read_packet(&mut s).await,
        Some(vec![0x70, 0x02, 0x00, 0x07])
    );
    send(
        &mut s,
        &publish_packet(0x02, "t/a", Some(8), None, br#"{"temp": 1}"#),
    )
    .await;
    assert_eq!(
        read_packet(&mut s).await,
        Some(vec![0x40, 0x02, 0x00, 0x08])
    );
    // The subscriber gets the valid one only (sent after the invalid one).
    let delivered = read_publish(&mut sub, 4).await;
    assert_eq!(delivered.payload, br#"{"temp": 1}"#);
    expect_silence(&mut sub).await;
}
