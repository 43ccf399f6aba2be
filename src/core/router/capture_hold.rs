//! What the captures standing on this node hold back (`capture.rs`): one
//! book for both kinds of message a capture may hold that no store has yet.
//!
//! - A message from another node: that node's sync of it is not confirmed
//!   while a capture holding one stands (`cluster/confirm.rs`), and a capture
//!   lost with one makes the confirm drop it ([`CaptureHold`]).
//! - A QoS ≥ 1 message of a client here: its publisher's ack waits until the
//!   captures holding such messages up to its fabric number ended, and fails
//!   when one was lost since it was routed (`Router::wait_committed`); a
//!   capture holding only later messages does not hold it back.
//!
//! Both are answered from one list of the standing captures that hold
//! something (with their kinds), one loss count per kind, one handover
//! commit and one wake-up, all changed together under one lock: a waiter
//! that sees a capture gone sees its loss or its handover's commit.

use parking_lot::Mutex;

use crate::core::commit::{Commit, CoreError};

/// What a capture holds: messages from other nodes ([`PEER`]) and QoS ≥ 1
/// messages of clients here ([`LOCAL`]).
pub(super) type Kinds = u8;
pub(super) const PEER: Kinds = 1;
pub(super) const LOCAL: Kinds = 2;

/// What confirming other nodes' syncs waits on (`cluster/confirm.rs`).
#[derive(Debug, Clone, Copy)]
pub struct CaptureHold {
    /// A capture holding messages from other nodes stands.
    pub holding: bool,
    /// Captures that lost such messages so far.
    pub failed: u64,
    /// What handing captures over stored.
    pub handover: Commit,
}

/// The book of what the standing captures hold.
#[derive(Debug, Default)]
pub(super) struct Holds {
    book: Mutex<Book>,
    /// Woken when a capture that held something ends.
    ended: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Book {
    /// The standing captures that hold something, in the order they started.
    holding: Vec<Holding>,
    /// Captures that ended without their session holding messages from
    /// other nodes: no node here stored what they held.
    failed_peer: u64,
    /// Captures that ended without their session holding QoS ≥ 1 messages
    /// of clients here (`Commit::of_capture` takes the count).
    failed_local: u64,
    /// What handing captures over stored (the latest covers the earlier).
    handover: Commit,
}

#[derive(Debug)]
struct Holding {
    /// The capture's number (`Captures::started`).
    capture: u64,
    kinds: Kinds,
    /// The lowest fabric number of a QoS ≥ 1 message of a client here that
    /// it holds (`u64::MAX` until one is numbered): acks of messages
    /// numbered below wait for nothing here.
    local_first: u64,
}

impl Book {
    /// Whether a capture holding a QoS ≥ 1 message of a client here numbered
    /// up to `seq` stands.
    fn local_standing(&self, seq: u64) -> bool {
        self.holding
            .iter()
            .any(|h| h.kinds & LOCAL != 0 && h.local_first <= seq)
    }

    /// For an ack once nothing holds its message back: an error when a
    /// capture was lost since it was routed, else the handover's commit too.
    fn local_outcome(&self, mut commit: Commit) -> Result<Commit, CoreError> {
        if commit.lost_since(self.failed_local) {
            return Err(CoreError::NotHandedOver);
        }
        commit.include(self.handover);
        Ok(commit)
    }
}

/// The highest fabric number `commit`'s captured messages may have: a
/// message captured without one (it did not go to the other nodes: no ack
/// waits for it in cluster mode) waits for every capture.
fn last_seq(commit: Commit) -> u64 {
    match commit.fabric() {
        0 => u64::MAX,
        seq => seq,
    }
}

impl Holds {
    /// Capture `capture` holds a message of `kind` (once per capture and
    /// kind is enough; more are harmless).
    pub(super) fn hold(&self, capture: u64, kind: Kinds) {
        let mut book = self.book.lock();
        match book.holding.iter_mut().find(|h| h.capture == capture) {
            Some(holding) => holding.kinds |= kind,
            None => book.holding.push(Holding {
                capture,
                kinds: kind,
                local_first: u64::MAX,
            }),
        }
    }

    /// The QoS ≥ 1 message of a client here that `capture` holds went to
    /// the other nodes as number `seq`.
    pub(super) fn numbered(&self, capture: u64, seq: u64) {
        let mut book = self.book.lock();
        if let Some(holding) = book.holding.iter_mut().find(|h| h.capture == capture) {
            holding.local_first = holding.local_first.min(seq);
        }
    }

    /// How many captures holding QoS ≥ 1 messages of clients here were lost.
    pub(super) fn local_losses(&self) -> u64 {
        self.book.lock().failed_local
    }

    /// `capture` ended: handed over with what that stored, or lost (None).
    pub(super) fn end(&self, capture: u64, handed_over: Option<Commit>) {
        {
            let mut book = self.book.lock();
            let Some(index) = book.holding.iter().position(|h| h.capture == capture) else {
                return;
            };
            let kinds = book.holding.remove(index).kinds;
            match handed_over {
                Some(commit) => book.handover.include(commit),
                None => {
                    book.failed_peer += u64::from(kinds & PEER != 0);
                    book.failed_local += u64::from(kinds & LOCAL != 0);
                }
            }
        }
        self.ended.notify_waiters();
    }

