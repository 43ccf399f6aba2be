//! `[[bridge]]`: one remote broker this broker connects to as an MQTT client,
//! the topic rules carried each way, and the bounds of what waits for it.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::rule::{RuleError, TopicRule};
use crate::core::session::{OverflowPolicy, QueueLimits};
use crate::core::stream::settings::parse_duration;

/// MQTT version spoken to the remote broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BridgeProtocol {
    Mqttv5,
    Mqttv311,
}

/// One `[[bridge]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSettings {
    /// Names the bridge in logs, metrics, `$SYS` and the admin API; one topic level.
    pub name: String,
    /// `host:port` of the remote broker, tried in order (then again from the first).
    pub addresses: Vec<String>,
    #[serde(default = "default_protocol")]
    pub protocol: BridgeProtocol,
    /// Client id on the remote broker (default `tern-bridge-<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// MQTT 3.1.1: announce a bridge (protocol level 0x84, Mosquitto's
    /// `try_private`) so a Mosquitto remote does not send our own messages back.
    #[serde(default = "yes")]
    pub try_private: bool,
    /// CA certificate (PEM) of the remote's TLS certificate; setting it turns TLS on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) shown to the remote, with `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Name checked against the remote's certificate (default: the address's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u16,
    /// Start a new session on the remote at every connect (false: the remote
    /// keeps our subscriptions and queues for us while the link is down).
    #[serde(default)]
    pub clean_start: bool,
    /// Rules in Mosquitto's syntax: `<pattern> [out|in|both [qos [local-prefix remote-prefix]]]`.
    pub topics: Vec<String>,
    /// Messages waiting for the remote (while the link is down or slow) before `queue_overflow` applies.
    #[serde(default = "default_max_queued_messages")]
    pub max_queued_messages: usize,
    /// Topic and payload bytes waiting for the remote before `queue_overflow` applies (0: no byte limit).
    #[serde(default = "default_max_queued_bytes")]
    pub max_queued_bytes: usize,
    #[serde(default = "default_overflow")]
    pub queue_overflow: OverflowPolicy,
    /// Oldest message still sent to the remote, as `"30s"`, `"10m"`, `"12h"`,
    /// `"7d"`: an older one is dropped (and counted) when it would be sent,
    /// so a link back after a long outage does not flood the remote with
    /// stale readings. Unset: no age limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued_age: Option<String>,
    /// First wait before reconnecting, seconds; doubled per failure up to `reconnect_max_secs`, with jitter.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_secs: u64,
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_secs: u64,
}

fn default_protocol() -> BridgeProtocol {
    BridgeProtocol::Mqttv5
}
fn yes() -> bool {
    true
}
fn default_keep_alive() -> u16 {
    60
}
fn default_max_queued_messages() -> usize {
    1_000_000
}
fn default_max_queued_bytes() -> usize {
    1024 * 1024 * 1024
}
fn default_overflow() -> OverflowPolicy {
    OverflowPolicy::DropOldest
}
fn default_reconnect_min() -> u64 {
    1
}
fn default_reconnect_max() -> u64 {
    60
}

/// A `[[bridge]]` table that cannot work, naming the bridge and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bridge {bridge:?}: `{key}` {reason}")]
pub struct BridgeSettingsError {
    pub bridge: String,
    pub key: &'static str,
    pub reason: String,
}

impl BridgeSettings {
    fn error(&self, key: &'static str, reason: impl Into<String>) -> BridgeSettingsError {
        BridgeSettingsError {
            bridge: self.name.clone(),
            key,
            reason: reason.into(),
        }
    }

