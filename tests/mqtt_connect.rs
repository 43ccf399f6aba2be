//! CONNECT / CONNACK behaviour with real clients (rumqttc v4 and v5) and raw bytes:
//! protocol versions on one listener, client id rules, session takeover,
//! keep-alive and the connect timeout.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, DisconnectReasonCode};
use rumqttc::v5::{ConnectionError, StateError};
use tokio::io::AsyncWriteExt;

/// Empty 5.0 property block.
const NO_PROPS: &[u8] = &[0x00];

#[tokio::test]
async fn v311_client_connects_and_gets_connack_accepted() {
    let server = start_server().await;
    let mut s = raw_connect(server.mqtt).await;
    s.write_all(&connect_v311("c1")).await.unwrap();
    let connack = read_packet(&mut s).await.expect("connack");
    assert_eq!(connack, vec![0x20, 0x02, 0x00, 0x00]);
}

#[tokio::test]
async fn v31_mqisdp_client_connects_and_gets_connack_accepted() {
    let server = start_server().await;
    let connect = connect_packet("MQIsdp", 3, 0x02, 60, None, &mqtt_str("c31"));
    let (mut s, connack) = raw_client(server.mqtt, &connect).await;
    assert_eq!(connack, vec![0x20, 0x02, 0x00, 0x00]);
    expect_alive(&mut s).await;
}

#[tokio::test]
async fn v5_client_connects_and_connack_announces_server_limits() {
    let server = start_server().await;
    let (_c, ack) = v5::Client::start(v5::options(server.mqtt, "c5")).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert!(!ack.session_present);
    let props = ack.properties.expect("CONNACK properties");
    assert_eq!(props.receive_max, Some(1024));
    assert_eq!(props.max_packet_size, Some(4 * 1024 * 1024));
    assert_eq!(props.topic_alias_max, Some(64));
    assert_eq!(props.assigned_client_identifier, None);
}

#[tokio::test]
async fn v31_v311_and_v5_clients_exchange_messages_on_one_listener() {
    let server = start_server().await;
    let connect = connect_packet("MQIsdp", 3, 0x02, 60, None, &mqtt_str("mix31"));
    let (mut c31, _) = raw_client(server.mqtt, &connect).await;
    send(&mut c31, &subscribe_packet(1, None, &[("mix/t", 1)])).await;
    assert_eq!(
        read_packet(&mut c31).await,
        Some(vec![0x90, 0x03, 0x00, 0x01, 0x01])
    );
    let mut c311 = <v4::Client as TestClient>::connect(server.mqtt, "mix311").await;
    c311.subscribe("mix/t", 1).await;
    let mut c5 = <v5::Client as TestClient>::connect(server.mqtt, "mix5").await;
    c5.subscribe("mix/t", 1).await;

    c5.publish("mix/t", 1, false, b"from5").await;
    let p = parse_publish(&read_packet(&mut c31).await.expect("PUBLISH"), false);
    assert_eq!(
        (p.topic.as_str(), p.qos, &p.payload[..]),
        ("mix/t", 1, &b"from5"[..])
    );
    send(&mut c31, &ack_packet(0x40, p.packet_id.expect("packet id"))).await;
    assert_eq!(c311.recv().await.payload, b"from5");
    assert_eq!(c5.recv().await.payload, b"from5");

    send(
        &mut c31,
        &publish_packet(0x00, "mix/t", None, None, b"from31"),
    )
    .await;
    for m in [c311.recv().await, c5.recv().await] {
        assert_eq!(
            (m.topic.as_str(), m.payload.as_slice()),
            ("mix/t", &b"from31"[..])
        );
    }
    let p = parse_publish(&read_packet(&mut c31).await.expect("own PUBLISH"), false);
    assert_eq!(p.payload, b"from31");
}

#[tokio::test]
async fn unsupported_protocol_level_is_refused_with_0x01_in_3x_format() {
    let server = start_server().await;
    for (name, level) in [("MQTT", 3), ("MQIsdp", 4), ("MQTT", 2), ("MQIsdp", 5)] {
        let mut s = raw_connect(server.mqtt).await;
        let connect = connect_packet(name, level, 0x02, 60, None, &mqtt_str("old"));
        let (bytes, closed) = send_raw_until_close(&mut s, &connect).await;
        assert_eq!(bytes, vec![0x20, 0x02, 0x00, 0x01], "{name} level {level}");
        assert!(closed, "{name} level {level}: connection left open");
    }
}

