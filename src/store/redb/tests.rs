//! The redb backend's records, kept and removed as the store's operations say.

use super::*;
use crate::store::record::{
    unix_ms_now, DeliveryRecordV1, DeliveryRecordV2, OldDeliveryFields, SubscriptionRecord,
};

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-redb-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("tern.redb")
}

fn message(topic: &str) -> MessageRecord {
    MessageRecord {
        topic: topic.into(),
        payload: b"p\x00q".to_vec(),
        qos: 1,
        retain: false,
        expires_at_ms: None,
        payload_is_utf8: false,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: vec![],
        publisher: None,
    }
}

#[test]
fn records_survive_reopen_and_session_delete_removes_its_rows() {
    let path = temp_path("reopen");
    {
        let b = RedbBackend::open(&path).unwrap();
        let session = SessionRecord {
            expiry_interval: 60,
            disconnected_at_ms: None,
            owner: OwnerRecord::User("alice".into()),
            subscriptions: vec![SubscriptionRecord {
                selector: Some("bucket = 3".into()),
                filter: "a/#".into(),
                qos: 1,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
                subscription_id: Some(3),
            }],
        };
        let delivery = DeliveryRecord {
            message_id: 1,
            qos: 1,
            retain: false,
            subscription_ids: vec![3],
            packet_id: Some(7),
            released: false,
            queued_at_ms: 1_700_000_000_000,
        };
        let added = b
            .apply(
                &[
                    StoreOp::PutSession {
                        client_id: "c1".into(),
                        record: session.clone(),
                    },
                    StoreOp::PutSession {
                        client_id: "c2".into(),
                        record: session,
                    },
                    StoreOp::PutMessage {
                        id: 1,
                        record: message("a/b"),
                    },
                    StoreOp::PutDelivery {
                        client_id: "c1".into(),
                        seq: 1,
                        record: delivery.clone(),
                    },
                    StoreOp::PutDelivery {
                        client_id: "c2".into(),
                        seq: 1,
                        record: delivery,
                    },
                    StoreOp::PutIncomingQos2 {
                        client_id: "c1".into(),
                        packet_id: 9,
                    },
                    StoreOp::PutRetained {
                        record: message("r/1"),
                    },
                    StoreOp::PutQueued {
                        queue: "jobs".into(),
                        seq: 4,
                        record: message("$queue/jobs"),
                    },
                ],
                true,
            )
            .unwrap();
        assert_eq!(added, 3, "two deliveries and one queued message were added");
        let removed = b
            .apply(
                &[StoreOp::DeleteSession {
                    client_id: "c2".into(),
                }],
                true,
            )
            .unwrap();
        assert_eq!(removed, -1, "c2's one delivery went with its session");
    }
    let b = RedbBackend::open(&path).unwrap();
    let snap = b.load().unwrap();
    assert_eq!(snap.sessions.len(), 1);
    assert_eq!(snap.sessions[0].0, "c1");
    assert_eq!(snap.sessions[0].1.owner, OwnerRecord::User("alice".into()));
    assert_eq!(
        snap.sessions[0].1.subscriptions[0].selector.as_deref(),
        Some("bucket = 3"),
        "the selector is kept beside the record"
    );
    assert_eq!(snap.deliveries.len(), 1);
    assert_eq!(snap.deliveries[0].2.packet_id, Some(7));
    assert_eq!(snap.messages.len(), 1, "c1 still refers to the message");
    assert_eq!(snap.messages[0].1.payload, b"p\x00q".to_vec());
    assert_eq!(snap.incoming_qos2, vec![("c1".to_string(), 9)]);
    assert_eq!(snap.retained.len(), 1);
    assert_eq!(snap.queued[0].0, "jobs");
    assert_eq!(snap.queued[0].2.payload, b"p\x00q".to_vec());
}

fn delivery(message_id: u64) -> DeliveryRecord {
    DeliveryRecord {
        message_id,
        qos: 1,
        retain: false,
        subscription_ids: vec![],
        packet_id: None,
        released: false,
        queued_at_ms: 0,
    }
}

fn put(client_id: &str, seq: u64, message_id: u64) -> StoreOp {
    StoreOp::PutDelivery {
        client_id: client_id.into(),
        seq,
        record: delivery(message_id),
    }
}

#[test]
fn a_message_owed_to_many_sessions_is_stored_once_and_goes_with_its_last_delivery() {
    let b = RedbBackend::open(&temp_path("shared")).unwrap();
    let message = StoreOp::PutMessage {
        id: 5,
        record: message("fan/out"),
    };
    let added = b
        .apply(
            &[message, put("a", 1, 5), put("b", 1, 5), put("c", 1, 5)],
            true,
        )
        .unwrap();
    assert_eq!(added, 3);
    assert_eq!(
        b.load().unwrap().messages.len(),
        1,
        "one copy for three sessions"
    );
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
    b.apply(&[mark, delete_b], true).unwrap();
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
    assert!(
        snap.messages.is_empty(),
        "the last delivery took the message with it"
    );
}

/// A store file written as format `version`: its tables as `fill` writes them.
fn old_format_store(
    name: &str,
    version: u64,
    fill: impl FnOnce(&redb::WriteTransaction),
) -> PathBuf {
    let path = temp_path(name);
    let b = RedbBackend::open(&path).unwrap();
    let db = b.db.read();
    let txn = db.as_ref().unwrap().begin_write().unwrap();
    txn.open_table(META)
        .unwrap()
        .insert("format_version", version)
        .unwrap();
    fill(&txn);
    txn.commit().unwrap();
    path
}

