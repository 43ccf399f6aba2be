//! publish → trie match → deliver to sessions; the one place messages are routed,
//! whatever protocol they came from.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use parking_lot::RwLock;
use tokio::sync::oneshot;

use crate::core::message::{Delivery, Message, QoS};
use crate::core::persist;
use crate::core::queue::{queue_name, QueueError, QueueRegistry};
use crate::core::retain::RetainedIndex;
use crate::core::session::{
    KickReason, PushOutcome, QueueLimits, Session, SessionRef, SubscriptionOptions,
};
use crate::core::topic::Filter;
use crate::core::trie::SubscriptionTrie;
use crate::core::will::{WaitingWill, WillAction};
use crate::store::{Store, StoreOp};

/// Counters the admin side reads; relaxed atomics, never a lock.
#[derive(Debug, Default)]
pub struct RouterStats {
    pub deliveries_dropped: AtomicU64,
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
    retained: RwLock<RetainedIndex<Arc<Message>>>,
    /// Sessions by client id, connected or not.
    sessions: DashMap<Arc<str>, Arc<Session>>,
    next_connection_id: AtomicU64,
    /// Set by `end_all_connections`: a connection attaching later is told to end at once.
    closing: AtomicBool,
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
            retained: RwLock::new(RetainedIndex::new()),
            sessions: DashMap::new(),
            next_connection_id: AtomicU64::new(1),
            closing: AtomicBool::new(false),
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

    fn new_session(&self, client_id: Arc<str>, expiry_interval: u32) -> Arc<Session> {
        Arc::new(Session::with_store(
            client_id,
            expiry_interval,
            *self.queue_limits.lock(),
            self.store.clone(),
        ))
    }

    /// A stored session brought back at start, disconnected.
    pub(crate) fn insert_restored_session(&self, client_id: &str, expiry: u32) -> Arc<Session> {
        let session = self.new_session(Arc::from(client_id), expiry);
        session.mark_stored();
        self.sessions
            .insert(Arc::clone(&session.client_id), Arc::clone(&session));
        session
    }

    /// A stored retained message brought back at start (not written again).
    pub(crate) fn restore_retained(&self, message: Arc<Message>) {
        let topic = Arc::clone(&message.topic);
        self.retained.write().set(&topic, Some(message));
    }

    /// Writes a session's record (subscriptions, expiry) if it is persistent.
    pub(crate) fn save_session(&self, session: &Session, disconnected: bool) {
        let Some(store) = &self.store else {
            return;
        };
        let expiry = session.expiry_interval();
        if expiry == 0 {
            return;
        }
        let at = disconnected.then(crate::store::record::unix_ms_now);
        let record = persist::session_record(expiry, at, &session.subscriptions());
        session.mark_stored();
        store.submit([StoreOp::PutSession {
            client_id: session.client_id.to_string(),
            record,
        }]);
    }

