//! `$SYS/broker/...` topics (published through the router, retained, under the
//! ACL) and the admin API (token, clients, disconnect, subscriptions, queues,
//! retained messages, config).

mod common;

use common::http::{get, request, request_authorized};
use common::stomp::StompClient;
use common::*;
use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
use rumqttc::v5::{ConnectionError, StateError};
use tern::config::{AclAccess, AclRule};

const TOKEN: &str = "s3cret-token";

fn allow(user: Option<&str>, access: AclAccess, topic: &str) -> AclRule {
    AclRule {
        user: user.map(str::to_string),
        all: user.is_none(),
        allow: Some(access),
        topic: topic.into(),
        ..AclRule::default()
    }
}

#[tokio::test]
async fn sys_topics_are_published_retained_and_readable_where_the_acl_grants_them() {
    let server = start_server_with(|s| {
        s.sys.interval_secs = 1;
        s.acl = vec![
            allow(None, AclAccess::Both, "#"),
            allow(None, AclAccess::Subscribe, "$SYS/#"),
        ];
    })
    .await;
    let mut publisher = v4::Client::connect(server.mqtt, "sys-pub").await;
    publisher.publish("data/x", 1, false, b"hello").await;
    let mut watcher = v5::Client::connect(server.mqtt, "sys-watch").await;
    watcher.subscribe("$SYS/broker/#", 0).await;
    let wanted = [
        "$SYS/broker/version",
        "$SYS/broker/uptime",
        "$SYS/broker/clients/connected",
        "$SYS/broker/load/messages/received/1min",
        "$SYS/broker/bytes/received",
        "$SYS/broker/retained messages/count",
        "$SYS/broker/subscriptions/count",
    ];
    let mut seen = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    // Retained at once on SUBSCRIBE (if already published), then again at every tick.
    while !(wanted.iter().all(|t| seen.contains_key(*t))
        && seen
            .get("$SYS/broker/messages/received")
            .is_some_and(|v: &String| v == "1"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "$SYS so far: {seen:?}"
        );
        let msg = watcher.recv().await;
        seen.insert(
            msg.topic.clone(),
            String::from_utf8_lossy(&msg.payload).to_string(),
        );
    }
    assert_eq!(
        seen.get("$SYS/broker/version").map(String::as_str),
        Some(concat!("tern ", env!("CARGO_PKG_VERSION")))
    );
    assert!(seen
        .get("$SYS/broker/uptime")
        .is_some_and(|u| u.ends_with(" seconds")));
    let router = server.server.as_ref().expect("server").router();
    assert!(router
        .retained_all()
        .iter()
        .any(|m| &*m.topic == "$SYS/broker/version"));

    // Without a rule granting $SYS, a `#` subscriber sees nothing of it (and `$SYS/#` is refused).
    let strict = start_server_with(|s| s.sys.interval_secs = 1).await;
    let mut outsider = v4::Client::connect(strict.mqtt, "sys-outsider").await;
    assert_eq!(outsider.subscribe("$SYS/#", 0).await, vec![0x80]);
    outsider.subscribe("#", 0).await;
    outsider.expect_no_message().await;
}

#[tokio::test]
async fn admin_api_is_off_without_a_token_and_refuses_a_wrong_one() {
    let off = start_server().await;
    let answer = get(off.http, "/api/clients").await;
    assert_eq!(answer.status, 403);
    assert!(answer.body.contains("http.admin_token"), "{}", answer.body);

    let on = start_server_with(|s| s.http.admin_token = Some(TOKEN.into())).await;
    let answer = get(on.http, "/api/clients").await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        request(on.http, "GET", "/api/clients", Some("wrong"))
            .await
            .status,
        401
    );
    assert_eq!(
        request(on.http, "GET", "/api/nothing", Some(TOKEN))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn admin_api_takes_the_bearer_scheme_in_any_case() {
    let server = start_server_with(|s| s.http.admin_token = Some(TOKEN.into())).await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let authorization = format!("{scheme} {TOKEN}");
        let answer =
            request_authorized(server.http, "GET", "/api/clients", Some(&authorization)).await;
        assert_eq!(answer.status, 200, "{scheme}: {}", answer.body);
    }
    // Another scheme, or the token alone, is still refused.
    for authorization in [format!("Basic {TOKEN}"), TOKEN.to_string()] {
        let answer =
            request_authorized(server.http, "GET", "/api/clients", Some(&authorization)).await;
        assert_eq!(answer.status, 401, "{authorization}");
    }
}

