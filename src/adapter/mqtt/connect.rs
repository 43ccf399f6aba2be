//! CONNECT → checks → session attach → CONNACK. Every refusal is answered with
//! the CONNACK code `error.rs` gives it for the client's version, then the close.

use std::sync::Arc;

use bytes::BytesMut;
use tern_mqtt::{ConnAck, Connect, DecodeError, Packet, Properties, ProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::connection::{Connection, Mqtt};
use super::core_qos;
use super::error::{invalid_connect_reply, ConnectRefusal};
use super::properties::message_from_parts;
use super::will::PendingWill;
use crate::adapter::first_frame::{read_first_frame, FirstFrame};
use crate::adapter::log_limit::LogLimit;
use crate::adapter::{Context, Peer};
use crate::admin::Protocol;
use crate::auth::{Action, AuthError, Principal};
use crate::core::router::AttachRefused;
use crate::core::session::SessionOwner;
use crate::core::topic::validate_topic_name;

/// Reads CONNECT and sets the connection up; None when the client was refused or went away.
pub(super) async fn accept<S>(
    stream: &mut S,
    read_buf: &mut BytesMut,
    peer: &Peer,
    ctx: &Context,
) -> Option<Connection>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let max = ctx.limits().max_packet_size as usize;
    let connect = match read_first_frame(stream, read_buf, ctx, |buf| read_connect(buf, max)).await
    {
        FirstFrame::Frame(connect) => connect,
        FirstFrame::Closed => return None,
        FirstFrame::Invalid(ConnectFailure::Invalid(error, level)) => {
            tracing::warn!(peer = %peer.addr, error = %error, "invalid CONNECT");
            answer_invalid_connect(stream, &error, level).await;
            return None;
        }
        FirstFrame::Invalid(ConnectFailure::NotConnect) => {
            tracing::warn!(peer = %peer.addr, "first packet is not CONNECT");
            return None;
        }
        FirstFrame::OverBudget(error) => {
            // A flood of such clients logs a few lines a minute, with a count.
            if let Some(suppressed) = ctx.buffer_budget.admit_log() {
                tracing::warn!(peer = %peer.addr, suppressed, error = %error, "CONNECT over the buffer budget refused");
            }
            ctx.monitor.metrics.refused(Protocol::Mqtt, peer.listener);
            // The CONNECT under way is still in the buffer: answered in its version.
            let version = match peek_protocol_level(read_buf) {
                Some(5) => ProtocolVersion::V5,
                _ => ProtocolVersion::V311,
            };
            let code = ConnectRefusal::OverBudget.connack_code(version);
            write_and_close(stream, connack_bytes(code, version)).await;
            return None;
        }
        FirstFrame::TimedOut => {
            tracing::info!(peer = %peer.addr, "no CONNECT within the connect timeout");
            return None;
        }
    };
    let version = connect.protocol;
    let admitted = match precheck(&connect, peer) {
        Ok(()) => authenticate(&connect, peer, ctx).await,
        Err(refusal) => Err(refusal),
    };
    let established = match admitted {
        Ok(principal) => establish(*connect, principal, peer, ctx).await,
        Err(refusal) => Err(refusal),
    };
    match established {
        Ok(mut conn) => {
            if conn.resend_inflight().is_err() || conn.flush(stream).await.is_err() {
                let router = Arc::clone(&conn.ctx.router);
                router.detach(&conn.session, conn.connection_id);
                return None;
            }
            Some(conn)
        }
        Err(refusal) => {
            tracing::info!(peer = %peer.addr, reason = refusal.why(), "connection refused");
            ctx.monitor.metrics.refused(Protocol::Mqtt, peer.listener);
            let code = refusal.connack_code(version);
            write_and_close(stream, connack_bytes(code, version)).await;
            None
        }
    }
}

/// A refusing CONNACK, encoded before it is written so that no packet is kept
/// while the write waits.
fn connack_bytes(code: u8, version: ProtocolVersion) -> Option<BytesMut> {
    let packet = Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: Properties::default(),
    });
    let mut buf = BytesMut::new();
    tern_mqtt::encode(&packet, version, &mut buf).ok()?;
    Some(buf)
}

enum ConnectFailure {
    NotConnect,
    /// The decode error and, if it could be read, the protocol level the client asked for.
    Invalid(DecodeError, Option<u8>),
}

/// The CONNECT in `buf`, if complete (any version's: the level is in it).
fn read_connect(buf: &mut BytesMut, max: usize) -> Result<Option<Box<Connect>>, ConnectFailure> {
    // Read before decoding: a complete bad packet is consumed by `decode`.
    let level = peek_protocol_level(buf);
    match tern_mqtt::decode(buf, ProtocolVersion::V311, max) {
        // Boxed: a decoded CONNECT is large (most of a packet's 840 bytes)
        // and the accepting task would otherwise keep room for it at every wait.
        Ok(Some(Packet::Connect(connect))) => Ok(Some(Box::new(connect))),
        Ok(Some(_)) => Err(ConnectFailure::NotConnect),
        Ok(None) => Ok(None),
        Err(e) => Err(ConnectFailure::Invalid(e, level)),
    }
}

