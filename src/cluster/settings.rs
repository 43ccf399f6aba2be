//! `[cluster]`: whether this broker is one node of several sharing a NATS
//! deployment, its name, and how it reaches NATS.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// False (the default): a single node, no NATS at all.
    pub enabled: bool,
    /// This node's name: unique in the cluster and stable across restarts (it
    /// names the node in NATS subjects, `$SYS` topics and the admin API).
    pub node: String,
    /// NATS servers to connect to (`nats://`, `tls://`); several for a NATS cluster.
    pub nats_urls: Vec<String>,
    /// User name for NATS (with `password`).
    pub user: Option<String>,
    pub password: Option<String>,
    /// Token for NATS (instead of user/password).
    pub token: Option<String>,
    /// A NATS `.creds` file (JWT and NKey seed), instead of user/password or token.
    pub creds_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify the NATS servers' TLS certificates.
    pub ca_file: Option<PathBuf>,
    /// Copies JetStream keeps of Tern's own buckets and streams (3 in production).
    pub replicas: usize,
    /// Messages this node may have sent to the other nodes that they have not
    /// yet confirmed routing; at the limit it waits for them (and slows its
    /// publishers) instead of letting NATS drop what they cannot take.
    pub window: usize,
    /// A QoS 1/2 publish whose sync a node did not confirm in time is not
    /// acknowledged (its connection closes; the client sends it again)
    /// instead of acknowledged for the nodes that answered. Off by default:
    /// a node reconnecting to another NATS server then fails its peers' acks.
    pub strict_acks: bool,
    /// Seconds a node has to finish a cluster queue message (its consumer acks)
    /// before JetStream hands it to a consumer on another node (a node that
    /// died holding it).
    pub ack_wait_secs: u64,
    /// Milliseconds between two refreshes of this node's liveness key
    /// (KV bucket `tern_nodes`).
    pub liveness_interval_ms: u64,
    /// Milliseconds after which a node whose liveness key was not refreshed
    /// is dead: the others publish its clients' wills and take its sessions.
    pub dead_after_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            enabled: false,
            node: "tern-1".into(),
            nats_urls: vec!["nats://127.0.0.1:4222".into()],
            user: None,
            password: None,
            token: None,
            creds_file: None,
            ca_file: None,
            replicas: 1,
            window: DEFAULT_WINDOW,
            strict_acks: false,
            ack_wait_secs: 10,
            liveness_interval_ms: DEFAULT_LIVENESS_INTERVAL_MS,
            dead_after_ms: DEFAULT_DEAD_AFTER_MS,
        }
    }
}

/// A `[cluster]` setting that cannot work; `key` is its full name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for `{key}`: {reason}")]
pub struct ClusterSettingsError {
    pub key: &'static str,
    pub reason: String,
}

/// `cluster.window` unless set.
pub const DEFAULT_WINDOW: usize = 8_192;
/// Most nodes whose windows one node's NATS subscriptions hold at once: each
/// subscription buffers this many windows, and at least 65,536 messages
/// (see `Cluster::connect`).
pub const WINDOWS_BUFFERED: usize = 16;

/// `cluster.liveness_interval_ms` unless set.
pub const DEFAULT_LIVENESS_INTERVAL_MS: u64 = 1_000;
/// `cluster.dead_after_ms` unless set.
pub const DEFAULT_DEAD_AFTER_MS: u64 = 5_000;

/// Longest node name: it is part of NATS subjects and headers.
pub const MAX_NODE_NAME_LEN: usize = 64;

