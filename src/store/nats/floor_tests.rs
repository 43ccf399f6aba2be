//! A journal pruned while it is read, against a real `nats-server -js`:
//! what is left of a prune whose deletes landed out of order (or that was
//! cut short) never brings a record back (`floor.rs`).

use super::journal::Entry;
use super::tests::Fixture;
use super::*;
use crate::store::suite::{put, put_message, put_session};

/// tern-a's journal: x's session, a message and delivery 1 in one message,
/// delivery 1 acknowledged in the next (its rounds held off). Returns the
/// two messages' sequences and the session's stored value.
fn delivered_then_acknowledged(f: &Fixture, a: &NatsBackend) -> (u64, u64, bytes::Bytes) {
    a.apply(
        &[put_session("x"), put_message(1, "t"), put("x", 1, 1)],
        true,
    )
    .unwrap();
    let ack = StoreOp::DeleteDelivery {
        client_id: "x".into(),
        seq: 1,
    };
    assert_eq!(a.apply(&[ack], true).unwrap(), -1);
    let js = f.jetstream();
    let read = f
        .runtime
        .block_on(journal::read(&js, &journal::subject("tern-a")))
        .expect("journal");
    let mut sequences: Vec<u64> = read.iter().map(|e| e.0).collect();
    sequences.dedup();
    assert_eq!(sequences.len(), 2, "one message per commit: {sequences:?}");
    let session = read
        .iter()
        .find_map(|(_, _, entry)| match entry {
            Entry::Put(key, value) if *key == keys::session("x") => Some(value.clone()),
            _ => None,
        })
        .expect("the session's write");
    (sequences[0], sequences[1], session.into())
}

/// What a prune of tern-a's journal below `below` leaves when only its
/// delete of `deleted` landed: the live records in the bucket, the floor
/// raised, the later message gone, the earlier one still there.
fn prune_cut_short(f: &Fixture, session: bytes::Bytes, below: u64, deleted: u64) {
    let js = f.jetstream();
    f.runtime.block_on(async {
        let writes = vec![(keys::session("x"), Some(session))];
        publish::publish(js.clone(), writes, "tern-a.test.1".into())
            .await
            .expect("bucket");
        floor::raise(&js, "tern-a", below).await.expect("floor");
        prune::delete(&js, deleted).await.expect("delete");
    });
}

/// tern-a, with x's delivery 1 acknowledged, died during a prune of its
/// journal that removed only the later of its two messages.
fn died_during_a_prune(f: &Fixture) {
    let a = f.open_nats("tern-a", &[]);
    let paused = f.runtime.block_on(a.compactor.pause());
    let (_, second, session) = delivered_then_acknowledged(f, &a);
    prune_cut_short(f, session, second + 1, second);
    drop(paused);
}

#[test]
fn a_takeover_reading_a_half_pruned_journal_brings_no_acknowledged_delivery_back() {
    let f = Fixture::new();
    died_during_a_prune(&f);
    let b = f.open_nats("tern-b", &["x"]);
    let snap = b
        .load_client("x", Some(&["tern-a"]))
        .unwrap()
        .expect("shared");
    assert_eq!(snap.sessions.len(), 1, "the session, from the bucket");
    assert!(
        snap.deliveries.is_empty(),
        "acknowledged delivery 1 came back: {:?}",
        snap.deliveries
    );
}

#[test]
fn a_restart_reading_its_half_pruned_journal_brings_no_acknowledged_delivery_back() {
    let f = Fixture::new();
    died_during_a_prune(&f);
    let snap = f.open("tern-a", &[]).load().unwrap();
    assert_eq!(snap.sessions.len(), 1, "the session, from the bucket");
    assert!(snap.deliveries.is_empty(), "{:?}", snap.deliveries);
}

#[test]
fn a_floor_only_rises() {
    let f = Fixture::new();
    let js = f.jetstream();
    let floors = f.runtime.block_on(async {
        open_bucket(&js, BUCKET, 1).await.expect("bucket");
        let subject = journal::subject("tern.a");
        let mut seen = Vec::new();
        for below in [5, 3, 9] {
            floor::raise(&js, "tern.a", below).await.expect("raise");
            let floors = floor::read(&js, vec![subject.clone()]).await.expect("read");
            seen.push(floors[&subject]);
        }
        seen
    });
    assert_eq!(floors, vec![5, 5, 9]);
}
