//! The other nodes as their heartbeats (`status.rs`) tell, and which of them
//! a sync waits for (`window.rs`): pure, time passed in, tested alone.
//!
//! The interest gap: a node killed drops out of the nodes alive when its
//! heartbeat is [`NODE_TIMEOUT`] old, but its persistent sessions reach a
//! survivor only after liveness took it for dead (`liveness.rs`) and the
//! survivors took its client ids over (`takeover.rs`, retried up to 16 s
//! while JetStream elects a leader). A QoS ≥ 1 message acknowledged in
//! between is lost for those sessions. So a node whose heartbeat stopped
//! stays *unsettled*, in the set a sync waits for (it never confirms: the
//! sync times out, and with `cluster.strict_acks` the publishers get no ack
//! and send again), until every survivor said it finished taking it over
//! ([`Peers::taken_over`], `tern.over.<node>`: each restored what it adopted
//! and subscribed for it), or it beats again, or `cap` passed since its
//! heartbeat went stale (a takeover that failed or a word lost: WARN once).
//! A survivor that started beating after the node's last heartbeat may
//! never have known it and is not waited for.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// A node not heard of for this long is no longer listed as alive.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(6);
/// The run of a node known from its liveness key only ([`Peers::seed`]).
const UNKNOWN_RUN: u64 = 0;

#[derive(Debug)]
struct Peer {
    /// Its last heartbeat.
    seen: Instant,
    /// The first heartbeat of its current run (after a silence or restart):
    /// it beats once its sessions are restored and their interest
    /// subscribed, so what was sent from then on reaches them.
    since: Instant,
    /// Its run's random id, from its heartbeat ([`UNKNOWN_RUN`]: a node
    /// that sends none, or known from its liveness key only).
    boot: u64,
    /// Its current run replaced one heard of before (a restart, a return).
    renewed: bool,
    /// The survivors that finished taking it over since its last heartbeat.
    taken_over_by: HashSet<String>,
    /// Settled since its last heartbeat: no longer waited for.
    settled: bool,
}

/// A node that stopped being waited for because `cap` passed.
#[derive(Debug, PartialEq, Eq)]
pub struct GaveUp {
    pub node: String,
    pub unsettled_for: Duration,
    /// The survivors whose word it waited for.
    pub waiting_for: Vec<String>,
}

#[derive(Debug)]
pub struct Peers {
    me: String,
    /// Longest a node stays unsettled after its heartbeat went stale.
    cap: Duration,
    nodes: HashMap<String, Peer>,
}

impl Peers {
    pub fn new(me: &str, cap: Duration) -> Peers {
        Peers {
            me: me.to_string(),
            cap,
            nodes: HashMap::new(),
        }
    }

    /// A heartbeat of `node`'s run `boot` at `now`; true the first time it
    /// is heard of.
    pub fn heard(&mut self, node: &str, boot: u64, now: Instant) -> bool {
        match self.nodes.get_mut(node) {
            Some(peer) => {
                let stale = now.saturating_duration_since(peer.seen) > NODE_TIMEOUT;
                if stale || (peer.boot != boot && peer.boot != UNKNOWN_RUN) {
                    peer.since = now;
                    peer.renewed = true;
                }
                peer.boot = boot;
                peer.seen = now;
                peer.taken_over_by.clear();
                peer.settled = false;
                false
            }
            None => {
                let peer = Peer {
                    seen: now,
                    since: now,
                    boot,
                    renewed: false,
                    taken_over_by: HashSet::new(),
                    settled: false,
                };
                self.nodes.insert(node.to_string(), peer);
                true
            }
        }
    }

    /// `node` beat at `seen` as its liveness key says (`liveness.rs`), its
    /// heartbeat not heard yet: a node just started learns the others from
    /// their keys at once, their heartbeats only within
    /// `HEARTBEAT_INTERVAL`, and its syncs must wait for them meanwhile (an
    /// empty set confirms at once: acks for messages no other node stored).
    /// Its first heartbeat then is of the same run, not a restart.
    pub fn seed(&mut self, node: &str, seen: Instant) {
        if node == self.me || self.nodes.contains_key(node) {
            return;
        }
        let peer = Peer {
            seen,
            since: seen,
            boot: UNKNOWN_RUN,
            renewed: false,
            taken_over_by: HashSet::new(),
            settled: false,
        };
        self.nodes.insert(node.to_string(), peer);
    }

