//! The router: the façade the adapters, the admin side and the server call.
//! It holds one part per concern and orchestrates them:
//! - `routing.rs`: the subscription trie, retained messages, queues, and
//!   publish → match → deliver;
//! - `publishing.rs`: publishes from clients and from other nodes, handed
//!   on to the streams and the cluster fabric;
//! - `wakes.rs`: the connections a publish fed, woken once it was handed on;
//! - `sessions.rs`: the registry of sessions (attach, takeover, kicks);
//! - `wills.rs`: the wills waiting for their delay;
//! - `persist.rs`: what goes to the store, and the conversions between core
//!   types and store records;
//! - `restore.rs`: the router brought back from a stored snapshot;
//! - `cluster_state.rs`: claims of client ids, takeovers by other nodes and
//!   retained changes from the cluster (cluster mode only);
//! - `marks.rs`: what a session taken over had of other nodes' messages.

mod capture;
mod capture_hold;
mod cluster_state;
mod committed;
mod marks;
pub(crate) mod persist;
mod publishing;
mod restore;
mod routing;
mod sessions;
mod wakes;
mod wills;

#[cfg(test)]
mod cluster_queue_tests;
#[cfg(test)]
mod commit_tests;
#[cfg(test)]
mod fabric_tests;
#[cfg(test)]
mod marks_tests;
#[cfg(test)]
mod persist_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod trailer_tests;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::core::cluster_state::ClusterState;
use crate::core::commit::{Commit, CoreError};
use crate::core::exceptions::Exceptions;
use crate::core::fabric::Fabric;
use crate::core::message::Message;
use crate::core::queue::{queue_name, QueueRegistry};
use crate::core::retained_set::RetainedLimits;
use crate::core::schema::Schemas;
use crate::core::selector::{Selector, SelectorCache, SelectorError};
use crate::core::session::{KickReason, QueueLimits, Session, SessionOwner, SubscriptionOptions};
use crate::core::stream::{StreamError, StreamSubscription, Streams};
use crate::core::topic::Filter;
use crate::store::{Snapshot, Store, StoreError};

pub use capture::MoveCapture;
use persist::{Persistence, RetainedOrigin};
pub use publishing::{PublishRefused, Published};
pub use restore::Restored;
use routing::Routing;
use sessions::SessionRegistry;
use wills::{WillAction, Wills};

/// Counters the admin side reads; relaxed atomics, never a lock.
#[derive(Debug, Default)]
pub struct RouterStats {
    pub deliveries_dropped: AtomicU64,
    /// Retained publishes refused because a retained cap was reached.
    pub retained_refused: AtomicU64,
    /// Messages from clients that matched no subscription (and went to no queue).
    pub messages_unmatched: AtomicU64,
    /// Connections bound on this node alone because the cluster could not
    /// decide who holds their client id (NATS unreachable).
    pub claims_failed: AtomicU64,
}

/// A login refused a session that belongs to another user.
#[derive(Debug, thiserror::Error)]
#[error("session {client_id} belongs to {}, not to {}", owner.name(), login.name())]
pub struct NotSessionOwner {
    pub client_id: Arc<str>,
    pub owner: SessionOwner,
    pub login: SessionOwner,
}

/// Why [`Router::attach_claimed`] attached no session.
#[derive(Debug, thiserror::Error)]
pub enum AttachRefused {
    #[error(transparent)]
    NotOwner(#[from] NotSessionOwner),
    /// The cluster could not decide who holds the client id (NATS
    /// unreachable) and the nodes share the store: serving the id here
    /// anyway would write its stored records beside the node that may hold
    /// it, so the client is asked to come back.
    #[error("the cluster cannot decide who holds client id {client_id}: {reason}")]
    OwnerUndecided { client_id: Arc<str>, reason: String },
    /// The id was claimed from another node, but its session stored in the
    /// shared store could not be read: a session made here without it would
    /// write over it. Read again at the next attempt.
    #[error("the stored session of client id {client_id} could not be read: {reason}")]
    StoredStateUnread { client_id: Arc<str>, reason: String },
}

/// A subscription made by [`Router::subscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribed {
    /// The session already had this filter (its options were replaced).
    pub existed: bool,
    /// The session record with it: the SUBACK / RECEIPT goes out once committed.
    pub commit: Commit,
}

