//! Named point-to-point queues: each message goes to exactly one consumer.
//!
//! A queue is reached through the core topic `$queue/<name>`: publishing to it
//! enqueues, subscribing to it makes the session a consumer (MQTT clients use
//! that topic directly; STOMP's `/queue/<name>` maps onto it).
//!
//! Rules, the invariants every method keeps:
//! - Consumers take turns (round-robin); a consumer whose session is offline,
//!   whose ack window is full, or whose session refused the delivery is skipped.
//! - A message with no consumer able to take it waits in `ready`, oldest first.
//!   `ready` plus unacknowledged messages are bounded per queue; one more is
//!   refused with [`QueueError::Full`] (the router logs it, STOMP answers ERROR):
//!   never a silent drop.
//! - Sessions with an ack window (STOMP: `DeliveryStyle::queue_ack_window`) keep
//!   each delivered message unacknowledged until the adapter calls [`QueueRegistry::ack`]
//!   (gone) or [`QueueRegistry::nack`] (back to the front of `ready`). When such a
//!   consumer leaves, its unacknowledged messages go back to the front, in order.
//! - Sessions without an ack window (MQTT) are done with a message once it is in
//!   their session: the session's own QoS flow carries it from there. When such a
//!   session ends with queue messages still pending or unacknowledged by its
//!   client, the router gives them back with [`QueueRegistry::requeue`].
//! - Expired messages are discarded when they reach the front of `ready`.
//! - A consumer with a selector gets only the messages it matches; the others
//!   wait in `ready` for another consumer (JMS), and later messages pass them.
//!
//! - Pull consumers (HTTP) take messages out of `ready` under a lease
//!   (`lease.rs`): a leased message counts towards the queue's bound, stays in
//!   the store until its lease is acked, and goes back to the front of `ready`
//!   when the lease is nacked (after its delay) or expires.
//!
//! Examples: `$queue/jobs` is queue `jobs`; `$queue/a/b` is queue `a/b`;
//! `$queue/` (no name), `$queue/a/+` and `$queue/#` are not queues (the latter two
//! stay ordinary filters that match nothing a queue receives).

mod cluster;
mod dispatch;
mod lease;

pub use cluster::{shared_group_filter, shared_group_key};
pub use lease::{ArrivalWatch, LeaseError, Leased};

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use crate::core::cluster_queue::ClusterQueues;
use crate::core::commit::Commit;
use crate::core::content::MessageView;
use crate::core::exceptions::Exceptions;
use crate::core::message::{Message, QoS};
use crate::core::router::persist::message_record;
use crate::core::selector::Selector;
use crate::core::session::Session;
use crate::store::{Store, StoreOp};

/// The topic prefix that addresses a queue in the core.
pub const QUEUE_PREFIX: &str = "$queue/";

/// The queue a core topic or filter names: `$queue/jobs` → `jobs`. None for any
/// other topic, an empty name, or a name with a wildcard.
pub fn queue_name(topic: &str) -> Option<&str> {
    let name = topic.strip_prefix(QUEUE_PREFIX)?;
    if name.is_empty() || name.contains(['+', '#']) {
        return None;
    }
    Some(name)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("queue {queue} is full: {max} messages are waiting or unacknowledged")]
    Full { queue: String, max: usize },
}

/// Messages waiting and unacknowledged in one queue (for tests and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub ready: usize,
    pub unacked: usize,
    pub consumers: usize,
}

/// A message in a queue, with its arrival order so redeliveries keep it.
#[derive(Debug)]
struct Entry {
    seq: u64,
    message: Arc<Message>,
}

#[derive(Debug)]
struct Unacked {
    seq: u64,
    message: Arc<Message>,
    /// The adapter has written it to its client (see [`QueueRegistry::claim`]).
    claimed: bool,
}

#[derive(Debug)]
struct Consumer {
    session: Arc<Session>,
    qos: QoS,
    subscription_id: Option<u32>,
    /// Only messages it matches are handed to this consumer; the others wait
    /// for another consumer (JMS).
    selector: Option<Arc<Selector>>,
    /// Topics the ACL keeps from this consumer (a shared group's member whose
    /// filter overlaps deny rules): another member gets them.
    exceptions: Exceptions,
    /// Some(n): at most n unacknowledged messages; None: done once handed over.
    window: Option<usize>,
    unacked: VecDeque<Unacked>,
}

impl Consumer {
    fn can_take(&self) -> bool {
        self.session.is_connected() && self.window.is_none_or(|max| self.unacked.len() < max)
    }

