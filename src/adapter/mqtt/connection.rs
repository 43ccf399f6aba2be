//! MQTT's part of a connection (the driver in `adapter/serve.rs` runs the
//! loop): what a connection keeps past CONNECT, the packet dispatcher,
//! deliveries as PUBLISH, the keep-alive, and the goodbye.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::thread::LocalKey;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tern_mqtt::{Disconnect, Packet, Properties, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::alias::TopicAliases;
use super::error::MqttError;
use super::will::PendingWill;
use super::{ack, connect, publish, subscribe};
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
    static BATCH: Cell<Vec<(Delivery, Option<u16>)>> = const { Cell::new(Vec::new()) };
}
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
    crate::adapter::serve::serve::<Mqtt, S>(stream, peer, ctx)
}

/// An MQTT connection past CONNECT.
pub(super) type Connection = crate::adapter::serve::Connection<Mqtt>;

/// How a connection ended when it ended without an error.
#[derive(Debug)]
pub(super) enum Closed {
    /// Client sent DISCONNECT; `publish_will` for MQTT 5 reason 0x04.
    ByClient { publish_will: bool },
}

/// What an MQTT connection keeps past CONNECT besides what every connection
/// keeps. The fields are kept as narrow as the protocol allows: every idle
/// connection pays for each byte of them.
pub(super) struct Mqtt {
    pub(super) version: ProtocolVersion,
    /// The highest commit the buffered output depends on (an ack, a PUBREL, a
    /// QoS 1/2 PUBLISH with a stored packet id): the next write waits for it once.
    pub(super) commit: Commit,
    /// Seconds, as CONNECT gave it (zero disables the check).
    pub(super) keep_alive_secs: u16,
    /// The will and the topic aliases, in one box: most clients have neither,
    /// and an idle connection pays one pointer for both.
    pub(super) rare: Option<Box<Rare>>,
    /// Session expiry the client asked for in CONNECT (MQTT 5 forbids raising it from 0 at DISCONNECT).
    pub(super) connect_expiry: u32,
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
    /// [`BRIDGE`] and [`UNACKED_STORE`], in one byte (one more `bool` would
    /// cost a word: see `size_tests.rs`).
    flags: u8,
}

/// The client announced a bridge (3.x CONNECT level with its high bit, as
/// Mosquitto's `try_private`): its subscriptions are no-local and keep
/// retain flags as published, as MQTT 5 lets a client ask.
const BRIDGE: u8 = 1;
/// A QoS 0 PUBLISH stored something since the loop last looked (see
/// `ConnectionProtocol::take_unacked_store`).
const UNACKED_STORE: u8 = 2;

/// What few connections use (see [`Mqtt::rare`]).
#[derive(Default)]
pub(super) struct Rare {
    pub(super) will: Option<PendingWill>,
    /// Topic aliases, both ways (MQTT 5): made at the first alias either way.
    pub(super) aliases: TopicAliases,
}

impl Mqtt {
    /// The will the client gave at CONNECT, if any.
    pub(super) fn set_will(&mut self, will: Option<PendingWill>) {
        match (will, self.rare.as_mut()) {
            (None, None) => {}
            (None, Some(rare)) => rare.will = None,
            (will, _) => self.rare.get_or_insert_default().will = will,
        }
    }

    pub(super) fn take_will(&mut self) -> Option<PendingWill> {
        self.rare.as_mut().and_then(|rare| rare.will.take())
    }

    pub(super) fn aliases(&self) -> Option<&TopicAliases> {
        self.rare.as_deref().map(|rare| &rare.aliases)
    }

    pub(super) fn aliases_mut(&mut self) -> &mut TopicAliases {
        &mut self.rare.get_or_insert_default().aliases
    }

    /// Whether the client announced a bridge (see [`BRIDGE`]).
    pub(super) fn bridge(&self) -> bool {
        self.flags & BRIDGE != 0
    }

    pub(super) fn set_bridge(&mut self, bridge: bool) {
        self.flags = if bridge {
            self.flags | BRIDGE
        } else {
            self.flags & !BRIDGE
        };
    }

    /// A QoS 0 PUBLISH stored something (see [`UNACKED_STORE`]).
    pub(super) fn stored_unacked(&mut self) {
        self.flags |= UNACKED_STORE;
    }

    pub(super) fn new(version: ProtocolVersion, keep_alive_secs: u16) -> Mqtt {
        Mqtt {
            version,
            commit: Commit::NONE,
            keep_alive_secs,
            rare: None,
            connect_expiry: 0,
            outbound_alias_max: 0,
            last_topic: None,
            send_window: 1,
            client_max_packet: None,
            flags: 0,
        }
    }

