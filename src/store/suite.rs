//! The store test suite: what every backend must do with the store's
//! operations, written once against `dyn Backend` and run for each backend
//! (`redb/tests.rs`, `nats/tests.rs`). Each case gets `open`, which opens the
//! backend over the same storage again (a restart): the case closes and
//! drops what it opened before it opens again.

use std::sync::Arc;

use super::record::{
    DeliveryRecord, MessageRecord, OwnerRecord, SessionRecord, SubscriptionRecord, WillRecord,
};
use super::{Backend, StoreOp};

/// Opens the backend under test over the same storage each time.
pub(crate) type Open<'a> = &'a mut dyn FnMut() -> Arc<dyn Backend>;

/// Runs a case of the suite as one test of a backend: `store_suite!(open_fn)`
/// where `open_fn(name)` returns a guard keeping the storage and an opener.
macro_rules! store_suite {
    ($fixture:path) => {
        #[test]
        fn suite_every_kind_of_record_survives_a_restart() {
            let (_guard, mut open) = $fixture("every_kind");
            $crate::store::suite::every_kind_of_record_survives_a_restart(&mut open);
        }
        #[test]
        fn suite_a_session_delete_takes_its_deliveries_and_incoming_ids() {
            let (_guard, mut open) = $fixture("session_delete");
            $crate::store::suite::a_session_delete_takes_its_deliveries_and_incoming_ids(&mut open);
        }
        #[test]
        fn suite_a_shared_message_goes_with_its_last_delivery() {
            let (_guard, mut open) = $fixture("shared");
            $crate::store::suite::a_shared_message_goes_with_its_last_delivery(&mut open);
        }
        #[test]
        fn suite_deletes_and_rewrites_of_every_kind() {
            let (_guard, mut open) = $fixture("deletes");
            $crate::store::suite::deletes_and_rewrites_of_every_kind(&mut open);
        }
        #[test]
        fn suite_in_one_batch_the_last_write_of_a_key_wins() {
            let (_guard, mut open) = $fixture("batch");
            $crate::store::suite::in_one_batch_the_last_write_of_a_key_wins(&mut open);
        }
        #[test]
        fn suite_each_nodes_last_marks_survive_a_restart() {
            let (_guard, mut open) = $fixture("peer_marks");
            $crate::store::suite_marks::each_nodes_last_marks_survive_a_restart(&mut open);
        }
        #[test]
        fn suite_stream_appends_trims_and_consumers_survive_a_restart() {
            let (_guard, mut open) = $fixture("stream_restart");
            $crate::store::suite_streams::stream_appends_trims_and_consumers_survive_a_restart(
                &mut open,
            );
        }
        #[test]
        fn suite_streams_read_in_batches_and_find_times() {
            let (_guard, mut open) = $fixture("stream_reads");
            $crate::store::suite_streams::streams_read_in_batches_and_find_times(&mut open);
        }
        #[test]
        fn suite_a_purged_stream_keeps_its_next_offset() {
            let (_guard, mut open) = $fixture("stream_purge");
            $crate::store::suite_streams::a_purged_stream_keeps_its_next_offset(&mut open);
        }
        #[test]
        fn suite_declarations_are_kept_and_a_deleted_stream_leaves_nothing() {
            let (_guard, mut open) = $fixture("stream_delete");
            $crate::store::suite_streams::declarations_are_kept_and_a_deleted_stream_leaves_nothing(
                &mut open,
            );
        }
    };
}
pub(crate) use store_suite;

pub(crate) fn message(topic: &str) -> MessageRecord {
    MessageRecord {
        topic: topic.into(),
        payload: b"p\x00q".to_vec(),
        qos: 1,
        retain: false,
        expires_at_ms: Some(1_700_000_000_000),
        payload_is_utf8: false,
        content_type: Some("text/plain".into()),
        response_topic: Some("re/ply".into()),
        correlation_data: Some(vec![1, 2]),
        user_properties: vec![("k".into(), "v".into())],
        publisher: Some("dev-1".into()),
    }
}

pub(crate) fn session(owner: OwnerRecord) -> SessionRecord {
    SessionRecord {
        expiry_interval: 60,
        disconnected_at_ms: Some(1_700_000_000_000),
        owner,
        subscriptions: vec![
            SubscriptionRecord {
                selector: Some("bucket = 3".into()),
                filter: "a/#".into(),
                qos: 1,
                no_local: true,
                retain_as_published: true,
                retain_handling: 2,
                subscription_id: Some(3),
            },
            SubscriptionRecord {
                selector: None,
                filter: "b/+".into(),
                qos: 2,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
                subscription_id: None,
            },
        ],
    }
}

pub(crate) fn delivery(message_id: u64) -> DeliveryRecord {
    DeliveryRecord {
        message_id,
        qos: 1,
        retain: false,
        subscription_ids: vec![],
        packet_id: None,
        released: false,
        // Distinct per message, so a round trip that loses it shows.
        queued_at_ms: 1_700_000_000_000 + message_id,
    }
}

pub(crate) fn put(client_id: &str, seq: u64, message_id: u64) -> StoreOp {
    StoreOp::PutDelivery {
        client_id: client_id.into(),
        seq,
        record: delivery(message_id),
    }
}

