//! A session moving here from another live node (cluster mode, issue #19).
//!
//! The node it comes from routes nothing more to it once it lets it go; this
//! node routed nothing to it before it is attached here: a message routed in
//! between on either node would reach it on neither. So, before the claim
//! is written (before the other node can let go), this node subscribes the
//! session's filters (their interest subscribed at NATS) and *captures*
//! what it routes for them. Once the session is attached here, the capture
//! is handed to it in routing order, less what the other node routed to it
//! already: the marks in its release word (`core::peer_marks`). While a
//! capture stands, the session gets nothing here but through it, so nothing
//! overtakes what it holds. What captures hold back meanwhile (other nodes'
//! confirms, the acks of publishers here) is booked in `capture_hold.rs`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::capture_hold::{CaptureHold, Holds, Kinds, LOCAL, PEER};
use super::routing::{Routing, Source};
use super::RouterStats;
use crate::core::commit::{Commit, CoreError};
use crate::core::fabric::is_fabric_filter;
use crate::core::message::{Message, QoS};
use crate::core::peer_marks::PeerMark;
use crate::core::session::Session;
use crate::core::topic::Filter;

/// Messages one capture keeps at most: the oldest go first (logged once).
const MAX_CAPTURED: usize = 100_000;

/// The captures standing on this node.
#[derive(Debug, Default)]
pub(crate) struct Captures {
    /// How many: one atomic load per routed message when none.
    active: AtomicUsize,
    list: Mutex<Vec<Arc<Capture>>>,
    /// The number of the latest capture started (they count from 1).
    started: AtomicU64,
    /// What they hold back: other nodes' confirms, local publishers' acks.
    holds: Holds,
}

/// What this node routed for one session moving here.
#[derive(Debug)]
pub(crate) struct Capture {
    /// Its number (`Captures::started`).
    id: u64,
    client_id: Arc<str>,
    filters: Vec<Filter>,
    entries: Mutex<VecDeque<Captured>>,
    dropped: AtomicUsize,
    /// What it holds that no store has yet (told to `Captures::holds`).
    kinds: AtomicU8,
}

#[derive(Debug)]
struct Captured {
    message: Arc<Message>,
    /// Its origin (node, run); None for a message that has no place in any
    /// node's order (it never went to another node).
    origin: Option<(Arc<str>, u64)>,
    /// Its number in that origin's order; 0 while a message of this node
    /// is not numbered yet (or never is: it did not go out).
    seq: u64,
}

impl Capture {
    fn keep(&self, captured: Captured) {
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_CAPTURED {
            entries.pop_front();
            if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(client_id = %self.client_id, limit = MAX_CAPTURED,
                    "session moving here: more messages for it than a capture keeps; the oldest dropped");
            }
        }
        entries.push_back(captured);
    }

    /// It holds a message of `kind`: told to `holds` the first time, before
    /// any thread sees the kind set (so none acts on a hold not yet told).
    fn hold(&self, kind: Kinds, holds: &Holds) {
        if self.kinds.load(Ordering::Acquire) & kind == 0 {
            holds.hold(self.id, kind);
            self.kinds.fetch_or(kind, Ordering::Release);
        }
    }
}

/// Whether the node a session comes from routed `captured` to it (`had`:
/// its marks when it let the session go).
fn had_it(captured: &Captured, had: &[PeerMark]) -> bool {
    let Some((node, epoch)) = &captured.origin else {
        return false;
    };
    captured.seq != 0
        && had
            .iter()
            .any(|m| m.epoch == *epoch && m.node == *node && m.seq >= captured.seq)
}

impl Routing {
    /// Starts capturing what this node routes for `client_id` on `filters`
    /// (those the fabric carries), and subscribes their interest; None when
    /// there is nothing to capture.
    pub(crate) fn capture_start(
        &self,
        client_id: &Arc<str>,
        filters: Vec<Filter>,
    ) -> Option<Arc<Capture>> {
        let filters: Vec<Filter> = filters
            .into_iter()
            .filter(|f| is_fabric_filter(f.as_str()))
            .collect();
        if filters.is_empty() || self.fabric().is_none() {
            return None;
        }
        let capture = Arc::new(Capture {
            id: self.captures.started.fetch_add(1, Ordering::Relaxed) + 1,
            client_id: Arc::clone(client_id),
            filters,
            entries: Mutex::new(VecDeque::new()),
            dropped: AtomicUsize::new(0),
            kinds: AtomicU8::new(0),
        });
        self.captures.list.lock().push(Arc::clone(&capture));
        self.captures.active.fetch_add(1, Ordering::AcqRel);
        for filter in &capture.filters {
            self.note_interest(filter, true);
        }
        Some(capture)
    }

