//! Settings: built-in defaults < config file < `TERN_*` environment variables,
//! validated once at start so a bad value stops the broker with the key named.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::retained_set::RetainedLimits;
use crate::core::session::{OverflowPolicy, QueueLimits};
use crate::core::topic_limits::TopicLimits;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("cannot load ACL rules from `auth.acl_file` {path}: {source}")]
    AclFile {
        path: PathBuf,
        source: config::ConfigError,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub log: LogSettings,
    pub mqtt: ListenerSettings,
    pub stomp: ListenerSettings,
    /// MQTT over TLS; off by default because it needs a certificate.
    pub mqtt_tls: TlsListenerSettings,
    /// STOMP over TLS; off by default because it needs a certificate.
    pub stomp_tls: TlsListenerSettings,
    /// MQTT and STOMP over WebSocket over TLS (WSS); the `[websocket]` options
    /// (origins, message size) apply to it too.
    pub websocket_tls: TlsListenerSettings,
    pub auth: AuthSettings,
    /// `[[acl]]` rules (then those of `auth.acl_file`). None at all: everything is
    /// allowed except `$SYS/#`; any rule: what no rule allows is denied.
    pub acl: Vec<AclRule>,
    pub limits: Limits,
    pub storage: StorageSettings,
    /// MQTT and STOMP over WebSocket on one port, chosen by subprotocol or path.
    pub websocket: WebSocketSettings,
    /// Static files served on the WebSocket listener (the web example).
    pub web: WebSettings,
    /// The operations listener: Prometheus `/metrics`, `/healthz`, the admin API.
    pub http: HttpSettings,
    /// `$SYS/broker/...` topics the broker publishes about itself.
    pub sys: SysSettings,
}

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

/// `$SYS/broker/...` topics, retained, like Mosquitto's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SysSettings {
    /// Seconds between two publications; 0 turns the `$SYS` topics off.
    pub interval_secs: u64,
}

impl Default for SysSettings {
    fn default() -> Self {
        SysSettings { interval_secs: 10 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A tracing filter (`info`, `tern=debug`); RUST_LOG wins when set.
    pub level: String,
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
    fn on(bind: &str) -> ListenerSettings {
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// `user:$argon2id$…` lines made with `tern passwd`. Unset: nobody can log in with
    /// a password, and a username sent without one is not trusted (the client is anonymous).
    pub password_file: Option<PathBuf>,
    /// A TOML file of more `[[acl]]` rules, appended to those in the config file.
    pub acl_file: Option<PathBuf>,
    /// A session belongs to the user that created it: another user (or anonymous)
    /// may not resume it, take over its connection or discard it. Off only for
    /// deployments where every client is anonymous or client ids are trusted.
    pub session_owner_check: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            password_file: None,
            acl_file: None,
            session_owner_check: true,
        }
    }
}

/// One `[[acl]]` rule: who (exactly one of `user`, `client_id`, `anonymous`, `all`),
/// `allow` or `deny`, what (`publish`, `subscribe`, `both`) and on which topic filter
/// (`%u` is the username, `%c` the client id: `devices/%c/#`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AclRule {
    pub user: Option<String>,
    pub client_id: Option<String>,
    /// Applies to clients that did not log in.
    pub anonymous: bool,
    /// Applies to every client.
    pub all: bool,
    pub allow: Option<AclAccess>,
    pub deny: Option<AclAccess>,
    pub topic: String,
}

