//! SUBSCRIBE / UNSUBSCRIBE: wildcards, the `$` rule, overlapping subscriptions,
//! SUBACK / UNSUBACK codes, invalid filters and 5.0 no-local.

mod common;

use common::*;
use rumqttc::v5::mqttbytes::v5::Filter;
use rumqttc::v5::mqttbytes::QoS;

/// Publishes QoS 1 to each topic and returns the topics `sub` received, in order,
/// after a final marker message (so absence is proven without waiting).
async fn delivered<C: TestClient>(
    sub: &mut C,
    publisher: &mut C,
    topics: &[&str],
    marker: &str,
) -> Vec<String> {
    for topic in topics {
        publisher.publish(topic, 1, false, topic.as_bytes()).await;
    }
    publisher.publish(marker, 1, false, b"marker").await;
    let mut got = Vec::new();
    loop {
        let m = sub.recv().await;
        if m.topic == marker {
            return got;
        }
        got.push(m.topic);
    }
}

async fn plus_matches_exactly_one_level<C: TestClient>() {
    let server = start_server().await;
    let mut sub = C::connect(server.mqtt, "sub").await;
    sub.subscribe("sport/+/score", 1).await;
    sub.subscribe("marker", 1).await;
    let mut publisher = C::connect(server.mqtt, "pub").await;
    let topics = [
        "sport/tennis/score",
        "sport/score",
        "sport/tennis/x/score",
        "sport//score",
        "sport/golf/score/",
    ];
    let got = delivered(&mut sub, &mut publisher, &topics, "marker").await;
    assert_eq!(got, vec!["sport/tennis/score", "sport//score"]);
}

#[tokio::test]
async fn plus_matches_exactly_one_level_v311() {
    plus_matches_exactly_one_level::<v4::Client>().await;
}

#[tokio::test]
async fn plus_matches_exactly_one_level_v5() {
    plus_matches_exactly_one_level::<v5::Client>().await;
}

async fn hash_matches_the_parent_and_every_descendant<C: TestClient>() {
    let server = start_server().await;
    let mut sub = C::connect(server.mqtt, "sub").await;
    sub.subscribe("sport/#", 1).await;
    sub.subscribe("marker", 1).await;
    let mut publisher = C::connect(server.mqtt, "pub").await;
    let topics = [
        "sport",
        "sport/tennis",
        "sport/tennis/player1/score",
        "sports",
        "other/sport",
        "sport/",
    ];
    let got = delivered(&mut sub, &mut publisher, &topics, "marker").await;
    assert_eq!(
        got,
        vec![
            "sport",
            "sport/tennis",
            "sport/tennis/player1/score",
            "sport/"
        ]
    );
}

#[tokio::test]
async fn hash_matches_the_parent_and_every_descendant_v311() {
    hash_matches_the_parent_and_every_descendant::<v4::Client>().await;
}

#[tokio::test]
async fn hash_matches_the_parent_and_every_descendant_v5() {
    hash_matches_the_parent_and_every_descendant::<v5::Client>().await;
}

async fn dollar_topics_are_not_matched_by_leading_wildcards<C: TestClient>() {
    let server = start_server().await;
    let mut wild = C::connect(server.mqtt, "wild").await;
    wild.subscribe("#", 1).await;
    wild.subscribe("+/status", 1).await;
    let mut dollar = C::connect(server.mqtt, "dollar").await;
    dollar.subscribe("$app/#", 1).await;
    dollar.subscribe("marker", 1).await;
    let mut publisher = C::connect(server.mqtt, "pub").await;
    let got = delivered(
        &mut wild,
        &mut publisher,
        &["$other/status", "$app/status", "x/status"],
        "marker",
    )
    .await;
    assert_eq!(got, vec!["x/status"]);
    let m = dollar.recv().await;
    assert_eq!(
        m.topic, "$app/status",
        "an explicit $app/# subscription matches"
    );
}

#[tokio::test]
async fn dollar_topics_are_not_matched_by_leading_wildcards_v311() {
    dollar_topics_are_not_matched_by_leading_wildcards::<v4::Client>().await;
}

#[tokio::test]
async fn dollar_topics_are_not_matched_by_leading_wildcards_v5() {
    dollar_topics_are_not_matched_by_leading_wildcards::<v5::Client>().await;
}

