//! Everything that ends an MQTT connection, and the reason code each one is
//! answered with: the single place internal errors become protocol replies.

use crate::core::session::KickReason;
use tern_mqtt::{reason, DecodeError};

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("invalid topic alias: {0}")]
    TopicAliasInvalid(&'static str),
    #[error("PUBLISH topic refused: {0}")]
    TopicOverLimit(crate::core::topic_limits::TopicLimitError),
    #[error("receive maximum exceeded")]
    ReceiveMaximumExceeded,
    #[error("publish rate above limits.max_publish_rate")]
    RateTooHigh,
    #[error("payload format indicator says UTF-8 but the payload is not")]
    PayloadFormatInvalid,
    #[error("keep-alive timeout")]
    KeepAliveTimeout,
    #[error("{0}")]
    OverBudget(#[from] crate::adapter::budget::OverBudget),
    #[error("packet not complete within limits.frame_timeout_secs ({0} s)")]
    FrameTimeout(u64),
    #[error("session taken over by another connection")]
    TakenOver,
    #[error("disconnected by an operator")]
    Administrative,
    #[error("server shutting down")]
    ShuttingDown,
    #[error("connection closed by peer")]
    PeerClosed,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Store(#[from] crate::core::commit::CoreError),
    #[error("cannot encode packet: {0}")]
    Encode(#[from] tern_mqtt::EncodeError),
    /// A 3.x publisher cannot be told in PUBACK: closed unacknowledged, it sends again later.
    #[error("message refused, connection closed without acknowledging it: {0}")]
    Refused(#[from] crate::core::router::PublishRefused),
}

impl MqttError {
    /// The end of a connection the core asked for.
    pub fn kicked(reason: KickReason) -> MqttError {
        match reason {
            KickReason::TakenOver => MqttError::TakenOver,
            KickReason::Administrative => MqttError::Administrative,
            KickReason::ShuttingDown => MqttError::ShuttingDown,
        }
    }

    /// The MQTT 5 DISCONNECT reason code that tells the client why; None when no DISCONNECT can be sent.
    pub fn disconnect_reason(&self) -> Option<u8> {
        match self {
            MqttError::Decode(e) => Some(e.reason_code()),
            MqttError::Protocol(_) => Some(reason::PROTOCOL_ERROR),
            MqttError::TopicAliasInvalid(_) => Some(reason::TOPIC_ALIAS_INVALID),
            MqttError::TopicOverLimit(_) => Some(reason::TOPIC_NAME_INVALID),
            MqttError::ReceiveMaximumExceeded => Some(reason::RECEIVE_MAXIMUM_EXCEEDED),
            MqttError::RateTooHigh => Some(reason::MESSAGE_RATE_TOO_HIGH),
            MqttError::PayloadFormatInvalid => Some(reason::PAYLOAD_FORMAT_INVALID),
            MqttError::KeepAliveTimeout => Some(reason::KEEP_ALIVE_TIMEOUT),
            MqttError::OverBudget(_) => Some(reason::QUOTA_EXCEEDED),
            // No reason code says "too slow"; the reason string does.
            MqttError::FrameTimeout(_) => Some(reason::IMPLEMENTATION_SPECIFIC),
            MqttError::TakenOver => Some(reason::SESSION_TAKEN_OVER),
            MqttError::Administrative => Some(reason::ADMINISTRATIVE_ACTION),
            MqttError::ShuttingDown => Some(reason::SERVER_SHUTTING_DOWN),
            MqttError::Encode(_) => Some(reason::IMPLEMENTATION_SPECIFIC),
            MqttError::Store(_) => Some(reason::UNSPECIFIED),
            MqttError::Refused(_) => Some(reason::QUOTA_EXCEEDED),
            MqttError::PeerClosed | MqttError::Io(_) => None,
        }
    }

    /// Short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            MqttError::Decode(_) => "malformed",
            MqttError::Protocol(_) => "protocol_error",
            MqttError::TopicAliasInvalid(_) => "topic_alias_invalid",
            MqttError::TopicOverLimit(_) => "topic_over_limit",
            MqttError::ReceiveMaximumExceeded => "receive_maximum_exceeded",
            MqttError::RateTooHigh => "message_rate_too_high",
            MqttError::PayloadFormatInvalid => "payload_format_invalid",
            MqttError::KeepAliveTimeout => "keep_alive_timeout",
            MqttError::OverBudget(_) => "buffer_budget",
            MqttError::FrameTimeout(_) => "frame_timeout",
            MqttError::TakenOver => "taken_over",
            MqttError::Administrative => "administrative",
            MqttError::ShuttingDown => "shutdown",
            MqttError::PeerClosed => "peer_closed",
            MqttError::Io(_) => "io_error",
            MqttError::Encode(_) => "encode_error",
            MqttError::Store(_) => "store_error",
            MqttError::Refused(_) => "quota_exceeded",
        }
    }
}

impl From<crate::adapter::WriteError> for MqttError {
    fn from(e: crate::adapter::WriteError) -> Self {
        match e {
            crate::adapter::WriteError::Core(e) => MqttError::Store(e),
            crate::adapter::WriteError::Io(e) => MqttError::Io(e),
        }
    }
}
