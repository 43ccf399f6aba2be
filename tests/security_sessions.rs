//! A persistent session belongs to the user that created it: another user who
//! connects with its client id (clean or not, over TCP or WebSocket, MQTT
//! 3.1.1 or 5.0) is refused with CONNACK 5 / 0x87, and the owner's session
//! (subscription, queued message, live connection) is untouched, also after a
//! restart. (paho-mqtt: tests/interop/test_security_auth.py.)

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::process::{free_port, Broker};
use common::ws::{self as wsc, read_binary, send_binary};
use common::*;
use rumqttc::{ConnectReturnCode, ConnectionError, Event, Incoming};
use tern::auth::PasswordFile;
use tern::config::{AclAccess, AclRule, Settings};
use tern_mqtt::{Packet, Properties, ProtocolVersion};

/// A fresh directory with a password file of dev1/one and dev2/two.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-owner-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut file = PasswordFile::new();
    file.set("dev1", b"one").expect("hash");
    file.set("dev2", b"two").expect("hash");
    file.save(&dir.join("passwd")).expect("save password file");
    dir
}

/// Users only, each reading and writing devices/<user>/#, persisted in `dir`.
fn secured(settings: &mut Settings, dir: &Path) {
    settings.auth.password_file = Some(dir.join("passwd"));
    settings.mqtt.allow_anonymous = Some(false);
    settings.websocket.allow_anonymous = Some(false);
    settings.storage.enabled = true;
    settings.storage.data_dir = dir.join("data");
    settings.acl = ["dev1", "dev2"]
        .into_iter()
        .map(|user| AclRule {
            user: Some(user.into()),
            allow: Some(AclAccess::Both),
            topic: format!("devices/{user}/#"),
            ..AclRule::default()
        })
        .collect();
}

async fn start(dir: &Path) -> TestServer {
    let dir = dir.to_path_buf();
    start_server_with(move |s| secured(s, &dir)).await
}

/// Stops the server and waits for its connections to end.
async fn stop(mut server: TestServer) {
    if let Some(running) = server.server.take() {
        running.shutdown(WAIT).await;
    }
}

fn password(user: &str) -> &'static str {
    if user == "dev1" {
        "one"
    } else {
        "two"
    }
}

/// One MQTT version's client calls the test needs.
#[allow(async_fn_in_trait)]
trait OwnerClient: TestClient {
    /// Connects as `user` without clean start; returns session present.
    async fn login(addr: std::net::SocketAddr, id: &str, user: &str) -> (Self, bool);
    /// Connects as `user`; asserts the CONNACK refuses with "not authorized".
    async fn refused(addr: std::net::SocketAddr, id: &str, user: &str, clean: bool);
}

impl OwnerClient for v4::Client {
    async fn login(addr: std::net::SocketAddr, id: &str, user: &str) -> (Self, bool) {
        let mut options = v4::persistent_options(addr, id);
        options.set_credentials(user, password(user));
        let (client, ack) = v4::Client::start(options).await;
        (client, ack.session_present)
    }

    async fn refused(addr: std::net::SocketAddr, id: &str, user: &str, clean: bool) {
        let mut options = v4::persistent_options(addr, id);
        options.set_clean_session(clean);
        options.set_credentials(user, password(user));
        let (_client, mut events) = rumqttc::AsyncClient::new(options, 10);
        match tokio::time::timeout(WAIT, events.poll()).await {
            Ok(Err(ConnectionError::ConnectionRefused(code))) => {
                assert_eq!(
                    code,
                    ConnectReturnCode::NotAuthorized,
                    "3.1.1 return code 5"
                )
            }
            other => panic!("expected a refusing CONNACK, got {other:?}"),
        }
    }
}

impl OwnerClient for v5::Client {
    async fn login(addr: std::net::SocketAddr, id: &str, user: &str) -> (Self, bool) {
        let mut options = v5::persistent_options(addr, id);
        options.set_credentials(user, password(user));
        let (client, ack) = v5::Client::start(options).await;
        (client, ack.session_present)
    }

    async fn refused(addr: std::net::SocketAddr, id: &str, user: &str, clean: bool) {
        use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as Code;
        let mut options = v5::persistent_options(addr, id);
        options.set_clean_start(clean);
        options.set_credentials(user, password(user));
        let (_client, mut events) = rumqttc::v5::AsyncClient::new(options, 10);
        match tokio::time::timeout(WAIT, events.poll()).await {
            Ok(Err(rumqttc::v5::ConnectionError::ConnectionRefused(code))) => {
                assert_eq!(code, Code::NotAuthorized, "5.0 reason code 0x87")
            }
            other => panic!("expected a refusing CONNACK, got {other:?}"),
        }
    }
}

