//! MQTT and STOMP over WebSocket: how bytes map to messages (packets split
//! across messages, several in one, text and binary), ping, oversize messages,
//! close frames, and that the listener's login rules apply.

mod common;

use common::stomp::StompClient;
use common::ws::{self, expect_close, next, read_binary, send_binary, send_text, Got};
use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

const CONNACK_OK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

#[tokio::test]
async fn mqtt_connect_split_across_three_messages_is_one_packet() {
    let server = start_server().await;
    let mut ws = ws::open(server.ws, "/mqtt", &["mqtt"]).await;
    let connect = connect_v311("split");
    send_binary(&mut ws, &connect[..1]).await;
    send_binary(&mut ws, &connect[1..5]).await;
    send_binary(&mut ws, &connect[5..]).await;
    assert_eq!(read_binary(&mut ws, 4).await, CONNACK_OK);
}

#[tokio::test]
async fn mqtt_several_packets_in_one_message_are_all_handled() {
    let server = start_server().await;
    let mut ws = ws::open(server.ws, "/", &["mqtt"]).await;
    let mut batch = connect_v311("batch");
    batch.extend(subscribe_packet(1, None, &[("ws/batch", 1)]));
    batch.extend(publish_packet(0x02, "ws/batch", Some(2), None, b"hello"));
    send_binary(&mut ws, &batch).await;
    let expected_publish = publish_packet(0x02, "ws/batch", Some(1), None, b"hello");
    // CONNACK, SUBACK, PUBACK and the delivery, in however many messages.
    let got = read_binary(&mut ws, 4 + 5 + 4 + expected_publish.len()).await;
    assert_eq!(got[..4], CONNACK_OK);
    assert_eq!(got[4..9], [0x90, 0x03, 0x00, 0x01, 0x01], "SUBACK");
    let rest = &got[9..];
    let puback = ack_packet(0x40, 2);
    let (first, second) = rest.split_at(if rest[0] == 0x40 { 4 } else { rest.len() - 4 });
    let (ack, publish) = if rest[0] == 0x40 {
        (first, second)
    } else {
        (second, first)
    };
    assert_eq!(ack, puback, "PUBACK");
    let publish = parse_publish(publish, false);
    assert_eq!(
        (publish.topic.as_str(), publish.payload.as_slice()),
        ("ws/batch", &b"hello"[..])
    );
}

#[tokio::test]
async fn mqtt_packet_boundary_inside_a_message() {
    // The end of one packet and the start of the next share a message.
    let server = start_server().await;
    let mut ws = ws::open(server.ws, "/", &["mqttv3.1"]).await;
    let mut bytes = connect_v311("mix");
    bytes.extend(subscribe_packet(1, None, &[("ws/mix", 0)]));
    let cut = bytes.len() - 3;
    send_binary(&mut ws, &bytes[..cut]).await;
    send_binary(&mut ws, &bytes[cut..]).await;
    let got = read_binary(&mut ws, 9).await;
    assert_eq!(got[..4], CONNACK_OK);
    assert_eq!(got[4..], [0x90, 0x03, 0x00, 0x01, 0x00]);
}

#[tokio::test]
async fn mqtt_over_websocket_reaches_tcp_subscribers_and_back() {
    let server = start_server().await;
    let mut tcp = raw_subscriber(server.mqtt, 4, "tcp-sub", "ws/cross", 0).await;
    let mut ws = ws::open(server.ws, "/mqtt", &["mqtt"]).await;
    let mut bytes = connect_v311("ws-pub");
    bytes.extend(subscribe_packet(1, None, &[("ws/back", 0)]));
    send_binary(&mut ws, &bytes).await;
    read_binary(&mut ws, 9).await;
    send_binary(
        &mut ws,
        &publish_packet(0, "ws/cross", None, None, b"from ws"),
    )
    .await;
    let packet = read_packet(&mut tcp).await.expect("delivery over TCP");
    assert_eq!(parse_publish(&packet, false).payload, b"from ws");
    send(
        &mut tcp,
        &publish_packet(0, "ws/back", None, None, b"from tcp"),
    )
    .await;
    let expected = publish_packet(0, "ws/back", None, None, b"from tcp");
    assert_eq!(read_binary(&mut ws, expected.len()).await, expected);
}

