//! The fabric between nodes on core NATS: [`NatsFabric`] implements the
//! core's `Fabric`. Client messages go out on the subject of their topic;
//! each node subscribes to the subjects of the filters its sessions hold.
//!
//! - Out: `forward` only queues (bounded; never waits in the router's
//!   publish path); one task encodes (`wire.rs`), numbers and publishes them
//!   in queue order (consecutive messages of one topic as one batch), so one node's messages reach NATS in one order, at most
//!   a window ahead of what the other nodes confirmed (`window.rs`). While
//!   the queue is over its high mark, connections wait (`wait_room`) before
//!   reading more: publishers slow down instead of messages being dropped.
//! - Interest: counted per filter here; the inbound task (`inbound.rs`)
//!   subscribes a filter's subjects at the first session and unsubscribes
//!   them at the last: 10,000 sessions on `sensors/#` are one interest.
//! - In: see `inbound.rs` (one copy per node, order per origin, no echo).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::status::{run_heartbeat, ClusterStatus};
use super::subject::topic_to_subject;
use super::window::Window;
use super::wire::{self, Origin};
use super::Cluster;
use crate::core::fabric::Fabric;
use crate::core::message::Message;
use crate::core::router::Router;

/// Messages waiting to go to NATS; beyond this (NATS down or slow) new ones
/// are dropped for other nodes (counted, logged once per outage) while local
/// delivery goes on. Pointers to messages held anyway: 1 MiB of queue.
pub const OUTBOUND_QUEUE: usize = 131_072;
/// Messages taken from the queue per wake-up of the outbound task.
const OUTBOUND_BATCH: usize = 512;
/// A batch of one topic's messages is sent once it holds this many bytes
/// (far below NATS' smallest `max_payload`; a bigger message goes alone).
const BATCH_BYTES: usize = 32 * 1024;
/// Queued messages above which connections stop reading until it drains...
const CONGESTED_ABOVE: usize = OUTBOUND_QUEUE / 4;
/// ...to this.
const ROOM_BELOW: usize = CONGESTED_ABOVE / 2;
const ROOM_RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Counters of the fabric (`/metrics`); relaxed atomics.
#[derive(Debug, Default)]
pub struct FabricStats {
    /// Messages published to NATS for other nodes.
    pub forwarded: AtomicU64,
    /// NATS messages those went in (a batch of one topic's messages is one).
    pub nats_messages: AtomicU64,
    /// Messages from other nodes routed here.
    pub received: AtomicU64,
    /// Messages not forwarded: the queue to NATS was full.
    pub dropped: AtomicU64,
    /// Of those, messages of QoS 1 or 2 (their publisher had its ack).
    pub dropped_acknowledged: AtomicU64,
    /// Times sending waited for other nodes to confirm (the window was full).
    pub window_waits: AtomicU64,
    /// Syncs taken as confirmed after `window::CONFIRM_TIMEOUT` without every node.
    pub confirm_timeouts: AtomicU64,
    /// Messages not forwarded: their topic has no NATS subject (too long).
    pub unforwardable: AtomicU64,
    /// Messages from NATS that were not ours to route (bad encoding, our own, repeats).
    pub discarded: AtomicU64,
    /// NATS subscriptions held for local interest (a gauge).
    pub subscriptions: AtomicU64,
    /// Distinct filters with local interest (a gauge).
    pub filters: AtomicU64,
}

/// Filters the sessions of this node hold, counted, and which changed since
/// the inbound task last looked.
#[derive(Debug, Default)]
pub(super) struct Interest {
    state: Mutex<InterestState>,
    pub(super) changed: Notify,
}

#[derive(Debug, Default)]
struct InterestState {
    counts: HashMap<String, usize>,
    /// In the order of the changes (NATS subscribes them in that order).
    changed: Vec<String>,
}

impl Interest {
    fn add(&self, filter: &str) {
        let mut state = self.state.lock();
        let count = state.counts.entry(filter.to_string()).or_insert(0);
        *count += 1;
        if *count == 1 {
            state.changed.push(filter.to_string());
            drop(state);
            self.changed.notify_one();
        }
    }

    fn remove(&self, filter: &str) {
        let mut state = self.state.lock();
        let Some(count) = state.counts.get_mut(filter) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            state.counts.remove(filter);
            state.changed.push(filter.to_string());
            drop(state);
            self.changed.notify_one();
        }
    }

    /// The filters whose interest started or ended since the last call, each
    /// with whether it is wanted now.
    pub(super) fn take_changes(&self) -> Vec<(String, bool)> {
        let mut state = self.state.lock();
        let changed = std::mem::take(&mut state.changed);
        let mut seen = std::collections::HashSet::with_capacity(changed.len());
        changed
            .into_iter()
            .filter(|filter| seen.insert(filter.clone()))
            .map(|filter| {
                let wanted = state.counts.contains_key(&filter);
                (filter, wanted)
            })
            .collect()
    }

    pub(super) fn filter_count(&self) -> usize {
        self.state.lock().counts.len()
    }
}