/// What an ACL rule allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclAccess {
    Publish,
    Subscribe,
    Both,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Connections held at once over all listeners; more are refused.
    pub max_connections: usize,
    /// Largest MQTT packet accepted (whole packet, bytes); told to MQTT 5 clients in CONNACK.
    pub max_packet_size: u32,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Unacknowledged QoS 1/2 messages sent to one client at once (3.x; MQTT 5 clients set their own receive maximum, capped by this).
    pub max_inflight: u16,
    /// QoS 1/2 messages a client may have unacknowledged towards the broker (MQTT 5 receive maximum).
    pub receive_maximum: u16,
    /// Messages queued per session (online backlog or offline) before the overflow policy applies.
    pub max_queued_messages: usize,
    /// Topic and payload bytes queued per session before the overflow policy applies (0: no byte limit).
    pub max_queued_bytes: usize,
    pub queue_overflow: OverflowPolicy,
    /// Topic aliases an MQTT 5 client may use towards the broker (0 disables them).
    pub topic_alias_maximum: u16,
    /// Longest session expiry a client may ask for, seconds (`4294967295` = no cap, sessions may never expire).
    pub max_session_expiry_secs: u32,
    /// Levels a topic name or filter may have (PUBLISH, SUBSCRIBE, will, STOMP destination).
    pub max_topic_levels: usize,
    /// Bytes a topic name or filter may have (at most 65535, MQTT's string length).
    pub max_topic_length: usize,
    /// Retained messages the broker keeps (0: no cap); one more on a new topic is refused.
    pub max_retained_messages: usize,
    /// Topic and payload bytes of all retained messages (0: no cap).
    pub max_retained_bytes: usize,
    /// Subscriptions one client may hold (MQTT filters, STOMP SUBSCRIBE ids); one more is
    /// refused (MQTT 5 SUBACK 0x97, 3.x 0x80, STOMP ERROR).
    pub max_subscriptions_per_client: usize,
    /// Messages a second one client may publish (0: no limit). Over it, an MQTT 5
    /// client is disconnected with 0x96; MQTT 3.x and STOMP clients are read more slowly.
    pub max_publish_rate: u32,
    /// Bytes all connections together may hold of what clients have not finished
    /// sending: unfinished packets and frames (each past its first 256 bytes) and
    /// STOMP transactions not yet committed (0: no budget). A connection that would
    /// go over it is refused (MQTT 5 DISCONNECT 0x97, STOMP ERROR) and closed.
    pub max_buffered_bytes: usize,
    /// Seconds a packet or frame may take from its first byte to its last; a
    /// connection still sending one after that is closed, whatever its keep-alive
    /// or heart-beat (0: no limit).
    pub frame_timeout_secs: u64,
    /// Messages one point-to-point queue holds, waiting plus unacknowledged; one more is refused (STOMP ERROR, logged for MQTT).
    pub queue_max_messages: usize,
    /// Largest STOMP frame accepted (command, headers, body; bytes).
    pub stomp_max_frame_size: usize,
    /// Header lines in one STOMP frame.
    pub stomp_max_headers: usize,
    /// Bytes of one STOMP header line.
    pub stomp_max_header_len: usize,
    /// STOMP heart-beat interval the server asks of clients, ms (CONNECTED `heart-beat:sx,N`:
    /// a client beats every max(its cx, N)), also the `sx` offered to a client that wants no
    /// beats; 0 = no heart-beats either way. A client that promised heart-beats is dropped
    /// after twice the negotiated interval of silence.
    pub stomp_heartbeat_ms: u64,
    /// Shortest server → client heart-beat interval a STOMP client may ask for, ms: a client
    /// sending `heart-beat:cx,cy` with cy > 0 gets a beat every max(cy, this).
    pub stomp_min_heartbeat_ms: u64,
    /// Messages a STOMP connection may hold unacknowledged (ack=client/client-individual) before deliveries pause;
    /// also how many messages of one queue it holds unacknowledged.
    pub stomp_max_unacked: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// False keeps everything in memory: nothing survives a restart.
    pub enabled: bool,
    /// Directory of the store file `tern.redb`.
    pub data_dir: PathBuf,
    /// When an acknowledged message is on disk: "batched" (group commit, ack after
    /// commit), "sync" (one commit per message) or "none" (ack at once, fsync about once a second).
    pub durability: crate::store::Durability,
    /// Messages the store may hold (owed to persistent sessions plus queued);
    /// beyond it, QoS 1/2 publishes are refused (MQTT 5 0x97, STOMP ERROR).
    pub max_messages: u64,
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

