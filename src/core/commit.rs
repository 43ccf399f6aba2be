//! What the core hands the adapters so they can keep "commit before ack"
//! without reaching the store: the position of what an operation stored, and
//! the one error type store failures become on their way out of the core.

/// The position in the store's commit order of what a core operation stored
/// (or [`Commit::NONE`] when it stored nothing) and, in cluster mode, the
/// position in the fabric's send order of a QoS ≥ 1 message it forwarded
/// (the other nodes alive must confirm it stored). Positions only grow, so the
/// highest of several covers them all: a connection that answers many packets
/// in one wake-up waits once, on the highest (see `Router::wait_committed`).
///
/// A QoS ≥ 1 message captured for a session moving here (cluster mode,
/// `core/router/capture.rs`) is stored nowhere until that capture is handed
/// over: its commit also names the latest capture that kept it and the
/// captures' losses when it was routed (the earliest count of several
/// covers them all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Commit {
    ticket: u64,
    fabric: u64,
    /// 0: captured by none; else 1 + the captures' losses when it was
    /// (32 bits, saturating: this is in every connection task's future).
    capture: u32,
    /// The latest capture that kept it (they are numbered from 1; a number
    /// past 32 bits reads as the highest: it waits for more, never less).
    capture_last: u32,
}

impl Commit {
    /// Nothing was stored: nothing to wait for.
    pub const NONE: Commit = Commit {
        ticket: 0,
        fabric: 0,
        capture: 0,
        capture_last: 0,
    };

    /// The commit of a store submission.
    pub(crate) fn of_ticket(ticket: crate::store::Ticket) -> Commit {
        Commit {
            ticket,
            ..Commit::NONE
        }
    }

    /// The commit of a message the fabric sends as number `seq`: done once
    /// the other nodes confirmed it (`Fabric::confirmed`).
    pub(crate) fn of_fabric(seq: u64) -> Commit {
        Commit {
            fabric: seq,
            ..Commit::NONE
        }
    }

    /// The commit of a message captured for a session moving here, by
    /// captures up to number `last`, when `losses` captures holding such
    /// messages had ended without their session: done once none up to
    /// `last` holding such messages stands, and failed when one more ended
    /// so (see `Routing::local_captures_ended`).
    pub(crate) fn of_capture(losses: u64, last: u64) -> Commit {
        let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Commit {
            capture: narrow(losses).saturating_add(1),
            capture_last: narrow(last),
            ..Commit::NONE
        }
    }

    /// The store ticket to wait for.
    pub(crate) fn ticket(self) -> crate::store::Ticket {
        self.ticket
    }

    /// The fabric's number to wait for (0: none).
    pub(crate) fn fabric(self) -> u64 {
        self.fabric
    }

    /// The captures' losses when the message was captured, None when it was not.
    pub(crate) fn capture_losses(self) -> Option<u64> {
        self.capture.checked_sub(1).map(u64::from)
    }

    /// The latest capture that kept the message (0: none).
    pub(crate) fn capture_last(self) -> u64 {
        u64::from(self.capture_last)
    }

    pub fn is_none(self) -> bool {
        self == Commit::NONE
    }

    /// Takes this commit and leaves [`Commit::NONE`] in its place.
    pub fn take(&mut self) -> Commit {
        std::mem::take(self)
    }

    /// Raises this commit to `other` if that is later.
    pub fn include(&mut self, other: Commit) {
        self.ticket = self.ticket.max(other.ticket);
        self.fabric = self.fabric.max(other.fabric);
        // The earliest count of losses: a loss after it may be this one's.
        if self.capture == 0 || (other.capture != 0 && other.capture < self.capture) {
            self.capture = other.capture;
        }
        self.capture_last = self.capture_last.max(other.capture_last);
    }
}

/// A core operation could not keep its promise.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The store failed or is shut down: what was acknowledged can no longer be kept.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// Cluster mode: a node alive did not confirm the message in time (it may
    /// be dead and not yet noticed): its sessions may not have it, so the
    /// publisher is not acknowledged (it sends the message again).
    #[error("other cluster nodes did not confirm the message in time")]
    NotConfirmed,
    /// Cluster mode: the message was held for a session moving here, which
    /// was not attached (no store has it): the publisher is not
    /// acknowledged (it sends the message again).
    #[error("a session moving here that the message was held for was not attached")]
    NotHandedOver,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_commit_covers_the_others() {
        let mut commit = Commit::NONE;
        commit.include(Commit::of_ticket(3));
        commit.include(Commit::of_ticket(1));
        commit.include(Commit::NONE);
        assert_eq!(commit, Commit::of_ticket(3));
        assert_eq!(commit.take(), Commit::of_ticket(3));
        assert!(commit.is_none());
        commit.include(Commit::of_fabric(5));
        commit.include(Commit::of_ticket(2));
        commit.include(Commit::of_fabric(4));
        assert_eq!((commit.ticket(), commit.fabric()), (2, 5));
        assert_eq!(commit.capture_losses(), None);
        commit.include(Commit::of_capture(3, 5));
        commit.include(Commit::of_capture(1, 2));
        commit.include(Commit::of_capture(4, 7));
        commit.include(Commit::of_ticket(1));
        assert_eq!(commit.capture_losses(), Some(1), "the earliest count");
        assert_eq!(commit.capture_last(), 7, "the latest capture");
        assert_eq!((commit.ticket(), commit.fabric()), (2, 5));
    }
}
