//! Where errors become MQTT replies, the one place for the whole adapter:
//! everything that ends a connection and its DISCONNECT reason code
//! ([`MqttError`]), a refused CONNECT and its CONNACK code
//! ([`ConnectRefusal`]), a PUBLISH and its PUBACK / PUBREC code
//! ([`PublishOutcome`]), a refused filter and its SUBACK / UNSUBACK code
//! ([`FilterRefusal`]), an unknown packet id in PUBREL / PUBCOMP
//! ([`packet_id_code`]). Each maps per protocol version: 5.0 has a reason code
//! for each; 3.1 / 3.1.1 have a few return codes, or none, and then the
//! connection is closed or the flow completes as the doc comment says.

use crate::adapter::serve::Ended;
use crate::adapter::WriteError;
use crate::core::session::KickReason;
use tern_mqtt::{connack_v3, reason, DecodeError, ProtocolVersion};

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

/// A refused CONNECT: answered with a CONNACK carrying
/// [`ConnectRefusal::connack_code`], then the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnectRefusal {
    /// The broker is at its connection cap (`peer.admitted` false).
    ConnectionLimit,
    /// The CONNECT under way would take the broker's buffer budget over its limit.
    OverBudget,
    /// MQTT 5 enhanced authentication (an authentication method) is not supported.
    AuthMethod,
    BadCredentials,
    /// An anonymous client on a listener that does not allow them.
    AnonymousNotAllowed,
    /// An empty client id without clean start (or from 3.1, which has no assigned ids).
    ClientIdInvalid,
    WillTopicInvalid,
    WillTopicDenied,
    /// The session of that client id belongs to another user.
    SessionOfAnotherUser,
    /// The cluster cannot decide who holds the client id (NATS away, shared store).
    Unavailable,
    /// The CONNACK could not be encoded.
    Internal,
}

impl ConnectRefusal {
    /// The CONNACK code: 5.0 reason code, or 3.x return code.
    ///
    /// | refusal                | 5.0                         | 3.1 / 3.1.1               |
    /// |------------------------|-----------------------------|---------------------------|
    /// | ConnectionLimit        | 0x97 quota exceeded         | 3 server unavailable      |
    /// | OverBudget             | 0x97 quota exceeded         | 3 server unavailable      |
    /// | AuthMethod             | 0x8C bad authentication method | 5 not authorized       |
    /// | BadCredentials         | 0x86 bad user name or password | 4 bad user name or password |
    /// | AnonymousNotAllowed    | 0x87 not authorized         | 5 not authorized          |
    /// | ClientIdInvalid        | 0x85 client identifier not valid | 2 identifier rejected |
    /// | WillTopicInvalid       | 0x90 topic name invalid     | 5 not authorized          |
    /// | WillTopicDenied        | 0x87 not authorized         | 5 not authorized          |
    /// | SessionOfAnotherUser   | 0x87 not authorized         | 5 not authorized          |
    /// | Unavailable            | 0x88 server unavailable     | 3 server unavailable      |
    /// | Internal               | 0x80 unspecified error      | 3 server unavailable      |
    pub(super) fn connack_code(self, version: ProtocolVersion) -> u8 {
        let (v5, v3) = match self {
            ConnectRefusal::ConnectionLimit | ConnectRefusal::OverBudget => {
                (reason::QUOTA_EXCEEDED, connack_v3::SERVER_UNAVAILABLE)
            }
            ConnectRefusal::AuthMethod => (reason::BAD_AUTH_METHOD, connack_v3::NOT_AUTHORIZED),
            ConnectRefusal::BadCredentials => (
                reason::BAD_USERNAME_OR_PASSWORD,
                connack_v3::BAD_USERNAME_OR_PASSWORD,
            ),
            ConnectRefusal::AnonymousNotAllowed
            | ConnectRefusal::WillTopicDenied
            | ConnectRefusal::SessionOfAnotherUser => {
                (reason::NOT_AUTHORIZED, connack_v3::NOT_AUTHORIZED)
            }
            ConnectRefusal::ClientIdInvalid => {
                (reason::CLIENT_ID_NOT_VALID, connack_v3::IDENTIFIER_REJECTED)
            }
            ConnectRefusal::WillTopicInvalid => {
                (reason::TOPIC_NAME_INVALID, connack_v3::NOT_AUTHORIZED)
            }
            ConnectRefusal::Unavailable => {
                (reason::SERVER_UNAVAILABLE, connack_v3::SERVER_UNAVAILABLE)
            }
            ConnectRefusal::Internal => (reason::UNSPECIFIED, connack_v3::SERVER_UNAVAILABLE),
        };
        if version == ProtocolVersion::V5 {
            v5
        } else {
            v3
        }
    }

