//! One client's state, kept by the core whatever the protocol: its
//! subscriptions, the deliveries waiting for it, and its in-flight window.
//!
//! Publishers append to `pending` under a short, never-awaited lock and wake
//! the connection task only when the queue goes from empty to non-empty, so a
//! burst of messages costs one wake-up, not one per message.
//!
//! The state and its plain accessors live here; the rest by concern:
//! - `outbound.rs`: the outbound queue, its limits and overflow policies;
//! - `retained_feed.rs`: the retained backlog fed into that queue;
//! - `inflight.rs`: the in-flight window, packet ids and incoming QoS 2 ids;
//! - `marks.rs`: other nodes' messages a session moved here had already.

mod inflight;
mod marks;
mod outbound;
mod retained_feed;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};

use crate::core::commit::Commit;
use crate::core::exceptions::Exceptions;
use crate::core::message::Delivery;
use crate::core::packet_ids::PacketIds;
pub use crate::core::packet_ids::{InflightEntry, InflightStage};
use crate::core::pending::PendingQueue;
use crate::core::retained_backlog::RetainedBacklog;
use crate::core::router::persist::Persist;
use crate::core::selector::Selector;
use crate::core::subscription_list::SubscriptionList;
use crate::core::topic::Filter;

/// What a full queue does with one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Keep the newest messages: the oldest queued one is dropped.
    DropOldest,
    /// Keep what is queued: the new message is dropped.
    DropNew,
    /// Keep what is queued and refuse the new message to its publisher (MQTT 5
    /// 0x97, STOMP ERROR; a 3.x publisher is disconnected unacknowledged), so
    /// nothing acknowledged is dropped. QoS 0 messages are dropped as with `DropNew`.
    Refuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Deliveries a session's queue may hold. 32 bits keep [`QueueLimits`], and
    /// so a session, in one small allocation.
    pub max_queued: u32,
    /// Topic and payload bytes a session's queue may hold (0: no byte limit).
    pub max_queued_bytes: usize,
    pub overflow: OverflowPolicy,
    /// Milliseconds a delivery may wait in the queue (0: no age limit); an
    /// older one is dropped, and counted, when it would be sent.
    pub max_queued_age_ms: u64,
}

impl QueueLimits {
    pub fn max_queued_len(&self) -> usize {
        usize::try_from(self.max_queued).unwrap_or(usize::MAX)
    }

    /// Would `queue` be over these limits with one more delivery of `size` bytes?
    fn full_for(&self, queue: &PendingQueue, size: usize) -> bool {
        queue.len() >= self.max_queued_len()
            || (self.max_queued_bytes > 0 && queue.bytes() + size > self.max_queued_bytes)
    }
}

/// Options of one subscription, as the core needs them to route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionOptions {
    pub qos: crate::core::message::QoS,
    /// Do not deliver messages this same client published (MQTT 5 no-local).
    pub no_local: bool,
    /// Keep the publisher's retain flag on live deliveries (MQTT 5 retain-as-published).
    pub retain_as_published: bool,
    /// 0: send retained on subscribe, 1: only if the subscription is new, 2: never.
    pub retain_handling: u8,
    pub subscription_id: Option<u32>,
    /// Topics this subscription must not get although its filter matches them
    /// (the ACL's deny rules it overlaps). Derived from the rules, never stored.
    pub exceptions: Exceptions,
    /// Only messages this selector finds TRUE are delivered (JMS selector);
    /// shared with every subscription of the same text (see
    /// `Router::compile_selector`), so routing evaluates it once per message.
    pub selector: Option<Arc<Selector>>,
}

/// How the core hands messages to a session: each adapter picks what its
/// protocol needs (set right after attach, before the first subscription).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryStyle {
    /// One delivery per matching subscription (STOMP: one MESSAGE per subscription),
    /// instead of one per session with overlapping subscriptions merged (MQTT).
    pub per_subscription: bool,
    /// Some(n): queue messages stay unacknowledged until the adapter acks them, at most
    /// n per queue. None: a queue message is done once handed to the session, whose
    /// own QoS flow then carries it (MQTT).
    pub queue_ack_window: Option<usize>,
}