#[tokio::test]
async fn mqtt_text_message_is_refused_with_close_1003() {
    let server = start_server().await;
    let mut ws = ws::open(server.ws, "/mqtt", &["mqtt"]).await;
    send_text(&mut ws, "CONNECT").await;
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 1003, "{reason}");
    assert!(reason.contains("binary"), "{reason}");
}

#[tokio::test]
async fn oversize_message_closes_with_1009() {
    let server = start_server_with(|s| s.websocket.max_message_size = 1024).await;
    let mut ws = ws::open(server.ws, "/mqtt", &["mqtt"]).await;
    send_binary(&mut ws, &connect_v311("big")).await;
    assert_eq!(read_binary(&mut ws, 4).await, CONNACK_OK);
    let big = publish_packet(0, "ws/big", None, None, &[7u8; 2048]);
    // The server may close while the message is still being written.
    let _ = ws.send(Message::binary(big)).await;
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("too big"), "{reason}");
}

#[tokio::test]
async fn one_mib_message_passes_over_websocket_by_default() {
    // As over TCP (limits.max_packet_size 4 MiB): a 1 MiB payload plus its
    // PUBLISH header is over 1 MiB, so the WebSocket limit must allow more.
    let server = start_server().await;
    let mut ws = ws::open(server.ws, "/mqtt", &["mqtt"]).await;
    let mut bytes = connect_v311("mib");
    bytes.extend(subscribe_packet(1, None, &[("ws/mib", 0)]));
    send_binary(&mut ws, &bytes).await;
    assert_eq!(read_binary(&mut ws, 9).await[..4], CONNACK_OK);
    let payload: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let publish = publish_packet(0, "ws/mib", None, None, &payload);
    assert!(publish.len() > 1024 * 1024);
    send_binary(&mut ws, &publish).await;
    // The delivery comes back whole, in however many messages.
    assert!(read_binary(&mut ws, publish.len()).await == publish);
}

#[tokio::test]
async fn ping_is_answered_with_pong() {
    let server = start_server().await;
    let mut ws = ws::open(server.ws, "/mqtt", &["mqtt"]).await;
    send_binary(&mut ws, &connect_v311("ping")).await;
    assert_eq!(read_binary(&mut ws, 4).await, CONNACK_OK);
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("ping");
    match next(&mut ws).await {
        Got::Pong(payload) => assert_eq!(payload, b"are you there"),
        other => panic!("expected a pong, got {other:?}"),
    }
}

#[tokio::test]
async fn protocol_error_ends_with_a_close_frame() {
    let server = start_server().await;
    let mut ws = ws::open(server.ws, "/mqtt", &["mqtt"]).await;
    send_binary(&mut ws, &connect_v311("twice")).await;
    assert_eq!(read_binary(&mut ws, 4).await, CONNACK_OK);
    send_binary(&mut ws, &connect_v311("twice")).await;
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 1000, "{reason}");
    assert!(!reason.is_empty());
}

#[tokio::test]
async fn server_shutdown_sends_close_1001_with_reason() {
    let mut server = start_server().await;
    let mut ws = ws::open(server.ws, "/stomp", &[]).await;
    send_text(&mut ws, "CONNECT\naccept-version:1.2\nhost:x\n\n\0").await;
    match next(&mut ws).await {
        Got::Text(t) => assert!(t.starts_with("CONNECTED\n"), "{t}"),
        other => panic!("expected CONNECTED, got {other:?}"),
    }
    let running = server.server.take().expect("server");
    let stopping = tokio::spawn(running.shutdown(WAIT));
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 1001, "{reason}");
    assert_eq!(reason, "server shutting down");
    drop(ws);
    stopping.await.expect("shutdown");
}

