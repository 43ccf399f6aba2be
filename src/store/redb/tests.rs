//! The redb backend: the store test suite (`store/suite.rs`), and what is
//! redb's own: format migration, a locked, newer or damaged file.

use super::*;
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

#[test]
fn a_format_1_store_is_migrated_with_its_deliveries() {
    let path = temp_path("v1");
    {
        let b = RedbBackend::open(&path).unwrap();
        let db = b.db.read();
        let txn = db.as_ref().unwrap().begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("format_version", 1)
            .unwrap();
        let old = DeliveryRecordV1 {
            message: message("old/topic"),
            qos: 2,
            retain: true,
            subscription_ids: vec![8],
            packet_id: Some(3),
            released: true,
        };
        txn.open_table(DELIVERIES)
            .unwrap()
            .insert(("c1", 7), encode(&old).unwrap().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
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
    assert_eq!(snap.messages.len(), 1);
    assert_eq!(snap.messages[0].0, record.message_id);
    assert_eq!(snap.messages[0].1.topic, "old/topic");
    // Migrated once: the file now says format 2, and deleting the delivery frees its message.
    let delete = StoreOp::DeleteDelivery {
        client_id: "c1".into(),
        seq: 7,
    };
    b.apply(&[delete], true).unwrap();
    assert!(b.load().unwrap().messages.is_empty());
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