/// Why the core ends a session's live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KickReason {
    /// Another connection took the same client id.
    TakenOver,
    /// An operator asked for it.
    Administrative,
    /// The broker is shutting down: the client did nothing wrong, so its will
    /// is not published (and a persistent session is kept, as at any end).
    ShuttingDown,
}

/// Result of appending one delivery to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Queued,
    /// Queued, but the oldest pending delivery was dropped to make room.
    QueuedDroppedOldest,
    Dropped,
}

/// What [`Session::take_deliverable`] did besides filling its batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Taken {
    /// Expired deliveries discarded.
    pub expired: usize,
    /// Deliveries dropped as older than `limits.max_queued_age_ms` (counted in `dropped_count`).
    pub aged: usize,
    /// The stored packet ids of the batch: a PUBLISH with one may go out once
    /// it is committed, so a resend after a restart uses the same id.
    pub commit: Commit,
}

/// The owner of a bridge's session (`[[bridge]]`): a user name no login
/// reaches through a listener unless the operator names a user so, so no
/// client can take the session over while the owner check is on. The
/// operator configured the bridge: the ACL, which governs clients, does not
/// recheck its subscriptions.
pub const BRIDGE_OWNER: &str = "$bridge";

/// Who a session belongs to: the user that created it. Only its owner may
/// resume it or take over its connection (unless the owner check is off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOwner {
    /// Restored from a store written before owners were recorded: the first
    /// login that resumes it claims it.
    Unknown,
    Anonymous,
    User(Arc<str>),
}

impl SessionOwner {
    /// The owner a login of `username` (None: anonymous) makes.
    pub fn of(username: Option<&Arc<str>>) -> SessionOwner {
        match username {
            Some(user) => SessionOwner::User(Arc::clone(user)),
            None => SessionOwner::Anonymous,
        }
    }

    /// For logs: the user name, `(anonymous)` or `(unknown)`.
    pub fn name(&self) -> &str {
        match self {
            SessionOwner::User(user) => user,
            SessionOwner::Anonymous => "(anonymous)",
            SessionOwner::Unknown => "(unknown)",
        }
    }
}

#[derive(Debug)]
struct SessionState {
    subscriptions: SubscriptionList,
    pending: PendingQueue,
    /// In flight towards the client, and QoS 2 ids received and acknowledged
    /// with PUBREC, awaiting PUBREL (a resent PUBLISH with one of these ids is
    /// not routed again).
    ids: PacketIds,
    next_seq: u64,
    /// Next store key for a delivery of this session.
    next_store_seq: u64,
    /// Seconds the session outlives its connection; `u32::MAX` never expires.
    expiry_interval: u32,
    /// Bumped on every attach, so timers started for one connection (will delay,
    /// session expiry) can tell the client came back since. 32 bits fit beside
    /// `expiry_interval`; a timer would have to outlast 4 billion attaches to be fooled.
    generation: u32,
    /// The bound connection's id, 0 while offline (the router numbers
    /// connections from 1), and the handle that tells it to end (None once used).
    /// Two fields rather than an optional pair, which would cost a word more.
    connection_id: u64,
    kick: Option<oneshot::Sender<KickReason>>,
    /// Who the session belongs to (None: anonymous): the user that created it,
    /// also used for access re-checks.
    username: Option<Arc<str>>,
    limits: QueueLimits,
    /// Boxed, and only once needed: an idle session pays one word for it.
    rare: Option<Box<RareState>>,
}

/// What few sessions ever need.
#[derive(Debug, Default)]
struct RareState {
    /// Deliveries the queue limits dropped.
    dropped: u64,
    /// Retained messages new subscriptions asked for, fed into `pending` as it empties.
    retained: RetainedBacklog,
    /// Told when the connection takes deliveries: stream readers wait on it
    /// for room in the queue (made on first use, so other sessions carry nothing).
    space: Option<Arc<Notify>>,
    /// Cluster mode: messages of other nodes this session had where it was
    /// served before (`marks.rs`).
    marks: crate::core::peer_marks::SessionMarks,
}

