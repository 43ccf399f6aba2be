//! The store suite's cases of nodes' marks (`StoreOp::PutPeerMarks`,
//! cluster mode), run against every backend like `suite.rs`.

use super::record::PeerMarkRecord;
use super::suite::{put_session, restart, Open};
use super::StoreOp;

pub(crate) fn mark(node: &str, epoch: u64, seq: u64) -> PeerMarkRecord {
    PeerMarkRecord {
        node: node.into(),
        epoch,
        seq,
    }
}

pub(crate) fn put_marks(node: &str, marks: &[PeerMarkRecord]) -> StoreOp {
    StoreOp::PutPeerMarks {
        node: node.into(),
        marks: marks.to_vec(),
    }
}

/// Each node's last marks, sorted by node.
fn sorted(mut marks: Vec<(String, Vec<PeerMarkRecord>)>) -> Vec<(String, Vec<PeerMarkRecord>)> {
    marks.sort_by(|a, b| a.0.cmp(&b.0));
    marks
}

pub(crate) fn each_nodes_last_marks_survive_a_restart(open: Open) {
    let backend = open();
    backend
        .apply(
            &[put_marks("tern-a", &[mark("o", 1, 5)]), put_session("c")],
            true,
        )
        .unwrap();
    backend
        .apply(
            &[
                put_marks("tern-b", &[mark("o", 1, 4)]),
                put_marks("tern-a", &[mark("o", 1, 9), mark("p", u64::MAX, 3)]),
                // In one batch, the last write of a node's marks wins.
                put_marks("tern-b", &[mark("o", 1, 6), mark("o", 2, 1)]),
            ],
            true,
        )
        .unwrap();
    let expected = vec![
        (
            "tern-a".to_string(),
            vec![mark("o", 1, 9), mark("p", u64::MAX, 3)],
        ),
        ("tern-b".to_string(), vec![mark("o", 1, 6), mark("o", 2, 1)]),
    ];
    // A takeover's read brings them with the session, where other nodes
    // read this store (a store of this node alone reads none at takeover).
    if let Some(taken) = backend.load_client("c", Some(&["tern-a"])).unwrap() {
        assert_eq!(taken.sessions.len(), 1);
        assert_eq!(sorted(taken.peer_marks), expected, "read at a takeover");
    }
    let backend = restart(backend, open);
    assert_eq!(sorted(backend.load().unwrap().peer_marks), expected);
    backend
        .apply(&[put_marks("tern-a", &[mark("o", 3, 1)])], true)
        .unwrap();
    let backend = restart(backend, open);
    let loaded = sorted(backend.load().unwrap().peer_marks);
    assert_eq!(loaded[0], ("tern-a".to_string(), vec![mark("o", 3, 1)]));
    assert_eq!(loaded[1], expected[1], "tern-b's untouched");
}