/// A client cannot parse a 5.0 CONNACK it did not ask for: an MQTT level above 5
/// gets the 3.1.1 form with 0x01, whether or not the rest reads as 5.0.
#[tokio::test]
async fn unsupported_protocol_level_above_5_is_refused_with_0x01_in_3x_format() {
    let server = start_server().await;
    for (level, props) in [
        (6, Some(NO_PROPS)),
        (6, None),
        (7, Some(NO_PROPS)),
        (255, None),
    ] {
        let mut s = raw_connect(server.mqtt).await;
        let connect = connect_packet("MQTT", level, 0x02, 60, props, &mqtt_str("new"));
        let (bytes, closed) = send_raw_until_close(&mut s, &connect).await;
        assert_eq!(bytes, vec![0x20, 0x02, 0x00, 0x01], "level {level}");
        assert!(closed, "level {level}: connection left open");
    }
}

#[tokio::test]
async fn empty_client_id_with_clean_session_is_accepted_v311() {
    let server = start_server().await;
    let (mut s, connack) = raw_client(server.mqtt, &connect_v311("")).await;
    assert_eq!(connack, vec![0x20, 0x02, 0x00, 0x00]);
    expect_alive(&mut s).await;
}

#[tokio::test]
async fn empty_client_id_with_clean_start_gets_an_assigned_client_identifier_v5() {
    let server = start_server().await;
    let (_a, ack_a) = v5::Client::start(v5::options(server.mqtt, "")).await;
    let (_b, ack_b) = v5::Client::start(v5::options(server.mqtt, "")).await;
    let id_a = ack_a.properties.and_then(|p| p.assigned_client_identifier);
    let id_b = ack_b.properties.and_then(|p| p.assigned_client_identifier);
    let (id_a, id_b) = (id_a.expect("assigned id"), id_b.expect("assigned id"));
    assert!(!id_a.is_empty());
    assert_ne!(id_a, id_b, "each client gets its own id");
}

#[tokio::test]
async fn empty_client_id_without_clean_session_is_refused_with_0x02_v311() {
    let server = start_server().await;
    let mut s = raw_connect(server.mqtt).await;
    let connect = connect_packet("MQTT", 4, 0x00, 60, None, &mqtt_str(""));
    let (bytes, closed) = send_raw_until_close(&mut s, &connect).await;
    assert_eq!(bytes, vec![0x20, 0x02, 0x00, 0x02]);
    assert!(closed);
}

#[tokio::test]
async fn empty_client_id_is_refused_with_0x02_v31() {
    let server = start_server().await;
    let mut s = raw_connect(server.mqtt).await;
    let connect = connect_packet("MQIsdp", 3, 0x02, 60, None, &mqtt_str(""));
    let (bytes, closed) = send_raw_until_close(&mut s, &connect).await;
    assert_eq!(bytes, vec![0x20, 0x02, 0x00, 0x02]);
    assert!(closed);
}

#[tokio::test]
async fn empty_client_id_without_clean_start_is_refused_with_0x85_v5() {
    let server = start_server().await;
    let mut s = raw_connect(server.mqtt).await;
    let connect = connect_packet("MQTT", 5, 0x00, 60, Some(NO_PROPS), &mqtt_str(""));
    let (bytes, closed) = send_raw_until_close(&mut s, &connect).await;
    assert_eq!(bytes, vec![0x20, 0x03, 0x00, 0x85, 0x00]);
    assert!(closed);
}

#[tokio::test]
async fn second_connection_with_same_client_id_closes_the_first_v311() {
    let server = start_server().await;
    let mut first = <v4::Client as TestClient>::connect(server.mqtt, "twin").await;
    let mut second = <v4::Client as TestClient>::connect(server.mqtt, "twin").await;
    let (seen, _) = first.until_closed().await;
    assert!(
        seen.is_empty(),
        "3.1.1 has no DISCONNECT from the server: {seen:?}"
    );
    second.subscribe("twin/t", 1).await;
    second.publish("twin/t", 1, false, b"still here").await;
    assert_eq!(second.recv().await.payload, b"still here");
}

