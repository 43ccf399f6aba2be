//! STOMP /queue/<name>: point-to-point delivery, competing consumers, kept until
//! acknowledged, redelivery after NACK or disconnect, and the queue bound.

mod common;

use std::collections::HashSet;

use common::stomp::{body, frame, StompClient};
use common::*;
use tern_stomp::Command;

async fn messages_wait_for_a_consumer(version: &str) {
    let server = start_server().await;
    let mut producer = StompClient::connect_version(server.stomp, version).await;
    for i in 0..3 {
        producer
            .send("/queue/jobs", i.to_string().as_bytes(), &[])
            .await;
    }
    let mut consumer = StompClient::connect_version(server.stomp, version).await;
    consumer.subscribe("q", "/queue/jobs", "auto").await;
    for i in 0..3 {
        let m = consumer.message().await;
        assert_eq!(m.header("destination"), Some("/queue/jobs"));
        assert_eq!(m.header("subscription"), Some("q"));
        assert_eq!(body(&m), i.to_string());
    }
    consumer.expect_nothing().await;
}

async fn competing_consumers_each_get_a_share_and_no_message_twice(version: &str) {
    let server = start_server().await;
    let mut a = StompClient::connect_version(server.stomp, version).await;
    let mut b = StompClient::connect_version(server.stomp, version).await;
    a.subscribe("a", "/queue/work", "auto").await;
    b.subscribe("b", "/queue/work", "auto").await;
    let mut producer = StompClient::connect_version(server.stomp, version).await;
    for i in 0..10 {
        producer
            .send("/queue/work", i.to_string().as_bytes(), &[])
            .await;
    }
    let from_a: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(body(&a.message().await));
        }
        v
    };
    let mut from_b = Vec::new();
    for _ in 0..5 {
        from_b.push(body(&b.message().await));
    }
    a.expect_nothing().await;
    b.expect_nothing().await;
    let all: HashSet<String> = from_a.iter().chain(&from_b).cloned().collect();
    assert_eq!(all.len(), 10, "{from_a:?} {from_b:?}");
}

async fn unacknowledged_messages_go_to_another_consumer_when_theirs_disconnects(version: &str) {
    let server = start_server().await;
    let mut first = StompClient::connect_version(server.stomp, version).await;
    first
        .subscribe("q", "/queue/held", "client-individual")
        .await;
    let mut producer = StompClient::connect_version(server.stomp, version).await;
    producer.send("/queue/held", b"one", &[]).await;
    producer.send("/queue/held", b"two", &[]).await;
    let m1 = first.message().await;
    let _m2 = first.message().await;
    first.ack_message(Command::Ack, &m1, &[]).await;
    drop(first); // vanishes with "two" unacknowledged
    let mut second = StompClient::connect_version(server.stomp, version).await;
    second
        .subscribe("q", "/queue/held", "client-individual")
        .await;
    let m = second.message().await;
    assert_eq!(body(&m), "two");
    second.expect_nothing().await;
}

#[tokio::test]
async fn nack_redelivers_to_the_next_consumer() {
    let server = start_server().await;
    let mut c = StompClient::connect(server.stomp).await;
    c.subscribe("q", "/queue/retry", "client-individual").await;
    c.send("/queue/retry", b"flaky", &[]).await;
    let m = c.message().await;
    c.ack_message(Command::Nack, &m, &[]).await;
    let again = c.message().await;
    assert_eq!(body(&again), "flaky");
    assert_ne!(again.header("message-id"), m.header("message-id"));
    c.ack_message(Command::Ack, &again, &[]).await;
    c.expect_nothing().await;
    assert_eq!(
        server
            .server
            .as_ref()
            .unwrap()
            .router()
            .queues()
            .depth("retry")
            .unacked,
        0
    );
}

async fn unsubscribe_gives_unacknowledged_messages_back(version: &str) {
    let server = start_server().await;
    let mut a = StompClient::connect_version(server.stomp, version).await;
    a.subscribe("q", "/queue/back", "client").await;
    a.send("/queue/back", b"m", &[]).await;
    a.message().await;
    a.send_with_receipt(frame(Command::Unsubscribe, &[("id", "q")], b""))
        .await;
    let mut b = StompClient::connect_version(server.stomp, version).await;
    b.subscribe("q", "/queue/back", "auto").await;
    assert_eq!(body(&b.message().await), "m");
}

async fn a_full_queue_answers_the_sender_with_an_error(version: &str) {
    let server = start_server_with(|s| s.limits.queue_max_messages = 2).await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.send("/queue/small", b"1", &[]).await;
    c.send("/queue/small", b"2", &[]).await;
    c.send_frame(&frame(
        Command::Send,
        &[("destination", "/queue/small"), ("receipt", "r3")],
        b"3",
    ))
    .await;
    let e = c.expect_error().await;
    assert!(e.header("message").unwrap().contains("full"), "{e:?}");
    assert_eq!(e.header("receipt-id"), Some("r3"));
    // Nothing was lost: both accepted messages are still there.
    let mut consumer = StompClient::connect_version(server.stomp, version).await;
    consumer.subscribe("q", "/queue/small", "auto").await;
    assert_eq!(body(&consumer.message().await), "1");
    assert_eq!(body(&consumer.message().await), "2");
}

async fn two_subscriptions_to_one_queue_on_one_connection_take_turns(version: &str) {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.subscribe("x", "/queue/shared", "auto").await;
    c.subscribe("y", "/queue/shared", "auto").await;
    for i in 0..4 {
        c.send("/queue/shared", i.to_string().as_bytes(), &[]).await;
    }
    let mut subs = Vec::new();
    for _ in 0..4 {
        subs.push(
            c.message()
                .await
                .header("subscription")
                .unwrap()
                .to_string(),
        );
    }
    c.expect_nothing().await;
    assert_eq!(subs.iter().filter(|s| *s == "x").count(), 2, "{subs:?}");
}

async fn ack_window_spreads_unacknowledged_work(version: &str) {
    let server = start_server_with(|s| s.limits.stomp_max_unacked = 1).await;
    let mut a = StompClient::connect_version(server.stomp, version).await;
    let mut b = StompClient::connect_version(server.stomp, version).await;
    a.subscribe("a", "/queue/slow", "client").await;
    b.subscribe("b", "/queue/slow", "client").await;
    let mut p = StompClient::connect_version(server.stomp, version).await;
    for i in 0..3 {
        p.send("/queue/slow", i.to_string().as_bytes(), &[]).await;
    }
    let ma = a.message().await;
    let mb = b.message().await;
    a.expect_nothing().await;
    b.expect_nothing().await;
    a.ack_message(Command::Ack, &ma, &[]).await;
    let next = a.message().await;
    assert_eq!(body(&next), "2");
    assert_eq!(body(&mb), "1");
}

// Behaviour meant to be the same in STOMP 1.0, 1.1 and 1.2: each case runs in each.
each_stomp_version!(
    messages_wait_for_a_consumer,
    competing_consumers_each_get_a_share_and_no_message_twice,
    unacknowledged_messages_go_to_another_consumer_when_theirs_disconnects,
    unsubscribe_gives_unacknowledged_messages_back,
    a_full_queue_answers_the_sender_with_an_error,
    two_subscriptions_to_one_queue_on_one_connection_take_turns,
    ack_window_spreads_unacknowledged_work,
);
