//! Bad input, as raw bytes: each gets the answer the spec gives (a reason code
//! where the version has one) and the connection closes; afterwards a healthy
//! client on the same server still works.

mod common;

use common::*;

/// Connects at `level` (3, 4 or 5), sends `bad` and asserts the close: 3.x gets no
/// answer, 5.0 a DISCONNECT with `v5_reason`. Then checks the broker still serves.
async fn rejected_on(server: &TestServer, level: u8, bad: &[u8], v5_reason: u8) {
    let (mut s, connack) = raw_client(server.mqtt, &connect_level(level, "bad", true, 0)).await;
    assert_eq!(connack[3], 0x00);
    send(&mut s, bad).await;
    let bytes = expect_closed(&mut s).await;
    if level == 5 {
        assert_eq!(
            disconnect_reason(&bytes),
            v5_reason,
            "{bad:02x?} answered {bytes:02x?}"
        );
    } else {
        assert!(bytes.is_empty(), "{bad:02x?} answered {bytes:02x?}");
    }
    assert_broker_healthy(server.mqtt).await;
}

async fn rejected(level: u8, bad: &[u8], v5_reason: u8) {
    let server = start_server().await;
    rejected_on(&server, level, bad, v5_reason).await;
}

#[tokio::test]
async fn first_packet_not_connect_closes_the_connection() {
    let server = start_server().await;
    let not_connect = [
        vec![0xC0, 0x00],
        publish_packet(0, "a", None, None, b"x"),
        subscribe_packet(1, None, &[("a", 0)]),
        vec![0xE0, 0x00],
    ];
    for bad in not_connect {
        let mut s = raw_connect(server.mqtt).await;
        let (bytes, closed) = send_raw_until_close(&mut s, &bad).await;
        assert!(
            closed && bytes.is_empty(),
            "{bad:02x?} answered {bytes:02x?}"
        );
    }
    assert_broker_healthy(server.mqtt).await;
}

#[tokio::test]
async fn second_connect_is_a_protocol_error_v311() {
    rejected(4, &connect_v311("again"), 0).await;
}

#[tokio::test]
async fn second_connect_is_a_protocol_error_v5() {
    rejected(5, &connect_v5("again"), 0x82).await;
}

/// Fixed headers whose flags break the rules: reserved bits, QoS 3, DUP on QoS 0.
fn wrong_flags(level: u8) -> Vec<Vec<u8>> {
    let props = empty_props(level).unwrap_or_default();
    let mut sub_body = vec![0x00, 0x01];
    sub_body.extend_from_slice(props);
    sub_body.extend(mqtt_str("a"));
    sub_body.push(0);
    vec![
        frame(0x80, &sub_body),                               // SUBSCRIBE must be 0x82
        vec![0x60, 0x02, 0x00, 0x01],                         // PUBREL must be 0x62
        vec![0xC1, 0x00],                                     // PINGREQ with a flag
        publish_packet(0x06, "a", Some(1), Some(props), b""), // QoS 3
        publish_packet(0x08, "a", None, Some(props), b""),    // DUP on QoS 0
    ]
}

#[tokio::test]
async fn wrong_fixed_header_flags_close_the_connection_v311() {
    let server = start_server().await;
    for bad in wrong_flags(4) {
        rejected_on(&server, 4, &bad, 0).await;
    }
}

#[tokio::test]
async fn wrong_fixed_header_flags_are_malformed_0x81_v5() {
    let server = start_server().await;
    for bad in wrong_flags(5) {
        rejected_on(&server, 5, &bad, 0x81).await;
    }
}

#[tokio::test]
async fn subscription_options_with_reserved_bits_close_the_connection() {
    let server = start_server().await;
    rejected_on(&server, 4, &subscribe_packet(1, None, &[("a", 0x04)]), 0).await;
    rejected_on(
        &server,
        5,
        &subscribe_packet(1, Some(&[0]), &[("a", 0x40)]),
        0x81,
    )
    .await;
}

#[tokio::test]
async fn connect_with_the_reserved_flag_set_is_refused() {
    let server = start_server().await;
    let mut s = raw_connect(server.mqtt).await;
    let bad = connect_packet("MQTT", 4, 0x03, 60, None, &mqtt_str("r"));
    let (bytes, closed) = send_raw_until_close(&mut s, &bad).await;
    assert!(
        closed && bytes.is_empty(),
        "3.1.1 closes without CONNACK: {bytes:02x?}"
    );
    let mut s = raw_connect(server.mqtt).await;
    let bad = connect_packet("MQTT", 5, 0x03, 60, Some(&[0]), &mqtt_str("r"));
    let (bytes, closed) = send_raw_until_close(&mut s, &bad).await;
    assert!(closed);
    assert_eq!(
        bytes,
        vec![0x20, 0x03, 0x00, 0x81, 0x00],
        "5.0 CONNACK malformed packet"
    );
    assert_broker_healthy(server.mqtt).await;
}

