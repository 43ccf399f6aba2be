//! `$SYS/broker/...`: the broker publishes its own numbers every
//! `sys.interval_secs`, retained, through the router, under Mosquitto's names
//! where Mosquitto has one. Who may read them is the ACL's business (with no
//! rules, nobody: `$SYS/#` must be granted).
//!
//! In cluster mode each node publishes its own `$SYS` (never forwarded to
//! other nodes) and names itself in `$SYS/broker/cluster/node`.
//!
//! Load averages (`load/.../1min`, `5min`, `15min`) are per-minute rates,
//! exponentially smoothed over the window, as Mosquitto computes them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::metrics::Totals;
use super::Monitor;
use crate::core::message::{Message, QoS};
use crate::core::router::Router;

/// Smoothing windows of the load averages, seconds, with their topic suffix.
const WINDOWS: [(f64, &str); 3] = [(60.0, "1min"), (300.0, "5min"), (900.0, "15min")];

/// Reads one number from the totals.
type Read = fn(&Totals) -> u64;

/// The `load/...` series: (topic part, value from the totals).
const LOADS: [(&str, Read); 4] = [
    ("messages/received", |t| t.messages_received),
    ("messages/sent", |t| t.messages_sent),
    ("bytes/received", |t| t.bytes_received),
    ("bytes/sent", |t| t.bytes_sent),
];

/// Publishes `$SYS` every `interval` until shutdown.
pub async fn run(
    router: Arc<Router>,
    monitor: Arc<Monitor>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut publisher = SysPublisher::new(router, monitor, interval);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => publisher.publish_all(),
        }
    }
}

struct SysPublisher {
    router: Arc<Router>,
    monitor: Arc<Monitor>,
    interval: Duration,
    last: Totals,
    /// Smoothed per-minute rate of each `LOADS` series for each window.
    load: [[f64; 3]; 4],
    first: bool,
}

impl SysPublisher {
    fn new(router: Arc<Router>, monitor: Arc<Monitor>, interval: Duration) -> SysPublisher {
        SysPublisher {
            router,
            monitor,
            interval,
            last: Totals::default(),
            load: [[0.0; 3]; 4],
            first: true,
        }
    }

    fn publish_all(&mut self) {
        for (topic, value) in self.values() {
            let message = Message::new(
                format!("$SYS/broker/{topic}"),
                Bytes::from(value),
                QoS::AtMostOnce,
                true,
            );
            self.router.publish(Arc::new(message));
        }
    }

    /// Every topic (below `$SYS/broker/`) with its payload, updating the load averages.
    fn values(&mut self) -> Vec<(String, String)> {
        let totals = self.monitor.metrics.totals();
        let router = &self.router;
        let sessions = router.sessions();
        let connected = sessions.iter().filter(|s| s.is_connected()).count();
        let stats = &router.stats;
        let dropped = stats.deliveries_dropped.load(Ordering::Relaxed)
            + self.monitor.metrics.dropped_acl.load(Ordering::Relaxed)
            + self.monitor.metrics.dropped_expired.load(Ordering::Relaxed);
        let stored: usize = sessions.iter().map(|s| s.pending_len()).sum::<usize>()
            + router
                .queues()
                .depths()
                .iter()
                .map(|(_, d)| d.ready + d.unacked)
                .sum::<usize>();
        let mut out: Vec<(String, String)> = vec![
            (
                "version".into(),
                format!("tern {}", env!("CARGO_PKG_VERSION")),
            ),
            (
                "uptime".into(),
                format!("{} seconds", self.monitor.uptime().as_secs()),
            ),
            ("clients/connected".into(), connected.to_string()),
            ("clients/active".into(), connected.to_string()),
            (
                "clients/disconnected".into(),
                (sessions.len() - connected).to_string(),
            ),
            (
                "clients/inactive".into(),
                (sessions.len() - connected).to_string(),
            ),
            ("clients/total".into(), sessions.len().to_string()),
            (
                "messages/received".into(),
                totals.messages_received.to_string(),
            ),
            ("messages/sent".into(), totals.messages_sent.to_string()),
            ("messages/stored".into(), stored.to_string()),
            ("store/messages/count".into(), stored.to_string()),
            (
                "publish/messages/received".into(),
                totals.messages_received.to_string(),
            ),
            (
                "publish/messages/sent".into(),
                totals.messages_sent.to_string(),
            ),
            ("publish/messages/dropped".into(), dropped.to_string()),
            ("bytes/received".into(), totals.bytes_received.to_string()),
            ("bytes/sent".into(), totals.bytes_sent.to_string()),
            (
                "retained messages/count".into(),
                router.retained_count().to_string(),
            ),
            (
                "subscriptions/count".into(),
                router.subscription_count().to_string(),
            ),
        ];
        // Cluster mode: `$SYS` is never forwarded, each node reports itself
        // and names itself here.
        if let Some(cluster) = self.monitor.cluster() {
            out.push(("cluster/node".into(), cluster.node.to_string()));
            let nodes = cluster.nodes();
            out.push(("cluster/nodes".into(), nodes.len().to_string()));
            let names: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
            out.push(("cluster/nodes/names".into(), names.join(",")));
        }
        out.extend(super::bridges::sys_values(&self.monitor.bridges()));
        self.update_load(&totals);
        for (i, (series, _)) in LOADS.iter().enumerate() {
            for (w, (_, suffix)) in WINDOWS.iter().enumerate() {
                out.push((
                    format!("load/{series}/{suffix}"),
                    format!("{:.2}", self.load[i][w]),
                ));
            }
        }
        self.last = totals;
        out
    }

    /// Folds the rate since the last publication into each window's average.
    fn update_load(&mut self, totals: &Totals) {
        if std::mem::take(&mut self.first) {
            return; // nothing to compare with yet
        }
        let secs = self.interval.as_secs_f64().max(0.001);
        for (i, (_, value)) in LOADS.iter().enumerate() {
            let delta = value(totals).saturating_sub(value(&self.last)) as f64;
            let per_minute = delta * 60.0 / secs;
            for (w, (window, _)) in WINDOWS.iter().enumerate() {
                let keep = (-secs / window).exp();
                self.load[i][w] = self.load[i][w] * keep + per_minute * (1.0 - keep);
            }
        }
    }
}
