//! Will messages: published on keep-alive timeout, socket drop and protocol
//! error, not on a normal DISCONNECT; 5.0 DISCONNECT 0x04, will delay; will QoS
//! and retain honoured.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A will for a raw CONNECT.
struct Will<'a> {
    qos: u8,
    retain: bool,
    /// 5.0 will property bytes (without the length).
    properties: &'a [u8],
}

const PLAIN: Will<'static> = Will {
    qos: 0,
    retain: false,
    properties: &[],
};

/// CONNECT at `level` with a will "will/t" → "gone"; 5.0 CONNECT properties `connect_props`.
fn connect_with_will(
    level: u8,
    id: &str,
    keep_alive: u16,
    clean: bool,
    connect_props: &[u8],
    will: &Will,
) -> Vec<u8> {
    let mut flags = 0x04 | (will.qos << 3);
    if clean {
        flags |= 0x02;
    }
    if will.retain {
        flags |= 0x20;
    }
    let mut payload = mqtt_str(id);
    if level == 5 {
        payload.extend(props(will.properties));
    }
    payload.extend(mqtt_str("will/t"));
    payload.extend(mqtt_str("gone"));
    let connect_props = props(connect_props);
    let connect_props = (level == 5).then_some(&connect_props[..]);
    connect_packet(
        protocol_name(level),
        level,
        flags,
        keep_alive,
        connect_props,
        &payload,
    )
}

/// A rumqttc 3.1.1 client subscribed to the will topic.
async fn watcher(server: &TestServer) -> v4::Client {
    let mut w = <v4::Client as TestClient>::connect(server.mqtt, "watcher").await;
    w.subscribe("will/t", 2).await;
    w
}

async fn expect_will(watcher: &mut v4::Client) -> Msg {
    let m = watcher.recv().await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), ("will/t", &b"gone"[..]));
    m
}

async fn will_is_published_when_keep_alive_expires(level: u8) {
    let server = start_server().await;
    let mut w = watcher(&server).await;
    let (_s, connack) = raw_client(
        server.mqtt,
        &connect_with_will(level, "dev", 1, true, &[], &PLAIN),
    )
    .await;
    assert_eq!(connack[3], 0x00);
    expect_will(&mut w).await;
}

#[tokio::test]
async fn will_is_published_when_keep_alive_expires_v311() {
    will_is_published_when_keep_alive_expires(4).await;
}

#[tokio::test]
async fn will_is_published_when_keep_alive_expires_v5() {
    will_is_published_when_keep_alive_expires(5).await;
}

async fn will_is_published_on_a_protocol_error(level: u8) {
    let server = start_server().await;
    let mut w = watcher(&server).await;
    let (mut s, _) = raw_client(
        server.mqtt,
        &connect_with_will(level, "dev", 60, true, &[], &PLAIN),
    )
    .await;
    send(
        &mut s,
        &publish_packet(0x06, "x", Some(1), empty_props(level), b"qos 3"),
    )
    .await;
    expect_closed(&mut s).await;
    expect_will(&mut w).await;
}

#[tokio::test]
async fn will_is_published_on_a_protocol_error_v311() {
    will_is_published_on_a_protocol_error(4).await;
}

#[tokio::test]
async fn will_is_published_on_a_protocol_error_v5() {
    will_is_published_on_a_protocol_error(5).await;
}

fn v4_will_owner(server: &TestServer) -> rumqttc::MqttOptions {
    let mut o = v4::options(server.mqtt, "dev");
    o.set_last_will(rumqttc::LastWill::new(
        "will/t",
        "gone",
        rumqttc::QoS::AtLeastOnce,
        false,
    ));
    o
}

fn v5_will_owner(server: &TestServer) -> rumqttc::v5::MqttOptions {
    let mut o = v5::options(server.mqtt, "dev");
    let qos = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;
    o.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
        "will/t", "gone", qos, false, None,
    ));
    o
}

#[tokio::test]
async fn will_is_published_when_the_connection_drops_v311() {
    let server = start_server().await;
    let mut w = watcher(&server).await;
    let (owner, _) = v4::Client::start(v4_will_owner(&server)).await;
    drop(owner); // socket closed without DISCONNECT
    expect_will(&mut w).await;
}

#[tokio::test]
async fn will_is_published_when_the_connection_drops_v5() {
    let server = start_server().await;
    let mut w = watcher(&server).await;
    let (owner, _) = v5::Client::start(v5_will_owner(&server)).await;
    drop(owner);
    expect_will(&mut w).await;
}

#[tokio::test]
async fn will_is_not_published_on_a_normal_disconnect_v311() {
    let server = start_server().await;
    let mut w = watcher(&server).await;
    let (owner, _) = v4::Client::start(v4_will_owner(&server)).await;
    owner.disconnect().await;
    w.expect_no_message().await;
}

#[tokio::test]
async fn will_is_not_published_on_a_normal_disconnect_v5() {
    let server = start_server().await;
    let mut w = watcher(&server).await;
    let (owner, _) = v5::Client::start(v5_will_owner(&server)).await;
    owner.disconnect().await;
    w.expect_no_message().await;
}

