//! A session's QoS 1/2 packet ids: deliveries in flight towards the client,
//! awaiting their acknowledgement, and QoS 2 ids received from it, awaiting
//! PUBREL. Both maps live in one box made at first use: most of a broker's
//! sessions are quiet devices with neither, and the maps inline would cost
//! every session 96 bytes.

use std::collections::{HashMap, HashSet};

use crate::core::message::Delivery;

/// Stage of an outbound QoS 1/2 delivery awaiting its acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflightStage {
    /// Sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Sent,
    /// QoS 2 after PUBREC: message no longer held for resend, waiting for PUBCOMP.
    Released,
}

#[derive(Debug, Clone)]
pub struct InflightEntry {
    pub delivery: Delivery,
    pub stage: InflightStage,
    /// Send order, so a reconnecting client gets resends in the original order.
    pub(crate) seq: u64,
}

#[derive(Debug, Default)]
pub(crate) struct PacketIds {
    maps: Option<Box<Maps>>,
}

#[derive(Debug)]
struct Maps {
    inflight: HashMap<u16, InflightEntry>,
    incoming_qos2: HashSet<u16>,
    next_packet_id: u16,
}

impl PacketIds {
    fn maps_mut(&mut self) -> &mut Maps {
        self.maps.get_or_insert_with(|| {
            Box::new(Maps {
                inflight: HashMap::new(),
                incoming_qos2: HashSet::new(),
                next_packet_id: 1,
            })
        })
    }

    /// Next packet id not in flight; the caller ensures fewer than 65535 are.
    pub(crate) fn allocate(&mut self) -> u16 {
        let maps = self.maps_mut();
        let mut id = maps.next_packet_id;
        while maps.inflight.contains_key(&id) {
            id = if id == u16::MAX { 1 } else { id + 1 };
        }
        maps.next_packet_id = if id == u16::MAX { 1 } else { id + 1 };
        id
    }

    pub(crate) fn inflight_len(&self) -> usize {
        self.maps.as_ref().map_or(0, |m| m.inflight.len())
    }

    pub(crate) fn insert_inflight(&mut self, id: u16, entry: InflightEntry) {
        self.maps_mut().inflight.insert(id, entry);
    }

    /// Every in-flight delivery, in no particular order.
    pub(crate) fn inflight(&self) -> impl Iterator<Item = (u16, &InflightEntry)> {
        self.maps
            .iter()
            .flat_map(|m| m.inflight.iter().map(|(id, e)| (*id, e)))
    }

    pub(crate) fn inflight_stage(&self, id: u16) -> Option<InflightStage> {
        Some(self.maps.as_ref()?.inflight.get(&id)?.stage)
    }

    pub(crate) fn inflight_mut(&mut self, id: u16) -> Option<&mut InflightEntry> {
        self.maps.as_mut()?.inflight.get_mut(&id)
    }

    pub(crate) fn remove_inflight(&mut self, id: u16) -> Option<InflightEntry> {
        self.maps.as_mut()?.inflight.remove(&id)
    }

    /// Records an incoming QoS 2 id; false if it was already recorded.
    pub(crate) fn insert_incoming_qos2(&mut self, id: u16) -> bool {
        self.maps_mut().incoming_qos2.insert(id)
    }

    pub(crate) fn incoming_qos2_len(&self) -> usize {
        self.maps.as_ref().map_or(0, |m| m.incoming_qos2.len())
    }

    pub(crate) fn remove_incoming_qos2(&mut self, id: u16) -> bool {
        self.maps
            .as_mut()
            .is_some_and(|m| m.incoming_qos2.remove(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_session_holds_no_maps() {
        let mut ids = PacketIds::default();
        assert_eq!(ids.inflight_len(), 0);
        assert!(ids.remove_inflight(1).is_none());
        assert!(!ids.remove_incoming_qos2(1));
        assert!(ids.maps.is_none(), "lookups do not create the maps");
        assert!(ids.insert_incoming_qos2(9));
        assert!(!ids.insert_incoming_qos2(9), "a duplicate is reported");
        assert!(ids.maps.is_some());
    }

    #[test]
    fn allocation_wraps_and_never_gives_zero() {
        let mut ids = PacketIds::default();
        assert_eq!(ids.allocate(), 1);
        ids.maps_mut().next_packet_id = u16::MAX;
        assert_eq!(ids.allocate(), u16::MAX);
        assert_eq!(ids.allocate(), 1, "0 is never a packet id");
    }
}
