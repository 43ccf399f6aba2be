//! Retained messages: stored, replaced, cleared, sent on SUBSCRIBE with the retain
//! flag; 5.0 retain handling 0/1/2 and retain-as-published.

mod common;

use common::*;
use rumqttc::v5::mqttbytes::v5::{Filter, RetainForwardRule};
use rumqttc::v5::mqttbytes::QoS;

async fn retained_message_is_sent_to_a_new_subscriber_with_the_retain_flag<C: TestClient>() {
    let server = start_server().await;
    let mut publisher = C::connect(server.mqtt, "pub").await;
    publisher.publish("r/t", 1, true, b"v1").await;
    let mut sub = C::connect(server.mqtt, "sub").await;
    sub.subscribe("r/t", 1).await;
    let m = sub.recv().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..], m.retain, m.qos),
        ("r/t", &b"v1"[..], true, 1)
    );
    sub.expect_no_message().await;
}

#[tokio::test]
async fn retained_message_is_sent_to_a_new_subscriber_with_the_retain_flag_v311() {
    retained_message_is_sent_to_a_new_subscriber_with_the_retain_flag::<v4::Client>().await;
}

#[tokio::test]
async fn retained_message_is_sent_to_a_new_subscriber_with_the_retain_flag_v5() {
    retained_message_is_sent_to_a_new_subscriber_with_the_retain_flag::<v5::Client>().await;
}

async fn retained_message_is_replaced_by_a_newer_one<C: TestClient>() {
    let server = start_server().await;
    let mut publisher = C::connect(server.mqtt, "pub").await;
    publisher.publish("r/t", 1, true, b"v1").await;
    publisher.publish("r/t", 1, true, b"v2").await;
    let mut sub = C::connect(server.mqtt, "sub").await;
    sub.subscribe("r/t", 1).await;
    assert_eq!(sub.recv().await.payload, b"v2");
    sub.expect_no_message().await;
}

#[tokio::test]
async fn retained_message_is_replaced_by_a_newer_one_v311() {
    retained_message_is_replaced_by_a_newer_one::<v4::Client>().await;
}

#[tokio::test]
async fn retained_message_is_replaced_by_a_newer_one_v5() {
    retained_message_is_replaced_by_a_newer_one::<v5::Client>().await;
}

async fn empty_retained_payload_clears_the_retained_message<C: TestClient>() {
    let server = start_server().await;
    let mut publisher = C::connect(server.mqtt, "pub").await;
    publisher.publish("r/t", 1, true, b"v1").await;
    publisher.publish("r/t", 1, true, b"").await;
    let mut sub = C::connect(server.mqtt, "sub").await;
    sub.subscribe("r/t", 1).await;
    sub.expect_no_message().await;
}

#[tokio::test]
async fn empty_retained_payload_clears_the_retained_message_v311() {
    empty_retained_payload_clears_the_retained_message::<v4::Client>().await;
}

#[tokio::test]
async fn empty_retained_payload_clears_the_retained_message_v5() {
    empty_retained_payload_clears_the_retained_message::<v5::Client>().await;
}

async fn live_messages_are_forwarded_without_the_retain_flag<C: TestClient>() {
    let server = start_server().await;
    let mut sub = C::connect(server.mqtt, "sub").await;
    sub.subscribe("r/t", 1).await;
    let mut publisher = C::connect(server.mqtt, "pub").await;
    publisher.publish("r/t", 1, true, b"live").await;
    let m = sub.recv().await;
    assert_eq!((&m.payload[..], m.retain), (&b"live"[..], false));
}

#[tokio::test]
async fn live_messages_are_forwarded_without_the_retain_flag_v311() {
    live_messages_are_forwarded_without_the_retain_flag::<v4::Client>().await;
}

#[tokio::test]
async fn live_messages_are_forwarded_without_the_retain_flag_v5() {
    live_messages_are_forwarded_without_the_retain_flag::<v5::Client>().await;
}

async fn retained_message_qos_is_capped_by_the_subscription<C: TestClient>() {
    let server = start_server().await;
    let mut publisher = C::connect(server.mqtt, "pub").await;
    publisher.publish("cap/high", 2, true, b"h").await;
    publisher.publish("cap/low", 0, true, b"l").await;
    let mut sub = C::connect(server.mqtt, "sub").await;
    sub.subscribe("cap/high", 1).await;
    assert_eq!(sub.recv().await.qos, 1);
    sub.subscribe("cap/low", 2).await;
    assert_eq!(sub.recv().await.qos, 0);
}

#[tokio::test]
async fn retained_message_qos_is_capped_by_the_subscription_v311() {
    retained_message_qos_is_capped_by_the_subscription::<v4::Client>().await;
}

#[tokio::test]
async fn retained_message_qos_is_capped_by_the_subscription_v5() {
    retained_message_qos_is_capped_by_the_subscription::<v5::Client>().await;
}

