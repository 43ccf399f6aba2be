//! STOMP SEND / SUBSCRIBE / MESSAGE over /topic: wildcards, one MESSAGE per
//! subscription, headers, bodies, receipts, retained messages, UNSUBSCRIBE.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::stomp::{body, frame, StompClient};
use common::*;
use tern_stomp::Command;

async fn send_reaches_a_topic_subscriber_with_the_message_headers(version: &str) {
    let server = start_server().await;
    let mut sub = StompClient::connect_version(server.stomp, version).await;
    sub.subscribe("s1", "/topic/sensors/room1/temp", "auto")
        .await;
    let mut publisher = StompClient::connect_version(server.stomp, version).await;
    publisher
        .send(
            "/topic/sensors/room1/temp",
            b"21.5",
            &[("content-type", "text/plain"), ("x-unit", "celsius")],
        )
        .await;
    let m = sub.message().await;
    assert_eq!(m.header("destination"), Some("/topic/sensors/room1/temp"));
    assert_eq!(m.header("subscription"), Some("s1"));
    assert!(m.header("message-id").is_some());
    assert_eq!(m.header("ack"), None, "ack=auto carries no ack header");
    assert_eq!(m.header("content-type"), Some("text/plain"));
    assert_eq!(m.header("content-length"), Some("4"));
    assert_eq!(m.header("x-unit"), Some("celsius"));
    assert_eq!(body(&m), "21.5");
}

async fn wildcard_subscriptions_match_like_mqtt(version: &str) {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.subscribe("plus", "/topic/sensors/+/temp", "auto").await;
    c.subscribe("hash", "/topic/alerts/#", "auto").await;
    c.send("/topic/sensors/room1/temp", b"a", &[]).await;
    c.send("/topic/sensors/room1/humidity", b"no", &[]).await;
    c.send("/topic/alerts", b"b", &[]).await;
    c.send("/topic/alerts/fire/floor2", b"c", &[]).await;
    let got: Vec<(String, String, String)> =
        [c.message().await, c.message().await, c.message().await]
            .iter()
            .map(|m| {
                (
                    m.header("subscription").unwrap().to_string(),
                    m.header("destination").unwrap().to_string(),
                    body(m),
                )
            })
            .collect();
    assert_eq!(
        got,
        [
            (
                "plus".into(),
                "/topic/sensors/room1/temp".into(),
                "a".into()
            ),
            ("hash".into(), "/topic/alerts".into(), "b".into()),
            (
                "hash".into(),
                "/topic/alerts/fire/floor2".into(),
                "c".into()
            ),
        ]
    );
    c.expect_nothing().await;
}

async fn overlapping_subscriptions_each_get_their_own_message(version: &str) {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.subscribe("exact", "/topic/a/b", "auto").await;
    c.subscribe("wild", "/topic/a/#", "auto").await;
    c.send("/topic/a/b", b"x", &[]).await;
    let (m1, m2) = (c.message().await, c.message().await);
    let mut subs = [
        m1.header("subscription").unwrap(),
        m2.header("subscription").unwrap(),
    ];
    subs.sort();
    assert_eq!(subs, ["exact", "wild"]);
    assert_ne!(m1.header("message-id"), m2.header("message-id"));
    c.expect_nothing().await;
}

async fn two_subscriptions_to_the_same_destination_each_get_the_message(version: &str) {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.subscribe("one", "/topic/same", "auto").await;
    c.subscribe("two", "/topic/same", "client-individual").await;
    c.send("/topic/same", b"x", &[]).await;
    let (m1, m2) = (c.message().await, c.message().await);
    assert_eq!(m1.header("subscription"), Some("one"));
    assert_eq!(m2.header("subscription"), Some("two"));
    assert_eq!(m1.header("ack"), None);
    assert_eq!(
        m2.header("ack").is_some(),
        version == "1.2",
        "only 1.2 has the ack header"
    );
    // Unsubscribing one leaves the other working.
    c.send_with_receipt(frame(Command::Unsubscribe, &[("id", "one")], b""))
        .await;
    c.send("/topic/same", b"y", &[]).await;
    let m = c.message().await;
    assert_eq!(m.header("subscription"), Some("two"));
    assert_eq!(body(&m), "y");
    c.expect_nothing().await;
}

