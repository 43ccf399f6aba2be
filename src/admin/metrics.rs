//! Prometheus metrics. What the adapters count per message is a pre-resolved
//! handle (one relaxed atomic add, no lock, no label lookup); what the core
//! already knows (sessions, retained, queues, store) is read at scrape time.
//! The registry is built per scrape from shared handles, so a process may run
//! several brokers (tests) without their numbers mixing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::top_topics::TopTopics;
use crate::core::router::Router;

/// The protocol a connection speaks (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Mqtt,
    Stomp,
    /// HTTP `/v1` requests on the web port (no connection gauge: requests are not sessions).
    Http,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Mqtt => "mqtt",
            Protocol::Stomp => "stomp",
            Protocol::Http => "http",
        }
    }

    const ALL: [Protocol; 3] = [Protocol::Mqtt, Protocol::Stomp, Protocol::Http];
}

/// Label pairs of one series.
type Labels = Vec<(&'static str, &'static str)>;

pub use super::traffic::Traffic;

/// Totals over every protocol, for `$SYS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub messages_received: u64,
    pub messages_sent: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

/// Every metric the broker keeps beside the core's own counters.
#[derive(Debug)]
pub struct Metrics {
    traffic: [Traffic; 3],
    connections: Family<Labels, Gauge>,
    connects: Family<Labels, Counter>,
    disconnects: Family<Labels, Counter>,
    tls_handshake_failures: Family<Labels, Counter>,
    store_commit_seconds: Histogram,
    /// Publishes the ACL refused (the client was told, nothing was routed).
    pub dropped_acl: AtomicU64,
    /// Deliveries discarded because their message expired before it could be sent.
    pub dropped_expired: AtomicU64,
    /// The busiest topics lately (sampled estimates), for the dashboard.
    pub top_topics: TopTopics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            traffic: Default::default(),
            connections: Family::default(),
            connects: Family::default(),
            disconnects: Family::default(),
            tls_handshake_failures: Family::default(),
            // 50 µs to about 3 s.
            store_commit_seconds: Histogram::new(exponential_buckets(0.000_05, 3.0, 11)),
            dropped_acl: AtomicU64::new(0),
            dropped_expired: AtomicU64::new(0),
            top_topics: TopTopics::default(),
        }
    }
}

impl Metrics {
    pub fn traffic(&self, protocol: Protocol) -> &Traffic {
        &self.traffic[protocol as usize]
    }

    /// A client finished CONNECT on `listener`: counted, and the returned gauge
    /// (already raised) must be lowered when it goes.
    pub(super) fn connected(&self, protocol: Protocol, listener: &'static str) -> Gauge {
        let labels = vec![("protocol", protocol.label()), ("listener", listener)];
        self.connects
            .get_or_create(&with(&labels, ("result", "accepted")))
            .inc();
        let gauge = self.connections.get_or_create_owned(&labels);
        gauge.inc();
        gauge
    }

    /// A client was refused at CONNECT (bad login, connection limit, …).
    pub fn refused(&self, protocol: Protocol, listener: &'static str) {
        let labels = vec![
            ("protocol", protocol.label()),
            ("listener", listener),
            ("result", "refused"),
        ];
        self.connects.get_or_create(&labels).inc();
    }

    /// A connected client went away; `reason` is a short label (`client`, `peer_closed`, …).
    pub fn disconnected(&self, protocol: Protocol, reason: &'static str) {
        let labels = vec![("protocol", protocol.label()), ("reason", reason)];
        self.disconnects.get_or_create(&labels).inc();
    }

    pub fn tls_handshake_failed(&self, listener: &'static str) {
        self.tls_handshake_failures
            .get_or_create(&vec![("listener", listener)])
            .inc();
    }

    pub fn observe_commit(&self, took: std::time::Duration) {
        self.store_commit_seconds.observe(took.as_secs_f64());
    }

    pub fn dropped_expired(&self, count: usize) {
        if count > 0 {
            self.dropped_expired
                .fetch_add(count as u64, Ordering::Relaxed);
        }
    }

