//! A session taken over from another node skips the other nodes' messages
//! it had there (`core::peer_marks`), and nothing else.

use std::sync::Arc;

use super::cluster_queue_tests::message;
use super::marks::MarksFrom;
use super::Router;
use crate::core::fabric::Fabric;
use crate::core::message::Message;
use crate::core::peer_marks::{PeerMark, PeerPosition};
use crate::core::session::{OverflowPolicy, QueueLimits};
use crate::store::record::{OwnerRecord, PeerMarkRecord, SessionRecord, SubscriptionRecord};
use crate::store::Snapshot;

/// This node, "here", which routed origin "o" run 7 up to 12 already.
#[derive(Debug)]
struct Here;

impl Fabric for Here {
    fn forward(&self, _message: &Arc<Message>, _after_local: bool) -> u64 {
        1
    }
    fn interest_added(&self, _filter: &str) {}
    fn interest_removed(&self, _filter: &str) {}
    fn node(&self) -> &str {
        "here"
    }
    fn marks(&self) -> Vec<PeerMark> {
        vec![PeerMark::new("o", 7, 12)]
    }
}

fn record(node: &str, epoch: u64, seq: u64) -> PeerMarkRecord {
    PeerMarkRecord {
        node: node.into(),
        epoch,
        seq,
    }
}

/// Session "s" (on `t/#`) restored as taken over from node "x", whose
/// stored marks say it routed o/7 up to 20, p/1 up to 5, its own run 3 up
/// to 9, and this node's up to 4.
fn taken_over_from_x() -> Arc<Router> {
    let router = Arc::new(Router::new(QueueLimits {
        max_queued: 100,
        max_queued_bytes: 0,
        overflow: OverflowPolicy::DropNew,
        max_queued_age_ms: 0,
    }));
    assert!(router.set_fabric(Arc::new(Here)));
    let stored = vec![
        ("y".to_string(), vec![record("p", 1, 1_000)]),
        (
            "x".to_string(),
            vec![
                record("o", 7, 20),
                record("p", 1, 5),
                record("x", 3, 9),
                record("here", 1, 4),
            ],
        ),
    ];
    let marks = router.session_marks(MarksFrom::Stored("x", Some(3)), &stored);
    let snapshot = Snapshot {
        sessions: vec![(
            "s".to_string(),
            SessionRecord {
                expiry_interval: u32::MAX,
                disconnected_at_ms: None,
                owner: OwnerRecord::Anonymous,
                subscriptions: vec![SubscriptionRecord {
                    selector: None,
                    filter: "t/#".into(),
                    qos: 2,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                    subscription_id: None,
                }],
            },
        )],
        ..Snapshot::default()
    };
    super::restore::restore(&router, snapshot, &marks);
    router
}

#[tokio::test]
async fn a_session_taken_over_skips_what_its_old_node_had_routed_it_and_nothing_else() {
    let router = taken_over_from_x();
    let session = router.session("s").expect("restored");
    let routed = |topic: &str, at: PeerPosition<'_>| router.publish_from_peer(message(topic), at);
    assert_eq!(
        routed("t/1", PeerPosition::new("o", 7, 13)).matched,
        0,
        "x had it"
    );
    assert_eq!(
        routed("t/1", PeerPosition::new("o", 7, 20)).matched,
        0,
        "x's last of o"
    );
    assert_eq!(routed("t/1", PeerPosition::new("p", 1, 5)).matched, 0);
    assert_eq!(
        routed("t/1", PeerPosition::new("x", 3, 9)).matched,
        0,
        "x's own message"
    );
    assert_eq!(
        routed("t/2", PeerPosition::new("o", 7, 21)).matched,
        1,
        "beyond the mark"
    );
    assert_eq!(
        routed("t/3", PeerPosition::new("o", 8, 1)).matched,
        1,
        "o restarted"
    );
    assert_eq!(routed("t/4", PeerPosition::new("p", 1, 6)).matched, 1);
    assert_eq!(
        routed("t/5", PeerPosition::new("x", 4, 1)).matched,
        1,
        "x restarted"
    );
    assert_eq!(
        routed("t/6", PeerPosition::new("z", 1, 1)).matched,
        1,
        "an origin x never saw"
    );
    assert_eq!(router.publish(message("t/7")), 1, "published here");
    assert_eq!(session.pending_len(), 6);
    let mut taken = Vec::new();
    session.take_pending(100, &mut taken);
    let topics: Vec<String> = taken.iter().map(|d| d.message.topic.to_string()).collect();
    assert_eq!(topics, ["t/2", "t/3", "t/4", "t/5", "t/6", "t/7"]);
}

#[tokio::test]
async fn marks_of_another_node_or_none_skip_nothing() {
    let router = taken_over_from_x();
    let here =
        |from: MarksFrom<'_>| router.session_marks(from, &[("x".into(), vec![record("q", 1, 9)])]);
    assert!(here(MarksFrom::Unknown).is_empty());
    assert!(
        here(MarksFrom::Stored("w", None)).is_empty(),
        "w stored none"
    );
    let word = [PeerMark::new("q", 1, 3)];
    assert_eq!(here(MarksFrom::Word(&word)).marks(), &word, "the word wins");
    assert_eq!(
        here(MarksFrom::Stored("x", None)).marks()[0].seq,
        9,
        "stored when no word came"
    );
}

#[tokio::test]
async fn a_session_moving_on_takes_what_it_still_skips_with_this_nodes_marks() {
    let router = taken_over_from_x();
    let told = router.session_moved("s", false);
    assert_eq!(
        told,
        vec![
            PeerMark::new("o", 7, 20),
            PeerMark::new("p", 1, 5),
            PeerMark::new("x", 3, 9),
        ],
        "this node routed o up to 12 only: the session had up to 20"
    );
    assert!(router.session("s").is_none(), "gone from here");
    assert_eq!(
        router.session_moved("s", false),
        Vec::<PeerMark>::new(),
        "no such session here (held, never read): no marks, as this node routed it nothing"
    );
}

#[tokio::test]
async fn stored_marks_count_only_when_the_run_that_held_the_session_wrote_them() {
    let router = taken_over_from_x();
    // x's run 4, restarted without the session, routed o/7 up to 30 to its
    // other sessions and wrote its marks over those of run 3, which held it.
    let later_run = [("x".to_string(), vec![record("o", 7, 30), record("x", 4, 0)])];
    let here = |run| router.session_marks(MarksFrom::Stored("x", run), &later_run);
    assert!(
        here(Some(3)).is_empty(),
        "run 4's marks skip nothing of a session run 3 held"
    );
    assert_eq!(
        here(Some(4)).marks(),
        &[PeerMark::new("o", 7, 30)],
        "the holding run's marks, less its own mark from before it numbered a message"
    );
    assert_eq!(
        here(None).marks(),
        &[PeerMark::new("o", 7, 30)],
        "a claim that says no run (an older node): the marks as stored"
    );
}