    /// Why, for the log.
    pub(super) fn why(self) -> &'static str {
        match self {
            ConnectRefusal::ConnectionLimit => "connection limit reached",
            ConnectRefusal::OverBudget => "CONNECT over the buffer budget",
            ConnectRefusal::AuthMethod => "enhanced authentication is not supported",
            ConnectRefusal::BadCredentials => "bad username or password",
            ConnectRefusal::AnonymousNotAllowed => {
                "anonymous clients are not allowed on this listener"
            }
            ConnectRefusal::ClientIdInvalid => "empty client id without clean start",
            ConnectRefusal::WillTopicInvalid => "invalid will topic",
            ConnectRefusal::WillTopicDenied => "will topic not allowed by the ACL",
            ConnectRefusal::SessionOfAnotherUser => "session belongs to another user",
            ConnectRefusal::Unavailable => "the cluster cannot decide who holds the client id",
            ConnectRefusal::Internal => "cannot encode CONNACK",
        }
    }
}

/// The CONNACK that answers a CONNECT the codec could not read (as the codec
/// rules it, from the protocol level the client asked for): its version and
/// code; None when the bytes cannot be answered (not MQTT at all).
pub(super) fn invalid_connect_reply(
    error: &DecodeError,
    level: Option<u8>,
) -> Option<(ProtocolVersion, u8)> {
    error.connect_refusal(level)
}

/// What became of a PUBLISH, as PUBACK (QoS 1) or PUBREC (QoS 2) tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PublishOutcome {
    /// Routed; `matched`: to at least one subscriber or queue.
    Accepted { matched: bool },
    /// The topic is over `limits` (levels, length).
    TopicOverLimit,
    /// The ACL denies the publisher this topic.
    Denied,
    /// The core refused the message (a queue, the store, a subscriber or the
    /// retained store is full).
    Refused,
    /// The payload failed a `reject` schema, or is declared UTF-8 and is not.
    PayloadInvalid,
}

impl PublishOutcome {
    /// The PUBACK / PUBREC reason code; None when the version has no way to say
    /// it in an ack, and the connection is closed instead (the publisher sends
    /// again after reconnecting).
    ///
    /// | outcome                     | 5.0                          | 3.1 / 3.1.1       |
    /// |-----------------------------|------------------------------|-------------------|
    /// | Accepted, matched           | 0x00 success                 | (ack)             |
    /// | Accepted, no subscriber     | 0x10 no matching subscribers | (ack)             |
    /// | TopicOverLimit              | 0x90 topic name invalid      | close             |
    /// | Denied                      | 0x87 not authorized          | (ack, as accepted: 3.x cannot say no; logged) |
    /// | Refused                     | 0x97 quota exceeded          | close             |
    /// | PayloadInvalid              | 0x99 payload format invalid  | (ack, as accepted: dropped, logged, counted) |
    pub(super) fn ack_code(self, version: ProtocolVersion) -> Option<u8> {
        let v5 = version == ProtocolVersion::V5;
        match self {
            PublishOutcome::Accepted { matched: false } if v5 => {
                Some(reason::NO_MATCHING_SUBSCRIBERS)
            }
            PublishOutcome::Accepted { .. } => Some(reason::SUCCESS),
            PublishOutcome::TopicOverLimit => v5.then_some(reason::TOPIC_NAME_INVALID),
            PublishOutcome::Denied if v5 => Some(reason::NOT_AUTHORIZED),
            PublishOutcome::Denied => Some(reason::SUCCESS),
            PublishOutcome::Refused => v5.then_some(reason::QUOTA_EXCEEDED),
            PublishOutcome::PayloadInvalid if v5 => Some(reason::PAYLOAD_FORMAT_INVALID),
            PublishOutcome::PayloadInvalid => Some(reason::SUCCESS),
        }
    }
}