/// The protocol level byte of a CONNECT still in the buffer, so a broken 5.0
/// CONNECT can be answered in 5.0's format.
fn peek_protocol_level(buf: &[u8]) -> Option<u8> {
    if buf.first().map(|b| b >> 4) != Some(1) {
        return None;
    }
    let mut pos = 1;
    while buf.get(pos)? & 0x80 != 0 {
        pos += 1;
        if pos > 4 {
            return None;
        }
    }
    let name_len = usize::from(u16::from_be_bytes([*buf.get(pos + 1)?, *buf.get(pos + 2)?]));
    buf.get(pos + 3 + name_len).copied()
}

async fn answer_invalid_connect<S>(stream: &mut S, error: &DecodeError, level: Option<u8>)
where
    S: AsyncWrite + Unpin,
{
    if let Some((version, code)) = invalid_connect_reply(error, level) {
        write_and_close(stream, connack_bytes(code, version)).await;
    }
}

async fn write_and_close<S>(stream: &mut S, bytes: Option<BytesMut>)
where
    S: AsyncWrite + Unpin,
{
    if let Some(bytes) = bytes {
        let _ = stream.write_all(&bytes).await;
        let _ = stream.flush().await;
    }
    let _ = stream.shutdown().await;
}

/// Refusals that need no credentials checked.
fn precheck(connect: &Connect, peer: &Peer) -> Result<(), ConnectRefusal> {
    if !peer.admitted {
        return Err(ConnectRefusal::ConnectionLimit);
    }
    if connect.protocol == ProtocolVersion::V5 && connect.properties.authentication_method.is_some()
    {
        return Err(ConnectRefusal::AuthMethod);
    }
    Ok(())
}

/// Username/password (or the TLS certificate's name) against the password file
/// and the listener's anonymous policy; the password is never logged.
async fn authenticate(
    connect: &Connect,
    peer: &Peer,
    ctx: &Context,
) -> Result<Principal, ConnectRefusal> {
    let password = connect.password.as_ref().map(|p| p.to_vec());
    let login = peer.login(connect.username.clone(), password);
    ctx.auth
        .authenticate_async(login)
        .await
        .map_err(|e| match e {
            AuthError::BadCredentials => ConnectRefusal::BadCredentials,
            AuthError::NotAuthorized => ConnectRefusal::AnonymousNotAllowed,
        })
}

