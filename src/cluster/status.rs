//! What operators see of the cluster: the nodes alive (a heartbeat subject
//! every node publishes on and listens to), the NATS round trip, and the
//! connection and fabric counters, in one [`ClusterStatus`] the admin side
//! reads (`/metrics`, `/healthz`, `/api/nodes`, `$SYS`); and the nodes a
//! sync waits for (`peers.rs`: the alive and the unsettled), told by the
//! heartbeats (payload: the run's random id) and by the survivors' word that they took a node over
//! (`tern.over.<node>`, payload: the survivor's name).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::fabric::FabricStats;
use super::peers::Peers;
pub use super::peers::NODE_TIMEOUT;
use super::queues::QueueStats;
use super::{Cluster, ConnectionState};

/// Subjects of heartbeats: `tern.hb.<node>`.
pub const HEARTBEAT_PREFIX: &str = "tern.hb.";
/// How often a node says it is alive (and measures the NATS round trip).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// Subjects of a survivor's word that it took a dead node over:
/// `tern.over.<dead node>`.
pub const TAKEN_OVER_PREFIX: &str = "tern.over.";
/// Takeover's retries of a session it cannot read (`takeover.rs`): an
/// unsettled node is waited for that long beyond a few `dead_after`.
const TAKEOVER_RETRIES: Duration = Duration::from_secs(16);

/// The cluster as this node sees it.
#[derive(Debug)]
pub struct ClusterStatus {
    pub node: Arc<str>,
    pub connection: Arc<ConnectionState>,
    pub fabric: Arc<FabricStats>,
    /// Counters of the cluster's queues and shared groups (`queues.rs`).
    pub queues: Arc<QueueStats>,
    /// Other nodes by name: when last heard of, and whether unsettled.
    peers: Mutex<Peers>,
    /// Last NATS round trip, microseconds (0: not measured yet).
    rtt_micros: AtomicU64,
    /// Nodes alive and dead as their liveness keys told (`liveness.rs`).
    pub(super) liveness: Mutex<super::liveness::Tracker>,
    /// Nodes taken for dead since start.
    deaths: AtomicU64,
    /// For reading the shared state on an operator's request.
    jetstream: async_nats::jetstream::Context,
}

/// One node as `/api/nodes` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeInfo {
    pub node: String,
    /// True for the node answering.
    pub this_node: bool,
    /// Milliseconds since its last heartbeat (0 for this node).
    pub last_seen_ms: u64,
}

impl ClusterStatus {
    pub fn new(cluster: &Cluster, fabric: Arc<FabricStats>) -> ClusterStatus {
        ClusterStatus {
            node: Arc::clone(cluster.node()),
            connection: Arc::clone(cluster.state()),
            fabric,
            queues: Arc::default(),
            peers: Mutex::new(Peers::new(
                cluster.node(),
                cluster.timing().dead_after * 3 + TAKEOVER_RETRIES,
            )),
            rtt_micros: AtomicU64::new(0),
            liveness: Mutex::new(super::liveness::Tracker::new(
                cluster.node(),
                cluster.timing().dead_after,
            )),
            deaths: AtomicU64::new(0),
            jetstream: cluster.jetstream().clone(),
        }
    }

