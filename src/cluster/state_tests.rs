//! The shared state of two routers ("nodes") over a real `nats-server -js`
//! on a free loopback port: takeover across nodes, a resumed session keeping
//! its subscriptions, and retained messages seen alike from every node.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::state::SharedState;
use crate::core::message::{Message, QoS};
use crate::core::router::Router;
use crate::core::session::{
    KickReason, OverflowPolicy, QueueLimits, Session, SessionOwner, SubscriptionOptions,
};
use crate::core::topic::Filter;
use crate::store::nats::test_server::Nats;

/// How long any one wait in these tests may take.
const WAIT: Duration = Duration::from_secs(10);

/// A router with the shared state of node `name`.
async fn node(nats: &Nats, name: &str) -> (Arc<Router>, Arc<SharedState>) {
    let client = async_nats::connect(&nats.url).await.expect("connect");
    let jetstream = async_nats::jetstream::new(client);
    let router = Arc::new(Router::new(QueueLimits {
        max_queued: 100,
        max_queued_bytes: 0,
        overflow: OverflowPolicy::DropNew,
        max_queued_age_ms: 0,
    }));
    let state = SharedState::start(&jetstream, (name, 1), 1, &router, Default::default())
        .await
        .expect("shared state");
    (router, state)
}

fn options(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
        subscription_id: None,
        exceptions: crate::core::exceptions::Exceptions::NONE,
        selector: None,
    }
}

fn retained(topic: &str, payload: &'static [u8]) -> Arc<Message> {
    Arc::new(Message::new(
        topic,
        Bytes::from_static(payload),
        QoS::AtLeastOnce,
        true,
    ))
}

/// Waits until `check` holds, polling; fails the test after [`WAIT`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Payloads queued for `session` so far.
fn taken(session: &Session) -> Vec<Bytes> {
    let mut out = Vec::new();
    session.take_pending(usize::MAX, &mut out);
    out.into_iter().map(|d| d.message.payload.clone()).collect()
}

fn retained_payloads(router: &Router, filter: &str) -> Vec<Bytes> {
    let filter = Filter::parse(filter).expect("filter");
    router
        .retained_matching(&filter, &crate::core::exceptions::Exceptions::NONE)
        .into_iter()
        .map(|m| m.payload.clone())
        .collect()
}

