//! The subscription trie: which (session key, options) pairs want a message published to a topic.
//!
//! Modelled on nats-server's sublist (`level{nodes, pwc, fwc}`): every node has a map of literal
//! children plus an explicit slot for its '+' child and the subscribers whose filter ends in '#'
//! at that point. Matching a topic costs O(depth * fan-out of '+' branches), independent of the
//! number of subscriptions.
//!
//! Nodes live in an arena (`ChunkedVec`, which never moves them) linked by index, so
//! inserting, matching, pruning and dropping are all iterative: a topic with tens of thousands
//! of levels cannot overflow the stack.
//!
//! Examples (filter -> topic):
//!   valid filters:      "a/b", "a/+/c", "#", "a/#", "+/+", "/+", "$share/g/a/+"
//!   invalid filters:    rejected earlier by `Filter::parse` ("a/#/b", "a+", "$share//x")
//!   matching:           "a/+/c" ~ "a/b/c";  "a/#" ~ "a", "a/b/c";  "/+" ~ "/finance"
//!   non-matching:       "a/+" !~ "a/b/c";  "+" !~ "/finance";  "#", "+/x" !~ "$SYS/x"
//!
//! Shared subscriptions `$share/<g>/<f>` are grouped by (g, f): each match visits exactly one
//! member of each matching group, chosen round-robin.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::core::arena::ChunkedVec;
use crate::core::topic::Filter;

type Idx = usize;
const ROOT: Idx = 0;

/// Members of a shared group: a Vec for O(1) round-robin indexing plus a key index.
#[derive(Debug)]
struct Group<K, V> {
    filter: Filter,
    members: Vec<(K, V)>,
    index: HashMap<K, usize>,
    cursor: AtomicUsize,
}

impl<K: Clone + Eq + Hash, V> Group<K, V> {
    fn new(filter: &Filter) -> Self {
        Group {
            filter: filter.clone(),
            members: Vec::new(),
            index: HashMap::new(),
            cursor: AtomicUsize::new(0),
        }
    }

    fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(slot) = self.index.get(&key).and_then(|&i| self.members.get_mut(i)) {
            return Some(std::mem::replace(&mut slot.1, value));
        }
        self.index.insert(key.clone(), self.members.len());
        self.members.push((key, value));
        None
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.index.remove(key)?;
        if i >= self.members.len() {
            return None;
        }
        let (_, value) = self.members.swap_remove(i);
        if let Some((moved, _)) = self.members.get(i) {
            self.index.insert(moved.clone(), i);
        }
        Some(value)
    }

    /// The next member in round-robin order that `accept`s the message; if the
    /// one whose turn it is does not, the following ones are asked in order.
    /// None when no member accepts it.
    fn pick(&self, accept: &impl Fn(&V) -> bool) -> Option<&(K, V)> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let first = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .filter_map(|step| self.members.get((first + step) % n))
            .find(|(_, v)| accept(v))
    }
}

/// The plain subscribers of one filter. Most filters have one (a device's own
/// topic), kept inline: a map costs ~175 bytes per filter even for one entry,
/// and is boxed so that it does not make every `One` as big as a map.
#[derive(Debug)]
#[allow(clippy::box_collection)]
enum Members<K, V> {
    One(K, V),
    Many(Box<HashMap<K, V>>),
}

impl<K: Eq + Hash, V> Members<K, V> {
    fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            Members::One(k, v) if *k == key => Some(std::mem::replace(v, value)),
            Members::One(..) => {
                let many = Members::Many(Box::new(HashMap::with_capacity(2)));
                let one = std::mem::replace(self, many);
                if let (Members::One(k, v), Members::Many(map)) = (one, &mut *self) {
                    map.insert(k, v);
                    map.insert(key, value);
                }
                None
            }
            Members::Many(map) => map.insert(key, value),
        }
    }

    fn for_each(&self, accept: &impl Fn(&V) -> bool, mut visit: impl FnMut(&K, &V)) {
        match self {
            Members::One(k, v) if accept(v) => visit(k, v),
            Members::One(..) => {}
            Members::Many(map) => map
                .iter()
                .filter(|(_, v)| accept(v))
                .for_each(|(k, v)| visit(k, v)),
        }
    }
}

/// Shared groups by name.
type Groups<K, V> = Vec<(Box<str>, Group<K, V>)>;

/// The subscriptions whose (topic) filter ends at one point of the trie.
#[derive(Debug)]
struct Subs<K, V> {
    /// Non-shared subscriptions: they all share the same filter text.
    plain: Option<(Filter, Members<K, V>)>,
    /// Shared groups and their names; few per filter, so a list, and boxed
    /// while there are any: most filters have none.
    shared: Option<Box<Groups<K, V>>>,
}

