//! The in-flight window of a session: packet ids given to QoS 1/2 deliveries
//! on their way to the client, and incoming QoS 2 ids awaiting release.

use std::time::Instant;

use super::{InflightEntry, InflightStage, Session, Taken};
use crate::core::commit::Commit;
use crate::core::message::Delivery;
use crate::store::record::unix_ms_now;

impl Session {
    /// Removes and returns the deliveries `select` picks that the client has not
    /// acknowledged: in flight and not yet released (send order), then pending.
    pub(crate) fn take_unfinished(&self, select: impl Fn(&Delivery) -> bool) -> Vec<Delivery> {
        let mut state = self.state.lock();
        let mut inflight: Vec<(u64, u16)> = state
            .ids
            .inflight()
            .filter(|(_, e)| e.stage == InflightStage::Sent && select(&e.delivery))
            .map(|(id, e)| (e.seq, id))
            .collect();
        inflight.sort_unstable();
        let mut out: Vec<Delivery> = inflight
            .into_iter()
            .filter_map(|(_, id)| state.ids.remove_inflight(id).map(|e| e.delivery))
            .collect();
        out.extend(state.pending.take_matching(select));
        if let Some(persist) = self.persist() {
            for delivery in &out {
                persist.delete_delivery(delivery.seq);
            }
        }
        out
    }

    /// Moves deliveries the connection may send now into `out`: QoS 0 always, QoS 1/2
    /// while fewer than `window` are in flight (each gets a packet id and is recorded
    /// in flight). Stops at the first QoS 1/2 delivery that does not fit, so order is
    /// kept. Expired deliveries are discarded and counted.
    pub fn take_deliverable(
        &self,
        max: usize,
        window: usize,
        now: Instant,
        out: &mut Vec<(Delivery, Option<u16>)>,
    ) -> Taken {
        let mut commit = Commit::NONE;
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let mut expired = self.feed_retained(state, now);
        let mut aged = 0;
        // Queued before this (unix ms) is too old to send; 0: no age bound.
        let too_old_before = match state.limits.max_queued_age_ms {
            0 => 0,
            age => unix_ms_now().saturating_sub(age),
        };
        while out.len() < max {
            let Some(front) = state.pending.front() else {
                break;
            };
            let at = state.pending.front_queued_at().unwrap_or(0);
            let too_old = at != 0 && at < too_old_before;
            if too_old || front.message.is_expired(now) {
                if let (Some(old), Some(persist)) = (state.pending.pop_front(), self.persist()) {
                    commit.include(persist.delete_delivery(old.seq));
                }
                if too_old {
                    aged += 1;
                    state.rare().dropped += 1;
                } else {
                    expired += 1;
                }
                continue;
            }
            if front.qos == crate::core::message::QoS::AtMostOnce {
                if let Some(delivery) = state.pending.pop_front() {
                    out.push((delivery, None));
                }
                continue;
            }
            if state.ids.inflight_len() >= window.min(usize::from(u16::MAX) - 1) {
                break;
            }
            let Some(delivery) = state.pending.pop_front() else {
                break;
            };
            let id = state.ids.allocate();
            if delivery.seq != 0 {
                if let Some(persist) = self.persist_if(state) {
                    // The packet id is stored so a resend after a restart uses the same one.
                    commit.include(persist.mark_delivery(delivery.seq, id, false));
                }
            }
            let seq = state.next_seq;
            state.next_seq += 1;
            state.ids.insert_inflight(
                id,
                InflightEntry {
                    delivery: delivery.clone(),
                    stage: InflightStage::Sent,
                    seq,
                },
            );
            out.push((delivery, Some(id)));
        }
        if !out.is_empty() {
            Session::tell_space(state);
        }
        Taken {
            expired: expired + self.feed_retained(state, now),
            aged,
            commit,
        }
    }

    pub fn inflight_len(&self) -> usize {
        self.state.lock().ids.inflight_len()
    }

    /// Removes an in-flight delivery in `stage`: the commit of its removal from
    /// the store, or None if there is none with that id and stage.
    pub fn finish_inflight(&self, packet_id: u16, stage: InflightStage) -> Option<Commit> {
        self.finish_inflight_delivery(packet_id, stage)
            .map(|(commit, _)| commit)
    }

    /// [`Session::finish_inflight`], also returning the finished delivery (a
    /// stream reader's named consumer commits its offset from it).
    pub fn finish_inflight_delivery(
        &self,
        packet_id: u16,
        stage: InflightStage,
    ) -> Option<(Commit, Delivery)> {
        let mut state = self.state.lock();
        match state.ids.inflight_stage(packet_id) {
            Some(found) if found == stage => {
                let entry = state.ids.remove_inflight(packet_id)?;
                let commit = match self.persist() {
                    Some(persist) => persist.delete_delivery(entry.delivery.seq),
                    None => Commit::NONE,
                };
                Some((commit, entry.delivery))
            }
            _ => None,
        }
    }

    /// PUBREC received: the QoS 2 delivery moves to the release stage. The
    /// commit of that stage (the PUBREL depends on it), or None if unknown.
    pub fn release_inflight(&self, packet_id: u16) -> Option<Commit> {
        let mut state = self.state.lock();
        let entry = state.ids.inflight_mut(packet_id)?;
        entry.stage = InflightStage::Released;
        let mut commit = Commit::NONE;
        if entry.delivery.seq != 0 {
            if let Some(persist) = self.persist() {
                commit = persist.mark_delivery(entry.delivery.seq, packet_id, true);
            }
        }
        Some(commit)
    }

    /// Every in-flight delivery in send order, for resending after a reconnect.
    pub fn inflight_in_order(&self) -> Vec<(u16, InflightEntry)> {
        let state = self.state.lock();
        let mut entries: Vec<(u16, InflightEntry)> = state
            .ids
            .inflight()
            .map(|(id, e)| (id, e.clone()))
            .collect();
        entries.sort_by_key(|(_, e)| e.seq);
        entries
    }

    /// Records an incoming QoS 2 id: the commit of its record (the PUBREC
    /// depends on it), or None if it was already recorded (a duplicate PUBLISH).
    pub fn record_incoming_qos2(&self, packet_id: u16) -> Option<Commit> {
        let mut state = self.state.lock();
        if !state.ids.insert_incoming_qos2(packet_id) {
            return None;
        }
        let commit = self
            .persist_if(&state)
            .map_or(Commit::NONE, |persist| persist.put_incoming_qos2(packet_id));
        Some(commit)
    }

    pub fn incoming_qos2_len(&self) -> usize {
        self.state.lock().ids.incoming_qos2_len()
    }

    /// PUBREL: forgets the id; the commit of its removal (the PUBCOMP depends on
    /// it: the client may reuse the id), or None if it was unknown. Only a
    /// session the store holds anything of deletes it there: a clean session's
    /// PUBREL costs no store operation (and no group commit).
    pub fn release_incoming_qos2(&self, packet_id: u16) -> Option<Commit> {
        if !self.state.lock().ids.remove_incoming_qos2(packet_id) {
            return None;
        }
        let commit = match (self.is_stored(), self.persist()) {
            (true, Some(persist)) => persist.delete_incoming_qos2(packet_id),
            _ => Commit::NONE,
        };
        Some(commit)
    }
}
