//! STOMP's part of a connection (the driver in `adapter/serve.rs` runs the
//! loop): what a connection keeps past CONNECT, the frame dispatcher and
//! RECEIPTs, deliveries as MESSAGE frames, heart-beats, and the goodbye.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::thread::LocalKey;
use std::time::Duration;

use bytes::BytesMut;
use tern_stomp::{Command, Decoder, Frame, Item, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

use super::ack::Unacked;
use super::error::{encode_error, StompAdapterError};
use super::headers::Clock;
use super::heartbeat::HeartBeat;
use super::subscribe::Subscriptions;
use super::transaction::Transactions;
use super::{ack, connect, deliver, op, send, subscribe, transaction};
use crate::adapter::budget::PartialFrame;
use crate::adapter::serve::{ConnectionProtocol, Next, Stream};
use crate::adapter::{Context, Peer};
use crate::admin::Protocol;
use crate::core::commit::Commit;
use crate::core::message::Delivery;

/// Deliveries moved from the session per lock.
const DELIVERY_BATCH: usize = 256;

thread_local! {
    /// Deliveries taken from a session, one list per thread (see `deliver_batch`).
    static BATCH: Cell<Vec<Delivery>> = const { Cell::new(Vec::new()) };
}
/// How long a write may stall (peer not reading) before the connection is dropped.
const WRITE_STALL: Duration = Duration::from_secs(60);

/// Serves one STOMP connection to its end.
pub fn serve<S>(stream: S, peer: Peer, ctx: Context) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    crate::adapter::serve::serve::<Stomp, S>(stream, peer, ctx)
}

/// A STOMP connection past CONNECT.
pub(super) type Connection = crate::adapter::serve::Connection<Stomp>;

/// How a connection ended without an error.
#[derive(Debug)]
pub(super) enum Closed {
    /// The client sent DISCONNECT.
    ByClient,
}

/// What a STOMP connection keeps past CONNECT besides what every connection keeps.
pub(super) struct Stomp {
    pub(super) version: Version,
    pub(super) decoder: Decoder,
    pub(super) heart_beat: HeartBeat,
    /// When the next heart-beat goes out if nothing else does; None when the
    /// client wants none. Boxed: a timer is large, and a client without
    /// heart-beats should not carry one.
    beat: Option<Pin<Box<Sleep>>>,
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
    /// A frame stored something since the loop last looked (see
    /// `ConnectionProtocol::take_unacked_store`).
    unacked_store: bool,
}

impl Stomp {
    /// The state of a connection that negotiated `version` and `heart_beat` and may hold
    /// `max_unacked` unacknowledged messages.
    pub(super) fn new(
        version: Version,
        decoder: Decoder,
        heart_beat: HeartBeat,
        max_unacked: usize,
    ) -> Stomp {
        Stomp {
            version,
            decoder,
            heart_beat,
            beat: heart_beat
                .send
                .map(|every| Box::pin(tokio::time::sleep(every))),
            subscriptions: Subscriptions::default(),
            unacked: Unacked::default(),
            transactions: Transactions::default(),
            max_unacked,
            receipt: None,
            stored: Commit::NONE,
            commit: Commit::NONE,
            next_message: 1,
            unacked_store: false,
        }
    }
}

impl ConnectionProtocol for Stomp {
    const PROTOCOL: Protocol = Protocol::Stomp;
    type Batched = Delivery;
    type Closed = Closed;
    type Error = StompAdapterError;

