//! The connection driver, the same for every protocol: accept (CONNECT, login,
//! session), be listed for operators, run until the connection ends, say
//! goodbye. [`Connection`] holds what every connection keeps; its loop
//! ([`Connection::run`]: kick check, deliveries, one write per wake-up, publish
//! rate, read sizing, one `select!` over kick, read, session wake-up and
//! timers) is written once (the CONNECT phase's read is `first_frame.rs`, the
//! closing linger `close.rs`). Each protocol supplies its hooks ([`ConnectionProtocol`]) in plain
//! code: its CONNECT, taking and handling the next frame, deliveries as frames, its
//! timers (MQTT keep-alive, STOMP heart-beats) and its goodbye.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::thread::LocalKey;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::budget::{OverBudget, PartialFrame};
use super::buffers::{read_quietly, ReadSizing};
use super::close::close_gracefully;
use super::log_limit::LogLimit;
use super::rate::RateLimit;
use super::{Context, Peer, WriteError};
use crate::admin::{ClientInfo, Protocol};
use crate::core::commit::{Commit, CoreError};
use crate::core::router::Router;
use crate::core::session::{KickReason, Session};

/// A byte stream a connection runs over (TCP, TLS, WebSocket).
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Past this much buffered output, write before taking more deliveries.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Far enough away to mean "never" for a disabled timer.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why the driver ended a connection; each protocol's error type says it in
/// its own words (`From<Ended>`, beside the rest of its error mapping).
#[derive(Debug)]
pub(crate) enum Ended {
    /// The peer closed the connection.
    PeerClosed,
    Io(std::io::Error),
    /// The core ended the connection; None: the session was replaced without a word.
    Kicked(Option<KickReason>),
    /// Nothing from the client within the silence its protocol allows (this long).
    Silent(Duration),
    /// A frame not complete within `limits.frame_timeout_secs` (this many seconds).
    FrameTimeout(u64),
    /// The frame under way would take the broker's buffer budget over its limit.
    OverBudget(OverBudget),
    /// The buffered output could not be written (or its commit failed).
    Write(WriteError),
}

/// What [`ConnectionProtocol::handle_next`] found in the read buffer.
pub(crate) enum Next<C> {
    /// No complete inbound unit yet.
    Incomplete,
    /// One unit was taken and handled.
    Handled,
    /// One unit was taken: the client's goodbye.
    Closed(C),
}

