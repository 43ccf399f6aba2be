//! Per-origin high-water marks (cluster mode): which messages of other
//! nodes a session already had where it was served before, so that the node
//! it moves to does not route those to it again (QoS 2 exactly once across
//! a takeover).
//!
//! Every message a node receives from another carries its origin: the
//! sending node, that node's run (`epoch`, random per start) and its number
//! in that run (`seq`). A node routes each origin's messages in that order.
//! Its marks say, per origin, the last message it routed to its sessions
//! (and, for its own run, the last it published). A session that moves from
//! node X to node A carries X's marks; A, whose reading of an origin may lag
//! X's, drops for that session any message of that origin at or below the
//! mark. A mark of an old run never matches a new run (the epoch differs);
//! the first message of an origin above its mark retires it.

use std::sync::Arc;

/// The last message of one origin (a node's run) routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerMark {
    pub node: Arc<str>,
    pub epoch: u64,
    pub seq: u64,
}

impl PeerMark {
    pub fn new(node: &str, epoch: u64, seq: u64) -> PeerMark {
        PeerMark {
            node: node.into(),
            epoch,
            seq,
        }
    }
}

/// Where a message from another node stands in its origin's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerPosition<'a> {
    pub node: &'a str,
    pub epoch: u64,
    pub seq: u64,
}

/// The marks a session carries from the node it was served on: what it
/// must not get again from this node.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionMarks(Vec<PeerMark>);

impl<'a> PeerPosition<'a> {
    pub fn new(node: &'a str, epoch: u64, seq: u64) -> PeerPosition<'a> {
        PeerPosition { node, epoch, seq }
    }
}

impl SessionMarks {
    /// The marks of `from` (the node the session was served on) that node
    /// `here` still has to apply: not its own (its messages reached the
    /// session there through the same publish that routed them here), and
    /// only those ahead of what `here` routed already (`routed`, its own
    /// marks): a message `here` routed before the session came reaches it
    /// no more.
    pub fn pending(from: &[PeerMark], here: &str, routed: &[PeerMark]) -> SessionMarks {
        SessionMarks(
            from.iter()
                .filter(|mark| *mark.node != *here)
                .filter(|mark| {
                    !routed
                        .iter()
                        .any(|r| r.epoch == mark.epoch && r.node == mark.node && r.seq >= mark.seq)
                })
                .cloned()
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `node_marks` (a node's, as it lets this session go) with the marks
    /// the session still carries from before, per origin the higher: what
    /// the session had, for the node it goes to next.
    pub fn merged_into(&self, mut node_marks: Vec<PeerMark>) -> Vec<PeerMark> {
        for mark in &self.0 {
            match node_marks
                .iter_mut()
                .find(|m| m.epoch == mark.epoch && m.node == mark.node)
            {
                Some(m) => m.seq = m.seq.max(mark.seq),
                None => node_marks.push(mark.clone()),
            }
        }
        node_marks
    }

    pub fn marks(&self) -> &[PeerMark] {
        &self.0
    }

    /// Whether the session had the message at `at` already (it is dropped).
    /// The first message of an origin above its mark retires the mark: an
    /// origin's messages are routed in order, none below comes after it.
    pub fn covers(&mut self, at: &PeerPosition<'_>) -> bool {
        let Some(index) = self
            .0
            .iter()
            .position(|m| m.epoch == at.epoch && *m.node == *at.node)
        else {
            return false;
        };
        if at.seq <= self.0[index].seq {
            return true;
        }
        self.0.swap_remove(index);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use PeerMark as M;
    use PeerPosition as P;

    #[test]
    fn messages_at_or_below_a_mark_are_covered_and_the_first_above_retires_it() {
        let mut marks = SessionMarks(vec![M::new("o", 7, 100), M::new("p", 1, 5)]);
        assert!(marks.covers(&P::new("o", 7, 99)));
        assert!(marks.covers(&P::new("o", 7, 100)));
        assert!(!marks.covers(&P::new("o", 7, 101)), "above the mark");
        assert_eq!(marks.marks(), &[M::new("p", 1, 5)], "o's mark is retired");
        assert!(
            !marks.covers(&P::new("o", 7, 50)),
            "retired: no longer filtered"
        );
        assert!(marks.covers(&P::new("p", 1, 1)));
    }

    #[test]
    fn a_mark_of_an_old_run_never_covers_a_new_run() {
        let mut marks = SessionMarks(vec![M::new("o", 7, 1_000)]);
        assert!(!marks.covers(&P::new("o", 8, 1)), "o restarted: epoch 8");
        assert!(!marks.covers(&P::new("other", 7, 1)));
        assert_eq!(marks.marks(), &[M::new("o", 7, 1_000)], "untouched");
    }

    #[test]
    fn a_session_moving_on_carries_the_higher_of_its_marks_and_its_nodes() {
        let carried = SessionMarks(vec![M::new("o", 7, 100), M::new("p", 1, 5)]);
        let node = vec![M::new("o", 7, 60), M::new("p", 1, 9), M::new("q", 2, 3)];
        assert_eq!(
            carried.merged_into(node),
            vec![M::new("o", 7, 100), M::new("p", 1, 9), M::new("q", 2, 3)]
        );
        assert_eq!(SessionMarks::default().merged_into(Vec::new()), Vec::new());
    }

    #[test]
    fn pending_marks_leave_out_this_nodes_own_and_what_it_routed_already() {
        let from = [
            M::new("a", 1, 50),  // this node's own messages
            M::new("o", 7, 100), // this node routed o up to 120: none can come again
            M::new("p", 2, 30),  // this node routed p up to 10: 11..=30 are filtered
            M::new("q", 3, 9),   // this node never saw q
            M::new("o", 6, 40),  // an older run of o that this node routed no message of
        ];
        let routed = [M::new("a", 1, 60), M::new("o", 7, 120), M::new("p", 2, 10)];
        let pending = SessionMarks::pending(&from, "a", &routed);
        assert_eq!(
            pending.marks(),
            &[M::new("p", 2, 30), M::new("q", 3, 9), M::new("o", 6, 40)]
        );
        assert!(SessionMarks::pending(&from[..2], "a", &routed).is_empty());
    }
}