    /// How long the client may stay silent: one and a half keep-alives (spec).
    fn keep_alive_grace(&self) -> Duration {
        let keep_alive = Duration::from_secs(u64::from(self.keep_alive_secs));
        keep_alive + keep_alive / 2
    }
}

impl ConnectionProtocol for Mqtt {
    const PROTOCOL: Protocol = Protocol::Mqtt;
    type Batched = (Delivery, Option<u16>);
    type Closed = Closed;
    type Error = MqttError;

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
    ) -> Result<Next<Closed>, MqttError> {
        // Read here rather than kept: every byte a waiting task keeps, every idle
        // connection pays for.
        let max_packet = conn.ctx.limits().max_packet_size as usize;
        // The packet is handled where the decoder put it (see `dispatch`).
        match tern_mqtt::decode(read_buf, conn.protocol.version, max_packet) {
            Ok(Some(packet)) => {
                conn.frame_taken(read_buf.len());
                Ok(match dispatch(conn, packet)? {
                    Some(closed) => Next::Closed(closed),
                    None => Next::Handled,
                })
            }
            Ok(None) => Ok(Next::Incomplete),
            Err(e) => Err(e.into()),
        }
    }

    fn window_open(conn: &Connection) -> bool {
        conn.session.inflight_len() < usize::from(conn.protocol.send_window)
    }

    fn batch_list() -> &'static LocalKey<Cell<Vec<(Delivery, Option<u16>)>>> {
        &BATCH
    }

    fn deliver_batch(
        conn: &mut Connection,
        batch: &mut Vec<(Delivery, Option<u16>)>,
    ) -> Result<bool, MqttError> {
        let now = Instant::now();
        let window = usize::from(conn.protocol.send_window);
        let taken = conn
            .session
            .take_deliverable(DELIVERY_BATCH, window, now, batch);
        conn.ctx.monitor.metrics.dropped_expired(taken.expired);
        // A stored delivery's packet id is committed before its PUBLISH goes
        // out, so a resend after a restart uses the same id (QoS 2 exactly once).
        conn.depends_on(taken.commit);
        if batch.is_empty() {
            return Ok(false);
        }
        for (delivery, packet_id) in batch.drain(..) {
            publish::write_delivery(conn, &delivery, packet_id, false, now)?;
        }
        Ok(true)
    }

    fn silence_allowed(conn: &Connection) -> Option<Duration> {
        (conn.protocol.keep_alive_secs != 0).then(|| conn.protocol.keep_alive_grace())
    }

    fn write_stall(conn: &Connection) -> Duration {
        if conn.protocol.keep_alive_secs == 0 {
            DEFAULT_WRITE_STALL
        } else {
            conn.protocol
                .keep_alive_grace()
                .clamp(Duration::from_secs(5), MAX_WRITE_STALL)
        }
    }

    fn take_commit_wait(&mut self) -> Commit {
        self.commit.take()
    }

    fn take_unacked_store(&mut self) -> bool {
        let was = self.flags & UNACKED_STORE != 0;
        self.flags &= !UNACKED_STORE;
        was
    }

    fn label(error: &MqttError) -> &'static str {
        error.label()
    }

    fn finish<S: Stream>(
        conn: Connection,
        stream: &mut S,
        outcome: Result<Closed, MqttError>,
    ) -> impl Future<Output = ()> + Send + '_ {
        finish(conn, stream, outcome)
    }
}

impl Connection {
    /// The next write waits until `commit` is committed (what is buffered
    /// until then promises it).
    pub(super) fn depends_on(&mut self, commit: Commit) {
        self.protocol.commit.include(commit);
    }

    pub(super) fn is_v5(&self) -> bool {
        self.protocol.version == ProtocolVersion::V5
    }