    /// Sums over protocols and QoS levels.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for t in &self.traffic {
            totals.messages_received += (0..3).map(|q| t.received_at(q)).sum::<u64>();
            totals.messages_sent += (0..3).map(|q| t.sent_at(q)).sum::<u64>();
            totals.bytes_received += t.bytes_received();
            totals.bytes_sent += t.bytes_sent();
        }
        totals
    }

    /// The Prometheus text exposition (OpenMetrics) of these metrics and `router`'s state.
    pub fn render(
        &self,
        router: &Arc<Router>,
        cluster: Option<&crate::cluster::status::ClusterStatus>,
        bridges: &[crate::bridge::status::BridgeSnapshot],
    ) -> String {
        let mut registry = Registry::with_prefix("tern");
        registry.register(
            "connections",
            "Clients connected now, by protocol and listener",
            self.connections.clone(),
        );
        registry.register(
            "connects",
            "CONNECTs answered, by protocol, listener and result (accepted, refused)",
            self.connects.clone(),
        );
        registry.register(
            "disconnects",
            "Connections ended after CONNECT, by protocol and reason",
            self.disconnects.clone(),
        );
        let received: Family<Labels, Counter> = Family::default();
        let sent: Family<Labels, Counter> = Family::default();
        let bytes_received: Family<Labels, Counter> = Family::default();
        let bytes_sent: Family<Labels, Counter> = Family::default();
        for protocol in Protocol::ALL {
            let t = self.traffic(protocol);
            let p = protocol.label();
            for (qos, label) in ["0", "1", "2"].into_iter().enumerate() {
                let labels = vec![("protocol", p), ("qos", label)];
                received.get_or_create(&labels).inc_by(t.received_at(qos));
                sent.get_or_create(&labels).inc_by(t.sent_at(qos));
            }
            bytes_received
                .get_or_create(&vec![("protocol", p)])
                .inc_by(t.bytes_received());
            bytes_sent
                .get_or_create(&vec![("protocol", p)])
                .inc_by(t.bytes_sent());
        }
        registry.register(
            "messages_received",
            "Messages published by clients, by protocol and QoS",
            received,
        );
        registry.register(
            "messages_sent",
            "Messages delivered to clients, by protocol and QoS",
            sent,
        );
        registry.register(
            "bytes_received",
            "Payload bytes of messages published by clients, by protocol",
            bytes_received,
        );
        registry.register(
            "bytes_sent",
            "Payload bytes of messages delivered to clients, by protocol",
            bytes_sent,
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out, by listener",
            self.tls_handshake_failures.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Time one store commit (group of writes, fsync included) took",
            self.store_commit_seconds.clone(),
        );
        registry.register(
            "schema_messages",
            "Messages checked against each schema, by result: valid, or invalid and \
             rejected / dead_lettered / logged (its on_invalid)",
            schema_counts(router),
        );
        registry.register_collector(Box::new(CoreSnapshot::take(self, router)));
        if let Some(cluster) = cluster {
            super::cluster::register(&mut registry, cluster);
        }
        super::bridges::register(&mut registry, bridges);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

/// `tern_schema_messages_total{schema, result}`, read from the core's counters.
fn schema_counts(router: &Arc<Router>) -> Family<Vec<(&'static str, String)>, Counter> {
    let family: Family<Vec<(&'static str, String)>, Counter> = Family::default();
    for (name, counts) in router.schemas().all_counters() {
        for (result, value) in [
            ("valid", &counts.valid),
            ("rejected", &counts.rejected),
            ("dead_lettered", &counts.dead_lettered),
            ("logged", &counts.logged),
        ] {
            family
                .get_or_create(&vec![
                    ("schema", name.clone()),
                    ("result", result.to_string()),
                ])
                .inc_by(value.load(Ordering::Relaxed));
        }
    }
    family
}

fn with(labels: &Labels, extra: (&'static str, &'static str)) -> Labels {
    let mut out = labels.clone();
    out.push(extra);
    out
}

/// What the core knows, read once per scrape (and per `/api/stats`).
#[derive(Debug, Default)]
pub(super) struct CoreSnapshot {
    pub sessions_online: i64,
    pub sessions_offline: i64,
    pub retained: i64,
    pub subscriptions: i64,
    pub queued_sessions: i64,
    pub queued_queues: i64,
    /// Messages not delivered, by reason label.
    pub dropped: [(&'static str, u64); 6],
    store_commits: Option<u64>,
    store_held: Option<i64>,
    store_recovered: i64,
}

impl CoreSnapshot {
    pub fn take(metrics: &Metrics, router: &Arc<Router>) -> CoreSnapshot {
        let mut snap = CoreSnapshot::default();
        for session in router.sessions() {
            if session.is_connected() {
                snap.sessions_online += 1;
            } else {
                snap.sessions_offline += 1;
            }
            snap.queued_sessions += session.pending_len() as i64;
        }
        snap.queued_queues = router
            .queues()
            .depths()
            .iter()
            .map(|(_, d)| (d.ready + d.unacked) as i64)
            .sum();
        snap.retained = router.retained_count() as i64;
        snap.subscriptions = router.subscription_count() as i64;
        let stats = &router.stats;
        snap.dropped = [
            ("acl", metrics.dropped_acl.load(Ordering::Relaxed)),
            ("expired", metrics.dropped_expired.load(Ordering::Relaxed)),
            (
                "queue_full",
                stats.deliveries_dropped.load(Ordering::Relaxed),
            ),
            (
                "no_subscribers",
                stats.messages_unmatched.load(Ordering::Relaxed),
            ),
            (
                "retained_limit",
                stats.retained_refused.load(Ordering::Relaxed),
            ),
            (
                "payload_not_utf8",
                router.schemas().utf8_refused.load(Ordering::Relaxed),
            ),
        ];
        if let Some(store) = router.store_status() {
            snap.store_commits = Some(store.commits);
            snap.store_held = Some(i64::try_from(store.held_messages).unwrap_or(i64::MAX));
            snap.store_recovered = i64::from(store.recovered);
        }
        snap
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, i64)],
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(0i64);
    let mut family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    for (labels, value) in series {
        if labels.is_empty() {
            return ConstGauge::new(*value).encode(family);
        }
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for CoreSnapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge(
            &mut encoder,
            "sessions",
            "Sessions by state: online (a client is connected) or offline (persistent, waiting)",
            &[
                (vec![("state", "online")], self.sessions_online),
                (vec![("state", "offline")], self.sessions_offline),
            ],
        )?;
        gauge(
            &mut encoder,
            "retained_messages",
            "Retained messages held",
            &[(vec![], self.retained)],
        )?;
        gauge(
            &mut encoder,
            "subscriptions",
            "Topic subscriptions in the routing trie",
            &[(vec![], self.subscriptions)],
        )?;
        gauge(
            &mut encoder,
            "queued_messages",
            "Messages waiting: in sessions' outbound queues and in point-to-point queues",
            &[
                (vec![("kind", "session")], self.queued_sessions),
                (vec![("kind", "queue")], self.queued_queues),
            ],
        )?;
        let mut dropped = encoder.encode_descriptor(
            "messages_dropped",
            "Messages or deliveries not delivered, by reason: acl (publish denied), expired, \
             queue_full (a session's queue was full, or it was offline and the message QoS 0), \
             no_subscribers (matched no subscription), retained_limit, payload_not_utf8 \
             (declared UTF-8, refused by limits.check_utf8_payloads)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (reason, value) in self.dropped {
            ConstCounter::new(value).encode(dropped.encode_family(&vec![("reason", reason)])?)?;
        }
        if let (Some(commits), Some(held)) = (self.store_commits, self.store_held) {
            let counter = ConstCounter::new(commits);
            let metric = encoder.encode_descriptor(
                "store_commits",
                "Store write transactions committed",
                None,
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
            gauge(
                &mut encoder,
                "store_messages",
                "Messages on disk (owed to persistent sessions plus queued)",
                &[(vec![], held)],
            )?;
            gauge(
                &mut encoder,
                "store_recovered",
                "1 when the store file was damaged and rolled back to an older commit at start \
                 (recent acknowledged messages may be missing; a copy was kept), else 0",
                &[(vec![], self.store_recovered)],
            )?;
        }
        Ok(())
    }
}
