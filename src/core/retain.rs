//! Retained messages, indexed by topic level.
//!
//! Modelled on mosquitto's retain.c "retainhier": a tree of topic levels holding at most one
//! value per topic name, walked by the filter of a new subscription.
//!
//! Nodes live in an arena (`Vec`) linked by index, so every walk is iterative and deep topics
//! cannot overflow the stack. Empty branches are pruned and their slots reused.
//!
//! Examples:
//!   valid topics:    "a", "a/b", "/a", "a/", "a//b", "$SYS/load"
//!   invalid topics:  "", "a/+", "a/#", "a\0" (ignored by `set`: nothing is stored)
//!   matching (filter -> retained topics): "a/+" -> "a/b", "a/"; "a/#" -> "a", "a/b/c";
//!                                          "#" -> everything not starting with '$'
//!   non-matching:    "a/+" !-> "a", "a/b/c"; "+" !-> "/a"; "#", "+/x" !-> "$SYS/x"

use std::collections::HashMap;

use crate::core::topic::{validate_topic_name, Filter};

type Idx = usize;
const ROOT: Idx = 0;

#[derive(Debug)]
struct Node<V> {
    parent: Idx,
    /// This node's level (the key in its parent's `children`).
    label: Box<str>,
    children: HashMap<Box<str>, Idx>,
    /// The retained value and its full topic name.
    value: Option<(Box<str>, V)>,
}

impl<V> Node<V> {
    fn new(parent: Idx, label: &str) -> Self {
        Node {
            parent,
            label: label.into(),
            children: HashMap::new(),
            value: None,
        }
    }
}

/// Retained values by topic name, matchable by subscription filter.
#[derive(Debug)]
pub struct RetainedIndex<V> {
    nodes: Vec<Node<V>>,
    free: Vec<Idx>,
    len: usize,
}

impl<V: Clone> Default for RetainedIndex<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Clone> RetainedIndex<V> {
    /// An empty index.
    pub fn new() -> Self {
        RetainedIndex {
            nodes: vec![Node::new(ROOT, "")],
            free: Vec::new(),
            len: 0,
        }
    }

    fn find(&self, topic: &str) -> Option<Idx> {
        let mut at = ROOT;
        for level in topic.split('/') {
            at = *self.nodes.get(at)?.children.get(level)?;
        }
        Some(at)
    }

    fn find_or_create(&mut self, topic: &str) -> Idx {
        let mut at = ROOT;
        for level in topic.split('/') {
            let existing = self
                .nodes
                .get(at)
                .and_then(|n| n.children.get(level).copied());
            at = match existing {
                Some(c) => c,
                None => {
                    let c = self.alloc(at, level);
                    if let Some(node) = self.nodes.get_mut(at) {
                        node.children.insert(level.into(), c);
                    }
                    c
                }
            };
        }
        at
    }

    fn alloc(&mut self, parent: Idx, label: &str) -> Idx {
        let node = Node::new(parent, label);
        if let Some(i) = self.free.pop() {
            if let Some(slot) = self.nodes.get_mut(i) {
                *slot = node;
                return i;
            }
        }
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Frees `at` and its ancestors while they hold no value and no children.
    fn prune(&mut self, mut at: Idx) {
        while at != ROOT {
            let Some(node) = self.nodes.get_mut(at) else {
                return;
            };
            if node.value.is_some() || !node.children.is_empty() {
                return;
            }
            let parent = node.parent;
            let label = std::mem::take(&mut node.label);
            if let Some(p) = self.nodes.get_mut(parent) {
                p.children.remove(&label);
            }
            self.free.push(at);
            at = parent;
        }
    }

    /// Stores (`Some`) or clears (`None`) the retained value of `topic`; returns the previous one.
    /// Prunes branches left empty. `topic` must be a valid topic name
    /// (see [`validate_topic_name`]); an invalid one is ignored and `None` returned.
    pub fn set(&mut self, topic: &str, value: Option<V>) -> Option<V> {
        if validate_topic_name(topic).is_err() {
            return None;
        }
        match value {
            Some(value) => {
                let at = self.find_or_create(topic);
                let node = self.nodes.get_mut(at)?;
                let prev = node.value.replace((topic.into(), value)).map(|(_, v)| v);
                if prev.is_none() {
                    self.len += 1;
                }
                prev
            }
            None => {
                let at = self.find(topic)?;
                let (_, prev) = self.nodes.get_mut(at)?.value.take()?;
                self.len -= 1;
                self.prune(at);
                Some(prev)
            }
        }
    }

    /// The retained value of `topic`, if any.
    pub fn get(&self, topic: &str) -> Option<&V> {
        if topic.is_empty() {
            return None;
        }
        let at = self.find(topic)?;
        self.nodes.get(at)?.value.as_ref().map(|(_, v)| v)
    }

    /// Calls `visit(topic, value)` for each retained topic matching `filter` (a `$share` filter
    /// matches with its `topic_filter()`). Walks by levels: the literal child, every child for
    /// '+', the whole subtree for '#' ('#' also matches the parent level: "a/#" matches "a").
    /// Topics beginning with '$' are not matched by a filter whose first level is '+' or '#'.
    pub fn for_each_match(&self, filter: &Filter, mut visit: impl FnMut(&str, &V)) {
        let levels: Vec<&str> = filter.topic_filter().split('/').collect();
        // Nodes whose whole subtree matches (reached through a '#').
        let mut subtrees: Vec<Idx> = Vec::new();
        let mut stack: Vec<(Idx, usize)> = vec![(ROOT, 0)];
        while let Some((at, depth)) = stack.pop() {
            let Some(node) = self.nodes.get(at) else {
                continue;
            };
            let Some(&level) = levels.get(depth) else {
                if let Some((topic, value)) = &node.value {
                    visit(topic, value);
                }
                continue;
            };
            match level {
                "#" | "+" => {
                    if level == "#" {
                        // The parent level itself ("a/#" matches "a"); the root never holds a value.
                        if let Some((topic, value)) = &node.value {
                            visit(topic, value);
                        }
                    }
                    for (label, &c) in &node.children {
                        if depth == 0 && label.starts_with('$') {
                            continue;
                        }
                        if level == "#" {
                            subtrees.push(c);
                        } else {
                            stack.push((c, depth + 1));
                        }
                    }
                }
                literal => {
                    if let Some(&c) = node.children.get(literal) {
                        stack.push((c, depth + 1));
                    }
                }
            }
        }
        while let Some(at) = subtrees.pop() {
            let Some(node) = self.nodes.get(at) else {
                continue;
            };
            if let Some((topic, value)) = &node.value {
                visit(topic, value);
            }
            subtrees.extend(node.children.values().copied());
        }
    }

    /// Number of retained topics.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `visit(topic, value)` for every retained entry (for persistence/admin), in no
    /// particular order.
    pub fn for_each(&self, mut visit: impl FnMut(&str, &V)) {
        for node in &self.nodes {
            if let Some((topic, value)) = &node.value {
                visit(topic, value);
            }
        }
    }

    /// Number of live tree nodes (including the root); for tests of pruning.
    #[cfg(test)]
    pub(crate) fn live_nodes(&self) -> usize {
        self.nodes.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests;
