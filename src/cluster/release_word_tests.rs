//! The word between a claiming node and the node that held the id
//! (`cluster/release.rs`), against a real `nats-server -js`: a live holder
//! whose writes of the session are slow to commit (JetStream electing a
//! leader) is waited for, so the new holder reads them; one that does not
//! answer, 1 s as before.
//! Before, the claim waited 1 s for the word and then read the records
//! without the writes still in flight: they landed after its read, and
//! their messages were lost for the session.

use std::time::Duration;

use std::sync::Arc;

use crate::cluster::state::SharedState;
use crate::core::cluster_state::ClusterState;
use crate::core::router::{Router, RouterSettings};
use crate::core::session::{OverflowPolicy, QueueLimits, SessionOwner};
use crate::store::nats::tests::Fixture;
use crate::store::record::{StreamRecord, StreamState};
use crate::store::suite::{put, put_message};
use crate::store::{Backend, Snapshot, StoreError, StoreOp, StreamChange, StreamLimits};
use crate::store::{Durability, Store};

/// A backend whose commits wait while it is held, as a JetStream electing
/// a leader makes them wait; everything else goes straight through. (Holding
/// the store's routing gate instead also held the old holder's let-go,
/// which takes that gate, on a worker of the test's two-worker runtime.)
struct HeldCommits {
    inner: Arc<dyn Backend>,
    held: parking_lot::Mutex<bool>,
    released: parking_lot::Condvar,
}

impl HeldCommits {
    fn hold(&self) {
        *self.held.lock() = true;
    }

    fn release(&self) {
        *self.held.lock() = false;
        self.released.notify_all();
    }
}

impl Backend for HeldCommits {
    fn apply(&self, ops: &[StoreOp], fsync: bool) -> Result<i64, StoreError> {
        let mut held = self.held.lock();
        while *held {
            self.released.wait(&mut held);
        }
        drop(held);
        self.inner.apply(ops, fsync)
    }
    fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load()
    }
    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }
    fn linger(&self) -> Option<Duration> {
        self.inner.linger()
    }
    fn first_message_id(&self) -> u64 {
        self.inner.first_message_id()
    }
    fn close(&self) {
        self.inner.close()
    }
    fn read_stream(
        &self,
        stream: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, StreamRecord)>, StoreError> {
        self.inner.read_stream(stream, from, max)
    }
    fn find_stream_time(&self, stream: &str, time_ms: u64) -> Result<Option<u64>, StoreError> {
        self.inner.find_stream_time(stream, time_ms)
    }
    fn stream_state(&self, stream: &str) -> Result<Option<StreamState>, StoreError> {
        self.inner.stream_state(stream)
    }
    fn configure_stream(&self, stream: &str, limits: StreamLimits) {
        self.inner.configure_stream(stream, limits)
    }
    fn load_client(
        &self,
        client_id: &str,
        previous_holders: Option<&[&str]>,
    ) -> Result<Option<Snapshot>, StoreError> {
        self.inner.load_client(client_id, previous_holders)
    }
    fn release_client(&self, client_id: &str) -> bool {
        self.inner.release_client(client_id)
    }
    fn hold_client(&self, client_id: &str) {
        self.inner.hold_client(client_id)
    }
    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }
    fn stream_changes(&self) -> Option<tokio::sync::mpsc::Receiver<StreamChange>> {
        self.inner.stream_changes()
    }
}

fn limits() -> QueueLimits {
    QueueLimits {
        max_queued: 100,
        max_queued_bytes: 0,
        overflow: OverflowPolicy::DropNew,
        max_queued_age_ms: 0,
    }
}

/// Node `name`: a router over `store` (none: a node without one) with
/// the cluster's shared state.
fn node(f: &Fixture, name: &str, store: Option<Arc<Store>>) -> (Arc<Router>, Arc<SharedState>) {
    let router = Arc::new(Router::from_settings(RouterSettings {
        store,
        ..RouterSettings::new(limits())
    }));
    let js = f.jetstream();
    let state = f
        .runtime
        .block_on(SharedState::start(
            &js,
            (name, 1),
            1,
            &router,
            Default::default(),
        ))
        .expect("shared state");
    (router, state)
}

