//! Reason code constants (5.0) and return codes (3.x), plus which codes each packet may carry.

/// MQTT 5.0 reason codes.
pub mod reason {
    pub const SUCCESS: u8 = 0x00;
    pub const NORMAL_DISCONNECTION: u8 = 0x00;
    pub const GRANTED_QOS_0: u8 = 0x00;
    pub const GRANTED_QOS_1: u8 = 0x01;
    pub const GRANTED_QOS_2: u8 = 0x02;
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub const CONTINUE_AUTHENTICATION: u8 = 0x18;
    pub const RE_AUTHENTICATE: u8 = 0x19;
    pub const UNSPECIFIED: u8 = 0x80;
    pub const MALFORMED_PACKET: u8 = 0x81;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const IMPLEMENTATION_SPECIFIC: u8 = 0x83;
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    pub const CLIENT_ID_NOT_VALID: u8 = 0x85;
    pub const BAD_USERNAME_OR_PASSWORD: u8 = 0x86;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    pub const SERVER_BUSY: u8 = 0x89;
    pub const BANNED: u8 = 0x8A;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub const BAD_AUTH_METHOD: u8 = 0x8C;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    pub const PACKET_ID_IN_USE: u8 = 0x91;
    pub const PACKET_ID_NOT_FOUND: u8 = 0x92;
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const MESSAGE_RATE_TOO_HIGH: u8 = 0x96;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const ADMINISTRATIVE_ACTION: u8 = 0x98;
    pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
    pub const RETAIN_NOT_SUPPORTED: u8 = 0x9A;
    pub const QOS_NOT_SUPPORTED: u8 = 0x9B;
    pub const USE_ANOTHER_SERVER: u8 = 0x9C;
    pub const SERVER_MOVED: u8 = 0x9D;
    pub const SHARED_SUBS_NOT_SUPPORTED: u8 = 0x9E;
    pub const CONNECTION_RATE_EXCEEDED: u8 = 0x9F;
    pub const MAX_CONNECT_TIME: u8 = 0xA0;
    pub const SUBSCRIPTION_IDS_NOT_SUPPORTED: u8 = 0xA1;
    pub const WILDCARD_SUBS_NOT_SUPPORTED: u8 = 0xA2;

    /// 3.1.1 SUBACK failure return code (same value as [`UNSPECIFIED`]).
    pub const SUBACK_FAILURE: u8 = 0x80;

    /// Reason codes a 5.0 CONNACK may carry.
    pub const CONNACK: &[u8] = &[
        0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
        0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
    ];
    /// Reason codes a 5.0 PUBACK or PUBREC may carry.
    pub const PUBACK: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
    /// Reason codes a 5.0 PUBREL or PUBCOMP may carry.
    pub const PUBREL: &[u8] = &[0x00, 0x92];
    /// Reason codes a 5.0 SUBACK may carry.
    pub const SUBACK: &[u8] = &[
        0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
    ];
    /// Reason codes a 5.0 UNSUBACK may carry.
    pub const UNSUBACK: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
    /// Reason codes a 5.0 DISCONNECT may carry.
    pub const DISCONNECT: &[u8] = &[
        0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
        0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
    ];
    /// Reason codes a 5.0 AUTH may carry.
    pub const AUTH: &[u8] = &[0x00, 0x18, 0x19];
    /// Return codes a 3.x SUBACK may carry.
    pub const SUBACK_V3: &[u8] = &[0x00, 0x01, 0x02, 0x80];
}

/// MQTT 3.1 / 3.1.1 CONNACK return codes.
pub mod connack_v3 {
    pub const ACCEPTED: u8 = 0;
    pub const UNACCEPTABLE_PROTOCOL_VERSION: u8 = 1;
    pub const IDENTIFIER_REJECTED: u8 = 2;
    pub const SERVER_UNAVAILABLE: u8 = 3;
    pub const BAD_USERNAME_OR_PASSWORD: u8 = 4;
    pub const NOT_AUTHORIZED: u8 = 5;
}

use crate::error::DecodeError;

/// Rejects a reason code the spec does not list for the packet being decoded.
pub(crate) fn check(code: u8, allowed: &[u8]) -> Result<u8, DecodeError> {
    if allowed.contains(&code) {
        Ok(code)
    } else {
        Err(DecodeError::ProtocolError(
            "reason code not valid for this packet",
        ))
    }
}
