//! A session's deliveries waiting to be sent, with the bytes they hold kept
//! alongside, so both queue limits (messages and bytes) are checked in O(1),
//! and the time each was queued (the age bound).

use std::collections::VecDeque;

use crate::core::message::Delivery;

/// What one delivery counts against `limits.max_queued_bytes`: its topic and
/// payload (the message itself is shared between subscribers, but each queue
/// holding it keeps it alive, so each counts it).
pub fn delivery_bytes(delivery: &Delivery) -> usize {
    delivery.message.topic.len() + delivery.message.payload.len()
}

#[derive(Debug, Default)]
pub(crate) struct PendingQueue {
    /// Each delivery with the unix ms it was queued at (0: not recorded).
    items: VecDeque<(Delivery, u64)>,
    bytes: usize,
}

impl PendingQueue {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Topic and payload bytes of every queued delivery.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn front(&self) -> Option<&Delivery> {
        self.items.front().map(|(delivery, _)| delivery)
    }

    /// Unix ms the first delivery was queued at (0: not recorded).
    pub fn front_queued_at(&self) -> Option<u64> {
        self.items.front().map(|(_, at)| *at)
    }

    /// Appends `delivery`, queued at `queued_at_ms` (unix ms, 0: not recorded).
    pub fn push_back(&mut self, delivery: Delivery, queued_at_ms: u64) {
        self.bytes += delivery_bytes(&delivery);
        self.items.push_back((delivery, queued_at_ms));
    }

    pub fn pop_front(&mut self) -> Option<Delivery> {
        let (delivery, _) = self.items.pop_front()?;
        self.bytes -= delivery_bytes(&delivery);
        Some(delivery)
    }

    /// Moves the first `n` deliveries (or all, if fewer) into `out`.
    pub fn drain_into(&mut self, n: usize, out: &mut Vec<Delivery>) {
        let n = n.min(self.items.len());
        for (delivery, _) in self.items.drain(..n) {
            self.bytes -= delivery_bytes(&delivery);
            out.push(delivery);
        }
    }

    /// Removes and returns the deliveries `select` picks, keeping the order of the rest.
    pub fn take_matching(&mut self, select: impl Fn(&Delivery) -> bool) -> Vec<Delivery> {
        let (taken, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.items)
            .into_iter()
            .partition(|(delivery, _)| select(delivery));
        self.items = kept;
        self.bytes = self.items.iter().map(|(d, _)| delivery_bytes(d)).sum();
        taken.into_iter().map(|(delivery, _)| delivery).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::core::message::{Message, QoS};

    fn delivery(topic: &str, payload: &'static [u8]) -> Delivery {
        let message = Message::new(topic, Bytes::from_static(payload), QoS::AtLeastOnce, false);
        Delivery {
            message: Arc::new(message),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: Vec::new(),
            filter: None,
            seq: 0,
        }
    }

    #[test]
    fn bytes_follow_every_way_in_and_out() {
        let mut queue = PendingQueue::default();
        queue.push_back(delivery("a", b"1234"), 10);
        queue.push_back(delivery("bb", b"12"), 20);
        queue.push_back(delivery("ccc", b""), 0);
        assert_eq!((queue.len(), queue.bytes()), (3, 5 + 4 + 3));
        assert_eq!(queue.front_queued_at(), Some(10));
        assert_eq!(queue.pop_front().map(|d| delivery_bytes(&d)), Some(5));
        assert_eq!(queue.bytes(), 7);
        assert_eq!(queue.front_queued_at(), Some(20));
        let taken = queue.take_matching(|d| &*d.message.topic == "ccc");
        assert_eq!((taken.len(), queue.len(), queue.bytes()), (1, 1, 4));
        let mut out = Vec::new();
        queue.drain_into(10, &mut out);
        assert_eq!((out.len(), queue.len(), queue.bytes()), (1, 0, 0));
        assert!(queue.is_empty());
    }
}
