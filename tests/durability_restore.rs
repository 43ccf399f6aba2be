//! Each piece of stored state comes back after the broker process is killed
//! with SIGKILL and restarted on the same store: subscriptions, queued
//! messages, in-flight QoS 2 state (both directions), retained messages, STOMP
//! queue messages left unacknowledged, and session expiry.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::process::{data_dir, free_port, subscribe_packet, Broker, Conn};
use common::stomp::{body, StompClient};
use tern_mqtt::{Ack, Packet, Properties, ProtocolVersion, Publish, QoS};
use tern_stomp::Command;

const WAIT: Duration = Duration::from_secs(10);

fn ack(packet_id: u16) -> Ack {
    Ack {
        packet_id,
        reason: 0,
        properties: Properties::default(),
    }
}

fn publish(topic: &str, payload: &str, qos: QoS, packet_id: Option<u16>, retain: bool) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: topic.into(),
        packet_id,
        properties: Properties::default(),
        payload: Bytes::from(payload.to_string()),
    })
}

async fn subscribe(conn: &mut Conn, filter: &str, qos: QoS) {
    let sub = subscribe_packet(filter, qos);
    conn.send(&sub).await.expect("send SUBSCRIBE");
    assert!(
        matches!(conn.recv(WAIT).await, Some(Packet::SubAck(_))),
        "SUBACK"
    );
}

