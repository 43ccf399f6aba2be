//! Operating the broker: Prometheus metrics, `/healthz`, the admin API
//! ([`api`]) and the web dashboard ([`dashboard`]), all on one HTTP listener
//! ([`http`]), and the `$SYS/broker/...` topics ([`sys`]).
//!
//! Adapters report into a [`Monitor`] (shared through their `Context`): message
//! counters and the sampled busiest topics ([`top_topics`]) on the hot path, and
//! who is connected. The HTTP side and the `$SYS` publisher read it together
//! with the core's own state.

pub mod api;
pub mod bridges;
pub mod cluster;
pub mod dashboard;
pub mod http;
pub mod metrics;
mod schemas;
mod streams;
pub mod sys;
pub mod top_topics;
pub mod traffic;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use prometheus_client::metrics::gauge::Gauge;

pub use metrics::{Metrics, Protocol};

use crate::cluster::status::ClusterStatus;

/// What the broker's parts report to operators.
#[derive(Debug)]
pub struct Monitor {
    pub metrics: Metrics,
    /// Connected clients, by connection id. Boxed: a map slot is then 16 bytes,
    /// and a table grown for 10,000 clients does not hold 2× their size inline.
    clients: DashMap<u64, Box<ClientInfo>>,
    started: Instant,
    /// Accept loops started, and those still running (`/healthz` compares them).
    listeners_started: AtomicUsize,
    listeners_running: Arc<AtomicUsize>,
    /// The cluster as this node sees it (cluster mode only).
    cluster: std::sync::OnceLock<Arc<ClusterStatus>>,
    /// Each `[[bridge]]`'s state, in config order (set once at start).
    bridges: std::sync::OnceLock<Vec<Arc<crate::bridge::status::BridgeStatus>>>,
}

/// Held by a running accept loop; dropping it (the loop ended, or panicked)
/// marks the listener down.
#[derive(Debug)]
pub struct ListenerAlive(Arc<AtomicUsize>);

impl Drop for ListenerAlive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor {
            metrics: Metrics::default(),
            clients: DashMap::new(),
            started: Instant::now(),
            listeners_started: AtomicUsize::new(0),
            listeners_running: Arc::new(AtomicUsize::new(0)),
            cluster: std::sync::OnceLock::new(),
            bridges: std::sync::OnceLock::new(),
        }
    }
}

/// One connected client, as the admin API lists it. Every connection has one,
/// so it is kept to one 96-byte allocation.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub client_id: Arc<str>,
    pub protocol: Protocol,
    pub listener: &'static str,
    pub address: SocketAddr,
    pub username: Option<Arc<str>>,
    /// Unix time, seconds, of the CONNECT (32 bits last until 2106).
    pub connected_since: u32,
    pub connection_id: u64,
}

