//! Connecting to a broker: TCP, the MQTT and STOMP handshakes, subscriptions, and
//! the payload stamp (publisher id, sequence number, send time) every message carries.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::{Bytes, BytesMut};
use tern_mqtt::{
    Connect, Packet, Properties, ProtocolVersion, QoS, Subscribe, SubscribeFilter,
    SubscriptionOptions,
};
use tern_stomp::{Command, Decoder, Frame, Item, Limits};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Bytes requested per read.
pub const READ_CHUNK: usize = 64 * 1024;
/// Largest MQTT packet we accept.
pub const MAX_PACKET: usize = 16 * 1024 * 1024;
/// Publisher id (u32), sequence (u64), send time in ns since the run's epoch (u64).
pub const STAMP_LEN: usize = 20;
/// How long a handshake step may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Writes the stamp into the first [`STAMP_LEN`] bytes of `dst`.
pub fn stamp(dst: &mut [u8], publisher: u32, seq: u64, sent_ns: u64) {
    if let Some(d) = dst.get_mut(0..4) {
        d.copy_from_slice(&publisher.to_le_bytes());
    }
    if let Some(d) = dst.get_mut(4..12) {
        d.copy_from_slice(&seq.to_le_bytes());
    }
    if let Some(d) = dst.get_mut(12..20) {
        d.copy_from_slice(&sent_ns.to_le_bytes());
    }
}

/// Reads a stamp back: (publisher, seq, sent_ns).
pub fn unstamp(src: &[u8]) -> Option<(u32, u64, u64)> {
    let p = u32::from_le_bytes(src.get(0..4)?.try_into().ok()?);
    let s = u64::from_le_bytes(src.get(4..12)?.try_into().ok()?);
    let t = u64::from_le_bytes(src.get(12..20)?.try_into().ok()?);
    Some((p, s, t))
}

pub fn mqtt_version(v5: bool) -> ProtocolVersion {
    if v5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    }
}

pub fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Opens a TCP connection, optionally from a given local address.
pub async fn tcp(addr: SocketAddr, local: Option<IpAddr>) -> anyhow::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = local {
        // Let connect() pick the port for the whole 4-tuple; otherwise every bind
        // scans for a port unused by any bound socket, which gets slow past ~10k.
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let one: libc::c_int = 1;
            // SAFETY: a valid socket fd and a pointer to a c_int of the given size.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("cannot bind {ip}"))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Credentials and identity for a handshake.
#[derive(Debug, Clone, Default)]
pub struct Login {
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub host: String,
    /// Persistent session (clean session 0; MQTT 5 session expiry 1 h), so a
    /// broker with a store keeps QoS 1/2 deliveries for it on disk.
    pub persistent: bool,
    /// Topic Alias Maximum sent in an MQTT 5 CONNECT (0: not sent, no aliases).
    pub topic_alias_maximum: u16,
}

async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> anyhow::Result<()> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    let n = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_buf(buf))
        .await
        .context("timed out waiting for the broker")??;
    if n == 0 {
        bail!("connection closed by the broker");
    }
    Ok(())
}

/// Reads until one MQTT packet is decoded; leftover bytes stay in `buf`.
pub async fn mqtt_read<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    version: ProtocolVersion,
) -> anyhow::Result<Packet> {
    loop {
        if let Some(p) = tern_mqtt::decode(buf, version, MAX_PACKET)
            .map_err(|e| anyhow::anyhow!("bad packet from broker: {e}"))?
        {
            return Ok(p);
        }
        read_more(stream, buf).await?;
    }
}

/// CONNECT (clean start, keep-alive off) and wait for a successful CONNACK.
pub async fn mqtt_connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    version: ProtocolVersion,
    login: &Login,
) -> anyhow::Result<()> {
    let connect = Packet::Connect(Connect {
        protocol: version,
        clean_start: !login.persistent,
        keep_alive: 0,
        client_id: login.client_id.clone(),
        will: None,
        username: login.username.clone(),
        password: login.password.clone().map(Bytes::from),
        properties: Properties {
            session_expiry_interval: login.persistent.then_some(3600),
            topic_alias_maximum: (version == ProtocolVersion::V5 && login.topic_alias_maximum > 0)
                .then_some(login.topic_alias_maximum),
            ..Properties::default()
        },
        bridge: false,
    });
    let mut out = BytesMut::new();
    tern_mqtt::encode(&connect, version, &mut out)?;
    stream.write_all(&out).await?;
    // A no-op over TCP; a WebSocket sends its message here.
    stream.flush().await?;
    match mqtt_read(stream, buf, version).await? {
        Packet::ConnAck(ack) if ack.code == 0 => Ok(()),
        Packet::ConnAck(ack) => bail!("CONNACK refused with code {:#04x}", ack.code),
        other => bail!("expected CONNACK, got {}", other.name()),
    }
}

