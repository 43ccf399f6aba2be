//! A survivor adopting a dead node's client id, against a real
//! `nats-server -js`: what it routes for the session between its claim and
//! the restore is captured and handed to the session restored. Without it
//! such a message reached no store while this node confirmed it to its
//! sender; once the dead node ran again (its new run's confirms count),
//! nothing held the publisher's ack back (the clustered crash test: one
//! acknowledged QoS 1 message lost).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::cluster::ownership::{OwnerValue, Ownership, BUCKET as OWNERS};
use crate::core::fabric::Fabric;
use crate::core::message::{Message, QoS};
use crate::core::peer_marks::PeerPosition;
use crate::core::router::Router;
use crate::store::nats::tests::Fixture;
use crate::store::nats::{kv_key, NatsBackend};
use crate::store::record::OwnerRecord;
use crate::store::suite::session;
use crate::store::{Backend, Durability, Store};

use super::unread_tests::{live_session, router_on};

/// A fabric that carries nothing: the router only needs one to capture.
#[derive(Debug, Default)]
struct QuietFabric;

impl Fabric for QuietFabric {
    fn forward(&self, _message: &Arc<Message>, _after_local: bool) -> u64 {
        0
    }
    fn interest_added(&self, _filter: &str) {}
    fn interest_removed(&self, _filter: &str) {}
}

/// Another node's QoS 1 message on `topic`, its `seq`-th: the number of
/// sessions it was queued for (a capture's are not counted).
fn from_peer(router: &Router, topic: &str, seq: u64) -> usize {
    let message = Arc::new(Message::new(
        topic,
        Bytes::from_static(b"m"),
        QoS::AtLeastOnce,
        false,
    ));
    let at = PeerPosition {
        node: "tern-p",
        epoch: 1,
        seq,
    };
    router.publish_from_peer(message, at).matched
}

/// tern-b's store, a survivor's.
fn survivor_store(f: &Fixture) -> Arc<Store> {
    let js = f.jetstream();
    let backend = f.runtime.block_on(async {
        NatsBackend::open(js, "tern-b", 1, Default::default())
            .await
            .expect("open")
    });
    Store::start(Arc::new(backend) as Arc<dyn Backend>, Durability::Batched)
}

