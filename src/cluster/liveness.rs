//! Node liveness: which nodes of the cluster are alive, and when one died.
//!
//! KV bucket `tern_nodes`: one key per node (its name), value = the node's
//! run (`Cluster::run`, random per start): a node taking another's ids over
//! leaves alone those a restarted run of it, beating again, claimed again.
//! Each node puts its key every `cluster.liveness_interval_ms`; the
//! bucket's `max_age` is `cluster.dead_after_ms`, so a dead node's key goes
//! away by itself and a node starting later never reads a stale one. Every node watches the
//! bucket and keeps a [`Tracker`]: a node not heard of for `dead_after`,
//! whose key NATS no longer has either (so a stalled watch kills nobody),
//! and whose heartbeat on core NATS (`status.rs`) is as old (so a JetStream
//! that cannot take writes for a while kills nobody either), is
//! dead (logged once, counted, listed by `/api/nodes`), and the node's
//! `on_dead` hook runs (`state.rs`: its sessions and their wills are taken
//! over). A node that owns client ids in `tern_clients` but never beat since
//! this node started (it died while no node watched) is dead too.
//!
//! Beats are timed on the watcher's own clock (the instant a beat arrives),
//! so clocks of different machines never compare; while this node's own NATS
//! connection is down it takes nobody for dead.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::status::ClusterStatus;
use super::Cluster;

/// The bucket of liveness keys.
pub(crate) const BUCKET: &str = "tern_nodes";
/// First byte of every value: its layout.
const VALUE_VERSION: u8 = 1;

/// What a beat changed in what this node knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// First heard of since this node started.
    Joined,
    /// Beats with a new boot id before it was taken for dead (a quick restart).
    Restarted,
    /// Beats again after it was taken for dead (restarted, or back from a partition).
    Back,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    at: Instant,
    boot: u64,
    dead: bool,
}

/// The other nodes as the beats in the bucket told; time is passed in, so
/// this is pure and tested alone.
#[derive(Debug)]
pub struct Tracker {
    me: String,
    dead_after: Duration,
    nodes: HashMap<String, Seen>,
}

impl Tracker {
    pub fn new(me: &str, dead_after: Duration) -> Tracker {
        Tracker {
            me: me.to_string(),
            dead_after,
            nodes: HashMap::new(),
        }
    }

    /// Node `node` (start `boot`) beat at `now`: what it changed, if anything.
    pub fn beat(&mut self, node: &str, boot: u64, now: Instant) -> Option<Change> {
        if node == self.me {
            return None;
        }
        let fresh = Seen {
            at: now,
            boot,
            dead: false,
        };
        let Some(seen) = self.nodes.insert(node.to_string(), fresh) else {
            return Some(Change::Joined);
        };
        if seen.dead {
            Some(Change::Back)
        } else if seen.boot != boot {
            Some(Change::Restarted)
        } else {
            None
        }
    }

