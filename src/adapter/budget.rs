//! The broker-wide budget for bytes held for clients that have not finished
//! what they send (`limits.max_buffered_bytes`): unfinished packets and frames
//! in read buffers, and STOMP transactions not yet committed. Each holder takes
//! from the budget through a [`Reservation`] that gives its bytes back when it
//! is dropped, so no error path can leak them; a holder that would go over the
//! budget is refused, and its connection closed. Without a shared budget, a few
//! hundred connections each holding an unfinished 1 MB frame (or a few open
//! transactions) take the broker's memory, however small each one's own limit.
//!
//! Also here: [`PartialFrame`], a connection's unfinished frame, which carries
//! the reservation and the time the frame began (`limits.frame_timeout_secs`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::buffers::QUIET_READ;
use super::log_limit::LogLimit;

/// The bytes every connection's unfinished frames and open transactions may hold
/// together. One per broker, shared by all connections through the `Context`.
#[derive(Debug, Default)]
pub struct BufferBudget {
    /// Bytes that may be held at once; 0: no budget (still counted).
    limit: AtomicUsize,
    /// Bytes held now.
    held: AtomicUsize,
    /// Holders refused since start.
    refused: AtomicU64,
    /// Broker-wide, not per connection: a flood of connections going over the
    /// budget logs a few lines a minute with a count, not one line each.
    log: parking_lot::Mutex<LogLimit>,
}

/// A holder would take the budget over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the broker's buffer budget (limits.max_buffered_bytes = {limit}) is used up")]
pub struct OverBudget {
    pub limit: usize,
}

impl BufferBudget {
    /// A budget of `limit` bytes (0: none).
    pub fn new(limit: usize) -> BufferBudget {
        let budget = BufferBudget::default();
        budget.limit.store(limit, Ordering::Relaxed);
        budget
    }

    /// Changes the limit (config reload). Bytes held stay held; growth beyond
    /// a lowered limit is refused.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Bytes held now over all connections.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Holders refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn take(&self, bytes: usize) -> Result<(), OverBudget> {
        let limit = self.limit();
        let taken = self
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                let after = held.saturating_add(bytes);
                (limit == 0 || after <= limit).then_some(after)
            });
        match taken {
            Ok(_) => Ok(()),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(OverBudget { limit })
            }
        }
    }

    fn give_back(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Whether to log one more refusal: `Some(n)` to log it, saying `n` were
    /// left out before it (see [`LogLimit`]); None to leave it out.
    pub(crate) fn admit_log(&self) -> Option<u64> {
        self.log.lock().admit(std::time::Instant::now())
    }
}

/// Bytes one holder (an unfinished frame, an open transaction) took from the
/// budget; given back when it is dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<BufferBudget>,
    bytes: usize,
}

impl Reservation {
    /// A reservation of nothing yet.
    pub(crate) fn new(budget: &Arc<BufferBudget>) -> Reservation {
        Reservation {
            budget: Arc::clone(budget),
            bytes: 0,
        }
    }

    /// Makes this reservation `bytes`: growing takes from the budget (refused,
    /// and nothing changes, when that would go over it); shrinking gives back.
    pub(crate) fn resize(&mut self, bytes: usize) -> Result<(), OverBudget> {
        if bytes > self.bytes {
            self.budget.take(bytes - self.bytes)?;
        } else if bytes < self.bytes {
            self.budget.give_back(self.bytes - bytes);
        }
        self.bytes = bytes;
        Ok(())
    }

