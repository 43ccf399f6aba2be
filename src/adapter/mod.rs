//! Protocol adapters: each turns its protocol's frames into core calls and
//! core deliveries into frames. Adapters never talk to each other.

pub mod budget;
pub(crate) mod buffers;
pub(crate) mod close;
pub(crate) mod first_frame;
pub mod http;
pub(crate) mod log_limit;
pub mod mqtt;
pub(crate) mod rate;
pub(crate) mod serve;
pub mod stomp;

use std::sync::Arc;

use arc_swap::ArcSwap;

use tokio_util::sync::CancellationToken;

use crate::auth::acl::SubscribeDecision;
use crate::auth::{Acl, Action, Authenticator, Identity};
use crate::config::{Limits, Settings};
use crate::core::commit::{Commit, CoreError};
use crate::core::exceptions::Exceptions;
use crate::core::router::Router;
use log_limit::LogLimit;

/// What every connection handler needs from the broker: the broker's shared
/// parts (one pointer, reached through `Deref`) and this connection's limits.
/// Every idle connection keeps one, so it is two words.
#[derive(Debug, Clone)]
pub struct Context {
    shared: Arc<Shared>,
    /// The limits as they were when this connection was accepted: what a client
    /// was told at CONNECT (packet size, receive maximum, aliases) holds for its
    /// whole connection; a reload reaches the connections made after it.
    limits: Arc<Limits>,
}

/// The parts of [`Context`] every connection shares.
#[derive(Debug, Clone)]
pub struct Shared {
    pub router: Arc<Router>,
    pub settings: Arc<Settings>,
    /// Decides logins (password file, anonymous policy, certificate names).
    pub auth: Arc<Authenticator>,
    /// Who may publish and subscribe where; the same rules for every protocol.
    /// Swapped whole when the config is reloaded (SIGHUP).
    pub acl: Arc<ArcSwap<Acl>>,
    /// Cancelled when the broker shuts down. HTTP handshakes watch it; a
    /// connection past CONNECT hears it from the router on its kick handle
    /// (`Router::end_all_connections`), then says goodbye and closes.
    pub shutdown: CancellationToken,
    /// Metrics and the list of connected clients, for operators.
    pub monitor: Arc<crate::admin::Monitor>,
    /// The current limits, swapped whole when the config is reloaded (SIGHUP).
    pub live_limits: Arc<ArcSwap<Limits>>,
    /// Bytes held for unfinished frames and open transactions, over all
    /// connections (`limits.max_buffered_bytes`, changed live on reload).
    pub buffer_budget: Arc<budget::BufferBudget>,
    /// The HTTP adapter's per-client limits (open streams, publish rate).
    pub http: Arc<http::HttpState>,
}

impl std::ops::Deref for Context {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Context {
    /// A context over `router` and `settings` with no users and no ACL rules.
    pub fn open(
        router: Arc<Router>,
        settings: Arc<Settings>,
        shutdown: CancellationToken,
    ) -> Context {
        let limits = Arc::new(settings.limits.clone());
        let shared = Shared {
            router,
            settings,
            auth: Arc::new(Authenticator::default()),
            acl: Arc::new(ArcSwap::from_pointee(Acl::default())),
            shutdown,
            monitor: Arc::default(),
            live_limits: Arc::new(ArcSwap::new(Arc::clone(&limits))),
            buffer_budget: Arc::new(budget::BufferBudget::new(limits.max_buffered_bytes)),
            http: Arc::default(),
        };
        Context {
            shared: Arc::new(shared),
            limits,
        }
    }

    /// This context with `auth`, `acl` and `monitor` shared with the rest of the broker.
    pub fn with_shared(
        self,
        auth: Arc<Authenticator>,
        acl: Arc<ArcSwap<Acl>>,
        monitor: Arc<crate::admin::Monitor>,
    ) -> Context {
        let shared = Shared {
            auth,
            acl,
            monitor,
            ..Shared::clone(&self.shared)
        };
        Context {
            shared: Arc::new(shared),
            limits: self.limits,
        }
    }

    /// The limits this connection runs under (see [`Context::for_new_connection`]).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A context for a connection accepted now: it takes the current limits.
    pub fn for_new_connection(&self) -> Context {
        let mut ctx = self.clone();
        ctx.limits = self.live_limits.load_full();
        ctx
    }