/// An anonymous persistent session for `client_id`.
pub(crate) fn put_session(client_id: &str) -> StoreOp {
    StoreOp::PutSession {
        client_id: client_id.into(),
        record: session(OwnerRecord::Anonymous),
    }
}

pub(crate) fn put_message(id: u64, topic: &str) -> StoreOp {
    StoreOp::PutMessage {
        id,
        record: message(topic),
    }
}

pub(crate) fn put_incoming(client_id: &str, packet_id: u16) -> StoreOp {
    StoreOp::PutIncomingQos2 {
        client_id: client_id.into(),
        packet_id,
    }
}

fn will(topic: &str) -> WillRecord {
    WillRecord {
        message: message(topic),
        expiry_interval: Some(30),
        due_at_ms: 1_700_000_060_000,
    }
}

/// Closes `backend` and opens the storage again.
pub(crate) fn restart(backend: Arc<dyn Backend>, open: Open) -> Arc<dyn Backend> {
    backend.close();
    drop(backend);
    open()
}

pub(crate) fn every_kind_of_record_survives_a_restart(open: Open) {
    let b = open();
    let alice = session(OwnerRecord::User("alice".into()));
    let mut marked = delivery(1);
    marked.subscription_ids = vec![3, 4];
    marked.qos = 2;
    let ops = vec![
        StoreOp::PutSession {
            client_id: "c.1 é".into(),
            record: alice.clone(),
        },
        put_session("anon"),
        put_message(1, "a/b"),
        StoreOp::PutDelivery {
            client_id: "c.1 é".into(),
            seq: 2,
            record: marked.clone(),
        },
        StoreOp::MarkDelivery {
            client_id: "c.1 é".into(),
            seq: 2,
            packet_id: 7,
            released: true,
        },
        put_incoming("c.1 é", 9),
        StoreOp::PutRetained {
            record: message("r/1"),
        },
        StoreOp::PutQueued {
            queue: "jobs".into(),
            seq: 4,
            record: message("$queue/jobs"),
        },
        StoreOp::PutWill {
            client_id: "anon".into(),
            record: will("gone/anon"),
        },
        StoreOp::PutSchema {
            name: "temp".into(),
            record: vec![0, 1, 2],
        },
    ];
    assert_eq!(
        b.apply(&ops, true).unwrap(),
        2,
        "one delivery and one queued message were added"
    );
    let b = restart(b, open);
    let mut snap = b.load().unwrap();
    snap.sessions.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(snap.sessions.len(), 2);
    assert_eq!(snap.sessions[0].0, "anon");
    assert_eq!(snap.sessions[0].1.owner, OwnerRecord::Anonymous);
    assert_eq!(
        snap.sessions[1],
        ("c.1 é".to_string(), alice),
        "record, owner and selectors"
    );
    marked.packet_id = Some(7);
    marked.released = true;
    assert_eq!(snap.deliveries, vec![("c.1 é".to_string(), 2, marked)]);
    assert_eq!(snap.messages, vec![(1, message("a/b"))]);
    assert_eq!(snap.incoming_qos2, vec![("c.1 é".to_string(), 9)]);
    assert_eq!(snap.retained, vec![message("r/1")]);
    assert_eq!(
        snap.queued,
        vec![("jobs".to_string(), 4, message("$queue/jobs"))]
    );
    assert_eq!(snap.wills, vec![("anon".to_string(), will("gone/anon"))]);
    assert_eq!(snap.schemas, vec![("temp".to_string(), vec![0, 1, 2])]);
}

pub(crate) fn a_session_delete_takes_its_deliveries_and_incoming_ids(open: Open) {
    let b = open();
    let ops = vec![
        put_session("c1"),
        put_session("c2"),
        put_message(1, "a/b"),
        put("c1", 1, 1),
        put("c2", 1, 1),
        put("c2", 2, 1),
        put_incoming("c2", 5),
    ];
    assert_eq!(b.apply(&ops, true).unwrap(), 3);
    let end = StoreOp::DeleteSession {
        client_id: "c2".into(),
    };
    assert_eq!(
        b.apply(&[end], true).unwrap(),
        -2,
        "c2's two deliveries went with its session"
    );
    let b = restart(b, open);
    let snap = b.load().unwrap();
    let clients: Vec<&str> = snap.sessions.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(clients, vec!["c1"]);
    assert_eq!(snap.deliveries.len(), 1);
    assert_eq!(snap.deliveries[0].0, "c1");
    assert!(snap.incoming_qos2.is_empty());
    assert_eq!(snap.messages.len(), 1, "c1 still refers to the message");
    // After the restart, deleting keeps counting from what was loaded.
    let end = StoreOp::DeleteSession {
        client_id: "c1".into(),
    };
    assert_eq!(b.apply(&[end], true).unwrap(), -1);
    let b = restart(b, open);
    let snap = b.load().unwrap();
    assert!(snap.sessions.is_empty() && snap.deliveries.is_empty());
    assert!(
        snap.messages.is_empty(),
        "the last delivery took the message"
    );
}

