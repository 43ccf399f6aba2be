//! CONNECT / STOMP → version and heart-beat negotiation → login → session
//! attach → CONNECTED. A refusal is an ERROR frame, then the close.

use std::sync::Arc;

use bytes::BytesMut;
use tern_stomp::{Command, Decoder, Frame, Item, Limits, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::connection::{Connection, Stomp};
use super::error::{encode_error, StompAdapterError};
use super::heartbeat::{self, HeartBeat};
use crate::adapter::first_frame::{read_first_frame, FirstFrame};
use crate::adapter::{Context, Peer};
use crate::admin::Protocol;
use crate::auth::{AuthError, Principal};
use crate::core::session::{DeliveryStyle, SessionOwner};

/// The `server` header of CONNECTED.
const SERVER: &str = concat!("tern/", env!("CARGO_PKG_VERSION"));

/// The decoder limits configured for STOMP.
pub(super) fn decoder_limits(ctx: &Context) -> Limits {
    let limits = ctx.limits();
    Limits {
        max_frame_size: limits.stomp_max_frame_size,
        max_headers: limits.stomp_max_headers,
        max_header_len: limits.stomp_max_header_len,
    }
}

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
    let mut decoder = Decoder::new(decoder_limits(ctx));
    let first = read_first_frame(stream, read_buf, ctx, |buf| read_connect(buf, &mut decoder));
    let frame = match first.await {
        FirstFrame::Frame(frame) => frame,
        FirstFrame::Closed => return None,
        FirstFrame::OverBudget(over) => {
            let error = StompAdapterError::OverBudget(over);
            // A flood of such clients logs a few lines a minute, with a count.
            if let Some(suppressed) = ctx.buffer_budget.admit_log() {
                tracing::warn!(peer = %peer.addr, suppressed, error = %error, "CONNECT over the buffer budget refused");
            }
            ctx.monitor.metrics.refused(Protocol::Stomp, peer.listener);
            refuse_quietly(stream, &error).await;
            return None;
        }
        FirstFrame::Invalid(error) => {
            refuse(stream, peer, &error).await;
            return None;
        }
        FirstFrame::TimedOut => {
            tracing::info!(peer = %peer.addr, "no CONNECT within the connect timeout");
            return None;
        }
    };
    let principal = match authenticate(&frame, peer, ctx).await {
        Ok(principal) => principal,
        Err(error) => {
            ctx.monitor.metrics.refused(Protocol::Stomp, peer.listener);
            refuse(stream, peer, &error).await;
            return None;
        }
    };
    match establish(&frame, decoder, principal, peer, ctx) {
        Ok(conn) => Some(conn),
        Err(error) => {
            ctx.monitor.metrics.refused(Protocol::Stomp, peer.listener);
            refuse(stream, peer, &error).await;
            None
        }
    }
}

/// The first frame in `buf`, if complete, which must be CONNECT or STOMP (EOLs
/// before it are ignored).
fn read_connect(
    buf: &mut BytesMut,
    decoder: &mut Decoder,
) -> Result<Option<Frame>, StompAdapterError> {
    while let Some(item) = decoder.decode(buf)? {
        match item {
            Item::HeartBeat => {}
            Item::Frame(frame) if matches!(frame.command, Command::Connect | Command::Stomp) => {
                return Ok(Some(frame))
            }
            Item::Frame(frame) => return Err(StompAdapterError::NotConnected(frame.command)),
        }
    }
    Ok(None)
}

/// Writes the ERROR that refuses a client before the connection is set up, then closes.
async fn refuse<S>(stream: &mut S, peer: &Peer, error: &StompAdapterError)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tracing::info!(peer = %peer.addr, error = %error, label = error.label(), "connection refused");
    refuse_quietly(stream, error).await;
}

/// [`refuse`] without the log line, for a caller that limits its lines.
async fn refuse_quietly<S>(stream: &mut S, error: &StompAdapterError)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(frame) = error.error_frame(None) {
        let mut buf = BytesMut::new();
        encode_error(&frame, None, &mut buf);
        let _ = stream.write_all(&buf).await;
        let _ = stream.flush().await;
    }
    let _ = stream.shutdown().await;
}