#[tokio::test]
async fn malformed_remaining_length_closes_the_connection() {
    let bad = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
    rejected(4, &bad, 0).await;
    rejected(5, &bad, 0x81).await;
}

#[tokio::test]
async fn field_longer_than_the_packet_closes_the_connection() {
    // Topic length 10 in a 3-byte body.
    let bad = [0x30, 0x03, 0x00, 0x0A, b'a'];
    rejected(4, &bad, 0).await;
    rejected(5, &bad, 0x81).await;
}

#[tokio::test]
async fn packet_over_the_maximum_size_closes_the_connection() {
    let server = start_server_with(|s| s.limits.max_packet_size = 1024).await;
    let big = [b'x'; 2000];
    rejected_on(&server, 4, &publish_packet(0, "big", None, None, &big), 0).await;
    // Only the fixed header is needed to refuse it: the body never arrives.
    rejected_on(&server, 4, &[0x30, 0xFF, 0x7F], 0).await;
    rejected_on(&server, 5, &[0x30, 0xFF, 0x7F], 0x95).await;
}

#[tokio::test]
async fn wildcard_in_a_publish_topic_closes_the_connection() {
    for topic in ["a/+", "a/#", "+"] {
        rejected(4, &publish_packet(0, topic, None, None, b"x"), 0).await;
        rejected(5, &publish_packet(0, topic, None, Some(&[0]), b"x"), 0x90).await;
    }
}

fn publish_with_raw_topic(topic: &[u8], v5: bool) -> Vec<u8> {
    let mut body = mqtt_str(topic);
    if v5 {
        body.push(0);
    }
    body.extend_from_slice(b"payload");
    frame(0x30, &body)
}

#[tokio::test]
async fn invalid_utf8_in_a_topic_closes_the_connection() {
    for topic in [&[b'a', 0xC3, 0x28][..], &[0xED, 0xA0, 0x80], &[b'a', 0x00]] {
        rejected(4, &publish_with_raw_topic(topic, false), 0).await;
        rejected(5, &publish_with_raw_topic(topic, true), 0x81).await;
    }
}

#[tokio::test]
async fn invalid_utf8_in_the_client_id_is_refused() {
    let server = start_server().await;
    let id = mqtt_str([0xFF, 0xFE]);
    let mut s = raw_connect(server.mqtt).await;
    let (bytes, closed) =
        send_raw_until_close(&mut s, &connect_packet("MQTT", 4, 0x02, 60, None, &id)).await;
    assert!(closed && bytes.is_empty(), "{bytes:02x?}");
    let mut s = raw_connect(server.mqtt).await;
    let (bytes, closed) = send_raw_until_close(
        &mut s,
        &connect_packet("MQTT", 5, 0x02, 60, Some(&[0]), &id),
    )
    .await;
    assert!(closed);
    assert_eq!(bytes, vec![0x20, 0x03, 0x00, 0x81, 0x00]);
    assert_broker_healthy(server.mqtt).await;
}

#[tokio::test]
async fn packet_id_zero_closes_the_connection() {
    let server = start_server().await;
    rejected_on(
        &server,
        4,
        &publish_packet(0x02, "t", Some(0), None, b"x"),
        0,
    )
    .await;
    rejected_on(&server, 4, &subscribe_packet(0, None, &[("t", 0)]), 0).await;
    rejected_on(
        &server,
        5,
        &publish_packet(0x02, "t", Some(0), Some(&[0]), b"x"),
        0x82,
    )
    .await;
    rejected_on(
        &server,
        5,
        &subscribe_packet(0, Some(&[0]), &[("t", 0)]),
        0x82,
    )
    .await;
}

#[tokio::test]
async fn subscribe_without_filters_closes_the_connection() {
    rejected(4, &[0x82, 0x02, 0x00, 0x01], 0).await;
    rejected(5, &[0x82, 0x03, 0x00, 0x01, 0x00], 0x82).await;
}

#[tokio::test]
async fn pubrel_for_an_unknown_packet_id_is_completed_v311() {
    let server = start_server().await;
    let (mut s, _) = raw_client(server.mqtt, &connect_v311("rel")).await;
    send(&mut s, &ack_packet(0x62, 42)).await;
    assert_eq!(read_packet(&mut s).await, Some(ack_packet(0x70, 42)));
    expect_alive(&mut s).await;
}