/// What the store holds, for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStatus {
    /// False once a commit has failed: acknowledged messages can no longer be kept.
    pub healthy: bool,
    /// Write transactions committed.
    pub commits: u64,
    /// Messages on disk (deliveries owed to persistent sessions plus queued).
    pub held_messages: u64,
    /// True when the store was rolled back to an older commit at open.
    pub recovered: bool,
}

/// A connection bound to its session.
#[derive(Debug)]
pub struct Attached {
    pub session: Arc<Session>,
    /// True when an existing session was resumed (MQTT CONNACK session-present).
    pub session_present: bool,
    /// The stored session record: a CONNACK that promises a persistent session
    /// goes out once this is committed.
    pub commit: Commit,
    pub connection_id: u64,
    /// Fires when the core ends this connection (takeover, operator, shutdown).
    pub kicked: oneshot::Receiver<KickReason>,
}

/// Messages one point-to-point queue holds unless configured otherwise.
pub const DEFAULT_QUEUE_MAX_MESSAGES: usize = 100_000;

/// Everything a router is made from, given at once so no setting can undo
/// another (limits that change live have their own setters).
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// Limits of each session's queue.
    pub queue_limits: QueueLimits,
    /// Messages one point-to-point queue may hold (waiting plus unacknowledged).
    pub queue_max_messages: usize,
    /// Persistent sessions, their QoS 1/2 deliveries and retained messages go here.
    pub store: Option<Arc<Store>>,
    /// Stored messages beyond which QoS 1/2 publishes are refused.
    pub store_max_messages: u64,
}

impl RouterSettings {
    /// In memory only, default queue caps.
    pub fn new(queue_limits: QueueLimits) -> RouterSettings {
        RouterSettings {
            queue_limits,
            queue_max_messages: DEFAULT_QUEUE_MAX_MESSAGES,
            store: None,
            store_max_messages: u64::MAX,
        }
    }
}

#[derive(Debug)]
pub struct Router {
    routing: Routing,
    sessions: SessionRegistry,
    wills: Wills,
    persistence: Persistence,
    /// Durable streams: every publish is appended to those whose topics it matches.
    streams: Arc<Streams>,
    /// Compiled selectors by text, shared by the subscriptions that use them.
    selectors: SelectorCache,
    /// Payload checks of a client's publish: schemas bound to topics, UTF-8.
    schemas: Arc<Schemas>,
    /// Client ids this node claimed from another node whose stored state it
    /// could not read (a shared store): read at their next attach before any
    /// session is made for them here (`cluster_state.rs`).
    unread_takeovers: parking_lot::Mutex<std::collections::HashSet<Arc<str>>>,
    pub stats: RouterStats,
}

impl Router {
    /// A router in memory only, with default queue caps.
    pub fn new(queue_limits: QueueLimits) -> Router {
        Router::from_settings(RouterSettings::new(queue_limits))
    }

    pub fn from_settings(settings: RouterSettings) -> Router {
        let mut queues = QueueRegistry::new(settings.queue_max_messages);
        if let Some(store) = &settings.store {
            queues.set_store(Arc::clone(store));
        }
        Router {
            routing: Routing::new(queues),
            sessions: SessionRegistry::new(settings.queue_limits, settings.store.clone()),
            wills: Wills::new(),
            streams: Arc::new(Streams::new(settings.store.clone())),
            schemas: Arc::new(Schemas::new(settings.store.clone())),
            persistence: Persistence::new(settings.store, settings.store_max_messages),
            selectors: SelectorCache::new(),
            unread_takeovers: parking_lot::Mutex::default(),
            stats: RouterStats::default(),
        }
    }

    /// Whether only a session's owner may resume it (config, and its reload).
    pub fn set_session_owner_check(&self, on: bool) {
        self.sessions.set_owner_check(on);
    }

    /// New queue limits for every session, existing and future (config reload).
    pub fn set_queue_limits(&self, limits: QueueLimits) {
        self.sessions.set_queue_limits(limits);
    }

    /// Joins the cluster fabric: from now on subscriptions are announced to it
    /// and client messages forwarded through it. Call once, before serving;
    /// false if a fabric was set already.
    pub fn set_fabric(&self, fabric: Arc<dyn Fabric>) -> bool {
        self.write_marks_with_commits(&fabric);
        self.routing.set_fabric(fabric)
    }