#[tokio::test]
async fn second_connection_with_same_client_id_gets_the_first_disconnect_0x8e_v5() {
    let server = start_server().await;
    let mut first = <v5::Client as TestClient>::connect(server.mqtt, "twin5").await;
    let mut second = <v5::Client as TestClient>::connect(server.mqtt, "twin5").await;
    let (_, error) = first.until_closed().await;
    assert!(
        matches!(
            error,
            ConnectionError::MqttState(StateError::ServerDisconnect {
                reason_code: DisconnectReasonCode::SessionTakenOver,
                ..
            })
        ),
        "{error:?}"
    );
    second.subscribe("twin5/t", 1).await;
    second.publish("twin5/t", 1, false, b"still here").await;
    assert_eq!(second.recv().await.payload, b"still here");
}

/// CONNECT with keep-alive 1 s for `level` (3 = MQIsdp, 4, 5).
fn connect_keep_alive_1s(level: u8, id: &str) -> Vec<u8> {
    match level {
        3 => connect_packet("MQIsdp", 3, 0x02, 1, None, &mqtt_str(id)),
        4 => connect_packet("MQTT", 4, 0x02, 1, None, &mqtt_str(id)),
        _ => connect_packet("MQTT", 5, 0x02, 1, Some(NO_PROPS), &mqtt_str(id)),
    }
}

/// Connects with keep-alive 1 s, stays silent; returns what the server sent before closing.
async fn silent_client_is_closed(level: u8) -> Vec<u8> {
    let server = start_server().await;
    let start = Instant::now(); // before CONNECT: the server's timer starts later
    let (mut s, _) = raw_client(server.mqtt, &connect_keep_alive_1s(level, "sleepy")).await;
    let bytes = expect_closed(&mut s).await;
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1450),
        "closed after {elapsed:?}: keep-alive is 1.5 x 1 s"
    );
    assert!(
        elapsed <= Duration::from_secs(4),
        "closed after {elapsed:?}"
    );
    assert_broker_healthy(server.mqtt).await;
    bytes
}

#[tokio::test]
async fn keep_alive_expiry_closes_the_connection_after_one_and_a_half_intervals_v31() {
    let bytes = silent_client_is_closed(3).await;
    assert!(bytes.is_empty(), "{bytes:02x?}");
}

#[tokio::test]
async fn keep_alive_expiry_closes_the_connection_after_one_and_a_half_intervals_v311() {
    let bytes = silent_client_is_closed(4).await;
    assert!(bytes.is_empty(), "{bytes:02x?}");
}

#[tokio::test]
async fn keep_alive_expiry_sends_disconnect_0x8d_v5() {
    let bytes = silent_client_is_closed(5).await;
    assert_eq!(disconnect_reason(&bytes), 0x8D, "{bytes:02x?}");
}

/// `mqtt.max_keep_alive_secs`: a client asking for more, or for 0, is held to
/// the maximum: 5.0 is told (Server Keep Alive in CONNACK), 3.x is not, and
/// either is closed after 1.5 x the maximum of silence.
async fn held_to_the_maximum_keep_alive(level: u8, asked: u16) -> (Vec<u8>, Vec<u8>) {
    let server = start_server_with(|s| s.mqtt.max_keep_alive_secs = Some(1)).await;
    let start = Instant::now();
    let props = (level == 5).then_some(NO_PROPS);
    let connect = connect_packet("MQTT", level, 0x02, asked, props, &mqtt_str("held"));
    let (mut s, connack) = raw_client(server.mqtt, &connect).await;
    let bytes = expect_closed(&mut s).await;
    let elapsed = start.elapsed();
    assert!(
        (Duration::from_millis(1450)..=Duration::from_secs(4)).contains(&elapsed),
        "asked {asked}: closed after {elapsed:?}, maximum 1 s"
    );
    (connack, bytes)
}

#[tokio::test]
async fn keep_alive_above_the_maximum_or_zero_is_held_to_it_and_told_v5() {
    for asked in [0, 100] {
        let (connack, bytes) = held_to_the_maximum_keep_alive(5, asked).await;
        assert_eq!(connack[3], 0x00, "{connack:02x?}");
        assert!(
            connack.windows(3).any(|w| w == [0x13, 0x00, 0x01]),
            "asked {asked}: no Server Keep Alive 1 in {connack:02x?}"
        );
        assert_eq!(disconnect_reason(&bytes), 0x8D, "{bytes:02x?}");
    }
}