impl StorageSettings {
    pub fn store_file(&self) -> PathBuf {
        self.data_dir.join("tern.redb")
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            log: LogSettings::default(),
            mqtt: ListenerSettings::on("127.0.0.1:1883"),
            stomp: ListenerSettings::on("127.0.0.1:61613"),
            mqtt_tls: TlsListenerSettings::off("127.0.0.1:8883"),
            stomp_tls: TlsListenerSettings::off("127.0.0.1:61614"),
            websocket_tls: TlsListenerSettings::off("127.0.0.1:8443"),
            auth: AuthSettings::default(),
            acl: Vec::new(),
            limits: Limits::default(),
            storage: StorageSettings::default(),
            websocket: WebSocketSettings::default(),
            web: WebSettings::default(),
            http: HttpSettings::default(),
            sys: SysSettings::default(),
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".into(),
        }
    }
}

impl Default for ListenerSettings {
    fn default() -> Self {
        ListenerSettings::on("127.0.0.1:0")
    }
}

impl TlsListenerSettings {
    fn off(bind: &str) -> TlsListenerSettings {
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

    /// Checks the section named `keys`: an enabled listener needs a certificate and key;
    /// client certificates need a CA to verify them against.
    fn validate(&self, keys: &TlsKeys) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_string(),
        };
        let blank = |path: &Option<PathBuf>| path.as_ref().is_none_or(|p| p.as_os_str().is_empty());
        if self.enabled && blank(&self.cert_file) {
            return Err(invalid(
                keys.cert_file,
                "is required when the TLS listener is enabled (a PEM certificate chain)",
            ));
        }
        if self.enabled && blank(&self.key_file) {
            return Err(invalid(
                keys.key_file,
                "is required when the TLS listener is enabled (a PEM private key)",
            ));
        }
        if self.client_auth != ClientAuth::None && blank(&self.client_ca_file) {
            return Err(invalid(
                keys.client_ca_file,
                "is required when client_auth is \"optional\" or \"required\"",
            ));
        }
        if self.cert_username != CertUsername::None && self.client_auth == ClientAuth::None {
            return Err(invalid(
                keys.cert_username,
                "needs client_auth = \"optional\" or \"required\" (no certificate is asked for)",
            ));
        }
        Ok(())
    }
}

impl Default for TlsListenerSettings {
    fn default() -> Self {
        TlsListenerSettings::off("127.0.0.1:0")
    }
}

/// The full key names of one TLS listener section, for errors.
struct TlsKeys {
    cert_file: &'static str,
    key_file: &'static str,
    client_ca_file: &'static str,
    cert_username: &'static str,
}

const MQTT_TLS_KEYS: TlsKeys = TlsKeys {
    cert_file: "mqtt_tls.cert_file",
    key_file: "mqtt_tls.key_file",
    client_ca_file: "mqtt_tls.client_ca_file",
    cert_username: "mqtt_tls.cert_username",
};

const WEBSOCKET_TLS_KEYS: TlsKeys = TlsKeys {
    cert_file: "websocket_tls.cert_file",
    key_file: "websocket_tls.key_file",
    client_ca_file: "websocket_tls.client_ca_file",
    cert_username: "websocket_tls.cert_username",
};

const STOMP_TLS_KEYS: TlsKeys = TlsKeys {
    cert_file: "stomp_tls.cert_file",
    key_file: "stomp_tls.key_file",
    client_ca_file: "stomp_tls.client_ca_file",
    cert_username: "stomp_tls.cert_username",
};

/// The shape of `auth.acl_file`: nothing but `[[acl]]` tables.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AclFile {
    acl: Vec<AclRule>,
}

impl Settings {
    /// `max_connections` of the listener named `name` (as the server names them).
    pub fn listener_max_connections(&self, name: &str) -> Option<usize> {
        match name {
            "mqtt" => self.mqtt.max_connections,
            "stomp" => self.stomp.max_connections,
            "mqtt_tls" => self.mqtt_tls.max_connections,
            "stomp_tls" => self.stomp_tls.max_connections,
            "websocket_tls" => self.websocket_tls.max_connections,
            _ => None,
        }
    }

    /// The longest keep-alive an MQTT client of the listener named `name` may
    /// have (0: no maximum); see `max_keep_alive_secs`.
    pub fn mqtt_max_keep_alive(&self, name: &str) -> u16 {
        let configured = match name {
            "mqtt" => self.mqtt.max_keep_alive_secs,
            "mqtt_tls" => self.mqtt_tls.max_keep_alive_secs,
            "ws" => self.websocket.max_keep_alive_secs,
            "websocket_tls" => self.websocket_tls.max_keep_alive_secs,
            _ => None,
        };
        configured.unwrap_or(DEFAULT_MAX_KEEP_ALIVE_SECS)
    }

