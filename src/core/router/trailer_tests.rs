//! A shared store's commits carry this node's marks (`core::peer_marks`):
//! every commit holding a delivery of a message routed here (another
//! node's, or published here) carries marks at or past that message, so a
//! node that takes the session over after a crash never routes it to the
//! session again. Routings and the writer run at once, each routing slowed
//! between its store operations and its mark, where a commit taken in
//! between would be stored with marks behind it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::Router;
use crate::core::fabric::Fabric;
use crate::core::message::{Message, QoS};
use crate::core::peer_marks::{PeerMark, PeerPosition};
use crate::core::session::{OverflowPolicy, QueueLimits};
use crate::store::record::{OwnerRecord, SessionRecord, SubscriptionRecord};
use crate::store::{Backend, Durability, Snapshot, Store, StoreError, StoreOp};

/// Messages routed from the other node, and published here.
const MESSAGES: u64 = 2_000;

/// A shared store keeping every commit's operations.
#[derive(Default)]
struct Commits(Mutex<Vec<Vec<StoreOp>>>);

impl Backend for Commits {
    fn apply(&self, ops: &[StoreOp], _fsync: bool) -> Result<i64, StoreError> {
        self.0.lock().push(ops.to_vec());
        Ok(0)
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }

    fn is_shared(&self) -> bool {
        true
    }
}

/// Node "here": numbers its own messages as it forwards them, and marks
/// origin "o" run 1 as the inbound says.
#[derive(Debug, Default)]
struct Here {
    queued: Mutex<u64>,
    routed: AtomicU64,
}

/// Some work, as a routing does between its store operations and its mark.
fn pause() {
    for _ in 0..2_000 {
        std::hint::spin_loop();
    }
}

impl Fabric for Here {
    fn forward(&self, _message: &Arc<Message>) -> u64 {
        pause();
        let mut queued = self.queued.lock();
        *queued += 1;
        *queued
    }
    fn interest_added(&self, _filter: &str) {}
    fn interest_removed(&self, _filter: &str) {}
    fn node(&self) -> &str {
        "here"
    }
    fn marks(&self) -> Vec<PeerMark> {
        let own = *self.queued.lock();
        let routed = self.routed.load(Ordering::SeqCst);
        vec![PeerMark::new("o", 1, routed), PeerMark::new("here", 2, own)]
    }
}

fn message(topic: &str, n: u64) -> Arc<Message> {
    let payload = Bytes::from(n.to_string());
    Arc::new(Message::new(topic, payload, QoS::AtLeastOnce, false))
}

/// Session "s", persistent, on `#` at QoS 1.
fn session() -> Snapshot {
    let subscription = SubscriptionRecord {
        selector: None,
        filter: "#".into(),
        qos: 1,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
        subscription_id: None,
    };
    let record = SessionRecord {
        expiry_interval: u32::MAX,
        disconnected_at_ms: None,
        owner: OwnerRecord::Anonymous,
        subscriptions: vec![subscription],
    };
    Snapshot {
        sessions: vec![("s".to_string(), record)],
        ..Snapshot::default()
    }
}

/// Per commit: the highest message of "o" and of "here" whose delivery it
/// holds, and its marks of them (None: no marks in it).
type Seen = (u64, u64, Option<(u64, u64)>);

fn seen(ops: &[StoreOp]) -> Seen {
    let (mut peer, mut own, mut marks) = (0, 0, None);
    for op in ops {
        match op {
            StoreOp::PutMessage { record, .. } => {
                let n: u64 = String::from_utf8_lossy(&record.payload)
                    .parse()
                    .unwrap_or(0);
                match record.topic.as_str() {
                    "o/t" => peer = peer.max(n),
                    _ => own = own.max(n),
                }
            }
            StoreOp::PutPeerMarks { marks: m, .. } => {
                let of = |node: &str| m.iter().find(|r| r.node == node).map_or(0, |r| r.seq);
                marks = Some((of("o"), of("here")));
            }
            _ => {}
        }
    }
    (peer, own, marks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_commit_carries_marks_at_or_past_the_messages_whose_deliveries_it_holds() {
    let backend = Arc::new(Commits::default());
    let store = Store::start(backend.clone(), Durability::Batched);
    let router = Arc::new(Router::from_settings(super::RouterSettings {
        store: Some(Arc::clone(&store)),
        ..super::RouterSettings::new(QueueLimits {
            max_queued: 10 * MESSAGES as u32,
            max_queued_bytes: 0,
            overflow: OverflowPolicy::DropNew,
            max_queued_age_ms: 0,
        })
    }));
    let here = Arc::new(Here::default());
    assert!(router.set_fabric(here.clone()));
    router.restore(session()).expect("restored");
    let inbound = {
        let (router, here) = (Arc::clone(&router), Arc::clone(&here));
        std::thread::spawn(move || {
            for n in 1..=MESSAGES {
                let at = PeerPosition::new("o", 1, n);
                let mark = || {
                    pause();
                    here.routed.store(n, Ordering::SeqCst);
                };
                let published = router.publish_from_peer_marked(message("o/t", n), at, mark);
                assert_eq!(published.matched, 1);
            }
        })
    };
    for n in 1..=MESSAGES {
        assert_eq!(router.publish(message("here/t", n)), 1);
    }
    inbound.join().expect("inbound");
    let last = store.submit([StoreOp::DeleteSession {
        client_id: "none".into(),
    }]);
    store.wait(last).await.expect("committed");
    let commits = backend.0.lock();
    let mut behind = Vec::new();
    for (n, ops) in commits.iter().enumerate() {
        let (peer, own, marks) = seen(ops);
        if peer + own == 0 {
            continue;
        }
        let (marked_peer, marked_own) = marks.unwrap_or((0, 0));
        if marked_peer < peer || marked_own < own {
            behind.push((n, peer, own, marks));
        }
    }
    assert!(
        behind.is_empty(),
        "{} of {} commits hold deliveries past their marks (commit, o, here, marks): {:?}",
        behind.len(),
        commits.len(),
        &behind[..behind.len().min(5)]
    );
}