#[tokio::test]
async fn keep_alive_above_the_maximum_or_zero_is_held_to_it_v311() {
    for asked in [0, 100] {
        let (connack, bytes) = held_to_the_maximum_keep_alive(4, asked).await;
        assert_eq!(connack, vec![0x20, 0x02, 0x00, 0x00]);
        assert!(bytes.is_empty(), "{bytes:02x?}");
    }
}

#[tokio::test]
async fn keep_alive_within_the_maximum_is_not_announced_v5() {
    let server = start_server_with(|s| s.mqtt.max_keep_alive_secs = Some(60)).await;
    let connect = connect_packet("MQTT", 5, 0x02, 30, Some(NO_PROPS), &mqtt_str("ok"));
    let (_s, connack) = raw_client(server.mqtt, &connect).await;
    assert!(
        !connack.windows(1).any(|w| w == [0x13]),
        "Server Keep Alive sent: {connack:02x?}"
    );
}

async fn pings_keep_the_connection_open(level: u8) {
    let server = start_server().await;
    let (mut s, _) = raw_client(server.mqtt, &connect_keep_alive_1s(level, "pinger")).await;
    // 4 x 0.6 s = 2.4 s, well past 1.5 s: each PINGREQ restarts the keep-alive timer.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        expect_alive(&mut s).await;
    }
}

#[tokio::test]
async fn pingreq_within_keep_alive_keeps_the_connection_open_v311() {
    pings_keep_the_connection_open(4).await;
}

#[tokio::test]
async fn pingreq_within_keep_alive_keeps_the_connection_open_v5() {
    pings_keep_the_connection_open(5).await;
}

#[tokio::test]
async fn connection_without_connect_is_closed_after_the_connect_timeout() {
    let server = start_server_with(|s| s.limits.connect_timeout_secs = 1).await;
    let start = Instant::now();
    let mut s = raw_connect(server.mqtt).await;
    let bytes = expect_closed(&mut s).await;
    assert!(bytes.is_empty(), "{bytes:02x?}");
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_broker_healthy(server.mqtt).await;
}