    /// This node and every other node heard of within [`NODE_TIMEOUT`] and
    /// not taken for dead, by name.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let now = Instant::now();
        let dead = self.dead_nodes();
        let mut nodes = vec![NodeInfo {
            node: self.node.to_string(),
            this_node: true,
            last_seen_ms: 0,
        }];
        for (node, seen) in self.peers.lock().all() {
            let ago = now.saturating_duration_since(seen);
            if ago <= NODE_TIMEOUT && !dead.contains(node) {
                nodes.push(NodeInfo {
                    node: node.clone(),
                    this_node: false,
                    last_seen_ms: u64::try_from(ago.as_millis()).unwrap_or(u64::MAX),
                });
            }
        }
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        nodes
    }

    /// The nodes taken for dead (their liveness key not refreshed), by name.
    pub fn dead_nodes(&self) -> Vec<String> {
        self.liveness.lock().dead()
    }

    /// Nodes taken for dead since this node started.
    pub fn deaths(&self) -> u64 {
        self.deaths.load(Ordering::Relaxed)
    }

    pub(super) fn note_death(&self) {
        self.deaths.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether `node` is this node or its liveness key is refreshed.
    pub fn node_alive(&self, node: &str) -> bool {
        self.liveness.lock().alive(node)
    }

    /// Whether `node`'s heartbeat (core NATS, not JetStream) arrived within
    /// `within`.
    pub(super) fn heartbeat_within(&self, node: &str, within: Duration) -> bool {
        self.peers
            .lock()
            .seen(node)
            .is_some_and(|seen| seen.elapsed() <= within)
    }

    /// The other nodes a sync waits for: those heard of within
    /// [`NODE_TIMEOUT`] and those unsettled (`peers.rs`), by name.
    pub(super) fn confirm_set(&self) -> Vec<String> {
        let (waited, gave_up) = self.peers.lock().confirm_set(Instant::now());
        for g in gave_up {
            let unsettled_ms = u64::try_from(g.unsettled_for.as_millis()).unwrap_or(u64::MAX);
            tracing::warn!(node = %self.node, dead_node = %g.node, unsettled_ms, waiting_for = ?g.waiting_for,
                "cluster: survivors did not all say they took a dead node over in time; acks no longer wait for it");
        }
        waited
    }

    /// `node` beat `age` ago as its liveness key says: waited for until its
    /// heartbeat comes (`Peers::seed`). A key lives `dead_after` at most: one
    /// older than [`NODE_TIMEOUT`] is of a node likely dead and not yet taken
    /// over, waited for as unsettled (`peers.rs`) until this node took it
    /// over, not acked past as if it never was.
    pub(super) fn seed_peer(&self, node: &str, age: Duration) {
        let now = Instant::now();
        let seen = now.checked_sub(age).unwrap_or(now);
        self.peers.lock().seed(node, seen);
    }

    /// When `node`'s current run was first heard of, if it replaced one
    /// heard of before: it had restored its sessions and subscribed their
    /// interest by then.
    pub(super) fn peer_renewed_at(&self, node: &str) -> Option<Instant> {
        self.peers.lock().renewed_at(node)
    }

    /// Tells the cluster (this node too) that this node finished taking
    /// `dead` over: its sessions here are restored.
    pub(super) async fn announce_taken_over(&self, cluster: &Cluster, dead: &str) {
        self.peers.lock().taken_over(dead, &self.node);
        let subject = format!("{TAKEN_OVER_PREFIX}{dead}");
        let word = bytes::Bytes::copy_from_slice(self.node.as_bytes());
        if let Err(e) = cluster.client().publish(subject, word).await {
            tracing::debug!(node = %self.node, dead_node = dead, error = %e, "cluster: takeover not announced");
        }
    }

    /// The node holding `client_id` in the cluster (ownership bucket); None
    /// when no node does. The error says why NATS could not tell.
    pub async fn owner_of(&self, client_id: &str) -> Result<Option<String>, String> {
        super::ownership::owner_of(&self.jetstream, client_id).await
    }

    /// The last NATS round trip measured.
    pub fn rtt(&self) -> Duration {
        Duration::from_micros(self.rtt_micros.load(Ordering::Relaxed))
    }

    fn heard_of(&self, node: &str, boot: u64) {
        let first = self.peers.lock().heard(node, boot, Instant::now());
        if first {
            tracing::info!(node = %self.node, peer = node, "cluster: node seen");
        }
    }
}

/// Publishes this node's heartbeat and measures the round trip every
/// [`HEARTBEAT_INTERVAL`]; records the heartbeats of the others.
pub async fn run_heartbeat(
    cluster: Cluster,
    status: Arc<ClusterStatus>,
    shutdown: CancellationToken,
) {
    let mut heard = match cluster
        .client()
        .subscribe(format!("{HEARTBEAT_PREFIX}*"))
        .await
    {
        Ok(subscriber) => subscriber,
        Err(e) => {
            tracing::warn!(error = %e, "cluster: cannot listen to heartbeats; other nodes will not be listed");
            return;
        }
    };
    let mut taken_over = match cluster
        .client()
        .subscribe(format!("{TAKEN_OVER_PREFIX}*"))
        .await
    {
        Ok(subscriber) => Some(subscriber),
        Err(e) => {
            tracing::warn!(error = %e, "cluster: cannot listen to takeovers; acks wait the longest for a dead node's sessions");
            None
        }
    };
    let subject = format!("{HEARTBEAT_PREFIX}{}", cluster.node());
    let mut beating = false;
    // This run's id: a node restarted under its name is a new run at once.
    let boot = bytes::Bytes::copy_from_slice(&rand::random::<u64>().to_be_bytes());
    let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            message = heard.next() => {
                let Some(message) = message else { return };
                if let Some(node) = message.subject.strip_prefix(HEARTBEAT_PREFIX) {
                    if node != &**cluster.node() {
                        let boot = message.payload.get(..8)
                            .and_then(|b| b.try_into().ok())
                            .map_or(0, u64::from_be_bytes);
                        status.heard_of(node, boot);
                    }
                }
            }
            word = next_word(&mut taken_over) => {
                let Some(word) = word else {
                    taken_over = None;
                    continue;
                };
                if let (Some(dead), Ok(by)) = (
                    word.subject.strip_prefix(TAKEN_OVER_PREFIX),
                    std::str::from_utf8(&word.payload),
                ) {
                    status.peers.lock().taken_over(dead, by);
                }
            }
            // The first beat as soon as this node's sessions are restored.
            () = status.connection.restored_signal.notified(), if !beating => {
                beating = true;
                ticker.reset_immediately();
            }
            _ = ticker.tick() => {
                // Not before its sessions are restored: a node heard of is
                // waited for, and it confirms nothing before that.
                beating = beating || status.connection.is_restored();
                if !status.connection.is_connected() || !beating {
                    continue;
                }
                let _ = cluster.client().publish(subject.clone(), boot.clone()).await;
                // A flush is a PING answered by the server's PONG: one round trip.
                let started = Instant::now();
                if let Ok(Ok(())) = tokio::time::timeout(HEARTBEAT_INTERVAL, cluster.client().flush()).await {
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    status.rtt_micros.store(micros.max(1), Ordering::Relaxed);
                }
            }
        }
    }
}

async fn next_word(words: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match words {
        Some(words) => words.next().await,
        None => std::future::pending().await,
    }
}
