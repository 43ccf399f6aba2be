//! Routing itself: the subscription trie, the retained messages and the
//! point-to-point queues; publish → trie match → deliver to sessions, the one
//! place messages are routed, whatever protocol they came from.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;

use super::persist::{MessageSlot, Persistence, RetainedOrigin};
use super::wakes::Wakes;
use super::{PublishRefused, Published, RouterStats};
use crate::core::commit::Commit;
use crate::core::content::MessageView;
use crate::core::exceptions::Exceptions;
use crate::core::fabric::{is_fabric_filter, Fabric};
use crate::core::message::{Delivery, Message, QoS};
use crate::core::peer_marks::PeerPosition;
use crate::core::queue::{queue_name, QueueRegistry};
use crate::core::retained_backlog::RetainedBatch;
use crate::core::retained_set::{RetainedFull, RetainedLimits, RetainedSet};
use crate::core::selector::SelectorMemo;
use crate::core::session::{PushOutcome, Session, SessionRef, SubscriptionOptions};
use crate::core::topic::Filter;
use crate::core::trie::SubscriptionTrie;

#[derive(Debug)]
pub(crate) struct Routing {
    /// Each subscription's options by filter; a match gets the filter text from
    /// the trie, shared rather than re-allocated for every delivery.
    pub(super) subscriptions: RwLock<SubscriptionTrie<SessionRef, SubscriptionOptions>>,
    /// Shared with the retained batches of new subscriptions, which skip what was
    /// replaced since they were made.
    retained: Arc<RwLock<RetainedSet>>,
    /// Point-to-point queues, reached as `$queue/<name>`.
    queues: QueueRegistry,
    /// The other nodes (cluster mode): told of each filter sessions add or drop.
    fabric: OnceLock<Arc<dyn Fabric>>,
    /// Sessions moving here from another node, until attached (`capture.rs`).
    pub(super) captures: super::capture::Captures,
}

/// Where a routed message comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source<'a> {
    /// Published on this node (a client, a will).
    Here,
    /// The cluster's shared state: a retained change another node made.
    Cluster,
    /// Another node's message, at its place in that node's order: not
    /// routed to a session that had it already (`core::peer_marks`).
    Peer(PeerPosition<'a>),
}

impl Source<'_> {
    fn retained(self) -> RetainedOrigin {
        match self {
            Source::Here => RetainedOrigin::Here,
            Source::Cluster | Source::Peer(_) => RetainedOrigin::Cluster,
        }
    }
}

/// The matching subscriptions of one message.
pub(super) type Targets = smallvec::SmallVec<[Target; 4]>;

/// One matching subscription of one session, before merging.
pub(super) struct Target {
    session: Arc<Session>,
    qos: QoS,
    retain: bool,
    subscription_id: Option<u32>,
    filter: Arc<str>,
}

impl Routing {
    pub(crate) fn new(queues: QueueRegistry) -> Routing {
        Routing {
            subscriptions: RwLock::new(SubscriptionTrie::new()),
            retained: Arc::new(RwLock::new(RetainedSet::new(RetainedLimits::default()))),
            queues,
            fabric: OnceLock::new(),
            captures: super::capture::Captures::default(),
        }
    }

    /// Joins the cluster fabric (once, before serving); false if one was set already.
    pub(crate) fn set_fabric(&self, fabric: Arc<dyn Fabric>) -> bool {
        self.fabric.set(fabric).is_ok()
    }

    pub(crate) fn fabric(&self) -> Option<&Arc<dyn Fabric>> {
        self.fabric.get()
    }

    /// Tells the fabric of a filter a session added or dropped (not queues,
    /// shared subscriptions or `$SYS`: see `is_fabric_filter`).
    pub(super) fn note_interest(&self, filter: &Filter, added: bool) {
        let Some(fabric) = self.fabric.get() else {
            return;
        };
        if is_fabric_filter(filter.as_str()) {
            if added {
                fabric.interest_added(filter.as_str());
            } else {
                fabric.interest_removed(filter.as_str());
            }
        }
    }

    pub(crate) fn queues(&self) -> &QueueRegistry {
        &self.queues
    }

    /// Adds or replaces a subscription (nothing is stored); returns true if the
    /// session already had this filter.
    pub(crate) fn subscribe(
        &self,
        session: &Arc<Session>,
        filter: Filter,
        options: SubscriptionOptions,
    ) -> bool {
        if let Some(queue) = self.queues.consumed_by(filter.as_str()) {
            self.queues.add_consumer(
                &queue,
                session,
                options.qos,
                options.subscription_id,
                options.selector.clone(),
                options.exceptions.clone(),
            );
            return session.add_subscription(filter, options);
        }
        let key = SessionRef(Arc::clone(session));
        self.subscriptions
            .write()
            .insert(&filter, key, options.clone());
        let interest = self.fabric.get().is_some().then(|| filter.clone());
        let existed = session.add_subscription(filter, options);
        if let (false, Some(filter)) = (existed, interest) {
            self.note_interest(&filter, true);
        }
        existed
    }

