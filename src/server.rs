//! Wires listeners, adapters and the core together; the one module (with main)
//! that knows every part.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::adapter::budget::BufferBudget;
use crate::adapter::{self, Context};
use arc_swap::ArcSwap;

use crate::admin::{self, Monitor};
use crate::auth::{Authenticator, PasswordFileError};
use crate::cluster::state::{SharedState, SharedStateError};
use crate::cluster::{Cluster, ClusterError};
use crate::config::{ConfigError, Settings, StoreBackend};
use crate::core::router::{Router, RouterSettings};
#[cfg(unix)]
use crate::reload::LiveConfig;
pub use crate::reload::Reloader;
use crate::store::nats::NatsBackend;
use crate::store::redb::{RedbBackend, Repair};
use crate::store::Store;
use crate::transport::cap::ListenerCaps;
use crate::transport::tls::{self, ReloadableTls, TlsError};
use crate::transport::ws;

mod listeners;
use listeners::{tls_config, Listeners};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Bind(std::io::Error),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Passwords(#[from] PasswordFileError),
    /// Settings built in code (not loaded, so not validated) with bad `[[acl]]` rules.
    #[error("{0}")]
    Config(#[from] Box<ConfigError>),
    #[error("cannot install the SIGHUP handler: {0}")]
    Signal(std::io::Error),
    #[error("[[stream]]: {0}")]
    Stream(#[from] crate::core::stream::StreamError),
    #[error("[[schema]]: {0}")]
    Schema(#[from] crate::core::schema::SchemaSettingsError),
    /// `[cluster]` is enabled and this node could not join (bad URL, NATS unreachable).
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    /// The buckets of client ids or retained messages could not be opened.
    #[error("cluster: {0}")]
    ClusterState(#[from] SharedStateError),
    /// The stream of the cluster's queues could not be made.
    #[error("cluster: {0}")]
    ClusterQueues(#[from] crate::cluster::queues::QueueStreamError),
}

/// Where each enabled listener is bound (the real port when configured with port 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct BoundAddrs {
    pub mqtt: Option<SocketAddr>,
    pub stomp: Option<SocketAddr>,
    pub mqtt_tls: Option<SocketAddr>,
    pub stomp_tls: Option<SocketAddr>,
    /// MQTT and STOMP over WebSocket, and `web.root` over HTTP.
    pub ws: Option<SocketAddr>,
    /// The same over TLS (WSS, HTTPS).
    pub websocket_tls: Option<SocketAddr>,
    /// The operations listener (metrics, health, admin API).
    pub http: Option<SocketAddr>,
}

/// A running broker.
#[derive(Debug)]
pub struct Server {
    addrs: BoundAddrs,
    router: Arc<Router>,
    shutdown: CancellationToken,
    /// Accept loops and connection tasks, awaited on shutdown.
    tracker: TaskTracker,
    /// Bytes held for unfinished frames and open transactions (`limits.max_buffered_bytes`).
    buffer_budget: Arc<BufferBudget>,
    /// This node's NATS connection when `[cluster]` is enabled.
    cluster: Option<Cluster>,
}

impl Server {
    /// Binds every enabled listener and starts serving; fails if a port is taken.
    pub async fn start(settings: Settings) -> Result<Server, ServerError> {
        Server::start_with(settings, None).await
    }

    /// [`Server::start`], and on SIGHUP also re-reads the configuration through
    /// `reloader` (certificates and the password file are re-read either way).
    pub async fn start_with(
        settings: Settings,
        reloader: Option<Reloader>,
    ) -> Result<Server, ServerError> {
        let settings = Arc::new(settings);
        // First: an unreachable NATS must stop the start before anything listens.
        let cluster = if settings.cluster.enabled {
            Some(Cluster::connect(&settings.cluster).await?)
        } else {
            None
        };
        let mut claims = crate::cluster::StartClaims::default();
        let store = open_store(&settings, cluster.as_ref(), &mut claims).await?;
        let router = Router::from_settings(RouterSettings {
            queue_limits: settings.limits.queue_limits(),
            queue_max_messages: settings.limits.queue_max_messages,
            store: store.clone(),
            store_max_messages: settings.storage.max_messages,
        });
        router.set_retained_limits(settings.limits.retained_limits());
        let router = Arc::new(router);
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        // Before the store is restored: restored subscriptions are interest too.
        let cluster_status = cluster.as_ref().map(|cluster| {
            let (fabric, status) = crate::cluster::fabric::start(
                cluster,
                Arc::clone(&router),
                shutdown.clone(),
                &tracker,
            );
            router.set_fabric(fabric);
            status
        });
        // Before the store is restored: restored queue consumers are consumers of the cluster's queues.
        if let (Some(cluster), Some(status)) = (&cluster, &cluster_status) {
            crate::cluster::queues::start(
                cluster,
                &router,
                settings.limits.queue_max_messages,
                std::time::Duration::from_secs(settings.cluster.ack_wait_secs),
                Arc::clone(&status.queues),
                shutdown.clone(),
                &tracker,
            )
            .await?;
        }
        router.set_session_owner_check(settings.auth.session_owner_check);
        for stream in &settings.stream {
            router.streams().declare(stream)?;
        }
        router
            .schemas()
            .set_check_utf8(settings.limits.check_utf8_payloads);
        router
            .schemas()
            .set_configured(crate::core::schema::compile_configured(&settings.schema)?);
        if let Some(store) = &store {
            // On a blocking thread: a backend may wait for this runtime (NATS).
            let loading = Arc::clone(store);
            let mut snapshot = tokio::task::spawn_blocking(move || loading.load())
                .await
                .unwrap_or_else(|e| Err(crate::store::StoreError::Write(e.to_string())))?;
            let schemas = router
                .schemas()
                .restore(&std::mem::take(&mut snapshot.schemas));
            if schemas > 0 {
                tracing::info!(schemas, "schemas restored");
            }
            let restored = router.restore(snapshot)?;
            tracing::info!(
                sessions = restored.sessions,
                deliveries = restored.deliveries,
                retained = restored.retained,
                queued = restored.queued,
                wills = restored.wills,
                expired_sessions = restored.expired_sessions,
                backend = ?settings.storage.backend,
                path = %settings.storage.store_file().display(),
                cache_size = %settings.storage.cache_size,
                "store loaded"
            );
        }
        if let Some(cluster) = &cluster {
            // After the restore: the bucket's retained messages override stored ones.
            let state = SharedState::start(
                cluster.jetstream(),
                (cluster.node(), cluster.run()),
                cluster.replicas(),
                &router,
                std::mem::take(&mut claims),
            )
            .await?;
            if let Some(status) = &cluster_status {
                state
                    .watch_nodes(
                        cluster,
                        Arc::clone(status),
                        &router,
                        shutdown.clone(),
                        &tracker,
                    )
                    .await;
            }
            // Not before the sessions its last run adopted are read: until
            // then what is routed for them reaches no store.
            state.unread_restored().await;
            // Its interest is complete: it may confirm other nodes' syncs.
            cluster.state().mark_restored();
        }
        let auth = Arc::new(Authenticator::from_settings(&settings.auth)?);
        let acl = Arc::new(ArcSwap::from_pointee(
            settings.compiled_acl().map_err(Box::new)?,
        ));
        // Certificates are read before anything listens: a bad path is a start-up error.
        let mqtt_tls = tls_config("mqtt_tls", &settings.mqtt_tls)?;
        let stomp_tls = tls_config("stomp_tls", &settings.stomp_tls)?;
        let websocket_tls = tls_config("websocket_tls", &settings.websocket_tls)?;
        let caps = ListenerCaps::new(settings.limits.max_connections);
        let monitor = Arc::new(Monitor::default());
        if let Some(status) = cluster_status {
            monitor.set_cluster(status);
        }
        if let Some(store) = &store {
            let observer = Arc::clone(&monitor);
            store.set_commit_observer(Box::new(move |took| observer.metrics.observe_commit(took)));
        }
        let ctx = Context::open(Arc::clone(&router), Arc::clone(&settings), shutdown.clone())
            .with_shared(Arc::clone(&auth), Arc::clone(&acl), Arc::clone(&monitor));
        // Restored sessions get the exceptions their owner's deny rules give them
        // before anything is routed to them (exceptions are never stored).
        let carved = ctx.recheck_all_subscriptions();
        if carved > 0 {
            tracing::info!(
                subscriptions = carved,
                "restored subscriptions given exceptions by deny rules"
            );
        }
        // After the restore and the exceptions: a bridge resumes its stored session.
        monitor.set_bridges(crate::bridge::start(
            &settings.bridge,
            &router,
            &shutdown,
            &tracker,
        ));
        // Connections hear of the shutdown through the router, on the kick
        // handle they wait on anyway: no shutdown future in every idle task.
        let on_shutdown = (shutdown.clone(), Arc::clone(&router));
        tracker.spawn(async move {
            let (shutdown, router) = on_shutdown;
            shutdown.cancelled().await;
            router.end_all_connections();
        });
        // Pull leases past their deadline give their messages back to their queue.
        tracker.spawn(adapter::http::expire_leases(
            Arc::clone(&router),
            shutdown.clone(),
        ));
        let retention = (shutdown.clone(), Arc::clone(router.streams()));
        tracker.spawn(async move {
            let (shutdown, streams) = retention;
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = streams.retention_loop() => {}
            }
        });
        let reloadable: Vec<Arc<ReloadableTls>> = [&mqtt_tls, &stomp_tls, &websocket_tls]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for tls in &reloadable {
            tracker.spawn(Arc::clone(tls).watch(tls::WATCH_INTERVAL, shutdown.clone()));
        }
        #[cfg(unix)]
        {
            let revoke_ctx = ctx.clone();
            let live = LiveConfig {
                acl: Arc::clone(&acl),
                limits: Arc::clone(&ctx.live_limits),
                caps: Arc::clone(&caps),
                router: Arc::clone(&router),
                buffer_budget: Arc::clone(&ctx.buffer_budget),
            };
            let on_hangup = tls::on_sighup(shutdown.clone(), move || {
                // A reloader means the `tern` process, which speaks for the service.
                if reloader.is_some() {
                    crate::systemd::reloading();
                }
                tls::reload_all(&reloadable);
                let _ = auth.reload();
                if let Some(reloader) = &reloader {
                    reloader.reload(&live, || {
                        let changed = revoke_ctx.recheck_all_subscriptions();
                        if changed > 0 {
                            tracing::info!(
                                subscriptions = changed,
                                "subscription exceptions changed: deny rules now carve other topics out of them"
                            );
                        }
                    });
                    crate::systemd::reloaded();
                }
            })
            .map_err(ServerError::Signal)?;
            tracker.spawn(on_hangup);
        }

        let buffer_budget = Arc::clone(&ctx.buffer_budget);
        let listeners = Listeners {
            caps,
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            ctx,
        };
        let mut addrs = BoundAddrs::default();
        if settings.mqtt.enabled {
            let serve = adapter::mqtt::serve::<TcpStream>;
            addrs.mqtt = Some(listeners.spawn_tcp("mqtt", &settings.mqtt, serve).await?);
        }
        if settings.stomp.enabled {
            let serve = adapter::stomp::serve::<TcpStream>;
            addrs.stomp = Some(listeners.spawn_tcp("stomp", &settings.stomp, serve).await?);
        }
        if let Some(tls) = mqtt_tls {
            let serve = adapter::mqtt::serve::<TlsStream<TcpStream>>;
            let bound = listeners
                .spawn_tls("mqtt_tls", &settings.mqtt_tls, tls, serve)
                .await?;
            addrs.mqtt_tls = Some(bound);
        }
        if let Some(tls) = stomp_tls {
            let serve = adapter::stomp::serve::<TlsStream<TcpStream>>;
            let bound = listeners
                .spawn_tls("stomp_tls", &settings.stomp_tls, tls, serve)
                .await?;
            addrs.stomp_tls = Some(bound);
        }
        if settings.websocket.enabled {
            let ws = settings.websocket.listener();
            addrs.ws = Some(listeners.spawn_tcp("ws", &ws, ws::serve).await?);
        }
        if let Some(tls) = websocket_tls {
            let serve = ws::serve::<TlsStream<TcpStream>>;
            let bound = listeners
                .spawn_tls("websocket_tls", &settings.websocket_tls, tls, serve)
                .await?;
            addrs.websocket_tls = Some(bound);
        }
        addrs.http = admin::start(&settings, &router, &monitor, &shutdown, &tracker)
            .await
            .map_err(ServerError::Bind)?;
        Ok(Server {
            addrs,
            router,
            shutdown,
            tracker,
            buffer_budget,
            cluster,
        })
    }

    /// This node's cluster membership (None unless `[cluster]` is enabled).
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// Where every enabled listener is bound.
    pub fn addrs(&self) -> BoundAddrs {
        self.addrs
    }

    /// Where the MQTT listener is bound (the real port when configured with port 0).
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.addrs.mqtt
    }

    /// Where the STOMP listener is bound (the real port when configured with port 0).
    pub fn stomp_addr(&self) -> Option<SocketAddr> {
        self.addrs.stomp
    }

    /// Where the WebSocket listener (MQTT and STOMP, and `web.root`) is bound.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.addrs.ws
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// What all connections hold of unfinished frames and open transactions.
    pub fn buffer_budget(&self) -> &Arc<BufferBudget> {
        &self.buffer_budget
    }

    /// Starts the shutdown without waiting for it (for drop guards).
    pub fn stop_now(&self) {
        self.shutdown.cancel();
    }

    /// Stops accepting, tells every client goodbye and waits (up to `grace`) for connections to end.
    /// Logs what it waits for and how long it took: with a large retained set
    /// the last commits and freeing the state take a noticeable time.
    pub async fn shutdown(self, grace: Duration) {
        let started = std::time::Instant::now();
        let retained = self.router.retained_count();
        tracing::info!(
            retained,
            "shutting down: closing connections, then saving the store"
        );
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within the grace period");
        }
        let Server { router, .. } = self;
        if let Err(e) = router.close_store().await {
            tracing::error!(error = %e, "store flush at shutdown failed");
        }
        // The retained set and sessions are freed here when this is the last
        // reference: part of what the operator waits for.
        drop(router);
        tracing::info!(
            retained,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shutdown complete"
        );
    }
}

/// Opens the store named by the settings, or none when storage is disabled.
/// With the nats backend, the client ids claimed before the load go to `claims`.
async fn open_store(
    settings: &Settings,
    cluster: Option<&Cluster>,
    claims: &mut crate::cluster::StartClaims,
) -> Result<Option<Arc<Store>>, ServerError> {
    if !settings.storage.enabled {
        return Ok(None);
    }
    if settings.storage.backend == StoreBackend::Nats {
        // Validation made sure of `[cluster]`; without it there is no NATS to keep it.
        let Some(cluster) = cluster else {
            return Err(ServerError::Store(crate::store::StoreError::Open {
                path: crate::store::nats::BUCKET.into(),
                reason: "storage.backend = \"nats\" needs [cluster] enabled".into(),
            }));
        };
        *claims = crate::cluster::state::claim_at_start(
            cluster.jetstream(),
            cluster.node(),
            cluster.run(),
            cluster.replicas(),
        )
        .await?;
        let backend = NatsBackend::open(
            cluster.jetstream().clone(),
            cluster.node(),
            cluster.replicas(),
            claims.foreign.clone(),
        )
        .await?
        .leaving_unread(claims.unread())
        // Durable streams on connections of their own (`store/nats/streams.rs`).
        .with_stream_connections(
            async_nats::jetstream::new(cluster.connect_more("stream-appends").await?),
            async_nats::jetstream::new(cluster.connect_more("stream-reads").await?),
            cluster.replicas(),
        );
        return Ok(Some(Store::start(
            Arc::new(backend),
            settings.storage.durability,
        )));
    }
    let path = settings.storage.store_file();
    // Validated at load; the default if it somehow is not a size.
    let cache = settings
        .storage
        .cache_bytes()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(crate::store::redb::DEFAULT_CACHE_SIZE);
    let backend = RedbBackend::open_with_cache(&path, cache)?;
    let rolled_back = match &backend.repair {
        Repair::None => false,
        Repair::Unclean => {
            tracing::warn!(
                path = %path.display(),
                "store was not shut down cleanly: redb verified the last commit and rebuilt \
                 its free-space map (the file header was rewritten); no committed data is lost"
            );
            false
        }
        Repair::RolledBack { copy } => {
            tracing::error!(
                path = %path.display(),
                damaged_copy = %copy.display(),
                "store damaged: the newest commit did not verify and redb rolled back to the \
                 commit before it; messages acknowledged in the most recent commits may be \
                 missing; the damaged file was kept as damaged_copy"
            );
            true
        }
    };
    let store = Store::start(Arc::new(backend), settings.storage.durability);
    store
        .recovered
        .store(u64::from(rolled_back), std::sync::atomic::Ordering::Relaxed);
    Ok(Some(store))
}