    /// When `node`'s current run was first heard of (its first heartbeat),
    /// if it replaced a run heard of before (None for a node's first run
    /// heard here: it is taken as it comes, or every start of this node
    /// would cost a confirm timeout).
    pub fn renewed_at(&self, node: &str) -> Option<Instant> {
        self.nodes.get(node).filter(|p| p.renewed).map(|p| p.since)
    }

    /// Survivor `by` finished taking `dead` over.
    pub fn taken_over(&mut self, dead: &str, by: &str) {
        if let Some(peer) = self.nodes.get_mut(dead) {
            peer.taken_over_by.insert(by.to_string());
        }
    }

    /// When `node` was last heard of.
    pub fn seen(&self, node: &str) -> Option<Instant> {
        self.nodes.get(node).map(|p| p.seen)
    }

    /// Every node heard of, with its last heartbeat.
    pub fn all(&self) -> impl Iterator<Item = (&String, Instant)> {
        self.nodes.iter().map(|(n, p)| (n, p.seen))
    }

    /// The nodes a sync sent at `now` waits for: those alive and those
    /// unsettled; with the nodes that just stopped being waited for
    /// because `cap` passed (to be logged once).
    pub fn confirm_set(&mut self, now: Instant) -> (Vec<String>, Vec<GaveUp>) {
        let mut waited = Vec::new();
        let mut gave_up = Vec::new();
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for node in names {
            let Some(peer) = self.nodes.get(&node) else {
                continue;
            };
            let ago = now.saturating_duration_since(peer.seen);
            if ago <= NODE_TIMEOUT {
                waited.push(node);
                continue;
            }
            if peer.settled {
                continue;
            }
            let waiting_for = self.survivors_waited_for(&node, now);
            let stale_for = ago - NODE_TIMEOUT;
            let settled = waiting_for.is_empty() || stale_for >= self.cap;
            if settled && !waiting_for.is_empty() {
                gave_up.push(GaveUp {
                    node: node.clone(),
                    unsettled_for: stale_for,
                    waiting_for,
                });
            }
            if settled {
                if let Some(peer) = self.nodes.get_mut(&node) {
                    peer.settled = true;
                }
            } else {
                waited.push(node);
            }
        }
        waited.sort();
        (waited, gave_up)
    }

