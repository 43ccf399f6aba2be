//! Topic aliases the server assigns on its PUBLISHes to an MQTT 5 client whose
//! CONNECT set a Topic Alias Maximum: the first PUBLISH of a topic carries the
//! topic and its alias, later ones the alias and an empty topic. When every
//! alias is taken, the least recently used one is given to the new topic (the
//! PUBLISH that reassigns it carries the topic, so the client's map follows).
//! Per connection, as the spec has it; each lookup and replacement is O(1).

use std::collections::HashMap;
use std::sync::Arc;

/// Aliases one connection assigns at most, whatever the client allows: each
/// costs a topic pointer and a map entry, about 60 bytes, so the table of a
/// connection stays under 8 KiB.
pub(super) const MAX_OUTBOUND_ALIASES: u16 = 128;

/// Topics of this many bytes or fewer are sent as they are: an alias (3 bytes
/// of property) would save nothing.
const SHORTEST_ALIASED_TOPIC: usize = 4;

/// "No slot" in the recency list.
const NONE: u16 = u16::MAX;

/// What a PUBLISH of a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alias {
    /// The client knows this alias for the topic: send it with an empty topic.
    Known(u16),
    /// The topic has just been given this alias: send both.
    Assigned(u16),
}

/// One connection's topic aliases, both ways.
#[derive(Default)]
pub(super) struct TopicAliases {
    /// Those the client set on its PUBLISHes, by alias.
    pub(super) inbound: HashMap<u16, Arc<str>>,
    /// Those this server assigns on its PUBLISHes (when the client's Topic
    /// Alias Maximum allows): made at the first delivery.
    pub(super) outbound: Option<OutboundAliases>,
}

/// One connection's outbound aliases, most recently used first.
#[derive(Debug)]
pub(super) struct OutboundAliases {
    /// Slot index (alias - 1) of each aliased topic.
    by_topic: HashMap<Arc<str>, u16>,
    slots: Vec<Slot>,
    /// Aliases 1..=capacity may be used (the client's maximum, capped).
    capacity: u16,
    /// Most and least recently used slots.
    newest: u16,
    oldest: u16,
}

#[derive(Debug)]
struct Slot {
    topic: Arc<str>,
    newer: u16,
    older: u16,
}

impl OutboundAliases {
    pub(super) fn new(capacity: u16) -> OutboundAliases {
        OutboundAliases {
            by_topic: HashMap::new(),
            slots: Vec::new(),
            capacity: capacity.min(MAX_OUTBOUND_ALIASES),
            newest: NONE,
            oldest: NONE,
        }
    }

    /// The alias `topic` goes out with, assigning one (the least recently used,
    /// once all are taken) when it has none; None for a topic too short to alias.
    pub(super) fn alias_for(&mut self, topic: &Arc<str>) -> Option<Alias> {
        if topic.len() < SHORTEST_ALIASED_TOPIC || self.capacity == 0 {
            return None;
        }
        if let Some(&slot) = self.by_topic.get(&**topic) {
            self.unlink(slot);
            self.push_newest(slot);
            return Some(Alias::Known(slot + 1));
        }
        let slot = if self.slots.len() < usize::from(self.capacity) {
            self.slots.push(Slot {
                topic: Arc::clone(topic),
                newer: NONE,
                older: NONE,
            });
            (self.slots.len() - 1) as u16
        } else {
            let slot = self.oldest;
            self.unlink(slot);
            let old =
                std::mem::replace(&mut self.slots[usize::from(slot)].topic, Arc::clone(topic));
            self.by_topic.remove(&old);
            slot
        };
        self.by_topic.insert(Arc::clone(topic), slot);
        self.push_newest(slot);
        Some(Alias::Assigned(slot + 1))
    }

    fn unlink(&mut self, slot: u16) {
        let (newer, older) = {
            let s = &self.slots[usize::from(slot)];
            (s.newer, s.older)
        };
        match newer {
            NONE => self.newest = older,
            n => self.slots[usize::from(n)].older = older,
        }
        match older {
            NONE => self.oldest = newer,
            o => self.slots[usize::from(o)].newer = newer,
        }
    }

    fn push_newest(&mut self, slot: u16) {
        let previous = self.newest;
        {
            let s = &mut self.slots[usize::from(slot)];
            s.newer = NONE;
            s.older = previous;
        }
        match previous {
            NONE => self.oldest = slot,
            p => self.slots[usize::from(p)].newer = slot,
        }
        self.newest = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn first_use_assigns_and_later_uses_reuse_the_alias() {
        let mut aliases = OutboundAliases::new(10);
        let a = topic("sensors/a");
        assert_eq!(aliases.alias_for(&a), Some(Alias::Assigned(1)));
        assert_eq!(aliases.alias_for(&a), Some(Alias::Known(1)));
        assert_eq!(
            aliases.alias_for(&topic("sensors/b")),
            Some(Alias::Assigned(2))
        );
        assert_eq!(aliases.alias_for(&a), Some(Alias::Known(1)));
    }

    #[test]
    fn when_full_the_least_recently_used_alias_is_reassigned() {
        let mut aliases = OutboundAliases::new(2);
        let (a, b, c) = (topic("topic/a"), topic("topic/b"), topic("topic/c"));
        assert_eq!(aliases.alias_for(&a), Some(Alias::Assigned(1)));
        assert_eq!(aliases.alias_for(&b), Some(Alias::Assigned(2)));
        // a is used again, so b is now the least recently used.
        assert_eq!(aliases.alias_for(&a), Some(Alias::Known(1)));
        assert_eq!(aliases.alias_for(&c), Some(Alias::Assigned(2)));
        assert_eq!(aliases.alias_for(&b), Some(Alias::Assigned(1)));
        assert_eq!(aliases.alias_for(&c), Some(Alias::Known(2)));
        // b (alias 1) is now older than c.
        assert_eq!(aliases.alias_for(&a), Some(Alias::Assigned(1)));
    }

    #[test]
    fn a_single_alias_is_reassigned_topic_after_topic() {
        let mut aliases = OutboundAliases::new(1);
        assert_eq!(
            aliases.alias_for(&topic("topic/a")),
            Some(Alias::Assigned(1))
        );
        assert_eq!(
            aliases.alias_for(&topic("topic/b")),
            Some(Alias::Assigned(1))
        );
        assert_eq!(aliases.alias_for(&topic("topic/b")), Some(Alias::Known(1)));
    }

    #[test]
    fn short_topics_get_no_alias_and_the_table_is_capped() {
        let mut aliases = OutboundAliases::new(u16::MAX);
        assert_eq!(aliases.alias_for(&topic("a/b")), None);
        for i in 0..1000 {
            let assigned = aliases.alias_for(&topic(&format!("topic/{i}")));
            assert!(matches!(assigned, Some(Alias::Assigned(n)) if n <= MAX_OUTBOUND_ALIASES));
        }
        assert_eq!(aliases.by_topic.len(), usize::from(MAX_OUTBOUND_ALIASES));
    }
}