    /// Adds `bytes` to this reservation (see [`Reservation::resize`]).
    pub(crate) fn grow(&mut self, bytes: usize) -> Result<(), OverBudget> {
        self.resize(self.bytes.saturating_add(bytes))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// A connection's unfinished packet or frame: what it reserved and when it
/// began. One word while nothing is unfinished (an idle connection pays for
/// every byte it keeps); the rest is boxed while a frame is under way.
#[derive(Debug, Default)]
pub(crate) struct PartialFrame(Option<Box<Unfinished>>);

#[derive(Debug)]
struct Unfinished {
    reservation: Reservation,
    since: Instant,
}

impl PartialFrame {
    /// Notes what the decoder left in the read buffer: `held` bytes of a frame
    /// not complete (0: none); `completed` when the pass finished at least one
    /// frame, so what is left began now. A frame counts against the budget once
    /// it holds more than a quiet read (a connection's idle size); on
    /// [`OverBudget`] the connection is to be closed.
    pub(crate) fn update(
        &mut self,
        budget: &Arc<BufferBudget>,
        held: usize,
        completed: bool,
        now: Instant,
    ) -> Result<(), OverBudget> {
        if held == 0 {
            self.0 = None;
            return Ok(());
        }
        let charged = charged(held);
        match &mut self.0 {
            Some(unfinished) => {
                if completed {
                    unfinished.since = now;
                }
                unfinished.reservation.resize(charged)
            }
            None => {
                let mut reservation = Reservation::new(budget);
                reservation.resize(charged)?;
                self.0 = Some(Box::new(Unfinished {
                    reservation,
                    since: now,
                }));
                Ok(())
            }
        }
    }

    /// A frame was taken from the read buffer, which now holds `held` bytes:
    /// the reservation shrinks at once, before the frame is handled, so bytes
    /// moving on (into a transaction) are not counted twice. Cheap when nothing
    /// is unfinished: called per frame.
    pub(crate) fn shrink_to(&mut self, held: usize) {
        if let Some(unfinished) = &mut self.0 {
            let charged = charged(held);
            if charged < unfinished.reservation.bytes {
                // Shrinking is never refused.
                let _ = unfinished.reservation.resize(charged);
            }
        }
    }

    /// When the unfinished frame must be complete (`timeout` zero: never); None
    /// when there is none.
    pub(crate) fn deadline(&self, timeout: Duration) -> Option<Instant> {
        if timeout.is_zero() {
            return None;
        }
        self.0.as_ref().map(|unfinished| unfinished.since + timeout)
    }

    /// Whether the unfinished frame is past its deadline at `now`.
    pub(crate) fn expired(&self, timeout: Duration, now: Instant) -> bool {
        self.deadline(timeout)
            .is_some_and(|deadline| deadline <= now)
    }
}

/// What `held` bytes of an unfinished frame count against the budget: nothing
/// within a quiet read (what any connection may hold), all of them past it.
fn charged(held: usize) -> usize {
    if held > QUIET_READ {
        held
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_take_from_the_budget_and_give_back_when_dropped() {
        let budget = Arc::new(BufferBudget::new(1000));
        let mut a = Reservation::new(&budget);
        let mut b = Reservation::new(&budget);
        a.resize(600).unwrap();
        assert_eq!(b.resize(500), Err(OverBudget { limit: 1000 }));
        assert_eq!(budget.held(), 600, "a refused growth takes nothing");
        b.resize(400).unwrap();
        a.resize(100).unwrap();
        assert_eq!(budget.held(), 500);
        drop(a);
        drop(b);
        assert_eq!(budget.held(), 0);
        assert_eq!(budget.refused(), 1);
    }

    #[test]
    fn zero_means_no_budget_and_a_reload_lowers_it_for_growth_only() {
        let budget = Arc::new(BufferBudget::new(0));
        let mut a = Reservation::new(&budget);
        a.resize(usize::MAX / 2).unwrap();
        budget.set_limit(10);
        a.resize(usize::MAX / 2 - 1)
            .expect("shrinking is always allowed");
        let mut b = Reservation::new(&budget);
        assert!(b.grow(1).is_err());
        drop(a);
        b.grow(10).unwrap();
    }

    #[test]
    fn an_unfinished_frame_counts_past_the_idle_size_and_restarts_when_one_completes() {
        let budget = Arc::new(BufferBudget::new(10_000));
        let mut partial = PartialFrame::default();
        let start = Instant::now();
        let timeout = Duration::from_secs(30);
        partial.update(&budget, 10, false, start).unwrap();
        assert_eq!(budget.held(), 0, "a small partial frame is free");
        assert_eq!(partial.deadline(timeout), Some(start + timeout));
        let later = start + Duration::from_secs(5);
        partial.update(&budget, 5000, false, later).unwrap();
        assert_eq!(budget.held(), 5000);
        assert_eq!(
            partial.deadline(timeout),
            Some(start + timeout),
            "same frame"
        );
        assert!(partial.update(&budget, 20_000, false, later).is_err());
        partial.shrink_to(4000);
        assert_eq!(budget.held(), 4000, "a frame taken out gives back at once");
        partial.update(&budget, 300, true, later).unwrap();
        assert_eq!(budget.held(), 300);
        assert_eq!(
            partial.deadline(timeout),
            Some(later + timeout),
            "a new frame"
        );
        assert!(partial.expired(timeout, later + timeout));
        assert!(partial.deadline(Duration::ZERO).is_none(), "0: no timeout");
        partial.update(&budget, 0, true, later).unwrap();
        assert_eq!(budget.held(), 0);
        assert!(partial.deadline(timeout).is_none());
    }

    #[test]
    fn an_idle_connection_carries_one_word() {
        assert_eq!(
            std::mem::size_of::<PartialFrame>(),
            std::mem::size_of::<usize>()
        );
    }
}
