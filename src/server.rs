//! Wires listeners, adapters and the core together; the one module (with main)
//! that knows every part.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::adapter::{self, Context, Peer};
use crate::config::Settings;
use crate::core::router::Router;
use crate::core::session::QueueLimits;
use crate::store::redb::RedbBackend;
use crate::store::Store;
use crate::transport::tcp::{self, TcpAcceptor};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Bind(std::io::Error),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
}

/// A running broker.
#[derive(Debug)]
pub struct Server {
    mqtt_addr: Option<SocketAddr>,
    stomp_addr: Option<SocketAddr>,
    router: Arc<Router>,
    shutdown: CancellationToken,
    /// Accept loops and connection tasks, awaited on shutdown.
    tracker: TaskTracker,
}

impl Server {
    /// Binds every enabled listener and starts serving; fails if a port is taken.
    pub async fn start(settings: Settings) -> Result<Server, ServerError> {
        let settings = Arc::new(settings);
        let mut router = Router::new(QueueLimits {
            max_queued: settings.limits.max_queued_messages,
            overflow: settings.limits.queue_overflow,
        })
        .with_queue_max_messages(settings.limits.queue_max_messages);
        let store = open_store(&settings)?;
        if let Some(store) = &store {
            router = router.with_store(Arc::clone(store));
        }
        let router = Arc::new(router);
        if let Some(store) = &store {
            let restored = router.restore(store.load()?)?;
            tracing::info!(
                sessions = restored.sessions,
                deliveries = restored.deliveries,
                retained = restored.retained,
                queued = restored.queued,
                expired_sessions = restored.expired_sessions,
                path = %settings.storage.store_file().display(),
                "store loaded"
            );
        }
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let connections = Arc::new(Semaphore::new(settings.limits.max_connections));
        let ctx = Context {
            router: Arc::clone(&router),
            settings: Arc::clone(&settings),
            shutdown: shutdown.clone(),
        };

        let mut mqtt_addr = None;
        if settings.mqtt.enabled {
            let listener = tcp::bind("mqtt", settings.mqtt.bind)
                .await
                .map_err(ServerError::Bind)?;
            mqtt_addr = listener.local_addr().ok();
            let acceptor = TcpAcceptor {
                name: "mqtt",
                listener,
                connections: Arc::clone(&connections),
                shutdown: shutdown.clone(),
                tracker: tracker.clone(),
            };
            let anonymous_allowed = settings.mqtt.anonymous_allowed();
            let ctx = ctx.clone();
            tracker.spawn(acceptor.run(move |stream, addr, permit| {
                let ctx = ctx.clone();
                async move {
                    let peer = Peer {
                        addr,
                        listener: "mqtt",
                        anonymous_allowed,
                        admitted: permit.is_some(),
                    };
                    adapter::mqtt::serve(stream, peer, ctx).await;
                    drop(permit);
                }
            }));
        }
        let mut stomp_addr = None;
        if settings.stomp.enabled {
            let listener = tcp::bind("stomp", settings.stomp.bind)
                .await
                .map_err(ServerError::Bind)?;
            stomp_addr = listener.local_addr().ok();
            let acceptor = TcpAcceptor {
                name: "stomp",
                listener,
                connections: Arc::clone(&connections),
                shutdown: shutdown.clone(),
                tracker: tracker.clone(),
            };
            let anonymous_allowed = settings.stomp.anonymous_allowed();
            let ctx = ctx.clone();
            tracker.spawn(acceptor.run(move |stream, addr, permit| {
                let ctx = ctx.clone();
                async move {
                    let peer = Peer {
                        addr,
                        listener: "stomp",
                        anonymous_allowed,
                        admitted: permit.is_some(),
                    };
                    adapter::stomp::serve(stream, peer, ctx).await;
                    drop(permit);
                }
            }));
        }
        Ok(Server {
            mqtt_addr,
            stomp_addr,
            router,
            shutdown,
            tracker,
        })
    }

    /// Where the MQTT listener is bound (the real port when configured with port 0).
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt_addr
    }

    /// Where the STOMP listener is bound (the real port when configured with port 0).
    pub fn stomp_addr(&self) -> Option<SocketAddr> {
        self.stomp_addr
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Starts the shutdown without waiting for it (for drop guards).
    pub fn stop_now(&self) {
        self.shutdown.cancel();
    }

    /// Stops accepting, tells every client goodbye and waits (up to `grace`) for connections to end.
    pub async fn shutdown(self, grace: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within the grace period");
        }
        if let Some(store) = self.router.store() {
            if let Err(e) = store.flush().await {
                tracing::error!(error = %e, "store flush at shutdown failed");
            }
            store.close();
        }
    }
}

/// Opens the store named by the settings, or none when storage is disabled.
fn open_store(settings: &Settings) -> Result<Option<Arc<Store>>, ServerError> {
    if !settings.storage.enabled {
        return Ok(None);
    }
    let backend = RedbBackend::open(&settings.storage.store_file())?;
    Ok(Some(Store::start(
        Arc::new(backend),
        settings.storage.durability,
    )))
}