#[tokio::test]
async fn anonymous_refused_where_the_listener_does_not_allow_it() {
    let server = start_server_with(|s| s.websocket.allow_anonymous = Some(false)).await;
    let mut ws = ws::open(server.ws, "/mqtt", &["mqtt"]).await;
    send_binary(&mut ws, &connect_v311("anon")).await;
    let connack = read_binary(&mut ws, 4).await;
    assert_eq!(connack[..3], [0x20, 0x02, 0x00]);
    assert_ne!(connack[3], 0, "anonymous CONNECT accepted");
    let mut stomp = ws::open(server.ws, "/stomp", &["v12.stomp"]).await;
    send_text(&mut stomp, "CONNECT\naccept-version:1.2\nhost:x\n\n\0").await;
    match next(&mut stomp).await {
        Got::Text(t) => assert!(t.starts_with("ERROR\n"), "{t}"),
        other => panic!("expected ERROR, got {other:?}"),
    }
}

/// Text from the server until it contains `needle`.
async fn text_until(ws: &mut ws::Ws, needle: &str) -> String {
    let mut all = String::new();
    while !all.contains(needle) {
        match next(ws).await {
            Got::Text(t) => all.push_str(&t),
            other => panic!("expected text, got {other:?} after {all:?}"),
        }
    }
    all
}

#[tokio::test]
async fn stomp_frames_in_text_and_binary_messages_split_and_batched() {
    let server = start_server().await;
    let (mut ws, chosen) = ws::try_open(server.ws, "/", &["v10.stomp", "v12.stomp"], None)
        .await
        .expect("accepted");
    assert_eq!(
        chosen.as_deref(),
        Some("v10.stomp"),
        "first known offer wins"
    );
    // CONNECT split over a text and a binary message.
    send_text(&mut ws, "CONNECT\naccept-version:1.1,1.2\n").await;
    send_binary(&mut ws, b"host:x\n\n\0").await;
    let connected = text_until(&mut ws, "\0").await;
    assert!(connected.starts_with("CONNECTED\n"), "{connected}");
    // SUBSCRIBE and a SEND in one message, the SEND's body split into the next.
    send_text(
        &mut ws,
        "SUBSCRIBE\nid:0\ndestination:/topic/ws/stomp\nreceipt:r1\n\n\0SEND\ndestination:/topic/ws/stomp\n\nhel",
    )
    .await;
    send_text(&mut ws, "lo\0").await;
    let got = text_until(&mut ws, "hello\0").await;
    assert!(got.contains("RECEIPT\nreceipt-id:r1"), "{got}");
    assert!(got.contains("MESSAGE\n"), "{got}");
}

#[tokio::test]
async fn stomp_message_with_non_utf8_body_arrives_as_binary() {
    let server = start_server().await;
    let mut ws = ws::open(server.ws, "/", &["v12.stomp"]).await;
    send_text(&mut ws, "CONNECT\naccept-version:1.2\nhost:x\n\n\0").await;
    text_until(&mut ws, "\0").await;
    send_text(
        &mut ws,
        "SUBSCRIBE\nid:0\ndestination:/topic/ws/bin\nreceipt:r1\n\n\0",
    )
    .await;
    text_until(&mut ws, "receipt-id:r1").await;
    let mut publisher = StompClient::connect(server.stomp).await;
    publisher
        .send("/topic/ws/bin", &[0xff, 0x00, 0xfe], &[])
        .await;
    match next(&mut ws).await {
        Got::Binary(b) => {
            assert!(b.starts_with(b"MESSAGE\n"), "{b:02x?}");
            assert!(b.windows(3).any(|w| w == [0xff, 0x00, 0xfe]), "{b:02x?}");
        }
        other => panic!("expected a binary MESSAGE, got {other:?}"),
    }
}
