//! The life of one connection, the same for every protocol: accept (CONNECT,
//! login, session), be listed for operators, run until it ends, say goodbye.
//! Each protocol's connection type says how to do each step.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Context, Peer};
use crate::admin::{ClientInfo, Protocol};

/// A byte stream a connection runs over (TCP, TLS, WebSocket).
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One protocol's connection past its CONNECT.
pub(crate) trait ProtocolConnection: Sized + Send {
    /// How `run` ended: a clean close or an error.
    type Outcome: Send;
    const PROTOCOL: Protocol;

    /// Reads and answers the CONNECT; None when the client was refused or left.
    fn accept<'a, S: Stream>(
        stream: &'a mut S,
        read_buf: &'a mut BytesMut,
        peer: &'a Peer,
        ctx: &'a Context,
    ) -> impl Future<Output = Option<Self>> + Send + 'a;

    /// Client id, user name and connection id, as operators see them.
    fn listing(&self) -> (Arc<str>, Option<Arc<str>>, u64);

    fn run<'a, S: Stream>(
        &'a mut self,
        stream: &'a mut S,
        read_buf: &'a mut BytesMut,
    ) -> impl Future<Output = Self::Outcome> + Send + 'a;

    /// The disconnect reason counted in the metrics.
    fn end_label(outcome: &Self::Outcome) -> &'static str;

    fn finish<S: Stream>(
        self,
        stream: &mut S,
        outcome: Self::Outcome,
    ) -> impl Future<Output = ()> + Send + '_;
}

/// Serves one connection of protocol `C` on `stream`.
pub(crate) fn serve<C: ProtocolConnection, S: Stream>(
    stream: S,
    peer: Peer,
    ctx: Context,
) -> impl Future<Output = ()> + Send {
    // Boxed: the CONNECT phase's state is large and over once the client is in,
    // and the arguments (which the connection keeps its own copies of) go with
    // it, so an idle connection carries neither.
    let accepting = Box::pin(async move {
        let mut stream = stream;
        let mut read_buf = BytesMut::with_capacity(super::buffers::QUIET_READ);
        let Some(conn) = C::accept(&mut stream, &mut read_buf, &peer, &ctx).await else {
            // A refusing CONNACK / ERROR must reach a client that is still sending.
            close_gracefully(&mut stream, &mut read_buf).await;
            return None;
        };
        let (client_id, username, connection_id) = conn.listing();
        let listed = ctx.monitor.client_connected(ClientInfo::new(
            C::PROTOCOL,
            (peer.listener, peer.addr),
            (client_id, username),
            connection_id,
        ));
        Some((stream, read_buf, conn, listed))
    });
    async move {
        let Some((mut stream, mut read_buf, mut conn, listed)) = accepting.await else {
            return;
        };
        // Boxed for the same reason: an idle connection carries neither the
        // goodbye's state nor room for the outcome, which moves straight in.
        let goodbye = {
            let outcome = conn.run(&mut stream, &mut read_buf).await;
            listed.ended(C::end_label(&outcome));
            Box::pin(async move {
                conn.finish(&mut stream, outcome).await;
                close_gracefully(&mut stream, &mut read_buf).await;
            })
        };
        goodbye.await;
    }
}

/// How long a closing connection keeps reading what the peer still sends.
const LINGER: Duration = Duration::from_secs(1);
/// Bytes per read while lingering (small: at shutdown every connection lingers at once).
const LINGER_READ: usize = 4096;

/// Ends a connection so that its last words (DISCONNECT, refusing CONNACK,
/// STOMP ERROR) reach the peer: shuts the write side down (FIN after them),
/// then reads and discards until the peer closes or [`LINGER`] passes. Closing
/// at once with unread bytes in the receive buffer makes the kernel send a
/// reset and drop what the peer had not read yet, the reason code among it.
pub(crate) async fn close_gracefully<S: Stream>(stream: &mut S, read_buf: &mut BytesMut) {
    let _ = stream.shutdown().await;
    let discard = async {
        loop {
            read_buf.clear();
            read_buf.reserve(LINGER_READ);
            match stream.read_buf(read_buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, discard).await;
}

/// Implements [`ProtocolConnection`] for a protocol's `Connection`, whose
/// inherent `run` and `finish` and whose `connect::accept` do the work, and
/// whose errors have a `label()`.
macro_rules! protocol_connection {
    ($connection:ty, $protocol:expr, $error:ty) => {
        impl $crate::adapter::serve::ProtocolConnection for $connection {
            type Outcome = Result<Closed, $error>;
            const PROTOCOL: $crate::admin::Protocol = $protocol;

            fn accept<'a, S: $crate::adapter::serve::Stream>(
                stream: &'a mut S,
                read_buf: &'a mut BytesMut,
                peer: &'a Peer,
                ctx: &'a Context,
            ) -> impl Future<Output = Option<Self>> + Send + 'a {
                connect::accept(stream, read_buf, peer, ctx)
            }

            fn listing(&self) -> (Arc<str>, Option<Arc<str>>, u64) {
                (
                    Arc::clone(&self.session.client_id),
                    self.username.clone(),
                    self.connection_id,
                )
            }

            fn run<'a, S: $crate::adapter::serve::Stream>(
                &'a mut self,
                stream: &'a mut S,
                read_buf: &'a mut BytesMut,
            ) -> impl Future<Output = Self::Outcome> + Send + 'a {
                <$connection>::run(self, stream, read_buf)
            }

            fn end_label(outcome: &Self::Outcome) -> &'static str {
                outcome.as_ref().map_or_else(|e| e.label(), |_| "client")
            }

            fn finish<S: $crate::adapter::serve::Stream>(
                self,
                stream: &mut S,
                outcome: Self::Outcome,
            ) -> impl Future<Output = ()> + Send + '_ {
                <$connection>::finish(self, stream, outcome)
            }
        }
    };
}
pub(crate) use protocol_connection;