/// A CONNECT of `user` for `id` without clean start (5.0: session expiry 1 hour).
fn connect_bytes(version: ProtocolVersion, id: &str, user: &str) -> Vec<u8> {
    let mut properties = Properties::default();
    if version == ProtocolVersion::V5 {
        properties.session_expiry_interval = Some(3600);
    }
    let connect = tern_mqtt::Connect {
        protocol: version,
        clean_start: false,
        keep_alive: 30,
        client_id: id.into(),
        will: None,
        username: Some(user.into()),
        password: Some(Bytes::copy_from_slice(password(user).as_bytes())),
        properties,
        bridge: false,
    };
    let mut out = bytes::BytesMut::new();
    tern_mqtt::encode(&Packet::Connect(connect), version, &mut out).expect("encode");
    out.to_vec()
}

/// `user` tries the session `id` over the WebSocket listener: the CONNACK refuses.
async fn refused_over_websocket(
    server: &TestServer,
    version: ProtocolVersion,
    id: &str,
    user: &str,
) {
    let mut ws = wsc::open(server.ws, "/mqtt", &["mqtt"]).await;
    send_binary(&mut ws, &connect_bytes(version, id, user)).await;
    if version == ProtocolVersion::V5 {
        // Reason code 0x87, no properties.
        assert_eq!(
            read_binary(&mut ws, 5).await,
            [0x20, 0x03, 0x00, 0x87, 0x00]
        );
    } else {
        assert_eq!(read_binary(&mut ws, 4).await, [0x20, 0x02, 0x00, 0x05]);
    }
    // The connection ends after the refusal (expect_close panics otherwise).
    wsc::expect_close(&mut ws).await;
}

