//! One MQTT connection: a single task selecting over socket reads, session
//! wake-ups, takeover, keep-alive and shutdown. Reads are large and every
//! complete packet in the buffer is handled before the one write per wake-up.

use crate::adapter::budget::PartialFrame;
use crate::adapter::buffers::{read_quietly, ReadSizing};
use crate::adapter::log_limit::LogLimit;
use crate::adapter::rate::RateLimit;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tern_mqtt::{Disconnect, Packet, Properties, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use super::alias::TopicAliases;
use super::error::MqttError;
use super::will::PendingWill;
use super::{ack, connect, publish, subscribe};
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
    static BATCH: std::cell::Cell<Vec<(Delivery, Option<u16>)>> =
        const { std::cell::Cell::new(Vec::new()) };
}
/// Past this much buffered output, write before taking more deliveries.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// How long a write may stall (peer not reading) before the connection is dropped, when keep-alive is off.
const DEFAULT_WRITE_STALL: Duration = Duration::from_secs(60);
/// The longest a write may stall whatever the keep-alive: a client held to the
/// 65535 s maximum must not keep a stuck socket for a day.
const MAX_WRITE_STALL: Duration = Duration::from_secs(300);

/// Serves one MQTT connection to its end.
pub fn serve<S>(stream: S, peer: Peer, ctx: Context) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    crate::adapter::serve::serve::<Connection, S>(stream, peer, ctx)
}

crate::adapter::serve::protocol_connection!(Connection, Protocol::Mqtt, MqttError);

/// How a connection ended when it ended without an error.
#[derive(Debug)]
pub(super) enum Closed {
    /// Client sent DISCONNECT; `publish_will` for MQTT 5 reason 0x04.
    ByClient { publish_will: bool },
}

/// A connection past CONNECT: its session and protocol state.
pub(super) struct Connection {
    pub(super) ctx: Context,
    /// Only the address is kept past CONNECT (for logs).
    pub(super) peer_addr: std::net::SocketAddr,
    pub(super) version: ProtocolVersion,
    /// The authenticated user; None for anonymous clients (ACL `anonymous = true`).
    pub(super) username: Option<Arc<str>>,
    pub(super) session: Arc<Session>,
    pub(super) connection_id: u64,
    pub(super) kicked: oneshot::Receiver<KickReason>,
    /// Seconds, as CONNECT gave it (zero disables the check). The fields below
    /// are kept as narrow as the protocol allows: every idle connection pays
    /// for each byte of them.
    pub(super) keep_alive_secs: u16,
    /// Boxed: most clients have none, and every idle connection would carry its size.
    pub(super) will: Option<Box<PendingWill>>,
    /// Session expiry the client asked for in CONNECT (MQTT 5 forbids raising it from 0 at DISCONNECT).
    pub(super) connect_expiry: u32,
    /// Topic aliases, both ways (MQTT 5). Boxed for the same reason as `will`
    /// (a map is 48 bytes inline even when empty), and in one box so an idle
    /// connection pays one pointer: created at the first alias either way.
    pub(super) aliases: Option<Box<TopicAliases>>,
    /// The client's Topic Alias Maximum, capped (0: no outbound aliases).
    pub(super) outbound_alias_max: u16,
    /// The topic of the last PUBLISH: a device mostly publishes to the same few
    /// topics, so a repeat shares it instead of allocating it again.
    pub(super) last_topic: Option<Arc<str>>,
    /// In-flight window towards the client: its receive maximum, capped by
    /// config, at most 65534.
    pub(super) send_window: u16,
    /// Largest packet the client accepts (MQTT 5 maximum packet size; never 0).
    /// Non-zero: 4 bytes where an `Option<u32>` takes 8 (see `keep_alive_secs`).
    pub(super) client_max_packet: Option<std::num::NonZeroU32>,
    pub(super) write_buf: BytesMut,
    /// The highest commit the buffered output depends on (an ack, a PUBREL, a
    /// QoS 1/2 PUBLISH with a stored packet id): the next write waits for it once.
    pub(super) commit: Commit,
    /// `limits.max_publish_rate`, when set.
    pub(super) publish_rate: Option<Box<RateLimit>>,
    /// Repeated warnings this client caused, so it cannot flood the log.
    pub(super) log_limit: LogLimit,
    /// The packet under way, if any: its share of the broker's buffer budget
    /// and its deadline (`limits.frame_timeout_secs`).
    partial: PartialFrame,
}

