//! The retained messages the router keeps, with their caps
//! (`limits.max_retained_messages`, `limits.max_retained_bytes`).
//!
//! A message is counted by its topic and payload bytes, as session queues
//! count them. Over a cap, a retained message on a new topic, or one larger
//! than the one it replaces, is refused; replacing a retained message with one
//! of the same size or smaller, and clearing one, always work (even when a
//! reload lowered a cap below what is held).

use std::sync::Arc;

use crate::core::message::Message;
use crate::core::retain::RetainedIndex;
use crate::core::topic::Filter;

/// Caps on what is retained; 0: no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetainedLimits {
    pub max_messages: usize,
    pub max_bytes: usize,
}

/// Why a retained message was not kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetainedFull {
    #[error("too many retained messages (limit {max})")]
    Messages { max: usize },
    #[error("retained messages take too many bytes (limit {max})")]
    Bytes { max: usize },
}

/// Topic and payload bytes a retained message is counted for.
pub fn retained_size(message: &Message) -> usize {
    message.topic.len() + message.payload.len()
}

#[derive(Debug, Default)]
pub struct RetainedSet {
    index: RetainedIndex<Arc<Message>>,
    bytes: usize,
    limits: RetainedLimits,
}

impl RetainedSet {
    pub fn new(limits: RetainedLimits) -> RetainedSet {
        RetainedSet {
            index: RetainedIndex::new(),
            bytes: 0,
            limits,
        }
    }

    pub fn set_limits(&mut self, limits: RetainedLimits) {
        self.limits = limits;
    }

    /// Would keeping `message` (replacing what `topic` holds) pass a cap?
    pub fn check(&self, message: &Message) -> Result<(), RetainedFull> {
        let size = retained_size(message);
        let previous = self.index.get(&message.topic).map(|m| retained_size(m));
        let RetainedLimits {
            max_messages,
            max_bytes,
        } = self.limits;
        if previous.is_none() && max_messages > 0 && self.index.len() >= max_messages {
            return Err(RetainedFull::Messages { max: max_messages });
        }
        let previous = previous.unwrap_or(0);
        if max_bytes > 0 && size > previous && self.bytes - previous + size > max_bytes {
            return Err(RetainedFull::Bytes { max: max_bytes });
        }
        Ok(())
    }

    /// Keeps `message` as the retained message of its topic, within the caps.
    /// The payload is copied into its own allocation: a live message's payload
    /// is a slice of its publisher's read buffer, which a retained copy would
    /// otherwise keep whole (64 KiB for a 16-byte payload) for as long as it is kept.
    pub fn keep(&mut self, message: &Message) -> Result<(), RetainedFull> {
        self.check(message)?;
        let mut own = message.clone();
        own.payload = bytes::Bytes::copy_from_slice(&message.payload);
        self.keep_unchecked(Arc::new(own));
        Ok(())
    }

    /// Keeps `message` whatever the caps (a stored message brought back at start).
    pub fn keep_unchecked(&mut self, message: Arc<Message>) {
        let size = retained_size(&message);
        let topic = Arc::clone(&message.topic);
        if let Some(previous) = self.index.set(&topic, Some(message)) {
            self.bytes -= retained_size(&previous);
        }
        // `set` ignores an invalid topic: count only what it holds.
        if self.index.get(&topic).is_some() {
            self.bytes += size;
        }
    }

    /// Clears the retained message of `topic`; returns it.
    pub fn clear(&mut self, topic: &str) -> Option<Arc<Message>> {
        let previous = self.index.set(topic, None)?;
        self.bytes -= retained_size(&previous);
        Some(previous)
    }

    pub fn get(&self, topic: &str) -> Option<&Arc<Message>> {
        self.index.get(topic)
    }

    /// Is `message` still the retained message of its topic (not replaced nor cleared)?
    pub fn is_current(&self, message: &Arc<Message>) -> bool {
        self.get(&message.topic)
            .is_some_and(|held| Arc::ptr_eq(held, message))
    }

    pub fn for_each_match(&self, filter: &Filter, visit: impl FnMut(&str, &Arc<Message>)) {
        self.index.for_each_match(filter, visit);
    }

    pub fn for_each(&self, visit: impl FnMut(&str, &Arc<Message>)) {
        self.index.for_each(visit);
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Topic and payload bytes of every retained message.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::message::QoS;
    use bytes::Bytes;

    fn message(topic: &str, payload_len: usize) -> Arc<Message> {
        Arc::new(Message::new(
            topic,
            Bytes::from(vec![b'x'; payload_len]),
            QoS::AtMostOnce,
            true,
        ))
    }

    #[test]
    fn a_new_topic_over_the_message_cap_is_refused_a_replacement_is_not() {
        let mut set = RetainedSet::new(RetainedLimits {
            max_messages: 2,
            max_bytes: 0,
        });
        set.keep(&message("a", 1)).unwrap();
        set.keep(&message("b", 1)).unwrap();
        assert_eq!(
            set.keep(&message("c", 1)),
            Err(RetainedFull::Messages { max: 2 })
        );
        assert!(set.get("c").is_none());
        // Replacing at the cap works, even with a larger message (no byte cap).
        set.keep(&message("a", 100)).unwrap();
        assert_eq!(set.len(), 2);
        // Clearing frees a place.
        assert!(set.clear("b").is_some());
        set.keep(&message("c", 1)).unwrap();
    }

    #[test]
    fn bytes_are_counted_and_capped_same_size_or_smaller_replacements_pass() {
        // "t1" + 8 bytes = 10 per message.
        let mut set = RetainedSet::new(RetainedLimits {
            max_messages: 0,
            max_bytes: 20,
        });
        set.keep(&message("t1", 8)).unwrap();
        set.keep(&message("t2", 8)).unwrap();
        assert_eq!(set.bytes(), 20);
        assert_eq!(
            set.keep(&message("t3", 0)),
            Err(RetainedFull::Bytes { max: 20 })
        );
        assert_eq!(
            set.keep(&message("t1", 9)),
            Err(RetainedFull::Bytes { max: 20 })
        );
        set.keep(&message("t1", 8)).unwrap();
        set.keep(&message("t1", 3)).unwrap();
        assert_eq!(set.bytes(), 15);
        set.keep(&message("t1", 8)).unwrap();
        assert_eq!(set.bytes(), 20);
        set.clear("t2");
        assert_eq!(set.bytes(), 10);
    }

    #[test]
    fn a_lowered_cap_still_lets_smaller_replacements_and_clears_through() {
        let mut set = RetainedSet::new(RetainedLimits::default());
        for topic in ["a", "b", "c"] {
            set.keep(&message(topic, 10)).unwrap();
        }
        set.set_limits(RetainedLimits {
            max_messages: 1,
            max_bytes: 5,
        });
        set.keep(&message("a", 4)).unwrap();
        assert!(set.keep(&message("d", 1)).is_err());
        assert!(set.clear("b").is_some());
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn restored_messages_bypass_the_caps_and_replaced_ones_are_not_current() {
        let mut set = RetainedSet::new(RetainedLimits {
            max_messages: 1,
            max_bytes: 0,
        });
        let first = message("a", 1);
        set.keep_unchecked(Arc::clone(&first));
        set.keep_unchecked(message("b", 1));
        assert_eq!(set.len(), 2);
        assert!(set.is_current(&first));
        set.keep(&message("a", 1)).unwrap();
        assert!(!set.is_current(&first));
    }
}
