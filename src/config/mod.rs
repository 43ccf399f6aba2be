//! Settings: built-in defaults < config file < `TERN_*` environment variables,
//! validated once at start so a bad value stops the broker with the key named.
//!
//! Each concern's settings type lives with the concern where it has one
//! (`[auth]` and `[[acl]]`: `crate::auth::settings`); this module assembles them.
//!
//! - this file: [`Settings`] (the whole file), [`ConfigError`], per-listener look-ups.
//! - `listeners.rs`: the listener sections (plain, TLS, WebSocket, web, HTTP).
//! - `sections.rs`: `[log]`, `[limits]`, `[storage]`, `[sys]`.
//! - `load.rs`: defaults, file, environment and `auth.acl_file` into [`Settings`].
//! - `validate.rs`: what types alone cannot check, naming the key.

mod listeners;
mod load;
#[cfg(test)]
mod schema_tests;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::auth::settings::{AclAccess, AclRule, AuthSettings};
pub use crate::bridge::settings::BridgeSettings;
pub use crate::cluster::settings::ClusterSettings;
pub use crate::core::schema::SchemaSettings;
pub use crate::core::stream::StreamSettings;
pub use listeners::{
    CertUsername, ClientAuth, HttpSettings, ListenerSettings, TlsListenerSettings, WebSettings,
    WebSocketSettings, DEFAULT_MAX_KEEP_ALIVE_SECS,
};
pub use sections::{Limits, LogSettings, StorageSettings, StoreBackend, SysSettings};

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
    /// `[[stream]]` tables: durable topic streams (they need the store).
    pub stream: Vec<StreamSettings>,
    /// `[[schema]]` tables: payload schemas bound to topic filters, checked on
    /// publish (files relative to the config file's directory).
    pub schema: Vec<SchemaSettings>,
    /// Cluster mode: several nodes sharing one NATS deployment (off by default).
    pub cluster: ClusterSettings,
    /// `[[bridge]]` tables: remote brokers this one connects to (none by default).
    pub bridge: Vec<BridgeSettings>,
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
            stream: Vec::new(),
            schema: Vec::new(),
            cluster: ClusterSettings::default(),
            bridge: Vec::new(),
        }
    }
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

impl Settings {
    /// These settings with secrets (the admin token) blanked, for display.
    pub fn redacted(&self) -> Settings {
        let mut shown = self.clone();
        if shown.http.admin_token.is_some() {
            shown.http.admin_token = Some("<redacted>".into());
        }
        shown.cluster = shown.cluster.redacted();
        for bridge in &mut shown.bridge {
            if bridge.password.is_some() {
                bridge.password = Some("<redacted>".into());
            }
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