    /// Called by `route` under the trie's lock: keeps `message` in every
    /// capture it matches; returns their client ids (their sessions get it
    /// from there, not from this routing) and, for a QoS ≥ 1 message of a
    /// client here that one kept, what its publisher's ack waits for.
    pub(super) fn capture(
        &self,
        message: &Arc<Message>,
        source: &Source<'_>,
    ) -> (smallvec::SmallVec<[Arc<str>; 1]>, Commit) {
        let mut captured = smallvec::SmallVec::new();
        if self.captures.active.load(Ordering::Acquire) == 0 {
            return (captured, Commit::NONE);
        }
        let (origin, seq) = match source {
            // A retained change of the cluster's state: every node applies it.
            Source::Cluster => return (captured, Commit::NONE),
            Source::Here => (self.fabric().map(|f| (Arc::from(f.node()), f.epoch())), 0),
            Source::Peer(at) => (Some((Arc::from(at.node), at.epoch)), at.seq),
        };
        let acked_here = matches!(source, Source::Here) && message.qos != QoS::AtMostOnce;
        let kind = match source {
            Source::Peer(_) => PEER,
            _ if acked_here => LOCAL,
            _ => 0,
        };
        for capture in self.captures.list.lock().iter() {
            if capture.filters.iter().any(|f| f.matches(&message.topic)) {
                capture.keep(Captured {
                    message: Arc::clone(message),
                    origin: origin.clone(),
                    seq,
                });
                if kind != 0 {
                    capture.hold(kind, &self.captures.holds);
                }
                captured.push(Arc::clone(&capture.client_id));
            }
        }
        let hold = if acked_here && !captured.is_empty() {
            // Counted before any capture that kept it can end
            // (`capture_finish` removes one under the trie's write lock).
            Commit::of_capture(self.captures.holds.local_losses())
        } else {
            Commit::NONE
        };
        (captured, hold)
    }

    /// `message`, routed here, went to the other nodes as this node's
    /// message `seq`: its captured copies get that number.
    pub(super) fn numbered(&self, message: &Arc<Message>, seq: u64) {
        if seq == 0 || self.captures.active.load(Ordering::Acquire) == 0 {
            return;
        }
        for capture in self.captures.list.lock().iter() {
            let mut entries = capture.entries.lock();
            if let Some(entry) = entries
                .iter_mut()
                .rev()
                .find(|e| e.seq == 0 && Arc::ptr_eq(&e.message, message))
            {
                entry.seq = seq;
                if message.qos != QoS::AtMostOnce {
                    self.captures.holds.numbered(capture.id, seq);
                }
            }
        }
    }

    /// Ends `capture`: `session` (attached here; None when the attach
    /// failed) gets, in order, what it captured that the node it comes
    /// from had not routed to it (`had`: that node's marks). Under the
    /// trie's write lock, so no message routed meanwhile overtakes them.
    /// Returns how many it had captured, how many it got and what that stored.
    pub(crate) fn capture_finish(
        &self,
        capture: &Arc<Capture>,
        session: Option<&Arc<Session>>,
        had: &[PeerMark],
        stats: &RouterStats,
    ) -> (usize, usize, Commit) {
        let to = session.map(|session| (session, had));
        self.capture_end(capture, to, None, stats)
    }

    /// [`Routing::capture_finish`]; `to`: the session and what it had;
    /// `none_lost`: without a session, what the holds end with (None: the
    /// capture lost what it held).
    fn capture_end(
        &self,
        capture: &Arc<Capture>,
        to: Option<(&Arc<Session>, &[PeerMark])>,
        none_lost: Option<Commit>,
        stats: &RouterStats,
    ) -> (usize, usize, Commit) {
        let (session, had) = match to {
            Some((session, had)) => (Some(session), had),
            None => (None, &[][..]),
        };
        let (mut delivered, mut commit) = (0, Commit::NONE);
        let captured = {
            let trie = self.subscriptions.write();
            {
                let mut list = self.captures.list.lock();
                let Some(index) = list.iter().position(|c| Arc::ptr_eq(c, capture)) else {
                    return (0, 0, Commit::NONE);
                };
                list.swap_remove(index);
                self.captures.active.fetch_sub(1, Ordering::AcqRel);
            }
            let entries = std::mem::take(&mut *capture.entries.lock());
            if let Some(session) = session {
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let left_out = entries.iter().filter(|e| had_it(e, had)).count();
                    let filters = session.subscriptions().len();
                    tracing::debug!(client_id = %capture.client_id, left_out, filters, marks = had.len(),
                        "capture handed over");
                }
                for entry in entries.iter().filter(|e| !had_it(e, had)) {
                    let targets = Self::targets(
                        &trie,
                        &entry.message,
                        None,
                        &Source::Here,
                        &[],
                        Some(session),
                    );
                    let mut wakes = super::wakes::Wakes::default();
                    let (queued, pushed) =
                        Self::deliver(&entry.message, targets, stats, &mut wakes);
                    delivered += queued;
                    commit.include(pushed);
                }
            }
            entries.len()
        };
        for filter in &capture.filters {
            self.note_interest(filter, false);
        }
        let handed_over = session.map(|_| commit).or(none_lost);
        self.captures.holds.end(capture.id, handed_over);
        (captured, delivered, commit)
    }

    /// For a publisher's ack: see `capture_hold.rs`.
    pub(crate) async fn local_captures_ended(&self, commit: Commit) -> Result<Commit, CoreError> {
        self.captures.holds.local(commit).await
    }

    /// Like [`Routing::local_captures_ended`], now: None while a capture
    /// holds the message back.
    pub(crate) fn local_captures_ended_now(
        &self,
        commit: Commit,
    ) -> Result<Option<Commit>, CoreError> {
        self.captures.holds.local_now(commit)
    }
}

