//! What the router tells the cluster fabric: interest per session and filter,
//! client messages to forward, and never a peer's message back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use parking_lot::Mutex;

use super::Router;
use crate::core::fabric::Fabric;
use crate::core::message::{Message, QoS};
use crate::core::session::{OverflowPolicy, QueueLimits, SessionOwner, SubscriptionOptions};
use crate::core::topic::Filter;

#[derive(Debug, Default)]
struct Recorder {
    forwarded: Mutex<Vec<String>>,
    interest: Mutex<Vec<String>>,
    confirmed: AtomicU64,
    /// Set: the queue to the other nodes is full (`forward` drops, returns 0).
    full: AtomicBool,
    /// Messages up to this one were confirmed by a timeout.
    timed_out: AtomicU64,
    /// A session `forward` looks at: whether its connection was woken yet.
    watched: Mutex<Option<Arc<crate::core::session::Session>>>,
    /// Per message forwarded: (its connection woken yet, `after_local`).
    woken_at_forward: Mutex<Vec<(bool, bool)>>,
}

impl Fabric for Recorder {
    fn forward(&self, message: &Arc<Message>, after_local: bool) -> u64 {
        if self.full.load(Ordering::Relaxed) {
            return 0;
        }
        if let Some(session) = self.watched.lock().as_ref() {
            let woken = session.notified().now_or_never().is_some();
            self.woken_at_forward.lock().push((woken, after_local));
        }
        let mut forwarded = self.forwarded.lock();
        forwarded.push(message.topic.to_string());
        forwarded.len() as u64
    }

    fn has_room(&self) -> bool {
        !self.full.load(Ordering::Relaxed)
    }

    fn confirmed(&self) -> u64 {
        self.confirmed.load(Ordering::Relaxed)
    }

    fn timed_out(&self, seq: u64) -> bool {
        seq <= self.timed_out.load(Ordering::Relaxed)
    }
    fn interest_added(&self, filter: &str) {
        self.interest.lock().push(format!("+{filter}"));
    }
    fn interest_removed(&self, filter: &str) {
        self.interest.lock().push(format!("-{filter}"));
    }
}

fn setup() -> (Arc<Router>, Arc<Recorder>) {
    let router = Arc::new(Router::new(QueueLimits {
        max_queued: 10,
        max_queued_bytes: 0,
        overflow: OverflowPolicy::DropNew,
        max_queued_age_ms: 0,
    }));
    let recorder = Arc::new(Recorder::default());
    assert!(router.set_fabric(recorder.clone()));
    (router, recorder)
}

fn options() -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
        subscription_id: None,
        exceptions: Default::default(),
        selector: None,
    }
}

fn filter(raw: &str) -> Filter {
    Filter::parse(raw).expect("filter")
}

fn peer_at(seq: u64) -> crate::core::peer_marks::PeerPosition<'static> {
    crate::core::peer_marks::PeerPosition {
        node: "peer",
        epoch: 1,
        seq,
    }
}

/// A capture for the session `client_id` moving here, of `raw`.
fn start_capture(router: &Router, client_id: &str, raw: &str) -> Arc<super::capture::Capture> {
    router
        .routing
        .capture_start(&Arc::from(client_id), vec![filter(raw)])
        .expect("a capture")
}

fn message(topic: &str) -> Arc<Message> {
    Arc::new(Message::new(
        topic,
        Bytes::from_static(b"x"),
        QoS::AtMostOnce,
        false,
    ))
}

#[tokio::test]
async fn each_session_filter_is_one_interest_until_dropped() {
    let (router, recorder) = setup();
    let a = router
        .attach(&Arc::from("a"), &SessionOwner::Anonymous, true, 0)
        .expect("attach");
    router.subscribe(&a.session, filter("sensors/#"), options());
    // The same filter again replaces the subscription: no second interest.
    router.subscribe(&a.session, filter("sensors/#"), options());
    router.subscribe(&a.session, filter("$share/g/x"), options());
    router.subscribe(&a.session, filter("$queue/q"), options());
    router.subscribe(&a.session, filter("$SYS/#"), options());
    router.subscribe(&a.session, filter("other"), options());
    router.unsubscribe(&a.session, "other");
    router.detach(&a.session, a.connection_id);
    assert_eq!(
        *recorder.interest.lock(),
        ["+sensors/#", "+other", "-other", "-sensors/#"],
        "shared, queue and $SYS filters are not the fabric's interest"
    );
}