/// Publishes at QoS 1 and waits for the PUBACK (so the broker has committed it).
async fn publish_acked(conn: &mut Conn, topic: &str, payload: &str, id: u16, retain: bool) {
    conn.send(&publish(topic, payload, QoS::AtLeastOnce, Some(id), retain))
        .await
        .expect("send PUBLISH");
    match conn.recv(WAIT).await {
        Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, id),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

fn expect_publish(packet: Option<Packet>) -> Publish {
    match packet {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

struct Ports(u16, u16);

impl Ports {
    fn new() -> Ports {
        Ports(free_port(), free_port())
    }

    async fn start(&self, dir: &std::path::Path) -> Broker {
        Broker::start(self.0, self.1, dir).await
    }
}

#[tokio::test]
async fn subscriptions_and_queued_messages_survive_a_kill() {
    let dir = data_dir("restore-queued");
    let ports = Ports::new();
    let mut broker = ports.start(&dir).await;
    let (mut sub, _) = Conn::open(broker.mqtt, "sub", false)
        .await
        .expect("connect sub");
    subscribe(&mut sub, "restore/#", QoS::AtLeastOnce).await;
    drop(sub);
    let (mut publisher, _) = Conn::open(broker.mqtt, "pub", true)
        .await
        .expect("connect pub");
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        publish_acked(&mut publisher, "restore/a", text, i as u16 + 1, false).await;
    }
    broker.kill9();
    let broker = ports.start(&dir).await;

    let (mut sub, present) = Conn::open(broker.mqtt, "sub", false)
        .await
        .expect("reconnect");
    assert!(
        present,
        "the persistent session must be back after the restart"
    );
    for text in ["one", "two", "three"] {
        let p = expect_publish(sub.recv(WAIT).await);
        assert_eq!(p.payload, Bytes::from(text));
        sub.send(&Packet::PubAck(ack(p.packet_id.unwrap_or(0))))
            .await;
    }
    // The subscription itself came back: a new message is routed to it.
    let (mut publisher, _) = Conn::open(broker.mqtt, "pub", true)
        .await
        .expect("connect pub");
    publish_acked(&mut publisher, "restore/b", "four", 1, false).await;
    let p = expect_publish(sub.recv(WAIT).await);
    assert_eq!(p.payload, Bytes::from("four"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn outbound_qos2_state_survives_a_kill() {
    let dir = data_dir("restore-qos2-out");
    let ports = Ports::new();
    let mut broker = ports.start(&dir).await;
    let (mut sub, _) = Conn::open(broker.mqtt, "sub2", false)
        .await
        .expect("connect");
    subscribe(&mut sub, "q2/#", QoS::ExactlyOnce).await;
    let (mut publisher, _) = Conn::open(broker.mqtt, "pub2", true)
        .await
        .expect("connect");
    for (id, text) in [(1u16, "first"), (2, "second")] {
        publisher
            .send(&publish("q2/x", text, QoS::ExactlyOnce, Some(id), false))
            .await;
        assert!(matches!(
            publisher.recv(WAIT).await,
            Some(Packet::PubRec(_))
        ));
        publisher.send(&Packet::PubRel(ack(id))).await;
        assert!(matches!(
            publisher.recv(WAIT).await,
            Some(Packet::PubComp(_))
        ));
    }
    // "first": received, not acknowledged at all. "second": PUBREC sent, PUBREL not completed.
    let first = expect_publish(sub.recv(WAIT).await);
    let second = expect_publish(sub.recv(WAIT).await);
    assert_eq!(second.payload, Bytes::from("second"));
    let second_id = second.packet_id.expect("id");
    sub.send(&Packet::PubRec(ack(second_id))).await;
    match sub.recv(WAIT).await {
        Some(Packet::PubRel(a)) => assert_eq!(a.packet_id, second_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    broker.kill9();
    let broker = ports.start(&dir).await;

    let (mut sub, present) = Conn::open(broker.mqtt, "sub2", false)
        .await
        .expect("reconnect");
    assert!(present);
    let again = expect_publish(sub.recv(WAIT).await);
    assert!(again.dup, "a resent PUBLISH carries DUP");
    assert_eq!(
        again.packet_id, first.packet_id,
        "same packet id after the restart"
    );
    assert_eq!(again.payload, Bytes::from("first"));
    match sub.recv(WAIT).await {
        Some(Packet::PubRel(a)) => {
            assert_eq!(a.packet_id, second_id, "PUBREL resent, not the message")
        }
        other => panic!("expected PUBREL, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn inbound_qos2_state_survives_a_kill() {
    let dir = data_dir("restore-qos2-in");
    let ports = Ports::new();
    let mut broker = ports.start(&dir).await;
    let (mut sub, _) = Conn::open(broker.mqtt, "sub3", false)
        .await
        .expect("connect");
    subscribe(&mut sub, "in/#", QoS::AtLeastOnce).await;
    let (mut publisher, _) = Conn::open(broker.mqtt, "pub3", false)
        .await
        .expect("connect");
    publisher
        .send(&publish("in/x", "once", QoS::ExactlyOnce, Some(7), false))
        .await;
    assert!(matches!(
        publisher.recv(WAIT).await,
        Some(Packet::PubRec(_))
    ));
    let p = expect_publish(sub.recv(WAIT).await);
    sub.send(&Packet::PubAck(ack(p.packet_id.unwrap_or(0))))
        .await;
    broker.kill9();
    let broker = ports.start(&dir).await;

    // The publisher did not see PUBCOMP: it resends the PUBLISH (DUP) on its session.
    let (mut publisher, present) = Conn::open(broker.mqtt, "pub3", false)
        .await
        .expect("reconnect");
    assert!(present);
    let (mut sub, _) = Conn::open(broker.mqtt, "sub3", false)
        .await
        .expect("reconnect sub");
    let mut resend = publish("in/x", "once", QoS::ExactlyOnce, Some(7), false);
    if let Packet::Publish(p) = &mut resend {
        p.dup = true;
    }
    publisher.send(&resend).await;
    assert!(matches!(
        publisher.recv(WAIT).await,
        Some(Packet::PubRec(_))
    ));
    publisher.send(&Packet::PubRel(ack(7))).await;
    match publisher.recv(WAIT).await {
        Some(Packet::PubComp(a)) => assert_eq!(a.reason, 0, "the id was known after the restart"),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    // The subscriber may get its own unacknowledged copy again (DUP, at least once),
    // but never a second, fresh routing of the resent message.
    while let Some(packet) = sub.recv(Duration::from_millis(700)).await {
        if let Packet::Publish(p) = packet {
            assert!(
                p.dup,
                "the resent QoS 2 message must not be routed a second time"
            );
            sub.send(&Packet::PubAck(ack(p.packet_id.unwrap_or(0))))
                .await;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn retained_messages_survive_a_kill() {
    let dir = data_dir("restore-retained");
    let ports = Ports::new();
    let mut broker = ports.start(&dir).await;
    let (mut publisher, _) = Conn::open(broker.mqtt, "rpub", true)
        .await
        .expect("connect");
    publish_acked(&mut publisher, "ret/a", "kept", 1, true).await;
    publish_acked(&mut publisher, "ret/b", "cleared", 2, true).await;
    publish_acked(&mut publisher, "ret/b", "", 3, true).await;
    broker.kill9();
    let broker = ports.start(&dir).await;

    let (mut sub, _) = Conn::open(broker.mqtt, "rsub", true)
        .await
        .expect("connect");
    subscribe(&mut sub, "ret/#", QoS::AtLeastOnce).await;
    let p = expect_publish(sub.recv(WAIT).await);
    assert!(p.retain);
    assert_eq!(
        (p.topic.as_str(), p.payload),
        ("ret/a", Bytes::from("kept"))
    );
    assert!(
        sub.recv(Duration::from_millis(500)).await.is_none(),
        "the cleared retained message stays cleared"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn unacknowledged_stomp_queue_messages_survive_a_kill() {
    let dir = data_dir("restore-stomp-queue");
    let ports = Ports::new();
    let mut broker = ports.start(&dir).await;
    let mut sender = StompClient::connect(broker.stomp).await;
    for text in ["job-1", "job-2"] {
        let frame = common::stomp::frame(
            Command::Send,
            &[("destination", "/queue/jobs")],
            text.as_bytes(),
        );
        // Returns once the RECEIPT arrived (it panics on an ERROR or a timeout).
        sender.send_with_receipt(frame).await;
    }
    let mut consumer = StompClient::connect(broker.stomp).await;
    consumer
        .subscribe("s1", "/queue/jobs", "client-individual")
        .await;
    let first = consumer.message().await;
    assert_eq!(body(&first), "job-1"); // received, never acknowledged
    broker.kill9();
    let broker = ports.start(&dir).await;

    let mut consumer = StompClient::connect(broker.stomp).await;
    consumer.subscribe("s1", "/queue/jobs", "auto").await;
    assert_eq!(body(&consumer.message().await), "job-1");
    assert_eq!(body(&consumer.message().await), "job-2");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn session_expiry_still_applies_after_a_restart() {
    let dir = data_dir("restore-expiry");
    let ports = Ports::new();
    let mut broker = ports.start(&dir).await;
    let (mut short, _) = Conn::open_with(broker.mqtt, ProtocolVersion::V5, "short", false, Some(1))
        .await
        .expect("connect");
    subscribe(&mut short, "exp/#", QoS::AtLeastOnce).await;
    drop(short);
    let (mut long, _) =
        Conn::open_with(broker.mqtt, ProtocolVersion::V5, "long", false, Some(3600))
            .await
            .expect("connect");
    subscribe(&mut long, "exp/#", QoS::AtLeastOnce).await;
    drop(long);
    broker.kill9();
    // Longer than the short session's expiry: it ends while the broker is down.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let broker = ports.start(&dir).await;
    let (_, present) = Conn::open_with(broker.mqtt, ProtocolVersion::V5, "short", false, Some(1))
        .await
        .expect("reconnect");
    assert!(!present, "a session whose expiry passed is gone");
    let (_, present) = Conn::open_with(broker.mqtt, ProtocolVersion::V5, "long", false, Some(3600))
        .await
        .expect("reconnect");
    assert!(present, "a session within its expiry is back");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A v5 client whose session outlives it, with a will delayed by `delay` seconds.
fn connect_with_delayed_will(client_id: &str, delay: u32) -> tern_mqtt::Connect {
    tern_mqtt::Connect {
        protocol: ProtocolVersion::V5,
        clean_start: false,
        keep_alive: 30,
        client_id: client_id.into(),
        will: Some(tern_mqtt::Will {
            topic: format!("wills/{client_id}"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties {
                will_delay_interval: Some(delay),
                ..Properties::default()
            },
        }),
        username: None,
        password: None,
        properties: Properties {
            session_expiry_interval: Some(3600),
            ..Properties::default()
        },
        bridge: false,
    }
}

/// Ends `conn` with DISCONNECT 0x04 (publish the will) and waits until the broker
/// closed it: by then the will is handed to the core (and submitted to the store).
async fn disconnect_with_will(mut conn: Conn) {
    conn.send(&Packet::Disconnect(tern_mqtt::Disconnect {
        reason: tern_mqtt::reason::DISCONNECT_WITH_WILL,
        properties: Properties::default(),
    }))
    .await
    .expect("send DISCONNECT");
    assert!(
        conn.recv(WAIT).await.is_none(),
        "broker closes the connection"
    );
}

/// The persistent v5 session "watcher": subscribed to wills/# at QoS 1 the first
/// time, found again (session present) after a restart.
async fn watcher(broker: &Broker, first: bool) -> Conn {
    let (mut watcher, present) = Conn::open_with(
        broker.mqtt,
        ProtocolVersion::V5,
        "watcher",
        false,
        Some(3600),
    )
    .await
    .expect("connect watcher");
    if first {
        subscribe(&mut watcher, "wills/#", QoS::AtLeastOnce).await;
    } else {
        assert!(present, "the watcher's session must survive the restart");
    }
    watcher
}

/// A persistent session opened: its CONNACK waits for the commit of its
/// record, and commits keep submission order, so everything the broker
/// submitted before is committed. (An ack waits only for what its own packet
/// stored: a publish nobody stores would be no barrier.)
async fn commit_barrier(broker: &Broker) {
    Conn::open(broker.mqtt, "barrier", false)
        .await
        .expect("connect barrier");
}

#[tokio::test]
async fn a_delayed_will_survives_a_kill_and_goes_out_after_the_restart() {
    let dir = data_dir("restore-will");
    let ports = Ports::new();
    let mut broker = ports.start(&dir).await;
    drop(watcher(&broker, true).await);
    let (device, _) = Conn::open_connect(broker.mqtt, connect_with_delayed_will("dev-1", 2))
        .await
        .expect("connect device");
    disconnect_with_will(device).await;
    commit_barrier(&broker).await;
    broker.kill9();

    let broker = ports.start(&dir).await;
    let mut watcher = watcher(&broker, false).await;
    let will = expect_publish(watcher.recv(WAIT).await);
    assert_eq!(will.topic, "wills/dev-1");
    assert_eq!(will.payload, Bytes::from_static(b"gone"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_will_cancelled_by_a_resumed_session_stays_cancelled_after_a_restart() {
    let dir = data_dir("restore-will-cancel");
    let ports = Ports::new();
    let mut broker = ports.start(&dir).await;
    drop(watcher(&broker, true).await);
    let delay = 1;
    let (device, _) = Conn::open_connect(broker.mqtt, connect_with_delayed_will("dev-2", delay))
        .await
        .expect("connect device");
    disconnect_with_will(device).await;
    // The device comes back within the delay: its will must never go out.
    let (_device, present) =
        Conn::open_with(broker.mqtt, ProtocolVersion::V5, "dev-2", false, Some(3600))
            .await
            .expect("reconnect device");
    assert!(present);
    commit_barrier(&broker).await;
    broker.kill9();

    let broker = ports.start(&dir).await;
    // Let the will's delay pass (the time itself is what is tested), then send a marker:
    // the watcher's next message must be the marker, not the will.
    tokio::time::sleep(Duration::from_millis(u64::from(delay) * 1000 + 500)).await;
    let mut watcher = watcher(&broker, false).await;
    let (mut publisher, _) = Conn::open(broker.mqtt, "marker", true)
        .await
        .expect("connect marker");
    publish_acked(&mut publisher, "wills/marker", "marker", 1, false).await;
    let next = expect_publish(watcher.recv(WAIT).await);
    assert_eq!(next.topic, "wills/marker", "the cancelled will came back");
    let _ = std::fs::remove_dir_all(&dir);
}
