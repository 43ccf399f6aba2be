//! A client let go through the store front (`Store::release_client`)
//! against a real `nats-server -js`: in order with the submissions, so what
//! was routed to the session before it moved is written and reaches the new
//! holder, and nothing submitted after it.

use super::tests::Fixture;
use super::*;
use crate::store::suite::{put, put_message, put_session};
use crate::store::{Durability, Store};

#[test]
fn a_release_writes_what_was_submitted_for_the_client_before_it_and_nothing_after() {
    let f = Fixture::new();
    let a = f.open_nats("tern-a", &[]);
    let store = Store::start(Arc::clone(&a) as Arc<dyn Backend>, Durability::Batched);
    // A writer with a trailer takes its batch between routings: held off
    // while this routing holds the gate, as a delivery routed to a session
    // just before it moved is submitted and not yet committed when the
    // session is let go (the marks said for it cover that delivery).
    store.set_trailer(Box::new(|| None));
    let routing = store.routing();
    store.submit([put_session("x"), put_message(1, "t"), put("x", 1, 1)]);
    assert!(store.release_client("x"), "a shared store");
    // Submitted after the release: no longer this node's to write.
    let last = store.submit([put_message(2, "t"), put("x", 2, 2)]);
    drop(routing);
    f.runtime.block_on(store.wait(last)).expect("committed");
    let b = f.open_nats("tern-b", &["x"]);
    let snap = b.load_client("x", Some("tern-a")).unwrap().expect("shared");
    assert_eq!(
        snap.sessions.len(),
        1,
        "the session written before the release"
    );
    let owed: Vec<u64> = snap.deliveries.iter().map(|d| d.1).collect();
    assert_eq!(
        owed,
        [1],
        "the delivery submitted before the release reaches the new holder, the one after does not"
    );
    store.close();
}

#[test]
fn a_hold_after_a_release_in_the_same_batch_writes_what_follows_it() {
    let f = Fixture::new();
    let a = f.open_nats("tern-a", &[]);
    let store = Store::start(Arc::clone(&a) as Arc<dyn Backend>, Durability::Batched);
    store.set_trailer(Box::new(|| None));
    let routing = store.routing();
    store.submit([put_session("x"), put_message(1, "t"), put("x", 1, 1)]);
    assert!(store.release_client("x"));
    // The client came back here before the release was applied.
    store.hold_client("x");
    let last = store.submit([put_message(2, "t"), put("x", 2, 2)]);
    drop(routing);
    f.runtime.block_on(store.wait(last)).expect("committed");
    let b = f.open_nats("tern-b", &["x"]);
    let snap = b.load_client("x", Some("tern-a")).unwrap().expect("shared");
    let mut owed: Vec<u64> = snap.deliveries.iter().map(|d| d.1).collect();
    owed.sort();
    assert_eq!(
        owed,
        [1, 2],
        "held again: the later delivery is written too"
    );
    store.close();
}