    /// The nodes not heard of for `dead_after` at `now`, not yet taken for
    /// dead: to be confirmed ([`Tracker::died`]) or heard of again
    /// ([`Tracker::beat`]).
    pub fn silent(&self, now: Instant) -> Vec<String> {
        let mut silent: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, s)| !s.dead && now.saturating_duration_since(s.at) >= self.dead_after)
            .map(|(n, _)| n.clone())
            .collect();
        silent.sort();
        silent
    }

    /// `node` is dead; true if it was not taken for dead already.
    pub fn died(&mut self, node: &str) -> bool {
        match self.nodes.get_mut(node) {
            Some(seen) if !seen.dead => {
                seen.dead = true;
                true
            }
            _ => false,
        }
    }

    /// This node heard nothing (its own NATS connection was down): every
    /// node alive gets a whole `dead_after` from `now` to be heard of again.
    pub fn grace(&mut self, now: Instant) {
        for seen in self.nodes.values_mut().filter(|s| !s.dead) {
            seen.at = now;
        }
    }

    /// `node` holds client ids but has not beat since this node started:
    /// dead, unless it is this node or known. True if newly taken for dead.
    pub fn never_heard(&mut self, node: &str, now: Instant) -> bool {
        if node == self.me || self.nodes.contains_key(node) {
            return false;
        }
        let seen = Seen {
            at: now,
            boot: 0,
            dead: true,
        };
        self.nodes.insert(node.to_string(), seen);
        true
    }

    /// The run `node` beats with, while it is alive (None: taken for dead,
    /// or never heard of).
    pub fn alive_run(&self, node: &str) -> Option<u64> {
        self.nodes
            .get(node)
            .filter(|s| !s.dead)
            .map(|s| s.boot)
            .filter(|boot| *boot != 0)
    }

    /// Whether `node` is this node or beats.
    pub fn alive(&self, node: &str) -> bool {
        node == self.me || self.nodes.get(node).is_some_and(|s| !s.dead)
    }

    /// The nodes taken for dead (and not back), by name.
    pub fn dead(&self) -> Vec<String> {
        let mut dead: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, s)| s.dead)
            .map(|(n, _)| n.clone())
            .collect();
        dead.sort();
        dead
    }
}

/// How often to beat and when a node is dead (`[cluster]`).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub interval: Duration,
    pub dead_after: Duration,
}

/// Opens (or makes) the liveness bucket: keys live `dead_after` at most.
pub(super) async fn open(
    jetstream: &jetstream::Context,
    replicas: usize,
    dead_after: Duration,
) -> Result<kv::Store, String> {
    let config = jetstream::stream::Config {
        max_age: dead_after,
        ..crate::store::nats::bucket_config(BUCKET, replicas)
    };
    crate::store::nats::open_configured(jetstream, BUCKET, config).await
}

/// The longest a start waits to read the liveness keys there are.
const KNOWN_READ_WITHIN: Duration = Duration::from_secs(5);

/// Reads the liveness keys there are into what this node knows, before it
/// takes clients: its syncs wait for those nodes from its first message on.
/// Left to the watch (`run`), the keys came a moment after the first
/// clients' messages, whose syncs went with nobody to wait for: acks for
/// messages no other node stored (a node killed just before, its sessions
/// not yet taken over, lost them). Bounded; on failure the watch tells.
pub(super) async fn read_known(kv: &kv::Store, status: &ClusterStatus) {
    let read = async {
        let held = kv.status().await.map_err(|e| e.to_string())?;
        if held.info.state.messages == 0 {
            return Ok(0);
        }
        let mut keys = kv.keys().await.map_err(|e| e.to_string())?;
        let mut known = 0;
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| e.to_string())?;
            if let Some(entry) = kv.entry(key.as_str()).await.map_err(|e| e.to_string())? {
                heard(status, &entry);
                known += 1;
            }
        }
        Ok::<usize, String>(known)
    };
    match tokio::time::timeout(KNOWN_READ_WITHIN, read).await {
        Ok(Ok(known)) => {
            tracing::debug!(node = %status.node, known, "cluster: liveness keys read at start")
        }
        Ok(Err(e)) => tracing::warn!(node = %status.node, error = %e,
            "cluster: liveness keys not read at start; the first acks may not wait for the other nodes"),
        Err(_) => tracing::warn!(node = %status.node, within_secs = KNOWN_READ_WITHIN.as_secs(),
            "cluster: liveness keys not read at start in time; the first acks may not wait for the other nodes"),
    }
}

fn boot_of(value: &[u8]) -> Option<u64> {
    crate::store::nats::kv_value::decode(VALUE_VERSION, value)
}

/// Something to do when a node dies (taking over what it held); runs on
/// a task of its own.
pub type OnDead = Arc<
    dyn Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync,
>;