    /// Removes a subscription (nothing is stored); false if the session had no such filter.
    pub(crate) fn unsubscribe(&self, session: &Arc<Session>, raw_filter: &str) -> bool {
        match session.remove_subscription(raw_filter) {
            Some(filter) => {
                if let Some(queue) = self.queues.consumed_by(filter.as_str()) {
                    self.queues.remove_consumer(&queue, session);
                    return true;
                }
                let key = SessionRef(Arc::clone(session));
                self.subscriptions.write().remove(&filter, &key);
                self.note_interest(&filter, false);
                true
            }
            None => false,
        }
    }

    /// Removes every subscription of `session` (it ends, or starts clean).
    pub(crate) fn drop_subscriptions(&self, session: &Arc<Session>) {
        let filters = session.take_subscriptions();
        self.release_queues(session, &filters);
        if filters.is_empty() {
            return;
        }
        let key = SessionRef(Arc::clone(session));
        {
            let mut trie = self.subscriptions.write();
            for filter in &filters {
                trie.remove(filter, &key);
            }
        }
        for filter in &filters {
            self.note_interest(filter, false);
        }
    }

    pub(crate) fn subscription_count(&self) -> usize {
        self.subscriptions.read().len()
    }

    pub(crate) fn set_retained_limits(&self, limits: RetainedLimits) {
        self.retained.write().set_limits(limits);
    }

    /// A stored retained message brought back at start (not refused by the caps:
    /// it was accepted once).
    pub(crate) fn restore_retained(&self, message: Arc<Message>) {
        self.retained.write().keep_unchecked(message);
    }

    /// Retained messages matching `filter`, unexpired, in topic order of the
    /// index walk; those on topics `exceptions` name are left out.
    pub(crate) fn retained_matching(
        &self,
        filter: &Filter,
        exceptions: &Exceptions,
    ) -> Vec<Arc<Message>> {
        let now = std::time::Instant::now();
        let mut out = Vec::new();
        self.retained
            .read()
            .for_each_match(filter, |topic, message| {
                if !message.is_expired(now) && !exceptions.excludes(topic) {
                    out.push(Arc::clone(message));
                }
            });
        out
    }

    /// Hands `session` retained messages for a new subscription, to be sent at
    /// the client's pace; returns how many expired ones were passed over.
    pub(crate) fn send_retained(
        &self,
        session: &Session,
        filter: &Filter,
        options: &SubscriptionOptions,
        messages: Vec<Arc<Message>>,
    ) -> usize {
        if messages.is_empty() {
            return 0;
        }
        session.queue_retained(RetainedBatch::new(
            messages,
            options.qos,
            options.subscription_id.into_iter().collect(),
            filter.shared_str(),
            Arc::clone(&self.retained),
        ))
    }

    /// Every retained message, `$` topics included, expired ones left out.
    pub(crate) fn retained_all(&self) -> Vec<Arc<Message>> {
        let now = std::time::Instant::now();
        let mut out = Vec::new();
        self.retained.read().for_each(|_, message| {
            if !message.is_expired(now) {
                out.push(Arc::clone(message));
            }
        });
        out
    }

    /// Sets (non-empty payload) or clears the retained message of
    /// `message.topic` in the index only, delivering nothing: a change the
    /// cluster applies everywhere, already delivered where it was published.
    pub(crate) fn apply_retained(&self, message: Arc<Message>, persistence: &Persistence) {
        let mut retained = self.retained.write();
        if message.payload.is_empty() {
            if retained.clear(&message.topic).is_some() {
                persistence.retained(&message.topic, None, RetainedOrigin::Cluster);
            }
        } else {
            persistence.retained(&message.topic, Some(&message), RetainedOrigin::Cluster);
            retained.keep_unchecked(message);
        }
    }

    /// Removes the retained message of `topic`; true if there was one.
    pub(crate) fn clear_retained(&self, topic: &str) -> bool {
        self.retained.write().clear(topic).is_some()
    }

    pub(crate) fn retained_count(&self) -> usize {
        self.retained.read().len()
    }

    pub(crate) fn retained_bytes(&self) -> usize {
        self.retained.read().bytes()
    }

