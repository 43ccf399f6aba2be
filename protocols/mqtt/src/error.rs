//! Decode and encode errors, and the reason code a broker answers a decode error with.

use crate::codes::{connack_v3, reason};
use crate::types::ProtocolVersion;

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
    /// CONNECT with a protocol name/level pair we do not speak, answered in the 3.1.1 form with
    /// return code 0x01 (see [`DecodeError::connect_refusal`]); the raw pair is kept for logs.
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

    /// The refusing CONNACK that answers a CONNECT failing with this error: the version to
    /// encode it in and its code. `level` is the protocol level the CONNECT carried, if it
    /// could be read. None: no CONNACK can say it (a malformed 3.x CONNECT), only the close.
    ///
    /// An unknown protocol level, above 5 too, is answered in the 3.1.1 form with return
    /// code 0x01: a client cannot parse a 5.0 CONNACK it did not ask for, and every version
    /// reads the 3.1.1 form (a 5.0 client takes 0x01 as an unspecified refusal).
    pub fn connect_refusal(&self, level: Option<u8>) -> Option<(ProtocolVersion, u8)> {
        match self {
            DecodeError::UnsupportedProtocolVersion { .. } => Some((
                ProtocolVersion::V311,
                connack_v3::UNACCEPTABLE_PROTOCOL_VERSION,
            )),
            // A malformed 5.0 CONNECT may be answered with a reason code; 3.x has none for it.
            other if level == Some(5) => Some((ProtocolVersion::V5, other.reason_code())),
            _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_protocol_level_is_refused_in_the_311_form_with_0x01() {
        for (name, level) in [("MQTT", 6), ("MQTT", 2), ("MQTT", 255), ("MQIsdp", 4)] {
            let e = DecodeError::UnsupportedProtocolVersion {
                name: name.into(),
                level,
            };
            assert_eq!(
                e.connect_refusal(Some(level)),
                Some((ProtocolVersion::V311, 0x01)),
                "{name} level {level}"
            );
        }
    }

    #[test]
    fn a_malformed_connect_is_refused_with_a_reason_code_in_5_only() {
        let e = DecodeError::MalformedPacket("x");
        assert_eq!(
            e.connect_refusal(Some(5)),
            Some((ProtocolVersion::V5, reason::MALFORMED_PACKET))
        );
        assert_eq!(e.connect_refusal(Some(4)), None);
        assert_eq!(e.connect_refusal(None), None);
    }
}
