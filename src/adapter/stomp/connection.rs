//! One STOMP connection: a single task selecting over socket reads, session
//! wake-ups, heart-beat timers, kicks and shutdown. Every complete frame in the
//! read buffer is handled before the one write per wake-up.

use crate::adapter::budget::PartialFrame;
use crate::adapter::buffers::{read_quietly, ReadSizing};
use crate::adapter::log_limit::LogLimit;
use crate::adapter::rate::RateLimit;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tern_stomp::{Command, Decoder, Frame, Item, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::ack::Unacked;
use super::error::{encode_error, StompAdapterError};
use super::headers::Clock;
use super::heartbeat::HeartBeat;
use super::subscribe::Subscriptions;
use super::transaction::Transactions;
use super::{ack, connect, deliver, op, send, subscribe, transaction};
use crate::adapter::{Context, Peer};
use crate::admin::Protocol;
use crate::core::commit::Commit;
use crate::core::message::Delivery;
use crate::core::session::{KickReason, Session};

/// Bytes requested from the socket per read.
/// Reads while waiting for CONNECT (growing until the packet fits).
pub(super) const READ_CHUNK: usize = crate::adapter::buffers::QUIET_READ;
/// Deliveries moved from the session per lock.
const DELIVERY_BATCH: usize = 256;

thread_local! {
    /// Deliveries taken from a session, one list per thread (see `drain_deliveries`).
    static BATCH: std::cell::Cell<Vec<Delivery>> = const { std::cell::Cell::new(Vec::new()) };
}
/// Past this much buffered output, write before taking more deliveries.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// How long a write may stall (peer not reading) before the connection is dropped.
const WRITE_STALL: Duration = Duration::from_secs(60);
/// Far enough away to mean "never" for a disabled timer.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Serves one STOMP connection to its end.
pub fn serve<S>(stream: S, peer: Peer, ctx: Context) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    crate::adapter::serve::serve::<Connection, S>(stream, peer, ctx)
}

crate::adapter::serve::protocol_connection!(Connection, Protocol::Stomp, StompAdapterError);

/// How a connection ended without an error.
#[derive(Debug)]
pub(super) enum Closed {
    /// The client sent DISCONNECT.
    ByClient,
}

/// A connection past CONNECT: its session and protocol state.
pub(super) struct Connection {
    pub(super) ctx: Context,
    /// Only the address is kept past CONNECT (for logs).
    pub(super) peer_addr: std::net::SocketAddr,
    pub(super) version: Version,
    /// The authenticated user; None for anonymous clients (ACL `anonymous = true`).
    pub(super) username: Option<Arc<str>>,
    pub(super) session: Arc<Session>,
    pub(super) connection_id: u64,
    pub(super) kicked: oneshot::Receiver<KickReason>,
    pub(super) decoder: Decoder,
    pub(super) heart_beat: HeartBeat,
    pub(super) subscriptions: Subscriptions,
    /// Messages sent to subscriptions that acknowledge, not yet acknowledged.
    pub(super) unacked: Unacked,
    pub(super) transactions: Transactions,
    /// Unacknowledged messages at which deliveries pause until the client acks.
    pub(super) max_unacked: usize,
    /// `receipt` header of the frame being handled: used by its RECEIPT, or by
    /// the ERROR if handling it fails.
    pub(super) receipt: Option<String>,
    /// The highest commit of what this connection's frames stored (a SEND to a
    /// queue or a persistent subscriber, an ACK): a RECEIPT promises every
    /// frame before it, so it waits for this. A frame without a receipt waits for nothing.
    stored: Commit,
    /// What the buffered output (its RECEIPTs) waits for before it is written.
    commit: Commit,
    /// Sequence number of the next MESSAGE (its message-id is `<client id>-<seq>`).
    next_message: u64,
    pub(super) write_buf: BytesMut,
    /// `limits.max_publish_rate`, when set: a client over it is read more slowly.
    publish_rate: Option<Box<RateLimit>>,
    /// Repeated warnings this client caused, so it cannot flood the log.
    pub(super) log_limit: LogLimit,
    /// The frame under way, if any: its share of the broker's buffer budget
    /// and its deadline (`limits.frame_timeout_secs`).
    partial: PartialFrame,
}