    fn accept<'a, S: Stream>(
        stream: &'a mut S,
        read_buf: &'a mut BytesMut,
        peer: &'a Peer,
        ctx: &'a Context,
    ) -> impl Future<Output = Option<Connection>> + Send + 'a {
        connect::accept(stream, read_buf, peer, ctx)
    }

    fn handle_next(
        conn: &mut Connection,
        read_buf: &mut BytesMut,
    ) -> Result<Next<Closed>, StompAdapterError> {
        let Some(item) = conn.protocol.decoder.decode(read_buf)? else {
            return Ok(Next::Incomplete);
        };
        conn.frame_taken(read_buf.len());
        let closed = match item {
            Item::HeartBeat => None,
            Item::Frame(frame) => dispatch(conn, frame)?,
        };
        Ok(closed.map_or(Next::Handled, Next::Closed))
    }

    fn window_open(conn: &Connection) -> bool {
        conn.protocol.unacked.len() < conn.protocol.max_unacked
    }

    fn batch_list() -> &'static LocalKey<Cell<Vec<Delivery>>> {
        &BATCH
    }

    fn deliver_batch(
        conn: &mut Connection,
        batch: &mut Vec<Delivery>,
    ) -> Result<bool, StompAdapterError> {
        // No more than the window has room for, so a client-ack subscription
        // is not sent a whole batch (a retained set, a backlog) past it.
        let room = conn
            .protocol
            .max_unacked
            .saturating_sub(conn.protocol.unacked.len());
        if room == 0 {
            return Ok(false);
        }
        conn.session.take_pending(DELIVERY_BATCH.min(room), batch);
        if batch.is_empty() {
            return Ok(false);
        }
        let clock = Clock::now();
        for delivery in batch.drain(..) {
            deliver::write_delivery(conn, &delivery, clock);
        }
        Ok(true)
    }

    fn silence_allowed(conn: &Connection) -> Option<Duration> {
        conn.protocol.heart_beat.receive_deadline()
    }

    fn write_stall(_conn: &Connection) -> Duration {
        WRITE_STALL
    }

    fn take_commit_wait(&mut self) -> Commit {
        self.commit.take()
    }

    fn take_unacked_store(&mut self) -> bool {
        std::mem::take(&mut self.unacked_store)
    }

    fn own_timer_armed(&self) -> bool {
        self.beat.is_some()
    }

    async fn own_timer(&mut self) {
        match self.beat.as_mut() {
            Some(beat) => beat.as_mut().await,
            None => std::future::pending().await,
        }
    }

    /// Nothing went out for a heart-beat interval: a heart-beat does.
    fn on_own_timer(conn: &mut Connection) {
        tern_stomp::encode_heartbeat(&mut conn.write_buf);
    }

    /// Anything written counts as a heart-beat: the next one is due an interval later.
    fn wrote(&mut self) {
        if let (Some(beat), Some(every)) = (self.beat.as_mut(), self.heart_beat.send) {
            beat.as_mut().reset(Instant::now() + every);
        }
    }

    fn label(error: &StompAdapterError) -> &'static str {
        error.label()
    }

    fn finish<S: Stream>(
        conn: Connection,
        stream: &mut S,
        outcome: Result<Closed, StompAdapterError>,
    ) -> impl Future<Output = ()> + Send + '_ {
        finish(conn, stream, outcome)
    }
}

impl Connection {
    /// Appends a frame to the write buffer (written once per wake-up).
    pub(super) fn send(&mut self, frame: &Frame) {
        tern_stomp::encode(frame, self.protocol.version, &mut self.write_buf);
    }

    /// Answers the current frame's `receipt` header, if any (at most once).
    pub(super) fn write_receipt(&mut self) {
        if let Some(receipt) = self.protocol.receipt.take() {
            self.send_receipt(receipt);
        }
    }

    /// Notes what a frame stored, for the RECEIPTs from now on.
    pub(super) fn stored(&mut self, commit: Commit) {
        self.protocol.stored.include(commit);
        self.protocol.unacked_store |= !commit.is_none();
    }

    /// Writes a RECEIPT; it goes out once what this connection stored so far is committed.
    pub(super) fn send_receipt(&mut self, receipt: String) {
        let stored = self.protocol.stored;
        self.protocol.commit.include(stored);
        let frame = Frame::new(Command::Receipt).with_header("receipt-id", receipt);
        self.send(&frame);
    }