#[tokio::test]
async fn incomplete_connect_is_closed_after_the_connect_timeout() {
    let server = start_server_with(|s| s.limits.connect_timeout_secs = 1).await;
    let start = Instant::now();
    let mut s = raw_connect(server.mqtt).await;
    let connect = connect_v311("slow");
    send(&mut s, &connect[..5]).await;
    let bytes = expect_closed(&mut s).await;
    assert!(bytes.is_empty(), "{bytes:02x?}");
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn client_over_the_connection_limit_is_refused_with_server_unavailable() {
    let server = start_server_with(|s| s.limits.max_connections = 1).await;
    let (mut first, _) = raw_client(server.mqtt, &connect_v311("first")).await;
    let mut s = raw_connect(server.mqtt).await;
    let (bytes, closed) = send_raw_until_close(&mut s, &connect_v311("second")).await;
    assert_eq!(
        bytes,
        vec![0x20, 0x02, 0x00, 0x03],
        "3.1.1 server unavailable"
    );
    assert!(closed);
    let mut s = raw_connect(server.mqtt).await;
    let (bytes, closed) = send_raw_until_close(&mut s, &connect_v5("second")).await;
    assert_eq!(
        bytes,
        vec![0x20, 0x03, 0x00, 0x97, 0x00],
        "5.0 quota exceeded"
    );
    assert!(closed);
    expect_alive(&mut first).await;
}

#[tokio::test]
async fn packets_sent_together_with_connect_are_all_handled() {
    let server = start_server().await;
    let mut s = raw_connect(server.mqtt).await;
    let mut burst = connect_v311("eager");
    burst.extend(subscribe_packet(1, None, &[("burst/t", 1)]));
    burst.extend(publish_packet(0x02, "burst/t", Some(2), None, b"self"));
    burst.extend([0xC0, 0x00]);
    send(&mut s, &burst).await;
    assert_eq!(
        read_packet(&mut s).await,
        Some(vec![0x20, 0x02, 0x00, 0x00])
    );
    assert_eq!(read_packet(&mut s).await, Some(suback_bytes(4, 1, &[1])));
    let mut rest = Vec::new();
    for _ in 0..3 {
        rest.push(read_packet(&mut s).await.expect("packet"));
    }
    assert!(rest.contains(&ack_packet(0x40, 2)), "PUBACK: {rest:02x?}");
    assert!(rest.contains(&vec![0xD0, 0x00]), "PINGRESP: {rest:02x?}");
    let publish = rest.iter().find(|p| p[0] >> 4 == 3).expect("PUBLISH");
    assert_eq!(parse_publish(publish, false).payload, b"self");
}

#[tokio::test]
async fn packets_arriving_one_byte_at_a_time_are_handled() {
    let server = start_server().await;
    let mut sub = <v4::Client as TestClient>::connect(server.mqtt, "sub").await;
    sub.subscribe("slow/t", 1).await;
    let mut s = raw_connect(server.mqtt).await;
    let mut bytes = connect_v5("trickle");
    bytes.extend(publish_packet(0x02, "slow/t", Some(1), Some(&[0]), b"drip"));
    for b in &bytes {
        send(&mut s, std::slice::from_ref(b)).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(read_packet(&mut s).await.map(|p| p[0]), Some(0x20));
    assert_eq!(read_packet(&mut s).await, Some(ack_packet(0x40, 1)));
    assert_eq!(sub.recv().await.payload, b"drip");
}

#[tokio::test]
async fn pingreq_within_keep_alive_keeps_the_connection_open_v31() {
    pings_keep_the_connection_open(3).await;
}

#[tokio::test]
async fn second_connection_with_same_client_id_closes_the_first_v31() {
    let server = start_server().await;
    let (mut first, _) = raw_client(server.mqtt, &v31::connect_v31("twin", true)).await;
    let mut second = <v31::Client as TestClient>::connect(server.mqtt, "twin").await;
    let seen = expect_closed(&mut first).await;
    assert!(
        seen.is_empty(),
        "3.1 has no DISCONNECT from the server: {seen:02x?}"
    );
    second.subscribe("twin/t", 1).await;
    second.publish("twin/t", 1, false, b"still here").await;
    assert_eq!(second.recv().await.payload, b"still here");
}

#[tokio::test]
async fn client_over_the_connection_limit_is_refused_with_server_unavailable_v31() {
    let server = start_server_with(|s| s.limits.max_connections = 1).await;
    let (mut first, _) = raw_client(server.mqtt, &v31::connect_v31("first", true)).await;
    let mut s = raw_connect(server.mqtt).await;
    let (bytes, closed) = send_raw_until_close(&mut s, &v31::connect_v31("second", true)).await;
    assert_eq!(
        bytes,
        vec![0x20, 0x02, 0x00, 0x03],
        "3.1 server unavailable"
    );
    assert!(closed);
    expect_alive(&mut first).await;
}

#[tokio::test]
async fn packets_sent_together_with_connect_are_all_handled_v31() {
    let server = start_server().await;
    let mut s = raw_connect(server.mqtt).await;
    let mut burst = v31::connect_v31("eager", true);
    burst.extend(subscribe_packet(1, None, &[("burst/t", 1)]));
    burst.extend(publish_packet(0x02, "burst/t", Some(2), None, b"self"));
    burst.extend([0xC0, 0x00]);
    send(&mut s, &burst).await;
    assert_eq!(
        read_packet(&mut s).await,
        Some(vec![0x20, 0x02, 0x00, 0x00])
    );
    assert_eq!(read_packet(&mut s).await, Some(suback_bytes(3, 1, &[1])));
    let mut rest = Vec::new();
    for _ in 0..3 {
        rest.push(read_packet(&mut s).await.expect("packet"));
    }
    assert!(rest.contains(&ack_packet(0x40, 2)), "PUBACK: {rest:02x?}");
    assert!(rest.contains(&vec![0xD0, 0x00]), "PINGRESP: {rest:02x?}");
    let publish = rest.iter().find(|p| p[0] >> 4 == 3).expect("PUBLISH");
    assert_eq!(parse_publish(publish, false).payload, b"self");
}
