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
/// over: its commit is marked so, with the count of captures' losses when it
/// was routed (the earliest count of several covers them all). The mark
/// shares the fabric's word (such a message, if acknowledged, has a fabric
/// number: one the fabric cannot take is refused), so a commit stays 16
/// bytes: it is in every connection task's future.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Commit {
    ticket: u64,
    /// The fabric's number in the low [`SEQ_BITS`] bits; above them the
    /// capture mark: [`CAPTURED`] and the captures' losses when the message
    /// was routed, modulo 2^[`LOSS_BITS`].
    fabric: u64,
}

/// Bits of a fabric number: it counts the messages one run of a node sends
/// to the others, from 1, so it reaches 2^48 (2.8e14) after 8.9 years of one
/// run sending a million messages a second without a pause (89 years at
/// 100,000 a second). Past that it saturates (see [`Commit::of_fabric`]).
const SEQ_BITS: u32 = 48;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// The message was captured for a session moving here.
const CAPTURED: u64 = 1 << 63;
/// Bits of the captures' losses count kept in the mark. Counts are compared
/// modulo 2^15 (serial number arithmetic, as TCP's sequence numbers): a loss
/// goes unseen only if 32,768 captures holding such messages are lost while
/// one publisher's ack waits, and two counts merged must be less than 16,384
/// apart. A wait lasts until the captures holding its messages end (an
/// attach's time) and the store and the other nodes confirmed (bounded by
/// their timeouts), so that is over 16,000 failed moves within seconds.
const LOSS_BITS: u32 = 15;
const LOSS_MASK: u64 = (1 << LOSS_BITS) - 1;

impl Commit {
    /// Nothing was stored: nothing to wait for.
    pub const NONE: Commit = Commit {
        ticket: 0,
        fabric: 0,
    };

    /// The commit of a store submission.
    pub(crate) fn of_ticket(ticket: crate::store::Ticket) -> Commit {
        Commit {
            ticket,
            ..Commit::NONE
        }
    }

    /// The commit of a message the fabric sends as number `seq`: done once
    /// the other nodes confirmed it (`Fabric::confirmed`). A number past
    /// 48 bits (see [`SEQ_BITS`]) reads as the highest that fits.
    pub(crate) fn of_fabric(seq: u64) -> Commit {
        debug_assert!(seq <= SEQ_MASK, "fabric number past 48 bits");
        Commit {
            fabric: seq.min(SEQ_MASK),
            ..Commit::NONE
        }
    }

    /// The commit of a message captured for a session moving here, when
    /// `losses` captures holding such messages had ended without their
    /// session: done once no capture holding it stands, and failed when one
    /// more ended so (see `core/router/capture_hold.rs`).
    pub(crate) fn of_capture(losses: u64) -> Commit {
        Commit {
            fabric: CAPTURED | (losses & LOSS_MASK) << SEQ_BITS,
            ..Commit::NONE
        }
    }

    /// The store ticket to wait for.
    pub(crate) fn ticket(self) -> crate::store::Ticket {
        self.ticket
    }

    /// The fabric's number to wait for (0: none).
    pub(crate) fn fabric(self) -> u64 {
        self.fabric & SEQ_MASK
    }

    /// The captures' losses when the message was captured (modulo
    /// 2^[`LOSS_BITS`]), None when it was not captured.
    fn capture_losses(self) -> Option<u64> {
        (self.fabric & CAPTURED != 0).then_some(self.fabric >> SEQ_BITS & LOSS_MASK)
    }

    /// Whether a message of this commit was captured for a session moving here.
    pub(crate) fn is_captured(self) -> bool {
        self.capture_losses().is_some()
    }

    /// Whether captures were lost since the message was captured, now that
    /// `losses` were (false when it was not captured).
    pub(crate) fn lost_since(self, losses: u64) -> bool {
        self.capture_losses()
            .is_some_and(|then| losses.wrapping_sub(then) & LOSS_MASK != 0)
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
        // The earliest count of losses: a loss after it may be this one's.
        let losses = match (self.capture_losses(), other.capture_losses()) {
            (Some(a), Some(b)) => Some(if b.wrapping_sub(a) & LOSS_MASK <= LOSS_MASK / 2 {
                a
            } else {
                b
            }),
            (a, b) => a.or(b),
        };
        let seq = self.fabric().max(other.fabric());
        self.fabric = seq | losses.map_or(0, |l| CAPTURED | l << SEQ_BITS);
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
        assert!(!commit.is_captured() && !commit.lost_since(3));
        commit.include(Commit::of_capture(3));
        commit.include(Commit::of_capture(1));
        commit.include(Commit::of_capture(4));
        commit.include(Commit::of_ticket(1));
        assert!(commit.is_captured());
        assert!(!commit.lost_since(1), "the earliest count");
        assert!(commit.lost_since(2));
        assert_eq!((commit.ticket(), commit.fabric()), (2, 5));
    }

    #[test]
    fn loss_counts_compare_across_their_wrap() {
        let top = LOSS_MASK; // the last count before the mark's wraps to 0
        let mut commit = Commit::of_capture(top + 2); // reads as 1
        commit.include(Commit::of_capture(top));
        assert!(!commit.lost_since(top), "earlier than 1 across the wrap");
        assert!(commit.lost_since(top + 1) && commit.lost_since(top + 3));
        assert!(
            !Commit::of_capture(5).lost_since(5 + LOSS_MASK + 1),
            "a full turn unseen (the bound)"
        );
        assert_eq!(std::mem::size_of::<Commit>(), 16);
        assert_eq!(Commit::of_fabric(SEQ_MASK).fabric(), SEQ_MASK);
    }
}
