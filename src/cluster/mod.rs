//! Cluster mode: several Tern nodes sharing one NATS deployment act as one
//! broker. Core NATS carries live messages between nodes by interest;
//! JetStream holds what must be shared (client ids, retained messages, shared
//! groups, queues). No consensus or gossip of our own: NATS is the
//! distributed engine. The routing core knows none of this: the cluster
//! implements `core::fabric::Fabric`.
//!
//! - this file: [`Cluster`], the NATS connection and JetStream context of
//!   this node, and its connection state.
//! - `fabric.rs`: the core's `Fabric` on NATS: forwarding out, interest counted.
//! - `outbound.rs`: this node's messages to NATS: numbered, batched, within the window.
//! - `kick.rs`: the outbound task's wake-up (after the connections a publish woke here).
//! - `inbound.rs`: subscriptions for local interest; messages in, in origin order.
//! - `marks.rs`: per origin, the last message routed here (a moved session skips what it had).
//! - `settings.rs`: `[cluster]`.
//! - `status.rs`: nodes alive (heartbeats), NATS round trip: what operators see.
//! - `peers.rs`: the nodes a sync waits for: alive, or dead and not yet taken over.
//! - `liveness.rs`: dead nodes noticed (a liveness key per node, KV max age).
//! - `takeover.rs`: a dead node's client ids, sessions and wills taken over
//!   by one survivor each; at start, client ids claimed before loading.
//! - `subject.rs`: MQTT topic ⇄ NATS subject, filter → subjects (pure).
//! - `wire.rs`: a core message as a NATS payload (versioned) and back.
//! - `window.rs`: flow control between nodes (syncs confirmed by the receivers).
//! - `confirm.rs`: the receiving side's confirms of routed syncs.
//! - `confirmed.rs`: what the other nodes confirmed, for the acks waiting on it.
//! - keys and values of Tern's KV buckets: `store::nats::{kv_key, kv_value}`
//!   (shared with the NATS store backend).
//! - `ownership.rs`: one client id, one session in the cluster (KV, fenced
//!   by compare-and-set revision; takeover seen through a watch).
//! - `release.rs`: the word between a claiming node and the node that held
//!   the id (core NATS): a request to let go, answered at once, and the
//!   release word once the old holder's writes are committed.
//! - `retained.rs`: retained messages, one view (KV bucket + watch).
//! - `state.rs`: the core's `ClusterState` over those two, and its tasks.
//! - `queues.rs`: point-to-point queues cluster-wide (a JetStream work-queue
//!   stream, one durable pull consumer per queue; the core's `ClusterQueues`).
//! - `queue_pull.rs`: pulling queues' and shared groups' messages for local consumers.
//! - `shared.rs`: shared subscription groups cluster-wide (run as queues are,
//!   from a stream that captures the fabric's subjects).

#[cfg(test)]
mod adopt_capture_tests;
mod confirm;
mod confirmed;
pub mod fabric;
mod inbound;
mod kick;
pub mod liveness;
mod marks;
mod origins;
mod out_queue;
mod outbound;
mod owner_value;
pub(crate) mod ownership;
mod peers;
mod queue_pull;
pub mod queues;
pub(crate) mod release;
#[cfg(test)]
mod release_word_tests;
mod retained;
pub mod settings;
mod settle;
pub mod shared;
pub mod state;
#[cfg(test)]
mod state_tests;
pub mod status;
pub mod subject;
#[cfg(test)]
mod subject_tests;
mod takeover;
#[cfg(test)]
mod takeover_tests;
#[cfg(test)]
mod unread_tests;
pub mod window;
pub mod wire;
mod wire_legacy;
#[cfg(test)]
mod wire_tests;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;

pub use settings::ClusterSettings;
pub use takeover::StartClaims;

