//! Protocol adapters: each turns its protocol's frames into core calls and
//! core deliveries into frames. Adapters never talk to each other.

pub mod mqtt;
pub mod stomp;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::core::router::Router;

/// What every connection handler needs from the broker.
#[derive(Debug, Clone)]
pub struct Context {
    pub router: Arc<Router>,
    pub settings: Arc<Settings>,
    /// Cancelled when the broker shuts down: handlers say goodbye and close.
    pub shutdown: CancellationToken,
}

/// Who is on the other end of a connection, as the listener saw it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    /// Name of the listener ("mqtt", "stomp", …) for logs.
    pub listener: &'static str,
    pub anonymous_allowed: bool,
    /// False when the connection cap was reached: the handler refuses the client politely.
    pub admitted: bool,
}

/// Why a connection's buffered output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Writes a connection's buffered output in one go and clears it. When
/// `needs_commit`, first waits until the store has committed everything
/// submitted so far (the buffer holds acks that promise it). A peer that stops
/// reading for `stall` is an error.
pub(crate) async fn write_out<S>(
    stream: &mut S,
    buf: &mut bytes::BytesMut,
    needs_commit: bool,
    router: &Router,
    stall: std::time::Duration,
) -> Result<(), WriteError>
where
    S: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    if buf.is_empty() {
        return Ok(());
    }
    if needs_commit {
        if let Some(store) = router.store() {
            store.wait(store.last_ticket()).await?;
        }
    }
    let write = async {
        stream.write_all(buf).await?;
        stream.flush().await
    };
    match tokio::time::timeout(stall, write).await {
        Ok(Ok(())) => {
            buf.clear();
            Ok(())
        }
        Ok(Err(e)) => Err(WriteError::Io(e)),
        Err(_) => Err(WriteError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "peer stopped reading",
        ))),
    }
}