impl<K: Clone + Eq + Hash, V> Subs<K, V> {
    fn new() -> Self {
        Subs {
            plain: None,
            shared: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.plain.is_none() && self.shared.is_none()
    }

    fn groups(&self) -> &[(Box<str>, Group<K, V>)] {
        self.shared.as_deref().map_or(&[], |groups| groups)
    }

    fn group(&self, name: &str) -> Option<usize> {
        self.groups().iter().position(|(n, _)| &**n == name)
    }

    fn insert(&mut self, filter: &Filter, key: K, value: V) -> Option<V> {
        match filter.share_group() {
            None => match &mut self.plain {
                Some((_, members)) => members.insert(key, value),
                None => {
                    self.plain = Some((filter.clone(), Members::One(key, value)));
                    None
                }
            },
            Some(name) => {
                let i = self.group(name);
                let groups = self.shared.get_or_insert_with(Box::default);
                let i = i.unwrap_or_else(|| {
                    groups.push((name.into(), Group::new(filter)));
                    groups.len() - 1
                });
                groups.get_mut(i)?.1.insert(key, value)
            }
        }
    }

    fn remove(&mut self, filter: &Filter, key: &K) -> Option<V> {
        match filter.share_group() {
            None => match &mut self.plain.as_mut()?.1 {
                Members::One(k, _) if k == key => match self.plain.take() {
                    Some((_, Members::One(_, value))) => Some(value),
                    _ => None,
                },
                Members::One(..) => None,
                Members::Many(map) => {
                    let value = map.remove(key)?;
                    if map.is_empty() {
                        self.plain = None;
                    }
                    Some(value)
                }
            },
            Some(name) => {
                let i = self.group(name)?;
                let groups = self.shared.as_mut()?;
                let g = &mut groups.get_mut(i)?.1;
                let value = g.remove(key)?;
                if g.members.is_empty() {
                    groups.swap_remove(i);
                    if groups.is_empty() {
                        self.shared = None;
                    }
                }
                Some(value)
            }
        }
    }

    fn visit(&self, accept: &impl Fn(&V) -> bool, visit: &mut impl FnMut(&K, &V, &Filter)) {
        if let Some((filter, members)) = &self.plain {
            members.for_each(accept, |k, v| visit(k, v, filter));
        }
        for (_, group) in self.groups() {
            if let Some((k, v)) = group.pick(accept) {
                visit(k, v, &group.filter);
            }
        }
    }
}

/// A node's level under its parent: "+" for its parent's '+' child (a filter's
/// "+" level is always the wildcard), else a literal child's key.
type Label = Box<str>;

/// The literal children of a node by level. Boxed, and only while there are
/// any: most nodes are leaves (a device's own topic), and an empty map inline
/// would cost each of them 48 bytes.
#[allow(clippy::box_collection)]
type Children = Option<Box<HashMap<Box<str>, Idx>>>;

#[derive(Debug)]
struct Node<K, V> {
    parent: Idx,
    label: Label,
    children: Children,
    /// The '+' child.
    plus: Option<Idx>,
    /// Subscriptions whose filter ends exactly at this node.
    exact: Option<Box<Subs<K, V>>>,
    /// Subscriptions whose filter is this node's path followed by '#'.
    multi: Option<Box<Subs<K, V>>>,
}

impl<K, V> Node<K, V> {
    fn new(parent: Idx, label: Label) -> Self {
        Node {
            parent,
            label,
            children: None,
            plus: None,
            exact: None,
            multi: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.children.is_none()
            && self.plus.is_none()
            && self.exact.is_none()
            && self.multi.is_none()
    }
}

/// The levels leading to a filter's node, and whether the filter ends in '#' there.
fn filter_path(filter: &Filter) -> (impl Iterator<Item = &str>, bool) {
    let tf = filter.topic_filter();
    let (path, multi) = match tf {
        "#" => (None, true),
        _ => match tf.strip_suffix("/#") {
            Some(p) => (Some(p), true),
            None => (Some(tf), false),
        },
    };
    (path.into_iter().flat_map(|p| p.split('/')), multi)
}

/// The subscription trie, generic over a session key `K` and subscription options `V`.
#[derive(Debug)]
pub struct SubscriptionTrie<K, V> {
    nodes: ChunkedVec<Node<K, V>>,
    free: Vec<Idx>,
    len: usize,
}

impl<K: Clone + Eq + Hash, V: Clone> Default for SubscriptionTrie<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash, V: Clone> SubscriptionTrie<K, V> {
    /// An empty trie.
    pub fn new() -> Self {
        let mut nodes = ChunkedVec::default();
        nodes.push(Node::new(ROOT, Label::default()));
        SubscriptionTrie {
            nodes,
            free: Vec::new(),
            len: 0,
        }
    }

    fn alloc(&mut self, parent: Idx, label: Label) -> Idx {
        let node = Node::new(parent, label);
        if let Some(i) = self.free.pop() {
            if let Some(slot) = self.nodes.get_mut(i) {
                *slot = node;
                return i;
            }
        }
        self.nodes.push(node)
    }

    fn child(&self, at: Idx, level: &str) -> Option<Idx> {
        let node = self.nodes.get(at)?;
        if level == "+" {
            node.plus
        } else {
            node.children.as_ref()?.get(level).copied()
        }
    }