#[tokio::test]
async fn pubrel_for_an_unknown_packet_id_gets_pubcomp_0x92_and_the_connection_stays_v5() {
    let server = start_server().await;
    let (mut s, _) = raw_client(server.mqtt, &connect_v5("rel")).await;
    send(&mut s, &ack_packet(0x62, 42)).await;
    assert_eq!(
        read_packet(&mut s).await,
        Some(vec![0x70, 0x03, 0x00, 42, 0x92])
    );
    expect_alive(&mut s).await;
}

#[tokio::test]
async fn topic_alias_out_of_range_is_refused_with_0x94_v5() {
    let server = start_server().await;
    for alias in [0u16, 65] {
        let [hi, lo] = alias.to_be_bytes();
        let bad = publish_packet(0, "t", None, Some(&props(&[0x23, hi, lo])), b"x");
        rejected_on(&server, 5, &bad, 0x94).await;
    }
}

#[tokio::test]
async fn unknown_topic_alias_is_a_protocol_error_v5() {
    let bad = publish_packet(0, "", None, Some(&props(&[0x23, 0x00, 0x05])), b"x");
    rejected(5, &bad, 0x82).await;
}

#[tokio::test]
async fn shared_subscription_with_no_local_is_a_protocol_error_v5() {
    rejected(
        5,
        &subscribe_packet(1, Some(&[0]), &[("$share/g/t", 0x05)]),
        0x82,
    )
    .await;
}

#[tokio::test]
async fn auth_is_refused() {
    // AUTH does not exist in 3.1.1; in 5.0 it needs an authentication method from CONNECT.
    rejected(4, &[0xF0, 0x00], 0).await;
    rejected(5, &[0xF0, 0x00], 0x82).await;
}

#[tokio::test]
async fn server_only_packets_from_a_client_close_the_connection() {
    let server = start_server().await;
    rejected_on(&server, 4, &[0x20, 0x02, 0x00, 0x00], 0).await;
    rejected_on(&server, 4, &[0xD0, 0x00], 0).await;
    rejected_on(&server, 5, &[0x20, 0x03, 0x00, 0x00, 0x00], 0x82).await;
    rejected_on(&server, 5, &[0xD0, 0x00], 0x82).await;
}

#[tokio::test]
async fn exceeding_the_server_receive_maximum_is_refused_with_0x93_v5() {
    let server = start_server_with(|s| s.limits.receive_maximum = 2).await;
    let (mut s, _) = raw_client(server.mqtt, &connect_v5("eager")).await;
    for id in 1..=2 {
        send(
            &mut s,
            &publish_packet(0x04, "t", Some(id), Some(&[0]), b"x"),
        )
        .await;
        assert_eq!(
            read_packet(&mut s).await.map(|p| p[0]),
            Some(0x50),
            "PUBREC"
        );
    }
    send(
        &mut s,
        &publish_packet(0x04, "t", Some(3), Some(&[0]), b"x"),
    )
    .await;
    let bytes = expect_closed(&mut s).await;
    assert_eq!(disconnect_reason(&bytes), 0x93, "{bytes:02x?}");
    assert_broker_healthy(server.mqtt).await;
}

/// The 3.1.1 cases whose input is invalid in MQTT 3.1 too: the connection
/// closes without an answer, as in 3.1.1.
#[tokio::test]
async fn bad_input_closes_a_3_1_connection_as_it_does_a_3_1_1_one() {
    let server = start_server_with(|s| s.limits.max_packet_size = 1024).await;
    let mut bad = vec![
        connect_packet("MQIsdp", 3, 0x02, 60, None, &mqtt_str("again")),
        vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        vec![0x30, 0x03, 0x00, 0x0A, b'a'],
        publish_packet(0, "big", None, None, &[b'x'; 2000]),
        vec![0x82, 0x02, 0x00, 0x01],
    ];
    for topic in ["a/+", "a/#", "+"] {
        bad.push(publish_packet(0, topic, None, None, b"x"));
    }
    for topic in [&[b'a', 0xC3, 0x28][..], &[0xED, 0xA0, 0x80], &[b'a', 0x00]] {
        bad.push(publish_with_raw_topic(topic, false));
    }
    for packet in bad {
        rejected_on(&server, 3, &packet, 0).await;
    }
}

#[tokio::test]
async fn pubrel_for_an_unknown_packet_id_is_completed_v31() {
    let server = start_server().await;
    let (mut s, _) = raw_client(server.mqtt, &connect_level(3, "rel", true, 0)).await;
    send(&mut s, &ack_packet(0x62, 42)).await;
    assert_eq!(read_packet(&mut s).await, Some(ack_packet(0x70, 42)));
    expect_alive(&mut s).await;
}