/// Why one filter of a SUBSCRIBE (or UNSUBSCRIBE) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FilterRefusal {
    /// Not a valid filter, or over `limits`.
    Invalid,
    /// The ACL denies it.
    Denied,
    /// The client has `limits.max_subscriptions_per_client` already.
    OverQuota,
}

impl FilterRefusal {
    /// The SUBACK code for the filter: 5.0 says why (0x8F topic filter invalid,
    /// 0x87 not authorized, 0x97 quota exceeded); 3.1 / 3.1.1 only say it
    /// failed (0x80).
    pub(super) fn suback_code(self, version: ProtocolVersion) -> u8 {
        if version != ProtocolVersion::V5 {
            return reason::UNSPECIFIED;
        }
        match self {
            FilterRefusal::Invalid => reason::TOPIC_FILTER_INVALID,
            FilterRefusal::Denied => reason::NOT_AUTHORIZED,
            FilterRefusal::OverQuota => reason::QUOTA_EXCEEDED,
        }
    }
}

/// The UNSUBACK code for one filter (5.0; 3.x UNSUBACK carries none):
/// 0x8F for a filter over the limits (not looked up), 0x00 when a subscription
/// was removed, 0x11 when there was none.
pub(super) fn unsuback_code(invalid: bool, removed: bool) -> u8 {
    match (invalid, removed) {
        (true, _) => reason::TOPIC_FILTER_INVALID,
        (false, true) => reason::SUCCESS,
        (false, false) => reason::NO_SUBSCRIPTION_EXISTED,
    }
}

/// The PUBREL / PUBCOMP code for a PUBREC / PUBREL: 0x92 packet identifier not
/// found (5.0) when the id is unknown; 3.x has no code (0), the flow completes.
pub(super) fn packet_id_code(found: bool, version: ProtocolVersion) -> u8 {
    if !found && version == ProtocolVersion::V5 {
        reason::PACKET_ID_NOT_FOUND
    } else {
        reason::SUCCESS
    }
}

