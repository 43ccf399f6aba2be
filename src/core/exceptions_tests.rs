//! A subscription's exceptions drop exactly their topics on every path the
//! core delivers by: live publishes, retained messages on subscribe, the queue
//! of an offline persistent session, and shared groups.

use std::sync::Arc;

use bytes::Bytes;

use crate::core::exceptions::Exceptions;
use crate::core::message::{Delivery, Message, QoS};
use crate::core::router::Router;
use crate::core::session::{OverflowPolicy, QueueLimits, Session, SubscriptionOptions};
use crate::core::topic::Filter;

fn router() -> Arc<Router> {
    Arc::new(Router::new(QueueLimits {
        max_queued: 100,
        max_queued_bytes: 0,
        overflow: OverflowPolicy::DropNew,
        max_queued_age_ms: 0,
    }))
}

fn filter(raw: &str) -> Filter {
    Filter::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
}

fn options(exceptions: &[&str]) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
        subscription_id: None,
        exceptions: Exceptions::new(exceptions.iter().map(|e| filter(e)).collect()),
        selector: None,
    }
}

fn message(topic: &str, retain: bool) -> Arc<Message> {
    Arc::new(Message::new(
        topic,
        Bytes::from_static(b"x"),
        QoS::AtLeastOnce,
        retain,
    ))
}

/// The topics queued for `session`, in order, taken from its queue.
fn queued_topics(session: &Session) -> Vec<String> {
    let mut out: Vec<Delivery> = Vec::new();
    session.take_pending(usize::MAX, &mut out);
    out.iter().map(|d| d.message.topic.to_string()).collect()
}

const TOPICS: [&str; 4] = [
    "a/b",
    "test/nosubscribe",
    "test/other",
    "test/nosubscribe/x",
];

#[test]
fn live_publishes_skip_exactly_the_exception_topics() {
    let router = router();
    let carved = router
        .attach(
            &Arc::from("carved"),
            &crate::core::session::SessionOwner::Anonymous,
            true,
            0,
        )
        .expect("an anonymous client attaches")
        .session;
    let plain = router
        .attach(
            &Arc::from("plain"),
            &crate::core::session::SessionOwner::Anonymous,
            true,
            0,
        )
        .expect("an anonymous client attaches")
        .session;
    router.subscribe(&carved, filter("#"), options(&["test/nosubscribe"]));
    router.subscribe(&plain, filter("#"), options(&[]));
    for topic in TOPICS {
        router.publish(message(topic, false));
    }
    assert_eq!(
        queued_topics(&carved),
        ["a/b", "test/other", "test/nosubscribe/x"]
    );
    assert_eq!(queued_topics(&plain), TOPICS);
}

#[test]
fn an_exception_of_one_subscription_does_not_hide_the_topic_from_another_of_the_same_session() {
    // A client may hold `test/#` with an exception and be granted the topic
    // through no other filter; but with two filters each decides for itself.
    let router = router();
    let session = router
        .attach(
            &Arc::from("c"),
            &crate::core::session::SessionOwner::Anonymous,
            true,
            0,
        )
        .expect("an anonymous client attaches")
        .session;
    router.subscribe(&session, filter("#"), options(&["x/+"]));
    router.subscribe(&session, filter("x/1"), options(&[]));
    router.publish(message("x/1", false));
    router.publish(message("x/2", false));
    assert_eq!(queued_topics(&session), ["x/1"]);
}

#[test]
fn retained_messages_on_subscribe_skip_the_exception_topics() {
    let router = router();
    for topic in TOPICS {
        router.publish(message(topic, true));
    }
    let mut carved: Vec<String> = router
        .retained_matching(&filter("#"), &options(&["test/nosubscribe"]).exceptions)
        .iter()
        .map(|m| m.topic.to_string())
        .collect();
    carved.sort();
    assert_eq!(carved, ["a/b", "test/nosubscribe/x", "test/other"]);
    let all = router.retained_matching(&filter("#"), &Exceptions::NONE);
    assert_eq!(all.len(), TOPICS.len());
}