/// Beats for this node and watches the others' beats in bucket `kv`
/// ([`open`]) until `shutdown`.
/// `owners` lists the nodes holding client ids (read once, after the first
/// `dead_after`): those never heard of by then are dead too. `on_dead` runs
/// on a task of its own, so taking over never delays this node's beats.
pub async fn run(
    cluster: Cluster,
    kv: kv::Store,
    status: Arc<ClusterStatus>,
    timing: Timing,
    owners: impl std::future::Future<Output = Vec<String>> + Send + 'static,
    on_dead: OnDead,
    shutdown: CancellationToken,
) {
    let node = cluster.node().to_string();
    tokio::spawn({
        let (status, on_dead, kv) = (Arc::clone(&status), Arc::clone(&on_dead), kv.clone());
        async move {
            tokio::time::sleep(timing.dead_after).await;
            let mut silent = Vec::new();
            for owner in owners.await {
                // Confirmed as below: NATS has no key of it.
                if matches!(kv.entry(owner.as_str()).await, Ok(None)) {
                    silent.push(owner);
                }
            }
            let now = Instant::now();
            let died: Vec<String> = {
                let mut tracker = status.liveness.lock();
                silent
                    .into_iter()
                    .filter(|n| tracker.never_heard(n, now))
                    .collect()
            };
            for dead in died {
                died_now(&status, timing, dead, &on_dead);
            }
        }
    });
    let beat = crate::store::nats::kv_value::encode(VALUE_VERSION, &cluster.run());
    let mut ticker = tokio::time::interval(timing.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = None;
    loop {
        if watch.is_none() {
            match kv.watch_with_history(">").await {
                Ok(w) => watch = Some(w),
                Err(e) => {
                    tracing::debug!(node, error = %e, "cluster: liveness watch not started; retrying")
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            entry = next_entry(&mut watch) => {
                match entry {
                    Some(entry) => heard(&status, &entry),
                    None => watch = None,
                }
            }
            _ = ticker.tick() => {
                if !status.connection.is_connected() {
                    // Deaf, not the others dead: they get time once we hear again.
                    status.liveness.lock().grace(Instant::now());
                    continue;
                }
                if let Err(e) = kv.put(&node, beat.clone()).await {
                    tracing::debug!(node, error = %e, "cluster: liveness key not refreshed");
                }
                let silent = status.liveness.lock().silent(Instant::now());
                for peer in silent {
                    // Confirmed by NATS itself: the key outlives `dead_after`
                    // only if refreshed (a stalled watch kills nobody).
                    match kv.entry(peer.as_str()).await {
                        Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                            heard(&status, &entry);
                        }
                        // Its heartbeat on core NATS still comes: JetStream
                        // is what is slow (a server lost, a leader being
                        // elected), and a live node's clients stay its own.
                        Ok(_) if status.heartbeat_within(&peer, timing.dead_after) => {}
                        Ok(_) => {
                            if status.liveness.lock().died(&peer) {
                                died_now(&status, timing, peer, &on_dead);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(node, peer, error = %e, "cluster: liveness key not read");
                        }
                    }
                }
            }
        }
    }
}

/// One line and one count per death; the take-over runs on its own task.
fn died_now(status: &ClusterStatus, timing: Timing, dead: String, on_dead: &OnDead) {
    status.note_death();
    let dead_after_ms = u64::try_from(timing.dead_after.as_millis()).unwrap_or(u64::MAX);
    tracing::warn!(node = %status.node, dead_node = %dead, dead_after_ms, "cluster: node dead (liveness key not refreshed); taking over its sessions and wills");
    tokio::spawn(on_dead(dead));
}

async fn next_entry(watch: &mut Option<kv::Watch>) -> Option<kv::Entry> {
    match watch {
        Some(w) => loop {
            match w.next().await {
                Some(Ok(entry)) => return Some(entry),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "cluster: liveness watch error");
                }
                None => return None,
            }
        },
        None => std::future::pending().await,
    }
}

fn heard(status: &ClusterStatus, entry: &kv::Entry) {
    if entry.operation != kv::Operation::Put {
        return;
    }
    let Some(boot) = boot_of(&entry.value) else {
        return;
    };
    let change = status
        .liveness
        .lock()
        .beat(&entry.key, boot, Instant::now());
    let peer = entry.key.as_str();
    match change {
        Some(Change::Joined) => {
            // Key time, not now: an old key read back at start is of a node
            // that may be gone.
            let age = time::OffsetDateTime::now_utc() - entry.created;
            let age = Duration::from_millis(u64::try_from(age.whole_milliseconds()).unwrap_or(0));
            status.seed_peer(peer, age);
            tracing::info!(node = %status.node, peer, "cluster: node alive")
        }
        Some(Change::Restarted) => {
            tracing::info!(node = %status.node, peer, "cluster: node restarted")
        }
        Some(Change::Back) => {
            tracing::info!(node = %status.node, peer, "cluster: node alive again (was taken for dead)")
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEAD_AFTER: Duration = Duration::from_secs(5);

    #[test]
    fn a_node_that_stops_beating_is_dead_once() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new("me", DEAD_AFTER);
        assert_eq!(tracker.beat("b", 1, t0), Some(Change::Joined));
        assert_eq!(tracker.beat("b", 1, t0 + Duration::from_secs(1)), None);
        assert!(tracker.silent(t0 + Duration::from_secs(5)).is_empty());
        assert!(tracker.alive("b"));
        assert_eq!(tracker.silent(t0 + Duration::from_secs(6)), vec!["b"]);
        assert!(tracker.alive("b"), "silent is not dead until confirmed");
        assert!(tracker.died("b"));
        assert!(!tracker.alive("b"));
        assert!(!tracker.died("b"), "one death, one event");
        assert!(tracker.silent(t0 + Duration::from_secs(60)).is_empty());
        assert_eq!(tracker.dead(), vec!["b"]);
    }

    #[test]
    fn restarts_and_returns_are_told_apart() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new("me", DEAD_AFTER);
        tracker.beat("b", 1, t0);
        assert_eq!(tracker.beat("b", 2, t0), Some(Change::Restarted));
        tracker.died("b");
        assert_eq!(
            tracker.beat("b", 3, t0 + Duration::from_secs(11)),
            Some(Change::Back)
        );
        assert!(tracker.alive("b"));
        assert!(tracker.dead().is_empty());
    }

    #[test]
    fn this_node_is_never_tracked_and_always_alive() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new("me", DEAD_AFTER);
        assert_eq!(tracker.beat("me", 1, t0), None);
        assert!(!tracker.never_heard("me", t0));
        assert!(tracker.alive("me"));
        assert!(tracker.silent(t0 + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn while_this_node_hears_nothing_the_others_get_time() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new("me", DEAD_AFTER);
        tracker.beat("b", 1, t0);
        tracker.grace(t0 + Duration::from_secs(30));
        assert!(tracker.silent(t0 + Duration::from_secs(34)).is_empty());
        assert_eq!(tracker.silent(t0 + Duration::from_secs(35)), vec!["b"]);
    }

    #[test]
    fn an_owner_never_heard_of_is_dead_but_a_beating_one_is_not() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new("me", DEAD_AFTER);
        tracker.beat("b", 1, t0);
        assert!(!tracker.never_heard("b", t0));
        assert!(tracker.never_heard("gone", t0));
        assert!(!tracker.never_heard("gone", t0), "once");
        assert_eq!(tracker.dead(), vec!["gone"]);
        assert_eq!(tracker.beat("gone", 9, t0), Some(Change::Back));
    }

    #[test]
    fn beats_read_back_and_garbage_is_ignored() {
        let bytes = crate::store::nats::kv_value::encode(VALUE_VERSION, &42u64);
        assert_eq!(boot_of(&bytes), Some(42));
        assert_eq!(boot_of(&[]), None);
        assert_eq!(boot_of(&[9, 1]), None);
    }
}