    /// May the client (`username` None: anonymous) do `action` on the topic or filter?
    /// A refusal is logged here for every protocol, within the connection's `log` limit.
    pub(crate) fn allowed(
        &self,
        username: Option<&str>,
        client_id: &str,
        action: Action,
        topic_or_filter: &str,
        log: &mut LogLimit,
    ) -> bool {
        let allowed = self.permits(username, client_id, action, topic_or_filter);
        if !allowed {
            if let Some(suppressed) = log.admit(std::time::Instant::now()) {
                tracing::warn!(
                    client_id,
                    username = username.unwrap_or(""),
                    action = ?action,
                    topic = topic_or_filter,
                    suppressed,
                    "denied by ACL"
                );
            }
        }
        allowed
    }

    /// [`Context::allowed`] without the log line, for a caller that logs one
    /// summary for many decisions (a SUBSCRIBE's filters).
    pub(crate) fn permits(
        &self,
        username: Option<&str>,
        client_id: &str,
        action: Action,
        topic_or_filter: &str,
    ) -> bool {
        let identity = Identity {
            username,
            client_id,
        };
        let allowed = self.acl.load().check(&identity, action, topic_or_filter);
        if !allowed && action == Action::Publish {
            self.monitor
                .metrics
                .dropped_acl
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        allowed
    }

    /// May the client subscribe with `filter`? Some(the subscription's
    /// exceptions: the deny rules it overlaps) or None, refused. Not logged here:
    /// a SUBSCRIBE logs one summary for all its filters.
    pub fn subscription_exceptions(
        &self,
        username: Option<&str>,
        client_id: &str,
        filter: &str,
    ) -> Option<Exceptions> {
        let identity = Identity {
            username,
            client_id,
        };
        match self.acl.load().subscribe(&identity, filter) {
            SubscribeDecision::Granted(exceptions) => Some(exceptions),
            SubscribeDecision::Refused => None,
        }
    }

    /// [`Context::recheck_subscriptions`] for every session (at start, after a reload).
    pub fn recheck_all_subscriptions(&self) -> usize {
        self.router
            .sessions()
            .iter()
            .map(|session| self.recheck_subscriptions(session))
            .sum()
    }

    /// Decides the subscriptions of `session` again under the ACL in force (after a
    /// reload, or when a stored session is resumed, maybe by another user): those a
    /// deny rule now covers or no allow rule covers are removed, the others get the
    /// exceptions the rules give them now. Returns how many subscriptions'
    /// exceptions changed (a reload logs the total once, not per session).
    pub fn recheck_subscriptions(&self, session: &Arc<crate::core::session::Session>) -> usize {
        // A session from a store that predates owners is decided when its client
        // resumes it: checked as anonymous now, it could lose what its user may read.
        if matches!(session.owner(), crate::core::session::SessionOwner::Unknown) {
            return 0;
        }
        // A bridge's session: configured by the operator, not a client the ACL governs.
        if session.username().as_deref() == Some(crate::core::session::BRIDGE_OWNER) {
            return 0;
        }
        let username = session.username();
        let acl = self.acl.load();
        let identity = Identity {
            username: username.as_deref(),
            client_id: &session.client_id,
        };
        let (revoked, changed) = self.router.recheck_subscriptions(session, |filter| {
            match acl.subscribe(&identity, filter.as_str()) {
                SubscribeDecision::Granted(exceptions) => Some(exceptions),
                SubscribeDecision::Refused => None,
            }
        });
        if !revoked.is_empty() {
            tracing::warn!(
                client_id = %session.client_id,
                username = username.as_deref().unwrap_or(""),
                filters = ?revoked,
                "subscriptions removed: the ACL no longer allows them"
            );
        }
        if changed > 0 {
            tracing::debug!(
                client_id = %session.client_id,
                subscriptions = changed,
                "subscription exceptions changed"
            );
        }
        changed
    }
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
    /// The user named by a verified TLS client certificate (`cert_username`).
    pub cert_username: Option<String>,
}

impl Peer {
    /// What this peer presents at login, with the credentials its protocol sent.
    pub fn login(&self, username: Option<String>, password: Option<Vec<u8>>) -> crate::auth::Login {
        crate::auth::Login {
            username,
            password,
            cert_username: self.cert_username.clone(),
            anonymous_allowed: self.anonymous_allowed,
            peer: Some(self.addr),
        }
    }
}

/// Why a connection's buffered output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0}")]
    Core(#[from] CoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Writes a connection's buffered output in one go and clears it. First waits
/// until `commit` is committed: the highest commit of what the buffered acks
/// promise (and of the packet ids of stored deliveries), so a wake-up's many
/// acks wait once, and a buffer that promises nothing does not wait. A peer
/// that stops reading for `stall` is an error.
///
/// Most writes go out at once: they are tried in place, and only what the socket
/// does not take waits, in a boxed future with the stall timer (as does the
/// commit wait). So no timer is armed per write, and an idle connection's task
/// does not carry that state.
pub(crate) async fn write_out<S>(
    stream: &mut S,
    buf: &mut bytes::BytesMut,
    commit: Commit,
    router: &Router,
    stall: std::time::Duration,
) -> Result<(), WriteError>
where
    S: tokio::io::AsyncWrite + Unpin,
{
    if buf.is_empty() {
        return Ok(());
    }
    if !commit.is_none() {
        Box::pin(router.wait_committed(commit)).await?;
    }
    let (written, done) = write_now(stream, buf).await?;
    if done {
        buffers::settle_write(buf, written);
        return Ok(());
    }
    Box::pin(write_waiting(stream, buf, stall)).await
}

/// Writes (and flushes) what the stream takes without waiting; returns how many
/// bytes went out and whether all of them did (flush included), and leaves the
/// rest in `buf`.
async fn write_now<S>(stream: &mut S, buf: &mut bytes::BytesMut) -> std::io::Result<(usize, bool)>
where
    S: tokio::io::AsyncWrite + Unpin,
{
    use bytes::Buf;
    use std::pin::Pin;
    use std::task::Poll;
    std::future::poll_fn(|cx| {
        let mut written = 0;
        while !buf.is_empty() {
            match Pin::new(&mut *stream).poll_write(cx, buf) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                Poll::Ready(Ok(n)) => {
                    buf.advance(n);
                    written += n;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Ready(Ok((written, false))),
            }
        }
        match Pin::new(&mut *stream).poll_flush(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok((written, true))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // All handed over, but the stream (TLS, WebSocket) still holds some:
            // the waiting path flushes it.
            Poll::Pending => Poll::Ready(Ok((written, false))),
        }
    })
    .await
}

/// The rest of [`write_out`]: what the stream did not take at once, within `stall`.
async fn write_waiting<S>(
    stream: &mut S,
    buf: &mut bytes::BytesMut,
    stall: std::time::Duration,
) -> Result<(), WriteError>
where
    S: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let write = async {
        stream.write_all(buf).await?;
        stream.flush().await
    };
    match tokio::time::timeout(stall, write).await {
        Ok(Ok(())) => {
            let written = buf.len();
            buf.clear();
            buffers::settle_write(buf, written);
            Ok(())
        }
        Ok(Err(e)) => Err(WriteError::Io(e)),
        Err(_) => Err(WriteError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "peer stopped reading",
        ))),
    }
}