    fn forget_session(&self, session: &Session) {
        if !session.is_stored() {
            return; // a clean session: nothing of it is in the store
        }
        if let Some(store) = &self.store {
            store.submit([StoreOp::DeleteSession {
                client_id: session.client_id.to_string(),
            }]);
        }
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

    /// A client id no client chose, for clients that leave it to the server.
    pub fn generate_client_id(&self) -> String {
        format!("tern-{:016x}", rand::random::<u64>())
    }

    /// Binds a new connection to the session `client_id`, taking over any live connection.
    /// With `clean_start`, an existing session is discarded first.
    /// A new session shares `client_id` with the caller.
    pub fn attach(
        &self,
        client_id: &Arc<str>,
        clean_start: bool,
        expiry_interval: u32,
    ) -> Attached {
        let connection_id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let (kick_tx, kicked) = oneshot::channel();
        // A waiting will is cancelled when its session resumes, and goes out now when
        // clean start ends that session (outside the sessions map's lock: it publishes).
        let will_action = if clean_start {
            WillAction::Publish
        } else {
            WillAction::Cancel
        };
        self.settle_will(client_id, will_action);
        let (session, session_present, old_kick) = match self.sessions.entry(Arc::clone(client_id))
        {
            Entry::Occupied(mut entry) => {
                if clean_start {
                    let old = entry.get().clone();
                    let fresh = self.new_session(Arc::clone(entry.key()), expiry_interval);
                    entry.insert(Arc::clone(&fresh));
                    let old_kick = old.kick(KickReason::TakenOver);
                    self.drop_subscriptions(&old);
                    self.forget_session(&old);
                    let none = fresh.attach(connection_id, kick_tx, expiry_interval);
                    debug_assert!(none.is_none());
                    (fresh, false, old_kick)
                } else {
                    let session = entry.get().clone();
                    let old = session.attach(connection_id, kick_tx, expiry_interval);
                    let kicked_old = old.is_some_and(|tx| tx.send(KickReason::TakenOver).is_ok());
                    (session, true, kicked_old)
                }
            }
            Entry::Vacant(entry) => {
                let session = self.new_session(Arc::clone(entry.key()), expiry_interval);
                entry.insert(Arc::clone(&session));
                session.attach(connection_id, kick_tx, expiry_interval);
                (session, false, false)
            }
        };
        if old_kick {
            tracing::info!(%client_id, "session taken over by a new connection");
        }
        // Bound first, then checked: either `end_all_connections` sees this
        // connection among the sessions, or this sees its flag.
        if self.closing.load(Ordering::SeqCst) {
            session.tell_to_end(KickReason::ShuttingDown);
        }
        self.save_session(&session, false);
        if session_present {
            // Queues skip offline consumers: hand this one what waited meanwhile.
            self.queues.dispatch_for(&session);
        }
        Attached {
            session,
            session_present,
            connection_id,
            kicked,
        }
    }

    /// Unbinds a connection from its session. A session with expiry 0 ends now; others wait
    /// for their expiry interval and end then unless a connection came back meanwhile.
    pub fn detach(self: &Arc<Self>, session: &Arc<Session>, connection_id: u64) {
        if !session.detach(connection_id) {
            return; // already taken over: the new connection owns the session
        }
        let expiry = session.expiry_interval();
        if expiry == 0 {
            self.remove_session(session);
            return;
        }
        self.save_session(session, true);
        if expiry != u32::MAX {
            self.expire_later(session, expiry);
        }
    }

    /// Ends `session` after `expiry` seconds unless a connection comes back meanwhile.
    pub(crate) fn expire_later(self: &Arc<Self>, session: &Arc<Session>, expiry: u32) {
        let router = Arc::clone(self);
        let session = Arc::clone(session);
        let generation = session.generation();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(expiry))).await;
            if session.generation() == generation && !session.is_connected() {
                tracing::info!(client_id = %session.client_id, "session expired");
                router.remove_session(&session);
            }
        });
    }

    /// Ends a session: its subscriptions and queued messages are gone.
    pub fn remove_session(&self, session: &Arc<Session>) {
        let removed = self.sessions.remove_if(&session.client_id, |_, current| {
            Arc::ptr_eq(current, session)
        });
        self.drop_subscriptions(session);
        if removed.is_some() {
            self.settle_will(&session.client_id, WillAction::Publish);
            self.forget_session(session);
        }
    }

    /// Ends the live connection of `client_id`, if any; true if one was told.
    /// The session ends with it as with any end of a connection (a clean one
    /// is gone, a persistent one waits for its client).
    pub fn kick(&self, client_id: &str, reason: KickReason) -> bool {
        let session = self.sessions.get(client_id).map(|s| Arc::clone(s.value()));
        session.is_some_and(|s| s.tell_to_end(reason))
    }

    /// The broker is shutting down: every live connection is told to end, and
    /// so is any that attaches from now on. Connections learn it through their
    /// kick handle, which they wait on anyway, so none needs a shutdown future.
    pub fn end_all_connections(&self) {
        self.closing.store(true, Ordering::SeqCst);
        for session in self.sessions() {
            session.tell_to_end(KickReason::ShuttingDown);
        }
    }

    pub fn session(&self, client_id: &str) -> Option<Arc<Session>> {
        self.sessions.get(client_id).map(|s| Arc::clone(s.value()))
    }

    /// Every session, connected or not (a snapshot).
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        self.sessions
            .iter()
            .map(|s| Arc::clone(s.value()))
            .collect()
    }

    /// Removes the subscriptions of `session` whose filter `allowed` refuses
    /// (access rules changed); returns the filters removed.
    pub fn revoke_subscriptions(
        &self,
        session: &Arc<Session>,
        allowed: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let mut revoked = Vec::new();
        for (filter, _) in session.subscriptions() {
            if !allowed(filter.as_str()) && self.unsubscribe(session, filter.as_str()) {
                revoked.push(filter.as_str().to_string());
            }
        }
        revoked
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
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

    /// Retained messages matching a new subscription, unexpired, in topic order of the index walk.
    pub fn retained_matching(&self, filter: &Filter) -> Vec<Arc<Message>> {
        let now = std::time::Instant::now();
        let mut out = Vec::new();
        self.retained.read().for_each_match(filter, |_, message| {
            if !message.is_expired(now) {
                out.push(Arc::clone(message));
            }
        });
        out
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
        let removed = self.retained.write().set(topic, None).is_some();
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
            trie.for_each_match(&message.topic, |key, options, filter| {
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
                let value = if message.payload.is_empty() {
                    None
                } else {
                    Some(Arc::clone(&message))
                };
                if let Some(store) = &self.store {
                    store.submit([persist::retained_op(&message.topic, value.as_deref())]);
                }
                self.retained.write().set(&message.topic, value);
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

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