impl ClusterSettings {
    /// Checks what types alone cannot; the error names the key. Checked whether
    /// or not the cluster is enabled, so a file is valid before it is switched on.
    pub fn validate(&self) -> Result<(), ClusterSettingsError> {
        let invalid = |key, reason: String| ClusterSettingsError { key, reason };
        if let Err(reason) = check_node_name(&self.node) {
            return Err(invalid("cluster.node", reason));
        }
        if self.enabled && self.nats_urls.is_empty() {
            return Err(invalid(
                "cluster.nats_urls",
                "needs at least one URL when the cluster is enabled".into(),
            ));
        }
        for url in &self.nats_urls {
            if let Err(reason) = check_nats_url(url) {
                return Err(invalid("cluster.nats_urls", format!("{url:?}: {reason}")));
            }
        }
        if self.password.is_some() && self.user.is_none() {
            return Err(invalid("cluster.password", "needs cluster.user".into()));
        }
        if self.user.is_some() && self.password.is_none() {
            return Err(invalid("cluster.user", "needs cluster.password".into()));
        }
        let methods = [
            self.user.is_some(),
            self.token.is_some(),
            self.creds_file.is_some(),
        ];
        if methods.iter().filter(|set| **set).count() > 1 {
            return Err(invalid(
                "cluster.token",
                "choose one of user/password, token or creds_file".into(),
            ));
        }
        if let Some(path) = &self.creds_file {
            if self.enabled && !path.is_file() {
                return Err(invalid(
                    "cluster.creds_file",
                    format!("{} is not a file", path.display()),
                ));
            }
        }
        if let Some(path) = &self.ca_file {
            if self.enabled && !path.is_file() {
                return Err(invalid(
                    "cluster.ca_file",
                    format!("{} is not a file", path.display()),
                ));
            }
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(invalid(
                "cluster.replicas",
                "must be between 1 and 5 (JetStream's limit)".into(),
            ));
        }
        if !(1..=1_000_000).contains(&self.window) {
            return Err(invalid(
                "cluster.window",
                "must be between 1 and 1000000".into(),
            ));
        }
        if !(1..=3600).contains(&self.ack_wait_secs) {
            return Err(invalid(
                "cluster.ack_wait_secs",
                "must be between 1 and 3600".into(),
            ));
        }
        if !(100..=60_000).contains(&self.liveness_interval_ms) {
            return Err(invalid(
                "cluster.liveness_interval_ms",
                "must be between 100 and 60000".into(),
            ));
        }
        // Two refreshes may be missed (a slow NATS round trip) before a live
        // node is taken for dead.
        let least = self.liveness_interval_ms.saturating_mul(3);
        if !(least..=3_600_000).contains(&self.dead_after_ms) {
            return Err(invalid(
                "cluster.dead_after_ms",
                format!("must be between 3 x cluster.liveness_interval_ms ({least}) and 3600000"),
            ));
        }
        Ok(())
    }

    /// These settings with secrets blanked, for display.
    pub fn redacted(&self) -> ClusterSettings {
        let mut shown = self.clone();
        let hide = |secret: &mut Option<String>| {
            if secret.is_some() {
                *secret = Some("<redacted>".into());
            }
        };
        hide(&mut shown.password);
        hide(&mut shown.token);
        shown
    }
}