/// SUBSCRIBE one filter and wait for a SUBACK granting it.
pub async fn mqtt_subscribe<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    version: ProtocolVersion,
    filter: &str,
    q: u8,
    selector: Option<&str>,
) -> anyhow::Result<()> {
    let mut properties = Properties::default();
    if let Some(selector) = selector {
        properties
            .user_properties
            .push(("selector".to_string(), selector.to_string()));
    }
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: filter.to_string(),
            options: SubscriptionOptions {
                qos: qos(q),
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            },
        }],
        properties,
    });
    let mut out = BytesMut::new();
    tern_mqtt::encode(&subscribe, version, &mut out)?;
    stream.write_all(&out).await?;
    // A no-op over TCP; a WebSocket sends its message here.
    stream.flush().await?;
    loop {
        match mqtt_read(stream, buf, version).await? {
            Packet::SubAck(ack) => {
                return match ack.codes.first() {
                    Some(&c) if c < 0x80 => Ok(()),
                    Some(&c) => bail!("SUBACK refused {filter} with code {c:#04x}"),
                    None => bail!("empty SUBACK"),
                };
            }
            Packet::Publish(_) => continue,
            other => bail!("expected SUBACK, got {}", other.name()),
        }
    }
}

/// Reads until one STOMP frame is decoded (heart-beats skipped); leftovers stay in `buf`.
pub async fn stomp_read<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    decoder: &mut Decoder,
) -> anyhow::Result<Frame> {
    loop {
        match decoder
            .decode(buf)
            .map_err(|e| anyhow::anyhow!("bad frame from broker: {e}"))?
        {
            Some(Item::Frame(f)) => return Ok(f),
            Some(Item::HeartBeat) => continue,
            None => read_more(stream, buf).await?,
        }
    }
}

/// The next frame already in `buf`, without reading (None: none complete).
pub fn stomp_buffered(buf: &mut BytesMut, decoder: &mut Decoder) -> anyhow::Result<Option<Frame>> {
    loop {
        match decoder
            .decode(buf)
            .map_err(|e| anyhow::anyhow!("bad frame from broker: {e}"))?
        {
            Some(Item::Frame(f)) => return Ok(Some(f)),
            Some(Item::HeartBeat) => continue,
            None => return Ok(None),
        }
    }
}

pub fn stomp_decoder() -> Decoder {
    Decoder::new(Limits {
        max_frame_size: MAX_PACKET,
        ..Limits::default()
    })
}

fn stomp_error(frame: &Frame) -> anyhow::Error {
    anyhow::anyhow!(
        "broker sent ERROR: {} {}",
        frame.header("message").unwrap_or(""),
        String::from_utf8_lossy(&frame.body).trim()
    )
}

/// CONNECT (1.2, no heart-beats) and wait for CONNECTED.
pub async fn stomp_connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    decoder: &mut Decoder,
    login: &Login,
) -> anyhow::Result<()> {
    let mut frame = Frame::new(Command::Connect)
        .with_header("accept-version", "1.2")
        .with_header("host", login.host.as_str())
        .with_header("heart-beat", "0,0");
    if let Some(u) = &login.username {
        frame = frame.with_header("login", u.as_str());
    }
    if let Some(p) = &login.password {
        frame = frame.with_header("passcode", p.as_str());
    }
    let mut out = BytesMut::new();
    tern_stomp::encode(&frame, tern_stomp::Version::V1_2, &mut out);
    stream.write_all(&out).await?;
    // A no-op over TCP; a WebSocket sends its message here.
    stream.flush().await?;
    let reply = stomp_read(stream, buf, decoder).await?;
    match reply.command {
        Command::Connected => {
            decoder.set_version(tern_stomp::Version::V1_2);
            Ok(())
        }
        Command::Error => Err(stomp_error(&reply)),
        other => bail!("expected CONNECTED, got {other}"),
    }
}

/// SUBSCRIBE (ack auto) with a receipt, and wait for the RECEIPT so the
/// subscription is in place before anyone publishes.
pub async fn stomp_subscribe<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    decoder: &mut Decoder,
    destination: &str,
    selector: Option<&str>,
) -> anyhow::Result<()> {
    let mut frame = Frame::new(Command::Subscribe)
        .with_header("id", "0")
        .with_header("destination", destination)
        .with_header("ack", "auto")
        .with_header("receipt", "sub-0");
    if let Some(selector) = selector {
        frame = frame.with_header("selector", selector);
    }
    let mut out = BytesMut::new();
    tern_stomp::encode(&frame, tern_stomp::Version::V1_2, &mut out);
    stream.write_all(&out).await?;
    // A no-op over TCP; a WebSocket sends its message here.
    stream.flush().await?;
    loop {
        let reply = stomp_read(stream, buf, decoder).await?;
        match reply.command {
            Command::Receipt => return Ok(()),
            Command::Message => continue,
            Command::Error => return Err(stomp_error(&reply)),
            other => bail!("expected RECEIPT, got {other}"),
        }
    }
}