enum Event {
    Read(std::io::Result<usize>),
    Deliver,
    Kicked(Option<KickReason>),
    SendHeartBeat,
    ClientSilent,
}

impl Connection {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        ctx: Context,
        peer_addr: std::net::SocketAddr,
        version: Version,
        session: Arc<Session>,
        connection_id: u64,
        kicked: oneshot::Receiver<KickReason>,
        decoder: Decoder,
        heart_beat: HeartBeat,
    ) -> Connection {
        let max_unacked = ctx.limits().stomp_max_unacked.max(1);
        let publish_rate = RateLimit::new(ctx.limits().max_publish_rate).map(Box::new);
        Connection {
            ctx,
            peer_addr,
            version,
            username: None,
            session,
            connection_id,
            kicked,
            decoder,
            heart_beat,
            subscriptions: Subscriptions::default(),
            unacked: Unacked::default(),
            transactions: Transactions::default(),
            max_unacked,
            receipt: None,
            stored: Commit::NONE,
            commit: Commit::NONE,
            next_message: 1,
            write_buf: BytesMut::new(),
            publish_rate,
            log_limit: LogLimit::default(),
            partial: PartialFrame::default(),
        }
    }

    /// Appends a frame to the write buffer (written once per wake-up).
    pub(super) fn send(&mut self, frame: &Frame) {
        tern_stomp::encode(frame, self.version, &mut self.write_buf);
    }

    /// Answers the current frame's `receipt` header, if any (at most once).
    pub(super) fn write_receipt(&mut self) {
        if let Some(receipt) = self.receipt.take() {
            self.send_receipt(receipt);
        }
    }

    /// Notes what a frame stored, for the RECEIPTs from now on.
    pub(super) fn stored(&mut self, commit: Commit) {
        self.stored.include(commit);
    }

    /// Writes a RECEIPT; it goes out once what this connection stored so far is committed.
    pub(super) fn send_receipt(&mut self, receipt: String) {
        self.commit.include(self.stored);
        let frame = Frame::new(Command::Receipt).with_header("receipt-id", receipt);
        self.send(&frame);
    }

    /// A fresh message-id (also the 1.2 `ack` id) and its sequence number.
    pub(super) fn next_message_id(&mut self) -> (u64, String) {
        let seq = self.next_message;
        self.next_message += 1;
        (seq, format!("{}-{seq}", self.session.client_id))
    }

    /// The sequence number of a message-id this connection issued.
    pub(super) fn parse_message_id(&self, id: &str) -> Option<u64> {
        id.strip_prefix(&*self.session.client_id)?
            .strip_prefix('-')?
            .parse()
            .ok()
    }

    async fn run<S>(
        &mut self,
        stream: &mut S,
        read_buf: &mut BytesMut,
    ) -> Result<Closed, StompAdapterError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        // Anything that arrived together with CONNECT.
        if let Some(closed) = self.handle_buffered(read_buf)? {
            return Ok(closed);
        }
        let send_every = self.heart_beat.send;
        let silent_after = self.heart_beat.receive_deadline();
        let beat = tokio::time::sleep(send_every.unwrap_or(NEVER));
        let silence = tokio::time::sleep(silent_after.unwrap_or(NEVER));
        tokio::pin!(beat, silence);
        if let Some(at) = self.next_deadline(silent_after, Instant::now()) {
            silence.as_mut().reset(at);
        }
        let mut sizing = ReadSizing::default();
        loop {
            self.drain_deliveries();
            if !self.write_buf.is_empty() {
                self.flush(stream).await?;
                if let Some(every) = send_every {
                    beat.as_mut().reset(Instant::now() + every);
                }
            }
            if self.session.pending_len() > 0 && self.window_open() {
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
            sizing.prepare(read_buf);
            let window_open = self.window_open();
            let event = tokio::select! {
                biased;
                reason = &mut self.kicked => Event::Kicked(reason.ok()),
                read = read_quietly(stream, read_buf) => Event::Read(read),
                _ = self.session.notified(), if window_open => Event::Deliver,
                _ = &mut beat, if send_every.is_some() => Event::SendHeartBeat,
                _ = &mut silence, if self.timer_armed(silent_after) => Event::ClientSilent,
            };
            match event {
                Event::Kicked(Some(KickReason::ShuttingDown)) => {
                    return Err(StompAdapterError::ShuttingDown)
                }
                Event::Kicked(_) => return Err(StompAdapterError::Kicked),
                Event::ClientSilent => {
                    self.check_frame_deadline()?;
                    if let Some(after) = silent_after {
                        return Err(StompAdapterError::HeartBeatTimeout(after.as_millis()));
                    }
                }
                Event::SendHeartBeat => tern_stomp::encode_heartbeat(&mut self.write_buf),
                Event::Deliver => {}
                Event::Read(Ok(0)) => return Err(StompAdapterError::PeerClosed),
                Event::Read(Err(e)) => return Err(StompAdapterError::Io(e)),
                Event::Read(Ok(n)) => {
                    if let Some(closed) = self.handle_buffered(read_buf)? {
                        return Ok(closed);
                    }
                    if let Some(at) = self.next_deadline(silent_after, Instant::now()) {
                        silence.as_mut().reset(at);
                    }
                    sizing.settle(n);
                }
            }
        }
    }

    /// Handles every complete frame in `read_buf`.
    fn handle_buffered(
        &mut self,
        read_buf: &mut BytesMut,
    ) -> Result<Option<Closed>, StompAdapterError> {
        let mut completed = false;
        while let Some(item) = self.decoder.decode(read_buf)? {
            completed = true;
            self.partial.shrink_to(read_buf.len());
            if let Item::Frame(frame) = item {
                if let Some(closed) = self.dispatch(frame)? {
                    return Ok(Some(closed));
                }
            }
        }
        // What is left is the start of a frame: it holds memory until complete.
        let now = Instant::now();
        self.partial
            .update(&self.ctx.buffer_budget, read_buf.len(), completed, now)?;
        self.check_frame_deadline()?;
        Ok(None)
    }

    fn frame_timeout(&self) -> Duration {
        Duration::from_secs(self.ctx.limits().frame_timeout_secs)
    }

    /// Err when the frame under way is past `limits.frame_timeout_secs`.
    fn check_frame_deadline(&self) -> Result<(), StompAdapterError> {
        if self.partial.expired(self.frame_timeout(), Instant::now()) {
            let secs = self.ctx.limits().frame_timeout_secs;
            return Err(StompAdapterError::FrameTimeout(secs));
        }
        Ok(())
    }

    /// Whether the silence timer is watching anything: the client's promised
    /// heart-beats (`silent_after`), or a frame under way.
    fn timer_armed(&self, silent_after: Option<Duration>) -> bool {
        silent_after.is_some() || self.partial.deadline(self.frame_timeout()).is_some()
    }

    /// When the silence timer must fire after a read at `now`: at the end of
    /// the allowed silence or the unfinished frame's deadline, whichever is
    /// sooner; None for neither.
    fn next_deadline(&self, silent_after: Option<Duration>, now: Instant) -> Option<Instant> {
        let silence = silent_after.map(|after| now + after);
        match (silence, self.partial.deadline(self.frame_timeout())) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The frame dispatcher. A frame's RECEIPT is written once it was handled.
    fn dispatch(&mut self, frame: Frame) -> Result<Option<Closed>, StompAdapterError> {
        self.receipt = frame.header("receipt").map(str::to_string);
        match frame.command {
            Command::Send => {
                if let Some(rate) = self.publish_rate.as_mut() {
                    rate.take(std::time::Instant::now());
                }
                let send = send::handle_send(self, &frame)?;
                op::apply_or_defer(self, &frame, send)?
            }
            Command::Subscribe => subscribe::handle_subscribe(self, &frame)?,
            Command::Unsubscribe => subscribe::handle_unsubscribe(self, &frame)?,
            Command::Ack | Command::Nack => {
                let ack = ack::handle_ack(self, &frame)?;
                op::apply_or_defer(self, &frame, ack)?
            }
            Command::Begin => transaction::handle_begin(self, &frame)?,
            Command::Commit => {
                let committed = transaction::handle_commit(self, &frame)?;
                op::apply_committed(self, committed)?
            }
            Command::Abort => transaction::handle_abort(self, &frame)?,
            Command::Disconnect => {
                self.write_receipt();
                return Ok(Some(Closed::ByClient));
            }
            command @ (Command::Connect
            | Command::Stomp
            | Command::Connected
            | Command::Message
            | Command::Receipt
            | Command::Error) => return Err(StompAdapterError::UnexpectedFrame(command)),
        }
        self.write_receipt();
        Ok(None)
    }

    fn window_open(&self) -> bool {
        self.unacked.len() < self.max_unacked
    }

    /// Moves what the session holds for this client into the write buffer.
    fn drain_deliveries(&mut self) {
        let clock = Clock::now();
        // The thread's batch list, lent for this drain: no connection keeps a
        // list (up to a batch of deliveries) of its own.
        let mut batch = BATCH.take();
        while self.write_buf.len() < WRITE_HIGH_WATER && self.window_open() {
            // No more than the window has room for, so a client-ack subscription
            // is not sent a whole batch (a retained set, a backlog) past it.
            let room = self.max_unacked.saturating_sub(self.unacked.len());
            self.session
                .take_pending(DELIVERY_BATCH.min(room), &mut batch);
            if batch.is_empty() {
                break;
            }
            for delivery in batch.drain(..) {
                deliver::write_delivery(self, &delivery, clock);
            }
        }
        BATCH.set(batch);
    }

    async fn flush<S>(&mut self, stream: &mut S) -> Result<(), StompAdapterError>
    where
        S: AsyncWrite + Unpin,
    {
        // Kept for the next write when there is nothing to write yet.
        let commit = if self.write_buf.is_empty() {
            Commit::NONE
        } else {
            self.commit.take()
        };
        let router = Arc::clone(&self.ctx.router);
        crate::adapter::write_out(stream, &mut self.write_buf, commit, &router, WRITE_STALL)
            .await?;
        Ok(())
    }

    /// Tells the client why (ERROR) when the end was an error, hands the session
    /// back to the core (queues take back what was not acknowledged) and closes.
    async fn finish<S>(mut self, stream: &mut S, outcome: Result<Closed, StompAdapterError>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        match &outcome {
            Ok(Closed::ByClient) => {
                tracing::info!(client_id = %self.session.client_id, peer = %self.peer_addr, "client disconnected");
            }
            Err(e) => {
                if matches!(e, StompAdapterError::OverBudget(_)) {
                    // Broker-wide limit on these lines: a flood of connections
                    // over the budget must not flood the log too.
                    let budget = &self.ctx.buffer_budget;
                    if let Some(suppressed) = budget.admit_log() {
                        tracing::warn!(client_id = %self.session.client_id, peer = %self.peer_addr, held = budget.held(), refused = budget.refused(), suppressed, error = %e, "closing connection over the buffer budget");
                    }
                } else if e.is_client_fault() {
                    tracing::warn!(client_id = %self.session.client_id, peer = %self.peer_addr, error = %e, label = e.label(), "closing connection");
                } else {
                    tracing::info!(client_id = %self.session.client_id, peer = %self.peer_addr, reason = %e, "connection ended");
                }
                if let Some(frame) = e.error_frame(self.receipt.as_deref()) {
                    encode_error(&frame, Some(self.version), &mut self.write_buf);
                }
            }
        }
        if !self.write_buf.is_empty() && !matches!(outcome, Err(StompAdapterError::Io(_))) {
            let _ = self.flush(stream).await;
        }
        let router = Arc::clone(&self.ctx.router);
        router.detach(&self.session, self.connection_id);
        // What this connection held of the buffer budget goes back now, not
        // after the linger.
        self.transactions = Transactions::default();
        self.partial = PartialFrame::default();
        // The shared close (`serve::close_gracefully`) lets the ERROR reach a
        // client that is still sending.
        let _ = stream.shutdown().await;
    }
}
