//! The fabric between nodes on core NATS: [`NatsFabric`] implements the
//! core's `Fabric`. Client messages go out on the subject of their topic;
//! each node subscribes to the subjects of the filters its sessions hold.
//!
//! - Out: `forward` only queues (bounded; never waits in the router's
//!   publish path); one task encodes (`wire.rs`), numbers and publishes them
//!   in queue order (consecutive messages of one topic as one batch): see
//!   `outbound.rs`.
//!   One node's messages reach NATS in one order, at most a window ahead of
//!   what the other nodes confirmed (`window.rs`). While the queue is over
//!   its high mark, connections wait (`wait_room`) before reading more:
//!   publishers slow down instead of messages being dropped.
//! - Interest: counted per filter here; the inbound task (`inbound.rs`)
//!   subscribes a filter's subjects at the first session and unsubscribes
//!   them at the last: 10,000 sessions on `sensors/#` are one interest.
//! - In: see `inbound.rs` (one copy per node, order per origin, no echo).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::confirmed::{Confirmed, ConfirmedTx};
use super::kick::Kick;
use super::marks::RoutedMarks;
use super::out_queue::OutQueue;
use super::outbound::Outbound;
use super::status::{run_heartbeat, ClusterStatus};
use super::Cluster;
use crate::core::fabric::Fabric;
use crate::core::message::Message;
use crate::core::peer_marks::PeerMark;
use crate::core::router::Router;

/// Messages waiting to go to NATS; beyond this (NATS down or slow) new ones
/// are dropped for other nodes (counted, logged once per outage) while local
/// delivery goes on. A client's QoS ≥ 1 publish is refused instead
/// (`Fabric::has_room`), so none is acknowledged without the other nodes. Pointers to messages held anyway: 1 MiB of queue.
pub const OUTBOUND_QUEUE: usize = 131_072;
/// Queued messages above which connections stop reading until it drains...
const CONGESTED_ABOVE: usize = OUTBOUND_QUEUE / 4;
/// ...to this.
pub(super) const ROOM_BELOW: usize = CONGESTED_ABOVE / 2;
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
    /// The changes subscribed at NATS so far, counted as in `InterestState`.
    pub(super) applied: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct InterestState {
    counts: HashMap<String, usize>,
    /// In the order of the changes (NATS subscribes them in that order).
    changed: Vec<String>,
    /// Changes made so far (what `Interest::applied` catches up with).
    made: u64,
}

impl Interest {
    fn add(&self, filter: &str) {
        let mut state = self.state.lock();
        let count = state.counts.entry(filter.to_string()).or_insert(0);
        *count += 1;
        if *count == 1 {
            state.changed.push(filter.to_string());
            state.made += 1;
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
            state.made += 1;
            drop(state);
            self.changed.notify_one();
        }
    }

    /// The filters whose interest started or ended since the last call, each
    /// with whether it is wanted now, and the count of changes they bring
    /// the subscriptions to (for [`Interest::applied`]).
    pub(super) fn take_changes(&self) -> (Vec<(String, bool)>, u64) {
        let mut state = self.state.lock();
        let made = state.made;
        let changed = std::mem::take(&mut state.changed);
        let mut seen = std::collections::HashSet::with_capacity(changed.len());
        let changed = changed
            .into_iter()
            .filter(|filter| seen.insert(filter.clone()))
            .map(|filter| {
                let wanted = state.counts.contains_key(&filter);
                (filter, wanted)
            })
            .collect();
        (changed, made)
    }

    fn made(&self) -> u64 {
        self.state.lock().made
    }

    pub(super) fn filter_count(&self) -> usize {
        self.state.lock().counts.len()
    }
}

/// Longest wait for this node's interest to be subscribed (a session
/// moving here; NATS unreachable meanwhile).
const INTEREST_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The core's view of the cluster: queues messages out, counts interest.
#[derive(Debug)]
pub struct NatsFabric {
    /// Messages for the outbound task, numbered as queued (`out_queue.rs`).
    queue: Arc<OutQueue>,
    /// The outbound task's wake-up (`kick.rs`).
    kick: Arc<Kick>,
    /// What the other nodes confirmed (`window.rs`).
    confirmed: Arc<Confirmed>,
    /// What was taken as confirmed after a timeout (`window.rs`).
    timed_out: Arc<super::window::TimedOut>,
    interest: Arc<Interest>,
    stats: Arc<FabricStats>,
    /// True while messages are being dropped (logged when it starts and ends).
    dropping: Arc<AtomicBool>,
    /// Woken when the queue drained below [`ROOM_BELOW`].
    room: Arc<Notify>,
    connection: Arc<super::ConnectionState>,
    /// This node's name and run: its own messages' origin.
    node: Arc<str>,
    epoch: u64,
    /// Per origin, the last message routed here (kept by the inbound task).
    routed: Arc<RoutedMarks>,
}