/// One protocol's part of a connection: the state it keeps past CONNECT (the
/// implementing type, [`Connection::protocol`]) and the hooks the driver calls.
pub(crate) trait ConnectionProtocol: Sized + Send + 'static {
    const PROTOCOL: Protocol;
    /// One delivery as the session hands it out (see [`ConnectionProtocol::deliver_batch`]).
    type Batched: 'static;
    /// How a connection ended without an error.
    type Closed: Send;
    /// Everything that ends a connection; its module is where errors become replies.
    type Error: From<Ended> + std::fmt::Display + Send;

    /// Reads and answers the CONNECT; None when the client was refused or left.
    fn accept<'a, S: Stream>(
        stream: &'a mut S,
        read_buf: &'a mut BytesMut,
        peer: &'a Peer,
        ctx: &'a Context,
    ) -> impl Future<Output = Option<Connection<Self>>> + Send + 'a;

    /// Takes the next complete inbound unit (a packet, a frame, a heart-beat)
    /// from `read_buf`, tells the driver it did ([`Connection::frame_taken`])
    /// and handles it. Decoding and handling are one hook, not two the driver
    /// chains: a decoded MQTT packet is several hundred bytes (its properties
    /// inline), and handing it from the decoder through the driver to the
    /// handler copied it at every step (QoS 2: four inbound packets a message).
    fn handle_next(
        conn: &mut Connection<Self>,
        read_buf: &mut BytesMut,
    ) -> Result<Next<Self::Closed>, Self::Error>;

    /// Whether the client may take more deliveries now (its in-flight window).
    fn window_open(conn: &Connection<Self>) -> bool;

    /// The thread's list a drain lends out (one per protocol and thread, so no
    /// connection keeps a list of its own).
    fn batch_list() -> &'static LocalKey<Cell<Vec<Self::Batched>>>;

    /// Takes the next batch of deliveries from the session into `batch` (empty
    /// on entry) and writes them as frames; false when there was none to take.
    fn deliver_batch(
        conn: &mut Connection<Self>,
        batch: &mut Vec<Self::Batched>,
    ) -> Result<bool, Self::Error>;

    /// How long the client may stay silent before the connection is dropped
    /// (MQTT keep-alive, STOMP heart-beats); None: as long as it likes.
    fn silence_allowed(conn: &Connection<Self>) -> Option<Duration>;

    /// How long a write may stall (peer not reading) before the connection is dropped.
    fn write_stall(conn: &Connection<Self>) -> Duration;

    /// Takes the highest commit the buffered output (an ack, a RECEIPT, a
    /// delivery with a stored packet id) promises: the write waits for it first.
    fn take_commit_wait(&mut self) -> Commit;

    /// Whether the frames handled since the last call stored something no
    /// ack waits for (a QoS 0 PUBLISH, a SEND without receipt, into a stream
    /// or a persistent session); the flag is cleared.
    fn take_unacked_store(&mut self) -> bool {
        false
    }

    /// Whether the protocol's own timer (STOMP: the next heart-beat to send) is set.
    fn own_timer_armed(&self) -> bool {
        false
    }

    /// Completes when the protocol's own timer fires (polled only while armed).
    fn own_timer(&mut self) -> impl Future<Output = ()> + Send + '_ {
        std::future::pending()
    }

    /// The protocol's own timer fired.
    fn on_own_timer(_conn: &mut Connection<Self>) {}

    /// The buffered output was written.
    fn wrote(&mut self) {}

    /// The disconnect reason counted in the metrics.
    fn label(error: &Self::Error) -> &'static str;

    /// Says goodbye where the protocol allows and hands the session back to the core.
    fn finish<S: Stream>(
        conn: Connection<Self>,
        stream: &mut S,
        outcome: Result<Self::Closed, Self::Error>,
    ) -> impl Future<Output = ()> + Send + '_;
}

/// A connection past CONNECT: what every protocol keeps, and `protocol`, the rest.
/// Every idle connection pays for each byte here (see `size_tests.rs`): the
/// fields here are whole words, and the narrow ones (the version, the commit
/// mark, counters) are the protocol's, where they pack with its own.
pub(crate) struct Connection<P: ConnectionProtocol> {
    pub(crate) ctx: Context,
    /// Only the address is kept past CONNECT (for logs).
    pub(crate) peer_addr: std::net::SocketAddr,
    /// The authenticated user; None for anonymous clients (ACL `anonymous = true`).
    pub(crate) username: Option<Arc<str>>,
    pub(crate) session: Arc<Session>,
    pub(crate) connection_id: u64,
    /// The core's word that this connection must end (takeover, operator, shutdown).
    pub(crate) kicked: oneshot::Receiver<KickReason>,
    /// Output of this wake-up, written once (see [`Connection::flush`]).
    pub(crate) write_buf: BytesMut,
    /// The front of `write_buf` that waits for a commit while the connection
    /// reads on (see [`Connection::flush_ready`]).
    held: Option<Box<Held>>,
    /// `limits.max_publish_rate`, when set: a client over it is read more slowly.
    pub(crate) publish_rate: Option<Box<RateLimit>>,
    /// Repeated warnings this client caused, so it cannot flood the log.
    pub(crate) log_limit: LogLimit,
    /// The frame under way, if any: its share of the broker's buffer budget
    /// and its deadline (`limits.frame_timeout_secs`).
    pub(crate) partial: PartialFrame,
    /// The protocol's own state.
    pub(crate) protocol: P,
}

/// Output held back for a commit: the first `len` bytes of the write buffer
/// go out once `commit` is committed. Meanwhile the connection reads on, so
/// its next packets join the group commit after that one instead of waiting
/// for it (one commit in flight per connection, the next one filling).
/// Boxed: a connection that holds nothing carries one word for it.
struct Held {
    len: usize,
    commit: Commit,
    /// Resolves once `commit` is committed (made with the hold).
    wait: std::pin::Pin<Box<dyn Future<Output = Result<(), CoreError>> + Send>>,
}