#[tokio::test]
async fn client_messages_are_forwarded_and_peer_messages_are_not() {
    let (router, recorder) = setup();
    let a = router
        .attach(&Arc::from("a"), &SessionOwner::Anonymous, true, 0)
        .expect("attach");
    router.subscribe(&a.session, filter("t/#"), options());
    assert_eq!(router.publish(message("t/1")), 1);
    assert_eq!(
        router
            .publish_checked(message("t/2"))
            .ok()
            .map(|p| p.matched),
        Some(1)
    );
    assert_eq!(router.publish(message("nobody/here")), 0);
    assert_eq!(router.publish(message("$SYS/broker/uptime")), 0);
    assert_eq!(
        router.publish_from_peer(message("t/3"), peer_at(1)).matched,
        1,
        "routed locally"
    );
    assert_eq!(*recorder.forwarded.lock(), ["t/1", "t/2", "nobody/here"]);
    assert_eq!(a.session.pending_len(), 3);
}

#[tokio::test]
async fn a_forwarded_qos1_message_is_committed_once_the_other_nodes_confirmed_it() {
    let (router, recorder) = setup();
    let qos0 = router.publish_checked(message("t/0")).expect("taken");
    assert!(router.is_committed(qos0.commit).expect("no store"));
    let mut qos1 = Message::new("t/1", Bytes::from_static(b"x"), QoS::AtLeastOnce, false);
    qos1.publisher = Some(Arc::from("p"));
    let qos1 = router.publish_checked(Arc::new(qos1)).expect("taken");
    assert!(
        !router.is_committed(qos1.commit).expect("no store"),
        "its ack waits for the confirm of message 2"
    );
    recorder.confirmed.store(1, Ordering::Relaxed);
    assert!(!router.is_committed(qos1.commit).expect("no store"));
    recorder.confirmed.store(2, Ordering::Relaxed);
    assert!(router.is_committed(qos1.commit).expect("no store"));
}

#[tokio::test]
async fn a_qos1_message_the_fabric_cannot_take_is_refused_not_acknowledged() {
    let (router, recorder) = setup();
    let a = router
        .attach(&Arc::from("a"), &SessionOwner::Anonymous, true, 0)
        .expect("attach");
    router.subscribe(&a.session, filter("t/#"), options());
    recorder.full.store(true, Ordering::Relaxed);
    let qos1 = Arc::new(Message::new(
        "t/1",
        Bytes::from_static(b"x"),
        QoS::AtLeastOnce,
        false,
    ));
    assert!(matches!(
        router.publish_checked(qos1),
        Err(super::PublishRefused::ClusterBusy)
    ));
    assert_eq!(a.session.pending_len(), 0, "refused before routing");
    // QoS 0 has no ack to hold: delivered here, dropped for the other nodes.
    assert!(router.publish_checked(message("t/0")).is_ok());
    assert_eq!(a.session.pending_len(), 1);
}

#[tokio::test]
async fn a_forwarded_qos1_message_a_node_did_not_confirm_in_time_is_not_acknowledged() {
    let (router, recorder) = setup();
    let mut qos1 = Message::new("t/1", Bytes::from_static(b"x"), QoS::AtLeastOnce, false);
    qos1.publisher = Some(Arc::from("p"));
    let qos1 = router.publish_checked(Arc::new(qos1)).expect("taken");
    // The window gave up on a silent node: confirmed by the timeout.
    recorder.timed_out.store(1, Ordering::Relaxed);
    recorder.confirmed.store(1, Ordering::Relaxed);
    assert!(matches!(
        router.is_committed(qos1.commit),
        Err(crate::core::commit::CoreError::NotConfirmed)
    ));
    assert!(matches!(
        router.wait_committed(qos1.commit).await,
        Err(crate::core::commit::CoreError::NotConfirmed)
    ));
}

