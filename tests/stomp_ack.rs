//! STOMP ack modes: auto (at most once), client (cumulative) and
//! client-individual, the 1.1 and 1.2 ACK forms, and unknown ids.

mod common;

use common::stomp::{body, frame, StompClient};
use common::*;
use tern_stomp::Command;

async fn three_queue_messages(
    c: &mut StompClient,
    queue: &str,
    ack: &str,
) -> Vec<tern_stomp::Frame> {
    c.subscribe("s", &format!("/queue/{queue}"), ack).await;
    for i in 1..=3 {
        c.send(&format!("/queue/{queue}"), i.to_string().as_bytes(), &[])
            .await;
    }
    let mut out = Vec::new();
    for _ in 0..3 {
        out.push(c.message().await);
    }
    out
}

fn depth(server: &TestServer, queue: &str) -> tern::core::queue::QueueDepth {
    server
        .server
        .as_ref()
        .unwrap()
        .router()
        .queues()
        .depth(queue)
}

async fn client_ack_is_cumulative(version: &str) {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    let ms = three_queue_messages(&mut c, "cumulative", "client").await;
    let acks = ms.iter().filter(|m| m.header("ack").is_some()).count();
    assert_eq!(
        acks,
        if version == "1.2" { 3 } else { 0 },
        "only 1.2 has the ack header"
    );
    c.ack_message(Command::Ack, &ms[1], &[]).await;
    assert_eq!(depth(&server, "cumulative").unacked, 1);
    // The first one was covered by the cumulative ACK: acking it again is an error.
    let f = c.ack_frame(Command::Ack, &ms[0], &[]);
    c.send_frame(&f).await;
    let e = c.expect_error().await;
    assert!(
        e.header("message").unwrap().contains("unknown message id"),
        "{e:?}"
    );
}

#[tokio::test]
async fn client_individual_ack_covers_one_message() {
    let server = start_server().await;
    let mut c = StompClient::connect(server.stomp).await;
    let ms = three_queue_messages(&mut c, "individual", "client-individual").await;
    c.ack_message(Command::Ack, &ms[1], &[]).await;
    assert_eq!(depth(&server, "individual").unacked, 2);
    c.ack_message(Command::Ack, &ms[0], &[]).await;
    c.ack_message(Command::Ack, &ms[2], &[]).await;
    assert_eq!(depth(&server, "individual").unacked, 0);
}

#[tokio::test]
async fn client_nack_is_cumulative_too() {
    let server = start_server().await;
    let mut c = StompClient::connect(server.stomp).await;
    let ms = three_queue_messages(&mut c, "nackall", "client").await;
    c.ack_message(Command::Nack, &ms[2], &[]).await;
    // All three come back, in order.
    let again: Vec<String> = [c.message().await, c.message().await, c.message().await]
        .iter()
        .map(body)
        .collect();
    assert_eq!(again, ["1", "2", "3"]);
}

async fn auto_ack_needs_no_ack_and_acking_is_an_error(version: &str) {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    let ms = three_queue_messages(&mut c, "auto", "auto").await;
    assert_eq!(depth(&server, "auto").unacked, 0);
    let f = frame(
        Command::Ack,
        &[("id", ms[0].header("message-id").unwrap())],
        b"",
    );
    c.send_frame(&f).await;
    c.expect_error().await;
}

#[tokio::test]
async fn stomp_1_1_acks_with_message_id_and_subscription() {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, "1.1").await;
    let ms = three_queue_messages(&mut c, "v11", "client-individual").await;
    assert_eq!(ms[0].header("ack"), None, "1.1 has no ack header");
    for m in &ms {
        c.ack_message(Command::Ack, m, &[]).await;
    }
    assert_eq!(depth(&server, "v11").unacked, 0);
}