async fn establish(
    connect: Connect,
    principal: Principal,
    peer: &Peer,
    ctx: &Context,
) -> Result<Connection, ConnectRefusal> {
    let limits = ctx.limits();
    let version = connect.protocol;
    let v5 = version == ProtocolVersion::V5;
    let mut assigned = None;
    let client_id: Arc<str> = if connect.client_id.is_empty() {
        if !connect.clean_start || version == ProtocolVersion::V31 {
            return Err(ConnectRefusal::ClientIdInvalid);
        }
        let id = ctx.router.generate_client_id();
        assigned = Some(id.clone());
        Arc::from(id)
    } else {
        Arc::from(connect.client_id.as_str())
    };

    let will = match connect.will {
        Some(will) => {
            let within = ctx.limits().topic_limits().check(&will.topic).is_ok();
            if validate_topic_name(&will.topic).is_err() || !within {
                return Err(ConnectRefusal::WillTopicInvalid);
            }
            let username = principal.username.as_deref();
            if !ctx.allowed(
                username,
                &client_id,
                Action::Publish,
                &will.topic,
                &mut LogLimit::default(),
            ) {
                return Err(ConnectRefusal::WillTopicDenied);
            }
            let delay = will.properties.will_delay_interval.unwrap_or(0);
            let expiry_interval = will.properties.message_expiry_interval;
            let mut message = message_from_parts(
                Arc::from(will.topic.as_str()),
                will.payload,
                core_qos(will.qos),
                will.retain,
                &will.properties,
                Arc::clone(&client_id),
            );
            message.expires_at = None;
            Some(PendingWill {
                message,
                delay,
                expiry_interval,
            })
        }
        None => None,
    };

    let requested_expiry = if v5 {
        connect.properties.session_expiry_interval.unwrap_or(0)
    } else if connect.clean_start {
        0
    } else {
        u32::MAX
    };
    let expiry = requested_expiry.min(limits.max_session_expiry_secs);

    let login = SessionOwner::of(principal.username.as_ref());
    let attached = match ctx
        .router
        .attach_claimed(&client_id, &login, connect.clean_start, expiry)
        .await
    {
        Ok(attached) => attached,
        Err(AttachRefused::NotOwner(refused)) => {
            tracing::warn!(
                client_id = %client_id,
                peer = %peer.addr,
                owner = refused.owner.name(),
                user = refused.login.name(),
                "session belongs to another user: connection refused"
            );
            return Err(ConnectRefusal::SessionOfAnotherUser);
        }
        // Counted in claims_failed; a reconnect storm while NATS is away logs nothing more.
        Err(AttachRefused::OwnerUndecided { .. } | AttachRefused::StoredStateUnread { .. }) => {
            return Err(ConnectRefusal::Unavailable)
        }
    };
    if attached.session_present {
        // A resumed session keeps only what this login may still read.
        ctx.recheck_subscriptions(&attached.session);
    }
    let max_keep_alive = ctx.settings.mqtt_max_keep_alive(peer.listener);
    let keep_alive = held_keep_alive(connect.keep_alive, max_keep_alive);
    if keep_alive != connect.keep_alive && !v5 {
        log_held_keep_alive(&client_id, connect.keep_alive, keep_alive);
    }
    let mut conn = Connection::new(
        ctx.clone(),
        peer.addr,
        (attached.session, attached.connection_id, attached.kicked),
        Mqtt::new(version, keep_alive),
    );
    if let Some(will) = &will {
        // In a cluster with a shared store, stored now: if this node dies,
        // the node taking the session over publishes it.
        let armed = ctx.router.arm_will(
            &conn.session.client_id,
            &will.message,
            will.delay,
            will.expiry_interval,
        );
        conn.depends_on(armed);
    }
    conn.protocol.set_will(will);
    conn.protocol.set_bridge(connect.bridge);
    conn.username = principal.username.clone();
    // CONNACK goes out once the session record is committed (which covers what
    // the session stored before, such as the packet ids of resent deliveries).
    conn.depends_on(attached.commit);
    conn.protocol.connect_expiry = requested_expiry;
    let client_receive_max = connect.properties.receive_maximum.unwrap_or(u16::MAX);
    // At most 65534 in flight: one packet id is always free (the session stops there too).
    conn.protocol.send_window = if v5 {
        client_receive_max.min(limits.max_inflight)
    } else {
        limits.max_inflight
    }
    .min(u16::MAX - 1);
    conn.protocol.client_max_packet = connect
        .properties
        .maximum_packet_size
        .and_then(std::num::NonZeroU32::new);
    if v5 {
        conn.protocol.outbound_alias_max = connect
            .properties
            .topic_alias_maximum
            .unwrap_or(0)
            .min(super::alias::MAX_OUTBOUND_ALIASES);
    }

    let mut properties = Properties::default();
    if v5 {
        properties.assigned_client_identifier = assigned;
        properties.receive_maximum = Some(limits.receive_maximum);
        properties.maximum_packet_size = Some(limits.max_packet_size);
        if limits.topic_alias_maximum > 0 {
            properties.topic_alias_maximum = Some(limits.topic_alias_maximum);
        }
        if expiry != requested_expiry {
            properties.session_expiry_interval = Some(expiry);
        }
        if keep_alive != connect.keep_alive {
            properties.server_keep_alive = Some(keep_alive);
        }
    }
    let connack = Packet::ConnAck(ConnAck {
        // MQTT 3.1 has no session-present flag: the bit is reserved.
        session_present: attached.session_present && version != ProtocolVersion::V31,
        code: 0,
        properties,
    });
    if conn.send(&connack).is_err() {
        let router = Arc::clone(&ctx.router);
        router.detach(&conn.session, conn.connection_id);
        return Err(ConnectRefusal::Internal);
    }
    tracing::info!(
        client_id = %client_id,
        peer = %peer.addr,
        version = ?version,
        bridge = connect.bridge,
        clean_start = connect.clean_start,
        keep_alive,
        session_present = attached.session_present,
        username = principal.username.as_deref().unwrap_or(""),
        auth = ?principal.method,
        "client connected"
    );
    Ok(conn)
}

/// The keep-alive a client is held to: its own, unless it asks for more than the
/// listener's maximum or for none (0) while there is a maximum.
fn held_keep_alive(asked: u16, max: u16) -> u16 {
    if max != 0 && (asked == 0 || asked > max) {
        max
    } else {
        asked
    }
}

/// A 3.x client cannot be told its keep-alive was lowered (5.0 is, in CONNACK):
/// said once per process at info, then at debug, so a fleet of such clients does
/// not flood the log.
fn log_held_keep_alive(client_id: &str, asked: u16, held: u16) {
    static LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::debug!(
            client_id,
            asked,
            held,
            "3.x client held to the maximum keep-alive"
        );
    } else {
        tracing::info!(client_id, asked, held, "3.x client held to the listener's max_keep_alive_secs (it cannot be told; logged once, then at debug)");
    }
}

#[cfg(test)]
mod tests {
    use super::held_keep_alive;

    #[test]
    fn keep_alive_above_the_maximum_or_zero_is_held_to_it() {
        assert_eq!(held_keep_alive(30, 60), 30);
        assert_eq!(held_keep_alive(60, 60), 60);
        assert_eq!(held_keep_alive(61, 60), 60);
        assert_eq!(held_keep_alive(0, 60), 60);
        assert_eq!(held_keep_alive(0, 0), 0);
        assert_eq!(held_keep_alive(65535, 0), 65535);
    }
}
