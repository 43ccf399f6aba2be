//! publish → trie match → deliver to sessions; the one place messages are routed,
//! whatever protocol they came from. The registry of sessions (attach, detach,
//! expiry, kicks) is in `router_sessions.rs`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::RwLock;
use tokio::sync::oneshot;

use crate::core::exceptions::Exceptions;
use crate::core::message::{Delivery, Message, QoS};
use crate::core::persist;
use crate::core::queue::{queue_name, QueueError, QueueRegistry};
use crate::core::retained_backlog::RetainedBatch;
use crate::core::retained_set::{RetainedFull, RetainedLimits, RetainedSet};
use crate::core::session::{
    KickReason, PushOutcome, QueueLimits, Session, SessionOwner, SessionRef, SubscriptionOptions,
};
use crate::core::topic::Filter;
use crate::core::trie::SubscriptionTrie;
use crate::core::will::WaitingWill;
use crate::store::Store;

/// Counters the admin side reads; relaxed atomics, never a lock.
#[derive(Debug, Default)]
pub struct RouterStats {
    pub deliveries_dropped: AtomicU64,
    /// Retained publishes refused because a retained cap was reached.
    pub retained_refused: AtomicU64,
    /// Messages from clients that matched no subscription (and went to no queue).
    pub messages_unmatched: AtomicU64,
}

/// Why a message was not taken (the publisher is told; nothing was routed).
#[derive(Debug, thiserror::Error)]
pub enum PublishRefused {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("the message store is full ({held} messages, limit {limit})")]
    StoreFull { held: u64, limit: u64 },
    #[error("the queue of subscriber {client_id} is full")]
    SubscriberFull { client_id: String },
    #[error(transparent)]
    RetainedFull(#[from] RetainedFull),
}

/// A login refused a session that belongs to another user.
#[derive(Debug, thiserror::Error)]
#[error("session {client_id} belongs to {}, not to {}", owner.name(), login.name())]
pub struct NotSessionOwner {
    pub client_id: Arc<str>,
    pub owner: SessionOwner,
    pub login: SessionOwner,
}

/// A connection bound to its session.
#[derive(Debug)]
pub struct Attached {
    pub session: Arc<Session>,
    /// True when an existing session was resumed (MQTT CONNACK session-present).
    pub session_present: bool,
    pub connection_id: u64,
    /// Fires when the core ends this connection (takeover, operator, shutdown).
    pub kicked: oneshot::Receiver<KickReason>,
}

#[derive(Debug)]
pub struct Router {
    /// Each subscription's options by filter; a match gets the filter text from
    /// the trie, shared rather than re-allocated for every delivery.
    subscriptions: RwLock<SubscriptionTrie<SessionRef, SubscriptionOptions>>,
    /// Shared with the retained batches of new subscriptions, which skip what was
    /// replaced since they were made.
    retained: Arc<RwLock<RetainedSet>>,
    /// Sessions by client id, connected or not.
    sessions: DashMap<Arc<str>, Arc<Session>>,
    next_connection_id: AtomicU64,
    /// Set by `end_all_connections`: a connection attaching later is told to end at once.
    closing: AtomicBool,
    /// Only a session's owner may resume it (`auth.session_owner_check`).
    session_owner_check: AtomicBool,
    /// Limits of session queues; changed live on config reload.
    queue_limits: parking_lot::Mutex<QueueLimits>,
    /// Point-to-point queues, reached as `$queue/<name>`.
    queues: QueueRegistry,
    /// Persistent sessions, their QoS 1/2 deliveries and retained messages go here.
    store: Option<Arc<Store>>,
    /// Stored messages beyond which QoS 1/2 publishes are refused.
    store_max_messages: u64,
    /// Wills waiting for their delay, by client id.
    pub(crate) wills: DashMap<Arc<str>, WaitingWill>,
    pub(crate) will_tokens: AtomicU64,
    pub stats: RouterStats,
}

