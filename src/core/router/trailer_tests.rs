//! This node's marks (`core::peer_marks`) agree with what it routed: every
//! commit of a shared store holding a delivery of a message routed here
//! (another node's, or published here) carries marks at or past that
//! message, and the marks said for a session let go cover exactly what it
//! was routed here; so the node that takes it over (after a crash, or
//! live) routes it nothing twice and drops nothing it did not have.
//! Routings run alongside, each slowed between its store operations and
//! its mark, where marks taken in between would be behind it.

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
    fn forward(&self, _message: &Arc<Message>, _after_local: bool) -> u64 {
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

/// Sessions `clients`, persistent, on `#` at QoS 1.
fn sessions(clients: &[String]) -> Snapshot {
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
        sessions: clients
            .iter()
            .map(|c| (c.clone(), record.clone()))
            .collect(),
        ..Snapshot::default()
    }
}

/// A router on a shared store of `backend`, on node [`Here`], with
/// persistent sessions `clients`.
fn router(backend: &Arc<Commits>, clients: &[String]) -> (Arc<Router>, Arc<Here>, Arc<Store>) {
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
    router.restore(sessions(clients)).expect("restored");
    (router, here, store)
}

/// Routes "o"'s messages 1..=[`MESSAGES`] as the inbound does, on a thread.
fn inbound(router: &Arc<Router>, here: &Arc<Here>) -> std::thread::JoinHandle<()> {
    let (router, here) = (Arc::clone(router), Arc::clone(here));
    std::thread::spawn(move || {
        for n in 1..=MESSAGES {
            let at = PeerPosition::new("o", 1, n);
            let mark = || {
                pause();
                here.routed.store(n, Ordering::SeqCst);
            };
            router.publish_from_peer_marked(message("o/t", n), at, mark);
        }
    })
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
    let (router, here, store) = router(&backend, &["s".to_string()]);
    let inbound = inbound(&router, &here);
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

#[test]
fn the_marks_said_for_a_session_let_go_cover_what_it_was_routed_here() {
    let clients: Vec<String> = (0..20).map(|n| format!("s{n}")).collect();
    let backend = Arc::new(Commits::default());
    let (router, here, _store) = router(&backend, &clients);
    let sessions: Vec<_> = clients
        .iter()
        .map(|c| router.session(c).expect("s"))
        .collect();
    let inbound = inbound(&router, &here);
    let mut wrong = Vec::new();
    for (n, (client, session)) in clients.iter().zip(&sessions).enumerate() {
        // Let go while the inbound routes, at 20 points of its run.
        let at = (n as u64 + 1) * MESSAGES / 25;
        while here.routed.load(Ordering::SeqCst) < at {
            std::hint::spin_loop();
        }
        let word = router.session_moved(client, false);
        let said = word.iter().find(|m| &*m.node == "o").map_or(0, |m| m.seq);
        let mut had = Vec::new();
        session.take_pending(usize::MAX, &mut had);
        let last = had.iter().filter_map(|d| {
            String::from_utf8_lossy(&d.message.payload)
                .parse::<u64>()
                .ok()
        });
        let last = last.max().unwrap_or(0);
        if last != said || had.len() as u64 != said {
            wrong.push((client.clone(), said, last, had.len()));
        }
    }
    inbound.join().expect("inbound");
    assert!(
        wrong.is_empty(),
        "marks said against what the session had (client, said, last had, count): {wrong:?}"
    );
}
