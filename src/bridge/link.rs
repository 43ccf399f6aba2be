//! Opening the link to the remote broker: TCP to the first address that
//! answers, TLS when `ca_file` is set, CONNECT / CONNACK, and the SUBSCRIBE of
//! the inbound rules.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tern_mqtt::{Connect, Packet, Properties, ProtocolVersion, QoS, Subscribe, SubscribeFilter};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::rule::TopicRule;
use super::settings::{split_host_port, BridgeProtocol, BridgeSettings};

/// How long a TCP connect, TLS handshake or CONNACK may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest packet taken from the remote.
pub(super) const MAX_PACKET: usize = 16 * 1024 * 1024;

/// A byte stream to the remote, plain or TLS.
pub(super) trait LinkStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> LinkStream for T {}

/// Why the link could not be opened or ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("no address answered: {0}")]
    Unreachable(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out waiting for the remote")]
    Timeout,
    #[error("remote refused the connection (code {0:#04x})")]
    Refused(u8),
    #[error("remote closed the connection")]
    Closed,
    #[error("remote sent a malformed packet: {0}")]
    Decode(#[from] tern_mqtt::DecodeError),
    #[error("cannot encode: {0}")]
    Encode(#[from] tern_mqtt::EncodeError),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("remote disconnected us (reason {0:#04x})")]
    Disconnected(u8),
    #[error("local broker refused a message: {0}")]
    Local(String),
}

/// An open link, past CONNACK.
pub(super) struct Link {
    pub stream: Box<dyn LinkStream>,
    pub address: String,
    pub version: ProtocolVersion,
    /// Bytes read past the CONNACK.
    pub read_buf: BytesMut,
    /// How many QoS 1/2 messages the remote takes unacknowledged.
    pub send_window: usize,
}

impl BridgeSettings {
    pub(super) fn version(&self) -> ProtocolVersion {
        match self.protocol {
            BridgeProtocol::Mqttv5 => ProtocolVersion::V5,
            BridgeProtocol::Mqttv311 => ProtocolVersion::V311,
        }
    }
}

/// Connects to the first address that answers, in order.
pub(super) async fn open(settings: &BridgeSettings) -> Result<Link, LinkError> {
    let mut failures = Vec::new();
    for address in &settings.addresses {
        match open_one(settings, address).await {
            Ok(link) => return Ok(link),
            Err(e) => failures.push(format!("{address}: {e}")),
        }
    }
    Err(LinkError::Unreachable(failures.join("; ")))
}

/// One address; a 3.1.1 remote that refuses the bridge flag (unacceptable
/// protocol version, or a close) is tried once more without it, as a client.
async fn open_one(settings: &BridgeSettings, address: &str) -> Result<Link, LinkError> {
    if settings.version() == ProtocolVersion::V311 && settings.try_private {
        match handshake(settings, address, true).await {
            Err(LinkError::Refused(0x01) | LinkError::Closed) => {}
            other => return other,
        }
    }
    handshake(settings, address, false).await
}

async fn handshake(
    settings: &BridgeSettings,
    address: &str,
    bridge_flag: bool,
) -> Result<Link, LinkError> {
    let (host, port) = split_host_port(address)
        .ok_or_else(|| LinkError::Unreachable(format!("{address} is not host:port")))?;
    let tcp = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| LinkError::Timeout)??;
    let _ = tcp.set_nodelay(true);
    let mut stream: Box<dyn LinkStream> = match &settings.ca_file {
        None => Box::new(tcp),
        Some(_) => {
            let connector = tls_connector(settings)?;
            let name = settings.server_name.clone().unwrap_or(host);
            let name = ServerName::try_from(name).map_err(|e| LinkError::Tls(e.to_string()))?;
            let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| LinkError::Timeout)??;
            Box::new(tls)
        }
    };
    let version = settings.version();
    let connect = connect_packet(settings, bridge_flag);
    let mut out = BytesMut::new();
    tern_mqtt::encode(&Packet::Connect(connect), version, &mut out)?;
    stream.write_all(&out).await?;
    let mut read_buf = BytesMut::with_capacity(64 * 1024);
    let connack = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            if let Some(packet) = tern_mqtt::decode(&mut read_buf, version, MAX_PACKET)? {
                return Ok::<Packet, LinkError>(packet);
            }
            if stream.read_buf(&mut read_buf).await? == 0 {
                return Err(LinkError::Closed);
            }
        }
    })
    .await
    .map_err(|_| LinkError::Timeout)??;
    let Packet::ConnAck(connack) = connack else {
        return Err(LinkError::Protocol("first packet is not CONNACK"));
    };
    if connack.code != 0 {
        return Err(LinkError::Refused(connack.code));
    }
    let send_window = connack
        .properties
        .receive_maximum
        .map_or(SEND_WINDOW, |max| usize::from(max).min(SEND_WINDOW));
    Ok(Link {
        stream,
        address: address.to_string(),
        version,
        read_buf,
        send_window,
    })
}

/// QoS 1/2 messages in flight to the remote at most (the remote's receive maximum may lower it).
const SEND_WINDOW: usize = 1024;

/// The CONNECT to the remote; `bridge`: with the 3.x bridge flag (`try_private`).
fn connect_packet(settings: &BridgeSettings, bridge: bool) -> Connect {
    let mut properties = Properties::default();
    if settings.version().is_v5() {
        // A persistent remote session keeps our subscriptions, and what it owes
        // us, while the link is down.
        properties.session_expiry_interval = Some(if settings.clean_start { 0 } else { u32::MAX });
        properties.receive_maximum = Some(1024);
    }
    Connect {
        protocol: settings.version(),
        clean_start: settings.clean_start,
        keep_alive: settings.keep_alive_secs,
        client_id: settings.remote_client_id(),
        will: None,
        username: settings.username.clone(),
        password: settings
            .password
            .as_ref()
            .map(|p| Bytes::copy_from_slice(p.as_bytes())),
        properties,
        bridge,
    }
}

fn tls_connector(settings: &BridgeSettings) -> Result<tokio_rustls::TlsConnector, LinkError> {
    let tls = |e: &dyn std::fmt::Display| LinkError::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &settings.ca_file {
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| tls(&e))? {
            roots.add(cert.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls(&e))?
    .with_root_certificates(roots);
    let config = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| tls(&e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls(&e))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| tls(&e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls(&e))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The SUBSCRIBE of every inbound rule's remote filter (None: no inbound rule).
/// 5.0: no-local (our own messages do not come back) and retain-as-published
/// (a retained message stays retained here).
pub(super) fn subscribe_packet(rules: &[TopicRule], packet_id: u16) -> Option<Packet> {
    let filters: Vec<SubscribeFilter> = rules
        .iter()
        .filter(|rule| rule.direction.inbound())
        .map(|rule| SubscribeFilter {
            filter: rule.remote_filter(),
            options: tern_mqtt::SubscriptionOptions {
                qos: QoS::from_u8(rule.qos).unwrap_or(QoS::AtMostOnce),
                no_local: true,
                retain_as_published: true,
                retain_handling: 0,
            },
        })
        .collect();
    (!filters.is_empty()).then(|| {
        Packet::Subscribe(Subscribe {
            packet_id,
            filters,
            properties: Properties::default(),
        })
    })
}
