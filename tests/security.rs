//! Users and ACLs across MQTT and STOMP, through the listeners, with real
//! clients (rumqttc) and STOMP frames: logins checked against the password
//! file, refusals with the codes the protocols define, and the same ACL rules
//! guarding both protocols. (TLS and the other real clients: tests/interop/test_security_*.py.)

mod common;

use std::path::PathBuf;

use bytes::Bytes;
use common::process::Conn;
use common::stomp::{frame, Received, StompClient};
use common::*;
use rumqttc::{ConnectReturnCode, ConnectionError, Event, Incoming};
use tern::auth::PasswordFile;
use tern::config::{AclAccess, AclRule, Settings};
use tern_mqtt::{Packet, Properties, ProtocolVersion, Publish, QoS};
use tern_stomp::Command;

/// A password file with alice/wonderland and bob/builder, in a fresh directory.
fn password_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-sec-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut file = PasswordFile::new();
    file.set("alice", b"wonderland").expect("hash");
    file.set("bob", b"builder").expect("hash");
    let path = dir.join("passwd");
    file.save(&path).expect("save password file");
    path
}

fn rule(user: &str, access: AclAccess, topic: &str) -> AclRule {
    AclRule {
        user: Some(user.into()),
        allow: Some(access),
        topic: topic.into(),
        ..AclRule::default()
    }
}

/// Users only (no anonymous clients); alice and bob each own devices/<name>/#.
fn secured(settings: &mut Settings, name: &str) {
    settings.auth.password_file = Some(password_file(name));
    settings.mqtt.allow_anonymous = Some(false);
    settings.stomp.allow_anonymous = Some(false);
    settings.acl = vec![
        rule("alice", AclAccess::Both, "devices/alice/#"),
        rule("bob", AclAccess::Both, "devices/bob/#"),
    ];
}

/// The CONNACK return code a 3.1.1 rumqttc client gets with these credentials.
async fn v311_connack(server: &TestServer, user: Option<(&str, &str)>) -> ConnectReturnCode {
    let mut options = v4::options(server.mqtt, "who");
    if let Some((user, password)) = user {
        options.set_credentials(user, password);
    }
    let (_client, mut events) = rumqttc::AsyncClient::new(options, 10);
    match tokio::time::timeout(WAIT, events.poll()).await {
        Ok(Ok(Event::Incoming(Incoming::ConnAck(ack)))) => ack.code,
        Ok(Err(ConnectionError::ConnectionRefused(code))) => code,
        other => panic!("expected a CONNACK, got {other:?}"),
    }
}

/// The CONNACK reason code a 5.0 client gets with these credentials.
async fn v5_connack(server: &TestServer, user: Option<(&str, &str)>) -> u8 {
    let connect = tern_mqtt::Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 30,
        client_id: "who-v5".into(),
        will: None,
        username: user.map(|(u, _)| u.to_string()),
        password: user.map(|(_, p)| Bytes::copy_from_slice(p.as_bytes())),
        properties: Properties::default(),
        bridge: false,
    };
    let mut stream = raw_connect(server.mqtt).await;
    let mut out = bytes::BytesMut::new();
    tern_mqtt::encode(&Packet::Connect(connect), ProtocolVersion::V5, &mut out).expect("encode");
    send(&mut stream, &out).await;
    let packet = read_packet(&mut stream).await.expect("CONNACK");
    assert_eq!(packet[0], 0x20, "CONNACK");
    let body = packet_body(&packet);
    body[1]
}

#[tokio::test]
async fn mqtt_logins_are_checked_against_the_password_file() {
    let server = start_server_with(|s| secured(s, "mqtt-login")).await;
    assert_eq!(
        v311_connack(&server, Some(("alice", "wonderland"))).await,
        ConnectReturnCode::Success
    );
    assert_eq!(
        v311_connack(&server, Some(("alice", "wrong"))).await,
        ConnectReturnCode::BadUserNamePassword
    );
    assert_eq!(
        v311_connack(&server, Some(("mallory", "wonderland"))).await,
        ConnectReturnCode::BadUserNamePassword
    );
    assert_eq!(
        v311_connack(&server, None).await,
        ConnectReturnCode::NotAuthorized,
        "anonymous clients are refused on this listener"
    );
    assert_eq!(v5_connack(&server, Some(("bob", "builder"))).await, 0x00);
    assert_eq!(v5_connack(&server, Some(("bob", "wrong"))).await, 0x86);
    assert_eq!(v5_connack(&server, None).await, 0x87);
}