    /// Copies what a reload may change live (limits, listener caps) from `other`.
    pub fn take_live_limits(&mut self, other: &Settings) {
        self.limits = other.limits.clone();
        self.mqtt.max_connections = other.mqtt.max_connections;
        self.stomp.max_connections = other.stomp.max_connections;
        self.mqtt_tls.max_connections = other.mqtt_tls.max_connections;
        self.stomp_tls.max_connections = other.stomp_tls.max_connections;
        self.websocket_tls.max_connections = other.websocket_tls.max_connections;
    }
}

impl Limits {
    /// The limits every session queue gets.
    pub fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            max_queued: self.max_queued_messages,
            max_queued_bytes: self.max_queued_bytes,
            overflow: self.queue_overflow,
        }
    }

    /// How deep and long a topic a client names may be.
    pub fn topic_limits(&self) -> TopicLimits {
        TopicLimits {
            max_levels: self.max_topic_levels,
            max_length: self.max_topic_length,
        }
    }

    /// Caps on retained messages.
    pub fn retained_limits(&self) -> RetainedLimits {
        RetainedLimits {
            max_messages: self.max_retained_messages,
            max_bytes: self.max_retained_bytes,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 100_000,
            // Room for a 1 MiB message with its topic, properties or headers.
            max_packet_size: 4 * 1024 * 1024,
            connect_timeout_secs: 10,
            max_inflight: 100,
            receive_maximum: 1024,
            max_queued_messages: 100_000,
            max_queued_bytes: 64 * 1024 * 1024,
            queue_overflow: OverflowPolicy::DropOldest,
            topic_alias_maximum: 64,
            max_session_expiry_secs: u32::MAX,
            max_topic_levels: 128,
            max_topic_length: 65_535,
            max_retained_messages: 1_000_000,
            max_retained_bytes: 1024 * 1024 * 1024,
            max_subscriptions_per_client: 1024,
            max_publish_rate: 0,
            // 128 frames of the largest size (4 MiB) at once, or 8 full
            // transactions (64 MiB); with the buffers' growth, about 1 GiB at most.
            max_buffered_bytes: 512 * 1024 * 1024,
            // A 4 MiB packet needs 1.1 Mbit/s to arrive within it.
            frame_timeout_secs: 30,
            queue_max_messages: 100_000,
            stomp_max_frame_size: 4 * 1024 * 1024,
            stomp_max_headers: 64,
            stomp_max_header_len: 8 * 1024,
            stomp_heartbeat_ms: 10_000,
            stomp_min_heartbeat_ms: 500,
            stomp_max_unacked: 1_000,
        }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            enabled: true,
            data_dir: PathBuf::from("./data"),
            durability: crate::store::Durability::Batched,
            max_messages: 10_000_000,
        }
    }
}