    fn child_or_create(&mut self, at: Idx, level: &str) -> Idx {
        if let Some(c) = self.child(at, level) {
            return c;
        }
        let c = self.alloc(at, level.into());
        if let Some(node) = self.nodes.get_mut(at) {
            if level == "+" {
                node.plus = Some(c);
            } else {
                node.children
                    .get_or_insert_with(Box::default)
                    .insert(level.into(), c);
            }
        }
        c
    }

    fn slot_mut(&mut self, at: Idx, multi: bool) -> Option<&mut Option<Box<Subs<K, V>>>> {
        let node = self.nodes.get_mut(at)?;
        Some(if multi {
            &mut node.multi
        } else {
            &mut node.exact
        })
    }

    /// Adds or replaces the subscription of `key` to `filter`; returns the previous value if
    /// (filter, key) existed.
    pub fn insert(&mut self, filter: &Filter, key: K, value: V) -> Option<V> {
        let (levels, multi) = filter_path(filter);
        let mut at = ROOT;
        for level in levels {
            at = self.child_or_create(at, level);
        }
        let slot = self.slot_mut(at, multi)?;
        let prev = slot
            .get_or_insert_with(|| Box::new(Subs::new()))
            .insert(filter, key, value);
        if prev.is_none() {
            self.len += 1;
        }
        prev
    }

    /// Removes the subscription of `key` to `filter`; prunes nodes left empty. Returns the removed value.
    pub fn remove(&mut self, filter: &Filter, key: &K) -> Option<V> {
        let (levels, multi) = filter_path(filter);
        let mut at = ROOT;
        for level in levels {
            at = self.child(at, level)?;
        }
        let slot = self.slot_mut(at, multi)?;
        let subs = slot.as_mut()?;
        let value = subs.remove(filter, key)?;
        if subs.is_empty() {
            *slot = None;
        }
        self.len -= 1;
        self.prune(at);
        Some(value)
    }

    /// Frees `at` and its ancestors while they are empty.
    fn prune(&mut self, mut at: Idx) {
        while at != ROOT {
            let Some(node) = self.nodes.get_mut(at) else {
                return;
            };
            if !node.is_empty() {
                return;
            }
            let parent = node.parent;
            let label = std::mem::take(&mut node.label);
            if let Some(p) = self.nodes.get_mut(parent) {
                if &*label == "+" {
                    p.plus = None;
                } else if let Some(children) = &mut p.children {
                    children.remove(&label);
                    if children.is_empty() {
                        p.children = None;
                    }
                }
            }
            self.free.push(at);
            at = parent;
        }
    }

    /// Calls `visit(key, value, filter)` for every subscription matching `topic`: every ordinary
    /// subscription, and exactly one member (round-robin) of each matching shared group.
    /// A topic beginning with '$' is not matched by filters starting with '+' or '#'.
    /// A key subscribed through several matching filters is visited once per filter.
    pub fn for_each_match(&self, topic: &str, visit: impl FnMut(&K, &V, &Filter)) {
        self.for_each_accepted_match(topic, |_| true, visit);
    }

    /// [`SubscriptionTrie::for_each_match`] for the subscriptions whose value
    /// `accept`s this message: the others are skipped, and a shared group's turn
    /// goes to the next member that accepts it (none if no member does).
    pub fn for_each_accepted_match(
        &self,
        topic: &str,
        accept: impl Fn(&V) -> bool,
        mut visit: impl FnMut(&K, &V, &Filter),
    ) {
        let dollar = topic.starts_with('$');
        // (node, byte offset of the next level in `topic`, or None once all levels are consumed)
        // Inline: no allocation per message (a walk with more than 16 branches open spills to the heap).
        let mut stack: smallvec::SmallVec<[(Idx, Option<usize>); 16]> =
            smallvec::smallvec![(ROOT, Some(0))];
        while let Some((at, offset)) = stack.pop() {
            let Some(node) = self.nodes.get(at) else {
                continue;
            };
            let wildcards_ok = !(dollar && offset == Some(0));
            if wildcards_ok {
                if let Some(subs) = &node.multi {
                    subs.visit(&accept, &mut visit);
                }
            }
            let Some(start) = offset else {
                if let Some(subs) = &node.exact {
                    subs.visit(&accept, &mut visit);
                }
                continue;
            };
            let rest = topic.get(start..).unwrap_or("");
            let (level, next) = match rest.find('/') {
                Some(j) => (rest.get(..j).unwrap_or(""), Some(start + j + 1)),
                None => (rest, None),
            };
            if let Some(&c) = node.children.as_ref().and_then(|c| c.get(level)) {
                stack.push((c, next));
            }
            if wildcards_ok {
                if let Some(p) = node.plus {
                    stack.push((p, next));
                }
            }
        }
    }

    /// Number of (filter, key) subscriptions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of live trie nodes (including the root); for tests of pruning.
    #[cfg(test)]
    pub(crate) fn live_nodes(&self) -> usize {
        self.nodes.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests;
