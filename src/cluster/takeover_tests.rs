//! Taking over client ids over a real `nats-server -js`: a dead node's id
//! adopted by exactly one survivor, and the claims of a start.

use std::collections::HashMap;
use std::sync::Arc;

use super::ownership::{Ownership, BUCKET};
use super::takeover::claim_at_start;
use crate::store::nats::test_server::Nats;
use crate::store::nats::{kv_key, open_bucket};

async fn jetstream(nats: &Nats) -> async_nats::jetstream::Context {
    let client = async_nats::connect(&nats.url).await.expect("connect");
    async_nats::jetstream::new(client)
}

async fn ownership(js: &async_nats::jetstream::Context, node: &str) -> Arc<Ownership> {
    let kv = open_bucket(js, BUCKET, 1).await.expect("bucket");
    Arc::new(Ownership::new(kv, js.client(), node, 1, HashMap::new()))
}

#[tokio::test]
async fn a_dead_nodes_client_id_is_adopted_by_exactly_one_survivor() {
    let nats = Nats::start().await;
    let js = jetstream(&nats).await;
    let dead = ownership(&js, "tern-a").await;
    dead.claim("x", false).await.expect("claimed");
    let (b, c) = (
        ownership(&js, "tern-b").await,
        ownership(&js, "tern-c").await,
    );
    for round in 0..5 {
        let id = format!("y{round}");
        dead.claim(&id, false).await.expect("claimed");
        let (won_b, won_c) =
            tokio::join!(b.adopt(&id, "tern-a", None), c.adopt(&id, "tern-a", None));
        let wins = [
            won_b.expect("read").is_some(),
            won_c.expect("read").is_some(),
        ];
        assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{id}: {wins:?}");
        assert_eq!(b.holds(&id), wins[0]);
        assert_eq!(c.holds(&id), wins[1]);
    }
    assert!(b.adopt("x", "tern-a", None).await.expect("read").is_some());
    assert!(
        c.adopt("x", "tern-a", None).await.expect("read").is_none(),
        "no longer the dead node's"
    );
    assert!(
        c.adopt("nobody", "tern-a", None)
            .await
            .expect("read")
            .is_none(),
        "held by none"
    );
}

#[tokio::test]
async fn a_start_claims_its_own_ids_and_unowned_sessions_and_leaves_the_rest() {
    let nats = Nats::start().await;
    let js = jetstream(&nats).await;
    ownership(&js, "tern-a")
        .await
        .claim("mine", false)
        .await
        .expect("claimed");
    ownership(&js, "tern-b")
        .await
        .claim("theirs", false)
        .await
        .expect("claimed");
    let store = open_bucket(&js, crate::store::nats::BUCKET, 1)
        .await
        .expect("store bucket");
    for client in ["unowned", "theirs"] {
        let key = format!("s.{}", kv_key::encode(client));
        store.put(key, bytes::Bytes::new()).await.expect("put");
    }
    let claims = claim_at_start(&js, "tern-a", 1, 1).await.expect("claims");
    let mut held: Vec<&str> = claims.held.keys().map(String::as_str).collect();
    held.sort_unstable();
    assert_eq!(held, vec!["mine", "unowned"]);
    assert_eq!(claims.foreign.len(), 1);
    assert!(claims.foreign.contains("theirs"));
    // Another node starting later finds them all held.
    let later = claim_at_start(&js, "tern-c", 1, 1).await.expect("claims");
    assert!(later.held.is_empty());
    assert_eq!(later.foreign.len(), 3);
}

#[tokio::test]
async fn a_claim_waits_while_an_adopted_session_is_restored() {
    let nats = Nats::start().await;
    let js = jetstream(&nats).await;
    let dead = ownership(&js, "tern-a").await;
    dead.claim("z", false).await.expect("claimed");
    let b = ownership(&js, "tern-b").await;
    let restoring = b
        .adopt("z", "tern-a", None)
        .await
        .expect("read")
        .expect("won");
    let claiming = tokio::spawn({
        let b = Arc::clone(&b);
        async move { b.claim("z", false).await.map(|c| c.held_elsewhere) }
    });
    // The CONNECT's claim cannot pass the restore in progress (a bounded look:
    // it can only ever finish early if the lock is missing).
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), async {
        while !claiming.is_finished() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(early.is_err(), "the claim waited for the restore");
    drop(restoring);
    let held_elsewhere = claiming.await.expect("joined").expect("claimed");
    assert!(
        !held_elsewhere,
        "the id was this node's already: its restored session resumes"
    );
}