async fn unsubscribe_stops_deliveries(version: &str) {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.subscribe("s", "/topic/t", "auto").await;
    c.send_with_receipt(frame(Command::Unsubscribe, &[("id", "s")], b""))
        .await;
    c.send("/topic/t", b"x", &[]).await;
    c.expect_nothing().await;
}

async fn binary_bodies_with_nul_bytes_pass_unchanged(version: &str) {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.subscribe("s", "/topic/bin", "auto").await;
    let payload: Vec<u8> = (0..=255u8).chain([0, 0, 0]).collect();
    c.send(
        "/topic/bin",
        &payload,
        &[("content-type", "application/octet-stream")],
    )
    .await;
    let m = c.message().await;
    assert_eq!(&m.body[..], &payload[..]);
    assert_eq!(m.header("content-length"), Some("259"));
}

async fn empty_body_has_content_length_zero(version: &str) {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.subscribe("s", "/topic/empty", "auto").await;
    c.send("/topic/empty", b"", &[]).await;
    let m = c.message().await;
    assert_eq!(m.header("content-length"), Some("0"));
    assert!(m.body.is_empty());
}

#[tokio::test]
async fn escaped_header_values_round_trip() {
    let server = start_server().await;
    let mut c = StompClient::connect(server.stomp).await;
    c.subscribe("s", "/topic/esc", "auto").await;
    let tricky = "a:b\\c\nd";
    c.send(
        "/topic/esc",
        b"x",
        &[("x-tricky", tricky), ("x:colon", "v")],
    )
    .await;
    let m = c.message().await;
    assert_eq!(m.header("x-tricky"), Some(tricky));
    assert_eq!(m.header("x:colon"), Some("v"));
    // The raw wire form is escaped.
    let mut raw = raw_connect(server.stomp).await;
    send(&mut raw, b"CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:r\ndestination:/topic/esc\nreceipt:1\n\n\0").await;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("RECEIPT") {
        let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut raw, &mut buf))
            .await
            .unwrap()
            .unwrap();
        seen.extend_from_slice(&buf[..n]);
    }
    c.send("/topic/esc", b"x", &[("x-tricky", tricky)]).await;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("MESSAGE") || !seen.ends_with(b"\0") {
        let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut raw, &mut buf))
            .await
            .unwrap()
            .unwrap();
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("x-tricky:a\\cb\\\\c\\nd\n"), "{text}");
}

async fn every_frame_with_a_receipt_header_gets_a_receipt(version: &str) {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    for f in [
        frame(
            Command::Subscribe,
            &[("id", "s"), ("destination", "/topic/r")],
            b"",
        ),
        frame(Command::Send, &[("destination", "/topic/none")], b"x"),
        frame(Command::Begin, &[("transaction", "t")], b""),
        frame(Command::Abort, &[("transaction", "t")], b""),
        frame(Command::Unsubscribe, &[("id", "s")], b""),
    ] {
        let early = c.send_with_receipt(f).await;
        assert!(early.is_empty(), "{early:?}");
    }
    c.disconnect().await;
}

async fn retained_messages_are_delivered_on_subscribe(version: &str) {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.send("/topic/status/dev1", b"online", &[("retain", "true")])
        .await;
    c.send("/topic/status/dev2", b"offline", &[("retain", "true")])
        .await;
    let mut late = StompClient::connect_version(server.stomp, version).await;
    late.subscribe("s", "/topic/status/+", "auto").await;
    let mut got = [late.message().await, late.message().await];
    got.sort_by_key(|m| m.header("destination").unwrap().to_string());
    assert_eq!(got[0].header("destination"), Some("/topic/status/dev1"));
    assert_eq!(got[0].header("retain"), Some("true"));
    assert_eq!(body(&got[0]), "online");
    assert_eq!(body(&got[1]), "offline");
    // Live messages are not marked retained.
    c.send("/topic/status/dev1", b"again", &[]).await;
    let m = late.message().await;
    assert_eq!(m.header("retain"), None);
}

async fn retained_messages_go_only_to_the_new_subscription(version: &str) {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.send("/topic/r/x", b"kept", &[("retain", "true")]).await;
    c.subscribe("first", "/topic/r/x", "auto").await;
    assert_eq!(c.message().await.header("subscription"), Some("first"));
    c.subscribe("second", "/topic/r/x", "auto").await;
    assert_eq!(c.message().await.header("subscription"), Some("second"));
    c.expect_nothing().await;
}

