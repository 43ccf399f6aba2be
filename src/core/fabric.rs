//! What the routing core asks of the cluster fabric (the nodes sharing one
//! NATS deployment, in `src/cluster/`), without knowing NATS: the core says
//! which filters its sessions hold and hands over what its clients publish;
//! the fabric brings other nodes' messages back through
//! `Router::publish_from_peer`.
//!
//! The core calls these from publish and subscribe paths: an implementation
//! must not block (queue the work, never wait on the network here).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::core::message::Message;
use crate::core::peer_marks::PeerMark;

pub trait Fabric: Send + Sync + std::fmt::Debug {
    /// A message published by a client (or a will) on this node, already
    /// routed here: the fabric carries it to the other nodes that want it.
    /// Not called for messages that came from a peer, nor for `$SYS` topics,
    /// point-to-point queues (`$queue/`) or shared subscriptions (those are
    /// one-consumer traffic with their own path).
    ///
    /// Returns the message's number in the fabric's send order (0 when it
    /// does not go out): a QoS ≥ 1 message is acknowledged to its publisher
    /// once [`Fabric::confirmed`] reaches it.
    ///
    /// `after_local`: routing it woke connections on this node; the
    /// fabric's sender then runs after them rather than taking their thread
    /// (`cluster/kick.rs`).
    fn forward(&self, message: &Arc<Message>, after_local: bool) -> u64;

    /// Whether [`Fabric::forward`] would take a message now. A QoS ≥ 1
    /// publish is refused when not (its publisher sends it again), never
    /// acknowledged for this node alone.
    fn has_room(&self) -> bool {
        true
    }

    /// Every message up to this number is confirmed by the other nodes alive
    /// (routed there and what that stored committed), or taken as confirmed
    /// (a node that did not answer in time, or no flow control).
    fn confirmed(&self) -> u64 {
        u64::MAX
    }

    /// True when message `seq` was taken as confirmed without every node
    /// alive (one did not answer in time): its publisher must not be
    /// acknowledged. Asked once [`Fabric::confirmed`] reached `seq`.
    fn timed_out(&self, seq: u64) -> bool {
        let _ = seq;
        false
    }

    /// Resolves once [`Fabric::confirmed`] reaches `seq`.
    fn wait_confirmed(&self, seq: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let _ = seq;
        Box::pin(std::future::ready(()))
    }

    /// A session of this node subscribed `filter` (a plain topic filter: no
    /// `$share/` prefix, not a queue). Called once per session and filter;
    /// the fabric counts them (10,000 sessions on one filter are one interest).
    fn interest_added(&self, filter: &str);

    /// One session of this node dropped `filter` (one call per earlier
    /// `interest_added`).
    fn interest_removed(&self, filter: &str);

    /// Resolves once every interest added before the call is subscribed
    /// where the other nodes' messages come from (the node's NATS server
    /// has it), or after a bound wait.
    fn interest_applied(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }

    /// This node's name in the cluster.
    fn node(&self) -> &str {
        ""
    }

    /// This node's run: the epoch of its own messages' origin.
    fn epoch(&self) -> u64 {
        0
    }

    /// This node's marks (`core::peer_marks`): per origin, the last message
    /// of another node routed here completely, and this run's last message
    /// handed to [`Fabric::forward`]. Every message they cover has had its
    /// store operations submitted. Cheap: read at every store commit.
    fn marks(&self) -> Vec<PeerMark> {
        Vec::new()
    }

    /// While the fabric takes messages more slowly than they come (other
    /// nodes are behind), what to wait for before reading more from clients:
    /// publishers are slowed down rather than their messages dropped. None
    /// when there is room.
    fn wait_room(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>> {
        None
    }
}

/// Whether a filter's traffic between nodes goes through the fabric's
/// interest path: not queues, not shared subscriptions, which one consumer
/// takes in the whole cluster (their cross-node path is a separate one), and
/// not `$SYS` filters (each node's `$SYS` topics stay on that node).
pub fn is_fabric_filter(filter: &str) -> bool {
    !filter.starts_with("$share/")
        && !filter.starts_with("$queue/")
        && filter != "$SYS"
        && !filter.starts_with("$SYS/")
}

/// Whether a message published here goes to the other nodes: not `$SYS`
/// topics (each node reports on itself under its own name) nor queue messages.
pub fn is_fabric_topic(topic: &str) -> bool {
    !topic.starts_with("$SYS/") && !topic.starts_with("$queue/")
}