    /// While the cluster fabric is behind, what resolves once it has room
    /// again (connections wait for it before reading more); None otherwise.
    pub fn fabric_wait_room(
        &self,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>> {
        self.routing.fabric().and_then(|fabric| fabric.wait_room())
    }

    /// While too much waits for a store commit, what resolves once it is
    /// committed (connections wait for it before reading more, so a QoS 0
    /// flood into a stream slows its publishers, not every commit); None otherwise.
    pub fn store_wait_room(
        &self,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>> {
        // Boxed: the connection futures that await it stay small.
        let wait = self.persistence.store()?.wait_room()?;
        Some(Box::pin(wait))
    }

    /// The store's state, None without a store.
    pub fn store_status(&self) -> Option<StoreStatus> {
        use std::sync::atomic::Ordering;
        let store = self.persistence.store()?;
        Some(StoreStatus {
            healthy: store.is_healthy(),
            commits: store.commits.load(Ordering::Relaxed),
            held_messages: store.held_messages(),
            recovered: store.recovered.load(Ordering::Relaxed) != 0,
        })
    }

    /// Commits what is pending and closes the store (shutdown); later
    /// operations store nothing more.
    pub async fn close_store(&self) -> Result<(), CoreError> {
        let Some(store) = self.persistence.store() else {
            return Ok(());
        };
        let flushed = store.flush().await;
        store.close();
        Ok(flushed?)
    }

    /// The compiled selector for `text`, shared with every subscription using
    /// the same text (one evaluation per message for all of them).
    pub fn compile_selector(&self, text: &str) -> Result<Arc<Selector>, SelectorError> {
        self.selectors.get_or_compile(text)
    }

    /// The durable streams (declared at start, managed by the admin API).
    pub fn streams(&self) -> &Arc<Streams> {
        &self.streams
    }

    /// The payload schemas (configured at start and on reload, managed by the admin API).
    pub fn schemas(&self) -> &Arc<Schemas> {
        &self.schemas
    }

    /// Starts reading a stream for `session` (`$stream/<name>/…`): replay from
    /// the start position, then live. Not kept with the session's subscriptions:
    /// a client subscribes again after a restart (a named consumer resumes).
    pub fn subscribe_stream(
        &self,
        session: &Arc<Session>,
        sub: StreamSubscription,
    ) -> Result<(), StreamError> {
        self.streams.subscribe(session, sub)
    }

    /// Shares client ids and retained messages with the other nodes of a
    /// cluster from now on; call once at start, before serving. False if a
    /// cluster state was set already.
    pub fn set_cluster_state(&self, cluster: Arc<dyn ClusterState>) -> bool {
        self.persistence.set_cluster(cluster)
    }

    /// Caps on retained messages (`limits.max_retained_*`; also on config reload).
    pub fn set_retained_limits(&self, limits: RetainedLimits) {
        self.routing.set_retained_limits(limits);
    }

    /// A new cap on each point-to-point queue (config reload).
    pub fn set_queue_max_messages(&self, max: usize) {
        self.routing.queues().set_max_messages(max);
    }

    /// The point-to-point queues (adapters ack and nack through it).
    pub fn queues(&self) -> &QueueRegistry {
        self.routing.queues()
    }

    /// Rebuilds sessions, their queued and in-flight deliveries, incoming QoS 2
    /// state and retained messages from a stored snapshot. Call once, before
    /// serving. Sessions whose expiry passed while the broker was down are removed.
    pub fn restore(self: &Arc<Self>, snapshot: Snapshot) -> Result<Restored, StoreError> {
        Ok(restore::restore(self, snapshot, &Default::default()))
    }

    // ---- subscriptions and retained messages ----

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
                    if self.unsubscribe(session, filter.as_str()).is_some() {
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
                    self.routing.subscribe(session, filter, options);
                    changed += 1;
                }
                Some(_) => {}
            }
        }
        (revoked, changed)
    }

    /// Adds or replaces a subscription.
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        filter: Filter,
        options: SubscriptionOptions,
    ) -> Subscribed {
        let existed = self.routing.subscribe(session, filter, options);
        let commit = self.persistence.save_session(session, false);
        self.persistence.subscriptions_changed(session);
        Subscribed { existed, commit }
    }

    /// Removes a subscription: the commit of the session record without it, or
    /// None if the session had no such filter.
    pub fn unsubscribe(&self, session: &Arc<Session>, raw_filter: &str) -> Option<Commit> {
        if crate::core::stream::is_stream_filter(raw_filter) {
            // A stream reader is not kept with the session: nothing to store.
            return self
                .streams
                .unsubscribe(session, raw_filter)
                .then_some(Commit::NONE);
        }
        self.routing
            .unsubscribe(session, raw_filter)
            .then(|| self.persistence.save_session(session, false))
    }

    pub fn subscription_count(&self) -> usize {
        self.routing.subscription_count()
    }

    /// Retained messages matching a new subscription, unexpired, in topic order
    /// of the index walk; those on topics the subscription's `exceptions` name are left out.
    pub fn retained_matching(&self, filter: &Filter, exceptions: &Exceptions) -> Vec<Arc<Message>> {
        self.routing.retained_matching(filter, exceptions)
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
        self.routing
            .send_retained(session, filter, options, messages)
    }

    /// Every retained message, `$` topics included, expired ones left out (for operators).
    pub fn retained_all(&self) -> Vec<Arc<Message>> {
        self.routing.retained_all()
    }

    /// Removes the retained message of `topic`; true if there was one.
    pub fn delete_retained(&self, topic: &str) -> bool {
        let removed = self.routing.clear_retained(topic);
        if removed {
            self.persistence.retained(topic, None, RetainedOrigin::Here);
        }
        removed
    }

    pub fn retained_count(&self) -> usize {
        self.routing.retained_count()
    }

    /// Topic and payload bytes of all retained messages.
    pub fn retained_bytes(&self) -> usize {
        self.routing.retained_bytes()
    }

    // ---- sessions ----

    /// A client id no client chose, for clients that leave it to the server.
    pub fn generate_client_id(&self) -> String {
        format!("tern-{:016x}", rand::random::<u64>())
    }

    /// Binds a new connection of `login` to the session `client_id`, taking over
    /// any live connection. With `clean_start`, an existing session is discarded
    /// first. A new session shares `client_id` with the caller and belongs to
    /// `login`. An existing session of another user is refused (and left
    /// untouched) while the owner check is on.
    pub fn attach(
        &self,
        client_id: &Arc<str>,
        login: &SessionOwner,
        clean_start: bool,
        expiry_interval: u32,
    ) -> Result<Attached, NotSessionOwner> {
        // Checked before the waiting will is settled (which must not happen for
        // another user) and again under the registry's lock, which decides.
        if let Some(existing) = self.sessions.get(client_id) {
            self.sessions.may_use(&existing, login)?;
        }
        // A waiting will is cancelled when its session resumes, and goes out now when
        // clean start ends that session (outside the registry's lock: it publishes).
        let will_action = if clean_start {
            WillAction::Publish
        } else {
            WillAction::Cancel
        };
        self.settle_will(client_id, will_action);
        let attached =
            self.sessions
                .bind(client_id, login, clean_start, expiry_interval, |old| {
                    self.routing.drop_subscriptions(old);
                    self.persistence.forget_session(old);
                })?;
        let mut attached = attached;
        attached.commit = self.persistence.save_session(&attached.session, false);
        if attached.session_present {
            // Queues skip offline consumers: hand this one what waited meanwhile.
            self.routing.queues().dispatch_for(&attached.session);
        }
        Ok(attached)
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
        self.persistence.save_session(session, true);
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
        let removed = self.sessions.remove(session);
        self.streams.drop_session(session);
        self.routing.drop_subscriptions(session);
        if removed {
            self.settle_will(&session.client_id, WillAction::Publish);
            self.persistence.forget_session(session);
            if let Some(cluster) = self.persistence.cluster() {
                cluster.session_ended(&session.client_id);
            }
        }
    }

    /// Ends the live connection of `client_id`, if any; true if one was told.
    /// The session ends with it as with any end of a connection (a clean one
    /// is gone, a persistent one waits for its client).
    pub fn kick(&self, client_id: &str, reason: KickReason) -> bool {
        self.sessions.kick(client_id, reason)
    }

    /// The broker is shutting down: every live connection is told to end, and
    /// so is any that attaches from now on. Connections learn it through their
    /// kick handle, which they wait on anyway, so none needs a shutdown future.
    pub fn end_all_connections(&self) {
        self.sessions.end_all();
    }

    pub fn session(&self, client_id: &str) -> Option<Arc<Session>> {
        self.sessions.get(client_id)
    }

    /// Every session, connected or not (a snapshot).
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        self.sessions.all()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.count()
    }
}