impl Settings {
    /// Defaults, then `file` if given, then `TERN_*` variables (`TERN_MQTT__BIND=0.0.0.0:1883`).
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let defaults = config::Config::try_from(&Settings::default())?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Missing(path.to_path_buf()));
            }
            builder = builder.add_source(config::File::from(path).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("TERN")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(setting_env_vars())),
        );
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        if let Some(path) = settings.auth.acl_file.clone() {
            settings.acl.extend(load_acl_file(&path)?);
        }
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_string(),
        };
        for (key, set) in [
            ("stomp.max_keep_alive_secs", self.stomp.max_keep_alive_secs),
            (
                "stomp_tls.max_keep_alive_secs",
                self.stomp_tls.max_keep_alive_secs,
            ),
        ] {
            if set.is_some() {
                return Err(invalid(
                    key,
                    "applies to MQTT listeners only (STOMP has heart-beats)",
                ));
            }
        }
        let l = &self.limits;
        if l.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be at least 1"));
        }
        if !(64..=268_435_460).contains(&l.max_packet_size) {
            return Err(invalid(
                "limits.max_packet_size",
                "must be between 64 and 268435460 bytes",
            ));
        }
        if l.connect_timeout_secs == 0 {
            return Err(invalid("limits.connect_timeout_secs", "must be at least 1"));
        }
        if l.max_inflight == 0 {
            return Err(invalid("limits.max_inflight", "must be at least 1"));
        }
        if l.receive_maximum == 0 {
            return Err(invalid("limits.receive_maximum", "must be at least 1"));
        }
        if l.max_queued_messages == 0 {
            return Err(invalid("limits.max_queued_messages", "must be at least 1"));
        }
        if l.max_subscriptions_per_client == 0 {
            return Err(invalid(
                "limits.max_subscriptions_per_client",
                "must be at least 1",
            ));
        }
        if l.max_topic_levels == 0 {
            return Err(invalid("limits.max_topic_levels", "must be at least 1"));
        }
        if !(1..=crate::core::topic::MAX_TOPIC_LEN).contains(&l.max_topic_length) {
            return Err(invalid(
                "limits.max_topic_length",
                "must be between 1 and 65535 bytes",
            ));
        }
        if l.queue_max_messages == 0 {
            return Err(invalid("limits.queue_max_messages", "must be at least 1"));
        }
        if self.storage.max_messages == 0 {
            return Err(invalid("storage.max_messages", "must be at least 1"));
        }
        if l.stomp_max_frame_size < 64 {
            return Err(invalid(
                "limits.stomp_max_frame_size",
                "must be at least 64 bytes",
            ));
        }
        if l.stomp_max_headers == 0 {
            return Err(invalid("limits.stomp_max_headers", "must be at least 1"));
        }
        if l.stomp_max_header_len < 64 {
            return Err(invalid(
                "limits.stomp_max_header_len",
                "must be at least 64 bytes",
            ));
        }
        if l.stomp_max_unacked == 0 {
            return Err(invalid("limits.stomp_max_unacked", "must be at least 1"));
        }
        if l.stomp_min_heartbeat_ms == 0 {
            // 0 would let a client ask for a beat every millisecond.
            return Err(invalid(
                "limits.stomp_min_heartbeat_ms",
                "must be at least 1",
            ));
        }
        if self.log.level.trim().is_empty() {
            return Err(invalid("log.level", "must not be empty"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                "not a valid level or filter (try info, debug, tern=trace)",
            ));
        }
        let binds = [
            ("mqtt.bind", self.mqtt.enabled, self.mqtt.bind),
            ("stomp.bind", self.stomp.enabled, self.stomp.bind),
            ("mqtt_tls.bind", self.mqtt_tls.enabled, self.mqtt_tls.bind),
            (
                "stomp_tls.bind",
                self.stomp_tls.enabled,
                self.stomp_tls.bind,
            ),
            (
                "websocket.bind",
                self.websocket.enabled,
                self.websocket.bind,
            ),
            (
                "websocket_tls.bind",
                self.websocket_tls.enabled,
                self.websocket_tls.bind,
            ),
            ("http.bind", self.http.enabled, self.http.bind),
        ];
        for (i, (key, enabled, bind)) in binds.iter().enumerate() {
            let taken = binds[..i]
                .iter()
                .find(|(_, on, other)| *on && other == bind && bind.port() != 0);
            if let (true, Some((earlier, _, _))) = (enabled, taken) {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("is the same address as {earlier}"),
                });
            }
        }
        if self.websocket.max_message_size < 64 {
            return Err(invalid(
                "websocket.max_message_size",
                "must be at least 64 bytes",
            ));
        }
        if let Some(root) = &self.web.root {
            if !root.is_dir() {
                return Err(invalid(
                    "web.root",
                    &format!("{} is not a directory", root.display()),
                ));
            }
        }
        self.mqtt_tls.validate(&MQTT_TLS_KEYS)?;
        self.stomp_tls.validate(&STOMP_TLS_KEYS)?;
        self.websocket_tls.validate(&WEBSOCKET_TLS_KEYS)?;
        if let Err(e) = crate::auth::acl::Acl::new(&self.acl) {
            return Err(ConfigError::Invalid {
                key: "acl",
                reason: e.to_string(),
            });
        }
        Ok(())
    }

    /// These settings with secrets (the admin token) blanked, for display.
    pub fn redacted(&self) -> Settings {
        let mut shown = self.clone();
        if shown.http.admin_token.is_some() {
            shown.http.admin_token = Some("<redacted>".into());
        }
        shown
    }

    /// Settings for tests and embedding: every listener on 127.0.0.1 port 0, no store.
    pub fn ephemeral() -> Settings {
        let mut settings = Settings::default();
        settings.mqtt.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.stomp.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.mqtt_tls.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.stomp_tls.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.websocket_tls.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.websocket.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.http.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        // No `$SYS` messages in the way of tests' retained and routing counts; tests of `$SYS` turn it on.
        settings.sys.interval_secs = 0;
        // In memory: tests that need the store give each server its own directory.
        settings.storage.enabled = false;
        settings
    }
}

