//! One client's state, kept by the core whatever the protocol: its
//! subscriptions, the deliveries waiting for it, and its in-flight window.
//!
//! Publishers append to `pending` under a short, never-awaited lock and wake
//! the connection task only when the queue goes from empty to non-empty, so a
//! burst of messages costs one wake-up, not one per message.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};

use crate::core::message::{Delivery, QoS};
use crate::core::pending::{delivery_bytes, PendingQueue};
use crate::core::persist::Persist;
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
    pub max_queued: usize,
    /// Topic and payload bytes a session's queue may hold (0: no byte limit).
    pub max_queued_bytes: usize,
    pub overflow: OverflowPolicy,
}

impl QueueLimits {
    /// Would `queue` be over these limits with one more delivery of `size` bytes?
    fn full_for(&self, queue: &PendingQueue, size: usize) -> bool {
        queue.len() >= self.max_queued
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
}

/// Stage of an outbound QoS 1/2 delivery awaiting its acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflightStage {
    /// Sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Sent,
    /// QoS 2 after PUBREC: message no longer held for resend, waiting for PUBCOMP.
    Released,
}

#[derive(Debug, Clone)]
pub struct InflightEntry {
    pub delivery: Delivery,
    pub stage: InflightStage,
    /// Send order, so a reconnecting client gets resends in the original order.
    seq: u64,
}

/// Result of appending one delivery to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Queued,
    /// Queued, but the oldest pending delivery was dropped to make room.
    QueuedDroppedOldest,
    Dropped,
}

#[derive(Debug)]
struct SessionState {
    subscriptions: SubscriptionList,
    pending: PendingQueue,
    inflight: HashMap<u16, InflightEntry>,
    next_seq: u64,
    /// Next store key for a delivery of this session.
    next_store_seq: u64,
    next_packet_id: u16,
    /// QoS 2 packet ids received and acknowledged with PUBREC, awaiting PUBREL:
    /// a resent PUBLISH with one of these ids is not routed again.
    incoming_qos2: HashSet<u16>,
    /// Seconds the session outlives its connection; `u32::MAX` never expires.
    expiry_interval: u32,
    connection: Option<ConnectionSlot>,
    /// Who the connected client logged in as (None: anonymous), for access re-checks.
    username: Option<Arc<str>>,
    limits: QueueLimits,
    dropped: u64,
}

impl SessionState {
    /// Next packet id not in flight; the caller ensures fewer than 65535 are.
    fn allocate_packet_id(&mut self) -> u16 {
        let mut id = self.next_packet_id;
        while self.inflight.contains_key(&id) {
            id = if id == u16::MAX { 1 } else { id + 1 };
        }
        self.next_packet_id = if id == u16::MAX { 1 } else { id + 1 };
        id
    }
}

#[derive(Debug)]
struct ConnectionSlot {
    id: u64,
    kick: oneshot::Sender<KickReason>,
}