impl Router {
    pub fn new(queue_limits: QueueLimits) -> Router {
        Router {
            subscriptions: RwLock::new(SubscriptionTrie::new()),
            retained: Arc::new(RwLock::new(RetainedSet::new(RetainedLimits::default()))),
            sessions: DashMap::new(),
            next_connection_id: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            session_owner_check: AtomicBool::new(true),
            queue_limits: parking_lot::Mutex::new(queue_limits),
            queues: QueueRegistry::new(DEFAULT_QUEUE_MAX_MESSAGES),
            store: None,
            store_max_messages: u64::MAX,
            wills: DashMap::new(),
            will_tokens: AtomicU64::new(1),
            stats: RouterStats::default(),
        }
    }

    /// Makes the router persist through `store` (call before serving).
    pub fn with_store(mut self, store: Arc<Store>) -> Router {
        self.queues.set_store(Arc::clone(&store));
        self.store = Some(store);
        self
    }

    /// Refuses QoS 1/2 publishes while the store holds `max` messages or more.
    pub fn with_store_limit(mut self, max: u64) -> Router {
        self.store_max_messages = max;
        self
    }

    /// Whether only a session's owner may resume it (config, and its reload).
    pub fn set_session_owner_check(&self, on: bool) {
        self.session_owner_check.store(on, Ordering::Relaxed);
    }

    /// New queue limits for every session, existing and future (config reload).
    pub fn set_queue_limits(&self, limits: QueueLimits) {
        *self.queue_limits.lock() = limits;
        for session in self.sessions.iter() {
            session.value().set_limits(limits);
        }
    }

    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Caps on retained messages (`limits.max_retained_*`; also on config reload).
    pub fn set_retained_limits(&self, limits: RetainedLimits) {
        self.retained.write().set_limits(limits);
    }

    /// A stored retained message brought back at start (not written again, not
    /// refused by the caps: it was accepted once).
    pub(crate) fn restore_retained(&self, message: Arc<Message>) {
        self.retained.write().keep_unchecked(message);
    }

    /// Sets how many messages one point-to-point queue may hold (waiting plus unacknowledged).
    pub fn with_queue_max_messages(mut self, max: usize) -> Router {
        self.queues = QueueRegistry::new(max);
        self
    }

    /// A new cap on each point-to-point queue (config reload).
    pub fn set_queue_max_messages(&self, max: usize) {
        self.queues.set_max_messages(max);
    }

    /// The point-to-point queues (adapters ack and nack through it).
    pub fn queues(&self) -> &QueueRegistry {
        &self.queues
    }

    /// Decides each subscription of `session` again (access rules changed, or
    /// the session was resumed): `decide` returns None to remove it, or the
    /// exceptions it has from now on (replacing or dropping the old ones).
    /// Returns the filters removed and how many subscriptions' exceptions changed.
    pub fn recheck_subscriptions(
        &self,
        session: &Arc<Session>,
        decide: impl Fn(&Filter) -> Option<Exceptions>,
    ) -> (Vec<String>, usize) {
        let mut revoked = Vec::new();
        let mut changed = 0;
        for (filter, mut options) in session.subscriptions() {
            match decide(&filter) {
                None => {
                    if self.unsubscribe(session, filter.as_str()) {
                        revoked.push(filter.as_str().to_string());
                    }
                }
                // A queue delivers to one consumer and never takes exceptions.
                Some(exceptions)
                    if exceptions != options.exceptions
                        && queue_name(filter.as_str()).is_none() =>
                {
                    options.exceptions = exceptions;
                    // Exceptions are not stored: the session record stays as it is.
                    self.subscribe_unsaved(session, filter, options);
                    changed += 1;
                }
                Some(_) => {}
            }
        }
        (revoked, changed)
    }

    fn drop_subscriptions(&self, session: &Arc<Session>) {
        let filters = session.take_subscriptions();
        self.release_queues(session, &filters);
        if filters.is_empty() {
            return;
        }
        let key = SessionRef(Arc::clone(session));
        let mut trie = self.subscriptions.write();
        for filter in &filters {
            trie.remove(filter, &key);
        }
    }