#[tokio::test]
async fn an_offline_persistent_session_queues_nothing_of_its_exceptions() {
    let router = router();
    let attached = router
        .attach(
            &Arc::from("sleeper"),
            &crate::core::session::SessionOwner::Anonymous,
            false,
            600,
        )
        .expect("an anonymous client attaches");
    let session = Arc::clone(&attached.session);
    router.subscribe(&session, filter("test/+"), options(&["test/nosubscribe"]));
    router.detach(&session, attached.connection_id);
    assert!(!session.is_connected());
    for topic in TOPICS {
        router.publish(message(topic, false));
    }
    assert_eq!(queued_topics(&session), ["test/other"]);
}

#[test]
fn a_shared_group_gives_the_message_to_a_member_that_may_have_it_or_to_none() {
    let router = router();
    let carved = router
        .attach(
            &Arc::from("carved"),
            &crate::core::session::SessionOwner::Anonymous,
            true,
            0,
        )
        .expect("an anonymous client attaches")
        .session;
    let plain = router
        .attach(
            &Arc::from("plain"),
            &crate::core::session::SessionOwner::Anonymous,
            true,
            0,
        )
        .expect("an anonymous client attaches")
        .session;
    router.subscribe(&carved, filter("$share/g/#"), options(&["secret/#"]));
    router.subscribe(&plain, filter("$share/g/#"), options(&[]));
    for _ in 0..4 {
        router.publish(message("secret/k", false));
    }
    assert_eq!(queued_topics(&carved), Vec::<String>::new());
    assert_eq!(queued_topics(&plain).len(), 4, "every turn goes to plain");

    // Other topics still take turns between both members.
    for _ in 0..4 {
        router.publish(message("public/x", false));
    }
    assert_eq!(queued_topics(&carved).len(), 2);
    assert_eq!(queued_topics(&plain).len(), 2);

    // When no member may have it, nobody gets it.
    router.unsubscribe(&plain, "$share/g/#");
    assert_eq!(router.publish(message("secret/k", false)), 0);
    assert_eq!(queued_topics(&carved), Vec::<String>::new());
}

#[test]
fn recheck_replaces_drops_or_revokes_and_stores_nothing() {
    let router = router();
    let session = router
        .attach(
            &Arc::from("c"),
            &crate::core::session::SessionOwner::Anonymous,
            true,
            0,
        )
        .expect("an anonymous client attaches")
        .session;
    router.subscribe(&session, filter("#"), options(&[]));
    router.subscribe(&session, filter("gone/+"), options(&[]));
    // A new deny rule overlapping `#` and covering `gone/+`.
    let (revoked, changed) = router.recheck_subscriptions(&session, |f| {
        (f.as_str() == "#").then(|| Exceptions::new(vec![filter("gone/#")]))
    });
    assert_eq!(revoked, ["gone/+"]);
    assert_eq!(changed, 1);
    router.publish(message("gone/x", false));
    router.publish(message("kept", false));
    assert_eq!(queued_topics(&session), ["kept"]);
    assert_eq!(session.exceptions_of("#").filters().len(), 1);

    // The rule is removed again: the exception goes.
    let (revoked, changed) = router.recheck_subscriptions(&session, |_| Some(Exceptions::NONE));
    assert_eq!((revoked.len(), changed), (0, 1));
    router.publish(message("gone/x", false));
    assert_eq!(queued_topics(&session), ["gone/x"]);

    // Nothing changed: nothing rewritten.
    let (_, changed) = router.recheck_subscriptions(&session, |_| Some(Exceptions::NONE));
    assert_eq!(changed, 0);
}

#[test]
fn exceptions_are_not_part_of_the_stored_session_record() {
    let carved = crate::core::router::persist::session_record(
        60,
        None,
        &crate::core::session::SessionOwner::Anonymous,
        &[(filter("#"), options(&["test/nosubscribe"]))],
    );
    let plain = crate::core::router::persist::session_record(
        60,
        None,
        &crate::core::session::SessionOwner::Anonymous,
        &[(filter("#"), options(&[]))],
    );
    assert_eq!(carved, plain);
    assert!(
        crate::core::router::persist::subscription_options(&carved.subscriptions[0])
            .exceptions
            .is_empty()
    );
}
