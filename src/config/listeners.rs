//! The listener sections: `[mqtt]`, `[stomp]`, the TLS ones, `[websocket]`,
//! `[web]` and `[http]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The HTTP listener for operators (metrics, health, admin API, dashboard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    pub enabled: bool,
    /// Loopback by default: metrics and the admin API are not for the open network.
    pub bind: SocketAddr,
    /// `Authorization: Bearer <token>` for `/api/...`. Unset: the admin API answers 403.
    /// Never shown by `check-config` or `/api/config`.
    pub admin_token: Option<String>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 9090)),
            admin_token: None,
        }
    }
}

/// `max_keep_alive_secs` when unset: the most MQTT's 16-bit keep-alive can say
/// (as Mosquitto's and EMQX's `max_keepalive`), so only 0 ("never") is held.
pub const DEFAULT_MAX_KEEP_ALIVE_SECS: u16 = 65535;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerSettings {
    pub enabled: bool,
    pub bind: SocketAddr,
    /// Unset: anonymous clients are allowed only when the listener is bound to loopback.
    pub allow_anonymous: Option<bool>,
    /// Connections this listener holds at once; unset: only `limits.max_connections` applies.
    pub max_connections: Option<usize>,
    /// MQTT listeners: the longest keep-alive a client may have, seconds; a client
    /// asking for more, or for 0, is held to it (5.0 is told: Server Keep Alive).
    /// Unset: 65535; 0: no maximum (the client's keep-alive, even 0, stands).
    pub max_keep_alive_secs: Option<u16>,
}

impl ListenerSettings {
    pub(super) fn on(bind: &str) -> ListenerSettings {
        ListenerSettings {
            enabled: true,
            bind: bind
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
            allow_anonymous: None,
            max_connections: None,
            max_keep_alive_secs: None,
        }
    }

    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous
            .unwrap_or_else(|| self.bind.ip().is_loopback())
    }
}

/// A listener that speaks TLS (rustls, TLS 1.2 and 1.3 only) before the protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsListenerSettings {
    pub enabled: bool,
    pub bind: SocketAddr,
    /// Unset: anonymous clients are allowed only when the listener is bound to loopback.
    pub allow_anonymous: Option<bool>,
    /// Connections this listener holds at once; unset: only `limits.max_connections` applies.
    pub max_connections: Option<usize>,
    /// MQTT listeners: the longest keep-alive a client may have, seconds; a client
    /// asking for more, or for 0, is held to it (5.0 is told: Server Keep Alive).
    /// Unset: 65535; 0: no maximum (the client's keep-alive, even 0, stands).
    pub max_keep_alive_secs: Option<u16>,
    /// PEM certificate chain, server certificate first. Re-read on SIGHUP or when it changes.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the first certificate in `cert_file`.
    pub key_file: Option<PathBuf>,
    /// PEM CA certificates that client certificates must chain to (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
    /// Whether a verified client certificate names the user, so it needs no password.
    pub cert_username: CertUsername,
}

/// Whether clients of a TLS listener must show a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// A certificate is asked for; one that is shown must verify, but none is fine.
    Optional,
    /// The handshake fails without a certificate that verifies against `client_ca_file`.
    Required,
}

/// Which part of a verified client certificate becomes the username.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertUsername {
    /// The certificate does not name a user; clients log in as on plain TCP.
    None,
    /// The subject's common name.
    Cn,
    /// The first DNS, e-mail or URI subject alternative name.
    San,
}

/// The WebSocket listener: MQTT (`mqtt`, `mqttv3.1`) and STOMP (`v10.stomp`,
/// `v11.stomp`, `v12.stomp`) by `Sec-WebSocket-Protocol`, or by path (`/mqtt`,
/// `/stomp`) when the client offers none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketSettings {
    pub enabled: bool,
    pub bind: SocketAddr,
    /// Unset: anonymous clients are allowed only when the listener is bound to loopback.
    pub allow_anonymous: Option<bool>,
    /// Browser origins (`https://app.example.com`) allowed to open a WebSocket, or `*`.
    /// Empty: any origin when bound to loopback, none otherwise. A client that sends
    /// no `Origin` (not a browser) is always let through: the login and ACLs still apply.
    pub allowed_origins: Vec<String>,
    /// Largest WebSocket message (and frame) accepted, bytes; a larger one closes the connection (1009).
    pub max_message_size: usize,
    /// MQTT over this listener: the longest keep-alive a client may have, seconds; a client
    /// asking for more, or for 0, is held to it (5.0 is told: Server Keep Alive).
    /// Unset: 65535; 0: no maximum (the client's keep-alive, even 0, stands).
    pub max_keep_alive_secs: Option<u16>,
}

impl WebSocketSettings {
    /// The part every listener has: where it binds and who may be anonymous.
    pub fn listener(&self) -> ListenerSettings {
        ListenerSettings {
            enabled: self.enabled,
            bind: self.bind,
            allow_anonymous: self.allow_anonymous,
            // Only the broker-wide limits.max_connections applies here.
            max_connections: None,
            max_keep_alive_secs: self.max_keep_alive_secs,
        }
    }

    /// Whether a browser page from `origin` may connect.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        if self.allowed_origins.is_empty() {
            return self.bind.ip().is_loopback();
        }
        let origin = origin.trim_end_matches('/');
        self.allowed_origins.iter().any(|allowed| {
            allowed == "*" || allowed.trim_end_matches('/').eq_ignore_ascii_case(origin)
        })
    }
}

impl Default for WebSocketSettings {
    fn default() -> Self {
        WebSocketSettings {
            enabled: true,
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            allow_anonymous: None,
            allowed_origins: Vec::new(),
            // As limits.max_packet_size: a 1 MiB message with its headers fits.
            max_message_size: 4 * 1024 * 1024,
            max_keep_alive_secs: None,
        }
    }
}

/// Static files on the WebSocket listener's port (plain HTTP GET), so one
/// process serves a web app and the WebSocket it connects to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSettings {
    /// Directory served at `/` (`index.html` for directories). Unset: no files are served.
    pub root: Option<PathBuf>,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        ListenerSettings::on("127.0.0.1:0")
    }
}

impl TlsListenerSettings {
    pub(super) fn off(bind: &str) -> TlsListenerSettings {
        TlsListenerSettings {
            enabled: false,
            bind: bind
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
            allow_anonymous: None,
            max_connections: None,
            max_keep_alive_secs: None,
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            client_auth: ClientAuth::None,
            cert_username: CertUsername::None,
        }
    }

    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous
            .unwrap_or_else(|| self.bind.ip().is_loopback())
    }
}

impl Default for TlsListenerSettings {
    fn default() -> Self {
        TlsListenerSettings::off("127.0.0.1:0")
    }
}