    /// Routes one message (see `Router::publish`); with `refuse_when_full`, a
    /// QoS 1/2 message that a matching session's full queue refuses reaches nobody.
    /// A retained message from the cluster (`source`) is kept whatever the caps
    /// (another node accepted it) and not shared again; another node's
    /// message skips the sessions that had it already (moved here from a
    /// node that routed it to them).
    ///
    /// The connections it queued deliveries for are woken when the
    /// returned [`Wakes`] is dropped: after the caller handed the message on
    /// (see `wakes.rs`).
    pub(crate) fn route(
        &self,
        message: Arc<Message>,
        json: Option<serde_json::Value>,
        refuse_when_full: bool,
        source: Source<'_>,
        persistence: &Persistence,
        stats: &RouterStats,
    ) -> Result<(Published, Wakes), PublishRefused> {
        let origin = source.retained();
        if queue_name(&message.topic).is_some() {
            let topic = Arc::clone(&message.topic);
            let mut commit = Commit::NONE;
            if let Some(queue) = queue_name(&topic) {
                commit = self.queues.enqueue(queue, message)?;
            }
            return Ok((Published { matched: 1, commit }, Wakes::default()));
        }
        let mut commit = Commit::NONE;
        let targets = {
            let trie = self.subscriptions.read();
            // A session moving here takes what matches it from its capture
            // (`capture.rs`) until it is attached.
            let (captured, held) = self.capture(&message, &source);
            commit.include(held);
            let targets = Self::targets(&trie, &message, json, &source, &captured, None);
            if refuse_when_full && message.qos != QoS::AtMostOnce {
                // Checked before anything is kept, so a refused message reaches nobody.
                let size = message.topic.len() + message.payload.len();
                if let Some(full) = targets.iter().find(|t| t.session.refuses(size)) {
                    return Err(PublishRefused::SubscriberFull {
                        client_id: full.session.client_id.to_string(),
                    });
                }
            }
            // Still under the trie's read lock: a concurrent subscriber is either a
            // target already or subscribes after this and finds the retained message.
            if message.retain {
                let mut retained = self.retained.write();
                let value = if message.payload.is_empty() {
                    retained.clear(&message.topic);
                    None
                } else if origin == RetainedOrigin::Cluster {
                    retained.keep_unchecked(Arc::clone(&message));
                    Some(&*message)
                } else {
                    // Refused before anything is kept or delivered.
                    if let Err(full) = retained.keep(&message) {
                        drop(retained);
                        note_retained_refused(stats, &message, &full);
                        return Err(full.into());
                    }
                    Some(&*message)
                };
                commit.include(persistence.retained(&message.topic, value, origin));
            }
            targets
        };
        if targets.is_empty() && message.publisher.is_some() {
            stats.messages_unmatched.fetch_add(1, Ordering::Relaxed);
        }
        let mut wakes = Wakes::default();
        let (delivered, pushed) = Self::deliver(&message, targets, stats, &mut wakes);
        commit.include(pushed);
        let published = Published {
            matched: delivered,
            commit,
        };
        Ok((published, wakes))
    }

    /// The subscriptions `message` reaches in `trie`, one per session and
    /// filter: not those of the sessions in `captured` (their capture
    /// took it), and only those of `only` when given.
    pub(super) fn targets(
        trie: &SubscriptionTrie<SessionRef, SubscriptionOptions>,
        message: &Arc<Message>,
        json: Option<serde_json::Value>,
        source: &Source<'_>,
        captured: &[Arc<str>],
        only: Option<&Arc<Session>>,
    ) -> Targets {
        // Most messages have a few targets: kept inline, no allocation per message.
        let mut targets = Targets::new();
        // A subscription with exceptions skips their topics, one with a
        // selector the messages it does not match (a shared group then
        // gives its turn to another member); for the others this is two
        // null-pointer tests. Each distinct selector is evaluated once.
        let selectors = match json {
            // Parsed by a JSON Schema on publish: not parsed again.
            Some(json) => SelectorMemo::with_view(MessageView::with_json(message, Some(json))),
            None => SelectorMemo::new(message),
        };
        let accept = |options: &SubscriptionOptions| {
            !options.exceptions.excludes(&message.topic)
                && options
                    .selector
                    .as_ref()
                    .is_none_or(|selector| selectors.matches(selector))
        };
        trie.for_each_accepted_match(&message.topic, accept, |key, options, filter| {
            if only.is_some_and(|only| !Arc::ptr_eq(only, &key.0))
                || captured.iter().any(|c| *c == key.0.client_id)
            {
                return;
            }
            if options.no_local
                && message
                    .publisher
                    .as_deref()
                    .is_some_and(|p| p == &*key.0.client_id)
            {
                return;
            }
            if let Source::Peer(at) = source {
                // A shared group's turn fell to this member: it keeps it.
                if !filter.as_str().starts_with("$share/") && key.0.had_peer_message(at) {
                    return;
                }
            }
            targets.push(Target {
                session: Arc::clone(&key.0),
                qos: options.qos.min(message.qos),
                retain: options.retain_as_published && message.retain,
                subscription_id: options.subscription_id,
                filter: filter.shared_str(),
            });
        });
        targets
    }

