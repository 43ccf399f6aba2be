//! A client id adopted from a dead node by a run that died before reading
//! its stored state, against a real `nats-server -js`: the claim says so
//! (`OwnerValue::unread_from`), and the next holder reads the journal the
//! records are in. Without it the restarted node restored the session from
//! the bucket and its own journal alone, stale: deliveries the dead node
//! had completed came back (the clustered crash test: 1,844 QoS 2 repeats),
//! and the messages only its journal held were missing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::cluster::ownership::{OwnerValue, Ownership, BUCKET as OWNERS};
use crate::core::router::{Router, RouterSettings};
use crate::core::session::{OverflowPolicy, QueueLimits};
use crate::store::nats::tests::Fixture;
use crate::store::nats::{kv_key, NatsBackend};
use crate::store::record::OwnerRecord;
use crate::store::suite::{put, put_message, session};
use crate::store::{Backend, StoreOp};
use crate::store::{Durability, Store};

/// The claim of `client` in `tern_clients`, as stored.
fn claim_of(f: &Fixture, client: &str) -> Option<OwnerValue> {
    let js = f.jetstream();
    f.runtime.block_on(async {
        let kv = js.get_key_value(OWNERS).await.expect("owners bucket");
        let value = kv.get(kv_key::encode(client)).await.expect("read")?;
        OwnerValue::decode(&value)
    })
}

/// A persistent session of `client` (subscribed to `a/#` and `b/+`) that
/// disconnected just now.
pub(super) fn live_session(client: &str) -> StoreOp {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    StoreOp::PutSession {
        client_id: client.into(),
        record: crate::store::record::SessionRecord {
            expiry_interval: 3600,
            disconnected_at_ms: Some(now_ms),
            ..session(OwnerRecord::Anonymous)
        },
    }
}

/// A router on `store` (queues of 100 messages).
pub(super) fn router_on(store: &Arc<Store>) -> Arc<Router> {
    let limits = QueueLimits {
        max_queued: 100,
        max_queued_bytes: 0,
        overflow: OverflowPolicy::DropNew,
        max_queued_age_ms: 0,
    };
    Arc::new(Router::from_settings(RouterSettings {
        store: Some(Arc::clone(store)),
        ..RouterSettings::new(limits)
    }))
}

/// tern-a held c with two deliveries only its journal has, then died;
/// tern-b's run 2 adopted c and died before reading it.
fn adopted_and_left_unread(f: &Fixture) {
    let a = f.open_nats("tern-a", &[]);
    let paused = f.runtime.block_on(a.pause_compaction());
    a.apply(
        &[
            live_session("c"),
            put_message(1, "t"),
            put_message(2, "t"),
            put("c", 1, 1),
            put("c", 2, 2),
        ],
        true,
    )
    .unwrap();
    let js = f.jetstream();
    let claims = f
        .runtime
        .block_on(crate::cluster::state::claim_at_start(&js, "tern-a", 1, 1))
        .expect("tern-a's claims");
    assert!(claims.foreign.is_empty(), "c is tern-a's");
    drop(paused);
    drop(a); // died before a round: c's records are in its journal only
    f.runtime.block_on(async {
        let kv = crate::store::nats::open_bucket(&js, OWNERS, 1)
            .await
            .expect("owners");
        let b = Ownership::new(kv, js.client(), "tern-b", 2, HashMap::new());
        let adopted = b.adopt("c", "tern-a", None).await.expect("read");
        assert!(adopted.is_some(), "tern-b adopts c");
    }); // and dies before reading it
}

