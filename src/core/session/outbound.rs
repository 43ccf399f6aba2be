//! The outbound queue of a session: deliveries appended by publishers under
//! the queue limits and overflow policy, and taken by the connection.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;

use super::{OverflowPolicy, PushOutcome, QueueLimits, Session, SessionState};
use crate::core::commit::Commit;
use crate::core::message::{Delivery, QoS};
use crate::core::pending::delivery_bytes;
use crate::core::router::persist::MessageSlot;
use crate::store::record::unix_ms_now;

impl Session {
    /// Appends a delivery, applying the queue bound; wakes the connection if the queue was empty.
    pub fn push(&self, delivery: Delivery) -> PushOutcome {
        self.push_stored(delivery, &MessageSlot::default()).0
    }

    /// [`Session::push`], also returning the commit of what it stored (the
    /// delivery of a persistent session, the removal of one it dropped). The
    /// deliveries of one publish share `slot`, so its message is stored once.
    pub(crate) fn push_stored(
        &self,
        delivery: Delivery,
        slot: &MessageSlot,
    ) -> (PushOutcome, Commit) {
        let (outcome, commit, wake) = self.push_unwoken(delivery, slot);
        if wake {
            self.wake();
        }
        (outcome, commit)
    }

    /// [`Session::push_stored`] without the wake-up: true when the
    /// connection must be woken ([`Session::wake`]; the queue was empty).
    pub(crate) fn push_unwoken(
        &self,
        delivery: Delivery,
        slot: &MessageSlot,
    ) -> (PushOutcome, Commit, bool) {
        let state = self.state.lock();
        self.push_locked(state, delivery, slot)
    }

    /// Wakes the connection: deliveries may be waiting.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// A stream reader's push: `delivery` is queued only while the queue
    /// holds fewer than `below` and is not at its limits, and the client is
    /// connected unless `kept_offline`; otherwise it is given back (the
    /// reader waits for room). One lock for the check and the push.
    pub(crate) fn push_below(
        &self,
        delivery: Delivery,
        below: usize,
        kept_offline: bool,
    ) -> Result<(), Delivery> {
        let state = self.state.lock();
        if (state.connection_id == 0 && !kept_offline)
            || state.pending.len() >= below
            || state.limits.full_for(&state.pending, 0)
        {
            return Err(delivery);
        }
        if self.push_locked(state, delivery, &MessageSlot::default()).2 {
            self.wake();
        }
        Ok(())
    }

    /// Queues `delivery` under the bound; true when the connection must be
    /// woken (the queue was empty), which the caller does.
    fn push_locked(
        &self,
        mut state: parking_lot::MutexGuard<'_, SessionState>,
        mut delivery: Delivery,
        slot: &MessageSlot,
    ) -> (PushOutcome, Commit, bool) {
        let mut commit = Commit::NONE;
        // Offline sessions keep only what has a delivery guarantee.
        if state.connection_id == 0 && delivery.qos == crate::core::message::QoS::AtMostOnce {
            return (PushOutcome::Dropped, commit, false);
        }
        let mut outcome = PushOutcome::Queued;
        let size = delivery_bytes(&delivery);
        let limits = state.limits;
        if limits.full_for(&state.pending, size) {
            let fits_alone = limits.max_queued_bytes == 0 || size <= limits.max_queued_bytes;
            match limits.overflow {
                OverflowPolicy::DropOldest if fits_alone => {
                    while limits.full_for(&state.pending, size) {
                        if let Some(old) = state.pending.pop_front() {
                            if let Some(persist) = self.persist() {
                                commit.include(persist.delete_delivery(old.seq));
                            }
                        }
                        state.rare().dropped += 1;
                    }
                    outcome = PushOutcome::QueuedDroppedOldest;
                }
                _ => {
                    state.rare().dropped += 1;
                    return (PushOutcome::Dropped, commit, false);
                }
            }
        }
        let persist = (delivery.qos != QoS::AtMostOnce)
            .then(|| self.persist_if(&state))
            .flatten();
        let queued_at = queued_at_ms(&limits, persist.is_some());
        if let Some(persist) = persist {
            delivery.seq = state.next_store_seq;
            state.next_store_seq += 1;
            commit.include(persist.put_delivery(&delivery, slot, queued_at));
        }
        let was_empty = state.pending.is_empty();
        state.pending.push_back(delivery, queued_at);
        drop(state);
        (outcome, commit, was_empty)
    }

    /// True when one more delivery of `size` bytes does not fit and the policy is to refuse it.
    pub fn refuses(&self, size: usize) -> bool {
        let state = self.state.lock();
        state.limits.overflow == OverflowPolicy::Refuse
            && state.limits.full_for(&state.pending, size)
    }

    /// Applies new queue limits (config reload); a queue already over them keeps
    /// what it holds and takes more only once below them.
    pub fn set_limits(&self, limits: QueueLimits) {
        self.state.lock().limits = limits;
    }

    /// Resolves when deliveries may be waiting.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// Moves up to `max` pending deliveries into `out`.
    pub fn take_pending(&self, max: usize, out: &mut Vec<Delivery>) {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let now = Instant::now();
        self.feed_retained(state, now);
        state.pending.drain_into(max, out);
        self.feed_retained(state, now);
        Session::tell_space(state);
    }

    pub fn pending_len(&self) -> usize {
        self.state.lock().pending.len()
    }

    /// True when the queue is at its limits (`limits.max_queued_messages`,
    /// `max_queued_bytes`): one more push would apply the overflow policy.
    /// Stream readers wait for room instead.
    pub fn is_full(&self) -> bool {
        let state = self.state.lock();
        state.limits.full_for(&state.pending, 0)
    }

    /// Deliveries the queue takes before `limits.max_queued_messages`.
    pub fn room(&self) -> usize {
        let state = self.state.lock();
        state
            .limits
            .max_queued_len()
            .saturating_sub(state.pending.len())
    }

    /// Notified (`notify_waiters`) whenever the connection takes deliveries
    /// from the queue: stream readers wait on it for room.
    pub fn space(&self) -> Arc<Notify> {
        Arc::clone(
            self.state
                .lock()
                .rare()
                .space
                .get_or_insert_with(|| Arc::new(Notify::new())),
        )
    }

    /// Wakes stream readers waiting for room (after deliveries were taken).
    pub(super) fn tell_space(state: &SessionState) {
        if let Some(space) = state.rare.as_ref().and_then(|r| r.space.as_ref()) {
            space.notify_waiters();
        }
    }

    pub fn dropped_count(&self) -> u64 {
        self.state.lock().rare.as_ref().map_or(0, |r| r.dropped)
    }
}

/// The queue time recorded with a delivery: the clock is read only when an
/// age bound needs it or the delivery is stored (so the bound holds after a
/// restart, or once set by a reload); 0 otherwise.
pub(super) fn queued_at_ms(limits: &QueueLimits, stored: bool) -> u64 {
    if stored || limits.max_queued_age_ms > 0 {
        unix_ms_now()
    } else {
        0
    }
}