impl SessionState {
    fn rare(&mut self) -> &mut RareState {
        self.rare.get_or_insert_default()
    }

    fn has_retained_backlog(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| !r.retained.is_empty())
    }
}

/// How another node of the cluster took a session over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MovedAway {
    /// A connection there resumed it: the session lives on (a will waits no more).
    Resumed = 1,
    /// A clean-start connection there replaced it: the session ended here.
    Ended = 2,
}

/// [`Session`]'s `cluster_flags`: the bits of [`MovedAway`].
const MOVED_AWAY_BITS: u8 = 0b11;
/// [`Session`]'s `cluster_flags`: the session has marks (`marks.rs`).
const HAS_MARKS: u8 = 0b100;

#[derive(Debug)]
pub struct Session {
    pub client_id: Arc<str>,
    state: Mutex<SessionState>,
    wake: Notify,
    /// Something of this session was written to the store (or it was restored
    /// from it), so ending it must delete it there; a clean session's end costs
    /// no store operation.
    stored: AtomicBool,
    /// False for a session restored from a store written before owners were
    /// recorded: the first login to resume it claims it. Beside the other flags
    /// rather than in the state, where it would cost the session a size class.
    owner_known: AtomicBool,
    /// `DeliveryStyle::per_subscription`; atomics because the router reads them per publish.
    per_subscription: AtomicBool,
    /// `DeliveryStyle::queue_ack_window`, 0 meaning None.
    queue_ack_window: AtomicU32,
    /// Cluster mode, one byte (a flag more would cost the session a size class):
    /// - the low bits: another node took this session over ([`MovedAway`],
    ///   0 while it is here), so the will of the connection it ends is
    ///   settled by that: cancelled when the session resumed there;
    /// - [`HAS_MARKS`]: the session has marks (`marks.rs`); the router reads
    ///   it per message from another node, and looks further only when set.
    cluster_flags: AtomicU8,
    /// Where this session's state is stored while it is persistent (expiry > 0).
    store: Option<Arc<crate::store::Store>>,
}

impl Session {
    pub fn new(client_id: Arc<str>, expiry_interval: u32, limits: QueueLimits) -> Session {
        Session::with_store(client_id, expiry_interval, limits, None)
    }

    /// A session whose QoS 1/2 state is written to `store` while its expiry is above 0.
    pub fn with_store(
        client_id: Arc<str>,
        expiry_interval: u32,
        limits: QueueLimits,
        store: Option<Arc<crate::store::Store>>,
    ) -> Session {
        Session {
            client_id,
            state: Mutex::new(SessionState {
                subscriptions: SubscriptionList::default(),
                pending: PendingQueue::default(),
                ids: PacketIds::default(),
                next_seq: 0,
                next_store_seq: 1,
                expiry_interval,
                generation: 0,
                connection_id: 0,
                kick: None,
                username: None,
                limits,
                rare: None,
            }),
            wake: Notify::new(),
            stored: AtomicBool::new(false),
            owner_known: AtomicBool::new(true),
            per_subscription: AtomicBool::new(false),
            queue_ack_window: AtomicU32::new(0),
            cluster_flags: AtomicU8::new(0),
            store,
        }
    }

    /// Another node took this session over (cluster mode).
    pub(crate) fn set_moved_away(&self, how: MovedAway) {
        self.cluster_flags.fetch_and(HAS_MARKS, Ordering::Relaxed);
        self.cluster_flags.fetch_or(how as u8, Ordering::Relaxed);
    }

    /// Whether, and how, another node took this session over.
    pub fn moved_away(&self) -> Option<MovedAway> {
        match self.cluster_flags.load(Ordering::Relaxed) & MOVED_AWAY_BITS {
            1 => Some(MovedAway::Resumed),
            2 => Some(MovedAway::Ended),
            _ => None,
        }
    }