#[test]
fn an_adoption_says_unread_in_the_claim_until_the_read_is_done() {
    let f = Fixture::new();
    adopted_and_left_unread(&f);
    let claim = claim_of(&f, "c").expect("claimed");
    assert_eq!(claim.node, "tern-b");
    assert_eq!(claim.unread_from, Some(("tern-a".to_string(), 1)));
    // Another survivor adopting from tern-b keeps where the records are.
    let js = f.jetstream();
    let c = f.runtime.block_on(async {
        let kv = crate::store::nats::open_bucket(&js, OWNERS, 1)
            .await
            .expect("owners");
        let c = Arc::new(Ownership::new(kv, js.client(), "tern-c", 7, HashMap::new()));
        let beating = c.adopt("c", "tern-b", Some(2)).await.expect("read");
        assert!(
            beating.is_none(),
            "a claim of the run of tern-b that beats again is left alone"
        );
        let adopted = c.adopt("c", "tern-b", Some(3)).await.expect("read");
        let adopted = adopted.expect("tern-c adopts c from tern-b's run 2, dead");
        assert_eq!(adopted.unread_from, ("tern-a".to_string(), 1));
        tokio::spawn(Arc::clone(&c).run_writer());
        c
    });
    let claim = claim_of(&f, "c").expect("claimed");
    assert_eq!(
        (claim.node.as_str(), &claim.unread_from),
        ("tern-c", &Some(("tern-a".to_string(), 1))),
        "still unread: tern-b never read it"
    );
    c.stored_state_read("c");
    let claim = eventually_read(&f, "c");
    assert_eq!((claim.node.as_str(), claim.unread_from), ("tern-c", None));
    // A client's claim elsewhere is unread until that node's read is done.
    let claimed = f.runtime.block_on(async {
        let kv = crate::store::nats::open_bucket(&js, OWNERS, 1)
            .await
            .expect("owners");
        let d = Ownership::new(kv, js.client(), "tern-d", 9, HashMap::new());
        d.claim("c", false).await.expect("tern-d claims c")
    });
    let tern_c = Some(("tern-c".to_string(), 7));
    assert_eq!(claimed.unread_from, tern_c);
    assert_eq!(claim_of(&f, "c").expect("claimed").unread_from, tern_c);
}

/// The claim of `client` once it no longer says unread (or after 20 s).
fn eventually_read(f: &Fixture, client: &str) -> OwnerValue {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let claim = claim_of(f, client).expect("claimed");
        if claim.unread_from.is_none() || Instant::now() > deadline {
            return claim;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_restart_reads_what_its_last_run_adopted_and_never_read() {
    let f = Fixture::new();
    adopted_and_left_unread(&f);
    let js = f.jetstream();
    // tern-b's run 3.
    let claims = f
        .runtime
        .block_on(crate::cluster::state::claim_at_start(&js, "tern-b", 3, 1))
        .expect("tern-b's claims");
    assert_eq!(
        claims.unread().into_iter().collect::<Vec<_>>(),
        ["c".to_string()]
    );
    let backend = f.runtime.block_on(async {
        NatsBackend::open(js.clone(), "tern-b", 1, claims.foreign.clone())
            .await
            .expect("open")
            .leaving_unread(claims.unread())
    });
    let store = Store::start(Arc::new(backend) as Arc<dyn Backend>, Durability::Batched);
    let snapshot = store.load().expect("load");
    assert!(
        snapshot.sessions.is_empty(),
        "not restored from the bucket and tern-b's journal alone"
    );
    let router = router_on(&store);
    router.restore(snapshot).expect("restore");
    let _state = f
        .runtime
        .block_on(crate::cluster::state::SharedState::start(
            &js,
            ("tern-b", 3),
            1,
            &router,
            claims,
        ))
        .expect("shared state");
    let deadline = Instant::now() + Duration::from_secs(20);
    let owed = loop {
        let owed = router.session("c").map(|s| s.pending_len());
        if owed == Some(2) || Instant::now() > deadline {
            break owed;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(owed, Some(2), "c resumed with what tern-a's journal held");
    let claim = eventually_read(&f, "c");
    assert_eq!((claim.node.as_str(), claim.unread_from), ("tern-b", None));
    store.close();
}