#[cfg(test)]
mod size_tests;

#[cfg(test)]
mod write_tests {
    use super::*;
    use crate::core::session::{OverflowPolicy, QueueLimits};
    use bytes::BytesMut;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    fn router() -> Router {
        Router::new(QueueLimits {
            max_queued: 10,
            max_queued_bytes: 0,
            overflow: OverflowPolicy::DropNew,
            max_queued_age_ms: 0,
        })
    }

    #[tokio::test]
    async fn output_larger_than_the_socket_takes_at_once_arrives_whole() {
        let (mut ours, mut theirs) = tokio::io::duplex(1024);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).await.map(|_| got)
        });
        let sent: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut buf = BytesMut::from(&sent[..]);
        let stall = Duration::from_secs(10);
        write_out(&mut ours, &mut buf, Commit::NONE, &router(), stall)
            .await
            .unwrap();
        assert!(buf.is_empty());
        drop(ours);
        assert_eq!(reader.await.unwrap().unwrap(), sent);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_is_an_error_after_the_stall_time() {
        let (mut ours, _theirs) = tokio::io::duplex(64);
        let mut buf = BytesMut::from(&[1u8; 1000][..]);
        let result = write_out(
            &mut ours,
            &mut buf,
            Commit::NONE,
            &router(),
            Duration::from_secs(5),
        )
        .await;
        match result {
            Err(WriteError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::TimedOut),
            other => panic!("expected a stall error, got {other:?}"),
        }
    }
}
