//! The redb backend: the store test suite (`store/suite.rs`), and what is
//! redb's own: format migration, a locked, newer or damaged file.

use super::*;
use crate::store::record::{unix_ms_now, DeliveryRecordV1, DeliveryRecordV2, OldDeliveryFields};
use crate::store::suite::message;

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-redb-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("tern.redb")
}

/// The storage of one suite case: a fresh file, opened again on each call.
fn fixture(name: &str) -> ((), impl FnMut() -> std::sync::Arc<dyn Backend>) {
    let path = temp_path(name);
    let open = move || {
        let backend: std::sync::Arc<dyn Backend> =
            std::sync::Arc::new(RedbBackend::open(&path).expect("open the store file"));
        backend
    };
    ((), open)
}

crate::store::suite::store_suite!(fixture);

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