fn put_old_delivery(txn: &redb::WriteTransaction, key: (&str, u64), bytes: Vec<u8>) {
    txn.open_table(DELIVERIES)
        .unwrap()
        .insert(key, bytes.as_slice())
        .unwrap();
}

#[test]
fn a_format_1_store_is_migrated_with_its_deliveries() {
    let path = old_format_store("v1", 1, |txn| {
        let old = DeliveryRecordV1 {
            message: message("old/topic"),
            rest: OldDeliveryFields {
                qos: 2,
                retain: true,
                subscription_ids: vec![8],
                packet_id: Some(3),
                released: true,
            },
        };
        put_old_delivery(txn, ("c1", 7), encode(&old).unwrap());
    });
    let b = RedbBackend::open(&path).unwrap();
    let snap = b.load().unwrap();
    assert_eq!(snap.deliveries.len(), 1);
    let (client, seq, record) = &snap.deliveries[0];
    assert_eq!((client.as_str(), *seq), ("c1", 7));
    assert_eq!(
        (record.qos, record.retain, record.packet_id, record.released),
        (2, true, Some(3), true)
    );
    assert_eq!(record.subscription_ids, vec![8]);
    assert!(
        record.queued_at_ms > 0,
        "an unknown queue time counts from the migration"
    );
    assert_eq!(snap.messages.len(), 1);
    assert_eq!(snap.messages[0].0, record.message_id);
    assert_eq!(snap.messages[0].1.topic, "old/topic");
    // Migrated once: the file now says the current format, and deleting the delivery frees its message.
    let delete = StoreOp::DeleteDelivery {
        client_id: "c1".into(),
        seq: 7,
    };
    b.apply(&[delete], true).unwrap();
    assert!(b.load().unwrap().messages.is_empty());
}

#[test]
fn a_format_2_store_gets_queue_times_on_its_deliveries() {
    let before = unix_ms_now();
    let path = old_format_store("v2", 2, |txn| {
        txn.open_table(MESSAGES)
            .unwrap()
            .insert(5, encode(&message("v2/topic")).unwrap().as_slice())
            .unwrap();
        txn.open_table(MESSAGE_REFS).unwrap().insert(5, 1).unwrap();
        let old = DeliveryRecordV2 {
            message_id: 5,
            rest: OldDeliveryFields {
                qos: 1,
                retain: false,
                subscription_ids: vec![],
                packet_id: Some(4),
                released: false,
            },
        };
        put_old_delivery(txn, ("c2", 3), encode(&old).unwrap());
    });
    let b = RedbBackend::open(&path).unwrap();
    let snap = b.load().unwrap();
    let (client, seq, record) = &snap.deliveries[0];
    assert_eq!((client.as_str(), *seq, record.message_id), ("c2", 3, 5));
    assert_eq!(record.packet_id, Some(4));
    assert!(record.queued_at_ms >= before);
    assert_eq!(snap.messages[0].1.topic, "v2/topic");
    let db = b.db.read();
    let txn = db.as_ref().unwrap().begin_read().unwrap();
    let version = txn.open_table(META).unwrap().get("format_version").unwrap();
    assert_eq!(version.map(|v| v.value()), Some(FORMAT_VERSION));
}

#[test]
fn second_open_of_the_same_file_is_a_locked_error() {
    let path = temp_path("locked");
    let _first = RedbBackend::open(&path).unwrap();
    let err = RedbBackend::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
}

#[test]
fn newer_format_is_refused() {
    let path = temp_path("newer");
    {
        let b = RedbBackend::open(&path).unwrap();
        let db = b.db.read();
        let txn = db.as_ref().unwrap().begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("format_version", FORMAT_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let err = RedbBackend::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::NewerFormat { .. }), "{err}");
}

#[test]
fn garbage_file_is_a_clear_error_not_a_reset() {
    let path = temp_path("garbage");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, vec![0xAB; 8192]).unwrap();
    let err = RedbBackend::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { .. } | StoreError::Open { .. }),
        "{err}"
    );
    // The file was not replaced by an empty store.
    assert_eq!(std::fs::read(&path).unwrap(), vec![0xAB; 8192]);
}

#[test]
fn a_flat_format_2_delivery_reads_as_the_nested_migration_record() {
    // The layout format 2 wrote, field by field.
    #[derive(serde::Serialize)]
    struct Flat {
        message_id: u64,
        qos: u8,
        retain: bool,
        subscription_ids: Vec<u32>,
        packet_id: Option<u16>,
        released: bool,
    }
    let flat = Flat {
        message_id: 300,
        qos: 2,
        retain: true,
        subscription_ids: vec![1, 70_000],
        packet_id: Some(513),
        released: true,
    };
    let read: DeliveryRecordV2 = decode(&encode(&flat).unwrap()).unwrap();
    let current = read.rest.current(read.message_id, 9);
    assert_eq!(
        (
            current.message_id,
            current.qos,
            current.retain,
            current.packet_id
        ),
        (300, 2, true, Some(513))
    );
    assert_eq!(
        (current.subscription_ids, current.released),
        (vec![1, 70_000], true)
    );
}
