//! The cluster as operators see it (cluster mode): the `tern_cluster_*`
//! series of `/metrics`, the `degraded` state of `/healthz`, `/api/nodes`.

use std::sync::atomic::Ordering;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::{Gauge, Gauge as FloatGauge};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

use crate::cluster::status::ClusterStatus;

/// Adds the cluster series to a scrape.
pub fn register(registry: &mut Registry, status: &ClusterStatus) {
    let fabric = &status.fabric;
    let gauge = |value: u64| {
        let g: Gauge = Gauge::default();
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        g
    };
    let counter = |value: u64| {
        let c: Counter = Counter::default();
        c.inc_by(value);
        c
    };
    let nodes = status.nodes().len() as u64;
    registry.register(
        "cluster_nodes",
        "Nodes of the cluster alive as this node sees them (heartbeats), this one included",
        gauge(nodes),
    );
    registry.register(
        "cluster_nats_connected",
        "1 while the NATS connection is up, 0 while it is down (reconnecting)",
        gauge(u64::from(status.connection.is_connected())),
    );
    registry.register(
        "cluster_nats_reconnects",
        "Reconnections to NATS since start",
        counter(status.connection.reconnects()),
    );
    let rtt: FloatGauge<f64, std::sync::atomic::AtomicU64> = FloatGauge::default();
    rtt.set(status.rtt().as_secs_f64());
    registry.register(
        "cluster_nats_rtt_seconds",
        "Last NATS round trip (PING to PONG), measured every heartbeat",
        rtt,
    );
    registry.register(
        "cluster_messages_forwarded",
        "Messages published on this node and sent to NATS for other nodes",
        counter(fabric.forwarded.load(Ordering::Relaxed)),
    );
    registry.register(
        "cluster_nats_messages_forwarded",
        "NATS messages the forwarded messages went in (consecutive ones of a topic as one batch)",
        counter(fabric.nats_messages.load(Ordering::Relaxed)),
    );
    registry.register(
        "cluster_messages_received",
        "Messages from other nodes routed to this node's subscribers",
        counter(fabric.received.load(Ordering::Relaxed)),
    );
    registry.register(
        "cluster_messages_dropped",
        "Messages not sent to other nodes: the queue to NATS was full (NATS down or slow)",
        counter(fabric.dropped.load(Ordering::Relaxed)),
    );
    registry.register(
        "cluster_messages_dropped_acknowledged",
        "Of the dropped messages, those of QoS 1/2 (NATS down long enough to fill the queue)",
        counter(fabric.dropped_acknowledged.load(Ordering::Relaxed)),
    );
    registry.register(
        "cluster_nats_slow_consumer_drops",
        "Messages from other nodes the NATS client dropped: a subscription's buffer was full",
        counter(status.connection.slow_consumer_events()),
    );
    registry.register(
        "cluster_window_waits",
        "Times this node waited for the others to confirm what it sent (cluster.window full)",
        counter(fabric.window_waits.load(Ordering::Relaxed)),
    );
    registry.register(
        "cluster_confirm_timeouts",
        "Syncs the other nodes did not all confirm in time (a node gone or stuck)",
        counter(fabric.confirm_timeouts.load(Ordering::Relaxed)),
    );
    registry.register(
        "cluster_messages_discarded",
        "Messages from NATS not routed (undecodable, own node, repeats)",
        counter(fabric.discarded.load(Ordering::Relaxed)),
    );
    registry.register(
        "cluster_subscriptions",
        "NATS subscriptions held for this node's subscribers (one per filter, 1-2 subjects each)",
        gauge(fabric.subscriptions.load(Ordering::Relaxed)),
    );
    let queues = &status.queues;
    for (name, help, value) in [
        (
            "cluster_queue_messages_published",
            "Queue messages published on this node and stored in the cluster's queue stream",
            &queues.published,
        ),
        (
            "cluster_queue_messages_refused",
            "Queue messages the cluster's queue stream refused (queue full cluster-wide, NATS down)",
            &queues.refused,
        ),
        (
            "cluster_queue_messages_delivered",
            "Queue and shared-group messages taken from JetStream for this node's consumers",
            &queues.delivered,
        ),
        (
            "cluster_queue_messages_acked",
            "Of those, acked on JetStream once their consumer was done",
            &queues.acked,
        ),
        (
            "cluster_queue_messages_given_back",
            "Of those, given back for redelivery on any node (NACK, consumer gone, no room)",
            &queues.given_back,
        ),
    ] {
        registry.register(name, help, counter(value.load(Ordering::Relaxed)));
    }
}

/// `None` while healthy; the `/healthz` body while NATS is unreachable.
pub fn degraded(status: &ClusterStatus) -> Option<&'static str> {
    (!status.connection.is_connected()).then_some(
        "degraded: NATS connection down; local traffic flows, traffic between nodes waits\n",
    )
}

/// `/api/nodes`: this node and the others alive.
pub fn nodes_json(status: &ClusterStatus) -> Value {
    json!({
        "node": &*status.node,
        "nats_connected": status.connection.is_connected(),
        "nodes": status.nodes(),
    })
}