    /// Adds or replaces a subscription; returns true if the session already had this filter.
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        filter: Filter,
        options: SubscriptionOptions,
    ) -> bool {
        let existed = self.subscribe_unsaved(session, filter, options);
        self.save_session(session, false);
        existed
    }

    /// `subscribe` without writing the session record (restore writes nothing back).
    pub(crate) fn subscribe_unsaved(
        &self,
        session: &Arc<Session>,
        filter: Filter,
        options: SubscriptionOptions,
    ) -> bool {
        if let Some(queue) = queue_name(filter.as_str()) {
            self.queues
                .add_consumer(queue, session, options.qos, options.subscription_id);
            return session.add_subscription(filter, options);
        }
        let key = SessionRef(Arc::clone(session));
        self.subscriptions
            .write()
            .insert(&filter, key, options.clone());
        session.add_subscription(filter, options)
    }

    /// Removes a subscription; returns false if the session had no such filter.
    pub fn unsubscribe(&self, session: &Arc<Session>, raw_filter: &str) -> bool {
        let removed = self.unsubscribe_unsaved(session, raw_filter);
        if removed {
            self.save_session(session, false);
        }
        removed
    }

    fn unsubscribe_unsaved(&self, session: &Arc<Session>, raw_filter: &str) -> bool {
        match session.remove_subscription(raw_filter) {
            Some(filter) => {
                if let Some(queue) = queue_name(filter.as_str()) {
                    self.queues.remove_consumer(queue, session);
                    return true;
                }
                let key = SessionRef(Arc::clone(session));
                self.subscriptions.write().remove(&filter, &key);
                true
            }
            None => false,
        }
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions.read().len()
    }

    /// Retained messages matching a new subscription, unexpired, in topic order
    /// of the index walk; those on topics the subscription's `exceptions` name are left out.
    pub fn retained_matching(&self, filter: &Filter, exceptions: &Exceptions) -> Vec<Arc<Message>> {
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

    /// Hands `session` the retained messages a new subscription on `filter` asked
    /// for (already matched and checked by the adapter), to be sent at the pace
    /// the client takes them; returns how many expired ones were passed over.
    pub fn send_retained(
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

    /// Every retained message, `$` topics included, expired ones left out (for operators).
    pub fn retained_all(&self) -> Vec<Arc<Message>> {
        let now = std::time::Instant::now();
        let mut out = Vec::new();
        self.retained.read().for_each(|_, message| {
            if !message.is_expired(now) {
                out.push(Arc::clone(message));
            }
        });
        out
    }

    /// Removes the retained message of `topic`; true if there was one.
    pub fn delete_retained(&self, topic: &str) -> bool {
        let removed = self.retained.write().clear(topic).is_some();
        if removed {
            if let Some(store) = &self.store {
                store.submit([persist::retained_op(topic, None)]);
            }
        }
        removed
    }

    pub fn retained_count(&self) -> usize {
        self.retained.read().len()
    }

    /// Topic and payload bytes of all retained messages.
    pub fn retained_bytes(&self) -> usize {
        self.retained.read().bytes()
    }

    /// Routes one message: stores/clears it as retained if flagged, then queues it
    /// for every matching session (one delivery per session, overlapping
    /// subscriptions merged, unless the session's `DeliveryStyle` asks for one per
    /// subscription). Returns the number of sessions it was queued for.
    /// A message to `$queue/<q>` goes to queue `<q>` instead (counted as 1; a full
    /// queue refuses it with a warning).
    pub fn publish(&self, message: Arc<Message>) -> usize {
        let topic = Arc::clone(&message.topic);
        match self.route(message, false) {
            Ok(matched) => matched,
            // A retained cap was logged by `note_retained_refused`, without flooding.
            Err(PublishRefused::RetainedFull(_)) => 0,
            Err(e) => {
                tracing::warn!(topic = %topic, error = %e, "message refused");
                0
            }
        }
    }

    /// Like [`Router::publish`], but a message the broker cannot keep is refused as a
    /// whole and the caller tells the publisher: a full queue, a full store (QoS 1/2),
    /// or a subscriber whose full queue refuses more (overflow policy `refuse`).
    pub fn publish_checked(&self, message: Arc<Message>) -> Result<usize, PublishRefused> {
        if message.qos != QoS::AtMostOnce {
            if let Some(store) = &self.store {
                let held = store.held_messages();
                if held >= self.store_max_messages {
                    return Err(PublishRefused::StoreFull {
                        held,
                        limit: self.store_max_messages,
                    });
                }
            }
        }
        self.route(message, true)
    }

    fn route(
        &self,
        message: Arc<Message>,
        refuse_when_full: bool,
    ) -> Result<usize, PublishRefused> {
        if queue_name(&message.topic).is_some() {
            let topic = Arc::clone(&message.topic);
            if let Some(queue) = queue_name(&topic) {
                self.queues.enqueue(queue, message)?;
            }
            return Ok(1);
        }
        let mut targets: Vec<Target> = Vec::new();
        {
            let trie = self.subscriptions.read();
            // A subscription with exceptions skips their topics (a shared group
            // then gives its turn to a member without them); for the others
            // this is one null-pointer test.
            let accept =
                |options: &SubscriptionOptions| !options.exceptions.excludes(&message.topic);
            trie.for_each_accepted_match(&message.topic, accept, |key, options, filter| {
                if options.no_local
                    && message
                        .publisher
                        .as_deref()
                        .is_some_and(|p| p == &*key.0.client_id)
                {
                    return;
                }
                targets.push(Target {
                    session: Arc::clone(&key.0),
                    qos: options.qos.min(message.qos),
                    retain: options.retain_as_published && message.retain,
                    subscription_id: options.subscription_id,
                    filter: filter.shared_str(),
                });
            });
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
                } else {
                    // Refused before anything is kept or delivered.
                    if let Err(full) = retained.keep(&message) {
                        drop(retained);
                        self.note_retained_refused(&message, &full);
                        return Err(full.into());
                    }
                    Some(&*message)
                };
                if let Some(store) = &self.store {
                    store.submit([persist::retained_op(&message.topic, value)]);
                }
            }
        }
        if targets.is_empty() && message.publisher.is_some() {
            self.stats
                .messages_unmatched
                .fetch_add(1, Ordering::Relaxed);
        }
        if targets.len() > 1 {
            targets.sort_by_key(|t| Arc::as_ptr(&t.session) as usize);
        }

        let mut delivered = 0;
        let mut iter = targets.into_iter().peekable();
        while let Some(first) = iter.next() {
            let mut delivery = Delivery {
                message: Arc::clone(&message),
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
            match first.session.push(delivery) {
                PushOutcome::Queued => delivered += 1,
                PushOutcome::QueuedDroppedOldest => {
                    delivered += 1;
                    self.note_drop(&first.session);
                }
                PushOutcome::Dropped => {
                    self.note_drop(&first.session);
                }
            }
        }
        Ok(delivered)
    }

    /// A session left its queues: each takes back what the session's client had
    /// not acknowledged. Sessions with an ack window are tracked by the queues;
    /// for the others, their undelivered queue messages are taken from the session.
    fn release_queues(&self, session: &Arc<Session>, filters: &[Filter]) {
        for filter in filters {
            if let Some(queue) = queue_name(filter.as_str()) {
                self.queues.remove_consumer(queue, session);
            }
        }
        if session.delivery_style().queue_ack_window.is_some() {
            return;
        }
        let leftovers = session
            .take_unfinished(|d| d.filter.as_deref().is_some_and(|f| queue_name(f).is_some()));
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
            if let Some(queue) = queue_name(&filter) {
                tracing::debug!(client_id = %session.client_id, queue, count = messages.len(), "unacknowledged queue messages given back");
                self.queues.requeue(queue, messages.into_iter());
            }
        }
    }

    fn note_retained_refused(&self, message: &Message, full: &RetainedFull) {
        let total = self.stats.retained_refused.fetch_add(1, Ordering::Relaxed) + 1;
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

    fn note_drop(&self, session: &Session) {
        let total = self
            .stats
            .deliveries_dropped
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        // Log the first drop and then every 1000th, so a flood does not flood the log.
        if total == 1 || total.is_multiple_of(1000) {
            tracing::warn!(
                client_id = %session.client_id,
                dropped_total = total,
                "message not queued for a session: its queue is full (overflow policy) or it is offline and the message is QoS 0"
            );
        }
    }
}

/// Messages one point-to-point queue holds unless configured otherwise.
pub const DEFAULT_QUEUE_MAX_MESSAGES: usize = 100_000;

struct Target {
    session: Arc<Session>,
    qos: QoS,
    retain: bool,
    subscription_id: Option<u32>,
    filter: Arc<str>,
}

#[path = "router_sessions.rs"]
mod sessions;

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