    fn wants(&self, message: &Message, view: &MessageView<'_>) -> bool {
        !self.exceptions.excludes(&message.topic)
            && self
                .selector
                .as_ref()
                .is_none_or(|selector| selector.matches(view))
    }

    /// Whether it takes only some messages (a selector, or ACL exceptions).
    fn is_selective(&self) -> bool {
        self.selector.is_some() || !self.exceptions.is_empty()
    }

    fn position(&self, message: &Arc<Message>) -> Option<usize> {
        self.unacked
            .iter()
            .position(|u| Arc::ptr_eq(&u.message, message))
    }
}

#[derive(Debug)]
struct Queue {
    /// `$queue/<name>`: the filter deliveries carry, shared by all of them.
    filter: Arc<str>,
    ready: VecDeque<Entry>,
    consumers: Vec<Consumer>,
    next_seq: u64,
    /// Index of the consumer whose turn is next.
    next: usize,
    /// Where waiting and unacknowledged messages are kept across restarts.
    store: Option<QueueStore>,
    /// Messages pull consumers hold under a lease.
    leases: lease::Leases,
}

/// A queue's handle on the store: a message is stored from enqueue until it is
/// acknowledged (or handed to a consumer session that carries it itself).
#[derive(Debug, Clone)]
struct QueueStore {
    store: Arc<Store>,
    name: String,
}

impl QueueStore {
    fn put(&self, seq: u64, message: &Message) -> Commit {
        Commit::of_ticket(self.store.submit([StoreOp::PutQueued {
            queue: self.name.clone(),
            seq,
            record: message_record(message),
        }]))
    }

    fn delete(&self, seq: u64) -> Commit {
        Commit::of_ticket(self.store.submit([StoreOp::DeleteQueued {
            queue: self.name.clone(),
            seq,
        }]))
    }
}

impl Queue {
    fn new(name: &str, store: Option<&Arc<Store>>) -> Queue {
        Queue {
            filter: match shared_group_filter(name) {
                Some(shared) => Arc::from(shared),
                None => Arc::from(format!("{QUEUE_PREFIX}{name}")),
            },
            ready: VecDeque::new(),
            consumers: Vec::new(),
            next_seq: 1,
            next: 0,
            store: store.map(|store| QueueStore {
                store: Arc::clone(store),
                name: name.to_string(),
            }),
            leases: lease::Leases::default(),
        }
    }

    fn forget(&self, seq: u64) -> Commit {
        if seq == cluster::FROM_CLUSTER {
            return Commit::NONE;
        }
        self.store
            .as_ref()
            .map_or(Commit::NONE, |store| store.delete(seq))
    }

    fn depth(&self) -> QueueDepth {
        QueueDepth {
            ready: self.ready.len(),
            unacked: self.consumers.iter().map(|c| c.unacked.len()).sum(),
            consumers: self.consumers.len(),
        }
    }

    fn held(&self) -> usize {
        self.ready.len()
            + self.leases.len()
            + self
                .consumers
                .iter()
                .map(|c| c.unacked.len())
                .sum::<usize>()
    }

    fn is_idle(&self) -> bool {
        self.ready.is_empty() && self.consumers.is_empty() && self.leases.is_empty()
    }

    fn consumer(&mut self, session: &Arc<Session>) -> Option<&mut Consumer> {
        self.consumers
            .iter_mut()
            .find(|c| Arc::ptr_eq(&c.session, session))
    }
}

/// Every queue, by name. Queues are created on first use and forgotten when
/// they hold no message and have no consumer.
#[derive(Debug)]
pub struct QueueRegistry {
    queues: Mutex<HashMap<Arc<str>, Queue>>,
    store: Option<Arc<Store>>,
    /// Messages one queue may hold (waiting plus unacknowledged); changed live on reload.
    max_messages: AtomicUsize,
    /// Pull consumers waiting for a message, and the next lease id (`lease.rs`).
    pulls: lease::PullState,
    /// Cluster mode: the cluster holds every queue (`cluster.rs`).
    cluster: OnceLock<Arc<dyn ClusterQueues>>,
}

impl QueueRegistry {
    pub fn new(max_messages: usize) -> QueueRegistry {
        QueueRegistry {
            queues: Mutex::new(HashMap::new()),
            store: None,
            max_messages: AtomicUsize::new(max_messages.max(1)),
            pulls: lease::PullState::default(),
            cluster: OnceLock::new(),
        }
    }