/// dev2 owns session `id` with a subscription and one queued QoS 1 message;
/// dev1 cannot get at it (over TCP or WebSocket, clean start or not);
/// dev2 resumes it with everything; dev1 cannot take over dev2's live connection.
async fn another_user_cannot_use_the_session<C: OwnerClient>(version: ProtocolVersion) {
    let dir = fresh_dir(C::VERSION);
    let server = start(&dir).await;
    let id = format!("victim-{}", C::VERSION);
    let topic = format!("devices/dev2/{}", C::VERSION);

    let (mut owner, present) = C::login(server.mqtt, &id, "dev2").await;
    assert!(!present);
    assert_eq!(owner.subscribe("devices/dev2/#", 1).await, vec![1]);
    owner.disconnect().await;
    let (mut publisher, _) = C::login(server.mqtt, &format!("pub-{}", C::VERSION), "dev2").await;
    publisher
        .publish(&topic, 1, false, b"queued for dev2")
        .await;

    C::refused(server.mqtt, &id, "dev1", false).await;
    C::refused(server.mqtt, &id, "dev1", true).await;
    refused_over_websocket(&server, version, &id, "dev1").await;

    let (mut owner, present) = C::login(server.mqtt, &id, "dev2").await;
    assert!(present, "the owner's session is still there");
    let got = owner.recv().await;
    assert_eq!(
        (got.topic.as_str(), got.payload.as_slice()),
        (topic.as_str(), &b"queued for dev2"[..])
    );

    // A live takeover by another user is refused; the owner's connection goes on.
    C::refused(server.mqtt, &id, "dev1", false).await;
    refused_over_websocket(&server, version, &id, "dev1").await;
    publisher
        .publish(&topic, 1, false, b"still subscribed")
        .await;
    assert_eq!(owner.recv().await.payload, b"still subscribed");
    owner.disconnect().await;
    publisher.disconnect().await;
    stop(server).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The owner is stored with the session: after a kill -9 and a restart of the
/// tern binary, dev1 is still refused and dev2 resumes with its message.
async fn the_owner_survives_a_restart<C: OwnerClient>() {
    let dir = fresh_dir(&format!("restart-{}", C::VERSION));
    let passwd = dir.join("passwd");
    let passwd = passwd.to_str().expect("utf-8 path");
    let env = [
        ("TERN_AUTH__PASSWORD_FILE", passwd),
        ("TERN_MQTT__ALLOW_ANONYMOUS", "false"),
    ];
    let (mqtt_port, stomp_port) = (free_port(), free_port());
    let data = dir.join("data");
    let mut broker = Broker::start_with(mqtt_port, stomp_port, &data, &env)
        .await
        .expect("broker starts");
    let id = format!("kept-{}", C::VERSION);
    let (mut owner, _) = C::login(broker.mqtt, &id, "dev2").await;
    assert_eq!(owner.subscribe("devices/dev2/#", 1).await, vec![1]);
    owner.disconnect().await;
    let (mut publisher, _) = C::login(broker.mqtt, &format!("p-{}", C::VERSION), "dev2").await;
    publisher
        .publish("devices/dev2/r", 1, false, b"across the restart")
        .await;
    broker.kill9();

    let broker = Broker::start_with(mqtt_port, stomp_port, &data, &env)
        .await
        .expect("broker restarts");
    C::refused(broker.mqtt, &id, "dev1", false).await;
    C::refused(broker.mqtt, &id, "dev1", true).await;
    let (mut owner, present) = C::login(broker.mqtt, &id, "dev2").await;
    assert!(present, "the session survives the restart");
    assert_eq!(owner.recv().await.payload, b"across the restart");
    owner.disconnect().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_owner_of_a_session_survives_a_restart_v311() {
    the_owner_survives_a_restart::<v4::Client>().await;
}

#[tokio::test]
async fn the_owner_of_a_session_survives_a_restart_v5() {
    the_owner_survives_a_restart::<v5::Client>().await;
}

#[tokio::test]
async fn another_user_cannot_resume_or_take_over_a_session_v311() {
    another_user_cannot_use_the_session::<v4::Client>(ProtocolVersion::V311).await;
}

#[tokio::test]
async fn another_user_cannot_resume_or_take_over_a_session_v5() {
    another_user_cannot_use_the_session::<v5::Client>(ProtocolVersion::V5).await;
}

#[tokio::test]
async fn with_the_owner_check_off_another_user_may_resume_a_session() {
    let dir = fresh_dir("off");
    let server = {
        let dir = dir.clone();
        start_server_with(move |s| {
            secured(s, &dir);
            s.auth.session_owner_check = false;
        })
        .await
    };
    let (owner, _) = <v4::Client as OwnerClient>::login(server.mqtt, "shared", "dev2").await;
    owner.disconnect().await;
    let (_other, present) = <v4::Client as OwnerClient>::login(server.mqtt, "shared", "dev1").await;
    assert!(present, "no owner check: the session is resumed");
    stop(server).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Where anonymous clients are allowed, an anonymous client still cannot take
/// the session (and queue) of a user.
#[tokio::test]
async fn an_anonymous_client_cannot_resume_a_users_session() {
    let dir = fresh_dir("anon");
    let server = {
        let dir = dir.clone();
        start_server_with(move |s| {
            secured(s, &dir);
            s.mqtt.allow_anonymous = Some(true);
        })
        .await
    };
    let (owner, _) = <v4::Client as OwnerClient>::login(server.mqtt, "mine", "dev2").await;
    owner.disconnect().await;
    let options = v4::persistent_options(server.mqtt, "mine");
    let (_client, mut events) = rumqttc::AsyncClient::new(options, 10);
    match tokio::time::timeout(WAIT, events.poll()).await {
        Ok(Err(ConnectionError::ConnectionRefused(code))) => {
            assert_eq!(code, ConnectReturnCode::NotAuthorized)
        }
        Ok(Ok(Event::Incoming(Incoming::ConnAck(ack)))) => panic!("accepted: {ack:?}"),
        other => panic!("expected a refusing CONNACK, got {other:?}"),
    }
    stop(server).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Exceptions are never stored, so a restored session gets them from its owner's
/// rules at start: a deny rule added across a restart keeps its topic out of the
/// queue of a persistent session that has not come back yet.
#[tokio::test]
async fn a_restored_session_gets_its_owners_exceptions_before_it_resumes() {
    let dir = fresh_dir("restored-exceptions");
    let server = start(&dir).await;
    let (mut owner, _) = <v4::Client as OwnerClient>::login(server.mqtt, "carved", "dev2").await;
    assert_eq!(owner.subscribe("devices/dev2/#", 1).await, vec![1]);
    owner.disconnect().await;
    stop(server).await;
    store_released(&dir.join("data").join("tern.redb")).await;

    // The same store, now with a rule that carves devices/dev2/secret out.
    let server = {
        let dir = dir.clone();
        start_server_with(move |s| {
            secured(s, &dir);
            s.acl.insert(
                0,
                AclRule {
                    all: true,
                    deny: Some(AclAccess::Subscribe),
                    topic: "devices/dev2/secret".into(),
                    ..AclRule::default()
                },
            );
        })
        .await
    };
    let (mut publisher, _) = <v4::Client as OwnerClient>::login(server.mqtt, "pub", "dev2").await;
    publisher
        .publish(
            "devices/dev2/secret",
            1,
            false,
            b"not for the offline session",
        )
        .await;
    publisher.publish("devices/dev2/ok", 1, false, b"ok").await;
    let (mut owner, present) =
        <v4::Client as OwnerClient>::login(server.mqtt, "carved", "dev2").await;
    assert!(present, "the session was restored");
    let first = owner.recv().await;
    assert_eq!(
        (first.topic.as_str(), first.payload.as_slice()),
        ("devices/dev2/ok", &b"ok"[..]),
        "the denied topic was queued for the restored session"
    );
    owner.expect_no_message().await;
    owner.disconnect().await;
    publisher.disconnect().await;
    stop(server).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (bounded) until the stopped server's store writer has let go of the
/// file: shutdown returns once the store is told to close, and the writer
/// thread ends just after.
async fn store_released(path: &Path) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match redb::Database::open(path) {
            Ok(db) => return drop(db),
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the store stays locked after shutdown: {e}"),
        }
    }
}