    /// The store handle, whether or not the session is persistent right now.
    fn persist(&self) -> Option<Persist<'_>> {
        let store = self.store.as_deref()?;
        Some(Persist {
            store,
            client_id: &self.client_id,
        })
    }

    /// The store handle if this session is persistent right now.
    fn persist_if(&self, state: &SessionState) -> Option<Persist<'_>> {
        let persist = self.persist().filter(|_| state.expiry_interval > 0);
        if persist.is_some() {
            self.mark_stored();
        }
        persist
    }

    /// Notes that the store holds something of this session.
    pub(crate) fn mark_stored(&self) {
        self.stored.store(true, Ordering::Relaxed);
    }

    /// True once the store may hold something of this session.
    pub(crate) fn is_stored(&self) -> bool {
        self.stored.load(Ordering::Relaxed)
    }

    /// Brings back one stored delivery at start: in flight if it had a packet id, else pending.
    pub(crate) fn restore_delivery(
        &self,
        delivery: Delivery,
        packet_id: Option<u16>,
        released: bool,
        queued_at_ms: u64,
    ) {
        let mut state = self.state.lock();
        state.next_store_seq = state.next_store_seq.max(delivery.seq + 1);
        match packet_id {
            Some(id) => {
                let seq = state.next_seq;
                state.next_seq += 1;
                let stage = if released {
                    InflightStage::Released
                } else {
                    InflightStage::Sent
                };
                state.ids.insert_inflight(
                    id,
                    InflightEntry {
                        delivery,
                        stage,
                        seq,
                    },
                );
            }
            None => state.pending.push_back(delivery, queued_at_ms),
        }
    }

    pub(crate) fn restore_incoming_qos2(&self, packet_id: u16) {
        self.state.lock().ids.insert_incoming_qos2(packet_id);
    }

    pub fn set_delivery_style(&self, style: DeliveryStyle) {
        self.per_subscription
            .store(style.per_subscription, Ordering::Release);
        self.queue_ack_window.store(
            queue_ack_window_word(style.queue_ack_window),
            Ordering::Release,
        );
    }

    pub fn delivery_style(&self) -> DeliveryStyle {
        let window = self.queue_ack_window.load(Ordering::Acquire);
        DeliveryStyle {
            per_subscription: self.per_subscription.load(Ordering::Acquire),
            queue_ack_window: (window > 0).then_some(window as usize),
        }
    }

    pub fn generation(&self) -> u32 {
        self.state.lock().generation
    }

    /// Binds a new connection; returns the previous connection's kick handle so the caller can end it.
    pub(crate) fn attach(
        &self,
        connection_id: u64,
        kick: oneshot::Sender<KickReason>,
        expiry_interval: u32,
    ) -> Option<oneshot::Sender<KickReason>> {
        debug_assert_ne!(connection_id, 0, "0 means offline");
        let mut state = self.state.lock();
        state.generation = state.generation.wrapping_add(1);
        state.expiry_interval = expiry_interval;
        state.connection_id = connection_id;
        state.kick.replace(kick)
    }

    /// Unbinds `connection_id` if it is still the bound one; returns true if it was.
    pub(crate) fn detach(&self, connection_id: u64) -> bool {
        let mut state = self.state.lock();
        let bound = state.connection_id != 0 && state.connection_id == connection_id;
        if bound {
            state.connection_id = 0;
            state.kick = None;
        }
        bound
    }

    /// Unbinds the live connection and tells it to end (a takeover: what it
    /// does when it ends no longer concerns this session).
    pub(crate) fn kick(&self, reason: KickReason) -> bool {
        let kick = {
            let mut state = self.state.lock();
            state.connection_id = 0;
            state.kick.take()
        };
        kick.is_some_and(|kick| kick.send(reason).is_ok())
    }

    /// Tells the live connection to end, leaving it bound: its own detach then
    /// does what the end of a connection does (a clean session ends, a
    /// persistent one is saved and starts its expiry).
    pub(crate) fn tell_to_end(&self, reason: KickReason) -> bool {
        let kick = self.state.lock().kick.take();
        kick.is_some_and(|kick| kick.send(reason).is_ok())
    }

    pub fn is_connected(&self) -> bool {
        self.state.lock().connection_id != 0
    }

    pub fn expiry_interval(&self) -> u32 {
        self.state.lock().expiry_interval
    }

    pub fn set_expiry_interval(&self, seconds: u32) {
        self.state.lock().expiry_interval = seconds;
    }

    pub(crate) fn add_subscription(&self, filter: Filter, options: SubscriptionOptions) -> bool {
        self.state.lock().subscriptions.insert(filter, options)
    }

    pub(crate) fn remove_subscription(&self, raw_filter: &str) -> Option<Filter> {
        let mut state = self.state.lock();
        if let Some(rare) = state.rare.as_mut() {
            rare.retained.remove_filter(raw_filter, "unsubscribed");
        }
        state
            .subscriptions
            .remove(raw_filter)
            .map(|(filter, _)| filter)
    }

    /// Whether a subscription more on a filter other than `raw_filter` would pass `max`.
    pub fn subscriptions_full(&self, raw_filter: &str, max: usize) -> bool {
        let state = self.state.lock();
        state.subscriptions.len() >= max && !state.subscriptions.contains(raw_filter)
    }

    /// The exceptions of the subscription on `raw_filter` (none if there is no such subscription).
    pub fn exceptions_of(&self, raw_filter: &str) -> Exceptions {
        let state = self.state.lock();
        let found = state
            .subscriptions
            .iter()
            .find(|(f, _)| f.as_str() == raw_filter);
        found.map_or(Exceptions::NONE, |(_, options)| options.exceptions.clone())
    }

    pub fn subscriptions(&self) -> Vec<(Filter, SubscriptionOptions)> {
        self.state.lock().subscriptions.iter().cloned().collect()
    }

    /// Who the client last logged in as; None for anonymous clients.
    pub fn username(&self) -> Option<Arc<str>> {
        self.state.lock().username.clone()
    }

    /// Who the session belongs to.
    pub fn owner(&self) -> SessionOwner {
        let state = self.state.lock();
        // Read under the state's lock, which `set_owner` holds when it writes both.
        match (&state.username, self.owner_known.load(Ordering::Relaxed)) {
            (_, false) => SessionOwner::Unknown,
            (None, true) => SessionOwner::Anonymous,
            (Some(user), true) => SessionOwner::User(Arc::clone(user)),
        }
    }

    /// Sets who the session belongs to (at creation, restore, or a claim).
    pub(crate) fn set_owner(&self, owner: SessionOwner) {
        let mut state = self.state.lock();
        self.owner_known
            .store(owner != SessionOwner::Unknown, Ordering::Relaxed);
        state.username = match owner {
            SessionOwner::User(user) => Some(user),
            SessionOwner::Anonymous | SessionOwner::Unknown => None,
        };
    }

    pub(crate) fn take_subscriptions(&self) -> Vec<Filter> {
        let mut state = self.state.lock();
        if let Some(rare) = state.rare.as_mut() {
            rare.retained = RetainedBacklog::default();
        }
        state
            .subscriptions
            .take_all()
            .into_iter()
            .map(|(filter, _)| filter)
            .collect()
    }
}

/// `DeliveryStyle::queue_ack_window` as stored: 0 for None, at most `u32::MAX`.
fn queue_ack_window_word(window: Option<usize>) -> u32 {
    window.map_or(0, |w| u32::try_from(w).unwrap_or(u32::MAX))
}

/// Trie key: a session compared by identity, so a match leads straight to the session without a lookup by id.
#[derive(Debug, Clone)]
pub struct SessionRef(pub Arc<Session>);

impl PartialEq for SessionRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SessionRef {}

impl std::hash::Hash for SessionRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as usize).hash(state);
    }
}