impl Held {
    fn new(len: usize, commit: Commit, router: &Arc<Router>) -> Box<Held> {
        let router = Arc::clone(router);
        Box::new(Held {
            len,
            commit,
            wait: Box::pin(async move { router.wait_committed(commit).await }),
        })
    }
}

/// Resolves once the held output's commit is done (never when nothing is held).
fn held_commit(
    held: &mut Option<Box<Held>>,
) -> impl Future<Output = Result<(), CoreError>> + Send + '_ {
    std::future::poll_fn(move |cx| match held {
        Some(held) => held.wait.as_mut().poll(cx),
        None => std::task::Poll::Pending,
    })
}

enum Event {
    Read(std::io::Result<usize>),
    /// The held output's commit is done (or failed).
    Committed(Result<(), CoreError>),
    Deliver,
    Kicked(Option<KickReason>),
    /// The protocol's own timer.
    OwnTimer,
    /// The client's allowed silence or the unfinished frame's deadline, whichever is sooner.
    TimerExpired,
}

impl<P: ConnectionProtocol> Connection<P> {
    pub(crate) fn new(
        ctx: Context,
        peer_addr: std::net::SocketAddr,
        attached: (Arc<Session>, u64, oneshot::Receiver<KickReason>),
        protocol: P,
    ) -> Connection<P> {
        let (session, connection_id, kicked) = attached;
        let publish_rate = RateLimit::new(ctx.limits().max_publish_rate).map(Box::new);
        Connection {
            ctx,
            peer_addr,
            username: None,
            session,
            connection_id,
            kicked,
            write_buf: BytesMut::new(),
            held: None,
            publish_rate,
            log_limit: LogLimit::default(),
            partial: PartialFrame::default(),
            protocol,
        }
    }

    /// Client id, user name and connection id, as operators see them.
    fn listing(&self) -> (Arc<str>, Option<Arc<str>>, u64) {
        (
            Arc::clone(&self.session.client_id),
            self.username.clone(),
            self.connection_id,
        )
    }