    /// A new cap for every queue (config reload); a queue over it takes no more until below.
    pub fn set_max_messages(&self, max: usize) {
        self.max_messages.store(max.max(1), Ordering::Relaxed);
    }

    /// Keeps queued messages in `store` from now on.
    pub fn set_store(&mut self, store: Arc<Store>) {
        self.store = Some(store);
    }

    /// A stored message brought back at start, in stored order (not written again).
    pub(crate) fn restore(&self, name: &str, seq: u64, message: Arc<Message>) {
        let mut queues = self.queues.lock();
        let queue = queues
            .entry(Arc::from(name))
            .or_insert_with(|| Queue::new(name, self.store.as_ref()));
        queue.next_seq = queue.next_seq.max(seq + 1);
        queue.ready.push_back(Entry { seq, message });
    }

    /// Adds a message at the back of queue `name` and hands out what can be
    /// handed out; returns the commit of what that stored.
    pub fn enqueue(&self, name: &str, message: Arc<Message>) -> Result<Commit, QueueError> {
        if let Some(cluster) = self.cluster.get() {
            cluster.enqueue(name, &message)?;
            return Ok(Commit::NONE);
        }
        let mut queues = self.queues.lock();
        let queue = queues
            .entry(Arc::from(name))
            .or_insert_with(|| Queue::new(name, self.store.as_ref()));
        let max = self.max_messages.load(Ordering::Relaxed);
        if queue.held() >= max {
            let error = QueueError::Full {
                queue: name.to_string(),
                max,
            };
            if queue.is_idle() {
                queues.remove(name);
            }
            return Err(error);
        }
        let seq = queue.next_seq;
        queue.next_seq += 1;
        let mut commit = Commit::NONE;
        if let Some(store) = &queue.store {
            commit = store.put(seq, &message);
        }
        queue.ready.push_back(Entry { seq, message });
        commit.include(queue.dispatch());
        let waiting = !queue.ready.is_empty();
        drop(queues);
        if waiting {
            self.pulls.arrived();
        }
        Ok(commit)
    }

    /// Gives messages back at the front of the queue (a session ended before its
    /// client acknowledged them). Never refused: they were counted before.
    pub fn requeue(&self, name: &str, messages: impl DoubleEndedIterator<Item = Arc<Message>>) {
        if let Some(cluster) = self.cluster.get() {
            cluster.give_back(name, messages.collect());
            return;
        }
        let mut queues = self.queues.lock();
        let queue = queues
            .entry(Arc::from(name))
            .or_insert_with(|| Queue::new(name, self.store.as_ref()));
        for message in messages.rev() {
            // Stored again: the session that had it did not finish it.
            let seq = queue.next_seq;
            queue.next_seq += 1;
            if let Some(store) = &queue.store {
                store.put(seq, &message);
            }
            queue.ready.push_front(Entry { seq, message });
        }
        queue.dispatch();
        let waiting = !queue.ready.is_empty();
        drop(queues);
        if waiting {
            self.pulls.arrived();
        }
    }

    /// Makes `session` a consumer of queue `name` (or updates its QoS,
    /// selector and exceptions), then dispatches. Exceptions come only with a
    /// shared group's member (cluster mode): a queue has none.
    pub fn add_consumer(
        &self,
        name: &str,
        session: &Arc<Session>,
        qos: QoS,
        subscription_id: Option<u32>,
        selector: Option<Arc<Selector>>,
        exceptions: Exceptions,
    ) {
        let window = session.delivery_style().queue_ack_window;
        let mut queues = self.queues.lock();
        let queue = queues
            .entry(Arc::from(name))
            .or_insert_with(|| Queue::new(name, self.store.as_ref()));
        match queue.consumer(session) {
            Some(consumer) => {
                consumer.qos = qos;
                consumer.subscription_id = subscription_id;
                consumer.selector = selector;
                consumer.exceptions = exceptions;
            }
            None => queue.consumers.push(Consumer {
                session: Arc::clone(session),
                qos,
                subscription_id,
                selector,
                exceptions,
                window,
                unacked: VecDeque::new(),
            }),
        }
        if let Some(cluster) = self.cluster.get() {
            cluster.consumers_changed(name, queue.consumers.len());
        }
        queue.dispatch();
    }