#[tokio::test]
async fn a_session_moving_here_gets_its_capture_in_order_less_what_the_old_node_had() {
    use crate::core::peer_marks::{PeerMark, PeerPosition};
    let (router, recorder) = setup();
    let id: Arc<str> = Arc::from("mover");
    let capture = router
        .routing
        .capture_start(&id, vec![filter("mv/#"), filter("$share/g/mv/x")])
        .expect("a capture");
    assert_eq!(
        *recorder.interest.lock(),
        vec!["+mv/#"],
        "its interest first"
    );
    // Another node's messages 1..=3 (the old node had routed up to 2), and
    // this node's own first message (the old node had it too).
    for seq in 1..=3 {
        router.publish_from_peer(message("mv/p"), PeerPosition::new("o", 7, seq));
    }
    assert_eq!(
        router.publish(message("mv/here")),
        0,
        "captured, no session yet"
    );
    let attached = router
        .attach(&id, &SessionOwner::Anonymous, false, 300)
        .expect("attach");
    router.subscribe(&attached.session, filter("mv/#"), options());
    router.publish_from_peer(message("mv/late"), PeerPosition::new("o", 7, 4));
    assert_eq!(
        attached.session.pending_len(),
        0,
        "nothing overtakes the capture"
    );
    let had = [PeerMark::new("o", 7, 2), PeerMark::new("", 0, 1)];
    let (captured, delivered, _) =
        router
            .routing
            .capture_finish(&capture, Some(&attached.session), &had, &router.stats);
    assert_eq!((captured, delivered), (5, 2));
    let mut out = Vec::new();
    attached.session.take_pending(10, &mut out);
    let topics: Vec<&str> = out.iter().map(|d| &*d.message.topic).collect();
    assert_eq!(topics, vec!["mv/p", "mv/late"]);
    assert_eq!(
        recorder.interest.lock().last().map(String::as_str),
        Some("-mv/#")
    );
    router.publish(message("mv/live"));
    assert_eq!(attached.session.pending_len(), 1, "routed directly again");
}

#[tokio::test]
async fn a_local_subscriber_is_woken_after_the_message_went_to_the_fabric() {
    // tokio runs the task woken last next on the waking thread: the
    // subscriber's connection, not the fabric's sender (`wakes.rs`).
    let (router, recorder) = setup();
    let a = router
        .attach(&Arc::from("a"), &SessionOwner::Anonymous, true, 0)
        .expect("attach");
    router.subscribe(&a.session, filter("w/#"), options());
    *recorder.watched.lock() = Some(Arc::clone(&a.session));
    router.publish(message("w/1"));
    let mut out = Vec::new();
    a.session.take_pending(10, &mut out);
    assert!(a.session.notified().now_or_never().is_some(), "woken after");
    router
        .publish_checked(message("w/2"))
        .expect("taken at QoS 0");
    assert!(a.session.notified().now_or_never().is_some(), "woken after");
    assert_eq!(a.session.pending_len(), 1);
    // Queued behind w/2: no wake-up, so the fabric's sender need not wait.
    router.publish(message("w/3"));
    assert_eq!(
        *recorder.woken_at_forward.lock(),
        [(false, true), (false, true), (false, false)],
        "not woken before the fabric had the message; after_local when woken"
    );
}