async fn stomp_login(server: &TestServer, login: Option<(&str, &str)>) -> (StompClient, Received) {
    let mut headers = vec![("accept-version", "1.2")];
    if let Some((user, passcode)) = login {
        headers.push(("login", user));
        headers.push(("passcode", passcode));
    }
    StompClient::open(server.stomp, &headers).await
}

fn command(received: &Received) -> Option<Command> {
    match received {
        Received::Frame(f) => Some(f.command),
        _ => None,
    }
}

#[tokio::test]
async fn stomp_logins_use_the_same_users() {
    let server = start_server_with(|s| secured(s, "stomp-login")).await;
    let (client, first) = stomp_login(&server, Some(("alice", "wonderland"))).await;
    assert_eq!(command(&first), Some(Command::Connected));
    client.disconnect().await;
    for login in [Some(("alice", "wrong")), Some(("nobody", "x")), None] {
        let (mut client, first) = stomp_login(&server, login).await;
        let Received::Frame(error) = first else {
            panic!("expected ERROR for {login:?}, got {first:?}")
        };
        assert_eq!(error.command, Command::Error, "{login:?}");
        let message = error.header("message").unwrap_or_default();
        assert!(
            !message.contains("wrong"),
            "the passcode is not echoed: {message}"
        );
        client.expect_closed().await;
    }
}

#[tokio::test]
async fn a_device_cannot_reach_another_devices_topics_through_either_protocol() {
    let server = start_server_with(|s| secured(s, "cross")).await;
    // bob over MQTT may not subscribe to alice's topics.
    let mut options = v4::options(server.mqtt, "bob-mqtt");
    options.set_credentials("bob", "builder");
    let (mut bob, _) = v4::Client::start(options).await;
    assert_eq!(bob.subscribe("devices/alice/#", 1).await, vec![0x80]);
    assert_eq!(bob.subscribe("devices/bob/#", 1).await, vec![1]);
    // alice over STOMP may not subscribe to bob's topics, nor send to them.
    let (mut alice, _) = stomp_login(&server, Some(("alice", "wonderland"))).await;
    alice
        .send_frame(&frame(
            Command::Subscribe,
            &[("id", "1"), ("destination", "/topic/devices/bob/#")],
            b"",
        ))
        .await;
    let error = alice.expect_error().await;
    assert!(
        error
            .header("message")
            .unwrap_or_default()
            .contains("not authorized"),
        "{error:?}"
    );
    let (mut alice, _) = stomp_login(&server, Some(("alice", "wonderland"))).await;
    alice
        .send_frame(&frame(
            Command::Send,
            &[("destination", "/topic/devices/bob/cmd")],
            b"x",
        ))
        .await;
    alice.expect_error().await;
    // alice reads her own topics over STOMP; bob's MQTT publish there is dropped
    // (3.1.1), so the first message she sees is her own device's.
    let (mut alice, _) = stomp_login(&server, Some(("alice", "wonderland"))).await;
    alice
        .subscribe("own", "/topic/devices/alice/#", "auto")
        .await;
    bob.publish("devices/alice/status", 1, false, b"from-bob")
        .await;
    let mut options = v4::options(server.mqtt, "alice-device");
    options.set_credentials("alice", "wonderland");
    let (mut device, _) = v4::Client::start(options).await;
    device
        .publish("devices/alice/status", 1, false, b"from-alice")
        .await;
    let message = alice.message().await;
    assert_eq!(common::stomp::body(&message), "from-alice");
    // And bob's own topic works for him, MQTT to MQTT.
    bob.publish("devices/bob/status", 1, false, b"bob-ok").await;
    assert_eq!(bob.recv().await.payload, b"bob-ok");
}