    /// Removes `session` from queue `name`; its unacknowledged messages go back to
    /// the front of the queue. False if it was not a consumer.
    pub fn remove_consumer(&self, name: &str, session: &Arc<Session>) -> bool {
        let mut queues = self.queues.lock();
        let Some(queue) = queues.get_mut(name) else {
            return false;
        };
        let Some(index) = queue
            .consumers
            .iter()
            .position(|c| Arc::ptr_eq(&c.session, session))
        else {
            return false;
        };
        let consumer = queue.consumers.remove(index);
        if queue.next > index {
            queue.next -= 1;
        }
        if queue.next >= queue.consumers.len() {
            queue.next = 0;
        }
        let mut given_back: Vec<Unacked> = consumer.unacked.into();
        given_back.sort_by_key(|u| u.seq);
        if let Some(cluster) = self.cluster.get() {
            cluster.consumers_changed(name, queue.consumers.len());
            cluster.give_back(name, given_back.into_iter().map(|u| u.message).collect());
        } else {
            for Unacked { seq, message, .. } in given_back.into_iter().rev() {
                queue.ready.push_front(Entry { seq, message });
            }
        }
        queue.dispatch();
        let waiting = !queue.ready.is_empty();
        if queue.is_idle() {
            queues.remove(name);
        }
        drop(queues);
        if waiting {
            self.pulls.arrived();
        }
        true
    }

    /// Marks an unacknowledged message as written to the client. False when the
    /// queue no longer expects `session` to handle it (given back meanwhile) or it
    /// was claimed already: the adapter then must not write it.
    pub fn claim(&self, name: &str, session: &Arc<Session>, message: &Arc<Message>) -> bool {
        let mut queues = self.queues.lock();
        let Some(consumer) = queues.get_mut(name).and_then(|q| q.consumer(session)) else {
            return false;
        };
        match consumer
            .unacked
            .iter_mut()
            .find(|u| Arc::ptr_eq(&u.message, message) && !u.claimed)
        {
            Some(unacked) => {
                unacked.claimed = true;
                true
            }
            None => false,
        }
    }

    /// The consumer is done with the message: it leaves the queue. The commit
    /// of its removal from the store, or None if unknown.
    pub fn ack(
        &self,
        name: &str,
        session: &Arc<Session>,
        message: &Arc<Message>,
    ) -> Option<Commit> {
        let mut queues = self.queues.lock();
        let queue = queues.get_mut(name)?;
        let consumer = queue.consumer(session)?;
        let index = consumer.position(message)?;
        let mut commit = Commit::NONE;
        if let Some(done) = consumer.unacked.remove(index) {
            commit = queue.forget(done.seq);
        }
        // A slot opened in this consumer's window.
        commit.include(queue.dispatch());
        if queue.is_idle() {
            queues.remove(name);
        }
        Some(commit)
    }

    /// The consumer refused the message: it goes back to the front of the queue
    /// for the next consumer in turn (possibly the same one). The commit of
    /// what handing it out again stored, or None if unknown.
    pub fn nack(
        &self,
        name: &str,
        session: &Arc<Session>,
        message: &Arc<Message>,
    ) -> Option<Commit> {
        let mut queues = self.queues.lock();
        let queue = queues.get_mut(name)?;
        let consumer = queue.consumer(session)?;
        let index = consumer.position(message)?;
        if let Some(Unacked { seq, message, .. }) = consumer.unacked.remove(index) {
            match self.cluster.get() {
                // Back to the cluster: the next consumer may be on another node.
                Some(cluster) => cluster.give_back(name, vec![message]),
                None => queue.ready.push_front(Entry { seq, message }),
            }
        }
        let commit = queue.dispatch();
        let waiting = !queue.ready.is_empty();
        drop(queues);
        if waiting {
            self.pulls.arrived();
        }
        Some(commit)
    }

    /// Dispatches every queue `session` consumes (its connection came back).
    pub fn dispatch_for(&self, session: &Arc<Session>) {
        let mut queues = self.queues.lock();
        for queue in queues.values_mut() {
            if queue
                .consumers
                .iter()
                .any(|c| Arc::ptr_eq(&c.session, session))
            {
                queue.dispatch();
            }
        }
    }

    pub fn depth(&self, name: &str) -> QueueDepth {
        let queues = self.queues.lock();
        queues
            .get(name)
            .map_or_else(QueueDepth::default, Queue::depth)
    }

    /// Every queue's name and depth, by name (for operators; takes the registry lock once).
    pub fn depths(&self) -> Vec<(String, QueueDepth)> {
        let queues = self.queues.lock();
        let mut out: Vec<(String, QueueDepth)> = queues
            .iter()
            .map(|(name, q)| (name.to_string(), q.depth()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn queue_count(&self) -> usize {
        self.queues.lock().len()
    }
}

#[cfg(test)]
mod tests;