#[test]
fn a_claim_waits_for_a_live_holder_whose_writes_are_slow_to_commit() {
    let f = Fixture::new();
    let a_backend = Arc::new(HeldCommits {
        inner: f.open_nats("tern-a", &[]) as Arc<dyn Backend>,
        held: parking_lot::Mutex::new(false),
        released: parking_lot::Condvar::new(),
    });
    let a_store = Store::start(
        Arc::clone(&a_backend) as Arc<dyn Backend>,
        Durability::Batched,
    );
    let (a, _a_state) = node(&f, "tern-a", Some(Arc::clone(&a_store)));
    let (_b, b_state) = node(&f, "tern-b", None);
    let id: Arc<str> = Arc::from("c");
    let attached = f
        .runtime
        .block_on(a.attach_claimed(&id, &SessionOwner::Anonymous, false, 3600))
        .expect("c on tern-a");
    // tern-a's commits wait from here on, as they do while JetStream elects a leader.
    a_backend.hold();
    // A delivery to c routed on tern-a, not committed yet.
    a_store.submit([put_message(1, "t"), put("c", 1, 1)]);
    let claiming = f.runtime.spawn({
        let b_state = Arc::clone(&b_state);
        async move { b_state.claim("c", false).await.map(|c| c.marks.is_some()) }
    });
    // Longer than the wait for a holder that does not answer: the claim
    // is still waiting (a bounded look: it can only end early if tern-b
    // went on without tern-a's writes).
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(!claiming.is_finished(), "tern-b waits for tern-a's word");
    a_backend.release();
    let word = f
        .runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), claiming).await })
        .expect("claimed in time")
        .expect("joined")
        .expect("claimed");
    assert!(
        word,
        "tern-a's release word came once its writes were committed"
    );
    drop(attached);
    a_store.close();
}

#[test]
fn a_claim_from_a_node_that_does_not_answer_waits_for_its_word_as_before() {
    let f = Fixture::new();
    let (_b, b_state) = node(&f, "tern-b", None);
    // tern-x held c and is gone (its claim is all that is left of it).
    let js = f.jetstream();
    f.runtime.block_on(async {
        let kv = crate::store::nats::open_bucket(&js, crate::cluster::ownership::BUCKET, 1)
            .await
            .expect("owners");
        let x = crate::cluster::ownership::Ownership::new(
            kv,
            js.client(),
            "tern-x",
            1,
            Default::default(),
        );
        x.claim("c", false).await.expect("tern-x claims c");
    });
    let claimed = f
        .runtime
        .block_on(b_state.claim("c", false))
        .expect("claimed");
    assert!(claimed.held_elsewhere);
    assert_eq!(claimed.previous.as_deref(), Some("tern-x"));
    assert!(claimed.marks.is_none(), "no word from a node that is gone");
    let request = crate::cluster::release::Request {
        client_id: "c".into(),
        revision: 1,
        clean_start: false,
    };
    let wait = f.runtime.block_on(crate::cluster::release::ask(
        &js.client(),
        "tern-x",
        &request,
    ));
    assert_eq!(
        wait,
        crate::cluster::release::SILENT_WAIT,
        "nobody answers for tern-x (gone, or a node that predates the request): 1 s"
    );
}

#[test]
fn a_claim_takes_the_word_that_names_it_and_not_another_claims() {
    use crate::cluster::release::{word_for, word_headers, word_subject};
    let f = Fixture::new();
    let client = f.jetstream().client();
    let (ours, other) = f.runtime.block_on(async {
        let mut words = client.subscribe(word_subject("c")).await.expect("sub");
        for (revision, payload) in [(6u64, "for 6"), (7, "for 7")] {
            client
                .publish_with_headers(word_subject("c"), word_headers(revision), payload.into())
                .await
                .expect("publish");
        }
        client.flush().await.expect("flush");
        let ours = tokio::time::timeout(Duration::from_secs(10), word_for(&mut words, 7)).await;
        // A word naming no claim (a node that predates the header) answers any.
        client
            .publish(word_subject("c"), "unnamed".into())
            .await
            .expect("publish");
        let other = tokio::time::timeout(Duration::from_secs(10), word_for(&mut words, 9)).await;
        (ours, other)
    });
    let payload = |w: Result<Option<async_nats::Message>, _>| {
        w.ok()
            .flatten()
            .map(|m| String::from_utf8_lossy(&m.payload).to_string())
    };
    assert_eq!(
        payload(ours).as_deref(),
        Some("for 7"),
        "the word for 6 is skipped"
    );
    assert_eq!(payload(other).as_deref(), Some("unnamed"));
}

#[test]
fn a_holder_that_listens_and_does_not_answer_is_waited_for_as_a_live_one() {
    let f = Fixture::new();
    let client = f.jetstream().client();
    let wait = f.runtime.block_on(async {
        // tern-y takes requests and answers none (slowed, or cut off).
        let _requests = client
            .subscribe(crate::cluster::release::request_subject("tern-y"))
            .await
            .expect("sub");
        client.flush().await.expect("flush");
        let request = crate::cluster::release::Request {
            client_id: "c".into(),
            revision: 1,
            clean_start: false,
        };
        crate::cluster::release::ask(&client, "tern-y", &request).await
    });
    assert_eq!(
        wait,
        crate::cluster::release::LIVE_WAIT - crate::cluster::release::SILENT_WAIT,
        "its word is waited for as a live node's (10 s in all), not read past after 1 s"
    );
}