#[tokio::test]
async fn a_capture_holding_another_nodes_messages_holds_their_confirms_and_tells_a_loss() {
    use crate::core::peer_marks::PeerPosition;
    let (router, _) = setup();
    let hold = router.capture_hold();
    assert!(!hold.holding);
    // A capture of this node's own messages only holds nothing back.
    let local = start_capture(&router, "local", "lc/#");
    router.publish(message("lc/here"));
    assert!(!router.capture_hold().holding);
    router
        .routing
        .capture_finish(&local, None, &[], &router.stats);
    assert_eq!(
        router.capture_hold().failed,
        0,
        "lost no other node's message"
    );

    let attached_later = start_capture(&router, "kept", "kp/#");
    let lost = start_capture(&router, "gone", "gn/#");
    router.publish_from_peer(message("kp/p"), PeerPosition::new("o", 7, 1));
    router.publish_from_peer(message("gn/p"), PeerPosition::new("o", 7, 2));
    assert!(router.capture_hold().holding);
    // The confirms wait until both ended.
    let released = tokio::spawn({
        let router = Arc::clone(&router);
        async move { router.captures_released().await }
    });
    router
        .routing
        .capture_finish(&lost, None, &[], &router.stats);
    let hold = router.capture_hold();
    assert!(hold.holding, "one still stands");
    assert_eq!(hold.failed, 1, "the other lost another node's message");
    for _ in 0..3 {
        tokio::task::yield_now().await; // the waiting task runs meanwhile
    }
    assert!(!released.is_finished());
    let attached = router
        .attach(&Arc::from("kept"), &SessionOwner::Anonymous, false, 300)
        .expect("attach");
    router
        .routing
        .capture_finish(&attached_later, Some(&attached.session), &[], &router.stats);
    tokio::time::timeout(std::time::Duration::from_secs(5), released)
        .await
        .expect("released once none stands")
        .expect("the task");
    assert!(!router.capture_hold().holding);
}

#[tokio::test]
async fn a_local_qos1_message_captured_for_a_moving_session_is_acknowledged_once_handed_over() {
    let (router, recorder) = setup();
    let qos1 = |topic: &str| {
        let mut m = Message::new(topic, Bytes::from_static(b"x"), QoS::AtLeastOnce, false);
        m.publisher = Some(Arc::from("p"));
        Arc::new(m)
    };
    let capture = start_capture(&router, "kept", "lk/#");
    let held = router.publish_checked(qos1("lk/1")).expect("taken");
    // Started after it was captured: does not hold it back.
    let later = start_capture(&router, "later", "lt/#");
    let stuck = router.publish_checked(qos1("lt/1")).expect("taken");
    let free = router.publish_checked(qos1("elsewhere")).expect("taken");
    let qos0 = router.publish_checked(message("lk/0")).expect("taken");
    recorder.confirmed.store(4, Ordering::Relaxed); // the other nodes have them
    assert!(router.is_committed(free.commit).expect("not captured"));
    assert!(router.is_committed(qos0.commit).expect("no ack to hold"));
    assert!(!router.is_committed(held.commit).expect("held"));
    let waiting = tokio::spawn({
        let router = Arc::clone(&router);
        async move { router.wait_committed(held.commit).await }
    });
    for _ in 0..3 {
        tokio::task::yield_now().await; // the waiting task runs meanwhile
    }
    assert!(!waiting.is_finished(), "no ack while the capture stands");
    let attached = router
        .attach(&Arc::from("kept"), &SessionOwner::Anonymous, false, 300)
        .expect("attach");
    router.subscribe(&attached.session, filter("lk/#"), options());
    let (_, delivered, _) =
        router
            .routing
            .capture_finish(&capture, Some(&attached.session), &[], &router.stats);
    assert_eq!(delivered, 2);
    tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .expect("acknowledged once handed over")
        .expect("the task")
        .expect("handed over");
    assert!(router.is_committed(held.commit).expect("handed over"));
    router
        .routing
        .capture_finish(&later, None, &[], &router.stats);
    assert!(matches!(
        router.wait_committed(stuck.commit).await,
        Err(crate::core::commit::CoreError::NotHandedOver)
    ));

    // A capture that failed (its session was not attached): not acknowledged.
    let lost = start_capture(&router, "gone", "gn/#");
    let dropped = router.publish_checked(qos1("gn/1")).expect("taken");
    let after = router.publish_checked(qos1("lk/2")).expect("taken");
    recorder.confirmed.store(6, Ordering::Relaxed);
    let mut both = held.commit;
    both.include(dropped.commit);
    router
        .routing
        .capture_finish(&lost, None, &[], &router.stats);
    for commit in [dropped.commit, both] {
        assert!(matches!(
            router.wait_committed(commit).await,
            Err(crate::core::commit::CoreError::NotHandedOver)
        ));
        assert!(router.is_committed(commit).is_err());
    }
    assert!(
        router.wait_committed(after.commit).await.is_ok(),
        "not captured: routed directly"
    );
}
