//! The listeners: binding each configured socket and running its accept loop
//! under the broker-wide and per-listener connection caps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ServerError;
use crate::adapter::{Context, Peer};
use crate::config::{ListenerSettings, TlsListenerSettings};
use crate::transport::cap::ListenerCaps;
use crate::transport::tcp::{self, TcpAcceptor};
use crate::transport::tls::ReloadableTls;

/// The TLS config of an enabled TLS listener, loaded now (None when disabled).
pub(super) fn tls_config(
    section: &str,
    settings: &TlsListenerSettings,
) -> Result<Option<Arc<ReloadableTls>>, ServerError> {
    if !settings.enabled {
        return Ok(None);
    }
    Ok(Some(ReloadableTls::new(section, settings)?))
}

/// What every listener shares: the connection cap, shutdown and the tasks to await.
pub(super) struct Listeners {
    pub(super) caps: Arc<ListenerCaps>,
    pub(super) shutdown: CancellationToken,
    pub(super) tracker: TaskTracker,
    pub(super) ctx: Context,
}

impl Listeners {
    /// Binds a plain TCP listener and serves each connection with `serve`; returns the bound address.
    pub(super) async fn spawn_tcp<F, Fut>(
        &self,
        name: &'static str,
        settings: &ListenerSettings,
        serve: F,
    ) -> Result<SocketAddr, ServerError>
    where
        F: Fn(TcpStream, Peer, Context) -> Fut + Copy + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let anonymous_allowed = settings.anonymous_allowed();
        let cap = settings.max_connections;
        self.spawn(name, settings.bind, (anonymous_allowed, cap), serve)
            .await
    }

    /// Binds a TLS listener: each connection does the TLS handshake (within the
    /// connect timeout; a failure is logged and ends only that connection), then
    /// `serve` gets the decrypted stream and the certificate's user name.
    pub(super) async fn spawn_tls<F, Fut>(
        &self,
        name: &'static str,
        settings: &TlsListenerSettings,
        tls: Arc<ReloadableTls>,
        serve: F,
    ) -> Result<SocketAddr, ServerError>
    where
        F: Fn(TlsStream<TcpStream>, Peer, Context) -> Fut + Copy + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let anonymous_allowed = settings.anonymous_allowed();
        let handshake_timeout = Duration::from_secs(self.ctx.limits().connect_timeout_secs);
        let over_tls = move |stream: TcpStream, mut peer: Peer, ctx: Context| {
            let tls = Arc::clone(&tls);
            // Boxed, so the handshake's state and these arguments (moved on into
            // `serve`) do not stay in the task of an idle connection.
            let handshake = Box::pin(async move {
                match tls.handshake(stream, peer.addr, handshake_timeout).await {
                    Ok(connection) => {
                        peer.cert_username = connection.cert_username;
                        Some((connection.stream, peer, ctx))
                    }
                    Err(_) => {
                        ctx.monitor.metrics.tls_handshake_failed(peer.listener);
                        None
                    }
                }
            });
            async move {
                if let Some((stream, peer, ctx)) = handshake.await {
                    serve(stream, peer, ctx).await;
                }
            }
        };
        let cap = settings.max_connections;
        self.spawn(name, settings.bind, (anonymous_allowed, cap), over_tls)
            .await
    }

    /// Binds `bind` and runs the accept loop, handing each connection to `handle`;
    /// `cap` is this listener's own connection limit, beside the broker-wide one.
    async fn spawn<F, Fut>(
        &self,
        name: &'static str,
        bind: SocketAddr,
        (anonymous_allowed, cap): (bool, Option<usize>),
        handle: F,
    ) -> Result<SocketAddr, ServerError>
    where
        F: Fn(TcpStream, Peer, Context) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tcp::bind(name, bind).await.map_err(ServerError::Bind)?;
        let addr = listener.local_addr().map_err(ServerError::Bind)?;
        let acceptor = TcpAcceptor {
            name,
            listener,
            connections: Arc::clone(&self.caps.total),
            shutdown: self.shutdown.clone(),
            tracker: self.tracker.clone(),
        };
        let ctx = self.ctx.clone();
        let cap = self.caps.register(name, cap);
        let alive = self.ctx.monitor.listener_started();
        let accept_loop = acceptor.run(move |stream, addr, permit| {
            let ctx = ctx.for_new_connection();
            let handle = handle.clone();
            let own = cap.try_acquire();
            if own.is_none() {
                tracing::warn!(listener = name, peer = %addr, "listener connection limit reached");
            }
            let peer = Peer {
                addr,
                listener: name,
                anonymous_allowed,
                admitted: permit.is_some() && own.is_some(),
                cert_username: None,
            };
            // The permits live as long as the connection; no async block around
            // `handle`, whose captured arguments would stay in every idle task.
            handle(stream, peer, ctx).map(move |()| drop((permit, own)))
        });
        self.tracker.spawn(async move {
            let _alive = alive;
            accept_loop.await;
        });
        Ok(addr)
    }
}
