//! A client let go through the store front (`Store::release_client`)
//! against a real `nats-server -js`: in order with the submissions, so what
//! was routed to the session before it moved is written and reaches the new
//! holder, and nothing submitted after it.

use super::tests::Fixture;
use super::*;
use crate::store::suite::{put, put_message, put_session};
use crate::store::{Durability, Store};

/// tern-a's store front over its NATS backend, whose writer takes its batch
/// between routings (a trailer set): a test holding the routing gate holds
/// the writer off, as a delivery routed to a session just before it moved
/// is submitted and not yet committed when the session is let go (the marks
/// said for it cover that delivery).
fn routing_to_x(f: &Fixture) -> Arc<Store> {
    let a = f.open_nats("tern-a", &[]);
    let store = Store::start(a as Arc<dyn Backend>, Durability::Batched);
    store.set_trailer(Box::new(|| None));
    store
}

/// What tern-b reads of x, taken over from tern-a.
fn owed_to_x_on_b(f: &Fixture) -> (usize, Vec<u64>) {
    let b = f.open_nats("tern-b", &["x"]);
    let snap = b
        .load_client("x", Some(&["tern-a"]))
        .unwrap()
        .expect("shared");
    let mut owed: Vec<u64> = snap.deliveries.iter().map(|d| d.1).collect();
    owed.sort();
    (snap.sessions.len(), owed)
}

#[test]
fn a_release_writes_what_was_submitted_for_the_client_before_it_and_nothing_after() {
    let f = Fixture::new();
    let store = routing_to_x(&f);
    let routing = store.routing();
    store.submit([put_session("x"), put_message(1, "t"), put("x", 1, 1)]);
    assert!(store.release_client("x"), "a shared store");
    // Submitted after the release: no longer this node's to write.
    let last = store.submit([put_message(2, "t"), put("x", 2, 2)]);
    drop(routing);
    f.runtime.block_on(store.wait(last)).expect("committed");
    let (sessions, owed) = owed_to_x_on_b(&f);
    assert_eq!(sessions, 1, "the session written before the release");
    assert_eq!(
        owed,
        [1],
        "the delivery submitted before the release reaches the new holder, the one after does not"
    );
    store.close();
}

#[test]
fn a_hold_submitted_after_a_release_writes_what_follows_it() {
    let f = Fixture::new();
    let store = routing_to_x(&f);
    let routing = store.routing();
    store.submit([put_session("x"), put_message(1, "t"), put("x", 1, 1)]);
    assert!(store.release_client("x"));
    // The client came back here before the release was applied.
    store.hold_client("x");
    let last = store.submit([put_message(2, "t"), put("x", 2, 2)]);
    drop(routing);
    f.runtime.block_on(store.wait(last)).expect("committed");
    let (_, owed) = owed_to_x_on_b(&f);
    assert_eq!(
        owed,
        [1, 2],
        "held again: the later delivery is written too"
    );
    store.close();
}
