//! The operations listener: `/metrics` after known traffic over MQTT and STOMP
//! (connections, connects/disconnects, messages and bytes by protocol and QoS,
//! drops by reason, retained, sessions, store commits, TLS handshake failures)
//! and `/healthz`.

mod common;

use common::http::{get, sample};
use common::stomp::StompClient;
use common::*;
use tern::config::{AclAccess, AclRule};

/// Scrapes until `name{labels}` has `want` (the server updates some values just after the client sees the effect).
async fn until_sample(server: &TestServer, name: &str, labels: &str, want: f64) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let scrape = get(server.http, "/metrics").await.body;
        if sample(&scrape, name, labels) == Some(want) {
            return scrape;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}{{{labels}}} never became {want}:\n{scrape}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn everyone(access: AclAccess, topic: &str, deny: bool) -> AclRule {
    AclRule {
        all: true,
        allow: (!deny).then_some(access),
        deny: deny.then_some(access),
        topic: topic.into(),
        ..AclRule::default()
    }
}

#[tokio::test]
async fn metrics_count_known_traffic_by_protocol_qos_and_reason() {
    let server = start_server_with(|s| {
        s.acl = vec![
            everyone(AclAccess::Publish, "forbidden/#", true),
            everyone(AclAccess::Both, "#", false),
        ];
    })
    .await;
    let health = get(server.http, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

    let mut subscriber = v4::Client::connect(server.mqtt, "metrics-sub").await;
    subscriber.subscribe("m/#", 1).await;
    let mut publisher = v5::Client::connect(server.mqtt, "metrics-pub").await;
    for _ in 0..3 {
        publisher.publish("m/a", 1, false, b"0123456789").await;
    }
    for _ in 0..3 {
        assert_eq!(subscriber.recv().await.payload, b"0123456789");
    }
    publisher.publish("m/kept", 0, true, b"xy").await;
    assert_eq!(subscriber.recv().await.payload, b"xy");
    // Denied by the ACL: counted as dropped, not as received.
    publisher.publish("forbidden/x", 0, false, b"no").await;
    let mut stomp = StompClient::connect(server.stomp).await;
    stomp.send("/topic/s/nobody", b"abc", &[("qos", "0")]).await;
    stomp.send("/topic/s/nobody", b"defg", &[]).await;

    let scrape = until_sample(
        &server,
        "tern_messages_dropped_total",
        r#"reason="acl""#,
        1.0,
    )
    .await;
    let value = |name: &str, labels: &str| sample(&scrape, name, labels).unwrap_or(-1.0);
    assert_eq!(
        value("tern_connections", r#"protocol="mqtt",listener="mqtt""#),
        2.0
    );
    assert_eq!(
        value("tern_connections", r#"protocol="stomp",listener="stomp""#),
        1.0
    );
    assert_eq!(
        value(
            "tern_connects_total",
            r#"protocol="mqtt",listener="mqtt",result="accepted""#
        ),
        2.0
    );
    assert_eq!(
        value("tern_messages_received_total", r#"protocol="mqtt",qos="1""#),
        3.0
    );
    assert_eq!(
        value("tern_messages_received_total", r#"protocol="mqtt",qos="0""#),
        1.0
    );
    assert_eq!(
        value("tern_messages_sent_total", r#"protocol="mqtt",qos="1""#),
        3.0
    );
    assert_eq!(
        value("tern_bytes_received_total", r#"protocol="mqtt""#),
        32.0
    );
    assert_eq!(value("tern_bytes_sent_total", r#"protocol="mqtt""#), 32.0);
    assert_eq!(
        value(
            "tern_messages_received_total",
            r#"protocol="stomp",qos="0""#
        ),
        1.0
    );
    assert_eq!(
        value(
            "tern_messages_received_total",
            r#"protocol="stomp",qos="1""#
        ),
        1.0
    );
    assert_eq!(
        value("tern_bytes_received_total", r#"protocol="stomp""#),
        7.0
    );
    assert_eq!(value("tern_messages_dropped_total", r#"reason="acl""#), 1.0);
    assert_eq!(
        value("tern_messages_dropped_total", r#"reason="no_subscribers""#),
        2.0
    );
    assert_eq!(
        value("tern_messages_dropped_total", r#"reason="queue_full""#),
        0.0
    );
    assert_eq!(value("tern_retained_messages", ""), 1.0);
    assert_eq!(value("tern_sessions", r#"state="online""#), 3.0);
    assert_eq!(value("tern_subscriptions", ""), 1.0);
    assert!(
        scrape.contains("# TYPE tern_store_commit_seconds histogram"),
        "{scrape}"
    );

    publisher.disconnect().await;
    stomp.disconnect().await;
    let scrape = until_sample(
        &server,
        "tern_connections",
        r#"protocol="mqtt",listener="mqtt""#,
        1.0,
    )
    .await;
    assert_eq!(
        sample(
            &scrape,
            "tern_disconnects_total",
            r#"protocol="mqtt",reason="client""#
        ),
        Some(1.0)
    );
    let scrape = until_sample(
        &server,
        "tern_connections",
        r#"protocol="stomp",listener="stomp""#,
        0.0,
    )
    .await;
    assert_eq!(
        sample(
            &scrape,
            "tern_disconnects_total",
            r#"protocol="stomp",reason="client""#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn metrics_content_type_refused_connects_and_unknown_paths() {
    let server = start_server_with(|s| s.limits.max_connections = 1).await;
    let scrape = get(server.http, "/metrics").await;
    assert_eq!(scrape.status, 200);
    assert!(
        scrape
            .header("content-type")
            .is_some_and(|t| t.contains("openmetrics-text")),
        "{:?}",
        scrape.headers
    );
    assert!(scrape.body.trim_end().ends_with("# EOF"));
    let _first = v4::Client::connect(server.mqtt, "cap-1").await;
    let (_second, connack) = raw_client(server.mqtt, &connect_v311("cap-2")).await;
    assert_eq!(
        connack.last(),
        Some(&0x03),
        "server unavailable: {connack:?}"
    );
    until_sample(
        &server,
        "tern_connects_total",
        r#"protocol="mqtt",listener="mqtt",result="refused""#,
        1.0,
    )
    .await;
    assert_eq!(get(server.http, "/nope").await.status, 404);
}

#[tokio::test]
async fn store_commits_and_tls_handshake_failures_are_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = dir.path().join("certs");
    tern::certs::write_dev(&certs, false, "metrics-client").expect("dev certs");
    let data = dir.path().join("data");
    let server = start_server_with(|s| {
        s.storage.enabled = true;
        s.storage.data_dir = data.clone();
        s.mqtt_tls.enabled = true;
        s.mqtt_tls.cert_file = Some(certs.join("server.pem"));
        s.mqtt_tls.key_file = Some(certs.join("server.key"));
    })
    .await;
    let tls = server
        .server
        .as_ref()
        .and_then(|s| s.addrs().mqtt_tls)
        .expect("mqtt_tls listener");
    // Plain MQTT on the TLS port: the handshake fails.
    let mut stream = raw_connect(tls).await;
    let _ = send_raw_until_close(&mut stream, &connect_v311("not-tls")).await;
    until_sample(
        &server,
        "tern_tls_handshake_failures_total",
        r#"listener="mqtt_tls""#,
        1.0,
    )
    .await;

    let mut publisher = v4::Client::connect(server.mqtt, "store-pub").await;
    publisher.publish("kept/one", 1, true, b"on disk").await;
    let scrape = get(server.http, "/metrics").await.body;
    let commits = sample(&scrape, "tern_store_commits_total", "").expect("store commits");
    assert!(commits >= 1.0, "{scrape}");
    let observed = sample(&scrape, "tern_store_commit_seconds_count", "").expect("histogram");
    assert!(observed >= 1.0, "{scrape}");
    assert_eq!(get(server.http, "/healthz").await.status, 200);
}