async fn wildcard_subscribe_receives_every_matching_retained_message<C: TestClient>() {
    let server = start_server().await;
    let mut publisher = C::connect(server.mqtt, "pub").await;
    for topic in ["w/a", "w/b/c", "x/a", "w"] {
        publisher.publish(topic, 1, true, topic.as_bytes()).await;
    }
    let mut sub = C::connect(server.mqtt, "sub").await;
    sub.subscribe("w/#", 1).await;
    let mut topics = vec![
        sub.recv().await.topic,
        sub.recv().await.topic,
        sub.recv().await.topic,
    ];
    topics.sort();
    assert_eq!(topics, vec!["w", "w/a", "w/b/c"]);
    sub.expect_no_message().await;
}

#[tokio::test]
async fn wildcard_subscribe_receives_every_matching_retained_message_v311() {
    wildcard_subscribe_receives_every_matching_retained_message::<v4::Client>().await;
}

#[tokio::test]
async fn wildcard_subscribe_receives_every_matching_retained_message_v5() {
    wildcard_subscribe_receives_every_matching_retained_message::<v5::Client>().await;
}

#[tokio::test]
async fn retained_message_is_sent_again_on_every_subscribe_v311() {
    let server = start_server().await;
    let mut publisher = <v4::Client as TestClient>::connect(server.mqtt, "pub").await;
    publisher.publish("again/t", 1, true, b"r").await;
    let mut sub = <v4::Client as TestClient>::connect(server.mqtt, "sub").await;
    for _ in 0..2 {
        sub.subscribe("again/t", 1).await;
        assert!(sub.recv().await.retain);
    }
}

/// Subscribes twice with `rule`; returns how many retained messages each SUBSCRIBE brought.
async fn retained_per_subscribe(rule: RetainForwardRule) -> (usize, usize) {
    let server = start_server().await;
    let mut publisher = <v5::Client as TestClient>::connect(server.mqtt, "pub").await;
    publisher.publish("rh/t", 1, true, b"r").await;
    let mut sub = v5::Client::start(v5::options(server.mqtt, "sub")).await.0;
    let mut counts = Vec::new();
    for _ in 0..2 {
        let mut filter = Filter::new("rh/t", QoS::AtLeastOnce);
        filter.retain_forward_rule = rule.clone();
        sub.subscribe_with(vec![filter], None).await;
        // A marker published after the SUBACK arrives after any retained message.
        publisher.publish("rh/t", 1, false, b"marker").await;
        let mut retained = 0;
        while sub.recv().await.payload != b"marker" {
            retained += 1;
        }
        counts.push(retained);
    }
    (counts[0], counts[1])
}

#[tokio::test]
async fn retain_handling_0_sends_retained_messages_on_every_subscribe_v5() {
    assert_eq!(
        retained_per_subscribe(RetainForwardRule::OnEverySubscribe).await,
        (1, 1)
    );
}

#[tokio::test]
async fn retain_handling_1_sends_retained_messages_only_for_a_new_subscription_v5() {
    assert_eq!(
        retained_per_subscribe(RetainForwardRule::OnNewSubscribe).await,
        (1, 0)
    );
}

#[tokio::test]
async fn retain_handling_2_never_sends_retained_messages_v5() {
    assert_eq!(
        retained_per_subscribe(RetainForwardRule::Never).await,
        (0, 0)
    );
}

#[tokio::test]
async fn retain_as_published_keeps_the_retain_flag_on_live_messages_v5() {
    let server = start_server().await;
    let mut keep = v5::Client::start(v5::options(server.mqtt, "keep")).await.0;
    let mut filter = Filter::new("rap/t", QoS::AtLeastOnce);
    filter.preserve_retain = true;
    keep.subscribe_with(vec![filter], None).await;
    let mut plain = <v5::Client as TestClient>::connect(server.mqtt, "plain").await;
    plain.subscribe("rap/t", 1).await;
    let mut publisher = <v5::Client as TestClient>::connect(server.mqtt, "pub").await;
    publisher.publish("rap/t", 1, true, b"flagged").await;
    publisher.publish("rap/t", 1, false, b"unflagged").await;
    let (a, b) = (keep.recv().await, keep.recv().await);
    assert_eq!(
        (a.retain, b.retain),
        (true, false),
        "retain-as-published keeps the publisher's flag"
    );
    let (a, b) = (plain.recv().await, plain.recv().await);
    assert_eq!((a.retain, b.retain), (false, false));
}

v31_cases!(
    clients: [
        retained_message_is_sent_to_a_new_subscriber_with_the_retain_flag,
        retained_message_is_replaced_by_a_newer_one,
        empty_retained_payload_clears_the_retained_message,
        live_messages_are_forwarded_without_the_retain_flag,
        retained_message_qos_is_capped_by_the_subscription,
        wildcard_subscribe_receives_every_matching_retained_message,
    ],
    levels: [],
);
