//! A node that let a client go writes its records to the bucket late (its
//! compaction round ran behind, as with a slow JetStream), after later
//! holders took the client over, changed it and let it go in turn.

use super::handover_tests::{ack, compact};
use super::tests::Fixture;
use crate::store::suite::{put, put_message, put_session};
use crate::store::Backend;

/// tern-a holds x (delivery 1 in its journal only) and lets it go; tern-b
/// takes x over, x acknowledges delivery 1 there, and tern-b dies before its
/// round; tern-c adopts x (no delivery). tern-a's round comes only now and
/// hands delivery 1 over to the bucket; tern-c lets x go at once. The node
/// that takes x next must not get delivery 1 again: for QoS 2, a message
/// delivered twice (the clustered crash test saw five).
#[test]
fn an_older_holders_late_handover_does_not_bring_back_what_a_later_one_acknowledged() {
    let f = Fixture::new();
    let a = f.open_nats("tern-a", &[]);
    let paused_a = f.runtime.block_on(a.compactor.pause());
    let ops = [put_session("x"), put_message(1, "t"), put("x", 1, 1)];
    a.apply(&ops, true).unwrap();
    assert!(a.release_client("x"));

    let b = f.open_nats("tern-b", &["x"]);
    let paused_b = f.runtime.block_on(b.compactor.pause());
    let taken = b.load_client("x", Some(&["tern-a"])).unwrap();
    assert_eq!(taken.expect("shared").deliveries.len(), 1);
    b.apply(&[ack("x", 1)], true).unwrap();

    let c = f.open_nats("tern-c", &["x"]);
    let paused_c = f.runtime.block_on(c.compactor.pause());
    let taken = c.load_client("x", Some(&["tern-b"])).unwrap();
    assert!(taken.expect("shared").deliveries.is_empty());

    drop(paused_a);
    compact(&f, &a);
    assert!(c.release_client("x"));
    drop(paused_c);
    compact(&f, &c);

    let d = f.open_nats("tern-d", &["x"]);
    let taken = d.load_client("x", Some(&["tern-c"])).unwrap();
    let deliveries = taken.expect("shared").deliveries;
    assert!(
        deliveries.is_empty(),
        "a delivery acknowledged on tern-b came back: {deliveries:?}"
    );
    drop(paused_b);
}