    /// Appends a packet to the write buffer (written once per wake-up).
    pub(super) fn send(&mut self, packet: &Packet) -> Result<(), MqttError> {
        tern_mqtt::encode(packet, self.protocol.version, &mut self.write_buf)?;
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
            self.protocol
                .client_max_packet
                .map(std::num::NonZeroU32::get),
            tern_mqtt::encoded_len(&with_reason, self.protocol.version),
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

/// The packet dispatcher. Inlined into `handle_next`, and the frequent
/// packets (PUBLISH and the acks) bound by reference: a `Packet` is several
/// hundred bytes (its properties inline), and each move of one was a copy.
#[inline(always)]
fn dispatch(conn: &mut Connection, mut packet: Packet) -> Result<Option<Closed>, MqttError> {
    match packet {
        Packet::Publish(ref mut p) => {
            let within = conn
                .publish_rate
                .as_mut()
                .is_none_or(|rate| rate.take(Instant::now()));
            // 5.0 can be told; 3.x is read more slowly instead (see the driver's loop).
            if !within && conn.is_v5() {
                return Err(MqttError::RateTooHigh);
            }
            publish::handle_publish(conn, p)?
        }
        Packet::PubAck(ref a) => ack::handle_puback(conn, a),
        Packet::PubRec(ref a) => ack::handle_pubrec(conn, a)?,
        Packet::PubRel(ref a) => ack::handle_pubrel(conn, a)?,
        Packet::PubComp(ref a) => ack::handle_pubcomp(conn, a),
        Packet::Subscribe(s) => subscribe::handle_subscribe(conn, s)?,
        Packet::Unsubscribe(u) => subscribe::handle_unsubscribe(conn, u)?,
        Packet::PingReq => conn.send(&Packet::PingResp)?,
        Packet::Disconnect(d) => return handle_disconnect(conn, d).map(Some),
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

fn handle_disconnect(conn: &mut Connection, disconnect: Disconnect) -> Result<Closed, MqttError> {
    if let Some(expiry) = disconnect.properties.session_expiry_interval {
        if conn.protocol.connect_expiry == 0 && expiry != 0 {
            return Err(MqttError::Protocol(
                "session expiry set at DISCONNECT after 0 at CONNECT",
            ));
        }
        let capped = expiry.min(conn.ctx.limits().max_session_expiry_secs);
        conn.session.set_expiry_interval(capped);
    }
    Ok(Closed::ByClient {
        publish_will: disconnect.reason == tern_mqtt::reason::DISCONNECT_WITH_WILL,
    })
}

/// Says goodbye where the protocol allows, publishes the will when the end was
/// abnormal, and hands the session back to the core.
async fn finish<S>(mut conn: Connection, stream: &mut S, outcome: Result<Closed, MqttError>)
where
    S: AsyncWrite + Unpin + Send,
{
    let publish_will = match &outcome {
        Ok(Closed::ByClient { publish_will }) => {
            tracing::info!(client_id = %conn.session.client_id, peer = %conn.peer_addr, "client disconnected");
            *publish_will
        }
        Err(e) => {
            match e {
                MqttError::PeerClosed => {
                    tracing::info!(client_id = %conn.session.client_id, peer = %conn.peer_addr, "connection closed without DISCONNECT")
                }
                MqttError::ShuttingDown | MqttError::TakenOver | MqttError::Administrative => {
                    tracing::info!(client_id = %conn.session.client_id, reason = %e, "disconnecting client")
                }
                MqttError::OverBudget(_) => {
                    // Broker-wide limit on these lines: a flood of connections
                    // over the budget must not flood the log too.
                    let budget = &conn.ctx.buffer_budget;
                    if let Some(suppressed) = budget.admit_log() {
                        tracing::warn!(client_id = %conn.session.client_id, peer = %conn.peer_addr, held = budget.held(), refused = budget.refused(), suppressed, error = %e, "closing connection over the buffer budget")
                    }
                }
                _ => {
                    tracing::warn!(client_id = %conn.session.client_id, peer = %conn.peer_addr, error = %e, "closing connection")
                }
            }
            if let (true, Some(code)) = (conn.is_v5(), e.disconnect_reason()) {
                let packet = conn.disconnect_packet(code, e.to_string());
                if conn.send(&packet).is_ok() {
                    let _ = conn.flush(stream).await;
                }
            } else if !conn.write_buf.is_empty()
                && !matches!(e, MqttError::PeerClosed | MqttError::Io(_))
            {
                // Answers to packets handled before the error (3.x has no DISCONNECT).
                let _ = conn.flush(stream).await;
            }
            // On shutdown the will is not published: the client did nothing wrong
            // and its session persists.
            !matches!(e, MqttError::ShuttingDown)
        }
    };
    // Session and will first, so a client that sees the close can rely on them.
    let will = conn.protocol.take_will();
    let router = Arc::clone(&conn.ctx.router);
    router.detach(&conn.session, conn.connection_id);
    match (publish_will, will) {
        (true, Some(will)) => will.publish_or_schedule(&router, &conn.session),
        // Not going out: a stored (armed) copy goes too.
        (false, Some(_)) => router.disarm_will(&conn.session),
        (_, None) => {}
    }
    // Its share of the buffer budget, too, before the client sees the close.
    conn.partial = PartialFrame::default();
    let _ = stream.shutdown().await;
}
