//! The router's persistence: what is stored and when, records and core types
//! converted both ways, and a router built from one settings value.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::persist::{message_from_record, message_record};
use super::{Router, RouterSettings};
use crate::core::message::{Message, MessageProperties, QoS};
use crate::core::session::{OverflowPolicy, QueueLimits, Session, SessionOwner};
use crate::store::record::MessageRecord;
use crate::store::redb::RedbBackend;
use crate::store::{Durability, Store, StoreOp};

fn stored(queue_limits: QueueLimits, store: &Arc<Store>) -> RouterSettings {
    RouterSettings {
        store: Some(Arc::clone(store)),
        ..RouterSettings::new(queue_limits)
    }
}

fn record(topic: &str, expires_at_ms: Option<u64>) -> MessageRecord {
    let mut message = Message::new(
        topic,
        bytes::Bytes::from_static(b"x"),
        QoS::AtLeastOnce,
        true,
    );
    message.expires_at = None;
    let mut record = message_record(&message);
    record.expires_at_ms = expires_at_ms;
    record
}

#[tokio::test]
async fn messages_that_expired_while_down_are_removed_from_the_store() {
    let dir = std::env::temp_dir().join(format!("tern-persist-expired-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("tern.redb");
    let past = Some(1);
    let backend = Arc::new(RedbBackend::open(&path).expect("open"));
    let store = Store::start(backend, Durability::Batched);
    store.submit([
        StoreOp::PutRetained {
            record: record("old/retained", past),
        },
        StoreOp::PutRetained {
            record: record("live/retained", None),
        },
        StoreOp::PutQueued {
            queue: "jobs".into(),
            seq: 1,
            record: record("$queue/jobs", past),
        },
        StoreOp::PutQueued {
            queue: "jobs".into(),
            seq: 2,
            record: record("$queue/jobs", None),
        },
    ]);
    store.flush().await.expect("flush");

    let limits = QueueLimits {
        max_queued: 10,
        max_queued_bytes: 0,
        overflow: OverflowPolicy::DropOldest,
        max_queued_age_ms: 0,
    };
    let router = Arc::new(Router::from_settings(stored(limits, &store)));
    let restored = router
        .restore(store.load().expect("load"))
        .expect("restore");
    assert_eq!((restored.retained, restored.queued), (1, 1));
    store.flush().await.expect("flush");
    let after = store.load().expect("reload");
    let topics: Vec<&str> = after.retained.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(topics, vec!["live/retained"]);
    let seqs: Vec<u64> = after.queued.iter().map(|(_, seq, _)| *seq).collect();
    assert_eq!(seqs, vec![2]);
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A store in a fresh directory (removed by the test at its end).
fn fresh_store(name: &str) -> (std::path::PathBuf, Arc<Store>) {
    let dir = std::env::temp_dir().join(format!("tern-persist-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let backend = Arc::new(RedbBackend::open(&dir.join("tern.redb")).expect("open"));
    (dir, Store::start(backend, Durability::Batched))
}

fn small_limits() -> QueueLimits {
    QueueLimits {
        max_queued: 10,
        max_queued_bytes: 0,
        overflow: OverflowPolicy::DropOldest,
        max_queued_age_ms: 0,
    }
}

#[tokio::test]
async fn only_a_persistent_session_stores_its_incoming_qos2_ids() {
    let (dir, store) = fresh_store("qos2");
    let limits = small_limits();
    let clean = Session::with_store(Arc::from("clean"), 0, limits, Some(Arc::clone(&store)));
    let before = store.last_ticket();
    assert!(clean.record_incoming_qos2(7).is_some());
    assert!(clean.release_incoming_qos2(7).is_some());
    assert_eq!(
        store.last_ticket(),
        before,
        "a clean session's QoS 2 flow touches no store"
    );

    let kept = Session::with_store(Arc::from("kept"), 60, limits, Some(Arc::clone(&store)));
    assert!(kept.record_incoming_qos2(8).is_some());
    // The session stops being persistent: the stored id is still deleted at PUBREL.
    kept.set_expiry_interval(0);
    assert!(kept.release_incoming_qos2(8).is_some());
    assert_eq!(store.last_ticket(), before + 2, "one put and one delete");
    store.flush().await.expect("flush");
    assert!(store.load().expect("load").incoming_qos2.is_empty());
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_clean_session_comes_and_goes_without_a_store_operation() {
    let (dir, store) = fresh_store("clean");
    let limits = small_limits();
    let router = Arc::new(Router::from_settings(stored(limits, &store)));
    let before = store.last_ticket();
    let anonymous = SessionOwner::Anonymous;
    let clean = router
        .attach(&Arc::from("clean"), &anonymous, true, 0)
        .expect("attach");
    router.detach(&clean.session, clean.connection_id);
    assert_eq!(
        store.last_ticket(),
        before,
        "clean session: no store operation"
    );

    let kept = router
        .attach(&Arc::from("kept"), &anonymous, true, 60)
        .expect("attach");
    assert!(
        store.last_ticket() > before,
        "a persistent session is saved"
    );
    let saved = store.last_ticket();
    // Taken over by a clean start: the stored session is deleted.
    let again = router
        .attach(&Arc::from("kept"), &anonymous, true, 0)
        .expect("attach");
    assert!(
        store.last_ticket() > saved,
        "the old stored session is deleted"
    );
    drop(kept);
    router.detach(&again.session, again.connection_id);
    store.flush().await.expect("flush");
    assert!(store.load().expect("load").sessions.is_empty());
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn message_survives_record_round_trip() {
    let mut message = Message::new(
        "a/b",
        Bytes::from_static(b"\x00\x01payload"),
        QoS::ExactlyOnce,
        true,
    );
    message.expires_at = Message::expiry_from_interval(60);
    message.publisher = Some(Arc::from("pub-1"));
    message.properties = Some(Arc::new(MessageProperties {
        payload_is_utf8: false,
        content_type: Some("application/json".into()),
        response_topic: Some("reply/x".into()),
        correlation_data: Some(Bytes::from_static(b"corr")),
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "v2".into())],
    }));
    let record = message_record(&message);
    let bytes = postcard::to_allocvec(&record).expect("encode");
    let back: MessageRecord = postcard::from_bytes(&bytes).expect("decode");
    let restored = message_from_record(back);
    assert_eq!(restored.topic, message.topic);
    assert_eq!(restored.payload, message.payload);
    assert_eq!(restored.qos, message.qos);
    assert!(restored.retain);
    assert_eq!(restored.properties, message.properties);
    assert_eq!(restored.publisher.as_deref(), Some("pub-1"));
    let left = restored
        .remaining_expiry(Instant::now())
        .expect("an expiry");
    assert!((58..=61).contains(&left), "{left}");
}

/// The queue cap and the store are both taken, whatever else is set: a router
/// built with both stores its queued messages and caps its queues (the old
/// builder's `with_queue_max_messages` replaced the queue registry and dropped
/// the store `with_store` had given it).
#[tokio::test]
async fn a_router_made_from_settings_keeps_both_its_store_and_its_queue_cap() {
    let (dir, store) = fresh_store("settings");
    let router = Router::from_settings(RouterSettings {
        queue_max_messages: 2,
        ..stored(small_limits(), &store)
    });
    let message = || {
        Arc::new(Message::new(
            "$queue/jobs",
            Bytes::from_static(b"x"),
            QoS::AtLeastOnce,
            false,
        ))
    };
    assert_eq!(router.publish_checked(message()).expect("first").matched, 1);
    assert_eq!(
        router.publish_checked(message()).expect("second").matched,
        1
    );
    assert!(
        router.publish_checked(message()).is_err(),
        "the third message is over the queue cap"
    );
    store.flush().await.expect("flush");
    let queued = store.load().expect("load").queued;
    assert_eq!(queued.len(), 2, "both queued messages are stored");
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}