pub(crate) fn a_shared_message_goes_with_its_last_delivery(open: Open) {
    let b = open();
    let message = put_message(5, "fan/out");
    let ops = [message, put("a", 1, 5), put("b", 1, 5), put("c", 1, 5)];
    assert_eq!(b.apply(&ops, true).unwrap(), 3);
    assert_eq!(b.load().unwrap().messages.len(), 1, "one copy for three");
    let mark = StoreOp::MarkDelivery {
        client_id: "a".into(),
        seq: 1,
        packet_id: 4,
        released: true,
    };
    let delete_b = StoreOp::DeleteDelivery {
        client_id: "b".into(),
        seq: 1,
    };
    assert_eq!(b.apply(&[mark, delete_b], true).unwrap(), -1);
    let snap = b.load().unwrap();
    assert_eq!(snap.messages.len(), 1, "a and c still refer to it");
    let a = snap.deliveries.iter().find(|d| d.0 == "a").unwrap();
    assert_eq!(
        (a.2.packet_id, a.2.released, a.2.message_id),
        (Some(4), true, 5)
    );
    let delete_a = StoreOp::DeleteDelivery {
        client_id: "a".into(),
        seq: 1,
    };
    let end_c = StoreOp::DeleteSession {
        client_id: "c".into(),
    };
    assert_eq!(b.apply(&[delete_a, end_c], true).unwrap(), -2);
    let snap = b.load().unwrap();
    assert!(snap.deliveries.is_empty());
    assert!(snap.messages.is_empty(), "the last delivery took it");
}

pub(crate) fn deletes_and_rewrites_of_every_kind(open: Open) {
    let b = open();
    let ops = vec![
        put_message(1, "a"),
        put_message(2, "b"),
        put("c", 1, 1),
        put_incoming("c", 1),
        StoreOp::PutRetained {
            record: message("r/1"),
        },
        StoreOp::PutQueued {
            queue: "q".into(),
            seq: 1,
            record: message("q"),
        },
        StoreOp::PutWill {
            client_id: "c".into(),
            record: will("w"),
        },
        StoreOp::PutSchema {
            name: "s".into(),
            record: vec![1],
        },
    ];
    assert_eq!(b.apply(&ops, true).unwrap(), 2);
    let rewrite = put("c", 1, 2);
    assert_eq!(
        b.apply(&[rewrite], true).unwrap(),
        0,
        "a rewrite adds nothing"
    );
    let snap = b.load().unwrap();
    assert_eq!(snap.deliveries[0].2.message_id, 2);
    assert_eq!(
        snap.messages,
        vec![(2, message("b"))],
        "the rewrite let go of message 1"
    );
    let ops = vec![
        StoreOp::DeleteDelivery {
            client_id: "c".into(),
            seq: 1,
        },
        StoreOp::DeleteIncomingQos2 {
            client_id: "c".into(),
            packet_id: 1,
        },
        StoreOp::DeleteRetained {
            topic: "r/1".into(),
        },
        StoreOp::DeleteQueued {
            queue: "q".into(),
            seq: 1,
        },
        StoreOp::DeleteWill {
            client_id: "c".into(),
        },
        StoreOp::DeleteSchema { name: "s".into() },
        // Of what no longer exists: nothing to count, no error.
        StoreOp::DeleteQueued {
            queue: "q".into(),
            seq: 9,
        },
        StoreOp::MarkDelivery {
            client_id: "c".into(),
            seq: 1,
            packet_id: 3,
            released: false,
        },
    ];
    assert_eq!(b.apply(&ops, true).unwrap(), -2);
    let b = restart(b, open);
    let snap = b.load().unwrap();
    assert!(snap.deliveries.is_empty() && snap.messages.is_empty());
    assert!(snap.incoming_qos2.is_empty() && snap.retained.is_empty());
    assert!(snap.queued.is_empty() && snap.wills.is_empty() && snap.schemas.is_empty());
}

pub(crate) fn in_one_batch_the_last_write_of_a_key_wins(open: Open) {
    let b = open();
    let mut ops = vec![put_message(1, "m")];
    for seq in 1..=100 {
        ops.push(StoreOp::PutQueued {
            queue: "q".into(),
            seq,
            record: message("q"),
        });
        ops.push(put("c", seq, 1));
    }
    for seq in (1..=100).filter(|s| s % 2 == 0) {
        ops.push(StoreOp::DeleteQueued {
            queue: "q".into(),
            seq,
        });
    }
    ops.push(StoreOp::PutRetained {
        record: message("t"),
    });
    ops.push(StoreOp::DeleteRetained { topic: "t".into() });
    assert_eq!(b.apply(&ops, true).unwrap(), 150);
    let b = restart(b, open);
    let snap = b.load().unwrap();
    let seqs: Vec<u64> = snap.queued.iter().map(|q| q.1).collect();
    let odd: Vec<u64> = (1..=100).filter(|s| s % 2 == 1).collect();
    assert_eq!(seqs, odd, "queued in sequence order, the deleted ones gone");
    let seqs: Vec<u64> = snap.deliveries.iter().map(|d| d.1).collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
    assert!(snap.retained.is_empty());
}