#[tokio::test]
async fn denied_publishes_are_refused_in_5_and_dropped_in_3() {
    let server = start_server_with(|s| secured(s, "publish")).await;
    let mut options = v5::options(server.mqtt, "alice-sub");
    options.set_credentials("alice", "wonderland");
    let (mut watcher, _) = v5::Client::start(options).await;
    watcher.subscribe("devices/alice/#", 1).await;
    // 5.0: PUBACK 0x87 for a topic bob may not publish to.
    let connect = tern_mqtt::Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 30,
        client_id: "bob-v5".into(),
        will: None,
        username: Some("bob".into()),
        password: Some(Bytes::from_static(b"builder")),
        properties: Properties::default(),
        bridge: false,
    };
    let (mut bob, _) = Conn::open_connect(server.mqtt, connect)
        .await
        .expect("bob connects");
    bob.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "devices/alice/cmd".into(),
        packet_id: Some(1),
        properties: Properties::default(),
        payload: Bytes::from_static(b"v5"),
    }))
    .await
    .expect("send");
    match bob.recv(WAIT).await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason, 0x87),
        other => panic!("expected PUBACK 0x87, got {other:?}"),
    }
    // 3.1.1: acknowledged (nothing else can be said) but not routed.
    let mut options = v4::options(server.mqtt, "bob-v311");
    options.set_credentials("bob", "builder");
    let (mut bob311, _) = v4::Client::start(options).await;
    bob311.publish("devices/alice/cmd", 1, false, b"v311").await;
    // alice's own marker arrives, and nothing before it.
    let mut options = v5::options(server.mqtt, "alice-pub");
    options.set_credentials("alice", "wonderland");
    let (mut alice, _) = v5::Client::start(options).await;
    alice
        .publish("devices/alice/marker", 1, false, b"marker")
        .await;
    assert_eq!(watcher.recv().await.payload, b"marker");
}

#[tokio::test]
async fn a_will_on_a_topic_the_client_may_not_publish_to_refuses_the_connection() {
    let server = start_server_with(|s| secured(s, "will")).await;
    let mut options = v4::options(server.mqtt, "bob-will");
    options.set_credentials("bob", "builder");
    options.set_last_will(rumqttc::LastWill::new(
        "devices/alice/will",
        "gone",
        rumqttc::QoS::AtLeastOnce,
        false,
    ));
    let (_client, mut events) = rumqttc::AsyncClient::new(options, 10);
    match tokio::time::timeout(WAIT, events.poll()).await {
        Ok(Err(ConnectionError::ConnectionRefused(code))) => {
            assert_eq!(code, ConnectReturnCode::NotAuthorized)
        }
        other => panic!("expected CONNACK 5, got {other:?}"),
    }
}

#[tokio::test]
async fn sys_topics_need_a_rule_that_grants_them() {
    let server = start_server_with(|s| {
        s.acl = vec![
            AclRule {
                all: true,
                allow: Some(AclAccess::Both),
                topic: "#".into(),
                ..AclRule::default()
            },
            AclRule {
                client_id: Some("ops".into()),
                allow: Some(AclAccess::Subscribe),
                topic: "$SYS/#".into(),
                ..AclRule::default()
            },
        ];
    })
    .await;
    let mut anyone = v4::Client::connect(server.mqtt, "anyone").await;
    assert_eq!(anyone.subscribe("$SYS/#", 0).await, vec![0x80]);
    let mut ops = v4::Client::connect(server.mqtt, "ops").await;
    assert_eq!(ops.subscribe("$SYS/#", 0).await, vec![0]);
}

