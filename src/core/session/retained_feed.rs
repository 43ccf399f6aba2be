//! The retained backlog of a session: retained messages new subscriptions
//! asked for, fed into the outbound queue at the pace the connection takes it.

use std::time::Instant;

use super::outbound::queued_at_ms;
use super::{Session, SessionState};
use crate::core::message::QoS;
use crate::core::retained_backlog::RetainedBatch;
use crate::core::router::persist::MessageSlot;

/// Retained deliveries the backlog keeps in a session's queue at most: enough
/// for a connection's batch, few enough to leave the queue to live messages.
const RETAINED_FEED: usize = 256;

impl Session {
    /// Queues the retained messages a new subscription asked for: they are fed
    /// into the queue a few at a time as the connection takes from it, so a
    /// large retained set flows at the client's pace instead of overflowing the queue.
    pub fn queue_retained(&self, batch: RetainedBatch) -> usize {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let was_empty = state.pending.is_empty();
        state.rare().retained.add(batch);
        let expired = self.feed_retained(state, Instant::now());
        let wake = was_empty && !state.pending.is_empty();
        drop(guard);
        if wake {
            self.wake.notify_one();
        }
        expired
    }

    /// Retained messages waiting to be fed into the queue.
    pub fn retained_backlog_len(&self) -> usize {
        let state = self.state.lock();
        state.rare.as_ref().map_or(0, |r| r.retained.len())
    }

    /// Moves retained deliveries from the backlog into `pending` while it holds
    /// fewer than `RETAINED_FEED` and the queue limits leave room (always at
    /// least one into an empty queue); returns how many expired ones were passed over.
    pub(super) fn feed_retained(&self, state: &mut SessionState, now: Instant) -> usize {
        let mut expired = 0;
        while state.has_retained_backlog() && state.pending.len() < RETAINED_FEED {
            let limits = state.limits;
            let pending = &state.pending;
            let Some(rare) = state.rare.as_mut() else {
                break;
            };
            let fed = rare.retained.next(now, |size| {
                pending.is_empty() || !limits.full_for(pending, size)
            });
            expired += fed.expired;
            let Some(mut delivery) = fed.delivery else {
                break;
            };
            let persist = (delivery.qos != QoS::AtMostOnce)
                .then(|| self.persist_if(state))
                .flatten();
            let queued_at = queued_at_ms(&limits, persist.is_some());
            if let Some(persist) = persist {
                delivery.seq = state.next_store_seq;
                state.next_store_seq += 1;
                persist.put_delivery(&delivery, &MessageSlot::default(), queued_at);
            }
            state.pending.push_back(delivery, queued_at);
        }
        expired
    }
}