/// Appends one PUBLISH to `buf`, then stamps its payload in place (the payload is
/// the last `payload.len()` bytes of the packet).
#[allow(clippy::too_many_arguments)]
pub fn encode_mqtt_publish(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    topic: &str,
    q: u8,
    packet_id: Option<u16>,
    payload: &Bytes,
    publisher: u32,
    seq: u64,
    sent_ns: u64,
    bucket: Option<u64>,
) -> anyhow::Result<()> {
    let mut properties = Properties::default();
    if let Some(bucket) = bucket {
        properties
            .user_properties
            .push(("bucket".to_string(), bucket.to_string()));
    }
    let packet = Packet::Publish(tern_mqtt::Publish {
        dup: false,
        qos: qos(q),
        retain: false,
        topic: topic.to_string(),
        packet_id,
        properties,
        payload: payload.clone(),
    });
    tern_mqtt::encode(&packet, version, buf)?;
    let end = buf.len();
    let start = end - payload.len();
    if let Some(p) = buf.get_mut(start..end) {
        stamp(p, publisher, seq, sent_ns);
    }
    Ok(())
}

/// Appends one STOMP SEND to `buf` and stamps its body (which precedes the final NUL).
pub fn encode_stomp_send(
    buf: &mut BytesMut,
    destination: &str,
    body: &Bytes,
    publisher: u32,
    seq: u64,
    sent_ns: u64,
    bucket: Option<u64>,
) {
    let mut headers = vec![("destination".to_string(), destination.to_string())];
    if let Some(bucket) = bucket {
        headers.push(("bucket".to_string(), bucket.to_string()));
    }
    let frame = Frame {
        command: Command::Send,
        headers,
        body: body.clone(),
    };
    tern_stomp::encode(&frame, tern_stomp::Version::V1_2, buf);
    let end = buf.len() - 1;
    let start = end - body.len();
    if let Some(p) = buf.get_mut(start..end) {
        stamp(p, publisher, seq, sent_ns);
    }
}

/// Encodes a PUBACK/PUBREC/PUBREL/PUBCOMP.
pub fn encode_ack(buf: &mut BytesMut, version: ProtocolVersion, kind: u8, packet_id: u16) {
    let ack = tern_mqtt::Ack {
        packet_id,
        reason: 0,
        properties: Properties::default(),
    };
    let packet = match kind {
        4 => Packet::PubAck(ack),
        5 => Packet::PubRec(ack),
        6 => Packet::PubRel(ack),
        _ => Packet::PubComp(ack),
    };
    // An ack always fits.
    let _ = tern_mqtt::encode(&packet, version, buf);
}

/// A connected, subscribed (for subscribers) client ready for the flow.
pub struct Ready {
    pub stream: TcpStream,
    /// Bytes read past the handshake.
    pub buf: BytesMut,
    pub decoder: Option<Decoder>,
}

/// Connects and performs the handshake for `endpoint`; subscribes to `subscribe` if given.
pub async fn open(
    endpoint: &crate::Endpoint,
    login: &Login,
    local: Option<IpAddr>,
    subscribe: Option<&str>,
    selector: Option<&str>,
) -> anyhow::Result<Ready> {
    let addr = match endpoint {
        crate::Endpoint::Mqtt { addr, .. } | crate::Endpoint::Stomp { addr } => *addr,
    };
    let mut stream = tcp(addr, local).await?;
    let (buf, decoder) = handshake(&mut stream, endpoint, login, subscribe, selector).await?;
    Ok(Ready {
        stream,
        buf,
        decoder,
    })
}

/// The protocol handshake for `endpoint` on a connected `stream` (TCP or
/// WebSocket): CONNECT, then SUBSCRIBE to `subscribe` if given (with `selector`). Returns the
/// bytes read past it and, for STOMP, the decoder.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    endpoint: &crate::Endpoint,
    login: &Login,
    subscribe: Option<&str>,
    selector: Option<&str>,
) -> anyhow::Result<(BytesMut, Option<Decoder>)> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    match endpoint {
        crate::Endpoint::Mqtt { v5, qos, .. } => {
            let version = mqtt_version(*v5);
            tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                mqtt_connect(stream, &mut buf, version, login),
            )
            .await
            .context("CONNECT timed out")??;
            if let Some(filter) = subscribe {
                mqtt_subscribe(stream, &mut buf, version, filter, *qos, selector).await?;
            }
            Ok((buf, None))
        }
        crate::Endpoint::Stomp { .. } => {
            let mut decoder = stomp_decoder();
            tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                stomp_connect(stream, &mut buf, &mut decoder, login),
            )
            .await
            .context("STOMP CONNECT timed out")??;
            if let Some(dest) = subscribe {
                stomp_subscribe(stream, &mut buf, &mut decoder, dest, selector).await?;
            }
            Ok((buf, Some(decoder)))
        }
    }
}
