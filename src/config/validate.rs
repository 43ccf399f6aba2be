//! What types alone cannot check; every error names its key.

use std::path::PathBuf;

use crate::auth::Acl;

use super::{CertUsername, ClientAuth, ConfigError, Settings, TlsListenerSettings};

impl Settings {
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
        match self.storage.cache_bytes() {
            None => {
                return Err(invalid(
                    "storage.cache_size",
                    "must be a size like \"64MiB\" or \"1GiB\"",
                ))
            }
            Some(n) if n < super::StorageSettings::MIN_CACHE_SIZE => {
                return Err(invalid("storage.cache_size", "must be at least 1MiB"))
            }
            Some(_) => {}
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
        for (key, value) in [
            ("limits.http_max_body_size", l.http_max_body_size as u64),
            (
                "limits.http_max_open_streams",
                l.http_max_open_streams as u64,
            ),
            ("limits.http_max_wait_secs", l.http_max_wait_secs),
            ("limits.http_lease_secs", l.http_lease_secs),
            ("limits.http_sse_keepalive_secs", l.http_sse_keepalive_secs),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
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
        self.compiled_acl()?;
        self.validate_streams()?;
        self.validate_store_backend()?;
        crate::core::schema::compile_configured(&self.schema).map_err(|e| {
            ConfigError::Invalid {
                key: "schema",
                reason: e.to_string(),
            }
        })?;
        self.validate_bridges()?;
        self.cluster.validate().map_err(|e| ConfigError::Invalid {
            key: e.key,
            reason: e.reason,
        })?;
        Ok(())
    }

    /// Each `[[bridge]]` table checked (its topic rules parsed), names unique.
    fn validate_bridges(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for bridge in &self.bridge {
            bridge.check().map_err(|e| ConfigError::Invalid {
                key: "bridge",
                reason: e.to_string(),
            })?;
            if !names.insert(bridge.name.as_str()) {
                return Err(ConfigError::Invalid {
                    key: "bridge",
                    reason: format!("bridge {:?} is declared twice", bridge.name),
                });
            }
        }
        Ok(())
    }

    /// Each `[[stream]]` table checked, names unique, and a store to keep them in.
    fn validate_streams(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for stream in &self.stream {
            stream.check().map_err(|e| ConfigError::Invalid {
                key: "stream",
                reason: e.to_string(),
            })?;
            if !names.insert(stream.name.as_str()) {
                return Err(ConfigError::Invalid {
                    key: "stream",
                    reason: format!("stream {:?} is declared twice", stream.name),
                });
            }
            if !self.storage.enabled {
                return Err(ConfigError::Invalid {
                    key: "stream",
                    reason: format!(
                        "stream {:?} needs the store (storage.enabled = true)",
                        stream.name
                    ),
                });
            }
        }
        Ok(())
    }

    /// `storage.backend = "nats"` needs the cluster's NATS.
    fn validate_store_backend(&self) -> Result<(), ConfigError> {
        if self.storage.backend != super::StoreBackend::Nats || !self.storage.enabled {
            return Ok(());
        }
        if !self.cluster.enabled {
            return Err(ConfigError::Invalid {
                key: "storage.backend",
                reason: "\"nats\" keeps the store in the cluster's JetStream: it needs \
                         [cluster] enabled = true (or use \"redb\")"
                    .into(),
            });
        }
        Ok(())
    }

    /// The `[[acl]]` rules compiled: the one check of the rules, made by
    /// `validate` and wherever the rules are put in force (start, reload).
    pub fn compiled_acl(&self) -> Result<Acl, ConfigError> {
        Acl::new(&self.acl).map_err(|e| ConfigError::Invalid {
            key: "acl",
            reason: e.to_string(),
        })
    }
}

impl TlsListenerSettings {
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
