//! Bridges as operators see them: the `tern_bridge_*` series of `/metrics`
//! (one label, `bridge`), `/api/bridges`, and the `$SYS/broker/bridge/<name>/…`
//! values.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

use crate::bridge::status::BridgeSnapshot;

type Labels = Vec<(&'static str, String)>;

/// Adds the bridge series to a scrape (nothing when no bridge is configured).
pub fn register(registry: &mut Registry, bridges: &[BridgeSnapshot]) {
    if bridges.is_empty() {
        return;
    }
    let connected: Family<Labels, Gauge> = Family::default();
    let queued: Family<Labels, Gauge> = Family::default();
    let sent: Family<Labels, Counter> = Family::default();
    let received: Family<Labels, Counter> = Family::default();
    let dropped: Family<Labels, Counter> = Family::default();
    let connects: Family<Labels, Counter> = Family::default();
    let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    for b in bridges {
        let labels = vec![("bridge", b.name.clone())];
        connected.get_or_create(&labels).set(i64::from(b.connected));
        queued.get_or_create(&labels).set(as_i64(b.queued));
        sent.get_or_create(&labels).inc_by(b.sent);
        received.get_or_create(&labels).inc_by(b.received);
        dropped.get_or_create(&labels).inc_by(b.dropped);
        connects.get_or_create(&labels).inc_by(b.connects);
    }
    registry.register(
        "bridge_connected",
        "1 while the bridge's link to its remote broker is up",
        connected,
    );
    registry.register(
        "bridge_queued",
        "Messages waiting for the remote: queued, or sent and not yet acknowledged",
        queued,
    );
    registry.register(
        "bridge_sent",
        "Messages sent to the remote (QoS 1/2: acknowledged by it)",
        sent,
    );
    registry.register(
        "bridge_received",
        "Messages from the remote published here",
        received,
    );
    registry.register(
        "bridge_dropped",
        "Messages dropped by the bridge's queue bounds (queue_overflow)",
        dropped,
    );
    registry.register(
        "bridge_connects",
        "Links to the remote opened since start",
        connects,
    );
}

/// `/api/bridges`: every bridge, in config order.
pub fn bridges_json(bridges: &[BridgeSnapshot]) -> Value {
    json!({ "bridges": bridges })
}

/// `$SYS/broker/bridge/<name>/<value>` pairs (topic suffix, value).
pub fn sys_values(bridges: &[BridgeSnapshot]) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(bridges.len() * 5);
    for b in bridges {
        let at = |what: &str| format!("bridge/{}/{what}", b.name);
        out.push((at("connected"), u8::from(b.connected).to_string()));
        out.push((at("queued"), b.queued.to_string()));
        out.push((at("sent"), b.sent.to_string()));
        out.push((at("received"), b.received.to_string()));
        out.push((at("dropped"), b.dropped.to_string()));
    }
    out
}