    /// Checks every key; returns the parsed topic rules.
    pub fn check(&self) -> Result<Vec<TopicRule>, BridgeSettingsError> {
        if !crate::core::stream::settings::valid_name(&self.name) {
            return Err(self.error(
                "name",
                "must be one topic level: not empty, without '/', '+', '#', '@' or '$' first",
            ));
        }
        if self.addresses.is_empty() {
            return Err(self.error("addresses", "needs at least one host:port"));
        }
        for address in &self.addresses {
            if split_host_port(address).is_none() {
                return Err(self.error("addresses", format!("{address:?} is not host:port")));
            }
        }
        if self.topics.is_empty() {
            return Err(self.error("topics", "needs at least one rule"));
        }
        let rules = self
            .topics
            .iter()
            .map(|text| TopicRule::parse(text))
            .collect::<Result<Vec<_>, RuleError>>()
            .map_err(|e| self.error("topics", e.to_string()))?;
        if self.password.is_some() && self.username.is_none() {
            return Err(self.error("password", "needs username"));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(self.error("cert_file", "cert_file and key_file go together"));
        }
        let tls_needed = self.cert_file.is_some() || self.server_name.is_some();
        if tls_needed && self.ca_file.is_none() {
            return Err(self.error("ca_file", "TLS settings need ca_file (which turns TLS on)"));
        }
        for (key, path) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if let Some(path) = path {
                if !path.is_file() {
                    return Err(self.error(key, format!("{} is not a file", path.display())));
                }
            }
        }
        if self.max_queued_messages == 0 {
            return Err(self.error("max_queued_messages", "must be at least 1"));
        }
        self.max_queued_age()?;
        if self.reconnect_min_secs == 0 {
            return Err(self.error("reconnect_min_secs", "must be at least 1"));
        }
        if self.reconnect_max_secs < self.reconnect_min_secs {
            return Err(self.error("reconnect_max_secs", "must be at least reconnect_min_secs"));
        }
        if self.client_id.as_deref() == Some("") {
            return Err(self.error("client_id", "must not be empty"));
        }
        Ok(rules)
    }

    /// Client id on the remote broker.
    pub fn remote_client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("tern-bridge-{}", self.name))
    }

    /// Client id of the bridge's own session in this broker's core.
    pub fn local_client_id(&self) -> String {
        format!("$bridge/{}", self.name)
    }

    /// `max_queued_age` parsed (None: no age limit).
    pub fn max_queued_age(&self) -> Result<Option<Duration>, BridgeSettingsError> {
        let Some(text) = &self.max_queued_age else {
            return Ok(None);
        };
        match parse_duration(text) {
            Some(age) if age >= Duration::from_millis(1) => Ok(Some(age)),
            Some(_) => Err(self.error("max_queued_age", "must be at least 1ms")),
            None => Err(self.error(
                "max_queued_age",
                format!("{text:?} is not a duration like \"30s\", \"10m\", \"12h\" or \"7d\""),
            )),
        }
    }

    /// Bounds of what waits for the remote (the bridge's core session queue).
    pub fn queue_limits(&self) -> QueueLimits {
        let age = self.max_queued_age().ok().flatten().unwrap_or_default();
        QueueLimits {
            max_queued: u32::try_from(self.max_queued_messages).unwrap_or(u32::MAX),
            max_queued_bytes: self.max_queued_bytes,
            overflow: self.queue_overflow,
            max_queued_age_ms: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// `host:port`, `[v6]:port`: the host and the port.
pub fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty() && port != 0).then(|| (host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> BridgeSettings {
        let source = config::File::from_str(text, config::FileFormat::Toml);
        let loaded = config::Config::builder().add_source(source).build();
        match loaded.and_then(|c| c.try_deserialize()) {
            Ok(settings) => settings,
            Err(e) => panic!("{text} should parse: {e}"),
        }
    }

    #[test]
    fn the_issue_example_parses_with_defaults() {
        let b = parse(
            r#"
            name = "cloud"
            addresses = ["cloud.example.com:8883", "backup.example.com:8883"]
            protocol = "mqttv5"
            topics = ["sensors/# out 1", "commands/# in 1 site7/ plant/"]
            "#,
        );
        let rules = match b.check() {
            Ok(rules) => rules,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(rules.len(), 2);
        assert_eq!(b.remote_client_id(), "tern-bridge-cloud");
        assert!(!b.clean_start);
        assert_eq!(b.keep_alive_secs, 60);
        assert_eq!(b.queue_limits().overflow, OverflowPolicy::DropOldest);
    }

    #[test]
    fn errors_name_the_key() {
        let mut b = parse(
            r#"name = "c"
            addresses = ["h:1"]
            topics = ["a out"]"#,
        );
        b.topics = vec!["a sideways".into()];
        assert_eq!(b.check().map_err(|e| e.key), Err("topics"));
        b.topics = vec!["a".into()];
        b.addresses = vec!["nohost".into()];
        assert_eq!(b.check().map_err(|e| e.key), Err("addresses"));
        b.addresses = vec!["h:1".into()];
        b.password = Some("p".into());
        assert_eq!(b.check().map_err(|e| e.key), Err("password"));
        b.password = None;
        b.name = "a/b".into();
        assert_eq!(b.check().map_err(|e| e.key), Err("name"));
        b.name = "c".into();
        for bad in ["soon", "0s", "5 parsecs"] {
            b.max_queued_age = Some(bad.into());
            assert_eq!(b.check().map_err(|e| e.key), Err("max_queued_age"), "{bad}");
        }
    }

    #[test]
    fn max_queued_age_bounds_the_session_queue() {
        let mut b = parse(
            r#"name = "c"
            addresses = ["h:1"]
            topics = ["a out 1"]
            max_queued_age = "10m""#,
        );
        assert!(b.check().is_ok());
        assert_eq!(b.queue_limits().max_queued_age_ms, 600_000);
        b.max_queued_age = Some("1500ms".into());
        assert_eq!(b.queue_limits().max_queued_age_ms, 1_500);
        b.max_queued_age = None;
        assert_eq!(b.queue_limits().max_queued_age_ms, 0);
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("h:1883"), Some(("h".into(), 1883)));
        assert_eq!(split_host_port("[::1]:1883"), Some(("::1".into(), 1883)));
        assert_eq!(split_host_port("h"), None);
        assert_eq!(split_host_port("h:0"), None);
    }
}