    /// The connection's loop, until it ends.
    async fn run<S: Stream>(
        &mut self,
        stream: &mut S,
        read_buf: &mut BytesMut,
    ) -> Result<P::Closed, P::Error> {
        // Anything that arrived together with CONNECT.
        if let Some(closed) = self.handle_buffered(read_buf)? {
            return Ok(closed);
        }
        // One timer for the client's silence and the unfinished frame, reset
        // after each read (the silence allowed is asked each time rather than
        // kept: every byte the waiting task keeps, every idle connection pays for).
        let timer = tokio::time::sleep(P::silence_allowed(self).unwrap_or(NEVER));
        tokio::pin!(timer);
        if let Some(at) = self.next_deadline(Instant::now()) {
            timer.as_mut().reset(at);
        }
        let mut sizing = ReadSizing::default();
        loop {
            // A connection already replaced must not take deliveries into its in-flight
            // window: the new one has resent what was in flight when it attached.
            self.check_kicked()?;
            self.drain_deliveries()?;
            let ready = self.ready_len()?;
            if ready != 0 {
                self.write_front(stream, ready).await?;
                self.protocol.wrote();
            }
            // Held output past the high-water mark: wait for its commit first.
            let room = self.held.is_none() || self.write_buf.len() < WRITE_HIGH_WATER;
            if room && self.session.pending_len() > 0 && P::window_open(self) {
                continue;
            }
            // Over its publish rate: stop reading until the debt is paid, so TCP
            // back-pressure slows the client down.
            if let Some(debt) = self
                .publish_rate
                .as_mut()
                .and_then(|r| r.debt(std::time::Instant::now()))
            {
                tokio::time::sleep(debt).await;
            }
            // The cluster's other nodes are behind: read on once they caught up
            // (what this client publishes would otherwise be dropped for them).
            if let Some(room) = self.ctx.router.fabric_wait_room() {
                room.await;
            }
            // This client stored what no ack waits for (QoS 0 into a stream)
            // and the store is far behind: read on once it caught up.
            if self.protocol.take_unacked_store() {
                if let Some(room) = self.ctx.router.store_wait_room() {
                    room.await;
                }
            }
            sizing.prepare(read_buf);
            let window_open = room && P::window_open(self);
            let holding = self.held.is_some();
            let own_timer_armed = self.protocol.own_timer_armed();
            let timer_armed = self.timer_armed();
            let event = tokio::select! {
                biased;
                reason = &mut self.kicked => Event::Kicked(reason.ok()),
                read = read_quietly(stream, read_buf), if room => Event::Read(read),
                done = held_commit(&mut self.held), if holding => Event::Committed(done),
                _ = self.session.notified(), if window_open => Event::Deliver,
                _ = self.protocol.own_timer(), if own_timer_armed => Event::OwnTimer,
                _ = &mut timer, if timer_armed => Event::TimerExpired,
            };
            match event {
                Event::Kicked(reason) => return Err(Ended::Kicked(reason).into()),
                Event::TimerExpired => {
                    self.check_frame_deadline()?;
                    if let Some(silence) = P::silence_allowed(self) {
                        return Err(Ended::Silent(silence).into());
                    }
                }
                Event::OwnTimer => P::on_own_timer(self),
                Event::Deliver => {}
                Event::Committed(done) => done.map_err(|e| Ended::Write(e.into()))?,
                Event::Read(Ok(0)) => return Err(Ended::PeerClosed.into()),
                Event::Read(Err(e)) => return Err(Ended::Io(e).into()),
                Event::Read(Ok(n)) => {
                    if let Some(closed) = self.handle_buffered(read_buf)? {
                        return Ok(closed);
                    }
                    if let Some(at) = self.next_deadline(Instant::now()) {
                        timer.as_mut().reset(at);
                    }
                    sizing.settle(n);
                }
            }
        }
    }

    /// Handles every complete frame in `read_buf`.
    fn handle_buffered(&mut self, read_buf: &mut BytesMut) -> Result<Option<P::Closed>, P::Error> {
        let mut completed = false;
        loop {
            match P::handle_next(self, read_buf)? {
                Next::Incomplete => break,
                Next::Handled => completed = true,
                Next::Closed(closed) => return Ok(Some(closed)),
            }
        }
        // What is left is the start of a frame: it holds memory until complete.
        let now = Instant::now();
        self.partial
            .update(&self.ctx.buffer_budget, read_buf.len(), completed, now)
            .map_err(Ended::OverBudget)?;
        self.check_frame_deadline()?;
        Ok(None)
    }

    /// A complete inbound unit was taken off the read buffer (`left` bytes
    /// remain): the buffer budget keeps charging only what is left.
    pub(crate) fn frame_taken(&mut self, left: usize) {
        self.partial.shrink_to(left);
    }

    fn frame_timeout(&self) -> Duration {
        Duration::from_secs(self.ctx.limits().frame_timeout_secs)
    }

    /// Err when the frame under way is past `limits.frame_timeout_secs`.
    fn check_frame_deadline(&self) -> Result<(), Ended> {
        if self.partial.expired(self.frame_timeout(), Instant::now()) {
            return Err(Ended::FrameTimeout(self.ctx.limits().frame_timeout_secs));
        }
        Ok(())
    }

    /// Whether the timer is watching anything: the client's silence, or a frame under way.
    fn timer_armed(&self) -> bool {
        P::silence_allowed(self).is_some() || self.partial.deadline(self.frame_timeout()).is_some()
    }

    /// When the timer must fire after a read at `now`: at the end of the
    /// allowed silence or the unfinished frame's deadline, whichever is
    /// sooner; None for neither.
    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let silence = P::silence_allowed(self).map(|allowed| now + allowed);
        match (silence, self.partial.deadline(self.frame_timeout())) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Err when the core has ended this connection since the last look.
    fn check_kicked(&mut self) -> Result<(), Ended> {
        use tokio::sync::oneshot::error::TryRecvError;
        match self.kicked.try_recv() {
            Err(TryRecvError::Empty) => Ok(()),
            Ok(reason) => Err(Ended::Kicked(Some(reason))),
            Err(TryRecvError::Closed) => Err(Ended::Kicked(None)),
        }
    }