impl From<Ended> for MqttError {
    fn from(ended: Ended) -> Self {
        match ended {
            Ended::PeerClosed => MqttError::PeerClosed,
            Ended::Io(e) => MqttError::Io(e),
            Ended::Kicked(Some(reason)) => MqttError::kicked(reason),
            // The session was replaced (clean start elsewhere) without a kick.
            Ended::Kicked(None) => MqttError::TakenOver,
            Ended::Silent(_) => MqttError::KeepAliveTimeout,
            Ended::FrameTimeout(secs) => MqttError::FrameTimeout(secs),
            Ended::OverBudget(over) => MqttError::OverBudget(over),
            Ended::Write(WriteError::Core(e)) => MqttError::Store(e),
            Ended::Write(WriteError::Io(e)) => MqttError::Io(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProtocolVersion::{V31, V311, V5};

    #[test]
    fn connect_refusals_answer_each_version_with_its_code() {
        use ConnectRefusal::*;
        let table = [
            (ConnectionLimit, 0x97, 3),
            (OverBudget, 0x97, 3),
            (AuthMethod, 0x8C, 5),
            (BadCredentials, 0x86, 4),
            (AnonymousNotAllowed, 0x87, 5),
            (ClientIdInvalid, 0x85, 2),
            (WillTopicInvalid, 0x90, 5),
            (WillTopicDenied, 0x87, 5),
            (SessionOfAnotherUser, 0x87, 5),
            (Unavailable, 0x88, 3),
            (Internal, 0x80, 3),
        ];
        for (refusal, v5, v3) in table {
            assert_eq!(refusal.connack_code(V5), v5, "{refusal:?} 5.0");
            assert_eq!(refusal.connack_code(V311), v3, "{refusal:?} 3.1.1");
            assert_eq!(refusal.connack_code(V31), v3, "{refusal:?} 3.1");
            assert!(!refusal.why().is_empty());
        }
    }

    #[test]
    fn publish_outcomes_are_acked_in_5_and_closed_or_acked_in_3() {
        use PublishOutcome::*;
        assert_eq!(Accepted { matched: true }.ack_code(V5), Some(0x00));
        assert_eq!(Accepted { matched: false }.ack_code(V5), Some(0x10));
        assert_eq!(TopicOverLimit.ack_code(V5), Some(0x90));
        assert_eq!(Denied.ack_code(V5), Some(0x87));
        assert_eq!(Refused.ack_code(V5), Some(0x97));
        for v3 in [V31, V311] {
            assert_eq!(Accepted { matched: true }.ack_code(v3), Some(0));
            assert_eq!(Accepted { matched: false }.ack_code(v3), Some(0));
            assert_eq!(Denied.ack_code(v3), Some(0), "3.x cannot say no");
            assert_eq!(TopicOverLimit.ack_code(v3), None, "closed");
            assert_eq!(Refused.ack_code(v3), None, "closed");
        }
    }

    #[test]
    fn refused_filters_say_why_in_5_and_fail_in_3() {
        assert_eq!(FilterRefusal::Invalid.suback_code(V5), 0x8F);
        assert_eq!(FilterRefusal::Denied.suback_code(V5), 0x87);
        assert_eq!(FilterRefusal::OverQuota.suback_code(V5), 0x97);
        for why in [
            FilterRefusal::Invalid,
            FilterRefusal::Denied,
            FilterRefusal::OverQuota,
        ] {
            assert_eq!(why.suback_code(V311), 0x80);
            assert_eq!(why.suback_code(V31), 0x80);
        }
        assert_eq!(unsuback_code(true, false), 0x8F);
        assert_eq!(unsuback_code(false, true), 0x00);
        assert_eq!(unsuback_code(false, false), 0x11);
    }

    #[test]
    fn unknown_packet_ids_are_told_only_in_5() {
        assert_eq!(packet_id_code(false, V5), 0x92);
        assert_eq!(packet_id_code(true, V5), 0x00);
        assert_eq!(packet_id_code(false, V311), 0x00);
        assert_eq!(packet_id_code(false, V31), 0x00);
    }

    #[test]
    fn connection_errors_map_to_disconnect_reasons() {
        assert_eq!(
            MqttError::Protocol("x").disconnect_reason(),
            Some(reason::PROTOCOL_ERROR)
        );
        assert_eq!(
            MqttError::KeepAliveTimeout.disconnect_reason(),
            Some(reason::KEEP_ALIVE_TIMEOUT)
        );
        assert_eq!(
            MqttError::RateTooHigh.disconnect_reason(),
            Some(reason::MESSAGE_RATE_TOO_HIGH)
        );
        assert_eq!(
            MqttError::kicked(KickReason::TakenOver).disconnect_reason(),
            Some(reason::SESSION_TAKEN_OVER)
        );
        assert_eq!(
            MqttError::kicked(KickReason::ShuttingDown).disconnect_reason(),
            Some(reason::SERVER_SHUTTING_DOWN)
        );
        assert_eq!(MqttError::PeerClosed.disconnect_reason(), None);
    }

    #[test]
    fn what_the_driver_ends_becomes_the_matching_error() {
        let error = MqttError::from(Ended::Kicked(None));
        assert!(matches!(error, MqttError::TakenOver));
        let error = MqttError::from(Ended::Silent(std::time::Duration::from_secs(9)));
        assert!(matches!(error, MqttError::KeepAliveTimeout));
        assert!(matches!(
            MqttError::from(Ended::FrameTimeout(7)),
            MqttError::FrameTimeout(7)
        ));
        assert!(matches!(
            MqttError::from(Ended::PeerClosed),
            MqttError::PeerClosed
        ));
    }
}