/// The core's view of the cluster: queues messages out, counts interest.
#[derive(Debug)]
pub struct NatsFabric {
    outbound: mpsc::Sender<Arc<Message>>,
    interest: Arc<Interest>,
    stats: Arc<FabricStats>,
    /// True while messages are being dropped (logged when it starts and ends).
    dropping: Arc<AtomicBool>,
    /// Woken when the queue drained below [`ROOM_BELOW`].
    room: Arc<Notify>,
    connection: Arc<super::ConnectionState>,
}

impl Fabric for NatsFabric {
    fn forward(&self, message: &Arc<Message>) {
        if self.outbound.try_send(Arc::clone(message)).is_err() {
            if message.qos != crate::core::message::QoS::AtMostOnce {
                self.stats
                    .dropped_acknowledged
                    .fetch_add(1, Ordering::Relaxed);
            }
            let total = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if !self.dropping.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    dropped_total = total,
                    "cluster: messages for other nodes are being dropped: the queue to NATS is \
                     full (NATS unreachable or too slow); local delivery goes on"
                );
            }
        }
    }

    fn interest_added(&self, filter: &str) {
        self.interest.add(filter);
    }

    fn interest_removed(&self, filter: &str) {
        self.interest.remove(filter);
    }

    fn wait_room(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>> {
        if !self.congested() {
            return None;
        }
        Some(Box::pin(async move {
            loop {
                let room = self.room.notified();
                tokio::pin!(room);
                room.as_mut().enable();
                if !self.congested() {
                    return;
                }
                // Rechecked now and then: NATS going down ends congestion unannounced.
                let _ = tokio::time::timeout(ROOM_RECHECK, room).await;
            }
        }))
    }
}

impl NatsFabric {
    fn queued(&self) -> usize {
        self.outbound.max_capacity() - self.outbound.capacity()
    }

    /// Over the high mark while NATS is up (while it is down nothing drains:
    /// local traffic must go on, and the queue drops what does not fit).
    fn congested(&self) -> bool {
        self.queued() > CONGESTED_ABOVE && self.connection.is_connected()
    }
}

impl NatsFabric {
    pub fn stats(&self) -> &Arc<FabricStats> {
        &self.stats
    }
}

