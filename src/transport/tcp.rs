//! The TCP accept loop: a cap on connections ([`ConnectionCap`]), backoff on accept
//! errors, and shutdown by cancellation.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cap::{CapPermit, ConnectionCap};

/// One bound listener, ready to accept.
#[derive(Debug)]
pub struct TcpAcceptor {
    pub name: &'static str,
    pub listener: TcpListener,
    /// Shared by every listener: the broker-wide connection cap.
    pub connections: Arc<ConnectionCap>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

/// Binds `addr`, naming the listener in the error (a taken port is the usual cause).
pub async fn bind(name: &'static str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen for {name} on {addr}: {e}"))
    })
}

impl TcpAcceptor {
    /// Accepts until shutdown, spawning `handle(stream, peer, admitted)` per connection.
    /// Over the cap, `admitted` is false and the handler refuses the client in its protocol.
    pub async fn run<F, Fut>(self, handle: F)
    where
        F: Fn(TcpStream, SocketAddr, Option<CapPermit>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    // Latency matters more than packet count: writes are batched already.
                    let _ = stream.set_nodelay(true);
                    let permit = self.connections.try_acquire();
                    if permit.is_none() {
                        tracing::warn!(listener = self.name, peer = %peer, "connection limit reached");
                    }
                    self.tracker.spawn(handle(stream, peer, permit));
                }
                Err(e) => {
                    // Usually out of file descriptors: wait, then try again.
                    tracing::error!(listener = self.name, error = %e, "accept failed");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}