#[tokio::test]
async fn disconnect_with_reason_0x04_publishes_the_will_v5() {
    let server = start_server().await;
    let mut w = watcher(&server).await;
    let (mut s, _) = raw_client(
        server.mqtt,
        &connect_with_will(5, "dev", 60, true, &[], &PLAIN),
    )
    .await;
    send(&mut s, &[0xE0, 0x01, 0x04]).await;
    assert!(expect_closed(&mut s).await.is_empty());
    expect_will(&mut w).await;
}

async fn will_qos_and_retain_are_honoured(level: u8) {
    let server = start_server().await;
    let mut w = watcher(&server).await;
    let will = Will {
        qos: 1,
        retain: true,
        properties: &[],
    };
    let (s, _) = raw_client(
        server.mqtt,
        &connect_with_will(level, "dev", 60, true, &[], &will),
    )
    .await;
    drop(s);
    let live = expect_will(&mut w).await;
    assert_eq!(live.qos, 1, "will QoS 1 to a QoS 2 subscriber");
    let mut late = <v4::Client as TestClient>::connect(server.mqtt, "late").await;
    late.subscribe("will/t", 2).await;
    let kept = late.recv().await;
    assert_eq!(
        (&kept.payload[..], kept.retain, kept.qos),
        (&b"gone"[..], true, 1),
        "will was retained"
    );
}

#[tokio::test]
async fn will_qos_and_retain_are_honoured_v311() {
    will_qos_and_retain_are_honoured(4).await;
}

#[tokio::test]
async fn will_qos_and_retain_are_honoured_v5() {
    will_qos_and_retain_are_honoured(5).await;
}

/// 5.0 CONNECT property: session expiry (0x11).
fn session_expiry(seconds: u32) -> Vec<u8> {
    let mut p = vec![0x11];
    p.extend_from_slice(&seconds.to_be_bytes());
    p
}

/// 5.0 will property: will delay interval (0x18).
fn will_delay(seconds: u32) -> Vec<u8> {
    let mut p = vec![0x18];
    p.extend_from_slice(&seconds.to_be_bytes());
    p
}

#[tokio::test]
async fn will_delay_postpones_the_will_v5() {
    let server = start_server().await;
    let mut w = watcher(&server).await;
    let delay = will_delay(1);
    let will = Will {
        properties: &delay,
        ..PLAIN
    };
    let connect = connect_with_will(5, "dev", 60, true, &session_expiry(60), &will);
    let (s, _) = raw_client(server.mqtt, &connect).await;
    let dropped = Instant::now();
    drop(s);
    expect_will(&mut w).await;
    assert!(
        dropped.elapsed() >= Duration::from_millis(900),
        "will after {:?}",
        dropped.elapsed()
    );
}

#[tokio::test]
async fn will_is_not_published_if_the_client_reconnects_within_the_will_delay_v5() {
    let server = start_server().await;
    let mut w = watcher(&server).await;
    let delay = will_delay(1);
    let will = Will {
        properties: &delay,
        ..PLAIN
    };
    let connect = connect_with_will(5, "dev", 60, false, &session_expiry(60), &will);
    let (s, _) = raw_client(server.mqtt, &connect).await;
    drop(s);
    let resumed = connect_level(5, "dev", false, 60);
    let (_s, connack) = raw_client(server.mqtt, &resumed).await;
    assert_eq!(connack[2], 0x01, "session resumed");
    // Past the 1 s delay: the will must not come.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    w.expect_no_message().await;
}

#[tokio::test]
async fn will_is_published_when_the_session_ends_before_the_will_delay_v5() {
    let server = start_server().await;
    let mut w = watcher(&server).await;
    let delay = will_delay(3600);
    let will = Will {
        properties: &delay,
        ..PLAIN
    };
    // Session expiry 1 s: the session ends long before the 1 hour delay.
    let connect = connect_with_will(5, "dev", 60, true, &session_expiry(1), &will);
    let (s, _) = raw_client(server.mqtt, &connect).await;
    drop(s);
    expect_will(&mut w).await;
}

#[tokio::test]
async fn will_properties_reach_a_v5_subscriber() {
    let server = start_server().await;
    let mut w = <v5::Client as TestClient>::connect(server.mqtt, "watcher").await;
    w.subscribe("will/t", 1).await;
    let mut will_props = vec![0x03];
    will_props.extend(mqtt_str("text/plain"));
    let will = Will {
        properties: &will_props,
        ..PLAIN
    };
    let (s, _) = raw_client(
        server.mqtt,
        &connect_with_will(5, "dev", 60, true, &[], &will),
    )
    .await;
    drop(s);
    let p = w.recv_publish().await;
    let content_type = p.properties.and_then(|p| p.content_type);
    assert_eq!(content_type.as_deref(), Some("text/plain"));
}

v31_cases!(
    clients: [],
    levels: [
        will_is_published_when_keep_alive_expires,
        will_is_published_on_a_protocol_error,
        will_qos_and_retain_are_honoured,
    ],
);