/// Joins `router` to the cluster: starts the outbound, inbound and heartbeat
/// tasks on `tracker` (they end with `shutdown`) and returns the fabric to
/// give the router (`Router::set_fabric`) and the status operators read.
pub fn start(
    cluster: &Cluster,
    router: Arc<Router>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> (Arc<NatsFabric>, Arc<ClusterStatus>) {
    let (outbound, queue) = mpsc::channel(OUTBOUND_QUEUE);
    let stats = Arc::new(FabricStats::default());
    let interest = Arc::new(Interest::default());
    let dropping = Arc::new(AtomicBool::new(false));
    let room = Arc::new(Notify::new());
    let epoch = rand::random::<u64>();
    let status = Arc::new(ClusterStatus::new(cluster, Arc::clone(&stats)));
    tracker.spawn(run_outbound(
        Outbound {
            cluster: cluster.clone(),
            status: Arc::clone(&status),
            epoch,
            stats: Arc::clone(&stats),
            dropping: Arc::clone(&dropping),
            room: Arc::clone(&room),
        },
        queue,
        shutdown.clone(),
    ));
    // Unconstrained: tokio's co-operative budget would make a subscription's
    // channel answer Pending while it holds messages, which the inbound task
    // would take for "drained" (it yields after every round by itself).
    tracker.spawn(tokio::task::unconstrained(super::inbound::run(
        cluster.clone(),
        router,
        Arc::clone(&interest),
        Arc::clone(&stats),
        shutdown.clone(),
    )));
    tracker.spawn(run_heartbeat(
        cluster.clone(),
        Arc::clone(&status),
        shutdown,
    ));
    let fabric = Arc::new(NatsFabric {
        outbound,
        interest,
        stats,
        dropping,
        room,
        connection: Arc::clone(cluster.state()),
    });
    (fabric, status)
}

/// What the outbound task works with.
struct Outbound {
    cluster: Cluster,
    status: Arc<ClusterStatus>,
    /// This run of the node: receivers order and de-duplicate per run.
    epoch: u64,
    stats: Arc<FabricStats>,
    dropping: Arc<AtomicBool>,
    room: Arc<Notify>,
}

/// Publishes queued messages in queue order, numbered 1, 2, … in this run
/// (`epoch`): receivers order and de-duplicate by that number. At most a
/// window of them is out unconfirmed (`window.rs`). Consecutive messages of
/// one topic go as one NATS message (`wire::Batch`), so the order on NATS is
/// the queue's.
async fn run_outbound(
    out: Outbound,
    mut queue: mpsc::Receiver<Arc<Message>>,
    shutdown: CancellationToken,
) {
    let Outbound {
        cluster,
        status,
        epoch,
        stats,
        dropping,
        room,
    } = out;
    let node = Arc::clone(cluster.node());
    let mut sender = Sender {
        window: Window::open(&cluster, status, Arc::clone(&stats), epoch).await,
        cluster,
        stats: Arc::clone(&stats),
        batch: wire::Batch::default(),
        subject: None,
        topic: None,
        seq: 0,
    };
    let mut taken_now = Vec::with_capacity(OUTBOUND_BATCH);
    'run: loop {
        let taken = tokio::select! {
            taken = queue.recv_many(&mut taken_now, OUTBOUND_BATCH) => taken,
            () = shutdown.cancelled() => break,
        };
        if taken == 0 {
            break;
        }
        let mut now = Instant::now();
        for message in taken_now.drain(..) {
            if sender.topic.as_deref() != Some(&*message.topic) {
                if !sender.flush().await {
                    return;
                }
                match topic_to_subject(&message.topic) {
                    Ok(subject) => {
                        sender.subject = Some(async_nats::Subject::from(subject));
                        sender.topic = Some(Arc::clone(&message.topic));
                    }
                    Err(e) => {
                        let total = stats.unforwardable.fetch_add(1, Ordering::Relaxed) + 1;
                        if total == 1 || total.is_multiple_of(1000) {
                            tracing::warn!(topic_len = message.topic.len(), total, error = %e,
                                "cluster: a message was not sent to other nodes: its topic is too long for NATS");
                        }
                        continue;
                    }
                }
            }
            let seq = sender.seq + 1;
            if sender.window.as_mut().is_some_and(|w| !w.has_room(seq)) {
                // What waits in the batch goes first: the wait is for its confirmation.
                if !sender.flush().await {
                    return;
                }
                if let Some(window) = sender.window.as_mut() {
                    if !window.admit(seq, &shutdown).await {
                        break 'run;
                    }
                }
                now = Instant::now();
            }
            sender.seq = seq;
            let origin = Origin {
                node: &node,
                epoch,
                seq,
            };
            // Taken after any wait of the window: the expiry left is counted from it.
            sender.batch.push(&message, origin, now);
            if sender.batch.size() >= BATCH_BYTES && !sender.flush().await {
                return;
            }
        }
        if !sender.flush().await {
            return;
        }
        if queue.len() < ROOM_BELOW {
            room.notify_waiters();
        }
        if dropping.load(Ordering::Relaxed) && queue.len() < OUTBOUND_QUEUE / 2 {
            dropping.store(false, Ordering::Relaxed);
            tracing::info!(
                dropped_total = stats.dropped.load(Ordering::Relaxed),
                "cluster: messages for other nodes flow again"
            );
        }
    }
    // Connections waiting for room read on (the node is stopping).
    room.notify_waiters();
    // What was handed to the client goes out before the node stops.
    let client = sender.cluster.client();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), client.flush()).await;
}

/// The outbound task's sending state: the batch being gathered (messages
/// of one topic) and the window.
struct Sender {
    cluster: Cluster,
    window: Option<Window>,
    stats: Arc<FabricStats>,
    batch: wire::Batch,
    /// The subject and topic of the batch being gathered.
    subject: Option<async_nats::Subject>,
    topic: Option<Arc<str>>,
    /// The last sequence number given.
    seq: u64,
}

impl Sender {
    /// Publishes the batch gathered, if any; false once the client is closed
    /// (it reconnects by itself: closed means the node is stopping).
    async fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let Some(subject) = self.subject.clone() else {
            return true;
        };
        let count = self.batch.len() as u64;
        let payload = self.batch.take();
        if self
            .cluster
            .client()
            .publish(subject, payload)
            .await
            .is_err()
        {
            return false;
        }
        self.stats.forwarded.fetch_add(count, Ordering::Relaxed);
        self.stats.nats_messages.fetch_add(1, Ordering::Relaxed);
        if let Some(window) = self.window.as_mut() {
            window.sent(self.seq).await;
        }
        true
    }
}
