//! Commit before ack, through the core: each operation that stores something
//! returns a commit that is not done before its record is, and waiting on it
//! (`Router::wait_committed`) finds the record in the store. The store's
//! commits are held back by a gate, so "not yet" is seen, not guessed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use parking_lot::{Condvar, Mutex};

use super::{Router, RouterSettings};
use crate::core::commit::Commit;
use crate::core::message::{Message, QoS};
use crate::core::session::{OverflowPolicy, QueueLimits, SessionOwner, SubscriptionOptions};
use crate::core::topic::Filter;
use crate::store::{Backend, Durability, Snapshot, Store, StoreError, StoreOp};

/// A backend that keeps the operations it applied, and applies none while its
/// gate is shut.
#[derive(Default)]
struct GatedBackend {
    applied: Mutex<Vec<StoreOp>>,
    open: Mutex<bool>,
    opened: Condvar,
}

impl GatedBackend {
    fn set_open(&self, open: bool) {
        *self.open.lock() = open;
        self.opened.notify_all();
    }

    fn applied_count(&self) -> usize {
        self.applied.lock().len()
    }

    /// Whether an operation applied after the first `since` matches.
    fn holds_since(&self, since: usize, found: &impl Fn(&StoreOp) -> bool) -> bool {
        self.applied.lock()[since..].iter().any(found)
    }
}

impl Backend for GatedBackend {
    fn apply(&self, ops: &[StoreOp], _fsync: bool) -> Result<i64, StoreError> {
        let mut open = self.open.lock();
        while !*open {
            self.opened.wait(&mut open);
        }
        self.applied.lock().extend(ops.iter().cloned());
        Ok(0)
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }
}

fn gated_router() -> (Arc<Router>, Arc<GatedBackend>, Arc<Store>) {
    let backend = Arc::new(GatedBackend::default());
    let store = Store::start(
        Arc::clone(&backend) as Arc<dyn Backend>,
        Durability::Batched,
    );
    let limits = QueueLimits {
        max_queued: 100,
        max_queued_bytes: 0,
        overflow: OverflowPolicy::DropNew,
        max_queued_age_ms: 0,
    };
    let router = Router::from_settings(RouterSettings {
        store: Some(Arc::clone(&store)),
        ..RouterSettings::new(limits)
    });
    (Arc::new(router), backend, store)
}

/// `commit` is not done while the gate holds the store back and its record is
/// not stored; once the gate opens, waiting on it returns and the record is there.
async fn covers(
    router: &Router,
    backend: &GatedBackend,
    commit: Commit,
    what: &str,
    found: impl Fn(&StoreOp) -> bool,
) {
    assert!(!commit.is_none(), "{what}: stored nothing?");
    // The gate was shut when the operation was submitted: nothing of it is applied yet.
    let since = backend.applied_count();
    assert!(
        router.wait_committed(commit).now_or_never().is_none(),
        "{what}: committed while the store is held back"
    );
    assert!(
        !backend.holds_since(since, &found),
        "{what}: stored before its commit"
    );
    backend.set_open(true);
    tokio::time::timeout(Duration::from_secs(10), router.wait_committed(commit))
        .await
        .expect("the commit is done in time")
        .expect("the commit succeeds");
    assert!(
        backend.holds_since(since, &found),
        "{what}: its commit is done, the record is missing"
    );
    backend.set_open(false);
}

fn options(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
        subscription_id: None,
        exceptions: Default::default(),
        selector: None,
    }
}

fn filter(raw: &str) -> Filter {
    Filter::parse(raw).unwrap_or_else(|e| panic!("{raw:?} should parse: {e}"))
}

fn message(topic: &str, qos: QoS) -> Arc<Message> {
    Arc::new(Message::new(
        topic,
        bytes::Bytes::from_static(b"x"),
        qos,
        false,
    ))
}

fn is_session(op: &StoreOp, id: &str, with_filter: Option<&str>) -> bool {
    match op {
        StoreOp::PutSession { client_id, record } => {
            client_id == id
                && with_filter.is_none_or(|f| record.subscriptions.iter().any(|s| s.filter == f))
        }
        _ => false,
    }
}