enum Event {
    Read(std::io::Result<usize>),
    Deliver,
    Kicked(KickReason),
    /// The keep-alive or the unfinished packet's deadline, whichever is sooner.
    TimerExpired,
}

impl Connection {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        ctx: Context,
        peer_addr: std::net::SocketAddr,
        version: ProtocolVersion,
        session: Arc<Session>,
        connection_id: u64,
        kicked: oneshot::Receiver<KickReason>,
        keep_alive_secs: u16,
    ) -> Connection {
        let publish_rate = RateLimit::new(ctx.limits().max_publish_rate).map(Box::new);
        Connection {
            ctx,
            peer_addr,
            version,
            username: None,
            session,
            connection_id,
            kicked,
            keep_alive_secs,
            will: None,
            connect_expiry: 0,
            aliases: None,
            outbound_alias_max: 0,
            last_topic: None,
            send_window: 1,
            client_max_packet: None,
            write_buf: BytesMut::new(),
            commit: Commit::NONE,
            publish_rate,
            log_limit: LogLimit::default(),
            partial: PartialFrame::default(),
        }
    }

    /// The next write waits until `commit` is committed (what is buffered
    /// until then promises it).
    pub(super) fn depends_on(&mut self, commit: Commit) {
        self.commit.include(commit);
    }

    pub(super) fn is_v5(&self) -> bool {
        self.version == ProtocolVersion::V5
    }

    /// Appends a packet to the write buffer (written once per wake-up).
    pub(super) fn send(&mut self, packet: &Packet) -> Result<(), MqttError> {
        tern_mqtt::encode(packet, self.version, &mut self.write_buf)?;
        Ok(())
    }

    async fn run<S>(&mut self, stream: &mut S, read_buf: &mut BytesMut) -> Result<Closed, MqttError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        // Anything that arrived together with CONNECT.
        if let Some(closed) = self.handle_buffered(read_buf)? {
            return Ok(closed);
        }
        let sleep = tokio::time::sleep(self.keep_alive_grace().max(Duration::from_secs(1)));
        tokio::pin!(sleep);
        if let Some(at) = self.next_deadline(tokio::time::Instant::now()) {
            sleep.as_mut().reset(at);
        }
        let mut sizing = ReadSizing::default();
        loop {
            // A connection already replaced must not take deliveries into its in-flight
            // window: the new one has resent what was in flight when it attached.
            self.check_kicked()?;
            self.drain_deliveries()?;
            self.flush(stream).await?;
            if self.session.pending_len() > 0 && self.window_open() {
                continue;
            }
            // Over its publish rate: stop reading until the debt is paid, so TCP
            // back-pressure slows the client down.
            if let Some(debt) = self
                .publish_rate
                .as_mut()
                .and_then(|r| r.debt(Instant::now()))
            {
                tokio::time::sleep(debt).await;
            }
            sizing.prepare(read_buf);
            let window_open = self.window_open();
            let event = tokio::select! {
                biased;
                reason = &mut self.kicked => match reason {
                    Ok(reason) => Event::Kicked(reason),
                    // Sender gone without a kick: the session was replaced (clean start elsewhere).
                    Err(_) => Event::Kicked(KickReason::TakenOver),
                },
                read = read_quietly(stream, read_buf) => Event::Read(read),
                _ = self.session.notified(), if window_open => Event::Deliver,
                _ = &mut sleep, if self.timer_armed() => Event::TimerExpired,
            };
            match event {
                Event::Kicked(reason) => return Err(MqttError::kicked(reason)),
                Event::TimerExpired => {
                    self.check_frame_deadline()?;
                    if self.keep_alive_secs != 0 {
                        return Err(MqttError::KeepAliveTimeout);
                    }
                }
                Event::Deliver => {}
                Event::Read(Ok(0)) => return Err(MqttError::PeerClosed),
                Event::Read(Err(e)) => return Err(MqttError::Io(e)),
                Event::Read(Ok(n)) => {
                    if let Some(closed) = self.handle_buffered(read_buf)? {
                        return Ok(closed);
                    }
                    if let Some(at) = self.next_deadline(tokio::time::Instant::now()) {
                        sleep.as_mut().reset(at);
                    }
                    sizing.settle(n);
                }
            }
        }
    }

    /// Handles every complete packet in `read_buf`.
    fn handle_buffered(&mut self, read_buf: &mut BytesMut) -> Result<Option<Closed>, MqttError> {
        // Read here rather than kept: every byte a waiting task keeps, every idle
        // connection pays for.
        let max_packet = self.ctx.limits().max_packet_size as usize;
        let mut completed = false;
        while let Some(packet) = tern_mqtt::decode(read_buf, self.version, max_packet)? {
            completed = true;
            self.partial.shrink_to(read_buf.len());
            if let Some(closed) = self.dispatch(packet)? {
                return Ok(Some(closed));
            }
        }
        // What is left is the start of a packet: it holds memory until complete.
        let now = tokio::time::Instant::now();
        self.partial
            .update(&self.ctx.buffer_budget, read_buf.len(), completed, now)?;
        self.check_frame_deadline()?;
        Ok(None)
    }

    /// Err when the packet under way is past `limits.frame_timeout_secs`.
    fn check_frame_deadline(&self) -> Result<(), MqttError> {
        let secs = self.ctx.limits().frame_timeout_secs;
        let now = tokio::time::Instant::now();
        if self.partial.expired(Duration::from_secs(secs), now) {
            return Err(MqttError::FrameTimeout(secs));
        }
        Ok(())
    }

    /// Whether the timer is watching anything: the keep-alive, or a packet under way.
    fn timer_armed(&self) -> bool {
        let frame_timeout = Duration::from_secs(self.ctx.limits().frame_timeout_secs);
        self.keep_alive_secs != 0 || self.partial.deadline(frame_timeout).is_some()
    }

    /// When the timer must fire after a read at `now`: at the keep-alive's end
    /// or the unfinished packet's deadline, whichever is sooner; None for neither.
    fn next_deadline(&self, now: tokio::time::Instant) -> Option<tokio::time::Instant> {
        let keep_alive = (self.keep_alive_secs != 0).then(|| now + self.keep_alive_grace());
        let frame_timeout = Duration::from_secs(self.ctx.limits().frame_timeout_secs);
        match (keep_alive, self.partial.deadline(frame_timeout)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The packet dispatcher.
    fn dispatch(&mut self, packet: Packet) -> Result<Option<Closed>, MqttError> {
        match packet {
            Packet::Publish(p) => {
                let within = self
                    .publish_rate
                    .as_mut()
                    .is_none_or(|rate| rate.take(Instant::now()));
                // 5.0 can be told; 3.x is read more slowly instead (see `run`).
                if !within && self.is_v5() {
                    return Err(MqttError::RateTooHigh);
                }
                publish::handle_publish(self, p)?
            }
            Packet::PubAck(a) => ack::handle_puback(self, a),
            Packet::PubRec(a) => ack::handle_pubrec(self, a)?,
            Packet::PubRel(a) => ack::handle_pubrel(self, a)?,
            Packet::PubComp(a) => ack::handle_pubcomp(self, a),
            Packet::Subscribe(s) => subscribe::handle_subscribe(self, s)?,
            Packet::Unsubscribe(u) => subscribe::handle_unsubscribe(self, u)?,
            Packet::PingReq => self.send(&Packet::PingResp)?,
            Packet::Disconnect(d) => return self.handle_disconnect(d).map(Some),
            Packet::Connect(_) => return Err(MqttError::Protocol("second CONNECT")),
            Packet::Auth(_) => {
                return Err(MqttError::Protocol("AUTH without an authentication method"))
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(MqttError::Protocol("server-only packet from client"))
            }
        }
        Ok(None)
    }

    fn handle_disconnect(&mut self, disconnect: Disconnect) -> Result<Closed, MqttError> {
        if let Some(expiry) = disconnect.properties.session_expiry_interval {
            if self.connect_expiry == 0 && expiry != 0 {
                return Err(MqttError::Protocol(
                    "session expiry set at DISCONNECT after 0 at CONNECT",
                ));
            }
            let capped = expiry.min(self.ctx.limits().max_session_expiry_secs);
            self.session.set_expiry_interval(capped);
        }
        Ok(Closed::ByClient {
            publish_will: disconnect.reason == tern_mqtt::reason::DISCONNECT_WITH_WILL,
        })
    }

    /// Err when the core has ended this connection since the last look.
    fn check_kicked(&mut self) -> Result<(), MqttError> {
        use tokio::sync::oneshot::error::TryRecvError;
        match self.kicked.try_recv() {
            Err(TryRecvError::Empty) => Ok(()),
            Ok(reason) => Err(MqttError::kicked(reason)),
            Err(TryRecvError::Closed) => Err(MqttError::TakenOver),
        }
    }

    fn keep_alive(&self) -> Duration {
        Duration::from_secs(u64::from(self.keep_alive_secs))
    }

    /// How long the client may stay silent: one and a half keep-alives (spec).
    fn keep_alive_grace(&self) -> Duration {
        let keep_alive = self.keep_alive();
        keep_alive + keep_alive / 2
    }

    fn window_open(&self) -> bool {
        self.session.inflight_len() < usize::from(self.send_window)
    }

    /// Moves what the session holds for this client into the write buffer.
    fn drain_deliveries(&mut self) -> Result<(), MqttError> {
        let now = Instant::now();
        // The thread's batch list, lent for this drain and given back even on an
        // error, so no connection keeps a list (up to a batch of deliveries) of its own.
        let mut batch = BATCH.take();
        let drained = self.drain_into(&mut batch, now);
        batch.clear();
        BATCH.set(batch);
        drained
    }

    fn drain_into(
        &mut self,
        batch: &mut Vec<(Delivery, Option<u16>)>,
        now: Instant,
    ) -> Result<(), MqttError> {
        while self.write_buf.len() < WRITE_HIGH_WATER {
            let taken = self.session.take_deliverable(
                DELIVERY_BATCH,
                usize::from(self.send_window),
                now,
                batch,
            );
            self.ctx.monitor.metrics.dropped_expired(taken.expired);
            // A stored delivery's packet id is committed before its PUBLISH goes
            // out, so a resend after a restart uses the same id (QoS 2 exactly once).
            self.depends_on(taken.commit);
            if batch.is_empty() {
                break;
            }
            for (delivery, packet_id) in batch.drain(..) {
                publish::write_delivery(self, &delivery, packet_id, false, now)?;
            }
        }
        Ok(())
    }

    /// Resends what a resumed session left unacknowledged: PUBLISH with DUP, or PUBREL.
    pub(super) fn resend_inflight(&mut self) -> Result<(), MqttError> {
        let now = Instant::now();
        for (packet_id, entry) in self.session.inflight_in_order() {
            match entry.stage {
                crate::core::session::InflightStage::Sent => {
                    publish::write_delivery(self, &entry.delivery, Some(packet_id), true, now)?
                }
                crate::core::session::InflightStage::Released => {
                    self.send(&Packet::PubRel(ack::ack(packet_id, 0)))?
                }
            }
        }
        Ok(())
    }

    pub(super) async fn flush<S>(&mut self, stream: &mut S) -> Result<(), MqttError>
    where
        S: AsyncWrite + Unpin,
    {
        let stall = if self.keep_alive_secs == 0 {
            DEFAULT_WRITE_STALL
        } else {
            self.keep_alive_grace()
                .clamp(Duration::from_secs(5), MAX_WRITE_STALL)
        };
        // Kept for the next write when there is nothing to write yet.
        let commit = if self.write_buf.is_empty() {
            Commit::NONE
        } else {
            self.commit.take()
        };
        let router = std::sync::Arc::clone(&self.ctx.router);
        crate::adapter::write_out(stream, &mut self.write_buf, commit, &router, stall).await?;
        Ok(())
    }

    /// Says goodbye where the protocol allows, publishes the will when the end was
    /// abnormal, and hands the session back to the core.
    async fn finish<S>(mut self, stream: &mut S, outcome: Result<Closed, MqttError>)
    where
        S: AsyncWrite + Unpin + Send,
    {
        let publish_will = match &outcome {
            Ok(Closed::ByClient { publish_will }) => {
                tracing::info!(client_id = %self.session.client_id, peer = %self.peer_addr, "client disconnected");
                *publish_will
            }
            Err(e) => {
                match e {
                    MqttError::PeerClosed => {
                        tracing::info!(client_id = %self.session.client_id, peer = %self.peer_addr, "connection closed without DISCONNECT")
                    }
                    MqttError::ShuttingDown | MqttError::TakenOver | MqttError::Administrative => {
                        tracing::info!(client_id = %self.session.client_id, reason = %e, "disconnecting client")
                    }
                    MqttError::OverBudget(_) => {
                        // Broker-wide limit on these lines: a flood of connections
                        // over the budget must not flood the log too.
                        let budget = &self.ctx.buffer_budget;
                        if let Some(suppressed) = budget.admit_log() {
                            tracing::warn!(client_id = %self.session.client_id, peer = %self.peer_addr, held = budget.held(), refused = budget.refused(), suppressed, error = %e, "closing connection over the buffer budget")
                        }
                    }
                    _ => {
                        tracing::warn!(client_id = %self.session.client_id, peer = %self.peer_addr, error = %e, "closing connection")
                    }
                }
                if let (true, Some(code)) = (self.is_v5(), e.disconnect_reason()) {
                    let packet = self.disconnect_packet(code, e.to_string());
                    if self.send(&packet).is_ok() {
                        let _ = self.flush(stream).await;
                    }
                } else if !self.write_buf.is_empty()
                    && !matches!(e, MqttError::PeerClosed | MqttError::Io(_))
                {
                    // Answers to packets handled before the error (3.x has no DISCONNECT).
                    let _ = self.flush(stream).await;
                }
                // On shutdown the will is not published: the client did nothing wrong
                // and its session persists.
                !matches!(e, MqttError::ShuttingDown)
            }
        };
        // Session and will first, so a client that sees the close can rely on them.
        let will = self.will.take();
        let router = Arc::clone(&self.ctx.router);
        router.detach(&self.session, self.connection_id);
        if let (true, Some(will)) = (publish_will, will) {
            will.publish_or_schedule(&router, &self.session);
        }
        // Its share of the buffer budget, too, before the client sees the close.
        self.partial = PartialFrame::default();
        let _ = stream.shutdown().await;
    }

    /// A 5.0 DISCONNECT with `reason` and, if the client's maximum packet size
    /// leaves room for it, a reason string.
    fn disconnect_packet(&self, reason: u8, why: String) -> Packet {
        let mut packet = Disconnect {
            reason,
            properties: Properties::default(),
        };
        packet.properties.reason_string = Some(why);
        let with_reason = Packet::Disconnect(packet.clone());
        let fits = match (
            self.client_max_packet.map(std::num::NonZeroU32::get),
            tern_mqtt::encoded_len(&with_reason, self.version),
        ) {
            (None, Ok(_)) => true,
            (Some(max), Ok(len)) => len <= max as usize,
            (_, Err(_)) => false,
        };
        if fits {
            return with_reason;
        }
        packet.properties.reason_string = None;
        Packet::Disconnect(packet)
    }
}