/// Why this node could not join the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid value for `{key}`: {reason}")]
    Settings { key: &'static str, reason: String },
    #[error("cannot read `cluster.creds_file` {path}: {source}")]
    Credentials {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot connect to NATS at {urls}: {source}")]
    Connect {
        urls: String,
        source: async_nats::ConnectError,
    },
}

/// Messages a NATS subscription of this node buffers at least (async-nats' default).
const MIN_SUBSCRIPTION_CAPACITY: usize = 65_536;

/// How long the first connection to NATS may take before the start fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the connection's events tell (read by `/healthz` and `/metrics`).
#[derive(Debug, Default)]
pub struct ConnectionState {
    /// False between a disconnection and the next successful reconnection.
    connected: AtomicBool,
    /// True from a disconnection to the reconnection that follows it.
    lost: AtomicBool,
    /// Reconnections since start (the first connection not counted).
    reconnects: AtomicU64,
    /// Times NATS dropped messages of a subscription this node read too slowly.
    slow_consumer_events: AtomicU64,
    /// This node's stored sessions are restored and its start's claims
    /// done: until then it confirms no other node's sync (`inbound.rs`),
    /// since its interest is not all subscribed yet.
    restored: AtomicBool,
    /// Told once `restored` is set (the heartbeat task beats at once).
    restored_signal: tokio::sync::Notify,
}

impl ConnectionState {
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// This node's sessions are restored (see `restored`); set once at start.
    pub fn mark_restored(&self) {
        self.restored.store(true, Ordering::Release);
        self.restored_signal.notify_one();
    }

    pub fn is_restored(&self) -> bool {
        self.restored.load(Ordering::Acquire)
    }

    /// Messages NATS handed this node that the client library dropped: a
    /// subscription's buffer was full (should stay 0: see `cluster.window`).
    pub fn slow_consumer_events(&self) -> u64 {
        self.slow_consumer_events.load(Ordering::Relaxed)
    }
}

/// This node's membership of the cluster: its NATS connection (cheap to
/// clone: async-nats multiplexes one TCP connection) and JetStream context.
#[derive(Debug, Clone)]
pub struct Cluster {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    /// Kept for [`Cluster::connect_more`].
    settings: Redacted,
    node: Arc<str>,
    replicas: usize,
    window: usize,
    /// `cluster.strict_acks` (`window.rs`).
    strict_acks: bool,
    timing: liveness::Timing,
    state: Arc<ConnectionState>,
    /// This run of the node (random per start): the origin epoch of its
    /// messages (`fabric.rs`) and, in its claims of client ids, which run
    /// holds a session (`ownership.rs`), so a session's stored marks are
    /// used only when that run wrote them.
    run: u64,
}

impl Cluster {
    /// Connects to NATS as node `settings.node`. Fails when no server of
    /// `settings.nats_urls` answers within [`CONNECT_TIMEOUT`] or refuses the
    /// credentials; once connected, async-nats reconnects by itself forever.
    ///
    /// The connection is made with `no_echo`: NATS never hands this node a
    /// message it published itself, on any subject.
    pub async fn connect(settings: &ClusterSettings) -> Result<Cluster, ClusterError> {
        settings.validate().map_err(|e| ClusterError::Settings {
            key: e.key,
            reason: e.reason,
        })?;
        let state = Arc::new(ConnectionState::default());
        let (client, urls) = dial(settings, &settings.node, &state).await?;
        let server = client.server_info();
        tracing::info!(
            node = %settings.node,
            nats = %urls,
            server = %server.server_name,
            server_version = %server.version,
            jetstream = server.jetstream,
            "cluster: connected to NATS"
        );
        let jetstream = jetstream::new(client.clone());
        Ok(Cluster {
            client,
            jetstream,
            settings: Redacted(Arc::new(settings.clone())),
            node: Arc::from(settings.node.as_str()),
            replicas: settings.replicas,
            window: settings.window,
            strict_acks: settings.strict_acks,
            timing: liveness::Timing {
                interval: Duration::from_millis(settings.liveness_interval_ms),
                dead_after: Duration::from_millis(settings.dead_after_ms),
            },
            state,
            run: rand::random::<u64>().max(1),
        })
    }

    /// This run of the node (see the field).
    pub fn run(&self) -> u64 {
        self.run
    }

    /// The NATS connection (core NATS: publish, subscribe, request).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Another connection to NATS for `role` (named `tern:<node>:<role>`,
    /// with its own state: `/healthz` follows the main one), so traffic
    /// there never queues behind this node's routing, nor the reverse
    /// (the NATS backend's durable streams read and append on their own).
    pub async fn connect_more(&self, role: &str) -> Result<async_nats::Client, ClusterError> {
        let name = format!("{}:{role}", self.settings.0.node);
        let state = Arc::new(ConnectionState::default());
        Ok(dial(&self.settings.0, &name, &state).await?.0)
    }

    /// JetStream on the same connection (KV buckets, streams, consumers).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// This node's name (`cluster.node`).
    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    /// Copies of Tern's own JetStream buckets and streams (`cluster.replicas`).
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Messages this node may have sent unconfirmed (`cluster.window`).
    pub fn window(&self) -> usize {
        self.window
    }

    /// Whether an ack whose sync timed out fails (`cluster.strict_acks`).
    pub fn strict_acks(&self) -> bool {
        self.strict_acks
    }

    /// How often this node beats and when another is dead (`[cluster]`).
    pub fn timing(&self) -> liveness::Timing {
        self.timing
    }

    /// The connection's state as its events last told it.
    pub fn state(&self) -> &Arc<ConnectionState> {
        &self.state
    }
}

/// The `[cluster]` settings, shown without their secrets (password, token).
#[derive(Clone)]
struct Redacted(Arc<ClusterSettings>);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("node", &self.0.node)
            .field("nats_urls", &self.0.nats_urls)
            .finish_non_exhaustive()
    }
}

