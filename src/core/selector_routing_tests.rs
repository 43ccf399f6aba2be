//! Selectors in routing: topic subscriptions, shared groups, queue consumers
//! and queue pulls get only the messages their selector matches.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::core::message::{Message, MessageProperties, QoS};
use crate::core::router::Router;
use crate::core::session::{
    DeliveryStyle, OverflowPolicy, QueueLimits, Session, SessionOwner, SubscriptionOptions,
};
use crate::core::topic::Filter;

fn router() -> Arc<Router> {
    Arc::new(Router::new(QueueLimits {
        max_queued: 100,
        max_queued_bytes: 0,
        overflow: OverflowPolicy::DropNew,
        max_queued_age_ms: 0,
    }))
}

fn client(router: &Router, id: &str, ack_window: Option<usize>) -> Arc<Session> {
    let session = router
        .attach(&Arc::from(id), &SessionOwner::Anonymous, true, 0)
        .expect("an anonymous client attaches")
        .session;
    session.set_delivery_style(DeliveryStyle {
        per_subscription: false,
        queue_ack_window: ack_window,
    });
    session
}

fn subscribe(router: &Router, session: &Arc<Session>, filter: &str, selector: Option<&str>) {
    let selector = selector.map(|text| router.compile_selector(text).expect("selector parses"));
    let options = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: false,
        retain_as_published: false,
        retain_handling: 2,
        subscription_id: None,
        exceptions: Default::default(),
        selector,
    };
    router.subscribe(
        session,
        Filter::parse(filter).expect("filter parses"),
        options,
    );
}

/// A message whose user property `kind` is `kind` and payload is `kind` too.
fn message(topic: &str, kind: &str) -> Arc<Message> {
    let mut message = Message::new(
        topic,
        Bytes::copy_from_slice(kind.as_bytes()),
        QoS::AtLeastOnce,
        false,
    );
    message.properties = MessageProperties {
        user_properties: vec![("kind".into(), kind.into())],
        ..MessageProperties::NONE
    }
    .shared();
    Arc::new(message)
}

fn bodies(session: &Session) -> Vec<String> {
    let mut out = Vec::new();
    session.take_pending(usize::MAX, &mut out);
    out.iter()
        .map(|d| String::from_utf8_lossy(&d.message.payload).into_owned())
        .collect()
}

#[test]
fn a_subscription_with_a_selector_gets_only_what_it_matches() {
    let router = router();
    let picky = client(&router, "picky", None);
    let other = client(&router, "other", None);
    let all = client(&router, "all", None);
    subscribe(&router, &picky, "t/#", Some("kind IN ('a', 'c')"));
    subscribe(&router, &other, "t/#", Some("kind IN ('a', 'c')"));
    subscribe(&router, &all, "t/#", None);
    for kind in ["a", "b", "c"] {
        router.publish(message("t/x", kind));
    }
    assert_eq!(bodies(&picky), ["a", "c"]);
    assert_eq!(bodies(&other), ["a", "c"]);
    assert_eq!(bodies(&all), ["a", "b", "c"]);
    // Same text, one compiled selector (so one evaluation per message).
    let first = router.compile_selector("kind IN ('a', 'c')").unwrap();
    let second = router.compile_selector("kind IN ('a', 'c')").unwrap();
    assert!(Arc::ptr_eq(&first, &second));
}

#[test]
fn a_shared_group_gives_each_message_to_a_member_that_matches_it() {
    let router = router();
    let a = client(&router, "a", None);
    let b = client(&router, "b", None);
    subscribe(&router, &a, "$share/g/t", Some("kind = 'a'"));
    subscribe(&router, &b, "$share/g/t", Some("kind = 'b'"));
    for kind in ["a", "b", "a", "b", "c"] {
        router.publish(message("t", kind));
    }
    assert_eq!(bodies(&a), ["a", "a"]);
    assert_eq!(bodies(&b), ["b", "b"]);
}

#[test]
fn a_queue_consumer_with_a_selector_leaves_the_rest_for_other_consumers() {
    let router = router();
    let a = client(&router, "a", Some(10));
    let b = client(&router, "b", Some(10));
    subscribe(&router, &a, "$queue/jobs", Some("kind = 'a'"));
    subscribe(&router, &b, "$queue/jobs", Some("kind = 'b'"));
    for kind in ["c", "a", "b", "a", "c"] {
        router.publish(message("$queue/jobs", kind));
    }
    assert_eq!(bodies(&a), ["a", "a"]);
    assert_eq!(bodies(&b), ["b"]);
    // Nobody matches `c`: both wait, in order, for a consumer that does.
    assert_eq!(router.queues().depth("jobs").ready, 2);
    let c = client(&router, "c", Some(10));
    subscribe(&router, &c, "$queue/jobs", None);
    assert_eq!(bodies(&c), ["c", "c"]);
    assert_eq!(router.queues().depth("jobs").ready, 0);
}

#[test]
fn a_pull_with_a_selector_takes_only_what_it_matches_and_leaves_the_rest_in_place() {
    let router = router();
    for kind in ["a", "b", "a", "c"] {
        router.publish(message("$queue/jobs", kind));
    }
    let selector = router.compile_selector("kind = 'a'").unwrap();
    let minute = Duration::from_secs(60);
    let pulled = router
        .queues()
        .pull_matching("jobs", 10, minute, Some(&selector));
    let kinds: Vec<_> = pulled.iter().map(|l| l.message.payload.clone()).collect();
    assert_eq!(kinds, [Bytes::from_static(b"a"), Bytes::from_static(b"a")]);
    let rest = router.queues().pull("jobs", 10, minute);
    let kinds: Vec<_> = rest.iter().map(|l| l.message.payload.clone()).collect();
    assert_eq!(kinds, [Bytes::from_static(b"b"), Bytes::from_static(b"c")]);
}
