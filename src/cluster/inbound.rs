//! Messages from other nodes: the NATS subscriptions for this node's
//! interest, and routing what they bring to local sessions.
//!
//! - One copy per node: every subscription of this node is in the queue
//!   group `tern.node.<node>`, so NATS hands a message that matches several
//!   of them (say `a/#` and `a/+`) to one only. Repeats that still come are
//!   dropped by their origin's sequence number.
//! - Order per origin: async-nats gives each subscription its own channel, so
//!   messages of two subscriptions can be read out of order. Every channel is
//!   drained in rounds until none has more (a waker per subscription says
//!   which have something), then what was collected is routed sorted by
//!   (origin, sequence): as the origin published it. A round is capped; past
//!   the cap only messages at or below what was collected before the last
//!   pass are routed (every earlier message of their origin is in by then),
//!   the rest wait for the next round, which routes them first.
//! - Batches: a NATS message may hold several messages of its subject's
//!   topic (`wire.rs`); each is collected as if it had come alone.
//! - No echo: the connection is `no_echo`, and a message of our own node is
//!   dropped anyway.
//! - Flow control: the syncs of other nodes (`window.rs`) come on a
//!   subscription of their own and are ordered with the messages; once every
//!   message of its origin before it is routed and what that routing stored
//!   is committed, a sync is confirmed (`confirm.rs`: at once when that is
//!   committed already, else by a task of its own, so routing goes on
//!   while the store commits). The confirm names the
//!   first sync of that origin seen here: the sender counts it for the syncs
//!   after that one only (a node just (re)started did not see what came
//!   before it subscribed).
//! - Marks: after each round, the last message routed per origin
//!   (`marks.rs`): a session moved here skips what it had where it was.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use async_nats::Subscriber;
use futures_util::Stream;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::confirm::{Confirm, Confirmer};
use super::fabric::{FabricStats, Interest};
use super::marks::RoutedMarks;
use super::origins::{self, origin_index, OriginState};
use super::subject::{filter_to_subjects, subject_to_topic};
use super::window::{decode_sync, SYNC_PREFIX};
use super::wire;
use super::Cluster;
use crate::core::commit::Commit;
use crate::core::message::Message;
use crate::core::peer_marks::PeerPosition;

/// Longest wait for NATS to answer the ping after interest changes.
const FLUSH_WAIT: Duration = Duration::from_millis(500);
use crate::core::router::Router;

/// Messages collected in one round before the capped rule applies.
const ROUND_CAP: usize = 4_096;
/// Subjects whose topic is remembered (`Topics`).
const TOPIC_CACHE: usize = 4_096;
/// Messages collected in a round from which the task yields after it even
/// with nothing more in (see `run`).
const YIELD_FROM: usize = 16;

/// Which subscriptions have been woken since last looked at.
#[derive(Debug, Default)]
struct Dirty {
    slots: Mutex<Vec<usize>>,
    notify: Notify,
}

impl Dirty {
    fn mark(&self, slot: usize) {
        self.slots.lock().push(slot);
        self.notify.notify_one();
    }

    /// Whether a subscription was woken since the last [`Dirty::take`].
    fn pending(&self) -> bool {
        !self.slots.lock().is_empty()
    }

    fn take(&self) -> Vec<usize> {
        let mut slots = std::mem::take(&mut *self.slots.lock());
        slots.sort_unstable();
        slots.dedup();
        slots
    }
}

struct SlotWaker {
    slot: usize,
    dirty: Arc<Dirty>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.dirty.mark(self.slot);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.dirty.mark(self.slot);
    }
}

struct Slot {
    subscriber: Subscriber,
    waker: Waker,
}

/// A message read from NATS, not yet routed.
struct Collected {
    origin: usize,
    seq: u64,
    item: Item,
}

enum Item {
    /// Shared already: sorting moves a pointer, routing takes it as it is.
    Message(Arc<Message>),
    /// A sync of the origin's window: confirmed on that reply subject once
    /// every earlier message is routed (sorted after a message of its number).
    Sync(async_nats::Subject),
}

impl Collected {
    fn order(&self) -> (usize, u64, bool) {
        (self.origin, self.seq, matches!(self.item, Item::Sync(_)))
    }
}