#[tokio::test]
async fn retained_messages_reach_only_clients_that_may_read_them() {
    let server = start_server_with(|s| {
        s.acl = vec![
            AclRule {
                all: true,
                allow: Some(AclAccess::Both),
                topic: "site/#".into(),
                ..AclRule::default()
            },
            AclRule {
                client_id: Some("guest".into()),
                deny: Some(AclAccess::Subscribe),
                topic: "site/private/#".into(),
                ..AclRule::default()
            },
        ];
    })
    .await;
    let mut owner = v4::Client::connect(server.mqtt, "owner").await;
    owner.publish("site/private/key", 1, true, b"secret").await;
    owner.publish("site/public/news", 1, true, b"news").await;
    let mut guest = v4::Client::connect(server.mqtt, "guest").await;
    // A filter the deny rule covers is refused...
    assert_eq!(guest.subscribe("site/private/+", 1).await, vec![0x80]);
    // ...one that overlaps it is granted without the denied topics...
    assert_eq!(guest.subscribe("site/#", 1).await, vec![1]);
    assert_eq!(guest.recv().await.payload, b"news");
    guest.expect_no_message().await;
    // ...and so is one that does not overlap it.
    assert_eq!(guest.subscribe("site/public/#", 1).await, vec![1]);
    assert_eq!(guest.recv().await.payload, b"news");
    guest.expect_no_message().await;
    let mut member = v4::Client::connect(server.mqtt, "member").await;
    assert_eq!(member.subscribe("site/+/key", 1).await, vec![1]);
    assert_eq!(member.recv().await.payload, b"secret");
}

#[tokio::test]
async fn a_stored_session_resumed_by_another_user_keeps_only_what_that_user_may_read() {
    // Only possible with the owner check off (tests/security_sessions.rs has it on).
    let server = start_server_with(|s| {
        secured(s, "resume");
        s.auth.session_owner_check = false;
    })
    .await;
    let mut options = v4::persistent_options(server.mqtt, "shared-device");
    options.set_credentials("alice", "wonderland");
    let (mut first, _) = v4::Client::start(options).await;
    assert_eq!(first.subscribe("devices/alice/#", 1).await, vec![1]);
    first.disconnect().await;
    // bob takes over the client id: the session is there, alice's subscription is not.
    let mut options = v4::persistent_options(server.mqtt, "shared-device");
    options.set_credentials("bob", "builder");
    let (mut second, ack) = v4::Client::start(options).await;
    assert!(ack.session_present);
    assert_eq!(second.subscribe("devices/bob/#", 1).await, vec![1]);
    let mut options = v4::options(server.mqtt, "alice-pub");
    options.set_credentials("alice", "wonderland");
    let (mut alice, _) = v4::Client::start(options).await;
    alice
        .publish("devices/alice/status", 1, false, b"private")
        .await;
    let mut options = v4::options(server.mqtt, "bob-pub");
    options.set_credentials("bob", "builder");
    let (mut bob, _) = v4::Client::start(options).await;
    bob.publish("devices/bob/marker", 1, false, b"marker").await;
    assert_eq!(
        second.recv().await.payload,
        b"marker",
        "alice's message must not reach bob"
    );
}

#[tokio::test]
async fn a_resumed_session_gets_the_exceptions_of_the_user_who_resumes_it() {
    let server = start_server_with(|s| {
        secured(s, "resume-exceptions");
        // Another user may resume the session only with the owner check off.
        s.auth.session_owner_check = false;
        s.acl = vec![
            AclRule {
                all: true,
                allow: Some(AclAccess::Both),
                topic: "#".into(),
                ..AclRule::default()
            },
            AclRule {
                all: true,
                deny: Some(AclAccess::Subscribe),
                topic: "inbox/%u/#".into(),
                ..AclRule::default()
            },
        ];
    })
    .await;
    let mut options = v4::persistent_options(server.mqtt, "shared-screen");
    options.set_credentials("alice", "wonderland");
    let (mut first, _) = v4::Client::start(options).await;
    // Granted with alice's own inbox carved out.
    assert_eq!(first.subscribe("inbox/#", 1).await, vec![1]);
    first.disconnect().await;
    let mut options = v4::persistent_options(server.mqtt, "shared-screen");
    options.set_credentials("bob", "builder");
    let (mut second, ack) = v4::Client::start(options).await;
    assert!(ack.session_present);
    let mut options = v4::options(server.mqtt, "mailer");
    options.set_credentials("alice", "wonderland");
    let (mut mailer, _) = v4::Client::start(options).await;
    mailer.publish("inbox/bob/1", 1, false, b"for bob").await;
    mailer
        .publish("inbox/alice/1", 1, false, b"for alice")
        .await;
    let got = second.recv().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("inbox/alice/1", &b"for alice"[..]),
        "the session now carves out bob's inbox, no longer alice's"
    );
    second.expect_no_message().await;
}