/// Reads the `[[acl]]` tables of `auth.acl_file`.
fn load_acl_file(path: &Path) -> Result<Vec<AclRule>, ConfigError> {
    if !path.exists() {
        return Err(ConfigError::AclFile {
            path: path.to_path_buf(),
            source: config::ConfigError::Message("the file does not exist".into()),
        });
    }
    let wrap = |source| ConfigError::AclFile {
        path: path.to_path_buf(),
        source,
    };
    let file: AclFile = config::Config::builder()
        .add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(true),
        )
        .build()
        .map_err(wrap)?
        .try_deserialize()
        .map_err(wrap)?;
    Ok(file.acl)
}

/// `TERN_<SECTION>__<KEY>` variables only: a variable without `__` (say `TERN_BIN`
/// of a test harness) cannot name a setting and must not stop the broker.
fn setting_env_vars() -> config::Map<String, String> {
    std::env::vars()
        .filter(|(name, _)| {
            name.strip_prefix("TERN_")
                .is_some_and(|rest| rest.contains("__"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_use_documented_ports() {
        let s = Settings::default();
        s.validate().unwrap();
        assert_eq!(s.mqtt.bind.to_string(), "127.0.0.1:1883");
        assert_eq!(s.stomp.bind.to_string(), "127.0.0.1:61613");
        assert_eq!(s.storage.data_dir, PathBuf::from("./data"));
        assert!(s.mqtt.anonymous_allowed());
    }

    #[test]
    fn anonymous_defaults_to_loopback_only() {
        let mut l = ListenerSettings::on("0.0.0.0:1883");
        assert!(!l.anonymous_allowed());
        l.allow_anonymous = Some(true);
        assert!(l.anonymous_allowed());
    }

    #[test]
    fn file_values_override_defaults_and_bad_values_name_the_key() {
        let dir = std::env::temp_dir().join(format!("tern-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "[mqtt]\nbind = \"127.0.0.1:1999\"\n[limits]\nmax_inflight = 7\n",
        )
        .unwrap();
        let s = Settings::load(Some(&good)).unwrap();
        assert_eq!(s.mqtt.bind.port(), 1999);
        assert_eq!(s.limits.max_inflight, 7);

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[limits]\nmax_inflight = 0\n").unwrap();
        let err = Settings::load(Some(&bad)).unwrap_err().to_string();
        assert!(err.contains("limits.max_inflight"), "{err}");

        let typo = dir.join("typo.toml");
        std::fs::write(&typo, "[mqtt]\nbnd = \"127.0.0.1:1\"\n").unwrap();
        let err = Settings::load(Some(&typo)).unwrap_err().to_string();
        assert!(err.contains("bnd"), "{err}");

        let wrong_type = dir.join("type.toml");
        std::fs::write(&wrong_type, "[mqtt]\nbind = \"not an address\"\n").unwrap();
        let err = Settings::load(Some(&wrong_type)).unwrap_err().to_string();
        assert!(err.contains("bind"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn http_listener_defaults_to_loopback_9090_without_admin_token() {
        let s = Settings::default();
        assert!(s.http.enabled);
        assert_eq!(s.http.bind.to_string(), "127.0.0.1:9090");
        assert_eq!(s.http.admin_token, None);
        assert_eq!(s.sys.interval_secs, 10);
        assert_eq!(Settings::ephemeral().http.bind.port(), 0);
        let s = load_text("[http]\nadmin_token = \"t0k\"\n[sys]\ninterval_secs = 2\n").unwrap();
        assert_eq!(s.http.admin_token.as_deref(), Some("t0k"));
        assert_eq!(s.sys.interval_secs, 2);
        assert_eq!(
            invalid_key(load_text("[http]\nbind = \"127.0.0.1:1883\"\n")),
            "http.bind"
        );
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = Settings::load(Some(Path::new("/nonexistent/tern.toml"))).unwrap_err();
        assert!(matches!(err, ConfigError::Missing(_)));
    }

    fn load_text(text: &str) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().map_err(|e| ConfigError::Invalid {
            key: "test",
            reason: e.to_string(),
        })?;
        let path = dir.path().join("tern.toml");
        std::fs::write(&path, text).map_err(|e| ConfigError::Invalid {
            key: "test",
            reason: e.to_string(),
        })?;
        Settings::load(Some(&path))
    }

    fn invalid_key(result: Result<Settings, ConfigError>) -> &'static str {
        match result {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn tls_listeners_default_off_on_documented_ports() {
        let s = Settings::default();
        assert!(!s.mqtt_tls.enabled && !s.stomp_tls.enabled);
        assert_eq!(s.mqtt_tls.bind.to_string(), "127.0.0.1:8883");
        assert_eq!(s.stomp_tls.bind.to_string(), "127.0.0.1:61614");
        assert_eq!(s.mqtt_tls.client_auth, ClientAuth::None);
        assert_eq!(s.mqtt_tls.cert_username, CertUsername::None);
        assert!(s.mqtt_tls.anonymous_allowed());
        assert_eq!(s.auth, AuthSettings::default());
        assert!(s.acl.is_empty());
        let ephemeral = Settings::ephemeral();
        assert_eq!(ephemeral.mqtt_tls.bind.port(), 0);
        ephemeral.validate().unwrap();
    }

    #[test]
    fn tls_listener_settings_load_from_the_file() {
        let s = load_text(
            "[mqtt_tls]\nenabled = true\nbind = \"0.0.0.0:8883\"\ncert_file = \"certs/dev/server.pem\"\n\
             key_file = \"certs/dev/server.key\"\nclient_ca_file = \"certs/dev/ca.pem\"\n\
             client_auth = \"required\"\ncert_username = \"cn\"\n",
        )
        .unwrap();
        assert!(s.mqtt_tls.enabled);
        assert_eq!(s.mqtt_tls.client_auth, ClientAuth::Required);
        assert_eq!(s.mqtt_tls.cert_username, CertUsername::Cn);
        assert_eq!(
            s.mqtt_tls.client_ca_file.as_deref(),
            Some(Path::new("certs/dev/ca.pem"))
        );
        assert!(!s.mqtt_tls.anonymous_allowed());
    }

    #[test]
    fn enabled_tls_listener_needs_certificate_and_key() {
        assert_eq!(
            invalid_key(load_text("[mqtt_tls]\nenabled = true\n")),
            "mqtt_tls.cert_file"
        );
        assert_eq!(
            invalid_key(load_text(
                "[stomp_tls]\nenabled = true\ncert_file = \"s.pem\"\n"
            )),
            "stomp_tls.key_file"
        );
        assert_eq!(
            invalid_key(load_text(
                "[mqtt_tls]\nenabled = true\ncert_file = \"s.pem\"\nkey_file = \"s.key\"\nclient_auth = \"optional\"\n"
            )),
            "mqtt_tls.client_ca_file"
        );
        assert_eq!(
            invalid_key(load_text("[stomp_tls]\ncert_username = \"san\"\n")),
            "stomp_tls.cert_username"
        );
        let err = load_text("[mqtt_tls]\nclient_auth = \"sometimes\"\n").unwrap_err();
        assert!(err.to_string().contains("sometimes"), "{err}");
    }

    #[test]
    fn listeners_may_not_share_an_address() {
        let err = load_text(
            "[mqtt_tls]\nenabled = true\nbind = \"127.0.0.1:1883\"\ncert_file = \"a\"\nkey_file = \"b\"\n",
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "mqtt_tls.bind",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("mqtt.bind"), "{err}");
        assert_eq!(
            invalid_key(load_text("[stomp]\nbind = \"127.0.0.1:1883\"\n")),
            "stomp.bind"
        );
    }

    #[test]
    fn acl_tables_load_and_bad_rules_name_their_position() {
        let s = load_text(
            "[[acl]]\nuser = \"alice\"\nallow = \"both\"\ntopic = \"home/#\"\n\
             [[acl]]\nall = true\ndeny = \"publish\"\ntopic = \"devices/%c/config\"\n",
        )
        .unwrap();
        assert_eq!(s.acl.len(), 2);
        assert_eq!(s.acl[0].user.as_deref(), Some("alice"));
        assert_eq!(s.acl[0].allow, Some(AclAccess::Both));
        assert!(s.acl[1].all);
        assert_eq!(s.acl[1].deny, Some(AclAccess::Publish));

        let err = load_text(
            "[[acl]]\nall = true\nallow = \"both\"\ntopic = \"#\"\n[[acl]]\nall = true\nallow = \"both\"\ntopic = \"a/#/b\"\n",
        )
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { key: "acl", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("rule 2"), "{err}");
        let err = load_text("[[acl]]\nall = true\nallow = \"read\"\ntopic = \"#\"\n").unwrap_err();
        assert!(err.to_string().contains("read"), "{err}");
        let err = load_text("[[acl]]\nall = true\nallow = \"both\"\ntopik = \"#\"\n").unwrap_err();
        assert!(err.to_string().contains("topik"), "{err}");
    }

    #[test]
    fn acl_file_rules_are_appended() {
        let dir = tempfile::tempdir().unwrap();
        let acl = dir.path().join("acl.toml");
        std::fs::write(
            &acl,
            "[[acl]]\nanonymous = true\nallow = \"subscribe\"\ntopic = \"public/#\"\n",
        )
        .unwrap();
        let config = dir.path().join("tern.toml");
        std::fs::write(
            &config,
            format!(
                "[auth]\nacl_file = {:?}\n[[acl]]\nuser = \"alice\"\nallow = \"both\"\ntopic = \"#\"\n",
                acl.display().to_string()
            ),
        )
        .unwrap();
        let s = Settings::load(Some(&config)).unwrap();
        assert_eq!(s.acl.len(), 2);
        assert_eq!(s.acl[0].user.as_deref(), Some("alice"));
        assert!(s.acl[1].anonymous);

        std::fs::write(&acl, "[[acl]]\nall = true\ntopic = \"#\"\n").unwrap();
        let err = Settings::load(Some(&config)).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { key: "acl", .. }),
            "{err}"
        );

        std::fs::remove_file(&acl).unwrap();
        let err = Settings::load(Some(&config)).unwrap_err();
        assert!(matches!(err, ConfigError::AclFile { .. }), "{err}");
        assert!(err.to_string().contains("acl.toml"), "{err}");
    }

    #[test]
    fn auth_password_file_is_a_path() {
        let s = load_text("[auth]\npassword_file = \"/etc/tern/passwd\"\n").unwrap();
        assert_eq!(
            s.auth.password_file.as_deref(),
            Some(Path::new("/etc/tern/passwd"))
        );
    }
    #[test]
    fn websocket_origins_any_on_loopback_else_only_listed() {
        let mut ws = WebSocketSettings::default();
        assert_eq!(ws.bind.to_string(), "127.0.0.1:8080");
        assert!(ws.origin_allowed("http://anything.example"));
        ws.bind = "0.0.0.0:8080".parse().unwrap();
        assert!(!ws.origin_allowed("http://anything.example"));
        ws.allowed_origins = vec!["https://app.example.com/".into()];
        assert!(ws.origin_allowed("https://APP.example.com"));
        assert!(!ws.origin_allowed("https://app.example.com.evil"));
        ws.allowed_origins.push("*".into());
        assert!(ws.origin_allowed("http://anything.example"));
    }

    #[test]
    fn websocket_and_web_values_are_checked() {
        let mut s = Settings::default();
        s.websocket.max_message_size = 10;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("websocket.max_message_size"), "{e}");
        let mut s = Settings::default();
        s.web.root = Some(PathBuf::from("/nonexistent/tern-web-root"));
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("web.root"), "{e}");
        let mut s = Settings::default();
        s.websocket.bind = s.mqtt.bind;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("websocket.bind"), "{e}");
    }
}