async fn expires_passes_through_and_expired_messages_are_not_delivered(version: &str) {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.subscribe("s", "/topic/exp", "auto").await;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let later = (now_ms + 60_000).to_string();
    c.send("/topic/exp", b"fresh", &[("expires", &later)]).await;
    let m = c.message().await;
    let expires: u64 = m.header("expires").unwrap().parse().unwrap();
    assert!(expires.abs_diff(now_ms + 60_000) < 2_000, "{expires}");
    // Retained with a short life: gone by the time someone subscribes.
    let soon = (now_ms + 200).to_string();
    c.send(
        "/topic/exp2",
        b"stale",
        &[("expires", &soon), ("retain", "true")],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.subscribe("late", "/topic/exp2", "auto").await;
    c.expect_nothing().await;
}

async fn reply_to_and_correlation_id_pass_through(version: &str) {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.subscribe("s", "/topic/req", "auto").await;
    c.send(
        "/topic/req",
        b"?",
        &[("reply-to", "/topic/replies/42"), ("correlation-id", "c-1")],
    )
    .await;
    let m = c.message().await;
    assert_eq!(m.header("reply-to"), Some("/topic/replies/42"));
    assert_eq!(m.header("correlation-id"), Some("c-1"));
    c.send("/topic/req", b"?", &[("reply-to", "/queue/answers")])
        .await;
    assert_eq!(c.message().await.header("reply-to"), Some("/queue/answers"));
}

#[tokio::test]
async fn every_version_receives_messages() {
    let server = start_server().await;
    for version in ["1.0", "1.1", "1.2"] {
        let mut c = StompClient::connect_version(server.stomp, version).await;
        let dest = format!("/topic/v/{version}");
        c.subscribe("s", &dest, "auto").await;
        c.send(&dest, b"hello", &[("x-h", "a\\b")]).await;
        let m = c.message().await;
        assert_eq!(body(&m), "hello", "{version}");
        assert_eq!(m.header("x-h"), Some("a\\b"), "{version}");
        c.disconnect().await;
    }
}

async fn shared_subscriptions_work_through_topic_destinations(version: &str) {
    let server = start_server().await;
    let mut a = StompClient::connect_version(server.stomp, version).await;
    let mut b = StompClient::connect_version(server.stomp, version).await;
    a.subscribe("s", "/topic/$share/workers/jobs/+", "auto")
        .await;
    b.subscribe("s", "/topic/$share/workers/jobs/+", "auto")
        .await;
    let mut p = StompClient::connect_version(server.stomp, version).await;
    for i in 0..4 {
        p.send("/topic/jobs/x", i.to_string().as_bytes(), &[]).await;
    }
    let (mut from_a, mut from_b) = (0, 0);
    for _ in 0..4 {
        tokio::select! {
            m = a.message() => { assert_eq!(m.header("destination"), Some("/topic/jobs/x")); from_a += 1 }
            m = b.message() => { assert_eq!(m.header("destination"), Some("/topic/jobs/x")); from_b += 1 }
        }
    }
    assert_eq!(from_a + from_b, 4);
    a.expect_nothing().await;
    b.expect_nothing().await;
}

// Behaviour meant to be the same in STOMP 1.0, 1.1 and 1.2: each case runs in each.
each_stomp_version!(
    send_reaches_a_topic_subscriber_with_the_message_headers,
    wildcard_subscriptions_match_like_mqtt,
    overlapping_subscriptions_each_get_their_own_message,
    two_subscriptions_to_the_same_destination_each_get_the_message,
    unsubscribe_stops_deliveries,
    binary_bodies_with_nul_bytes_pass_unchanged,
    empty_body_has_content_length_zero,
    every_frame_with_a_receipt_header_gets_a_receipt,
    retained_messages_are_delivered_on_subscribe,
    retained_messages_go_only_to_the_new_subscription,
    expires_passes_through_and_expired_messages_are_not_delivered,
    reply_to_and_correlation_id_pass_through,
    shared_subscriptions_work_through_topic_destinations,
);