/// A node name: 1 to 64 of `A-Z a-z 0-9 _ -` (it goes into NATS subjects,
/// which split on `.` and stop at spaces, and into `$SYS` topics).
pub fn check_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NODE_NAME_LEN {
        return Err(format!("must be 1 to {MAX_NODE_NAME_LEN} characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err("may hold only letters, digits, '_' and '-'".into());
    }
    Ok(())
}

/// A NATS server URL: `nats://host:port` or `tls://host:port` (a bare
/// `host:port` is read as `nats://`; the port defaults to 4222).
pub fn check_nats_url(url: &str) -> Result<(), String> {
    if url.contains(char::is_whitespace) {
        return Err("must not contain spaces".into());
    }
    let address: async_nats::ServerAddr = url.parse().map_err(|e: std::io::Error| e.to_string())?;
    let url = address.into_inner();
    if !matches!(url.scheme(), "nats" | "tls") {
        return Err(format!(
            "unsupported scheme {:?} (nats or tls)",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> ClusterSettings {
        ClusterSettings {
            enabled: true,
            ..ClusterSettings::default()
        }
    }

    fn key_of(settings: &ClusterSettings) -> &'static str {
        settings
            .validate()
            .map_err(|e| e.key)
            .err()
            .unwrap_or("valid")
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(key_of(&ClusterSettings::default()), "valid");
        assert_eq!(key_of(&enabled()), "valid");
    }

    #[test]
    fn node_names_that_cannot_be_a_subject_token_are_refused() {
        for bad in ["", "a.b", "a b", "a*", "a>", "ä", &"n".repeat(65)] {
            let settings = ClusterSettings {
                node: bad.to_string(),
                ..enabled()
            };
            assert_eq!(key_of(&settings), "cluster.node", "{bad:?}");
        }
        for good in ["tern-1", "A_b-9", &"n".repeat(64)] {
            assert!(check_node_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn ack_wait_is_between_one_second_and_an_hour() {
        for (secs, key) in [
            (0, "cluster.ack_wait_secs"),
            (1, "valid"),
            (3600, "valid"),
            (3601, "cluster.ack_wait_secs"),
        ] {
            let settings = ClusterSettings {
                ack_wait_secs: secs,
                ..enabled()
            };
            assert_eq!(key_of(&settings), key, "{secs}");
        }
    }

    #[test]
    fn a_node_is_dead_after_at_least_three_missed_refreshes() {
        for (interval, dead_after, key) in [
            (99, 5_000, "cluster.liveness_interval_ms"),
            (60_001, 3_600_000, "cluster.liveness_interval_ms"),
            (1_000, 2_999, "cluster.dead_after_ms"),
            (1_000, 3_000, "valid"),
            (100, 3_600_000, "valid"),
            (100, 3_600_001, "cluster.dead_after_ms"),
        ] {
            let settings = ClusterSettings {
                liveness_interval_ms: interval,
                dead_after_ms: dead_after,
                ..enabled()
            };
            assert_eq!(key_of(&settings), key, "{interval} {dead_after}");
        }
    }

    #[test]
    fn urls_are_checked() {
        for bad in [
            "http://h:4222",
            "nats://h:99999",
            "nats://",
            "nats://a b:4222",
        ] {
            let settings = ClusterSettings {
                nats_urls: vec![bad.into()],
                ..enabled()
            };
            assert_eq!(key_of(&settings), "cluster.nats_urls", "{bad:?}");
        }
        for good in [
            "nats://127.0.0.1:4222",
            "tls://nats.example:4443",
            "h:4222",
            "nats://u:p@h",
        ] {
            assert!(check_nats_url(good).is_ok(), "{good:?}");
        }
        let none = ClusterSettings {
            nats_urls: vec![],
            ..enabled()
        };
        assert_eq!(key_of(&none), "cluster.nats_urls");
    }

    #[test]
    fn credentials_are_one_method_and_complete() {
        let half = ClusterSettings {
            user: Some("u".into()),
            ..enabled()
        };
        assert_eq!(key_of(&half), "cluster.user");
        let two = ClusterSettings {
            user: Some("u".into()),
            password: Some("p".into()),
            token: Some("t".into()),
            ..enabled()
        };
        assert_eq!(key_of(&two), "cluster.token");
        let missing = ClusterSettings {
            creds_file: Some("/nonexistent/x.creds".into()),
            ..enabled()
        };
        assert_eq!(key_of(&missing), "cluster.creds_file");
    }

    #[test]
    fn replicas_are_one_to_five() {
        for (replicas, key) in [
            (0, "cluster.replicas"),
            (6, "cluster.replicas"),
            (3, "valid"),
        ] {
            let settings = ClusterSettings {
                replicas,
                ..enabled()
            };
            assert_eq!(key_of(&settings), key, "{replicas}");
        }
    }

    #[test]
    fn window_is_one_to_a_million() {
        for (window, key) in [
            (0, "cluster.window"),
            (1_000_001, "cluster.window"),
            (1, "valid"),
        ] {
            let settings = ClusterSettings {
                window,
                ..enabled()
            };
            assert_eq!(key_of(&settings), key, "{window}");
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let settings = ClusterSettings {
            user: Some("u".into()),
            password: Some("secret".into()),
            ..enabled()
        };
        let shown = settings.redacted();
        assert_eq!(shown.password.as_deref(), Some("<redacted>"));
        assert_eq!(shown.user.as_deref(), Some("u"));
    }
}