struct Inbound {
    cluster: Cluster,
    router: Arc<Router>,
    interest: Arc<Interest>,
    stats: Arc<FabricStats>,
    /// Per origin, the last message routed (after each round).
    marks: Arc<RoutedMarks>,
    queue_group: String,
    dirty: Arc<Dirty>,
    slots: Vec<Option<Slot>>,
    /// Slots of each filter with interest (one or two subjects).
    by_filter: HashMap<String, Vec<usize>>,
    origins: Vec<OriginState>,
    /// Captures that lost messages routed here (`Router::capture_hold`), as last seen.
    captures_lost: u64,
    /// Collected but held back (capped round): routed in a later round.
    held: Vec<Collected>,
    /// Syncs whose messages are routed, to confirm once committed.
    confirms: Vec<Confirm>,
    /// Confirms them (`confirm.rs`).
    confirmer: Confirmer,
    /// What the messages routed so far stored.
    stored: Commit,
    topics: Topics,
    /// Buffers of `round` and `drain`, empty between their calls.
    scratch: Vec<Collected>,
    incoming: Vec<async_nats::Message>,
    /// This node's start restored its sessions (as read this round).
    restored: bool,
}

pub(super) async fn run(
    cluster: Cluster,
    router: Arc<Router>,
    interest: Arc<Interest>,
    stats: Arc<FabricStats>,
    marks: Arc<RoutedMarks>,
    shutdown: CancellationToken,
) {
    let queue_group = format!("tern.node.{}", cluster.node());
    let confirmer = Confirmer::start(cluster.clone(), Arc::clone(&router));
    let mut inbound = Inbound {
        cluster,
        router,
        interest,
        stats,
        marks,
        queue_group,
        dirty: Arc::new(Dirty::default()),
        slots: Vec::new(),
        by_filter: HashMap::new(),
        origins: Vec::new(),
        held: Vec::new(),
        confirms: Vec::new(),
        confirmer,
        stored: Commit::NONE,
        captures_lost: 0,
        topics: Topics::default(),
        scratch: Vec::new(),
        incoming: Vec::new(),
        restored: false,
    };
    inbound.subscribe_syncs().await;
    loop {
        // Checked here too: under constant traffic the wait below is skipped.
        if shutdown.is_cancelled() {
            break;
        }
        if inbound.held.is_empty() {
            let interest = Arc::clone(&inbound.interest);
            let dirty = Arc::clone(&inbound.dirty);
            tokio::select! {
                () = dirty.notify.notified() => {}
                () = interest.changed.notified() => {}
                () = shutdown.cancelled() => break,
            }
        }
        // Read before the interest is applied: a restore's interest is
        // then subscribed before any sync this round confirms.
        inbound.restored = inbound.cluster.state().is_restored();
        inbound.apply_interest().await;
        let collected = inbound.round();
        inbound.send_confirms().await;
        // Let the connections a big round fed run before the next one (the
        // yield wakes the runtime's other worker to share them). After a
        // small one with nothing more in, waiting for the next wake-up
        // yields anyway: a yield there would wake that worker per message.
        if collected >= YIELD_FROM || !inbound.held.is_empty() || inbound.dirty.pending() {
            tokio::task::yield_now().await;
        }
    }
}