/// Tern merges overlapping subscriptions of one client into a single delivery at the
/// highest granted QoS (MQTT 5 allows one or several; 3.1.1 asks for the maximum QoS).
async fn overlapping_subscriptions_deliver_once_at_the_highest_qos<C: TestClient>() {
    let server = start_server().await;
    let mut sub = C::connect(server.mqtt, "sub").await;
    sub.subscribe("ov/+", 0).await;
    sub.subscribe("ov/#", 2).await;
    sub.subscribe("ov/t", 1).await;
    let mut publisher = C::connect(server.mqtt, "pub").await;
    publisher.publish("ov/t", 2, false, b"once").await;
    let m = sub.recv().await;
    assert_eq!((&m.payload[..], m.qos), (&b"once"[..], 2));
    sub.expect_no_message().await;
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once_at_the_highest_qos_v311() {
    overlapping_subscriptions_deliver_once_at_the_highest_qos::<v4::Client>().await;
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once_at_the_highest_qos_v5() {
    overlapping_subscriptions_deliver_once_at_the_highest_qos::<v5::Client>().await;
}

async fn resubscribing_replaces_the_subscription<C: TestClient>() {
    let server = start_server().await;
    let mut sub = C::connect(server.mqtt, "sub").await;
    assert_eq!(sub.subscribe("re/t", 0).await, vec![0]);
    assert_eq!(sub.subscribe("re/t", 2).await, vec![2]);
    let mut publisher = C::connect(server.mqtt, "pub").await;
    publisher.publish("re/t", 2, false, b"x").await;
    assert_eq!(sub.recv().await.qos, 2);
    sub.expect_no_message().await;
}

#[tokio::test]
async fn resubscribing_replaces_the_subscription_v311() {
    resubscribing_replaces_the_subscription::<v4::Client>().await;
}

#[tokio::test]
async fn resubscribing_replaces_the_subscription_v5() {
    resubscribing_replaces_the_subscription::<v5::Client>().await;
}

async fn unsubscribed_filter_receives_nothing_more<C: TestClient>() {
    let server = start_server().await;
    let mut sub = C::connect(server.mqtt, "sub").await;
    sub.subscribe("un/t", 1).await;
    sub.unsubscribe("un/t").await;
    let mut publisher = C::connect(server.mqtt, "pub").await;
    publisher.publish("un/t", 1, false, b"x").await;
    sub.expect_no_message().await;
}

#[tokio::test]
async fn unsubscribed_filter_receives_nothing_more_v311() {
    unsubscribed_filter_receives_nothing_more::<v4::Client>().await;
}

#[tokio::test]
async fn unsubscribed_filter_receives_nothing_more_v5() {
    unsubscribed_filter_receives_nothing_more::<v5::Client>().await;
}

async fn suback_grants_the_requested_qos_per_filter(level: u8) {
    let server = start_server().await;
    let (mut s, _) = raw_client(server.mqtt, &connect_level(level, "sub", true, 0)).await;
    send(
        &mut s,
        &subscribe_packet(
            0x0A0B,
            empty_props(level),
            &[("a", 0), ("b/+", 1), ("c/#", 2)],
        ),
    )
    .await;
    assert_eq!(
        read_packet(&mut s).await,
        Some(suback_bytes(level, 0x0A0B, &[0, 1, 2]))
    );
}

#[tokio::test]
async fn suback_grants_the_requested_qos_per_filter_v311() {
    suback_grants_the_requested_qos_per_filter(4).await;
}

#[tokio::test]
async fn suback_grants_the_requested_qos_per_filter_v5() {
    suback_grants_the_requested_qos_per_filter(5).await;
}

async fn invalid_filters_are_refused_in_suback(level: u8, refused: u8) {
    let server = start_server().await;
    let (mut s, _) = raw_client(server.mqtt, &connect_level(level, "sub", true, 0)).await;
    let filters = [
        ("a/#/b", 1),
        ("sp+rt", 1),
        ("ok/+", 1),
        ("a#", 0),
        ("$share/g", 1),
        ("#", 0),
    ];
    send(&mut s, &subscribe_packet(3, empty_props(level), &filters)).await;
    let codes = [refused, refused, 1, refused, refused, 0];
    assert_eq!(
        read_packet(&mut s).await,
        Some(suback_bytes(level, 3, &codes))
    );
    expect_alive(&mut s).await;
}

#[tokio::test]
async fn invalid_filters_are_refused_with_0x80_in_suback_v311() {
    invalid_filters_are_refused_in_suback(4, 0x80).await;
}

#[tokio::test]
async fn invalid_filters_are_refused_with_0x8f_in_suback_v5() {
    invalid_filters_are_refused_in_suback(5, 0x8F).await;
}

fn unsubscribe_packet(level: u8, packet_id: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if level == 5 {
        body.push(0x00);
    }
    for f in filters {
        body.extend(mqtt_str(f));
    }
    frame(0xA2, &body)
}

#[tokio::test]
async fn unsuback_echoes_the_packet_id_v311() {
    let server = start_server().await;
    let mut s = raw_subscriber(server.mqtt, 4, "sub", "u/a", 1).await;
    send(&mut s, &unsubscribe_packet(4, 0x0102, &["u/a", "u/none"])).await;
    assert_eq!(
        read_packet(&mut s).await,
        Some(vec![0xB0, 0x02, 0x01, 0x02])
    );
}

#[tokio::test]
async fn unsuback_reports_success_or_no_subscription_existed_per_filter_v5() {
    let server = start_server().await;
    let mut s = raw_subscriber(server.mqtt, 5, "sub", "u/a", 1).await;
    send(&mut s, &unsubscribe_packet(5, 0x0102, &["u/a", "u/none"])).await;
    assert_eq!(
        read_packet(&mut s).await,
        Some(vec![0xB0, 0x05, 0x01, 0x02, 0x00, 0x00, 0x11])
    );
}

#[tokio::test]
async fn no_local_subscription_does_not_receive_own_messages_v5() {
    let server = start_server().await;
    let mut me = v5::Client::start(v5::options(server.mqtt, "me")).await.0;
    let mut filter = Filter::new("nl/t", QoS::AtLeastOnce);
    filter.nolocal = true;
    assert_eq!(me.subscribe_with(vec![filter], None).await, vec![1]);
    let mut other = <v5::Client as TestClient>::connect(server.mqtt, "other").await;
    other.subscribe("nl/t", 1).await;

    me.publish("nl/t", 1, false, b"mine").await;
    assert_eq!(other.recv().await.payload, b"mine");
    other.publish("nl/t", 1, false, b"theirs").await;
    assert_eq!(
        me.recv().await.payload,
        b"theirs",
        "only own messages are skipped"
    );
    me.expect_no_message().await;
}

v31_cases!(
    clients: [
        plus_matches_exactly_one_level,
        hash_matches_the_parent_and_every_descendant,
        dollar_topics_are_not_matched_by_leading_wildcards,
        overlapping_subscriptions_deliver_once_at_the_highest_qos,
        resubscribing_replaces_the_subscription,
        unsubscribed_filter_receives_nothing_more,
    ],
    levels: [suback_grants_the_requested_qos_per_filter],
);
