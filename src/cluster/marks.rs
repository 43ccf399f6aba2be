//! This node's marks (`core::peer_marks`): per origin (another node's run),
//! the last message routed here completely, kept by the inbound task after
//! each round; the fabric adds this run's own last message and hands them
//! to the store (every commit) and to a session's new holder (the word
//! that the session was let go, `ownership.rs`).
//!
//! On the wire (the release word): postcard of `[(node, epoch, seq)]`; an
//! empty payload (a node of an older version) is no marks.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::core::peer_marks::PeerMark;

/// Origins kept at most (each restart of a node is a new one): the oldest
/// go first. Their messages stopped long before.
const MAX_ORIGINS: usize = 256;

/// Per origin, the last message routed here completely.
#[derive(Debug, Default)]
pub(super) struct RoutedMarks {
    marks: Mutex<Vec<PeerMark>>,
}

impl RoutedMarks {
    /// Every message of `node`'s run `epoch` up to `seq` is routed (its
    /// store operations submitted).
    pub(super) fn routed(&self, node: &Arc<str>, epoch: u64, seq: u64) {
        let mut marks = self.marks.lock();
        match marks
            .iter_mut()
            .find(|m| m.epoch == epoch && *m.node == **node)
        {
            Some(mark) => mark.seq = mark.seq.max(seq),
            None => {
                if marks.len() >= MAX_ORIGINS {
                    marks.remove(0);
                }
                marks.push(PeerMark {
                    node: Arc::clone(node),
                    epoch,
                    seq,
                });
            }
        }
    }

    pub(super) fn snapshot(&self) -> Vec<PeerMark> {
        self.marks.lock().clone()
    }
}

/// `marks` as the payload of a release word.
pub(super) fn encode(marks: &[PeerMark]) -> bytes::Bytes {
    let wire: Vec<(&str, u64, u64)> = marks.iter().map(|m| (&*m.node, m.epoch, m.seq)).collect();
    // Serialising plain data into a Vec cannot fail.
    postcard::to_allocvec(&wire).unwrap_or_default().into()
}

/// The marks of a release word (none from an empty or unreadable payload).
pub(super) fn decode(payload: &[u8]) -> Vec<PeerMark> {
    postcard::from_bytes::<Vec<(String, u64, u64)>>(payload)
        .map(|marks| {
            marks
                .into_iter()
                .map(|(node, epoch, seq)| PeerMark {
                    node: node.into(),
                    epoch,
                    seq,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_kept_once_at_its_highest_routed_message() {
        let routed = RoutedMarks::default();
        let (o, p): (Arc<str>, Arc<str>) = ("o".into(), "p".into());
        routed.routed(&o, 1, 10);
        routed.routed(&p, 1, 3);
        routed.routed(&Arc::from("o"), 1, 12);
        routed.routed(&o, 1, 11);
        routed.routed(&o, 2, 1);
        let snapshot = routed.snapshot();
        let got: Vec<(&str, u64, u64)> = snapshot
            .iter()
            .map(|m| (&*m.node, m.epoch, m.seq))
            .collect();
        assert_eq!(got, vec![("o", 1, 12), ("p", 1, 3), ("o", 2, 1)]);
    }

    #[test]
    fn origins_are_bounded_the_oldest_going_first() {
        let routed = RoutedMarks::default();
        let node: Arc<str> = "o".into();
        for epoch in 0..MAX_ORIGINS as u64 + 5 {
            routed.routed(&node, epoch, 1);
        }
        let snapshot = routed.snapshot();
        assert_eq!(snapshot.len(), MAX_ORIGINS);
        assert_eq!(snapshot[0].epoch, 5);
    }

    #[test]
    fn release_words_carry_marks_and_an_empty_one_none() {
        let marks = vec![
            PeerMark {
                node: "tern-a".into(),
                epoch: u64::MAX,
                seq: 7,
            },
            PeerMark {
                node: "tern-b".into(),
                epoch: 3,
                seq: 0,
            },
        ];
        assert_eq!(decode(&encode(&marks)), marks);
        assert!(decode(&[]).is_empty(), "a node of an older version");
        assert!(decode(&[0xFF, 0xFF]).is_empty(), "garbage");
    }
}