#[tokio::test]
async fn each_stored_operation_returns_the_commit_that_covers_it() {
    let (router, backend, store) = gated_router();

    let attached = router
        .attach(&Arc::from("sub"), &SessionOwner::Anonymous, true, 60)
        .expect("attach");
    covers(&router, &backend, attached.commit, "attach", |op| {
        is_session(op, "sub", None)
    })
    .await;
    let session = attached.session;

    let subscribed = router.subscribe(&session, filter("t"), options(QoS::ExactlyOnce));
    covers(&router, &backend, subscribed.commit, "subscribe", |op| {
        is_session(op, "sub", Some("t"))
    })
    .await;

    let published = router
        .publish_checked(message("t", QoS::ExactlyOnce))
        .expect("published");
    assert_eq!(published.matched, 1);
    covers(&router, &backend, published.commit, "publish", |op| {
        matches!(op, StoreOp::PutDelivery { client_id, record, .. }
            if client_id == "sub" && record.packet_id.is_none())
    })
    .await;

    let mut batch = Vec::new();
    let taken = session.take_deliverable(10, 10, Instant::now(), &mut batch);
    let packet_id = batch.first().and_then(|(_, id)| *id).expect("a packet id");
    covers(&router, &backend, taken.commit, "packet id", |op| {
        matches!(op, StoreOp::MarkDelivery { packet_id: id, released: false, .. } if *id == packet_id)
    })
    .await;

    let released = session.release_inflight(packet_id).expect("in flight");
    covers(&router, &backend, released, "PUBREC state", |op| {
        matches!(op, StoreOp::MarkDelivery { released: true, .. })
    })
    .await;

    let recorded = session.record_incoming_qos2(9).expect("a new id");
    covers(&router, &backend, recorded, "incoming QoS 2 id", |op| {
        matches!(op, StoreOp::PutIncomingQos2 { packet_id: 9, .. })
    })
    .await;
    let forgotten = session.release_incoming_qos2(9).expect("a known id");
    covers(&router, &backend, forgotten, "PUBREL", |op| {
        matches!(op, StoreOp::DeleteIncomingQos2 { packet_id: 9, .. })
    })
    .await;

    let queued = router
        .publish_checked(message("$queue/jobs", QoS::AtLeastOnce))
        .expect("queued");
    covers(
        &router,
        &backend,
        queued.commit,
        "enqueue",
        |op| matches!(op, StoreOp::PutQueued { queue, .. } if queue == "jobs"),
    )
    .await;

    let unsubscribed = router.unsubscribe(&session, "t").expect("subscribed");
    covers(
        &router,
        &backend,
        unsubscribed,
        "unsubscribe",
        |op| matches!(op, StoreOp::PutSession { record, .. } if record.subscriptions.is_empty()),
    )
    .await;

    backend.set_open(true);
    store.close();
}

#[tokio::test]
async fn a_clean_session_and_qos0_store_nothing_to_wait_for() {
    let (router, backend, store) = gated_router();
    backend.set_open(true);
    let attached = router
        .attach(&Arc::from("clean"), &SessionOwner::Anonymous, true, 0)
        .expect("attach");
    assert!(attached.commit.is_none());
    let subscribed = router.subscribe(&attached.session, filter("t"), options(QoS::AtLeastOnce));
    assert!(subscribed.commit.is_none());
    let published = router
        .publish_checked(message("t", QoS::AtLeastOnce))
        .expect("published");
    assert!(
        published.commit.is_none(),
        "a clean subscriber stores nothing"
    );
    store.close();
}

#[tokio::test]
async fn a_publish_to_many_persistent_sessions_stores_its_message_once() {
    let (router, backend, store) = gated_router();
    backend.set_open(true);
    for id in ["a", "b", "c"] {
        let attached = router
            .attach(&Arc::from(id), &SessionOwner::Anonymous, true, 60)
            .expect("attach");
        router.subscribe(&attached.session, filter("t"), options(QoS::AtLeastOnce));
    }
    let published = router
        .publish_checked(message("t", QoS::AtLeastOnce))
        .expect("published");
    assert_eq!(published.matched, 3);
    router
        .wait_committed(published.commit)
        .await
        .expect("committed");
    let applied = backend.applied.lock();
    let messages: Vec<u64> = applied
        .iter()
        .filter_map(|op| match op {
            StoreOp::PutMessage { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(messages.len(), 1, "one stored copy for three sessions");
    let referring = applied
        .iter()
        .filter(|op| matches!(op, StoreOp::PutDelivery { record, .. } if record.message_id == messages[0]))
        .count();
    assert_eq!(referring, 3);
    drop(applied);
    store.close();
}