    /// Queues `message` for `targets` (merged per session); returns how
    /// many sessions took it and what that stored. The connections to wake
    /// go to `wakes`.
    pub(super) fn deliver(
        message: &Arc<Message>,
        mut targets: Targets,
        stats: &RouterStats,
        wakes: &mut Wakes,
    ) -> (usize, Commit) {
        if targets.len() > 1 {
            targets.sort_by_key(|t| Arc::as_ptr(&t.session) as usize);
        }
        let (mut delivered, mut commit) = (0, Commit::NONE);
        // The persistent sessions among the targets share one stored copy.
        let slot = MessageSlot::default();
        let mut iter = targets.into_iter().peekable();
        while let Some(first) = iter.next() {
            let mut delivery = Delivery {
                message: Arc::clone(message),
                qos: first.qos,
                retain: first.retain,
                subscription_ids: first.subscription_id.into_iter().collect(),
                filter: Some(first.filter),
                seq: 0,
            };
            // Sessions that want one delivery per subscription (STOMP) are not merged.
            let merge = !first.session.delivery_style().per_subscription;
            while let Some(next) =
                iter.next_if(|t| merge && Arc::ptr_eq(&t.session, &first.session))
            {
                delivery.qos = delivery.qos.max(next.qos);
                delivery.retain |= next.retain;
                delivery.subscription_ids.extend(next.subscription_id);
            }
            let (outcome, pushed, wake) = first.session.push_unwoken(delivery, &slot);
            commit.include(pushed);
            match outcome {
                PushOutcome::Queued => delivered += 1,
                PushOutcome::QueuedDroppedOldest => {
                    delivered += 1;
                    note_drop(stats, &first.session);
                }
                PushOutcome::Dropped => {
                    note_drop(stats, &first.session);
                }
            }
            if wake {
                wakes.add(first.session);
            }
        }
        (delivered, commit)
    }

    /// A session left its queues: each takes back what the session's client had
    /// not acknowledged. Sessions with an ack window are tracked by the queues;
    /// for the others, their undelivered queue messages are taken from the session.
    fn release_queues(&self, session: &Arc<Session>, filters: &[Filter]) {
        for filter in filters {
            if let Some(queue) = self.queues.consumed_by(filter.as_str()) {
                self.queues.remove_consumer(&queue, session);
            }
        }
        if session.delivery_style().queue_ack_window.is_some() {
            return;
        }
        let leftovers = session.take_unfinished(|d| {
            d.filter
                .as_deref()
                .is_some_and(|f| self.queues.consumed_by(f).is_some())
        });
        let mut by_queue: Vec<(Arc<str>, Vec<Arc<Message>>)> = Vec::new();
        for delivery in leftovers {
            let Some(filter) = delivery.filter else {
                continue;
            };
            match by_queue.iter_mut().find(|(f, _)| *f == filter) {
                Some((_, messages)) => messages.push(delivery.message),
                None => by_queue.push((filter, vec![delivery.message])),
            }
        }
        for (filter, messages) in by_queue {
            if let Some(queue) = self.queues.consumed_by(&filter) {
                tracing::debug!(client_id = %session.client_id, %filter, count = messages.len(), "unacknowledged queue messages given back");
                self.queues.requeue(&queue, messages.into_iter());
            }
        }
    }
}

fn note_retained_refused(stats: &RouterStats, message: &Message, full: &RetainedFull) {
    let total = stats.retained_refused.fetch_add(1, Ordering::Relaxed) + 1;
    // The first refusal and then every 1000th, so a flood does not flood the log.
    if total == 1 || total.is_multiple_of(1000) {
        tracing::warn!(
            topic = %message.topic,
            publisher = message.publisher.as_deref().unwrap_or(""),
            refused_total = total,
            error = %full,
            "retained message refused: a retained cap is reached (limits.max_retained_messages / max_retained_bytes)"
        );
    }
}

fn note_drop(stats: &RouterStats, session: &Session) {
    let total = stats.deliveries_dropped.fetch_add(1, Ordering::Relaxed) + 1;
    // Log the first drop and then every 1000th, so a flood does not flood the log.
    if total == 1 || total.is_multiple_of(1000) {
        tracing::warn!(
            client_id = %session.client_id,
            dropped_total = total,
            "message not queued for a session: its queue is full (overflow policy) or it is offline and the message is QoS 0"
        );
    }
}
