//! Decode and encode errors, and the reason code a broker answers a decode error with.

use crate::codes::reason;

/// Why a packet could not be decoded. The caller is expected to close the connection,
/// answering with [`DecodeError::reason_code`] (5.0) when a CONNACK/DISCONNECT is still possible.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes do not follow the packet grammar (reason 0x81).
    #[error("malformed packet: {0}")]
    MalformedPacket(&'static str),
    /// The packet parses but breaks a protocol rule (reason 0x82).
    #[error("protocol error: {0}")]
    ProtocolError(&'static str),
    /// CONNECT with a protocol name/level pair we do not speak. The broker answers 3.x clients
    /// with return code 0x01 and 5.0 clients with reason 0x84, so the raw pair is kept.
    #[error("unsupported protocol version: name {name:?}, level {level}")]
    UnsupportedProtocolVersion { name: String, level: u8 },
    /// Declared total size (fixed header included) exceeds the limit (reason 0x95).
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge { size: usize, max: usize },
    /// Invalid PUBLISH or will topic name (reason 0x90).
    #[error("invalid topic name: {0}")]
    TopicNameInvalid(&'static str),
    /// Topic Alias property of 0 (reason 0x94); the broker checks the upper bound itself.
    #[error("invalid topic alias: {0}")]
    TopicAliasInvalid(&'static str),
    /// A string field is not well-formed UTF-8 (malformed, reason 0x81).
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
}

impl DecodeError {
    /// The MQTT 5 reason code for a DISCONNECT/CONNACK answering this error.
    pub fn reason_code(&self) -> u8 {
        match self {
            DecodeError::MalformedPacket(_) | DecodeError::InvalidUtf8 => reason::MALFORMED_PACKET,
            DecodeError::ProtocolError(_) => reason::PROTOCOL_ERROR,
            DecodeError::UnsupportedProtocolVersion { .. } => reason::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::PacketTooLarge { .. } => reason::PACKET_TOO_LARGE,
            DecodeError::TopicNameInvalid(_) => reason::TOPIC_NAME_INVALID,
            DecodeError::TopicAliasInvalid(_) => reason::TOPIC_ALIAS_INVALID,
        }
    }
}

/// Why a packet could not be encoded. Nothing is appended to the buffer when this is returned.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// A string or binary field is longer than its 16-bit length prefix allows.
    #[error("{field} is {len} bytes, more than 65535")]
    FieldTooLong { field: &'static str, len: usize },
    /// A variable byte integer value (remaining length, property length, subscription
    /// identifier) exceeds 268,435,455.
    #[error("{field} is {value}, more than 268435455")]
    ValueTooLarge { field: &'static str, value: usize },
    /// The remaining length exceeds 268,435,455.
    #[error("remaining length {remaining_length} exceeds 268435455")]
    PacketTooLarge { remaining_length: usize },
    /// A set property is not allowed in this packet (5.0); it is never silently dropped.
    #[error("property {property} is not allowed in {packet}")]
    PropertyNotAllowed {
        property: &'static str,
        packet: &'static str,
    },
    /// The packet type does not exist in the requested version (AUTH before 5.0).
    #[error("{packet} does not exist in this protocol version")]
    UnsupportedInVersion { packet: &'static str },
    /// The packet's fields contradict each other (e.g. QoS 1 without a packet id).
    #[error("invalid packet: {0}")]
    InvalidPacket(&'static str),
}