impl Inbound {
    /// Subscribes the subjects of filters that gained interest and drops those
    /// of filters that lost it.
    async fn apply_interest(&mut self) {
        let (changes, made) = self.interest.take_changes();
        if changes.is_empty() {
            return;
        }
        for (filter, wanted) in changes {
            let held = self.by_filter.contains_key(&filter);
            if wanted && !held {
                self.subscribe(filter).await;
            } else if !wanted && held {
                for slot in self.by_filter.remove(&filter).unwrap_or_default() {
                    // Dropping the subscriber unsubscribes it.
                    self.slots[slot] = None;
                    self.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        self.stats
            .filters
            .store(self.interest.filter_count() as u64, Ordering::Relaxed);
        // The server has the subscriptions once it answered a ping after
        // them: a session moving here waits for that (`interest_applied`).
        let flush = self.cluster.client().flush();
        if let Ok(Ok(())) = tokio::time::timeout(FLUSH_WAIT, flush).await {
            self.interest.applied.send_replace(made);
        }
    }

    /// The other nodes' syncs, on this connection like their messages.
    async fn subscribe_syncs(&mut self) {
        match self
            .cluster
            .client()
            .subscribe(format!("{SYNC_PREFIX}*"))
            .await
        {
            Ok(subscriber) => {
                self.add_slot(subscriber);
            }
            Err(e) => tracing::warn!(error = %e,
                "cluster: cannot subscribe for syncs; other nodes will wait for this one's confirmations"),
        }
    }

    /// Routed syncs, confirmed once committed.
    async fn send_confirms(&mut self) {
        self.confirmer.confirm(&mut self.confirms).await;
    }

    /// Gives a subscription a slot (woken into `dirty`); returns it.
    fn add_slot(&mut self, subscriber: Subscriber) -> usize {
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .unwrap_or_else(|| {
                self.slots.push(None);
                self.slots.len() - 1
            });
        let waker = Waker::from(Arc::new(SlotWaker {
            slot,
            dirty: Arc::clone(&self.dirty),
        }));
        self.slots[slot] = Some(Slot { subscriber, waker });
        // Never polled yet: look at it in the next round.
        self.dirty.mark(slot);
        slot
    }

    async fn subscribe(&mut self, filter: String) {
        let subjects = match filter_to_subjects(&filter) {
            Ok(subjects) => subjects,
            Err(e) => {
                tracing::warn!(filter = %filter, error = %e,
                    "cluster: no NATS subscription for this filter: messages published on other nodes will not reach it");
                return;
            }
        };
        let mut slots = Vec::with_capacity(subjects.len());
        for subject in subjects {
            let subscriber = match self
                .cluster
                .client()
                .queue_subscribe(subject.clone(), self.queue_group.clone())
                .await
            {
                Ok(subscriber) => subscriber,
                Err(e) => {
                    tracing::warn!(subject = %subject, error = %e, "cluster: cannot subscribe on NATS");
                    continue;
                }
            };
            let slot = self.add_slot(subscriber);
            self.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
            slots.push(slot);
        }
        self.by_filter.insert(filter, slots);
    }

    /// Drains the woken subscriptions until none has more (or the cap), then
    /// routes what may go, in origin order; returns how many it collected.
    fn round(&mut self) -> usize {
        let lost = self.router.capture_hold().failed;
        if lost != self.captures_lost {
            self.captures_lost = lost;
            origins::lost_here(&mut self.origins);
        }
        // Kept from round to round (empty): no buffer grows and is freed per round.
        let mut collected = std::mem::take(&mut self.scratch);
        collected.append(&mut self.held);
        // Per origin, the highest sequence collected before the last pass:
        // every earlier message of that origin was in its channel by then,
        // and the last pass drained every channel that had something.
        let mut watermark: Vec<u64> = Vec::new();
        let mut complete = false;
        loop {
            watermark.clear();
            watermark.resize(self.origins.len(), 0);
            for item in &collected {
                watermark[item.origin] = watermark[item.origin].max(item.seq);
            }
            let woken = self.dirty.take();
            if woken.is_empty() {
                complete = true;
                break;
            }
            let now = Instant::now();
            for slot in woken {
                self.drain(slot, now, &mut collected);
            }
            // Held messages are at or below the watermark: each round routes them.
            if collected.len() >= ROUND_CAP {
                break;
            }
        }
        // Mostly in order already (one origin, one subscription): checked first.
        if !collected.is_sorted_by_key(Collected::order) {
            collected.sort_by_key(Collected::order);
        }
        let count = collected.len();
        let mut received = 0;
        for item in collected.drain(..) {
            let may_route = complete || watermark.get(item.origin).is_some_and(|w| item.seq <= *w);
            if !may_route {
                self.held.push(item);
                continue;
            }
            let message = match item.item {
                Item::Message(message) => message,
                // Not confirmed before this node's sessions are restored
                // and their interest subscribed (nor taken as the first).
                Item::Sync(_) if !self.restored => continue,
                Item::Sync(reply) => {
                    if let Some(first) = self.origins[item.origin].vouch(item.seq) {
                        self.confirms.push((reply, item.seq, first, self.stored));
                    }
                    continue;
                }
            };
            let origin = &mut self.origins[item.origin];
            if item.seq <= origin.last_routed {
                self.stats.discarded.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            origin.last_routed = item.seq;
            received += 1;
            let at = PeerPosition {
                node: &origin.node,
                epoch: origin.epoch,
                seq: item.seq,
            };
            // Marked at once, not after the round (a session moving to
            // another node meanwhile takes these marks as what it had here),
            // and with its routing as one for the store's commits.
            let marks = &self.marks;
            let mark = || marks.routed(&origin.node, origin.epoch, item.seq);
            let published = self.router.publish_from_peer_marked(message, at, mark);
            self.stored.include(published.commit);
        }
        self.stats.received.fetch_add(received, Ordering::Relaxed);
        collected.shrink_to(4 * ROUND_CAP);
        self.scratch = collected;
        count
    }

    /// Reads everything `slot`'s subscription has now (leaving its waker set).
    fn drain(&mut self, slot: usize, now: Instant, out: &mut Vec<Collected>) {
        let Some(Some(entry)) = self.slots.get_mut(slot) else {
            return; // unsubscribed since it was woken
        };
        let waker = entry.waker.clone();
        let mut cx = Context::from_waker(&waker);
        let mut messages = std::mem::take(&mut self.incoming);
        // Until Pending (the waker is then set) or closed (unsubscribed).
        while let Poll::Ready(Some(message)) = Pin::new(&mut entry.subscriber).poll_next(&mut cx) {
            messages.push(message);
        }
        for message in messages.drain(..) {
            self.collect(message, now, out);
        }
        messages.shrink_to(ROUND_CAP);
        self.incoming = messages;
    }

    fn collect(&mut self, message: async_nats::Message, now: Instant, out: &mut Vec<Collected>) {
        if let Some(node) = message.subject.strip_prefix(SYNC_PREFIX) {
            self.collect_sync(node, &message, out);
            return;
        }
        let Some(topic) = self.topics.topic_of(&message.subject) else {
            self.discard("a subject that is not a topic");
            return;
        };
        let before = out.len();
        let own = &**self.cluster.node();
        let origins = &mut self.origins;
        let mut echoes = 0;
        // A batch has one origin: looked up once, not per message.
        let mut last: Option<(&str, u64, usize)> = None;
        let decoded = wire::decode_each(&topic, &message.payload, now, |decoded, origin| {
            let index = match last {
                // A batch's entries share one `node` slice: most often a pointer compare.
                Some((node, epoch, index))
                    if epoch == origin.epoch
                        && (std::ptr::eq(node, origin.node) || node == origin.node) =>
                {
                    index
                }
                _ => {
                    let index = origin_index(origins, own, origin.node, origin.epoch);
                    last = Some((origin.node, origin.epoch, index));
                    index
                }
            };
            if origins[index].own {
                // no_echo should make this impossible; a second node with our name would not.
                echoes += 1;
                return;
            }
            out.push(Collected {
                origin: index,
                seq: origin.seq,
                item: Item::Message(Arc::new(decoded)),
            });
        });
        if decoded.is_err() {
            out.truncate(before);
            self.discard("a payload that is not a Tern message (or of another version)");
            return;
        }
        for _ in 0..echoes {
            self.discard("a message from a node with this node's name");
        }
    }

    fn collect_sync(
        &mut self,
        node: &str,
        message: &async_nats::Message,
        out: &mut Vec<Collected>,
    ) {
        if node == &**self.cluster.node() {
            return; // no_echo should make this impossible
        }
        let (Some((epoch, seq)), Some(reply)) = (decode_sync(&message.payload), &message.reply)
        else {
            self.discard("a sync that is not a Tern sync (or of another version)");
            return;
        };
        out.push(Collected {
            origin: origin_index(&mut self.origins, self.cluster.node(), node, epoch),
            seq,
            item: Item::Sync(reply.clone()),
        });
    }

    fn discard(&self, what: &'static str) {
        let total = self.stats.discarded.fetch_add(1, Ordering::Relaxed) + 1;
        if total == 1 || total.is_multiple_of(1000) {
            tracing::warn!(total, what, "cluster: a message from NATS was dropped");
        }
    }
}

/// Topics of the subjects seen lately: a subject is decoded once, and every
/// message of it shares one topic (`Arc<str>`). Emptied when it reaches
/// [`TOPIC_CACHE`] subjects (many distinct topics cost what they did before).
#[derive(Default)]
struct Topics {
    by_subject: HashMap<Box<str>, Arc<str>>,
}

impl Topics {
    fn topic_of(&mut self, subject: &str) -> Option<Arc<str>> {
        if let Some(topic) = self.by_subject.get(subject) {
            return Some(Arc::clone(topic));
        }
        let topic: Arc<str> = Arc::from(subject_to_topic(subject)?);
        if self.by_subject.len() >= TOPIC_CACHE {
            self.by_subject.clear();
        }
        self.by_subject.insert(subject.into(), Arc::clone(&topic));
        Some(topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_is_pending_from_a_wake_until_taken() {
        let dirty = Dirty::default();
        assert!(!dirty.pending(), "nothing woken yet");
        dirty.mark(3);
        dirty.mark(1);
        dirty.mark(3);
        assert!(dirty.pending());
        assert_eq!(dirty.take(), vec![1, 3], "sorted, each slot once");
        assert!(!dirty.pending(), "taken");
    }

    #[test]
    fn a_subject_is_decoded_once_and_its_topic_shared() {
        let mut topics = Topics::default();
        let first = topics.topic_of("tern.m.a.b").expect("a topic");
        assert_eq!(&*first, "a/b");
        let again = topics.topic_of("tern.m.a.b").expect("a topic");
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(topics.topic_of("other.subject"), None);
        assert_eq!(
            topics.by_subject.len(),
            1,
            "what is not a topic is not kept"
        );
        for i in 0..TOPIC_CACHE + 10 {
            assert_eq!(
                &*topics.topic_of(&format!("tern.m.n.{i}")).expect("a topic"),
                format!("n/{i}")
            );
        }
        assert!(topics.by_subject.len() <= TOPIC_CACHE, "bounded");
    }
}
