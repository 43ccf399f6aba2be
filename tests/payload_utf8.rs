//! `limits.check_utf8_payloads`: a PUBLISH whose payload format indicator
//! says UTF-8 while the payload is not is refused with PUBACK / PUBREC 0x99
//! and a reason string (the connection stays); turned off, it passes.

mod common;

use common::*;

/// A QoS `qos` PUBLISH (id 1) to "t" declared UTF-8 (property 0x01 = 1) whose payload is not.
fn declared_utf8_but_not(qos: u8) -> Vec<u8> {
    publish_packet(
        qos << 1,
        "t",
        Some(1),
        Some(&props(&[0x01, 0x01])),
        &[0xFF, 0xFE],
    )
}

/// The reason code of a v5 PUBACK / PUBREC (0 when it has none).
fn ack_reason(packet: &[u8]) -> u8 {
    packet_body(packet).get(2).copied().unwrap_or(0)
}

#[tokio::test]
async fn a_payload_declared_utf8_that_is_not_gets_0x99_and_the_connection_stays_v5() {
    let server = start_server().await;
    let (mut s, _) = raw_client(server.mqtt, &connect_level(5, "utf8", true, 0)).await;
    for (qos, ack_type) in [(1u8, 0x40u8), (2, 0x50)] {
        send(&mut s, &declared_utf8_but_not(qos)).await;
        let ack = read_packet(&mut s).await.expect("an ack");
        assert_eq!(ack[0], ack_type, "{ack:02x?}");
        assert_eq!(ack_reason(&ack), 0x99, "{ack:02x?}");
        let text = String::from_utf8_lossy(&ack);
        assert!(
            text.contains("not valid UTF-8"),
            "no reason string: {ack:02x?}"
        );
    }
    expect_alive(&mut s).await;
}

#[tokio::test]
async fn with_the_check_off_a_payload_declared_utf8_passes_v5() {
    let server = start_server_with(|s| s.limits.check_utf8_payloads = false).await;
    let (mut s, _) = raw_client(server.mqtt, &connect_level(5, "utf8", true, 0)).await;
    send(&mut s, &declared_utf8_but_not(1)).await;
    let ack = read_packet(&mut s).await.expect("PUBACK");
    assert_eq!(ack[0], 0x40, "{ack:02x?}");
    // Accepted: "no matching subscribers" (0x10), not 0x99.
    assert_eq!(ack_reason(&ack), 0x10, "{ack:02x?}");
}
