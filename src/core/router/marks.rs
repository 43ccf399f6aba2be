//! The router's side of the marks (`core::peer_marks`, cluster mode): this
//! node's marks written with every commit of a shared store, and a session
//! taken over from another node marked with what it had there.

use std::sync::Arc;

use super::Router;
use crate::core::fabric::Fabric;
use crate::core::peer_marks::{PeerMark, SessionMarks};
use crate::store::record::PeerMarkRecord;
use crate::store::StoreOp;

/// Where the marks of a session taken over come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum MarksFrom<'a> {
    /// The node that let the session go said them when it did.
    Word(&'a [PeerMark]),
    /// That node's marks as stored (it died, or did not say them in time),
    /// with its run that held the session when its claim said.
    Stored(&'a str, Option<u64>),
    /// Not known: nothing is skipped.
    Unknown,
}

impl Router {
    /// With a store other nodes read (the cluster's), every commit carries
    /// this node's marks: the node a session moves to when this one dies
    /// reads them with the session.
    pub(super) fn write_marks_with_commits(&self, fabric: &Arc<dyn Fabric>) {
        let Some(store) = self.persistence.store().filter(|s| s.is_shared()) else {
            return;
        };
        let fabric = Arc::clone(fabric);
        store.set_trailer(Box::new(move || {
            let mut marks = fabric.marks();
            if marks.is_empty() {
                return None;
            }
            // This run's own mark even before it numbered a message: it
            // says which run wrote the record (`origin_marks`).
            let (node, epoch) = (fabric.node(), fabric.epoch());
            if !marks.iter().any(|m| *m.node == *node && m.epoch == epoch) {
                marks.push(PeerMark {
                    node: node.into(),
                    epoch,
                    seq: 0,
                });
            }
            Some(StoreOp::PutPeerMarks {
                node: node.to_string(),
                marks: marks.iter().map(mark_record).collect(),
            })
        }));
    }

    /// This node's marks now (see `Fabric::marks`): said to the node a
    /// session of this node moved to, once this node let it go.
    pub fn peer_marks(&self) -> Vec<PeerMark> {
        self.routing.fabric().map(|f| f.marks()).unwrap_or_default()
    }

    /// What a session taken over skips here: the marks of where it was
    /// (`from`; `stored`: the nodes' marks read with its records) that this
    /// node has not routed past yet.
    pub(super) fn session_marks(
        &self,
        from: MarksFrom<'_>,
        stored: &[(String, Vec<PeerMarkRecord>)],
    ) -> SessionMarks {
        let Some(fabric) = self.routing.fabric() else {
            return SessionMarks::default();
        };
        if matches!(from, MarksFrom::Unknown) {
            return SessionMarks::default();
        }
        SessionMarks::pending(&origin_marks(from, stored), fabric.node(), &fabric.marks())
    }
}

/// The marks of the node a session comes from (`from`; `stored`: the
/// nodes' marks read with its records): what it had there. None known: none.
///
/// Stored marks count only when the run that held the session wrote them
/// (its own mark is in them): a later run, restarted without the session,
/// routed to its other sessions messages this one never had, and leaving
/// those out of the session's capture loses them (the clustered crash
/// test: three acknowledged messages). Then none are used: a repeat is
/// possible, not a loss. A claim that does not say its run (an older
/// node) leaves the marks as they are.
pub(super) fn origin_marks(
    from: MarksFrom<'_>,
    stored: &[(String, Vec<PeerMarkRecord>)],
) -> Vec<PeerMark> {
    match from {
        MarksFrom::Word(marks) => marks.to_vec(),
        MarksFrom::Stored(node, run) => stored
            .iter()
            .find(|(n, _)| n == node)
            .filter(|(_, marks)| {
                run.is_none_or(|run| marks.iter().any(|m| m.node == *node && m.epoch == run))
            })
            // A run's own mark before it numbered a message says nothing more.
            .map(|(_, marks)| {
                marks
                    .iter()
                    .filter(|m| m.seq > 0)
                    .map(mark_from_record)
                    .collect()
            })
            .unwrap_or_default(),
        MarksFrom::Unknown => Vec::new(),
    }
}

fn mark_record(mark: &PeerMark) -> PeerMarkRecord {
    PeerMarkRecord {
        node: mark.node.to_string(),
        epoch: mark.epoch,
        seq: mark.seq,
    }
}

fn mark_from_record(record: &PeerMarkRecord) -> PeerMark {
    PeerMark {
        node: record.node.as_str().into(),
        epoch: record.epoch,
        seq: record.seq,
    }
}