/// A connection to `settings.nats_urls` named `tern:<name>`, its events
/// kept in `state`; with the URLs joined (for messages).
async fn dial(
    settings: &ClusterSettings,
    name: &str,
    state: &Arc<ConnectionState>,
) -> Result<(async_nats::Client, String), ClusterError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("tern:{name}"))
        .no_echo()
        .connection_timeout(CONNECT_TIMEOUT)
        // Room for a burst of publishes between two writes of the connection
        // (the default, 2,048, made the outbound task wait on every batch).
        .client_capacity(65_536)
        // Each sending node keeps at most a window unconfirmed (`window.rs`),
        // so a subscription that holds several never drops one; never below
        // the library's default, which the JetStream watches need.
        .subscription_capacity(
            settings
                .window
                .saturating_mul(settings::WINDOWS_BUFFERED)
                .max(MIN_SUBSCRIPTION_CAPACITY),
        )
        .max_reconnects(None::<usize>)
        .event_callback({
            let state = Arc::clone(state);
            let node: Arc<str> = Arc::from(name);
            move |event| {
                let state = Arc::clone(&state);
                let node = Arc::clone(&node);
                async move { note_event(&node, &state, event) }
            }
        });
    if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &settings.token {
        options = options.token(token.clone());
    }
    if let Some(path) = &settings.creds_file {
        options =
            options
                .credentials_file(path)
                .await
                .map_err(|source| ClusterError::Credentials {
                    path: path.clone(),
                    source,
                })?;
    }
    if let Some(ca) = &settings.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    let mut addrs = Vec::with_capacity(settings.nats_urls.len());
    for url in &settings.nats_urls {
        let addr = url
            .parse::<async_nats::ServerAddr>()
            .map_err(|e| ClusterError::Settings {
                key: "cluster.nats_urls",
                reason: format!("{url:?}: {e}"),
            })?;
        addrs.push(addr);
    }
    let urls = settings.nats_urls.join(",");
    let client = options
        .connect(addrs)
        .await
        .map_err(|source| ClusterError::Connect {
            urls: urls.clone(),
            source,
        })?;
    state.connected.store(true, Ordering::Relaxed);
    Ok((client, urls))
}

/// Logs a connection event once (they come once per change, not per message)
/// and keeps the state `/healthz` reads.
fn note_event(node: &str, state: &ConnectionState, event: async_nats::Event) {
    match event {
        async_nats::Event::Connected => {
            state.connected.store(true, Ordering::Relaxed);
            // The first connection is not a reconnection (and was logged by `connect`).
            if state.lost.swap(false, Ordering::Relaxed) {
                state.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    node,
                    "cluster: reconnected to NATS; traffic between nodes resumes"
                );
            }
        }
        async_nats::Event::Disconnected => {
            state.connected.store(false, Ordering::Relaxed);
            state.lost.store(true, Ordering::Relaxed);
            tracing::warn!(
                node,
                "cluster: NATS connection lost; local traffic goes on, traffic between nodes \
                 waits until the connection is back (reconnecting)"
            );
        }
        async_nats::Event::SlowConsumer(sid) => {
            let total = state.slow_consumer_events.fetch_add(1, Ordering::Relaxed) + 1;
            // The first and then every 1000th: one comes per message dropped.
            if total == 1 || total.is_multiple_of(1000) {
                tracing::warn!(
                    node,
                    subscription = sid,
                    total,
                    "cluster: messages from other nodes dropped: this node reads them too slowly"
                );
            }
        }
        other => tracing::info!(node, event = %other, "cluster: NATS connection event"),
    }
}