/// Clients in the wild send a `subscription` that is not the subscription's id
/// (RabbitMQ accepts it): the message id alone names the message.
#[tokio::test]
async fn stomp_1_1_ack_and_nack_with_another_subscription_still_settle_the_message() {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, "1.1").await;
    let ms = three_queue_messages(&mut c, "v11hint", "client-individual").await;
    let by_id = |m: &tern_stomp::Frame, command, subscription: Option<&str>| {
        let mut headers = vec![("message-id", m.header("message-id").unwrap())];
        headers.extend(subscription.map(|s| ("subscription", s)));
        frame(command, &headers, b"")
    };
    c.send_with_receipt(by_id(&ms[0], Command::Ack, Some("other")))
        .await;
    assert_eq!(depth(&server, "v11hint").unacked, 2);
    // Without the header, too.
    c.send_with_receipt(by_id(&ms[1], Command::Ack, None)).await;
    assert_eq!(depth(&server, "v11hint").unacked, 1);
    // Inside a transaction, settled at COMMIT.
    c.send_with_receipt(frame(Command::Begin, &[("transaction", "t")], b""))
        .await;
    c.send_frame(&by_id(&ms[2], Command::Nack, Some("other")).with_header("transaction", "t"))
        .await;
    c.send_with_receipt(frame(Command::Commit, &[("transaction", "t")], b""))
        .await;
    // NACKed: back to the front of the queue, redelivered to us.
    let again = c.message().await;
    assert_eq!(body(&again), "3");
    assert_eq!(depth(&server, "v11hint").ready, 0);
    assert_eq!(depth(&server, "v11hint").unacked, 1);
}

async fn ack_of_an_unknown_id_is_an_error_with_the_receipt_id(version: &str) {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    // The version's own form: 1.2 acks by `id`, 1.0 and 1.1 by `message-id`.
    let headers: &[(&str, &str)] = if version == "1.2" {
        &[("id", "no-such-id"), ("receipt", "r9")]
    } else {
        &[
            ("message-id", "no-such-id"),
            ("subscription", "s"),
            ("receipt", "r9"),
        ]
    };
    c.send_frame(&frame(Command::Ack, headers, b"")).await;
    let e = c.expect_error().await;
    assert_eq!(e.header("receipt-id"), Some("r9"));
    assert!(e.header("message").unwrap().contains("no-such-id"), "{e:?}");
}

#[tokio::test]
async fn topic_messages_with_client_ack_are_tracked_and_nack_drops_them() {
    let server = start_server().await;
    let mut c = StompClient::connect(server.stomp).await;
    c.subscribe("t", "/topic/acked", "client-individual").await;
    c.send("/topic/acked", b"x", &[]).await;
    let m = c.message().await;
    assert!(m.header("ack").is_some());
    c.ack_message(Command::Nack, &m, &[]).await;
    c.expect_nothing().await;
    // Acknowledged once: a second ACK is unknown.
    let f = c.ack_frame(Command::Ack, &m, &[]);
    c.send_frame(&f).await;
    c.expect_error().await;
}

async fn deliveries_pause_at_the_unacknowledged_limit(version: &str) {
    let server = start_server_with(|s| s.limits.stomp_max_unacked = 2).await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.subscribe("t", "/topic/window", "client").await;
    let mut p = StompClient::connect_version(server.stomp, version).await;
    for i in 0..4 {
        p.send("/topic/window", i.to_string().as_bytes(), &[]).await;
    }
    let _m0 = c.message().await;
    let m1 = c.message().await;
    c.expect_nothing().await;
    c.ack_message(Command::Ack, &m1, &[]).await;
    assert_eq!(body(&c.message().await), "2");
    assert_eq!(body(&c.message().await), "3");
}

// Behaviour meant to be the same in STOMP 1.0, 1.1 and 1.2: each case runs in each.
each_stomp_version!(
    client_ack_is_cumulative,
    auto_ack_needs_no_ack_and_acking_is_an_error,
    ack_of_an_unknown_id_is_an_error_with_the_receipt_id,
    deliveries_pause_at_the_unacknowledged_limit,
);