    /// The survivors (this node and those alive whose run began before
    /// `dead`'s last heartbeat) that have not yet said they took it over.
    fn survivors_waited_for(&self, dead: &str, now: Instant) -> Vec<String> {
        let Some(peer) = self.nodes.get(dead) else {
            return Vec::new();
        };
        let mut waiting: Vec<String> = self
            .nodes
            .iter()
            .filter(|(name, other)| {
                name.as_str() != dead
                    && now.saturating_duration_since(other.seen) <= NODE_TIMEOUT
                    && other.since <= peer.seen
            })
            .map(|(name, _)| name.clone())
            .chain(std::iter::once(self.me.clone()))
            .filter(|name| !peer.taken_over_by.contains(name))
            .collect();
        waiting.sort();
        waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(30);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_silent_node_is_waited_for_until_every_survivor_took_it_over() {
        let t0 = Instant::now();
        let mut peers = Peers::new("a", CAP);
        peers.heard("b", 1, t0);
        peers.heard("c", 1, t0);
        peers.heard("b", 1, t0 + secs(4));
        // c is killed right after t0; b goes on beating.
        let at = t0 + secs(8);
        assert_eq!(peers.confirm_set(at).0, vec!["b", "c"], "c unsettled");
        peers.taken_over("c", "a");
        assert_eq!(peers.confirm_set(at).0, vec!["b", "c"], "b not done yet");
        peers.taken_over("c", "b");
        assert_eq!(peers.confirm_set(at), (vec!["b".to_string()], vec![]));
        assert_eq!(
            peers.confirm_set(at + secs(1)).0,
            vec!["b"],
            "settled stays"
        );
    }

    #[test]
    fn a_word_before_the_heartbeat_went_stale_counts_and_a_new_beat_undoes_it() {
        let t0 = Instant::now();
        let mut peers = Peers::new("a", CAP);
        peers.heard("c", 1, t0);
        peers.taken_over("c", "a");
        assert_eq!(peers.confirm_set(t0 + secs(7)).0, Vec::<String>::new());
        // c comes back: alive, then silent again with no word yet.
        peers.heard("c", 1, t0 + secs(20));
        assert_eq!(peers.confirm_set(t0 + secs(21)).0, vec!["c"]);
        assert_eq!(peers.confirm_set(t0 + secs(27)).0, vec!["c"], "unsettled");
        peers.taken_over("c", "a");
        assert!(peers.confirm_set(t0 + secs(27)).0.is_empty());
    }

    #[test]
    fn an_unsettled_node_is_given_up_once_after_the_cap() {
        let t0 = Instant::now();
        let mut peers = Peers::new("a", CAP);
        peers.heard("c", 1, t0);
        let stale = t0 + NODE_TIMEOUT;
        assert_eq!(peers.confirm_set(stale + CAP - secs(1)).0, vec!["c"]);
        let (waited, gave_up) = peers.confirm_set(stale + CAP);
        assert!(waited.is_empty());
        assert_eq!(
            gave_up,
            vec![GaveUp {
                node: "c".into(),
                unsettled_for: CAP,
                waiting_for: vec!["a".into()],
            }]
        );
        assert_eq!(peers.confirm_set(stale + CAP + secs(1)), (vec![], vec![]));
    }

    #[test]
    fn survivors_that_began_after_the_death_or_died_too_are_not_waited_for() {
        let t0 = Instant::now();
        let mut peers = Peers::new("a", CAP);
        peers.heard("c", 1, t0);
        peers.heard("b", 1, t0);
        peers.heard("d", 1, t0);
        // b restarts after c died (a new boot, no silence); d dies too.
        peers.heard("b", 2, t0 + secs(3));
        assert_eq!(peers.renewed_at("b"), Some(t0 + secs(3)));
        let at = t0 + secs(7);
        peers.heard("b", 2, at);
        assert_eq!(peers.renewed_at("b"), Some(t0 + secs(3)), "same run");
        peers.taken_over("c", "a");
        let (waited, _) = peers.confirm_set(at);
        assert_eq!(waited, vec!["b", "d"], "c settled; d unsettled itself");
    }

    #[test]
    fn a_node_back_after_a_silence_starts_a_new_run() {
        let t0 = Instant::now();
        let mut peers = Peers::new("a", CAP);
        assert!(peers.heard("b", 1, t0));
        assert!(!peers.heard("b", 1, t0 + secs(1)));
        assert_eq!(peers.renewed_at("b"), None, "its first run heard here");
        peers.heard("c", 1, t0 + secs(2));
        // b silent for 10 s, then back: c's death before that is not its work.
        peers.heard("b", 1, t0 + secs(12));
        let at = t0 + secs(12);
        peers.taken_over("c", "a");
        assert_eq!(peers.confirm_set(at).0, vec!["b"]);
        assert_eq!(peers.seen("b"), Some(at));
        assert_eq!(
            peers.renewed_at("b"),
            Some(at),
            "a new run after the silence"
        );
        assert_eq!(peers.all().count(), 2);
    }

    #[test]
    fn a_node_known_from_its_liveness_key_is_waited_for_before_its_heartbeat() {
        let t0 = Instant::now();
        let mut peers = Peers::new("a", CAP);
        assert!(peers.confirm_set(t0).0.is_empty());
        peers.seed("b", t0);
        peers.seed("a", t0);
        assert_eq!(peers.confirm_set(t0 + secs(1)).0, vec!["b"]);
        assert!(!peers.heard("b", 7, t0 + secs(2)), "known already");
        assert_eq!(
            peers.renewed_at("b"),
            None,
            "its first heartbeat is of the run its key told"
        );
        peers.heard("b", 8, t0 + secs(3));
        assert_eq!(peers.renewed_at("b"), Some(t0 + secs(3)), "a restart");
    }

    #[test]
    fn a_node_known_from_its_key_that_never_beats_is_waited_for_until_taken_over() {
        let t0 = Instant::now();
        let mut peers = Peers::new("a", CAP);
        // Killed right after its last liveness key: no heartbeat comes.
        peers.seed("b", t0);
        let stale = t0 + NODE_TIMEOUT + secs(1);
        assert_eq!(peers.confirm_set(stale).0, vec!["b"], "unsettled");
        peers.taken_over("b", "a");
        assert!(peers.confirm_set(stale).0.is_empty());
    }
}