    /// See [`CaptureHold`].
    pub(super) fn peer(&self) -> CaptureHold {
        let book = self.book.lock();
        CaptureHold {
            holding: book.holding.iter().any(|h| h.kinds & PEER != 0),
            failed: book.failed_peer,
            handover: book.handover,
        }
    }

    /// Resolves once no capture holding messages from other nodes stands.
    pub(super) async fn peer_released(&self) {
        self.ended_when(|book| (!book.holding.iter().any(|h| h.kinds & PEER != 0)).then_some(()))
            .await;
    }

    /// For a publisher's ack: `commit` plus, for a message captured for a
    /// session moving here, the handover's commit once no capture holding
    /// such messages up to its fabric number stands; an error when one was
    /// lost since it was routed (the loss may be its own).
    pub(super) async fn local(&self, commit: Commit) -> Result<Commit, CoreError> {
        if !commit.is_captured() {
            return Ok(commit);
        }
        let seq = last_seq(commit);
        self.ended_when(|book| (!book.local_standing(seq)).then(|| book.local_outcome(commit)))
            .await
    }

    /// Like [`Holds::local`], now: None while a capture holds it back.
    pub(super) fn local_now(&self, commit: Commit) -> Result<Option<Commit>, CoreError> {
        if !commit.is_captured() {
            return Ok(Some(commit));
        }
        let book = self.book.lock();
        if book.local_standing(last_seq(commit)) {
            return Ok(None);
        }
        book.local_outcome(commit).map(Some)
    }

    /// Resolves with what `done` tells once it tells something.
    async fn ended_when<T>(&self, done: impl Fn(&Book) -> Option<T>) -> T {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if let Some(outcome) = done(&self.book.lock()) {
                return outcome;
            }
            ended.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    /// The commit of a QoS ≥ 1 message of a client here numbered `seq`,
    /// captured when `holds` had lost what it had lost.
    fn captured(holds: &Holds, seq: u64) -> Commit {
        let mut commit = Commit::of_capture(holds.local_losses());
        commit.include(Commit::of_fabric(seq));
        commit
    }

    #[test]
    fn a_lost_local_capture_fails_the_acks_of_messages_routed_before_it_only() {
        let holds = Holds::default();
        holds.hold(1, LOCAL);
        let kept = captured(&holds, 5);
        holds.numbered(1, 5);
        holds.hold(2, LOCAL);
        let later = captured(&holds, 9);
        holds.numbered(2, 9);
        let earlier = captured(&holds, 4);
        assert!(holds.local_now(kept).expect("no loss yet").is_none());
        assert!(holds.local_now(later).expect("no loss yet").is_none());
        assert_eq!(
            holds.local_now(earlier).expect("nothing holds it"),
            Some(earlier),
            "numbered below what the captures hold"
        );
        let uncaptured = Commit::of_fabric(7);
        assert_eq!(
            holds.local_now(uncaptured).expect("not captured"),
            Some(uncaptured)
        );

        holds.end(2, None);
        for commit in [kept, later] {
            assert!(
                holds.local_now(commit).expect("waits first").is_none(),
                "capture 1 holds messages numbered up to it"
            );
        }
        let after = captured(&holds, 10);
        holds.end(1, Some(Commit::of_ticket(3)));
        for commit in [kept, later, earlier] {
            assert!(
                matches!(holds.local_now(commit), Err(CoreError::NotHandedOver)),
                "a loss since it was routed may be its own"
            );
        }
        let handed = holds.local_now(after).expect("routed after the loss");
        assert_eq!(
            handed.map(Commit::ticket),
            Some(3),
            "with the handover's commit"
        );
        let hold = holds.peer();
        assert!(!hold.holding && hold.failed == 0, "no peer message held");
    }

    #[tokio::test]
    async fn a_peer_capture_ending_releases_the_confirms() {
        let holds = std::sync::Arc::new(Holds::default());
        holds.hold(1, LOCAL);
        assert!(!holds.peer().holding, "local messages hold no confirm");
        holds.hold(1, PEER);
        holds.hold(2, PEER);
        assert!(holds.peer().holding);
        let released = tokio::spawn({
            let holds = std::sync::Arc::clone(&holds);
            async move { holds.peer_released().await }
        });
        holds.end(2, None);
        let hold = holds.peer();
        assert!(hold.holding && hold.failed == 1, "one lost, one stands");
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        assert!(!released.is_finished());
        holds.end(1, Some(Commit::of_ticket(8)));
        tokio::time::timeout(std::time::Duration::from_secs(5), released)
            .await
            .expect("released once none stands")
            .expect("the task");
        let hold = holds.peer();
        assert!(!hold.holding && hold.failed == 1);
        assert_eq!(hold.handover, Commit::of_ticket(8));
        assert_eq!(
            holds.local_losses(),
            0,
            "the lost one held no local message"
        );
        assert!(holds.peer_released().now_or_never().is_some());
    }
}