/// QoS 0 PUBLISHes to a topic nobody reads, `total` bytes in all: what a client
/// that keeps sending after the broker's last word has in flight.
fn junk_publishes(total: usize) -> Vec<u8> {
    let one = publish_packet(0x00, "junk", None, Some(&[0x00]), &[0u8; 60_000]);
    one.repeat(total / one.len() + 1)
}

/// Everything the server sends until it closes, resets or WAIT passes.
async fn packets_until_end(s: &mut tokio::net::TcpStream) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    while let Some(packet) = read_packet(s).await {
        packets.push(packet);
    }
    packets
}

/// The reason code must reach a client that is still sending when the broker
/// ends the connection. The client's receive window is full of deliveries it
/// has not read yet, so the DISCONNECT is still in the broker's send queue when
/// it closes; the client keeps writing, so the broker's receive buffer holds
/// unread bytes. A plain close then makes the kernel reset the connection and
/// drop the DISCONNECT; a graceful one (FIN after it, then reading until the
/// client is done) lets the client read it.
#[tokio::test]
async fn disconnect_reason_reaches_a_client_that_keeps_sending_v5() {
    use tokio::io::AsyncWriteExt;
    let server = start_server_with(|s| s.limits.receive_maximum = 1).await;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut s = socket.connect(server.mqtt).await.expect("connect");
    send(&mut s, &connect_level(5, "busy", true, 0)).await;
    let connack = read_packet(&mut s).await.expect("CONNACK");
    assert_eq!(connack[3], 0x00, "refused: {connack:02x?}");
    send(&mut s, &subscribe_packet(1, Some(&[0x00]), &[("fill", 0)])).await;
    assert_eq!(read_packet(&mut s).await, Some(suback_bytes(5, 1, &[0])));

    // Deliveries the client does not read: more than its receive window holds.
    let (mut publisher, _) = raw_client(server.mqtt, &connect_v311("filler")).await;
    for id in 1..=16u16 {
        send(
            &mut publisher,
            &publish_packet(0x02, "fill", Some(id), None, &[7u8; 4096]),
        )
        .await;
        assert_eq!(
            read_packet(&mut publisher).await,
            Some(ack_packet(0x40, id))
        );
    }
    let session = server
        .server
        .as_ref()
        .expect("server")
        .router()
        .session("busy");
    let session = session.expect("session");
    eventually("the deliveries taken for writing", || {
        session.pending_len() == 0
    })
    .await;

    // Two QoS 2 messages unreleased with a receive maximum of 1, then more.
    let mut bytes = publish_packet(0x04, "t", Some(1), Some(&[0x00]), b"1");
    bytes.extend(publish_packet(0x04, "t", Some(2), Some(&[0x00]), b"2"));
    bytes.extend(junk_publishes(8 << 20));
    // Fails when the broker resets the connection; either way the client reads on.
    let _ = s.write_all(&bytes).await;
    let packets = packets_until_end(&mut s).await;
    let last = packets.last().expect("packets");
    assert!(
        last[0] == 0xE0 && disconnect_reason(last) == 0x93,
        "{} packets, the last starts {:02x?}: no DISCONNECT 0x93",
        packets.len(),
        &last[..last.len().min(8)]
    );
    assert_broker_healthy(server.mqtt).await;
}

/// A refusing CONNACK reaches a client that sends on after its CONNECT; its
/// writes are not reset while the broker lingers, and the connection ends with
/// a FIN.
#[tokio::test]
async fn refusing_connack_reaches_a_client_that_keeps_sending() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start_server_with(|s| s.limits.max_connections = 1).await;
    let (_first, _) = raw_client(server.mqtt, &connect_v311("first")).await;
    for (connect, refusal) in [
        (connect_v311("second"), vec![0x20, 0x02, 0x00, 0x03]),
        (connect_v5("second"), vec![0x20, 0x03, 0x00, 0x97, 0x00]),
    ] {
        let mut s = raw_connect(server.mqtt).await;
        let mut bytes = connect;
        bytes.extend(junk_publishes(1 << 20));
        send(&mut s, &bytes).await;
        assert_eq!(read_packet(&mut s).await, Some(refusal));
        // Still sending after the refusal: no reset while the broker lingers.
        let more = s.write_all(&junk_publishes(1 << 20)).await;
        assert!(more.is_ok(), "write after the CONNACK: {more:?}");
        let mut rest = [0u8; 16];
        let end = tokio::time::timeout(WAIT, s.read(&mut rest)).await;
        assert!(
            matches!(end, Ok(Ok(0))),
            "the connection should end with a FIN: {end:?}"
        );
    }
}