impl ClientInfo {
    pub fn new(
        protocol: Protocol,
        (listener, address): (&'static str, SocketAddr),
        (client_id, username): (Arc<str>, Option<Arc<str>>),
        connection_id: u64,
    ) -> ClientInfo {
        ClientInfo {
            client_id,
            protocol,
            listener,
            address,
            username,
            connected_since: u32::try_from(unix_now()).unwrap_or(u32::MAX),
            connection_id,
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Monitor {
    /// The bridges' states (call once, at start).
    pub fn set_bridges(&self, bridges: Vec<Arc<crate::bridge::status::BridgeStatus>>) {
        let _ = self.bridges.set(bridges);
    }

    /// A snapshot of every bridge, in config order.
    pub fn bridges(&self) -> Vec<crate::bridge::status::BridgeSnapshot> {
        self.bridges
            .get()
            .map(|all| all.iter().map(|b| b.snapshot()).collect())
            .unwrap_or_default()
    }

    /// A client finished CONNECT; it is listed and counted until the guard drops.
    pub fn client_connected(self: &Arc<Self>, info: ClientInfo) -> ClientGuard {
        let protocol = info.protocol;
        let gauge = self.metrics.connected(protocol, info.listener);
        let connection_id = info.connection_id;
        self.clients.insert(connection_id, Box::new(info));
        ClientGuard {
            monitor: Arc::clone(self),
            protocol,
            connection_id,
            gauge,
        }
    }

    /// Every connected client, by client id.
    pub fn clients(&self) -> Vec<ClientInfo> {
        let mut out: Vec<ClientInfo> = self.clients.iter().map(|c| (**c.value()).clone()).collect();
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out
    }

    pub fn connected_count(&self) -> usize {
        self.clients.len()
    }

    /// Connected clients by protocol: (MQTT, STOMP).
    pub fn connected_by_protocol(&self) -> (usize, usize) {
        let (mut mqtt, mut stomp) = (0, 0);
        for client in self.clients.iter() {
            if client.protocol == Protocol::Stomp {
                stomp += 1;
            } else {
                mqtt += 1;
            }
        }
        (mqtt, stomp)
    }

    /// An accept loop starts; it counts as up while the returned guard lives.
    pub fn listener_started(&self) -> ListenerAlive {
        self.listeners_started.fetch_add(1, Ordering::AcqRel);
        self.listeners_running.fetch_add(1, Ordering::AcqRel);
        ListenerAlive(Arc::clone(&self.listeners_running))
    }

    /// How many accept loops have stopped (0 while every listener accepts).
    pub fn listeners_down(&self) -> usize {
        let started = self.listeners_started.load(Ordering::Acquire);
        started.saturating_sub(self.listeners_running.load(Ordering::Acquire))
    }

    /// Cluster mode: what `/metrics`, `/healthz`, the admin API and `$SYS` show of it.
    pub fn set_cluster(&self, status: Arc<ClusterStatus>) {
        let _ = self.cluster.set(status);
    }

    pub fn cluster(&self) -> Option<&Arc<ClusterStatus>> {
        self.cluster.get()
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }
}

/// Keeps a client listed and counted as connected; dropping it ends both.
#[derive(Debug)]
pub struct ClientGuard {
    monitor: Arc<Monitor>,
    protocol: Protocol,
    connection_id: u64,
    gauge: Gauge,
}

impl ClientGuard {
    /// The connection ended: counted by `reason` (`client` for a DISCONNECT, else an error label).
    pub fn ended(self, reason: &'static str) {
        self.monitor.metrics.disconnected(self.protocol, reason);
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.gauge.dec();
        self.monitor.clients.remove(&self.connection_id);
    }
}

/// Starts what operators use: the HTTP listener (when enabled; its bound address
/// is returned) and the `$SYS` publisher (when its interval is above 0).
pub async fn start(
    settings: &Arc<crate::config::Settings>,
    router: &Arc<crate::core::router::Router>,
    monitor: &Arc<Monitor>,
    shutdown: &tokio_util::sync::CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> std::io::Result<Option<SocketAddr>> {
    if settings.sys.interval_secs > 0 {
        let interval = std::time::Duration::from_secs(settings.sys.interval_secs);
        tracker.spawn(sys::run(
            Arc::clone(router),
            Arc::clone(monitor),
            interval,
            shutdown.clone(),
        ));
    }
    if !settings.http.enabled {
        return Ok(None);
    }
    let listener = http::bind(settings.http.bind).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(http::HttpState {
        monitor: Arc::clone(monitor),
        router: Arc::clone(router),
        settings: Arc::clone(settings),
        shutdown: shutdown.clone(),
    });
    tracker.spawn(http::run(listener, state, tracker.clone()));
    Ok(Some(addr))
}

#[cfg(test)]
mod tests {
    use super::Monitor;

    #[test]
    fn a_listener_whose_accept_loop_ended_counts_as_down() {
        let monitor = Monitor::default();
        let first = monitor.listener_started();
        let _second = monitor.listener_started();
        assert_eq!(monitor.listeners_down(), 0);
        drop(first);
        assert_eq!(monitor.listeners_down(), 1);
    }
}