impl super::Router {
    /// See [`CaptureHold`].
    pub(crate) fn capture_hold(&self) -> CaptureHold {
        self.routing.captures.holds.peer()
    }

    /// Resolves once no capture holding messages from other nodes stands.
    pub(crate) async fn captures_released(&self) {
        self.routing.captures.holds.peer_released().await;
    }
}

/// A capture for a session moving here, ended when dropped (the attach
/// failed: what it held goes) unless [`MoveCapture::finish`] hands it over.
pub struct MoveCapture<'a> {
    pub(super) routing: &'a Routing,
    pub(super) stats: &'a RouterStats,
    pub(super) capture: Option<Arc<Capture>>,
}

impl MoveCapture<'_> {
    /// Hands the capture to `session`, attached here, less what the node it
    /// comes from had (`had`); logged once.
    pub(super) fn finish(mut self, session: &Arc<Session>, had: &[PeerMark]) {
        let Some(capture) = self.capture.take() else {
            return;
        };
        let (captured, delivered, _) =
            self.routing
                .capture_finish(&capture, Some(session), had, self.stats);
        tracing::info!(
            client_id = %capture.client_id,
            captured,
            delivered,
            "session moved here: messages routed while it moved handed over"
        );
    }
}

impl MoveCapture<'_> {
    /// Ends the capture when there is no session here to hand it to nor
    /// one to keep (an adopted id whose session ended, or an id another
    /// node claimed first, whose own capture has what this one held): it
    /// holds back nothing (no ack fails for it).
    pub fn no_session(mut self) {
        if let Some(capture) = self.capture.take() {
            self.routing
                .capture_end(&capture, None, Some(Commit::NONE), self.stats);
        }
    }

    /// Ends the capture as lost, without a log line (the caller counts):
    /// what it held back is not confirmed nor acknowledged.
    pub fn lost(mut self) {
        if let Some(capture) = self.capture.take() {
            self.routing.capture_end(&capture, None, None, self.stats);
        }
    }
}

impl Drop for MoveCapture<'_> {
    fn drop(&mut self) {
        if let Some(capture) = self.capture.take() {
            let (captured, _, _) = self.routing.capture_finish(&capture, None, &[], self.stats);
            tracing::warn!(
                client_id = %capture.client_id,
                captured,
                "session moving here not attached: messages routed for it meanwhile dropped (not acknowledged to publishers here)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(origin: Option<(&str, u64)>, seq: u64) -> Captured {
        Captured {
            message: Arc::new(Message::new(
                "t",
                bytes::Bytes::new(),
                crate::core::message::QoS::AtLeastOnce,
                false,
            )),
            origin: origin.map(|(n, e)| (Arc::from(n), e)),
            seq,
        }
    }

    #[test]
    fn a_captured_message_is_left_out_only_when_the_old_node_routed_it() {
        let had = [PeerMark::new("o", 7, 10), PeerMark::new("here", 1, 4)];
        assert!(had_it(&captured(Some(("o", 7)), 10), &had));
        assert!(
            !had_it(&captured(Some(("o", 7)), 11), &had),
            "above the mark"
        );
        assert!(
            !had_it(&captured(Some(("o", 8)), 1), &had),
            "a new run of o"
        );
        assert!(
            had_it(&captured(Some(("here", 1)), 3), &had),
            "this node's own"
        );
        assert!(
            !had_it(&captured(Some(("here", 1)), 0), &had),
            "not numbered: never went out"
        );
        assert!(!had_it(&captured(None, 0), &had));
        assert!(
            !had_it(&captured(Some(("p", 1)), 1), &had),
            "an origin it never saw"
        );
    }
}
