//! The queue from the router's publishes to the outbound task
//! (`outbound.rs`): one lock both queues a message and numbers it, so
//! numbers follow queue order (the outbound task numbers what it takes
//! alike). A tokio channel under a lock of its own for the number cost two
//! locks' worth of atomics per message and a block allocation every 32; the
//! outbound task is woken by `kick.rs` either way.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::core::message::Message;

/// Room kept once the queue is drained (a few batches of the outbound task).
const KEPT_CAPACITY: usize = 4_096;

#[derive(Debug)]
pub(super) struct OutQueue {
    state: Mutex<State>,
    /// Messages queued, kept with the queue and read without its lock
    /// (congestion, room, the outbound task's wait).
    len: AtomicUsize,
    /// Set once no message will be queued any more (the fabric is gone).
    closed: AtomicBool,
    capacity: usize,
}

#[derive(Debug, Default)]
struct State {
    messages: VecDeque<Arc<Message>>,
    /// The number of the last message queued (1, 2, … in this run).
    last_seq: u64,
}

impl OutQueue {
    pub(super) fn new(capacity: usize) -> OutQueue {
        OutQueue {
            state: Mutex::new(State::default()),
            len: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            capacity,
        }
    }

    /// Queues `message` and returns its number; none when the queue is full
    /// or closed.
    pub(super) fn push(&self, message: &Arc<Message>) -> Option<u64> {
        let mut state = self.state.lock();
        if state.messages.len() >= self.capacity || self.closed.load(Ordering::Relaxed) {
            return None;
        }
        state.messages.push_back(Arc::clone(message));
        state.last_seq += 1;
        // Before the wake-up that follows (`Kick::wake` orders it).
        self.len.store(state.messages.len(), Ordering::Release);
        Some(state.last_seq)
    }

    /// Moves up to `max` messages, oldest first, to `out`; how many it moved.
    pub(super) fn take(&self, out: &mut Vec<Arc<Message>>, max: usize) -> usize {
        let mut state = self.state.lock();
        let n = state.messages.len().min(max);
        out.extend(state.messages.drain(..n));
        self.len.store(state.messages.len(), Ordering::Release);
        if state.messages.is_empty() && state.messages.capacity() > KEPT_CAPACITY {
            // What an outage or a burst grew is given back once drained.
            state.messages.shrink_to(KEPT_CAPACITY);
        }
        n
    }

    pub(super) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn has_room(&self) -> bool {
        self.len() < self.capacity
    }

    /// The number of the last message queued (0: none yet).
    pub(super) fn last_seq(&self) -> u64 {
        self.state.lock().last_seq
    }

    /// No message is queued from now on; the outbound task ends once it
    /// took what is queued.
    pub(super) fn close(&self) {
        let _state = self.state.lock();
        self.closed.store(true, Ordering::Release);
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    use crate::core::message::QoS;

    fn message(topic: &str) -> Arc<Message> {
        Arc::new(Message::new(topic, Bytes::new(), QoS::AtMostOnce, false))
    }

    #[test]
    fn messages_are_numbered_and_taken_in_queue_order() {
        let queue = OutQueue::new(8);
        assert_eq!(queue.push(&message("a")), Some(1));
        assert_eq!(queue.push(&message("b")), Some(2));
        assert_eq!(queue.push(&message("c")), Some(3));
        assert_eq!((queue.len(), queue.last_seq()), (3, 3));
        let mut out = Vec::new();
        assert_eq!(queue.take(&mut out, 2), 2);
        let topics: Vec<&str> = out.iter().map(|m| &*m.topic).collect();
        assert_eq!(topics, ["a", "b"]);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.take(&mut out, 10), 1);
        assert_eq!(&*out[2].topic, "c");
        assert!(queue.is_empty());
        assert_eq!(queue.push(&message("d")), Some(4), "numbers go on");
    }

    #[test]
    fn a_full_queue_refuses_without_numbering() {
        let queue = OutQueue::new(2);
        assert!(queue.push(&message("a")).is_some());
        assert!(queue.push(&message("b")).is_some());
        assert!(!queue.has_room());
        assert_eq!(queue.push(&message("c")), None);
        assert_eq!(queue.last_seq(), 2);
        queue.take(&mut Vec::new(), 1);
        assert!(queue.has_room());
        assert_eq!(queue.push(&message("c")), Some(3));
    }

    #[test]
    fn a_closed_queue_refuses_and_keeps_what_it_holds() {
        let queue = OutQueue::new(4);
        queue.push(&message("a"));
        queue.close();
        assert!(queue.is_closed());
        assert_eq!(queue.push(&message("b")), None);
        let mut out = Vec::new();
        assert_eq!(queue.take(&mut out, 4), 1);
    }
}
