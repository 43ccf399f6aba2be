//! Settings: built-in defaults < config file < `TERN_*` environment variables,
//! validated once at start so a bad value stops the broker with the key named.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::session::OverflowPolicy;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub log: LogSettings,
    pub mqtt: ListenerSettings,
    pub stomp: ListenerSettings,
    pub limits: Limits,
    pub storage: StorageSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A tracing filter (`info`, `tern=debug`); RUST_LOG wins when set.
    pub level: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerSettings {
    pub enabled: bool,
    pub bind: SocketAddr,
    /// Unset: anonymous clients are allowed only when the listener is bound to loopback.
    pub allow_anonymous: Option<bool>,
}

impl ListenerSettings {
    fn on(bind: &str) -> ListenerSettings {
        ListenerSettings {
            enabled: true,
            bind: bind
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
            allow_anonymous: None,
        }
    }

    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous
            .unwrap_or_else(|| self.bind.ip().is_loopback())
    }
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
    pub queue_overflow: OverflowPolicy,
    /// Topic aliases an MQTT 5 client may use towards the broker (0 disables them).
    pub topic_alias_maximum: u16,
    /// Longest session expiry a client may ask for, seconds (`4294967295` = no cap, sessions may never expire).
    pub max_session_expiry_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    pub data_dir: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            log: LogSettings::default(),
            mqtt: ListenerSettings::on("127.0.0.1:1883"),
            stomp: ListenerSettings::on("127.0.0.1:61613"),
            limits: Limits::default(),
            storage: StorageSettings::default(),
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

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 100_000,
            max_packet_size: 1024 * 1024,
            connect_timeout_secs: 10,
            max_inflight: 100,
            receive_maximum: 1024,
            max_queued_messages: 10_000,
            queue_overflow: OverflowPolicy::DropOldest,
            topic_alias_maximum: 64,
            max_session_expiry_secs: u32::MAX,
        }
    }
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            data_dir: PathBuf::from("./data"),
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
                .try_parsing(true),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what types alone cannot; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_string(),
        };
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
        if self.log.level.trim().is_empty() {
            return Err(invalid("log.level", "must not be empty"));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                "not a valid level or filter (try info, debug, tern=trace)",
            ));
        }
        if self.mqtt.enabled
            && self.stomp.enabled
            && self.mqtt.bind == self.stomp.bind
            && self.mqtt.bind.port() != 0
        {
            return Err(invalid("stomp.bind", "is the same address as mqtt.bind"));
        }
        Ok(())
    }

    /// Settings for tests and embedding: every listener on 127.0.0.1 port 0.
    pub fn ephemeral() -> Settings {
        let mut settings = Settings::default();
        settings.mqtt.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.stomp.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        settings
    }
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
    fn missing_file_is_an_error() {
        let err = Settings::load(Some(Path::new("/nonexistent/tern.toml"))).unwrap_err();
        assert!(matches!(err, ConfigError::Missing(_)));
    }
}