/// `login`/`passcode` (or the TLS certificate's name) against the password file
/// and the listener's anonymous policy: the same users as MQTT. The passcode is
/// never logged.
async fn authenticate(
    frame: &Frame,
    peer: &Peer,
    ctx: &Context,
) -> Result<Principal, StompAdapterError> {
    let login = frame.header("login").map(str::to_string);
    let passcode = frame.header("passcode").map(|p| p.as_bytes().to_vec());
    ctx.auth
        .authenticate_async(peer.login(login, passcode))
        .await
        .map_err(|e| match e {
            AuthError::BadCredentials => StompAdapterError::NotAuthorized("bad login or passcode"),
            AuthError::NotAuthorized => StompAdapterError::NotAuthorized(
                "anonymous clients are not allowed on this listener: send login and passcode",
            ),
        })
}

fn establish(
    frame: &Frame,
    mut decoder: Decoder,
    principal: Principal,
    peer: &Peer,
    ctx: &Context,
) -> Result<Connection, StompAdapterError> {
    let limits = ctx.limits();
    let version = Version::negotiate(frame.header("accept-version"))
        .ok_or(StompAdapterError::UnsupportedVersion)?;
    if !peer.admitted {
        return Err(StompAdapterError::ServerBusy);
    }
    let (offer, heart_beat) = if version == Version::V1_0 {
        ((0, 0), HeartBeat::default())
    } else {
        let value = frame.header("heart-beat");
        let wish =
            heartbeat::client_wish(value).ok_or_else(|| StompAdapterError::InvalidHeader {
                header: "heart-beat",
                value: value.unwrap_or_default().chars().take(64).collect(),
                reason: "expected two integers, cx,cy",
            })?;
        let offer = heartbeat::offer(
            wish,
            limits.stomp_heartbeat_ms,
            limits.stomp_min_heartbeat_ms,
        );
        (offer, heartbeat::negotiate(wish, offer))
    };

    let client_id: Arc<str> = Arc::from(format!("stomp-{:016x}", rand::random::<u64>()));
    // STOMP sessions get a fresh random id and are never resumed, so no STOMP
    // client can reach another user's session; a clash with an MQTT client's
    // chosen id is refused as a takeover would be.
    let login = SessionOwner::of(principal.username.as_ref());
    let attached = ctx
        .router
        .attach(&client_id, &login, true, 0)
        .map_err(|_| StompAdapterError::NotAuthorized("session id in use by another user"))?;
    attached.session.set_delivery_style(DeliveryStyle {
        per_subscription: true,
        queue_ack_window: Some(limits.stomp_max_unacked.max(1)),
    });
    decoder.set_version(version);
    let max_unacked = limits.stomp_max_unacked.max(1);
    let mut conn = Connection::new(
        ctx.clone(),
        peer.addr,
        (attached.session, attached.connection_id, attached.kicked),
        Stomp::new(version, decoder, heart_beat, max_unacked),
    );

    let mut connected = Frame::new(Command::Connected);
    if version > Version::V1_0 {
        connected = connected.with_header("version", version.as_str());
    }
    connected = connected
        .with_header("session", &*client_id)
        .with_header("server", SERVER);
    if version > Version::V1_0 {
        connected = connected.with_header("heart-beat", format!("{},{}", offer.0, offer.1));
    }
    conn.username = principal.username.clone();
    conn.send(&connected);
    tracing::info!(
        client_id = %client_id,
        peer = %peer.addr,
        version = %version,
        user = principal.username.as_deref().unwrap_or(""),
        auth = ?principal.method,
        host = frame.header("host").unwrap_or(""),
        heart_beat_send_ms = heart_beat.send.map_or(0, |d| d.as_millis()),
        heart_beat_receive_ms = heart_beat.receive.map_or(0, |d| d.as_millis()),
        "client connected"
    );
    Ok(conn)
}
