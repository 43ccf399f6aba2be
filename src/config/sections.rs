//! The broker-wide sections: `[log]`, `[limits]`, `[storage]`, `[sys]`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::core::retained_set::RetainedLimits;
use crate::core::session::{OverflowPolicy, QueueLimits};
use crate::core::topic_limits::TopicLimits;

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
    /// Whether a payload its publisher declares UTF-8 text (MQTT 5 payload
    /// format indicator 1) is checked; one that is not UTF-8 is refused like a
    /// schema's `reject` (MQTT 5 PUBACK / PUBREC 0x99).
    pub check_utf8_payloads: bool,
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
    /// Largest HTTP `/v1` request body (a publish's payload, an NDJSON batch), bytes; more is 413.
    pub http_max_body_size: usize,
    /// Server-sent event streams and long polls one HTTP client (user, or address when
    /// anonymous) may hold open at once; one more is 429.
    pub http_max_open_streams: usize,
    /// Longest wait an HTTP client may ask for (`wait=` of a pull, `timeout=` of a request), seconds.
    pub http_max_wait_secs: u64,
    /// Visibility timeout of a pull's leases when the client names none, seconds.
    pub http_lease_secs: u64,
    /// Seconds between keep-alive comments on an idle server-sent event stream.
    pub http_sse_keepalive_secs: u64,
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
    /// redb's page cache ("64MiB", "1GiB", bytes): the most of the store file kept
    /// in memory, so a replay of a big stream holds bounded memory.
    pub cache_size: String,
    /// Where the store lives: "redb" (a file in `data_dir`) or "nats"
    /// (JetStream, replicated, so another node can take over; needs `[cluster]`).
    pub backend: StoreBackend,
}

/// The engine behind the store seam.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// The embedded file `tern.redb`: the default, and the only choice without `[cluster]`.
    #[default]
    Redb,
    /// The JetStream KV bucket `tern_store` of the cluster's NATS, `cluster.replicas` copies.
    Nats,
}

impl StorageSettings {
    /// The smallest `cache_size` accepted.
    pub const MIN_CACHE_SIZE: u64 = 1 << 20;

    pub fn store_file(&self) -> PathBuf {
        self.data_dir.join("tern.redb")
    }

    /// `cache_size` in bytes; None when it is not a size (`validate` refuses that).
    pub fn cache_bytes(&self) -> Option<u64> {
        crate::core::stream::settings::parse_size(&self.cache_size)
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".into(),
        }
    }
}

impl Limits {
    /// The limits every session queue gets.
    pub fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            max_queued: u32::try_from(self.max_queued_messages).unwrap_or(u32::MAX),
            max_queued_bytes: self.max_queued_bytes,
            overflow: self.queue_overflow,
            max_queued_age_ms: 0,
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
            check_utf8_payloads: true,
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
            http_max_body_size: 4 * 1024 * 1024,
            http_max_open_streams: 16,
            http_max_wait_secs: 60,
            http_lease_secs: 30,
            http_sse_keepalive_secs: 15,
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
            cache_size: "64MiB".into(),
            backend: StoreBackend::Redb,
        }
    }
}