#[tokio::test]
async fn a_client_id_taken_on_another_node_ends_the_first_connection_and_resumes_with_its_subscriptions(
) {
    let nats = Nats::start().await;
    let (a, state_a) = node(&nats, "a").await;
    let (b, state_b) = node(&nats, "b").await;
    let id: Arc<str> = Arc::from("device-1");
    let owner = SessionOwner::Anonymous;

    let first = a
        .attach_claimed(&id, &owner, false, 300)
        .await
        .expect("attach on a");
    assert!(!first.session_present);
    assert!(state_a.holds("device-1"));
    a.subscribe(
        &first.session,
        Filter::parse("sensors/+/temp").expect("filter"),
        options(QoS::AtLeastOnce),
    );

    // The subscription reaches the bucket through a's writer; b resumes once
    // it is there (a claim before would take the id without it: a's write,
    // fenced, would then never land).
    let client = async_nats::connect(&nats.url).await.expect("connect");
    let kv = async_nats::jetstream::new(client)
        .get_key_value(super::ownership::BUCKET)
        .await
        .expect("bucket");
    let key = crate::store::nats::kv_key::encode("device-1");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let value = kv.get(key.as_str()).await.expect("read");
        let owner = value
            .as_deref()
            .and_then(super::ownership::OwnerValue::decode);
        if owner.is_some_and(|o| !o.subscriptions.is_empty()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "subscription never written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = b
        .attach_claimed(&id, &owner, false, 300)
        .await
        .expect("attach on b");
    assert!(second.session_present, "a resumed session is present");
    let filters: Vec<String> = second
        .session
        .subscriptions()
        .iter()
        .map(|(f, o)| format!("{} q{}", f.as_str(), o.qos as u8))
        .collect();
    assert_eq!(filters, ["sensors/+/temp q1"]);

    let reason = tokio::time::timeout(WAIT, first.kicked)
        .await
        .expect("kicked in time");
    assert_eq!(reason.ok(), Some(KickReason::TakenOver));
    eventually("a drops its copy", || a.session("device-1").is_none()).await;
    assert!(!state_a.holds("device-1"));
    assert!(state_b.holds("device-1"));
}

#[tokio::test]
async fn a_clean_start_takeover_discards_the_old_subscriptions() {
    let nats = Nats::start().await;
    let (a, _state_a) = node(&nats, "a").await;
    let (b, _state_b) = node(&nats, "b").await;
    let id: Arc<str> = Arc::from("device-2");
    let owner = SessionOwner::Anonymous;
    let first = a
        .attach_claimed(&id, &owner, false, 300)
        .await
        .expect("attach on a");
    a.subscribe(
        &first.session,
        Filter::parse("x/#").expect("filter"),
        options(QoS::AtMostOnce),
    );
    tokio::time::sleep(Duration::from_millis(200)).await; // let a's writer store it: not asserted on
    let second = b
        .attach_claimed(&id, &owner, true, 300)
        .await
        .expect("attach on b");
    assert!(!second.session_present);
    assert!(second.session.subscriptions().is_empty());
    let reason = tokio::time::timeout(WAIT, first.kicked)
        .await
        .expect("kicked in time");
    assert_eq!(reason.ok(), Some(KickReason::TakenOver));
}

#[tokio::test]
async fn retained_set_replace_and_clear_are_seen_from_every_node() {
    let nats = Nats::start().await;
    let (a, _state_a) = node(&nats, "a").await;
    let (b, _state_b) = node(&nats, "b").await;
    let (c, _state_c) = node(&nats, "c").await;

    a.publish(retained("home/temp", b"20"));
    for router in [&a, &b, &c] {
        let router = Arc::clone(router);
        eventually("set seen", move || {
            retained_payloads(&router, "home/#") == ["20"]
        })
        .await;
    }
    b.publish(retained("home/temp", b"21"));
    for router in [&a, &b, &c] {
        let router = Arc::clone(router);
        eventually("replace seen", move || {
            retained_payloads(&router, "home/#") == ["21"]
        })
        .await;
    }
    c.publish(retained("home/temp", b""));
    for router in [&a, &b, &c] {
        let router = Arc::clone(router);
        eventually("clear seen", move || {
            retained_payloads(&router, "home/#").is_empty()
        })
        .await;
    }
}

#[tokio::test]
async fn a_retained_publish_on_one_node_reaches_live_subscribers_of_another_once() {
    let nats = Nats::start().await;
    let (a, _state_a) = node(&nats, "a").await;
    let (b, _state_b) = node(&nats, "b").await;
    let subscriber = b
        .attach_claimed(&Arc::from("sub"), &SessionOwner::Anonymous, true, 0)
        .await
        .expect("attach");
    b.subscribe(
        &subscriber.session,
        Filter::parse("home/#").expect("filter"),
        options(QoS::AtLeastOnce),
    );
    a.publish(retained("home/door", b"open"));
    let session = Arc::clone(&subscriber.session);
    let mut got = Vec::new();
    eventually("delivered on b", || {
        got.extend(taken(&session));
        !got.is_empty()
    })
    .await;
    // The publishing node does not get its own change delivered again.
    eventually("a's index has it", || {
        retained_payloads(&a, "home/#") == ["open"]
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await; // room for a duplicate, which must not come
    got.extend(taken(&session));
    assert_eq!(got, ["open"]);
}

/// A subscriber subscribing on one node while a retained message is published
/// on another gets it, live or as retained, never neither.
#[tokio::test]
async fn subscribers_racing_a_retained_publish_on_another_node_each_get_it() {
    let nats = Nats::start().await;
    let (a, _state_a) = node(&nats, "a").await;
    let (b, _state_b) = node(&nats, "b").await;
    let filter = Filter::parse("race/#").expect("filter");
    let mut sessions = Vec::new();
    for round in 0..200 {
        if round == 100 {
            a.publish(retained("race/x", b"v"));
        }
        let attached = b
            .attach_claimed(
                &Arc::from(format!("s{round}")),
                &SessionOwner::Anonymous,
                true,
                0,
            )
            .await
            .expect("attach");
        b.subscribe(&attached.session, filter.clone(), options(QoS::AtLeastOnce));
        let messages = b.retained_matching(&filter, &crate::core::exceptions::Exceptions::NONE);
        b.send_retained(
            &attached.session,
            &filter,
            &options(QoS::AtLeastOnce),
            messages,
        );
        sessions.push(attached.session);
        tokio::task::yield_now().await;
    }
    eventually("b has the retained message", || {
        retained_payloads(&b, "race/#") == ["v"]
    })
    .await;
    for (round, session) in sessions.iter().enumerate().skip(100) {
        let mut got = Vec::new();
        eventually(&format!("subscriber {round} gets it"), || {
            got.extend(taken(session));
            !got.is_empty()
        })
        .await;
        // Live and retained both, when the change lands between the subscribe
        // and the retained lookup (as on one node): never nothing, never another.
        assert!(got.iter().all(|p| p == "v"), "subscriber {round}: {got:?}");
    }
}

#[tokio::test]
async fn a_connection_is_served_on_its_node_when_the_cluster_cannot_decide_who_holds_its_id() {
    let nats = Nats::start().await;
    let (a, state_a) = node(&nats, "a").await;
    drop(nats); // NATS gone: no claim can be decided
    let attached = tokio::time::timeout(
        WAIT,
        a.attach_claimed(&Arc::from("lonely"), &SessionOwner::Anonymous, false, 60),
    )
    .await
    .expect("answered within the claim timeout")
    .expect("attached");
    assert!(!attached.session_present);
    assert!(a.session("lonely").is_some_and(|s| s.is_connected()));
    assert!(!state_a.holds("lonely"));
    assert_eq!(
        a.stats
            .claims_failed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn an_id_freed_by_a_session_that_ended_is_claimed_again_on_any_node() {
    let nats = Nats::start().await;
    let (a, state_a) = node(&nats, "a").await;
    let (b, state_b) = node(&nats, "b").await;
    let id: Arc<str> = Arc::from("comes-and-goes");
    let first = a
        .attach_claimed(&id, &SessionOwner::Anonymous, true, 0)
        .await
        .expect("attach on a");
    a.detach(&first.session, first.connection_id); // expiry 0: the session ends
    eventually("a frees the id", || !state_a.holds("comes-and-goes")).await;
    let second = b
        .attach_claimed(&id, &SessionOwner::Anonymous, false, 0)
        .await
        .expect("attach on b");
    assert!(!second.session_present, "nothing left to resume");
    assert!(state_b.holds("comes-and-goes"));
    let again = a
        .attach_claimed(&id, &SessionOwner::Anonymous, true, 0)
        .await
        .expect("attach on a again");
    assert!(state_a.holds("comes-and-goes"));
    let reason = tokio::time::timeout(WAIT, second.kicked)
        .await
        .expect("kicked in time");
    assert_eq!(reason.ok(), Some(KickReason::TakenOver));
    drop(again);
}