#[test]
fn what_is_routed_between_an_adoptions_claim_and_its_restore_reaches_the_session() {
    let f = Fixture::new();
    let js = f.jetstream();
    // tern-a holds c and d, both stored, and dies.
    let a = f.open_nats("tern-a", &[]);
    a.apply(&[live_session("c"), live_session("d")], true)
        .expect("stored");
    f.runtime
        .block_on(crate::cluster::state::claim_at_start(&js, "tern-a", 1, 1))
        .expect("tern-a's claims");
    drop(a);
    // Its claims list the sessions' subscriptions, as a node writes them
    // when its clients subscribe (`Ownership::subscriptions_changed`).
    f.runtime.block_on(async {
        let kv = js.get_key_value(OWNERS).await.expect("owners bucket");
        for client in ["c", "d"] {
            let key = kv_key::encode(client);
            let value = kv.get(key.as_str()).await.expect("read").expect("claimed");
            let mut value = OwnerValue::decode(&value).expect("a claim");
            value.subscriptions = session(OwnerRecord::Anonymous).subscriptions;
            kv.put(key.as_str(), value.encode()).await.expect("written");
        }
    });
    let claim = |client: &str| -> OwnerValue {
        f.runtime.block_on(async {
            let kv = js.get_key_value(OWNERS).await.expect("owners bucket");
            let value = kv.get(kv_key::encode(client)).await.expect("read");
            OwnerValue::decode(&value.expect("claimed")).expect("a claim")
        })
    };
    let subscriptions = claim("c").subscriptions;
    assert!(
        subscriptions.iter().any(|s| s.filter == "b/+"),
        "the claim lists the session's subscriptions: {subscriptions:?}"
    );
    // tern-b, a survivor with a store and a fabric.
    let store = survivor_store(&f);
    let router = router_on(&store);
    assert!(router.set_fabric(Arc::new(QuietFabric)));
    let owned = f.runtime.block_on(async {
        let kv = crate::store::nats::open_bucket(&js, OWNERS, 1)
            .await
            .expect("owners");
        Ownership::new(kv, js.client(), "tern-b", 2, HashMap::new())
    });
    let holders = (&["tern-a", "tern-a"][..], true);
    let marks = ("tern-a", Some(1));
    f.runtime.block_on(async {
        // c: captured from before the claim, as `take_over_node` does.
        let mut capture = router.capture_adoption("c", &subscriptions).await;
        assert!(capture.is_some(), "b/+ is carried between nodes");
        let adopted = owned.adopt("c", "tern-a", None).await.expect("read");
        let adopted = adopted.expect("tern-b adopts c");
        from_peer(&router, "b/1", 1);
        assert!(
            router.capture_hold().holding,
            "this node confirms nothing of it before the session has it"
        );
        let restored = router
            .adopt_session("c", holders, marks, &mut capture)
            .await;
        drop(adopted);
        assert_eq!(restored, Ok(true));
        assert!(capture.is_none(), "handed over");
        assert!(!router.capture_hold().holding);
        // d: the same without a capture.
        let adopted = owned.adopt("d", "tern-a", None).await.expect("read");
        let adopted = adopted.expect("tern-b adopts d");
        assert_eq!(
            from_peer(&router, "b/1", 2),
            1,
            "c alone: no session d here yet"
        );
        assert!(!router.capture_hold().holding, "nor a capture for it");
        let restored = router.adopt_session("d", holders, marks, &mut None).await;
        drop(adopted);
        assert_eq!(restored, Ok(true));
    });
    let pending = |client: &str| router.session(client).map(|s| s.pending_len());
    assert_eq!(
        pending("c"),
        Some(2),
        "c got the message routed while it was adopted, and the next"
    );
    assert_eq!(
        pending("d"),
        Some(0),
        "without the capture that message reached no store"
    );
    // A capture of an id another survivor adopted first holds nothing back.
    f.runtime.block_on(async {
        let capture = router.capture_adoption("e", &subscriptions).await;
        from_peer(&router, "b/2", 3);
        assert!(router.capture_hold().holding, "captured for e");
        capture.expect("a capture").no_session();
        let hold = router.capture_hold();
        assert!(!hold.holding && hold.failed == 0, "{hold:?}");
    });
    store.close();
}

/// tern-a holds c and d, their records in its journal only, and dies.
fn stored_in_a_journal_only(f: &Fixture) {
    let a = f.open_nats("tern-a", &[]);
    let paused = f.runtime.block_on(a.pause_compaction());
    a.apply(&[live_session("c"), live_session("d")], true)
        .expect("stored");
    f.runtime
        .block_on(crate::cluster::state::claim_at_start(
            &f.jetstream(),
            "tern-a",
            1,
            1,
        ))
        .expect("tern-a's claims");
    drop(paused);
    drop(a);
}

#[test]
fn a_kept_session_a_read_of_the_wrong_journals_misses_is_read_from_every_journal() {
    let f = Fixture::new();
    stored_in_a_journal_only(&f);
    let store = survivor_store(&f);
    let router = router_on(&store);
    // The claims name tern-x as the holder whose journal has the records
    // (a chain of claims that went wrong): they are in tern-a's.
    let wrong = (&["tern-x"][..], true);
    let marks = ("tern-x", None);
    let (kept, not_expected) = f.runtime.block_on(async {
        let kept = router.adopt_session("c", wrong, marks, &mut None).await;
        let not_expected = router
            .adopt_session("d", (wrong.0, false), marks, &mut None)
            .await;
        (kept, not_expected)
    });
    assert_eq!(kept, Ok(true), "c found in tern-a's journal and restored");
    assert!(router.session("c").is_some());
    assert_eq!(
        not_expected,
        Ok(false),
        "d, whose claim says nothing was kept, is read where its holders wrote"
    );
    store.close();
}