    /// Moves what the session holds for this client into the write buffer.
    fn drain_deliveries(&mut self) -> Result<(), P::Error> {
        // The thread's batch list, lent for this drain and given back even on an
        // error, so no connection keeps a list (up to a batch of deliveries) of its own.
        let list = P::batch_list();
        let mut batch = list.take();
        let mut drained = Ok(());
        while self.write_buf.len() < WRITE_HIGH_WATER {
            match P::deliver_batch(self, &mut batch) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    drained = Err(e);
                    break;
                }
            }
        }
        batch.clear();
        list.set(batch);
        drained
    }

    /// How much of the front of the buffered output may go out now: all of
    /// it when what it acknowledges is committed already; else it is held for
    /// its commit (the loop waits for that beside its reads), and what arrives
    /// meanwhile is held behind it, for its own commit.
    fn ready_len(&mut self) -> Result<usize, Ended> {
        let router = &self.ctx.router;
        let committed = |commit| {
            router
                .is_committed(commit)
                .map_err(|e| Ended::Write(e.into()))
        };
        let mut ready = 0;
        if let Some(held) = &self.held {
            if !committed(held.commit)? {
                return Ok(0);
            }
            ready = held.len;
            self.held = None;
        }
        if ready == self.write_buf.len() {
            return Ok(ready);
        }
        let commit = self.protocol.take_commit_wait();
        if committed(commit)? {
            return Ok(self.write_buf.len());
        }
        self.held = Some(Held::new(self.write_buf.len() - ready, commit, router));
        Ok(ready)
    }

    /// Writes the first `len` bytes of the buffered output, their commit done.
    async fn write_front<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        len: usize,
    ) -> Result<(), P::Error> {
        let stall = P::write_stall(self);
        let router = &self.ctx.router;
        let buf = &mut self.write_buf;
        // Boxed (one allocation per write, not per message): inline, the
        // write's state would weigh on every waiting connection task.
        Box::pin(async move {
            if len < buf.len() {
                let mut front = buf.split_to(len);
                super::write_out(stream, &mut front, Commit::NONE, router, stall).await
            } else {
                super::write_out(stream, buf, Commit::NONE, router, stall).await
            }
        })
        .await
        .map_err(Ended::Write)?;
        Ok(())
    }

    /// Writes the buffered output in one go; it waits first for the commit of
    /// what it acknowledges (held output's included), when this connection
    /// stored something.
    pub(crate) async fn flush<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
    ) -> Result<(), P::Error> {
        let stall = P::write_stall(self);
        // Kept for the next write when there is nothing to write yet.
        let mut commit = if self.write_buf.is_empty() {
            Commit::NONE
        } else {
            self.protocol.take_commit_wait()
        };
        if let Some(held) = self.held.take() {
            commit.include(held.commit);
        }
        let router = Arc::clone(&self.ctx.router);
        super::write_out(stream, &mut self.write_buf, commit, &router, stall)
            .await
            .map_err(Ended::Write)?;
        Ok(())
    }
}

/// Serves one connection of protocol `P` on `stream`.
pub(crate) fn serve<P: ConnectionProtocol, S: Stream>(
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
        let Some(conn) = P::accept(&mut stream, &mut read_buf, &peer, &ctx).await else {
            // A refusing CONNACK / ERROR must reach a client that is still sending.
            close_gracefully(&mut stream, &mut read_buf).await;
            return None;
        };
        let (client_id, username, connection_id) = conn.listing();
        let listed = ctx.monitor.client_connected(ClientInfo::new(
            P::PROTOCOL,
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
            listed.ended(outcome.as_ref().map_or_else(P::label, |_| "client"));
            Box::pin(async move {
                P::finish(conn, &mut stream, outcome).await;
                close_gracefully(&mut stream, &mut read_buf).await;
            })
        };
        goodbye.await;
    }
}