#[derive(Debug)]
pub struct Session {
    pub client_id: Arc<str>,
    /// Bumped on every attach, so timers started for one connection (will delay,
    /// session expiry) can tell the client came back since.
    generation: AtomicU64,
    state: Mutex<SessionState>,
    wake: Notify,
    /// Something of this session was written to the store (or it was restored
    /// from it), so ending it must delete it there; a clean session's end costs
    /// no store operation.
    stored: AtomicBool,
    /// `DeliveryStyle::per_subscription`; atomics because the router reads them per publish.
    per_subscription: AtomicBool,
    /// `DeliveryStyle::queue_ack_window`, 0 meaning None.
    queue_ack_window: AtomicUsize,
    /// Where this session's state is stored while it is persistent (expiry > 0).
    persist: Option<Persist>,
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
        let persist = store.map(|store| Persist {
            store,
            client_id: Arc::clone(&client_id),
        });
        Session {
            client_id,
            generation: AtomicU64::new(0),
            state: Mutex::new(SessionState {
                subscriptions: SubscriptionList::default(),
                pending: PendingQueue::default(),
                inflight: HashMap::new(),
                next_seq: 0,
                next_store_seq: 1,
                next_packet_id: 1,
                incoming_qos2: HashSet::new(),
                expiry_interval,
                connection: None,
                username: None,
                limits,
                dropped: 0,
            }),
            wake: Notify::new(),
            stored: AtomicBool::new(false),
            per_subscription: AtomicBool::new(false),
            queue_ack_window: AtomicUsize::new(0),
            persist,
        }
    }

    /// The store handle if this session is persistent right now.
    fn persist_if(&self, state: &SessionState) -> Option<&Persist> {
        let persist = self.persist.as_ref().filter(|_| state.expiry_interval > 0);
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
                state.inflight.insert(
                    id,
                    InflightEntry {
                        delivery,
                        stage,
                        seq,
                    },
                );
            }
            None => state.pending.push_back(delivery),
        }
    }

    pub(crate) fn restore_incoming_qos2(&self, packet_id: u16) {
        self.state.lock().incoming_qos2.insert(packet_id);
    }

    pub fn set_delivery_style(&self, style: DeliveryStyle) {
        self.per_subscription
            .store(style.per_subscription, Ordering::Release);
        self.queue_ack_window
            .store(style.queue_ack_window.unwrap_or(0), Ordering::Release);
    }

    pub fn delivery_style(&self) -> DeliveryStyle {
        let window = self.queue_ack_window.load(Ordering::Acquire);
        DeliveryStyle {
            per_subscription: self.per_subscription.load(Ordering::Acquire),
            queue_ack_window: (window > 0).then_some(window),
        }
    }

    /// Removes and returns the deliveries `select` picks that the client has not
    /// acknowledged: in flight and not yet released (send order), then pending.
    pub(crate) fn take_unfinished(&self, select: impl Fn(&Delivery) -> bool) -> Vec<Delivery> {
        let mut state = self.state.lock();
        let mut inflight: Vec<(u64, u16)> = state
            .inflight
            .iter()
            .filter(|(_, e)| e.stage == InflightStage::Sent && select(&e.delivery))
            .map(|(id, e)| (e.seq, *id))
            .collect();
        inflight.sort_unstable();
        let mut out: Vec<Delivery> = inflight
            .into_iter()
            .filter_map(|(_, id)| state.inflight.remove(&id).map(|e| e.delivery))
            .collect();
        out.extend(state.pending.take_matching(select));
        if let Some(persist) = &self.persist {
            for delivery in &out {
                persist.delete_delivery(delivery.seq);
            }
        }
        out
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Binds a new connection; returns the previous connection's kick handle so the caller can end it.
    pub(crate) fn attach(
        &self,
        connection_id: u64,
        kick: oneshot::Sender<KickReason>,
        expiry_interval: u32,
    ) -> Option<oneshot::Sender<KickReason>> {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut state = self.state.lock();
        state.expiry_interval = expiry_interval;
        state
            .connection
            .replace(ConnectionSlot {
                id: connection_id,
                kick,
            })
            .map(|old| old.kick)
    }

    /// Unbinds `connection_id` if it is still the bound one; returns true if it was.
    pub(crate) fn detach(&self, connection_id: u64) -> bool {
        let mut state = self.state.lock();
        match &state.connection {
            Some(slot) if slot.id == connection_id => {
                state.connection = None;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn kick(&self, reason: KickReason) -> bool {
        let slot = self.state.lock().connection.take();
        match slot {
            Some(slot) => slot.kick.send(reason).is_ok(),
            None => false,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.state.lock().connection.is_some()
    }

    pub fn expiry_interval(&self) -> u32 {
        self.state.lock().expiry_interval
    }

    pub fn set_expiry_interval(&self, seconds: u32) {
        self.state.lock().expiry_interval = seconds;
    }

    /// Appends a delivery, applying the queue bound; wakes the connection if the queue was empty.
    pub fn push(&self, mut delivery: Delivery) -> PushOutcome {
        let mut state = self.state.lock();
        // Offline sessions keep only what has a delivery guarantee.
        if state.connection.is_none() && delivery.qos == crate::core::message::QoS::AtMostOnce {
            return PushOutcome::Dropped;
        }
        let mut outcome = PushOutcome::Queued;
        let size = delivery_bytes(&delivery);
        let limits = state.limits;
        if limits.full_for(&state.pending, size) {
            let fits_alone = limits.max_queued_bytes == 0 || size <= limits.max_queued_bytes;
            match limits.overflow {
                OverflowPolicy::DropOldest if fits_alone => {
                    while limits.full_for(&state.pending, size) {
                        if let Some(old) = state.pending.pop_front() {
                            if let Some(persist) = &self.persist {
                                persist.delete_delivery(old.seq);
                            }
                        }
                        state.dropped += 1;
                    }
                    outcome = PushOutcome::QueuedDroppedOldest;
                }
                _ => {
                    state.dropped += 1;
                    return PushOutcome::Dropped;
                }
            }
        }
        if delivery.qos != QoS::AtMostOnce {
            if let Some(persist) = self.persist_if(&state) {
                delivery.seq = state.next_store_seq;
                state.next_store_seq += 1;
                persist.put_delivery(&delivery, None, false);
            }
        }
        let was_empty = state.pending.is_empty();
        state.pending.push_back(delivery);
        drop(state);
        if was_empty {
            self.wake.notify_one();
        }
        outcome
    }

    /// True when one more delivery of `size` bytes does not fit and the policy is to refuse it.
    pub fn refuses(&self, size: usize) -> bool {
        let state = self.state.lock();
        state.limits.overflow == OverflowPolicy::Refuse
            && state.limits.full_for(&state.pending, size)
    }

    /// Applies new queue limits (config reload); a queue already over them keeps
    /// what it holds and takes more only once below them.
    pub fn set_limits(&self, limits: QueueLimits) {
        self.state.lock().limits = limits;
    }

    /// Resolves when deliveries may be waiting.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    /// Moves up to `max` pending deliveries into `out`.
    pub fn take_pending(&self, max: usize, out: &mut Vec<Delivery>) {
        let mut state = self.state.lock();
        state.pending.drain_into(max, out);
    }

    /// Moves deliveries the connection may send now into `out`: QoS 0 always, QoS 1/2
    /// while fewer than `window` are in flight (each gets a packet id and is recorded
    /// in flight). Stops at the first QoS 1/2 delivery that does not fit, so order is
    /// kept. Expired deliveries are discarded; returns how many.
    pub fn take_deliverable(
        &self,
        max: usize,
        window: usize,
        now: Instant,
        out: &mut Vec<(Delivery, Option<u16>)>,
    ) -> usize {
        let mut state = self.state.lock();
        let mut expired = 0;
        while out.len() < max {
            let Some(front) = state.pending.front() else {
                break;
            };
            if front.message.is_expired(now) {
                if let (Some(old), Some(persist)) = (state.pending.pop_front(), &self.persist) {
                    persist.delete_delivery(old.seq);
                }
                expired += 1;
                continue;
            }
            if front.qos == crate::core::message::QoS::AtMostOnce {
                if let Some(delivery) = state.pending.pop_front() {
                    out.push((delivery, None));
                }
                continue;
            }
            if state.inflight.len() >= window.min(usize::from(u16::MAX) - 1) {
                break;
            }
            let Some(delivery) = state.pending.pop_front() else {
                break;
            };
            let id = state.allocate_packet_id();
            if delivery.seq != 0 {
                if let Some(persist) = self.persist_if(&state) {
                    // The packet id is stored so a resend after a restart uses the same one.
                    persist.put_delivery(&delivery, Some(id), false);
                }
            }
            let seq = state.next_seq;
            state.next_seq += 1;
            state.inflight.insert(
                id,
                InflightEntry {
                    delivery: delivery.clone(),
                    stage: InflightStage::Sent,
                    seq,
                },
            );
            out.push((delivery, Some(id)));
        }
        expired
    }

    pub fn pending_len(&self) -> usize {
        self.state.lock().pending.len()
    }

    pub fn dropped_count(&self) -> u64 {
        self.state.lock().dropped
    }

    pub fn inflight_len(&self) -> usize {
        self.state.lock().inflight.len()
    }

    /// Removes an in-flight delivery in `stage`; false if there is none with that id and stage.
    pub fn finish_inflight(&self, packet_id: u16, stage: InflightStage) -> bool {
        let mut state = self.state.lock();
        match state.inflight.get(&packet_id) {
            Some(entry) if entry.stage == stage => {
                if let (Some(entry), Some(persist)) =
                    (state.inflight.remove(&packet_id), &self.persist)
                {
                    persist.delete_delivery(entry.delivery.seq);
                }
                true
            }
            _ => false,
        }
    }

    /// PUBREC received: the QoS 2 delivery moves to the release stage. False if unknown.
    pub fn release_inflight(&self, packet_id: u16) -> bool {
        let mut state = self.state.lock();
        match state.inflight.get_mut(&packet_id) {
            Some(entry) => {
                entry.stage = InflightStage::Released;
                if entry.delivery.seq != 0 {
                    if let Some(persist) = &self.persist {
                        persist.put_delivery(&entry.delivery, Some(packet_id), true);
                    }
                }
                true
            }
            None => false,
        }
    }

    /// Every in-flight delivery in send order, for resending after a reconnect.
    pub fn inflight_in_order(&self) -> Vec<(u16, InflightEntry)> {
        let state = self.state.lock();
        let mut entries: Vec<(u16, InflightEntry)> = state
            .inflight
            .iter()
            .map(|(id, e)| (*id, e.clone()))
            .collect();
        entries.sort_by_key(|(_, e)| e.seq);
        entries
    }

    /// Records an incoming QoS 2 id; false if it was already recorded (a duplicate PUBLISH).
    pub fn record_incoming_qos2(&self, packet_id: u16) -> bool {
        let mut state = self.state.lock();
        let inserted = state.incoming_qos2.insert(packet_id);
        if inserted {
            if let Some(persist) = self.persist_if(&state) {
                persist.put_incoming_qos2(packet_id);
            }
        }
        inserted
    }

    pub fn incoming_qos2_len(&self) -> usize {
        self.state.lock().incoming_qos2.len()
    }

    /// PUBREL: forgets the id; false if it was unknown. Only a session the store
    /// holds anything of deletes it there: a clean session's PUBREL costs no
    /// store operation (and no group commit).
    pub fn release_incoming_qos2(&self, packet_id: u16) -> bool {
        let removed = self.state.lock().incoming_qos2.remove(&packet_id);
        if let (true, true, Some(persist)) = (removed, self.is_stored(), &self.persist) {
            persist.delete_incoming_qos2(packet_id);
        }
        removed
    }

    pub(crate) fn add_subscription(&self, filter: Filter, options: SubscriptionOptions) -> bool {
        self.state.lock().subscriptions.insert(filter, options)
    }

    pub(crate) fn remove_subscription(&self, raw_filter: &str) -> Option<Filter> {
        self.state
            .lock()
            .subscriptions
            .remove(raw_filter)
            .map(|(filter, _)| filter)
    }

    /// Whether a subscription more on a filter other than `raw_filter` would pass `max`.
    pub fn subscriptions_full(&self, raw_filter: &str, max: usize) -> bool {
        let state = self.state.lock();
        state.subscriptions.len() >= max && !state.subscriptions.contains(raw_filter)
    }

    pub fn subscriptions(&self) -> Vec<(Filter, SubscriptionOptions)> {
        self.state.lock().subscriptions.iter().cloned().collect()
    }

    /// Records who the client logged in as (set at every connect).
    pub fn set_username(&self, username: Option<Arc<str>>) {
        self.state.lock().username = username;
    }

    /// Who the client last logged in as; None for anonymous clients.
    pub fn username(&self) -> Option<Arc<str>> {
        self.state.lock().username.clone()
    }

    pub(crate) fn take_subscriptions(&self) -> Vec<Filter> {
        self.state
            .lock()
            .subscriptions
            .take_all()
            .into_iter()
            .map(|(filter, _)| filter)
            .collect()
    }
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