impl Fabric for NatsFabric {
    fn forward(&self, message: &Arc<Message>, after_local: bool) -> u64 {
        if let Some(seq) = self.queue.push(message) {
            self.kick.wake(after_local);
            return seq;
        }
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
        0
    }

    fn has_room(&self) -> bool {
        self.queue.has_room()
    }

    fn node(&self) -> &str {
        &self.node
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }

    fn interest_applied(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let made = self.interest.made();
        let mut applied = self.interest.applied.subscribe();
        Box::pin(async move {
            let applied = applied.wait_for(|applied| *applied >= made);
            let _ = tokio::time::timeout(INTEREST_WAIT, applied).await;
        })
    }

    fn marks(&self) -> Vec<PeerMark> {
        // This run's number first: a message is numbered after the routing
        // here that submitted its store operations.
        let own = self.queue.last_seq();
        let mut marks = self.routed.snapshot();
        if own > 0 {
            marks.push(PeerMark {
                node: Arc::clone(&self.node),
                epoch: self.epoch,
                seq: own,
            });
        }
        marks
    }

    fn confirmed(&self) -> u64 {
        self.confirmed.get()
    }

    fn timed_out(&self, seq: u64) -> bool {
        self.timed_out.contains(seq)
    }

    fn wait_confirmed(&self, seq: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        // Ends too once the outbound task ended (the node is stopping).
        Box::pin(self.confirmed.wait(seq))
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

impl Drop for NatsFabric {
    /// The outbound task sends what is queued and ends (no more can come).
    fn drop(&mut self) {
        self.queue.close();
        self.kick.wake(false);
    }
}

impl NatsFabric {
    fn queued(&self) -> usize {
        self.queue.len()
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

/// How long a fabric task may go on once the node stops: what was handed to
/// NATS goes out, but one waiting on NATS (a server just lost) must not hold
/// the node's exit past its grace period.
const STOP_WITHIN: Duration = Duration::from_secs(2);

/// `task`, ended at most [`STOP_WITHIN`] after `shutdown` (logged when it had
/// to be).
pub(super) async fn stopped_in_time(
    name: &'static str,
    shutdown: CancellationToken,
    task: impl Future<Output = ()>,
) {
    tokio::pin!(task);
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(STOP_WITHIN).await;
    };
    tokio::select! {
        () = &mut task => {}
        () = deadline => {
            tracing::warn!(task = name, "cluster: task still busy after the shutdown; stopped");
        }
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
    let queue = Arc::new(OutQueue::new(OUTBOUND_QUEUE));
    let stats = Arc::new(FabricStats::default());
    let interest = Arc::new(Interest::default());
    let dropping = Arc::new(AtomicBool::new(false));
    let room = Arc::new(Notify::new());
    let epoch = cluster.run();
    let status = Arc::new(ClusterStatus::new(cluster, Arc::clone(&stats)));
    let confirmed = Arc::new(Confirmed::default());
    let confirmed_tx = ConfirmedTx(Arc::clone(&confirmed));
    let timed_out = Arc::new(super::window::TimedOut::default());
    let routed = Arc::new(RoutedMarks::default());
    let kick = Arc::new(Kick::default());
    tracker.spawn(stopped_in_time(
        "outbound",
        shutdown.clone(),
        super::outbound::run(
            Outbound {
                cluster: cluster.clone(),
                status: Arc::clone(&status),
                stats: Arc::clone(&stats),
                dropping: Arc::clone(&dropping),
                room: Arc::clone(&room),
                epoch,
                confirmed: confirmed_tx,
                timed_out: Arc::clone(&timed_out),
                kick: Arc::clone(&kick),
            },
            Arc::clone(&queue),
            shutdown.clone(),
        ),
    ));
    // Unconstrained: tokio's co-operative budget would make a subscription's
    // channel answer Pending while it holds messages, which the inbound task
    // would take for "drained" (it yields after every round by itself).
    tracker.spawn(stopped_in_time(
        "inbound",
        shutdown.clone(),
        tokio::task::unconstrained(super::inbound::run(
            cluster.clone(),
            router,
            Arc::clone(&interest),
            Arc::clone(&stats),
            Arc::clone(&routed),
            shutdown.clone(),
        )),
    ));
    tracker.spawn(stopped_in_time(
        "heartbeat",
        shutdown.clone(),
        run_heartbeat(cluster.clone(), Arc::clone(&status), shutdown),
    ));
    let fabric = Arc::new(NatsFabric {
        queue,
        kick,
        confirmed,
        timed_out,
        interest,
        stats,
        dropping,
        room,
        connection: Arc::clone(cluster.state()),
        node: Arc::clone(cluster.node()),
        epoch,
        routed,
    });
    (fabric, status)
}