#[tokio::test]
async fn admin_api_lists_clients_and_subscriptions_and_disconnects_a_client() {
    let server = start_server_with(|s| s.http.admin_token = Some(TOKEN.into())).await;
    let mut device = v5::Client::connect(server.mqtt, "admin-device").await;
    device.subscribe("sensors/+/temp", 1).await;
    let mut web = StompClient::connect(server.stomp).await;
    web.subscribe("s1", "/queue/jobs", "client").await;

    let clients = request(server.http, "GET", "/api/clients", Some(TOKEN))
        .await
        .json();
    let list = clients.as_array().expect("array");
    assert_eq!(list.len(), 2, "{clients}");
    let mqtt = list
        .iter()
        .find(|c| c["client_id"] == "admin-device")
        .expect("the MQTT client");
    assert_eq!(mqtt["protocol"], "mqtt");
    assert_eq!(mqtt["listener"], "mqtt");
    assert!(mqtt["address"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    assert!(mqtt["connected_since"]
        .as_u64()
        .is_some_and(|t| t > 1_600_000_000));
    assert_eq!(mqtt["queue_depth"], 0);
    assert!(list.iter().any(|c| c["protocol"] == "stomp"));

    let subs = request(
        server.http,
        "GET",
        "/api/clients/admin-device/subscriptions",
        Some(TOKEN),
    )
    .await
    .json();
    assert_eq!(subs[0]["filter"], "sensors/+/temp");
    assert_eq!(subs[0]["qos"], 1);

    let queues = request(server.http, "GET", "/api/queues", Some(TOKEN))
        .await
        .json();
    assert_eq!(queues[0]["name"], "jobs", "{queues}");
    assert_eq!(queues[0]["consumers"], 1);

    let answer = request(
        server.http,
        "DELETE",
        "/api/clients/admin-device",
        Some(TOKEN),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let (_, error) = device.until_closed().await;
    match error {
        ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. }) => {
            assert_eq!(reason_code, DisconnectReasonCode::AdministrativeAction)
        }
        other => panic!("expected DISCONNECT 0x98, got {other:?}"),
    }
    eventually("the client unlisted", || {
        !server.is_connected("admin-device")
    })
    .await;
    // Its session was clean: it ends with the connection, as at any other end,
    // rather than staying behind with its subscriptions.
    eventually("the clean session ended", || {
        !server.has_session("admin-device")
    })
    .await;
    let missing = request(
        server.http,
        "DELETE",
        "/api/clients/admin-device",
        Some(TOKEN),
    )
    .await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn admin_api_lists_and_deletes_retained_messages_and_shows_config_without_secrets() {
    let server = start_server_with(|s| s.http.admin_token = Some(TOKEN.into())).await;
    let mut publisher = v4::Client::connect(server.mqtt, "admin-retainer").await;
    publisher.publish("home/lamp", 1, true, b"on").await;
    publisher.publish("home/door", 1, true, b"shut").await;

    let retained = request(server.http, "GET", "/api/retained", Some(TOKEN))
        .await
        .json();
    let topics: Vec<&str> = retained
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["topic"].as_str())
        .collect();
    assert_eq!(topics, ["home/door", "home/lamp"]);
    assert_eq!(retained[1]["payload"], "on");

    let answer = request(
        server.http,
        "DELETE",
        "/api/retained/home/lamp",
        Some(TOKEN),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let gone = request(
        server.http,
        "DELETE",
        "/api/retained/home/lamp",
        Some(TOKEN),
    )
    .await;
    assert_eq!(gone.status, 404);
    let mut late = v4::Client::connect(server.mqtt, "admin-late").await;
    late.subscribe("home/#", 1).await;
    assert_eq!(late.recv().await.payload, b"shut");
    late.expect_no_message().await;

    let config = request(server.http, "GET", "/api/config", Some(TOKEN)).await;
    assert_eq!(config.status, 200);
    assert!(!config.body.contains(TOKEN), "{}", config.body);
    assert_eq!(config.json()["http"]["admin_token"], "<redacted>");
    assert_eq!(config.json()["mqtt"]["bind"], "127.0.0.1:0");
}
