//! Wires listeners, adapters and the core together; the one module (with main)
//! that knows every part.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::adapter::{self, Context, Peer};
use crate::config::{ListenerSettings, Settings};
use crate::core::router::Router;
use crate::core::session::QueueLimits;
use crate::store::redb::RedbBackend;
use crate::store::Store;
use crate::transport::tcp::{self, TcpAcceptor};
use crate::transport::ws;

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
    ws_addr: Option<SocketAddr>,
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

        let listeners = Listeners {
            connections,
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            ctx,
        };
        let mut mqtt_addr = None;
        if settings.mqtt.enabled {
            mqtt_addr = Some(
                listeners
                    .spawn_tcp("mqtt", &settings.mqtt, adapter::mqtt::serve::<TcpStream>)
                    .await?,
            );
        }
        let mut stomp_addr = None;
        if settings.stomp.enabled {
            stomp_addr = Some(
                listeners
                    .spawn_tcp("stomp", &settings.stomp, adapter::stomp::serve::<TcpStream>)
                    .await?,
            );
        }
        let mut ws_addr = None;
        if settings.websocket.enabled {
            let ws = settings.websocket.listener();
            ws_addr = Some(listeners.spawn_tcp("ws", &ws, ws::serve).await?);
        }
        Ok(Server {
            mqtt_addr,
            stomp_addr,
            ws_addr,
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

    /// Where the WebSocket listener (MQTT and STOMP, and `web.root`) is bound.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
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

/// What every listener shares: the connection cap, shutdown and the tasks to await.
struct Listeners {
    connections: Arc<Semaphore>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    ctx: Context,
}

impl Listeners {
    /// Binds a plain TCP listener and serves each connection with `serve`; returns the bound address.
    async fn spawn_tcp<F, Fut>(
        &self,
        name: &'static str,
        settings: &ListenerSettings,
        serve: F,
    ) -> Result<SocketAddr, ServerError>
    where
        F: Fn(TcpStream, Peer, Context) -> Fut + Copy + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tcp::bind(name, settings.bind)
            .await
            .map_err(ServerError::Bind)?;
        let addr = listener.local_addr().map_err(ServerError::Bind)?;
        let acceptor = TcpAcceptor {
            name,
            listener,
            connections: Arc::clone(&self.connections),
            shutdown: self.shutdown.clone(),
            tracker: self.tracker.clone(),
        };
        let anonymous_allowed = settings.anonymous_allowed();
        let ctx = self.ctx.clone();
        self.tracker
            .spawn(acceptor.run(move |stream, addr, permit| {
                let ctx = ctx.clone();
                async move {
                    let peer = Peer {
                        addr,
                        listener: name,
                        anonymous_allowed,
                        admitted: permit.is_some(),
                    };
                    serve(stream, peer, ctx).await;
                    drop(permit);
                }
            }));
        Ok(addr)
    }
}