    /// A fresh message-id (also the 1.2 `ack` id) and its sequence number.
    pub(super) fn next_message_id(&mut self) -> (u64, String) {
        let seq = self.protocol.next_message;
        self.protocol.next_message += 1;
        (seq, format!("{}-{seq}", self.session.client_id))
    }

    /// The sequence number of a message-id this connection issued.
    pub(super) fn parse_message_id(&self, id: &str) -> Option<u64> {
        id.strip_prefix(&*self.session.client_id)?
            .strip_prefix('-')?
            .parse()
            .ok()
    }
}

/// The frame dispatcher. A frame's RECEIPT is written once it was handled.
fn dispatch(conn: &mut Connection, frame: Frame) -> Result<Option<Closed>, StompAdapterError> {
    conn.protocol.receipt = frame.header("receipt").map(str::to_string);
    match frame.command {
        Command::Send => {
            if let Some(rate) = conn.publish_rate.as_mut() {
                rate.take(std::time::Instant::now());
            }
            let send = send::handle_send(conn, &frame)?;
            op::apply_or_defer(conn, &frame, send)?
        }
        Command::Subscribe => subscribe::handle_subscribe(conn, &frame)?,
        Command::Unsubscribe => subscribe::handle_unsubscribe(conn, &frame)?,
        Command::Ack | Command::Nack => {
            let ack = ack::handle_ack(conn, &frame)?;
            op::apply_or_defer(conn, &frame, ack)?
        }
        Command::Begin => transaction::handle_begin(conn, &frame)?,
        Command::Commit => {
            let committed = transaction::handle_commit(conn, &frame)?;
            op::apply_committed(conn, committed)?
        }
        Command::Abort => transaction::handle_abort(conn, &frame)?,
        Command::Disconnect => {
            conn.write_receipt();
            return Ok(Some(Closed::ByClient));
        }
        command @ (Command::Connect
        | Command::Stomp
        | Command::Connected
        | Command::Message
        | Command::Receipt
        | Command::Error) => return Err(StompAdapterError::UnexpectedFrame(command)),
    }
    conn.write_receipt();
    Ok(None)
}

/// Tells the client why (ERROR) when the end was an error, hands the session
/// back to the core (queues take back what was not acknowledged) and closes.
async fn finish<S>(mut conn: Connection, stream: &mut S, outcome: Result<Closed, StompAdapterError>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    match &outcome {
        Ok(Closed::ByClient) => {
            tracing::info!(client_id = %conn.session.client_id, peer = %conn.peer_addr, "client disconnected");
        }
        Err(e) => {
            if matches!(e, StompAdapterError::OverBudget(_)) {
                // Broker-wide limit on these lines: a flood of connections
                // over the budget must not flood the log too.
                let budget = &conn.ctx.buffer_budget;
                if let Some(suppressed) = budget.admit_log() {
                    tracing::warn!(client_id = %conn.session.client_id, peer = %conn.peer_addr, held = budget.held(), refused = budget.refused(), suppressed, error = %e, "closing connection over the buffer budget");
                }
            } else if e.is_client_fault() {
                tracing::warn!(client_id = %conn.session.client_id, peer = %conn.peer_addr, error = %e, label = e.label(), "closing connection");
            } else {
                tracing::info!(client_id = %conn.session.client_id, peer = %conn.peer_addr, reason = %e, "connection ended");
            }
            if let Some(frame) = e.error_frame(conn.protocol.receipt.as_deref()) {
                encode_error(&frame, Some(conn.protocol.version), &mut conn.write_buf);
            }
        }
    }
    if !conn.write_buf.is_empty() && !matches!(outcome, Err(StompAdapterError::Io(_))) {
        let _ = conn.flush(stream).await;
    }
    let router = Arc::clone(&conn.ctx.router);
    router.detach(&conn.session, conn.connection_id);
    // What this connection held of the buffer budget goes back now, not
    // after the linger.
    conn.protocol.transactions = Transactions::default();
    conn.partial = PartialFrame::default();
    // The shared close (`close::close_gracefully`) lets the ERROR reach a
    // client that is still sending.
    let _ = stream.shutdown().await;
}
